package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/compose"
)

// composeFlags are the flags every compose subcommand shares.
type composeFlags struct {
	files    []string
	project  string
	profiles []string
}

// add defines the flags on cmd. Each subcommand has them itself (not
// inherited), so that `compose -f FILE up` and `compose up -f FILE` both
// work while logs keeps -f for --follow, as Compose's does.
func (f *composeFlags) add(cmd *cobra.Command) {
	if cmd.Flags().ShorthandLookup("f") == nil {
		cmd.Flags().StringArrayVarP(&f.files, "file", "f", nil, "Compose file (repeatable, merged in order; default compose.yaml, docker-compose.yml... in the current directory)")
	} else {
		cmd.Flags().StringArrayVar(&f.files, "file", nil, "Compose file (repeatable, merged in order; default compose.yaml, docker-compose.yml... in the current directory)")
	}
	cmd.Flags().StringVarP(&f.project, "project-name", "p", "", "project name (default: the file's name: key, else its directory's name)")
	cmd.Flags().StringArrayVar(&f.profiles, "profile", nil, "enable the services of a profile (repeatable)")
}

func newComposeCmd(g *globals) *cobra.Command {
	f := &composeFlags{}
	cmd := &cobra.Command{
		Use:   "compose",
		Short: "Run the applications of Compose files (docker-compose.yml)",
		Long: `Run the applications described in Compose files.

The project becomes a namespace (its name, made a DNS label; -n names
another). Every Compose service becomes a berth service, or a job when it
is a one-shot (restart: "no") that other services wait on with
service_completed_successfully. Inside the project, a service reaches
another by its Compose name (db), which resolves to that service's
address.

Every key berth does not carry out is listed, with its file and service,
before anything is applied, and nothing is applied; --ignore-unsupported
applies the rest and prints the list as warnings. berth builds no images:
a service with a build: section needs its image on the server already.`,
		Example: "  berth compose up -d\n  berth compose -f compose.yaml -f compose.prod.yaml up -d\n  berth compose ps\n  berth compose down",
	}
	f.add(cmd)
	cmd.AddCommand(
		newComposeUpCmd(g, f),
		newComposeDownCmd(g, f),
		newComposePsCmd(g, f),
		newComposeLogsCmd(g, f),
		newComposeConfigCmd(g, f),
		newComposePullCmd(g, f),
		newComposeRestartCmd(g, f),
		newComposeExecCmd(g, f),
	)
	for _, sub := range cmd.Commands() {
		f.add(sub)
	}
	return cmd
}

// load reads the project and translates it, in -n's namespace when given.
func (g *globals) loadCompose(ctx context.Context, f *composeFlags) (*compose.Plan, error) {
	p, err := compose.Load(ctx, compose.Options{Files: f.files, Name: f.project, Profiles: f.profiles, Env: os.Environ()})
	if err != nil {
		return nil, err
	}
	plan, err := compose.Translate(p)
	if err != nil {
		return nil, err
	}
	if g.namespace != "" {
		ns, err := g.ns()
		if err != nil {
			return nil, err
		}
		plan.Namespace = ns
		for _, u := range plan.Units {
			u.Object.GetMetadata().Namespace = ns
		}
	}
	return plan, nil
}

// projectScope is the namespace and project name a command acts on: from
// -p (with -n or the project's own namespace) without reading files, else
// from the files.
func (g *globals) projectScope(ctx context.Context, f *composeFlags) (ns, project string, plan *compose.Plan, err error) {
	if f.project != "" && len(f.files) == 0 {
		if _, statErr := defaultComposeFile(); statErr != nil {
			project = f.project
			ns = composeNamespace(project)
			if g.namespace != "" {
				if ns, err = g.ns(); err != nil {
					return "", "", nil, err
				}
			}
			return ns, project, nil, nil
		}
	}
	plan, err = g.loadCompose(ctx, f)
	if err != nil {
		return "", "", nil, err
	}
	return plan.Namespace, plan.Project, plan, nil
}

