package initgc

import (
	"os"
	"runtime/debug"
	"sync"
	"testing"
)

// The pace is slow from the start and Go's own after Restore; a GOGC
// given in the environment is left as it is.
func TestRestore(t *testing.T) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		if held {
			t.Fatal("the pace was changed although GOGC is set")
		}
		return
	}
	if got := debug.SetGCPercent(startPercent); got != startPercent {
		t.Fatalf("pace at start %d, want %d", got, startPercent)
	}
	// Back to the state the process started in, for the next run of this
	// test in the same process (-count).
	t.Cleanup(func() {
		once = sync.Once{}
		debug.SetGCPercent(startPercent)
	})
	Restore()
	Restore()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("pace after Restore %d, want 100", got)
	}
}
