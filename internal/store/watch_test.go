package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// A storm of watches opened and cancelled while writes stream (agents'
// watches restarting at once) leaves the store's other watches working:
// a long-lived watch still sees a write made after it.
func TestWatchesSurviveACancellationStorm(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	long := s.Watch(ctx, api.KindService, "default", 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = s.Create(ctx, instance(fmt.Sprintf("storm-%d", i)))
		}
	})
	for g := range 64 {
		wg.Go(func() {
			for i := range 50 {
				wctx, cancel := context.WithCancel(ctx)
				ch := s.WatchAssignments(wctx, fmt.Sprintf("n%d-%d", g, i), 0)
				w2 := s.Watch(wctx, api.KindInstance, "default", 0)
				select {
				case <-w2:
				case <-time.After(time.Millisecond):
				}
				cancel()
				for range ch {
				}
				for range w2 {
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	close(stop)
	stormed := make(chan struct{})
	go func() { wg.Wait(); close(stormed) }()
	select {
	case <-stormed:
	case <-time.After(30 * time.Second):
		t.Fatal("cancelled watches not closed after 30s: the store's watches are stuck")
	}
	if err := s.Create(ctx, service("after-the-storm", 1)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-long:
			if ev.Err != nil {
				t.Fatalf("long-lived watch: %v", ev.Err)
			}
			if ev.Object.GetMetadata().Name == "after-the-storm" {
				return
			}
		case <-deadline:
			t.Fatal("the long-lived watch saw nothing of a write made after the storm in 10s: the store's watches are stuck")
		}
	}
}
