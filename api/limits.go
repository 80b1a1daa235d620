package api

import "encoding/json"

// What the built-in runtime's launch plan holds at most (its C side sizes
// its arrays by these; see internal/runtime/launch): argv entries, env
// entries and mounts of one container.
const (
	LaunchMaxArgs   = 254
	LaunchMaxEnv    = 255
	LaunchMaxMounts = 255
)

// Admission limits: what one object may ask. Each is checked when the
// object is applied, so a spec that could not run, or whose instances
// would swamp the store, is refused at once, naming the field and the cap.
const (
	// MaxReplicas bounds a service's instances. 10,000 is the scale the
	// scheduler is tested at; their objects (about 1 KiB each, twice over
	// with the node's assignment copy) stay in the tens of megabytes
	// that the store, the controllers' cache and every watch hold.
	MaxReplicas = 10000
	// MaxCompletions bounds a job's indices: its status lists each one,
	// and must stay one etcd request (under 1.5 MiB).
	MaxCompletions = 5000
	// MaxParallelism bounds how many of a job's instances run at once.
	MaxParallelism = MaxReplicas
	// MaxEnv bounds a template's variables: the launch plan's room less
	// what the image and berth itself add (PATH, HOSTNAME, BERTH_JOB_*).
	MaxEnv = LaunchMaxEnv - 63
	// MaxArgs bounds command and args together: an image's entrypoint,
	// used when command is empty, takes from the same room.
	MaxArgs = LaunchMaxArgs
	// MaxVolumes bounds a template's volumes: the launch plan's mounts
	// less berth's own (proc, dev, sys, resolv.conf, hosts...).
	MaxVolumes = LaunchMaxMounts - 31
	// MaxPorts bounds a template's ports: each is a map entry on every node.
	MaxPorts = 128
	// MaxTemplateBytes bounds a template's JSON: every instance carries a
	// copy, and a service's status keeps MaxHistory of them, which must
	// fit in one etcd request (1.5 MiB) with the spec's own.
	MaxTemplateBytes = 64 << 10
	// MaxContainers bounds a template's init and sidecar containers:
	// each is a container, with its own shim, on the node.
	MaxContainers = 16
	// MaxNodeWatches bounds the watches one node's certificate holds
	// open at once on a server: its agent needs a handful (assignments,
	// nodes, services, instances), and each holds an etcd watcher and a
	// stream on the server, so a node's key cannot exhaust it.
	MaxNodeWatches = 64
)

// validateLimits checks a template against the admission limits.
func validateLimits(e *errs, prefix string, t *Template) {
	if n := len(t.Env); n > MaxEnv {
		e.add(join(prefix, "env"), "%d variables, over the limit of %d", n, MaxEnv)
	}
	if n := len(t.Command) + len(t.Args); n > MaxArgs {
		e.add(join(prefix, "command"), "%d command and args entries together, over the limit of %d", n, MaxArgs)
	}
	if n := len(t.Volumes) + len(t.Files); n > MaxVolumes {
		e.add(join(prefix, "volumes"), "%d volumes and files, over the limit of %d", n, MaxVolumes)
	}
	if n := len(t.Ports); n > MaxPorts {
		e.add(join(prefix, "ports"), "%d ports, over the limit of %d", n, MaxPorts)
	}
	if b, err := json.Marshal(t); err == nil && len(b) > MaxTemplateBytes {
		e.add(prefix, "%d bytes of JSON, over the limit of %d", len(b), MaxTemplateBytes)
	}
}

// checkMax adds an error when n is over limit.
func checkMax(e *errs, field string, n, limit int) {
	if n > limit {
		e.add(field, "must be at most %d, got %d", limit, n)
	}
}
