package cli

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/internal/runtime"
)

// runExtras are container run's flags that docker run users expect and
// that only shape the container's config.
type runExtras struct {
	envFiles   []string
	labels     []string
	entrypoint string
	volumes    []string
	mounts     []string
}

func (x *runExtras) register(fl *pflag.FlagSet) {
	fl.StringArrayVar(&x.envFiles, "env-file", nil, "read environment variables from a file of KEY=VALUE lines (# comments; a bare KEY takes this shell's value)")
	fl.StringArrayVar(&x.labels, "label", nil, "set a label KEY=VALUE on the container")
	fl.StringVar(&x.entrypoint, "entrypoint", "", `run this program instead of the image's entrypoint (and without its default command); "" for none`)
	fl.StringArrayVarP(&x.volumes, "volume", "v", nil, "bind a host directory or file: /HOST:/CONTAINER[:ro|rw]")
	fl.StringArrayVar(&x.mounts, "mount", nil, "bind a host path: type=bind,source=/HOST,target=/CONTAINER[,readonly]")
}

// binds reads -v and --mount into bind mounts. Sources must exist (a
// typo must not become an empty directory) and both ends be absolute.
func (x *runExtras) binds() ([]specs.Mount, error) {
	var out []specs.Mount
	add := func(flag, spec, src, dst string, ro bool) error {
		if !filepath.IsAbs(src) || !path.IsAbs(dst) {
			return fmt.Errorf("%s %q: want absolute paths on both sides", flag, spec)
		}
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("%s %q: source: %w", flag, spec, err)
		}
		opt := "rw"
		if ro {
			opt = "ro"
		}
		out = append(out, specs.Mount{Destination: path.Clean(dst), Type: "bind", Source: filepath.Clean(src), Options: []string{"rbind", opt}})
		return nil
	}
	for _, v := range x.volumes {
		f := strings.Split(v, ":")
		ro := false
		switch {
		case len(f) == 3 && (f[2] == "ro" || f[2] == "rw"):
			ro = f[2] == "ro"
		case len(f) != 2:
			return nil, fmt.Errorf("-v %q: want /HOST:/CONTAINER[:ro|rw]", v)
		}
		if err := add("-v", v, f[0], f[1], ro); err != nil {
			return nil, err
		}
	}
	for _, m := range x.mounts {
		var typ, src, dst string
		ro := false
		for _, kv := range strings.Split(m, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "type":
				typ = val
			case "source", "src":
				src = val
			case "target", "destination", "dst":
				dst = val
			case "readonly", "ro":
				ro = val == "" || val == "true" || val == "1"
			default:
				return nil, fmt.Errorf("--mount %q: unknown key %q (type, source, target, readonly)", m, k)
			}
		}
		if typ != "bind" {
			return nil, fmt.Errorf("--mount %q: type %q: only bind mounts are supported", m, typ)
		}
		if err := add("--mount", m, src, dst, ro); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// entrypointSet says whether --entrypoint was given (it may be "").
func entrypointSet(fl *pflag.FlagSet) bool { return fl.Changed("entrypoint") }

// environment is the variables of --env-file files, then of -e flags,
// each KEY=VALUE; a bare KEY takes its value from this process's
// environment and is left out when unset there, as docker run does.
func (x *runExtras) environment(flags []string) ([]string, error) {
	var out []string
	add := func(kv, where string) error {
		k, _, hasValue := strings.Cut(kv, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return fmt.Errorf("%s: %q: want KEY=VALUE or KEY", where, kv)
		}
		if hasValue {
			out = append(out, kv)
		} else if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
		return nil
	}
	for _, file := range x.envFiles {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--env-file: %w", err)
		}
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := add(line, fmt.Sprintf("--env-file %s:%d", file, n)); err != nil {
				f.Close()
				return nil, err
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--env-file %s: %w", file, err)
		}
	}
	for _, e := range flags {
		if err := add(e, "-e"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// labelMap reads --label KEY=VALUE flags.
func (x *runExtras) labelMap() (map[string]string, error) {
	if len(x.labels) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, l := range x.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE", l)
		}
		out[k] = v
	}
	return out, nil
}

// entrypointArgs are the container's arguments with --entrypoint given:
// docker run's rule, the program alone with the user's arguments, the
// image's default command dropped.
func entrypointArgs(entrypoint string, user []string) []string {
	var out []string
	if entrypoint != "" {
		out = append(out, entrypoint)
	}
	return append(out, user...)
}

// seconds is a duration flag that also takes a bare number of seconds,
// as docker stop -t 2 does.
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s seconds) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
		*s.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("want seconds (2) or a duration (1m30s), not negative")
	}
	*s.d = d
	return nil
}

func (s seconds) Type() string { return "seconds" }

// parseRestart reads --restart: no, on-failure[:N], always or unless-stopped.
func parseRestart(v string) (runtime.RestartPolicy, error) {
	name, count, hasCount := strings.Cut(v, ":")
	p := runtime.RestartPolicy{Name: name}
	switch name {
	case runtime.RestartNo, runtime.RestartAlways, runtime.RestartUnlessStopped:
		if hasCount {
			return p, fmt.Errorf("--restart %q: a retry count goes with on-failure only", v)
		}
	case runtime.RestartOnFailure:
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || n < 1 {
				return p, fmt.Errorf("--restart %q: want on-failure:N with N a count of 1 or more", v)
			}
			p.MaxRetries = n
		}
	default:
		return p, fmt.Errorf("--restart %q: want no, on-failure[:N], always or unless-stopped", v)
	}
	return p, nil
}
