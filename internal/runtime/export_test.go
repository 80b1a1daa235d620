package runtime

// Exported for the tests in package runtime_test.
var (
	Cgroup2Mount       = cgroup2Mount
	ReconfigureCgroup2 = reconfigureCgroup2
)
