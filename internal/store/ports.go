package store

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// checkHostPorts refuses a service that publishes a host port another
// service already publishes: every node forwards a published port to its
// one service, so two cannot share it anywhere in the cluster.
func (s *Store) checkHostPorts(ctx context.Context, svc *api.Service) error {
	want := map[string]int{}
	for i, p := range svc.Spec.Template.Ports {
		if p.Host > 0 {
			want[portKey(p)] = i
		}
	}
	if len(want) == 0 {
		return nil
	}
	others, _, err := List[api.Service](ctx, s, "")
	if err != nil {
		return err
	}
	var fe []api.FieldError
	for _, o := range others {
		if o.Metadata.Namespace == svc.Metadata.Namespace && o.Metadata.Name == svc.Metadata.Name {
			continue
		}
		for _, p := range o.Spec.Template.Ports {
			if i, clash := want[portKey(p)]; clash && p.Host > 0 {
				fe = append(fe, api.FieldError{Field: fmt.Sprintf("template.ports[%d].host", i),
					Reason: fmt.Sprintf("port %s is already published by service %s/%s", portKey(p), o.Metadata.Namespace, o.Metadata.Name)})
			}
		}
	}
	if len(fe) > 0 {
		return fmt.Errorf("%w: %w", errdefs.ErrConflict, &api.ValidationError{Fields: fe})
	}
	return nil
}

func portKey(p api.Port) string {
	proto := p.Protocol
	if proto == "" {
		proto = "tcp"
	}
	return fmt.Sprintf("%d/%s", p.Host, proto)
}
