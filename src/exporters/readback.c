/*
 * readback.c: read back the records a file exporter wrote (readback.h),
 * for reconcile.
 *
 * The file is read with read(2) in chunks and cut into complete lines; a
 * last line without its '\n' is a write in progress and is never seen.
 * A line longer than RB_MAX_LINE is kept truncated and flagged, so memory
 * stays bounded by one record whatever the file holds.  Each format turns
 * lines into entries:
 *  - jsonl: cJSON parses the line (laxly: it is our own output, and the
 *    exporter embeds a refund entity it only checked for syntax).  The
 *    integers (seq, revision, amount_minor, exponent) are taken from the
 *    line's raw text through strnum_i64, never through cJSON's double;
 *  - csv: the first line is the header and maps column names to
 *    positions; fields are unquoted in a scratch copy of the row.  A
 *    row that repeats the header, and in both formats an empty line,
 *    holds no record.  A row whose quoted field is still open at the end
 *    of its line runs on to the next (RFC 4180), unless that line is a
 *    whole row of its own (closed quotes, the header's number of
 *    fields): so a line break typed into a quoted value is read as part
 *    of the value, while a stray quote does not swallow the rows after
 *    it.  The exporter writes each row on one line, so a row over
 *    several lines is damaged either way;
 *  - ledger, beancount: a small state machine over transactions.  A
 *    transaction still open at the end of the file (nothing after it, not
 *    even its "; rs-seq: N" line) is what a write in progress looks like,
 *    and is not handed out.  Posting amounts are parsed with the money
 *    module and summed in exact minor units.
 *
 * What is damaged is said in one reason string per entry, the problems
 * joined with "; ".  No state outside a call: any thread.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "domain/money.h"
#include "exporters/filejournal.h"
#include "exporters/posting.h"
#include "exporters/readback.h"
#include "util/buf.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

/* Bytes read at a time. */
#define RB_CHUNK	(64u * 1024)
/* The longest line kept whole: the longest record a writer makes. */
#define RB_MAX_LINE	FILEJOURNAL_MAX_RECORD
/* Room for the reasons of one damaged entry. */
#define RB_WHY_MAX	512
/* Longest commodity name we read in a journal (beancount's limit). */
#define RB_MAX_COMMODITY 24

enum rb_format {
	RB_JSONL,
	RB_CSV,
	RB_LEDGER,
	RB_BEANCOUNT
};

static const char *const rb_types[] = { "jsonl", "csv", "ledger",
    "beancount" };
#define RB_NTYPES	(sizeof(rb_types) / sizeof(rb_types[0]))

/* Complete lines of a file descriptor. */
struct reader {
	int		 fd;
	char		*chunk;		/* RB_CHUNK bytes */
	size_t		 pos;		/* next byte of chunk to look at */
	size_t		 n;		/* bytes in chunk */
	bool		 eof;
	struct buf	 line;		/* the current line, no '\n' */
	bool		 overlong;	/* line was cut at RB_MAX_LINE */
	int64_t		 lineno;	/* 1-based number of line */
};

/* The text fields of a jsonl or csv record, NULL when absent. */
struct rb_fields {
	const char	*seq;
	const char	*key;
	const char	*refund_id;
	const char	*revision;
	const char	*status;
	const char	*posting;
	const char	*currency;
	const char	*amount;
	const char	*amount_minor;
	const char	*exponent;
	const char	*date;
};

/* The csv columns we read, in the order of col[] below. */
static const char *const csv_names[] = { "seq", "idempotency_key",
    "refund_id", "revision", "status", "posting", "currency",
    "amount_minor", "exponent", "created_date", "amount" };
#define CSV_NCOLS	(sizeof(csv_names) / sizeof(csv_names[0]))

/* The metadata of a journal transaction we read. */
enum txn_meta {
	TM_SEQ,
	TM_KEY,
	TM_POSTING,
	TM_REFUND_ID,
	TM_REVISION,
	TM_STATUS,
	TM_N
};

static const char *const txn_meta_names[TM_N] = { "rs-seq", "rs-key",
    "rs-posting", "rs-refund-id", "rs-revision", "rs-status" };

/* The journal transaction being read.  Strings are owned. */
struct txn {
	bool		 open;
	int64_t		 line;		/* of its date line */
	char		 date[11];	/* YYYY-MM-DD */
	bool		 seen[TM_N];	/* metadata lines met */
	char		*meta[TM_N];	/* their decoded values */
	bool		 refund_line;	/* a refund account line was met */
	bool		 refund_amount;	/* ... and its amount read */
	char		*currency;	/* of the refund account line */
	int64_t		 minor;		/* its signed amount */
	int		 exponent;
	char		*sum_currency;	/* of the first posting line */
	int64_t		 sum;		/* of every posting line */
	int		 sum_exponent;
	bool		 mixed;		/* more than one commodity */
	bool		 overflow;	/* the sum does not fit */
	bool		 unreadable;	/* a line without a usable amount */
};

