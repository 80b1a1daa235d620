package agent

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// Reasons a container is stopped for its disk use, as its instance's
// status reports them.
const (
	// ReasonDiskLimitExceeded: its writable layer grew past its
	// resources.disk.
	ReasonDiskLimitExceeded = "DiskLimitExceeded"
	// ReasonDiskPressure: the node's free space fell below its reserve,
	// and this container's writable layer was the largest.
	ReasonDiskPressure = "DiskPressure"
)

func isDiskReason(r string) bool { return r == ReasonDiskLimitExceeded || r == ReasonDiskPressure }

// DefaultDiskInterval is how often the agent measures writable layers.
const DefaultDiskInterval = time.Second

// DiskReserve is the free space the node keeps on the filesystem of its
// containers' writable layers: a share of the filesystem's size
// (Percent) or a number of bytes. The zero value keeps none.
type DiskReserve struct {
	Bytes   int64
	Percent float64
}

// ParseDiskReserve reads "5%" or a quantity such as "2Gi"; "0" keeps none.
func ParseDiskReserve(s string) (DiskReserve, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f >= 100 {
			return DiskReserve{}, fmt.Errorf("disk reserve %q: want a percentage from 0 to under 100", s)
		}
		return DiskReserve{Percent: f}, nil
	}
	q, err := api.ParseQuantity(s)
	if err != nil || q < 0 {
		return DiskReserve{}, fmt.Errorf("disk reserve %q: want a percentage such as 5%% or a size such as 2Gi", s)
	}
	return DiskReserve{Bytes: int64(q)}, nil
}

// of is the reserve in bytes on a filesystem of size bytes.
func (r DiskReserve) of(size int64) int64 {
	if r.Percent > 0 {
		return int64(float64(size) * r.Percent / 100)
	}
	return r.Bytes
}

func (r DiskReserve) String() string {
	if r.Percent > 0 {
		return strconv.FormatFloat(r.Percent, 'f', -1, 64) + "%"
	}
	return api.Quantity(r.Bytes).String()
}

// diskJob is a running container whose disk use is to be measured: its
// writable layer, and the volumes its instance writes to (volumes).
type diskJob struct {
	id, layer string
	volumes   []string
	limit     int64 // 0: none of its own
}

