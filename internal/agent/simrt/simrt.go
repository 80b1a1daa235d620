// Package simrt is a container runtime that runs nothing: containers are
// records in memory that "start" after a configurable delay, fail at a
// configurable rate and run until stopped or crashed. Hollow agents (berth
// sim agents) drive it with the real agent code, so thousands of nodes fit
// in one process and nothing on the host changes; tests use it to exercise
// the agent without root.
package simrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/runtime"
)

// ErrSimulated is what a simulated start failure, and every operation a
// simulated container cannot do (exec, logs), returns.
var ErrSimulated = errors.New("simulated runtime")

// Config shapes the simulation.
type Config struct {
	// StartDelay is how long each start takes.
	StartDelay time.Duration
	// FailRate is the share of starts, in [0, 1], that fail.
	FailRate float64
}

type container struct {
	st   runtime.Status
	done chan struct{} // closed when the container exits
}

// Runtime is a simulated container runtime; safe for concurrent use.
type Runtime struct {
	cfg Config
	mu  sync.Mutex
	cs  map[string]*container
	pid int
}

var _ agent.Runtime = (*Runtime)(nil)

// New makes an empty simulated runtime.
func New(cfg Config) *Runtime {
	return &Runtime{cfg: cfg, cs: map[string]*container{}, pid: 1000}
}

// Run "starts" a container after the start delay.
func (r *Runtime) Run(ctx context.Context, c runtime.Config) (runtime.Status, error) {
	if r.cfg.StartDelay > 0 {
		t := time.NewTimer(r.cfg.StartDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return runtime.Status{}, ctx.Err()
		case <-t.C:
		}
	}
	if r.cfg.FailRate > 0 && rand.Float64() < r.cfg.FailRate {
		return runtime.Status{}, fmt.Errorf("start %s: %w: start failure", c.ID, ErrSimulated)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cs[c.ID]; ok {
		return runtime.Status{}, fmt.Errorf("container %s: already exists", c.ID)
	}
	r.pid++
	now := time.Now()
	st := runtime.Status{ID: c.ID, State: runtime.Running, Executor: c.Executor, Image: c.Image, Args: c.Args,
		Pid: r.pid, CreatedAt: now, StartedAt: now, Labels: copyLabels(c.Labels)}
	r.cs[c.ID] = &container{st: st, done: make(chan struct{})}
	return copyStatus(st), nil
}

func copyLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

func copyStatus(st runtime.Status) runtime.Status {
	st.Labels = copyLabels(st.Labels)
	return st
}

func (r *Runtime) get(id string) (*container, error) {
	c, ok := r.cs[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, runtime.ErrNotFound)
	}
	return c, nil
}

// State reads one container.
func (r *Runtime) State(_ context.Context, id string) (runtime.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil {
		return runtime.Status{}, err
	}
	return copyStatus(c.st), nil
}

// List reads every container, by ID.
func (r *Runtime) List(context.Context) ([]runtime.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]runtime.Status, 0, len(r.cs))
	for _, c := range r.cs {
		out = append(out, copyStatus(c.st))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Wait returns when the container has exited.
func (r *Runtime) Wait(ctx context.Context, id string) (runtime.Status, error) {
	r.mu.Lock()
	c, err := r.get(id)
	r.mu.Unlock()
	if err != nil {
		return runtime.Status{}, err
	}
	select {
	case <-ctx.Done():
		return runtime.Status{}, ctx.Err()
	case <-c.done:
	}
	return r.State(ctx, id)
}

// Exit ends a running container as if its process exited with code: the
// way a simulation (or a test) crashes one.
func (r *Runtime) Exit(id string, code int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil {
		return err
	}
	r.exit(c, code, "")
	return nil
}

func (r *Runtime) exit(c *container, code int, reason string) {
	if c.st.State != runtime.Running {
		return
	}
	c.st.State, c.st.ExitCode, c.st.FinishedAt, c.st.Pid = runtime.Exited, code, time.Now(), 0
	c.st.Reason = reason
	if reason == "" {
		c.st.Reason = "Error"
		if code == 0 {
			c.st.Reason = "Completed"
		}
	}
	close(c.done)
}

// Stop ends a container at once: a simulated process honours SIGTERM.
func (r *Runtime) Stop(_ context.Context, id string, _ time.Duration) (runtime.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil {
		return runtime.Status{}, err
	}
	r.exit(c, 128+int(syscall.SIGTERM), "Stopped")
	return copyStatus(c.st), nil
}

// Kill ends a container as the signal would.
func (r *Runtime) Kill(_ context.Context, id string, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil {
		return err
	}
	r.exit(c, 128+int(sig), "Killed")
	return nil
}

// Delete forgets a container; a running one only when forced.
func (r *Runtime) Delete(_ context.Context, id string, force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil {
		return err
	}
	if c.st.State == runtime.Running {
		if !force {
			return fmt.Errorf("container %s: running", id)
		}
		r.exit(c, 137, "Killed")
	}
	delete(r.cs, id)
	return nil
}

// Exec is refused: a simulated container has no processes.
func (r *Runtime) Exec(_ context.Context, id string, _ runtime.ExecProcess) (int, error) {
	return -1, fmt.Errorf("exec in %s: %w: no processes", id, ErrSimulated)
}

// Logs writes nothing: a simulated container writes nothing.
func (r *Runtime) Logs(ctx context.Context, id string, _ runtime.LogOptions, _, _ io.Writer) error {
	_, err := r.State(ctx, id)
	return err
}

// Stats reports an idle container.
func (r *Runtime) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	_, err := r.State(ctx, id)
	return runtime.Stats{}, err
}

// WritableLayer is refused: a simulated container has no filesystem, so
// disk limits have nothing to measure.
func (r *Runtime) WritableLayer(id string) (string, error) {
	return "", fmt.Errorf("writable layer of %s: %w", id, ErrSimulated)
}

// Root is the root directory, whose free space stands for the node's.
func (r *Runtime) Root() string { return "/" }

// Images prepares nothing: every image is an empty root filesystem.
type Images struct{}

var _ agent.Images = Images{}

// Prepare hands out an empty root filesystem.
func (Images) Prepare(context.Context, string, string) (agent.Rootfs, error) {
	return agent.Rootfs{Entrypoint: []string{"/simulated"}}, nil
}

// Release has nothing to release.
func (Images) Release(context.Context, string) error { return nil }
