package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// The assignment hub serves every node's assignment watch on this server
// from one etcd watch of all assignments, split by the node in the key.
// An etcd watch for each node cost etcd a watcher to match and send to
// for each (13% of a server's CPU at 15,000 nodes), and the process a
// goroutine in the client and one in watchPrefix for each. The hub turns
// each event into its wire form once, keeps the latest events (the
// history) for watches that start a little behind it, and queues each
// node's events for its watches; a watch it cannot serve exactly (one
// from before its history) gets an etcd watch of its own, as before.

// Limits of the hub's history: past either, its oldest events go.
const (
	hubHistoryEvents = 100_000
	hubHistoryBytes  = 64 << 20
)

// Limits of what one feed holds unsent: past either, the watch is ended
// with an error and its node lists again. A node's agent that reads
// slower than its events come must not hold the hub, other nodes, or
// the server's memory.
const (
	maxFeedEvents = 65_536
	maxFeedBytes  = 64 << 20
)

// feedKeep is the most room for events a feed keeps once taken: a
// node's feed is idle most of its life, and room for the burst it last
// had (a few dozen events, 80 bytes each) was kept by every feed of
// 15,000, 4 KB each, and as much again by the watches that take them.
const feedKeep = 8

// Feed is a node's assignment watch. Its events come in revision order;
// the last one taken may carry Err, which ends it. The feed closes when
// the context it was made with is done.
type Feed struct {
	hub   *assignHub // nil for a feed of an etcd watch of its own
	node  string
	from  int64 // events before this revision are not the feed's
	ready chan struct{}

	mu        sync.Mutex
	queue     []WatchEvent
	bytes     int
	ended     bool // an Err event is queued last, or the feed is closed
	maxEvents int
	maxBytes  int
}

func newFeed(node string, from int64, maxEvents, maxBytes int) *Feed {
	return &Feed{node: node, from: from, ready: make(chan struct{}, 1), maxEvents: maxEvents, maxBytes: maxBytes}
}

// Ready receives when Take has events to give.
func (f *Feed) Ready() <-chan struct{} { return f.ready }

// Take appends the feed's queued events to dst and returns it; an event
// with Err, if any, is the last the feed gives.
func (f *Feed) Take(dst []WatchEvent) []WatchEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	dst = append(dst, f.queue...)
	clear(f.queue)
	f.queue, f.bytes = f.queue[:0], 0
	if cap(f.queue) > feedKeep {
		f.queue = nil // a burst's room is not kept for the watch's life
	}
	return dst
}

// push queues ev, or ends the feed with an error when it holds too much
// already; false when the feed has ended.
func (f *Feed) push(ev WatchEvent) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return false
	}
	if ev.Err == nil && (len(f.queue) >= f.maxEvents || f.bytes+len(ev.Raw) > f.maxBytes) {
		// What is queued is dropped: the node lists everything again.
		clear(f.queue)
		f.queue, f.bytes = f.queue[:0], 0
		ev = WatchEvent{Err: fmt.Errorf("watch of node %q's assignments: %w: it fell behind by more than %d events or %d bytes unsent (store.maxFeedEvents, store.maxFeedBytes), list again",
			f.node, errdefs.ErrUnavailable, f.maxEvents, f.maxBytes)}
	}
	f.queue = append(f.queue, ev)
	f.bytes += len(ev.Raw)
	if ev.Err != nil {
		f.ended = true
	}
	select {
	case f.ready <- struct{}{}:
	default:
	}
	return !f.ended
}

// end ends the feed with err unless it has ended already.
func (f *Feed) end(err error) { f.push(WatchEvent{Err: err}) }

// close stops the feed taking events, without a last one.
func (f *Feed) close() {
	f.mu.Lock()
	f.ended = true
	f.mu.Unlock()
}

// assignHub is a store's one watch of all nodes' assignments. Its
// goroutine starts with the first assignment watch (ensure) and stops
// with the store.
type assignHub struct {
	s      *Store
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// live: every event of revision floor or later is in the history or
	// is still to come from the hub's etcd watch, which resumes at next.
	// While not live, watches get etcd watches of their own.
	live  bool
	floor int64
	next  int64
	// goneLive is closed when the hub goes live, or stops.
	goneLive chan struct{}
	// ring is the history in revision order, from head on; byNode is the
	// same events by node, each node's in the same order.
	ring   []hubEntry
	head   int
	bytes  int
	byNode map[string][]WatchEvent
	subs   map[string][]*Feed
	// Limits, variables so that tests can make them small.
	historyEvents, historyBytes int
	feedEvents, feedBytes       int
	// rewatch, when set, ends the current etcd watch as a failure would
	// (tests break the hub's watch with it).
	rewatch context.CancelFunc
}

type hubEntry struct {
	node string
	rev  int64
	size int
}

