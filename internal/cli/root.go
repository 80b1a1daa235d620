// Package cli implements the berth command line, one file per command group.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/internal/cli/preconnect"
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
	root := newRoot(g)
	addCommands(root, g, args)
	root.InitDefaultCompletionCmd(args...) // here, not in Execute: its group must refuse unknown shells too
	refuseUnknownSubcommands(root)
	root.SetArgs(composeArgs(root, args))
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

// newRoot is the root command with the flags every command shares.
func newRoot(g *globals) *cobra.Command {
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
	preconnect.Flags{DataDir: &g.dataDir, Output: &g.output, Server: &g.server, Token: &g.token,
		Namespace: &g.namespace, CAFile: &g.caFile}.Define(root.PersistentFlags())
	return root
}

// topCommands are berth's commands, by the names and aliases they answer
// to (TestTopCommandNames holds these to each command's Use and Aliases).
var topCommands = []struct {
	names []string
	build func(*globals) *cobra.Command
}{
	{[]string{"up"}, newUpCmd},
	{[]string{"server"}, newServerCmd},
	{[]string{"agent"}, newAgentCmd},
	{[]string{"run"}, newRunCmd},
	{[]string{"apply"}, newApplyCmd},
	{[]string{"compose"}, newComposeCmd},
	{[]string{"diff"}, newDiffCmd},
	{[]string{"describe"}, newDescribeCmd},
	{[]string{"down"}, newDownCmd},
	{[]string{"get"}, newGetCmd},
	{[]string{"version"}, newVersionCmd},
	{[]string{"ps"}, newPsCmd},
	{[]string{"scale"}, newScaleCmd},
	{[]string{"restart"}, newRestartCmd},
	{[]string{"rollout"}, newRolloutCmd},
	{[]string{"logs"}, newLogsCmd},
	{[]string{"exec"}, newExecCmd},
	{[]string{"attach"}, newAttachCmd},
	{[]string{"cp"}, newCpCmd},
	{[]string{"port-forward"}, newPortForwardCmd},
	{[]string{"stats", "top"}, newStatsCmd},
	{[]string{"checkpoint"}, newCheckpointCmd},
	{[]string{"migrate"}, newMigrateCmd},
	{[]string{"restore"}, newRestoreCmd},
	{[]string{"rm"}, newRmCmd},
	{[]string{"events"}, newEventsCmd},
	{[]string{"image", "images", "img"}, newImageCmd},
	{[]string{"login"}, newLoginCmd},
	{[]string{"logout"}, newLogoutCmd},
	{[]string{"container", "c"}, newContainerCmd},
	{[]string{"token"}, newTokenCmd},
	{[]string{"node"}, newNodeCmd},
	{[]string{"dashboard"}, newDashboardCmd},
	{[]string{"volume", "volumes", "vol"}, newVolumeCmd},
	{[]string{"registry"}, newRegistryCmd},
	{[]string{"sim"}, newSimCmd},
	{[]string{"secret"}, newSecretCmd},
	{[]string{"config"}, newConfigCmd},
	{[]string{"cronjob", "cronjobs", "cj"}, newCronJobCmd},
}

// addCommands gives root the command args run, and only that one when
// args name it past the global flags: building every command, their
// flags above all, took a millisecond of each short command's start
// (berth exec in a loop). Help, completion and unknown names get them all.
func addCommands(root *cobra.Command, g *globals, args []string) {
	if build := commandOf(root, args); build != nil {
		root.AddCommand(build(g))
		return
	}
	for _, c := range topCommands {
		root.AddCommand(c.build(g))
	}
}

// commandOf finds the constructor of the command args name, skipping
// root's own flags and their values; nil when args start otherwise.
func commandOf(root *cobra.Command, args []string) func(*globals) *cobra.Command {
	i := commandAt(root, args)
	if i < 0 {
		return nil
	}
	for _, c := range topCommands {
		if slices.Contains(c.names, args[i]) {
			return c.build
		}
	}
	return nil
}

// commandAt is the index of the first argument past root's own flags and
// their values; -1 when args hold none or another flag comes first
// (--help, --, or a flag only a command knows).
func commandAt(root *cobra.Command, args []string) int {
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			return i
		}
		global, value := rootFlag(root, args[i])
		if !global {
			return -1
		}
		if value {
			i++
		}
	}
	return -1
}

// rootFlag reports whether a is one of root's own flags (--name,
// --name=v, -n, -nv or -n=v), and whether the argument after it is its
// value. Root's flag set is the one list of them, so that a global flag
// added there is skipped rightly wherever arguments are read ahead of
// cobra.
func rootFlag(root *cobra.Command, a string) (global, value bool) {
	name, _, inline := strings.Cut(strings.TrimLeft(a, "-"), "=")
	var f *pflag.Flag
	switch {
	case strings.HasPrefix(a, "--"):
		f = root.PersistentFlags().Lookup(name)
	case strings.HasPrefix(a, "-") && len(name) >= 1:
		f = root.PersistentFlags().ShorthandLookup(name[:1])
		inline = inline || len(name) > 1
	}
	if f == nil {
		return false, false
	}
	return true, f.NoOptDefVal == "" && !inline
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
