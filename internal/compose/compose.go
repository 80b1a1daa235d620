// Package compose translates a Compose project (the model of
// github.com/compose-spec/compose-go) into berth objects: the project is a
// namespace, each Compose service a Service, or a Job when it is a
// one-shot other services wait on. The translation is pure: no I/O beyond
// compose-go's loader reading the files it is given.
package compose

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// ProjectLabel marks the objects a Compose project made, so that down
// removes those and nothing else of the namespace.
const ProjectLabel = "compose.berth/project"

// ServiceLabel names the Compose service an object was made from.
const ServiceLabel = "compose.berth/service"

// Options says which files make the project.
type Options struct {
	// Files are the Compose files, merged in order (-f). Empty means the
	// default names (compose.yaml, docker-compose.yml...) in WorkDir.
	Files []string
	// Name overrides the project name (-p).
	Name string
	// WorkDir is where default files and .env are looked for.
	WorkDir string
	// Profiles enables services of these profiles.
	Profiles []string
	// Env is the environment interpolation reads (os.Environ()).
	Env []string
}

// Load reads and merges the Compose files with compose-go: .env,
// interpolation, extends, include and profiles as Compose does.
func Load(ctx context.Context, o Options) (*types.Project, error) {
	var opts []cli.ProjectOptionsFn
	if o.WorkDir != "" {
		opts = append(opts, cli.WithWorkingDirectory(o.WorkDir))
	}
	// .env is read from the working directory, so after it is set.
	opts = append(opts, cli.WithEnv(o.Env), cli.WithEnvFiles(), cli.WithDotEnv, cli.WithProfiles(o.Profiles))
	if o.Name != "" {
		opts = append(opts, cli.WithName(o.Name))
	}
	if len(o.Files) == 0 {
		opts = append(opts, cli.WithDefaultConfigPath)
	}
	po, err := cli.NewProjectOptions(o.Files, opts...)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	p, err := po.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	return p, nil
}

// LooksLikeCompose reports whether a file is a Compose file rather than a
// berth spec file: by its name, or by a top-level services: mapping and no
// kind:.
func LooksLikeCompose(name string, data []byte) bool {
	base := filepath.Base(name)
	if composeName().MatchString(base) {
		return true
	}
	var head map[string]any
	if err := yaml.Unmarshal(firstDocument(data), &head); err != nil {
		return false
	}
	_, hasKind := head["kind"]
	_, hasServices := head["services"].(map[string]any)
	return hasServices && !hasKind
}

// The package's expressions are compiled on first use: every command of
// the one binary (berth exec too) would otherwise compile them at start.
var composeName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(docker-)?compose(\.[\w-]+)*\.ya?ml$`) })

func firstDocument(data []byte) []byte {
	s := string(data)
	if i := strings.Index(s, "\n---"); i >= 0 {
		s = s[:i]
	}
	return []byte(s)
}

// Issue is a key of a Compose file that berth does not carry out.
type Issue struct {
	File    string
	Service string
	Key     string
	Reason  string
}

func (i Issue) String() string {
	s := i.File + ": "
	if i.Service != "" {
		s += fmt.Sprintf("service %q: ", i.Service)
	}
	return s + i.Key + ": " + i.Reason
}

// rawFiles holds each Compose file's own YAML, to say which file set a
// key the merged model no longer attributes.
type rawFiles struct {
	names []string
	docs  []map[string]any
}

func readRaw(p *types.Project) rawFiles {
	var r rawFiles
	for _, f := range p.ComposeFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var m map[string]any
		if yaml.Unmarshal(b, &m) != nil {
			continue
		}
		r.names = append(r.names, f)
		r.docs = append(r.docs, m)
	}
	return r
}

// fileOf names the last file that sets services.<svc>.<key>, or the first
// file of the project when none does (the key came through extends or
// include).
func (r rawFiles) fileOf(svc, key string) string {
	top, _, _ := strings.Cut(key, ".")
	top, _, _ = strings.Cut(top, "[")
	found := ""
	for i, d := range r.docs {
		services, _ := d["services"].(map[string]any)
		s, _ := services[svc].(map[string]any)
		if _, ok := s[top]; ok {
			found = r.names[i]
		}
	}
	if found == "" && len(r.names) > 0 {
		found = r.names[0]
	}
	return found
}

// sortedServices lists a project's services by name.
func sortedServices(p *types.Project) []types.ServiceConfig {
	names := make([]string, 0, len(p.Services))
	for n := range p.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]types.ServiceConfig, 0, len(names))
	for _, n := range names {
		out = append(out, p.Services[n])
	}
	return out
}
