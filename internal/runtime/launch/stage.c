/*
 * Dispatch to the C stages before the Go runtime starts. A re-executed berth
 * binary with _BERTH_STAGE set never reaches Go: the shim and exec stages
 * must not pay for (or be disturbed by) the Go runtime and every package's
 * init, and the container init must run single-threaded to clone and
 * change namespaces safely.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "launch.h"

int fail(char *err, size_t errlen, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < errlen)
		snprintf(err + n, errlen - n, ": %s", strerror(saved));
	errno = saved;
	return -1;
}

int read_all(int fd, char **buf, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *b = malloc(cap);
	if (!b)
		return -1;
	for (;;) {
		if (n == cap) {
			cap *= 2;
			char *nb = realloc(b, cap);
			if (!nb)
				return -1;
			b = nb;
		}
		ssize_t r = read(fd, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		n += r;
	}
	*buf = b;
	*len = n;
	return 0;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

__attribute__((constructor)) static void berth_stage(void)
{
	const char *stage = getenv(STAGE_ENV);
	if (!stage)
		return;
	if (strcmp(stage, "shim") == 0)
		_exit(shim_main());
	if (strcmp(stage, "exec") == 0)
		_exit(enter_main());
	if (strcmp(stage, "hold") == 0) {
		/* Keep a namespace alive for the launcher until it closes stdin. */
		char c;
		while (read(0, &c, 1) > 0)
			;
		_exit(0);
	}
}
