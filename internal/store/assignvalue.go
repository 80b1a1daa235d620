package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
)

// An assignment key stands for the instance written in the same
// transaction, at the same revision: it holds only what the instance's
// key does not keep, the status the instance had then (its "marker").
// The instance's metadata and spec do not change without its assignment
// key being written again, so the instance's value at the key's revision,
// or its latest before the key's deletion, with the marker's status, is
// the copy the key held when it held the whole instance: a third of
// etcd's database after an apply, and half of what each bind wrote.

// assignMarker is what the assignment key of an instance whose stored
// value is value holds.
func assignMarker(value []byte) []byte {
	st := gjson.GetBytes(value, "status")
	if !st.Exists() {
		return []byte("{}")
	}
	b := make([]byte, 0, len(st.Raw)+len(`{"status":}`))
	b = append(b, `{"status":`...)
	b = append(b, st.Raw...)
	return append(b, '}')
}

// fullCopy tells an assignment key written with a copy of the whole
// instance (by a server of an earlier version) from a marker.
func fullCopy(v []byte) bool { return bytes.HasPrefix(v, []byte(`{"metadata"`)) }

// asBound is the instance an assignment key whose value is marker stood
// for, inst being the instance's value as of the key's write (or a later
// one with only its status changed since).
func asBound(inst, marker []byte) ([]byte, error) {
	if fullCopy(marker) {
		return marker, nil
	}
	st, cur := gjson.GetBytes(marker, "status"), gjson.GetBytes(inst, "status")
	switch {
	case st.Raw == cur.Raw:
		return inst, nil
	case !st.Exists():
		return sjson.DeleteBytes(inst, "status")
	default:
		return sjson.SetRawBytes(inst, "status", []byte(st.Raw))
	}
}

// assignedInstanceKey is the key of the instance assignment key k stands for.
func (s *Store) assignedInstanceKey(k []byte) (string, bool) {
	rest, ok := strings.CutPrefix(string(k), s.prefix+"/assign/")
	if !ok {
		return "", false
	}
	_, ref, ok := strings.Cut(rest, "/") // past the node
	ns, name, ok2 := strings.Cut(ref, "/")
	if !ok || !ok2 {
		return "", false
	}
	return s.Key(api.KindInstance, ns, name), true
}

// fillAssigned turns the events of assignment keys into events of the
// instances they stand for, as toEvent takes them: a put's value becomes
// the instance as written at its revision, a deletion's previous value
// the instance as it stood before it with the status it was bound with.
// It reads the instances in as few transactions as etcd allows, each at
// the revisions its events need; an instance that cannot be read (its
// revision compacted away) is the error.
func (s *Store) fillAssigned(ctx context.Context, events []*clientv3.Event) error {
	type fill struct {
		kv   *[]byte // the value to replace
		rev  int64
		key  string
		mark []byte
	}
	fills := make([]fill, 0, len(events))
	for _, e := range events {
		kv, rev := e.Kv, e.Kv.ModRevision
		if e.Type == clientv3.EventTypeDelete {
			if kv, rev = e.PrevKv, rev-1; kv == nil {
				continue // compacted away: toEvent leaves it out
			}
		}
		if fullCopy(kv.Value) {
			continue
		}
		key, ok := s.assignedInstanceKey(kv.Key)
		if !ok {
			return fmt.Errorf("assignment key %s: names no instance", kv.Key)
		}
		fills = append(fills, fill{kv: &kv.Value, rev: rev, key: key, mark: kv.Value})
	}
	for lo := 0; lo < len(fills); lo += s.maxOps {
		batch := fills[lo:min(len(fills), lo+s.maxOps)]
		ops := make([]clientv3.Op, len(batch))
		for i, f := range batch {
			ops[i] = clientv3.OpGet(f.key, clientv3.WithRev(f.rev))
		}
		r, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("instances of %d assignment events: %w", len(batch), wrapEtcd(err))
		}
		for i, f := range batch {
			kvs := r.Responses[i].GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				return fmt.Errorf("assignment of %s at revision %d: the instance is not stored there", f.key, f.rev)
			}
			v, err := asBound(kvs[0].Value, f.mark)
			if err != nil {
				return fmt.Errorf("assignment of %s: %w", f.key, err)
			}
			*f.kv = v
		}
	}
	return nil
}

// assigned reads node's assignment keys and, at the same revision, the
// instances they stand for: each instance's value as the key stood for
// it (its status as bound), or as it is now when current, and the key's
// revision, which is the instance's as the node knows it.
func (s *Store) assigned(ctx context.Context, node string, current bool) ([][]byte, []int64, int64, error) {
	r, err := s.client.Get(ctx, s.assignPrefix(node), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, 0, fmt.Errorf("assignments of node %q: %w", node, wrapEtcd(err))
	}
	rev := r.Header.Revision
	values, revs := make([][]byte, 0, len(r.Kvs)), make([]int64, 0, len(r.Kvs))
	for lo := 0; lo < len(r.Kvs); lo += s.maxOps {
		batch := r.Kvs[lo:min(len(r.Kvs), lo+s.maxOps)]
		ops := make([]clientv3.Op, 0, len(batch))
		for _, kv := range batch {
			key, ok := s.assignedInstanceKey(kv.Key)
			if !ok {
				return nil, nil, 0, fmt.Errorf("assignments of node %q: %s names no instance", node, kv.Key)
			}
			ops = append(ops, clientv3.OpGet(key, clientv3.WithRev(rev)))
		}
		tr, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, nil, 0, fmt.Errorf("assignments of node %q: %w", node, wrapEtcd(err))
		}
		for i, kv := range batch {
			kvs := tr.Responses[i].GetResponseRange().GetKvs()
			v, err := boundValue(kv.Value, kvs, current)
			if err != nil {
				return nil, nil, 0, fmt.Errorf("assignments of node %q: %s: %w", node, kv.Key, err)
			}
			if v != nil {
				values, revs = append(values, v), append(revs, kv.ModRevision)
			}
		}
	}
	return values, revs, rev, nil
}

// boundValue is the instance an assignment key whose value is mark stands
// for, from its instance's key as read (none, or one value): with the
// status it was bound with, or its current one when current. Nil when
// the key is a marker and the instance is not stored, which one
// transaction's writes of both never leave.
func boundValue(mark []byte, inst []*mvccpb.KeyValue, current bool) ([]byte, error) {
	switch {
	case fullCopy(mark) && (!current || len(inst) == 0):
		return mark, nil
	case fullCopy(mark) && gjson.GetBytes(mark, "metadata.uid").String() != gjson.GetBytes(inst[0].Value, "metadata.uid").String():
		return mark, nil // another instance of the name: as bound
	case fullCopy(mark):
		cur := gjson.GetBytes(inst[0].Value, "status")
		if !cur.Exists() {
			return sjson.DeleteBytes(mark, "status")
		}
		return sjson.SetRawBytes(mark, "status", []byte(cur.Raw))
	case len(inst) == 0:
		return nil, nil
	case current:
		return inst[0].Value, nil
	default:
		return asBound(inst[0].Value, mark)
	}
}
