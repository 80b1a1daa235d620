package runtime

import (
	"fmt"
	"os"
	"time"

	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Config describes a container: what to run and with which limits. Spec
// turns it into an OCI runtime spec, the boundary every executor speaks.
type Config struct {
	// ID names the container; a DNS-label-like string, unique on the host.
	ID string `json:"id"`
	// Image is informational: the reference the rootfs came from.
	Image string `json:"image,omitempty"`
	// LowerDirs are read-only layer directories, top first, stacked with
	// overlayfs under a per-container upper dir. RootfsPath, when set
	// instead, is used directly (it must not be shared with other containers).
	LowerDirs  []string `json:"lowerDirs,omitempty"`
	RootfsPath string   `json:"rootfsPath,omitempty"`

	Args     []string `json:"args"`
	Env      []string `json:"env,omitempty"`
	Cwd      string   `json:"cwd,omitempty"`
	User     string   `json:"user,omitempty"` // uid[:gid], numeric
	Hostname string   `json:"hostname,omitempty"`

	ReadonlyRootfs bool     `json:"readonlyRootfs,omitempty"`
	CapAdd         []string `json:"capAdd,omitempty"`
	CapDrop        []string `json:"capDrop,omitempty"`
	// NoSeccomp disables the default seccomp profile.
	NoSeccomp bool `json:"noSeccomp,omitempty"`
	// UserNS runs the container in a user namespace of its own: its root
	// is an unprivileged host id, from a range no other container holds
	// (see userns.go).
	UserNS bool `json:"userns,omitempty"`
	// Rlimits are the process's resource limits besides the default
	// RLIMIT_NOFILE, which one of them may replace.
	Rlimits []specs.POSIXRlimit `json:"rlimits,omitempty"`
	// Sysctls are written in the container's own namespaces before its
	// process runs; the caller keeps host-wide keys out.
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// ExtraHosts are lines added to the container's /etc/hosts ("IP NAME...").
	ExtraHosts []string `json:"extraHosts,omitempty"`
	// Init keeps berth's init as PID 1, the workload its child: orphans
	// are reaped and signals passed on. The built-in executor only.
	Init bool `json:"init,omitempty"`
	// StopSignal is what Stop sends first; SIGTERM when zero.
	StopSignal syscall.Signal `json:"stopSignal,omitempty"`

	Resources Resources `json:"resources"`

	// NetNS is the path of a network namespace to join; empty means a
	// fresh namespace with only loopback.
	NetNS string `json:"netns,omitempty"`
	// Ports are the host ports published to the container. The runtime
	// only records them (Status shows them); the caller's network
	// publishes them, and KeepOpen holds them.
	Ports []Port `json:"ports,omitempty"`
	// KeepOpen are descriptors the container's shim keeps open for as long as
	// it lives and never hands to the container: the sockets that reserve
	// its published host ports. The caller may close its own copies once
	// Run returns.
	KeepOpen []*os.File `json:"-"`
	// OnExit, when set, are the arguments (the first is the process's
	// name) this binary is run with once the container has ended for
	// good (its process exited, was killed or failed to restart): the
	// watcher of the container's exit, its shim, runs it, out of the
	// container's cgroups, and waits for it (up to 30 s) before it closes
	// KeepOpen and ends; Wait returns once it has. Kept, so a restored
	// container has it too.
	OnExit []string `json:"onExit,omitempty"`
	// Mounts are extra mounts (volumes), added after the defaults.
	Mounts []specs.Mount `json:"mounts,omitempty"`

	// Executor picks the OCI executor: "berth" (built in, the default), "runc" or "crun".
	Executor string `json:"executor,omitempty"`

	// LogMaxSize bounds each log file; LogMaxFiles counts the rotated files kept.
	LogMaxSize  int64 `json:"logMaxSize,omitempty"`
	LogMaxFiles int   `json:"logMaxFiles,omitempty"`

	Labels map[string]string `json:"labels,omitempty"`

	// StopGrace is how long the host's service manager waits after
	// SIGTERM before SIGKILL when it stops the container itself (the
	// systemd driver's scope at shutdown); DefaultStopGrace when zero.
	StopGrace time.Duration `json:"stopGrace,omitempty"`

	// Restart is when the container's process is started again after it
	// exits. The container's shim does it (it outlives the command that
	// started the container), in the same bundle, cgroups and network;
	// Stop and Kill end it for good.
	Restart RestartPolicy `json:"restart,omitzero"`

	// Stdin, when set, is the container's standard input: the read end
	// of a pipe whose write end the caller keeps and writes. Terminal,
	// when set instead, is the slave end of a pseudo-terminal (OpenPty)
	// whose master the caller keeps and relays: it becomes the
	// container's controlling terminal and all of its stdio, so its
	// output goes to the caller and not to the log. Neither is ever one
	// of the caller's own descriptors, and neither is kept: a restored or
	// re-adopted container has neither. The built-in executor takes both;
	// runc and crun take Stdin only.
	Stdin    *os.File `json:"-"`
	Terminal *os.File `json:"-"`

	// Before, when set, runs alongside the start, while the cgroups are
	// made and the shim starts; the container's process starts only once
	// it has returned nil, and its error is the start's. A network
	// namespace is wired that way, in time that would otherwise be waited.
	Before func() error `json:"-"`
}

// Port is a host port published to a container, as docker run -p says it.
type Port struct {
	// HostIP is the host address it is published on; empty for every one.
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
	// Protocol is tcp or udp.
	Protocol string `json:"protocol"`
}

// String is docker's form: 0.0.0.0:8080->80/tcp.
func (p Port) String() string {
	ip := p.HostIP
	if ip == "" {
		ip = "0.0.0.0"
	}
	return fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Protocol)
}