func composeNamespace(project string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, project), "-")
}

func defaultComposeFile() (string, error) {
	for _, n := range []string{"compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"} {
		if _, err := os.Stat(n); err == nil {
			return n, nil
		}
	}
	return "", os.ErrNotExist
}

type upOptions struct {
	detach            bool
	ignoreUnsupported bool
	removeOrphans     bool
	timeout           time.Duration
}

func newComposeUpCmd(g *globals, f *composeFlags) *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up [-d]",
		Short: "Create or update the project's services and jobs",
		Long: `Create or update the project's services and jobs, in the order of their
depends_on: a service is applied once what it depends on has started
(service_started), is healthy (service_healthy) or has completed
successfully (service_completed_successfully), as Compose waits. After
that, berth keeps them running.

Running up again after an edit changes only the services whose
translation changed (rolled out with their update settings). Without -d,
up then follows the output of every service until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, err := g.loadCompose(cmd.Context(), f)
			if err != nil {
				return err
			}
			if err := g.composeUp(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), plan, o); err != nil {
				return err
			}
			if o.detach {
				return nil
			}
			// Follow once every service has an instance to follow.
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, u := range plan.Units {
				if err := waitCondition(cmd.Context(), c, io.Discard, u, compose.ServiceStarted, o.timeout); err != nil {
					return err
				}
			}
			return g.composeLogs(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), plan.Namespace, unitObjects(plan, nil), true)
		},
	}
	cmd.Flags().BoolVarP(&o.detach, "detach", "d", false, "return once applied, without following output")
	cmd.Flags().BoolVar(&o.ignoreUnsupported, "ignore-unsupported", false, "apply what berth supports and warn about the rest")
	cmd.Flags().BoolVar(&o.removeOrphans, "remove-orphans", false, "remove the project's services and jobs the files no longer list")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for one dependency's condition")
	return cmd
}

// unsupportedError lists every key berth does not carry out.
type unsupportedError struct{ issues []compose.Issue }

func (e *unsupportedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d Compose key(s) berth does not support; nothing was applied (--ignore-unsupported applies the rest):", len(e.issues))
	wd, _ := os.Getwd()
	for _, i := range e.issues {
		if rel, err := filepath.Rel(wd, i.File); err == nil && !strings.HasPrefix(rel, "..") {
			i.File = rel
		}
		b.WriteString("\n  " + i.String())
	}
	return b.String()
}

func (e *unsupportedError) Unwrap() error { return errdefs.ErrInvalidArgument }

// composeUp applies a plan: every object checked by the server first
// (a dry run), so that one refusal applies nothing; then each in order,
// after waiting for what it depends on.
//
// Long because it brings units up in depends_on order, waiting on each
// condition and reporting as it goes, one loop.
func (g *globals) composeUp(ctx context.Context, out, errOut io.Writer, plan *compose.Plan, o upOptions) error {
	for _, n := range plan.Notes {
		fmt.Fprintln(errOut, "note:", n)
	}
	if len(plan.Unsupported) > 0 {
		if !o.ignoreUnsupported {
			return &unsupportedError{plan.Unsupported}
		}
		for _, i := range plan.Unsupported {
			fmt.Fprintln(errOut, "warning: unsupported, ignored:", i)
		}
	}
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	data, err := dataObjects(plan)
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range data {
		if _, err := c.ApplyWith(ctx, o, client.ApplyOptions{DryRun: true}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", api.RefOf(o), describeErr(err)))
		}
	}
	for _, u := range plan.Units {
		res, err := c.ApplyWith(ctx, u.Object, client.ApplyOptions{DryRun: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", u.Service, describeErr(err)))
			continue
		}
		if u.Build && !pinned(res.Object) {
			errs = append(errs, fmt.Errorf("service %q has a build: section: berth builds no images, and the server has no image %s and cannot pull it (build it elsewhere and push it: berth image push)", u.Service, imageOf(u.Object)))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("nothing was applied: %w", errors.Join(errs...))
	}
	for _, o := range data {
		res, err := c.ApplyWith(ctx, o, client.ApplyOptions{})
		if err != nil {
			return fmt.Errorf("%s: %w", api.RefOf(o), describeErr(err))
		}
		verb := "configured"
		if res.Created {
			verb = "created"
		}
		m := o.GetMetadata()
		fmt.Fprintf(out, "%s %s/%s %s\n", strings.ToLower(string(o.GetKind())), m.Namespace, m.Name, verb)
	}
	units := map[string]compose.Unit{}
	for _, u := range plan.Units {
		units[u.Service] = u
	}
	for _, u := range plan.Units {
		for _, d := range u.DependsOn {
			dep, ok := units[d.Service]
			if !ok {
				continue
			}
			if err := waitCondition(ctx, c, out, dep, d.Condition, o.timeout); err != nil {
				return fmt.Errorf("service %q waits for %q: %w", u.Service, d.Service, err)
			}
		}
		res, err := c.ApplyWith(ctx, u.Object, client.ApplyOptions{})
		if err != nil {
			return fmt.Errorf("service %q: %w", u.Service, describeErr(err))
		}
		verb := "configured"
		switch {
		case res.Created:
			verb = "created"
		case res.Unchanged:
			verb = "unchanged"
		}
		m := u.Object.GetMetadata()
		fmt.Fprintf(out, "%s %s/%s %s\n", strings.ToLower(string(u.Object.GetKind())), m.Namespace, m.Name, verb)
		printWarnings(errOut, res.Object)
	}
	return removeOrphans(ctx, c, out, errOut, plan, o.removeOrphans)
}

// dataObjects are the project's own secrets and configs with their
// values, read from their files where the Compose file names one.
func dataObjects(plan *compose.Plan) ([]api.Object, error) {
	var out []api.Object
	for _, d := range plan.Data {
		if d.External {
			continue
		}
		o := d.Object
		if d.File != "" {
			b, err := os.ReadFile(d.File)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", api.RefOf(o), err)
			}
			o = d.WithValue(b)
		}
		out = append(out, o)
	}
	return out, nil
}

// removeOrphans deals with what the project made that its files no longer
// list: warned about, as Compose does, or removed when asked.
func removeOrphans(ctx context.Context, c *client.Client, out, errOut io.Writer, plan *compose.Plan, remove bool) error {
	objs, err := projectObjects(ctx, c, plan.Namespace, plan.Project)
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, u := range plan.Units {
		listed[string(u.Object.GetKind())+"/"+u.Object.GetMetadata().Name] = true
	}
	for _, d := range plan.Data {
		listed[string(d.Object.GetKind())+"/"+d.Object.GetMetadata().Name] = true
	}
	for _, o := range objs {
		m := o.GetMetadata()
		if listed[string(o.GetKind())+"/"+m.Name] {
			continue
		}
		kind := strings.ToLower(string(o.GetKind()))
		if !remove {
			fmt.Fprintf(errOut, "warning: %s %s/%s is the project's but no longer in its files (--remove-orphans removes it)\n", kind, m.Namespace, m.Name)
			continue
		}
		if err := c.Delete(ctx, o.GetKind(), m.Namespace, m.Name, 0); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("%s/%s/%s: %w", kind, m.Namespace, m.Name, describeErr(err))
		}
		fmt.Fprintf(out, "%s %s/%s removed\n", kind, m.Namespace, m.Name)
	}
	return nil
}

// withPullPolicy is a copy of a service or job with pull policy p, unless
// it says Never.
func withPullPolicy(o api.Object, p api.PullPolicy) api.Object {
	switch x := o.(type) {
	case *api.Service:
		c := *x
		if c.Spec.Template.PullPolicy != api.PullNever {
			c.Spec.Template.PullPolicy = p
		}
		return &c
	case *api.Job:
		c := *x
		if c.Spec.Template.PullPolicy != api.PullNever {
			c.Spec.Template.PullPolicy = p
		}
		return &c
	}
	return o
}

func pinned(o api.Object) bool { return strings.Contains(imageOf(o), "@sha256:") }

func imageOf(o api.Object) string {
	switch x := o.(type) {
	case *api.Service:
		return x.Spec.Template.Image
	case *api.Job:
		return x.Spec.Template.Image
	}
	return ""
}

// waitCondition waits until dep meets a depends_on condition.
func waitCondition(ctx context.Context, c *client.Client, out io.Writer, dep compose.Unit, cond string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := dep.Object.GetMetadata()
	said := false
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := conditionMet(ctx, c, dep, cond)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("%s: not %s after %v", m.Name, strings.TrimPrefix(cond, "service_"), timeout)
		}
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if !said {
			fmt.Fprintf(out, "waiting for %s to be %s\n", m.Name, strings.TrimPrefix(cond, "service_"))
			said = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not %s after %v", m.Name, strings.TrimPrefix(cond, "service_"), timeout)
		case <-tick.C:
		}
	}
}

func conditionMet(ctx context.Context, c *client.Client, dep compose.Unit, cond string) (bool, error) {
	m := dep.Object.GetMetadata()
	switch dep.Object.(type) {
	case *api.Job:
		j, err := c.Jobs().Get(ctx, m.Namespace, m.Name)
		if err != nil {
			return false, describeErr(err)
		}
		switch j.Status.Phase {
		case api.JobSucceeded:
			return true, nil
		case api.JobFailed:
			return false, fmt.Errorf("job %s failed: %s (berth logs -n %s %s)", m.Name, j.Status.Message, m.Namespace, m.Name)
		}
		if cond != compose.ServiceCompletedSuccessfully {
			return j.Status.Active > 0, nil
		}
		return false, nil
	}
	s, err := c.Services().Get(ctx, m.Namespace, m.Name)
	if err != nil {
		return false, describeErr(err)
	}
	switch cond {
	case compose.ServiceHealthy:
		// The current template's instances, all of them healthy.
		return s.Status.UpdatedReplicas >= s.Spec.Replicas && s.Status.ReadyReplicas >= s.Spec.Replicas, nil
	case compose.ServiceCompletedSuccessfully:
		// A service (restart: "no" that nothing else made a job) has
		// completed when its instances have exited 0.
		insts, err := ownedInstances(ctx, c, m.Namespace, map[string]bool{m.Name: true})
		if err != nil {
			return false, err
		}
		ok := len(insts) > 0
		for _, in := range insts {
			if in.Status.Phase == api.PhaseFailed {
				return false, fmt.Errorf("%s exited %d", in.Metadata.Name, in.Status.ExitCode)
			}
			ok = ok && in.Status.Phase == api.PhaseSucceeded
		}
		return ok, nil
	}
	insts, err := ownedInstances(ctx, c, m.Namespace, map[string]bool{m.Name: true})
	if err != nil {
		return false, err
	}
	for _, in := range insts {
		if in.Status.Phase == api.PhaseRunning || in.Status.Phase == api.PhaseSucceeded {
			return true, nil
		}
	}
	return false, nil
}

// ownedInstances lists the instances in ns whose owner is one of owners.
func ownedInstances(ctx context.Context, c *client.Client, ns string, owners map[string]bool) ([]*api.Instance, error) {
	insts, _, err := c.Instances().List(ctx, ns)
	if err != nil {
		return nil, describeErr(err)
	}
	var out []*api.Instance
	for _, in := range insts {
		if owners[in.Spec.Owner.Name] {
			out = append(out, in)
		}
	}
	return out, nil
}

// projectObjects lists the services, jobs, secrets and configs a project
// made in ns (its workloads first, so that down removes what uses its
// data before the data).
func projectObjects(ctx context.Context, c *client.Client, ns, project string) ([]api.Object, error) {
	sel, err := api.ParseSelector(compose.ProjectLabel + "=" + composeNamespace(project))
	if err != nil {
		return nil, err
	}
	var out []api.Object
	for _, k := range []api.Kind{api.KindService, api.KindJob, api.KindSecret, api.KindConfig} {
		objs, err := listObjects(ctx, c, k, ns)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if sel.Matches(o.GetMetadata().Labels) {
				out = append(out, o)
			}
		}
	}
	return out, nil
}

func newComposeDownCmd(g *globals, f *composeFlags) *cobra.Command {
	var volumes bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove the project's services, jobs, secrets and configs, and wait for their containers to go",
		Long: `Remove every service, job, secret and config the project made (those labelled
compose.berth/project=PROJECT in its namespace, whether or not the file
still lists them), and wait until their instances are gone. With
--volumes, also the named volumes the file declares (not external ones).
Bind-mounted host directories are left alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ns, project, plan, err := g.projectScope(ctx, f)
			if err != nil {
				return err
			}
			if volumes && plan == nil {
				return fmt.Errorf("--volumes needs the Compose file, to know which volumes the project owns (and which are external)")
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			objs, err := projectObjects(ctx, c, ns, project)
			if err != nil {
				return err
			}
			owners := map[string]bool{}
			for _, o := range objs {
				m := o.GetMetadata()
				if err := c.Delete(ctx, o.GetKind(), m.Namespace, m.Name, 0); err != nil && !errdefs.IsNotFound(err) {
					return fmt.Errorf("%s: %w", api.RefOf(o), describeErr(err))
				}
				if k := o.GetKind(); k == api.KindService || k == api.KindJob {
					owners[m.Name] = true
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s/%s removed\n", strings.ToLower(string(o.GetKind())), m.Namespace, m.Name)
			}
			wctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			for {
				left, err := ownedInstances(wctx, c, ns, owners)
				if err != nil {
					return err
				}
				if len(left) == 0 {
					break
				}
				select {
				case <-wctx.Done():
					return fmt.Errorf("%d instance(s) of project %s still there after %v", len(left), project, timeout)
				case <-time.After(200 * time.Millisecond):
				}
			}
			if !volumes {
				return nil
			}
			// The project's own named volumes, never its external ones.
			for _, v := range plan.Volumes {
				err := c.Volumes().Delete(ctx, ns, v, 0)
				switch {
				case errdefs.IsNotFound(err):
					continue
				case err != nil:
					return fmt.Errorf("volume %s/%s: %w", ns, v, describeErr(err))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "volume %s/%s removed\n", ns, v)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&volumes, "volumes", "v", false, "also remove the project's named volumes")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the instances to go")
	return cmd
}

func newComposePsCmd(g *globals, f *composeFlags) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List the project's instances",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ns, project, _, err := g.projectScope(ctx, f)
			if err != nil {
				return err
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			objs, err := projectObjects(ctx, c, ns, project)
			if err != nil {
				return err
			}
			owners := map[string]bool{}
			svcOf := map[string]string{}
			for _, o := range objs {
				m := o.GetMetadata()
				owners[m.Name] = true
				svcOf[m.Name] = m.Labels[compose.ServiceLabel]
			}
			insts, err := ownedInstances(ctx, c, ns, owners)
			if err != nil {
				return err
			}
			var shown []api.Object
			for _, in := range insts {
				p := in.Status.Phase
				if all || (p != api.PhaseSucceeded && p != api.PhaseFailed && p != api.PhaseLost) {
					shown = append(shown, in)
				}
			}
			if g.output != "" && g.output != "table" {
				return printObjects(cmd.OutOrStdout(), g.output, shown, false)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSERVICE\tPHASE\tHEALTHY\tNODE\tIP\tRESTARTS")
			for _, o := range shown {
				in := o.(*api.Instance)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", in.Metadata.Name, dash(svcOf[in.Spec.Owner.Name]), phaseColumn(in), healthyColumn(in), dash(in.Spec.Node), dash(in.Status.IP), in.Status.Restarts)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show finished instances too")
	return cmd
}

// unitObjects names the plan's objects, of the given Compose services
// only when any are given.
func unitObjects(plan *compose.Plan, services []string) []string {
	var out []string
	for _, u := range plan.Units {
		if len(services) == 0 || slices.Contains(services, u.Service) {
			out = append(out, u.Object.GetMetadata().Name)
		}
	}
	return out
}

// objectsOf maps Compose service names to object names, refusing ones
// the project does not have.
func objectsOf(plan *compose.Plan, services []string) ([]string, error) {
	names := unitObjects(plan, services)
	if len(services) > 0 {
		have := map[string]bool{}
		for _, u := range plan.Units {
			have[u.Service] = true
		}
		for _, s := range services {
			if !have[s] {
				return nil, fmt.Errorf("project %s has no service %q (services: %s)", plan.Project, s, strings.Join(slices.Sorted(maps.Keys(have)), ", "))
			}
		}
	}
	return names, nil
}

func newComposeLogsCmd(g *globals, f *composeFlags) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] [SERVICE...]",
		Short: "Print the output of the project's services, each line prefixed with its instance",
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := g.loadCompose(cmd.Context(), f)
			if err != nil {
				return err
			}
			names, err := objectsOf(plan, args)
			if err != nil {
				return err
			}
			return g.composeLogs(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), plan.Namespace, names, follow)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing output as it comes")
	return cmd
}

