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

// A tar from an instance may not reach outside the destination through a
// symbolic link it brings, to a directory or to a file, whether the link
// points outside by an absolute path or by "..": the instance's files are
// its own, the operator's machine is not.
func TestUntarDoesNotFollowItsSymlinksOut(t *testing.T) {
	type ent struct {
		name, link string
		typ        byte
	}
	cases := map[string][]ent{
		"absolute link to a directory":  {{name: "d/", typ: tar.TypeDir}, {name: "d/l", link: "{outside}", typ: tar.TypeSymlink}, {name: "d/l/pwned", typ: tar.TypeReg}},
		"relative link to a directory":  {{name: "d/", typ: tar.TypeDir}, {name: "d/l", link: "../../../outside", typ: tar.TypeSymlink}, {name: "d/l/pwned", typ: tar.TypeReg}},
		"link to a file, then the file": {{name: "d/", typ: tar.TypeDir}, {name: "d/f", link: "{outside}/pwned", typ: tar.TypeSymlink}, {name: "d/f", typ: tar.TypeReg}},
		"mkdir through a link":          {{name: "d/", typ: tar.TypeDir}, {name: "d/l", link: "{outside}", typ: tar.TypeSymlink}, {name: "d/l/pwned/", typ: tar.TypeDir}},
	}
	for name, ents := range cases {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			if err := os.Mkdir(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(base, "in", "dst")
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			for _, e := range ents {
				h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o755, Linkname: strings.ReplaceAll(e.link, "{outside}", outside)}
				if e.typ == tar.TypeReg {
					h.Size, h.Mode = 1, 0o644
				}
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if e.typ == tar.TypeReg {
					_, _ = tw.Write([]byte("x"))
				}
			}
			_ = tw.Close()
			err := untar(&b, dst, "")
			if _, serr := os.Lstat(filepath.Join(outside, "pwned")); serr == nil {
				t.Fatalf("the tar wrote %s, outside the destination (untar: %v)", filepath.Join(outside, "pwned"), err)
			}
			if name == "link to a file, then the file" {
				// The file replaces the link, as tar does.
				if fi, err2 := os.Lstat(filepath.Join(dst, "d", "f")); err != nil || err2 != nil || !fi.Mode().IsRegular() {
					t.Fatalf("untar = %v; d/f: %v, %v; want d/f a regular file in the destination", err, fi, err2)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "d/l") {
				t.Fatalf("untar = %v, want an error naming the entry that goes through d/l", err)
			}
		})
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
