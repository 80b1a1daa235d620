/*
 * exec into a running container: join its namespaces and cgroups, then fork
 * (so the child is inside the PID namespace), apply the process settings and
 * exec. The parent stays to forward signals and pass on the exit status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "launch.h"

#define PLAN_FD 3
#define CONSOLE_FD 4

static int send_fd(int sock, int fd)
{
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) < 0 ? -1 : 0;
}

static volatile pid_t enter_child;

static void forward(int sig)
{
	if (enter_child > 0)
		kill(enter_child, sig);
}

/* What the exec's child needs: it runs on child_stack, in this process's memory. */
struct child_args {
	const struct plan *p;
	int tty;
	const char *slave;
	const sigset_t *old;
	const int *sigs;
	size_t nsigs;
};

/* Enough for the child's calls (fprintf, the PATH search); touched pages only are faulted in. */
static char child_stack[256 * 1024] __attribute__((aligned(16)));

/*
 * child_main runs in the container's namespaces and cgroups: it sets the
 * process up and execs the command. It shares the parent's memory, which
 * waits until it execs or exits: it writes nothing of the parent's but
 * errno, and leaves only through execve or _exit.
 */
static int child_main(void *arg)
{
	const struct child_args *a = arg;
	const struct plan *p = a->p;
	char err[ERRBUF] = {0};
	for (size_t i = 0; i < a->nsigs; i++)
		signal(a->sigs[i], SIG_DFL);
	sigprocmask(SIG_SETMASK, a->old, NULL);
	/*
	 * A session of its own in every case: without a terminal the process
	 * has no controlling one, so /dev/tty and TIOCSTI reach nothing.
	 */
	setsid();
	if (a->tty) {
		int fd = open(a->slave, O_RDWR);
		if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) {
			fprintf(stderr, "berth exec: open terminal %s: %s\n", a->slave, strerror(errno));
			_exit(126);
		}
		if (fd > 2)
			close(fd);
	}
	const char *cwd = p->cwd ? p->cwd : "/";
	if (apply_rlimits(p, err, sizeof(err)) < 0 || (chdir(cwd) < 0 && fail(err, sizeof(err), "chdir %s", cwd)) ||
	    apply_process(p, err, sizeof(err)) < 0) {
		int code = errno == ENOENT ? 127 : 126;
		fprintf(stderr, "berth exec: %s\n", err);
		_exit(code);
	}
	/*
	 * Die with the parent: else a cancelled exec would leave its process
	 * running, reparented outside the container's PID namespace. Set after
	 * the identity change, which clears it. (getppid() cannot confirm the
	 * parent is alive: it lives outside this PID namespace and reads 0.)
	 */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (exec_plan(p, err, sizeof(err)) < 0) {
		int code = errno == ENOENT ? 127 : 126;
		fprintf(stderr, "berth exec: %s\n", err);
		_exit(code);
	}
	_exit(126);
}

