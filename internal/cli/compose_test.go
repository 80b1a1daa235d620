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
	} {
		if got := composeArgs(slices.Clone(c.in)); !slices.Equal(got, c.want) {
			t.Errorf("composeArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
