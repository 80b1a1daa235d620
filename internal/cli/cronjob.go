package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newCronJobCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "cronjob",
		Aliases: []string{"cronjobs", "cj"},
		Short:   "Start runs of cron jobs",
		Long: `Cron jobs run a Job on a schedule (kind: CronJob in a spec file):

  kind: CronJob
  name: nightly
  schedule: "0 2 * * *"       # cron syntax, or @hourly, @daily...
  timeZone: Europe/Paris      # UTC when left out
  concurrency: forbid         # allow (default) | forbid | replace
  startingDeadline: 10m       # a run missed by more is skipped
  successfulHistory: 3
  failedHistory: 1
  job: {completions: 1, template: {image: demo/busybox:1, command: [true]}}

A run missed while the control plane was down starts once on its return
if within the starting deadline; missed runs never start in a burst.
"berth get cronjobs" lists them, "berth get jobs -l berth.cronjob=NAME"
their runs.`,
		Example: `  berth cronjob trigger nightly`,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "trigger NAME",
		Short: "Start a run of a cron job now, as a job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := g.refOf(args[0], api.KindCronJob)
			if err != nil {
				return err
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			job, err := c.CronJobs().Trigger(cmd.Context(), ns, name)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job/%s created\n", job.Metadata.Name)
			return nil
		},
	})
	return cmd
}
