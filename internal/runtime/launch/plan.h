/*
 * The launch plan: a flat list of records the Go side writes and the C
 * stages read. Each record is a 2-byte type, a 4-byte payload length and
 * the payload, all in host byte order. plan.go takes the record types and
 * limits from here.
 */
#ifndef BERTH_PLAN_H
#define BERTH_PLAN_H

#include <stdint.h>
#include <stddef.h>

enum {
	REC_ARG = 1,
	REC_ENV = 2,
	REC_CWD = 3,
	REC_HOSTNAME = 4,
	REC_ROOTFS = 5,
	REC_ROOTFS_RO = 6,
	REC_MOUNT = 7,
	REC_MASK = 8,
	REC_RO = 9,
	REC_RLIMIT = 10,
	REC_CGROUP = 11,
	REC_NETNS = 12,
	REC_NSFLAGS = 13,
	REC_SECCOMP = 14,
	REC_CAPS = 15,
	REC_USER = 16,
	REC_NNP = 17,
	REC_OOMSCORE = 18,
	REC_LOG = 19,
	REC_EXTARG = 20,
	REC_HIDE_UNIFIED = 21,
	REC_SYSCTL = 22,
	REC_EXIT = 23,
	REC_STATE = 24,
	REC_CTL = 25,
	REC_PID = 26,
	REC_EXTSTART = 27,
	REC_PIDFILE = 28,
	REC_OVERLAY = 29,
	REC_USERNS = 30,
	REC_INIT = 31,
};

#define MOUNT_KIND_FS 0
#define MOUNT_KIND_BIND 1
#define MOUNT_KIND_BIND_FILE 2

#define MAX_ITEMS 256
#define MAX_RLIMITS 32
#define MAX_CGROUPS 32
#define MAX_GIDS 64

struct mountrec {
	uint64_t flags;
	uint32_t kind;
	const char *source, *target, *fstype, *data;
};

struct rlimitrec {
	uint32_t resource;
	uint64_t soft, hard;
};

struct plan {
	const char *args[MAX_ITEMS];
	int nargs;
	const char *env[MAX_ITEMS + 1];
	int nenv;
	const char *extargs[MAX_ITEMS];
	int nextargs;
	const char *extstart[MAX_ITEMS];
	int nextstart;
	const char *pidfile;
	const char *cwd, *hostname, *rootfs, *netns, *overlay;
	int rootfs_ro, nnp, hide_unified, init, has_caps, has_user, has_oom;
	struct mountrec mounts[MAX_ITEMS];
	int nmounts;
	const char *masks[MAX_ITEMS];
	int nmasks;
	const char *ros[MAX_ITEMS];
	int nros;
	const char *sysctls[MAX_ITEMS];
	int nsysctls;
	struct rlimitrec rlimits[MAX_RLIMITS];
	int nrlimits;
	const char *cgroups[MAX_CGROUPS];
	int ncgroups;
	uint64_t nsflags;
	const unsigned char *seccomp;
	uint32_t seccomp_len;
	uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
	uint32_t uid, gid, ngids;
	uint32_t gids[MAX_GIDS];
	int32_t oomscore;
	uint64_t log_max;
	uint32_t log_files;
	const char *log_path, *exit_path, *state_path, *ctl_path;
	int32_t pid;
	/* A user namespace: container ids 0..userns_size-1 are host ids from userns_uid/userns_gid. */
	int has_userns;
	uint32_t userns_uid, userns_gid, userns_size;
	/* Not a record: set by the shim once it has written the net.* sysctls itself. */
	int net_sysctls_done;
};

/* plan_dump writes p as text, one field a line, for tests to compare with the Go side's view; -1 if out is too small. */
int plan_dump(const struct plan *p, char *out, size_t outlen);

/* plan_read parses buf into p; strings point into buf (NUL-terminated copies are made in place). */
int plan_read(char *buf, size_t len, struct plan *p, char *err, size_t errlen);

#endif
