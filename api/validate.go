package api

import (
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"strings"
	"sync"

	"github.com/berth-dev/berth/api/errdefs"
)

// FieldError is one invalid field: Field is its path in the object's spec
// file shape ("template.resources.memory", "template.ports[1].host").
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// ValidationError lists the invalid fields of one object. It is in the
// errdefs.ErrInvalidArgument category.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap puts a ValidationError in the InvalidArgument category.
func (e *ValidationError) Unwrap() error { return errdefs.ErrInvalidArgument }

// FieldErrors returns the field errors in err's chain, if any.
func FieldErrors(err error) []FieldError {
	var v *ValidationError
	if errors.As(err, &v) {
		return v.Fields
	}
	return nil
}

// errs collects field errors while validating.
type errs struct{ list []FieldError }

func (e *errs) add(field, format string, args ...any) {
	e.list = append(e.list, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (e *errs) err() error {
	if len(e.list) == 0 {
		return nil
	}
	return &ValidationError{Fields: e.list}
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

var dnsLabel = lazyRegexp(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName checks that s is a DNS label: at most 63 lowercase
// letters, digits and '-', starting and ending with a letter or digit.
func ValidateName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 63:
		return fmt.Errorf("%q is longer than 63 characters", s)
	case !dnsLabel().MatchString(s):
		return fmt.Errorf("%q is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return nil
}

var (
	// A path component of an image name: lowercase alphanumerics joined
	// by one '.', one or two '_', or any number of '-'.
	imageComponent = lazyRegexp(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)
	imageHost      = lazyRegexp(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$`)
	imageTag       = lazyRegexp(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	imageDigest    = lazyRegexp(`^sha256:[a-f0-9]{64}$`)
)

// ValidateImage checks an image reference: [host[:port]/]path[:tag][@sha256:hex].
func ValidateImage(ref string) error {
	if ref == "" {
		return errors.New("must not be empty")
	}
	if len(ref) > 255+len(":")+128+len("@sha256:")+64 { // name:tag@digest at their longest
		return fmt.Errorf("image %q is too long", ref)
	}
	name := ref
	if i := strings.IndexByte(name, '@'); i >= 0 {
		if !imageDigest().MatchString(name[i+1:]) {
			return fmt.Errorf("invalid image %q: digest must be sha256: and 64 lowercase hex digits", ref)
		}
		name = name[:i]
	}
	// A ':' after the last '/' starts the tag; one before it is a port.
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		if !imageTag().MatchString(name[i+1:]) {
			return fmt.Errorf("invalid image %q: bad tag %q", ref, name[i+1:])
		}
		name = name[:i]
	}
	if len(name) > 255 {
		return fmt.Errorf("invalid image %q: name is longer than 255 characters", ref)
	}
	parts := strings.Split(name, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		if !imageHost().MatchString(parts[0]) {
			return fmt.Errorf("invalid image %q: bad registry host %q", ref, parts[0])
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if !imageComponent().MatchString(p) {
			return fmt.Errorf("invalid image %q: name component %q must be lowercase letters and digits, separated by '.', '_' or '-'", ref, p)
		}
	}
	return nil
}

var envName = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validateMetadata(e *errs, m *Metadata, namespaced bool) {
	if err := ValidateName(m.Name); err != nil {
		e.add("name", "%v", err)
	}
	if namespaced && m.Namespace != "" {
		if err := ValidateName(m.Namespace); err != nil {
			e.add("namespace", "%v", err)
		}
	}
	validateLabels(e, m.Labels)
}

func validatePort(e *errs, field string, p int, allowZero bool) {
	if (p == 0 && !allowZero) || p < 0 || p > 65535 {
		e.add(field, "port %d out of range 1-65535", p)
	}
}

// MinDisk is the smallest disk limit: below it a container could not
// write its own first files.
const MinDisk Quantity = 1 << 20

// validateTemplate checks t; prefix is the template's field path.
func validateTemplate(e *errs, prefix string, t *Template) {
	if err := ValidateImage(t.Image); err != nil {
		e.add(join(prefix, "image"), "%v", err)
	}
	validateLimits(e, prefix, t)
	validateFiles(e, prefix, t)
	validateProcess(e, prefix, t)
	switch t.PullPolicy {
	case "", PullIfNotPresent, PullAlways, PullNever:
	default:
		e.add(join(prefix, "pullPolicy"), "must be IfNotPresent, Always or Never, got %q", t.PullPolicy)
	}
	switch t.Migration {
	case "", MigrationRestart:
	case MigrationLive:
		if err := t.LiveMigratable(); err != nil {
			e.add(join(prefix, "migration"), "live: %v", err)
		}
	default:
		e.add(join(prefix, "migration"), "must be live or restart, got %q", t.Migration)
	}
	for k := range t.Env {
		if !envName().MatchString(k) {
			e.add(join(prefix, "env"), "invalid variable name %q", k)
		}
	}
	validateResources(e, join(prefix, "resources"), t.Resources)
	validatePorts(e, prefix, t.Ports)
	if t.Health != nil {
		validateHealth(e, join(prefix, "health"), t.Health)
	}
	validateRestart(e, join(prefix, "restart"), t.Restart)
	validateContainers(e, prefix, t)
	validateVolumes(e, prefix, t.Volumes)
}

// validatePorts checks a template's ports; prefix is the template's path.
func validatePorts(e *errs, prefix string, ports []Port) {
	names := map[string]bool{}
	hosts := map[string]bool{}
	for i, p := range ports {
		pp := fmt.Sprintf("%s[%d]", join(prefix, "ports"), i)
		if p.Name != "" {
			if err := ValidateName(p.Name); err != nil {
				e.add(pp+".name", "%v", err)
			} else if names[p.Name] {
				e.add(pp+".name", "duplicate port name %q", p.Name)
			}
			names[p.Name] = true
		}
		validatePort(e, pp+".container", p.Container, false)
		validatePort(e, pp+".host", p.Host, true)
		switch p.Protocol {
		case "", "tcp", "udp":
		default:
			e.add(pp+".protocol", "must be tcp or udp, got %q", p.Protocol)
		}
		if p.Host != 0 {
			key := fmt.Sprintf("%d/%s", p.Host, cmpOr(p.Protocol, DefaultProtocol))
			if hosts[key] {
				e.add(pp+".host", "host port %s published twice", key)
			}
			hosts[key] = true
		}
	}
}

// validateVolumes checks a template's volumes; prefix is the template's path.
func validateVolumes(e *errs, prefix string, volumes []VolumeMount) {
	paths := map[string]int{}
	for i, v := range volumes {
		vp := fmt.Sprintf("%s[%d]", join(prefix, "volumes"), i)
		n := 0
		if v.Name != "" {
			n++
			if err := ValidateName(v.Name); err != nil {
				e.add(vp+".name", "%v", err)
			}
		}
		if v.HostPath != "" {
			n++
			if !path.IsAbs(v.HostPath) || strings.Contains(v.HostPath, "\x00") {
				e.add(vp+".hostPath", "must be an absolute path, got %q", v.HostPath)
			}
		}
		if v.Tmpfs != nil {
			n++
			if v.Tmpfs.Size <= 0 || v.Tmpfs.Size > MaxTmpfsSize {
				e.add(vp+".tmpfs.size", "must be between 1 byte and %s, got %s", MaxTmpfsSize, v.Tmpfs.Size)
			}
		}
		if n != 1 {
			e.add(vp, "set exactly one of name, hostPath and tmpfs")
		}
		if !path.IsAbs(v.Path) || path.Clean(v.Path) == "/" || strings.Contains(v.Path, "\x00") {
			e.add(vp+".path", "must be an absolute path other than /, got %q", v.Path)
		} else if j, dup := paths[path.Clean(v.Path)]; dup {
			e.add(vp+".path", "%s is already mounted by volumes[%d]", v.Path, j)
		} else {
			paths[path.Clean(v.Path)] = i
		}
	}
}

// validateResources checks r; rp is its field path.
func validateResources(e *errs, rp string, r Resources) {
	if r.CPU < 0 || math.IsNaN(r.CPU) || math.IsInf(r.CPU, 0) {
		e.add(rp+".cpu", "must not be negative, got %v", r.CPU)
	}
	if r.Exclusive && (r.CPU < 1 || r.CPU != math.Trunc(r.CPU)) {
		e.add(rp+".cpu", "exclusive CPUs must be a whole number of at least 1, got %v", r.CPU)
	}
	if r.Memory < 0 {
		e.add(rp+".memory", "must not be negative, got %d", r.Memory)
	} else if r.Memory > 0 && r.Memory < 4<<20 {
		e.add(rp+".memory", "%s is below the minimum of 4Mi", r.Memory)
	}
	if r.Pids < 0 {
		e.add(rp+".pids", "must not be negative, got %d", r.Pids)
	}
	if r.Disk < 0 {
		e.add(rp+".disk", "must not be negative, got %d", r.Disk)
	} else if r.Disk > 0 && r.Disk < MinDisk {
		e.add(rp+".disk", "%s is below the minimum of 1Mi", r.Disk)
	}
}

// validateHealth checks h; hp is its field path.
func validateHealth(e *errs, hp string, h *Health) {
	n := 0
	if h.HTTP != nil {
		n++
		validatePort(e, hp+".http.port", h.HTTP.Port, false)
		if h.HTTP.Path != "" && !strings.HasPrefix(h.HTTP.Path, "/") {
			e.add(hp+".http.path", "must start with '/', got %q", h.HTTP.Path)
		}
	}
	if h.TCP != nil {
		n++
		validatePort(e, hp+".tcp.port", h.TCP.Port, false)
	}
	if h.Exec != nil {
		n++
		if len(h.Exec.Command) == 0 {
			e.add(hp+".exec.command", "must not be empty")
		}
	}
	if n != 1 {
		e.add(hp, "set exactly one of http, tcp and exec (got %d)", n)
	}
	if h.Interval < 0 {
		e.add(hp+".interval", "must not be negative, got %s", h.Interval)
	}
	if h.Timeout < 0 {
		e.add(hp+".timeout", "must not be negative, got %s", h.Timeout)
	}
	if h.Failures < 0 {
		e.add(hp+".failures", "must not be negative, got %d", h.Failures)
	}
}

// validateRestart checks a restart policy; field is its path.
func validateRestart(e *errs, field string, p RestartPolicy) {
	switch p {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		e.add(field, "must be always, on-failure or never, got %q", p)
	}
}

// Validate checks a named volume.
func (v *Volume) Validate() error {
	var e errs
	validateMetadata(&e, &v.Metadata, true)
	if err := ValidateName(v.Spec.Node); err != nil {
		e.add("spec.node", "%v", err)
	}
	if v.Spec.Path != "" && !path.IsAbs(v.Spec.Path) {
		e.add("spec.path", "must be an absolute path, got %q", v.Spec.Path)
	}
	return e.err()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func validatePlacement(e *errs, prefix string, p *Placement) {
	for i, c := range p.Constraints {
		cp := fmt.Sprintf("%s.constraints[%d]", prefix, i)
		if c.Key == "" {
			e.add(cp+".key", "must not be empty")
		}
		switch c.Op {
		case OpEq, OpNe:
			if len(c.Values) != 1 {
				e.add(cp+".values", "%s takes exactly one value, got %d", c.Op, len(c.Values))
			}
		case OpIn, OpNotIn:
			if len(c.Values) == 0 {
				e.add(cp+".values", "%s takes at least one value", c.Op)
			}
		default:
			e.add(cp+".op", "must be ==, !=, in or notin, got %q", c.Op)
		}
	}
	if len(p.Spread) > 4 {
		e.add(prefix+".spread", "at most 4 spread domains, got %d", len(p.Spread))
	}
}

// Validate checks a service.
func (s *Service) Validate() error {
	var e errs
	validateMetadata(&e, &s.Metadata, true)
	// Instance names add "-" and five characters to the service's.
	if n := len(s.Metadata.Name); n > MaxServiceName && n <= 63 {
		e.add("name", "must be at most %d characters (instance names add six), got %d", MaxServiceName, n)
	}
	if s.Spec.Replicas < 0 {
		e.add("replicas", "must not be negative, got %d", s.Spec.Replicas)
	}
	checkMax(&e, "replicas", s.Spec.Replicas, MaxReplicas)
	switch s.Spec.Mode {
	case "", ModeReplicated, ModeGlobal:
	default:
		e.add("mode", "must be replicated or global, got %q", s.Spec.Mode)
	}
	validateTemplate(&e, "template", &s.Spec.Template)
	validateAliases(&e, s)
	if s.Spec.Update.MaxSurge < 0 {
		e.add("update.maxSurge", "must not be negative, got %d", s.Spec.Update.MaxSurge)
	}
	if s.Spec.Update.MaxUnavailable < 0 {
		e.add("update.maxUnavailable", "must not be negative, got %d", s.Spec.Update.MaxUnavailable)
	}
	validatePlacement(&e, "placement", &s.Spec.Placement)
	return e.err()
}

// Name limits that leave room for the instance names made from them.
const (
	MaxServiceName = 57
	MaxJobName     = 48
)

// Validate checks a job.
func (j *Job) Validate() error {
	var e errs
	validateMetadata(&e, &j.Metadata, true)
	// Instance names add "-<index>-<attempt>" to the job's.
	if n := len(j.Metadata.Name); n > MaxJobName && n <= 63 {
		e.add("name", "must be at most %d characters (instance names add the index and attempt), got %d", MaxJobName, n)
	}
	checkMax(&e, "completions", j.Spec.Completions, MaxCompletions)
	checkMax(&e, "parallelism", j.Spec.Parallelism, MaxParallelism)
	if j.Spec.Completions < 1 {
		e.add("completions", "must be at least 1, got %d", j.Spec.Completions)
	}
	if j.Spec.Parallelism < 0 {
		e.add("parallelism", "must not be negative, got %d", j.Spec.Parallelism)
	}
	if j.Spec.BackoffLimit < 0 {
		e.add("backoffLimit", "must not be negative, got %d", j.Spec.BackoffLimit)
	}
	validateTemplate(&e, "template", &j.Spec.Template)
	validatePlacement(&e, "placement", &j.Spec.Placement)
	return e.err()
}

// Validate checks an instance.
func (i *Instance) Validate() error {
	var e errs
	validateMetadata(&e, &i.Metadata, true)
	t := i.Spec.Template
	if t == nil { // told what the empty one lacks, as Default makes it
		t = new(Template)
	}
	validateTemplate(&e, "template", t)
	switch i.Spec.Owner.Kind {
	case "", KindService, KindJob:
	default:
		e.add("owner.kind", "must be Service or Job, got %q", i.Spec.Owner.Kind)
	}
	if i.Spec.Index < 0 {
		e.add("index", "must not be negative, got %d", i.Spec.Index)
	}
	if i.Spec.Node != "" {
		if err := ValidateName(i.Spec.Node); err != nil {
			e.add("node", "%v", err)
		}
	}
	validatePlacement(&e, "placement", &i.Spec.Placement)
	return e.err()
}

// ValidateStatus checks the fields an agent writes.
func (i *Instance) ValidateStatus() error {
	var e errs
	if ph := i.Status.Phase; ph != "" {
		ok := false
		for _, p := range Phases {
			ok = ok || p == ph
		}
		if !ok {
			e.add("status.phase", "unknown phase %q", ph)
		}
	}
	if i.Status.Restarts < 0 {
		e.add("status.restarts", "must not be negative, got %d", i.Status.Restarts)
	}
	validateContainerStatuses(&e, i)
	return e.err()
}

// maxNodeAddress bounds a node's address: an IP address, or a DNS name.
const maxNodeAddress = 253

// Validate checks a node.
func (n *Node) Validate() error {
	var e errs
	validateMetadata(&e, &n.Metadata, false)
	c := n.Spec.Capacity
	if c.MilliCPU < 0 {
		e.add("capacity.milliCPU", "must not be negative, got %d", c.MilliCPU)
	}
	if c.Memory < 0 {
		e.add("capacity.memory", "must not be negative, got %d", c.Memory)
	}
	if c.Pids < 0 {
		e.add("capacity.pids", "must not be negative, got %d", c.Pids)
	}
	if l := n.Spec.CapacityLimit; l.MilliCPU < 0 || l.Memory < 0 || l.Pids < 0 {
		e.add("capacityLimit", "must not be negative, got %+v", l)
	}
	if n.Spec.Draining && !n.Spec.Unschedulable {
		e.add("draining", "a draining node must be unschedulable too")
	}
	seen := map[int]bool{}
	for i, core := range n.Spec.Topology.Cores {
		for _, t := range core.Threads {
			if t < 0 || seen[t] {
				e.add(fmt.Sprintf("topology.cores[%d].threads", i), "logical CPU %d is negative or listed twice", t)
			}
			seen[t] = true
		}
	}
	if l := len(n.Spec.Address); l > maxNodeAddress {
		e.add("spec.address", "%d characters, over the limit of %d (a DNS name's)", l, maxNodeAddress)
	}
	switch n.Status.Condition {
	case "", NodeReady, NodeNotReady:
	default:
		e.add("status.condition", "must be Ready or NotReady, got %q", n.Status.Condition)
	}
	return e.err()
}

// Validate checks an event.
func (ev *Event) Validate() error {
	var e errs
	validateMetadata(&e, &ev.Metadata, true)
	if ev.Object.Name == "" {
		e.add("object.name", "must not be empty")
	}
	switch ev.Type {
	case EventNormal, EventWarning:
	default:
		e.add("type", "must be Normal or Warning, got %q", ev.Type)
	}
	if ev.Reason == "" {
		e.add("reason", "must not be empty")
	}
	return e.err()
}

// WireField turns a field path of the spec file shape ("replicas",
// "name") into the path of the same field in the API's JSON shape
// ("spec.replicas", "metadata.name").
func WireField(kind Kind, field string) string {
	head, _, _ := strings.Cut(field, ".")
	head, _, _ = strings.Cut(head, "[")
	switch {
	case field == "" || head == "metadata" || head == "status" || head == "spec":
		return field
	case head == "name" || head == "namespace" || head == "labels":
		return "metadata." + field
	case kind == KindEvent || kind == KindConfig || kind == KindSecret:
		return field
	}
	return "spec." + field
}

// Wire returns e with its fields in the API's JSON shape (see WireField).
func (e *ValidationError) Wire(kind Kind) *ValidationError {
	out := &ValidationError{Fields: make([]FieldError, len(e.Fields))}
	for i, f := range e.Fields {
		out.Fields[i] = FieldError{Field: WireField(kind, f.Field), Reason: f.Reason}
	}
	return out
}

// lazyRegexp compiles expr on first use: every command of the one binary
// would otherwise compile every package's expressions at start.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
