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
		char *pl = buf + off;
		off += n;
		int bad = 0;
		switch (type) {
		case REC_ARG:
			if (p->nargs >= MAX_ITEMS - 1 || take_str(pl, n, &p->args[p->nargs++]))
				bad = 1;
			break;
		case REC_ENV:
			if (p->nenv >= MAX_ITEMS || take_str(pl, n, &p->env[p->nenv++]))
				bad = 1;
			break;
		case REC_EXTARG:
			if (p->nextargs >= MAX_ITEMS - 1 || take_str(pl, n, &p->extargs[p->nextargs++]))
				bad = 1;
			break;
		case REC_EXTSTART:
			if (p->nextstart >= MAX_ITEMS - 1 || take_str(pl, n, &p->extstart[p->nextstart++]))
				bad = 1;
			break;
		case REC_PIDFILE: bad = take_str(pl, n, &p->pidfile); break;
		case REC_OVERLAY: bad = take_str(pl, n, &p->overlay); break;
		case REC_CWD: bad = take_str(pl, n, &p->cwd); break;
		case REC_HOSTNAME: bad = take_str(pl, n, &p->hostname); break;
		case REC_ROOTFS: bad = take_str(pl, n, &p->rootfs); break;
		case REC_NETNS: bad = take_str(pl, n, &p->netns); break;
		case REC_EXIT: bad = take_str(pl, n, &p->exit_path); break;
		case REC_STATE: bad = take_str(pl, n, &p->state_path); break;
		case REC_CTL: bad = take_str(pl, n, &p->ctl_path); break;
		case REC_ROOTFS_RO: p->rootfs_ro = 1; break;
		case REC_NNP: p->nnp = 1; break;
		case REC_INIT: p->init = 1; break;
		case REC_HIDE_UNIFIED: p->hide_unified = 1; break;
		case REC_MASK:
			if (p->nmasks >= MAX_ITEMS || take_str(pl, n, &p->masks[p->nmasks++]))
				bad = 1;
			break;
		case REC_RO:
			if (p->nros >= MAX_ITEMS || take_str(pl, n, &p->ros[p->nros++]))
				bad = 1;
			break;
		case REC_SYSCTL:
			if (p->nsysctls >= MAX_ITEMS || take_str(pl, n, &p->sysctls[p->nsysctls++]))
				bad = 1;
			break;
		case REC_CGROUP:
			if (p->ncgroups >= MAX_CGROUPS || take_str(pl, n, &p->cgroups[p->ncgroups++]))
				bad = 1;
			break;
		case REC_MOUNT: {
			if (p->nmounts >= MAX_ITEMS || n < 12) {
				bad = 1;
				break;
			}
			struct mountrec *m = &p->mounts[p->nmounts++];
			m->flags = get64(pl);
			m->kind = get32(pl + 8);
			const char *s = pl + 12, *end = pl + n;
			const char **fields[4] = {&m->source, &m->target, &m->fstype, &m->data};
			for (int i = 0; i < 4; i++) {
				const char *z = memchr(s, '\0', end - s);
				if (!z) {
					bad = 1;
					break;
				}
				*fields[i] = s;
				s = z + 1;
			}
			break;
		}
		case REC_RLIMIT:
			if (n != 20 || p->nrlimits >= MAX_RLIMITS) {
				bad = 1;
				break;
			}
			p->rlimits[p->nrlimits].resource = get32(pl);
			p->rlimits[p->nrlimits].soft = get64(pl + 4);
			p->rlimits[p->nrlimits].hard = get64(pl + 12);
			p->nrlimits++;
			break;
		case REC_NSFLAGS:
			if (n != 8) bad = 1; else p->nsflags = get64(pl);
			break;
		case REC_SECCOMP:
			if (n % 8 != 0) bad = 1;
			p->seccomp = (const unsigned char *)pl;
			p->seccomp_len = n;
			break;
		case REC_CAPS:
			if (n != 40) {
				bad = 1;
				break;
			}
			p->has_caps = 1;
			p->cap_bounding = get64(pl);
			p->cap_effective = get64(pl + 8);
			p->cap_permitted = get64(pl + 16);
			p->cap_inheritable = get64(pl + 24);
			p->cap_ambient = get64(pl + 32);
			break;
		case REC_USER:
			if (n < 12) {
				bad = 1;
				break;
			}
			p->has_user = 1;
			p->uid = get32(pl);
			p->gid = get32(pl + 4);
			p->ngids = get32(pl + 8);
			if (p->ngids > MAX_GIDS || n != 12 + 4 * p->ngids) {
				bad = 1;
				break;
			}
			for (uint32_t i = 0; i < p->ngids; i++)
				p->gids[i] = get32(pl + 12 + 4 * i);
			break;
		case REC_OOMSCORE:
			if (n != 4) {
				bad = 1;
				break;
			}
			p->has_oom = 1;
			memcpy(&p->oomscore, pl, 4);
			break;
		case REC_LOG:
			if (n < 13 || take_str(pl + 12, n - 12, &p->log_path)) {
				bad = 1;
				break;
			}
			p->log_max = get64(pl);
			p->log_files = get32(pl + 8);
			break;
		case REC_PID:
			if (n != 4) bad = 1; else memcpy(&p->pid, pl, 4);
			break;
		default:
			snprintf(err, errlen, "plan: unknown record type %u", type);
			return -1;
		}
		if (bad) {
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
