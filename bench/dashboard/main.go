// Command dashboard measures the web dashboard in headless Chromium
// against a real API server on an embedded etcd holding 1,000 instances on
// 10 nodes: the time from an instance's status write to the API until its
// tile changes in the page (a MutationObserver's timestamp against the
// write's start, same clock), the page's weight on first load, and its
// first paint. It prints figures and asserts nothing.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/dashboard"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/store"
)

func main() {
	instances := flag.Int("instances", 1000, "instances in the cluster")
	nodes := flag.Int("nodes", 10, "nodes they are spread over")
	changes := flag.Int("changes", 100, "status changes timed")
	gap := flag.Duration("gap", 30*time.Millisecond, "pause between two changes")
	flag.Parse()
	if err := bench(*instances, *nodes, *changes, *gap); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func bench(nInst, nNodes, nChanges int, gap time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work, err := os.MkdirTemp("", "berth-bench-dashboard-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	c, addr, token, closeStore, err := serve(ctx, work)
	if err != nil {
		return err
	}
	defer closeStore()
	names, err := seed(ctx, c, nInst, nNodes)
	if err != nil {
		return err
	}
	base := "https://" + addr + "/ui/"
	bctx, closeBrowser, err := signIn(ctx, work, base, token)
	if err != nil {
		return err
	}
	defer closeBrowser()
	if err := firstLoad(bctx, base, nInst); err != nil {
		return err
	}
	return changeToDOM(ctx, bctx, c, names, nChanges, gap)
}

// serve runs an API server and the dashboard on a store in work until ctx
// ends: on a unix socket (its client returned) and on TLS at addr, which
// takes token.
func serve(ctx context.Context, work string) (c *client.Client, addr, token string, closeStore func(), err error) {
	quiet := slog.New(slog.DiscardHandler)
	st, err := store.Open(ctx, store.Config{DataDir: work, Logger: quiet})
	if err != nil {
		return nil, "", "", nil, err
	}
	ca, err := pki.NewCA()
	if err != nil {
		return nil, "", "", nil, err
	}
	cert, err := pki.LoadOrIssueServer(filepath.Join(work, "tls"), ca, []string{"127.0.0.1"})
	if err != nil {
		return nil, "", "", nil, err
	}
	serverTLS, token := ca.ServerTLSConfig(cert), rand.Text()
	sock := api.SocketPath(work)
	ul, err := apiserver.ListenUnix(sock)
	if err != nil {
		return nil, "", "", nil, err
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", "", nil, err
	}
	c, err = client.New("unix://" + sock)
	if err != nil {
		return nil, "", "", nil, err
	}
	srv := apiserver.New(apiserver.Config{Store: st, Logger: quiet})
	ui := dashboard.New(dashboard.Options{Client: c, Token: token, Logger: quiet})
	srv.MountSignIn(dashboard.Prefix, ui)
	go func() { _ = srv.Serve(ctx, ul, apiserver.UnixRootOnly) }()
	go func() { _ = srv.ServeTLS(ctx, tl, serverTLS, token) }()
	go func() { _ = ui.Run(ctx) }()
	return c, tl.Addr().String(), token, func() { st.Close() }, nil
}

// seed writes nNodes nodes and nInst instances bound to them, running.
func seed(ctx context.Context, c *client.Client, nInst, nNodes int) ([]string, error) {
	for n := range nNodes {
		node := &api.Node{Metadata: api.Metadata{Name: fmt.Sprintf("node-%02d", n)},
			Spec: api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 16000, Memory: 64 << 30}}}
		if _, err := c.Nodes().Apply(ctx, node); err != nil {
			return nil, fmt.Errorf("node %s: %w", node.Metadata.Name, err)
		}
	}
	names := make([]string, nInst)
	start := time.Now()
	if err := parallel(nInst, 16, func(i int) error {
		names[i] = fmt.Sprintf("web-%04d", i)
		in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: names[i]},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"},
				Node: fmt.Sprintf("node-%02d", i%nNodes)}}
		stored, err := c.Instances().Apply(ctx, in)
		if err != nil {
			return fmt.Errorf("instance %s: %w", names[i], err)
		}
		stored.Status = api.InstanceStatus{Phase: api.PhaseRunning, Healthy: true}
		_, err = c.Instances().UpdateStatus(ctx, stored)
		return err
	}); err != nil {
		return nil, err
	}
	fmt.Printf("cluster: %d instances on %d nodes written in %s\n", nInst, nNodes, time.Since(start).Round(time.Millisecond))
	return names, nil
}