// Restart policies, docker run's names.
const (
	RestartNo            = "no"
	RestartOnFailure     = "on-failure"
	RestartAlways        = "always"
	RestartUnlessStopped = "unless-stopped"
)

// RestartPolicy says when a container's process is started again.
// Always and unless-stopped restart whatever the exit, on-failure on a
// non-zero one; none does once berth has stopped or killed the container.
// The two differ in docker only when its daemon starts again; berth has
// no daemon to bring containers back after the host restarts, so here
// they are the same.
type RestartPolicy struct {
	Name string `json:"name,omitempty"` // "" is RestartNo
	// MaxRetries bounds on-failure's restarts; 0 is no bound.
	MaxRetries int `json:"maxRetries,omitempty"`
}

// restarts says whether p restarts at all.
func (p RestartPolicy) restarts() bool { return p.Name != "" && p.Name != RestartNo }

// Resources are the container's cgroup limits. Zero means unlimited.
type Resources struct {
	// CPUs is a CFS quota in cores (0.5 = half a core).
	CPUs float64 `json:"cpus,omitempty"`
	// CPUShares is the relative CFS weight (Docker's --cpu-shares, 2..262144).
	CPUShares uint64 `json:"cpuShares,omitempty"`
	// CPUSet pins the container to these CPUs ("0-1,3"). A container with
	// an exclusive cpuset gets no quota: quota on pinned CPUs only throttles.
	CPUSet      string `json:"cpuset,omitempty"`
	MemoryBytes int64  `json:"memoryBytes,omitempty"`
	Pids        int64  `json:"pids,omitempty"`
}

// Defaults for the log files.
const (
	DefaultLogMaxSize  = 10 << 20
	DefaultLogMaxFiles = 3
)

