package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// cache mirrors what a pass reads (nodes, services, jobs, instances, cron
// jobs and the held heartbeat leases): listed once, then kept current by a single
// watch on the whole store. A pass then costs no reads, which matters
// when it runs for every change among thousands of objects.
//
// Passes get the cached objects themselves, read-only: one that changes
// an object copies it first (see own), and never changes the maps and
// slices a copy shares with the cache.
type cache struct {
	s *store.Store

	mu    sync.Mutex
	rev   int64 // every change up to here is applied
	ready bool
	objs  map[api.Kind]map[objID]api.Object
	// order holds, by kind, the cached objects in the order a pass reads
	// them (namespace, then name); the keys that come and go are noted
	// for the next snapshot to merge in, and a changed object takes its
	// place. Most changes are statuses: a snapshot then copies the list
	// instead of sorting every object again, which at 20,000 instances
	// was a fifth of an idle server's CPU, or looking each one up by its
	// key, which was most of what was left of a snapshot.
	order  map[api.Kind]*ordered
	leases map[string]bool
	lapsed map[string]bool // store.LapsedNodesAt
	// byNode holds the instances bound to each node, so that
	// a snapshot finds those of the nodes without a lease, or gone, without
	// looking through every instance.
	byNode  map[string]map[*api.Instance]struct{}
	advance chan struct{} // closed and replaced whenever rev moves
	shared  *shared
	// changed holds the owners whose instances came, went or changed
	// since the last snapshot; all says every owner is to be looked at
	// (after a list).
	changed map[ownerID]bool
	all     bool
	tally   tally
	// owners numbers the instances' owners for the order's ownerOf
	// (see snapshot.ownerOf): only ever appended to, so that the
	// snapshots already out keep their view; afresh with each list.
	owners   []ownerID
	ownerNum map[ownerID]int32
	// nodeGen moves whenever a node comes, goes or changes (see
	// snapshot.nodeGen).
	nodeGen int64
	// checked counts the checks that found the cache as the store holds
	// it (see check).
	checked int
	// why holds what changed since the last takeWhy.
	why causes
	// lent says a snapshot holds leases and lapsed: they are copied
	// before they change, not with every snapshot (15,000 leases copied
	// for each pass were a good part of a settled server's CPU).
	lent bool
	// liveGen moves whenever leases or lapsed change, bindGen whenever
	// a node gets its first bound instance or loses its last; with
	// nodeGen they say when dead (the nodes with instances and without
	// a lease or a node object) must be worked out again.
	liveGen, bindGen int64
	dead             []string
	deadAt           [3]int64
}

// tally counts the cached instances by node and by phase, kept as they
// change: a pass asks whether any instance is on a node gone or stopped,
// or bound to none, and a scrape how many are in each phase, without
// going over every instance (at 300,000 of them, the node controller's
// look at each was most of a pass that had a few services to see to).
type tally struct {
	unbound int               // instances to place: bound to no node, not ended
	phases  map[api.Phase]int // by status.phase as stored
}

func newTally() tally { return tally{phases: map[api.Phase]int{}} }

// add counts in once more (d 1) or once less (d -1).
func (t *tally) add(in *api.Instance, d int) {
	if in.Spec.Node == "" && !phaseOf(in).Terminal() {
		t.unbound += d
	}
	if t.phases[in.Status.Phase] += d; t.phases[in.Status.Phase] <= 0 {
		delete(t.phases, in.Status.Phase)
	}
}

var cachedKinds = []api.Kind{api.KindNode, api.KindService, api.KindJob, api.KindInstance, api.KindCronJob}

func newCache(s *store.Store) *cache {
	return &cache{s: s, advance: make(chan struct{})}
}

func objKey(ns, name string) string { return ns + "/" + name }

// objID names a cached object by the namespace and name it holds
// itself: a key made of them costs nothing, where "namespace/name"
// cost an allocation for every object listed and every change applied,
// and its bytes for as long as the object was cached.
type objID struct{ ns, name string }

