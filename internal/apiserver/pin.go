package apiserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// ImagePinner resolves image tags to digests for the server: when a
// handler mounted with Mount is one (the registry at /v2/ is), every
// service and job applied has its template image pinned with it, as
// Docker Swarm does. Agents then pull and run that exact image, so a tag
// moved between two agents' pulls cannot put two different images under
// one service; re-applying the same spec after the tag moved rolls the
// service out to the new digest, and re-applying it while the tag stays
// put changes nothing.
type ImagePinner interface {
	// PinImage returns ref as REPOSITORY:TAG@sha256:<hex>, the digest
	// being the manifest's that the pinner's registry serves for the tag,
	// or ref unchanged when it names a digest already. An error wrapping
	// errdefs.ErrNotFound means the registry has no such tag, one wrapping
	// errdefs.ErrInvalidArgument that it cannot serve such a reference.
	// policy (api.DefaultPullPolicy when empty) says whether the image may,
	// or must, be fetched from its registry to be pinned; auth, when not
	// nil, holds the credentials of the template's imagePullSecrets.
	PinImage(ctx context.Context, ref string, policy api.PullPolicy, auth *api.RegistryAuth) (string, error)
}

// pinImage pins the images of a service's or job's template (see
// ImagePinner): the main container's and every init and sidecar
// container's that names one of its own (the others run the main one's).
// An image the registry does not have is left as given: an agent may
// have it in its own store (built there, say), and only fails the
// instance if it does not.
func (s *Server) pinImage(ctx context.Context, obj api.Object) error {
	var t *api.Template
	switch o := obj.(type) {
	case *api.Service:
		t = &o.Spec.Template
	case *api.Job:
		t = &o.Spec.Template
	}
	if t == nil || s.pinner == nil {
		return nil
	}
	// A secret applied after the template (later in the same file) is
	// missing yet: the image is pinned without it, and the instances
	// read it when they start.
	auth, err := s.registryAuth(ctx, obj.GetMetadata().Namespace, t)
	if errdefs.IsNotFound(err) {
		s.log.Debug("pinning without pull secrets", "object", api.RefOf(obj), "reason", err)
	} else if err != nil {
		return fmt.Errorf("%s: %w", api.RefOf(obj), err)
	}
	if t.Image, err = s.pinRef(ctx, obj, t.Image, t.PullPolicy, auth); err != nil {
		return err
	}
	// A copy: the template may share its containers with another object
	// (a cron job's run shares its cron job's).
	t.Containers = slices.Clone(t.Containers)
	for i := range t.Containers {
		c := &t.Containers[i]
		if c.Image == "" {
			continue
		}
		if c.Image, err = s.pinRef(ctx, obj, c.Image, t.PullPolicy, auth); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
	}
	return nil
}

// pinRef is ref pinned to its digest, or ref as given when the registry
// does not have it.
func (s *Server) pinRef(ctx context.Context, obj api.Object, ref string, policy api.PullPolicy, auth *api.RegistryAuth) (string, error) {
	pinned, err := s.pinner.PinImage(ctx, ref, policy, auth)
	switch {
	case errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err):
		s.log.Debug("image not pinned", "object", api.RefOf(obj), "image", ref, "reason", err)
		return ref, nil
	case err != nil:
		return ref, fmt.Errorf("%s: pin image %q: %w", api.RefOf(obj), ref, err)
	}
	if pinned != ref {
		s.log.Debug("image pinned", "object", api.RefOf(obj), "image", ref, "pinned", pinned)
	}
	return pinned, nil
}
