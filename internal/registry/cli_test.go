package registry_test

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/cli"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/registry"
)

// pushSetup makes a data dir whose image store holds busybox (built), and
// an empty store for the registry to push to.
func pushSetup(t *testing.T) (dataDir string, built image.Image, srvStore *image.Store) {
	t.Helper()
	dataDir = t.TempDir()
	local, err := image.Open(filepath.Join(dataDir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	return dataDir, imagetest.BusyboxImage(t, local), openStore(t)
}

// TestCLIPush runs `berth image push` against a registry on a unix socket,
// as the server's socket will serve it.
func TestCLIPush(t *testing.T) {
	ctx := context.Background()
	dataDir, built, srvStore := pushSetup(t)
	sock := filepath.Join(t.TempDir(), "berth.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(srvStore, registry.Options{})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	})

	args := []string{"--data-dir", dataDir, "--server", "unix://" + sock, "image", "push", imagetest.BusyboxTag}
	if code := cli.Run(ctx, args); code != 0 {
		t.Fatalf("berth %v: exit %d", args, code)
	}
	img, err := srvStore.Resolve(ctx, imagetest.BusyboxTag)
	if err != nil || img.Digest != built.Digest {
		t.Fatalf("server has %+v, %v; want %s", img, err, built.Digest)
	}
	if code := cli.Run(ctx, []string{"--data-dir", dataDir, "--server", "unix://" + sock, "image", "push", "demo/absent:1"}); code == 0 {
		t.Fatal("push of an absent image succeeded")
	}
}

// TestCLIPushTLS pushes over https with the API's token and CA flags.
func TestCLIPushTLS(t *testing.T) {
	ctx := context.Background()
	dataDir, built, srvStore := pushSetup(t)
	authorize := func(r *http.Request, push bool) error {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			return errdefs.ErrUnauthorized
		}
		return nil
	}
	srv := httptest.NewTLSServer(registry.New(srvStore, registry.Options{Authorize: authorize}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--data-dir", dataDir, "--server", srv.URL, "--ca-file", ca}
	if code := cli.Run(ctx, append(base, "image", "push", imagetest.BusyboxTag)); code == 0 {
		t.Fatal("push without the token succeeded")
	}
	if code := cli.Run(ctx, append(base, "--token", "s3cret", "image", "push", imagetest.BusyboxTag)); code != 0 {
		t.Fatalf("push with the token: exit %d", code)
	}
	img, err := srvStore.Resolve(ctx, imagetest.BusyboxTag)
	if err != nil || img.Digest != built.Digest {
		t.Fatalf("server has %+v, %v; want %s", img, err, built.Digest)
	}
}
