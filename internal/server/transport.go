package server

import (
	"net/http"

	"github.com/berth-dev/berth/internal/registry"
)

// bearerTransport adds the cluster's API token to every request, for
// agents that authenticate with it (BearerToken) rather than a node
// certificate.
type bearerTransport struct {
	token string
	inner http.RoundTripper
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+t.token)
	}
	return t.inner.RoundTrip(r)
}

// upstreamOptions is how this server reaches the world's registries for
// images nobody in the cluster has: the registry config
// (registry.DefaultConfigPath: BERTH_REGISTRY_CONFIG, else the server
// user's ~/.config/berth/config.json) with its credentials, CAs, insecure
// registries and docker.io mirrors. Give every server of a cluster the
// same file, so that they pull alike.
func upstreamOptions() (*registry.UpstreamOptions, error) {
	cfg, err := registry.LoadConfig(registry.DefaultConfigPath())
	if err != nil {
		return nil, err
	}
	return &registry.UpstreamOptions{Config: cfg}, nil
}
