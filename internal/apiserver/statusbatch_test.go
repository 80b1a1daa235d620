package apiserver_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// A node reports many instances' status in one request, each item held
// to what a single report is: written when it may be, refused alone when
// not, and dropped as gone when the instance is not the one reported.
func TestStatusBatchWritesWhatTheNodeMay(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n1 := c.join(t, "n1")
	for node, subnet := range map[string]string{"n1": "10.244.1.0/24", "n2": "10.244.2.0/24"} {
		if _, err := c.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: node}, Spec: api.NodeSpec{Address: "10.0.0.1", PodSubnet: subnet}}); err != nil {
			t.Fatal(err)
		}
	}
	uids := map[string]string{}
	for _, name := range []string{"a", "b", "c", "gone", "again", "theirs"} {
		in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: name},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
		stored, err := c.admin.Instances().Apply(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		node := "n1"
		if name == "theirs" {
			node = "n2"
		}
		if _, err := c.admin.Instances().Bind(ctx, "default", name, node, nil, 0); err != nil {
			t.Fatal(err)
		}
		uids[name] = stored.Metadata.UID
	}
	if err := c.admin.Instances().Delete(ctx, "default", "gone", 0); err != nil {
		t.Fatal(err)
	}
	running := func(name, ip string) api.StatusReport {
		return api.StatusReport{Namespace: "default", Name: name, UID: uids[name], Status: api.InstanceStatus{Phase: api.PhaseRunning, IP: ip, ContainerID: "c-" + name}}
	}
	again := running("again", "10.244.1.9")
	again.UID = "an-older-uid"
	// One instance twice: refused whole, naming the second.
	twice := []api.StatusReport{running("a", "10.244.1.5"), running("c", "10.244.1.7"), running("a", "10.244.1.6")}
	if _, err := n1.Nodes().ReportStatuses(ctx, "n1", twice); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "items[2]") {
		t.Fatalf("a batch reporting one instance twice: %v, want it refused naming items[2]", err)
	}
	items := []api.StatusReport{
		running("a", "10.244.1.5"),
		running("b", "192.0.2.66"), // outside its pod subnet
		running("c", "10.244.1.7"),
		running("gone", "10.244.1.8"),
		again,                           // about the instance before this one
		running("theirs", "10.244.2.5"), // another node's
	}
	res, err := n1.Nodes().ReportStatuses(ctx, "n1", items)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(res))
	for i, r := range res {
		switch {
		case r.Gone:
			got[i] = "gone"
		case r.Error != "":
			got[i] = "refused"
		default:
			got[i] = "ok"
		}
	}
	if want := "[ok refused ok gone gone gone]"; fmt.Sprint(got) != want {
		t.Fatalf("results %v (%+v), want %s", got, res, want)
	}
	if !strings.Contains(res[1].Error, "status.ip") {
		t.Errorf("an address outside the subnet: %q, want it to name status.ip", res[1].Error)
	}
	lost := []api.StatusReport{{Namespace: "default", Name: "c", UID: uids["c"], Status: api.InstanceStatus{Phase: api.PhaseLost}}}
	if res, err := n1.Nodes().ReportStatuses(ctx, "n1", lost); err != nil || !strings.Contains(res[0].Error, "status.phase") {
		t.Errorf("Lost from a node: %+v, %v, want it refused naming status.phase", res, err)
	}
	for name, want := range map[string]string{"a": "Running/c-a", "c": "Running/c-c", "b": "Scheduled/", "theirs": "Scheduled/", "again": "Scheduled/"} {
		in, err := c.admin.Instances().Get(ctx, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		if g := fmt.Sprintf("%s/%s", in.Status.Phase, in.Status.ContainerID); g != want {
			t.Errorf("%s: %s, want %s", name, g, want)
		}
	}
	// Another node's path is refused whole; so is a batch over the cap.
	if _, err := n1.Nodes().ReportStatuses(ctx, "n2", items[:1]); !errdefs.IsForbidden(err) {
		t.Errorf("n1 reporting on n2's path: %v, want Forbidden", err)
	}
	big := make([]api.StatusReport, api.MaxStatusBatch+1)
	for i := range big {
		big[i] = running("a", "10.244.1.5")
		big[i].Name = fmt.Sprintf("x-%d", i)
	}
	if _, err := n1.Nodes().ReportStatuses(ctx, "n1", big); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "items") {
		t.Errorf("a batch over the cap: %v, want InvalidArgument naming items", err)
	}
}

// A node that reports again what it reported (each of its instances once
// more after its agent restarts) is answered as before, and the
// instances are not written again: no new revision of each, no event to
// every watcher.
func TestStatusBatchOfTheSameStatusWritesNothing(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n1 := c.join(t, "n1")
	if _, err := c.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1", PodSubnet: "10.244.1.0/24"}}); err != nil {
		t.Fatal(err)
	}
	var items []api.StatusReport
	// A start time in the agent's own zone, to the nanosecond, as it sends it.
	started := time.Date(2026, 12, 7, 14, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for i, name := range []string{"a", "b"} {
		in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: name},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
		stored, err := c.admin.Instances().Apply(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.admin.Instances().Bind(ctx, "default", name, "n1", nil, 0); err != nil {
			t.Fatal(err)
		}
		items = append(items, api.StatusReport{Namespace: "default", Name: name, UID: stored.Metadata.UID, Status: api.InstanceStatus{
			Phase: api.PhaseRunning, IP: fmt.Sprintf("10.244.1.%d", 5+i), ContainerID: "c-" + name, Pid: 100 + i, Healthy: true, StartedAt: started}})
	}
	report := func() map[string]int64 {
		t.Helper()
		res, err := n1.Nodes().ReportStatuses(ctx, "n1", items)
		if err != nil {
			t.Fatal(err)
		}
		revs := map[string]int64{}
		for i, r := range res {
			if r.Error != "" || r.Gone {
				t.Fatalf("%s: %+v", items[i].Name, r)
			}
			in, err := c.admin.Instances().Get(ctx, "default", items[i].Name)
			if err != nil {
				t.Fatal(err)
			}
			if in.Status.Phase != api.PhaseRunning || in.Status.ContainerID != "c-"+items[i].Name || !in.Status.StartedAt.Equal(started) {
				t.Fatalf("%s after the report: %+v", items[i].Name, in.Status)
			}
			revs[items[i].Name] = in.Metadata.Revision
		}
		return revs
	}
	first := report()
	if again := report(); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("the same statuses again wrote the instances: revisions %v, were %v", again, first)
	}
	items[1].Status.Healthy = false
	if again := report(); again["a"] != first["a"] || again["b"] == first["b"] {
		t.Fatalf("a the same, b changed: revisions %v, were %v", again, first)
	}
}
