package api

import (
	"fmt"
	"strings"
	"testing"
)

// Each rule of a template's containers refuses a bad one naming the field.
func TestValidateContainers(t *testing.T) {
	ok := Container{Name: "proxy", Sidecar: true}
	many := make([]Container, MaxContainers+1)
	for i := range many {
		many[i] = Container{Name: fmt.Sprintf("c%d", i), Init: true}
	}
	tests := []struct {
		cs    []Container
		field string
		want  string
	}{
		{[]Container{{Name: "Bad_Name", Init: true}}, "template.containers[0].name", ""},
		{[]Container{{Name: "main", Init: true}}, "template.containers[0].name", "template's own container"},
		{[]Container{ok, ok}, "template.containers[1].name", "duplicate"},
		{[]Container{{Name: "x"}}, "template.containers[0]", "exactly one of init and sidecar"},
		{[]Container{{Name: "x", Init: true, Sidecar: true}}, "template.containers[0]", "exactly one of init and sidecar"},
		{[]Container{{Name: "x", Init: true, Health: &Health{TCP: &TCPCheck{Port: 80}}}}, "template.containers[0].health", "must exit 0"},
		{[]Container{{Name: "x", Init: true, Restart: RestartAlways}}, "template.containers[0].restart", "instance's restart policy"},
		{[]Container{{Name: "x", Sidecar: true, Restart: "sometimes"}}, "template.containers[0].restart", "always, on-failure or never"},
		{[]Container{{Name: "x", Sidecar: true, Health: &Health{}}}, "template.containers[0].health", "exactly one of http, tcp and exec"},
		{[]Container{{Name: "x", Sidecar: true, Resources: Resources{Memory: 1 << 20}}}, "template.containers[0].resources.memory", "minimum"},
		{[]Container{{Name: "x", Sidecar: true, Resources: Resources{CPU: 1, Exclusive: true}}}, "template.containers[0].resources.exclusive", "main container"},
		{[]Container{{Name: "x", Sidecar: true, Image: "UPPER/case"}}, "template.containers[0].image", ""},
		{[]Container{{Name: "x", Sidecar: true, Env: map[string]string{"1X": "y"}}}, "template.containers[0].env", "invalid variable name"},
		{many, "template.containers", fmt.Sprintf("over the limit of %d", MaxContainers)},
	}
	for _, tc := range tests {
		s := &Service{Metadata: Metadata{Name: "web", Namespace: "default"}, Spec: ServiceSpec{Replicas: 1,
			Template: Template{Image: "demo/busybox:1", Containers: tc.cs}}}
		err := s.Validate()
		found := false
		for _, fe := range FieldErrors(err) {
			found = found || (fe.Field == tc.field && strings.Contains(fe.Reason, tc.want))
		}
		if !found {
			t.Errorf("%+v: error %v, want one on %s saying %q", tc.cs, err, tc.field, tc.want)
		}
	}
	good := &Service{Metadata: Metadata{Name: "web", Namespace: "default"}, Spec: ServiceSpec{Replicas: 1,
		Template: Template{Image: "demo/busybox:1", Containers: []Container{{Name: "setup", Init: true}, ok}}}}
	if err := good.Validate(); err != nil {
		t.Errorf("init and sidecar: %v", err)
	}
}

// An instance reserves its main and sidecar containers' sum, or its
// largest init container's when that is more.
func TestTemplateRequests(t *testing.T) {
	tm := Template{Resources: Resources{CPU: 0.5, Memory: 64 << 20, Pids: 10},
		Containers: []Container{
			{Name: "a", Sidecar: true, Resources: Resources{CPU: 0.25, Memory: 32 << 20, Pids: 5}},
			{Name: "b", Init: true, Resources: Resources{CPU: 2, Memory: 16 << 20, Pids: 100}},
		}}
	got := tm.Requests()
	if got.CPU != 2 || got.Memory != 96<<20 || got.Pids != 100 {
		t.Errorf("Requests() = %+v, want cpu 2 (the init container's), memory 96Mi (summed), pids 100", got)
	}
	if n := tm.ContainerNames(); strings.Join(n, ",") != "b,a,main" {
		t.Errorf("ContainerNames() = %v", n)
	}
}

// What a node reports of an instance's containers must match its template.
func TestValidateContainerStatuses(t *testing.T) {
	in := Instance{Spec: InstanceSpec{Template: &Template{Image: "demo/busybox:1",
		Containers: []Container{{Name: "setup", Init: true}}}}}
	in.Status.Containers = []ContainerStatus{{Name: "setup", State: ContainerTerminated}, {Name: "main", State: ContainerRunning}}
	if err := in.ValidateStatus(); err != nil {
		t.Errorf("a matching report: %v", err)
	}
	for field, cs := range map[string][]ContainerStatus{
		"status.containers[0].name":     {{Name: "other", State: ContainerRunning}},
		"status.containers[0].state":    {{Name: "main", State: "Dancing"}},
		"status.containers[0].restarts": {{Name: "main", State: ContainerRunning, Restarts: -1}},
		"status.containers":             {{Name: "main", State: ContainerRunning}, {Name: "main", State: ContainerRunning}, {Name: "setup", State: ContainerRunning}},
	} {
		in.Status.Containers = cs
		found := false
		for _, fe := range FieldErrors(in.ValidateStatus()) {
			found = found || fe.Field == field
		}
		if !found {
			t.Errorf("%+v: no error on %s", cs, field)
		}
	}
}