func idOf(o api.Object) objID {
	md := o.GetMetadata()
	return objID{md.Namespace, md.Name}
}

func (id objID) String() string { return objKey(id.ns, id.name) }

// fill lists everything afresh, as of one revision, and returns it.
func (c *cache) fill(ctx context.Context) (int64, error) {
	rev, err := c.s.Revision(ctx)
	if err != nil {
		return 0, err
	}
	errs := make([]error, len(cachedKinds)+2)
	lists := make([][]api.Object, len(cachedKinds))
	// Afresh with each list: what no instance holds any more goes.
	sh := newShared()
	var wg sync.WaitGroup
	for i, k := range cachedKinds {
		wg.Go(func() {
			_, errs[i] = c.s.ListFuncAt(ctx, k, "", rev, func(value []byte, modRev int64) error {
				obj, err := sh.decode(k, value, modRev)
				if err != nil {
					return err
				}
				lists[i] = append(lists[i], obj)
				return nil
			})
		})
	}
	var leases, lapsed map[string]bool
	wg.Go(func() { leases, _, errs[len(cachedKinds)] = c.s.LiveNodesAt(ctx, rev) })
	wg.Go(func() { lapsed, errs[len(cachedKinds)+1] = c.s.LapsedNodesAt(ctx, rev) })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	objs := map[api.Kind]map[objID]api.Object{}
	t := newTally()
	byNode := map[string]map[*api.Instance]struct{}{}
	for i, k := range cachedKinds {
		m := make(map[objID]api.Object, len(lists[i]))
		for _, o := range lists[i] {
			key := idOf(o)
			m[key] = o
			if in, ok := o.(*api.Instance); ok {
				t.add(in, 1)
				bind(byNode, in)
			}
		}
		objs[k] = m
	}
	c.mu.Lock()
	c.objs, c.leases, c.lapsed, c.byNode, c.rev, c.ready, c.shared, c.tally = objs, leases, lapsed, byNode, rev, true, sh, t
	c.changed, c.all = map[ownerID]bool{}, true
	c.order = map[api.Kind]*ordered{}
	c.owners, c.ownerNum = nil, map[ownerID]int32{}
	c.nodeGen++
	c.liveGen++
	c.bindGen++
	c.lent = false
	c.why |= causeList
	c.bump()
	c.mu.Unlock()
	return rev, nil
}

// bump wakes waiters; c.mu is held.
func (c *cache) bump() {
	close(c.advance)
	c.advance = make(chan struct{})
}

// apply puts one watch batch in and says whether it changed anything a
// pass looks at.
func (c *cache) apply(b store.ChangeBatch) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := false
	for _, ch := range b.Changes {
		changed = true
		if ch.Lease != "" || ch.Lapsed != "" {
			c.unlend()
		}
		if ch.Lease != "" {
			c.why |= causeLease
			if ch.Type == store.Deleted {
				delete(c.leases, ch.Lease)
			} else {
				c.leases[ch.Lease] = true
			}
			continue
		}
		if ch.Lapsed != "" {
			c.why |= causeLapsed
			if ch.Type == store.Deleted {
				delete(c.lapsed, ch.Lapsed)
			} else {
				c.lapsed[ch.Lapsed] = true
			}
			continue
		}
		c.why |= causeOf(ch.Kind)
		if ch.Kind == api.KindNode {
			c.nodeGen++
		}
		m := c.objs[ch.Kind]
		k := objID{ch.Namespace, ch.Name}
		if ch.Object != nil {
			k = idOf(ch.Object)
		}
		old, had := m[k]
		if in, ok := old.(*api.Instance); ok {
			c.changed[instanceOwner(in)] = true
			c.tally.add(in, -1)
			if unbind(c.byNode, in) {
				c.bindGen++
			}
		}
		o := c.order[ch.Kind]
		if ch.Type == store.Deleted {
			if had {
				delete(m, k)
				if o != nil && !o.drop(k) {
					delete(c.order, ch.Kind)
				}
			}
			continue
		}
		switch {
		case o == nil:
		case !had:
			if !o.add(k) {
				delete(c.order, ch.Kind)
			}
		default:
			c.replace(o, ch.Kind, k, ch.Object)
		}
		if in, ok := ch.Object.(*api.Instance); ok {
			c.changed[instanceOwner(in)] = true
			c.tally.add(in, 1)
			if bind(c.byNode, in) {
				c.bindGen++
			}
		}
		m[k] = ch.Object
	}
	if b.Revision > c.rev {
		c.rev = b.Revision
		c.bump()
	}
	return changed
}

