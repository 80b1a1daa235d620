package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// DataSource gives the files and env an instance takes from configs and
// secrets; the API gives them only to the instance's own node.
type DataSource interface {
	InstanceData(ctx context.Context, namespace, name string) (*api.InstanceData, error)
}

// dataDir is where the data files of container id live while it runs.
func (a *Agent) dataDir(id string) string { return filepath.Join(a.cfg.DataDir, id) }

// ensureDataTmpfs mounts a tmpfs on DataDir unless one is there: secret
// values must never reach the node's disk.
func (a *Agent) ensureDataTmpfs() error {
	dir := a.cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		return nil
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// dataMounts reads the instance's configs and secrets, writes its files
// to the data tmpfs and binds them read-only into the container. It
// returns the variables of its envFrom.
func (a *Agent) dataMounts(ctx context.Context, inst *Instance, id string, c *runtime.Config) ([]string, error) {
	if !inst.NeedsData {
		return nil, nil
	}
	ds, ok := a.cfg.ControlPlane.(DataSource)
	if !ok || a.cfg.DataDir == "" {
		return nil, fmt.Errorf("configs and secrets: this node keeps none")
	}
	data, err := ds.InstanceData(ctx, inst.Namespace, inst.Name)
	if err != nil {
		return nil, fmt.Errorf("configs and secrets: %w", err)
	}
	if len(data.Files) > 0 {
		if err := a.ensureDataTmpfs(); err != nil {
			return nil, err
		}
		dir := a.dataDir(id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		for i, f := range data.Files {
			src := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(src, f.Data, 0o600); err != nil {
				return nil, fmt.Errorf("file %s: %w", f.Path, err)
			}
			// Chmod, not WriteFile's mode: the umask would take bits off.
			if err := os.Chmod(src, os.FileMode(f.Mode)); err != nil {
				return nil, fmt.Errorf("file %s: %w", f.Path, err)
			}
			// idmap: in a user namespace the container's root reads the file as the host's root would.
			c.Mounts = append(c.Mounts, specs.Mount{Destination: f.Path, Type: "bind", Source: src,
				Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "idmap"}})
		}
	}
	set := map[string]bool{}
	for _, e := range inst.Env {
		k, _, _ := strings.Cut(e, "=")
		set[k] = true
	}
	var env []string
	for k, v := range data.Env {
		if !set[k] { // the template's own env wins
			env = append(env, k+"="+v)
		}
	}
	return env, nil
}

// collectData removes the data files of containers that no longer run:
// they are written again at each start.
func (a *Agent) collectData() {
	if a.cfg.DataDir == "" {
		return
	}
	ents, err := os.ReadDir(a.cfg.DataDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		st, ok := a.containers[e.Name()]
		if ok && (st.State == runtime.Running || st.State == runtime.Created) && !a.stopping[e.Name()] {
			continue
		}
		if err := os.RemoveAll(a.dataDir(e.Name())); err != nil {
			a.log.Warn("remove data files", "container", e.Name(), "err", err)
		}
	}
}
