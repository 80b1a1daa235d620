// Package leader runs work on one process at a time out of several, by an
// election on etcd: the control plane's loops run on one server while the
// API answers on all of them.
//
// A candidate holds a lease (its session) with a short TTL and campaigns
// under a key prefix; the candidate whose key was created first leads.
// While it leads, Run renews the lease itself and keeps a local deadline:
// the time it sent the last renewal that succeeded plus the TTL. etcd
// cannot expire the lease, and so no other candidate can win, before that
// deadline; Run cancels the work's context at it, or at once when the
// session ends or the key is deleted, and waits for the work to return
// before it campaigns again. So as long as the work stops when its context
// ends, two candidates never run it at once.
//
// A stalled process (stopped, swapped out) may still hold a write in
// flight when it comes back past its deadline. Writes that must not land
// then can be fenced on the term: Term.Cmp in the same etcd transaction.
package leader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/lease"

	"github.com/berth-dev/berth/api/errdefs"
)

// DefaultTTL is how long a leader that stopped renewing its session keeps
// leadership: the bound on failover after a crash.
const DefaultTTL = 3 * time.Second

// ErrLost says leadership ended before the work did.
var ErrLost = errors.New("leadership lost")

// Term is one candidate's time as leader.
type Term struct {
	// Key is the leader's election key, Revision its creation revision:
	// a later term always has a greater revision.
	Key      string
	Revision int64
	Identity string
}

// Cmp is true in an etcd transaction while the term lasts: put it in the
// If of a write that only the leader may make.
func (t Term) Cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.Key), "=", t.Revision)
}

type termKey struct{}

// TermFrom returns the term a leader's work runs in, from its context.
func TermFrom(ctx context.Context) (Term, bool) {
	t, ok := ctx.Value(termKey{}).(Term)
	return t, ok
}

// Option tunes Run.
type Option func(*options)

type options struct {
	ttl   time.Duration
	log   *slog.Logger
	renew RenewFunc
}

// RenewFunc renews lease once and returns its TTL in seconds (0 or an
// error in etcd's lease-not-found when it has lapsed).
type RenewFunc func(ctx context.Context, lease clientv3.LeaseID) (int64, error)

// WithTTL sets the session TTL (whole seconds, rounded up); DefaultTTL
// unless set. etcd raises TTLs below its minimum (about 2s by default).
func WithTTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// WithLogger logs terms beginning and ending.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRenew sets how the leader renews its lease: the client's
// KeepAliveOnce unless set. An embedded member renews it with a call, in
// microseconds however busy etcd is with writes, where a renewal through
// the in-process client opened a keep-alive stream each time and took
// up to a second (store.Store.RenewLease).
func WithRenew(f RenewFunc) Option { return func(o *options) { o.renew = f } }

