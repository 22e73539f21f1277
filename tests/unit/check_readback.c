/*
 * check_readback.c: reading back what the file exporters wrote: the
 * golden files field by field, files written by the real exporters
 * through their ops tables (a custom refund account too), hand edits of
 * journals (a deleted, a duplicated and a damaged transaction, marker
 * commit lines), partial last lines, damaged jsonl and csv lines, csv
 * quoting (line breaks in quoted fields too) and column order, KWD and
 * JPY amounts, a callback that stops the read, missing files and bad
 * arguments.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "exporters/builtin.h"
#include "exporters/posting.h"
#include "exporters/readback.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define NTYPES	4

static const char *const types[NTYPES] = { "jsonl", "csv", "ledger",
    "beancount" };

static const struct rs_exporter_ops *
ops_of(int i)
{
	switch (i) {
	case 0:
		return &exporter_jsonl_ops;
	case 1:
		return &exporter_csv_ops;
	case 2:
		return &exporter_ledger_ops;
	default:
		return &exporter_beancount_ops;
	}
}

/* ---- collecting entries ------------------------------------------------ */

/* An entry, copied. */
struct got {
	int64_t		 line;
	int64_t		 seq;
	char		*key;
	char		*refund_id;
	bool		 has_revision;
	int64_t		 revision;
	char		*status;
	enum rs_posting	 posting;
	char		*currency;
	char		*amount;
	bool		 has_amount;
	int64_t		 amount_minor;
	int		 exponent;
	char		*date;
	bool		 damaged;
	char		*why;
};

struct collect {
	struct got	*v;
	size_t		 n;
	size_t		 cap;
	size_t		 stop_after;	/* 0: never stop */
	enum rs_status	 stop_with;
};

static char *
sdup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static enum rs_status
collect_fn(void *arg, const struct readback_entry *e)
{
	struct collect *c = arg;
	struct got *g;

	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->v = xreallocarray(c->v, c->cap, sizeof(*c->v));
	}
	g = &c->v[c->n++];
	g->line = e->line;
	g->seq = e->seq;
	g->key = sdup(e->key);
	g->refund_id = sdup(e->refund_id);
	g->has_revision = e->has_revision;
	g->revision = e->revision;
	g->status = sdup(e->status);
	g->posting = e->posting;
	g->currency = sdup(e->currency);
	g->amount = sdup(e->amount);
	g->has_amount = e->has_amount;
	g->amount_minor = e->amount_minor;
	g->exponent = e->exponent;
	g->date = sdup(e->date);
	g->damaged = e->damaged;
	g->why = sdup(e->why);
	/* A damaged entry always says why; a sound one never does. */
	ck_assert(e->damaged == (e->why != NULL));
	if (c->stop_after != 0 && c->n == c->stop_after)
		return c->stop_with;
	return RS_OK;
}

static void
collect_free(struct collect *c)
{
	size_t i;

	for (i = 0; i < c->n; i++) {
		free(c->v[i].key);
		free(c->v[i].refund_id);
		free(c->v[i].status);
		free(c->v[i].currency);
		free(c->v[i].amount);
		free(c->v[i].date);
		free(c->v[i].why);
	}
	free(c->v);
	memset(c, 0, sizeof(*c));
}

/* Read path as type (refund_account acct unless NULL) into c. */
static enum rs_status
read_into(const char *type, const char *path, const char *acct,
    struct collect *c, char **why)
{
	struct rs_export_kv kv[3];
	size_t n = 0;

	kv[n].key = "type";
	kv[n++].value = type;
	kv[n].key = "path";
	kv[n++].value = path;
	if (acct != NULL) {
		kv[n].key = "refund_account";
		kv[n++].value = acct;
	}
	return readback_file(type, kv, n, collect_fn, c, why);
}

/* Read path, which must succeed. */
static void
read_ok(const char *type, const char *path, const char *acct,
    struct collect *c)
{
	char *why = NULL;
	enum rs_status st = read_into(type, path, acct, c, &why);

	ck_assert_msg(st == RS_OK, "%s %s: %d %s", type, path, st,
	    why != NULL ? why : "");
	ck_assert_ptr_null(why);
}

/* ---- what to expect ---------------------------------------------------- */

struct want {
	int64_t		 line;		/* 0: only check it increases */
	int64_t		 seq;
	const char	*key;
	const char	*refund_id;
	int64_t		 revision;	/* -1: none */
	const char	*status;
	enum rs_posting	 posting;
	const char	*currency;
	int64_t		 minor;
	int		 exponent;	/* -1: no amount */
	const char	*date;
};

static void
check_entry(const struct got *g, const struct want *w, size_t i)
{
	ck_assert_msg(!g->damaged, "entry %zu damaged: %s", i, g->why);
	ck_assert_ptr_null(g->why);
	if (w->line != 0)
		ck_assert_msg(g->line == w->line, "entry %zu: line %lld, "
		    "want %lld", i, (long long)g->line, (long long)w->line);
	ck_assert_msg(g->seq == w->seq, "entry %zu: seq %lld, want %lld", i,
	    (long long)g->seq, (long long)w->seq);
	ck_assert_pstr_eq(g->key, w->key);
	ck_assert_pstr_eq(g->refund_id, w->refund_id);
	ck_assert_int_eq(g->has_revision, w->revision >= 0);
	if (w->revision >= 0)
		ck_assert_int_eq(g->revision, w->revision);
	ck_assert_pstr_eq(g->status, w->status);
	ck_assert_int_eq(g->posting, w->posting);
	ck_assert_pstr_eq(g->currency, w->currency);
	ck_assert_int_eq(g->has_amount, w->exponent >= 0);
	if (w->exponent >= 0) {
		ck_assert_int_eq(g->amount_minor, w->minor);
		ck_assert_int_eq(g->exponent, w->exponent);
	}
	ck_assert_pstr_eq(g->date, w->date);
}

static void
check_all(const struct collect *c, const struct want *w, size_t n)
{
	size_t i;

	ck_assert_uint_eq(c->n, n);
	for (i = 0; i < n; i++) {
		check_entry(&c->v[i], &w[i], i);
		if (i > 0)
			ck_assert_int_gt(c->v[i].line, c->v[i - 1].line);
	}
}

#define CD	"2024-04-30T09:00:00Z"
#define HID	"r,\"4\"\n; rs-seq: 99\n{\"seq\":99,\"x\":1}\n99,"
#define HKEY	"books:" HID ":1"
#define HID_CSV	"r,\"4\" ; rs-seq: 99 {\"seq\":99,\"x\":1} 99,"
#define HKEY_CSV "books:" HID_CSV ":1"
#define NONE	RS_POSTING_NONE
#define POST	RS_POSTING_POST
#define REV	RS_POSTING_REVERSE

