package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
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
//
// A pull secret the template names that does not exist yet (applied
// later, or in the same file after the template) leaves the images as
// the stored object has them pinned, or else unpinned, rather than
// pinned without the credentials they are meant to be fetched with;
// warning says so, naming the secret, for the caller to record once the
// object is stored (pullSecretMissing). Creating the secret pins them
// then (repinFor), as Kubernetes retries a pull once its secret appears.
func (s *Server) pinImage(ctx context.Context, obj api.Object) (warning string, err error) {
	t := pinnedTemplate(obj)
	if t == nil || s.pinner == nil {
		return "", nil
	}
	ref := api.RefOf(obj)
	// A copy: the template may share its containers with another object
	// (a cron job's run shares its cron job's).
	t.Containers = slices.Clone(t.Containers)
	auth, err := s.registryAuth(ctx, obj.GetMetadata().Namespace, t)
	if errdefs.IsNotFound(err) {
		image := t.Image
		s.keepStoredPins(ctx, obj, t)
		return fmt.Sprintf("%s: %v: image %s is not pulled until the secret exists; creating it pins the image", ref, err, image), nil
	} else if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	if t.Image, err = s.pinRef(ctx, obj, t.Image, t.PullPolicy, auth); err != nil {
		return "", err
	}
	for i := range t.Containers {
		c := &t.Containers[i]
		if c.Image == "" {
			continue
		}
		if c.Image, err = s.pinRef(ctx, obj, c.Image, t.PullPolicy, auth); err != nil {
			return "", fmt.Errorf("container %s: %w", c.Name, err)
		}
	}
	return "", nil
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

// pinnedTemplate is the template of obj whose images are pinned, or nil.
func pinnedTemplate(obj api.Object) *api.Template {
	switch o := obj.(type) {
	case *api.Service:
		return &o.Spec.Template
	case *api.Job:
		return &o.Spec.Template
	}
	return nil
}

// keepStoredPins gives t's images the digests the stored object has them
// pinned to (IMAGE@DIGEST), where it has.
func (s *Server) keepStoredPins(ctx context.Context, obj api.Object, t *api.Template) {
	cur, _ := api.New(obj.GetKind())
	m := obj.GetMetadata()
	if cur == nil || s.store.GetInto(ctx, cur, m.Namespace, m.Name) != nil {
		return
	}
	st := pinnedTemplate(cur)
	if st == nil {
		return
	}
	keep := func(image, stored string) string {
		if image != "" && strings.HasPrefix(stored, image+"@") {
			return stored
		}
		return image
	}
	t.Image = keep(t.Image, st.Image)
	for i := range t.Containers {
		if sc, ok := st.Container(t.Containers[i].Name); ok && sc != nil {
			t.Containers[i].Image = keep(t.Containers[i].Image, sc.Image)
		}
	}
}

// unpinned reports whether one of t's images is named by tag alone.
func unpinned(t *api.Template) bool {
	if !strings.Contains(t.Image, "@") {
		return true
	}
	for _, c := range t.Containers {
		if c.Image != "" && !strings.Contains(c.Image, "@") {
			return true
		}
	}
	return false
}

// repinFor pins the images of the services and jobs of namespace that
// name the pull secret name and run an image by tag alone: those applied
// before the secret existed (see pinImage). A pinned image rolls a
// service out to it. What fails is recorded as an event on the object,
// not answered: the secret itself was stored.
func (s *Server) repinFor(ctx context.Context, namespace, name string) {
	if s.pinner == nil {
		return
	}
	var objs []api.Object
	svcs, _, err := store.List[api.Service](ctx, s.store, namespace)
	if err != nil {
		s.log.Warn("pin images after a pull secret", "secret", name, "err", err)
		return
	}
	for _, o := range svcs {
		objs = append(objs, o)
	}
	jobs, _, err := store.List[api.Job](ctx, s.store, namespace)
	if err != nil {
		s.log.Warn("pin images after a pull secret", "secret", name, "err", err)
		return
	}
	for _, o := range jobs {
		objs = append(objs, o)
	}
	for _, o := range objs {
		t := pinnedTemplate(o)
		if !unpinned(t) || !slices.Contains(t.ImagePullSecrets, name) {
			continue
		}
		m := o.GetMetadata()
		tg := target{kind: o.GetKind(), namespace: m.Namespace, name: m.Name}
		var pinErr error
		var pinned, warning string
		_, err := s.modify(ctx, tg, 0, func(o api.Object) {
			if warning, pinErr = s.pinImage(ctx, o); pinErr == nil {
				pinned = pinnedTemplate(o).Image
			}
		})
		if err == nil {
			err = pinErr
		}
		switch {
		case errdefs.IsNotFound(err):
		case warning != "":
			// Another of its pull secrets is missing still.
			s.objectEvent(ctx, o, api.EventWarning, "PullSecretMissing", warning)
		case err != nil:
			s.objectEvent(ctx, o, api.EventWarning, "PinFailed", fmt.Sprintf("pull secret %s exists now, but pinning image %s failed: %v", name, t.Image, err))
		case strings.Contains(pinned, "@"):
			s.objectEvent(ctx, o, api.EventNormal, "ImagePinned", fmt.Sprintf("image %s pinned to %s with pull secret %s", t.Image, pinned, name))
		}
	}
}

// objectEvent records an event about obj from the API server; a failure
// is only logged.
func (s *Server) objectEvent(ctx context.Context, obj api.Object, typ api.EventType, reason, msg string) {
	m := obj.GetMetadata()
	ev := &api.Event{
		Metadata: api.Metadata{Namespace: m.Namespace},
		Time:     time.Now().UTC(),
		Object:   api.ObjectRef{Kind: obj.GetKind(), Namespace: m.Namespace, Name: m.Name},
		Type:     typ, Reason: reason, Message: msg, Source: "apiserver",
	}
	if err := s.store.RecordEvent(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Warn("record event", "object", api.RefOf(obj), "reason", reason, "err", err)
	}
}

// pullSecretMissing records pinImage's warning about obj, stored now, and
// sets it as the answer's Warning header (RFC 9111's form, as Kubernetes
// sends its warnings), for the CLI to print.
func (s *Server) pullSecretMissing(ctx context.Context, w http.ResponseWriter, obj api.Object, warning string) {
	if warning == "" {
		return
	}
	s.objectEvent(ctx, obj, api.EventWarning, "PullSecretMissing", warning)
	w.Header().Add("Warning", "299 - "+strconv.Quote(warning))
}
