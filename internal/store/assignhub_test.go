package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// hubEvent is what a test compares of an event: its kind, revision and
// wire form.
type hubEvent struct {
	Type EventType
	Rev  int64
	Raw  string
}

func (e hubEvent) String() string { return fmt.Sprintf("%s@%d", e.Type, e.Rev) }

// takeFeed reads f until it has given n events, failing the test on an
// error or after 10 s.
func takeFeed(t *testing.T, f *Feed, n int) []hubEvent {
	t.Helper()
	var got []hubEvent
	deadline := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case <-f.Ready():
		case <-deadline:
			t.Fatalf("node %q: %d events in 10s, want %d: %v", f.node, len(got), n, got)
		}
		for _, ev := range f.Take(nil) {
			if ev.Err != nil {
				t.Fatalf("node %q after %v: %v", f.node, got, ev.Err)
			}
			got = append(got, hubEvent{ev.Type, ev.Revision, string(ev.Raw)})
		}
	}
	return got
}

// quiet fails the test if any of feeds has events: the hub has given
// them everything before a later write, which a feed of its own sees.
func quiet(t *testing.T, s *Store, feeds ...*Feed) {
	t.Helper()
	marker := s.WatchAssignmentsRaw(t.Context(), "marker", 0)
	bindAll(t, s, "marker", fmt.Sprintf("marker-%d", time.Now().UnixNano()))
	takeFeed(t, marker, 1)
	for _, f := range feeds {
		if evs := f.Take(nil); len(evs) > 0 {
			t.Fatalf("node %q: unexpected events %v", f.node, evs)
		}
	}
}

// etcdTruth is node's assignment events from revision from, as an etcd
// watch of the node's own gives them: what the hub must give too.
func etcdTruth(t *testing.T, s *Store, node string, from int64, n int) []hubEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out []hubEvent
	for ev := range s.watchAssignments(ctx, node, from, true) {
		if ev.Err != nil {
			t.Fatalf("etcd watch of %q from %d: %v", node, from, ev.Err)
		}
		out = append(out, hubEvent{ev.Type, ev.Revision, string(ev.Raw)})
		if len(out) == n {
			return out
		}
	}
	t.Fatalf("etcd watch of %q from %d: %d events, want %d", node, from, len(out), n)
	return nil
}

// waitHub waits for the hub to have seen every write so far.
func waitHub(t *testing.T, s *Store) {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("the hub at revision %d", rev), func() bool {
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		return s.hub.next > rev
	})
}

func bindAll(t *testing.T, s *Store, node string, names ...string) {
	t.Helper()
	var objs []api.Object
	var bs []Binding
	for _, n := range names {
		objs = append(objs, instance(n))
		bs = append(bs, Binding{Name: n, Node: node})
	}
	if err := s.CreateMany(t.Context(), objs); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(t.Context(), bs); err != nil {
		t.Fatal(err)
	}
}

// Many nodes' watches, served by one watch of all assignments, each see
// their own node's events and no other's, in revision order, exactly as
// an etcd watch of the node's own gives them.
func TestAssignmentHubFansOutByNode(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	const nodes, each = 12, 3
	var objs []api.Object
	for i := range nodes * each {
		objs = append(objs, instance(fmt.Sprintf("i-%d", i)))
	}
	if err := s.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	feeds := map[string]*Feed{}
	for n := range nodes {
		node := fmt.Sprintf("n%d", n)
		if feeds[node] = s.WatchAssignmentsRaw(ctx, node, rev+1); feeds[node].hub == nil {
			t.Fatalf("node %s's watch from revision %d: not served by the hub", node, rev+1)
		}
	}
	// One transaction binds instances to every node: events of one
	// revision for many nodes.
	var bs []Binding
	for i := range nodes * each {
		bs = append(bs, Binding{Name: fmt.Sprintf("i-%d", i), Node: fmt.Sprintf("n%d", i%nodes)})
	}
	if err := s.Bind(ctx, bs); err != nil {
		t.Fatal(err)
	}
	// Then a spec change and a delete for each node.
	for n := range nodes {
		in, err := Get[api.Instance](ctx, s, "default", fmt.Sprintf("i-%d", n))
		if err != nil {
			t.Fatal(err)
		}
		in.Spec.Template.Env = map[string]string{"V": "2"}
		if err := s.Update(ctx, in, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, api.KindInstance, "default", fmt.Sprintf("i-%d", n+nodes), 0); err != nil {
			t.Fatal(err)
		}
	}
	for n := range nodes {
		node := fmt.Sprintf("n%d", n)
		got := takeFeed(t, feeds[node], each+2)
		want := etcdTruth(t, s, node, rev+1, each+2)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("node %s: hub gave %v, etcd %v", node, got, want)
		}
		for i, ev := range got {
			if ev.Raw != want[i].Raw {
				t.Fatalf("node %s: event %d differs from etcd's:\n%s\n%s", node, i, ev.Raw, want[i].Raw)
			}
			var in api.Instance
			if err := json.Unmarshal([]byte(ev.Raw), &in); err != nil {
				t.Fatal(err)
			}
			if in.Spec.Node != node {
				t.Fatalf("node %s got an event of %s, bound to %s", node, in.Metadata.Name, in.Spec.Node)
			}
		}
		types := []EventType{got[0].Type, got[each].Type, got[each+1].Type}
		if fmt.Sprint(types) != fmt.Sprint([]EventType{Added, Modified, Deleted}) {
			t.Fatalf("node %s: %v", node, got)
		}
	}
	var all []*Feed
	for _, f := range feeds {
		all = append(all, f)
	}
	quiet(t, s, all...)
}

