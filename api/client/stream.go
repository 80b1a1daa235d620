package client

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/api/client/execwire"
)

// The wire format of the streams the instance subresources carry. The
// agent writes them, the apiserver passes them through untouched, and
// the client reads them.
//
// Logs and attach answer a GET with a body of frames, each an 8-byte
// header (stream, three zero bytes, big-endian payload length) and the
// payload, as Docker's attach stream:
//
//	| stream | 0 0 0 | len (4 bytes) | payload ... |
//
// Exec and port-forward are WebSocket connections of binary messages.
// An exec message's first byte is its channel (Chan*) and the rest its
// payload; port-forward's messages are the TCP stream's bytes.

// Frame streams of the logs and attach bodies.
const (
	StreamStdout byte = 1
	StreamStderr byte = 2
	// StreamStatus carries one JSON ExitStatus at the end of a stream
	// that ended with its container (attach), or the error that cut it short.
	StreamStatus byte = 3
)

// Exec channels: the first byte of each WebSocket message (execwire's).
const (
	ChanStdin    = execwire.ChanStdin
	ChanStdout   = execwire.ChanStdout
	ChanStderr   = execwire.ChanStderr
	ChanExit     = execwire.ChanExit
	ChanResize   = execwire.ChanResize
	ChanStdinEOF = execwire.ChanStdinEOF
)

// ExitStatus is how a command or container ended.
type ExitStatus = execwire.ExitStatus

// TermSize is a terminal's size in characters.
type TermSize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// MaxFrame bounds a frame's payload; a longer write is split.
const MaxFrame = execwire.MaxFrame

// FrameWriter writes frames to w, from several goroutines. Writes are
// buffered, and consecutive writes to one stream share a frame, until the
// buffer fills or FlushEvery passes: a chatty container makes large
// writes, not one (or three) per line.
type FrameWriter struct {
	mu      sync.Mutex
	bw      *bufio.Writer
	flush   func()
	pending []byte // the payload of the frame being gathered
	stream  byte   // pending's stream
	dirty   bool
	err     error
	stop    chan struct{}
	done    chan struct{}
}

// FlushEvery is how long written frames may wait in a FrameWriter's buffer.
const FlushEvery = 20 * time.Millisecond

// gather is how large a frame grows from consecutive writes.
const gather = 32 << 10

// NewFrameWriter writes frames to w, calling flush (when not nil) after
// each flush of its buffer. Close stops it.
func NewFrameWriter(w io.Writer, flush func()) *FrameWriter {
	fw := &FrameWriter{bw: bufio.NewWriterSize(w, 64<<10), flush: flush, stop: make(chan struct{}), done: make(chan struct{})}
	go fw.flusher()
	return fw
}

func (fw *FrameWriter) flusher() {
	defer close(fw.done)
	t := time.NewTicker(FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-fw.stop:
			return
		case <-t.C:
			fw.mu.Lock()
			if fw.dirty && fw.err == nil {
				fw.flushLocked()
			}
			fw.mu.Unlock()
		}
	}
}

// emitLocked writes the gathered frame out to the buffer.
func (fw *FrameWriter) emitLocked() {
	if len(fw.pending) == 0 || fw.err != nil {
		fw.pending = fw.pending[:0]
		return
	}
	var h [8]byte
	h[0] = fw.stream
	binary.BigEndian.PutUint32(h[4:], uint32(len(fw.pending)))
	if _, err := fw.bw.Write(h[:]); err != nil {
		fw.err = err
	} else if _, err := fw.bw.Write(fw.pending); err != nil {
		fw.err = err
	}
	fw.pending = fw.pending[:0]
}

func (fw *FrameWriter) flushLocked() {
	fw.emitLocked()
	if fw.err == nil {
		if err := fw.bw.Flush(); err != nil {
			fw.err = err
		}
	}
	if fw.flush != nil {
		fw.flush()
	}
	fw.dirty = false
}

// WriteFrame writes p to stream (in frames of at most MaxFrame).
func (fw *FrameWriter) WriteFrame(stream byte, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for len(p) > 0 || fw.err != nil {
		if fw.err != nil {
			return fw.err
		}
		if stream != fw.stream || len(fw.pending) >= gather {
			fw.emitLocked()
			fw.stream = stream
		}
		n := min(len(p), MaxFrame-len(fw.pending))
		fw.pending = append(fw.pending, p[:n]...)
		fw.dirty = true
		p = p[n:]
	}
	if stream == StreamStatus {
		fw.emitLocked() // a status is a frame of its own
	}
	return fw.err
}

// Stream is an io.Writer whose writes become frames of stream.
func (fw *FrameWriter) Stream(stream byte) io.Writer { return streamWriter{fw, stream} }

type streamWriter struct {
	fw     *FrameWriter
	stream byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.fw.WriteFrame(s.stream, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close flushes what is buffered and stops the flusher.
func (fw *FrameWriter) Close() error {
	close(fw.stop)
	<-fw.done
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.err == nil {
		fw.flushLocked()
	}
	return fw.err
}

// ReadFrames reads frames from r until it ends, writing stdout and stderr
// frames to their writers and passing a status frame to status (when not
// nil). The writers get what has arrived in large writes, whenever the
// stream pauses, and in the order it came. A body cut short mid-frame is
// io.ErrUnexpectedEOF.
func ReadFrames(r io.Reader, stdout, stderr io.Writer, status func([]byte)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	out := &orderedWriters{w: [2]io.Writer{stdout, stderr}}
	defer out.flush()
	var h [8]byte
	for {
		if br.Buffered() < len(h) {
			// About to wait for the network: hand on what is here.
			if err := out.flush(); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out.flush()
			}
			return err
		}
		n := binary.BigEndian.Uint32(h[4:])
		if n > MaxFrame {
			return fmt.Errorf("stream frame of %d bytes: over the %d-byte limit", n, MaxFrame)
		}
		var idx int
		switch h[0] {
		case StreamStdout:
			idx = 0
		case StreamStderr:
			idx = 1
		case StreamStatus:
			p := make([]byte, n)
			if _, err := io.ReadFull(br, p); err != nil {
				return unexpected(err)
			}
			if status != nil {
				status(p)
			}
			continue
		default:
			return fmt.Errorf("stream frame: unknown stream %d", h[0])
		}
		if err := out.copy(idx, br, int(n)); err != nil {
			return err
		}
	}
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// orderedWriters buffers output for two writers, handing one's on
// before the other's so that they interleave as they came.
type orderedWriters struct {
	w   [2]io.Writer
	buf []byte
	cur int
}

func (o *orderedWriters) copy(idx int, r io.Reader, n int) error {
	if idx != o.cur || len(o.buf)+n > 256<<10 {
		if err := o.flush(); err != nil {
			return err
		}
		o.cur = idx
	}
	start := len(o.buf)
	o.buf = slices.Grow(o.buf, n)[:start+n]
	if _, err := io.ReadFull(r, o.buf[start:]); err != nil {
		o.buf = o.buf[:start]
		return unexpected(err)
	}
	return nil
}

func (o *orderedWriters) flush() error {
	if len(o.buf) == 0 {
		return nil
	}
	w := o.w[o.cur]
	b := o.buf
	o.buf = o.buf[:0]
	if w == nil {
		return nil
	}
	_, err := w.Write(b)
	return err
}