// ensure starts the hub unless it runs, and waits for it to be live, a
// while at most: a watch made while it starts or resumes after a failure
// is served by it rather than by an etcd watch of its own.
func (h *assignHub) ensure(ctx context.Context, s *Store) {
	h.begin(s)
	h.mu.Lock()
	live := h.goneLive
	h.mu.Unlock()
	t := time.NewTimer(hubWait)
	defer t.Stop()
	select {
	case <-live:
	case <-t.C:
	case <-ctx.Done():
	}
}

// hubWait is the longest a watch waits for the hub to be live.
const hubWait = 2 * time.Second

// begin starts the hub unless it runs.
func (h *assignHub) begin(s *Store) {
	h.once.Do(func() {
		h.s = s
		h.done = make(chan struct{})
		h.byNode, h.subs = map[string][]WatchEvent{}, map[string][]*Feed{}
		h.historyEvents = cmp.Or(h.historyEvents, hubHistoryEvents)
		h.historyBytes = cmp.Or(h.historyBytes, hubHistoryBytes)
		h.feedEvents = cmp.Or(h.feedEvents, maxFeedEvents)
		h.feedBytes = cmp.Or(h.feedBytes, maxFeedBytes)
		hctx, cancel := context.WithCancel(context.Background())
		h.mu.Lock()
		h.cancel, h.goneLive = cancel, make(chan struct{})
		h.mu.Unlock()
		go h.run(hctx)
	})
}

// stop ends the hub and every feed it serves; for Store.Close.
func (h *assignHub) stop() {
	h.mu.Lock()
	cancel := h.cancel
	h.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-h.done
}

// subscribe makes a feed of node's assignments from revision from (0:
// from now) served by the hub, or returns nil when the hub cannot serve
// it exactly: it is not live, or from is older than its history.
func (h *assignHub) subscribe(ctx context.Context, node string, from int64) *Feed {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.live || (from != 0 && from < h.floor) {
		return nil
	}
	if from == 0 {
		from = h.next
	}
	f := newFeed(node, from, h.feedEvents, h.feedBytes)
	f.hub = h
	for _, ev := range h.byNode[node] {
		if ev.Revision >= from && !f.push(ev) {
			return f // ended already: too much history for one feed
		}
	}
	h.subs[node] = append(h.subs[node], f)
	context.AfterFunc(ctx, func() { h.unsubscribe(f) })
	return f
}

func (h *assignHub) unsubscribe(f *Feed) {
	f.close()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drop(f)
}

// drop forgets f; h.mu is held.
func (h *assignHub) drop(f *Feed) {
	subs := h.subs[f.node]
	for i, g := range subs {
		if g == f {
			subs = append(subs[:i], subs[i+1:]...)
			break
		}
	}
	if len(subs) == 0 {
		delete(h.subs, f.node)
	} else {
		h.subs[f.node] = subs
	}
}

// run keeps the hub's etcd watch going until ctx is done. When the watch
// breaks, the hub resumes it where it stopped, the feeds waiting: they
// lose nothing. When it cannot resume (its revision compacted away, no
// leader, or a resumed watch breaking again before it has worked), every
// feed is ended with an error, so that their nodes list again, and the
// hub retries after a pause; watches meanwhile wait for it a while, then
// get etcd watches of their own.
func (h *assignHub) run(ctx context.Context) {
	defer close(h.done)
	defer func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.setLive(false)
		close(h.goneLive) // none waits for it any more
		h.endAll(fmt.Errorf("watch of assignments: %w: the store is closing", errdefs.ErrUnavailable))
	}()
	prefix := h.s.prefix + "/assign/"
	backoff := 100 * time.Millisecond
	resumable := true // the watch has worked since the hub last resumed
	for ctx.Err() == nil {
		err := h.start(ctx)
		if err == nil {
			err = h.follow(ctx, prefix, &resumable)
		}
		if ctx.Err() != nil {
			return
		}
		if resumable {
			backoff = 100 * time.Millisecond // it worked: this failure is a fresh one
		}
		var c *hubCompacted
		if resumable && !errors.As(err, &c) && !errors.Is(err, rpctypes.ErrNoLeader) && h.positioned() {
			resumable = false
			continue
		}
		h.fail(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// positioned tells whether the hub knows where its watch resumes.
func (h *assignHub) positioned() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.next != 0
}

// start makes the hub live: from the current revision when it has no
// position yet, else from where its watch stopped.
func (h *assignHub) start(ctx context.Context) error {
	h.mu.Lock()
	next := h.next
	h.mu.Unlock()
	if next == 0 {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		// A single key, not the prefix: its revision without counting
		// every assignment.
		r, err := h.s.client.Get(rctx, h.s.prefix+"/assign/")
		cancel()
		if err != nil {
			return fmt.Errorf("watch of assignments: %w", wrapEtcd(err))
		}
		next = r.Header.Revision + 1
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.next == 0 {
		h.floor, h.next = next, next
	}
	h.setLive(true)
	return nil
}

// setLive says whether the hub is live; h.mu is held.
func (h *assignHub) setLive(live bool) {
	switch {
	case live && !h.live:
		close(h.goneLive)
	case !live && h.live:
		h.goneLive = make(chan struct{})
	}
	h.live = live
}

// follow runs the hub's etcd watch from h.next and fans its events out
// until it fails. A watch that answers, or lasts, is worth resuming
// again should it break.
func (h *assignHub) follow(ctx context.Context, prefix string, resumable *bool) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h.mu.Lock()
	from := h.next
	h.rewatch = cancel
	h.mu.Unlock()
	began := time.Now()
	defer func() {
		if time.Since(began) > hubSteady {
			*resumable = true
		}
	}()
	wc := h.s.client.Watch(clientv3.WithRequireLeader(watchStream(wctx, "assignments-hub")), prefix,
		clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(from))
	for resp := range wc {
		if err := resp.Err(); err != nil {
			if resp.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
				return &hubCompacted{from: from, oldest: resp.CompactRevision}
			}
			return fmt.Errorf("watch of assignments: %w: %w", errdefs.ErrUnavailable, err)
		}
		if len(resp.Events) > 0 {
			if err := h.s.fillAssigned(wctx, resp.Events); err != nil {
				return fmt.Errorf("watch of assignments: %w", err)
			}
			*resumable = true
			h.fanOut(prefix, resp.Events)
		}
	}
	return fmt.Errorf("watch of assignments: %w: stream ended", errdefs.ErrUnavailable)
}

