package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// retainFile marks a store that keeps an image losing its last name (a
// tag moved to another build) until Prune, rather than at once. A
// server's store is such a store: the cluster may still pin the old
// digest, and its nodes pull by digest. A mark on disk, not an option,
// because any process may retag (berth image build on the server's data
// dir) and each must keep the old image alike.
const retainFile = "retain-unnamed"

// RetainUnnamed makes this store keep images that lose their last name
// until Prune removes them.
func (s *Store) RetainUnnamed() error {
	p := filepath.Join(s.root, retainFile)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	const why = "Images that lose their last name stay until a prune: the cluster may still pin them by digest.\n"
	if err := os.WriteFile(p, []byte(why), 0o644); err != nil {
		return fmt.Errorf("image store %s: %w", s.root, err)
	}
	return nil
}

func (s *Store) retaining() bool {
	_, err := os.Stat(filepath.Join(s.root, retainFile))
	return err == nil
}

// Prune removes the unnamed images that no container uses and that keep
// (given a digest, "sha256:<hex>") does not want kept, and then what only
// they held. It returns the digests removed.
func (s *Store) Prune(ctx context.Context, keep func(digest string) bool) ([]string, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	named := map[v1.Hash]bool{}
	for _, d := range idx.Manifests {
		if descName(d) != "" {
			named[d.Digest] = true
		}
	}
	var kept []v1.Descriptor
	var removed []string
	var errs []error
	for _, d := range idx.Manifests {
		if descName(d) != "" || named[d.Digest] || keep(d.Digest.String()) {
			kept = append(kept, d)
			continue
		}
		users, err := s.users(d.Digest)
		if err != nil || len(users) > 0 {
			errs = append(errs, err)
			kept = append(kept, d)
			continue
		}
		removed = append(removed, d.Digest.String())
	}
	if len(removed) == 0 {
		return nil, errors.Join(errs...)
	}
	idx.Manifests = kept
	if err := s.writeIndex(idx); err != nil {
		return nil, err
	}
	return removed, errors.Join(append(errs, s.gc(ctx))...)
}
