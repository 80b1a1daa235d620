package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/registry"
)

// DefaultPullTimeout bounds one image pull, a stalled connection included.
const DefaultPullTimeout = 10 * time.Minute

// PullingImages is an agent's image store that fetches an image it lacks
// from the control plane's registry (/v2/ on the API servers) before it
// prepares it. The reference is the instance's: pinned by digest when it
// names one (REPOSITORY[:TAG]@sha256:…), else by tag. Every blob is
// checked against its digest (registry.Pull). Concurrent prepares of one
// missing reference share a single pull. Progress is recorded as events
// on the instance (start, every quarter, done or failed).
type PullingImages struct {
	StoreImages
	// Base is the registry's URL (https://HOST:PORT); Transport carries
	// the agent's TLS client certificate (or token) to it.
	Base      string
	Transport http.RoundTripper
	// Events records progress; nil records none.
	Events *client.Client
	// Node is this node, the source of the events and their object when
	// the instance cannot be told from the container id.
	Node string
	// Timeout bounds a pull; DefaultPullTimeout when zero.
	Timeout time.Duration
	Logger  *slog.Logger

	pulling singleflight.Group // by reference
}

var _ Images = (*PullingImages)(nil)

// Prepare unpacks ref for a container, pulling the image first when the
// node's store does not have it.
func (p *PullingImages) Prepare(ctx context.Context, ref, containerID string) (Rootfs, error) {
	local := localRef(ref)
	rootfs, err := p.StoreImages.Prepare(ctx, local, containerID)
	if err == nil || !errors.Is(err, errdefs.ErrNotFound) || p.Base == "" {
		return rootfs, err
	}
	if err := p.pull(ctx, ref, containerID); err != nil {
		return Rootfs{}, err
	}
	return p.StoreImages.Prepare(ctx, local, containerID)
}

// localRef is how the local store knows ref: by its digest when it has
// one (the store resolves names and digests, not both at once).
func localRef(ref string) string {
	if _, d, ok := strings.Cut(ref, "@"); ok {
		return d
	}
	return ref
}

