package pageserver

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func request(cmd uint32) []byte {
	b := make([]byte, RequestSize)
	binary.LittleEndian.PutUint32(b, cmd)
	return b
}

// oneWrite records each Write it gets, to see requests go whole.
type oneWrite struct{ writes [][]byte }

func (w *oneWrite) Write(b []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), b...))
	return len(b), nil
}

// TestForward: requests go on one whole request a Write, and a stream
// whose last request is a close (with flags in the high bits, as CRIU
// encodes them) is told apart from one cut before it.
func TestForward(t *testing.T) {
	get := request(7 | 1<<16) // PS_IOV_GET of a pid's pages
	for _, tc := range []struct {
		name  string
		in    [][]byte
		ended bool
	}{
		{"force close", [][]byte{get, get, request(0x1024)}, true},
		{"close", [][]byte{get, request(0x1023)}, true},
		{"cut before the close", [][]byte{get, get}, false},
		{"nothing", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &oneWrite{}
			ended, err := Forward(w, bytes.NewReader(bytes.Join(tc.in, nil)))
			if err != nil || ended != tc.ended {
				t.Fatalf("Forward: ended %v, %v; want %v", ended, err, tc.ended)
			}
			if len(w.writes) != len(tc.in) {
				t.Fatalf("%d writes for %d requests", len(w.writes), len(tc.in))
			}
			for i, b := range w.writes {
				if !bytes.Equal(b, tc.in[i]) {
					t.Errorf("write %d: %x, want %x", i, b, tc.in[i])
				}
			}
		})
	}
	// A request cut in the middle is not sent.
	w := &oneWrite{}
	if ended, _ := Forward(w, bytes.NewReader(append(get, request(0x1024)[:10]...))); ended || len(w.writes) != 1 {
		t.Errorf("a half request: ended %v after %d writes, want false after 1", ended, len(w.writes))
	}
}

// TestPoison: the poison is one whole request, not one that ends the
// transfer, and its command is none of CRIU's (1-7, 0x1023, 0x1024).
func TestPoison(t *testing.T) {
	p := Poison()
	if len(p) != RequestSize || Ends(p) {
		t.Fatalf("Poison: %d bytes, ends %v", len(p), Ends(p))
	}
	switch c := binary.LittleEndian.Uint32(p) & cmdMask; c {
	case 1, 2, 3, 4, 5, 6, 7, cmdClose, cmdForceClose:
		t.Errorf("Poison's command %#x is one CRIU knows", c)
	}
}
