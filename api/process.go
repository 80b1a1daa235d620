package api

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Ulimit is one resource limit of the process (setrlimit): Name is
// nofile, nproc, core... (Ulimits lists them), Soft at most Hard.
type Ulimit struct {
	Name string `json:"name"`
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// Ulimits are the limit names a template may set, as Docker names them;
// the runtime sets RLIMIT_ and the name in upper case.
var Ulimits = []string{
	"as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
	"nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
}

// HostAlias is a line of the container's /etc/hosts: IP and the names
// that resolve to it.
type HostAlias struct {
	IP        string   `json:"ip"`
	Hostnames []string `json:"hostnames"`
}

// Capabilities are the Linux capabilities by number (capability.h), as
// names without the CAP_ prefix.
var Capabilities = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// hostWideCapabilities act on the node rather than on the container's
// own namespaces (or open a known way out of them: DAC_READ_SEARCH is
// open_by_handle_at on the host's filesystems). The API refuses to add
// them; `berth container run --cap-add` on one's own machine does not.
var hostWideCapabilities = map[string]string{
	"SYS_ADMIN":       "mounts, namespaces and most of the kernel's administration",
	"SYS_MODULE":      "loads kernel modules",
	"SYS_RAWIO":       "reaches devices and I/O ports directly",
	"SYS_BOOT":        "reboots the node",
	"SYS_TIME":        "sets the node's clock",
	"SYSLOG":          "reads and clears the node's kernel log",
	"MAC_ADMIN":       "changes the node's security policy",
	"MAC_OVERRIDE":    "overrides the node's security policy",
	"DAC_READ_SEARCH": "opens the node's files by handle, outside the container's root",
	"BPF":             "loads BPF programs into the node's kernel",
	"PERFMON":         "observes the node's every process",
	"AUDIT_CONTROL":   "changes the node's audit rules",
	"SYS_PACCT":       "switches the node's process accounting",
	"WAKE_ALARM":      "wakes the node",
	"BLOCK_SUSPEND":   "keeps the node from suspending",
}

// NormalizeCapability turns "net_raw", "NET_RAW" or "CAP_NET_RAW" into
// "NET_RAW"; "ALL" stays "ALL".
func NormalizeCapability(name string) (string, error) {
	n := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "CAP_")
	if n != "ALL" && !slices.Contains(Capabilities, n) {
		return "", fmt.Errorf("unknown capability %q", name)
	}
	return n, nil
}

// CheckCapAdd says why an instance may not be granted capability name,
// or nil when it may.
func CheckCapAdd(name string) error {
	n, err := NormalizeCapability(name)
	switch {
	case err != nil:
		return err
	case n == "ALL":
		return errors.New("ALL would grant capabilities that act on the whole node; name the ones needed")
	case hostWideCapabilities[n] != "":
		return fmt.Errorf("%s %s: berth does not grant it to instances", n, hostWideCapabilities[n])
	}
	return nil
}

// ValidateHostname checks a container's host name: dot-separated labels
// of letters, digits and '-', at most 63 characters (the kernel's bound).
func ValidateHostname(h string) error {
	if len(h) > 63 || !hostnameRe().MatchString(h) {
		return fmt.Errorf("%q is not a host name (labels of letters, digits and '-' joined by '.', at most 63 characters)", h)
	}
	return nil
}

var hostnameRe = lazyRegexp(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)

// signals are Linux's signal numbers by name, without the SIG prefix.
var signals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
	"USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16,
	"CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24,
	"XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
}

// SignalNumber is the Linux number of a signal named "SIGQUIT", "QUIT"
// or "quit".
func SignalNumber(name string) (int, error) {
	n, ok := signals[strings.TrimPrefix(strings.ToUpper(name), "SIG")]
	if !ok {
		return 0, fmt.Errorf("unknown signal %q", name)
	}
	return n, nil
}

// ipcSysctls are the kernel.* keys the IPC namespace holds.
var ipcSysctls = []string{
	"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
	"kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
}

// NamespacedSysctl says why key may not be set in a container, or nil
// when the container's own namespaces hold it: net.* (its network
// namespace), the IPC keys and fs.mqueue.* (its IPC namespace). Any other
// key would change the whole node.
func NamespacedSysctl(key string) error {
	switch {
	case strings.HasPrefix(key, "net.") || strings.HasPrefix(key, "fs.mqueue.") || slices.Contains(ipcSysctls, key):
		return nil
	case key == "kernel.hostname" || key == "kernel.domainname":
		return fmt.Errorf("%s: set hostname instead", key)
	}
	return fmt.Errorf("%s is not namespaced: it would change the whole node", key)
}

// validateAliases checks a service's further DNS names.
func validateAliases(e *errs, s *Service) {
	checkMax(e, "aliases", len(s.Spec.Aliases), MaxAliases)
	seen := map[string]bool{s.Metadata.Name: true}
	for i, a := range s.Spec.Aliases {
		f := fmt.Sprintf("aliases[%d]", i)
		if err := ValidateName(a); err != nil {
			e.add(f, "%v", err)
		} else if seen[a] {
			e.add(f, "%q is the service's name or another alias", a)
		}
		seen[a] = true
	}
}

