package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

func newImageSaveCmd(g *globals) *cobra.Command {
	var output, format string
	var allPlatforms bool
	var pf pullFlags
	cmd := &cobra.Command{
		Use:   "save REF... --output FILE",
		Short: "Write images to an OCI archive or a docker-save tarball",
		Long: `Write one or more images to FILE (or stdout with -o -): an OCI archive (a
tar of an OCI image layout, --format oci, the default) or the tarball
"docker save" writes (--format docker). berth image import, docker load,
podman load and skopeo read them back.

An image pulled from a multi-arch index is saved for this machine's
platform, the one the store holds, as docker and podman save it. With
--all-platforms the archive holds the whole index, every platform's image
(as skopeo copy --all): what the store lacks is fetched from the image's
registry (its mirrors first, with the credentials and CAs a pull uses),
checked against its digests, and written to the archive only.`,
		Example: `  berth image save demo/busybox:1 -o busybox.oci.tar
  berth image save web:1 web:2 --format docker -o web.tar
  berth image save --all-platforms docker.io/library/nginx:1.27 -o nginx-all.oci.tar`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" {
				return errors.New("save: --output FILE is required (- for stdout)")
			}
			store, err := g.images()
			if err != nil {
				return err
			}
			var save func(w io.Writer) error
			switch {
			case allPlatforms && format != "oci":
				return fmt.Errorf("--all-platforms: a docker-save tarball holds one platform's image; use --format oci")
			case allPlatforms && len(args) != 1:
				return fmt.Errorf("--all-platforms: give one image, got %d", len(args))
			case allPlatforms:
				opts, err := pf.options()
				if err != nil {
					return err
				}
				save = func(w io.Writer) error { return registry.SaveAllPlatforms(cmd.Context(), store, w, args[0], opts) }
			case format == "oci":
				save = func(w io.Writer) error { return store.SaveOCI(cmd.Context(), w, args) }
			case format == "docker":
				save = func(w io.Writer) error { return store.SaveDocker(cmd.Context(), w, args) }
			default:
				return fmt.Errorf("--format %q: want oci or docker", format)
			}
			if output == "-" {
				return save(cmd.OutOrStdout())
			}
			// Written beside the target and renamed: a failed save leaves no half file.
			f, err := os.CreateTemp(filepath.Dir(output), ".save-*")
			if err != nil {
				return fmt.Errorf("save %s: %w", output, err)
			}
			defer os.Remove(f.Name())
			err = save(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(f.Name(), output)
			}
			if err != nil {
				return fmt.Errorf("save %s: %w", output, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write (- for stdout)")
	cmd.Flags().StringVar(&format, "format", "oci", "archive format: oci or docker")
	cmd.Flags().BoolVar(&allPlatforms, "all-platforms", false, "write every platform of a multi-arch image, fetching what the store lacks from its registry")
	cmd.Flags().BoolVar(&pf.insecure, "insecure", false, "with --all-platforms: allow plain HTTP or an unverified certificate for the image's registry")
	cmd.Flags().StringVar(&pf.caFile, "registry-ca", "", "with --all-platforms: PEM file of CA certificates to trust for the image's registry")
	return cmd
}

func newImagePruneCmd(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove unnamed images no container uses (with --all, every image no container uses)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, err := g.images()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if all {
				imgs, err := store.List(ctx)
				if err != nil {
					return err
				}
				for _, img := range imgs {
					if img.Name == "" {
						continue
					}
					err := store.Remove(ctx, img.Name, false)
					if errors.Is(err, errdefs.ErrFailedPrecondition) {
						continue // in use
					}
					if err != nil {
						return err
					}
					fmt.Fprintf(out, "untagged %s\n", img.Name)
				}
			}
			removed, err := store.Prune(ctx, func(string) bool { return false })
			for _, d := range removed {
				fmt.Fprintf(out, "deleted %s\n", d)
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "also remove named images no container uses")
	return cmd
}

func newImageHistoryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "history REF",
		Short: "Show the steps that made an image, with the layer each made",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			steps, err := store.History(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if steps == nil {
				steps = []image.History{}
			}
			return printOut(cmd.OutOrStdout(), g.output, steps, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
				fmt.Fprintln(tw, "LAYER\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
				for _, h := range steps {
					layer := "<none>"
					if h.Layer != "" {
						layer = shortDigest(h.Layer)
					}
					by := strings.Join(strings.Fields(h.CreatedBy), " ")
					if len(by) > 60 {
						by = by[:57] + "..."
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", layer, created(h.Created), by, humanBytes(h.Size), h.Comment)
				}
				tw.Flush()
			})
		},
	}
}
