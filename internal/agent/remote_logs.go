package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/runtime"
)

func flusher(w http.ResponseWriter) func() {
	rc := http.NewResponseController(w)
	return func() { _ = rc.Flush() }
}

func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	o, err := client.ParseLogOptions(r.URL.Query())
	if err != nil {
		writeErr(w, err)
		return
	}
	c, err := a.container(r.Context(), r.PathValue("uid"), memberParam(r), o.Previous)
	if err != nil {
		writeErr(w, err)
		return
	}
	a.streamLogs(w, r, c, o, nil)
}

// serveAttach streams the container's output from now on until it exits,
// then its exit status.
func (a *Agent) serveAttach(w http.ResponseWriter, r *http.Request) {
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	o := client.LogOptions{Follow: true, Tail: 1, Since: time.Now()}
	a.streamLogs(w, r, c, o, func(fw *client.FrameWriter) {
		st, err := a.cfg.Runtime.State(r.Context(), c.ID)
		es := client.ExitStatus{Code: st.ExitCode}
		if err != nil {
			es.Error = err.Error()
		}
		b, _ := json.Marshal(es)
		_ = fw.WriteFrame(client.StreamStatus, b)
	})
}

func (a *Agent) streamLogs(w http.ResponseWriter, r *http.Request, c runtime.Status, o client.LogOptions, end func(*client.FrameWriter)) {
	w.Header().Set("Content-Type", "application/vnd.berth.frames")
	w.WriteHeader(http.StatusOK)
	fw := client.NewFrameWriter(w, flusher(w))
	defer fw.Close()
	stdout, stderr := fw.Stream(client.StreamStdout), fw.Stream(client.StreamStderr)
	ro := runtime.LogOptions{Follow: o.Follow, Tail: o.Tail, Timestamps: o.Timestamps}
	if !o.Since.IsZero() {
		// The runtime tails first; the lines since a time are a suffix of
		// all lines, so filtering its tail gives the tail of those lines.
		ro.Timestamps = true
		stdout = &sinceWriter{w: stdout, since: o.Since, strip: !o.Timestamps}
		stderr = &sinceWriter{w: stderr, since: o.Since, strip: !o.Timestamps}
	}
	err := a.cfg.Runtime.Logs(r.Context(), c.ID, ro, stdout, stderr)
	if err != nil && r.Context().Err() == nil {
		b, _ := json.Marshal(client.ExitStatus{Code: -1, Error: fmt.Sprintf("logs of container %s: %v", c.ID, err)})
		_ = fw.WriteFrame(client.StreamStatus, b)
		return
	}
	if end != nil && r.Context().Err() == nil {
		end(fw)
	}
}

// sinceWriter passes on the lines ("TIME CONTENT\n", as the runtime
// writes them with timestamps) written at or after since, without their
// time when strip.
type sinceWriter struct {
	w     io.Writer
	since time.Time
	strip bool
	buf   []byte
}

func (s *sinceWriter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	var out []byte
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		line := s.buf[:i+1]
		ts, rest, _ := bytes.Cut(line, []byte{' '})
		t, err := time.Parse(time.RFC3339Nano, string(ts))
		if err != nil || !t.Before(s.since) {
			if s.strip && err == nil {
				line = rest
			}
			out = append(out, line...)
		}
		s.buf = s.buf[i+1:]
	}
	if len(out) > 0 {
		if _, err := s.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
