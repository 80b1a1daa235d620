package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/runtime/launch"
)

// User namespaces. A container with UserNS runs as root only inside a user
// namespace of its own: its ids 0..65535 are, on the host, a range of
// 65536 ids that no other container on this host holds, so a process that
// breaks out is an unprivileged stranger to the host and to every other
// container.
//
// Ranges are handed out per container under the state directory: range n
// covers host ids n*65536 .. n*65536+65535, and is held by the directory
// .userns/<n> (made with mkdir, atomic across processes, holding the
// owner's id). It survives restarts with the container and is freed when
// the container is removed. Range 16 (host id 1048576) is the first, above
// the subordinate ids /etc/subuid gives a host's first users.
//
// The image's layers stay owned by host root on disk and are shared: each
// container sees them through idmapped mounts (mount_setattr with
// MOUNT_ATTR_IDMAP), which show host id 0 as the container's root, with no
// copy and no chown. The container's upper layer is its own, owned by its
// mapped root, so what it writes is owned on the host by its mapped ids.
const (
	usernsSize  = 65536
	usernsFirst = 16
	usernsLast  = 1<<32/usernsSize - 1
)

func (r *Runtime) usernsDir() string { return filepath.Join(r.root, ".userns") }

// allocUserNS hands container bd the first free range and records it in
// the bundle; it returns the host id the container's root maps to.
func (r *Runtime) allocUserNS(bd *bundle) (uint32, error) {
	id := bd.id
	dir := r.usernsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("user namespace: %w", err)
	}
	for n := usernsFirst; n < usernsLast; n++ {
		p := filepath.Join(dir, strconv.Itoa(n))
		err := os.Mkdir(p, 0o700)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("user namespace: %w", err)
		}
		if err := os.WriteFile(filepath.Join(p, "owner"), []byte(id+"\n"), 0o600); err != nil {
			_ = os.RemoveAll(p)
			return 0, fmt.Errorf("user namespace: %w", err)
		}
		if err := os.WriteFile(bd.path("userns"), []byte(strconv.Itoa(n)), 0o600); err != nil {
			_ = os.RemoveAll(p)
			return 0, fmt.Errorf("user namespace: %w", err)
		}
		return uint32(n) * usernsSize, nil
	}
	return 0, fmt.Errorf("user namespace: all %d id ranges are in use", usernsLast-usernsFirst)
}

// releaseUserNS frees the range container bd holds, if any: the bundle
// names it (file "userns"), and the range's owner file must agree.
func (r *Runtime) releaseUserNS(bd *bundle) error {
	b, err := os.ReadFile(bd.path("userns"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("user namespace: %w", err)
	}
	dir := filepath.Join(r.usernsDir(), string(b))
	if owner, err := os.ReadFile(filepath.Join(dir, "owner")); err == nil && string(owner) != bd.id+"\n" {
		return nil // not ours (any more)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("user namespace: free range %s: %w", b, err)
	}
	return nil
}

// withUserNS puts the spec's container in a user namespace whose root is
// host id base. An OCI runtime (external) makes the standard devices
// itself, by binding them in a user namespace, and fails on a bind of ours
// already there: those are left to it.
func withUserNS(s *specs.Spec, base uint32, external bool) {
	if external {
		s.Mounts = slices.DeleteFunc(s.Mounts, func(m specs.Mount) bool {
			return m.Type == "bind" && slices.Contains(hostDevices, m.Source) && m.Source == m.Destination
		})
	}
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: usernsSize}}
	s.Linux.UIDMappings, s.Linux.GIDMappings = m, m
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	if !hostNetNS(s) {
		return
	}
	if !external {
		// The shim writes net.* sysctls in the network namespace itself
		// (see launch/shim.c); an OCI runtime would try from inside and
		// be refused, so for those the launcher writes it (hostNetSysctls).
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		s.Linux.Sysctl[unprivilegedPorts] = "0"
	}
	// sysfs may be mounted only by the owner of the network namespace, and
	// one the host made (the agent's) is the host's: bind the host's
	// /sys, read-only, as runc does for rootless containers.
	for i, mt := range s.Mounts {
		if mt.Type == "sysfs" {
			s.Mounts[i] = specs.Mount{Destination: mt.Destination, Type: "bind", Source: "/sys", Options: append([]string{"rbind"}, mt.Options...)}
		}
	}
}

