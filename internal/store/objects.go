package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// ptr is the constraint of the generic helpers: T is an object type and
// P its pointer, which implements api.Object.
type ptr[T any] interface {
	*T
	api.Object
}

// Get reads one object: store.Get[api.Service](ctx, s, "default", "web").
func Get[T any, P ptr[T]](ctx context.Context, s *Store, namespace, name string) (P, error) {
	obj := P(new(T))
	if err := s.GetInto(ctx, obj, namespace, name); err != nil {
		return nil, err
	}
	return obj, nil
}

// GetInto reads the object of obj's kind named namespace/name into obj.
func (s *Store) GetInto(ctx context.Context, obj api.Object, namespace, name string) error {
	return s.getInto(ctx, obj, namespace, name)
}

// GetIntoLocal is GetInto served from the etcd member's own applied
// state, with no raft round. On a lone member that holds every
// acknowledged write; a member of several may trail the leader by an
// apply, so use it only where a value one apply old does no harm.
func (s *Store) GetIntoLocal(ctx context.Context, obj api.Object, namespace, name string) error {
	return s.getInto(ctx, obj, namespace, name, clientv3.WithSerializable())
}

// GetIntoLocalRaw is GetIntoLocal that also returns the value as stored,
// for UpdateRead.
func (s *Store) GetIntoLocalRaw(ctx context.Context, obj api.Object, namespace, name string) ([]byte, error) {
	return s.getRaw(ctx, obj, namespace, name, clientv3.WithSerializable())
}

// GetEachLocal reads, into each of objs, the object of its kind named
// namespace/name, all in one transaction served as GetIntoLocal's are;
// found[i] says whether objs[i] was there. One read where a name may be
// of several kinds (berth exec NAME) took a round trip per kind.
func (s *Store) GetEachLocal(ctx context.Context, namespace, name string, objs ...api.Object) (found []bool, err error) {
	ops := make([]clientv3.Op, len(objs))
	for i, o := range objs {
		ops[i] = clientv3.OpGet(s.Key(o.GetKind(), defaultNS(o.GetKind(), namespace), name), clientv3.WithSerializable())
	}
	start := time.Now()
	r, err := s.client.Txn(ctx).Then(ops...).Commit()
	timingFrom(ctx).readSince(start)
	if err != nil {
		return nil, fmt.Errorf("get %q in namespace %q: %w", name, namespace, wrapEtcd(err))
	}
	found = make([]bool, len(objs))
	for i, resp := range r.Responses {
		kvs := resp.GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			continue
		}
		if err := decode(objs[i], kvs[0].Value, kvs[0].ModRevision); err != nil {
			return nil, fmt.Errorf("get %s: %w", kvs[0].Key, err)
		}
		found[i] = true
	}
	return found, nil
}

func (s *Store) getInto(ctx context.Context, obj api.Object, namespace, name string, opts ...clientv3.OpOption) error {
	_, err := s.getRaw(ctx, obj, namespace, name, opts...)
	return err
}

func (s *Store) getRaw(ctx context.Context, obj api.Object, namespace, name string, opts ...clientv3.OpOption) ([]byte, error) {
	kind := obj.GetKind()
	namespace = defaultNS(kind, namespace)
	start := time.Now()
	r, err := s.client.Get(ctx, s.Key(kind, namespace, name), opts...)
	timingFrom(ctx).readSince(start)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", api.Ref(kind, namespace, name), wrapEtcd(err))
	}
	if len(r.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", api.Ref(kind, namespace, name), errdefs.ErrNotFound)
	}
	return r.Kvs[0].Value, decode(obj, r.Kvs[0].Value, r.Kvs[0].ModRevision)
}

func defaultNS(kind api.Kind, namespace string) string {
	if !kind.Namespaced() {
		return ""
	}
	if namespace == "" {
		return api.DefaultNamespace
	}
	return namespace
}

// List reads every object of T's kind in namespace (every namespace when
// it is empty), sorted by key, and the revision they were read at: watch
// from that revision + 1 to miss nothing.
func List[T any, P ptr[T]](ctx context.Context, s *Store, namespace string) ([]P, int64, error) {
	var out []P
	rev, err := s.ListFunc(ctx, P(new(T)).GetKind(), namespace, func(value []byte, modRev int64) error {
		obj := P(new(T))
		if err := decode(obj, value, modRev); err != nil {
			return err
		}
		out = append(out, obj)
		return nil
	})
	return out, rev, err
}

