/*
 * The per-container shim. It starts the container (cloning the built-in
 * init, or running an external OCI runtime), owns its stdio and writes it
 * to size-bounded log files (or hands it a stdin pipe or a terminal the
 * launcher passes, _BERTH_STDIO), reaps it, starts it again by its restart
 * policy (_BERTH_RESTART, built-in init only) and records the exit status
 * in a file. It lives in its own session, so the agent that started it can
 * die and come back without the container noticing.
 *
 * Protocol with the agent: fd 3 receives one line, "ok PID" or
 * "error MESSAGE", once the workload has been exec'd (or failed to be).
 * The state file then holds the pids and the restart count; the control
 * FIFO takes "kill SIG" lines, and "stop", after which the container is
 * not restarted; the exit file appears, atomically, when the container is
 * gone for good.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "launch.h"

#define REPORT_FD 3
#define GATE_FD 4
#define PARTIAL_MAX 16384

struct logger {
	const char *path;
	int fd;
	uint64_t size, max;
	uint32_t files;
};

struct stream {
	int fd;
	const char *name;
	char buf[PARTIAL_MAX];
	size_t len;
};

static void timestamp(char *out, size_t n)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + k, n - k, ".%09ldZ", ts.tv_nsec);
}

static int log_open(struct logger *l)
{
	l->fd = open(l->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (l->fd < 0)
		return -1;
	struct stat st;
	l->size = fstat(l->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	return 0;
}

static void log_rotate(struct logger *l)
{
	char from[4096], to[4096];
	close(l->fd);
	if (l->files <= 1) {
		/* A single file: start it over. */
		unlink(l->path);
	} else {
		for (uint32_t i = l->files - 1; i >= 1; i--) {
			if (i == 1)
				snprintf(from, sizeof(from), "%s", l->path);
			else
				snprintf(from, sizeof(from), "%s.%u", l->path, i - 1);
			snprintf(to, sizeof(to), "%s.%u", l->path, i);
			rename(from, to);
		}
	}
	log_open(l);
}

static void log_record(struct logger *l, const char *stream, char tag, const char *line, size_t len)
{
	if (l->fd < 0)
		return;
	char ts[64];
	timestamp(ts, sizeof(ts));
	char head[96];
	int hl = snprintf(head, sizeof(head), "%s %s %c ", ts, stream, tag);
	uint64_t need = hl + len + 1;
	if (l->max && l->size > 0 && l->size + need > l->max)
		log_rotate(l);
	write_all(l->fd, head, hl);
	write_all(l->fd, line, len);
	write_all(l->fd, "\n", 1);
	l->size += need;
}

/* stream_feed splits new output into lines; a line longer than PARTIAL_MAX goes out in partial records. */
static void stream_feed(struct logger *l, struct stream *s, const char *data, size_t n)
{
	while (n > 0) {
		const char *nl = memchr(data, '\n', n);
		size_t take = nl ? (size_t)(nl - data) : n;
		if (s->len + take > PARTIAL_MAX) {
			size_t room = PARTIAL_MAX - s->len;
			memcpy(s->buf + s->len, data, room);
			log_record(l, s->name, 'P', s->buf, PARTIAL_MAX);
			s->len = 0;
			data += room;
			n -= room;
			continue;
		}
		memcpy(s->buf + s->len, data, take);
		s->len += take;
		data += take;
		n -= take;
		if (nl) {
			log_record(l, s->name, 'F', s->buf, s->len);
			s->len = 0;
			data++;
			n--;
		}
	}
}

static void stream_flush(struct logger *l, struct stream *s)
{
	if (s->len)
		log_record(l, s->name, 'F', s->buf, s->len);
	s->len = 0;
}

static void write_atomic(const char *path, const char *data)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	write_all(fd, data, strlen(data));
	close(fd);
	rename(tmp, path);
}

static void json_escape(char *out, size_t n, const char *in)
{
	size_t o = 0;
	for (; *in && o + 7 < n; in++) {
		unsigned char c = *in;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = c;
		} else if (c < 0x20) {
			o += snprintf(out + o, n - o, "\\u%04x", c);
		} else {
			out[o++] = c;
		}
	}
	out[o] = '\0';
}

