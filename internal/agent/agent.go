// Package agent is the node agent: it registers its node, keeps its
// heartbeat, watches the instances the control plane assigned to this node
// and makes the containers on the node match them, reporting status back.
// It reaches the control plane only through the ControlPlane interface
// (the public API in production), so one process or many machines are
// the same code.
//
//	watch assigned ─┐
//	container exit ─┼─► wake ─► sync: list containers, reconcile.Compute,
//	health verdict ─┤            run actions, report changed statuses
//	resync timer  ──┘
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/runtime"
)

// Instance is what the agent needs to know of one assigned instance.
type Instance struct {
	Namespace, Name, UID string
	// Owner names the service or job the instance belongs to.
	Owner string
	Image string
	// Command replaces the image's entrypoint, Args its default command.
	Command, Args []string
	Env           []string
	// WorkingDir replaces the image's working directory when set.
	WorkingDir string
	Process    Process
	Resources  runtime.Resources
	// DiskBytes bounds the container's writable layer; 0 is no bound.
	DiskBytes int64
	Restart   reconcile.Policy
	Health    *health.Check
	// StopGrace is how long a stop waits after SIGTERM before SIGKILL.
	StopGrace time.Duration
	// Executor picks the OCI executor; empty is the built-in one.
	Executor string
	// UserNS runs the container in a user namespace of its own.
	UserNS bool
	// Volumes are mounted in the container, in order.
	Volumes []Volume
	// NeedsData says the instance takes files or env from configs or
	// secrets, or registry credentials from imagePullSecrets, read from
	// the control plane (a DataSource) at each start.
	NeedsData bool
	// PullPolicy says when the image is fetched (api.DefaultPullPolicy
	// of the template's image and policy).
	PullPolicy api.PullPolicy
	// HostPorts are published on the node; Service (namespace/name) is
	// the service they are published for, empty for a job's instance.
	HostPorts []HostPort
	Service   string
	// Template identifies the instance's template; when it changes (a
	// restart was asked for) the running container is replaced.
	Template string
	// ReportedContainer and ReportedHealthy are the status last reported:
	// a restarted agent takes a healthy container's health over instead of
	// making it prove itself again (which would take it out of its
	// service's endpoints for a probe interval).
	ReportedContainer string
	ReportedHealthy   bool
	// ReportedReason and ReportedMessage are the reason last reported: a
	// restarted agent keeps saying why it stopped a container for its disk
	// use, which the container's exit alone does not tell.
	ReportedReason, ReportedMessage string
	// Members are the instance's init containers (in order) and sidecars,
	// beside the main container the fields above describe. They share its
	// network namespace, hostname and volumes (see member.go).
	Members []Member
}

// Key names the instance as "namespace/name".
func (i *Instance) Key() string { return i.Namespace + "/" + i.Name }

// Status is what the agent reports for an instance.
type Status struct {
	Phase       api.Phase
	ContainerID string
	Pid         int
	IP          string
	ExitCode    int
	Reason      string
	Message     string
	Restarts    int
	Healthy     bool
	StartedAt   time.Time
	FinishedAt  time.Time
	// RestartAt is when a backing-off container starts again.
	RestartAt time.Time
	// Containers is each container's state, for an instance with Members.
	Containers []api.ContainerStatus
}

// NodeInfo is what the agent registers about its node.
type NodeInfo struct {
	Name    string
	Address string
	Labels  map[string]string
	hostinfo.Info
}

// Assignment is one change to the set of instances assigned to this node.
type Assignment struct {
	// Instance is set for an added or changed instance; Deleted names a removed one by UID.
	Instance *Instance
	Deleted  string
}

// HeartbeatPacer is a ControlPlane that says how often the node must beat
// (the server's node TTL decides it); zero while it has not said.
type HeartbeatPacer interface {
	HeartbeatInterval() time.Duration
}

// minHeartbeatInterval bounds how fast a server can ask beats to come.
const minHeartbeatInterval = 500 * time.Millisecond

// ControlPlane is the part of the API the agent uses.
type ControlPlane interface {
	RegisterNode(ctx context.Context, n NodeInfo) error
	Heartbeat(ctx context.Context, node string) error
	// WatchAssigned sends the full set of instances assigned to node first
	// (as a nil-Deleted batch ending with Resync), then changes, until ctx ends.
	WatchAssigned(ctx context.Context, node string, ch chan<- []Assignment) error
	ReportStatus(ctx context.Context, namespace, name, uid string, st Status) error
}

