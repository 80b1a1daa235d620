package apiserver_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

func addNodes(t *testing.T, e *env, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := e.store.Create(t.Context(), &api.Node{Metadata: api.Metadata{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCordonUncordon(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	addNodes(t, e, "n1")
	n, err := e.client.Nodes().Cordon(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if !n.Spec.Unschedulable || n.Spec.Draining {
		t.Errorf("cordoned: %+v", n.Spec)
	}
	if n, err = e.client.Nodes().Drain(ctx, "n1"); err != nil || !n.Spec.Draining || !n.Spec.Unschedulable {
		t.Fatalf("drain a cordoned node: %+v, %v", n, err)
	}
	if n, err = e.client.Nodes().Uncordon(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if n.Spec.Unschedulable || n.Spec.Draining {
		t.Errorf("uncordoned: %+v", n.Spec)
	}
	if _, err := e.client.Nodes().Drain(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("drain an unknown node: %v, want NotFound", err)
	}
	if code, _ := e.call(t, "POST", "/v1/nodes/nope/cordon", ""); code != 404 {
		t.Errorf("cordon an unknown node: %d, want 404", code)
	}
	// Draining without unschedulable is not a state a node can be put in.
	code, eb := e.call(t, "PUT", "/v1/nodes/n1", `{"metadata":{"name":"n1"},"spec":{"draining":true}}`)
	if code != 422 || eb.Field != "spec.draining" {
		t.Errorf("draining but schedulable: %d %+v, want 422 on spec.draining", code, eb)
	}
}

func TestDrainLimitIsClusterWide(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	names := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	addNodes(t, e, names...)

	// Drains of every node at once: exactly one gets the slot.
	codes := make([]int, len(names))
	msgs := make([]string, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			code, eb := e.call(t, "POST", "/v1/nodes/"+n+"/drain", "")
			codes[i], msgs[i] = code, eb.Error
		})
	}
	wg.Wait()
	var won string
	for i, code := range codes {
		switch code {
		case 200:
			if won != "" {
				t.Fatalf("both %s and %s drain at once, at most 1 may", won, names[i])
			}
			won = names[i]
		case 409:
		default:
			t.Fatalf("drain %s: %d %s", names[i], code, msgs[i])
		}
	}
	if won == "" {
		t.Fatalf("no drain passed: %v %v", codes, msgs)
	}
	for i, code := range codes {
		if code == 409 && !strings.Contains(msgs[i], "("+won+")") {
			t.Errorf("refusal of %s does not name %s, which drains: %q", names[i], won, msgs[i])
		}
	}
	nodes, _, err := e.client.Nodes().List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Spec.Draining != (n.Metadata.Name == won) || n.Spec.Unschedulable != (n.Metadata.Name == won) {
			t.Errorf("%s: draining=%v unschedulable=%v", n.Metadata.Name, n.Spec.Draining, n.Spec.Unschedulable)
		}
	}
	// Draining the draining node again changes nothing.
	if _, err := e.client.Nodes().Drain(ctx, won); err != nil {
		t.Errorf("drain %s again: %v", won, err)
	}

	// Once it is drained (as the controller marks it), the slot is free.
	n, err := e.client.Nodes().Get(ctx, "", won)
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Draining = false
	if _, err := e.client.Nodes().Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	// With a limit of 2, two may drain at once, not three.
	e.srv.SetMaxDraining(2)
	if got := e.srv.MaxDraining(); got != 2 {
		t.Errorf("MaxDraining %d, want 2", got)
	}
	var rest []string
	for _, name := range names {
		if name != won {
			rest = append(rest, name)
		}
	}
	for _, name := range rest[:2] {
		if _, err := e.client.Nodes().Drain(ctx, name); err != nil {
			t.Fatalf("drain %s with a limit of 2: %v", name, err)
		}
	}
	_, err = e.client.Nodes().Drain(ctx, rest[2])
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "("+rest[0]+", "+rest[1]+")") {
		t.Errorf("third drain with a limit of 2: %v, want a conflict naming %s and %s", err, rest[0], rest[1])
	}
}
