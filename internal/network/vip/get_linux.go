package vip

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/network/netns"
)

// getElements fetches the data of the elements with the given keys from
// one map, in request order. It asks for each key instead of dumping the
// map: the kernel re-walks every element already sent for each part of a
// dump, which makes reading 250,000 elements take seconds instead of
// milliseconds. A missing key is an error.
//
// The kernel answers each key with its own message, so the replies are
// read with a plain socket and one reused buffer: per-message allocation
// was most of the time.
func (p *Programmer) getElements(name string, keys [][]byte) ([][]byte, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	fd, err := p.rawSocket()
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", name, err)
	}
	defer unix.Close(fd)
	byKey := make(map[string][]byte, len(keys))
	buf := make([]byte, 1<<20)
	seq := uint32(1)
	for chunk := range slices.Chunk(keys, elemsPerMsg) {
		if err := p.getChunk(fd, buf, seq, name, chunk, byKey); err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
		seq++
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		v, ok := byKey[string(k)]
		if !ok {
			return nil, fmt.Errorf("map %s: no element %x in the reply", name, k)
		}
		out[i] = v
	}
	return out, nil
}

// rawSocket opens a netfilter netlink socket in the programmer's namespace.
func (p *Programmer) rawSocket() (int, error) {
	fd := -1
	open := func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	}
	var err error
	if p.cfg.NetNS != "" {
		err = netns.Do(p.cfg.NetNS, open)
	} else {
		err = open()
	}
	if err != nil {
		return -1, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netlink socket buffer: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netlink bind: %w", err)
	}
	return fd, nil
}

func (p *Programmer) getChunk(fd int, buf []byte, seq uint32, name string, keys [][]byte, byKey map[string][]byte) error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, p.cfg.Table)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, name)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ne *netlink.AttributeEncoder) error {
		for _, k := range keys {
			ne.Nested(unix.NFTA_LIST_ELEM, func(ee *netlink.AttributeEncoder) error {
				ee.Nested(unix.NFTA_SET_ELEM_KEY, func(ke *netlink.AttributeEncoder) error {
					ke.Bytes(unix.NFTA_DATA_VALUE, k)
					return nil
				})
				return nil
			})
		}
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+4+len(attrs))
	msg = append(msg, unix.AF_INET, unix.NFNETLINK_V0, 0, 0)
	msg = append(msg, attrs...)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETSETELEM)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	// One reply per key, then the acknowledgement.
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("malformed netlink message")
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			mseq := binary.NativeEndian.Uint32(b[8:])
			body := b[unix.NLMSG_HDRLEN:l]
			b = b[min(len(b), nlAlign(l)):]
			if mseq != seq {
				continue
			}
			if typ == unix.NLMSG_ERROR {
				if len(body) < 4 {
					return fmt.Errorf("short netlink error")
				}
				if errno := int32(binary.NativeEndian.Uint32(body)); errno != 0 {
					return unix.Errno(-errno)
				}
				return nil
			}
			k, v := decodeElem(body)
			if k == nil {
				return fmt.Errorf("element reply without a key")
			}
			byKey[string(k)] = v
		}
	}
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// walkAttrs calls f for each netlink attribute in b.
func walkAttrs(b []byte, f func(typ uint16, v []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return
		}
		f(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[4:l])
		b = b[min(len(b), nlAlign(l)):]
	}
}

// decodeElem reads the key and data of a single-element NEWSETELEM reply
// (after the netlink header), copying them.
func decodeElem(body []byte) (key, val []byte) {
	if len(body) < 4 {
		return nil, nil
	}
	value := func(b []byte) (out []byte) {
		walkAttrs(b, func(t uint16, v []byte) {
			if t == unix.NFTA_DATA_VALUE {
				out = slices.Clone(v)
			}
		})
		return out
	}
	walkAttrs(body[4:], func(t uint16, v []byte) {
		if t != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			return
		}
		walkAttrs(v, func(t uint16, v []byte) {
			if t != unix.NFTA_LIST_ELEM {
				return
			}
			walkAttrs(v, func(t uint16, v []byte) {
				switch t {
				case unix.NFTA_SET_ELEM_KEY:
					key = value(v)
				case unix.NFTA_SET_ELEM_DATA:
					val = value(v)
				}
			})
		})
	})
	return key, val
}
