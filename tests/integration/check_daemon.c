/*
 * check_daemon.c: the real refundsync binary, driven through its external
 * contract (SPEC §1-4): webhooks in over loopback, rows out of SQLite.
 *
 * Each test starts its own daemon in a temporary directory (testutil's
 * harness) with listeners on port 0, signs webhooks with a fresh key, and
 * reads the store through a separate connection.  Nothing here looks
 * inside the daemon: statuses, rows, metrics text, exit codes and log
 * lines are the whole interface.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <sqlite3.h>

#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST	"inst-daemon-test"

/* Assert that the first cell of a query is want (NULL: no row / NULL). */
#define ASSERT_SQL(d, want, ...) do {					\
	char *got_ = tu_sqlf((d), __VA_ARGS__);				\
	const char *want_ = (want);					\
	ck_assert_msg((want_ == NULL && got_ == NULL) ||		\
	    (want_ != NULL && got_ != NULL && strcmp(want_, got_) == 0),\
	    "query %s: got \"%s\", want \"%s\"", #__VA_ARGS__,		\
	    got_ != NULL ? got_ : "(null)",				\
	    want_ != NULL ? want_ : "(null)");				\
	free(got_);							\
} while (0)

#define ASSERT_SQL_INT(d, want, ...) do {				\
	int64_t got_ = tu_sql_int((d), INT64_MIN, __VA_ARGS__);	\
	ck_assert_msg(got_ == (int64_t)(want),				\
	    "query %s: got %lld, want %lld", #__VA_ARGS__,		\
	    (long long)got_, (long long)(want));			\
} while (0)

static struct tu_daemon *
start(const struct tu_conf *conf)
{
	struct tu_daemon *d = tu_daemon_start(conf, NULL);

	ck_assert_msg(d != NULL, "the daemon did not start");
	ck_assert_int_gt(d->port, 0);
	ck_assert_int_gt(d->admin_port, 0);
	return d;
}

/* A refund with everything set; the strings are static or the caller's. */
static struct tu_refund
refund(const char *id, const char *amount, const char *currency,
    const char *status, int64_t revision)
{
	struct tu_refund r;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-1";
	r.currency = currency;
	r.amount = amount;
	r.status = status;
	r.revision = revision;
	r.created_date = "2025-08-09T15:26:24.000Z";
	r.updated_date = "2025-08-09T15:26:25.000Z";
	return r;
}

/* Sign and post one refund event signed with key; returns the status. */
static int
post_refund_key(const struct tu_daemon *d, const char *key,
    const char *evid, enum tu_slug slug, enum tu_form form,
    const struct tu_refund *r)
{
	struct tu_event ev;
	char *tok;
	int st;

	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = slug;
	ev.form = form;
	ev.seq = -1;
	tok = tu_refund_webhook(key, &ev, r, INST);
	ck_assert_ptr_nonnull(tok);
	st = tu_daemon_post(d, tok, NULL);
	free(tok);
	return st;
}

static int
post_refund(const struct tu_daemon *d, const char *evid, enum tu_slug slug,
    const struct tu_refund *r)
{
	return post_refund_key(d, d->key.priv_pem, evid, slug,
	    TU_FORM_OBJECT, r);
}

static double
metric(const struct tu_daemon *d, const char *name, const char *label)
{
	const char *labels[2] = { label, NULL };
	char *text = tu_daemon_metrics(d);
	double v;

	v = tu_metric(text, name, labels);
	free(text);
	return v;
}

/* ---- create, update, stale, duplicate ------------------------------ */

