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
	"github.com/berth-dev/berth/internal/cli/preconnect"
	"github.com/berth-dev/berth/internal/cli/preexec"
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
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			// A plain exec may have gone ahead while the binary started
			// (internal/cli/preexec): then its output is only relayed.
			s, ok, err := takeAhead(ctx, g.execPlan(args[0], command, env, container, interactive || tty))
			if ok {
				if err != nil {
					return err
				}
				return execExit(s.Wait(ctx, client.ExecOptions{Stdout: stdout, Stderr: stderr}))
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			ns, name, resolve, err := g.execTarget(ctx, c, args[0])
			if err != nil {
				return err
			}
			o := client.ExecOptions{Command: command, Env: env, TTY: tty, Stdout: stdout, Stderr: stderr,
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
			return execExit(c.Exec(ctx, ns, name, o))
		},
	}
	cmd.Flags().SetInterspersed(false)
	preconnect.ExecFlags{Interactive: &interactive, TTY: &tty, Env: &env, Container: &container}.Define(cmd.Flags())
	return cmd
}

// takeAhead is preexec.Take; a test sees through it what the command
// line means.
var takeAhead = preexec.Take

// execExit is the command's error for an exec's outcome: its exit code
// when not 0.
func execExit(code int, err error) error {
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// execPlan is the exec this command line asks for, as preconnect sends one
// ahead: nil when it wants stdin or a terminal (terminal), or names what
// it runs in with a kind, or a namespace in the name is not valid.
func (g *globals) execPlan(target string, command, env []string, container string, terminal bool) *preconnect.Plan {
	if terminal {
		return nil
	}
	r, err := g.parseRef(target)
	if err != nil || r.kind != "" {
		return nil
	}
	p := &preconnect.Plan{Server: g.server, CAFile: g.caFile, Token: g.token, Namespace: r.namespace, Name: r.name,
		Command: command, Env: env, Container: container}
	if p.Server == "" {
		p.Socket = api.SocketPath(g.dataDir)
	}
	return p
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