static void write_exit(const struct plan *p, int code, int sig, const char *start_err)
{
	if (!p->exit_path)
		return;
	char ts[64], esc[2 * ERRBUF], buf[3 * ERRBUF];
	timestamp(ts, sizeof(ts));
	json_escape(esc, sizeof(esc), start_err ? start_err : "");
	snprintf(buf, sizeof(buf), "{\"exitCode\":%d,\"signal\":%d,\"finishedAt\":\"%s\",\"startError\":\"%s\"}\n",
		 code, sig, ts, esc);
	write_atomic(p->exit_path, buf);
}

static unsigned long long self_start_time(void)
{
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* Field 22 (starttime) counts from after the ")" that ends the command name. */
	char *s = strrchr(buf, ')');
	if (!s)
		return 0;
	s += 2;
	for (int field = 3; field < 22 && s; field++) {
		s = strchr(s, ' ');
		if (s)
			s++;
	}
	return s ? strtoull(s, NULL, 10) : 0;
}

static void report(const char *fmt, ...)
{
	char buf[ERRBUF + 64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	write_all(REPORT_FD, buf, n);
	close(REPORT_FD);
}

/*
 * catches_term reports whether process pid has a handler for SIGTERM
 * (SigCgt in /proc/PID/status); when unsure it says yes.
 */
static int catches_term(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return 1;
	int yes = 1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long mask;
		if (sscanf(line, "SigCgt: %llx", &mask) == 1) {
			yes = (mask >> (SIGTERM - 1)) & 1;
			break;
		}
	}
	fclose(f);
	return yes;
}

/*
 * stop_on_term is what a SIGTERM to the shim does: the container is asked
 * to stop. systemd sends it to every process of a container's scope when
 * the scope stops (a host shutdown, systemctl stop berth.slice), and the
 * kernel drops SIGTERM for a namespace's PID 1 that has no handler for
 * it: such a container is killed at once rather than after the scope's
 * whole stop timeout, as berth's own Stop does.
 */
static void stop_on_term(pid_t child)
{
	kill(child, catches_term(child) ? SIGTERM : SIGKILL);
}

/*
 * handle_ctl reads the launcher's commands: "kill SIG" signals the
 * container (child, when it runs: 0 between restarts), and "stop" says the
 * container is being stopped, so its exit is not to be restarted.
 */
static void handle_ctl(int ctl, pid_t child, int *stopped)
{
	char buf[256];
	ssize_t n = read(ctl, buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		int sig;
		if (strcmp(line, "stop") == 0)
			*stopped = 1;
		else if (sscanf(line, "kill %d", &sig) == 1 && sig > 0 && sig < 65 && child > 0)
			kill(child, sig);
	}
}

/* exec_runtime runs an OCI runtime command; it returns only on failure. */
static void exec_runtime(const struct plan *p, const char *const *argv, char *err, size_t errlen)
{
	if (p->hide_unified) {
		/* Some runtimes refuse a hybrid cgroup layout; hide its empty v2 mount from them. */
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
			fail(err, errlen, "private mount namespace for the runtime");
			return;
		}
		umount2("/sys/fs/cgroup/unified", MNT_DETACH);
	}
	execvp(argv[0], (char *const *)argv);
	fail(err, errlen, "exec runtime %s", argv[0]);
}

/* read_pidfile returns the pid an OCI runtime wrote, or -1. */
static pid_t read_pidfile(const char *path)
{
	char buf[32] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? (pid_t)atoi(buf) : -1;
}

/*
 * start_external runs "runtime create" (already forked as creator) to its
 * end, then "runtime start". As a child subreaper the shim inherits the
 * container's process once the runtime exits, and can reap it like its own.
 */
