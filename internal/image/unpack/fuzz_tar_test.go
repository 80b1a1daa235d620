package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// canaryMark stands, in the seeds' names and link targets, for the
// absolute path of the canary directory a run makes next to its target:
// the path differs per run, the archive bytes cannot.
const canaryMark = "/CANARY"

// tarOf writes entries as a tar archive.
func tarOf(f *testing.F, ents ...ent) []byte {
	f.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Devmajor: e.major, Devminor: e.minor, PAXRecords: e.pax}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			f.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// withCanary rewrites the canary mark in a well-formed archive into the
// run's canary path; an archive tar cannot read is returned as is, for
// the unpacker to refuse.
func withCanary(data []byte, canary string) []byte {
	if !bytes.Contains(data, []byte(canaryMark)) {
		return data
	}
	tr := tar.NewReader(bytes.NewReader(data))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return data
		}
		h.Name = strings.ReplaceAll(h.Name, canaryMark, canary)
		h.Linkname = strings.ReplaceAll(h.Linkname, canaryMark, canary)
		if tw.WriteHeader(h) != nil {
			return data
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return data
		}
	}
	if tw.Close() != nil {
		return data
	}
	return buf.Bytes()
}

// FuzzLayerTar feeds the unpacker whole archives, mutated from hostile
// seeds (climbs with "..", absolute names, writes through absolute and
// relative symlinks, hard links out, devices, whiteouts through links,
// truncated and oversized headers), and checks that whatever Layer
// returns, nothing outside the target changed and no device node other
// than a whiteout appeared inside it.
func FuzzLayerTar(f *testing.F) {
	testenv.RequireRoot(f)
	c := canaryMark
	seeds := [][]ent{
		{{name: "etc/", typ: tar.TypeDir, mode: 0o755}, {name: "etc/hostname", body: "box\n"}, {name: "bin/sh", typ: tar.TypeSymlink, link: "/bin/busybox"}},
		{{name: "../canary/pwned", body: "x"}},
		{{name: "a/../../canary/pwned", body: "x"}},
		{{name: c + "/pwned", body: "x"}},
		{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/pwned", body: "x"}},
		{{name: "evil", typ: tar.TypeSymlink, link: "../canary"}, {name: "evil/pwned", body: "x"}},
		{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/sub/", typ: tar.TypeDir, mode: 0o755}},
		{{name: "a/", typ: tar.TypeDir, mode: 0o755}, {name: "a/evil", typ: tar.TypeSymlink, link: "../../canary"}, {name: "a/evil/x/pwned", body: "x"}},
		{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/.wh.secret"}},
		{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/.wh..wh..opq"}},
		{{name: "hl", typ: tar.TypeLink, link: "../canary/secret"}},
		{{name: "hl", typ: tar.TypeLink, link: c + "/secret"}},
		{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "hl", typ: tar.TypeLink, link: "evil/secret"}},
		{{name: "f", body: "x"}, {name: "f", typ: tar.TypeSymlink, link: c + "/secret"}, {name: "f", body: "overwrite"}},
		{{name: "null", typ: tar.TypeChar, major: 1, minor: 3}},
		{{name: "sda", typ: tar.TypeBlock, major: 8}},
		{{name: "x", typ: tar.TypeChar}},
		{{name: "p", typ: tar.TypeFifo}},
		{{name: "long/" + strings.Repeat("d/", 60) + "f", body: "x", pax: map[string]string{"path": "../canary/pax"}}},
		{{name: "x", body: "x", pax: map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}}},
	}
	for _, s := range seeds {
		f.Add(tarOf(f, s...))
	}
	benign := tarOf(f, seeds[0]...)
	f.Add(benign[:700]) // cut inside an entry
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		canary := filepath.Join(base, "canary")
		if err := os.MkdirAll(filepath.Join(canary, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(canary, "secret"), []byte("s"), 0o600); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(base, "target")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		before := snapshotTree(t, canary)
		_ = Layer(context.Background(), bytes.NewReader(withCanary(data, canary)), target)
		if after := snapshotTree(t, canary); after != before {
			t.Fatalf("canary changed:\n%s\n---\n%s", before, after)
		}
		if entries, _ := os.ReadDir(base); len(entries) != 2 {
			t.Fatalf("something appeared next to the target: %v", entries)
		}
		filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			var st unix.Stat_t
			if unix.Lstat(p, &st) == nil {
				kind := st.Mode & unix.S_IFMT
				if kind == unix.S_IFBLK || (kind == unix.S_IFCHR && st.Rdev != 0) {
					t.Fatalf("device node %s in the layer", p)
				}
			}
			return nil
		})
	})
}
