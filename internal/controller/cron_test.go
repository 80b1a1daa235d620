package controller

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/storetest"
)

func TestDecideCron(t *testing.T) {
	everyMinute, err := api.ParseSchedule("* * * * *", "")
	if err != nil {
		t.Fatal(err)
	}
	at2InParis, err := api.ParseSchedule("0 2 * * *", "Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	active := CronRun{Name: "c-active"}
	cases := []struct {
		name        string
		s           CronState
		wantRun     bool
		wantFor     time.Time
		wantDelete  []string
		wantSkipped string
		wantNext    time.Time
	}{
		{name: "not yet due", s: CronState{Now: min(0).Add(30 * time.Second), Schedule: everyMinute, Last: min(0)},
			wantNext: min(1)},
		{name: "on time", s: CronState{Now: min(1).Add(time.Second), Schedule: everyMinute, Last: min(0)},
			wantRun: true, wantFor: min(1), wantNext: min(2)},
		{name: "down for an hour, no deadline: one run, the latest, never a burst",
			s:       CronState{Now: min(60).Add(5 * time.Second), Schedule: everyMinute, Last: min(0)},
			wantRun: true, wantFor: min(60), wantNext: min(61)},
		{name: "down over the deadline: skipped",
			s:           CronState{Now: min(60).Add(50 * time.Second), Schedule: everyMinute, Last: min(0), StartingDeadline: 30 * time.Second},
			wantSkipped: "starting deadline", wantNext: min(61)},
		{name: "within the deadline: runs",
			s:       CronState{Now: min(60).Add(10 * time.Second), Schedule: everyMinute, Last: min(0), StartingDeadline: 30 * time.Second},
			wantRun: true, wantFor: min(60), wantNext: min(61)},
		{name: "forbid skips while one runs",
			s:           CronState{Now: min(1), Schedule: everyMinute, Last: min(0), Concurrency: api.ConcurrencyForbid, Runs: []CronRun{active}},
			wantSkipped: "concurrency: forbid", wantNext: min(2)},
		{name: "allow runs beside it",
			s:       CronState{Now: min(1), Schedule: everyMinute, Last: min(0), Concurrency: api.ConcurrencyAllow, Runs: []CronRun{active}},
			wantRun: true, wantFor: min(1), wantNext: min(2)},
		{name: "replace stops the active one",
			s:       CronState{Now: min(1), Schedule: everyMinute, Last: min(0), Concurrency: api.ConcurrencyReplace, Runs: []CronRun{active}},
			wantRun: true, wantFor: min(1), wantDelete: []string{"c-active"}, wantNext: min(2)},
		{name: "suspended", s: CronState{Now: min(1), Schedule: everyMinute, Last: min(0), Suspend: true},
			wantSkipped: "suspended", wantNext: min(2)},
		{name: "history trimmed, oldest first", s: CronState{Now: min(0).Add(time.Second), Schedule: everyMinute, Last: min(0),
			SuccessfulLimit: 1, FailedLimit: 1, Runs: []CronRun{
				{Name: "s1", Done: true, Succeeded: true, Ended: min(-3)}, {Name: "s3", Done: true, Succeeded: true, Ended: min(-1)},
				{Name: "s2", Done: true, Succeeded: true, Ended: min(-2)}, {Name: "f1", Done: true, Ended: min(-5)},
				{Name: "f2", Done: true, Ended: min(-4)}}},
			wantDelete: []string{"s1", "s2", "f1"}, wantNext: min(1)},
		{name: "a time zone: 02:00 in Paris is 01:00 UTC in winter",
			s:       CronState{Now: time.Date(2026, 12, 7, 1, 0, 1, 0, time.UTC), Schedule: at2InParis, Last: t0},
			wantRun: true, wantFor: time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC), wantNext: time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := DecideCron(tc.s)
			if d.Run != tc.wantRun || !d.ScheduledFor.Equal(tc.wantFor) {
				t.Errorf("run %v for %s, want %v for %s", d.Run, d.ScheduledFor, tc.wantRun, tc.wantFor)
			}
			if !slices.Equal(d.Delete, tc.wantDelete) {
				t.Errorf("delete %v, want %v", d.Delete, tc.wantDelete)
			}
			if (tc.wantSkipped == "") != (d.Skipped == "") || !strings.Contains(d.Skipped, tc.wantSkipped) {
				t.Errorf("skipped %q, want %q", d.Skipped, tc.wantSkipped)
			}
			if !d.Next.Equal(tc.wantNext) {
				t.Errorf("next %s, want %s", d.Next, tc.wantNext)
			}
			if (d.Run || d.Skipped != "") && d.Acted.IsZero() {
				t.Error("a due time acted on is not recorded")
			}
		})
	}
}

