/*
 * sdnotify.c: sd_notify(3) without libsystemd.
 *
 * Each message opens a datagram socket, sends once and closes it, as
 * libsystemd does: there is no state to share between threads and no
 * descriptor to leak into children.  The main thread sends READY,
 * RELOADING, STOPPING and the watchdog keep-alives; any thread may.
 */
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/sdnotify.h"
#include "util/strnum.h"

/* The longest state sdnotify_sendf() formats. */
#define SDNOTIFY_MSG_MAX	4096
/* The longest a send waits for room in the reader's queue. */
#define SDNOTIFY_SEND_TIMEOUT_S	1

/*
 * The socket address for $NOTIFY_SOCKET text: "/path" or "@abstract".
 * RS_OK with *addr and *len, else RS_ERR_CONFIG.
 */
static enum rs_status
notify_addr(const char *text, struct sockaddr_un *addr, socklen_t *len)
{
	size_t n = strlen(text);

	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (text[0] == '@') {
		/* Abstract: a leading NUL, and the length says where the
		 * name ends (no terminating NUL). */
		if (n < 2 || n > sizeof(addr->sun_path))
			return RS_ERR_CONFIG;
		memcpy(addr->sun_path + 1, text + 1, n - 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return RS_OK;
	}
	if (text[0] != '/' || n >= sizeof(addr->sun_path))
		return RS_ERR_CONFIG;
	memcpy(addr->sun_path, text, n + 1);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return RS_OK;
}

enum rs_status
sdnotify_send(const char *state)
{
	const char *where = getenv("NOTIFY_SOCKET");
	struct timeval tv = { SDNOTIFY_SEND_TIMEOUT_S, 0 };
	struct sockaddr_un addr;
	socklen_t len = 0;
	enum rs_status st;
	ssize_t n;
	int fd, saved;

	if (where == NULL || where[0] == '\0')
		return RS_ERR_NOTFOUND;
	if (state == NULL || state[0] == '\0')
		return RS_ERR_INPUT;
	if ((st = notify_addr(where, &addr, &len)) != RS_OK)
		return st;
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return RS_ERR_IO;
	/* A reader that stopped reading fills its queue; do not let that
	 * stall the main loop for long. */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	do {
		n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
		    (const struct sockaddr *)&addr, len);
	} while (n == -1 && errno == EINTR);
	saved = errno;
	(void)close(fd);
	if (n == -1) {
		errno = saved;
		return RS_ERR_IO;
	}
	/* A datagram is sent whole or not at all. */
	return RS_OK;
}

enum rs_status
sdnotify_sendf(const char *fmt, ...)
{
	char msg[SDNOTIFY_MSG_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return RS_ERR_INPUT;
	return sdnotify_send(msg);
}

/* STATUS= is one line: a newline would start a new assignment. */
static void
status_line(const char *status, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; status != NULL && status[i] != '\0' && i + 1 < outlen;
	    i++)
		out[i] = (char)(status[i] == '\n' || status[i] == '\r' ? ' ' :
		    status[i]);
	out[i] = '\0';
}

enum rs_status
sdnotify_ready(const char *status)
{
	char line[1024];

	if (status == NULL)
		return sdnotify_send("READY=1");
	status_line(status, line, sizeof(line));
	return sdnotify_sendf("READY=1\nSTATUS=%s", line);
}

enum rs_status
sdnotify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return sdnotify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL);
}

enum rs_status
sdnotify_stopping(const char *status)
{
	char line[1024];

	if (status == NULL)
		return sdnotify_send("STOPPING=1");
	status_line(status, line, sizeof(line));
	return sdnotify_sendf("STOPPING=1\nSTATUS=%s", line);
}

enum rs_status
sdnotify_watchdog(void)
{
	return sdnotify_send("WATCHDOG=1");
}

uint64_t
sdnotify_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");
	int64_t v, p;

	if (usec == NULL || strnum_i64(usec, 1, INT64_MAX, &v) != NULL)
		return 0;
	if (pid != NULL && pid[0] != '\0') {
		if (strnum_i64(pid, 1, INT64_MAX, &p) != NULL)
			return 0;
		if (p != (int64_t)getpid())
			return 0;
	}
	return (uint64_t)v;
}
