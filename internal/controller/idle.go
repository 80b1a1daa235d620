package controller

import "time"

// NextIdle is the wait after a quiet pass that waited idle: twice as
// long, up to most. Work that a watch drives checks on itself by it, so
// that a quiet system wakes ever less often yet within most: the
// controller's passes and the agent's resyncs and disk checks.
func NextIdle(idle, most time.Duration) time.Duration { return min(2*idle, most) }
