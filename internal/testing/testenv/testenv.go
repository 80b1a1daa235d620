// Package testenv holds the one rule for tests that need something of the
// machine (root, a program): off CI they skip where it is missing, and in
// CI, which runs as root with every dependency installed, they fail, since
// a skipped test there would be a test that never runs.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireRoot skips a test that needs root, or fails it when CI=true.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root")
	}
}

// RequireBinary returns the path of program name, skipping the test where
// it is not installed (failing it when CI=true, as scripts/deps.sh
// installs it).
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, fmt.Sprintf("%s is not installed (scripts/deps.sh installs it): %v", name, err))
	}
	return p
}

// SkipOrFail skips the test saying why, or fails it when CI=true.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatal(why + " (CI=true: not skipping)")
	}
	t.Skip(why)
}

// InCI reports whether the tests run in CI (CI=true), where nothing may
// be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }
