package agent

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
)

// blockingDelete is a Runtime whose Delete waits for release; nothing
// else of it is called.
type blockingDelete struct {
	Runtime
	deleting chan struct{}
	release  chan struct{}
}

func (b *blockingDelete) Delete(context.Context, string, bool) error {
	close(b.deleting)
	<-b.release
	return nil
}

// noImages releases nothing.
type noImages struct{ Images }

func (noImages) Release(context.Context, string) error { return nil }

// recordingNet records the detaches, in order with what else the test notes.
type recordingNet struct {
	Network
	mu  sync.Mutex
	log []string
}

func (n *recordingNet) note(s string) {
	n.mu.Lock()
	n.log = append(n.log, s)
	n.mu.Unlock()
}

func (n *recordingNet) Detach(_ context.Context, id string) error {
	n.note("detach " + id)
	return nil
}

// TestMoveBackWaitsForTheEarlierRemoval: an instance moving back to a
// node whose loop is still removing the container it left there (same
// id) prepares only once that removal is over, so the removal's detach
// cannot take the namespace the move prepares anew.
func TestMoveBackWaitsForTheEarlierRemoval(t *testing.T) {
	const id, uid = "default.redis-x.0123abcd.0", "0123abcd"
	rt := &blockingDelete{deleting: make(chan struct{}), release: make(chan struct{})}
	net := &recordingNet{}
	a := New(Config{Runtime: rt, Images: noImages{}, Logger: slog.New(slog.DiscardHandler)})
	a.net = net
	a.containers = map[string]runtime.Status{id: {ID: id, Labels: map[string]string{labelUID: uid}}}

	removed := make(chan bool, 1)
	go func() { removed <- a.remove(context.Background(), id) }()
	select {
	case <-rt.deleting:
	case <-time.After(10 * time.Second):
		t.Fatal("the removal never reached Delete")
	}
	// The move back holds the instance, then waits: while the removal
	// runs, only until its context ends.
	a.setHold(uid, &hold{kind: holdIn}, false)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.waitRemoval(done, id); err == nil {
		t.Fatal("waitRemoval returned while the removal was under way")
	}
	awaited := make(chan error, 1)
	go func() {
		err := a.waitRemoval(context.Background(), id)
		net.note("prepare")
		awaited <- err
	}()
	close(rt.release)
	if err := <-awaited; err != nil {
		t.Fatalf("waitRemoval: %v", err)
	}
	if !<-removed {
		t.Fatal("the removal did not finish")
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if len(net.log) != 2 || net.log[0] != "detach "+id || net.log[1] != "prepare" {
		t.Fatalf("order %q, want the removal's detach before the prepare", net.log)
	}

	// A removal that begins once the instance is held leaves its
	// container to the move, and nothing is waited for.
	a.containers[id] = runtime.Status{ID: id, Labels: map[string]string{labelUID: uid}}
	if a.remove(context.Background(), id) {
		t.Fatal("a container of an instance moving in was removed")
	}
	if err := a.waitRemoval(done, id); err != nil {
		t.Fatalf("waitRemoval with no removal under way: %v", err)
	}
}
