package netns

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

func inode(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

func TestCreateDoDelete(t *testing.T) {
	testenv.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	var inside uint64
	if err := Create(path, func() error {
		inside = inode("/proc/thread-self/ns/net")
		return WriteSysctl("net.ipv4.ip_forward", "1")
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(path) })
	if inode(path) != inside || inside == inode("/proc/self/ns/net") {
		t.Fatalf("pinned %d, setup ran in %d, we are in %d", inode(path), inside, inode("/proc/self/ns/net"))
	}
	// The sysctl went to the new namespace only.
	var got []byte
	if err := Do(path, func() (err error) {
		got, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "1\n" {
		t.Fatalf("ip_forward inside: %q", got)
	}
	if err := Delete(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file left: %v", err)
	}
	if err := Delete(path); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestCreateCleansUpAfterFailedSetup(t *testing.T) {
	testenv.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	boom := errors.New("boom")
	if err := Create(path, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file left after failed setup: %v", err)
	}
}

func TestMoveKeepsTheNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := Create(src, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = Delete(src)
		_ = Delete(dst)
	})
	before := inode(src)
	if err := Move(src, dst); err != nil {
		t.Fatal(err)
	}
	if inode(dst) != before || before == 0 {
		t.Fatalf("moved namespace is %d, was %d", inode(dst), before)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("source left: %v", err)
	}
	if err := Move(src, dst); err == nil {
		t.Fatal("moving onto an existing namespace succeeded")
	}
}
