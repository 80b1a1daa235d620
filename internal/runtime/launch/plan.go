// Package launch is the part of berth that runs before the Go runtime in a
// re-executed berth binary: the per-container shim, the container init and
// exec into a running container, written in C (see stage.c). This file is
// the Go side of their contract: the launch plan they read.
//
// A binary that links this package dispatches on the _BERTH_STAGE
// environment variable before main runs, so every berth binary (and every
// test binary that imports the runtime) can serve as its own shim.
package launch

// #cgo CFLAGS: -O2 -Wall -Wno-unused-result
// #include "plan.h"
import "C"

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// Environment variables that select a stage and point at its plan.
const (
	StageEnv = "_BERTH_STAGE"
	PlanEnv  = "_BERTH_PLAN"
	// GateEnv tells the shim to wait for a byte on fd 4 before it starts
	// the container: the launcher readies its cgroups and network meanwhile.
	GateEnv = "_BERTH_GATE"
	// StdioEnv gives the container a stdin or a terminal: "stdin FD" or
	// "tty FD", FD a descriptor the shim inherits (see launch.h).
	StdioEnv = "_BERTH_STDIO"
	// RestartEnv gives the shim a restart policy: "always MAX" or
	// "on-failure MAX", MAX 0 for no limit (see shim.c).
	RestartEnv = "_BERTH_RESTART"
	// KeepEnv names descriptors the shim keeps open while it lives and
	// closes in the container: "FIRST LAST", a range.
	KeepEnv = "_BERTH_KEEP"
	// OnExitEnv names a file of NUL-ended arguments (the first is the
	// process's name): once the container has ended for good, the shim
	// runs this binary with them and waits for it before it closes its
	// kept descriptors (see shim.c).
	OnExitEnv = "_BERTH_ONEXIT"
	// OnExitCgroupEnv names a cgroup.procs file the OnExit command joins
	// before it runs (the launcher's cgroup, out of the container's scope).
	OnExitCgroupEnv = "_BERTH_ONEXIT_CGROUP"
	StageShim       = "shim"
	StageExec       = "exec"
	// StageHold waits for stdin to close: a process that holds a user
	// namespace for the launcher to idmap mounts with.
	StageHold = "hold"
)

// Record types and limits, from plan.h: one definition for both sides.
const (
	recArg         = C.REC_ARG
	recEnv         = C.REC_ENV
	recCwd         = C.REC_CWD
	recHostname    = C.REC_HOSTNAME
	recRootfs      = C.REC_ROOTFS
	recRootfsRO    = C.REC_ROOTFS_RO
	recMount       = C.REC_MOUNT
	recMask        = C.REC_MASK
	recRO          = C.REC_RO
	recRlimit      = C.REC_RLIMIT
	recCgroup      = C.REC_CGROUP
	recNetNS       = C.REC_NETNS
	recNSFlags     = C.REC_NSFLAGS
	recSeccomp     = C.REC_SECCOMP
	recCaps        = C.REC_CAPS
	recUser        = C.REC_USER
	recNNP         = C.REC_NNP
	recOOMScore    = C.REC_OOMSCORE
	recLog         = C.REC_LOG
	recExtArg      = C.REC_EXTARG
	recHideUnified = C.REC_HIDE_UNIFIED
	recSysctl      = C.REC_SYSCTL
	recExit        = C.REC_EXIT
	recState       = C.REC_STATE
	recCtl         = C.REC_CTL
	recPID         = C.REC_PID
	recExtStart    = C.REC_EXTSTART
	recPIDFile     = C.REC_PIDFILE
	recOverlay     = C.REC_OVERLAY
	recUserNS      = C.REC_USERNS
	recInit        = C.REC_INIT

	maxItems   = C.MAX_ITEMS
	maxRlimits = C.MAX_RLIMITS
	maxCgroups = C.MAX_CGROUPS
	maxGIDs    = C.MAX_GIDS
)

// MountKind says how the init makes a mount.
type MountKind uint32

const (
	// MountFS mounts a filesystem type (proc, tmpfs, sysfs...).
	MountFS MountKind = C.MOUNT_KIND_FS
	// MountBind binds a host directory, opened before pivot_root.
	MountBind MountKind = C.MOUNT_KIND_BIND
	// MountBindFile binds a host file; the destination is created as a file.
	MountBindFile MountKind = C.MOUNT_KIND_BIND_FILE
)

// Mount is one mount made inside the container after pivot_root. Target is
// a path inside the container.
type Mount struct {
	Kind   MountKind
	Source string
	Target string
	FSType string
	Data   string
	Flags  uintptr
}

// Rlimit is one resource limit.
type Rlimit struct {
	Resource   uint32
	Soft, Hard uint64
}

// Caps holds capability sets as bit masks (bit n is capability n).
type Caps struct {
	Bounding, Effective, Permitted, Inheritable, Ambient uint64
}

// User is the identity the process runs as.
type User struct {
	UID, GID       uint32
	AdditionalGIDs []uint32
}

