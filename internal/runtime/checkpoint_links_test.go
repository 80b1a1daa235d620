package runtime_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// A volume asked at /var/run/app, in an image linking /var/run to /run,
// is at /run/app before a checkpoint and after the restore, which
// resolves the destination again in the restored writable layer. Where
// the container replaced the link with one to a host directory before
// its dump, that layer's link leads nowhere out: the host directory is
// untouched, restored or not.
func TestCheckpointVolumeThroughLink(t *testing.T) {
	runtimetest.RequireRoot(t)
	requireBinary(t, "runc")
	requireBinary(t, "criu")
	rootfs := runtimetest.BusyboxRootfs(t)
	layer := t.TempDir()
	if err := os.MkdirAll(filepath.Join(layer, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(layer, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/run", filepath.Join(layer, "var", "run")); err != nil {
		t.Fatal(err)
	}
	r, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hostDir := t.TempDir()
	loop := "exec 3>>/run/app/count; i=0; while :; do i=$((i+1)); echo $i; echo $i >&3; usleep 10000; done"
	for _, tc := range []struct{ name, plant string }{
		{"plain", ""},
		{"planted", fmt.Sprintf("rm /var/run && ln -s %s /var/run && ", hostDir)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := t.TempDir()
			id := "ckpt-link-" + tc.name
			if _, err := r.Run(ctx, runtime.Config{ID: id, LowerDirs: []string{layer, rootfs}, Executor: "runc",
				Args:   []string{"sh", "-c", tc.plant + loop},
				Mounts: []specs.Mount{{Destination: "/var/run/app", Type: "bind", Source: vol, Options: []string{"rbind"}}}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Delete(context.Background(), id, true) })
			waitCount(t, r, id, 5)
			images := t.TempDir()
			if err := r.Checkpoint(ctx, id, runtime.CheckpointOptions{ImageDir: images}); err != nil {
				t.Fatal(err)
			}
			_, rerr := r.Restore(ctx, id, images)
			if ents, _ := os.ReadDir(hostDir); len(ents) != 0 {
				t.Errorf("the restore made %v in the host directory the planted link names", ents)
			}
			if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), hostDir) {
				t.Errorf("the host directory %s became a mount point", hostDir)
			}
			if tc.plant != "" {
				t.Logf("restore with the planted link: %v", rerr)
				return
			}
			if rerr != nil {
				t.Fatal(rerr)
			}
			before, _ := os.ReadFile(filepath.Join(vol, "count"))
			if m := inContainer(t, r, id, "grep -o ' /run/app [^ ]*' /proc/self/mountinfo"); !strings.HasPrefix(m, " /run/app rw") {
				t.Errorf("after restore the volume's mount is %q, want /run/app, writable", m)
			}
			waitCount(t, r, id, len(counts(t, r, id))+5)
			if after, _ := os.ReadFile(filepath.Join(vol, "count")); len(after) <= len(before) {
				t.Errorf("after restore the counter no longer writes to the host's volume (%d bytes, %d before)", len(after), len(before))
			}
		})
	}
}
