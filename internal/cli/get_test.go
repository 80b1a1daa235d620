package cli

import "testing"

// A pinned reference reads as its tag in a table and gets a short digest
// in wide output; an unpinned one is shown as it is.
func TestImageColumn(t *testing.T) {
	const pinned = "demo/busybox:1@sha256:5bc150647eb6a908b0b7e089caa0f664c40d37cd978f8179391d530263f202bc"
	for _, tc := range []struct {
		ref  string
		wide bool
		want string
	}{
		{pinned, false, "demo/busybox:1"},
		{pinned, true, "demo/busybox:1@5bc150647eb6"},
		{"registry:5000/app@sha256:5bc150647eb6a908b0b7e089caa0f664c40d37cd978f8179391d530263f202bc", false, "registry:5000/app@5bc150647eb6"},
		{"demo/busybox:1", false, "demo/busybox:1"},
		{"demo/busybox:1", true, "demo/busybox:1"},
	} {
		if got := imageColumn(tc.ref, tc.wide); got != tc.want {
			t.Errorf("imageColumn(%q, wide %v) = %q, want %q", tc.ref, tc.wide, got, tc.want)
		}
	}
}
