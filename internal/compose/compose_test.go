package compose

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// render writes a plan as the golden files hold it: the namespace, each
// unit's dependencies and object in spec file shape, then what is not
// carried out. Paths under dir are written $DIR.
func render(p *Plan, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# project %s -> namespace %s\n", p.Project, p.Namespace)
	if len(p.Volumes)+len(p.External) > 0 {
		fmt.Fprintf(&b, "# volumes %v, external %v\n", p.Volumes, p.External)
	}
	for _, d := range p.Data {
		m := d.Object.GetMetadata()
		fmt.Fprintf(&b, "# %s %s key %s", strings.ToLower(string(d.Object.GetKind())), m.Name, d.Key)
		switch {
		case d.External:
			b.WriteString(", external")
		case d.File != "":
			fmt.Fprintf(&b, ", from file %s", d.File)
		default:
			b.WriteString(", inline")
		}
		fmt.Fprintf(&b, ", labels %v\n", m.Labels)
	}
	for _, u := range p.Units {
		fmt.Fprintf(&b, "---\n# service %s", u.Service)
		for _, d := range u.DependsOn {
			fmt.Fprintf(&b, "; after %s (%s)", d.Service, d.Condition)
		}
		if u.Build {
			b.WriteString("; has build:")
		}
		b.WriteString("\n")
		y, err := api.MarshalSpec(u.Object)
		if err != nil {
			y = []byte(err.Error())
		}
		b.Write(y)
	}
	if len(p.Unsupported)+len(p.Notes) > 0 {
		b.WriteString("---\n")
	}
	for _, i := range p.Unsupported {
		fmt.Fprintf(&b, "# unsupported: %s\n", i)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "# note: %s\n", n)
	}
	return strings.ReplaceAll(b.String(), dir, "$DIR")
}

func TestGolden(t *testing.T) {
	cases := []struct {
		dir      string
		files    []string
		profiles []string
		env      []string
	}{
		{dir: "webdbcache"},
		{dir: "profiles"},
		{dir: "profiles", profiles: []string{"debug"}},
		{dir: "extends"},
		{dir: "multifile"},
		{dir: "multifile", files: []string{"compose.yaml", "compose.prod.yaml"}, env: []string{"DB_PASSWORD=s3cret"}},
		{dir: "dotenv"},
		{dir: "dotenv", env: []string{"TAG=2"}},
		{dir: "healthgate"},
		{dir: "volumes"},
		{dir: "hostroot"},
		{dir: "external"},
		{dir: "deploy"},
		{dir: "unsupported"},
		{dir: "migrate"},
		{dir: "ports"},
		{dir: "labels"},
		{dir: "build"},
		{dir: "networks"},
		{dir: "oneshot"},
		{dir: "include"},
		{dir: "envfile"},
		{dir: "names"},
		{dir: "cycle"},
		{dir: "collide"},
		{dir: "process"},
		{dir: "data", env: []string{"API_KEY=k-123"}},
	}
	for _, c := range cases {
		name := c.dir
		if len(c.files) > 0 {
			name += "+" + strings.Join(c.files, "+")
		}
		if len(c.profiles) > 0 {
			name += "+profile-" + strings.Join(c.profiles, "-")
		}
		if len(c.env) > 0 {
			name += "+env"
		}
		t.Run(name, func(t *testing.T) {
			dir, err := filepath.Abs(filepath.Join("testdata", c.dir))
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, f := range c.files {
				files = append(files, filepath.Join(dir, f))
			}
			// Errors, from loading or translating, are golden too.
			var plan *Plan
			p, err := Load(context.Background(), Options{Files: files, WorkDir: dir, Profiles: c.profiles, Env: c.env})
			if err == nil {
				plan, err = Translate(p)
			}
			var got string
			if err != nil {
				got = "# error: " + strings.ReplaceAll(err.Error(), dir, "$DIR") + "\n"
			} else {
				got = render(plan, dir)
			}
			golden := filepath.Join("testdata", "golden", strings.ReplaceAll(name, "/", "_")+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if !bytes.Equal(want, []byte(got)) {
				t.Errorf("%s differs from the translation:\n--- want\n%s\n--- got\n%s", golden, want, got)
			}
		})
	}
}

func TestLooksLikeCompose(t *testing.T) {
	for _, c := range []struct {
		name, data string
		want       bool
	}{
		{"docker-compose.yml", "", true},
		{"compose.prod.yaml", "", true},
		{"stack.yaml", "services:\n  web:\n    image: x\n", true},
		{"web.yaml", "kind: Service\nname: web\ntemplate: {image: x}\n", false},
		{"web.yaml", "kind: Service\nname: web\n---\nservices: {}\n", false},
		{"list.yaml", "- kind: Service\n", false},
	} {
		if got := LooksLikeCompose(c.name, []byte(c.data)); got != c.want {
			t.Errorf("LooksLikeCompose(%q, %q) = %v, want %v", c.name, c.data, got, c.want)
		}
	}
}
