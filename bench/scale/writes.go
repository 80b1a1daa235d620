package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// writeTally follows every write to the server's etcd (a watch of
// /berth/ with each key's previous value, over the member's unix socket)
// and counts, per kind of key and per kind of change, the puts, deletes
// and bytes (key and value, as etcd keeps them in each revision until a
// compaction): what each instance costs the database over its life.
type writeTally struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// seen is the revision the watch has given everything up to.
	seen   int64
	counts map[string]*writeCount
	// sample is the last value written of one instance, to show what a
	// stored instance holds.
	sample []byte
}

type writeCount struct{ puts, deletes, bytes int }

func newWriteTally(etcdDir string) (*writeTally, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + etcdDir + "/client.sock"},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for the write tally: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &writeTally{cli: cli, cancel: cancel, done: make(chan struct{}), counts: map[string]*writeCount{}}
	ready := make(chan struct{})
	go func() {
		defer close(w.done)
		ch := cli.Watch(ctx, "/berth/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		for resp := range ch {
			if resp.Created {
				close(ready)
				continue
			}
			w.mu.Lock()
			w.seen = max(w.seen, resp.Header.Revision)
			for _, ev := range resp.Events {
				var prev []byte
				if ev.PrevKv != nil {
					prev = ev.PrevKv.Value
				}
				label := writeLabel(string(ev.Kv.Key), prev, ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
				c := w.counts[label]
				if c == nil {
					c = &writeCount{}
					w.counts[label] = c
				}
				if ev.Type == clientv3.EventTypeDelete {
					c.deletes++
					continue
				}
				c.puts++
				c.bytes += len(ev.Kv.Key) + len(ev.Kv.Value)
				if strings.HasPrefix(label, "instances") {
					w.sample = ev.Kv.Value
				}
			}
			w.mu.Unlock()
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		w.close()
		return nil, fmt.Errorf("write tally: etcd watch not created in 10s")
	}
	return w, nil
}

func (w *writeTally) close() {
	w.cancel()
	<-w.done
	w.cli.Close()
}

// keyKind is the kind segment of a berth key: /berth/KIND/....
func keyKind(key string) string {
	parts := strings.SplitN(strings.TrimPrefix(key, "/berth/"), "/", 2)
	return parts[0]
}

type storedInstance struct {
	Spec struct {
		Node string `json:"node"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

// writeLabel names a write by its key's kind and, for an instance, what
// it changed: created, bound, a phase moved, or another status change in
// the same phase (and whether the value was the same bytes).
func writeLabel(key string, prev, value []byte, deleted bool) string {
	kind := keyKind(key)
	if deleted {
		return kind + " delete"
	}
	if prev == nil {
		if kind == "instances" {
			var in storedInstance
			_ = json.Unmarshal(value, &in)
			return fmt.Sprintf("instances create (%s)", cmp.Or(in.Status.Phase, "no phase"))
		}
		return kind + " create"
	}
	if bytes.Equal(prev, value) {
		return kind + " update, same bytes"
	}
	if kind != "instances" {
		return kind + " update"
	}
	var a, b storedInstance
	_ = json.Unmarshal(prev, &a)
	_ = json.Unmarshal(value, &b)
	switch {
	case a.Spec.Node == "" && b.Spec.Node != "":
		return fmt.Sprintf("instances bind (%s -> %s)", a.Status.Phase, b.Status.Phase)
	case a.Status.Phase != b.Status.Phase:
		return fmt.Sprintf("instances status %s -> %s", a.Status.Phase, b.Status.Phase)
	default:
		return fmt.Sprintf("instances update, %s, other change", b.Status.Phase)
	}
}

// report prints what was counted since the last report, per instance
// when instances > 0, and starts counting afresh.
func (w *writeTally) report(phase string, instances int) {
	// The watch runs behind the writes: wait until it has given
	// everything up to etcd's revision now (a progress notification
	// tells it when nothing is written after that).
	if resp, err := w.cli.Get(context.Background(), "/berth/", clientv3.WithCountOnly(), clientv3.WithLimit(1)); err == nil {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			_ = w.cli.RequestProgress(context.Background())
			w.mu.Lock()
			seen := w.seen
			w.mu.Unlock()
			if seen >= resp.Header.Revision {
				break
			}
		}
	}
	w.mu.Lock()
	counts, sample := w.counts, w.sample
	w.counts = map[string]*writeCount{}
	w.mu.Unlock()
	fmt.Printf("  etcd writes during %s (per instance: over %d instances):\n", phase, instances)
	fmt.Printf("    %-48s %9s %9s %12s %10s %10s %9s\n", "key kind, change", "puts", "deletes", "bytes", "puts/inst", "bytes/inst", "bytes/put")
	var total writeCount
	for _, label := range slices.Sorted(maps.Keys(counts)) {
		c := counts[label]
		total.puts += c.puts
		total.deletes += c.deletes
		total.bytes += c.bytes
		fmt.Printf("    %-48s %9d %9d %12d %10.2f %10.0f %9.0f\n", label, c.puts, c.deletes, c.bytes,
			perInst(c.puts+c.deletes, instances), perInst(c.bytes, instances), float64(c.bytes)/float64(max(1, c.puts)))
	}
	fmt.Printf("    %-48s %9d %9d %12d %10.2f %10.0f\n", "all", total.puts, total.deletes, total.bytes,
		perInst(total.puts+total.deletes, instances), perInst(total.bytes, instances))
	if sample != nil {
		fmt.Printf("  an instance's last stored value (%d bytes): %s\n", len(sample), sample)
		fmt.Printf("  its bytes by field: %s\n", fieldSizes(sample))
	}
}

func perInst(n, instances int) float64 { return float64(n) / float64(max(1, instances)) }

// fieldSizes gives the JSON size of each field of an object and of each
// field of its spec and status.
func fieldSizes(value []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(value, &top) != nil {
		return "not a JSON object"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(top)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, len(top[k])))
		var sub map[string]json.RawMessage
		if json.Unmarshal(top[k], &sub) != nil {
			continue
		}
		for _, s := range slices.Sorted(maps.Keys(sub)) {
			parts = append(parts, fmt.Sprintf("%s.%s %d", k, s, len(sub[s])))
		}
	}
	return strings.Join(parts, ", ")
}

// writesScaleDown reports the apply's writes, scales every service to 0
// and reports the writes of that.
func writesScaleDown(tally *writeTally, instances int, apply func(replicas int, env string, only int) error,
	running func(want int, avoid string) func() (bool, string), timeout time.Duration) error {
	tally.report("the apply, to all Running", instances)
	if err := apply(0, "1", 0); err != nil {
		return err
	}
	if err := waitFor(timeout, running(0, "")); err != nil {
		return err
	}
	tally.report("the scale to 0, to none left", instances)
	return nil
}
