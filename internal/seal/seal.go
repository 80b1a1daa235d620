// Package seal encrypts the cluster's secrets at rest (the CA private key,
// the admin token) with a key that only servers hold.
//
// A sealed value is "berth-sealed:v1:" followed by base64 of a 24-byte
// nonce and the XChaCha20-Poly1305 ciphertext. The value's name is the
// associated data, so a sealed token cannot be passed off as a sealed CA
// key. The key is 32 random bytes kept hex-encoded in a file of mode
// 0600: each server's data dir (seal.key) unless a flag names another
// file. Every server of a cluster holds the same key; agents never do.
package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/berth-dev/berth/api/errdefs"
)

// KeyFile is the seal key's file name in a server's data dir.
const KeyFile = "seal.key"

// prefix marks a sealed value, and its format's version.
const prefix = "berth-sealed:v1:"

// ErrOpen is the error of a value that does not open with the key: another
// cluster's key, or a value tampered with.
var ErrOpen = errors.New("sealed value does not open with this seal key")

// Key seals and opens values.
type Key struct {
	path string
	// mac keys Digest; derived from the seal key, so that a digest
	// says nothing of a value to one without the key.
	mac  []byte
	aead interface {
		Seal(dst, nonce, plaintext, additionalData []byte) []byte
		Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
		NonceSize() int
	}
}

// Path is the file the key was read from.
func (k *Key) Path() string { return k.path }

// Load reads the key in path. A key that group or others may read is
// refused: it guards the cluster's CA.
func Load(path string) (*Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("seal key %s: %w: mode %v lets others read it; chmod 600 it", path, errdefs.ErrFailedPrecondition, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != chacha20poly1305.KeySize {
		return nil, fmt.Errorf("seal key %s: %w: want %d bytes in hex", path, errdefs.ErrInvalidArgument, chacha20poly1305.KeySize)
	}
	return newKey(path, raw)
}

// Create makes a new random key in path (mode 0600). It fails when path
// exists: a key that sealed values must never be replaced by accident.
func Create(path string) (*Key, error) {
	raw := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	if _, err := f.WriteString(hex.EncodeToString(raw) + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	return newKey(path, raw)
}

// LoadOrCreate reads the key in path, making it first when there is none.
// created says this call made it.
func LoadOrCreate(path string) (k *Key, created bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		k, err := Create(path)
		if errors.Is(err, os.ErrExist) {
			k, err = Load(path) // made by a racing start
			return k, false, err
		}
		return k, err == nil, err
	}
	k, err = Load(path)
	return k, false, err
}

func newKey(path string, raw []byte) (*Key, error) {
	a, err := chacha20poly1305.NewX(raw)
	if err != nil {
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	mac := sha256.Sum256(append([]byte("berth-digest:v1:"), raw...))
	return &Key{path: path, aead: a, mac: mac[:]}, nil
}

// Digest is a keyed hash of the value called name: equal values have
// equal digests, and without the key a digest cannot be checked against
// a guess of the value.
func (k *Key) Digest(name string, plain []byte) string {
	h := hmac.New(sha256.New, k.mac)
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(plain)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// Seal encrypts the value called name.
func (k *Key) Seal(name string, plain []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+chacha20poly1305.Overhead)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal %q: %w", name, err)
	}
	ct := k.aead.Seal(nonce, nonce, plain, []byte(name))
	return []byte(prefix + base64.StdEncoding.EncodeToString(ct)), nil
}

// Open decrypts the value called name sealed by Seal with the same key.
func (k *Key) Open(name string, sealed []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(sealed, []byte(prefix))
	if !ok {
		return nil, fmt.Errorf("open %q: %w: not a sealed value", name, errdefs.ErrInvalidArgument)
	}
	ct, err := base64.StdEncoding.DecodeString(string(rest))
	if err != nil || len(ct) < k.aead.NonceSize() {
		return nil, fmt.Errorf("open %q: %w: malformed sealed value", name, errdefs.ErrInvalidArgument)
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, ct[:n], ct[n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("open %q with %s: %w", name, k.path, ErrOpen)
	}
	return plain, nil
}

// IsSealed reports whether v is a sealed value (as opposed to one a
// server of an older version stored in the clear).
func IsSealed(v []byte) bool { return bytes.HasPrefix(v, []byte(prefix)) }
