/*
 * check_export.c: the export engine (core/export.c) against a real
 * SQLite store and a fake exporter driven through the published ABI
 * (include/refundsync/exporter.h), plus the registry's plugin loading,
 * the [exporter NAME] config sections and the `export` commands.
 *
 * Most tests step one worker by hand (export_worker_step()) with a fake
 * monotonic time, so backoff is checked to the millisecond without
 * sleeping; the retry horizon runs on clock_set_fake_wall().  One test
 * runs the threaded engine with two exporters.  The fake records every
 * record it accepts; its behaviour is scripted per test.  Two tests use
 * the real ledger and jsonl exporters, for a queued dead letter older
 * than what the file holds.
 *
 * The plugin tests load the .so files `make check` builds into the build
 * directory ($RS_BUILDDIR): examples/plugin/rs-example-exporter.so and
 * tests/data/rs-bad-abi-exporter.so.
 */
#include <sys/stat.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "adapters/store_backend.h"
#include "core/export.h"
#include "domain/refund.h"
#include "exporters/builtin.h"
#include "exporters/registry.h"
#include "refundsync/exporter.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define FAKE_MAX	256	/* records a fake remembers */
#define T0		1000000	/* a fake monotonic start, in ms */

/* ---- the fake exporter --------------------------------------------------- */

enum fake_mode {
	FAKE_OK,		/* accept everything */
	FAKE_RETRY,		/* RS_EXPORT_RETRY at fail_seq, fail_count
				   times (-1: always) */
	FAKE_PERMANENT,		/* RS_EXPORT_PERMANENT at fail_seq */
	FAKE_BAD_DONE,		/* report more done than given */
	FAKE_BAD_RESULT		/* return an unknown result */
};

struct fake {
	char		 name[32];
	pthread_mutex_t	 mu;
	/* Scripted: */
	enum fake_mode	 mode;
	int64_t		 fail_seq;	/* 0: the first record of a call */
	int		 fail_count;	/* -1: forever */
	size_t		 accept_max;	/* most accepted per call; 0: all */
	bool		 has_recover;
	int64_t		 recover_last;
	int		 open_fails;	/* open() fails this many times */
	int		 delay_ms;	/* per record, a slow target */
	/* Seen: */
	int64_t		 seqs[FAKE_MAX];
	char		*keys[FAKE_MAX];
	enum rs_posting	 postings[FAKE_MAX];
	size_t		 n;
	size_t		 calls;		/* deliver() calls */
	size_t		 batch[FAKE_MAX]; /* n of each call */
	int		 opens;
	int		 closes;
	char		 last_kv[256];	/* "k=v;k=v" of the last open */
	struct rs_export_record first; /* a shallow copy of seq 1 ... */
	char		*first_charge, *first_fee, *first_created;
};

static struct fake fakes[2];

static struct fake *
fake_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(fakes) / sizeof(fakes[0]); i++)
		if (strcmp(fakes[i].name, name) == 0)
			return &fakes[i];
	return NULL;
}

static void
fake_reset(void)
{
	size_t i, j;

	for (i = 0; i < sizeof(fakes) / sizeof(fakes[0]); i++) {
		struct fake *f = &fakes[i];

		for (j = 0; j < f->n; j++)
			free(f->keys[j]);
		free(f->first_charge);
		free(f->first_fee);
		free(f->first_created);
		pthread_mutex_destroy(&f->mu);
		memset(f, 0, sizeof(*f));
		pthread_mutex_init(&f->mu, NULL);
		snprintf(f->name, sizeof(f->name), "fake%zu", i);
	}
}

static int
fake_open(void **ctx, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	struct fake *f = fake_find(name);
	size_t i, off = 0;

	if (f == NULL) {
		snprintf(err, errlen, "no fake called %s", name);
		return RS_EXPORT_PERMANENT;
	}
	pthread_mutex_lock(&f->mu);
	if (f->open_fails > 0) {
		f->open_fails--;
		pthread_mutex_unlock(&f->mu);
		snprintf(err, errlen, "cannot reach the target");
		return RS_EXPORT_RETRY;
	}
	f->opens++;
	f->last_kv[0] = '\0';
	for (i = 0; i < nkv; i++) {
		int r = snprintf(f->last_kv + off, sizeof(f->last_kv) - off,
		    "%s%s=%s", i > 0 ? ";" : "", kv[i].key, kv[i].value);

		if (r > 0 && (size_t)r < sizeof(f->last_kv) - off)
			off += (size_t)r;
	}
	pthread_mutex_unlock(&f->mu);
	*ctx = f;
	return RS_EXPORT_OK;
}

