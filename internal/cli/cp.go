package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/runtime"
)

func newCpCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cp INSTANCE:SRC DEST | SRC INSTANCE:DEST",
		Short: "Copy files or directories between this machine and an instance, on any node",
		Long: `Copy a file or directory between this machine and an instance, on any node,
as a tar stream. The instance's image must have a tar (busybox's will do).

  berth cp web-k2x9p:/etc/nginx ./nginx    a directory out (into ./nginx)
  berth cp web-k2x9p:/var/log/app.log -     a tar of the file on stdout
  berth cp ./site web-k2x9p:/www/           into a directory of the instance

A destination that is an existing directory receives the source by its name;
otherwise the source takes the destination's name.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			srcInst, src, srcRemote := splitRemote(args[0])
			dstInst, dst, dstRemote := splitRemote(args[1])
			if srcRemote == dstRemote {
				return errors.New("cp: one of SRC and DEST must be INSTANCE:PATH, the other a local path")
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			if srcRemote {
				ns, name, err := g.refOf(srcInst, api.KindInstance)
				if err != nil {
					return err
				}
				return copyOut(ctx, c, ns, name, src, dst, cmd.OutOrStdout())
			}
			ns, name, err := g.refOf(dstInst, api.KindInstance)
			if err != nil {
				return err
			}
			return copyIn(ctx, c, ns, name, src, dst)
		},
	}
	return cmd
}

// splitRemote reads INSTANCE:PATH; a local path (with no colon before
// its first slash, as ./a:b) is not one.
func splitRemote(arg string) (inst, p string, remote bool) {
	i := strings.IndexByte(arg, ':')
	if i <= 0 || strings.Contains(arg[:i], "/") {
		return "", arg, false
	}
	return arg[:i], arg[i+1:], true
}

func remotePath(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("cp: %q: paths in an instance must be absolute", p)
	}
	return p, nil
}

// copyOut copies src out of an instance to dst (a tar on out for "-").
func copyOut(ctx context.Context, c *client.Client, ns, name, src, dst string, out io.Writer) error {
	src, err := remotePath(src)
	if err != nil {
		return err
	}
	rc, err := c.CopyFrom(ctx, ns, name, src)
	if err != nil {
		return err
	}
	defer rc.Close()
	if dst == "-" {
		_, err := io.Copy(out, rc)
		return err
	}
	// Into an existing directory by the source's name; else as dst.
	dir, rename := dst, ""
	if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
		dir, rename = filepath.Dir(dst), filepath.Base(dst)
	}
	return untar(rc, dir, rename)
}

// untar unpacks a tar into dir, renaming its top entry to rename (when
// set). Entries may not leave dir, by name or through a symbolic link the
// tar brought (the instance's files are not to be trusted): every entry is
// made through an os.Root at dir, which follows no link out of it.
func untar(r io.Reader, dir, rename string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cp: reading the tar: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("cp: tar entry %q: leaves the destination", h.Name)
		}
		if rename != "" {
			_, rest, _ := strings.Cut(name, "/")
			name = path.Join(rename, rest)
		}
		target := filepath.FromSlash(name)
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		fail := func(err error) error {
			return fmt.Errorf("cp: tar entry %q into %s: %w", h.Name, dir, err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(target, mode|0o700); err != nil {
				return fail(err)
			}
		case tar.TypeReg:
			// What is there goes first, a symbolic link above all: the
			// file replaces it rather than writing where it points.
			if err := root.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fail(err)
			}
			f, err := root.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return fail(err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fail(err)
			}
		case tar.TypeSymlink:
			if err := root.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fail(err)
			}
			if err := root.Symlink(h.Linkname, target); err != nil {
				return fail(err)
			}
		default:
			// Devices, fifos and hard links are left out, as a user's copy would.
		}
	}
}

// copyIn copies local src into an instance at dst.
func copyIn(ctx context.Context, c *client.Client, ns, name, src, dst string) error {
	dst, err := remotePath(dst)
	if err != nil {
		return err
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	// Into dst when it is a directory there; else as dst.
	dir, as := dst, filepath.Base(src)
	if !strings.HasSuffix(dst, "/") {
		code, err := c.Exec(ctx, ns, name, client.ExecOptions{Command: []string{"test", "-d", dst}})
		if err != nil {
			return err
		}
		if code != 0 {
			dir, as = path.Dir(dst), path.Base(dst)
		}
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, src, as)) }()
	err = c.CopyTo(ctx, ns, name, dir, pr)
	pr.Close()
	return err
}

// writeTar writes src (a file or a directory tree) as a tar whose top
// entry is named as.
func writeTar(w io.Writer, src, as string) error {
	tw := tar.NewWriter(w)
	if _, err := runtime.WriteTree(tw, src, as, runtime.TreeOptions{}); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	return tw.Close()
}
