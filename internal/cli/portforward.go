package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api/client"
)

func newPortForwardCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "port-forward INSTANCE|SERVICE [LOCAL:]REMOTE",
		Short: "Forward a local port to a port of an instance, on any node, until interrupted",
		Long: `Forward a port on this machine's loopback to a port of an instance, on any
node, until interrupted. Connections reach the port on the instance's loopback, from inside its network
namespace, so ports the instance publishes nowhere are reachable too. A
service's first running instance serves every connection. LOCAL 0 (or left
out with a colon, ":80") picks a free port; the line printed says which.`,
		Example: `  berth port-forward web 8080:80
  berth port-forward web-k2x9p :6379`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			local, remote, err := parsePortPair(args[1])
			if err != nil {
				return err
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			target, err := g.runningInstance(ctx, c, args[0])
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)))
			if err != nil {
				return fmt.Errorf("port-forward: listen: %w", err)
			}
			defer l.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "Forwarding from %s -> %s:%d\n", l.Addr(), target.Metadata.Name, remote)
			stop := context.AfterFunc(ctx, func() { l.Close() })
			defer stop()
			var wg sync.WaitGroup
			defer wg.Wait()
			for {
				conn, err := l.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("port-forward: accept: %w", err)
				}
				wg.Go(func() {
					if err := forwardConn(ctx, c, target.Metadata.Namespace, target.Metadata.Name, remote, conn); err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "port-forward: %v\n", err)
					}
				})
			}
		},
	}
	return cmd
}

// parsePortPair reads [LOCAL:]REMOTE; REMOTE alone listens on the same port.
func parsePortPair(s string) (local, remote int, err error) {
	l, r, pair := strings.Cut(s, ":")
	if !pair {
		l, r = s, s
	}
	if l == "" {
		l = "0"
	}
	local, err1 := strconv.Atoi(l)
	remote, err2 := strconv.Atoi(r)
	if err1 != nil || err2 != nil || local < 0 || local > 65535 || remote < 1 || remote > 65535 {
		return 0, 0, fmt.Errorf("ports %q: want [LOCAL:]REMOTE, ports 1-65535 (LOCAL 0 for any free one)", s)
	}
	return local, remote, nil
}

func forwardConn(ctx context.Context, c *client.Client, ns, name string, port int, conn net.Conn) error {
	defer conn.Close()
	rc, err := c.PortForward(ctx, ns, name, port)
	if err != nil {
		return err
	}
	defer rc.Close()
	// The instance's answer ends the connection; the caller's side ending
	// (a half-close) does not, so a request sent whole still gets its answer.
	answered := make(chan struct{})
	go func() { _, _ = io.Copy(rc, conn) }()
	go func() {
		_, _ = io.Copy(conn, rc)
		close(answered)
	}()
	select {
	case <-answered:
	case <-ctx.Done():
	}
	return nil
}
