package pageserver

import (
	"encoding/binary"
	"time"
)

// Pacing. The lazy-pages daemon asks for a faulting page (one page) and,
// meanwhile, for the rest of the memory in background reads that grow to
// 4 MiB each. The page server answers in order, so a fault waits for the
// background read ahead of it to cross: over a relay of a few tens of
// MB/s that is milliseconds a fault, and a restored server faulting in
// the pages of its first request does so a hundred times in a row, the
// client waiting. A Pacer shortens the background reads (the daemon takes
// a short answer as it is and asks for the rest later): while faults
// come, to one page, so each waits for one page at most; for a while
// after, to BackgroundPages, so that the next fault waits little; once the
// process has stopped faulting, not at all, so the rest of the memory
// comes at full speed and the time both nodes are needed stays short.

const (
	cmdGet = 7 // CRIU's PS_IOV_GET
	// nrOffset is where nr_pages sits in a request.
	nrOffset = 8
)

// BackgroundPages is the most a background read asks for at once (256
// KiB) within quietWindow of a fault: a fault then waits for that much at
// most, while the transfer still moves far more per round trip than it
// waits.
const BackgroundPages = 64

// faultWindow is how long after a fault reads stay one page: a restored
// process faults again within a round trip or two while it runs.
// quietWindow is how long after one they stay BackgroundPages.
const (
	faultWindow = 10 * time.Millisecond
	quietWindow = 100 * time.Millisecond
)

// Pacer shortens the page reads of one transfer (see above). Its zero
// value is ready; it is not safe for concurrent use.
type Pacer struct {
	lastFault time.Time
}

// Pace shortens request b in place, as it passes at now: a read of more
// than one page gets one page while a fault came within faultWindow, and
// BackgroundPages at most while one came within quietWindow. A read of
// one page is taken for a fault. Other requests pass as they are.
func (p *Pacer) Pace(b []byte, now time.Time) {
	if len(b) < RequestSize || binary.LittleEndian.Uint32(b)&cmdMask != cmdGet {
		return
	}
	n := binary.LittleEndian.Uint64(b[nrOffset:])
	if n <= 1 {
		p.lastFault = now
		return
	}
	if p.lastFault.IsZero() {
		return
	}
	limit := uint64(BackgroundPages)
	switch since := now.Sub(p.lastFault); {
	case since < faultWindow:
		limit = 1
	case since >= quietWindow:
		return
	}
	if n > limit {
		binary.LittleEndian.PutUint64(b[nrOffset:], limit)
	}
}
