package runtime_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

const launcherEnv = "BERTH_TEST_LAUNCHER"

func TestMain(m *testing.M) {
	runtimetest.OnExitMain()
	if dir := os.Getenv(launcherEnv); dir != "" {
		os.Exit(launcher(dir, os.Getenv("BERTH_TEST_ROOTFS")))
	}
	os.Exit(m.Run())
}

// launcher starts five containers, prints their statuses and waits to be killed.
func launcher(dir, rootfs string) int {
	r, err := runtime.New(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var sts []runtime.Status
	for i := range 5 {
		script := "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.05; done"
		if i == 4 {
			script = "echo waiting; while [ ! -e /go ]; do sleep 0.05; done; exit 7"
		}
		st, err := r.Run(context.Background(), runtime.Config{
			ID: fmt.Sprintf("adopt-%d", i), LowerDirs: []string{rootfs}, Args: []string{"sh", "-c", script},
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sts = append(sts, st)
	}
	if err := json.NewEncoder(os.Stdout).Encode(sts); err != nil {
		return 1
	}
	select {}
}

func TestAdoptAfterLauncherKilled(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), launcherEnv+"="+dir, "BERTH_TEST_ROOTFS="+rootfs)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var before []runtime.Status
	line, err := bufio.NewReader(out).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &before) != nil || len(before) != 5 {
		_ = cmd.Process.Kill()
		t.Fatalf("launcher did not report 5 containers: %v %q", err, line)
	}

	r, err := runtime.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, st := range before {
			_ = r.Delete(context.Background(), st.ID, true)
		}
	})

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// While nothing watches, one container exits on its own.
	// The rootfs is mounted in the container's own namespace: reach it through its process.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/go", before[4].Pid), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "adopt-4", "exit.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("adopt-4 did not record its exit while the launcher was dead")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A new runtime over the same directory adopts everything as it is.
	r2, err := runtime.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	after, err := r2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 5 {
		t.Fatalf("adopted %d containers, want 5: %+v", len(after), after)
	}
	for i, st := range after {
		if st.ID != before[i].ID {
			t.Fatalf("container %d is %s, want %s", i, st.ID, before[i].ID)
		}
		if i == 4 {
			if st.State != runtime.Exited || st.ExitCode != 7 {
				t.Errorf("%s: state %s exit %d, want exited with 7", st.ID, st.State, st.ExitCode)
			}
			continue
		}
		if st.State != runtime.Running || st.Pid != before[i].Pid {
			t.Errorf("%s: state %s pid %d, want running with pid %d", st.ID, st.State, st.Pid, before[i].Pid)
		}
		if n := shimsFor(filepath.Join(dir, st.ID)); n != 1 {
			t.Errorf("%s has %d shims, want exactly 1", st.ID, n)
		}
	}
	// Starting one again is refused: nothing is ever started twice.
	if _, err := r2.Run(ctx, runtime.Config{ID: "adopt-0", LowerDirs: []string{rootfs}, Args: []string{"true"}}); !errors.Is(err, runtime.ErrAlreadyExists) {
		t.Errorf("second run of adopt-0: %v, want ErrAlreadyExists", err)
	}
	// Logs kept flowing while nobody watched, and still do.
	ticks := func() int {
		var b strings.Builder
		_ = r2.Logs(ctx, "adopt-0", runtime.LogOptions{}, &b, &b)
		return strings.Count(b.String(), "tick-")
	}
	n0 := ticks()
	for ticks() <= n0+3 {
		if ctx.Err() != nil {
			t.Fatal("logs stopped flowing after adoption")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The adopted containers can be stopped and waited for.
	st, err := r2.Stop(ctx, "adopt-0", time.Second)
	if err != nil || st.State != runtime.Exited {
		t.Errorf("stop of adopted adopt-0: %+v, %v", st, err)
	}
}

// shimsFor counts the processes whose working directory is a container's dir: its shim.
func shimsFor(dir string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == dir {
			n++
		}
	}
	return n
}
