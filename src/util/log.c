/*
 * log.c: stderr logging with sd-daemon priority prefixes.
 *
 * The level is a plain int read without a lock: a torn read can at worst
 * log one line too many or too few while -v changes, which never happens
 * after start-up.
 *
 * Warnings and errors are also kept, the last LOG_RECENT_MAX of them, in
 * a ring under its own mutex for the status page.  A line is copied into
 * a fixed slot, so keeping it never allocates.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

/* The longest line written, the newline included; longer ones are cut. */
#define LOG_LINE_MAX	2048
/* Longest line kept in the ring; longer ones are cut. */
#define LOG_RECENT_LEN	512

static int	log_verbose;
static bool	log_journald;

static pthread_mutex_t	log_recent_mtx = PTHREAD_MUTEX_INITIALIZER;
static char		log_recent[LOG_RECENT_MAX][LOG_RECENT_LEN];
static size_t		log_recent_next;	/* the slot to write next */
static size_t		log_recent_n;		/* slots in use */

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

/* Keep stamp + text (len bytes, no newline) in the ring. */
static void
log_recent_keep(const char *stamp, const char *text, size_t len)
{
	char *slot;

	pthread_mutex_lock(&log_recent_mtx);
	slot = log_recent[log_recent_next];
	(void)snprintf(slot, LOG_RECENT_LEN, "%s%.*s", stamp,
	    len > LOG_RECENT_LEN ? LOG_RECENT_LEN : (int)len, text);
	log_recent_next = (log_recent_next + 1) % LOG_RECENT_MAX;
	if (log_recent_n < LOG_RECENT_MAX)
		log_recent_n++;
	pthread_mutex_unlock(&log_recent_mtx);
}

size_t
log_recent_copy(char **out, size_t max)
{
	size_t first, i, n;

	pthread_mutex_lock(&log_recent_mtx);
	n = log_recent_n < max ? log_recent_n : max;
	/* The oldest of the n newest lines. */
	first = (log_recent_next + LOG_RECENT_MAX - n) % LOG_RECENT_MAX;
	for (i = 0; i < n; i++) {
		const char *line = log_recent[(first + i) % LOG_RECENT_MAX];
		size_t len = strlen(line) + 1;

		/* Not xmalloc: util/log.c sits below it. */
		if ((out[i] = malloc(len)) == NULL)
			break;
		memcpy(out[i], line, len);
	}
	pthread_mutex_unlock(&log_recent_mtx);
	return i;
}

void
log_recent_clear(void)
{
	pthread_mutex_lock(&log_recent_mtx);
	log_recent_next = 0;
	log_recent_n = 0;
	pthread_mutex_unlock(&log_recent_mtx);
}

/*
 * The length of the UTF-8 sequence at s (n bytes left), or 0 if it is
 * not a valid one or encodes a C1 control (U+0080 to U+009F): journalctl
 * shows a message with either as "[blob data]", not as text.
 */
static size_t
log_utf8_len(const unsigned char *s, size_t n)
{
	unsigned long c;
	size_t len, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		c = s[0] & 0x1fU;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		c = s[0] & 0x0fU;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		c = s[0] & 0x07U;
	} else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3fU);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 ||
	    c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff) || c <= 0x9f)
		return 0;
	return len;
}

/*
 * Copy n bytes of text to out (room for max bytes, no NUL) as printable
 * text on one line, whatever the input said: CR and LF become spaces,
 * other control bytes (tab aside) and bytes that are not UTF-8 become
 * \xHH, so that a URL or an id from outside can neither drive the
 * reader's terminal nor turn the line into binary data for journald.
 * Nothing is cut in the middle.  Returns the bytes written.
 */
static size_t
log_clean(const char *text, size_t n, char *out, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0, o = 0, len;

	while (i < n) {
		if (s[i] >= 0x80 && (len = log_utf8_len(s + i, n - i)) > 0) {
			if (max - o < len)
				break;
			memcpy(out + o, s + i, len);
			o += len;
			i += len;
		} else if (s[i] == '\n' || s[i] == '\r') {
			if (max - o < 1)
				break;
			out[o++] = ' ';
			i++;
		} else if (s[i] >= 0x80 || (s[i] < 0x20 && s[i] != '\t') ||
		    s[i] == 0x7f) {
			if (max - o < 4)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[s[i] >> 4];
			out[o++] = hex[s[i] & 0xf];
			i++;
		} else {
			if (max - o < 1)
				break;
			out[o++] = (char)s[i++];
		}
	}
	return o;
}

static void vlog(enum log_level, int, const char *, va_list)
    __attribute__((format(printf, 3, 0)));

static void
vlog(enum log_level lvl, int errnum, const char *fmt, va_list ap)
{
	char text[LOG_LINE_MAX], line[LOG_LINE_MAX], stamp[64];
	struct timespec ts;
	struct tm tm;
	size_t n = 0, o = 0, start;
	int r;

	if (!log_enabled(lvl))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	(void)snprintf(stamp, sizeof(stamp),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
	    lvl == LOG_LVL_ERR ? "error" : lvl == LOG_LVL_WARN ?
	    "warning" : lvl == LOG_LVL_INFO ? "info" : "debug");

	/* The event, cut to fit. */
	r = vsnprintf(text, sizeof(text), fmt, ap);
	if (r > 0)
		n = (size_t)r < sizeof(text) ? (size_t)r : sizeof(text) - 1;
	if (errnum != 0) {
		r = snprintf(text + n, sizeof(text) - n, ": %s",
		    strerror(errnum));
		if (r > 0)
			n += (size_t)r < sizeof(text) - n ? (size_t)r :
			    sizeof(text) - n - 1;
	}

	if (log_journald)
		r = snprintf(line, sizeof(line), "<%d>", (int)lvl);
	else
		r = snprintf(line, sizeof(line), "%s", stamp);
	if (r > 0)
		o = (size_t)r < sizeof(line) - 1 ? (size_t)r :
		    sizeof(line) - 1;
	start = o;
	/* Room is left for the newline. */
	o += log_clean(text, n, line + o, sizeof(line) - 1 - o);
	if (lvl <= LOG_LVL_WARN)
		log_recent_keep(stamp, line + start, o - start);
	line[o++] = '\n';
	(void)!write(STDERR_FILENO, line, o);
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
log_errx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_ERR, 0);
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
