package apiserver_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/internal/apiserver"
)

// Metrics are for admins: a node is forbidden, a caller without
// credentials unauthorized.
func TestAdminOnly(t *testing.T) {
	h := apiserver.AdminOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, tc := range []struct {
		id   *apiserver.Identity
		want int
	}{
		{&apiserver.Identity{Name: "token", Admin: true}, http.StatusTeapot},
		{&apiserver.Identity{Name: "node:n1", Node: "n1"}, http.StatusForbidden},
		{&apiserver.Anonymous, http.StatusUnauthorized},
		{nil, http.StatusUnauthorized},
	} {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if tc.id != nil {
			r = r.WithContext(apiserver.WithIdentity(r.Context(), *tc.id))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%+v: %d, want %d", tc.id, w.Code, tc.want)
		}
	}
}
