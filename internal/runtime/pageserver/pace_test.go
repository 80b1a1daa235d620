package pageserver

import (
	"encoding/binary"
	"testing"
	"time"
)

func get(nr uint64) []byte {
	b := request(cmdGet | 1<<16) // PS_IOV_GET of a pid's pages
	binary.LittleEndian.PutUint64(b[nrOffset:], nr)
	binary.LittleEndian.PutUint64(b[16:], 0x7f0000000000)
	return b
}

func pages(b []byte) uint64 { return binary.LittleEndian.Uint64(b[nrOffset:]) }

// TestPacer: background reads are capped, to one page right after a fault
// and to BackgroundPages for a while after, and go whole before any fault
// and once faults have stopped; the address and other requests stay as
// they are.
func TestPacer(t *testing.T) {
	var p Pacer
	t0 := time.Unix(1000, 0)
	step := func(b []byte, at time.Duration) []byte {
		p.Pace(b, t0.Add(at))
		return b
	}
	if b := step(get(1024), 0); pages(b) != 1024 {
		t.Errorf("a 1024-page read before any fault: %d pages, want it whole", pages(b))
	}
	if b := step(get(16), 0); pages(b) != 16 {
		t.Errorf("a 16-page read: %d pages, want it whole", pages(b))
	}
	if b := step(get(1), time.Millisecond); pages(b) != 1 {
		t.Errorf("a fault: %d pages", pages(b))
	}
	b := step(get(16), 5*time.Millisecond)
	if pages(b) != 1 {
		t.Errorf("a read 4 ms after a fault: %d pages, want 1", pages(b))
	}
	if binary.LittleEndian.Uint64(b[16:]) != 0x7f0000000000 {
		t.Errorf("the address changed")
	}
	if b := step(get(1024), 12*time.Millisecond); pages(b) != BackgroundPages {
		t.Errorf("a read 11 ms after the fault: %d pages, want %d", pages(b), BackgroundPages)
	}
	if b := step(get(1024), 101*time.Millisecond); pages(b) != 1024 {
		t.Errorf("a read 100 ms after the fault: %d pages, want it whole", pages(b))
	}
	for _, cmd := range []uint32{cmdClose, cmdForceClose, 1} {
		b := request(cmd)
		binary.LittleEndian.PutUint64(b[nrOffset:], 1024)
		if p.Pace(b, t0.Add(time.Millisecond)); pages(b) != 1024 {
			t.Errorf("command %#x changed: %d", cmd, pages(b))
		}
	}
}
