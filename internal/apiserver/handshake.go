package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"time"
)

// handshakeTimeout bounds a TLS handshake, as the http.Server's
// ReadHeaderTimeout did when it made the handshakes.
const handshakeTimeout = 10 * time.Second

// handshakeListener is a TLS listener whose connections come out of
// Accept with their handshake done, each made by a goroutine of its own
// that then ends. When http.Server makes the handshake, it does so on
// the goroutine that then serves the connection for its whole life: the
// handshake's deep stack (certificate checks, key exchange) grew that
// goroutine's stack to 16 KiB, and serving a connection keeps enough of
// it in use that the runtime never shrinks it back. A node keeps its
// connection open, so that was 16 KiB of stack for each node, where a
// goroutine that never made a handshake keeps 8.
type handshakeListener struct {
	inner net.Listener
	cfg   *tls.Config

	conns chan net.Conn
	errs  chan error
	// ctx ends with Close: Accept returns, and handshakes under way end.
	ctx    context.Context
	cancel context.CancelFunc
}

// newHandshakeListener serves TLS on inner with cfg; it accepts from
// inner until closed.
func newHandshakeListener(inner net.Listener, cfg *tls.Config) *handshakeListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &handshakeListener{inner: inner, cfg: cfg, conns: make(chan net.Conn), errs: make(chan error), ctx: ctx, cancel: cancel}
	go l.acceptLoop()
	return l
}

// acceptLoop accepts connections and starts each one's handshake. An
// error goes to Accept and waits there, so that http.Server's pause
// after a temporary error (too many open files) paces this loop too.
func (l *handshakeListener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.ctx.Done():
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go l.handshake(c)
	}
}

// handshake makes c's TLS handshake and hands the connection to Accept,
// or closes it.
func (l *handshakeListener) handshake(c net.Conn) {
	tc := tls.Server(c, l.cfg)
	ctx, cancel := context.WithTimeout(l.ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		if l.ctx.Err() != nil {
			c.Close() // the server is stopping: no news
			return
		}
		refuse(c, err)
		return
	}
	select {
	case l.conns <- tc:
	case <-l.ctx.Done():
		c.Close()
	}
}

// refuse closes c after a failed handshake, answering a client that
// spoke plain HTTP in words it reads, and logs why as http.Server did.
func refuse(c net.Conn, err error) {
	reason := err.Error()
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		reason = "client sent an HTTP request to an HTTPS server"
	}
	c.Close()
	log.Printf("http: TLS handshake error from %s: %v", c.RemoteAddr(), reason)
}

// looksLikeHTTP tells whether the first bytes a client sent begin an
// HTTP/1 request rather than a TLS record.
func looksLikeHTTP(hdr []byte) bool {
	for _, m := range []string{"GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH"} {
		if strings.HasPrefix(string(hdr), m) || strings.HasPrefix(m, string(hdr)) {
			return true
		}
	}
	return false
}

// Accept returns the next connection whose handshake is done.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and ends the handshakes under way.
func (l *handshakeListener) Close() error {
	l.cancel()
	return l.inner.Close()
}

// Addr is the address l listens on.
func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }
