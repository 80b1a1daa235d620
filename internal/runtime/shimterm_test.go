package runtime_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// A SIGTERM to a container's shim stops the container: systemd sends it
// to every process of a container's scope when the scope stops (a host
// shutdown). A container whose PID 1 handles SIGTERM gets it; one that
// does not (the kernel would drop it) is killed at once instead of
// holding the stop until its timeout.
func TestShimSIGTERMStopsContainer(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	r, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		// What the container ends with.
		code, signal int
	}{
		{"no handler: killed", []string{"sleep", "1000"}, 137, int(syscall.SIGKILL)},
		{"handler: gets SIGTERM", []string{"sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.05; done"}, 7, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "shimterm-" + tc.args[0]
			if _, err := r.Run(context.Background(), runtime.Config{ID: id, LowerDirs: []string{rootfs}, Args: tc.args}); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = r.Delete(context.Background(), id, true) }()
			st, err := r.State(context.Background(), id)
			if err != nil || st.ShimPid <= 0 {
				t.Fatalf("state: %+v, %v", st, err)
			}
			if tc.code == 7 {
				// The trap is set once the script has printed.
				deadline := time.Now().Add(10 * time.Second)
				for !hasHandler(st.Pid) {
					if time.Now().After(deadline) {
						t.Fatal("the script set no SIGTERM handler within 10s")
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			t0 := time.Now()
			if err := syscall.Kill(st.ShimPid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			end, err := r.Wait(ctx, id)
			if err != nil {
				t.Fatalf("the container still runs 5s after its shim got SIGTERM: %v", err)
			}
			if end.State != runtime.Exited || end.ExitCode != tc.code || end.Signal != tc.signal {
				t.Errorf("ended %s with code %d, signal %d; want exited with code %d, signal %d",
					end.State, end.ExitCode, end.Signal, tc.code, tc.signal)
			}
			t.Logf("stopped %s after the shim's SIGTERM", time.Since(t0).Round(time.Millisecond))
		})
	}
}

// hasHandler reports whether pid has a SIGTERM handler (SigCgt).
func hasHandler(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(syscall.SIGTERM)-1)) != 0
		}
	}
	return false
}
