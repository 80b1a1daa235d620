package runtime

import (
	"fmt"

	"github.com/berth-dev/berth/api"
)

// capNames maps capability names to their numbers (linux/capability.h),
// from the API's one list.
var capNames = func() map[string]uint {
	m := make(map[string]uint, len(api.Capabilities))
	for i, n := range api.Capabilities {
		m["CAP_"+n] = uint(i)
	}
	return m
}()

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
	n, err := api.NormalizeCapability(name)
	if err != nil {
		return "", err
	}
	return "CAP_" + n, nil
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
