package api

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// RegistrySettings are the cluster's settings for the world's registries
// (GET|PUT /v1/registry, `berth registry`), kept in the store. Every
// server follows them as they change; a server's registry config file
// (registry.DefaultConfigPath) seeds what they leave out. Nodes read them
// to pull directly when AgentsPullDirect allows.
type RegistrySettings struct {
	// Revision is the store revision the settings were written at; a PUT
	// naming one fails with a conflict if they changed since.
	Revision int64 `json:"revision,omitempty"`
	// Registries by host: "docker.io", "registry.example:5000".
	Registries map[string]RegistryHost `json:"registries,omitempty"`
	// AgentsPullDirect lets agents fetch an image from its registry
	// themselves (with the instance's imagePullSecrets) rather than
	// through the servers' pull-through cache. Images only the servers
	// hold (built or pushed there) still come from the servers.
	AgentsPullDirect bool `json:"agentsPullDirect,omitempty"`
}

// RegistryHost is how the cluster reaches one registry.
type RegistryHost struct {
	// Mirrors are tried in order before the registry itself
	// (http(s)://host[:port]); used for docker.io.
	Mirrors []string `json:"mirrors,omitempty"`
	// CA is PEM certificates trusted for this registry (and for mirrors
	// on this host), on top of the system's.
	CA string `json:"ca,omitempty"`
	// Insecure allows plain HTTP and unverified TLS for this registry only.
	Insecure bool `json:"insecure,omitempty"`
}

// Admission limits of the registry settings: one etcd value every
// server and node reads.
const (
	MaxRegistryHosts   = 64
	MaxRegistryMirrors = 8
	MaxRegistryCABytes = 64 << 10
)

// Validate checks the settings.
func (s *RegistrySettings) Validate() error {
	var e errs
	if n := len(s.Registries); n > MaxRegistryHosts {
		e.add("registries", "%d registries, over the limit of %d (MaxRegistryHosts)", n, MaxRegistryHosts)
	}
	hosts := make([]string, 0, len(s.Registries))
	for h := range s.Registries {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		r := s.Registries[h]
		p := fmt.Sprintf("registries[%q]", h)
		if err := ValidateRegistryHost(h); err != nil {
			e.add(p, "%v", err)
		}
		if n := len(r.Mirrors); n > MaxRegistryMirrors {
			e.add(p+".mirrors", "%d mirrors, over the limit of %d (MaxRegistryMirrors)", n, MaxRegistryMirrors)
		}
		for i, m := range r.Mirrors {
			u, err := url.Parse(m)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				e.add(fmt.Sprintf("%s.mirrors[%d]", p, i), "want http(s)://host[:port], got %q", m)
			}
		}
		if r.CA != "" {
			if len(r.CA) > MaxRegistryCABytes {
				e.add(p+".ca", "%d bytes, over the limit of %d (MaxRegistryCABytes)", len(r.CA), MaxRegistryCABytes)
			} else if err := checkPEMCerts(r.CA); err != nil {
				e.add(p+".ca", "%v", err)
			}
		}
	}
	return e.err()
}

// ValidateRegistryHost checks a registry host: host[:port], no scheme
// or path.
func ValidateRegistryHost(h string) error {
	if h == "" || strings.ContainsAny(h, "/ \t\n@") || strings.Contains(h, "://") {
		return fmt.Errorf("want a registry host[:port] (docker.io, registry.example:5000), got %q", h)
	}
	u, err := url.Parse("https://" + h)
	if err != nil || u.Host != h {
		return fmt.Errorf("want a registry host[:port], got %q", h)
	}
	return nil
}

func checkPEMCerts(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("a PEM %s block: want certificates only", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no PEM certificate")
	}
	return nil
}
