package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/berth-dev/berth/api/client"
)

// group runs the components of one process; the first to fail stops the
// others, and its error is the process's.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error
}

func newGroup(ctx context.Context) *group {
	ctx, cancel := context.WithCancel(ctx)
	return &group{ctx: ctx, cancel: cancel, errc: make(chan error, 1)}
}

// run starts f; an error from it (not caused by stopping) stops the group.
func (g *group) run(what string, f func(context.Context) error) {
	g.wg.Go(func() {
		if err := f(g.ctx); err != nil && g.ctx.Err() == nil {
			select {
			case g.errc <- fmt.Errorf("%s: %w", what, err):
			default: // only the first failure is the cause
			}
			g.cancel()
		}
	})
}

// wait returns once the group's context ends and every component has
// returned, with the first failure if there was one.
func (g *group) wait() error {
	<-g.ctx.Done()
	g.wg.Wait()
	g.cancel()
	select {
	case err := <-g.errc:
		return err
	default:
		return nil
	}
}

// waitHealthy waits until the API answers through c; false if ctx ends first.
func waitHealthy(ctx context.Context, c *client.Client) bool {
	for ctx.Err() == nil {
		if err := c.Healthz(ctx); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// waitJoined waits, after waitHealthy, until node is in the store, so
// that "berth is up" is said of a cluster that lists its node; false if
// ctx ends first. A node that has not joined within limit is announced
// anyway: the agent logs why, and the cluster still serves.
func waitJoined(ctx context.Context, c *client.Client, node string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if _, err := c.Nodes().Get(ctx, "", node); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	return ctx.Err() == nil
}
