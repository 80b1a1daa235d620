package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestStartupInitsAreLight runs `berth version` with the Go runtime's
// init trace and fails when one of berth's own packages does heavy work
// in its initialiser. Every command of the one binary (berth exec in a
// loop, a completion script) runs every package initialiser before main:
// a regular expression, a table or a registration built there is paid by
// all of them, so berth compiles and builds such things on first use.
// The trace's allocation figures are deterministic, unlike its times.
// Nor does the collector run in so short a command (see internal/initgc):
// at Go's default pace the initialisers' allocations set it off. The
// libraries' initialisers are held to a budget of their own, all
// together: compose-go from v2.8 on validates with a JSON schema library
// that compiles five meta-schemas in its initialiser (1.7 MB, 9 ms of
// every command's start, some 400 page faults), which is why go.mod
// holds compose-go at v2.6.3.
func TestStartupInitsAreLight(t *testing.T) {
	const budget = 16 << 10   // bytes one berth package may allocate in its initialiser
	const allBudget = 3 << 20 // bytes all initialisers may allocate together
	cmd := exec.Command(berthBin, "version", "--data-dir", t.TempDir())
	// A GOGC of the caller's would set the pace itself.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOGC=") })
	cmd.Env = append(env, "GODEBUG=inittrace=1,gctrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run() // no server to reach: only the trace matters
	seen, total := 0, 0
	type heavy struct {
		pkg   string
		bytes int
	}
	var heaviest []heavy
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "gc ") {
			t.Errorf("the collector ran in `berth version`: %s", sc.Text())
		}
		// init PKG @T ms, T ms clock, BYTES bytes, N allocs
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] != "init" || f[8] != "bytes," {
			continue
		}
		bytes, err := strconv.Atoi(f[7])
		if err != nil {
			t.Fatalf("unreadable init trace line %q", sc.Text())
		}
		seen++
		total += bytes
		heaviest = append(heaviest, heavy{f[1], bytes})
		if strings.HasPrefix(f[1], "github.com/berth-dev/berth/") && bytes > budget {
			t.Errorf("%s allocates %d bytes (%s allocs) in its initialiser, more than %d: build it on first use", f[1], bytes, f[9], budget)
		}
	}
	if seen < 100 {
		t.Fatalf("only %d init trace lines from `berth version`:\n%s", seen, stderr.String())
	}
	if total > allBudget {
		slices.SortFunc(heaviest, func(a, b heavy) int { return b.bytes - a.bytes })
		var top []string
		for _, h := range heaviest[:min(5, len(heaviest))] {
			top = append(top, fmt.Sprintf("%s %d kB", h.pkg, h.bytes>>10))
		}
		t.Errorf("the %d package initialisers allocate %d kB, more than %d kB; the heaviest: %s", seen, total>>10, allBudget>>10, strings.Join(top, ", "))
	}
	t.Logf("%d package initialisers allocate %d kB", seen, total>>10)
}
