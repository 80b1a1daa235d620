package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Follow, list and undo a service's template changes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return fmt.Errorf("want a subcommand: status, history or undo")
		},
	}
	cmd.AddCommand(newRolloutStatusCmd(g), newRolloutHistoryCmd(g), newRolloutUndoCmd(g))
	return cmd
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status SERVICE",
		Short: "Wait for a service's rollout to finish; exit non-zero if it fails or is rolled back",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, ns, name, err := g.clientFor(ctx, args[0], api.KindService)
			if err != nil {
				return err
			}
			return waitRollout(ctx, c, ns, name, cmd.OutOrStdout(), timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait before giving up (exit 1)")
	return cmd
}

// waitRollout follows the service until the rollout of its current
// template is over.
func waitRollout(ctx context.Context, c *client.Client, ns, name string, out io.Writer, timeout time.Duration) error {
	last := ""
	for {
		svc, err := c.Services().Get(ctx, ns, name)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("service %q: rollout not finished after %v: %s", name, timeout, last)
			}
			return describeErr(err)
		}
		done, err := rolloutDone(svc)
		if msg := rolloutLine(svc); msg != last {
			fmt.Fprintln(out, msg)
			last = msg
		}
		if done || err != nil {
			return err
		}
		if err := waitChange(ctx, c, ns, name, svc.Metadata.Revision); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("service %q: rollout not finished after %v: %s", name, timeout, last)
			}
			return err
		}
	}
}

// waitChange returns once the service has changed after revision rev, or
// the watch broke (the caller looks again either way).
func waitChange(ctx context.Context, c *client.Client, ns, name string, rev int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.Services().Watch(ctx, ns, rev)
	if err != nil {
		return err
	}
	for ev := range events {
		if ev.Err != nil || (ev.Object != nil && ev.Object.Metadata.Name == name) {
			return nil
		}
	}
	return nil
}

// rolloutDone says whether the rollout of svc's current template is over,
// with an error when it failed.
func rolloutDone(svc *api.Service) (bool, error) {
	ro := svc.Status.Rollout
	switch {
	case ro.Phase == api.RolloutRolledBack:
		return true, fmt.Errorf("service %q: rollout failed and was rolled back: %s", svc.Metadata.Name, ro.Message)
	case ro.Hash != svc.TemplateHash():
		return false, nil // the controller has not seen this template yet
	case ro.Phase == api.RolloutFailed:
		return true, fmt.Errorf("service %q: rollout of revision %d failed: %s", svc.Metadata.Name, ro.Revision, ro.Message)
	case ro.Phase == api.RolloutComplete:
		return true, nil
	}
	return false, nil
}

func rolloutLine(svc *api.Service) string {
	st := svc.Status
	phase := st.Rollout.Phase
	if phase == "" || st.Rollout.Hash != svc.TemplateHash() && phase != api.RolloutRolledBack {
		phase = api.RolloutProgressing
	}
	return fmt.Sprintf("service %s revision %d: %s, %d updated, %d ready of %d", svc.Metadata.Name, st.Rollout.Revision,
		phase, st.UpdatedReplicas, st.ReadyReplicas, svc.Spec.Replicas)
}

func newRolloutHistoryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "history SERVICE",
		Short: "List the service's last templates, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			ns, name, err := g.refOf(args[0], api.KindService)
			if err != nil {
				return err
			}
			svc, err := c.Services().Get(cmd.Context(), ns, name)
			if err != nil {
				return describeErr(err)
			}
			if g.output == "json" || g.output == "yaml" {
				return printOut(cmd.OutOrStdout(), g.output, svc.Status.History, nil)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			defer tw.Flush()
			fmt.Fprintln(tw, "REVISION\tHASH\tIMAGE\tCOMMAND\tCREATED")
			for _, h := range svc.Status.History {
				rev := fmt.Sprint(h.Revision)
				if h.Hash == svc.TemplateHash() {
					rev += " (current)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", rev, h.Hash, imageColumn(h.Template.Image, false),
					dash(fmt.Sprint(append(h.Template.Command, h.Template.Args...))), age(h.CreatedAt))
			}
			return nil
		},
	}
}

func newRolloutUndoCmd(g *globals) *cobra.Command {
	var to int
	cmd := &cobra.Command{
		Use:   "undo SERVICE",
		Short: "Put the service's previous template back (or revision --to-revision)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, ns, name, err := g.clientFor(ctx, args[0], api.KindService)
			if err != nil {
				return err
			}
			for try := 0; ; try++ {
				svc, err := c.Services().Get(ctx, ns, name)
				if err != nil {
					return describeErr(err)
				}
				target, err := undoTarget(svc, to)
				if err != nil {
					return err
				}
				svc.Spec.Template = target.Template
				// Applied at the revision read, so a change meanwhile is not
				// overwritten; the controller's status writes move the
				// revision too, so a conflict reads and decides again.
				_, err = c.Services().Apply(ctx, svc)
				if errdefs.IsConflict(err) && try < 5 {
					continue
				}
				if err != nil {
					return describeErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service/%s rolled back to revision %d\n", name, target.Revision)
				return nil
			}
		},
	}
	cmd.Flags().IntVar(&to, "to-revision", 0, "the revision to put back (default: the one before the current)")
	return cmd
}

// undoTarget picks the history entry an undo puts back.
func undoTarget(svc *api.Service, to int) (api.TemplateRevision, error) {
	t, err := svc.RollbackTarget(to)
	if err != nil && to != 0 {
		return t, fmt.Errorf("--to-revision %d: %w (see berth rollout history %s)", to, err, svc.Metadata.Name)
	}
	return t, err
}
