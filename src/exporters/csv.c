/*
 * csv.c: the csv exporter, one RFC 4180 row per change-log record, every
 * record written (PENDING ones too).
 *
 * Keys of [exporter NAME] with type = csv:
 *	path = FILE	the file to append to (required)
 *
 * A new file starts with the header row below.  Empty fields are NULLs;
 * amount_minor and exponent are empty when the amount is not exact in
 * the currency's minor units.  A row is exactly one line: control
 * characters inside a value are written as a space (the jsonl exporter
 * keeps values exactly).  Each row is its own commit line (filejournal.h)
 * and starts with its seq; the header row counts as seq 0.
 *
 * Recovery takes a line for a row of ours only if it is one whole,
 * well-formed row: as many fields as the header, every quoted field
 * closed, a seq, and an idempotency key that is the one the engine forms
 * for that row ("<exporter>:<refund_id>:<revision>", "-..." without a
 * revision, ":reverse" or ":adjust" when posting is one of those).  So
 * a row a crash cut short (no newline yet) is cut away, never taken for
 * the last record;
 * a whole line after the last row of ours (a row of another exporter:
 * the key names it, a hand edit, another program's csv) makes the file
 * refused, never cut (FILEJOURNAL_LINE_RECORDS), as is a file that does
 * not begin with our header row.
 *
 * Threads: an instance belongs to one export worker at a time.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exporters/builtin.h"
#include "exporters/filejournal.h"
#include "exporters/posting.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

const char *const exporter_csv_keys[] = { "path", NULL };

#define CSV_HEADER	"seq,idempotency_key,refund_id,instance_id," \
	"charge_id,revision,status,prev_status,posting,currency,amount," \
	"amount_minor,exponent,returned_application_fee," \
	"returned_processing_fee,created_date,updated_date,changed_at,source"

/* The columns of CSV_HEADER that recovery checks, and their number. */
enum {
	CSV_COL_SEQ = 0,
	CSV_COL_KEY = 1,
	CSV_COL_REFUND = 2,
	CSV_COL_REVISION = 5,
	CSV_COL_POSTING = 8,
	CSV_NCOLS = 19
};

struct csv {
	char	*name;		/* the exporter's name, as keys begin */
};

/*
 * Split the row in s (NUL-terminated, no control characters) into
 * exactly CSV_NCOLS fields, unquoting in place, as filejournal_put_csv()
 * writes them: a quoted field is closed and followed by ',' or the end,
 * and a bare one holds no '"'.  false if s is not one whole row.
 */
static bool
csv_split(char *s, char **v)
{
	char *r = s, *w = s;
	size_t n = 0;

	for (;;) {
		if (n == CSV_NCOLS)
			return false;
		v[n++] = w;
		if (*r == '"') {
			for (r++;; r++) {
				if (*r == '\0')
					return false;	/* unterminated */
				if (*r == '"' && r[1] == '"')
					r++;
				else if (*r == '"')
					break;
				*w++ = *r;
			}
			r++;
			if (*r != ',' && *r != '\0')
				return false;
		} else {
			while (*r != ',' && *r != '\0' && *r != '"')
				*w++ = *r++;
			if (*r == '"')
				return false;
		}
		if (*r == '\0') {
			*w = '\0';
			return n == CSV_NCOLS;
		}
		*w++ = '\0';
		r++;
	}
}

/*
 * Does key start with name, as filejournal_put_csv() writes it (a
 * control character as a space)?  The length of name if so, else 0.
 */
static size_t
csv_key_name(const char *key, const char *name)
{
	size_t i;
	unsigned char c;

	for (i = 0; name[i] != '\0'; i++) {
		c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f)
			c = ' ';
		if ((unsigned char)key[i] != c)
			return 0;
	}
	return i;
}

/* The posting column: "none", "post", "reverse" or "adjust"
 * (posting_name()). */
static bool
csv_posting(const char *s, enum rs_posting *out)
{
	static const enum rs_posting all[] = { RS_POSTING_NONE,
	    RS_POSTING_POST, RS_POSTING_REVERSE, RS_POSTING_ADJUST };
	size_t i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(s, posting_name(all[i])) == 0) {
			*out = all[i];
			return true;
		}
	return false;
}

/*
 * A line of ours: the header (seq 0), or one whole row with a seq whose
 * key is the one the engine forms for it (export_idempotency_key()):
 * "<name>:<refund_id>:" then its revision, or "-" (alone or followed by
 * ':' and the version's event sequence and date) when it has none, then
 * ":reverse" exactly when its posting is reverse and ":adjust" exactly
 * when it is adjust.  Rows are written with no control characters, so a
 * line holding one is not a row.
 */