// The cron pass on a real store with the clock injected: a control
// plane back after an hour down skips the run past its deadline, runs
// the next on time, and after another outage runs once, not once per
// missed minute.
func TestCronPassAfterOutage(t *testing.T) {
	s := OpenTestStore(t)
	ctx := t.Context()
	cj := &api.CronJob{Metadata: api.Metadata{Name: "tick"}, Spec: api.CronJobSpec{Schedule: "* * * * *",
		StartingDeadline: api.Duration(30 * time.Second), SuccessfulHistory: 10,
		Job: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/busybox:1"}}}}
	api.Default(cj)
	if err := s.Create(ctx, cj); err != nil {
		t.Fatal(err)
	}
	created := cj.Metadata.CreatedAt.Truncate(time.Minute)
	var now time.Time
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork, Clock: func() time.Time { return now }})
	runs := func() int {
		jobs, _, err := store.List[api.Job](ctx, s, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(jobs)
	}
	pass := func(at time.Time) {
		t.Helper()
		now = at
		if err := m.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pass(created.Add(time.Hour + 45*time.Second))
	got, err := store.Get[api.CronJob](ctx, s, "default", "tick")
	if err != nil {
		t.Fatal(err)
	}
	if runs() != 0 || !strings.Contains(got.Status.Message, "starting deadline") {
		t.Fatalf("after an hour down, past the deadline: %d runs, status %+v; want none, skipped", runs(), got.Status)
	}
	pass(created.Add(time.Hour + time.Minute + 2*time.Second))
	if n := runs(); n != 1 {
		t.Fatalf("the next minute on time: %d runs, want 1", n)
	}
	pass(created.Add(time.Hour + time.Minute + 3*time.Second))
	if n := runs(); n != 1 {
		t.Fatalf("a second pass in the same minute: %d runs, want still 1", n)
	}
	// Ten minutes down, back within the deadline of the latest: one run.
	pass(created.Add(time.Hour + 11*time.Minute + 5*time.Second))
	if n := runs(); n != 2 {
		t.Fatalf("back after ten minutes: %d runs, want 2 (one more, no burst)", n)
	}
}

// A cron job's run passes the API's admission when it starts, not only
// at the cron job's creation: a run whose job the rules in force refuse
// (here a hostPath outside the allowed ones, allowed when the cron job
// was made) is not started, and the cron job says why, naming the field.
// cronPass stores cj and runs one manager pass, admitting runs through
// srv, a second into the minute after cj's creation; it returns the jobs
// there are then.
func cronPass(t *testing.T, s *store.Store, srv *apiserver.Server, cj *api.CronJob) []*api.Job {
	t.Helper()
	ctx := t.Context()
	api.Default(cj)
	if err := s.Create(ctx, cj); err != nil {
		t.Fatal(err)
	}
	now := cj.Metadata.CreatedAt.Truncate(time.Minute).Add(time.Minute + time.Second)
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork, Clock: func() time.Time { return now },
		Admit: srv.Admit})
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	jobs, _, err := store.List[api.Job](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

func TestCronPassAdmitsRuns(t *testing.T) {
	s := OpenTestStore(t)
	ctx := t.Context()
	cj := &api.CronJob{Metadata: api.Metadata{Name: "tick"}, Spec: api.CronJobSpec{Schedule: "* * * * *",
		Job: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/busybox:1",
			Volumes: []api.VolumeMount{{HostPath: "/etc", Path: "/host"}}}}}}
	srv := apiserver.New(apiserver.Config{Store: s, Logger: slog.New(slog.DiscardHandler), AllowedHostPaths: []string{"/srv"}})
	jobs := cronPass(t, s, srv, cj)
	if len(jobs) != 0 {
		t.Fatalf("%d jobs started, want none", len(jobs))
	}
	got, err := store.Get[api.CronJob](ctx, s, "default", "tick")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"refused", "spec.template.volumes[0].hostPath", "outside the allowed host paths"} {
		if !strings.Contains(got.Status.Message, want) {
			t.Errorf("status message %q lacks %q", got.Status.Message, want)
		}
	}
	// Acted on: the next pass in the same minute does not try again.
	if got.Status.LastSchedule.IsZero() {
		t.Error("the refused run's time is not recorded: every pass would try it again")
	}
}

