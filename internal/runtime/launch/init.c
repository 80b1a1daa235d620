/*
 * The container init: runs in the fresh namespaces the shim cloned, sets up
 * the filesystem view and identity, then execs the workload. It never
 * returns on success. Mount destinations are resolved inside the new root
 * after pivot_root and may not pass through symlinks, so a hostile image
 * cannot redirect a mount onto something it should not see.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "launch.h"

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#define FSOPEN_CLOEXEC_ 0x1
#define FSCONFIG_SET_FLAG_ 0
#define FSCONFIG_SET_STRING_ 1
#define FSCONFIG_CMD_CREATE_ 6
#define FSMOUNT_CLOEXEC_ 0x1

/* mount_attrs turns mount(2) flags into the new mount API's attributes. */
static uint64_t mount_attrs(uint64_t f)
{
	uint64_t a = 0;
	if (f & MS_RDONLY)
		a |= 0x1; /* MOUNT_ATTR_RDONLY */
	if (f & MS_NOSUID)
		a |= 0x2; /* MOUNT_ATTR_NOSUID */
	if (f & MS_NODEV)
		a |= 0x4; /* MOUNT_ATTR_NODEV */
	if (f & MS_NOEXEC)
		a |= 0x8; /* MOUNT_ATTR_NOEXEC */
	return a;
}

/*
 * detached_fs makes a filesystem mount that is not attached anywhere yet.
 * In a user namespace the kernel lets proc and sysfs be mounted only while
 * a full view of them is visible in the mount namespace, as the host's are
 * before pivot_root: so they are made here, and attached after it.
 */
static int detached_fs(const struct mountrec *m, char *err, size_t errlen)
{
	int fs = syscall(SYS_fsopen, m->fstype, FSOPEN_CLOEXEC_);
	if (fs < 0)
		return fail(err, errlen, "mount %s on %s: fsopen", m->fstype, m->target);
	char data[4096];
	snprintf(data, sizeof(data), "%s", m->data);
	char *save = NULL;
	for (char *tok = strtok_r(data, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (eq)
			*eq = '\0';
		int r = eq ? syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING_, tok, eq + 1, 0)
			   : syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG_, tok, NULL, 0);
		if (r < 0) {
			fail(err, errlen, "mount %s on %s: option %s", m->fstype, m->target, tok);
			close(fs);
			return -1;
		}
	}
	int mfd = -1;
	if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE_, NULL, NULL, 0) < 0 ||
	    (mfd = syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC_, (unsigned)mount_attrs(m->flags))) < 0)
		fail(err, errlen, "mount %s on %s", m->fstype, m->target);
	close(fs);
	return mfd;
}

/* ensure_path creates path's missing components as directories (the last as a file if want_file), refusing symlinks. */
static int ensure_path(const char *path, int want_file, char *err, size_t errlen)
{
	char buf[4096];
	if (path[0] != '/' || strlen(path) >= sizeof(buf)) {
		snprintf(err, errlen, "mount destination %s: must be an absolute path", path);
		return -1;
	}
	strcpy(buf, path);
	char *p = buf + 1;
	for (;;) {
		char *slash = strchr(p, '/');
		int last = slash == NULL;
		if (slash)
			*slash = '\0';
		if (*p != '\0') {
			if (strcmp(p, "..") == 0) {
				snprintf(err, errlen, "mount destination %s: contains ..", path);
				return -1;
			}
			struct stat st;
			if (lstat(buf, &st) == 0) {
				if (S_ISLNK(st.st_mode)) {
					if (last && want_file) {
						/* Images often ship /etc/resolv.conf as a symlink; replace it in the container's own layer. */
						if (unlink(buf) < 0)
							return fail(err, errlen, "mount destination %s: replace symlink", path);
						goto create;
					}
					snprintf(err, errlen, "mount destination %s: %s is a symlink", path, buf);
					return -1;
				}
				if (!last && !S_ISDIR(st.st_mode)) {
					snprintf(err, errlen, "mount destination %s: %s is not a directory", path, buf);
					return -1;
				}
			} else if (errno == ENOENT) {
			create:
				if (last && want_file) {
					int fd = open(buf, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
					if (fd < 0)
						return fail(err, errlen, "mount destination %s: create", path);
					close(fd);
				} else if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
					return fail(err, errlen, "mount destination %s: mkdir %s", path, buf);
				}
			} else {
				return fail(err, errlen, "mount destination %s: stat %s", path, buf);
			}
		}
		if (last)
			break;
		*slash = '/';
		p = slash + 1;
	}
	return 0;
}

