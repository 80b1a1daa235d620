//go:build guest

// Package guest boots a Debian 12 guest with systemd as PID 1 and pure
// cgroup v2 under qemu (software emulation: no KVM needed), installs
// berth's Debian package there and runs berth as a user would (run.sh).
// It is slow (minutes), so it has its own build tag and make target
// (make test-guest, which make test runs).
package guest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// guestImage returns the directory of the guest's disk and kernel,
// building it when the build script has changed (its hash names the
// directory) or it was never built.
func guestImage(t *testing.T, repo string) string {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(repo, "scripts/guest-image.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(script)
	dir := filepath.Join(repo, "build/guest", hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "disk.img")); err == nil {
		t.Logf("guest image: cached in %s", dir)
		return dir
	}
	t0 := time.Now()
	cmd := exec.Command("sh", "scripts/guest-image.sh", dir)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the guest image: %v\n%s", err, tail(out, 4000))
	}
	t.Logf("guest image: built in %s (debootstrap from Debian's archive, mkfs.ext4 -d)", time.Since(t0).Round(time.Second))
	return dir
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// payload makes the second disk: the package, the demo image's script and run.sh.
func payload(t *testing.T, repo string) string {
	t.Helper()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "berth")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/berth")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build berth: %v\n%s", err, out)
	}
	deb := strings.TrimSpace(run(t, repo, "sh", "scripts/deb.sh", bin, filepath.Join(tmp, "deb")))
	// The runtime's own tests that need systemd and pure cgroup v2 run inside too.
	rtTest := filepath.Join(tmp, "runtime.test")
	run(t, repo, "go", "test", "-c", "-tags", "guest", "-o", rtTest, "./internal/runtime/")
	dir := filepath.Join(tmp, "payload")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		deb: "berth.deb", filepath.Join(repo, "scripts/demo-image.sh"): "demo-image.sh",
		filepath.Join(repo, "test/guest/run.sh"): "run.sh", filepath.Join(repo, "test/guest/pinned.yaml"): "pinned.yaml",
		rtTest: "runtime.test",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(tmp, "payload.img")
	run(t, tmp, "truncate", "-s", "256M", img)
	run(t, tmp, "mkfs.ext4", "-q", "-F", "-d", dir, img)
	return img
}

// facts is what run.sh reported: each key's values, in order.
type facts map[string][]string

func (f facts) one(t *testing.T, key string) string {
	t.Helper()
	if len(f[key]) == 0 {
		t.Errorf("the guest did not report %s", key)
		return ""
	}
	return f[key][0]
}

func (f facts) ms(t *testing.T, key string) time.Duration {
	t.Helper()
	n, err := strconv.Atoi(f.one(t, key))
	if err != nil {
		t.Errorf("%s: %q is not a number of milliseconds", key, f.one(t, key))
	}
	return time.Duration(n) * time.Millisecond
}

