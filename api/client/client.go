// Package client is the Go client of berth's API, used by the CLI, the
// agent and tests.
//
//	c, err := client.New("unix:///var/lib/berth/berth.sock")
//	svc, err := c.Services().Get(ctx, "default", "web")
//	svc.Spec.Replicas = 5
//	svc, err = c.Services().Apply(ctx, svc) // 409 (errdefs.ErrConflict) if it changed meanwhile
//
// Errors carry the server's category, so errors.Is(err,
// errdefs.ErrNotFound) and friends work, and api.FieldErrors(err) returns
// the invalid fields of a rejected object.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// Client talks to one berth API server. It is safe for concurrent use.
type Client struct {
	base         string // scheme://host, without a trailing slash
	hc           *http.Client
	token        string
	watchTimeout time.Duration
	local        bool // over a unix socket

	h1Once sync.Once
	h1     *http.Client // see upgradeClient

	wsMu    sync.Mutex
	wsFirst net.Conn // see WithWebSocketConn
}

// Local reports whether c reaches its server over a unix socket, on this
// machine.
func (c *Client) Local() bool { return c.local }

type options struct {
	token        string
	tls          *tls.Config
	hc           *http.Client
	watchTimeout time.Duration
	first        net.Conn
	firstAt      time.Time
	wsFirst      net.Conn
}

// DefaultWatchTimeout is how long a watch stream may stay silent (the
// server sends heartbeats every 15s) before the client gives up on it.
const DefaultWatchTimeout = 45 * time.Second

// WithWatchTimeout sets how long a watch may go without a line, heartbeat
// or event, before it ends with errdefs.ErrUnavailable.
func WithWatchTimeout(d time.Duration) Option {
	return func(o *options) error { o.watchTimeout = d; return nil }
}

// Option configures a Client.
type Option func(*options) error

// WithToken sends token as a bearer token (needed over TCP).
func WithToken(token string) Option {
	return func(o *options) error { o.token = token; return nil }
}

// WithCA trusts the PEM certificates in pem for the server's certificate.
func WithCA(pem []byte) Option {
	return func(o *options) error {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("CA: no PEM certificate found")
		}
		if o.tls == nil {
			o.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls.RootCAs = pool
		return nil
	}
}

// WithCAFile is WithCA reading a file.
func WithCAFile(path string) Option {
	return func(o *options) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("CA file: %w", err)
		}
		return WithCA(b)(o)
	}
}

// WithTLSConfig uses cfg for https endpoints (client certificates, roots).
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) error { o.tls = cfg.Clone(); return nil }
}

// WithConn has the client send its first request over conn, a
// connection to its unix socket the caller has just made (to tell
// plainly that nothing listens there); later ones dial as usual. A
// short command then connects once. A conn that waited longer than
// firstConnFresh is closed and a new one dialled: the server gives a
// connection only so long to send its first request.
func WithConn(conn net.Conn) Option {
	return func(o *options) error { o.first, o.firstAt = conn, time.Now(); return nil }
}

const firstConnFresh = 2 * time.Second

// WithWebSocketConn has the client's first WebSocket (exec,
// port-forward) go over conn: a TLS connection to its https:// server
// that the caller has just made, verified as the client would have (its
// CA, the server's name), with no protocol negotiated (HTTP/1.1). Later
// ones dial as usual.
func WithWebSocketConn(conn net.Conn) Option {
	return func(o *options) error { o.wsFirst = conn; return nil }
}

// WithHTTPClient uses hc as is, ignoring the endpoint's transport needs.
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error { o.hc = hc; return nil }
}

// New returns a client of the server at endpoint: unix:///path/to/berth.sock
// or https://host:port.
func New(endpoint string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("client for %s: %w", endpoint, err)
		}
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", endpoint, err)
	}
	c := &Client{token: o.token, hc: o.hc, watchTimeout: o.watchTimeout, wsFirst: o.wsFirst}
	if c.watchTimeout <= 0 {
		c.watchTimeout = DefaultWatchTimeout
	}
	tr := NewTransport()
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			return nil, fmt.Errorf("client for %s: %w: no socket path", endpoint, errdefs.ErrInvalidArgument)
		}
		tr.Proxy = nil
		var firstMu sync.Mutex
		first := o.first
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			firstMu.Lock()
			c := first
			first = nil
			firstMu.Unlock()
			if c != nil && time.Since(o.firstAt) < firstConnFresh {
				return c, nil
			}
			if c != nil {
				c.Close()
			}
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://berth"
		c.local = true
	case "https":
		tr.TLSClientConfig = o.tls
		c.base = "https://" + u.Host
	default:
		return nil, fmt.Errorf("client for %s: %w: use unix:///path or https://host:port", endpoint, errdefs.ErrInvalidArgument)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

