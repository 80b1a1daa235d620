package apiserver_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
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
	const token = "0123456789abcdef0123"
	addr, caPEM := serveTLS(t, token)
	ctx := t.Context()
	c, err := client.New("https://"+addr, client.WithCA(caPEM), client.WithToken(token))
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

// A client that indexes its first request's headers before it has read
// the server's settings, as Go's transport does, and refers to them in
// its next request, is answered both times: the server's table for
// requests' headers holds what a client indexes that early.
func TestHeadersIndexedBeforeTheSettings(t *testing.T) {
	addr, caPEM := serveTLS(t, "0123456789abcdef0123")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	// HPACK by hand: :method GET, :scheme https, :path / from the static
	// table; a header of 300 bytes added to the dynamic table (literal
	// with incremental indexing, a new name), then referred to by index.
	pad := strings.Repeat("p", 300)
	first := append([]byte{0x82, 0x87, 0x84, 0x40, 5}, "x-pad"...)
	first = append(append(first, 0x7f, byte(300-127-128)|0x80, 1), pad...)
	second := []byte{0x82, 0x87, 0x84, 0x80 | 62}
	var out []byte
	out = append(out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"...)
	out = append(out, h2Frame(0x4, 0, 0, nil)...)      // SETTINGS
	out = append(out, h2Frame(0x1, 0x5, 1, first)...)  // HEADERS, END_STREAM|END_HEADERS
	out = append(out, h2Frame(0x1, 0x5, 3, second)...) // the same, by index
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	answered := map[uint32]bool{}
	hdr := make([]byte, 9)
	for !answered[1] || !answered[3] {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			t.Fatalf("reading the answers (streams answered: %v): %v", answered, err)
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatal(err)
		}
		stream := uint32(hdr[5]&0x7f)<<24 | uint32(hdr[6])<<16 | uint32(hdr[7])<<8 | uint32(hdr[8])
		switch hdr[3] {
		case 0x1: // HEADERS
			answered[stream] = true
		case 0x7: // GOAWAY
			t.Fatalf("the server went away, error code %x (streams answered: %v)", payload[4:8], answered)
		case 0x3: // RST_STREAM
			t.Fatalf("the server reset stream %d, error code %x", stream, payload)
		}
	}
}

// A watch's event larger than 4 KiB goes out in DATA frames of 4 KiB at
// most, not of the 16 KiB the client allows: the server's framer keeps a
// buffer as big as the largest frame it has written on a connection, and
// a node's connection, its watch on it, lives as long as the node.
func TestWatchFramesOfFourKiB(t *testing.T) {
	const token = "0123456789abcdef0123"
	addr, caPEM := serveTLS(t, token)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	// HPACK by hand: :method GET, :scheme https from the static table;
	// :path and authorization literal, not indexed.
	literal := func(b []byte, name, value string) []byte {
		b = append(append(b, 0x00, byte(len(name))), name...)
		return append(append(b, byte(len(value))), value...)
	}
	req := literal([]byte{0x82, 0x87}, ":path", "/v1/services?watch=1")
	req = literal(req, "authorization", "Bearer "+token)
	var out []byte
	out = append(out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"...)
	out = append(out, h2Frame(0x4, 0, 0, nil)...)   // SETTINGS: 16 KiB frames, the default
	out = append(out, h2Frame(0x1, 0x4, 1, req)...) // HEADERS, END_HEADERS
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for j := range 60 {
		env[fmt.Sprintf("V%02d", j)] = strings.Repeat("w", 400) // 24 KB in all
	}
	applied := false
	var body []byte
	largest := 0
	hdr := make([]byte, 9)
	// The event is whole once a line ends after the service's name.
	whole := func() bool {
		_, after, found := bytes.Cut(body, []byte(`"name":"big"`))
		return found && bytes.Contains(after, []byte("\n"))
	}
	for !whole() {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			t.Fatalf("reading the watch (%d bytes of it so far): %v", len(body), err)
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatal(err)
		}
		switch hdr[3] {
		case 0x0: // DATA
			body = append(body, payload...)
			largest = max(largest, len(payload))
		case 0x1: // HEADERS: the watch is on, from now
			if applied {
				continue
			}
			applied = true
			c, err := client.New("https://"+addr, client.WithCA(caPEM), client.WithToken(token))
			if err != nil {
				t.Fatal(err)
			}
			s := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: "big"},
				Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "demo/busybox:1", Env: env}}}
			if _, err := c.Services().Apply(t.Context(), s); err != nil {
				t.Fatalf("apply: %v", err)
			}
		case 0x4: // SETTINGS
			if hdr[4]&0x1 == 0 {
				if _, err := conn.Write(h2Frame(0x4, 0x1, 0, nil)); err != nil {
					t.Fatal(err)
				}
			}
		case 0x7: // GOAWAY
			t.Fatalf("the server went away, error code %x", payload[4:8])
		case 0x3: // RST_STREAM
			t.Fatalf("the server reset the watch, error code %x", payload)
		}
	}
	if largest > 4<<10 {
		t.Fatalf("the watch sent a DATA frame of %d bytes, want 4 KiB at most", largest)
	}
	if largest < 4<<10 {
		t.Fatalf("the watch's largest DATA frame was of %d bytes, want 4 KiB for an event of 24 KB", largest)
	}
}

// h2Frame is an HTTP/2 frame of type typ on stream.
func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags,
		byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}, payload...)
}

// serveTLS serves a new test server's API over TLS on a loopback port,
// with a self-signed certificate and token, until the test ends; it
// returns the address and the certificate to trust.
func serveTLS(t *testing.T, token string) (string, []byte) {
	t.Helper()
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	cert, caPEM := selfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.srv.ServeTLS(ctx, l, &tls.Config{Certificates: []tls.Certificate{cert}}, token) }()
	t.Cleanup(func() { cancel(); <-done })
	return l.Addr().String(), caPEM
}
