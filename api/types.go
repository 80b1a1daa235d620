package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path"
	"strings"
	"time"
)

// Node is a machine that runs instances. Its agent registers it and
// reports its status; the server assigns its pod subnet.
type Node struct {
	Metadata Metadata   `json:"metadata"`
	Spec     NodeSpec   `json:"spec"`
	Status   NodeStatus `json:"status,omitzero"`
}

// NodeSpec describes a node.
type NodeSpec struct {
	// Address is where other nodes and the server reach the node.
	Address string `json:"address,omitempty"`
	// Capacity and Topology are what the node's agent reports, capped by
	// CapacityLimit when the node itself writes them.
	Capacity NodeCapacity `json:"capacity,omitzero"`
	Topology CPUTopology  `json:"topology,omitzero"`
	// CapacityLimit is the most capacity the node may claim for itself:
	// the server sets it from the node's first registration, and only
	// admins change it. Zero fields set no limit.
	CapacityLimit NodeCapacity `json:"capacityLimit,omitzero"`
	PodSubnet     string       `json:"podSubnet,omitempty"`
	// Unschedulable keeps new instances off the node (cordon, drain).
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Draining asks the controller to move the node's instances off it;
	// it clears Draining (leaving Unschedulable) once none are left.
	// A draining node is always unschedulable.
	Draining bool `json:"draining,omitempty"`
	// DrainMigrate, with Draining, moves instances whose template says
	// migration: live to other nodes with their memory (CRIU) rather
	// than restarting them there.
	DrainMigrate bool `json:"drainMigrate,omitempty"`
}

// NodeReportedLabelPrefix starts the labels a node reports about itself
// (its agent's --label zone=a is node.berth/zone=a). A node may write only
// these; other labels come from admins, so a placement constraint trusts a
// node's own word only when it names the prefix.
const NodeReportedLabelPrefix = "node.berth/"

// NodeCapacity is what a node offers to instances.
type NodeCapacity struct {
	MilliCPU int64    `json:"milliCPU,omitempty"`
	Memory   Quantity `json:"memory,omitempty"`
	Pids     int64    `json:"pids,omitempty"`
}

// CPUTopology is a node's CPU layout.
type CPUTopology struct {
	Cores []CPUCore `json:"cores,omitempty"`
}

// CPUCore is one physical core and its logical CPUs (SMT siblings).
type CPUCore struct {
	ID      int   `json:"id"`
	NUMA    int   `json:"numa"`
	Threads []int `json:"threads"`
}

// NodeCondition is a node's readiness.
type NodeCondition string

// Node conditions.
const (
	NodeReady    NodeCondition = "Ready"
	NodeNotReady NodeCondition = "NotReady"
)

// NodeStatus is written by the node's agent (and by the node controller
// when heartbeats stop).
type NodeStatus struct {
	Condition     NodeCondition `json:"condition,omitempty"`
	LastHeartbeat time.Time     `json:"lastHeartbeat,omitzero"`
	Message       string        `json:"message,omitempty"`
}

// Service is a replicated long-running workload.
type Service struct {
	Metadata Metadata      `json:"metadata"`
	Spec     ServiceSpec   `json:"spec"`
	Status   ServiceStatus `json:"status,omitzero"`
}

// ServiceSpec is what the user asks of a service.
type ServiceSpec struct {
	// Mode is replicated (the default: Replicas instances) or global (one
	// instance on every eligible node; Replicas is ignored).
	Mode      ServiceMode    `json:"mode,omitempty"`
	Replicas  int            `json:"replicas"`
	Template  Template       `json:"template"`
	Update    UpdateStrategy `json:"update,omitzero"`
	Placement Placement      `json:"placement,omitzero"`
	// Priority orders instances for the scheduler: higher may preempt lower.
	Priority int `json:"priority,omitempty"`
	// RollOnChange rolls the service when the data of a config or secret
	// its template uses changes.
	RollOnChange bool `json:"rollOnChange,omitempty"`
	// DataDigest (server-set, with RollOnChange) is the digest of the
	// configs and secrets the template uses as of the last roll for them
	// (Template.DataDigest): the controller rolls the service whenever
	// they differ, so a change made while it was down still rolls it.
	DataDigest string `json:"dataDigest,omitempty"`
	// Aliases are further DNS names of the service in its namespace
	// (<alias>.<namespace>.berth, and <alias> from its namespace's
	// instances), answered with its VIP.
	Aliases []string `json:"aliases,omitempty"`
}

