package apiserver

import (
	"errors"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

// A batch decodes in one pass when it is right, and is refused as
// strictly as any body when it is not: an unknown field or a value of
// the wrong type is named by its path.
func TestStatusBatchDecodesStrictly(t *testing.T) {
	var b api.StatusBatch
	if err := decodeStatusBatch([]byte(`{"items":[{"namespace":"default","name":"a","status":{"phase":"Running","ip":"10.0.0.5"}}]}`), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Items) != 1 || b.Items[0].Name != "a" || b.Items[0].Status.Phase != api.PhaseRunning || b.Items[0].Status.IP != "10.0.0.5" {
		t.Fatalf("decoded %+v", b)
	}
	for body, field := range map[string]string{
		`{"items":[{"namespace":"default","name":"a","status":{"phase":"Running","bogus":1}}]}`: "items[0].status.bogus",
		`{"items":[{"namespace":"default","name":"a","status":{"restarts":"many"}}]}`:           "items[0].status.restarts",
		`{"items":[]} {}`: "data after the value",
	} {
		var b api.StatusBatch
		err := decodeStatusBatch([]byte(body), &b)
		var ve *api.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want a validation error naming %s", body, err, field)
		}
	}
}
