package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

// pullFlags are the flags of every command that pulls from a registry.
type pullFlags struct {
	platform string
	insecure bool
	caFile   string
}

func (f *pullFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.platform, "platform", "", "pull this platform from a multi-arch image, OS/ARCH[/VARIANT] (default: this machine's)")
	fl.BoolVar(&f.insecure, "insecure", false, "allow plain HTTP or an unverified certificate for the image's registry only")
	fl.StringVar(&f.caFile, "registry-ca", "", "PEM file of CA certificates to trust for the image's registry")
}

// options makes UpstreamOptions from the flags and the registry config.
func (f *pullFlags) options() (registry.UpstreamOptions, error) {
	cfg, err := registry.LoadConfig(registry.DefaultConfigPath())
	if err != nil {
		return registry.UpstreamOptions{}, err
	}
	opts := registry.UpstreamOptions{Config: cfg, Insecure: f.insecure, CAFile: f.caFile}
	if f.platform != "" {
		p, err := image.ParsePlatform(f.platform)
		if err != nil {
			return registry.UpstreamOptions{}, fmt.Errorf("--platform: %w", err)
		}
		opts.Platform = &p
	}
	return opts, nil
}

func newImagePullCmd(g *globals) *cobra.Command {
	var pf pullFlags
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Fetch an image from a registry (Docker Hub, GHCR, a private one) into the local store",
		Long: `Fetch an image into the local store. REF is normalised the way docker does:
"nginx" is docker.io/library/nginx:latest, and REPOSITORY@sha256:... pulls by
digest. From a multi-arch index the manifest for this machine's platform is
taken (or --platform's). Credentials come from berth login, then from
~/.docker/config.json (credHelpers and credsStore included). Layers are
fetched at once, verified and unpacked as they arrive.

On a terminal each layer shows a bar, speed and time left; otherwise one line
is printed per layer when it is done.`,
		Example: `  berth image pull nginx
  berth image pull ghcr.io/owner/app:1.2 --platform linux/arm64
  berth image pull localhost:5000/app@sha256:4f3c...
  berth image pull registry.lan:5000/app:1 --registry-ca lan-ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			opts, err := pf.options()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			pr := newPullProgress(out)
			opts.Progress = pr.update
			p, err := registry.PullUpstream(cmd.Context(), store, args[0], opts)
			pr.finish()
			if err != nil {
				return err
			}
			if p.Index != "" {
				fmt.Fprintf(out, "index %s\n", p.Index)
			}
			fmt.Fprintln(out, imageLine(p.Image))
			return nil
		},
	}
	pf.add(cmd)
	return cmd
}

// pullProgress shows a pull's layers: on a terminal one redrawn line per
// layer (bar, bytes, speed, time left), elsewhere one plain line per layer
// when it is done.
type pullProgress struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu     sync.Mutex
	order  []string
	layers map[string]*layerProgress
	lines  int // lines drawn last time
	drawn  time.Time
}

type layerProgress struct {
	done, total int64
	cached      bool
	finished    bool
	start       time.Time
	end         time.Time
}

func newPullProgress(w io.Writer) *pullProgress {
	f, ok := w.(*os.File)
	return &pullProgress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), now: time.Now, layers: map[string]*layerProgress{}}
}

func (p *pullProgress) update(pr registry.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	l, ok := p.layers[pr.Layer]
	if !ok {
		l = &layerProgress{start: now, total: pr.Total}
		p.layers[pr.Layer] = l
		p.order = append(p.order, pr.Layer)
	}
	l.done, l.cached = pr.Done, pr.Cached
	finished := pr.Cached || (pr.Done >= pr.Total && pr.Total > 0 && ok) || (pr.Total == 0 && ok)
	if finished && !l.finished {
		l.finished, l.end = true, now
		if !p.tty {
			fmt.Fprintln(p.w, plainLayerLine(pr.Layer, l))
		}
	}
	if p.tty && (finished || now.Sub(p.drawn) >= 100*time.Millisecond) {
		p.draw(now)
	}
}

func (p *pullProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && len(p.order) > 0 {
		p.draw(p.now())
	}
}

// draw rewrites the block of layer lines in place.
func (p *pullProgress) draw(now time.Time) {
	var b strings.Builder
	if p.lines > 0 {
		fmt.Fprintf(&b, "\033[%dA", p.lines)
	}
	for _, d := range p.order {
		fmt.Fprintf(&b, "\r\033[K%s\n", ttyLayerLine(d, p.layers[d], now))
	}
	p.lines = len(p.order)
	p.drawn = now
	io.WriteString(p.w, b.String())
}

func ttyLayerLine(digest string, l *layerProgress, now time.Time) string {
	id := shortDigest(digest)
	switch {
	case l.cached:
		return id + ": already exists"
	case l.finished:
		return fmt.Sprintf("%s: done %s in %s", id, humanBytes(l.total), l.end.Sub(l.start).Round(10*time.Millisecond))
	}
	const width = 24
	filled := 0
	if l.total > 0 {
		filled = int(l.done * width / l.total)
	}
	elapsed := now.Sub(l.start).Seconds()
	speed, eta := "-", "-"
	if elapsed > 0 && l.done > 0 {
		rate := float64(l.done) / elapsed
		speed = humanBytes(int64(rate)) + "/s"
		eta = (time.Duration(float64(l.total-l.done)/rate) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("%s: [%s%s] %s / %s  %s  ETA %s", id, strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		humanBytes(l.done), humanBytes(l.total), speed, eta)
}

func plainLayerLine(digest string, l *layerProgress) string {
	id := shortDigest(digest)
	if l.cached {
		return id + ": already exists"
	}
	secs := l.end.Sub(l.start).Seconds()
	rate := ""
	if secs > 0 {
		rate = fmt.Sprintf(" (%s/s)", humanBytes(int64(float64(l.total)/secs)))
	}
	return fmt.Sprintf("%s: done %s in %s%s", id, humanBytes(l.total), l.end.Sub(l.start).Round(time.Millisecond), rate)
}

// pullPolicyFlag reads --pull: missing, always or never (docker's words
// for IfNotPresent, Always and Never); empty is the default for the image.
func pullPolicyFlag(s string) (api.PullPolicy, error) {
	switch s {
	case "":
		return "", nil
	case "missing", string(api.PullIfNotPresent):
		return api.PullIfNotPresent, nil
	case "always", string(api.PullAlways):
		return api.PullAlways, nil
	case "never", string(api.PullNever):
		return api.PullNever, nil
	}
	return "", fmt.Errorf("--pull %q: want missing, always or never", s)
}

// ensureImage makes sure the store has ref, pulling it as policy says with
// progress on w, and returns how the store knows it.
func ensureImage(ctx context.Context, store *image.Store, w io.Writer, ref string, policy api.PullPolicy, pf *pullFlags) (string, error) {
	opts, err := pf.options()
	if err != nil {
		return "", err
	}
	pr := newPullProgress(w)
	opts.Progress = pr.update
	img, err := registry.Ensure(ctx, store, ref, policy, opts)
	pr.finish()
	if err != nil {
		return "", err
	}
	if img.Name != "" && !strings.Contains(ref, "@") {
		return img.Name, nil
	}
	return img.Digest, nil
}
