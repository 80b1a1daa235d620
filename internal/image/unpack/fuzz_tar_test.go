package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// canaryMark stands, in the seeds' names and link targets, for the
// absolute path of the canary directory a run makes next to its target:
// the path differs per run, the archive bytes cannot.
const canaryMark = "/CANARY"

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
		f.Add(layerTar(f, s...).Bytes())
	}
	benign := layerTar(f, seeds[0]...).Bytes()
	f.Add(benign[:700]) // cut inside an entry
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCanaryTarget(t)
		_ = Layer(context.Background(), bytes.NewReader(withCanary(data, c.canary)), c.target)
		c.checkNoDevices(t)
	})
}
