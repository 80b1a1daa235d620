package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// RegistrySettingName is the store setting the cluster's registry
// settings (api.RegistrySettings) are kept under.
const RegistrySettingName = "registry"

// getRegistrySettings answers GET /v1/registry: the cluster's registry
// settings (empty when never set). Nodes read them too: they hold no
// credentials, and an agent that pulls directly needs them.
func (s *Server) getRegistrySettings(w http.ResponseWriter, r *http.Request) {
	rs, err := s.registrySettings(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rs)
}

func (s *Server) registrySettings(ctx context.Context) (*api.RegistrySettings, error) {
	raw, rev, err := s.store.Setting(ctx, RegistrySettingName)
	if err != nil {
		return nil, err
	}
	rs := &api.RegistrySettings{}
	if raw != nil {
		if err := json.Unmarshal(raw, rs); err != nil {
			return nil, fmt.Errorf("registry settings: %w", err)
		}
	}
	rs.Revision = rev
	return rs, nil
}

// putRegistrySettings answers PUT /v1/registry (admins): replace the
// settings, with the usual revision precondition (If-Match or the body's
// revision).
func (s *Server) putRegistrySettings(w http.ResponseWriter, r *http.Request) {
	b, err := s.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var rs api.RegistrySettings
	if err := api.DecodeStrict(b, &rs); err != nil {
		writeError(w, fmt.Errorf("registry settings: %w", err))
		return
	}
	if err := rs.Validate(); err != nil {
		writeError(w, err)
		return
	}
	rev, err := precondition(r, nil)
	if err != nil {
		writeError(w, err)
		return
	}
	if rev == 0 {
		rev = rs.Revision
	}
	rs.Revision = 0
	raw, err := json.Marshal(&rs)
	if err != nil {
		writeError(w, err)
		return
	}
	if rs.Revision, err = s.store.PutSetting(r.Context(), RegistrySettingName, raw, rev); err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("registry settings changed", "registries", len(rs.Registries), "agentsPullDirect", rs.AgentsPullDirect)
	writeJSON(w, http.StatusOK, &rs)
}

// registryAuth reads the registry-auth secrets a template names in
// namespace and merges their credentials, the first naming a registry
// winning; nil when it names none.
func (s *Server) registryAuth(ctx context.Context, namespace string, tpl *api.Template) (*api.RegistryAuth, error) {
	if len(tpl.ImagePullSecrets) == 0 {
		return nil, nil
	}
	out := &api.RegistryAuth{Auths: map[string]api.RegistryAuthEntry{}}
	for i, name := range tpl.ImagePullSecrets {
		data, err := s.openSecret(ctx, namespace, name, api.SecretTypeRegistryAuth)
		if err != nil {
			return nil, fmt.Errorf("imagePullSecrets[%d]: %w", i, err)
		}
		ra, err := api.ParseRegistryAuth(data[api.RegistryAuthKey])
		if err != nil {
			return nil, fmt.Errorf("imagePullSecrets[%d]: %s: %w: %w", i, api.Ref(api.KindSecret, namespace, name), err, errdefs.ErrInvalidArgument)
		}
		for host, e := range ra.Auths {
			if _, ok := out.Auths[host]; !ok {
				out.Auths[host] = e
			}
		}
	}
	return out, nil
}

// openSecret reads and opens the secret namespace/name, which must be of
// type typ unless typ is empty.
func (s *Server) openSecret(ctx context.Context, namespace, name, typ string) (map[string][]byte, error) {
	ref := api.Ref(api.KindSecret, namespace, name)
	var sec api.Secret
	if err := s.store.GetInto(ctx, &sec, namespace, name); err != nil {
		return nil, err
	}
	if typ != "" && sec.Type != typ {
		return nil, fmt.Errorf("%s: %w: its type is %q, want %q", ref, errdefs.ErrFailedPrecondition, sec.Type, typ)
	}
	if s.sealKey == nil {
		return nil, fmt.Errorf("%s: %w: this server has no seal key", ref, errdefs.ErrFailedPrecondition)
	}
	plain, err := s.sealKey.Open(sealName(namespace, name), []byte(sec.Sealed))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	data, err := api.DecodeData(plain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return data, nil
}
