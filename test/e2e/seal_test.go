package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/seal"
)

// TestSecretsSealedAndPeersOnTLS runs three servers made by "berth server
// init" and copies of its files. etcd holds neither the CA key nor the
// admin token in the clear; the etcd peer port speaks only TLS and only
// to peer certificates of the cluster CA (not to plain HTTP, a client
// without a certificate, or a node's certificate of the same CA); and
// after every server restarts, the sealed CA still signs a joining node.
func TestSecretsSealedAndPeersOnTLS(t *testing.T) {
	c := startHACluster(t)
	cl := c.etcd()
	assertNoSecretsInEtcd(t, cl, c.token)

	s1 := c.servers[0]
	ca := openClusterCA(t, s1.dataDir)
	pool := ca.Pool()
	peerGet := func(cfg *tls.Config) (int, string, error) {
		scheme := "https"
		tr := &http.Transport{TLSClientConfig: cfg}
		if cfg == nil {
			scheme, tr = "http", &http.Transport{}
		}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := hc.Get(scheme + "://" + s1.peer + "/members")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}

	// A server's own peer certificate is answered: the probe works.
	own, err := tls.LoadX509KeyPair(filepath.Join(s1.dataDir, "tls", "peer.crt"), filepath.Join(s1.dataDir, "tls", "peer.key"))
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := peerGet(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{own}})
	if err != nil || code != http.StatusOK || !strings.Contains(body, `"s3"`) {
		t.Fatalf("/members with a peer certificate: %d %q, %v; want the members", code, body, err)
	}
	// Plain HTTP gets no member list.
	if code, body, err := peerGet(nil); err == nil && (code == http.StatusOK || strings.Contains(body, "s3")) {
		t.Errorf("/members over plain HTTP answered %d %q", code, body)
	}
	// TLS without a client certificate is refused.
	if code, body, err := peerGet(&tls.Config{RootCAs: pool}); err == nil {
		t.Errorf("/members over TLS without a client certificate answered %d %q", code, body)
	}
	// A self-signed client certificate is refused.
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if code, body, err := peerGet(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{nodeCert(t, other, "x1")}}); err == nil {
		t.Errorf("/members with another CA's certificate answered %d %q", code, body)
	}
	// So is a node's certificate of the cluster CA itself: agents hold those.
	if code, body, err := peerGet(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{nodeCert(t, ca, "n1")}}); err == nil {
		t.Errorf("/members with a node certificate answered %d %q", code, body)
	}

	// Every server restarts: the members meet again over TLS, and each
	// opens the sealed CA and token.
	for _, s := range c.servers {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.killed = true
	}
	for _, s := range c.servers {
		c.start(s)
	}
	for _, s := range c.servers {
		eventually(t, 60*time.Second, "the API of "+s.name+" after the restart", func() bool {
			_, _, code := c.run(s, "get", "nodes")
			return code == 0
		})
	}
	assertNoSecretsInEtcd(t, c.etcd(), c.token)
	out, errOut, code := c.run(c.servers[1], "token", "create")
	if code != 0 {
		t.Fatalf("berth token create: exit %d: %s%s", code, out, errOut)
	}
	tok := regexp.MustCompile(`berth_[0-9a-z]+\.[0-9a-z]+`).FindString(out)
	if tok == "" {
		t.Fatalf("no join token in %q", out)
	}
	caPEM, err := os.ReadFile(c.caFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := client.Join(ctx, "https://"+c.servers[2].api, client.JoinOptions{Token: tok, Node: "j1", CA: caPEM})
	if err != nil {
		t.Fatalf("join after the restart: %v", err)
	}
	cert, err := nodecert.ParseCertificate(nc.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the joined node's certificate: %v", err)
	}
}

