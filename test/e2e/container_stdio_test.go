package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestContainerRunInteractive checks container run -i: the container
// reads what berth's stdin holds, through a pipe berth relays (not the
// caller's file), and sees its end; without -i it reads nothing.
func TestContainerRunInteractive(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	t.Cleanup(func() { removeContainers(e) })
	in := filepath.Join(t.TempDir(), "in")
	check(t, os.WriteFile(in, []byte("first line\nsecond line\n"), 0o600))
	run := func(args ...string) (string, int) {
		f, err := os.Open(in)
		check(t, err)
		defer f.Close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, berthBin, append([]string{"--data-dir", e.dataDir, "container", "run", "--rm"}, args...)...)
		cmd.Stdin = f
		out, err := cmd.Output()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("berth container run %v: %v", args, err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	for _, ex := range []string{"berth", "runc"} {
		t.Run(ex, func(t *testing.T) {
			requireExecutor(t, ex)
			out, code := run("-i", "--runtime", ex, "demo/busybox:1", "sh", "-c",
				`readlink /proc/self/fd/0; n=0; while read l; do n=$((n+1)); echo "got $l"; done; echo "lines $n"; exit 3`)
			if code != 3 {
				t.Fatalf("-i: exit %d, want the container's 3; output %q", code, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 4 || !strings.HasPrefix(lines[0], "pipe:") ||
				lines[1] != "got first line" || lines[2] != "got second line" || lines[3] != "lines 2" {
				t.Errorf("-i: output %q; want berth's pipe as stdin, both lines, then the end", out)
			}
		})
	}
	if out, code := run("demo/busybox:1", "sh", "-c", "cat; echo end"); code != 0 || out != "end\n" {
		t.Errorf("without -i the container read %q (exit %d), want nothing", out, code)
	}
	for _, args := range [][]string{{"-d", "-i"}, {"-d", "-t"}, {"-d", "-it"}} {
		_, errOut, code := e.run(append(append([]string{"container", "run"}, args...), "demo/busybox:1", "true")...)
		if code == 0 || !strings.Contains(errOut, "foreground") {
			t.Errorf("container run %v: exit %d, %q; want a refusal", args, code, errOut)
		}
	}
	if _, errOut, code := e.run("container", "run", "--rm", "-t", "--runtime", "runc", "demo/busybox:1", "true"); code == 0 || !strings.Contains(errOut, "--tty") {
		t.Errorf("-t with runc: exit %d, %q; want a refusal naming --tty", code, errOut)
	}
}

// TestContainerRunTerminal runs container run -it --rm IMAGE sh in a
// terminal of the test's making: an interactive shell on a terminal
// berth opens, sized as the caller's and resized with it, with TERM,
// whose exit code is berth's.
func TestContainerRunTerminal(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	t.Cleanup(func() { removeContainers(e) })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, "--data-dir", e.dataDir, "container", "run", "-it", "--rm", "--name", "tty1", "demo/busybox:1", "sh")
	term := startTerminal(t, cmd, 30, 100)
	shown, type_ := term.shows, term.type_
	// The shell's first prompt may come before or after the first line typed: ask until it answers.
	// The size comes last, so that once it shows, the lines before it have too.
	eventually(t, 30*time.Second, "the shell to answer with the first size", func() bool {
		type_("echo T=$TERM; [ -t 0 ] && echo IS=tty; stty size | sed 's/^/SIZE=/'\r")
		time.Sleep(200 * time.Millisecond)
		return shown(regexp.MustCompile(`SIZE=30 100`))
	})
	for _, want := range []string{`T=xterm-test`, `IS=tty`} {
		if !shown(regexp.MustCompile(want)) {
			t.Errorf("no %s on the screen", want)
		}
	}
	term.resize(40, 120) // the kernel sends berth SIGWINCH
	eventually(t, 20*time.Second, "the new size", func() bool {
		type_("stty size | sed 's/^/SIZE=/'\r")
		time.Sleep(200 * time.Millisecond)
		return shown(regexp.MustCompile(`SIZE=40 120`))
	})
	type_("exit 4\r")
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("container run -it exited %v, want 4; screen %q", err, term)
	}
	// --rm removed it.
	if out, _, _ := e.run("container", "ps", "-a", "-q"); strings.Contains(out, "tty1") {
		t.Errorf("tty1 is still there after --rm: %q", out)
	}
}

// requireExecutor skips (fails in CI) when an OCI runtime is missing.
func requireExecutor(t *testing.T, ex string) {
	t.Helper()
	if ex == "berth" {
		return
	}
	testenv.RequireBinary(t, ex)
}
