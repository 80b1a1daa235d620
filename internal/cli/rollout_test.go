package cli

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

func TestUndoTargetAndRolloutDone(t *testing.T) {
	t1, t2 := api.Template{Image: "a:1"}, api.Template{Image: "a:2"}
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 2, Template: t2},
		Status: api.ServiceStatus{History: []api.TemplateRevision{
			{Revision: 1, Hash: t1.Hash(), Template: t1}, {Revision: 2, Hash: t2.Hash(), Template: t2}}}}
	if got, err := undoTarget(svc, 0); err != nil || got.Revision != 1 {
		t.Fatalf("undo: %+v %v, want revision 1", got, err)
	}
	if _, err := undoTarget(svc, 2); err == nil || !strings.Contains(err.Error(), "current template already") {
		t.Fatalf("undo to the current revision: %v", err)
	}
	if _, err := undoTarget(svc, 7); err == nil || !strings.Contains(err.Error(), "no such revision") {
		t.Fatalf("undo to a revision not kept: %v", err)
	}
	svc.Status.History = svc.Status.History[1:]
	if _, err := undoTarget(svc, 0); err == nil {
		t.Fatal("undo with no earlier template succeeded")
	}

	for _, tc := range []struct {
		ro       api.RolloutStatus
		done, ok bool
	}{
		{api.RolloutStatus{Hash: t1.Hash(), Phase: api.RolloutComplete}, false, true}, // an older template's
		{api.RolloutStatus{Hash: t2.Hash(), Phase: api.RolloutProgressing}, false, true},
		{api.RolloutStatus{Hash: t2.Hash(), Phase: api.RolloutComplete}, true, true},
		{api.RolloutStatus{Hash: t2.Hash(), Phase: api.RolloutFailed}, true, false},
		{api.RolloutStatus{Hash: t1.Hash(), Phase: api.RolloutRolledBack}, true, false},
	} {
		svc.Status.Rollout = tc.ro
		done, err := rolloutDone(svc)
		if done != tc.done || (err == nil) != tc.ok {
			t.Errorf("%+v: done %v err %v, want %v ok=%v", tc.ro, done, err, tc.done, tc.ok)
		}
	}
}
