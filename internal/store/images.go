package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/api"
)

// PinnedImageDigests lists the image digests ("sha256:<hex>") that
// stored services, jobs, cron jobs and instances pin
// (REPOSITORY[:TAG]@DIGEST), in their main, init and sidecar containers:
// the images a server's registry must keep for its nodes to pull.
func (s *Store) PinnedImageDigests(ctx context.Context) (map[string]bool, error) {
	pinned := map[string]bool{}
	add := func(t *api.Template) {
		for _, ref := range t.Images() {
			if _, d, ok := strings.Cut(ref, "@"); ok {
				pinned[d] = true
			}
		}
	}
	svcs, _, err := List[api.Service](ctx, s, "")
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	for _, sv := range svcs {
		add(&sv.Spec.Template)
	}
	jobs, _, err := List[api.Job](ctx, s, "")
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	for _, j := range jobs {
		add(&j.Spec.Template)
	}
	crons, _, err := List[api.CronJob](ctx, s, "")
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	for _, c := range crons {
		add(&c.Spec.Job.Template)
	}
	insts, _, err := List[api.Instance](ctx, s, "")
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	for _, in := range insts {
		add(&in.Spec.Template)
	}
	return pinned, nil
}
