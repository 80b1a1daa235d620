package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/compose"
)

func newApplyCmd(g *globals) *cobra.Command {
	var files []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update services and jobs from YAML spec files",
		Long: `Create or update the services and jobs described in YAML spec files.

A file may hold several documents separated by "---". Every document is
checked before anything is stored: one invalid document stores nothing.
A Compose file (compose.yaml, docker-compose.yml, or any file with a
top-level services: and no kind:) is applied as 'berth compose -f FILE up -d'
does: into its project's namespace, in depends_on order, every key berth
does not support refused by name first. What 'berth get -o yaml' or '-o json' prints applies again as it is; a
service or job whose spec and labels are as stored is left unchanged.

Documents that name no namespace go into -n's ("default" unless given);
with -n, a document naming another namespace is refused.

An image given by tag is stored pinned to the digest the server's image
store has for that tag (REPOSITORY:TAG@sha256:...), so every node runs the
same image. To roll a service out to a new image under the same tag, build
or push it to the server and apply the spec again; applying it again while
the tag is unchanged changes nothing. A tag the server does not have is
kept as given, for nodes that have the image themselves.

With --dry-run, the server checks everything as for a real apply and
stores nothing; what would change is shown as a diff (see berth diff).`,
		Example: "  berth apply -f examples/web.yaml\n  cat specs.yaml | berth apply -f -\n  berth apply --dry-run -f web.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, plan, err := g.applyInputs(cmd.Context(), files, dryRun)
			if err != nil {
				return err
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			if plan != nil {
				if err := g.composeUp(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), plan, upOptions{detach: true, timeout: 5 * time.Minute}); err != nil {
					return err
				}
			}
			return applyObjects(cmd, c, objs, dryRun)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "spec file (repeatable; - for standard input)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check and show what would change, storing nothing")
	return cmd
}

func newDiffCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "diff -f FILE",
		Short: "Show what applying spec files would change",
		Long: `Show what 'berth apply -f FILE' would change: a unified diff, per object,
of its stored spec and labels against what the server would store (the
server checks and pins images as for an apply, and stores nothing).

Exits 0 when nothing would change, 1 when something would, and 2 on an error.`,
		Example: "  berth diff -f examples/web.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := g.readSpecs(files)
			if err != nil {
				return &codedError{code: 2, err: err}
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return &codedError{code: 2, err: err}
			}
			differ := false
			for _, o := range objs {
				changed, err := diffObject(cmd.Context(), c, cmd.OutOrStdout(), o)
				if err != nil {
					return &codedError{code: 2, err: err}
				}
				differ = differ || changed != "unchanged"
			}
			if differ {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "spec file (repeatable; - for standard input)")
	return cmd
}

// readSpecs reads and checks spec files, in -n's namespace.
func (g *globals) readSpecs(files []string) ([]api.Object, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("no spec file: give one with -f FILE (or -f - for standard input)")
	}
	ns, err := g.ns()
	if err != nil {
		return nil, err
	}
	var objs []api.Object
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(io.LimitReader(os.Stdin, 8<<20))
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		parsed, err := api.ParseSpecsIn(f, data, ns)
		if err != nil {
			return nil, err
		}
		for _, o := range parsed {
			if m := o.GetMetadata(); g.namespace != "" && m.Namespace != g.namespace {
				return nil, fmt.Errorf("%s: %s is in namespace %q, but --namespace says %q", f, api.RefOf(o), m.Namespace, g.namespace)
			}
		}
		objs = append(objs, parsed...)
	}
	return objs, nil
}

// diffObject prints what applying o would change, as a unified diff of
// the spec file shapes, and says "created", "configured" or "unchanged".
func diffObject(ctx context.Context, c *client.Client, w io.Writer, o api.Object) (string, error) {
	m := o.GetMetadata()
	ref := objRef{kind: o.GetKind(), name: m.Name}
	stored, err := getObject(ctx, c, o.GetKind(), m.Namespace, m.Name)
	if err != nil && !errdefs.IsNotFound(err) {
		return "", err
	}
	res, err := c.ApplyWith(ctx, o, client.ApplyOptions{DryRun: true})
	if err != nil {
		return "", describeErr(err)
	}
	if res.Unchanged {
		return "unchanged", nil
	}
	after, err := api.MarshalSpec(res.Object)
	if err != nil {
		return "", err
	}
	var before []byte
	from, verb := "/dev/null", "created"
	if stored != nil {
		if before, err = api.MarshalSpec(stored); err != nil {
			return "", err
		}
		from, verb = ref.String()+" (stored)", "configured"
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(before)), B: difflib.SplitLines(string(after)),
		FromFile: from, ToFile: ref.String() + " (applied)", Context: 3,
	})
	if err != nil {
		return "", err
	}
	if d == "" {
		return "unchanged", nil
	}
	_, err = io.WriteString(w, d)
	return verb, err
}

// printWarnings prints what is valid about o but likely unmeant.
func printWarnings(w io.Writer, o api.Object) {
	for _, s := range api.Warnings(o) {
		fmt.Fprintln(w, "warning:", s)
	}
}

// codedError is an error reported with a particular exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// applyInputs reads the spec files and the Compose files among files:
// the objects to apply, and the Compose plan to bring up (with dryRun,
// its objects join the others instead, to be diffed).
func (g *globals) applyInputs(ctx context.Context, files []string, dryRun bool) ([]api.Object, *compose.Plan, error) {
	composeOnes, specFiles := composeFiles(files)
	var objs []api.Object
	if len(specFiles) > 0 || len(composeOnes) == 0 {
		var err error
		if objs, err = g.readSpecs(specFiles); err != nil {
			return nil, nil, err
		}
	}
	if len(composeOnes) == 0 {
		return objs, nil, nil
	}
	plan, err := g.loadCompose(ctx, &composeFlags{files: composeOnes})
	if err != nil || !dryRun {
		return objs, plan, err
	}
	data, err := dataObjects(plan)
	if err != nil {
		return nil, nil, err
	}
	objs = append(objs, data...)
	for _, u := range plan.Units {
		objs = append(objs, u.Object)
	}
	if len(plan.Unsupported) > 0 {
		return nil, nil, &unsupportedError{plan.Unsupported}
	}
	return objs, nil, nil
}

// applyObjects applies objs in order, or with dryRun shows what each
// would change, and says what became of each.
func applyObjects(cmd *cobra.Command, c *client.Client, objs []api.Object, dryRun bool) error {
	out := cmd.OutOrStdout()
	for _, o := range objs {
		ref := objRef{kind: o.GetKind(), name: o.GetMetadata().Name}
		if dryRun {
			changed, err := diffObject(cmd.Context(), c, out, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s %s (dry run)\n", ref, changed)
			printWarnings(cmd.ErrOrStderr(), o)
			continue
		}
		res, err := c.ApplyWith(cmd.Context(), o, client.ApplyOptions{})
		if err != nil {
			return describeErr(err)
		}
		verb := "configured"
		switch {
		case res.Created:
			verb = "created"
		case res.Unchanged:
			verb = "unchanged"
		}
		fmt.Fprintf(out, "%s %s\n", ref, verb)
		printWarnings(cmd.ErrOrStderr(), res.Object)
		for _, w := range res.Warnings {
			fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
		}
	}
	return nil
}
