/*
 * buf.c: bounded growable buffer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/xmalloc.h"

void
buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void
buf_cleanup(struct buf *b)
{
	if (b == NULL)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

static void
buf_reserve(struct buf *b, size_t need)
{
	size_t cap;

	if (need + 1 <= b->cap)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap < need + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

enum rs_status
buf_append(struct buf *b, const void *p, size_t n)
{
	if (n > b->max || b->len > b->max - n)
		return RS_ERR_TOOBIG;
	buf_reserve(b, b->len + n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return RS_OK;
}

enum rs_status
buf_appends(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

enum rs_status
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	char small[256];

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return RS_ERR_INTERNAL;
	if ((size_t)n < sizeof(small))
		return buf_append(b, small, (size_t)n);
	if ((size_t)n > b->max || b->len > b->max - (size_t)n)
		return RS_ERR_TOOBIG;
	buf_reserve(b, b->len + (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return RS_OK;
}

char *
buf_detach(struct buf *b, size_t *len)
{
	char *p = b->data;

	if (p == NULL)
		p = xstrdup("");
	if (len != NULL)
		*len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}
