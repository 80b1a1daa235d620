package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/runtime/launch"
)

// ExecutorBuiltin is the executor linked into berth: the shim clones the
// container init directly, with no further binary to exec.
const ExecutorBuiltin = "berth"

type builtin struct {
	cg *cgroups
}

var _ executor = (*builtin)(nil)

func (b *builtin) name() string { return ExecutorBuiltin }

// prepare turns the spec into the shim's plan. The cgroups are made
// alongside, by the caller (see Runtime.start).
func (b *builtin) prepare(_ context.Context, bd *bundle, s *specs.Spec) (*launch.Plan, error) {
	if bd.restoreFrom != "" {
		return nil, errBuiltinCheckpoint
	}
	p, err := processPlan(s)
	if err != nil {
		return nil, err
	}
	p.Hostname = s.Hostname
	p.Rootfs = s.Root.Path
	p.RootfsReadonly = s.Root.Readonly
	p.Init = s.Annotations[initAnnotation] == "true"
	p.Masked = s.Linux.MaskedPaths
	p.Readonly = s.Linux.ReadonlyPaths
	for k, v := range s.Linux.Sysctl {
		p.Sysctls = append(p.Sysctls, k+"="+v)
	}
	p.Cgroups = b.cg.procsFiles(s.Linux.CgroupsPath)
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace && ns.Path != "" {
			p.NetNS = ns.Path
			continue
		}
		flag, ok := nsFlags[ns.Type]
		if !ok {
			return nil, fmt.Errorf("namespace %q is not supported", ns.Type)
		}
		p.NSFlags |= flag
	}
	if base, ok := userNSOf(s); ok {
		p.UserNS = &launch.UserNS{UID: base, GID: s.Linux.GIDMappings[0].HostID, Size: s.Linux.UIDMappings[0].Size}
	}
	for _, m := range s.Mounts {
		lm, err := planMount(m)
		if err != nil {
			return nil, err
		}
		p.Mounts = append(p.Mounts, lm)
	}
	return p, nil
}

var nsFlags = map[specs.LinuxNamespaceType]uint64{
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.CgroupNamespace:  unix.CLONE_NEWCGROUP,
	specs.UserNamespace:    unix.CLONE_NEWUSER,
}

var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "rw": 0, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV,
	"noexec": unix.MS_NOEXEC, "strictatime": unix.MS_STRICTATIME, "relatime": unix.MS_RELATIME,
	"noatime": unix.MS_NOATIME, "sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC,
	"suid": 0, "dev": 0, "exec": 0, "private": 0, "rprivate": 0, "bind": 0, "rbind": 0,
}

func planMount(m specs.Mount) (launch.Mount, error) {
	lm := launch.Mount{Source: m.Source, Target: m.Destination, FSType: m.Type}
	var data []string
	bind := m.Type == "bind"
	dev := false
	for _, o := range m.Options {
		switch o {
		case "bind":
			bind = true
		case "rbind":
			bind = true
			lm.Flags |= unix.MS_REC
		case "dev":
			dev = true
		}
		if f, ok := mountFlags[o]; ok {
			lm.Flags |= f
			continue
		}
		data = append(data, o)
	}
	lm.Data = strings.Join(data, ",")
	if !bind {
		return lm, nil
	}
	st, err := os.Stat(m.Source)
	if err != nil {
		return lm, fmt.Errorf("mount %s: source: %w", m.Destination, err)
	}
	lm.Kind = launch.MountBind
	if !st.IsDir() {
		lm.Kind = launch.MountBindFile
	}
	// Binds are nodev unless they bind a device or ask for "dev": a device
	// node made in a volume must not open a host device (on a cgroup v2 host
	// this, not a device cgroup, is what stops it).
	if !dev && st.Mode()&os.ModeDevice == 0 {
		lm.Flags |= unix.MS_NODEV
	}
	return lm, nil
}

