package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/runtime"
)

// An instance with init or sidecar containers (Members) runs each of them
// as a container of its own, labelled with the member's name, numbered by
// attempts of its own. Their network is the instance's, not one
// container's: it is attached under podNetID when the first of them
// starts, kept across their restarts (so the instance keeps its address),
// and detached when the instance has finished for good or its last
// container is removed.

// Labels of an instance's member containers.
const (
	// labelMember names the member a container runs; absent on the main one.
	labelMember = "berth.container"
	// labelSidecar marks a sidecar, stopped after the others when its
	// instance goes (and the agent may no longer know the instance).
	labelSidecar = "berth.sidecar"
	// labelNet is the network attachment the container joined, when it is
	// its instance's rather than its own.
	labelNet = "berth.net"
)

// Member is one init or sidecar container of an instance.
type Member struct {
	Name          string
	Init, Sidecar bool
	Image         string
	Command, Args []string
	Env           []string
	WorkingDir    string
	Resources     runtime.Resources
	Health        *health.Check
	// Restart is a sidecar's policy; an init container follows its instance's.
	Restart reconcile.Policy
}

// member finds the named member; "" is the main container (nil, true).
func (i *Instance) member(name string) (*Member, bool) {
	if name == "" {
		return nil, true
	}
	for k := range i.Members {
		if i.Members[k].Name == name {
			return &i.Members[k], true
		}
	}
	return nil, false
}

// memberID names attempt n of an instance's member container; the main
// container's ("") is containerID's. It stays a valid runtime id (64
// characters at most) however long the names are.
func memberID(inst *Instance, name string, attempt int) string {
	if name == "" {
		return containerID(inst, attempt)
	}
	uid := inst.UID
	if len(uid) > 8 {
		uid = uid[:8]
	}
	id := fmt.Sprintf("%s.%s.%s.%s.%d", inst.Namespace, inst.Name, uid, name, attempt)
	if len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("%s.%s.%s.%d", inst.Name[:min(len(inst.Name), 20)], name[:min(len(name), 10)], hex.EncodeToString(sum[:8]), attempt)
}

// podNetID names the network attachment an instance's containers share.
// Container ids end in an attempt number, so it is never one of theirs.
func podNetID(inst *Instance) string {
	uid := inst.UID
	if len(uid) > 8 {
		uid = uid[:8]
	}
	id := fmt.Sprintf("%s.%s.%s.pod", inst.Namespace, inst.Name, uid)
	if len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("%s.%s.pod", inst.Name[:min(len(inst.Name), 30)], hex.EncodeToString(sum[:8]))
}

// failureKey keys a.failures: a member's start failures are its own.
func failureKey(uid, name string) string {
	if name == "" {
		return uid
	}
	return uid + "/" + name
}

// desiredMembers is the reconciler's view of inst's members.
func desiredMembers(inst *Instance) []reconcile.Member {
	if len(inst.Members) == 0 {
		return nil
	}
	out := make([]reconcile.Member, len(inst.Members))
	for i, m := range inst.Members {
		out[i] = reconcile.Member{Name: m.Name, Init: m.Init, Sidecar: m.Sidecar, Restart: m.Restart}
	}
	return out
}

// membersFromAPI turns a template's init and sidecar containers into the
// agent's view.
func membersFromAPI(t *api.Template) []Member {
	var out []Member
	for i := range t.Containers {
		c := &t.Containers[i]
		m := Member{Name: c.Name, Init: c.Init, Sidecar: c.Sidecar, Image: t.ContainerImage(c),
			Command: c.Command, Args: c.Args, WorkingDir: c.WorkingDir, Env: envList(c.Env),
			Resources: runtime.Resources{CPUs: c.Resources.CPU, MemoryBytes: int64(c.Resources.Memory), Pids: c.Resources.Pids},
			Health:    healthCheck(c.Health), Restart: reconcile.Policy(c.Restart)}
		out = append(out, m)
	}
	// Init containers first, in order: the reconciler runs them so.
	slices.SortStableFunc(out, func(a, b Member) int {
		switch {
		case a.Init == b.Init:
			return 0
		case a.Init:
			return -1
		}
		return 1
	})
	return out
}

// attachPod puts a member container on its instance's network, attaching
// that network the first time. It is wired before it returns (not
// staged): the instance's other containers may be starting at once.
func (a *Agent) attachPod(ctx context.Context, c *runtime.Config, inst *Instance) error {
	id := podNetID(inst)
	if a.net == nil {
		return a.podNetns(c, id)
	}
	att, err := a.net.Attach(ctx, id, inst.Namespace)
	if err != nil {
		return fmt.Errorf("network for %s: %w", inst.Key(), err)
	}
	c.NetNS = att.NetNS
	a.mountResolvConf(c, att)
	c.Labels[labelIP] = att.IP.String()
	c.Labels[labelNet] = id
	return nil
}

// releasePod detaches an instance's network once none of the containers
// that joined it runs (except names a container about to go), and
// reports whether it did.
func (a *Agent) releasePod(ctx context.Context, net, except string) bool {
	if net == "" {
		return false
	}
	for id, st := range a.containers {
		if id != except && st.Labels[labelNet] == net && (st.State == runtime.Running || a.stopping[id]) {
			return false
		}
	}
	if a.net == nil {
		if err := netns.Delete(a.podNetnsPath(net)); err != nil {
			a.log.Warn("remove instance network namespace", "netns", net, "err", err)
			return false
		}
		return true
	}
	a.detach(ctx, net)
	return true
}

// podNetnsPath is where an instance's own network namespace is pinned
// when the node has no network: beside the runtime's containers, under a
// name the runtime does not list.
func (a *Agent) podNetnsPath(id string) string {
	return filepath.Join(a.cfg.Runtime.Root(), ".pods", id)
}

