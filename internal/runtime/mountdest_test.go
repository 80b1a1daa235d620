package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// The built-in executor's destinations are resolved in the view its
// overlay will give: the writable layer's links (planted by an earlier
// run, brought back by a restore) and whiteouts count over the image's,
// and every link stays in the container's tree.
func TestResolveMountsInLayers(t *testing.T) {
	testenv.RequireRoot(t)
	lower, upper := t.TempDir(), t.TempDir()
	for _, d := range []string{"srv", "run", "plain"} {
		if err := os.Mkdir(filepath.Join(lower, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"var/run": "/run", "gone": "/etc"} {
		_ = os.MkdirAll(filepath.Join(lower, filepath.Dir(link)), 0o755)
		if err := os.Symlink(target, filepath.Join(lower, link)); err != nil {
			t.Fatal(err)
		}
	}
	// The writable layer replaced the image's /srv with a link out, and
	// removed its /gone link (a whiteout).
	if err := os.Symlink("../../../etc", filepath.Join(upper, "srv")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(upper, "gone"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bd := &bundle{id: "resolve", dir: t.TempDir()}
	if err := os.Rename(upper, bd.path("upper")); err != nil {
		t.Fatal(err)
	}
	c := &Config{LowerDirs: []string{lower}, Mounts: []specs.Mount{
		{Destination: "/srv/app", Type: "tmpfs"},
		{Destination: "/var/run/x/", Type: "tmpfs"},
		{Destination: "/gone/x", Type: "tmpfs"},
		{Destination: "/run", Type: "tmpfs"},
		{Destination: "/var/run/f", Type: "bind", Source: file},
		{Destination: "/plain/../var/run/y", Type: "tmpfs"},
	}}
	got, err := resolveMounts(bd, c, bd.path("rootfs"), true)
	if err != nil {
		t.Fatal(err)
	}
	var dests []string
	for _, m := range got {
		dests = append(dests, m.Destination)
	}
	// Ordered by depth: /run before what is mounted below it.
	want := "/run /etc/app /run/x /gone/x /run/f /run/y"
	if strings.Join(dests, " ") != want {
		t.Errorf("destinations %q, want %q", strings.Join(dests, " "), want)
	}
	if c.Mounts[0].Destination != "/srv/app" {
		t.Errorf("the config's own mounts were changed: %v", c.Mounts[0])
	}
	if mounts, _ := MountsUnder(bd.dir); len(mounts) != 0 {
		t.Errorf("the view is left mounted: %v", mounts)
	}
	if ents, err := os.ReadDir(bd.path(resolveView)); err != nil || len(ents) != 0 {
		t.Errorf("the view's directory holds %v (%v), want it empty", ents, err)
	}
	// Where no layer has a link on the way, nothing is mounted to look;
	// the order is by depth all the same.
	if err := os.Remove(bd.path(resolveView)); err != nil {
		t.Fatal(err)
	}
	c.Mounts = []specs.Mount{{Destination: "/plain/x/y", Type: "tmpfs"}, {Destination: "/plain", Type: "tmpfs"}}
	if got, err := resolveMounts(bd, c, bd.path("rootfs"), true); err != nil || len(got) != 2 || got[0].Destination != "/plain" || got[1].Destination != "/plain/x/y" {
		t.Errorf("plain destinations: %v, %v; want /plain then /plain/x/y", got, err)
	}
	if _, err := os.Stat(bd.path(resolveView)); !os.IsNotExist(err) {
		t.Errorf("a view was made for destinations with no link on the way: %v", err)
	}
}
