package apiserver

import (
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// FuzzRequestBodies feeds any bytes to what the API does with a request
// body before the store sees it: the strict decode of each kind and of
// each action's request, defaults and validation, and, for bodies a node
// sends, the checks of what it may claim. Whatever the input: no panic,
// decode errors are InvalidArgument, and what a node's write is let
// through with never changes the fields admins own, never exceeds the
// capacity limit, and never puts an instance outside its node's subnet.
//
// The seeds run with every `go test`; `go test -fuzz FuzzRequestBodies
// ./internal/apiserver/` explores further.
func FuzzRequestBodies(f *testing.F) {
	seeds := []string{
		`{"metadata":{"name":"n1","labels":{"node.berth/zone":"a"}},"spec":{"address":"10.0.0.1","capacity":{"milliCPU":2000,"memory":1073741824,"pids":1000},"topology":{"cores":[{"id":0,"numa":0,"threads":[0,1]}]}}}`,
		`{"metadata":{"name":"n1","labels":{"zone":"b"}},"spec":{"podSubnet":"10.244.2.0/24","unschedulable":false,"capacity":{"milliCPU":64000000}}}`,
		`{"metadata":{"name":"n1"},"spec":{"capacityLimit":{"milliCPU":1}},"status":{"condition":"Ready"}}`,
		`{"metadata":{"namespace":"default","name":"web-1"},"status":{"phase":"Running","ip":"10.244.1.9"}}`,
		`{"metadata":{"namespace":"default","name":"web-1"},"spec":{"node":"n2"},"status":{"phase":"Lost","ip":"::ffff:10.244.1.9"}}`,
		`{"metadata":{"namespace":"default","name":"web-1"},"status":{"phase":"Running","ip":"192.0.2.1"}}`,
		`{"metadata":{"name":"web"},"spec":{"replicas":3,"template":{"image":"demo/busybox:1","resources":{"cpu":0.5,"memory":"64Mi"}}}}`,
		`{"metadata":{"name":"tests"},"spec":{"completions":8,"parallelism":4,"template":{"image":"demo/busybox:1"}}}`,
		`{"metadata":{"namespace":"default"},"object":{"kind":"Node","name":"n2"},"type":"Warning","reason":"Forged","source":"controller"}`,
		`{"token":"berth_aaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","node":"n1","csr":"-----BEGIN CERTIFICATE REQUEST-----"}`,
		`{"replicas":-1}`, `{"node":"n1","cpuset":[0,1]}`, `{"ttl":"24h","uses":3}`, `{"csr":""}`,
		`{"metadata":{"name":"n1"},"unknown":1}`, `[]`, `null`, `{"spec":{"capacity":{"memory":"1Ei"}}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	storedNode := &api.Node{
		Metadata: api.Metadata{Name: "n1", Labels: map[string]string{"zone": "a", "node.berth/disk": "ssd"}},
		Spec: api.NodeSpec{PodSubnet: "10.244.1.0/24", Unschedulable: true,
			Capacity:      api.NodeCapacity{MilliCPU: 2000, Memory: 1 << 30, Pids: 1000},
			CapacityLimit: api.NodeCapacity{MilliCPU: 2000, Memory: 1 << 30, Pids: 1000}},
	}
	storedInst := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-1"}, Spec: api.InstanceSpec{Node: "n1"}}
	subnet := netip.MustParsePrefix(storedNode.Spec.PodSubnet)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range api.Kinds {
			obj, _ := api.New(k)
			if err := api.DecodeStrict(data, obj); err != nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("%s: decode error outside InvalidArgument: %v", k, err)
				}
				continue
			}
			api.Default(obj)
			if err := obj.Validate(); err != nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || len(api.FieldErrors(err)) == 0 {
					t.Fatalf("%s: validation error without fields: %v", k, err)
				}
				continue
			}
			switch o := obj.(type) {
			case *api.Node:
				checkOwnNode(t, o, storedNode)
			case *api.Instance:
				o.Metadata.Namespace, o.Metadata.Name = "default", "web-1"
				if err := admitInstanceStatus(storedNode, o, storedInst); err == nil {
					if !nodePhases[o.Status.Phase] {
						t.Fatalf("a node set phase %q", o.Status.Phase)
					}
					if o.Status.IP != "" {
						ip, err := netip.ParseAddr(o.Status.IP)
						if err != nil || !subnet.Contains(ip.Unmap()) {
							t.Fatalf("a node set IP %q outside %s", o.Status.IP, subnet)
						}
					}
					if o.Spec.Node != "" && o.Spec.Node != "n1" {
						t.Fatalf("a node's status moved the instance to %q", o.Spec.Node)
					}
				} else if !errdefs.IsForbidden(err) {
					t.Fatalf("instance status refused outside Forbidden: %v", err)
				}
			}
		}
		for _, req := range []any{&JoinRequest{}, &TokenRequest{}, &ScaleRequest{}, &BindRequest{}, &RenewRequest{}} {
			if err := api.DecodeStrict(data, req); err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("%T: decode error outside InvalidArgument: %v", req, err)
			}
		}
	})
}

// checkOwnNode runs a node's write of its own Node, as the body says,
// against stored (and as a first registration), and checks what
// admitOwnNode lets through.
func checkOwnNode(t *testing.T, in, stored *api.Node) {
	t.Helper()
	for _, st := range []*api.Node{stored, nil} {
		n := *in
		n.Metadata.Name = "n1"
		n.Metadata.Labels = maps.Clone(in.Metadata.Labels)
		_, err := admitOwnNode("n1", &n, st)
		if err != nil {
			var ff *forbiddenField
			if !errors.As(err, &ff) || !errdefs.IsForbidden(err) || ff.field == "" {
				t.Fatalf("node write refused without a forbidden field: %v", err)
			}
			continue
		}
		var want api.Node
		if st != nil {
			want = *st
		}
		if n.Spec.PodSubnet != want.Spec.PodSubnet || n.Spec.Unschedulable != want.Spec.Unschedulable || n.Spec.Draining != want.Spec.Draining {
			b, _ := json.Marshal(n.Spec)
			t.Fatalf("a node's write changed admins' fields: %s", b)
		}
		for k, v := range n.Metadata.Labels {
			if !strings.HasPrefix(k, api.NodeReportedLabelPrefix) && want.Metadata.Labels[k] != v {
				t.Fatalf("a node's write set label %s=%s", k, v)
			}
		}
		lim, c := n.Spec.CapacityLimit, n.Spec.Capacity
		if st != nil && lim != st.Spec.CapacityLimit {
			t.Fatalf("a node's write changed its limit to %+v", lim)
		}
		if lim.MilliCPU > 0 && c.MilliCPU > lim.MilliCPU || lim.Memory > 0 && c.Memory > lim.Memory || lim.Pids > 0 && c.Pids > lim.Pids {
			t.Fatalf("capacity %+v over the limit %+v", c, lim)
		}
		threads := 0
		for _, core := range n.Spec.Topology.Cores {
			threads += len(core.Threads)
		}
		if lim.MilliCPU > 0 && int64(threads)*1000 > lim.MilliCPU+999 {
			t.Fatalf("topology of %d logical CPUs over the limit of %dm", threads, lim.MilliCPU)
		}
	}
}

// A node recorded before capacity limits (or made by an admin with a
// capacity) is held to the capacity recorded then.
func TestCapacityLimitOfANodeRecordedWithoutOne(t *testing.T) {
	stored := &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 1000, Pids: 100}}}
	in := &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 64_000_000, Pids: 50}}}
	capped, err := admitOwnNode("n1", in, stored)
	if err != nil {
		t.Fatal(err)
	}
	if in.Spec.CapacityLimit != stored.Spec.Capacity || in.Spec.Capacity.MilliCPU != 1000 || in.Spec.Capacity.Pids != 50 || len(capped) != 1 {
		t.Fatalf("capacity %+v, limit %+v, capped %v; want 1000m and 50 pids under the recorded capacity", in.Spec.Capacity, in.Spec.CapacityLimit, capped)
	}
}