// StatusBatcher is the optional capability of a ControlPlane that takes
// many instances' status in one call: the error of each report, in order,
// nil for one written (or about an instance gone since).
type StatusBatcher interface {
	ReportStatuses(ctx context.Context, node string, reports []StatusReport) []error
}

// StatusReport is one instance's status in a batch.
type StatusReport struct {
	Namespace, Name, UID string
	Status               Status
}

// Rootfs is an image made ready for one container.
type Rootfs struct {
	LowerDirs  []string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

// Images prepares image root filesystems and tracks which containers use them.
type Images interface {
	Prepare(ctx context.Context, ref, containerID string) (Rootfs, error)
	Release(ctx context.Context, containerID string) error
}

// ImagePuller is Images that fetch what the node lacks, as an
// instance's pull policy says (PullingImages); the agent prefers
// PrepareFor when its Images have it.
type ImagePuller interface {
	PrepareFor(ctx context.Context, ref, containerID string, pull Pull) (Rootfs, error)
}

// Pull is what an instance says about fetching its image.
type Pull struct {
	// Policy is the instance's pull policy, its default filled in.
	Policy api.PullPolicy
	// Auth holds the credentials of the instance's imagePullSecrets, for
	// a node that pulls from the image's registry itself; nil without.
	Auth *api.RegistryAuth
}

// Runtime is the part of a container runtime the agent drives. The real
// one is *runtime.Runtime; a simulated one lets many agents share a
// process (berth sim agents) and tests run without root.
type Runtime interface {
	Run(ctx context.Context, c runtime.Config) (runtime.Status, error)
	State(ctx context.Context, id string) (runtime.Status, error)
	List(ctx context.Context) ([]runtime.Status, error)
	Wait(ctx context.Context, id string) (runtime.Status, error)
	Stop(ctx context.Context, id string, grace time.Duration) (runtime.Status, error)
	Kill(ctx context.Context, id string, sig syscall.Signal) error
	Delete(ctx context.Context, id string, force bool) error
	Exec(ctx context.Context, id string, pr runtime.ExecProcess) (int, error)
	Logs(ctx context.Context, id string, opts runtime.LogOptions, stdout, stderr io.Writer) error
	Stats(ctx context.Context, id string) (runtime.Stats, error)
	// WritableLayer is the directory of a container's writable layer, and
	// Root the directory whose filesystem holds them (for its free space).
	WritableLayer(id string) (string, error)
	Root() string
}

var _ Runtime = (*runtime.Runtime)(nil)

// Config wires an agent.
type Config struct {
	Node              NodeInfo
	ControlPlane      ControlPlane
	Runtime           Runtime
	Images            Images
	Logger            *slog.Logger
	HeartbeatInterval time.Duration
	// Resync re-reads everything now and then: watches speed things up,
	// they are not the truth. It is the pace after a change; quiet
	// resyncs wait ever longer, up to IdleResync (DefaultIdleResync when
	// zero).
	Resync, IdleResync time.Duration
	// Clock is time.Now unless a test needs another.
	Clock func() time.Time
	// Network, when set, gives containers addresses on the node's pod
	// subnet; without it each container has only loopback.
	Network NetworkFunc
	// DiskReserve is the free space kept on the filesystem of the
	// containers' writable layers: below it, the container with the
	// largest writable layer is stopped (DiskPressure).
	DiskReserve DiskReserve
	// DiskInterval is how often writable layers are measured against
	// their limits and the reserve; DefaultDiskInterval when zero. With
	// no instance limited and free space far above the reserve, checks
	// wait ever longer, up to DiskIdleInterval (DefaultDiskIdleInterval
	// when zero).
	DiskInterval, DiskIdleInterval time.Duration
	// VolumesDir holds the node's named volumes (namespace/name); without
	// it an instance with a named volume fails to start. The ControlPlane
	// must then be a VolumeStore too.
	VolumesDir string
	// AllowedHostPaths, when set, bound where a hostPath volume may lead
	// once its symlinks are resolved on the node (the API checks the path
	// as written; a symlink under an allowed directory could point
	// anywhere).
	AllowedHostPaths []string
	// DataDir is where the files instances take from configs and secrets
	// are kept while they run: a tmpfs the agent mounts there, so they
	// never reach the disk.
	DataDir string
	// Registered, when set, is called once the node has registered.
	Registered func(node string)
	// PeerTLS, when set, is the node's TLS to the cluster (its node
	// certificate, the cluster CA): with it a migration's images go
	// straight from the source's agent to the target's
	// (migrate_direct.go) rather than through a server.
	PeerTLS *tls.Config
}

// Agent runs the node's side of the cluster.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{}

	// Goroutines the loop starts (stops, exit watchers, probers) and how they report back.
	wg    sync.WaitGroup
	exits chan string
	done  chan string
	// rewatch asks the watch to start over: heartbeats came back after failing.
	rewatch chan struct{}

	// Owned by the loop goroutine.
	// containers caches the runtime's view: a full list at start and on
	// resync, and single reads for the containers events name as changed.
	containers map[string]runtime.Status
	full       bool
	dirty      map[string]bool
	failures   map[string]startFailure // by UID
	stopping   map[string]bool         // container IDs
	watched    map[string]bool         // container IDs with an exit watcher
	evicted    map[string]eviction     // container IDs stopped for their disk use
	// podsReleased are instances' networks (podNetID) given up because
	// their instance finished for good.
	podsReleased map[string]bool
	diskBusy     bool // a disk check is under way
	diskDone     chan []eviction

	mu sync.Mutex
	// synced is set once a full list of assignments has arrived.
	synced  bool
	desired map[string]*Instance // by UID
	// diskLimited counts the desired instances with a disk limit: with
	// none, and free space above the reserve, a disk check has nothing
	// to look at.
	diskLimited int
	reported    map[string]Status  // last status sent, by UID
	probes      map[string]*prober // by container ID
	// holds keep moving instances from the reconciler (see migrate.go),
	// by UID; touched names containers changed outside the loop.
	holds   map[string]*hold
	touched map[string]bool
	// removing: the reconciler's removals under way, by container ID,
	// each closed once over (a.mu); a move back here waits for one.
	removing map[string]chan struct{}

	// podMu orders the making of instances' own network namespaces
	// (without Config.Network), which members may start at once.
	podMu       sync.Mutex
	net         Network // nil without Config.Network
	netReleased bool    // stale attachments freed since start
}

