package store

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// Wire gives what decoding a stored value and encoding the object gives,
// for values stored with their kind and without, and for a value of
// another shape.
func TestWireIsTheDecodedObject(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	in := instance("web-1")
	in.Metadata.Labels = map[string]string{"a": "b"}
	in.Spec.Template.Command = []string{"sh", "-c", "echo <b> && true"}
	in.Spec.Template.Env = map[string]string{"Z": "1", "A": "2"}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	svc := service("web", 3)
	svc.Metadata.Kind = api.KindService // written with its kind in the metadata
	if err := s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []api.Kind{api.KindInstance, api.KindService} {
		n := 0
		if _, err := s.ListFunc(ctx, k, "", func(value []byte, rev int64) error {
			n++
			got, err := Wire(k, value, rev)
			if err != nil {
				return err
			}
			obj, _ := api.New(k)
			if err := decode(obj, value, rev); err != nil {
				return err
			}
			want, _ := json.Marshal(obj)
			if !sameJSON(t, got, want) {
				t.Errorf("%s: Wire gives\n%s\nwant\n%s", k, got, want)
			}
			if !json.Valid(got) || bytes.Contains(got, []byte("\n")) {
				t.Errorf("%s: %s is not one line of JSON", k, got)
			}
			return nil
		}); err != nil || n != 1 {
			t.Fatalf("%s: %d listed, %v", k, n, err)
		}
	}
	// Stored without its kind (as written before objects carried it).
	value := []byte(`{"metadata":{"namespace":"default","name":"x","uid":"u1"},"spec":{"template":{"image":"demo/busybox:1"},"owner":{"kind":"Service","name":"web"}}}`)
	got, err := Wire(api.KindInstance, value, 9)
	var obj api.Instance
	if derr := decode(&obj, value, 9); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	if want, _ := json.Marshal(&obj); !sameJSON(t, got, want) {
		t.Errorf("a value stored without its kind: Wire gives\n%s\nwant\n%s", got, want)
	}
	// Not the shape encode writes: decoded and encoded.
	got, err = Wire(api.KindInstance, []byte(`{"spec":{"node":"n1"},"metadata":{"name":"x"}}`), 7)
	if err != nil || !sameJSON(t, got, []byte(`{"metadata":{"kind":"Instance","name":"x","revision":7},"spec":{"template":{"image":""},"owner":{"kind":"","name":""},"node":"n1"}}`)) {
		t.Errorf("a value of another shape: %s, %v", got, err)
	}
}

// sameJSON says whether a and b hold the same JSON value, key order aside.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// A status write splices the status into the stored JSON: the same
// object as merging the two whole, whether the stored one had a status
// or not, and still in the shape Wire reads without decoding.
func TestSetStatusSplicesTheStatus(t *testing.T) {
	st := api.InstanceStatus{Phase: api.PhaseRunning, ContainerID: "c1", Message: `"quoted" {braces} \ status`}
	for _, stored := range []string{
		`{"metadata":{"kind":"Instance","namespace":"default","name":"a","uid":"u"},"spec":{"template":{"image":"x","env":{"status":"{\"}"}},"owner":{"kind":"Service","name":"web"},"node":"n1"}}`,
		`{"metadata":{"kind":"Instance","namespace":"default","name":"a","uid":"u"},"spec":{"template":{"image":"x"},"owner":{"kind":"Service","name":"web"},"node":"n1"},"status":{"phase":"Scheduled","message":"}"}}`,
	} {
		op := &txnOp{cur: []byte(stored), status: &st}
		if err := op.prepareSetStatus(); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(struct {
			Status *api.InstanceStatus `json:"status"`
		}{&st})
		want, err := mergeRaw([]byte(stored), b, "status")
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, op.value, want) || !bytes.HasPrefix(op.value, []byte(`{"metadata":{`)) {
			t.Errorf("status spliced into %s:\n%s\nwant\n%s", stored, op.value, want)
		}
	}
}

