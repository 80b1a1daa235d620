package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime/pageserver"
	"github.com/berth-dev/berth/internal/store"
)

// Live migration of an instance (admins only):
//
//	POST /v1/namespaces/{ns}/instances/{name}/migrate?to=NODE  api.Migration
//
// The server that takes the request drives it, over the tunnels both
// agents keep to it (internal/agent/migrate.go has their side):
//
//  0. the target agent prepares what the restore needs (the image, pulled
//     from the servers if it lacks it, and an address) while the
//     container still runs on the source;
//  1. the source agent pre-dumps the container while it runs and streams
//     those images, then dumps it for good (it stops) and streams the
//     pages dirtied since, as CRIU writes them;
//  2. the stream goes straight to the target agent, which offered it a
//     port as it prepared (internal/agent/migrate_direct.go), or, where
//     the nodes cannot reach each other, is copied through this server;
//     the target restores the container in what it prepared;
//  3. one store write moves the instance to the target with its new
//     status (address, container), so the service's VIP sends to it from
//     then on, and the source's assignment goes;
//  4. the source forgets its dump and removes the stopped container.
//
// The images go agent to agent when they can: relayed here, each byte is
// decrypted and encrypted again and framed in two tunnels, which for a
// 100 MB container cost as much CPU as the dump, inside the downtime.
// The target listens only for this one move, and only for the source's
// node certificate with a token this server passed on; where that port is
// not reachable (agents otherwise only dial out), the stream rides the
// nodes' own mTLS tunnels through this server as before.
//
// The instance keeps its name, UID and container ID; its address is the
// target's, since pod subnets are per node. Established TCP connections
// are closed at the dump (CRIU's tcp-close): their peers see a reset and
// connect again, through the VIP, to the new address.
//
// Failure: until step 3 the source holds the dump. If the stream or the
// target fails, the source is told to abort and restores the container
// from its dump (and the target removes whatever it restored), so the
// instance runs on the source again; the answer is an error saying so,
// and a MigrationFailed event records it. If the server itself is lost
// before step 3, the target drops its restored container after a while
// and the source, still assigned the instance, restores it later (see
// the agent's timeouts): never on both nodes, and never on none without
// an event or an error saying why.

// migrateTimeout bounds one migration, transfer included.
const migrateTimeout = 5 * time.Minute

