package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// storeWithToken opens a store with a join token that allows uses joins
// (0 for any number) for the next hour.
func storeWithToken(t *testing.T, uses int) (s *Store, tok string, now time.Time) {
	t.Helper()
	s, now = openStore(t), time.Now()
	tok, _, err := s.CreateJoinToken(t.Context(), JoinTokenOptions{Uses: uses, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return s, tok, now
}

// hourCert is a certificate with serial that is good for an hour from now.
func hourCert(serial string, now time.Time) NodeCert {
	return NodeCert{Serial: serial, NotAfter: now.Add(time.Hour)}
}

func TestJoinTokenUsesAndFirstStartExpiry(t *testing.T) {
	ctx := t.Context()
	// Two joins allowed, three machines racing for them: two win.
	s, tok, now := storeWithToken(t, 2)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, n := range []string{"a", "b", "c"} {
		wg.Go(func() { _, errs[i] = s.JoinNode(ctx, tok, n, NodeJoin{Cert: hourCert(n, now)}, now) })
	}
	wg.Wait()
	var ok, usedUp int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errdefs.IsUnauthorized(err) && strings.Contains(err.Error(), "used up (2 of 2 joins)"):
			usedUp++
		default:
			t.Fatalf("join: %v", err)
		}
	}
	if ok != 2 || usedUp != 1 {
		t.Fatalf("%d joins and %d refused as used up, want 2 and 1", ok, usedUp)
	}
	if _, err := s.VerifyJoinToken(ctx, tok, now); !errdefs.IsUnauthorized(err) {
		t.Fatalf("a used-up token verifies: %v", err)
	}

	// The first-start token expires like any other.
	path := t.TempDir() + "/join-token"
	s2 := openStore(t)
	first, made, err := s2.EnsureJoinToken(ctx, path)
	if err != nil || !made {
		t.Fatalf("first token: %v %v", made, err)
	}
	rec, err := s2.VerifyJoinToken(ctx, first, now)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(rec.Expires); d <= DefaultJoinTokenTTL-time.Minute || d > DefaultJoinTokenTTL {
		t.Fatalf("first-start token expires in %v, want %v", d, DefaultJoinTokenTTL)
	}
	if _, err := s2.JoinNode(ctx, first, "n1", NodeJoin{Cert: hourCert("1", now)}, rec.Expires.Add(time.Second)); !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("join with the first token after a day: %v, want expired", err)
	}
}

func TestJoinNodeNameHeldUntilRemoved(t *testing.T) {
	ctx := t.Context()
	s, tok, now := storeWithToken(t, 0)
	cert := hourCert("aa", now)
	if _, err := s.JoinNode(ctx, tok, "n1", NodeJoin{Cert: cert}, now); err != nil {
		t.Fatal(err)
	}
	// Joined, not registered: the credentials hold the name.
	if _, err := s.JoinNode(ctx, tok, "n1", NodeJoin{Cert: hourCert("bb", now)}, now); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second join as n1: %v, want AlreadyExists", err)
	}
	// Revoked, but the node (NotReady, no lease) still holds it.
	if err := s.Create(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Status: api.NodeStatus{Condition: api.NodeNotReady}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JoinNode(ctx, tok, "n1", NodeJoin{Cert: hourCert("cc", now)}, now); !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "remove it first") {
		t.Fatalf("join as a NotReady node's name: %v, want AlreadyExists saying to remove it", err)
	}
	// Once an admin removes it, the name is free.
	if err := s.Delete(ctx, api.KindNode, "", "n1", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JoinNode(ctx, tok, "n1", NodeJoin{Cert: hourCert("dd", now)}, now); err != nil {
		t.Fatalf("join after removal: %v", err)
	}
}

