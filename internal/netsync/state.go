package netsync

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/vip"
)

// eventDeleted is the watch event type of a removed object.
const eventDeleted = "Deleted"

// state is the API's services and their instances, as last seen.
type state struct {
	services map[string]*api.Service             // by namespace/name
	members  map[string]map[string]*api.Instance // service key → instance name → instance
	owner    map[string]string                   // instance key → service key
}

func newState() *state {
	return &state{services: map[string]*api.Service{}, members: map[string]map[string]*api.Instance{}, owner: map[string]string{}}
}

func key(ns, name string) string { return ns + "/" + name }

func (st *state) putService(s *api.Service) string {
	k := key(s.Metadata.Namespace, s.Metadata.Name)
	st.services[k] = s
	return k
}

// putInstance files an instance under its service; it returns the keys of
// the services whose membership it touched.
func (st *state) putInstance(in *api.Instance) []string {
	ik := key(in.Metadata.Namespace, in.Metadata.Name)
	touched := st.dropInstance(ik)
	if in.Spec.Owner.Kind != api.KindService {
		return touched
	}
	sk := key(in.Metadata.Namespace, in.Spec.Owner.Name)
	m := st.members[sk]
	if m == nil {
		m = map[string]*api.Instance{}
		st.members[sk] = m
	}
	m[in.Metadata.Name] = in
	st.owner[ik] = sk
	return append(touched, sk)
}

func (st *state) dropInstance(ik string) []string {
	sk, ok := st.owner[ik]
	if !ok {
		return nil
	}
	delete(st.owner, ik)
	_, name, _ := strings.Cut(ik, "/")
	delete(st.members[sk], name)
	if len(st.members[sk]) == 0 {
		delete(st.members, sk)
	}
	return []string{sk}
}

// apply records one watch event and marks the services it touches.
func (st *state) apply(c change, dirty map[string]bool) error {
	switch {
	case c.svc != nil:
		ev := c.svc
		if ev.Err != nil {
			return ev.Err
		}
		if ev.Object == nil {
			return nil // a heartbeat
		}
		k := key(ev.Object.Metadata.Namespace, ev.Object.Metadata.Name)
		if ev.Type == eventDeleted {
			delete(st.services, k)
		} else {
			st.putService(ev.Object)
		}
		dirty[k] = true
	case c.inst != nil:
		ev := c.inst
		if ev.Err != nil {
			return ev.Err
		}
		if ev.Object == nil {
			return nil
		}
		var touched []string
		if ev.Type == eventDeleted {
			touched = st.dropInstance(key(ev.Object.Metadata.Namespace, ev.Object.Metadata.Name))
		} else {
			touched = st.putInstance(ev.Object)
		}
		for _, k := range touched {
			dirty[k] = true
		}
	}
	return nil
}

// service is the data plane's view of one service; false when it should
// not be programmed (gone, or no VIP handed out yet).
func (st *state) service(k string) (network.Service, bool) {
	s, ok := st.services[k]
	if !ok {
		return network.Service{}, false
	}
	return describe(s, st.members[k])
}

func (st *state) all() []network.Service {
	out := make([]network.Service, 0, len(st.services))
	for k, s := range st.services {
		if ns, ok := describe(s, st.members[k]); ok {
			out = append(out, ns)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

func describe(s *api.Service, members map[string]*api.Instance) (network.Service, bool) {
	v, err := netip.ParseAddr(s.Status.VIP)
	if err != nil {
		return network.Service{}, false
	}
	out := network.Service{Namespace: s.Metadata.Namespace, Name: s.Metadata.Name, Aliases: s.Spec.Aliases, VIP: v}
	for _, p := range s.Spec.Template.Ports {
		proto := vip.TCP
		if p.Protocol == "udp" {
			proto = vip.UDP
		}
		out.Ports = append(out.Ports, network.ServicePort{Name: p.Name, Protocol: proto,
			Port: uint16(p.Container), TargetPort: uint16(p.Container), HostPort: uint16(p.Host)})
	}
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		in := members[name]
		// An instance of an earlier service of the same name is not this one's.
		if in.Spec.Owner.UID != s.Metadata.UID {
			continue
		}
		ip, err := netip.ParseAddr(in.Status.IP)
		if err != nil {
			continue
		}
		out.Instances = append(out.Instances, network.Instance{Name: in.Metadata.Name, IP: ip,
			Ready: in.Status.Phase == api.PhaseRunning && in.Status.Healthy})
	}
	return out, true
}

// String is for logs.
// isolation is which instances of services on named networks may reach
// each other: those of one namespace that share a network.
func (st *state) isolation() network.Isolation {
	groups := map[string][]netip.Addr{}
	var iso network.Isolation
	for _, m := range st.members {
		for _, in := range m {
			ip, err := netip.ParseAddr(in.Status.IP)
			if err != nil || len(in.Spec.Template.Networks) == 0 || in.Status.Phase.Terminal() {
				continue
			}
			iso.Members = append(iso.Members, ip)
			for _, n := range in.Spec.Template.Networks {
				k := in.Metadata.Namespace + "/" + n
				groups[k] = append(groups[k], ip)
			}
		}
	}
	seen := map[[2]netip.Addr]bool{}
	for _, ips := range groups {
		for _, a := range ips {
			for _, b := range ips {
				if p := [2]netip.Addr{a, b}; !seen[p] {
					seen[p] = true
					iso.Pairs = append(iso.Pairs, p)
				}
			}
		}
	}
	slices.SortFunc(iso.Members, func(a, b netip.Addr) int { return a.Compare(b) })
	iso.Members = slices.Compact(iso.Members)
	slices.SortFunc(iso.Pairs, func(a, b [2]netip.Addr) int {
		if c := a[0].Compare(b[0]); c != 0 {
			return c
		}
		return a[1].Compare(b[1])
	})
	return iso
}

func (st *state) String() string {
	return fmt.Sprintf("%d services, %d instances", len(st.services), len(st.owner))
}