START_TEST(test_lifecycle)
{
	struct tu_daemon *d = start(NULL);
	struct tu_refund r;
	struct tu_event ev;
	struct tu_http_resp resp;
	char *tok, *tok2, *body_before;

	/* Created: PENDING, revision 1. */
	r = refund("rf-life", "25.00", "USD", "PENDING", 1);
	ck_assert_int_eq(post_refund(d, "evt-1", TU_CREATED, &r), 200);
	ASSERT_SQL(d, "PENDING", "SELECT status FROM refunds WHERE id = "
	    "'rf-life'");
	ASSERT_SQL(d, "1|25.00|2500|USD|ch-1|" INST "|webhook",
	    "SELECT revision || '|' || amount || '|' || amount_minor || '|' "
	    "|| currency || '|' || charge_id || '|' || instance_id || '|' || "
	    "source FROM refunds WHERE id = 'rf-life'");
	ASSERT_SQL(d, "2025-08-09T15:26:24.000Z|2025-08-09T15:26:25.000Z",
	    "SELECT created_date || '|' || updated_date FROM refunds");
	ASSERT_SQL(d, "rf-life", "SELECT json_extract(body, '$.id') FROM "
	    "refunds");
	ASSERT_SQL_INT(d, 1, "SELECT stored_at IS NOT NULL AND stored_at "
	    "LIKE '20%%Z' FROM refunds");
	ASSERT_SQL(d, "applied|" TU_EVT_CREATED "|" INST "|rf-life",
	    "SELECT outcome || '|' || event_type || '|' || instance_id || '|' "
	    "|| entity_id FROM webhook_events WHERE event_id = 'evt-1'");
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM changes");

	/* Updated: SUCCEEDED, revision 2. */
	r = refund("rf-life", "25.00", "USD", "SUCCEEDED", 2);
	ck_assert_int_eq(post_refund(d, "evt-2", TU_UPDATED, &r), 200);
	ASSERT_SQL(d, "SUCCEEDED|2", "SELECT status || '|' || revision FROM "
	    "refunds WHERE id = 'rf-life'");
	ASSERT_SQL(d, "applied", "SELECT outcome FROM webhook_events WHERE "
	    "event_id = 'evt-2'");
	ASSERT_SQL_INT(d, 2, "SELECT count(*) FROM changes WHERE refund_id = "
	    "'rf-life'");
	ASSERT_SQL(d, "2|SUCCEEDED|PENDING", "SELECT revision || '|' || "
	    "status || '|' || prev_status FROM changes ORDER BY seq DESC "
	    "LIMIT 1");
	ASSERT_SQL_INT(d, 1, "SELECT prev_status IS NULL FROM changes ORDER "
	    "BY seq LIMIT 1");
	body_before = tu_sqlf(d, "SELECT body FROM refunds");
	ck_assert_ptr_nonnull(body_before);

	/* Stale: revision 1 again, as FAILED, under a new event id. */
	r = refund("rf-life", "25.00", "USD", "FAILED", 1);
	ck_assert_int_eq(post_refund(d, "evt-3", TU_UPDATED, &r), 200);
	ASSERT_SQL(d, "SUCCEEDED|2", "SELECT status || '|' || revision FROM "
	    "refunds WHERE id = 'rf-life'");
	ASSERT_SQL(d, "stale", "SELECT outcome FROM webhook_events WHERE "
	    "event_id = 'evt-3'");
	ASSERT_SQL(d, body_before, "SELECT body FROM refunds");
	ASSERT_SQL_INT(d, 2, "SELECT count(*) FROM changes");

	/*
	 * Duplicate: evt-2 again, byte for byte and then re-signed later
	 * with a changed body (a different status): the event id decides.
	 */
	memset(&ev, 0, sizeof(ev));
	ev.id = "evt-2";
	ev.slug = TU_UPDATED;
	ev.seq = -1;
	r = refund("rf-life", "25.00", "USD", "SUCCEEDED", 2);
	tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	r = refund("rf-life", "25.00", "USD", "REVERSED", 9);
	tok2 = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	ck_assert_int_eq(tu_daemon_post(d, tok, &resp), 200);
	tu_http_resp_cleanup(&resp);
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ck_assert_int_eq(tu_daemon_post(d, tok2, NULL), 200);
	ASSERT_SQL(d, "SUCCEEDED|2", "SELECT status || '|' || revision FROM "
	    "refunds WHERE id = 'rf-life'");
	ASSERT_SQL(d, body_before, "SELECT body FROM refunds");
	ASSERT_SQL_INT(d, 2, "SELECT count(*) FROM changes");
	ASSERT_SQL_INT(d, 3, "SELECT count(*) FROM webhook_events");
	ASSERT_SQL(d, "applied", "SELECT outcome FROM webhook_events WHERE "
	    "event_id = 'evt-2'");
	ASSERT_SQL(d, "applied,applied,stale", "SELECT group_concat(outcome) "
	    "FROM (SELECT outcome FROM webhook_events ORDER BY event_id)");
	ck_assert_int_eq((int)metric(d, "refundsync_events_total",
	    "outcome=\"applied\""), 2);
	ck_assert_int_eq((int)metric(d, "refundsync_events_total",
	    "outcome=\"stale\""), 1);
	ck_assert_int_eq((int)metric(d, "refundsync_events_total",
	    "outcome=\"duplicate\""), 3);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM refunds");

	free(tok);
	free(tok2);
	free(body_before);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

/* ---- concurrency --------------------------------------------------- */

/* Tokens posted by a pool of threads; each thread takes the next one. */
struct burst {
	const struct tu_daemon	*d;
	char			**toks;
	int			*status;
	size_t			 n;
	size_t			 next;
	pthread_mutex_t		 mtx;
};

static void *
burst_worker(void *arg)
{
	struct burst *b = arg;
	size_t i;

	for (;;) {
		pthread_mutex_lock(&b->mtx);
		i = b->next++;
		pthread_mutex_unlock(&b->mtx);
		if (i >= b->n)
			break;
		b->status[i] = tu_daemon_post(b->d, b->toks[i], NULL);
	}
	return NULL;
}

/* Post every token in b from nthreads threads.  Returns how many got 200. */
static size_t
run_burst(struct burst *b, int nthreads)
{
	pthread_t th[16];
	size_t i, ok = 0;
	int t;

	ck_assert_int_le(nthreads, 16);
	b->next = 0;
	pthread_mutex_init(&b->mtx, NULL);
	for (t = 0; t < nthreads; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, burst_worker, b),
		    0);
	for (t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
	pthread_mutex_destroy(&b->mtx);
	for (i = 0; i < b->n; i++)
		if (b->status[i] == 200)
			ok++;
	return ok;
}

static void
burst_free(struct burst *b)
{
	size_t i;

	for (i = 0; i < b->n; i++)
		free(b->toks[i]);
	free(b->toks);
	free(b->status);
}

static const char *const statuses[] = {
	"PENDING", "SUCCEEDED", "FAILED", "REVERSED"
};

START_TEST(test_out_of_order_burst)
{
	struct tu_daemon *d = start(NULL);
	struct burst b;
	struct tu_refund r;
	struct tu_event ev;
	char evid[32];
	size_t i, j;
	unsigned seed = 12345;
	char *tmp;

	memset(&b, 0, sizeof(b));
	b.d = d;
	b.n = 20;
	b.toks = xcalloc(b.n, sizeof(*b.toks));
	b.status = xcalloc(b.n, sizeof(*b.status));
	for (i = 0; i < b.n; i++) {
		r = refund("rf-burst", "7.50", "EUR", statuses[i % 4],
		    (int64_t)i + 1);
		memset(&ev, 0, sizeof(ev));
		snprintf(evid, sizeof(evid), "evt-burst-%zu", i + 1);
		ev.id = evid;
		ev.slug = i == 0 ? TU_CREATED : TU_UPDATED;
		ev.seq = -1;
		b.toks[i] = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	}
	/* A fixed shuffle, with revision 20 away from the end. */
	for (i = b.n - 1; i > 0; i--) {
		j = (size_t)rand_r(&seed) % (i + 1);
		tmp = b.toks[i];
		b.toks[i] = b.toks[j];
		b.toks[j] = tmp;
	}
	ck_assert_uint_eq(run_burst(&b, 4), 20);

	ASSERT_SQL(d, "20|REVERSED", "SELECT revision || '|' || status FROM "
	    "refunds WHERE id = 'rf-burst'");
	ASSERT_SQL_INT(d, 20, "SELECT count(*) FROM webhook_events WHERE "
	    "entity_id = 'rf-burst'");
	/* One change per applied event, none per stale one. */
	ASSERT_SQL_INT(d, tu_sql_int(d, -1, "SELECT count(*) FROM "
	    "webhook_events WHERE outcome = 'applied'"),
	    "SELECT count(*) FROM changes WHERE refund_id = 'rf-burst'");
	ASSERT_SQL_INT(d, 20, "SELECT count(*) FROM webhook_events WHERE "
	    "outcome IN ('applied', 'stale')");
	ASSERT_SQL_INT(d, 20, "SELECT max(revision) FROM changes");
	/* The change log only ever moves forward. */
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM changes a JOIN changes b "
	    "ON a.refund_id = b.refund_id AND a.seq < b.seq AND a.revision >= "
	    "b.revision");
	burst_free(&b);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_parallel_distinct)
{
	struct tu_daemon *d = start(NULL);
	struct burst b;
	struct tu_refund r;
	struct tu_event ev;
	char evid[32], rid[32], amount[32];
	int64_t want_sum = 0;
	size_t i;

	memset(&b, 0, sizeof(b));
	b.d = d;
	b.n = 200;
	b.toks = xcalloc(b.n, sizeof(*b.toks));
	b.status = xcalloc(b.n, sizeof(*b.status));
	for (i = 0; i < b.n; i++) {
		snprintf(evid, sizeof(evid), "evt-par-%03zu", i);
		snprintf(rid, sizeof(rid), "rf-par-%03zu", i);
		snprintf(amount, sizeof(amount), "%zu.%02zu", i + 1, i % 100);
		want_sum += (int64_t)(i + 1) * 100 + (int64_t)(i % 100);
		r = refund(rid, amount, "USD", "SUCCEEDED", 1);
		memset(&ev, 0, sizeof(ev));
		ev.id = evid;
		ev.slug = TU_CREATED;
		ev.seq = -1;
		b.toks[i] = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	}
	ck_assert_uint_eq(run_burst(&b, 8), 200);
	ASSERT_SQL_INT(d, 200, "SELECT count(*) FROM refunds");
	ASSERT_SQL_INT(d, 200, "SELECT count(*) FROM webhook_events WHERE "
	    "outcome = 'applied'");
	ASSERT_SQL_INT(d, 200, "SELECT count(*) FROM changes");
	ASSERT_SQL_INT(d, want_sum, "SELECT sum(amount_minor) FROM refunds");
	ASSERT_SQL(d, "123.22", "SELECT amount FROM refunds WHERE id = "
	    "'rf-par-122'");
	/* Group commit: fewer or as many commits as events, all counted. */
	ck_assert(metric(d, "refundsync_commit_batch_size_sum", NULL) ==
	    200.0);
	ck_assert(metric(d, "refundsync_commit_batch_size_count", NULL) >=
	    1.0);
	ck_assert(metric(d, "refundsync_commit_batch_size_count", NULL) <=
	    200.0);
	burst_free(&b);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

/* ---- other event types --------------------------------------------- */

START_TEST(test_app_installed)
{
	static const struct tu_conf conf = {
		.tail = "[backfill]\non_install = no"
	};
	struct tu_daemon *d = start(&conf);
	char *tok;

	tok = tu_installed_webhook(d->key.priv_pem, "inst-new", "app-1");
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM instances");
	ASSERT_SQL_INT(d, 1, "SELECT installed_at IS NOT NULL FROM instances "
	    "WHERE instance_id = 'inst-new'");
	ASSERT_SQL(d, "applied|" TU_EVT_INSTALLED "|inst-new",
	    "SELECT outcome || '|' || event_type || '|' || instance_id FROM "
	    "webhook_events");

	/* Wix retries with the original token: a duplicate by its key. */
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM instances");
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM webhook_events");
	ck_assert_int_eq((int)metric(d, "refundsync_events_total",
	    "outcome=\"duplicate\""), 1);
	free(tok);

	/*
	 * A freshly signed AppInstalled for an installed instance changes
	 * nothing either.  Signed in the same second it is the same token;
	 * in another second it has its own key and is recorded as a
	 * duplicate: both are fine, nothing else is.
	 */
	tok = tu_installed_webhook(d->key.priv_pem, "inst-new", "app-1");
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM instances");
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM webhook_events WHERE "
	    "outcome = 'applied'");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM webhook_events WHERE "
	    "outcome NOT IN ('applied', 'duplicate')");
	ck_assert_int_eq((int)metric(d, "refundsync_events_total",
	    "outcome=\"duplicate\""), 2);
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM refunds");
	free(tok);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_unknown_event_type)
{
	struct tu_daemon *d = start(NULL);
	char *tok;

	tok = tu_webhook(d->key.priv_pem, "{\"id\":\"evt-prod\",\"entityFqdn\":"
	    "\"wix.stores.v1.product\",\"slug\":\"created\",\"entityId\":"
	    "\"p-1\",\"createdEvent\":{\"entity\":{\"id\":\"p-1\"}}}", INST,
	    "wix.stores.v1.product_created");
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL(d, "ignored|wix.stores.v1.product_created",
	    "SELECT outcome || '|' || event_type FROM webhook_events WHERE "
	    "event_id = 'evt-prod'");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM refunds");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM changes");
	ck_assert_int_eq((int)metric(d, "refundsync_events_total",
	    "outcome=\"ignored\""), 1);
	free(tok);
	tu_daemon_free(d);
}
END_TEST

/* ---- wire forms and money ------------------------------------------ */