// New builds an agent; nothing runs until Run.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = api.NodeHeartbeatInterval
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.IdleResync <= 0 {
		cfg.IdleResync = DefaultIdleResync
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.DiskInterval <= 0 {
		cfg.DiskInterval = DefaultDiskInterval
	}
	if cfg.DiskIdleInterval <= 0 {
		cfg.DiskIdleInterval = DefaultDiskIdleInterval
	}
	return &Agent{
		cfg:          cfg,
		log:          cfg.Logger.With("component", "agent", "node", cfg.Node.Name),
		wake:         make(chan struct{}, 1),
		desired:      map[string]*Instance{},
		reported:     map[string]Status{},
		probes:       map[string]*prober{},
		watched:      map[string]bool{},
		failures:     map[string]startFailure{},
		dirty:        map[string]bool{},
		full:         true,
		stopping:     map[string]bool{},
		evicted:      map[string]eviction{},
		podsReleased: map[string]bool{},
		diskDone:     make(chan []eviction, 1),
		exits:        make(chan string, 64),
		done:         make(chan string, 64),
		rewatch:      make(chan struct{}, 1),
	}
}

func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// register registers the node, again and again, waiting longer each
// time (up to registerBackoffMax), while the control plane is
// unavailable: a server whose etcd is slow (thousands of nodes joining
// at once) or has no leader turns the node away for a while, and an agent
// that gave up there would stay out until restarted. Other errors (a
// refused certificate, a bad node) end it at once.
func (a *Agent) register(ctx context.Context) error {
	wait := registerBackoff
	for {
		err := a.cfg.ControlPlane.RegisterNode(ctx, a.cfg.Node)
		if err == nil || !errdefs.IsUnavailable(err) || ctx.Err() != nil {
			return err
		}
		a.log.Warn("registering the node failed; trying again", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, registerBackoffMax)
	}
}