static int
fake_deliver(void *ctx, const struct rs_export_record *recs, size_t n,
    size_t *done, char *err, size_t errlen)
{
	struct fake *f = ctx;
	size_t i;
	int rc = RS_EXPORT_OK;

	if (f->delay_ms > 0)	/* set before the engine starts */
		tu_sleep_ms((int64_t)f->delay_ms * (int64_t)n);
	pthread_mutex_lock(&f->mu);
	if (f->calls < FAKE_MAX)
		f->batch[f->calls] = n;
	f->calls++;
	*done = 0;
	if (f->mode == FAKE_BAD_DONE) {
		*done = n + 5;
		pthread_mutex_unlock(&f->mu);
		return RS_EXPORT_OK;
	}
	if (f->mode == FAKE_BAD_RESULT) {
		pthread_mutex_unlock(&f->mu);
		return 42;
	}
	for (i = 0; i < n; i++) {
		const struct rs_export_record *r = &recs[i];

		if (f->accept_max > 0 && i == f->accept_max) {
			snprintf(err, errlen, "slow down");
			rc = RS_EXPORT_RETRY;
			break;
		}
		if (f->mode == FAKE_RETRY && f->fail_count != 0 &&
		    (f->fail_seq == 0 || f->fail_seq == r->seq)) {
			if (f->fail_count > 0)
				f->fail_count--;
			snprintf(err, errlen, "HTTP 503: busy\nretry later");
			rc = RS_EXPORT_RETRY;
			break;
		}
		if (f->mode == FAKE_PERMANENT && f->fail_seq == r->seq) {
			snprintf(err, errlen, "HTTP 400: {\"error\":\"bad\"}");
			rc = RS_EXPORT_PERMANENT;
			break;
		}
		if (f->n < FAKE_MAX) {
			if (r->seq == 1 && f->first_charge == NULL) {
				f->first = *r;
				f->first_charge = xstrdup(r->charge_id);
				f->first_fee = r->returned_application_fee !=
				    NULL ? xstrdup(r->returned_application_fee)
				    : NULL;
				f->first_created = r->created_date != NULL ?
				    xstrdup(r->created_date) : NULL;
			}
			f->seqs[f->n] = r->seq;
			f->keys[f->n] = xstrdup(r->idempotency_key);
			f->postings[f->n] = r->posting;
			f->n++;
		}
		(*done)++;
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

static int
fake_recover(void *ctx, int64_t *last, char *err, size_t errlen)
{
	struct fake *f = ctx;

	(void)err;
	(void)errlen;
	pthread_mutex_lock(&f->mu);
	*last = f->has_recover ? f->recover_last : 0;
	pthread_mutex_unlock(&f->mu);
	return RS_EXPORT_OK;
}

static void
fake_close(void *ctx)
{
	struct fake *f = ctx;

	if (f == NULL)
		return;
	pthread_mutex_lock(&f->mu);
	f->closes++;
	pthread_mutex_unlock(&f->mu);
}

static const struct rs_exporter_ops fake_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "fake",
	.open = fake_open,
	.deliver = fake_deliver,
	.recover = fake_recover,
	.close = fake_close
};

static size_t
fake_count(struct fake *f)
{
	size_t n;

	pthread_mutex_lock(&f->mu);
	n = f->n;
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* ---- fixtures ------------------------------------------------------------ */

static char *dir;
static char *db;
static struct store *st;	/* the test's own connection */

static void
setup(void)
{
	struct store_options so = { .busy_timeout_ms = 5000 };
	char *why = NULL;

	fake_reset();
	metrics_reset();
	clock_set_fake_wall(0);
	dir = tu_tempdir();
	db = xasprintf("%s/refundsync.db", dir);
	ck_assert_msg(store_open(db, &so, &st, &why) == RS_OK, "open: %s",
	    why != NULL ? why : "?");
}

static void
teardown(void)
{
	store_close(st);
	st = NULL;
	tu_rmtree(dir);
	free(dir);
	free(db);
	clock_set_fake_wall(0);
	fake_reset();
}

/*
 * Apply one refund version (source "webhook", instance "inst-1"): one
 * change-log entry when it is newer.  fee: returnedApplicationFee or NULL.
 */
static void
put_refund(const char *id, const char *status, int64_t rev,
    const char *amount, int64_t minor, const char *fee)
{
	struct refund r;
	enum store_outcome o = STORE_STALE;

	memset(&r, 0, sizeof(r));
	r.id = xstrdup(id);
	r.charge_id = xasprintf("ch-%s", id);
	r.currency = xstrdup("USD");
	r.amount = xstrdup(amount);
	r.amount_exact = true;
	r.amount_minor = minor;
	r.status = xstrdup(status);
	r.has_revision = rev >= 0;
	r.revision = rev;
	r.created_date = xstrdup("2025-08-09T15:26:24.000Z");
	r.updated_date = xstrdup("2025-08-09T15:26:25.000Z");
	r.returned_application_fee = fee != NULL ? xstrdup(fee) : NULL;
	r.body = xasprintf("{\"id\":\"%s\",\"chargeId\":\"ch-%s\","
	    "\"currencyCode\":\"USD\",\"amount\":\"%s\",\"status\":\"%s\"}",
	    id, id, amount, status);
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_refund(st, &r, "inst-1", false, 0,
	    "webhook", &o), RS_OK);
	ck_assert_int_eq(store_commit(st), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	refund_cleanup(&r);
}

/* n refunds r1..rn, SUCCEEDED, revision 1. */
static void
put_many(int from, int n)
{
	char id[32];
	int i;

	for (i = from; i < from + n; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		put_refund(id, "SUCCEEDED", 1, "1.00", 100, NULL);
	}
}

static struct export_worker *
worker(const char *name, size_t batch)
{
	struct export_spec spec;
	struct export_worker *w = NULL;
	char *why = NULL;

	export_spec_init(&spec, name, &fake_ops);
	spec.batch = batch;
	spec.retry_initial_ms = 100;
	spec.retry_max_ms = 1000;
	spec.retry_horizon_s = 60;
	spec.poll_ms = 50;
	ck_assert_msg(export_worker_new(db, 5000, &spec, &w, &why) == RS_OK,
	    "worker: %s", why != NULL ? why : "?");
	return w;
}

/* Step w at now until it is not making progress; the last result. */
static enum export_step
run(struct export_worker *w, int64_t now, int64_t *next)
{
	enum export_step r;
	int guard = 0;

	do {
		r = export_worker_step(w, now, next);
		ck_assert_int_lt(++guard, 1000);
	} while (r == EXPORT_STEP_PROGRESS);
	return r;
}

static struct store_export
state(const char *name)
{
	struct store_export e;

	ck_assert_int_eq(store_export_get(st, name, &e), RS_OK);
	return e;
}

static int64_t
sql_int(const char *sql)
{
	sqlite3 *h = store_sqlite_handle(st);
	sqlite3_stmt *stmt = NULL;
	int64_t v = -1;

	ck_assert_int_eq(sqlite3_prepare_v2(h, sql, -1, &stmt, NULL),
	    SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return v;
}

static void
sql_exec(const char *sql)
{
	ck_assert_int_eq(sqlite3_exec(store_sqlite_handle(st), sql, NULL,
	    NULL, NULL), SQLITE_OK);
}

static int64_t
metric(const char *name, const char *exporter)
{
	char label[128];

	snprintf(label, sizeof(label), "exporter=\"%s\"", exporter);
	return metrics_get(name, label);
}

/* Dead letters of name, as "seq|reason|last_response|queued\n" lines. */
struct dead_text {
	char	buf[4096];
	size_t	len;
};

static enum rs_status
dead_line(void *arg, const struct store_dead_row *d)
{
	struct dead_text *t = arg;
	int r;

	r = snprintf(t->buf + t->len, sizeof(t->buf) - t->len,
	    "%lld|%s|%s|%s|%d\n", (long long)d->seq, d->idempotency_key,
	    d->reason, d->last_response != NULL ? d->last_response : "-",
	    d->queued ? 1 : 0);
	if (r > 0 && (size_t)r < sizeof(t->buf) - t->len)
		t->len += (size_t)r;
	return RS_OK;
}

static char *
dead_of(const char *name)
{
	struct dead_text t;

	memset(&t, 0, sizeof(t));
	ck_assert_int_eq(store_dead_foreach(st, name, dead_line, &t), RS_OK);
	return xstrdup(t.buf);
}

/* ---- keys, order, batches ------------------------------------------------ */

/* The key of a change with (rev >= 0) or without a revision. */
static char *
key_of(const char *name, const char *id, int64_t rev, bool has_evseq,
    int64_t evseq, const char *updated, enum rs_posting posting)
{
	struct store_change c;

	memset(&c, 0, sizeof(c));
	c.refund_id = (char *)(uintptr_t)id;
	c.has_revision = rev >= 0;
	c.revision = rev;
	c.has_event_seq = has_evseq;
	c.event_seq = evseq;
	c.updated_date = (char *)(uintptr_t)updated;
	return export_idempotency_key(name, &c, posting);
}

START_TEST(test_idempotency_key)
{
	char *k;

	/* With a revision: exactly as always, whatever else is known. */
	k = key_of("books", "r-1", 7, true, 3, "2025-01-01T00:00:00Z",
	    RS_POSTING_POST);
	ck_assert_str_eq(k, "books:r-1:7");
	free(k);
	k = key_of("books", "r-1", 8, false, 0, NULL, RS_POSTING_REVERSE);
	ck_assert_str_eq(k, "books:r-1:8:reverse");
	free(k);
	/* Without: the event sequence and updatedDate tell versions
	 * apart. */
	k = key_of("my books", "r-2", -1, false, 0, NULL, RS_POSTING_NONE);
	ck_assert_str_eq(k, "my books:r-2:-");
	free(k);
	k = key_of("b", "r-2", -1, false, 0, NULL, RS_POSTING_REVERSE);
	ck_assert_str_eq(k, "b:r-2:-:reverse");
	free(k);
	k = key_of("b", "r-2", -1, true, 41, "2025-08-09T15:26:25.000Z",
	    RS_POSTING_POST);
	ck_assert_str_eq(k, "b:r-2:-:41:2025-08-09T15:26:25.000Z");
	free(k);
	k = key_of("b", "r-2", -1, true, 42, NULL, RS_POSTING_REVERSE);
	ck_assert_str_eq(k, "b:r-2:-:42:-:reverse");
	free(k);
	k = key_of("b", "r-2", -1, false, 0, "2025-08-09 15:26\r\n%",
	    RS_POSTING_NONE);
	ck_assert_str_eq(k, "b:r-2:-:-:2025-08-09%2015:26%0D%0A%25");
	free(k);
}
END_TEST

/* Apply a version of id without a revision: event sequence evseq (< 0:
 * none, as a backfill or the CLI) and updatedDate updated. */
static void
put_unrevised(const char *id, const char *status, int64_t evseq,
    const char *updated)
{
	struct refund r;
	enum store_outcome o = STORE_STALE;

	memset(&r, 0, sizeof(r));
	r.id = xstrdup(id);
	r.charge_id = xasprintf("ch-%s", id);
	r.currency = xstrdup("USD");
	r.amount = xstrdup("2.00");
	r.amount_exact = true;
	r.amount_minor = 200;
	r.status = xstrdup(status);
	r.updated_date = updated != NULL ? xstrdup(updated) : NULL;
	r.body = xasprintf("{\"id\":\"%s\",\"status\":\"%s\"}", id,
	    status);
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_refund(st, &r, "inst-1", evseq >= 0,
	    evseq, "webhook", &o), RS_OK);
	ck_assert_int_eq(store_commit(st), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	refund_cleanup(&r);
}

/*
 * A refund without a revision: PENDING, SUCCEEDED, REVERSED, SUCCEEDED
 * again.  Each change gets its own key (they all were "fake0:rb:-"), and
 * the same one when it is sent again.
 */
START_TEST(test_keys_without_revision)
{
	static const char *const want[] = {
		"fake0:rb:-:6:2025-08-09T15:00:00Z",
		"fake0:rb:-:7:2025-08-09T15:00:00Z",
		"fake0:rb:-:8:2025-08-09T16:00:00Z:reverse",
		"fake0:rb:-:-:2025-08-09T17:00:00Z",
	};
	struct export_worker *w;
	int64_t next;
	size_t i, j;

	put_unrevised("rb", "PENDING", 6, "2025-08-09T15:00:00Z");
	put_unrevised("rb", "SUCCEEDED", 7, "2025-08-09T15:00:00Z");
	put_unrevised("rb", "REVERSED", 8, "2025-08-09T16:00:00Z");
	put_unrevised("rb", "SUCCEEDED", -1, "2025-08-09T17:00:00Z");
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	export_worker_free(w);
	ck_assert_uint_eq(fakes[0].n, 4);
	ck_assert_int_eq(fakes[0].postings[1], RS_POSTING_POST);
	ck_assert_int_eq(fakes[0].postings[2], RS_POSTING_REVERSE);
	ck_assert_int_eq(fakes[0].postings[3], RS_POSTING_POST);
	for (i = 0; i < 4; i++) {
		ck_assert_str_eq(fakes[0].keys[i], want[i]);
		for (j = 0; j < i; j++)
			ck_assert_str_ne(fakes[0].keys[i], fakes[0].keys[j]);
	}
	/* A replay (another worker, after a restart) sends the same keys. */
	ck_assert_int_eq(store_export_replay(st, "fake0", 1, NULL), RS_OK);
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	export_worker_free(w);
	ck_assert_uint_eq(fakes[0].n, 8);
	for (i = 0; i < 4; i++)
		ck_assert_str_eq(fakes[0].keys[4 + i], want[i]);
}
END_TEST

START_TEST(test_order_and_batches)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next = 0;
	size_t i;

	put_many(1, 10);
	w = worker("fake0", 4);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	ck_assert_int_eq(next, T0 + 50);
	ck_assert_uint_eq(fakes[0].opens, 1);
	ck_assert_uint_eq(fakes[0].n, 10);
	for (i = 0; i < 10; i++)
		ck_assert_int_eq(fakes[0].seqs[i], (int64_t)i + 1);
	/* Batches of at most 4, in order. */
	ck_assert_uint_eq(fakes[0].calls, 3);
	ck_assert_uint_eq(fakes[0].batch[0], 4);
	ck_assert_uint_eq(fakes[0].batch[1], 4);
	ck_assert_uint_eq(fakes[0].batch[2], 2);
	ck_assert_str_eq(fakes[0].keys[0], "fake0:r1:1");
	ck_assert_str_eq(fakes[0].keys[9], "fake0:r10:1");
	ck_assert_int_eq(fakes[0].postings[0], RS_POSTING_POST);

	e = state("fake0");
	ck_assert_int_eq(e.position, 10);
	ck_assert_int_eq(e.delivered, 10);
	ck_assert_int_eq(e.failures, 0);
	ck_assert_int_eq(e.retry_seq, 0);
	ck_assert_ptr_nonnull(e.last_delivery_at);
	store_export_cleanup(&e);
	ck_assert_int_eq(sql_int("SELECT count(*) FROM exporter_deliveries"
	    " WHERE exporter = 'fake0'"), 10);
	ck_assert_int_eq(metric("refundsync_export_delivered_total",
	    "fake0"), 10);

	/* Nothing new: no call. */
	ck_assert_int_eq(run(w, T0 + 50, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].calls, 3);
	ck_assert_int_eq(metric("refundsync_export_lag", "fake0"), 0);
	/* A new change is picked up; lag shows before it goes. */
	put_many(11, 1);
	ck_assert_int_eq(run(w, T0 + 100, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 11);
	ck_assert_int_eq(fakes[0].seqs[10], 11);
	export_worker_free(w);
	ck_assert_int_eq(fakes[0].closes, 1);
}
END_TEST

START_TEST(test_record_fields)
{
	struct export_worker *w;
	int64_t next;
	const struct rs_export_record *r;

	put_refund("ra", "PENDING", 1, "12.50", 1250, "0.30");
	put_refund("ra", "SUCCEEDED", 2, "12.50", 1250, "0.30");
	put_refund("ra", "REVERSED", 3, "12.50", 1250, "0.30");
	put_refund("rb", "SUCCEEDED", -1, "3.00", 300, NULL);
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 4);
	ck_assert_str_eq(fakes[0].keys[0], "fake0:ra:1");
	ck_assert_str_eq(fakes[0].keys[1], "fake0:ra:2");
	ck_assert_str_eq(fakes[0].keys[2], "fake0:ra:3:reverse");
	ck_assert_str_eq(fakes[0].keys[3],
	    "fake0:rb:-:-:2025-08-09T15:26:25.000Z");
	ck_assert_int_eq(fakes[0].postings[0], RS_POSTING_NONE);
	ck_assert_int_eq(fakes[0].postings[1], RS_POSTING_POST);
	ck_assert_int_eq(fakes[0].postings[2], RS_POSTING_REVERSE);
	ck_assert_int_eq(fakes[0].postings[3], RS_POSTING_POST);
	/* The entity fields come from the change log. */
	r = &fakes[0].first;
	ck_assert_int_eq(r->seq, 1);
	ck_assert_int_eq(r->has_revision, 1);
	ck_assert_int_eq(r->revision, 1);
	ck_assert_int_eq(r->amount_exact, 1);
	ck_assert_int_eq(r->amount_minor, 1250);
	ck_assert_int_eq(r->exponent, 2);
	ck_assert_str_eq(fakes[0].first_charge, "ch-ra");
	ck_assert_str_eq(fakes[0].first_fee, "0.30");
	ck_assert_str_eq(fakes[0].first_created, "2025-08-09T15:26:24.000Z");
	export_worker_free(w);
}
END_TEST

/* Entries written before migration 002 take the entity from the body. */
START_TEST(test_change_from_old_row)
{
	struct store_change c;

	put_refund("ro", "SUCCEEDED", 4, "5.00", 500, NULL);
	sql_exec("UPDATE changes SET charge_id = NULL, created_date = NULL");
	ck_assert_int_eq(store_change_get(st, 1, &c), RS_OK);
	ck_assert_str_eq(c.charge_id, "ch-ro");
	ck_assert_ptr_null(c.created_date);	/* not in that body */
	ck_assert_str_eq(c.status, "SUCCEEDED");
	ck_assert_int_eq(c.revision, 4);
	store_change_cleanup(&c);
	ck_assert_int_eq(store_change_get(st, 2, &c), RS_ERR_NOTFOUND);
}
END_TEST

START_TEST(test_position_survives_reopen)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next;

	put_many(1, 5);
	w = worker("fake0", 2);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	export_worker_free(w);
	ck_assert_uint_eq(fakes[0].n, 5);

	/* Reopen the store: the position is durable. */
	store_close(st);
	st = NULL;
	{
		struct store_options so = { .busy_timeout_ms = 5000 };
		char *why = NULL;

		ck_assert_int_eq(store_open(db, &so, &st, &why), RS_OK);
	}
	put_many(6, 3);
	w = worker("fake0", 2);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 8);
	ck_assert_int_eq(fakes[0].seqs[5], 6);
	ck_assert_int_eq(fakes[0].seqs[7], 8);
	e = state("fake0");
	ck_assert_int_eq(e.position, 8);
	ck_assert_int_eq(e.delivered, 8);
	store_export_cleanup(&e);
	export_worker_free(w);
}
END_TEST

/* ---- failures ------------------------------------------------------------ */

