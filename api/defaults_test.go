package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"testing"
)

// A template as a user writes it, leaving every default out.
func bareTemplate() Template {
	return Template{
		Image:      "demo/app:1",
		Ports:      []Port{{Name: "http", Container: 80}},
		Health:     &Health{HTTP: &HTTPCheck{Port: 80}},
		Containers: []Container{{Name: "log", Sidecar: true, Health: &Health{TCP: &TCPCheck{Port: 9}}}, {Name: "setup", Init: true}},
	}
}

// The API stores specs with their defaults, so `get -o yaml` shows them.
func TestDefaultFillsTemplates(t *testing.T) {
	svc := &Service{Metadata: Metadata{Name: "web"}, Spec: ServiceSpec{Template: bareTemplate()}}
	Default(svc)
	st := svc.Spec.Template
	if st.Restart != RestartAlways || st.Migration != MigrationRestart || st.Ports[0].Protocol != DefaultProtocol {
		t.Errorf("service template: restart %q, migration %q, protocol %q", st.Restart, st.Migration, st.Ports[0].Protocol)
	}
	if h := st.Health; h.Interval != DefaultHealthInterval || h.Timeout != DefaultHealthTimeout || h.Failures != DefaultHealthFailures {
		t.Errorf("service health: %+v", h)
	}
	if c := st.Containers[0]; c.Restart != RestartAlways || c.Health.Failures != DefaultHealthFailures {
		t.Errorf("sidecar: restart %q, health %+v", c.Restart, c.Health)
	}
	if c := st.Containers[1]; c.Restart != "" {
		t.Errorf("init container: restart %q; it follows the instance's", c.Restart)
	}
	job := &Job{Metadata: Metadata{Name: "batch"}, Spec: JobSpec{Completions: 1, Template: bareTemplate()}}
	Default(job)
	cj := &CronJob{Metadata: Metadata{Name: "nightly"}, Spec: CronJobSpec{Schedule: "@hourly", Job: JobSpec{Completions: 1, Template: bareTemplate()}}}
	Default(cj)
	if job.Spec.Template.Restart != RestartOnFailure || cj.Spec.Job.Template.Restart != RestartOnFailure {
		t.Errorf("job restart %q, cron job's job restart %q; want on-failure", job.Spec.Template.Restart, cj.Spec.Job.Template.Restart)
	}
	for _, o := range []Object{svc, job, cj} {
		if err := o.Validate(); err != nil {
			t.Errorf("%s with defaults: %v", RefOf(o), err)
		}
	}
	// Filling is idempotent, and leaves the template it was given alone.
	bare := bareTemplate()
	once := bare.WithDefaults(KindService)
	if !reflect.DeepEqual(once.WithDefaults(KindService), once) {
		t.Error("WithDefaults twice differs from once")
	}
	if !reflect.DeepEqual(bare, bareTemplate()) {
		t.Errorf("WithDefaults changed its receiver: %+v", bare)
	}
}

// An upgrade that starts storing defaults rolls nothing: a template
// stored before, without its defaults, hashes as it did then and as the
// same template with them; a change of a real field still changes it.
func TestHashIgnoresDefaults(t *testing.T) {
	bare := bareTemplate()
	// The hash as computed before defaults were stored: the template's JSON.
	b, _ := json.Marshal(bare)
	sum := sha256.Sum256(b)
	if got, was := bare.Hash(), hex.EncodeToString(sum[:6]); got != was {
		t.Errorf("hash of a template without defaults is %s, was %s before", got, was)
	}
	if bare.WithDefaults(KindService).Hash() != bare.Hash() {
		t.Error("the same template with its defaults written out hashes differently")
	}
	for name, change := range map[string]func(*Template){
		"restart":          func(t *Template) { t.Restart = RestartNever },
		"protocol":         func(t *Template) { t.Ports[0].Protocol = "udp" },
		"health failures":  func(t *Template) { t.Health.Failures = 4 },
		"health interval":  func(t *Template) { t.Health.Interval = DefaultHealthInterval * 2 },
		"sidecar restart":  func(t *Template) { t.Containers[0].Restart = RestartOnFailure },
		"image":            func(t *Template) { t.Image = "demo/app:2" },
		"explicit timeout": func(t *Template) { t.Health.Timeout = DefaultHealthTimeout + 1 },
	} {
		changed := bare.WithDefaults(KindService)
		change(&changed)
		if changed.Hash() == bare.Hash() {
			t.Errorf("a change of %s leaves the hash as it was", name)
		}
	}
	// A template that spelled its defaults out keeps, as StoredHash, the
	// hash it had: what its instances' containers are labelled with, and
	// what its service keeps while its status records it.
	spelled := bare.WithDefaults(KindService)
	spelled.Migration = ""
	b, _ = json.Marshal(spelled)
	sum = sha256.Sum256(b)
	was := hex.EncodeToString(sum[:6])
	if spelled.StoredHash() != was || spelled.Hash() == was {
		t.Errorf("spelled-out template: StoredHash %s, Hash %s; was %s", spelled.StoredHash(), spelled.Hash(), was)
	}
	svc := &Service{Spec: ServiceSpec{Template: spelled}, Status: ServiceStatus{Rollout: RolloutStatus{Hash: was}}}
	if svc.TemplateHash() != was {
		t.Errorf("a service whose status records the old hash of its template: TemplateHash %s, want %s", svc.TemplateHash(), was)
	}
	svc.Spec.Template.Image = "demo/app:2"
	if svc.TemplateHash() != svc.Spec.Template.Hash() {
		t.Error("a changed template keeps the old hash")
	}
	// Migration is a policy for moves, not what runs.
	live := bare
	live.Migration = MigrationLive
	if live.Hash() != bare.Hash() {
		t.Error("migration changes the hash")
	}
}