// TestServerInitRefusesAMemberWithoutSecrets starts a member of a
// cluster of several that was given no copy of the cluster's secrets: it
// exits non-zero and says what to copy.
func TestServerInitRefusesAMemberWithoutSecrets(t *testing.T) {
	dir := t.TempDir()
	host := "127.0.0.34"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	peer := freeAddr(t, host)
	cmd := exec.CommandContext(ctx, berthBin, "--data-dir", dir, "server", "--name", "s1", "--listen", freeAddr(t, host),
		"--peer-listen", peer, "--peers", "s1="+peer+",s2=127.0.0.35:1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "berth server init") || !strings.Contains(string(out), "seal.key") {
		t.Fatalf("a member without the cluster's secrets: %v\n%s", err, out)
	}
	// An http:// peer URL is refused by name: peer traffic is TLS.
	cmd = exec.CommandContext(ctx, berthBin, "--data-dir", t.TempDir(), "server", "--name", "s1", "--listen", freeAddr(t, host),
		"--peer-listen", "http://"+peer)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "https://") {
		t.Fatalf("an http:// peer URL: %v\n%s", err, out)
	}
	// etcd's client API, unauthenticated, stays on loopback.
	cmd = exec.CommandContext(ctx, berthBin, "--data-dir", t.TempDir(), "server", "--name", "s1", "--listen", freeAddr(t, host),
		"--peer-listen", peer, "--etcd-client-listen", "10.0.0.1:2379")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "loopback") {
		t.Fatalf("--etcd-client-listen off loopback: %v\n%s", err, out)
	}
	// init makes the secrets once and keeps them after.
	first, err := exec.CommandContext(ctx, berthBin, "--data-dir", dir, "server", "init").CombinedOutput()
	if err != nil || !strings.Contains(string(first), "(made)") {
		t.Fatalf("berth server init: %v\n%s", err, first)
	}
	key, _ := os.ReadFile(filepath.Join(dir, "seal.key"))
	again, err := exec.CommandContext(ctx, berthBin, "--data-dir", dir, "server", "init").CombinedOutput()
	if err != nil || strings.Contains(string(again), "(made)") {
		t.Fatalf("berth server init again: %v\n%s", err, again)
	}
	if key2, _ := os.ReadFile(filepath.Join(dir, "seal.key")); string(key2) != string(key) {
		t.Error("a second init replaced the seal key")
	}
}

// openClusterCA opens the CA a server keeps sealed in its data dir, as a
// root user on that server could (and one on an agent host cannot).
func openClusterCA(t *testing.T, dataDir string) *pki.CA {
	t.Helper()
	key, err := seal.Load(filepath.Join(dataDir, seal.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := os.ReadFile(filepath.Join(dataDir, "tls", pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "PRIVATE KEY") {
		t.Fatalf("tls/ca.key holds the key in the clear")
	}
	keyPEM, err := key.Open("ca-key", sealed)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dataDir, "tls", pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func nodeCert(t *testing.T, ca *pki.CA, node string) tls.Certificate {
	t.Helper()
	csr, key, err := nodecert.NewKey(node)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// assertNoSecretsInEtcd reads every key raw, as etcdctl would, and fails
// on a private key or the admin token in the clear.
func assertNoSecretsInEtcd(t *testing.T, cl *clientv3.Client, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cl.Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	sealed := 0
	for _, kv := range r.Kvs {
		v := string(kv.Value)
		if strings.Contains(v, "PRIVATE KEY") || strings.Contains(v, token) {
			t.Errorf("etcd key %s holds a secret in the clear", kv.Key)
		}
		if seal.IsSealed(kv.Value) {
			sealed++
		}
	}
	if sealed < 2 {
		t.Errorf("%d sealed values among %d keys, want the CA and the token", sealed, len(r.Kvs))
	}
}

// TestSealKeyFileFlag keeps the seal key outside the data dir with
// --seal-key-file: init makes it there, a server started with the flag
// opens its sealed CA, and one started without it cannot.
func TestSealKeyFileFlag(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "cluster.seal")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, berthBin, "--data-dir", dir, "server", "init", "--seal-key-file", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("berth server init --seal-key-file: %v\n%s", err, out)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seal key %s: %v, %v; want mode 0600", keyFile, fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, seal.KeyFile)); err == nil {
		t.Fatal("init wrote a seal key into the data dir too")
	}
	host := "127.0.0.36"
	api, peer := freeAddr(t, host), freeAddr(t, host)
	args := []string{"--data-dir", dir, "server", "--name", "s1", "--listen", api, "--peer-listen", peer}
	srv := startProcess(t, "berth server", append(args, "--seal-key-file", keyFile)...)
	eventually(t, 30*time.Second, "the server's API", func() bool {
		tok, err := os.ReadFile(filepath.Join(dir, "tls", "token"))
		if err != nil {
			return false
		}
		out, err := exec.CommandContext(ctx, berthBin, "--server", "https://"+api, "--token", strings.TrimSpace(string(tok)),
			"--ca-file", filepath.Join(dir, "tls", "ca.crt"), "get", "nodes").CombinedOutput()
		return err == nil && strings.Contains(string(out), "NAME")
	})
	srv.stop(t)
	out, err := exec.CommandContext(ctx, berthBin, args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--seal-key-file") {
		t.Fatalf("a server without --seal-key-file: %v\n%s\nwant a failure pointing at the flag", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, seal.KeyFile)); err == nil {
		t.Error("the failed start made a seal key of its own in the data dir")
	}
}
