package runtimetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// probeSource tries the operations a container must not be able to do and
// prints "name=OK" or "name=ERRNO" for each.
const probeSource = `
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/keyctl.h>

static void report(const char *name, long r) {
	if (r < 0) printf("%s=%s\n", name, strerrorname_np(errno));
	else printf("%s=OK\n", name);
}

int main(void) {
	report("unshare", syscall(SYS_unshare, 0));
	report("keyctl", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0));
	int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	report("rawsocket", s);
	report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
	report("init_module", syscall(SYS_init_module, NULL, 0, ""));
	return 0;
}
`

// Probe compiles the probe statically into rootfs/bin/probe.
func Probe(t testing.TB, rootfs string) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "probe.c")
	if err := os.WriteFile(src, []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("gcc", "-static", "-O1", "-o", filepath.Join(rootfs, "bin", "probe"), src).CombinedOutput()
	if err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
}
