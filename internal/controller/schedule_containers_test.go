package controller

import (
	"testing"

	"github.com/berth-dev/berth/api"
)

// The scheduler reserves an instance's init and sidecar containers too.
func TestSchedInstanceSumsContainers(t *testing.T) {
	in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-1"},
		Spec: api.InstanceSpec{Owner: api.Owner{Kind: api.KindService, Name: "web"}, Template: &api.Template{
			Image:     "demo/busybox:1",
			Resources: api.Resources{CPU: 0.5, Memory: 64 << 20},
			Containers: []api.Container{
				{Name: "proxy", Sidecar: true, Resources: api.Resources{CPU: 0.25, Memory: 32 << 20, Pids: 20}},
				{Name: "setup", Init: true, Resources: api.Resources{CPU: 1}},
			}}}}
	si, err := schedInstance(in)
	if err != nil {
		t.Fatal(err)
	}
	if si.Resources.MilliCPU != 1000 || si.Resources.MemoryBytes != 96<<20 || si.Resources.Pids != 20 {
		t.Errorf("resources %+v, want 1000 millicpu (the init container's), 96Mi and 20 pids (summed)", si.Resources)
	}
}
