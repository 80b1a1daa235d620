package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// EventType says what a watch event did to its object.
type EventType string

// Watch event types.
const (
	Added    EventType = "Added"
	Modified EventType = "Modified"
	Deleted  EventType = "Deleted"
)

// WatchEvent is one change. Revision is the store revision of the change:
// watching again from Revision+1 resumes right after it. For Deleted,
// Object is the object as it was last stored. Err, when set, ends the
// stream (Object is then nil): ErrFailedPrecondition when the revision
// asked for has been compacted away, so the caller must list again.
type WatchEvent struct {
	Type     EventType
	Revision int64
	Object   api.Object
	// Raw, from WatchRaw and WatchAssignmentsRaw, is the object as the API
	// gives it (Wire), and Object is nil: a stream that only passes
	// objects on need not decode them.
	Raw []byte
	Err error
}

// Watch streams changes to objects of kind in namespace (all when empty),
// starting at fromRevision (0: from now). The channel closes when ctx is
// done or after an event with Err.
func (s *Store) Watch(ctx context.Context, kind api.Kind, namespace string, fromRevision int64) <-chan WatchEvent {
	return s.watchPrefix(watchStream(ctx, kind.Plural()), s.prefixOf(kind, namespace), kind, fromRevision, false, nil)
}

// WatchRaw is Watch with each object as the API gives it, in Raw.
func (s *Store) WatchRaw(ctx context.Context, kind api.Kind, namespace string, fromRevision int64) <-chan WatchEvent {
	return s.watchPrefix(watchStream(ctx, kind.Plural()), s.prefixOf(kind, namespace), kind, fromRevision, true, nil)
}

// WatchAssignments streams changes to the instances bound to node: Added
// when one is bound, Modified when its spec changes, Deleted when it is
// deleted or moved elsewhere.
func (s *Store) WatchAssignments(ctx context.Context, node string, fromRevision int64) <-chan WatchEvent {
	return s.watchAssignments(ctx, node, fromRevision, false)
}

// WatchAssignmentsRaw is WatchAssignments with each instance as the API
// gives it, in Raw, as a Feed. The store's assignment hub serves it, or,
// when the hub cannot serve it exactly (fromRevision is older than the
// hub's history), an etcd watch of its own.
func (s *Store) WatchAssignmentsRaw(ctx context.Context, node string, fromRevision int64) *Feed {
	s.hub.ensure(ctx, s)
	if f := s.hub.subscribe(ctx, node, fromRevision); f != nil {
		return f
	}
	ctx, cancel := context.WithCancel(ctx)
	events := s.watchAssignments(ctx, node, fromRevision, true)
	f := newFeed(node, fromRevision, maxFeedEvents, maxFeedBytes)
	go func() {
		defer cancel()
		for ev := range events {
			if !f.push(ev) {
				return // events closes once ctx is done
			}
		}
	}()
	return f
}

// StartAssignmentHub starts the hub that serves the nodes' assignment
// watches now, rather than at the first: a node that lists before the
// hub starts watches from before its history, which costs an etcd watch
// of its own. It stops with the store.
func (s *Store) StartAssignmentHub() { s.hub.begin(s) }

func (s *Store) watchAssignments(ctx context.Context, node string, fromRevision int64, raw bool) <-chan WatchEvent {
	h := fnv.New32a()
	h.Write([]byte(node))
	return s.watchPrefix(watchStream(ctx, fmt.Sprintf("assignments-%d", h.Sum32()%assignmentStreams)), s.assignPrefix(node), api.KindInstance, fromRevision, raw, s.fillAssigned)
}

// assignmentStreams is how many etcd watch streams the nodes' assignment
// watches are spread over.
const assignmentStreams = 8

// watchStream puts a watch on etcd watch stream name. The client makes
// one stream for all watches whose contexts carry the same metadata, and
// a stream opens its watches one at a time, each waiting for the server's
// answer behind the events the stream carries. All on one, a thousand
// agents watching again queued the controllers' own watches (their
// leader's, which must renew its lease meanwhile) for minutes. The
// controllers, the node credentials and the leader elections keep the
// default stream; clients' watches (a stream for each kind: a watch of
// services does not wait behind a flood of instances' events) and the
// nodes' assignments have their own.
func watchStream(ctx context.Context, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "berth-watch-stream", name)
}

