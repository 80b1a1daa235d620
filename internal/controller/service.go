package controller

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/berth-dev/berth/api"
)

// ServiceState is one service and its instances.
type ServiceState struct {
	Replicas int
	// SpecHash is the current template's; instances with another are replaced in a rolling update.
	SpecHash string
	// MaxSurge is how many instances above Replicas a rolling update may
	// run: at least 1 unless MaxUnavailable is set.
	MaxSurge int
	// MaxUnavailable is how many below Replicas may be ready meanwhile.
	MaxUnavailable int
	// Settled says the current template's rollout is over (complete or
	// rolled back): its instances' later troubles fail no rollout.
	Settled   bool
	Instances []Instance
}

// RolloutPhase is where the current template's rollout is.
type RolloutPhase string

const (
	RolloutProgressing RolloutPhase = "Progressing"
	RolloutComplete    RolloutPhase = "Complete"
	RolloutFailed      RolloutPhase = "Failed"
)

// ServiceResult is what the service controller writes.
type ServiceResult struct {
	// Create is how many new instances (with the current template) to make.
	Create int
	// Delete names the instances to remove, in order.
	Delete []string
	// Ready counts running, healthy instances of any template: those serving.
	Ready int
	// ReadyUpdated counts those of the current template.
	ReadyUpdated int
	// Updated counts live instances of the current template.
	Updated int
	// Exited names instances of the current template that ended for good
	// (their restart policy said so): they keep their slot, and their
	// output, until the service is changed, restarted or scaled down.
	Exited []string
	// Phase is the rollout's; Reason says why it failed.
	Phase  RolloutPhase
	Reason string
}

// ComputeService keeps Replicas healthy instances. Lost instances are
// replaced; an instance that succeeded or failed did so under a restart
// policy that said not to run it again (the agent restarts the others in
// place), so it stays, holding its slot, until the template changes or the
// service is scaled down, exited ones going first. Extra ones go newest
// first.
//
// Instances of an old template are replaced as Kubernetes rolls a
// Deployment: at most Replicas+MaxSurge in all, at least
// Replicas-MaxUnavailable ready, unready old ones going first. A new
// instance that fails (its health check, a restart, an exit) fails the
// rollout: no more new ones are made, so no more old ones go.
func ComputeService(s ServiceState) (res ServiceResult) {
	res.Phase = RolloutProgressing
	var current, old []Instance
	readyOld := 0
	for _, in := range s.Instances {
		if in.Deleting {
			continue
		}
		if in.Phase == api.PhaseLost || (in.Phase.Terminal() && in.SpecHash != s.SpecHash) {
			res.Delete = append(res.Delete, in.Name)
			continue
		}
		if in.Phase.Terminal() {
			res.Exited = append(res.Exited, in.Name)
		}
		ready := in.Phase == api.PhaseRunning && in.Healthy
		if ready {
			res.Ready++
		}
		if in.SpecHash == s.SpecHash {
			current = append(current, in)
			if ready {
				res.ReadyUpdated++
			}
			if why := failure(in); why != "" && !s.Settled && res.Reason == "" {
				res.Reason = why
			}
		} else {
			old = append(old, in)
			if ready {
				readyOld++
			}
		}
	}
	sort.Strings(res.Delete)
	sort.Strings(res.Exited)
	newestFirst(current)
	unreadyFirst(old)
	if res.Reason != "" {
		res.Phase = RolloutFailed
	}
	defer func() {
		res.Updated = len(current) + res.Create
		if len(res.Delete) > 0 {
			gone := make(map[string]bool, len(res.Delete))
			for _, name := range res.Delete {
				gone[name] = true
			}
			for _, in := range current {
				if gone[in.Name] {
					res.Updated--
				}
			}
		}
		if res.Phase == RolloutProgressing && len(old) == 0 && res.ReadyUpdated == s.Replicas && len(current) == s.Replicas {
			res.Phase = RolloutComplete
		}
	}()

	if len(old) == 0 {
		switch {
		case len(current) < s.Replicas:
			res.Create = s.Replicas - len(current)
		case len(current) > s.Replicas:
			for _, in := range current[:len(current)-s.Replicas] {
				res.Delete = append(res.Delete, in.Name)
			}
		}
		return res
	}

	surge := s.MaxSurge
	if s.MaxUnavailable == 0 {
		surge = max(surge, 1)
	}
	if len(current) > s.Replicas {
		for _, in := range current[:len(current)-s.Replicas] {
			res.Delete = append(res.Delete, in.Name)
		}
		current = current[len(current)-s.Replicas:]
	}
	total := len(current) + len(old)
	if room := s.Replicas + surge - total; room > 0 && len(current) < s.Replicas && res.Phase != RolloutFailed {
		res.Create = min(room, s.Replicas-len(current))
	}
	// Old instances may go while enough stay ready: unready ones first
	// (they serve nothing) as long as the new ones not yet ready are
	// covered, then ready ones down to the minimum available.
	minAvailable := max(s.Replicas-s.MaxUnavailable, 0)
	newUnready := 0
	for _, in := range current {
		if !(in.Phase == api.PhaseRunning && in.Healthy) {
			newUnready++
		}
	}
	cleanup := total - minAvailable - newUnready
	retire := res.Ready - minAvailable
	for _, in := range old {
		ready := in.Phase == api.PhaseRunning && in.Healthy
		switch {
		case !ready && cleanup > 0:
			cleanup--
		case ready && retire > 0:
			retire--
		default:
			continue
		}
		res.Delete = append(res.Delete, in.Name)
	}
	return res
}

// failure says why an instance of a template being rolled out fails it, if it does.
func failure(in Instance) string {
	switch {
	case in.Phase == api.PhaseFailed:
		return fmt.Sprintf("instance %s exited with code %d", in.Name, in.ExitCode)
	case in.Reason == "Unhealthy":
		return fmt.Sprintf("instance %s failed its health check", in.Name)
	case in.Restarts > 0:
		return fmt.Sprintf("instance %s restarted %d times", in.Name, in.Restarts)
	}
	return ""
}

// newestFirst orders exited instances first (the first to go on a scale
// down), then by creation time, newest first, then by name for a stable answer.
func newestFirst(in []Instance) {
	slices.SortFunc(in, func(a, b Instance) int {
		if ta, tb := a.Phase.Terminal(), b.Phase.Terminal(); ta != tb {
			if ta {
				return -1
			}
			return 1
		}
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.Name, a.Name)
	})
}

// unreadyFirst orders old instances for retiring: unready ones first,
// then newest first.
func unreadyFirst(in []Instance) {
	newestFirst(in)
	slices.SortStableFunc(in, func(a, b Instance) int {
		ra, rb := a.Phase == api.PhaseRunning && a.Healthy, b.Phase == api.PhaseRunning && b.Healthy
		switch {
		case ra == rb:
			return 0
		case rb:
			return -1
		}
		return 1
	})
}
