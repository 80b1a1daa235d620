package reconcile

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// TestScripts runs testdata/scripts/*.txt: what the agent does for given
// instances and containers at a moment, as a table of cases. go test
// -rewrite regenerates the expected output.
//
//	compute [now=DURATION]
//	want KEY [restart=always|on-failure|never] [template=T] [uid=U] [init=A,B] [sidecar=S[:POLICY],...]
//	have ID KEY [attempt=N] [running] [exit=N] [started=D] [finished=D] [unhealthy] [template=T] [uid=U] [name=C] [sidecar]
//
// Times are offsets from t0 (Go durations); a UID defaults to "u-KEY".
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/scripts", func(t *testing.T, path string) {
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd != "compute" {
				d.Fatalf(t, "unknown command %q", d.Cmd)
			}
			now := t0
			for _, a := range d.CmdArgs {
				if a.Key != "now" || len(a.Vals) != 1 {
					d.Fatalf(t, "compute: want now=DURATION, got %s", a.String())
				}
				off, err := time.ParseDuration(a.Vals[0])
				if err != nil {
					d.Fatalf(t, "now: %v", err)
				}
				now = t0.Add(off)
			}
			desired, observed, err := parseScript(d.Input)
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			return formatResult(Compute(desired, observed, now))
		})
	})
}

func parseScript(input string) ([]Desired, []Container, error) {
	var desired []Desired
	var observed []Container
	for line := range strings.SplitSeq(strings.TrimSpace(input), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case f[0] == "want" && len(f) >= 2:
			w := Desired{Key: f[1], UID: "u-" + f[1], Restart: Always}
			for _, kv := range f[2:] {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "restart":
					w.Restart = Policy(v)
				case "template":
					w.Template = v
				case "uid":
					w.UID = v
				case "init":
					for n := range strings.SplitSeq(v, ",") {
						w.Members = append(w.Members, Member{Name: n, Init: true})
					}
				case "sidecar":
					for n := range strings.SplitSeq(v, ",") {
						n, p, _ := strings.Cut(n, ":")
						w.Members = append(w.Members, Member{Name: n, Sidecar: true, Restart: Policy(p)})
					}
				default:
					return nil, nil, fmt.Errorf("want %s: unknown field %q", w.Key, k)
				}
			}
			desired = append(desired, w)
		case f[0] == "have" && len(f) >= 3:
			c := Container{ID: f[1], Key: f[2], UID: "u-" + f[2], StartedAt: t0}
			for _, kv := range f[3:] {
				k, v, _ := strings.Cut(kv, "=")
				var err error
				var off time.Duration
				switch k {
				case "attempt":
					c.Attempt, err = strconv.Atoi(v)
				case "running":
					c.Running = true
				case "unhealthy":
					c.Unhealthy = true
				case "exit":
					c.ExitCode, err = strconv.Atoi(v)
				case "started":
					off, err = time.ParseDuration(v)
					c.StartedAt = t0.Add(off)
				case "finished":
					off, err = time.ParseDuration(v)
					c.FinishedAt = t0.Add(off)
				case "template":
					c.Template = v
				case "uid":
					c.UID = v
				case "name":
					c.Name = v
				case "sidecar":
					c.Sidecar = true
				default:
					return nil, nil, fmt.Errorf("have %s: unknown field %q", c.ID, k)
				}
				if err != nil {
					return nil, nil, fmt.Errorf("have %s: %s: %w", c.ID, k, err)
				}
			}
			observed = append(observed, c)
		default:
			return nil, nil, fmt.Errorf("line %q: want \"want KEY ...\" or \"have ID KEY ...\"", line)
		}
	}
	return desired, observed, nil
}

func formatResult(r Result) string {
	var b strings.Builder
	for _, a := range r.Actions {
		fmt.Fprintf(&b, "%s %s", a.Kind, a.Key)
		if a.ContainerID != "" {
			fmt.Fprintf(&b, " %s", a.ContainerID)
		}
		if a.Kind == Start {
			if a.Name != "" {
				fmt.Fprintf(&b, " %s", a.Name)
			}
			fmt.Fprintf(&b, " #%d", a.Attempt)
		}
		if a.Reason != "" {
			fmt.Fprintf(&b, ": %s", a.Reason)
		}
		b.WriteByte('\n')
	}
	if !r.RetryAt.IsZero() {
		fmt.Fprintf(&b, "retry at %v\n", r.RetryAt.Sub(t0))
	}
	if b.Len() == 0 {
		return "nothing to do\n"
	}
	return b.String()
}
