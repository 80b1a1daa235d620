package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/runtime"
)

// Labels the agent puts on its containers to find their instance again.
const (
	labelInstance = "berth.instance"
	labelUID      = "berth.uid"
	labelAttempt  = "berth.attempt"
	// labelGrace keeps the stop grace period with the container: an
	// instance deleted from the control plane is no longer there to ask.
	labelGrace = "berth.stop-grace"
	// labelTemplate is the instance template the container was made from.
	labelTemplate = "berth.template"
)

// containerID names attempt n of an instance; it stays a valid runtime id
// (64 characters at most) however long the names are.
func containerID(inst *Instance, attempt int) string {
	uid := inst.UID
	if len(uid) > 8 {
		uid = uid[:8]
	}
	id := fmt.Sprintf("%s.%s.%s.%d", inst.Namespace, inst.Name, uid, attempt)
	if len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("%s.%s.%d", inst.Name[:min(len(inst.Name), 30)], hex.EncodeToString(sum[:8]), attempt)
}

// startParallelism bounds the containers one sync starts at once.
const startParallelism = 4

type startResult struct {
	st  runtime.Status
	err error
}

// startFailure remembers a start that failed, so the next try waits.
type startFailure struct {
	count int
	next  time.Time
	err   error
}

// transientStart reports whether a start failed for a cause that may
// pass by itself: the servers or a registry out of reach, a pull that
// timed out, a registry's server error. Either is retried; clients tell
// the user apart (berth run keeps a service whose start may yet work).
func transientStart(err error) bool {
	var ne net.Error
	var te *transport.Error
	switch {
	case errdefs.IsNotFound(err), errdefs.IsInvalidArgument(err):
		return false
	case errdefs.IsUnavailable(err), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout(),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return true
	case errors.As(err, &te):
		return te.StatusCode >= http.StatusInternalServerError || te.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// sync runs one reconcile pass and returns when a delayed restart is next due.
func (a *Agent) sync(ctx context.Context) time.Time {
	now := a.cfg.Clock()
	t0 := time.Now()
	// Before observing: a restored instance now assigned here must be
	// seen with its container.
	a.mu.Lock()
	a.settleHoldsLocked(now)
	a.mu.Unlock()
	if err := a.refresh(ctx); err != nil {
		a.log.Error("list containers", "err", err)
		return now.Add(time.Second)
	}
	observed, byID := a.observe()
	a.mu.Lock()
	desired := make([]reconcile.Desired, 0, len(a.desired))
	insts := make(map[string]*Instance, len(a.desired))
	for uid, inst := range a.desired {
		if a.holds[uid] != nil {
			continue // moving to or from this node: see migrate.go
		}
		desired = append(desired, reconcile.Desired{Key: inst.Key(), UID: uid, Restart: inst.Restart, Template: inst.Template,
			Members: desiredMembers(inst)})
		insts[uid] = inst
	}
	a.mu.Unlock()

	res := reconcile.Compute(desired, observed, now)
	retryAt := res.RetryAt
	changed := false
	var starts []reconcile.Action
	for _, act := range res.Actions {
		switch act.Kind {
		case reconcile.Start:
			if f, ok := a.failures[failureKey(act.UID, act.Name)]; ok {
				if insts[act.UID].Restart == reconcile.Never {
					continue // reported Failed: the controller decides what comes next
				}
				if now.Before(f.next) {
					retryAt = earliest(retryAt, f.next)
					continue
				}
			}
			starts = append(starts, act)
		case reconcile.Stop:
			a.stopAsync(ctx, act.ContainerID, byID[act.ContainerID], act.Reason)
		case reconcile.Remove:
			changed = a.remove(ctx, act.ContainerID) || changed
		}
	}
	started, next := a.startAll(ctx, starts, insts, now)
	changed = changed || started
	retryAt = earliest(retryAt, next)
	tActs := time.Now()
	if changed {
		_, byID = a.observe()
	}
	a.track(ctx, byID, insts)
	a.collectData()
	tRep := time.Now()
	a.report(ctx, insts, byID, now)
	if len(res.Actions) > 0 {
		a.log.Debug("sync", "actions", len(res.Actions), "containers", len(a.containers), "act", tActs.Sub(t0), "track", tRep.Sub(tActs), "report", time.Since(tRep))
	}
	return retryAt
}

// remove deletes a container the reconciler is done with and what it
// held (its image's use, its network, its prober); true once it is gone.
func (a *Agent) remove(ctx context.Context, id string) bool {
	if a.stopping[id] {
		return false
	}
	// An instance moving back here since the pass began has this
	// container's id, image use and address prepared anew for its
	// restore: they are the move's now.
	a.mu.Lock()
	moving := a.frozenLocked(a.containers[id].Labels[labelUID])
	done := make(chan struct{})
	if !moving {
		// A move back that begins from here on waits for this removal
		// (waitRemoval): it must not wire its network for a removal
		// already under way to take down.
		if a.removing == nil {
			a.removing = map[string]chan struct{}{}
		}
		a.removing[id] = done
	}
	a.mu.Unlock()
	if moving {
		return false
	}
	defer func() {
		a.mu.Lock()
		delete(a.removing, id)
		a.mu.Unlock()
		close(done)
	}()
	if err := a.cfg.Runtime.Delete(ctx, id, true); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		a.log.Warn("remove container", "container", id, "err", err)
		return false
	}
	if err := a.cfg.Images.Release(ctx, id); err != nil {
		a.log.Warn("release image", "container", id, "err", err)
	}
	if net := a.containers[id].Labels[labelNet]; net != "" {
		if a.releasePod(ctx, net, id) {
			delete(a.podsReleased, net)
		}
		a.releasePodVolumes(net, id)
	} else {
		a.detach(ctx, id)
	}
	a.stopProbe(id)
	delete(a.containers, id)
	delete(a.evicted, id)
	return true
}

// startAll starts containers a few at a time: a scale-up of thirty should
// not queue behind one container at a time. It says whether any started,
// and when the next retry of one that failed is due (zero: none).
func (a *Agent) startAll(ctx context.Context, starts []reconcile.Action, insts map[string]*Instance, now time.Time) (bool, time.Time) {
	results := make([]startResult, len(starts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, startParallelism)
	for i, act := range starts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i].st, results[i].err = a.start(ctx, insts[act.UID], act.Name, act.Attempt)
		})
	}
	wg.Wait()
	var started bool
	var retryAt time.Time
	for i, act := range starts {
		fk := failureKey(act.UID, act.Name)
		if err := results[i].err; err != nil {
			f := a.failures[fk]
			f.count++
			f.err = err
			f.next = now.Add(reconcile.Backoff(f.count, 0))
			a.failures[fk] = f
			retryAt = earliest(retryAt, f.next)
			a.log.Warn("start failed", "instance", act.Key, "attempt", act.Attempt, "err", err)
			continue
		}
		delete(a.failures, fk)
		a.containers[results[i].st.ID] = results[i].st
		started = true
	}
	return started, retryAt
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// refresh brings the container cache up to date: everything after a
// resync, else only the containers named dirty by exit and stop events.
func (a *Agent) refresh(ctx context.Context) error {
	a.mu.Lock()
	for id := range a.touched {
		a.dirty[id] = true
	}
	clear(a.touched)
	a.mu.Unlock()
	if a.full || a.containers == nil {
		list, err := a.listContainers(ctx)
		if err != nil {
			return err
		}
		a.containers = make(map[string]runtime.Status, len(list))
		for _, st := range list {
			if st.State == runtime.Unknown {
				a.reapLost(ctx, st)
			}
			a.containers[st.ID] = st
		}
		a.full = false
		clear(a.dirty)
		a.releaseStale(ctx)
		a.collectVolumes(ctx)
		a.collectPodVolumes()
		return nil
	}
	for id := range a.dirty {
		st, err := a.cfg.Runtime.State(ctx, id)
		switch {
		case errors.Is(err, runtime.ErrNotFound):
			delete(a.containers, id)
		case err != nil:
			return err
		default:
			if st.State == runtime.Unknown {
				a.reapLost(ctx, st)
			}
			a.containers[id] = st
		}
		delete(a.dirty, id)
	}
	return nil
}

