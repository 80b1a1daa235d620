package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveUser(t *testing.T) {
	top, base := t.TempDir(), t.TempDir()
	write := func(dir, rel, s string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The top layer's passwd hides the base's; group comes from the base.
	write(base, "etc/passwd", "root:x:0:0::/root:/bin/sh\nold:x:7:7::/:/bin/sh\n")
	write(top, "etc/passwd", "root:x:0:0::/root:/bin/sh\n# a comment\napp:x:1000:1001::/app:/bin/sh\n")
	write(base, "etc/group", "root:x:0:\nstaff:x:50:\n")
	layers := []string{top, base}
	for in, want := range map[string]string{
		"app": "1000:1001", "app:staff": "1000:50", "app:9": "1000:9", "1000": "1000:1001", "4242": "4242:4242", "root": "0:0",
	} {
		got, err := ResolveUser(layers, in)
		if err != nil || got != want {
			t.Errorf("ResolveUser(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, says := range map[string]string{"old": "no such user", "app:wheel": "no such group"} {
		if _, err := ResolveUser(layers, in); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("ResolveUser(%q): %v, want %q", in, err, says)
		}
	}
	// A passwd that is a link (out of the image) is not read.
	link := t.TempDir()
	if err := os.MkdirAll(filepath.Join(link, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(link, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveUser([]string{link}, "root"); err == nil {
		t.Error("a symlinked passwd was read")
	}
}
