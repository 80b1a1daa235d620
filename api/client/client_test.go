package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

// The client indexes none of the headers it sends, from its first
// request on: the server would keep them, in a table of its connection's,
// for the connection's life.
func TestHeadersNotIndexed(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	certs := ts.TLS.Certificates
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	ts.Close()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: certs, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The server speaks HTTP/2 by hand, to read the header blocks as the
	// client encodes them, and answers each request 204.
	indexed := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- serveHeaderBlocks(l, indexed) }()
	c, err := New("https://"+l.Addr().String(), WithCA(caPEM), WithToken("0123456789abcdef0123"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for i := range 3 {
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/namespaces/default/services/s%d", i), nil, nil, nil); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		select {
		case what := <-indexed:
			t.Fatalf("request %d: the client indexed a header: %s", i, what)
		default:
		}
	}
	c.hc.CloseIdleConnections()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// serveHeaderBlocks serves one HTTP/2 connection of l, answering every
// request 204, and sends to indexed what the first header block that adds
// to the decoder's table begins with.
func serveHeaderBlocks(l net.Listener, indexed chan<- string) error {
	conn, err := l.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	frame := func(typ, flags byte, stream uint32, payload []byte) []byte {
		n := len(payload)
		return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags,
			byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}, payload...)
	}
	preface := make([]byte, 24)
	if _, err := io.ReadFull(conn, preface); err != nil {
		return fmt.Errorf("preface: %w", err)
	}
	if _, err := conn.Write(frame(0x4, 0, 0, nil)); err != nil {
		return err
	}
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			return nil // the client is gone
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(conn, payload); err != nil {
			return nil
		}
		stream := uint32(hdr[5]&0x7f)<<24 | uint32(hdr[6])<<16 | uint32(hdr[7])<<8 | uint32(hdr[8])
		var out []byte
		switch {
		case hdr[3] == 0x4 && hdr[4]&0x1 == 0: // SETTINGS
			out = frame(0x4, 0x1, 0, nil)
		case hdr[3] == 0x1: // HEADERS
			if hdr[4]&0x4 == 0 {
				return errors.New("a header block in several frames")
			}
			if at := indexingAt(payload); at >= 0 {
				select {
				case indexed <- fmt.Sprintf("%q", payload[at:min(at+24, len(payload))]):
				default:
				}
			}
			out = frame(0x1, 0x5, stream, []byte{0x88 + 2}) // :status 204, END_STREAM
		}
		if out != nil {
			if _, err := conn.Write(out); err != nil {
				return nil
			}
		}
	}
}

// indexingAt is where in an HPACK header block the first representation
// that adds to the decoder's table (RFC 7541, 6.2.1) begins, or -1.
func indexingAt(block []byte) int {
	// integer reads an integer of an n-bit prefix at i; where it ends.
	integer := func(i, n int) (uint64, int) {
		v := uint64(block[i]) & (1<<n - 1)
		i++
		if v < 1<<n-1 {
			return v, i
		}
		for m := 0; i < len(block); m += 7 {
			b := block[i]
			i++
			v += uint64(b&0x7f) << m
			if b&0x80 == 0 {
				break
			}
		}
		return v, i
	}
	str := func(i int) int {
		n, j := integer(i, 7)
		return j + int(n)
	}
	for i := 0; i < len(block); {
		switch b := block[i]; {
		case b&0x80 != 0: // indexed
			_, i = integer(i, 7)
		case b&0xc0 == 0x40: // literal with incremental indexing
			return i
		case b&0xe0 == 0x20: // dynamic table size update
			_, i = integer(i, 5)
		default: // literal not indexed, or never indexed
			var name uint64
			if name, i = integer(i, 4); name == 0 {
				i = str(i)
			}
			i = str(i)
		}
	}
	return -1
}
