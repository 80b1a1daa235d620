package apiserver_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// Over TLS, the server reads frames of 16 KiB at most and the client
// asks for no larger, and neither side indexes headers: a body and an
// answer of several frames each arrive whole, on one connection, request
// after request, and a watch delivers an object of several frames.
func TestLargeBodiesOverSmallFrames(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	cert, caPEM := selfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const token = "0123456789abcdef0123"
	done := make(chan error, 1)
	go func() { done <- e.srv.ServeTLS(ctx, l, &tls.Config{Certificates: []tls.Certificate{cert}}, token) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := client.New("https://"+l.Addr().String(), client.WithCA(caPEM), client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	w, err := c.Services().Watch(wctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		env := map[string]string{}
		for j := range 60 {
			env[fmt.Sprintf("V%02d", j)] = strings.Repeat(string(rune('a'+i)), 400) // 24 KB in all
		}
		name := fmt.Sprintf("big-%d", i)
		s := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: name},
			Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "demo/busybox:1", Env: env}}}
		if _, err := c.Services().Apply(ctx, s); err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
		got, err := c.Services().Get(ctx, "default", name)
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		if !maps.Equal(got.Spec.Template.Env, env) {
			t.Fatalf("get %s: the environment came back changed", name)
		}
		seen := false
		for ev := range w {
			if ev.Err != nil {
				t.Fatalf("watch: %v", ev.Err)
			}
			if ev.Object != nil && ev.Object.Metadata.Name == name {
				if !maps.Equal(ev.Object.Spec.Template.Env, env) {
					t.Fatalf("watch %s: the environment came changed", name)
				}
				seen = true
				break
			}
		}
		if !seen {
			t.Fatalf("watch: no event for %s", name)
		}
	}
}
