package client

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
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

// Exec channels: the first byte of each WebSocket message.
const (
	ChanStdin  byte = 0 // client → agent
	ChanStdout byte = 1 // agent → client; with a terminal, all output
	ChanStderr byte = 2 // agent → client
	// ChanExit carries one JSON ExitStatus, the agent's last message.
	ChanExit byte = 3
	// ChanResize carries a JSON TermSize, client → agent.
	ChanResize byte = 4
	// ChanStdinEOF says stdin ended, client → agent.
	ChanStdinEOF byte = 5
)

// ExitStatus is how a command or container ended.
type ExitStatus struct {
	Code int `json:"code"`
	// Error is why it could not run, when it could not.
	Error string `json:"error,omitempty"`
}

// TermSize is a terminal's size in characters.
type TermSize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// MaxFrame bounds a frame's payload; a longer write is split.
const MaxFrame = 1 << 20

// FrameWriter writes frames to w, from several goroutines. Writes are
// buffered and flushed every FlushEvery (or when the buffer fills), so a
// chatty container makes large writes, not one per line.
type FrameWriter struct {
	mu    sync.Mutex
	bw    *bufio.Writer
	flush func()
	dirty bool
	err   error
	stop  chan struct{}
	done  chan struct{}
}

// FlushEvery is how long written frames may wait in a FrameWriter's buffer.
const FlushEvery = 20 * time.Millisecond

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

func (fw *FrameWriter) flushLocked() {
	if err := fw.bw.Flush(); err != nil {
		fw.err = err
	}
	if fw.flush != nil {
		fw.flush()
	}
	fw.dirty = false
}

// WriteFrame writes one frame (splitting a payload over MaxFrame).
func (fw *FrameWriter) WriteFrame(stream byte, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for {
		if fw.err != nil {
			return fw.err
		}
		n := min(len(p), MaxFrame)
		var h [8]byte
		h[0] = stream
		binary.BigEndian.PutUint32(h[4:], uint32(n))
		if _, err := fw.bw.Write(h[:]); err != nil {
			fw.err = err
			return err
		}
		if _, err := fw.bw.Write(p[:n]); err != nil {
			fw.err = err
			return err
		}
		fw.dirty = true
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
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
// nil). A body cut short mid-frame is io.ErrUnexpectedEOF.
func ReadFrames(r io.Reader, stdout, stderr io.Writer, status func([]byte)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var h [8]byte
	buf := make([]byte, 32<<10)
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := binary.BigEndian.Uint32(h[4:])
		if n > MaxFrame {
			return fmt.Errorf("stream frame of %d bytes: over the %d-byte limit", n, MaxFrame)
		}
		if int(n) > len(buf) {
			buf = make([]byte, n)
		}
		p := buf[:n]
		if _, err := io.ReadFull(br, p); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		var w io.Writer
		switch h[0] {
		case StreamStdout:
			w = stdout
		case StreamStderr:
			w = stderr
		case StreamStatus:
			if status != nil {
				status(append([]byte(nil), p...))
			}
			continue
		default:
			return fmt.Errorf("stream frame: unknown stream %d", h[0])
		}
		if w == nil {
			continue
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
}
