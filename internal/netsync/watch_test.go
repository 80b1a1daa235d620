package netsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// idlePlane is a plane with nothing to program: no services, and the
// isolation of an empty state programmed already.
func idlePlane() *Plane { return &Plane{isolated: fmt.Sprint(newState().isolation())} }

// TestFollowHearsAWatchClose closes the instance watch with no event
// saying why: followChanges returns an error naming it (so follow starts
// over), rather than waiting on the service watch for ever.
func TestFollowHearsAWatchClose(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sw := make(chan client.WatchEvent[*api.Service])
	iw := make(chan client.WatchEvent[*api.Instance])
	done := make(chan error, 1)
	go func() { done <- idlePlane().followChanges(ctx, newState(), mergeWatches(ctx, sw, iw)) }()
	iw <- client.WatchEvent[*api.Instance]{} // a heartbeat: nothing to program
	close(iw)
	select {
	case err := <-done:
		if err == nil || err.Error() != "instance watch closed" {
			t.Errorf("followChanges ended with %v, want the instance watch's close", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("followChanges still waits 10s after the instance watch closed")
	}
}

// A watch's error event comes through before its close, and ends the
// follow with that error, not the close's.
func TestFollowHearsAWatchError(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sw := make(chan client.WatchEvent[*api.Service], 1)
	iw := make(chan client.WatchEvent[*api.Instance])
	sw <- client.WatchEvent[*api.Service]{Err: context.DeadlineExceeded}
	close(sw)
	err := idlePlane().followChanges(ctx, newState(), mergeWatches(ctx, sw, iw))
	if err != context.DeadlineExceeded {
		t.Errorf("followChanges ended with %v, want the service watch's error", err)
	}
}
