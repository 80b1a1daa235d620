package api

import (
	"fmt"

	"github.com/berth-dev/berth/api/errdefs"
)

// TemplateHash is the hash of s's template: its Hash, or the hash s's
// status records for it when that is its StoredHash. A template that
// spelled a default out was hashed so before Hash left defaults out, and
// its instances carry that hash: while the template is as it was then,
// it keeps it, and an upgrade replaces none of them.
func (s *Service) TemplateHash() string {
	h := s.Spec.Template.Hash()
	if rec := s.Status.Rollout.Hash; rec != "" && rec != h && s.Spec.Template.StoredHash() == rec {
		return rec
	}
	return h
}

// RollbackTarget is the template of s's history that a rollback puts
// back: revision to, or the newest one other than the current template
// when to is 0. The CLI's rollout undo and the dashboard both ask it.
func (s *Service) RollbackTarget(to int) (TemplateRevision, error) {
	cur := s.TemplateHash()
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
