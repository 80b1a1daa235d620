// Command pull times getting a ~340 MB multi-layer image from a registry
// on loopback into an empty store, ready to run: berth image pull beside
// podman pull and skopeo copy plus a separate unpack (the floor for
// "download and decompress"), and a cold berth run of 10 replicas on one
// node. The image is built here from Debian packages (apt-get download),
// one layer per package, gzip, on top of a busybox layer; the registry is
// Debian's docker-registry. It prints figures and asserts nothing.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/bench/internal/harness"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

var (
	berthBin = flag.String("berth", "bin/berth", "the berth binary")
	runs     = flag.Int("n", 5, "runs of each")
	cacheDir = flag.String("cache", "build/pull-cache", "where the downloaded packages are kept between runs")
	packages = flag.String("packages", "libllvm15 libllvm14 gcc-12 libicu72 perl-modules-5.36", "Debian packages, one layer each")
)

func main() {
	flag.Parse()
	if err := bench(); err != nil {
		fmt.Fprintln(os.Stderr, "bench pull:", err)
		os.Exit(1)
	}
}

func bench() error {
	bin, err := filepath.Abs(*berthBin)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "berth-bench-pull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	ref, stop, err := serveImage(work)
	if err != nil {
		return err
	}
	defer stop()

	results := map[string][]time.Duration{}
	order := []string{"berth image pull"}
	if results[order[0]], err = berthPulls(bin, work, ref); err != nil {
		return err
	}
	for _, peer := range []struct {
		name, bin string
		pulls     func(work, ref string) ([]time.Duration, error)
	}{{"podman pull", "podman", podmanPulls}, {"skopeo copy + unpack", "skopeo", skopeoPulls}} {
		if _, err := exec.LookPath(peer.bin); err != nil {
			fmt.Printf("%s: not installed (make bench installs it)\n", peer.bin)
			continue
		}
		order = append(order, peer.name)
		if results[peer.name], err = peer.pulls(work, ref); err != nil {
			return err
		}
	}

	fmt.Printf("\nfrom an empty store to a runnable image, %d runs:\n", *runs)
	base := p50(results["berth image pull"])
	for _, k := range order {
		ds := results[k]
		fmt.Printf("  %-22s p50 %7.2fs  max %7.2fs  (%.2fx berth)\n", k, p50(ds).Seconds(), slices.Max(ds).Seconds(), p50(ds).Seconds()/base.Seconds())
	}
	cold, err := coldRun(bin, work, ref)
	if err != nil {
		return err
	}
	fmt.Printf("\ncold berth run --replicas 10 (pull included, until all Running): %.2fs\n", cold.Seconds())
	return nil
}

// serveImage builds the image, pushes it to a registry started on
// loopback, and points berth at that registry (insecure); it returns
// the image's reference and how to stop the registry.
func serveImage(work string) (ref string, stop func(), err error) {
	img, size, err := buildImage(work)
	if err != nil {
		return "", nil, err
	}
	addr, stop, err := startRegistry(work)
	if err != nil {
		return "", nil, err
	}
	ref = addr + "/bench/debian:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err == nil {
		err = remote.Write(r, img, remote.WithContext(context.Background()))
	}
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("push: %w", err)
	}
	layers, _ := img.Layers()
	fmt.Printf("image %s: %d layers, %.0f MB compressed, registry on loopback\n", ref, len(layers), float64(size)/1e6)
	cfg := filepath.Join(work, "registry.json")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `{"registries": {%q: {"insecure": true}}}`, addr), 0o600); err != nil {
		stop()
		return "", nil, err
	}
	os.Setenv("BERTH_REGISTRY_CONFIG", cfg)
	return ref, stop, nil
}

// berthPulls times berth image pull of ref into empty stores.
func berthPulls(bin, work, ref string) ([]time.Duration, error) {
	var out []time.Duration
	for i := range *runs {
		data := filepath.Join(work, fmt.Sprintf("berth-%d", i))
		d, err := timed(bin, "--data-dir", data, "image", "pull", ref)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		os.RemoveAll(data)
	}
	return out, nil
}