static const struct want golden_jsonl[] = {
	{ 1, 1, "books:r-1:1", "r-1", 1, "PENDING", NONE, "USD", 1295, 2,
	    CD },
	{ 2, 2, "books:r-1:2", "r-1", 2, "SUCCEEDED", POST, "USD", 1295, 2,
	    CD },
	{ 3, 3, "books:r-2:-", "r-2", -1, "SUCCEEDED", POST, "JPY", 1500, 0,
	    CD },
	{ 4, 5, "books:r-3:1", "r-3", 1, "SUCCEEDED", POST, "KWD", 1234, 3,
	    CD },
	{ 5, 6, "books:r-1:3:reverse", "r-1", 3, "REVERSED", REV, "USD",
	    1295, 2, CD },
	{ 6, 7, "books:r-1:4", "r-1", 4, "SUCCEEDED", POST, "USD", 1295, 2,
	    CD },
	{ 7, 8, HKEY, HID, 1, "SUCCEEDED", POST, "EUR", 500, 2, CD },
	{ 8, 9, "books:r-5:1", "r-5", 1, "PENDING", NONE, "USD", 0, -1, CD },
	{ 9, 10, "books:r-3:2", "r-3", 2, "SUCCEEDED", NONE, "KWD", 1234, 3,
	    CD },
};

static const struct want golden_csv[] = {
	{ 2, 1, "books:r-1:1", "r-1", 1, "PENDING", NONE, "USD", 1295, 2,
	    CD },
	{ 3, 2, "books:r-1:2", "r-1", 2, "SUCCEEDED", POST, "USD", 1295, 2,
	    CD },
	{ 4, 3, "books:r-2:-", "r-2", -1, "SUCCEEDED", POST, "JPY", 1500, 0,
	    CD },
	{ 5, 5, "books:r-3:1", "r-3", 1, "SUCCEEDED", POST, "KWD", 1234, 3,
	    CD },
	{ 6, 6, "books:r-1:3:reverse", "r-1", 3, "REVERSED", REV, "USD",
	    1295, 2, CD },
	{ 7, 7, "books:r-1:4", "r-1", 4, "SUCCEEDED", POST, "USD", 1295, 2,
	    CD },
	{ 8, 8, HKEY_CSV, HID_CSV, 1, "SUCCEEDED", POST, "EUR", 500, 2, CD },
	{ 9, 9, "books:r-5:1", "r-5", 1, "PENDING", NONE, "USD", 0, -1, CD },
	{ 10, 10, "books:r-3:2", "r-3", 2, "SUCCEEDED", NONE, "KWD", 1234, 3,
	    CD },
};

/* Both journals: the same lines and values. */
static const struct want golden_journal[] = {
	{ 11, 2, "books:r-1:2", "r-1", 2, "SUCCEEDED", POST, "USD", 1295, 2,
	    "2024-05-02" },
	{ 27, 3, "books:r-2:-", "r-2", -1, "SUCCEEDED", POST, "JPY", 1500, 0,
	    "2024-04-30" },
	{ 40, 5, "books:r-3:1", "r-3", 1, "SUCCEEDED", POST, "KWD", 1234, 3,
	    "2024-05-04" },
	{ 54, 6, "books:r-1:3:reverse", "r-1", 3, "REVERSED", REV, "USD",
	    -1295, 2, "2024-05-04" },
	{ 69, 7, "books:r-1:4", "r-1", 4, "SUCCEEDED", POST, "USD", 1295, 2,
	    "2024-05-05" },
	{ 85, 8, HKEY, HID, 1, "SUCCEEDED", POST, "EUR", 500, 2,
	    "2024-05-01" },
};
#define NJOURNAL	(sizeof(golden_journal) / sizeof(golden_journal[0]))

static const struct want *
golden_want(int i, size_t *n)
{
	switch (i) {
	case 0:
		*n = sizeof(golden_jsonl) / sizeof(golden_jsonl[0]);
		return golden_jsonl;
	case 1:
		*n = sizeof(golden_csv) / sizeof(golden_csv[0]);
		return golden_csv;
	default:
		*n = NJOURNAL;
		return golden_journal;
	}
}

/* ---- files ------------------------------------------------------------- */

static char *tmpdir;

static void
setup(void)
{
	tmpdir = tu_tempdir();
}

static void
teardown(void)
{
	tu_rmtree(tmpdir);
	free(tmpdir);
	tmpdir = NULL;
}

static char *
golden_path(int i)
{
	const char *src = getenv("RS_SRCDIR");

	return xasprintf("%s/tests/data/golden/%s.golden",
	    src != NULL ? src : ".", types[i]);
}

static char *
golden_text(int i)
{
	char *path = golden_path(i);
	char *text = tu_read_file(path, NULL);

	ck_assert_msg(text != NULL, "no golden file %s (RS_SRCDIR?)", path);
	free(path);
	return text;
}

/* Write text to a new file in the temporary directory.  Caller frees. */
static char *
write_tmp(const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", tmpdir, name);

	ck_assert(tu_write_file(path, text, false));
	return path;
}

/* text with the first occurrence of from replaced by to.  Frees text. */
static char *
replace(char *text, const char *from, const char *to)
{
	char *at = strstr(text, from), *out;

	ck_assert_msg(at != NULL, "no \"%s\" in the text", from);
	out = xasprintf("%.*s%s%s", (int)(at - text), text, to,
	    at + strlen(from));
	free(text);
	return out;
}

/* The block from the first from up to and including the next to. */
static char *
block(const char *text, const char *from, const char *to)
{
	const char *a = strstr(text, from), *b;

	ck_assert_msg(a != NULL, "no \"%s\" in the text", from);
	b = strstr(a, to);
	ck_assert_msg(b != NULL, "no \"%s\" after \"%s\"", to, from);
	return xstrndup(a, (size_t)(b - a) + strlen(to));
}

/* The date line of the golden transaction of refund id (suffix). */
static char *
header_of(int i, const char *what)
{
	return i == 2 ? xasprintf("* Wix refund %s\n", what) :
	    xasprintf("* \"Wix\" \"Refund %s\"\n", what);
}

static const char *
indent(int i)
{
	return i == 2 ? "    " : "  ";
}

/* A metadata line of journal i, as the exporter writes it. */
static char *
meta_line(int i, const char *key, const char *value, bool quoted)
{
	if (i == 2)
		return xasprintf("    ; %s: %s\n", key, value);
	return quoted ? xasprintf("  %s: \"%s\"\n", key, value) :
	    xasprintf("  %s: %s\n", key, value);
}

static size_t
nlines(const char *text)
{
	size_t n = 0;

	for (; *text != '\0'; text++)
		if (*text == '\n')
			n++;
	return n;
}

/* ---- golden files ------------------------------------------------------ */

