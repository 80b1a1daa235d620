package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/testing/throughput"
)

// Puts per second through the store, each a full Create (validation,
// JSON, one etcd transaction with its compare).
func BenchmarkCreate(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(b.Context(), Config{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("in-process", func(b *testing.B) { benchCreates(b, s) })
	// The same etcd through gRPC on its unix socket, as with --etcd-endpoints.
	ext, err := Open(b.Context(), Config{EtcdEndpoints: []string{"unix://" + dir + "/etcd/client.sock"}, Prefix: "/grpc"})
	if err != nil {
		b.Fatal(err)
	}
	defer ext.Close()
	b.Run("grpc", func(b *testing.B) { benchCreates(b, ext) })
}

func benchCreates(b *testing.B, s *Store) {
	ctx := b.Context()
	throughput.Run(b, "puts/s", func(name string) error { return s.Create(ctx, instance(name)) })
	b.Run("batched-256", func(b *testing.B) {
		start := time.Now()
		objs := make([]api.Object, 0, 256)
		flush := func() {
			if err := s.CreateMany(ctx, objs); err != nil {
				b.Fatal(err)
			}
			objs = objs[:0]
		}
		for i := range b.N {
			objs = append(objs, instance(fmt.Sprintf("batch-%d-%d", b.N, i)))
			if len(objs) == cap(objs) {
				flush()
			}
		}
		flush()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
	})
}

// Updates per second: each reads the object, merges and writes with a
// compare on the revision it read.
func BenchmarkUpdate(b *testing.B) {
	s := openStore(b)
	ctx := b.Context()
	in := instance("u")
	if err := s.Create(ctx, in); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := range b.N {
		in.Spec.Priority = i
		if err := s.Update(ctx, in, in.Metadata.Revision); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
}

// An instance's writes on its way to Running, per instance: created
// bound to a node (with its assignment key) in batches as the controller
// makes them, then its status reported in a node's batches of 100 (read,
// then written with SetStatus), as the API's status batch does.
func BenchmarkInstanceLifecycle(b *testing.B) {
	s := openStore(b)
	ctx := b.Context()
	const perOwner = 1000
	start := time.Now()
	n := 0
	for round := 0; n < b.N; round++ {
		objs := make([]api.Object, 0, perOwner)
		refs := make([][2]string, 0, perOwner)
		for i := range perOwner {
			in := instance(fmt.Sprintf("web-%d-%d", round, i))
			in.Spec.Template.Env = map[string]string{"V": "1"}
			in.Spec.Node = fmt.Sprintf("n%d", i%50)
			in.Status.Phase = api.PhaseScheduled
			objs = append(objs, in)
			refs = append(refs, [2]string{"default", in.Metadata.Name})
		}
		if err := s.CreateMany(ctx, objs); err != nil {
			b.Fatal(err)
		}
		for lo := 0; lo < len(refs); lo += 100 {
			batch := refs[lo:min(len(refs), lo+100)]
			cur, raw, err := s.InstancesNamed(ctx, batch)
			if err != nil {
				b.Fatal(err)
			}
			t := s.Txn()
			for i, in := range cur {
				t.SetStatus(in, raw[i], api.InstanceStatus{Phase: api.PhaseRunning, ContainerID: "c" + in.Metadata.UID, Pid: 42})
			}
			if err := t.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
		n += perOwner
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "instances/s")
}
