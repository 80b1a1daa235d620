package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

func newExecCmd(g *globals) *cobra.Command {
	var interactive, tty bool
	var env []string
	cmd := &cobra.Command{
		Use:   "exec [-it] INSTANCE COMMAND [ARG...]",
		Short: "Run a command in a running instance (or in a service's first running one)",
		Example: `  berth exec -it web sh
  berth exec web-k2x9p cat /etc/hostname`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: g.completeFirst(api.KindInstance, api.KindService, api.KindJob),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			insts, err := g.resolveInstances(ctx, c, args[0])
			if err != nil {
				return err
			}
			var target *api.Instance
			for _, in := range insts {
				if in.Status.Phase == api.PhaseRunning && in.Status.ContainerID != "" {
					target = in
					break
				}
			}
			if target == nil {
				return fmt.Errorf("%s has no running instance", args[0])
			}
			rt, err := runtime.New(filepath.Join(g.dataDir, "containers"))
			if err != nil {
				return err
			}
			pr := runtime.ExecProcess{Args: args[1:], Env: env, Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr()}
			if interactive {
				pr.Stdin = os.Stdin
			}
			if tty {
				restore, err := useTerminal(&pr)
				if err != nil {
					return err
				}
				defer restore()
			}
			code, err := rt.Exec(ctx, target.Status.ContainerID, pr)
			if errors.Is(err, runtime.ErrNotFound) {
				return fmt.Errorf("instance %s runs on node %s, not on this machine", target.Metadata.Name, target.Spec.Node)
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "pass stdin to the command")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE")
	return cmd
}
