package agent

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/runtime"
)

// Process is how an instance's process is set up besides its command and
// environment: its identity, privileges, limits and how it is stopped.
type Process struct {
	// User is as the template gives it (a name or number, optionally
	// :group); it is resolved against the image's /etc/passwd at start.
	User string
	// Hostname replaces the instance's name as the container's host name.
	Hostname        string
	CapAdd, CapDrop []string
	ReadOnly        bool
	Rlimits         []specs.POSIXRlimit
	Sysctls         map[string]string
	ExtraHosts      []string
	Init            bool
	StopSignal      syscall.Signal
}

// processOf reads the process settings of a template (already validated
// by the API).
func processOf(t *api.Template) Process {
	p := Process{User: t.User, Hostname: t.Hostname, CapAdd: t.CapAdd, CapDrop: t.CapDrop, ReadOnly: t.ReadOnly,
		Sysctls: t.Sysctls, Init: t.Init}
	for _, u := range t.Ulimits {
		p.Rlimits = append(p.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_" + strings.ToUpper(u.Name), Soft: u.Soft, Hard: u.Hard})
	}
	for _, h := range t.ExtraHosts {
		p.ExtraHosts = append(p.ExtraHosts, h.IP+" "+strings.Join(h.Hostnames, " "))
	}
	if t.StopSignal != "" {
		if n, err := api.SignalNumber(t.StopSignal); err == nil {
			p.StopSignal = syscall.Signal(n)
		}
	}
	if len(p.Sysctls) > 0 {
		p.Sysctls = maps.Clone(p.Sysctls)
	}
	return p
}

// apply sets c up for the process, the image's user unless one is
// given, resolved by name from the image's own files.
func (p *Process) apply(c *runtime.Config, rootfs Rootfs) error {
	if p.Hostname != "" {
		c.Hostname = p.Hostname
	}
	c.CapAdd, c.CapDrop = slices.Clone(p.CapAdd), slices.Clone(p.CapDrop)
	c.ReadonlyRootfs = p.ReadOnly
	c.Rlimits, c.Sysctls, c.ExtraHosts = p.Rlimits, p.Sysctls, p.ExtraHosts
	c.Init, c.StopSignal = p.Init, p.StopSignal
	user := p.User
	if user == "" {
		user = rootfs.User
	}
	u, err := image.ResolveUser(rootfs.LowerDirs, user)
	if err != nil {
		return fmt.Errorf("user: %w", err)
	}
	c.User = u
	return nil
}