// ServiceMode says how many instances a service runs.
type ServiceMode string

// Service modes.
const (
	ModeReplicated ServiceMode = "replicated"
	ModeGlobal     ServiceMode = "global"
)

// UpdateStrategy bounds a rolling update. Zero values mean the defaults
// (one extra instance, none unavailable); with MaxUnavailable set, a zero
// MaxSurge means none extra: old instances go first, then new ones come.
type UpdateStrategy struct {
	MaxSurge       int `json:"maxSurge,omitempty"`
	MaxUnavailable int `json:"maxUnavailable,omitempty"`
	// AutoRollback puts the previous template back when the rollout of a
	// new one fails (a new instance fails its health check, restarts or exits).
	AutoRollback bool `json:"autoRollback,omitempty"`
}

// Placement restricts and spreads a workload's instances over nodes.
type Placement struct {
	Constraints []Constraint `json:"constraints,omitempty"`
	// Spread lists domains to spread replicas over, most important first:
	// "node" or a node label key such as "zone".
	Spread []string `json:"spread,omitempty"`
	// AntiAffinity forbids two replicas on one node.
	AntiAffinity bool `json:"antiAffinity,omitempty"`
}

// Constraint operators.
const (
	OpEq    = "=="
	OpNe    = "!="
	OpIn    = "in"
	OpNotIn = "notin"
)

// Constraint matches node labels: {key: zone, op: in, values: [a, b]}.
// The key "node.name" matches the node's name.
type Constraint struct {
	Key    string   `json:"key"`
	Op     string   `json:"op"`
	Values []string `json:"values"`
}

// ServiceStatus is written by the service controller.
type ServiceStatus struct {
	Replicas int `json:"replicas,omitempty"`
	// ReadyReplicas counts running, healthy instances of any template:
	// the ones serving.
	ReadyReplicas int `json:"readyReplicas,omitempty"`
	// UpdatedReplicas counts instances of the current template.
	UpdatedReplicas int    `json:"updatedReplicas,omitempty"`
	VIP             string `json:"vip,omitempty"`
	// ObservedRevision is the service revision the controller last acted on.
	ObservedRevision int64  `json:"observedRevision,omitempty"`
	Message          string `json:"message,omitempty"`
	// Rollout is how the current template's rollout goes.
	Rollout RolloutStatus `json:"rollout,omitzero"`
	// History holds the last MaxHistory templates, oldest first; the last
	// is the current one.
	History []TemplateRevision `json:"history,omitempty"`
}

// RolloutPhase is where a rollout is.
type RolloutPhase string

// Rollout phases.
const (
	RolloutProgressing RolloutPhase = "Progressing"
	RolloutComplete    RolloutPhase = "Complete"
	// RolloutFailed: a new instance failed; no more are made, and no
	// more old ones retired, until the template changes.
	RolloutFailed RolloutPhase = "Failed"
	// RolloutRolledBack: the rollout failed and the previous template was
	// put back (update.autoRollback).
	RolloutRolledBack RolloutPhase = "RolledBack"
)

// RolloutStatus is the rollout of one template.
type RolloutStatus struct {
	// Revision numbers the template in History; Hash is Service.TemplateHash().
	Revision int          `json:"revision,omitempty"`
	Hash     string       `json:"hash,omitempty"`
	Phase    RolloutPhase `json:"phase,omitempty"`
	Message  string       `json:"message,omitempty"`
}

// MaxHistory is how many templates a service's status keeps.
const MaxHistory = 10

