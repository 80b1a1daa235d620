package apiserver_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/api"
)

// The registry settings are read and replaced whole, with a revision
// precondition; bad ones are refused with 422 naming the field, unknown
// fields too.
func TestRegistrySettingsRoute(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	rs, err := e.client.RegistrySettings(ctx)
	if err != nil || rs.Revision != 0 || len(rs.Registries) != 0 {
		t.Fatalf("unset settings: %+v, %v", rs, err)
	}
	set, err := e.client.SetRegistrySettings(ctx, &api.RegistrySettings{Registries: map[string]api.RegistryHost{"docker.io": {Mirrors: []string{"https://m.example"}}}})
	if err != nil || set.Revision == 0 {
		t.Fatalf("set: %+v, %v", set, err)
	}
	got, err := e.client.RegistrySettings(ctx)
	if err != nil || got.Revision != set.Revision || got.Registries["docker.io"].Mirrors[0] != "https://m.example" {
		t.Fatalf("read back: %+v, %v", got, err)
	}
	if status, eb := e.call(t, "PUT", "/v1/registry", `{"agentsPullDirect": true}`, "If-Match", fmt.Sprint(set.Revision-1)); status != 409 || eb.Code != "Conflict" {
		t.Errorf("a stale revision: %d %+v, want 409", status, eb)
	}
	if status, eb := e.call(t, "PUT", "/v1/registry", `{"registries": {"docker.io": {"mirrors": ["ftp://m"]}}}`); status != 422 || eb.Field != `registries["docker.io"].mirrors[0]` {
		t.Errorf("a bad mirror: %d %+v, want 422 naming the field", status, eb)
	}
	if status, _ := e.call(t, "PUT", "/v1/registry", `{"mirrors": []}`); status != 422 && status != 400 {
		t.Errorf("an unknown field: %d, want it refused", status)
	}
	if now, _ := e.client.RegistrySettings(ctx); now.Revision != set.Revision || now.AgentsPullDirect {
		t.Errorf("after refused writes: %+v, want the settings unchanged", now)
	}
}

// A registry-auth secret is checked as the data a client sends: a body
// posing as a stored secret (sealed, no data) is refused.
func TestRegistryAuthSecretChecked(t *testing.T) {
	e := start(t)
	body := `{"metadata": {"name": "regcred"}, "type": "registry-auth", "sealed": "berth-sealed:abc", "keys": {".dockerconfigjson": 3}}`
	if status, eb := e.call(t, "PUT", "/v1/namespaces/default/secrets/regcred", body); status != 422 || eb.Field != "data" {
		t.Errorf("a posing secret: %d %+v, want 422 on data", status, eb)
	}
}
