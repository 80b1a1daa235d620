package api

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api/errdefs"
)

const goodService = `
kind: Service
name: web
replicas: 3
template:
  image: demo/busybox:1
  command: ["httpd", "-f", "-p", "80", "-h", "/www"]
  env: {GREETING: hello}
  resources: {cpu: 0.5, memory: 64Mi, pids: 128}
  ports: [{name: http, container: 80, host: 8080}]
  health: {http: {port: 80, path: /}, interval: 1s, timeout: 500ms, failures: 3}
  restart: always
`

const goodJob = `
kind: Job
name: tests
namespace: ci
completions: 8
parallelism: 4
backoffLimit: 2
template:
  image: demo/busybox:1
  command: ["sh", "-c", "echo shard $BERTH_JOB_INDEX of $BERTH_JOB_COMPLETIONS"]
`

func TestParseSpecs(t *testing.T) {
	objs, err := ParseSpecs("app.yaml", []byte("# leading comment\n---\n"+goodService+"---\n"+goodJob+"---\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2", len(objs))
	}
	svc := objs[0].(*Service)
	tpl := svc.Spec.Template
	if svc.Metadata.Namespace != "default" || svc.Spec.Replicas != 3 || tpl.Resources.Memory != 64<<20 ||
		tpl.Resources.MilliCPU() != 500 || tpl.Health.Interval.D().Seconds() != 1 || tpl.Ports[0].Host != 8080 || tpl.Env["GREETING"] != "hello" {
		t.Fatalf("service parsed wrong: %+v", svc)
	}
	job := objs[1].(*Job)
	if job.Metadata.Namespace != "ci" || job.Spec.Completions != 8 || job.Spec.Parallelism != 4 {
		t.Fatalf("job parsed wrong: %+v", job)
	}
	// The flat shape round-trips.
	b, err := MarshalSpec(svc)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseSpecs("again.yaml", b)
	if err != nil {
		t.Fatalf("re-parsing %s: %v", b, err)
	}
	if got := again[0].(*Service); got.Spec.Template.Resources.Memory != tpl.Resources.Memory || got.Spec.Template.Health.Timeout != tpl.Health.Timeout {
		t.Fatalf("round trip changed the spec:\n%s", b)
	}
}

func TestParseSpecsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, replace, with string
		want                string // the whole message after the file name
	}{
		{"unknown field", "  restart: always", "  restrat: always",
			`document 2 (Service "web"): template.restrat: unknown field "restrat"`},
		{"negative replicas", "replicas: 3", "replicas: -1",
			`document 2 (Service "web"): replicas: must not be negative, got -1`},
		{"bad image", "demo/busybox:1\n  command: [\"httpd\"", "Demo/BusyBox:1\n  command: [\"httpd\"",
			`document 2 (Service "web"): template.image: invalid image "Demo/BusyBox:1": name component "Demo" must be lowercase letters and digits, separated by '.', '_' or '-'`},
		{"bad memory unit", "memory: 64Mi", "memory: 64MB",
			`document 2 (Service "web"): template.resources.memory: invalid quantity "64MB": use a number with Ki, Mi, Gi (or K, M, G)`},
		{"bad duration", "interval: 1s", "interval: 1 second",
			`document 2 (Service "web"): template.health.interval: invalid duration "1 second": use a string like "1s" or "500ms"`},
		{"wrong type", "replicas: 3", "replicas: three",
			`document 2 (Service "web"): replicas: expected an integer, got string "three"`},
		{"port out of range", "host: 8080", "host: 70000",
			`document 2 (Service "web"): template.ports[0].host: port 70000 out of range 1-65535`},
		{"bad name", "name: web", "name: Web_1",
			`document 2 (Service "Web_1"): name: "Web_1" is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit`},
		{"unknown kind", "kind: Service", "kind: Deployment",
			`document 2 (Deployment "web"): kind: unknown kind Deployment: use Service, Job, CronJob, Config or Secret`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(goodService, tc.replace) {
				t.Fatalf("fixture lacks %q", tc.replace)
			}
			doc := goodJob + "---" + strings.Replace(goodService, tc.replace, tc.with, 1)
			objs, err := ParseSpecs("web.yaml", []byte(doc))
			if err == nil {
				t.Fatalf("parsed %d objects, want an error", len(objs))
			}
			if objs != nil {
				t.Fatal("returned objects along with an error")
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			if want := "web.yaml: " + tc.want; err.Error() != want {
				t.Fatalf("error\n  %s\nwant\n  %s", err, want)
			}
		})
	}
}

