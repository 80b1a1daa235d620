package cli

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"10m":                  now.Add(-10 * time.Minute),
		"1h30m":                now.Add(-90 * time.Minute),
		"2026-05-06T07:00:00Z": time.Date(2026, 5, 6, 7, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-5m", "2026-05-06"} {
		if _, err := parseSince(bad, now); err == nil || !strings.Contains(err.Error(), "--since") {
			t.Errorf("parseSince(%q): %v, want an error naming --since", bad, err)
		}
	}
}

func TestSplitRemoteAndPorts(t *testing.T) {
	for arg, want := range map[string][3]string{
		"web-1:/etc/hosts": {"web-1", "/etc/hosts", "remote"},
		"ns/web-1:/tmp":    {"", "ns/web-1:/tmp", ""}, // a slash before the colon: a local path
		"./a:b":            {"", "./a:b", ""},
		"file":             {"", "file", ""},
	} {
		inst, p, remote := splitRemote(arg)
		if inst != want[0] || p != want[1] || remote != (want[2] == "remote") {
			t.Errorf("splitRemote(%q) = %q %q %v", arg, inst, p, remote)
		}
	}
	for arg, want := range map[string][2]int{"8080:80": {8080, 80}, "80": {80, 80}, ":6379": {0, 6379}} {
		l, r, err := parsePortPair(arg)
		if err != nil || l != want[0] || r != want[1] {
			t.Errorf("parsePortPair(%q) = %d %d %v", arg, l, r, err)
		}
	}
	for _, bad := range []string{"x:80", "80:0", "70000", "8080:"} {
		if _, _, err := parsePortPair(bad); err == nil {
			t.Errorf("parsePortPair(%q) passed", bad)
		}
	}
}

// A tar from an instance may not write outside the destination.
func TestUntarStaysInDestination(t *testing.T) {
	for _, name := range []string{"../escape", "/abs", "a/../../escape"} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		_ = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
		_, _ = tw.Write([]byte("x"))
		_ = tw.Close()
		dir := t.TempDir()
		if err := untar(&b, filepath.Join(dir, "in"), ""); err == nil || !strings.Contains(err.Error(), "leaves the destination") {
			t.Errorf("entry %q: %v, want it refused", name, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
			t.Errorf("entry %q wrote outside", name)
		}
	}
}

// Lines split over writes come out whole; a last line without its
// newline comes out on flush.
func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{f: func(b []byte) { got = append(got, string(b)) }}
	for _, part := range []string{"one\ntw", "o\n", "", "three\nfo", "ur"} {
		_, _ = w.Write([]byte(part))
	}
	w.flush()
	if strings.Join(got, "|") != "one|two|three|four" {
		t.Fatalf("lines %q", got)
	}
}
