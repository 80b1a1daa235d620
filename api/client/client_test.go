package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// serve runs h on a unix socket and returns a client of it.
func serve(t *testing.T, h http.HandlerFunc, opts ...Option) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, err := New("unix://"+sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSilentWatchEnds(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"type":"Heartbeat"}` + "\n"))
		w.(http.Flusher).Flush()
		select { // then nothing, as from a server that died mid-stream
		case <-hang:
		case <-r.Context().Done():
		}
	}, WithWatchTimeout(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ch, err := c.Services().Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if !errdefs.IsUnavailable(ev.Err) {
			t.Fatalf("got %+v, want an Unavailable error", ev)
		}
	case <-ctx.Done():
		t.Fatal("a silent watch never ended")
	}
}

func TestErrorsKeepTheirCategory(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/namespaces/default/services/gone":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"service \"gone\" in namespace \"default\": not found","code":"NotFound"}`))
		case "/v1/namespaces/default/services/taken":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":"service \"taken\" in namespace \"default\": already exists","code":"AlreadyExists"}`))
		case "/v1/namespaces/default/services/bad":
			w.WriteHeader(http.StatusUnprocessableEntity)
			w.Write([]byte(`{"error":"bad","code":"InvalidArgument","field":"spec.replicas","reason":"must not be negative","fields":[{"field":"spec.replicas","reason":"must not be negative"}]}`))
		default:
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("upstream trouble"))
		}
	})
	ctx := t.Context()
	_, err := c.Services().Get(ctx, "default", "gone")
	if !errdefs.IsNotFound(err) || err.Error() != `service "gone" in namespace "default": not found` {
		t.Fatalf("got %v", err)
	}
	_, err = c.Services().Get(ctx, "default", "taken")
	if !errdefs.IsAlreadyExists(err) || errdefs.IsConflict(err) {
		t.Fatalf("409 AlreadyExists came back as %v", err)
	}
	_, err = c.Services().Get(ctx, "default", "bad")
	if fe := api.FieldErrors(err); !errdefs.IsInvalidArgument(err) || len(fe) != 1 || fe[0].Field != "spec.replicas" {
		t.Fatalf("got %v with fields %+v", err, fe)
	}
	_, err = c.Services().Get(ctx, "default", "other")
	var ce *Error
	if !errors.As(err, &ce) || ce.Status != http.StatusBadGateway || errdefs.Code(err) != "Internal" {
		t.Fatalf("got %v", err)
	}
}

func TestEndpoints(t *testing.T) {
	for _, bad := range []string{"http://host:80", "unix://", "tcp://x", "::"} {
		if _, err := New(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := New("https://host:8443", WithCA([]byte("not pem"))); err == nil {
		t.Error("a CA without certificates accepted")
	}
}

// A watch whose server says it beats less often than the client's
// timeout (as a client may ask, api.WatchHeartbeatParam) waits three of
// those beats, not the timeout, before it gives up on the stream.
func TestWatchWaitsForTheBeatsTheServerGranted(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.WatchHeartbeatHeader, "2s")
		w.WriteHeader(http.StatusOK)
		for range 5 {
			w.Write([]byte(`{"type":"Heartbeat"}` + "\n"))
			w.(http.Flusher).Flush()
			select {
			case <-time.After(200 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		w.Write([]byte(`{"type":"Added","revision":7,"object":{"metadata":{"name":"web"}}}` + "\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}, WithWatchTimeout(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ch, err := c.Services().Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.Err != nil || ev.Object == nil || ev.Object.Metadata.Name != "web" {
			t.Fatalf("got %+v, want web Added after the server's beats", ev)
		}
	case <-ctx.Done():
		t.Fatal("no event")
	}
}
