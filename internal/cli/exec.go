package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

func newExecCmd(g *globals) *cobra.Command {
	var interactive, tty bool
	var env []string
	var container string
	cmd := &cobra.Command{
		Use:   "exec [-i] [-t] [-c CONTAINER] INSTANCE|SERVICE [--] COMMAND [ARG...]",
		Short: "Run a command in a running instance (or in a service's first running one), on any node",
		Example: `  berth exec -it web sh
  berth exec web-k2x9p cat /etc/hostname
  berth exec -c proxy web-k2x9p ps   # in the instance's sidecar named proxy`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: g.completeFirst(api.KindInstance, api.KindService, api.KindJob),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			command := afterDash(args[1:])
			if len(command) == 0 {
				return errors.New("exec: no command given after --")
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			ns, name, resolve, err := g.execTarget(ctx, c, args[0])
			if err != nil {
				return err
			}
			o := client.ExecOptions{Command: command, Env: env, TTY: tty, Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(),
				Container: container, Resolve: resolve}
			if interactive {
				o.Stdin = cmd.InOrStdin()
			}
			if tty {
				restore, sizes, err := rawTerminal(ctx)
				if err != nil {
					return err
				}
				defer restore()
				o.Resize = sizes
				if t := os.Getenv("TERM"); t != "" {
					o.Env = append([]string{"TERM=" + t}, o.Env...)
				}
			}
			code, err := c.Exec(ctx, ns, name, o)
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
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "run the command on a terminal (sized as this one, and resized with it)")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE")
	cmd.Flags().StringVarP(&container, "container", "c", "", "run in this init or sidecar container of the instance (default: main)")
	return cmd
}

// execTarget is what exec runs in. A bare name goes to the server as it
// is (resolve): the server finds the instance, service or job it names
// and runs the command in one request, where reading each kind from here
// took a round trip apiece. Instance/NAME needs no resolving; a service
// or job named with its kind is resolved here.
func (g *globals) execTarget(ctx context.Context, c *client.Client, arg string) (ns, name string, resolve bool, err error) {
	r, err := g.parseRef(arg)
	if err != nil {
		return "", "", false, err
	}
	switch r.kind {
	case "":
		return r.namespace, r.name, true, nil
	case api.KindInstance:
		return r.namespace, r.name, false, nil
	}
	in, err := g.runningInstance(ctx, c, arg)
	if err != nil {
		return "", "", false, err
	}
	return in.Metadata.Namespace, in.Metadata.Name, false, nil
}

// runningInstance is the instance ref names, or the first running
// instance of the service or job it names.
func (g *globals) runningInstance(ctx context.Context, c *client.Client, ref string) (*api.Instance, error) {
	insts, err := g.resolveInstances(ctx, c, ref)
	if err != nil {
		return nil, err
	}
	if in := api.FirstRunning(insts); in != nil {
		return in, nil
	}
	return nil, fmt.Errorf("%s has no running instance", ref)
}

// rawTerminal puts the terminal on stdin in raw mode and sends its size
// now and on every SIGWINCH, until ctx ends; restore puts it back.
func rawTerminal(ctx context.Context) (restore func(), sizes <-chan client.TermSize, err error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, nil, errors.New("-t needs a terminal on stdin")
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("terminal: %w", err)
	}
	ch := make(chan client.TermSize, 1)
	send := func() {
		w, h, err := term.GetSize(fd)
		if err != nil {
			return
		}
		select {
		case <-ch: // only the latest size matters
		default:
		}
		ch <- client.TermSize{Cols: uint16(w), Rows: uint16(h)}
	}
	send()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-winch:
				send()
			}
		}
	}()
	return func() {
		cancel()
		signal.Stop(winch)
		_ = term.Restore(fd, old)
	}, ch, nil
}

// afterDash is a command line given after a target (an image, an
// instance): flags stop at the target, so a "--" right after it, as
// kubectl users write, only separates and is not the command.
func afterDash(command []string) []string {
	if len(command) > 0 && command[0] == "--" {
		return command[1:]
	}
	return command
}
