// Package preconnect holds the flags every berth command shares, and
// with them connects a WebSocket command (exec, port-forward) to its
// https:// API server while the rest of the binary is still starting.
//
// berth is one binary, so a CLI command pays every package initialiser
// of the server and the agent too: some 10 ms before main, on one core,
// much of it protobuf tables and regular expressions of etcd, gRPC and
// the image libraries. Packages initialise in import path order once their imports
// are done, and this one needs only net, crypto/tls and pflag, so its
// initialiser runs about half way through: the TCP connect and the TLS
// handshake it starts then run on another core while the rest
// initialises, where they used to come after main (2 ms of a remote
// exec's 28).
//
// The connection is only ever used for the server and CA file the
// command line settles on (Conn compares them), and only for what
// dialling it would have made anyway; a command that wants another
// server, or none, leaves it unused. Only the flags before the command
// name are read for it, with the same definitions as the command line's.
//
// A plain exec (PlanOf: no stdin, no terminal, a bare name) goes further:
// its WebSocket upgrade request is written on the connection as soon as
// the handshake ends, so that the command runs on its node while the
// binary finishes starting, and its answer is read here as it comes.
// With no server named, a plain exec goes the same way to the local
// server, over the data dir's unix socket (Plan.Socket).
// When all of it is in (the command's output and exit status) before main
// has taken the exec over, the process relays it and exits with the
// command's code there and then (follow, answer.go): the initialisers
// still to run would only have delayed it. This package's initialiser
// waits for that, up to 50 ms (holdFor), rather than let them run
// alongside the command. Otherwise
// internal/cli/preexec takes the answer over, with what was read of it,
// once main has read the command line the usual way and found it the
// same (see there).
package preconnect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/spf13/pflag"
)

// Flags are where the flags every berth command shares are parsed to.
type Flags struct {
	DataDir, Output, Server, Token, Namespace, CAFile *string
}

// Define defines the shared flags on fs, with their defaults from the
// environment: the one definition of them, for the command line and for
// the look ahead here.
func (f Flags) Define(fs *pflag.FlagSet) {
	fs.StringVar(f.DataDir, "data-dir", envOr("BERTH_DATA_DIR", "/var/lib/berth"), "directory for images, containers and state (env BERTH_DATA_DIR)")
	fs.StringVarP(f.Output, "output", "o", "", "output format: table (default), wide, json or yaml")
	fs.StringVar(f.Server, "server", os.Getenv("BERTH_SERVER"), "API endpoint (default unix://<data-dir>/berth.sock; env BERTH_SERVER)")
	fs.StringVar(f.Token, "token", os.Getenv("BERTH_TOKEN"), "bearer token for an https:// server (env BERTH_TOKEN)")
	fs.StringVarP(f.Namespace, "namespace", "n", os.Getenv("BERTH_NAMESPACE"), "namespace of the objects named (default \"default\"; env BERTH_NAMESPACE)")
	fs.StringVar(f.CAFile, "ca-file", os.Getenv("BERTH_CA_FILE"), "certificate to trust for an https:// server (env BERTH_CA_FILE)")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// websocketCommands are the commands whose first request is a WebSocket
// (api/client's dialWS): the connection made ahead is for it.
var websocketCommands = map[string]bool{"exec": true, "port-forward": true}

// fresh is how long a connection made ahead stays worth taking: the
// server gives a connection 10 s to send its request.
const fresh = 2 * time.Second

// patience is how long Conn waits for a handshake still under way (it
// takes 2 ms on a LAN): a server that answers slower than that is
// dialled again as usual, so that a dead one costs what it did before,
// and its error is the usual one.
const patience = 100 * time.Millisecond

// ahead is the connection started for this process's command line, nil
// when it names no WebSocket command to an https:// server.
var ahead *dial

type dial struct {
	server, caFile string
	plan           *Plan         // the exec to send on the connection, if any
	done           chan struct{} // closed once the handshake has ended

	mu      sync.Mutex
	conn    *tls.Conn // nil once taken, or when it failed
	at      time.Time
	sent    *Sent // the exec sent on the connection, until taken
	settled bool  // Conn or TakeSent was called: a connection made later is closed, an answer is main's
	// reading is closed once the sent exec's answer is no longer read
	// here (follow); answer is what was read of it.
	reading chan struct{}
	answer  []byte
}

// hold bounds how long the initialiser waits for the answer of a plain
// exec sent ahead (see holdFor).
const hold = 50 * time.Millisecond

func init() {
	ahead = start(os.Args[1:])
	ahead.holdFor(hold)
}

// holdFor waits, for at most wait, while a plain exec sent ahead is
// answered: when the answer is whole, follow ends the process and the
// initialisers still to run (some 110 of 340, 4-5 ms of CPU) never do.
// Run meanwhile, they took a core from the server, the agent and the
// exec's process on a machine with two, and were the CLI's largest cost
// after the request was out. It returns at once for any other command,
// once the answer is something main must read, or when wait is up (a
// command still running: main takes it over as before, wait later).
func (d *dial) holdFor(wait time.Duration) {
	if d == nil || d.plan == nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-d.done:
	case <-t.C:
		return
	}
	d.mu.Lock()
	reading := d.reading // set before done is closed
	d.mu.Unlock()
	if reading == nil {
		return
	}
	select {
	case <-reading:
	case <-t.C:
	}
}

