package registry

import "time"

// SetClock has h's remembered misses read the time from now.
func SetClock(h *Handler, now func() time.Time) {
	h.misses.now = now
	h.peerMisses.now = now
}
