package cli

import (
	"slices"
	"testing"

	"github.com/berth-dev/berth/api"
)

// What workloads use is applied before them, whatever the file's order,
// and each kind keeps its order in the file.
func TestApplyOrder(t *testing.T) {
	const spec = `kind: Service
name: web
template:
  image: demo/app:1
  imagePullSecrets: [regcred]
---
kind: Job
name: migrate
completions: 1
template:
  image: demo/app:1
---
kind: Config
name: settings
data:
  a: Yg==
---
kind: Secret
name: regcred
data:
  k: dg==
---
kind: Service
name: api
template:
  image: demo/app:1
---
kind: Secret
name: tls
data:
  k: dg==
`
	objs, err := api.ParseSpecsIn("specs.yaml", []byte(spec), "default")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range applyOrder(objs) {
		got = append(got, string(o.GetKind())+"/"+o.GetMetadata().Name)
	}
	want := []string{"Secret/regcred", "Secret/tls", "Config/settings", "Service/web", "Job/migrate", "Service/api"}
	if !slices.Equal(got, want) {
		t.Errorf("apply order = %v, want %v", got, want)
	}
	if objs[0].GetMetadata().Name != "web" {
		t.Errorf("applyOrder reordered its argument: first is %s", api.RefOf(objs[0]))
	}
}