// TemplateRevision is one template a service ran.
type TemplateRevision struct {
	Revision  int       `json:"revision"`
	Hash      string    `json:"hash"`
	Template  Template  `json:"template"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
}

// Template is what one instance runs.
type Template struct {
	Image   string            `json:"image"`
	Command []string          `json:"command,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// WorkingDir overrides the image's working directory.
	WorkingDir string `json:"workingDir,omitempty"`
	// The process's identity and surroundings (see process.go): user,
	// hostname, capabilities, read-only root, rlimits, sysctls,
	// /etc/hosts lines, an init as PID 1, and how it is stopped.
	User       string            `json:"user,omitempty"`
	Hostname   string            `json:"hostname,omitempty"`
	CapAdd     []string          `json:"capAdd,omitempty"`
	CapDrop    []string          `json:"capDrop,omitempty"`
	ReadOnly   bool              `json:"readOnly,omitempty"`
	Ulimits    []Ulimit          `json:"ulimits,omitempty"`
	Sysctls    map[string]string `json:"sysctls,omitempty"`
	ExtraHosts []HostAlias       `json:"extraHosts,omitempty"`
	Init       bool              `json:"init,omitempty"`
	StopSignal string            `json:"stopSignal,omitempty"`
	StopGrace  Duration          `json:"stopGrace,omitempty"`
	// Networks names networks of the namespace the instance is on: a
	// service's instances on named networks reach each other only where
	// they share one (a Compose project's networks). None is no isolation.
	Networks []string `json:"networks,omitempty"`

	Resources Resources `json:"resources,omitzero"`
	Ports     []Port    `json:"ports,omitempty"`
	Health    *Health   `json:"health,omitempty"`
	// Restart is always (the default for services), on-failure (the default
	// for jobs) or never.
	Restart RestartPolicy `json:"restart,omitempty"`
	Volumes []VolumeMount `json:"volumes,omitempty"`
	// Files mounts values of configs and secrets as read-only files.
	Files []FileMount `json:"files,omitempty"`
	// EnvFrom sets variables from the keys of configs and secrets.
	EnvFrom []EnvFromSource `json:"envFrom,omitempty"`
	// Runtime picks an OCI runtime other than the built-in one ("runc").
	Runtime string `json:"runtime,omitempty"`
	// Migration is what a drain with --migrate does with a running
	// instance: restart (the default) or live (MigrationLive, which needs
	// runtime: runc). Changing it restarts nothing.
	Migration string `json:"migration,omitempty"`
	// UserNS runs the container in a user namespace of its own: its root
	// is root only inside, an unprivileged host id outside, from a range
	// no other container on the node holds (Kubernetes' hostUsers: false).
	UserNS bool `json:"userns,omitempty"`
	// RestartedAt changes to make a rollout (services) or a container
	// restart (instances) without other change.
	RestartedAt time.Time `json:"restartedAt,omitzero"`
	// PullPolicy says when the image is fetched from its registry:
	// IfNotPresent, Always or Never; empty means Always for a :latest
	// image (or one without a tag) and IfNotPresent otherwise
	// (EffectivePullPolicy).
	PullPolicy PullPolicy `json:"pullPolicy,omitempty"`
	// ImagePullSecrets name secrets of type registry-auth in the
	// template's namespace whose credentials fetch the image from its
	// registry: the servers use them to pin and pull it, and a node
	// that pulls directly (RegistrySettings.AgentsPullDirect) receives
	// them only while it runs an instance of the template.
	ImagePullSecrets []string `json:"imagePullSecrets,omitempty"`

	// Containers are the instance's init and sidecar containers, beside
	// the main one the fields above describe (see containers.go).
	Containers []Container `json:"containers,omitempty"`
}

// PullPolicy says when an image is fetched from its registry.
type PullPolicy string

// Pull policies. An image present in the store under the name as written
// and without a registry host ("demo/app:1", built or imported here) is
// a local image: no policy fetches it from a registry.
const (
	// PullIfNotPresent fetches the image only when the store lacks it.
	PullIfNotPresent PullPolicy = "IfNotPresent"
	// PullAlways asks the registry for the tag's current image at every
	// apply; only what the store lacks is downloaded.
	PullAlways PullPolicy = "Always"
	// PullNever uses the store's image or fails.
	PullNever PullPolicy = "Never"
)

