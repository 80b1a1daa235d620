package agent

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime"
)

// Checkpointer is the optional capability of a Runtime that can dump a
// running container with CRIU; a runtime without it refuses checkpoints.
type Checkpointer interface {
	Checkpoint(ctx context.Context, id string, opts runtime.CheckpointOptions) error
}

var _ Checkpointer = (*runtime.Runtime)(nil)

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
	cp, ok := a.cfg.Runtime.(Checkpointer)
	if !ok {
		writeErr(w, fmt.Errorf("instance %s: %w: this node's runtime cannot checkpoint", r.PathValue("uid"), errdefs.ErrFailedPrecondition))
		return
	}
	if err := cp.Checkpoint(r.Context(), c.ID, runtime.CheckpointOptions{ImageDir: dir, LeaveRunning: true}); err != nil {
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
