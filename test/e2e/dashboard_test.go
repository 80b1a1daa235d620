package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// browser starts headless Chromium and returns a context driving it.
func (c *cluster) browser(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (scripts/deps.sh installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		// berth up's certificate is its own, made on first start.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func drive(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// click clicks the first element sel matches once it is shown. A live
// update can render the page again between finding a button and clicking
// it, so the element is looked up and clicked in one step, again until it
// is there.
func click(sel string) chromedp.Action {
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e || e.offsetParent === null) return false; e.click(); return true })()`, sel)
	return chromedp.ActionFunc(func(ctx context.Context) error {
		for {
			var ok bool
			if err := chromedp.Evaluate(js, &ok).Do(ctx); err != nil {
				return err
			}
			if ok {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("click %s: %w", sel, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
}

// pageEventually evaluates js in the page until it is true.
func pageEventually(t *testing.T, ctx context.Context, timeout time.Duration, what, js string) {
	t.Helper()
	eventually(t, timeout, what, func() bool {
		var ok bool
		return chromedp.Run(ctx, chromedp.Evaluate(js, &ok)) == nil && ok
	})
}

func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	drive(t, ctx, "screenshot "+name, chromedp.Sleep(300*time.Millisecond), chromedp.FullScreenshot(&png, 100))
	dir := filepath.Join("..", "..", "build")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// webContainers maps the running instances of web to their containers' pids.
func (c *cluster) webContainers() map[string]int {
	var list []struct {
		Pid    int               `json:"pid"`
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(c.ok("container", "ps", "-o", "json")), &list); err != nil {
		c.t.Fatal(err)
	}
	out := map[string]int{}
	for _, ct := range list {
		if in := ct.Labels["berth.instance"]; strings.HasPrefix(in, "default/web-") {
			out[in] = ct.Pid
		}
	}
	return out
}

const talkerYAML = `kind: Service
name: talker
replicas: 1
template:
  image: demo/busybox:1
  command: ["sh", "-c", "echo hello from talker; exec sleep 100000"]
  resources: {cpu: 0.1, memory: 16Mi}
`

const pinnedYAML = `kind: Service
name: pinned
replicas: 1
template:
  image: demo/busybox:1
  command: ["sleep", "100000"]
  resources: {cpu: 1, exclusive: true, memory: 16Mi}
`

const tileCount = `document.querySelectorAll('#map .tile[data-key^="default/web-"]').length`

func TestDashboardInBrowser(t *testing.T) {
	// The cluster runs without container networking, in the host's network
	// namespace, so that the browser's driver reaches both on loopback.
	addr := freeAddr(t, "127.0.0.1")
	c := startCluster(t, "--no-network", "--listen", addr)
	token := readToken(t, filepath.Join(c.dataDir, "tls", "token"))
	eventually(t, 10*time.Second, "berth up to print the dashboard's address", func() bool {
		b, _ := os.ReadFile(filepath.Join(c.dataDir, "up.log"))
		return strings.Contains(string(b), "Dashboard on https://"+addr+"/ui/")
	})
	if _, errOut, code := c.applyYAML(webYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	c.waitRunning("web", 3)
	ctx := c.browser(t)
	base := "https://" + addr + "/ui/"

	// A wrong token is refused, the right one signs in.
	var msg string
	drive(t, ctx, "wrong token",
		chromedp.Navigate(base),
		chromedp.WaitVisible("#token", chromedp.ByID),
		chromedp.SendKeys("#token", "not-the-token-at-all", chromedp.ByID),
		click("#signin"),
		chromedp.WaitVisible("#login-error", chromedp.ByID),
		chromedp.Text("#login-error", &msg, chromedp.ByID),
	)
	if !strings.Contains(msg, "Wrong token") {
		t.Fatalf("a wrong token: page says %q, want Wrong token", msg)
	}
	drive(t, ctx, "sign in",
		chromedp.SendKeys("#token", token, chromedp.ByID),
		click("#signin"),
		chromedp.WaitVisible("#map", chromedp.ByID),
	)
	var cookies []*network.Cookie
	drive(t, ctx, "cookies", chromedp.ActionFunc(func(ctx context.Context) error {
		var err error
		cookies, err = network.GetCookies().Do(ctx)
		return err
	}))
	var session *network.Cookie
	for _, ck := range cookies {
		if ck.Name == "berth_session" {
			session = ck
		}
	}
	if session == nil || !session.HTTPOnly || !session.Secure || session.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict", session)
	}

	// The map shows the 3 replicas; a page-side observer records every
	// state each tile takes, and a marker shows the page is never reloaded.
	pageEventually(t, ctx, 20*time.Second, "3 tiles of web", tileCount+` === 3`)
	drive(t, ctx, "observer", chromedp.Evaluate(`window.__sameLoad = true; window.__hist = {};