// NewTransport is the transport of the API's clients, New's over https,
// and the one an agent builds on (with its own TLS and dialer).
func NewTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	// The server's framer keeps a buffer as big as the largest frame it
	// has written on a connection, for the connection's life, and a node's
	// connection lives as long as the node: frames of HTTP/2's smallest
	// maximum, 16 KiB, not of Go's default 1 MiB, which let a watch's
	// burst go out as one frame of 256 KiB.
	//
	// Nor does it index the headers it sends: the server's table for
	// them would keep what a node's requests put in it (some 2.4 KB of
	// entries and their indexes) for the connection's life, to save the
	// node some 100 bytes a request, most of which are heartbeats. Set
	// from the start, the limit holds for the first requests too, sent
	// before the server's settings are read.
	tr.HTTP2 = &http.HTTP2Config{MaxReadFrameSize: 16 << 10, MaxEncoderHeaderTableSize: 1}
	return tr
}

// bodyFrame is the most of a request body one read gives: Go's HTTP/2
// transport sends what each read gives as a frame of its own, and the
// server keeps, for each connection's life, a read buffer as big as the
// largest frame and TLS record it has read. A node's status batch of
// tens of KB went in frames of 16 KiB, and every node kept room for
// them, with its connection idle most of its life.
const bodyFrame = 4 << 10

// shortReads reads at most bodyFrame bytes at a time.
type shortReads struct{ r *bytes.Reader }

func (s shortReads) Read(p []byte) (int, error) {
	if len(p) > bodyFrame {
		p = p[:bodyFrame]
	}
	return s.r.Read(p)
}

