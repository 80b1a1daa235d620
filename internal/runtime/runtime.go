// Package runtime runs containers on this host. A container is described
// by a Config, turned into an OCI runtime spec (the boundary), and started
// by an executor under a per-container shim (package launch) that owns its
// stdio and exit status, so the process that called Start can die and a new
// one re-adopt every container from the state directory.
//
// Vocabulary:
//   - bundle: the container's directory: config.json (OCI spec), meta.json
//     (the Config), the launch plan, rootfs/upper/work, logs, and the files
//     the shim writes (state.json when started, exit.json when exited).
//   - shim: the small C process that starts, watches and reaps one container.
//   - executor: how the shim starts the container: the built-in init
//     ("berth") or an OCI runtime binary ("runc", "crun").
package runtime

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime/launch"
)

// Errors callers can test with errors.Is, each in one of errdefs'
// categories; they are wrapped with the container's id.
var (
	ErrNotFound      = errdefs.New("no such container", errdefs.ErrNotFound)
	ErrAlreadyExists = errdefs.New("container already exists", errdefs.ErrAlreadyExists)
	ErrNotRunning    = errdefs.New("container is not running", errdefs.ErrFailedPrecondition)
	ErrRunning       = errdefs.New("container is running", errdefs.ErrFailedPrecondition)
)

// State is where a container is in its life.
type State string

const (
	Created State = "created"
	Running State = "running"
	Exited  State = "exited"
	// Unknown means the shim is gone without recording an exit (it was killed).
	Unknown State = "unknown"
)