START_TEST(test_wire_forms)
{
	struct tu_daemon *d = start(NULL);
	struct tu_refund r;
	char *tok;

	/* REST-reference names with JSON strings. */
	r = refund("rf-str", "3.10", "USD", "PENDING", 1);
	ck_assert_int_eq(post_refund_key(d, d->key.priv_pem, "evt-s1",
	    TU_CREATED, TU_FORM_STRING, &r), 200);
	ASSERT_SQL(d, "PENDING|310", "SELECT status || '|' || amount_minor "
	    "FROM refunds WHERE id = 'rf-str'");
	r = refund("rf-str", "3.10", "USD", "SUCCEEDED", 2);
	ck_assert_int_eq(post_refund_key(d, d->key.priv_pem, "evt-s2",
	    TU_UPDATED, TU_FORM_STRING, &r), 200);
	ASSERT_SQL(d, "SUCCEEDED|2", "SELECT status || '|' || revision FROM "
	    "refunds WHERE id = 'rf-str'");

	/* The SDK's object form, updated. */
	r = refund("rf-str", "3.10", "USD", "REVERSED", 3);
	ck_assert_int_eq(post_refund_key(d, d->key.priv_pem, "evt-s3",
	    TU_UPDATED, TU_FORM_OBJECT, &r), 200);
	ASSERT_SQL(d, "REVERSED|3", "SELECT status || '|' || revision FROM "
	    "refunds WHERE id = 'rf-str'");
	ASSERT_SQL_INT(d, 3, "SELECT count(*) FROM changes");

	/* Older payloads: "currency" instead of "currencyCode". */
	r = refund("rf-legacy", "4.00", NULL, "SUCCEEDED", 1);
	r.currency_legacy = "EUR";
	ck_assert_int_eq(post_refund(d, "evt-legacy", TU_CREATED, &r), 200);
	ASSERT_SQL(d, "EUR|400", "SELECT currency || '|' || amount_minor FROM "
	    "refunds WHERE id = 'rf-legacy'");

	/* Pretty-printed layer C with " : " and a modifiedFields sibling. */
	tok = tu_webhook(d->key.priv_pem,
	    "{\n  \"id\" : \"evt-pretty\", \n"
	    "  \"entityFqdn\" : \"wix.payments.refunds.v1.refund\", \n"
	    "  \"slug\" : \"updated\", \n"
	    "  \"entityId\" : \"rf-pretty\", \n"
	    "  \"eventTime\" : \"2025-08-09T15:26:27.272823Z\", \n"
	    "  \"triggeredByAnonymizeRequest\" : false, \n"
	    "  \"entityEventSequence\" : \"4\", \n"
	    "  \"updatedEvent\" : {\n"
	    "    \"currentEntity\" : {\"id\" : \"rf-pretty\", \"chargeId\" : "
	    "\"ch-9\", \"currencyCode\" : \"GBP\", \"amount\" : \"1.05\", "
	    "\"status\" : \"SUCCEEDED\", \"revision\" : \"4\", "
	    "\"full\" : false, \"statusInfo\" : {\"code\" : \"1013\"}}, \n"
	    "    \"modifiedFields\" : {\"status\" : \"PENDING\"}\n  }\n}\n",
	    INST, TU_EVT_UPDATED);
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL(d, "GBP|105|SUCCEEDED|4", "SELECT currency || '|' || "
	    "amount_minor || '|' || status || '|' || revision FROM refunds "
	    "WHERE id = 'rf-pretty'");
	free(tok);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_currencies)
{
	static const struct {
		const char	*cur;
		const char	*amount;
		const char	*minor;	/* NULL: not representable */
	} cases[] = {
		{ "USD", "12.95", "1295" },
		{ "USD", "10", "1000" },
		{ "USD", "0.01", "1" },
		{ "JPY", "1500", "1500" },
		{ "KRW", "25000", "25000" },
		{ "KWD", "12.345", "12345" },
		{ "BHD", "1.5", "1500" },
		{ "JOD", "0.001", "1" },
		{ "USD", "1.234", NULL },
		{ "JPY", "0.5", NULL },
		{ "KWD", "1.2345", NULL },
		{ "USD", "12345678.12345678", NULL },
	};
	struct tu_daemon *d = start(NULL);
	struct tu_refund r;
	char rid[32], evid[32];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(rid, sizeof(rid), "rf-cur-%zu", i);
		snprintf(evid, sizeof(evid), "evt-cur-%zu", i);
		r = refund(rid, cases[i].amount, cases[i].cur, "SUCCEEDED", 1);
		ck_assert_msg(post_refund(d, evid, TU_CREATED, &r) == 200,
		    "%s %s not answered 200", cases[i].amount, cases[i].cur);
		ASSERT_SQL(d, cases[i].amount, "SELECT amount FROM refunds "
		    "WHERE id = '%s'", rid);
		ASSERT_SQL(d, cases[i].cur, "SELECT currency FROM refunds "
		    "WHERE id = '%s'", rid);
		ASSERT_SQL(d, cases[i].minor, "SELECT amount_minor FROM "
		    "refunds WHERE id = '%s'", rid);
		ASSERT_SQL(d, cases[i].minor != NULL ? "integer" : "null",
		    "SELECT typeof(amount_minor) FROM refunds WHERE id = '%s'",
		    rid);
	}
	tu_daemon_free(d);
}
END_TEST

/* ---- HTTP surface -------------------------------------------------- */

START_TEST(test_probes_and_metrics)
{
	static const char *const families[] = {
		"refundsync_http_requests_total",
		"refundsync_verify_failures_total",
		"refundsync_events_total",
		"refundsync_commit_seconds_bucket",
		"refundsync_commit_seconds_sum",
		"refundsync_commit_seconds_count",
		"refundsync_commit_batch_size_bucket",
		"refundsync_commit_batch_size_count",
		"refundsync_store_ready",
	};
	static const char *const pub_ok[] = { "listener=\"public\"",
		"route=\"webhook\"", "code=\"200\"", NULL };
	static const char *const pub_401[] = { "listener=\"public\"",
		"code=\"401\"", NULL };
	static const char *const lim_total[] = {
		"limit=\"max_connections\"", NULL };
	static const char *const lim_ip[] = {
		"limit=\"max_connections_per_ip\"", NULL };
	/* Counters that have not moved are shown at 0. */
	static const struct {
		const char		*name;
		const char *const	*labels;
	} zero[] = {
		{ "refundsync_store_errors_total", NULL },
		{ "refundsync_batch_redos_total", NULL },
		{ "refundsync_decode_failures_total", NULL },
		{ "refundsync_http_connections_refused_total", lim_total },
		{ "refundsync_http_connections_refused_total", lim_ip },
	};
	struct tu_daemon *d = start(NULL);
	struct tu_http_resp resp;
	struct tu_refund r;
	char *text;
	size_t i;

	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", &resp), 200);
	tu_http_resp_cleanup(&resp);

	r = refund("rf-m", "1.00", "USD", "SUCCEEDED", 1);
	ck_assert_int_eq(post_refund(d, "evt-m1", TU_CREATED, &r), 200);
	ck_assert_int_eq(tu_daemon_post(d, "not.a.jwt", NULL), 401);

	ck_assert_int_eq(tu_http_get(d->admin_port, "/metrics", &resp), 200);
	text = resp.body;
	for (i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		ck_assert_msg(tu_metric(text, families[i], NULL) >= 0,
		    "metric %s missing", families[i]);
	ck_assert_ptr_nonnull(strstr(text,
	    "# TYPE refundsync_commit_seconds histogram"));
	ck_assert_ptr_nonnull(strstr(text,
	    "# TYPE refundsync_commit_batch_size histogram"));
	ck_assert(tu_metric(text, "refundsync_http_requests_total", pub_ok) ==
	    1.0);
	ck_assert(tu_metric(text, "refundsync_http_requests_total", pub_401) ==
	    1.0);
	ck_assert(tu_metric(text, "refundsync_verify_failures_total", NULL) ==
	    1.0);
	ck_assert(tu_metric(text, "refundsync_commit_seconds_count", NULL) >=
	    1.0);
	ck_assert(tu_metric(text, "refundsync_store_ready", NULL) == 1.0);
	for (i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
		ck_assert_msg(tu_metric(text, zero[i].name, zero[i].labels) ==
		    0.0, "counter %s{%s} is not shown at 0", zero[i].name,
		    zero[i].labels != NULL ? zero[i].labels[0] : "");
	tu_http_resp_cleanup(&resp);

	/* Operators' pages are not on the public listener. */
	ck_assert_int_eq(tu_http_get(d->port, "/metrics", NULL), 404);
	ck_assert_int_eq(tu_http_get(d->port, "/readyz", NULL), 404);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/webhooks", NULL), 404);
	tu_daemon_free(d);
}
END_TEST

/* ---- durability and lifecycle -------------------------------------- */

START_TEST(test_kill9_restart)
{
	struct tu_daemon *d = start(NULL);
	struct tu_refund r;
	char rid[32], evid[32];
	int i;

	for (i = 0; i < 5; i++) {
		snprintf(rid, sizeof(rid), "rf-k9-%d", i);
		snprintf(evid, sizeof(evid), "evt-k9-%d", i);
		r = refund(rid, "2.00", "USD", "SUCCEEDED", 1);
		ck_assert_int_eq(post_refund(d, evid, TU_CREATED, &r), 200);
	}
	/* Answered 200 means on disk: no clean shutdown needed. */
	tu_daemon_kill9(d);
	ASSERT_SQL_INT(d, 5, "SELECT count(*) FROM refunds");
	ck_assert_msg(tu_daemon_restart(d), "restart failed");
	ASSERT_SQL_INT(d, 5, "SELECT count(*) FROM refunds");
	ASSERT_SQL(d, "ok", "PRAGMA integrity_check");

	/* The dedupe memory survived too. */
	r = refund("rf-k9-0", "2.00", "USD", "SUCCEEDED", 1);
	ck_assert_int_eq(post_refund(d, "evt-k9-0", TU_CREATED, &r), 200);
	ASSERT_SQL_INT(d, 5, "SELECT count(*) FROM webhook_events");
	ASSERT_SQL_INT(d, 5, "SELECT count(*) FROM changes");
	r = refund("rf-k9-0", "2.00", "USD", "REVERSED", 2);
	ck_assert_int_eq(post_refund(d, "evt-k9-x", TU_UPDATED, &r), 200);
	ASSERT_SQL(d, "REVERSED", "SELECT status FROM refunds WHERE id = "
	    "'rf-k9-0'");
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

/*
 * A store locked by another process past busy_timeout: 503 with
 * Retry-After, nothing half-written, /readyz 503; once the lock goes, the
 * daemon recovers by itself (readiness first, then 200s) without a
 * restart.
 */
START_TEST(test_store_locked_503_and_recovery)
{
	struct tu_conf conf = { .store = "busy_timeout = 200\n" };
	struct tu_daemon *d = start(&conf);
	struct tu_http_resp resp;
	struct tu_refund r;
	sqlite3 *db;
	char *retry;
	int i, st = 0;

	r = refund("rf-lock-1", "5.00", "USD", "SUCCEEDED", 1);
	ck_assert_int_eq(post_refund(d, "evt-lock-1", TU_CREATED, &r), 200);

	/* Another process holds the write lock. */
	ck_assert_int_eq(sqlite3_open(d->db_path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL,
	    NULL), SQLITE_OK);

	r = refund("rf-lock-2", "6.00", "USD", "SUCCEEDED", 1);
	memset(&resp, 0, sizeof(resp));
	{
		char *tok;
		struct tu_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.id = "evt-lock-2";
		ev.slug = TU_CREATED;
		ev.form = TU_FORM_OBJECT;
		ev.seq = -1;
		tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
		ck_assert_ptr_nonnull(tok);
		ck_assert_int_eq(tu_daemon_post(d, tok, &resp), 503);
		free(tok);
	}
	retry = tu_http_header(&resp, "Retry-After");
	ck_assert_ptr_nonnull(retry);
	ck_assert_str_eq(retry, "5");
	ck_assert(tu_is_error_json(resp.body));
	free(retry);
	tu_http_resp_cleanup(&resp);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);

	/* Release the lock: readiness comes back without traffic. */
	ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	for (i = 0; i < 50; i++) {
		if ((st = tu_http_get(d->admin_port, "/readyz", NULL)) == 200)
			break;
		tu_sleep_ms(100);
	}
	ck_assert_int_eq(st, 200);
	/* Nothing of the refused webhook was kept; Wix's retry lands it. */
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM refunds WHERE id = "
	    "'rf-lock-2'");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM webhook_events WHERE "
	    "event_id = 'evt-lock-2'");
	ck_assert_int_eq(post_refund(d, "evt-lock-2", TU_CREATED, &r), 200);
	ASSERT_SQL(d, "600", "SELECT amount_minor FROM refunds WHERE id = "
	    "'rf-lock-2'");
	ck_assert_int_ge(metric(d, "refundsync_store_errors_total", NULL), 1);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_sigterm_exit0)
{
	struct tu_daemon *d = start(NULL);
	struct tu_refund r;

	r = refund("rf-term", "5.00", "USD", "SUCCEEDED", 1);
	ck_assert_int_eq(post_refund(d, "evt-term", TU_CREATED, &r), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM refunds");
	/* Nothing listens any more. */
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), -1);

	/* SIGINT (^C in a terminal) drains the same way. */
	ck_assert_msg(tu_daemon_restart(d), "restart failed");
	r = refund("rf-int", "5.00", "USD", "SUCCEEDED", 1);
	ck_assert_int_eq(post_refund(d, "evt-int", TU_CREATED, &r), 200);
	ck_assert_int_eq(tu_daemon_stop_sig(d, SIGINT, 10000), 0);
	ASSERT_SQL_INT(d, 2, "SELECT count(*) FROM refunds");
	tu_daemon_free(d);
}
END_TEST

