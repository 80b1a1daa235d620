package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime/launch"
)

// ErrCannotCheckpoint is returned by Checkpoint and Restore for an executor
// without CRIU support; callers fall back to a restart.
var ErrCannotCheckpoint = errdefs.New("executor cannot checkpoint", errdefs.ErrFailedPrecondition)

// ErrNoDirtyTracking is returned for a pre-dump where the kernel cannot
// track dirty memory (no soft-dirty bits): callers go straight to the dump.
var ErrNoDirtyTracking = errdefs.New("the kernel has no memory dirty tracking for pre-dumps", errdefs.ErrFailedPrecondition)

var errBuiltinCheckpoint = fmt.Errorf("%w: the built-in executor (berth) has no checkpoint support yet; run the container with --runtime runc or crun", ErrCannotCheckpoint)

// metaFile is the container's Config kept beside the CRIU images, so an
// image directory carried to another place restores without its bundle.
const metaFile = "berth-meta.json"

// RootfsDiff, in a directory of CRIU images, is the container's writable
// layer (overlay upper directory) as it was dumped: a restore from the
// images takes it as its own.
const RootfsDiff = "rootfs-diff"

// UpperDir is container id's writable layer (its overlay upper directory),
// or "" when it has none (its own rootfs, or a user namespace).
func (r *Runtime) UpperDir(id string) (string, error) {
	bd, m, err := r.load(id)
	if err != nil {
		return "", err
	}
	if m.Config.RootfsPath != "" || m.Config.UserNS {
		return "", nil
	}
	return bd.path("upper"), nil
}

// CheckpointOptions say how a container is checkpointed.
type CheckpointOptions struct {
	// ImageDir receives the CRIU images; it is made if missing.
	ImageDir string
	// LeaveRunning keeps the container running after the dump.
	LeaveRunning bool
	// PreDump dumps memory only and leaves the container running, to be
	// followed by a dump with ParentDir set: only pages dirtied since
	// are written then, so the final dump (the downtime) is short.
	PreDump bool
	// ParentDir is the image directory of the previous pre-dump.
	ParentDir string
	// Lazy makes a post-copy dump (checkpoint_lazy.go): the images
	// without the private memory, which CRIU then serves from Lazy.Addr;
	// Checkpoint returns once it does, and Lazy says when it is over.
	Lazy *LazyDump
}

