package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/cli/preconnect"
	"github.com/berth-dev/berth/internal/cli/preexec"
)

// endpoint is where the API is: --server, or the socket in the data dir.
func (g *globals) endpoint() string {
	if g.server != "" {
		return g.server
	}
	return "unix://" + api.SocketPath(g.dataDir)
}

// client connects to the API, saying plainly when nothing listens there.
func (g *globals) client(ctx context.Context) (*client.Client, error) {
	ep := g.endpoint()
	if sock, ok := strings.CutPrefix(ep, "unix://"); ok {
		c, err := net.Dial("unix", sock)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "connection refused") {
				return nil, fmt.Errorf("cannot reach berth at %s: is `berth up` running (with --data-dir %s)?", ep, filepath.Dir(sock))
			}
			return nil, fmt.Errorf("cannot reach berth at %s: %w", ep, err)
		}
		return client.New(ep, client.WithConn(c))
	}
	opts := preexec.Options(g.token, g.caFile)
	if conn := preconnect.Conn(ctx, ep, g.caFile); conn != nil {
		opts = append(opts, client.WithWebSocketConn(conn))
	}
	return client.New(ep, opts...)
}

// describeErr makes API errors read well on the command line: field errors one per line.
func describeErr(err error) error {
	if fe := api.FieldErrors(err); len(fe) > 1 {
		var b strings.Builder
		b.WriteString("invalid input:")
		for _, f := range fe {
			fmt.Fprintf(&b, "\n  %s", f.Error())
		}
		return errors.New(b.String())
	}
	if errdefs.IsConflict(err) {
		return fmt.Errorf("%w (someone changed it meanwhile: read it again and retry)", err)
	}
	return err
}
