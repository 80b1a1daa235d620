package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// runOptions are berth run's flags.
type runOptions struct {
	name, memory, restart string
	pull                  string
	replicas              int
	env, ports, labels    []string
	cpus                  float64
	pids                  int64
	noWait                bool
	timeout               time.Duration
}

func newRunCmd(g *globals) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Run an image as a service (one replica unless --replicas)",
		Example: `  berth run --name web --replicas 3 demo/busybox:1 httpd -f -p 80 -h /www
  berth run -e GREETING=hi --memory 64Mi demo/busybox:1 sh -c 'echo $GREETING; sleep 1d'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, err := g.ns()
			if err != nil {
				return err
			}
			svc, err := o.service(ns, args[0], afterDash(args[1:]))
			if err != nil {
				return err
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			return runService(cmd, c, svc, &o)
		},
	}
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "service name (default: from the image)")
	f.IntVarP(&o.replicas, "replicas", "r", 1, "number of instances")
	f.StringArrayVarP(&o.env, "env", "e", nil, "environment variable KEY=VALUE")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "label KEY=VALUE on the service (see get -l)")
	f.Float64Var(&o.cpus, "cpus", 0, "CPU cores per instance, e.g. 0.5")
	f.StringVarP(&o.memory, "memory", "m", "", "memory per instance, e.g. 64Mi")
	f.Int64Var(&o.pids, "pids", 0, "process limit per instance")
	f.StringArrayVarP(&o.ports, "port", "p", nil, "port of the service: CONTAINERPORT exposes it on the service's address only (not a random host port, as container run -p);\n"+
		"HOSTPORT:CONTAINERPORT also publishes it on every address of its nodes; /tcp (default) or /udp")
	f.StringVar(&o.restart, "restart", "", "restart policy: always (default), on-failure or never")
	f.StringVar(&o.pull, "pull", "", "fetch the image from its registry: missing (default; always for :latest), always or never")
	f.BoolVar(&o.noWait, "no-wait", false, "return once the service is stored, without waiting for it to run")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the instances to run")
	return cmd
}

// service is the service o asks for: image running command in namespace ns.
func (o *runOptions) service(ns, image string, command []string) (*api.Service, error) {
	svc := api.RunService(o.name, image, command)
	svc.Metadata.Namespace = ns
	for _, kv := range o.labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE", kv)
		}
		if svc.Metadata.Labels == nil {
			svc.Metadata.Labels = map[string]string{}
		}
		svc.Metadata.Labels[k] = v
	}
	svc.Spec.Replicas = o.replicas
	t := &svc.Spec.Template
	t.Restart = api.RestartPolicy(o.restart)
	policy, err := pullPolicyFlag(o.pull)
	if err != nil {
		return nil, err
	}
	t.PullPolicy = policy
	t.Resources.CPU, t.Resources.Pids = o.cpus, o.pids
	if o.memory != "" {
		q, err := api.ParseQuantity(o.memory)
		if err != nil {
			return nil, fmt.Errorf("--memory: %w", err)
		}
		t.Resources.Memory = q
	}
	for _, kv := range o.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want KEY=VALUE", kv)
		}
		if t.Env == nil {
			t.Env = map[string]string{}
		}
		t.Env[k] = v
	}
	for _, p := range o.ports {
		port, err := servicePort(p)
		if err != nil {
			return nil, err
		}
		t.Ports = append(t.Ports, port)
	}
	return svc, nil
}

// runService stores svc, which must not exist yet, and unless o says not
// to, waits for its instances to run; one that cannot start at all is
// removed again.
func runService(cmd *cobra.Command, c *client.Client, svc *api.Service, o *runOptions) error {
	ctx := cmd.Context()
	wait := !o.noWait && o.replicas > 0
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	// The existence check and the watch are independent round trips: do them at once.
	exists := make(chan error, 1)
	go func() {
		_, err := c.Services().Get(ctx, svc.Metadata.Namespace, svc.Metadata.Name)
		exists <- err
	}()
	var events <-chan client.WatchEvent[*api.Instance]
	if wait {
		// Watching from now, before the service exists, misses none of
		// its instances and starts in step with the store (no catch-up).
		var err error
		if events, err = c.Instances().Watch(wctx, svc.Metadata.Namespace, 0); err != nil {
			return err
		}
	}
	if err := <-exists; err == nil {
		return fmt.Errorf("service %q already exists in namespace %q: change it with 'berth apply' or 'berth scale', or pick another --name", svc.Metadata.Name, svc.Metadata.Namespace)
	}
	stored, err := c.Services().Apply(ctx, svc)
	if err != nil {
		return describeErr(err)
	}
	printWarnings(cmd.ErrOrStderr(), stored)
	if wait {
		if err := waitRunning(wctx, events, stored.Metadata.Name, o.replicas); err != nil {
			// One that cannot start at all (no such image, say) is
			// not left behind, as docker run leaves no container.
			if errors.Is(err, errCannotStart) {
				if derr := c.Services().Delete(ctx, stored.Metadata.Namespace, stored.Metadata.Name, 0); derr != nil {
					return fmt.Errorf("service %q: %w (and removing it: %w)", stored.Metadata.Name, err, derr)
				}
				return fmt.Errorf("service %q: %w; the service was removed", stored.Metadata.Name, err)
			}
			// Anything else may pass (a node or registry briefly out of
			// reach): the service stays, its instances trying again.
			return fmt.Errorf("service %q: %w; the service is kept (see 'berth describe %s'; 'berth rm %s' removes it)",
				stored.Metadata.Name, err, stored.Metadata.Name, stored.Metadata.Name)
		}
	}
	fmt.Fprintln(cmd.OutOrStdout(), stored.Metadata.Name)
	return nil
}

// errCannotStart says an instance failed to start at all.
var errCannotStart = errors.New("cannot start")

// waitRunning follows a service's instances until n of them run.
func waitRunning(ctx context.Context, events <-chan client.WatchEvent[*api.Instance], svc string, n int) error {
	phase := map[string]*api.Instance{}
	count := func() (running int, failed *api.Instance) {
		for _, in := range phase {
			switch in.Status.Phase {
			case api.PhaseRunning, api.PhaseSucceeded:
				// Succeeded ran to its end under a policy that keeps it so.
				running++
			case api.PhaseFailed:
				failed = in
			}
		}
		return running, failed
	}
	for ev := range events {
		if ev.Err != nil {
			return ev.Err
		}
		in := ev.Object
		if in.Spec.Owner.Kind != api.KindService || in.Spec.Owner.Name != svc {
			continue
		}
		if ev.Type == "Deleted" {
			delete(phase, in.Metadata.Name)
		} else {
			phase[in.Metadata.Name] = in
		}
		r, failed := count()
		if r >= n {
			return nil
		}
		if failed != nil {
			why := failed.Status.Message
			if why == "" {
				why = fmt.Sprintf("exited with code %d and is not restarted (see berth logs %s)", failed.Status.ExitCode, failed.Metadata.Name)
			}
			return fmt.Errorf("instance %s failed: %s", failed.Metadata.Name, why)
		}
		// A start error is a problem with the image or the command: retries
		// will not mend it. A start backing off (api.ReasonStartBackOff)
		// failed for a cause that may pass: waited on.
		if in.Status.Reason == api.ReasonStartError {
			return fmt.Errorf("instance %s %w: %s", in.Metadata.Name, errCannotStart, in.Status.Message)
		}
	}
	if ctx.Err() != nil {
		msg := ""
		for _, in := range phase {
			if in.Status.Message != "" {
				msg = ": " + in.Metadata.Name + ": " + in.Status.Message
			}
		}
		return fmt.Errorf("not running after waiting%s", msg)
	}
	return fmt.Errorf("watch ended before the instances ran")
}
