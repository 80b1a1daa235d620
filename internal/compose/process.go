package compose

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/berth-dev/berth/api"
)

// process maps the keys that set up the container's process: user,
// hostname, capabilities, read-only root, ulimits, sysctls, extra hosts,
// init and how it is stopped. What berth refuses is reported by key.
func (t *translator) process(s types.ServiceConfig, tpl *api.Template) {
	tpl.User = s.User
	if s.Hostname != "" {
		if err := api.ValidateHostname(s.Hostname); err != nil {
			t.unsupported(s.Name, "hostname", err.Error())
		} else {
			tpl.Hostname = s.Hostname
		}
	}
	for i, c := range s.CapAdd {
		if err := api.CheckCapAdd(c); err != nil {
			t.unsupported(s.Name, fmt.Sprintf("cap_add[%d]", i), err.Error())
			continue
		}
		tpl.CapAdd = append(tpl.CapAdd, c)
	}
	for i, c := range s.CapDrop {
		if _, err := api.NormalizeCapability(c); err != nil {
			t.unsupported(s.Name, fmt.Sprintf("cap_drop[%d]", i), err.Error())
			continue
		}
		tpl.CapDrop = append(tpl.CapDrop, c)
	}
	tpl.ReadOnly = s.ReadOnly
	for _, name := range slices.Sorted(maps.Keys(s.Ulimits)) {
		u := s.Ulimits[name]
		if !slices.Contains(api.Ulimits, name) {
			t.unsupported(s.Name, "ulimits."+name, "not a limit berth knows")
			continue
		}
		soft, hard := u.Soft, u.Hard
		if u.Single != 0 {
			soft, hard = u.Single, u.Single
		}
		if soft < 0 || hard < 0 || soft > hard {
			t.unsupported(s.Name, "ulimits."+name, fmt.Sprintf("soft %d and hard %d: want 0 <= soft <= hard", soft, hard))
			continue
		}
		tpl.Ulimits = append(tpl.Ulimits, api.Ulimit{Name: name, Soft: uint64(soft), Hard: uint64(hard)})
	}
	for _, k := range slices.Sorted(maps.Keys(s.Sysctls)) {
		if err := api.NamespacedSysctl(k); err != nil {
			t.unsupported(s.Name, "sysctls."+k, err.Error())
			continue
		}
		if tpl.Sysctls == nil {
			tpl.Sysctls = map[string]string{}
		}
		tpl.Sysctls[k] = s.Sysctls[k]
	}
	t.extraHosts(s, tpl)
	if s.Init != nil {
		tpl.Init = *s.Init
	}
	if s.StopSignal != "" {
		if _, err := api.SignalNumber(s.StopSignal); err != nil {
			t.unsupported(s.Name, "stop_signal", err.Error())
		} else {
			tpl.StopSignal = s.StopSignal
		}
	}
	if g := s.StopGracePeriod; g != nil {
		if d := time.Duration(*g); d < 0 || d > api.MaxStopGrace {
			t.unsupported(s.Name, "stop_grace_period", fmt.Sprintf("%s: berth waits between 0 and %s", d, api.MaxStopGrace))
		} else {
			tpl.StopGrace = api.Duration(d)
		}
	}
}

// extraHosts groups the names of each address into one /etc/hosts line,
// in the order the addresses first appear by name.
func (t *translator) extraHosts(s types.ServiceConfig, tpl *api.Template) {
	byIP := map[string]int{}
	for _, host := range slices.Sorted(maps.Keys(s.ExtraHosts)) {
		for _, ip := range s.ExtraHosts[host] {
			if _, err := netip.ParseAddr(ip); err != nil {
				reason := fmt.Sprintf("%q is not an IP address", ip)
				if ip == "host-gateway" {
					reason = "host-gateway: berth gives containers no address for the node itself"
				}
				t.unsupported(s.Name, "extra_hosts."+host, reason)
				continue
			}
			i, ok := byIP[ip]
			if !ok {
				i = len(tpl.ExtraHosts)
				byIP[ip] = i
				tpl.ExtraHosts = append(tpl.ExtraHosts, api.HostAlias{IP: ip})
			}
			tpl.ExtraHosts[i].Hostnames = append(tpl.ExtraHosts[i].Hostnames, host)
		}
	}
}
