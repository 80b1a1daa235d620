package apiserver_test

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testing/authmatrix"
)

// TestAuthorizationMatrix runs the authorisation matrix (package
// authmatrix) on one loopback cluster: a real API server over TLS with a
// real embedded etcd and the image registry at /v2/, and no controllers. test/e2e runs it on the LAN.
func TestAuthorizationMatrix(t *testing.T) {
	imgs, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]authmatrix.Image{}
	for _, n := range []string{"n1", "n2"} {
		repo := "demo/" + n
		buildImage(t, imgs, repo+":1", n)
		p := partsOf(t, imgs, repo+":1")
		images[n] = authmatrix.Image{Repository: repo, Manifest: p.manifest, Layer: p.layer}
	}
	var srv *apiserver.Server
	c := startCluster(t, func(s *apiserver.Server) {
		s.Mount("/v2/", registry.New(imgs, registry.Options{Authorize: apiserver.AuthorizeImages, Readable: s.ReadableImages}))
		srv = s
	})
	ctx := t.Context()

	n1 := c.joinCreds(t, c.url, "n1")
	d1 := c.joinCreds(t, c.url, "d1")
	d1c, _ := client.New(c.url, client.WithNodeCredentials(d1))
	if _, err := d1c.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "d1"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.admin.Nodes().Delete(ctx, "", "d1", 0); err != nil {
		t.Fatal(err)
	}
	httpOf := func(cfg *tls.Config) *http.Client {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		t.Cleanup(hc.CloseIdleConnections)
		return hc
	}
	tlsOf := func(nc *client.NodeCredentials) *tls.Config {
		cfg, err := nc.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	job, err := c.admin.Jobs().Apply(ctx, &api.Job{Metadata: api.Metadata{Namespace: "default", Name: "matrix"},
		Spec: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/busybox:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	authmatrix.Run(t, authmatrix.Env{
		URL: c.url, AdminToken: adminToken, Admin: c.admin, Deleted: "d1",
		HTTP: [authmatrix.Callers]*http.Client{
			httpOf(c.trustOnly()), httpOf(tlsOf(n1)), httpOf(tlsOf(n1)), httpOf(tlsOf(d1)), httpOf(c.trustOnly()),
		},
		Owner:  api.Owner{Kind: api.KindJob, Name: job.Metadata.Name, UID: job.Metadata.UID},
		Images: images,
		Routes: srv.Routes(), RouteOf: srv.RouteOf,
	})
}
