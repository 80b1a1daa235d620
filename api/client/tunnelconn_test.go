package client

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// writes records each write made on a connection.
type writes struct {
	net.Conn
	mu sync.Mutex
	w  [][]byte
}

func (c *writes) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.w = append(c.w, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *writes) all() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.w)
}

// tunnelPair is a yamux session over TunnelConn, with the writes made on
// its connection, and its peer's session, over a TCP connection on loopback.
func tunnelPair(t *testing.T) (sess *yamux.Session, rec *writes, peer *yamux.Session) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	other, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	rec = &writes{Conn: c}
	cfg := TunnelConfig(true)
	if sess, err = yamux.Client(TunnelConn(rec), cfg); err != nil {
		t.Fatal(err)
	}
	if peer, err = yamux.Server(other, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close(); peer.Close() })
	return sess, rec, peer
}

// Each data frame goes out in one write, header and body; frames of
// other types (window updates) as yamux writes them; and what is sent
// arrives whole and in order, small messages and large.
func TestTunnelConnSendsAFrameInOneWrite(t *testing.T) {
	sess, rec, peer := tunnelPair(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB: frames larger than a record
	msgs := [][]byte{[]byte("hello"), []byte("a second message"), big}
	got := make(chan []byte, 1)
	go func() {
		st, err := peer.AcceptStream()
		if err != nil {
			got <- nil
			return
		}
		defer st.Close()
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(st)
		got <- b
	}()
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := st.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, bytes.Join(msgs, nil)) {
			t.Fatalf("the peer read %d bytes, want %d, the messages in order", len(b), len(bytes.Join(msgs, nil)))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the peer read nothing")
	}
	// Walk the writes as frames; a body larger than a record follows its
	// header in writes of its own.
	var small, other, pending int
	for _, w := range rec.all() {
		if pending > 0 {
			pending -= len(w)
			continue
		}
		if len(w) < frameHeaderSize || w[0] != 0 {
			t.Fatalf("a write of %d bytes does not start a frame", len(w))
		}
		typ, n := w[1], int(binary.BigEndian.Uint32(w[8:12]))
		switch {
		case typ != frameTypeData || n == 0:
			other++
		case n > maxJoined:
			if len(w) != frameHeaderSize {
				t.Errorf("a write of %d bytes for a large frame's header", len(w))
			}
			pending = n
		case len(w) == frameHeaderSize:
			t.Errorf("a data frame's header (%d bytes of body) was written apart from its body", n)
			pending = n
		default:
			if len(w) != frameHeaderSize+n {
				t.Errorf("a write of %d bytes for a frame of %d", len(w), n)
			}
			small++
		}
	}
	if small < 2 || other == 0 {
		t.Errorf("%d small data frames, %d others written: want the two messages and the stream's window updates", small, other)
	}
}
