package store

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// decodeHead gives the metadata, node, containers and status that
// decoding the whole stored instance gives, and nothing of the rest.
func TestDecodeHeadIsThatPartOfTheInstance(t *testing.T) {
	in := instance("web-1")
	in.Metadata.UID, in.Metadata.Labels = "u1", map[string]string{"a": "b", "esc": "x\"y"}
	in.Metadata.CreatedAt = time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	in.Spec.Node = "node-\u00e9"
	in.Spec.Template.Env = map[string]string{"Z": "1"}
	in.Spec.Template.Containers = []api.Container{{Name: "side", Image: "demo/busybox:1"}}
	in.Status = api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.0.0.5", Message: "a \"quoted\" message"}
	value, err := encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var whole api.Instance
	if err := json.Unmarshal(value, &whole); err != nil {
		t.Fatal(err)
	}
	var got api.Instance
	if err := decodeHead(value, &got); err != nil {
		t.Fatal(err)
	}
	want := api.Instance{Metadata: whole.Metadata, Status: whole.Status}
	want.Spec.Node, want.Spec.Template.Containers = whole.Spec.Node, whole.Spec.Template.Containers
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeHead gave\n%+v\nwant\n%+v", got, want)
	}
	if err := decodeHead([]byte(`{"spec":{}}`), &got); err == nil {
		t.Fatal("a value without metadata was decoded")
	}
}
