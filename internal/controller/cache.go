package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// cache mirrors what a pass reads (nodes, services, jobs, instances, cron
// jobs and the held heartbeat leases): listed once, then kept current by a single
// watch on the whole store. A pass then costs no reads, which matters
// when it runs for every change among thousands of objects.
//
// Passes get the cached objects themselves, read-only: one that changes
// an object copies it first (see own), and never changes the maps and
// slices a copy shares with the cache.
type cache struct {
	s *store.Store

	mu    sync.Mutex
	rev   int64 // every change up to here is applied
	ready bool
	objs  map[api.Kind]map[string]api.Object
	// order holds, by kind, the keys of the cached objects in the order a
	// pass reads them (namespace, then name); a kind's is dropped when a
	// key comes or goes. Most changes are statuses: a snapshot then walks
	// the keys instead of sorting every object again, which at 20,000
	// instances was a fifth of an idle server's CPU.
	order   map[api.Kind][]string
	leases  map[string]bool
	advance chan struct{} // closed and replaced whenever rev moves
}

var cachedKinds = []api.Kind{api.KindNode, api.KindService, api.KindJob, api.KindInstance, api.KindCronJob}

func newCache(s *store.Store) *cache {
	return &cache{s: s, advance: make(chan struct{})}
}

func objKey(ns, name string) string { return ns + "/" + name }

// fill lists everything afresh, as of one revision, and returns it.
func (c *cache) fill(ctx context.Context) (int64, error) {
	rev, err := c.s.Revision(ctx)
	if err != nil {
		return 0, err
	}
	errs := make([]error, len(cachedKinds)+1)
	lists := make([][]api.Object, len(cachedKinds))
	var wg sync.WaitGroup
	for i, k := range cachedKinds {
		wg.Go(func() {
			_, errs[i] = c.s.ListFuncAt(ctx, k, "", rev, func(value []byte, modRev int64) error {
				obj, err := api.New(k)
				if err != nil {
					return err
				}
				if err := store.Decode(obj, value, modRev); err != nil {
					return err
				}
				lists[i] = append(lists[i], obj)
				return nil
			})
		})
	}
	var leases map[string]bool
	wg.Go(func() { leases, _, errs[len(cachedKinds)] = c.s.LiveNodesAt(ctx, rev) })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	objs := map[api.Kind]map[string]api.Object{}
	for i, k := range cachedKinds {
		m := make(map[string]api.Object, len(lists[i]))
		for _, o := range lists[i] {
			md := o.GetMetadata()
			m[objKey(md.Namespace, md.Name)] = o
		}
		objs[k] = m
	}
	c.mu.Lock()
	c.objs, c.leases, c.rev, c.ready = objs, leases, rev, true
	c.order = map[api.Kind][]string{}
	c.bump()
	c.mu.Unlock()
	return rev, nil
}

// bump wakes waiters; c.mu is held.
func (c *cache) bump() {
	close(c.advance)
	c.advance = make(chan struct{})
}

// apply puts one watch batch in and says whether it changed anything a
// pass looks at.
func (c *cache) apply(b store.ChangeBatch) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := false
	for _, ch := range b.Changes {
		changed = true
		if ch.Lease != "" {
			if ch.Type == store.Deleted {
				delete(c.leases, ch.Lease)
			} else {
				c.leases[ch.Lease] = true
			}
			continue
		}
		m := c.objs[ch.Kind]
		k := objKey(ch.Namespace, ch.Name)
		if ch.Object != nil {
			md := ch.Object.GetMetadata()
			k = objKey(md.Namespace, md.Name)
		}
		_, had := m[k]
		if ch.Type == store.Deleted {
			if had {
				delete(m, k)
				delete(c.order, ch.Kind)
			}
			continue
		}
		if !had {
			delete(c.order, ch.Kind)
		}
		m[k] = ch.Object
	}
	if b.Revision > c.rev {
		c.rev = b.Revision
		c.bump()
	}
	return changed
}

// waitFor waits until the cache has applied revision rev.
func (c *cache) waitFor(ctx context.Context, rev int64, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		ok, cur, adv := c.ready && c.rev >= rev, c.rev, c.advance
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-adv:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("the controller's cache is at revision %d, not yet %d after %v", cur, rev, timeout)
		}
	}
}

// snapshot copies out what a pass reads, in key order as a list would give.
func (c *cache) snapshot() (*snapshot, map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sn snapshot
	sn.nodes = copyOut[api.Node](c, api.KindNode)
	sn.services = copyOut[api.Service](c, api.KindService)
	sn.jobs = copyOut[api.Job](c, api.KindJob)
	sn.instances = copyOut[api.Instance](c, api.KindInstance)
	sn.crons = copyOut[api.CronJob](c, api.KindCronJob)
	live := make(map[string]bool, len(c.leases))
	for n := range c.leases {
		live[n] = true
	}
	return &sn, live
}

func copyOut[T any, P interface {
	*T
	api.Object
}](c *cache, k api.Kind) []P {
	m := c.objs[k]
	if keys, ok := c.order[k]; ok {
		out := make([]P, len(keys))
		for i, key := range keys {
			out[i] = m[key].(P)
		}
		return out
	}
	out := make([]P, 0, len(m))
	for _, o := range m {
		out = append(out, o.(P))
	}
	slices.SortFunc(out, func(a, b P) int {
		ma, mb := a.GetMetadata(), b.GetMetadata()
		return cmp.Or(strings.Compare(ma.Namespace, mb.Namespace), strings.Compare(ma.Name, mb.Name))
	})
	keys := make([]string, len(out))
	for i, o := range out {
		md := o.GetMetadata()
		keys[i] = objKey(md.Namespace, md.Name)
	}
	c.order[k] = keys
	return out
}

// own returns a copy of obj for a pass to change: snapshot objects may
// be the cache's own.
func own[T any](obj *T) *T {
	cp := *obj
	return &cp
}

// follow keeps the cache current until ctx ends, listing again whenever
// the watch breaks and every relist interval, and calls changed after
// each batch that changed something.
func (c *cache) follow(ctx context.Context, log interface{ Warn(string, ...any) }, relist time.Duration, changed func()) {
	for ctx.Err() == nil {
		from, err := c.fill(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("controller cache: list", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		changed()
		wctx, cancel := context.WithTimeout(ctx, relist)
		for b := range c.s.WatchChanges(wctx, from+1, cachedKinds...) {
			if b.Err != nil {
				if wctx.Err() == nil {
					log.Warn("controller cache: watch", "err", b.Err)
				}
				break
			}
			if c.apply(b) {
				changed()
			}
		}
		cancel()
	}
}