// An object's status write splices its status into the stored JSON too:
// the same object as merging the two whole, what else the writer's copy
// says left as stored, a status the writer leaves out removed, and the
// writer's copy becomes what was stored.
func TestUpdateStatusSplicesTheStatus(t *testing.T) {
	stored := instance("a")
	stored.Metadata.Namespace, stored.Metadata.UID = "default", "u"
	stored.Spec.Node = "n1"
	stored.Status = api.InstanceStatus{Phase: api.PhaseScheduled, Message: "}"}
	node := &api.Node{Metadata: api.Metadata{Name: "n1", UID: "u"}, Spec: api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 1000, Memory: 1 << 30}},
		Status: api.NodeStatus{Condition: api.NodeReady, Message: `"quoted" {braces}`}}
	for _, tc := range []struct {
		stored, obj api.Object
	}{
		{stored, func() api.Object {
			in := instance("a")
			in.Metadata.Namespace = "default"
			in.Spec.Template.Image = "not/written:2" // the writer's spec is not written
			in.Status = api.InstanceStatus{Phase: api.PhaseLost, Message: `node n1 stopped answering {"x"}`}
			return in
		}()},
		{node, &api.Node{Metadata: api.Metadata{Name: "n1"}}}, // no status: the stored one goes
	} {
		cur, err := encode(tc.stored)
		if err != nil {
			t.Fatal(err)
		}
		op := &txnOp{typ: opUpdateStatus, obj: tc.obj, kind: tc.obj.GetKind(), cur: cur}
		if err := op.prepareStatus(); err != nil {
			t.Fatal(err)
		}
		b, _ := encode(tc.obj)
		want, err := mergeRaw(cur, b, "status")
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, op.value, want) || !bytes.HasPrefix(op.value, []byte(`{"metadata":{`)) {
			t.Errorf("status spliced into %s:\n%s\nwant\n%s", cur, op.value, want)
		}
		wantObj, _ := api.New(tc.obj.GetKind())
		if err := decode(wantObj, want, 0); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(op.stored, wantObj) {
			t.Errorf("what the writer's copy becomes: %+v\nwant %+v", op.stored, wantObj)
		}
	}
}

// A stored value leaves out the kind its key says, and every reader gives
// it again: a get, a list, a watch and Wire of the new value; and a value
// stored with its kind, as earlier versions wrote, reads the same.
func TestStoredValueLeavesOutItsKind(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	in := instance("web-1")
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	if in.Metadata.Kind != api.KindInstance {
		t.Fatalf("created instance has kind %q", in.Metadata.Kind)
	}
	key := s.Key(api.KindInstance, "default", "web-1")
	r, err := s.client.Get(ctx, key)
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("read %s: %v", key, err)
	}
	stored := r.Kvs[0].Value
	if bytes.Contains(stored, []byte(`"kind":"Instance"`)) || !bytes.HasPrefix(stored, []byte(`{"metadata":{"namespace":`)) {
		t.Fatalf("stored as %s: want no kind in its metadata", stored)
	}
	w := s.Watch(ctx, api.KindInstance, "", r.Kvs[0].ModRevision)
	withKind := []byte(`{"metadata":{"kind":"Instance",` + strings.TrimPrefix(string(stored), `{"metadata":{`))
	var wires [][]byte
	for i, value := range [][]byte{stored, withKind} {
		if i > 0 {
			if _, err := s.client.Put(ctx, key, string(value)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := Get[api.Instance](ctx, s, "default", "web-1")
		if err != nil || got.Metadata.Kind != api.KindInstance || got.Metadata.UID != in.Metadata.UID {
			t.Fatalf("value %d read as %+v (%v)", i, got, err)
		}
		b, err := Wire(api.KindInstance, value, 9)
		var wired api.Instance
		if err != nil || json.Unmarshal(b, &wired) != nil || wired.Metadata.Kind != api.KindInstance || wired.Metadata.Revision != 9 {
			t.Fatalf("Wire of value %d: %s (%v)", i, b, err)
		}
		wires = append(wires, b)
	}
	if !sameJSON(t, wires[0], wires[1]) {
		t.Fatalf("Wire of the value without its kind:\n%s\nwith it:\n%s", wires[0], wires[1])
	}
	list, _, err := List[api.Instance](ctx, s, "")
	if err != nil || len(list) != 1 || list[0].Metadata.Kind != api.KindInstance {
		t.Fatalf("list: %d instances, %v", len(list), err)
	}
	for range 2 {
		select {
		case ev := <-w:
			if ev.Object == nil || ev.Object.GetMetadata().Kind != api.KindInstance {
				t.Fatalf("watch event %+v: want an instance with its kind", ev)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no watch event in 30s")
		}
	}
}
