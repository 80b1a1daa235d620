package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// The pruner keeps what PinnedImageDigests lists, so an image pinned only
// by an init or sidecar container, or only by a cron job, must be listed.
func TestPinnedImageDigestsCountsEveryContainer(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dg := func(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }
	tmpl := func(main, initImg, sidecarImg string) api.Template {
		return api.Template{Image: main, Command: []string{"sleep", "1d"}, Containers: []api.Container{
			{Name: "setup", Init: true, Image: initImg},
			{Name: "proxy", Sidecar: true, Image: sidecarImg},
		}}
	}
	svc := service("web", 1)
	svc.Spec.Template = tmpl("demo/app:1@"+dg('a'), "demo/migrate:1@"+dg('b'), "demo/proxy:1@"+dg('c'))
	job := &api.Job{Metadata: api.Metadata{Name: "batch"}, Spec: api.JobSpec{Completions: 1,
		Template: tmpl("demo/app:1@"+dg('a'), "demo/fetch:1@"+dg('d'), "demo/log:1@"+dg('e'))}}
	cron := &api.CronJob{Metadata: api.Metadata{Name: "nightly"}, Spec: api.CronJobSpec{Schedule: "@daily",
		Job: api.JobSpec{Completions: 1, Template: tmpl("demo/report:1@"+dg('f'), "", "demo/agent:1@"+dg('0'))}}}
	in := instance("web-1")
	in.Spec.Template = new(tmpl("demo/app:1@"+dg('a'), "demo/old-migrate:1@"+dg('1'), "demo/unpinned:1"))
	for _, o := range []api.Object{svc, job, cron, in} {
		if err := s.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", api.RefOf(o), err)
		}
	}
	pinned, err := s.PinnedImageDigests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range "abcdef01" {
		if !pinned[dg(byte(c))] {
			t.Errorf("digest %s not counted as pinned; pinned: %v", dg(byte(c)), pinned)
		}
	}
	if len(pinned) != 8 {
		t.Errorf("pinned = %v, want exactly the 8 digests the objects pin", pinned)
	}
}
