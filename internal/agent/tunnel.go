package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/berth-dev/berth/api/client"
)

// TunnelOpener opens the node's tunnel to one API server
// (client.Client.OpenTunnel).
type TunnelOpener func(ctx context.Context) (io.ReadWriteCloser, error)

// ServeTunnel keeps a tunnel open to an API server and serves h on it
// until ctx ends, opening it again (after a pause) whenever it breaks.
//
// The agent dials out, so a node needs no listening port and the server
// reaches it over the node's own mTLS connection: the tunnel is that
// connection, upgraded, carrying yamux streams the server opens, each an
// HTTP/1.1 connection to h (which can upgrade again, to WebSockets).
//
// local says the tunnel runs over a unix socket (client.TunnelConfig).
func ServeTunnel(ctx context.Context, open TunnelOpener, local bool, h http.Handler, log *slog.Logger) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		began := time.Now()
		err := serveTunnelOnce(ctx, open, local, h)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*time.Second {
			backoff = 500 * time.Millisecond
		}
		log.Debug("tunnel to the API server closed; opening it again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func serveTunnelOnce(ctx context.Context, open TunnelOpener, local bool, h http.Handler) error {
	conn, err := open(ctx)
	if err != nil {
		return err
	}
	sess, err := yamux.Server(client.TunnelConn(conn), client.TunnelConfig(local))
	if err != nil {
		conn.Close()
		return err
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(_ net.Listener) context.Context { return ctx }}
	err = hs.Serve(sess)
	if errors.Is(err, yamux.ErrSessionShutdown) {
		return nil
	}
	return err
}