START_TEST(test_retry_backoff_then_success)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next = 0, now = T0, prev_delay = 0, delay;
	int i;

	put_many(1, 3);
	fakes[0].mode = FAKE_RETRY;
	fakes[0].fail_seq = 2;
	fakes[0].fail_count = 5;
	w = worker("fake0", 10);
	/* Seq 1 goes, seq 2 fails: a backoff in [50, 100] ms. */
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	ck_assert_uint_eq(fakes[0].n, 1);
	delay = next - now;
	ck_assert_int_ge(delay, 50);
	ck_assert_int_le(delay, 100);
	e = state("fake0");
	ck_assert_int_eq(e.position, 1);
	ck_assert_int_eq(e.retry_seq, 2);
	ck_assert_int_eq(e.retry_attempts, 1);
	ck_assert_int_eq(e.failures, 1);
	/* The message is kept, made one line. */
	ck_assert_str_eq(e.last_error, "HTTP 503: busy retry later");
	store_export_cleanup(&e);

	/* Before the deadline nothing is tried. */
	ck_assert_int_eq(export_worker_step(w, next - 1, &next),
	    EXPORT_STEP_WAIT);
	ck_assert_uint_eq(fakes[0].calls, 1);

	/* Each failure doubles the wait (within jitter), up to 1000 ms. */
	for (i = 2; i <= 5; i++) {
		int64_t d = 100LL << (i - 1);

		if (d > 1000)
			d = 1000;
		now = next;
		ck_assert_int_eq(export_worker_step(w, now, &next),
		    EXPORT_STEP_WAIT);
		delay = next - now;
		ck_assert_msg(delay >= d / 2 && delay <= d,
		    "attempt %d: delay %lld not in [%lld, %lld]", i,
		    (long long)delay, (long long)(d / 2), (long long)d);
		ck_assert_int_le(delay, 1000);
		prev_delay = delay;
	}
	(void)prev_delay;
	e = state("fake0");
	ck_assert_int_eq(e.retry_attempts, 5);
	ck_assert_int_eq(e.failures, 5);
	store_export_cleanup(&e);
	ck_assert_int_eq(metric("refundsync_export_failures_total", "fake0"),
	    5);

	/* The sixth attempt succeeds: the rest flows, retry state gone. */
	ck_assert_int_eq(run(w, next, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 3);
	ck_assert_int_eq(fakes[0].seqs[1], 2);
	ck_assert_int_eq(fakes[0].seqs[2], 3);
	e = state("fake0");
	ck_assert_int_eq(e.position, 3);
	ck_assert_int_eq(e.retry_seq, 0);
	ck_assert_int_eq(e.retry_attempts, 0);
	ck_assert_int_eq(e.dead, 0);
	store_export_cleanup(&e);
	export_worker_free(w);
}
END_TEST

START_TEST(test_permanent_to_dead_letter)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next;
	char *d;

	put_many(1, 5);
	fakes[0].mode = FAKE_PERMANENT;
	fakes[0].fail_seq = 3;
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	/* Every record but 3 went, in order: 3 did not hold up 4 and 5. */
	ck_assert_uint_eq(fakes[0].n, 4);
	ck_assert_int_eq(fakes[0].seqs[2], 4);
	ck_assert_int_eq(fakes[0].seqs[3], 5);
	e = state("fake0");
	ck_assert_int_eq(e.position, 5);
	ck_assert_int_eq(e.delivered, 4);
	ck_assert_int_eq(e.dead, 1);
	ck_assert_int_eq(e.failures, 1);
	store_export_cleanup(&e);
	d = dead_of("fake0");
	ck_assert_str_eq(d, "3|fake0:r3:1|permanent failure (attempt 1)|"
	    "HTTP 400: {\"error\":\"bad\"}|0\n");
	free(d);
	ck_assert_int_eq(metric("refundsync_export_dead_letters", "fake0"),
	    1);
	ck_assert_int_eq(sql_int("SELECT count(*) FROM exporter_deliveries"
	    " WHERE exporter = 'fake0' AND seq = 3"), 0);
	export_worker_free(w);
}
END_TEST

START_TEST(test_retry_horizon_to_dead_letter)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next, now = T0;
	char *d;

	put_many(1, 2);
	fakes[0].mode = FAKE_RETRY;
	fakes[0].fail_seq = 1;
	fakes[0].fail_count = -1;
	w = worker("fake0", 10);
	clock_set_fake_wall(1700000000);
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	clock_set_fake_wall(1700000030);
	now = next;
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	e = state("fake0");
	ck_assert_int_eq(e.retry_since, 1700000000);
	ck_assert_int_eq(e.retry_attempts, 2);
	store_export_cleanup(&e);
	/* 60 s after the first failure: a dead letter, and 2 flows. */
	clock_set_fake_wall(1700000060);
	now = next;
	ck_assert_int_eq(run(w, now, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 1);
	ck_assert_int_eq(fakes[0].seqs[0], 2);
	d = dead_of("fake0");
	ck_assert_str_eq(d, "1|fake0:r1:1|still failing after 3 attempts "
	    "over 60 s (retry_horizon is 60 s)|HTTP 503: busy retry later|0\n");
	free(d);
	{
		sqlite3_stmt *stmt = NULL;

		ck_assert_int_eq(sqlite3_prepare_v2(store_sqlite_handle(st),
		    "SELECT first_failure_at, attempts FROM"
		    " exporter_dead_letters WHERE seq = 1", -1, &stmt, NULL),
		    SQLITE_OK);
		ck_assert_int_eq(sqlite3_step(stmt), SQLITE_ROW);
		ck_assert_str_eq((const char *)sqlite3_column_text(stmt, 0),
		    "2023-11-14T22:13:20Z");
		ck_assert_int_eq(sqlite3_column_int(stmt, 1), 3);
		sqlite3_finalize(stmt);
	}
	e = state("fake0");
	ck_assert_int_eq(e.position, 2);
	ck_assert_int_eq(e.failures, 3);
	ck_assert_int_eq(e.retry_seq, 0);
	store_export_cleanup(&e);
	export_worker_free(w);
}
END_TEST

/* The horizon counts from the first failure across a restart. */
START_TEST(test_retry_state_survives_restart)
{
	struct export_worker *w;
	int64_t next;
	char *d;

	put_many(1, 1);
	fakes[0].mode = FAKE_RETRY;
	fakes[0].fail_count = -1;
	clock_set_fake_wall(1700000000);
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, T0, &next), EXPORT_STEP_WAIT);
	export_worker_free(w);
	/* A new process: it tries at once, but remembers when it began. */
	clock_set_fake_wall(1700000100);
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, 5, &next), EXPORT_STEP_IDLE);
	d = dead_of("fake0");
	ck_assert_msg(strstr(d, "still failing after 2 attempts over 100 s")
	    != NULL, "dead: %s", d);
	free(d);
	export_worker_free(w);
}
END_TEST

START_TEST(test_partial_and_bad_answers)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next;

	put_many(1, 5);
	/* Two accepted per call, then "slow down": progress is kept. */
	fakes[0].accept_max = 2;
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, T0, &next), EXPORT_STEP_WAIT);
	e = state("fake0");
	ck_assert_int_eq(e.position, 2);
	ck_assert_int_eq(e.retry_seq, 3);
	store_export_cleanup(&e);
	export_worker_free(w);

	/* More done than given: nothing is recorded, it is a retry. */
	fake_reset();
	fakes[0].mode = FAKE_BAD_DONE;
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, T0, &next), EXPORT_STEP_WAIT);
	e = state("fake0");
	ck_assert_int_eq(e.position, 2);
	ck_assert_int_eq(e.retry_seq, 3);
	ck_assert_str_eq(e.last_error, "the exporter reported 8 of 3 "
	    "records done");
	store_export_cleanup(&e);
	export_worker_free(w);

	/* An unknown result is a retry too. */
	fake_reset();
	fakes[0].mode = FAKE_BAD_RESULT;
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, T0, &next), EXPORT_STEP_WAIT);
	e = state("fake0");
	ck_assert_int_eq(e.position, 2);
	ck_assert_str_eq(e.last_error, "the exporter returned an unknown "
	    "result (42)");
	store_export_cleanup(&e);
	export_worker_free(w);
}
END_TEST

START_TEST(test_open_failure_backs_off)
{
	struct export_worker *w;
	int64_t next, now = T0;

	put_many(1, 2);
	fakes[0].open_fails = 2;
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	ck_assert_int_ge(next - now, 50);
	ck_assert_int_le(next - now, 100);
	ck_assert_int_eq(fakes[0].opens, 0);
	/* Its lag is on /metrics although it never opened. */
	ck_assert_int_eq(metric("refundsync_export_lag", "fake0"), 2);
	ck_assert_int_eq(metric("refundsync_export_position", "fake0"), 0);
	/* `export status` says why it does not move. */
	{
		struct store_export e = state("fake0");

		ck_assert_int_eq(e.failures, 1);
		ck_assert_ptr_nonnull(e.last_error);
		ck_assert_str_eq(e.last_error, "cannot open the exporter: "
		    "cannot reach the target");
		store_export_cleanup(&e);
	}
	now = next;
	put_many(3, 1);
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	ck_assert_int_ge(next - now, 100);
	ck_assert_int_le(next - now, 200);
	ck_assert_int_eq(metric("refundsync_export_lag", "fake0"), 3);
	ck_assert_int_eq(run(w, next, &next), EXPORT_STEP_IDLE);
	ck_assert_int_eq(fakes[0].opens, 1);
	ck_assert_uint_eq(fakes[0].n, 3);
	export_worker_free(w);
}
END_TEST

/* ---- operators: retry-dead, replay --------------------------------------- */

START_TEST(test_retry_dead)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next, n = 0;
	char *d;

	put_many(1, 4);
	fakes[0].mode = FAKE_PERMANENT;
	fakes[0].fail_seq = 2;
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 3);

	/* The target is fixed; the operator re-queues. */
	fakes[0].mode = FAKE_OK;
	ck_assert_int_eq(store_export_retry_dead(st, "fake0", &n), RS_OK);
	ck_assert_int_eq(n, 1);
	d = dead_of("fake0");
	ck_assert_ptr_nonnull(strstr(d, "|1\n"));	/* queued */
	free(d);
	ck_assert_int_eq(run(w, T0 + 10, &next), EXPORT_STEP_IDLE);
	/* Seq 2 alone, after the newer ones; its dead letter is gone. */
	ck_assert_uint_eq(fakes[0].n, 4);
	ck_assert_int_eq(fakes[0].seqs[3], 2);
	ck_assert_uint_eq(fakes[0].batch[fakes[0].calls - 1], 1);
	ck_assert_str_eq(fakes[0].keys[3], "fake0:r2:1");
	e = state("fake0");
	ck_assert_int_eq(e.position, 4);
	ck_assert_int_eq(e.dead, 0);
	ck_assert_int_eq(e.queued, 0);
	ck_assert_int_eq(e.delivered, 4);
	store_export_cleanup(&e);
	ck_assert_int_eq(sql_int("SELECT count(*) FROM exporter_deliveries"
	    " WHERE exporter = 'fake0'"), 4);

	/* Nothing more to re-queue. */
	ck_assert_int_eq(store_export_retry_dead(st, NULL, &n), RS_OK);
	ck_assert_int_eq(n, 0);
	export_worker_free(w);
}
END_TEST

