package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/internal/apiserver"
)

func TestAuthorizeImages(t *testing.T) {
	for _, c := range []struct {
		id         *apiserver.Identity
		push, pass bool
	}{
		{&apiserver.Identity{Name: "token", Admin: true}, true, true},
		{&apiserver.Identity{Name: "node:n1", Node: "n1"}, false, true},
		{&apiserver.Identity{Name: "node:n1", Node: "n1"}, true, false},
		{&apiserver.Anonymous, false, false},
		{nil, false, false},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		if c.id != nil {
			r = r.WithContext(apiserver.WithIdentity(r.Context(), *c.id))
		}
		if err := apiserver.AuthorizeImages(r, c.push); (err == nil) != c.pass {
			t.Errorf("%+v push=%v: %v, want allowed=%v", c.id, c.push, err, c.pass)
		}
	}
}
