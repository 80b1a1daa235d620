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
	conn := dialH2(t, addr, caPEM, time.Minute)
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

// Answers larger than 4 KiB, a watch's event and a read's, go out in
// DATA frames of 4 KiB at most, not of the 16 KiB the client allows: the
// server's framer keeps a buffer as big as the largest frame it has
// written on a connection, and a node's connection lives as long as the
// node.
func TestAnswersInFramesOfFourKiB(t *testing.T) {
	const token = "0123456789abcdef0123"
	addr, caPEM := serveTLS(t, token)
	conn := dialH2(t, addr, caPEM, 2*time.Minute)
	// HPACK by hand: :method GET, :scheme https from the static table;
	// :path and authorization literal, not indexed.
	get := func(path string) []byte {
		b := []byte{0x82, 0x87}
		for _, f := range [][2]string{{":path", path}, {"authorization", "Bearer " + token}} {
			b = append(append(b, 0x00, byte(len(f[0]))), f[0]...)
			b = append(append(b, byte(len(f[1]))), f[1]...)
		}
		return b
	}
	var out []byte
	out = append(out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"...)
	out = append(out, h2Frame(0x4, 0, 0, nil)...)                           // SETTINGS: 16 KiB frames, the default
	out = append(out, h2Frame(0x1, 0x4, 1, get("/v1/services?watch=1"))...) // HEADERS, END_HEADERS
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for j := range 60 {
		env[fmt.Sprintf("V%02d", j)] = strings.Repeat("w", 400) // 24 KB in all
	}
	applied, read := false, false
	bodies := map[uint32][]byte{}
	largest := map[uint32]int{}
	// The event is whole once a line ends after the service's name.
	whole := func() bool {
		_, after, found := bytes.Cut(bodies[1], []byte(`"name":"big"`))
		return found && bytes.Contains(after, []byte("\n"))
	}
	hdr := make([]byte, 9)
	for !read {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			t.Fatalf("reading the answers (%d bytes of the watch, %d of the read): %v", len(bodies[1]), len(bodies[3]), err)
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatal(err)
		}
		stream := uint32(hdr[5]&0x7f)<<24 | uint32(hdr[6])<<16 | uint32(hdr[7])<<8 | uint32(hdr[8])
		var reply []byte
		switch hdr[3] {
		case 0x0: // DATA
			bodies[stream] = append(bodies[stream], payload...)
			largest[stream] = max(largest[stream], len(payload))
			n := len(payload)
			reply = h2Frame(0x8, 0, 0, []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}) // WINDOW_UPDATE
			if stream == 1 && whole() && bodies[3] == nil {
				bodies[3] = []byte{}
				reply = append(reply, h2Frame(0x1, 0x5, 3, get("/v1/namespaces/default/services/big"))...)
			}
			read = stream == 3 && hdr[4]&0x1 != 0 // END_STREAM
		case 0x1: // HEADERS: the watch is on, from now
			if stream != 1 || applied {
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
				reply = h2Frame(0x4, 0x1, 0, nil)
			}
		case 0x7: // GOAWAY
			t.Fatalf("the server went away, error code %x", payload[4:8])
		case 0x3: // RST_STREAM
			t.Fatalf("the server reset stream %d, error code %x", stream, payload)
		}
		if reply != nil {
			if _, err := conn.Write(reply); err != nil {
				t.Fatal(err)
			}
		}
	}
	for stream, what := range map[uint32]string{1: "watch", 3: "read"} {
		if !bytes.Contains(bodies[stream], []byte(strings.Repeat("w", 400))) {
			t.Fatalf("the %s's answer lacks the service's environment", what)
		}
		if largest[stream] != 4<<10 {
			t.Errorf("the %s's largest DATA frame was of %d bytes, want 4 KiB for an answer of 24 KB", what, largest[stream])
		}
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

// dialH2 opens a TLS connection to addr that speaks HTTP/2 by hand,
// trusting caPEM, closed when the test ends, with a deadline of d.
func dialH2(t *testing.T, addr string, caPEM []byte, d time.Duration) *tls.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(d))
	return conn
}