/* A dead letter fails again: it is a dead letter again, not queued. */
START_TEST(test_retry_dead_fails_again)
{
	struct export_worker *w;
	int64_t next, n = 0;
	char *d;

	put_many(1, 2);
	fakes[0].mode = FAKE_PERMANENT;
	fakes[0].fail_seq = 1;
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	ck_assert_int_eq(store_export_retry_dead(st, NULL, &n), RS_OK);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(run(w, T0 + 1, &next), EXPORT_STEP_IDLE);
	d = dead_of("fake0");
	ck_assert_str_eq(d, "1|fake0:r1:1|permanent failure (attempt 1)|"
	    "HTTP 400: {\"error\":\"bad\"}|0\n");
	free(d);
	/* A target that holds a later seq gets it all the same: the
	 * exporter decides whether it can take an older record. */
	fakes[0].mode = FAKE_OK;
	fakes[0].has_recover = true;
	fakes[0].recover_last = 2;
	ck_assert_int_eq(store_export_retry_dead(st, "fake0", &n), RS_OK);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(run(w, T0 + 2, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 2);	/* seq 2 long ago, then 1 */
	ck_assert_int_eq(fakes[0].seqs[1], 1);
	ck_assert_str_eq(fakes[0].keys[1], "fake0:r1:1");
	ck_assert_uint_eq(fakes[0].batch[fakes[0].calls - 1], 1);
	d = dead_of("fake0");
	ck_assert_str_eq(d, "");
	free(d);
	ck_assert_int_eq(sql_int("SELECT count(*) FROM exporter_deliveries"
	    " WHERE exporter = 'fake0'"), 2);
	export_worker_free(w);
}
END_TEST

START_TEST(test_replay_from)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next, old = -1;
	size_t i;

	put_many(1, 6);
	w = worker("fake0", 4);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 6);
	/* From another connection (the CLI): replay from 3. */
	ck_assert_int_eq(store_export_replay(st, "fake0", 3, &old), RS_OK);
	ck_assert_int_eq(old, 6);
	e = state("fake0");
	ck_assert_int_eq(e.position, 2);
	store_export_cleanup(&e);
	ck_assert_int_eq(run(w, T0 + 1, &next), EXPORT_STEP_IDLE);
	/* No recover(): 3..6 again, with the same keys. */
	ck_assert_uint_eq(fakes[0].n, 10);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(fakes[0].seqs[6 + i], (int64_t)i + 3);
		ck_assert_str_eq(fakes[0].keys[6 + i], fakes[0].keys[2 + i]);
	}
	e = state("fake0");
	ck_assert_int_eq(e.position, 6);
	store_export_cleanup(&e);
	/* Never forward: 7 would skip nothing and is allowed, 8 would
	 * skip 7 and 1000 everything to come; the position stays. */
	old = -1;
	ck_assert_int_eq(store_export_replay(st, "fake0", 8, &old),
	    RS_ERR_RANGE);
	ck_assert_int_eq(old, 6);
	ck_assert_int_eq(store_export_replay(st, "fake0", 1000, NULL),
	    RS_ERR_RANGE);
	e = state("fake0");
	ck_assert_int_eq(e.position, 6);
	store_export_cleanup(&e);
	ck_assert_int_eq(store_export_replay(st, "fake0", 7, &old), RS_OK);
	ck_assert_int_eq(old, 6);
	put_many(7, 2);
	ck_assert_int_eq(run(w, T0 + 2, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 12);
	ck_assert_int_eq(fakes[0].seqs[10], 7);
	ck_assert_int_eq(fakes[0].seqs[11], 8);
	/* A new exporter is at 0: only 1 is allowed. */
	ck_assert_int_eq(store_export_replay(st, "fresh", 2, &old),
	    RS_ERR_RANGE);
	ck_assert_int_eq(old, 0);
	/* Replay is refused below 1 and creates an unknown exporter. */
	ck_assert_int_eq(store_export_replay(st, "fake0", 0, NULL),
	    RS_ERR_INPUT);
	export_worker_free(w);
}
END_TEST

START_TEST(test_replay_with_recover_skips_what_target_holds)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next;

	put_many(1, 6);
	fakes[0].has_recover = true;
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	fakes[0].recover_last = 6;	/* "my file holds 1..6" */
	ck_assert_int_eq(store_export_replay(st, "fake0", 2, NULL), RS_OK);
	ck_assert_int_eq(run(w, T0 + 1, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 6);	/* nothing twice */
	/* The file was moved away: it holds 1..3 now. */
	fakes[0].recover_last = 3;
	ck_assert_int_eq(store_export_replay(st, "fake0", 1, NULL), RS_OK);
	ck_assert_int_eq(run(w, T0 + 2, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 9);
	ck_assert_int_eq(fakes[0].seqs[6], 4);
	ck_assert_int_eq(fakes[0].seqs[8], 6);
	e = state("fake0");
	ck_assert_int_eq(e.position, 6);
	store_export_cleanup(&e);
	export_worker_free(w);
}
END_TEST

/* An operator's replay cuts a backoff short. */
START_TEST(test_replay_during_backoff)
{
	struct export_worker *w;
	int64_t next, now = T0;

	put_many(1, 3);
	fakes[0].mode = FAKE_RETRY;
	fakes[0].fail_seq = 1;
	fakes[0].fail_count = 1;
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	ck_assert_int_ge(next - now, 50);
	/* Waiting: it looks again within poll_ms, but tries nothing. */
	ck_assert_int_eq(export_worker_step(w, now + 1, &next),
	    EXPORT_STEP_WAIT);
	ck_assert_int_le(next, now + 1 + 50);
	ck_assert_uint_eq(fakes[0].calls, 1);
	/* Retry it now (replay from where it is): at once, not after the
	 * backoff. */
	ck_assert_int_eq(store_export_replay(st, "fake0", 1, NULL), RS_OK);
	ck_assert_int_eq(run(w, now + 2, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 3);
	ck_assert_int_eq(fakes[0].seqs[0], 1);
	ck_assert_int_eq(fakes[0].seqs[2], 3);
	export_worker_free(w);
}
END_TEST

/* A crash between a delivery and recording it: recover() fast-forwards. */
START_TEST(test_recover_fast_forward)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next;

	put_many(1, 7);
	fakes[0].has_recover = true;
	fakes[0].recover_last = 4;
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 3);
	ck_assert_int_eq(fakes[0].seqs[0], 5);
	ck_assert_int_eq(fakes[0].seqs[2], 7);
	e = state("fake0");
	ck_assert_int_eq(e.position, 7);
	ck_assert_int_eq(e.delivered, 7);
	store_export_cleanup(&e);
	/* The skipped ones are in the delivery log too. */
	ck_assert_int_eq(sql_int("SELECT count(*) FROM exporter_deliveries"
	    " WHERE exporter = 'fake0' AND seq <= 4"), 4);
	{
		bool yes = false;

		ck_assert_int_eq(store_export_was_delivered(st, "fake0", 2,
		    &yes), RS_OK);
		ck_assert(yes);
		ck_assert_int_eq(store_export_was_delivered(st, "fake1", 2,
		    &yes), RS_OK);
		ck_assert(!yes);
	}
	export_worker_free(w);
}
END_TEST

/*
 * A target that claims a seq the change log does not hold yet was filled
 * from another store: the engine does not skip to it (which would skip
 * the changes to come), it closes the exporter and tries again later.
 */
START_TEST(test_recover_ahead_of_store_refused)
{
	struct export_worker *w;
	struct store_export e;
	int64_t next, now = T0;

	put_many(1, 3);
	fakes[0].has_recover = true;
	fakes[0].recover_last = 999;
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	ck_assert_int_ge(next - now, 50);
	ck_assert_int_le(next - now, 100);
	ck_assert_uint_eq(fakes[0].n, 0);
	ck_assert_int_eq(fakes[0].opens, 1);
	ck_assert_int_eq(fakes[0].closes, 1);
	e = state("fake0");
	ck_assert_int_eq(e.position, 0);
	ck_assert_int_eq(e.delivered, 0);
	/* `export status` says why. */
	ck_assert_int_eq(e.failures, 1);
	ck_assert_ptr_nonnull(e.last_error);
	ck_assert_msg(strstr(e.last_error, "999") != NULL, "%s",
	    e.last_error);
	store_export_cleanup(&e);
	/* Still refused, with a longer wait. */
	now = next;
	ck_assert_int_eq(export_worker_step(w, now, &next), EXPORT_STEP_WAIT);
	ck_assert_int_ge(next - now, 100);
	ck_assert_int_le(next - now, 200);
	ck_assert_uint_eq(fakes[0].n, 0);
	/* The operator moved it away: everything is delivered. */
	fakes[0].recover_last = 0;
	ck_assert_int_eq(run(w, next, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 3);
	e = state("fake0");
	ck_assert_int_eq(e.position, 3);
	store_export_cleanup(&e);
	export_worker_free(w);
}
END_TEST

/* ---- the threaded engine ------------------------------------------------- */

/*
 * An exporter that sends each record on its own (http, exec) is handed
 * one per deliver(), so a stop waits for the record in flight, not the
 * batch: with 16 slow records under way, a halt after the second ends
 * the run long before the 16th, the records done are recorded, and the
 * next run delivers the rest, each once and in order.
 */
START_TEST(test_stop_between_records)
{
	struct export_spec spec;
	struct export_engine *eng = NULL;
	struct store_export e;
	char *why = NULL;
	int64_t deadline;
	size_t n, i;

	fakes[0].delay_ms = 200;
	export_spec_init(&spec, fakes[0].name, &fake_ops);
	spec.batch = 16;
	spec.one_at_a_time = true;
	spec.poll_ms = 20;
	put_many(1, 16);
	ck_assert_msg(export_engine_new(db, 5000, &spec, 1, &eng, &why) ==
	    RS_OK, "engine: %s", why != NULL ? why : "?");
	deadline = clock_mono_ms() + 20000;
	while (fake_count(&fakes[0]) < 2 && clock_mono_ms() < deadline)
		tu_sleep_ms(5);
	export_engine_halt(eng);
	export_engine_stop(eng);
	n = fake_count(&fakes[0]);
	ck_assert_msg(n >= 2 && n < 16, "%zu of 16 delivered before the "
	    "stop", n);
	for (i = 0; i < fakes[0].calls && i < FAKE_MAX; i++)
		ck_assert_uint_eq(fakes[0].batch[i], 1);
	e = state("fake0");
	ck_assert_int_eq(e.position, (int64_t)n);
	store_export_cleanup(&e);

	fakes[0].delay_ms = 0;
	ck_assert(export_engine_new(db, 5000, &spec, 1, &eng, &why) == RS_OK);
	deadline = clock_mono_ms() + 20000;
	while (fake_count(&fakes[0]) < 16 && clock_mono_ms() < deadline)
		tu_sleep_ms(5);
	export_engine_halt(eng);
	export_engine_stop(eng);
	ck_assert_uint_eq(fake_count(&fakes[0]), 16);
	for (i = 0; i < 16; i++)
		ck_assert_int_eq(fakes[0].seqs[i], (int64_t)i + 1);
	e = state("fake0");
	ck_assert_int_eq(e.position, 16);
	store_export_cleanup(&e);
}
END_TEST

START_TEST(test_failing_exporter_does_not_stop_another)
{
	struct export_spec specs[2];
	struct export_engine *eng = NULL;
	struct store_export e;
	char *why = NULL;
	int64_t deadline;
	int i;

	fakes[0].mode = FAKE_RETRY;
	fakes[0].fail_count = -1;
	for (i = 0; i < 2; i++) {
		export_spec_init(&specs[i], fakes[i].name, &fake_ops);
		specs[i].batch = 3;
		specs[i].retry_initial_ms = 20;
		specs[i].retry_max_ms = 40;
		specs[i].poll_ms = 20;
	}
	ck_assert_msg(export_engine_new(db, 5000, specs, 2, &eng, &why) ==
	    RS_OK, "engine: %s", why != NULL ? why : "?");
	/* Changes keep coming while the exporters run: the writer is
	 * never held up. */
	for (i = 0; i < 20; i++) {
		put_many(i + 1, 1);
		export_engine_notify(eng);
	}
	deadline = clock_mono_ms() + 20000;
	while (fake_count(&fakes[1]) < 20 && clock_mono_ms() < deadline)
		tu_sleep_ms(10);
	ck_assert_uint_eq(fake_count(&fakes[1]), 20);
	/* Meanwhile the other one kept failing, with backoff. */
	for (;;) {
		size_t calls;

		pthread_mutex_lock(&fakes[0].mu);
		calls = fakes[0].calls;
		pthread_mutex_unlock(&fakes[0].mu);
		if (calls >= 3 || clock_mono_ms() > deadline)
			break;
		tu_sleep_ms(10);
	}
	ck_assert_uint_eq(fake_count(&fakes[0]), 0);
	export_engine_halt(eng);
	export_engine_notify(eng);	/* harmless once halted */
	export_engine_stop(eng);
	ck_assert_int_eq(fakes[0].closes, 1);
	ck_assert_int_eq(fakes[1].closes, 1);
	e = state("fake1");
	ck_assert_int_eq(e.position, 20);
	store_export_cleanup(&e);
	e = state("fake0");
	ck_assert_int_eq(e.position, 0);
	ck_assert_int_eq(e.retry_seq, 1);
	ck_assert_int_ge(e.retry_attempts, 2);
	store_export_cleanup(&e);
	for (i = 0; i < 20; i++)
		ck_assert_int_eq(fakes[1].seqs[i], i + 1);
}
END_TEST

/* ---- plugins ------------------------------------------------------------- */

static char *
built(const char *rel)
{
	const char *b = getenv("RS_BUILDDIR");
	char *p;

	ck_assert_msg(b != NULL, "RS_BUILDDIR is not set (make check sets "
	    "it to the build directory)");
	p = xasprintf("%s/%s", b, rel);
	ck_assert_msg(access(p, R_OK) == 0, "%s is missing: `make check` "
	    "builds it", p);
	return p;
}

START_TEST(test_plugin_example_loads_and_delivers)
{
	struct registry_entry *re = NULL;
	struct export_spec spec;
	struct export_worker *w = NULL;
	struct rs_export_kv kv[3];
	char *so = built("examples/plugin/rs-example-exporter.so");
	char *out = xasprintf("%s/audit.tsv", dir), *why = NULL, *text;
	int64_t next, last = -1;
	size_t len = 0, lines = 0, i;

	ck_assert_msg(registry_open("plugin", so, &re, &why) == RS_OK,
	    "load: %s", why != NULL ? why : "?");
	ck_assert_ptr_nonnull(re->ops);
	ck_assert_uint_eq(re->ops->abi_version, RS_EXPORTER_ABI_VERSION);
	ck_assert_str_eq(re->plugin_path, so);
	put_many(1, 3);
	put_refund("r1", "REVERSED", 2, "1.00", 100, NULL);
	kv[0].key = "type";
	kv[0].value = "plugin";
	kv[1].key = "path";
	kv[1].value = so;
	kv[2].key = "file";
	kv[2].value = out;
	export_spec_init(&spec, "audit", re->ops);
	spec.kv = kv;
	spec.nkv = 3;
	spec.batch = 2;
	ck_assert_msg(export_worker_new(db, 5000, &spec, &w, &why) == RS_OK,
	    "worker: %s", why != NULL ? why : "?");
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	export_worker_free(w);
	text = tu_read_file(out, &len);
	ck_assert_ptr_nonnull(text);
	for (i = 0; i < len; i++)
		if (text[i] == '\n')
			lines++;
	ck_assert_uint_eq(lines, 4);
	ck_assert_msg(strncmp(text, "1\taudit:r1:1\tr1\t", 16) == 0,
	    "file: %s", text);
	ck_assert_msg(strstr(text, "\n4\taudit:r1:2:reverse\tr1\t") != NULL,
	    "file: %s", text);
	free(text);
	{
		struct store_export e = state("audit");

		ck_assert_int_eq(e.position, 4);
		store_export_cleanup(&e);
	}
	/* Its recover() reads the file: a replay writes nothing twice. */
	ck_assert_int_eq(store_export_replay(st, "audit", 1, NULL), RS_OK);
	w = NULL;
	ck_assert_int_eq(export_worker_new(db, 5000, &spec, &w, &why), RS_OK);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	export_worker_free(w);
	text = tu_read_file(out, &len);
	for (i = 0, lines = 0; i < len; i++)
		if (text[i] == '\n')
			lines++;
	ck_assert_uint_eq(lines, 4);
	free(text);
	(void)last;
	registry_close(re);
	free(out);
	free(so);
}
END_TEST

START_TEST(test_plugin_bad_abi_refused)
{
	struct registry_entry *re = NULL;
	char *so = built("tests/data/rs-bad-abi-exporter.so"), *why = NULL;
	char *missing = xasprintf("%s/nope.so", dir), *exp;

	ck_assert_int_eq(registry_open("plugin", so, &re, &why),
	    RS_ERR_CONFIG);
	ck_assert_ptr_null(re);
	exp = xasprintf("plugin %s: exporter ABI version %u, but this "
	    "refundsync supports version %u: rebuild the plugin against "
	    "<refundsync/exporter.h> of this version", so,
	    RS_EXPORTER_ABI_VERSION + 1, RS_EXPORTER_ABI_VERSION);
	ck_assert_str_eq(why, exp);
	free(exp);
	free(why);
	why = NULL;

	ck_assert_int_eq(registry_open("plugin", missing, &re, &why),
	    RS_ERR_CONFIG);
	ck_assert_msg(strstr(why, "cannot load") != NULL &&
	    strstr(why, missing) != NULL, "why: %s", why);
	free(why);
	why = NULL;
	ck_assert_int_eq(registry_open("plugin", NULL, &re, &why),
	    RS_ERR_CONFIG);
	free(why);
	why = NULL;
	ck_assert_int_eq(registry_open("carrier-pigeon", NULL, &re, &why),
	    RS_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "unknown exporter type"));
	free(why);
	why = NULL;
	/* A built-in needs no file. */
	ck_assert_int_eq(registry_open("jsonl", NULL, &re, &why), RS_OK);
	ck_assert_ptr_eq(re->ops, &exporter_jsonl_ops);
	ck_assert_ptr_null(re->dl);
	registry_close(re);
	free(missing);
	free(so);
}
END_TEST

