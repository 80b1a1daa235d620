#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include "plan.h"

struct out {
	char *buf;
	size_t len, cap;
	int over;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	if (o->over)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len)
		o->over = 1;
	else
		o->len += n;
}

static void strs(struct out *o, const char *name, const char *const *v, int n)
{
	for (int i = 0; i < n; i++)
		put(o, "%s %s\n", name, v[i]);
}

static void str(struct out *o, const char *name, const char *v)
{
	if (v)
		put(o, "%s %s\n", name, v);
}

int plan_dump(const struct plan *p, char *buf, size_t cap)
{
	struct out o = {.buf = buf, .cap = cap};
	strs(&o, "arg", p->args, p->nargs);
	strs(&o, "env", p->env, p->nenv);
	strs(&o, "extarg", p->extargs, p->nextargs);
	strs(&o, "extstart", p->extstart, p->nextstart);
	str(&o, "pidfile", p->pidfile);
	str(&o, "cwd", p->cwd);
	str(&o, "hostname", p->hostname);
	str(&o, "rootfs", p->rootfs);
	str(&o, "overlay", p->overlay);
	str(&o, "netns", p->netns);
	str(&o, "exit", p->exit_path);
	str(&o, "state", p->state_path);
	str(&o, "ctl", p->ctl_path);
	if (p->rootfs_ro)
		put(&o, "rootfs_ro\n");
	if (p->nnp)
		put(&o, "nnp\n");
	if (p->hide_unified)
		put(&o, "hide_unified\n");
	if (p->init)
		put(&o, "init\n");
	for (int i = 0; i < p->nmounts; i++) {
		const struct mountrec *m = &p->mounts[i];
		put(&o, "mount %" PRIu64 " %" PRIu32 " [%s] [%s] [%s] [%s]\n", m->flags, m->kind, m->source, m->target, m->fstype, m->data);
	}
	strs(&o, "mask", p->masks, p->nmasks);
	strs(&o, "ro", p->ros, p->nros);
	strs(&o, "sysctl", p->sysctls, p->nsysctls);
	for (int i = 0; i < p->nrlimits; i++)
		put(&o, "rlimit %" PRIu32 " %" PRIu64 " %" PRIu64 "\n", p->rlimits[i].resource, p->rlimits[i].soft, p->rlimits[i].hard);
	strs(&o, "cgroup", p->cgroups, p->ncgroups);
	if (p->nsflags)
		put(&o, "nsflags %" PRIu64 "\n", p->nsflags);
	if (p->seccomp_len) {
		put(&o, "seccomp ");
		for (uint32_t i = 0; i < p->seccomp_len; i++)
			put(&o, "%02x", p->seccomp[i]);
		put(&o, "\n");
	}
	if (p->has_caps)
		put(&o, "caps %" PRIx64 " %" PRIx64 " %" PRIx64 " %" PRIx64 " %" PRIx64 "\n", p->cap_bounding, p->cap_effective,
		    p->cap_permitted, p->cap_inheritable, p->cap_ambient);
	if (p->has_user) {
		put(&o, "user %" PRIu32 " %" PRIu32, p->uid, p->gid);
		for (uint32_t i = 0; i < p->ngids; i++)
			put(&o, " %" PRIu32, p->gids[i]);
		put(&o, "\n");
	}
	if (p->has_oom)
		put(&o, "oom %" PRId32 "\n", p->oomscore);
	if (p->log_path)
		put(&o, "log %" PRIu64 " %" PRIu32 " %s\n", p->log_max, p->log_files, p->log_path);
	if (p->pid > 0)
		put(&o, "pid %" PRId32 "\n", p->pid);
	if (p->has_userns)
		put(&o, "userns %" PRIu32 " %" PRIu32 " %" PRIu32 "\n", p->userns_uid, p->userns_gid, p->userns_size);
	return o.over ? -1 : (int)o.len;
}