// Checkpoint dumps a running container's process tree to opts.ImageDir with
// CRIU. Unless LeaveRunning or PreDump, the container is stopped by the
// dump, and Restore brings it back from the images. Long because the
// checks, CRIU's arguments for each kind of dump and the freeze around it
// read best in the order CRIU sees them.
func (r *Runtime) Checkpoint(ctx context.Context, id string, opts CheckpointOptions) error {
	bd, m, err := r.load(id)
	if err != nil {
		return err
	}
	st := r.status(bd, m)
	if st.State != Running {
		return fmt.Errorf("container %q: checkpoint: %w", id, ErrNotRunning)
	}
	if m.Config.UserNS {
		// Its restore would get another id range than the files it wrote.
		return fmt.Errorf("container %q: checkpoint: not supported for a container with userns", id)
	}
	ext, err := r.checkpointer(m.Executor)
	if err != nil {
		return fmt.Errorf("container %q: checkpoint: %w", id, err)
	}
	if opts.PreDump && !dirtyTracking() {
		return fmt.Errorf("container %q: pre-dump: %w", id, ErrNoDirtyTracking)
	}
	if opts.ImageDir == "" {
		return fmt.Errorf("container %q: checkpoint: no image directory given", id)
	}
	dir, err := filepath.Abs(opts.ImageDir)
	if err != nil {
		return fmt.Errorf("container %q: checkpoint: %w", id, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("container %q: checkpoint: %w", id, err)
	}
	if err := writeJSON(filepath.Join(dir, metaFile), m); err != nil {
		return fmt.Errorf("container %q: checkpoint: %w", id, err)
	}
	criu, err := criuPath()
	if err != nil {
		return fmt.Errorf("container %q: checkpoint: %w", id, err)
	}
	primeCRIU()
	args := append(ext.criuFlag(criu), "checkpoint", "--image-path", dir, "--work-path", dir)
	if opts.PreDump {
		args = append(args, "--pre-dump")
	} else if opts.Lazy != nil {
		args = append(args, opts.Lazy.lazyArgs()...)
	} else if opts.LeaveRunning {
		args = append(args, "--leave-running")
	}
	if opts.ParentDir != "" {
		parent, err := filepath.Abs(opts.ParentDir)
		if err != nil {
			return fmt.Errorf("container %q: checkpoint: %w", id, err)
		}
		// CRIU takes the parent relative to the image directory.
		rel, err := filepath.Rel(dir, parent)
		if err != nil {
			return fmt.Errorf("container %q: checkpoint: parent %s: %w", id, parent, err)
		}
		args = append(args, "--parent-path", rel)
	}
	// Frozen here, CRIU need not wait for the freeze (cgroups.freeze).
	// A systemd scope holds the shim too: CRIU freezes it as before.
	spec, conf := r.spec(bd), r.criuConfigPath()
	if spec != nil && spec.Annotations[criuConfigAnnotation] != "" {
		conf = spec.Annotations[criuConfigAnnotation]
	}
	thaw, frozen := func() {}, false
	if r.scopes == nil {
		if t, err := r.cg.freeze(r.CgroupPath(id)); err == nil {
			// Frozen, its processes cannot use the quota lifted for
			// CRIU's parasite; it is back before they run again.
			put := r.cg.liftCPUQuota(r.CgroupPath(id))
			thaw, frozen = func() { put(); t() }, true
		}
	}
	// Only a frozen container's /dev stays as it is seen here.
	var left criuExternals
	if frozen && !opts.PreDump && conf != r.criuConfigPath() {
		left = dumpExternals(st.Pid, dir)
	}
	if err := r.writeCriuConfig(conf, spec, left); err != nil {
		thaw()
		return fmt.Errorf("container %q: checkpoint: %w", id, err)
	}
	if opts.Lazy != nil {
		// CRIU serves the memory after this returns: thawed once it is
		// over (after a failed transfer the processes run on).
		return opts.Lazy.start(ext.command(ctx, append(args, id)...), id, ext.bin, dir, thaw)
	}
	defer thaw()
	if out, err := runUrgent(ext.command(ctx, append(args, id)...)); err != nil {
		return fmt.Errorf("container %q: %s checkpoint: %w: %s%s", id, ext.bin, err, bytes.TrimSpace(out), criuLogTail(dir, "dump.log"))
	}
	return nil
}

// Restore brings container id back from the CRIU images in imageDir, in
// the same cgroup, namespaces, mounts and stdio as before. A container of
// that id on this host must not be running; its bundle is replaced. With
// no container of that id, it is made from the Config saved with the
// images (its image layers must be on this host).
func (r *Runtime) Restore(ctx context.Context, id string, imageDir string) (Status, error) {
	return r.restore(ctx, id, imageDir, nil)
}

// RestoreAs brings container c.ID back from the CRIU images in imageDir,
// made from c rather than from the Config saved with the images: this
// host's image layers, network namespace and mount sources, as a
// migration to another node needs. The mount destinations and the
// executor must be those the images were dumped with.
func (r *Runtime) RestoreAs(ctx context.Context, c Config, imageDir string) (Status, error) {
	return r.restore(ctx, c.ID, imageDir, &c)
}

func (r *Runtime) restore(ctx context.Context, id string, imageDir string, with *Config) (Status, error) {
	dir, err := filepath.Abs(imageDir)
	if err != nil {
		return Status{}, fmt.Errorf("container %q: restore: %w", id, err)
	}
	m, err := CheckpointConfig(dir)
	if err != nil {
		return Status{}, fmt.Errorf("container %q: restore: %w", id, err)
	}
	if m.ID != id {
		return Status{}, fmt.Errorf("container %q: restore: image %s holds container %q", id, dir, m.ID)
	}
	if with != nil && with.Executor != m.Executor {
		return Status{}, fmt.Errorf("container %q: restore: image %s was dumped by executor %q, not %q", id, dir, m.Executor, with.Executor)
	}
	if _, err := r.checkpointer(m.Executor); err != nil {
		return Status{}, fmt.Errorf("container %q: restore: %w", id, err)
	}
	if bd, old, err := r.load(id); err == nil {
		if st := r.status(bd, old); st.State == Running {
			// Just dumped, its shim may not have seen the processes go:
			// a moment is given for that, no more.
			wctx, cancel := context.WithTimeout(ctx, dumpedExitWait)
			st, err = r.Wait(wctx, id)
			cancel()
			if err != nil || st.State == Running {
				return st, fmt.Errorf("container %q: restore: %w", id, ErrRunning)
			}
		}
		// The files the dumped processes had open are in the stopped
		// container's writable layer: it goes with the images (unless
		// they bring their own), to be the restored one's.
		if _, err := os.Stat(filepath.Join(dir, RootfsDiff)); errors.Is(err, os.ErrNotExist) && old.Config.RootfsPath == "" && !old.Config.UserNS {
			if err := os.Rename(bd.path("upper"), filepath.Join(dir, RootfsDiff)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return Status{}, fmt.Errorf("container %q: restore: keep its writable layer: %w", id, err)
			}
		}
		if err := r.remove(ctx, bd, false); err != nil {
			return Status{}, fmt.Errorf("container %q: restore: %w", id, err)
		}
	}
	c := m
	if with != nil {
		c = *with
	}
	st, err := r.run(ctx, c, dir)
	if err != nil {
		return st, fmt.Errorf("%w%s", err, criuLogTail(dir, "restore.log"))
	}
	return st, nil
}

// dumpedExitWait is how long a restore waits for the exit of a container
// found running, which a dump has just stopped.
const dumpedExitWait = 2 * time.Second

// CheckpointConfig is the Config of the container whose CRIU images are
// in dir (its Executor set to the one that dumped it).
func CheckpointConfig(dir string) (Config, error) {
	var m meta
	if err := readJSON(filepath.Join(dir, metaFile), &m); err != nil {
		return Config{}, fmt.Errorf("image %s: %w", dir, err)
	}
	c := m.Config
	c.Executor = m.Executor
	return c, nil
}

// criuConfig is CRIU's configuration for runc's dumps and restores (runc
// reads the file the org.criu.config annotation names): established TCP
// connections are closed, and connections not yet accepted dropped,
// rather than failing the dump. A container restored on another node has
// another address, where they could not go on anyway; their peers see a
// reset and connect again. A post-copy dump's page server listens on
// loopback only (runc's --page-server address does not reach CRIU for
// lazy pages): the agent relays it, and no other host can read the pages.
const criuConfig = "tcp-close\nskip-in-flight\nnetwork-lock skip\naddress 127.0.0.1\n"

// criuConfigAnnotation names, in a container's spec, the CRIU
// configuration file runc passes to CRIU.
const criuConfigAnnotation = "org.criu.config"

// criuConfigPath is where containers made before each had its own
// (criuConfigFile) find criuConfig, beside the containers (a dot name,
// which List skips).
func (r *Runtime) criuConfigPath() string { return filepath.Join(r.root, ".criu-runc.conf") }

// criuConfigFile, in a container's bundle, is its CRIU configuration,
// written before each dump and restore: they differ.
const criuConfigFile = "criu.conf"

// criuMaskedKey names the container's masked directories (read-only
// empty tmpfs mounts, /proc/acpi, /sys/firmware...) in its images: a dump
// leaves them out as external mounts, and a restore binds an empty
// read-only tmpfs (criuRestoreConfig) in their place. CRIU would
// otherwise archive each with tar and gzip, and unpack it, processes
// forked while the container is frozen, 10 to 30 ms each.
const criuMaskedKey = "berth-masked"

// writeCriuConfig writes CRIU's configuration for a dump of the
// container whose spec is dump to path, with the mounts ext leaves out.
// The shared file of older containers gets criuConfig alone.
func (r *Runtime) writeCriuConfig(path string, dump *specs.Spec, ext criuExternals) error {
	conf := criuConfig
	if path != r.criuConfigPath() && dump != nil && dump.Linux != nil {
		for _, p := range dump.Linux.MaskedPaths {
			// runc masks a directory with a tmpfs, a file with /dev/null.
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				conf += "external mnt[" + p + "]:" + criuMaskedKey + "\n"
			}
		}
		if ext.Dev {
			conf += "external mnt[/dev]:" + criuDevKey + "\n"
		}
		if ext.Shm {
			conf += "external mnt[/dev/shm]:" + criuShmKey + "\n"
		}
	}
	return os.WriteFile(path, []byte(conf), 0o644)
}