// replace puts obj, a cached object changed, in its place in o, kind's
// order; c.mu is held.
func (c *cache) replace(o *ordered, kind api.Kind, id objID, obj api.Object) {
	i, ok := o.find(id)
	if !ok {
		// One that came since the order was made is merged in, as the
		// cache holds it; none other is missing but the order is made
		// again.
		if !o.stale {
			delete(c.order, kind)
		}
		return
	}
	o.objs[i], o.out, o.grouped = obj, nil, nil
	// An owner changed (never, as the API goes) numbers the order
	// afresh: a snapshot's ownerOf is never written.
	if in, ok := obj.(*api.Instance); ok && c.ownerNumber(in) != o.ownerOf[i] {
		delete(c.order, kind)
	}
}

// takeWhy returns what changed since it was last called.
func (c *cache) takeWhy() causes {
	c.mu.Lock()
	defer c.mu.Unlock()
	why := c.why
	c.why = 0
	return why
}

// waitFor waits until the cache has applied revision rev.
func (c *cache) waitFor(ctx context.Context, rev int64, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		ok, cur, adv := c.ready && c.rev >= rev, c.rev, c.advance
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-adv:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("the controller's cache is at revision %d, not yet %d after %v", cur, rev, timeout)
		}
	}
}

// bind notes in as bound to its node in byNode, and says whether it is
// the node's first. The instances themselves are held, not their keys:
// a pointer is a quarter of a key's bytes, and the one cached is the
// one a change replaces.
func bind(byNode map[string]map[*api.Instance]struct{}, in *api.Instance) bool {
	node := in.Spec.Node
	if node == "" {
		return false
	}
	ins := byNode[node]
	first := ins == nil
	if first {
		ins = map[*api.Instance]struct{}{}
		byNode[node] = ins
	}
	ins[in] = struct{}{}
	return first
}

// unbind undoes bind, and says whether in was its node's last.
func unbind(byNode map[string]map[*api.Instance]struct{}, in *api.Instance) bool {
	if ins := byNode[in.Spec.Node]; ins != nil {
		delete(ins, in)
		if len(ins) == 0 {
			delete(byNode, in.Spec.Node)
			return true
		}
	}
	return false
}

// unlend makes leases and lapsed the cache's own again before they
// change, and notes the change; c.mu is held.
func (c *cache) unlend() {
	c.liveGen++
	if c.lent {
		c.leases, c.lapsed, c.lent = maps.Clone(c.leases), maps.Clone(c.lapsed), false
	}
}

// deadNodes names the nodes with instances bound and without a lease or
// a node object, worked out again only when one of these changed; c.mu
// is held.
func (c *cache) deadNodes() []string {
	at := [3]int64{c.nodeGen, c.liveGen, c.bindGen}
	if c.dead != nil && c.deadAt == at {
		return c.dead
	}
	nodes := c.objs[api.KindNode]
	dead := []string{}
	for node := range c.byNode {
		if _, ok := nodes[objID{"", node}]; !ok || !c.leases[node] {
			dead = append(dead, node)
		}
	}
	c.dead, c.deadAt = dead, at
	return dead
}

