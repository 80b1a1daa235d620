package api

import (
	"strings"
	"testing"
	"time"
)

// TestValidateProcess: each process setting berth refuses is named by
// field, with the reason; the ones it takes pass.
func TestValidateProcess(t *testing.T) {
	svc := func(f func(*Service)) *Service {
		s := &Service{Metadata: Metadata{Name: "web"}, Spec: ServiceSpec{Replicas: 1, Template: Template{Image: "demo/busybox:1"}}}
		f(s)
		return s
	}
	good := svc(func(s *Service) {
		s.Spec.Aliases = []string{"www"}
		s.Spec.Template = Template{Image: "demo/busybox:1", User: "nobody:nogroup", Hostname: "web.internal",
			CapAdd: []string{"net_raw", "CAP_NET_ADMIN"}, CapDrop: []string{"ALL"}, ReadOnly: true,
			Ulimits: []Ulimit{{Name: "nofile", Soft: 10, Hard: 20}}, Sysctls: map[string]string{"net.core.somaxconn": "1024", "kernel.shmmax": "1", "fs.mqueue.msg_max": "10"},
			ExtraHosts: []HostAlias{{IP: "10.0.0.1", Hostnames: []string{"db", "db.local"}}, {IP: "fd00::1", Hostnames: []string{"v6"}}},
			Init:       true, StopSignal: "SIGQUIT", StopGrace: Duration(time.Minute), Health: &Health{TCP: &TCPCheck{Port: 80}, StartPeriod: Duration(time.Second)}}
	})
	if err := good.Validate(); err != nil {
		t.Fatalf("valid process settings: %v", err)
	}
	for _, c := range []struct {
		field, reason string
		f             func(*Template)
	}{
		{"template.sysctls", "kernel.pid_max is not namespaced", func(t *Template) { t.Sysctls = map[string]string{"kernel.pid_max": "9"} }},
		{"template.sysctls", "set hostname instead", func(t *Template) { t.Sysctls = map[string]string{"kernel.hostname": "x"} }},
		{"template.capAdd[0]", "SYS_ADMIN", func(t *Template) { t.CapAdd = []string{"SYS_ADMIN"} }},
		{"template.capAdd[0]", "ALL would grant", func(t *Template) { t.CapAdd = []string{"all"} }},
		{"template.capAdd[0]", `unknown capability "FLY"`, func(t *Template) { t.CapAdd = []string{"FLY"} }},
		{"template.capDrop[0]", `unknown capability "FLY"`, func(t *Template) { t.CapDrop = []string{"FLY"} }},
		{"template.ulimits[0].name", `unknown limit "files"`, func(t *Template) { t.Ulimits = []Ulimit{{Name: "files", Soft: 1, Hard: 1}} }},
		{"template.ulimits[0].soft", "above the hard limit", func(t *Template) { t.Ulimits = []Ulimit{{Name: "nofile", Soft: 2, Hard: 1}} }},
		{"template.ulimits[1].name", "set twice", func(t *Template) { t.Ulimits = []Ulimit{{Name: "core", Hard: 1}, {Name: "core", Hard: 1}} }},
		{"template.extraHosts[0].ip", "not an IP address", func(t *Template) { t.ExtraHosts = []HostAlias{{IP: "host-gateway", Hostnames: []string{"h"}}} }},
		{"template.extraHosts[0].hostnames", "must not be empty", func(t *Template) { t.ExtraHosts = []HostAlias{{IP: "10.0.0.1"}} }},
		{"template.stopSignal", `unknown signal "SIGFOO"`, func(t *Template) { t.StopSignal = "SIGFOO" }},
		{"template.stopGrace", "between 0 and 1h0m0s", func(t *Template) { t.StopGrace = Duration(2 * time.Hour) }},
		{"template.init", "the runc runtime has no init", func(t *Template) { t.Init, t.Runtime = true, "runc" }},
		{"template.hostname", "not a host name", func(t *Template) { t.Hostname = "under_score" }},
		{"template.user", "want NAME or UID", func(t *Template) { t.User = "a:b:c" }},
		{"template.networks[1]", `"back" is listed twice`, func(t *Template) { t.Networks = []string{"back", "back"} }},
		{"template.networks[0]", "", func(t *Template) { t.Networks = []string{"Not_A_Label"} }},
		{"template.health.startPeriod", "must not be negative", func(t *Template) {
			t.Health = &Health{TCP: &TCPCheck{Port: 80}, StartPeriod: Duration(-time.Second)}
		}},
	} {
		err := svc(func(s *Service) { c.f(&s.Spec.Template) }).Validate()
		fe := FieldErrors(err)
		if len(fe) != 1 || fe[0].Field != c.field || !strings.Contains(fe[0].Reason, c.reason) {
			t.Errorf("%s: got %v, want one error on %s saying %q", c.field, err, c.field, c.reason)
		}
	}
	if fe := FieldErrors(svc(func(s *Service) { s.Spec.Aliases = []string{"web"} }).Validate()); len(fe) != 1 || fe[0].Field != "aliases[0]" {
		t.Errorf("an alias that is the service's own name: %v", fe)
	}
}
