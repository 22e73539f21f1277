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

const char *const exporter_csv_keys[] = { "path", NULL };

#define CSV_HEADER	"seq,idempotency_key,refund_id,instance_id," \
	"charge_id,revision,status,prev_status,posting,currency,amount," \
	"amount_minor,exponent,returned_application_fee," \
	"returned_processing_fee,created_date,updated_date,changed_at,source"

static bool
csv_commit_line(const char *line, size_t len, int64_t *seq)
{
	char num[24];
	size_t n;

	if (len == sizeof(CSV_HEADER) - 1 &&
	    memcmp(line, CSV_HEADER, len) == 0) {
		*seq = 0;
		return true;
	}
	for (n = 0; n < len && line[n] != ','; n++)
		if (n + 1 >= sizeof(num))
			return false;
	if (n == len || n == 0)
		return false;
	memcpy(num, line, n);
	num[n] = '\0';
	return strnum_i64(num, 0, INT64_MAX, seq) == NULL;
}

static int
csv_init(void **state, const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	/* Nothing to configure beyond the path; a non-NULL state. */
	static char dummy;

	*state = &dummy;
	return RS_EXPORT_OK;
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
