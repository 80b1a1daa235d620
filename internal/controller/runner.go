package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/metrics"
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
	// unexplained remembers since when (local time) each node has been
	// without a lease that no server saw lapse (see nodesPass).
	unexplained map[string]time.Time
	seed        uint64
	// started is when Run began; zero for passes run by hand.
	started time.Time
	// cache holds what passes read while Run runs; nil for passes run by hand.
	cache *cache
	// hashes holds each service's template hash at a revision, by UID.
	hashes map[string]revHash
	// settled holds, by service, the revision at which a pass found it
	// with nothing to do (see servicesPass); lastFull is when a pass last
	// looked at every service.
	settled  map[ownerID]int64
	lastFull time.Time
	// nodesAt is the snapshot's nodeGen and liveGen at which a pass
	// found every node settled (see nodesPass); zero when none did.
	nodesAt [2]int64
	// noDrains is the snapshot.nodeGen at which no node was draining.
	noDrains int64
	// subnetsDone is the snapshot.nodeGen at which every node was found
	// with a pod subnet (see assignSubnets).
	subnetsDone int64
	// moves tracks the live migrations of draining nodes (drain.go).
	moves moves
	// sched is the scheduler's view kept from pass to pass (sched_view.go).
	sched *schedView
	// due is when the pass under way wants the next one though the store
	// may not change by then (a cron job's next run, a grace ending,
	// work left to retry); zero when nothing is.
	due time.Time
}

// Options tune the manager.
type Options struct {
	// LostGrace is how long a node stays NotReady before its instances
	// are Lost; none by default, since the heartbeat lease's TTL already
	// was the wait.
	LostGrace time.Duration
	// StartGrace is how long a node whose lease went with its server's
	// (not lapsed for missed beats: store.LapsedNodesAt) keeps its
	// instances, from when Run first saw it so: a manager that just took
	// over (or a cluster whose servers were all down) gives such nodes one
	// heartbeat TTL to reach it. DefaultStartGrace when zero; negative
	// for none.
	StartGrace time.Duration
	// Resync bounds the time between passes while work is pending
	// (instances to place, nodes to give up, a pass that failed).
	Resync time.Duration
	// IdleResync bounds the time between passes when nothing is due and
	// nothing watched changes: quiet passes double the wait from Resync up
	// to it. DefaultIdleResync when zero.
	IdleResync time.Duration
	Logger     *slog.Logger
	Clock      func() time.Time
	// Network is what the control plane hands out: pod subnets and
	// service VIPs. Zero prefixes hand out nothing.
	Network Network
	// Migrate moves a running instance to another node with CRIU (to
	// empty: any Ready, schedulable one); a drain with spec.drainMigrate
	// uses it. Without it such drains restart instances as others do.
	Migrate func(ctx context.Context, namespace, name, to string) (*api.Migration, error)
	// Admit, when set, admits a job a cron job is about to start as the
	// API admits a job written to it (the API server's Admit): it checks
	// the job and may change it (pin its images to digests), and the job
	// is stored as it leaves it. A job it refuses is not started, and the
	// cron job says why.
	Admit func(ctx context.Context, obj api.Object) error
	// Phases, when set, counts instances by phase from the manager's
	// cache while Run runs, for the server's /metrics.
	Phases *metrics.Phases
}

// DefaultStartGrace is a node heartbeat TTL.
const DefaultStartGrace = api.NodeTTL

// DefaultIdleResync is the longest a settled control plane goes without a
// pass: every change comes through the watch at once, so the passes of a
// quiet cluster only check on it. Passing every 2 s over 200 settled
// instances was a fifth of an idle berth up's CPU.
const DefaultIdleResync = 30 * time.Second

