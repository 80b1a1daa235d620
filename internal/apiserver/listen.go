package apiserver

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// Identity is who a request comes from.
type Identity struct {
	// Name is "root" on the unix socket, "token" for the bearer token.
	Name string
	// Node is set once agents authenticate with node certificates.
	Node string
	// Admin may do anything.
	Admin bool
	// Scraper holds the metrics token: it may read metrics (ScrapeRoute)
	// and nothing else.
	Scraper bool
}

// ScraperIdentity is the identity of a caller with the metrics token.
var ScraperIdentity = Identity{Name: "metrics", Scraper: true}

// ScrapeRoute says whether r is one the metrics token may take: a GET
// of the server's /metrics or of a node's through the server.
func ScrapeRoute(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	if p == "/metrics" || p == "/metrics/" {
		return true
	}
	node, ok := strings.CutPrefix(p, "/v1/nodes/")
	if !ok {
		return false
	}
	name, ok := strings.CutSuffix(node, "/metrics")
	return ok && name != "" && !strings.Contains(name, "/")
}

// WithMetricsToken admits TLS requests bearing metricsToken as
// ScraperIdentity, and passes the others to auth.
func WithMetricsToken(auth Authenticator, metricsToken string) Authenticator {
	return func(r *http.Request) (Identity, error) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if r.TLS != nil && ok && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(metricsToken)) == 1 {
			return ScraperIdentity, nil
		}
		return auth(r)
	}
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity a request's context carries.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Authenticator decides who a request comes from, or refuses it (with an
// error in the Unauthorized or Forbidden category).
type Authenticator func(r *http.Request) (Identity, error)

type peerUIDKey struct{}

// UnixRootOnly admits callers on the unix socket whose peer credentials
// say uid 0. The socket's mode already keeps others out; this checks again
// in case the socket was exposed (a bind mount into a container).
func UnixRootOnly(r *http.Request) (Identity, error) {
	uid, ok := r.Context().Value(peerUIDKey{}).(uint32)
	if !ok {
		return Identity{}, fmt.Errorf("%w: no peer credentials", errdefs.ErrUnauthorized)
	}
	if uid != 0 {
		return Identity{}, fmt.Errorf("uid %d: %w: the socket is for root only", uid, errdefs.ErrForbidden)
	}
	return Identity{Name: "root", Admin: true}, nil
}

// BearerToken admits TLS requests that carry token as a bearer token.
func BearerToken(token string) Authenticator {
	return func(r *http.Request) (Identity, error) {
		if r.TLS == nil {
			return Identity{}, fmt.Errorf("%w: TLS is required", errdefs.ErrUnauthorized)
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || got == "" {
			return Identity{}, fmt.Errorf("%w: missing bearer token", errdefs.ErrUnauthorized)
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			return Identity{}, fmt.Errorf("%w: wrong token", errdefs.ErrUnauthorized)
		}
		return Identity{Name: "token", Admin: true}, nil
	}
}

// ListenUnix listens on a unix socket at path that only root can use
// (mode 0600), replacing a stale socket left by a crash.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api socket %s: %w: a file that is not a socket is in the way", path, errdefs.ErrFailedPrecondition)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("api socket %s: %w: another server is listening", path, errdefs.ErrAlreadyExists)
		}
		_ = os.Remove(path)
	}
	// The umask makes the socket 0600 from the start: a chmod after
	// listening would leave a window where others could connect.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}

