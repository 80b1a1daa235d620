package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/runtime"
)

// The container commands drive the runtime on this machine directly, with
// no control plane: the layer services and jobs are built on.
func newContainerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "container",
		Aliases: []string{"c"},
		Short:   "Run and manage single containers on this machine",
		Long: `Run and manage single containers on this machine, without the control plane.

Containers keep running when the berth command that started them exits;
their output goes to size-bounded log files that "berth container logs" reads.`,
	}
	cmd.AddCommand(
		newContainerRunCmd(g),
		newContainerPsCmd(g),
		newContainerLogsCmd(g),
		newContainerExecCmd(g),
		newContainerStopCmd(g),
		newContainerKillCmd(g),
		newContainerRmCmd(g),
		newContainerInspectCmd(g),
		newContainerCheckpointCmd(g),
		newContainerRestoreCmd(g),
		newContainerNetSyncCmd(g),
	)
	return cmd
}

func (g *globals) runtime() (*runtime.Runtime, error) {
	return runtime.New(filepath.Join(g.dataDir, "containers"))
}

func (g *globals) images() (*image.Store, error) {
	return image.Open(filepath.Join(g.dataDir, "images"))
}

type runFlags struct {
	name, user, workdir, hostname, executor, rootfs, cpuset, memory string
	env, capAdd, capDrop, publish                                   []string
	detach, rm, readOnly, noSeccomp, interactive, tty, userns, init bool
	cpus                                                            float64
	pids                                                            int64
	stopGrace                                                       time.Duration
	extra                                                           runExtras
	entrypointSet                                                   bool
	pull, restart                                                   string
	registry                                                        pullFlags
}

