package apiserver_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/apiserver"
)

// TestMountSignInTakesRefusedCallers checks that a MountSignIn handler
// gets the callers the listener refuses, without an identity, and the
// ones it admits with theirs, while its neighbours stay closed to the
// refused ones.
func TestMountSignInTakesRefusedCallers(t *testing.T) {
	s := apiserver.New(apiserver.Config{})
	var got string
	s.MountSignIn("/ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := apiserver.IdentityFrom(r.Context())
		got = fmt.Sprint(ok, " ", id.Name)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := selfSigned(t)
	const token = "a-token-of-24-characters"
	go func() { _ = s.ServeTLS(ctx, ln, &tls.Config{Certificates: []tls.Certificate{cert}}, token) }()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path, bearer string) int {
		return bearerStatus(t, hc, http.MethodGet, "https://"+ln.Addr().String()+path, bearer)
	}
	for _, c := range []struct {
		path, bearer string
		code         int
		saw          string
	}{
		{"/ui/", "", 200, "false "},
		{"/ui/x", "wrong", 200, "false "},
		{"/ui/", token, 200, "true token"},
		{"/v1/nodes", "", 401, ""},
		{"/v1/nodes", "wrong", 401, ""},
	} {
		got = ""
		if code := get(c.path, c.bearer); code != c.code || got != c.saw {
			t.Errorf("GET %s with %q: %d, handler saw %q; want %d, %q", c.path, c.bearer, code, got, c.code, c.saw)
		}
	}
}
