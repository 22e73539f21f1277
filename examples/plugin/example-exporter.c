/*
 * example-exporter.c: a complete refundsync exporter plugin, written to
 * be copied.  It appends one line per record to the file named by its
 * `file` key and survives crashes without duplicating or losing lines.
 *
 * Build (see README.md beside this file):
 *
 *	cc -std=c11 -Wall -Wextra -fPIC -shared \
 *	    -I/usr/local/include -o rs-example-exporter.so example-exporter.c
 *
 * Configure:
 *
 *	[exporter audit]
 *	type = plugin
 *	path = /usr/local/lib/refundsync/rs-example-exporter.so
 *	file = /var/lib/refundsync/audit.tsv
 *
 * Each line is tab-separated, in this order (a field that is absent is
 * "-"; tabs and line breaks inside a field become spaces):
 *
 *	seq  idempotency_key  refund_id  revision  status  posting
 *	currency  amount  amount_minor
 *
 * How it keeps the ABI's promises (include/refundsync/exporter.h):
 *  - deliver() writes the whole batch with one write(2), then fsync(2),
 *    and only then reports the records done.  If either fails, the file
 *    is cut back to where the batch started and RS_EXPORT_RETRY is
 *    returned, so a failed batch leaves nothing behind.
 *  - open() finds the last complete line.  A torn last line (a crash in
 *    the middle of a write) is cut off; the seq of the last complete line
 *    is what recover() reports, so refundsync fast-forwards past records
 *    that reached the file before a crash.
 *  - Records arrive at least once (after a crash, a retry or `refundsync
 *    export replay`).  A record whose seq is not above the last one in
 *    the file and that the file holds is counted done and not written
 *    again.
 *  - A dead letter queued again (`refundsync export retry-dead`) comes
 *    alone, after later records.  The file is in seq order, so one it
 *    lacks is refused with RS_EXPORT_PERMANENT: it stays a dead letter,
 *    with what to do, rather than being counted done unwritten.
 *
 * The plugin uses only the C library and POSIX, keeps no global state
 * (several instances may run on different threads), and owns everything
 * it allocates.  Every pointer refundsync hands in is borrowed for the
 * call only, so nothing is kept from a record.
 */
#define _POSIX_C_SOURCE 200809L

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "refundsync/exporter.h"

/* The one exported symbol; everything else is static. */
const struct rs_exporter_ops *rs_exporter_plugin(void);

#define EX_TAIL_MAX	65536	/* bytes read to find the last line */

struct example {
	char	*path;		/* the `file` key */
	int	 fd;		/* open for appending */
	int64_t	 last_seq;	/* highest seq in the file; 0: none */
};

/* A growable line buffer; on allocation failure ok becomes 0. */
struct text {
	char	*data;
	size_t	 len;
	size_t	 cap;
	int	 ok;
};

static void
text_add(struct text *t, const char *s, size_t n)
{
	char *nd;
	size_t ncap;

	if (!t->ok)
		return;
	if (t->len + n + 1 > t->cap) {
		ncap = t->cap == 0 ? 1024 : t->cap;
		while (ncap < t->len + n + 1)
			ncap *= 2;
		if ((nd = realloc(t->data, ncap)) == NULL) {
			t->ok = 0;
			return;
		}
		t->data = nd;
		t->cap = ncap;
	}
	memcpy(t->data + t->len, s, n);
	t->len += n;
	t->data[t->len] = '\0';
}

/* One field and the separator before it (none for the first). */
static void
text_field(struct text *t, const char *s, int first)
{
	size_t i, start;

	if (!first)
		text_add(t, "\t", 1);
	if (s == NULL || s[0] == '\0') {
		text_add(t, "-", 1);
		return;
	}
	for (i = start = 0; s[i] != '\0'; i++) {
		if (s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			text_add(t, s + start, i - start);
			text_add(t, " ", 1);
			start = i + 1;
		}
	}
	text_add(t, s + start, i - start);
}

static void
text_int(struct text *t, int64_t v)
{
	char num[32];

	snprintf(num, sizeof(num), "%" PRId64, v);
	text_field(t, num, 0);
}

