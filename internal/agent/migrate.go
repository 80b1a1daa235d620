package agent

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime"
)

// Live migration, the agent's side. The API server drives it over the
// nodes' tunnels (internal/apiserver/migrate.go):
//
//	POST /v1/instances/{uid}/migrate/prepare target: make ready what a restore needs (image,
//	                                         address) while the source still runs; the
//	                                         instance in Berth-Instance; with ?from=NODE it
//	                                         may answer an api.MigrationDirect offer
//	                                         (migrate_direct.go)
//	POST /v1/instances/{uid}/migrate         source: pre-dump while running, then the final
//	                                         dump (the container stops); the body is the
//	                                         migration stream (runtime.WriteImages), the
//	                                         trailers Berth-Frozen-At when the final dump began
//	                                         and Berth-Dump-Took how long it took; with
//	                                         ?direct=ADDR&cert=&token= the stream goes to
//	                                         the target's offer instead, and the trailer
//	                                         Berth-Sent counts it
//	PUT  /v1/instances/{uid}/migrate         target: restore the stream in the body, the
//	                                         instance (api.Instance, JSON) in the header
//	                                         Berth-Instance, base64; answers api.MigrationRestored;
//	                                         with ?direct=1 the stream is the one offered
//	POST /v1/instances/{uid}/migrate/commit  source: the instance runs on the target now
//	POST /v1/instances/{uid}/migrate/abort   source: restore it here from the final dump;
//	                                         target: remove what was restored
//
// While an instance moves, a hold keeps this node's reconciler off it:
// the source must not restart the container the dump stopped, nor the
// target stop the restored one as an orphan before the control plane
// assigns it there. The instance is never running twice: the source
// restores only on abort, or when no word came within verdictTimeout and
// the control plane still assigns the instance here; the target's
// restored container goes when its assignment does not come within
// adoptTimeout, which is shorter.

// Migrator is the optional capability of a Runtime that can move a
// container: dump it, restore it here from its own dump, or restore it
// from another node's dump with this node's config.
type Migrator interface {
	Checkpointer
	Restore(ctx context.Context, id, imageDir string) (runtime.Status, error)
	RestoreAs(ctx context.Context, c runtime.Config, imageDir string) (runtime.Status, error)
	// UpperDir is the container's writable layer, which moves with it.
	UpperDir(id string) (string, error)
}

var _ Migrator = (*runtime.Runtime)(nil)

// The headers of the migration routes (api.HeaderMigrationInstance,
// api.HeaderMigrationFrozenAt).
const (
	HeaderInstance = api.HeaderMigrationInstance
	HeaderFrozenAt = api.HeaderMigrationFrozenAt
	HeaderDumpTook = api.HeaderMigrationDumpTook
)

var (
	// verdictTimeout is how long a source waits for commit or abort
	// after sending the final dump.
	verdictTimeout = time.Minute
	// adoptTimeout is how long a target keeps a restored container that
	// the control plane has not assigned to it.
	adoptTimeout = 20 * time.Second
	// movedTimeout is how long a source keeps a moved instance off its
	// reconciler while the assignment watch catches up.
	movedTimeout = time.Minute
)

type holdKind int

const (
	// holdOut: being dumped and sent away; its containers are left as
	// they are.
	holdOut holdKind = iota + 1
	// holdIn: restored here, not assigned here yet: not an orphan.
	holdIn
	// holdMoved: gone to another node; its containers here are removed
	// even while the assignment watch still names this node.
	holdMoved
)

// hold is one instance kept from the reconciler.
type hold struct {
	kind      holdKind
	container string
	until     time.Time // zero: until lifted
	// For holdOut: the dump, and its outcome, decided once. dumped is
	// closed once the final dump has ended (dumpErr says how); cancelled
	// (a.mu) is an abort that came before it began.
	dir       string
	dumping   bool
	cancelled bool
	dumped    chan struct{}
	dumpErr   error
	// For holdIn: what the target prepared before the source froze the
	// container, until the restore takes it (or it is let go).
	prep     *prepared
	reserved string // the container whose address prep holds
	// direct: the target's listener for the source's stream, when it
	// offered one as it prepared.
	direct *directIn
	// Post-copy (migrate_lazy.go). lazy: the source's dump serving the
	// memory; pages: the target's end of the socket its lazy-pages
	// daemon reads the memory from, sent once the restore waits for it.
	lazy   *runtime.LazyDump
	ps     *pageServer
	pages  chan net.Conn
	once   sync.Once
	err    error
	commit bool
}

