/*
 * exec into a running container: join its namespaces and cgroups, then fork
 * (so the child is inside the PID namespace), apply the process settings and
 * exec. The parent stays to forward signals and pass on the exit status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "launch.h"

#define PLAN_FD 3

static volatile pid_t enter_child;

static void forward(int sig)
{
	if (enter_child > 0)
		kill(enter_child, sig);
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
	int tty = isatty(0);
	pid_t child = fork();
	if (child < 0) {
		fprintf(stderr, "berth exec: fork: %s\n", strerror(errno));
		return 126;
	}
	if (child == 0) {
		if (tty) {
			setsid();
			ioctl(0, TIOCSCTTY, 0);
		}
		const char *cwd = p->cwd ? p->cwd : "/";
		if (apply_rlimits(p, err, sizeof(err)) < 0 || (chdir(cwd) < 0 && fail(err, sizeof(err), "chdir %s", cwd)) ||
		    apply_process(p, err, sizeof(err)) < 0 || exec_plan(p, err, sizeof(err)) < 0) {
			int code = errno == ENOENT ? 127 : 126;
			fprintf(stderr, "berth exec: %s\n", err);
			_exit(code);
		}
		_exit(126);
	}
	enter_child = child;
	int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], forward);
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
