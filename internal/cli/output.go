package cli

import (
	"os"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"
)

func yamlMarshal(v any) ([]byte, error) { return yaml.Marshal(v) }

func setWinsize(f *os.File, cols, rows int) {
	_ = unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(cols), Row: uint16(rows)})
}
