// Package reconcile decides what a node agent does: given the instances
// the control plane assigned to this node (desired) and the containers
// that exist (observed), it returns the actions that close the gap. It is
// a pure function of its inputs, the clock included, so it is tested
// without containers and gives the same answer when run twice.
//
// Vocabulary: an instance is one replica or job shard; each time it runs it
// gets a container, numbered by attempt (0, 1, 2...). Restarts are new
// attempts, so the previous attempt's logs stay readable until the next
// one exits.
package reconcile

import (
	"cmp"
	"fmt"
	"sort"
	"time"
)

// Policy is when an exited container is started again.
type Policy string

const (
	Always    Policy = "always"
	OnFailure Policy = "on-failure"
	Never     Policy = "never"
)

// Desired is an instance this node should be running.
type Desired struct {
	// Key names the instance ("namespace/name"); UID tells apart an instance
	// from a later one of the same name.
	Key     string
	UID     string
	Restart Policy
	// Template identifies what the instance should run; a container made
	// from another one (a restart was asked for) is replaced.
	Template string
	// Members are the instance's init containers (in the order they run)
	// and sidecars, beside its main container; none for most instances.
	Members []Member
}

// Member is one container of an instance other than its main one.
//
// Init members run first, one at a time, each to exit 0; a failing one
// is retried as the instance's policy says (never: the instance has
// failed). Sidecars then start, and the main container once they all
// run. Sidecars restart by their own policy, and are stopped when the
// main container has finished for good; when the instance goes, its
// main container is stopped first and its sidecars after it.
type Member struct {
	// Name tells the instance's containers apart; the main one's is "".
	Name    string
	Init    bool
	Sidecar bool
	// Restart is a sidecar's policy (Always when empty).
	Restart Policy
}

// Container is what exists on the node for some instance.
type Container struct {
	ID         string
	Key        string
	UID        string
	Attempt    int
	Running    bool
	ExitCode   int
	StartedAt  time.Time
	FinishedAt time.Time
	// Unhealthy marks a running container whose health check failed past its threshold.
	Unhealthy bool
	// Template is the Desired.Template the container was made from.
	Template string
	// Name is the Member the container runs ("" for the main one);
	// Sidecar says it is a sidecar, which an instance no longer assigned
	// stops last.
	Name    string
	Sidecar bool
}

// Kind is what an action does.
type Kind int

const (
	// Start runs attempt Attempt of the instance.
	Start Kind = iota + 1
	// Stop stops a running container (SIGTERM, then SIGKILL after the grace period).
	Stop
	// Remove deletes an exited container and its logs.
	Remove
)

