/*
 * log.h: one line per event on stderr, in the manner of OpenBSD's log.h.
 *
 * When journald reads stderr (JOURNAL_STREAM is set), each line carries
 * the sd-daemon "<N>" priority prefix; in a terminal it is plain text
 * with a timestamp.  Lines never contain secrets: callers log names and
 * ids, never keys, tokens or credentials.  Thread-safe: each line is one
 * write(2).
 */
#ifndef RS_LOG_H
#define RS_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LVL_ERR = 3,	/* sd-daemon priorities */
	LOG_LVL_WARN = 4,
	LOG_LVL_INFO = 6,
	LOG_LVL_DEBUG = 7
};

/* verbose: 0 = info, 1 or more = debug.  journald: force the "<N>"
 * prefix on or off; log_init_auto() decides from JOURNAL_STREAM. */
void	log_init(int verbose, bool journald);
void	log_init_auto(int verbose);
void	log_setverbose(int verbose);
bool	log_enabled(enum log_level lvl);

/* log_warn and fatal append ": strerror(errno)". */
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error that ends the program in order (the caller cleans up and
 * exits), such as a start that cannot go on: journald priority err. */
void	log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * The last LOG_RECENT_MAX warning and error lines, kept in memory for the
 * daemon's status page (never debug or info lines; like every line, they
 * hold no secrets).  Copies up to max of them, oldest first, into
 * out[0..max) as "YYYY-MM-DDTHH:MM:SS.mmmZ warning: text" without the
 * newline, and returns how many it copied.  The caller owns each string
 * (free()).  Thread-safe.
 */
#define LOG_RECENT_MAX	20
size_t	log_recent_copy(char **out /* OUT */, size_t max);
/* Forget the lines kept so far (tests). */
void	log_recent_clear(void);

/* Always-on invariant check: logs __func__ and aborts. */
#define RS_PANIC(msg) fatalx("%s: invariant broken: %s", __func__, (msg))

#endif
