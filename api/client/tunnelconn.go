package client

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
)

// TunnelConn is c as both ends of a tunnel give it to yamux: the header
// and the body of a data frame, which yamux writes apart, go out in one
// write. Over TLS each write is a record and a segment of its own, so
// every message of every stream cost the sender two records and two
// sends, and the receiver, which reads the header and then waits for the
// body, often two wakeups: on a remote exec's way (the request, the
// agent's answer, the exit status) each was one more hand-off between
// processes on a busy machine. A net.Conn stays one (yamux gives its
// streams its addresses).
func TunnelConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	f := &frameWriter{w: c}
	if nc, ok := c.(net.Conn); ok {
		return frameNetConn{nc, f}
	}
	return struct {
		io.ReadCloser
		io.Writer
	}{c, f}
}

// frameNetConn is a net.Conn whose writes go through a frameWriter.
type frameNetConn struct {
	net.Conn
	f *frameWriter
}

func (c frameNetConn) Write(p []byte) (int, error) { return c.f.Write(p) }

// yamux's frame header (hashicorp/yamux const.go): version 0, a type
// (0 for data), flags, stream id, and for data the body's length.
const (
	frameHeaderSize = 12
	frameTypeData   = 0
	// maxJoined is the largest body sent with its header: a TLS record's
	// payload. A larger one is split into records anyway, and is not
	// copied for one write.
	maxJoined = 16<<10 - frameHeaderSize
)

type frameWriter struct {
	w    io.Writer
	mu   sync.Mutex
	held bool // hdr holds a data frame's header, whose body comes next
	hdr  [frameHeaderSize]byte
	buf  []byte
}

// Write holds a data frame's header until its body is written: the
// frame's length says that one follows, and yamux writes each frame
// whole before the next.
func (f *frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.held {
		if len(p) == frameHeaderSize && p[0] == 0 && p[1] == frameTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
			copy(f.hdr[:], p)
			f.held = true
			return len(p), nil
		}
		return f.w.Write(p)
	}
	f.held = false
	if len(p) > maxJoined {
		if _, err := f.w.Write(f.hdr[:]); err != nil {
			return 0, err
		}
		return f.w.Write(p)
	}
	f.buf = append(append(f.buf[:0], f.hdr[:]...), p...)
	n, err := f.w.Write(f.buf)
	return max(0, n-frameHeaderSize), err
}