static pid_t start_external(const struct plan *p, pid_t creator, int outfd, int errfd, char *err, size_t errlen)
{
	int st;
	if (waitpid(creator, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		snprintf(err, errlen, "%s create failed (see the container log)", p->extargs[0]);
		return -1;
	}
	pid_t pid = p->pidfile ? read_pidfile(p->pidfile) : -1;
	if (pid <= 0) {
		snprintf(err, errlen, "%s create wrote no pid file", p->extargs[0]);
		return -1;
	}
	if (p->nextstart == 0)
		return pid;
	pid_t starter = fork();
	if (starter < 0)
		return fail(err, errlen, "fork");
	if (starter == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		dup2(outfd, 1);
		dup2(errfd, 2);
		exec_runtime(p, p->extstart, err, errlen);
		_exit(127);
	}
	if (waitpid(starter, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		snprintf(err, errlen, "%s start failed (see the container log)", p->extargs[0]);
		return -1;
	}
	return pid;
}

/*
 * append_runtime_error adds the last line the runtime wrote to stderr (the
 * reason, such as a missing executable) to err; the processes are gone, so
 * what they wrote waits in the pipe.
 */
static void append_runtime_error(int fd, char *err, size_t errlen)
{
	char buf[4096];
	fcntl(fd, F_SETFL, O_NONBLOCK);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	char *line = strrchr(buf, '\n');
	line = line ? line + 1 : buf;
	size_t used = strlen(err);
	/* A long line is cut to what fits: the reason's start says enough. */
	if (*line && used + 3 < errlen && snprintf(err + used, errlen - used, ": %s", line) < 0)
		err[used] = '\0';
}

/*
 * write_idmaps gives the container's user namespace its maps: container
 * ids 0..size-1 are the host range the plan names. setgroups is denied
 * first (the container has no supplementary groups to set; see
 * enter_userns), so no process inside can drop a group to pass a
 * group-denied permission.
 */
static int write_idmaps(pid_t child, const struct plan *p, char *err, size_t errlen)
{
	char path[64], map[64];
	snprintf(path, sizeof(path), "/proc/%d/setgroups", child);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write_all(fd, "deny", 4) < 0)
		return fail(err, errlen, "user namespace: write %s", path);
	close(fd);
	const char *files[2] = {"uid_map", "gid_map"};
	uint32_t from[2] = {p->userns_uid, p->userns_gid};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", child, files[i]);
		int n = snprintf(map, sizeof(map), "0 %u %u\n", from[i], p->userns_size);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write_all(fd, map, n) < 0)
			return fail(err, errlen, "user namespace: write %s", path);
		close(fd);
	}
	return 0;
}

/*
 * enter_userns readies the shim to clone a container into a user namespace
 * of its own. Supplementary groups go first: the container would keep the
 * host's, unable to drop them once setgroups is denied. A network
 * namespace the host made belongs to the host's user namespace, where the
 * container's root holds no privilege: the shim joins it for the container
 * to inherit, and writes its net.* sysctls itself.
 */
