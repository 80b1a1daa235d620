package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"testing"
	"time"
)

// A waiter ends with its container: once the container is removed, Wait
// returns ErrNotFound instead of taking the empty directory for a
// container not started yet and polling it forever. 500 containers left
// half-started (meta.json only, as a start cut short leaves them) are
// waited on and removed; afterwards no goroutine of theirs remains.
func TestWaitEndsWhenContainerRemoved(t *testing.T) {
	r, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	settle(t, 0) // let New's own goroutines finish
	before := goruntime.NumGoroutine()
	const n = 500
	errs := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("gone-%d", i)
		bd, _ := r.bundle(id)
		if err := os.Mkdir(bd.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := writeJSON(bd.path("meta.json"), &meta{Config: Config{ID: id}, Executor: ExecutorBuiltin}); err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		go func() {
			close(started)
			_, err := r.Wait(context.Background(), id)
			errs <- err
		}()
		<-started
		if err := r.Delete(context.Background(), id, true); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(10 * time.Second)
	for i := range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("Wait on a removed container: %v, want ErrNotFound", err)
			}
		case <-deadline:
			t.Fatalf("%d of %d waiters still running 10s after their containers were removed", n-i, n)
		}
	}
	settle(t, before)
}

// settle waits until at most want goroutines run (any number when want
// is 0, once the count stops changing), failing after a deadline.
func settle(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := -1
	for {
		n := goruntime.NumGoroutine()
		if (want > 0 && n <= want) || (want == 0 && n == last) {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines remain, want at most %d:\n%s", n, want, buf[:goruntime.Stack(buf, true)])
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
}
