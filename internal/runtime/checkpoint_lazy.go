package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Post-copy ("lazy pages"): a dump that leaves the processes' private
// memory out of the images and serves it, after the dump, from CRIU's
// page server; a restore that runs the processes before that memory has
// come, CRIU's lazy-pages daemon filling each page on its first touch
// (userfaultfd) and fetching the rest meanwhile. What crosses while the
// container runs nowhere is then its few MiB of images, not its memory.

// LazyPagesSocket is where a restore from an image directory finds the
// lazy-pages daemon serving it: a restore from a directory holding it
// takes its memory from that daemon (StartLazyPages).
const LazyPagesSocket = "lazy-pages.socket"

// LazyDump is a post-copy dump under way (CheckpointOptions.Lazy). Once
// Checkpoint returns, the images are written and the processes, frozen,
// wait for their memory to be taken from Addr. Done closes when it has
// been (Err nil: the processes are gone) or the transfer failed (Err
// set: CRIU let the processes run on, unless they were killed).
type LazyDump struct {
	// Addr is the page server's loopback address: only this host reaches it.
	Addr string
	done chan struct{}
	err  error
}

// lazyPipeSize is the pipe CRIU's page server reads a lazy page through
// (PIPE_MAX_SIZE pages, rounded up to a power of two: 4 MiB). CRIU sets it
// without looking whether it could: a process without CAP_SYS_RESOURCE
// (as in some VMs, root included) gets fs.pipe-max-size at most, and then
// serves a part of the first request and fails the transfer.
const lazyPipeSize = 4 << 20

const pipeMaxSize = "/proc/sys/fs/pipe-max-size"

// raisePipeMaxSize lets CRIU's page server have its pipe (lazyPipeSize)
// where the limit is lower. It raises a host-wide limit on one pipe's
// size (for unprivileged users too): 4 MiB rather than the default 1 MiB.
func raisePipeMaxSize() error {
	b, err := os.ReadFile(pipeMaxSize)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= lazyPipeSize {
		return nil
	}
	if err := os.WriteFile(pipeMaxSize, []byte(strconv.Itoa(lazyPipeSize)), 0o644); err != nil {
		return fmt.Errorf("raise %s to %d for CRIU's page server: %w", pipeMaxSize, lazyPipeSize, err)
	}
	return nil
}

// NewLazyDump picks the loopback port the page server will listen on.
func NewLazyDump() (*LazyDump, error) {
	if err := raisePipeMaxSize(); err != nil {
		return nil, fmt.Errorf("lazy dump: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lazy dump: a loopback port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &LazyDump{Addr: addr, done: make(chan struct{})}, nil
}

// Done closes when the dump has ended.
func (d *LazyDump) Done() <-chan struct{} { return d.done }

// Err is how the dump ended, once Done is closed.
func (d *LazyDump) Err() error { return d.err }

// lazyArgs are the dump's flags: the status descriptor is the command's
// first extra file (fd 3).
func (d *LazyDump) lazyArgs() []string {
	return []string{"--lazy-pages", "--page-server", d.Addr, "--status-fd", "3"}
}

// start runs cmd, the dump, and returns once its images are written and
// the page server listens, or the dump failed; thaw runs once it ends.
func (d *LazyDump) start(cmd *exec.Cmd, id, bin, dir string, thaw func()) error {
	fail := func(err error) error {
		thaw()
		d.err = err
		close(d.done)
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer pr.Close()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = []*os.File{pw}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fail(fmt.Errorf("container %q: %s checkpoint: %w", id, bin, err))
	}
	pw.Close()
	var ended sync.WaitGroup
	ended.Add(1)
	go func() {
		defer ended.Done()
		if err := cmd.Wait(); err != nil {
			d.err = fmt.Errorf("container %q: %s checkpoint (lazy): %w: %s%s", id, bin, err, bytes.TrimSpace(out.Bytes()), criuLogTail(dir, "dump.log"))
		}
	}()
	// CRIU writes one byte once the page server listens; EOF is a dump
	// that ended first (it failed).
	if _, err := io.ReadFull(pr, make([]byte, 1)); err != nil {
		ended.Wait()
		thaw()
		if d.err == nil {
			d.err = fmt.Errorf("container %q: %s checkpoint (lazy): it ended before its page server listened", id, bin)
		}
		close(d.done)
		return d.err
	}
	go func() {
		ended.Wait()
		thaw()
		close(d.done)
	}()
	return nil
}

// LazyPages is CRIU's lazy-pages daemon for a post-copy restore: it hands
// the restored processes their memory from a page server (through ps, a
// connected socket) and ends once all of it has come.
type LazyPages struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartLazyPages starts the lazy-pages daemon for a restore from the image
// directory dir, reading pages from the connected socket ps (the daemon
// takes its own copy), and returns once it waits for that restore.
func StartLazyPages(ctx context.Context, dir string, ps *os.File) (*LazyPages, error) {
	criu, err := criuPath()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	// fd 3 is ps, fd 4 the status pipe (ExtraFiles order).
	cmd := exec.CommandContext(ctx, criu, "lazy-pages", "--page-server", "--ps-socket", "3", "--status-fd", "4",
		"--images-dir", dir, "--work-dir", dir, "--log-file", "lazy-pages.log")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = []*os.File{ps, pw}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("images %s: lazy-pages: %w", dir, err)
	}
	pw.Close()
	lp := &LazyPages{cmd: cmd, done: make(chan struct{})}
	go func() {
		if err := cmd.Wait(); err != nil {
			lp.err = fmt.Errorf("images %s: lazy-pages: %w: %s%s", dir, err, bytes.TrimSpace(out.Bytes()), criuLogTail(dir, "lazy-pages.log"))
		}
		close(lp.done)
	}()
	if _, err := io.ReadFull(pr, make([]byte, 1)); err != nil {
		<-lp.done
		return nil, errors.Join(fmt.Errorf("images %s: lazy-pages ended before it was ready", dir), lp.err)
	}
	if _, err := os.Stat(filepath.Join(dir, LazyPagesSocket)); err != nil {
		lp.Stop()
		return nil, fmt.Errorf("images %s: lazy-pages: %w", dir, err)
	}
	return lp, nil
}

// Done closes when the daemon has ended: every page delivered (Err nil)
// or the transfer failed.
func (lp *LazyPages) Done() <-chan struct{} { return lp.done }

// Err is how the daemon ended, once Done is closed.
func (lp *LazyPages) Err() error { return lp.err }

// Stop ends the daemon and waits for it.
func (lp *LazyPages) Stop() {
	if lp.cmd.Process != nil {
		_ = lp.cmd.Process.Kill()
	}
	<-lp.done
}

// String names the daemon for logs.
func (lp *LazyPages) String() string {
	if lp.cmd.Process == nil {
		return "lazy-pages"
	}
	return "lazy-pages pid " + strconv.Itoa(lp.cmd.Process.Pid)
}