static int enter_userns(struct plan *p, char *err, size_t errlen)
{
	if (!(p->nsflags & CLONE_NEWUSER) || !p->has_userns) {
		snprintf(err, errlen, "plan: a user namespace needs its id maps");
		return -1;
	}
	if (setgroups(0, NULL) < 0)
		return fail(err, errlen, "drop supplementary groups");
	if (!p->netns)
		return 0;
	int fd = open(p->netns, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
		return fail(err, errlen, "join network namespace %s", p->netns);
	close(fd);
	if (apply_sysctls(p, 1, err, errlen) < 0)
		return -1;
	p->netns = NULL;
	p->net_sysctls_done = 1;
	return 0;
}

/* What the shim holds from setup to the container's end. */
struct shim {
	struct plan *p;
	char err[ERRBUF];
	struct logger lg;
	/* The container's stdout and stderr; syncp lets it go once in its cgroups; errpipe carries why it failed to start. */
	int outp[2], errp[2], syncp[2], errpipe[2];
	sigset_t oldmask;
	int sigfd, ctl, external;
	pid_t child;
	/* The container's stdin or terminal from the launcher (-1: none), until the first start hands it over. */
	int stdio_fd, stdio_tty;
	/* The restart policy, and how it has gone: see shim_main. */
	int restart_always, restart_failure, restart_max, restarts, stopped;
	/* Descriptors held for the launcher (its published ports' sockets), keep_first..keep_last; 0 0 for none. */
	int keep_first, keep_last;
	/* The arguments (NUL-ended, onexit_n of them) this binary runs with once the container has ended; NULL for none. */
	char *onexit;
	size_t onexit_len;
	/* The cgroup.procs file the on-exit command joins first; NULL to stay in the shim's cgroup. */
	char *onexit_cgroup;
	/* spawned is set once the first start is reported: fd 3 is gone, and later failures are not reported. */
	int spawned;
	unsigned long long shim_start;
};

/* shim_fail records a start that failed in the exit file and to the launcher. */
static int shim_fail(struct shim *s)
{
	write_exit(s->p, 127, 0, s->err);
	if (!s->spawned)
		report("error %s", s->err);
	return -1;
}

/* write_state records the shim's and the container's pids and the restart count. */
static void write_state(struct shim *s)
{
	if (!s->p->state_path)
		return;
	char st[256];
	snprintf(st, sizeof(st), "{\"shimPid\":%d,\"pid\":%d,\"shimStart\":%llu,\"restarts\":%d}\n", getpid(), s->child,
		 s->shim_start, s->restarts);
	write_atomic(s->p->state_path, st);
}

/* open_pipes makes the pipes of one start of the container. */
static int open_pipes(struct shim *s)
{
	if (pipe2(s->outp, O_CLOEXEC) || pipe2(s->errp, O_CLOEXEC) || pipe2(s->syncp, O_CLOEXEC) || pipe2(s->errpipe, O_CLOEXEC))
		return fail(s->err, sizeof(s->err), "pipe");
	return 0;
}

/*
 * read_launch_env reads what the launcher says beside the plan: the
 * container's stdin or terminal ("stdin FD" or "tty FD") and its restart
 * policy ("always MAX" or "on-failure MAX", MAX 0 for no limit).
 */
static int read_launch_env(struct shim *s, int gated)
{
	s->stdio_fd = -1;
	const char *stdio = getenv(STDIO_ENV);
	if (stdio) {
		char mode[8];
		if (sscanf(stdio, "%7s %d", mode, &s->stdio_fd) != 2 || s->stdio_fd <= REPORT_FD || (gated && s->stdio_fd == GATE_FD) ||
		    (strcmp(mode, "stdin") != 0 && strcmp(mode, "tty") != 0) || fcntl(s->stdio_fd, F_GETFD) < 0) {
			report("error %s=%s: want \"stdin FD\" or \"tty FD\" with FD open", STDIO_ENV, stdio);
			return -1;
		}
		s->stdio_tty = strcmp(mode, "tty") == 0;
	}
	const char *rp = getenv(RESTART_ENV);
	if (rp) {
		char pol[16];
		if (sscanf(rp, "%15s %d", pol, &s->restart_max) != 2 || s->restart_max < 0 ||
		    (strcmp(pol, "always") != 0 && strcmp(pol, "on-failure") != 0) || s->p->nextargs > 0 || stdio ||
		    (s->p->nsflags & CLONE_NEWUSER) || s->p->has_userns) {
			report("error %s=%s: want \"always MAX\" or \"on-failure MAX\", the built-in executor, no stdin and no user namespace",
			       RESTART_ENV, rp);
			return -1;
		}
		s->restart_always = strcmp(pol, "always") == 0;
		s->restart_failure = !s->restart_always;
	}
	const char *keep = getenv(KEEP_ENV);
	if (keep && (sscanf(keep, "%d %d", &s->keep_first, &s->keep_last) != 2 || s->keep_first <= REPORT_FD ||
		     s->keep_last < s->keep_first)) {
		report("error %s=%s: want \"FIRST LAST\", descriptors above %d", KEEP_ENV, keep, REPORT_FD);
		return -1;
	}
	const char *onexit = getenv(ONEXIT_ENV);
	if (onexit) {
		int fd = open(onexit, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || read_all(fd, &s->onexit, &s->onexit_len) < 0 || s->onexit_len == 0 ||
		    s->onexit[s->onexit_len - 1] != '\0') {
			report("error %s=%s: want a file of NUL-ended arguments: %s", ONEXIT_ENV, onexit, strerror(errno));
			return -1;
		}
		close(fd);
		const char *cg = getenv(ONEXIT_CGROUP_ENV);
		s->onexit_cgroup = cg ? strdup(cg) : NULL;
	}
	unsetenv(STDIO_ENV);
	unsetenv(RESTART_ENV);
	unsetenv(KEEP_ENV);
	unsetenv(ONEXIT_ENV);
	unsetenv(ONEXIT_CGROUP_ENV);
	return 0;
}

/* load_plan reads the launch plan named in the environment into s->p. */
static int load_plan(struct shim *s)
{
	const char *planpath = getenv(PLAN_ENV);
	char *buf;
	size_t len;
	s->p = calloc(1, sizeof(*s->p));
	int pfd = planpath ? open(planpath, O_RDONLY | O_CLOEXEC) : -1;
	if (!s->p || pfd < 0 || read_all(pfd, &buf, &len) < 0) {
		report("error read launch plan %s: %s", planpath ? planpath : "(unset)", strerror(errno));
		return -1;
	}
	close(pfd);
	if (plan_read(buf, len, s->p, s->err, sizeof(s->err)) < 0) {
		report("error %s", s->err);
		return -1;
	}
	return 0;
}

/* wait_gate waits for the launcher's byte saying the cgroups and the network namespace are ready. */
static int wait_gate(void)
{
	char ok;
	ssize_t n;
	do
		n = read(GATE_FD, &ok, 1);
	while (n < 0 && errno == EINTR);
	close(GATE_FD);
	if (n != 1) {
		report("error the launcher could not ready the container");
		return -1;
	}
	return 0;
}

/*
 * shim_setup reads the plan and readies everything the container's start
 * needs: descriptors, signals, the log, the pipes, the control FIFO and,
 * when the launcher gates the start, its go-ahead.
 */
static int shim_setup(struct shim *s)
{
	if (load_plan(s) < 0)
		return -1;
	struct plan *p = s->p;
	int gated = getenv(GATE_ENV) != NULL;
	if (read_launch_env(s, gated) < 0)
		return -1;
	fcntl(REPORT_FD, F_SETFD, FD_CLOEXEC);
	/* Descriptors the launcher inherited without close-on-exec must not reach the container. */
	syscall(SYS_close_range, REPORT_FD + 1, ~0U, CLOSE_RANGE_CLOEXEC);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	unsetenv(STAGE_ENV);
	unsetenv(PLAN_ENV);
	unsetenv(GATE_ENV);

	s->lg = (struct logger){.path = p->log_path, .fd = -1, .max = p->log_max, .files = p->log_files};
	if (s->lg.path && log_open(&s->lg) < 0) {
		report("error open log %s: %s", s->lg.path, strerror(errno));
		return -1;
	}
	if (open_pipes(s) < 0) {
		report("error %s", s->err);
		return -1;
	}
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, &s->oldmask);
	/* Blocked, SIGTERM waits in the signalfd (an ignored one would be lost). */
	signal(SIGTERM, SIG_DFL);
	s->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	s->ctl = p->ctl_path ? open(p->ctl_path, O_RDWR | O_NONBLOCK | O_CLOEXEC) : -1;

	s->external = p->nextargs > 0;
	if (s->external && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		report("error become a child subreaper: %s", strerror(errno));
		return -1;
	}
	/*
	 * The launcher makes the cgroups and wires the network namespace
	 * while this process starts: one byte says they are ready. Before
	 * the clone, so that the container's mount namespace, a copy of
	 * this one, holds the namespace's bind mount.
	 */
	if (gated && wait_gate() < 0)
		return -1;
	return 0;
}

