package runtime

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// criuKdat is where CRIU keeps what it learnt of the running kernel
// (its "kerndat": features probed by making network namespaces, veths,
// sockets and running iptables), so that each dump and restore need not
// probe again. CRIU keeps the file only where /run is a tmpfs, for a
// reboot to drop it; on a host whose /run is on disk it probes on every
// run, 0.3 to 1.5 s before each dump and inside each restore's downtime.
const criuKdat = "/run/criu.kdat"

// primeCRIU makes sure CRIU finds its kernel cache: when the file is
// missing, or older than this boot (a disk-backed /run keeps it across
// reboots, maybe of another kernel), CRIU writes it afresh in a mount
// namespace of its own whose /run is a tmpfs, and it is copied to
// criuKdat, where every CRIU reads it. Once per process; New starts it,
// so a checkpoint or restore seldom waits for it. Failing changes
// nothing: CRIU probes the kernel itself, as before.
var primeCRIU = sync.OnceFunc(func() {
	criu, err := criuPath()
	if err != nil || criuKdatFresh(criuKdat) {
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return
	}
	// criu check fails on some kernels for reasons of its own, after it
	// has written the cache: its status does not matter, the file does.
	out, err := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=1m,mode=0700 tmpfs /run && { "$1" check >/dev/null 2>&1; cat /run/criu.kdat; }`,
		"sh", criu).Output()
	if err != nil || len(out) == 0 {
		return
	}
	tmp := criuKdat + ".berth"
	if os.WriteFile(tmp, out, 0o600) == nil {
		_ = os.Rename(tmp, criuKdat)
	}
	_ = os.Remove(tmp)
})

// criuKdatFresh tells whether CRIU's kernel cache at path was written
// since this boot.
func criuKdatFresh(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return false
	}
	boot, ok := bootTime()
	return ok && fi.ModTime().After(boot)
}

// bootTime is when this host booted (btime in /proc/stat).
func bootTime() (time.Time, bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(s, 0), err == nil
		}
	}
	return time.Time{}, false
}