static bool
csv_commit_line(void *ctx, const char *line, size_t len, int64_t *seq)
{
	const struct csv *c = ctx;
	const char *sfx;
	char *s = NULL, *v[CSV_NCOLS], *k;
	const char *rev;
	size_t i, n, klen, rlen;
	enum rs_posting posting;
	int64_t num, r;
	bool ok = false;

	if (len == sizeof(CSV_HEADER) - 1 &&
	    memcmp(line, CSV_HEADER, len) == 0) {
		*seq = 0;
		return true;
	}
	if (len == 0 || line[0] < '0' || line[0] > '9')
		return false;		/* no seq: no row */
	for (i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			return false;
	s = xmalloc(len + 1);
	memcpy(s, line, len);
	s[len] = '\0';
	if (!csv_split(s, v) ||
	    strnum_i64(v[CSV_COL_SEQ], 0, INT64_MAX, &num) != NULL ||
	    !csv_posting(v[CSV_COL_POSTING], &posting))
		goto out;
	rev = v[CSV_COL_REVISION];
	if (*rev != '\0' && strnum_i64(rev, INT64_MIN, INT64_MAX, &r) != NULL)
		goto out;
	/* "<name>:<refund_id>:" */
	k = v[CSV_COL_KEY];
	if ((n = csv_key_name(k, c->name)) == 0 || k[n] != ':')
		goto out;
	k += n + 1;
	rlen = strlen(v[CSV_COL_REFUND]);
	if (strncmp(k, v[CSV_COL_REFUND], rlen) != 0 || k[rlen] != ':')
		goto out;
	k += rlen + 1;
	/* Then the version, and ":reverse" or ":adjust" for those. */
	klen = strlen(k);
	sfx = posting == RS_POSTING_REVERSE ? ":reverse" :
	    posting == RS_POSTING_ADJUST ? ":adjust" : NULL;
	if (sfx != NULL) {
		size_t slen = strlen(sfx);

		if (klen < slen || strcmp(k + klen - slen, sfx) != 0)
			goto out;
		klen -= slen;
	}
	if (*rev != '\0')
		ok = klen == strlen(rev) && strncmp(k, rev, klen) == 0;
	else
		ok = klen >= 1 && k[0] == '-' && (klen == 1 || k[1] == ':');
	if (ok)
		*seq = num;
out:
	free(s);
	return ok;
}

static int
csv_init(void **state, const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	struct csv *c = xcalloc(1, sizeof(*c));

	c->name = xstrdup(name);
	*state = c;
	return RS_EXPORT_OK;
}

static void
csv_free(void *state)
{
	struct csv *c = state;

	if (c == NULL)
		return;
	free(c->name);
	free(c);
}

static enum rs_status
csv_start(void *state, bool empty, int64_t last_seq, struct buf *out)
{
	return empty ? buf_appends(out, CSV_HEADER "\n") : RS_OK;
}

static enum rs_status
csv_row(const struct rs_export_record *r, struct buf *b)
{
	enum rs_status st = RS_OK;

#define PUT(x)	do { if ((st = (x)) != RS_OK) return st; } while (0)
#define SEP()	PUT(buf_append(b, ",", 1))
	PUT(filejournal_put_i64(b, r->seq));
	SEP();
	PUT(filejournal_put_csv(b, r->idempotency_key));
	SEP();
	PUT(filejournal_put_csv(b, r->refund_id));
	SEP();
	PUT(filejournal_put_csv(b, r->instance_id));
	SEP();
	PUT(filejournal_put_csv(b, r->charge_id));
	SEP();
	if (r->has_revision)
		PUT(filejournal_put_i64(b, r->revision));
	SEP();
	PUT(filejournal_put_csv(b, r->status));
	SEP();
	PUT(filejournal_put_csv(b, r->prev_status));
	SEP();
	PUT(filejournal_put_csv(b, posting_name(r->posting)));
	SEP();
	PUT(filejournal_put_csv(b, r->currency));
	SEP();
	PUT(filejournal_put_csv(b, r->amount));
	SEP();
	if (r->amount_exact)
		PUT(filejournal_put_i64(b, r->amount_minor));
	SEP();
	if (r->amount_exact)
		PUT(filejournal_put_i64(b, r->exponent));
	SEP();
	PUT(filejournal_put_csv(b, r->returned_application_fee));
	SEP();
	PUT(filejournal_put_csv(b, r->returned_processing_fee));
	SEP();
	PUT(filejournal_put_csv(b, r->created_date));
	SEP();
	PUT(filejournal_put_csv(b, r->updated_date));
	SEP();
	PUT(filejournal_put_csv(b, r->changed_at));
	SEP();
	PUT(filejournal_put_csv(b, r->source));
	PUT(buf_append(b, "\n", 1));
#undef SEP
#undef PUT
	return st;
}

static int
csv_format(void *state, const struct rs_export_record *rec, struct buf *out,
    char *err, size_t errlen)
{
	if (csv_row(rec, out) != RS_OK) {
		snprintf(err, errlen, "refund %s: record too large for a csv "
		    "row", rec->refund_id != NULL ? rec->refund_id : "-");
		return RS_EXPORT_PERMANENT;
	}
	return RS_EXPORT_OK;
}

static const struct filejournal_format csv_format_def = {
	.type = "csv",
	.keys = exporter_csv_keys,
	.commit_line = csv_commit_line,
	.init = csv_init,
	.start = csv_start,
	.format = csv_format,
	.free = csv_free,
	.header_fixed = true,
	.line_records = true,
};

static int
csv_open(void **ctx, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	return filejournal_exporter_open(&csv_format_def, ctx, name, kv, nkv,
	    err, errlen);
}

bool
exporter_csv_check(const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	return filejournal_exporter_check(&csv_format_def, name, kv, nkv,
	    report, arg);
}

const struct rs_exporter_ops exporter_csv_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "csv",
	.open = csv_open,
	.deliver = filejournal_exporter_deliver,
	.recover = filejournal_exporter_recover,
	.close = filejournal_exporter_close,
};