// listPage bounds the size of one etcd range response.
const listPage = 2000

// ListFunc calls fn with the stored value and revision of every object of
// kind in namespace (all when empty), in key order, all read at one
// revision, which it returns.
func (s *Store) ListFunc(ctx context.Context, kind api.Kind, namespace string, fn func(value []byte, modRev int64) error) (int64, error) {
	return s.ListFuncAt(ctx, kind, namespace, 0, fn)
}

// ListFuncAt is ListFunc at revision rev (the current one when 0), so
// that several kinds can be read as of one moment.
//
// Past the first page it reads the keys alone (etcd's in-memory index,
// no value) and then the values a page between two of them at a time:
// etcd counts every key from a page's start to its range's end for each
// limited read, so paging 300,000 instances 2,000 at a time walked its
// index 75 times over, most of a list's CPU.
func (s *Store) ListFuncAt(ctx context.Context, kind api.Kind, namespace string, rev int64, fn func(value []byte, modRev int64) error) (int64, error) {
	prefix := s.prefixOf(kind, namespace)
	end := clientv3.GetPrefixRangeEnd(prefix)
	each := func(r *clientv3.GetResponse) error {
		for _, kv := range r.Kvs {
			if err := fn(kv.Value, kv.ModRevision); err != nil {
				return fmt.Errorf("list %s: %s: %w", kind.Plural(), kv.Key, err)
			}
		}
		return nil
	}
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	r, err := s.client.Get(ctx, prefix, opts...)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", kind.Plural(), wrapEtcd(err))
	}
	if rev == 0 {
		rev = r.Header.Revision
	}
	if err := each(r); err != nil {
		return 0, err
	}
	if !r.More || len(r.Kvs) == 0 {
		return rev, nil
	}
	from := string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	keys, err := s.client.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", kind.Plural(), wrapEtcd(err))
	}
	// Every listPage-th key starts a page; the keys are those of rev.
	var starts []string
	for i := 0; i < len(keys.Kvs); i += listPage {
		starts = append(starts, string(keys.Kvs[i].Key))
	}
	keys = nil
	for i, start := range starts {
		pageEnd := end
		if i+1 < len(starts) {
			pageEnd = starts[i+1]
		}
		r, err := s.client.Get(ctx, start, clientv3.WithRange(pageEnd), clientv3.WithRev(rev))
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", kind.Plural(), wrapEtcd(err))
		}
		if err := each(r); err != nil {
			return 0, err
		}
	}
	return rev, nil
}

