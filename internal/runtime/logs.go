package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"
)

// LogOptions select what Logs writes.
type LogOptions struct {
	// Follow keeps writing new output until the container exits or ctx ends.
	Follow bool
	// Tail, when positive, starts with only the last Tail lines.
	Tail int
	// Timestamps prefixes each line with its RFC 3339 time.
	Timestamps bool
}

// Each log line is "TIME STREAM TAG CONTENT", TAG being F for a full line
// and P for part of a longer one (the CRI logging format).
type logLine struct {
	ts      []byte
	stderr  bool
	partial bool
	content []byte
}

func parseLogLine(b []byte) (logLine, bool) {
	f := bytes.SplitN(b, []byte{' '}, 4)
	if len(f) != 4 {
		return logLine{}, false
	}
	return logLine{ts: f[0], stderr: string(f[1]) == "stderr", partial: string(f[2]) == "P", content: f[3]}, true
}

// Logs writes the container's output to stdout and stderr as it was written.
func (r *Runtime) Logs(ctx context.Context, id string, opts LogOptions, stdout, stderr io.Writer) error {
	bd, m, err := r.load(id)
	if err != nil {
		return err
	}
	maxFiles := m.Config.LogMaxFiles
	if maxFiles == 0 {
		maxFiles = DefaultLogMaxFiles
	}
	lf := &logFile{base: bd.path("container.log"), emit: logEmitter(opts.Timestamps, stdout, stderr)}
	defer lf.close()
	lines, err := lf.history(maxFiles, opts.Tail)
	if err != nil {
		return fmt.Errorf("container %q: logs: %w", id, err)
	}
	for _, l := range lines {
		if err := lf.emit(l); err != nil {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}
	return lf.follow(ctx, func() bool {
		st := r.status(bd, m)
		return st.State == Running || st.State == Created
	})
}

// logEmitter writes a log line to the stream it came from.
func logEmitter(timestamps bool, stdout, stderr io.Writer) func(logLine) error {
	return func(l logLine) error {
		w := stdout
		if l.stderr {
			w = stderr
		}
		if timestamps {
			if _, err := w.Write(append(append([]byte{}, l.ts...), ' ')); err != nil {
				return err
			}
		}
		_, err := w.Write(l.content)
		if err == nil && !l.partial {
			_, err = w.Write([]byte{'\n'})
		}
		return err
	}
}

// logFile reads a container's log (base, and base.1... as the shim
// rotates it) and follows the live file.
type logFile struct {
	base    string
	emit    func(logLine) error
	f       *os.File
	rd      *bufio.Reader
	pending []byte // a line read in part
}

// history is the complete lines written so far, the last tail of them
// when tail > 0: rotated files first, oldest first, then the live one,
// which is left open at the end of its last complete line.
func (lf *logFile) history(maxFiles, tail int) ([]logLine, error) {
	var lines []logLine
	for i := maxFiles - 1; i >= 1; i-- {
		b, err := os.ReadFile(lf.base + "." + strconv.Itoa(i))
		if err != nil {
			continue
		}
		lines = appendLines(lines, b, tail)
	}
	f, err := os.Open(lf.base)
	if errors.Is(err, os.ErrNotExist) {
		return lines, nil
	}
	if err != nil {
		return nil, err
	}
	lf.f = f
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	// A trailing line without its newline is still being written: leave it for the follower.
	complete := bytes.LastIndexByte(b, '\n') + 1
	lines = appendLines(lines, b[:complete], tail)
	if _, err := f.Seek(int64(complete), io.SeekStart); err != nil {
		return nil, err
	}
	lf.rd = bufio.NewReader(f)
	return lines, nil
}

// follow emits lines as they are written, across rotations, until the
// container stops (running says it has not) or ctx ends.
func (lf *logFile) follow(ctx context.Context, running func() bool) error {
	for {
		if err := lf.drain(); err != nil {
			return err
		}
		if rotated(lf.f, lf.base) {
			// The shim renamed the file away: finish it, then follow the new one.
			if err := lf.drain(); err != nil {
				return err
			}
			if lf.reopen() {
				continue
			}
		}
		if !running() {
			// The last writes may have rotated the file after the check above.
			if err := lf.drain(); err != nil || !rotated(lf.f, lf.base) {
				return err
			}
			lf.reopen()
			return lf.drain()
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil
		}
	}
}

// drain emits the complete lines written since the last read; a partial
// line waits in pending.
func (lf *logFile) drain() error {
	if lf.rd == nil {
		return nil
	}
	for {
		chunk, err := lf.rd.ReadBytes('\n')
		lf.pending = append(lf.pending, chunk...)
		if err != nil {
			return nil // at the end for now
		}
		if l, ok := parseLogLine(bytes.TrimSuffix(lf.pending, []byte{'\n'})); ok {
			if err := lf.emit(l); err != nil {
				return err
			}
		}
		lf.pending = lf.pending[:0]
	}
}

// reopen follows the live file again after a rotation; false when there
// is none yet.
func (lf *logFile) reopen() bool {
	nf, err := os.Open(lf.base)
	if err != nil {
		return false
	}
	lf.close()
	lf.f, lf.rd, lf.pending = nf, bufio.NewReader(nf), nil
	return true
}

func (lf *logFile) close() {
	if lf.f != nil {
		lf.f.Close()
	}
}

func appendLines(lines []logLine, b []byte, tail int) []logLine {
	for _, raw := range bytes.Split(b, []byte{'\n'}) {
		if len(raw) == 0 {
			continue
		}
		if l, ok := parseLogLine(raw); ok {
			lines = append(lines, l)
		}
	}
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return lines
}

// rotated reports whether path now names a different file than f.
func rotated(f *os.File, path string) bool {
	if f == nil {
		_, err := os.Stat(path)
		return err == nil
	}
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	if err1 != nil || err2 != nil {
		return err2 == nil
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Ino != sb.Ino
}