// setHold holds uid; unless replace, it fails when uid is held already.
func (a *Agent) setHold(uid string, h *hold, replace bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.holds[uid]; ok && !replace {
		return false
	}
	if a.holds == nil {
		a.holds = map[string]*hold{}
	}
	a.holds[uid] = h
	return true
}

func (a *Agent) liftHold(uid string, h *hold) {
	a.mu.Lock()
	if a.holds[uid] == h {
		delete(a.holds, uid)
	}
	a.mu.Unlock()
	a.poke()
}

func (a *Agent) holdOf(uid string) *hold {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holds[uid]
}

// frozen reports whether the reconciler must leave uid's containers
// alone (a.mu held).
func (a *Agent) frozenLocked(uid string) bool {
	h := a.holds[uid]
	return h != nil && (h.kind == holdOut || h.kind == holdIn)
}

// settleHolds runs at the start of a sync pass (a.mu held): a restored
// instance now assigned here is the reconciler's again, and holds past
// their time are lifted (a restored container never assigned here then
// goes as an orphan).
func (a *Agent) settleHoldsLocked(now time.Time) {
	for uid, h := range a.holds {
		_, assigned := a.desired[uid]
		switch {
		case h.kind == holdIn && assigned:
			delete(a.holds, uid)
		case !h.until.IsZero() && now.After(h.until):
			if h.kind == holdIn && h.prep != nil {
				a.log.Warn("prepared for a migration that never came; letting it go", "uid", uid)
				go a.undo(context.Background(), h.prep)
				h.prep = nil
			} else if h.kind == holdIn {
				a.log.Warn("restored instance never assigned here; removing it", "uid", uid, "container", h.container)
			}
			delete(a.holds, uid)
		}
	}
}

// markDirty has the loop read container id again on its next pass.
func (a *Agent) markDirty(id string) {
	a.mu.Lock()
	if a.touched == nil {
		a.touched = map[string]bool{}
	}
	a.touched[id] = true
	a.mu.Unlock()
	a.poke()
}

func (a *Agent) migrationDir(dir, uid string) string {
	return filepath.Join(a.cfg.Runtime.Root(), ".migrations", dir+"-"+uid)
}

// sweepMigrations removes the work directories of migrations that the
// agent's last run left (killed mid-dump or mid-restore): no migration is
// under way before the node registers. A restore cut short can leave a
// mount inside, which RemoveTree takes off rather than reaching through.
func (a *Agent) sweepMigrations() {
	if _, ok := a.cfg.Runtime.(Migrator); !ok {
		return
	}
	dir := filepath.Join(a.cfg.Runtime.Root(), ".migrations")
	if err := runtime.RemoveTree(dir); err != nil {
		a.log.Warn("stale migration directories left", "dir", dir, "err", err)
	}
}

func (a *Agent) migrator(uid string) (Migrator, error) {
	mg, ok := a.cfg.Runtime.(Migrator)
	if !ok {
		return nil, fmt.Errorf("instance %s: %w: the runtime of node %q cannot checkpoint", uid, errdefs.ErrFailedPrecondition, a.cfg.Node.Name)
	}
	return mg, nil
}

