package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"path"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/initgc"
	"github.com/spf13/cobra"
)

func newDashboardCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Print a one-time sign-in link to the web dashboard",
		Long: `Print a one-time link that signs a browser in to the web dashboard.

With --server https://HOST:PORT the link is on that server. On the unix
socket (berth up without --listen) it opens a listener on loopback that
passes the dashboard's pages, and only them, to the socket, and serves it
in the foreground until Ctrl-C. The link works once, within five minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			initgc.Restore() // it serves until stopped
			ctx := cmd.Context()
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			code, err := c.DashboardCode(ctx)
			if err != nil {
				return fmt.Errorf("dashboard sign-in code: %w", describeErr(err))
			}
			out := cmd.OutOrStdout()
			sock, onSocket := strings.CutPrefix(g.endpoint(), "unix://")
			if !onSocket {
				fmt.Fprintf(out, "Dashboard: %s%s\n", strings.TrimSuffix(g.server, "/"), code.Path)
				return nil
			}
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("--listen %q: the dashboard's plain-HTTP listener stays on a loopback address", listen)
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			fmt.Fprintf(out, "Dashboard: http://%s%s\n(one-time link; Ctrl-C stops the listener)\n", l.Addr(), code.Path)
			return serveDashboardProxy(ctx, l, sock)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "loopback HOST:PORT for the dashboard when the API is on the unix socket")
	return cmd
}

// serveDashboardProxy passes the dashboard's requests on l to the API's
// unix socket. The socket takes every caller for root, so nothing but the
// dashboard's pages goes through, and not its code route: a browser signs
// in with the dashboard's own cookie.
func serveDashboardProxy(ctx context.Context, l net.Listener, sock string) error {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "berth"
			pr.Out.Host = pr.In.Host // the dashboard checks Origin against it
			pr.Out.Header.Del("Authorization")
		},
		Transport: tr,
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := r.URL.Path
			clean := path.Clean(p)
			if strings.HasSuffix(p, "/") && clean != "/" {
				clean += "/"
			}
			// A path with dot segments could name the API beyond /ui/.
			if clean != p || (p != "/ui" && !strings.HasPrefix(p, api.DashboardPrefix)) || p == api.DashboardCodesPath {
				http.NotFound(w, r)
				return
			}
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard on %s: %w", l.Addr(), err)
	}
	return nil
}