// NewManager builds a manager; nothing runs until Run.
func NewManager(s *store.Store, opt Options) *Manager {
	if opt.StartGrace == 0 {
		opt.StartGrace = DefaultStartGrace
	}
	if opt.Resync <= 0 {
		opt.Resync = 2 * time.Second
	}
	if opt.IdleResync <= 0 {
		opt.IdleResync = DefaultIdleResync
	}
	opt.IdleResync = max(opt.IdleResync, opt.Resync)
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Clock == nil {
		opt.Clock = time.Now
	}
	return &Manager{s: s, opt: opt, log: opt.Logger.With("component", "controller"),
		poke: make(chan struct{}, 1), notReady: map[string]time.Time{}, unexplained: map[string]time.Time{}, hashes: map[string]revHash{}}
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
	go m.cache.follow(ctx, m.log, cacheCheck, poke)
	if m.opt.Phases != nil {
		defer m.opt.Phases.Follow(m.instancePhases)()
	}
	t := time.NewTimer(m.opt.Resync)
	defer t.Stop()
	idle := m.opt.Resync // the wait after a quiet pass
	for {
		woke := causeTimer
		select {
		case <-ctx.Done():
			return nil
		case <-m.poke:
			idle, woke = m.opt.Resync, causeAgain
		case <-t.C:
		}
		if why := m.cache.takeWhy(); why != 0 {
			woke = why
		}
		woke.count()
		t0 := time.Now()
		err := m.Pass(ctx)
		if err != nil && ctx.Err() == nil {
			m.log.Warn("controller pass", "err", err)
		}
		metrics.ControllerPassDuration.Observe(time.Since(t0).Seconds())
		m.log.Debug("pass", "took", time.Since(t0))
		var wait time.Duration
		wait, idle = m.nextWait(err != nil, idle)
		t.Stop()
		t.Reset(wait)
		// Changes that come meanwhile wait for the next pass together.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(restAfter(time.Since(t0))):
		}
	}
}

// instancePhases counts the instances by phase from the cache, once it
// has caught up with the store's revision at the call, so that a scrape
// sees what a read of the store would: one small read instead of a list
// of every instance. False when the cache is not there within
// phasesLag, and the scrape lists the store.
func (m *Manager) instancePhases() (map[api.Phase]int, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), phasesLag)
	defer cancel()
	rev, err := m.s.Revision(ctx)
	if err != nil || m.cache.waitFor(ctx, rev, phasesLag) != nil {
		return nil, false
	}
	return m.cache.instancePhases()
}

// phasesLag bounds how long a scrape waits for the cache.
const phasesLag = time.Second

// restAfter is how long the loop rests after a pass that took took
// before the next, however soon changes come: as long again, up to
// maxRest. A pass reads every instance of the cluster; at 300,000 of
// them each took a tenth of a second or more of CPU, and while status
// reports streamed in, passes ran back to back, a whole core taken from
// the API server and etcd that the reports go through. Resting as long
// as it passed bounds the passes to half the loop's time, and each pass
// takes all the changes of its rest at once. A small cluster's passes,
// a millisecond or so, rest as little.
func restAfter(took time.Duration) time.Duration { return min(took, maxRest) }

// maxRest bounds restAfter: a pass slow for its writes (thousands of
// instances made at once) makes the next wait no longer than this.
const maxRest = 250 * time.Millisecond

// nextWait is how long to wait for the next pass when nothing watched
// changes, after a pass that failed or not, and the idle wait to use next
// time. A pass with work pending or failed keeps to Resync; a quiet one
// waits twice as long as the last, up to IdleResync, but never past what
// is due (a cron job's next run).
func (m *Manager) nextWait(failed bool, idle time.Duration) (wait, nextIdle time.Duration) {
	if failed {
		return m.opt.Resync, m.opt.Resync
	}
	wait = idle
	if !m.due.IsZero() {
		switch until := m.due.Sub(m.opt.Clock()); {
		case until <= 0: // overdue: this pass could not do it, retry at Resync's pace
			return m.opt.Resync, m.opt.Resync
		case until <= m.opt.Resync:
			return until, m.opt.Resync
		default:
			wait = min(wait, until)
		}
	}
	return wait, NextIdle(idle, m.opt.IdleResync)
}

