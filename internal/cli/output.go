package cli

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/runtime"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"
)

func yamlMarshal(v any) ([]byte, error) { return yaml.Marshal(v) }

func setWinsize(f *os.File, cols, rows int) {
	_ = unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(cols), Row: uint16(rows)})
}

// useTerminal runs an exec through the caller's terminal: raw mode, and
// the pty sized like it. The returned func puts the terminal back.
func useTerminal(pr *runtime.ExecProcess) (func(), error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, errors.New("-t needs a terminal on stdin")
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	pr.Tty = true
	pr.Resize = func(pty *os.File) {
		if w, h, err := term.GetSize(fd); err == nil {
			setWinsize(pty, w, h)
		}
	}
	return func() { _ = term.Restore(fd, old) }, nil
}
