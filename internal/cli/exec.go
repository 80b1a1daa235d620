package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/term"

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
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			insts, err := resolveInstances(ctx, c, args[0])
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
				fd := int(os.Stdin.Fd())
				if !term.IsTerminal(fd) {
					return errors.New("-t needs a terminal on stdin")
				}
				old, err := term.MakeRaw(fd)
				if err != nil {
					return fmt.Errorf("terminal: %w", err)
				}
				defer func() { _ = term.Restore(fd, old) }()
				pr.Tty = true
				pr.Resize = func(pty *os.File) {
					if w, h, err := term.GetSize(fd); err == nil {
						setWinsize(pty, w, h)
					}
				}
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