func TestGuestSystemdCgroup2(t *testing.T) {
	testenv.RequireRoot(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	img := guestImage(t, repo)
	pl := payload(t, repo)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "2048", "-smp", "2",
		"-kernel", filepath.Join(img, "vmlinuz"), "-initrd", filepath.Join(img, "initrd.img"),
		"-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=1",
		// snapshot=on: the cached disk stays as built; the guest's writes are thrown away.
		"-drive", "file="+filepath.Join(img, "disk.img")+",format=raw,if=virtio,snapshot=on",
		"-drive", "file="+pl+",format=raw,if=virtio",
		"-nographic", "-no-reboot", "-nic", "none")
	out, err := qemu.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	qemu.Stderr = os.Stderr
	t0 := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	f := facts{}
	// The console is kept whole in build/guest/console.log, to read after a failure.
	var console strings.Builder
	defer func() {
		_ = os.WriteFile(filepath.Join(repo, "build/guest/console.log"), []byte(console.String()), 0o644)
	}()
	var started, poweroff time.Time
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		// Each line with the host's time since qemu started, to see where time goes.
		fmt.Fprintf(&console, "%7.1fs %s\n", time.Since(t0).Seconds(), line)
		i := strings.Index(line, "@@ ")
		if i < 0 {
			continue
		}
		key, val, _ := strings.Cut(line[i+3:], " ")
		f[key] = append(f[key], strings.TrimSpace(val))
		switch key {
		case "start":
			started = time.Now()
		case "poweroff":
			poweroff = time.Now()
		}
	}
	_, _ = io.Copy(io.Discard, out)
	werr := qemu.Wait()
	end := time.Now()
	if ctx.Err() != nil || werr != nil {
		t.Fatalf("qemu: %v (context: %v); console:\n%s", werr, ctx.Err(), tail([]byte(console.String()), 8000))
	}
	defer func() {
		if t.Failed() {
			var diag []string
			for _, line := range strings.Split(console.String(), "\n") {
				if strings.Contains(line, "@@ diag") {
					diag = append(diag, line)
				}
			}
			t.Logf("what the guest saw at the failing step:\n%s", strings.Join(diag, "\n"))
			t.Logf("console (whole in build/guest/console.log):\n%s", tail([]byte(console.String()), 8000))
		}
	}()
	if started.IsZero() || poweroff.IsZero() {
		t.Fatalf("the guest's script did not run to its end")
	}
	t.Logf("boot to the script: %s; script: %s; power off: %s; whole run: %s",
		started.Sub(t0).Round(100*time.Millisecond), poweroff.Sub(started).Round(100*time.Millisecond),
		end.Sub(poweroff).Round(100*time.Millisecond), end.Sub(t0).Round(time.Second))

	// The host is the one users have.
	if f.one(t, "fs") != "cgroup2fs" || f.one(t, "pid1") != "systemd" || f.one(t, "v1mounts") != "0" {
		t.Fatalf("not a systemd + pure cgroup v2 guest: fs %v, pid1 %v, v1 mounts %v", f["fs"], f["pid1"], f["v1mounts"])
	}
	// The runtime's own tests for this host (internal/runtime/guest_test.go).
	if f.one(t, "runtime_tests") != "0" {
		t.Errorf("the runtime's guest tests failed:\n%s", strings.Join(f["rt"], "\n"))
	} else {
		t.Logf("the runtime's guest tests passed in %s:\n%s", f.ms(t, "runtime_tests_ms"), strings.Join(f["rt"], "\n"))
	}
	for _, k := range []string{"deb_install", "demo_image", "enable", "ready", "run", "apply", "running"} {
		if v := f.one(t, k); v != "0" {
			t.Fatalf("%s failed (exit %s)", k, v)
		}
	}
	t.Logf("node Ready %s after systemctl enable --now berth-up; 4 instances running %s after berth run",
		f.ms(t, "ready_ms"), f.ms(t, "run_ms"))

	// Each container in its own scope in berth.slice, its shim too, and its limits there.
	if n := len(f["inst"]); n != 4 {
		t.Fatalf("%d running instances, want 4: %v", n, f["inst"])
	}
	byCtr := func(key string) map[string]string {
		m := map[string]string{}
		for _, v := range f[key] {
			c, rest, _ := strings.Cut(v, " ")
			m[c] = rest
		}
		return m
	}
	procCG, shimCG, units := byCtr("proc_cgroup"), byCtr("shim_cgroup"), byCtr("unit")
	cpuMax, memMax, pidsMax, cpus := byCtr("cpu.max"), byCtr("memory.max"), byCtr("pids.max"), byCtr("cpuset.cpus")
	for _, v := range f["inst"] {
		fl := strings.Fields(v)
		name, ctr := fl[0], fl[3]
		scope := "0::/berth.slice/berth-" + ctr + ".scope"
		if procCG[ctr] != scope || shimCG[ctr] != scope {
			t.Errorf("%s: container in %q, shim in %q; want both in %q", name, procCG[ctr], shimCG[ctr], scope)
		}
		if u := units[ctr]; !strings.HasPrefix(u, "berth.slice yes active") {
			t.Errorf("%s: scope unit Slice/Delegate/ActiveState %q, want berth.slice yes active", name, u)
		}
		if strings.HasPrefix(name, "web-") {
			if cpuMax[ctr] != "20000 100000" || memMax[ctr] != strconv.Itoa(64<<20) || pidsMax[ctr] != "65" {
				t.Errorf("%s: cpu.max %q memory.max %q pids.max %q; want 20000 100000, %d, 65 (64 and the shim)",
					name, cpuMax[ctr], memMax[ctr], pidsMax[ctr], 64<<20)
			}
		} else if !regexp.MustCompile(`^[0-9]+$`).MatchString(cpus[ctr]) {
			t.Errorf("%s: cpuset.cpus %q, want one pinned core", name, cpus[ctr])
		}
	}
	if n := f.one(t, "service_procs"); n != "1" {
		t.Errorf("berth-up.service's cgroup holds %s processes, want 1 (berth alone: no shims)", n)
	}

	// Restart: fast, the same containers, adopted.
	stop, restart := f.ms(t, "stop_ms"), f.ms(t, "restart_ms")
	t.Logf("systemctl restart berth-up: stopped in %s, running again %s after the stop began (the command took %s)",
		stop, restart, f.ms(t, "restart_cmd_ms"))
	if restart > 2*time.Second {
		t.Errorf("stopping and starting berth-up took %s, want under 2s", restart)
	}
	t.Logf("the same %d instances, adopted, shown Running again %s after systemctl restart began", len(f["inst"]), f.ms(t, "adopted_ms"))
	if f.one(t, "same_after_restart") != "0" {
		t.Errorf("instances changed over a restart of berth-up: before %v, after %v", f["inst"], f["after_restart"])
	}

	// A shim killed: replaced, and no duplicate.
	if f.one(t, "replaced") != "0" || f.one(t, "old_alive") == "0" {
		t.Errorf("after killing %v: replaced %v, old process alive %v", f["victim"], f["replaced"], f.one(t, "old_alive") == "0")
	}
	if n := f.one(t, "httpd"); n != "4" {
		t.Errorf("%s httpd processes after a shim was killed, want 4", n)
	}
	if ev := f.one(t, "event"); !strings.Contains(ev, "ShimLostKilled") || !strings.Contains(ev, "cgroup.kill") {
		t.Errorf("event %q, want ShimLostKilled ... (cgroup.kill)", ev)
	}

	// daemon-reload changes no limit.
	if f.one(t, "limits_same_after_reload") != "0" {
		t.Errorf("limits changed over systemctl daemon-reload: %v", f["limits"])
	}

	// A service without ports is warned about.
	want := "warning: service noports has no ports: its virtual IP and DNS name noports.default.berth will not answer"
	if f.one(t, "noports_run") != "0" || !strings.HasPrefix(f.one(t, "noports_warning"), want) {
		t.Errorf("berth run without --port: exit %s, warning %q; want %q", f.one(t, "noports_run"), f.one(t, "noports_warning"), want)
	}

	// Power off with containers running, quickly.
	if n := f.one(t, "scopes"); n != "4" {
		t.Errorf("%s container scopes before power off, want 4", n)
	}
	if d := end.Sub(poweroff); d > 20*time.Second {
		t.Errorf("power off with containers running took %s, want under 20s", d.Round(100*time.Millisecond))
	}
	fmt.Fprintf(os.Stderr, "guest: boot %s, script %s, power off %s\n", started.Sub(t0).Round(100*time.Millisecond),
		poweroff.Sub(started).Round(100*time.Millisecond), end.Sub(poweroff).Round(100*time.Millisecond))
}
