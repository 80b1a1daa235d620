package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime"
)

// runTar runs tar in the container with the given stdin and stdout, and
// returns its exit code and what it said on stderr. The image must have a
// tar (as kubectl cp needs).
func (a *Agent) runTar(ctx context.Context, id string, args []string, stdin io.Reader, stdout io.Writer) (int, string, error) {
	var errBuf bytes.Buffer
	pr := runtime.ExecProcess{Args: append([]string{"tar"}, args...), Stdout: stdout, Stderr: &limitedBuffer{b: &errBuf, max: 4 << 10}}
	if stdin != nil {
		// A pipe the agent owns, fed from the request body.
		rd, wr, err := os.Pipe()
		if err != nil {
			return -1, "", err
		}
		defer rd.Close()
		go func() {
			_, _ = io.Copy(wr, stdin)
			wr.Close()
		}()
		pr.Stdin = rd
	}
	code, err := a.cfg.Runtime.Exec(ctx, id, pr)
	return code, strings.TrimSpace(errBuf.String()), err
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// startedWriter sends the response's header before the first byte of
// the body, so an error found before any output can still be an error.
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.w.Header().Set("Content-Type", "application/x-tar")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	return s.w.Write(p)
}

// cpTarget is the path and the running container request r names; on
// failure it writes the error to w.
func (a *Agent) cpTarget(w http.ResponseWriter, r *http.Request) (string, runtime.Status, bool) {
	p := r.URL.Query().Get("path")
	if p == "" || !path.IsAbs(p) {
		writeErr(w, &api.ValidationError{Fields: []api.FieldError{{Field: "path", Reason: fmt.Sprintf("%q is not an absolute path in the container", p)}}})
		return "", runtime.Status{}, false
	}
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return "", runtime.Status{}, false
	}
	return path.Clean(p), c, true
}

func (a *Agent) serveCopyFrom(w http.ResponseWriter, r *http.Request) {
	p, c, ok := a.cpTarget(w, r)
	if !ok {
		return
	}
	// tar writes its end-of-archive blocks even when it finds nothing, so
	// a missing path is asked about first, while an error can still be sent.
	if code, err := a.cfg.Runtime.Exec(r.Context(), c.ID, runtime.ExecProcess{Args: []string{"test", "-e", p}}); err == nil && code != 0 {
		writeErr(w, fmt.Errorf("copy %s from container %s: %w: no such file or directory", p, c.ID, errdefs.ErrNotFound))
		return
	}
	sw := &startedWriter{w: w}
	code, msg, err := a.runTar(r.Context(), c.ID, []string{"cf", "-", "-C", path.Dir(p), path.Base(p)}, nil, sw)
	switch {
	case err == nil && code == 0:
		if !sw.started {
			sw.Write(nil)
		}
	case sw.started:
		// Half a tar has gone out: cut the stream so the client sees it fail.
		panic(http.ErrAbortHandler)
	case err != nil:
		writeErr(w, fmt.Errorf("copy %s from container %s: %w", p, c.ID, err))
	case strings.Contains(msg, "No such file") || strings.Contains(msg, "not found"):
		writeErr(w, fmt.Errorf("copy %s from container %s: %w: %s", p, c.ID, errdefs.ErrNotFound, msg))
	default:
		writeErr(w, fmt.Errorf("copy %s from container %s: tar exited %d: %s", p, c.ID, code, msg))
	}
}

func (a *Agent) serveCopyTo(w http.ResponseWriter, r *http.Request) {
	p, c, ok := a.cpTarget(w, r)
	if !ok {
		return
	}
	code, msg, err := a.runTar(r.Context(), c.ID, []string{"xf", "-", "-C", p}, r.Body, io.Discard)
	switch {
	case err != nil:
		writeErr(w, fmt.Errorf("copy into %s of container %s: %w", p, c.ID, err))
	case code != 0 && (strings.Contains(msg, "No such file") || strings.Contains(msg, "can't change directory")):
		writeErr(w, fmt.Errorf("copy into %s of container %s: %w: %s", p, c.ID, errdefs.ErrNotFound, msg))
	case code != 0:
		writeErr(w, fmt.Errorf("copy into %s of container %s: tar exited %d: %s", p, c.ID, code, msg))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
