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
	Settled bool
	// FailedBefore is why the current template's rollout failed at an
	// earlier pass, if it did. A failed rollout stays failed until the
	// template changes: an instance between its restart and its next
	// report shows no failure, and must not let the rollout resume.
	FailedBefore string
	Instances    []Instance
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
	current, old := part(&res, s.Instances, s.SpecHash, s.Settled, s.FailedBefore, func(*Instance) bool { return false })
	newestFirst(current)
	unreadyFirst(old)
	if len(old) == 0 {
		scale(&res, s.Replicas, current)
	} else {
		current = roll(&res, s, current, old)
	}
	settle(&res, s.Replicas, current, len(old))
	return res
}

// part sorts a service's instances for res: those to delete (lost, gone
// by gone, or ended under an old template), those exited, the ready
// counts and the first failure of the rollout. It returns the live ones
// of the current template and of older ones, pointing into instances:
// a copy of each was most of what a pass over a changed service
// allocated (at 300,000 instances, 50 MB a pass).
func part(res *ServiceResult, instances []Instance, hash string, settled bool, failedBefore string, gone func(*Instance) bool) (current, old []*Instance) {
	res.Phase = RolloutProgressing
	// Most are current: one allocation, not a slice grown again and again
	// (at 300 replicas a service, half the garbage of a pass).
	current = make([]*Instance, 0, len(instances))
	for i := range instances {
		in := &instances[i]
		if in.Deleting {
			continue
		}
		if in.Phase == api.PhaseLost || gone(in) || (in.Phase.Terminal() && in.SpecHash != hash) {
			res.Delete = append(res.Delete, in.Name)
			continue
		}
		if in.Phase.Terminal() {
			res.Exited = append(res.Exited, in.Name)
		}
		if in.serving() {
			res.Ready++
		}
		if in.SpecHash != hash {
			old = append(old, in)
			continue
		}
		current = append(current, in)
		if in.serving() {
			res.ReadyUpdated++
		}
		if why := failure(in); why != "" && !settled && res.Reason == "" {
			res.Reason = why
		}
	}
	sort.Strings(res.Delete)
	sort.Strings(res.Exited)
	if res.Reason == "" && !settled {
		res.Reason = failedBefore
	}
	if res.Reason != "" {
		res.Phase = RolloutFailed
	}
	return current, old
}

// scale makes or removes instances of the current template (newest
// first) to have replicas of them, when no old ones are left.
func scale(res *ServiceResult, replicas int, current []*Instance) {
	switch {
	case len(current) < replicas:
		res.Create = replicas - len(current)
	case len(current) > replicas:
		for _, in := range current[:len(current)-replicas] {
			res.Delete = append(res.Delete, in.Name)
		}
	}
}

// roll is a step of a rolling update: the current template's instances
// beyond the replicas go, new ones come within the surge unless the
// rollout failed, and old ones go while enough stay ready. It returns the
// current instances that stay.
func roll(res *ServiceResult, s ServiceState, current, old []*Instance) []*Instance {
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
		if !in.serving() {
			newUnready++
		}
	}
	cleanup := total - minAvailable - newUnready
	retire := res.Ready - minAvailable
	for _, in := range old {
		ready := in.serving()
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
	return current
}

// settle counts the current template's live instances once the pass has
// decided, and completes the rollout when exactly replicas of them are
// ready and no old one is left.
func settle(res *ServiceResult, replicas int, current []*Instance, old int) {
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
	if res.Phase == RolloutProgressing && old == 0 && res.ReadyUpdated == replicas && len(current) == replicas {
		res.Phase = RolloutComplete
	}
}

// serving reports whether in is running and healthy: ready to serve.
func (in *Instance) serving() bool { return in.Phase == api.PhaseRunning && in.Healthy }

// failure says why an instance of a template being rolled out fails it, if it does.
func failure(in *Instance) string {
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
func newestFirst(in []*Instance) {
	slices.SortFunc(in, func(a, b *Instance) int {
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
func unreadyFirst(in []*Instance) {
	newestFirst(in)
	slices.SortStableFunc(in, func(a, b *Instance) int {
		ra, rb := a.serving(), b.serving()
		switch {
		case ra == rb:
			return 0
		case rb:
			return -1
		}
		return 1
	})
}
