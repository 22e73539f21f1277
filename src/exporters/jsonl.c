/*
 * jsonl.c: the jsonl exporter, one JSON object per change-log record per
 * line, every record written (PENDING ones too), lossless.
 *
 * Keys of [exporter NAME] with type = jsonl:
 *	path = FILE	the file to append to (required)
 *	body = yes|no	embed the refund entity as "refund" (default yes)
 *
 * A line: {"seq":N,"idempotency_key":...,"refund_id":...,
 * "instance_id":...,"charge_id":...,"revision":N|null,"status":...,
 * "prev_status":...|null,"posting":"none"|"post"|"reverse"|"adjust",
 * "currency":...,"amount":"12.95","amount_minor":N|null,"exponent":N|null,
 * "returned_application_fee":...|null,"returned_processing_fee":...|null,
 * "created_date":...,"updated_date":...,"changed_at":...,"source":...,
 * "refund":{...}}.  "seq" comes first: the line is its own commit line
 * (filejournal.h).  The entity is embedded as it is when it is one
 * well-formed JSON object, else as the string "refund_text".
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

/* Deepest nesting of an embedded entity we accept. */
#define JSONL_MAX_DEPTH	64

const char *const exporter_jsonl_keys[] = { "path", "body", NULL };

struct jsonl {
	bool	body;
};

/* ---- a small JSON syntax check (no allocation) ------------------------ */

static const char *json_value(const char *p, int depth);

static const char *
json_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *
json_string(const char *p)
{
	static const char esc[] = "\"\\/bfnrt";
	int i;

	if (*p++ != '"')
		return NULL;
	for (;;) {
		unsigned char c = (unsigned char)*p;

		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;	/* NUL or a raw control character */
		if (c == '\\') {
			p++;
			if (*p == 'u') {
				for (i = 1; i <= 4; i++)
					if (strchr("0123456789abcdefABCDEF",
					    p[i]) == NULL || p[i] == '\0')
						return NULL;
				p += 5;
				continue;
			}
			if (*p == '\0' || strchr(esc, *p) == NULL)
				return NULL;
		}
		p++;
	}
}

static const char *
json_number(const char *p)
{
	const char *d;

	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (*p == '.') {
		for (d = ++p; *p >= '0' && *p <= '9'; p++)
			;
		if (p == d)
			return NULL;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		for (d = p; *p >= '0' && *p <= '9'; p++)
			;
		if (p == d)
			return NULL;
	}
	return p;
}

/*
 * json_container and json_value recurse once per nesting level, and stop
 * past JSONL_MAX_DEPTH.
 * NOLINTBEGIN(misc-no-recursion)
 */
static const char *
json_container(const char *p, int depth)
{
	char close = *p == '{' ? '}' : ']';

	if (depth > JSONL_MAX_DEPTH)
		return NULL;
	p = json_ws(p + 1);
	if (*p == close)
		return p + 1;
	for (;;) {
		if (close == '}') {
			if ((p = json_string(p)) == NULL)
				return NULL;
			p = json_ws(p);
			if (*p++ != ':')
				return NULL;
		}
		if ((p = json_value(json_ws(p), depth + 1)) == NULL)
			return NULL;
		p = json_ws(p);
		if (*p == close)
			return p + 1;
		if (*p++ != ',')
			return NULL;
		p = json_ws(p);
	}
}

static const char *
json_value(const char *p, int depth)
{
	switch (*p) {
	case '{':
	case '[':
		return json_container(p, depth);
	case '"':
		return json_string(p);
	case 't':
		return strncmp(p, "true", 4) == 0 ? p + 4 : NULL;
	case 'f':
		return strncmp(p, "false", 5) == 0 ? p + 5 : NULL;
	case 'n':
		return strncmp(p, "null", 4) == 0 ? p + 4 : NULL;
	default:
		return json_number(p);
	}
}
/* NOLINTEND(misc-no-recursion) */

/* Is s exactly one JSON object with no raw newline anywhere? */
static bool
json_object_line(const char *s)
{
	const char *end;

	if (s == NULL || *s != '{' || strpbrk(s, "\r\n") != NULL)
		return false;
	end = json_value(s, 0);
	return end != NULL && *json_ws(end) == '\0';
}

/* ---- the format -------------------------------------------------------- */

static bool
jsonl_commit_line(void *ctx, const char *line, size_t len, int64_t *seq)
{
	static const char pre[] = "{\"seq\":";
	char num[24];
	size_t i, n;

	if (len < sizeof(pre) + 1 || memcmp(line, pre, sizeof(pre) - 1) != 0 ||
	    line[len - 1] != '}')
		return false;
	for (i = sizeof(pre) - 1, n = 0; i < len && line[i] != ','; i++) {
		if (n + 1 >= sizeof(num))
			return false;
		num[n++] = line[i];
	}
	if (i == len)
		return false;
	num[n] = '\0';
	return strnum_i64(num, 0, INT64_MAX, seq) == NULL;
}

