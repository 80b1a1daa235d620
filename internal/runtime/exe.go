package runtime

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The shim, the container init and the exec stage are this binary
// re-executed. Whatever process of a container runs it (the init before
// it execs the workload, or anything a script with "#!/proc/self/exe"
// makes exec it) shows it as /proc/PID/exe, and a descriptor opened there
// can be reopened for writing once no process runs the file any more:
// CVE-2019-5736, a container overwriting the host's binary. So berth never
// executes its binary by its own path, but through a read-only view of it.
//
// The view is the binary seen through a private overlayfs with no upper
// layer, made with the new mount API (fsopen, fsmount): it never enters a
// mount table, costs a fraction of a millisecond once per process, shares
// the page cache, and cannot be made writable, not even by a container
// given CAP_SYS_ADMIN (a read-only bind mount could be cloned and
// remounted writable). runc came to the same overlayfs after a memfd copy
// of itself; a copy of a 40 MB binary costs more than a whole container
// start (see bench/runtime), so here it is only the fallback where the
// kernel lacks the mount API or the caller the privilege.

// Views of the binary, for the bench to compare; the default is exeOverlay.
const (
	exeOverlay = "overlay" // the binary on a read-only overlayfs of its directory
	exeMemfd   = "memfd"   // a sealed in-memory copy
	exeDirect  = "direct"  // the binary's own path: unprotected, for comparison only
)

// ExeViewEnv selects the view ("overlay", "memfd" or "direct") for
// measurements; left unset, berth uses the overlay.
const ExeViewEnv = "BERTH_EXE_VIEW"

type exeView struct {
	path string
	f    *os.File // held for the process's life: the path names it
	err  error
}

var (
	exeMu    sync.Mutex
	exeViews = map[[2]string]*exeView{} // by binary and mode
)

// selfExe returns the path to execute this binary by, in the view mode
// asks for ("" for the default).
func selfExe(self, mode string) (string, error) {
	if mode == "" {
		mode = exeOverlay
	}
	exeMu.Lock()
	defer exeMu.Unlock()
	if v, ok := exeViews[[2]string{self, mode}]; ok {
		return v.path, v.err
	}
	v := &exeView{}
	switch mode {
	case exeDirect:
		v.path = self
	case exeMemfd:
		v.f, v.err = sealedCopy(self)
	case exeOverlay:
		if v.f, v.err = overlayView(self); v.err != nil {
			v.f, v.err = sealedCopy(self)
		}
	default:
		v.err = fmt.Errorf("%s=%q: want overlay, memfd or direct", ExeViewEnv, mode)
	}
	if v.f != nil {
		v.path = fmt.Sprintf("/proc/self/fd/%d", v.f.Fd())
	}
	exeViews[[2]string{self, mode}] = v
	return v.path, v.err
}

// highFD moves fd to 100 or above: os/exec places a child's ExtraFiles at
// 3, 4... before it executes the path, and must not overwrite this one.
func highFD(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 100)
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// overlayView mounts the binary's directory, and an empty one (overlayfs
// wants two lower layers when it has no upper), as a detached read-only
// overlayfs and opens the binary there.
func overlayView(self string) (*os.File, error) {
	empty, err := os.MkdirTemp("", "berth-exe-")
	if err != nil {
		return nil, fmt.Errorf("overlay view of %s: %w", self, err)
	}
	// The mount holds the directory; its name is not needed once mounted.
	defer os.Remove(empty)
	fs, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("overlay view of %s: %w", self, err)
	}
	defer unix.Close(fs)
	escape := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	if err := unix.FsconfigSetString(fs, "lowerdir", escape.Replace(filepath.Dir(self))+":"+escape.Replace(empty)); err != nil {
		return nil, fmt.Errorf("overlay view of %s: lowerdir: %w", self, err)
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return nil, fmt.Errorf("overlay view of %s: %w", self, err)
	}
	mnt, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, fmt.Errorf("overlay view of %s: %w", self, err)
	}
	defer unix.Close(mnt)
	fd, err := unix.Openat(mnt, filepath.Base(self), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("overlay view of %s: %w", self, err)
	}
	return highFD(fd, self+" (overlay)")
}

func sealedCopy(self string) (*os.File, error) {
	src, err := os.Open(self)
	if err != nil {
		return nil, fmt.Errorf("sealed copy of %s: %w", self, err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("berth", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("sealed copy of %s: %w", self, err)
	}
	f, err := highFD(fd, self+" (sealed copy)")
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealed copy of %s: %w", self, err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealed copy of %s: %w", self, err)
	}
	return f, nil
}
