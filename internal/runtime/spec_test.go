package runtime

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestValidateNamesTheField(t *testing.T) {
	ok := Config{ID: "web-1", Args: []string{"true"}, RootfsPath: "/r"}
	tests := []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.ID = "Web" }, `id "Web"`},
		{func(c *Config) { c.ID = "-x" }, `id "-x"`},
		{func(c *Config) { c.ID = strings.Repeat("a", 65) }, "1-64 characters"},
		{func(c *Config) { c.Args = nil }, "args: no command"},
		{func(c *Config) { c.RootfsPath = "" }, "no rootfs"},
		{func(c *Config) { c.Resources.MemoryBytes = -1 }, "resources"},
		{func(c *Config) { c.Resources.MemoryBytes = 1000 }, "resources.memory"},
		{func(c *Config) { c.Resources.CPUShares = 1 }, "resources.cpuShares"},
		{func(c *Config) { c.User = "nobody" }, "user"},
		{func(c *Config) { c.Executor = "kata" }, `executor "kata"`},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range tests {
		c := ok
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one containing %q", err, tc.want)
		}
	}
}

func TestResolveCaps(t *testing.T) {
	caps, err := resolveCaps([]string{"net_raw"}, []string{"CAP_CHOWN", "mknod"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(caps, "CAP_NET_RAW") || slices.Contains(caps, "CAP_CHOWN") || slices.Contains(caps, "CAP_MKNOD") {
		t.Errorf("caps = %v", caps)
	}
	if caps, _ := resolveCaps(nil, []string{"ALL"}); len(caps) != 0 {
		t.Errorf("drop ALL left %v", caps)
	}
	if _, err := resolveCaps([]string{"CAP_FLY"}, nil); err == nil || !strings.Contains(err.Error(), "cap-add") {
		t.Errorf("unknown capability: %v", err)
	}
	if d, _ := resolveCaps(nil, nil); slices.Contains(d, "CAP_NET_RAW") || slices.Contains(d, "CAP_SYS_ADMIN") {
		t.Errorf("default set %v grants raw sockets or admin", d)
	}
}

func TestSpecDefaults(t *testing.T) {
	c := &Config{ID: "web", Args: []string{"httpd"}, RootfsPath: "/r", User: "1000:1000",
		Resources: Resources{CPUs: 1.5, MemoryBytes: 64 << 20, Pids: 100}}
	s, err := Spec(c, "/r", "/d")
	if err != nil {
		t.Fatal(err)
	}
	var nss []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		nss = append(nss, ns.Type)
	}
	for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.UTSNamespace, specs.IPCNamespace, specs.NetworkNamespace, specs.CgroupNamespace} {
		if !slices.Contains(nss, want) {
			t.Errorf("namespace %s missing", want)
		}
	}
	if !s.Process.NoNewPrivileges || s.Linux.Seccomp == nil {
		t.Error("no_new_privs and seccomp must be on by default")
	}
	if got := *s.Linux.Resources.CPU.Quota; got != 150000 {
		t.Errorf("quota %d, want 150000 for 1.5 CPUs", got)
	}
	if len(s.Process.Capabilities.Effective) != 0 || len(s.Process.Capabilities.Ambient) != 0 || len(s.Process.Capabilities.Bounding) == 0 {
		t.Error("a non-root user must start with no capabilities, only a bounding set")
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/keys") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Error("default masked and read-only paths missing")
	}
	pinned := &Config{ID: "pin", Args: []string{"x"}, RootfsPath: "/r", Resources: Resources{CPUs: 2, CPUSet: "2-3"}}
	s, _ = Spec(pinned, "/r", "/d")
	if s.Linux.Resources.CPU.Quota != nil || s.Linux.Resources.CPU.Cpus != "2-3" {
		t.Error("a pinned container must get its cpuset and no quota")
	}
}
