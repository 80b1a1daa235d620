package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// Change is one key of the store changing, as WatchChanges sees it.
type Change struct {
	Type EventType
	// Object is the object made or changed, for the kinds asked for; nil
	// for a removal and for every other key.
	Object api.Object
	// Value is the stored JSON Object was decoded from.
	Value []byte
	// Kind, Namespace and Name say which object changed.
	Kind            api.Kind
	Namespace, Name string
	// Lease names the node whose heartbeat lease key was made (Added) or
	// removed (Deleted).
	Lease string
	// Lapsed names the node whose lapsed key (LapsedNodesAt) was made
	// (Added or Modified) or removed (Deleted).
	Lapsed string
}

// ChangeBatch is what one watch response brought: its changes, and the
// revision the store has reached as far as this watch can tell (the last
// change's, changes to other keys counted). Err ends the stream.
type ChangeBatch struct {
	Changes  []Change
	Revision int64
	Err      error
}

// WatchChanges follows every key of the store from fromRevision: objects
// of the given kinds (decoded) and node heartbeat leases. One ordered
// stream, so a reader that applied a batch has seen every write up to its
// revision, whichever key it touched; see LastWrite.
func (s *Store) WatchChanges(ctx context.Context, fromRevision int64, kinds ...api.Kind) <-chan ChangeBatch {
	return s.WatchChangesDecoded(ctx, fromRevision, nil, kinds...)
}

// Decoder makes the object of kind that a stored value, modified at
// revision rev, holds; Decode's way, or one that shares what it finds
// alike across objects.
type Decoder func(kind api.Kind, value []byte, rev int64) (api.Object, error)

// WatchChangesDecoded is WatchChanges with the objects made by decode
// (nil: each decoded afresh). It is called from one goroutine, in order.
func (s *Store) WatchChangesDecoded(ctx context.Context, fromRevision int64, decode Decoder, kinds ...api.Kind) <-chan ChangeBatch {
	if decode == nil {
		decode = decodeNew
	}
	out := make(chan ChangeBatch, 16)
	byPlural := map[string]api.Kind{}
	for _, k := range kinds {
		byPlural[k.Plural()] = k
	}
	root := s.prefix + "/"
	go func() {
		defer close(out)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		send := func(b ChangeBatch) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		// No previous values: a removal names its key, which is all a
		// follower needs, and etcd reads each change's previous value
		// from its backend and sends it along, for every write of the
		// whole store (assignment keys and events included).
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(fromRevision)}
		for resp := range s.client.Watch(clientv3.WithRequireLeader(ctx), root, opts...) {
			if err := resp.Err(); err != nil {
				if resp.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
					err = fmt.Errorf("watch the store from revision %d: %w: revision compacted, list again", fromRevision, errdefs.ErrFailedPrecondition)
				} else {
					err = fmt.Errorf("watch the store: %w", wrapEtcd(err))
				}
				send(ChangeBatch{Err: err})
				return
			}
			var b ChangeBatch
			for _, e := range resp.Events {
				b.Revision = e.Kv.ModRevision
				c, ok, err := s.change(e, root, byPlural, decode)
				if err != nil {
					send(ChangeBatch{Err: err})
					return
				}
				if ok {
					b.Changes = append(b.Changes, c)
				}
			}
			if b.Revision != 0 && !send(b) {
				return
			}
		}
		if ctx.Err() == nil {
			send(ChangeBatch{Err: fmt.Errorf("watch the store: %w: stream ended", errdefs.ErrUnavailable)})
		}
	}()
	return out
}

// change turns one etcd event into a Change, if it is about a key the
// caller follows.
func (s *Store) change(e *clientv3.Event, root string, kinds map[string]api.Kind, decode Decoder) (Change, bool, error) {
	typ := Modified
	switch {
	case e.Type == clientv3.EventTypeDelete:
		typ = Deleted
	case e.IsCreate():
		typ = Added
	}
	rest := strings.TrimPrefix(string(e.Kv.Key), root)
	plural, name, _ := strings.Cut(rest, "/")
	if plural == "leases" {
		if typ == Modified {
			return Change{}, false, nil // rebound to another lease: still held
		}
		return Change{Type: typ, Lease: name}, true, nil
	}
	if plural == "lapsed" {
		return Change{Type: typ, Lapsed: name}, true, nil
	}
	kind, ok := kinds[plural]
	if !ok {
		return Change{}, false, nil
	}
	c := Change{Type: typ, Kind: kind, Name: name}
	if kind.Namespaced() {
		c.Namespace, c.Name, _ = strings.Cut(name, "/")
	}
	if typ == Deleted {
		return c, true, nil // the name says enough
	}
	kv := e.Kv
	obj, err := decode(kind, kv.Value, kv.ModRevision)
	if err != nil {
		return Change{}, false, fmt.Errorf("watch the store: %s: %w", kv.Key, err)
	}
	c.Object, c.Value = obj, kv.Value
	return c, true, nil
}

// decodeNew is the Decoder that decodes each value afresh.
func decodeNew(kind api.Kind, value []byte, rev int64) (api.Object, error) {
	obj, err := api.New(kind)
	if err != nil {
		return nil, err
	}
	if err := decode(obj, value, rev); err != nil {
		return nil, err
	}
	return obj, nil
}
