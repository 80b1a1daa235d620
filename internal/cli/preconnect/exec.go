package preconnect

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// ExecFlags are where exec's own flags are parsed to.
type ExecFlags struct {
	Interactive, TTY *bool
	Env              *[]string
	Container        *string
}

// Define defines exec's own flags on fs: the one definition of them, for
// the command line and for the look ahead here.
func (f ExecFlags) Define(fs *pflag.FlagSet) {
	fs.BoolVarP(f.Interactive, "interactive", "i", false, "pass stdin to the command")
	fs.BoolVarP(f.TTY, "tty", "t", false, "run the command on a terminal (sized as this one, and resized with it)")
	fs.StringArrayVarP(f.Env, "env", "e", nil, "environment variable KEY=VALUE")
	fs.StringVarP(f.Container, "container", "c", "", "run in this init or sidecar container of the instance (default: main)")
}

// Plan is an exec without stdin or terminal of a name the server
// resolves (an instance, or a service's or job's first running one):
// where it goes, with which credentials, and what it runs.
type Plan struct {
	Server, CAFile, Token string
	// Socket is the local server's unix socket (the data dir's
	// berth.sock) when no Server is named.
	Socket          string
	Namespace, Name string
	Command, Env    []string
	Container       string
}

// Equal says whether p and q are the same request; nil is none.
func (p *Plan) Equal(q *Plan) bool {
	if p == nil || q == nil {
		return p == q
	}
	return p.Server == q.Server && p.Socket == q.Socket && p.CAFile == q.CAFile && p.Token == q.Token &&
		p.Namespace == q.Namespace && p.Name == q.Name && p.Container == q.Container &&
		slices.Equal(p.Command, q.Command) && slices.Equal(p.Env, q.Env)
}

func (p *Plan) String() string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("exec %s/%s %q env %q container %q at %s", p.Namespace, p.Name, p.Command, p.Env, p.Container, p.Endpoint())
}

// Endpoint is the API endpoint p goes to, as api/client takes it.
func (p *Plan) Endpoint() string {
	if p.Server == "" {
		return "unix://" + p.Socket
	}
	return p.Server
}

// Host is the host[:port] of p's requests, as api/client sends them:
// the URL's, or "berth" on the local socket.
func (p *Plan) Host() string {
	if p.Server == "" {
		return "berth"
	}
	u, err := url.Parse(p.Server)
	if err != nil {
		return ""
	}
	return u.Host
}

// PlanOf is the plain exec args (the command line after the program's
// name) ask for, or nil when they ask for something else or anything
// about them is in doubt. It reads a strict subset of exec's grammar,
// with the command line's own flag definitions: shared flags, "exec",
// shared or exec flags each with its value after "=" or as the next
// argument, a bare name, and the command. -i, -t, a kind or namespace in
// the name, combined short flags, "--" before the name, a namespace that
// is no DNS label, or anything that does not parse, is no Plan.
func PlanOf(args []string) *Plan {
	// Most commands are not exec: they skip the flag sets (every process
	// of the binary, container stages too, runs this).
	at := slices.Index(args, "exec")
	if at < 0 {
		return nil
	}
	var g [6]string
	shared := Flags{DataDir: &g[0], Output: &g[1], Server: &g[2], Token: &g[3], Namespace: &g[4], CAFile: &g[5]}
	fs := pflag.NewFlagSet("berth", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false)
	shared.Define(fs)
	// The shared flags end at the first "exec" that is no flag's value.
	if !strictFlags(args[:at]) || fs.Parse(args[:at+1]) != nil || fs.NArg() != 1 {
		return nil
	}
	// As cobra does, exec's flag set (its own and the shared ones) reads
	// the whole command line but the command's name.
	var interactive, tty bool
	var env []string
	var container string
	fs = pflag.NewFlagSet("berth exec", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false)
	shared.Define(fs)
	ExecFlags{&interactive, &tty, &env, &container}.Define(fs)
	rest := slices.Concat(args[:at], args[at+1:])
	if fs.Parse(rest) != nil || fs.Changed("interactive") || fs.Changed("tty") {
		return nil
	}
	pos := fs.Args()
	if !strictFlags(rest[:len(rest)-len(pos)]) || len(pos) < 2 {
		return nil
	}
	target, command := pos[0], pos[1:]
	if command[0] == "--" { // as exec reads its command: "--" only separates
		command = command[1:]
	}
	if len(command) == 0 || target == "" || strings.HasPrefix(target, "-") || strings.Contains(target, "/") || !headerSafe(g[3]) {
		return nil
	}
	ns := g[4]
	if ns == "" {
		ns = "default" // api.DefaultNamespace, whose package is not initialised yet
	} else if !dnsLabel(ns) {
		return nil
	}
	p := &Plan{Server: g[2], CAFile: g[5], Token: g[3], Namespace: ns, Name: target,
		Command: slices.Clone(command), Env: env, Container: container}
	if p.Server == "" {
		p.Socket = filepath.Join(g[0], "berth.sock") // api.SocketPath
	}
	return p
}

