package controller

import (
	"slices"
	"sort"
	"strings"
)

// ServiceState is one service and its instances.
type ServiceState struct {
	Replicas int
	// SpecHash is the current template's; instances with another are replaced in a rolling update.
	SpecHash string
	// MaxSurge is how many instances above Replicas a rolling update may run (at least 1).
	MaxSurge  int
	Instances []Instance
}

// ServiceResult is what the service controller writes.
type ServiceResult struct {
	// Create is how many new instances (with the current template) to make.
	Create int
	// Delete names the instances to remove, in order.
	Delete []string
	// Ready counts running, healthy instances of the current template.
	Ready int
	// Exited names instances of the current template that ended for good
	// (their restart policy said so): they keep their slot, and their
	// output, until the service is changed, restarted or scaled down.
	Exited []string
}

// ComputeService keeps Replicas healthy instances. Lost instances are
// replaced; an instance that succeeded or failed did so under a restart
// policy that said not to run it again (the agent restarts the others in
// place), so it stays, holding its slot, until the template changes or the
// service is scaled down, exited ones going first. Extra ones go newest
// first; instances
// of an old template are replaced one surge at a time, an old one going
// only once a new one runs healthy.
func ComputeService(s ServiceState) ServiceResult {
	var res ServiceResult
	var current, old []Instance
	for _, in := range s.Instances {
		if in.Deleting {
			continue
		}
		if in.Phase == Lost || (in.Phase.Terminal() && in.SpecHash != s.SpecHash) {
			res.Delete = append(res.Delete, in.Name)
			continue
		}
		if in.Phase.Terminal() {
			res.Exited = append(res.Exited, in.Name)
		}
		if in.SpecHash == s.SpecHash {
			current = append(current, in)
			if in.Phase == Running && in.Healthy {
				res.Ready++
			}
		} else {
			old = append(old, in)
		}
	}
	sort.Strings(res.Delete)
	sort.Strings(res.Exited)
	newestFirst(current)
	newestFirst(old)

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

	// Rolling update: run at most Replicas+surge in all; retire an old
	// instance for each new one that is ready beyond what is needed.
	surge := max(s.MaxSurge, 1)
	total := len(current) + len(old)
	if len(current) > s.Replicas {
		for _, in := range current[:len(current)-s.Replicas] {
			res.Delete = append(res.Delete, in.Name)
		}
		current = current[len(current)-s.Replicas:]
		total = len(current) + len(old)
	}
	if room := s.Replicas + surge - total; room > 0 && len(current) < s.Replicas {
		res.Create = min(room, s.Replicas-len(current))
	}
	// Old instances beyond what still needs covering can go now.
	excess := res.Ready + len(old) - s.Replicas
	for i := 0; i < excess && i < len(old); i++ {
		res.Delete = append(res.Delete, old[i].Name)
	}
	return res
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
