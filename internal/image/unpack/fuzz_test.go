package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// FuzzLayer feeds layers built from random mixes of hostile names, links
// and whiteouts, and checks that whatever Layer returns, nothing outside the
// target changed and no real device node appeared inside it.
func FuzzLayer(f *testing.F) {
	testenv.RequireRoot(f)
	f.Add([]byte{2, 5, 0, 0, 3, 1})
	f.Add([]byte{2, 4, 1, 0, 5, 7, 3, 4, 2})
	f.Add([]byte{1, 0, 3, 0, 2, 6, 4, 7, 0, 1})
	f.Add([]byte{3, 3, 0, 4, 4, 1, 0, 2, 0, 6, 2, 2})
	f.Add([]byte{5, 0, 0, 1, 3, 6, 0, 4, 0, 7, 0, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCanaryTarget(t)
		canary := c.canary
		comps := []string{"a", "b", "..", ".", "evil", ".wh.a", ".wh..wh..opq", "", canary}
		links := []string{"../canary", canary, "a", "a/b", "..", "evil", "/", "../../.."}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		next := func() int {
			if len(data) == 0 {
				return 0
			}
			b := int(data[0])
			data = data[1:]
			return b
		}
		for len(data) > 0 {
			typ := next() % 8
			n := 1 + next()%3
			var parts []string
			for range n {
				parts = append(parts, comps[next()%len(comps)])
			}
			h := &tar.Header{Name: strings.Join(parts, "/"), Mode: 0o755}
			switch typ {
			case 0:
				h.Typeflag, h.Size = tar.TypeReg, 1
			case 1:
				h.Typeflag = tar.TypeDir
			case 2:
				h.Typeflag, h.Linkname = tar.TypeSymlink, links[next()%len(links)]
			case 3:
				h.Typeflag, h.Linkname = tar.TypeLink, links[next()%len(links)]
			case 4:
				h.Typeflag, h.Linkname = tar.TypeLink, filepath.Join(canary, "secret")
			case 5:
				h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, int64(next()%9), int64(next()%9)
			case 6:
				h.Typeflag, h.Devmajor, h.Devminor = tar.TypeBlock, 8, int64(next()%4)
			case 7:
				h.Typeflag = tar.TypeFifo
			}
			if tw.WriteHeader(h) != nil {
				continue
			}
			if h.Size == 1 {
				tw.Write([]byte("x"))
			}
		}
		tw.Close()
		_ = Layer(context.Background(), &buf, c.target)
		c.checkNoDevices(t)
	})
}

// checkNoDevices runs check and also fails the test if a device node
// other than a whiteout (0:0) appeared in the target.
func (c canaryTarget) checkNoDevices(t *testing.T) {
	t.Helper()
	c.check(t)
	filepath.WalkDir(c.target, func(p string, d fs.DirEntry, err error) error {
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
}