// unprivilegedPorts is the sysctl that lets the container's root, which
// holds no privilege over a network namespace the host made, bind ports
// below 1024 in it, as Docker lets every container.
const unprivilegedPorts = "net.ipv4.ip_unprivileged_port_start"

// hostNetSysctls writes what withUserNS leaves to the launcher for an
// OCI runtime's container in a host-made network namespace.
func hostNetSysctls(s *specs.Spec) error {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace && ns.Path != "" {
			return netns.Do(ns.Path, func() error { return netns.WriteSysctl(unprivilegedPorts, "0") })
		}
	}
	return nil
}

// hostNetNS reports whether the spec joins a network namespace made
// outside the container (by the host, which owns it).
func hostNetNS(s *specs.Spec) bool {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace && ns.Path != "" {
			return true
		}
	}
	return false
}

// userNSOf returns the host id a spec's container root maps to, and whether it has a user namespace.
func userNSOf(s *specs.Spec) (uint32, bool) {
	if s == nil || s.Linux == nil || len(s.Linux.UIDMappings) == 0 {
		return 0, false
	}
	return s.Linux.UIDMappings[0].HostID, true
}

// userNSFD opens a user namespace that maps 0..65535 to base..: what
// idmapped mounts take. A process holds it while it is opened (the
// launcher is multi-threaded Go, which cannot unshare one itself).
func userNSFD(self string, base uint32) (int, error) {
	cmd := exec.Command(self)
	cmd.Env = []string{launch.StageEnv + "=" + launch.StageHold}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return -1, err
	}
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: usernsSize}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: m, GidMappings: m}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("user namespace: %w", err)
	}
	defer func() {
		// Closing stdin ends it; reaping it need not hold up the start.
		stdin.Close()
		go func() { _ = cmd.Wait() }()
	}()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("user namespace: %w", err)
	}
	return fd, nil
}

// idmapped clones the tree at src as a detached mount that shows host
// ids through the user namespace usernsFD.
func idmapped(src string, usernsFD int, recursive bool) (int, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return -1, fmt.Errorf("idmapped mount of %s: %w", src, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFD)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("idmapped mount of %s: %w", src, err)
	}
	return fd, nil
}

// mountIDMappedRootfs mounts the container's rootfs at target for a user
// namespace rooted at host id base: an overlay of idmapped layers under
// an upper dir owned by the mapped root, or, for a rootfs directory, an
// idmapped bind of it.
func mountIDMappedRootfs(bd *bundle, c *Config, target string, uns int, base uint32) error {
	if c.RootfsPath != "" {
		fd, err := idmapped(c.RootfsPath, uns, true)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("rootfs: attach %s: %w", c.RootfsPath, err)
		}
		return nil
	}
	upper, work := bd.path("upper"), bd.path("work")
	if err := os.Chown(upper, int(base), int(base)); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	fs, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("rootfs: overlay: %w", err)
	}
	defer unix.Close(fs)
	// overlayfs takes idmapped layers by path, not as detached mounts: each
	// is attached under the bundle (with the idmapped binds) until the
	// overlay holds it, then detached (detachIdmapped).
	dir := bd.path("idmapped")
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	for i, l := range c.LowerDirs {
		at := filepath.Join(dir, "layer-"+strconv.Itoa(i))
		if err := os.Mkdir(at, 0o700); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		fd, err := idmapped(l, uns, false)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		err = unix.MoveMount(fd, "", unix.AT_FDCWD, at, unix.MOVE_MOUNT_F_EMPTY_PATH)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("rootfs: attach layer %s: %w", l, err)
		}
		if err := unix.FsconfigSetString(fs, "lowerdir+", at); err != nil {
			return fmt.Errorf("rootfs: layer %s: %w", l, err)
		}
	}
	for k, v := range map[string]string{"upperdir": upper, "workdir": work} {
		if err := unix.FsconfigSetString(fs, k, v); err != nil {
			return fmt.Errorf("rootfs: overlay %s: %w", k, err)
		}
	}
	// No sync of the upper dir at unmount (a container's writable layer
	// does not outlive it, and a crash of the host ends the container):
	// the unmount at removal then costs a fraction of a millisecond, not
	// a flush of everything the container wrote.
	if err := unix.FsconfigSetFlag(fs, "volatile"); err != nil {
		return fmt.Errorf("rootfs: overlay volatile: %w", err)
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return fmt.Errorf("rootfs: mount overlay of idmapped layers: %w", err)
	}
	mnt, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return fmt.Errorf("rootfs: mount overlay: %w", err)
	}
	defer unix.Close(mnt)
	if err := unix.MoveMount(mnt, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("rootfs: attach overlay: %w", err)
	}
	return nil
}

