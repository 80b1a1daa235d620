package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/testing/lan"
)

// counts are the numbers an instance's counter logged, in order.
func counts(t *testing.T, l *lan.LAN, inst string) []int {
	t.Helper()
	out, err := l.Admin("logs", inst)
	check(t, err)
	var ns []int
	for _, f := range strings.Fields(out) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("the counter logged %q", f)
		}
		ns = append(ns, n)
	}
	return ns
}

// otherNode is the agent of l other than node.
func otherNode(l *lan.LAN, node string) string {
	for _, a := range l.Agents {
		if a.Name != node {
			return a.Name
		}
	}
	return ""
}

// instanceNamed is the instance of that name, as the API has it now.
func instanceNamed(t *testing.T, l *lan.LAN, name string) api.Instance {
	t.Helper()
	insts, err := l.Instances()
	check(t, err)
	for _, in := range insts {
		if in.Metadata.Name == name {
			return in
		}
	}
	t.Fatalf("no instance %s", name)
	return api.Instance{}
}

// TestMigrateCounter: berth migrate moves a counter (runc) to the other
// node; it counts on from where it was, under the same instance name,
// and runs on the target alone.
func TestMigrateCounter(t *testing.T) {
	l := startLANOf(t, 1, 2)
	check(t, l.Apply(counterYAML))
	inst := waitHealthy(t, l, "counter", 1, 60*time.Second)[0]
	name, from := inst.Metadata.Name, inst.Spec.Node
	to := otherNode(l, from)
	eventually(t, 10*time.Second, "the counter to count", func() bool { return len(counts(t, l, name)) >= 20 })
	before := counts(t, l, name)

	out, err := l.Admin("migrate", name, "--to", to)
	check(t, err)
	t.Logf("%s", strings.TrimSpace(out))
	if !strings.Contains(out, "migrated from "+from+" to "+to) {
		t.Fatalf("migrate printed %q", out)
	}
	moved := instanceNamed(t, l, name)
	if moved.Spec.Node != to || moved.Status.Phase != api.PhaseRunning || moved.Metadata.UID != inst.Metadata.UID {
		t.Fatalf("after migrate the instance is on %q, %s, uid %s (was %s)", moved.Spec.Node, moved.Status.Phase, moved.Metadata.UID, inst.Metadata.UID)
	}
	eventually(t, 10*time.Second, "the moved counter to count", func() bool { return len(counts(t, l, name)) >= 10 })
	after := counts(t, l, name)
	last := before[len(before)-1]
	if after[0] <= last {
		t.Fatalf("the moved counter began at %d, at or below %d which it had reached before: it was reset", after[0], last)
	}
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 {
			t.Fatalf("the moved counter skipped from %d to %d", after[i-1], after[i])
		}
	}
	eventually(t, 10*time.Second, "the source to let go of it", func() bool {
		return runningOf(t, l.Host(from), "counter") == 0 && runningOf(t, l.Host(to), "counter") == 1
	})
	eventually(t, 10*time.Second, "the source's container to be removed", func() bool {
		cs, err := l.Host(from).Containers()
		check(t, err)
		return len(cs) == 0
	})
	t.Logf("counter at %d before the move, %d first after it", last, after[0])
}
