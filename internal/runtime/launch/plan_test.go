package launch

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

// goDump writes a plan as plan_dump does: what the C stages must read
// back from what MarshalBinary wrote.
func goDump(p *Plan) string {
	var b strings.Builder
	strs := func(name string, v []string) {
		for _, s := range v {
			fmt.Fprintf(&b, "%s %s\n", name, s)
		}
	}
	str := func(name, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s %s\n", name, v)
		}
	}
	flag := func(name string, on bool) {
		if on {
			b.WriteString(name + "\n")
		}
	}
	strs("arg", p.Args)
	strs("env", p.Env)
	strs("extarg", p.ExternalArgs)
	strs("extstart", p.ExternalStart)
	str("pidfile", p.PIDFile)
	str("cwd", p.Cwd)
	str("hostname", p.Hostname)
	str("rootfs", p.Rootfs)
	str("overlay", p.RootfsOverlay)
	str("netns", p.NetNS)
	str("exit", p.ExitPath)
	str("state", p.StatePath)
	str("ctl", p.CtlPath)
	flag("rootfs_ro", p.RootfsReadonly)
	flag("nnp", p.NoNewPrivs)
	flag("hide_unified", p.HideUnified)
	flag("init", p.Init)
	for _, m := range p.Mounts {
		fmt.Fprintf(&b, "mount %d %d [%s] [%s] [%s] [%s]\n", uint64(m.Flags), uint32(m.Kind), m.Source, m.Target, m.FSType, m.Data)
	}
	strs("mask", p.Masked)
	strs("ro", p.Readonly)
	strs("sysctl", p.Sysctls)
	for _, r := range p.Rlimits {
		fmt.Fprintf(&b, "rlimit %d %d %d\n", r.Resource, r.Soft, r.Hard)
	}
	strs("cgroup", p.Cgroups)
	if p.NSFlags != 0 {
		fmt.Fprintf(&b, "nsflags %d\n", p.NSFlags)
	}
	if len(p.Seccomp) > 0 {
		fmt.Fprintf(&b, "seccomp %s\n", hex.EncodeToString(p.Seccomp))
	}
	if c := p.Caps; c != nil {
		fmt.Fprintf(&b, "caps %x %x %x %x %x\n", c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient)
	}
	if u := p.User; u != nil {
		fmt.Fprintf(&b, "user %d %d", u.UID, u.GID)
		for _, g := range u.AdditionalGIDs {
			fmt.Fprintf(&b, " %d", g)
		}
		b.WriteString("\n")
	}
	if p.OOMScoreAdj != nil {
		fmt.Fprintf(&b, "oom %d\n", *p.OOMScoreAdj)
	}
	if p.Log.Path != "" {
		fmt.Fprintf(&b, "log %d %d %s\n", p.Log.MaxSize, p.Log.MaxFiles, p.Log.Path)
	}
	if p.PID > 0 {
		fmt.Fprintf(&b, "pid %d\n", p.PID)
	}
	if u := p.UserNS; u != nil {
		fmt.Fprintf(&b, "userns %d %d %d\n", u.UID, u.GID, u.Size)
	}
	return b.String()
}

// roundTrip encodes p in Go, reads it back with the C reader and compares.
func roundTrip(t *testing.T, p *Plan) {
	t.Helper()
	raw, err := p.MarshalBinary()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	got, err := decodeInC(raw)
	if err != nil {
		t.Fatalf("the C reader refused what Go wrote: %v", err)
	}
	if want := goDump(p); got != want {
		t.Fatalf("the C reader read another plan than Go wrote:\nC:\n%s\nGo:\n%s", got, want)
	}
}

