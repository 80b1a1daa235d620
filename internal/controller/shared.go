package controller

import (
	"strings"
	"sync"
	"unique"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// shared holds one copy of what many cached instances have alike: a
// service's instances carry its template, and every instance of an owner
// the same labels. Each decoded instance had its own copy of every map,
// slice and string of them, most of what the cache held per instance,
// and a template of its own, half of an instance's bytes. Sharing is
// safe as passes change no cached object's template, maps and slices
// (see own). Entries are told apart by their stored JSON, so only what
// is equal to the byte is shared.
//
// What is in a table is not decoded again (see decode): a service's
// instances change status a few times each, and decoding the template
// of each change only to drop it for the shared one was most of what
// decoding it cost.
type shared struct {
	mu        sync.Mutex
	templates map[string]*api.Template
	labels    map[string]map[string]string
	scratch   []byte // decode's value with the shared parts cut out
}

// maxShared bounds each table of shared: they start afresh with every
// list of the store, and sooner when templates come and go faster.
const maxShared = 1 << 14

func newShared() *shared {
	return &shared{templates: map[string]*api.Template{}, labels: map[string]map[string]string{}}
}

// decode makes the object of kind stored as value at revision rev (a
// store.Decoder): an instance with the shared copies of its template and
// labels, and the one copy of its common strings.
func (sh *shared) decode(kind api.Kind, value []byte, rev int64) (api.Object, error) {
	if kind != api.KindInstance {
		obj, err := api.New(kind)
		if err != nil {
			return nil, err
		}
		if err := store.Decode(obj, value, rev); err != nil {
			return nil, err
		}
		return obj, nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Looked up without a copy of the JSON: a key is copied only to go
	// into a table.
	// One Get each, as GetMany does, without the slice it allocates.
	js := unsafe.String(unsafe.SliceData(value), len(value))
	labelsRaw, tmplRaw := gjson.Get(js, "metadata.labels"), gjson.Get(js, "spec.template")
	// A job's instances differ by their index in the environment: their
	// templates are alike to no other, and would only fill the table.
	if gjson.Get(js, "spec.owner.kind").String() != string(api.KindService) {
		tmplRaw = gjson.Result{}
	}
	labels, haveLabels := sh.labels[labelsRaw.Raw]
	haveLabels = haveLabels && labelsRaw.Raw != ""
	tmpl, haveTmpl := sh.templates[tmplRaw.Raw]
	haveTmpl = haveTmpl && tmplRaw.Raw != ""
	var cutAt [2]gjson.Result
	cut := cutAt[:0]
	if haveLabels {
		cut = append(cut, labelsRaw)
	}
	if haveTmpl {
		cut = append(cut, tmplRaw)
	}
	in := new(api.Instance)
	if err := store.Decode(in, sh.without(value, cut), rev); err != nil {
		return nil, err
	}
	if haveLabels {
		in.Metadata.Labels = labels
	} else {
		keepShared(sh.labels, labelsRaw.Raw, in.Metadata.Labels)
	}
	if haveTmpl {
		in.Spec.Template = tmpl
	} else {
		keepShared(sh.templates, tmplRaw.Raw, in.Spec.FillTemplate()) // as the store's reads give it
	}
	md, sp := &in.Metadata, &in.Spec
	md.Namespace = unique.Make(md.Namespace).Value()
	sp.Owner.Name, sp.Owner.UID = unique.Make(sp.Owner.Name).Value(), unique.Make(sp.Owner.UID).Value()
	sp.Node, sp.SpecHash = unique.Make(sp.Node).Value(), unique.Make(sp.SpecHash).Value()
	in.Status.Phase = api.Phase(unique.Make(string(in.Status.Phase)).Value())
	return in, nil
}

// without is value with each of cut (found in it, in any order) made
// null, which leaves the field it was as it is when decoded; in
// sh.scratch, which holds it until the next call. value itself when
// there is nothing to cut or a place is not where cut says.
func (sh *shared) without(value []byte, cut []gjson.Result) []byte {
	if len(cut) == 0 {
		return value
	}
	if len(cut) == 2 && cut[1].Index < cut[0].Index {
		cut[0], cut[1] = cut[1], cut[0]
	}
	out, at := sh.scratch[:0], 0
	for _, c := range cut {
		end := c.Index + len(c.Raw)
		if c.Index < at || end > len(value) || string(value[c.Index:end]) != c.Raw {
			return value // no index, or overlapping: decode it all
		}
		out = append(append(out, value[at:c.Index]...), "null"...)
		at = end
	}
	out = append(out, value[at:]...)
	sh.scratch = out
	return out
}

// keepShared puts v in table under the JSON it was decoded from, unless
// that is empty; a full table starts afresh.
func keepShared[T any](table map[string]T, raw string, v T) {
	if raw == "" {
		return
	}
	if len(table) >= maxShared {
		clear(table)
	}
	table[strings.Clone(raw)] = v
}