// hubSteady is how long the hub's watch must have run for its breaking
// to be taken as a hiccup, resumed with the feeds waiting.
const hubSteady = 10 * time.Second

// hubCompacted is the hub's watch finding the revision it resumes at
// compacted away: what it had not seen is lost, so its history goes.
type hubCompacted struct{ from, oldest int64 }

func (c *hubCompacted) Error() string {
	return fmt.Sprintf("watch of assignments from revision %d: revision compacted (oldest kept is %d)", c.from, c.oldest)
}

// fail ends every feed after the hub's watch failed with err, and takes
// the hub out of service until it resumes. One critical section: a watch
// that subscribed after the feeds were ended would miss what the failure
// lost.
func (h *assignHub) fail(err error) {
	var c *hubCompacted
	if errors.As(err, &c) {
		err = fmt.Errorf("%w: %w: list again", c, errdefs.ErrFailedPrecondition)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setLive(false)
	h.endAll(err)
	if c != nil {
		clear(h.ring)
		h.ring, h.head, h.bytes = h.ring[:0], 0, 0
		h.byNode = map[string][]WatchEvent{}
		// Start again from the oldest revision etcd keeps: a node that
		// lists meanwhile then watches from within the hub's history.
		// With none known, from the current revision.
		h.floor, h.next = c.oldest, c.oldest
	}
}

// endAll ends every feed with err; h.mu is held.
func (h *assignHub) endAll(err error) {
	for _, fs := range h.subs {
		for _, f := range fs {
			f.end(err)
		}
	}
	h.subs = map[string][]*Feed{}
}

// fanOut records events in the history and queues each for its node's
// feeds. Each is turned into its wire form once, for every feed, and
// before the lock, which watches starting wait on.
func (h *assignHub) fanOut(prefix string, events []*clientv3.Event) {
	type nodeEvent struct {
		node string
		ev   WatchEvent
	}
	evs := make([]nodeEvent, 0, len(events))
	for _, e := range events {
		if ev, ok := toEvent(api.KindInstance, e, true); ok {
			node, _, _ := strings.Cut(strings.TrimPrefix(string(e.Kv.Key), prefix), "/")
			evs = append(evs, nodeEvent{node, ev})
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ne := range evs {
		h.record(ne.node, ne.ev)
		subs := h.subs[ne.node]
		for i := 0; i < len(subs); {
			if f := subs[i]; ne.ev.Revision >= f.from && !f.push(ne.ev) {
				h.drop(f)
				subs = h.subs[ne.node]
				continue
			}
			i++
		}
	}
	if len(events) > 0 {
		h.next = max(h.next, events[len(events)-1].Kv.ModRevision+1)
	}
}

// record adds ev to the history, letting the oldest go past its limits;
// h.mu is held.
func (h *assignHub) record(node string, ev WatchEvent) {
	size := len(ev.Raw) + 100 // the event's own fields and the entries
	h.ring = append(h.ring, hubEntry{node: node, rev: ev.Revision, size: size})
	h.byNode[node] = append(h.byNode[node], ev)
	h.bytes += size
	for len(h.ring)-h.head > h.historyEvents || h.bytes > h.historyBytes {
		old := h.ring[h.head]
		h.ring[h.head] = hubEntry{}
		h.head++
		h.bytes -= old.size
		evs := h.byNode[old.node]
		evs[0] = WatchEvent{}
		if evs = evs[1:]; len(evs) == 0 {
			delete(h.byNode, old.node)
		} else {
			h.byNode[old.node] = evs
		}
		// Other events of old's revision may remain, but not all.
		h.floor = max(h.floor, old.rev+1)
	}
	if h.head > 1024 && h.head > len(h.ring)/2 {
		n := copy(h.ring, h.ring[h.head:])
		clear(h.ring[n:])
		h.ring, h.head = h.ring[:n], 0
	}
}
