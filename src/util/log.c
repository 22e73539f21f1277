/*
 * log.c: stderr logging with sd-daemon priority prefixes.
 *
 * The level is a plain int read without a lock: a torn read can at worst
 * log one line too many or too few while -v changes, which never happens
 * after start-up.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

static int	log_verbose;
static bool	log_journald;

void
log_init(int verbose, bool journald)
{
	log_verbose = verbose;
	log_journald = journald;
}

void
log_init_auto(int verbose)
{
	log_init(verbose, getenv("JOURNAL_STREAM") != NULL);
}

void
log_setverbose(int verbose)
{
	log_verbose = verbose;
}

bool
log_enabled(enum log_level lvl)
{
	return lvl != LOG_LVL_DEBUG || log_verbose > 0;
}

static void vlog(enum log_level, int, const char *, va_list)
    __attribute__((format(printf, 3, 0)));

static void
vlog(enum log_level lvl, int errnum, const char *fmt, va_list ap)
{
	char line[2048];
	size_t n = 0;
	int r;

	if (!log_enabled(lvl))
		return;
	if (log_journald) {
		r = snprintf(line, sizeof(line), "<%d>", (int)lvl);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		r = snprintf(line, sizeof(line),
		    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: ",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
		    lvl == LOG_LVL_ERR ? "error" : lvl == LOG_LVL_WARN ?
		    "warning" : lvl == LOG_LVL_INFO ? "info" : "debug");
	}
	if (r > 0)
		n = (size_t)r;
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r > 0)
		n += (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (errnum != 0) {
		r = snprintf(line + n, sizeof(line) - n, ": %s",
		    strerror(errnum));
		if (r > 0)
			n += (size_t)r;
		if (n > sizeof(line) - 2)
			n = sizeof(line) - 2;
	}
	/* Keep every event on one line, whatever the input said. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}

#define LOG_BODY(lvl, errnum) do {		\
	va_list ap;				\
	va_start(ap, fmt);			\
	vlog((lvl), (errnum), fmt, ap);		\
	va_end(ap);				\
} while (0)

void
log_warn(const char *fmt, ...)
{
	int saved = errno;

	LOG_BODY(LOG_LVL_WARN, saved);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_WARN, 0);
}

void
log_info(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_INFO, 0);
}

void
log_debug(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_DEBUG, 0);
}

void
fatal(const char *fmt, ...)
{
	int saved = errno;

	LOG_BODY(LOG_LVL_ERR, saved);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_ERR, 0);
	exit(1);
}
