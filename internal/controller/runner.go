package controller

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/scheduler"
	"github.com/berth-dev/berth/internal/store"
)

// Manager runs every control-plane loop over the store: services, jobs,
// node lifecycle and scheduling. Each pass lists what it needs and acts
// on the difference, so a restarted manager converges from wherever it
// stopped; watches only make passes come sooner.
type Manager struct {
	s   *store.Store
	log *slog.Logger
	opt Options

	poke chan struct{}
	// notReady remembers since when (local time) each NotReady node has been so.
	notReady map[string]time.Time
	seed     uint64
	// started is when Run began; zero for passes run by hand.
	started time.Time
	// cache holds what passes read while Run runs; nil for passes run by hand.
	cache *cache
	// hashes holds each service's template hash at a revision, by UID.
	hashes map[string]revHash
}

// Options tune the manager.
type Options struct {
	// LostGrace is how long a node stays NotReady before its instances
	// are Lost; none by default, since the heartbeat lease's TTL already
	// was the wait.
	LostGrace time.Duration
	// StartGrace is how long after Run starts no instance is marked Lost:
	// a manager that just took over (or a cluster whose servers were all
	// down) gives the nodes one heartbeat TTL to reach it first.
	// DefaultStartGrace when zero; negative for none.
	StartGrace time.Duration
	// Resync bounds the time between passes when nothing is watched changing.
	Resync time.Duration
	Logger *slog.Logger
	Clock  func() time.Time
	// Network is what the control plane hands out: pod subnets and
	// service VIPs. Zero prefixes hand out nothing.
	Network Network
	// Admit, when set, checks a job a cron job is about to start as the
	// API checks a job written to it (the API server's Admit); a job it
	// refuses is not started, and the cron job says why.
	Admit func(ctx context.Context, obj api.Object) error
}

// DefaultStartGrace is a node heartbeat TTL.
const DefaultStartGrace = 10 * time.Second

// NewManager builds a manager; nothing runs until Run.
func NewManager(s *store.Store, opt Options) *Manager {
	if opt.StartGrace == 0 {
		opt.StartGrace = DefaultStartGrace
	}
	if opt.Resync <= 0 {
		opt.Resync = 2 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	return &Manager{s: s, opt: opt, log: opt.Logger.With("component", "controller"),
		poke: make(chan struct{}, 1), notReady: map[string]time.Time{}, hashes: map[string]revHash{}}
}

// Run works until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.started = m.opt.Clock()
	// One watch on the whole store feeds the cache and starts passes; a
	// lapsed heartbeat lease changes no object, only its key, and is seen
	// there too.
	m.cache = newCache(m.s)
	poke := func() {
		select {
		case m.poke <- struct{}{}:
		default:
		}
	}
	go m.cache.follow(ctx, m.log, cacheRelist, poke)
	t := time.NewTicker(m.opt.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.poke:
		case <-t.C:
		}
		t0 := time.Now()
		if err := m.Pass(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("controller pass", "err", err)
		}
		metrics.ControllerPassDuration.Observe(time.Since(t0).Seconds())
		m.log.Debug("pass", "took", time.Since(t0))
	}
}

// cacheRelist is how often the cache lists everything again: the watch
// makes it current, the lists make sure of it.
const cacheRelist = 5 * time.Minute

// cacheLag bounds how long a pass waits for the cache to show this
// process's own last write before it reads the store instead.
const cacheLag = 2 * time.Second

// snapshot is one consistent-enough read of everything a pass needs.
type snapshot struct {
	nodes     []*api.Node
	services  []*api.Service
	jobs      []*api.Job
	instances []*api.Instance

	owned map[ownerID][]*api.Instance
}

// byOwner groups the instances by owner, once the node and drain
// controllers are done with them.
func (sn *snapshot) byOwner() map[ownerID][]*api.Instance {
	if sn.owned == nil {
		sn.owned = byOwner(sn.instances)
	}
	return sn.owned
}

// read takes a pass's snapshot: from the cache once it shows this
// process's own writes, else from the store.
func (m *Manager) read(ctx context.Context) (*snapshot, map[string]bool, error) {
	if m.cache != nil {
		err := m.cache.waitFor(ctx, m.s.LastWrite(), cacheLag)
		if err == nil {
			sn, live := m.cache.snapshot()
			return sn, live, nil
		}
		if ctx.Err() != nil {
			return nil, nil, err
		}
		m.log.Warn("reading the store directly", "err", err)
	}
	sn, err := m.list(ctx)
	if err != nil {
		return nil, nil, err
	}
	live, err := m.s.LiveNodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	return sn, live, nil
}

