package agent

import (
	"bytes"
	"testing"
	"time"
)

// Lines before since are dropped, whatever the writes' boundaries, and
// the times the filter needed are stripped when not asked for.
func TestSinceWriter(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 500, time.UTC)
	in := "2026-01-02T03:04:05.000000499Z old\n2026-01-02T03:04:05.000000500Z at\n2026-01-02T03:04:06Z new\n"
	for _, strip := range []bool{true, false} {
		var out bytes.Buffer
		w := &sinceWriter{w: &out, since: since, strip: strip}
		for i := 0; i < len(in); i += 7 {
			_, _ = w.Write([]byte(in[i:min(i+7, len(in))]))
		}
		want := "at\nnew\n"
		if !strip {
			want = "2026-01-02T03:04:05.000000500Z at\n2026-01-02T03:04:06Z new\n"
		}
		if out.String() != want {
			t.Errorf("strip=%v: %q, want %q", strip, out.String(), want)
		}
	}
}
