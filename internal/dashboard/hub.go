package dashboard

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// FlushInterval is how often, at most, the hub sends the changes gathered
// since the last flush: a thousand instances changing at once reach each
// browser as a message or two, not a thousand.
const FlushInterval = 25 * time.Millisecond

// maxEvents bounds the events the hub keeps for pages that open later.
const maxEvents = 500

// change is one object's latest state in a batch; Obj is nil when it is gone.
type change struct {
	Kind string          `json:"kind"`
	Key  string          `json:"key"`
	Obj  json.RawMessage `json:"obj,omitempty"`
}

// hub keeps the cluster's objects as the API's watches report them and
// fans batches of changes out to the browsers' streams. It follows the
// cluster only while a page is open (and idleLinger after the last one
// closes): with none, every instance's every change would still cost the
// server a watch event decoded and encoded twice over, and a copy of
// every object held for nobody.
type hub struct {
	c   *client.Client
	log *slog.Logger

	mu      sync.Mutex
	objs    map[string]map[string]json.RawMessage // kind → key → object
	events  []json.RawMessage
	pending map[string]change // kind/key → latest change since the last flush
	subs    map[chan []byte]struct{}
	wake    chan struct{} // a change waits to be flushed
	opened  chan struct{} // a page subscribed
	stats   *stats        // the charts' figures, see stats.go

	// ctx is run's; nil until it starts (then pages get what is put).
	ctx context.Context
	// stop ends the current following; nil while not following.
	stop context.CancelFunc
	// listed is closed once every kind has been listed since following began.
	listed chan struct{}
	// idleSince is when the last page closed; zero while one is open.
	idleSince time.Time
	// linger is how long following outlasts the last page (idleLinger).
	linger time.Duration
}

// idleLinger is how long the hub keeps following after the last page
// closes: a reload or a second tab does not list everything again.
const idleLinger = 30 * time.Second

// hubKinds is what the hub follows, by the name pages know each by.
var hubKinds = []string{"node", "service", "job", "instance", "event"}

func newHub(c *client.Client, log *slog.Logger) *hub {
	return &hub{c: c, log: log, objs: map[string]map[string]json.RawMessage{}, pending: map[string]change{}, subs: map[chan []byte]struct{}{},
		wake: make(chan struct{}, 1), opened: make(chan struct{}, 1), stats: newStats(), linger: idleLinger}
}

// run serves pages until ctx ends, following the cluster while any is open.
func (h *hub) run(ctx context.Context) {
	h.mu.Lock()
	h.ctx = ctx
	h.mu.Unlock()
	go h.pollStats(ctx)
	go h.lingerOut(ctx)
	// A change after a quiet spell goes out at once; the ones that follow
	// within FlushInterval wait for the next flush, so a stream carries at
	// most one message per FlushInterval.
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		if wait := FlushInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		h.flush()
		last = time.Now()
	}
}

// followLocked starts following every kind, unless it is already; the
// lock is held. It returns a channel closed once each has been listed.
func (h *hub) followLocked() <-chan struct{} {
	if h.stop != nil || h.ctx == nil || h.c == nil {
		if h.listed == nil {
			done := make(chan struct{})
			close(done)
			return done
		}
		return h.listed
	}
	ctx, cancel := context.WithCancel(h.ctx)
	h.stop = cancel
	h.listed = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(len(hubKinds))
	listed := func() { wg.Done() }
	for _, kind := range hubKinds {
		switch kind {
		case "node":
			go follow(ctx, h, kind, h.c.Nodes().Resource, listed)
		case "service":
			go follow(ctx, h, kind, h.c.Services().Resource, listed)
		case "job":
			go follow(ctx, h, kind, h.c.Jobs().Resource, listed)
		case "instance":
			go follow(ctx, h, kind, h.c.Instances().Resource, listed)
		case "event":
			go follow(ctx, h, kind, h.c.Events().Resource, listed)
		}
	}
	ch := h.listed
	go func() { wg.Wait(); close(ch) }()
	return ch
}

// lingerOut stops following once no page has been open for idleLinger,
// and forgets what it held.
func (h *hub) lingerOut(ctx context.Context) {
	tick := time.NewTicker(h.linger / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		if h.stop != nil && len(h.subs) == 0 && !h.idleSince.IsZero() && time.Since(h.idleSince) >= h.linger {
			h.stop()
			h.stop, h.listed = nil, nil
			h.objs = map[string]map[string]json.RawMessage{}
			h.events = nil
			clear(h.pending)
		}
		h.mu.Unlock()
	}
}

