// Package runtimetest holds the conformance suite every executor passes
// and the fixtures it needs.
package runtimetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// RequireRoot is testenv.RequireRoot, kept under this name for the
// runtime's tests.
func RequireRoot(t testing.TB) { t.Helper(); testenv.RequireRoot(t) }

// BusyboxRootfs builds a minimal busybox rootfs in a fresh directory.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	if _, err := busyboxPath(); err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("busybox-static is not installed: %v", err))
	}
	dir := t.TempDir()
	if err := WriteBusyboxRootfs(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func busyboxPath() (string, error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		bb = "/bin/busybox"
	}
	_, err = os.Stat(bb)
	return bb, err
}

// WriteBusyboxRootfs fills dir with a rootfs made from the host's static
// busybox: /bin with every applet, /etc/passwd and group, /tmp, /www.
func WriteBusyboxRootfs(dir string) error {
	bb, err := busyboxPath()
	if err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":      "root:x:0:\nnogroup:x:65534:\n",
		"www/index.html": "hello from berth\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// BusyboxWorkdir makes a temporary directory, named with prefix, holding
// a busybox rootfs (WriteBusyboxRootfs) at rootfs; the caller removes work.
func BusyboxWorkdir(prefix string) (work, rootfs string, err error) {
	work, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", "", err
	}
	rootfs = filepath.Join(work, "rootfs")
	if err := WriteBusyboxRootfs(rootfs); err != nil {
		os.RemoveAll(work)
		return "", "", err
	}
	return work, rootfs, nil
}

// redisServer is Debian's Redis server binary: redis-tools ships it
// under this name, and it serves when called by any other.
const redisServer = "/usr/bin/redis-check-rdb"

// RequireRedis skips (fails in CI) when Redis (redis-tools) is not installed.
func RequireRedis(t testing.TB) {
	t.Helper()
	for _, f := range []string{redisServer, "/usr/bin/redis-cli"} {
		if _, err := os.Stat(f); err != nil {
			testenv.SkipOrFail(t, fmt.Sprintf("redis-tools is not installed (scripts/deps.sh installs it): %v", err))
		}
	}
}

// WriteRedisRootfs fills dir with a busybox rootfs (WriteBusyboxRootfs)
// plus the host's Redis: /usr/bin/redis-server and redis-cli, with the
// shared libraries they need.
func WriteRedisRootfs(dir string) error {
	if err := WriteBusyboxRootfs(dir); err != nil {
		return err
	}
	for src, dst := range map[string]string{redisServer: "usr/bin/redis-server", "/usr/bin/redis-cli": "usr/bin/redis-cli"} {
		if err := copyFile(src, filepath.Join(dir, dst)); err != nil {
			return fmt.Errorf("redis rootfs: %w", err)
		}
		if err := copyLibraries(dir, src); err != nil {
			return fmt.Errorf("redis rootfs: %w", err)
		}
	}
	return nil
}
