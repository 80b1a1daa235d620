package cli

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The process that serves a socket is found through the socket itself.
func TestSocketOwner(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "berth.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if pid, err := socketOwner(sock); err != nil || pid != os.Getpid() {
		t.Errorf("socketOwner = %d, %v; want this process, %d", pid, err, os.Getpid())
	}
	if _, err := socketOwner(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("socketOwner of a missing socket: no error")
	}
}

// stopProcess waits for a process that stops on SIGTERM, and gives up
// on one that ignores it once the deadline passes.
func TestStopProcess(t *testing.T) {
	start := func(script string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	obeys := start("exec sleep 30")
	t0 := time.Now()
	if err := stopProcess(context.Background(), obeys.Process.Pid, 5*time.Second); err != nil {
		t.Errorf("stop a process that obeys SIGTERM: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("stopping took %v", d)
	}

	trapped := filepath.Join(t.TempDir(), "trapped")
	ignores := start("trap '' TERM; touch " + trapped + "; while :; do sleep 0.05; done")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(trapped); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell did not set its trap")
		}
	}
	t0 = time.Now()
	err := stopProcess(context.Background(), ignores.Process.Pid, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "still runs") {
		t.Errorf("stop a process that ignores SIGTERM: %v, want it reported still running", err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("gave up after %v, want about the 300ms deadline", d)
	}
}

func TestPurgeOnlyFromUpsNetNS(t *testing.T) {
	rec := upRecord{Bridge: "berth0", NetNS: "net:[4026532001]"}
	if err := checkPurgeNetNS(rec, "net:[4026532001]"); err != nil {
		t.Errorf("same namespace: %v", err)
	}
	err := checkPurgeNetNS(rec, "net:[4026531840]")
	if err == nil || !strings.Contains(err.Error(), "net:[4026532001]") || !strings.Contains(err.Error(), "berth0") {
		t.Errorf("another namespace: %v, want refused naming berth up's namespace and bridge", err)
	}
	// Without a network, or from a record older than the namespace field,
	// there is nothing to compare.
	for _, r := range []upRecord{{NetNS: rec.NetNS}, {Bridge: "berth0"}} {
		if err := checkPurgeNetNS(r, "net:[4026531840]"); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
}
