package image

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountRootfs mounts a container's root filesystem at target: an overlay of
// lower (top first) under upper, with work as overlayfs's work dir (same
// filesystem as upper). With readOnly, upper and work are not used: a
// single layer is bind-mounted read-only, several are overlaid without an
// upper dir.
func MountRootfs(lower []string, upper, work, target string, readOnly bool) error {
	if len(lower) == 0 {
		return fmt.Errorf("mount rootfs %s: no lower dirs", target)
	}
	for _, l := range lower {
		if strings.ContainsAny(l, ":,") {
			return fmt.Errorf("mount rootfs %s: lower dir %q contains ':' or ','", target, l)
		}
	}
	if readOnly && len(lower) == 1 {
		if err := unix.Mount(lower[0], target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mount rootfs %s: bind %s: %w", target, lower[0], err)
		}
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
			return errors.Join(fmt.Errorf("mount rootfs %s: read-only: %w", target, err), unix.Unmount(target, unix.MNT_DETACH))
		}
		return nil
	}
	opts := "lowerdir=" + strings.Join(lower, ":")
	flags := uintptr(unix.MS_NODEV)
	if readOnly {
		flags |= unix.MS_RDONLY
	} else {
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("mount rootfs %s: %w", target, err)
			}
		}
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	if len(opts) >= unix.Getpagesize() {
		return fmt.Errorf("mount rootfs %s: %d layers make the overlay options longer than a page", target, len(lower))
	}
	if err := unix.Mount("overlay", target, "overlay", flags, opts); err != nil {
		return fmt.Errorf("mount rootfs %s: overlay: %w", target, err)
	}
	return nil
}

// UnmountRootfs unmounts what MountRootfs mounted at target. Not mounted is
// not an error.
func UnmountRootfs(target string) error {
	if err := unix.Unmount(target, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount rootfs %s: %w", target, err)
	}
	return nil
}