/* ---- config -------------------------------------------------------------- */

static struct config *
load(const char *text, char **errors)
{
	char *path = xasprintf("%s/t.conf", dir);
	struct config *cfg = NULL;

	*errors = NULL;
	ck_assert(tu_write_file(path, text, false));
	if (config_load(path, &cfg, errors) != RS_OK)
		cfg = NULL;
	free(path);
	return cfg;
}

/* The errors of text, with the file name replaced by "@". */
static char *
load_errors(const char *text)
{
	struct config *cfg;
	char *errors = NULL, *path = xasprintf("%s/t.conf", dir), *p;
	struct buf b;

	cfg = load(text, &errors);
	ck_assert_msg(cfg == NULL, "loaded: %s", text);
	buf_init(&b, 1 << 16);
	for (p = errors; *p != '\0';) {
		if (strncmp(p, path, strlen(path)) == 0) {
			(void)buf_appends(&b, "@");
			p += strlen(path);
		} else
			(void)buf_append(&b, p++, 1);
	}
	free(errors);
	free(path);
	return buf_detach(&b, NULL);
}

START_TEST(test_config_exporters)
{
	struct config *cfg;
	const struct config_exporter *e;
	char *errors = NULL, *want;

	cfg = load("[exporter books]\n"
	    "type = ledger\n"
	    "path = out/books.journal\n"
	    "refund_account = Expenses:Refunds:Wix\n"
	    "batch = 100\n"
	    "retry_initial_ms = 50\n"
	    "[exporter hook]\n"
	    "type = http\n"
	    "url = http://127.0.0.1:9/x\n"
	    "secret_file = credential:hook-secret\n"
	    "[exporter my plugin ]\n"
	    "type = plugin\n"
	    "path = rs.so\n"
	    "file = audit.tsv\n"
	    "anything = goes\n", &errors);
	ck_assert_msg(cfg != NULL, "errors: %s", errors);
	ck_assert_uint_eq(cfg->nexporters, 3);
	e = config_exporter_find(cfg, "books");
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(e->type, "ledger");
	ck_assert_int_eq(e->line, 1);
	ck_assert_int_eq(e->batch, 100);
	ck_assert_int_eq(e->retry_initial_ms, 50);
	ck_assert_int_eq(e->retry_max_ms, CONFIG_EXPORT_RETRY_MAX_MS);
	ck_assert_int_eq(e->retry_horizon, CONFIG_EXPORT_RETRY_HORIZON);
	ck_assert_int_eq(e->poll_ms, CONFIG_EXPORT_POLL_MS);
	ck_assert_uint_eq(e->nkv, 2);	/* type and engine keys are not */
	ck_assert_str_eq(e->kv[0].key, "path");
	want = xasprintf("%s/out/books.journal", dir);
	ck_assert_str_eq(e->kv[0].value, want);
	free(want);
	ck_assert_int_eq(e->kv[0].line, 3);
	ck_assert_str_eq(e->kv[1].value, "Expenses:Refunds:Wix");
	e = config_exporter_find(cfg, "hook");
	ck_assert_str_eq(e->kv[1].value, "credential:hook-secret");
	/* No batch: the type's default. */
	ck_assert_int_eq(e->batch, 0);
	ck_assert_uint_eq(registry_default_batch("http"), 16);
	ck_assert_uint_eq(registry_default_batch("ledger"), 2048);
	ck_assert_uint_eq(registry_default_batch("plugin"), 256);
	/* Only the types that send each record on their own are handed
	 * one at a time; a plugin may batch. */
	ck_assert(registry_one_at_a_time("http"));
	ck_assert(registry_one_at_a_time("exec"));
	ck_assert(!registry_one_at_a_time("jsonl"));
	ck_assert(!registry_one_at_a_time("plugin"));
	e = config_exporter_find(cfg, "my plugin");
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->nkv, 3);
	want = xasprintf("%s/audit.tsv", dir);
	ck_assert_str_eq(e->kv[1].value, want);
	free(want);
	ck_assert_str_eq(e->kv[2].value, "goes");
	ck_assert_ptr_null(config_exporter_find(cfg, "nope"));
	ck_assert(config_exporters_equal(cfg, cfg));
	config_free(cfg);

	errors = load_errors("[exporter a]\n"		/* 1 */
	    "type = jsonl\n"				/* 2 */
	    "path = a.jsonl\n"				/* 3 */
	    "url = http://x/\n"				/* 4 */
	    "batch = -1\n"				/* 5 */
	    "path = b\n"				/* 6 */
	    "[exporter b]\n"				/* 7 */
	    "type = fax\n"				/* 8 */
	    "[exporter c]\n"				/* 9 */
	    "path = x\n"				/* 10 */
	    "[exporter a]\n"				/* 11 */
	    "[exporter]\n"				/* 12 */
	    "[exporter d]\n"				/* 13 */
	    "type = http\n"				/* 14 */
	    "retry_initial_ms = 500\n"			/* 15 */
	    "retry_max_ms = 100\n"			/* 16 */
	    "[exporter e\"]\n");			/* 17 */
	/* In the file's order, though each exporter's own keys are
	 * checked after the whole file is read. */
	ck_assert_str_eq(errors,
	    "@:4: [exporter a] url: unknown key\n"
	    "@:5: [exporter a] batch: \"-1\" is out of range 0..10000\n"
	    "@:6: [exporter a] path: duplicate key (first set on line 3)\n"
	    "@:8: [exporter b] type: \"fax\" is not a type (one of jsonl, "
	    "csv, ledger, beancount, http, exec, plugin)\n"
	    "@:9: [exporter c] type: missing (one of jsonl, csv, ledger, "
	    "beancount, http, exec, plugin)\n"
	    "@:11: [exporter a]: duplicate exporter name\n"
	    "@:12: [exporter]: an exporter needs a name: [exporter NAME]\n"
	    "@:13: [exporter d] url: missing (type http needs it)\n"
	    "@:16: [exporter d] retry_max_ms: 100 is less than "
	    "retry_initial_ms (500)\n"
	    "@:17: [exporter e\"]: the exporter's name must be printable "
	    "ASCII without '\"' or '\\'");
	free(errors);
}
END_TEST

START_TEST(test_engine_start_refuses_bad_plugin)
{
	struct config *cfg;
	struct export_engine *eng = NULL;
	char *so = built("tests/data/rs-bad-abi-exporter.so");
	char *text, *errors = NULL, *why = NULL, *want;

	text = xasprintf("[store]\npath = %s\n[exporter old]\ntype = plugin\n"
	    "path = %s\n", db, so);
	cfg = load(text, &errors);
	ck_assert_msg(cfg != NULL, "errors: %s", errors);
	ck_assert_int_eq(export_check_config(cfg, &why), RS_ERR_CONFIG);
	/* A config error: the file, the line of the plugin's path. */
	want = xasprintf("%s/t.conf:5: [exporter old] path: plugin ", dir);
	ck_assert_msg(strncmp(why, want, strlen(want)) == 0 &&
	    strstr(why, "exporter ABI version 3, but this refundsync "
	    "supports version 2") != NULL && strchr(why, '\n') == NULL,
	    "why: %s", why);
	free(why);
	free(want);
	why = NULL;
	ck_assert_int_eq(export_engine_start(cfg, &eng, &why), RS_ERR_CONFIG);
	ck_assert_ptr_null(eng);
	ck_assert_ptr_nonnull(strstr(why, "ABI version 3"));
	free(why);
	config_free(cfg);
	free(text);
	free(so);
}
END_TEST

