package vip

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// getElements fetches the data of the elements with the given keys from
// one map, in request order. It asks for each key instead of dumping the
// map: the kernel re-walks every element already sent for each part of a
// dump, which makes reading 250,000 elements take seconds instead of
// milliseconds. A missing key is an error.
func (p *Programmer) getElements(name string, keys [][]byte) ([][]byte, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ns := 0
	if p.nsFd >= 0 {
		ns = p.nsFd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ns})
	if err != nil {
		return nil, fmt.Errorf("map %s: netlink: %w", name, err)
	}
	defer c.Close()
	if err := bigBuffers(c); err != nil {
		return nil, fmt.Errorf("map %s: socket buffers: %w", name, err)
	}
	byKey := make(map[string][]byte, len(keys))
	for chunk := range slices.Chunk(keys, elemsPerMsg) {
		if err := p.getChunk(c, name, chunk, byKey); err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
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

func (p *Programmer) getChunk(c *netlink.Conn, name string, keys [][]byte, byKey map[string][]byte) error {
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
	req, err := c.Send(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append([]byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return err
	}
	// One reply per key, then the acknowledgement.
	for {
		msgs, err := c.Receive()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Sequence != req.Header.Sequence {
				continue
			}
			if m.Header.Type == netlink.Error {
				return nil
			}
			k, v, err := decodeElem(m.Data)
			if err != nil {
				return err
			}
			byKey[string(k)] = v
		}
	}
}

// decodeElem reads the key and data of a single-element NEWSETELEM reply.
func decodeElem(b []byte) (key, val []byte, err error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("short element reply")
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return nil, nil, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				list.Nested(func(el *netlink.AttributeDecoder) error {
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							key = dataValue(el.Bytes())
						case unix.NFTA_SET_ELEM_DATA:
							val = dataValue(el.Bytes())
						}
					}
					return nil
				})
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return nil, nil, err
	}
	if key == nil {
		return nil, nil, fmt.Errorf("element reply without a key")
	}
	return key, val, nil
}

func dataValue(b []byte) []byte {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_DATA_VALUE {
			return slices.Clone(ad.Bytes())
		}
	}
	return nil
}
