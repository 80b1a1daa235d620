package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/runtime"
)

// The agent's side of the instance subresources. The API server reaches
// these routes over the node's tunnel (see ServeTunnel), after it has
// authorised the caller; they name an instance by its UID, whose latest
// container (or the one before, for previous logs) they serve from the
// runtime. ?container=NAME picks one of the instance's init or sidecar
// containers (the main one otherwise); ?containerID= may name the latest,
// saving a search:
//
//	GET /v1/instances/{uid}/logs         frames (client.ReadFrames); ?follow, tail, since, timestamps, previous
//	GET /v1/instances/{uid}/attach       frames from now until the container exits, then its status
//	GET /v1/instances/{uid}/exec         WebSocket (client.Chan*); ?cmd=..&env=..&tty&stdin&cols&rows
//	GET /v1/instances/{uid}/cp?path=P    a tar of P
//	PUT /v1/instances/{uid}/cp?path=DIR  unpack the tar in the body into DIR
//	GET /v1/instances/{uid}/portforward  WebSocket to ?port= on the container's loopback
//	GET /v1/instances/{uid}/stats        client.InstanceStats
//	POST /v1/instances/{uid}/checkpoint  a CRIU dump (gzipped tar), the container left running
//	POST /v1/instances/{uid}/restore     the container put back to the checkpoint in the body
//	POST|PUT /v1/instances/{uid}/migrate[/commit|/abort|/pages]  live migration (migrate.go, migrate_lazy.go)
//	GET /metrics                         the agent's Prometheus metrics

// RemoteHandler serves the instance subresources from this node's runtime.
// metrics, when not nil, serves GET /metrics.
func (a *Agent) RemoteHandler(metrics http.Handler) http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/instances/{uid}/logs", a.serveLogs)
	m.HandleFunc("GET /v1/instances/{uid}/attach", a.serveAttach)
	m.HandleFunc("GET /v1/instances/{uid}/exec", a.serveExec)
	m.HandleFunc("GET /v1/instances/{uid}/cp", a.serveCopyFrom)
	m.HandleFunc("PUT /v1/instances/{uid}/cp", a.serveCopyTo)
	m.HandleFunc("GET /v1/instances/{uid}/portforward", a.servePortForward)
	m.HandleFunc("GET /v1/instances/{uid}/stats", a.serveStats)
	m.HandleFunc("POST /v1/instances/{uid}/checkpoint", a.serveCheckpoint)
	m.HandleFunc("POST /v1/instances/{uid}/restore", a.serveRestore)
	m.HandleFunc("POST /v1/instances/{uid}/migrate", a.serveMigrateOut)
	m.HandleFunc("POST /v1/instances/{uid}/migrate/prepare", a.serveMigratePrepare)
	m.HandleFunc("PUT /v1/instances/{uid}/migrate", a.serveMigrateIn)
	m.HandleFunc("POST /v1/instances/{uid}/migrate/commit", a.serveMigrateCommit)
	m.HandleFunc("POST /v1/instances/{uid}/migrate/abort", a.serveMigrateAbort)
	m.HandleFunc("POST /v1/instances/{uid}/migrate/pages", a.serveMigratePages)
	if metrics != nil {
		m.Handle("GET /metrics", metrics)
	}
	return m
}

// memberParam is the container a request names (?container=), "" for
// the main one.
func memberParam(r *http.Request) string {
	name := r.URL.Query().Get("container")
	if name == api.MainContainer {
		return ""
	}
	return name
}

// container finds the latest container of an instance's member name (""
// for the main one), or with previous the one before it (the agent keeps
// both, see reconcile).
func (a *Agent) container(ctx context.Context, uid, name string, previous bool) (runtime.Status, error) {
	all, err := a.cfg.Runtime.List(ctx)
	if err != nil {
		return runtime.Status{}, err
	}
	var mine []runtime.Status
	for _, c := range all {
		if c.Labels[labelUID] == uid && memberOf(c) == name {
			mine = append(mine, c)
		}
	}
	slices.SortFunc(mine, func(x, y runtime.Status) int { return attemptOf(y) - attemptOf(x) })
	what := "no container"
	if name != "" {
		what = fmt.Sprintf("no container %q", name)
	}
	switch {
	case len(mine) == 0:
		return runtime.Status{}, fmt.Errorf("instance %s: %w: %s on node %q", uid, errdefs.ErrNotFound, what, a.cfg.Node.Name)
	case previous && len(mine) < 2:
		return runtime.Status{}, fmt.Errorf("instance %s: %w: %s before the current one on node %q", uid, errdefs.ErrNotFound, what, a.cfg.Node.Name)
	case previous:
		return mine[1], nil
	}
	return mine[0], nil
}

// running is the instance's latest container, which must be running.
// The API server passes the container the instance's status names
// (?containerID=): when it is the instance's and runs, it is taken
// without listing every container on the node.
func (a *Agent) running(r *http.Request) (runtime.Status, error) {
	ctx, uid, name := r.Context(), r.PathValue("uid"), memberParam(r)
	if hint := r.URL.Query().Get("containerID"); hint != "" {
		if c, err := a.cfg.Runtime.State(ctx, hint); err == nil && c.Labels[labelUID] == uid && memberOf(c) == name && c.State == runtime.Running {
			return c, nil
		}
	}
	c, err := a.container(ctx, uid, name, false)
	if err != nil {
		return c, err
	}
	if c.State != runtime.Running {
		return c, fmt.Errorf("instance %s: container %s: %w: it is %s", uid, c.ID, errdefs.ErrFailedPrecondition, c.State)
	}
	return c, nil
}

func writeErr(w http.ResponseWriter, err error) {
	code := errdefs.HTTPStatus(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error  string           `json:"error"`
		Code   string           `json:"code"`
		Fields []api.FieldError `json:"fields,omitempty"`
	}{err.Error(), errdefs.Code(err), api.FieldErrors(err)})
}