func (s *Server) migrateInstance(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := api.MigrateOptions{To: q.Get("to")}
	if v := q.Get("postCopy"); v != "" {
		var err error
		if opts.PostCopy, err = strconv.ParseBool(v); err != nil {
			writeError(w, fmt.Errorf("postCopy %q: %w: want true or false", v, errdefs.ErrInvalidArgument))
			return
		}
	}
	res, err := s.MigrateWith(r.Context(), r.PathValue("ns"), r.PathValue("name"), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Migrate moves a running instance to node to (any other Ready,
// schedulable node when empty) with CRIU, and records a Migrated event, or
// a MigrationFailed one with the error.
func (s *Server) Migrate(ctx context.Context, ns, name, to string) (*api.Migration, error) {
	return s.MigrateWith(ctx, ns, name, api.MigrateOptions{To: to})
}

// MigrateWith is Migrate with the choices of opts (post-copy).
func (s *Server) MigrateWith(ctx context.Context, ns, name string, opts api.MigrateOptions) (*api.Migration, error) {
	to := opts.To
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	start := time.Now()
	var in api.Instance
	if err := s.store.GetInto(ctx, &in, ns, name); err != nil {
		return nil, err
	}
	ref := api.Ref(api.KindInstance, ns, name)
	if err := in.Spec.Template.LiveMigratable(); err != nil {
		return nil, fmt.Errorf("migrate %s: %w: %w", ref, errdefs.ErrFailedPrecondition, err)
	}
	if in.Status.Phase != api.PhaseRunning || in.Spec.Node == "" {
		return nil, fmt.Errorf("migrate %s: %w: it is %s, not Running", ref, errdefs.ErrFailedPrecondition, cmpPhase(in.Status.Phase))
	}
	from := in.Spec.Node
	to, err := s.migrationTarget(ctx, &in, to)
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", ref, err)
	}
	res, err := s.migrate(ctx, &in, from, to, opts.PostCopy)
	if err != nil {
		s.migrationEvent(ctx, &in, api.EventWarning, "MigrationFailed", fmt.Sprintf("from node %s to node %s: %v", from, to, err))
		return nil, fmt.Errorf("migrate %s to node %s: %w", ref, to, err)
	}
	res.Instance, res.From, res.To = name, from, to
	res.Duration = time.Since(start)
	st := res.Stages
	post := ""
	if res.Direct {
		post = ", sent node to node"
	}
	if res.PostCopy {
		post += fmt.Sprintf("; the memory followed in %v", st.PostCopy.Round(time.Millisecond))
	}
	s.migrationEvent(ctx, &in, api.EventNormal, "Migrated", fmt.Sprintf("from node %s to node %s in %v (downtime %v: dump %v, transfer %v, restore %v; %d bytes of images%s), address %s",
		from, to, res.Duration.Round(time.Millisecond), res.Downtime.Round(time.Millisecond), st.Dump.Round(time.Millisecond),
		st.Transfer.Round(time.Millisecond), st.Restore.Round(time.Millisecond), res.Bytes, post, res.IP))
	return res, nil
}

func cmpPhase(p api.Phase) api.Phase {
	if p == "" {
		return api.PhasePending
	}
	return p
}

// migrationTarget checks the node asked for, or picks the Ready,
// schedulable node other than the instance's with the fewest instances.
func (s *Server) migrationTarget(ctx context.Context, in *api.Instance, to string) (string, error) {
	nodes, _, err := store.List[api.Node](ctx, s.store, "")
	if err != nil {
		return "", err
	}
	usable := func(n *api.Node) error {
		switch {
		case n.Metadata.Name == in.Spec.Node:
			return fmt.Errorf("%w: the instance is on node %s already", errdefs.ErrInvalidArgument, n.Metadata.Name)
		case n.Status.Condition != api.NodeReady:
			return fmt.Errorf("%w: node %s is not Ready", errdefs.ErrFailedPrecondition, n.Metadata.Name)
		case n.Spec.Unschedulable:
			return fmt.Errorf("%w: node %s is cordoned", errdefs.ErrFailedPrecondition, n.Metadata.Name)
		case s.tunnels.get(n.Metadata.Name) == nil:
			return fmt.Errorf("%w: node %s has no tunnel to this server", errdefs.ErrUnavailable, n.Metadata.Name)
		}
		return nil
	}
	if to != "" {
		for _, n := range nodes {
			if n.Metadata.Name == to {
				return to, usable(n)
			}
		}
		return "", fmt.Errorf("node %q: %w", to, errdefs.ErrNotFound)
	}
	insts, _, err := store.List[api.Instance](ctx, s.store, "")
	if err != nil {
		return "", err
	}
	load := map[string]int{}
	for _, i := range insts {
		if !i.Status.Phase.Terminal() {
			load[i.Spec.Node]++
		}
	}
	var names []string
	for _, n := range nodes {
		if usable(n) == nil {
			names = append(names, n.Metadata.Name)
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("%w: no other node is Ready and schedulable", errdefs.ErrFailedPrecondition)
	}
	slices.SortFunc(names, func(a, b string) int {
		if load[a] != load[b] {
			return load[a] - load[b]
		}
		return strings.Compare(a, b)
	})
	return names[0], nil
}

// migrate runs steps 1 to 4 (see above) for an instance checked already.
//
// Long because a migration's steps (pick, dump, transfer, restore, commit)
// run in one order and each failure decides how the others are undone.
func (s *Server) migrate(ctx context.Context, in *api.Instance, from, to string, postCopy bool) (*api.Migration, error) {
	src, dst := s.tunnels.get(from), s.tunnels.get(to)
	for n, tn := range map[string]*tunnel{from: src, to: dst} {
		if tn == nil {
			return nil, fmt.Errorf("node %q: %w: its agent has no tunnel to this server", n, errdefs.ErrUnavailable)
		}
	}
	uid := url.PathEscape(in.Metadata.UID)
	base := "http://agent/v1/instances/" + uid + "/migrate"
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	instHeader := base64.StdEncoding.EncodeToString(b)
	var stages api.MigrationStages
	// The target pulls the image, as it prepares, before the instance is
	// bound to it.
	defer s.migrating.add(to, in.Spec.Template.Images())()
	t0 := time.Now()
	prep := base + "/prepare"
	if !postCopy {
		// The target may offer to take the images from the source itself.
		prep += "?from=" + url.QueryEscape(from)
	}
	var offer api.MigrationDirect
	if err := s.agentCallInto(ctx, dst, prep, instHeader, &offer); err != nil {
		return nil, fmt.Errorf("prepare node %s: %w", to, err)
	}
	stages.Prepare = time.Since(t0)
	// Until the source answers, the target is told to let go of what it
	// prepared should anything fail.
	unprepare := func() {
		if err := s.agentCall(context.WithoutCancel(ctx), dst, base+"/abort", ""); err != nil && !errdefs.IsNotFound(err) {
			s.log.Warn("migration: abort on the target", "instance", in.Metadata.Name, "node", to, "err", err)
		}
	}
	q := url.Values{}
	if in.Status.ContainerID != "" {
		q.Set("containerID", in.Status.ContainerID)
	}
	lazy := ""
	if postCopy {
		q.Set("lazy", "1")
		lazy = "?lazy=1"
	}
	dump := func(q url.Values) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		out, err := src.client().Do(req)
		if err != nil {
			return nil, fmt.Errorf("node %q: %w: %w", from, errdefs.ErrUnavailable, err)
		}
		if out.StatusCode != http.StatusOK {
			defer out.Body.Close()
			return nil, client.ErrorFrom(http.MethodPost, req.URL.Path, out)
		}
		return out, nil
	}
	direct := offer.Addr != ""
	if direct {
		if err := s.checkOffer(ctx, to, offer.Addr); err != nil {
			// The source is sent nowhere the target's node does not live.
			s.log.Warn("migration: the target's offer is refused; relaying it", "instance", in.Metadata.Name, "to", to, "err", err)
			direct = false
		}
	}
	var out *http.Response
	if direct {
		dq := url.Values{}
		for k, v := range q {
			dq[k] = v
		}
		dq.Set("direct", offer.Addr)
		dq.Set("cert", offer.Cert)
		dq.Set("token", offer.Token)
		if out, err = dump(dq); errdefs.IsUnavailable(err) {
			// The source could not reach the target: the server relays.
			s.log.Warn("migration: no direct stream between the nodes; relaying it", "instance", in.Metadata.Name, "from", from, "to", to, "err", err)
			direct = false
		}
	}
	if !direct {
		out, err = dump(q)
	}
	if err != nil {
		// Refused before anything stopped: the instance runs on.
		unprepare()
		return nil, err
	}
	defer out.Body.Close()
	// An agent that does not know the offer streams its answer's body.
	direct = direct && out.Header.Get(api.HeaderMigrationDirect) == "1"
	// Post-copy: the memory crosses from the source's page server to the
	// target's lazy-pages daemon, joined here, while the target restores.
	pages := make(chan relayed, 1)
	pagesCtx, stopPages := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPages()
	if postCopy {
		go func() { pages <- s.relayPages(pagesCtx, src, dst, base+"/pages") }()
	}
	// From the final dump on, a failure must put the instance back.
	abort := func(cause error) error {
		stopPages()
		out.Body.Close() // the source's stream stops here
		// A target that cannot be told (it died) drops what it restored
		// once its assignment fails to come: see the agent's adoptTimeout.
		unprepare()
		if err := s.agentCall(context.WithoutCancel(ctx), src, base+"/abort", ""); err != nil && !errdefs.IsNotFound(err) {
			return errors.Join(cause, fmt.Errorf("abort on node %s: %w", from, err))
		}
		return fmt.Errorf("%w; the instance runs on node %s again", cause, from)
	}
	body := &countingReader{r: out.Body}
	var put *http.Request
	if direct {
		// The stream goes to the target itself; out's body is empty,
		// its trailers come at the stream's end.
		put, err = http.NewRequestWithContext(ctx, http.MethodPut, base+"?direct=1", http.NoBody)
	} else {
		put, err = http.NewRequestWithContext(ctx, http.MethodPut, base+lazy, body)
	}
	if err != nil {
		return nil, abort(err)
	}
	put.Header.Set(api.HeaderMigrationInstance, instHeader)
	put.Header.Set("Content-Type", "application/x-tar")
	resp, err := dst.client().Do(put)
	if err != nil {
		return nil, abort(fmt.Errorf("node %q: %w: %w", to, errdefs.ErrUnavailable, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, abort(client.ErrorFrom(http.MethodPut, put.URL.Path, resp))
	}
	var restored api.MigrationRestored
	if err := json.NewDecoder(resp.Body).Decode(&restored); err != nil {
		return nil, abort(fmt.Errorf("node %q: its answer: %w", to, err))
	}
	// The whole stream has come (the target read it to its end); the
	// trailer says when the source froze the container.
	_, _ = io.Copy(io.Discard, out.Body)
	frozen, _ := time.Parse(time.RFC3339Nano, out.Trailer.Get(api.HeaderMigrationFrozenAt))
	stages.Dump, _ = time.ParseDuration(out.Trailer.Get(api.HeaderMigrationDumpTook))
	if direct {
		body.n, _ = strconv.ParseInt(out.Trailer.Get(api.HeaderMigrationSent), 10, 64)
	}

	st := in.Status
	st.Phase, st.ContainerID, st.Pid, st.IP = api.PhaseRunning, restored.ContainerID, restored.Pid, restored.IP
	st.Message, st.Reason = "", ""
	t1 := time.Now()
	if err := s.store.Move(ctx, store.Binding{Namespace: in.Metadata.Namespace, Name: in.Metadata.Name,
		Node: to, From: from, Status: &st}); err != nil {
		return nil, abort(fmt.Errorf("move the instance to node %s: %w", to, err))
	}
	switched := time.Now()
	stages.Switch = switched.Sub(t1)
	if err := s.agentCall(context.WithoutCancel(ctx), src, base+"/commit", ""); err != nil {
		// The source finds the instance gone from its assignments and lets go of it.
		s.log.Warn("migration: commit on the source", "instance", in.Metadata.Name, "node", from, "err", err)
	}
	stages.Restore = restored.RestoredAt.Sub(restored.ReceivedAt)
	res := &api.Migration{IP: restored.IP, Bytes: body.n, Direct: direct, Stages: stages, PostCopy: postCopy,
		FrozenAt: frozen.UTC(), RestoredAt: restored.RestoredAt, SwitchedAt: switched.UTC()}
	if postCopy {
		var p relayed
		select {
		case p = <-pages:
		case <-ctx.Done():
			stopPages()
			p = <-pages
		}
		res.Bytes += p.n
		res.Stages.PostCopy = time.Since(restored.RestoredAt)
		if p.err != nil {
			// The target kills what it restored (it lacks memory), and
			// its reconciler starts the instance afresh there.
			return nil, fmt.Errorf("%w: %w after the restore on node %s: the instance starts afresh there", errdefs.ErrUnavailable, p.err, to)
		}
	}
	if !frozen.IsZero() {
		// Source and target clocks both: close enough on one LAN.
		res.Downtime = restored.RestoredAt.Sub(frozen)
		res.Stages.Transfer = max(0, restored.ReceivedAt.Sub(frozen)-stages.Dump)
	}
	return res, nil
}

// agentCall POSTs to an agent over its tunnel and wants a 2xx; inst,
// when set, is the instance header (api.HeaderMigrationInstance).
func (s *Server) agentCall(ctx context.Context, tn *tunnel, u, inst string) error {
	return s.agentCallInto(ctx, tn, u, inst, nil)
}

// agentCallInto is agentCall that reads a JSON answer into out, when
// there is one (not a 204).
func (s *Server) agentCallInto(ctx context.Context, tn *tunnel, u, inst string, out any) error {
	if tn == nil {
		return fmt.Errorf("%w: no tunnel", errdefs.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	if inst != "" {
		req.Header.Set(api.HeaderMigrationInstance, inst)
	}
	resp, err := tn.client().Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return client.ErrorFrom(http.MethodPost, req.URL.Path, resp)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("%s: its answer: %w", req.URL.Path, err)
		}
	}
	return nil
}

func (s *Server) migrationEvent(ctx context.Context, in *api.Instance, typ api.EventType, reason, msg string) {
	ev := &api.Event{
		Metadata: api.Metadata{Namespace: in.Metadata.Namespace},
		Time:     time.Now().UTC(),
		Object:   api.ObjectRef{Kind: api.KindInstance, Namespace: in.Metadata.Namespace, Name: in.Metadata.Name},
		Type:     typ, Reason: reason, Message: msg, Source: "apiserver",
	}
	if err := s.store.RecordEvent(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Warn("record event", "instance", in.Metadata.Name, "reason", reason, "err", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// relayed is how a post-copy's page stream ended and the bytes it carried.
type relayed struct {
	n   int64
	err error
}

// relayPages joins the source agent's page server to the target agent's
// lazy-pages daemon (POST u, upgraded, on each), both ways, until the
// daemon has every page and closes, or ctx ends.
func (s *Server) relayPages(ctx context.Context, src, dst *tunnel, u string) relayed {
	open := func(tn *tunnel) (io.ReadWriteCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", api.MigrationPagesProtocol)
		resp, err := tn.client().Do(req)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			defer resp.Body.Close()
			return nil, client.ErrorFrom(http.MethodPost, req.URL.Path, resp)
		}
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			resp.Body.Close()
			return nil, errors.New("the page stream is not writable")
		}
		return rwc, nil
	}
	from, err := open(src)
	if err != nil {
		return relayed{err: fmt.Errorf("page stream of the source: %w", err)}
	}
	defer from.Close()
	to, err := open(dst)
	if err != nil {
		return relayed{err: fmt.Errorf("page stream of the target: %w", err)}
	}
	defer to.Close()
	stop := context.AfterFunc(ctx, func() {
		from.Close()
		to.Close()
	})
	defer stop()
	// The daemon's requests go to the source, the pages come back. The
	// transfer is over when the daemon, having asked the page server to
	// end it, closes its side; a side closed before that is a failure.
	var n int64
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		n, _ = io.Copy(to, from)
	}()
	ended, err := pageserver.Forward(from, to)
	from.Close() // the source closes the page server after the daemon's close
	<-copied
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case err == nil && !ended:
		err = errors.New("the target's lazy-pages daemon closed it before it had every page")
	}
	if err != nil {
		return relayed{n: n, err: fmt.Errorf("page stream: %w", err)}
	}
	return relayed{n: n}
}

// checkOffer refuses a direct stream's address that is not on the
// target's own node address: a node's agent must not make a source dial
// anywhere else in its name.
func (s *Server) checkOffer(ctx context.Context, to, addr string) error {
	n, err := store.Get[api.Node](ctx, s.store, "", to)
	if err != nil {
		return fmt.Errorf("node %s: %w", to, err)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("node %s offered %q: %w", to, addr, err)
	}
	if host == "" || host != n.Spec.Address {
		return fmt.Errorf("node %s offered %s, not on its address %q: %w", to, addr, n.Spec.Address, errdefs.ErrForbidden)
	}
	return nil
}