// podmanPulls times podman pull of ref into empty stores.
func podmanPulls(work, ref string) ([]time.Duration, error) {
	var out []time.Duration
	for i := range *runs {
		root := filepath.Join(work, fmt.Sprintf("podman-%d", i))
		d, err := timed("podman", "--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "run"),
			"--storage-driver", "overlay", "pull", "--tls-verify=false", "-q", ref)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		_ = exec.Command("podman", "--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "run"), "--storage-driver", "overlay", "system", "reset", "-f").Run()
		_ = exec.Command("umount", "-R", filepath.Join(root, "root", "overlay")).Run()
		os.RemoveAll(root)
	}
	return out, nil
}

// skopeoPulls times skopeo copy of ref to an OCI layout, unpacked.
func skopeoPulls(work, ref string) ([]time.Duration, error) {
	var out []time.Duration
	for i := range *runs {
		dir := filepath.Join(work, fmt.Sprintf("skopeo-%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if _, err := timed("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://"+ref, "oci:"+filepath.Join(dir, "oci")+":1"); err != nil {
			return nil, err
		}
		if err := unpackLayout(filepath.Join(dir, "oci"), filepath.Join(dir, "rootfs")); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
		os.RemoveAll(dir)
	}
	return out, nil
}

// buildImage downloads the packages (once, into the cache) and makes the
// image: a busybox layer, then one gzip layer per package.
func buildImage(work string) (v1.Image, int64, error) {
	debs := filepath.Join(*cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, 0, err
	}
	cache, err := filepath.Abs(debs)
	if err != nil {
		return nil, 0, err
	}
	pkgs := strings.Fields(*packages)
	for _, p := range pkgs {
		if m, _ := filepath.Glob(filepath.Join(cache, p+"_*.deb")); len(m) > 0 {
			continue
		}
		cmd := exec.Command("apt-get", "download", p)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, 0, fmt.Errorf("apt-get download %s: %w: %s", p, err, out)
		}
	}
	rootfs := filepath.Join(work, "busybox")
	if err := runtimetest.WriteBusyboxRootfs(rootfs); err != nil {
		return nil, 0, err
	}
	dirs := []string{rootfs}
	for _, p := range pkgs {
		m, _ := filepath.Glob(filepath.Join(cache, p+"_*.deb"))
		dir := filepath.Join(work, "pkg-"+p)
		if out, err := exec.Command("dpkg-deb", "-x", m[0], dir).CombinedOutput(); err != nil {
			return nil, 0, fmt.Errorf("dpkg-deb -x %s: %w: %s", m[0], err, out)
		}
		dirs = append(dirs, dir)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var size int64
	for i, dir := range dirs {
		tgz := filepath.Join(work, fmt.Sprintf("layer-%d.tar.gz", i))
		if out, err := exec.Command("tar", "-C", dir, "-czf", tgz, ".").CombinedOutput(); err != nil {
			return nil, 0, fmt.Errorf("tar %s: %w: %s", dir, err, out)
		}
		l, err := tarball.LayerFromFile(tgz, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, 0, err
		}
		n, _ := l.Size()
		size += n
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer}); err != nil {
			return nil, 0, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, 0, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"sh"}
	img, err = mutate.ConfigFile(img, cf)
	return img, size, err
}

// startRegistry runs docker-registry over plain HTTP on a free loopback port.
func startRegistry(work string) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(work, "registry.yml")
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(work, "registry"), addr)
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command("docker-registry", "serve", cfg)
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("docker-registry (scripts/deps.sh installs it): %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, errors.New("docker-registry did not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func timed(name string, args ...string) (time.Duration, error) {
	t0 := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return time.Since(t0), nil
}

// unpackLayout extracts the layers of the one image in an OCI layout into
// rootfs, one after the other, as a plain tool would.
func unpackLayout(dir, rootfs string) error {
	var idx v1.IndexManifest
	if err := readJSON(filepath.Join(dir, "index.json"), &idx); err != nil {
		return err
	}
	var m v1.Manifest
	d := idx.Manifests[0].Digest
	if err := readJSON(filepath.Join(dir, "blobs", d.Algorithm, d.Hex), &m); err != nil {
		return err
	}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if out, err := exec.Command("tar", "-xzf", filepath.Join(dir, "blobs", l.Digest.Algorithm, l.Digest.Hex), "-C", rootfs).CombinedOutput(); err != nil {
			return fmt.Errorf("unpack %s: %w: %s", l.Digest, err, out)
		}
	}
	return nil
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// coldRun starts berth up on an empty data dir and times berth run of 10
// replicas of ref (the image pulled on demand) until all run.
func coldRun(bin, work, ref string) (time.Duration, error) {
	up, err := harness.Start(bin, filepath.Join(work, "up"), harness.Options{Args: []string{"--no-network"}})
	if err != nil {
		return 0, err
	}
	defer up.Stop()
	return timed(up.Bin, "--data-dir", up.Data, "run", "--name", "big", "--replicas", "10", "--timeout", "5m", ref, "sleep", "3600")
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