// Run campaigns under key as identity and runs work while it leads, until
// ctx ends: when leadership is lost it cancels work's context, waits for
// work to return, and campaigns again; when work returns while leading,
// Run resigns and campaigns again. On ctx's end Run resigns, so that
// another candidate takes over at once, and returns nil. Errors of work
// are logged, not returned.
func Run(ctx context.Context, c *clientv3.Client, key, identity string, work func(context.Context) error, opts ...Option) error {
	if c == nil || key == "" || identity == "" || work == nil {
		return fmt.Errorf("leader election %q: %w: client, key, identity and work are required", key, errdefs.ErrInvalidArgument)
	}
	o := options{ttl: DefaultTTL}
	for _, opt := range opts {
		opt(&o)
	}
	if o.ttl <= 0 {
		o.ttl = DefaultTTL
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.renew == nil {
		o.renew = func(ctx context.Context, id clientv3.LeaseID) (int64, error) {
			r, err := c.KeepAliveOnce(ctx, id)
			if err != nil {
				return 0, err
			}
			return r.TTL, nil
		}
	}
	o.log = o.log.With("election", key, "identity", identity)
	retry := 100 * time.Millisecond
	for {
		err := runTerm(ctx, c, key, identity, work, o)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, ErrLost) {
			o.log.Warn("leader election", "err", err)
		} else {
			retry = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		// Back off while etcd is unreachable, up to a TTL.
		retry = min(2*retry, o.ttl)
	}
}

// runTerm makes a session, campaigns, and runs work while leading.
//
// Long because a term's steps (grant, campaign, lead, resign) share the lease
// and its keep-alive, which every exit must release.
func runTerm(ctx context.Context, c *clientv3.Client, key, identity string, work func(context.Context) error, o options) error {
	secs := int64(math.Ceil(o.ttl.Seconds()))
	gctx, cancel := context.WithTimeout(ctx, o.ttl)
	g, err := c.Grant(gctx, secs)
	cancel()
	if err != nil {
		return fmt.Errorf("leader election %q: session: %w", key, err)
	}
	ttl := time.Duration(g.TTL) * time.Second // etcd may have raised it
	sess, err := concurrency.NewSession(c, concurrency.WithLease(g.ID), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("leader election %q: session: %w", key, err)
	}
	defer func() {
		// Revoke rather than let the lease run out: the next leader
		// takes over at once, not a TTL later.
		sess.Orphan()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = c.Revoke(rctx, g.ID)
		cancel()
	}()

	el := concurrency.NewElection(sess, key)
	cctx, stop := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-cctx.Done():
		}
		stop()
	}()
	err = el.Campaign(cctx, identity)
	stop()
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			return fmt.Errorf("leader election %q: campaign: %w: session ended", key, ErrLost)
		}
		return fmt.Errorf("leader election %q: campaign: %w", key, err)
	}
	// Campaign returns when the keys before ours are gone, even if ours
	// went with its session meanwhile: check that it is still there.
	r, err := c.Get(ctx, el.Key())
	if err != nil {
		return fmt.Errorf("leader election %q: %w", key, err)
	}
	if len(r.Kvs) == 0 || r.Kvs[0].CreateRevision != el.Rev() {
		return fmt.Errorf("leader election %q: %w: our key went before we could lead", key, ErrLost)
	}
	term := Term{Key: el.Key(), Revision: el.Rev(), Identity: identity}

	lctx, lose := context.WithCancelCause(context.WithValue(ctx, termKey{}, term))
	defer lose(nil)
	guarded := make(chan struct{})
	go func() {
		defer close(guarded)
		guard(lctx, lose, c, o.renew, g.ID, term.Key, ttl)
	}()
	o.log.Info("leading", "term", term.Revision)
	done := make(chan error, 1)
	go func() { done <- work(lctx) }()
	var werr error
	select {
	case werr = <-done:
	case <-lctx.Done():
		// Not leading any more, or shutting down: the work must end
		// before anyone else may start it.
		werr = <-done
	}
	cause := context.Cause(lctx)
	lose(nil)
	<-guarded
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = el.Resign(rctx)
	cancel()
	switch {
	case ctx.Err() != nil:
		o.log.Info("resigned", "term", term.Revision)
		return nil
	case errors.Is(cause, ErrLost):
		o.log.Warn("lost leadership", "term", term.Revision, "why", cause)
		return cause
	case werr != nil:
		return fmt.Errorf("leader election %q: work ended: %w", key, werr)
	default:
		return nil
	}
}