START_TEST(test_engine_start_jsonl)
{
	struct config *cfg;
	struct export_engine *eng = NULL;
	char *text, *errors = NULL, *why = NULL, *file, *data = NULL;
	int64_t deadline;
	size_t len = 0, lines, i;

	put_many(1, 5);
	text = xasprintf("[store]\npath = %s\n[exporter j]\ntype = jsonl\n"
	    "path = j.jsonl\nbatch = 2\npoll_ms = 10\n", db);
	cfg = load(text, &errors);
	ck_assert_msg(cfg != NULL, "errors: %s", errors);
	ck_assert_int_eq(export_check_config(cfg, &why), RS_OK);
	ck_assert_msg(export_engine_start(cfg, &eng, &why) == RS_OK, "%s",
	    why != NULL ? why : "?");
	file = xasprintf("%s/j.jsonl", dir);
	deadline = clock_mono_ms() + 20000;
	for (;;) {
		struct store_export e = state("j");
		bool done = e.position == 5;

		store_export_cleanup(&e);
		if (done || clock_mono_ms() > deadline)
			break;
		tu_sleep_ms(10);
	}
	export_engine_stop(eng);
	data = tu_read_file(file, &len);
	ck_assert_ptr_nonnull(data);
	for (i = 0, lines = 0; i < len; i++)
		if (data[i] == '\n')
			lines++;
	ck_assert_uint_eq(lines, 5);
	ck_assert_msg(strncmp(data, "{\"seq\":1,\"idempotency_key\":\"j:r1:1\"",
	    35) == 0, "jsonl: %.200s", data);
	free(data);

	/* A crash after the file's fsync but before the position moved:
	 * the restart fast-forwards and writes nothing twice. */
	sql_exec("UPDATE exporter_positions SET position = 2 WHERE"
	    " exporter = 'j'");
	put_many(6, 2);
	eng = NULL;
	ck_assert_int_eq(export_engine_start(cfg, &eng, &why), RS_OK);
	deadline = clock_mono_ms() + 20000;
	for (;;) {
		struct store_export e = state("j");
		bool done = e.position == 7;

		store_export_cleanup(&e);
		if (done || clock_mono_ms() > deadline)
			break;
		tu_sleep_ms(10);
	}
	export_engine_stop(eng);
	data = tu_read_file(file, &len);
	for (i = 0, lines = 0; i < len; i++)
		if (data[i] == '\n')
			lines++;
	ck_assert_uint_eq(lines, 7);
	for (i = 1; i <= 7; i++) {
		char needle[32];

		snprintf(needle, sizeof(needle), "{\"seq\":%zu,", i);
		ck_assert_msg(strstr(data, needle) != NULL, "seq %zu", i);
	}
	free(data);
	free(file);
	config_free(cfg);
	free(text);
}
END_TEST

/* ---- the commands -------------------------------------------------------- */

/* Run a command into strings. */
#define CAPTURE(call, out, err) do {					\
	size_t olen_ = 0, elen_ = 0;					\
	FILE *of_ = open_memstream(&(out), &olen_);			\
	FILE *ef_ = open_memstream(&(err), &elen_);			\
	rc_ = call(of_, ef_);						\
	fclose(of_);							\
	fclose(ef_);							\
} while (0)

static struct config *cmd_cfg;
static const char *cmd_name;
static int64_t cmd_from;
static bool cmd_json;

static enum rs_status
c_status(FILE *o, FILE *e)
{
	return export_cmd_status(cmd_cfg, st, cmd_json, o, e);
}

static enum rs_status
c_dead(FILE *o, FILE *e)
{
	return export_cmd_dead(cmd_cfg, st, cmd_name, cmd_json, o, e);
}

static enum rs_status
c_retry(FILE *o, FILE *e)
{
	return export_cmd_retry_dead(cmd_cfg, st, cmd_name, cmd_json, o, e);
}

/* `export retry-dead [--exporter name] --json` (name may be NULL): the
 * number it says it queued. */
static int
retry_dead(const char *name)
{
	char *out = NULL, *err = NULL;
	enum rs_status rc_;
	cJSON *doc;
	int n;

	cmd_name = name;
	cmd_json = true;
	CAPTURE(c_retry, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	doc = cJSON_Parse(out);
	ck_assert_msg(doc != NULL, "retry-dead: %s", out);
	n = cJSON_GetObjectItem(doc, "queued")->valueint;
	cJSON_Delete(doc);
	free(out);
	free(err);
	return n;
}

static enum rs_status
c_replay(FILE *o, FILE *e)
{
	return export_cmd_replay(cmd_cfg, st, cmd_name, cmd_from, cmd_json,
	    o, e);
}

/* What replay says it does depends on the type: http re-sends. */
START_TEST(test_replay_says_what_is_sent)
{
	enum rs_status rc_;
	char *out = NULL, *err = NULL, *errors = NULL, *text;

	text = xasprintf("[store]\npath = %s\n[exporter web]\ntype = http\n"
	    "url = http://127.0.0.1:1/\n[exporter j]\ntype = jsonl\n"
	    "path = j.jsonl\n", db);
	cmd_cfg = load(text, &errors);
	ck_assert_msg(cmd_cfg != NULL, "errors: %s", errors);
	put_many(1, 2);
	cmd_json = false;
	cmd_from = 1;
	cmd_name = "web";
	CAPTURE(c_replay, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	ck_assert_str_eq(out, "web: replaying from seq 1 (it was done up to "
	    "0); every record from there on is sent again, with its original "
	    "idempotency key\n");
	free(out);
	free(err);
	cmd_name = "j";
	CAPTURE(c_replay, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	ck_assert_str_eq(out, "j: replaying from seq 1 (it was done up to "
	    "0); records up to the last one in its file are skipped, even "
	    "one removed from it\n");
	free(out);
	free(err);
	cmd_name = NULL;
	config_free(cmd_cfg);
	cmd_cfg = NULL;
	free(text);
	free(errors);
}
END_TEST

/* An exporter that cannot open: the text status says why it is behind. */
START_TEST(test_status_says_why_stuck)
{
	struct export_worker *w;
	enum rs_status rc_;
	char *out = NULL, *err = NULL, *errors = NULL, *text;
	int64_t next;

	text = xasprintf("[store]\npath = %s\n[exporter fake0]\n"
	    "type = plugin\npath = /x.so\n", db);
	cmd_cfg = load(text, &errors);
	ck_assert_msg(cmd_cfg != NULL, "errors: %s", errors);
	put_many(1, 2);
	fakes[0].open_fails = 1;
	w = worker("fake0", 10);
	ck_assert_int_eq(export_worker_step(w, T0, &next), EXPORT_STEP_WAIT);
	cmd_json = false;
	CAPTURE(c_status, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	ck_assert_msg(strstr(out, "behind\n") != NULL && strstr(out,
	    "last error: cannot open the exporter: cannot reach the "
	    "target\n") != NULL, "status: %s", out);
	free(out);
	free(err);
	/* Once it delivers, the old error is history. */
	ck_assert_int_eq(run(w, next + 1000, &next), EXPORT_STEP_IDLE);
	CAPTURE(c_status, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	ck_assert_msg(strstr(out, " ok\n") != NULL &&
	    strstr(out, "last error") == NULL, "status: %s", out);
	free(out);
	free(err);
	export_worker_free(w);
	config_free(cmd_cfg);
	cmd_cfg = NULL;
	free(text);
	free(errors);
}
END_TEST

START_TEST(test_commands)
{
	struct export_worker *w;
	enum rs_status rc_;
	char *out = NULL, *err = NULL, *errors = NULL, *text;
	cJSON *doc, *arr, *o;
	int64_t next;

	text = xasprintf("[store]\npath = %s\n[exporter fake0]\n"
	    "type = plugin\npath = /x.so\n[exporter fake1]\ntype = plugin\n"
	    "path = /y.so\n", db);
	cmd_cfg = load(text, &errors);
	ck_assert_msg(cmd_cfg != NULL, "errors: %s", errors);
	put_many(1, 4);
	fakes[0].mode = FAKE_PERMANENT;
	fakes[0].fail_seq = 2;
	w = worker("fake0", 10);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	put_many(5, 1);		/* lag 1 */

	cmd_json = true;
	CAPTURE(c_status, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	doc = cJSON_Parse(out);
	ck_assert_msg(doc != NULL, "status: %s", out);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "last_change")->valueint,
	    5);
	arr = cJSON_GetObjectItem(doc, "exporters");
	ck_assert_int_eq(cJSON_GetArraySize(arr), 2);
	o = cJSON_GetArrayItem(arr, 0);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "exporter")->valuestring,
	    "fake0");
	ck_assert_str_eq(cJSON_GetObjectItem(o, "type")->valuestring,
	    "plugin");
	ck_assert_int_eq(cJSON_GetObjectItem(o, "position")->valueint, 4);
	ck_assert_int_eq(cJSON_GetObjectItem(o, "lag")->valueint, 1);
	ck_assert_int_eq(cJSON_GetObjectItem(o, "delivered")->valueint, 3);
	ck_assert_int_eq(cJSON_GetObjectItem(o, "dead_letters")->valueint,
	    1);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "state")->valuestring,
	    "behind");
	o = cJSON_GetArrayItem(arr, 1);
	ck_assert_str_eq(cJSON_GetObjectItem(o, "exporter")->valuestring,
	    "fake1");
	ck_assert_str_eq(cJSON_GetObjectItem(o, "state")->valuestring,
	    "never ran");
	cJSON_Delete(doc);
	free(out);
	free(err);

	cmd_json = false;
	CAPTURE(c_status, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	ck_assert_msg(strstr(out, "EXPORTER") == out &&
	    strstr(out, "\nfake0 ") != NULL && strstr(out, "behind") != NULL,
	    "status: %s", out);
	free(out);
	free(err);

	/* dead: one JSON object per line. */
	cmd_json = true;
	cmd_name = NULL;
	CAPTURE(c_dead, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
	doc = cJSON_Parse(out);
	ck_assert_ptr_nonnull(doc);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "seq")->valueint, 2);
	ck_assert_str_eq(cJSON_GetObjectItem(doc,
	    "idempotency_key")->valuestring, "fake0:r2:1");
	ck_assert_str_eq(cJSON_GetObjectItem(doc, "revision")->valuestring,
	    "1");
	ck_assert_str_eq(cJSON_GetObjectItem(doc,
	    "last_response")->valuestring, "HTTP 400: {\"error\":\"bad\"}");
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(doc, "queued")));
	cJSON_Delete(doc);
	free(out);
	free(err);

	/* dead as text: the reason sits under its heading, after the
	 * whole DEAD SINCE time (2026-01-02T03:04:05.678Z, 24 bytes). */
	cmd_json = false;
	CAPTURE(c_dead, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	{
		const char *row = strchr(out, '\n'), *z, *h;

		ck_assert_ptr_nonnull(row);
		row++;
		h = strstr(out, "REASON");
		z = strstr(row, "Z  ");
		ck_assert_msg(h != NULL && z != NULL && h - out ==
		    z + 3 - row, "dead:\n%s", out);
	}
	free(out);
	free(err);
	cmd_json = true;

	/* An exporter that is not configured is a usage error. */
	cmd_name = "nope";
	CAPTURE(c_dead, out, err);
	ck_assert_int_eq(rc_, RS_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "no [exporter nope]"));
	free(out);
	free(err);

	/* A dead letter of a section no longer in the config. */
	sql_exec("INSERT INTO exporter_dead_letters (exporter, seq,"
	    " refund_id, revision, idempotency_key, reason, attempts,"
	    " dead_at) VALUES ('gone', 1, 'r1', 1, 'gone:r1:1', 'x', 1,"
	    " '2026-01-01T00:00:00.000Z')");
	ck_assert_int_eq(retry_dead("fake0"), 1);
	/* Without --exporter: the configured exporters' only, and fake0's
	 * is queued already; nothing would ever deliver gone's. */
	ck_assert_int_eq(retry_dead(NULL), 0);
	ck_assert_int_eq(sql_int("SELECT queued FROM exporter_dead_letters"
	    " WHERE exporter = 'gone'"), 0);
	sql_exec("DELETE FROM exporter_dead_letters WHERE exporter = 'gone'");
	cmd_name = "fake0";

	cmd_from = 3;
	CAPTURE(c_replay, out, err);
	ck_assert_int_eq(rc_, RS_OK);
	doc = cJSON_Parse(out);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "from")->valueint, 3);
	ck_assert_int_eq(cJSON_GetObjectItem(doc,
	    "previous_position")->valueint, 4);
	cJSON_Delete(doc);
	free(out);
	free(err);

	/* The worker follows: the position is 2 now, so the queued dead
	 * letter 2 goes first, alone, then 3..5 again. */
	fakes[0].mode = FAKE_OK;
	ck_assert_int_eq(run(w, T0 + 1, &next), EXPORT_STEP_IDLE);
	ck_assert_uint_eq(fakes[0].n, 7);
	ck_assert_int_eq(fakes[0].seqs[3], 2);
	ck_assert_int_eq(fakes[0].seqs[4], 3);
	ck_assert_int_eq(fakes[0].seqs[6], 5);
	ck_assert_str_eq(fakes[0].keys[4], fakes[0].keys[1]);
	{
		struct store_export e = state("fake0");

		ck_assert_int_eq(e.position, 5);
		ck_assert_int_eq(e.dead, 0);
		ck_assert_int_eq(e.queued, 0);
		store_export_cleanup(&e);
	}
	export_worker_free(w);
	config_free(cmd_cfg);
	cmd_cfg = NULL;
	free(text);
}
END_TEST