// upgradeClient sends the requests that switch protocols (a node's
// tunnel): HTTP/2 cannot carry them, so they go over HTTP/1.1, on a
// connection of their own, where the client's other requests share one
// HTTP/2 connection. Go's transport does so by itself for WebSockets only.
func (c *Client) upgradeClient() *http.Client {
	c.h1Once.Do(func() {
		c.h1 = c.hc
		tr, ok := c.hc.Transport.(*http.Transport)
		if !ok {
			return
		}
		h1 := tr.Clone()
		var p http.Protocols
		p.SetHTTP1(true)
		h1.Protocols = &p
		if h1.TLSClientConfig != nil {
			// A transport that has spoken HTTP/2 offers it in its TLS
			// configuration: offer HTTP/1.1 alone.
			h1.TLSClientConfig = h1.TLSClientConfig.Clone()
			h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		hc := *c.hc
		hc.Transport = h1
		c.h1 = &hc
	})
	return c.h1
}

// Error is an error answer from the server. errors.Is matches its
// category (errdefs.ErrNotFound...), and api.FieldErrors its fields.
type Error struct {
	Status  int
	Code    string
	Message string
	Fields  []api.FieldError
}

func (e *Error) Error() string { return e.Message }

// Unwrap gives the category and, for invalid input, the field errors.
func (e *Error) Unwrap() []error {
	var errs []error
	if cat := errdefs.FromCode(e.Code, e.Status); cat != nil {
		errs = append(errs, cat)
	}
	if len(e.Fields) > 0 {
		errs = append(errs, &api.ValidationError{Fields: e.Fields})
	}
	return errs
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, header http.Header, in, out any) error {
	resp, err := c.send(ctx, method, path, header, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// send sends a request and returns a 2xx response, or the error the
// server answered.
func (c *Client) send(ctx context.Context, method, path string, header http.Header, in any) (*http.Response, error) {
	var b []byte
	if in != nil {
		var err error
		if b, err = json.Marshal(in); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.ContentLength = int64(len(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(shortReads{bytes.NewReader(b)}), nil }
		req.Body, _ = req.GetBody()
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		return nil, fmt.Errorf("%s %s: %w: %w", method, path, errdefs.ErrUnavailable, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, errorFrom(method, path, resp)
}

// ErrorFrom reads the error an answer of the API (or of an agent, which
// answers the same way) carries.
func ErrorFrom(method, path string, resp *http.Response) error { return errorFrom(method, path, resp) }

// errorFrom reads the error a server answered.
func errorFrom(method, path string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb struct {
		Error  string           `json:"error"`
		Code   string           `json:"code"`
		Fields []api.FieldError `json:"fields"`
	}
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		e.Code, e.Message, e.Fields = eb.Code, eb.Error, eb.Fields
	} else {
		e.Message = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return e
}

// Version is the build the server runs.
func (c *Client) Version(ctx context.Context) (api.Version, error) {
	var v api.Version
	err := c.do(ctx, http.MethodGet, "/v1/version", nil, nil, &v)
	return v, err
}

// Healthz checks that the server and its store answer.
func (c *Client) Healthz(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// objectPath is the URL path of an object, or of its collection when
// name is empty.
func objectPath(kind api.Kind, namespace, name string) string {
	if !kind.Namespaced() {
		p := "/v1/" + kind.Plural()
		if name != "" {
			p += "/" + url.PathEscape(name)
		}
		return p
	}
	if namespace == "" {
		namespace = api.DefaultNamespace
	}
	p := "/v1/namespaces/" + url.PathEscape(namespace) + "/" + kind.Plural()
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

func ifMatch(rev int64) http.Header {
	if rev == 0 {
		return nil
	}
	return http.Header{"If-Match": {strconv.FormatInt(rev, 10)}}
}

// DefaultEndpoint is where a server started with the default data dir
// listens.
const DefaultEndpoint = "unix:///var/lib/berth/berth.sock"

// Apply creates or updates an object of any kind, as parsed from a spec
// file, and reports whether it was created. A revision in obj is a
// precondition (see Resource.Apply).
func (c *Client) Apply(ctx context.Context, obj api.Object) (stored api.Object, created bool, err error) {
	res, err := c.ApplyWith(ctx, obj, ApplyOptions{})
	return res.Object, res.Created, err
}

// ApplyOptions changes what an apply does.
type ApplyOptions struct {
	// DryRun checks the object as an apply would and answers what would be
	// stored, storing nothing.
	DryRun bool
}

// ApplyResult is what an apply did.
type ApplyResult struct {
	// Object is the object as stored (or, in a dry run, as it would be).
	Object api.Object
	// Created: there was no such object; Unchanged: its spec and labels
	// were as applied, and nothing was written.
	Created, Unchanged bool
	// Warnings are what the server warned of (Warning headers): stored,
	// but not as it will run yet (a pull secret that does not exist).
	Warnings []string
}

// ApplyWith is Apply with options, saying whether anything changed.
func (c *Client) ApplyWith(ctx context.Context, obj api.Object, opts ApplyOptions) (ApplyResult, error) {
	m := obj.GetMetadata()
	path := objectPath(obj.GetKind(), m.Namespace, m.Name)
	if opts.DryRun {
		path += "?dryRun=1"
	}
	resp, err := c.send(ctx, http.MethodPut, path, nil, obj)
	if err != nil {
		return ApplyResult{}, err
	}
	defer resp.Body.Close()
	out, _ := api.New(obj.GetKind())
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return ApplyResult{}, fmt.Errorf("PUT %s: decoding the answer: %w", path, err)
	}
	return ApplyResult{Object: out, Created: resp.StatusCode == http.StatusCreated,
		Unchanged: resp.Header.Get("Berth-Apply") == "unchanged", Warnings: warnings(resp.Header)}, nil
}

// warnings are the texts of h's Warning headers (299 - "text").
func warnings(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Warning") {
		_, text, ok := strings.Cut(v, " - ")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(text); err == nil {
			text = u
		}
		out = append(out, text)
	}
	return out
}

// Delete removes an object of any kind; a non-zero revision is a
// precondition.
func (c *Client) Delete(ctx context.Context, kind api.Kind, namespace, name string, revision int64) error {
	return c.do(ctx, http.MethodDelete, objectPath(kind, namespace, name), ifMatch(revision), nil, nil)
}

// RegistrySettings reads the cluster's registry settings (GET /v1/registry).
func (c *Client) RegistrySettings(ctx context.Context) (*api.RegistrySettings, error) {
	var rs api.RegistrySettings
	if err := c.do(ctx, http.MethodGet, "/v1/registry", nil, nil, &rs); err != nil {
		return nil, err
	}
	return &rs, nil
}

// SetRegistrySettings replaces the cluster's registry settings; a
// non-zero rs.Revision must be the current one (else a conflict).
func (c *Client) SetRegistrySettings(ctx context.Context, rs *api.RegistrySettings) (*api.RegistrySettings, error) {
	var out api.RegistrySettings
	if err := c.do(ctx, http.MethodPut, "/v1/registry", nil, rs, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
