package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

func newLogsCmd(g *globals) *cobra.Command {
	var opts client.LogOptions
	var since string
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] [--since 10m|RFC3339] [--timestamps] [--previous] [-c CONTAINER] INSTANCE|SERVICE|JOB",
		Short: "Print the output of an instance, or of every instance of a service or job, on any node",
		Example: `  berth logs web              # every instance of service web, each line prefixed
  berth logs -f web           # ... and follow them, and the replicas that replace them
  berth logs --since 10m --tail 20 web-k2x9p
  berth logs --previous web-k2x9p   # the container before the last restart
  berth logs -c setup web-k2x9p     # the instance's init or sidecar container named setup`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: g.completeFirst(api.KindInstance, api.KindService, api.KindJob),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				opts.Since = t
			}
			if opts.Tail < 0 {
				return fmt.Errorf("--tail %d: want a count of lines, 0 for all", opts.Tail)
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			insts, rev, ref, err := g.resolveInstancesAt(ctx, c, args[0])
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if errors.Is(err, errNoInstances) && opts.Follow {
				// Followed, a service or job that has none yet is waited on
				// (a replica or shard about to come, or scaled up later).
				fmt.Fprintf(errOut, "%s has no instances yet: waiting for them\n", ref)
			} else if err != nil {
				return err
			}
			if ref.kind == api.KindInstance {
				in := insts[0]
				return c.InstanceLogs(ctx, in.Metadata.Namespace, in.Metadata.Name, opts, out, errOut)
			}
			if !opts.Follow {
				return sortedLogs(ctx, c, insts, opts, out, errOut)
			}
			ml := &mergedLogs{c: c, opts: opts, out: out, errOut: errOut, seen: map[string]bool{}}
			for _, in := range insts {
				ml.start(ctx, in, opts)
			}
			if opts.Follow {
				if err := ml.followNew(ctx, ref, rev); err != nil {
					return err
				}
			}
			ml.wg.Wait()
			return errors.Join(ml.errs...)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing output as it comes (for a service or job, from the replicas that replace these too)")
	cmd.Flags().IntVar(&opts.Tail, "tail", 0, "print only the last N lines of each instance (0: all)")
	cmd.Flags().StringVar(&since, "since", "", "only lines written since a time (RFC 3339) or for a duration (10m, 1h30m)")
	cmd.Flags().BoolVarP(&opts.Timestamps, "timestamps", "t", false, "prefix each line with its time")
	cmd.Flags().BoolVarP(&opts.Previous, "previous", "p", false, "print the output of the container before the last restart")
	cmd.Flags().StringVarP(&opts.Container, "container", "c", "", "print the output of this init or sidecar container (default: main)")
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: a duration back from now must not be negative", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration (10m)", s)
}

// sortedLogs prints the output of several instances merged in the order
// it was written (by the times the nodes stamped on the lines), each line
// prefixed with its instance.
func sortedLogs(ctx context.Context, c *client.Client, insts []*api.Instance, opts client.LogOptions, out, errOut io.Writer) error {
	type line struct {
		at     time.Time
		stderr bool
		text   []byte // the prefixed line, with its time when asked for
	}
	var (
		mu    sync.Mutex
		lines []line
		wg    sync.WaitGroup
	)
	errs := make([]error, len(insts))
	stamped := opts
	stamped.Timestamps = true
	for i, in := range insts {
		if in.Status.ContainerID == "" {
			continue
		}
		wg.Go(func() {
			prefix := []byte("[" + in.Metadata.Name + "] ")
			collect := func(stderr bool) *lineWriter {
				return &lineWriter{f: func(b []byte) {
					ts, rest, _ := bytes.Cut(b, []byte{' '})
					at, _ := time.Parse(time.RFC3339Nano, string(ts))
					if !opts.Timestamps {
						b = rest
					}
					text := append(append(append([]byte(nil), prefix...), b...), '\n')
					mu.Lock()
					lines = append(lines, line{at, stderr, text})
					mu.Unlock()
				}}
			}
			ow, ew := collect(false), collect(true)
			errs[i] = c.InstanceLogs(ctx, in.Metadata.Namespace, in.Metadata.Name, stamped, ow, ew)
			ow.flush()
			ew.flush()
			if errs[i] != nil {
				errs[i] = fmt.Errorf("%s: %w", in.Metadata.Name, errs[i])
			}
		})
	}
	wg.Wait()
	slices.SortStableFunc(lines, func(a, b line) int { return a.at.Compare(b.at) })
	bo, be := bufio.NewWriter(out), bufio.NewWriter(errOut)
	for _, l := range lines {
		if l.stderr {
			_ = bo.Flush()
			_, _ = be.Write(l.text)
			_ = be.Flush()
		} else {
			_, _ = bo.Write(l.text)
		}
	}
	if err := bo.Flush(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// lineWriter calls f with each whole line written, without its newline;
// flush hands on a last line that had none.
type lineWriter struct {
	f   func([]byte)
	buf []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	rest := w.buf
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		w.f(rest[:i])
		rest = rest[i+1:]
	}
	w.buf = append(w.buf[:0], rest...)
	return len(b), nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.f(w.buf)
		w.buf = nil
	}
}

