package store

import (
	"bytes"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api/errdefs"
)

// Fenced returns a handle on the same store whose every transactional
// write (Txn.Commit, and so Create, CreateMany, Update, UpdateStatus,
// Apply, Delete, Bind and RecordEvent) also requires cmps to hold, in the
// same etcd transaction: a leader fences its writes on its term
// (leader.Term.Cmp), so that none lands once another term began, however
// long the writer was paused. A write that fails because a fence
// comparison no longer holds is errdefs.ErrFailedPrecondition ("no
// longer the leader"), never ErrConflict: retrying cannot help. When an
// object's own comparison failed too, the fence is what is reported.
//
// Reads and watches are as s's. The writes that are not transactions of
// objects are not fenced: node heartbeats (KeepNodeAlive, ExpireNode),
// PruneEvents, join tokens and shared values; none of them is a
// leader's.
//
// The handle shares s's client, its etcd and LastWrite; a handle of a
// fenced one requires both fences. Close the store Open returned, not
// this handle.
func (s *Store) Fenced(cmps ...clientv3.Cmp) *Store {
	fence := make([]clientv3.Cmp, 0, len(s.fence)+len(cmps))
	fence = append(fence, s.fence...)
	for i := range cmps {
		// A copy of its own: the caller may change cmps afterwards.
		fence = append(fence, cmps[i].Clone())
	}
	// Each comparison takes an operation of the transaction's If and one
	// of its Else (the read that explains a failure).
	return &Store{conn: s.conn, fence: fence, maxOps: s.maxOps - len(cmps)}
}

// fenceReads are the reads that tell whether each fence comparison held
// when a fenced write failed: one range per comparison, in order.
func (s *Store) fenceReads(rev int64) []clientv3.Op {
	reads := make([]clientv3.Op, 0, len(s.fence))
	for i := range s.fence {
		c := s.fence[i].GetCompare()
		opts := []clientv3.OpOption{clientv3.WithRev(rev)}
		if len(c.RangeEnd) > 0 {
			opts = append(opts, clientv3.WithRange(string(c.RangeEnd)))
		}
		if c.Target != etcdserverpb.Compare_VALUE {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		reads = append(reads, clientv3.OpGet(string(c.Key), opts...))
	}
	return reads
}

// fenceFailure returns the error of the first fence comparison that did
// not hold against its read in resps (as fenceReads made them, in the
// same transaction), or nil when all held. ref names the write.
func (s *Store) fenceFailure(ref string, resps []*etcdserverpb.ResponseOp) error {
	for i := range s.fence {
		c := s.fence[i].GetCompare()
		kvs := resps[i].GetResponseRange().GetKvs()
		held, kv := compareHolds(c, kvs)
		if held {
			continue
		}
		what := "it is gone"
		switch {
		case kv == nil:
		case c.Result == etcdserverpb.Compare_EQUAL:
			what = fmt.Sprintf("%s is %s, not %s", targetName(c.Target), targetOf(c.Target, kv), wanted(c))
		default:
			what = fmt.Sprintf("%s is %s, the fence wants %s %s", targetName(c.Target), targetOf(c.Target, kv), resultOp(c.Result), wanted(c))
		}
		return fmt.Errorf("%s: %w: no longer the leader: the election key %q changed: %s", ref, errdefs.ErrFailedPrecondition, c.Key, what)
	}
	return nil
}

// compareHolds evaluates c as etcd does against the keys in its range
// (applyCompare): a missing key compares as a zero key-value, except that
// a value comparison on one fails. When c fails it returns the first key
// that fails it, nil when there is none.
func compareHolds(c *etcdserverpb.Compare, kvs []*mvccpb.KeyValue) (bool, *mvccpb.KeyValue) {
	if len(kvs) == 0 {
		if c.Target == etcdserverpb.Compare_VALUE {
			return false, nil
		}
		return compareKV(c, &mvccpb.KeyValue{}), nil
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false, kv
		}
	}
	return true, nil
}

func compareKV(c *etcdserverpb.Compare, kv *mvccpb.KeyValue) bool {
	var r int
	switch c.Target {
	case etcdserverpb.Compare_VALUE:
		r = bytes.Compare(kv.Value, c.GetValue())
	case etcdserverpb.Compare_CREATE:
		r = cmpInt(kv.CreateRevision, c.GetCreateRevision())
	case etcdserverpb.Compare_MOD:
		r = cmpInt(kv.ModRevision, c.GetModRevision())
	case etcdserverpb.Compare_VERSION:
		r = cmpInt(kv.Version, c.GetVersion())
	case etcdserverpb.Compare_LEASE:
		r = cmpInt(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case etcdserverpb.Compare_EQUAL:
		return r == 0
	case etcdserverpb.Compare_NOT_EQUAL:
		return r != 0
	case etcdserverpb.Compare_GREATER:
		return r > 0
	case etcdserverpb.Compare_LESS:
		return r < 0
	}
	return false
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func targetName(t etcdserverpb.Compare_CompareTarget) string {
	switch t {
	case etcdserverpb.Compare_CREATE:
		return "its create revision"
	case etcdserverpb.Compare_MOD:
		return "its mod revision"
	case etcdserverpb.Compare_VERSION:
		return "its version"
	case etcdserverpb.Compare_LEASE:
		return "its lease"
	}
	return "its value"
}

func targetOf(t etcdserverpb.Compare_CompareTarget, kv *mvccpb.KeyValue) string {
	switch t {
	case etcdserverpb.Compare_CREATE:
		return fmt.Sprint(kv.CreateRevision)
	case etcdserverpb.Compare_MOD:
		return fmt.Sprint(kv.ModRevision)
	case etcdserverpb.Compare_VERSION:
		return fmt.Sprint(kv.Version)
	case etcdserverpb.Compare_LEASE:
		return fmt.Sprintf("%x", kv.Lease)
	}
	return fmt.Sprintf("%q", kv.Value)
}

func wanted(c *etcdserverpb.Compare) string {
	switch c.Target {
	case etcdserverpb.Compare_CREATE:
		return fmt.Sprint(c.GetCreateRevision())
	case etcdserverpb.Compare_MOD:
		return fmt.Sprint(c.GetModRevision())
	case etcdserverpb.Compare_VERSION:
		return fmt.Sprint(c.GetVersion())
	case etcdserverpb.Compare_LEASE:
		return fmt.Sprintf("%x", c.GetLease())
	}
	return fmt.Sprintf("%q", c.GetValue())
}

func resultOp(r etcdserverpb.Compare_CompareResult) string {
	switch r {
	case etcdserverpb.Compare_NOT_EQUAL:
		return "!="
	case etcdserverpb.Compare_GREATER:
		return ">"
	case etcdserverpb.Compare_LESS:
		return "<"
	}
	return "="
}