START_TEST(test_golden)
{
	struct collect c = { 0 };
	const struct want *w;
	char *path = golden_path(_i);
	size_t n;

	w = golden_want(_i, &n);
	read_ok(types[_i], path, NULL, &c);
	check_all(&c, w, n);
	collect_free(&c);
	free(path);
}
END_TEST

/* ---- files written by the exporters ------------------------------------ */

#define NRT	7

static struct rs_export_record rt[NRT];

static void
rt_set(struct rs_export_record *r, int64_t seq, const char *key,
    const char *id, const char *status, const char *prev,
    const char *currency, const char *amount, int64_t minor, int exponent,
    const char *updated)
{
	memset(r, 0, sizeof(*r));
	r->seq = seq;
	r->idempotency_key = key;
	r->refund_id = id;
	r->instance_id = "inst-1";
	r->charge_id = "ch-1";
	r->has_revision = 1;
	r->revision = seq;
	r->status = status;
	r->prev_status = prev;
	r->currency = currency;
	r->amount = amount;
	r->amount_exact = 1;
	r->amount_minor = minor;
	r->exponent = exponent;
	r->created_date = "2024-03-01T00:00:00Z";
	r->updated_date = updated;
	r->changed_at = "2024-06-30T00:00:00Z";
	r->source = "webhook";
	r->body = "{\"id\":\"x\"}";
	r->posting = posting_classify(status, prev);
}

/* Text that needs csv quoting and percent-encoding in the journals. */
#define RT_KEY	"rt:k, \"q\" x%20;y:1"
#define RT_ID	" r 1/\xc3\xa4%,\"z\" "

static void
make_rt(void)
{
	rt_set(&rt[0], 1, "rt:r-1:1", "r-1", "PENDING", NULL, "USD", "12.95",
	    1295, 2, "2024-06-01T10:00:00Z");
	rt_set(&rt[1], 2, "rt:r-1:2", "r-1", "SUCCEEDED", "PENDING", "USD",
	    "12.95", 1295, 2, "2024-06-02T23:59:59-01:00");
	rt[1].returned_application_fee = "0.10";
	rt[1].returned_processing_fee = "0.40";
	/* No revision: the key names the event sequence and updatedDate
	 * (export_idempotency_key()); it reads back as written. */
	rt_set(&rt[2], 4, "rt:r-2:-:17:2024-06-04T00:00:00Z", "r-2",
	    "SUCCEEDED", NULL, "JPY", "1500", 1500, 0, "2024-06-04T00:00:00Z");
	rt[2].has_revision = 0;
	rt[2].returned_processing_fee = "45";
	rt_set(&rt[3], 5, "rt:r-3:1", "r-3", "SUCCEEDED", NULL, "KWD",
	    "0.125", 125, 3, "2024-06-05T00:00:00Z");
	rt_set(&rt[4], 6, "rt:r-3:2:reverse", "r-3", "FAILED", "SUCCEEDED",
	    "KWD", "0.125", 125, 3, "2024-06-06T00:00:00Z");
	rt_set(&rt[5], 7, RT_KEY, RT_ID, "SUCCEEDED", NULL, "EUR", "7.00",
	    700, 2, "2024-06-07T00:00:00Z");
	rt_set(&rt[6], 9, "rt:r-5:1", "r-5", "PENDING", NULL, "GBP", "3.50",
	    350, 2, NULL);
}

/* Write rt to path with exporter i (extra: "key", "value", ... NULL). */
static void
export_rt(int i, const char *path, const char *const *extra)
{
	struct rs_export_kv kv[8];
	char err[512] = "";
	size_t n = 0, done = 0;
	void *ctx = NULL;
	int r;

	kv[n].key = "type";
	kv[n++].value = types[i];
	kv[n].key = "path";
	kv[n++].value = path;
	while (extra != NULL && *extra != NULL && n < 8) {
		kv[n].key = extra[0];
		kv[n++].value = extra[1];
		extra += 2;
	}
	r = ops_of(i)->open(&ctx, "rt", kv, n, err, sizeof(err));
	ck_assert_msg(r == RS_EXPORT_OK, "%s open: %s", types[i], err);
	r = ops_of(i)->deliver(ctx, rt, 3, &done, err, sizeof(err));
	ck_assert_msg(r == RS_EXPORT_OK, "%s deliver: %s", types[i], err);
	ck_assert_uint_eq(done, 3);
	r = ops_of(i)->deliver(ctx, rt + 3, NRT - 3, &done, err, sizeof(err));
	ck_assert_msg(r == RS_EXPORT_OK, "%s deliver: %s", types[i], err);
	ck_assert_uint_eq(done, NRT - 3);
	ops_of(i)->close(ctx);
}

/* What reading rt back from a file of exporter i gives. */
static size_t
rt_want(int i, struct want *w)
{
	static const char *const dates[NRT] = { "2024-06-01", "2024-06-03",
	    "2024-06-04", "2024-06-05", "2024-06-06", "2024-06-07", NULL };
	size_t k, n = 0;

	for (k = 0; k < NRT; k++) {
		const struct rs_export_record *r = &rt[k];

		if (i >= 2 && r->posting == RS_POSTING_NONE)
			continue;
		memset(&w[n], 0, sizeof(w[n]));
		w[n].seq = r->seq;
		w[n].key = r->idempotency_key;
		w[n].refund_id = r->refund_id;
		w[n].revision = r->has_revision ? r->revision : -1;
		w[n].status = r->status;
		w[n].posting = r->posting;
		w[n].currency = r->currency;
		w[n].minor = r->posting == RS_POSTING_REVERSE && i >= 2 ?
		    -r->amount_minor : r->amount_minor;
		w[n].exponent = r->exponent;
		w[n].date = i >= 2 ? dates[k] : r->created_date;
		n++;
	}
	return n;
}

START_TEST(test_exporter_roundtrip)
{
	struct want w[NRT];
	struct collect c = { 0 };
	char *path = xasprintf("%s/out.%s", tmpdir, types[_i]);
	size_t n, k;

	make_rt();
	export_rt(_i, path, NULL);
	n = rt_want(_i, w);
	ck_assert_uint_eq(n, _i >= 2 ? 5 : NRT);
	read_ok(types[_i], path, NULL, &c);
	check_all(&c, w, n);
	/* The amount as text: jsonl and csv write it, the journals not. */
	for (k = 0; k < n; k++)
		ck_assert_pstr_eq(c.v[k].amount, _i < 2 ? rt[k].amount :
		    NULL);
	collect_free(&c);
	free(path);
}
END_TEST