func newContainerRunCmd(g *globals) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Run a command in a new container",
		Example: `  berth container run demo/busybox:1 echo hello
  berth container run -d --name web --memory 64Mi demo/busybox:1 httpd -f -p 8080 -h /www
  berth container run -d --name site -p 8080:80 -p 127.0.0.1:5353:53/udp demo/busybox:1 httpd -f -p 80 -h /www
  berth container run --rm --cpus 0.5 --pids 64 demo/busybox:1 sh -c 'echo $HOSTNAME'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.entrypointSet = entrypointSet(cmd.Flags())
			return runContainer(cmd.Context(), g, &f, args[0], afterDash(args[1:]), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().SetInterspersed(false)
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "container name (default: generated)")
	fl.BoolVarP(&f.detach, "detach", "d", false, "run in the background and print the container name")
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "pass stdin to the container (through a pipe berth relays)")
	fl.StringVar(&f.restart, "restart", "no", "start the container again when it exits: no, on-failure[:N] (N tries at most), always or unless-stopped (the same here: no daemon restarts containers after the host reboots); berth container stop or kill ends it")
	fl.BoolVarP(&f.tty, "tty", "t", false, "run the container on a terminal berth opens and relays, sized as this one (needs one on stdin)")
	fl.BoolVar(&f.rm, "rm", false, "remove the container when it exits (foreground only)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a container port on the host: [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp] (no HOSTPORT: a free one); "+
		"the container then gets an address on this data dir's bridge, and the host port is held while it runs")
	fl.StringVarP(&f.user, "user", "u", "", "user[:group] to run as, by name (from the image's /etc/passwd and /etc/group) or number")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container")
	fl.StringVar(&f.hostname, "hostname", "", "hostname (default: the container name)")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU quota in cores, e.g. 0.5")
	fl.StringVar(&f.cpuset, "cpuset-cpus", "", "pin to these CPUs exclusively, e.g. 0-1 (no quota applies)")
	fl.StringVarP(&f.memory, "memory", "m", "", "memory limit, e.g. 64Mi or 1Gi; exceeding it OOM-kills")
	fl.Int64Var(&f.pids, "pids", 0, "maximum number of processes")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount the root filesystem read-only")
	fl.StringArrayVar(&f.capAdd, "cap-add", nil, "add a capability (e.g. NET_RAW, or ALL)")
	fl.StringArrayVar(&f.capDrop, "cap-drop", nil, "drop a capability (e.g. CHOWN, or ALL)")
	fl.BoolVar(&f.init, "init", false, "run an init as PID 1 that reaps orphaned processes and passes signals on (built-in runtime)")
	fl.BoolVar(&f.noSeccomp, "no-seccomp", false, "run without the default seccomp profile (unsafe)")
	fl.BoolVar(&f.userns, "userns", false, "run in a user namespace of its own: root inside, an unprivileged host id range outside")
	fl.StringVar(&f.executor, "runtime", runtime.ExecutorBuiltin, "executor: berth (built in), runc or crun")
	fl.StringVar(&f.rootfs, "rootfs", "", "use this directory as the root filesystem instead of an image (IMAGE is then a label)")
	fl.DurationVar(&f.stopGrace, "stop-timeout", 10*time.Second, "grace period before SIGKILL when interrupted")
	f.extra.register(fl)
	fl.StringVar(&f.pull, "pull", "missing", "fetch the image from its registry: missing (when the store lacks it), always or never")
	f.registry.add(cmd)
	return cmd
}

// runContainer is `berth container run`.
// Long because it maps `container run`'s flags onto one runtime.Config
// field by field, then runs, attaches and waits in the order docker does.
func runContainer(ctx context.Context, g *globals, f *runFlags, ref string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if f.rm && f.detach {
		return errors.New("--rm and --detach do not go together: a detached container is removed with 'berth container rm'")
	}
	if f.detach && (f.interactive || f.tty) {
		return errStdioDetached
	}
	restart, err := parseRestart(f.restart)
	if err != nil {
		return err
	}
	if restart.Name != "" && restart.Name != runtime.RestartNo && f.rm {
		return errors.New("--restart and --rm do not go together: a container that restarts is not removed when it exits")
	}
	if restart.Name != "" && restart.Name != runtime.RestartNo && (f.interactive || f.tty) {
		return errors.New("--restart does not go with -i or -t: the stdin and terminal end with the first run")
	}
	if f.tty && f.executor != "" && f.executor != runtime.ExecutorBuiltin {
		return fmt.Errorf("--tty: the %s executor cannot take a terminal here; use --runtime berth", f.executor)
	}
	mem, err := parseBytes(f.memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	env, err := f.extra.environment(f.env)
	if err != nil {
		return err
	}
	labels, err := f.extra.labelMap()
	if err != nil {
		return err
	}
	binds, err := f.extra.binds()
	if err != nil {
		return err
	}
	ports, err := parsePublishes(f.publish)
	if err != nil {
		return err
	}
	rt, err := g.runtime()
	if err != nil {
		return err
	}
	id := f.name
	if id == "" {
		id = generateName(ref)
	}
	c := runtime.Config{
		ID: id, Image: ref, Env: env, Labels: labels, Mounts: binds, Cwd: f.workdir, User: f.user, Hostname: f.hostname,
		ReadonlyRootfs: f.readOnly, CapAdd: f.capAdd, CapDrop: f.capDrop, NoSeccomp: f.noSeccomp, UserNS: f.userns, Restart: restart,
		Executor: f.executor, Init: f.init,
		Resources: runtime.Resources{CPUs: f.cpus, CPUSet: f.cpuset, MemoryBytes: mem, Pids: f.pids},
	}
	var store *image.Store
	if f.rootfs != "" {
		c.RootfsPath, c.Args = f.rootfs, args
		if f.entrypointSet {
			c.Args = entrypointArgs(f.extra.entrypoint, args)
		}
		if c.User, err = image.ResolveUser([]string{f.rootfs}, c.User); err != nil {
			return fmt.Errorf("--user: %w", err)
		}
	} else {
		if store, err = g.images(); err != nil {
			return err
		}
		policy, err := pullPolicyFlag(f.pull)
		if err != nil {
			return err
		}
		// Progress goes to stderr: stdout is the container's.
		if ref, err = ensureImage(ctx, store, stderr, ref, policy, &f.registry); err != nil {
			return err
		}
		snap, err := store.Prepare(ctx, ref, id)
		if err != nil {
			return err
		}
		c.LowerDirs = snap.LowerDirs
		cfg := snap.Image.Config
		c.Args = imageArgs(cfg.Entrypoint, cfg.Cmd, args)
		if f.entrypointSet {
			c.Args = entrypointArgs(f.extra.entrypoint, args)
		}
		c.Env = append(append([]string(nil), cfg.Env...), env...)
		if c.Cwd == "" {
			c.Cwd = cfg.WorkingDir
		}
		if c.User == "" && cfg.User != "" {
			c.User = cfg.User
		}
		if c.User, err = image.ResolveUser(snap.LowerDirs, c.User); err != nil {
			_ = store.Release(context.WithoutCancel(ctx), id)
			return fmt.Errorf("--user: %w", err)
		}
	}
	release := func() {
		if store != nil {
			_ = store.Release(context.WithoutCancel(ctx), id)
		}
	}
	stdio, err := openRunStdio(ctx, f.interactive, f.tty)
	if err != nil {
		release()
		return err
	}
	defer stdio.close()
	stdio.config(&c)
	if f.tty {
		c.Env = withTerm(c.Env)
	}
	var pub *publishing
	if len(ports) > 0 {
		if pub, err = publishPorts(ctx, g, rt, &c, ports); err != nil {
			release()
			return err
		}
	}
	_, err = rt.Run(ctx, c)
	if pub != nil {
		// Whether or not it started: a failed start's address is released.
		if perr := pub.finish(context.WithoutCancel(ctx), rt); perr != nil && err == nil {
			// Not running as asked: no container rather than one without its ports.
			_ = rt.Delete(context.WithoutCancel(ctx), id, true)
			err = perr
		}
	}
	if err != nil {
		release()
		return err
	}
	stdio.started(stdin, stdout)
	if f.detach {
		fmt.Fprintln(stdout, id)
		return nil
	}
	// Foreground: stream the output until the container ends; Ctrl-C stops it.
	logCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Logs(logCtx, id, runtime.LogOptions{Follow: true}, stdout, stderr) }()
	var st runtime.Status
	select {
	case <-done:
		// Following ends when the container exits (or the log cannot be read): its status decides.
		st, err = rt.Wait(context.WithoutCancel(ctx), id)
	case <-ctx.Done():
		st, err = rt.Stop(context.WithoutCancel(ctx), id, f.stopGrace)
		<-done
	}
	if err != nil {
		return err
	}
	if f.rm {
		if err := rt.Delete(context.WithoutCancel(ctx), id, true); err != nil {
			return err
		}
		release()
	}
	if pub != nil {
		// Its ports go at once, and with --rm its address too.
		if err := syncContainerNet(context.WithoutCancel(ctx), g, rt); err != nil {
			return err
		}
	}
	if st.OOMKilled {
		fmt.Fprintf(stderr, "berth: container %s was killed for exceeding its memory limit\n", id)
	}
	if st.StartError != "" {
		return fmt.Errorf("container %s: %s", id, st.StartError)
	}
	if st.ExitCode != 0 {
		return &exitError{code: st.ExitCode}
	}
	return nil
}

// imageArgs combines the image's entrypoint and default command with the user's, as Docker does.
func imageArgs(entrypoint, cmd, user []string) []string {
	if len(user) > 0 {
		return append(append([]string(nil), entrypoint...), user...)
	}
	return append(append([]string(nil), entrypoint...), cmd...)
}

func generateName(ref string) string {
	base := ref
	if i := strings.LastIndexAny(base, "/"); i >= 0 {
		base = base[i+1:]
	}
	if i := strings.IndexAny(base, ":@"); i >= 0 {
		base = base[:i]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 || b.Len() > 40 {
		b.Reset()
		b.WriteString("c")
	}
	return fmt.Sprintf("%s-%x", b.String(), time.Now().UnixNano()&0xffffff)
}

// parseBytes reads a size such as 64Mi, 1Gi, 512M, 1g or a plain byte count.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1 << 10}, {"K", 1 << 10}, {"m", 1 << 20}, {"M", 1 << 20}, {"g", 1 << 30}, {"G", 1 << 30}, {"b", 1}, {"", 1}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		var v int64
		if _, err := fmt.Sscanf(num, "%d", &v); err != nil || fmt.Sprint(v) != num || v < 0 {
			break
		}
		return v * u.mult, nil
	}
	return 0, fmt.Errorf("invalid size %q: use a whole number with Ki, Mi or Gi (e.g. 64Mi)", s)
}

func newContainerPsCmd(g *globals) *cobra.Command {
	var all, quiet bool
	cmd := &cobra.Command{
		Use:     "ps",
		Aliases: []string{"ls", "list"},
		Short:   "List containers",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			list, err := rt.List(cmd.Context())
			if err != nil {
				return err
			}
			var shown []runtime.Status
			for _, st := range list {
				if all || st.State == runtime.Running {
					shown = append(shown, st)
				}
			}
			if quiet {
				for _, st := range shown {
					fmt.Fprintln(cmd.OutOrStdout(), st.ID)
				}
				return nil
			}
			return printOut(cmd.OutOrStdout(), g.output, shown, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tIMAGE\tCOMMAND\tSTATUS\tPID\tEXECUTOR\tPORTS")
				for _, st := range shown {
					ports := "-"
					if st.State == runtime.Running {
						ports = portsColumn(st.Ports) // a stopped container publishes nothing
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", st.ID, st.Image, shorten(strings.Join(st.Args, " "), 30), describe(st), st.Pid, st.Executor, ports)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show exited containers too")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the names")
	return cmd
}

func describe(st runtime.Status) string {
	switch st.State {
	case runtime.Running:
		s := "running " + since(st.StartedAt)
		if st.Restarts > 0 {
			s += fmt.Sprintf(", %d restarts", st.Restarts)
		}
		return s
	case runtime.Exited:
		s := fmt.Sprintf("exited (%d) %s ago", st.ExitCode, since(st.FinishedAt))
		if st.Reason != "" && st.Reason != "Completed" && st.Reason != "Error" {
			s += ", " + st.Reason
		}
		return s
	}
	return string(st.State)
}

func since(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return time.Since(t).Round(time.Second).String()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func newContainerLogsCmd(g *globals) *cobra.Command {
	var opts runtime.LogOptions
	cmd := &cobra.Command{
		Use:   "logs [-f] NAME",
		Short: "Print a container's output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			return rt.Logs(cmd.Context(), args[0], opts, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing output until the container exits")
	cmd.Flags().IntVar(&opts.Tail, "tail", 0, "print only the last N lines")
	cmd.Flags().BoolVarP(&opts.Timestamps, "timestamps", "t", false, "prefix each line with its time")
	return cmd
}

func newContainerExecCmd(g *globals) *cobra.Command {
	var interactive, tty bool
	var env []string
	var user, workdir string
	cmd := &cobra.Command{
		Use:     "exec [-it] NAME COMMAND [ARG...]",
		Short:   "Run a further command in a running container",
		Example: "  berth container exec -it web sh\n  berth container exec web cat /etc/hostname",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			pr := runtime.ExecProcess{Args: afterDash(args[1:]), Env: env, User: user, Cwd: workdir,
				Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr()}
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
			code, err := rt.Exec(cmd.Context(), args[0], pr)
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
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	cmd.Flags().StringVarP(&user, "user", "u", "", "numeric uid[:gid] to run as")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory")
	return cmd
}

func newContainerStopCmd(g *globals) *cobra.Command {
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Stop containers: SIGTERM, then SIGKILL after the grace period",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			var errs []error
			for _, id := range args {
				st, err := rt.Stop(cmd.Context(), id, grace)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", id, describe(st))
			}
			// A stopped container's ports are free again.
			errs = append(errs, syncContainerNet(context.WithoutCancel(cmd.Context()), g, rt))
			return errors.Join(errs...)
		},
	}
	grace = 10 * time.Second
	cmd.Flags().VarP(seconds{&grace}, "time", "t", "grace period before SIGKILL, in seconds (2) or as a duration (1m)")
	return cmd
}

func newContainerKillCmd(g *globals) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] NAME...",
		Short: "Send a signal to containers' main processes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := parseSignal(sig)
			if err != nil {
				return err
			}
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			var errs []error
			var killed []string
			for _, id := range args {
				err := rt.Kill(cmd.Context(), id, s)
				if err == nil && s == syscall.SIGKILL {
					killed = append(killed, id)
				}
				errs = append(errs, err)
			}
			if len(killed) > 0 {
				// A killed container ends at once: its published ports are
				// free once it has, as after stop.
				ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 5*time.Second)
				defer cancel()
				for _, id := range killed {
					_, _ = rt.Wait(ctx, id)
				}
				errs = append(errs, syncContainerNet(context.WithoutCancel(cmd.Context()), g, rt))
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal name or number")
	return cmd
}

func parseSignal(s string) (syscall.Signal, error) {
	names := map[string]syscall.Signal{"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
		"KILL": syscall.SIGKILL, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM,
		"STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT, "WINCH": syscall.SIGWINCH}
	n := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if v, ok := names[n]; ok {
		return v, nil
	}
	var num int
	if _, err := fmt.Sscanf(s, "%d", &num); err == nil && num > 0 && num < 65 {
		return syscall.Signal(num), nil
	}
	return 0, fmt.Errorf("--signal: unknown signal %q", s)
}

func newContainerRmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] NAME...",
		Short: "Remove containers (their rootfs, cgroups, logs, state and published ports)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			store, err := g.images()
			if err != nil {
				return err
			}
			var errs []error
			for _, id := range args {
				if err := rt.Delete(cmd.Context(), id, force); err != nil {
					if errors.Is(err, runtime.ErrRunning) {
						err = fmt.Errorf("container %s is running: stop it first or use --force", id)
					}
					errs = append(errs, err)
					continue
				}
				if err := store.Release(cmd.Context(), id); err != nil {
					errs = append(errs, err)
				}
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			// Their published ports, addresses, namespaces and veths go too.
			errs = append(errs, syncContainerNet(context.WithoutCancel(cmd.Context()), g, rt))
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

func newContainerInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a container's status as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			st, err := rt.State(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := g.output
			if out == "" {
				out = "json"
			}
			return printOut(cmd.OutOrStdout(), out, st, nil)
		},
	}
}

// printOut writes v as JSON or YAML when asked, or with table otherwise.
func printOut(w io.Writer, format string, v any, table func(io.Writer)) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yamlMarshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "", "table", "wide":
		if table == nil {
			return printOut(w, "json", v, nil)
		}
		table(w)
		return nil
	}
	return fmt.Errorf("--output %q: want table, wide, json or yaml", format)
}
