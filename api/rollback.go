package api

import (
	"fmt"

	"github.com/berth-dev/berth/api/errdefs"
)

// RollbackTarget is the template of s's history that a rollback puts
// back: revision to, or the newest one other than the current template
// when to is 0. The CLI's rollout undo and the dashboard both ask it.
func (s *Service) RollbackTarget(to int) (TemplateRevision, error) {
	cur := s.Spec.Template.Hash()
	hist := s.Status.History
	if to != 0 {
		for _, h := range hist {
			if h.Revision == to {
				if h.Hash == cur {
					return h, fmt.Errorf("service %q: %w: revision %d is the current template already", s.Metadata.Name, errdefs.ErrFailedPrecondition, to)
				}
				return h, nil
			}
		}
		return TemplateRevision{}, fmt.Errorf("service %q: %w: revision %d: no such revision in its history", s.Metadata.Name, errdefs.ErrNotFound, to)
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i].Hash != cur {
			return hist[i], nil
		}
	}
	return TemplateRevision{}, fmt.Errorf("service %q: %w: no previous template to roll back to", s.Metadata.Name, errdefs.ErrFailedPrecondition)
}