new MutationObserver(ms => { for (const m of ms) { const ts = m.type === "attributes" ? [m.target] : [...m.addedNodes];
  for (const t of ts) if (t.dataset && t.dataset.key) (window.__hist[t.dataset.key] ||= []).push(t.dataset.state); } })
 .observe(document.getElementById("map"), {subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"]}); true`, nil))
	saveScreenshot(t, ctx, "dashboard-map.png")

	// berth scale from the CLI: 5 tiles, no reload.
	c.ok("scale", "web=5")
	pageEventually(t, ctx, 30*time.Second, "5 tiles of web after berth scale web=5", tileCount+` === 5 && window.__sameLoad === true`)
	c.waitRunning("web", 5)
	pageEventually(t, ctx, 30*time.Second, "5 green tiles", `document.querySelectorAll('#map .tile[data-key^="default/web-"][data-state=ok]').length === 5`)

	// Killing a container turns its tile red, then green again.
	var victim string
	var pid int
	for in, p := range c.webContainers() {
		victim, pid = in, p
		break
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sel := fmt.Sprintf(`document.querySelector('#map .tile[data-key=%q]')`, victim)
	pageEventually(t, ctx, 30*time.Second, "the killed instance's tile red", fmt.Sprintf(`(window.__hist[%q] || []).includes("bad")`, victim))
	pageEventually(t, ctx, 30*time.Second, "the killed instance's tile green again", fmt.Sprintf(`%s && %s.dataset.state === "ok" && window.__sameLoad === true`, sel, sel))

	// Events: filtered, and live: a rolling restart from the CLI adds
	// web's events to the filtered list without a reload.
	drive(t, ctx, "events page",
		chromedp.Navigate(base+"#/events"),
		chromedp.WaitVisible("#ev-filter", chromedp.ByID),
		chromedp.SendKeys("#ev-filter", "Service web", chromedp.ByID),
	)
	const shown = `[...document.querySelectorAll("#evs li")]`
	pageEventually(t, ctx, 10*time.Second, "only web's events", shown+`.length > 0 && `+shown+`.every(li => li.textContent.includes("Service web"))`)
	var evBefore int
	drive(t, ctx, "count events", chromedp.Evaluate(shown+`.length`, &evBefore))
	c.ok("restart", "web")
	pageEventually(t, ctx, 30*time.Second, "the restart's events", fmt.Sprintf(`%s.length > %d && %s.every(li => li.textContent.includes("Service web")) && window.__sameLoad === true`, shown, evBefore, shown))
	c.waitRunning("web", 5)

	// Scaling from the service page changes the service in the API.
	drive(t, ctx, "service page",
		chromedp.Navigate(base+"#/service/default/web"),
		chromedp.WaitVisible("#replicas", chromedp.ByID),
	)
	pageEventually(t, ctx, 10*time.Second, "the service's details", `document.getElementById("svc-counts") !== null`)
	drive(t, ctx, "scale from the page",
		chromedp.SetValue("#replicas", "2", chromedp.ByID),
		click("#scale-btn"),
	)
	eventually(t, 20*time.Second, "the service scaled to 2 in the API", func() bool {
		var svc api.Service
		out, _, code := c.run("get", "service", "web", "-o", "json")
		return code == 0 && json.Unmarshal([]byte(out), &svc) == nil && svc.Spec.Replicas == 2
	})
	pageEventually(t, ctx, 30*time.Second, "2 tiles on the service page", `document.querySelectorAll('#tiles .tile').length === 2`)
	// The rolling restart from the CLI made revision 2; its rollout is done.
	pageEventually(t, ctx, 30*time.Second, "the rollout complete at revision 2", `document.getElementById("svc-rollout").textContent.startsWith("revision 2 · Complete")`)
	saveScreenshot(t, ctx, "dashboard-service.png")

	// Roll back (confirmed) from the page: the template before the restart is back.
	drive(t, ctx, "roll back", chromedp.Evaluate(`window.confirm = () => true; true`, nil), click("#rollback-btn"))
	eventually(t, 20*time.Second, "web rolled back from the page", func() bool {
		var svc api.Service
		out, _, code := c.run("get", "service", "web", "-o", "json")
		return code == 0 && json.Unmarshal([]byte(out), &svc) == nil && svc.Spec.Template.RestartedAt.IsZero()
	})
	pageEventually(t, ctx, 30*time.Second, "the rollback's rollout complete", `/ · Complete/.test(document.getElementById("svc-rollout").textContent) && document.querySelectorAll('#tiles .tile').length === 2`)

	// Actions from another origin, or without the CSRF token, are refused.
	var csrf string
	drive(t, ctx, "csrf token", chromedp.Evaluate(`document.querySelector("meta[name=csrf]").content`, &csrf))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	post := func(origin, token string) (int, string) {
		req, _ := http.NewRequest("POST", base+"act", strings.NewReader(`{"action":"scale","kind":"service","name":"web","replicas":7}`))
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if token != "" {
			req.Header.Set("X-CSRF-Token", token)
		}
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("https://evil.example", csrf); code != http.StatusForbidden || !strings.Contains(body, "another origin") {
		t.Errorf("POST from another origin: %d %s, want 403 naming the origin", code, body)
	}
	if code, body := post("https://"+addr, ""); code != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Errorf("POST without the CSRF token: %d %s, want 403 naming the token", code, body)
	}
	if code, _ := post("", csrf); code != http.StatusForbidden {
		t.Errorf("POST without an Origin: %d, want 403", code)
	}
	var svc api.Service
	if err := json.Unmarshal([]byte(c.ok("get", "service", "web", "-o", "json")), &svc); err != nil || svc.Spec.Replicas != 2 {
		t.Errorf("after the refused requests the service has %d replicas (%v), want 2", svc.Spec.Replicas, err)
	}
	// Without a session nothing is shown.
	resp, err := hc.Get(base + "stream")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("stream without a session: %d, want 401", resp.StatusCode)
	}

	// The log view shows an instance's output and follows its new lines.
	if _, errOut, code := c.applyYAML(talkerYAML); code != 0 {
		t.Fatalf("apply talker: %s", errOut)
	}
	talker := c.waitRunning("talker", 1)[0].Metadata.Name
	drive(t, ctx, "instance page with logs",
		chromedp.Navigate(base+"#/instance/default/"+talker),
		chromedp.WaitVisible("#log", chromedp.ByID),
	)
	pageEventually(t, ctx, 20*time.Second, "the talker's first line in the log view", `document.getElementById("log").textContent.includes("hello from talker")`)
	c.ok("exec", talker, "sh", "-c", "echo a line written while the page follows > /proc/1/fd/1")
	pageEventually(t, ctx, 20*time.Second, "the new line in the log view", `document.getElementById("log").textContent.includes("a line written while the page follows") && window.__sameLoad === true`)
	saveScreenshot(t, ctx, "dashboard-instance.png")

	// Metrics: the node's and the instances' CPU and memory as lines that
	// grow as the agent's figures come in, without a reload.
	drive(t, ctx, "metrics page", chromedp.Navigate(base+"#/metrics"), chromedp.WaitVisible("#chart-node-cpu", chromedp.ByID))
	points := func(sel string) string {
		return fmt.Sprintf(`Number((document.querySelector(%q) || {dataset: {}}).dataset.points || 0)`, sel)
	}
	nodeLine := `#chart-node-cpu polyline[data-series^="node/"]`
	pageEventually(t, ctx, 30*time.Second, "the node's CPU line", points(nodeLine)+" >= 2")
	var first int
	drive(t, ctx, "count the node line's points", chromedp.Evaluate(points(nodeLine), &first))
	pageEventually(t, ctx, 30*time.Second, "the node's line to grow", fmt.Sprintf("%s > %d && window.__sameLoad === true", points(nodeLine), first))
	pageEventually(t, ctx, 30*time.Second, "a web instance's memory line", points(`#chart-inst-mem polyline[data-series^="instance/default/web-"]`)+" >= 1")
	pageEventually(t, ctx, 5*time.Second, "the node's memory figure in the legend", `/\d+[KMG]i/.test(document.querySelector("#chart-node-mem .chart-legend").textContent)`)
	saveScreenshot(t, ctx, "dashboard-metrics.png")
	drive(t, ctx, "the talker's page with its charts", chromedp.Navigate(base+"#/instance/default/"+talker), chromedp.WaitVisible("#chart-this-cpu", chromedp.ByID))
	pageEventually(t, ctx, 30*time.Second, "the talker's own memory line", points(`#chart-this-mem polyline[data-series="instance/default/`+talker+`"]`)+" >= 1")

	// A whole core pinned to an instance shows on its node's box.
	if _, errOut, code := c.applyYAML(pinnedYAML); code != 0 {
		t.Fatalf("apply pinned: %s", errOut)
	}
	c.waitRunning("pinned", 1)
	drive(t, ctx, "map with the pinned core", chromedp.Navigate(base+"#/map"), chromedp.WaitVisible("#map", chromedp.ByID))
	pageEventually(t, ctx, 20*time.Second, "one pinned core on the map", `document.querySelectorAll("#map .core.pinned").length === 1`)
	c.ok("rm", "pinned")

	// Keyboard: a tile is a link, Enter opens its instance, and the
	// instance's Restart button works from the keyboard too.
	var hash string
	drive(t, ctx, "an instance by keyboard",
		chromedp.Navigate(base+"#/map"),
		chromedp.WaitVisible(`#map .tile`, chromedp.ByQuery),
		chromedp.Evaluate(`window.confirm = () => true; true`, nil),
		chromedp.Focus(`#map .tile[data-key^="default/web-"]`, chromedp.ByQuery),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible("#inst-phase", chromedp.ByID),
		chromedp.Evaluate(`location.hash`, &hash),
	)
	inst, ok := strings.CutPrefix(hash, "#/instance/default/")
	if !ok {
		t.Fatalf("Enter on a tile went to %q, want an instance page", hash)
	}
	restarts := func() int {
		var in api.Instance
		if err := json.Unmarshal([]byte(c.ok("get", "instance", inst, "-o", "json")), &in); err != nil {
			t.Fatal(err)
		}
		return in.Status.Restarts
	}
	before := restarts()
	drive(t, ctx, "restart by keyboard", chromedp.Focus("#restart-btn", chromedp.ByID), chromedp.KeyEvent("\r"))
	eventually(t, 30*time.Second, "the instance restarted from the page", func() bool { return restarts() > before })

	// Nodes: cordon, uncordon and drain from the page reach the API.
	var node string
	drive(t, ctx, "nodes page",
		chromedp.Navigate(base+"#/nodes"),
		chromedp.WaitVisible(`#nodes tr[data-node]`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector("#nodes tr[data-node]").dataset.node`, &node),
	)
	nodeSpec := func() api.NodeSpec {
		var n api.Node
		if err := json.Unmarshal([]byte(c.ok("get", "node", node, "-o", "json")), &n); err != nil {
			t.Fatal(err)
		}
		return n.Spec
	}
	for _, step := range []struct {
		act  string
		want func(api.NodeSpec) bool
		cell string
	}{
		{"cordon", func(s api.NodeSpec) bool { return s.Unschedulable }, "cordoned"},
		{"uncordon", func(s api.NodeSpec) bool { return !s.Unschedulable }, "schedulable"},
	} {
		drive(t, ctx, step.act, click(fmt.Sprintf(`#nodes button[data-act=%q]`, step.act)))
		eventually(t, 20*time.Second, "node "+step.act+"ed from the page", func() bool { return step.want(nodeSpec()) })
		pageEventually(t, ctx, 10*time.Second, "the nodes page to say "+step.cell, fmt.Sprintf(`document.querySelector("#nodes td.sched").textContent === %q`, step.cell))
	}

	// Drain (confirmed) from the nodes page: web's instances leave the
	// node; uncordoned, they come back.
	drive(t, ctx, "drain",
		chromedp.Navigate(base+"#/nodes"),
		chromedp.WaitVisible(`#nodes button[data-act=drain]`, chromedp.ByQuery),
		chromedp.Evaluate(`window.confirm = () => true; true`, nil),
		click(`#nodes button[data-act=drain]`),
	)
	eventually(t, 30*time.Second, "node drained from the page", func() bool {
		return nodeSpec().Unschedulable && len(c.running("web")) == 0
	})
	drive(t, ctx, "uncordon after drain", click(`#nodes button[data-act=uncordon]`))
	eventually(t, 20*time.Second, "node uncordoned after the drain", func() bool { s := nodeSpec(); return !s.Draining && !s.Unschedulable })
	c.waitRunning("web", 2)

	// Light and dark: the page follows prefers-color-scheme.
	for _, scheme := range []struct{ name, bg string }{{"dark", "rgb(17, 20, 24)"}, {"light", "rgb(250, 250, 250)"}} {
		drive(t, ctx, scheme.name+" mode", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme.name}}))
		pageEventually(t, ctx, 5*time.Second, scheme.name+" background", fmt.Sprintf(`getComputedStyle(document.body).backgroundColor === %q`, scheme.bg))
		if scheme.name == "dark" {
			saveScreenshot(t, ctx, "dashboard-nodes-dark.png")
		}
	}

	// berth dashboard prints a one-time link on loopback for the unix socket.
	dashAddr := freeAddr(t, "127.0.0.1")
	dash := exec.Command(berthBin, "--data-dir", c.dataDir, "dashboard", "--listen", dashAddr)
	out, err := dash.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dash.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dash.Process.Kill(); _ = dash.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("berth dashboard printed nothing: %v", err)
	}
	link, ok := strings.CutPrefix(strings.TrimSpace(line), "Dashboard: ")
	if !ok || !strings.HasPrefix(link, "http://"+dashAddr+"/ui/login?code=") {
		t.Fatalf("berth dashboard printed %q, want a one-time link on %s", line, dashAddr)
	}
	drive(t, ctx, "one-time link", chromedp.Navigate(link), chromedp.WaitVisible("#map", chromedp.ByID))
	pageEventually(t, ctx, 20*time.Second, "2 tiles through berth dashboard", tileCount+` === 2`)
	resp, err = hc.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the one-time link used twice: %d, want 401", resp.StatusCode)
	}
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/v1/nodes", "/ui/../v1/nodes", "/ui/%2e%2e/v1/nodes"} {
		resp, err := noRedirect.Get("http://" + dashAddr + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(b), "items") {
			t.Errorf("GET %s through the loopback listener: %d %.80s, want 404", p, resp.StatusCode, b)
		}
	}
	resp, err = hc.Post("http://"+dashAddr+"/ui/codes", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a sign-in code asked through the loopback listener: %d, want 404", resp.StatusCode)
	}

	// Remove, confirmed, from the service page.
	drive(t, ctx, "remove from the page",
		chromedp.Navigate(base+"#/service/default/web"),
		chromedp.WaitVisible("#remove-btn", chromedp.ByID),
		chromedp.Evaluate(`window.confirm = () => true; true`, nil),
		click("#remove-btn"),
	)
	eventually(t, 20*time.Second, "web removed from the page", func() bool {
		_, _, code := c.run("get", "service", "web")
		return code != 0
	})
	pageEventually(t, ctx, 30*time.Second, "web's tiles gone from the map", `location.hash = "#/map", document.querySelectorAll('#map .tile[data-key^="default/web-"]').length === 0`)
}