// idmapBinds gives the spec's bind mounts that ask for "idmap" (named
// volumes, configs and secrets: data the host's root owns, shared by
// containers of different ranges) an idmapped source, so the container's
// root sees and writes them as the host's root does. Each source is
// attached under the bundle only until the container has made its own
// mounts (see detachIdmapped); a hostPath stays as it is, and what the
// container writes there is owned by its mapped ids.
func idmapBinds(bd *bundle, s *specs.Spec, uns int) error {
	dir := bd.path("idmapped")
	for i, m := range s.Mounts {
		if m.Type != "bind" || !slices.Contains(m.Options, "idmap") {
			continue
		}
		if uns < 0 {
			// Without a user namespace the ids are the host's already.
			s.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "idmap" })
			continue
		}
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("mount %s: source: %w", m.Destination, err)
		}
		at := filepath.Join(dir, strconv.Itoa(i))
		if st.IsDir() {
			err = os.Mkdir(at, 0o700)
		} else {
			err = os.WriteFile(at, nil, 0o600)
		}
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		fd, err := idmapped(m.Source, uns, slices.Contains(m.Options, "rbind"))
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		err = unix.MoveMount(fd, "", unix.AT_FDCWD, at, unix.MOVE_MOUNT_F_EMPTY_PATH)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("mount %s: attach idmapped %s: %w", m.Destination, m.Source, err)
		}
		s.Mounts[i].Source = at
		s.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "idmap" })
	}
	return nil
}

// detachIdmapped takes the idmapped sources and layers off the host once
// the container holds its own mounts of them (or failed to start). It
// must succeed before the bundle is removed: removing the directory with
// a source still attached would delete a volume's or a layer's data. So
// nothing here removes more than an empty directory or file.
func detachIdmapped(bd *bundle) error {
	dir := bd.path("idmapped")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := detach(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// detach unmounts what is attached at p, if anything, and removes the
// then empty mount point.
func detach(p string) error {
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detach %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("detach %s: %w", p, err)
	}
	return nil
}

// reachable checks that a process of no privilege on the host, as an OCI
// runtime's container root in a user namespace is when it resolves the
// rootfs and bind sources, can pass through every directory above path.
func reachable(path string) error {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %o) does not let the container's unprivileged root pass to %s: give it o+x", dir, st.Mode().Perm(), path)
		}
		if dir == "/" || dir == "." {
			return nil
		}
	}
}

// reachableMounts is reachable for the rootfs and every bind source of s.
func reachableMounts(s *specs.Spec) error {
	if err := reachable(s.Root.Path); err != nil {
		return fmt.Errorf("userns: rootfs: %w", err)
	}
	for _, m := range s.Mounts {
		if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
			if err := reachable(m.Source); err != nil {
				return fmt.Errorf("userns: mount %s: %w", m.Destination, err)
			}
		}
	}
	return nil
}
