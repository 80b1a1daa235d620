package apiserver

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// templateOf is the template an object runs, nil for kinds that run none.
func templateOf(obj api.Object) (*api.Template, string) {
	switch o := obj.(type) {
	case *api.Service:
		return &o.Spec.Template, "spec.template"
	case *api.Job:
		return &o.Spec.Template, "spec.template"
	case *api.Instance:
		return o.Spec.Template, "spec.template" // nil, none yet: nothing to admit
	case *api.CronJob:
		return &o.Spec.Job.Template, "spec.job.template"
	}
	return nil, ""
}

// admitVolumes applies the cluster's rules on volumes to a write: a
// hostPath outside the allowed directories is refused, naming the field;
// and a node writes only volumes of its own.
func (s *Server) admitVolumes(ctx context.Context, obj api.Object) error {
	if v, ok := obj.(*api.Volume); ok {
		if id, _ := IdentityFrom(ctx); id.Node != "" && v.Spec.Node != id.Node {
			return fmt.Errorf("node %q: %w: may not write %s for node %q", id.Node, errdefs.ErrForbidden, api.RefOf(v), v.Spec.Node)
		}
		return nil
	}
	t, prefix := templateOf(obj)
	if t == nil || len(s.allowedHostPaths) == 0 {
		return nil
	}
	var fe []api.FieldError
	for i, v := range t.Volumes {
		if v.HostPath != "" && !api.HostPathAllowed(v.HostPath, s.allowedHostPaths) {
			fe = append(fe, api.FieldError{Field: fmt.Sprintf("%s.volumes[%d].hostPath", prefix, i),
				Reason: fmt.Sprintf("%s is outside the allowed host paths (%s)", v.HostPath, strings.Join(s.allowedHostPaths, ", "))})
		}
	}
	if fe != nil {
		return fmt.Errorf("%s: %w", api.RefOf(obj), &api.ValidationError{Fields: fe})
	}
	return nil
}

// volumeInUse refuses the removal of a named volume that an instance not
// yet finished mounts: its data would go from under it.
func (s *Server) volumeInUse(ctx context.Context, t target) error {
	insts, _, err := store.List[api.Instance](ctx, s.store, t.namespace)
	if err != nil {
		return err
	}
	for _, in := range insts {
		if in.Status.Phase.Terminal() {
			continue
		}
		if in.Spec.Template.Uses(t.name) {
			return fmt.Errorf("%s: %w: in use by %s; remove it first", t.ref(), errdefs.ErrConflict, api.RefOf(in))
		}
	}
	return nil
}