// TestDashboardOnBerthServer signs in to a berth server's dashboard with
// the admin token, and with the link `berth dashboard --server` prints.
func TestDashboardOnBerthServer(t *testing.T) {
	testenv.RequireRoot(t)
	dataDir := t.TempDir()
	addr := freeAddr(t, "127.0.0.1")
	srv := startProcess(t, "berth server", "--data-dir", dataDir, "server", "--name", "s1",
		"--listen", addr, "--peer-listen", freeAddr(t, "127.0.0.1"))
	eventually(t, 60*time.Second, "berth server's dashboard line", func() bool {
		return strings.Contains(srv.out.String(), "Dashboard on https://"+addr+"/ui/")
	})
	token := readToken(t, filepath.Join(dataDir, "tls", "token"))

	c := &cluster{env: &env{t: t, dataDir: dataDir}}
	ctx := c.browser(t)
	base := "https://" + addr + "/ui/"
	drive(t, ctx, "sign in to berth server",
		chromedp.Navigate(base),
		chromedp.WaitVisible("#token", chromedp.ByID),
		chromedp.SendKeys("#token", token, chromedp.ByID),
		click("#signin"),
		chromedp.WaitVisible("#map", chromedp.ByID),
	)
	pageEventually(t, ctx, 10*time.Second, "the page live", `document.getElementById("live").textContent === "live"`)

	out, errOut, code := c.run("--server", "https://"+addr, "--token", token, "--ca-file", filepath.Join(dataDir, "tls", "ca.crt"), "dashboard")
	link, ok := strings.CutPrefix(strings.TrimSpace(out), "Dashboard: ")
	if code != 0 || !ok || !strings.HasPrefix(link, base+"login?code=") {
		t.Fatalf("berth dashboard --server: exit %d, %q %s; want a link on %s", code, out, errOut, base)
	}
	// A fresh browser profile: no cookie but the link's.
	ctx2 := c.browser(t)
	drive(t, ctx2, "the link of berth dashboard --server", chromedp.Navigate(link), chromedp.WaitVisible("#map", chromedp.ByID))
	drive(t, ctx2, "the link again", chromedp.Navigate(link), chromedp.WaitVisible("#login-error", chromedp.ByID))
}