// Serve serves the API on l, authenticating each request with auth, until
// ctx is done; it then stops accepting and waits up to five seconds for
// requests in flight (watch streams end with ctx).
func (s *Server) Serve(ctx context.Context, l net.Listener, auth Authenticator) error {
	// Before the nodes list their assignments, so that their watches
	// start within its history.
	if s.store != nil {
		s.store.StartAssignmentHub()
	}
	h := s.Handler()
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w, pieces: r.ProtoMajor == 2}
			var tm *store.Timing
			if isWrite(r.Method) {
				tm = new(store.Timing)
				r = r.WithContext(store.WithTiming(r.Context(), tm))
				rec.header = func(h http.Header) { serverTiming(h, start, tm) }
			}
			r2 := r
			defer func() { s.observe(r2, rec, start, tm) }()
			id, err := auth(r)
			if err != nil {
				if m := s.signInMount(r.URL.Path); m != nil {
					m.ServeHTTP(rec, r)
					return
				}
				writeError(rec, err)
				return
			}
			r2 = r.WithContext(WithIdentity(r.Context(), id))
			if tm != nil {
				// A runtime trace (/debug/pprof/trace) shows each write as a
				// region, by caller: where its goroutine ran, waited for a
				// CPU, or blocked.
				defer trace.StartRegion(r2.Context(), "api write "+callerOf(id)).End()
			}
			h.ServeHTTP(rec, r2)
		}),
		// No ReadTimeout: it would cut watch streams short.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Every node keeps a connection open: HPACK's default tables, 4 KiB
		// each way and filled by the changing headers of every request and
		// response, were 60 MB for 15,000 nodes, and tables of 1 KiB still
		// 3 KiB a connection (their entries, strings and indexes). The
		// answers' table is of one byte, which holds no entry (each counts
		// 32 bytes over its name and value): their headers go literally,
		// and nothing is kept for them. The requests' table stays 1 KiB:
		// a client indexes its first requests' headers in a table of the
		// default size before it has read the server's settings, and
		// Go's decoder holds it to the smaller size from the start, so a
		// smaller table ended connections with COMPRESSION_ERROR.
		//
		// A connection's framer keeps a buffer as big as the largest frame
		// it has read, for the connection's life: frames of HTTP/2's
		// smallest maximum, 16 KiB (a body in several), not of Go's default
		// 1 MiB.
		HTTP2:       &http.HTTP2Config{MaxDecoderHeaderTableSize: 1 << 10, MaxEncoderHeaderTableSize: 1, MaxReadFrameSize: 16 << 10},
		BaseContext: func(net.Listener) context.Context { return ctx },
		ConnContext: connContext,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.Close()
	}
	<-errc
	return err
}

// connContext records the peer's uid on unix socket connections.
func connContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerUIDKey{}, cred.Uid)
}

// ServeUnix serves the API on a root-only unix socket at path until ctx is done.
func (s *Server) ServeUnix(ctx context.Context, path string) error {
	l, err := ListenUnix(path)
	if err != nil {
		return err
	}
	return s.Serve(ctx, l, UnixRootOnly)
}

// ServeTLS serves the API over TCP on l with TLS, admitting only requests
// that carry token or, when the server has a cluster CA, a node
// certificate (ClusterAuthenticator). It refuses to start without a
// certificate or a token.
func (s *Server) ServeTLS(ctx context.Context, l net.Listener, cfg *tls.Config, token string) error {
	if cfg == nil || (len(cfg.Certificates) == 0 && cfg.GetCertificate == nil) {
		return fmt.Errorf("api on %s: %w: TCP needs a TLS certificate", l.Addr(), errdefs.ErrInvalidArgument)
	}
	if len(token) < 16 {
		return fmt.Errorf("api on %s: %w: TCP needs a token of at least 16 characters", l.Addr(), errdefs.ErrInvalidArgument)
	}
	cfg = cfg.Clone()
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if len(cfg.NextProtos) == 0 {
		// HTTP/2 first: a node's watch, heartbeats and status reports share
		// one connection. Over HTTP/1.1 each took a connection of its own,
		// and a heartbeat given up on a busy server closed its connection,
		// so the next one paid a new TLS handshake (a client certificate
		// to verify), which made the server busier: at a thousand nodes
		// they flapped NotReady. Upgrades (tunnels, WebSockets) still go
		// over HTTP/1.1: clients ask for it on those requests alone.
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	auth := BearerToken(token)
	if s.ca != nil {
		// Nodes present the cluster CA's certificates; a joining node has
		// none yet, so they are optional.
		if cfg.ClientAuth == tls.NoClientCert {
			cfg.ClientAuth, cfg.ClientCAs = tls.VerifyClientCertIfGiven, s.ca.Pool()
		}
		auth = ClusterAuthenticator(token)
		s.runCreds(ctx)
	}
	if s.metricsToken != "" {
		if len(s.metricsToken) < 16 || s.metricsToken == token {
			return fmt.Errorf("api on %s: %w: the metrics token must have at least 16 characters and differ from the admin token", l.Addr(), errdefs.ErrInvalidArgument)
		}
		auth = WithMetricsToken(auth, s.metricsToken)
	}
	return s.Serve(ctx, newHandshakeListener(l, cfg), auth)
}
