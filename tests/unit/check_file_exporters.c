/*
 * check_file_exporters.c: the jsonl, csv, ledger and beancount exporters
 * through their ops tables: golden files (tests/data/golden/<type>.golden,
 * under $RS_SRCDIR), recovery of a torn tail, no duplicates on redelivery
 * or replay, hostile text that must not forge a record end, write
 * failures rolled back, locking, the section keys, and records older
 * than the file's last seq (taken back by ledger and beancount, checked
 * with the real hledger and bean-check; refused by jsonl and csv).
 *
 * RS_UPDATE_GOLDEN=1 rewrites the golden files from the current output
 * (then review the diff).
 */
#include <sys/resource.h>
#include <sys/stat.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "exporters/builtin.h"
#include "exporters/filejournal.h"
#include "exporters/posting.h"
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

/* ---- the records of the golden files ----------------------------------- */

#define NREC	9

static struct rs_export_record recs[NREC + 1];

static void
rec_set(struct rs_export_record *r, int64_t seq, const char *key,
    const char *id, const char *status, const char *prev,
    const char *currency, const char *amount, int64_t minor, int exponent)
{
	memset(r, 0, sizeof(*r));
	r->seq = seq;
	r->idempotency_key = key;
	r->refund_id = id;
	r->instance_id = "inst-1";
	r->charge_id = "ch-1";
	r->status = status;
	r->prev_status = prev;
	r->currency = currency;
	r->amount = amount;
	r->amount_exact = 1;
	r->amount_minor = minor;
	r->exponent = exponent;
	r->created_date = "2024-04-30T09:00:00Z";
	r->updated_date = "2024-05-01T10:20:30.123Z";
	r->changed_at = "2024-05-01T10:20:31.000000Z";
	r->source = "webhook";
	r->posting = posting_classify(status, prev);
}

/*
 * PENDING -> SUCCEEDED (with fees) -> REVERSED -> SUCCEEDED of r-1, a
 * JPY and a KWD refund, a hostile one, an inexact PENDING one and a gap
 * in seq (4 is missing: seqs only increase).
 */
static void
make_records(void)
{
	struct rs_export_record *r = recs;

	rec_set(&r[0], 1, "books:r-1:1", "r-1", "PENDING", NULL, "USD",
	    "12.95", 1295, 2);
	r[0].has_revision = 1;
	r[0].revision = 1;
	r[0].body = "{\"id\":\"r-1\",\"amount\":\"12.95\",\"status\":"
	    "\"PENDING\"}";

	rec_set(&r[1], 2, "books:r-1:2", "r-1", "SUCCEEDED", "PENDING", "USD",
	    "12.95", 1295, 2);
	r[1].has_revision = 1;
	r[1].revision = 2;
	r[1].returned_application_fee = "0.10";
	r[1].returned_processing_fee = "0.40";
	r[1].updated_date = "2024-05-02T08:00:00Z";
	r[1].body = "{ \"id\" : \"r-1\", \"nested\": {\"a\": [1, 2.5e3, "
	    "true, null]} }";

	rec_set(&r[2], 3, "books:r-2:-", "r-2", "SUCCEEDED", NULL, "JPY",
	    "1500", 1500, 0);
	r[2].instance_id = NULL;
	r[2].charge_id = "ch-2";
	r[2].source = "backfill";
	r[2].returned_processing_fee = "45";
	r[2].updated_date = NULL;
	r[2].body = "{\"id\":\"r-2\"}";

	rec_set(&r[3], 5, "books:r-3:1", "r-3", "SUCCEEDED", "PENDING", "KWD",
	    "1.234", 1234, 3);
	r[3].has_revision = 1;
	r[3].revision = 1;
	r[3].charge_id = "ch-3";
	r[3].returned_processing_fee = "0.005";
	r[3].updated_date = "2024-05-03T23:30:00-02:00";
	r[3].body = "{\"id\":\"r-3\"}";

	rec_set(&r[4], 6, "books:r-1:3:reverse", "r-1", "REVERSED",
	    "SUCCEEDED", "USD", "12.95", 1295, 2);
	r[4].has_revision = 1;
	r[4].revision = 3;
	r[4].returned_application_fee = "0.10";
	r[4].returned_processing_fee = "0.40";
	r[4].updated_date = "2024-05-04T08:00:00Z";
	r[4].body = "{\"id\":\"r-1\",\"status\":\"REVERSED\"}";

	rec_set(&r[5], 7, "books:r-1:4", "r-1", "SUCCEEDED", "REVERSED",
	    "USD", "12.95", 1295, 2);
	r[5].has_revision = 1;
	r[5].revision = 4;
	r[5].returned_application_fee = "0.10";
	r[5].returned_processing_fee = "0.40";
	r[5].updated_date = "2024-05-05T08:00:00Z";
	r[5].body = "{\"id\":\"r-1\",\"status\":\"SUCCEEDED\"}";

	/* Text that tries to end a record early or forge a seq (the key
	 * is what the engine forms from the refund id, as recovery of a
	 * csv file checks). */
	rec_set(&r[6], 8,
	    "books:r,\"4\"\n; rs-seq: 99\n{\"seq\":99,\"x\":1}\n99,:1",
	    "r,\"4\"\n; rs-seq: 99\n{\"seq\":99,\"x\":1}\n99,", "SUCCEEDED",
	    NULL, "EUR", "5.00", 500, 2);
	r[6].has_revision = 1;
	r[6].revision = 1;
	r[6].charge_id = " ch 4;x|y%\t";
	r[6].instance_id = "inst\r\n99,";
	r[6].body = "{\"id\":\"r,\\\"4\\\"\\n; rs-seq: 99\"}";

	/* Not exact in USD, PENDING: written by jsonl/csv, posts nothing;
	 * its body is not one JSON object. */
	rec_set(&r[7], 9, "books:r-5:1", "r-5", "PENDING", NULL, "USD",
	    "1.001", 0, 0);
	r[7].amount_exact = 0;
	r[7].has_revision = 1;
	r[7].revision = 1;
	r[7].charge_id = "ch-5";
	r[7].source = "cli";
	r[7].body = "{\"id\":\"r-5\"} {\"again\":1}";

	/* SUCCEEDED -> SUCCEEDED: a new revision, nothing to post. */
	rec_set(&r[8], 10, "books:r-3:2", "r-3", "SUCCEEDED", "SUCCEEDED",
	    "KWD", "1.234", 1234, 3);
	r[8].has_revision = 1;
	r[8].revision = 2;
	r[8].charge_id = "ch-3";
	r[8].body = "{\"id\":\"r-3\",\"revision\":\"2\"}\n";

	/* Not in the golden files: the record after them. */
	rec_set(&r[9], 11, "books:r-6:1", "r-6", "SUCCEEDED", NULL, "GBP",
	    "3.50", 350, 2);
	r[9].has_revision = 1;
	r[9].revision = 1;
	r[9].charge_id = "ch-6";
	r[9].body = "{\"id\":\"r-6\"}";
}

/* ---- helpers ----------------------------------------------------------- */

static char *tmpdir;

static void
setup(void)
{
	tmpdir = tu_tempdir();
	make_records();
}

static void
teardown(void)
{
	tu_rmtree(tmpdir);
	free(tmpdir);
	tmpdir = NULL;
}

static char *
path_in_tmp(const char *type)
{
	return xasprintf("%s/out.%s", tmpdir, type);
}

/* Open exporter i at path with extra "key", "value" pairs (NULL-ended). */
static int
try_open(int i, const char *path, void **ctx, char *err, size_t errlen,
    const char *const *extra)
{
	struct rs_export_kv kv[16];
	size_t n = 0;

	kv[n].key = "type";
	kv[n++].value = types[i];
	if (path != NULL) {
		kv[n].key = "path";
		kv[n++].value = path;
	}
	while (extra != NULL && *extra != NULL && n < 16) {
		kv[n].key = extra[0];
		kv[n++].value = extra[1];
		extra += 2;
	}
	err[0] = '\0';
	return ops_of(i)->open(ctx, "books", kv, n, err, errlen);
}

