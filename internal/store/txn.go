package store

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// Txn gathers writes to several objects and commits them in one etcd
// transaction: all happen at one revision, or none does. Build one with
// Store.Txn, add writes, then Commit. A Txn is used once.
type Txn struct {
	s     *Store
	ops   []*txnOp
	lease clientv3.LeaseID
}

type opType int

const (
	opCreate opType = iota + 1
	opUpdate
	opUpdateStatus
	opDelete
	opBind
	opSetStatus
)

type txnOp struct {
	typ      opType
	obj      api.Object // nil for deletes and binds
	kind     api.Kind
	ns, name string
	expect   int64
	binding  Binding
	status   *api.InstanceStatus // opSetStatus's
	// stored is what an opUpdateStatus writes, decoded: obj becomes it
	// once written.
	stored api.Object

	key    string
	cur    []byte // stored value, for all but creates
	curRev int64
	value  []byte // value to write
	// same: a status write whose status is the stored one's, byte for
	// byte: its comparison holds the transaction to the value read, but
	// nothing is put (see prepareSetStatus).
	same    bool
	assign  string // assignment key to put marker under
	marker  []byte // what the assignment key holds (assignMarker)
	unassig string // assignment key to delete
}

// Txn starts a transaction.
func (s *Store) Txn() *Txn { return &Txn{s: s} }

// Create adds the creation of obj.
func (t *Txn) Create(obj api.Object) *Txn {
	api.Default(obj)
	m := obj.GetMetadata()
	t.ops = append(t.ops, &txnOp{typ: opCreate, obj: obj, kind: obj.GetKind(), ns: m.Namespace, name: m.Name})
	return t
}

// Update adds a spec update of obj (see Store.Update).
func (t *Txn) Update(obj api.Object, expectRevision int64) *Txn {
	api.Default(obj)
	m := obj.GetMetadata()
	t.ops = append(t.ops, &txnOp{typ: opUpdate, obj: obj, kind: obj.GetKind(), ns: m.Namespace, name: m.Name, expect: expectRevision})
	return t
}

// UpdateStatus adds a status update of obj (see Store.UpdateStatus).
func (t *Txn) UpdateStatus(obj api.Object, expectRevision int64) *Txn {
	api.Default(obj)
	m := obj.GetMetadata()
	t.ops = append(t.ops, &txnOp{typ: opUpdateStatus, obj: obj, kind: obj.GetKind(), ns: m.Namespace, name: m.Name, expect: expectRevision})
	return t
}

// Delete adds the deletion of an object.
func (t *Txn) Delete(kind api.Kind, namespace, name string, expectRevision int64) *Txn {
	t.ops = append(t.ops, &txnOp{typ: opDelete, kind: kind, ns: defaultNS(kind, namespace), name: name, expect: expectRevision})
	return t
}

// SetStatus adds the status update of an instance the caller has just
// read: cur, at its revision, whose stored value is raw. The write fails
// with a conflict if the instance changed since; it does not read the
// instance again, nor decode and validate the spec it leaves as it is,
// nor decode what it wrote (cur is not refreshed). The caller checks st
// (api.Instance.ValidateStatus). A node's batch of reports, read and
// checked at once, is what it is for: UpdateStatus cost each report a
// second read and three more passes over the whole instance.
func (t *Txn) SetStatus(cur *api.Instance, raw []byte, st api.InstanceStatus) *Txn {
	m := cur.Metadata
	t.ops = append(t.ops, &txnOp{typ: opSetStatus, kind: api.KindInstance, ns: defaultNS(api.KindInstance, m.Namespace), name: m.Name,
		cur: raw, curRev: m.Revision, status: &st})
	return t
}

func (t *Txn) bind(b Binding) {
	b.Namespace = defaultNS(api.KindInstance, b.Namespace)
	t.ops = append(t.ops, &txnOp{typ: opBind, kind: api.KindInstance, ns: b.Namespace, name: b.Name, expect: b.Revision, binding: b})
}