func checkpointErr(uid string, err error) error {
	if errors.Is(err, runtime.ErrCannotCheckpoint) {
		err = fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	return fmt.Errorf("instance %s: %w", uid, err)
}

// serveMigrateOut dumps the instance's container for a move and streams
// the images: a pre-dump while it runs, then the final dump.
//
// Long because the source's dumps and the stream they go out on are one
// sequence whose every failure must leave the container running here.
func (a *Agent) serveMigrateOut(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	mg, c, ok := a.checkpointTarget(w, r)
	if !ok {
		return
	}
	h := &hold{kind: holdOut, container: c.ID, dir: a.migrationDir("out", uid), dumped: make(chan struct{})}
	if !a.setHold(uid, h, false) {
		writeErr(w, fmt.Errorf("instance %s: %w: it is moving already", uid, errdefs.ErrConflict))
		return
	}
	fail := func(err error) {
		_ = runtime.RemoveTree(h.dir)
		a.liftHold(uid, h)
		writeErr(w, checkpointErr(uid, err))
	}
	// Once the stream has begun, a failure can only cut it: the target
	// sees it fail.
	abort := func() {
		_ = runtime.RemoveTree(h.dir)
		a.liftHold(uid, h)
		panic(http.ErrAbortHandler)
	}
	if err := runtime.RemoveTree(h.dir); err != nil {
		fail(err)
		return
	}
	pre, final := filepath.Join(h.dir, runtime.MigrationPre), filepath.Join(h.dir, runtime.MigrationFinal)
	w.Header().Set("Trailer", HeaderFrozenAt+", "+HeaderDumpTook+", "+api.HeaderMigrationSent)
	sw := &startedWriter{w: w}
	var out io.Writer = sw
	var direct *directOut
	if q := r.URL.Query(); q.Get("direct") != "" {
		// Dialled before anything stops: where the target cannot be
		// reached, the server relays the stream instead.
		var err error
		if direct, err = a.dialDirectOut(r.Context(), q); err != nil {
			fail(err)
			return
		}
		defer direct.close()
		// The server's side gone (it gave up on this move), the stream
		// stops: its writes would otherwise wait on a dead target.
		defer context.AfterFunc(r.Context(), direct.close)()
		out = direct.w
		w.Header().Set(api.HeaderMigrationDirect, "1")
		_, _ = sw.Write(nil) // the answer begins: the stream is under way
		http.NewResponseController(w).Flush()
	}
	tw := tar.NewWriter(out)
	// A dump cut short by a client gone could leave the container frozen:
	// dumps run to their end.
	ctx := context.WithoutCancel(r.Context())
	parent := ""
	opts := runtime.CheckpointOptions{ImageDir: final}
	if r.URL.Query().Get("lazy") == "1" {
		// Post-copy: the memory goes after the restore, so no pre-dump.
		ld, err := runtime.NewLazyDump()
		if err != nil {
			fail(err)
			return
		}
		opts.Lazy = ld
		a.mu.Lock()
		h.lazy = ld
		a.mu.Unlock()
	}
	if opts.Lazy == nil {
		switch err := mg.Checkpoint(ctx, c.ID, runtime.CheckpointOptions{ImageDir: pre, PreDump: true}); {
		case err == nil:
			parent = pre
			if _, err := runtime.WriteImages(tw, pre, runtime.MigrationPre); err != nil {
				abort()
			}
			if direct != nil {
				if err := direct.w.Flush(); err != nil {
					abort()
				}
			}
			http.NewResponseController(w).Flush()
		case errors.Is(err, runtime.ErrNoDirtyTracking):
		default:
			fail(err)
			return
		}
	}
	a.mu.Lock()
	cancelled := h.cancelled
	h.dumping = !cancelled
	a.mu.Unlock()
	if cancelled {
		abort()
	}
	// From the freeze, the stream is the downtime.
	defer runtime.Urgent()()
	frozen := time.Now()
	opts.ParentDir = parent
	var dumpTook time.Duration
	go func() {
		h.dumpErr = mg.Checkpoint(ctx, c.ID, opts)
		dumpTook = time.Since(frozen)
		close(h.dumped)
	}()
	ds := runtime.NewDumpStream(final, runtime.MigrationFinal)
	defer ds.Close()
	var sendErr error
	if opts.Lazy == nil {
		// The memory goes while CRIU still writes it.
		sendErr = streamDump(ds, tw, h.dumped)
	}
	<-h.dumped
	if err := h.dumpErr; err != nil {
		// CRIU lets the processes run on when a dump fails.
		if sw.started {
			a.log.Warn("migration dump failed", "instance", uid, "err", err)
			abort()
		}
		fail(err)
		return
	}
	// From here the instance runs nowhere until it is restored: on the
	// target at commit, here on abort or when the server falls silent.
	a.log.Info("migration: dumped", "instance", uid, "container", c.ID, "dump", dumpTook, "criu", runtime.CRIUTook(final, "dump.log"))
	a.settleWithoutVerdict(uid, h)
	err := sendErr
	if err == nil {
		_, err = ds.Finish(tw)
	}
	if err == nil {
		// The files the processes had open come back with them.
		var upper string
		if upper, err = mg.UpperDir(c.ID); err == nil && upper != "" {
			_, err = runtime.WriteUpper(tw, upper)
		}
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil && direct != nil {
		err = direct.finish()
	}
	if err == nil {
		a.log.Info("migration: sent", "instance", uid, "after the dump", time.Since(frozen)-dumpTook)
	}
	if err != nil {
		a.log.Warn("migration stream cut; restoring here", "instance", uid, "err", err)
		if err := a.finishOut(uid, h, false); err != nil {
			a.log.Error("migration: restore after a cut stream", "instance", uid, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	w.Header().Set(HeaderFrozenAt, frozen.UTC().Format(time.RFC3339Nano))
	w.Header().Set(HeaderDumpTook, dumpTook.String())
	if direct != nil {
		w.Header().Set(api.HeaderMigrationSent, strconv.FormatInt(direct.sent(), 10))
	}
}

// dumpPoll is how often a dump's growing memory images are looked at.
const dumpPoll = 2 * time.Millisecond

// streamDump sends what ds's images gain until dumped closes; an error is
// the stream cut.
func streamDump(ds *runtime.DumpStream, tw *tar.Writer, dumped <-chan struct{}) error {
	tick := time.NewTicker(dumpPoll)
	defer tick.Stop()
	for {
		select {
		case <-dumped:
			return nil
		case <-tick.C:
			if _, err := ds.SendGrown(tw); err != nil {
				return err
			}
		}
	}
}

// settleWithoutVerdict settles a dumped source's move by itself when no
// verdict has come within verdictTimeout: the instance assigned here
// still is restored here, one assigned away is committed.
func (a *Agent) settleWithoutVerdict(uid string, h *hold) {
	time.AfterFunc(verdictTimeout, func() {
		a.mu.Lock()
		_, here := a.desired[uid]
		a.mu.Unlock()
		if err := a.finishOut(uid, h, !here); err != nil {
			a.log.Warn("migration without a verdict", "instance", uid, "restored here", here, "err", err)
		}
	})
}

// checkpointTarget is the running container request r names and the
// migrator of this node's runtime; on failure it writes the error to w.
func (a *Agent) checkpointTarget(w http.ResponseWriter, r *http.Request) (Migrator, runtime.Status, bool) {
	mg, err := a.migrator(r.PathValue("uid"))
	if err == nil {
		var c runtime.Status
		if c, err = a.running(r); err == nil {
			return mg, c, true
		}
	}
	writeErr(w, err)
	return nil, runtime.Status{}, false
}

// finishOut settles a source's move once: commit forgets the dump and
// leaves the stopped container to be removed; otherwise the container is
// restored here from the dump.
func (a *Agent) finishOut(uid string, h *hold, commit bool) error {
	if !commit {
		a.mu.Lock()
		early := !h.dumping
		h.cancelled = h.cancelled || early
		a.mu.Unlock()
		if early {
			return nil // the dump will not begin: the container runs on
		}
		if <-h.dumped; h.dumpErr != nil {
			return nil // the dump failed: the container ran on
		}
	}
	h.once.Do(func() {
		h.commit = commit
		if h.lazy != nil {
			h.err = a.settleLazy(uid, h, commit)
			return
		}
		defer func() { _ = runtime.RemoveTree(h.dir) }()
		if commit {
			a.log.Info("migration: committed", "instance", uid, "container", h.container)
			a.setHold(uid, &hold{kind: holdMoved, container: h.container, until: time.Now().Add(movedTimeout)}, true)
			a.markDirty(h.container)
			return
		}
		defer a.liftHold(uid, h)
		defer a.markDirty(h.container)
		mg, err := a.migrator(uid)
		if err != nil {
			h.err = err
			return
		}
		t0 := time.Now()
		if _, err := mg.Restore(context.Background(), h.container, filepath.Join(h.dir, runtime.MigrationFinal)); err != nil {
			// The reconciler starts it afresh once the hold is lifted.
			h.err = fmt.Errorf("instance %s: restore on node %q after an aborted migration: %w", uid, a.cfg.Node.Name, err)
			return
		}
		a.log.Info("migration: aborted, restored here", "instance", uid, "container", h.container, "restore", time.Since(t0))
	})
	if h.commit != commit {
		return fmt.Errorf("instance %s: %w: the migration was settled the other way already", uid, errdefs.ErrConflict)
	}
	return h.err
}

// serveMigratePrepare readies this node, the target, for a migrating
// instance while it still runs on its source: its image (pulled if need
// be) and address, which would otherwise be had while it runs nowhere.
func (a *Agent) serveMigratePrepare(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	inst, attempt, err := a.incoming(r, uid)
	if err != nil {
		writeErr(w, err)
		return
	}
	if old := a.holdOf(uid); old != nil && old.kind == holdMoved {
		// Coming back to a node it left lately: what it left goes first.
		if err := a.dropRestored(r.Context(), uid, old); err != nil {
			writeErr(w, err)
			return
		}
	}
	h := &hold{kind: holdIn, pages: make(chan net.Conn, 1)}
	if !a.setHold(uid, h, false) {
		writeErr(w, fmt.Errorf("instance %s: %w: it is moving already", uid, errdefs.ErrConflict))
		return
	}
	p, err := a.prepareIn(context.WithoutCancel(r.Context()), inst, attempt)
	if err != nil {
		a.liftHold(uid, h)
		writeErr(w, err)
		return
	}
	var direct *directIn
	if from := r.URL.Query().Get("from"); from != "" && a.cfg.PeerTLS != nil && a.cfg.Node.Address != "" {
		// The source may send the images here itself.
		if direct, err = listenDirect(a.cfg.Node.Address, from, a.cfg.PeerTLS); err != nil {
			a.log.Warn("migration: no direct stream; the server relays it", "instance", inst.Key(), "err", err)
		}
	}
	a.mu.Lock()
	h.prep, h.reserved, h.direct = p, p.c.ID, direct
	// Let go of it if the stream never comes (settleHoldsLocked).
	h.until = time.Now().Add(adoptTimeout)
	a.mu.Unlock()
	a.log.Info("migration: prepared", "instance", inst.Key(), "container", p.c.ID, "ip", p.c.Labels[labelIP], "took", time.Since(p.t0),
		"direct", direct != nil)
	if direct == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(direct.offer)
}

// prepareIn prepares the instance's container for a restore: all of a
// start but the run, its network namespace wired too.
func (a *Agent) prepareIn(ctx context.Context, inst *Instance, attempt int) (*prepared, error) {
	// Held already: no removal of this container begins now, but one
	// begun before (of the container this instance left here, its id
	// the same) would take down what is prepared.
	if err := a.waitRemoval(ctx, containerID(inst, attempt)); err != nil {
		return nil, checkpointErr(inst.UID, err)
	}
	p, err := a.prepare(ctx, inst, "", attempt)
	if err != nil {
		return nil, checkpointErr(inst.UID, err)
	}
	// A start wires its network while the runtime readies the container;
	// a restore's would be inside the downtime: it is wired now, while
	// the source still runs.
	if wire := p.c.Before; wire != nil {
		t0 := time.Now()
		if err := wire(); err != nil {
			a.undo(ctx, p)
			return nil, checkpointErr(inst.UID, err)
		}
		*p.tWire, p.c.Before = time.Since(t0), nil
	}
	return p, nil
}

// waitRemoval waits for the reconciler's removal of container id to end,
// if one is under way.
func (a *Agent) waitRemoval(ctx context.Context, id string) error {
	a.mu.Lock()
	done := a.removing[id]
	a.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serveMigrateIn restores a migrating instance from the stream in the
// body, with what serveMigratePrepare made ready (or, when it was not
// called, preparing it while the stream comes).
func (a *Agent) serveMigrateIn(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	inst, attempt, err := a.incoming(r, uid)
	if err != nil {
		writeErr(w, err)
		return
	}
	a.mu.Lock()
	h := a.holds[uid]
	var p *prepared
	var direct *directIn
	if h != nil && h.kind == holdIn && h.prep != nil && h.container == "" {
		p, h.prep, h.until = h.prep, nil, time.Time{} // this restore's now
		direct, h.direct = h.direct, nil
	} else {
		h = nil
	}
	a.mu.Unlock()
	body := io.Reader(r.Body)
	switch {
	case r.URL.Query().Get("direct") == "1" && direct == nil:
		if p != nil {
			a.undo(r.Context(), p)
		}
		if h != nil {
			a.liftHold(uid, h)
		}
		writeErr(w, fmt.Errorf("instance %s: %w: no direct stream was offered for it", uid, errdefs.ErrFailedPrecondition))
		return
	case r.URL.Query().Get("direct") == "1":
		c, err := direct.take(r.Context())
		if err != nil {
			a.undo(r.Context(), p)
			a.liftHold(uid, h)
			writeErr(w, fmt.Errorf("instance %s: %w", uid, err))
			return
		}
		defer c.Close()
		// The server's side gone, the stream stops.
		defer context.AfterFunc(r.Context(), func() { c.Close() })()
		body = c
	case direct != nil:
		direct.close() // relayed after all
	}
	if h == nil {
		if old := a.holdOf(uid); old != nil && old.kind == holdMoved {
			if err := a.dropRestored(r.Context(), uid, old); err != nil {
				writeErr(w, err)
				return
			}
		}
		h = &hold{kind: holdIn, pages: make(chan net.Conn, 1)}
		if !a.setHold(uid, h, false) {
			writeErr(w, fmt.Errorf("instance %s: %w: it is moving already", uid, errdefs.ErrConflict))
			return
		}
	}
	dir := a.migrationDir("in", uid)
	lazy := r.URL.Query().Get("lazy") == "1"
	if !lazy {
		defer func() { _ = runtime.RemoveTree(dir) }()
	}
	res, err := a.restoreIn(r.Context(), inst, attempt, p, body, dir, lazyIn(lazy, h))
	if err != nil {
		if lazy {
			_ = runtime.RemoveTree(dir)
		}
		a.liftHold(uid, h)
		writeErr(w, err)
		return
	}
	a.mu.Lock()
	h.container = res.ContainerID
	h.until = time.Now().Add(adoptTimeout)
	a.mu.Unlock()
	a.markDirty(res.ContainerID)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// incoming is the instance migrating to this node and its attempt, from
// the request, once this node's runtime is known to restore checkpoints.
func (a *Agent) incoming(r *http.Request, uid string) (*Instance, int, error) {
	if _, err := a.migrator(uid); err != nil {
		return nil, 0, err
	}
	return instanceHeader(r, uid)
}

// instanceHeader is the migrating instance, and the attempt its
// container is, from the request's HeaderInstance.
func instanceHeader(r *http.Request, uid string) (*Instance, int, error) {
	b, err := base64.StdEncoding.DecodeString(r.Header.Get(HeaderInstance))
	var in api.Instance
	if err == nil {
		err = json.Unmarshal(b, &in)
	}
	if err != nil || in.Metadata.UID != uid {
		return nil, 0, fmt.Errorf("instance %s: %w: header %s must hold the instance", uid, errdefs.ErrInvalidArgument, HeaderInstance)
	}
	return InstanceFromAPI(&in), in.Status.Restarts, nil
}

// restoreIn unpacks the migration stream body into dir and restores the
// instance's container from it, with this node's image layers, address
// and mounts: those of p, or prepared while the stream comes.
//
// With lazy set (post-copy), the stream holds no memory: the restore takes
// it from a lazy-pages daemon which lazy starts (lazyIn).
func (a *Agent) restoreIn(ctx context.Context, inst *Instance, attempt int, p *prepared, body io.Reader, dir string,
	lazy func(ctx context.Context, final, dir string) (*runtime.LazyPages, error)) (api.MigrationRestored, error) {
	if err := runtime.RemoveTree(dir); err != nil {
		if p != nil {
			a.undo(ctx, p)
		}
		return api.MigrationRestored{}, err
	}
	ready := make(chan error, 1)
	if p != nil {
		ready <- nil
	} else {
		go func() {
			var err error
			p, err = a.prepareIn(ctx, inst, attempt)
			ready <- err
		}()
	}
	fb := &firstByte{r: body}
	// The source freezes the container as it begins to send.
	normal := runtime.Urgent()
	final, err := runtime.ReadMigration(fb, dir)
	normal()
	received := time.Now()
	if perr := <-ready; perr != nil || err != nil {
		if perr != nil {
			return api.MigrationRestored{}, perr
		}
		a.undo(ctx, p)
		return api.MigrationRestored{}, fmt.Errorf("instance %s: %w: %w", inst.UID, errdefs.ErrUnavailable, err)
	}
	id := containerID(inst, attempt)
	c, err := runtime.CheckpointConfig(final)
	if err != nil {
		a.undo(ctx, p)
		return api.MigrationRestored{}, fmt.Errorf("instance %s: %w: %w", inst.UID, errdefs.ErrInvalidArgument, err)
	}
	if n, _ := strconv.Atoi(c.Labels[labelAttempt]); c.Labels[labelUID] != inst.UID || n != attempt || c.ID != id {
		a.undo(ctx, p)
		return api.MigrationRestored{}, fmt.Errorf("instance %s: %w: the images hold container %q of another instance", inst.UID, errdefs.ErrInvalidArgument, c.ID)
	}
	if c.Executor != inst.Executor {
		a.undo(ctx, p)
		return api.MigrationRestored{}, fmt.Errorf("instance %s: %w: the images were dumped by %q, the instance runs with %q", inst.UID, errdefs.ErrInvalidArgument, c.Executor, inst.Executor)
	}
	var lp *runtime.LazyPages
	if lazy != nil {
		if lp, err = lazy(ctx, final, dir); err != nil {
			a.undo(ctx, p)
			return api.MigrationRestored{}, checkpointErr(inst.UID, err)
		}
	}
	st, err := a.launch(ctx, p, final)
	if err != nil {
		if lp != nil {
			lp.Stop()
		}
		return api.MigrationRestored{}, checkpointErr(inst.UID, err)
	}
	if lp != nil {
		go a.watchLazyPages(inst, st.ID, lp, dir)
	}
	restored := time.Now()
	a.log.Info("migration: restored", "instance", inst.Key(), "container", st.ID, "ip", st.Labels[labelIP], "restore", restored.Sub(received),
		"stream", received.Sub(fb.at), "criu", runtime.CRIUTook(final, "restore.log"))
	return api.MigrationRestored{ContainerID: st.ID, Pid: st.Pid, IP: st.Labels[labelIP], StartedAt: st.StartedAt,
		ReceivedAt: received.UTC(), RestoredAt: restored.UTC()}, nil
}

// serveMigrateCommit tells a source its instance runs on the target now.
func (a *Agent) serveMigrateCommit(w http.ResponseWriter, r *http.Request) {
	a.settle(w, r, true)
}

// serveMigrateAbort undoes a move on either side: the source restores the
// instance from its dump, the target removes what it restored.
func (a *Agent) serveMigrateAbort(w http.ResponseWriter, r *http.Request) {
	a.settle(w, r, false)
}

func (a *Agent) settle(w http.ResponseWriter, r *http.Request, commit bool) {
	uid := r.PathValue("uid")
	h := a.holdOf(uid)
	var err error
	switch {
	case h == nil || h.kind == holdMoved:
		err = fmt.Errorf("instance %s: %w: no migration of it under way on node %q", uid, errdefs.ErrNotFound, a.cfg.Node.Name)
	case h.kind == holdOut:
		err = a.finishOut(uid, h, commit)
	case commit:
		err = fmt.Errorf("instance %s: %w: a target is committed by assigning it the instance", uid, errdefs.ErrInvalidArgument)
	default:
		err = a.dropRestored(r.Context(), uid, h)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// dropRestored removes a container restored for a move that did not
// happen, or left behind by one that did (holdMoved), and lifts h.
func (a *Agent) dropRestored(ctx context.Context, uid string, h *hold) error {
	defer a.liftHold(uid, h)
	if h.container == "" {
		a.mu.Lock()
		p := h.prep
		h.prep = nil
		if h.direct != nil {
			h.direct.close()
			h.direct = nil
		}
		a.mu.Unlock()
		if p != nil {
			a.undo(ctx, p) // prepared, never restored
		}
		return nil // else still restoring: its failure lifts the hold
	}
	defer a.markDirty(h.container)
	if err := a.cfg.Runtime.Delete(ctx, h.container, true); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("instance %s: remove the restored container %s: %w", uid, h.container, err)
	}
	if err := a.cfg.Images.Release(ctx, h.container); err != nil {
		a.log.Warn("release image", "container", h.container, "err", err)
	}
	a.detach(ctx, h.container)
	a.log.Info("migration: aborted, restored container removed", "instance", uid, "container", h.container)
	return nil
}

// firstByte notes when the first byte was read through it.
type firstByte struct {
	r  io.Reader
	at time.Time
}

func (f *firstByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && f.at.IsZero() {
		f.at = time.Now()
	}
	return n, err
}
