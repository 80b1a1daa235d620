package store

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

func TestJoinTokenLifecycle(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	tok, rec, err := s.CreateJoinToken(ctx, JoinTokenOptions{Description: "rack 4", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := ParseJoinToken(tok)
	if err != nil || id != rec.ID || len(secret) < 32 || !strings.HasPrefix(tok, "berth_") {
		t.Fatalf("token %q (id %q, %v) does not read berth_<id>.<secret of 32+>", tok, rec.ID, err)
	}
	got, err := s.VerifyJoinToken(ctx, tok, time.Now())
	if err != nil || got.ID != rec.ID || got.Description != "rack 4" {
		t.Fatalf("verify a fresh token: %+v, %v", got, err)
	}

	// Nothing stored holds the secret, only its hash.
	r, err := s.client.Get(ctx, s.prefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range r.Kvs {
		if strings.Contains(string(kv.Value), secret) || strings.Contains(string(kv.Key), secret) {
			t.Fatalf("key %s stores the secret in plain text: %s", kv.Key, kv.Value)
		}
	}

	wrongSecret := api.JoinTokenPrefix + id + "." + strings.Repeat("a", 32)
	unknown := api.JoinTokenPrefix + "aaaaaaaa." + secret
	for name, tc := range map[string]struct {
		token string
		now   time.Time
		says  string
	}{
		"malformed":    {"berth_short.x", time.Now(), "malformed"},
		"not a token":  {"", time.Now(), "malformed"},
		"wrong secret": {wrongSecret, time.Now(), "wrong secret"},
		"unknown id":   {unknown, time.Now(), "unknown"},
		"expired":      {tok, time.Now().Add(2 * time.Hour), "expired"},
	} {
		_, err := s.VerifyJoinToken(ctx, tc.token, tc.now)
		if !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: got %v, want Unauthorized saying %q", name, err, tc.says)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error %q repeats the secret", name, err)
		}
	}

	if err := s.RevokeJoinToken(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeJoinToken(ctx, id); err != nil {
		t.Fatalf("revoke twice: %v", err)
	}
	if _, err := s.VerifyJoinToken(ctx, tok, time.Now()); !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked token: got %v", err)
	}
	if err := s.RevokeJoinToken(ctx, "zzzzzzzz"); !errdefs.IsNotFound(err) {
		t.Fatalf("revoke an unknown token: got %v, want NotFound", err)
	}

	forever, _, err := s.CreateJoinToken(ctx, JoinTokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyJoinToken(ctx, forever, time.Now().AddDate(50, 0, 0)); err != nil {
		t.Fatalf("a token without expiry expired: %v", err)
	}
	list, err := s.ListJoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != id || !list[0].Revoked || list[1].Revoked || !list[1].Expires.IsZero() {
		t.Fatalf("list: %+v", list)
	}
}

func TestEnsureJoinTokenMakesOneForTheCluster(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	dir := t.TempDir()

	// Three servers start together on one store: one token between them.
	paths := []string{filepath.Join(dir, "a", "join-token"), filepath.Join(dir, "b", "join-token"), filepath.Join(dir, "c", "join-token")}
	toks := make([]string, len(paths))
	made := make([]bool, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Go(func() { toks[i], made[i], errs[i] = s.EnsureJoinToken(ctx, p) })
	}
	wg.Wait()
	var first string
	var firstPath string
	for i := range paths {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if made[i] {
			if first != "" {
				t.Fatal("two servers both made a first token")
			}
			first, firstPath = toks[i], paths[i]
		} else if toks[i] != "" {
			t.Fatalf("a server that made no token returned %q", toks[i])
		}
	}
	if first == "" {
		t.Fatal("no server made a token")
	}
	fi, err := os.Stat(firstPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := s.VerifyJoinToken(ctx, first, time.Now()); err != nil {
		t.Fatalf("first token does not verify: %v", err)
	}

	// A restart returns the same token and makes no other.
	again, made2, err := s.EnsureJoinToken(ctx, firstPath)
	if err != nil || made2 || again != first {
		t.Fatalf("restart: %q made=%v %v, want the first token", again, made2, err)
	}
	// Once revoked, a restart neither returns it nor makes another.
	id, _, _ := ParseJoinToken(first)
	if err := s.RevokeJoinToken(ctx, id); err != nil {
		t.Fatal(err)
	}
	again, made2, err = s.EnsureJoinToken(ctx, firstPath)
	if err != nil || made2 || again != "" {
		t.Fatalf("after revoke: %q made=%v %v, want nothing", again, made2, err)
	}
	if list, _ := s.ListJoinTokens(ctx); len(list) != 1 {
		t.Fatalf("%d tokens, want the one", len(list))
	}
}