// dnsLabel is api.ValidateName's rule for a namespace, which this
// package cannot call while it initialises: 1 to 63 lowercase letters,
// digits and '-', starting and ending with a letter or digit.
func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// headerSafe says whether token goes into the Authorization header as
// it is: printable ASCII, no spaces, which net/http would trim or refuse.
func headerSafe(token string) bool {
	for _, c := range []byte(token) {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// strictFlags says whether flags are all of the forms --name=value,
// --name value and -x value, which pflag and cobra's command finder read
// alike; combined short flags (-nx), -x=value and "--" are left to main.
func strictFlags(flags []string) bool {
	for i := 0; i < len(flags); i++ {
		a := flags[i]
		switch {
		case strings.HasPrefix(a, "--") && len(a) > 2:
			if !strings.Contains(a, "=") {
				i++ // its value
			}
		case len(a) == 2 && a[0] == '-' && a[1] != '-':
			i++
		default:
			return false
		}
	}
	return true
}

// Target is the request target of p's WebSocket, as api/client's Exec
// sends it (its test holds the two together, and the client checks them
// when it takes the stream over): the exec route, and a query of the
// command, its environment, the container and resolve=1.
func (p *Plan) Target() string {
	q := url.Values{"cmd": p.Command}
	for _, e := range p.Env {
		q.Add("env", e)
	}
	if p.Container != "" {
		q.Set("container", p.Container)
	}
	q.Set("resolve", "1")
	return "/v1/namespaces/" + url.PathEscape(p.Namespace) + "/instances/" + url.PathEscape(p.Name) + "/exec?" + q.Encode()
}

// Sent is an exec request sent ahead on the connection made ahead: the
// server's answer waits on Conn, to be read with net/http (which
// initialises after this package) once the binary has started.
type Sent struct {
	Plan *Plan
	Conn net.Conn
	// Key is the request's Sec-WebSocket-Key.
	Key string
	// Err is why writing the request failed: it may have gone out in
	// part, or whole, so it is not sent again.
	Err error
	// Answer is what was read of the server's answer while the binary
	// started: it comes before what is still to be read on Conn.
	Answer []byte
}

// Send writes p's WebSocket upgrade request, as api/client's WebSocket
// client writes it, to c.
func (p *Plan) Send(c net.Conn) *Sent {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	s := &Sent{Plan: p, Conn: c, Key: base64.StdEncoding.EncodeToString(b)}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Go-http-client/1.1\r\n", p.Target(), p.Host())
	if p.Token != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", p.Token)
	}
	fmt.Fprintf(&req, "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n", s.Key)
	if _, err := io.WriteString(c, req.String()); err != nil {
		s.Err = fmt.Errorf("exec request sent while starting: %w", err)
	}
	return s
}
