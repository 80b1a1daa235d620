package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/store"
)

// privateRepos is where the servers record the repositories pulled with
// pull secrets: <store prefix>/registry-private/<repository>.
func privateRepos(st *store.Store) *registry.PrivateRepos {
	return registry.NewPrivateRepos(st.Client(), strings.TrimSuffix(st.LeaderKey(""), "leader/")+"registry-private/")
}

// seedRegistrySettings writes the registry config's per-registry
// settings as the cluster's, unless the cluster ever had some.
func seedRegistrySettings(ctx context.Context, st *store.Store, cfg *registry.Config, log *slog.Logger) error {
	rs, err := cfg.Settings()
	if err != nil || rs == nil {
		return err
	}
	raw, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	seeded, err := st.SeedSetting(ctx, apiserver.RegistrySettingName, raw)
	if seeded {
		log.Info("seeded the cluster's registry settings from the registry config", "file", cfg.Path(), "registries", len(rs.Registries))
	}
	return err
}

// followRegistrySettings keeps reg pulling under the cluster's registry
// settings as they change in the store (berth registry ...), on top of
// the file's (base), until ctx ends. A cluster that never had settings
// is seeded with the file's per-registry settings first.
func followRegistrySettings(ctx context.Context, st *store.Store, reg *registry.Handler, base *registry.UpstreamOptions, log *slog.Logger) error {
	if err := seedRegistrySettings(ctx, st, base.Config, log); err != nil {
		// The file still applies to this server; the cluster stays unseeded.
		log.Warn("registry settings not seeded from the registry config", "err", err)
	}
	st.WatchSetting(ctx, apiserver.RegistrySettingName, func(raw []byte, rev int64) {
		var rs api.RegistrySettings
		if raw != nil {
			if err := json.Unmarshal(raw, &rs); err != nil {
				log.Error("registry settings unreadable; keeping the last", "revision", rev, "err", err)
				return
			}
		}
		u := *base
		u.Config = base.Config.WithSettings(&rs)
		reg.SetUpstream(&u)
		log.Info("registry settings in use", "revision", rev, "registries", len(rs.Registries))
	})
	return nil
}
