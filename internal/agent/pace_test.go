package agent_test

import (
	"sync"
	"testing"
	"time"
)

// calls records when a counted call was made. The pace tests judge the
// agent's timers by these times, never by how many calls fit a fixed
// window of wall time: on a loaded machine every timer runs late, which
// shrinks such a count without the agent doing anything wrong.
type calls struct {
	mu    sync.Mutex
	times []time.Time
}

func (c *calls) add() {
	c.mu.Lock()
	c.times = append(c.times, time.Now())
	c.mu.Unlock()
}

func (c *calls) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.times)
}

// wait waits until the calls number at least n, failing t after timeout
// (a bound for a stuck agent, not a measure of its pace), and returns the
// time of the nth.
func (c *calls) wait(t *testing.T, n int, timeout time.Duration, what string) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		if len(c.times) >= n {
			at := c.times[n-1]
			c.mu.Unlock()
			return at
		}
		got := len(c.times)
		c.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d %s after %v", got, n, what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spacedAtLeast checks that the k gaps after call number from span at
// least k-1 periods of d, the spare period taking up the delay between a
// timer's firing and the call it leads to. Late timers only widen the
// span, so load cannot fail this; calls at a faster pace than d do.
func (c *calls) spacedAtLeast(t *testing.T, from, k int, d time.Duration, what string) {
	t.Helper()
	first := c.wait(t, from+1, 10*time.Second, what)
	last := c.wait(t, from+k+1, time.Duration(k+1)*d+10*time.Second, what)
	span := last.Sub(first).Round(time.Millisecond)
	if span < time.Duration(k-1)*d {
		t.Errorf("%d %s in %v, want one each %v at most (%v or more)", k, what, span, d, time.Duration(k-1)*d)
		return
	}
	t.Logf("%d %s in %v", k, what, span)
}

// countOverTicks counts the calls made over n ticks of the test's own
// ticker of period d. A load that makes the agent's timers late makes
// this ticker late too, so the count measures the agent's pace against
// d rather than the machine's speed.
func (c *calls) countOverTicks(n int, d time.Duration) int {
	tk := time.NewTicker(d)
	defer tk.Stop()
	from := c.n()
	for range n {
		<-tk.C
	}
	return c.n() - from
}