// dueAt asks for a pass by t at the latest though nothing watched changes.
func (m *Manager) dueAt(t time.Time) {
	if m.due.IsZero() || t.Before(m.due) {
		m.due = t
	}
}

// dueSoon asks for the next pass within Resync: work this one left that a
// later pass may finish without a change to the store.
func (m *Manager) dueSoon() { m.dueAt(m.opt.Clock().Add(m.opt.Resync)) }

// cacheCheck is how often the cache is compared with the store (keys and
// revisions only, see cache.check): the watch makes it current, the
// check makes sure of it, and a difference lists everything again.
const cacheCheck = time.Minute

// cacheLag bounds how long a pass waits for the cache to show this
// process's own last write before it reads the store instead. A cache
// behind is one whose watch is busy: with status reports streaming in,
// it was often 2 s behind, and each pass then listed and decoded the
// whole store (hundreds of megabytes at 300,000 instances), which made
// the watch fall further behind. The watch catches up by itself, and
// follow lists again when it breaks; the list is for a watch stuck.
const cacheLag = 30 * time.Second

// snapshot is one consistent-enough read of everything a pass needs.
type snapshot struct {
	nodes     []*api.Node
	services  []*api.Service
	jobs      []*api.Job
	instances []*api.Instance
	crons     []*api.CronJob

	owned map[ownerID][]*api.Instance
	// lapsed names the nodes a server saw miss a TTL of beats
	// (store.LapsedNodesAt).
	lapsed map[string]bool
	// onDead holds, by node, where in instances those of the nodes without
	// a heartbeat lease, or without a node object, are; nil when not
	// known (see deadNodes).
	onDead map[string][]int
	// changed holds the owners whose instances changed since the
	// snapshot before (the cache's); nil when any may have.
	changed map[ownerID]bool
	// counted says unbound counts the instances (the cache's tally)
	// bound to no node, not ended. Controllers that change instances in
	// the pass leave it as it was, so it may count more than there are,
	// never fewer: it only says when a look at every instance would find
	// nothing.
	counted bool
	unbound int
	// ownerOf numbers each instance's owner, in owners, as the cache
	// numbered them: grouping by a number from a dense list spares a look
	// into each of 300,000 instances. Nil when not known; of no use once
	// a controller touched an instance (the list changed).
	ownerOf []int32
	owners  []ownerID
	touched bool
	// grouped, when not nil, groups instances (lent by the cache) by
	// owner once for every snapshot that shares them.
	grouped *grouped
	// nodeGen names the nodes as the cache held them: two snapshots of
	// one nodeGen hold the same nodes, unchanged. Zero when not known.
	// liveGen does so for the heartbeat leases (live) and lapsed.
	nodeGen, liveGen int64
	// lent says nodes and instances are the cache's, shared with other
	// snapshots: setNode and setInstance copy them before the first
	// change.
	lent, nodesOwn, instancesOwn bool
	// edits counts the changes controllers made to nodes and instances
	// in the snapshot, so that the scheduler's view (schedView) knows it
	// saw them all.
	edits int
}

// setNode puts n at i in sn.nodes, which it copies first if lent.
func (sn *snapshot) setNode(i int, n *api.Node) {
	if sn.lent && !sn.nodesOwn {
		sn.nodes, sn.nodesOwn = slices.Clone(sn.nodes), true
	}
	sn.nodes[i] = n
	sn.edits++
}

// setInstance puts in at i in sn.instances, which it copies first if
// lent.
func (sn *snapshot) setInstance(i int, in *api.Instance) {
	if sn.lent && !sn.instancesOwn {
		sn.instances, sn.instancesOwn = slices.Clone(sn.instances), true
	}
	sn.instances[i] = in
	sn.edits++
}