// guard renews the lease every third of the TTL, and a quarter second
// after a renewal fails, and ends the term (lose) when the lease was not
// renewed by its deadline, when etcd says it has lapsed, or when the
// leader key is deleted.
//
// The session's own keep-alive also renews the lease, but the term does
// not rest on it: it ended terms when its replies came late, a TTL with
// none, though renewals of the guard's own had kept the lease all along.
// The deadline alone says how long etcd keeps the lease.
func guard(ctx context.Context, lose context.CancelCauseFunc, c *clientv3.Client, renewLease RenewFunc, lease clientv3.LeaseID, key string, ttl time.Duration) {
	// The term ends a little before the lease could: the work needs a
	// moment to stop once its context ends.
	margin := ttl / 10
	// The lease was granted before the campaign began, so it lasts at
	// least until a TTL from now; the first renewal moves that on.
	deadline := time.Now().Add(ttl - margin)
	expiry := time.NewTimer(time.Until(deadline))
	defer expiry.Stop()
	tick := time.NewTimer(ttl / 3)
	defer tick.Stop()
	wch := c.Watch(clientv3.WithRequireLeader(ctx), key)
	renew := func() {
		t0 := time.Now()
		kctx, cancel := context.WithTimeout(ctx, min(ttl/3, time.Until(deadline)))
		left, err := renewLease(kctx, lease)
		cancel()
		switch {
		case err == nil && left > 0:
			// etcd counts the TTL from when it got the renewal, which
			// is after t0.
			deadline = t0.Add(time.Duration(left)*time.Second - margin)
			expiry.Reset(time.Until(deadline))
			tick.Reset(ttl / 3)
		case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		case err == nil || isLeaseNotFound(err):
			lose(fmt.Errorf("%w: lease expired", ErrLost))
		default:
			// Slow or failed: try again soon, while the deadline holds.
			tick.Reset(250 * time.Millisecond)
		}
	}
	renew()
	for {
		if !time.Now().Before(deadline) {
			lose(fmt.Errorf("%w: lease not renewed within %v", ErrLost, ttl))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-expiry.C:
			lose(fmt.Errorf("%w: lease not renewed within %v", ErrLost, ttl))
			return
		case wr, ok := <-wch:
			if !ok {
				// The watch ended (no etcd leader, compaction): the
				// deadline still bounds the term; watch again.
				wch = c.Watch(clientv3.WithRequireLeader(ctx), key)
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					lose(fmt.Errorf("%w: leader key deleted", ErrLost))
					return
				}
			}
		case <-tick.C:
			renew()
		}
	}
}

func isLeaseNotFound(err error) bool {
	// The client's typed error for an unknown lease, or the server's own
	// when renewed by a call to it.
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, lease.ErrLeaseNotFound) || rpctypes.Error(err) == rpctypes.ErrLeaseNotFound
}

// Leader returns the current term under key: the candidate leading, or an
// error in the NotFound category when none does.
func Leader(ctx context.Context, c *clientv3.Client, key string) (Term, error) {
	t, _, err := leaderAt(ctx, c, key)
	return t, err
}

// leaderAt is Leader with the store revision it read at.
func leaderAt(ctx context.Context, c *clientv3.Client, key string) (Term, int64, error) {
	// Candidates' keys are <key>/<lease>; concurrency.Election names them so.
	r, err := c.Get(ctx, key+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return Term{}, 0, fmt.Errorf("leader of %q: %w: %w", key, errdefs.ErrUnavailable, err)
	}
	if len(r.Kvs) == 0 {
		return Term{}, r.Header.Revision, fmt.Errorf("leader of %q: %w: nobody leads", key, errdefs.ErrNotFound)
	}
	kv := r.Kvs[0]
	return Term{Key: string(kv.Key), Revision: kv.CreateRevision, Identity: string(kv.Value)}, r.Header.Revision, nil
}

// Watch calls changed with each new term under key (a zero Term while
// nobody leads) until ctx ends: for logs and status, not for deciding who
// may act, which is Run's job.
func Watch(ctx context.Context, c *clientv3.Client, key string, changed func(Term)) {
	var last Term
	first := true
	for ctx.Err() == nil {
		t, rev, err := leaderAt(ctx, c, key)
		if err != nil && !errdefs.IsNotFound(err) {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if first || t != last {
			changed(t)
		}
		first, last = false, t
		// Any change after the read wakes us to read again.
		wctx, cancel := context.WithCancel(ctx)
		wch := c.Watch(clientv3.WithRequireLeader(wctx), key+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		select {
		case <-ctx.Done():
		case <-wch:
		}
		cancel()
	}
}
