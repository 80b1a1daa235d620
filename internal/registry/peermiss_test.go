package registry_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/registry"
)

// fakeClock is a time that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestPinImageRemembersWhatNoPeerHad: a tag that neither peer of C has
// is not asked of them again by the next PinImage, for a while; an image
// pushed to C itself meanwhile is pinned at once, and one pushed to a
// peer is found once the miss has expired.
func TestPinImageRemembersWhatNoPeerHad(t *testing.T) {
	ctx := context.Background()
	var logA, logB requestLog
	baseA, hostA := server(t, openStore(t), registry.Options{}, logA.wrap)
	baseB, _ := server(t, openStore(t), registry.Options{}, logB.wrap)
	storeC := openStore(t)
	hC := registry.New(storeC, registry.Options{Peers: peersOf(&baseA, &baseB)})
	_, hostC := server(t, storeC, registry.Options{}, nil) // to push into C's store
	clock := &fakeClock{t: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	registry.SetClock(hC, clock.now)

	asked := func() int {
		return logA.count(http.MethodGet, "/manifests/1") + logA.count(http.MethodHead, "/manifests/1") +
			logB.count(http.MethodGet, "/manifests/1") + logB.count(http.MethodHead, "/manifests/1")
	}
	pin := func(ref string) (string, error) {
		t.Helper()
		logA.take()
		logB.take()
		return hC.PinImage(ctx, ref, "", nil)
	}

	_, err := pin("demo/missing:1")
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("PinImage(demo/missing:1): %v, want not found", err)
	}
	firstErr := err.Error()
	if logA.count(http.MethodGet, "/manifests/1") == 0 || logB.count(http.MethodGet, "/manifests/1") == 0 {
		t.Fatalf("the first PinImage did not ask both peers: A %v, B %v", logA.take(), logB.take())
	}

	clock.add(10 * time.Second)
	_, err = pin("demo/missing:1")
	if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != firstErr {
		t.Errorf("PinImage(demo/missing:1) again: %v, want the same error as the first: %s", err, firstErr)
	}
	if n := asked(); n != 0 {
		t.Errorf("the second PinImage within the window asked the peers %d times, want none", n)
	}

	// Another tag is asked for.
	if _, err := pin("demo/other:1"); !errors.Is(err, errdefs.ErrNotFound) || asked() == 0 {
		t.Errorf("PinImage(demo/other:1): %v, %d requests to the peers; want not found after asking them", err, asked())
	}

	// Pushed to a peer within the window: not asked for yet.
	img := randomImage(t, 40, 1, 4<<10)
	want := push(t, hostA, "demo/missing:1", img)
	if _, err := pin("demo/missing:1"); !errors.Is(err, errdefs.ErrNotFound) || asked() != 0 {
		t.Errorf("PinImage(demo/missing:1) within the window: %v, %d requests to the peers; want not found, none", err, asked())
	}
	// Expired: asked again, and found.
	clock.add(time.Minute)
	got, err := pin("demo/missing:1")
	if err != nil || got != "demo/missing:1@"+want.String() {
		t.Fatalf("PinImage(demo/missing:1) after the window: %q, %v; want demo/missing:1@%s", got, err, want)
	}
	if asked() == 0 {
		t.Error("PinImage after the window did not ask the peers")
	}

	// A miss does not hide an image pushed to C itself.
	if _, err := pin("demo/local:1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("PinImage(demo/local:1): %v, want not found", err)
	}
	want = push(t, hostC, "demo/local:1", randomImage(t, 41, 1, 4<<10))
	if got, err := pin("demo/local:1"); err != nil || got != "demo/local:1@"+want.String() {
		t.Errorf("PinImage(demo/local:1) pushed to C within the window: %q, %v; want demo/local:1@%s", got, err, want)
	}
}