// touch notes that a controller changed in in this snapshot, for the
// controllers after it.
func (sn *snapshot) touch(in *api.Instance) {
	sn.touched = true
	sn.edits++
	if sn.changed != nil {
		sn.changed[instanceOwner(in)] = true
	}
}

// byOwner groups the instances by owner, once the node and drain
// controllers are done with them.
func (sn *snapshot) byOwner() map[ownerID][]*api.Instance {
	switch {
	case sn.owned != nil:
	case !sn.touched && sn.grouped != nil && !sn.instancesOwn && len(sn.ownerOf) == len(sn.instances):
		g := sn.grouped
		g.once.Do(func() { g.owned = byOwnerNumber(sn.instances, sn.ownerOf, sn.owners) })
		sn.owned = g.owned
	case !sn.touched && sn.ownerOf != nil && len(sn.ownerOf) == len(sn.instances):
		sn.owned = byOwnerNumber(sn.instances, sn.ownerOf, sn.owners)
	default:
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
		m.dueSoon()
	}
	sn, err := m.list(ctx)
	if err != nil {
		return nil, nil, err
	}
	live, err := m.s.LiveNodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	if sn.lapsed, err = m.s.LapsedNodesAt(ctx, 0); err != nil {
		return nil, nil, err
	}
	return sn, live, nil
}

func (m *Manager) list(ctx context.Context) (*snapshot, error) {
	var sn snapshot
	// Five lists at once: each is a round trip to etcd, and a pass waits for all.
	var wg sync.WaitGroup
	errs := make([]error, 5)
	wg.Go(func() { sn.nodes, _, errs[0] = store.List[api.Node](ctx, m.s, "") })
	wg.Go(func() { sn.services, _, errs[1] = store.List[api.Service](ctx, m.s, "") })
	wg.Go(func() { sn.jobs, _, errs[2] = store.List[api.Job](ctx, m.s, "") })
	wg.Go(func() { sn.instances, _, errs[3] = store.List[api.Instance](ctx, m.s, "") })
	wg.Go(func() { sn.crons, _, errs[4] = store.List[api.CronJob](ctx, m.s, "") })
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
	m.due = time.Time{}
	sn, live, err := m.read(ctx)
	if err != nil {
		return err
	}
	return m.pass(ctx, sn, live)
}

// pass runs every controller over one snapshot and the live nodes.
func (m *Manager) pass(ctx context.Context, sn *snapshot, live map[string]bool) error {
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
	m.updateView(sn)
	return errors.Join(errs...)
}

// ownerID names an owner by its UID too: a service removed and made again
// under the same name must not adopt the old one's instances.
type ownerID struct {
	kind          api.Kind
	ns, name, uid string
}

func byOwner(insts []*api.Instance) map[ownerID][]*api.Instance {
	out := make(map[ownerID][]*api.Instance)
	// Instances come by name, so an owner's mostly follow one another:
	// each run of them is looked up once, not each instance (hashing an
	// owner's four strings for each of 300,000 instances was a good part
	// of a pass), and an owner's that come in one run are that part of
	// insts, not a copy (appending them one by one was most of what was
	// left). Its capacity ends with the run, so that an append copies.
	start := 0
	for i := 1; i <= len(insts); i++ {
		if i < len(insts) && sameOwner(insts[i], insts[start]) {
			continue
		}
		k := instanceOwner(insts[start])
		if prev, ok := out[k]; ok {
			out[k] = append(prev, insts[start:i]...)
		} else {
			out[k] = insts[start:i:i]
		}
		start = i
	}
	return out
}

// byOwnerNumber is byOwner with each instance's owner numbered in
// ownerOf, which names an entry of owners.
func byOwnerNumber(insts []*api.Instance, ownerOf []int32, owners []ownerID) map[ownerID][]*api.Instance {
	out := make(map[ownerID][]*api.Instance)
	start := 0
	for i := 1; i <= len(insts); i++ {
		if i < len(insts) && ownerOf[i] == ownerOf[start] {
			continue
		}
		k := owners[ownerOf[start]]
		if prev, ok := out[k]; ok {
			out[k] = append(prev, insts[start:i]...)
		} else {
			out[k] = insts[start:i:i]
		}
		start = i
	}
	return out
}

