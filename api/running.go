package api

import (
	"slices"
	"strings"
)

// FirstRunning is the instance a command given a service or job runs in
// (exec, port-forward): of insts, the first by name whose container runs.
// It is nil when none does.
func FirstRunning(insts []*Instance) *Instance {
	var first *Instance
	for _, in := range insts {
		if in.Status.Phase != PhaseRunning || in.Status.ContainerID == "" {
			continue
		}
		if first == nil || in.Metadata.Name < first.Metadata.Name {
			first = in
		}
	}
	return first
}

// OwnedBy keeps the instances of insts that owner (a service or job) made,
// sorted by name.
func OwnedBy(insts []*Instance, kind Kind, name string) []*Instance {
	var out []*Instance
	for _, in := range insts {
		if in.Spec.Owner.Kind == kind && in.Spec.Owner.Name == name {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b *Instance) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out
}