// IDLister is the optional capability of a Runtime that names its
// containers without reading their state.
type IDLister interface {
	IDs() ([]string, error)
}

var _ IDLister = (*runtime.Runtime)(nil)

// listContainers is the full list of a resync. A running container whose
// exit watcher is still waiting has not changed since it was read (its
// exit would have woken the loop), so its cached state is kept and only
// the others are read again: on an idle node with hundreds of containers,
// re-reading every one's files each resync was a quarter of its CPU.
func (a *Agent) listContainers(ctx context.Context) ([]runtime.Status, error) {
	l, ok := a.cfg.Runtime.(IDLister)
	if !ok || a.containers == nil {
		return a.cfg.Runtime.List(ctx)
	}
	ids, err := l.IDs()
	if err != nil {
		return nil, err
	}
	out := make([]runtime.Status, 0, len(ids))
	for _, id := range ids {
		if st, ok := a.containers[id]; ok && st.State == runtime.Running && a.watched[id] && !a.dirty[id] {
			out = append(out, st)
			continue
		}
		st, err := a.cfg.Runtime.State(ctx, id)
		if err != nil {
			continue // being created or removed right now
		}
		out = append(out, st)
	}
	return out, nil
}

// observe turns the cached containers into the reconciler's view.
func (a *Agent) observe() ([]reconcile.Container, map[string]runtime.Status) {
	// Sized for every container at once: a node's pass runs after each
	// burst of its assignments, and growing both from empty on each pass
	// was most of what observing cost a hollow fleet.
	out := make([]reconcile.Container, 0, len(a.containers))
	byID := make(map[string]runtime.Status, len(a.containers))
	for _, st := range a.containers {
		uid := st.Labels[labelUID]
		if uid == "" {
			continue // not one of ours (a "berth container run" container)
		}
		a.mu.Lock()
		moving := a.frozenLocked(uid)
		a.mu.Unlock()
		if moving {
			continue
		}
		attempt, _ := strconv.Atoi(st.Labels[labelAttempt])
		byID[st.ID] = st
		c := reconcile.Container{
			ID: st.ID, Key: st.Labels[labelInstance], UID: uid, Attempt: attempt,
			Running: st.State == runtime.Running, ExitCode: st.ExitCode,
			StartedAt: st.StartedAt, FinishedAt: st.FinishedAt, Template: st.Labels[labelTemplate],
			Name: memberOf(st), Sidecar: st.Labels[labelSidecar] != "",
		}
		switch st.State {
		case runtime.Unknown:
			// The shim is gone: treat the container as killed.
			c.ExitCode, c.FinishedAt = 137, st.StartedAt
		case runtime.Created:
			// Starts are synchronous, so a Created one is left from a crash mid-start: it never ran.
			c.ExitCode, c.FinishedAt = 128, st.CreatedAt
		}
		if a.stopping[st.ID] {
			c.Running = true // a stop is under way; let it finish before deciding
		}
		a.mu.Lock()
		if p := a.probes[st.ID]; p != nil && c.Running {
			c.Unhealthy = !p.healthy()
		}
		a.mu.Unlock()
		out = append(out, c)
	}
	return out, byID
}

