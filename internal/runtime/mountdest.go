package runtime

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Images link directories to others (Debian's and Alpine's /var/run ->
// /run, /var/lock -> /run/lock), and a volume asked at /var/run/app
// belongs at /run/app, as Docker and podman put it. The executors never
// follow a link on the way to a mount point (the built-in init refuses
// one; checkMountTargets refuses for runc and crun, whose additions
// would follow it onto the host), so the destinations of the caller's
// mounts are resolved here, before the container runs, inside its root
// filesystem: links are followed, an absolute target is taken from the
// container's root and ".." stops there, so whatever the image (or the
// writable layer a previous run left) links to, the path stays in the
// container's tree and has no link left on it. Nothing runs in the
// container yet, so nothing can swap a link in after.

// resolveMounts returns mounts with each destination resolved inside
// the container's root filesystem, then ordered so a mount comes after
// those of the directories above it. rootfs is its host path; when the
// built-in executor mounts the overlay itself (inside), the view is
// assembled here from the layers, and only if a link is on the way.
func resolveMounts(bd *bundle, c *Config, rootfs string, inside bool) ([]specs.Mount, error) {
	if len(c.Mounts) == 0 {
		return nil, nil
	}
	out := slices.Clone(c.Mounts)
	if err := resolveDests(bd, c, filepath.Clean(rootfs), inside, out); err != nil {
		return nil, err
	}
	// As Docker orders them: a mount on /run/app after one on /run, so the
	// first does not hide the second, whatever path each was asked at.
	slices.SortStableFunc(out, func(a, b specs.Mount) int { return depth(a.Destination) - depth(b.Destination) })
	return out, nil
}

// resolveDests sets the destination of each of mounts to its resolved path.
func resolveDests(bd *bundle, c *Config, rootfs string, inside bool, mounts []specs.Mount) error {
	if inside {
		layers := append([]string{bd.path("upper")}, c.LowerDirs...)
		if !slices.ContainsFunc(mounts, func(m specs.Mount) bool { return linkOnPath(layers, destToResolve(m)) }) {
			return nil
		}
		view := bd.path(resolveView)
		unmount, err := mountView(view, layers)
		if err != nil {
			return err
		}
		defer unmount()
		rootfs = view
	}
	for i := range mounts {
		d, err := resolveDest(rootfs, mounts[i])
		if err != nil {
			return err
		}
		mounts[i].Destination = d
	}
	return nil
}

// resolveDest is m's destination resolved inside root, as a path in the
// container. A file bind's last name is left as it is: a link there is
// replaced by the file bound (the built-in init does so, as for the
// default /etc/resolv.conf bind, which a later one of the caller may
// replace).
func resolveDest(root string, m specs.Mount) (string, error) {
	asked := m.Destination
	dir, last := destToResolve(m), ""
	if dir != asked {
		last = path.Base(asked)
	}
	host, err := securejoin.SecureJoin(root, dir)
	if errors.Is(err, syscall.ELOOP) {
		return "", fmt.Errorf("mount destination %s: the image's symbolic links on the way loop or nest too deep: %w", asked, syscall.ELOOP)
	}
	if err != nil {
		return "", fmt.Errorf("mount destination %s: %w", asked, err)
	}
	d := path.Join("/", strings.TrimPrefix(host, root), last)
	if d == "/" {
		return "", fmt.Errorf("mount destination %s: the image's symbolic links lead it to the container's root", asked)
	}
	if lexical := path.Clean(asked); d != lexical {
		for _, special := range []string{"/proc", "/sys"} {
			// A volume sent there by the image could hide what the runtime
			// guards (a masked or read-only file), as runc refuses too.
			if d == special || strings.HasPrefix(d, special+"/") {
				return "", fmt.Errorf("mount destination %s: the image's symbolic links lead it to %s, inside %s", asked, d, special)
			}
		}
	}
	return d, nil
}

// destToResolve is the part of m's destination that is resolved: all of
// it, or for a file bind the directory it is in.
func destToResolve(m specs.Mount) string {
	if isFileBind(m) {
		if b := path.Base(m.Destination); b != ".." && b != "." && b != "/" {
			return path.Dir(m.Destination)
		}
	}
	return m.Destination
}

// isFileBind reports whether m binds a file (not a directory) of the host.
func isFileBind(m specs.Mount) bool {
	if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
		return false
	}
	st, err := os.Stat(m.Source)
	return err == nil && !st.IsDir()
}

// linkOnPath reports whether any of layers has a symbolic link on the
// way to dest, or dest has a ".." to resolve. Where none has, the merged
// view has none either and dest stands as it is. (A redirected directory
// of the writable layer could hide a lower link from this look: the init
// then finds the link and refuses, it never follows it.)
func linkOnPath(layers []string, dest string) bool {
	parts := strings.Split(strings.Trim(dest, "/"), "/")
	if slices.Contains(parts, "..") {
		return true
	}
	for _, l := range layers {
		p := l
		for _, part := range parts {
			p = filepath.Join(p, part)
			st, err := os.Lstat(p)
			if err != nil {
				break
			}
			if st.Mode()&os.ModeSymlink != 0 {
				return true
			}
			if !st.IsDir() {
				break
			}
		}
	}
	return false
}

// mountView mounts at dir a read-only overlay of layers (the writable
// one first, as a lower): the view the container will have, with its
// whiteouts and opaque directories, and nothing for its unmount to sync.
// The empty directory stays, for a later start of the bundle (a restore);
// removing the container detaches what a crash may have left on it.
func mountView(dir string, layers []string) (unmount func(), err error) {
	opts := "lowerdir=" + strings.Join(layers, ":")
	if len(opts) >= os.Getpagesize() {
		return nil, fmt.Errorf("rootfs: %d layers make overlay options longer than a page", len(layers))
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("rootfs: view to resolve mount destinations in: %w", err)
	}
	if err := unix.Mount("overlay", dir, "overlay", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, opts); err != nil {
		return nil, fmt.Errorf("rootfs: view to resolve mount destinations in: mount overlay: %w", err)
	}
	return func() { _ = unix.Unmount(dir, unix.MNT_DETACH) }, nil
}

// resolveView, in a bundle, is where mountView mounts the container's view.
const resolveView = "resolve"

func depth(p string) int {
	return strings.Count(path.Clean(p), "/")
}
