package controller

import (
	"context"
	"errors"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// dataPass rolls each service with rollOnChange whose configs' or
// secrets' data changed since it was last rolled for them: level by
// level, so a change the API server's own roll missed (it or the
// controller was down) rolls the service once this pass runs. The roll
// and its record are one write (api.ServiceSpec.RollForData), so it
// never happens twice for one change.
func (m *Manager) dataPass(ctx context.Context, sn *snapshot) error {
	var errs []error
	for _, svc := range sn.services {
		if !svc.Spec.RollOnChange || len(svc.Spec.Template.DataRefs()) == 0 {
			continue
		}
		ns := svc.Metadata.Namespace
		digest := svc.Spec.Template.DataDigest(func(r api.ObjectRef) string { return m.s.DataDigest(ctx, ns, r) })
		next := own(svc)
		if !next.Spec.RollForData(digest, m.opt.Clock().UTC()) {
			continue
		}
		rolled := !next.Spec.Template.RestartedAt.Equal(svc.Spec.Template.RestartedAt)
		if err := m.s.Update(ctx, next, svc.Metadata.Revision); err != nil {
			if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
				continue // changed meanwhile: the next pass looks again
			}
			errs = append(errs, err)
			continue
		}
		if rolled {
			m.log.Info("rolled for changed data", "service", api.RefOf(svc))
			m.event(ctx, next, api.EventNormal, "DataChanged", "a config or secret it uses changed: rolling")
		}
	}
	return errors.Join(errs...)
}