func (op *txnOp) ref() string { return api.Ref(op.kind, op.ns, op.name) }

// Commit writes everything or nothing. A stale revision or an object
// changed since it was read is ErrConflict, a taken name ErrAlreadyExists,
// a missing object ErrNotFound, a fence of the Store (see Fenced) that no
// longer holds ErrFailedPrecondition; the error names the object. Created
// and updated objects are refreshed in place with what was stored.
func (t *Txn) Commit(ctx context.Context) error {
	s := t.s
	if len(t.ops) == 0 {
		return nil
	}
	if len(t.ops) > s.maxOps {
		return fmt.Errorf("transaction of %d writes: %w: at most %d", len(t.ops), errdefs.ErrInvalidArgument, s.maxOps)
	}
	if err := t.readCurrent(ctx); err != nil {
		return err
	}
	now := time.Now().UTC()
	for _, op := range t.ops {
		if err := t.prepareOp(op, now); err != nil {
			return err
		}
	}
	return t.send(ctx)
}

// send writes the prepared ops in one etcd transaction.
func (t *Txn) send(ctx context.Context) error {
	s := t.s
	cmps := append(make([]clientv3.Cmp, 0, len(s.fence)+len(t.ops)), s.fence...)
	writes := make([]clientv3.Op, 0, len(t.ops)+len(t.ops)/2)
	weight := 0 // bytes written, for the bulk lane
	for _, op := range t.ops {
		if !op.same {
			weight += len(op.key) + len(op.value) + len(op.assign) + len(op.marker) + len(op.unassig)
		}
		// The value as a string without a copy: OpPut copies it into its
		// request at once, and op.value is never written again. Copies
		// here (when the assignment key held one too) were a twentieth of
		// what a server allocated while 300,000 instances started.
		value := unsafe.String(unsafe.SliceData(op.value), len(op.value))
		if op.typ == opCreate {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(op.key), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.key), "=", op.curRev))
		}
		switch {
		case op.same:
		case op.typ == opDelete:
			writes = append(writes, clientv3.OpDelete(op.key))
		default:
			var opts []clientv3.OpOption
			if t.lease != 0 {
				opts = append(opts, clientv3.WithLease(t.lease))
			}
			writes = append(writes, clientv3.OpPut(op.key, value, opts...))
		}
		if op.unassig != "" && op.unassig != op.assign {
			writes = append(writes, clientv3.OpDelete(op.unassig))
		}
		if op.assign != "" {
			writes = append(writes, clientv3.OpPut(op.assign, string(op.marker)))
		}
	}
	// A bound instance writes its assignment key too: etcd counts those.
	if len(writes) > s.maxOps {
		return fmt.Errorf("transaction of %d writes (with assignment keys): %w: at most %d", len(writes), errdefs.ErrInvalidArgument, s.maxOps)
	}
	// What a failure is about is read in the else branch of a single
	// object's write, where a lost compare-and-swap is common. A batch's
	// reads went into each of its raft entries (etcd proposes both
	// branches), an Op each built for nothing: a fortieth of what a server
	// allocated while 100,000 instances started. It reads them after a
	// failure instead (failed). A batch waits its turn in the bulk lane;
	// a single object's write goes straight to etcd (see bulkBudget).
	batch := len(t.ops) > 1
	var elses []clientv3.Op
	if !batch {
		elses = t.failureReads(0)
	}
	r, err := s.commit(ctx, batch || isBulk(ctx), int64(weight), s.client.Txn(ctx).If(cmps...).Then(writes...).Else(elses...))
	if err != nil {
		return fmt.Errorf("write %s%s: %w", t.ops[0].ref(), t.more(), err)
	}
	if !r.Succeeded {
		return t.failed(ctx, r, batch)
	}
	if len(writes) > 0 {
		s.noteWrite(r.Header.Revision)
	}
	return t.refresh(r.Header.Revision)
}

