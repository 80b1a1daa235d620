/*
 * Process settings shared by the container init and exec: identity,
 * capabilities, no_new_privs, seccomp, rlimits, and the final execve.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "launch.h"

static int last_cap(void)
{
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 40;
	char buf[16] = {0};
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 40;
	return atoi(buf);
}

static int load_seccomp(const struct plan *p, char *err, size_t errlen)
{
	if (!p->seccomp_len)
		return 0;
	struct sock_fprog prog = {
		.len = p->seccomp_len / 8,
		.filter = (struct sock_filter *)p->seccomp,
	};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return fail(err, errlen, "load seccomp filter");
	return 0;
}

int apply_rlimits(const struct plan *p, char *err, size_t errlen)
{
	for (int i = 0; i < p->nrlimits; i++) {
		struct rlimit rl = {.rlim_cur = p->rlimits[i].soft, .rlim_max = p->rlimits[i].hard};
		if (setrlimit(p->rlimits[i].resource, &rl) < 0)
			return fail(err, errlen, "setrlimit %u to %llu:%llu", p->rlimits[i].resource,
				    (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
	}
	return 0;
}

/* apply_process switches identity and privileges; the caller execs next. */
int apply_process(const struct plan *p, char *err, size_t errlen)
{
	if (p->nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(err, errlen, "set no_new_privs");
	/* Without no_new_privs only CAP_SYS_ADMIN may load a filter, so load it while we still have it. */
	if (!p->nnp && load_seccomp(p, err, errlen) < 0)
		return -1;
	if (p->has_caps) {
		int last = last_cap();
		for (int c = 0; c <= last; c++) {
			if (p->cap_bounding & (1ULL << c))
				continue;
			if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
				return fail(err, errlen, "drop capability %d from the bounding set", c);
		}
	}
	if (p->has_user) {
		if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
			return fail(err, errlen, "keep capabilities");
		/* Where setgroups is denied (a user namespace) a process has no groups left to clear. */
		if ((p->ngids > 0 || getgroups(0, NULL) != 0) && setgroups(p->ngids, (gid_t *)p->gids) < 0)
			return fail(err, errlen, "setgroups");
		if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0)
			return fail(err, errlen, "setgid %u", p->gid);
		if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0)
			return fail(err, errlen, "setuid %u", p->uid);
	}
	if (p->has_caps) {
		struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
		struct __user_cap_data_struct data[2] = {
			{.effective = (uint32_t)p->cap_effective, .permitted = (uint32_t)p->cap_permitted, .inheritable = (uint32_t)p->cap_inheritable},
			{.effective = (uint32_t)(p->cap_effective >> 32), .permitted = (uint32_t)(p->cap_permitted >> 32), .inheritable = (uint32_t)(p->cap_inheritable >> 32)},
		};
		if (syscall(SYS_capset, &hdr, data) < 0)
			return fail(err, errlen, "set capabilities");
		for (int c = 0; c < 64; c++) {
			if (!(p->cap_ambient & (1ULL << c)))
				continue;
			if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
				return fail(err, errlen, "raise ambient capability %d", c);
		}
	}
	if (p->nnp && load_seccomp(p, err, errlen) < 0)
		return -1;
	return 0;
}

static const char *env_path(const struct plan *p)
{
	for (int i = 0; i < p->nenv; i++)
		if (strncmp(p->env[i], "PATH=", 5) == 0)
			return p->env[i] + 5;
	return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

/* exec_plan runs the plan's argv with the plan's environment, searching PATH from that environment. */
int exec_plan(const struct plan *p, char *err, size_t errlen)
{
	if (p->nargs == 0) {
		snprintf(err, errlen, "no command to run");
		return -1;
	}
	const char *file = p->args[0];
	if (strchr(file, '/')) {
		execve(file, (char *const *)p->args, (char *const *)p->env);
		return fail(err, errlen, "exec %s", file);
	}
	const char *path = env_path(p);
	int saved = ENOENT;
	char full[4096];
	while (*path) {
		const char *colon = strchr(path, ':');
		size_t dl = colon ? (size_t)(colon - path) : strlen(path);
		if (dl + strlen(file) + 2 < sizeof(full)) {
			if (dl == 0)
				snprintf(full, sizeof(full), "./%s", file);
			else
				snprintf(full, sizeof(full), "%.*s/%s", (int)dl, path, file);
			execve(full, (char *const *)p->args, (char *const *)p->env);
			if (errno != ENOENT && errno != ENOTDIR)
				saved = errno;
		}
		if (!colon)
			break;
		path = colon + 1;
	}
	errno = saved;
	return fail(err, errlen, "exec %s: not found in PATH", file);
}