// signIn opens headless Chromium on the dashboard at base and signs in
// with token; the first load measured is then the signed-in page's.
func signIn(ctx context.Context, work, base, token string) (context.Context, func(), error) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		return nil, nil, fmt.Errorf("chromium: %w (scripts/deps.sh installs it)", err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.UserDataDir(filepath.Join(work, "chromium")),
		chromedp.WindowSize(1280, 900), chromedp.Flag("ignore-certificate-errors", true))...)
	bctx, cancelB := chromedp.NewContext(actx)
	bctx, cancelT := context.WithTimeout(bctx, 5*time.Minute)
	closeBrowser := func() { cancelT(); cancelB(); cancelAlloc() }
	if err := chromedp.Run(bctx, chromedp.Navigate(base), chromedp.WaitVisible("#token", chromedp.ByID),
		chromedp.SendKeys("#token", token, chromedp.ByID), chromedp.Click("#signin", chromedp.ByID),
		chromedp.WaitVisible("#map", chromedp.ByID)); err != nil {
		closeBrowser()
		return nil, nil, fmt.Errorf("sign in: %w", err)
	}
	return bctx, closeBrowser, nil
}

// firstLoad loads the page cold (nothing from the cache) and prints its
// weight and first paint.
func firstLoad(bctx context.Context, base string, nInst int) error {
	var mu sync.Mutex
	bytesBy := map[network.RequestID]float64{}
	urlOf := map[network.RequestID]string{}
	chromedp.ListenTarget(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			urlOf[e.RequestID] = e.Request.URL
		case *network.EventDataReceived:
			bytesBy[e.RequestID] += float64(e.EncodedDataLength)
		case *network.EventLoadingFinished:
			bytesBy[e.RequestID] = e.EncodedDataLength
		}
	})
	// A cold load: nothing from the cache.
	if err := chromedp.Run(bctx, network.Enable(), network.SetCacheDisabled(true), chromedp.Navigate(base)); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	full := fmt.Sprintf(`document.querySelectorAll("#map .tile").length === %d`, nInst)
	if err := waitJS(bctx, full, time.Minute); err != nil {
		return fmt.Errorf("the map never showed %d tiles: %w", nInst, err)
	}
	var paint struct{ FCP, Drawn float64 }
	if err := chromedp.Run(bctx, chromedp.Evaluate(`({FCP: (performance.getEntriesByName("first-contentful-paint")[0] || {}).startTime || -1,
		Drawn: (performance.getEntriesByName("berth:drawn")[0] || {}).startTime || -1})`, &paint)); err != nil {
		return err
	}
	mu.Lock()
	var page, stream float64
	for id, b := range bytesBy {
		if urlOf[id] == "" {
			continue // the signed-in page's stream, from before this load
		}
		if os.Getenv("BENCH_VERBOSE") != "" {
			fmt.Printf("  %s %.1f KB\n", urlOf[id], b/1024)
		}
		if filepath.Base(urlOf[id]) == "stream" {
			stream += b
		} else {
			page += b
		}
	}
	mu.Unlock()
	snap := "not reported by the browser"
	if stream > 0 {
		snap = fmt.Sprintf("%.1f KB", stream/1024)
	}
	fmt.Printf("first load: page %.1f KB transferred (goal ≤ 300 KB), plus the stream's gzipped snapshot of %d instances: %s\n", page/1024, nInst, snap)
	fmt.Printf("first contentful paint %.0f ms (goal ≤ 500 ms); map drawn with %d tiles at %.0f ms\n", paint.FCP, nInst, paint.Drawn)

	return nil
}