// refresh makes the written objects what was stored at rev.
func (t *Txn) refresh(rev int64) error {
	for _, op := range t.ops {
		if op.typ == opCreate {
			// What was stored is the object as it stands (prepareCreate
			// encoded it): only its revision is new. Decoding it again cost
			// a creation as much as encoding it.
			m := op.obj.GetMetadata()
			m.Revision, m.Kind = rev, op.obj.GetKind()
			continue
		}
		if op.stored != nil {
			// What was stored, decoded already to validate it.
			reflect.ValueOf(op.obj).Elem().Set(reflect.ValueOf(op.stored).Elem())
			op.obj.GetMetadata().Revision = rev
			continue
		}
		if op.obj != nil {
			if err := decode(op.obj, op.value, rev); err != nil {
				return fmt.Errorf("%s: %w", op.ref(), err)
			}
		}
	}
	return nil
}

// readCurrent keys the ops and reads what updates, deletes and binds
// start from, all at one revision.
//
// When every read names the revision it expects, the member's own state
// is read first, with no raft round: a linearizable read waits until etcd
// has applied all that was committed before it (under load, the
// controller's instance batches: seconds). What it finds at the expected
// revisions is safe to start from, since the write compares each key's
// revision; anything else (a member behind, or a real conflict) is read
// again linearizably, so a stale member never answers a conflict.
func (t *Txn) readCurrent(ctx context.Context) error {
	seen := make(map[string]bool, len(t.ops))
	var reads []*txnOp
	local := true
	for _, op := range t.ops {
		op.key = t.s.Key(op.kind, op.ns, op.name)
		if seen[op.key] {
			return fmt.Errorf("%s: %w: written twice in one transaction", op.ref(), errdefs.ErrInvalidArgument)
		}
		seen[op.key] = true
		if op.typ != opCreate && op.typ != opSetStatus && op.cur == nil {
			reads = append(reads, op)
			local = local && op.expect != 0
		}
	}
	if len(reads) == 0 {
		return nil
	}
	if local {
		if ok, err := t.readAt(ctx, reads, true); err != nil || ok {
			return err
		}
	}
	_, err := t.readAt(ctx, reads, false)
	return err
}

// readAt reads ops' keys in one transaction, from the member's own state
// when local, and reports whether each is at the revision its op expects
// (any when 0). Read linearizably, an op's missing key or other revision
// is the error; read locally, it is only false.
func (t *Txn) readAt(ctx context.Context, ops []*txnOp, local bool) (bool, error) {
	reads := make([]clientv3.Op, len(ops))
	for i, op := range ops {
		if local {
			reads[i] = clientv3.OpGet(op.key, clientv3.WithSerializable())
		} else {
			reads[i] = clientv3.OpGet(op.key)
		}
	}
	start := time.Now()
	r, err := t.s.client.Txn(ctx).Then(reads...).Commit()
	timingFrom(ctx).readSince(start)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", ops[0].ref(), wrapEtcd(err))
	}
	for i, op := range ops {
		kvs := r.Responses[i].GetResponseRange().Kvs
		if local && (len(kvs) == 0 || kvs[0].ModRevision != op.expect) {
			return false, nil
		}
		if len(kvs) == 0 {
			return false, fmt.Errorf("%s: %w", op.ref(), errdefs.ErrNotFound)
		}
		op.cur, op.curRev = kvs[0].Value, kvs[0].ModRevision
		if op.expect != 0 && op.expect != op.curRev {
			return false, fmt.Errorf("%s: %w: revision %d is stale, the object is at %d", op.ref(), errdefs.ErrConflict, op.expect, op.curRev)
		}
	}
	return true, nil
}

// more says how many more objects than the first the transaction writes.
func (t *Txn) more() string {
	if len(t.ops) < 2 {
		return ""
	}
	return fmt.Sprintf(" and %d more", len(t.ops)-1)
}