/* ---- a queued record older than what a file holds ----------------------- */

/* A worker "books" of a real file exporter of type writing to file. */
static struct export_worker *
file_worker(const struct rs_exporter_ops *ops, const char *type,
    const char *file)
{
	struct rs_export_kv kv[2];
	struct export_spec spec;
	struct export_worker *w = NULL;
	char *why = NULL;

	kv[0].key = "type";
	kv[0].value = type;
	kv[1].key = "path";
	kv[1].value = file;
	export_spec_init(&spec, "books", ops);
	spec.kv = kv;
	spec.nkv = 2;
	spec.batch = 10;
	spec.retry_initial_ms = 100;
	spec.retry_max_ms = 1000;
	spec.retry_horizon_s = 60;
	spec.poll_ms = 50;
	ck_assert_msg(export_worker_new(db, 5000, &spec, &w, &why) == RS_OK,
	    "worker: %s", why != NULL ? why : "?");
	return w;
}

/*
 * Take a record out of file by hand: from the start of the line holding
 * first to the end of the first end after it.  Returns the file as it
 * is now and sets *removed (caller frees both).
 */
static char *
cut_record(const char *file, const char *first, const char *end,
    char **removed)
{
	char *text = tu_read_file(file, NULL), *a, *b;

	ck_assert_ptr_nonnull(text);
	a = strstr(text, first);
	ck_assert_msg(a != NULL, "no %s in %s", first, text);
	while (a > text && a[-1] != '\n')
		a--;
	b = strstr(a, end);
	ck_assert_ptr_nonnull(b);
	b += strlen(end);
	*removed = xstrndup(a, (size_t)(b - a));
	memmove(a, b, strlen(b) + 1);
	ck_assert(tu_write_file(file, text, false));
	return text;
}

static void
file_is(const char *file, const char *want)
{
	char *got = tu_read_file(file, NULL);

	ck_assert_ptr_nonnull(got);
	ck_assert_msg(strcmp(got, want) == 0, "%s:\n%.1500s\n--- want\n"
	    "%.1500s", file, got, want);
	free(got);
}

/* Make seq (refund r<seq>, revision 1) a dead letter of books, queued as
 * `export retry-dead` does. */
static void
dead_and_queued(int64_t seq)
{
	struct store_dead_letter dl;
	struct store_export e = state("books");
	char id[16], key[32];
	int64_t n = 0;

	snprintf(id, sizeof(id), "r%lld", (long long)seq);
	snprintf(key, sizeof(key), "books:r%lld:1", (long long)seq);
	memset(&dl, 0, sizeof(dl));
	dl.seq = seq;
	dl.refund_id = id;
	dl.has_revision = true;
	dl.revision = 1;
	dl.idempotency_key = key;
	dl.reason = "permanent failure (attempt 1)";
	dl.attempts = 1;
	ck_assert_int_eq(store_export_dead(st, "books", e.epoch, &dl, -1),
	    RS_OK);
	store_export_cleanup(&e);
	ck_assert_int_eq(store_export_retry_dead(st, "books", &n), RS_OK);
	ck_assert_int_eq(n, 1);
}

/* The same, as reconcile re-queues a posting missing from the file. */
static void
requeued_by_reconcile(int64_t seq)
{
	struct store_dead_letter dl;
	char id[16], key[32];

	snprintf(id, sizeof(id), "r%lld", (long long)seq);
	snprintf(key, sizeof(key), "books:r%lld:1", (long long)seq);
	memset(&dl, 0, sizeof(dl));
	dl.seq = seq;
	dl.refund_id = id;
	dl.has_revision = true;
	dl.revision = 1;
	dl.idempotency_key = key;
	dl.reason = "missing from the file (reconcile)";
	ck_assert_int_eq(store_export_requeue(st, "books", &dl, NULL), RS_OK);
}

static void
books_clean(int64_t position, int64_t delivered)
{
	struct store_export e = state("books");
	char *d = dead_of("books");

	ck_assert_str_eq(d, "");
	ck_assert_int_eq(e.position, position);
	ck_assert_int_eq(e.dead, 0);
	ck_assert_int_eq(e.queued, 0);
	ck_assert_int_eq(sql_int("SELECT count(*) FROM exporter_deliveries"
	    " WHERE exporter = 'books'"), delivered);
	store_export_cleanup(&e);
	free(d);
}

/* A ledger file that lost a transaction by hand takes it back. */
START_TEST(test_requeued_into_ledger)
{
	struct export_worker *w;
	char *file = xasprintf("%s/books.journal", dir), *before, *block;
	char *want, *want2;
	int64_t next;

	put_many(1, 5);
	w = file_worker(&exporter_ledger_ops, "ledger", file);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	books_clean(5, 5);
	export_worker_free(w);

	/* retry-dead: one step writes it, at the end, and the dead letter
	 * is gone. */
	before = cut_record(file, "* Wix refund r3\n", "\n; rs-seq: 3\n",
	    &block);
	ck_assert_ptr_null(strstr(before, "r3"));
	dead_and_queued(3);
	w = file_worker(&exporter_ledger_ops, "ledger", file);
	ck_assert_int_eq(export_worker_step(w, T0 + 10, &next),
	    EXPORT_STEP_PROGRESS);
	want = xasprintf("%s\n%s; rs-seq: 5\n", before, block);
	file_is(file, want);
	books_clean(5, 5);
	ck_assert_int_eq(sql_int("SELECT count(*) FROM exporter_deliveries"
	    " WHERE exporter = 'books' AND seq = 3"), 1);
	ck_assert_int_eq(run(w, T0 + 20, &next), EXPORT_STEP_IDLE);
	file_is(file, want);
	export_worker_free(w);
	free(block);
	free(before);

	/* reconcile's re-queue of another one, removed by hand too. */
	before = cut_record(file, "* Wix refund r2\n", "\n; rs-seq: 2\n",
	    &block);
	requeued_by_reconcile(2);
	w = file_worker(&exporter_ledger_ops, "ledger", file);
	ck_assert_int_eq(export_worker_step(w, T0 + 30, &next),
	    EXPORT_STEP_PROGRESS);
	want2 = xasprintf("%s\n%s; rs-seq: 5\n", before, block);
	file_is(file, want2);
	books_clean(5, 5);

	/* One the file holds, re-queued: delivered, nothing written. */
	requeued_by_reconcile(3);
	ck_assert_int_eq(run(w, T0 + 40, &next), EXPORT_STEP_IDLE);
	file_is(file, want2);
	books_clean(5, 5);

	/* New records follow as usual. */
	put_many(6, 1);
	ck_assert_int_eq(run(w, T0 + 50, &next), EXPORT_STEP_IDLE);
	books_clean(6, 6);
	export_worker_free(w);
	free(want2);
	free(want);
	free(block);
	free(before);
	free(file);
}
END_TEST

/* ---- what the journals hold: the current SUCCEEDED versions ------------ */

/* Run a tool from /usr/bin with args; assert it exits 0; its stdout
 * (caller frees). */
static char *
tool_out(const char *const *args)
{
	char *argv[12], *out = NULL, *err = NULL;
	size_t i;
	int rc;

	argv[0] = xasprintf("/usr/bin/%s", args[0]);
	ck_assert_msg(access(argv[0], X_OK) == 0, "%s is not installed: run "
	    "scripts/deps.sh test (Debian packages hledger and beancount)",
	    argv[0]);
	for (i = 1; i < 11 && args[i] != NULL; i++)
		argv[i] = xstrdup(args[i]);
	argv[i] = NULL;
	rc = tu_run(argv, 60000, &out, &err);
	ck_assert_msg(rc == 0, "%s exited %d:\n%s\n%s", args[0], rc,
	    out != NULL ? out : "", err != NULL ? err : "");
	for (i = 0; argv[i] != NULL; i++)
		free(argv[i]);
	free(err);
	return out != NULL ? out : xstrdup("");
}

/*
 * The audit's case, through the store's real change log: r-b2 posted at
 * 7.00, a later SUCCEEDED revision at 9.00, then REVERSED; r-f posted
 * without fees, a later revision with a returned fee, then REVERSED; r-c
 * posted at 5.00, then 6.50 with a fee, then the same again.  The
 * journal must end holding exactly r-c's current version.
 */
static void
put_revised(void)
{
	put_refund("r-b2", "SUCCEEDED", 1, "7.00", 700, NULL);
	put_refund("r-b2", "SUCCEEDED", 2, "9.00", 900, NULL);
	put_refund("r-b2", "REVERSED", 3, "9.00", 900, NULL);
	put_refund("r-f", "SUCCEEDED", 1, "10.00", 1000, NULL);
	put_refund("r-f", "SUCCEEDED", 2, "10.00", 1000, "0.30");
	put_refund("r-f", "REVERSED", 3, "10.00", 1000, "0.30");
	put_refund("r-c", "SUCCEEDED", 1, "5.00", 500, NULL);
	put_refund("r-c", "SUCCEEDED", 2, "6.50", 650, "0.25");
	put_refund("r-c", "SUCCEEDED", 3, "6.50", 650, "0.25");
}

/*
 * Append the exact text of one transaction of put_revised() in the
 * ledger or beancount syntax; lines: "Account", "amount" pairs,
 * NULL-ended.
 */
