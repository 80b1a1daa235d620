package e2e

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// berth cp out of an instance unpacks a tar the instance made: with its
// own tar, which the instance may have replaced. One that sends a link to
// a directory of the operator's machine, then a file under the link, must
// not write there: the copy fails and the directory stays empty.
func TestCpOutOfAHostileInstanceStaysInDestination(t *testing.T) {
	c := startCluster(t, "--no-network")
	c.ok("run", "--name", "hostile", "--memory", "16Mi", "demo/busybox:1", "sleep", "1d")
	in := c.waitRunning("hostile", 1)[0].Metadata.Name

	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	check(t, os.Mkdir(outside, 0o755))
	evil := filepath.Join(dir, "evil.tar")
	f, err := os.Create(evil)
	check(t, err)
	tw := tar.NewWriter(f)
	for _, h := range []*tar.Header{
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/l", Typeflag: tar.TypeSymlink, Linkname: outside},
		{Name: "tmp/l/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 6},
	} {
		check(t, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write([]byte("pwned\n"))
			check(t, err)
		}
	}
	check(t, tw.Close())
	check(t, f.Close())
	// The archive goes in while the instance's tar is busybox's; then the
	// instance makes its tar a script that sends the archive, whatever it
	// is asked for.
	c.ok("cp", evil, in+":/evil.tar")
	c.ok("exec", in, "--", "sh", "-c", `rm /bin/tar && printf '#!/bin/sh\ncat /evil.tar\n' > /bin/tar && chmod +x /bin/tar`)

	dst := filepath.Join(dir, "dst")
	check(t, os.Mkdir(dst, 0o755))
	start := time.Now()
	_, errOut, code := c.run("cp", in+":/tmp", dst)
	if _, err := os.Lstat(filepath.Join(outside, "pwned")); err == nil {
		t.Fatalf("berth cp wrote %s, outside its destination %s (exit %d, %q)", filepath.Join(outside, "pwned"), dst, code, errOut)
	}
	if code == 0 || !strings.Contains(errOut, "tmp/l/pwned") {
		t.Fatalf("berth cp out of the hostile instance: exit %d, %q; want a failure naming the entry tmp/l/pwned", code, errOut)
	}
	t.Logf("refused in %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(errOut))
}