// changed wakes the flusher; the lock is held.
func (h *hub) changed() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func key(m api.Metadata) string {
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "/" + m.Name
}

// follow lists one kind and watches it from the listed revision; when the
// watch breaks it lists again, so a restarted server costs a moment's lag,
// never a lost change. listed is called after the first list.
func follow[T any, P interface {
	*T
	api.Object
}](ctx context.Context, h *hub, kind string, r client.Resource[T, P], listed func()) {
	var once sync.Once
	defer once.Do(listed) // ended before a list: nothing to wait for
	for ctx.Err() == nil {
		items, rev, err := r.List(ctx, "")
		if err != nil {
			h.log.Warn("dashboard: list", "kind", kind, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		seen := map[string]bool{}
		for _, o := range items {
			k := key(*o.GetMetadata())
			seen[k] = true
			h.put(kind, k, o)
		}
		h.prune(kind, seen)
		once.Do(listed)
		ch, err := r.Watch(ctx, "", rev)
		if err != nil {
			h.log.Warn("dashboard: watch", "kind", kind, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		for ev := range ch {
			if ev.Err != nil {
				h.log.Warn("dashboard: watch", "kind", kind, "err", ev.Err)
				break
			}
			k := key(*ev.Object.GetMetadata())
			if ev.Type == "Deleted" {
				h.remove(kind, k)
			} else {
				h.put(kind, k, ev.Object)
			}
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (h *hub) put(kind, k string, obj any) {
	b, err := json.Marshal(obj)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if kind == "event" {
		h.events = append(h.events, b)
		if len(h.events) > maxEvents {
			h.events = h.events[len(h.events)-maxEvents:]
		}
	} else {
		if h.objs[kind] == nil {
			h.objs[kind] = map[string]json.RawMessage{}
		}
		h.objs[kind][k] = b
	}
	h.pending[kind+"\x00"+k] = change{Kind: kind, Key: k, Obj: b}
	h.changed()
}

func (h *hub) remove(kind, k string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.objs[kind], k)
	h.pending[kind+"\x00"+k] = change{Kind: kind, Key: k}
	h.changed()
}

// prune forgets the objects of kind a fresh list no longer has.
func (h *hub) prune(kind string, seen map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.objs[kind] {
		if !seen[k] {
			delete(h.objs[kind], k)
			h.pending[kind+"\x00"+k] = change{Kind: kind, Key: k}
			h.changed()
		}
	}
}

// flush sends what changed since the last flush to every stream as one
// message. A browser too slow to take it is cut off; it reconnects and
// starts again from a snapshot.
func (h *hub) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) == 0 {
		return
	}
	if len(h.subs) == 0 {
		// No browser watches: rendering the batch (every exec's event
		// makes one) would be for nobody. A new one starts from a snapshot.
		clear(h.pending)
		return
	}
	batch := make([]change, 0, len(h.pending))
	for _, c := range h.pending {
		batch = append(batch, c)
	}
	clear(h.pending)
	b, err := json.Marshal(map[string]any{"changes": batch, "sent": time.Now().UnixMilli()})
	if err != nil {
		return
	}
	for ch := range h.subs {
		select {
		case ch <- b:
		default:
			delete(h.subs, ch)
			close(ch)
			if len(h.subs) == 0 {
				h.idleSince = time.Now()
			}
		}
	}
}

// subscribe returns the current state and a channel of the batches after
// it; both are taken under one lock, so no change falls between them.
func (h *hub) subscribe() ([]byte, chan []byte) {
	h.mu.Lock()
	listed := h.followLocked()
	h.idleSince = time.Time{}
	h.mu.Unlock()
	// A page that opens the following gets a snapshot of what was listed,
	// not an empty one; a server too slow to list in time sends the rest
	// as changes.
	select {
	case <-listed:
	case <-time.After(listWait):
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	snap := map[string]any{"objects": h.objs, "events": h.events, "sent": time.Now().UnixMilli()}
	b, _ := json.Marshal(snap)
	ch := make(chan []byte, 64)
	h.subs[ch] = struct{}{}
	select {
	case h.opened <- struct{}{}:
	default:
	}
	return b, ch
}

func (h *hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
	if len(h.subs) == 0 {
		h.idleSince = time.Now()
	}
}

// listWait bounds how long a page opening waits for the first lists.
const listWait = 5 * time.Second
