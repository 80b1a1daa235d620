package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// DecodeStrict's shortcut for what encoding/json writes (canonical)
// accepts and rejects what the field-by-field checks do, and leaves the
// same object: bodies as api/client writes them, and bodies a person or
// another client might send, canonical or not, valid or not.
func TestDecodeStrictShortcutAgreesWithTheChecks(t *testing.T) {
	at := time.Date(2026, 12, 7, 4, 35, 56, 50623916, time.UTC)
	beat, _ := json.Marshal(&Node{Metadata: Metadata{Name: "n1"}, Status: NodeStatus{Condition: NodeReady, LastHeartbeat: at}})
	svc, _ := json.Marshal(&Service{Metadata: Metadata{Name: "web", Labels: map[string]string{"a": "<b>"}}, Spec: ServiceSpec{Replicas: 3,
		Template: Template{Image: "demo/busybox:1", Env: map[string]string{"A": "1"}, Resources: Resources{CPU: 0.5, Memory: 64 << 20},
			Ports: []Port{{Name: "http", Container: 80}}}}})
	in, _ := json.Marshal(&Instance{Metadata: Metadata{Namespace: "default", Name: "web-1"}, Status: InstanceStatus{Phase: PhaseRunning, ExitCode: 3, StartedAt: at}})
	bodies := []struct {
		kind Kind
		body string
	}{
		{KindNode, string(beat)},
		{KindNode, string(beat) + "\n"},
		{KindService, string(svc)},
		{KindInstance, string(in)},
		{KindNode, `{"metadata":{"name":"n1"},"status":{"condition":"Ready"}}`},                   // no spec: not canonical, valid
		{KindNode, `{"Metadata":{"name":"n1"},"spec":{},"status":{"condition":"Ready"}}`},         // a key in the wrong case
		{KindNode, `{"metadata":{"name":"n1"},"spec":{},"status":{"condition":"Ready","x":1}}`},   // unknown field
		{KindNode, `{"metadata":{"name":"n1","name":"n2"},"spec":{},"status":{}}`},                // a key twice
		{KindNode, `{"metadata":{"name":1},"spec":{},"status":{}}`},                               // wrong type
		{KindNode, `{"metadata":{"name":"n1"},"spec":{},"status":{"lastHeartbeat":"yesterday"}}`}, // bad time
		{KindNode, `{"metadata":{"name":"n1"},"spec":{},"status":{}} {}`},                         // trailing data
		{KindNode, `{"metadata":null,"spec":{},"status":{}}`},
		{KindService, `{"metadata":{"name":"web"},"spec":{"replicas":1,"template":{"image":"a","resources":{"memory":"64Mi"}}}}`},
		{KindService, `{"metadata":{"name":"web"},"spec":{"replicas":1,"template":{"image":"a","resources":{"memory":"lots"}}}}`},
		{KindService, `{"metadata":{"name":"web"},"spec":{"replicas":true,"template":{"image":"a"}}}`},
		{KindService, `{"metadata":{"name":"web"},"spec":{"replicas":1.5,"template":{"image":"a"}}}`},
		{KindService, `not json`},
	}
	for i, b := range bodies {
		got, _ := New(b.kind)
		want, _ := New(b.kind)
		gerr := DecodeStrict([]byte(b.body), got)
		werr := decodeChecked([]byte(b.body), want)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Errorf("body %d %s: DecodeStrict says %v, the checks %v", i, b.body, gerr, werr)
		}
		if gerr == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("body %d %s: DecodeStrict gives %+v, the checks %+v", i, b.body, got, want)
		}
	}
	// What api/client writes takes the shortcut.
	for _, c := range []struct {
		body []byte
		into Object
	}{{beat, &Node{}}, {svc, &Service{}}, {in, &Instance{}}} {
		if !canonical(c.body, c.into) {
			t.Errorf("%s as api/client writes it is not canonical: %s", c.into.GetKind(), c.body)
		}
	}
}
