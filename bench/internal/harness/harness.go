// Package harness is what the benchmarks share: a `berth up` started on
// a data directory of its own and waited for, the berth CLI bound to that
// directory, and the percentiles they print.
package harness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// Up is a running `berth up`.
type Up struct {
	Bin, Data string
	Cmd       *exec.Cmd
	Client    *client.Client
	netns     string
}

// Options say how to start berth up.
type Options struct {
	// Args are more arguments of berth up ("--no-network").
	Args []string
	// Netns, when set, names a network namespace made for berth up
	// (ip netns add), so that its bridge and tables stay off the host's
	// network; Stop removes it.
	Netns string
	// Log takes berth up's output; none when nil.
	Log io.Writer
}

// Start starts berth up on data, in its own session, and waits for its
// API to answer and its node to be ready. bin is made absolute.
func Start(bin, data string, o Options) (*Up, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	u := &Up{Bin: bin, Data: data, netns: o.Netns}
	argv := append([]string{bin, "--data-dir", data, "up"}, o.Args...)
	if o.Netns != "" {
		if out, err := exec.Command("ip", "netns", "add", o.Netns).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip netns add: %w: %s", err, out)
		}
		_ = exec.Command("ip", "-n", o.Netns, "link", "set", "lo", "up").Run()
		// nsenter execs berth up: the pid is berth up's own.
		argv = append([]string{"nsenter", "--net=/run/netns/" + o.Netns}, argv...)
	}
	u.Cmd = exec.Command(argv[0], argv[1:]...)
	u.Cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	u.Cmd.Stdout, u.Cmd.Stderr = o.Log, o.Log
	if err := u.Cmd.Start(); err != nil {
		u.removeNetns()
		return nil, err
	}
	if u.Client, err = client.New("unix://" + filepath.Join(data, "berth.sock")); err == nil {
		err = u.waitReady(30 * time.Second)
	}
	if err != nil {
		u.Stop()
		return nil, err
	}
	return u, nil
}

// waitReady waits for the API to answer and a node to be Ready.
func (u *Up) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if u.Client.Healthz(ctx) == nil {
			if nodes, _, err := u.Client.Nodes().List(ctx, ""); err == nil && len(nodes) > 0 && nodes[0].Status.Condition == api.NodeReady {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("berth up did not answer with a ready node")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills berth up, then removes the containers it left (they outlive
// it, as a restarted node adopts them), the network namespaces they were
// pinned in, and its own network namespace.
func (u *Up) Stop() {
	_ = u.Cmd.Process.Kill()
	_, _ = u.Cmd.Process.Wait()
	out, _ := exec.Command(u.Bin, "--data-dir", u.Data, "container", "ps", "-a", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command(u.Bin, "--data-dir", u.Data, "container", "rm", "--force", id).Run()
	}
	pins, _ := filepath.Glob(filepath.Join(u.Data, "net", "netns", "*"))
	for _, p := range pins {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
	u.removeNetns()
}

func (u *Up) removeNetns() {
	if u.netns != "" {
		_ = exec.Command("ip", "netns", "del", u.netns).Run()
	}
}

// Berth runs the berth CLI on u's data directory.
func (u *Up) Berth(args ...string) (string, error) { return Berth(u.Bin, u.Data, args...) }

// Berth runs the berth CLI bin on data; its error carries the output.
func Berth(bin, data string, args ...string) (string, error) {
	out, err := exec.Command(bin, append([]string{"--data-dir", data}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("berth %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Pct is the p-th percentile of d (nearest rank).
func Pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

// MS writes d in milliseconds, to a tenth.
func MS(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// Ratio is a over b, for figures measured side by side.
func Ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// BerthFlag declares the -berth flag of a benchmark that measures the
// built binary.
func BerthFlag() *string { return flag.String("berth", "bin/berth", "the berth binary to measure") }

// Exit ends a benchmark's main: an error is printed, with status 1.
func Exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Workspace is what a benchmark of the built binary starts from: the
// binary's absolute path and a work directory holding a busybox rootfs.
type Workspace struct {
	Bin, Work, Rootfs string
}

// NewWorkspace makes a workspace for bin in a new directory named by
// prefix; Close removes it.
func NewWorkspace(bin, prefix string) (*Workspace, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	work, rootfs, err := runtimetest.BusyboxWorkdir(prefix)
	if err != nil {
		return nil, err
	}
	return &Workspace{Bin: bin, Work: work, Rootfs: rootfs}, nil
}

// Close removes the work directory.
func (w *Workspace) Close() { _ = os.RemoveAll(w.Work) }