// start connects ahead for args (the command line after the program's
// name) when they name a WebSocket command to an https:// server, with
// no proxy in the way, and returns the dial under way; otherwise nil.
func start(args []string) *dial {
	// Most commands name none: they skip the flag set (every process of
	// the binary, container stages too, runs this).
	if !slices.ContainsFunc(args, func(a string) bool { return websocketCommands[a] }) {
		return nil
	}
	var dataDir, output, server, token, namespace, caFile string
	fs := pflag.NewFlagSet("berth", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false) // stop at the command's name
	Flags{&dataDir, &output, &server, &token, &namespace, &caFile}.Define(fs)
	if fs.Parse(args) != nil || !websocketCommands[fs.Arg(0)] {
		return nil
	}
	if server == "" {
		// The local server, on the data dir's socket: only a plain exec
		// goes ahead there (a connection alone saves nothing).
		p := PlanOf(args)
		if p == nil || p.Server != "" || p.Socket == "" {
			return nil
		}
		d := &dial{plan: p, done: make(chan struct{})}
		go d.runLocal(p.Socket)
		return d
	}
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || proxied() {
		return nil
	}
	d := &dial{server: server, caFile: caFile, done: make(chan struct{})}
	if p := PlanOf(args); p != nil && p.Server == server && p.CAFile == caFile {
		d.plan = p
	}
	go d.run(u)
	return d
}

// proxied says whether the environment names a proxy for https, which
// the client's transport would go through.
func proxied() bool {
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
		if os.Getenv(k) != "" {
			return true
		}
	}
	return false
}

// run dials as the client's transport does for a WebSocket: TLS 1.2 at
// least, the CA file's certificates as the roots when one is given, the
// URL's host as the server name, and no protocol negotiation (HTTP/1.1).
func (d *dial) run(u *url.URL) {
	defer close(d.done)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if d.caFile != "" {
		pem, err := os.ReadFile(d.caFile)
		if err != nil {
			return
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return
		}
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	c, err := dialer.Dial("tcp", addr)
	if err != nil {
		return
	}
	d.made(c)
}

// runLocal connects to the local server's unix socket, for the plain
// exec it sends ahead.
func (d *dial) runLocal(socket string) {
	defer close(d.done)
	c, err := net.DialTimeout("unix", socket, 10*time.Second)
	if err != nil {
		return
	}
	d.made(c)
}

// made takes the connection the dial made: it sends the exec planned
// on it, or keeps it for Conn.
func (d *dial) made(c net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled {
		c.Close()
		return
	}
	if d.plan != nil {
		// Sent under the lock: once main has settled it is not sent.
		d.sent = d.plan.Send(c)
		if d.sent.Err == nil {
			d.reading = make(chan struct{})
			go d.follow(d.sent)
		}
		return
	}
	d.conn, d.at = c.(*tls.Conn), time.Now()
}

// TakeSent returns the exec request sent ahead on the connection made
// ahead, once; nil when none was sent, or the handshake is still under
// way after patience (then none will be). The caller reads the answer,
// and must not send the request again.
func TakeSent(ctx context.Context) *Sent {
	d := ahead
	if d == nil || d.plan == nil {
		return nil
	}
	d.await(ctx, patience)
	d.mu.Lock()
	s := d.sent
	d.sent, d.settled = nil, true
	reading := d.reading
	d.mu.Unlock()
	if s != nil && reading != nil {
		// The reader stops at its next read, or now if it waits in one.
		_ = s.Conn.SetReadDeadline(time.Now())
		<-reading
		_ = s.Conn.SetReadDeadline(time.Time{})
		s.Answer = d.answer
	}
	return s
}

// follow reads the answer of the exec s sent ahead until main takes it
// over (TakeSent) or it is something main must read (readEarly); when it
// is whole first, the process relays the command's output and exits
// with its code, as main would once the binary had started.
func (d *dial) follow(s *Sent) {
	defer close(d.reading)
	var b []byte
	buf := make([]byte, 16<<10)
	for len(b) < maxEarly {
		n, err := s.Conn.Read(buf)
		b = append(b, buf[:n]...)
		d.mu.Lock()
		d.answer = b
		if d.settled {
			d.mu.Unlock()
			return
		}
		st, outs, code := readEarly(b, s.Key)
		if st != earlyDone {
			d.mu.Unlock()
			if st == earlyPartial && err == nil {
				continue
			}
			return
		}
		// Under the lock for good: main cannot take the exec over now.
		for _, o := range outs {
			w := stdout
			if o.stderr {
				w = stderr
			}
			_, _ = w.Write(o.p)
		}
		s.Conn.Close()
		exit(code)
		d.sent = nil // exit returns in tests only
		d.mu.Unlock()
		return
	}
}

// Where an exec whose answer is whole before main takes it over ends;
// tests replace them.
var (
	stdout, stderr io.Writer = os.Stdout, os.Stderr
	exit                     = os.Exit
)

// Conn returns the connection made ahead to server, trusting the
// certificates in caFile, once its handshake is done, and hands it over
// to the caller; nil when none was made for these, it failed or is
// still under way after patience, or it was taken already. Whatever went
// wrong, dialling again says so plainly.
func Conn(ctx context.Context, server, caFile string) *tls.Conn {
	return ahead.take(ctx, server, caFile, patience)
}

// await waits for the dial to end, for at most wait.
func (d *dial) await(ctx context.Context, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-d.done:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (d *dial) take(ctx context.Context, server, caFile string, wait time.Duration) *tls.Conn {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	settled := d.settled // by TakeSent, which waited already
	d.mu.Unlock()
	ok := d.server == server && d.caFile == caFile
	if ok && !settled {
		d.await(ctx, wait)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.conn
	d.conn, d.settled = nil, true
	if c != nil && (!ok || time.Since(d.at) > fresh) {
		c.Close()
		return nil
	}
	return c
}
