package apiserver_test

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/testing/throughput"
)

// Applies per second through the client, the unix socket, the handlers
// and the store.
func BenchmarkApply(b *testing.B) {
	e := start(b)
	ctx := b.Context()
	mk := func(name string) *api.Instance {
		return &api.Instance{Metadata: api.Metadata{Name: name}, Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
	}
	throughput.Run(b, "applies/s", func(name string) error {
		_, err := e.client.Instances().Apply(ctx, mk(name))
		return err
	})
}

// Status writes of an instance per second over TLS, as its node's agent
// makes them (the node's certificate, checked against the store's
// credentials, the binding and the pod subnet) and as an admin would.
func BenchmarkInstanceStatusOverTLS(b *testing.B) {
	c := startCluster(b)
	ctx := b.Context()
	creds := c.joinCreds(b, c.url, "n1")
	node, err := client.New(c.url, client.WithNodeCredentials(creds))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{PodSubnet: "10.244.1.0/24"}}); err != nil {
		b.Fatal(err)
	}
	in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-1"},
		Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}, Node: "n1"}}
	if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
		b.Fatal(err)
	}
	for _, who := range []struct {
		name string
		c    *client.Client
	}{{"admin", c.admin}, {"node", node}} {
		b.Run(who.name, func(b *testing.B) {
			start := time.Now()
			for i := range b.N {
				st := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-1"},
					Status: api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.244.1.7", Restarts: i}}
				if _, err := who.c.Instances().UpdateStatus(ctx, st); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
		})
	}
}
