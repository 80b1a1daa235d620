package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/netsync"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/runtime"
)

// upRecord is what `berth up` leaves in its data dir, and keeps after it
// stops, for `berth down --purge` to know what it set up on the host. The
// running process is found by its socket, not here.
type upRecord struct {
	// Bridge is the node's bridge; "" when berth up ran with --no-network.
	Bridge string `json:"bridge"`
	// NetNS names the network namespace berth up ran in ("net:[inode]"):
	// its bridge and tables are there, not in whichever namespace runs
	// berth down.
	NetNS string `json:"netns,omitempty"`
}

// netNS names the caller's network namespace as the kernel does.
func netNS() string {
	ns, _ := os.Readlink("/proc/self/ns/net")
	return ns
}

// checkPurgeNetNS refuses a purge from another network namespace than
// berth up's: there it would remove that namespace's bridge and tables of
// the same names, which may belong to another berth, and leave its own.
func checkPurgeNetNS(rec upRecord, here string) error {
	if rec.Bridge == "" || rec.NetNS == "" || here == "" || rec.NetNS == here {
		return nil
	}
	return fmt.Errorf("down --purge: berth up ran in network namespace %s, this is %s: its bridge %s and nftables tables are there; "+
		"run berth down --purge in that namespace, or give --bridge to purge this one's", rec.NetNS, here, rec.Bridge)
}

func upRecordPath(dataDir string) string { return filepath.Join(dataDir, "up.json") }

func writeUpRecord(dataDir string, r upRecord) error {
	b, _ := json.Marshal(r)
	return os.WriteFile(upRecordPath(dataDir), b, 0o600)
}

func readUpRecord(dataDir string) (upRecord, bool) {
	var r upRecord
	b, err := os.ReadFile(upRecordPath(dataDir))
	if err != nil || json.Unmarshal(b, &r) != nil {
		return r, false
	}
	return r, true
}

