package memlimit

import (
	"errors"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Limit
	}{
		{"auto", Limit{Auto: true}},
		{" auto ", Limit{Auto: true}},
		{"50%", Limit{Percent: 50}},
		{"12.5%", Limit{Percent: 12.5}},
		{"100%", Limit{Percent: 100}},
		{"3Gi", Limit{Bytes: 3 << 30}},
		{"1536Mi", Limit{Bytes: 1536 << 20}},
		{"none", Limit{Off: true}},
		{"0", Limit{Off: true}},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if again, err := Parse(got.String()); err != nil || again != got {
			t.Errorf("Parse(%q.String() = %q) = %+v, %v", tc.in, got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "0%", "101%", "-5%", "x%", "lots", "Auto", "auto%", "-1Gi", "1Mi", "NaN%"} {
		if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), "memory limit") {
			t.Errorf("Parse(%q): error %v, want one naming the memory limit", bad, err)
		}
	}
}

// keepLimit puts the test process's own limit back when the test ends.
func keepLimit(t *testing.T) {
	was := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(was) })
}

// TestSet: a size is taken as it is, a percentage of the memory the
// process may use, none lifts the limit, and the runtime holds what Set
// says.
func TestSet(t *testing.T) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		t.Skip("GOMEMLIMIT is set for this test process")
	}
	keepLimit(t)
	mem := func() (int64, error) { return 8 << 30, nil }
	for _, tc := range []struct {
		l    Limit
		want int64
		src  string
	}{
		{Limit{Bytes: 3 << 30}, 3 << 30, "--memory-limit 3Gi"},
		{Limit{Percent: 50}, 4 << 30, "--memory-limit 50% of 8.0 GiB"},
		{Limit{Percent: 0.001}, Minimum, "--memory-limit 0.001% of 8.0 GiB"},
		{Limit{Off: true}, math.MaxInt64, "none"},
	} {
		a, err := Set(t.Context(), tc.l, mem)
		if err != nil {
			t.Fatalf("Set(%v): %v", tc.l, err)
		}
		if a.Bytes != tc.want || a.Source != tc.src {
			t.Errorf("Set(%v) = %+v, want %d from %q", tc.l, a, tc.want, tc.src)
		}
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Errorf("Set(%v): the runtime's limit is %d, want %d", tc.l, got, tc.want)
		}
	}
	debug.SetMemoryLimit(5 << 30)
	if a, err := Set(t.Context(), Limit{}, mem); err != nil || a.Bytes != 5<<30 || debug.SetMemoryLimit(-1) != 5<<30 {
		t.Errorf("Set(zero Limit) = %+v, %v; want the runtime's limit left at 5 GiB", a, err)
	}
	if _, err := Set(t.Context(), Limit{Percent: 50}, func() (int64, error) { return 0, errors.New("no meminfo") }); err == nil || !strings.Contains(err.Error(), "no meminfo") {
		t.Errorf("Set with the memory unknown: error %v, want it passed on", err)
	}
}

// TestSetLeavesGOMEMLIMIT: an operator's GOMEMLIMIT wins over the flag.
func TestSetLeavesGOMEMLIMIT(t *testing.T) {
	keepLimit(t)
	t.Setenv("GOMEMLIMIT", "2GiB")
	debug.SetMemoryLimit(2 << 30) // what the runtime took from it at start
	a, err := Set(t.Context(), Limit{Bytes: 3 << 30}, nil)
	if err != nil || a.Bytes != 2<<30 || a.Source != "GOMEMLIMIT=2GiB" {
		t.Errorf("Set = %+v, %v; want GOMEMLIMIT's 2 GiB", a, err)
	}
	if got := debug.SetMemoryLimit(-1); got != 2<<30 {
		t.Errorf("the runtime's limit is %d, want GOMEMLIMIT's", got)
	}
}