// fullPlan sets every field, so every record type goes through.
func fullPlan(r *rand.Rand) *Plan {
	s := func(prefix string) string { return fmt.Sprintf("%s-%x", prefix, r.Uint64()) }
	oom := int32(r.IntN(2001) - 1000)
	return &Plan{
		Args: []string{s("sh"), "-c", "echo ünïcode\nline"}, Env: []string{"PATH=/bin", s("K") + "=v"},
		Cwd: s("/cwd"), Hostname: s("host"), Rootfs: s("/rootfs"), RootfsOverlay: "lowerdir=/a:/b,upperdir=/u,workdir=/w",
		RootfsReadonly: true,
		Mounts: []Mount{
			{Kind: MountFS, Source: "proc", Target: "/proc", FSType: "proc", Flags: uintptr(r.Uint32())},
			{Kind: MountBind, Source: s("/src"), Target: "/dst", Flags: uintptr(r.Uint64())},
			{Kind: MountBindFile, Source: s("/f"), Target: "/etc/hosts", Data: "mode=755"},
			{}, // all empty strings
		},
		Masked: []string{"/proc/kcore", s("/m")}, Readonly: []string{"/proc/sys"}, Sysctls: []string{"net.ipv4.ip_forward=1"},
		Rlimits: []Rlimit{{Resource: 7, Soft: 1024, Hard: r.Uint64()}, {Resource: 6, Soft: ^uint64(0), Hard: ^uint64(0)}},
		Cgroups: []string{"/sys/fs/cgroup/memory/x/cgroup.procs", s("/cg")}, NetNS: s("/run/netns/n"),
		NSFlags: r.Uint64() | 1, Seccomp: []byte{1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0, 0, 0, 0, 0, 0, 0x7f},
		Caps:       &Caps{Bounding: r.Uint64(), Effective: r.Uint64(), Permitted: r.Uint64(), Inheritable: r.Uint64(), Ambient: r.Uint64()},
		User:       &User{UID: r.Uint32(), GID: r.Uint32(), AdditionalGIDs: []uint32{r.Uint32(), 0, 65534}},
		NoNewPrivs: true, OOMScoreAdj: &oom, Init: true,
		Log:          Log{Path: s("/log"), MaxSize: r.Uint64(), MaxFiles: r.Uint32()},
		ExternalArgs: []string{"/usr/sbin/runc", "create", s("id")}, ExternalStart: []string{"/usr/sbin/runc", "start"},
		PIDFile: s("/pid"), HideUnified: true, ExitPath: s("/exit"), StatePath: s("/state"), CtlPath: s("/ctl"),
		PID: r.IntN(1 << 22), UserNS: &UserNS{UID: r.Uint32(), GID: r.Uint32(), Size: r.Uint32()},
	}
}

func TestPlanRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2)) // seeded: a failure repeats
	for range 50 {
		roundTrip(t, fullPlan(r))
	}
	roundTrip(t, &Plan{})
	roundTrip(t, &Plan{Args: []string{"true"}, User: &User{}, Caps: &Caps{}})
}

// At each list's limit the C reader still takes the plan; one more, and
// Go refuses to write it rather than hand the stages a plan they reject.
func TestPlanLimits(t *testing.T) {
	items := func(n int) []string { return strings.Split(strings.Repeat("x,", n)[:2*n-1], ",") }
	for _, tc := range []struct {
		name string
		set  func(p *Plan, n int)
		max  int
	}{
		{"args", func(p *Plan, n int) { p.Args = items(n) }, maxItems - 1},
		{"env", func(p *Plan, n int) { p.Env = items(n) }, maxItems},
		{"external args", func(p *Plan, n int) { p.ExternalArgs = items(n) }, maxItems - 1},
		{"external start", func(p *Plan, n int) { p.ExternalStart = items(n) }, maxItems - 1},
		{"mounts", func(p *Plan, n int) { p.Mounts = make([]Mount, n) }, maxItems},
		{"masked", func(p *Plan, n int) { p.Masked = items(n) }, maxItems},
		{"readonly", func(p *Plan, n int) { p.Readonly = items(n) }, maxItems},
		{"sysctls", func(p *Plan, n int) { p.Sysctls = items(n) }, maxItems},
		{"rlimits", func(p *Plan, n int) { p.Rlimits = make([]Rlimit, n) }, maxRlimits},
		{"cgroups", func(p *Plan, n int) { p.Cgroups = items(n) }, maxCgroups},
		{"gids", func(p *Plan, n int) { p.User = &User{AdditionalGIDs: make([]uint32, n)} }, maxGIDs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plan{}
			tc.set(p, tc.max)
			roundTrip(t, p)
			tc.set(p, tc.max+1)
			if _, err := p.MarshalBinary(); err == nil {
				t.Errorf("%d %s encoded, over the C reader's limit of %d", tc.max+1, tc.name, tc.max)
			}
		})
	}
	if _, err := (&Plan{Seccomp: make([]byte, 12)}).MarshalBinary(); err == nil {
		t.Error("a seccomp program of 12 bytes (not whole instructions) encoded")
	}
	if _, err := (&Plan{Args: []string{"a\x00b"}}).MarshalBinary(); err == nil {
		t.Error("an argument with a NUL byte encoded")
	}
}

