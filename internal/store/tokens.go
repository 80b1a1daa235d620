package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/atomicfile"
)

// Join tokens let a machine join the cluster as a node. A token reads
// berth_<id>.<secret>: the id is short and may be shown, the secret is 32
// random characters. The store keeps, under <prefix>/tokens/<id>, only the
// secret's SHA-256 next to what may be shown about the token (JoinToken):
// a copy of etcd gives nobody a usable token. The secrets are random
// enough that a plain hash needs no salt nor stretching.

const (
	tokenIDLen     = 8  // 5 random bytes in base32
	tokenSecretLen = 32 // 20 random bytes in base32
)

// tokenEncoding is lowercase base32 without padding: letters and digits
// only, so a token survives shells, URLs and YAML unquoted.
var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// JoinToken is what may be shown about a join token.
type JoinToken = api.JoinToken

// DefaultJoinTokenTTL is how long a join token works unless its maker
// says otherwise; the first-start token works this long too.
const DefaultJoinTokenTTL = 24 * time.Hour

// storedToken is a token's record in etcd.
type storedToken struct {
	JoinToken
	// Hash is the hex SHA-256 of the secret.
	Hash string `json:"hash"`
}

// JoinTokenOptions describe a new join token.
type JoinTokenOptions struct {
	Description string
	// Expires is when the token stops working; zero for never.
	Expires time.Time
	// Uses is how many joins the token allows; 0 for any number.
	Uses int
}

func (s *Store) tokenPrefix() string       { return s.prefix + "/tokens/" }
func (s *Store) tokenKey(id string) string { return s.tokenPrefix() + id }

// tokenUsePrefix holds a key for each join made with a token of any
// number of uses (see JoinNode), <prefix>/tokenuses/<id>/<node>.
func (s *Store) tokenUsePrefix() string             { return s.prefix + "/tokenuses/" }
func (s *Store) tokenUseKey(id, node string) string { return s.tokenUsePrefix() + id + "/" + node }

// ParseJoinToken splits a token into its id and secret, or says what is
// wrong with it (in the Unauthorized category: a malformed token is a
// wrong credential).
func ParseJoinToken(token string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(token), api.JoinTokenPrefix)
	if ok {
		id, secret, ok = strings.Cut(rest, ".")
	}
	if !ok || len(id) != tokenIDLen || len(secret) != tokenSecretLen || !tokenChars(id) || !tokenChars(secret) {
		return "", "", fmt.Errorf("join token: %w: malformed, want %s<8 characters>.<32 characters>", errdefs.ErrUnauthorized, api.JoinTokenPrefix)
	}
	return id, secret, nil
}

func tokenChars(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7') {
			return false
		}
	}
	return true
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return tokenEncoding.EncodeToString(b)
}

// CreateJoinToken makes a join token and returns it whole, the only time
// its secret is seen, with what is stored about it.
func (s *Store) CreateJoinToken(ctx context.Context, opts JoinTokenOptions) (string, JoinToken, error) {
	for {
		token, rec, ops := s.newJoinToken(opts)
		key := s.tokenKey(rec.ID)
		r, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(ops...).Commit()
		if err != nil {
			return "", JoinToken{}, fmt.Errorf("create join token: %w", wrapEtcd(err))
		}
		if r.Succeeded {
			return token, rec, nil
		}
		// An id taken already (1 in 2^40 per token): draw another.
	}
}

// newJoinToken draws a token and the etcd operations that store it.
func (s *Store) newJoinToken(opts JoinTokenOptions) (string, JoinToken, []clientv3.Op) {
	id, secret := randomToken(5), randomToken(20)
	rec := storedToken{
		JoinToken: JoinToken{ID: id, Description: opts.Description, Created: time.Now().UTC(), Expires: opts.Expires.UTC(), Uses: opts.Uses},
		Hash:      hashSecret(secret),
	}
	b, _ := json.Marshal(rec)
	return api.JoinTokenPrefix + id + "." + secret, rec.JoinToken, []clientv3.Op{clientv3.OpPut(s.tokenKey(id), string(b))}
}

// ListJoinTokens returns what may be shown of every join token, oldest
// first.
func (s *Store) ListJoinTokens(ctx context.Context) ([]JoinToken, error) {
	r, err := s.client.Get(ctx, s.tokenPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", wrapEtcd(err))
	}
	uses, err := s.client.Get(ctx, s.tokenUsePrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(r.Header.Revision))
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", wrapEtcd(err))
	}
	used := map[string]int{}
	for _, kv := range uses.Kvs {
		id, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), s.tokenUsePrefix()), "/")
		used[id]++
	}
	out := make([]JoinToken, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		var rec storedToken
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("stored join token %s: %w", kv.Key, err)
		}
		rec.Used += used[rec.ID]
		out = append(out, rec.JoinToken)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// getToken reads a token's record.
