package image

import (
	"context"
	"log/slog"
	"time"
)

// Pruning on a server: its store keeps an image that loses its last name
// (RetainUnnamed), because services, jobs and instances pin images by
// digest and nodes pull them by digest from the servers. A pruner removes
// those that nothing pins any more.
const (
	pruneFirst = time.Minute
	pruneEvery = 10 * time.Minute
)

// PinnedFunc lists the digests something still pins.
type PinnedFunc func(ctx context.Context) (map[string]bool, error)

// KeepPinned makes s retain unnamed images and prunes those pinned does
// not list, a minute after the start and every ten minutes after, while
// ctx lasts.
func (s *Store) KeepPinned(ctx context.Context, pinned PinnedFunc, log *slog.Logger) error {
	if err := s.RetainUnnamed(); err != nil {
		return err
	}
	t := time.NewTimer(pruneFirst)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		removed, err := s.PruneUnpinned(ctx, pinned)
		if err != nil && ctx.Err() == nil {
			log.Warn("prune images", "err", err)
		}
		if len(removed) > 0 {
			log.Info("pruned images nothing pins", "digests", removed)
		}
		t.Reset(pruneEvery)
	}
}

// PruneUnpinned removes the unnamed images no container uses and pinned
// does not list.
func (s *Store) PruneUnpinned(ctx context.Context, pinned PinnedFunc) ([]string, error) {
	keep, err := pinned(ctx)
	if err != nil {
		return nil, err
	}
	return s.Prune(ctx, func(d string) bool { return keep[d] })
}
