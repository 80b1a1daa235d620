package runtimetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime"
)

// linkLayer makes an image layer holding dirs and the symbolic links
// links (path in the image -> target).
func linkLayer(t *testing.T, dirs []string, links map[string]string) string {
	t.Helper()
	layer := t.TempDir()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(layer, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for l, target := range links {
		if err := os.MkdirAll(filepath.Join(layer, filepath.Dir(l)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(layer, l)); err != nil {
			t.Fatal(err)
		}
	}
	return layer
}

// testMountsThroughLinks: a mount asked at a path the image links
// elsewhere lands where the link leads inside the container, as Docker
// puts it (Debian's /var/run -> /run, Alpine's relative links), keeps its
// options, and never reaches the host, whatever the link says.
func (h *harness) testMountsThroughLinks(t *testing.T) {
	t.Run("VarRun", h.mountsVarRun)
	t.Run("HostTargets", h.mountsHostTargets)
	t.Run("Refused", h.mountsRefused)
	if h.executor == runtime.ExecutorBuiltin {
		t.Run("PlantedBeforeRestart", h.mountsPlantedBeforeRestart)
	}
}

func (h *harness) mountsVarRun(t *testing.T) {
	rw, ro := t.TempDir(), t.TempDir()
	c := h.config(t, "sh", "-c", `echo hi > /run/app/f && cat /var/run/app/f && grep -o ' /run/app \S*' /proc/self/mountinfo;
		echo x > /run/lock/ro/x || echo ro-refused; grep -o ' /run/lock/ro \S*' /proc/self/mountinfo`)
	// Debian's absolute link and Alpine's relative one.
	c.LowerDirs = []string{linkLayer(t, []string{"run/lock"}, map[string]string{"var/run": "/run", "var/lock": "../run/lock"}), h.rootfs}
	c.Mounts = []specs.Mount{
		{Destination: "/var/run/app", Type: "bind", Source: rw, Options: []string{"rbind"}},
		{Destination: "/var/lock/ro", Type: "bind", Source: ro, Options: []string{"rbind", "ro"}},
	}
	st, out := h.runToEnd(t, c)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d:\n%s", st.ExitCode, out)
	}
	if b, _ := os.ReadFile(filepath.Join(rw, "f")); string(b) != "hi\n" {
		t.Errorf("the volume at /var/run/app holds %q, want what the container wrote at /run/app/f\n%s", b, out)
	}
	for _, want := range []string{"hi\n", " /run/app rw", "ro-refused", " /run/lock/ro ro"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if ents, _ := os.ReadDir(ro); len(ents) != 0 {
		t.Errorf("the read-only volume got %v", ents)
	}
}

func (h *harness) mountsHostTargets(t *testing.T) {
	hostDir := t.TempDir()
	hostFile := filepath.Join(hostDir, "host-file")
	if err := os.WriteFile(hostFile, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	volFile := filepath.Join(t.TempDir(), "vol-file")
	if err := os.WriteFile(volFile, []byte("volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vol := t.TempDir()
	etcName := fmt.Sprintf("berth-link-%d-%s", os.Getpid(), h.executor)
	hostEtc := filepath.Join("/etc", etcName)
	t.Cleanup(func() { _ = os.RemoveAll(hostEtc) })
	c := h.config(t, "sh", "-c", fmt.Sprintf(`cat %s; echo x > /up/sub/x; echo y > /etc/%s/y && echo etc-written;
		grep -o ' %s/host-file \S*' /proc/self/mountinfo; true`, hostFile, etcName, hostDir))
	c.LowerDirs = []string{linkLayer(t, nil, map[string]string{
		"data": hostDir, "up": "../../../../../../.." + hostDir, "cfg": "/etc",
	}), h.rootfs}
	c.Mounts = []specs.Mount{
		{Destination: "/data/host-file", Type: "bind", Source: volFile, Options: []string{"bind"}},
		{Destination: "/up/sub", Type: "bind", Source: vol, Options: []string{"rbind"}},
		{Destination: "/cfg/" + etcName, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}},
	}
	st, out := h.runToEnd(t, c)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d:\n%s", st.ExitCode, out)
	}
	// Inside, each link was followed within the container's tree.
	for _, want := range []string{"volume\n", "etc-written", " " + hostFile + " "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(vol, "x")); string(b) != "x\n" {
		t.Errorf("the volume at /up/sub holds %q, want the container's x", b)
	}
	// Outside, the host's paths are untouched.
	if b, _ := os.ReadFile(hostFile); string(b) != "host\n" {
		t.Errorf("the host file was written through the image's link: %q", b)
	}
	if ents, _ := os.ReadDir(hostDir); len(ents) != 1 {
		t.Errorf("the host directory got entries through the image's link: %v", ents)
	}
	if _, err := os.Lstat(hostEtc); err == nil {
		t.Errorf("%s was made on the host through the image's link to /etc", hostEtc)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mounts, []byte(hostDir)) || bytes.Contains(mounts, []byte(hostEtc)) {
		t.Errorf("something is mounted on the host's %s or %s", hostDir, hostEtc)
	}
}

// mountsRefused: links that loop, or send a volume into /proc, refuse
// the start with an error naming the destination asked.
func (h *harness) mountsRefused(t *testing.T) {
	layer := linkLayer(t, nil, map[string]string{"a": "b", "b": "/a", "p": "/proc/sys/kernel"})
	for _, tc := range []struct{ dest, want string }{
		{"/a/x", "loop"},
		{"/p/x", "inside /proc"},
	} {
		c := h.config(t, "true")
		c.LowerDirs = []string{layer, h.rootfs}
		c.Mounts = []specs.Mount{{Destination: tc.dest, Type: "tmpfs", Source: "tmpfs"}}
		_, err := h.r.Run(context.Background(), c)
		if err == nil {
			_ = h.r.Delete(context.Background(), c.ID, true)
			t.Errorf("mount at %s: the container started", tc.dest)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "mount destination "+tc.dest+":") || !strings.Contains(msg, tc.want) {
			t.Errorf("mount at %s: error %q, want one naming it and saying %q", tc.dest, msg, tc.want)
		}
	}
}

// mountsPlantedBeforeRestart: the container's own layer keeps what a run
// made. A run that replaces the image's /var/run link with one to a host
// path does not lead the restart's mount there: the restart mounts where
// the start resolved, /run/app (no path on the way to a mount point can
// be changed while it is mounted, and the init refuses any link it finds).
func (h *harness) mountsPlantedBeforeRestart(t *testing.T) {
	hostDir, vol := t.TempDir(), t.TempDir()
	c := h.config(t, "sh", "-c", fmt.Sprintf(`if [ "$(readlink /var/run)" = %[1]s ]; then echo again > /var/run/app/again; echo > /run/app/second; exit 0; fi
		rm /var/run && ln -s %[1]s /var/run && exit 1`, hostDir))
	c.LowerDirs = []string{linkLayer(t, []string{"run"}, map[string]string{"var/run": "/run"}), h.rootfs}
	c.Mounts = []specs.Mount{{Destination: "/var/run/app", Type: "bind", Source: vol, Options: []string{"rbind"}}}
	c.Restart = runtime.RestartPolicy{Name: runtime.RestartOnFailure, MaxRetries: 1}
	h.run(t, c)
	st := h.wait(t, c.ID)
	if st.Restarts != 1 || st.ExitCode != 0 {
		t.Errorf("exit %d after %d restarts, want 0 after 1\n%s", st.ExitCode, st.Restarts, h.logs(t, c.ID))
	}
	if _, err := os.Stat(filepath.Join(vol, "second")); err != nil {
		t.Errorf("the restarted container's /run/app is not the volume: %v", err)
	}
	if ents, _ := os.ReadDir(hostDir); len(ents) != 0 {
		t.Errorf("the restart made %v in the host directory the planted link names", ents)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mounts, []byte(hostDir)) {
		t.Errorf("something is mounted on the host directory %s", hostDir)
	}
}
