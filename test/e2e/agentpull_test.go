package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// serverAgent is one `berth server` and one `berth agent` joined to it,
// each with its own data dir.
type serverAgent struct {
	t                   *testing.T
	srv, agent          *env
	apiURL, tok, caFile string
	admin               *client.Client
}

// startServerAgent starts a server on host (a loopback address of the
// test's own) and an agent named node, and waits for the node to be
// Ready. The server's store holds demo/busybox:1; the agent's is empty.
func startServerAgent(t *testing.T, host, node string) *serverAgent {
	t.Helper()
	sa, joinToken, caPin := startServer(t, host, true)
	sa.agent = newAgentEnv(t)
	startProcess(t, "berth agent", "--data-dir", sa.agent.dataDir, "agent", "-v", "--server", sa.apiURL, "--name", node,
		"--address", "127.0.0.1", "--no-network", "--token", joinToken, "--ca-pin", caPin)
	eventually(t, 20*time.Second, "node "+node+" Ready", func() bool {
		n, err := sa.admin.Nodes().Get(context.Background(), "", node)
		return err == nil && n.Status.Condition == api.NodeReady
	})
	return sa
}

// startServer starts a server on host, without agents (with
// demo/busybox:1 in its store when demo), and returns it with a join
// token and the CA pin an agent joins with.
func startServer(t *testing.T, host string, demo bool) (sa *serverAgent, joinToken, caPin string) {
	t.Helper()
	testenv.RequireRoot(t)
	sa = &serverAgent{t: t, srv: newEnv(t)}
	if demo {
		sa.srv.demoImage()
	}
	apiAddr := freeAddr(t, host)
	sa.apiURL = "https://" + apiAddr
	srv := startProcess(t, "berth server", "--data-dir", sa.srv.dataDir, "server", "-v", "--name", "s1",
		"--listen", apiAddr, "--peer-listen", freeAddr(t, host))
	hint := regexp.MustCompile(`berth agent --server (\S+) --token \$\(cat (\S+)\) --ca-pin (sha256:[0-9a-f]+)`)
	var m []string
	eventually(t, 30*time.Second, "the server's join hint", func() bool {
		m = hint.FindStringSubmatch(srv.out.String())
		return m != nil
	})
	sa.caFile = filepath.Join(sa.srv.dataDir, "tls", "ca.crt")
	raw, err := os.ReadFile(filepath.Join(sa.srv.dataDir, "tls", "token"))
	if err != nil {
		t.Fatal(err)
	}
	sa.tok = strings.TrimSpace(string(raw))
	if sa.admin, err = client.New(sa.apiURL, client.WithToken(sa.tok), client.WithCAFile(sa.caFile)); err != nil {
		t.Fatal(err)
	}
	return sa, readToken(t, m[2]), m[3]
}

// cli runs berth against the server as an admin.
func (sa *serverAgent) cli(args ...string) (string, string, int) {
	return sa.srv.run(append([]string{"--server", sa.apiURL, "--token", sa.tok, "--ca-file", sa.caFile}, args...)...)
}

func (sa *serverAgent) ok(args ...string) string {
	sa.t.Helper()
	out, errOut, code := sa.cli(args...)
	if code != 0 {
		sa.t.Fatalf("berth %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// apply applies a spec file's text.
func (sa *serverAgent) apply(spec string) {
	sa.t.Helper()
	f := filepath.Join(sa.t.TempDir(), "spec.yaml")
	if err := os.WriteFile(f, []byte(spec), 0o600); err != nil {
		sa.t.Fatal(err)
	}
	sa.ok("apply", "-f", f)
}

// instanceOf waits for an instance of owner in ns for which cond holds.
func (sa *serverAgent) instanceOf(ns, owner, what string, cond func(*api.Instance) bool) *api.Instance {
	sa.t.Helper()
	var found *api.Instance
	eventually(sa.t, 60*time.Second, owner+": "+what, func() bool {
		list, _, err := sa.admin.Instances().List(context.Background(), ns)
		if err != nil {
			return false
		}
		for _, in := range list {
			if in.Spec.Owner.Name == owner && cond(in) {
				found = in
				return true
			}
		}
		return false
	})
	return found
}

func (sa *serverAgent) running(ns, owner string) *api.Instance {
	return sa.instanceOf(ns, owner, "running", func(in *api.Instance) bool { return in.Status.Phase == api.PhaseRunning })
}

// pullEvents are the messages of the Pull* events about instance name.
func (sa *serverAgent) pullEvents(ns, name string) []string {
	sa.t.Helper()
	evs, _, err := sa.admin.Events().List(context.Background(), ns)
	if err != nil {
		sa.t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		if ev.Object.Kind == api.KindInstance && ev.Object.Name == name && strings.HasPrefix(ev.Reason, "Pull") {
			out = append(out, ev.Reason+": "+ev.Message)
		}
	}
	return out
}

func policySpec(name string, policy api.PullPolicy) string {
	return fmt.Sprintf("kind: Service\nname: %s\nreplicas: 1\ntemplate:\n  image: demo/busybox:1\n  command: [sleep, 1d]\n  pullPolicy: %s\n", name, policy)
}

// TestAgentHonoursPullPolicy runs services of each pull policy on a
// `berth agent` whose store starts empty, the image on its server only:
// Never refuses to start while the node lacks the image, naming the
// policy; IfNotPresent pulls it once; Always asks the server again though
// the node has it (a Pulled event, nothing fetched); IfNotPresent and
// Never then use the node's copy without asking anyone.
func TestAgentHonoursPullPolicy(t *testing.T) {
	sa := startServerAgent(t, "127.0.0.46", "policies")

	sa.apply(policySpec("never", api.PullNever))
	failed := sa.instanceOf("default", "never", "failed for want of the image", func(in *api.Instance) bool {
		return strings.Contains(in.Status.Message, "pull policy is Never")
	})
	if !strings.Contains(failed.Status.Message, "not on node policies") {
		t.Errorf("never: message %q, want it to say the node lacks the image", failed.Status.Message)
	}
	if got := imageDigests(t, sa.agent); len(got) != 0 {
		t.Fatalf("the agent's store holds %v after a Never instance, want nothing pulled", got)
	}
	sa.ok("rm", "never")

	first := sa.running("default", sa.applyAndName("ifnp", api.PullIfNotPresent))
	eventually(t, 10*time.Second, "a Pulled event on "+first.Metadata.Name, func() bool {
		return hasEvent(sa.pullEvents("default", first.Metadata.Name), "Pulled: ")
	})

	always := sa.running("default", sa.applyAndName("always", api.PullAlways))
	eventually(t, 10*time.Second, "a Pulled event on "+always.Metadata.Name, func() bool {
		return hasEvent(sa.pullEvents("default", always.Metadata.Name), "0 B fetched")
	})

	for _, p := range []api.PullPolicy{api.PullIfNotPresent, api.PullNever} {
		name := "local-" + strings.ToLower(string(p))
		in := sa.running("default", sa.applyAndName(name, p))
		// The events of a pull are recorded before its instance runs.
		if evs := sa.pullEvents("default", in.Metadata.Name); len(evs) != 0 {
			t.Errorf("%s (%s) with the image on the node: pull events %q, want none", name, p, evs)
		}
	}
}

// applyAndName applies a service of policy and returns its name.
func (sa *serverAgent) applyAndName(name string, policy api.PullPolicy) string {
	sa.apply(policySpec(name, policy))
	return name
}

func hasEvent(evs []string, s string) bool {
	for _, e := range evs {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}
