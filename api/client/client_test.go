package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
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

// A body goes in reads of bodyFrame bytes at most, whole, and whole
// again when the transport asks for it anew (a retry).
func TestBodyInShortReads(t *testing.T) {
	env := map[string]string{}
	for i := range 100 {
		env[fmt.Sprintf("V%03d", i)] = strings.Repeat("x", 500)
	}
	s := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: "big"}, Spec: api.ServiceSpec{Template: api.Template{Env: env}}}
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	readAll := func(r io.Reader) []byte {
		buf := make([]byte, 64<<10)
		var all []byte
		for {
			n, err := r.Read(buf)
			if n > bodyFrame {
				t.Fatalf("a read gave %d bytes, over %d", n, bodyFrame)
			}
			all = append(all, buf[:n]...)
			if err == io.EOF {
				return all
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	var bodies [][]byte
	rt := roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.ContentLength != int64(len(want)) {
			t.Errorf("content length %d, want %d", req.ContentLength, len(want))
		}
		bodies = append(bodies, readAll(req.Body))
		again, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		bodies = append(bodies, readAll(again))
		return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Request: req}, nil
	})
	c, err := New("https://berth.test", WithHTTPClient(&http.Client{Transport: rt}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.do(t.Context(), http.MethodPut, "/v1/namespaces/default/services/big", nil, s, nil); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 2 || !bytes.Equal(bodies[0], want) || !bytes.Equal(bodies[1], want) {
		t.Fatalf("read %d bodies, or changed ones; want the body twice", len(bodies))
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