func (m *Manager) list(ctx context.Context) (*snapshot, error) {
	var sn snapshot
	// Four lists at once: each is a round trip to etcd, and a pass waits for all.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	wg.Go(func() { sn.nodes, _, errs[0] = store.List[api.Node](ctx, m.s, "") })
	wg.Go(func() { sn.services, _, errs[1] = store.List[api.Service](ctx, m.s, "") })
	wg.Go(func() { sn.jobs, _, errs[2] = store.List[api.Job](ctx, m.s, "") })
	wg.Go(func() { sn.instances, _, errs[3] = store.List[api.Instance](ctx, m.s, "") })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &sn, nil
}

// Pass runs every controller once. Instances made in this pass are
// placed before they are stored, and stored bound, in one write; status
// writes wait until after: the path from a new service to a bound
// instance is what users wait on.
func (m *Manager) Pass(ctx context.Context) error {
	sn, live, err := m.read(ctx)
	if err != nil {
		return err
	}
	var errs []error
	errs = append(errs, m.nodesPass(ctx, sn, live))
	errs = append(errs, m.drainPass(ctx, sn))
	errs = append(errs, m.assignSubnets(ctx, sn))
	var later []func() error
	fresh, statuses, err := m.servicesPass(ctx, sn)
	errs = append(errs, err)
	later = append(later, statuses...)
	jf, jobStatuses, err := m.jobsPass(ctx, sn)
	errs = append(errs, err)
	later = append(later, jobStatuses...)
	errs = append(errs, m.schedulePass(ctx, sn, append(fresh, jf...)))
	errs = append(errs, m.cronPass(ctx, sn))
	errs = append(errs, m.dataPass(ctx, sn))
	for _, f := range later {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// ownerID names an owner by its UID too: a service removed and made again
// under the same name must not adopt the old one's instances.
type ownerID struct {
	kind          api.Kind
	ns, name, uid string
}

func byOwner(insts []*api.Instance) map[ownerID][]*api.Instance {
	out := make(map[ownerID][]*api.Instance, len(insts))
	for _, in := range insts {
		o := in.Spec.Owner
		k := ownerID{o.Kind, in.Metadata.Namespace, o.Name, o.UID}
		out[k] = append(out[k], in)
	}
	return out
}

// templateHash is svc's template hash, worked out once per revision of it.
func (m *Manager) templateHash(svc *api.Service) string {
	h, ok := m.hashes[svc.Metadata.UID]
	if !ok || h.rev != svc.Metadata.Revision {
		h = revHash{svc.Metadata.Revision, svc.Spec.Template.Hash()}
		m.hashes[svc.Metadata.UID] = h
	}
	return h.hash
}

type revHash struct {
	rev  int64
	hash string
}

func view(in *api.Instance) Instance {
	return Instance{
		Namespace: in.Metadata.Namespace, Name: in.Metadata.Name, Phase: phaseOf(in), Node: in.Spec.Node, Healthy: in.Status.Healthy,
		CreatedAt: in.Metadata.CreatedAt, SpecHash: in.Spec.SpecHash, Index: in.Spec.Index, Attempt: in.Spec.Attempt,
		Target:   pinnedNode(in.Spec.Placement),
		Restarts: in.Status.Restarts, Reason: in.Status.Reason, ExitCode: in.Status.ExitCode,
	}
}

func phaseOf(in *api.Instance) api.Phase {
	if in.Status.Phase == "" {
		return api.PhasePending
	}
	return in.Status.Phase
}

func suffix() string {
	const letters = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// newInstances are instances an owner needs, not stored yet: the
// scheduler places them first, so that they are stored bound.
type newInstances struct {
	owner api.Object
	insts []*api.Instance
	// taken says a name already in use means they were made already (job
	// instances are named by index and attempt).
	taken bool
}

// servicesPass removes service instances and returns those to make and
// the status writes still to do.
func (m *Manager) servicesPass(ctx context.Context, sn *snapshot) ([]newInstances, []func() error, error) {
	owned := sn.byOwner()
	var made []newInstances
	var later []func() error
	var errs []error
	live := make(map[ownerID]bool, len(sn.services))
	vips := m.newVIPs(sn)
	var views []Instance // reused: a pass runs over every service
	for _, svc := range sn.services {
		key := ownerID{api.KindService, svc.Metadata.Namespace, svc.Metadata.Name, svc.Metadata.UID}
		live[key] = true
		hash := m.templateHash(svc)
		prev := svc.Status.Rollout
		u := svc.Spec.Update
		st := ServiceState{Replicas: svc.Spec.Replicas, SpecHash: hash, MaxSurge: u.MaxSurge, MaxUnavailable: u.MaxUnavailable,
			Settled:   prev.Hash == hash && (prev.Phase == api.RolloutComplete || prev.Phase == api.RolloutRolledBack),
			Instances: views[:0]}
		for _, in := range owned[key] {
			st.Instances = append(st.Instances, view(in))
		}
		views = st.Instances
		var res ServiceResult
		var createOn []string
		if svc.Spec.Mode == api.ModeGlobal {
			res, createOn = ComputeGlobal(GlobalState{SpecHash: hash, Nodes: eligibleNodes(sn.nodes, svc.Spec.Placement),
				Settled: st.Settled, Instances: st.Instances})
		} else {
			res = ComputeService(st)
		}
		var insts []*api.Instance
		var names map[string]bool
		if res.Create > 0 {
			// Five random letters collide often among thousands: draw again.
			names = make(map[string]bool, len(owned[key])+res.Create)
			for _, in := range owned[key] {
				names[in.Metadata.Name] = true
			}
		}
		for i := range res.Create {
			p := svc.Spec.Placement
			if i < len(createOn) {
				// A global service's instance is pinned to its node.
				p.Constraints = append(slices.Clip(p.Constraints), api.Constraint{Key: scheduler.NodeNameKey, Op: api.OpEq, Values: []string{createOn[i]}})
			}
			in := m.newInstance(svc.Metadata, api.KindService, svc.Spec.Template, p, svc.Spec.Priority, hash, 0, 0, nil)
			for names[in.Metadata.Name] {
				in.Metadata.Name = svc.Metadata.Name + "-" + suffix()
			}
			names[in.Metadata.Name] = true
			insts = append(insts, in)
		}
		if len(insts) > 0 {
			made = append(made, newInstances{owner: svc, insts: insts})
		}
		errs = append(errs, m.deleteInstances(ctx, svc.Metadata.Namespace, res.Delete))
		vip, err := vips.forService(svc)
		if err != nil {
			errs = append(errs, err)
		}
		want := api.ServiceStatus{Replicas: len(st.Instances) + res.Create - len(res.Delete), ReadyReplicas: res.Ready,
			UpdatedReplicas: res.Updated, VIP: vip,
			// Not the current revision: writing this status makes a new one, which would loop.
			ObservedRevision: svc.Status.ObservedRevision}
		if want.Replicas < 0 {
			want.Replicas = 0
		}
		var exitFailed bool
		want.Message, exitFailed = exitedMessage(res.Exited, owned[key], svc.Spec.Template.Restart)
		want.History = nextHistory(svc.Status.History, svc.Spec.Template, hash, m.opt.Clock().UTC())
		rev := want.History[len(want.History)-1].Revision
		want.Rollout = nextRollout(prev, rev, hash, res)
		var rollback *api.TemplateRevision
		if want.Rollout.Phase == api.RolloutFailed && u.AutoRollback && len(want.History) > 1 {
			to := want.History[len(want.History)-2]
			rollback = &to
			want.Rollout = api.RolloutStatus{Revision: to.Revision, Hash: to.Hash, Phase: api.RolloutRolledBack,
				Message: fmt.Sprintf("revision %d failed (%s): rolled back to revision %d", rev, res.Reason, to.Revision)}
		}
		if !serviceStatusEqual(want, svc.Status) {
			var events []api.Event
			if want.Message != "" && want.Message != svc.Status.Message {
				typ := api.EventNormal // all ended well
				if exitFailed {
					typ = api.EventWarning
				}
				events = append(events, api.Event{Type: typ, Reason: "InstanceExited", Message: want.Message})
			}
			if ro := want.Rollout; ro.Hash != prev.Hash || ro.Phase != prev.Phase {
				switch ro.Phase {
				case api.RolloutFailed:
					events = append(events, api.Event{Type: api.EventWarning, Reason: "RolloutFailed",
						Message: fmt.Sprintf("revision %d: %s; no more instances are replaced until the template changes", ro.Revision, ro.Message)})
				case api.RolloutRolledBack:
					events = append(events, api.Event{Type: api.EventWarning, Reason: "RolledBack", Message: ro.Message})
				case api.RolloutComplete:
					events = append(events, api.Event{Type: api.EventNormal, Reason: "RolloutComplete", Message: fmt.Sprintf("revision %d", ro.Revision)})
				}
			}
			svc := own(svc)
			svc.Status = want
			later = append(later, func() error {
				if rollback != nil {
					// The spec first, naming the revision read: a user's change meanwhile wins.
					back := own(svc)
					back.Spec.Template = rollback.Template
					if err := m.s.Update(ctx, back, svc.Metadata.Revision); err != nil {
						if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
							return nil
						}
						return err
					}
					svc = back
					svc.Status = want
				}
				if err := m.s.UpdateStatus(ctx, svc, 0); err != nil && !errdefs.IsNotFound(err) {
					return err
				}
				for _, ev := range events {
					m.event(ctx, svc, ev.Type, ev.Reason, ev.Message)
				}
				return nil
			})
		}
	}
	if len(m.hashes) > len(sn.services) {
		liveUID := make(map[string]bool, len(sn.services))
		for _, svc := range sn.services {
			liveUID[svc.Metadata.UID] = true
		}
		for uid := range m.hashes {
			if !liveUID[uid] {
				delete(m.hashes, uid)
			}
		}
	}
	// Instances whose service is gone go too.
	for key, insts := range owned {
		if live[key] || len(insts) == 0 || insts[0].Spec.Owner.Kind != api.KindService {
			continue
		}
		for _, in := range insts {
			if err := m.s.Delete(ctx, api.KindInstance, in.Metadata.Namespace, in.Metadata.Name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return made, later, errors.Join(errs...)
}

// exitedMessage says which instances ended for good and why they stay
// so, and whether any of them failed.
func exitedMessage(exited []string, insts []*api.Instance, policy api.RestartPolicy) (string, bool) {
	if len(exited) == 0 {
		return "", false
	}
	if policy == "" {
		policy = api.RestartAlways
	}
	byName := make(map[string]*api.Instance, len(insts))
	for _, in := range insts {
		byName[in.Metadata.Name] = in
	}
	var parts []string
	failed := false
	for _, name := range exited {
		in := byName[name]
		if in == nil {
			continue
		}
		failed = failed || in.Status.Phase == api.PhaseFailed
		// A few by name: the message must stay small whatever the replicas.
		if len(parts) < 3 {
			parts = append(parts, fmt.Sprintf("%s %s with exit code %d", name, strings.ToLower(string(in.Status.Phase)), in.Status.ExitCode))
		}
	}
	if more := len(exited) - len(parts); more > 0 {
		parts = append(parts, fmt.Sprintf("%d more", more))
	}
	return fmt.Sprintf("%s; not restarted (restart: %s): change or restart the service to run it again", strings.Join(parts, ", "), policy), failed
}

// deleteInstances removes instances of one namespace, as many to a
// transaction as etcd takes; a batch that fails (one was gone already)
// goes one by one.
func (m *Manager) deleteInstances(ctx context.Context, ns string, names []string) error {
	var errs []error
	for batch := range slices.Chunk(names, m.s.BindBatch()) {
		if len(batch) > 1 {
			t := m.s.Txn()
			for _, name := range batch {
				t.Delete(api.KindInstance, ns, name, 0)
			}
			if t.Commit(ctx) == nil {
				continue
			}
		}
		for _, name := range batch {
			if err := m.s.Delete(ctx, api.KindInstance, ns, name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) newInstance(owner api.Metadata, kind api.Kind, t api.Template, p api.Placement, prio int, hash string, index, attempt int, env map[string]string) *api.Instance {
	name := owner.Name + "-" + suffix()
	if kind == api.KindJob {
		name = fmt.Sprintf("%s-%d-%d", owner.Name, index, attempt)
	}
	if len(env) > 0 {
		merged := map[string]string{}
		for k, v := range t.Env {
			merged[k] = v
		}
		for k, v := range env {
			merged[k] = v
		}
		t.Env = merged
	}
	return &api.Instance{
		Metadata: api.Metadata{Namespace: owner.Namespace, Name: name,
			Labels: map[string]string{"berth.owner": owner.Name, "berth.owner-kind": string(kind)}},
		Spec: api.InstanceSpec{Template: t, Owner: api.Owner{Kind: kind, Name: owner.Name, UID: owner.UID},
			Placement: p, Index: index, Attempt: attempt, SpecHash: hash, Priority: prio},
		Status: api.InstanceStatus{Phase: api.PhasePending},
	}
}

// jobsPass removes job instances and returns those to make and the
// status writes still to do.
func (m *Manager) jobsPass(ctx context.Context, sn *snapshot) ([]newInstances, []func() error, error) {
	owned := sn.byOwner()
	var made []newInstances
	var later []func() error
	var errs []error
	live := map[ownerID]bool{}
	now := m.opt.Clock().UTC()
	for _, job := range sn.jobs {
		key := ownerID{api.KindJob, job.Metadata.Namespace, job.Metadata.Name, job.Metadata.UID}
		live[key] = true
		if job.Status.Phase == api.JobSucceeded || job.Status.Phase == api.JobFailed {
			continue // finished: its instances stay for their logs until the job is removed
		}
		st := JobState{Completions: job.Spec.Completions, Parallelism: job.Spec.Parallelism, BackoffLimit: job.Spec.BackoffLimit}
		insts := owned[key]
		for _, in := range insts {
			st.Instances = append(st.Instances, view(in))
		}
		res := ComputeJob(st)
		t := job.Spec.Template
		// The job controller retries a failed index itself, as a new instance.
		t.Restart = api.RestartNever
		var fresh []*api.Instance
		for _, c := range res.Create {
			env := map[string]string{
				"BERTH_JOB_INDEX":       strconv.Itoa(c.Index),
				"BERTH_JOB_COMPLETIONS": strconv.Itoa(job.Spec.Completions),
				"BERTH_JOB_NAME":        job.Metadata.Name,
			}
			fresh = append(fresh, m.newInstance(job.Metadata, api.KindJob, t, job.Spec.Placement, job.Spec.Priority, "", c.Index, c.Attempt, env))
		}
		if len(fresh) > 0 {
			made = append(made, newInstances{owner: job, insts: fresh, taken: true})
		}
		deleteFailed := false
		for _, name := range res.Delete {
			if err := m.s.Delete(ctx, api.KindInstance, job.Metadata.Namespace, name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
				deleteFailed = true
			}
		}
		want := jobStatus(job, res, insts, now)
		if deleteFailed && want.Phase != api.JobRunning {
			continue // a finished job is not looked at again: finish its deletes first
		}
		if !jobStatusEqual(want, job.Status) {
			job := own(job)
			job.Status = want
			later = append(later, func() error {
				if err := m.s.UpdateStatus(ctx, job, 0); err != nil {
					if errdefs.IsNotFound(err) {
						return nil
					}
					return err
				}
				if want.Phase == api.JobSucceeded || want.Phase == api.JobFailed {
					m.event(ctx, job, api.EventNormal, "Job"+string(want.Phase), want.Message)
				}
				return nil
			})
		}
	}
	for key, insts := range owned {
		if live[key] || len(insts) == 0 || insts[0].Spec.Owner.Kind != api.KindJob {
			continue
		}
		for _, in := range insts {
			if err := m.s.Delete(ctx, api.KindInstance, in.Metadata.Namespace, in.Metadata.Name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return made, later, errors.Join(errs...)
}

func jobStatus(job *api.Job, res JobResult, insts []*api.Instance, now time.Time) api.JobStatus {
	st := api.JobStatus{Phase: api.JobPhase(res.Phase), Active: res.Active + len(res.Create), Failed: res.Failures,
		StartedAt: job.Status.StartedAt, EndedAt: job.Status.EndedAt}
	if st.StartedAt.IsZero() {
		st.StartedAt = now
	}
	latest := map[int]*api.Instance{}
	for _, in := range insts {
		if cur, ok := latest[in.Spec.Index]; !ok || in.Spec.Attempt > cur.Spec.Attempt {
			latest[in.Spec.Index] = in
		}
	}
	for _, r := range res.Indexes {
		ir := api.IndexResult{Index: r.Index, Succeeded: r.Succeeded, Attempts: r.Failures}
		if in := latest[r.Index]; in != nil {
			ir.Instance = in.Metadata.Name
			ir.ExitCode = in.Status.ExitCode
			ir.Attempts = in.Spec.Attempt + 1
			ir.Failed = !r.Succeeded && phaseOf(in) == api.PhaseFailed
		}
		if r.Succeeded {
			st.Succeeded++
		}
		st.Indexes = append(st.Indexes, ir)
	}
	sort.Slice(st.Indexes, func(i, j int) bool { return st.Indexes[i].Index < st.Indexes[j].Index })
	switch res.Phase {
	case JobSucceeded:
		st.Message = fmt.Sprintf("all %d indices succeeded", job.Spec.Completions)
	case JobFailed:
		st.Message = fmt.Sprintf("%d failed attempts, over the backoff limit of %d", res.Failures, job.Spec.BackoffLimit)
	}
	if res.Phase != JobRunning && st.EndedAt.IsZero() {
		st.EndedAt = now
	}
	return st
}

func jobStatusEqual(a, b api.JobStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func (m *Manager) event(ctx context.Context, obj api.Object, typ api.EventType, reason, msg string) {
	md := obj.GetMetadata()
	ev := &api.Event{Object: api.ObjectRef{Kind: obj.GetKind(), Namespace: md.Namespace, Name: md.Name},
		Type: typ, Reason: reason, Message: msg, Source: "controller"}
	if err := m.s.RecordEvent(ctx, ev); err != nil && ctx.Err() == nil {
		m.log.Warn("record event", "err", err)
	}
}

func (m *Manager) nodesPass(ctx context.Context, sn *snapshot, live map[string]bool) error {
	now := m.opt.Clock()
	states := make([]NodeState, 0, len(sn.nodes))
	index := make(map[string]int, len(sn.nodes)) // into sn.nodes and states
	var dead map[string]bool
	for i, n := range sn.nodes {
		name := n.Metadata.Name
		index[name] = i
		// Alive while its heartbeat lease is held: etcd, not a clock, decides.
		alive := live[name]
		ready := n.Status.Condition == api.NodeReady
		if ready {
			delete(m.notReady, name)
		} else if _, ok := m.notReady[name]; !ok {
			m.notReady[name] = now
		}
		if !alive {
			if dead == nil {
				dead = map[string]bool{}
			}
			dead[name] = true
		}
		states = append(states, NodeState{Name: name, Alive: alive, Ready: ready, NotReadySince: m.notReady[name]})
	}
	// Only a node that stopped can lose its instances.
	if dead != nil {
		for _, in := range sn.instances {
			if dead[in.Spec.Node] {
				st := &states[index[in.Spec.Node]]
				st.Instances = append(st.Instances, view(in))
			}
		}
	}
	res := ComputeNodes(states, now, m.opt.LostGrace)
	if !m.started.IsZero() && now.Sub(m.started) < m.opt.StartGrace && len(res.Lost) > 0 {
		m.log.Debug("not marking instances lost yet: the nodes have not had a heartbeat TTL to reach this manager", "instances", len(res.Lost))
		res.Lost = nil
	}
	var errs []error
	set := func(name string, cond api.NodeCondition, msg string) {
		i := index[name]
		n := own(sn.nodes[i])
		was := n.Status.Condition
		n.Status.Condition, n.Status.Message = cond, msg
		if err := m.s.UpdateStatus(ctx, n, n.Metadata.Revision); err != nil {
			if !errdefs.IsConflict(err) {
				errs = append(errs, err)
			}
			return
		}
		sn.nodes[i] = n // the rest of the pass sees it so
		switch {
		case cond == api.NodeNotReady:
			m.event(ctx, n, api.EventWarning, "NodeNotReady", msg)
		case was == api.NodeNotReady:
			// A node that just registered has nothing to recover from.
			m.event(ctx, n, api.EventNormal, "NodeReady", msg)
		}
	}
	for _, name := range res.MarkReady {
		set(name, api.NodeReady, "its heartbeat lease is held again")
	}
	for _, name := range res.MarkNotReady {
		m.notReady[name] = now
		set(name, api.NodeNotReady, "its heartbeat lease expired")
	}
	var lost map[string]bool
	if len(res.Lost) > 0 {
		lost = make(map[string]bool, len(res.Lost))
		for _, name := range res.Lost {
			lost[name] = true
		}
	}
	for i, in := range sn.instances {
		_, nodeExists := index[in.Spec.Node]
		gone := in.Spec.Node != "" && !nodeExists && !phaseOf(in).Terminal()
		if !gone && (lost == nil || !lost[in.Metadata.Namespace+"/"+in.Metadata.Name]) {
			continue
		}
		in = own(in)
		in.Status.Phase = api.PhaseLost
		in.Status.Healthy = false
		in.Status.Message = fmt.Sprintf("node %s stopped answering", in.Spec.Node)
		if gone {
			in.Status.Message = fmt.Sprintf("node %s was removed", in.Spec.Node)
		}
		if err := m.s.UpdateStatus(ctx, in, in.Metadata.Revision); err != nil {
			// Not marked after all (the agent wrote meanwhile): this pass must not act on it.
			if !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		sn.instances[i] = in // so that the service and job controllers replace it this pass
	}
	return errors.Join(errs...)
}