// start runs attempt attempt of the instance's container name ("" for
// the main one, else one of its Members).
func (a *Agent) start(ctx context.Context, inst *Instance, name string, attempt int) (runtime.Status, error) {
	p, err := a.prepare(ctx, inst, name, attempt)
	if err != nil {
		return runtime.Status{}, err
	}
	return a.launch(ctx, p, "")
}

// prepared is a container ready to run: its image prepared, its network
// attached, its config made. launch runs it, or undo lets it go.
type prepared struct {
	inst           *Instance
	name           string
	pod            bool
	c              runtime.Config
	t0             time.Time
	tPrep, tAttach time.Duration
	tWire          *time.Duration // set by the wiring, which the run does
}

// undo releases what prepare took (the image's layers, the address).
func (a *Agent) undo(ctx context.Context, p *prepared) {
	_ = a.cfg.Images.Release(context.WithoutCancel(ctx), p.c.ID)
	if !p.pod {
		a.detach(context.WithoutCancel(ctx), p.c.ID)
	}
}

// prepare does all of a start but the run itself: a migration's target
// does it before the source freezes the container.
//
// Long because a container's start is one ordered sequence (image, volumes,
// network, data files, config) whose every failure must undo the steps
// before it, in reverse.
func (a *Agent) prepare(ctx context.Context, inst *Instance, name string, attempt int) (*prepared, error) {
	m, ok := inst.member(name)
	if !ok {
		return nil, fmt.Errorf("instance %s: no container %q", inst.Key(), name)
	}
	// What runs: the main container's fields, or the member's.
	image, command, args, env, workDir, res := inst.Image, inst.Command, inst.Args, inst.Env, inst.WorkingDir, inst.Resources
	if m != nil {
		image, command, args, env, workDir, res = m.Image, m.Command, m.Args, m.Env, m.WorkingDir, m.Resources
	}
	if image == "" {
		return nil, errNoImage
	}
	id := memberID(inst, name, attempt)
	c := runtime.Config{
		ID: id, Image: image, Hostname: inst.Name,
		Resources: res, Executor: inst.Executor, UserNS: inst.UserNS,
		Labels: map[string]string{labelInstance: inst.Key(), labelUID: inst.UID, labelAttempt: strconv.Itoa(attempt),
			labelGrace: inst.StopGrace.String(), labelTemplate: inst.Template},
		StopGrace: inst.StopGrace,
	}
	if m != nil {
		c.Labels[labelMember] = name
		if m.Sidecar {
			c.Labels[labelSidecar] = "1"
		}
	}
	if m == nil {
		if err := a.checkHostPorts(inst); err != nil {
			return nil, fmt.Errorf("start %s: %w", id, err)
		}
	}
	if err := a.volumeMounts(ctx, inst, &c); err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	// Configs and secrets go to the main container only.
	var dataEnv []string
	var auth *api.RegistryAuth
	if m == nil {
		var err error
		if dataEnv, auth, err = a.dataMounts(ctx, inst, id, &c); err != nil {
			return nil, fmt.Errorf("start %s: %w", id, err)
		}
	}
	pod := len(inst.Members) > 0
	// The image and the network do not depend on each other: prepare the
	// one while attaching the other (a staged network only reserves here,
	// and wires while the runtime readies the container). A failure of
	// either undoes both.
	t0 := time.Now()
	var (
		rootfs  Rootfs
		prepErr error
		tPrep   time.Duration
	)
	imaged := make(chan struct{})
	go func() {
		defer close(imaged)
		if p, ok := a.cfg.Images.(ImagePuller); ok {
			rootfs, prepErr = p.PrepareFor(ctx, image, id, Pull{Policy: inst.PullPolicy, Auth: auth})
		} else {
			rootfs, prepErr = a.cfg.Images.Prepare(ctx, image, id)
		}
		tPrep = time.Since(t0)
	}()
	var tWire time.Duration
	var attErr error
	if pod {
		attErr = a.attachPod(ctx, &c, inst)
	} else {
		attErr = a.attach(ctx, &c, inst.Namespace, &tWire)
	}
	tAttach := time.Since(t0)
	<-imaged
	if prepErr != nil || attErr != nil {
		if prepErr != nil {
			prepErr = fmt.Errorf("image for %s: %w", id, prepErr)
		} else {
			_ = a.cfg.Images.Release(context.WithoutCancel(ctx), id)
		}
		if attErr == nil && !pod {
			a.detach(context.WithoutCancel(ctx), id)
		}
		metrics.ContainerStartFailures.Inc()
		return nil, errors.Join(prepErr, attErr)
	}
	entry := command
	if len(entry) == 0 {
		entry = rootfs.Entrypoint
		if len(args) == 0 {
			args = rootfs.Cmd
		}
	}
	c.LowerDirs = rootfs.LowerDirs
	c.Args = append(append([]string(nil), entry...), args...)
	c.Env = append(append(append([]string(nil), rootfs.Env...), dataEnv...), env...)
	c.Cwd = rootfs.WorkingDir
	if workDir != "" {
		c.Cwd = workDir
	}
	if err := inst.Process.apply(&c, rootfs); err != nil {
		metrics.ContainerStartFailures.Inc()
		_ = a.cfg.Images.Release(context.WithoutCancel(ctx), id)
		if !pod {
			a.detach(context.WithoutCancel(ctx), id)
		}
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	return &prepared{inst: inst, name: name, pod: pod, c: c, t0: t0, tPrep: tPrep, tAttach: tAttach, tWire: &tWire}, nil
}

// launch runs a prepared container; with restoreFrom, a directory of
// CRIU images (a migration), it is restored from them instead of starting
// its process anew. A failure releases what prepare took.
func (a *Agent) launch(ctx context.Context, p *prepared, restoreFrom string) (runtime.Status, error) {
	c, id := p.c, p.c.ID
	t1 := time.Now()
	var st runtime.Status
	var err error
	if restoreFrom != "" {
		mg, ok := a.cfg.Runtime.(Migrator)
		if !ok {
			err = fmt.Errorf("start %s: %w: this node's runtime cannot restore checkpoints", id, errdefs.ErrFailedPrecondition)
		} else {
			st, err = mg.RestoreAs(ctx, c, restoreFrom)
		}
	} else {
		st, err = a.cfg.Runtime.Run(ctx, c)
	}
	if err != nil {
		metrics.ContainerStartFailures.Inc()
		_ = a.cfg.Images.Release(context.WithoutCancel(ctx), id)
		// A container that never ran holds nothing worth keeping; one
		// created but failed is removed (and detached) by the next pass.
		if st.ID == "" && !p.pod {
			a.detach(context.WithoutCancel(ctx), id)
		}
		return st, err
	}
	metrics.ContainerStartDuration.Observe(time.Since(p.t0).Seconds())
	a.log.Info("started", "instance", p.inst.Key(), "container", id, "member", p.name, "attempt", c.Labels[labelAttempt],
		"prepare", p.tPrep, "attach", p.tAttach, "wire", *p.tWire, "run", time.Since(t1), "restored", restoreFrom != "")
	return st, nil
}

// stopAsync stops a container without holding up the loop: a container
// that ignores SIGTERM takes its whole grace period.
func (a *Agent) stopAsync(ctx context.Context, id string, st runtime.Status, reason string) {
	if a.stopping[id] {
		return
	}
	a.stopping[id] = true
	grace, err := time.ParseDuration(st.Labels[labelGrace])
	if err != nil || grace <= 0 {
		grace = DefaultStopGrace
	}
	a.log.Info("stopping", "container", id, "reason", reason)
	a.wg.Go(func() {
		if _, err := a.cfg.Runtime.Stop(context.WithoutCancel(ctx), id, grace); err != nil {
			a.log.Warn("stop container", "container", id, "err", err)
		}
		select {
		case a.done <- id:
		case <-ctx.Done():
		}
	})
}

// track makes sure every running container has an exit watcher and, if its
// instance asks, a health prober; and drops probers of containers gone.
func (a *Agent) track(ctx context.Context, byID map[string]runtime.Status, insts map[string]*Instance) {
	for id, st := range byID {
		if st.State != runtime.Running {
			a.stopProbe(id)
			continue
		}
		if !a.watched[id] {
			a.watched[id] = true
			a.wg.Go(func() {
				_, _ = a.cfg.Runtime.Wait(ctx, id)
				select {
				case a.exits <- id:
				case <-ctx.Done():
				}
			})
		}
		if inst := insts[st.Labels[labelUID]]; inst != nil {
			check := inst.Health
			if m, ok := inst.member(memberOf(st)); ok && m != nil {
				check = m.Health
			}
			if check != nil {
				a.ensureProbe(ctx, id, st, inst, check)
			}
		}
	}
	for id := range a.watched {
		if _, ok := byID[id]; !ok {
			delete(a.watched, id)
		}
	}
	a.mu.Lock()
	var gone []string
	for id := range a.probes {
		if _, ok := byID[id]; !ok {
			gone = append(gone, id)
		}
	}
	a.mu.Unlock()
	for _, id := range gone {
		a.stopProbe(id)
	}
}

// report sends the status of every desired instance that changed since it was last sent.
//
// Long because the status of an instance is built from each of its
// containers in one pass, init, sidecars and main alike.
func (a *Agent) report(ctx context.Context, insts map[string]*Instance, byID map[string]runtime.Status, now time.Time) {
	mine := make(map[string][]runtime.Status, len(insts))
	for _, st := range byID {
		uid := st.Labels[labelUID]
		mine[uid] = append(mine[uid], st)
	}
	uids := make([]string, 0, len(insts))
	for uid := range insts {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	type pending struct {
		inst *Instance
		st   Status
	}
	var todo []pending
	for _, uid := range uids {
		inst := insts[uid]
		var st Status
		a.mu.Lock()
		prev, sent := a.reported[uid]
		held := a.holds[uid] != nil // moving since the pass began: its container is out of byID
		a.mu.Unlock()
		if held {
			continue
		}
		if len(inst.Members) == 0 {
			st = a.statusOf(inst, latestOf(mine[uid], ""), now)
		} else {
			st = a.podStatus(inst, latestByMember(mine[uid]), now)
			if net := podNetID(inst); st.Phase.Terminal() && !a.podsReleased[net] {
				// Finished for good: the instance's address goes, as a
				// lone container's does at its exit (once its sidecars
				// have stopped).
				a.podsReleased[net] = a.releasePod(ctx, net, "")
			}
		}
		if sent && prev.equal(st) {
			continue
		}
		todo = append(todo, pending{inst, st})
	}
	if b, ok := a.cfg.ControlPlane.(StatusBatcher); ok {
		if len(todo) == 0 {
			return
		}
		reports := make([]StatusReport, len(todo))
		for i, p := range todo {
			reports[i] = StatusReport{Namespace: p.inst.Namespace, Name: p.inst.Name, UID: p.inst.UID, Status: p.st}
		}
		errs := b.ReportStatuses(ctx, a.cfg.Node.Name, reports)
		a.mu.Lock()
		defer a.mu.Unlock()
		for i, p := range todo {
			if errs[i] != nil {
				a.log.Warn("report status", "instance", p.inst.Key(), "err", errs[i])
				continue
			}
			a.reported[p.inst.UID] = p.st
		}
		return
	}
	// Several reports at once: each is a round trip to a server, and a
	// node starting a hundred instances would otherwise wait for them one
	// by one, with its loop held. Each instance still has one report in
	// flight at most, as the loop waits for these before the next pass.
	sem := make(chan struct{}, reportParallel)
	var wg sync.WaitGroup
	for _, p := range todo {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := a.cfg.ControlPlane.ReportStatus(ctx, p.inst.Namespace, p.inst.Name, p.inst.UID, p.st); err != nil {
				a.log.Warn("report status", "instance", p.inst.Key(), "err", err)
				return
			}
			a.mu.Lock()
			a.reported[p.inst.UID] = p.st
			a.mu.Unlock()
		})
	}
	wg.Wait()
}

