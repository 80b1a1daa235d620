package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

const volsYAML = `kind: Service
name: vols
replicas: 1
template:
  image: demo/busybox:1
  command: ["sh", "-c", "echo hi > /host/out; echo $V > /data/v-$V; exec sleep 1d"]
  env: {V: one}
  volumes:
  - {hostPath: HOST/rw, path: /host}
  - {hostPath: HOST/ro, path: /ro, readOnly: true}
  - {name: data, path: /data}
  - {tmpfs: {size: 1Mi}, path: /cache}
`

// Volumes mount: a hostPath read-write and read-only, a named volume that
// outlives a rollout and is refused removal while in use, and a sized
// tmpfs; a hostPath outside the allowed directories is refused at apply.
func TestVolumes(t *testing.T) {
	host := t.TempDir()
	c := startCluster(t, "--no-network", "--allowed-host-paths", host)
	for _, d := range []string{"rw", "ro"} {
		if err := os.Mkdir(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	spec := strings.ReplaceAll(volsYAML, "HOST", host)
	if _, errOut, code := c.applyYAML(spec); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	first := c.waitRunning("vols", 1)[0]

	// Written in the container, visible on the host.
	eventually(t, 10*time.Second, "the container's file in the hostPath volume", func() bool {
		b, err := os.ReadFile(filepath.Join(host, "rw", "out"))
		return err == nil && string(b) == "hi\n"
	})
	// Read-only is read-only.
	if _, _, code := c.run("exec", "vols", "sh", "-c", "echo x > /ro/f"); code == 0 {
		t.Error("a write to the read-only volume succeeded")
	}
	if _, err := os.Stat(filepath.Join(host, "ro", "f")); err == nil {
		t.Error("a write to the read-only volume reached the host")
	}
	// The tmpfs holds its size and no more.
	c.ok("exec", "vols", "dd", "if=/dev/zero", "of=/cache/a", "bs=1024", "count=512")
	if _, _, code := c.run("exec", "vols", "dd", "if=/dev/zero", "of=/cache/b", "bs=1024", "count=1024"); code == 0 {
		t.Error("2 MiB fit in a 1 MiB tmpfs")
	}

	// The named volume is recorded, on this node, and used by the instance.
	var vol api.Volume
	if err := json.Unmarshal([]byte(c.ok("volume", "inspect", "data")), &vol); err != nil {
		t.Fatal(err)
	}
	if vol.Spec.Node == "" || vol.Spec.Path != filepath.Join(c.dataDir, "volumes", "default", "data") {
		t.Errorf("volume inspect data: %+v", vol.Spec)
	}
	if ls := c.ok("volume", "ls"); !strings.Contains(ls, "data") || !strings.Contains(ls, first.Metadata.Name) {
		t.Errorf("volume ls does not show data used by %s:\n%s", first.Metadata.Name, ls)
	}
	if _, errOut, code := c.run("volume", "rm", "data"); code == 0 || !strings.Contains(errOut, "in use by") ||
		!strings.Contains(errOut, first.Metadata.Name) {
		t.Errorf("volume rm while in use: exit %d, %s", code, errOut)
	}

	// A rollout (env changed) keeps the named volume's data.
	if _, errOut, code := c.applyYAML(strings.Replace(spec, "V: one", "V: two", 1)); code != 0 {
		t.Fatalf("apply (rollout): %s", errOut)
	}
	eventually(t, 60*time.Second, "the rollout to replace the instance", func() bool {
		r := c.running("vols")
		return len(r) == 1 && r[0].Metadata.Name != first.Metadata.Name && len(c.ownedBy("vols")) == 1
	})
	var out string
	eventually(t, 10*time.Second, "both revisions' files in the named volume", func() bool {
		o, _, code := c.run("exec", "vols", "cat", "/data/v-one", "/data/v-two")
		out = o
		return code == 0
	})
	if out != "one\ntwo\n" {
		t.Errorf("named volume after the rollout holds %q", out)
	}

	// The allowed host paths hold at apply, naming the field.
	bad := strings.Replace(strings.ReplaceAll(volsYAML, "HOST/rw", "/etc"), "name: vols", "name: escape", 1)
	bad = strings.ReplaceAll(bad, "HOST", host)
	if _, errOut, code := c.applyYAML(bad); code == 0 || !strings.Contains(errOut, "volumes[0].hostPath") ||
		!strings.Contains(errOut, "allowed host paths") {
		t.Errorf("hostPath /etc outside --allowed-host-paths: exit %d, %s", code, errOut)
	}

	// Nor does a symlink under an allowed directory lead out of them: the
	// node resolves it and refuses the start, naming where it leads.
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(host, "link")); err != nil {
		t.Fatal(err)
	}
	sneaky := strings.Replace(strings.ReplaceAll(volsYAML, "HOST/rw", filepath.Join(host, "link")), "name: vols", "name: sneaky", 1)
	sneaky = strings.ReplaceAll(sneaky, "HOST", host)
	if _, errOut, code := c.applyYAML(sneaky); code != 0 {
		t.Fatalf("apply a hostPath through a symlink: %s", errOut)
	}
	eventually(t, 30*time.Second, "the start through the symlink to be refused", func() bool {
		insts := c.ownedBy("sneaky")
		return len(insts) == 1 && insts[0].Status.Reason == "StartError" &&
			strings.Contains(insts[0].Status.Message, "leads to "+outside) &&
			strings.Contains(insts[0].Status.Message, "outside the allowed host paths")
	})
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the directory outside the allowed host paths was written: %v", ents)
	}
	c.ok("rm", "sneaky")

	// Unused, it is removed, and its data goes with it.
	c.ok("rm", "vols")
	eventually(t, 30*time.Second, "the services' instances to go", func() bool {
		return len(c.ownedBy("vols")) == 0 && len(c.ownedBy("sneaky")) == 0
	})
	c.ok("volume", "rm", "data")
	eventually(t, 30*time.Second, "the node to delete the removed volume's data", func() bool {
		_, err := os.Stat(vol.Spec.Path)
		return os.IsNotExist(err)
	})
	if _, _, code := c.run("volume", "inspect", "data"); code == 0 {
		t.Error("volume inspect finds a removed volume")
	}
	if _, errOut, code := c.run("volume", "nope"); code == 0 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("berth volume nope: exit %d, %s", code, errOut)
	}
}