static int do_mount(const struct mountrec *m, int srcfd, char *err, size_t errlen)
{
	if (ensure_path(m->target, m->kind == MOUNT_KIND_BIND_FILE, err, errlen) < 0)
		return -1;
	if (m->kind == MOUNT_KIND_FS && srcfd < 0) {
		if (mount(m->source, m->target, m->fstype, m->flags, m->data[0] ? m->data : NULL) < 0)
			return fail(err, errlen, "mount %s on %s", m->fstype, m->target);
		return 0;
	}
	/* The source was made a detached tree (options already set) before pivot_root; attach it here. */
	if (syscall(SYS_move_mount, srcfd, "", AT_FDCWD, m->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return fail(err, errlen, "attach %s on %s", m->source, m->target);
	return 0;
}

static int write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = write_all(fd, val, strlen(val));
	close(fd);
	return r;
}

int apply_sysctls(const struct plan *p, int net_only, char *err, size_t errlen)
{
	for (int i = 0; i < p->nsysctls; i++) {
		int net = strncmp(p->sysctls[i], "net.", 4) == 0;
		if (net_only ? !net : (net && p->net_sysctls_done))
			continue;
		const char *eq = strchr(p->sysctls[i], '=');
		char path[512];
		if (!eq || (size_t)(eq - p->sysctls[i]) > 400) {
			snprintf(err, errlen, "sysctl %s: want key=value", p->sysctls[i]);
			return -1;
		}
		int n = snprintf(path, sizeof(path), "/proc/sys/%.*s", (int)(eq - p->sysctls[i]), p->sysctls[i]);
		for (int j = 10; j < n; j++)
			if (path[j] == '.')
				path[j] = '/';
		if (write_file(path, eq + 1) < 0)
			return fail(err, errlen, "sysctl %s", p->sysctls[i]);
	}
	return 0;
}

static int mask_paths(const struct plan *p, char *err, size_t errlen)
{
	for (int i = 0; i < p->nmasks; i++) {
		struct stat st;
		if (lstat(p->masks[i], &st) < 0) {
			if (errno == ENOENT)
				continue;
			return fail(err, errlen, "mask %s", p->masks[i]);
		}
		int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p->masks[i], "tmpfs", MS_RDONLY, "size=0")
					     : mount("/dev/null", p->masks[i], NULL, MS_BIND, NULL);
		if (r < 0)
			return fail(err, errlen, "mask %s", p->masks[i]);
	}
	for (int i = 0; i < p->nros; i++) {
		if (mount(p->ros[i], p->ros[i], NULL, MS_BIND | MS_REC, NULL) < 0) {
			if (errno == ENOENT)
				continue;
			return fail(err, errlen, "make %s read-only", p->ros[i]);
		}
		if (mount(NULL, p->ros[i], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
			return fail(err, errlen, "make %s read-only", p->ros[i]);
	}
	return 0;
}

static void dev_links(void)
{
	struct stat st;
	if (lstat("/dev/pts", &st) < 0)
		return;
	static const char *links[][2] = {
		{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
		{"pts/ptmx", "/dev/ptmx"},
	};
	/* No /dev/core: /proc/kcore is masked where the kernel has it, so the link could only dangle. */
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
			continue;
}

/* A new network namespace has loopback down; bring it up as every runtime does. */
static int loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	int r = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (r == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		r = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
	return r;
}

/*
 * run_init stays as the container's PID 1 and runs the workload as its
 * child: it reaps every process that ends up orphaned on it, passes every
 * signal it gets on to the workload, and exits as the workload did (128 +
 * the signal's number when a signal ended it). The kernel drops a signal
 * sent to a namespace's init that has no handler for it, and a stop checks
 * for one (SigCgt) before it waits: so every signal gets a handler, which
 * never runs, since all are blocked and taken with sigwaitinfo. The
 * workload's exec resets the handlers.
 * PID 1 is this binary as the shim ran it: a read-only view, which a
 * process of the container cannot reopen for writing.
 */
static void on_signal(int sig) { (void)sig; }

static int run_init(const struct plan *p, int errfd, char *err, size_t errlen)
{
	sigset_t all, old;
	sigfillset(&all);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &sa, NULL); /* SIGKILL and SIGSTOP refuse, as they should */
	if (sigprocmask(SIG_BLOCK, &all, &old) < 0)
		return fail(err, errlen, "init: block signals");
	/*
	 * Named before the fork: the workload may read /proc/1/comm as soon as
	 * it runs, and its exec gives it its own name.
	 */
	prctl(PR_SET_NAME, "init", 0, 0, 0);
	pid_t child = fork();
	if (child < 0)
		return fail(err, errlen, "init: fork the workload");
	if (child == 0) {
		/* The workload starts with the signal mask the container would have had. */
		if (sigprocmask(SIG_SETMASK, &old, NULL) < 0)
			return fail(err, errlen, "init: restore the signal mask");
		return exec_plan(p, err, errlen);
	}
	/* The workload's exec closes the error pipe, or its failure is written there. */
	close(errfd);
	/*
	 * This process never execs, so the shim's descriptors it was cloned
	 * with (the host-side log, the control FIFO) would stay open here, in
	 * reach of the container's root through /proc/1/fd. Init needs only
	 * the container's stdio.
	 */
	syscall(SYS_close_range, 3, ~0U, 0);
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&all, &si);
		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(child, sig);
			continue;
		}
		int st;
		pid_t pid;
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			if (pid != child)
				continue;
			if (WIFSIGNALED(st))
				_exit(128 + WTERMSIG(st));
			_exit(WEXITSTATUS(st));
		}
	}
}

