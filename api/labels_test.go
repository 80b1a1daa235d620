package api

import (
	"reflect"
	"strings"
	"testing"
)

func TestLabelValidation(t *testing.T) {
	svc := func(labels map[string]string) *Service {
		s := RunService("web", "demo/busybox:1", nil)
		s.Metadata.Labels = labels
		return s
	}
	for _, ok := range []map[string]string{
		{"tier": "front"}, {"app.kubernetes.io/name": "web"}, {"a_b.c-d": ""}, {"k": strings.Repeat("v", 63)},
	} {
		if err := svc(ok).Validate(); err != nil {
			t.Errorf("labels %v: %v", ok, err)
		}
	}
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many["k"+strings.Repeat("x", i%10)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"bad key": "v"}, "bad key"},
		{map[string]string{"-k": "v"}, "-k"},
		{map[string]string{"a/b/c": "v"}, "a/b/c"},
		{map[string]string{"Bad.Prefix/k": "v"}, "prefix"},
		{map[string]string{strings.Repeat("k", 64): "v"}, "longer than 63"},
		{map[string]string{"k": strings.Repeat("v", 64)}, "longer than 63"},
		{map[string]string{"k": "a b"}, `"a b"`},
		{many, "MaxLabels"},
	} {
		err := svc(tc.labels).Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "labels") {
			t.Errorf("labels %v: %v, want an error on labels naming %q", tc.labels, err, tc.want)
		}
	}
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"tier": "front", "env": "prod"}
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"tier=front", true},
		{"tier==front", true},
		{"tier=back", false},
		{"tier!=back", true},
		{"tier!=front", false},
		{"missing!=x", true},
		{"missing=x", false},
		{"tier=front, env=prod", true},
		{"tier=front,env!=prod", false},
	} {
		s, err := ParseSelector(tc.sel)
		if err != nil {
			t.Fatalf("%q: %v", tc.sel, err)
		}
		if got := s.Matches(labels); got != tc.want {
			t.Errorf("%q matches %v: %v, want %v", tc.sel, labels, got, tc.want)
		}
	}
	for _, bad := range []string{"tier", "=x", "bad key=x", "k=a b", "k=v,"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("selector %q accepted", bad)
		}
	}
}

// What `berth get -o yaml` and `-o json` print parses back to the same
// object, without what the server sets.
func TestParseSpecsObjectShape(t *testing.T) {
	doc := `kind: Service
metadata:
  kind: Service
  name: web
  namespace: prod
  labels: {tier: front}
  uid: 10eb640a8bdb55aa8b5915b60a7cdefb
  revision: 20
  createdAt: "2026-12-06T05:53:36.568004077Z"
spec:
  replicas: 3
  template: {image: demo/busybox:1, ports: [{container: 80}]}
status: {readyReplicas: 3, vip: 10.96.0.1}
`
	objs, err := ParseSpecs("web.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s := objs[0].(*Service)
	m := s.Metadata
	if m.Name != "web" || m.Namespace != "prod" || m.Labels["tier"] != "front" || m.UID != "" || m.Revision != 0 || !m.CreatedAt.IsZero() {
		t.Errorf("metadata %+v: want name, namespace and labels only", m)
	}
	if s.Spec.Replicas != 3 || !reflect.DeepEqual(s.Status, ServiceStatus{}) {
		t.Errorf("spec %+v status %+v", s.Spec, s.Status)
	}
	list := `[{"kind": "Job", "metadata": {"name": "a"}, "spec": {"completions": 1, "template": {"image": "demo/busybox:1"}}},
	          {"kind": "Service", "metadata": {"name": "b"}, "spec": {"replicas": 1, "template": {"image": "demo/busybox:1"}}}]`
	objs, err = ParseSpecsIn("list.json", []byte(list), "team")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetKind() != KindJob || objs[1].GetMetadata().Namespace != "team" {
		t.Errorf("list: %+v", objs)
	}
	for _, tc := range []struct{ doc, want string }{
		{`{"kind": "Instance", "metadata": {"name": "a"}, "spec": {}}`, "only Service and Job"},
		{`{"metadata": {"name": "a"}, "spec": {}}`, "kind: missing"},
		{`{"kind": "Service", "metadata": {"name": "a"}, "spec": {"replicas": 1, "colour": "red", "template": {"image": "x"}}}`, "colour"},
		{`{"kind": "Service", "metadata": {"name": "a", "kind": "Job"}, "spec": {"replicas": 1, "template": {"image": "x"}}}`, "metadata.kind"},
		{`[]`, "empty list"},
	} {
		if _, err := ParseSpecs("f.yaml", []byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.doc, err, tc.want)
		}
	}
}

func TestWarnings(t *testing.T) {
	s := RunService("web", "demo/busybox:1", nil)
	if w := Warnings(s); len(w) != 1 || !strings.Contains(w[0], "web.default.berth will not answer") {
		t.Errorf("service without ports: %q", w)
	}
	s.Spec.Template.Ports = []Port{{Container: 80}}
	if w := Warnings(s); len(w) != 0 {
		t.Errorf("service with a port: %q", w)
	}
}
