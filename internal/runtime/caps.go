package runtime

import (
	"fmt"
	"strings"
)

// capNames maps capability names to their numbers (linux/capability.h).
var capNames = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// DefaultCapabilities is Docker's default set without CAP_NET_RAW: raw
// sockets (ping floods, packet spoofing on the bridge) must be granted
// explicitly, as Podman also does.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// normalizeCap accepts "net_raw", "NET_RAW" or "CAP_NET_RAW".
func normalizeCap(name string) (string, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	if _, ok := capNames[n]; !ok && n != "CAP_ALL" {
		return "", fmt.Errorf("unknown capability %q", name)
	}
	return n, nil
}

// capMask turns capability names into a bit mask.
func capMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		v, ok := capNames[n]
		if !ok {
			return 0, fmt.Errorf("unknown capability %q", n)
		}
		m |= 1 << v
	}
	return m, nil
}

// resolveCaps applies add and drop lists (names or "ALL") to the default set.
func resolveCaps(add, drop []string) ([]string, error) {
	set := map[string]bool{}
	for _, c := range DefaultCapabilities {
		set[c] = true
	}
	for _, d := range drop {
		n, err := normalizeCap(d)
		if err != nil {
			return nil, fmt.Errorf("cap-drop: %w", err)
		}
		if n == "CAP_ALL" {
			clear(set)
			continue
		}
		delete(set, n)
	}
	for _, a := range add {
		n, err := normalizeCap(a)
		if err != nil {
			return nil, fmt.Errorf("cap-add: %w", err)
		}
		if n == "CAP_ALL" {
			for k := range capNames {
				set[k] = true
			}
			continue
		}
		set[n] = true
	}
	out := make([]string, 0, len(set))
	for name := range set {
		out = append(out, name)
	}
	sortCaps(out)
	return out, nil
}

func sortCaps(c []string) {
	for i := 1; i < len(c); i++ {
		for j := i; j > 0 && capNames[c[j]] < capNames[c[j-1]]; j-- {
			c[j], c[j-1] = c[j-1], c[j]
		}
	}
}
