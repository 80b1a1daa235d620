package compose

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/berth-dev/berth/api"
)

// Data is a top-level secret or config of the project as a berth Secret
// or Config. Its value is in Object already when the file gives it inline
// (content:, or environment:, which the loader reads); File names the
// file to read it from otherwise, which the caller does (the translation
// reads no files). An External one is only used: it must exist already,
// and is neither applied nor removed.
type Data struct {
	Object   api.Object
	Key      string
	File     string
	External bool
	// source is the Compose name services refer to it by.
	source string
}

// WithValue is d's object holding value under d's key.
func (d Data) WithValue(value []byte) api.Object {
	switch x := d.Object.(type) {
	case *api.Secret:
		c := *x
		c.Data = map[string][]byte{d.Key: value}
		return &c
	case *api.Config:
		c := *x
		c.Data = map[string][]byte{d.Key: value}
		return &c
	}
	return d.Object
}

// dataKey is the key a value is kept under in its berth object: the
// Compose name, or "value" when the name is not a valid key.
func dataKey(name string) string {
	c := api.Config{Metadata: api.Metadata{Name: "x", Namespace: "x"}, Data: map[string][]byte{name: nil}}
	if c.Validate() != nil {
		return "value"
	}
	return name
}

// topData turns the project's secrets: and configs: into berth objects.
func (t *translator) topData() {
	for _, kind := range []api.Kind{api.KindSecret, api.KindConfig} {
		src := map[string]types.FileObjectConfig{}
		section := "secrets"
		if kind == api.KindSecret {
			for k, v := range t.p.Secrets {
				src[k] = types.FileObjectConfig(v)
			}
		} else {
			section = "configs"
			for k, v := range t.p.Configs {
				src[k] = types.FileObjectConfig(v)
			}
		}
		for _, key := range slices.Sorted(maps.Keys(src)) {
			v := src[key]
			d, ok := t.dataObject(kind, section, key, v)
			if ok {
				t.plan.Data = append(t.plan.Data, d)
			}
		}
	}
}

func (t *translator) dataObject(kind api.Kind, section, key string, v types.FileObjectConfig) (Data, bool) {
	issue := func(sub, reason string) {
		t.plan.Unsupported = append(t.plan.Unsupported, Issue{File: t.raw.firstFile(), Key: section + "." + key + sub, Reason: reason})
	}
	if v.Driver != "" || len(v.DriverOpts) > 0 || v.TemplateDriver != "" {
		issue("", "drivers: berth keeps "+section+" in its own store")
		return Data{}, false
	}
	name := dnsLabel(key)
	if v.External {
		name = dnsLabel(cmp.Or(v.Name, key))
	}
	if err := api.ValidateName(name); err != nil {
		issue("", err.Error())
		return Data{}, false
	}
	meta := api.Metadata{Name: name, Namespace: t.plan.Namespace}
	if !v.External {
		meta.Labels = map[string]string{ProjectLabel: dnsLabel(t.p.Name)}
	}
	d := Data{Key: dataKey(key), File: v.File, External: bool(v.External), source: key}
	if d.External {
		// Its keys are whatever its owner gave it: a file mount then
		// needs it to hold one.
		d.Key = ""
	}
	if kind == api.KindSecret {
		d.Object = &api.Secret{Metadata: meta}
	} else {
		d.Object = &api.Config{Metadata: meta}
	}
	if !d.External && d.File == "" {
		// content:, or environment: as the loader resolved it.
		d.Object = d.WithValue([]byte(v.Content))
	}
	return d, true
}

// files mounts a service's secrets and configs: a secret at
// /run/secrets/NAME unless a target is given, a config at /NAME.
func (t *translator) files(s types.ServiceConfig, tpl *api.Template) {
	type ref struct {
		kind    api.Kind
		section string
		types.FileReferenceConfig
	}
	var refs []ref
	for _, r := range s.Secrets {
		refs = append(refs, ref{api.KindSecret, "secrets", types.FileReferenceConfig(r)})
	}
	for _, r := range s.Configs {
		refs = append(refs, ref{api.KindConfig, "configs", types.FileReferenceConfig(r)})
	}
	count := map[string]int{}
	for _, r := range refs {
		i := count[r.section]
		count[r.section]++
		key := fmt.Sprintf("%s[%d]", r.section, i)
		var d *Data
		for j := range t.plan.Data {
			if x := &t.plan.Data[j]; x.Object.GetKind() == r.kind && x.source == r.Source {
				d = x
			}
		}
		if d == nil {
			t.unsupported(s.Name, key, fmt.Sprintf("%q is not declared under the top-level %s:", r.Source, r.section))
			continue
		}
		if r.UID != "" || r.GID != "" {
			t.unsupported(s.Name, key+".uid", "berth's files belong to root; a mode can make them readable to others")
		}
		target := r.Target
		switch {
		case r.kind == api.KindSecret && target == "":
			target = "/run/secrets/" + r.Source
		case r.kind == api.KindSecret && !path.IsAbs(target):
			target = "/run/secrets/" + target
		case target == "":
			target = "/" + r.Source
		}
		fm := api.FileMount{Key: d.Key, Path: target}
		if r.kind == api.KindSecret {
			fm.Secret = d.Object.GetMetadata().Name
		} else {
			fm.Config = d.Object.GetMetadata().Name
		}
		if r.Mode != nil {
			fm.Mode = int(*r.Mode)
		}
		tpl.Files = append(tpl.Files, fm)
	}
}
