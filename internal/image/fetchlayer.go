package image

// A pulled layer is received, verified, decompressed and unpacked in one
// pass: the bytes that go to the staged blob also feed the decompressor
// and the unpacker, so a pull never writes a tarball it then reads back,
// and a layer that would fail to unpack (a hostile entry) is refused
// before anything names it.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image/unpack"
)

// FetchLayer is FetchBlob for a layer whose uncompressed digest is diffID:
// while the blob arrives it is also decompressed (gzip, zstd or none, as
// its first bytes say) and unpacked into the layer directory. The layer is
// kept only when the blob matches d, the tar matches diffID and every
// entry unpacks safely; an error names the bad entry. A layer already
// unpacked is not unpacked again.
func (s *Store) FetchLayer(ctx context.Context, d v1.Descriptor, diffID v1.Hash, open func(context.Context) (io.ReadCloser, error), progress func(done int64)) (fetched bool, err error) {
	if err := CheckDigest(diffID); err != nil {
		return false, fmt.Errorf("layer %s: diff ID: %w", d.Digest, err)
	}
	dir := s.LayerDir(diffID.String())
	if _, err := os.Stat(dir); err == nil {
		return s.FetchBlob(ctx, d, open, progress)
	}
	unlock, err := flockCtx(ctx, s.layerLockPath(diffID.Hex))
	if err != nil {
		return false, fmt.Errorf("layer %s: %w", diffID, err)
	}
	defer unlock()
	if _, err := os.Stat(dir); err == nil {
		return s.FetchBlob(ctx, d, open, progress)
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.root, "layers"), ".tmp-"+diffID.Hex+"-")
	if err != nil {
		return false, err
	}
	keep := false
	defer func() {
		if !keep {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return false, err
	}

	pr, pw := io.Pipe()
	unpacked := make(chan error, 1)
	unpackCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		err := unpackStream(unpackCtx, pr, diffID, tmp)
		// A failure stops the writer; success drains what the tar left.
		pr.CloseWithError(err)
		unpacked <- err
	}()
	var started bool
	teeOpen := func(ctx context.Context) (io.ReadCloser, error) {
		rc, err := open(ctx)
		if err != nil {
			return nil, err
		}
		started = true
		return struct {
			io.Reader
			io.Closer
		}{io.TeeReader(rc, pw), rc}, nil
	}
	fetched, err = s.FetchBlob(ctx, d, teeOpen, progress)
	if !started {
		// Another process had the blob: it is unpacked when a container needs it.
		pw.CloseWithError(errSkipped)
		<-unpacked
		return fetched, err
	}
	if err != nil {
		pw.CloseWithError(err)
		<-unpacked
		return false, err
	}
	pw.Close()
	if uerr := <-unpacked; uerr != nil {
		// The blob is right but its content is not: nothing of it stays.
		return false, errors.Join(fmt.Errorf("layer %s: %w", d.Digest, uerr), s.Unstage(d.Digest))
	}
	if err := os.Rename(tmp, dir); err != nil {
		return false, errors.Join(fmt.Errorf("layer %s: %w", d.Digest, err), s.Unstage(d.Digest))
	}
	keep = true
	s.unpacks.Add(1)
	return true, nil
}

var errSkipped = errors.New("blob not fetched")

// unpackStream decompresses r, checks the tar against diffID and unpacks it
// into dir.
func unpackStream(ctx context.Context, r io.Reader, diffID v1.Hash, dir string) error {
	tar, closeFn, err := Decompress(r)
	if err != nil {
		return err
	}
	defer closeFn()
	h := newHasher()
	tee := io.TeeReader(tar, h)
	if err := unpack.Layer(ctx, tee, dir); err != nil {
		return err
	}
	// Tar padding and anything after the end marker count in the diff ID.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	if got := h.sum(); got != diffID {
		return fmt.Errorf("uncompressed content is %s, the config says %s: %w", got, diffID, errdefs.ErrInvalidArgument)
	}
	return nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Decompress returns the tar stream of a layer blob, gzip, zstd or
// uncompressed, told apart by its first bytes (registries do not always
// label them right); close releases the decompressor.
func Decompress(r io.Reader) (tar io.Reader, close func(), err error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read layer: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip layer: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd layer: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// unpackAll unpacks every layer of img that is not unpacked yet, checking
// it against its diff ID; an error names the layer and its bad entry.
func (s *Store) unpackAll(ctx context.Context, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return err
		}
		if err := CheckDigest(diffID); err != nil {
			return fmt.Errorf("layer diff ID: %w", err)
		}
		if err := s.unpackChecked(ctx, l, diffID); err != nil {
			d, _ := l.Digest()
			return fmt.Errorf("layer %s: %w", d, err)
		}
	}
	return nil
}

// unpackChecked unpacks layer l into its directory unless it is there.
func (s *Store) unpackChecked(ctx context.Context, l v1.Layer, diffID v1.Hash) error {
	dir := s.LayerDir(diffID.String())
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	unlock, err := flockCtx(ctx, s.layerLockPath(diffID.Hex))
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.MkdirTemp(filepath.Join(s.root, "layers"), ".tmp-"+diffID.Hex+"-")
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	if err := unpackStream(ctx, rc, diffID, tmp); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	if err := os.Rename(tmp, dir); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	s.unpacks.Add(1)
	return nil
}
