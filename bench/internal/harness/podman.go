package harness

import (
	"fmt"
	"os/exec"
	"strings"
)

// PodmanRunArgs are the arguments podman run needs on these machines
// (FIELD-NOTES): runc, as podman's crun refuses the hybrid cgroup layout,
// and rlimits below this process's hard limits, as podman's defaults can
// exceed them and runc's init then fails with EPERM.
var PodmanRunArgs = []string{"--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

// PodmanImport imports the root filesystem rootfs as podman's image ref.
func PodmanImport(rootfs, ref string) error {
	tar := exec.Command("tar", "-C", rootfs, "-c", ".")
	imp := exec.Command("podman", "import", "-q", "-", ref)
	var err error
	if imp.Stdin, err = tar.StdoutPipe(); err != nil {
		return err
	}
	if err := tar.Start(); err != nil {
		return fmt.Errorf("tar %s: %w", rootfs, err)
	}
	out, err := imp.CombinedOutput()
	if terr := tar.Wait(); err == nil && terr != nil {
		return fmt.Errorf("tar %s: %w", rootfs, terr)
	}
	if err != nil {
		return fmt.Errorf("podman import %s: %w: %s", ref, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Run runs a command; its error carries the output.
func Run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
