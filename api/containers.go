package api

import (
	"fmt"
	"math"
	"slices"
)

// An instance runs its template's main container (the template's own
// image, command, env, resources and health) and, when the template
// lists them in Containers, more containers beside it:
//
//   - init containers run first, one at a time in the order listed, and
//     must each exit 0 before the next (and then the rest) start; a
//     failing one is retried by the instance's restart policy, and with
//     restart: never it fails the instance;
//   - sidecar containers start after the init containers and before the
//     main one, run beside it, and are stopped after it: when the main
//     container has finished for good, and when the instance goes.
//
// All of them share the instance's network namespace (one IP; they reach
// each other on localhost), its hostname and its volumes. Each has its own
// root filesystem, logs, health check and restarts. The scheduler reserves
// for the instance the sum of its main and sidecar containers' resources,
// or the largest init container's when that is more (they never run at
// the same time as the others).

// MainContainer is the name by which the template's own container is
// reached (berth logs -c main); other containers may not take it.
const MainContainer = "main"

// Container is one more container of an instance: an init step or a
// sidecar. Exactly one of Init and Sidecar is set. Fields left empty
// take nothing from the main container, except Image, which defaults to
// the template's.
type Container struct {
	Name    string `json:"name"`
	Init    bool   `json:"init,omitempty"`
	Sidecar bool   `json:"sidecar,omitempty"`
	// Image is the container's image; the template's when empty.
	Image      string            `json:"image,omitempty"`
	Command    []string          `json:"command,omitempty"`
	Args       []string          `json:"args,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	Resources  Resources         `json:"resources,omitzero"`
	// Health is a sidecar's own check: failing it restarts the sidecar,
	// and the instance is healthy only while it passes.
	Health *Health `json:"health,omitempty"`
	// Restart is a sidecar's policy (always by default); an init
	// container follows the instance's.
	Restart RestartPolicy `json:"restart,omitempty"`
}

// ContainerImage is the image c runs in an instance of t.
func (t *Template) ContainerImage(c *Container) string {
	if c.Image != "" {
		return c.Image
	}
	return t.Image
}

// Images lists the images an instance of t runs, each once: the main
// container's, then its init and sidecar containers' own.
func (t *Template) Images() []string {
	out := []string{t.Image}
	for i := range t.Containers {
		if img := t.ContainerImage(&t.Containers[i]); !slices.Contains(out, img) {
			out = append(out, img)
		}
	}
	return out
}

// Container finds the container named name in t; MainContainer (or "")
// is the main one, returned as nil with ok.
func (t *Template) Container(name string) (c *Container, ok bool) {
	if name == "" || name == MainContainer {
		return nil, true
	}
	for i := range t.Containers {
		if t.Containers[i].Name == name {
			return &t.Containers[i], true
		}
	}
	return nil, false
}

// ContainerNames lists the names of t's containers: the init ones in
// order, the sidecars, then MainContainer.
func (t *Template) ContainerNames() []string {
	var out []string
	for _, c := range t.Containers {
		if c.Init {
			out = append(out, c.Name)
		}
	}
	for _, c := range t.Containers {
		if !c.Init {
			out = append(out, c.Name)
		}
	}
	return append(out, MainContainer)
}

// Requests is what an instance of t reserves on its node: the main and
// sidecar containers' resources summed, or, field by field, the largest
// init container's when that is more.
func (t *Template) Requests() Resources {
	r := t.Resources
	var initMax Resources
	for _, c := range t.Containers {
		cr := c.Resources
		if c.Init {
			initMax.CPU = math.Max(initMax.CPU, cr.CPU)
			initMax.Memory = max(initMax.Memory, cr.Memory)
			initMax.Pids = max(initMax.Pids, cr.Pids)
			continue
		}
		r.CPU += cr.CPU
		r.Memory += cr.Memory
		r.Pids += cr.Pids
	}
	r.CPU = math.Max(r.CPU, initMax.CPU)
	r.Memory = max(r.Memory, initMax.Memory)
	r.Pids = max(r.Pids, initMax.Pids)
	return r
}

// validateContainers checks t.Containers.
func validateContainers(e *errs, prefix string, t *Template) {
	cp := join(prefix, "containers")
	if n := len(t.Containers); n > MaxContainers {
		e.add(cp, "%d containers, over the limit of %d", n, MaxContainers)
	}
	names := map[string]bool{MainContainer: true}
	for i := range t.Containers {
		c := &t.Containers[i]
		p := fmt.Sprintf("%s[%d]", cp, i)
		switch err := ValidateName(c.Name); {
		case err != nil:
			e.add(p+".name", "%v", err)
		case c.Name == MainContainer:
			e.add(p+".name", "%q names the template's own container", c.Name)
		case names[c.Name]:
			e.add(p+".name", "duplicate container name %q", c.Name)
		}
		names[c.Name] = true
		if c.Init == c.Sidecar {
			e.add(p, "set exactly one of init and sidecar")
		}
		if c.Image != "" {
			if err := ValidateImage(c.Image); err != nil {
				e.add(p+".image", "%v", err)
			}
		}
		if n := len(c.Env); n > MaxEnv {
			e.add(p+".env", "%d variables, over the limit of %d", n, MaxEnv)
		}
		for k := range c.Env {
			if !envName().MatchString(k) {
				e.add(p+".env", "invalid variable name %q", k)
			}
		}
		if n := len(c.Command) + len(c.Args); n > MaxArgs {
			e.add(p+".command", "%d command and args entries together, over the limit of %d", n, MaxArgs)
		}
		if c.Resources.Exclusive {
			e.add(p+".resources.exclusive", "only the main container takes exclusive CPUs")
		}
		validateResources(e, p+".resources", c.Resources)
		if c.Health != nil {
			if c.Init {
				e.add(p+".health", "an init container has no health check: it must exit 0")
			}
			validateHealth(e, p+".health", c.Health)
		}
		switch {
		case c.Restart != "" && c.Init:
			e.add(p+".restart", "an init container follows the instance's restart policy")
		default:
			validateRestart(e, p+".restart", c.Restart)
		}
	}
}

// ContainerState is where one container of an instance is.
type ContainerState string

// Container states.
const (
	// ContainerWaiting: not started yet (an init container before it, a
	// sidecar not yet up, a restart's back-off).
	ContainerWaiting    ContainerState = "Waiting"
	ContainerRunning    ContainerState = "Running"
	ContainerTerminated ContainerState = "Terminated"
)

// ContainerStatus is one container of an instance, as its agent reports it.
type ContainerStatus struct {
	Name     string         `json:"name"`
	Init     bool           `json:"init,omitempty"`
	Sidecar  bool           `json:"sidecar,omitempty"`
	State    ContainerState `json:"state"`
	ExitCode int            `json:"exitCode,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Restarts int            `json:"restarts,omitempty"`
	// Healthy: running and passing its health check, if it has one.
	Healthy     bool   `json:"healthy,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
}

// validateContainerStatuses checks what a node reports of an instance's
// containers: at most one entry per container of its template, each
// naming one of them, in a known state.
func validateContainerStatuses(e *errs, i *Instance) {
	cs, t := i.Status.Containers, i.Spec.Template
	if t == nil {
		t = new(Template)
	}
	if n := len(cs); n > len(t.Containers)+1 {
		e.add("status.containers", "%d entries for %d containers", n, len(t.Containers)+1)
	}
	for k, c := range cs {
		p := fmt.Sprintf("status.containers[%d]", k)
		if _, ok := t.Container(c.Name); !ok || c.Name == "" {
			e.add(p+".name", "the template has no container %q", c.Name)
		}
		switch c.State {
		case ContainerWaiting, ContainerRunning, ContainerTerminated:
		default:
			e.add(p+".state", "unknown state %q", c.State)
		}
		if c.Restarts < 0 {
			e.add(p+".restarts", "must not be negative, got %d", c.Restarts)
		}
	}
}