// RevisionsAt calls fn with the namespace (empty for a kind that has
// none), name and revision of every stored object of kind, in key order,
// as of revision rev. It reads etcd's in-memory index alone: no value is
// read, sent or decoded, so that a check of a copy kept by a watch costs
// a small part of a list.
func (s *Store) RevisionsAt(ctx context.Context, kind api.Kind, rev int64, fn func(namespace, name string, modRev int64)) error {
	prefix := s.prefixOf(kind, "")
	r, err := s.client.Get(ctx, prefix, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
	if errors.Is(err, rpctypes.ErrCompacted) || rpctypes.Error(err) == rpctypes.ErrCompacted {
		return fmt.Errorf("list %s at revision %d: %w: revision compacted", kind.Plural(), rev, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", kind.Plural(), wrapEtcd(err))
	}
	for _, kv := range r.Kvs {
		ns, name := "", string(kv.Key[len(prefix):])
		if kind.Namespaced() {
			ns, name, _ = strings.Cut(name, "/")
		}
		fn(ns, name, kv.ModRevision)
	}
	return nil
}

// Create stores a new object, giving it a UID, a creation time and its
// revision (all set in obj). It fails with ErrAlreadyExists when the name
// is taken and ErrInvalidArgument when obj does not validate.
func (s *Store) Create(ctx context.Context, obj api.Object) error {
	return s.Txn().Create(obj).Commit(ctx)
}

// CreateMany creates objects in as few transactions as etcd allows. Each
// transaction is all-or-nothing, but objects beyond the first
// transaction's limits (128 writes on an external etcd, 1024 embedded;
// 1 MiB) go in later ones, which the failure of an earlier one leaves
// unwritten. An object that does not validate fails them all, unwritten.
func (s *Store) CreateMany(ctx context.Context, objs []api.Object) error {
	all := s.Txn()
	for _, o := range objs {
		all.Create(o)
	}
	// Each encoded once, before any is written: its size says where the
	// transactions split, and one that does not validate writes none.
	now := time.Now().UTC()
	for _, op := range all.ops {
		op.key = s.Key(op.kind, op.ns, op.name)
		if err := all.prepareOp(op, now); err != nil {
			return err
		}
	}
	for ops := all.ops; len(ops) > 0; {
		size, n, writes := 0, 0, 0
		for _, op := range ops {
			w, sz := 1, len(op.value)
			if op.assign != "" {
				w, sz = 2, sz+len(op.assign)+len(op.marker)
			}
			if n > 0 && (writes+w > s.maxOps || size+sz > MaxTxnBytes) {
				break
			}
			size, writes, n = size+sz, writes+w, n+1
		}
		t := &Txn{s: s, ops: ops[:n]}
		if err := t.readCurrent(ctx); err != nil { // keys only: a name twice is refused
			return err
		}
		if err := t.send(ctx); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// MaxTxnBytes is the most bytes a batch writes in one transaction: well
// under etcd's default request limit (1.5 MiB), and small for etcd to
// apply. etcd applies in order, so a single object's write (an API
// client's apply) waits for every batch sent before it, and the bulk lane
// lets two of them in at the least (see bulkBudget): at 1 MiB, on a busy
// server, etcd took over 100 ms to apply one, and a probe's one-object
// apply behind a few waited in etcd for half a second. A quarter of that
// costs etcd little more per object (its write-ahead log and database
// commit many transactions at once).
const MaxTxnBytes = 256 << 10

// Update writes obj's labels and spec, keeping the stored status, UID and
// creation time. With expectRevision != 0 it fails with ErrConflict
// unless the object is still at that revision; with 0 it applies to
// whatever is stored. obj is refreshed with what was stored.
func (s *Store) Update(ctx context.Context, obj api.Object, expectRevision int64) error {
	return s.retryUnconditional(ctx, expectRevision, func() error {
		return s.Txn().Update(obj, expectRevision).Commit(ctx)
	})
}

// UpdateRead is Update at revision rev of an object the caller has just
// read as raw (GetIntoLocalRaw), without reading it again: the write
// fails with ErrConflict unless the object is still at rev, as Update's
// does.
func (s *Store) UpdateRead(ctx context.Context, obj api.Object, raw []byte, rev int64) error {
	if rev == 0 || raw == nil {
		return fmt.Errorf("update %s: %w: the revision and value read are needed", api.RefOf(obj), errdefs.ErrInvalidArgument)
	}
	t := s.Txn().Update(obj, rev)
	op := t.ops[0]
	op.cur, op.curRev = raw, rev
	return t.Commit(ctx)
}

// UpdateStatus writes obj's status, keeping everything else stored. The
// revision works as for Update.
func (s *Store) UpdateStatus(ctx context.Context, obj api.Object, expectRevision int64) error {
	return s.retryUnconditional(ctx, expectRevision, func() error {
		return s.Txn().UpdateStatus(obj, expectRevision).Commit(ctx)
	})
}

// Apply creates obj, or updates its spec when it exists (see Update). It
// reports whether it created it.
func (s *Store) Apply(ctx context.Context, obj api.Object, expectRevision int64) (created bool, err error) {
	if err := s.CheckApply(ctx, obj); err != nil {
		return false, err
	}
	if expectRevision != 0 {
		return false, s.Update(ctx, obj, expectRevision)
	}
	for range maxRetries {
		err := s.Create(ctx, obj)
		if !errdefs.IsAlreadyExists(err) {
			return err == nil, err
		}
		err = s.Update(ctx, obj, 0)
		if !errdefs.IsNotFound(err) {
			return false, err
		}
		// Deleted between the two: try again.
	}
	return false, fmt.Errorf("apply %s: %w: kept changing", api.RefOf(obj), errdefs.ErrConflict)
}

// CheckApply makes the checks of Apply that need the store (a host port
// published twice), without writing: a dry run's.
func (s *Store) CheckApply(ctx context.Context, obj api.Object) error {
	if svc, ok := obj.(*api.Service); ok {
		return s.checkHostPorts(ctx, svc)
	}
	return nil
}

// Delete removes an object (and its node assignment). With
// expectRevision != 0 it fails with ErrConflict unless the object is
// still at that revision.
func (s *Store) Delete(ctx context.Context, kind api.Kind, namespace, name string, expectRevision int64) error {
	return s.retryUnconditional(ctx, expectRevision, func() error {
		return s.Txn().Delete(kind, namespace, name, expectRevision).Commit(ctx)
	})
}

const maxRetries = 20

// retryUnconditional retries a read-modify-write that lost a race, when
// the caller did not ask for a particular revision.
func (s *Store) retryUnconditional(ctx context.Context, expectRevision int64, f func() error) error {
	for i := 0; ; i++ {
		err := f()
		if expectRevision != 0 || !errdefs.IsConflict(err) || i == maxRetries || ctx.Err() != nil {
			return err
		}
	}
}

// Binding places one instance on a node.
type Binding struct {
	Namespace string
	Name      string
	Node      string
	CPUSet    []int
	// Revision is the instance revision the scheduler planned with; 0
	// binds whatever is stored, but never an instance already bound
	// elsewhere.
	Revision int64
	// From, for a move (Move), is the node the instance must be bound to
	// now; Status then replaces its status in the same write.
	From   string
	Status *api.InstanceStatus
}

// BindBatch is how many bindings fit in one Bind: each writes the
// instance, its new assignment key and may delete an old one.
func (s *Store) BindBatch() int { return max(1, s.maxOps/3) }

// Bind binds instances to nodes in one transaction: it sets each
// instance's node and CPU set, moves it to Scheduled and writes its
// assignment key. All or none are bound; a stale revision is
// ErrConflict.
func (s *Store) Bind(ctx context.Context, bindings []Binding) error {
	t := s.Txn()
	for _, b := range bindings {
		t.bind(b)
	}
	return t.Commit(ctx)
}

// BindOne binds one instance as Bind does. When b names no revision, a
// write that got in between (a status the controller or the instance's
// node wrote) does not fail it: the instance is read and checked again.
func (s *Store) BindOne(ctx context.Context, b Binding) error {
	return s.retryUnconditional(ctx, b.Revision, func() error { return s.Bind(ctx, []Binding{b}) })
}

// Move rebinds an instance running on node b.From to node b.Node, with
// b.Status as its status, in one write: the end of a live migration,
// where the instance's container has been restored on b.Node. Its
// assignment key moves with it, so the old node's agent lets go of it
// and the new one's takes it. An instance bound elsewhere, or finished
// or lost meanwhile, is ErrFailedPrecondition.
func (s *Store) Move(ctx context.Context, b Binding) error {
	if b.From == "" || b.Status == nil {
		return fmt.Errorf("move %s: %w: the node it leaves and its new status are needed", api.Ref(api.KindInstance, b.Namespace, b.Name), errdefs.ErrInvalidArgument)
	}
	t := s.Txn()
	t.bind(b)
	return t.Commit(ctx)
}

// RecordEvent stores an event, naming it after its object when it has no
// name and timing it now when it has no time. Events expire after the
// store's EventTTL, and the oldest are dropped beyond MaxEvents.
func (s *Store) RecordEvent(ctx context.Context, ev *api.Event) error {
	if IsAuditName(ev.Metadata.Name) {
		return fmt.Errorf("%s: %w: metadata.name: the suffix %s is kept for the server's audit events", api.RefOf(ev), errdefs.ErrInvalidArgument, auditSuffix)
	}
	return s.recordEvent(ctx, ev, "")
}

// RecordAuditEvent stores an event as RecordEvent does, as an audit event
// (who reached into an instance: exec, attach, cp, port-forward). Each
// kind of audit event, told by its reason, has a quota of MaxEvents of
// its own: no flood of other events, nor of audit events of another
// kind (a busy port-forward), pushes out the record of an exec. Only the
// server records them: no name a client may give an event has the audit
// form (IsAuditName).
func (s *Store) RecordAuditEvent(ctx context.Context, ev *api.Event) error {
	kind := AuditKind(ev.Reason)
	if kind == "" {
		return fmt.Errorf("%s: %w: reason: an audit event's reason names its kind", api.RefOf(ev), errdefs.ErrInvalidArgument)
	}
	return s.recordEvent(ctx, ev, "-"+kind+auditSuffix)
}

// AuditKind is the kind of audit event a reason makes: its letters and
// digits, in lower case, at most 16 (Exec, exec and E-X-E-C are one).
func AuditKind(reason string) string {
	kind := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		return -1
	}, strings.ToLower(reason))
	return kind[:min(len(kind), 16)]
}

// IsAuditName says whether name has the form of an audit event's, which
// only RecordAuditEvent gives.
func IsAuditName(name string) bool { return strings.HasSuffix(name, auditSuffix) }

// auditSuffix ends the names of audit events (BASE-TIME-KIND-audit),
// which their keys then tell apart for pruning. Other generated names end
// in hex digits, and RecordEvent refuses a name given with it.
const auditSuffix = "-audit"

// eventQuota is the quota an event's key counts against: "" for an
// event other than an audit one, its kind for an audit event. (One named
// before kinds had quotas, BASE-TIME-audit, counts alone and goes with
// the TTL.)
func eventQuota(key string) string {
	name, ok := strings.CutSuffix(key, auditSuffix)
	if !ok {
		return ""
	}
	return name[strings.LastIndexByte(name, '-')+1:]
}

func (s *Store) recordEvent(ctx context.Context, ev *api.Event, suffix string) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.Metadata.Namespace == "" {
		ev.Metadata.Namespace = ev.Object.Namespace
	}
	if ev.Metadata.Name == "" || suffix != "" {
		base := ev.Object.Name
		if len(base) > 40-len(suffix) {
			base = base[:40-len(suffix)]
		}
		// The time orders names; the random tail keeps two events of one
		// nanosecond apart.
		ev.Metadata.Name = fmt.Sprintf("%s-%x%s%s", base, ev.Time.UnixNano(), newUID()[:4], suffix)
	}
	lease, err := s.eventLeaseID(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", api.RefOf(ev), err)
	}
	t := s.Txn()
	t.lease = lease
	if err := t.Create(ev).Commit(ctx); err != nil {
		return err
	}
	if s.eventCount.Add(1)%pruneEvery == 0 {
		if err := s.PruneEvents(ctx); err != nil {
			s.log.Warn("pruning events", "err", err)
		}
	}
	return nil
}

// pruneEvery is how many recorded events trigger a prune: the history
// overshoots MaxEvents by at most that many.
const pruneEvery = 64

// PruneEvents deletes the oldest events beyond MaxEvents, and the oldest
// audit events of each kind beyond MaxEvents of their own.
func (s *Store) PruneEvents(ctx context.Context) error {
	prefix := s.prefixOf(api.KindEvent, "")
	r, err := s.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return fmt.Errorf("prune events: %w", wrapEtcd(err))
	}
	quotas := map[string][]string{}
	for _, kv := range r.Kvs {
		k := string(kv.Key)
		q := eventQuota(k)
		quotas[q] = append(quotas[q], k)
	}
	for _, ks := range quotas {
		for extra := len(ks) - s.maxEvent; extra > 0; {
			n := min(extra, s.maxOps)
			ops := make([]clientv3.Op, 0, n)
			for _, k := range ks[:n] {
				ops = append(ops, clientv3.OpDelete(k))
			}
			if _, err := s.client.Txn(ctx).Then(ops...).Commit(); err != nil {
				return fmt.Errorf("prune events: %w", wrapEtcd(err))
			}
			ks, extra = ks[n:], extra-n
		}
	}
	return nil
}

