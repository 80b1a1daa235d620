package runtimetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
)

// onExitArg marks the test binary's run as a container's OnExit command.
const onExitArg = "-runtimetest.onexit"

// OnExitArgs are a container's OnExit arguments that have this test
// binary (its TestMain calling OnExitMain) write to out the container's
// state, as the runtime kept in root sees it then, and on a second line
// its own cgroups.
func OnExitArgs(out, root, id string) []string {
	return []string{"onexit-probe", onExitArg, out, root, id}
}

// OnExitMain, called first in the TestMain of a package that runs Suite,
// is the command OnExitArgs have a container's shim run (this binary
// again); it returns at once when this process is not that command.
func OnExitMain() {
	if len(os.Args) != 5 || os.Args[1] != onExitArg {
		return
	}
	out, root, id := os.Args[2], os.Args[3], os.Args[4]
	msg := "no runtime"
	if r, err := runtime.New(root); err == nil {
		st, err := r.State(context.Background(), id)
		msg = fmt.Sprintf("%s %d %v", st.State, st.ExitCode, err)
	}
	cg, _ := os.ReadFile("/proc/self/cgroup")
	if err := os.WriteFile(out, []byte(msg+"\n"+strings.TrimSpace(string(cg))), 0o600); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// testOnExit: a container's OnExit command runs once the container has
// ended by itself, seeing it exited.
func (h *harness) testOnExit(t *testing.T) {
	out := filepath.Join(t.TempDir(), "onexit")
	c := h.config(t, "sh", "-c", "sleep 1; exit 3")
	c.OnExit = OnExitArgs(out, h.r.Root(), c.ID)
	st := h.run(t, c)
	own, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("the OnExit command ran while the container runs")
	}
	eventually(t, 10*time.Second, "the OnExit command to run", func() bool {
		b, err := os.ReadFile(out)
		return err == nil && len(b) > 0
	})
	b, _ := os.ReadFile(out)
	seen, cg, _ := strings.Cut(string(b), "\n")
	if seen != "exited 3 <nil>" {
		t.Errorf("the OnExit command saw the container as %q, want exited 3", seen)
	}
	if cg == strings.TrimSpace(string(own)) {
		t.Errorf("the OnExit command ran in the container's cgroups:\n%s", cg)
	}

	bad := h.config(t, "true")
	bad.OnExit = []string{"x", "a\x00b"}
	if _, err := h.r.Run(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "onExit") {
		t.Errorf("an OnExit argument with a NUL byte: %v", err)
	}
}
