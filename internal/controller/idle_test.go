package controller_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/store"
)

// passCounter is a log handler counting the manager's passes (its
// "pass" debug line) and the time they took, and dropping the rest. It
// keeps when each pass ended and how long it took.
type passCounter struct {
	n, took atomic.Int64
	mu      sync.Mutex
	ended   []pass
}

// pass is one pass of the manager: when it ended and how long it took.
type pass struct {
	end  time.Time
	took time.Duration
}

func (c *passCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *passCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "pass" {
		var took time.Duration
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "took" {
				took = a.Value.Duration()
			}
			return true
		})
		c.mu.Lock()
		c.ended = append(c.ended, pass{end: r.Time, took: took})
		c.mu.Unlock()
		c.took.Add(int64(took))
		c.n.Add(1)
	}
	return nil
}

// since returns the passes that ended after t.
func (c *passCounter) since(t time.Time) []pass {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.ended)
	for i > 0 && c.ended[i-1].end.After(t) {
		i--
	}
	return append([]pass(nil), c.ended[i:]...)
}
func (c *passCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *passCounter) WithGroup(string) slog.Handler      { return c }

// A settled control plane backs off its passes (each quiet one waits
// twice as long as the last, up to IdleResync) instead of passing every
// Resync, and a change still starts a pass at once.
func TestQuietManagerBacksOff(t *testing.T) {
	h := newHarness(t, "n1")
	passes := &passCounter{}
	runManager(t, h, controller.Options{Logger: slog.New(passes), Resync: 50 * time.Millisecond,
		IdleResync: time.Hour, StartGrace: -1})
	h.service("web", 1, api.Placement{})
	h.settle("web", 1)
	// Settled. At Resync's pace 3 s would be 60 passes; backing off from
	// 50 ms (50, 100, 200, 400, 800, 1600 ms) it is a handful.
	from := passes.n.Load()
	time.Sleep(3 * time.Second)
	if n := passes.n.Load() - from; n > 10 {
		t.Fatalf("%d passes in 3 s of a settled cluster, want a back-off (at most 10)", n)
	} else {
		t.Logf("%d passes in 3 s settled", n)
	}
	t0 := time.Now()
	h.scale("web", 2)
	waitFor(t, 2*time.Second, "the new instance bound at once, not after the back-off", func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Node != "" }) == 2
	}, func() string { return dump(h.instances()) })
	t.Logf("scaled in %v", time.Since(t0))
}

// A cron job's run starts on time though the manager backs off: its next
// scheduled time is due, whatever the store does meanwhile.
func TestCronRunsOnTimeWhileIdle(t *testing.T) {
	h := newHarness(t, "n1")
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: time.Second,
		IdleResync: time.Hour, StartGrace: -1})
	cj := &api.CronJob{Metadata: api.Metadata{Name: "tick"}, Spec: api.CronJobSpec{Schedule: "@every 5s",
		Job: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/busybox:1"}}}}
	api.Default(cj)
	if err := h.s.Create(h.ctx, cj); err != nil {
		t.Fatal(err)
	}
	// The first run falls 4 to 5 s after the creation; the quiet passes
	// around it (1 s doubling) come at 1, 3 and 7 s: a run not due at its
	// time would be 2 s late or more.
	var got *api.CronJob
	waitFor(t, 10*time.Second, "the cron job's first run", func() bool {
		var err error
		got, err = store.Get[api.CronJob](h.ctx, h.s, "default", "tick")
		return err == nil && got.Status.LastRun != ""
	}, nil)
	job, err := store.Get[api.Job](h.ctx, h.s, "default", got.Status.LastRun)
	if err != nil {
		t.Fatal(err)
	}
	late := job.Metadata.CreatedAt.Sub(got.Status.LastSchedule)
	t.Logf("run for %v made %v after it", got.Status.LastSchedule, late)
	if late > time.Second {
		t.Fatalf("run for %v made %v late, want within a second", got.Status.LastSchedule, late)
	}
}

// The instances of a stopped node are marked lost when its grace ends,
// though no write comes then to start a pass.
func TestLostGraceEndsWhileIdle(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	h.service("web", 2, api.Placement{Spread: []string{"node"}})
	h.pass()
	h.agent(running)
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: 1500 * time.Millisecond,
		IdleResync: time.Hour, StartGrace: -1, LostGrace: 2 * time.Second})
	t0 := time.Now()
	h.stopHeartbeat("n2")
	// The pass the lapsed lease starts marks n2 NotReady; the quiet ones
	// after it would come 1.5 s and 4.5 s later, past the grace's end at 2 s.
	waitFor(t, 4*time.Second, "n2's instance Lost", func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Node == "n2" && !in.Status.Phase.Terminal() }) == 0
	}, func() string { return dump(h.instances()) })
	if took := time.Since(t0); took < 2*time.Second {
		t.Fatalf("n2's instance Lost after %v, within the 2 s grace", took)
	} else {
		t.Logf("Lost after %v", took)
	}
}

// While changes stream in, the manager rests after each pass as long as
// it took (up to its bound), taking the changes of its rest together,
// rather than passing back to back; and it still follows them.
func TestStreamingChangesLeaveTheManagerResting(t *testing.T) {
	h := newHarness(t, "n1")
	const replicas = 2000 // enough for a pass to take a while
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: replicas,
		Template: api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 0.001, Memory: 4 << 20, Pids: 1}}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	passes := &passCounter{}
	runManager(t, h, controller.Options{Logger: slog.New(passes), StartGrace: -1})
	waitFor(t, 30*time.Second, "every instance bound", func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Node != "" }) == replicas
	}, nil)
	// Changes stream in until five passes have followed them. How long
	// that takes is the passes' business (seconds each on a loaded
	// machine); the deadline only bounds a manager that stopped.
	t0 := time.Now()
	const want = 5
	var got []pass
	for deadline := t0.Add(2 * time.Minute); ; {
		h.heartbeat("n1") // a change to the node: a watch batch, a poke
		if got = passes.since(t0); len(got) >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d passes in %v of changes: the manager stopped following them", len(got), time.Since(t0))
		}
	}
	// Each pass starts a rest after the last at least: a pass's start is
	// its end less what it took, and late timers only lengthen a rest.
	var busy time.Duration
	for i := 1; i < len(got); i++ {
		rest, least := got[i].end.Add(-got[i].took).Sub(got[i-1].end), controller.RestAfter(got[i-1].took)
		if rest < least {
			t.Errorf("pass %d began %v after the one before, which took %v: want a rest of %v at least", i, rest, got[i-1].took, least)
		}
		busy += got[i].took
	}
	t.Logf("%d passes, %v of %v passing", len(got), busy, got[len(got)-1].end.Sub(got[0].end))
}
