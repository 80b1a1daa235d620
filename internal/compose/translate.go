package compose

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/go-units"

	"github.com/berth-dev/berth/api"
)

// Dependency conditions, as Compose names them.
const (
	ServiceStarted               = types.ServiceConditionStarted
	ServiceHealthy               = types.ServiceConditionHealthy
	ServiceCompletedSuccessfully = types.ServiceConditionCompletedSuccessfully
)

// Unit is one Compose service as a berth object.
type Unit struct {
	// Service is the Compose service's name; Object's name is the same
	// name made a DNS label.
	Service   string
	Object    api.Object
	DependsOn []Dependency
	// Build is set when the service has a build: section; berth builds no
	// images, so its image must exist already.
	Build bool
}

// Dependency is one depends_on entry.
type Dependency struct {
	Service   string
	Condition string
}

// Plan is a project translated: its units in an order where every unit
// comes after what it depends on.
type Plan struct {
	Project   string
	Namespace string
	Units     []Unit
	// Unsupported lists the keys berth does not carry out, each with its
	// file and service.
	Unsupported []Issue
	// Notes say how something was mapped where berth differs from Compose.
	Notes []string
	// Data are the project's secrets and configs, applied before the
	// units that mount them.
	Data []Data
	// Volumes are the named volumes the project owns (down --volumes
	// removes them); External the ones it uses but does not own.
	Volumes, External []string
}

// mapped are the service keys the translation carries out (each is
// checked further below); every other key set is reported.
var mapped = map[string]bool{
	"image": true, "command": true, "entrypoint": true, "environment": true, "env_file": true,
	"working_dir": true, "ports": true, "expose": true, "volumes": true, "healthcheck": true,
	"restart": true, "deploy": true, "depends_on": true, "labels": true, "scale": true,
	"networks": true, "build": true, "tmpfs": true, "pull_policy": true,
	"secrets": true, "configs": true,
	"user": true, "hostname": true, "cap_add": true, "cap_drop": true, "read_only": true,
	"ulimits": true, "sysctls": true, "extra_hosts": true, "init": true, "stop_signal": true,
	"stop_grace_period": true,
}

// Translate turns a loaded project into berth objects. It reports every
// key berth does not carry out in Plan.Unsupported rather than failing;
// the caller decides whether those stop it. An error is something that
// cannot be translated at all (a name that is no DNS label, a dependency
// cycle).
func Translate(p *types.Project) (*Plan, error) {
	ns := dnsLabel(p.Name)
	if err := api.ValidateName(ns); err != nil {
		return nil, fmt.Errorf("compose: project name %q: %w", p.Name, err)
	}
	plan := &Plan{Project: p.Name, Namespace: ns}
	raw := readRaw(p)
	t := translator{p: p, raw: raw, plan: plan}

	// A one-shot is a Job when another service waits for it to complete.
	awaited := map[string]bool{}
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == ServiceCompletedSuccessfully {
				awaited[dep] = true
			}
		}
	}
	networks := map[string]bool{}
	for _, s := range p.Services {
		for n := range s.Networks {
			networks[n] = true
		}
	}
	t.networks = len(networks)
	t.topData()

	byName := map[string]Unit{}
	names := map[string]string{}
	for _, s := range sortedServices(p) {
		u, err := t.service(s, awaited[s.Name])
		if err != nil {
			return nil, err
		}
		obj := u.Object.GetMetadata().Name
		if other, ok := names[obj]; ok {
			return nil, fmt.Errorf("compose: services %q and %q both become %q in berth", other, s.Name, obj)
		}
		names[obj] = s.Name
		byName[s.Name] = u
	}
	order, err := topoOrder(p, byName)
	if err != nil {
		return nil, err
	}
	plan.Units = order
	t.topLevel()
	return plan, nil
}

type translator struct {
	p        *types.Project
	raw      rawFiles
	plan     *Plan
	networks int
}

func (t *translator) unsupported(svc, key, reason string) {
	t.plan.Unsupported = append(t.plan.Unsupported, Issue{File: t.raw.fileOf(svc, key), Service: svc, Key: key, Reason: reason})
}

