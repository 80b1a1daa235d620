// Package imagetest builds the demo busybox rootfs and image inside tests,
// offline, from the host's static busybox (Debian's busybox-static).
package imagetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// BusyboxPath is where busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// BusyboxTag is the name BusyboxImage stores the image under.
const BusyboxTag = "demo/busybox:1"

// BusyboxRootfs returns a new directory holding a minimal rootfs: busybox
// and its applet links in /bin, /etc/passwd and /etc/group with root and
// nobody, /www/index.html ("hello from berth") and a sticky /tmp. It is the
// same tree scripts/demo-image.sh builds.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		testenv.SkipOrFail(t, "busybox-static is not installed: "+err.Error())
	}
	dir := t.TempDir()
	if err := WriteBusyboxRootfs(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// WriteBusyboxRootfs fills the empty directory dir with the busybox rootfs.
func WriteBusyboxRootfs(dir string) error {
	for _, d := range []string{"bin", "etc", "tmp", "www", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	data, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	list, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox rootfs: %s --list: %w", BusyboxPath, err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":      "root:x:0:\nnogroup:x:65534:\n",
		"www/index.html": "hello from berth\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	return nil
}

// BusyboxImage builds the busybox rootfs into s as demo/busybox:1 with
// "sh" as its command, and returns the image.
func BusyboxImage(t testing.TB, s *image.Store) image.Image {
	t.Helper()
	dir := BusyboxRootfs(t)
	img, err := s.Build(context.Background(), dir, image.BuildOptions{Tag: BusyboxTag, Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}