static void
text_record(struct text *t, const struct rs_export_record *r)
{
	static const char *const posting[] = { "none", "post", "reverse",
	    "adjust" };
	char num[32];

	snprintf(num, sizeof(num), "%" PRId64, r->seq);
	text_field(t, num, 1);
	text_field(t, r->idempotency_key, 0);
	text_field(t, r->refund_id, 0);
	if (r->has_revision)
		text_int(t, r->revision);
	else
		text_field(t, NULL, 0);
	text_field(t, r->status, 0);
	text_field(t, (unsigned)r->posting < 4 ? posting[r->posting] :
	    NULL, 0);
	text_field(t, r->currency, 0);
	text_field(t, r->amount, 0);
	if (r->amount_exact)
		text_int(t, r->amount_minor);
	else
		text_field(t, NULL, 0);
	text_add(t, "\n", 1);
}

/* The seq at the start of line (len bytes), or -1 if it has none. */
static int64_t
line_seq(const char *line, size_t len)
{
	int64_t v = 0;
	size_t i;

	for (i = 0; i < len && line[i] >= '0' && line[i] <= '9'; i++) {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (line[i] - '0');
	}
	if (i == 0 || i == len || line[i] != '\t')
		return -1;
	return v;
}

/*
 * Cut a torn last line off and read the seq of the last complete line.
 * 0 on success, else an errno value.
 */
static int
scan_tail(struct example *ex)
{
	struct stat sb;
	char *tail = NULL;
	off_t size, from;
	size_t len, got = 0, end, start;
	ssize_t n;
	int rc = 0;

	ex->last_seq = 0;
	if (fstat(ex->fd, &sb) == -1)
		return errno;
	if ((size = sb.st_size) == 0)
		return 0;
	from = size > EX_TAIL_MAX ? size - EX_TAIL_MAX : 0;
	len = (size_t)(size - from);
	if ((tail = malloc(len)) == NULL)
		return ENOMEM;
	while (got < len) {
		n = pread(ex->fd, tail + got, len - got, from + (off_t)got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n == 0 ? EIO : errno;
			goto out;
		}
		got += (size_t)n;
	}
	/* end: just past the last "\n"; 0 if none in the tail. */
	for (end = len; end > 0 && tail[end - 1] != '\n'; end--)
		;
	if (end < len) {
		if (end == 0 && from > 0) {
			/* A last line longer than we read: not ours. */
			rc = EINVAL;
			goto out;
		}
		/* A torn write: cut it off, durably. */
		if (ftruncate(ex->fd, from + (off_t)end) == -1 ||
		    fsync(ex->fd) == -1) {
			rc = errno;
			goto out;
		}
	}
	if (end == 0)
		goto out;
	for (start = end - 1; start > 0 && tail[start - 1] != '\n'; start--)
		;
	if ((ex->last_seq = line_seq(tail + start, end - 1 - start)) < 0) {
		ex->last_seq = 0;
		rc = EINVAL;
	}
out:
	free(tail);
	return rc;
}

/*
 * Does the file hold a line for seq?  1 yes, 0 no, -1 with errno set.
 * Read from the start: only a dead letter queued again asks, which is
 * rare.
 */
static int
file_holds(struct example *ex, int64_t seq)
{
	char buf[8192], want[32];
	size_t wlen, matched = 0;
	off_t off = 0;
	ssize_t r, i;
	int at_start = 1;

	wlen = (size_t)snprintf(want, sizeof(want), "%" PRId64 "\t", seq);
	for (;;) {
		r = pread(ex->fd, buf, sizeof(buf), off);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? 0 : -1;
		for (i = 0; i < r; i++) {
			if (buf[i] == '\n') {
				at_start = 1;
				matched = 0;
			} else if (at_start && buf[i] == want[matched]) {
				if (++matched == wlen)
					return 1;
			} else
				at_start = 0;
		}
		off += (off_t)r;
	}
}

static void
example_close(void *ctx)
{
	struct example *ex = ctx;

	if (ex == NULL)
		return;
	if (ex->fd != -1)
		close(ex->fd);
	free(ex->path);
	free(ex);
}