/* A journal with refund_account set is read with the same key. */
START_TEST(test_custom_refund_account)
{
	static const char *const extra[] = { "refund_account",
	    "Expenses:Wix:Refunds", NULL };
	struct want w[NRT];
	struct collect c = { 0 };
	char *path = xasprintf("%s/out.%s", tmpdir, types[_i]);
	size_t n, k;

	make_rt();
	export_rt(_i, path, extra);
	n = rt_want(_i, w);
	read_ok(types[_i], path, "Expenses:Wix:Refunds", &c);
	check_all(&c, w, n);
	collect_free(&c);

	/* Read as if the default account were configured: no such line. */
	read_ok(types[_i], path, NULL, &c);
	ck_assert_uint_eq(c.n, n);
	for (k = 0; k < n; k++) {
		ck_assert(c.v[k].damaged);
		ck_assert_str_eq(c.v[k].why,
		    "no Expenses:Refunds posting line");
		ck_assert(!c.v[k].has_amount);
		ck_assert_ptr_null(c.v[k].currency);
		ck_assert_int_eq(c.v[k].seq, w[k].seq);
		ck_assert_str_eq(c.v[k].refund_id, w[k].refund_id);
	}
	collect_free(&c);
	free(path);
}
END_TEST

/* ---- hand edits of a journal ------------------------------------------- */

/* golden_journal without the entries whose seq is in skip (0-ended). */
static size_t
journal_without(const int64_t *skip, struct want *w)
{
	size_t k, n = 0;
	const int64_t *s;
	bool keep;

	for (k = 0; k < NJOURNAL; k++) {
		for (keep = true, s = skip; *s != 0; s++)
			if (golden_journal[k].seq == *s)
				keep = false;
		if (keep) {
			w[n] = golden_journal[k];
			w[n++].line = 0;
		}
	}
	return n;
}

START_TEST(test_journal_deleted)
{
	static const int64_t skip[] = { 5, 0 };
	struct want w[NJOURNAL];
	struct collect c = { 0 };
	char *text = golden_text(_i), *hdr = header_of(_i, "r-3");
	char *date = xasprintf("2024-05-04 %s", hdr);
	char *blk = block(text, date, "\n; rs-seq: 5\n");
	char *path;
	size_t n;

	text = replace(text, blk, "\n");
	path = write_tmp("deleted", text);
	n = journal_without(skip, w);
	read_ok(types[_i], path, NULL, &c);
	check_all(&c, w, n);
	/* The transactions before it keep their lines. */
	ck_assert_int_eq(c.v[0].line, 11);
	ck_assert_int_eq(c.v[1].line, 27);
	collect_free(&c);
	free(path);
	free(blk);
	free(date);
	free(hdr);
	free(text);
}
END_TEST

START_TEST(test_journal_duplicated)
{
	struct collect c = { 0 };
	char *text = golden_text(_i), *hdr = header_of(_i, "r-2");
	char *date = xasprintf("2024-04-30 %s", hdr);
	char *blk = block(text, date, "\n; rs-seq: 3\n");
	char *twice = xasprintf("%s\n%s", text, blk);
	char *path = write_tmp("dup", twice);
	struct want w;
	size_t k;

	read_ok(types[_i], path, NULL, &c);
	ck_assert_uint_eq(c.n, NJOURNAL + 1);
	for (k = 0; k < NJOURNAL; k++)
		check_entry(&c.v[k], &golden_journal[k], k);
	/* The copy: the same record, at its own line. */
	w = golden_journal[1];
	w.line = 0;
	check_entry(&c.v[NJOURNAL], &w, NJOURNAL);
	/* After the file's lines and the blank line before it. */
	ck_assert_int_eq(c.v[NJOURNAL].line, (int64_t)nlines(text) + 2);
	ck_assert_int_ne(c.v[NJOURNAL].line, c.v[1].line);
	collect_free(&c);
	free(path);
	free(twice);
	free(blk);
	free(date);
	free(hdr);
	free(text);
}
END_TEST

/* Out-of-order marker commit lines belong to no record. */
START_TEST(test_journal_markers)
{
	struct collect c = { 0 };
	char *text = golden_text(_i), *path;

	text = replace(text, "\n; rs-seq: 3\n", "\n; rs-seq: 3\n; rs-seq: 3\n");
	text = replace(text, "\n; rs-seq: 8\n", "\n; rs-seq: 8\n; rs-seq: 2\n");
	path = write_tmp("markers", text);
	read_ok(types[_i], path, NULL, &c);
	ck_assert_uint_eq(c.n, NJOURNAL);
	ck_assert_int_eq(c.v[0].line, 11);
	ck_assert_int_eq(c.v[1].line, 27);
	ck_assert_int_eq(c.v[2].line, 41);	/* one line later */
	ck_assert_int_eq(c.v[2].seq, 5);
	ck_assert(!c.v[2].damaged);
	ck_assert_int_eq(c.v[5].seq, 8);
	ck_assert(!c.v[5].damaged);
	collect_free(&c);
	free(path);
	free(text);
}
END_TEST

/* Check that entry k of c is damaged with a reason containing what. */
static void
expect_damaged(const struct collect *c, size_t k, const char *what)
{
	ck_assert_uint_gt(c->n, k);
	ck_assert_msg(c->v[k].damaged, "entry %zu not damaged", k);
	ck_assert_msg(c->v[k].why != NULL && strstr(c->v[k].why, what) !=
	    NULL, "entry %zu: reason \"%s\", want \"%s\"", k, c->v[k].why,
	    what);
}

/* The others are as in the golden file. */
static void
expect_others(const struct collect *c, size_t skip)
{
	size_t k;

	struct want w;

	ck_assert_uint_eq(c->n, NJOURNAL);
	for (k = 0; k < NJOURNAL; k++) {
		if (k == skip)
			continue;
		/* Lines after an edit move. */
		w = golden_journal[k];
		w.line = 0;
		check_entry(&c->v[k], &w, k);
	}
}

START_TEST(test_journal_posting_removed)
{
	struct collect c = { 0 };
	char *text = golden_text(_i), *path;
	char *line = xasprintf("%sIncome:Wix:Fees:Returned:Processing        "
	    "        -0.40 USD\n", indent(_i));

	text = replace(text, line, "");
	path = write_tmp("unbalanced", text);
	read_ok(types[_i], path, NULL, &c);
	expect_others(&c, 0);
	expect_damaged(&c, 0, "do not balance");
	ck_assert_str_eq(c.v[0].why,
	    "posting lines do not balance: they sum to 0.40 USD");
	/* What could be read is there. */
	ck_assert_int_eq(c.v[0].line, 11);
	ck_assert_int_eq(c.v[0].seq, 2);
	ck_assert_str_eq(c.v[0].refund_id, "r-1");
	ck_assert_str_eq(c.v[0].key, "books:r-1:2");
	ck_assert(c.v[0].has_amount);
	ck_assert_int_eq(c.v[0].amount_minor, 1295);
	ck_assert_str_eq(c.v[0].currency, "USD");
	collect_free(&c);
	free(path);
	free(line);
	free(text);
}
END_TEST