// pull fetches ref once however many containers wait for it; a waiter
// whose ctx ends stops waiting, the pull goes on for the others.
func (p *PullingImages) pull(ctx context.Context, ref, containerID string) error {
	ch := p.pulling.DoChan(ref, func() (any, error) {
		// It outlives this caller: others may wait for it too.
		ctx := context.WithoutCancel(ctx)
		// A pull that ended between our miss and now has left the image.
		if _, err := p.StoreImages.Store.Resolve(ctx, localRef(ref)); err == nil {
			return nil, nil
		}
		return nil, p.fetch(ctx, ref, p.object(containerID))
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch pulls ref, recording events about obj.
func (p *PullingImages) fetch(ctx context.Context, ref string, obj api.ObjectRef) error {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultPullTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ev := p.recorder(ctx, obj)
	defer ev.close()
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}

	start := time.Now()
	ev.record(api.EventNormal, "Pulling", fmt.Sprintf("pulling image %s from %s", ref, p.Base))
	var tr transferred
	img, err := registry.Pull(ctx, p.StoreImages.Store, p.Base, ref, registry.PullOptions{
		Transport: p.Transport,
		Progress: func(pr registry.Progress) {
			if pct, ok := tr.add(pr); ok {
				ev.record(api.EventNormal, "Pulling", fmt.Sprintf("pulling image %s: %d%% of %s", ref, pct, byteCount(tr.total())))
			}
		},
	})
	metrics.ImagePullDuration.Observe(time.Since(start).Seconds())
	metrics.ImagePullBytes.Add(float64(tr.fetched()))
	if err != nil {
		metrics.ImagePulls.WithLabelValues("failed").Inc()
		log.Warn("image pull failed", "image", ref, "server", p.Base, "err", err)
		ev.record(api.EventWarning, "PullFailed", fmt.Sprintf("pulling image %s failed: %v", ref, err))
		return err
	}
	metrics.ImagePulls.WithLabelValues("ok").Inc()
	took := time.Since(start).Round(time.Millisecond)
	log.Info("pulled image", "image", ref, "digest", img.Digest, "fetched", tr.fetched(), "took", took)
	ev.record(api.EventNormal, "Pulled", fmt.Sprintf("pulled image %s (%s, %s fetched) in %s", ref, img.Digest, byteCount(tr.fetched()), took))
	return nil
}

// object is what events about containerID's pull are about: its instance,
// read from the id ("NAMESPACE.NAME.UID.ATTEMPT"), or else the node.
func (p *PullingImages) object(containerID string) api.ObjectRef {
	if f := strings.Split(containerID, "."); len(f) == 4 && api.ValidateName(f[0]) == nil && api.ValidateName(f[1]) == nil {
		return api.ObjectRef{Kind: api.KindInstance, Namespace: f[0], Name: f[1]}
	}
	return api.ObjectRef{Kind: api.KindNode, Name: p.Node}
}

// transferred adds up the layers' progress into one percentage, reported
// when it crosses a quarter. Layers announce their sizes as they start,
// so the figure is of the layers under way or done.
type transferred struct {
	layers map[string]registry.Progress
	next   int // the next quarter to report: 25, 50, 75
}

func (t *transferred) add(pr registry.Progress) (int, bool) {
	if t.layers == nil {
		t.layers, t.next = map[string]registry.Progress{}, 25
	}
	t.layers[pr.Layer] = pr
	total := t.total()
	if total <= 0 || t.next > 75 {
		return 0, false
	}
	var done int64
	for _, l := range t.layers {
		done += l.Done
		if l.Cached {
			done += l.Total - l.Done
		}
	}
	pct := int(done * 100 / total)
	if pct < t.next || pct >= 100 {
		return 0, false
	}
	for t.next <= pct {
		t.next += 25
	}
	return pct, true
}

func (t *transferred) total() int64 {
	var n int64
	for _, l := range t.layers {
		n += l.Total
	}
	return n
}

// fetched is how many bytes came over the network.
func (t *transferred) fetched() int64 {
	var n int64
	for _, l := range t.layers {
		if !l.Cached {
			n += l.Done
		}
	}
	return n
}

func byteCount(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// eventRecorder sends a pull's events in order from its own goroutine,
// so a slow API never slows the pull; events that do not fit the queue
// are dropped.
type eventRecorder struct {
	ch   chan *api.Event
	done chan struct{}
	obj  api.ObjectRef
	src  string
}

func (p *PullingImages) recorder(ctx context.Context, obj api.ObjectRef) *eventRecorder {
	r := &eventRecorder{ch: make(chan *api.Event, 8), done: make(chan struct{}), obj: obj, src: "agent/" + p.Node}
	go func() {
		defer close(r.done)
		for ev := range r.ch {
			if p.Events == nil {
				continue
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if _, err := p.Events.Events().Record(rctx, ev); err != nil && p.Logger != nil {
				p.Logger.Debug("recording a pull event failed", "object", r.obj, "err", err)
			}
			cancel()
		}
	}()
	return r
}

func (r *eventRecorder) record(typ api.EventType, reason, msg string) {
	ev := &api.Event{Time: time.Now(), Object: r.obj, Type: typ, Reason: reason, Message: msg, Source: r.src}
	ev.Metadata.Namespace = r.obj.Namespace
	select {
	case r.ch <- ev:
	default:
	}
}

// close sends what is queued and returns.
func (r *eventRecorder) close() {
	close(r.ch)
	<-r.done
}

// StoreImages serves a node's image store to the agent.
type StoreImages struct{ Store *image.Store }

var _ Images = StoreImages{}

// Prepare unpacks ref for a container and says how to start it. A ref
// pinned to a digest (REPOSITORY:TAG@sha256:…) is the image of that digest,
// whatever the tag names now.
func (i StoreImages) Prepare(ctx context.Context, ref, containerID string) (Rootfs, error) {
	snap, err := i.Store.Prepare(ctx, localRef(ref), containerID)
	if err != nil {
		return Rootfs{}, err
	}
	c := snap.Image.Config
	return Rootfs{LowerDirs: snap.LowerDirs, Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env,
		WorkingDir: c.WorkingDir, User: c.User}, nil
}

// Release forgets that a container uses its image.
func (i StoreImages) Release(ctx context.Context, containerID string) error {
	err := i.Store.Release(ctx, containerID)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