/*
 * serve on a port another process listens on: the workers share their
 * port with SO_REUSEPORT, but a second daemon must not quietly join them
 * (or a stranger's socket) and take half the webhooks.
 */
static void
assert_port_refused(const char *dir, int port, const char *pub)
{
	char *conf = xasprintf("%s/second.conf", dir), *text, *out = NULL;
	char *err = NULL, *argv[5], *want, *bin = xstrdup(tu_binary());
	int st;

	text = xasprintf("[server]\nlisten = 127.0.0.1:%d\n"
	    "admin_listen = 127.0.0.1:0\n[store]\npath = %s/second.db\n"
	    "[wix]\npublic_key_file = %s\n", port, dir, pub);
	ck_assert(tu_write_file(conf, text, false));
	argv[0] = bin;
	argv[1] = (char *)"serve";
	argv[2] = (char *)"-c";
	argv[3] = conf;
	argv[4] = NULL;
	st = tu_run(argv, 20000, &out, &err);
	ck_assert_msg(st != 0 && st != -1, "serve on a taken port: exit %d",
	    st);
	want = xasprintf("public listener: cannot bind port %d: Address "
	    "already in use", port);
	ck_assert_msg(strstr(err, want) != NULL, "no \"%s\" in \"%s\"", want,
	    err);
	free(want);
	free(out);
	free(err);
	free(text);
	free(conf);
	free(bin);
}

START_TEST(test_port_in_use)
{
	struct tu_daemon *d = start(NULL);
	char *dir = tu_tempdir();
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd, on = 1, i, fds[16];

	/* Another refundsync. */
	assert_port_refused(dir, d->port, d->pub_path);
	/* A plain listening socket of someone else's. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on,
	    sizeof(on)), 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	assert_port_refused(dir, ntohs(sin.sin_port), d->pub_path);
	close(fd);

	/* The first daemon alone still answers every connection. */
	for (i = 0; i < 16; i++) {
		fds[i] = tu_connect(NULL, d->port, 2000);
		ck_assert_int_ge(fds[i], 0);
	}
	for (i = 0; i < 16; i++) {
		static const char req[] = "GET /healthz HTTP/1.1\r\n"
		    "Host: x\r\nConnection: close\r\n\r\n";

		ck_assert(tu_send_all(fds[i], req, sizeof(req) - 1));
		ck_assert_int_eq(tu_read_response(fds[i], 5000, NULL), 200);
		close(fds[i]);
	}
	tu_rmtree(dir);
	free(dir);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_cli_check_and_version)
{
	char *dir = tu_tempdir(), *good, *bad, *exp, *out = NULL, *err = NULL;
	char *argv[5], *pub;
	struct tu_keypair kp;
	char *bin = xstrdup(tu_binary());

	good = xasprintf("%s/good.conf", dir);
	bad = xasprintf("%s/bad.conf", dir);
	exp = xasprintf("%s/exporter.conf", dir);
	/* check loads the public key, as serve does: give it one. */
	tu_keypair_generate(&kp);
	pub = xasprintf("%s/wix-public.pem", dir);
	ck_assert(tu_write_file(pub, kp.pub_pem, false));
	ck_assert(tu_write_file(good, "[server]\nlisten = 127.0.0.1:0\n"
	    "[store]\npath = x.db\n[wix]\npublic_key_file = wix-public.pem\n",
	    false));
	ck_assert(tu_write_file(bad, "[server]\nlisten = 127.0.0.1:0\n"
	    "no_such_key = 1\n", false));
	ck_assert(tu_write_file(exp, "[exporter books]\ntype = jsonl\n",
	    false));

	argv[0] = bin;
	argv[1] = (char *)"check";
	argv[2] = (char *)"-c";
	argv[3] = good;
	argv[4] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 0);
	free(out);
	free(err);

	/* SPEC §1: check exits 0 (valid) or 1 (not valid). */
	argv[3] = bad;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 1);
	ck_assert_msg(strstr(err, "bad.conf:3") != NULL,
	    "no file:line in \"%s\"", err);
	ck_assert_msg(strstr(err, "no_such_key") != NULL,
	    "the key is not named in \"%s\"", err);
	free(out);
	free(err);

	/* An exporter section missing its required key is refused, with
	 * the file and line, rather than silently ignored. */
	argv[3] = exp;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 1);
	ck_assert_msg(strstr(err, "exporter.conf:1") != NULL ||
	    strstr(err, "exporter.conf:2") != NULL,
	    "no file:line in \"%s\"", err);
	free(out);
	free(err);

	argv[1] = (char *)"version";
	argv[2] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 0);
	ck_assert_msg(strpbrk(out, "0123456789") != NULL &&
	    strchr(out, '.') != NULL,
	    "version printed \"%s\"", out);
	free(out);
	free(err);

	/* serve refuses to start on a bad config: a config error is 2. */
	argv[1] = (char *)"serve";
	argv[2] = (char *)"-c";
	argv[3] = bad;
	argv[4] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 2);
	ck_assert_msg(strstr(err, "bad.conf:3") != NULL,
	    "no file:line in \"%s\"", err);
	free(out);
	free(err);

	/*
	 * A config file that cannot be read: check says so plainly (exit 1,
	 * SPEC §1), serve as the daemon logs: one log line with the
	 * timestamp and level, the file and why (exit 2, a config error).
	 */
	{
		char *gone = xasprintf("%s/gone.conf", dir), *want;
		const char *nl;

		argv[1] = (char *)"check";
		argv[3] = gone;
		want = xasprintf("%s: cannot open: No such file or directory\n",
		    gone);
		ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 1);
		ck_assert_str_eq(err, want);
		free(out);
		free(err);
		free(want);

		argv[1] = (char *)"serve";
		ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 2);
		want = xasprintf(" error: cannot start: %s: cannot open: No "
		    "such file or directory\n", gone);
		nl = strchr(err, '\n');
		ck_assert_msg(nl != NULL && nl[1] == '\0',
		    "not one line: \"%s\"", err);
		/* 2026-01-02T03:04:05.678Z */
		ck_assert_msg(strlen(err) > 24 && err[4] == '-' &&
		    err[10] == 'T' && err[23] == 'Z' &&
		    strcmp(err + 24, want) == 0,
		    "serve said \"%s\", not <timestamp>\"%s\"", err, want);
		free(out);
		free(err);
		free(want);
		argv[3] = bad;
		free(gone);
	}

	/*
	 * The config option may come before the command's name too, in
	 * each of its spellings: the same answers as after it.
	 */
	{
		char *cf = xasprintf("--config=%s", bad);
		char *av[5] = { bin, (char *)"-c", good, (char *)"check", NULL };

		ck_assert_int_eq(tu_run(av, 20000, &out, &err), 0);
		free(out);
		free(err);
		av[1] = cf;
		av[2] = (char *)"check";
		av[3] = NULL;
		ck_assert_int_eq(tu_run(av, 20000, &out, &err), 1);
		ck_assert_msg(strstr(err, "bad.conf:3") != NULL,
		    "--config=FILE check: \"%s\"", err);
		free(out);
		free(err);
		/* Help after them is help. */
		av[1] = (char *)"-c";
		av[2] = good;
		av[3] = (char *)"--help";
		ck_assert_int_eq(tu_run(av, 20000, &out, &err), 0);
		ck_assert_msg(strstr(out, "usage:") == out, "-c F --help: "
		    "\"%s\"", out);
		free(out);
		free(err);
		free(cf);
	}

	/* A usage error is 2. */
	argv[2] = NULL;
	argv[1] = (char *)"no-such-command";
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 2);
	free(out);
	free(err);

	/* Each usage error names the option it is about; an empty -c is
	 * one, not the default file. */
	{
		static const struct {
			const char *args[4];
			const char *says;
		} cases[] = {
			{ { "status", "--instance", "x", NULL },
			    "option --instance is not for this command" },
			{ { "version", "-c", "d.conf", NULL },
			    "option --config is not for this command" },
			{ { "refunds", "list", "--status", NULL },
			    "option --status needs a value" },
			{ { "refunds", "-c", NULL, NULL },
			    "option --config needs a value" },
			{ { "refunds", "--bogus", NULL, NULL },
			    "unknown option '--bogus'" },
			{ { "refunds", "-x", NULL, NULL },
			    "unknown option '-x'" },
			{ { "check", "-c", "", NULL },
			    "option -c: the path is empty" },
			{ { "refund", "-c", "", "create" },
			    "option -c: the path is empty" },
			{ { "-c", "", "refund", "create" },
			    "option -c: the path is empty" },
			{ { "-c", "d.conf", NULL, NULL },
			    "no command after the options" },
			{ { "-c", NULL, NULL, NULL },
			    "option --config needs a value" },
			{ { "-x", "check", NULL, NULL },
			    "unknown option '-x'" },
			{ { "-c", "d.conf", "bogus", NULL },
			    "unknown command 'bogus'" },
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			char *av[6] = { bin, NULL };

			for (size_t k = 0; k < 4 && cases[i].args[k] != NULL;
			    k++)
				av[k + 1] = xstrdup(cases[i].args[k]);
			ck_assert_int_eq(tu_run(av, 20000, &out, &err), 2);
			for (size_t k = 1; av[k] != NULL; k++)
				free(av[k]);
			ck_assert_msg(strstr(err, cases[i].says) != NULL,
			    "%s: \"%s\" does not say \"%s\"",
			    cases[i].args[0], err, cases[i].says);
			free(out);
			free(err);
		}
	}

	tu_rmtree(dir);
	free(dir);
	free(good);
	free(bad);
	free(exp);
	free(pub);
	tu_keypair_cleanup(&kp);
	free(bin);
}
END_TEST

