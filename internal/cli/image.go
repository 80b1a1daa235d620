package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images", "img"},
		Short:   "Manage images",
		Long: `Manage the images in the local store (<data-dir>/images).

Images come from registries (berth image pull nginx), from OCI layout
directories, OCI archives and "docker save" tarballs (berth image import),
or from a directory used as the root filesystem (berth image build).
berth image push sends a local image to the berth server, whose nodes pull
it from there, or to the registry its name starts with.`,
	}
	cmd.AddCommand(
		newImagePullCmd(g),
		newImageImportCmd(g),
		newImageBuildCmd(g),
		newImagePushCmd(g),
		newImageTagCmd(g),
		newImageSaveCmd(g),
		newImagePruneCmd(g),
		newImageHistoryCmd(g),
		newImageLsCmd(g),
		newImageInspectCmd(g),
		newImageRmCmd(g),
	)
	return cmd
}

func newImageImportCmd(g *globals) *cobra.Command {
	var tag string
	cmd := &cobra.Command{
		Use:   "import PATH",
		Short: "Import images from an OCI layout dir, an OCI archive or a docker-save tarball",
		Example: `  berth image import ./busybox-oci/
  berth image import busybox.oci.tar --tag demo/busybox:1
  docker save busybox:latest > bb.tar && berth image import bb.tar`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			bar := newProgressBar(cmd.OutOrStdout(), "import")
			imgs, err := store.Import(cmd.Context(), args[0], image.ImportOptions{Tag: tag, Progress: bar.update})
			bar.done()
			if err != nil {
				return err
			}
			for _, img := range imgs {
				fmt.Fprintln(cmd.OutOrStdout(), imageLine(img))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&tag, "tag", "t", "", "name the imported image NAME[:TAG] (only for a single image)")
	return cmd
}

func newImageBuildCmd(g *globals) *cobra.Command {
	var opts image.BuildOptions
	var labels []string
	var entrypoint, command string
	cmd := &cobra.Command{
		Use:   "build DIR --tag NAME[:TAG]",
		Short: "Make an image from a directory used as its root filesystem",
		Long: `Make a one-layer OCI image whose root filesystem is DIR.

The same directory content and flags always give the same digest: entries
are archived in sorted order with fixed times, owners and modes are kept.
The creation time is the Unix epoch unless SOURCE_DATE_EPOCH is set.
--entrypoint and --cmd take a command line split on spaces, or a JSON array.`,
		Example: `  berth image build ./rootfs --tag demo/busybox:1 --cmd sh
  berth image build ./rootfs -t web:1 --entrypoint '["httpd","-f"]' --env PORT=80 --workdir /www`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Tag == "" {
				return fmt.Errorf("build %s: --tag NAME[:TAG] is required", args[0])
			}
			var err error
			if opts.Entrypoint, err = parseCommand("--entrypoint", entrypoint); err != nil {
				return err
			}
			if opts.Cmd, err = parseCommand("--cmd", command); err != nil {
				return err
			}
			for _, e := range opts.Env {
				if !strings.Contains(e, "=") {
					return fmt.Errorf("--env %q: want KEY=VALUE", e)
				}
			}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fmt.Errorf("--label %q: want KEY=VALUE", l)
				}
				if opts.Labels == nil {
					opts.Labels = map[string]string{}
				}
				opts.Labels[k] = v
			}
			if sde := os.Getenv("SOURCE_DATE_EPOCH"); sde != "" {
				sec, err := strconv.ParseInt(sde, 10, 64)
				if err != nil {
					return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", sde, err)
				}
				opts.Created = time.Unix(sec, 0)
			}
			store, err := g.images()
			if err != nil {
				return err
			}
			bar := newProgressBar(cmd.OutOrStdout(), "build")
			opts.Progress = bar.update
			opts.Warn = func(msg string) { fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", msg) }
			img, err := store.Build(cmd.Context(), args[0], opts)
			bar.done()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), imageLine(img))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&opts.Tag, "tag", "t", "", "image name NAME[:TAG] (required)")
	fl.StringVar(&entrypoint, "entrypoint", "", "entrypoint: words split on spaces, or a JSON array")
	fl.StringVar(&command, "cmd", "", "default command: words split on spaces, or a JSON array")
	fl.StringArrayVarP(&opts.Env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	fl.StringVarP(&opts.WorkingDir, "workdir", "w", "", "working directory")
	fl.StringVarP(&opts.User, "user", "u", "", "user (name or uid[:gid])")
	fl.StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	fl.StringArrayVar(&opts.ExposedPorts, "expose", nil, "document a port the image listens on, PORT[/PROTO] (repeatable)")
	return cmd
}

// parseCommand reads a JSON array, or else splits on whitespace.
func parseCommand(flag, s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if strings.HasPrefix(s, "[") {
		var out []string
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			return nil, fmt.Errorf("%s %q: not a JSON array of strings: %w", flag, s, err)
		}
		return out, nil
	}
	return strings.Fields(s), nil
}

