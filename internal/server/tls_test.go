package server

import (
	"os"
	"path/filepath"
	"testing"
)

// A single server makes its admin and metrics tokens once, different,
// root-only, and reads the same ones back on its next start.
func TestCredentialsMakeAMetricsTokenOfTheirOwn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	c, err := LoadOrCreateCredentials(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.MetricsToken) < 32 || c.MetricsToken == c.Token {
		t.Fatalf("metrics token %q beside admin token %q: want a long one of its own", c.MetricsToken, c.Token)
	}
	fi, err := os.Stat(filepath.Join(dir, MetricsTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", MetricsTokenFile, fi, err)
	}
	again, err := LoadOrCreateCredentials(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Token != c.Token || again.MetricsToken != c.MetricsToken {
		t.Error("the tokens changed on the second start")
	}
}
