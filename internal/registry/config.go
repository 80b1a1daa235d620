package registry

// The registry config is a docker config.json: "auths" holds credentials
// the way `docker login` writes them, so the file can be handed to docker
// and back; berth adds "registries", per-registry TLS and mirror settings
// docker keeps elsewhere.
//
//	{
//	  "auths": {"registry.example:5000": {"auth": "base64(user:password)"}},
//	  "registries": {
//	    "registry.example:5000": {"ca": "/etc/ssl/example-ca.pem"},
//	    "localhost:5001": {"insecure": true},
//	    "docker.io": {"mirrors": ["https://mirror.example"]}
//	  }
//	}

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/atomicfile"
)

// ConfigEnv names the registry config file when set.
const ConfigEnv = "BERTH_REGISTRY_CONFIG"

// dockerHubKey is the key docker writes Docker Hub's credentials under.
const dockerHubKey = "https://index.docker.io/v1/"

// Config is the registry config file.
type Config struct {
	Auths      map[string]AuthEntry      `json:"auths,omitempty"`
	Registries map[string]RegistryConfig `json:"registries,omitempty"`
	// CredHelpers and CredsStore are docker's; kept when the file is saved.
	CredHelpers map[string]string `json:"credHelpers,omitempty"`
	CredsStore  string            `json:"credsStore,omitempty"`

	path string
}

// AuthEntry is one registry's credentials, as docker writes them.
type AuthEntry struct {
	Auth          string `json:"auth,omitempty"` // base64("user:password")
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// RegistryConfig is how to reach one registry.
type RegistryConfig struct {
	// Insecure allows plain HTTP and unverified TLS for this registry only.
	Insecure bool `json:"insecure,omitempty"`
	// CA is a PEM file of certificates trusted for this registry, on top
	// of the system's.
	CA string `json:"ca,omitempty"`
	// CAPEM is PEM certificates trusted on top of CA's: the cluster's
	// registry settings carry them inline (WithSettings).
	CAPEM string `json:"-"`
	// Mirrors are tried in order before the registry itself
	// (scheme://host[:port]); used for docker.io.
	Mirrors []string `json:"mirrors,omitempty"`
}

// DefaultConfigPath is $BERTH_REGISTRY_CONFIG, else
// $XDG_CONFIG_HOME/berth/config.json, else ~/.config/berth/config.json.
func DefaultConfigPath() string {
	if p := os.Getenv(ConfigEnv); p != "" {
		return p
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "/root"
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "berth", "config.json")
}

// LoadConfig reads the config at path; a missing file is an empty config.
func LoadConfig(path string) (*Config, error) {
	c := &Config{path: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry config %s: %w", path, err)
	}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("registry config %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	c.path = path
	return c, nil
}

// Save writes the config back, readable by its owner only (it holds
// passwords), replacing the file atomically.
func (c *Config) Save() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := c.write(append(data, '\n')); err != nil {
		return fmt.Errorf("registry config %s: %w", c.path, err)
	}
	return nil
}

func (c *Config) write(data []byte) error {
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(c.path, data, 0o600)
}

// Path is the file the config was loaded from.
func (c *Config) Path() string { return c.path }

// authKey is the key of registry host's credentials.
func authKey(host string) string {
	if host == DockerHub || host == dockerHubRegistry {
		return dockerHubKey
	}
	return host
}

// SetAuth stores user's password for host (replacing what was there).
func (c *Config) SetAuth(host, user, password string) {
	if c.Auths == nil {
		c.Auths = map[string]AuthEntry{}
	}
	c.Auths[authKey(host)] = AuthEntry{Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}
}

// RemoveAuth forgets host's credentials, reporting whether there were any.
func (c *Config) RemoveAuth(host string) bool {
	found := false
	for _, k := range authKeys(host) {
		if _, ok := c.Auths[k]; ok {
			delete(c.Auths, k)
			found = true
		}
	}
	return found
}

// authKeys are the keys docker and others write host's credentials under.
func authKeys(host string) []string {
	keys := []string{authKey(host), host, "https://" + host, "http://" + host, "https://" + host + "/v1/", "https://" + host + "/v2/"}
	if host == dockerHubRegistry || host == DockerHub {
		keys = append(keys, DockerHub, dockerHubRegistry)
	}
	return keys
}

// Registry returns host's settings (docker.io's for Docker Hub).
func (c *Config) Registry(host string) RegistryConfig {
	if host == dockerHubRegistry {
		host = DockerHub
	}
	return c.Registries[host]
}

// Resolve makes the config a keychain: the credentials stored for the
// resource's registry, or anonymous access.
func (c *Config) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return c.ResolveContext(context.Background(), r)
}

// ResolveContext is Resolve; the config is read already.
func (c *Config) ResolveContext(_ context.Context, r authn.Resource) (authn.Authenticator, error) {
	for _, k := range authKeys(r.RegistryStr()) {
		e, ok := c.Auths[k]
		if !ok {
			continue
		}
		cfg := authn.AuthConfig{IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry config %s: auths[%q]: %w: %w", c.path, k, err, errdefs.ErrInvalidArgument)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("registry config %s: auths[%q]: want base64(user:password): %w", c.path, k, errdefs.ErrInvalidArgument)
			}
			cfg.Username, cfg.Password = user, pass
		}
		return authn.FromConfig(cfg), nil
	}
	return authn.Anonymous, nil
}

// Keychain is where a pull looks for credentials: berth's config first,
// then docker's (~/.docker/config.json with its credHelpers and
// credsStore programs, or podman's auth.json).
func (c *Config) Keychain() authn.Keychain {
	return authn.NewMultiKeychain(c, authn.DefaultKeychain)
}

var _ authn.Keychain = (*Config)(nil)
