package registry_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/registry"
)

// TestPinImage pins a pushed tag to the digest /v2/ serves for it, keeps
// a reference with a digest as it is, and tells a missing tag (NotFound)
// from a reference the registry cannot serve (InvalidArgument).
func TestPinImage(t *testing.T) {
	st := openStore(t)
	h := registry.New(st, registry.Options{})
	base, host := server(t, st, registry.Options{}, nil)
	want := push(t, host, "demo/random:1", randomImage(t, 1, 1, 1<<10)).String()
	resp, err := http.Get(base + "/v2/demo/random/manifests/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if served := resp.Header.Get("Docker-Content-Digest"); served != want {
		t.Fatalf("/v2/ serves demo/random:1 as %q, pushed %s", served, want)
	}
	ctx := context.Background()
	other := "sha256:" + strings.Repeat("0f", 32)
	for _, c := range []struct {
		ref, want string
		err       error
	}{
		{"demo/random:1", "demo/random:1@" + want, nil},
		{"demo/random:1@" + other, "demo/random:1@" + other, nil},
		{"demo/random@" + other, "demo/random@" + other, nil},
		{"demo/random", "", errdefs.ErrNotFound},
		{"demo/random:2", "", errdefs.ErrNotFound},
		{"localhost:5000/demo/random:1", "", errdefs.ErrNotFound}, // no upstream configured
		{"Demo/Random:1", "", errdefs.ErrInvalidArgument},
	} {
		got, err := h.PinImage(ctx, c.ref, api.PullIfNotPresent, nil)
		if got != c.want || (c.err == nil && err != nil) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Errorf("PinImage(%q) = %q, %v; want %q, %v", c.ref, got, err, c.want, c.err)
		}
	}
}

// TestPinShortNameUnreachable: a short name no server has, when docker.io
// (here its mirror, a closed port) cannot be asked, is left unpinned
// (NotFound: a node may have built it) rather than failing the apply; an
// explicit registry's failure is the apply's error.
func TestPinShortNameUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cfg := &registry.Config{Registries: map[string]registry.RegistryConfig{"docker.io": {Mirrors: []string{"http://" + closed}}}}
	h := registry.New(openStore(t), registry.Options{Upstream: &registry.UpstreamOptions{Config: cfg, Keychain: cfg}})
	ctx := context.Background()
	if _, err := h.PinImage(ctx, "demo/absent:1", "", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("short name: %v, want not found", err)
	}
	if _, err := h.PinImage(ctx, closed+"/demo/absent:1", "", nil); err == nil || errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("explicit registry: %v, want the connection's error", err)
	}
}

// TestPinShortNameMissIsRemembered: a short name docker.io (here its
// mirror) does not have is asked for once, not on every apply that names
// it, for a while; one found there is pinned; a name with its registry,
// and any image pulled Always, are asked each time.
func TestPinShortNameMissIsRemembered(t *testing.T) {
	var asked atomic.Int64
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.NotFound(w, r)
	}))
	defer mirror.Close()
	host := strings.TrimPrefix(mirror.URL, "http://")
	cfg := &registry.Config{Registries: map[string]registry.RegistryConfig{
		"docker.io": {Mirrors: []string{mirror.URL}},
		host:        {Insecure: true},
	}}
	h := registry.New(openStore(t), registry.Options{Upstream: &registry.UpstreamOptions{Config: cfg, Keychain: cfg}})
	ctx := context.Background()
	pin := func(ref string, policy api.PullPolicy) int64 {
		t.Helper()
		before := asked.Load()
		if _, err := h.PinImage(ctx, ref, policy, nil); err == nil {
			t.Fatalf("%s pinned, want an error", ref)
		}
		return asked.Load() - before
	}
	if n := pin("sim/none:1", ""); n == 0 {
		t.Fatal("the first pin of sim/none:1 did not ask docker.io's mirror")
	}
	for range 3 {
		if n := pin("sim/none:1", ""); n != 0 {
			t.Fatalf("a pin of sim/none:1 just missed asked the mirror %d times, want none", n)
		}
	}
	if n := pin("sim/none:1", api.PullAlways); n == 0 {
		t.Error("a pin pulled Always did not ask the mirror")
	}
	for range 2 {
		if n := pin(host+"/sim/none:1", ""); n == 0 {
			t.Error("a pin of an image named with its registry did not ask it")
		}
	}
}
