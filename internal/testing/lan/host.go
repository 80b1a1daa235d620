package lan

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
)

// Host is one machine of the LAN: a `berth server` or a `berth agent`.
type Host struct {
	Name    string // s1, s2... or n1, n2...: the server's or node's name
	Addr    string // its address on the LAN
	Netns   string // the path of its network namespace
	DataDir string

	lan  *LAN
	ns   string   // the name of its network namespace
	args []string // the berth command line of its process, after --data-dir
	proc *exec.Cmd
	done chan struct{} // closed when proc exits
	logs []string      // the output file of every process it ran, oldest first
}

// Pid is the id of the host's berth process (nsenter executes berth in
// its own place), 0 when none runs.
func (h *Host) Pid() int {
	if h.proc == nil || h.proc.Process == nil {
		return 0
	}
	return h.proc.Process.Pid
}

// url is the server's API.
func (h *Host) url() string { return "https://" + h.Addr + ":" + apiPort }

// berth is berth with args in the host's namespace on its data dir.
func (h *Host) berth(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.Netns, h.lan.cfg.Berth, "--data-dir", h.DataDir}, args...)...)
}

// Start runs the host's berth process, as the LAN's Start set it up, in
// a session of its own: again after Kill or Crash, on the same data dir.
// Its output goes to a new berth-<n>.log in the data dir.
func (h *Host) Start() error {
	if h.args == nil || h.proc != nil {
		return fmt.Errorf("start berth on %s: not set up, or already started", h.Name)
	}
	log, err := os.Create(filepath.Join(h.DataDir, fmt.Sprintf("berth-%d.log", len(h.logs)+1)))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := h.berth(context.Background(), h.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start berth on %s: %w", h.Name, err)
	}
	h.logs = append(h.logs, log.Name())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.proc, h.done = cmd, done
	return nil
}

// output is what the host's last process wrote so far.
func (h *Host) output() string {
	if len(h.logs) == 0 {
		return ""
	}
	b, _ := os.ReadFile(h.logs[len(h.logs)-1])
	return string(b)
}

// Kill stops the host's berth process with SIGKILL, as a crash would,
// and waits for it to exit.
func (h *Host) Kill() {
	if h.proc == nil {
		return
	}
	_ = h.proc.Process.Kill()
	<-h.done
	h.proc = nil
}

// Run runs berth with args in the host's namespace on its data dir, for
// at most a minute, and returns its stdout. An exit other than 0 is an
// error that carries stdout and stderr.
func (h *Host) Run(args ...string) (string, error) {
	return h.run(nil, args)
}

// run is Run with flags before args that errors leave out.
func (h *Host) run(flags, args []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := h.berth(ctx, append(flags, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("berth %s on %s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), h.Name, err, &out, &errb)
	}
	return out.String(), nil
}

// Container is a container of an agent's runtime, as `berth container
// ps -o json` shows it.
type Container struct {
	ID      string            `json:"id"`
	State   string            `json:"state"`
	Pid     int               `json:"pid"`
	ShimPid int               `json:"shimPid"`
	Labels  map[string]string `json:"labels"`
}

// Containers lists the agent's containers, exited ones too.
func (h *Host) Containers() ([]Container, error) {
	out, err := h.Run("container", "ps", "-a", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list []Container
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("container ps on %s: %w", h.Name, err)
	}
	return list, nil
}

// RunningOf counts the agent's running containers of owner's instances.
func (h *Host) RunningOf(owner string) (int, error) {
	list, err := h.Containers()
	n := 0
	for _, c := range list {
		if c.State == "running" && strings.HasPrefix(c.Labels["berth.instance"], "default/"+owner+"-") {
			n++
		}
	}
	return n, err
}

// Unplug takes the host's link to the switch down, as a pulled cable would.
func (h *Host) Unplug() error { return ip(h.ns, "link", "set", "eth0", "down") }

// Plug brings the host's link to the switch back up.
func (h *Host) Plug() error { return ip(h.ns, "link", "set", "eth0", "up") }

// Crash kills everything of the host at once with SIGKILL: its berth
// process, every process in its network namespace (the containers'
// shims among them) and every process in its runtime's cgroups (the
// containers), until none is left, for at most 10 seconds.
func (h *Host) Crash() error {
	list, err := h.Containers()
	if err != nil {
		return err
	}
	rt, err := runtime.New(filepath.Join(h.DataDir, "containers"))
	if err != nil {
		return err
	}
	parent := filepath.Dir(rt.CgroupPath("x"))
	if h.proc != nil {
		_ = h.proc.Process.Kill()
	}
	for _, c := range list {
		for _, p := range []int{c.Pid, c.ShimPid} {
			if p > 0 {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
	err = wait(context.Background(), 10*time.Second, "every process of "+h.Name+" to die", func() (bool, error) {
		left := h.pids(parent)
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		return len(left) == 0, nil
	})
	if h.proc != nil {
		<-h.done
		h.proc = nil
	}
	return err
}

// pids lists the processes in the host's namespace and in the cgroups
// below parent, in any hierarchy.
func (h *Host) pids(parent string) []int {
	var out []int
	add := func(b []byte) {
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				out = append(out, p)
			}
		}
	}
	if b, err := exec.Command("ip", "netns", "pids", h.ns).Output(); err == nil {
		add(b)
	}
	for _, hier := range []string{"pids", "memory", "cpu", "unified", ""} {
		procs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", hier, parent, "*", "cgroup.procs"))
		for _, f := range procs {
			b, _ := os.ReadFile(f)
			add(b)
		}
	}
	return out
}
