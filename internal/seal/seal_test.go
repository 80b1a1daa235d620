package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpensOnlyWithItsKeyAndName(t *testing.T) {
	dir := t.TempDir()
	k, created, err := LoadOrCreate(filepath.Join(dir, KeyFile))
	if err != nil || !created {
		t.Fatalf("LoadOrCreate: %v, created %v", err, created)
	}
	fi, err := os.Stat(k.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	secret := []byte("-----BEGIN EC PRIVATE KEY-----\nabc\n")
	v, err := k.Seal("api-ca", secret)
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed(v) || bytes.Contains(v, secret[:20]) {
		t.Fatalf("sealed value %q shows its plaintext or lacks the marker", v)
	}
	if got, err := k.Open("api-ca", v); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open: %q, %v", got, err)
	}
	// The name is bound: a sealed CA key cannot stand in for the token.
	if _, err := k.Open("api-token", v); !errors.Is(err, ErrOpen) {
		t.Errorf("Open under another name: %v, want ErrOpen", err)
	}
	again, created, err := LoadOrCreate(k.Path())
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: %v, created %v", err, created)
	}
	if got, err := again.Open("api-ca", v); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open with the reloaded key: %q, %v", got, err)
	}
	other, err := Create(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open("api-ca", v); !errors.Is(err, ErrOpen) {
		t.Errorf("Open with another key: %v, want ErrOpen", err)
	}
	tampered := append([]byte{}, v...)
	tampered[len(tampered)-3] ^= 1
	if _, err := k.Open("api-ca", tampered); err == nil {
		t.Error("a tampered value opened")
	}
	if _, err := k.Open("api-ca", secret); err == nil {
		t.Error("a plaintext value opened as sealed")
	}
	if _, err := Create(k.Path()); !errors.Is(err, os.ErrExist) {
		t.Errorf("Create over an existing key: %v, want ErrExist", err)
	}
}

func TestLoadRefusesAKeyOthersCanRead(t *testing.T) {
	k, err := Create(filepath.Join(t.TempDir(), KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(k.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(k.Path()); err == nil {
		t.Fatal("a 0644 seal key loaded")
	}
	if err := os.WriteFile(k.Path(), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(k.Path(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(k.Path()); err == nil {
		t.Fatal("a malformed seal key loaded")
	}
}
