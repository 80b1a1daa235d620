package cli

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// One reading of -p for every command that takes it: docker run's
// [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]. What a form means then is the
// command's: `berth container run -p 80` publishes on a host port of the
// kernel's pick, as docker does; `berth run -p 80` (a service) only
// exposes 80 on the service's address, and a service is published on
// every address of its nodes, never on one.

const portUsage = "want [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp], e.g. 8080:80, 127.0.0.1:8080:80 or 5353:53/udp"

// portSpec is one -p as written.
type portSpec struct {
	// HostIP is the host address; zero for every address (none given, or 0.0.0.0).
	HostIP netip.Addr
	// HostPort is 0 when none is given (CONTAINERPORT or IP::CONTAINERPORT).
	HostPort      uint16
	ContainerPort uint16
	// Protocol is tcp or udp.
	Protocol string
	// HostPart tells that a host side was written (HOSTPORT: or IP::).
	HostPart bool
}

// parsePortSpec reads spec, given to flag; its errors name both.
func parsePortSpec(flag, spec string) (portSpec, error) {
	bad := func(why string) (portSpec, error) {
		return portSpec{}, fmt.Errorf("%s %q: %s", flag, spec, why)
	}
	rest, proto, hasProto := strings.Cut(spec, "/")
	if !hasProto {
		proto = "tcp"
	}
	switch proto {
	case "tcp", "udp":
	case "sctp":
		return bad("sctp is not supported; " + portUsage)
	default:
		return bad(fmt.Sprintf("protocol %q: %s", proto, portUsage))
	}
	if strings.HasPrefix(rest, "[") || strings.Count(rest, ":") > 2 {
		return bad("host addresses are IPv4 only; " + portUsage)
	}
	parts := strings.Split(rest, ":")
	p := portSpec{Protocol: proto, HostPart: len(parts) > 1}
	var host, ctr string
	switch len(parts) {
	case 1:
		ctr = parts[0]
	case 2:
		host, ctr = parts[0], parts[1]
	case 3:
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return bad(fmt.Sprintf("host address %q is not an IPv4 address; %s", parts[0], portUsage))
		}
		if !ip.IsUnspecified() {
			p.HostIP = ip
		}
		host, ctr = parts[1], parts[2]
	}
	var err error
	if p.ContainerPort, err = portNumber(ctr, "container port"); err != nil {
		return bad(err.Error())
	}
	if host != "" {
		if p.HostPort, err = portNumber(host, "host port"); err != nil {
			return bad(err.Error())
		}
	}
	return p, nil
}

// portNumber reads one port of a -p, what naming which.
func portNumber(s, what string) (uint16, error) {
	if strings.Contains(s, "-") {
		return 0, fmt.Errorf("%s %q: port ranges are not supported", what, s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s %q: want a number from 1 to 65535", what, s)
	}
	return uint16(n), nil
}

// containerPort is a -p of `berth container run`: no host port means one
// of the kernel's pick.
func containerPort(spec string) (runtime.Port, error) {
	ps, err := parsePortSpec("-p", spec)
	if err != nil {
		return runtime.Port{}, err
	}
	p := runtime.Port{HostPort: ps.HostPort, ContainerPort: ps.ContainerPort, Protocol: ps.Protocol}
	if ps.HostIP.IsValid() {
		p.HostIP = ps.HostIP.String()
	}
	return p, nil
}

// servicePort is a -p of `berth run`: CONTAINERPORT alone exposes the
// port on the service's address; HOSTPORT:CONTAINERPORT also publishes it
// on every address of its nodes, so a host address (other than 0.0.0.0)
// or a picked host port is refused.
func servicePort(spec string) (api.Port, error) {
	ps, err := parsePortSpec("-p", spec)
	if err != nil {
		return api.Port{}, err
	}
	if ps.HostIP.IsValid() {
		return api.Port{}, fmt.Errorf("-p %q: a service is published on every address of its nodes, not on %s (one address is for berth container run -p)", spec, ps.HostIP)
	}
	if ps.HostPart && ps.HostPort == 0 {
		return api.Port{}, fmt.Errorf("-p %q: a service's host port is given, not picked: want HOSTPORT:CONTAINERPORT, or CONTAINERPORT to expose it only", spec)
	}
	return api.Port{Container: int(ps.ContainerPort), Host: int(ps.HostPort), Protocol: ps.Protocol}, nil
}
