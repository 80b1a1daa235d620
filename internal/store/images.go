package store

import (
	"context"
	"encoding/json"
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
	// Instances are many: each is read for its images alone, where
	// decoding every one whole (environment, placement, status) cost the
	// server a list of the cluster's instances in full at each prune.
	_, err = s.ListFunc(ctx, api.KindInstance, "", func(value []byte, _ int64) error {
		var in struct {
			Spec struct {
				Template struct {
					Image      string          `json:"image"`
					Containers []api.Container `json:"containers"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(value, &in); err != nil {
			return err
		}
		add(&api.Template{Image: in.Spec.Template.Image, Containers: in.Spec.Template.Containers})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("images pinned: %w", err)
	}
	return pinned, nil
}
