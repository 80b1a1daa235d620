package agent

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
)

// A migration stream straight from the source's agent to the target's.
// Through the server, each byte of the images is decrypted and encrypted
// again there, and framed twice in the nodes' tunnels: for a 100 MB
// container that relay costs as much CPU as the dump, inside the
// downtime. So the target, as it prepares, listens for the stream on its
// node address (a port of its own, for this one migration) and tells the
// server where, which tells the source; the source dials it before it
// freezes the container, and sends the stream there.
//
// Both ends are authenticated: the source by its node certificate (the
// cluster CA's, naming the source node the server chose) and by a token
// the target made for this migration and only the server passed on; the
// target by a key it made for this migration, whose certificate's hash
// the server passed on to the source. No other node can send a
// checkpoint to the target, nor read one: nothing is served, only
// received, and only from the source. Where the source cannot reach the
// target (a firewall), the server falls back to relaying the stream.

// directAcceptTimeout bounds how long a target listens for a stream that
// does not come, and one connection's handshake and token.
const (
	directAcceptTimeout = 20 * time.Second
	directHandshake     = 10 * time.Second
	// directDial bounds the source's dial and handshake: a target whose
	// port a firewall drops is relayed to soon, the container still
	// running meanwhile.
	directDial = 3 * time.Second
	// directWriteTimeout bounds one write of the stream: a target that
	// stopped reading (its node gone) must not hold the source frozen.
	directWriteTimeout = 30 * time.Second
)

// directTokenLen is the length of a direct stream's token, in bytes.
const directTokenLen = 32

// directIn is a target's listener for one migration's direct stream.
type directIn struct {
	ln     net.Listener
	offer  api.MigrationDirect
	token  []byte
	stream chan net.Conn // the authenticated stream, once
	once   sync.Once
}

// listenDirect opens a target's listener for a stream from the agent of
// node from, on host (this node's address), with the node's TLS (its
// trusted CA pool).
func listenDirect(host, from string, peer *tls.Config) (*directIn, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "berth migration"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &x509.Certificate{Subject: pkix.Name{CommonName: "berth migration"}}, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	token := make([]byte, directTokenLen)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    peer.RootCAs,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			if name, ok := nodecert.NodeName(cs.PeerCertificates[0]); !ok || name != from {
				return fmt.Errorf("certificate of %q: only node %q sends this stream", cs.PeerCertificates[0].Subject.CommonName, from)
			}
			return nil
		},
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	d := &directIn{ln: tls.NewListener(ln, cfg), token: token, stream: make(chan net.Conn, 1),
		offer: api.MigrationDirect{Addr: ln.Addr().String(), Cert: hex.EncodeToString(sum[:]), Token: hex.EncodeToString(token)}}
	go d.accept()
	time.AfterFunc(directAcceptTimeout, d.close)
	return d, nil
}

// directHandshakes bounds the connections a target authenticates at once.
const directHandshakes = 8

// accept takes the first connection that proves itself the source's. Each
// is checked on its own, so that one stalling its handshake holds up no
// other.
func (d *directIn) accept() {
	defer d.close()
	slots := make(chan struct{}, directHandshakes)
	var won sync.Once
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		go func() {
			defer func() { <-slots }()
			taken := false
			if d.authenticate(c) {
				won.Do(func() {
					// Closed before it is handed over: once take has
					// the stream, no other connection gets in.
					d.close()
					d.stream <- c
					taken = true
				})
			}
			if !taken {
				c.Close()
			}
		}()
	}
}

// authenticate completes c's handshake (the source's node certificate)
// and reads the migration's token from it.
func (d *directIn) authenticate(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(directHandshake))
	tok := make([]byte, directTokenLen)
	if _, err := io.ReadFull(c, tok); err != nil || subtle.ConstantTimeCompare(tok, d.token) != 1 {
		return false
	}
	return c.SetDeadline(time.Time{}) == nil
}

func (d *directIn) close() { d.once.Do(func() { d.ln.Close() }) }

// take waits for the stream, until ctx ends.
func (d *directIn) take(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, directAcceptTimeout)
	defer cancel()
	select {
	case c := <-d.stream:
		return c, nil
	case <-ctx.Done():
		d.close()
		select {
		case c := <-d.stream: // came as it closed
			return c, nil
		default:
		}
		return nil, fmt.Errorf("%w: the source's stream did not come: %w", errdefs.ErrUnavailable, ctx.Err())
	}
}

// dialDirect is the source's connection to the target's listener that
// offer names, with the node's TLS (its certificate), the token sent.
func dialDirect(ctx context.Context, offer api.MigrationDirect, peer *tls.Config) (net.Conn, error) {
	want, err := hex.DecodeString(offer.Cert)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("%w: certificate hash %q", errdefs.ErrInvalidArgument, offer.Cert)
	}
	token, err := hex.DecodeString(offer.Token)
	if err != nil || len(token) != directTokenLen {
		return nil, fmt.Errorf("%w: token of the direct stream", errdefs.ErrInvalidArgument)
	}
	cfg := peer.Clone()
	cfg.MinVersion = tls.VersionTLS13
	// The target's key is this migration's own: its hash, which came
	// from the server, is what is trusted, not a CA.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the target sent no certificate")
		}
		sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if subtle.ConstantTimeCompare(sum[:], want) != 1 {
			return errors.New("the target's certificate is not the one the server named")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, directDial)
	defer cancel()
	c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", offer.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: direct stream to %s: %w", errdefs.ErrUnavailable, offer.Addr, err)
	}
	_ = c.SetWriteDeadline(time.Now().Add(directHandshake))
	if _, err := c.Write(token); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: direct stream to %s: %w", errdefs.ErrUnavailable, offer.Addr, err)
	}
	return c, nil
}

// directOut is a source's direct stream: w buffers writes to c.
type directOut struct {
	c    net.Conn
	dw   *deadlineWriter
	w    *bufio.Writer
	once sync.Once
}

// directBuffer is the size of a direct stream's writes.
const directBuffer = 1 << 20

// dialDirectOut dials the target's listener the query names (direct,
// cert, token).
func (a *Agent) dialDirectOut(ctx context.Context, q url.Values) (*directOut, error) {
	if a.cfg.PeerTLS == nil {
		return nil, fmt.Errorf("%w: node %q has no node certificate for a direct stream", errdefs.ErrUnavailable, a.cfg.Node.Name)
	}
	c, err := dialDirect(ctx, api.MigrationDirect{Addr: q.Get("direct"), Cert: q.Get("cert"), Token: q.Get("token")}, a.cfg.PeerTLS)
	if err != nil {
		return nil, err
	}
	dw := &deadlineWriter{c: c}
	return &directOut{c: c, dw: dw, w: bufio.NewWriterSize(dw, directBuffer)}, nil
}

// finish sends what is buffered and closes the stream.
func (d *directOut) finish() error {
	err := d.w.Flush()
	var cerr error
	d.once.Do(func() { cerr = d.c.Close() })
	return errors.Join(err, cerr)
}

func (d *directOut) close() { d.once.Do(func() { d.c.Close() }) }

// sent is the bytes written to the connection.
func (d *directOut) sent() int64 { return d.dw.n }

// deadlineWriter gives each write to c its own deadline.
type deadlineWriter struct {
	c net.Conn
	n int64
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(time.Now().Add(directWriteTimeout))
	n, err := w.c.Write(p)
	w.n += int64(n)
	return n, err
}