int container_init(const struct plan *p, int syncfd, int errfd, char *err, size_t errlen)
{
	char go;
	/* Wait until the shim has put us in our cgroups. */
	if (read(syncfd, &go, 1) != 1) {
		snprintf(err, errlen, "shim went away before the start signal");
		return -1;
	}
	close(syncfd);
	if ((p->nsflags & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0)
		return fail(err, errlen, "unshare cgroup namespace");
	if (p->netns) {
		int fd = open(p->netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			return fail(err, errlen, "join network namespace %s", p->netns);
		close(fd);
	}
	if ((p->nsflags & CLONE_NEWNET) && loopback_up() < 0)
		return fail(err, errlen, "bring up loopback");
	if (p->hostname && sethostname(p->hostname, strlen(p->hostname)) < 0)
		return fail(err, errlen, "set hostname %s", p->hostname);
	if (!p->rootfs) {
		snprintf(err, errlen, "plan has no rootfs");
		return -1;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return fail(err, errlen, "make mounts private");
	if (p->overlay) {
		if (mount("overlay", p->rootfs, "overlay", MS_NODEV, p->overlay) < 0)
			return fail(err, errlen, "mount overlay rootfs on %s", p->rootfs);
	} else if (mount(p->rootfs, p->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0 ||
		   mount(NULL, p->rootfs, NULL, MS_BIND | MS_REMOUNT | MS_NODEV, NULL) < 0) {
		/* nodev: device nodes made in a writable rootfs must not open devices. */
		return fail(err, errlen, "bind rootfs %s", p->rootfs);
	}

	int srcfds[MAX_ITEMS];
	for (int i = 0; i < p->nmounts; i++) {
		srcfds[i] = -1;
		if (p->mounts[i].kind == MOUNT_KIND_FS) {
			const char *t = p->mounts[i].fstype;
			if (p->has_userns && (strcmp(t, "proc") == 0 || strcmp(t, "sysfs") == 0) &&
			    (srcfds[i] = detached_fs(&p->mounts[i], err, errlen)) < 0)
				return -1;
			continue;
		}
		/* A detached clone stays usable after the old root is gone, unlike a path or an O_PATH fd. */
		unsigned rec = (p->mounts[i].flags & MS_REC) ? AT_RECURSIVE : 0;
		srcfds[i] = syscall(SYS_open_tree, AT_FDCWD, p->mounts[i].source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
		if (srcfds[i] < 0)
			return fail(err, errlen, "open bind source %s", p->mounts[i].source);
		/*
		 * Set the options on the whole detached tree: a remount would reach
		 * only its top mount, and would clear flags the source had.
		 */
		struct {
			uint64_t attr_set, attr_clr, propagation, userns_fd;
		} attr = {.attr_set = mount_attrs(p->mounts[i].flags)};
		if (attr.attr_set && syscall(SYS_mount_setattr, srcfds[i], "", AT_EMPTY_PATH | rec, &attr, sizeof(attr)) < 0)
			return fail(err, errlen, "set options of bind %s", p->mounts[i].source);
	}

	if (chdir(p->rootfs) < 0)
		return fail(err, errlen, "chdir rootfs %s", p->rootfs);
	if (p->has_userns) {
		/*
		 * Become the user namespace's root (the shim has written the id
		 * maps). Only now: the host paths above (the bundle, volumes) are
		 * host root's, reachable by the host ids this process held until
		 * here; what it creates from here on is owned by the mapped root.
		 */
		if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
			return fail(err, errlen, "become root of the user namespace");
	}
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return fail(err, errlen, "pivot_root %s", p->rootfs);
	if (umount2(".", MNT_DETACH) < 0)
		return fail(err, errlen, "detach the old root");
	if (chdir("/") < 0)
		return fail(err, errlen, "chdir /");

	for (int i = 0; i < p->nmounts; i++) {
		if (do_mount(&p->mounts[i], srcfds[i], err, errlen) < 0)
			return -1;
		if (srcfds[i] >= 0)
			close(srcfds[i]);
	}
	dev_links();
	if (apply_sysctls(p, 0, err, errlen) < 0 || mask_paths(p, err, errlen) < 0)
		return -1;
	if (p->rootfs_ro && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NODEV, NULL) < 0)
		return fail(err, errlen, "make rootfs read-only");
	if (apply_rlimits(p, err, errlen) < 0)
		return -1;
	if (p->has_oom) {
		char v[16];
		snprintf(v, sizeof(v), "%d", p->oomscore);
		if (write_file("/proc/self/oom_score_adj", v) < 0)
			return fail(err, errlen, "set oom_score_adj");
	}
	const char *cwd = p->cwd ? p->cwd : "/";
	if (chdir(cwd) < 0)
		return fail(err, errlen, "chdir %s", cwd);
	if (apply_process(p, err, errlen) < 0)
		return -1;
	if (p->init)
		return run_init(p, errfd, err, errlen);
	return exec_plan(p, err, errlen);
}