// registerBackoff and registerBackoffMax bound the wait between attempts
// to register while the control plane is unavailable.
const (
	registerBackoff    = 100 * time.Millisecond
	registerBackoffMax = 5 * time.Second
)

// Run registers the node and works until ctx ends. Containers keep running
// after it returns: a restarted agent adopts them.
func (a *Agent) Run(ctx context.Context) error {
	a.sweepMigrations()
	if err := a.register(ctx); err != nil {
		return fmt.Errorf("register node %q: %w", a.cfg.Node.Name, err)
	}
	a.log.Info("node registered", "cpus", a.cfg.Node.Topology.CPUs(), "memory", a.cfg.Node.Capacity.MemoryBytes)
	if a.cfg.Registered != nil {
		a.cfg.Registered(a.cfg.Node.Name)
	}
	if a.cfg.Network != nil {
		if err := a.setupNetwork(ctx); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer a.wg.Wait()
	defer cancel()
	a.wg.Go(func() { a.heartbeat(ctx) })
	updates := make(chan []Assignment, assignmentBacklog)
	a.wg.Go(func() { a.watch(ctx, updates) })
	a.loop(ctx, updates)
	return nil
}

// loop syncs the node after each change (assignments, exits, stops,
// disk evictions, a resync or a retry falling due) until ctx ends.
func (a *Agent) loop(ctx context.Context, updates <-chan []Assignment) {
	// Both timers slow down while nothing changes: a quiet node woke each
	// second for them, for nothing.
	resync := newIdleTimer(a.cfg.Resync, a.cfg.IdleResync)
	defer resync.Stop()
	diskTick := newIdleTimer(a.cfg.DiskInterval, a.cfg.DiskIdleInterval)
	defer diskTick.Stop()
	var retry *time.Timer
	retryC := func() <-chan time.Time {
		if retry == nil {
			return nil
		}
		return retry.C
	}
	for {
		select {
		case <-ctx.Done():
			a.stopProbes()
			return
		case batch := <-updates:
			a.apply(batch)
			resync.changed()
		case <-a.wake:
		case id := <-a.exits:
			a.exited(ctx, id)
			resync.changed()
		case id := <-a.done:
			delete(a.stopping, id)
			a.dirty[id] = true
		case <-resync.C():
			a.full = true
			resync.fired(true)
		case <-diskTick.C():
			diskTick.fired(a.measureDisk(ctx))
			continue
		case evs := <-a.diskDone:
			a.diskBusy = false
			if len(evs) == 0 {
				continue
			}
			a.evict(ctx, evs)
		case <-retryC():
			retry = nil
		}
		// Every pass sees every batch already waiting: a pass may take
		// seconds (starts), and one per batch would leave a burst of
		// changes (a service removed, another applied) queued behind
		// passes over instances that are already gone.
		for more := true; more; {
			select {
			case b := <-updates:
				a.apply(b)
			default:
				more = false
			}
		}
		if a.diskLimitedAny() {
			diskTick.changed() // a new limit is enforced at once
		}
		if !a.synced {
			// Until the first full list of assignments, everything would look
			// like an orphan: better to do nothing than to remove it all.
			continue
		}
		retryAt := a.sync(ctx)
		if !retryAt.IsZero() {
			if retry != nil {
				retry.Stop()
			}
			retry = time.NewTimer(max(0, retryAt.Sub(a.cfg.Clock())))
		}
	}
}

// exited marks container id's exit for the next pass. An exited container
// keeps its record (for logs) but not its address, unless a migration
// dumped it (an abort restores it here, in its network namespace) or the
// address is its instance's, shared by its containers.
func (a *Agent) exited(ctx context.Context, id string) {
	delete(a.watched, id)
	a.dirty[id] = true
	a.mu.Lock()
	moving := a.frozenLocked(a.containers[id].Labels[labelUID])
	a.mu.Unlock()
	if st, ok := a.containers[id]; !moving && (!ok || st.Labels[labelNet] == "") {
		a.detach(ctx, id)
	}
}

// measureDisk starts a check of the instances' disk use, off the loop (it
// walks the writable layers) and one at a time; its evictions come back
// on a.diskDone. It reports whether the checks may slow down: no instance
// has a limit and the free space is far above the reserve.
func (a *Agent) measureDisk(ctx context.Context) (quiet bool) {
	if a.diskBusy || !a.synced {
		return false
	}
	jobs, quiet := a.diskJobs()
	if len(jobs) > 0 {
		a.diskBusy = true
		a.wg.Go(func() {
			evs := a.checkDisk(jobs)
			select {
			case a.diskDone <- evs:
			case <-ctx.Done():
			}
		})
	}
	return quiet
}

// rewatchAfterFailed is how many heartbeats must fail in a row before
// the next one that gets through starts the watch over. One slow answer
// from a busy server is no broken link; restarting every agent's watch
// for it made each of them list its assignments again, a storm that kept
// the server busy at scale.
const rewatchAfterFailed = 2

func (a *Agent) heartbeat(ctx context.Context) {
	interval := a.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	pacer, _ := a.cfg.ControlPlane.(HeartbeatPacer)
	failed := 0 // heartbeats failed in a row
	for {
		// A heartbeat stuck on a server that is gone without a reset must
		// not wait for TCP to give up: the next one may reach another server.
		hctx, cancel := context.WithTimeout(ctx, interval)
		err := a.cfg.ControlPlane.Heartbeat(hctx, a.cfg.Node.Name)
		cancel()
		if pacer != nil {
			if d := pacer.HeartbeatInterval(); d > 0 && max(d, minHeartbeatInterval) != interval {
				interval = max(d, minHeartbeatInterval)
				a.log.Debug("heartbeat interval set by the server", "interval", interval)
				t.Reset(interval)
			}
		}
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.Warn("heartbeat failed", "err", err)
			failed++
		case err == nil && failed >= rewatchAfterFailed:
			// The way to the control plane was broken: the watch may sit on
			// a connection that died without a word, and would only notice
			// at its own timeout. Start it over now.
			failed = 0
			select {
			case a.rewatch <- struct{}{}:

			default:
			}
		case err == nil:
			failed = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// assignmentBacklog is how many batches of assignment changes wait for the
// loop: enough that a burst (a service of thousands removed) queues
// while a pass runs, and the next pass takes it whole.
const assignmentBacklog = 4096

// watch keeps a watch open, starting over (with a full list) whenever it
// breaks or heartbeats come back after failing.
func (a *Agent) watch(ctx context.Context, updates chan<- []Assignment) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		rewatched := make(chan struct{})
		go func() {
			select {
			case <-a.rewatch:
				close(rewatched)
				cancel()
			case <-wctx.Done():
			}
		}()
		err := a.cfg.ControlPlane.WatchAssigned(wctx, a.cfg.Node.Name, updates)
		cancel()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-rewatched:
			a.log.Info("heartbeats are back: watching the assigned instances afresh")
			backoff = 100 * time.Millisecond
			continue
		default:
		}
		a.log.Warn("watch of assigned instances ended; starting over", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Resync is the marker batch: an Assignment with neither field set means
// "what came before in this batch is the complete set".
var Resync = Assignment{}

// diskLimitedAny reports whether an assigned instance has a disk limit.
func (a *Agent) diskLimitedAny() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.diskLimited > 0
}

func (a *Agent) apply(batch []Assignment) {
	a.mu.Lock()
	defer a.mu.Unlock()
	full := len(batch) > 0 && batch[len(batch)-1] == Resync
	if full {
		a.desired = map[string]*Instance{}
		a.diskLimited = 0
		a.synced = true
	}
	limited := func(in *Instance) int {
		if in != nil && in.DiskBytes > 0 {
			return 1
		}
		return 0
	}
	for _, as := range batch {
		switch {
		case as.Instance != nil:
			a.diskLimited += limited(as.Instance) - limited(a.desired[as.Instance.UID])
			a.desired[as.Instance.UID] = as.Instance
		case as.Deleted != "":
			a.diskLimited -= limited(a.desired[as.Deleted])
			delete(a.desired, as.Deleted)
			delete(a.reported, as.Deleted)
			if h := a.holds[as.Deleted]; h != nil && h.kind == holdMoved {
				delete(a.holds, as.Deleted) // the watch has caught up with the move
			}
		}
	}
}

var errNoImage = errors.New("instance has no image")

// DefaultStopGrace is how long a stop waits for SIGTERM to work, as Docker's default.
const DefaultStopGrace = 10 * time.Second