START_TEST(test_journal_refund_line_removed)
{
	struct collect c = { 0 };
	char *text = golden_text(_i), *path;
	char *line = xasprintf("%sExpenses:Refunds                           "
	    "        1.234 KWD\n", indent(_i));

	text = replace(text, line, "");
	path = write_tmp("norefund", text);
	read_ok(types[_i], path, NULL, &c);
	expect_others(&c, 2);
	expect_damaged(&c, 2, "no Expenses:Refunds posting line");
	expect_damaged(&c, 2, "they sum to -1.234 KWD");
	ck_assert(!c.v[2].has_amount);
	ck_assert_ptr_null(c.v[2].currency);
	ck_assert_int_eq(c.v[2].seq, 5);
	ck_assert_str_eq(c.v[2].date, "2024-05-04");
	collect_free(&c);
	free(path);
	free(line);
	free(text);
}
END_TEST

START_TEST(test_journal_metadata_removed)
{
	struct collect c = { 0 };
	char *text = golden_text(_i), *path;
	char *seq = meta_line(_i, "rs-seq", "7", false);
	char *id = meta_line(_i, "rs-refund-id", "r-2", true);
	char *post = meta_line(_i, "rs-posting", "reverse", true);
	struct want w;

	text = replace(text, seq, "");
	text = replace(text, id, "");
	text = replace(text, post, "");
	path = write_tmp("nometa", text);
	read_ok(types[_i], path, NULL, &c);
	ck_assert_uint_eq(c.n, NJOURNAL);
	check_entry(&c.v[0], &golden_journal[0], 0);
	w = golden_journal[2];
	w.line = 0;
	check_entry(&c.v[2], &w, 2);
	w = golden_journal[5];
	w.line = 0;
	check_entry(&c.v[5], &w, 5);
	/* seq 3 without its refund id. */
	ck_assert_str_eq(c.v[1].why, "no rs-refund-id");
	ck_assert_ptr_null(c.v[1].refund_id);
	ck_assert_int_eq(c.v[1].seq, 3);
	/* seq 6 without its posting. */
	ck_assert_str_eq(c.v[3].why, "no rs-posting");
	ck_assert_int_eq(c.v[3].seq, 6);
	ck_assert_int_eq(c.v[3].amount_minor, -1295);
	/* seq 7 without its seq. */
	ck_assert_str_eq(c.v[4].why, "no rs-seq");
	ck_assert_int_eq(c.v[4].seq, 0);
	ck_assert_str_eq(c.v[4].key, "books:r-1:4");
	collect_free(&c);
	free(path);
	free(post);
	free(id);
	free(seq);
	free(text);
}
END_TEST

/* A hand-written transaction of journal i. */
static char *
txn_text(int i, const char *date, int64_t seq, const char *id,
    const char *posting, const char *refund_amount, const char *clearing)
{
	const char *in = indent(i);
	char *h, *m1, *m2, *m3, *m4, *m5, *out;
	char num[24];

	snprintf(num, sizeof(num), "%lld", (long long)seq);
	h = i == 2 ? xasprintf("%s * Wix refund %s\n", date, id) :
	    xasprintf("%s * \"Wix\" \"Refund %s\"\n", date, id);
	m1 = meta_line(i, "rs-seq", num, false);
	m2 = meta_line(i, "rs-key", "k:1", true);
	m3 = meta_line(i, "rs-posting", posting, true);
	m4 = meta_line(i, "rs-refund-id", id, true);
	m5 = meta_line(i, "rs-status", "SUCCEEDED", true);
	out = xasprintf("\n%s%s%s%s%s%s%sExpenses:Refunds    %s\n"
	    "%sAssets:Wix:Clearing    %s\n; rs-seq: %s\n", h, m1, m2, m3, m4,
	    m5, in, refund_amount, in, clearing, num);
	free(h);
	free(m1);
	free(m2);
	free(m3);
	free(m4);
	free(m5);
	return out;
}

START_TEST(test_journal_kwd_jpy)
{
	struct collect c = { 0 };
	char *t1 = txn_text(_i, "2024-07-01", 20, "r-k", "reverse",
	    "-0.125 KWD", "0.125 KWD");
	char *t2 = txn_text(_i, "2024-07-02", 21, "r-j", "reverse",
	    "-1500 JPY", "1500 JPY");
	char *t3 = txn_text(_i, "2024-07-03", 22, "r-%25", "post",
	    "1234567.891 KWD", "-1234567.891 KWD");
	char *t4 = txn_text(_i, "2024-07-04", 23, "r-b", "post",
	    "0.125 KWD", "-0.12 KWD");
	char *all = xasprintf("; a journal\n%s%s%s%s", t1, t2, t3, t4);
	char *path = write_tmp("kwd", all);
	static const struct want w[] = {
		{ 3, 20, "k:1", "r-k", -1, "SUCCEEDED", REV, "KWD", -125, 3,
		    "2024-07-01" },
		{ 13, 21, "k:1", "r-j", -1, "SUCCEEDED", REV, "JPY", -1500,
		    0, "2024-07-02" },
		{ 23, 22, "k:1", "r-%", -1, "SUCCEEDED", POST, "KWD",
		    1234567891, 3, "2024-07-03" },
	};

	read_ok(types[_i], path, NULL, &c);
	ck_assert_uint_eq(c.n, 4);
	check_entry(&c.v[0], &w[0], 0);
	check_entry(&c.v[1], &w[1], 1);
	check_entry(&c.v[2], &w[2], 2);
	/* 0.125 - 0.120 in exact minor units. */
	ck_assert_str_eq(c.v[3].why,
	    "posting lines do not balance: they sum to 0.005 KWD");
	ck_assert_int_eq(c.v[3].amount_minor, 125);
	ck_assert_int_eq(c.v[3].exponent, 3);
	collect_free(&c);
	free(path);
	free(all);
	free(t4);
	free(t3);
	free(t2);
	free(t1);
}
END_TEST

/* An unreadable amount, mixed commodities, a blank line ending a
 * transaction and a transaction ended by a non-indented line. */
