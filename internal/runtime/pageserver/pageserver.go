// Package pageserver knows the requests a CRIU lazy-pages daemon sends
// a page server, as far as a relay between them must: where one ends,
// which ends the transfer, and one the page server refuses.
//
// A relay needs this because CRIU's page server reads a connection
// closed before the daemon's close request as a finished transfer, after
// which the dumped processes are killed: a relay that loses the daemon
// must not pass the close on, and makes the transfer fail instead.
package pageserver

import (
	"encoding/binary"
	"io"
)

// RequestSize is the size of CRIU's struct page_server_iov: u32 cmd,
// then u64 nr_pages, vaddr and dst_id, 8-aligned, little-endian here.
const RequestSize = 32

// The commands that end a transfer (CRIU's PS_IOV_CLOSE and
// PS_IOV_FORCE_CLOSE), in the low 16 bits of cmd.
const (
	cmdClose      = 0x1023
	cmdForceClose = 0x1024
	cmdMask       = 1<<16 - 1
)

// Ends reports whether request b asks the page server to end the transfer.
func Ends(b []byte) bool {
	c := binary.LittleEndian.Uint32(b) & cmdMask
	return c == cmdClose || c == cmdForceClose
}

// Poison is a request whose command CRIU does not know: the page server
// fails the transfer, so a dump lets its processes run on.
func Poison() []byte {
	b := make([]byte, RequestSize)
	binary.LittleEndian.PutUint32(b, cmdMask)
	return b
}

// Forward copies requests from r to w, one whole request a Write, until r
// ends, and reports whether the last one asked to end the transfer.
func Forward(w io.Writer, r io.Reader) (ended bool, err error) {
	buf := make([]byte, RequestSize)
	for {
		if _, err := io.ReadFull(r, buf); err != nil {
			if err == io.EOF {
				err = nil
			}
			return ended, err
		}
		ended = Ends(buf)
		if _, err := w.Write(buf); err != nil {
			return ended, err
		}
	}
}