/* child_main is the container's side of the clone (or the fork that runs an external runtime). */
static void __attribute__((noreturn)) child_main(struct shim *s)
{
	char *err = s->err;
	size_t errlen = sizeof(s->err);
	sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	/* After the first start fd 3 is closed, and may be one of this start's pipes. */
	if (!s->spawned)
		close(REPORT_FD);
	close(s->syncp[1]);
	/* The held sockets are the host's: not even berth's init keeps them in the container. */
	if (s->keep_first > 0)
		syscall(SYS_close_range, s->keep_first, s->keep_last, 0);
	int devnull = open("/dev/null", O_RDONLY);
	int in = s->stdio_fd >= 0 ? s->stdio_fd : devnull;
	int out = s->stdio_tty ? s->stdio_fd : s->outp[1], errout = s->stdio_tty ? s->stdio_fd : s->errp[1];
	if (s->stdio_tty && (setsid() < 0 || ioctl(s->stdio_fd, TIOCSCTTY, 0) < 0)) {
		/* A session of its own, led by the container, whose terminal this is. */
		fail(err, errlen, "make the terminal the container's");
	} else if (devnull < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(errout, 2) < 0) {
		fail(err, errlen, "set up stdio");
	} else {
		if (devnull > 2)
			close(devnull);
		if (s->stdio_fd > 2)
			close(s->stdio_fd);
		/* Both return only when they could not exec. */
		if (s->external)
			exec_runtime(s->p, s->p->extargs, err, errlen);
		else
			container_init(s->p, s->syncp[0], s->errpipe[1], err, errlen);
	}
	write_all(s->errpipe[1], err, strlen(err));
	_exit(127);
}