START_TEST(test_journal_oddities)
{
	struct collect c = { 0 };
	char *t1 = txn_text(_i, "2024-07-01", 30, "r-a", "post", "12.95 USD",
	    "-12.95 EUR");
	char *t2 = txn_text(_i, "2024-07-02", 31, "r-b", "post", "12.x USD",
	    "-12.95 USD");
	char *t3 = txn_text(_i, "2024-07-03", 32, "r-c", "post", "1.00 USD",
	    "");
	char *t4 = txn_text(_i, "2024-07-04", 33, "r-d", "sideways",
	    "1.00 USD", "-1.00 USD");
	char *all, *path;

	/* t3's commit line replaced by a blank line. */
	t3 = replace(t3, "\n; rs-seq: 32\n", "\n\n");
	all = xasprintf("%s%s%s%s", t1, t2, t3, t4);
	/* t4 ended by a directive instead of its commit line. */
	all = replace(all, "\n; rs-seq: 33\n", _i == 2 ?
	    "\ncommodity USD\n" : "\n1970-01-01 commodity USD\n");
	path = write_tmp("odd", all);
	read_ok(types[_i], path, NULL, &c);
	ck_assert_uint_eq(c.n, 4);
	ck_assert_str_eq(c.v[0].why,
	    "posting lines in more than one commodity");
	ck_assert_int_eq(c.v[0].amount_minor, 1295);
	ck_assert_str_eq(c.v[0].currency, "USD");
	ck_assert_str_eq(c.v[1].why,
	    "line 18: cannot read the posting amount");
	ck_assert(!c.v[1].has_amount);
	ck_assert_str_eq(c.v[2].why, "line 29: posting without an amount");
	ck_assert_int_eq(c.v[2].seq, 32);
	ck_assert_str_eq(c.v[3].why,
	    "rs-posting is not none, post, reverse or adjust");
	ck_assert_int_eq(c.v[3].seq, 33);
	ck_assert_int_eq(c.v[3].amount_minor, 100);
	collect_free(&c);
	free(path);
	free(all);
	free(t4);
	free(t3);
	free(t2);
	free(t1);
}
END_TEST

/* ---- partial last lines ------------------------------------------------ */

START_TEST(test_partial_last_line)
{
	struct collect c = { 0 };
	const struct want *w;
	char *text = golden_text(_i), *more, *path, *t;
	size_t n;

	switch (_i) {
	case 0:
		more = xasprintf("%s{\"seq\":11,\"idempotency_key\":\"x\"",
		    text);
		break;
	case 1:
		more = xasprintf("%s11,books:r-9:1,r-9", text);
		break;
	default:
		/* A whole transaction but for its commit line's '\n'. */
		t = txn_text(_i, "2024-07-01", 11, "r-9", "post", "1.00 USD",
		    "-1.00 USD");
		t[strlen(t) - 1] = '\0';
		more = xasprintf("%s%s", text, t);
		free(t);
		break;
	}
	path = write_tmp("partial", more);
	w = golden_want(_i, &n);
	read_ok(types[_i], path, NULL, &c);
	check_all(&c, w, n);
	collect_free(&c);
	free(path);
	free(more);
	free(text);
}
END_TEST

/* A journal transaction with no line after it is being written. */
START_TEST(test_journal_open_at_end)
{
	struct collect c = { 0 };
	char *text = golden_text(_i), *t, *all, *path;

	t = txn_text(_i, "2024-07-01", 11, "r-9", "post", "1.00 USD",
	    "-1.00 USD");
	/* Cut after the refund account line: its commit is still to come. */
	*strstr(t, "Assets:Wix:Clearing") = '\0';
	all = xasprintf("%s%s", text, t);
	path = write_tmp("open", all);
	read_ok(types[_i], path, NULL, &c);
	check_all(&c, golden_journal, NJOURNAL);
	collect_free(&c);
	free(path);
	free(all);
	free(t);
	free(text);
}
END_TEST

/* ---- jsonl ------------------------------------------------------------- */

START_TEST(test_jsonl_damaged)
{
	struct collect c = { 0 };
	char *text = golden_text(0), *path;

	text = replace(text, "{\"seq\":3,\"idempotency_key\":\"books:r-2:-\",",
	    "{\"seq\":3,\"idempotency_key\":\"books:r-2:-\",oops,");
	text = replace(text, "{\"seq\":6,", "[{\"seq\":6,");
	text = replace(text, "\"seq\":9,", "\"seq\":\"9\",");
	text = replace(text, "\"posting\":\"none\"", "\"posting\":\"maybe\"");
	path = write_tmp("bad.jsonl", text);
	read_ok("jsonl", path, NULL, &c);
	ck_assert_uint_eq(c.n, 9);
	/* Not JSON: the line and the seq of its prefix. */
	expect_damaged(&c, 2, "not a JSON object");
	ck_assert_int_eq(c.v[2].line, 3);
	ck_assert_int_eq(c.v[2].seq, 3);
	ck_assert_ptr_null(c.v[2].refund_id);
	ck_assert_ptr_null(c.v[2].key);
	/* Not even starting like a line of ours: no seq. */
	expect_damaged(&c, 4, "not a JSON object");
	ck_assert_int_eq(c.v[4].line, 5);
	ck_assert_int_eq(c.v[4].seq, 0);
	/* A string seq; an unknown posting. */
	ck_assert_str_eq(c.v[7].why, "seq is not a number");
	ck_assert_str_eq(c.v[7].refund_id, "r-5");
	ck_assert_str_eq(c.v[0].why,
	    "posting is not none, post, reverse or adjust");
	ck_assert_int_eq(c.v[0].seq, 1);
	ck_assert_int_eq(c.v[0].amount_minor, 1295);
	check_entry(&c.v[1], &golden_jsonl[1], 1);
	check_entry(&c.v[8], &golden_jsonl[8], 8);
	collect_free(&c);
	free(path);
	free(text);
}
END_TEST

/* Integers are exact past 2^53; members in any order; null and negative
 * revisions. */
START_TEST(test_jsonl_exact)
{
	static const char text[] =
	    "{\"seq\":12,\"idempotency_key\":\"k\",\"refund_id\":\"r\","
	    "\"revision\":null,\"status\":\"SUCCEEDED\",\"posting\":\"post\","
	    "\"currency\":\"USD\",\"amount_minor\":9007199254740993,"
	    "\"exponent\":2,\"created_date\":\"2024-01-01T00:00:00Z\"}\n"
	    "\n"
	    " { \"refund\" : {\"seq\":1, \"s\":\"}\\\"\"}, \"exponent\" : 3 ,"
	    " \"amount_minor\" : -9223372036854775808, \"seq\" : "
	    "9223372036854775807, \"refund_id\":\"r\\u00e4\\n\","
	    "\"posting\":\"reverse\",\"revision\":0,\"currency\":\"KWD\"}\n"
	    /* The store takes a negative revision from Wix. */
	    "{\"seq\":13,\"refund_id\":\"r\",\"posting\":\"none\","
	    "\"revision\":-7}\n";
	static const struct want w[] = {
		{ 1, 12, "k", "r", -1, "SUCCEEDED", POST, "USD",
		    INT64_C(9007199254740993), 2, "2024-01-01T00:00:00Z" },
		{ 3, INT64_MAX, NULL, "r\xc3\xa4\n", 0, NULL, REV, "KWD",
		    INT64_MIN, 3, NULL },
	};
	struct collect c = { 0 };
	char *path = write_tmp("exact.jsonl", text);

	read_ok("jsonl", path, NULL, &c);
	ck_assert_uint_eq(c.n, 3);
	check_entry(&c.v[0], &w[0], 0);
	check_entry(&c.v[1], &w[1], 1);
	ck_assert_msg(!c.v[2].damaged, "%s", c.v[2].why);
	ck_assert(c.v[2].has_revision);
	ck_assert_int_eq(c.v[2].revision, -7);
	collect_free(&c);
	free(path);
}
END_TEST