// composeLogs prints the output of the named services' and jobs'
// instances, through berth logs.
func (g *globals) composeLogs(ctx context.Context, out, errOut io.Writer, ns string, names []string, follow bool) error {
	gl := *g
	gl.namespace = ns
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Go(func() {
			cmd := newLogsCmd(&gl)
			cmd.SetContext(ctx)
			cmd.SetOut(&prefixWriter{w: out, mu: &mu, prefix: n + " | "})
			cmd.SetErr(&prefixWriter{w: errOut, mu: &mu, prefix: n + " | "})
			if follow {
				if err := cmd.Flags().Set("follow", "true"); err != nil {
					errs[i] = err
					return
				}
			}
			errs[i] = cmd.RunE(cmd, []string{n})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func newComposeConfigCmd(g *globals, f *composeFlags) *cobra.Command {
	var services, berthObjects bool
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the project's normalised Compose model, or the berth objects it becomes (--berth)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := compose.Load(cmd.Context(), compose.Options{Files: f.files, Name: f.project, Profiles: f.profiles, Env: os.Environ()})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if services {
				for _, n := range slices.Sorted(maps.Keys(p.Services)) {
					fmt.Fprintln(out, n)
				}
				return nil
			}
			if berthObjects {
				plan, err := g.loadCompose(cmd.Context(), f)
				if err != nil {
					return err
				}
				for i, u := range plan.Units {
					b, err := api.MarshalSpec(u.Object)
					if err != nil {
						return err
					}
					if i > 0 {
						fmt.Fprintln(out, "---")
					}
					out.Write(b)
				}
				for _, i := range plan.Unsupported {
					fmt.Fprintln(cmd.ErrOrStderr(), "unsupported:", i)
				}
				return nil
			}
			b, err := p.MarshalYAML()
			if err != nil {
				return err
			}
			_, err = out.Write(b)
			return err
		},
	}
	cmd.Flags().BoolVar(&services, "services", false, "print the service names only")
	cmd.Flags().BoolVar(&berthObjects, "berth", false, "print the berth services and jobs the project becomes")
	return cmd
}