var rlimitNames = map[string]uint32{
	"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
	"RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
	"RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
	"RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

// processPlan carries the process part of a spec: shared by the init and exec.
func processPlan(s *specs.Spec) (*launch.Plan, error) {
	pr := s.Process
	p := &launch.Plan{
		Args:       pr.Args,
		Env:        pr.Env,
		Cwd:        pr.Cwd,
		NoNewPrivs: pr.NoNewPrivileges,
		User:       &launch.User{UID: pr.User.UID, GID: pr.User.GID, AdditionalGIDs: pr.User.AdditionalGids},
	}
	for _, r := range pr.Rlimits {
		n, ok := rlimitNames[r.Type]
		if !ok {
			return nil, fmt.Errorf("process.rlimits: unknown limit %q", r.Type)
		}
		p.Rlimits = append(p.Rlimits, launch.Rlimit{Resource: n, Soft: r.Soft, Hard: r.Hard})
	}
	if c := pr.Capabilities; c != nil {
		var caps launch.Caps
		var err error
		for _, set := range []struct {
			dst   *uint64
			names []string
		}{{&caps.Bounding, c.Bounding}, {&caps.Effective, c.Effective}, {&caps.Permitted, c.Permitted},
			{&caps.Inheritable, c.Inheritable}, {&caps.Ambient, c.Ambient}} {
			if *set.dst, err = capMask(set.names); err != nil {
				return nil, fmt.Errorf("process.capabilities: %w", err)
			}
		}
		p.Caps = &caps
	}
	if pr.OOMScoreAdj != nil {
		v := int32(*pr.OOMScoreAdj)
		p.OOMScoreAdj = &v
	}
	if s.Linux != nil && s.Linux.Seccomp != nil {
		prog, err := compileSeccomp(s.Linux.Seccomp)
		if err != nil {
			return nil, err
		}
		p.Seccomp = prog
	}
	return p, nil
}

func (b *builtin) started(_ context.Context, _ *bundle, pid int) (int, error) { return pid, nil }

func (b *builtin) kill(_ context.Context, bd *bundle, sig syscall.Signal) error {
	return bd.signal(sig)
}

func (b *builtin) exec(ctx context.Context, bd *bundle, s *specs.Spec, st Status, pr ExecProcess, self string) (int, error) {
	spec := *s
	proc := *s.Process
	spec.Process = &proc
	proc.Args = pr.Args
	proc.Env = append(append([]string(nil), s.Process.Env...), pr.Env...)
	if pr.Cwd != "" {
		proc.Cwd = pr.Cwd
	}
	if pr.User != "" {
		uid, gid, err := parseUser(pr.User)
		if err != nil {
			return -1, fmt.Errorf("exec user: %w", err)
		}
		proc.User = specs.User{UID: uid, GID: gid}
	}
	p, err := processPlan(&spec)
	if err != nil {
		return -1, err
	}
	p.PID = st.Pid
	p.Cgroups = b.cg.procsFiles(s.Linux.CgroupsPath)
	raw, err := p.MarshalBinary()
	if err != nil {
		return -1, err
	}
	fd, err := unix.MemfdCreate("berth-exec-plan", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("exec plan: %w", err)
	}
	planFile := os.NewFile(uintptr(fd), "exec-plan")
	defer planFile.Close()
	if _, err := planFile.Write(raw); err != nil {
		return -1, fmt.Errorf("exec plan: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{launch.StageEnv + "=" + launch.StageExec}
	// A cancelled exec's process may hold the output pipes a moment after it is killed.
	cmd.WaitDelay = 2 * time.Second
	cmd.ExtraFiles = []*os.File{planFile}
	if !pr.Tty {
		return runExecCmd(ctx, cmd, pr)
	}
	return runConsoleExec(ctx, cmd, pr)
}

func (b *builtin) cleanup(_ context.Context, bd *bundle, s *specs.Spec) error {
	if s == nil || s.Linux == nil {
		return nil
	}
	return b.cg.remove(s.Linux.CgroupsPath)
}

func (b *builtin) oomKilled(s *specs.Spec) bool {
	return s != nil && s.Linux != nil && b.cg.oomKills(s.Linux.CgroupsPath) > 0
}

// runExecCmd runs an exec process and returns its exit code. The process
// never holds a descriptor of the caller's: its stdio are pipes berth
// relays (or, with Tty, a pseudo-terminal berth owns), and it starts in a
// session of its own, so it has no controlling terminal of the caller's.
// An inherited terminal would let the container type into the operator's
// shell (TIOCSTI), and an inherited file would let it reopen
// /proc/PID/fd/N and read what the file held before. Relaying ends when
// the process has exited: what a left-behind child writes later goes nowhere.
func runExecCmd(ctx context.Context, cmd *exec.Cmd, pr ExecProcess) (int, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stopStdin := func() {}
	if pr.Tty {
		master, slave, err := OpenPty()
		if err != nil {
			return -1, err
		}
		defer master.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		if pr.Resize != nil {
			pr.Resize(master)
		}
		if err := cmd.Start(); err != nil {
			slave.Close()
			return -1, fmt.Errorf("exec: %w", err)
		}
		slave.Close()
		if pr.Stdin != nil {
			go func() { _, _ = io.Copy(master, pr.Stdin) }()
		}
		if pr.Stdout != nil {
			// EIO from the master means every slave end is closed: normal at exit.
			_, _ = io.Copy(pr.Stdout, master)
		}
	} else {
		var err error
		if stopStdin, err = relayStdio(cmd, pr); err != nil {
			return -1, err
		}
		if err := cmd.Start(); err != nil {
			stopStdin()
			return -1, fmt.Errorf("exec: %w", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
	defer stop()
	err := cmd.Wait()
	stopStdin()
	return execExitCode(cmd, err)
}

// relayStdio gives cmd pipes in place of the caller's streams. The
// writers are handed to exec.Cmd wrapped, so that a writer that is an
// *os.File (a terminal, a host file) is copied to rather than passed in.
// The returned func ends the stdin relay; exec.Cmd ends the others at
// Wait (after its WaitDelay when a child the process left holds them).
func relayStdio(cmd *exec.Cmd, pr ExecProcess) (stopStdin func(), err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec: stdin pipe: %w", err)
	}
	cmd.Stdin = r
	if pr.Stdin != nil {
		// Not exec.Cmd's own copy: Wait would wait for it, and a read of a
		// terminal does not end when the process does.
		go func() {
			_, _ = io.Copy(w, pr.Stdin)
			w.Close()
		}()
	} else {
		w.Close()
	}
	cmd.Stdout, cmd.Stderr = relayed(pr.Stdout), relayed(pr.Stderr)
	return func() {
		r.Close()
		w.Close()
	}, nil
}

// writerOnly hides every method but Write, so exec.Cmd relays through a
// pipe even when the writer is an *os.File. Two wrappers of one writer
// compare equal, so stdout and stderr given as one writer share a pipe.
type writerOnly struct{ w io.Writer }

func (o writerOnly) Write(p []byte) (int, error) { return o.w.Write(p) }

// ReadFrom copies through a pooled buffer: exec.Cmd's copy from the pipe
// otherwise took a new 32 KiB one per stream of every exec.
func (o writerOnly) ReadFrom(r io.Reader) (int64, error) {
	buf := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(buf)
	// Wrapped so that neither side's own copy method takes over again.
	return io.CopyBuffer(struct{ io.Writer }{o.w}, struct{ io.Reader }{r}, *buf)
}

var relayBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func relayed(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return writerOnly{w}
}

// execExitCode turns what Wait returned into the process's exit code.
func execExitCode(cmd *exec.Cmd, err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	case errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil:
		// The process exited; a child it left held the output open until cut off.
		return cmd.ProcessState.ExitCode(), nil
	}
	return -1, fmt.Errorf("exec: %w", err)
}

// runConsoleExec runs an exec stage that allocates the terminal inside the
// container and hands its master back over a socket (fd 4).
func runConsoleExec(ctx context.Context, cmd *exec.Cmd, pr ExecProcess) (int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("exec console socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "console"), os.NewFile(uintptr(fds[1]), "console-peer")
	defer ours.Close()
	cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
	// The terminal is the process's stdio; the stage's own stderr (its
	// errors) is relayed too, so no descriptor of the caller's goes in.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, relayed(pr.Stderr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		theirs.Close()
		return -1, fmt.Errorf("exec: %w", err)
	}
	theirs.Close()
	master, err := recvFD(ours)
	if err != nil {
		// The stage printed why on stderr; its exit code says the rest.
		if code, werr := execExitCode(cmd, cmd.Wait()); werr == nil {
			return code, nil
		}
		return -1, fmt.Errorf("exec: receive terminal: %w", err)
	}
	defer master.Close()
	if pr.Resize != nil {
		pr.Resize(master)
	}
	if pr.Stdin != nil {
		go func() { _, _ = io.Copy(master, pr.Stdin) }()
	}
	copied := make(chan struct{})
	go func() {
		// EIO from the master means every slave end is closed: normal at exit.
		if pr.Stdout != nil {
			_, _ = io.Copy(pr.Stdout, master)
		}
		close(copied)
	}()
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
	defer stop()
	werr := cmd.Wait()
	<-copied
	return execExitCode(cmd, werr)
}

func recvFD(sock *os.File) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, 0)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("no terminal received")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("no terminal received")
	}
	unix.CloseOnExec(fds[0])
	return os.NewFile(uintptr(fds[0]), "/dev/ptmx"), nil
}

// OpenPty opens a new pseudo-terminal of this host's devpts: the master
// end stays with berth, which relays it; the slave end goes to a process.
func OpenPty() (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	name := fmt.Sprintf("/dev/pts/%d", n)
	slave, err = os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return master, slave, nil
}
