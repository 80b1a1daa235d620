package runtime

import (
	"os"
	"os/exec"
	"testing"
)

// BenchmarkExeView times making each view of a binary (BERTH_BENCH_BINARY,
// such as bin/berth; else this test binary) and running /bin/true-like
// work through it: the choice between them is made on these figures.
func BenchmarkExeView(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	bin := os.Getenv("BERTH_BENCH_BINARY")
	if bin == "" {
		bin, _ = os.Executable()
	}
	for name, mk := range map[string]func(string) (*os.File, error){"overlay": overlayView, "memfd": sealedCopy} {
		b.Run("make-"+name, func(b *testing.B) {
			for b.Loop() {
				f, err := mk(bin)
				if err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
	// Executing through a view against the binary's own path: the shim's
	// stage variable makes the binary read a missing plan and exit at once.
	for _, mode := range []string{exeDirect, exeOverlay, exeMemfd} {
		path, err := selfExe(bin, mode)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("exec-"+mode, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(path)
				cmd.Env = []string{"_BERTH_STAGE=exec"}
				_ = cmd.Run()
			}
		})
	}
}