// EffectivePullPolicy is t's pull policy, the default filled in.
func (t Template) EffectivePullPolicy() PullPolicy {
	return DefaultPullPolicy(t.Image, t.PullPolicy)
}

// DefaultPullPolicy is p, or when empty the default for image: Always
// for :latest (or no tag, by digest excepted), else IfNotPresent.
func DefaultPullPolicy(image string, p PullPolicy) PullPolicy {
	if p != "" {
		return p
	}
	if strings.Contains(image, "@") {
		return PullIfNotPresent
	}
	last := image[strings.LastIndexByte(image, '/')+1:]
	if _, tag, hasTag := strings.Cut(last, ":"); !hasTag || tag == "latest" {
		return PullAlways
	}
	return PullIfNotPresent
}

// Resources are what an instance reserves and is limited to.
type Resources struct {
	// CPU in cores (0.5 = half a core).
	CPU    float64  `json:"cpu,omitempty"`
	Memory Quantity `json:"memory,omitempty"`
	Pids   int64    `json:"pids,omitempty"`
	// Disk bounds what the instance writes to its writable layer (its
	// root filesystem's upper dir) and to its named and tmpfs volumes
	// (not hostPath ones). The agent measures it and stops an instance
	// over it with the reason DiskLimitExceeded.
	Disk Quantity `json:"disk,omitempty"`
	// Exclusive pins CPU whole logical CPUs for the instance alone; CPU
	// must then be a whole number.
	Exclusive bool `json:"exclusive,omitempty"`
}

// MilliCPU is CPU in thousandths of a core, rounded up.
func (r Resources) MilliCPU() int64 {
	m := r.CPU * 1000
	n := int64(m)
	if float64(n) < m {
		n++
	}
	return n
}

// Port is a port the container listens on, optionally published on the host.
type Port struct {
	Name      string `json:"name,omitempty"`
	Container int    `json:"container"`
	Host      int    `json:"host,omitempty"`
	// Protocol is tcp (the default) or udp.
	Protocol string `json:"protocol,omitempty"`
}

// Health is a check that marks an instance healthy. Exactly one of HTTP,
// TCP and Exec is set.
type Health struct {
	HTTP     *HTTPCheck `json:"http,omitempty"`
	TCP      *TCPCheck  `json:"tcp,omitempty"`
	Exec     *ExecCheck `json:"exec,omitempty"`
	Interval Duration   `json:"interval,omitempty"`
	Timeout  Duration   `json:"timeout,omitempty"`
	// Failures is how many failures in a row make the instance unhealthy.
	Failures int `json:"failures,omitempty"`
	// StartPeriod is a grace after the start: failures then do not count
	// (a pass still makes the instance healthy). Unset, an instance that
	// has never passed may fail for max(10s, 3 x failures x interval).
	StartPeriod Duration `json:"startPeriod,omitempty"`
}

// HTTPCheck passes on a 2xx or 3xx answer.
type HTTPCheck struct {
	Port int    `json:"port"`
	Path string `json:"path,omitempty"`
}

// TCPCheck passes when a connection opens.
type TCPCheck struct {
	Port int `json:"port"`
}

// ExecCheck passes when the command exits 0.
type ExecCheck struct {
	Command []string `json:"command"`
}

// RestartPolicy says when an exited container is started again.
type RestartPolicy string

// Restart policies.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// DefaultRestart is the restart policy of a template that names none,
// by the kind of its owner: on-failure for a job (the job controller
// retries a failed index, up to its backoff limit), always otherwise.
func DefaultRestart(owner Kind) RestartPolicy {
	if owner == KindJob {
		return RestartOnFailure
	}
	return RestartAlways
}

// InstanceRestart is when the node starts an instance's exited container
// again, in place. A job's instances never restart: the job controller
// retries a failed index as a new instance (a new name, a new attempt),
// which is how a job's on-failure is carried out.
func InstanceRestart(owner Kind, t Template) RestartPolicy {
	if owner == KindJob {
		return RestartNever
	}
	return t.WithDefaults(owner).Restart
}

