package cli

import (
	"context"
	"os"
	"slices"
	"testing"
)

// Each entry of topCommands answers to the names its command does: a
// command renamed or given an alias without its entry would be found by
// name only through the full tree.
func TestTopCommandNames(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range topCommands {
		cmd := c.build(&globals{})
		want := append([]string{cmd.Name()}, cmd.Aliases...)
		if !slices.Equal(c.names, want) {
			t.Errorf("topCommands has %q for the command answering to %q", c.names, want)
		}
		for _, n := range c.names {
			if seen[n] {
				t.Errorf("two commands answer to %q", n)
			}
			seen[n] = true
		}
	}
}

// commandOf finds the command past the root's flags, and gives up (every
// command is built) on anything it cannot be sure of.
func TestCommandOf(t *testing.T) {
	root := newRoot(&globals{})
	for _, tc := range []struct {
		args []string
		want string // "" for every command
	}{
		{[]string{"exec", "web", "true"}, "exec"},
		{[]string{"--server", "https://h:1", "--token", "exec", "--ca-file", "ca.crt", "exec", "web"}, "exec"},
		{[]string{"--server=https://h:1", "-n", "logs", "logs", "-f", "web"}, "logs"},
		{[]string{"-nprod", "ps"}, "ps"},
		{[]string{"-n=prod", "-o", "json", "get", "nodes"}, "get"},
		{[]string{"--data-dir", "/tmp/x", "images"}, "image"},
		{[]string{"c", "ls"}, "container"},
		{[]string{"top"}, "stats"},
		{nil, ""},
		{[]string{"--help"}, ""},
		{[]string{"-h", "exec"}, ""},
		{[]string{"help", "exec"}, ""},
		{[]string{"completion", "bash"}, ""},
		{[]string{"__complete", "ex"}, ""},
		{[]string{"no-such-command"}, ""},
		{[]string{"--follow", "logs"}, ""},
		{[]string{"--", "exec"}, ""},
		{[]string{"-n"}, ""},
	} {
		got := ""
		if build := commandOf(root, tc.args); build != nil {
			got = build(&globals{}).Name()
		}
		if got != tc.want {
			t.Errorf("commandOf(%q) builds %q, want %q", tc.args, got, tc.want)
		}
	}
}

// A short command builds itself alone: with every command built (their
// flags above all) berth exec allocated ten times as much before it ran.
func TestShortCommandBuildsOnlyItself(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	stderr := os.Stderr
	os.Stderr = null // the usage error each run prints
	defer func() { os.Stderr = stderr }()
	dir := t.TempDir()
	allocs := func(args ...string) float64 {
		return testing.AllocsPerRun(5, func() {
			if code := Run(context.Background(), append([]string{"--data-dir", dir}, args...)); code == 0 {
				t.Fatalf("berth %q without its arguments succeeded", args)
			}
		})
	}
	// exec with no instance fails in its argument check, before any I/O.
	one, all := allocs("exec"), allocs("no-such-command")
	t.Logf("allocations: berth exec %.0f, every command built %.0f", one, all)
	if one*4 > all {
		t.Errorf("berth exec allocates %.0f times before running, every command built %.0f: more than a quarter", one, all)
	}
}
