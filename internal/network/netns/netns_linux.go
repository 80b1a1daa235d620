// Package netns creates, enters and removes named network namespaces: a
// namespace is kept alive by a bind mount of its nsfs file at a path, which
// is what a container runtime (or `ip netns exec`-like code) joins.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Create makes a new network namespace, pins it at path, and runs setup
// (if not nil) inside it before returning. setup runs on a locked thread
// that is in the new namespace, so netlink calls without a handle and
// /proc/sys/net writes apply to it. On error nothing is left behind.
func Create(path string, setup func() error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	_ = f.Close()
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin: %w", err)
		}
		if setup != nil {
			return setup()
		}
		return nil
	})
	if err != nil {
		_ = Delete(path)
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	return nil
}

// Delete unpins the namespace at path and removes the file. The namespace
// goes away once no process or socket uses it. Deleting a missing one is
// not an error.
func Delete(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	return nil
}

// Move pins the namespace pinned at src at dst instead (dst must not
// exist), without creating anything: a bind mount and an unmount.
func Move(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("move netns %s to %s: %w", src, dst, err)
	}
	_ = f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("move netns %s to %s: %w", src, dst, err)
	}
	if err := Delete(src); err != nil {
		return fmt.Errorf("move netns %s to %s: %w", src, dst, err)
	}
	return nil
}

// Do runs fn on a locked thread inside the namespace at path.
func Do(path string, fn func() error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	return onThread(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// onThread runs fn on a dedicated locked thread and puts the thread back
// in its original namespace afterwards. A thread that cannot be restored
// stays locked, so the Go runtime discards it instead of reusing it.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		ferr := fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// WriteSysctl writes value to /proc/sys/<name> in the calling thread's
// network namespace; use it inside Create's setup or Do. name separates
// its parts with dots ("net.ipv4.ip_forward") or, when it contains an
// interface name that may hold a dot, with slashes.
func WriteSysctl(name, value string) error {
	if !strings.Contains(name, "/") {
		name = strings.ReplaceAll(name, ".", "/")
	}
	p := filepath.Join("/proc/sys", name)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return nil
}
