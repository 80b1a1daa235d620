package api

import (
	"encoding/base64"
	"strings"
	"testing"
)

// badCertPEM is PEM whose block is not a certificate.
const badCertPEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"

// Registry settings are refused naming the field and why; the limits
// name their constants.
func TestValidateRegistrySettings(t *testing.T) {
	many := map[string]RegistryHost{}
	for i := range MaxRegistryHosts + 1 {
		many["r"+strings.Repeat("x", i)+".example"] = RegistryHost{}
	}
	tests := []struct {
		name      string
		rs        RegistrySettings
		field, in string // "" field: valid
	}{
		{"empty", RegistrySettings{}, "", ""},
		{"mirror", RegistrySettings{Registries: map[string]RegistryHost{"docker.io": {Mirrors: []string{"https://m.example:5000"}}}, AgentsPullDirect: true}, "", ""},
		{"bad host", RegistrySettings{Registries: map[string]RegistryHost{"https://x": {}}}, `registries["https://x"]`, "host"},
		{"bad mirror", RegistrySettings{Registries: map[string]RegistryHost{"docker.io": {Mirrors: []string{"ftp://m"}}}}, `registries["docker.io"].mirrors[0]`, "http(s)"},
		{"mirror path", RegistrySettings{Registries: map[string]RegistryHost{"docker.io": {Mirrors: []string{"https://m/v2/x"}}}}, `registries["docker.io"].mirrors[0]`, "http(s)"},
		{"too many mirrors", RegistrySettings{Registries: map[string]RegistryHost{"docker.io": {Mirrors: make([]string, MaxRegistryMirrors+1)}}}, `registries["docker.io"].mirrors`, "MaxRegistryMirrors"},
		{"not PEM", RegistrySettings{Registries: map[string]RegistryHost{"r.example": {CA: "hello"}}}, `registries["r.example"].ca`, "no PEM"},
		{"bad certificate", RegistrySettings{Registries: map[string]RegistryHost{"r.example": {CA: badCertPEM}}}, `registries["r.example"].ca`, "certificate 1"},
		{"CA too big", RegistrySettings{Registries: map[string]RegistryHost{"r.example": {CA: strings.Repeat("x", MaxRegistryCABytes+1)}}}, `registries["r.example"].ca`, "MaxRegistryCABytes"},
		{"too many", RegistrySettings{Registries: many}, "registries", "MaxRegistryHosts"},
	}
	for _, tc := range tests {
		err := tc.rs.Validate()
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v, want valid", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.in) {
			t.Errorf("%s: %v, want an error naming %s and %q", tc.name, err, tc.field, tc.in)
		}
	}
}

// A registry-auth secret holds one docker config.json, checked, and
// bounded; a template names at most MaxImagePullSecrets of them.
func TestValidateRegistryAuthSecret(t *testing.T) {
	good := []byte(`{"auths": {"r.example:5000": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("alice:pw")) + `"}}}`)
	meta := Metadata{Namespace: "default", Name: "regcred"}
	tests := []struct {
		name string
		data map[string][]byte
		typ  string
		in   string // "" valid
	}{
		{"good", map[string][]byte{RegistryAuthKey: good}, SecretTypeRegistryAuth, ""},
		{"plain secret", map[string][]byte{"x": []byte("y")}, "", ""},
		{"unknown type", map[string][]byte{"x": []byte("y")}, "kubernetes.io/tls", "type"},
		{"wrong key", map[string][]byte{"x": good}, SecretTypeRegistryAuth, RegistryAuthKey},
		{"two keys", map[string][]byte{RegistryAuthKey: good, "x": nil}, SecretTypeRegistryAuth, RegistryAuthKey},
		{"not json", map[string][]byte{RegistryAuthKey: []byte("[")}, SecretTypeRegistryAuth, "docker config.json"},
		{"no auths", map[string][]byte{RegistryAuthKey: []byte(`{}`)}, SecretTypeRegistryAuth, `no "auths"`},
		{"no credentials", map[string][]byte{RegistryAuthKey: []byte(`{"auths": {"r": {}}}`)}, SecretTypeRegistryAuth, "no credentials"},
		{"bad auth", map[string][]byte{RegistryAuthKey: []byte(`{"auths": {"r": {"auth": "bm9jb2xvbg=="}}}`)}, SecretTypeRegistryAuth, "base64(user:password)"},
		{"too big", map[string][]byte{RegistryAuthKey: []byte(`{"auths": {"r": {"auth": "` + strings.Repeat("A", MaxRegistryAuthBytes) + `"}}}`)}, SecretTypeRegistryAuth, "MaxRegistryAuthBytes"},
	}
	for _, tc := range tests {
		s := &Secret{Metadata: meta, Type: tc.typ, Data: tc.data}
		err := s.Validate()
		if tc.in == "" {
			if err != nil {
				t.Errorf("%s: %v, want valid", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.in) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.in)
		}
	}

	svc := &Service{Metadata: Metadata{Namespace: "default", Name: "web"}, Spec: ServiceSpec{Replicas: 1, Template: Template{Image: "demo/busybox:1"}}}
	svc.Spec.Template.ImagePullSecrets = []string{"Bad_Name"}
	if err := svc.Validate(); err == nil || !strings.Contains(err.Error(), "template.imagePullSecrets[0]") {
		t.Errorf("an invalid secret name: %v, want template.imagePullSecrets[0] named", err)
	}
	svc.Spec.Template.ImagePullSecrets = make([]string, MaxImagePullSecrets+1)
	for i := range svc.Spec.Template.ImagePullSecrets {
		svc.Spec.Template.ImagePullSecrets[i] = "s"
	}
	if err := svc.Validate(); err == nil || !strings.Contains(err.Error(), "MaxImagePullSecrets") {
		t.Errorf("too many pull secrets: %v, want MaxImagePullSecrets named", err)
	}
}