const notCarried = "not supported by berth"

// service translates one Compose service.
// Long because it is a field-by-field table from a Compose service to a
// berth template: one short branch per supported key.
func (t *translator) service(s types.ServiceConfig, job bool) (Unit, error) {
	name := dnsLabel(s.Name)
	if err := api.ValidateName(name); err != nil {
		return Unit{}, fmt.Errorf("compose: service %q: %w", s.Name, err)
	}
	if name != s.Name {
		t.note(fmt.Sprintf("service %q is named %q in berth (a DNS label)", s.Name, name))
	}
	t.otherKeys(s)

	tpl := api.Template{Image: s.Image, WorkingDir: s.WorkingDir}
	if tpl.Image == "" && s.Build != nil {
		// The name Compose gives the image it builds.
		tpl.Image = dnsLabel(t.p.Name) + "-" + name
	}
	tpl.Command = []string(s.Entrypoint)
	tpl.Args = []string(s.Command)
	if len(s.Environment) > 0 {
		tpl.Env = map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				tpl.Env[k] = *v
			}
		}
	}
	tpl.Ports = t.ports(s)
	tpl.Volumes = t.volumes(s)
	tpl.Health = t.health(s)
	tpl.Restart = t.restart(s)
	tpl.PullPolicy = t.pullPolicy(s)
	t.process(s, &tpl)
	t.files(s, &tpl)

	labels := map[string]string{}
	for k, v := range s.Labels {
		if err := api.ValidateLabelKey(k); err != nil {
			t.unsupported(s.Name, "labels."+k, err.Error())
			continue
		}
		if err := api.ValidateLabelValue(k, v); err != nil {
			t.unsupported(s.Name, "labels."+k, err.Error())
			continue
		}
		labels[k] = v
	}
	labels[ProjectLabel] = dnsLabel(t.p.Name)
	labels[ServiceLabel] = name

	replicas := 1
	if s.Scale != nil {
		replicas = *s.Scale
	}
	var spec api.ServiceSpec
	if d := s.Deploy; d != nil {
		if d.Replicas != nil {
			replicas = *d.Replicas
		}
		t.deploy(s, d, &tpl, &spec, labels)
	}
	aliases := t.networksOf(s)
	if t.networks > 1 {
		// Several networks: each instance is on its service's, and
		// reaches only instances that share one with it.
		tpl.Networks = []string{"default"}
		if len(s.Networks) > 0 {
			tpl.Networks = nil
			for _, n := range slices.Sorted(maps.Keys(s.Networks)) {
				tpl.Networks = append(tpl.Networks, dnsLabel(n))
			}
		}
		if job {
			t.note(fmt.Sprintf("service %q: a job's instances are not isolated by network", s.Name))
		}
	}

	meta := api.Metadata{Name: name, Namespace: t.plan.Namespace, Labels: labels}
	var obj api.Object
	if job {
		if len(aliases) > 0 {
			t.unsupported(s.Name, "networks", "aliases: a job berth waits on has no address to name")
		}
		if tpl.Restart == "" || tpl.Restart == api.RestartNever {
			tpl.Restart = api.RestartNever
		}
		obj = &api.Job{Metadata: meta, Spec: api.JobSpec{Completions: max(replicas, 1), Template: tpl, Placement: spec.Placement}}
	} else {
		spec.Replicas = replicas
		spec.Template = tpl
		spec.Aliases = aliases
		obj = &api.Service{Metadata: meta, Spec: spec}
	}
	api.Default(obj)
	if err := obj.Validate(); err != nil {
		return Unit{}, fmt.Errorf("compose: service %q: %w", s.Name, err)
	}
	u := Unit{Service: s.Name, Object: obj, Build: s.Build != nil}
	for _, dep := range slices.Sorted(maps.Keys(s.DependsOn)) {
		u.DependsOn = append(u.DependsOn, Dependency{Service: dep, Condition: s.DependsOn[dep].Condition})
	}
	return u, nil
}

