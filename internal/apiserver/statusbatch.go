package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// putStatusBatch takes a node's report of many of its instances' status
// at once (PUT /v1/nodes/{name}/instancestatus): one request, one read of
// the instances and one etcd transaction for up to api.MaxStatusBatch,
// where one request each cost a TLS round trip, four reads and a write.
// Each item passes the checks a single report does (the instance bound
// to the node, an address in its pod subnet, a phase a node may report);
// one that does not gets its own error and the others are written.
func (s *Server) putStatusBatch(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("name")
	b, err := s.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var batch api.StatusBatch
	if err := decodeStatusBatch(b, &batch); err != nil {
		writeError(w, fmt.Errorf("status of node %q's instances: %w", node, err))
		return
	}
	if len(batch.Items) > api.MaxStatusBatch {
		writeError(w, fmt.Errorf("status of node %q's instances: %w", node, &api.ValidationError{Fields: []api.FieldError{{
			Field: "items", Reason: fmt.Sprintf("%d reports, at most %d in one batch (api.MaxStatusBatch)", len(batch.Items), api.MaxStatusBatch)}}}))
		return
	}
	seen := make(map[[2]string]int, len(batch.Items))
	for i, it := range batch.Items {
		k := [2]string{it.Namespace, it.Name}
		if j, ok := seen[k]; ok {
			writeError(w, fmt.Errorf("status of node %q's instances: %w", node, &api.ValidationError{Fields: []api.FieldError{{
				Field: fmt.Sprintf("items[%d]", i), Reason: fmt.Sprintf("reports %s again (items[%d]): one report each", api.Ref(api.KindInstance, it.Namespace, it.Name), j)}}}))
			return
		}
		seen[k] = i
	}
	var n api.Node
	if err := s.store.GetInto(r.Context(), &n, "", node); err != nil {
		writeError(w, err)
		return
	}
	results, err := s.writeStatusBatch(r.Context(), &n, batch.Items)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.StatusBatchResult{Results: results})
}

// writeStatusBatch admits and writes items for node n; an instance that
// changed between the read and the write makes it read and try again.
func (s *Server) writeStatusBatch(ctx context.Context, n *api.Node, items []api.StatusReport) ([]api.StatusResult, error) {
	refs := make([][2]string, len(items))
	for i, it := range items {
		refs[i] = [2]string{it.Namespace, it.Name}
	}
	for attempt := 0; ; attempt++ {
		stored, raw, err := s.store.InstancesNamed(ctx, refs)
		if err != nil {
			return nil, err
		}
		results := make([]api.StatusResult, len(items))
		txn := s.store.Txn()
		// obj is each report checked as the instance it would make: one
		// for the batch, as a copy of an instance for each report was a
		// kilobyte more to collect for every status written.
		var obj api.Instance
		for i, it := range items {
			cur := stored[i]
			gone := func(why string) {
				results[i] = api.StatusResult{Gone: true, Error: fmt.Sprintf("%s: %s", api.Ref(api.KindInstance, it.Namespace, it.Name), why)}
			}
			switch {
			case cur == nil:
				gone("not found")
				continue
			case it.UID != "" && cur.Metadata.UID != it.UID:
				gone("made again since: a report about the one before")
				continue
			case cur.Spec.Node != n.Metadata.Name:
				gone(fmt.Sprintf("bound to node %q, not %q", cur.Spec.Node, n.Metadata.Name))
				continue
			case cur.Status.Phase == api.PhaseLost:
				gone("given up as lost")
				continue
			}
			obj = *cur
			obj.Status = it.Status
			obj.Status.TrimText()
			if err := admitInstanceStatus(n, &obj, cur); err != nil {
				results[i].Error = err.Error()
				continue
			}
			if err := obj.ValidateStatus(); err != nil {
				results[i].Error = fmt.Sprintf("%s: %v", api.RefOf(&obj), err)
				continue
			}
			txn.SetStatus(cur, raw[i], obj.Status)
		}
		// Background work: it waits behind other batches, not an API
		// client's write (see store.Bulk).
		err = txn.Commit(store.Bulk(ctx))
		switch {
		case err == nil:
			return results, nil
		case errdefs.IsConflict(err) && attempt < 5 && ctx.Err() == nil:
			continue // one changed meanwhile (a controller's write): read again
		}
		return nil, fmt.Errorf("status of node %q's instances: %w", n.Metadata.Name, err)
	}
}

// decodeStatusBatch decodes a node's batch in one strict pass of
// encoding/json; a body that pass refuses is decoded again by
// api.DecodeStrict, for the error naming the field. DecodeStrict's own
// first pass, into a generic tree to check every field, was a fifth of
// what a batch cost the server, for bodies that agents write right.
func decodeStatusBatch(b []byte, batch *api.StatusBatch) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(batch); err == nil && !dec.More() {
		return nil
	}
	*batch = api.StatusBatch{}
	return api.DecodeStrict(b, batch)
}