func TestNodeCredentialCacheFollowsRenewalAndRevocation(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, tok, now := storeWithToken(t, 0)
	c := s.NewNodeCredentialCache()
	// Before its first list the cache asks the store.
	if ok, err := c.Allows(ctx, "n1", "01", now); ok || err != nil {
		t.Fatalf("unsynced cache allows an unknown node: %v %v", ok, err)
	}
	go c.Run(ctx)
	if _, err := s.JoinNode(ctx, tok, "n1", NodeJoin{Cert: hourCert("01", now)}, now); err != nil {
		t.Fatal(err)
	}
	allows := func(serial string, at time.Time) bool {
		ok, err := c.Allows(ctx, "n1", serial, at)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("cache: %s not seen in 5s", what)
			}
		}
	}
	waitFor("the join", func() bool { return allows("01", now) })
	if allows("01", now.Add(2*time.Hour)) {
		t.Fatal("an expired certificate is allowed")
	}
	// Renewed twice: the newest and the one it replaced work, not the first.
	if err := s.RenewNodeCert(ctx, "n1", "01", hourCert("02", now), now); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewNodeCert(ctx, "n1", "02", hourCert("03", now), now); err != nil {
		t.Fatal(err)
	}
	waitFor("the renewals", func() bool { return allows("03", now) && allows("02", now) && !allows("01", now) })
	if err := s.RenewNodeCert(ctx, "n1", "01", hourCert("04", now), now); !errdefs.IsUnauthorized(err) {
		t.Fatalf("renewal with a replaced certificate: %v, want Unauthorized", err)
	}
	rev, err := s.RevokeNode(ctx, "n1")
	if err != nil || rev == 0 {
		t.Fatalf("revoke: %d %v", rev, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := c.WaitFor(wctx, rev); err != nil {
		t.Fatal(err)
	}
	if allows("03", now) || allows("02", now) {
		t.Fatal("a revoked node's certificates are allowed once the cache has seen the revocation")
	}
	if rev, err := s.RevokeNode(ctx, "n1"); err != nil || rev != 0 {
		t.Fatalf("revoking again: %d %v, want 0 and no error", rev, err)
	}
}

func TestNodeCredentialCacheAllowsAJoinAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, tok, now := storeWithToken(t, 0)
	c := s.NewNodeCredentialCache()
	go c.Run(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := c.WaitFor(wctx, 1); err != nil {
		t.Fatal(err)
	}
	// Each certificate works the moment its join returns, whether or not
	// the cache's watch has brought it yet.
	for i := range 30 {
		node := fmt.Sprintf("n%d", i)
		if _, err := s.JoinNode(ctx, tok, node, NodeJoin{Cert: hourCert("01", now)}, now); err != nil {
			t.Fatal(err)
		}
		if ok, err := c.Allows(ctx, node, "01", now); !ok || err != nil {
			t.Fatalf("%s refused right after its join: %v %v", node, ok, err)
		}
		if ok, _ := c.Allows(ctx, node, "02", now); ok {
			t.Fatalf("%s: a serial never issued is allowed", node)
		}
	}
}

// A node's long request waits on its own record only: other nodes
// joining do not wake it (a fleet joining would wake every node's watch
// at every join), and its own revocation does.
func TestNodeCredentialCacheChangedIsPerNode(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, tok, now := storeWithToken(t, 0)
	c := s.NewNodeCredentialCache()
	go c.Run(ctx)
	if _, err := s.JoinNode(ctx, tok, "n1", NodeJoin{Cert: hourCert("01", now)}, now); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	// Once the cache has listed (a list wakes everyone).
	joined, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(wctx, joined); err != nil {
		t.Fatal(err)
	}
	n1 := c.Changed("n1")
	for i := range 20 {
		if _, err := s.JoinNode(ctx, tok, fmt.Sprintf("other%d", i), NodeJoin{Cert: hourCert("01", now)}, now); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFor(wctx, rev); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n1:
		t.Fatal("n1's channel closed by other nodes' joins")
	default:
	}
	if _, err := s.RevokeNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n1:
	case <-wctx.Done():
		t.Fatal("n1's revocation did not close its channel in 5s")
	}
	if ok, err := c.Allows(ctx, "n1", "01", now); ok || err != nil {
		t.Fatalf("after its revocation n1 is allowed: %v %v", ok, err)
	}
}

// A token of any number of uses takes a fleet's joins at once: none
// rewrites its record (which every other join checks), and a listing
// still counts them all.
func TestJoinTokenOfAnyUsesJoinsAtOnce(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	now := time.Now()
	tok, rec, err := s.CreateJoinToken(ctx, JoinTokenOptions{Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	_, rev0, err := s.getToken(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		name := fmt.Sprintf("n%02d", i)
		wg.Go(func() {
			_, errs[i] = s.JoinNode(ctx, tok, name, NodeJoin{Cert: NodeCert{Serial: name, NotAfter: now.Add(time.Hour)}}, now)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("join of n%02d: %v", i, err)
		}
	}
	if _, rev, err := s.getToken(ctx, rec.ID); err != nil || rev != rev0 {
		t.Fatalf("the token's record was rewritten by the joins (revision %d, was %d): %v", rev, rev0, err)
	}
	toks, err := s.ListJoinTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].Used != n {
		t.Fatalf("tokens listed: %+v, %v; want one used %d times", toks, err, n)
	}
	// Revoked, it stops the next join, though no join rewrote it.
	if err := s.RevokeJoinToken(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JoinNode(ctx, tok, "late", NodeJoin{Cert: NodeCert{Serial: "late", NotAfter: now.Add(time.Hour)}}, now); !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("join with a revoked token: %v, want refused as revoked", err)
	}
}

// A join asked again with the key it was made with gets its certificate
// back until the node renews it; no other key, token or name does.
func TestRejoinNodeOnlyForItsKeyUntilRenewed(t *testing.T) {
	ctx := t.Context()
	s, tok, now := storeWithToken(t, 1)
	j := NodeJoin{Cert: hourCert("01", now), PEM: "the first certificate", Key: "k1"}
	if _, err := s.JoinNode(ctx, tok, "n1", j, now); err != nil {
		t.Fatal(err)
	}
	other, _, err := s.CreateJoinToken(ctx, JoinTokenOptions{Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token, node, key string
		ok                     bool
	}{
		{"its key and token, used up", tok, "n1", "k1", true},
		{"another key", tok, "n1", "k2", false},
		{"no key", tok, "n1", "", false},
		{"another token", other, "n1", "k1", false},
		{"another name", tok, "n2", "k1", false},
		{"a malformed token", "berth_x", "n1", "k1", false},
	} {
		pem, ok, err := s.RejoinNode(ctx, tc.token, tc.node, tc.key)
		if err != nil || ok != tc.ok || ok && pem != j.PEM {
			t.Errorf("%s: %q %v %v, want ok %v", tc.name, pem, ok, err, tc.ok)
		}
	}
	// The cache keeps no certificate.
	c := s.NewNodeCredentialCache()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Run(cctx)
	if err := c.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c.mu.RLock()
	cached := c.creds["n1"]
	c.mu.RUnlock()
	if cached.JoinCert != "" || cached.JoinKey != "k1" {
		t.Errorf("cached record %+v, want its key without the certificate", cached)
	}
	if err := s.RenewNodeCert(ctx, "n1", "01", hourCert("02", now), now); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.RejoinNode(ctx, tok, "n1", "k1"); ok || err != nil {
		t.Errorf("after a renewal: %v %v, want no certificate given again", ok, err)
	}
}