func newDownCmd(g *globals) *cobra.Command {
	var purge bool
	var timeout time.Duration
	var bridge string
	cmd := &cobra.Command{
		Use:   "down [--purge]",
		Short: "Stop the berth up of this data dir (--purge: and remove everything it made on the host)",
		Long: `Stop the 'berth up' serving this data dir's socket, as Ctrl-C does, and
wait until it has exited. Its containers keep running, and the next
'berth up' adopts them.

With --purge, also remove what berth made on this host: every container
of the data dir (and so their mounts and cgroups), the node's bridge
(berth0, or the one berth up was given), berth's nftables tables, the
network namespaces pinned in the data dir and any mount left under it,
and the bridge and tables of the containers run with -p.
Run it in the network namespace berth up ran in (it refuses another).
The data dir itself, with the cluster's state and images, is kept.`,
		Example: "  berth down\n  berth down --purge",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if g.server != "" && !strings.HasPrefix(g.server, "unix://") {
				return fmt.Errorf("down stops a berth on this machine: --server %s is not a unix socket", g.server)
			}
			rec, haveRec := readUpRecord(g.dataDir)
			if purge && haveRec && bridge == "" {
				if err := checkPurgeNetNS(rec, netNS()); err != nil {
					return err
				}
			}
			sock := strings.TrimPrefix(g.endpoint(), "unix://")
			pid, err := socketOwner(sock)
			switch {
			case err != nil && !purge:
				fmt.Fprintf(out, "berth is not running here (%v)\n", err)
				return nil
			case err != nil:
				fmt.Fprintf(out, "berth is not running here (%v)\n", err)
			default:
				if err := stopProcess(cmd.Context(), pid, timeout); err != nil {
					return err
				}
				fmt.Fprintf(out, "berth (pid %d) stopped\n", pid)
			}
			if !purge {
				return nil
			}
			network := true
			if bridge == "" && haveRec {
				bridge, network = rec.Bridge, rec.Bridge != ""
			}
			return purgeHost(cmd.Context(), out, g.dataDir, bridge, network)
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove containers, the bridge, nftables tables, mounts and cgroups of berth's")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for berth to stop")
	cmd.Flags().StringVar(&bridge, "bridge", "", "with --purge, the bridge to remove in this network namespace (default: the one berth up used, refused from another namespace than berth up's)")
	return cmd
}

// socketOwner is the pid of the process serving the unix socket at path,
// as the kernel reports it for a connection (SO_PEERCRED): no pid file
// that could be stale.
func socketOwner(path string) (int, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return 0, fmt.Errorf("no API at %s: %w", path, err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("who serves %s: %w", path, credErr)
	}
	return int(cred.Pid), nil
}

// stopProcess asks pid to stop (SIGTERM, as Ctrl-C) and waits until it
// has exited, at most timeout. A pidfd keeps the wait on that process
// even if its pid were reused.
func stopProcess(ctx context.Context, pid int, timeout time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("berth (pid %d): %w", pid, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop berth (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("berth (pid %d) still runs %v after it was asked to stop", pid, timeout)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Poll in slices, so that an interrupt of down itself is heard.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(min(left, 200*time.Millisecond).Milliseconds())+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for berth (pid %d): %w", pid, err)
		}
		if n > 0 {
			return nil
		}
	}
}

// purgeHost removes what berth up made on the host for dataDir: its
// containers (with their mounts and cgroups), what is still mounted under
// the data dir, the leftover cgroups and, unless it ran without a network,
// the nftables tables and the bridge.
// It goes on past a failure and reports every one.
func purgeHost(ctx context.Context, out io.Writer, dataDir, bridge string, network bool) error {
	var errs []error
	rt, err := runtime.New(filepath.Join(dataDir, "containers"))
	if err != nil {
		return err
	}
	store, err := image.Open(filepath.Join(dataDir, "images"))
	if err != nil {
		return err
	}
	list, err := rt.List(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, st := range list {
		if err := rt.Delete(ctx, st.ID, true); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", st.ID, err))
			continue
		}
		if err := store.Release(ctx, st.ID); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", st.ID, err))
		}
	}
	fmt.Fprintf(out, "removed %d containers\n", len(list))

	mounts, err := runtime.MountsUnder(dataDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
			continue
		}
		fmt.Fprintf(out, "unmounted %s\n", m)
	}
	// The pinned network namespaces are files once unmounted.
	for _, dir := range []string{filepath.Join(dataDir, "net", "netns", ".spare"), filepath.Join(dataDir, "net", "netns")} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !e.IsDir() {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}

	parent := filepath.Dir(rt.CgroupPath("x"))
	n, err := removeCgroups(parent)
	if err != nil {
		errs = append(errs, err)
	}
	if n > 0 {
		fmt.Fprintf(out, "removed %d cgroups under %s\n", n, parent)
	}

	if network {
		if err := removeNetwork(out, bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeContainerNet(out, filepath.Join(dataDir, "container-net")); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeContainerNet deletes the network of the containers run with -p
// (network.Local): its bridge and tables, then its state, the pinned
// namespaces among it being unmounted by now.
func removeContainerNet(out io.Writer, dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	done, err := network.RemoveLocal(dir)
	for _, d := range done {
		fmt.Fprintf(out, "removed %s\n", d)
	}
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// removeCgroups removes the cgroup parent of the data dir's containers,
// and what is left below it, in every hierarchy. Only empty cgroups can
// go, which they are once the containers are removed.
func removeCgroups(parent string) (int, error) {
	roots := []string{"/sys/fs/cgroup"}
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
			}
		}
	}
	n := 0
	var errs []error
	for _, root := range roots {
		top := filepath.Join(root, parent)
		if _, err := os.Stat(filepath.Join(top, "cgroup.procs")); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children before their parents
		for _, d := range dirs {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("cgroup %s: %w", d, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// removeNetwork deletes berth's nftables tables and the bridge in the
// caller's network namespace.
func removeNetwork(out io.Writer, bridge string) error {
	if bridge == "" {
		bridge = netsync.DefaultBridge
	}
	done, err := network.RemoveHostNetwork(bridge, netsync.DefaultNodeTable, netsync.DefaultServiceTable)
	for _, d := range done {
		fmt.Fprintf(out, "removed %s\n", d)
	}
	return err
}
