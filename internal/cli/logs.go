package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

func newLogsCmd(g *globals) *cobra.Command {
	var opts runtime.LogOptions
	cmd := &cobra.Command{
		Use:   "logs [-f] NAME",
		Short: "Print the output of an instance, or of every instance of a service or job",
		Example: `  berth logs web            # every instance of service web, each line prefixed
  berth logs -f web-k2x9p    # one instance, following`,
		Args:              cobra.ExactArgs(1),
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
			rt, err := runtime.New(filepath.Join(g.dataDir, "containers"))
			if err != nil {
				return err
			}
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if len(insts) == 1 {
				return instanceLogs(ctx, rt, insts[0], opts, out, errOut)
			}
			// Several instances: lines prefixed with the instance, written whole.
			var mu sync.Mutex
			var wg sync.WaitGroup
			errs := make([]error, len(insts))
			for i, in := range insts {
				wg.Go(func() {
					p := "[" + in.Metadata.Name + "] "
					errs[i] = instanceLogs(ctx, rt, in, opts, &prefixWriter{w: out, mu: &mu, prefix: p}, &prefixWriter{w: errOut, mu: &mu, prefix: p})
				})
			}
			wg.Wait()
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing output as it comes")
	cmd.Flags().IntVar(&opts.Tail, "tail", 0, "print only the last N lines of each")
	cmd.Flags().BoolVarP(&opts.Timestamps, "timestamps", "t", false, "prefix each line with its time")
	return cmd
}

// instanceLogs prints an instance's container output from this machine's runtime.
func instanceLogs(ctx context.Context, rt *runtime.Runtime, in *api.Instance, opts runtime.LogOptions, stdout, stderr io.Writer) error {
	if in.Status.ContainerID == "" {
		return fmt.Errorf("instance %s has no container yet (phase %s)", in.Metadata.Name, dash(string(in.Status.Phase)))
	}
	err := rt.Logs(ctx, in.Status.ContainerID, opts, stdout, stderr)
	if errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("instance %s: its container %s is not on this machine (node %s)", in.Metadata.Name, in.Status.ContainerID, in.Spec.Node)
	}
	return err
}

// prefixWriter writes whole lines with a prefix, under a shared lock.
type prefixWriter struct {
	w      io.Writer
	mu     *sync.Mutex
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := indexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.mu.Lock()
		_, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.mu.Unlock()
		p.buf = p.buf[i+1:]
		if err != nil {
			return 0, err
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
