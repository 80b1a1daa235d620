// Package unixapi serves the API over a store of its own on a unix
// socket, for the tests of what speaks to the API: the CLI, the peers
// follower, the dashboard.
package unixapi

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/store"
)

// Server is an API server a test runs.
type Server struct {
	Dir    string // the data dir, whose socket the server listens on
	Store  *store.Store
	Client *client.Client
}

// Serve runs an API server configured as cfg (its store is a new one in
// a fresh data dir) on the data dir's socket until the test ends.
func Serve(t testing.TB, cfg apiserver.Config) *Server {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cfg.Store = st
	l, err := apiserver.ListenUnix(api.SocketPath(dir))
	if err != nil {
		cancel()
		st.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- apiserver.New(cfg).Serve(ctx, l, apiserver.UnixRootOnly) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		st.Close()
	})
	c, err := client.New("unix://" + api.SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Dir: dir, Store: st, Client: c}
}
