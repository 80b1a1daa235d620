package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
)

// runStdio is what container run -i and -t give the container: a pipe
// (-i) or a pseudo-terminal (-t) that berth opens and relays, never one
// of the caller's own descriptors. An inherited terminal would let the
// container type into the operator's shell (TIOCSTI); an inherited file
// would let it read back what the file held.
type runStdio struct {
	interactive bool
	// -i alone: the container reads stdinR; berth writes what it reads
	// from its own stdin to stdinW.
	stdinR, stdinW *os.File
	// -t: the container's terminal is slave; berth relays master.
	master, slave *os.File
	restore       func()
	// copied is closed once the terminal's output has all been relayed.
	copied chan struct{}
}

// openRunStdio opens the pipe or the terminal that -i and -t ask for; nil
// when neither is asked for. With -t, the caller's terminal is put in raw
// mode (restored by close) and the container's is sized, and resized, as it.
func openRunStdio(ctx context.Context, interactive, tty bool) (*runStdio, error) {
	s := &runStdio{interactive: interactive}
	switch {
	case tty:
		restore, sizes, err := rawTerminal(ctx)
		if err != nil {
			return nil, err
		}
		if s.master, s.slave, err = runtime.OpenPty(); err != nil {
			restore()
			return nil, err
		}
		// The first size is waiting: the container starts on a terminal of the right size.
		ts := <-sizes
		setWinsize(s.master, int(ts.Cols), int(ts.Rows))
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case ts := <-sizes:
					setWinsize(s.master, int(ts.Cols), int(ts.Rows))
				}
			}
		}()
		s.restore = func() {
			close(done)
			restore()
		}
	case interactive:
		var err error
		if s.stdinR, s.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
	default:
		return nil, nil
	}
	return s, nil
}

// config gives the container its end.
func (s *runStdio) config(c *runtime.Config) {
	if s == nil {
		return
	}
	c.Stdin, c.Terminal = s.stdinR, s.slave
}

// started drops berth's copy of the container's end, so that the
// container's exit ends the streams, and starts relaying: stdin (with -i)
// to the container, and the terminal's output to stdout.
func (s *runStdio) started(stdin io.Reader, stdout io.Writer) {
	if s == nil {
		return
	}
	if s.slave != nil {
		s.slave.Close()
		s.copied = make(chan struct{})
		go func() {
			defer close(s.copied)
			// EIO from the master means every slave end is closed: the container is gone.
			_, _ = io.Copy(stdout, s.master)
		}()
		if s.interactive {
			go func() { _, _ = io.Copy(s.master, stdin) }()
		}
		return
	}
	s.stdinR.Close()
	go func() {
		_, _ = io.Copy(s.stdinW, stdin)
		// The end of berth's stdin is the end of the container's.
		s.stdinW.Close()
	}()
}

// close waits (briefly) for the terminal's last output, then puts the
// caller's terminal back and closes what is left.
func (s *runStdio) close() {
	if s == nil {
		return
	}
	if s.copied != nil {
		select {
		case <-s.copied:
		case <-time.After(2 * time.Second):
		}
	}
	if s.restore != nil {
		s.restore()
	}
	for _, f := range []*os.File{s.master, s.slave, s.stdinR, s.stdinW} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// withTerm adds TERM for a container on a terminal, as this one's (xterm
// when unset), unless env sets it: programs need it to draw.
func withTerm(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "TERM=") {
			return env
		}
	}
	t := os.Getenv("TERM")
	if t == "" {
		t = "xterm"
	}
	return append(env, "TERM="+t)
}

// errStdioDetached refuses -i and -t with -d.
var errStdioDetached = errors.New("-i and -t need the foreground: a detached container has no stdin or terminal (use berth container exec -it NAME sh to type into it)")
