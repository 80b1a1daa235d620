package apiserver_test

import (
	"context"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

// An apply with ?dryRun=1 is checked like a real one and answers what
// would be stored, storing nothing; an apply that changes nothing writes
// nothing.
func TestApplyDryRunAndUnchanged(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	svc := api.RunService("web", "demo/busybox:1", nil)
	svc.Metadata.Labels = map[string]string{"tier": "front"}

	res, err := e.client.ApplyWith(ctx, svc, client.ApplyOptions{DryRun: true})
	if err != nil || !res.Created || res.Unchanged {
		t.Fatalf("dry run of a new service: %+v, %v", res, err)
	}
	if _, err := e.client.Services().Get(ctx, "default", "web"); !errdefs.IsNotFound(err) {
		t.Fatalf("a dry run stored the service: %v", err)
	}

	res, err = e.client.ApplyWith(ctx, svc, client.ApplyOptions{})
	if err != nil || !res.Created {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	stored := res.Object.GetMetadata().Revision

	// The same spec again: unchanged, at the same revision.
	res, err = e.client.ApplyWith(ctx, svc, client.ApplyOptions{})
	if err != nil || !res.Unchanged || res.Object.GetMetadata().Revision != stored {
		t.Fatalf("re-apply: %+v, %v; want unchanged at revision %d", res, err, stored)
	}
	// Labels count as a change.
	relabelled := *svc
	relabelled.Metadata.Labels = map[string]string{"tier": "back"}
	res, err = e.client.ApplyWith(ctx, &relabelled, client.ApplyOptions{DryRun: true})
	if err != nil || res.Unchanged || res.Created || res.Object.(*api.Service).Metadata.Labels["tier"] != "back" ||
		res.Object.GetMetadata().UID == "" {
		t.Fatalf("dry run of a relabel: %+v, %v; want the stored object with the new labels", res, err)
	}
	got, err := e.client.Services().Get(ctx, "default", "web")
	if err != nil || got.Metadata.Revision != stored || got.Metadata.Labels["tier"] != "front" {
		t.Fatalf("after dry runs: %+v, %v; want it untouched", got, err)
	}

	// A dry run is refused as an apply would be: invalid, or a host port taken.
	bad := *svc
	bad.Spec.Replicas = -1
	if _, err := e.client.ApplyWith(ctx, &bad, client.ApplyOptions{DryRun: true}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "replicas") {
		t.Errorf("dry run of replicas -1: %v", err)
	}
	pub := api.RunService("pub", "demo/busybox:1", nil)
	pub.Spec.Template.Ports = []api.Port{{Container: 80, Host: 8080}}
	if _, _, err := e.client.Apply(ctx, pub); err != nil {
		t.Fatal(err)
	}
	clash := api.RunService("clash", "demo/busybox:1", nil)
	clash.Spec.Template.Ports = []api.Port{{Container: 80, Host: 8080}}
	if _, err := e.client.ApplyWith(ctx, clash, client.ApplyOptions{DryRun: true}); err == nil || !strings.Contains(err.Error(), "already published") {
		t.Errorf("dry run of a taken host port: %v", err)
	}
}