/* `refundsync WORDS[0] -c CONF WORDS[1..]` (NULL-terminated, at most
 * 11 more words): the exit status, stdout and stderr. */
static int
run_rs_words(const char *const *words, const char *conf, char **out,
    char **err)
{
	char *argv[16];
	size_t n = 0, k;
	int rc;

	argv[n++] = xstrdup(tu_binary());
	argv[n++] = xstrdup(words[0]);
	argv[n++] = xstrdup("-c");
	argv[n++] = xstrdup(conf);
	for (k = 1; words[k] != NULL && n < 15; k++)
		argv[n++] = xstrdup(words[k]);
	argv[n] = NULL;
	rc = tu_run(argv, 20000, out, err);
	for (k = 0; k < n; k++)
		free(argv[k]);
	return rc;
}

/* `refundsync CMD -c CONF`, waited for; the exit status. */
static int
run_rs(const char *cmd, const char *conf, char **out, char **err)
{
	const char *words[2] = { cmd, NULL };

	return run_rs_words(words, conf, out, err);
}

/* Write text into dir/name and return the path (caller frees). */
static char *
put_conf(const char *dir, const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);

	ck_assert(tu_write_file(path, text, false));
	return path;
}

/* s holds needle, or the test fails showing s. */
#define ASSERT_HAS(s, needle)						\
	ck_assert_msg(strstr((s), (needle)) != NULL,			\
	    "\"%s\" not in \"%s\"", (needle), (s))

/*
 * The store's directory does not exist: the commands that talk to Wix
 * (whose request budget file lives next to the database) name the
 * store and its directory, not the budget file, and fail as when the
 * store cannot be opened (1), not as for a config error (2).
 */
/*
 * The read-only commands, run before anything created the database, say
 * so once, naming it, and do not create it.
 */
START_TEST(test_cli_no_database)
{
	static const char *const cmds[][4] = {
		{ "refunds", "list", NULL },
		{ "status", NULL },
		{ "export", "status", NULL },
	};
	char *dir = tu_tempdir(), *conf, *text, *db, *want, *out = NULL;
	char *err = NULL;
	size_t i;

	db = xasprintf("%s/refundsync.db", dir);
	text = xasprintf("[store]\npath = %s\n", db);
	conf = put_conf(dir, "nodb.conf", text);
	want = xasprintf("refundsync: store: %s: no such database: nothing "
	    "is stored yet (serve creates it)\n", db);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		ck_assert_msg(run_rs_words(cmds[i], conf, &out, &err) == 1,
		    "%s: not exit 1: %s", cmds[i][0], err);
		ck_assert_str_eq(err, want);
		ck_assert_int_eq(access(db, F_OK), -1);
		free(out);
		free(err);
	}
	tu_rmtree(dir);
	free(want);
	free(conf);
	free(text);
	free(db);
	free(dir);
}
END_TEST

START_TEST(test_cli_store_dir_missing)
{
	static const char *const cmds[][8] = {
		{ "backfill", NULL },
		{ "backfill", "--instance", "inst-1", NULL },
		{ "reconcile", NULL },
		{ "refund", "create", "--instance", "inst-1", "--charge",
		    "ch-1", NULL },
	};
	char *dir = tu_tempdir(), *conf, *text, *db, *want, *out = NULL;
	char *err = NULL, *secret;
	size_t i;

	secret = xasprintf("%s/secret", dir);
	ck_assert(tu_write_file(secret, "s3cret\n", true));
	db = xasprintf("%s/nodir/refundsync.db", dir);
	text = xasprintf("[store]\npath = %s\n[wix]\napp_id = app-1\n"
	    "app_secret_file = %s\napi_base = http://127.0.0.1:9\n", db,
	    secret);
	conf = put_conf(dir, "nodir.conf", text);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		ck_assert_msg(run_rs_words(cmds[i], conf, &out, &err) == 1,
		    "%s: not exit 1: %s", cmds[i][0], err);
		want = xasprintf("refundsync: %s%s: store %s: its directory "
		    "%s/nodir: No such file or directory%s\n", cmds[i][0],
		    strcmp(cmds[i][0], "refund") == 0 ? " create" : "", db,
		    dir, strcmp(cmds[i][0], "refund") == 0 ?
		    " (nothing was sent)" : "");
		ck_assert_str_eq(err, want);
		free(want);
		free(out);
		free(err);
	}
	tu_rmtree(dir);
	free(conf);
	free(text);
	free(db);
	free(secret);
	free(dir);
}
END_TEST

/*
 * An exporter type's own keys with bad values: `check` says so at the
 * key's line (it used to say ok), and serve refuses to start (it used
 * to start and retry the exporter's open() forever).
 */
START_TEST(test_cli_check_exporter_values)
{
	char *dir = tu_tempdir(), *pub, *conf, *text, *want, *out, *err;
	struct tu_keypair kp;

	tu_keypair_generate(&kp);
	pub = put_conf(dir, "wix-public.pem", kp.pub_pem);
	text = xasprintf("[server]\nlisten = 127.0.0.1:0\n"	/* 1-2 */
	    "admin_listen =\n"				/* 3 */
	    "[store]\npath = x.db\n"				/* 4-5 */
	    "[wix]\npublic_key_file = %s\n"			/* 6-7 */
	    "[exporter a]\ntype = jsonl\npath = a.jsonl\n"	/* 8-10 */
	    "body = maybe\n"					/* 11 */
	    "[exporter h]\ntype = http\n"			/* 12-13 */
	    "url = ftp://x\n"					/* 14 */
	    "[exporter n]\ntype = http\n"			/* 15-16 */
	    "url = notaurl\n", pub);				/* 17 */
	conf = put_conf(dir, "values.conf", text);

	ck_assert_int_eq(run_rs("check", conf, &out, &err), 1);
	ck_assert_msg(strstr(out, "ok") == NULL, "check said: %s", out);
	want = xasprintf("%s:11: [exporter a] body: maybe is not yes/no", conf);
	ASSERT_HAS(err, want);
	free(want);
	want = xasprintf("%s:14: [exporter h] url: must start with http:// "
	    "or https://", conf);
	ASSERT_HAS(err, want);
	free(want);
	want = xasprintf("%s:17: [exporter n] url: must start with http:// "
	    "or https://", conf);
	ASSERT_HAS(err, want);
	free(out);
	free(err);

	/* serve refuses the same config: a config error is 2. */
	ck_assert_int_eq(run_rs("serve", conf, &out, &err), 2);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);

	tu_rmtree(dir);
	tu_keypair_cleanup(&kp);
	free(text);
	free(conf);
	free(pub);
	free(dir);
}
END_TEST

#define TOPSECRET	"TOPSECRET-5f3a9c"

/*
 * check reads what serve reads before it starts: the public keys (they
 * must parse), the Wix secret and an http exporter's secret_file.  Each
 * failure is "file:line: [section] key: reason", and no secret is ever
 * printed.
 */
