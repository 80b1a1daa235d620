package agent

import (
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent/reconcile"
)

// The agent restarts an instance's container by the API's one rule
// (api.InstanceRestart): a job's instances never restart in place, even
// when their template leaves the policy out, as the job controller
// retries the index itself.
func TestInstanceRestartFromTheAPIRule(t *testing.T) {
	for _, c := range []struct {
		owner api.Kind
		given api.RestartPolicy
		want  reconcile.Policy
	}{
		{api.KindService, "", reconcile.Always},
		{api.KindService, api.RestartOnFailure, reconcile.OnFailure},
		{api.KindJob, "", reconcile.Never},
		{api.KindJob, api.RestartOnFailure, reconcile.Never},
	} {
		in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "x"},
			Spec: api.InstanceSpec{Owner: api.Owner{Kind: c.owner, Name: "x"}, Template: &api.Template{Image: "busybox", Restart: c.given}}}
		if got := InstanceFromAPI(in).Restart; got != c.want {
			t.Errorf("%s instance with restart %q: agent's policy %q, want %q", c.owner, c.given, got, c.want)
		}
	}
}
