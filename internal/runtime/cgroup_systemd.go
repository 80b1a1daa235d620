package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Cgroup drivers: who makes a container's cgroup and sets its limits.
const (
	// CgroupDriverCgroupfs has berth write the cgroup tree itself
	// (/sys/fs/cgroup[/ctrl]/berth/<id>): hosts whose PID 1 is not systemd.
	CgroupDriverCgroupfs = "cgroupfs"
	// CgroupDriverSystemd asks systemd, over D-Bus, for a transient scope
	// per container (berth-<id>.scope in berth.slice) with the limits as
	// unit properties, so systemd's own view of the tree (daemon-reload,
	// accounting) agrees with berth's.
	CgroupDriverSystemd = "systemd"
)

// berthSlice holds every container scope; stopping it stops them all.
const berthSlice = "berth.slice"

// WithCgroupDriver picks the cgroup driver (CgroupDriverCgroupfs or
// CgroupDriverSystemd); "" detects it (DetectCgroupDriver).
func WithCgroupDriver(name string) Option { return func(o *options) { o.cgroupDriver = name } }

// DetectCgroupDriver is systemd when PID 1 is systemd (it made
// /run/systemd/system, as sd_booted(3) checks) on a pure cgroup v2 host,
// else cgroupfs.
func DetectCgroupDriver() string {
	if systemdBooted() && cgroup2Only() {
		return CgroupDriverSystemd
	}
	return CgroupDriverCgroupfs
}

func systemdBooted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// ValidateCgroupDriver checks a driver name given by a user: one berth
// knows, and systemd only where systemd runs with pure cgroup v2.
func ValidateCgroupDriver(name string) error {
	switch name {
	case "", CgroupDriverCgroupfs:
		return nil
	case CgroupDriverSystemd:
		if !systemdBooted() {
			return fmt.Errorf("cgroup driver %q: PID 1 is not systemd (no /run/systemd/system)", name)
		}
		if !cgroup2Only() {
			return fmt.Errorf("cgroup driver %q: needs a pure cgroup v2 host (/sys/fs/cgroup is not cgroup2)", name)
		}
		return nil
	}
	return fmt.Errorf("cgroup driver %q: unknown; use %s or %s", name, CgroupDriverCgroupfs, CgroupDriverSystemd)
}

// systemdScopes places each container in its own transient scope.
// The scope is made for the container's shim as soon as it runs, so the
// shim and the container it starts live there, outside the service that
// launched them: stopping berth's service does not touch them, and
// stopping berth.slice (or the host) stops them within their grace.
type systemdScopes struct {
	// prefix starts each scope's name: "berth" for the default state
	// directory, "berth-<hash>" for others, as the cgroupfs parent.
	prefix string
}

func (d *systemdScopes) unit(id string) string { return d.prefix + "-" + id + ".scope" }

// path is the scope's cgroup, relative to the cgroup2 root.
func (d *systemdScopes) path(id string) string { return "/" + berthSlice + "/" + d.unit(id) }

// scopeUnit returns the unit of a scope's cgroup path, "" for another path.
func scopeUnit(path string) string {
	dir, unit, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || dir != berthSlice || !strings.HasSuffix(unit, ".scope") || strings.Contains(unit, "/") {
		return ""
	}
	return unit
}

// place makes the container's scope with pid (its shim) in it and the
// limits of r as properties, and waits until systemd has done it.
func (d *systemdScopes) place(ctx context.Context, id string, pid int, r *specs.LinuxResources, grace time.Duration) error {
	unit := d.unit(id)
	props := []sdbus.Property{
		sdbus.PropDescription("berth container " + id),
		sdbus.PropSlice(berthSlice),
		sdbus.PropPids(uint32(pid)),
		prop("Delegate", true),
		// A scope that failed (killed at its stop timeout) is forgotten too.
		prop("CollectMode", "inactive-or-failed"),
		prop("TimeoutStopUSec", uint64(grace/time.Microsecond)),
	}
	if svc := ownService(); svc != "" {
		// Stopped before the scope when both stop (a host shutdown, systemctl
		// stop berth.slice): berth must not start a replacement for a
		// container systemd is stopping, in a scope the shutdown has passed.
		props = append(props, prop("Before", []string{svc}))
	}
	props = append(props, scopeLimits(r)...)
	conn, err := systemd(ctx)
	if err != nil {
		return fmt.Errorf("scope %s: %w", unit, err)
	}
	_ = conn.ResetFailedUnitContext(ctx, unit)
	done := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, unit, "replace", props, done); err != nil {
		dropSystemd(conn)
		return fmt.Errorf("scope %s: start: %w", unit, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return fmt.Errorf("scope %s: start: job %s", unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scope %s: start: %w", unit, ctx.Err())
	}
}

// scopeLimits turns the OCI limits into systemd unit properties, the
// cgroup v2 values berth's cgroupfs driver writes.
func scopeLimits(r *specs.LinuxResources) []sdbus.Property {
	if r == nil {
		return nil
	}
	var out []sdbus.Property
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares >= 2 {
			out = append(out, prop("CPUWeight", 1+((*c.Shares-2)*9999)/262142))
		}
		if c.Quota != nil && c.Period != nil && *c.Quota > 0 && *c.Period > 0 {
			out = append(out,
				prop("CPUQuotaPerSecUSec", uint64(*c.Quota)*1000000/(*c.Period)),
				prop("CPUQuotaPeriodUSec", *c.Period))
		}
		if c.Cpus != "" {
			if mask, err := cpuMask(c.Cpus); err == nil {
				out = append(out, prop("AllowedCPUs", mask))
			}
		}
	}
	if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
		out = append(out, prop("MemoryMax", uint64(*r.Memory.Limit)), prop("MemorySwapMax", uint64(0)))
	}
	if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0 {
		// The shim shares the scope: one task more than the container's.
		out = append(out, prop("TasksMax", uint64(*r.Pids.Limit)+1))
	}
	return out
}