// failed explains the failure of the transaction whose response is r:
// from its else branch's reads, or, for a batch, which has none, from
// the same reads made after it. A failed transaction wrote nothing, so
// its revision is the state its comparisons saw.
func (t *Txn) failed(ctx context.Context, r *clientv3.TxnResponse, batch bool) error {
	if !batch {
		return t.explainFailure(r.Responses)
	}
	rr, err := t.s.client.Txn(ctx).Then(t.failureReads(r.Header.Revision)...).Commit()
	if err != nil {
		return fmt.Errorf("write %s%s: %w: and reading why: %w", t.ops[0].ref(), t.more(), errdefs.ErrConflict, wrapEtcd(err))
	}
	return t.explainFailure(rr.Responses)
}

// explainFailure names the first write whose comparison failed, or the
// fence, which comes first: once the term is over, nothing else matters.
func (t *Txn) explainFailure(resps []*etcdserverpb.ResponseOp) error {
	if err := t.s.fenceFailure(t.ops[0].ref(), resps[len(t.ops):]); err != nil {
		return err
	}
	for i, op := range t.ops {
		kvs := resps[i].GetResponseRange().Kvs
		switch {
		case op.typ == opCreate && len(kvs) > 0:
			return fmt.Errorf("%s: %w", op.ref(), errdefs.ErrAlreadyExists)
		case op.typ != opCreate && len(kvs) == 0:
			return fmt.Errorf("%s: %w: deleted meanwhile", op.ref(), errdefs.ErrConflict)
		case op.typ != opCreate && kvs[0].ModRevision != op.curRev:
			return fmt.Errorf("%s: %w: changed from revision %d to %d meanwhile", op.ref(), errdefs.ErrConflict, op.curRev, kvs[0].ModRevision)
		}
	}
	return fmt.Errorf("%s: %w", t.ops[0].ref(), errdefs.ErrConflict)
}

// failureReads read, at revision rev (0 for the latest), what the
// transaction's comparisons are about, as explainFailure takes them: each
// object's key, in order, then the fence's (fenceReads).
func (t *Txn) failureReads(rev int64) []clientv3.Op {
	reads := make([]clientv3.Op, 0, len(t.ops)+len(t.s.fence))
	for _, op := range t.ops {
		reads = append(reads, clientv3.OpGet(op.key, clientv3.WithKeysOnly(), clientv3.WithRev(rev)))
	}
	return append(reads, t.s.fenceReads(rev)...)
}

// prepareOp computes the value an op writes and the assignment keys it
// touches.
func (t *Txn) prepareOp(op *txnOp, now time.Time) error {
	var err error
	switch op.typ {
	case opCreate:
		err = op.prepareCreate(now)
	case opUpdate:
		err = op.prepareUpdate()
	case opUpdateStatus:
		err = op.prepareStatus()
	case opSetStatus:
		err = op.prepareSetStatus()
	case opBind:
		err = op.prepareBind(now)
	}
	if err != nil || op.kind != api.KindInstance {
		return err
	}
	return t.assignKeys(op)
}

func (op *txnOp) prepareCreate(now time.Time) error {
	m := op.obj.GetMetadata()
	m.UID, m.CreatedAt, m.Revision = newUID(), now, 0
	if err := prepare(op.obj); err != nil {
		return err
	}
	var err error
	if op.value, err = encode(op.obj); err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	return nil
}

