package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/berth-dev/berth/api"
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
	upper := ""
	if mg, ok := cp.(Migrator); ok {
		// Its writable layer as it is now: the files its processes have open.
		upper, _ = mg.UpperDir(c.ID)
	}
	if err := runtime.ExportCheckpoint(dir, upper, sw); err != nil {
		if sw.started {
			// Half an archive has gone out: cut the stream so the client sees it fail.
			panic(http.ErrAbortHandler)
		}
		writeErr(w, fmt.Errorf("instance %s: checkpoint: %w", r.PathValue("uid"), err))
	}
}

// serveRestore puts the instance's running container back to a
// checkpoint of it (what serveCheckpoint sent, in the body): the
// container is stopped and restored from the images, in its network
// namespace, with the same id. The checkpoint must be of the container
// the instance runs now.
func (a *Agent) serveRestore(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	mg, c, ok := a.checkpointTarget(w, r)
	if !ok {
		return
	}
	// Held like a migration's source: the stop must not look like a crash.
	h := &hold{kind: holdOut, container: c.ID, dumped: make(chan struct{})}
	if !a.setHold(uid, h, false) {
		writeErr(w, fmt.Errorf("instance %s: %w: it is moving", uid, errdefs.ErrConflict))
		return
	}
	defer a.liftHold(uid, h)
	defer a.markDirty(c.ID)
	dir, err := os.MkdirTemp("", "berth-restore-")
	if err != nil {
		writeErr(w, err)
		return
	}
	defer os.RemoveAll(dir)
	id, _, err := runtime.ImportCheckpoint(r.Body, dir)
	if err != nil {
		writeErr(w, fmt.Errorf("instance %s: %w: %w", uid, errdefs.ErrInvalidArgument, err))
		return
	}
	if id != c.ID {
		writeErr(w, fmt.Errorf("instance %s: %w: the checkpoint holds container %q, the instance runs %q (restarted since?)", uid, errdefs.ErrFailedPrecondition, id, c.ID))
		return
	}
	ctx := context.WithoutCancel(r.Context())
	if _, err := a.cfg.Runtime.Stop(ctx, c.ID, 0); err != nil {
		writeErr(w, fmt.Errorf("instance %s: stop before the restore: %w", uid, err))
		return
	}
	st, err := mg.Restore(ctx, c.ID, dir)
	if err != nil {
		// The hold lifted, the reconciler starts the instance afresh.
		writeErr(w, checkpointErr(uid, err))
		return
	}
	a.log.Info("restored from a checkpoint", "instance", uid, "container", st.ID)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(api.MigrationRestored{ContainerID: st.ID, Pid: st.Pid, IP: st.Labels[labelIP], StartedAt: st.StartedAt, RestoredAt: time.Now().UTC()})
}
