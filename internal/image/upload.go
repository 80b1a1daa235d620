package image

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api/errdefs"
)

// An Upload is one blob arriving in pieces, possibly over several requests
// (a registry's chunked upload). It lives in uploads/<id>, with the hash of
// what arrived so far in uploads/<id>.state, so a restart loses neither.
// An open Upload holds a lock on it: one request at a time works on an
// upload. Close lets go of it; Commit and Cancel end it.
type Upload struct {
	s    *Store
	id   string
	f    *os.File
	h    hash.Hash
	size int64
}

var uploadIDRe = lazyRegexp(`^[0-9a-f]{32}$`)

// uploadState is what uploads/<id>.state holds.
type uploadState struct {
	Size int64  `json:"size"`
	Hash []byte `json:"hash"` // the sha256 state after Size bytes
}

func (s *Store) uploadPath(id string) string { return filepath.Join(s.root, "uploads", id) }

// NewUpload starts an empty upload.
func (s *Store) NewUpload() (*Upload, error) {
	if err := s.remoteDirs(); err != nil {
		return nil, err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("new upload: %w", err)
	}
	id := hex.EncodeToString(b[:])
	f, err := os.OpenFile(s.uploadPath(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("new upload: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("upload %s: %w", id, err)
	}
	u := &Upload{s: s, id: id, f: f, h: sha256.New()}
	if err := u.saveState(); err != nil {
		return nil, errors.Join(err, u.Cancel())
	}
	return u, nil
}

// OpenUpload opens the upload id to continue, commit or cancel it. Errors
// wrap ErrNotFound for an unknown (or ended) upload and
// errdefs.ErrConflict while another caller has it open.
func (s *Store) OpenUpload(id string) (*Upload, error) {
	if !uploadIDRe().MatchString(id) {
		return nil, fmt.Errorf("upload %q: %w", id, ErrNotFound)
	}
	p := s.uploadPath(id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("upload %s: %w", id, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("upload %s is busy with another request: %w", id, errdefs.ErrConflict)
		}
		return nil, fmt.Errorf("upload %s: %w", id, err)
	}
	// The holder we waited for may have committed or cancelled it.
	if !samePath(f, p) {
		f.Close()
		return nil, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	u := &Upload{s: s, id: id, f: f, h: sha256.New()}
	if err := u.loadState(); err != nil {
		f.Close()
		return nil, err
	}
	return u, nil
}

// samePath reports whether the open file f is still the file at p.
func samePath(f *os.File, p string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(p)
	return err == nil && os.SameFile(a, b)
}

// loadState restores the hash of what arrived; when the state file lags
// behind the data (a crash between the two writes), it hashes the data again.
func (u *Upload) loadState() error {
	fi, err := u.f.Stat()
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	var st uploadState
	data, err := os.ReadFile(u.s.uploadPath(u.id) + ".state")
	if err == nil && json.Unmarshal(data, &st) == nil && st.Size == fi.Size() {
		if err := u.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err == nil {
			u.size = st.Size
			return nil
		}
	}
	u.h.Reset()
	n, err := io.Copy(u.h, io.NewSectionReader(u.f, 0, fi.Size()))
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	u.size = n
	return nil
}

func (u *Upload) saveState() error {
	hs, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	data, err := json.Marshal(uploadState{Size: u.size, Hash: hs})
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	return u.s.writeFile(u.s.uploadPath(u.id)+".state", data)
}

// ID names the upload for OpenUpload.
func (u *Upload) ID() string { return u.id }

// Size is how many bytes have arrived.
func (u *Upload) Size() int64 { return u.size }

// Append adds what r yields to the upload, and returns how many bytes it
// added. An upload may not grow past limit bytes (errdefs.ErrTooLarge);
// limit <= 0 means no limit. What arrived before an error is kept, so a
// client may resume from Size.
func (u *Upload) Append(ctx context.Context, r io.Reader, limit int64) (int64, error) {
	// Bytes past the recorded size are a crashed write's; the state decides.
	if err := u.f.Truncate(u.size); err != nil {
		return 0, fmt.Errorf("upload %s: %w", u.id, err)
	}
	var src io.Reader = ctxReader{ctx, r}
	if limit > 0 {
		src = io.LimitReader(src, limit-u.size+1)
	}
	n, err := io.Copy(io.MultiWriter(io.NewOffsetWriter(u.f, u.size), u.h), src)
	u.size += n
	if err == nil && limit > 0 && u.size > limit {
		err = fmt.Errorf("upload %s: blob larger than %d bytes: %w", u.id, limit, errdefs.ErrTooLarge)
	} else if err != nil {
		err = fmt.Errorf("upload %s: %w", u.id, err)
	}
	if serr := u.saveState(); err == nil {
		err = serr
	}
	return n, err
}

// Commit ends the upload: when its content has digest want it becomes a
// staged blob (see FetchBlob), otherwise it is discarded and the error
// wraps errdefs.ErrInvalidArgument.
func (u *Upload) Commit(want v1.Hash) error {
	if err := CheckDigest(want); err != nil {
		return errors.Join(err, u.Cancel())
	}
	if got := (hasher{u.h}).sum(); got != want {
		return errors.Join(fmt.Errorf("upload %s: content is %s, not %s: %w", u.id, got, want, errdefs.ErrInvalidArgument), u.Cancel())
	}
	if err := u.f.Sync(); err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	if err := os.Chmod(u.f.Name(), 0o644); err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	unlock, err := flock(u.s.blobLockPath(want), true)
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	defer unlock()
	if u.s.pin(want) {
		return u.Cancel() // the store has it already
	}
	// Fresh, or PruneStaging would take an upload written long ago for stale.
	now := time.Now()
	if err := os.Chtimes(u.f.Name(), now, now); err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	if err := os.Rename(u.f.Name(), u.s.stagedPath(want)); err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	return u.Cancel()
}

// Cancel ends the upload and removes what arrived.
func (u *Upload) Cancel() error {
	err := errors.Join(
		ignoreNotExist(os.Remove(u.s.uploadPath(u.id))),
		ignoreNotExist(os.Remove(u.s.uploadPath(u.id)+".state")),
		u.f.Close(),
	)
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.id, err)
	}
	return nil
}

// Close lets go of the upload, which stays for a later OpenUpload.
func (u *Upload) Close() error { return u.f.Close() }

// removeUploadIfIdle removes the upload file name (and its state) unless
// someone has it open.
func (s *Store) removeUploadIfIdle(name string) error {
	p := filepath.Join(s.root, "uploads", name)
	f, err := os.Open(p)
	if err != nil {
		return ignoreNotExist(err)
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil || !samePath(f, p) {
		return nil
	}
	return errors.Join(os.Remove(p), ignoreNotExist(os.Remove(p+".state")))
}