// snapshot copies out what a pass reads, in key order as a list would give.
func (c *cache) snapshot() (*snapshot, map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sn snapshot
	sn.nodes = copyOut[api.Node](c, api.KindNode)
	sn.services = copyOut[api.Service](c, api.KindService)
	sn.jobs = copyOut[api.Job](c, api.KindJob)
	sn.instances = copyOut[api.Instance](c, api.KindInstance)
	o := c.order[api.KindInstance]
	sn.ownerOf, sn.owners, sn.grouped = o.ownerOf, c.owners, o.grouped
	sn.crons = copyOut[api.CronJob](c, api.KindCronJob)
	if !c.all {
		sn.changed = c.changed
	}
	sn.counted, sn.unbound = true, c.tally.unbound
	sn.nodeGen, sn.liveGen = c.nodeGen, c.liveGen
	sn.lent = true
	c.changed, c.all = map[ownerID]bool{}, false
	// Lent, read-only: apply copies them before it changes them.
	live := c.leases
	sn.lapsed, c.lent = c.lapsed, true
	// The instances of the nodes without a lease or gone, by their place
	// in sn.instances, which copyOut took in the order's.
	sn.onDead = map[string][]int{}
	for _, node := range c.deadNodes() {
		ins := c.byNode[node]
		idx := make([]int, 0, len(ins))
		for in := range ins {
			i, _ := o.find(idOf(in)) // every bound instance is in the order
			idx = append(idx, i)
		}
		slices.Sort(idx)
		sn.onDead[node] = idx
	}
	return &sn, live
}

// copyOut is kind k's cached objects in order, lent to a snapshot: the
// same slice for every snapshot until one of them changes (see
// ordered.out).
func copyOut[T any, P interface {
	*T
	api.Object
}](c *cache, k api.Kind) []P {
	o, ok := c.order[k]
	switch {
	case !ok:
		o = c.sorted(k)
	case o.stale:
		o = c.merged(k, o)
	}
	if out, ok := o.out.([]P); ok {
		return out
	}
	out := make([]P, len(o.objs))
	for i, obj := range o.objs {
		out[i] = obj.(P)
	}
	o.out, o.grouped = out, &grouped{}
	return out
}

// sorted puts kind k's cached objects in order afresh; c.mu is held.
func (c *cache) sorted(k api.Kind) *ordered {
	m := c.objs[k]
	o := &ordered{objs: make([]api.Object, 0, len(m))}
	for _, obj := range m {
		o.objs = append(o.objs, obj)
	}
	slices.SortFunc(o.objs, func(a, b api.Object) int { return compareIDs(idOf(a), idOf(b)) })
	if k == api.KindInstance {
		o.ownerOf = make([]int32, len(o.objs))
		for i, obj := range o.objs {
			o.ownerOf[i] = c.ownerNumber(obj.(*api.Instance))
		}
	}
	c.order[k] = o
	return o
}

// merged is o, which objects came to or went from since it was made,
// in order again: those that stay keep their place (and their owner's
// number: an owner never changes), copied a run at a time, and those
// that came are sorted alone and put where they go. Sorting every
// object again (a pass's first look after any came or went) took half
// a second of CPU at 300,000 instances, and passes run back to back
// while a service scales. c.mu is held.
func (c *cache) merged(k api.Kind, o *ordered) *ordered {
	m := c.objs[k]
	slices.SortFunc(o.added, compareIDs)
	came := make([]api.Object, 0, len(o.added))
	for i, id := range o.added {
		if i > 0 && id == o.added[i-1] {
			continue // came, went and came again
		}
		if obj, ok := m[id]; ok {
			came = append(came, obj)
		}
	}
	slices.Sort(o.gone)
	n := &ordered{objs: make([]api.Object, 0, len(m))}
	if o.ownerOf != nil {
		n.ownerOf = make([]int32, 0, len(m))
	}
	next, g := 0, 0 // into o.objs and o.gone
	// keep copies o.objs up to end, but for those gone.
	keep := func(end int) {
		for next < end {
			for g < len(o.gone) && int(o.gone[g]) < next {
				g++
			}
			stop := end
			if g < len(o.gone) && int(o.gone[g]) < end {
				stop = int(o.gone[g])
			}
			n.objs = append(n.objs, o.objs[next:stop]...)
			if n.ownerOf != nil {
				n.ownerOf = append(n.ownerOf, o.ownerOf[next:stop]...)
			}
			next = stop
			if stop < end {
				next++ // gone
			}
		}
	}
	for _, obj := range came {
		// One that went and came again is found at its old place,
		// which is among those gone.
		at, _ := o.find(idOf(obj))
		keep(at)
		n.objs = append(n.objs, obj)
		if n.ownerOf != nil {
			n.ownerOf = append(n.ownerOf, c.ownerNumber(obj.(*api.Instance)))
		}
	}
	keep(len(o.objs))
	c.order[k] = n
	return n
}

