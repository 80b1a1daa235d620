package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/pageserver"
)

// Post-copy migration (?lazy=1 on the source's POST and the target's PUT):
// the source's final dump leaves the private memory out (runtime.LazyDump)
// and the target restores the processes before it has come, its
// lazy-pages daemon taking each page as it is touched and the rest
// meanwhile. The memory crosses on one more pair of routes the server
// joins end to end:
//
//	POST /v1/instances/{uid}/migrate/pages  Upgrade: berth-pages; source: its
//	                                        page server; target: its daemon
//
// so the pages ride the nodes' tunnels like the images, and CRIU's page
// server, which has no authentication, listens on the source's loopback only.
//
// Once the target runs the processes, the source's are killed at commit:
// CRIU holds their memory in its pipes, and a failure later cannot let
// them run on beside the target's. Before that, an abort makes the page
// server fail (poison), and CRIU lets the processes run on here; the
// daemon's request that ends the transfer waits for the commit, since a
// transfer ended well makes CRIU kill them.

// lazyIn is the hook of restoreIn that starts a post-copy restore's
// lazy-pages daemon, handing h's pages route its socket; nil when !lazy.
func lazyIn(lazy bool, h *hold) func(ctx context.Context, final, dir string) (*runtime.LazyPages, error) {
	if !lazy {
		return nil
	}
	return func(ctx context.Context, final, _ string) (*runtime.LazyPages, error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("pages socket: %w", err)
		}
		ours, theirs := os.NewFile(uintptr(fds[0]), "pages"), os.NewFile(uintptr(fds[1]), "pages-daemon")
		defer theirs.Close()
		conn, err := net.FileConn(ours)
		ours.Close()
		if err != nil {
			return nil, fmt.Errorf("pages socket: %w", err)
		}
		// The daemon outlives the request that started it.
		lp, err := runtime.StartLazyPages(context.WithoutCancel(ctx), final, theirs)
		if err != nil {
			conn.Close()
			return nil, err
		}
		h.pages <- conn
		return lp, nil
	}
}

// watchLazyPages waits for a post-copy restore's daemon: when it fails,
// the restored processes lack memory they may touch next, so they are
// killed at once (the reconciler then starts the instance afresh, as for
// any exit) rather than run on with pages that will never come.
func (a *Agent) watchLazyPages(inst *Instance, id string, lp *runtime.LazyPages, dir string) {
	t0 := time.Now()
	<-lp.Done()
	if err := lp.Err(); err != nil {
		a.log.Error("migration: post-copy failed; killing the restored container", "instance", inst.Key(), "container", id, "err", err)
		if err := a.cfg.Runtime.Kill(context.Background(), id, syscall.SIGKILL); err != nil && !errors.Is(err, runtime.ErrNotRunning) {
			a.log.Warn("migration: kill after a failed post-copy", "container", id, "err", err)
		}
		a.markDirty(id)
	} else {
		a.log.Info("migration: post-copy done", "instance", inst.Key(), "container", id, "took", time.Since(t0))
	}
	_ = runtime.RemoveTree(dir)
}

// pageServer is a source's connection to CRIU's page server. The
// daemon's requests go on whole (pageserver.Forward), so a poison never
// lands inside one. Its close request is held until the commit: CRIU
// kills the processes once the transfer ends well, and a target whose
// restore failed may still end it well (its daemon sees the restored
// processes go, and closes). Only after the close has gone through may
// the connection close (see package pageserver).
type pageServer struct {
	conn      net.Conn
	mu        sync.Mutex
	poisoned  bool
	committed bool
	held      []byte // the daemon's close request, until the commit
	closed    bool   // the close request has gone through
	ended     bool   // the daemon's side has ended
	// cut closes when the daemon's side ended without a close request.
	cut chan struct{}
	// pace keeps faults from waiting behind large background reads.
	pace pageserver.Pacer
}

// Write sends one whole request (paced: its page count may shrink),
// unless the transfer was poisoned; a close request waits for the commit.
func (p *pageServer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.poisoned {
		return 0, errors.New("page server: the transfer was failed on purpose")
	}
	p.pace.Pace(b, time.Now())
	if pageserver.Ends(b) && !p.committed {
		p.held = append([]byte(nil), b...)
		return len(b), nil
	}
	p.closed = p.closed || pageserver.Ends(b)
	return p.conn.Write(b)
}

// forward sends the daemon's requests from r until r ends; once the
// close request has gone through, the page server's end closes too.
func (p *pageServer) forward(r io.Reader) {
	_, _ = pageserver.Forward(p, r)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended = true
	switch {
	case p.closed:
		p.conn.Close()
	case p.held == nil:
		close(p.cut)
	}
}

// commit lets the daemon's close request through, now or when it comes:
// the instance runs on the target.
func (p *pageServer) commit() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.committed = true
	if p.held == nil || p.poisoned {
		return
	}
	_, _ = p.conn.Write(p.held)
	p.held, p.closed = nil, true
	if p.ended {
		p.conn.Close()
	}
}

// poison makes CRIU's page server fail the transfer, unless the close
// request has gone through already.
func (p *pageServer) poison() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.poisoned || p.closed {
		return
	}
	p.poisoned = true
	_, _ = p.conn.Write(pageserver.Poison())
}