func newComposePullCmd(g *globals, f *composeFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "pull",
		Short: "Have the server fetch every image of the project",
		Long: `Have the server fetch the current image of every service from its
registry (as pull_policy: always would, unless the service says never),
and list each with the digest it pins to. An image built or imported on
the server (a name without a registry host) is used as it is; one the
server has not and cannot fetch is listed as missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			plan, err := g.loadCompose(ctx, f)
			if err != nil {
				return err
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			missing := 0
			for _, u := range plan.Units {
				// A dry run pins the image, fetching it as the policy says.
				obj := withPullPolicy(u.Object, api.PullAlways)
				res, err := c.ApplyWith(ctx, obj, client.ApplyOptions{DryRun: true})
				if err != nil {
					return fmt.Errorf("service %q: %w", u.Service, describeErr(err))
				}
				img := imageOf(res.Object)
				state := "present"
				if !pinned(res.Object) {
					state = "missing"
					missing++
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", u.Service, img, state)
			}
			if missing > 0 {
				return fmt.Errorf("%d image(s) missing on the server", missing)
			}
			return nil
		},
	}
}

func newComposeRestartCmd(g *globals, f *composeFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "restart [SERVICE...]",
		Short: "Restart the project's services (a rollout of new instances)",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			plan, err := g.loadCompose(ctx, f)
			if err != nil {
				return err
			}
			if _, err := objectsOf(plan, args); err != nil {
				return err
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			for _, u := range plan.Units {
				if len(args) > 0 && !slices.Contains(args, u.Service) {
					continue
				}
				if _, ok := u.Object.(*api.Service); !ok {
					continue
				}
				m := u.Object.GetMetadata()
				if _, err := c.Services().Restart(ctx, m.Namespace, m.Name); err != nil {
					return fmt.Errorf("service %q: %w", u.Service, describeErr(err))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service %s/%s restarted\n", m.Namespace, m.Name)
			}
			return nil
		},
	}
}

func newComposeExecCmd(g *globals, f *composeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec SERVICE COMMAND [ARG...]",
		Short: "Run a command in a running instance of a service (as berth exec)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := g.loadCompose(cmd.Context(), f)
			if err != nil {
				return err
			}
			names, err := objectsOf(plan, args[:1])
			if err != nil {
				return err
			}
			gl := *g
			gl.namespace = plan.Namespace
			ex := newExecCmd(&gl)
			ex.SetContext(cmd.Context())
			ex.SetIn(cmd.InOrStdin())
			ex.SetOut(cmd.OutOrStdout())
			ex.SetErr(cmd.ErrOrStderr())
			return ex.RunE(ex, append([]string{names[0]}, args[1:]...))
		},
	}
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// composeFiles splits apply's files into Compose files and spec files.
func composeFiles(files []string) (composeOnes, specs []string) {
	for _, f := range files {
		if f == "-" {
			specs = append(specs, f)
			continue
		}
		data, err := os.ReadFile(f)
		if err == nil && compose.LooksLikeCompose(filepath.Base(f), data) {
			composeOnes = append(composeOnes, f)
		} else {
			specs = append(specs, f)
		}
	}
	return composeOnes, specs
}

// composeArgs rewrites the flags given between "compose" and its
// subcommand (berth compose -f a.yaml -p shop logs -f) into their long
// forms after it, so that a subcommand's own -f (logs --follow) cannot
// take a file's flag, as with Compose. Other arguments stay as they are.
func composeArgs(root *cobra.Command, args []string) []string {
	i := commandAt(root, args)
	if i < 0 || args[i] != "compose" {
		return args
	}
	long := map[string]string{"-f": "--file", "--file": "--file", "-p": "--project-name", "--project-name": "--project-name", "--profile": "--profile"}
	var moved, kept []string
	j := i + 1
	for ; j < len(args); j++ {
		a := args[j]
		if name, val, ok := strings.Cut(a, "="); ok && long[name] != "" {
			moved = append(moved, long[name]+"="+val)
			continue
		}
		if l := long[a]; l != "" && j+1 < len(args) {
			moved = append(moved, l+"="+args[j+1])
			j++
			continue
		}
		// berth's global flags, and their values, stay where they are.
		if global, value := rootFlag(root, a); global && value && j+1 < len(args) {
			kept = append(kept, a, args[j+1])
			j++
			continue
		}
		if strings.HasPrefix(a, "-") {
			kept = append(kept, a)
			continue
		}
		break
	}
	if j >= len(args) || len(moved) == 0 {
		return args
	}
	var out []string
	out = append(out, args[:i+1]...)
	out = append(out, kept...)
	out = append(out, args[j])
	out = append(out, moved...)
	return append(out, args[j+1:]...)
}