// UserNS maps the container's ids 0..Size-1 to host ids from UID and GID:
// the container runs in a user namespace of its own.
type UserNS struct {
	UID, GID, Size uint32
}

// Log configures the shim's log file.
type Log struct {
	Path     string
	MaxSize  uint64
	MaxFiles uint32
}

// Plan is everything the C stages need. Fields that do not apply to a stage are ignored by it.
type Plan struct {
	Args     []string
	Env      []string
	Cwd      string
	Hostname string
	// Rootfs is the host path of the root filesystem. With RootfsOverlay
	// set, the init mounts an overlay there (with these options) in the
	// container's own mount namespace first.
	Rootfs         string
	RootfsOverlay  string
	RootfsReadonly bool
	Mounts         []Mount
	Masked         []string
	Readonly       []string
	Sysctls        []string
	Rlimits        []Rlimit
	// Cgroups are cgroup.procs files the process is written into before it runs.
	Cgroups []string
	// NetNS, when set, is a network namespace to join instead of making one.
	NetNS string
	// NSFlags are the clone flags of the namespaces to create.
	NSFlags    uint64
	Seccomp    []byte
	Caps       *Caps
	User       *User
	NoNewPrivs bool
	// Init keeps the container's init as PID 1, reaping orphans and
	// passing signals on to the workload, which it runs as its child.
	Init        bool
	OOMScoreAdj *int32
	// UserNS, when set, puts the container in a user namespace: the shim
	// writes its id maps (and denies setgroups) before the init goes on.
	UserNS *UserNS

	// Shim only.
	Log Log
	// ExternalArgs creates the container with an OCI runtime ("runc create
	// ..."), writing its pid to PIDFile; ExternalStart then starts it.
	ExternalArgs  []string
	ExternalStart []string
	PIDFile       string
	HideUnified   bool
	ExitPath      string
	StatePath     string
	CtlPath       string

	// Exec only: the container's init pid whose namespaces are joined.
	PID int
}

// MarshalBinary encodes the plan in the record format plan.c reads.
func (p *Plan) MarshalBinary() ([]byte, error) {
	if err := p.checkCounts(); err != nil {
		return nil, err
	}
	var w planWriter
	p.writeProcess(&w)
	for _, m := range p.Mounts {
		w.mount(m)
	}
	p.writeLimits(&w)
	err := w.err
	if err == nil {
		err = p.checkLimits()
	}
	if err != nil {
		return nil, err
	}
	return w.b.Bytes(), nil
}

// checkCounts refuses the lists and numbers the records cannot carry.
func (p *Plan) checkCounts() error {
	if len(p.Cgroups) > maxCgroups {
		return fmt.Errorf("launch plan: %d cgroups, at most %d", len(p.Cgroups), maxCgroups)
	}
	if u := p.User; u != nil && len(u.AdditionalGIDs) > maxGIDs {
		return fmt.Errorf("launch plan: %d additional groups, at most %d", len(u.AdditionalGIDs), maxGIDs)
	}
	if p.PID > math.MaxInt32 {
		return fmt.Errorf("launch plan: pid %d out of range", p.PID)
	}
	return nil
}

// writeProcess writes what the process is: its arguments, environment,
// external runtime, paths and flags.
func (p *Plan) writeProcess(w *planWriter) {
	w.strs(recArg, p.Args)
	w.strs(recEnv, p.Env)
	w.strs(recExtArg, p.ExternalArgs)
	w.strs(recExtStart, p.ExternalStart)
	w.strOpt(recPIDFile, p.PIDFile)
	w.strOpt(recCwd, p.Cwd)
	w.strOpt(recHostname, p.Hostname)
	w.strOpt(recRootfs, p.Rootfs)
	w.strOpt(recOverlay, p.RootfsOverlay)
	w.strOpt(recNetNS, p.NetNS)
	w.strOpt(recExit, p.ExitPath)
	w.strOpt(recState, p.StatePath)
	w.strOpt(recCtl, p.CtlPath)
	w.flag(recRootfsRO, p.RootfsReadonly)
	w.flag(recNNP, p.NoNewPrivs)
	w.flag(recHideUnified, p.HideUnified)
	w.flag(recInit, p.Init)
}