static void *
open_ok(int i, const char *path, const char *const *extra)
{
	char err[512];
	void *ctx = NULL;
	int r = try_open(i, path, &ctx, err, sizeof(err), extra);

	ck_assert_msg(r == RS_EXPORT_OK, "%s open: %d %s", types[i], r, err);
	ck_assert_ptr_nonnull(ctx);
	return ctx;
}

static void
deliver_ok(int i, void *ctx, const struct rs_export_record *r, size_t n)
{
	char err[512] = "";
	size_t done = 99;
	int res = ops_of(i)->deliver(ctx, r, n, &done, err, sizeof(err));

	ck_assert_msg(res == RS_EXPORT_OK, "%s deliver: %d %s", types[i], res,
	    err);
	ck_assert_uint_eq(done, n);
}

static int64_t
recover_seq(int i, void *ctx)
{
	char err[256];
	int64_t seq = -1;

	ck_assert_int_eq(ops_of(i)->recover(ctx, &seq, err, sizeof(err)),
	    RS_EXPORT_OK);
	return seq;
}

/*
 * deliver() with the file size limited to limit bytes, so a write fails
 * (EFBIG).  No ck_assert may run while the limit holds: check's own
 * message file is limited too.
 */
static int
deliver_limited(int i, void *ctx, const struct rs_export_record *r,
    size_t n, uint64_t limit, size_t *done, char *err, size_t errlen)
{
	struct rlimit rl, old;
	int res;

	if (getrlimit(RLIMIT_FSIZE, &old) != 0)
		return -1;
	signal(SIGXFSZ, SIG_IGN);
	rl = old;
	rl.rlim_cur = limit;
	if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
		return -1;
	res = ops_of(i)->deliver(ctx, r, n, done, err, errlen);
	if (setrlimit(RLIMIT_FSIZE, &old) != 0)
		return -1;
	return res;
}

/* Write the golden set to path in two batches. */
static void
write_all(int i, const char *path)
{
	void *ctx = open_ok(i, path, NULL);

	ck_assert_int_eq(recover_seq(i, ctx), 0);
	deliver_ok(i, ctx, recs, 4);
	deliver_ok(i, ctx, recs + 4, NREC - 4);
	ck_assert_int_eq(recover_seq(i, ctx), 10);
	ops_of(i)->close(ctx);
}

/*
 * The seq a reopened file of type i recovers after the golden set: the
 * journals write nothing for the last two records (they post nothing).
 */
static int64_t
file_last(int i)
{
	return i < 2 ? 10 : 8;
}

static char *
slurp(const char *path, size_t *len)
{
	char *s = tu_read_file(path, len);

	ck_assert_msg(s != NULL, "cannot read %s", path);
	return s;
}

static char *
golden_path(int i)
{
	const char *src = getenv("RS_SRCDIR");

	return xasprintf("%s/tests/data/golden/%s.golden",
	    src != NULL ? src : ".", types[i]);
}

static void
expect_file(const char *path, const char *want, size_t wantlen)
{
	size_t len;
	char *got = slurp(path, &len);

	ck_assert_msg(len == wantlen && memcmp(got, want, len) == 0,
	    "%s differs from what was expected:\n--- got\n%.1500s\n"
	    "--- want\n%.1500s",
	    path, got, want);
	free(got);
}

static uint64_t
file_size(const char *path)
{
	struct stat sb;

	ck_assert_int_eq(stat(path, &sb), 0);
	return (uint64_t)sb.st_size;
}

/* ---- golden files ------------------------------------------------------ */

START_TEST(test_golden)
{
	char *path = path_in_tmp(types[_i]), *gpath = golden_path(_i);
	char *got, *want;
	size_t glen, wlen;

	write_all(_i, path);
	got = slurp(path, &glen);
	if (getenv("RS_UPDATE_GOLDEN") != NULL)
		ck_assert(tu_write_file(gpath, got, false));
	want = tu_read_file(gpath, &wlen);
	ck_assert_msg(want != NULL, "no golden file %s (RS_SRCDIR?)", gpath);
	ck_assert_msg(glen == wlen && memcmp(got, want, glen) == 0,
	    "%s differs from %s:\n%s", path, gpath, got);
	free(got);
	free(want);
	free(gpath);
	free(path);
}
END_TEST

/* Every jsonl line is one valid JSON object with the record's fields. */
START_TEST(test_jsonl_lines_parse)
{
	char *path = path_in_tmp("jsonl"), *text, *line, *nl;
	cJSON *o;
	size_t n = 0;

	write_all(0, path);
	text = slurp(path, NULL);
	for (line = text; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		*nl = '\0';
		o = cJSON_Parse(line);
		ck_assert_msg(o != NULL, "line %zu is not JSON: %s", n, line);
		ck_assert_int_eq((int64_t)cJSON_GetObjectItem(o,
		    "seq")->valuedouble, recs[n].seq);
		ck_assert_str_eq(cJSON_GetObjectItem(o,
		    "refund_id")->valuestring, recs[n].refund_id);
		ck_assert_str_eq(cJSON_GetObjectItem(o, "posting")->valuestring,
		    posting_name(recs[n].posting));
		/* A well-formed entity is embedded, anything else quoted. */
		if (n == 7 || n == 8) {
			ck_assert_ptr_null(cJSON_GetObjectItem(o, "refund"));
			ck_assert_str_eq(cJSON_GetObjectItem(o,
			    "refund_text")->valuestring, recs[n].body);
		} else
			ck_assert(cJSON_IsObject(cJSON_GetObjectItem(o,
			    "refund")));
		cJSON_Delete(o);
		n++;
	}
	ck_assert_uint_eq(n, NREC);
	ck_assert_str_eq(line, "");
	free(text);
	free(path);
}
END_TEST

START_TEST(test_jsonl_no_body)
{
	static const char *const extra[] = { "body", "no", NULL };
	char *path = path_in_tmp("jsonl"), *text;
	void *ctx = open_ok(0, path, extra);

	deliver_ok(0, ctx, recs, 1);
	ops_of(0)->close(ctx);
	text = slurp(path, NULL);
	ck_assert_ptr_null(strstr(text, "\"refund\""));
	ck_assert_ptr_nonnull(strstr(text, "\"source\":\"webhook\"}\n"));
	free(text);
	free(path);
}
END_TEST

/* ---- recovery ---------------------------------------------------------- */

/* A crash left part of the next record: it is cut, then written whole. */
START_TEST(test_torn_tail)
{
	char *path = path_in_tmp(types[_i]), *gpath = golden_path(_i);
	char *golden, *full, *torn;
	size_t glen, flen, cut, k;
	void *ctx;

	/* The golden file plus record 11, to learn its text. */
	write_all(_i, path);
	golden = slurp(path, &glen);
	ctx = open_ok(_i, path, NULL);
	deliver_ok(_i, ctx, &recs[NREC], 1);
	ops_of(_i)->close(ctx);
	full = slurp(path, &flen);
	ck_assert_uint_gt(flen, glen + 10);

	for (k = 0; k < 4; k++) {
		static const size_t parts[] = { 1, 2, 3 };

		cut = k < 3 ? (flen - glen) * parts[k] / 4 : flen - glen - 1;
		torn = xmalloc(glen + cut + 1);
		memcpy(torn, full, glen + cut);
		torn[glen + cut] = '\0';
		ck_assert(tu_write_file(path, torn, false));
		ctx = open_ok(_i, path, NULL);
		ck_assert_int_eq(recover_seq(_i, ctx), file_last(_i));
		expect_file(path, golden, glen);
		/* The engine redelivers from its position (say 6): only
		 * record 11 is new. */
		deliver_ok(_i, ctx, recs + 4, NREC - 4 + 1);
		ops_of(_i)->close(ctx);
		expect_file(path, full, flen);
		free(torn);
	}
	free(full);
	free(golden);
	free(gpath);
	free(path);
}
END_TEST

