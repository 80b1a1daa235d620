package controller

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// sharedFixtures are instances as the store holds them: a service's two
// instances alike but for their name and status, one of a job, one
// without labels, and text that JSON escapes.
func sharedFixtures(t testing.TB) [][]byte {
	t.Helper()
	tmpl := api.Template{Image: "demo/app:1", Command: []string{"/app", "--flag"}, Env: map[string]string{"V": "1", "Q": "a \"quoted\" é\n"},
		Ports: []api.Port{{Name: "http", Container: 8080}}, Resources: api.Resources{CPU: 0.5, Memory: 64 << 20},
		Containers: []api.Container{{Name: "side", Image: "demo/side:1"}}}
	owner := api.Owner{Kind: api.KindService, Name: "web", UID: "u1"}
	labels := map[string]string{"berth.owner": "web", "tier": "front"}
	at := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	ins := []*api.Instance{
		{Metadata: api.Metadata{Namespace: "default", Name: "web-1", UID: "a", Labels: labels, CreatedAt: at},
			Spec:   api.InstanceSpec{Template: &tmpl, Owner: owner, SpecHash: "h1", Node: "n1"},
			Status: api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.0.0.2", StartedAt: at, Message: "up"}},
		{Metadata: api.Metadata{Namespace: "default", Name: "web-2", UID: "b", Labels: labels, CreatedAt: at},
			Spec:   api.InstanceSpec{Template: &tmpl, Owner: owner, SpecHash: "h1"},
			Status: api.InstanceStatus{Phase: api.PhasePending}},
		{Metadata: api.Metadata{Namespace: "default", Name: "batch-0", UID: "c", Labels: map[string]string{"berth.owner": "batch"}},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/app:1", Env: map[string]string{"BERTH_JOB_INDEX": "0"}},
				Owner: api.Owner{Kind: api.KindJob, Name: "batch", UID: "u2"}, Index: 0}},
		{Metadata: api.Metadata{Namespace: "other", Name: "bare", UID: "d"},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/app:2"}, Owner: api.Owner{Kind: api.KindService, Name: "bare"}}},
	}
	var out [][]byte
	for _, in := range ins {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// An instance decoded through the shared tables, whether they held its
// template and labels already or not, is the instance a plain decode
// makes; a service's instances share their template and labels' map.
func TestSharedDecodeIsDecode(t *testing.T) {
	sh := newShared()
	values := sharedFixtures(t)
	var got []*api.Instance
	for round := range 2 {
		for i, v := range values {
			obj, err := sh.decode(api.KindInstance, v, int64(10+i))
			if err != nil {
				t.Fatal(err)
			}
			var want api.Instance
			if err := store.Decode(&want, v, int64(10+i)); err != nil {
				t.Fatal(err)
			}
			in := obj.(*api.Instance)
			if !reflect.DeepEqual(in, &want) {
				t.Errorf("round %d, %s:\n got %+v\nwant %+v", round, want.Metadata.Name, in, &want)
			}
			if round == 1 {
				got = append(got, in)
			}
		}
	}
	same := func(a, b map[string]string) bool {
		return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
	}
	if got[0].Spec.Template != got[1].Spec.Template || !same(got[0].Metadata.Labels, got[1].Metadata.Labels) {
		t.Error("web-2 holds a template or labels of its own, not web-1's")
	}
	if len(sh.templates) != 2 {
		t.Errorf("%d templates shared, want 2 (web's, bare's): a job's are its own", len(sh.templates))
	}
	// Other kinds are decoded as they are.
	svc := api.RunService("web", "demo/app:1", nil)
	b, _ := json.Marshal(svc)
	obj, err := sh.decode(api.KindService, b, 7)
	if err != nil {
		t.Fatal(err)
	}
	if s := obj.(*api.Service); s.Metadata.Name != "web" || s.Metadata.Revision != 7 {
		t.Errorf("service decoded as %+v", s.Metadata)
	}
}

// A pass changes its own copy (own) of a cached instance: the template in
// the table, and every other instance's, stay as stored.
func TestSharedTemplateIsNotChangedThroughACopy(t *testing.T) {
	sh := newShared()
	values := sharedFixtures(t)
	a, err := sh.decode(api.KindInstance, values[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	cp := own(a.(*api.Instance))
	cp.Spec.Template.Image = "demo/app:2"
	cp.Spec.Template.Resources.CPU = 8
	cp.Spec.Template.Env = map[string]string{"V": "2"}
	cp.Spec.Template.Command = append(cp.Spec.Template.Command[:0:0], "/other")
	cp.Metadata.Labels = map[string]string{"tier": "back"}
	b, err := sh.decode(api.KindInstance, values[1], 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []*api.Instance{a.(*api.Instance), b.(*api.Instance)} {
		tm := in.Spec.Template
		if tm.Image != "demo/app:1" || tm.Resources.CPU != 0.5 || tm.Env["V"] != "1" || tm.Command[0] != "/app" || in.Metadata.Labels["tier"] != "front" {
			t.Errorf("%s: template %+v, labels %v: changed through web-1's copy", in.Metadata.Name, tm, in.Metadata.Labels)
		}
	}
}

// A cut that is not where it says leaves the value whole.
func TestSharedWithoutChecksItsCuts(t *testing.T) {
	sh := newShared()
	v := []byte(`{"a":{"b":1},"c":[2]}`)
	r := gjson.GetManyBytes(v, "c", "a")
	if got := string(sh.without(v, []gjson.Result{r[0], r[1]})); got != `{"a":null,"c":null}` {
		t.Errorf("cut to %s", got)
	}
	wrong := r[1]
	wrong.Index++
	if got := sh.without(v, []gjson.Result{wrong}); string(got) != string(v) {
		t.Errorf("a misplaced cut made %s", got)
	}
}

// BenchmarkSharedDecode decodes a service's instance whose template and
// labels the tables hold, as a status change brings it; plain is a whole
// decode of it.
func BenchmarkSharedDecode(b *testing.B) {
	v := sharedFixtures(b)[0]
	b.Run("shared", func(b *testing.B) {
		sh := newShared()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := sh.decode(api.KindInstance, v, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var in api.Instance
			if err := store.Decode(&in, v, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSharedDecodeHeld is the live heap a cached instance costs:
// 10,000 instances of 10 services decoded through the shared tables and
// held, as the cache holds them, measured after a collection.
func BenchmarkSharedDecodeHeld(b *testing.B) {
	const templates, n = 10, 10000
	values := make([][]byte, n)
	at := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	for i := range values {
		svc := fmt.Sprintf("svc-%02d", i%templates)
		in := &api.Instance{
			Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("%s-%05d", svc, i), UID: fmt.Sprint("uid-", i),
				Labels: map[string]string{"berth.owner": svc, "berth.owner-kind": "Service"}, CreatedAt: at},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "sim/" + svc + ":1", Env: map[string]string{"V": "1"},
				Resources: api.Resources{CPU: 0.05, Memory: 64 << 20}},
				Owner: api.Owner{Kind: api.KindService, Name: svc, UID: "u-" + svc}, SpecHash: "h-" + svc, Node: fmt.Sprintf("n%04d", i%3000)},
			Status: api.InstanceStatus{Phase: api.PhaseRunning, Healthy: true, IP: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), StartedAt: at},
		}
		v, err := json.Marshal(in)
		if err != nil {
			b.Fatal(err)
		}
		values[i] = v
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var perInstance float64
	for b.Loop() {
		sh := newShared()
		held := make([]api.Object, n)
		before := heap()
		for i, v := range values {
			obj, err := sh.decode(api.KindInstance, v, int64(i+1))
			if err != nil {
				b.Fatal(err)
			}
			held[i] = obj
		}
		perInstance = float64(heap()-before) / n
		runtime.KeepAlive(held)
		runtime.KeepAlive(sh)
	}
	b.ReportMetric(perInstance, "B/instance")
}
