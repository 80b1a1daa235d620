package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// sealName is the associated data a secret's data is sealed under: a
// sealed value moved to another secret's key does not open.
func sealName(namespace, name string) string { return "secret/" + namespace + "/" + name }

// prepareData turns a config's or secret's data into what is stored: a
// config gets its digest; a secret's data is sealed, and only its keys,
// their sizes and a keyed digest stay readable.
func (s *Server) prepareData(obj api.Object) error {
	switch x := obj.(type) {
	case *api.Config:
		x.Digest = api.ConfigDigest(x.Data)
	case *api.Secret:
		if s.sealKey == nil {
			return fmt.Errorf("%s: %w: this server has no seal key to keep secrets with", api.RefOf(x), errdefs.ErrFailedPrecondition)
		}
		plain := api.EncodeData(x.Data)
		name := sealName(x.Metadata.Namespace, x.Metadata.Name)
		sealed, err := s.sealKey.Seal(name, plain)
		if err != nil {
			return fmt.Errorf("%s: %w", api.RefOf(x), err)
		}
		x.Keys = map[string]int{}
		for k, v := range x.Data {
			x.Keys[k] = len(v)
		}
		x.Sealed, x.Digest, x.Data = string(sealed), s.sealKey.Digest(name, plain), nil
	}
	return nil
}

// redact drops what a secret must never show through the API.
func redact(obj api.Object) {
	if x, ok := obj.(*api.Secret); ok {
		x.Sealed, x.Data = "", nil
	}
}

// dataDigest is the digest of the stored config or secret t names; empty
// when there is none.
func (s *Server) dataDigest(ctx context.Context, t target) string {
	return s.store.DataDigest(ctx, t.namespace, api.ObjectRef{Kind: t.kind, Name: t.name})
}

// templateDataDigest is the digest of the configs and secrets tpl reads
// in namespace, as stored now (api.Template.DataDigest).
func (s *Server) templateDataDigest(ctx context.Context, namespace string, tpl *api.Template) string {
	return tpl.DataDigest(func(r api.ObjectRef) string {
		return s.dataDigest(ctx, target{kind: r.Kind, namespace: namespace, name: r.Name})
	})
}

// keepDataDigest gives an applied service the data digest it was last
// rolled for (a new one: the data's now), so an apply neither rolls it
// nor swallows a roll the controller has yet to make.
func (s *Server) keepDataDigest(ctx context.Context, svc *api.Service, cur api.Object) {
	if c, ok := cur.(*api.Service); ok && c != nil {
		svc.Spec.DataDigest = c.Spec.DataDigest
		return
	}
	svc.Spec.DataDigest = ""
	if svc.Spec.RollOnChange {
		svc.Spec.DataDigest = s.templateDataDigest(ctx, svc.Metadata.Namespace, &svc.Spec.Template)
	}
}

// rollUsers rolls the services of the namespace that use the changed
// config or secret and ask for it (rollOnChange), as a restart does. The
// controller makes the same roll (api.ServiceSpec.RollForData) when this
// one is missed; whichever comes first, the service rolls once.
func (s *Server) rollUsers(ctx context.Context, t target) error {
	svcs, _, err := store.List[api.Service](ctx, s.store, t.namespace)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	for _, svc := range svcs {
		if !svc.Spec.RollOnChange || !svc.Spec.Template.UsesData(t.kind, t.name) {
			continue
		}
		st := target{kind: api.KindService, namespace: t.namespace, name: svc.Metadata.Name}
		rolled := false
		if _, err := s.modify(ctx, st, 0, func(o api.Object) {
			spec := &o.(*api.Service).Spec
			rolled = spec.RollForData(s.templateDataDigest(ctx, t.namespace, &spec.Template), now)
		}); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("roll %s after its %s changed: %w", st.ref(), t.ref(), err)
		}
		if rolled {
			s.log.Info("rolled for changed data", "service", st.ref(), "data", t.ref())
		}
	}
	return nil
}