// otherKeys reports the keys set that are not mapped at all.
func (t *translator) otherKeys(s types.ServiceConfig) {
	b, err := json.Marshal(s)
	if err != nil {
		return
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if mapped[k] || string(m[k]) == "null" {
			continue
		}
		if k == "profiles" {
			continue // the loader has applied them
		}
		t.unsupported(s.Name, k, notCarried)
	}
}

func (t *translator) ports(s types.ServiceConfig) []api.Port {
	var out []api.Port
	seen := map[string]bool{}
	for i, p := range s.Ports {
		key := fmt.Sprintf("ports[%d]", i)
		if p.HostIP != "" && p.HostIP != "0.0.0.0" && p.HostIP != "::" {
			t.unsupported(s.Name, key+".host_ip", fmt.Sprintf("%s: berth publishes on every address of the node", p.HostIP))
		}
		if p.Mode == "host" {
			t.unsupported(s.Name, key+".mode", "host: berth publishes through the service's address")
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		port := api.Port{Name: p.Name, Container: int(p.Target), Protocol: proto}
		if p.Published != "" {
			lo, hi, err := portRange(p.Published)
			if err != nil {
				t.unsupported(s.Name, key+".published", err.Error())
				continue
			}
			if lo != hi {
				t.unsupported(s.Name, key+".published", fmt.Sprintf("%s: a range of host ports for one container port", p.Published))
				continue
			}
			port.Host = lo
		}
		seen[fmt.Sprintf("%d/%s", port.Container, proto)] = true
		out = append(out, port)
	}
	for _, e := range s.Expose {
		num, proto, _ := strings.Cut(e, "/")
		if proto == "" {
			proto = "tcp"
		}
		lo, hi, err := portRange(num)
		if err != nil {
			t.unsupported(s.Name, "expose", err.Error())
			continue
		}
		for n := lo; n <= hi; n++ {
			if k := fmt.Sprintf("%d/%s", n, proto); !seen[k] {
				seen[k] = true
				out = append(out, api.Port{Container: n, Protocol: proto})
			}
		}
	}
	return out
}

func portRange(s string) (int, int, error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err := strconv.Atoi(a)
	if err != nil {
		return 0, 0, fmt.Errorf("%q is not a port", s)
	}
	hi := lo
	if isRange {
		if hi, err = strconv.Atoi(b); err != nil || hi < lo {
			return 0, 0, fmt.Errorf("%q is not a port range", s)
		}
	}
	return lo, hi, nil
}

// nodeWide says what a bind mount of host path p gives away when it is
// the node's root or one of its kernel interfaces; "" for other paths.
func nodeWide(p string) string {
	switch path.Clean(p) {
	case "/":
		return "root filesystem"
	case "/proc":
		return "processes"
	case "/sys":
		return "kernel settings and devices"
	case "/dev":
		return "devices"
	}
	return ""
}

// defaultTmpfsSize bounds a tmpfs mount that names no size: berth charges
// tmpfs to memory and wants a bound.
const defaultTmpfsSize = api.Quantity(64 << 20)

func (t *translator) volumes(s types.ServiceConfig) []api.VolumeMount {
	var out []api.VolumeMount
	for i, v := range s.Volumes {
		key := fmt.Sprintf("volumes[%d]", i)
		switch v.Type {
		case types.VolumeTypeBind:
			if v.Bind != nil && (v.Bind.Propagation != "" || v.Bind.SELinux != "") {
				t.unsupported(s.Name, key+".bind", "propagation and SELinux labels: "+notCarried)
			}
			if whole := nodeWide(v.Source); whole != "" {
				// Honoured, as Compose does, but said aloud: the servers'
				// --allowed-host-paths is what refuses it.
				t.note(fmt.Sprintf("service %q: %s binds the node's %s (%s): the instance reaches the whole node; servers started with --allowed-host-paths refuse it",
					s.Name, key, v.Source, whole))
			}
			out = append(out, api.VolumeMount{HostPath: v.Source, Path: v.Target, ReadOnly: v.ReadOnly})
		case types.VolumeTypeVolume:
			if v.Source == "" {
				t.unsupported(s.Name, key, "an anonymous volume: name it under volumes:")
				continue
			}
			if v.Volume != nil && (v.Volume.NoCopy || v.Volume.Subpath != "") {
				t.unsupported(s.Name, key+".volume", "nocopy and subpath: "+notCarried)
			}
			name, ok := t.volumeName(v.Source)
			if !ok {
				t.unsupported(s.Name, key, fmt.Sprintf("volume %q is not declared under the top-level volumes:", v.Source))
				continue
			}
			out = append(out, api.VolumeMount{Name: name, Path: v.Target, ReadOnly: v.ReadOnly})
		case types.VolumeTypeTmpfs:
			size := defaultTmpfsSize
			if v.Tmpfs != nil && v.Tmpfs.Size > 0 {
				size = api.Quantity(v.Tmpfs.Size)
			} else {
				t.note(fmt.Sprintf("service %q: tmpfs %s has no size; berth bounds it to %s", s.Name, v.Target, size))
			}
			if v.Tmpfs != nil && v.Tmpfs.Mode != 0 {
				t.unsupported(s.Name, key+".tmpfs.mode", notCarried)
			}
			out = append(out, api.VolumeMount{Tmpfs: &api.TmpfsVolume{Size: size}, Path: v.Target})
		default:
			t.unsupported(s.Name, key, fmt.Sprintf("a %s mount: %s", v.Type, notCarried))
		}
	}
	for i, spec := range s.Tmpfs {
		// "/run" or "/run:size=10m,mode=1777"
		target, opts, _ := strings.Cut(spec, ":")
		size := defaultTmpfsSize
		sized := false
		for o := range strings.SplitSeq(opts, ",") {
			k, val, _ := strings.Cut(o, "=")
			switch k {
			case "":
			case "size":
				// Compose's units: 32m, 1g, or bytes.
				n, err := units.RAMInBytes(val)
				if err != nil || n <= 0 {
					t.unsupported(s.Name, fmt.Sprintf("tmpfs[%d]", i), fmt.Sprintf("size %q is not a size", val))
					continue
				}
				size, sized = api.Quantity(n), true
			default:
				t.unsupported(s.Name, fmt.Sprintf("tmpfs[%d]", i), fmt.Sprintf("option %q: berth sets a size only", k))
			}
		}
		if !sized {
			t.note(fmt.Sprintf("service %q: tmpfs %s has no size; berth bounds it to %s", s.Name, target, size))
		}
		out = append(out, api.VolumeMount{Tmpfs: &api.TmpfsVolume{Size: size}, Path: target})
	}
	return out
}

// volumeName is the berth volume a top-level volume is: its key in the
// project's namespace (berth volumes are per namespace, so the project
// prefix Compose adds is not needed), or the name an external one gives.
func (t *translator) volumeName(key string) (string, bool) {
	v, ok := t.p.Volumes[key]
	if !ok {
		return "", false
	}
	if v.External {
		return dnsLabel(cmp.Or(v.Name, key)), true
	}
	return dnsLabel(key), true
}

func (t *translator) note(s string) { t.plan.Notes = append(t.plan.Notes, s) }

func (t *translator) health(s types.ServiceConfig) *api.Health {
	h := s.HealthCheck
	if h == nil || h.Disable || len(h.Test) == 0 || h.Test[0] == "NONE" {
		return nil
	}
	var cmd []string
	switch h.Test[0] {
	case "CMD":
		cmd = h.Test[1:]
	case "CMD-SHELL":
		cmd = []string{"/bin/sh", "-c", strings.Join(h.Test[1:], " ")}
	default:
		cmd = []string{"/bin/sh", "-c", strings.Join(h.Test, " ")}
	}
	out := &api.Health{Exec: &api.ExecCheck{Command: cmd}}
	if h.Interval != nil {
		out.Interval = api.Duration(*h.Interval)
	}
	if h.Timeout != nil {
		out.Timeout = api.Duration(*h.Timeout)
	}
	if h.Retries != nil {
		out.Failures = int(min(*h.Retries, math.MaxInt32))
	}
	if h.StartPeriod != nil {
		out.StartPeriod = api.Duration(*h.StartPeriod)
	}
	if h.StartInterval != nil {
		t.unsupported(s.Name, "healthcheck.start_interval", notCarried)
	}
	return out
}

func (t *translator) pullPolicy(s types.ServiceConfig) api.PullPolicy {
	switch s.PullPolicy {
	case "":
		return ""
	case types.PullPolicyAlways:
		return api.PullAlways
	case types.PullPolicyNever:
		return api.PullNever
	case types.PullPolicyMissing, types.PullPolicyIfNotPresent:
		return api.PullIfNotPresent
	case types.PullPolicyBuild:
		t.unsupported(s.Name, "pull_policy", "build: berth builds no images")
		return ""
	}
	t.unsupported(s.Name, "pull_policy", fmt.Sprintf("%s: berth pulls always, if not present, or never", s.PullPolicy))
	return ""
}

func (t *translator) restart(s types.ServiceConfig) api.RestartPolicy {
	r := s.Restart
	if d := s.Deploy; d != nil && d.RestartPolicy != nil && r == "" {
		switch d.RestartPolicy.Condition {
		case "none":
			r = "no"
		case "on-failure":
			r = "on-failure"
		case "any", "":
			r = "always"
		}
	}
	policy, retries, _ := strings.Cut(r, ":")
	if retries != "" {
		t.unsupported(s.Name, "restart", fmt.Sprintf("%s: a retry count (berth backs off without a limit)", r))
	}
	switch policy {
	case "":
		return ""
	case "no":
		return api.RestartNever
	case "always", "unless-stopped":
		return api.RestartAlways
	case "on-failure":
		return api.RestartOnFailure
	}
	t.unsupported(s.Name, "restart", fmt.Sprintf("unknown policy %q", r))
	return ""
}

// deploy translates a Compose service's deploy section.
// Long because it is a field-by-field table of Compose's deploy section:
// one short branch per supported key.
func (t *translator) deploy(s types.ServiceConfig, d *types.DeployConfig, tpl *api.Template, spec *api.ServiceSpec, labels map[string]string) {
	switch d.Mode {
	case "", "replicated":
	case "global":
		spec.Mode = api.ModeGlobal
	default:
		t.unsupported(s.Name, "deploy.mode", fmt.Sprintf("%s: berth runs replicated and global services", d.Mode))
	}
	if d.EndpointMode != "" && d.EndpointMode != "vip" {
		t.unsupported(s.Name, "deploy.endpoint_mode", fmt.Sprintf("%s: berth gives every service a virtual IP", d.EndpointMode))
	}
	for k, v := range d.Labels {
		if api.ValidateLabelKey(k) != nil || api.ValidateLabelValue(k, v) != nil {
			t.unsupported(s.Name, "deploy.labels."+k, "not a berth label")
			continue
		}
		labels[k] = v
	}
	t.resources(s, d.Resources, tpl)
	if rp := d.RestartPolicy; rp != nil {
		if rp.Delay != nil {
			t.unsupported(s.Name, "deploy.restart_policy.delay", "berth backs off from 100ms to 10s by itself")
		}
		if rp.MaxAttempts != nil {
			t.unsupported(s.Name, "deploy.restart_policy.max_attempts", notCarried)
		}
		if rp.Window != nil {
			t.unsupported(s.Name, "deploy.restart_policy.window", notCarried)
		}
	}
	if u := d.UpdateConfig; u != nil {
		n := 1
		if u.Parallelism != nil && *u.Parallelism > 0 {
			n = int(min(*u.Parallelism, uint64(api.MaxReplicas)))
		}
		if u.Order == "stop-first" || u.Order == "" {
			// Compose's default order stops an old task before starting its
			// replacement.
			spec.Update = api.UpdateStrategy{MaxUnavailable: n}
		} else {
			spec.Update = api.UpdateStrategy{MaxSurge: n}
		}
		switch u.FailureAction {
		case "", "pause":
		case "rollback":
			spec.Update.AutoRollback = true
		default:
			t.unsupported(s.Name, "deploy.update_config.failure_action", fmt.Sprintf("%s: berth stops (pause) or rolls back", u.FailureAction))
		}
		if u.Delay != 0 {
			t.unsupported(s.Name, "deploy.update_config.delay", notCarried)
		}
		if u.Monitor != 0 {
			t.unsupported(s.Name, "deploy.update_config.monitor", notCarried)
		}
		if u.MaxFailureRatio != 0 {
			t.unsupported(s.Name, "deploy.update_config.max_failure_ratio", notCarried)
		}
	}
	if d.RollbackConfig != nil {
		t.unsupported(s.Name, "deploy.rollback_config", "berth rolls back with the update settings")
	}
	for i, c := range d.Placement.Constraints {
		con, err := constraint(c)
		if err != nil {
			t.unsupported(s.Name, fmt.Sprintf("deploy.placement.constraints[%d]", i), err.Error())
			continue
		}
		spec.Placement.Constraints = append(spec.Placement.Constraints, con)
	}
	for i, p := range d.Placement.Preferences {
		key, ok := strings.CutPrefix(p.Spread, "node.labels.")
		if !ok {
			t.unsupported(s.Name, fmt.Sprintf("deploy.placement.preferences[%d]", i), fmt.Sprintf("spread over %q: berth spreads over node labels", p.Spread))
			continue
		}
		spec.Placement.Spread = append(spec.Placement.Spread, key)
	}
	switch d.Placement.MaxReplicas {
	case 0:
	case 1:
		spec.Placement.AntiAffinity = true
	default:
		t.unsupported(s.Name, "deploy.placement.max_replicas_per_node", fmt.Sprintf("%d: berth bounds replicas per node to one (anti-affinity) or none", d.Placement.MaxReplicas))
	}
}

// resources maps limits to berth's resources, which reserve and limit the
// same amounts: reservations alone are taken as both, and reservations
// above the limits are refused.
func (t *translator) resources(s types.ServiceConfig, r types.Resources, tpl *api.Template) {
	lim, res := r.Limits, r.Reservations
	for _, x := range []struct {
		key string
		r   *types.Resource
	}{{"deploy.resources.limits", lim}, {"deploy.resources.reservations", res}} {
		if x.r == nil {
			continue
		}
		if len(x.r.Devices) > 0 {
			t.unsupported(s.Name, x.key+".devices", notCarried)
		}
		if len(x.r.GenericResources) > 0 {
			t.unsupported(s.Name, x.key+".generic_resources", notCarried)
		}
	}
	pick := func(get func(*types.Resource) float64) float64 {
		if lim != nil && get(lim) != 0 {
			return get(lim)
		}
		if res != nil {
			return get(res)
		}
		return 0
	}
	tpl.Resources.CPU = pick(func(r *types.Resource) float64 { return float64(r.NanoCPUs) })
	tpl.Resources.Memory = api.Quantity(pick(func(r *types.Resource) float64 { return float64(r.MemoryBytes) }))
	tpl.Resources.Pids = int64(pick(func(r *types.Resource) float64 { return float64(r.Pids) }))
	if lim != nil && res != nil {
		if lim.NanoCPUs != 0 && float64(res.NanoCPUs) > float64(lim.NanoCPUs) {
			t.unsupported(s.Name, "deploy.resources.reservations.cpus", "more than limits.cpus")
		}
		if lim.MemoryBytes != 0 && res.MemoryBytes > lim.MemoryBytes {
			t.unsupported(s.Name, "deploy.resources.reservations.memory", "more than limits.memory")
		}
	}
}

var constraintRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^\s*([\w.\-/]+)\s*(==|!=)\s*(\S+)\s*$`) })

// constraint reads a Swarm placement constraint: node.labels.KEY==V and
// node.hostname==NAME are what berth can match.
func constraint(s string) (api.Constraint, error) {
	m := constraintRe().FindStringSubmatch(s)
	if m == nil {
		return api.Constraint{}, fmt.Errorf("%q: not of the form ATTR==VALUE or ATTR!=VALUE", s)
	}
	key := m[1]
	switch {
	case key == "node.hostname":
		key = "node.name"
	case strings.HasPrefix(key, "node.labels."):
		key = strings.TrimPrefix(key, "node.labels.")
	default:
		return api.Constraint{}, fmt.Errorf("%q: berth matches node.hostname and node.labels.* only", s)
	}
	op := api.OpEq
	if m[2] == "!=" {
		op = api.OpNe
	}
	return api.Constraint{Key: key, Op: op, Values: []string{m[3]}}, nil
}

// networksOf reports what berth cannot do of a service's networks and
// returns its aliases, made DNS labels: further names of its VIP.
func (t *translator) networksOf(s types.ServiceConfig) []string {
	var aliases []string
	for _, n := range slices.Sorted(maps.Keys(s.Networks)) {
		c := s.Networks[n]
		if c == nil {
			continue
		}
		for i, a := range c.Aliases {
			l := dnsLabel(a)
			if err := api.ValidateName(l); err != nil {
				t.unsupported(s.Name, fmt.Sprintf("networks.%s.aliases[%d]", n, i), err.Error())
				continue
			}
			if l != dnsLabel(s.Name) && !slices.Contains(aliases, l) {
				aliases = append(aliases, l)
			}
		}
		if c.Ipv4Address != "" || c.Ipv6Address != "" {
			t.unsupported(s.Name, "networks."+n+".ipv4_address", "berth assigns addresses itself")
		}
	}
	return aliases
}

// topLevel reports top-level sections that would need what berth lacks.
func (t *translator) topLevel() {
	p := t.p
	for _, n := range slices.Sorted(maps.Keys(p.Volumes)) {
		v := p.Volumes[n]
		if v.Driver != "" && v.Driver != "local" {
			t.plan.Unsupported = append(t.plan.Unsupported, Issue{File: t.raw.firstFile(), Key: "volumes." + n + ".driver", Reason: v.Driver + ": berth volumes are node-local directories"})
		}
		if len(v.DriverOpts) > 0 {
			t.plan.Unsupported = append(t.plan.Unsupported, Issue{File: t.raw.firstFile(), Key: "volumes." + n + ".driver_opts", Reason: notCarried})
		}
		if v.External {
			t.plan.External = append(t.plan.External, dnsLabel(cmp.Or(v.Name, n)))
		} else {
			t.plan.Volumes = append(t.plan.Volumes, dnsLabel(n))
		}
	}
	for _, n := range slices.Sorted(maps.Keys(p.Networks)) {
		nw := p.Networks[n]
		if nw.Driver != "" && nw.Driver != "bridge" {
			t.plan.Unsupported = append(t.plan.Unsupported, Issue{File: t.raw.firstFile(), Key: "networks." + n + ".driver", Reason: nw.Driver + ": " + notCarried})
		}
		if nw.Internal {
			t.plan.Unsupported = append(t.plan.Unsupported, Issue{File: t.raw.firstFile(), Key: "networks." + n + ".internal", Reason: "berth isolates networks from each other, not from outside the cluster"})
		}
	}
}

func (r rawFiles) firstFile() string {
	if len(r.names) == 0 {
		return ""
	}
	return r.names[0]
}

// topoOrder orders units after what they depend on, by name among equals.
func topoOrder(p *types.Project, units map[string]Unit) ([]Unit, error) {
	var out []Unit
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string, []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("compose: depends_on cycle: %s", strings.Join(append(path, name), " -> "))
		case 2:
			return nil
		}
		u, ok := units[name]
		if !ok {
			return fmt.Errorf("compose: a service depends on %q, which the project does not have (a profile not enabled?)", name)
		}
		state[name] = 1
		for _, d := range u.DependsOn {
			if err := visit(d.Service, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, u)
		return nil
	}
	for _, s := range sortedServices(p) {
		if err := visit(s.Name, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var nonLabel = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[^a-z0-9-]+`) })

// dnsLabel makes a Compose name (letters, digits, '.', '_', '-') a DNS label.
func dnsLabel(s string) string {
	return strings.Trim(nonLabel().ReplaceAllString(strings.ToLower(s), "-"), "-")
}