// A watch from a revision the hub's history holds gets the history from
// there, then what comes live, with nothing lost or repeated at the seam;
// one from before the history gets an etcd watch of its own, exact as
// well, or the compacted error once etcd has dropped the revision.
func TestAssignmentHubResumesFromHistory(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	s.hub.historyEvents = 8
	s.StartAssignmentHub()
	s.hub.ensure(ctx, s)
	var revs []int64
	for i := range 6 {
		bindAll(t, s, "n1", fmt.Sprintf("a-%d", i))
		r, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r)
	}
	from := revs[2]
	f := s.WatchAssignmentsRaw(ctx, "n1", from)
	if f.hub == nil {
		t.Fatalf("watch from revision %d (in the history): not served by the hub", from)
	}
	bindAll(t, s, "n1", "a-6", "a-7")
	got := takeFeed(t, f, 6) // a-2 .. a-5 from the history, then a-6 and a-7
	want := etcdTruth(t, s, "n1", from, 6)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("from history then live: %v, want %v", got, want)
	}
	quiet(t, s, f)

	// Other nodes' events push n1's out of the history.
	for i := range 10 {
		bindAll(t, s, "n2", fmt.Sprintf("b-%d", i))
	}
	waitHub(t, s)
	old := s.WatchAssignmentsRaw(ctx, "n1", from)
	if old.hub != nil {
		t.Fatalf("watch from revision %d, before the history (floor %d): served by the hub", from, s.hub.floor)
	}
	bindAll(t, s, "n1", "a-8")
	got = takeFeed(t, old, 7)
	want = etcdTruth(t, s, "n1", from, 7)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("from before the history: %v, want %v", got, want)
	}

	cur, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	gone := s.WatchAssignmentsRaw(ctx, "n1", from)
	select {
	case <-gone.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("watch from a compacted revision: nothing in 10s")
	}
	evs := gone.Take(nil)
	if len(evs) != 1 || !errdefs.IsFailedPrecondition(evs[0].Err) {
		t.Fatalf("watch from a compacted revision: %+v, want one FailedPrecondition error", evs)
	}
}

// A watch whose reader falls behind is ended with an error once it holds
// too much, and the hub and the other nodes' watches go on.
func TestAssignmentHubCutsASlowFeed(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	s.hub.feedEvents = 5
	slow := s.WatchAssignmentsRaw(ctx, "slow", 0)
	fast := s.WatchAssignmentsRaw(ctx, "fast", 0)
	if slow.hub == nil || fast.hub == nil {
		t.Fatal("watches from now: not served by the hub")
	}
	for i := range 10 {
		bindAll(t, s, "slow", fmt.Sprintf("s-%d", i))
		bindAll(t, s, "fast", fmt.Sprintf("f-%d", i))
		takeFeed(t, fast, 1)
	}
	evs := slow.Take(nil)
	if len(evs) != 1 || !errdefs.IsUnavailable(evs[0].Err) || !strings.Contains(evs[0].Err.Error(), "maxFeedEvents") {
		t.Fatalf("slow watch: %+v, want one Unavailable error naming the limit", evs)
	}
	s.hub.mu.Lock()
	n := len(s.hub.subs["slow"])
	s.hub.mu.Unlock()
	if n != 0 {
		t.Fatalf("the hub still feeds %d cut watches", n)
	}
	bindAll(t, s, "fast", "f-10")
	takeFeed(t, fast, 1)
}

// breakWatch ends the hub's etcd watch as a failure would.
func (h *assignHub) breakWatch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rewatch != nil {
		h.rewatch()
	}
}

// session is one watch of an agent, from its list's revision: what it
// got, and the error that ended it.
type session struct {
	node string
	from int64
	hub  bool
	got  []hubEvent
	err  error
}