// criuPath finds criu on PATH or where scripts/criu.sh installs it, which a
// service manager's PATH may lack.
func criuPath() (string, error) {
	if p, err := exec.LookPath("criu"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/sbin/criu"); err == nil {
		return "/usr/local/sbin/criu", nil
	}
	return "", errors.New("criu is not installed (scripts/criu.sh builds it)")
}

// checkpointer returns the executor if it can checkpoint and restore.
func (r *Runtime) checkpointer(name string) (*external, error) {
	ext, ok := r.exec[name].(*external)
	if !ok {
		return nil, errBuiltinCheckpoint
	}
	if _, err := criuPath(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCannotCheckpoint, err)
	}
	if !ext.criuBuilt() {
		return nil, fmt.Errorf("%w: this %s was built without CRIU support; use runc", ErrCannotCheckpoint, ext.bin)
	}
	return ext, nil
}

// criuBuilt tells whether the runtime binary has CRIU support: runc always
// has it, crun only when its version lists +CRIU.
func (e *external) criuBuilt() bool {
	if e.bin != "crun" {
		return true
	}
	out, err := exec.Command(e.bin, "--version").Output()
	return err == nil && strings.Contains(string(out), "+CRIU")
}

// dirtyTracking tells whether CRIU can track dirty pages here, which
// pre-dumps need; the answer does not change while berth runs.
var dirtyTracking = sync.OnceValue(func() bool {
	criu, err := criuPath()
	return err == nil && exec.Command(criu, "check", "--feature", "mem_dirty_track").Run() == nil
})

