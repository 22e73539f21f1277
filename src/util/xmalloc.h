/*
 * xmalloc.h: allocation that succeeds or aborts (tmux, OpenBSD, Postfix).
 *
 * Running out of memory is not an error path in refundsync: these never
 * return NULL.  cJSON is hooked to them too (xmalloc_init_json), so a NULL
 * from cJSON always means a parse error.
 */
#ifndef RS_XMALLOC_H
#define RS_XMALLOC_H

#include <stddef.h>

void	*xmalloc(size_t size);
void	*xcalloc(size_t nmemb, size_t size);
void	*xrealloc(void *ptr, size_t size);
void	*xreallocarray(void *ptr, size_t nmemb, size_t size);
char	*xstrdup(const char *s);
char	*xstrndup(const char *s, size_t maxlen);
/* Caller owns the result; free with free(). */
char	*xasprintf(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));
/* Wipe len bytes at p, then free p.  NULL is fine. */
void	 freezero(void *p, size_t len);
/* Wipe a NUL-terminated secret, then free it.  NULL is fine. */
void	 freezero_str(char *s);
/*
 * Tune the allocator once at start, before threads: keep freed memory in
 * the process instead of handing it back to the kernel after every large
 * free.  Worker threads get their own glibc arenas, and SQLite's
 * per-event savepoints free 20-28 KiB at a time; with the default trim
 * threshold each such free became an madvise() plus page faults on the
 * next event, about half the writer's and the backfill's CPU.  Memory
 * stays bounded by the peak actually used.
 */
void	 xmalloc_init_tuning(void);
/* Route cJSON's allocations through xmalloc/free.  Call once at start,
 * before any thread starts. */
void	 xmalloc_init_json(void);

#endif