// truthWatch is every assignment event from one etcd watch of all of
// them, kept synced by the test so that compaction does not touch it.
type truthWatch struct {
	mu   sync.Mutex
	evs  map[string][]hubEvent // by node
	last int64
	err  error
}

func watchTruth(ctx context.Context, s *Store, from int64) *truthWatch {
	tw := &truthWatch{evs: map[string][]hubEvent{}}
	prefix := s.prefix + "/assign/"
	wc := s.client.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(from))
	go func() {
		for resp := range wc {
			if err := s.fillAssigned(ctx, resp.Events); err != nil && resp.Err() == nil {
				tw.mu.Lock()
				if tw.err == nil {
					tw.err = err
				}
				tw.mu.Unlock()
				continue
			}
			tw.mu.Lock()
			if err := resp.Err(); err != nil && tw.err == nil {
				tw.err = err
			}
			for _, e := range resp.Events {
				if ev, ok := toEvent(api.KindInstance, e, true); ok {
					node, _, _ := strings.Cut(strings.TrimPrefix(string(e.Kv.Key), prefix), "/")
					tw.evs[node] = append(tw.evs[node], hubEvent{ev.Type, ev.Revision, string(ev.Raw)})
					tw.last = max(tw.last, ev.Revision)
				}
			}
			tw.mu.Unlock()
		}
	}()
	return tw
}

// latest is the revision of node's latest event.
func (tw *truthWatch) latest(node string) int64 {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if evs := tw.evs[node]; len(evs) > 0 {
		return evs[len(evs)-1].Rev
	}
	return 0
}

// agents plays one agent for each node: list, watch from the list's
// revision, list again when the watch ends; every watch a session.
type agents struct {
	mu       sync.Mutex
	sessions []*session
	seen     map[string]int64 // the latest revision each has seen
	wg       sync.WaitGroup
}

func runAgents(ctx context.Context, s *Store, nodes []string) *agents {
	a := &agents{seen: map[string]int64{}}
	for _, node := range nodes {
		a.wg.Go(func() {
			for ctx.Err() == nil {
				if _, rev, err := s.AssignmentsCurrent(ctx, node); err == nil {
					a.watch(ctx, s, node, rev)
				}
			}
		})
	}
	return a
}

// watch follows node's feed from after rev until it ends or ctx is done.
func (a *agents) watch(ctx context.Context, s *Store, node string, rev int64) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := s.WatchAssignmentsRaw(ctx, node, rev+1)
	ss := &session{node: node, from: rev + 1, hub: f.hub != nil}
	a.mu.Lock()
	a.sessions = append(a.sessions, ss)
	a.seen[node] = max(a.seen[node], rev)
	a.mu.Unlock()
	for ss.err == nil {
		select {
		case <-f.Ready():
		case <-ctx.Done():
			return
		}
		a.mu.Lock()
		for _, ev := range f.Take(nil) {
			if ev.Err != nil {
				ss.err = ev.Err
				break
			}
			ss.got = append(ss.got, hubEvent{ev.Type, ev.Revision, string(ev.Raw)})
			a.seen[node] = max(a.seen[node], ev.Revision)
		}
		a.mu.Unlock()
	}
}

// caughtUp tells whether every agent has seen its node's latest event.
func (a *agents) caughtUp(tw *truthWatch, nodes []string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, node := range nodes {
		if last := tw.latest(node); last == 0 || a.seen[node] < last {
			return false
		}
	}
	return true
}

// check fails the test unless each session got its node's events from
// its revision on, exactly, to its end; it counts the errors that ended
// them by category.
func (a *agents) check(t *testing.T, tw *truthWatch) (unavailable, compacted int) {
	t.Helper()
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.err != nil {
		t.Fatalf("the test's own watch: %v", tw.err)
	}
	byHub := 0
	for _, ss := range a.sessions {
		var want []hubEvent
		for _, ev := range tw.evs[ss.node] {
			if ev.Rev >= ss.from {
				want = append(want, ev)
			}
		}
		if ss.err != nil && len(ss.got) <= len(want) {
			want = want[:len(ss.got)] // ended early: a beginning of them
		}
		if fmt.Sprint(ss.got) != fmt.Sprint(want) {
			t.Fatalf("node %s's watch from %d (hub %v, ended by %v): got %v, want %v", ss.node, ss.from, ss.hub, ss.err, ss.got, want)
		}
		for i, ev := range ss.got {
			if ev.Raw != want[i].Raw {
				t.Fatalf("node %s's watch from %d: event %d is not etcd's", ss.node, ss.from, i)
			}
		}
		switch {
		case errdefs.IsFailedPrecondition(ss.err):
			compacted++
		case errdefs.IsUnavailable(ss.err):
			unavailable++
		case ss.err != nil:
			t.Fatalf("node %s's watch: unexpected error %v", ss.node, ss.err)
		}
		if ss.hub {
			byHub++
		}
	}
	t.Logf("%d watches, %d served by the hub", len(a.sessions), byHub)
	return unavailable, compacted
}

