package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WritableLayer is the host directory holding what container id wrote
// to its root filesystem: the overlay's upper dir. It does not exist for
// a container run on a rootfs path as is.
func (r *Runtime) WritableLayer(id string) (string, error) {
	bd, err := r.bundle(id)
	if err != nil {
		return "", err
	}
	return bd.path("upper"), nil
}

// DiskUsage is the disk space the files under dir take, in bytes: their
// allocated blocks, so a sparse file counts for what it holds and a file
// with several links once. A dir that does not exist uses nothing.
func DiskUsage(dir string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return total, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return total, nil
}