/* A crash during the very first write (the header, or jsonl's first
 * batch) leaves a prefix of it: the file is started again. */
START_TEST(test_torn_first_write)
{
	static const size_t cuts[] = { 1, 10, 100 };
	char *path = path_in_tmp(types[_i]), *gpath = golden_path(_i);
	char *golden, *torn, err[512];
	size_t glen, k;
	void *ctx = NULL;

	golden = slurp(gpath, &glen);
	for (k = 0; k < 3; k++) {
		torn = xstrndup(golden, cuts[k]);
		ck_assert(tu_write_file(path, torn, false));
		free(torn);
		write_all(_i, path);
		expect_file(path, golden, glen);
	}
	/* But not when a newline follows what it shares with the start. */
	torn = xasprintf("%.10s\nsomething else\n", golden);
	ck_assert(tu_write_file(path, torn, false));
	ck_assert_int_eq(try_open(_i, path, &ctx, err, sizeof(err), NULL),
	    RS_EXPORT_PERMANENT);
	expect_file(path, torn, strlen(torn));
	free(torn);
	free(golden);
	free(gpath);
	free(path);
}
END_TEST

/* Zeros at the end (a crash after the size grew, before the data). */
START_TEST(test_zero_tail)
{
	char *path = path_in_tmp(types[_i]), *golden;
	size_t glen;
	FILE *f;
	void *ctx;

	write_all(_i, path);
	golden = slurp(path, &glen);
	f = fopen(path, "ab");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite("\0\0\0\0\0\0\0\0\n\0\0", 1, 11, f), 11);
	fclose(f);
	ctx = open_ok(_i, path, NULL);
	ck_assert_int_eq(recover_seq(_i, ctx), file_last(_i));
	ops_of(_i)->close(ctx);
	expect_file(path, golden, glen);
	free(golden);
	free(path);
}
END_TEST

/* Redelivery after a crash before the position was saved, and a replay
 * from an earlier seq, write nothing twice. */
START_TEST(test_no_duplicates)
{
	char *path = path_in_tmp(types[_i]), *golden;
	size_t glen;
	void *ctx;

	write_all(_i, path);
	golden = slurp(path, &glen);
	ctx = open_ok(_i, path, NULL);
	ck_assert_int_eq(recover_seq(_i, ctx), file_last(_i));
	deliver_ok(_i, ctx, recs, NREC);	/* replay from seq 1 */
	deliver_ok(_i, ctx, recs + 5, 2);	/* replay from seq 7 */
	ops_of(_i)->close(ctx);
	expect_file(path, golden, glen);
	free(golden);
	free(path);
}
END_TEST

/*
 * The operator moves the file away and runs `export replay` while the
 * daemon runs: the replay's recover() takes up a new file at the path,
 * which gets everything again (the journals their declarations too),
 * and the moved file is left as it was.
 */
START_TEST(test_moved_away)
{
	char *path = path_in_tmp(types[_i]), *moved, *first;
	size_t flen;
	void *ctx = open_ok(_i, path, NULL);

	ck_assert_int_eq(recover_seq(_i, ctx), 0);
	deliver_ok(_i, ctx, recs, NREC);
	ck_assert_int_eq(recover_seq(_i, ctx), 10);
	moved = xasprintf("%s.old", path);
	ck_assert_int_eq(rename(path, moved), 0);
	first = slurp(moved, &flen);
	ck_assert_int_eq(recover_seq(_i, ctx), 0);
	deliver_ok(_i, ctx, recs, NREC);
	ck_assert_int_eq(recover_seq(_i, ctx), 10);
	ops_of(_i)->close(ctx);
	expect_file(path, first, flen);
	expect_file(moved, first, flen);
	free(first);
	free(moved);
	free(path);
}
END_TEST

/*
 * A file that is not ours now at the path: recover() and deliver() leave
 * it alone, and deliver() fails as a write does (retried), never as the
 * record's fault (a dead letter).  Once it is gone, a new file is made.
 */