static int
example_open(void **ctxp, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	struct example *ex = NULL;
	const char *file = NULL;
	size_t i;
	int rc;

	(void)name;
	*ctxp = NULL;
	/*
	 * kv holds every key of the section, "type" and "path" included.
	 * Take the ones this plugin knows and leave the rest alone.
	 */
	for (i = 0; i < nkv; i++)
		if (strcmp(kv[i].key, "file") == 0)
			file = kv[i].value;
	if (file == NULL || file[0] == '\0') {
		snprintf(err, errlen, "file: required");
		return RS_EXPORT_PERMANENT;
	}
	if ((ex = calloc(1, sizeof(*ex))) == NULL ||
	    (ex->path = strdup(file)) == NULL) {
		snprintf(err, errlen, "out of memory");
		free(ex);
		return RS_EXPORT_RETRY;
	}
	ex->fd = open(file, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (ex->fd == -1) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		example_close(ex);
		return RS_EXPORT_PERMANENT;
	}
	if ((rc = scan_tail(ex)) != 0) {
		snprintf(err, errlen, "%s: %s", file, rc == EINVAL ?
		    "its last line is not one of ours" : strerror(rc));
		example_close(ex);
		return RS_EXPORT_PERMANENT;
	}
	*ctxp = ex;
	return RS_EXPORT_OK;
}

static int
example_deliver(void *ctx, const struct rs_export_record *recs, size_t n,
    size_t *done, char *err, size_t errlen)
{
	struct example *ex = ctx;
	struct text t = { NULL, 0, 0, 1 };
	struct stat sb;
	int64_t last = ex->last_seq;
	size_t i, off = 0;
	ssize_t w;
	int result = RS_EXPORT_RETRY, saved, held;

	*done = 0;
	for (i = 0; i < n; i++) {
		if (recs[i].seq > last) {
			text_record(&t, &recs[i]);
			last = recs[i].seq;
			continue;
		}
		/*
		 * Not above the file's last line (seqs increase within a
		 * batch, so nothing is pending yet): a replay or a retry
		 * of what the file holds, skipped; or a dead letter queued
		 * again that it lacks, which this file, in seq order,
		 * cannot take.
		 */
		held = recs[i].seq == ex->last_seq ? 1 :
		    file_holds(ex, recs[i].seq);
		if (held == 1)
			continue;
		*done = i;
		if (held == -1) {
			snprintf(err, errlen, "%s: %s", ex->path,
			    strerror(errno));
			goto out;
		}
		snprintf(err, errlen, "cannot write seq %" PRId64 " out of "
		    "order: %s is in seq order and already holds records up "
		    "to seq %" PRId64 "; move it away and replay the "
		    "exporter from seq %" PRId64, recs[i].seq, ex->path,
		    ex->last_seq, recs[i].seq);
		result = RS_EXPORT_PERMANENT;
		goto out;
	}
	if (!t.ok) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (t.len == 0) {
		*done = n;
		result = RS_EXPORT_OK;
		goto out;
	}
	if (fstat(ex->fd, &sb) == -1) {
		snprintf(err, errlen, "%s: %s", ex->path, strerror(errno));
		goto out;
	}
	saved = 0;
	while (off < t.len) {
		w = write(ex->fd, t.data + off, t.len - off);
		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0) {
			saved = w == 0 ? EIO : errno;
			break;
		}
		off += (size_t)w;
	}
	if (saved == 0 && fsync(ex->fd) == -1)
		saved = errno;
	if (saved != 0) {
		/* Leave no part of the batch behind. */
		if (ftruncate(ex->fd, sb.st_size) == -1 ||
		    fsync(ex->fd) == -1) {
			snprintf(err, errlen, "%s: %s, and cutting the batch "
			    "back failed: %s", ex->path, strerror(saved),
			    strerror(errno));
			goto out;
		}
		snprintf(err, errlen, "%s: %s", ex->path, strerror(saved));
		goto out;
	}
	ex->last_seq = last;
	*done = n;
	result = RS_EXPORT_OK;
out:
	free(t.data);
	return result;
}

static int
example_recover(void *ctx, int64_t *last_seq, char *err, size_t errlen)
{
	struct example *ex = ctx;

	(void)err;
	(void)errlen;
	*last_seq = ex->last_seq;
	return RS_EXPORT_OK;
}

static const struct rs_exporter_ops example_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "example",
	.open = example_open,
	.deliver = example_deliver,
	.recover = example_recover,
	.close = example_close
};

const struct rs_exporter_ops *
rs_exporter_plugin(void)
{
	return &example_ops;
}