func compareIDs(a, b objID) int {
	return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name))
}

// ordered is one kind's cached objects in a pass's order; for
// instances, the number of each one's owner (see cache.owners).
type ordered struct {
	objs    []api.Object
	ownerOf []int32
	// out is objs as the typed slice snapshots get, until one of objs
	// changes: never written once made, as snapshots hold it. A settled
	// cluster's passes then copy nothing (at 300,000 instances, the
	// copy was most of what a pass that found nothing to do cost).
	out any
	// grouped holds out's instances by owner, once a pass has grouped
	// them, for the passes after it.
	grouped *grouped
	// stale says objects came or went since objs was put in order:
	// added names those that came, gone is where in objs those that went
	// are (see merged).
	stale bool
	added []objID
	gone  []int32
}

// add notes that the object id names came, and says whether o is still
// worth merging into (see worth).
func (o *ordered) add(id objID) bool {
	o.added, o.stale = append(o.added, id), true
	return o.worth()
}

// drop notes that the object id names went, and says whether o is still
// worth merging into (see worth).
func (o *ordered) drop(id objID) bool {
	if i, ok := o.find(id); ok {
		o.gone = append(o.gone, int32(i))
	}
	o.stale = true
	return o.worth()
}

// worth says whether fewer objects came and went than o holds: with
// more, a sort afresh costs as little, and the notes of an order no
// snapshot takes for a while (passes reading the store while the cache
// is behind) must not grow without end.
func (o *ordered) worth() bool {
	return len(o.added)+len(o.gone) <= len(o.objs)+64
}

// find is where the object id names is in o.objs, found by halves as
// they are in order: a map from key to place cost as much again as the
// keys themselves, made afresh whenever an object came or went.
func (o *ordered) find(id objID) (int, bool) {
	return slices.BinarySearchFunc(o.objs, id, func(obj api.Object, id objID) int {
		md := obj.GetMetadata()
		return cmp.Or(strings.Compare(md.Namespace, id.ns), strings.Compare(md.Name, id.name))
	})
}

// grouped is a lent instance list grouped by owner (snapshot.byOwner),
// made once for all the snapshots that share the list.
type grouped struct {
	once  sync.Once
	owned map[ownerID][]*api.Instance
}

// ownerNumber is in's owner's number in c.owners, given now if it has
// none; c.mu is held.
func (c *cache) ownerNumber(in *api.Instance) int32 {
	k := instanceOwner(in)
	n, ok := c.ownerNum[k]
	if !ok {
		n = int32(len(c.owners))
		c.owners = append(c.owners, k)
		c.ownerNum[k] = n
	}
	return n
}

// instancePhases counts the cached instances by phase, as stored; false
// until the cache has listed the store.
func (c *cache) instancePhases() (map[api.Phase]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready {
		return nil, false
	}
	return maps.Clone(c.tally.phases), true
}

// own returns a copy of obj for a pass to change: snapshot objects may
// be the cache's own. An instance's copy has a template of its own too:
// the cached one is every instance's of its service (see shared).
func own[T any](obj *T) *T {
	cp := *obj
	if in, ok := any(&cp).(*api.Instance); ok && in.Spec.Template != nil {
		t := *in.Spec.Template
		in.Spec.Template = &t
	}
	return &cp
}

