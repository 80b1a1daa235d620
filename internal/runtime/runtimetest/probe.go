package runtimetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// probeSource tries the operations a container must not be able to do and
// prints "name=OK" or "name=ERRNO" for each. Its first argument picks a set:
//
//	probe               the privileged calls the default profile refuses
//	probe escape PID    the escape suite; PID is a host process to reach
//	probe stdio         what an exec'd process can do with its stdio
//	probe exe MS        watch up to MS ms for a process running a binary
//	                    from outside the container, and try to write it
const probeSource = `
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <netinet/in.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/if_ether.h>

static void report(const char *name, long r) {
	if (r < 0) printf("%s=%s\n", name, strerrorname_np(errno));
	else printf("%s=OK\n", name);
	fflush(stdout);
}

static void defaults(void) {
	report("unshare", syscall(SYS_unshare, 0));
	report("keyctl", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0));
	int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	report("rawsocket", s);
	report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
	report("init_module", syscall(SYS_init_module, NULL, 0, ""));
}

/* fds lists the open descriptors but the one reading the list. */
static void fds(const char *name) {
	DIR *d = opendir("/proc/self/fd");
	char out[512] = "";
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		if (out[0]) strcat(out, ",");
		strncat(out, e->d_name, sizeof(out) - strlen(out) - 8);
	}
	if (d) closedir(d);
	printf("%s=%s\n", name, out);
}

static void escape(int hostpid) {
	report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
	char sda[64], mem[64];
	snprintf(sda, sizeof(sda), "/tmp/sda.%d", getpid());
	snprintf(mem, sizeof(mem), "/dev/mem.%d", getpid());
	report("mknod", mknod(sda, S_IFBLK | 0600, makedev(8, 0)));
	report("mknod_open", open(sda, O_RDONLY));
	report("mknod_mem", mknod(mem, S_IFCHR | 0600, makedev(1, 1)));
	report("mknod_mem_open", open(mem, O_RDONLY));
	report("rawsocket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
	report("packetsocket", socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)));
	report("keyctl", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0));
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 4;
	a.max_entries = 1;
	report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a)));
	report("unshare_user", unshare(CLONE_NEWUSER));
	report("unshare_mnt", unshare(CLONE_NEWNS));
	report("ptrace_host", ptrace(PTRACE_ATTACH, hostpid, 0, 0));
	report("kill_host", kill(hostpid, 0));
	report("proc_sys_write", open("/proc/sys/kernel/domainname", O_WRONLY));
	report("sysrq_write", open("/proc/sysrq-trigger", O_WRONLY));
	report("sys_write", mkdir("/sys/kernel/berth-escape", 0755));
	/*
	 * Out of its cgroup: moving itself to a parent's (v2 or v1) or making
	 * a cgroup of its own, or setting a release agent the host would run.
	 */
	report("cgroup_procs_v2", open("/sys/fs/cgroup/cgroup.procs", O_WRONLY));
	report("cgroup_procs_v1", open("/sys/fs/cgroup/pids/cgroup.procs", O_WRONLY));
	report("cgroup_procs_unified", open("/sys/fs/cgroup/unified/cgroup.procs", O_WRONLY));
	report("cgroup_mkdir", mkdir("/sys/fs/cgroup/berth-escape", 0755));
	report("cgroup_release_agent", open("/sys/fs/cgroup/pids/release_agent", O_WRONLY));
	/* Shocker: a handle opened outside the mount, then the host's files. */
	struct { unsigned int bytes; int type; unsigned char f[8]; } fh = {8, 1, {2, 0, 0, 0, 0, 0, 0, 0}};
	report("open_by_handle", syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY));
	struct stat st;
	report("dev_core", lstat("/dev/core", &st));
	fds("fds");
}

static void stdio(void) {
	/*
	 * Reopening the output for reading gives a file's earlier contents, a
	 * pipe what is still in it: read before writing anything.
	 */
	char buf[256] = "";
	int fd = open("/proc/self/fd/1", O_RDONLY | O_NONBLOCK);
	int reopen_errno = errno;
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = '\0';
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] == '\n' || buf[i] == '=') buf[i] = ' ';
		close(fd);
	}
	char c = '#';
	report("tiocsti0", ioctl(0, TIOCSTI, &c));
	report("tiocsti1", ioctl(1, TIOCSTI, &c));
	report("tiocsti2", ioctl(2, TIOCSTI, &c));
	int tty = open("/dev/tty", O_RDWR);
	report("devtty", tty);
	if (tty >= 0) {
		const char *cmd = "echo TYPED-BY-CONTAINER\n";
		long r = 0;
		for (const char *p = cmd; *p && r >= 0; p++)
			r = ioctl(tty, TIOCSTI, p);
		report("tiocsti_tty", r);
		close(tty);
	}
	for (int fd = 0; fd < 3; fd++) {
		char link[64], target[256] = "";
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		printf("fd%d=%s\n", fd, n > 0 ? target : "?");
	}
	errno = reopen_errno;
	report("reopen1", fd);
	printf("reread=%s\n", buf);
	char stat[512] = "";
	int sf = open("/proc/self/stat", O_RDONLY);
	read(sf, stat, sizeof(stat) - 1);
	close(sf);
	int ppid = 0, tty_nr = -1;
	char *p = strrchr(stat, ')');
	if (p) sscanf(p + 2, "%*c %d %*d %*d %d", &ppid, &tty_nr);
	printf("tty_nr=%d\n", tty_nr);
	if (ppid > 1) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/fd/1", ppid);
		int pf = open(path, O_RDONLY | O_NONBLOCK);
		report("parent_reopen1", pf);
		if (pf >= 0) close(pf);
	}
	fds("fds");
	fflush(stdout);
	/* A child keeps writing after the exec has returned, counting its tries in /tmp/late. */
	if (fork() == 0) {
		signal(SIGPIPE, SIG_IGN);
		setsid();
		for (int i = 1; i <= 60; i++) {
			write(1, "LATE-WRITE\n", 11);
			write(2, "LATE-WRITE\n", 11);
			int w = open("/proc/self/fd/1", O_WRONLY | O_APPEND);
			if (w >= 0) { write(w, "LATE-REOPEN\n", 12); close(w); }
			FILE *f = fopen("/tmp/late.tmp", "w");
			if (f) { fprintf(f, "%d\n", i); fclose(f); rename("/tmp/late.tmp", "/tmp/late"); }
			usleep(100000);
		}
		_exit(0);
	}
}

static volatile sig_atomic_t go_on;
static void on_usr1(int sig) { (void)sig; go_on = 1; }

/* exe watches for a process whose binary lies outside the container. */
static int exe(int ms) {
	signal(SIGUSR1, on_usr1);
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		DIR *d = opendir("/proc");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			int pid = atoi(e->d_name);
			if (pid <= 0 || pid == getpid())
				continue;
			char path[64], target[256] = "";
			snprintf(path, sizeof(path), "/proc/%d/exe", pid);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			struct stat st, seen;
			readlink(path, target, sizeof(target) - 1);
			/* A binary of the container's own is where its name says; a host's is not. */
			if (fd < 0 || fstat(fd, &st) < 0 ||
			    (stat(target, &seen) == 0 && seen.st_dev == st.st_dev && seen.st_ino == st.st_ino)) {
				if (fd >= 0) close(fd);
				continue;
			}
			printf("foreign=%d %s\n", pid, target);
			char magic[4] = "";
			report("exe_read", pread(fd, magic, 4, 0) == 4 && memcmp(magic, "\177ELF", 4) == 0 ? 0 : -1);
			/* Writing back the bytes already there proves access without damage. */
			int w = open(path, O_WRONLY);
			report("exe_open_w", w);
			if (w >= 0)
				report("exe_pwrite", pwrite(w, magic, 4, 0));
			kill(pid, SIGKILL);
			printf("held=%d\n", fd);
			fflush(stdout);
			/* The host kills every shim meanwhile and says so with SIGUSR1. */
			struct timespec held;
			clock_gettime(CLOCK_MONOTONIC, &held);
			while (!go_on) {
				clock_gettime(CLOCK_MONOTONIC, &now);
				if (now.tv_sec - held.tv_sec > 30) break;
				usleep(10000);
			}
			printf("go_on=%d\n", (int)go_on);
			char self[64];
			snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
			w = open(self, O_WRONLY);
			report("exe_reopen_w", w);
			if (w >= 0)
				report("exe_repwrite", pwrite(w, magic, 4, 0));
			/* With CAP_SYS_ADMIN: clone the binary's mount and clear its read-only flag. */
			int tree = syscall(SYS_open_tree, fd, "", 1 /* OPEN_TREE_CLONE */ | AT_EMPTY_PATH | O_CLOEXEC);
			report("exe_clone", tree);
			if (tree >= 0) {
				struct { unsigned long long set, clr, prop, userns; } a = {0, 1 /* MOUNT_ATTR_RDONLY */, 0, 0};
				report("exe_clone_rw", syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &a, sizeof(a)));
				snprintf(self, sizeof(self), "/proc/self/fd/%d", tree);
				w = open(self, O_WRONLY);
				report("exe_clone_w", w);
				if (w >= 0)
					report("exe_clone_pwrite", pwrite(w, magic, 4, 0));
			}
			return 0;
		}
		if (d) closedir(d);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > ms) {
			printf("foreign=none\n");
			return 0;
		}
		usleep(2000);
	}
}

int main(int argc, char **argv) {
	if (argc >= 3 && strcmp(argv[1], "escape") == 0)
		escape(atoi(argv[2]));
	else if (argc >= 2 && strcmp(argv[1], "stdio") == 0)
		stdio();
	else if (argc >= 3 && strcmp(argv[1], "exe") == 0)
		return exe(atoi(argv[2]));
	else
		defaults();
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

// CopyLibraries copies the shared libraries binary needs (as ldd lists
// them) into rootfs, so the binary can run inside a container of it.
func CopyLibraries(t testing.TB, rootfs, binary string) {
	t.Helper()
	if err := copyLibraries(rootfs, binary); err != nil {
		t.Fatal(err)
	}
}

func copyLibraries(rootfs, binary string) error {
	out, err := exec.Command("ldd", binary).Output()
	if err != nil {
		return nil // a static binary: nothing to copy
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if !strings.HasPrefix(f, "/") {
				continue
			}
			if err := copyFile(f, filepath.Join(rootfs, f)); err != nil {
				return fmt.Errorf("copy library %s: %w", f, err)
			}
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}
