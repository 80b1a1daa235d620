package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/runtime"
)

// An instance with init or sidecar containers shares its tmpfs volumes
// among them, as it shares its named ones: each is one tmpfs the agent
// mounts on the node when the first of its containers starts, bound into
// every one of them, and unmounted once the instance has no container
// left. A lone container's tmpfs stays its own mount, empty at each
// start.

// podVolumesDir is where an instance's shared tmpfs volumes are mounted,
// under its network attachment's id (podNetID): beside the runtime's
// containers, under a name the runtime does not list.
func (a *Agent) podVolumesDir(net string) string {
	return filepath.Join(a.cfg.Runtime.Root(), ".pod-volumes", net)
}

// sharedTmpfs reports whether inst's tmpfs volumes are shared mounts of
// the node: it has members, on a real runtime (a simulated one mounts
// nothing).
func (a *Agent) sharedTmpfs(inst *Instance) bool {
	_, real := a.cfg.Runtime.(*runtime.Runtime)
	return real && len(inst.Members) > 0
}

// podTmpfsMount mounts inst's i-th volume, a tmpfs of size bytes, on the
// node unless it is mounted already, and returns the bind of it into a
// container at path.
func (a *Agent) podTmpfsMount(inst *Instance, i int, size int64, path string) (specs.Mount, error) {
	dir := filepath.Join(a.podVolumesDir(podNetID(inst)), strconv.Itoa(i))
	a.podMu.Lock()
	defer a.podMu.Unlock()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return specs.Mount{}, fmt.Errorf("tmpfs volume at %s: %w", path, err)
		}
		opts := "mode=1777,size=" + strconv.FormatInt(size, 10)
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return specs.Mount{}, fmt.Errorf("tmpfs volume at %s: mount on %s: %w", path, dir, err)
		}
	}
	return specs.Mount{Destination: path, Type: "bind", Source: dir, Options: []string{"rbind", "nosuid", "nodev"}}, nil
}

// releasePodVolumes unmounts and removes the shared tmpfs volumes of the
// instance attached as net once no container of it is left (except
// names one about to go), and reports whether none is left mounted.
func (a *Agent) releasePodVolumes(net, except string) bool {
	if net == "" {
		return true
	}
	for id, st := range a.containers {
		if id != except && st.Labels[labelNet] == net {
			return false
		}
	}
	dir := a.podVolumesDir(net)
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return true
	}
	a.podMu.Lock()
	defer a.podMu.Unlock()
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			a.log.Warn("unmount an instance's tmpfs volume", "path", p, "err", err)
			return false
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		a.log.Warn("remove an instance's tmpfs volumes", "path", dir, "err", err)
		return false
	}
	return true
}

// collectPodVolumes releases the shared tmpfs volumes of instances
// without a container left on the node: those of instances removed while
// the agent was down, or whose first container never started.
func (a *Agent) collectPodVolumes() {
	if _, real := a.cfg.Runtime.(*runtime.Runtime); !real {
		return
	}
	ents, _ := os.ReadDir(filepath.Join(a.cfg.Runtime.Root(), ".pod-volumes"))
	for _, e := range ents {
		a.releasePodVolumes(e.Name(), "")
	}
}
