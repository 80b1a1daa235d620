package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// storeImages is an image store as the agent's Images, noting when each
// container's Prepare was asked for: the moment its start began.
type storeImages struct {
	s     *image.Store
	mu    sync.Mutex
	began map[string]time.Time
}

func (i *storeImages) Prepare(ctx context.Context, ref, id string) (agent.Rootfs, error) {
	i.mu.Lock()
	i.began[id] = time.Now()
	i.mu.Unlock()
	snap, err := i.s.Prepare(ctx, ref, id)
	if err != nil {
		return agent.Rootfs{}, err
	}
	c := snap.Image.Config
	return agent.Rootfs{LowerDirs: snap.LowerDirs, Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User}, nil
}

func (i *storeImages) Release(ctx context.Context, id string) error { return i.s.Release(ctx, id) }

// nodeNetwork is a network node as the agent's Network.
type nodeNetwork struct{ n *network.Node }

func (n nodeNetwork) Attach(ctx context.Context, id, namespace string) (agent.NetAttachment, error) {
	a, err := n.n.Attach(ctx, id, namespace)
	return agent.NetAttachment{NetNS: a.NetNS, IP: a.IP, ResolvConf: a.ResolvConf}, err
}
func (n nodeNetwork) Detach(ctx context.Context, id string) error { return n.n.Detach(ctx, id) }
func (n nodeNetwork) ReleaseStale(ctx context.Context, live []string) error {
	_, err := n.n.ReleaseStale(ctx, live)
	return err
}

// startedLog keeps the agent's "started" records.
type startedLog struct {
	slog.Handler
	mu      sync.Mutex
	records []slog.Record
}

func (h *startedLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *startedLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "started" {
		h.mu.Lock()
		h.records = append(h.records, r.Clone())
		h.mu.Unlock()
	}
	return nil
}
func (h *startedLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *startedLog) WithGroup(string) slog.Handler      { return h }

// TestAgentStartTimings starts containers one after another with the real
// image store, network (in a namespace of its own, off the host's) and
// runtime, checks each runs with an address, and logs how long a start
// and its steps took: prepare, attach and run from the agent's "started"
// log, and the whole start from Prepare's call to that log.
func TestAgentStartTimings(t *testing.T) {
	runtimetest.RequireRoot(t)
	ctx := context.Background()
	store, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	imagetest.BusyboxImage(t, store)

	host := filepath.Join(t.TempDir(), "host")
	if err := netns.Create(host, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(host) })
	node, err := network.NewNode(ctx, network.Config{
		Bridge: "bt-agent", Subnet: netip.MustParsePrefix("10.244.77.0/24"), StateDir: t.TempDir(),
		Table: "berth-agent-test", HostNetNS: host,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	t.Cleanup(func() {
		for _, a := range node.Attachments() {
			_ = node.Detach(ctx, a.ID)
		}
	})

	stateDir := t.TempDir()
	cleanupAll(t, stateDir)
	rt, err := runtime.New(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	images := &storeImages{s: store, began: map[string]time.Time{}}
	logs := &startedLog{}
	cp := newControlPlane()
	f := runAgent(t, agent.Config{
		Node: agent.NodeInfo{Name: "n1"}, ControlPlane: subnetPlane{cp}, Runtime: rt, Images: images,
		Logger: slog.New(logs), Resync: time.Hour,
		Network: func(context.Context, netip.Prefix) (agent.Network, error) { return nodeNetwork{node}, nil },
	}, cp, rt)
	defer f.stop()

	const n = 12
	for i := range n {
		inst := instance(fmt.Sprintf("timed-%d", i), reconcile.Never, "sleep", "300")
		inst.Image = imagetest.BusyboxTag
		cp.assign <- []agent.Assignment{{Instance: inst}}
		st := f.waitStatus(inst.Name, "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
		if ip, err := netip.ParseAddr(st.IP); err != nil || !netip.MustParsePrefix("10.244.77.0/24").Contains(ip) {
			t.Errorf("%s runs with address %q, want one of the pod subnet", inst.Name, st.IP)
		}
	}

	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.records) != n {
		t.Fatalf("%d starts logged, want %d", len(logs.records), n)
	}
	steps := map[string][]time.Duration{}
	for _, r := range logs.records {
		r.Attrs(func(at slog.Attr) bool {
			if at.Value.Kind() == slog.KindDuration {
				steps[at.Key] = append(steps[at.Key], at.Value.Duration())
			}
			if at.Key == "container" {
				images.mu.Lock()
				steps["start"] = append(steps["start"], r.Time.Sub(images.began[at.Value.String()]))
				images.mu.Unlock()
			}
			return true
		})
	}
	for _, k := range []string{"prepare", "attach", "run", "start"} {
		d := steps[k]
		slices.Sort(d)
		t.Logf("%-7s min %7v  median %7v  max %7v", k, d[0].Round(time.Microsecond), d[len(d)/2].Round(time.Microsecond), d[len(d)-1].Round(time.Microsecond))
	}
}
