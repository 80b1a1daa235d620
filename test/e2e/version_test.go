package e2e

import (
	"debug/buildinfo"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

// berth version names this binary's build and the server's (the same
// binary here, so the same build, stamped with the commit when built from
// a checkout); with no server to ask it still answers for itself.
func TestVersion(t *testing.T) {
	c := startCluster(t, "--no-network")
	var v struct {
		Client      api.Version  `json:"client"`
		Server      *api.Version `json:"server"`
		ServerError string       `json:"serverError"`
	}
	if err := json.Unmarshal([]byte(c.ok("version", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Server == nil {
		t.Fatalf("no server version: %s", v.ServerError)
	}
	if *v.Server != v.Client || v.Client.Go == "" || v.Client.Platform == "" {
		t.Errorf("client %+v, server %+v: want the same build, with its Go version and platform", v.Client, *v.Server)
	}
	// The revision is the one the go command stamped the binary with, not
	// HEAD now: commits made while the tests run move HEAD, and Go stamps
	// nothing in a git worktree (it looks for a .git directory).
	bi, err := buildinfo.ReadFile(berthBin)
	if err != nil {
		t.Fatal(err)
	}
	stamped := ""
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			stamped = s.Value
		}
	}
	if v.Client.Revision != stamped {
		t.Errorf("revision %q, want the build's %q", v.Client.Revision, stamped)
	}
	// A clone (CI's) has a .git directory, and git reads it: Go stamps it.
	if fi, err := os.Stat("../../.git"); stamped == "" && err == nil && fi.IsDir() && exec.Command("git", "status", "--porcelain").Run() == nil {
		t.Error("the binary carries no revision, though built from a clone git reads")
	}
	if out := c.ok("version"); !strings.Contains(out, "Client: ") || !strings.Contains(out, "Server: ") {
		t.Errorf("berth version printed %q, want a Client and a Server line", out)
	}
	alone := newEnv(t)
	if out := alone.ok("version"); !strings.Contains(out, "Client: ") || !strings.Contains(out, "not reached") {
		t.Errorf("berth version with no server printed %q, want the client's build and why the server was not reached", out)
	}
}
