package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const dataYAML = `kind: Service
name: uses
replicas: 1
rollOnChange: true
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  files:
  - {secret: db, path: /run/secrets/db, mode: 0400}
  - {config: app, key: greeting, path: /etc/app/greeting}
  envFrom:
  - {config: app}
`

// Configs and secrets from the user's seat: created with the CLI, listed
// without values, mounted as files with their modes and read as env; the
// secret is nowhere on the node's disk (etcd's files included), only on
// the data tmpfs while its user runs, and gone from it once it stops; a
// changed config rolls the service that asks for it.
func TestConfigsAndSecrets(t *testing.T) {
	c := startCluster(t, "--no-network")
	const plain = "pa55-word-e2e-1c9f"
	dataDir := filepath.Join(c.dataDir, "data")
	t.Cleanup(func() { _ = unix.Unmount(dataDir, unix.MNT_DETACH) })

	if out := c.ok("secret", "create", "db", "--from-literal", "password="+plain); !strings.Contains(out, "secret/db created") {
		t.Fatalf("secret create: %q", out)
	}
	c.ok("config", "create", "app", "--from-literal", "greeting=hello")
	for _, args := range [][]string{{"get", "secrets"}, {"get", "secret", "db", "-o", "yaml"}, {"get", "secret", "db", "-o", "json"}} {
		out := c.ok(args...)
		if strings.Contains(out, plain) || !strings.Contains(out, "password") {
			t.Errorf("berth %s shows the value or not the key:\n%s", strings.Join(args, " "), out)
		}
	}
	if _, errOut, code := c.run("secret", "create", "empty"); code == 0 || !strings.Contains(errOut, "--from-literal") {
		t.Errorf("secret create without data: exit %d, %s", code, errOut)
	}
	if _, _, code := c.run("secret", "bogus"); code == 0 {
		t.Error("an unknown secret subcommand exited 0")
	}
	// No instance uses the secret yet: the node holds none of it.
	if ents, _ := os.ReadDir(dataDir); len(ents) != 0 {
		t.Fatalf("the data dir holds %d entries before any instance uses data", len(ents))
	}

	if _, errOut, code := c.applyYAML(dataYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	first := c.waitRunning("uses", 1)[0]
	if out := c.ok("exec", "uses", "stat", "-c", "%a", "/run/secrets/db"); strings.TrimSpace(out) != "400" {
		t.Errorf("secret file mode %q, want 400", out)
	}
	if out := c.ok("exec", "uses", "stat", "-c", "%a", "/etc/app/greeting"); strings.TrimSpace(out) != "444" {
		t.Errorf("config file mode %q, want the default 444", out)
	}
	if out := c.ok("exec", "uses", "cat", "/run/secrets/db"); out != plain {
		t.Errorf("secret file holds %q", out)
	}
	if out := c.ok("exec", "uses", "sh", "-c", "echo $greeting"); out != "hello\n" {
		t.Errorf("envFrom config: greeting=%q", out)
	}
	if _, _, code := c.run("exec", "uses", "sh", "-c", "echo x > /run/secrets/db"); code == 0 {
		t.Error("the secret file is writable in the container")
	}

	// On the node: on a tmpfs, and nowhere on disk.
	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs (type %#x, %v)", dataDir, st.Type, err)
	}
	if !treeHolds(t, dataDir, plain) {
		t.Error("the data tmpfs does not hold the running instance's secret")
	}
	if err := filepath.WalkDir(c.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dataDir && d.IsDir() {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(plain)) {
				t.Errorf("%s holds the secret in plaintext", p)
			}
		}
		return nil
	}); err != nil && err != fs.SkipDir {
		t.Fatal(err)
	}

	// A changed config rolls the service (rollOnChange), and the new
	// instance reads the new data.
	c.ok("config", "create", "app", "--from-literal", "greeting=bonjour")
	eventually(t, 60*time.Second, "the config change to roll the service", func() bool {
		r := c.running("uses")
		return len(r) == 1 && r[0].Metadata.Name != first.Metadata.Name && len(c.ownedBy("uses")) == 1
	})
	eventually(t, 10*time.Second, "the new instance to read the new config", func() bool {
		out, _, code := c.run("exec", "uses", "cat", "/etc/app/greeting")
		return code == 0 && out == "bonjour"
	})

	// The last user stops: the secret leaves the node.
	c.ok("rm", "uses")
	eventually(t, 30*time.Second, "the secret to leave the data tmpfs", func() bool {
		ents, err := os.ReadDir(dataDir)
		return err == nil && len(ents) == 0
	})
}

// treeHolds reports whether a file under dir contains s.
func treeHolds(t *testing.T, dir, s string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(s)) {
				found = true
			}
		}
		return nil
	})
	return found
}