/* join_cgroups moves the child into the plan's cgroups. */
static int join_cgroups(struct shim *s)
{
	char pidstr[32];
	snprintf(pidstr, sizeof(pidstr), "%d", s->child);
	for (int i = 0; i < s->p->ncgroups; i++) {
		int fd = open(s->p->cgroups[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write_all(fd, pidstr, strlen(pidstr)) < 0) {
			fail(s->err, sizeof(s->err), "join cgroup %s", s->p->cgroups[i]);
			kill(s->child, SIGKILL);
			waitpid(s->child, NULL, 0);
			return -1;
		}
		close(fd);
	}
	return 0;
}

/* read_start_error reads why the child could not exec: "" when it did (the pipe closed on exec). */
static size_t read_start_error(struct shim *s)
{
	size_t el = 0;
	for (;;) {
		ssize_t n = read(s->errpipe[0], s->err + el, sizeof(s->err) - 1 - el);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		el += n;
		if (el >= sizeof(s->err) - 1)
			break;
	}
	s->err[el] = '\0';
	close(s->errpipe[0]);
	return el;
}

/*
 * shim_spawn starts the container: clones the built-in init (or forks the
 * external runtime), puts it in its cgroups, lets it go, and reports its
 * pid once the workload has been exec'd.
 */
static int shim_spawn(struct shim *s)
{
	struct plan *p = s->p;
	int userns = !s->external && (p->nsflags & CLONE_NEWUSER || p->has_userns);
	if (userns && enter_userns(p, s->err, sizeof(s->err)) < 0)
		return shim_fail(s);
	if (s->external)
		s->child = fork();
	else
		s->child = syscall(SYS_clone, (p->nsflags & ~(uint64_t)CLONE_NEWCGROUP) | SIGCHLD, 0, 0, 0, 0);
	if (s->child < 0) {
		fail(s->err, sizeof(s->err), "start container");
		return shim_fail(s);
	}
	if (s->child == 0)
		child_main(s);
	close(s->syncp[0]);
	close(s->errpipe[1]);
	if (userns && write_idmaps(s->child, p, s->err, sizeof(s->err)) < 0) {
		kill(s->child, SIGKILL);
		waitpid(s->child, NULL, 0);
		return shim_fail(s);
	}
	/* Only the container holds its stdin or terminal: its exit ends them. */
	if (s->stdio_fd >= 0) {
		close(s->stdio_fd);
		s->stdio_fd = -1;
		s->stdio_tty = 0;
	}
	if (join_cgroups(s) < 0)
		return shim_fail(s);
	write_all(s->syncp[1], "g", 1);
	close(s->syncp[1]);

	size_t el = read_start_error(s);
	if (el > 0) {
		int st;
		waitpid(s->child, &st, 0);
		log_record(&s->lg, "stderr", 'F', s->err, el);
		return shim_fail(s);
	}
	if (s->external) {
		pid_t creator = s->child;
		s->child = start_external(p, creator, s->outp[1], s->errp[1], s->err, sizeof(s->err));
		if (s->child < 0) {
			append_runtime_error(s->errp[0], s->err, sizeof(s->err));
			return shim_fail(s);
		}
	}
	/* Only the container may hold the write ends now, so its exit closes them. */
	close(s->outp[1]);
	close(s->errp[1]);
	if (!s->spawned) {
		s->shim_start = self_start_time();
		write_state(s);
		report("ok %d", s->child);
		s->spawned = 1;
	} else {
		write_state(s);
	}
	return 0;
}

/* drain reads what is ready on the container's stdout and stderr into the log, closing each at its end. */
static void drain(struct shim *s, struct stream *ss[2], const struct pollfd *fds, const int idx[2])
{
	char rbuf[65536];
	for (int k = 0; k < 2; k++) {
		if (idx[k] < 0 || !(fds[idx[k]].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		ssize_t n = read(ss[k]->fd, rbuf, sizeof(rbuf));
		if (n > 0) {
			stream_feed(&s->lg, ss[k], rbuf, n);
		} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
			stream_flush(&s->lg, ss[k]);
			close(ss[k]->fd);
			ss[k]->fd = -1;
		}
	}
}

/*
 * reap collects exited children; 1 when the container's was one, with its
 * status. A SIGTERM among the signals read stops a container still running.
 */
static int reap(struct shim *s, int exited, int *status)
{
	struct signalfd_siginfo si;
	int term = 0;
	while (read(s->sigfd, &si, sizeof(si)) == sizeof(si))
		term |= si.ssi_signo == SIGTERM;
	/* A SIGTERM stops the container for good: no restart after it. */
	if (term)
		s->stopped = 1;
	/* Before the reap below: a reaped pid may belong to someone else. */
	if (term && !exited && s->child > 0)
		stop_on_term(s->child);
	int st, found = 0;
	pid_t w;
	while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
		if (w == s->child) {
			found = 1;
			*status = st;
		}
	}
	return found;
}

/*
 * shim_supervise logs the container's output, passes on the control
 * FIFO's signals and reaps it; it returns its wait status once it has
 * exited and its output is closed (or 2 s later, for a stray descendant).
 */
static int shim_supervise(struct shim *s)
{
	struct stream so = {.fd = s->outp[0], .name = "stdout"}, se = {.fd = s->errp[0], .name = "stderr"};
	struct stream *ss[2] = {&so, &se};
	int exited = 0, status = 0;
	struct timespec deadline = {0};
	while (!exited || so.fd >= 0 || se.fd >= 0) {
		struct pollfd fds[4];
		int nf = 0, idx[2] = {-1, -1}, isig, ictl = -1;
		for (int k = 0; k < 2; k++) {
			if (ss[k]->fd >= 0) {
				idx[k] = nf;
				fds[nf++] = (struct pollfd){.fd = ss[k]->fd, .events = POLLIN};
			}
		}
		isig = nf;
		fds[nf++] = (struct pollfd){.fd = s->sigfd, .events = POLLIN};
		if (s->ctl >= 0 && !exited) {
			ictl = nf;
			fds[nf++] = (struct pollfd){.fd = s->ctl, .events = POLLIN};
		}
		int timeout = -1;
		if (exited) {
			/* Output still open after the main process died belongs to a stray descendant: give it 2 s. */
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long ms = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
			if (ms <= 0)
				break;
			timeout = (int)ms;
		}
		int r = poll(fds, nf, timeout);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		drain(s, ss, fds, idx);
		if ((fds[isig].revents & POLLIN) && reap(s, exited, &status)) {
			exited = 1;
			clock_gettime(CLOCK_MONOTONIC, &deadline);
			deadline.tv_sec += 2;
		}
		/* Once reaped, the pid may belong to someone else: signal no more. */
		if (ictl >= 0 && !exited && (fds[ictl].revents & POLLIN))
			handle_ctl(s->ctl, s->child, &s->stopped);
	}
	for (int k = 0; k < 2; k++) {
		stream_flush(&s->lg, ss[k]);
		if (ss[k]->fd >= 0)
			close(ss[k]->fd);
	}
	return status;
}

/*
 * restart_pause waits before a restart: 100 ms, doubling with each
 * restart in a row to 10 s, back to 100 ms after a run of 10 s. It
 * listens to the control FIFO meanwhile, and says whether to go on (no
 * "stop" came).
 */
static int restart_pause(struct shim *s, const struct timespec *began)
{
	static int streak;
	struct timespec now, until;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec - began->tv_sec >= 10)
		streak = 0;
	long pause = 100L << (streak < 7 ? streak : 7);
	if (pause > 10000)
		pause = 10000;
	streak++;
	until = now;
	until.tv_sec += pause / 1000;
	until.tv_nsec += (pause % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while (!s->stopped) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long ms = (until.tv_sec - now.tv_sec) * 1000 + (until.tv_nsec - now.tv_nsec) / 1000000;
		if (ms <= 0)
			break;
		struct pollfd pf = {.fd = s->ctl, .events = POLLIN};
		if (poll(&pf, s->ctl >= 0 ? 1 : 0, (int)ms) > 0 && (pf.revents & POLLIN))
			handle_ctl(s->ctl, 0, &s->stopped);
	}
	return !s->stopped;
}

