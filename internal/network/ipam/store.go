package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Store is a Pool persisted in a directory: one file per assigned address,
// named by the address and holding the owner id, and in .released one
// per address released, holding when (see Pool): a restarted agent hands
// out the addresses released just before it stopped last, as it would
// have without the restart. Claiming a file with
// O_EXCL is the commit point, so a crash between steps leaves either no
// allocation or a complete one, never two owners of an address. Files are
// not fsynced: the state has to survive an agent restart, and a machine
// crash takes every container's network namespace with it anyway.
type Store struct {
	mu   sync.Mutex
	dir  string
	pool *Pool
}

// Open loads the allocations in dir (creating it) into a pool over prefix.
// Files for addresses outside the pool, empty files (a crash mid-write) and
// second addresses of the same id are removed: they can be nobody's.
func Open(dir string, prefix netip.Prefix, reserved ...netip.Addr) (*Store, error) {
	pool, err := NewPool(prefix, reserved...)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam dir %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("ipam dir %s: %w", dir, err)
	}
	// Sorted so that which duplicate survives is deterministic.
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	var last netip.Addr
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		a, err := netip.ParseAddr(e.Name())
		if err != nil || e.IsDir() {
			continue // not ours (e.g. a temp file of an editor)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("ipam entry %s: %w", path, err)
		}
		if err := pool.Claim(string(b), a); err != nil {
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("drop ipam entry %s: %w", path, err)
			}
			continue
		}
		if !last.IsValid() || a.Compare(last) > 0 {
			last = a
		}
	}
	if last.IsValid() {
		pool.next = pool.wrap(last.Next())
	}
	rels, _ := os.ReadDir(filepath.Join(dir, releasedDir))
	for _, e := range rels {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || !pool.inRange(a) {
			continue
		}
		if _, held := pool.Owner(a); held {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, releasedDir, e.Name()))
		if seq, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && perr == nil {
			pool.markReleased(a, seq)
		}
	}
	return &Store{dir: dir, pool: pool}, nil
}

// releasedDir holds the release records; its name is no address.
const releasedDir = ".released"

// recordRelease persists when a was released. A record lost (a failed
// write) only lets a be reused sooner.
func (s *Store) recordRelease(a netip.Addr) error {
	d := filepath.Join(s.dir, releasedDir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(d, "."+a.String()+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(s.pool.seq, 10)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(d, a.String()))
}

// Allocate returns id's address, assigning and persisting a free one if id
// has none.
func (s *Store) Allocate(id string) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.pool.Lookup(id); ok {
		return a, nil
	}
	a, err := s.pool.Allocate(id)
	if err != nil {
		return netip.Addr{}, err
	}
	if err := s.write(id, a); err != nil {
		s.pool.Release(id)
		return netip.Addr{}, err
	}
	return a, nil
}

// Claim assigns a specific address to id and persists it.
func (s *Store) Claim(id string, a netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.pool.Lookup(id); ok && cur == a {
		return nil
	}
	if err := s.pool.Claim(id, a); err != nil {
		return err
	}
	if err := s.write(id, a); err != nil {
		s.pool.Release(id)
		return err
	}
	return nil
}

func (s *Store) write(id string, a netip.Addr) error {
	path := filepath.Join(s.dir, a.String())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("persist %v for %q: %w", a, id, err)
	}
	_, werr := f.WriteString(id)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("persist %v for %q: %w", a, id, err)
	}
	return nil
}

// Release frees id's address; releasing an id that holds none is not an error.
func (s *Store) Release(id string) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.pool.Lookup(id)
	if !ok {
		return netip.Addr{}, nil
	}
	if err := os.Remove(filepath.Join(s.dir, a.String())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return netip.Addr{}, fmt.Errorf("release %v of %q: %w", a, id, err)
	}
	s.pool.Release(id)
	_ = s.recordRelease(a)
	return a, nil
}

// Lookup returns id's address.
func (s *Store) Lookup(id string) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool.Lookup(id)
}

// Assigned returns a copy of every allocation, keyed by id.
func (s *Store) Assigned() map[string]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool.Assigned()
}