// mergedLogs prints the output of several instances, each line whole
// and prefixed with its instance.
type mergedLogs struct {
	c           *client.Client
	opts        client.LogOptions
	out, errOut io.Writer
	mu          sync.Mutex // serialises lines on out and errOut
	wg          sync.WaitGroup
	emu         sync.Mutex
	errs        []error
	seen        map[string]bool // containers followed already
}

// start prints an instance's output, following it with -f, unless its
// container is being printed already.
func (m *mergedLogs) start(ctx context.Context, in *api.Instance, opts client.LogOptions) {
	m.emu.Lock()
	key := in.Metadata.UID + "/" + in.Status.ContainerID
	if in.Status.ContainerID == "" || m.seen[key] {
		m.emu.Unlock()
		return
	}
	m.seen[key] = true
	m.emu.Unlock()
	m.wg.Go(func() {
		p := "[" + in.Metadata.Name + "] "
		ow, ew := &prefixWriter{w: m.out, mu: &m.mu, prefix: p}, &prefixWriter{w: m.errOut, mu: &m.mu, prefix: p}
		err := m.c.InstanceLogs(ctx, in.Metadata.Namespace, in.Metadata.Name, opts, ow, ew)
		ow.flush()
		ew.flush()
		// An instance that went away (or never ran on its node) while
		// being followed is no error of the command's.
		if err != nil && ctx.Err() == nil && !(opts.Follow && (errdefs.IsNotFound(err) || errdefs.IsUnavailable(err))) {
			m.emu.Lock()
			m.errs = append(m.errs, fmt.Errorf("%s: %w", in.Metadata.Name, err))
			m.emu.Unlock()
		}
	})
}

// followNew follows the owner's instances that start after revision rev:
// new replicas, and new containers of restarted ones, from their first line.
func (m *mergedLogs) followNew(ctx context.Context, owner objRef, rev int64) error {
	fresh := m.opts
	fresh.Tail, fresh.Since = 0, time.Time{}
	for ctx.Err() == nil {
		events, err := m.c.Instances().Watch(ctx, owner.namespace, rev)
		if err != nil {
			return err
		}
		for ev := range events {
			if ev.Err != nil {
				if errdefs.IsFailedPrecondition(ev.Err) {
					rev = 0 // compacted: carry on from now
				}
				break
			}
			rev = ev.Revision
			in := ev.Object
			if ev.Type == "Deleted" || in.Spec.Owner.Kind != owner.kind || in.Spec.Owner.Name != owner.name || in.Status.Phase != api.PhaseRunning {
				continue
			}
			m.start(ctx, in, fresh)
		}
	}
	return nil
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
	i := bytes.LastIndexByte(p.buf, '\n')
	if i < 0 {
		return len(b), nil
	}
	// Every whole line in one write, each with its prefix.
	var out []byte
	rest := p.buf[:i+1]
	for len(rest) > 0 {
		j := bytes.IndexByte(rest, '\n')
		out = append(out, p.prefix...)
		out = append(out, rest[:j+1]...)
		rest = rest[j+1:]
	}
	p.buf = append(p.buf[:0], p.buf[i+1:]...)
	p.mu.Lock()
	_, err := p.w.Write(out)
	p.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// flush writes a last line that had no newline.
func (p *prefixWriter) flush() {
	if len(p.buf) > 0 {
		_, _ = p.Write([]byte{'\n'})
	}
}