START_TEST(test_moved_away_foreign)
{
	static const char text[] = "2024-01-01 * coffee\n"
	    "    Expenses:Coffee  3.00 USD\n    Assets:Cash\n";
	char *path = path_in_tmp(types[_i]), *moved;
	char err[512];
	size_t done = 99;
	int64_t seq;
	void *ctx = open_ok(_i, path, NULL);

	deliver_ok(_i, ctx, recs, NREC);
	moved = xasprintf("%s.old", path);
	ck_assert_int_eq(rename(path, moved), 0);
	ck_assert(tu_write_file(path, text, false));
	ck_assert_int_ne(ops_of(_i)->recover(ctx, &seq, err, sizeof(err)),
	    RS_EXPORT_OK);
	ck_assert_msg(strstr(err, "not a file this exporter wrote") != NULL,
	    "%s", err);
	ck_assert_int_eq(ops_of(_i)->deliver(ctx, recs, NREC, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_uint_eq(done, 0);
	expect_file(path, text, sizeof(text) - 1);
	ck_assert_int_eq(unlink(path), 0);
	deliver_ok(_i, ctx, recs, NREC);
	ops_of(_i)->close(ctx);
	ck_assert_uint_eq(file_size(path), file_size(moved));
	free(moved);
	free(path);
}
END_TEST

/* The hostile record last: its text forges no record end. */
START_TEST(test_hostile_last)
{
	char *path = path_in_tmp(types[_i]);
	void *ctx = open_ok(_i, path, NULL);
	uint64_t size;

	deliver_ok(_i, ctx, recs, 7);
	ops_of(_i)->close(ctx);
	size = file_size(path);
	ctx = open_ok(_i, path, NULL);
	ck_assert_int_eq(recover_seq(_i, ctx), 8);
	ops_of(_i)->close(ctx);
	ck_assert_uint_eq(file_size(path), size);
	free(path);
}
END_TEST

/* A file we did not write is refused and left alone. */
START_TEST(test_foreign_file)
{
	static const char text[] = "2024-01-01 * coffee\n"
	    "    Expenses:Coffee  3.00 USD\n    Assets:Cash\n";
	char *path = path_in_tmp(types[_i]);
	char err[512];
	void *ctx = NULL;

	ck_assert(tu_write_file(path, text, false));
	ck_assert_int_eq(try_open(_i, path, &ctx, err, sizeof(err), NULL),
	    RS_EXPORT_PERMANENT);
	ck_assert_ptr_null(ctx);
	ck_assert_msg(strstr(err, "not a file this exporter wrote") != NULL,
	    "%s", err);
	expect_file(path, text, sizeof(text) - 1);
	free(path);
}
END_TEST

/*
 * csv: a file of comma-separated rows that refundsync did not write is
 * refused, not taken for one whose last row names a seq: rows of
 * another shape, and our rows under another header.
 */
START_TEST(test_csv_foreign)
{
	static const char *const texts[] = {
		"a,b,c\n1,2,3\n",
		"seq,key\n7,books:r-1:1\n",
		NULL,	/* our rows under another header: below */
	};
	char *path = path_in_tmp("csv"), *golden, *text, err[512];
	size_t glen, k;
	void *ctx;

	write_all(1, path);
	golden = slurp(path, &glen);
	for (k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
		text = texts[k] != NULL ? xstrdup(texts[k]) :
		    xasprintf("id,amount\n%s", strchr(golden, '\n') + 1);
		ck_assert(tu_write_file(path, text, false));
		ctx = NULL;
		ck_assert_int_eq(try_open(1, path, &ctx, err, sizeof(err),
		    NULL), RS_EXPORT_PERMANENT);
		ck_assert_ptr_null(ctx);
		ck_assert_msg(strstr(err, "not a file this exporter wrote") !=
		    NULL, "%s", err);
		expect_file(path, text, strlen(text));
		free(text);
	}
	free(golden);
	free(path);
}
END_TEST

/*
 * csv: a last row that is not a whole row of ours.  Cut short by a crash
 * (no newline yet): cut, and the file's last seq is that of the row
 * before it.  A whole line (a row cut short inside a quoted field, too
 * few fields, another exporter's key, a key that does not match its
 * refund id, revision or posting): no crash leaves that, so the file is
 * refused and left alone.  Either way it never names the file's last
 * seq.
 */
START_TEST(test_csv_torn_row)
{
	static const char *const torn[] = {
		"999,books:X:1,X,\"inst",
		"999,books:X:1,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cl",
		"999,books:X:1,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli",
		"\0\0\0\n\0",	/* data that never reached the disk */
	};
	static const char *const whole[] = {
		"999,books:X:1,X,\"inst\n",
		"999,books:X:1,X\n",
		"999,other:X:1,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli\n",
		"999,books:Y:1,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli\n",
		"999,books:X:2,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli\n",
		"999,books:X:1,X,,,1,REVERSED,,reverse,USD,1,100,2,,,,,,cli\n",
		"999,books:X:-,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli\n",
		"999,books:X:1,X,,,1,SUCCEEDED,,maybe,USD,1,100,2,,,,,,cli\n",
		"999,books:X:1,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli,\n",
		"999,books:X:1,\"X\"x,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli\n",
		"\n",
	};
	char *path = path_in_tmp("csv"), *golden, *text, err[512];
	size_t glen, k, tlen;
	void *ctx;
	FILE *f;

	write_all(1, path);
	golden = slurp(path, &glen);
	for (k = 0; k < sizeof(torn) / sizeof(torn[0]); k++) {
		tlen = k == 3 ? 6 : strlen(torn[k]);
		text = xmalloc(glen + tlen);
		memcpy(text, golden, glen);
		memcpy(text + glen, torn[k], tlen);
		f = fopen(path, "wb");
		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fwrite(text, 1, glen + tlen, f), glen + tlen);
		ck_assert_int_eq(fclose(f), 0);
		ctx = open_ok(1, path, NULL);
		ck_assert_msg(recover_seq(1, ctx) == 10, "torn %zu: %s", k,
		    torn[k]);
		ops_of(1)->close(ctx);
		expect_file(path, golden, glen);
		free(text);
	}
	for (k = 0; k < sizeof(whole) / sizeof(whole[0]); k++) {
		text = xasprintf("%s%s", golden, whole[k]);
		ck_assert(tu_write_file(path, text, false));
		ctx = NULL;
		ck_assert_msg(try_open(1, path, &ctx, err, sizeof(err),
		    NULL) == RS_EXPORT_PERMANENT, "whole %zu: %s", k, whole[k]);
		ck_assert_ptr_null(ctx);
		ck_assert_msg(strstr(err, "not a record this exporter wrote") !=
		    NULL, "%s", err);
		expect_file(path, text, strlen(text));
		free(text);
	}
	/* The same file under another exporter name: its rows are not
	 * that exporter's, and the file is refused whole, not cut. */
	ck_assert(tu_write_file(path, golden, false));
	{
		struct rs_export_kv kv[2] = { { "type", "csv" },
		    { "path", path } };

		ctx = NULL;
		ck_assert_int_eq(exporter_csv_ops.open(&ctx, "renamed", kv, 2,
		    err, sizeof(err)), RS_EXPORT_PERMANENT);
		ck_assert_ptr_null(ctx);
		expect_file(path, golden, glen);
	}
	/* Whole rows of ours are taken: with and without a revision, a
	 * reversal, a key of the form without a revision, and an
	 * adjustment (the crash harness found it refused). */
	text = xasprintf("%s%s", golden,
	    "11,books:X:1,X,,,1,SUCCEEDED,,post,USD,1,100,2,,,,,,cli\n"
	    "12,books:X:-,X,,,,SUCCEEDED,,post,USD,1,100,2,,,,,,cli\n"
	    "13,books:X:-:4:2024-05-01T00:00:00Z:reverse,X,,,,REVERSED,"
	    "SUCCEEDED,reverse,USD,1,100,2,,,,,,cli\n"
	    "14,books:X:2:adjust,X,,,2,SUCCEEDED,SUCCEEDED,adjust,USD,1.5,"
	    "150,2,,,,,,cli\n");
	ck_assert(tu_write_file(path, text, false));
	ctx = open_ok(1, path, NULL);
	ck_assert_int_eq(recover_seq(1, ctx), 14);
	ops_of(1)->close(ctx);
	expect_file(path, text, strlen(text));
	free(text);
	free(golden);
	free(path);
}
END_TEST

/* A write that fails (file size limit) is rolled back and retried. */
START_TEST(test_write_failure)
{
	char *path = path_in_tmp(types[_i]), *golden, *gpath = golden_path(_i);
	char err[512] = "";
	size_t done = 99, glen;
	uint64_t size;
	void *ctx;
	int r;

	golden = slurp(gpath, &glen);
	ctx = open_ok(_i, path, NULL);
	deliver_ok(_i, ctx, recs, 4);
	size = file_size(path);

	r = deliver_limited(_i, ctx, recs + 4, NREC - 4, size + 20, &done,
	    err, sizeof(err));
	ck_assert_int_eq(r, RS_EXPORT_RETRY);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "write") != NULL, "%s", err);
	ck_assert_uint_eq(file_size(path), size);
	ck_assert_int_eq(recover_seq(_i, ctx), 5);

	deliver_ok(_i, ctx, recs + 4, NREC - 4);
	ops_of(_i)->close(ctx);
	expect_file(path, golden, glen);
	free(golden);
	free(gpath);
	free(path);
}
END_TEST

/* More than a crash can leave after the last record: refused, kept. */
START_TEST(test_long_tail_refused)
{
	char *path = path_in_tmp(types[_i]), *junk;
	char err[512];
	size_t jlen = FILEJOURNAL_MAX_TAIL + 4096, k;
	uint64_t size;
	void *ctx = NULL;
	FILE *f;

	write_all(_i, path);
	junk = xmalloc(jlen);
	for (k = 0; k < jlen; k++)
		junk[k] = k % 64 == 63 ? '\n' : 'x';
	f = fopen(path, "ab");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(junk, 1, jlen, f), jlen);
	fclose(f);
	size = file_size(path);
	ck_assert_int_eq(try_open(_i, path, &ctx, err, sizeof(err), NULL),
	    RS_EXPORT_PERMANENT);
	ck_assert_msg(strstr(err, "no record end found") != NULL, "%s", err);
	ck_assert_uint_eq(file_size(path), size);
	free(junk);
	free(path);
}
END_TEST

/*
 * A batch larger than FILEJOURNAL_SYNC_EVERY is fsync()ed on the way: a
 * failure late in it keeps (and reports done) what was committed.
 */