// instanceVolumes are the directories, as the host reaches them, of what
// an instance writes besides its writable layer: its named volumes and its
// tmpfs volumes (seen through the container's root, /proc/PID/root, as
// they are mounted in its mount namespace only). A hostPath is the host's
// own directory, not the instance's, and is not counted. A named volume
// shared by several instances counts for each.
func (a *Agent) instanceVolumes(inst *Instance, pid int) []string {
	var out []string
	for _, v := range inst.Volumes {
		switch {
		case v.ReadOnly:
		case v.Name != "" && a.cfg.VolumesDir != "":
			out = append(out, a.volumeDir(inst.Namespace, v.Name))
		case v.TmpfsSize > 0 && pid > 0:
			// Followed inside the container's root, where the runtime
			// mounted it: an image's absolute link on the way (/var/run ->
			// /run) walked from here would lead to the host's directory.
			if p, err := securejoin.SecureJoin(fmt.Sprintf("/proc/%d/root", pid), v.Path); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// eviction is a container to stop for its disk use, and why.
type eviction struct {
	id, reason, message string
}

// diskJobs lists the running containers of desired instances that have a
// disk limit, and all of them when the node's free space is under its
// reserve (the only time the largest writer matters). Called by the loop,
// which owns the containers and the evictions. Listing every container
// each second, limit or not, was a fifth of an idle node's CPU. quiet
// says the next check may wait longer: no limit to enforce, and room
// above the reserve.
func (a *Agent) diskJobs() (jobs []diskJob, quiet bool) {
	pressure, roomy := a.reserveRoom()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !pressure && a.diskLimited == 0 {
		// Nothing to measure, so no walk over the containers: with 200
		// of them it was a sixth of an idle berth up's CPU.
		return nil, roomy
	}
	for id, st := range a.containers {
		if st.State != runtime.Running || a.evicted[id].reason != "" {
			continue
		}
		inst := a.desired[st.Labels[labelUID]]
		if inst == nil || (inst.DiskBytes <= 0 && !pressure) {
			continue
		}
		layer, err := a.cfg.Runtime.WritableLayer(id)
		if err != nil {
			continue
		}
		jobs = append(jobs, diskJob{id: id, layer: layer, volumes: a.instanceVolumes(inst, st.Pid), limit: inst.DiskBytes})
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].id < jobs[j].id })
	return jobs, false
}

// diskFillRate is the fastest the agent counts on the node's writers to
// fill its disk, in bytes a second (a fast disk's sequential writes):
// the free space above the reserve must last that long at this rate
// for checks to slow down to it.
const diskFillRate = 1 << 30

// reserveRoom reports whether the free space of the writable layers'
// filesystem is under the node's reserve (a statfs: cheap enough for the
// loop), and whether what is above it would last the longest wait
// between checks at diskFillRate. Unknown counts as under, so that the
// check does its whole work.
func (a *Agent) reserveRoom() (under, roomy bool) {
	if a.cfg.DiskReserve == (DiskReserve{}) {
		return false, true
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(a.cfg.Runtime.Root(), &st); err != nil {
		return true, false
	}
	above := int64(st.Bavail)*st.Bsize - a.cfg.DiskReserve.of(int64(st.Blocks)*st.Bsize)
	return above < 0, float64(above) >= diskFillRate*a.cfg.DiskIdleInterval.Seconds()
}

// checkDisk measures what the loop handed over, off the loop: the
// containers over their own limit, and, when the node's free space is
// under its reserve, the one with the largest writable layer.
func (a *Agent) checkDisk(jobs []diskJob) []eviction {
	var out []eviction
	var st syscall.Statfs_t
	pressure := false
	var free, reserve int64
	if a.cfg.DiskReserve != (DiskReserve{}) {
		if err := syscall.Statfs(a.cfg.Runtime.Root(), &st); err != nil {
			a.log.Warn("free disk space", "dir", a.cfg.Runtime.Root(), "err", err)
		} else {
			free = int64(st.Bavail) * st.Bsize
			reserve = a.cfg.DiskReserve.of(int64(st.Blocks) * st.Bsize)
			pressure = free < reserve
		}
	}
	var largest diskJob
	var largestUse int64 = -1
	for _, j := range jobs {
		if j.limit <= 0 && !pressure {
			continue
		}
		use, err := runtime.DiskUsage(j.layer)
		if err != nil {
			a.log.Warn("disk usage", "container", j.id, "err", err)
			continue
		}
		if j.limit > 0 {
			// The limit covers the volumes too; the node's reserve is about
			// writable layers, which eviction frees (volumes outlive it).
			var vols int64
			for _, v := range j.volumes {
				n, err := runtime.DiskUsage(v)
				if err != nil {
					a.log.Warn("disk usage", "container", j.id, "volume", v, "err", err)
				}
				vols += n
			}
			if use+vols > j.limit {
				out = append(out, eviction{id: j.id, reason: ReasonDiskLimitExceeded,
					message: fmt.Sprintf("its writable layer and volumes use %s (volumes %s), over its limit of %s",
						api.Quantity(use+vols), api.Quantity(vols), api.Quantity(j.limit))})
				continue
			}
		}
		if use > largestUse {
			largest, largestUse = j, use
		}
	}
	if pressure && len(out) == 0 && largestUse >= 0 {
		of := api.Quantity(reserve).String()
		if a.cfg.DiskReserve.Percent > 0 {
			of += " (" + a.cfg.DiskReserve.String() + ")"
		}
		out = append(out, eviction{id: largest.id, reason: ReasonDiskPressure,
			message: fmt.Sprintf("the node's free disk space %s fell below its reserve of %s, and this container's writable layer was the largest, %s",
				api.Quantity(free), of, api.Quantity(largestUse))})
	}
	return out
}

// evict stops the containers the disk check named, at once: a writer
// given a grace period keeps writing.
func (a *Agent) evict(ctx context.Context, evs []eviction) {
	for _, ev := range evs {
		st, ok := a.containers[ev.id]
		if !ok || st.State != runtime.Running || a.evicted[ev.id].reason != "" {
			continue
		}
		a.evicted[ev.id] = ev
		a.log.Warn("evicting", "container", ev.id, "reason", ev.reason, "message", ev.message)
		if err := a.cfg.Runtime.Kill(ctx, ev.id, syscall.SIGKILL); err != nil {
			a.log.Warn("evict container", "container", ev.id, "err", err)
		}
		a.dirty[ev.id] = true
		a.mu.Lock()
		inst := a.desired[st.Labels[labelUID]]
		a.mu.Unlock()
		if rec, ok := a.cfg.ControlPlane.(EventRecorder); ok && inst != nil {
			ns, name, msg := inst.Namespace, inst.Name, "container "+ev.id+" stopped: "+ev.message
			a.wg.Go(func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if err := rec.RecordInstanceEvent(rctx, ns, name, api.EventWarning, ev.reason, msg); err != nil {
					a.log.Warn("record eviction event", "container", ev.id, "err", err)
				}
			})
		}
	}
}