START_TEST(test_jsonl_overlong)
{
	struct collect c = { 0 };
	size_t big = 9u * 1024 * 1024, off;
	char *text = xmalloc(big + 200), *path;
	static const char tail[] = "\"}\n{\"seq\":2,\"refund_id\":\"r\","
	    "\"posting\":\"none\"}\n";

	off = (size_t)snprintf(text, 64, "{\"seq\":42,\"x\":\"");
	memset(text + off, 'x', big);
	memcpy(text + off + big, tail, sizeof(tail));
	path = write_tmp("big.jsonl", text);
	read_ok("jsonl", path, NULL, &c);
	ck_assert_uint_eq(c.n, 2);
	expect_damaged(&c, 0, "line longer than");
	ck_assert_int_eq(c.v[0].seq, 42);
	ck_assert_int_eq(c.v[0].line, 1);
	ck_assert(!c.v[1].damaged);
	ck_assert_int_eq(c.v[1].line, 2);
	ck_assert_int_eq(c.v[1].seq, 2);
	collect_free(&c);
	free(path);
	free(text);
}
END_TEST

/* ---- csv --------------------------------------------------------------- */

#define CSV_HEADER	"seq,idempotency_key,refund_id,instance_id," \
	"charge_id,revision,status,prev_status,posting,currency,amount," \
	"amount_minor,exponent,returned_application_fee," \
	"returned_processing_fee,created_date,updated_date,changed_at,source"

START_TEST(test_csv_quoting)
{
	static const char text[] = CSV_HEADER "\n"
	    "4,\"k,1\",\"r,\"\"x\"\", y\",,ch,1,\"SUCCEEDED\",PENDING,post,USD,"
	    "\"1,000.00\",100000,2,,,2024-01-01T00:00:00Z,,,cli\n"
	    /* A field too few. */
	    "5,k5,r5,,ch,1,SUCCEEDED,PENDING,post,USD,1.00,100,2,,,"
	    "2024-01-01T00:00:00Z,,\n"
	    /* An unterminated quote. */
	    "6,k6,\"r6,,ch\n"
	    /* Text after a closing quote. */
	    "7,k7,\"r7\"x,,ch,1,SUCCEEDED,,post,USD,1.00,100,2,,,d,,,cli\n"
	    /* The header again, and an empty line: no records. */
	    CSV_HEADER "\n"
	    "\n"
	    "8,\" k8 \",\"\",,ch,,FAILED,,none,JPY,15,15,0,,,d8,,,cli\n";
	static const struct want w0 = { 2, 4, "k,1", "r,\"x\", y", 1,
	    "SUCCEEDED", POST, "USD", 100000, 2, "2024-01-01T00:00:00Z" };
	struct collect c = { 0 };
	char *path = write_tmp("q.csv", text);

	read_ok("csv", path, NULL, &c);
	ck_assert_uint_eq(c.n, 5);
	check_entry(&c.v[0], &w0, 0);
	ck_assert_str_eq(c.v[0].amount, "1,000.00");
	ck_assert_str_eq(c.v[1].why, "18 fields where the header has 19");
	ck_assert_int_eq(c.v[1].line, 3);
	ck_assert_int_eq(c.v[1].seq, 5);
	ck_assert_str_eq(c.v[1].refund_id, "r5");
	ck_assert_int_eq(c.v[1].amount_minor, 100);
	expect_damaged(&c, 2, "unterminated quoted field");
	ck_assert_int_eq(c.v[2].seq, 6);
	ck_assert_str_eq(c.v[2].key, "k6");
	expect_damaged(&c, 3, "text after a quoted field");
	ck_assert_int_eq(c.v[3].line, 5);
	/* An empty quoted refund id is no refund id. */
	ck_assert_str_eq(c.v[4].why, "no refund_id");
	ck_assert_int_eq(c.v[4].line, 8);
	ck_assert_str_eq(c.v[4].key, " k8 ");
	ck_assert(!c.v[4].has_revision);
	ck_assert_int_eq(c.v[4].amount_minor, 15);
	ck_assert_int_eq(c.v[4].exponent, 0);
	collect_free(&c);
	free(path);
}
END_TEST

/*
 * A quoted field holding a line break runs on to the next line (RFC
 * 4180): one record, damaged, at the line it starts on.  A quote left
 * open does not swallow a whole row after it, and one still open at the
 * end of the file ends there.
 */
START_TEST(test_csv_line_break)
{
	static const char text[] = CSV_HEADER "\n"
	    "4,k4,r4,,ch,1,\"SUCC\nEEDED\",,post,USD,\"1,00\n0.00\",100000,"
	    "2,,,d4,,,cli\n"
	    "5,k5,r5,,ch,1,SUCCEEDED,,post,USD,1.00,100,2,,,d5,,,cli\n"
	    "6,k6,\"r6,,ch,1,SUCCEEDED,,post,USD,1.00,100,2,,,d6,,,cli\n"
	    "7,k7,r7,,ch,1,SUCCEEDED,,post,USD,1.00,100,2,,,d7,,,cli\n"
	    "8,k8,\"r8\n"
	    "still, open\n";
	static const struct want w5 = { 5, 5, "k5", "r5", 1, "SUCCEEDED",
	    POST, "USD", 100, 2, "d5" };
	static const struct want w7 = { 7, 7, "k7", "r7", 1, "SUCCEEDED",
	    POST, "USD", 100, 2, "d7" };
	struct collect c = { 0 };
	char *path = write_tmp("lb.csv", text);

	read_ok("csv", path, NULL, &c);
	ck_assert_uint_eq(c.n, 5);
	/* Lines 2-4: one row, its fields as RFC 4180 reads them. */
	expect_damaged(&c, 0, "runs over lines 2-4");
	ck_assert_int_eq(c.v[0].line, 2);
	ck_assert_int_eq(c.v[0].seq, 4);
	ck_assert_str_eq(c.v[0].refund_id, "r4");
	ck_assert_str_eq(c.v[0].status, "SUCC\nEEDED");
	ck_assert_str_eq(c.v[0].amount, "1,00\n0.00");
	ck_assert_int_eq(c.v[0].amount_minor, 100000);
	check_entry(&c.v[1], &w5, 1);
	/* Line 6 leaves its quote open; line 7 is a row of its own. */
	expect_damaged(&c, 2, "unterminated quoted field");
	ck_assert_int_eq(c.v[2].line, 6);
	ck_assert_int_eq(c.v[2].seq, 6);
	ck_assert_ptr_null(strstr(c.v[2].why, "line break"));
	check_entry(&c.v[3], &w7, 3);
	/* Lines 8-9, open at the end of the file. */
	expect_damaged(&c, 4, "unterminated quoted field");
	expect_damaged(&c, 4, "runs over lines 8-9");
	ck_assert_int_eq(c.v[4].line, 8);
	ck_assert_int_eq(c.v[4].seq, 8);
	collect_free(&c);
	free(path);
}
END_TEST

