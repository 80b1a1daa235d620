package controller

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/berth-dev/berth/api"
)

// TestScripts runs testdata/scripts/*.txt: each case is a service or a job
// with its instances, and the writes its Compute function answers, so a
// controller's behaviour reads as a table of cases. go test -rewrite
// regenerates the expected output.
//
//	service replicas=N [hash=H] [surge=N] [unavailable=N] [settled]
//	job completions=N [parallelism=N] [backoff=N]
//
// Each input line is one instance: NAME then key=value pairs, phase=
// (default Running), hash= (default v1), age= (seconds after t0),
// index=, attempt=, restarts=, reason=, exit=, and the flags healthy
// (default for Running), unhealthy and deleting.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/scripts", func(t *testing.T, path string) {
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			insts, err := parseInstances(d.Input)
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			switch d.Cmd {
			case "service":
				s := ServiceState{SpecHash: "v1", Instances: insts}
				for _, a := range d.CmdArgs {
					switch a.Key {
					case "replicas":
						s.Replicas = atoi(t, d, a)
					case "hash":
						s.SpecHash = a.Vals[0]
					case "surge":
						s.MaxSurge = atoi(t, d, a)
					case "unavailable":
						s.MaxUnavailable = atoi(t, d, a)
					case "settled":
						s.Settled = true
					default:
						d.Fatalf(t, "service: unknown argument %s", a.Key)
					}
				}
				return formatService(ComputeService(s))
			case "job":
				j := JobState{Instances: insts}
				for _, a := range d.CmdArgs {
					switch a.Key {
					case "completions":
						j.Completions = atoi(t, d, a)
					case "parallelism":
						j.Parallelism = atoi(t, d, a)
					case "backoff":
						j.BackoffLimit = atoi(t, d, a)
					default:
						d.Fatalf(t, "job: unknown argument %s", a.Key)
					}
				}
				return formatJob(ComputeJob(j))
			}
			d.Fatalf(t, "unknown command %q", d.Cmd)
			return ""
		})
	})
}

func atoi(t *testing.T, d *datadriven.TestData, a datadriven.CmdArg) int {
	if len(a.Vals) != 1 {
		d.Fatalf(t, "%s: want one value", a.Key)
	}
	n, err := strconv.Atoi(a.Vals[0])
	if err != nil {
		d.Fatalf(t, "%s: %v", a.Key, err)
	}
	return n
}

func parseInstances(input string) ([]Instance, error) {
	var out []Instance
	for line := range strings.SplitSeq(strings.TrimSpace(input), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		in := Instance{Namespace: "default", Name: f[0], Phase: api.PhaseRunning, SpecHash: "v1", CreatedAt: t0}
		healthy := true
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			var err error
			switch k {
			case "phase":
				in.Phase = api.Phase(v)
			case "hash":
				in.SpecHash = v
			case "age":
				var s int
				s, err = strconv.Atoi(v)
				in.CreatedAt = t0.Add(time.Duration(s) * time.Second)
			case "index":
				in.Index, err = strconv.Atoi(v)
			case "attempt":
				in.Attempt, err = strconv.Atoi(v)
			case "restarts":
				in.Restarts, err = strconv.Atoi(v)
			case "exit":
				in.ExitCode, err = strconv.Atoi(v)
			case "reason":
				in.Reason = v
			case "healthy":
				healthy = true
			case "unhealthy":
				healthy = false
			case "deleting":
				in.Deleting = true
			default:
				return nil, fmt.Errorf("instance %s: unknown field %q", in.Name, k)
			}
			if err != nil {
				return nil, fmt.Errorf("instance %s: %s: %w", in.Name, k, err)
			}
		}
		in.Healthy = healthy && in.Phase == api.PhaseRunning
		out = append(out, in)
	}
	return out, nil
}

func formatService(r ServiceResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rollout: %s", r.Phase)
	if r.Reason != "" {
		fmt.Fprintf(&b, " (%s)", r.Reason)
	}
	fmt.Fprintf(&b, "\nready=%d ready-updated=%d updated=%d\n", r.Ready, r.ReadyUpdated, r.Updated)
	fmt.Fprintf(&b, "create: %d\n", r.Create)
	fmt.Fprintf(&b, "delete: %s\n", list(r.Delete))
	fmt.Fprintf(&b, "exited: %s\n", list(r.Exited))
	return b.String()
}

func formatJob(r JobResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "job: %s failures=%d active=%d\n", r.Phase, r.Failures, r.Active)
	var create []string
	for _, s := range r.Create {
		create = append(create, fmt.Sprintf("%d/%d", s.Index, s.Attempt))
	}
	fmt.Fprintf(&b, "create (index/attempt): %s\n", list(create))
	fmt.Fprintf(&b, "delete: %s\n", list(r.Delete))
	for _, ix := range r.Indexes {
		state := "waiting"
		switch {
		case ix.Succeeded:
			state = "succeeded"
		case ix.Active:
			state = "active"
		}
		fmt.Fprintf(&b, "index %d: %s, %d failed\n", ix.Index, state, ix.Failures)
	}
	return b.String()
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, " ")
}
