// Package runtimetest holds the conformance suite every executor passes
// and the fixtures it needs.
package runtimetest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// RequireRoot is testenv.RequireRoot, kept under this name for the
// runtime's tests.
func RequireRoot(t testing.TB) { t.Helper(); testenv.RequireRoot(t) }

// BusyboxRootfs is imagetest.BusyboxRootfs, kept under this name for the
// runtime's tests: a minimal busybox rootfs in a fresh directory.
func BusyboxRootfs(t testing.TB) string { t.Helper(); return imagetest.BusyboxRootfs(t) }

// WriteBusyboxRootfs is imagetest.WriteBusyboxRootfs: it fills dir with
// the busybox rootfs.
func WriteBusyboxRootfs(dir string) error { return imagetest.WriteBusyboxRootfs(dir) }

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
