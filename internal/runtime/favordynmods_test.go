package runtime_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// cgroup2Options reads the mount point and super options of the cgroup2
// mount FavorDynMods uses.
func cgroup2Options(t *testing.T) (string, []string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	point, super, ok := runtime.Cgroup2Mount(string(b))
	if !ok {
		t.Fatal("no cgroup2 mount")
	}
	return point, strings.Split(super, ",")
}

// mountOptions reads the per-mount options (nosuid, nodev...) of the mounts at point.
func mountOptions(t *testing.T, point string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var opts []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == point {
			opts = append(opts, f[5])
		}
	}
	return opts
}

// settable drops the superblock flags, which a reconfiguration keeps anyway.
func settable(opts []string) []string {
	return slices.DeleteFunc(slices.Clone(opts), func(o string) bool { return o == "rw" || o == "ro" })
}

// TestFavorDynMods changes the host's cgroup2 mount options and puts them
// back when it ends.
func TestFavorDynMods(t *testing.T) {
	runtimetest.RequireRoot(t)
	point, orig := cgroup2Options(t)
	perMount := mountOptions(t, point)
	t.Cleanup(func() {
		if err := runtime.ReconfigureCgroup2(point, settable(orig)); err != nil {
			t.Errorf("restore %s to %v: %v", point, orig, err)
		}
	})
	cleared := slices.DeleteFunc(settable(orig), func(o string) bool { return o == "favordynmods" })
	// A hybrid host's mount shows only rw: give it an option to keep.
	if !slices.Contains(cleared, "memory_recursiveprot") {
		cleared = append(cleared, "memory_recursiveprot")
	}
	if err := runtime.ReconfigureCgroup2(point, cleared); err != nil {
		t.Fatal(err)
	}
	_, before := cgroup2Options(t)
	if slices.Contains(before, "favordynmods") {
		t.Fatalf("favordynmods still set after clearing it: %v", before)
	}

	mount, changed, err := runtime.FavorDynMods()
	if err != nil {
		t.Fatal(err)
	}
	if mount != point {
		t.Errorf("FavorDynMods chose %s, want %s", mount, point)
	}
	if !changed {
		t.Error("FavorDynMods reported no change on a mount without favordynmods")
	}
	_, opts := cgroup2Options(t)
	if !slices.Contains(opts, "favordynmods") {
		t.Errorf("%s options %v: no favordynmods", point, opts)
	}
	for _, o := range before {
		if !slices.Contains(opts, o) {
			t.Errorf("%s options %v: lost %s (had %v)", point, opts, o, before)
		}
	}

	if got := mountOptions(t, point); !slices.Equal(got, perMount) {
		t.Errorf("%s per-mount options %v, had %v", point, got, perMount)
	}

	_, changed, err = runtime.FavorDynMods()
	if err != nil || changed {
		t.Errorf("second call: changed %v, err %v; want false, nil", changed, err)
	}
}