// Status is what is known about a container.
type Status struct {
	ID         string            `json:"id"`
	State      State             `json:"state"`
	Executor   string            `json:"executor"`
	Image      string            `json:"image,omitempty"`
	Args       []string          `json:"args"`
	Pid        int               `json:"pid,omitempty"`
	ShimPid    int               `json:"shimPid,omitempty"`
	ExitCode   int               `json:"exitCode"`
	Restarts   int               `json:"restarts,omitempty"`
	Signal     int               `json:"signal,omitempty"`
	OOMKilled  bool              `json:"oomKilled,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	StartError string            `json:"startError,omitempty"`
	CreatedAt  time.Time         `json:"createdAt"`
	StartedAt  time.Time         `json:"startedAt,omitzero"`
	FinishedAt time.Time         `json:"finishedAt,omitzero"`
	Labels     map[string]string `json:"labels,omitempty"`
	Ports      []Port            `json:"ports,omitempty"`
}

// ExecProcess is a further process to run in a running container.
type ExecProcess struct {
	Args   []string
	Env    []string
	Cwd    string
	User   string
	Tty    bool
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Resize, when set with Tty, is called with the pty master to size it.
	Resize func(pty *os.File)
	// State, when set, is the container's state as the caller has just
	// read it (State, List): Exec does not read it again.
	State *Status
}

// executor is how the shim starts a container and how it is reached afterwards.
type executor interface {
	name() string
	prepare(ctx context.Context, bd *bundle, s *specs.Spec) (*launch.Plan, error)
	// started returns the container's pid once it can be signalled, given what the shim reported.
	started(ctx context.Context, bd *bundle, reported int) (int, error)
	kill(ctx context.Context, bd *bundle, sig syscall.Signal) error
	exec(ctx context.Context, bd *bundle, s *specs.Spec, st Status, pr ExecProcess, self string) (int, error)
	cleanup(ctx context.Context, bd *bundle, s *specs.Spec) error
	oomKilled(s *specs.Spec) bool
}

// Runtime manages the containers under one state directory.
type Runtime struct {
	root string
	// bin is the berth binary the shims and exec stages run, never by
	// this path but through the view exeView names (see exe.go), made
	// when first needed: commands that start nothing pay nothing for it.
	bin, exeView string
	cg           *cgroups
	exec         map[string]executor
	// cgroupParent holds the containers' cgroups; runtimes with different
	// state directories get different parents, so equal ids never collide.
	cgroupParent string
	// scopes is the systemd cgroup driver; nil for cgroupfs.
	scopes *systemdScopes
	// specs caches parsed config.json files by bundle (see spec).
	specMu sync.Mutex
	specs  map[string]specEntry
}

// DefaultRoot is where `berth` keeps containers when no data dir is given.
const DefaultRoot = "/var/lib/berth/containers"

// New opens (creating if needed) the state directory root, such as
// /var/lib/berth/containers. Containers already there are adopted: List,
// State, Wait, Stop and the rest work on them as on new ones.
func New(root string, opts ...Option) (*Runtime, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.cgroupDriver == "" {
		o.cgroupDriver = DetectCgroupDriver()
	}
	if err := ValidateCgroupDriver(o.cgroupDriver); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fmt.Errorf("runtime state dir %s: %w", root, err)
	}
	bin, err := filepath.Abs(o.binary)
	if o.binary == "" {
		bin, err = os.Executable()
	}
	if err != nil {
		return nil, fmt.Errorf("runtime: find own binary: %w", err)
	}
	cg := detectCgroups()
	hybrid := !cg.v2 && hasCgroup2Mount()
	r := &Runtime{root: root, bin: bin, exeView: os.Getenv(ExeViewEnv), cg: cg, cgroupParent: cgroupParent(root)}
	if o.cgroupDriver == CgroupDriverSystemd {
		r.scopes = &systemdScopes{prefix: strings.TrimPrefix(r.cgroupParent, "/")}
	}
	r.exec = map[string]executor{
		ExecutorBuiltin: &builtin{cg: cg},
		"runc":          &external{bin: "runc", state: filepath.Join(root, ".runc"), cg: cg},
		"crun":          &external{bin: "crun", state: filepath.Join(root, ".crun"), cg: cg, hide: hybrid},
	}
	// Compiling the default seccomp profile takes tens of milliseconds:
	// do it now rather than in the first container's start.
	go warmSeccomp()
	// CRIU's kernel cache, if it must be made, is made before the first
	// checkpoint or restore needs it (see primeCRIU).
	go primeCRIU()
	return r, nil
}

// Option changes how New sets up a Runtime.
type Option func(*options)

type options struct {
	binary       string
	cgroupDriver string
}

// WithBinary runs the shims and exec stages from binary (a berth binary,
// or any that links package launch) instead of the running one.
func WithBinary(path string) Option { return func(o *options) { o.binary = path } }

func cgroupParent(root string) string {
	abs, err := filepath.Abs(root)
	if err == nil && abs == DefaultRoot {
		return "/berth"
	}
	sum := sha256.Sum256([]byte(abs))
	return "/berth-" + hex.EncodeToString(sum[:4])
}

// CgroupPath is the cgroup (relative to each hierarchy's root) of container id.
func (r *Runtime) CgroupPath(id string) string {
	if r.scopes != nil {
		return r.scopes.path(id)
	}
	return r.cgroupParent + "/" + id
}

// CgroupDriver names the driver in use (CgroupDriverCgroupfs or CgroupDriverSystemd).
func (r *Runtime) CgroupDriver() string {
	if r.scopes != nil {
		return CgroupDriverSystemd
	}
	return CgroupDriverCgroupfs
}

func warmSeccomp() {
	if s, err := Spec(&Config{ID: "warm", Args: []string{"true"}, RootfsPath: "/"}, "/", "/"); err == nil {
		_, _ = compileSeccomp(s.Linux.Seccomp)
	}
}

func hasCgroup2Mount() bool {
	var st syscall.Statfs_t
	return syscall.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == 0x63677270
}

// bundle is a container's directory.
type bundle struct {
	id, dir string
	// restoreFrom, when set, is a checkpoint image the executor restores
	// the container from instead of starting its process anew.
	restoreFrom string
}

func (b *bundle) path(name string) string { return filepath.Join(b.dir, name) }

func (r *Runtime) bundle(id string) (*bundle, error) {
	if !validID(id) {
		return nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	return &bundle{id: id, dir: filepath.Join(r.root, id)}, nil
}

type meta struct {
	Config    Config    `json:"config"`
	Executor  string    `json:"executor"`
	CreatedAt time.Time `json:"createdAt"`
}

// shimState is what the shim writes once the workload runs.
type shimState struct {
	ShimPid   int    `json:"shimPid"`
	Pid       int    `json:"pid"`
	ShimStart uint64 `json:"shimStart"`
	// Restarts counts the times the shim started the process again (Config.Restart).
	Restarts int `json:"restarts"`
}

type exitRecord struct {
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal"`
	FinishedAt time.Time `json:"finishedAt"`
	StartError string    `json:"startError"`
}

// writeJSON replaces a container's state or exit record by a rename, with
// no fsync (not atomicfile's rule): these records are written on every
// start and exit, and after a power cut the containers they describe are
// gone too, so a record lost with them costs nothing.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Run creates and starts a container, returning once its process has been
// exec'd (or has failed to start, with the reason).
func (r *Runtime) Run(ctx context.Context, c Config) (Status, error) {
	return r.run(ctx, c, "")
}