static void
want_txn(struct buf *b, bool bean, int64_t seq, const char *id,
    int64_t rev, const char *kind, const char *status,
    const char *const *lines)
{
	const char *what = strcmp(kind, "reverse") == 0 ? " reversed" :
	    strcmp(kind, "adjust") == 0 ? " adjusted" : "";
	const char *m = bean ? "  " : "    ; ", *q = bean ? "\"" : "";
	char key[64];

	if (strcmp(kind, "post") == 0)
		snprintf(key, sizeof(key), "books:%s:%lld", id,
		    (long long)rev);
	else
		snprintf(key, sizeof(key), "books:%s:%lld:%s", id,
		    (long long)rev, kind);
	(void)buf_appends(b, "\n");
	if (seq == 1)
		(void)buf_appends(b, bean ? "1970-01-01 commodity USD\n" :
		    "commodity USD\n");
	if (bean)
		(void)buf_printf(b, "2025-08-09 * \"Wix\" \"Refund %s%s\"\n",
		    id, what);
	else
		(void)buf_printf(b, "2025-08-09 * Wix refund %s%s\n", id,
		    what);
	(void)buf_printf(b, "%srs-seq: %lld\n", m, (long long)seq);
	(void)buf_printf(b, "%srs-key: %s%s%s\n", m, q, key, q);
	(void)buf_printf(b, "%srs-posting: %s%s%s\n", m, q, kind, q);
	(void)buf_printf(b, "%srs-refund-id: %s%s%s\n", m, q, id, q);
	(void)buf_printf(b, "%srs-charge-id: %sch-%s%s\n", m, q, id, q);
	(void)buf_printf(b, "%srs-revision: %lld\n", m, (long long)rev);
	(void)buf_printf(b, "%srs-instance-id: %sinst-1%s\n", m, q, q);
	(void)buf_printf(b, "%srs-status: %s%s%s\n", m, q, status, q);
	for (; lines[0] != NULL; lines += 2)
		(void)buf_printf(b, "%s%-40s  %14s USD\n", bean ? "  " : "    ",
		    lines[0], lines[1]);
	ck_assert_int_eq(buf_printf(b, "; rs-seq: %lld\n", (long long)seq),
	    RS_OK);
}

#define RF	"Expenses:Refunds"
#define CL	"Assets:Wix:Clearing"
#define AF	"Income:Wix:Fees:Returned:Application"

START_TEST(test_journal_holds_current_succeeded)
{
	const bool bean = _i == 1;
	struct export_worker *w;
	struct buf b;
	char *file = xasprintf("%s/books.%s", dir, bean ? "beancount" :
	    "journal");
	char *got, *want;
	int64_t next;

	put_revised();
	w = file_worker(bean ? &exporter_beancount_ops : &exporter_ledger_ops,
	    bean ? "beancount" : "ledger", file);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	books_clean(9, 9);
	export_worker_free(w);

	buf_init(&b, 1 << 20);
	(void)buf_printf(&b, "; refundsync %s journal of exporter books.\n"
	    "; Each transaction is one change-log record and ends with its "
	    "\"; rs-seq: N\" line.\n"
	    "; refundsync appends to this file: do not edit it while "
	    "refundsync runs.\n", bean ? "beancount" : "ledger");
	(void)buf_printf(&b, "%s" RF "\n%s" CL "\n%s" AF "\n"
	    "%sIncome:Wix:Fees:Returned:Processing\n; rs-seq: 0\n",
	    bean ? "1970-01-01 open " : "account ",
	    bean ? "1970-01-01 open " : "account ",
	    bean ? "1970-01-01 open " : "account ",
	    bean ? "1970-01-01 open " : "account ");
	/* r-b2: 7.00, then 9.00 (the 2.00 more), then reversed: all 9.00
	 * goes, not what the old code took (9.00 of a 7.00 posting). */
	want_txn(&b, bean, 1, "r-b2", 1, "post", "SUCCEEDED",
	    (const char *[]){ RF, "7.00", CL, "-7.00", NULL });
	want_txn(&b, bean, 2, "r-b2", 2, "adjust", "SUCCEEDED",
	    (const char *[]){ RF, "2.00", CL, "-2.00", NULL });
	want_txn(&b, bean, 3, "r-b2", 3, "reverse", "REVERSED",
	    (const char *[]){ RF, "-9.00", CL, "9.00", NULL });
	/* r-f: a fee reported by a later revision is posted by it, so
	 * the reversal takes back a fee that was posted. */
	want_txn(&b, bean, 4, "r-f", 1, "post", "SUCCEEDED",
	    (const char *[]){ RF, "10.00", CL, "-10.00", NULL });
	want_txn(&b, bean, 5, "r-f", 2, "adjust", "SUCCEEDED",
	    (const char *[]){ RF, "0.00", AF, "-0.30", CL, "0.30", NULL });
	want_txn(&b, bean, 6, "r-f", 3, "reverse", "REVERSED",
	    (const char *[]){ RF, "-10.00", AF, "0.30", CL, "9.70", NULL });
	/* r-c: stays SUCCEEDED; the same amounts again post nothing. */
	want_txn(&b, bean, 7, "r-c", 1, "post", "SUCCEEDED",
	    (const char *[]){ RF, "5.00", CL, "-5.00", NULL });
	want_txn(&b, bean, 8, "r-c", 2, "adjust", "SUCCEEDED",
	    (const char *[]){ RF, "1.50", AF, "-0.25", CL, "-1.25", NULL });
	want = buf_detach(&b, NULL);
	file_is(file, want);
	free(want);

	/* The tools accept it, and the balances are exactly r-c's current
	 * version: the one refund whose current status is SUCCEEDED. */
	if (bean) {
		const char *check[] = { "bean-check", file, NULL };
		const char *q[] = { "bean-query", "-f", "csv", file,
		    "SELECT account, sum(position) AS balance GROUP BY account"
		    " ORDER BY account", NULL };

		char *r, *t;

		free(tool_out(check));
		got = tool_out(q);
		/* Python's csv module ends rows with CR LF. */
		for (r = t = got; *r != '\0'; r++)
			if (*r != '\r')
				*t++ = *r;
		*t = '\0';
		ck_assert_str_eq(got, "account,balance\n"
		    "Assets:Wix:Clearing                 ,-6.25 USD\n"
		    "Expenses:Refunds                    , 6.50 USD\n"
		    "Income:Wix:Fees:Returned:Application,-0.25 USD\n");
	} else {
		const char *check[] = { "hledger", "-f", file, "check",
		    "--strict", NULL };
		const char *q[] = { "hledger", "-f", file, "bal", "-N",
		    "-O", "csv", NULL };

		free(tool_out(check));
		got = tool_out(q);
		ck_assert_str_eq(got, "\"account\",\"balance\"\n"
		    "\"Assets:Wix:Clearing\",\"-6.25 USD\"\n"
		    "\"Expenses:Refunds\",\"6.50 USD\"\n"
		    "\"Income:Wix:Fees:Returned:Application\",\"-0.25 USD\"\n");
	}
	free(got);
	free(file);
}
END_TEST

#undef RF
#undef CL
#undef AF


/* A jsonl file is in seq order: the queued record is a dead letter
 * again, with a reason that says what to do. */
START_TEST(test_requeued_into_jsonl_refused)
{
	struct export_worker *w;
	struct store_export e;
	char *file = xasprintf("%s/books.jsonl", dir), *before, *line;
	char *d, *want;
	int64_t next;

	put_many(1, 5);
	w = file_worker(&exporter_jsonl_ops, "jsonl", file);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_IDLE);
	export_worker_free(w);
	before = cut_record(file, "{\"seq\":3,", "\n", &line);
	ck_assert_ptr_null(strstr(before, "\"r3\""));
	dead_and_queued(3);
	w = file_worker(&exporter_jsonl_ops, "jsonl", file);
	ck_assert_int_eq(export_worker_step(w, T0 + 10, &next),
	    EXPORT_STEP_PROGRESS);
	d = dead_of("books");
	want = xasprintf("3|books:r3:1|permanent failure (attempt 1)|cannot "
	    "write seq 3 out of order: %s is in seq order and already holds "
	    "records up to seq 5; move it away and run `refundsync export "
	    "replay --exporter books --from 3`|0\n", file);
	ck_assert_str_eq(d, want);
	free(d);
	file_is(file, before);
	e = state("books");
	ck_assert_int_eq(e.position, 5);
	ck_assert_int_eq(e.dead, 1);
	ck_assert_int_eq(e.queued, 0);
	store_export_cleanup(&e);

	/* It stays a dead letter; later records still flow. */
	put_many(6, 1);
	ck_assert_int_eq(run(w, T0 + 20, &next), EXPORT_STEP_IDLE);
	d = dead_of("books");
	ck_assert_str_eq(d, want);
	free(d);
	d = tu_read_file(file, NULL);
	ck_assert_ptr_nonnull(strstr(d, "{\"seq\":6,"));
	ck_assert_ptr_null(strstr(d, "{\"seq\":3,"));
	free(d);
	export_worker_free(w);
	free(want);
	free(line);
	free(before);
	free(file);
}
END_TEST

/* A csv file ahead of the store is refused and left as it is. */
START_TEST(test_csv_ahead_of_store_refused)
{
	static const char text[] = "seq,idempotency_key,refund_id,"
	    "instance_id,charge_id,revision,status,prev_status,posting,"
	    "currency,amount,amount_minor,exponent,returned_application_fee,"
	    "returned_processing_fee,created_date,updated_date,changed_at,"
	    "source\n"
	    "999,books:X:1,X,,,1,SUCCEEDED,,post,USD,1.00,100,2,,,,,,cli\n";
	struct export_worker *w;
	struct store_export e;
	char *file = xasprintf("%s/books.csv", dir), *got;
	int64_t next;

	put_many(1, 3);
	ck_assert(tu_write_file(file, text, false));
	w = file_worker(&exporter_csv_ops, "csv", file);
	ck_assert_int_eq(run(w, T0, &next), EXPORT_STEP_WAIT);
	file_is(file, text);
	e = state("books");
	ck_assert_int_eq(e.position, 0);
	store_export_cleanup(&e);
	ck_assert(unlink(file) == 0);
	ck_assert_int_eq(run(w, next, &next), EXPORT_STEP_IDLE);
	got = tu_read_file(file, NULL);
	ck_assert_ptr_nonnull(got);
	ck_assert_ptr_nonnull(strstr(got, "\n3,books:r3:1,r3,"));
	free(got);
	e = state("books");
	ck_assert_int_eq(e.position, 3);
	store_export_cleanup(&e);
	export_worker_free(w);
	free(file);
}
END_TEST

static Suite *
export_suite(void)
{
	Suite *s = suite_create("export");
	TCase *tc;

	tc = tcase_create("engine");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_idempotency_key);
	tcase_add_test(tc, test_keys_without_revision);
	tcase_add_test(tc, test_order_and_batches);
	tcase_add_test(tc, test_record_fields);
	tcase_add_test(tc, test_change_from_old_row);
	tcase_add_test(tc, test_position_survives_reopen);
	tcase_add_test(tc, test_retry_backoff_then_success);
	tcase_add_test(tc, test_permanent_to_dead_letter);
	tcase_add_test(tc, test_retry_horizon_to_dead_letter);
	tcase_add_test(tc, test_retry_state_survives_restart);
	tcase_add_test(tc, test_partial_and_bad_answers);
	tcase_add_test(tc, test_open_failure_backs_off);
	tcase_add_test(tc, test_retry_dead);
	tcase_add_test(tc, test_retry_dead_fails_again);
	tcase_add_test(tc, test_replay_from);
	tcase_add_test(tc, test_replay_with_recover_skips_what_target_holds);
	tcase_add_test(tc, test_replay_during_backoff);
	tcase_add_test(tc, test_recover_fast_forward);
	tcase_add_test(tc, test_recover_ahead_of_store_refused);
	tcase_add_test(tc, test_csv_ahead_of_store_refused);
	tcase_add_test(tc, test_failing_exporter_does_not_stop_another);
	tcase_add_test(tc, test_stop_between_records);
	tcase_add_test(tc, test_requeued_into_ledger);
	tcase_add_test(tc, test_requeued_into_jsonl_refused);
	tcase_add_loop_test(tc, test_journal_holds_current_succeeded, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("plugins");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_plugin_example_loads_and_delivers);
	tcase_add_test(tc, test_plugin_bad_abi_refused);
	tcase_add_test(tc, test_engine_start_refuses_bad_plugin);
	suite_add_tcase(s, tc);

	tc = tcase_create("config and commands");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_config_exporters);
	tcase_add_test(tc, test_engine_start_jsonl);
	tcase_add_test(tc, test_commands);
	tcase_add_test(tc, test_status_says_why_stuck);
	tcase_add_test(tc, test_replay_says_what_is_sent);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	log_init(0, false);
	xmalloc_init_json();
	sr = srunner_create(export_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? 1 : 0;
}
