package leader_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/internal/store"
)

const (
	key = "/test/leader/work"
	ttl = 2 * time.Second
)

// etcdURL starts an embedded etcd with a client URL on loopback, so that
// each candidate can have a client of its own, as separate servers do.
func etcdURL(t *testing.T) string {
	t.Helper()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", port())
	client := fmt.Sprintf("http://127.0.0.1:%d", port())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Member: &store.Member{
		Name: "e", PeerURL: peer, ClientURL: client, InitialCluster: map[string]string{"e": peer}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return client
}

func newClient(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// referee watches candidates' work: how many run at once (never more than
// one), who runs now, and the terms in the order they began.
type referee struct {
	t       *testing.T
	mu      sync.Mutex
	running map[string]bool
	terms   []leader.Term
	overlap atomic.Bool
}

func newReferee(t *testing.T) *referee { return &referee{t: t, running: map[string]bool{}} }

// work is a candidate's work: it runs until its context ends.
func (r *referee) work(name string) func(context.Context) error {
	return func(ctx context.Context) error {
		term, ok := leader.TermFrom(ctx)
		r.mu.Lock()
		if len(r.running) > 0 {
			r.overlap.Store(true)
			r.t.Errorf("%s leads while %v still run", name, r.running)
		}
		if !ok || term.Identity != name {
			r.t.Errorf("%s runs in term %+v", name, term)
		}
		if n := len(r.terms); n > 0 && term.Revision <= r.terms[n-1].Revision {
			r.t.Errorf("term %d of %s does not come after term %d", term.Revision, name, r.terms[n-1].Revision)
		}
		r.running[name] = true
		r.terms = append(r.terms, term)
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		delete(r.running, name)
		r.mu.Unlock()
		return nil
	}
}

// leader waits until someone other than not runs the work, and names it.
func (r *referee) leader(not string, within time.Duration) string {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		for name := range r.running {
			if name != not {
				r.mu.Unlock()
				return name
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			r.t.Fatalf("nobody but %q led within %v", not, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *referee) isRunning(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running[name]
}

type candidate struct {
	name   string
	client *clientv3.Client
	cancel context.CancelFunc
	done   chan error
}

func campaign(t *testing.T, url string, r *referee, name string) *candidate {
	c := &candidate{name: name, client: newClient(t, url), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { c.done <- leader.Run(ctx, c.client, key, name, r.work(name), leader.WithTTL(ttl)) }()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

func TestCrashedLeaderIsReplacedWithinTTL(t *testing.T) {
	url := etcdURL(t)
	r := newReferee(t)
	cands := map[string]*candidate{}
	for _, name := range []string{"a", "b"} {
		cands[name] = campaign(t, url, r, name)
	}
	first := r.leader("", 10*time.Second)
	obs := newClient(t, url)
	term, err := leader.Leader(context.Background(), obs, key)
	if err != nil || term.Identity != first {
		t.Fatalf("Leader: %+v, %v; want %s", term, err, first)
	}
	// The leader's process dies: its client goes, nothing resigns, and
	// its lease runs out. The other takes over within the TTL and a second.
	crashed := time.Now()
	cands[first].client.Close()
	second := r.leader(first, ttl+time.Second)
	t.Logf("%s took over from %s after %v", second, first, time.Since(crashed))
	// The crashed one stopped its work when it could no longer renew its
	// lease: before the other began, as the referee checks.
	if r.isRunning(first) {
		t.Errorf("%s still runs its work", first)
	}
	if r.overlap.Load() {
		t.Fatal("two candidates ran the work at once")
	}
}

func TestCancelledLeaderHandsOverAtOnce(t *testing.T) {
	url := etcdURL(t)
	r := newReferee(t)
	cands := map[string]*candidate{}
	for _, name := range []string{"a", "b", "c"} {
		cands[name] = campaign(t, url, r, name)
	}
	// Each leader in turn stops; it resigns on the way out, so the next
	// one leads well within a TTL.
	prev := r.leader("", 10*time.Second)
	for range 2 {
		stopped := time.Now()
		cands[prev].cancel()
		if err := <-cands[prev].done; err != nil {
			t.Fatalf("Run of %s: %v", prev, err)
		}
		cands[prev].done <- nil // for the cleanup
		next := r.leader(prev, ttl/2)
		t.Logf("%s took over from %s after %v", next, prev, time.Since(stopped))
		prev = next
	}
	if len(r.terms) != 3 {
		t.Errorf("terms %+v, want 3", r.terms)
	}
}

func TestLeaderKeyDeletedEndsTheTerm(t *testing.T) {
	url := etcdURL(t)
	r := newReferee(t)
	campaign(t, url, r, "a")
	r.leader("", 10*time.Second)
	c := newClient(t, url)
	term, err := leader.Leader(context.Background(), c, key)
	if err != nil {
		t.Fatal(err)
	}
	// Someone deletes the leader's key (an operator forcing an election):
	// the work stops, and the candidate campaigns again and leads in a new term.
	if _, err := c.Delete(context.Background(), term.Key); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.terms)
		r.mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no second term after the leader key was deleted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWorkEndingResignsAndLeaderReports(t *testing.T) {
	url := etcdURL(t)
	c := newClient(t, url)
	if _, err := leader.Leader(context.Background(), c, key); !errdefs.IsNotFound(err) {
		t.Fatalf("Leader with no candidates: %v, want not found", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan leader.Term, 16)
	go leader.Watch(ctx, c, key, func(t leader.Term) {
		select {
		case seen <- t:
		default:
		}
	})
	if got := <-seen; got.Identity != "" {
		t.Fatalf("first report %+v, want nobody", got)
	}
	// Work that fails ends the term; the candidate resigns and campaigns
	// again, and each term is reported.
	runs := make(chan struct{}, 8)
	done := make(chan error, 1)
	go func() {
		done <- leader.Run(ctx, newClient(t, url), key, "a", func(ctx context.Context) error {
			runs <- struct{}{}
			return errors.New("failed")
		}, leader.WithTTL(ttl))
	}()
	for range 2 {
		select {
		case <-runs:
		case <-time.After(10 * time.Second):
			t.Fatal("work did not run again after it failed")
		}
	}
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case term := <-seen:
			got = term.Identity == "a"
		case <-deadline:
			t.Fatal("Watch never reported a as leader")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := leader.Run(context.Background(), c, "", "a", func(context.Context) error { return nil }); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Run without a key: %v, want invalid argument", err)
	}
}

// A term rests on the leader's own renewals (WithRenew), not on its
// session's keep-alive stream, whose replies came late under load and
// ended terms whose lease was renewed all along: with the stream gone, the
// term goes on while the renewals succeed, and ends within the TTL once
// they fail.
func TestTermRestsOnItsOwnRenewals(t *testing.T) {
	url := etcdURL(t)
	r := newReferee(t)
	c, renewer := newClient(t, url), newClient(t, url)
	var failing atomic.Bool
	renew := func(ctx context.Context, id clientv3.LeaseID) (int64, error) {
		if failing.Load() {
			return 0, errors.New("etcd too slow")
		}
		ka, err := renewer.KeepAliveOnce(ctx, id)
		if err != nil {
			return 0, err
		}
		return ka.TTL, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- leader.Run(ctx, c, key, "a", r.work("a"), leader.WithTTL(ttl), leader.WithRenew(renew))
	}()
	t.Cleanup(func() { cancel(); <-done })
	r.leader("", 10*time.Second)
	// The session's keep-alive ends (its client's leases closed).
	if err := c.Lease.Close(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !r.isRunning("a") {
			t.Fatal("the term ended with its session's keep-alive, though its renewals held")
		}
	}
	failing.Store(true)
	failed := time.Now()
	for r.isRunning("a") {
		if time.Since(failed) > ttl {
			t.Fatalf("the term outlived its lease's TTL (%v) without a renewal", ttl)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.terms); n != 1 {
		t.Errorf("%d terms, want 1", n)
	}
}
