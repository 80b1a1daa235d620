package runtime

import (
	"fmt"
	"io"
	"os"
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
// The view is a detached clone of a bind mount of the binary, made
// read-only (open_tree and mount_setattr): it never enters a mount table,
// costs a few microseconds once per process, and shares the page cache.
// Opening /proc/PID/exe for writing then fails with EROFS whatever runs.
// runc reached the same end first with a memfd copy of itself and later
// with a private overlayfs mount; a copy of a 40 MB binary costs more than
// a whole container start (see bench/runtime), so it is only the fallback
// where the kernel lacks the mount API or the caller the privilege.

// Exe views, for the bench to compare; the default is exeReadonly.
const (
	exeReadonly = "readonly" // a read-only detached bind mount
	exeMemfd    = "memfd"    // a sealed in-memory copy
	exeDirect   = "direct"   // the binary's own path: unprotected, for comparison only
)

// ExeViewEnv selects the view ("readonly", "memfd" or "direct") for
// measurements; left unset, berth uses the read-only view.
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
		mode = exeReadonly
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
	case exeReadonly:
		if v.f, v.err = readonlyView(self); v.err != nil {
			v.f, v.err = sealedCopy(self)
		}
	default:
		v.err = fmt.Errorf("%s=%q: want readonly, memfd or direct", ExeViewEnv, mode)
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

func readonlyView(self string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, self, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("read-only view of %s: %w", self, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("read-only view of %s: %w", self, err)
	}
	return highFD(fd, self+" (read-only)")
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