func TestValidateService(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Service)
		field string
	}{
		{"negative replicas", func(s *Service) { s.Spec.Replicas = -2 }, "replicas"},
		{"empty image", func(s *Service) { s.Spec.Template.Image = "" }, "template.image"},
		{"image with spaces", func(s *Service) { s.Spec.Template.Image = "busy box" }, "template.image"},
		{"short digest", func(s *Service) { s.Spec.Template.Image = "busybox@sha256:abc" }, "template.image"},
		{"negative cpu", func(s *Service) { s.Spec.Template.Resources.CPU = -1 }, "template.resources.cpu"},
		{"fractional exclusive", func(s *Service) {
			s.Spec.Template.Resources.CPU, s.Spec.Template.Resources.Exclusive = 1.5, true
		}, "template.resources.cpu"},
		{"tiny memory", func(s *Service) { s.Spec.Template.Resources.Memory = 1000 }, "template.resources.memory"},
		{"negative disk", func(s *Service) { s.Spec.Template.Resources.Disk = -1 }, "template.resources.disk"},
		{"tiny disk", func(s *Service) { s.Spec.Template.Resources.Disk = 4096 }, "template.resources.disk"},
		{"bad env name", func(s *Service) { s.Spec.Template.Env = map[string]string{"A-B": "x"} }, "template.env"},
		{"zero container port", func(s *Service) { s.Spec.Template.Ports = []Port{{Container: 0}} }, "template.ports[0].container"},
		{"bad protocol", func(s *Service) { s.Spec.Template.Ports = []Port{{Container: 80, Protocol: "sctp"}} }, "template.ports[0].protocol"},
		{"host port twice", func(s *Service) {
			s.Spec.Template.Ports = []Port{{Container: 80, Host: 8080}, {Container: 81, Host: 8080}}
		}, "template.ports[1].host"},
		{"two health checks", func(s *Service) {
			s.Spec.Template.Health = &Health{HTTP: &HTTPCheck{Port: 80}, TCP: &TCPCheck{Port: 80}}
		}, "template.health"},
		{"bad restart", func(s *Service) { s.Spec.Template.Restart = "sometimes" }, "template.restart"},
		{"bad pull policy", func(s *Service) { s.Spec.Template.PullPolicy = "Sometimes" }, "template.pullPolicy"},
		{"bad migration", func(s *Service) { s.Spec.Template.Migration = "teleport" }, "template.migration"},
		{"live migration of the built-in executor", func(s *Service) { s.Spec.Template.Migration = MigrationLive }, "template.migration"},
		{"live migration with a named volume", func(s *Service) {
			s.Spec.Template.Migration, s.Spec.Template.Runtime = MigrationLive, "runc"
			s.Spec.Template.Volumes = []VolumeMount{{Name: "data", Path: "/data"}}
		}, "template.migration"},
		{"relative volume", func(s *Service) {
			s.Spec.Template.Volumes = []VolumeMount{{HostPath: "data", Path: "/data"}}
		}, "template.volumes[0].hostPath"},
		{"volume of two kinds", func(s *Service) {
			s.Spec.Template.Volumes = []VolumeMount{{Name: "data", HostPath: "/srv", Path: "/data"}}
		}, "template.volumes[0]"},
		{"bad volume name", func(s *Service) {
			s.Spec.Template.Volumes = []VolumeMount{{Name: "Data_1", Path: "/data"}}
		}, "template.volumes[0].name"},
		{"tmpfs without size", func(s *Service) {
			s.Spec.Template.Volumes = []VolumeMount{{Tmpfs: &TmpfsVolume{}, Path: "/cache"}}
		}, "template.volumes[0].tmpfs.size"},
		{"two volumes on one path", func(s *Service) {
			s.Spec.Template.Volumes = []VolumeMount{{Name: "a", Path: "/data"}, {Name: "b", Path: "/data/"}}
		}, "template.volumes[1].path"},
		{"bad constraint op", func(s *Service) {
			s.Spec.Placement.Constraints = []Constraint{{Key: "zone", Op: "~", Values: []string{"a"}}}
		}, "placement.constraints[0].op"},
		{"long name", func(s *Service) { s.Metadata.Name = strings.Repeat("a", 64) }, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := RunService("web", "demo/busybox:1", nil)
			if err := s.Validate(); err != nil {
				t.Fatalf("fixture invalid: %v", err)
			}
			tc.edit(s)
			fe := FieldErrors(s.Validate())
			if len(fe) != 1 || fe[0].Field != tc.field || fe[0].Reason == "" {
				t.Fatalf("field errors %+v, want one on %s", fe, tc.field)
			}
		})
	}
}

