package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// An operator runs "berth container exec NAME CMD > file" from a terminal.
// The container must get neither the terminal (to type into the
// operator's shell with TIOCSTI) nor the file (to read back what it held
// before, or to write to it after the command returned), with every
// executor.
func TestContainerExecKeepsTheCallersStreams(t *testing.T) {
	e := newEnv(t)
	for _, ex := range []string{"berth", "runc", "crun"} {
		t.Run(ex, func(t *testing.T) {
			requireExecutor(t, ex)
			rootfs := runtimetest.BusyboxRootfs(t)
			runtimetest.Probe(t, rootfs)
			name := "streams-" + ex
			e.ok("container", "run", "-d", "--name", name, "--runtime", ex, "--rootfs", rootfs, "probe", "sleep", "60")
			t.Cleanup(func() { e.run("container", "rm", "--force", name) })

			const secret = "OPERATOR-SECRET-77e2"
			host, out := runtimetest.CallerFile(t, secret)
			_, pts := runtimetest.OpenPty(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, berthBin, "--data-dir", e.dataDir, "container", "exec", name, "probe", "stdio")
			// The terminal is the command's controlling one, as in an operator's shell.
			cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, out, out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			if err := cmd.Run(); err != nil {
				b, _ := os.ReadFile(host)
				t.Fatalf("berth container exec: %v\n%s", err, b)
			}
			fi, err := os.Stat(host)
			if err != nil {
				t.Fatal(err)
			}
			atExit := fi.Size()
			b, _ := os.ReadFile(host)
			res := runtimetest.ProbeResults(string(b))
			runtimetest.ExpectCallerKept(t, res, string(b), secret, pts)
			for _, fd := range []string{"fd0", "fd1", "fd2"} {
				if !strings.HasPrefix(res[fd], "pipe:") {
					t.Errorf("%s is %q, want a pipe berth relays", fd, res[fd])
				}
			}

			// The child the probe left keeps writing: once it has tried
			// again after the command exited, the file must not have grown.
			runtimetest.ExpectNoLateWrites(t, filepath.Join(rootfs, "tmp", "late"), host, atExit, 15*time.Second)
		})
	}
}

// CVE-2019-5736 through the CLI: a script with "#!/proc/self/exe", run by
// "berth container exec", runs berth's binary in the container; the
// container holds its /proc/PID/exe and, once the shim is killed and no
// process runs the binary, tries to reopen it for writing. The binary is
// a copy, so the real one stays whole if the attack ever succeeds.
func TestContainerCannotOverwriteBerth(t *testing.T) {
	e := newEnv(t)
	data, err := os.ReadFile(berthBin)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "berth")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) *exec.Cmd {
		return exec.Command(bin, append([]string{"--data-dir", e.dataDir}, args...)...)
	}
	rootfs := runtimetest.BusyboxRootfs(t)
	runtimetest.Probe(t, rootfs)
	runtimetest.CopyLibraries(t, rootfs, bin)
	if out, err := run("container", "run", "-d", "--name", "cve", "--rootfs", rootfs, "probe", "sh", "-c",
		`printf '#!/proc/self/exe\n' > /tmp/x && chmod +x /tmp/x && mkfifo /tmp/plan && `+
			`probe exe 20000 > /tmp/attack.tmp; mv /tmp/attack.tmp /tmp/attack; sleep 60`).CombinedOutput(); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = run("container", "rm", "--force", "cve").Run() })
	tmp := filepath.Join(rootfs, "tmp")
	eventually(t, 10*time.Second, "the script and fifo", func() bool {
		_, err := os.Stat(filepath.Join(tmp, "plan"))
		return err == nil
	})
	// berth's binary, run as the script's interpreter, waits on the fifo
	// as a shim would for its plan: the attacker has all the time it needs.
	script := run("container", "exec", "-e", "_BERTH_STAGE=shim", "-e", "_BERTH_PLAN=/tmp/plan", "cve", "/tmp/x")
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	partial := func() string { b, _ := os.ReadFile(filepath.Join(tmp, "attack.tmp")); return string(b) }
	eventually(t, 30*time.Second, "the attacker to hold berth's binary", func() bool { return strings.Contains(partial(), "held=") })
	// The attacker killed the process it held, and the exec with it.
	_ = script.Wait()
	var st struct{ Pid, ShimPid int }
	out, err := run("container", "inspect", "cve").Output()
	if err != nil || json.Unmarshal(out, &st) != nil || st.ShimPid == 0 {
		t.Fatalf("inspect: %v %s", err, out)
	}
	if err := syscall.Kill(st.ShimPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the shim to die", func() bool { return syscall.Kill(st.ShimPid, 0) != nil })
	attacker := runtimetest.HostPidOf(st.Pid, "probe\x00exe")
	if attacker == 0 {
		t.Fatal("the attacker's host pid is not found")
	}
	if err := syscall.Kill(attacker, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var report []byte
	eventually(t, 20*time.Second, "the attacker's report", func() bool {
		report, err = os.ReadFile(filepath.Join(tmp, "attack"))
		return err == nil
	})
	res := runtimetest.ProbeResults(string(report))
	if res["go_on"] != "1" || res["exe_reopen_w"] != "EROFS" || res["exe_repwrite"] != "" {
		t.Errorf("berth's binary, held from the container, reopened for writing: %s\n%s", res["exe_reopen_w"], report)
	}
	if b, _ := os.ReadFile(bin); !bytes.Equal(b, data) {
		t.Error("berth's binary was changed from inside the container")
	}
}

// The same for "berth container run" in the foreground: the container's
// output reaches the operator's file through berth's log relay only.
func TestContainerRunKeepsTheCallersStreams(t *testing.T) {
	e := newEnv(t)
	for _, ex := range []string{"berth", "runc", "crun"} {
		t.Run(ex, func(t *testing.T) {
			requireExecutor(t, ex)
			rootfs := runtimetest.BusyboxRootfs(t)
			runtimetest.Probe(t, rootfs)
			const secret = "OPERATOR-SECRET-0b5d"
			host, out := runtimetest.CallerFile(t, secret)
			_, pts := runtimetest.OpenPty(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, berthBin, "--data-dir", e.dataDir, "container", "run", "--rm",
				"--name", "run-streams-"+ex, "--runtime", ex, "--rootfs", rootfs, "probe", "probe", "stdio")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, out, out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			if err := cmd.Run(); err != nil {
				b, _ := os.ReadFile(host)
				t.Fatalf("berth container run: %v\n%s", err, b)
			}
			b, _ := os.ReadFile(host)
			res := runtimetest.ProbeResults(string(b))
			runtimetest.ExpectCallerKept(t, res, string(b), secret, pts)
			if !strings.HasPrefix(res["fd1"], "pipe:") || !strings.HasPrefix(res["fd2"], "pipe:") {
				t.Errorf("stdout %q, stderr %q: want the shim's pipes", res["fd1"], res["fd2"])
			}
		})
	}
}