// changeToDOM times status writes to the API until the page's tiles
// change, with where the time goes.
func changeToDOM(ctx, bctx context.Context, c *client.Client, names []string, nChanges int, gap time.Duration) error {
	nInst := len(names)
	// Change-to-DOM: each change flips one instance between Running and
	// Starting; the page records when each tile's state changes.
	// Where the time goes: the page's apply (a global of its script) is
	// wrapped to note when each instance's first change reaches the page.
	if err := chromedp.Run(bctx, chromedp.Evaluate(`window.__arr = {}; const __apply = apply;
apply = function(kind, k, obj) { if (kind === "instance" && !(k in window.__arr)) window.__arr[k] = performance.timeOrigin + performance.now(); return __apply(kind, k, obj); }; true`, nil)); err != nil {
		return err
	}
	if err := chromedp.Run(bctx, chromedp.Evaluate(`window.__muts = [];
new MutationObserver(ms => { const t = performance.timeOrigin + performance.now();
  for (const m of ms) if (m.target.dataset && m.target.dataset.key) window.__muts.push([m.target.dataset.key, t]); })
 .observe(document.getElementById("map"), {subtree: true, attributes: true, attributeFilter: ["data-state"]}); true`, nil)); err != nil {
		return err
	}
	writes := make([]write, 0, nChanges)
	var wdur []float64
	for i := range nChanges {
		name := names[(i*7919)%nInst]
		in, err := c.Instances().Get(ctx, "default", name)
		if err != nil {
			return err
		}
		if in.Status.Phase == api.PhaseRunning {
			in.Status.Phase = api.PhaseStarting
		} else {
			in.Status.Phase = api.PhaseRunning
		}
		at := float64(time.Now().UnixNano()) / 1e6
		if _, err := c.Instances().UpdateStatus(ctx, in); err != nil {
			return err
		}
		wdur = append(wdur, float64(time.Now().UnixNano())/1e6-at)
		writes = append(writes, write{"default/" + name, at})
		time.Sleep(gap)
	}
	time.Sleep(time.Second)
	var muts [][2]any
	if err := chromedp.Run(bctx, chromedp.Evaluate(`window.__muts`, &muts)); err != nil {
		return err
	}
	var arr map[string]float64
	if err := chromedp.Run(bctx, chromedp.Evaluate(`window.__arr`, &arr)); err != nil {
		return err
	}
	return reportChanges(writes, muts, arr, wdur, nInst)
}

// write is a status write: the instance's key and when it began (ms).
type write struct {
	key string
	at  float64
}

// reportChanges matches the writes with the tile changes (muts) and the
// page's first sight of each (arr), and prints the latencies.
func reportChanges(writes []write, muts [][2]any, arr map[string]float64, wdur []float64, nInst int) error {
	var lat []float64
	missed := 0
	for _, w := range writes {
		found := false
		for _, m := range muts {
			k, _ := m[0].(string)
			t, _ := m[1].(float64)
			if k == w.key && t >= w.at {
				lat = append(lat, t-w.at)
				found = true
				break
			}
		}
		if !found {
			missed++
		}
	}
	var toArr, toDOM []float64
	for _, w := range writes {
		a, ok := arr[w.key]
		if !ok {
			continue
		}
		toArr = append(toArr, a-w.at)
		for _, m := range muts {
			k, _ := m[0].(string)
			t, _ := m[1].(float64)
			if k == w.key && t >= w.at {
				toDOM = append(toDOM, t-a)
				break
			}
		}
	}
	spread := func(d []float64) string {
		if len(d) == 0 {
			return "none"
		}
		slices.Sort(d)
		return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", d[len(d)/2], d[min(len(d)-1, len(d)*99/100)])
	}
	fmt.Printf("  of which: the API write %s; write to the page's stream handler %s; handler to DOM %s\n", spread(wdur), spread(toArr), spread(toDOM))
	slices.Sort(lat)
	if len(lat) == 0 {
		return fmt.Errorf("no change reached the page")
	}
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("change to DOM over %d changes at %d instances: p50 %.1f ms, p99 %.1f ms, max %.1f ms (goal p99 ≤ 200 ms); %d not seen; stream flushes every %s\n",
		len(lat), nInst, pct(0.50), pct(0.99), lat[len(lat)-1], missed, dashboard.FlushInterval)
	return nil
}

func waitJS(ctx context.Context, js string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		if err := chromedp.Run(ctx, chromedp.Evaluate(js, &ok)); err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parallel runs f(0..n-1) on workers goroutines; the first error wins.
func parallel(n, workers int, f func(int) error) error {
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