// eventLeaseID shares one lease among the events of half a TTL, so that
// events cost no lease each and live between TTL/2 and TTL.
func (s *Store) eventLeaseID(ctx context.Context) (clientv3.LeaseID, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	now := time.Now()
	if s.eventLease != 0 && now.Before(s.eventLeaseTo) {
		return s.eventLease, nil
	}
	r, err := s.client.Grant(ctx, int64(s.eventTTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("event lease: %w", wrapEtcd(err))
	}
	s.eventLease, s.eventLeaseTo = r.ID, now.Add(s.eventTTL/2)
	return r.ID, nil
}

// Assignments lists the instances bound to node, from its assignment
// keys, each with its status as bound, and the revision to watch from
// (plus one).
func (s *Store) Assignments(ctx context.Context, node string) ([]*api.Instance, int64, error) {
	return s.assignments(ctx, node, false)
}

// AssignmentsCurrent is Assignments, with each instance's status as it is
// now rather than as it was bound: what an agent that starts over needs
// (the container and health it last reported), read at the same revision
// as the assignments. It reads only the node's own instances, in batched
// transactions, where listing every instance of the cluster would cost
// each restarting agent O(cluster).
func (s *Store) AssignmentsCurrent(ctx context.Context, node string) ([]*api.Instance, int64, error) {
	return s.assignments(ctx, node, true)
}

func (s *Store) assignments(ctx context.Context, node string, current bool) ([]*api.Instance, int64, error) {
	values, revs, rev, err := s.assigned(ctx, node, current)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*api.Instance, len(values))
	for i, v := range values {
		var in api.Instance
		if err := decode(&in, v, revs[i]); err != nil {
			return nil, 0, fmt.Errorf("assignments of node %q: %w", node, err)
		}
		out[i] = &in
	}
	return out, rev, nil
}

