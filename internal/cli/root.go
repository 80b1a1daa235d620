// Package cli implements the berth command line, one file per command group.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// globals holds the flags every command shares.
type globals struct {
	dataDir string
	output  string
	server  string
	token   string
	caFile  string
	// namespace is -n: the namespace of named objects and lists;
	// allNamespaces is a list command's -A.
	namespace     string
	allNamespaces bool
}

// Run executes the command line and returns the process exit code.
func Run(ctx context.Context, args []string) int {
	g := &globals{}
	root := &cobra.Command{
		Use:   "berth",
		Short: "berth runs containers, services and jobs on one machine or many",
		Long: `berth is a container orchestrator in one binary.

It runs real Linux containers from OCI images, keeps services at their
replica count, runs batch jobs in parallel shards, and scales from one
machine to many.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", envOr("BERTH_DATA_DIR", "/var/lib/berth"), "directory for images, containers and state (env BERTH_DATA_DIR)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "", "output format: table (default), wide, json or yaml")
	root.PersistentFlags().StringVar(&g.server, "server", os.Getenv("BERTH_SERVER"), "API endpoint (default unix://<data-dir>/berth.sock; env BERTH_SERVER)")
	root.PersistentFlags().StringVar(&g.token, "token", os.Getenv("BERTH_TOKEN"), "bearer token for an https:// server (env BERTH_TOKEN)")
	root.PersistentFlags().StringVarP(&g.namespace, "namespace", "n", os.Getenv("BERTH_NAMESPACE"), "namespace of the objects named (default \"default\"; env BERTH_NAMESPACE)")
	root.PersistentFlags().StringVar(&g.caFile, "ca-file", os.Getenv("BERTH_CA_FILE"), "certificate to trust for an https:// server (env BERTH_CA_FILE)")

	root.AddCommand(
		newUpCmd(g),
		newServerCmd(g),
		newAgentCmd(g),
		newRunCmd(g),
		newApplyCmd(g),
		newComposeCmd(g),
		newDiffCmd(g),
		newDescribeCmd(g),
		newDownCmd(g),
		newGetCmd(g),
		newVersionCmd(g),
		newPsCmd(g),
		newScaleCmd(g),
		newRestartCmd(g),
		newRolloutCmd(g),
		newLogsCmd(g),
		newExecCmd(g),
		newAttachCmd(g),
		newCpCmd(g),
		newPortForwardCmd(g),
		newStatsCmd(g),
		newCheckpointCmd(g),
		newMigrateCmd(g),
		newRestoreCmd(g),
		newRmCmd(g),
		newEventsCmd(g),
		newImageCmd(g),
		newLoginCmd(g),
		newLogoutCmd(g),
		newContainerCmd(g),
		newTokenCmd(g),
		newNodeCmd(g),
		newDashboardCmd(g),
		newVolumeCmd(g),
		newRegistryCmd(g),
		newSimCmd(g),
		newSecretCmd(g),
		newConfigCmd(g),
		newCronJobCmd(g),
	)
	root.InitDefaultCompletionCmd(args...) // here, not in Execute: its group must refuse unknown shells too
	refuseUnknownSubcommands(root)
	root.SetArgs(composeArgs(args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "berth:", err)
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return 1
}

// refuseUnknownSubcommands makes every command group (image, container,
// node...) fail on a subcommand it does not have, as the root does;
// cobra would print the group's help and exit 0.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if cmd == cmd.Root() || !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		return fmt.Errorf("unknown command %q for %q (see %s --help)", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
}

// exitError carries a specific exit code (for example a container's) to Run.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
