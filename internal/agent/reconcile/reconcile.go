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
	Attempt     int
	Reason      string
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
	byUID := map[string][]Container{}
	for _, c := range observed {
		byUID[c.UID] = append(byUID[c.UID], c)
	}
	want := map[string]bool{}
	for _, d := range desired {
		want[d.UID] = true
	}
	// Containers of instances no longer assigned here go, running or not.
	var orphans []Container
	for uid, cs := range byUID {
		if !want[uid] {
			orphans = append(orphans, cs...)
		}
	}
	sort.Slice(orphans, func(i, j int) bool { return orphans[i].ID < orphans[j].ID })
	for _, c := range orphans {
		if c.Running {
			res.Actions = append(res.Actions, Action{Kind: Stop, Key: c.Key, UID: c.UID, ContainerID: c.ID, Reason: "instance no longer assigned to this node"})
		}
		res.Actions = append(res.Actions, Action{Kind: Remove, Key: c.Key, UID: c.UID, ContainerID: c.ID, Reason: "instance no longer assigned to this node"})
	}

	ds := append([]Desired(nil), desired...)
	sort.Slice(ds, func(i, j int) bool { return ds[i].Key < ds[j].Key })
	for _, d := range ds {
		cs := byUID[d.UID]
		sort.Slice(cs, func(i, j int) bool { return cs[i].Attempt < cs[j].Attempt })
		if len(cs) == 0 {
			res.Actions = append(res.Actions, Action{Kind: Start, Key: d.Key, UID: d.UID, Attempt: 0, Reason: "new instance"})
			continue
		}
		latest := cs[len(cs)-1]
		// Only the latest attempt and the one before it (for its logs) are kept.
		for _, c := range cs[:len(cs)-1] {
			if c.Running {
				res.Actions = append(res.Actions, Action{Kind: Stop, Key: d.Key, UID: d.UID, ContainerID: c.ID, Reason: "superseded by a newer attempt"})
			}
			if c.Attempt < latest.Attempt-1 || c.Running {
				res.Actions = append(res.Actions, Action{Kind: Remove, Key: d.Key, UID: d.UID, ContainerID: c.ID, Reason: "superseded by a newer attempt"})
			}
		}
		stale := d.Template != "" && latest.Template != d.Template
		if latest.Running {
			switch {
			case stale:
				res.Actions = append(res.Actions, Action{Kind: Stop, Key: d.Key, UID: d.UID, ContainerID: latest.ID, Reason: "template changed (restart asked for)"})
			case latest.Unhealthy:
				res.Actions = append(res.Actions, Action{Kind: Stop, Key: d.Key, UID: d.UID, ContainerID: latest.ID, Reason: "health check failed"})
			}
			continue
		}
		if stale {
			res.Actions = append(res.Actions, Action{Kind: Start, Key: d.Key, UID: d.UID, Attempt: latest.Attempt + 1, Reason: "template changed"})
			continue
		}
		if !Restarts(d.Restart, latest.ExitCode) {
			continue // terminal: the instance succeeded or failed for good
		}
		due := latest.FinishedAt.Add(Backoff(latest.Attempt, latest.FinishedAt.Sub(latest.StartedAt)))
		if now.Before(due) {
			if res.RetryAt.IsZero() || due.Before(res.RetryAt) {
				res.RetryAt = due
			}
			continue
		}
		res.Actions = append(res.Actions, Action{Kind: Start, Key: d.Key, UID: d.UID, Attempt: latest.Attempt + 1,
			Reason: fmt.Sprintf("restart after exit code %d", latest.ExitCode)})
	}
	return res
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
