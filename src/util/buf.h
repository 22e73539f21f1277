/*
 * buf.h: a growable byte buffer with a ceiling (curl's dynbuf).
 *
 * Every buffer that holds outside input has a maximum; appending past it
 * fails with RS_ERR_TOOBIG and leaves the buffer as it was.  The data is
 * always NUL-terminated (the NUL is not counted in len).
 */
#ifndef RS_BUF_H
#define RS_BUF_H

#include <stddef.h>

#include "util/status.h"

struct buf {
	char	*data;	/* owned; NULL until the first append */
	size_t	 len;	/* bytes used, not counting the trailing NUL */
	size_t	 cap;	/* bytes allocated */
	size_t	 max;	/* ceiling on len */
};

/* Caller-owned storage; release with buf_cleanup(). */
void		buf_init(struct buf *b, size_t max);
void		buf_cleanup(struct buf *b);
void		buf_reset(struct buf *b);
enum rs_status	buf_append(struct buf *b, const void *p, size_t n);
enum rs_status	buf_appends(struct buf *b, const char *s);
enum rs_status	buf_printf(struct buf *b, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
/* Hand the data to the caller (free with free()); b is left empty. */
char		*buf_detach(struct buf *b, size_t *len /* OUT, may be NULL */);

#endif
