package cli

import (
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
