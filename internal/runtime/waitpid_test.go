package runtime

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// waitPid returns when the process exits, and when its context ends
// before that; it needs no child of ours (pidfd), and an exited process
// that nobody reaped yet counts as gone.
func TestWaitPid(t *testing.T) {
	start := func() *exec.Cmd {
		t.Helper()
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c
	}
	wait := func(ctx context.Context, pid int) <-chan error {
		done := make(chan error, 1)
		go func() { done <- waitPid(ctx, pid) }()
		return done
	}

	c := start()
	done := wait(context.Background(), c.Process.Pid)
	select {
	case err := <-done:
		t.Fatalf("waitPid returned %v while the process runs", err)
	default:
	}
	_ = c.Process.Kill() // not reaped: a zombie has exited all the same
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("waitPid after the exit: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitPid did not return within 5s of the exit")
	}

	c = start()
	ctx, cancel := context.WithCancel(context.Background())
	done = wait(ctx, c.Process.Pid)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("waitPid with its context ended: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitPid did not return within 5s of its context ending")
	}
}