// sameOwner says whether a and b have one owner, as instanceOwner tells.
func sameOwner(a, b *api.Instance) bool {
	oa, ob := &a.Spec.Owner, &b.Spec.Owner
	return oa.UID == ob.UID && oa.Name == ob.Name && oa.Kind == ob.Kind && a.Metadata.Namespace == b.Metadata.Namespace
}

func instanceOwner(in *api.Instance) ownerID {
	o := in.Spec.Owner
	return ownerID{o.Kind, in.Metadata.Namespace, o.Name, o.UID}
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

// instanceRef names an instance.
type instanceRef struct{ ns, name string }

// deleteInstances removes instances, as many to a transaction as etcd
// takes whatever their services, a few transactions at once: nodes lost
// with a few instances of each of a thousand services left a thousand
// services with a few to delete, which were a transaction each. A batch
// that fails (one was gone already) goes one by one.
func (m *Manager) deleteInstances(ctx context.Context, refs []instanceRef) error {
	batches := slices.Collect(slices.Chunk(refs, m.s.BindBatch()))
	return inFlight(len(batches), func(i int) error {
		batch := batches[i]
		if len(batch) > 1 {
			t := m.s.Txn()
			for _, r := range batch {
				t.Delete(api.KindInstance, r.ns, r.name, 0)
			}
			if t.Commit(ctx) == nil {
				return nil
			}
		}
		var errs []error
		for _, r := range batch {
			if err := m.s.Delete(ctx, api.KindInstance, r.ns, r.name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// ownerLabels are the labels of owner's instances, which may share one
// map: nothing changes an instance's labels in place.
func ownerLabels(owner api.Metadata, kind api.Kind) map[string]string {
	return map[string]string{"berth.owner": owner.Name, "berth.owner-kind": string(kind)}
}

// newInstance is an instance of owner, labelled with labels (its
// ownerLabels; made afresh when nil).
func (m *Manager) newInstance(owner api.Metadata, kind api.Kind, labels map[string]string, t api.Template, p api.Placement, prio int, hash string, index, attempt int, env map[string]string) *api.Instance {
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
	if labels == nil {
		labels = ownerLabels(owner, kind)
	}
	return &api.Instance{
		Metadata: api.Metadata{Namespace: owner.Namespace, Name: name, Labels: labels},
		Spec: api.InstanceSpec{Template: &t, Owner: api.Owner{Kind: kind, Name: owner.Name, UID: owner.UID},
			Placement: p, Index: index, Attempt: attempt, SpecHash: hash, Priority: prio},
		Status: api.InstanceStatus{Phase: api.PhasePending},
	}
}

func (m *Manager) event(ctx context.Context, obj api.Object, typ api.EventType, reason, msg string) {
	md := obj.GetMetadata()
	ev := &api.Event{Object: api.ObjectRef{Kind: obj.GetKind(), Namespace: md.Namespace, Name: md.Name},
		Type: typ, Reason: reason, Message: msg, Source: "controller"}
	if err := m.s.RecordEvent(ctx, ev); err != nil && ctx.Err() == nil {
		m.log.Warn("record event", "err", err)
	}
}

// deleteOrphans removes the instances of owners of kind that are not
// live any more (the service or job was removed).
func (m *Manager) deleteOrphans(ctx context.Context, kind api.Kind, owned map[ownerID][]*api.Instance, live map[ownerID]bool) error {
	var errs []error
	for key, insts := range owned {
		if live[key] || len(insts) == 0 || insts[0].Spec.Owner.Kind != kind {
			continue
		}
		for _, in := range insts {
			if err := m.s.Delete(ctx, api.KindInstance, in.Metadata.Namespace, in.Metadata.Name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