// equal reports whether s and o say the same.
func (s Status) equal(o Status) bool {
	return reflect.DeepEqual(s, o)
}

// reportParallel bounds the status reports an agent has in flight.
const reportParallel = 16

func attemptOf(st runtime.Status) int {
	n, _ := strconv.Atoi(st.Labels[labelAttempt])
	return n
}

func (a *Agent) statusOf(inst *Instance, c runtime.Status, now time.Time) Status {
	if c.ID == "" {
		st := Status{Phase: api.PhaseStarting, Healthy: false}
		if f, ok := a.failures[inst.UID]; ok {
			st.Reason, st.Message = api.ReasonStartError, f.err.Error()
			if inst.Restart == reconcile.Never {
				st.Phase = api.PhaseFailed
			} else {
				st.RestartAt = f.next
				if transientStart(f.err) {
					st.Reason = api.ReasonStartBackOff
				}
			}
		}
		return st
	}
	st := Status{ContainerID: c.ID, Pid: c.Pid, Restarts: attemptOf(c), StartedAt: c.StartedAt}
	switch c.State {
	case runtime.Running:
		st.Phase, st.Healthy = api.PhaseRunning, true
		st.IP = c.Labels[labelIP]
		a.mu.Lock()
		if p := a.probes[c.ID]; p != nil {
			st.Healthy = p.ready()
			if !p.healthy() {
				st.Reason = "Unhealthy"
			}
		} else if inst.Health != nil {
			st.Healthy = false // its prober starts on the next pass
		}
		a.mu.Unlock()
		if a.stopping[c.ID] {
			st.Healthy = false
		}
	default:
		st.ExitCode, st.FinishedAt, st.Reason = c.ExitCode, c.FinishedAt, c.Reason
		switch c.State {
		case runtime.Unknown:
			st.ExitCode, st.Reason = 137, "ShimLost"
		case runtime.Created:
			st.ExitCode, st.Reason, st.Message = 128, "StartError", "the agent stopped while starting it"
		}
		if c.StartError != "" {
			st.Message = c.StartError
		}
		if ev, ok := a.evicted[c.ID]; ok {
			st.Reason, st.Message = ev.reason, ev.message
		} else if c.ID == inst.ReportedContainer && isDiskReason(inst.ReportedReason) {
			// Stopped for its disk use before this agent started; kept
			// as if this agent had stopped it, since later copies of the
			// instance may come without the status.
			st.Reason, st.Message = inst.ReportedReason, inst.ReportedMessage
			a.evicted[c.ID] = eviction{id: c.ID, reason: st.Reason, message: st.Message}
		}
		switch {
		case reconcile.Restarts(inst.Restart, st.ExitCode):
			st.Phase = api.PhaseStarting
			if strings.TrimSpace(st.Reason) == "" || st.Reason == "Completed" || st.Reason == "Error" {
				st.Reason = "BackOff"
			}
			// The reconciler's own rule, so that what ps shows is when it happens.
			st.RestartAt = c.FinishedAt.Add(reconcile.Backoff(attemptOf(c), c.FinishedAt.Sub(c.StartedAt)))
		case st.ExitCode == 0:
			st.Phase = api.PhaseSucceeded
		default:
			st.Phase = api.PhaseFailed
		}
	}
	return st
}
