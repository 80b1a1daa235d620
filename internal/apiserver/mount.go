package apiserver

import (
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/berth-dev/berth/api/errdefs"
)

// mount is a handler served under a path prefix next to the API.
type mount struct {
	prefix string
	h      http.Handler
	// signsIn: h authenticates callers of its own (a browser's cookie),
	// so requests the listener refuses reach it too, without an Identity.
	signsIn bool
}

// Mount serves h for every path under prefix (which ends in "/", as
// "/v2/") on the API's listeners, after the listener has authenticated
// the caller: h finds the Identity with IdentityFrom and decides itself
// what the caller may do (Config.Authorize is not asked), and no body
// limit applies. A handler that is also an ImagePinner (the image
// registry) pins the images of the services and jobs applied from then
// on; the first such handler does. Call it before serving.
func (s *Server) Mount(prefix string, h http.Handler) {
	if !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
		panic(fmt.Sprintf("apiserver: mount prefix %q: want /path/", prefix))
	}
	s.mounts = append(s.mounts, mount{prefix: prefix, h: h})
	if p, ok := h.(ImagePinner); ok && s.pinner == nil {
		s.pinner = p
	}
}

// MountSignIn is Mount for a handler that also signs callers in itself,
// as the dashboard does with its cookie: a request the listener's
// authenticator refuses is still served by h, without an Identity, and h
// must refuse what such a caller may not do.
func (s *Server) MountSignIn(prefix string, h http.Handler) {
	s.Mount(prefix, h)
	s.mounts[len(s.mounts)-1].signsIn = true
}

// signInMount is the handler of a MountSignIn prefix over path, or nil.
func (s *Server) signInMount(path string) http.Handler {
	for _, m := range s.mounts {
		if m.signsIn && (strings.HasPrefix(path, m.prefix) || path == strings.TrimSuffix(m.prefix, "/")) {
			return m.h
		}
	}
	return nil
}

// mounted is the handler mounted over path, or nil. A prefix's bare form
// ("/v2" for "/v2/") is its too.
func (s *Server) mounted(path string) http.Handler {
	if m := s.mountOf(path); m != nil {
		return m.h
	}
	return nil
}

// mountOf is the mount over path, or nil.
func (s *Server) mountOf(path string) *mount {
	for i, m := range s.mounts {
		if strings.HasPrefix(path, m.prefix) || path == strings.TrimSuffix(m.prefix, "/") {
			return &s.mounts[i]
		}
	}
	return nil
}

// AuthorizeImages is the rule for the image registry the servers mount at
// /v2/ (registry.Options.Authorize): admins push and pull, nodes only
// pull, and anyone else is unauthorized. Which images a node may pull is
// ReadableImages'.
func AuthorizeImages(r *http.Request, push bool) error {
	id, ok := IdentityFrom(r.Context())
	switch {
	case !ok || (!id.Admin && id.Node == ""):
		return fmt.Errorf("%w: no credentials: present a node certificate or a bearer token", errdefs.ErrUnauthorized)
	case id.Admin:
		return nil
	case push:
		return fmt.Errorf("node %q: %w: nodes may pull images, not push them", id.Node, errdefs.ErrForbidden)
	}
	return nil
}

// ReadableImages is what a caller of the servers' image registry may read
// (registry.Options.Readable): an admin everything; a node the images of
// the instances bound to it (their init and sidecar containers' too) and
// of those a live migration driven here is restoring on it, and nothing
// of the images only other nodes run: a private image's layers stay with
// the nodes that run it, whatever digests another node learns.
func (s *Server) ReadableImages(r *http.Request) (refs []string, all bool, who string, err error) {
	id, ok := IdentityFrom(r.Context())
	switch {
	case ok && id.Admin:
		return nil, true, id.Name, nil
	case !ok || id.Node == "":
		return nil, false, "anonymous", nil
	}
	who = fmt.Sprintf("node %q", id.Node)
	insts, _, err := s.store.Assignments(r.Context(), id.Node)
	if err != nil {
		return nil, false, who, err
	}
	for _, in := range insts {
		refs = append(refs, in.Spec.Template.Images()...)
	}
	return append(refs, s.migrating.of(id.Node)...), false, who, nil
}

// imagesInFlight are images nodes may read before an instance that runs
// them is bound there: the target of a live migration pulls the image
// while the dump streams, and is bound the instance only after.
type imagesInFlight struct {
	mu sync.Mutex
	m  map[string]map[string]int // node → image → how many migrations
}

// add lets node read imgs until done is called.
func (f *imagesInFlight) add(node string, imgs []string) (done func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]map[string]int{}
	}
	if f.m[node] == nil {
		f.m[node] = map[string]int{}
	}
	for _, img := range imgs {
		f.m[node][img]++
	}
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, img := range imgs {
			if f.m[node][img]--; f.m[node][img] <= 0 {
				delete(f.m[node], img)
			}
		}
		if len(f.m[node]) == 0 {
			delete(f.m, node)
		}
	}
}

func (f *imagesInFlight) of(node string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for img := range f.m[node] {
		out = append(out, img)
	}
	return out
}
