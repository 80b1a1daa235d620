// Package preexec takes over the exec request internal/cli/preconnect
// sent while the binary was starting, once main has read the command
// line, and makes it the client's WebSocket.
//
// The package initialisers take some 15 ms of a remote exec's 30, and
// the request's way to the node and back (the server, the node's tunnel,
// the agent, the command's start and exit) some 6 ms. preconnect's
// initialiser runs half way through the start, before etcd's server
// packages, but before net/http and api/client too: it writes the upgrade request of a plain exec itself right after
// its TLS handshake (preconnect.Plan), so that the command runs on its
// node while the rest of the binary initialises. Here, with net/http
// ready, api/client's own WebSocket dial reads the server's answer from
// that connection, after checking that its request is the one that was
// sent.
//
// A command must never run that the command line would not have run,
// nor twice. preconnect reads only a strict subset of exec's grammar
// with the command line's own flag definitions (internal/cli's
// TestExecAheadIsWhatTheCommandLineSays holds the two together); main
// reads the command line as it always did and gives Take what it means.
// Take hands over the stream only when that is what was sent, and
// otherwise fails the command, which may have run: it is never sent
// again. An answer that is whole before main gets here (a short
// command) is relayed by preconnect itself, which then ends the process.
package preexec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/cli/preconnect"
)

// Options are the client options of the shared flags' token and CA file,
// for any https:// server.
func Options(token, caFile string) []client.Option {
	var opts []client.Option
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	if caFile != "" {
		opts = append(opts, client.WithCAFile(caFile))
	}
	return opts
}

// Take returns the stream of the exec sent ahead, or the error it got,
// with ok true, when one was sent; the caller then only relays it
// (ExecStream.Wait). want is what the command line means, as main read
// it: nil for an exec that is no Plan (-i, -t, a kind in the name). A
// request sent ahead that is not want is dropped and Take fails, as it
// may have run. ok is false when nothing was sent: the caller does the
// exec itself.
func Take(ctx context.Context, want *preconnect.Plan) (stream *client.ExecStream, ok bool, err error) {
	s := preconnect.TakeSent(ctx)
	if s == nil {
		return nil, false, nil
	}
	return take(ctx, s, want)
}

func take(ctx context.Context, s *preconnect.Sent, want *preconnect.Plan) (stream *client.ExecStream, ok bool, err error) {
	if s.Err != nil {
		s.Conn.Close()
		return nil, true, s.Err
	}
	if !s.Plan.Equal(want) {
		s.Conn.Close()
		return nil, true, fmt.Errorf("exec: the request sent while starting (%s) is not what the command line says (%s); not sent again", s.Plan, want)
	}
	p := s.Plan
	rt := &sentTrip{sent: s, br: bufio.NewReader(io.MultiReader(bytes.NewReader(s.Answer), s.Conn))}
	// No CA file: the connection was verified against it when it was made,
	// and the client makes no other.
	c, err := client.New(p.Endpoint(), append(Options(p.Token, ""), client.WithHTTPClient(&http.Client{Transport: rt}))...)
	if err != nil {
		s.Conn.Close()
		return nil, true, err
	}
	stream, err = c.StartExec(ctx, p.Namespace, p.Name, client.ExecOptions{Command: p.Command, Env: p.Env, Container: p.Container, Resolve: true})
	if !rt.used {
		s.Conn.Close()
	}
	return stream, true, err
}

// sentTrip answers the client's WebSocket request with the server's
// answer to the one sent ahead, once, after checking that the two are
// the same request.
type sentTrip struct {
	sent *preconnect.Sent
	br   *bufio.Reader
	used bool
}

var errNotSent = errors.New("the request sent while starting was not this one")

func (t *sentTrip) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.used {
		return nil, errors.New("the connection of the request sent while starting is taken")
	}
	t.used = true
	s := t.sent
	wantAuth := ""
	if s.Plan.Token != "" {
		wantAuth = "Bearer " + s.Plan.Token
	}
	if req.Method != http.MethodGet || req.URL.Host != s.Plan.Host() || req.URL.RequestURI() != s.Plan.Target() ||
		req.Header.Get("Authorization") != wantAuth || req.Header.Get("Upgrade") != "websocket" {
		s.Conn.Close()
		return nil, fmt.Errorf("%w: it was %s, this is %s %s", errNotSent, s.Plan.Target(), req.Method, req.URL.RequestURI())
	}
	resp, err := http.ReadResponse(t.br, req)
	if err != nil {
		s.Conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, nil // an error, read by the client; closing its body closes the connection
	}
	// The server accepted the key that was sent; the client checks the
	// answer against its own.
	if resp.Header.Get("Sec-WebSocket-Accept") != preconnect.AcceptKey(s.Key) {
		s.Conn.Close()
		return nil, fmt.Errorf("WebSocket handshake: the server's Sec-WebSocket-Accept %q is not the key's", resp.Header.Get("Sec-WebSocket-Accept"))
	}
	resp.Header.Set("Sec-WebSocket-Accept", preconnect.AcceptKey(req.Header.Get("Sec-WebSocket-Key")))
	resp.Body = conn{t.br, s.Conn}
	return resp, nil
}

// conn is the upgraded connection: what the answer's reader holds, then
// the rest.
type conn struct {
	r *bufio.Reader
	c interface {
		Write([]byte) (int, error)
		Close() error
	}
}

func (c conn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c conn) Write(p []byte) (int, error) { return c.c.Write(p) }
func (c conn) Close() error                { return c.c.Close() }
