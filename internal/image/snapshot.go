package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image/unpack"
)

// Snapshot is what a container needs from its image.
type Snapshot struct {
	Image Image
	// LowerDirs are the unpacked layers, top first, as overlayfs's
	// lowerdir option wants them. They are shared: never write to them.
	LowerDirs []string
}

// use is the on-disk record of one container using one image.
type use struct {
	Container string   `json:"container"`
	Image     string   `json:"image"` // manifest digest
	Name      string   `json:"name,omitempty"`
	Layers    []string `json:"layers"` // diff IDs, kept while the container lives
}

var containerIDRe = lazyRegexp(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (s *Store) usePath(containerID string) string {
	return filepath.Join(s.root, "uses", containerID+".json")
}

func (s *Store) layerLockPath(hex string) string {
	return filepath.Join(s.root, "locks", "layer-"+hex)
}

// LayerDir is where the layer with the given diff ID is unpacked.
func (s *Store) LayerDir(diffID string) string {
	return filepath.Join(s.root, "layers", strings.TrimPrefix(diffID, "sha256:"))
}

// Prepare records that containerID uses the image ref (on disk, so it
// survives restarts; preparing again replaces the record) and unpacks the
// image's layers that are not unpacked yet. Each layer is unpacked once,
// even by concurrent callers, into a staging dir renamed into place.
func (s *Store) Prepare(ctx context.Context, ref, containerID string) (Snapshot, error) {
	if !containerIDRe().MatchString(containerID) {
		return Snapshot{}, fmt.Errorf("container id %q: %w", containerID, errdefs.ErrInvalidArgument)
	}
	img, err := s.recordUse(ref, containerID)
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{Image: img}
	if err := s.unpackLayers(ctx, img); err != nil {
		_ = s.Release(context.WithoutCancel(ctx), containerID)
		return Snapshot{}, err
	}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		snap.LowerDirs = append(snap.LowerDirs, s.LayerDir(img.Layers[i].DiffID))
	}
	if len(snap.LowerDirs) == 0 {
		// overlayfs needs a lower dir even for an image with no layers.
		snap.LowerDirs = []string{filepath.Join(s.root, "empty")}
	}
	return snap, nil
}

func (s *Store) recordUse(ref, containerID string) (Image, error) {
	unlock, err := s.lock()
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	digest, name, err := s.resolveIn(idx, ref)
	if err != nil {
		return Image{}, err
	}
	img, err := s.load(digest, name)
	if err != nil {
		return Image{}, err
	}
	u := use{Container: containerID, Image: img.Digest, Name: img.Name}
	for _, l := range img.Layers {
		u.Layers = append(u.Layers, l.DiffID)
	}
	data, err := json.Marshal(u)
	if err != nil {
		return Image{}, err
	}
	// Not synced, unlike the index: the sync was most of Prepare's time,
	// and buys nothing. The record only keeps layers from collection while
	// its container lives, and a host crash that could empty or tear it
	// ends that container too; nothing runs again from an old container's
	// rootfs (a restart is a new container with its own record). Even
	// synced, the rename was never durable (no directory sync), so losing
	// a record in a crash was always possible. readUses skips a torn
	// record, and Release removes it by name.
	if err := s.replaceFile(s.usePath(containerID), data, false); err != nil {
		return Image{}, fmt.Errorf("container %s: record image use: %w", containerID, err)
	}
	return img, nil
}

func (s *Store) unpackLayers(ctx context.Context, img Image) error {
	var oimg v1.Image
	for _, l := range img.Layers {
		if _, err := os.Stat(s.LayerDir(l.DiffID)); err == nil {
			continue
		}
		if oimg == nil {
			h, err := v1.NewHash(img.Digest)
			if err != nil {
				return fmt.Errorf("image %s: %w", img.Digest, err)
			}
			// The store root is an OCI layout, so the library reads it.
			if oimg, err = layout.Path(s.root).Image(h); err != nil {
				return fmt.Errorf("image %s: %w", img.Digest, err)
			}
		}
		if err := s.unpackLayer(ctx, oimg, l); err != nil {
			return fmt.Errorf("image %s: layer %s: %w", img.Digest, l.DiffID, err)
		}
	}
	return nil
}

func (s *Store) unpackLayer(ctx context.Context, img v1.Image, l Layer) error {
	dir := s.LayerDir(l.DiffID)
	hex := filepath.Base(dir)
	unlock, err := flock(s.layerLockPath(hex), true)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(dir); err == nil {
		return nil // a concurrent caller unpacked it while we waited
	}
	h, err := v1.NewHash(l.DiffID)
	if err != nil {
		return err
	}
	layer, err := img.LayerByDiffID(h)
	if err != nil {
		return err
	}
	rc, err := layer.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.MkdirTemp(filepath.Join(s.root, "layers"), ".tmp-"+hex+"-")
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	if err := unpack.Layer(ctx, rc, tmp); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	if err := os.Rename(tmp, dir); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	s.unpacks.Add(1)
	return nil
}

// Release forgets that containerID uses an image, and removes unpacked
// layers nothing needs any more. Releasing an unknown container is not an
// error, so callers can release unconditionally.
func (s *Store) Release(ctx context.Context, containerID string) error {
	if !containerIDRe().MatchString(containerID) {
		return fmt.Errorf("container id %q: %w", containerID, errdefs.ErrInvalidArgument)
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Remove(s.usePath(containerID)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("container %s: release image: %w", containerID, err)
	}
	return s.gc(ctx)
}

// Users returns the containers that use the image ref, sorted.
func (s *Store) Users(ctx context.Context, ref string) ([]string, error) {
	img, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	h, err := v1.NewHash(img.Digest)
	if err != nil {
		return nil, err
	}
	return s.users(h)
}

func (s *Store) users(digest v1.Hash) ([]string, error) {
	uses, err := s.readUses()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range uses {
		if u.Image == digest.String() {
			out = append(out, u.Container)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (s *Store) readUses() ([]use, error) {
	dir := filepath.Join(s.root, "uses")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image uses: %w", err)
	}
	var out []use
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("image uses: %w", err)
		}
		var u use
		if err := json.Unmarshal(data, &u); err != nil {
			// Records are written unsynced (see recordUse): an empty or
			// partial one is left by a host crash, which also ended the
			// container it names, so it protects nothing.
			continue
		}
		out = append(out, u)
	}
	return out, nil
}