// InstancesNamed reads the instances named by refs ({namespace, name}),
// in order, nil for one that does not exist, and their stored values (for
// Txn.SetStatus); in transactions of reads as large as etcd takes, each at
// one revision. Each instance holds only what a status report is checked
// against (see instanceHead): its metadata, node, template containers and
// status; the stored value has the rest.
func (s *Store) InstancesNamed(ctx context.Context, refs [][2]string) ([]*api.Instance, [][]byte, error) {
	out := make([]*api.Instance, len(refs))
	raw := make([][]byte, len(refs))
	for lo := 0; lo < len(refs); lo += s.maxOps {
		hi := min(len(refs), lo+s.maxOps)
		ops := make([]clientv3.Op, 0, hi-lo)
		for _, ref := range refs[lo:hi] {
			ops = append(ops, clientv3.OpGet(s.Key(api.KindInstance, defaultNS(api.KindInstance, ref[0]), ref[1])))
		}
		r, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, nil, fmt.Errorf("read %d instances: %w", hi-lo, wrapEtcd(err))
		}
		// One allocation for the read's instances and one for their
		// templates, each decoded in place: an instance and a head apiece
		// were most of what a batch of status reports allocated apart
		// from etcd's own.
		insts, tmpls := make([]api.Instance, len(r.Responses)), make([]api.Template, len(r.Responses))
		for i, resp := range r.Responses {
			kvs := resp.GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				continue
			}
			in := &insts[i]
			in.Spec.Template = &tmpls[i]
			h := instanceHead{Metadata: &in.Metadata, Status: &in.Status}
			h.Spec.Node, h.Spec.Template.Containers = &in.Spec.Node, &in.Spec.Template.Containers
			if err := json.Unmarshal(kvs[0].Value, &h); err != nil {
				return nil, nil, fmt.Errorf("read %s: %w", kvs[0].Key, err)
			}
			in.Metadata.Revision, in.Metadata.Kind = kvs[0].ModRevision, api.KindInstance
			out[lo+i], raw[lo+i] = in, kvs[0].Value
		}
	}
	return out, raw, nil
}

