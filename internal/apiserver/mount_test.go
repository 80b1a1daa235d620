package apiserver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMountServesUnderPrefix checks that a mounted handler gets the
// caller's identity and a body over the API's limit, that Authorize is
// not asked for it, and that callers without an identity never reach it.
func TestMountServesUnderPrefix(t *testing.T) {
	s := New(Config{MaxBodyBytes: 16, Authorize: func(_ context.Context, _ Identity, r *http.Request) error {
		t.Errorf("Authorize asked about %s", r.URL.Path)
		return nil
	}})
	var got string
	s.Mount("/v2/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := IdentityFrom(r.Context())
		b, _ := io.ReadAll(r.Body)
		got = id.Name + " " + r.URL.Path + " " + string(b)
		w.WriteHeader(http.StatusAccepted)
	}))
	body := strings.Repeat("x", 100)
	for _, path := range []string{"/v2/", "/v2", "/v2/a/b/blobs/uploads/"} {
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		r = r.WithContext(WithIdentity(r.Context(), Identity{Name: "token", Admin: true}))
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusAccepted || got != "token "+path+" "+body {
			t.Errorf("POST %s: %d, handler saw %q", path, w.Code, got)
		}
	}
	got = ""
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v2/", nil))
	if w.Code != http.StatusUnauthorized || got != "" {
		t.Errorf("GET /v2/ without an identity: %d, handler saw %q", w.Code, got)
	}
}
