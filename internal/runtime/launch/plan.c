#include <string.h>
#include <stdio.h>
#include "plan.h"

static int take_str(const char *payload, uint32_t n, const char **out)
{
	if (n == 0 || payload[n - 1] != '\0')
		return -1;
	*out = payload;
	return 0;
}

static uint64_t get64(const char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static uint32_t get32(const char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* The plan field a one-string record fills; NULL for other records. */
static const char **str_field(struct plan *p, uint16_t type)
{
	switch (type) {
	case REC_PIDFILE: return &p->pidfile;
	case REC_OVERLAY: return &p->overlay;
	case REC_CWD: return &p->cwd;
	case REC_HOSTNAME: return &p->hostname;
	case REC_ROOTFS: return &p->rootfs;
	case REC_NETNS: return &p->netns;
	case REC_EXIT: return &p->exit_path;
	case REC_STATE: return &p->state_path;
	case REC_CTL: return &p->ctl_path;
	default: return NULL;
	}
}

/*
 * The list a record appends a string to, with its count and how many it
 * may hold (argv-like lists keep a slot for the terminating NULL); 0 for
 * other records.
 */
static int list_field(struct plan *p, uint16_t type, const char ***list, int **count, int *max)
{
	switch (type) {
	case REC_ARG: *list = p->args, *count = &p->nargs, *max = MAX_ITEMS - 1; return 1;
	case REC_ENV: *list = p->env, *count = &p->nenv, *max = MAX_ITEMS; return 1;
	case REC_EXTARG: *list = p->extargs, *count = &p->nextargs, *max = MAX_ITEMS - 1; return 1;
	case REC_EXTSTART: *list = p->extstart, *count = &p->nextstart, *max = MAX_ITEMS - 1; return 1;
	case REC_MASK: *list = p->masks, *count = &p->nmasks, *max = MAX_ITEMS; return 1;
	case REC_RO: *list = p->ros, *count = &p->nros, *max = MAX_ITEMS; return 1;
	case REC_SYSCTL: *list = p->sysctls, *count = &p->nsysctls, *max = MAX_ITEMS; return 1;
	case REC_CGROUP: *list = p->cgroups, *count = &p->ncgroups, *max = MAX_CGROUPS; return 1;
	default: return 0;
	}
}

/* The records below return 0 when well formed, 1 when not. */

static int read_mount(struct plan *p, const char *pl, uint32_t n)
{
	if (p->nmounts >= MAX_ITEMS || n < 12)
		return 1;
	struct mountrec *m = &p->mounts[p->nmounts++];
	m->flags = get64(pl);
	m->kind = get32(pl + 8);
	const char *s = pl + 12, *end = pl + n;
	const char **fields[4] = {&m->source, &m->target, &m->fstype, &m->data};
	for (int i = 0; i < 4; i++) {
		const char *z = memchr(s, '\0', end - s);
		if (!z)
			return 1;
		*fields[i] = s;
		s = z + 1;
	}
	return 0;
}

static int read_rlimit(struct plan *p, const char *pl, uint32_t n)
{
	if (n != 20 || p->nrlimits >= MAX_RLIMITS)
		return 1;
	p->rlimits[p->nrlimits].resource = get32(pl);
	p->rlimits[p->nrlimits].soft = get64(pl + 4);
	p->rlimits[p->nrlimits].hard = get64(pl + 12);
	p->nrlimits++;
	return 0;
}

static int read_caps(struct plan *p, const char *pl, uint32_t n)
{
	if (n != 40)
		return 1;
	p->has_caps = 1;
	p->cap_bounding = get64(pl);
	p->cap_effective = get64(pl + 8);
	p->cap_permitted = get64(pl + 16);
	p->cap_inheritable = get64(pl + 24);
	p->cap_ambient = get64(pl + 32);
	return 0;
}

static int read_user(struct plan *p, const char *pl, uint32_t n)
{
	if (n < 12)
		return 1;
	p->has_user = 1;
	p->uid = get32(pl);
	p->gid = get32(pl + 4);
	p->ngids = get32(pl + 8);
	if (p->ngids > MAX_GIDS || n != 12 + 4 * p->ngids)
		return 1;
	for (uint32_t i = 0; i < p->ngids; i++)
		p->gids[i] = get32(pl + 12 + 4 * i);
	return 0;
}

static int read_log(struct plan *p, const char *pl, uint32_t n)
{
	if (n < 13 || take_str(pl + 12, n - 12, &p->log_path))
		return 1;
	p->log_max = get64(pl);
	p->log_files = get32(pl + 8);
	return 0;
}

/* read_record fills p from one record: 0 when well formed, 1 when not, -1 for an unknown type. */
static int read_record(struct plan *p, uint16_t type, const char *pl, uint32_t n)
{
	const char **str = str_field(p, type);
	const char **list;
	int *count, max;
	if (str)
		return take_str(pl, n, str) ? 1 : 0;
	if (list_field(p, type, &list, &count, &max))
		return *count >= max || take_str(pl, n, &list[(*count)++]);
	switch (type) {
	case REC_ROOTFS_RO: p->rootfs_ro = 1; return 0;
	case REC_NNP: p->nnp = 1; return 0;
	case REC_INIT: p->init = 1; return 0;
	case REC_HIDE_UNIFIED: p->hide_unified = 1; return 0;
	case REC_MOUNT: return read_mount(p, pl, n);
	case REC_RLIMIT: return read_rlimit(p, pl, n);
	case REC_CAPS: return read_caps(p, pl, n);
	case REC_USER: return read_user(p, pl, n);
	case REC_LOG: return read_log(p, pl, n);
	case REC_NSFLAGS:
		if (n != 8)
			return 1;
		p->nsflags = get64(pl);
		return 0;
	case REC_SECCOMP:
		p->seccomp = (const unsigned char *)pl;
		p->seccomp_len = n;
		return n % 8 != 0;
	case REC_OOMSCORE:
		if (n != 4)
			return 1;
		p->has_oom = 1;
		memcpy(&p->oomscore, pl, 4);
		return 0;
	case REC_PID:
		if (n != 4)
			return 1;
		memcpy(&p->pid, pl, 4);
		return 0;
	case REC_USERNS:
		if (n != 12)
			return 1;
		p->has_userns = 1;
		p->userns_uid = get32(pl);
		p->userns_gid = get32(pl + 4);
		p->userns_size = get32(pl + 8);
		return 0;
	default:
		return -1;
	}
}

int plan_read(char *buf, size_t len, struct plan *p, char *err, size_t errlen)
{
	size_t off = 0;
	memset(p, 0, sizeof(*p));
	p->pid = -1;
	while (off < len) {
		if (len - off < 6) {
			snprintf(err, errlen, "plan: truncated record header at %zu", off);
			return -1;
		}
		uint16_t type;
		memcpy(&type, buf + off, 2);
		uint32_t n = get32(buf + off + 2);
		off += 6;
		if (n > len - off) {
			snprintf(err, errlen, "plan: record %u at %zu overruns the plan", type, off);
			return -1;
		}
		int r = read_record(p, type, buf + off, n);
		off += n;
		if (r < 0) {
			snprintf(err, errlen, "plan: unknown record type %u", type);
			return -1;
		}
		if (r) {
			snprintf(err, errlen, "plan: malformed record type %u", type);
			return -1;
		}
	}
	p->args[p->nargs] = NULL;
	p->env[p->nenv] = NULL;
	p->extargs[p->nextargs] = NULL;
	p->extstart[p->nextstart] = NULL;
	return 0;
}