struct rb {
	enum rb_format		 fmt;
	const char		*refund_account;
	readback_fn		 fn;
	void			*arg;
	struct readback_entry	 e;	/* the entry being built */
	char			 why[RB_WHY_MAX];
	/* csv */
	bool			 have_header;
	const char		*header_bad;	/* why it cannot be read */
	char			*header;	/* the header row as written */
	size_t			 header_len;
	size_t			 ncols;		/* columns it names */
	long			 col[CSV_NCOLS]; /* position, or -1 */
	char			*scratch;	/* the row, unquoted */
	size_t			 scratch_cap;
	char			**fields;	/* into scratch */
	size_t			 nfields;
	size_t			 fields_cap;
	struct buf		 row;		/* a row running on over lines,
						   '\n'-joined (RFC 4180) */
	int64_t			 row_line;	/* its first line; 0: none */
	int64_t			 row_last;	/* its last line so far */
	bool			 row_overlong;	/* longer than RB_MAX_LINE */
	/* ledger, beancount */
	struct txn		 t;
};

static void	rb_damage(struct rb *rb, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

/* ---- common ------------------------------------------------------------ */

static void
seterr(char **why, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
seterr(char **why, const char *fmt, ...)
{
	va_list ap;
	char text[512];

	if (why == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	free(*why);
	*why = xstrdup(text);
}

/* Start a new entry beginning at line. */
static void
rb_entry(struct rb *rb, int64_t line)
{
	memset(&rb->e, 0, sizeof(rb->e));
	rb->e.line = line;
	rb->why[0] = '\0';
}

/* Mark the entry damaged and add a reason. */
static void
rb_damage(struct rb *rb, const char *fmt, ...)
{
	size_t n = strlen(rb->why);
	va_list ap;

	rb->e.damaged = true;
	rb->e.why = rb->why;
	if (n + 3 >= sizeof(rb->why))
		return;
	if (n > 0) {
		memcpy(rb->why + n, "; ", 3);
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(rb->why + n, sizeof(rb->why) - n, fmt, ap);
	va_end(ap);
}

static enum rs_status
rb_emit(struct rb *rb)
{
	return rb->fn(rb->arg, &rb->e);
}

static bool
posting_parse(const char *s, enum rs_posting *out)
{
	if (strcmp(s, "none") == 0)
		*out = RS_POSTING_NONE;
	else if (strcmp(s, "post") == 0)
		*out = RS_POSTING_POST;
	else if (strcmp(s, "reverse") == 0)
		*out = RS_POSTING_REVERSE;
	else if (strcmp(s, "adjust") == 0)
		*out = RS_POSTING_ADJUST;
	else
		return false;
	return true;
}

static bool
blank(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

/*
 * Fill the entry from the text fields of a jsonl or csv record.  What
 * cannot be read is left unset and reported.
 */
static void
rb_fill(struct rb *rb, const struct rb_fields *f)
{
	struct readback_entry *e = &rb->e;
	int64_t minor = 0, exp = 0;

	if (f->seq == NULL)
		rb_damage(rb, "no seq");
	else if (strnum_i64(f->seq, 0, INT64_MAX, &e->seq) != NULL)
		rb_damage(rb, "seq is not a number");
	e->key = f->key;
	if ((e->refund_id = f->refund_id) == NULL)
		rb_damage(rb, "no refund_id");
	if (f->revision != NULL) {
		/* Wix's revision is any integer the store took. */
		if (strnum_i64(f->revision, INT64_MIN, INT64_MAX,
		    &e->revision) == NULL)
			e->has_revision = true;
		else
			rb_damage(rb, "revision is not a number");
	}
	e->status = f->status;
	if (f->posting == NULL)
		rb_damage(rb, "no posting");
	else if (!posting_parse(f->posting, &e->posting))
		rb_damage(rb, "posting is not none, post, reverse or adjust");
	e->currency = f->currency;
	e->amount = f->amount;
	if (f->amount_minor != NULL && f->exponent != NULL) {
		if (strnum_i64(f->amount_minor, INT64_MIN, INT64_MAX,
		    &minor) != NULL)
			rb_damage(rb, "amount_minor is not a number");
		else if (strnum_i64(f->exponent, 0, MONEY_MAX_DECIMALS,
		    &exp) != NULL)
			rb_damage(rb, "exponent is not 0 to %d",
			    MONEY_MAX_DECIMALS);
		else {
			e->has_amount = true;
			e->amount_minor = minor;
			e->exponent = (int)exp;
		}
	} else if (f->amount_minor != NULL || f->exponent != NULL)
		rb_damage(rb, "amount_minor and exponent must both be set");
	e->date = f->date;
}

/* ---- reading lines ----------------------------------------------------- */

static void
reader_init(struct reader *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->chunk = xmalloc(RB_CHUNK);
	buf_init(&r->line, RB_MAX_LINE);
}

static void
reader_cleanup(struct reader *r)
{
	free(r->chunk);
	r->chunk = NULL;
	buf_cleanup(&r->line);
}

/*
 * The next complete line into r->line: RS_OK and *got; *got false at the
 * end of the file (a last line without '\n' is dropped).  RS_ERR_IO on a
 * read error (errno set).
 */
static enum rs_status
reader_next(struct reader *r, bool *got)
{
	const char *nl;
	size_t len;
	ssize_t n;

	*got = false;
	buf_reset(&r->line);
	r->overlong = false;
	for (;;) {
		if (r->pos == r->n) {
			if (r->eof)
				return RS_OK;
			n = read(r->fd, r->chunk, RB_CHUNK);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return RS_ERR_IO;
			if (n == 0) {
				r->eof = true;
				return RS_OK;
			}
			r->pos = 0;
			r->n = (size_t)n;
		}
		nl = memchr(r->chunk + r->pos, '\n', r->n - r->pos);
		len = nl != NULL ? (size_t)(nl - (r->chunk + r->pos)) :
		    r->n - r->pos;
		if (!r->overlong &&
		    buf_append(&r->line, r->chunk + r->pos, len) != RS_OK)
			r->overlong = true;
		r->pos += len;
		if (nl != NULL) {
			r->pos++;
			r->lineno++;
			/* Make sure data is set for an empty line. */
			if (r->line.data == NULL)
				(void)buf_append(&r->line, "", 0);
			*got = true;
			return RS_OK;
		}
	}
}

/* ---- jsonl ------------------------------------------------------------- */

/* The integer members of a jsonl line read from its raw text. */
enum jsonl_int {
	JI_SEQ,
	JI_REVISION,
	JI_AMOUNT_MINOR,
	JI_EXPONENT,
	JI_N
};

static const char *const jsonl_int_names[JI_N] = { "seq", "revision",
    "amount_minor", "exponent" };

/* Past the JSON string at p (at its quote), within end. */
static const char *
raw_string(const char *p, const char *end)
{
	for (p++; p < end && *p != '"'; p++)
		if (*p == '\\')
			p++;
	return p < end ? p + 1 : end;
}

/* Past the JSON value at p, within end. */
static const char *
raw_value(const char *p, const char *end)
{
	int depth = 0;

	if (p < end && *p == '"')
		return raw_string(p, end);
	if (p < end && (*p == '{' || *p == '[')) {
		while (p < end) {
			if (*p == '"') {
				p = raw_string(p, end);
				continue;
			}
			if (*p == '{' || *p == '[')
				depth++;
			else if ((*p == '}' || *p == ']') && --depth == 0)
				return p + 1;
			p++;
		}
		return end;
	}
	while (p < end && strchr(",}] \t\r\n", *p) == NULL)
		p++;
	return p;
}

static const char *
raw_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' ||
	    *p == '\n'))
		p++;
	return p;
}

/*
 * Copy the raw text of the first top-level member named jsonl_int_names[i]
 * of the object s (len bytes, known to be valid JSON) into num[i], or
 * leave num[i] empty if absent.  A value too long for a number is stored
 * as "?", which no number parser accepts.
 */
static void
jsonl_raw_ints(const char *s, size_t len, char num[JI_N][24])
{
	const char *end = s + len, *p, *k, *v;
	size_t klen, vlen, i;
	bool found[JI_N] = { false };

	for (i = 0; i < JI_N; i++)
		num[i][0] = '\0';
	p = raw_ws(s, end);
	if (p == end || *p != '{')
		return;
	p = raw_ws(p + 1, end);
	while (p < end && *p == '"') {
		k = p + 1;
		p = raw_string(p, end);
		klen = (size_t)(p - k) - 1;
		p = raw_ws(p, end);
		if (p == end || *p != ':')
			return;
		v = p = raw_ws(p + 1, end);
		p = raw_value(p, end);
		vlen = (size_t)(p - v);
		for (i = 0; i < JI_N; i++) {
			if (found[i] || strlen(jsonl_int_names[i]) != klen ||
			    memcmp(k, jsonl_int_names[i], klen) != 0)
				continue;
			found[i] = true;
			if (vlen == 4 && memcmp(v, "null", 4) == 0)
				break;
			if (vlen >= sizeof(num[i]) || vlen == 0)
				memcpy(num[i], "?", 2);
			else {
				memcpy(num[i], v, vlen);
				num[i][vlen] = '\0';
			}
			break;
		}
		p = raw_ws(p, end);
		if (p == end || *p != ',')
			return;
		p = raw_ws(p + 1, end);
	}
}

/* The seq of a line that starts like the exporter's, for a damaged one. */
static void
jsonl_prefix_seq(struct rb *rb, const char *s, size_t len)
{
	static const char pre[] = "{\"seq\":";
	char num[24];
	size_t i, n;

	if (len < sizeof(pre) || memcmp(s, pre, sizeof(pre) - 1) != 0)
		return;
	for (i = sizeof(pre) - 1, n = 0; i < len && s[i] != ','; i++) {
		if (n + 1 >= sizeof(num))
			return;
		num[n++] = s[i];
	}
	if (i == len)
		return;
	num[n] = '\0';
	(void)strnum_i64(num, 0, INT64_MAX, &rb->e.seq);
}

/* A string member, NULL if absent or null; another type is damage. */
static const char *
jsonl_string(struct rb *rb, const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (v == NULL || cJSON_IsNull(v))
		return NULL;
	if (!cJSON_IsString(v) || v->valuestring == NULL) {
		rb_damage(rb, "%s is not a string", key);
		return NULL;
	}
	return v->valuestring;
}

static enum rs_status
jsonl_line(struct rb *rb, int64_t lineno, const char *s, size_t len,
    bool overlong)
{
	struct rb_fields f;
	char num[JI_N][24];
	cJSON *root = NULL;
	enum rs_status st;

	if (blank(s, len) && !overlong)
		return RS_OK;	/* holds no record */
	rb_entry(rb, lineno);
	if (overlong) {
		rb_damage(rb, "line longer than %u bytes", RB_MAX_LINE);
		jsonl_prefix_seq(rb, s, len);
		return rb_emit(rb);
	}
	if (memchr(s, '\0', len) != NULL ||
	    (root = cJSON_ParseWithLengthOpts(s, len + 1, NULL, 1)) == NULL ||
	    !cJSON_IsObject(root)) {
		rb_damage(rb, "not a JSON object");
		jsonl_prefix_seq(rb, s, len);
		st = rb_emit(rb);
		cJSON_Delete(root);
		return st;
	}
	jsonl_raw_ints(s, len, num);
	memset(&f, 0, sizeof(f));
	f.seq = num[JI_SEQ][0] != '\0' ? num[JI_SEQ] : NULL;
	f.key = jsonl_string(rb, root, "idempotency_key");
	f.refund_id = jsonl_string(rb, root, "refund_id");
	f.revision = num[JI_REVISION][0] != '\0' ? num[JI_REVISION] : NULL;
	f.status = jsonl_string(rb, root, "status");
	f.posting = jsonl_string(rb, root, "posting");
	f.currency = jsonl_string(rb, root, "currency");
	f.amount = jsonl_string(rb, root, "amount");
	f.amount_minor = num[JI_AMOUNT_MINOR][0] != '\0' ?
	    num[JI_AMOUNT_MINOR] : NULL;
	f.exponent = num[JI_EXPONENT][0] != '\0' ? num[JI_EXPONENT] : NULL;
	f.date = jsonl_string(rb, root, "created_date");
	rb_fill(rb, &f);
	st = rb_emit(rb);
	cJSON_Delete(root);
	return st;
}

/* ---- csv --------------------------------------------------------------- */

static void
csv_add_field(struct rb *rb, char *field)
{
	if (rb->nfields == rb->fields_cap) {
		rb->fields_cap = rb->fields_cap ? rb->fields_cap * 2 : 32;
		rb->fields = xreallocarray(rb->fields, rb->fields_cap,
		    sizeof(*rb->fields));
	}
	rb->fields[rb->nfields++] = field;
}

/*
 * Split the row (len bytes) into rb->fields, unquoting RFC 4180 quoted
 * fields.  NULL, or a static reason (the fields before it are set).
 */
static const char *
csv_split(struct rb *rb, const char *line, size_t len)
{
	char *r, *w, *end, *start;
	bool last;

	rb->nfields = 0;
	if (len + 1 > rb->scratch_cap) {
		rb->scratch_cap = len + 1;
		rb->scratch = xrealloc(rb->scratch, rb->scratch_cap);
	}
	memcpy(rb->scratch, line, len);
	rb->scratch[len] = '\0';
	/* Unquoting only shrinks, so w never passes r. */
	r = w = rb->scratch;
	end = rb->scratch + len;
	for (;;) {
		start = w;
		if (r < end && *r == '"') {
			for (r++;; ) {
				if (r == end)
					return "unterminated quoted field";
				if (*r == '"' && r + 1 < end && r[1] == '"') {
					*w++ = '"';
					r += 2;
				} else if (*r == '"') {
					r++;
					break;
				} else
					*w++ = *r++;
			}
			if (r < end && *r != ',')
				return "text after a quoted field";
		} else
			while (r < end && *r != ',')
				*w++ = *r++;
		last = r == end;
		*w++ = '\0';
		csv_add_field(rb, start);
		if (last)
			return NULL;
		r++;
	}
}

static void
csv_header(struct rb *rb, const char *s, size_t len, bool overlong)
{
	size_t i, k;

	rb->have_header = true;
	rb->header = xmalloc(len + 1);
	memcpy(rb->header, s, len);
	rb->header[len] = '\0';
	rb->header_len = len;
	for (k = 0; k < CSV_NCOLS; k++)
		rb->col[k] = -1;
	if (overlong) {
		rb->header_bad = "the header row is too long";
		return;
	}
	if ((rb->header_bad = csv_split(rb, s, len)) != NULL)
		return;
	rb->ncols = rb->nfields;
	for (k = 0; k < CSV_NCOLS; k++)
		for (i = 0; i < rb->nfields && rb->col[k] < 0; i++)
			if (strcmp(rb->fields[i], csv_names[k]) == 0)
				rb->col[k] = (long)i;
}

/* Field k of csv_names in the current row, NULL if absent or empty. */
static const char *
csv_field(const struct rb *rb, size_t k)
{
	const char *v;

	if (rb->col[k] < 0 || (size_t)rb->col[k] >= rb->nfields)
		return NULL;
	v = rb->fields[rb->col[k]];
	return *v != '\0' ? v : NULL;
}

/*
 * The row text s (len bytes) that lines lineno to last hold, as one
 * record.
 */
static enum rs_status
csv_record(struct rb *rb, int64_t lineno, int64_t last, const char *s,
    size_t len, bool overlong)
{
	struct rb_fields f;
	const char *bad;

	/* The header again, or an empty line: no record. */
	if (!overlong && last == lineno && (len == 0 ||
	    (len == rb->header_len && memcmp(s, rb->header, len) == 0)))
		return RS_OK;
	rb_entry(rb, lineno);
	if (overlong)
		rb_damage(rb, "%s longer than %u bytes", last == lineno ?
		    "line" : "row", RB_MAX_LINE);
	if (last != lineno)
		rb_damage(rb, "a quoted field holds a line break (the row "
		    "runs over lines %lld-%lld; the exporter writes each "
		    "row on one line)", (long long)lineno, (long long)last);
	if (rb->header_bad != NULL)
		rb_damage(rb, "%s", rb->header_bad);
	if ((bad = csv_split(rb, s, len)) != NULL)
		rb_damage(rb, "%s", bad);
	else if (rb->header_bad == NULL && rb->nfields != rb->ncols)
		rb_damage(rb, "%zu fields where the header has %zu",
		    rb->nfields, rb->ncols);
	memset(&f, 0, sizeof(f));
	f.seq = csv_field(rb, 0);
	f.key = csv_field(rb, 1);
	f.refund_id = csv_field(rb, 2);
	f.revision = csv_field(rb, 3);
	f.status = csv_field(rb, 4);
	f.posting = csv_field(rb, 5);
	f.currency = csv_field(rb, 6);
	f.amount_minor = csv_field(rb, 7);
	f.exponent = csv_field(rb, 8);
	f.date = csv_field(rb, 9);
	f.amount = csv_field(rb, 10);
	rb_fill(rb, &f);
	return rb_emit(rb);
}

/*
 * Do the len bytes at s, read from inside a quoted field (quoted) or
 * from the start of a row, end inside a quoted field?  Then the row runs
 * on to the next line (RFC 4180).  *nfields (may be NULL): the fields
 * begun, a text after a closing quote forgiven.
 */
static bool
csv_runs_on(const char *s, size_t len, bool quoted, size_t *nfields)
{
	bool start = !quoted;
	size_t i, n = 1;

	for (i = 0; i < len; i++) {
		if (quoted) {
			if (s[i] != '"')
				continue;
			if (i + 1 < len && s[i + 1] == '"')
				i++;
			else
				quoted = false;
		} else if (s[i] == ',') {
			start = true;
			n++;
		} else {
			if (start && s[i] == '"')
				quoted = true;
			start = false;
		}
	}
	if (nfields != NULL)
		*nfields = n;
	return quoted;
}

/* Hand out the row running on over lines, if any, as it stands. */
static enum rs_status
csv_flush(struct rb *rb)
{
	enum rs_status st;

	if (rb->row_line == 0)
		return RS_OK;
	st = csv_record(rb, rb->row_line, rb->row_last, rb->row.data,
	    rb->row.len, rb->row_overlong);
	buf_reset(&rb->row);
	rb->row_line = rb->row_last = 0;
	rb->row_overlong = false;
	return st;
}

static enum rs_status
csv_line(struct rb *rb, int64_t lineno, const char *s, size_t len,
    bool overlong)
{
	enum rs_status st;
	size_t n;

	if (!rb->have_header) {
		csv_header(rb, s, len, overlong);
		return RS_OK;
	}
	if (rb->row_line != 0) {
		/* The rest of the open row, unless the line is a row of its
		 * own (closed quotes, the header's fields or more): then
		 * the open one ends unterminated. */
		if (!overlong && (csv_runs_on(s, len, false, &n) ||
		    n < rb->ncols)) {
			if (!rb->row_overlong &&
			    (buf_append(&rb->row, "\n", 1) != RS_OK ||
			    buf_append(&rb->row, s, len) != RS_OK))
				rb->row_overlong = true;
			rb->row_last = lineno;
			return csv_runs_on(s, len, true, NULL) ? RS_OK :
			    csv_flush(rb);
		}
		if ((st = csv_flush(rb)) != RS_OK)
			return st;
	}
	if (!overlong && rb->header_bad == NULL &&
	    csv_runs_on(s, len, false, NULL)) {
		buf_reset(&rb->row);
		if (buf_append(&rb->row, s, len) != RS_OK)
			return csv_record(rb, lineno, lineno, s, len, true);
		rb->row_line = rb->row_last = lineno;
		return RS_OK;
	}
	return csv_record(rb, lineno, lineno, s, len, overlong);
}

/* ---- ledger and beancount ---------------------------------------------- */

static void
txn_clear(struct txn *t)
{
	size_t i;

	for (i = 0; i < TM_N; i++)
		free(t->meta[i]);
	free(t->currency);
	free(t->sum_currency);
	memset(t, 0, sizeof(*t));
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* s (len bytes) with filejournal_put_safe()'s %XX undone.  Caller frees. */
static char *
pct_decode(const char *s, size_t len)
{
	char *out = xmalloc(len + 1), *w = out;
	size_t i;
	int hi, lo;

	for (i = 0; i < len; i++) {
		if (s[i] == '%' && i + 2 < len &&
		    (hi = hexval(s[i + 1])) >= 0 &&
		    (lo = hexval(s[i + 2])) >= 0) {
			*w++ = (char)(hi << 4 | lo);
			i += 2;
		} else
			*w++ = s[i];
	}
	*w = '\0';
	return out;
}

/*
 * Is s (len bytes) a transaction's date line?  Set date (YYYY-MM-DD).
 * ledger: a date at column 0 (YYYY-MM-DD, or with '/' or '.'), then
 * white space, '=' or the end; beancount: a date, then a flag ('*', '!'
 * or "txn").  Directives (account, commodity, open, ...) are not.
 */
static bool
txn_header(const struct rb *rb, const char *s, size_t len, char date[11])
{
	static const int digit[] = { 0, 1, 2, 3, 5, 6, 8, 9 };
	const char *p;
	size_t i, rest;

	if (len < 10 || (s[4] != '-' && s[4] != '/' && s[4] != '.') ||
	    s[7] != s[4])
		return false;
	for (i = 0; i < sizeof(digit) / sizeof(digit[0]); i++)
		if (s[digit[i]] < '0' || s[digit[i]] > '9')
			return false;
	p = s + 10;
	rest = len - 10;
	if (rb->fmt == RB_LEDGER) {
		if (rest > 0 && *p != ' ' && *p != '\t' && *p != '=')
			return false;
	} else {
		while (rest > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			rest--;
		}
		if (p == s + 10 || rest == 0)
			return false;
		if (*p == '*' || *p == '!')
			i = 1;
		else if (rest >= 3 && memcmp(p, "txn", 3) == 0)
			i = 3;
		else
			return false;
		p += i;
		rest -= i;
		if (rest > 0 && *p != ' ' && *p != '\t')
			return false;
	}
	memcpy(date, s, 10);
	date[4] = date[7] = '-';
	date[10] = '\0';
	return true;
}

/* A "key: value" metadata line at s (len bytes); the key is returned. */
static bool
meta_split(const char *s, size_t len, bool bean, const char **key,
    size_t *klen, const char **val, size_t *vlen)
{
	size_t i = 0;

	if (len == 0 || (bean && (s[0] < 'a' || s[0] > 'z')))
		return false;
	while (i < len && ((s[i] >= 'a' && s[i] <= 'z') ||
	    (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
	    s[i] == '-' || s[i] == '_'))
		i++;
	if (i == 0 || i == len || s[i] != ':' ||
	    (i + 1 < len && s[i + 1] != ' ' && s[i + 1] != '\t'))
		return false;
	*key = s;
	*klen = i;
	for (i++; i < len && (s[i] == ' ' || s[i] == '\t'); i++)
		;
	*val = s + i;
	*vlen = len - i;
	while (*vlen > 0 && ((*val)[*vlen - 1] == ' ' ||
	    (*val)[*vlen - 1] == '\t' || (*val)[*vlen - 1] == '\r'))
		(*vlen)--;
	return true;
}

static void
txn_meta(struct rb *rb, const char *key, size_t klen, const char *val,
    size_t vlen)
{
	struct txn *t = &rb->t;
	size_t i;

	for (i = 0; i < TM_N; i++)
		if (strlen(txn_meta_names[i]) == klen &&
		    memcmp(key, txn_meta_names[i], klen) == 0)
			break;
	if (i == TM_N)
		return;
	if (t->seen[i]) {
		rb_damage(rb, "%s twice", txn_meta_names[i]);
		return;
	}
	t->seen[i] = true;
	/* beancount strings are quoted; the writer never escapes in them. */
	if (rb->fmt == RB_BEANCOUNT && vlen >= 2 && val[0] == '"' &&
	    val[vlen - 1] == '"') {
		val++;
		vlen -= 2;
	}
	t->meta[i] = pct_decode(val, vlen);
}

static bool
commodity_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > RB_MAX_COMMODITY || s[0] < 'A' || s[0] > 'Z')
		return false;
	for (i = 1; i < len; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '\'' ||
		    s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/*
 * A posting amount "12.95", "-0.125", "1500" (len bytes) of currency:
 * in the currency's ISO 4217 minor units when it has them and the text
 * fits them exactly, else in the decimals as written.
 */
static bool
amount_parse(const char *s, size_t len, const char *currency,
    int64_t *minor, int *exponent)
{
	char text[MONEY_MAX_TEXT + 1], digits[MONEY_MAX_TEXT + 1];
	const char *dot, *p;
	bool neg = false;
	size_t n = 0;
	int64_t m;
	int e;

	if (len > 0 && s[0] == '-') {
		neg = true;
		s++;
		len--;
	}
	if (len == 0 || len > MONEY_MAX_TEXT)
		return false;
	memcpy(text, s, len);
	text[len] = '\0';
	if (!money_decimal_wellformed(text))
		return false;
	e = money_exponent(currency);
	if (e >= 0 && money_to_minor(text, currency, &m) == RS_OK)
		goto done;
	/* An unknown currency, or more decimals than it has. */
	dot = strchr(text, '.');
	e = dot != NULL ? (int)strlen(dot + 1) : 0;
	for (p = text; *p != '\0'; p++)
		if (*p != '.' && (n > 0 || *p != '0'))
			digits[n++] = *p;
	if (n == 0)
		digits[n++] = '0';
	digits[n] = '\0';
	if (strnum_i64(digits, 0, INT64_MAX, &m) != NULL)
		return false;
done:
	*minor = neg ? -m : m;
	*exponent = e;
	return true;
}

static bool
scale10(int64_t *v, int from, int to)
{
	for (; from < to; from++)
		if (__builtin_mul_overflow(*v, 10, v))
			return false;
	return true;
}

/* Add a posting amount to the transaction's sum. */
static void
txn_sum(struct txn *t, const char *currency, int64_t minor, int exponent)
{
	if (t->mixed || t->overflow)
		return;
	if (t->sum_currency == NULL) {
		t->sum_currency = xstrdup(currency);
		t->sum = minor;
		t->sum_exponent = exponent;
		return;
	}
	if (strcmp(currency, t->sum_currency) != 0) {
		t->mixed = true;
		return;
	}
	if (!scale10(&t->sum, t->sum_exponent, exponent) ||
	    !scale10(&minor, exponent, t->sum_exponent) ||
	    __builtin_add_overflow(t->sum, minor, &t->sum))
		t->overflow = true;
	else if (exponent > t->sum_exponent)
		t->sum_exponent = exponent;
}

/* The next word of s (len bytes) from *i: its start and length. */
static size_t
next_word(const char *s, size_t len, size_t *i, const char **w)
{
	size_t n;

	while (*i < len && (s[*i] == ' ' || s[*i] == '\t'))
		(*i)++;
	*w = s + *i;
	for (n = 0; *i < len && s[*i] != ' ' && s[*i] != '\t'; (*i)++)
		n++;
	return n;
}

/* A posting line (s: len bytes past the indentation). */
static void
txn_posting(struct rb *rb, int64_t lineno, const char *s, size_t len)
{
	struct txn *t = &rb->t;
	const char *semi, *acct, *w[3];
	char cur[RB_MAX_COMMODITY + 1];
	size_t alen, wl[3], i, k;
	int64_t minor = 0;
	int exp = 0;
	bool refund, ok = false;

	if ((semi = memchr(s, ';', len)) != NULL)
		len = (size_t)(semi - s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' ||
	    s[len - 1] == '\r'))
		len--;
	/* A posting's own flag. */
	if (len >= 2 && (s[0] == '*' || s[0] == '!') &&
	    (s[1] == ' ' || s[1] == '\t'))
		for (s += 2, len -= 2; len > 0 && (*s == ' ' || *s == '\t');
		    s++, len--)
			;
	/* ledger account names may hold single spaces. */
	for (alen = 0; alen < len; alen++)
		if (s[alen] == '\t' || (s[alen] == ' ' &&
		    (rb->fmt == RB_BEANCOUNT ||
		    (alen + 1 < len && s[alen + 1] == ' '))))
			break;
	acct = s;
	refund = strlen(rb->refund_account) == alen &&
	    memcmp(acct, rb->refund_account, alen) == 0;
	for (i = alen, k = 0; k < 3; k++)
		wl[k] = next_word(s, len, &i, &w[k]);
	if (wl[0] == 0) {
		t->unreadable = true;
		rb_damage(rb, "line %lld: posting without an amount",
		    (long long)lineno);
	} else if (wl[1] == 0 || wl[2] != 0) {
		t->unreadable = true;
		rb_damage(rb, "line %lld: cannot read the posting amount",
		    (long long)lineno);
	} else {
		/* "12.95 USD", or "USD 12.95". */
		for (k = 0; k < 2 && !ok; k++) {
			if (!commodity_ok(w[1 - k], wl[1 - k]))
				continue;
			memcpy(cur, w[1 - k], wl[1 - k]);
			cur[wl[1 - k]] = '\0';
			ok = amount_parse(w[k], wl[k], cur, &minor, &exp);
		}
		if (!ok) {
			t->unreadable = true;
			rb_damage(rb, "line %lld: cannot read the posting "
			    "amount", (long long)lineno);
		}
	}
	if (ok)
		txn_sum(t, cur, minor, exp);
	if (!refund || t->refund_line)
		return;
	t->refund_line = true;
	if (ok) {
		t->refund_amount = true;
		t->currency = xstrdup(cur);
		t->minor = minor;
		t->exponent = exp;
	}
}

/* An indented line of the open transaction. */
static void
txn_line(struct rb *rb, int64_t lineno, const char *s, size_t len,
    bool overlong)
{
	const char *key, *val;
	size_t klen, vlen;

	if (overlong) {
		rb_damage(rb, "line %lld longer than %u bytes",
		    (long long)lineno, RB_MAX_LINE);
		return;
	}
	while (len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	if (*s == ';') {
		/* ledger: "; key: value"; else a comment. */
		if (rb->fmt != RB_LEDGER)
			return;
		for (s++, len--; len > 0 && (*s == ' ' || *s == '\t');
		    s++, len--)
			;
		if (meta_split(s, len, false, &key, &klen, &val, &vlen))
			txn_meta(rb, key, klen, val, vlen);
		return;
	}
	if (rb->fmt == RB_BEANCOUNT &&
	    meta_split(s, len, true, &key, &klen, &val, &vlen)) {
		txn_meta(rb, key, klen, val, vlen);
		return;
	}
	txn_posting(rb, lineno, s, len);
}

/* Hand out the open transaction and forget it. */
static enum rs_status
txn_close(struct rb *rb)
{
	struct txn *t = &rb->t;
	struct readback_entry *e = &rb->e;
	char amt[48];
	enum rs_status st;

	if (!t->seen[TM_SEQ])
		rb_damage(rb, "no rs-seq");
	else if (strnum_i64(t->meta[TM_SEQ], 0, INT64_MAX, &e->seq) != NULL)
		rb_damage(rb, "rs-seq is not a number");
	if (!t->seen[TM_REFUND_ID] || strcmp(t->meta[TM_REFUND_ID], "-") == 0)
		rb_damage(rb, "no rs-refund-id");
	else
		e->refund_id = t->meta[TM_REFUND_ID];
	if (!t->seen[TM_POSTING])
		rb_damage(rb, "no rs-posting");
	else if (!posting_parse(t->meta[TM_POSTING], &e->posting))
		rb_damage(rb, "rs-posting is not none, post, reverse or adjust");
	if (t->seen[TM_KEY] && strcmp(t->meta[TM_KEY], "-") != 0)
		e->key = t->meta[TM_KEY];
	if (t->seen[TM_STATUS] && strcmp(t->meta[TM_STATUS], "-") != 0)
		e->status = t->meta[TM_STATUS];
	if (t->seen[TM_REVISION]) {
		if (strnum_i64(t->meta[TM_REVISION], INT64_MIN, INT64_MAX,
		    &e->revision) == NULL)
			e->has_revision = true;
		else
			rb_damage(rb, "rs-revision is not a number");
	}
	if (!t->refund_line)
		rb_damage(rb, "no %s posting line", rb->refund_account);
	if (t->mixed)
		rb_damage(rb, "posting lines in more than one commodity");
	else if (t->overflow)
		rb_damage(rb, "posting amounts overflow");
	else if (!t->unreadable && t->sum_currency != NULL && t->sum != 0) {
		if (money_format(t->sum, t->sum_exponent, amt, sizeof(amt)) !=
		    RS_OK)
			memcpy(amt, "?", 2);
		rb_damage(rb, "posting lines do not balance: they sum to %s %s",
		    amt, t->sum_currency);
	}
	if (t->refund_amount) {
		e->currency = t->currency;
		e->has_amount = true;
		e->amount_minor = t->minor;
		e->exponent = t->exponent;
	}
	e->date = t->date;
	st = rb_emit(rb);
	txn_clear(t);
	return st;
}

static enum rs_status
journal_line(struct rb *rb, int64_t lineno, const char *s, size_t len,
    bool overlong)
{
	char date[11];
	bool indented = len > 0 && (s[0] == ' ' || s[0] == '\t');
	enum rs_status st;

	if (rb->t.open) {
		if (indented && !blank(s, len)) {
			txn_line(rb, lineno, s, len, overlong);
			return RS_OK;
		}
		/* A blank or top-level line ends it ("; rs-seq: N"). */
		if ((st = txn_close(rb)) != RS_OK)
			return st;
	}
	if (indented || !txn_header(rb, s, len, date))
		return RS_OK;	/* belongs to no record */
	rb_entry(rb, lineno);
	rb->t.open = true;
	rb->t.line = lineno;
	memcpy(rb->t.date, date, sizeof(date));
	if (overlong)
		rb_damage(rb, "line %lld longer than %u bytes",
		    (long long)lineno, RB_MAX_LINE);
	return RS_OK;
}

/* ---- the API ------------------------------------------------------------ */

bool
readback_supports(const char *type)
{
	size_t i;

	for (i = 0; type != NULL && i < RB_NTYPES; i++)
		if (strcmp(type, rb_types[i]) == 0)
			return true;
	return false;
}

static void
rb_cleanup(struct rb *rb)
{
	txn_clear(&rb->t);
	free(rb->header);
	free(rb->scratch);
	free(rb->fields);
	buf_cleanup(&rb->row);
}

enum rs_status
readback_file(const char *type, const struct rs_export_kv *kv, size_t nkv,
    readback_fn fn, void *arg, char **why)
{
	struct rb rb;
	struct reader rd;
	struct stat sb;
	const char *path, *acct;
	const char *line;
	size_t i;
	int fd = -1, saved;
	bool got;
	enum rs_status st = RS_OK;

	if (why != NULL)
		*why = NULL;
	memset(&rb, 0, sizeof(rb));
	for (i = 0; type != NULL && i < RB_NTYPES; i++)
		if (strcmp(type, rb_types[i]) == 0)
			break;
	if (type == NULL || i == RB_NTYPES) {
		seterr(why, "exporter type %s: files cannot be read back",
		    type != NULL ? type : "(none)");
		return RS_ERR_INPUT;
	}
	rb.fmt = (enum rb_format)i;
	path = filejournal_kv(kv, nkv, "path");
	if (path == NULL || *path == '\0') {
		seterr(why, "exporter type %s: no path", type);
		return RS_ERR_INPUT;
	}
	acct = filejournal_kv(kv, nkv, "refund_account");
	rb.refund_account = acct != NULL && *acct != '\0' ? acct :
	    POSTING_DEFAULT_REFUND;
	rb.fn = fn;
	rb.arg = arg;
	buf_init(&rb.row, RB_MAX_LINE);

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		if (errno == ENOENT)
			return RS_OK;	/* not written yet: no records */
		seterr(why, "%s: %s", path, strerror(errno));
		return RS_ERR_IO;
	}
	if (fstat(fd, &sb) != 0) {
		seterr(why, "%s: stat: %s", path, strerror(errno));
		close(fd);
		return RS_ERR_IO;
	}
	if (!S_ISREG(sb.st_mode)) {
		seterr(why, "%s: not a regular file", path);
		close(fd);
		return RS_ERR_IO;
	}
	reader_init(&rd, fd);
	for (;;) {
		if ((st = reader_next(&rd, &got)) != RS_OK) {
			saved = errno;
			seterr(why, "%s: read: %s", path, strerror(saved));
			goto out;
		}
		if (!got)
			break;
		line = rd.line.data;
		switch (rb.fmt) {
		case RB_JSONL:
			st = jsonl_line(&rb, rd.lineno, line, rd.line.len,
			    rd.overlong);
			break;
		case RB_CSV:
			st = csv_line(&rb, rd.lineno, line, rd.line.len,
			    rd.overlong);
			break;
		case RB_LEDGER:
		case RB_BEANCOUNT:
			st = journal_line(&rb, rd.lineno, line, rd.line.len,
			    rd.overlong);
			break;
		}
		if (st != RS_OK)
			goto out;	/* fn stopped the read */
	}
	/* A csv row still open was cut by its last complete line. */
	if (rb.fmt == RB_CSV)
		st = csv_flush(&rb);
	/* A transaction still open here is being written: not handed out. */
out:
	reader_cleanup(&rd);
	rb_cleanup(&rb);
	close(fd);
	return st;
}
