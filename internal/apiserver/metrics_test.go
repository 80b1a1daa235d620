package apiserver_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/store"
)

// Metrics are for admins and the metrics token, profiles for admins
// alone: a node is forbidden, a caller without credentials unauthorized.
func TestScrapersAndAdminOnly(t *testing.T) {
	teapot := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	scrape, admin := apiserver.Scrapers(teapot), apiserver.AdminOnly(teapot)
	for _, tc := range []struct {
		id                *apiserver.Identity
		scrape, adminOnly int
	}{
		{&apiserver.Identity{Name: "token", Admin: true}, http.StatusTeapot, http.StatusTeapot},
		{&apiserver.ScraperIdentity, http.StatusTeapot, http.StatusForbidden},
		{&apiserver.Identity{Name: "node:n1", Node: "n1"}, http.StatusForbidden, http.StatusForbidden},
		{&apiserver.Anonymous, http.StatusUnauthorized, http.StatusUnauthorized},
		{nil, http.StatusUnauthorized, http.StatusUnauthorized},
	} {
		for _, c := range []struct {
			h    http.Handler
			want int
		}{{scrape, tc.scrape}, {admin, tc.adminOnly}} {
			h, want := c.h, c.want
			r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			if tc.id != nil {
				r = r.WithContext(apiserver.WithIdentity(r.Context(), *tc.id))
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != want {
				t.Errorf("%+v: %d, want %d", tc.id, w.Code, want)
			}
		}
	}
}

// The metrics token, over a real TLS listener, scrapes the server's
// metrics and a node's, and is refused everything else: reads, writes,
// mounted handlers and the dashboard's sign-in.
func TestMetricsTokenScrapesOnly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	const admin, scrape = "the-admin-token-0123456789", "the-metrics-token-0123456789"
	srv := apiserver.New(apiserver.Config{Store: st, MetricsToken: scrape})
	srv.Mount("/metrics/", apiserver.Scrapers(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("berth_up 1\n"))
	})))
	srv.Mount("/v2/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	srv.MountSignIn("/ui/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	cert, _ := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The two tokens must differ: one token both ways would make the scraper an admin.
	if err := srv.ServeTLS(ctx, ln, &tls.Config{Certificates: []tls.Certificate{cert}}, scrape); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("ServeTLS with the admin token equal to the metrics token: %v, want invalid", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ctx, ln, &tls.Config{Certificates: []tls.Certificate{cert}}, admin) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	do := func(method, path, bearer string) int {
		return bearerStatus(t, hc, method, "https://"+ln.Addr().String()+path, bearer)
	}
	for _, c := range []struct {
		method, path, bearer string
		code                 int
	}{
		{"GET", "/metrics", scrape, 200},
		{"GET", "/metrics", admin, 200},
		{"GET", "/metrics", "wrong-token-0123456789", 401},
		{"GET", "/v1/services", scrape, 403},
		{"GET", "/v1/instances", scrape, 403},
		{"GET", "/v1/events?watch=1", scrape, 403},
		{"PUT", "/v1/services/default/web", scrape, 403},
		{"DELETE", "/v1/nodes/n1", scrape, 403},
		{"POST", "/v1/nodes/n1/metrics", scrape, 403},
		{"GET", "/v1/nodes/n1/metrics/x", scrape, 403},
		{"GET", "/v2/", scrape, 403},
		{"GET", "/ui/", scrape, 403},
		{"POST", "/v1/tokens", scrape, 403},
		{"GET", "/v1/services", admin, 200},
	} {
		if got := do(c.method, c.path, c.bearer); got != c.code {
			t.Errorf("%s %s with %q: %d, want %d", c.method, c.path, c.bearer, got, c.code)
		}
	}
	// A node's metrics pass the token's check: the node has no tunnel
	// here, so the answer is the route's own, not a refusal.
	if got := do("GET", "/v1/nodes/n1/metrics", scrape); got == 401 || got == 403 {
		t.Errorf("GET /v1/nodes/n1/metrics with the metrics token: %d, want it let through", got)
	}
}

// bearerStatus is the status code hc gets for a method request to url,
// with bearer's token (none when empty) and a body of "{}".
func bearerStatus(t *testing.T, hc *http.Client, method, url, bearer string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader("{}"))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A write's answer says where its time went (Server-Timing): in etcd
// write transactions, the lane and the handler, and its total, which
// covers them; a read's says nothing.
func TestWriteAnswerCarriesServerTiming(t *testing.T) {
	e := start(t)
	req, _ := http.NewRequest(http.MethodPut, "http://berth/v1/namespaces/default/services/web", strings.NewReader(validService))
	sent := time.Now()
	resp, err := e.raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("apply: %s", resp.Status)
	}
	st := resp.Header.Get("Server-Timing")
	dur := map[string]float64{}
	var ahead, writes string
	var start int64
	for part := range strings.SplitSeq(st, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if v, ok := strings.CutPrefix(params, "dur="); ok {
			d, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("Server-Timing %q: %s: %v", st, name, err)
			}
			dur[name] = d
		} else if name == "ahead" {
			ahead = params
		} else if name == "writes" {
			writes = params
		} else if v, ok := strings.CutPrefix(params, "desc="); ok && name == "start" {
			start, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	for _, name := range []string{"read", "lane", "write", "handler", "total"} {
		if _, ok := dur[name]; !ok {
			t.Fatalf("Server-Timing %q: no %s", st, name)
		}
	}
	if dur["write"] <= 0 || dur["lane"] != 0 || dur["total"] < dur["write"] || ahead == "" || writes != "desc=1" {
		t.Fatalf("Server-Timing %q: want a write's time, no lane, a total that covers it, what was ahead, and one write", st)
	}
	// One clock: the handler started after the request was sent, and
	// before the answer came.
	if s := time.UnixMicro(start); s.Before(sent.Truncate(time.Microsecond)) || s.After(time.Now()) {
		t.Fatalf("Server-Timing %q: handler started at %v, request sent at %v", st, s, sent)
	}

	resp, err = e.raw.Get("http://berth/v1/namespaces/default/services/web")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := resp.Header.Get("Server-Timing"); st != "" {
		t.Fatalf("a read's answer has Server-Timing %q", st)
	}
}