int enter_main(void)
{
	char err[ERRBUF] = {0};
	struct plan *p = calloc(1, sizeof(*p));
	char *buf;
	size_t len;
	if (!p || lseek(PLAN_FD, 0, SEEK_SET) < 0 || read_all(PLAN_FD, &buf, &len) < 0) {
		fprintf(stderr, "berth exec: read launch plan: %s\n", strerror(errno));
		return 126;
	}
	close(PLAN_FD);
	/* Only stdio and the console socket may reach the process run inside. */
	syscall(SYS_close_range, CONSOLE_FD + 1, ~0U, CLOSE_RANGE_CLOEXEC);
	if (plan_read(buf, len, p, err, sizeof(err)) < 0 || p->pid <= 0) {
		fprintf(stderr, "berth exec: %s\n", err[0] ? err : "plan names no container process");
		return 126;
	}
	unsetenv(STAGE_ENV);

	static const struct {
		const char *name;
		int flag;
	} nss[] = {{"cgroup", CLONE_NEWCGROUP}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
		   {"net", CLONE_NEWNET},       {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS}};
	int fds[6];
	for (int i = 0; i < 6; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", p->pid, nss[i].name);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			fprintf(stderr, "berth exec: open %s: %s (is the container running?)\n", path, strerror(errno));
			return 126;
		}
	}
	/* A container in a user namespace of its own: joined last, once the host-owned namespaces are. */
	char upath[64];
	snprintf(upath, sizeof(upath), "/proc/%d/ns/user", p->pid);
	int userfd = open(upath, O_RDONLY | O_CLOEXEC);
	struct stat ours, theirs;
	if (userfd < 0 || fstat(userfd, &theirs) < 0 || stat("/proc/self/ns/user", &ours) < 0) {
		fprintf(stderr, "berth exec: open %s: %s (is the container running?)\n", upath, strerror(errno));
		return 126;
	}
	if (ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev) {
		close(userfd);
		userfd = -1;
	}
	char self[32];
	snprintf(self, sizeof(self), "%d", getpid());
	for (int i = 0; i < p->ncgroups; i++) {
		int fd = open(p->cgroups[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write_all(fd, self, strlen(self)) < 0) {
			fprintf(stderr, "berth exec: join cgroup %s: %s\n", p->cgroups[i], strerror(errno));
			return 126;
		}
		close(fd);
	}
	for (int i = 0; i < 6; i++) {
		if (setns(fds[i], nss[i].flag) < 0) {
			fprintf(stderr, "berth exec: join %s namespace: %s\n", nss[i].name, strerror(errno));
			return 126;
		}
		close(fds[i]);
	}
	if (userfd >= 0) {
		/* The host's groups could not be dropped inside, where setgroups is denied. */
		if (setgroups(0, NULL) < 0 || setns(userfd, CLONE_NEWUSER) < 0) {
			fprintf(stderr, "berth exec: join user namespace: %s\n", strerror(errno));
			return 126;
		}
		close(userfd);
	}
	/*
	 * With a console socket (fd 4) the terminal comes from the container's
	 * own devpts, so ttyname() and /dev/pts inside agree; the master goes
	 * back to the caller over the socket.
	 */
	int console = fcntl(CONSOLE_FD, F_GETFD) >= 0 ? CONSOLE_FD : -1;
	int master = -1, tty = 0;
	char slave[64] = {0};
	if (console >= 0) {
		master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
		int unlock = 0;
		if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0 || ptsname_r(master, slave, sizeof(slave)) != 0) {
			fprintf(stderr, "berth exec: allocate a terminal in the container: %s\n", strerror(errno));
			return 126;
		}
		if (send_fd(console, master) < 0) {
			fprintf(stderr, "berth exec: pass the terminal back: %s\n", strerror(errno));
			return 126;
		}
		close(console);
		tty = 1;
	}
	/* Handlers go in before the fork, with signals held, so none is lost or kills us meanwhile. */
	int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], forward);
	struct child_args a = {.p = p, .tty = tty, .slave = slave, .old = &old, .sigs = sigs, .nsigs = sizeof(sigs) / sizeof(sigs[0])};
	/*
	 * The child borrows this process's memory until it execs (as
	 * posix_spawn's does), on a stack of its own, and this process waits
	 * meanwhile: no copy of its page tables is made, and none torn down
	 * at the exec. Both would be paid inside the container's cgroups,
	 * which this process has joined, out of the container's CPU quota.
	 */
	pid_t child = clone(child_main, child_stack + sizeof(child_stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
	if (child < 0) {
		fprintf(stderr, "berth exec: clone: %s\n", strerror(errno));
		return 126;
	}
	if (master >= 0)
		close(master);
	enter_child = child;
	sigprocmask(SIG_SETMASK, &old, NULL);
	int st;
	while (waitpid(child, &st, 0) < 0) {
		if (errno != EINTR)
			return 126;
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 126;
}