// instanceHead is the part of a stored instance a node's status report is
// checked against: decoding the whole of each instance of a node's batch
// (template, environment, placement, labels) was most of what the batch
// cost the server. Its fields point into the instance it fills.
type instanceHead struct {
	Metadata *api.Metadata `json:"metadata"`
	Spec     struct {
		Node     *string `json:"node"`
		Template struct {
			Containers *[]api.Container `json:"containers"`
		} `json:"template"`
	} `json:"spec"`
	Status *api.InstanceStatus `json:"status"`
}

// mergeRaw returns base's JSON object with field replaced by from's.
func mergeRaw(base, from []byte, fields ...string) ([]byte, error) {
	var b, f map[string]json.RawMessage
	if err := json.Unmarshal(base, &b); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(from, &f); err != nil {
		return nil, err
	}
	for _, k := range fields {
		if v, ok := f[k]; ok {
			b[k] = v
		} else {
			delete(b, k)
		}
	}
	return json.Marshal(b)
}

// DataDigest is the digest of the stored config or secret r names in
// namespace ns (api.Config.Digest, api.Secret.Digest); "" when there is
// none.
func (s *Store) DataDigest(ctx context.Context, ns string, r api.ObjectRef) string {
	switch r.Kind {
	case api.KindConfig:
		var c api.Config
		if s.GetInto(ctx, &c, ns, r.Name) == nil {
			return c.Digest
		}
	case api.KindSecret:
		var c api.Secret
		if s.GetInto(ctx, &c, ns, r.Name) == nil {
			return c.Digest
		}
	}
	return ""
}