func TestDefaultPullPolicy(t *testing.T) {
	for _, c := range []struct {
		image string
		set   PullPolicy
		want  PullPolicy
	}{
		{"nginx", "", PullAlways},
		{"nginx:latest", "", PullAlways},
		{"localhost:5000/app", "", PullAlways},
		{"localhost:5000/app:1", "", PullIfNotPresent},
		{"demo/busybox:1", "", PullIfNotPresent},
		{"nginx@sha256:" + strings.Repeat("a", 64), "", PullIfNotPresent},
		{"nginx:latest", PullNever, PullNever},
	} {
		if got := DefaultPullPolicy(c.image, c.set); got != c.want {
			t.Errorf("DefaultPullPolicy(%q, %q) = %q, want %q", c.image, c.set, got, c.want)
		}
	}
}

func TestValidateImage(t *testing.T) {
	for _, ok := range []string{
		"busybox", "demo/busybox:1", "registry.example.com:5000/team/app:v1.2",
		"localhost/app", "a__b/c-d.e:latest", "app@sha256:" + strings.Repeat("a", 64),
		"app:1@sha256:" + strings.Repeat("0", 64),
		// The longest a pinned tag gets: a 255-character name, a 128-character tag and a digest.
		strings.Repeat("a", 255) + ":" + strings.Repeat("t", 128) + "@sha256:" + strings.Repeat("0", 64),
	} {
		if err := ValidateImage(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "Busybox", "app:", "app:-x", "/app", "app/", "a..b", "a///b", "host:99999999999a/app",
		"app@sha256:ABC", "app:" + strings.Repeat("t", 129),
	} {
		if err := ValidateImage(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestQuantity(t *testing.T) {
	for in, want := range map[string]Quantity{
		"64Mi": 64 << 20, "1.5Gi": 3 << 29, "500M": 500e6, "1048576": 1 << 20, "2K": 2000,
	} {
		got, err := ParseQuantity(in)
		if err != nil || got != want {
			t.Errorf("%s: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"64MB", "64mi", "", "Mi", "-1Mi", "1e3", "0.5"} {
		if _, err := ParseQuantity(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	b, _ := json.Marshal(Resources{Memory: 64 << 20})
	if string(b) != `{"memory":"64Mi"}` {
		t.Errorf("marshalled as %s", b)
	}
}

func TestDecodeStrictWire(t *testing.T) {
	var s Service
	err := DecodeStrict([]byte(`{"metadata":{"name":"web"},"spec":{"replicas":1,"template":{"image":"a","ports":[{"container":80,"hots":1}]}}}`), &s)
	fe := FieldErrors(err)
	if len(fe) != 1 || fe[0].Field != "spec.template.ports[0].hots" {
		t.Fatalf("field errors %+v", fe)
	}
	if err := DecodeStrict([]byte(`{"metadata":{"name":"web"}} {}`), &s); err == nil {
		t.Fatal("trailing data accepted")
	}
}

// The examples shipped in examples/ parse and validate.
func TestExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := ParseSpecs(filepath.Base(f), b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, o := range objs {
			if err := o.Validate(); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
}

func TestPhaseTerminal(t *testing.T) {
	terminal := map[Phase]bool{PhaseSucceeded: true, PhaseFailed: true, PhaseLost: true}
	for _, p := range Phases {
		if p.Terminal() != terminal[p] {
			t.Errorf("%s.Terminal() = %v, want %v", p, p.Terminal(), terminal[p])
		}
	}
}

// One rule for restarts: a template's own policy wins; left out, a
// service's is always and a job's on-failure, which the job controller
// carries out by retrying an index as a new instance, so that a job's
// instances themselves never restart in place.
func TestRestartDefaults(t *testing.T) {
	for _, c := range []struct {
		owner         Kind
		given         RestartPolicy
		tmpl, inPlace RestartPolicy
	}{
		{KindService, "", RestartAlways, RestartAlways},
		{KindService, RestartNever, RestartNever, RestartNever},
		{KindService, RestartOnFailure, RestartOnFailure, RestartOnFailure},
		{KindJob, "", RestartOnFailure, RestartNever},
		{KindJob, RestartAlways, RestartAlways, RestartNever},
	} {
		tmpl := Template{Restart: c.given}
		if got := tmpl.WithDefaults(c.owner).Restart; got != c.tmpl {
			t.Errorf("%s template with restart %q: filled %q, want %q", c.owner, c.given, got, c.tmpl)
		}
		if got := InstanceRestart(c.owner, tmpl); got != c.inPlace {
			t.Errorf("%s instance with restart %q: restarts in place %q, want %q", c.owner, c.given, got, c.inPlace)
		}
	}
}

// An instance's template is held by pointer, and stored as it was when
// held by value: values stored before decode and encode to the same
// bytes, and one sent without a template is stored with the empty one
// and told what that lacks.
func TestInstanceTemplateWire(t *testing.T) {
	for _, stored := range []string{
		`{"metadata":{"namespace":"default","name":"web-x1y2z","uid":"u","createdAt":"2026-12-07T04:00:00Z","labels":{"berth.owner":"web"}},"spec":{"template":{"image":"demo/app:1","env":{"V":"1"},"resources":{"cpu":0.5,"memory":"64Mi"},"ports":[{"name":"http","container":8080}],"restart":"always"},"owner":{"kind":"Service","name":"web","uid":"s"},"specHash":"abc","node":"n1","cpuset":[2,3]},"status":{"phase":"Running","ip":"10.0.0.2","startedAt":"2026-12-07T04:00:00Z"}}`,
		`{"metadata":{"namespace":"default","name":"bare"},"spec":{"template":{"image":""},"owner":{"kind":"Job","name":"j"}}}`,
	} {
		var in Instance
		if err := json.Unmarshal([]byte(stored), &in); err != nil {
			t.Fatal(err)
		}
		if b, err := json.Marshal(&in); err != nil || string(b) != stored {
			t.Errorf("stored as\n%s\nencoded again as\n%s (%v)", stored, b, err)
		}
	}
	var in Instance
	if err := json.Unmarshal([]byte(`{"metadata":{"name":"none"},"spec":{"owner":{"kind":"Service","name":"web"}}}`), &in); err != nil {
		t.Fatal(err)
	}
	if err := in.Validate(); err == nil || !strings.Contains(err.Error(), "template.image: must not be empty") {
		t.Errorf("an instance without a template validated as %v", err)
	}
	Default(&in)
	const want = `{"metadata":{"kind":"Instance","namespace":"default","name":"none"},"spec":{"template":{"image":""},"owner":{"kind":"Service","name":"web"}}}`
	if b, err := json.Marshal(&in); err != nil || string(b) != want {
		t.Errorf("an instance without a template defaulted to\n%s, want\n%s (%v)", b, want, err)
	}
	if err := in.Validate(); err == nil || !strings.Contains(err.Error(), "template.image: must not be empty") {
		t.Errorf("an instance with the empty template validated as %v", err)
	}
}
