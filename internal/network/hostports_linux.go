package network

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/network/vip"
)

// hostPort is a port published on the node.
type hostPort struct {
	proto vip.Protocol
	port  uint16
}

func (h hostPort) String() string {
	return fmt.Sprintf("%d/%s", h.port, strings.ToLower(h.proto.String()))
}

type heldPort struct {
	owner string // the service key
	sock  io.Closer
}

// portHolder keeps a socket bound on every host port the node publishes,
// as Docker's and Kubernetes' port holders do: no other process can take
// the port while berth publishes it, and a port some other process holds
// already is not published here, so its traffic stays that process's.
type portHolder struct {
	netns string // the namespace the ports are published in; "" is the caller's
	mu    sync.Mutex
	held  map[hostPort]heldPort
}

func newPortHolder(netnsPath string) *portHolder {
	return &portHolder{netns: netnsPath, held: map[hostPort]heldPort{}}
}

// bind opens a socket on every local IPv4 address at h (the addresses
// berth publishes on; an IPv6 client still finds the port closed rather
// than a listener that never answers).
func (p *portHolder) bind(h hostPort) (io.Closer, error) {
	if h.proto != vip.TCP && h.proto != vip.UDP {
		return io.NopCloser(nil), nil // sctp: published, not held
	}
	var sock io.Closer
	listen := func() (err error) {
		sock, err = listenPort(h.proto, netip.Addr{}, h.port)
		return err
	}
	var err error
	if p.netns == "" {
		err = listen()
	} else {
		// A socket stays in the namespace it was made in.
		err = netns.Do(p.netns, listen)
	}
	return sock, err
}

// portSocket is a socket that holds a host port.
type portSocket interface {
	io.Closer
	File() (*os.File, error)
}

// listenPort binds a socket to addr:port in the calling thread's
// namespace, every local IPv4 address when addr is zero, the kernel's
// pick when port is 0. A TCP port is listened on (a merely bound socket
// would not keep every other process off it); nothing reaches the
// listener, as the published port's traffic is redirected before it. A
// port some other socket holds fails with syscall.EADDRINUSE.
func listenPort(proto vip.Protocol, addr netip.Addr, port uint16) (portSocket, error) {
	ip := net.IPv4zero
	if addr.IsValid() {
		ip = addr.AsSlice()
	}
	switch proto {
	case vip.TCP:
		return net.ListenTCP("tcp4", &net.TCPAddr{IP: ip, Port: int(port)})
	case vip.UDP:
		return net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: int(port)})
	}
	return nil, fmt.Errorf("port %d/%v: only tcp and udp ports can be held: %w", port, proto, ErrInvalid)
}

// HoldHostPort reserves port/proto on addr (every local IPv4 address when
// zero; a free port of the kernel's pick when port is 0) in the caller's
// network namespace, as a published port of the services is held: the
// socket, as a file, keeps any other process off the port for as long as
// some process keeps it open. It returns the port held. A port another
// socket holds gives an error naming it that wraps syscall.EADDRINUSE
// ("address already in use").
func HoldHostPort(proto vip.Protocol, addr netip.Addr, port uint16) (*os.File, uint16, error) {
	h := hostPort{proto, port}
	sock, err := listenPort(proto, addr, port)
	if err != nil {
		return nil, 0, fmt.Errorf("port %s: %w", h, err)
	}
	defer sock.Close()
	f, err := sock.File()
	if err != nil {
		return nil, 0, fmt.Errorf("port %s: %w", h, err)
	}
	if port == 0 {
		sa, err := unix.Getsockname(int(f.Fd()))
		if in4, ok := sa.(*unix.SockaddrInet4); err == nil && ok {
			port = uint16(in4.Port)
		}
	}
	return f, port, nil
}

// claim holds the host ports of s (named owner). A port that cannot be
// bound (another process holds it) is taken out of s, so it is not
// published, and named in the error. Ports owner held and s no longer
// publishes stay held: keep lets them go once the rules no longer
// redirect them, or a host process that bound one in between would find
// its loopback traffic still sent to the service.
func (p *portHolder) claim(owner string, s *vip.Service) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []string
	for i := range s.Ports {
		pt := &s.Ports[i]
		if pt.HostPort == 0 {
			continue
		}
		h := hostPort{pt.Protocol, pt.HostPort}
		if _, ok := p.held[h]; ok {
			// Held for this service, or for another: the programmer
			// names that conflict.
			continue
		}
		sock, err := p.bind(h)
		if err != nil {
			errs = append(errs, fmt.Sprintf("port %s: %v", h, err))
			pt.HostPort = 0
			continue
		}
		p.held[h] = heldPort{owner: owner, sock: sock}
	}
	if errs != nil {
		return fmt.Errorf("service %s: not published on this node: %s", owner, strings.Join(errs, "; "))
	}
	return nil
}

// settle releases the ports owner holds that s, as programmed, does not
// publish.
func (p *portHolder) settle(owner string, s vip.Service) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[hostPort]bool{}
	for _, pt := range s.Ports {
		if pt.HostPort != 0 {
			want[hostPort{pt.Protocol, pt.HostPort}] = true
		}
	}
	for h, cur := range p.held {
		if cur.owner == owner && !want[h] {
			_ = cur.sock.Close()
			delete(p.held, h)
		}
	}
}

// release lets go of every port owner holds.
func (p *portHolder) release(owner string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for h, cur := range p.held {
		if cur.owner == owner {
			_ = cur.sock.Close()
			delete(p.held, h)
		}
	}
}

// keep releases the ports of every owner not in owners, and those of
// owners their service in owners no longer publishes.
func (p *portHolder) keep(owners map[string]vip.Service) {
	type ownedPort struct {
		owner string
		h     hostPort
	}
	want := map[ownedPort]bool{}
	for owner, s := range owners {
		for _, pt := range s.Ports {
			if pt.HostPort != 0 {
				want[ownedPort{owner, hostPort{pt.Protocol, pt.HostPort}}] = true
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for h, cur := range p.held {
		if !want[ownedPort{cur.owner, h}] {
			_ = cur.sock.Close()
			delete(p.held, h)
		}
	}
}

// check reports whether an instance of service owner may publish h on
// this node: the port is held for that service already, or it is free.
func (p *portHolder) check(owner string, h hostPort) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.held[h]; ok {
		if cur.owner == owner {
			return nil
		}
		return fmt.Errorf("port %s: published by service %s", h, cur.owner)
	}
	sock, err := p.bind(h)
	if err != nil {
		return fmt.Errorf("port %s: %w", h, err)
	}
	return sock.Close()
}
