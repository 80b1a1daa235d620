package registry

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// WithSettings returns a copy of c under the cluster's registry settings:
// a registry the settings name takes their mirrors, CA and insecure flag
// in place of the file's; the others keep the file's. c's credentials
// stay. A nil rs leaves c as it is.
func (c *Config) WithSettings(rs *api.RegistrySettings) *Config {
	out := &Config{}
	if c != nil {
		*out = *c
	}
	if rs == nil || len(rs.Registries) == 0 {
		return out
	}
	out.Registries = maps.Clone(out.Registries)
	if out.Registries == nil {
		out.Registries = map[string]RegistryConfig{}
	}
	for host, h := range rs.Registries {
		if host == dockerHubRegistry {
			host = DockerHub
		}
		out.Registries[host] = RegistryConfig{Insecure: h.Insecure, CAPEM: h.CA, Mirrors: h.Mirrors}
	}
	return out
}

// WithAuth returns a copy of o whose credentials are auth's first (the
// imagePullSecrets of a template), then o's own. A nil auth leaves o as
// it is.
func (o UpstreamOptions) WithAuth(auth *api.RegistryAuth) UpstreamOptions {
	if auth == nil || len(auth.Auths) == 0 {
		return o
	}
	own := o.Keychain
	if own == nil {
		own = o.Config.Keychain()
	}
	o.Keychain = authn.NewMultiKeychain(authKeychain{auth}, own)
	return o
}

// authKeychain gives a registry-auth secret's credentials.
type authKeychain struct{ ra *api.RegistryAuth }

func (k authKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

func (k authKeychain) ResolveContext(_ context.Context, r authn.Resource) (authn.Authenticator, error) {
	for _, key := range authKeys(r.RegistryStr()) {
		e, ok := k.ra.Auths[key]
		if !ok {
			continue
		}
		cfg := authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("pull secret: auths[%q]: %w: %w", key, err, errdefs.ErrInvalidArgument)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("pull secret: auths[%q]: want base64(user:password): %w", key, errdefs.ErrInvalidArgument)
			}
			cfg.Username, cfg.Password = user, pass
		}
		return authn.FromConfig(cfg), nil
	}
	return authn.Anonymous, nil
}

// Fingerprint tells credentials apart without showing them: "" for none.
func Fingerprint(auth *api.RegistryAuth) string {
	if auth == nil || len(auth.Auths) == 0 {
		return ""
	}
	b, _ := json.Marshal(auth) // map keys sorted: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// NoCredentials is a keychain that gives none: anonymous access, for a
// pull that must use only the credentials it is given (WithAuth).
var NoCredentials authn.Keychain = noCredentials{}

type noCredentials struct{}

func (noCredentials) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}

// Settings are the per-registry settings of the file as cluster settings
// (CA files read into PEM), for a first server to seed the cluster's
// with; nil when the file names no registry.
func (c *Config) Settings() (*api.RegistrySettings, error) {
	if c == nil || len(c.Registries) == 0 {
		return nil, nil
	}
	rs := &api.RegistrySettings{Registries: map[string]api.RegistryHost{}}
	for host, r := range c.Registries {
		h := api.RegistryHost{Mirrors: r.Mirrors, Insecure: r.Insecure, CA: r.CAPEM}
		if r.CA != "" {
			b, err := os.ReadFile(r.CA)
			if err != nil {
				return nil, fmt.Errorf("registry config %s: registries[%q].ca: %w", c.path, host, err)
			}
			h.CA = string(b) + h.CA
		}
		rs.Registries[host] = h
	}
	if err := rs.Validate(); err != nil {
		return nil, fmt.Errorf("registry config %s: %w", c.path, err)
	}
	return rs, nil
}