/* How long the shim waits for the on-exit command before it ends anyway. */
#define ONEXIT_WAIT_MS 30000

/* on_exit_spawn starts this binary with the launcher's on-exit arguments; the pid, or -1. */
static pid_t on_exit_spawn(struct shim *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->onexit_len; i++)
		n += s->onexit[i] == '\0';
	char **argv = calloc(n + 1, sizeof(char *));
	if (!argv)
		return -1;
	char *a = s->onexit;
	for (size_t i = 0; i < n; i++, a += strlen(a) + 1)
		argv[i] = a;
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	if (s->onexit_cgroup) {
		/* Out of the container's scope, where its limits would count it; staying is no failure. */
		int cfd = open(s->onexit_cgroup, O_WRONLY | O_CLOEXEC);
		if (cfd >= 0) {
			char pid[24];
			int k = snprintf(pid, sizeof(pid), "%d\n", getpid());
			write_all(cfd, pid, k);
			close(cfd);
		}
	}
	/* Out of the bundle, which may be removed meanwhile. The kept descriptors close on exec. */
	if (chdir("/") < 0)
		_exit(127);
	char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	execve("/proc/self/exe", argv, envp);
	_exit(127);
}

/*
 * on_exit_run runs once the container has ended for good and its exit
 * file is written. It runs the launcher's on-exit command (a -p
 * container's takes its port rules out) and waits for it, up to
 * ONEXIT_WAIT_MS, and only then closes the kept descriptors: a host port
 * is never free while a rule still sends its traffic to the ended
 * container. The command's outcome is not the container's.
 */