func (op *txnOp) prepareUpdate() error {
	if err := prepare(op.obj); err != nil {
		return err
	}
	stored, err := api.New(op.kind)
	if err != nil {
		return err
	}
	if err := decode(stored, op.cur, op.curRev); err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	// Identity is the store's, not the writer's.
	m, sm := op.obj.GetMetadata(), stored.GetMetadata()
	m.UID, m.CreatedAt = sm.UID, sm.CreatedAt
	// An instance's node and CPUs are the scheduler's, written by Bind
	// only: a controller re-applying a template must not unbind it.
	if in, ok := op.obj.(*api.Instance); ok {
		si := stored.(*api.Instance)
		in.Spec.Node, in.Spec.CPUSet = si.Spec.Node, si.Spec.CPUSet
	}
	b, err := encode(op.obj)
	if err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	if op.kind.HasStatus() {
		b, err = mergeRaw(b, op.cur, "status")
		if err != nil {
			return fmt.Errorf("%s: %w", op.ref(), err)
		}
	}
	op.value = b
	return nil
}

func (op *txnOp) prepareStatus() error {
	if !op.kind.HasStatus() {
		return fmt.Errorf("%s: %w: the kind has no status", op.ref(), errdefs.ErrInvalidArgument)
	}
	b, err := encode(op.obj)
	if err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	// The status spliced into the stored JSON, as prepareSetStatus does:
	// decoding both into maps and encoding the merge was most of what a
	// controller's batch of statuses cost (thousands of instances marked
	// Lost at once).
	if st := gjson.GetBytes(b, "status"); st.Exists() {
		op.value, err = sjson.SetRawBytes(op.cur, "status", []byte(st.Raw))
	} else {
		op.value, err = sjson.DeleteBytes(op.cur, "status")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	merged, _ := api.New(op.kind)
	if err := decode(merged, op.value, 0); err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	op.stored = merged
	if in, ok := merged.(*api.Instance); ok {
		if err := in.ValidateStatus(); err != nil {
			return fmt.Errorf("%s: %w", op.ref(), err)
		}
	}
	if err := merged.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	return nil
}

func (op *txnOp) prepareSetStatus() error {
	b, err := json.Marshal(op.status)
	if err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	// A node reports again what it reported before (every instance once
	// more after its agent restarts): a put of the same value would be a
	// revision of the whole instance kept until the next compaction, and
	// an event sent to every watcher, for no change.
	if cur := gjson.GetBytes(op.cur, "status"); cur.Exists() && cur.Raw == string(b) {
		op.value, op.same = op.cur, true
		return nil
	}
	// The status spliced into the stored JSON, the rest left as it is:
	// mergeRaw's decoding and encoding of the whole instance was most of
	// what a status write cost.
	if op.value, err = sjson.SetRawBytes(op.cur, "status", b); err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	return nil
}

// prepareBind sets the instance's node, CPU set and status in its stored
// JSON, the rest left as it is: a bind of each instance of an apply
// decoded and encoded the whole of it (template, environment, labels),
// where it changes three fields and reads two.
func (op *txnOp) prepareBind(now time.Time) error {
	cur := gjson.GetManyBytes(op.cur, "spec.node", "status.phase", "status")
	node, phase := cur[0].String(), api.Phase(cur[1].String())
	b := op.binding
	if err := api.ValidateName(b.Node); err != nil {
		return fmt.Errorf("bind %s: %w: node: %w", op.ref(), errdefs.ErrInvalidArgument, err)
	}
	switch {
	case b.From != "" && node != b.From:
		return fmt.Errorf("move %s from node %q: %w: it is bound to node %q", op.ref(), b.From, errdefs.ErrFailedPrecondition, node)
	case b.From != "" && phase.Terminal():
		return fmt.Errorf("move %s from node %q: %w: it is %s", op.ref(), b.From, errdefs.ErrFailedPrecondition, phase)
	case b.From == "" && node != "" && node != b.Node:
		return fmt.Errorf("bind %s to node %q: %w: already bound to node %q", op.ref(), b.Node, errdefs.ErrFailedPrecondition, node)
	}
	var st api.InstanceStatus
	switch {
	case b.Status != nil:
		st = *b.Status
	case cur[2].Exists():
		if err := json.Unmarshal([]byte(cur[2].Raw), &st); err != nil {
			return fmt.Errorf("%s: stored status: %w", op.ref(), err)
		}
	}
	if st.Phase == "" || st.Phase == api.PhasePending {
		st.Phase = api.PhaseScheduled
		st.ScheduledAt = now
	}
	v, err := sjson.SetBytes(op.cur, "spec.node", b.Node)
	if err == nil && len(b.CPUSet) > 0 {
		v, err = sjson.SetBytes(v, "spec.cpuset", b.CPUSet)
	} else if err == nil && gjson.GetBytes(v, "spec.cpuset").Exists() {
		v, err = sjson.DeleteBytes(v, "spec.cpuset")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	sb, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	if op.value, err = sjson.SetRawBytes(v, "status", sb); err != nil {
		return fmt.Errorf("%s: %w", op.ref(), err)
	}
	return nil
}

// assignKeys keeps the node's assignment key in step with an instance's
// node.
func (t *Txn) assignKeys(op *txnOp) error {
	// Lost is final: the node controller gave the instance up and a
	// replacement may run; a late report from its old node must not revive it.
	was, now := placementOf(op.cur), placementOf(op.value)
	status := op.typ == opUpdateStatus || op.typ == opSetStatus
	if status && was.Status.Phase == api.PhaseLost && now.Status.Phase != api.PhaseLost {
		return fmt.Errorf("%s: %w: it was given up as lost", op.ref(), errdefs.ErrFailedPrecondition)
	}
	// A lost instance is assigned nowhere, so its old node stops it.
	oldNode, newNode := was.Spec.Node, ""
	if op.typ != opDelete && now.Status.Phase != api.PhaseLost {
		newNode = now.Spec.Node
	}
	if oldNode != "" && oldNode != newNode {
		op.unassig = t.s.assignKey(oldNode, op.ns, op.name)
	}
	if newNode != "" && !status {
		op.assign = t.s.assignKey(newNode, op.ns, op.name)
		op.marker = assignMarker(op.value)
	}
	return nil
}

// placement is the part of a stored instance its assignment key follows.
type placement struct {
	Spec struct {
		Node string `json:"node"`
	} `json:"spec"`
	Status struct {
		Phase api.Phase `json:"phase"`
	} `json:"status"`
}

// placementOf reads a stored instance's node and phase (zero for none),
// and those fields alone: each write of an instance reads them from both
// its old and new value, and whole decodes of the two were a tenth of a
// busy server's CPU (json.Unmarshal into the two fields still scanned
// the whole value twice over).
func placementOf(value []byte) placement {
	var p placement
	if value != nil {
		r := gjson.GetManyBytes(value, "spec.node", "status.phase")
		p.Spec.Node, p.Status.Phase = r[0].String(), api.Phase(r[1].String())
	}
	return p
}

// commit commits txn, having waited in the bulk lane for weight bytes
// when lane is set, and adds both waits to the request's Timing. etcd's
// time for the lane's transactions paces the lane (laneTarget); a failed
// write says nothing of it.
func (s *Store) commit(ctx context.Context, lane bool, weight int64, txn clientv3.Txn) (*clientv3.TxnResponse, error) {
	var release func(took time.Duration)
	if lane {
		start := time.Now()
		var err error
		release, err = s.bulk.enter(ctx, weight)
		timingFrom(ctx).laneSince(start)
		if err != nil {
			return nil, fmt.Errorf("waiting for the transactions ahead: %w", err)
		}
	}
	timingFrom(ctx).sawAhead(int(s.writing.Add(1)-1), int(s.laneWriting.Load()))
	if lane {
		s.laneWriting.Add(1)
	}
	start := time.Now()
	r, err := txn.Commit()
	timingFrom(ctx).writeSince(start)
	s.writing.Add(-1)
	if lane {
		s.laneWriting.Add(-1)
	}
	if release != nil {
		took := time.Since(start)
		if err != nil {
			took = 0
		}
		release(took)
	}
	if err != nil {
		return nil, wrapEtcd(err)
	}
	return r, nil
}
