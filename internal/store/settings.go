package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api/errdefs"
)

// Settings are cluster-wide values users set through the API (the
// registry settings, say), kept as JSON under <prefix>/cluster/settings/
// NAME. Unlike shared values they change while servers run, so readers
// follow them with WatchSetting.

func (s *Store) settingKey(name string) string { return s.clusterKey("settings/" + name) }

// Setting returns the setting called name and the revision it was last
// written at; nil and 0 when it was never set.
func (s *Store) Setting(ctx context.Context, name string) ([]byte, int64, error) {
	r, err := s.client.Get(ctx, s.settingKey(name))
	if err != nil {
		return nil, 0, fmt.Errorf("setting %q: %w", name, wrapEtcd(err))
	}
	if len(r.Kvs) == 0 {
		return nil, 0, nil
	}
	return r.Kvs[0].Value, r.Kvs[0].ModRevision, nil
}

// PutSetting writes the setting called name. A non-zero expectRevision
// must be the revision it was last written at, or the write fails with
// errdefs.ErrConflict. It returns the new revision.
func (s *Store) PutSetting(ctx context.Context, name string, v []byte, expectRevision int64) (int64, error) {
	key := s.settingKey(name)
	txn := s.client.Txn(ctx)
	if expectRevision != 0 {
		txn = txn.If(clientv3.Compare(clientv3.ModRevision(key), "=", expectRevision))
	}
	r, err := txn.Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return 0, fmt.Errorf("setting %q: %w", name, wrapEtcd(err))
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("setting %q: %w: changed since revision %d", name, errdefs.ErrConflict, expectRevision)
	}
	s.noteWrite(r.Header.Revision)
	return r.Header.Revision, nil
}

// WatchSetting calls fn with the setting called name now (nil when
// unset) and again after every change, until ctx ends. A broken watch
// is re-established from a fresh read, so fn sees the latest value
// whatever it missed.
func (s *Store) WatchSetting(ctx context.Context, name string, fn func(v []byte, rev int64)) {
	key := s.settingKey(name)
	for ctx.Err() == nil {
		r, err := s.client.Get(ctx, key)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if len(r.Kvs) == 0 {
			fn(nil, 0)
		} else {
			fn(r.Kvs[0].Value, r.Kvs[0].ModRevision)
		}
		wch := s.client.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(r.Header.Revision+1))
		for resp := range wch {
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					fn(nil, ev.Kv.ModRevision)
				} else {
					fn(ev.Kv.Value, ev.Kv.ModRevision)
				}
			}
		}
	}
}

// SeedSetting writes the setting called name unless it was ever written,
// reporting whether it did: servers starting together seed it once.
func (s *Store) SeedSetting(ctx context.Context, name string, v []byte) (bool, error) {
	key := s.settingKey(name)
	r, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return false, fmt.Errorf("setting %q: %w", name, wrapEtcd(err))
	}
	if r.Succeeded {
		s.noteWrite(r.Header.Revision)
	}
	return r.Succeeded, nil
}