// writeLimits writes what confines the process: masked and read-only
// paths, sysctls, rlimits, cgroups, namespaces, seccomp, capabilities,
// user, OOM score, log, the pid an exec joins and the user namespace.
func (p *Plan) writeLimits(w *planWriter) {
	w.strs(recMask, p.Masked)
	w.strs(recRO, p.Readonly)
	w.strs(recSysctl, p.Sysctls)
	for _, r := range p.Rlimits {
		var v [20]byte
		binary.NativeEndian.PutUint32(v[:4], r.Resource)
		binary.NativeEndian.PutUint64(v[4:12], r.Soft)
		binary.NativeEndian.PutUint64(v[12:], r.Hard)
		w.rec(recRlimit, v[:])
	}
	w.strs(recCgroup, p.Cgroups)
	if p.NSFlags != 0 {
		w.rec(recNSFlags, binary.NativeEndian.AppendUint64(nil, p.NSFlags))
	}
	if len(p.Seccomp) > 0 {
		w.rec(recSeccomp, p.Seccomp)
	}
	if c := p.Caps; c != nil {
		var v [40]byte
		for i, m := range []uint64{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
			binary.NativeEndian.PutUint64(v[i*8:], m)
		}
		w.rec(recCaps, v[:])
	}
	if u := p.User; u != nil {
		v := make([]byte, 12+4*len(u.AdditionalGIDs))
		binary.NativeEndian.PutUint32(v[0:], u.UID)
		binary.NativeEndian.PutUint32(v[4:], u.GID)
		binary.NativeEndian.PutUint32(v[8:], uint32(len(u.AdditionalGIDs)))
		for i, g := range u.AdditionalGIDs {
			binary.NativeEndian.PutUint32(v[12+4*i:], g)
		}
		w.rec(recUser, v)
	}
	if p.OOMScoreAdj != nil {
		w.rec(recOOMScore, binary.NativeEndian.AppendUint32(nil, uint32(*p.OOMScoreAdj)))
	}
	if p.Log.Path != "" {
		v := make([]byte, 12, 13+len(p.Log.Path))
		binary.NativeEndian.PutUint64(v[:8], p.Log.MaxSize)
		binary.NativeEndian.PutUint32(v[8:], p.Log.MaxFiles)
		w.rec(recLog, append(append(v, p.Log.Path...), 0))
	}
	if p.PID > 0 {
		w.rec(recPID, binary.NativeEndian.AppendUint32(nil, uint32(p.PID)))
	}
	if u := p.UserNS; u != nil {
		var v [12]byte
		binary.NativeEndian.PutUint32(v[0:], u.UID)
		binary.NativeEndian.PutUint32(v[4:], u.GID)
		binary.NativeEndian.PutUint32(v[8:], u.Size)
		w.rec(recUserNS, v[:])
	}
}

// planWriter writes records: a type, a length and a payload each. The
// last error it met stays in err.
type planWriter struct {
	b   bytes.Buffer
	err error
}

func (w *planWriter) rec(t uint16, payload []byte) {
	if len(payload) > 1<<24 {
		w.err = fmt.Errorf("launch plan: record %d too large (%d bytes)", t, len(payload))
		return
	}
	var h [6]byte
	binary.NativeEndian.PutUint16(h[:2], t)
	binary.NativeEndian.PutUint32(h[2:], uint32(len(payload)))
	w.b.Write(h[:])
	w.b.Write(payload)
}

func (w *planWriter) str(t uint16, s string) {
	if strings.IndexByte(s, 0) >= 0 {
		w.err = fmt.Errorf("launch plan: %q contains a NUL byte", s)
		return
	}
	w.rec(t, append([]byte(s), 0))
}

func (w *planWriter) strs(t uint16, ss []string) {
	for _, s := range ss {
		w.str(t, s)
	}
}

func (w *planWriter) strOpt(t uint16, s string) {
	if s != "" {
		w.str(t, s)
	}
}

func (w *planWriter) flag(t uint16, on bool) {
	if on {
		w.rec(t, nil)
	}
}

func (w *planWriter) mount(m Mount) {
	var fixed [12]byte
	binary.NativeEndian.PutUint64(fixed[:8], uint64(m.Flags))
	binary.NativeEndian.PutUint32(fixed[8:], uint32(m.Kind))
	payload := fixed[:]
	for _, s := range []string{m.Source, m.Target, m.FSType, m.Data} {
		if strings.IndexByte(s, 0) >= 0 {
			w.err = fmt.Errorf("launch plan: mount %q: field contains a NUL byte", m.Target)
			return
		}
		payload = append(append(payload, s...), 0)
	}
	w.rec(recMount, payload)
}

// checkLimits refuses what the C reader would: its lists are fixed arrays,
// and argv-like ones keep a slot for the terminating NULL.
func (p *Plan) checkLimits() error {
	for _, l := range []struct {
		what string
		n    int
		max  int
	}{
		{"args", len(p.Args), maxItems - 1}, {"external runtime args", len(p.ExternalArgs), maxItems - 1},
		{"external runtime start args", len(p.ExternalStart), maxItems - 1}, {"env entries", len(p.Env), maxItems},
		{"mounts", len(p.Mounts), maxItems}, {"masked paths", len(p.Masked), maxItems},
		{"read-only paths", len(p.Readonly), maxItems}, {"sysctls", len(p.Sysctls), maxItems},
		{"rlimits", len(p.Rlimits), maxRlimits},
	} {
		if l.n > l.max {
			return fmt.Errorf("launch plan: %d %s, at most %d", l.n, l.what, l.max)
		}
	}
	if len(p.Seccomp)%8 != 0 {
		return fmt.Errorf("launch plan: seccomp program of %d bytes, not whole 8-byte instructions", len(p.Seccomp))
	}
	return nil
}
