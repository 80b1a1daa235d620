package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// An image whose mount target is a symlink to a host path cannot make a
// volume land on that host path: the target is resolved inside the
// container's root, for every executor, and the container starts with
// the volume in its own tree. The host directory the symlink names is
// untouched.
func TestMountTargetSymlinkStaysInside(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	for _, executor := range []string{runtime.ExecutorBuiltin, "runc", "crun"} {
		t.Run(executor, func(t *testing.T) {
			if executor != runtime.ExecutorBuiltin {
				requireBinary(t, executor)
			}
			hostDir := t.TempDir() // what the image's symlinks point at
			if err := os.WriteFile(filepath.Join(hostDir, "keep"), []byte("host\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			layer := t.TempDir() // the image's top layer: /data and /etc/conf.d are symlinks to the host dir
			if err := os.Symlink(hostDir, filepath.Join(layer, "data")); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(layer, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(hostDir, filepath.Join(layer, "etc", "conf.d")); err != nil {
				t.Fatal(err)
			}
			vol := t.TempDir()
			if err := os.WriteFile(filepath.Join(vol, "from-volume"), []byte("vol\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := runtime.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			for i, target := range []string{"/data", "/etc/conf.d/sub", "/data/f"} {
				id := fmt.Sprintf("symlink-%s-%d-%d", executor, os.Getpid(), i)
				m := specs.Mount{Destination: target, Type: "bind", Source: vol, Options: []string{"rbind"}}
				if strings.HasSuffix(target, "/f") {
					m.Source = filepath.Join(vol, "from-volume")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := r.Run(ctx, runtime.Config{ID: id, LowerDirs: []string{layer, rootfs}, Executor: executor,
					Args: []string{"sh", "-c", "echo from-container > " + target + "/written 2>/dev/null; true"}, Mounts: []specs.Mount{m}})
				if err != nil {
					t.Errorf("mount on %s through a symlink: %v, want it resolved inside the container's root", target, err)
				} else {
					_, _ = r.Wait(ctx, id)
					_ = r.Delete(ctx, id, true)
				}
				cancel()
				ents, _ := os.ReadDir(hostDir)
				if len(ents) != 1 || ents[0].Name() != "keep" {
					t.Errorf("mount on %s (a symlink to %s in the image): the host dir now holds %v", target, hostDir, ents)
				}
				if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), hostDir) {
					t.Errorf("mount on %s: the host dir %s became a mount point", target, hostDir)
				}
			}
		})
	}
}

// Real containers the same way: each waited on while it runs, then
// removed with force. Every waiter returns (with the exit, or
// ErrNotFound when the removal came first) and no goroutine remains.
func TestWaitersEndWithRemovedContainers(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	r, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Run(ctx, runtime.Config{ID: "warm", LowerDirs: []string{rootfs}, Args: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	_, _ = r.Wait(ctx, "warm")
	_ = r.Delete(ctx, "warm", true)
	before := goruntime.NumGoroutine()
	const n = 20
	done := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("waited-%d", i)
		if _, err := r.Run(ctx, runtime.Config{ID: id, LowerDirs: []string{rootfs}, Args: []string{"sleep", "60"}}); err != nil {
			t.Fatal(err)
		}
		go func() {
			st, err := r.Wait(ctx, id)
			if err == nil && st.State != runtime.Exited && st.State != runtime.Unknown {
				err = fmt.Errorf("container %s: Wait returned in state %s", id, st.State)
			}
			if errors.Is(err, runtime.ErrNotFound) {
				err = nil
			}
			done <- err
		}()
		if err := r.Delete(ctx, id, true); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(10 * time.Second)
	for i := range n {
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-deadline:
			t.Fatalf("%d of %d waiters still running 10s after their containers were removed", n-i, n)
		}
	}
	for end := time.Now().Add(5 * time.Second); goruntime.NumGoroutine() > before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d goroutines after, %d before", goruntime.NumGoroutine(), before)
		}
	}
}
