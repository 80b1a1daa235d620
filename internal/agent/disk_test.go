package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

func TestParseDiskReserve(t *testing.T) {
	for in, want := range map[string]DiskReserve{
		"5%": {Percent: 5}, "0.5%": {Percent: 0.5}, "2Gi": {Bytes: 2 << 30}, "0": {}, "100Mi": {Bytes: 100 << 20},
	} {
		got, err := ParseDiskReserve(in)
		if err != nil || got != want {
			t.Errorf("ParseDiskReserve(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1Gi", "100%", "x%", "5GB", "-3%"} {
		if _, err := ParseDiskReserve(bad); err == nil {
			t.Errorf("ParseDiskReserve(%q) accepted", bad)
		}
	}
	if got := (DiskReserve{Percent: 5}).of(1000 << 20); got != 50<<20 {
		t.Errorf("5%% of 1000Mi = %d, want 50Mi", got)
	}
}

// layerRuntime hands out a writable layer for any container and counts
// the asks: the disk check's choice of containers is pure logic.
type layerRuntime struct {
	Runtime
	asked *int
}

func (r layerRuntime) WritableLayer(id string) (string, error) {
	*r.asked++
	return "/layers/" + id, nil
}
func (r layerRuntime) Root() string { return "/" }

// The disk check measures the running containers of the assigned
// instances with a disk limit, following the assignments as they come
// and go, and when none has a limit it asks the runtime nothing.
func TestDiskJobsFollowLimitedAssignments(t *testing.T) {
	asked := 0
	a := New(Config{Node: NodeInfo{Name: "n1"}, Runtime: layerRuntime{asked: &asked}})
	a.containers = map[string]runtime.Status{}
	for _, uid := range []string{"u1", "u2", "u3"} {
		a.containers["c-"+uid] = runtime.Status{ID: "c-" + uid, State: runtime.Running, Labels: map[string]string{labelUID: uid}}
	}
	step := func(what string, batch []Assignment, want ...string) {
		t.Helper()
		a.apply(batch)
		asked = 0
		var got []string
		jobs, _ := a.diskJobs()
		for _, j := range jobs {
			got = append(got, j.id)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: measured %v, want %v", what, got, want)
		}
		if len(want) == 0 && asked != 0 {
			t.Errorf("%s: asked the runtime for %d layers with no limit assigned", what, asked)
		}
		// Every container here runs: the count the check skips by is theirs.
		if a.diskLimited != len(want) {
			t.Errorf("%s: %d instances counted as limited, want %d", what, a.diskLimited, len(want))
		}
	}
	limit := func(uid string, bytes int64) Assignment {
		return Assignment{Instance: &Instance{UID: uid, DiskBytes: bytes}}
	}
	step("none limited", []Assignment{limit("u1", 0), limit("u2", 0), Resync})
	step("u1 limited", []Assignment{limit("u1", 1<<20)}, "c-u1")
	step("u1 and u3 limited", []Assignment{limit("u3", 1<<20), limit("u1", 2<<20)}, "c-u1", "c-u3")
	step("u1's limit lifted", []Assignment{limit("u1", 0)}, "c-u3")
	step("u3 removed", []Assignment{{Deleted: "u3"}})
	step("u3 removed twice", []Assignment{{Deleted: "u3"}})
	step("a full list with u2 limited", []Assignment{limit("u1", 0), limit("u2", 1<<20), Resync}, "c-u2")
	step("a full list with none", []Assignment{limit("u2", 0), Resync})
}

// A tmpfs volume asked at a path the image links elsewhere (/var/run ->
// /run) is measured where the container has it, in its root, never at the
// host's directory the absolute link would name from outside.
func TestInstanceVolumesFollowLinksInContainerRoot(t *testing.T) {
	testenv.RequireRoot(t)
	root := imagetest.BusyboxRootfs(t)
	if err := os.MkdirAll(filepath.Join(root, "run", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/run", filepath.Join(root, "var", "run")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("chroot", root, "/bin/busybox", "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	want := fmt.Sprintf("/proc/%d/root/run/app", pid)
	// chroot has run its command once the process's root is the rootfs.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); r == root {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chrooted process never got its root")
		}
		time.Sleep(10 * time.Millisecond)
	}
	inst := &Instance{Volumes: []Volume{{TmpfsSize: 1 << 20, Path: "/var/run/app"}}}
	if got := (&Agent{}).instanceVolumes(inst, pid); !slices.Equal(got, []string{want}) {
		t.Errorf("instanceVolumes = %q, want %q", got, want)
	}
}
