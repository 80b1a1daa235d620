package runtime

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDiskUsageCountsBlocksOnce(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// A second link to the same file counts once; a sparse file counts
	// for the blocks it holds, not its length.
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n, err := DiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n < 1<<20 || n > 1<<20+64<<10 {
		t.Errorf("DiskUsage = %d, want about 1 MiB", n)
	}
	if n, err := DiskUsage(filepath.Join(dir, "missing")); err != nil || n != 0 {
		t.Errorf("DiskUsage of a missing dir = %d, %v; want 0, nil", n, err)
	}
}
