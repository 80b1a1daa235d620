package agent

import (
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime"
)

// serveCheckpoint dumps the instance's running container with CRIU, leaving
// it running, and sends the images as a gzipped tar (runtime.ExportCheckpoint).
func (a *Agent) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	dir, err := os.MkdirTemp("", "berth-checkpoint-")
	if err != nil {
		writeErr(w, err)
		return
	}
	defer os.RemoveAll(dir)
	if err := a.cfg.Runtime.Checkpoint(r.Context(), c.ID, runtime.CheckpointOptions{ImageDir: dir, LeaveRunning: true}); err != nil {
		if errors.Is(err, runtime.ErrCannotCheckpoint) {
			err = fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
		}
		writeErr(w, fmt.Errorf("instance %s: %w", r.PathValue("uid"), err))
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	sw := &startedWriter{w: w}
	if err := runtime.ExportCheckpoint(dir, sw); err != nil {
		if sw.started {
			// Half an archive has gone out: cut the stream so the client sees it fail.
			panic(http.ErrAbortHandler)
		}
		writeErr(w, fmt.Errorf("instance %s: checkpoint: %w", r.PathValue("uid"), err))
	}
}