START_TEST(test_cli_check_keys_and_secrets)
{
	char *dir = tu_tempdir(), *pub, *junk, *sec, *text, *conf, *want;
	char *out, *err, *creds;
	struct tu_keypair kp;

	tu_keypair_generate(&kp);
	pub = put_conf(dir, "wix-public.pem", kp.pub_pem);
	junk = put_conf(dir, "junk.pem", "-----BEGIN PUBLIC KEY-----\n"
	    "not base64 at all\n-----END PUBLIC KEY-----\n");
	sec = put_conf(dir, "secret", TOPSECRET "\n");
	creds = xasprintf("%s/creds", dir);
	ck_assert_int_eq(mkdir(creds, 0700), 0);

	/* A key file that does not exist; one that is not a key. */
	text = xasprintf("[store]\npath = x.db\n[wix]\n"	/* 1-3 */
	    "public_key_file = %s, missing.pem\n", pub);	/* 4 */
	conf = put_conf(dir, "nokey.conf", text);
	free(text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 1);
	want = xasprintf("%s:4: [wix] public_key_file: %s/missing.pem: ",
	    conf, dir);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);
	/* That is what serve refuses too. */
	ck_assert_int_eq(run_rs("serve", conf, &out, &err), 2);
	ASSERT_HAS(err, "missing.pem");
	free(out);
	free(err);
	free(conf);

	text = xasprintf("[wix]\npublic_key_file = %s\n", junk);
	conf = put_conf(dir, "junk.conf", text);
	free(text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 1);
	want = xasprintf("%s:2: [wix] public_key_file: %s: ", conf, junk);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);
	free(conf);

	/* Secrets that cannot be read: a missing file, a directory. */
	text = xasprintf("[wix]\npublic_key_file = %s\n"	/* 1-2 */
	    "app_id = app-1\n"				/* 3 */
	    "app_secret_file = no-such-secret\n"		/* 4 */
	    "[exporter h]\ntype = http\n"			/* 5-6 */
	    "url = http://127.0.0.1:9/\n"			/* 7 */
	    "secret_file = creds\n"				/* 8 */
	    "ca_file = no-such-ca.pem\n", pub);		/* 9 */
	conf = put_conf(dir, "nosecret.conf", text);
	free(text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 1);
	/* The CA bundle is read only at the first delivery: check says. */
	want = xasprintf("%s:9: [exporter h] ca_file: %s/no-such-ca.pem: "
	    "No such file or directory", conf, dir);
	ASSERT_HAS(err, want);
	free(want);
	want = xasprintf("%s:4: [wix] app_secret_file: %s/no-such-secret: ",
	    conf, dir);
	ASSERT_HAS(err, want);
	free(want);
	want = xasprintf("%s:8: [exporter h] secret_file: %s: not a regular "
	    "file", conf, creds);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);
	free(conf);

	text = xasprintf("[wix]\npublic_key_file = %s\n"
	    "api_key_file = no-such-key\nsite_id = site-1\n", pub);
	conf = put_conf(dir, "noapikey.conf", text);
	free(text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 1);
	want = xasprintf("%s:3: [wix] api_key_file: ", conf);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);
	free(conf);

	/* Readable secrets: ok, and the secret is never shown. */
	text = xasprintf("[wix]\npublic_key_file = %s\napp_id = app-1\n"
	    "app_secret_file = secret\n[exporter h]\ntype = http\n"
	    "url = http://127.0.0.1:9/\nsecret_file = %s\n", pub, sec);
	conf = put_conf(dir, "good.conf", text);
	free(text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 0);
	ck_assert_msg(strstr(out, TOPSECRET) == NULL &&
	    strstr(err, TOPSECRET) == NULL, "secret shown: %s%s", out, err);
	want = xasprintf("%s: ok\n", conf);
	ck_assert_str_eq(out, want);
	free(want);
	free(out);
	free(err);
	free(conf);

	/* A file exporter's directory that is not there: serve starts and
	 * retries, so a note, not a failure. */
	text = xasprintf("[wix]\npublic_key_file = %s\n"	/* 1-2 */
	    "[exporter books]\ntype = ledger\n"		/* 3-4 */
	    "path = no-such-dir/books.journal\n", pub);	/* 5 */
	conf = put_conf(dir, "nodir.conf", text);
	free(text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 0);
	want = xasprintf("%s:5: note: [exporter books] path: directory "
	    "%s/no-such-dir: No such file or directory", conf, dir);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);
	free(conf);

	/*
	 * credential:NAME without $CREDENTIALS_DIRECTORY (a shell, not
	 * systemd): not checked, one note line, not a failure.
	 */
	text = xasprintf("[wix]\npublic_key_file = %s\n"	/* 1-2 */
	    "app_id = app-1\n"				/* 3 */
	    "app_secret_file = credential:wix-secret\n", pub);	/* 4 */
	conf = put_conf(dir, "cred.conf", text);
	free(text);
	unsetenv("CREDENTIALS_DIRECTORY");
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 0);
	want = xasprintf("%s:4: note: [wix] app_secret_file: "
	    "credential:wix-secret not checked: $CREDENTIALS_DIRECTORY is not "
	    "set", conf);
	ASSERT_HAS(err, want);
	ck_assert_msg(strchr(err, '\n') == strrchr(err, '\n'),
	    "more than one line: %s", err);
	free(want);
	free(out);
	free(err);
	/* With it set, the credential is read like a file. */
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 1);
	want = xasprintf("%s:4: [wix] app_secret_file: %s/wix-secret: ", conf,
	    creds);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);
	text = xasprintf("%s/wix-secret", creds);
	ck_assert(tu_write_file(text, TOPSECRET "\n", true));
	free(text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_msg(strstr(out, TOPSECRET) == NULL, "secret shown: %s",
	    out);
	free(out);
	free(err);
	unsetenv("CREDENTIALS_DIRECTORY");
	free(conf);

	tu_rmtree(dir);
	tu_keypair_cleanup(&kp);
	free(creds);
	free(sec);
	free(junk);
	free(pub);
	free(dir);
}
END_TEST

/* A plugin that cannot be loaded: check names the file and line. */
START_TEST(test_cli_check_missing_plugin)
{
	char *dir = tu_tempdir(), *pub, *text, *conf, *want, *out, *err;
	struct tu_keypair kp;

	tu_keypair_generate(&kp);
	pub = put_conf(dir, "wix-public.pem", kp.pub_pem);
	text = xasprintf("[wix]\npublic_key_file = %s\n"	/* 1-2 */
	    "[exporter p]\ntype = plugin\n"			/* 3-4 */
	    "path = /nonexistent/rs-plugin.so\n", pub);	/* 5 */
	conf = put_conf(dir, "plugin.conf", text);
	ck_assert_int_eq(run_rs("check", conf, &out, &err), 1);
	want = xasprintf("%s:5: [exporter p] path: plugin "
	    "/nonexistent/rs-plugin.so: cannot load: ", conf);
	ASSERT_HAS(err, want);
	free(want);
	free(out);
	free(err);
	tu_rmtree(dir);
	tu_keypair_cleanup(&kp);
	free(text);
	free(conf);
	free(pub);
	free(dir);
}
END_TEST

/* ---- keys and reloads ---------------------------------------------- */

/* Post a fresh refund event signed with key until it gets want (at most
 * timeout_ms).  Returns the last status. */
static int
post_until(const struct tu_daemon *d, const char *key, int want,
    int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	struct tu_refund r;
	char *rid, *evid;
	int st;

	for (;;) {
		rid = tu_random_id("rf-");
		evid = tu_random_id("evt-");
		r = refund(rid, "1.00", "USD", "SUCCEEDED", 1);
		st = post_refund_key(d, key, evid, TU_CREATED, TU_FORM_OBJECT,
		    &r);
		free(rid);
		free(evid);
		if (st == want || clock_mono_ms() >= deadline)
			return st;
		tu_sleep_ms(100);
	}
}

START_TEST(test_sighup_key_rotation)
{
	struct tu_daemon *d = start(NULL);
	struct tu_keypair k2;
	struct tu_conf conf;
	char *pub2, *both;

	tu_keypair_generate(&k2);
	pub2 = xasprintf("%s/wix-public-2.pem", d->dir);
	ck_assert(tu_write_file(pub2, k2.pub_pem, false));
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);
	ck_assert_int_eq(post_until(d, k2.priv_pem, 401, 0), 401);

	/* Old and new together, as during a rotation. */
	both = xasprintf("%s, %s", d->pub_path, pub2);
	memset(&conf, 0, sizeof(conf));
	conf.public_key_file = both;
	ck_assert(tu_daemon_write_config(d, &conf));
	ck_assert(tu_daemon_signal(d, SIGHUP));
	ck_assert_int_eq(post_until(d, k2.priv_pem, 200, 5000), 200);
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);

	/* Then the new one alone: the old key stops working. */
	conf.public_key_file = pub2;
	ck_assert(tu_daemon_write_config(d, &conf));
	ck_assert(tu_daemon_signal(d, SIGHUP));
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 401, 5000), 401);
	ck_assert_int_eq(post_until(d, k2.priv_pem, 200, 0), 200);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);

	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	free(pub2);
	free(both);
	tu_keypair_cleanup(&k2);
	tu_daemon_free(d);
}
END_TEST

static void *
burst_thread(void *arg)
{
	(void)run_burst(arg, 4);
	return NULL;
}

/*
 * Reloads under load: while four clients post webhooks signed by the old
 * and the new key alternately, the daemon is sent SIGHUP ten times.  No
 * request is dropped or refused, and every one is stored.
 */
START_TEST(test_sighup_under_load)
{
	struct tu_daemon *d = start(NULL);
	struct tu_keypair k2;
	struct tu_conf conf;
	struct burst b;
	struct tu_refund r;
	struct tu_event ev;
	pthread_t th;
	char *pub2, *both, evid[32], rid[32];
	size_t i, ok = 0;
	int n;

	tu_keypair_generate(&k2);
	pub2 = xasprintf("%s/wix-public-2.pem", d->dir);
	ck_assert(tu_write_file(pub2, k2.pub_pem, false));
	both = xasprintf("%s, %s", d->pub_path, pub2);
	memset(&conf, 0, sizeof(conf));
	conf.public_key_file = both;
	ck_assert(tu_daemon_write_config(d, &conf));
	ck_assert(tu_daemon_signal(d, SIGHUP));
	ck_assert_int_eq(post_until(d, k2.priv_pem, 200, 5000), 200);

	memset(&b, 0, sizeof(b));
	b.d = d;
	b.n = 300;
	b.toks = xcalloc(b.n, sizeof(*b.toks));
	b.status = xcalloc(b.n, sizeof(*b.status));
	for (i = 0; i < b.n; i++) {
		snprintf(evid, sizeof(evid), "evt-hup-%03zu", i);
		snprintf(rid, sizeof(rid), "rf-hup-%03zu", i);
		r = refund(rid, "1.00", "USD", "SUCCEEDED", 1);
		memset(&ev, 0, sizeof(ev));
		ev.id = evid;
		ev.slug = TU_CREATED;
		ev.seq = -1;
		b.toks[i] = tu_refund_webhook(i % 2 ? k2.priv_pem :
		    d->key.priv_pem, &ev, &r, INST);
	}
	ck_assert_int_eq(pthread_create(&th, NULL, burst_thread, &b), 0);
	for (n = 0; n < 10; n++) {
		tu_sleep_ms(40);
		ck_assert(tu_daemon_signal(d, SIGHUP));
	}
	pthread_join(th, NULL);
	for (i = 0; i < b.n; i++)
		if (b.status[i] == 200)
			ok++;
	ck_assert_uint_eq(ok, b.n);
	/* post_until's probe webhook is one more row. */
	ASSERT_SQL_INT(d, 300, "SELECT count(*) FROM refunds WHERE id LIKE "
	    "'rf-hup-%%'");
	ck_assert_int_ge(metric(d, "refundsync_reloads_total",
	    "result=\"applied\""), 2);
	burst_free(&b);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	free(pub2);
	free(both);
	tu_keypair_cleanup(&k2);
	tu_daemon_free(d);
}
END_TEST

