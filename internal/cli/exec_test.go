package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/cli/preconnect"
)

// What preconnect sends ahead for a command line is what the command
// line means once cobra has read it, or nothing: a command never runs
// that the command line would not have run. Each command line is read
// by both; the exec stops where it would take the request over.
func TestExecAheadIsWhatTheCommandLineSays(t *testing.T) {
	for _, k := range []string{"BERTH_SERVER", "BERTH_TOKEN", "BERTH_NAMESPACE", "BERTH_CA_FILE", "BERTH_DATA_DIR"} {
		t.Setenv(k, "")
	}
	stop := errors.New("stop here")
	var means *preconnect.Plan
	var reached bool
	defer func(f func(context.Context, *preconnect.Plan) (*client.ExecStream, bool, error)) { takeAhead = f }(takeAhead)
	takeAhead = func(_ context.Context, want *preconnect.Plan) (*client.ExecStream, bool, error) {
		means, reached = want, true
		return nil, true, stop
	}
	const srv = "https://h:1"
	sent := 0
	for _, args := range [][]string{
		{"--server", srv, "exec", "web", "true"},
		{"--server=" + srv, "--token", "tok", "--ca-file", "ca.crt", "-n", "prod", "exec", "web", "--", "sh", "-c", "exit 3"},
		{"--server", srv, "exec", "-e", "A=1", "--env=B=2", "-c", "side", "--namespace", "prod", "web", "env", "-i"},
		{"--server", srv, "exec", "--token", "t2", "-n", "a", "--namespace=b", "web", "true"},
		{"--server", srv, "--token", "exec", "exec", "web", "true"},
		{"--server", srv, "-o", "exec", "exec", "web", "true"},
		{"--server", srv, "exec", "web", "ls", "--", "-t"},
		{"--server", srv, "exec", "web", "--", "--", "x"},
		{"--server", srv, "exec", "-c", "exec", "web", "exec"},
		{"--server", srv, "exec", "-e", "--help", "web", "true"},
		{"--server", srv, "exec", "-i", "web", "cat"},
		{"--server", srv, "exec", "-t", "web", "sh"},
		{"--server", srv, "exec", "--interactive=false", "web", "true"},
		{"--server", srv, "exec", "-h", "web", "true"},
		{"--server", srv, "exec", "--bogus", "web", "true"},
		{"--server", srv, "-nprod", "exec", "web", "true"},
		{"--server", srv, "exec", "--", "web", "true"},
		{"--server", srv, "exec", "web", "--"},
		{"--server", srv, "exec", "service/web", "true"},
		{"--server", srv, "exec", "prod/web", "true"},
		{"--server", srv, "-n", "Prod", "exec", "web", "true"},
		{"--server", srv, "-n", "prod", "exec", "-n", "default", "web", "true"},
		{"exec", "--server", srv, "web", "true"},
		{"exec", "web", "true"},
		{"--data-dir", "/srv/berth", "exec", "web", "true"},
		{"--data-dir", "/srv/berth", "exec", "--data-dir", "/other", "web", "true"},
		{"exec", "-n", "prod", "web", "sh", "-c", "exit 3"},
	} {
		means, reached = nil, false
		Run(t.Context(), args)
		ahead := preconnect.PlanOf(args)
		if ahead == nil {
			continue
		}
		sent++
		if !reached || !ahead.Equal(means) {
			t.Errorf("%s: sent ahead %s, but the command line means %s (reached the exec: %v)", strings.Join(args, " "), ahead, means, reached)
		}
	}
	if sent < 8 {
		t.Errorf("only %d of the command lines are sent ahead", sent)
	}
}