func newImagePushCmd(g *globals) *cobra.Command {
	var pf pullFlags
	cmd := &cobra.Command{
		Use:   "push NAME[:TAG]",
		Short: "Send a local image to the berth server, or to the registry its name starts with",
		Long: `Send an image from the local store to the registry the berth server serves
(at /v2/ on the API address: --server, or the local socket), where every node
can pull it. A name whose first component is a registry host (it has a dot
or a port, or is localhost: registry.example:5000/app:1) goes to that
registry instead, with the credentials of berth login or docker's config.
Only the layers the registry lacks are sent.`,
		Example: `  berth image push demo/busybox:1
  berth image push web:2 --server https://berth.example:7443 --token "$TOKEN" --ca-file ca.pem
  berth image tag web:2 registry.example:5000/team/web:2 && berth image push registry.example:5000/team/web:2`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			if registry.IsUpstream(args[0]) {
				opts, err := pf.options()
				if err != nil {
					return err
				}
				bar := newProgressBar(cmd.OutOrStdout(), "push")
				img, err := registry.PushUpstream(cmd.Context(), store, args[0], opts, bar.update)
				bar.done()
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), imageLine(img))
				return nil
			}
			base, tr, err := g.registryTransport()
			if err != nil {
				return err
			}
			bar := newProgressBar(cmd.OutOrStdout(), "push")
			img, err := registry.Push(cmd.Context(), store, base, args[0], registry.PushOptions{Transport: tr, Progress: bar.update})
			bar.done()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), imageLine(img))
			return nil
		},
	}
	cmd.Flags().BoolVar(&pf.insecure, "insecure", false, "allow plain HTTP or an unverified certificate for the image's registry only")
	cmd.Flags().StringVar(&pf.caFile, "registry-ca", "", "PEM file of CA certificates to trust for the image's registry")
	return cmd
}

// registryTransport reaches the registry the server serves at /v2/ the way
// the API client reaches the API: through the unix socket, or over https
// with the token and CA the global flags give.
func (g *globals) registryTransport() (base string, rt http.RoundTripper, err error) {
	ep := g.endpoint()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if sock, ok := strings.CutPrefix(ep, "unix://"); ok {
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		// The host is a placeholder: every connection goes to the socket.
		return "http://berth", tr, nil
	}
	u, err := url.Parse(ep)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", nil, fmt.Errorf("server %q: want unix:///path or https://host:port", ep)
	}
	if g.caFile != "" {
		pem, err := os.ReadFile(g.caFile)
		if err != nil {
			return "", nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", nil, fmt.Errorf("CA file %s: no PEM certificate found", g.caFile)
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	var out http.RoundTripper = tr
	if g.token != "" {
		out = bearerTransport{token: g.token, host: u.Host, inner: tr}
	}
	return "https://" + u.Host, out, nil
}

// bearerTransport adds the API token to requests for the server, and only
// to those (a registry may redirect elsewhere).
type bearerTransport struct {
	token, host string
	inner       http.RoundTripper
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == t.host && r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+t.token)
	}
	return t.inner.RoundTrip(r)
}

func newImageLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			imgs, err := store.List(cmd.Context())
			if err != nil {
				return err
			}
			if imgs == nil {
				imgs = []image.Image{}
			}
			return printOut(cmd.OutOrStdout(), g.output, imgs, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
				fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE\tCREATED")
				for _, img := range imgs {
					n := img.Name
					if n == "" {
						n = "<none>"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, shortDigest(img.Digest), humanBytes(img.Size), created(img.Created))
				}
				tw.Flush()
			})
		},
	}
}

func newImageInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect REF",
		Short: "Show an image's config, layers and users as JSON (or -o yaml)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			img, err := store.Resolve(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			users, err := store.Users(cmd.Context(), img.Digest)
			if err != nil {
				return err
			}
			out := struct {
				image.Image
				UsedBy []string `json:"usedBy"`
			}{img, users}
			if out.UsedBy == nil {
				out.UsedBy = []string{}
			}
			format := g.output
			if format == "" || format == "table" || format == "wide" {
				format = "json"
			}
			return printOut(cmd.OutOrStdout(), format, out, nil)
		},
	}
}

func newImageRmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm REF...",
		Aliases: []string{"remove", "rmi"},
		Short:   "Remove images (refused while a container uses one, unless --force)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			var errs []error
			for _, ref := range args {
				if err := store.Remove(cmd.Context(), ref, force); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), ref)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even while containers use the image (they keep their layers)")
	return cmd
}

func imageLine(img image.Image) string {
	n := img.Name
	if n == "" {
		n = "<none>"
	}
	return fmt.Sprintf("%s %s %s", n, img.Digest, humanBytes(img.Size))
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func created(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progressBar draws a one-line bar on a terminal, and nothing otherwise
// (so piped output stays clean).
type progressBar struct {
	w     io.Writer
	label string
	on    bool
	last  time.Time
	drawn bool
}

func newProgressBar(w io.Writer, label string) *progressBar {
	f, ok := w.(*os.File)
	return &progressBar{w: w, label: label, on: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progressBar) update(done, total int64) {
	if !p.on || total <= 0 {
		return
	}
	// Redraw at most every 50 ms, and always at the end.
	now := time.Now()
	if done < total && now.Sub(p.last) < 50*time.Millisecond {
		return
	}
	p.last = now
	const width = 30
	filled := int(done * width / total)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3d%% %s / %s", p.label, strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		done*100/total, humanBytes(done), humanBytes(total))
	p.drawn = true
}

func (p *progressBar) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