// A cron job's run has its images pinned when it starts, as a job
// applied to the API has: the main container's and a sidecar's of its
// own, to the digests their tags name at the run.
func TestCronPassPinsRunImages(t *testing.T) {
	s := OpenTestStore(t)
	ctx := t.Context()
	imgs, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	build := func(tag, content string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := imgs.Build(ctx, dir, image.BuildOptions{Tag: tag})
		if err != nil {
			t.Fatal(err)
		}
		return img.Digest
	}
	app, side := build("demo/app:1", "app"), build("demo/side:1", "side")
	cj := &api.CronJob{Metadata: api.Metadata{Name: "tick"}, Spec: api.CronJobSpec{Schedule: "* * * * *",
		Job: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/app:1", Command: []string{"true"},
			Containers: []api.Container{{Name: "log", Sidecar: true, Image: "demo/side:1", Command: []string{"sleep", "1d"}}}}}}}
	srv := apiserver.New(apiserver.Config{Store: s, Logger: slog.New(slog.DiscardHandler)})
	srv.Mount("/v2/", registry.New(imgs, registry.Options{Authorize: apiserver.AuthorizeImages}))
	jobs := cronPass(t, s, srv, cj)
	if len(jobs) != 1 {
		t.Fatalf("%d jobs started, want 1", len(jobs))
	}
	tpl := jobs[0].Spec.Template
	if tpl.Image != "demo/app:1@"+app || tpl.Containers[0].Image != "demo/side:1@"+side {
		t.Errorf("the run's images are %q and %q, want demo/app:1@%s and demo/side:1@%s", tpl.Image, tpl.Containers[0].Image, app, side)
	}
	// The cron job itself keeps the tags, in the store and in what the
	// pass read: each run pins them afresh.
	got, err := store.Get[api.CronJob](ctx, s, "default", "tick")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Job.Template.Image != "demo/app:1" || got.Spec.Job.Template.Containers[0].Image != "demo/side:1" {
		t.Errorf("the cron job's images became %q and %q", got.Spec.Job.Template.Image, got.Spec.Job.Template.Containers[0].Image)
	}
	run := cj.RunJob("x")
	if err := srv.Admit(ctx, run); err != nil {
		t.Fatal(err)
	}
	if cj.Spec.Job.Template.Containers[0].Image != "demo/side:1" {
		t.Errorf("admitting a run changed its cron job's sidecar image to %q", cj.Spec.Job.Template.Containers[0].Image)
	}
}

// A pass over the cache reads nothing from etcd, cron jobs included: a
// list of them each pass, every two seconds, was a raft round each time
// on an otherwise idle machine.
func TestCachedPassReadsNoCronJobs(t *testing.T) {
	s := OpenTestStore(t)
	ctx := t.Context()
	cj := &api.CronJob{Metadata: api.Metadata{Name: "yearly"}, Spec: api.CronJobSpec{Schedule: "0 0 1 1 *",
		Job: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/busybox:1"}}}}
	api.Default(cj)
	if err := s.Create(ctx, cj); err != nil {
		t.Fatal(err)
	}
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork})
	m.cache = newCache(s)
	go m.cache.follow(ctx, slog.New(slog.DiscardHandler), time.Hour, func() {})
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	counts := storetest.Count(s)
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := counts.Take(); got.Linearizable != 0 || got.Serializable != 0 {
		t.Errorf("a pass over the cache made %d linearizable and %d serializable reads; want none", got.Linearizable, got.Serializable)
	}
	// The cron job is still seen: its status, written by the pass, is
	// in the cache the next pass reads.
	cj.Spec.Suspend = true
	if err := s.Update(ctx, cj, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.cache.waitFor(ctx, s.LastWrite(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	sn, _ := m.cache.snapshot()
	if len(sn.crons) != 1 || !sn.crons[0].Spec.Suspend {
		t.Fatalf("the cache holds %d cron jobs (%+v), want the suspended one", len(sn.crons), sn.crons)
	}
}
