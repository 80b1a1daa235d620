// Package atomicfile writes files that a crash leaves either whole and as
// before or whole and new, never half written: keys, certificates, join
// tokens, configuration. It is public because the API client keeps a
// joined node's credentials with it.
//
// The one durability rule: write a temporary file in the same directory,
// fsync it, rename it over the target, then fsync the directory so that
// the rename itself survives a power cut.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm, by the rule above.
func Write(path string, data []byte, perm os.FileMode) error {
	if err := write(path, data, perm, true); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteUnsynced is Write without its fsyncs: readers still see the file
// whole, before or after, and so does the machine after a crash of the
// writing process, but not after a power cut. It is for files whose loss
// costs nothing, such as a simulated node's credentials (thousands of
// them, whose fsyncs were a tenth of a fleet's work).
func WriteUnsynced(path string, data []byte, perm os.FileMode) error {
	if err := write(path, data, perm, false); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func write(path string, data []byte, perm os.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	// CreateTemp makes the file 0600; Chmod, not the umask, sets the mode
	// asked for.
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil || !sync {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