func (s *Store) getToken(ctx context.Context, id string) (storedToken, int64, error) {
	if len(id) != tokenIDLen || !tokenChars(id) {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w", id, errdefs.ErrNotFound)
	}
	r, err := s.client.Get(ctx, s.tokenKey(id))
	if err != nil {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w", id, wrapEtcd(err))
	}
	if len(r.Kvs) == 0 {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w", id, errdefs.ErrNotFound)
	}
	var rec storedToken
	if err := json.Unmarshal(r.Kvs[0].Value, &rec); err != nil {
		return storedToken{}, 0, fmt.Errorf("stored join token %q: %w", id, err)
	}
	return rec, r.Kvs[0].ModRevision, nil
}

// RevokeJoinToken stops the token with id from working; it stays listed,
// marked revoked. Revoking it again does nothing.
func (s *Store) RevokeJoinToken(ctx context.Context, id string) error {
	for {
		rec, rev, err := s.getToken(ctx, id)
		if err != nil {
			return err
		}
		if rec.Revoked {
			return nil
		}
		rec.Revoked = true
		b, _ := json.Marshal(rec)
		key := s.tokenKey(id)
		r, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return fmt.Errorf("revoke join token %q: %w", id, wrapEtcd(err))
		}
		if r.Succeeded {
			return nil
		}
	}
}

// VerifyJoinToken checks token at now and returns what is stored about
// it. A malformed, unknown, wrong, revoked, expired or used-up token is an
// error in the Unauthorized category that says which, naming the token by
// its id alone. It uses nothing up: JoinNode does.
func (s *Store) VerifyJoinToken(ctx context.Context, token string, now time.Time) (JoinToken, error) {
	rec, _, err := s.verifyJoinToken(ctx, token, now)
	return rec.JoinToken, err
}

// verifyJoinToken is VerifyJoinToken with the record and its revision.
func (s *Store) verifyJoinToken(ctx context.Context, token string, now time.Time) (storedToken, int64, error) {
	id, secret, err := ParseJoinToken(token)
	if err != nil {
		return storedToken{}, 0, err
	}
	rec, rev, err := s.getToken(ctx, id)
	if errdefs.IsNotFound(err) {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w: unknown", id, errdefs.ErrUnauthorized)
	}
	if err != nil {
		return storedToken{}, 0, err
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(rec.Hash)) != 1 {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w: wrong secret", id, errdefs.ErrUnauthorized)
	}
	if rec.Revoked {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w: revoked", id, errdefs.ErrUnauthorized)
	}
	if rec.Expired(now) {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w: expired at %s", id, errdefs.ErrUnauthorized, rec.Expires.Format(time.RFC3339))
	}
	if rec.UsedUp() {
		return storedToken{}, 0, fmt.Errorf("join token %q: %w: used up (%d of %d joins)", id, errdefs.ErrUnauthorized, rec.Used, rec.Uses)
	}
	return rec, rev, nil
}

// JoinTokenFile is where a server keeps the join token it made on first
// start, under its data dir.
func JoinTokenFile(dataDir string) string { return filepath.Join(dataDir, "join-token") }

// EnsureJoinToken gives a server its join token on start. The first
// server to start on an empty store makes one, which works for
// DefaultJoinTokenTTL like any other, writes it to path (mode 0600) and
// returns it with created set: the caller says where it is, never the
// secret itself. A later start returns the token in path while it still
// works. When
// the store has tokens but path holds none that works (another server
// made the first, or an operator revoked it), it returns "" and makes
// none: tokens are then made with `berth token create`.
func (s *Store) EnsureJoinToken(ctx context.Context, path string) (token string, created bool, err error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if _, err := s.VerifyJoinToken(ctx, tok, time.Now()); err == nil {
			return tok, false, nil
		} else if !errdefs.IsUnauthorized(err) {
			return "", false, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("join token file %s: %w", path, err)
	}
	// Only while no token exists at all, checked in the same transaction
	// as the write, so that servers starting together make one between
	// them.
	token, rec, ops := s.newJoinToken(JoinTokenOptions{Description: "made on first start", Expires: time.Now().Add(DefaultJoinTokenTTL)})
	prefix := s.tokenPrefix()
	r, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(prefix).WithPrefix(), "=", 0)).
		Then(ops...).Commit()
	if err != nil {
		return "", false, fmt.Errorf("first join token: %w", wrapEtcd(err))
	}
	if !r.Succeeded {
		return "", false, nil
	}
	if err := writePrivate(path, []byte(token+"\n")); err != nil {
		// A token nobody can read is no use: take it back, so that the
		// next start makes one again.
		_, _ = s.client.Delete(context.WithoutCancel(ctx), s.tokenKey(rec.ID))
		return "", false, fmt.Errorf("join token file %s: %w", path, err)
	}
	return token, true, nil
}

// writePrivate writes a root-only file, making its directory.
func writePrivate(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
