package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime/launch"
)

// external runs containers with an OCI runtime binary (runc, crun) under
// berth's shim: the shim runs "<runtime> run" in the foreground and owns its
// stdio, so logs and exit status work as with the built-in executor.
type external struct {
	bin   string // runc or crun, looked up in PATH
	state string // the runtime's --root
	// hide runs the runtime where the hybrid layout's empty cgroup2 mount
	// is unmounted: crun refuses hybrid hosts otherwise.
	hide bool
	cg   *cgroups
}

var _ executor = (*external)(nil)

func (e *external) name() string { return e.bin }

func (e *external) command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{e.bin, "--root", e.state}, args...)
	if e.hide {
		full = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`umount -l /sys/fs/cgroup/unified 2>/dev/null; exec "$@"`, "sh"}, full...)
	}
	return exec.CommandContext(ctx, full[0], full[1:]...)
}

func (e *external) prepare(_ context.Context, bd *bundle, s *specs.Spec) (*launch.Plan, error) {
	bin, err := exec.LookPath(e.bin)
	if err != nil {
		return nil, fmt.Errorf("executor %s: %w", e.bin, err)
	}
	if err := checkMountTargets(s.Root.Path, s.Mounts); err != nil {
		return nil, err
	}
	if bd.restoreFrom != "" {
		return e.restorePlan(bin, bd)
	}
	return &launch.Plan{
		// create and start rather than run: the container (and its cgroup,
		// which tells of OOM kills) stays until cleanup deletes it. The path is
		// absolute: the shim runs with an empty environment, so no PATH.
		ExternalArgs:  []string{bin, "--root", e.state, "create", "--pid-file", bd.path("runtime.pid"), "--bundle", bd.dir, bd.id},
		ExternalStart: []string{bin, "--root", e.state, "start", bd.id},
		PIDFile:       bd.path("runtime.pid"),
		HideUnified:   e.hide,
	}, nil
}

// started: the shim reports the container's own pid once "start" has returned.
func (e *external) started(_ context.Context, _ *bundle, pid int) (int, error) { return pid, nil }

func (e *external) run(ctx context.Context, args ...string) error {
	var out bytes.Buffer
	cmd := e.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", e.bin, args[0], err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func (e *external) kill(ctx context.Context, bd *bundle, sig syscall.Signal) error {
	return e.run(ctx, "kill", bd.id, strconv.Itoa(int(sig)))
}

func (e *external) exec(ctx context.Context, bd *bundle, s *specs.Spec, st Status, pr ExecProcess, self string) (int, error) {
	if _, ok := userNSOf(s); ok && hostNetNS(s) && e.bin == "runc" {
		// runc 1.1 joins the container's user namespace first and is then
		// refused the network namespace, which the host owns: berth's own
		// exec joins them in the order that works, with the same process
		// settings from the spec.
		return (&builtin{cg: e.cg}).exec(ctx, bd, s, st, pr, self)
	}
	args := []string{"exec"}
	if pr.Tty {
		args = append(args, "--tty")
	}
	if pr.Cwd != "" {
		args = append(args, "--cwd", pr.Cwd)
	}
	if pr.User != "" {
		args = append(args, "--user", pr.User)
	}
	for _, kv := range pr.Env {
		args = append(args, "--env", kv)
	}
	args = append(append(args, bd.id), pr.Args...)
	cmd := e.command(context.WithoutCancel(ctx), args...)
	cmd.WaitDelay = 2 * time.Second
	return runExecCmd(ctx, cmd, pr)
}

func (e *external) cleanup(ctx context.Context, bd *bundle, s *specs.Spec) error {
	err := e.run(ctx, "delete", "--force", bd.id)
	if err != nil && bytes.Contains([]byte(err.Error()), []byte("does not exist")) {
		err = nil
	}
	if s != nil && s.Linux != nil {
		// The runtime removes its cgroup on delete; this catches what a crashed one left.
		if rerr := e.cg.remove(s.Linux.CgroupsPath); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

func (e *external) oomKilled(s *specs.Spec) bool {
	return s != nil && s.Linux != nil && e.cg.oomKills(s.Linux.CgroupsPath) > 0
}

// checkMountTargets refuses an image in which a mount destination passes
// through a symbolic link. An OCI runtime resolves the destination inside
// the root filesystem, but then makes what it adds there (runc 1.1's
// /dev/fd, /dev/stdin... links) by host paths that follow the link, out
// onto the host. The built-in init checks the same inside the container.
// The caller's mounts were resolved before (mountdest.go) and pass; the
// defaults (/dev, /proc...) are never redirected by an image.
// The last component of a file bind (an image's /etc/resolv.conf link)
// is the runtime's to replace and is let through.
func checkMountTargets(rootfs string, mounts []specs.Mount) error {
	for _, m := range mounts {
		parts := strings.Split(strings.Trim(filepath.Clean(m.Destination), "/"), "/")
		last := len(parts)
		if isFileBind(m) {
			last--
		}
		p := rootfs
		for _, part := range parts[:last] {
			p = filepath.Join(p, part)
			st, err := os.Lstat(p)
			if err != nil {
				break // missing: the runtime makes it a directory
			}
			if st.Mode()&os.ModeSymlink != 0 {
				return fmt.Errorf("mount destination %s: %s in the image is a symbolic link; mounting there could reach the host", m.Destination, strings.TrimPrefix(p, rootfs))
			}
		}
	}
	return nil
}