// pageServerOf is h's connection to its page server, dialled once.
func (a *Agent) pageServerOf(h *hold) (*pageServer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h.ps != nil {
		return h.ps, nil
	}
	conn, err := net.Dial("tcp", h.lazy.Addr)
	if err != nil {
		return nil, fmt.Errorf("page server: %w", err)
	}
	h.ps = &pageServer{conn: conn, cut: make(chan struct{})}
	return h.ps, nil
}

// settleLazy settles a source's post-copy move (finishOut, once). Commit
// kills the processes (their memory stays in CRIU's pipes until the
// target has it) and removes the container once the transfer is over;
// abort makes the transfer fail, so CRIU lets them run on.
func (a *Agent) settleLazy(uid string, h *hold, commit bool) error {
	ps, err := a.pageServerOf(h)
	if commit {
		a.log.Info("migration: committed (post-copy)", "instance", uid, "container", h.container)
		a.setHold(uid, &hold{kind: holdMoved, container: h.container, until: time.Now().Add(movedTimeout)}, true)
		if err := a.cfg.Runtime.Kill(context.Background(), h.container, syscall.SIGKILL); err != nil && !errors.Is(err, runtime.ErrNotRunning) {
			a.log.Warn("migration: kill the moved processes", "instance", uid, "err", err)
		}
		if ps != nil {
			ps.commit()
		}
		go func() {
			// The daemon's close ends the dump; without it (the target
			// or the relay gone), nothing will come for it to serve.
			var cut <-chan struct{}
			if ps != nil {
				cut = ps.cut
			}
			select {
			case <-h.lazy.Done():
			case <-cut:
			case <-time.After(verdictTimeout):
			}
			if ps != nil {
				ps.poison()
			}
			<-h.lazy.Done()
			if err := h.lazy.Err(); err != nil {
				a.log.Warn("migration: post-copy transfer ended in failure", "instance", uid, "err", err)
			}
			if ps != nil {
				ps.conn.Close()
			}
			_ = runtime.RemoveTree(h.dir)
			a.markDirty(h.container)
		}()
		return nil
	}
	defer a.liftHold(uid, h)
	defer a.markDirty(h.container)
	defer func() { _ = runtime.RemoveTree(h.dir) }()
	if err != nil {
		// No page server to tell: the dump has ended already.
		<-h.lazy.Done()
	} else {
		ps.poison()
		<-h.lazy.Done()
		ps.conn.Close()
	}
	if h.lazy.Err() == nil {
		return fmt.Errorf("instance %s: %w: its memory had all gone to the target before the abort; it starts afresh here", uid, errdefs.ErrConflict)
	}
	a.log.Info("migration: aborted, running here again (post-copy)", "instance", uid, "container", h.container)
	return nil
}

// serveMigratePages joins a post-copy's page stream to the upgraded
// request: on the source, CRIU's page server; on the target, the
// lazy-pages daemon of the restore.
func (a *Agent) serveMigratePages(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	h := a.holdOf(uid)
	switch {
	case h != nil && h.kind == holdOut && h.lazy != nil:
		select {
		case <-h.dumped:
		case <-r.Context().Done():
			return
		}
		if h.dumpErr != nil {
			writeErr(w, fmt.Errorf("instance %s: %w: its dump failed", uid, errdefs.ErrFailedPrecondition))
			return
		}
		ps, err := a.pageServerOf(h)
		if err != nil {
			writeErr(w, fmt.Errorf("instance %s: %w", uid, err))
			return
		}
		upgradePages(w, func(remote net.Conn, rd io.Reader) {
			go func() {
				_, _ = io.Copy(remote, ps.conn)
				remote.Close()
			}()
			ps.forward(rd)
		})
	case h != nil && h.kind == holdIn && h.pages != nil:
		var conn net.Conn
		select {
		case conn = <-h.pages:
		case <-r.Context().Done():
			return
		case <-time.After(time.Minute):
			writeErr(w, fmt.Errorf("instance %s: %w: no post-copy restore began here", uid, errdefs.ErrUnavailable))
			return
		}
		defer conn.Close()
		// The daemon's socket closes with the stream: a daemon cut off
		// fails, and its restored processes are killed (watchLazyPages).
		upgradePages(w, func(remote net.Conn, rd io.Reader) {
			ended := make(chan struct{}, 2)
			go func() {
				_, _ = io.Copy(conn, rd)
				ended <- struct{}{}
			}()
			go func() {
				_, _ = io.Copy(remote, conn)
				ended <- struct{}{}
			}()
			<-ended
		})
	default:
		writeErr(w, fmt.Errorf("instance %s: %w: no post-copy migration of it under way on node %q", uid, errdefs.ErrNotFound, a.cfg.Node.Name))
	}
}

// upgradePages answers the request 101 with the pages protocol and runs
// serve on its connection (read through rd, which holds what came
// buffered), closing it after.
func upgradePages(w http.ResponseWriter, serve func(remote net.Conn, rd io.Reader)) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+api.MigrationPagesProtocol+"\r\n\r\n"); err != nil {
		return
	}
	serve(conn, brw.Reader)
}
