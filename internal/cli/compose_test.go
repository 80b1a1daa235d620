package cli

import (
	"slices"
	"testing"
)

func TestComposeArgs(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"compose", "-f", "a.yaml", "logs", "-f"}, []string{"compose", "logs", "--file=a.yaml", "-f"}},
		{[]string{"--data-dir", "/d", "compose", "-f", "a.yaml", "-p", "shop", "up", "-d"}, []string{"--data-dir", "/d", "compose", "up", "--file=a.yaml", "--project-name=shop", "-d"}},
		{[]string{"compose", "--file=a.yaml", "--profile", "dev", "ps"}, []string{"compose", "ps", "--file=a.yaml", "--profile=dev"}},
		{[]string{"compose", "up", "-f", "a.yaml"}, []string{"compose", "up", "-f", "a.yaml"}},
		{[]string{"run", "demo/busybox:1", "compose", "-f", "x"}, []string{"run", "demo/busybox:1", "compose", "-f", "x"}},
		{[]string{"compose", "-f", "a.yaml"}, []string{"compose", "-f", "a.yaml"}},
		{[]string{"compose", "-f", "a.yaml", "-n", "prod", "down"}, []string{"compose", "-n", "prod", "down", "--file=a.yaml"}},
		{[]string{"compose", "--namespace=prod", "-f", "a.yaml", "-v", "ps"}, []string{"compose", "--namespace=prod", "-v", "ps", "--file=a.yaml"}},
		// Every global flag with a value keeps it, the root's flag set
		// being the list: -o and --ca-file as much as -n.
		{[]string{"compose", "-o", "json", "-f", "a.yaml", "ps"}, []string{"compose", "-o", "json", "ps", "--file=a.yaml"}},
		{[]string{"-o", "json", "compose", "--ca-file", "ca.pem", "-p", "shop", "ps"}, []string{"-o", "json", "compose", "--ca-file", "ca.pem", "ps", "--project-name=shop"}},
		// A flag berth does not have before compose: not compose's to rewrite.
		{[]string{"--nope", "compose", "-f", "a.yaml", "ps"}, []string{"--nope", "compose", "-f", "a.yaml", "ps"}},
	} {
		if got := composeArgs(newRoot(&globals{}), slices.Clone(c.in)); !slices.Equal(got, c.want) {
			t.Errorf("composeArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// A global flag added to the root is skipped with its value, before and
// after compose, with nothing else to change.
func TestComposeArgsNewGlobalFlag(t *testing.T) {
	root := newRoot(&globals{})
	root.PersistentFlags().StringP("context", "x", "", "")
	in := []string{"--context", "lab", "compose", "-x", "lab", "-f", "a.yaml", "--context", "up", "logs", "-f"}
	want := []string{"--context", "lab", "compose", "-x", "lab", "--context", "up", "logs", "--file=a.yaml", "-f"}
	if got := composeArgs(root, slices.Clone(in)); !slices.Equal(got, want) {
		t.Errorf("composeArgs(%q) = %q, want %q", in, got, want)
	}
}