/* Columns are found by the header's names, in any order. */
START_TEST(test_csv_columns)
{
	static const char text[] = "refund_id,posting,extra,seq\n"
	    "r-1,post,,5\n"
	    "r-2,reverse,x,6\n";
	struct collect c = { 0 };
	char *path = write_tmp("cols.csv", text);

	read_ok("csv", path, NULL, &c);
	ck_assert_uint_eq(c.n, 2);
	ck_assert(!c.v[0].damaged);
	ck_assert_int_eq(c.v[0].seq, 5);
	ck_assert_str_eq(c.v[0].refund_id, "r-1");
	ck_assert_int_eq(c.v[0].posting, RS_POSTING_POST);
	ck_assert(!c.v[0].has_amount);
	ck_assert_ptr_null(c.v[0].key);
	ck_assert_ptr_null(c.v[0].currency);
	ck_assert_ptr_null(c.v[0].date);
	ck_assert_int_eq(c.v[1].seq, 6);
	ck_assert_int_eq(c.v[1].posting, RS_POSTING_REVERSE);
	collect_free(&c);
	free(path);
}
END_TEST

/* ---- the API ----------------------------------------------------------- */

START_TEST(test_fn_stops)
{
	struct collect c = { 0 };
	char *path = golden_path(_i), *why;
	enum rs_status st;

	static char sentinel[] = "not cleared";

	c.stop_after = 2;
	c.stop_with = RS_ERR_BUSY;
	why = sentinel;
	st = read_into(types[_i], path, NULL, &c, &why);
	ck_assert_int_eq(st, RS_ERR_BUSY);
	ck_assert_ptr_null(why);
	ck_assert_uint_eq(c.n, 2);
	collect_free(&c);
	free(path);
}
END_TEST

START_TEST(test_missing_file)
{
	struct collect c = { 0 };
	char *path = xasprintf("%s/none.%s", tmpdir, types[_i]);
	char *deep = xasprintf("%s/no/dir/f", tmpdir);
	char *why = NULL;

	ck_assert_int_eq(read_into(types[_i], path, NULL, &c, &why), RS_OK);
	ck_assert_ptr_null(why);
	ck_assert_uint_eq(c.n, 0);
	ck_assert_int_eq(read_into(types[_i], deep, NULL, &c, &why), RS_OK);
	ck_assert_uint_eq(c.n, 0);
	collect_free(&c);
	free(deep);
	free(path);
}
END_TEST

START_TEST(test_empty_files)
{
	struct collect c = { 0 };
	char *empty = write_tmp("empty", "");
	char *hdr = write_tmp("hdr.csv", CSV_HEADER "\n");
	char *journal = write_tmp("j", "; only comments\naccount A:B\n"
	    "; rs-seq: 0\n\n  indented stray line\n");
	int i;

	for (i = 0; i < NTYPES; i++) {
		read_ok(types[i], empty, NULL, &c);
		ck_assert_uint_eq(c.n, 0);
	}
	read_ok("csv", hdr, NULL, &c);
	ck_assert_uint_eq(c.n, 0);
	read_ok("ledger", journal, NULL, &c);
	read_ok("beancount", journal, NULL, &c);
	ck_assert_uint_eq(c.n, 0);
	collect_free(&c);
	free(journal);
	free(hdr);
	free(empty);
}
END_TEST

START_TEST(test_bad_arguments)
{
	struct rs_export_kv kv[2] = { { "type", "ledger" },
	    { "refund_account", "Expenses:X" } };
	struct collect c = { 0 };
	char *why = NULL;

	/* No path. */
	ck_assert_int_eq(readback_file("ledger", kv, 2, collect_fn, &c, &why),
	    RS_ERR_INPUT);
	ck_assert_ptr_nonnull(why);
	ck_assert_ptr_nonnull(strstr(why, "path"));
	free(why);
	why = NULL;
	/* A type without a file. */
	ck_assert_int_eq(read_into("http", "/nonexistent", NULL, &c, &why),
	    RS_ERR_INPUT);
	ck_assert_ptr_nonnull(strstr(why, "http"));
	free(why);
	why = NULL;
	/* A directory cannot be read. */
	ck_assert_int_eq(read_into("jsonl", tmpdir, NULL, &c, &why),
	    RS_ERR_IO);
	ck_assert_ptr_nonnull(strstr(why, tmpdir));
	free(why);
	/* why may be NULL. */
	ck_assert_int_eq(read_into("csv", tmpdir, NULL, &c, NULL), RS_ERR_IO);
	ck_assert_uint_eq(c.n, 0);
	collect_free(&c);
}
END_TEST

START_TEST(test_supports)
{
	ck_assert(readback_supports("jsonl"));
	ck_assert(readback_supports("csv"));
	ck_assert(readback_supports("ledger"));
	ck_assert(readback_supports("beancount"));
	ck_assert(!readback_supports("http"));
	ck_assert(!readback_supports("exec"));
	ck_assert(!readback_supports("plugin"));
	ck_assert(!readback_supports("Ledger"));
	ck_assert(!readback_supports(""));
	ck_assert(!readback_supports(NULL));
}
END_TEST

static Suite *
readback_suite(void)
{
	Suite *s = suite_create("readback");
	TCase *tc = tcase_create("readback");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_golden, 0, NTYPES);
	tcase_add_loop_test(tc, test_exporter_roundtrip, 0, NTYPES);
	tcase_add_loop_test(tc, test_custom_refund_account, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_deleted, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_duplicated, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_markers, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_posting_removed, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_refund_line_removed, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_metadata_removed, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_kwd_jpy, 2, NTYPES);
	tcase_add_loop_test(tc, test_journal_oddities, 2, NTYPES);
	tcase_add_loop_test(tc, test_partial_last_line, 0, NTYPES);
	tcase_add_loop_test(tc, test_journal_open_at_end, 2, NTYPES);
	tcase_add_test(tc, test_jsonl_damaged);
	tcase_add_test(tc, test_jsonl_exact);
	tcase_add_test(tc, test_jsonl_overlong);
	tcase_add_test(tc, test_csv_quoting);
	tcase_add_test(tc, test_csv_line_break);
	tcase_add_test(tc, test_csv_columns);
	tcase_add_loop_test(tc, test_fn_stops, 0, NTYPES);
	tcase_add_loop_test(tc, test_missing_file, 0, NTYPES);
	tcase_add_test(tc, test_empty_files);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_supports);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(readback_suite());
	int failed;

	xmalloc_init_json();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
