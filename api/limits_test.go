package api

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// Each admission limit refuses one over it, naming the field and the cap,
// and takes one at it.
func TestAdmissionLimits(t *testing.T) {
	tmpl := func(f func(*Template)) Template {
		t := Template{Image: "demo/busybox:1"}
		f(&t)
		return t
	}
	vols := func(n int) []VolumeMount {
		var out []VolumeMount
		for i := range n {
			out = append(out, VolumeMount{HostPath: "/srv", Path: fmt.Sprintf("/v%d", i)})
		}
		return out
	}
	ports := func(n int) []Port {
		var out []Port
		for i := range n {
			out = append(out, Port{Container: 1000 + i})
		}
		return out
	}
	env := func(n int) map[string]string {
		out := map[string]string{}
		for i := range n {
			out[fmt.Sprintf("V%d", i)] = "x"
		}
		return out
	}
	sysctls := func(n int) map[string]string {
		out := map[string]string{}
		for i := range n {
			out[fmt.Sprintf("net.ipv4.conf.v%d.forwarding", i)] = "1"
		}
		return out
	}
	hosts := func(n int) []HostAlias {
		out := make([]HostAlias, n)
		for i := range out {
			out[i] = HostAlias{IP: "10.0.0.1", Hostnames: []string{fmt.Sprintf("h%d", i)}}
		}
		return out
	}
	aliases := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("a%d", i)
		}
		return out
	}
	tests := []struct {
		field   string
		limit   int
		at, ovr Object
	}{
		{"replicas", MaxReplicas,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Replicas: MaxReplicas, Template: tmpl(func(*Template) {})}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Replicas: MaxReplicas + 1, Template: tmpl(func(*Template) {})}}},
		{"completions", MaxCompletions,
			&Job{Metadata: Metadata{Name: "j"}, Spec: JobSpec{Completions: MaxCompletions, Template: tmpl(func(*Template) {})}},
			&Job{Metadata: Metadata{Name: "j"}, Spec: JobSpec{Completions: MaxCompletions + 1, Template: tmpl(func(*Template) {})}}},
		{"parallelism", MaxParallelism,
			&Job{Metadata: Metadata{Name: "j"}, Spec: JobSpec{Completions: 1, Parallelism: MaxParallelism, Template: tmpl(func(*Template) {})}},
			&Job{Metadata: Metadata{Name: "j"}, Spec: JobSpec{Completions: 1, Parallelism: MaxParallelism + 1, Template: tmpl(func(*Template) {})}}},
		{"template.env", MaxEnv,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Env = env(MaxEnv) })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Env = env(MaxEnv + 1) })}}},
		{"template.command", MaxArgs,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Command = make([]string, 4); t.Args = make([]string, MaxArgs-4) })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Command = make([]string, 4); t.Args = make([]string, MaxArgs-3) })}}},
		{"template.volumes", MaxVolumes,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Volumes = vols(MaxVolumes) })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Volumes = vols(MaxVolumes + 1) })}}},
		{"template.ports", MaxPorts,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Ports = ports(MaxPorts) })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Ports = ports(MaxPorts + 1) })}}},
		{"template.sysctls", MaxSysctls,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Sysctls = sysctls(MaxSysctls) })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Sysctls = sysctls(MaxSysctls + 1) })}}},
		{"template.extraHosts", MaxExtraHosts,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.ExtraHosts = hosts(MaxExtraHosts) })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.ExtraHosts = hosts(MaxExtraHosts + 1) })}}},
		{"template.networks", MaxNetworks,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Networks = aliases(MaxNetworks) })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Networks = aliases(MaxNetworks + 1) })}}},
		{"aliases", MaxAliases,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Aliases: aliases(MaxAliases), Template: tmpl(func(*Template) {})}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Aliases: aliases(MaxAliases + 1), Template: tmpl(func(*Template) {})}}},
		{"template", MaxTemplateBytes,
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Env = map[string]string{"V": strings.Repeat("x", MaxTemplateBytes-100)} })}},
			&Service{Metadata: Metadata{Name: "s"}, Spec: ServiceSpec{Template: tmpl(func(t *Template) { t.Env = map[string]string{"V": strings.Repeat("x", MaxTemplateBytes)} })}}},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			if err := tc.at.Validate(); err != nil {
				t.Fatalf("at the limit: %v", err)
			}
			err := tc.ovr.Validate()
			fe := FieldErrors(err)
			if len(fe) != 1 || fe[0].Field != tc.field || !strings.Contains(fe[0].Reason, fmt.Sprint(tc.limit)) {
				t.Fatalf("over the limit: %v, want one error on %s naming %d", err, tc.field, tc.limit)
			}
		})
	}
}

// A status's text is cut to its limits, never in the middle of a rune.
func TestStatusTextIsTrimmed(t *testing.T) {
	s := InstanceStatus{Message: strings.Repeat("é", MaxStatusMessage), Reason: strings.Repeat("r", MaxStatusWord+1),
		Containers: []ContainerStatus{{Reason: strings.Repeat("c", 2*MaxStatusWord)}}}
	s.TrimText()
	if len(s.Message) > MaxStatusMessage || len(s.Message) < MaxStatusMessage-1 || !utf8.ValidString(s.Message) {
		t.Errorf("message cut to %d bytes (valid UTF-8: %v), want %d or one less, whole runes", len(s.Message), utf8.ValidString(s.Message), MaxStatusMessage)
	}
	if len(s.Reason) != MaxStatusWord || len(s.Containers[0].Reason) != MaxStatusWord {
		t.Errorf("reasons cut to %d and %d bytes, want %d", len(s.Reason), len(s.Containers[0].Reason), MaxStatusWord)
	}
	short := InstanceStatus{Message: "exit 1", Reason: "Error"}
	short.TrimText()
	if short.Message != "exit 1" || short.Reason != "Error" {
		t.Errorf("short text changed: %+v", short)
	}
	if err := (&Node{Metadata: Metadata{Name: "n1"}, Spec: NodeSpec{Address: strings.Repeat("a", 254)}}).Validate(); err == nil || !strings.Contains(err.Error(), "spec.address") {
		t.Errorf("a 254-character address: %v, want an error naming spec.address", err)
	}
}
