package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/store"
)

// Image pruning on a server: its store keeps an image that loses its last
// name (image.Store.RetainUnnamed), because services, jobs and instances
// pin images by digest and nodes pull them by digest from the servers. A
// pruner removes those that nothing pins any more.
const (
	pruneFirst = time.Minute
	pruneEvery = 10 * time.Minute
)

// keepPinnedImages makes imgs retain unnamed images and prunes them while
// ctx lasts.
func keepPinnedImages(ctx context.Context, st *store.Store, imgs *image.Store, log *slog.Logger) error {
	if err := imgs.RetainUnnamed(); err != nil {
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
		removed, err := pruneImages(ctx, st, imgs)
		if err != nil && ctx.Err() == nil {
			log.Warn("prune images", "err", err)
		}
		if len(removed) > 0 {
			log.Info("pruned images nothing pins", "digests", removed)
		}
		t.Reset(pruneEvery)
	}
}

// pruneImages removes the unnamed images no container uses and no stored
// service, job or instance pins.
func pruneImages(ctx context.Context, st *store.Store, imgs *image.Store) ([]string, error) {
	pinned, err := pinnedDigests(ctx, st)
	if err != nil {
		return nil, err
	}
	return imgs.Prune(ctx, func(d string) bool { return pinned[d] })
}

// pinnedDigests lists the digests that stored templates name.
func pinnedDigests(ctx context.Context, st *store.Store) (map[string]bool, error) {
	pinned := map[string]bool{}
	add := func(ref string) {
		if _, d, ok := strings.Cut(ref, "@"); ok {
			pinned[d] = true
		}
	}
	svcs, _, err := store.List[api.Service](ctx, st, "")
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	for _, s := range svcs {
		add(s.Spec.Template.Image)
	}
	jobs, _, err := store.List[api.Job](ctx, st, "")
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	for _, j := range jobs {
		add(j.Spec.Template.Image)
	}
	insts, _, err := store.List[api.Instance](ctx, st, "")
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	for _, in := range insts {
		add(in.Spec.Template.Image)
	}
	return pinned, nil
}