// podNetns gives an instance's containers one network namespace (with
// only loopback) on a node without a network, so they still reach each
// other on localhost. A simulated runtime runs no namespaces.
func (a *Agent) podNetns(c *runtime.Config, id string) error {
	if _, real := a.cfg.Runtime.(*runtime.Runtime); !real {
		return nil
	}
	path := a.podNetnsPath(id)
	a.podMu.Lock()
	defer a.podMu.Unlock()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		_ = netns.Delete(path) // a file left without its namespace
		err := netns.Create(path, func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return netlink.LinkSetUp(lo)
		})
		if err != nil {
			return fmt.Errorf("network namespace of %s: %w", id, err)
		}
	}
	c.NetNS = path
	c.Labels[labelNet] = id
	return nil
}

// podStatus is the status of an instance with members: its init
// containers' progress until they are done, then its main container's,
// healthy only while its sidecars run (and pass their checks) too.
func (a *Agent) podStatus(inst *Instance, latest map[string]runtime.Status, now time.Time) Status {
	var cs []api.ContainerStatus
	for _, m := range inst.Members {
		cs = append(cs, a.containerStatus(m.Name, &m, latest[m.Name], m.Health != nil))
	}
	cs = append(cs, a.containerStatus("", nil, latest[""], inst.Health != nil))
	inits := 0
	for _, m := range inst.Members {
		if m.Init {
			inits++
		}
	}
	n := 0
	for _, m := range inst.Members {
		if !m.Init {
			continue
		}
		n++
		c := latest[m.Name]
		if c.ID != "" && c.State == runtime.Exited && c.ExitCode == 0 {
			continue
		}
		st := Status{Phase: api.PhaseStarting, Reason: "Init", Containers: cs}
		if f, ok := a.failures[failureKey(inst.UID, m.Name)]; ok {
			st.Reason, st.Message = "InitStartError", fmt.Sprintf("init container %s: %v", m.Name, f.err)
			if inst.Restart == reconcile.Never {
				st.Phase = api.PhaseFailed
			} else {
				st.RestartAt = f.next
			}
			return st
		}
		switch {
		case c.ID == "":
			st.Message = fmt.Sprintf("init container %s (%d of %d) is starting", m.Name, n, inits)
		case c.State == runtime.Running:
			st.Message = fmt.Sprintf("init container %s (%d of %d) is running", m.Name, n, inits)
		default:
			code := c.ExitCode
			if c.State != runtime.Exited {
				code = 137
			}
			st.ExitCode, st.FinishedAt = code, c.FinishedAt
			st.Message = fmt.Sprintf("init container %s (%d of %d) exited with code %d", m.Name, n, inits, code)
			if c.StartError != "" {
				st.Message += ": " + c.StartError
			}
			if inst.Restart == reconcile.Never {
				st.Phase, st.Reason = api.PhaseFailed, "InitFailed"
			} else {
				st.Reason = "InitBackOff"
				st.RestartAt = c.FinishedAt.Add(reconcile.Backoff(attemptOf(c), c.FinishedAt.Sub(c.StartedAt)))
				st.Message += "; it runs again"
			}
		}
		return st
	}
	st := a.statusOf(inst, latest[""], now)
	st.Containers = cs
	if latest[""].ID == "" && st.Reason == "" {
		st.Reason, st.Message = "Sidecars", "the main container starts once its sidecars run"
	}
	for _, c := range cs {
		if c.Sidecar && !c.Healthy {
			st.Healthy = false
		}
	}
	return st
}

// containerStatus is one container's part of its instance's status.
func (a *Agent) containerStatus(name string, m *Member, c runtime.Status, checked bool) api.ContainerStatus {
	cs := api.ContainerStatus{Name: cmpName(name), State: api.ContainerWaiting, ContainerID: c.ID}
	if m != nil {
		cs.Init, cs.Sidecar = m.Init, m.Sidecar
	}
	if c.ID == "" {
		return cs
	}
	cs.Restarts = attemptOf(c)
	switch c.State {
	case runtime.Running:
		cs.State, cs.Healthy = api.ContainerRunning, !a.stopping[c.ID]
		a.mu.Lock()
		if p := a.probes[c.ID]; p != nil {
			cs.Healthy = cs.Healthy && p.ready()
		} else if checked {
			cs.Healthy = false // its prober starts on the next pass
		}
		a.mu.Unlock()
	case runtime.Created:
		cs.State = api.ContainerWaiting
	default:
		cs.State, cs.ExitCode, cs.Reason = api.ContainerTerminated, c.ExitCode, c.Reason
		if c.State == runtime.Unknown {
			cs.ExitCode, cs.Reason = 137, "ShimLost"
		}
	}
	return cs
}

func cmpName(name string) string {
	if name == "" {
		return api.MainContainer
	}
	return name
}

// memberOf is the member name a container of an instance runs.
func memberOf(st runtime.Status) string { return st.Labels[labelMember] }

// latestOf is the latest attempt among cs of member name ("" for an
// instance's one container), zero for none: what latestByMember gives
// for it, without a map for each instance of each pass.
func latestOf(cs []runtime.Status, name string) runtime.Status {
	var out runtime.Status
	found := false
	for _, st := range cs {
		if memberOf(st) == name && (!found || attemptOf(st) > attemptOf(out)) {
			out, found = st, true
		}
	}
	return out
}

// latestByMember is, per member name, the latest attempt among cs.
func latestByMember(cs []runtime.Status) map[string]runtime.Status {
	out := map[string]runtime.Status{}
	for _, st := range cs {
		n := memberOf(st)
		if cur, ok := out[n]; !ok || attemptOf(st) > attemptOf(cur) {
			out[n] = st
		}
	}
	return out
}