// FuzzPlanRoundTrip: whatever Go encodes, the C reader reads back the same.
func FuzzPlanRoundTrip(f *testing.F) {
	f.Add("sh", "PATH=/bin", "/src", "/dst", "tmpfs", "size=1m", uint64(0x4000), uint32(1), uint32(0), []byte{1, 2, 3, 4, 5, 6, 7, 8}, int32(-500), 42)
	f.Add("", "", "", "", "", "", uint64(0), uint32(0), uint32(65534), []byte{}, int32(0), 0)
	f.Add("ä\n\t", "=", "/a b", "/c\\d", "x", "a,b,c", ^uint64(0), ^uint32(0), ^uint32(0), make([]byte, 16), int32(1000), 1<<30)
	f.Fuzz(func(t *testing.T, arg, env, src, dst, fstype, data string, flags uint64, kind, uid uint32, seccomp []byte, oom int32, pid int) {
		if len(seccomp)%8 != 0 {
			seccomp = seccomp[:len(seccomp)/8*8]
		}
		p := &Plan{
			Args: []string{arg, arg + "x"}, Env: []string{env}, Cwd: dst, Hostname: arg,
			Mounts: []Mount{{Kind: MountKind(kind), Source: src, Target: dst, FSType: fstype, Data: data, Flags: uintptr(flags)}},
			Masked: []string{src}, Sysctls: []string{data}, Rlimits: []Rlimit{{Resource: kind, Soft: flags, Hard: ^flags}},
			Cgroups: []string{dst}, NSFlags: flags, Seccomp: seccomp, OOMScoreAdj: &oom,
			User: &User{UID: uid, GID: kind, AdditionalGIDs: []uint32{uid, kind}},
			Log:  Log{Path: src, MaxSize: flags, MaxFiles: uid}, PID: pid,
		}
		raw, err := p.MarshalBinary()
		if err != nil {
			// Only what cannot be written is refused: a NUL byte, a pid out of range.
			if !strings.ContainsRune(arg+env+src+dst+fstype+data, 0) && pid <= 1<<31-1 {
				t.Fatalf("encode refused a writable plan: %v", err)
			}
			return
		}
		got, err := decodeInC(raw)
		if err != nil {
			t.Fatalf("the C reader refused what Go wrote: %v", err)
		}
		if want := goDump(p); got != want {
			t.Fatalf("the C reader read another plan than Go wrote:\nC:\n%s\nGo:\n%s", got, want)
		}
	})
}

// FuzzPlanReadC: the C reader survives any bytes (a truncated or
// corrupted plan file) with a plan or an error, never a crash.
func FuzzPlanReadC(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	raw, err := fullPlan(r).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add([]byte{7, 0, 12, 0, 0, 0, 1, 2, 3})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeInC(b)
	})
}

// Admission refuses at apply what the launch plan could not carry, so the
// API's limits must fit the C reader's arrays (argv-like lists keep a slot
// for their terminating NULL).
func TestAdmissionLimitsFitThePlan(t *testing.T) {
	for _, l := range []struct {
		what      string
		api, plan int
	}{
		{"args", api.LaunchMaxArgs, maxItems - 1},
		{"env entries", api.LaunchMaxEnv, maxItems},
		{"mounts", api.LaunchMaxMounts, maxItems},
	} {
		if l.api > l.plan {
			t.Errorf("api admits %d %s, the launch plan carries %d", l.api, l.what, l.plan)
		}
	}
}
