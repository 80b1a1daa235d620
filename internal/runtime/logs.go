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
	emit := func(l logLine) error {
		w := stdout
		if l.stderr {
			w = stderr
		}
		if opts.Timestamps {
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
	maxFiles := m.Config.LogMaxFiles
	if maxFiles == 0 {
		maxFiles = DefaultLogMaxFiles
	}
	base := bd.path("container.log")
	// Rotated files first, oldest first, then the live one.
	var lines []logLine
	for i := maxFiles - 1; i >= 1; i-- {
		b, err := os.ReadFile(base + "." + strconv.Itoa(i))
		if err != nil {
			continue
		}
		lines = appendLines(lines, b, opts.Tail)
	}
	f, err := os.Open(base)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("container %q: logs: %w", id, err)
	}
	var rd *bufio.Reader
	if f != nil {
		defer func() { f.Close() }()
		b, err := io.ReadAll(f)
		if err != nil {
			return fmt.Errorf("container %q: logs: %w", id, err)
		}
		// A trailing line without its newline is still being written: leave it for the follower.
		complete := bytes.LastIndexByte(b, '\n') + 1
		lines = appendLines(lines, b[:complete], opts.Tail)
		if _, err := f.Seek(int64(complete), io.SeekStart); err != nil {
			return err
		}
		rd = bufio.NewReader(f)
	}
	for _, l := range lines {
		if err := emit(l); err != nil {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}
	var pending []byte
	drain := func() error {
		if rd == nil {
			return nil
		}
		for {
			chunk, err := rd.ReadBytes('\n')
			pending = append(pending, chunk...)
			if err != nil {
				return nil // at the end for now; a partial line waits in pending
			}
			if l, ok := parseLogLine(bytes.TrimSuffix(pending, []byte{'\n'})); ok {
				if err := emit(l); err != nil {
					return err
				}
			}
			pending = pending[:0]
		}
	}
	for {
		if err := drain(); err != nil {
			return err
		}
		if rotated(f, base) {
			// The shim renamed the file away: finish it, then follow the new one.
			if err := drain(); err != nil {
				return err
			}
			nf, err := os.Open(base)
			if err == nil {
				if f != nil {
					f.Close()
				}
				f, rd, pending = nf, bufio.NewReader(nf), nil
				continue
			}
		}
		if st := r.status(bd, m); st.State != Running && st.State != Created {
			// The last writes may have rotated the file after the check above.
			if err := drain(); err != nil || !rotated(f, base) {
				return err
			}
			if nf, err := os.Open(base); err == nil {
				f.Close()
				f, rd, pending = nf, bufio.NewReader(nf), nil
			}
			return drain()
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil
		}
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