var defaultMaskedPaths = []string{
	"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
	"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

var defaultReadonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// hostDevices are bound from the host into the container's /dev.
var hostDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Validate reports the first problem with c, naming the field.
func (c *Config) Validate() error {
	if !validID(c.ID) {
		return fmt.Errorf("id %q: must be 1-64 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit", c.ID)
	}
	if len(c.Args) == 0 {
		return fmt.Errorf("container %q: args: no command to run (the image has no entrypoint or cmd either)", c.ID)
	}
	if len(c.LowerDirs) == 0 && c.RootfsPath == "" {
		return fmt.Errorf("container %q: no rootfs: give lowerDirs or rootfsPath", c.ID)
	}
	if c.Resources.CPUs < 0 || c.Resources.MemoryBytes < 0 || c.Resources.Pids < 0 {
		return fmt.Errorf("container %q: resources: limits must not be negative", c.ID)
	}
	if c.LogMaxSize < 0 || c.LogMaxFiles < 0 {
		return fmt.Errorf("container %q: log limits must not be negative", c.ID)
	}
	if c.Resources.CPUShares != 0 && (c.Resources.CPUShares < 2 || c.Resources.CPUShares > 262144) {
		return fmt.Errorf("container %q: resources.cpuShares: %d is outside 2..262144", c.ID, c.Resources.CPUShares)
	}
	if c.Resources.MemoryBytes != 0 && c.Resources.MemoryBytes < 4<<20 {
		return fmt.Errorf("container %q: resources.memory: %d bytes is below the 4 MiB minimum", c.ID, c.Resources.MemoryBytes)
	}
	if _, _, err := parseUser(c.User); err != nil {
		return fmt.Errorf("container %q: user: %w", c.ID, err)
	}
	for _, a := range c.OnExit {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("container %q: onExit: argument %q holds a NUL byte", c.ID, a)
		}
	}
	switch c.Executor {
	case "", ExecutorBuiltin, "runc", "crun":
	default:
		return fmt.Errorf("container %q: executor %q: want berth, runc or crun", c.ID, c.Executor)
	}
	switch c.Restart.Name {
	case "", RestartNo, RestartAlways, RestartUnlessStopped:
		if c.Restart.MaxRetries != 0 {
			return fmt.Errorf("container %q: restart: a retry count goes with on-failure only", c.ID)
		}
	case RestartOnFailure:
		if c.Restart.MaxRetries < 0 {
			return fmt.Errorf("container %q: restart: retry count %d: want 0 (no bound) or more", c.ID, c.Restart.MaxRetries)
		}
	default:
		return fmt.Errorf("container %q: restart %q: want no, on-failure[:N], always or unless-stopped", c.ID, c.Restart.Name)
	}
	if c.Restart.restarts() && (c.Executor != "" && c.Executor != ExecutorBuiltin) {
		return fmt.Errorf("container %q: restart: the %s executor cannot restart a container; use the built-in executor (berth)", c.ID, c.Executor)
	}
	if c.Restart.restarts() && (c.Stdin != nil || c.Terminal != nil) {
		return fmt.Errorf("container %q: restart: a container with stdin or a terminal is not restarted (they end with its first run)", c.ID)
	}
	if c.Stdin != nil && c.Terminal != nil {
		return fmt.Errorf("container %q: stdin and terminal: give one (the terminal is the stdin too)", c.ID)
	}
	if c.Terminal != nil && c.Executor != "" && c.Executor != ExecutorBuiltin {
		return fmt.Errorf("container %q: terminal: executor %s cannot take one; use the built-in executor (berth)", c.ID, c.Executor)
	}
	if c.Init && c.Executor != "" && c.Executor != ExecutorBuiltin {
		return fmt.Errorf("container %q: init: the %s executor has no init of berth's; use the built-in one", c.ID, c.Executor)
	}
	for _, r := range c.Rlimits {
		if _, ok := rlimitNames[r.Type]; !ok {
			return fmt.Errorf("container %q: rlimits: unknown limit %q", c.ID, r.Type)
		}
		if r.Soft > r.Hard {
			return fmt.Errorf("container %q: rlimits: %s soft limit %d is above the hard limit %d", c.ID, r.Type, r.Soft, r.Hard)
		}
	}
	for _, h := range c.ExtraHosts {
		if strings.ContainsAny(h, "\n\x00") || len(strings.Fields(h)) < 2 {
			return fmt.Errorf("container %q: extraHosts: %q is not an /etc/hosts line", c.ID, h)
		}
	}
	return nil
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (i > 0 && (r == '-' || r == '_' || r == '.'))
		if !ok {
			return false
		}
	}
	return true
}

func parseUser(u string) (uid, gid uint32, err error) {
	if u == "" {
		return 0, 0, nil
	}
	us, gs, hasGID := strings.Cut(u, ":")
	id, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("%q: want a numeric uid[:gid]", u)
	}
	g := id
	if hasGID {
		if g, err = strconv.ParseUint(gs, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("%q: want a numeric uid[:gid]", u)
		}
	}
	return uint32(id), uint32(g), nil
}

// Spec builds the OCI runtime spec for c with Docker's defaults: its own
// PID, mount, UTS, IPC, network and cgroup namespaces; Docker's capability
// set (less NET_RAW) and seccomp profile; no_new_privs; masked and
// read-only /proc and /sys paths. rootfs is the host path of the root
// filesystem and dir the container's own directory (for /etc files).
func Spec(c *Config, rootfs, dir string) (*specs.Spec, error) {
	caps, err := resolveCaps(c.CapAdd, c.CapDrop)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", c.ID, err)
	}
	uid, gid, _ := parseUser(c.User)
	env := c.Env
	if !hasEnv(env, "PATH") {
		env = append([]string{defaultPath}, env...)
	}
	if !hasEnv(env, "HOSTNAME") {
		env = append(env, "HOSTNAME="+c.hostname())
	}
	cwd := c.Cwd
	if cwd == "" {
		cwd = "/"
	}
	nofileHard := uint64(1048576)
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Max < nofileHard {
		// Raising a hard limit needs CAP_SYS_RESOURCE, which the launcher may not have.
		nofileHard = rl.Max
	}
	nofileSoft := min(uint64(1024), nofileHard)

	s := &specs.Spec{
		// 1.0.2 is the newest version every supported executor accepts (crun 1.8 refuses newer).
		Version: "1.0.2",
		Root:    &specs.Root{Path: rootfs, Readonly: c.ReadonlyRootfs},
		Process: &specs.Process{
			Args: c.Args,
			Env:  env,
			Cwd:  cwd,
			User: specs.User{UID: uid, GID: gid},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         rlimits(c.Rlimits, nofileSoft, nofileHard),
			NoNewPrivileges: true,
		},
		Hostname: c.hostname(),
		Mounts:   defaultMounts(dir),
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.CgroupNamespace},
				{Type: specs.NetworkNamespace, Path: c.NetNS},
			},
			CgroupsPath:   "/berth/" + c.ID,
			Resources:     linuxResources(&c.Resources),
			MaskedPaths:   defaultMaskedPaths,
			ReadonlyPaths: defaultReadonlyPaths,
		},
		Annotations: map[string]string{},
	}
	if uid != 0 {
		// As Docker: a non-root user starts with no capabilities; the bounding
		// set still caps what a setuid program could gain.
		s.Process.Capabilities.Effective = nil
		s.Process.Capabilities.Permitted = nil
	}
	s.Mounts = append(s.Mounts, c.Mounts...)
	if len(c.Sysctls) > 0 {
		s.Linux.Sysctl = c.Sysctls
	}
	if c.Init {
		s.Annotations[initAnnotation] = "true"
	}
	for k, v := range c.Labels {
		s.Annotations["berth.label."+k] = v
	}
	if !c.NoSeccomp {
		sc, err := DefaultSeccomp(s)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", c.ID, err)
		}
		s.Linux.Seccomp = sc
	}
	return s, nil
}