START_TEST(test_large_batch_partial)
{
	enum { N = 40, PAD = 200 * 1024 };
	struct rs_export_record big[N];
	char *path = path_in_tmp("jsonl"), *ref = path_in_tmp("ref");
	char *body = xmalloc(PAD + 16), *want, *got, err[512] = "";
	size_t done = 99, wlen, glen, nl;
	void *ctx;
	int k;

	memcpy(body, "{\"pad\":\"", 8);
	memset(body + 8, 'p', PAD);
	memcpy(body + 8 + PAD, "\"}", 3);
	for (k = 0; k < N; k++) {
		big[k] = recs[0];
		big[k].seq = k + 1;
		big[k].body = body;
	}
	/* The file as it should end up. */
	ctx = open_ok(0, ref, NULL);
	deliver_ok(0, ctx, big, N);
	ops_of(0)->close(ctx);
	want = slurp(ref, &wlen);

	ctx = open_ok(0, path, NULL);
	ck_assert_int_eq(deliver_limited(0, ctx, big, N, 6u * 1024 * 1024,
	    &done, err, sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_uint_gt(done, 0);
	ck_assert_uint_lt(done, N);
	ck_assert_int_eq(recover_seq(0, ctx), (int64_t)done);
	ck_assert_uint_ge(file_size(path), FILEJOURNAL_SYNC_EVERY);
	/* What stays is exactly the first done records. */
	got = slurp(path, &glen);
	ck_assert_uint_lt(glen, wlen);
	ck_assert(memcmp(got, want, glen) == 0);
	ck_assert_int_eq(want[glen], '{');
	for (nl = 0, k = 0; (size_t)k < glen; k++)
		nl += got[k] == '\n';
	ck_assert_uint_eq(nl, done);
	free(got);
	deliver_ok(0, ctx, big + done, N - done);
	ops_of(0)->close(ctx);
	expect_file(path, want, wlen);
	free(want);
	free(body);
	free(ref);
	free(path);
}
END_TEST

/* ---- open: keys, locking ----------------------------------------------- */

START_TEST(test_locked)
{
	char *path = path_in_tmp(types[_i]);
	char err[512];
	void *a = open_ok(_i, path, NULL), *b = NULL;

	ck_assert_int_eq(try_open(_i, path, &b, err, sizeof(err), NULL),
	    RS_EXPORT_RETRY);
	ck_assert_ptr_null(b);
	ck_assert_msg(strstr(err, "locked by another writer") != NULL, "%s",
	    err);
	ops_of(_i)->close(a);
	b = open_ok(_i, path, NULL);
	ops_of(_i)->close(b);
	free(path);
}
END_TEST

START_TEST(test_keys)
{
	static const char *const unknown[] = { "colour", "blue", NULL };
	char *path = path_in_tmp(types[_i]), *want;
	char err[512];
	const char *const *keys;
	void *ctx = NULL;
	size_t k;

	ck_assert_int_eq(try_open(_i, path, &ctx, err, sizeof(err), unknown),
	    RS_EXPORT_PERMANENT);
	want = xasprintf("[exporter books] colour: unknown key for type %s",
	    types[_i]);
	ck_assert_str_eq(err, want);
	free(want);
	ck_assert_ptr_null(ctx);

	ck_assert_int_eq(try_open(_i, NULL, &ctx, err, sizeof(err), NULL),
	    RS_EXPORT_PERMANENT);
	want = xasprintf("[exporter books] path: required for type %s",
	    types[_i]);
	ck_assert_str_eq(err, want);
	free(want);
	ck_assert_int_eq(access(path, F_OK), -1);

	/* The published key lists: path first, and open takes them all. */
	keys = _i == 0 ? exporter_jsonl_keys : _i == 1 ? exporter_csv_keys :
	    _i == 2 ? exporter_ledger_keys : exporter_beancount_keys;
	ck_assert_str_eq(keys[0], "path");
	for (k = 1; keys[k] != NULL; k++) {
		const char *kv[3] = { keys[k], NULL, NULL };

		kv[1] = strcmp(keys[k], "body") == 0 ? "yes" :
		    "Expenses:Some-Account";
		ctx = open_ok(_i, path, kv);
		ops_of(_i)->close(ctx);
	}
	ck_assert_uint_eq(k, _i == 0 ? 2 : _i == 1 ? 1 : 5);
	free(path);
}
END_TEST

START_TEST(test_bad_values)
{
	static const char *const bad_body[] = { "body", "maybe", NULL };
	static const char *const bad_acct[] = { "refund_account",
	    "expenses:refunds", NULL };
	static const char *const bad_ledger[] = { "clearing_account",
	    "Assets:Wix  Clearing", NULL };
	char *path = path_in_tmp("x");
	char err[512];
	void *ctx = NULL;

	ck_assert_int_eq(try_open(0, path, &ctx, err, sizeof(err), bad_body),
	    RS_EXPORT_PERMANENT);
	ck_assert_str_eq(err, "[exporter books] body: maybe is not yes/no, "
	    "true/false, on/off or 1/0");
	/* A good ledger name that beancount refuses. */
	ck_assert_int_eq(try_open(3, path, &ctx, err, sizeof(err), bad_acct),
	    RS_EXPORT_PERMANENT);
	ck_assert_str_eq(err, "[exporter books] refund_account: "
	    "\"expenses:refunds\" is not a valid beancount account name");
	ctx = open_ok(2, path, bad_acct);
	ops_of(2)->close(ctx);
	ctx = NULL;
	ck_assert_int_eq(try_open(2, path, &ctx, err, sizeof(err),
	    bad_ledger), RS_EXPORT_PERMANENT);
	ck_assert_ptr_nonnull(strstr(err, "clearing_account"));
	ck_assert_ptr_null(ctx);
	free(path);
}
END_TEST

/* A directory or a missing directory: clear errors. */
START_TEST(test_bad_path)
{
	char *path = xasprintf("%s/no/such/dir/out", tmpdir);
	char err[512];
	void *ctx = NULL;

	ck_assert_int_eq(try_open(_i, path, &ctx, err, sizeof(err), NULL),
	    RS_EXPORT_RETRY);
	ck_assert_ptr_nonnull(strstr(err, "No such file or directory"));
	ck_assert_int_eq(try_open(_i, tmpdir, &ctx, err, sizeof(err), NULL),
	    RS_EXPORT_PERMANENT);
	ck_assert_ptr_null(ctx);
	free(path);
}
END_TEST

/* ---- the journals ------------------------------------------------------ */

/* A record that cannot be posted stops the batch at it: the ones
 * before are durable, the engine dead-letters it and goes on. */
START_TEST(test_journal_permanent)
{
	int i = _i + 2;
	char *path = path_in_tmp(types[i]), *text;
	struct rs_export_record batch[4];
	char err[512] = "";
	size_t done = 99;
	void *ctx = open_ok(i, path, NULL);

	batch[0] = recs[0];
	batch[1] = recs[1];
	batch[2] = recs[2];
	batch[2].amount_exact = 0;
	batch[3] = recs[3];
	ck_assert_int_eq(ops_of(i)->deliver(ctx, batch, 4, &done, err,
	    sizeof(err)), RS_EXPORT_PERMANENT);
	ck_assert_uint_eq(done, 2);
	ck_assert_str_eq(err, "refund r-2 seq 3: cannot post: amount is not "
	    "exact in the currency's minor units");
	ck_assert_int_eq(recover_seq(i, ctx), 2);
	deliver_ok(i, ctx, batch + 3, 1);
	ops_of(i)->close(ctx);
	text = slurp(path, NULL);
	ck_assert_ptr_nonnull(strstr(text, "rs-seq: 2\n"));
	ck_assert_ptr_null(strstr(text, "rs-seq: 3\n"));
	ck_assert_ptr_nonnull(strstr(text, "rs-seq: 5\n"));
	/* JPY was never posted, so never declared. */
	ck_assert_ptr_null(strstr(text, "commodity JPY"));
	free(text);
	free(path);
}
END_TEST

/* An account configured later is declared once, at the next open. */
START_TEST(test_journal_new_account)
{
	static const char *const acct[] = { "refund_account",
	    "Expenses:Returns", NULL };
	int i = _i + 2;
	char *path = path_in_tmp(types[i]), *text, *want, *decl;
	size_t glen, len;
	void *ctx;

	write_all(i, path);
	free(slurp(path, &glen));
	ctx = open_ok(i, path, acct);
	ops_of(i)->close(ctx);
	text = slurp(path, &len);
	decl = xasprintf("%s Expenses:Returns\n; rs-seq: 8\n", i == 2 ?
	    "account" : "1970-01-01 open");
	ck_assert_uint_eq(len, glen + strlen(decl));
	ck_assert_str_eq(text + glen, decl);
	free(text);

	/* Again: nothing more.  Then a record posts to it. */
	ctx = open_ok(i, path, acct);
	deliver_ok(i, ctx, &recs[NREC], 1);
	ops_of(i)->close(ctx);
	text = slurp(path, &len);
	ck_assert_ptr_nonnull(strstr(text, decl));
	ck_assert_ptr_null(strstr(strstr(text, decl) + 1, decl));
	want = xasprintf("%sExpenses:Returns%*s3.50 GBP\n", i == 2 ? "    " :
	    "  ", 2 + (40 - 16) + (14 - 4), "");
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	ck_assert_ptr_nonnull(strstr(text, i == 2 ? "\ncommodity GBP\n" :
	    "\n1970-01-01 commodity GBP\n"));
	free(want);
	free(decl);
	free(text);
	free(path);
}
END_TEST

/* A rolled-back batch forgets the commodities it declared. */
START_TEST(test_journal_rollback_commodity)
{
	int i = _i + 2;
	char *path = path_in_tmp(types[i]), *text;
	char err[512];
	size_t done;
	void *ctx = open_ok(i, path, NULL);

	ck_assert_int_eq(deliver_limited(i, ctx, &recs[NREC], 1,
	    file_size(path) + 40, &done, err, sizeof(err)), RS_EXPORT_RETRY);
	deliver_ok(i, ctx, &recs[NREC], 1);
	ops_of(i)->close(ctx);
	text = slurp(path, NULL);
	ck_assert_ptr_nonnull(strstr(text, "commodity GBP\n"));
	free(text);
	free(path);
}
END_TEST

/* ---- records out of seq order ------------------------------------------- */

#define NOOO	6
#define TOOL_MS	60000

/* Seqs 1..6, refunds r-a1..r-a6, each posts, dated 2024-05-01..06. */
static struct rs_export_record ooo[NOOO];
static char ooo_id[NOOO][16], ooo_key[NOOO][32], ooo_date[NOOO][32];
static char ooo_body[NOOO][32];

static void
make_ooo(void)
{
	int k;

	for (k = 0; k < NOOO; k++) {
		snprintf(ooo_id[k], sizeof(ooo_id[k]), "r-a%d", k + 1);
		snprintf(ooo_key[k], sizeof(ooo_key[k]), "books:r-a%d:1",
		    k + 1);
		snprintf(ooo_date[k], sizeof(ooo_date[k]),
		    "2024-05-0%dT10:00:00Z", k + 1);
		snprintf(ooo_body[k], sizeof(ooo_body[k]), "{\"id\":\"r-a%d\"}",
		    k + 1);
		rec_set(&ooo[k], k + 1, ooo_key[k], ooo_id[k], "SUCCEEDED",
		    NULL, "USD", "2.50", 250, 2);
		ooo[k].has_revision = 1;
		ooo[k].revision = 1;
		ooo[k].updated_date = ooo_date[k];
		ooo[k].body = ooo_body[k];
	}
}

/* The text that starts seq's record in a file of type i. */
static char *
ooo_start(int i, int64_t seq)
{
	switch (i) {
	case 0:
		return xasprintf("{\"seq\":%lld,", (long long)seq);
	case 1:
		return xasprintf("%lld,books:r-a%lld:1,", (long long)seq,
		    (long long)seq);
	case 2:
		return xasprintf("* Wix refund r-a%lld\n", (long long)seq);
	default:
		return xasprintf("* \"Wix\" \"Refund r-a%lld\"\n",
		    (long long)seq);
	}
}

/* How many times needle occurs in s. */
static size_t
count_of(const char *s, const char *needle)
{
	size_t n = 0;

	while ((s = strstr(s, needle)) != NULL) {
		n++;
		s++;
	}
	return n;
}

/*
 * Remove seq's record from the file of type i at path as a person would:
 * the whole line (jsonl, csv), or the whole transaction from its date
 * line to its "; rs-seq: N" commit line.  Returns the file as it is now
 * and sets *removed to what was taken out (caller frees both).
 */
static char *
remove_record(int i, const char *path, int64_t seq, char **removed)
{
	char *text = slurp(path, NULL), *start = ooo_start(i, seq);
	char *end = i < 2 ? xstrdup("\n") : xasprintf("\n; rs-seq: %lld\n",
	    (long long)seq);
	char *a, *b;

	a = strstr(text, start);
	ck_assert_msg(a != NULL, "no %s in %s", start, text);
	ck_assert_msg(strstr(a + 1, start) == NULL, "%s twice", start);
	while (a > text && a[-1] != '\n')
		a--;
	b = strstr(a, end);
	ck_assert_ptr_nonnull(b);
	b += strlen(end);
	*removed = xstrndup(a, (size_t)(b - a));
	memmove(a, b, strlen(b) + 1);
	ck_assert(tu_write_file(path, text, false));
	free(start);
	free(end);
	return text;
}

/* Run a real tool (argv[0] a name in /usr/bin or /usr/local/bin) on a
 * file; assert it exits 0. */
static void
tool_ok(const char *const *args)
{
	static const char *const dirs[] = { "/usr/bin", "/usr/local/bin" };
	char *argv[8], *out = NULL, *err = NULL;
	size_t i, d;
	int rc;

	argv[0] = NULL;
	for (d = 0; d < 2 && argv[0] == NULL; d++) {
		char *p = xasprintf("%s/%s", dirs[d], args[0]);

		if (access(p, X_OK) == 0)
			argv[0] = p;
		else
			free(p);
	}
	ck_assert_msg(argv[0] != NULL, "%s is not installed: run "
	    "scripts/deps.sh test (Debian packages hledger and beancount)",
	    args[0]);
	for (i = 1; i < 7 && args[i] != NULL; i++)
		argv[i] = xstrdup(args[i]);
	argv[i] = NULL;
	rc = tu_run(argv, TOOL_MS, &out, &err);
	ck_assert_msg(rc == 0, "%s exited %d:\n%s\n%s", args[0], rc,
	    out != NULL ? out : "", err != NULL ? err : "");
	for (i = 0; argv[i] != NULL; i++)
		free(argv[i]);
	free(out);
	free(err);
}

/* hledger (ledger) or bean-check (beancount) accepts the file. */
static void
tools_accept(int i, const char *path)
{
	const char *check[] = { "hledger", "-f", path, "check", NULL };
	const char *strict[] = { "hledger", "-f", path, "check", "--strict",
	    NULL };
	const char *bean[] = { "bean-check", path, NULL };

	if (i == 2) {
		tool_ok(check);
		tool_ok(strict);
	} else
		tool_ok(bean);
}

/* Write seqs 1..5 to a new file of type i at path. */
static void
write_five(int i, const char *path, const char *const *extra)
{
	void *ctx = open_ok(i, path, extra);

	deliver_ok(i, ctx, ooo, 5);
	ck_assert_int_eq(recover_seq(i, ctx), 5);
	ops_of(i)->close(ctx);
}

/*
 * A ledger or beancount file that lost a transaction by hand takes it
 * back, once, at its end, followed by the mark of its highest seq.
 */
START_TEST(test_out_of_order_journal)
{
	int i = _i + 2;
	char *path = path_in_tmp(types[i]), *before, *block, *want, *got;
	char *start = ooo_start(i, 3);
	void *ctx;

	make_ooo();
	write_five(i, path, NULL);
	before = remove_record(i, path, 3, &block);
	ck_assert_ptr_null(strstr(before, "r-a3"));
	want = xasprintf("2024-05-03 %s", start);
	ck_assert_msg(strncmp(block, want, strlen(want)) == 0, "%s", block);
	free(want);

	ctx = open_ok(i, path, NULL);
	ck_assert_int_eq(recover_seq(i, ctx), 5);
	deliver_ok(i, ctx, &ooo[2], 1);
	want = xasprintf("%s\n%s; rs-seq: 5\n", before, block);
	expect_file(path, want, strlen(want));
	got = slurp(path, NULL);
	ck_assert_uint_eq(count_of(got, start), 1);
	ck_assert_uint_eq(count_of(got, "r-a3"), 3);
	ck_assert_uint_eq(count_of(block, "r-a3"), 3);
	free(got);
	ck_assert_int_eq(recover_seq(i, ctx), 5);

	/* Again, and a record the file holds: nothing is written. */
	deliver_ok(i, ctx, &ooo[2], 1);
	deliver_ok(i, ctx, &ooo[1], 1);
	expect_file(path, want, strlen(want));
	ops_of(i)->close(ctx);

	/* After reopening: the last seq is still 5, 3 and 2 are held. */
	ctx = open_ok(i, path, NULL);
	ck_assert_int_eq(recover_seq(i, ctx), 5);
	deliver_ok(i, ctx, &ooo[2], 1);
	deliver_ok(i, ctx, &ooo[1], 1);
	deliver_ok(i, ctx, ooo, 5);
	expect_file(path, want, strlen(want));
	ops_of(i)->close(ctx);
	tools_accept(i, path);

	free(want);
	free(block);
	free(before);
	free(start);
	free(path);
}
END_TEST

/* A batch with an old record and a new one; then both again. */
START_TEST(test_out_of_order_batch)
{
	int i = _i + 2;
	char *path = path_in_tmp(types[i]), *before, *block, *got, *tail;
	struct rs_export_record batch[2];
	void *ctx;

	make_ooo();
	write_five(i, path, NULL);
	before = remove_record(i, path, 3, &block);
	batch[0] = ooo[2];
	batch[1] = ooo[5];
	ctx = open_ok(i, path, NULL);
	deliver_ok(i, ctx, batch, 2);
	ck_assert_int_eq(recover_seq(i, ctx), 6);
	got = slurp(path, NULL);
	ck_assert_int_eq(strncmp(got, before, strlen(before)), 0);
	tail = got + strlen(before);
	ck_assert_int_eq(tail[0], '\n');
	ck_assert_int_eq(strncmp(tail + 1, block, strlen(block)), 0);
	tail += 1 + strlen(block);
	ck_assert_msg(strncmp(tail, "; rs-seq: 5\n\n", 13) == 0, "%s", tail);
	ck_assert_ptr_nonnull(strstr(tail, i == 2 ? "* Wix refund r-a6\n" :
	    "* \"Wix\" \"Refund r-a6\"\n"));
	ck_assert_uint_eq(count_of(tail, "; rs-seq: "), i == 2 ? 3 : 2);
	ck_assert_str_eq(got + strlen(got) - 12, "; rs-seq: 6\n");
	deliver_ok(i, ctx, batch, 2);
	ops_of(i)->close(ctx);
	ctx = open_ok(i, path, NULL);
	ck_assert_int_eq(recover_seq(i, ctx), 6);
	deliver_ok(i, ctx, batch, 2);
	ops_of(i)->close(ctx);
	expect_file(path, got, strlen(got));
	tools_accept(i, path);
	free(got);
	free(block);
	free(before);
	free(path);
}
END_TEST

static bool
test_commit_line(void *ctx, const char *line, size_t len, int64_t *seq)
{
	char num[24];

	if (len <= 10 || len - 10 >= sizeof(num) ||
	    memcmp(line, "; rs-seq: ", 10) != 0)
		return false;
	memcpy(num, line + 10, len - 10);
	num[len - 10] = '\0';
	*seq = strtoll(num, NULL, 10);
	return true;
}

/*
 * A crash after the old record but before its mark: the commit line
 * before the record names the highest seq, the record stays.  A torn
 * mark is cut.
 */
START_TEST(test_out_of_order_crash)
{
	int i = _i + 2;
	char *path = path_in_tmp(types[i]), *before, *block, *full, *nomark;
	char *torn, err[512];
	struct filejournal *fj = NULL;
	size_t flen;
	void *ctx;

	make_ooo();
	write_five(i, path, NULL);
	before = remove_record(i, path, 3, &block);
	ctx = open_ok(i, path, NULL);
	deliver_ok(i, ctx, &ooo[2], 1);
	ops_of(i)->close(ctx);
	full = slurp(path, &flen);
	ck_assert_str_eq(full + flen - 24, "; rs-seq: 3\n; rs-seq: 5\n");

	/* The mark never reached the disk. */
	nomark = xstrndup(full, flen - 12);
	ck_assert(tu_write_file(path, nomark, false));
	ck_assert_int_eq(filejournal_open(path, test_commit_line, NULL, NULL,
	    0, 0, &fj, err, sizeof(err)), RS_OK);
	ck_assert_int_eq(filejournal_last_seq(fj), 5);
	ck_assert_uint_eq(filejournal_size(fj), flen - 12);
	filejournal_close(fj);
	ctx = open_ok(i, path, NULL);
	ck_assert_int_eq(recover_seq(i, ctx), 5);
	deliver_ok(i, ctx, &ooo[2], 1);		/* held: not again */
	deliver_ok(i, ctx, &ooo[4], 1);
	ops_of(i)->close(ctx);
	expect_file(path, nomark, flen - 12);

	/* Half of the mark: cut back to the record's commit line. */
	torn = xasprintf("%s; rs-se", nomark);
	ck_assert(tu_write_file(path, torn, false));
	ctx = open_ok(i, path, NULL);
	ck_assert_int_eq(recover_seq(i, ctx), 5);
	expect_file(path, nomark, flen - 12);
	deliver_ok(i, ctx, &ooo[5], 1);
	ck_assert_int_eq(recover_seq(i, ctx), 6);
	ops_of(i)->close(ctx);
	ctx = open_ok(i, path, NULL);
	ck_assert_int_eq(recover_seq(i, ctx), 6);
	ops_of(i)->close(ctx);
	free(full);
	full = slurp(path, NULL);
	ck_assert_uint_eq(count_of(full, "r-a3"), 3);
	ck_assert_uint_eq(count_of(full, "r-a6"), 3);
	free(full);
	tools_accept(i, path);

	free(torn);
	free(nomark);
	free(block);
	free(before);
	free(path);
}
END_TEST

/*
 * The header repeats the last seq in a commit line (an account configured
 * later): the record of that seq, removed by hand, is still taken back.
 */
START_TEST(test_out_of_order_after_header)
{
	static const char *const acct[] = { "refund_account",
	    "Expenses:Returns", NULL };
	int i = _i + 2;
	char *path = path_in_tmp(types[i]), *before, *block, *want;
	void *ctx;

	make_ooo();
	write_five(i, path, NULL);
	ctx = open_ok(i, path, acct);
	ops_of(i)->close(ctx);
	before = remove_record(i, path, 5, &block);
	ck_assert_msg(strcmp(before + strlen(before) - 12, "; rs-seq: 5\n") ==
	    0, "%s", before);
	ctx = open_ok(i, path, NULL);
	ck_assert_int_eq(recover_seq(i, ctx), 5);
	deliver_ok(i, ctx, &ooo[4], 1);
	deliver_ok(i, ctx, &ooo[4], 1);
	ops_of(i)->close(ctx);
	want = xasprintf("%s\n%s; rs-seq: 5\n", before, block);
	expect_file(path, want, strlen(want));
	tools_accept(i, path);
	free(want);
	free(block);
	free(before);
	free(path);
}
END_TEST

/* A jsonl or csv file is in seq order: it refuses the old record. */
START_TEST(test_out_of_order_refused)
{
	char *path = path_in_tmp(types[_i]), *before, *block, *want;
	struct rs_export_record batch[3];
	char err[512] = "";
	size_t done = 99;
	void *ctx;

	make_ooo();
	write_five(_i, path, NULL);
	before = remove_record(_i, path, 3, &block);
	ck_assert_ptr_null(strstr(before, "r-a3"));
	ctx = open_ok(_i, path, NULL);
	ck_assert_int_eq(recover_seq(_i, ctx), 5);
	ck_assert_int_eq(ops_of(_i)->deliver(ctx, &ooo[2], 1, &done, err,
	    sizeof(err)), RS_EXPORT_PERMANENT);
	ck_assert_uint_eq(done, 0);
	want = xasprintf("cannot write seq 3 out of order: %s is in seq order "
	    "and already holds records up to seq 5; move it away and run "
	    "`refundsync export replay --exporter books --from 3`", path);
	ck_assert_str_eq(err, want);
	expect_file(path, before, strlen(before));

	/* In a batch: the held record before it is done, none after it. */
	batch[0] = ooo[1];
	batch[1] = ooo[2];
	batch[2] = ooo[5];
	done = 99;
	err[0] = '\0';
	ck_assert_int_eq(ops_of(_i)->deliver(ctx, batch, 3, &done, err,
	    sizeof(err)), RS_EXPORT_PERMANENT);
	ck_assert_uint_eq(done, 1);
	ck_assert_str_eq(err, want);
	expect_file(path, before, strlen(before));
	ck_assert_int_eq(recover_seq(_i, ctx), 5);

	/* New records still go on. */
	deliver_ok(_i, ctx, &ooo[5], 1);
	ck_assert_int_eq(recover_seq(_i, ctx), 6);
	ops_of(_i)->close(ctx);
	free(want);
	free(block);
	free(before);
	free(path);
}
END_TEST

/* ---- the text helpers -------------------------------------------------- */

START_TEST(test_text_helpers)
{
	struct buf b;

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(filejournal_put_i64(&b, INT64_MIN), RS_OK);
	ck_assert_int_eq(filejournal_put_i64(&b, 0), RS_OK);
	ck_assert_int_eq(filejournal_put_i64(&b, 42), RS_OK);
	ck_assert_str_eq(b.data, "-9223372036854775808042");
	buf_reset(&b);
	ck_assert_int_eq(filejournal_put_json(&b, "a\"b\\c\n\x01\x7f\xc3\xa9"),
	    RS_OK);
	ck_assert_int_eq(filejournal_put_json(&b, NULL), RS_OK);
	ck_assert_str_eq(b.data, "\"a\\\"b\\\\c\\n\\u0001\\u007f\xc3\xa9\""
	    "null");
	buf_reset(&b);
	ck_assert_int_eq(filejournal_put_csv(&b, "plain"), RS_OK);
	ck_assert_int_eq(filejournal_put_csv(&b, "a,b"), RS_OK);
	ck_assert_int_eq(filejournal_put_csv(&b, "say \"hi\""), RS_OK);
	ck_assert_int_eq(filejournal_put_csv(&b, " pad"), RS_OK);
	ck_assert_int_eq(filejournal_put_csv(&b, "two\r\nlines"), RS_OK);
	ck_assert_int_eq(filejournal_put_csv(&b, NULL), RS_OK);
	ck_assert_str_eq(b.data, "plain\"a,b\"\"say \"\"hi\"\"\"\" pad\""
	    "two  lines");
	buf_reset(&b);
	ck_assert_int_eq(filejournal_put_safe(&b, "r-1_a.b~c:d@e/f+g=h"),
	    RS_OK);
	ck_assert_int_eq(filejournal_put_safe(&b, " ;,\"%\n|\xc3\xa9"), RS_OK);
	ck_assert_int_eq(filejournal_put_safe(&b, NULL), RS_OK);
	ck_assert_str_eq(b.data, "r-1_a.b~c:d@e/f+g=h"
	    "%20%3B%2C%22%25%0A%7C%C3%A9-");
	buf_reset(&b);
	ck_assert_int_eq(filejournal_put_money(&b, -5, 3), RS_OK);
	ck_assert_str_eq(b.data, "-0.005");
	/* The ceiling holds. */
	buf_cleanup(&b);
	buf_init(&b, 4);
	ck_assert_int_eq(filejournal_put_json(&b, "abcdef"), RS_ERR_TOOBIG);
	buf_cleanup(&b);
}
END_TEST

START_TEST(test_names_set)
{
	struct filejournal_names s;

	filejournal_names_init(&s);
	filejournal_names_add(&s, "USD", 3);
	filejournal_names_add(&s, "USDX", 3);	/* the same 3 bytes */
	filejournal_names_settle(&s, true);
	filejournal_names_add(&s, "EUR", 3);
	ck_assert(filejournal_names_has(&s, "EUR", 3));
	ck_assert(!filejournal_names_has(&s, "US", 2));
	ck_assert_uint_eq(s.n, 2);
	filejournal_names_settle(&s, false);
	ck_assert(!filejournal_names_has(&s, "EUR", 3));
	ck_assert(filejournal_names_has(&s, "USD", 3));
	filejournal_names_cleanup(&s);
	filejournal_names_cleanup(NULL);
}
END_TEST

static Suite *
file_exporters_suite(void)
{
	Suite *s = suite_create("file_exporters");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);	/* hledger and bean-check run */
	tcase_add_loop_test(tc, test_golden, 0, NTYPES);
	tcase_add_test(tc, test_jsonl_lines_parse);
	tcase_add_test(tc, test_jsonl_no_body);
	tcase_add_loop_test(tc, test_torn_tail, 0, NTYPES);
	tcase_add_loop_test(tc, test_torn_first_write, 0, NTYPES);
	tcase_add_loop_test(tc, test_zero_tail, 0, NTYPES);
	tcase_add_loop_test(tc, test_no_duplicates, 0, NTYPES);
	tcase_add_loop_test(tc, test_moved_away, 0, NTYPES);
	tcase_add_loop_test(tc, test_moved_away_foreign, 0, NTYPES);
	tcase_add_loop_test(tc, test_hostile_last, 0, NTYPES);
	tcase_add_loop_test(tc, test_foreign_file, 0, NTYPES);
	tcase_add_test(tc, test_csv_foreign);
	tcase_add_test(tc, test_csv_torn_row);
	tcase_add_loop_test(tc, test_write_failure, 0, NTYPES);
	tcase_add_loop_test(tc, test_long_tail_refused, 0, NTYPES);
	tcase_add_test(tc, test_large_batch_partial);
	tcase_add_loop_test(tc, test_locked, 0, NTYPES);
	tcase_add_loop_test(tc, test_keys, 0, NTYPES);
	tcase_add_test(tc, test_bad_values);
	tcase_add_loop_test(tc, test_bad_path, 0, NTYPES);
	tcase_add_loop_test(tc, test_journal_permanent, 0, 2);
	tcase_add_loop_test(tc, test_journal_new_account, 0, 2);
	tcase_add_loop_test(tc, test_journal_rollback_commodity, 0, 2);
	tcase_add_loop_test(tc, test_out_of_order_journal, 0, 2);
	tcase_add_loop_test(tc, test_out_of_order_batch, 0, 2);
	tcase_add_loop_test(tc, test_out_of_order_crash, 0, 2);
	tcase_add_loop_test(tc, test_out_of_order_after_header, 0, 2);
	tcase_add_loop_test(tc, test_out_of_order_refused, 0, 2);
	tcase_add_test(tc, test_text_helpers);
	tcase_add_test(tc, test_names_set);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(file_exporters_suite());
	int failed;

	xmalloc_init_json();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