// follow keeps the cache current until ctx ends, listing again whenever
// the watch breaks or a check (every check interval) finds the cache
// differing from the store, and calls changed after each batch that
// changed something.
func (c *cache) follow(ctx context.Context, log interface{ Warn(string, ...any) }, check time.Duration, changed func()) {
	for ctx.Err() == nil {
		from, err := c.fill(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("controller cache: list", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		changed()
		c.watch(ctx, log, from, check, changed)
	}
}

// watch applies the store's changes from revision from+1 until the watch
// breaks or a check finds the cache wrong.
func (c *cache) watch(ctx context.Context, log interface{ Warn(string, ...any) }, from int64, check time.Duration, changed func()) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	sh := c.shared
	c.mu.Unlock()
	ch := c.s.WatchChangesDecoded(wctx, from+1, sh.decode, cachedKinds...)
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case b, ok := <-ch:
			if !ok {
				return
			}
			if b.Err != nil {
				if wctx.Err() == nil {
					log.Warn("controller cache: watch", "err", b.Err)
				}
				return
			}
			if c.apply(b) {
				changed()
			}
		case <-t.C:
			diff, err := c.check(ctx)
			switch {
			case errors.Is(err, errdefs.ErrFailedPrecondition):
				log.Warn("controller cache: check", "err", err)
				return // compacted past the cache: list again
			case err != nil:
				if ctx.Err() == nil {
					log.Warn("controller cache: check", "err", err)
				}
			case diff != "":
				log.Warn("controller cache: the watch missed changes; listing again", "diff", diff)
				return
			default:
				c.mu.Lock()
				c.checked++
				c.mu.Unlock()
			}
		}
	}
}

// check compares the cache with the store at the cache's revision, keys
// and revisions only, and says how they differ ("" when they do not).
// It stands behind the watch: one that silently missed a change, which
// etcd's watch guarantees against, or a change this cache misapplied,
// leaves an object missing, extra or at another revision. A list of
// everything, decoded, did the same every 5 minutes, and was then most of
// an idle server's CPU: at 100,000 instances a list takes 2.5 s of CPU
// and sets every controller to look at every owner, a check 0.1 s
// (BenchmarkCacheCheck).
//
// Only follow applies changes, and it waits on this: the cache stays at
// one revision throughout, which every read is made at.
func (c *cache) check(ctx context.Context) (string, error) {
	c.mu.Lock()
	rev, objs, leases, lapsed := c.rev, c.objs, c.leases, c.lapsed
	c.mu.Unlock()
	var diffs []string
	note := func(format string, args ...any) {
		if len(diffs) < 5 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	for _, k := range cachedKinds {
		m, n := objs[k], 0
		err := c.s.RevisionsAt(ctx, k, rev, func(ns, name string, modRev int64) {
			n++
			c.mu.Lock()
			o, ok := m[objID{ns, name}]
			c.mu.Unlock()
			switch {
			case !ok:
				note("%s %s missing", k, objKey(ns, name))
			case o.GetMetadata().Revision != modRev:
				note("%s %s at revision %d, stored at %d", k, objKey(ns, name), o.GetMetadata().Revision, modRev)
			}
		})
		if err != nil {
			return "", fmt.Errorf("at revision %d: %w", rev, err)
		}
		c.mu.Lock()
		held := len(m)
		c.mu.Unlock()
		if held > n {
			note("%d %s cached, %d stored", held, k.Plural(), n)
		}
	}
	sets := []struct {
		what   string
		cached map[string]bool
		read   func(context.Context, int64) (map[string]bool, error)
	}{
		{"node heartbeat leases", leases, func(ctx context.Context, rev int64) (map[string]bool, error) {
			live, _, err := c.s.LiveNodesAt(ctx, rev)
			return live, err
		}},
		{"lapsed nodes", lapsed, c.s.LapsedNodesAt},
	}
	for _, set := range sets {
		stored, err := set.read(ctx, rev)
		if err != nil {
			return "", fmt.Errorf("at revision %d: %w", rev, err)
		}
		c.mu.Lock()
		same := maps.Equal(stored, set.cached)
		c.mu.Unlock()
		if !same {
			note("%s differ", set.what)
		}
	}
	return strings.Join(diffs, "; "), nil
}