/* SIGHUP d and wait for lines want in its log after that moment
 * (failing with what if they do not come); that moment's log size. */
static size_t
sighup_and_wait(struct tu_daemon *d, const char *const *want,
    const char *what)
{
	size_t mark = tu_daemon_log_size(d);

	ck_assert(tu_daemon_signal(d, SIGHUP));
	ck_assert_msg(tu_daemon_wait_log(d, mark, want, 5000), "%s", what);
	return mark;
}

/*
 * A setting only a restart applies: SIGHUP says so, and the old value
 * keeps running; put back, it is no change (the comparison is with what
 * runs, not with the last file read).
 */
START_TEST(test_sighup_restart_only)
{
	static const char *const warned[] = { "reload: [server] max_body "
	    "changed: restart to apply it", NULL };
	static const char *const applied[] = { "reload: applied", NULL };
	struct tu_daemon *d = start(NULL);
	struct tu_conf conf;
	size_t mark;
	char *tok, *log;

	memset(&conf, 0, sizeof(conf));
	conf.server = "max_body = 1024";
	ck_assert(tu_daemon_write_config(d, &conf));
	mark = sighup_and_wait(d, warned, "no restart warning for max_body");
	ck_assert(tu_daemon_wait_log(d, mark, applied, 5000));
	/* A webhook over 1024 bytes is still taken: the old cap runs. */
	{
		struct tu_event ev;
		struct tu_refund r = refund("rf-big", "1.00", "USD",
		    "SUCCEEDED", 1);

		memset(&ev, 0, sizeof(ev));
		ev.id = "evt-big";
		ev.slug = TU_CREATED;
		ev.form = TU_FORM_OBJECT;
		ev.seq = -1;
		tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
		ck_assert_uint_gt(strlen(tok), 1024);
		ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
		free(tok);
	}

	/* Put back: applied, and nothing to warn about. */
	memset(&conf, 0, sizeof(conf));
	ck_assert(tu_daemon_write_config(d, &conf));
	mark = sighup_and_wait(d, applied, "no \"applied\" line");
	log = tu_daemon_log(d);
	ck_assert_msg(strstr(log + mark, "restart to apply") == NULL,
	    "warned after the value was put back: %s", log + mark);
	free(log);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

/*
 * [exporter] sections take effect at a restart: a reload names each one
 * added, changed or removed, so the operator knows what waits for it.
 */
START_TEST(test_sighup_exporters_named)
{
	static const char *const warned[] = {
	    "reload: [exporter keep] changed: restart to apply it", NULL };
	struct tu_daemon *d;
	struct tu_conf conf;
	size_t mark;
	char *log;

	memset(&conf, 0, sizeof(conf));
	conf.tail = "[exporter keep]\ntype = jsonl\npath = keep.jsonl\n"
	    "[exporter gone]\ntype = jsonl\npath = gone.jsonl\n"
	    "[exporter same]\ntype = jsonl\npath = same.jsonl\n";
	d = start(&conf);
	conf.tail = "[exporter same]\ntype = jsonl\npath = same.jsonl\n"
	    "[exporter keep]\ntype = jsonl\npath = keep2.jsonl\n"
	    "[exporter new]\ntype = csv\npath = new.csv\n";
	ck_assert(tu_daemon_write_config(d, &conf));
	mark = sighup_and_wait(d, warned, "no restart warning for keep");
	ck_assert(tu_daemon_wait_log(d, mark, (const char *const[]){
	    "reload: [exporter new] added: restart to apply it", NULL },
	    5000));
	ck_assert(tu_daemon_wait_log(d, mark, (const char *const[]){
	    "reload: [exporter gone] removed: restart to apply it", NULL },
	    5000));
	ck_assert(tu_daemon_wait_log(d, mark, (const char *const[]){
	    "reload: applied", NULL }, 5000));
	/* A section only moved in the file is no change. */
	log = tu_daemon_log(d);
	ck_assert_msg(strstr(log + mark, "[exporter same]") == NULL,
	    "warned about an unchanged section: %s", log + mark);
	free(log);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_sighup_broken_config)
{
	static const char *const refused[] = { "reload", "refused", NULL };
	struct tu_daemon *d = start(NULL);
	struct tu_conf conf;
	char *missing;

	/* A config that does not parse. */
	memset(&conf, 0, sizeof(conf));
	conf.server = "bogus_key = 1";
	ck_assert(tu_daemon_write_config(d, &conf));
	(void)sighup_and_wait(d, refused, "no \"reload refused\" line");
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 200);

	/* One that parses but names a key file that is not there. */
	missing = xasprintf("%s/no-such-key.pem", d->dir);
	memset(&conf, 0, sizeof(conf));
	conf.public_key_file = missing;
	ck_assert(tu_daemon_write_config(d, &conf));
	(void)sighup_and_wait(d, refused, "no \"reload refused\" line");
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);

	/* A key file that holds no key. */
	ck_assert(tu_write_file(missing, "-----BEGIN PUBLIC KEY-----\nAAAA\n"
	    "-----END PUBLIC KEY-----\n", false));
	(void)sighup_and_wait(d, refused, "no \"reload refused\" line");
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	free(missing);
	tu_daemon_free(d);
}
END_TEST

/*
 * Files that parse but that the start refuses (exit 2): a plugin that is
 * not there, a Wix secret file that is not there.  A reload refuses them
 * too, rather than saying "applied" and leaving a config the next start
 * rejects.
 */
START_TEST(test_sighup_refuses_what_start_refuses)
{
	static const char *const refused_plugin[] = { "reload refused: ",
	    "[exporter p] path: plugin /nonexistent/rs-plugin.so: cannot load",
	    "the running configuration stays", NULL };
	static const char *const refused_secret[] = { "reload refused: ",
	    "[wix] app_secret_file: ", "no-such-secret",
	    "the running configuration stays", NULL };
	static const char *const applied[] = { "reload: applied", NULL };
	struct tu_daemon *d = start(NULL);
	struct tu_conf conf;
	size_t mark;
	char *wix, *log;

	memset(&conf, 0, sizeof(conf));
	conf.tail = "[exporter p]\ntype = plugin\n"
	    "path = /nonexistent/rs-plugin.so\n";
	ck_assert(tu_daemon_write_config(d, &conf));
	(void)sighup_and_wait(d, refused_plugin, "a missing plugin was not "
	    "refused");
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);

	wix = xasprintf("app_id = app\napp_secret_file = %s/no-such-secret",
	    d->dir);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	ck_assert(tu_daemon_write_config(d, &conf));
	(void)sighup_and_wait(d, refused_secret, "a missing app_secret_file "
	    "was not refused");
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);

	/* The good file again: applied, and it was never "applied" before. */
	memset(&conf, 0, sizeof(conf));
	ck_assert(tu_daemon_write_config(d, &conf));
	mark = sighup_and_wait(d, applied, "no \"applied\" line");
	log = tu_daemon_log(d);
	ck_assert_msg(strstr(log + d->log_mark, "reload: applied") ==
	    strstr(log + mark, "reload: applied"),
	    "a refused file was applied: %s", log + d->log_mark);
	free(log);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	free(wix);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_key_one_line_base64)
{
	struct tu_daemon *d = start(NULL);
	struct tu_conf conf;
	char *b64, *path, *line;
	size_t i, j;

	/* The SDK also takes the PEM text as one line of base64. */
	b64 = tu_b64url(d->key.pub_pem, strlen(d->key.pub_pem));
	line = xmalloc(strlen(b64) + 4);
	for (i = j = 0; b64[i] != '\0'; i++)
		line[j++] = b64[i] == '-' ? '+' : b64[i] == '_' ? '/' : b64[i];
	while (j % 4 != 0)
		line[j++] = '=';
	line[j++] = '\n';
	line[j] = '\0';
	path = xasprintf("%s/oneline.pem", d->dir);
	ck_assert(tu_write_file(path, line, false));
	memset(&conf, 0, sizeof(conf));
	conf.public_key_file = path;
	ck_assert(tu_daemon_write_config(d, &conf));
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	ck_assert_msg(tu_daemon_restart(d), "no start with a one-line key");
	ck_assert_int_eq(post_until(d, d->key.priv_pem, 200, 0), 200);
	free(b64);
	free(line);
	free(path);
	tu_daemon_free(d);
}
END_TEST

/* The real Wix-signed AppInstalled (2021) under a clock set back. */
START_TEST(test_real_wix_fixture)
{
	const char *shared = getenv("RS_SHARED"), *lib = tu_faketime_lib();
	struct tu_daemon *d;
	struct tu_conf conf;
	char *tok, *p, *pubpath, *pre;
	const char *env[6];

	if (lib == NULL || shared == NULL) {
		fprintf(stderr, "SKIP test_real_wix_fixture: %s\n",
		    lib == NULL ? "faketime is not installed" :
		    "RS_SHARED is not set");
		return;
	}
	p = xasprintf("%s/fixtures/wix-real/app-installed.jwt", shared);
	tok = tu_read_file(p, NULL);
	free(p);
	ck_assert_ptr_nonnull(tok);
	tok[strcspn(tok, "\r\n")] = '\0';
	pubpath = xasprintf("%s/fixtures/wix-real/app-installed.pub.pem",
	    shared);

	pre = xasprintf("LD_PRELOAD=%s", lib);
	env[0] = pre;
	env[1] = "FAKETIME=@2022-01-15 12:00:00";
	env[2] = "FAKETIME_DONT_FAKE_MONOTONIC=1";
	env[3] = "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0";
	env[4] = NULL;
	memset(&conf, 0, sizeof(conf));
	conf.public_key_file = pubpath;
	conf.tail = "[backfill]\non_install = no";
	d = tu_daemon_start(&conf, env);
	ck_assert_msg(d != NULL, "the daemon did not start under faketime");
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL(d, "AppInstalled|3bbcabc7-ebb7-4fc8-8829-13ea0e142123",
	    "SELECT event_type || '|' || instance_id FROM webhook_events");
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM instances WHERE "
	    "instance_id = '3bbcabc7-ebb7-4fc8-8829-13ea0e142123'");
	tu_daemon_free(d);

	/* And at the real time it is long expired. */
	d = tu_daemon_start(&conf, NULL);
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 401);
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM webhook_events");
	tu_daemon_free(d);
	free(tok);
	free(pubpath);
	free(pre);
}
END_TEST

