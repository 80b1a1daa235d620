package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The embedded member's database is a file bbolt maps into the server
// and reads through the map: every page a range, a compaction or a write
// transaction's search touched stays mapped, and counts in the server's
// resident memory, until the file is closed. At 300,000 instances scaled
// to zero and back that was 1.4 GB of the server's 5.2 GB peak RSS, the
// whole database, though it is page cache the kernel could take back and
// the server holds no copy of. Unmapped, the pages stay in the page cache
// (a later read faults them in again without touching the disk), and the
// server's RSS says what it holds.
const (
	// dbPagesInterval is how often the mapped pages are looked at: a
	// first apply of 300,000 instances maps about 50 MiB a second, and a
	// compaction, reading every revision, more. Every 5 s let the file's
	// part of the RSS reach 294 MiB at its peak, every 2 s 239 MiB. A
	// look costs a read of /proc/self/status when under the threshold,
	// and pages unmapped are faulted in again from the page cache.
	dbPagesInterval = 500 * time.Millisecond
	// dbPagesMinMapped is the least of files mapped (the database, and
	// the binary's own pages, about 25 MiB) at which the database's pages
	// are unmapped: below it, the pages a busy member reads all the time
	// stay where they are.
	dbPagesMinMapped = 64 << 20
)

// releaseDBPagesEvery unmaps the database's pages every interval when
// the process maps more than minMapped bytes of files, until ctx ends.
func (s *Store) releaseDBPagesEvery(ctx context.Context, interval time.Duration, minMapped int64) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mapped, err := s.releaseDBPages(minMapped)
		if err != nil {
			s.log.Warn("etcd database pages", "err", err)
			continue
		}
		if mapped >= minMapped {
			s.log.Debug("etcd database pages unmapped", "file_mapped_mib", mapped>>20)
		}
	}
}

// releaseDBPages unmaps the embedded member's database pages from the
// process when it has more than minMapped bytes of files resident (its
// RssFile: the database, and the binary's own pages), and says how many
// it had. It looks at the process's counters and list of maps only: the
// per-map figures of /proc/self/smaps walk every page of the process,
// 50 ms for a 4 GB heap. MADV_DONTNEED on a shared map of a file drops
// the page table entries only; the data stays in the file and the page
// cache. The map must not move meanwhile: a read transaction held
// through it keeps bbolt from unmapping or remapping the file (both wait
// for every reader), and only a single map of the file is touched, so
// that none being closed by a backend that etcd is replacing can be hit.
func (s *Store) releaseDBPages(minMapped int64) (int64, error) {
	if s.etcd == nil {
		return 0, nil
	}
	mapped, err := fileResident()
	if err != nil || mapped < minMapped {
		return mapped, err
	}
	be := s.etcd.Server.Backend()
	tx := be.ConcurrentReadTx()
	tx.RLock()
	defer tx.RUnlock()
	if s.etcd.Server.Backend() != be {
		return mapped, nil // replaced meanwhile: the next look finds the new one
	}
	path := s.etcd.Server.Cfg.BackendPath()
	maps, err := fileMaps(path)
	if err != nil || len(maps) != 1 {
		return mapped, err
	}
	m := maps[0]
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
		return mapped, fmt.Errorf("unmap the pages of %s: %w", path, errno)
	}
	return mapped, nil
}

// fileResident is the bytes of files this process has resident, its
// RssFile.
func fileResident() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("resident memory: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("resident memory: unreadable %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("resident memory: unreadable %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("resident memory: no RssFile in /proc/self/status")
}

// fileMap is one map of a file into this process.
type fileMap struct{ start, end uintptr }

// fileMaps lists this process's maps of the file at path, from
// /proc/self/maps.
func fileMaps(path string) ([]fileMap, error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, fmt.Errorf("maps of %s: %w", path, err)
	}
	var out []fileMap
	for line := range strings.SplitSeq(string(b), "\n") {
		// range perms offset dev inode path
		if len(strings.Fields(line)) < 6 || !strings.HasSuffix(line, " "+path) {
			continue
		}
		lo, hi, ok := strings.Cut(strings.Fields(line)[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("maps of %s: unreadable %q", path, line)
		}
		out = append(out, fileMap{start: uintptr(start), end: uintptr(end)})
	}
	return out, nil
}
