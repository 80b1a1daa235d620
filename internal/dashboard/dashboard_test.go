package dashboard

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
)

// A burst of changes reaches a browser as one message holding each
// object's latest state.
func TestHubCoalescesABurst(t *testing.T) {
	h := newHub(nil, nil)
	_, ch := h.subscribe()
	for round, phase := range []api.Phase{api.PhaseStarting, api.PhaseRunning} {
		for i := range 1000 {
			in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("web-%d", i), Revision: int64(round*1000 + i)}}
			in.Status.Phase = phase
			h.put("instance", key(in.Metadata), in)
		}
	}
	h.remove("instance", "default/web-7")
	h.flush()
	h.flush() // nothing new: nothing sent
	if len(ch) != 1 {
		t.Fatalf("%d messages for one burst, want 1", len(ch))
	}
	var batch struct {
		Changes []struct {
			Key string        `json:"key"`
			Obj *api.Instance `json:"obj"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(<-ch, &batch); err != nil {
		t.Fatal(err)
	}
	if len(batch.Changes) != 1000 {
		t.Fatalf("%d changes, want one per instance (1000)", len(batch.Changes))
	}
	for _, c := range batch.Changes {
		switch {
		case c.Key == "default/web-7" && c.Obj != nil:
			t.Errorf("web-7 was removed last, the batch has it as %v", c.Obj.Status.Phase)
		case c.Key != "default/web-7" && (c.Obj == nil || c.Obj.Status.Phase != api.PhaseRunning):
			t.Errorf("%s: not its latest state (Running): %+v", c.Key, c.Obj)
		}
	}
	snap, _ := h.subscribe()
	var s struct {
		Objects map[string]map[string]json.RawMessage `json:"objects"`
	}
	if err := json.Unmarshal(snap, &s); err != nil || len(s.Objects["instance"]) != 999 {
		t.Errorf("a new browser's snapshot has %d instances (%v), want 999", len(s.Objects["instance"]), err)
	}
}

// A browser too slow for its stream is cut off rather than holding up the others.
func TestHubCutsOffASlowBrowser(t *testing.T) {
	h := newHub(nil, nil)
	_, slow := h.subscribe()
	for i := range cap(slow) + 1 {
		h.put("node", fmt.Sprint("n", i), &api.Node{})
		h.flush()
	}
	for range slow {
	}
	if len(h.subs) != 0 {
		t.Errorf("%d streams left, want the slow one gone", len(h.subs))
	}
}

func TestSignInAndCSRF(t *testing.T) {
	const token = "0123456789abcdef-token"
	d := New(Options{Token: token})
	admin := false
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if admin {
			r = r.WithContext(apiserver.WithIdentity(r.Context(), apiserver.Identity{Name: "root", Admin: true}))
		}
		d.ServeHTTP(w, r)
	}))
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	hc := srv.Client()
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	do := func(method, path, origin, csrf, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if strings.HasPrefix(body, "token=") {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	form := func(tok string) string { return "token=" + url.QueryEscape(tok) }

	if resp, body := do("GET", "/ui/", "", "", ""); resp.StatusCode != 401 || !strings.Contains(body, `name="token"`) {
		t.Fatalf("no session: %d, want 401 and the sign-in form", resp.StatusCode)
	}
	if resp, _ := do("GET", "/ui/stream", "", "", ""); resp.StatusCode != 401 {
		t.Errorf("stream without a session: %d, want 401", resp.StatusCode)
	}
	if resp, body := do("POST", "/ui/login", srv.URL, "", form("wrong")); resp.StatusCode != 401 || !strings.Contains(body, "Wrong token") {
		t.Errorf("wrong token: %d, want 401 saying so", resp.StatusCode)
	}
	if resp, _ := do("POST", "/ui/login", "https://evil.example", "", form(token)); resp.StatusCode != 403 {
		t.Errorf("sign-in posted from another origin: %d, want 403", resp.StatusCode)
	}
	resp, _ := do("POST", "/ui/login", srv.URL, "", form(token))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right token: %d, want 303", resp.StatusCode)
	}
	ck := resp.Cookies()[0]
	if !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != Prefix {
		t.Errorf("cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/ui/", ck)
	}
	resp, page := do("GET", "/ui/", "", "", "")
	i := strings.Index(page, `name="csrf" content="`)
	if resp.StatusCode != 200 || i < 0 {
		t.Fatalf("signed in: %d, want the page with its CSRF token", resp.StatusCode)
	}
	csrf, _, _ := strings.Cut(page[i+len(`name="csrf" content="`):], `"`)
	bad := `{"action":"explode","kind":"node","name":"n1"}`
	for _, c := range []struct{ origin, csrf, want string }{
		{"https://evil.example", csrf, "another origin"},
		{"", csrf, "another origin"},
		{srv.URL, "", "CSRF"},
		{srv.URL, csrf + "x", "CSRF"},
	} {
		if resp, body := do("POST", "/ui/act", c.origin, c.csrf, bad); resp.StatusCode != 403 || !strings.Contains(body, c.want) {
			t.Errorf("act with origin %q token %q: %d %s, want 403 naming %s", c.origin, c.csrf, resp.StatusCode, body, c.want)
		}
	}
	if resp, body := do("POST", "/ui/act", srv.URL, csrf, bad); resp.StatusCode != 422 || !strings.Contains(body, `action \"explode\"`) {
		t.Errorf("an unknown action past the checks: %d %s, want 422 naming it", resp.StatusCode, body)
	}

	for q, want := range map[string]string{"?tail=10": "name", "?name=web-1&tail=0": "tail", "?name=web-1&tail=5001": "tail"} {
		if resp, body := do("GET", "/ui/logs"+q, "", "", ""); resp.StatusCode != 422 || !strings.Contains(body, want) {
			t.Errorf("logs%s: %d %s, want 422 naming %s", q, resp.StatusCode, body, want)
		}
	}

	// One-time codes: only for callers the listener took for admins, and good once.
	if resp, _ := do("POST", CodesPath, srv.URL, csrf, ""); resp.StatusCode != 401 {
		t.Errorf("a code asked for with the cookie alone: %d, want 401", resp.StatusCode)
	}
	admin = true
	_, body := do("POST", CodesPath, "", "", "")
	admin = false
	var code struct{ Code, Path string }
	if err := json.Unmarshal([]byte(body), &code); err != nil || code.Code == "" {
		t.Fatalf("code: %s", body)
	}
	jar2, _ := cookiejar.New(nil)
	hc.Jar = jar2
	if resp, _ := do("GET", code.Path, "", "", ""); resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Errorf("a fresh code: %d, want 303 and a session", resp.StatusCode)
	}
	hc.Jar, _ = cookiejar.New(nil)
	if resp, _ := do("GET", code.Path, "", "", ""); resp.StatusCode != 401 {
		t.Errorf("a code used twice: %d, want 401", resp.StatusCode)
	}
}

// Output becomes one event per line, whichever way its writes fall, and a
// line without an end is cut once it is too long.
func TestLogLines(t *testing.T) {
	var out strings.Builder
	s := &sseLines{w: &out, flush: func() {}}
	w, e := s.stream("out"), s.stream("err")
	for _, p := range []string{"one\ntw", "o\n", "three\nfo", strings.Repeat("x", maxLogLine)} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = e.Write([]byte("bad\xff\n"))
	var got []string
	for _, ev := range strings.Split(strings.TrimSpace(out.String()), "\n\n") {
		data, ok := strings.CutPrefix(ev, "event: line\ndata: ")
		if !ok {
			t.Fatalf("event %q", ev)
		}
		var l struct{ S, T string }
		if err := json.Unmarshal([]byte(data), &l); err != nil {
			t.Fatal(err)
		}
		got = append(got, l.S+" "+l.T)
	}
	want := []string{"out one", "out two", "out three", "out fo" + strings.Repeat("x", maxLogLine), "err bad\uFFFD"}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %.40q, want %.40q", i, got[i], want[i])
		}
	}
}