// writeRounds binds a new instance to each node in one transaction per
// round, and every third round deletes those of two rounds before.
func writeRounds(t *testing.T, s *Store, nodes []string, from, rounds int) {
	t.Helper()
	ctx := t.Context()
	for round := from; round < from+rounds; round++ {
		var objs []api.Object
		var bs []Binding
		for _, node := range nodes {
			name := fmt.Sprintf("r%d-%s", round, node)
			objs = append(objs, instance(name))
			bs = append(bs, Binding{Name: name, Node: node})
		}
		if err := s.CreateMany(ctx, objs); err != nil {
			t.Fatal(err)
		}
		if err := s.Bind(ctx, bs); err != nil {
			t.Fatal(err)
		}
		if round%3 == 2 {
			for _, node := range nodes {
				if err := s.Delete(ctx, api.KindInstance, "default", fmt.Sprintf("r%d-%s", round-2, node), 0); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// waitFor waits for cond, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for waited := time.Now(); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Since(waited) > 20*time.Second {
			t.Fatalf("%s: not after 20s", what)
		}
	}
}

// The hub's etcd watch failing loses no event of any node: broken, it
// resumes where it stopped and its watches go on; unable to resume (its
// revision compacted away), it ends them all with an error, and their
// agents list and watch again. Every watch gets each of its node's
// events, in order and once, up to its end.
func TestAssignmentHubWatchFailureLosesNothing(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	s.StartAssignmentHub()
	s.hub.ensure(ctx, s)
	start, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	tw := watchTruth(tctx, s, start+1)
	var nodes []string
	for n := range 10 {
		nodes = append(nodes, fmt.Sprintf("n%d", n))
	}
	actx, acancel := context.WithCancel(ctx)
	a := runAgents(actx, s, nodes)

	writeRounds(t, s, nodes, 0, 5)
	s.hub.breakWatch() // a hiccup: the hub resumes where it was
	writeRounds(t, s, nodes, 5, 5)
	waitHub(t, s) // its resumed watch has worked
	// Writes elsewhere, then compaction past the hub's position: the
	// hub's synced watch goes on, but its resumption finds the revision
	// it resumes at gone. The test's own watch is synced first.
	last, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the test's own watch at the store's revision", func() bool {
		tw.mu.Lock()
		defer tw.mu.Unlock()
		return tw.last >= last
	})
	for i := range 2 {
		if err := s.Create(ctx, service(fmt.Sprintf("elsewhere-%d", i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	s.hub.breakWatch()
	writeRounds(t, s, nodes, 10, 5)

	waitFor(t, "every agent at its node's latest event", func() bool { return a.caughtUp(tw, nodes) })
	acancel()
	a.wg.Wait()
	unavailable, compacted := a.check(t, tw)
	if unavailable != 0 || compacted != len(nodes) {
		t.Fatalf("%d watches ended by the hub's hiccup, %d by its compaction: want none and each node's (%d)", unavailable, compacted, len(nodes))
	}
}

// A feed keeps no room for a burst once it is taken, and serves the next
// burst whole and in order.
func TestFeedLetsABurstsRoomGo(t *testing.T) {
	f := newFeed("n", 0, maxFeedEvents, maxFeedBytes)
	rev := int64(0)
	for _, burst := range []int{100, 3, 50} {
		first := rev + 1
		for range burst {
			rev++
			if !f.push(WatchEvent{Type: Added, Revision: rev, Raw: []byte(`{}`)}) {
				t.Fatal("the feed ended")
			}
		}
		select {
		case <-f.Ready():
		default:
			t.Fatal("a feed with events is not ready")
		}
		evs := f.Take(nil)
		if len(evs) != burst {
			t.Fatalf("took %d events, want %d", len(evs), burst)
		}
		for i, ev := range evs {
			if ev.Revision != first+int64(i) {
				t.Fatalf("event %d has revision %d, want %d", i, ev.Revision, first+int64(i))
			}
		}
		f.mu.Lock()
		room, bytes := cap(f.queue), f.bytes
		f.mu.Unlock()
		if room > feedKeep || bytes != 0 {
			t.Fatalf("after a burst of %d taken, the feed keeps room for %d events and counts %d bytes; want at most %d and 0", burst, room, bytes, feedKeep)
		}
	}
}
