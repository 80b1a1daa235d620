package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/testing/unixapi"
)

// serveAPI runs an API server on the socket of a fresh data dir.
func serveAPI(t *testing.T) *globals {
	t.Helper()
	return &globals{dataDir: unixapi.Serve(t, apiserver.Config{}).Dir}
}

func runToken(t *testing.T, g *globals, args ...string) (string, error) {
	t.Helper()
	cmd := newTokenCmd(g)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestTokenCommands(t *testing.T) {
	g := serveAPI(t)
	out, err := runToken(t, g, "create", "--ttl", "2h", "--description", "rack 4")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	id, secret, err := store.ParseJoinToken(tok)
	if err != nil {
		t.Fatalf("create printed %q: %v", out, err)
	}
	if _, err := runToken(t, g, "create", "--ttl", "0"); err != nil {
		t.Fatal(err)
	}

	out, err = runToken(t, g, "ls")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, secret) {
		t.Fatalf("ls shows a secret:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], id) ||
		!strings.Contains(lines[1], "valid") || !strings.Contains(lines[1], "in 1h") || !strings.Contains(lines[1], "rack 4") ||
		!strings.Contains(lines[2], "never") {
		t.Fatalf("ls:\n%s", out)
	}

	// Revoke by the whole token, as pasted from create.
	if out, err := runToken(t, g, "revoke", tok); err != nil || !strings.Contains(out, id+" revoked") {
		t.Fatalf("revoke: %q %v", out, err)
	}
	if _, err := runToken(t, g, "revoke", "zzzzzzzz"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("revoke an unknown token: %v", err)
	}

	g.output = "json"
	out, err = runToken(t, g, "ls")
	if err != nil {
		t.Fatal(err)
	}
	var list []client.JoinToken
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
	if len(list) != 2 || list[0].ID != id || !list[0].Revoked || list[0].Token != "" || time.Until(list[0].Expires) < time.Hour {
		t.Fatalf("ls -o json: %+v", list)
	}
	if _, err := runToken(t, g, "create", "--ttl", "-1h"); err == nil {
		t.Fatal("a negative ttl was accepted")
	}
	if _, err := runToken(t, g, "create", "--uses", "-1"); err == nil || !strings.Contains(err.Error(), "--uses") {
		t.Fatalf("uses -1: %v, want an error naming --uses", err)
	}
	// A token for two joins shows how many it made of how many.
	g.output = ""
	if _, err := runToken(t, g, "create", "--uses", "2"); err != nil {
		t.Fatal(err)
	}
	out, _ = runToken(t, g, "ls")
	if !strings.Contains(out, "USES") || !strings.Contains(out, "0/2") {
		t.Fatalf("ls after create --uses 2:\n%s", out)
	}
}

func TestServerRefusesANodeCertificateLifetimeOutOfRange(t *testing.T) {
	for _, ttl := range []string{"0s", "-1h", "9000h"} {
		cmd := newServerCmd(&globals{dataDir: t.TempDir()})
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs([]string{"--node-cert-ttl", ttl, "--peer-listen", "127.0.0.1:0"})
		if err := cmd.ExecuteContext(t.Context()); err == nil || !strings.Contains(err.Error(), "--node-cert-ttl") {
			t.Errorf("--node-cert-ttl %s: %v, want an error naming the flag", ttl, err)
		}
	}
}