// ownService is the systemd service this process runs in ("berth-up.service"), or "".
func ownService() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			unit := path[strings.LastIndexByte(path, '/')+1:]
			if strings.HasSuffix(unit, ".service") {
				return unit
			}
		}
	}
	return ""
}

// ownCgroupProcs is the cgroup.procs file of this process's own cgroup
// on a cgroup v2 host, or "" (elsewhere, or unknown). A -p container's
// OnExit command, which its shim starts inside the container's scope,
// moves there first: out of the container's memory and task limits.
func ownCgroupProcs() string {
	if !cgroup2Only() {
		return ""
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(path, "/") {
			return filepath.Join("/sys/fs/cgroup", path, "cgroup.procs")
		}
	}
	return ""
}

func prop(name string, v any) sdbus.Property {
	return sdbus.Property{Name: name, Value: godbus.MakeVariant(v)}
}

// cpuMask turns a cpuset list ("0-2,5") into systemd's AllowedCPUs: a
// bitmask, CPU n at bit n%8 of byte n/8.
func cpuMask(list string) ([]byte, error) {
	var mask []byte
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("cpus %q: %w", list, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("cpus %q: %w", list, err)
			}
		}
		if a < 0 || b < a || b > 8191 {
			return nil, fmt.Errorf("cpus %q: bad range %q", list, part)
		}
		for n := a; n <= b; n++ {
			for len(mask) <= n/8 {
				mask = append(mask, 0)
			}
			mask[n/8] |= 1 << (n % 8)
		}
	}
	return mask, nil
}

// stopScope stops a container's scope, killing what still runs in it,
// and waits for systemd to be done. A scope already gone is no error.
func stopScope(ctx context.Context, unit string) error {
	conn, err := systemd(ctx)
	if err != nil {
		return fmt.Errorf("scope %s: %w", unit, err)
	}
	done := make(chan string, 1)
	if _, err := conn.StopUnitContext(ctx, unit, "replace", done); err != nil {
		var de godbus.Error
		if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.NoSuchUnit" {
			return nil
		}
		dropSystemd(conn)
		return fmt.Errorf("scope %s: stop: %w", unit, err)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scope %s: stop: %w", unit, ctx.Err())
	}
}

// One connection to systemd serves the process; a broken one is dropped
// and the next call dials again.
var (
	sdMu   sync.Mutex
	sdConn *sdbus.Conn
)

func systemd(ctx context.Context) (*sdbus.Conn, error) {
	sdMu.Lock()
	defer sdMu.Unlock()
	if sdConn != nil && sdConn.Connected() {
		return sdConn, nil
	}
	// The connection is made with a context that never ends: godbus closes
	// a connection once the context it was made with is done, and this one
	// is shared, so a caller's context ending (as each start's does when
	// it returns) would cut off every other caller's wait for its job.
	// ctx bounds only this caller's wait for the dial.
	type dialed struct {
		c   *sdbus.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := sdbus.NewWithContext(context.Background())
		if err != nil {
			// No system bus (dbus not running): systemd's own socket, root only.
			var err2 error
			if c, err2 = sdbus.NewSystemdConnectionContext(context.Background()); err2 != nil {
				err = errors.Join(err, err2)
			} else {
				err = nil
			}
		}
		ch <- dialed{c, err}
	}()
	select {
	case d := <-ch:
		if d.err != nil {
			return nil, fmt.Errorf("connect to systemd: %w", d.err)
		}
		sdConn = d.c
		return d.c, nil
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.c != nil {
				d.c.Close()
			}
		}()
		return nil, fmt.Errorf("connect to systemd: %w", ctx.Err())
	}
}

func dropSystemd(c *sdbus.Conn) {
	sdMu.Lock()
	defer sdMu.Unlock()
	if sdConn == c {
		sdConn.Close()
		sdConn = nil
	}
}

// DefaultStopGrace is a scope's stop timeout when its Config gives none.
const DefaultStopGrace = 10 * time.Second

// placeShim puts a just started shim in its container's scope (systemd
// driver; nothing for cgroupfs), before the shim may start the container.
func (r *Runtime) placeShim(bd *bundle, pid int) error {
	if r.scopes == nil {
		return nil
	}
	var m meta
	if err := readJSON(bd.path("meta.json"), &m); err != nil {
		return fmt.Errorf("scope: %w", err)
	}
	var res *specs.LinuxResources
	if s := r.spec(bd); s != nil && s.Linux != nil {
		res = s.Linux.Resources
	}
	grace := m.Config.StopGrace
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.scopes.place(ctx, bd.id, pid, res, grace)
}

// removeScope stops a container's scope and waits for its cgroup to go.
func removeScope(unit, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := stopScope(ctx, unit); err != nil {
		return err
	}
	for {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("scope %s: its cgroup %s remains: %w", unit, dir, err)
		}
	}
}