func (r *Runtime) run(ctx context.Context, c Config, restoreFrom string) (Status, error) {
	if err := c.Validate(); err != nil {
		return Status{}, err
	}
	if c.Executor == "" {
		c.Executor = ExecutorBuiltin
	}
	ex := r.exec[c.Executor]
	bd, _ := r.bundle(c.ID)
	bd.restoreFrom = restoreFrom
	if err := os.Mkdir(bd.dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return Status{}, fmt.Errorf("container %q: %w", c.ID, ErrAlreadyExists)
		}
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	st, err := r.start(ctx, bd, &c, ex)
	if err != nil {
		// Nothing half-made stays behind: a failed start leaves no container.
		_ = r.remove(context.WithoutCancel(ctx), bd, true)
		return st, err
	}
	return st, nil
}

// Long because its steps share one rule: nothing returns, and nothing is
// cleaned up, while the cgroups made alongside are still under way; split,
// each step would carry the same wait and unwinding.
func (r *Runtime) start(ctx context.Context, bd *bundle, c *Config, ex executor) (Status, error) {
	// What the container waits for before its process starts: the
	// caller's Before and (built-in executor) its cgroups, each made
	// while the rest gets ready. Nothing returns (and nothing is cleaned
	// up) while one is still under way.
	var waits []func() error
	alongside := func(f func() error) {
		done := make(chan error, 1)
		go func() { done <- f() }()
		waits = append(waits, sync.OnceValue(func() error { return <-done }))
	}
	ready := func() error {
		var errs []error
		for _, w := range waits {
			errs = append(errs, w())
		}
		return errors.Join(errs...)
	}
	defer func() { _ = ready() }()
	if c.Before != nil {
		alongside(c.Before)
	}
	m := meta{Config: *c, Executor: ex.name(), CreatedAt: time.Now().UTC()}
	var err error
	if err = writeJSON(bd.path("meta.json"), &m); err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	bi, builtin := ex.(*builtin)
	var nsRoot uint32
	if c.UserNS {
		if nsRoot, err = r.allocUserNS(bd); err != nil {
			return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
		}
		// An OCI runtime reaches the rootfs and the bind sources as the
		// container's root, an unprivileged host id: the bundle must let it
		// pass (not list). Its files stay the host root's, 0600.
		if err := os.Chmod(bd.dir, 0o711); err != nil {
			return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
		}
	}
	uns := -1
	if c.UserNS {
		self, err := selfExe(r.bin, r.exeView)
		if err != nil {
			return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
		}
		if uns, err = userNSFD(self, nsRoot); err != nil {
			return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
		}
		defer unix.Close(uns)
		// By now the container has made its own mounts of the sources and
		// the overlay holds its layers. Each unmount waits out an RCU grace
		// period, milliseconds the start need not wait for: they are taken
		// off in the background, and removal takes what is left, first.
		defer func() { go func() { _ = detachIdmapped(bd) }() }()
	}
	rootfs, overlay, err := r.mountRootfs(bd, c, builtin, uns, nsRoot)
	if err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	if err := writeEtcFiles(bd, c); err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	mounts, err := resolveMounts(bd, c, rootfs, overlay != "")
	if err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	resolved := *c
	resolved.Mounts = mounts
	s, err := Spec(&resolved, rootfs, bd.dir)
	if err != nil {
		return Status{}, err
	}
	s.Linux.CgroupsPath = r.CgroupPath(c.ID)
	if ext, ok := ex.(*external); ok && ext.bin == "runc" {
		// Read by runc at checkpoint and restore, not before.
		s.Annotations[criuConfigAnnotation] = bd.path(criuConfigFile)
		if bd.restoreFrom != "" {
			conf, undo, err := criuRestoreConfig(bd, s)
			// Once the restore has ended the container holds its own binds.
			defer undo()
			if err == nil {
				err = os.WriteFile(bd.path(criuConfigFile), []byte(conf), 0o644)
			}
			if err != nil {
				return Status{}, fmt.Errorf("container %q: restore: %w", c.ID, err)
			}
		}
	}
	if c.UserNS {
		withUserNS(s, nsRoot, !builtin)
	}
	if err := idmapBinds(bd, s, uns); err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	if c.UserNS && !builtin {
		// The built-in init resolves them before it takes the mapped ids; an OCI runtime after.
		if err := reachableMounts(s); err != nil {
			return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
		}
	}
	// The built-in executor's cgroups (a millisecond or more of mkdirs
	// and writes on a v1 host) are made while the shim starts; it waits
	// for them only when it is about to start the container.
	if builtin && r.scopes == nil {
		alongside(func() error { return bi.cg.create(s.Linux.CgroupsPath, s.Linux.Resources) })
	}
	// A restore runs CRIU in the container's cgroup: the CPU quota is
	// set once it is over (cgroup_quota.go).
	quota := restoreWithoutQuota(bd, s, builtin || r.scopes != nil)
	if err := writeJSON(bd.path("config.json"), s); err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	p, err := ex.prepare(ctx, bd, s)
	if err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	p.RootfsOverlay = overlay
	p.Log = launch.Log{Path: bd.path("container.log"), MaxSize: uint64(c.LogMaxSize), MaxFiles: uint32(c.LogMaxFiles)}
	if p.Log.MaxSize == 0 {
		p.Log.MaxSize = DefaultLogMaxSize
	}
	if p.Log.MaxFiles == 0 {
		p.Log.MaxFiles = DefaultLogMaxFiles
	}
	p.ExitPath, p.StatePath, p.CtlPath = bd.path("exit.json"), bd.path("state.json"), bd.path("ctl")
	raw, err := p.MarshalBinary()
	if err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	if err := os.WriteFile(bd.path("plan"), raw, 0o600); err != nil {
		return Status{}, fmt.Errorf("container %q: %w", c.ID, err)
	}
	if err := unix.Mkfifo(p.CtlPath, 0o600); err != nil {
		return Status{}, fmt.Errorf("container %q: control fifo: %w", c.ID, err)
	}
	// Every shim waits at its gate until it sits in its container's cgroup
	// (the systemd driver's scope) and all is ready: an OCI runtime forked
	// any sooner would run, and make the container's cgroup, outside it.
	gate := ready
	if _, ok := userNSOf(s); ok && !builtin {
		// An OCI runtime's container in a user namespace gets its network
		// sysctls from here, once its namespace is wired.
		gate = func() error {
			if err := ready(); err != nil {
				return err
			}
			return hostNetSysctls(s)
		}
	}
	pid, err := r.launchShim(bd, gate, c)
	if err == nil {
		pid, err = ex.started(ctx, bd, pid)
	}
	if err == nil && quota != nil {
		err = r.cg.setCPUQuota(s.Linux.CgroupsPath, *quota.Quota, *quota.Period)
		s.Linux.Resources.CPU = quota
		if err == nil {
			err = writeJSON(bd.path("config.json"), s)
		}
	}
	if err != nil {
		return Status{}, fmt.Errorf("container %q: start: %w", c.ID, err)
	}
	return Status{ID: c.ID, State: Running, Executor: ex.name(), Image: c.Image, Args: c.Args, Pid: pid,
		CreatedAt: m.CreatedAt, StartedAt: time.Now().UTC(), Labels: c.Labels, Ports: c.Ports}, nil
}