static void on_exit_run(struct shim *s)
{
	pid_t pid = s->onexit ? on_exit_spawn(s) : -1;
	for (int waited = 0; pid > 0 && waited < ONEXIT_WAIT_MS; waited += 5) {
		pid_t r = waitpid(pid, NULL, WNOHANG);
		if (r == pid || (r < 0 && errno != EINTR))
			break;
		struct timespec pause = {.tv_nsec = 5000000};
		nanosleep(&pause, NULL);
	}
	if (s->keep_first > 0)
		syscall(SYS_close_range, s->keep_first, s->keep_last, 0);
}

/*
 * shim_main starts the container and supervises it; by the restart
 * policy it starts it again when it exits (always, or on a non-zero exit
 * up to the policy's count), unless the launcher said "stop" (berth
 * container stop and kill do). The shim is what restarts: it outlives
 * every berth command, and the container keeps its bundle, cgroups,
 * network and log.
 */
int shim_main(void)
{
	static struct shim s;
	if (shim_setup(&s) < 0 || shim_spawn(&s) < 0)
		return 1;
	for (;;) {
		struct timespec began;
		clock_gettime(CLOCK_MONOTONIC, &began);
		int status = shim_supervise(&s);
		int code = 0, sig = 0;
		if (WIFEXITED(status)) {
			code = WEXITSTATUS(status);
		} else if (WIFSIGNALED(status)) {
			sig = WTERMSIG(status);
			code = 128 + sig;
		}
		int again = !s.stopped && (s.restart_always || (s.restart_failure && code != 0)) &&
			    (s.restart_max == 0 || s.restarts < s.restart_max);
		if (!again || !restart_pause(&s, &began)) {
			write_exit(s.p, code, sig, NULL);
			on_exit_run(&s);
			return 0;
		}
		s.restarts++;
		if (open_pipes(&s) < 0 || shim_spawn(&s) < 0) {
			write_exit(s.p, 127, 0, s.err);
			on_exit_run(&s);
			return 0;
		}
	}
}