func (k Kind) String() string {
	switch k {
	case Start:
		return "start"
	case Stop:
		return "stop"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Action is one step for the agent to take.
type Action struct {
	Kind        Kind
	Key         string
	UID         string
	ContainerID string
	// Name is the member a Start runs ("" for the main container).
	Name    string
	Attempt int
	Reason  string
}

// Result is what Compute decided.
type Result struct {
	Actions []Action
	// RetryAt, when not zero, is the earliest time a delayed restart becomes due.
	RetryAt time.Time
}

// Backoff gives the delay before the next start after attempt n exited having
// run for ran: 100 ms doubling up to 10 s, as Kubernetes and Nomad grow
// theirs. A container that ran ten minutes (a healthy life, then a crash)
// starts over from no delay, so one crash a day never waits.
func Backoff(attempt int, ran time.Duration) time.Duration {
	const (
		base    = 100 * time.Millisecond
		ceiling = 10 * time.Second
		reset   = 10 * time.Minute
	)
	if ran >= reset || attempt == 0 {
		return 0
	}
	d := base << min(attempt-1, 10)
	return min(d, ceiling)
}

// Compute returns the actions that bring observed toward desired at now.
func Compute(desired []Desired, observed []Container, now time.Time) Result {
	var res Result
	// Both maps sized up front: a node's every pass builds them anew.
	byUID := make(map[string][]Container, len(observed))
	for _, c := range observed {
		byUID[c.UID] = append(byUID[c.UID], c)
	}
	want := make(map[string]bool, len(desired))
	for _, d := range desired {
		want[d.UID] = true
	}
	// Containers of instances no longer assigned here go, running or not;
	// an instance's sidecars only once its other containers have stopped.
	// Counted first, so that the orphans and their actions are allocated
	// once: a node that lets go of many instances (a scale to 0) has each
	// of its passes, until they are gone, act on all of them again.
	n := 0
	for uid, cs := range byUID {
		if !want[uid] {
			n += len(cs)
		}
	}
	var orphans []Container
	otherRunning := map[string]bool{}
	if n > 0 {
		orphans = make([]Container, 0, n)
		res.Actions = make([]Action, 0, 2*n)
	}
	for uid, cs := range byUID {
		if !want[uid] {
			orphans = append(orphans, cs...)
			for _, c := range cs {
				otherRunning[uid] = otherRunning[uid] || (c.Running && !c.Sidecar)
			}
		}
	}
	sort.Slice(orphans, func(i, j int) bool { return orphans[i].ID < orphans[j].ID })
	for _, c := range orphans {
		if c.Running && c.Sidecar && otherRunning[c.UID] {
			continue
		}
		if c.Running {
			res.Actions = append(res.Actions, Action{Kind: Stop, Key: c.Key, UID: c.UID, ContainerID: c.ID, Reason: "instance no longer assigned to this node"})
		}
		res.Actions = append(res.Actions, Action{Kind: Remove, Key: c.Key, UID: c.UID, ContainerID: c.ID, Reason: "instance no longer assigned to this node"})
	}

	ds := append([]Desired(nil), desired...)
	sort.Slice(ds, func(i, j int) bool { return ds[i].Key < ds[j].Key })
	for _, d := range ds {
		res.instance(d, byUID[d.UID], now)
	}
	return res
}

// instance adds the actions for one desired instance, given its containers.
//
// Long because it is the decision for one instance's containers in the
// order they run (init, sidecars, main); the order is the rule, and the
// branches read best together.
func (res *Result) instance(d Desired, cs []Container, now time.Time) {
	byName := map[string][]Container{}
	for _, c := range cs {
		byName[c.Name] = append(byName[c.Name], c)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	latest := map[string]*Container{}
	for _, n := range names {
		g := byName[n]
		sort.Slice(g, func(i, j int) bool { return g[i].Attempt < g[j].Attempt })
		l := g[len(g)-1]
		latest[n] = &l
		// Only the latest attempt and the one before it (for its logs) are kept.
		for _, c := range g[:len(g)-1] {
			if c.Running {
				res.Actions = append(res.Actions, Action{Kind: Stop, Key: d.Key, UID: d.UID, ContainerID: c.ID, Reason: "superseded by a newer attempt"})
			}
			if c.Attempt < l.Attempt-1 || c.Running {
				res.Actions = append(res.Actions, Action{Kind: Remove, Key: d.Key, UID: d.UID, ContainerID: c.ID, Reason: "superseded by a newer attempt"})
			}
		}
	}
	stale := func(c *Container) bool { return d.Template != "" && c.Template != d.Template }
	// A restart asked for (a new template) stops every container first,
	// then runs the instance from its first init container again.
	stopping := false
	for _, n := range names {
		if l := latest[n]; l.Running && stale(l) {
			res.Actions = append(res.Actions, Action{Kind: Stop, Key: d.Key, UID: d.UID, ContainerID: l.ID, Reason: "template changed (restart asked for)"})
			stopping = true
		}
	}
	if stopping {
		return
	}
	cur := func(name string) *Container {
		if l := latest[name]; l != nil && !stale(l) {
			return l
		}
		return nil
	}
	// step starts, restarts or stops the named container by policy p, and
	// reports whether it runs.
	step := func(name string, p Policy) bool {
		c := cur(name)
		if c == nil {
			a := Action{Kind: Start, Key: d.Key, UID: d.UID, Name: name, Reason: "new instance"}
			if l := latest[name]; l != nil {
				a.Attempt, a.Reason = l.Attempt+1, "template changed"
			} else if name != "" {
				a.Reason = "new container " + name
			}
			res.Actions = append(res.Actions, a)
			return false
		}
		if c.Running {
			if c.Unhealthy {
				res.Actions = append(res.Actions, Action{Kind: Stop, Key: d.Key, UID: d.UID, ContainerID: c.ID, Reason: "health check failed"})
			}
			return true
		}
		if !Restarts(p, c.ExitCode) {
			return false // terminal: it succeeded or failed for good
		}
		due := c.FinishedAt.Add(Backoff(c.Attempt, c.FinishedAt.Sub(c.StartedAt)))
		if now.Before(due) {
			if res.RetryAt.IsZero() || due.Before(res.RetryAt) {
				res.RetryAt = due
			}
			return false
		}
		res.Actions = append(res.Actions, Action{Kind: Start, Key: d.Key, UID: d.UID, Name: name, Attempt: c.Attempt + 1,
			Reason: fmt.Sprintf("restart after exit code %d", c.ExitCode)})
		return false
	}
	for _, m := range d.Members {
		if !m.Init {
			continue
		}
		if c := cur(m.Name); c != nil && !c.Running && c.ExitCode == 0 {
			continue // done: the next one may run
		}
		step(m.Name, d.Restart)
		return // running, starting, backing off, or failed for good
	}
	main := cur("")
	mainDone := main != nil && !main.Running && !Restarts(d.Restart, main.ExitCode)
	sidecarsUp := true
	for _, m := range d.Members {
		if !m.Sidecar {
			continue
		}
		if mainDone {
			if c := cur(m.Name); c != nil && c.Running {
				res.Actions = append(res.Actions, Action{Kind: Stop, Key: d.Key, UID: d.UID, ContainerID: c.ID, Reason: "main container finished"})
			}
			continue
		}
		if !step(m.Name, cmp.Or(m.Restart, Always)) {
			sidecarsUp = false
		}
	}
	if main == nil && !sidecarsUp {
		return // the main container starts once its sidecars run
	}
	step("", d.Restart)
}

// Restarts says whether a container that exited with code is started
// again under p; "" is always, as for a service.
func Restarts(p Policy, code int) bool {
	switch p {
	case Always, "":
		return true
	case OnFailure:
		return code != 0
	}
	return false
}