// WatchOf is Watch with typed objects.
func WatchOf[T any, P ptr[T]](ctx context.Context, s *Store, namespace string, fromRevision int64) <-chan TypedEvent[P] {
	in := s.Watch(ctx, P(new(T)).GetKind(), namespace, fromRevision)
	out := make(chan TypedEvent[P])
	go func() {
		defer close(out)
		for ev := range in {
			te := TypedEvent[P]{Type: ev.Type, Revision: ev.Revision, Err: ev.Err}
			if ev.Object != nil {
				te.Object = ev.Object.(P)
			}
			select {
			case out <- te:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// TypedEvent is a WatchEvent with a typed object.
type TypedEvent[P api.Object] struct {
	Type     EventType
	Revision int64
	Object   P
	Err      error
}

// watchPrefix watches the keys under prefix, each response's events
// passed through fill first when it is set (fillAssigned).
func (s *Store) watchPrefix(ctx context.Context, prefix string, kind api.Kind, fromRevision int64, raw bool,
	fill func(context.Context, []*clientv3.Event) error) <-chan WatchEvent {
	out := make(chan WatchEvent, 64)
	go func() {
		defer close(out)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
		if fromRevision > 0 {
			opts = append(opts, clientv3.WithRev(fromRevision))
		}
		send := func(ev WatchEvent) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		wc := s.client.Watch(clientv3.WithRequireLeader(ctx), prefix, opts...)
		for resp := range wc {
			if err := resp.Err(); err != nil {
				if resp.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
					err = fmt.Errorf("watch %s from revision %d: %w: revision compacted (oldest kept is %d), list again", kind.Plural(), fromRevision, errdefs.ErrFailedPrecondition, resp.CompactRevision)
				} else {
					err = fmt.Errorf("watch %s: %w", kind.Plural(), wrapEtcd(err))
				}
				send(WatchEvent{Err: err})
				return
			}
			if fill != nil {
				if err := fill(ctx, resp.Events); err != nil {
					send(WatchEvent{Err: fmt.Errorf("watch %s: %w", kind.Plural(), err)})
					return
				}
			}
			for _, e := range resp.Events {
				ev, ok := toEvent(kind, e, raw)
				if !ok {
					continue
				}
				if ev.Err != nil {
					send(ev)
					return
				}
				if !send(ev) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(WatchEvent{Err: fmt.Errorf("watch %s: %w: stream ended", kind.Plural(), errdefs.ErrUnavailable)})
		}
	}()
	return out
}

// toEvent turns an etcd event into a WatchEvent, its object decoded, or
// in its wire form when raw; one whose object cannot be read carries the
// error. False for a delete whose previous value was compacted away.
func toEvent(kind api.Kind, e *clientv3.Event, raw bool) (WatchEvent, bool) {
	ev := WatchEvent{Revision: e.Kv.ModRevision}
	kv := e.Kv
	switch {
	case e.Type == clientv3.EventTypeDelete:
		ev.Type, kv = Deleted, e.PrevKv
	case e.IsCreate():
		ev.Type = Added
	default:
		ev.Type = Modified
	}
	if kv == nil {
		return ev, false
	}
	if raw {
		b, err := Wire(kind, kv.Value, kv.ModRevision)
		if err != nil {
			return WatchEvent{Revision: ev.Revision, Err: fmt.Errorf("watch %s: %s: %w", kind.Plural(), kv.Key, err)}, true
		}
		ev.Raw = b
		return ev, true
	}
	ev.Object, _ = api.New(kind)
	if err := decode(ev.Object, kv.Value, kv.ModRevision); err != nil {
		return WatchEvent{Revision: ev.Revision, Err: fmt.Errorf("watch %s: %s: %w", kind.Plural(), kv.Key, err)}, true
	}
	return ev, true
}
