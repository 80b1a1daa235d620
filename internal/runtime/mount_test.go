package runtime_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// An image whose mount target is a symlink to a host path cannot make a
// volume land on that host path: the target is resolved inside the
// container's root (the built-in executor refuses a symlink on the way;
// runc and crun resolve it within the rootfs). Whatever the executor
// does, the host directory the symlink names is untouched.
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
				if executor == runtime.ExecutorBuiltin && (err == nil || !strings.Contains(err.Error(), "symlink")) {
					t.Errorf("mount on %s through a symlink: %v, want a refusal naming the symlink", target, err)
				}
				if err == nil {
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