// VolumeMount puts storage at Path in the container. Exactly one of
// Name, HostPath and Tmpfs says which:
//
//   - Name: a named volume, a directory berth makes on the node on first
//     use (and records as a Volume object); it outlives the instance, its
//     restarts and its rollouts, until `berth volume rm`;
//   - HostPath: a directory (or file) of the node, bound as it is;
//   - Tmpfs: memory-backed storage of a bounded size, empty at each start;
//     an instance with init or sidecar containers has one such tmpfs that
//     all of them share, empty when the instance starts, kept across its
//     containers' restarts.
type VolumeMount struct {
	Name     string       `json:"name,omitempty"`
	HostPath string       `json:"hostPath,omitempty"`
	Tmpfs    *TmpfsVolume `json:"tmpfs,omitempty"`
	Path     string       `json:"path"`
	ReadOnly bool         `json:"readOnly,omitempty"`
}

// TmpfsVolume is a memory-backed volume; Size bounds what it holds.
type TmpfsVolume struct {
	Size Quantity `json:"size"`
}

// MaxTmpfsSize bounds one tmpfs volume: it is charged to memory.
const MaxTmpfsSize = Quantity(16 << 30)

// Volume is a named volume: node-local data that outlives the instances
// using it. The agent of its node writes it when an instance first uses
// the name; a user removes it (refused while an instance uses it), and
// the agent then deletes the data.
type Volume struct {
	Metadata Metadata   `json:"metadata"`
	Spec     VolumeSpec `json:"spec"`
}

// VolumeSpec says where a named volume's data lives.
type VolumeSpec struct {
	// Node holds the data; instances on other nodes cannot use the volume.
	Node string `json:"node"`
	// Path is the data's directory on the node.
	Path string `json:"path,omitempty"`
}

// HostPathAllowed reports whether host path p is one of the allowed
// directories or lies under one, after cleaning (so /srv/../etc is /etc).
// An empty list allows every path.
func HostPathAllowed(p string, allowed []string) bool {
	if len(allowed) == 0 {
		return true
	}
	p = path.Clean(p)
	for _, a := range allowed {
		a = path.Clean(a)
		if p == a || a == "/" || strings.HasPrefix(p, a+"/") {
			return true
		}
	}
	return false
}

