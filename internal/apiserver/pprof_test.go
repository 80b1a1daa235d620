package apiserver_test

import (
	"net/http"
	"strings"
	"testing"
)

// The server's profiles answer the admin token alone: a node certificate
// is forbidden, a caller without credentials unauthorized.
func TestProfilesAreForAdmins(t *testing.T) {
	c := startCluster(t)
	code, _, body := c.raw(t, c.trustOnly(), "GET", "/debug/pprof/goroutine?debug=1", "", "Authorization", "Bearer "+adminToken)
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("admin: %d %.200s", code, body)
	}
	code, _, body = c.raw(t, c.trustOnly(), "GET", "/debug/pprof/heap?debug=1", "", "Authorization", "Bearer "+adminToken)
	if code != http.StatusOK || !strings.Contains(body, "heap profile:") {
		t.Fatalf("admin heap: %d %.200s", code, body)
	}
	if code, _, _ := c.raw(t, c.trustOnly(), "GET", "/debug/pprof/goroutine?debug=1", ""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if got := status(t, c.url, c.joinCreds(t, c.url, "n1"), "/debug/pprof/goroutine?debug=1"); got != http.StatusForbidden {
		t.Errorf("node certificate: %d, want 403", got)
	}
}
