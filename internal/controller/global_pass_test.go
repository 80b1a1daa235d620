package controller_test

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// A global service whose constraint names a label the nodes only report
// themselves (an agent's --label zone=a is node.berth/zone) runs nowhere
// (a node must not grant itself workloads meant for admins' labels), and
// says why, naming the label the nodes do report; the same constraint on
// node.berth/zone runs on each of them.
func TestGlobalServiceNamesReportedLabels(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	for _, name := range []string{"n1", "n2"} {
		n := h.node(name)
		n.Metadata.Labels = map[string]string{api.NodeReportedLabelPrefix + "zone": "a"}
		if err := h.s.Update(h.ctx, n, 0); err != nil {
			t.Fatal(err)
		}
	}
	global := func(name, key string) *api.Service {
		return &api.Service{Metadata: api.Metadata{Name: name}, Spec: api.ServiceSpec{Mode: api.ModeGlobal,
			Template:  api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 0.1, Memory: 8 << 20}},
			Placement: api.Placement{Constraints: []api.Constraint{{Key: key, Op: api.OpEq, Values: []string{"a"}}}}}}
	}
	for _, svc := range []*api.Service{global("bare", "zone"), global("reported", api.NodeReportedLabelPrefix+"zone")} {
		if err := h.s.Create(h.ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	h.passUntil("reported on n1 and n2", func() bool { return len(h.onNode("n1")) == 1 && len(h.onNode("n2")) == 1 })
	if got := h.onNode("n3"); len(got) != 0 {
		t.Errorf("on n3, which reports no zone: %v", got)
	}
	for _, in := range h.instances() {
		if in.Spec.Owner.Name == "bare" {
			t.Errorf("instance %s of bare on %s: a bare key trusts only admins' labels", in.Metadata.Name, in.Spec.Node)
		}
	}
	bare, err := store.Get[api.Service](h.ctx, h.s, "default", "bare")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"none of the 3 Ready, schedulable nodes", "node.labels.zone == a", "2 of them report node.berth/zone"} {
		if !strings.Contains(bare.Status.Message, want) {
			t.Errorf("bare's status message %q lacks %q", bare.Status.Message, want)
		}
	}
	if evs := h.events("NoEligibleNodes"); len(evs) != 1 || evs[0].Object.Name != "bare" || evs[0].Type != api.EventWarning {
		t.Errorf("NoEligibleNodes events: %+v, want one warning about bare", evs)
	}
	// An admin's label of the bare name is what the bare key trusts.
	n3 := h.node("n3")
	n3.Metadata.Labels = map[string]string{"zone": "a"}
	if err := h.s.Update(h.ctx, n3, 0); err != nil {
		t.Fatal(err)
	}
	h.passUntil("bare on n3", func() bool { return len(h.onNode("n3")) == 1 })
	bare, _ = store.Get[api.Service](h.ctx, h.s, "default", "bare")
	if bare.Status.Message != "" {
		t.Errorf("bare's status message %q once it runs", bare.Status.Message)
	}
}