// criuFlag tells runc which criu to run (crun links libcriu instead).
func (e *external) criuFlag(criu string) []string {
	if e.bin == "runc" {
		return []string{"--criu", criu}
	}
	return nil
}

// restorePlan has the shim run "<runtime> restore --detach": CRIU rebuilds
// the process tree, the runtime exits, and the shim (a child subreaper)
// inherits the restored process as it does a created one. The shim's own
// stdio pipes stand in for the dumped container's.
func (e *external) restorePlan(bin string, bd *bundle) (*launch.Plan, error) {
	criu, err := criuPath()
	if err != nil {
		return nil, err
	}
	primeCRIU()
	// The runtime takes the shim's environment, which has restorePath.
	args := append([]string{bin, "--root", e.state}, e.criuFlag(criu)...)
	args = append(args, "restore", "--detach", "--image-path", bd.restoreFrom, "--work-path", bd.restoreFrom,
		"--pid-file", bd.path("runtime.pid"), "--bundle", bd.dir)
	if _, err := os.Stat(filepath.Join(bd.restoreFrom, LazyPagesSocket)); err == nil {
		args = append(args, "--lazy-pages") // post-copy: see StartLazyPages
	}
	args = append(args, bd.id)
	return &launch.Plan{
		ExternalArgs: args,
		PIDFile:      bd.path("runtime.pid"),
		HideUnified:  e.hide,
	}, nil
}

// criuNice is the nice value the runtime and CRIU run at while a
// container is down for them (a dump, a restore): on a busy host each of
// the many hand-offs between the runtime, CRIU and its helpers otherwise
// waits its turn behind other work, 10 to 30 ms at a time. CRIU gives
// the restored processes back their own nice values.
const criuNice = -10

// urgent raises process pid (and the children it forks after) to
// criuNice; normal puts it back. Where the host refuses, nothing changes.
func urgent(pid int) { _ = unix.Setpriority(unix.PRIO_PROCESS, pid, criuNice) }
func normal(pid int) { _ = unix.Setpriority(unix.PRIO_PROCESS, pid, 0) }

// Urgent runs the calling goroutine, on a thread of its own, at
// criuNice until the returned func puts it back: for the part of a
// migration that runs in berth itself while the container is down (the
// images streamed out and in), as CRIU's part runs.
func Urgent() (done func()) {
	goruntime.LockOSThread()
	tid := unix.Gettid()
	// getpriority answers 20 - nice.
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		goruntime.UnlockOSThread()
		return func() {}
	}
	urgent(tid)
	return func() {
		_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 20-prio)
		goruntime.UnlockOSThread()
	}
}

// runUrgent runs cmd at criuNice and returns its combined output.
func runUrgent(cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Before it forks CRIU, a few milliseconds on.
	urgent(cmd.Process.Pid)
	err := cmd.Wait()
	return out.Bytes(), err
}

// restorePath is the PATH of a restoring shim, whose environment is
// otherwise berth's own few variables: CRIU runs helpers
// (iptables-restore to lock the network) found through it.
func restorePath() string {
	return "PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin"
}

// CRIUTook is how long CRIU itself took for the dump or restore whose
// images are in dir (name: "dump.log" or "restore.log"), as the last
// line of its log counts it; 0 when the log cannot be read. Beside the
// whole step's time it tells CRIU's share from the runtime's.
func CRIUTook(dir, name string) time.Duration {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0
	}
	for end := len(b); end > 0; {
		start := bytes.LastIndexByte(b[:end], '\n') + 1
		// Lines run "(SS.ffffff) text"; helpers' lines have no time.
		if l := b[start:end]; len(l) > 2 && l[0] == '(' {
			if stamp, _, ok := bytes.Cut(l[1:], []byte(")")); ok {
				if sec, err := strconv.ParseFloat(string(stamp), 64); err == nil {
					return time.Duration(sec * float64(time.Second))
				}
			}
		}
		end = max(start-1, 0)
	}
	return 0
}

// criuLogTail returns the last lines of CRIU's logs in dir, which say why
// a dump or restore failed when the runtime's own message does not.
func criuLogTail(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error (") {
			errs = append(errs, "\n  "+name+": "+l)
		}
	}
	return strings.Join(errs[max(0, len(errs)-3):], "")
}
