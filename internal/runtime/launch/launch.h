#ifndef BERTH_LAUNCH_H
#define BERTH_LAUNCH_H

#include <stddef.h>
#include "plan.h"

#define STAGE_ENV "_BERTH_STAGE"
#define PLAN_ENV "_BERTH_PLAN"
/* Set when the launcher is still making the cgroups: wait on GATE_FD first. */
#define GATE_ENV "_BERTH_GATE"
/*
 * "stdin FD" or "tty FD": the container's stdin is descriptor FD (a pipe
 * whose other end the launcher writes), or FD is a terminal's slave end,
 * to be the container's controlling terminal and all three of its stdio.
 */
#define STDIO_ENV "_BERTH_STDIO"
/* "always MAX" or "on-failure MAX": the shim restarts the container (see shim.c). */
#define RESTART_ENV "_BERTH_RESTART"
/* "FIRST LAST": descriptors the shim keeps while it lives (sockets holding host ports) and closes in the container. */
#define KEEP_ENV "_BERTH_KEEP"
/* A file of NUL-ended arguments: the shim runs this binary with them once the container has ended for good. */
#define ONEXIT_ENV "_BERTH_ONEXIT"
/* A cgroup.procs file the on-exit command joins first, out of the container's scope. */
#define ONEXIT_CGROUP_ENV "_BERTH_ONEXIT_CGROUP"
#define ERRBUF 1024

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* fail formats "what: strerror(errno)" into err and returns -1. */
int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int read_all(int fd, char **buf, size_t *len);
int write_all(int fd, const void *buf, size_t len);

int apply_rlimits(const struct plan *p, char *err, size_t errlen);
int apply_process(const struct plan *p, char *err, size_t errlen);
int exec_plan(const struct plan *p, char *err, size_t errlen);
/* apply_sysctls writes the plan's sysctls: only net.* ones with net_only, else all the others unless done. */
int apply_sysctls(const struct plan *p, int net_only, char *err, size_t errlen);
/* container_init sets the container up and execs its workload; errfd is the close-on-exec pipe its failure is reported on. */
int container_init(const struct plan *p, int syncfd, int errfd, char *err, size_t errlen);

int shim_main(void);
int enter_main(void);

#endif