// launchShim starts the shim in its own session and waits for its report.
// With gate set, the shim waits before it starts the container until gate
// (what the container needs: its cgroups, its network) has returned, and
// gate's error is the start's. The shim hands c's Stdin or Terminal to
// the container.
//
// Long because the pipes it makes (the report, the gate, the container's
// stdio) are each closed on every path, which one function keeps in view.
func (r *Runtime) launchShim(bd *bundle, gate func() error, c *Config) (int, error) {
	self, err := selfExe(r.bin, r.exeView)
	if err != nil {
		return 0, err
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	cmd := exec.Command(self)
	cmd.Env = []string{launch.StageEnv + "=" + launch.StageShim, launch.PlanEnv + "=" + bd.path("plan")}
	if bd.restoreFrom != "" {
		cmd.Env = append(cmd.Env, restorePath())
	}
	cmd.Dir = bd.dir
	cmd.ExtraFiles = []*os.File{wr}
	var gateW *os.File
	if gate != nil {
		gr, gw, err := os.Pipe()
		if err != nil {
			wr.Close()
			return 0, err
		}
		defer gr.Close()
		gateW = gw
		defer func() { _ = gateW.Close() }()
		cmd.ExtraFiles = append(cmd.ExtraFiles, gr) // fd 4
		cmd.Env = append(cmd.Env, launch.GateEnv+"=1")
	}
	shimOptions(cmd, c)
	if len(c.OnExit) > 0 {
		var b strings.Builder
		for _, a := range c.OnExit {
			b.WriteString(a)
			b.WriteByte(0)
		}
		if err := os.WriteFile(bd.path("onexit"), []byte(b.String()), 0o600); err != nil {
			wr.Close()
			return 0, fmt.Errorf("on-exit arguments: %w", err)
		}
		cmd.Env = append(cmd.Env, launch.OnExitEnv+"="+bd.path("onexit"))
		// In the container's scope the command would count against its limits.
		if procs := ownCgroupProcs(); r.scopes != nil && procs != "" {
			cmd.Env = append(cmd.Env, launch.OnExitCgroupEnv+"="+procs)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		wr.Close()
		return 0, err
	}
	wr.Close()
	if bd.restoreFrom != "" {
		// The container is down until the runtime the shim runs has
		// restored it (criuNice); the shim lives on as before.
		urgent(cmd.Process.Pid)
		defer normal(cmd.Process.Pid)
	}
	// Reap the shim when it ends; an adopted shim is watched through a pidfd instead.
	go func() { _ = cmd.Wait() }()
	if err := r.placeShim(bd, cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return 0, err
	}
	if gate != nil {
		if err := gate(); err != nil {
			// Closing the gate unsent makes the shim give up; its report is moot.
			_ = gateW.Close()
			_, _ = bufio.NewReader(rd).ReadString('\n')
			return 0, err
		}
		if _, err := gateW.Write([]byte{1}); err != nil {
			return 0, fmt.Errorf("tell the shim its cgroups are ready: %w", err)
		}
	}
	line, err := bufio.NewReader(rd).ReadString('\n')
	if err != nil && line == "" {
		return 0, fmt.Errorf("shim exited without a report")
	}
	line = strings.TrimSpace(line)
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return 0, errors.New(msg)
	}
	pidStr, ok := strings.CutPrefix(line, "ok ")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil {
		return 0, fmt.Errorf("shim report %q", line)
	}
	return pid, nil
}

// shimOptions tells the shim c's restart policy, and passes it c's stdin
// or terminal and the descriptors it keeps, after those cmd has already.
func shimOptions(cmd *exec.Cmd, c *Config) {
	if c.Restart.restarts() {
		policy := "always"
		if c.Restart.Name == RestartOnFailure {
			policy = "on-failure"
		}
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%s %d", launch.RestartEnv, policy, c.Restart.MaxRetries))
	}
	// ExtraFiles[i] is the shim's descriptor 3+i.
	switch {
	case c.Terminal != nil:
		cmd.ExtraFiles = append(cmd.ExtraFiles, c.Terminal)
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=tty %d", launch.StdioEnv, 2+len(cmd.ExtraFiles)))
	case c.Stdin != nil:
		cmd.ExtraFiles = append(cmd.ExtraFiles, c.Stdin)
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=stdin %d", launch.StdioEnv, 2+len(cmd.ExtraFiles)))
	}
	if len(c.KeepOpen) > 0 {
		// The last descriptors; the shim keeps them and closes them in the container.
		first := 3 + len(cmd.ExtraFiles)
		cmd.ExtraFiles = append(cmd.ExtraFiles, c.KeepOpen...)
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d %d", launch.KeepEnv, first, 2+len(cmd.ExtraFiles)))
	}
}

// mountRootfs prepares the container's root filesystem. With inside set
// (the built-in executor) it only returns the overlay options, and the
// container's init mounts the overlay in its own mount namespace: the
// host's mount table then does not grow with every container, and neither
// does the copy each new container's namespace starts from.
//
// With a user namespace (nsRoot, the host id its root maps to) the rootfs
// is mounted here for every executor, from idmapped layers (see userns.go):
// only a process outside the container's namespace may idmap mounts.
func (r *Runtime) mountRootfs(bd *bundle, c *Config, inside bool, uns int, nsRoot uint32) (target, opts string, err error) {
	if c.RootfsPath != "" && !c.UserNS {
		return c.RootfsPath, "", nil
	}
	target, upper, work := bd.path("rootfs"), bd.path("upper"), bd.path("work")
	dirs := []string{target, upper, work}
	if bd.restoreFrom != "" && !c.UserNS {
		// A restore gets back the writable layer it was dumped with.
		switch err := os.Rename(filepath.Join(bd.restoreFrom, RootfsDiff), upper); {
		case err == nil:
			dirs = []string{target, work}
		case !errors.Is(err, os.ErrNotExist):
			return "", "", fmt.Errorf("rootfs: writable layer of the checkpoint: %w", err)
		}
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", "", fmt.Errorf("rootfs: %w", err)
		}
	}
	if c.UserNS {
		return target, "", mountIDMappedRootfs(bd, c, target, uns, nsRoot)
	}
	opts = "lowerdir=" + strings.Join(c.LowerDirs, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(opts) >= os.Getpagesize() {
		return "", "", fmt.Errorf("rootfs: %d layers make overlay options longer than a page", len(c.LowerDirs))
	}
	if inside {
		return target, opts, nil
	}
	if err := unix.Mount("overlay", target, "overlay", unix.MS_NODEV, opts); err != nil {
		return "", "", fmt.Errorf("rootfs: mount overlay: %w", err)
	}
	return target, "", nil
}

func writeEtcFiles(bd *bundle, c *Config) error {
	host := c.hostname()
	files := map[string]string{
		"hostname": host + "\n",
		"hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
			"127.0.1.1\t" + host + "\n" + extraHosts(c.ExtraHosts),
		"resolv.conf": resolvConf(),
	}
	for name, content := range files {
		if err := os.WriteFile(bd.path(name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func extraHosts(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(strings.Join(strings.Fields(l), "\t") + "\n")
	}
	return b.String()
}

// resolvConf copies the host's resolver settings less loopback servers,
// which are unreachable from the container's network namespace.
func resolvConf() string {
	b, _ := os.ReadFile("/etc/resolv.conf")
	var out strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" && (strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			continue
		}
		if strings.TrimSpace(line) != "" {
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

func (r *Runtime) load(id string) (*bundle, *meta, error) {
	bd, err := r.bundle(id)
	if err != nil {
		return nil, nil, err
	}
	var m meta
	if err := readJSON(bd.path("meta.json"), &m); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
		}
		return nil, nil, fmt.Errorf("container %q: %w", id, err)
	}
	return bd, &m, nil
}

// spec is the container's OCI spec, as its config.json holds it, shared
// and read-only. Exec, stats and status read it on every call, and
// parsing it (Docker's seccomp profile is most of it) cost more than the
// rest of an exec's preparation: it is parsed once per file. The file is
// written once, when the container is made; the cache knows a file by
// its inode, size and time, so a container made again under the same id
// is read afresh.
func (r *Runtime) spec(bd *bundle) *specs.Spec {
	path := bd.path("config.json")
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return nil
	}
	id := fileID{ino: st.Ino, size: st.Size, mtime: st.Mtim}
	r.specMu.Lock()
	e, ok := r.specs[bd.dir]
	r.specMu.Unlock()
	if ok && e.id == id {
		return e.spec
	}
	var s specs.Spec
	if readJSON(path, &s) != nil {
		return nil
	}
	r.specMu.Lock()
	if r.specs == nil {
		r.specs = map[string]specEntry{}
	}
	r.specs[bd.dir] = specEntry{id: id, spec: &s}
	r.specMu.Unlock()
	return &s
}

// fileID tells one version of a file from another.
type fileID struct {
	ino   uint64
	size  int64
	mtime unix.Timespec
}

type specEntry struct {
	id   fileID
	spec *specs.Spec
}

// forgetSpec drops a removed container's cached spec.
func (r *Runtime) forgetSpec(bd *bundle) {
	r.specMu.Lock()
	delete(r.specs, bd.dir)
	r.specMu.Unlock()
}

// State reports a container's status, reading what its shim recorded.
func (r *Runtime) State(ctx context.Context, id string) (Status, error) {
	bd, m, err := r.load(id)
	if err != nil {
		return Status{}, err
	}
	return r.status(bd, m), nil
}

func (r *Runtime) status(bd *bundle, m *meta) Status {
	st := Status{ID: bd.id, State: Created, Executor: m.Executor, Image: m.Config.Image, Args: m.Config.Args,
		CreatedAt: m.CreatedAt, Labels: m.Config.Labels, Ports: m.Config.Ports}
	var ss shimState
	hasState := readJSON(bd.path("state.json"), &ss) == nil
	if hasState {
		st.Pid, st.ShimPid, st.Restarts = ss.Pid, ss.ShimPid, ss.Restarts
		if fi, err := os.Stat(bd.path("state.json")); err == nil {
			st.StartedAt = fi.ModTime().UTC()
		}
	}
	// Whether the shim lives is asked before exit.json is read: the shim
	// writes the file and then exits, so a shim found gone has left it,
	// while the other order could miss both (a shim that wrote and exited
	// between the two looks lost).
	alive := hasState && shimAlive(ss)
	var ex exitRecord
	if readJSON(bd.path("exit.json"), &ex) == nil {
		st.State = Exited
		st.ExitCode, st.Signal, st.FinishedAt, st.StartError = ex.ExitCode, ex.Signal, ex.FinishedAt, ex.StartError
		switch {
		case ex.StartError != "":
			st.Reason = "StartError"
		case (ex.Signal == int(syscall.SIGKILL) || ex.ExitCode == 137) && r.exec[m.Executor].oomKilled(r.spec(bd)):
			st.OOMKilled, st.Reason = true, "OOMKilled"
		case ex.ExitCode == 0:
			st.Reason = "Completed"
		default:
			st.Reason = "Error"
		}
		return st
	}
	if hasState {
		if alive {
			st.State = Running
		} else {
			st.State, st.Reason = Unknown, "ShimLost"
		}
	}
	return st
}

// shimAlive checks the shim's pid and start time, so a reused pid is not mistaken for it.
func shimAlive(ss shimState) bool {
	if ss.ShimPid <= 0 {
		return false
	}
	start, err := procStartTime(ss.ShimPid)
	return err == nil && start == ss.ShimStart
}

func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// After ")" come fields 3.. ; starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	if f[0] == "Z" {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// List returns every container in the state directory, sorted by id.
func (r *Runtime) List(ctx context.Context) ([]Status, error) {
	ids, err := r.IDs()
	if err != nil {
		return nil, err
	}
	var out []Status
	for _, id := range ids {
		st, err := r.State(ctx, id)
		if err != nil {
			continue // a directory being created or removed right now
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// IDs names the containers whose state directories exist, without
// reading their state: one directory read.
func (r *Runtime) IDs() ([]string, error) {
	ents, err := os.ReadDir(r.root)
	if err != nil {
		return nil, fmt.Errorf("runtime state dir %s: %w", r.root, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Wait blocks until the container has exited (or its shim is lost) and returns its final status.
func (r *Runtime) Wait(ctx context.Context, id string) (Status, error) {
	bd, m, err := r.load(id)
	if err != nil {
		return Status{}, err
	}
	for {
		st := r.status(bd, m)
		if st.State == Exited && len(m.Config.OnExit) > 0 {
			// Its shim runs the OnExit command after the exit and then
			// lets go of KeepOpen: the exit is over once the shim is.
			var ss shimState
			if readJSON(bd.path("state.json"), &ss) == nil && shimAlive(ss) {
				if err := waitPid(ctx, ss.ShimPid); err != nil {
					return st, fmt.Errorf("container %q: wait: %w", id, err)
				}
			}
		}
		if st.State == Exited || st.State == Unknown {
			return st, nil
		}
		if st.State == Created {
			// Neither file may also mean the container was removed (its
			// shim exited and the directory went before this look): a
			// waiter for a container that is gone ends rather than polling
			// its empty directory forever.
			if _, err := os.Stat(bd.path("meta.json")); errors.Is(err, os.ErrNotExist) {
				return st, fmt.Errorf("container %q: %w", id, ErrNotFound)
			}
			// Not started (or the state file is being written): check again shortly.
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return st, err
			}
			continue
		}
		if err := waitPid(ctx, st.ShimPid); err != nil {
			return st, fmt.Errorf("container %q: wait: %w", id, err)
		}
	}
}

// waitPid blocks until pid exits, using a pidfd so it works for processes
// that are not our children (adopted shims). The pidfd waits in Go's
// network poller: a node's hundreds of containers then hold no thread
// each and wake nothing until one exits.
func waitPid(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return err
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(fd uintptr) bool {
		// Readable once the process has exited; ask without waiting.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err != nil || n > 0
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// signal asks the shim to deliver sig to the container's main process.
func (bd *bundle) signal(sig syscall.Signal) error {
	f, err := os.OpenFile(bd.path("ctl"), os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("container %q: %w", bd.id, ErrNotRunning)
		}
		return fmt.Errorf("container %q: signal: %w", bd.id, err)
	}
	defer f.Close()
	// "stop" first: a container berth signals is not restarted (see Config.Restart).
	if _, err := fmt.Fprintf(f, "stop\nkill %d\n", int(sig)); err != nil {
		return fmt.Errorf("container %q: signal: %w", bd.id, err)
	}
	return nil
}

// Kill sends sig to the container's main process.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	bd, m, err := r.load(id)
	if err != nil {
		return err
	}
	if st := r.status(bd, m); st.State != Running {
		return fmt.Errorf("container %q: %w", id, ErrNotRunning)
	}
	if err := r.exec[m.Executor].kill(ctx, bd, sig); err != nil {
		// It may have exited between the look and the signal (an external
		// runtime then refuses, before the shim has reaped it and said
		// so): that is not running, not a failure.
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if st := r.status(bd, m); st.State != Running {
				return fmt.Errorf("container %q: %w", id, ErrNotRunning)
			}
		}
		return err
	}
	return nil
}

// Stop sends the container's stop signal (SIGTERM unless its config
// names another), waits up to grace for the container to exit, then
// sends SIGKILL. It returns the final status.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) (Status, error) {
	st, err := r.State(ctx, id)
	if err != nil || st.State != Running {
		return st, err
	}
	sig := syscall.SIGTERM
	if _, m, err := r.load(id); err == nil && m.Config.StopSignal != 0 {
		sig = m.Config.StopSignal
	}
	if !catches(st.Pid, sig) {
		// The kernel drops signals that PID 1 of a namespace does not
		// handle: the signal would change nothing, so waiting for it is waste.
		grace = 0
	}
	if err := r.Kill(ctx, id, sig); err != nil && !errors.Is(err, ErrNotRunning) {
		return st, err
	}
	wctx, cancel := context.WithTimeout(ctx, grace)
	st, err = r.Wait(wctx, id)
	cancel()
	if err == nil {
		return st, nil
	}
	if ctx.Err() != nil {
		return st, ctx.Err()
	}
	if err := r.Kill(ctx, id, syscall.SIGKILL); err != nil && !errors.Is(err, ErrNotRunning) {
		return st, err
	}
	return r.Wait(ctx, id)
}

// catches reports whether process pid has a handler for sig (SigCgt in
// /proc/PID/status). When unsure it says yes, so the grace period applies.
func catches(pid int, sig syscall.Signal) bool {
	if pid <= 0 {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return true
}

// Exec runs a further process in a running container and returns its exit code.
func (r *Runtime) Exec(ctx context.Context, id string, pr ExecProcess) (int, error) {
	var bd *bundle
	var st Status
	if pr.State != nil && pr.State.ID == id {
		b, err := r.bundle(id)
		if err != nil {
			return -1, err
		}
		bd, st = b, *pr.State
	} else {
		b, m, err := r.load(id)
		if err != nil {
			return -1, err
		}
		bd, st = b, r.status(b, m)
	}
	if st.State != Running {
		return -1, fmt.Errorf("container %q: %w", id, ErrNotRunning)
	}
	if len(pr.Args) == 0 {
		return -1, fmt.Errorf("container %q: exec: no command given", id)
	}
	s := r.spec(bd)
	if s == nil {
		return -1, fmt.Errorf("container %q: exec: config.json unreadable", id)
	}
	self, err := selfExe(r.bin, r.exeView)
	if err != nil {
		return -1, fmt.Errorf("container %q: exec: %w", id, err)
	}
	ex, ok := r.exec[st.Executor]
	if !ok {
		return -1, fmt.Errorf("container %q: exec: unknown executor %q", id, st.Executor)
	}
	return ex.exec(ctx, bd, s, st, pr, self)
}

// Delete removes a container: its rootfs mount, cgroups, logs and state.
// A running container is refused unless force, which kills it first.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	bd, _, err := r.load(id)
	if err != nil {
		return err
	}
	return r.remove(ctx, bd, force)
}

func (r *Runtime) remove(ctx context.Context, bd *bundle, force bool) error {
	var m meta
	_ = readJSON(bd.path("meta.json"), &m)
	st := r.status(bd, &m)
	if st.State == Running {
		if !force {
			return fmt.Errorf("container %q: %w: stop it first or force the removal", bd.id, ErrRunning)
		}
		if _, err := r.Stop(ctx, bd.id, 0); err != nil {
			return fmt.Errorf("container %q: remove: %w", bd.id, err)
		}
	}
	var errs []error
	if ex, ok := r.exec[m.Executor]; ok {
		if err := ex.cleanup(ctx, bd, r.spec(bd)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := detachIdmapped(bd); err != nil {
		errs = append(errs, err)
	}
	if err := detach(bd.path(resolveView)); err != nil {
		errs = append(errs, err)
	}
	if err := unmountAll(bd.path("rootfs")); err != nil {
		errs = append(errs, err)
	} else if err := r.releaseUserNS(bd); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		// Keep the directory so a retry can finish the job.
		return fmt.Errorf("container %q: remove: %w", bd.id, errors.Join(errs...))
	}
	if err := os.RemoveAll(bd.dir); err != nil {
		return fmt.Errorf("container %q: remove: %w", bd.id, err)
	}
	r.forgetSpec(bd)
	return nil
}

func unmountAll(target string) error {
	for range 8 {
		err := unix.Unmount(target, 0)
		switch {
		case err == nil:
			continue // overlays can be stacked by a retried start; take them all
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not a mount point (any more)
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", target, err)
			}
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return nil
}

// Root is the state directory the runtime keeps its containers in.
func (r *Runtime) Root() string { return r.root }
