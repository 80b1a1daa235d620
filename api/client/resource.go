package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// ptr is satisfied by pointers to object types.
type ptr[T any] interface {
	*T
	api.Object
}

// Resource reads and writes objects of one kind. For nodes, which are in
// no namespace, the namespace arguments are ignored.
type Resource[T any, P ptr[T]] struct {
	c *Client
}

func (r Resource[T, P]) kind() api.Kind { return P(new(T)).GetKind() }

// Get reads one object.
func (r Resource[T, P]) Get(ctx context.Context, namespace, name string) (P, error) {
	obj := P(new(T))
	if err := r.c.do(ctx, http.MethodGet, objectPath(r.kind(), namespace, name), nil, nil, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// List reads the objects in namespace (all namespaces when empty) and the
// revision they were read at, to Watch from.
func (r Resource[T, P]) List(ctx context.Context, namespace string) ([]P, int64, error) {
	var out struct {
		Revision int64 `json:"revision"`
		Items    []P   `json:"items"`
	}
	if err := r.c.do(ctx, http.MethodGet, r.listPath(namespace, nil), nil, nil, &out); err != nil {
		return nil, 0, err
	}
	return out.Items, out.Revision, nil
}

func (r Resource[T, P]) listPath(namespace string, q url.Values) string {
	p := "/v1/" + r.kind().Plural()
	if namespace != "" && r.kind().Namespaced() {
		p = objectPath(r.kind(), namespace, "")
	}
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// Apply creates obj or updates its spec. When obj carries a revision
// (as one read from the server does), the update happens only if the
// object is still at it, and fails with errdefs.ErrConflict otherwise.
// It returns the object as stored, with its new revision.
func (r Resource[T, P]) Apply(ctx context.Context, obj P) (P, error) {
	m := obj.GetMetadata()
	out := P(new(T))
	if err := r.c.do(ctx, http.MethodPut, objectPath(r.kind(), m.Namespace, m.Name), nil, obj, out); err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateStatus writes obj's status, leaving its spec alone. A revision in
// obj is a precondition, as for Apply.
func (r Resource[T, P]) UpdateStatus(ctx context.Context, obj P) (P, error) {
	m := obj.GetMetadata()
	out := P(new(T))
	if err := r.c.do(ctx, http.MethodPut, objectPath(r.kind(), m.Namespace, m.Name)+"/status", nil, obj, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Delete removes an object; a non-zero revision is a precondition.
func (r Resource[T, P]) Delete(ctx context.Context, namespace, name string, revision int64) error {
	return r.c.do(ctx, http.MethodDelete, objectPath(r.kind(), namespace, name), ifMatch(revision), nil, nil)
}

// WatchEvent is one change seen by a watch. Type is Added, Modified or
// Deleted; Revision resumes a watch right after it. An event with Err ends
// the stream: errdefs.ErrFailedPrecondition means the revision is too old
// and the caller must List again.
type WatchEvent[P api.Object] struct {
	Type     string
	Revision int64
	Object   P
	Err      error
}

// Watch streams changes in namespace (all when empty) after revision
// (from now when 0), typically the revision List returned. The channel
// closes when ctx is done or after an event with Err.
func (r Resource[T, P]) Watch(ctx context.Context, namespace string, afterRevision int64) (<-chan WatchEvent[P], error) {
	return watch[T, P](ctx, r.c, r.listPath(namespace, watchQuery(afterRevision)))
}

func watchQuery(after int64) url.Values {
	q := url.Values{"watch": {"1"}}
	if after > 0 {
		q.Set("revision", strconv.FormatInt(after, 10))
	}
	return q
}

func watch[T any, P ptr[T]](ctx context.Context, c *Client, path string) (<-chan WatchEvent[P], error) {
	reqCtx, cancelReq := context.WithCancel(ctx)
	resp, err := c.send(reqCtx, http.MethodGet, path, nil, nil)
	if err != nil {
		cancelReq()
		return nil, err
	}
	// A stream silent for longer than the timeout has lost its server:
	// cutting the request ends the read below. A server that beats less
	// often than the timeout expects, as asked, gets three of its beats.
	timeout := c.watchTimeout
	if every, err := time.ParseDuration(resp.Header.Get(api.WatchHeartbeatHeader)); err == nil {
		timeout = max(timeout, 3*every)
	}
	var stalled atomic.Bool
	watchdog := time.AfterFunc(timeout, func() {
		stalled.Store(true)
		cancelReq()
	})
	out := make(chan WatchEvent[P], 16)
	go func() {
		defer close(out)
		defer cancelReq()
		defer watchdog.Stop()
		defer resp.Body.Close()
		send := func(ev WatchEvent[P]) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		// Each line is decoded in one pass, its object straight into the
		// event's: a first pass that copied the object out as raw JSON
		// and a second that decoded it scanned and copied each object
		// twice, for every assignment a hollow fleet's nodes receive.
		var obj P
		for sc.Scan() {
			watchdog.Reset(timeout)
			if obj == nil {
				obj = P(new(T))
			}
			line := struct {
				Type     string `json:"type"`
				Revision int64  `json:"revision"`
				Object   P      `json:"object"`
				Error    string `json:"error"`
				Code     string `json:"code"`
			}{Object: obj}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				send(WatchEvent[P]{Err: fmt.Errorf("watch %s: %w", path, err)})
				return
			}
			if line.Type == "Heartbeat" {
				continue // it has no object: obj is kept for the next line
			}
			if line.Type == "Error" {
				send(WatchEvent[P]{Err: &Error{Status: http.StatusOK, Code: line.Code, Message: line.Error}})
				return
			}
			if line.Object == nil { // "object": null, an empty object as before
				line.Object = obj
			}
			obj = nil
			if !send(WatchEvent[P]{Type: line.Type, Revision: line.Revision, Object: line.Object}) {
				return
			}
		}
		if ctx.Err() == nil {
			send(WatchEvent[P]{Err: watchEnded(path, sc.Err(), stalled.Load(), timeout)})
		}
	}()
	return out, nil
}

// watchEnded says why the watch of path ended while its caller still
// wanted it: the watchdog cut a stream silent for timeout, the read
// failed (err), or the server ended the stream.
func watchEnded(path string, err error, stalled bool, timeout time.Duration) error {
	switch {
	case stalled:
		return fmt.Errorf("watch %s: %w: no heartbeat for %s", path, errdefs.ErrUnavailable, timeout)
	case err != nil:
		return fmt.Errorf("watch %s: %w: %w", path, errdefs.ErrUnavailable, err)
	}
	return fmt.Errorf("watch %s: %w: stream ended", path, errdefs.ErrUnavailable)
}

// Services reads and writes services.
func (c *Client) Services() ServiceClient {
	return ServiceClient{Resource[api.Service, *api.Service]{c}}
}

// Jobs reads and writes jobs.
func (c *Client) Jobs() JobClient { return JobClient{Resource[api.Job, *api.Job]{c}} }

// Instances reads and writes instances.
func (c *Client) Instances() InstanceClient {
	return InstanceClient{Resource[api.Instance, *api.Instance]{c}}
}

// Nodes reads and writes nodes.
func (c *Client) Nodes() NodeClient { return NodeClient{Resource[api.Node, *api.Node]{c}} }

// Volumes reads, records and removes named volumes.
func (c *Client) Volumes() Resource[api.Volume, *api.Volume] {
	return Resource[api.Volume, *api.Volume]{c}
}

// Configs reads and writes configs.
func (c *Client) Configs() Resource[api.Config, *api.Config] {
	return Resource[api.Config, *api.Config]{c}
}

// Secrets writes secrets and reads their keys (never their values).
func (c *Client) Secrets() Resource[api.Secret, *api.Secret] {
	return Resource[api.Secret, *api.Secret]{c}
}

// CronJobs reads and writes cron jobs.
func (c *Client) CronJobs() CronJobClient {
	return CronJobClient{Resource[api.CronJob, *api.CronJob]{c}}
}

// CronJobClient is Resource plus trigger.
type CronJobClient struct {
	Resource[api.CronJob, *api.CronJob]
}

// Trigger starts a run of a cron job now and returns its job.
func (cj CronJobClient) Trigger(ctx context.Context, namespace, name string) (*api.Job, error) {
	var out api.Job
	if err := cj.c.do(ctx, http.MethodPost, objectPath(api.KindCronJob, namespace, name)+"/trigger", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Events reads and records events.
func (c *Client) Events() EventClient { return EventClient{Resource[api.Event, *api.Event]{c}} }

// ServiceClient is Resource plus the service actions.
type ServiceClient struct {
	Resource[api.Service, *api.Service]
}

// Scale sets a service's replicas.
func (s ServiceClient) Scale(ctx context.Context, namespace, name string, replicas int) (*api.Service, error) {
	var out api.Service
	err := s.c.do(ctx, http.MethodPost, objectPath(api.KindService, namespace, name)+"/scale", nil, map[string]int{"replicas": replicas}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Restart rolls every instance of a service.
func (s ServiceClient) Restart(ctx context.Context, namespace, name string) (*api.Service, error) {
	var out api.Service
	if err := s.c.do(ctx, http.MethodPost, objectPath(api.KindService, namespace, name)+"/restart", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// JobClient is Resource for jobs.
type JobClient struct {
	Resource[api.Job, *api.Job]
}

// InstanceClient is Resource plus instance actions.
type InstanceClient struct {
	Resource[api.Instance, *api.Instance]
}

// Restart restarts an instance's container.
func (i InstanceClient) Restart(ctx context.Context, namespace, name string) (*api.Instance, error) {
	var out api.Instance
	if err := i.c.do(ctx, http.MethodPost, objectPath(api.KindInstance, namespace, name)+"/restart", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Bind places an instance on a node (the scheduler's write). A non-zero
// revision is a precondition; binding an instance already bound to
// another node fails with errdefs.ErrFailedPrecondition.
func (i InstanceClient) Bind(ctx context.Context, namespace, name, node string, cpuset []int, revision int64) (*api.Instance, error) {
	var out api.Instance
	body := map[string]any{"node": node}
	if len(cpuset) > 0 {
		body["cpuset"] = cpuset
	}
	if err := i.c.do(ctx, http.MethodPost, objectPath(api.KindInstance, namespace, name)+"/bind", ifMatch(revision), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Data is what an instance's files and envFrom resolve to; only its
// node (or an admin) may read it.
func (i InstanceClient) Data(ctx context.Context, namespace, name string) (*api.InstanceData, error) {
	var out api.InstanceData
	if err := i.c.do(ctx, http.MethodGet, objectPath(api.KindInstance, namespace, name)+"/data", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// NodeClient is Resource plus what agents need.
type NodeClient struct {
	Resource[api.Node, *api.Node]
}

// Assignments lists the instances bound to node, each with its latest
// status, and the revision to WatchAssignments after.
func (n NodeClient) Assignments(ctx context.Context, node string) ([]*api.Instance, int64, error) {
	var out struct {
		Revision int64           `json:"revision"`
		Items    []*api.Instance `json:"items"`
	}
	if err := n.c.do(ctx, http.MethodGet, objectPath(api.KindNode, "", node)+"/assignments", nil, nil, &out); err != nil {
		return nil, 0, err
	}
	return out.Items, out.Revision, nil
}

// ReportStatuses writes the status of several of node's instances in one
// request (at most api.MaxStatusBatch); each item's outcome is in the
// result, in order.
func (n NodeClient) ReportStatuses(ctx context.Context, node string, items []api.StatusReport) ([]api.StatusResult, error) {
	var out api.StatusBatchResult
	if err := n.c.do(ctx, http.MethodPut, objectPath(api.KindNode, "", node)+"/instancestatus", nil, api.StatusBatch{Items: items}, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(items) {
		return nil, fmt.Errorf("status of node %q's instances: %d results for %d reports", node, len(out.Results), len(items))
	}
	return out.Results, nil
}

// WatchAssignments streams changes to the instances bound to node after
// revision: Added when bound, Modified when the spec changes, Deleted
// when the instance is deleted or moved away.
func (n NodeClient) WatchAssignments(ctx context.Context, node string, afterRevision int64) (<-chan WatchEvent[*api.Instance], error) {
	q := watchQuery(afterRevision)
	q.Set(api.WatchHeartbeatParam, assignmentWatchHeartbeat.String())
	return watch[api.Instance](ctx, n.c, objectPath(api.KindNode, "", node)+"/assignments?"+q.Encode())
}

// assignmentWatchHeartbeat is the heartbeat pace an assignment watch asks
// for (see api.WatchHeartbeatParam): its agent beats over the same client
// every third of a node TTL, and watches again when those beats fail, so
// its stream's own heartbeats only guard against a stream stuck on a
// connection still alive.
const assignmentWatchHeartbeat = time.Minute

// EventClient is Resource plus recording.
type EventClient struct {
	Resource[api.Event, *api.Event]
}

// Record stores an event; the server names it and times it when the
// event does not.
func (e EventClient) Record(ctx context.Context, ev *api.Event) (*api.Event, error) {
	ns := ev.Metadata.Namespace
	if ns == "" {
		ns = ev.Object.Namespace
	}
	if ns == "" {
		ns = api.DefaultNamespace
	}
	var out api.Event
	if err := e.c.do(ctx, http.MethodPost, "/v1/namespaces/"+url.PathEscape(ns)+"/events", nil, ev, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