// initAnnotation marks a spec whose container keeps berth's init as PID 1:
// the OCI spec has no field for it, and only the built-in executor reads it.
const initAnnotation = "berth.init"

// rlimits are the default RLIMIT_NOFILE and the asked limits, which
// replace a default of the same type.
func rlimits(asked []specs.POSIXRlimit, nofileSoft, nofileHard uint64) []specs.POSIXRlimit {
	out := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: nofileSoft, Hard: nofileHard}}
	for _, r := range asked {
		if r.Type == "RLIMIT_NOFILE" {
			out = out[1:]
			break
		}
	}
	return append(out, asked...)
}

func (c *Config) hostname() string {
	if c.Hostname != "" {
		return c.Hostname
	}
	if len(c.ID) > 63 {
		return c.ID[:63]
	}
	return c.ID
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			return true
		}
	}
	return false
}

func defaultMounts(dir string) []specs.Mount {
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	for _, d := range hostDevices {
		m = append(m, specs.Mount{Destination: d, Type: "bind", Source: d, Options: []string{"bind", "nosuid", "noexec"}})
	}
	for _, f := range []string{"hostname", "hosts", "resolv.conf"} {
		m = append(m, specs.Mount{Destination: "/etc/" + f, Type: "bind", Source: dir + "/" + f, Options: []string{"bind", "nosuid", "nodev", "noexec"}})
	}
	if cgroup2Only() {
		m = append(m, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup2", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "ro"}})
	}
	return m
}

func linuxResources(r *Resources) *specs.LinuxResources {
	out := &specs.LinuxResources{
		Devices: defaultDeviceRules(),
	}
	cpu := &specs.LinuxCPU{}
	if r.CPUShares != 0 {
		sh := r.CPUShares
		cpu.Shares = &sh
	}
	if r.CPUs > 0 && r.CPUSet == "" {
		period := uint64(100000)
		quota := int64(r.CPUs * float64(period))
		cpu.Period, cpu.Quota = &period, &quota
	}
	if r.CPUSet != "" {
		cpu.Cpus = r.CPUSet
	}
	out.CPU = cpu
	if r.MemoryBytes > 0 {
		mem, swap := r.MemoryBytes, r.MemoryBytes
		out.Memory = &specs.LinuxMemory{Limit: &mem, Swap: &swap}
	}
	if r.Pids > 0 {
		out.Pids = &specs.LinuxPids{Limit: &r.Pids}
	}
	return out
}

func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	i := func(v int64) *int64 { return &v }
	rules := []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	// mknod may create any node (Docker keeps CAP_MKNOD), but only these may be used.
	rules = append(rules,
		specs.LinuxDeviceCgroup{Allow: true, Type: "c", Access: "m"},
		specs.LinuxDeviceCgroup{Allow: true, Type: "b", Access: "m"},
	)
	for _, d := range [][2]int64{{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0}, {5, 1}, {5, 2}} {
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i(d[0]), Minor: i(d[1]), Access: "rwm"})
	}
	rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i(136), Access: "rwm"})
	return rules
}

// cgroup2Only reports whether the host runs a pure cgroup v2 hierarchy.
func cgroup2Only() bool {
	var st syscall.Statfs_t
	return syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == 0x63677270
}