/* The wix-sign tool next to the binary, or NULL.  Caller frees. */
static char *
wix_sign_path(void)
{
	const char *bin = tu_binary(), *slash = strrchr(bin, '/');
	char *p;

	p = xasprintf("%.*stests/tools/wix-sign", slash != NULL ?
	    (int)(slash - bin + 1) : 0, bin);
	if (access(p, X_OK) != 0) {
		free(p);
		return NULL;
	}
	return p;
}

/* Tokens signed by libjwt (wix-sign) verify in the daemon. */
/* True when s holds no control byte but newlines. */
static bool
terminal_safe(const char *s)
{
	for (; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && *s != '\n') || *s == 0x7f)
			return false;
	return true;
}

/* A signed refund whose id and status carry escape sequences: the text
 * of `refunds list` and `refunds show` shows them as '?'. */
START_TEST(test_cli_control_bytes)
{
	static const char id[] = "rf-\033[31mRED\a";
	struct tu_daemon *d = start(NULL);
	struct tu_refund r = refund(id, "1.00", "USD", "SUCC\033[0m", 1);
	char *argv[6], *out = NULL, *err = NULL;

	ck_assert_int_eq(post_refund(d, "evt-ctl", TU_CREATED, &r), 200);
	argv[0] = xstrdup(tu_binary());
	argv[1] = (char *)"refunds";
	argv[2] = (char *)"-c";
	argv[3] = d->conf_path;
	argv[4] = (char *)"list";
	argv[5] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 0);
	ck_assert_msg(terminal_safe(out), "raw control bytes: %s", out);
	ck_assert_msg(strstr(out, "rf-?[31mRED?") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "SUCC?[0m") != NULL, "%s", out);
	free(out);
	free(err);
	argv[4] = (char *)"show";
	{
		char *av[7] = { argv[0], argv[1], argv[2], argv[3], argv[4],
		    xstrdup(id), NULL };

		ck_assert_int_eq(tu_run(av, 20000, &out, &err), 0);
		free(av[5]);
	}
	ck_assert_msg(terminal_safe(out), "raw control bytes: %s", out);
	ck_assert_msg(strstr(out, "id:           rf-?[31mRED?\n") != NULL,
	    "%s", out);
	free(out);
	free(err);
	free(argv[0]);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

/* `refunds list --status` takes Wix's status in any case; an empty one
 * is a usage error, not an empty list. */
START_TEST(test_cli_status_filter)
{
	static const char *const lower[] = { "refunds", "list", "--status",
	    "succeeded", "--json", NULL };
	static const char *const empty[] = { "refunds", "list", "--status",
	    "", NULL };
	struct tu_daemon *d = start(NULL);
	struct tu_refund a = refund("rf-sf-1", "1.00", "USD", "SUCCEEDED", 1);
	struct tu_refund b = refund("rf-sf-2", "2.00", "USD", "PENDING", 1);
	char *out = NULL, *err = NULL;

	ck_assert_int_eq(post_refund(d, "evt-sf-1", TU_CREATED, &a), 200);
	ck_assert_int_eq(post_refund(d, "evt-sf-2", TU_CREATED, &b), 200);
	ck_assert_int_eq(run_rs_words(lower, d->conf_path, &out, &err), 0);
	ck_assert_msg(strstr(out, "\"rf-sf-1\"") != NULL &&
	    strstr(out, "rf-sf-2") == NULL && strchr(out, '\n') ==
	    out + strlen(out) - 1, "--status succeeded listed \"%s\"", out);
	free(out);
	free(err);
	ck_assert_int_eq(run_rs_words(empty, d->conf_path, &out, &err), 2);
	ck_assert_msg(strstr(err, "--status needs a status") != NULL,
	    "--status '' said \"%s\"", err);
	free(out);
	free(err);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
}
END_TEST

START_TEST(test_wix_sign_tool)
{
	struct tu_daemon *d;
	char *tool = wix_sign_path(), *key, *url, *out = NULL, *err = NULL;
	char *tok;
	char *argv[32];
	int n;

	if (tool == NULL) {
		fprintf(stderr, "SKIP test_wix_sign_tool: tests/tools/wix-sign "
		    "is not built next to %s\n", tu_binary());
		return;
	}
	d = start(NULL);
	key = xasprintf("%s/wix-test-private.pem", d->dir);
	ck_assert(tu_write_file(key, d->key.priv_pem, true));
	url = xasprintf("http://127.0.0.1:%d/webhooks", d->port);

	n = 0;
	argv[n++] = tool;
	argv[n++] = (char *)"refund";
	argv[n++] = (char *)"--key";
	argv[n++] = key;
	argv[n++] = (char *)"--id";
	argv[n++] = (char *)"rf-ws";
	argv[n++] = (char *)"--event-id";
	argv[n++] = (char *)"evt-ws-1";
	argv[n++] = (char *)"--amount";
	argv[n++] = (char *)"12.345";
	argv[n++] = (char *)"--currency";
	argv[n++] = (char *)"KWD";
	argv[n++] = (char *)"--seq";
	argv[n++] = (char *)"3";
	argv[n++] = (char *)"--instance";
	argv[n++] = (char *)"inst-ws";
	argv[n++] = (char *)"--form";
	argv[n++] = (char *)"string";
	argv[n++] = (char *)"--post";
	argv[n++] = url;
	argv[n] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 0);
	ck_assert_msg(strncmp(out, "200\n", 4) == 0, "wix-sign printed %s",
	    out);
	free(out);
	free(err);
	ASSERT_SQL(d, "12.345|12345|KWD|SUCCEEDED|1|inst-ws", "SELECT amount "
	    "|| '|' || amount_minor || '|' || currency || '|' || status || "
	    "'|' || revision || '|' || instance_id FROM refunds WHERE id = "
	    "'rf-ws'");

	/* Printed rather than posted, then posted by hand: an update. */
	n = 0;
	argv[n++] = tool;
	argv[n++] = (char *)"refund";
	argv[n++] = (char *)"--key";
	argv[n++] = key;
	argv[n++] = (char *)"--event";
	argv[n++] = (char *)"updated";
	argv[n++] = (char *)"--id";
	argv[n++] = (char *)"rf-ws";
	argv[n++] = (char *)"--amount";
	argv[n++] = (char *)"12.345";
	argv[n++] = (char *)"--currency";
	argv[n++] = (char *)"KWD";
	argv[n++] = (char *)"--status";
	argv[n++] = (char *)"REVERSED";
	argv[n++] = (char *)"--revision";
	argv[n++] = (char *)"2";
	argv[n] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 0);
	tok = out;
	tok[strcspn(tok, "\n")] = '\0';
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL(d, "REVERSED|2", "SELECT status || '|' || revision FROM "
	    "refunds WHERE id = 'rf-ws'");
	free(out);
	free(err);

	n = 0;
	argv[n++] = tool;
	argv[n++] = (char *)"app-installed";
	argv[n++] = (char *)"--key";
	argv[n++] = key;
	argv[n++] = (char *)"--instance";
	argv[n++] = (char *)"inst-ws";
	argv[n++] = (char *)"--post";
	argv[n++] = url;
	argv[n] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 0);
	free(out);
	free(err);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM instances WHERE "
	    "instance_id = 'inst-ws'");

	/* Usage errors are 2; a refused post is 1. */
	argv[1] = (char *)"refund";
	argv[2] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 2);
	free(out);
	free(err);
	n = 0;
	argv[n++] = tool;
	argv[n++] = (char *)"refund";
	argv[n++] = (char *)"--key";
	argv[n++] = d->pub_path;	/* not a private key */
	argv[n] = NULL;
	ck_assert_int_eq(tu_run(argv, 20000, &out, &err), 1);
	free(out);
	free(err);

	free(key);
	free(url);
	free(tool);
	tu_daemon_free(d);
}
END_TEST

static Suite *
daemon_suite(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc;

	tc = tcase_create("ingest");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_lifecycle);
	tcase_add_test(tc, test_out_of_order_burst);
	tcase_add_test(tc, test_parallel_distinct);
	tcase_add_test(tc, test_app_installed);
	tcase_add_test(tc, test_unknown_event_type);
	tcase_add_test(tc, test_wire_forms);
	tcase_add_test(tc, test_currencies);
	tcase_add_test(tc, test_real_wix_fixture);
	suite_add_tcase(s, tc);

	tc = tcase_create("surface");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_probes_and_metrics);
	tcase_add_test(tc, test_cli_check_and_version);
	tcase_add_test(tc, test_cli_control_bytes);
	tcase_add_test(tc, test_cli_status_filter);
	tcase_add_test(tc, test_cli_check_exporter_values);
	tcase_add_test(tc, test_cli_check_keys_and_secrets);
	tcase_add_test(tc, test_cli_check_missing_plugin);
	tcase_add_test(tc, test_cli_store_dir_missing);
	tcase_add_test(tc, test_cli_no_database);
	tcase_add_test(tc, test_port_in_use);
	tcase_add_test(tc, test_wix_sign_tool);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifecycle");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_kill9_restart);
	tcase_add_test(tc, test_sigterm_exit0);
	tcase_add_test(tc, test_store_locked_503_and_recovery);
	tcase_add_test(tc, test_sighup_key_rotation);
	tcase_add_test(tc, test_sighup_under_load);
	tcase_add_test(tc, test_sighup_restart_only);
	tcase_add_test(tc, test_sighup_exporters_named);
	tcase_add_test(tc, test_sighup_broken_config);
	tcase_add_test(tc, test_sighup_refuses_what_start_refuses);
	tcase_add_test(tc, test_key_one_line_base64);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(daemon_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
