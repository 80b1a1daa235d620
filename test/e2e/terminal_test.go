package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// terminal is a pseudo-terminal of the test's making with a command
// running on it, and what the command has shown on it so far.
type terminal struct {
	t      *testing.T
	master *os.File
	mu     sync.Mutex
	screen bytes.Buffer
}

// startTerminal starts cmd on a new terminal of rows×cols, with
// TERM=xterm-test, as the session leader whose controlling terminal it is.
func startTerminal(t *testing.T, cmd *exec.Cmd, rows, cols uint16) *terminal {
	t.Helper()
	master, slave := runtimetest.OpenPty(t)
	term := &terminal{t: t, master: master}
	term.resize(rows, cols)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.Env = append(os.Environ(), "TERM=xterm-test")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	check(t, cmd.Start())
	slave.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			term.mu.Lock()
			term.screen.Write(buf[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return term
}

// resize sets the terminal's size; the kernel sends its session SIGWINCH.
func (term *terminal) resize(rows, cols uint16) {
	check(term.t, unix.IoctlSetWinsize(int(term.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}))
}

// shows reports whether re matches what the terminal has shown.
func (term *terminal) shows(re *regexp.Regexp) bool {
	term.mu.Lock()
	defer term.mu.Unlock()
	return re.Match(term.screen.Bytes())
}

// type_ types s on the terminal.
func (term *terminal) type_(s string) {
	_, err := term.master.Write([]byte(s))
	check(term.t, err)
}

// String is what the terminal has shown.
func (term *terminal) String() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.screen.String()
}