// instanceData answers GET .../instances/{name}/data: the files and env
// the instance's template takes from configs and secrets, for its node.
func (s *Server) instanceData(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var in api.Instance
	if err := s.store.GetInto(r.Context(), &in, t.namespace, t.name); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.resolveData(r.Context(), t.namespace, in.Spec.FillTemplate())
	if err != nil {
		writeError(w, fmt.Errorf("%s: %w", t.ref(), err))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) resolveData(ctx context.Context, namespace string, tpl *api.Template) (*api.InstanceData, error) {
	cache := map[string]map[string][]byte{}
	read := func(config, secret string) (map[string][]byte, string, error) {
		kind, name := api.KindConfig, config
		if secret != "" {
			kind, name = api.KindSecret, secret
		}
		ref := api.Ref(kind, namespace, name)
		if d, ok := cache[ref]; ok {
			return d, ref, nil
		}
		var data map[string][]byte
		if kind == api.KindConfig {
			var c api.Config
			if err := s.store.GetInto(ctx, &c, namespace, name); err != nil {
				return nil, ref, err
			}
			data = c.Data
		} else {
			var err error
			if data, err = s.openSecret(ctx, namespace, name, ""); err != nil {
				return nil, ref, err
			}
		}
		cache[ref] = data
		return data, ref, nil
	}
	out := &api.InstanceData{}
	// Registry credentials go to a node only when it pulls from the
	// registry itself; through the servers it needs none.
	if len(tpl.ImagePullSecrets) > 0 {
		rs, err := s.registrySettings(ctx)
		if err != nil {
			return nil, err
		}
		if rs.AgentsPullDirect {
			if out.RegistryAuth, err = s.registryAuth(ctx, namespace, tpl); err != nil {
				return nil, err
			}
		}
	}
	for i, f := range tpl.Files {
		data, ref, err := read(f.Config, f.Secret)
		if err != nil {
			return nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		key := f.Key
		if key == "" {
			if len(data) != 1 {
				return nil, fmt.Errorf("files[%d]: %w: %s holds %d keys: name one with key", i, errdefs.ErrFailedPrecondition, ref, len(data))
			}
			for k := range data {
				key = k
			}
		}
		v, ok := data[key]
		if !ok {
			return nil, fmt.Errorf("files[%d]: %w: %s has no key %q", i, errdefs.ErrNotFound, ref, key)
		}
		out.Files = append(out.Files, api.FileData{Path: f.Path, Mode: f.FileMode(), Data: v})
	}
	for i, e := range tpl.EnvFrom {
		data, _, err := read(e.Config, e.Secret)
		if err != nil {
			return nil, fmt.Errorf("envFrom[%d]: %w", i, err)
		}
		if out.Env == nil {
			out.Env = map[string]string{}
		}
		for k, v := range data {
			out.Env[k] = string(v)
		}
	}
	return out, nil
}

// triggerCronJob starts a run of a cron job now, whatever its schedule
// and concurrency say (as a user asked), and answers its job.
func (s *Server) triggerCronJob(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var cj api.CronJob
	if err := s.store.GetInto(r.Context(), &cj, t.namespace, t.name); err != nil {
		writeError(w, err)
		return
	}
	job := cj.RunJob("m" + strconv.FormatInt(time.Now().UnixMilli(), 36))
	if err := s.Admit(r.Context(), job); err != nil {
		writeError(w, fmt.Errorf("trigger %s: %w", t.ref(), err))
		return
	}
	if err := s.store.Create(r.Context(), job); err != nil {
		writeError(w, fmt.Errorf("trigger %s: %w", t.ref(), err))
		return
	}
	writeJSON(w, http.StatusCreated, job)
}

// Admit runs on obj the checks a write of it passes at the API, and
// what the write then does to it: its validation (with the admission
// limits), the cluster's rules on volumes, and its images pinned to
// digests (pinImage). The controller runs it on each job a cron job
// starts, which reaches the store without a request of its own: the
// limits and rules in force at the run, not only at the cron job's
// creation, apply, and each run runs the images its tags name then.
func (s *Server) Admit(ctx context.Context, obj api.Object) error {
	m := obj.GetMetadata()
	if err := obj.Validate(); err != nil {
		return wireError(target{kind: obj.GetKind(), namespace: m.Namespace, name: m.Name}, err)
	}
	if err := s.admitVolumes(ctx, obj); err != nil {
		return err
	}
	warning, err := s.pinImage(ctx, obj)
	if warning != "" {
		// A run whose pull secret is missing still runs, unpinned.
		s.objectEvent(ctx, obj, api.EventWarning, "PullSecretMissing", warning)
	}
	return err
}