// Uses reports whether the template mounts the named volume name.
func (t *Template) Uses(name string) bool {
	for _, v := range t.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

// Job is a batch workload: Completions indexed instances, Parallelism at
// a time; it succeeds when every index has succeeded and fails when an
// index has failed more than BackoffLimit times.
type Job struct {
	Metadata Metadata  `json:"metadata"`
	Spec     JobSpec   `json:"spec"`
	Status   JobStatus `json:"status,omitzero"`
}

// JobSpec is what the user asks of a job.
type JobSpec struct {
	Completions int `json:"completions"`
	// Parallelism is how many indexes run at once; 0 means all of them.
	Parallelism  int       `json:"parallelism,omitempty"`
	BackoffLimit int       `json:"backoffLimit,omitempty"`
	Template     Template  `json:"template"`
	Placement    Placement `json:"placement,omitzero"`
	Priority     int       `json:"priority,omitempty"`
}

// JobPhase is where a job is in its life.
type JobPhase string

// Job phases.
const (
	JobPending   JobPhase = "Pending"
	JobRunning   JobPhase = "Running"
	JobSucceeded JobPhase = "Succeeded"
	JobFailed    JobPhase = "Failed"
)

// JobStatus is written by the job controller.
type JobStatus struct {
	Phase     JobPhase      `json:"phase,omitempty"`
	Succeeded int           `json:"succeeded,omitempty"`
	Failed    int           `json:"failed,omitempty"`
	Active    int           `json:"active,omitempty"`
	Indexes   []IndexResult `json:"indexes,omitempty"`
	StartedAt time.Time     `json:"startedAt,omitzero"`
	EndedAt   time.Time     `json:"endedAt,omitzero"`
	Message   string        `json:"message,omitempty"`
}

// IndexResult is the outcome so far of one job index.
type IndexResult struct {
	Index     int    `json:"index"`
	Succeeded bool   `json:"succeeded,omitempty"`
	Failed    bool   `json:"failed,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	ExitCode  int    `json:"exitCode,omitempty"`
	Instance  string `json:"instance,omitempty"`
}

// Instance is one container of a Service or Job.
type Instance struct {
	Metadata Metadata       `json:"metadata"`
	Spec     InstanceSpec   `json:"spec"`
	Status   InstanceStatus `json:"status,omitzero"`
}

// Owner names the object that made an instance.
type Owner struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
	UID  string `json:"uid,omitempty"`
}

// InstanceSpec is written by controllers (template, owner) and by the
// scheduler (Node, CPUSet).
type InstanceSpec struct {
	// Template is a pointer so that the controller's cache holds one
	// copy of a service's template for all its instances: by value it was
	// over half of each instance's bytes. A copy of an instance shares it,
	// so code that changes a copy's template gives the copy its own first.
	// Nil only until Default, which makes it the empty template, stored
	// as a template held by value always was.
	Template  *Template `json:"template"`
	Owner     Owner     `json:"owner"`
	Placement Placement `json:"placement,omitzero"`
	// Index is the job index (0-based); Attempt counts retries of it.
	Index   int `json:"index,omitempty"`
	Attempt int `json:"attempt,omitempty"`
	// SpecHash identifies the template revision the instance was made from.
	SpecHash string `json:"specHash,omitempty"`
	Priority int    `json:"priority,omitempty"`
	// Node is empty until the scheduler binds the instance.
	Node string `json:"node,omitempty"`
	// CPUSet is the exclusive logical CPUs the scheduler gave the instance.
	CPUSet []int `json:"cpuset,omitempty"`
}

// FillTemplate gives s the empty template when it has none (an instance
// sent or stored without one, which by value it always had), and
// returns s's template.
func (s *InstanceSpec) FillTemplate() *Template {
	if s.Template == nil {
		s.Template = new(Template)
	}
	return s.Template
}

// Phase is where an instance is in its life.
type Phase string

// Instance phases.
const (
	PhasePending   Phase = "Pending"
	PhaseScheduled Phase = "Scheduled"
	PhaseStarting  Phase = "Starting"
	PhaseRunning   Phase = "Running"
	PhaseSucceeded Phase = "Succeeded"
	PhaseFailed    Phase = "Failed"
	PhaseLost      Phase = "Lost"
)

// Phases lists every instance phase.
var Phases = []Phase{PhasePending, PhaseScheduled, PhaseStarting, PhaseRunning, PhaseSucceeded, PhaseFailed, PhaseLost}

// Terminal reports whether an instance in phase p will never run again.
func (p Phase) Terminal() bool {
	return p == PhaseSucceeded || p == PhaseFailed || p == PhaseLost
}

// The most text a status holds: a node writes its instances' and its
// own, and every watcher of them gets each write, so a node cannot make
// them megabytes. The API cuts longer text to these (see TrimText).
const (
	// MaxStatusMessage bounds a status's message, in bytes.
	MaxStatusMessage = 4 << 10
	// MaxStatusWord bounds its short strings (reason, container id).
	MaxStatusWord = 256
)

// trimText cuts s to at most n bytes, at a rune boundary.
func trimText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") // a rune cut in two goes
}

// TrimText cuts the status's text to MaxStatusMessage and MaxStatusWord.
func (s *InstanceStatus) TrimText() {
	s.Message, s.Reason, s.ContainerID = trimText(s.Message, MaxStatusMessage), trimText(s.Reason, MaxStatusWord), trimText(s.ContainerID, MaxStatusWord)
	for i := range s.Containers {
		c := &s.Containers[i]
		c.Reason, c.ContainerID = trimText(c.Reason, MaxStatusWord), trimText(c.ContainerID, MaxStatusWord)
	}
}

// TrimText cuts the status's message to MaxStatusMessage.
func (s *NodeStatus) TrimText() { s.Message = trimText(s.Message, MaxStatusMessage) }

// TrimText cuts the event's message to MaxStatusMessage and its reason
// and source to MaxStatusWord, as a status's: nodes record events too.
func (ev *Event) TrimText() {
	ev.Message, ev.Reason, ev.Source = trimText(ev.Message, MaxStatusMessage), trimText(ev.Reason, MaxStatusWord), trimText(ev.Source, MaxStatusWord)
}

// InstanceStatus is written by the node's agent.
type InstanceStatus struct {
	Phase       Phase  `json:"phase,omitempty"`
	IP          string `json:"ip,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
	// Pid is the container's main process on its node, in the node's PID
	// namespace (what `kill` there takes).
	Pid      int `json:"pid,omitempty"`
	ExitCode int `json:"exitCode,omitempty"`
	// Reason says why the container ended, e.g. "OOMKilled".
	Reason      string    `json:"reason,omitempty"`
	Message     string    `json:"message,omitempty"`
	Restarts    int       `json:"restarts,omitempty"`
	Healthy     bool      `json:"healthy,omitempty"`
	ScheduledAt time.Time `json:"scheduledAt,omitzero"`
	StartedAt   time.Time `json:"startedAt,omitzero"`
	FinishedAt  time.Time `json:"finishedAt,omitzero"`
	// RestartAt is when an exited container that is backing off (Reason
	// BackOff) starts again.
	RestartAt time.Time `json:"restartAt,omitzero"`
	// Containers is each container's state, for an instance whose
	// template lists init or sidecar containers (the main one last).
	Containers []ContainerStatus `json:"containers,omitempty"`
}

// Event records what happened to an object. Events expire after a while
// (see the store), so the history is bounded.
type Event struct {
	Metadata Metadata  `json:"metadata"`
	Time     time.Time `json:"time"`
	// Object is the object the event is about.
	Object  ObjectRef `json:"object"`
	Type    EventType `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message,omitempty"`
	// Source is the component that reported the event.
	Source string `json:"source,omitempty"`
}

// ObjectRef names an object.
type ObjectRef struct {
	Kind      Kind   `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// EventType is Normal or Warning.
type EventType string

// Event types.
const (
	EventNormal  EventType = "Normal"
	EventWarning EventType = "Warning"
)

// Hash identifies a service's template: instances made from another are
// replaced (a rollout, or a restart asked for through RestartedAt); ask
// Service.TemplateHash for a stored service's. Defaults, written out or
// left out, hash alike
// (see withoutDefaults), so a spec stored before the API filled them in
// hashes as it did then. One stored before that spelled a default out
// (restart: always on a service) hashes otherwise than it did: see
// StoredHash.
func (t Template) Hash() string {
	// The service's defaults: a job's own template is never hashed, and
	// the job controller settles its instances' restart policy to never.
	return t.withoutDefaults(KindService).StoredHash()
}

// StoredHash identifies the template as it is stored, its defaults as
// written or left out: what Hash was before the API wrote defaults in.
// A node labels an instance's containers with it (the instance's
// template is written once, so it changes only with what runs), and
// Service.TemplateHash keeps the hash a service's status records while
// its template's StoredHash is that hash: so no upgrade replaces an
// instance.
func (t Template) StoredHash() string {
	t.Migration = "" // a policy for moves, not what runs
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// Version describes a build of berth (GET /v1/version, berth version).
type Version struct {
	// Version is the module version; "(devel)" for a build from a checkout.
	Version string `json:"version"`
	// Revision is the commit built, Time its time (RFC 3339), and
	// Modified says the checkout had changes not committed.
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// Short is the version and, when known and not already in it (a
// pseudo-version names its commit), the first 12 digits of the commit,
// marked "-dirty" for uncommitted changes.
func (v Version) Short() string {
	s := v.Version
	rev := v.Revision[:min(12, len(v.Revision))]
	if rev != "" && !strings.Contains(s, rev) {
		s += " " + rev
		if v.Modified {
			s += "-dirty"
		}
	}
	return s
}
