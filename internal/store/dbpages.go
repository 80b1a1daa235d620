package store

import (
	"bufio"
	"bytes"
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
	// first apply of 300,000 instances maps about 50 MiB a second.
	dbPagesInterval = 5 * time.Second
	// dbPagesMinMapped is the least that is unmapped: below it, the
	// pages a busy member reads all the time stay where they are.
	dbPagesMinMapped = 32 << 20
)

// releaseDBPagesEvery unmaps the database's pages every interval when
// more than minMapped bytes of them are mapped, until ctx ends.
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
			s.log.Debug("etcd database pages unmapped", "mib", mapped>>20)
		}
	}
}

// releaseDBPages unmaps the embedded member's database pages from the
// process when more than minMapped bytes of them are resident, and says
// how many were. MADV_DONTNEED on a shared map of a file drops the page
// table entries only; the data stays in the file and the page cache.
// The map must not move meanwhile: a read transaction held through it
// keeps bbolt from unmapping or remapping the file (both wait for every
// reader), and only a single map of the file is touched, so that none
// being closed by a backend that etcd is replacing can be hit.
func (s *Store) releaseDBPages(minMapped int64) (int64, error) {
	if s.etcd == nil {
		return 0, nil
	}
	be := s.etcd.Server.Backend()
	tx := be.ConcurrentReadTx()
	tx.RLock()
	defer tx.RUnlock()
	if s.etcd.Server.Backend() != be {
		return 0, nil // replaced meanwhile: the next look finds the new one
	}
	path := s.etcd.Server.Cfg.BackendPath()
	maps, err := fileMaps(path)
	if err != nil || len(maps) != 1 {
		return 0, err
	}
	m := maps[0]
	if m.rss < minMapped {
		return m.rss, nil
	}
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
		return m.rss, fmt.Errorf("unmap the pages of %s: %w", path, errno)
	}
	return m.rss, nil
}

// fileMap is one map of a file into this process, and its resident bytes.
type fileMap struct {
	start, end uintptr
	rss        int64
}

// fileMaps lists this process's maps of the file at path, from
// /proc/self/smaps.
func fileMaps(path string) ([]fileMap, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("maps of %s: %w", path, err)
	}
	var out []fileMap
	in := false // within the entry of a map of path
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") { // an entry's first line: range perms offset dev inode path
			in = len(f) >= 6 && strings.HasSuffix(line, " "+path)
			if !in {
				continue
			}
			lo, hi, ok := strings.Cut(f[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if !ok || err1 != nil || err2 != nil {
				return nil, fmt.Errorf("maps of %s: unreadable range %q", path, f[0])
			}
			out = append(out, fileMap{start: uintptr(start), end: uintptr(end)})
			continue
		}
		if in && f[0] == "Rss:" && len(f) >= 2 {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("maps of %s: unreadable %q", path, line)
			}
			out[len(out)-1].rss = kb << 10
		}
	}
	return out, sc.Err()
}