static int
jsonl_init(void **state, const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	struct jsonl *j;
	const char *v;
	char why[512];
	bool body = true;

	(void)name;
	if ((v = filejournal_kv(kv, nkv, "body")) != NULL &&
	    !filejournal_parse_bool(v, &body)) {
		snprintf(why, sizeof(why), "%s is not yes/no, true/false, "
		    "on/off or 1/0", v);
		report(arg, "body", why);
		return RS_EXPORT_PERMANENT;
	}
	j = xcalloc(1, sizeof(*j));
	j->body = body;
	*state = j;
	return RS_EXPORT_OK;
}

static enum rs_status
put_key(struct buf *b, const char *key)
{
	return buf_appends(b, key);
}

static enum rs_status
put_str_field(struct buf *b, const char *key, const char *v)
{
	enum rs_status st;

	if ((st = put_key(b, key)) != RS_OK)
		return st;
	return filejournal_put_json(b, v);
}

static enum rs_status
put_int_field(struct buf *b, const char *key, bool has, int64_t v)
{
	enum rs_status st;

	if ((st = put_key(b, key)) != RS_OK)
		return st;
	return has ? filejournal_put_i64(b, v) : buf_append(b, "null", 4);
}

static enum rs_status
jsonl_line(const struct jsonl *j, const struct rs_export_record *r,
    struct buf *b)
{
	enum rs_status st = RS_OK;

#define PUT(x)	do { if ((st = (x)) != RS_OK) return st; } while (0)
	PUT(put_int_field(b, "{\"seq\":", true, r->seq));
	PUT(put_str_field(b, ",\"idempotency_key\":", r->idempotency_key));
	PUT(put_str_field(b, ",\"refund_id\":", r->refund_id));
	PUT(put_str_field(b, ",\"instance_id\":", r->instance_id));
	PUT(put_str_field(b, ",\"charge_id\":", r->charge_id));
	PUT(put_int_field(b, ",\"revision\":", r->has_revision,
	    r->revision));
	PUT(put_str_field(b, ",\"status\":", r->status));
	PUT(put_str_field(b, ",\"prev_status\":", r->prev_status));
	PUT(put_str_field(b, ",\"posting\":", posting_name(r->posting)));
	PUT(put_str_field(b, ",\"currency\":", r->currency));
	PUT(put_str_field(b, ",\"amount\":", r->amount));
	PUT(put_int_field(b, ",\"amount_minor\":", r->amount_exact,
	    r->amount_minor));
	PUT(put_int_field(b, ",\"exponent\":", r->amount_exact,
	    r->exponent));
	PUT(put_str_field(b, ",\"returned_application_fee\":",
	    r->returned_application_fee));
	PUT(put_str_field(b, ",\"returned_processing_fee\":",
	    r->returned_processing_fee));
	PUT(put_str_field(b, ",\"created_date\":", r->created_date));
	PUT(put_str_field(b, ",\"updated_date\":", r->updated_date));
	PUT(put_str_field(b, ",\"changed_at\":", r->changed_at));
	PUT(put_str_field(b, ",\"source\":", r->source));
	if (j->body && r->body != NULL) {
		if (json_object_line(r->body)) {
			PUT(put_key(b, ",\"refund\":"));
			PUT(buf_appends(b, r->body));
		} else
			PUT(put_str_field(b, ",\"refund_text\":", r->body));
	}
	PUT(buf_append(b, "}\n", 2));
#undef PUT
	return st;
}

static int
jsonl_format(void *state, const struct rs_export_record *rec, struct buf *out,
    char *err, size_t errlen)
{
	if (jsonl_line(state, rec, out) != RS_OK) {
		snprintf(err, errlen, "refund %s: record too large for a "
		    "jsonl line", rec->refund_id != NULL ? rec->refund_id :
		    "-");
		return RS_EXPORT_PERMANENT;
	}
	return RS_EXPORT_OK;
}

static const struct filejournal_format jsonl_format_def = {
	.type = "jsonl",
	.keys = exporter_jsonl_keys,
	.commit_line = jsonl_commit_line,
	.begins = "{\"seq\":",
	.init = jsonl_init,
	.format = jsonl_format,
	.free = free,
};

static int
jsonl_open(void **ctx, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	return filejournal_exporter_open(&jsonl_format_def, ctx, name, kv, nkv,
	    err, errlen);
}

bool
exporter_jsonl_check(const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	return filejournal_exporter_check(&jsonl_format_def, name, kv, nkv,
	    report, arg);
}

const struct rs_exporter_ops exporter_jsonl_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "jsonl",
	.open = jsonl_open,
	.deliver = filejournal_exporter_deliver,
	.recover = filejournal_exporter_recover,
	.close = filejournal_exporter_close,
};
