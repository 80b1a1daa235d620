package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// Every command group, found by walking the help of the built binary,
// refuses a subcommand it does not have: non-zero and "unknown command",
// never its help with exit 0.
func TestUnknownSubcommandsFail(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (string, string, int) {
		cmd := exec.Command(berthBin, append([]string{"--data-dir", dir}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), errb.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("berth %v: %v", args, err)
		}
		return out.String(), errb.String(), 0
	}
	var groups [][]string
	var walk func(path []string)
	walk = func(path []string) {
		help, _, code := run(append(path, "--help")...)
		if code != 0 {
			t.Fatalf("berth %v --help: exit %d", path, code)
		}
		subs := subcommands(help)
		if len(subs) > 0 {
			groups = append(groups, path)
		}
		for _, s := range subs {
			walk(append(append([]string(nil), path...), s))
		}
	}
	walk(nil)
	if len(groups) < 4 {
		t.Fatalf("found only the command groups %v", groups)
	}
	for _, g := range groups {
		args := append(append([]string(nil), g...), "no-such-command")
		out, errOut, code := run(args...)
		if code == 0 || !strings.Contains(errOut, "unknown command") || strings.Contains(out, "Available Commands") {
			t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want non-zero and unknown command", strings.Join(args, " "), code, out, errOut)
		}
	}
}

// subcommands reads the names under "Available Commands:" in cobra's help,
// leaving out help, which takes any topic.
func subcommands(help string) []string {
	_, rest, ok := strings.Cut(help, "Available Commands:\n")
	if !ok {
		return nil
	}
	var out []string
	for line := range strings.Lines(rest) {
		if strings.TrimSpace(line) == "" {
			break
		}
		name := strings.Fields(line)[0]
		if name != "help" {
			out = append(out, name)
		}
	}
	return out
}