// Process limits of a template.
const (
	// MaxAliases bounds a service's further DNS names.
	MaxAliases = 16
	// MaxNetworks bounds the networks one instance is on.
	MaxNetworks   = 16
	MaxSysctls    = 64
	MaxExtraHosts = 64
	// MaxHostnames bounds the names of one /etc/hosts line.
	MaxHostnames = 16
	// MaxStopGrace bounds how long a stop waits before SIGKILL: a drain
	// or a rollout waits as long.
	MaxStopGrace = time.Hour
)

// validateProcess checks the fields that set up the process: its user,
// hostname, capabilities, rlimits, sysctls, hosts, init and stop.
func validateProcess(e *errs, prefix string, t *Template) {
	if strings.ContainsAny(t.User, " \t\n\x00") || strings.Count(t.User, ":") > 1 || strings.HasPrefix(t.User, ":") {
		e.add(join(prefix, "user"), "want NAME or UID, optionally :GROUP or :GID, got %q", t.User)
	}
	if t.Hostname != "" {
		if err := ValidateHostname(t.Hostname); err != nil {
			e.add(join(prefix, "hostname"), "%v", err)
		}
	}
	for i, c := range t.CapAdd {
		if err := CheckCapAdd(c); err != nil {
			e.add(fmt.Sprintf("%s[%d]", join(prefix, "capAdd"), i), "%v", err)
		}
	}
	for i, c := range t.CapDrop {
		if _, err := NormalizeCapability(c); err != nil {
			e.add(fmt.Sprintf("%s[%d]", join(prefix, "capDrop"), i), "%v", err)
		}
	}
	seen := map[string]bool{}
	for i, u := range t.Ulimits {
		f := fmt.Sprintf("%s[%d]", join(prefix, "ulimits"), i)
		switch {
		case !slices.Contains(Ulimits, u.Name):
			e.add(f+".name", "unknown limit %q (want one of %s)", u.Name, strings.Join(Ulimits, ", "))
		case seen[u.Name]:
			e.add(f+".name", "%s is set twice", u.Name)
		case u.Soft > u.Hard:
			e.add(f+".soft", "%d is above the hard limit %d", u.Soft, u.Hard)
		}
		seen[u.Name] = true
	}
	checkMax(e, join(prefix, "sysctls"), len(t.Sysctls), MaxSysctls)
	for k, v := range t.Sysctls {
		if err := NamespacedSysctl(k); err != nil {
			e.add(join(prefix, "sysctls"), "%v", err)
		}
		if strings.ContainsAny(k, "/\x00 ") || strings.Contains(k, "..") || strings.ContainsAny(v, "\x00\n") {
			e.add(join(prefix, "sysctls"), "%q=%q: not a sysctl key and value", k, v)
		}
	}
	checkMax(e, join(prefix, "extraHosts"), len(t.ExtraHosts), MaxExtraHosts)
	for i, h := range t.ExtraHosts {
		f := fmt.Sprintf("%s[%d]", join(prefix, "extraHosts"), i)
		if _, err := netip.ParseAddr(h.IP); err != nil {
			e.add(f+".ip", "%q is not an IP address", h.IP)
		}
		if len(h.Hostnames) == 0 {
			e.add(f+".hostnames", "must not be empty")
		}
		checkMax(e, f+".hostnames", len(h.Hostnames), MaxHostnames)
		for _, n := range h.Hostnames {
			if n == "" || len(n) > 253 || strings.ContainsAny(n, " \t\n\x00#") {
				e.add(f+".hostnames", "%q is not a host name", n)
			}
		}
	}
	if t.StopSignal != "" {
		if _, err := SignalNumber(t.StopSignal); err != nil {
			e.add(join(prefix, "stopSignal"), "%v", err)
		}
	}
	if t.StopGrace < 0 || t.StopGrace.D() > MaxStopGrace {
		e.add(join(prefix, "stopGrace"), "must be between 0 and %s, got %s", MaxStopGrace.String(), t.StopGrace)
	}
	if h := t.Health; h != nil && h.StartPeriod < 0 {
		e.add(join(prefix, "health.startPeriod"), "must not be negative, got %s", h.StartPeriod)
	}
	checkMax(e, join(prefix, "networks"), len(t.Networks), MaxNetworks)
	for i, n := range t.Networks {
		if err := ValidateName(n); err != nil {
			e.add(fmt.Sprintf("%s[%d]", join(prefix, "networks"), i), "%v", err)
		} else if slices.Index(t.Networks, n) != i {
			e.add(fmt.Sprintf("%s[%d]", join(prefix, "networks"), i), "%q is listed twice", n)
		}
	}
	if t.Init && t.Runtime != "" && t.Runtime != "berth" {
		e.add(join(prefix, "init"), "the %s runtime has no init of berth's; use the built-in runtime", t.Runtime)
	}
}
