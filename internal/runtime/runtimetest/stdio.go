package runtimetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What "probe stdio" checks: a process started for a caller (an
// operator's shell, or the runtime's Exec) must get neither the caller's
// terminal nor the caller's output file, only what berth relays.

// OpenPty opens a new pseudo-terminal pair, closed when the test ends.
func OpenPty(t testing.TB) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// CallerFile makes a caller's output file, holding secret, and opens it
// for appending, as a shell's "> file" would; it is closed when the test
// ends.
func CallerFile(t testing.TB, secret string) (path string, out *os.File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return path, out
}

// ExpectCallerKept checks what "probe stdio" reported (res, from its
// output out) run with the caller's terminal pts as stdin and the
// caller's file holding secret as stdout: no controlling terminal, no
// byte typed into the caller's terminal, and the file not read back.
func ExpectCallerKept(t *testing.T, res map[string]string, out, secret string, pts *os.File) {
	t.Helper()
	expect(t, res, map[string]string{
		"tiocsti0": "ENOTTY", "tiocsti1": "ENOTTY", "tiocsti2": "ENOTTY",
		// No controlling terminal: /dev/tty opens nothing.
		"devtty": "ENXIO", "tty_nr": "0", "fds": "0,1,2",
	}, out)
	if strings.Contains(res["reread"], secret) {
		t.Errorf("the container read back the caller's output file: %q", res["reread"])
	}
	if n, err := unix.IoctlGetInt(int(pts.Fd()), unix.TIOCINQ); err != nil || n != 0 {
		t.Errorf("the caller's terminal has %d bytes typed into it (%v)", n, err)
	}
}

// ExpectNoLateWrites waits until the child "probe stdio" leaves behind,
// which counts its writes in the file late, has tried a few more times,
// and then wants the caller's file at path still size bytes long.
func ExpectNoLateWrites(t *testing.T, late, path string, size int64, timeout time.Duration) {
	t.Helper()
	count := func() int {
		b, _ := os.ReadFile(late)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	first := count()
	eventually(t, timeout, "the left-behind writer to try again", func() bool { return count() >= min(first+5, lateTries) })
	if fi, err := os.Stat(path); err != nil || fi.Size() != size {
		t.Errorf("the caller's output file grew from %d bytes after the command returned", size)
	}
}

// lateTries is how often the probe's left-behind child writes.
const lateTries = 60
