package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// labelVolumes lists the named volumes a container mounts (comma
// separated): their data is kept while any container of the node names them.
const labelVolumes = "berth.volumes"

// Volume is a mount an instance asks for: exactly one of Name (a named
// volume), HostPath and TmpfsSize is set.
type Volume struct {
	Name      string
	HostPath  string
	TmpfsSize int64
	Path      string
	ReadOnly  bool
}

// VolumeStore is where the node's named volumes are recorded: the agent
// records one when an instance first uses it, and deletes the data of
// those removed there (once no container uses them).
type VolumeStore interface {
	// EnsureVolume records volume namespace/name as held by node at path,
	// unless it is already; a volume held by another node is an error.
	EnsureVolume(ctx context.Context, namespace, name, node, path string) error
	// NodeVolumes lists the volumes recorded for node, as "namespace/name".
	NodeVolumes(ctx context.Context, node string) (map[string]bool, error)
}

// volumeDir is where a named volume's data lives on the node.
func (a *Agent) volumeDir(namespace, name string) string {
	return filepath.Join(a.cfg.VolumesDir, namespace, name)
}

// volumeMounts turns an instance's volumes into the container's mounts,
// making (and recording) its named volumes first.
func (a *Agent) volumeMounts(ctx context.Context, inst *Instance, c *runtime.Config) error {
	var named []string
	for i, v := range inst.Volumes {
		m := specs.Mount{Destination: v.Path}
		switch {
		case v.TmpfsSize > 0 && a.sharedTmpfs(inst):
			var err error
			if m, err = a.podTmpfsMount(inst, i, v.TmpfsSize, v.Path); err != nil {
				return err
			}
		case v.Name != "":
			vs, ok := a.cfg.ControlPlane.(VolumeStore)
			if !ok || a.cfg.VolumesDir == "" {
				return fmt.Errorf("volume %q: this node keeps no named volumes", v.Name)
			}
			dir := a.volumeDir(inst.Namespace, v.Name)
			// Recorded before it is made: a volume on disk is always one the
			// API knows, so its removal there is what deletes it here.
			if err := vs.EnsureVolume(ctx, inst.Namespace, v.Name, a.cfg.Node.Name, dir); err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			named = append(named, v.Name)
			// idmap: a named volume outlives containers of different id
			// ranges; in a user namespace each sees its data as its root's.
			m.Type, m.Source, m.Options = "bind", dir, []string{"rbind", "nosuid", "idmap"}
		case v.HostPath != "":
			src, err := a.hostPathSource(v.HostPath)
			if err != nil {
				return fmt.Errorf("volume at %s: %w", v.Path, err)
			}
			m.Type, m.Source, m.Options = "bind", src, []string{"rbind", "nosuid"}
		case v.TmpfsSize > 0:
			m.Type, m.Source = "tmpfs", "tmpfs"
			m.Options = []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(v.TmpfsSize, 10)}
		default:
			return fmt.Errorf("volume at %s: no name, hostPath or tmpfs", v.Path)
		}
		if v.ReadOnly {
			m.Options = append(m.Options, "ro")
		}
		c.Mounts = append(c.Mounts, m)
	}
	if len(named) > 0 {
		c.Labels[labelVolumes] = strings.Join(named, ",")
	}
	return nil
}

// hostPathSource resolves a hostPath's symlinks on the node and, with
// allowed host paths set, refuses one that then leads outside them. The
// resolved path is what is bound, so a symlink swapped afterwards does
// not redirect the mount.
func (a *Agent) hostPathSource(p string) (string, error) {
	if len(a.cfg.AllowedHostPaths) == 0 {
		return p, nil
	}
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("hostPath %s: %w", p, err)
	}
	var allowed []string
	for _, d := range a.cfg.AllowedHostPaths {
		if r, err := filepath.EvalSymlinks(d); err == nil {
			d = r
		}
		allowed = append(allowed, d)
	}
	if !api.HostPathAllowed(resolved, allowed) {
		return "", fmt.Errorf("hostPath %s leads to %s, outside the allowed host paths (%s)", p, resolved, strings.Join(a.cfg.AllowedHostPaths, ", "))
	}
	return resolved, nil
}

// collectVolumes deletes the data of named volumes removed from the API
// that no container of the node mounts any more. It runs with a full
// resync, and asks the API only when the node has volumes at all.
func (a *Agent) collectVolumes(ctx context.Context) {
	vs, ok := a.cfg.ControlPlane.(VolumeStore)
	if !ok || a.cfg.VolumesDir == "" {
		return
	}
	var local []string
	nss, _ := os.ReadDir(a.cfg.VolumesDir)
	for _, ns := range nss {
		names, _ := os.ReadDir(filepath.Join(a.cfg.VolumesDir, ns.Name()))
		for _, n := range names {
			local = append(local, ns.Name()+"/"+n.Name())
		}
	}
	if len(local) == 0 {
		return
	}
	recorded, err := vs.NodeVolumes(ctx, a.cfg.Node.Name)
	if err != nil {
		a.log.Warn("list volumes", "err", err)
		return
	}
	used := map[string]bool{}
	for _, st := range a.containers {
		ns, _, _ := strings.Cut(st.Labels[labelInstance], "/")
		for n := range strings.SplitSeq(st.Labels[labelVolumes], ",") {
			if n != "" {
				used[ns+"/"+n] = true
			}
		}
	}
	for _, key := range local {
		if recorded[key] || used[key] {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		if err := os.RemoveAll(a.volumeDir(ns, name)); err != nil {
			a.log.Warn("delete removed volume", "volume", key, "err", err)
			continue
		}
		a.log.Info("deleted removed volume", "volume", key)
	}
}
