package apiserver_test

import (
	"bytes"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
)

// TestSecretSealedAndReadOnlyByItsNode stores a secret, then reads etcd
// directly (no plaintext there), the API as an admin (keys only), and
// the instance's data as its own node (the value) and as another node
// (403).
func TestSecretSealedAndReadOnlyByItsNode(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	const plain = "hunter2-very-secret"
	if _, _, err := c.admin.Apply(ctx, &api.Secret{Metadata: api.Metadata{Namespace: "default", Name: "db"},
		Data: map[string][]byte{"password": []byte(plain)}}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.store.Client().Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte(plain)) || bytes.Contains(kv.Value, []byte("aHVudGVyMi")) {
			t.Fatalf("etcd key %s holds the secret in plaintext: %s", kv.Key, kv.Value)
		}
		if strings.Contains(string(kv.Key), "/secrets/default/db") {
			found = bytes.Contains(kv.Value, []byte("berth-sealed:v1:"))
		}
	}
	if !found {
		t.Fatal("no sealed secret found in etcd")
	}
	got, err := c.admin.Secrets().Get(ctx, "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	if got.Data != nil || got.Sealed != "" || got.Keys["password"] != len(plain) || got.Digest == "" {
		t.Fatalf("get secret = %+v, want keys and digest only", got)
	}
	list, _, err := c.admin.Secrets().List(ctx, "")
	if err != nil || len(list) != 1 || list[0].Sealed != "" || list[0].Data != nil {
		t.Fatalf("list secrets = %+v, %v, want one without values", list, err)
	}

	n1, n2 := c.join(t, "n1"), c.join(t, "n2")
	in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-1"},
		Spec: api.InstanceSpec{Owner: api.Owner{Kind: api.KindService, Name: "web"}, Node: "n1",
			Template: &api.Template{Image: "demo/busybox:1", Files: []api.FileMount{{Secret: "db", Path: "/run/secrets/db"}},
				EnvFrom: []api.EnvFromSource{{Secret: "db"}}}}}
	if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	d, err := n1.Instances().Data(ctx, "default", "web-1")
	if err != nil {
		t.Fatalf("own node reads its instance's data: %v", err)
	}
	if len(d.Files) != 1 || string(d.Files[0].Data) != plain || d.Files[0].Mode != 0o400 || d.Env["password"] != plain {
		t.Fatalf("data = %+v, want the file (mode 0400) and env", d)
	}
	_, err = n2.Instances().Data(ctx, "default", "web-1")
	wantForbidden(t, "another node reads the instance's data", err, `node "n1"`)
	_, err = n2.Secrets().Get(ctx, "default", "db")
	wantForbidden(t, "a node reads a secret", err)
}

// TestDataLimitNamed refuses a config over 1 MiB, naming the field and
// the limit, and takes one at the limit.
func TestDataLimitNamed(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	at := &api.Config{Metadata: api.Metadata{Namespace: "default", Name: "big"},
		Data: map[string][]byte{"k": bytes.Repeat([]byte("x"), api.MaxDataBytes-1)}}
	if _, _, err := c.admin.Apply(ctx, at); err != nil {
		t.Fatalf("config of 1 MiB: %v", err)
	}
	sec := &api.Secret{Metadata: api.Metadata{Namespace: "default", Name: "big"},
		Data: map[string][]byte{"k": bytes.Repeat([]byte("x"), api.MaxDataBytes-1)}}
	if _, _, err := c.admin.Apply(ctx, sec); err != nil {
		t.Fatalf("secret of 1 MiB: %v", err)
	}
	at.Data["k2"] = []byte("y")
	_, _, err := c.admin.Apply(ctx, at)
	if fe := api.FieldErrors(err); len(fe) != 1 || fe[0].Field != "data" || !strings.Contains(fe[0].Reason, "MaxDataBytes") {
		t.Fatalf("config over 1 MiB: %v, want a data error naming MaxDataBytes", err)
	}
}

// TestConfigChangeRollsOnlyServicesThatAsk changes a config used by two
// services, one with rollOnChange: only that one gets a new template.
func TestConfigChangeRollsOnlyServicesThatAsk(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	cfg := &api.Config{Metadata: api.Metadata{Namespace: "default", Name: "app"}, Data: map[string][]byte{"a": []byte("1")}}
	if _, _, err := c.admin.Apply(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, roll := range []bool{true, false} {
		s := api.RunService(map[bool]string{true: "rolls", false: "stays"}[roll], "demo/busybox:1", nil)
		s.Spec.RollOnChange = roll
		s.Spec.Template.EnvFrom = []api.EnvFromSource{{Config: "app"}}
		if _, err := c.admin.Services().Apply(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	hash := func(name string) string {
		s, err := c.admin.Services().Get(ctx, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		return s.Spec.Template.Hash()
	}
	rolls, stays := hash("rolls"), hash("stays")
	if _, _, err := c.admin.Apply(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if hash("rolls") != rolls {
		t.Fatal("the same data applied again rolled the service")
	}
	cfg.Data["a"] = []byte("2")
	if _, _, err := c.admin.Apply(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if hash("rolls") == rolls {
		t.Fatal("a changed config did not roll the service with rollOnChange")
	}
	if hash("stays") != stays {
		t.Fatal("a changed config rolled a service without rollOnChange")
	}
}
