/*
 * check_backfill.c: the backfill loop (core/backfill.c) over the real
 * REST client and a real SQLite store, with Wix replaced by a fake
 * transport (wixapi's test seam) that serves a scripted data set and
 * scripted faults, and wixapi's clock replaced by a fake one, so its
 * backoff and budget waits take no time.
 *
 * The fake serves refunds "r-00000" ... in createdDate order; the cursor
 * of the page starting at offset o is "c<o>".  It checks the wire shape
 * of every query (the first page sorted by createdDate ASC, later pages
 * only the cursor) and logs the cursor of each query, so a test can see
 * that no page was lost or asked for twice.
 *
 * Every test works in a directory of its own under one mkdtemp()
 * directory per test case, removed at the end.
 */
#include <sys/stat.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "adapters/store_backend.h"
#include "adapters/wixapi.h"
#include "core/backfill.h"
#include "domain/event.h"
#include "domain/json.h"
#include "domain/refund.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST	"inst-1"

static char case_dir[512];

/* ---- files ------------------------------------------------------------- */

static void
case_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	int n;

	n = snprintf(case_dir, sizeof(case_dir), "%s/check_backfill.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (n < 0 || (size_t)n >= sizeof(case_dir) ||
	    mkdtemp(case_dir) == NULL) {
		perror("check_backfill: mkdtemp");
		exit(2);
	}
}

static void
case_teardown(void)
{
	tu_rmtree(case_dir);
	case_dir[0] = '\0';
}

/* A fresh directory for one test.  Caller frees. */
static char *
test_dir(void)
{
	char *d = xasprintf("%s/t.XXXXXX", case_dir);

	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* ---- the fake Wix -------------------------------------------------------- */

enum fault {
	F_NONE,
	F_STATUS,		/* answer status with body */
	F_TRUNCATE,		/* the page cut in half */
	F_INVALID,		/* not JSON */
	F_TOOBIG,		/* the transport's size cap */
	F_IO,			/* a transport failure */
	F_REPEAT,		/* next cursor = the one asked for */
	F_EMPTY_HASNEXT,	/* no refunds, hasNext, a new cursor */
	F_NO_CURSOR,		/* hasNext without a cursor */
	F_BACKWARDS,		/* the first page again, a new cursor */
	F_CYCLE,		/* next cursor = the one before this one */
	F_BAD_REFUND,		/* a refund whose amount is a number */
	F_STOP,			/* a stop lands while the query is in
				   flight: wixapi_stop() (and stop_flag
				   if set), and the transport, seeing it,
				   cuts the exchange short */
	F_HANG			/* no answer until wixapi_stop(), as a
				   dead network; then cut short */
};

struct fake_fault {
	int		 query;		/* 1-based query number; 0:
					   every one from `from` on */
	int		 from;
	enum fault	 kind;
	long		 status;
	const char	*body;
};

struct fake {
	pthread_mutex_t	 mu;
	int		 n;		/* refunds in the data set */
	int		 rev;		/* their revision */
	int		 queries;	/* query requests seen */
	int		 tokens;	/* token requests seen */
	int		 bad_tokens;	/* token answers to garble (a 200
					   cut short) */
	int		 big_tokens;	/* token answers over the
					   transport's size cap */
	int		 delay_ms;	/* per query (real time) */
	char		*cursors;	/* "-,c10": each query's cursor */
	char		*problems;	/* wire-shape violations seen */
	struct fake_fault faults[16];
	size_t		 nfaults;
	int		 last_limit;
	struct wixapi	*w;		/* the client, for F_STOP */
	atomic_bool	*stop_flag;	/* set too by F_STOP, or NULL */
	atomic_bool	 hanging;	/* F_HANG has begun */
};

static void
fake_init(struct fake *f, int n)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->mu, NULL);
	f->n = n;
	f->rev = 1;
	f->cursors = xstrdup("");
	f->problems = xstrdup("");
}

static void
fake_cleanup(struct fake *f)
{
	free(f->cursors);
	free(f->problems);
	pthread_mutex_destroy(&f->mu);
}

static void
fake_fault(struct fake *f, int query, enum fault kind, long status,
    const char *body)
{
	ck_assert_uint_lt(f->nfaults, 16);
	f->faults[f->nfaults].query = query;
	f->faults[f->nfaults].kind = kind;
	f->faults[f->nfaults].status = status;
	f->faults[f->nfaults].body = body;
	f->nfaults++;
}

/* A fault on every query from number from on. */
static void
fake_fault_from(struct fake *f, int from, enum fault kind)
{
	fake_fault(f, 0, kind, 0, NULL);
	f->faults[f->nfaults - 1].from = from;
}

/* Append v to *s. */
static void
append_str(char **s, const char *v)
{
	char *t = xasprintf("%s%s", *s, v);

	free(*s);
	*s = t;
}

/* createdDate of refund i: one second apart. */
static void
fake_date(int i, char out[32])
{
	snprintf(out, 32, "2024-01-01T%02d:%02d:%02dZ", i / 3600,
	    (i / 60) % 60, i % 60);
}

/* Refunds [from, to) as a JSON array text. */
static char *
fake_refunds(const struct fake *f, int from, int to, bool bad)
{
	char *s = xstrdup("["), *t, date[32];
	int i;

	for (i = from; i < to; i++) {
		fake_date(i, date);
		t = xasprintf("%s%s{\"id\":\"r-%05d\",\"revision\":\"%d\","
		    "\"createdDate\":\"%s\",\"updatedDate\":\"%s\","
		    "\"chargeId\":\"ch-%d\",\"currencyCode\":\"USD\","
		    "\"amount\":%s,\"status\":\"SUCCEEDED\",\"full\":false}",
		    s, i > from ? "," : "", i, f->rev, date, date, i,
		    bad && i == from ? "1.5" : "\"1.50\"");
		free(s);
		s = t;
	}
	t = xasprintf("%s]", s);
	free(s);
	return t;
}

static char *
fake_page(const char *refunds, const char *next, bool has_next)
{
	char *cur, *t;

	cur = next != NULL ? xasprintf("\"next\":\"%s\"", next) : xstrdup("");
	t = xasprintf("{\"refunds\":%s,\"pagingMetadata\":{\"count\":0,"
	    "\"cursors\":{%s},\"hasNext\":%s}}", refunds, cur,
	    has_next ? "true" : "false");
	free(cur);
	return t;
}

static void
resp_set(struct wixapi_http_response *resp, long status, char *body)
{
	resp->status = status;
	resp->body = body;
	resp->body_len = strlen(body);
	resp->request_id = xstrdup("req-test");
}

/* Query Refunds: check the wire shape, then serve or fault. */
static enum rs_status
fake_query(struct fake *f, const struct wixapi_http_request *req,
    struct wixapi_http_response *resp)
{
	const cJSON *q, *cp, *c, *lim, *sort;
	const struct fake_fault *ft = NULL;
	cJSON *root;
	char *cursor = NULL, *refunds, *next = NULL, *body;
	int k, off = 0, limit = 100, end;
	size_t i;

	k = ++f->queries;
	root = cJSON_Parse(req->body);
	q = cJSON_GetObjectItemCaseSensitive(root, "query");
	cp = cJSON_GetObjectItemCaseSensitive(q, "cursorPaging");
	c = cJSON_GetObjectItemCaseSensitive(cp, "cursor");
	lim = cJSON_GetObjectItemCaseSensitive(cp, "limit");
	sort = cJSON_GetObjectItemCaseSensitive(q, "sort");
	if (cJSON_IsNumber(lim))
		limit = lim->valueint;
	f->last_limit = limit;
	if (cJSON_IsString(c))
		cursor = xstrdup(c->valuestring);
	append_str(&f->cursors, k > 1 ? "," : "");
	append_str(&f->cursors, cursor != NULL ? cursor : "-");
	if (cursor == NULL && (!cJSON_IsArray(sort) ||
	    strstr(req->body, "\"fieldName\":\"createdDate\"") == NULL ||
	    strstr(req->body, "\"order\":\"ASC\"") == NULL))
		append_str(&f->problems, "first page not sorted;");
	if (cursor != NULL && (sort != NULL ||
	    cJSON_GetObjectItemCaseSensitive(q, "filter") != NULL))
		append_str(&f->problems, "later page with sort or filter;");
	cJSON_Delete(root);
	if (cursor != NULL) {
		long v = strtol(cursor + 1, NULL, 10);

		off = cursor[0] == 'c' && v >= 0 && v <= f->n ? (int)v : 0;
	}
	free(cursor);

	for (i = 0; i < f->nfaults; i++)
		if (f->faults[i].query == k || (f->faults[i].query == 0 &&
		    k >= f->faults[i].from))
			ft = &f->faults[i];
	end = off + limit < f->n ? off + limit : f->n;
	if (end < f->n)
		next = xasprintf("c%d", end);
	refunds = fake_refunds(f, off, end, ft != NULL &&
	    ft->kind == F_BAD_REFUND);
	body = fake_page(refunds, next, end < f->n);
	if (ft == NULL || ft->kind == F_BAD_REFUND) {
		resp_set(resp, 200, body);
		body = NULL;
		goto out;
	}
	switch (ft->kind) {
	case F_STATUS:
		resp_set(resp, ft->status, xstrdup(ft->body != NULL ?
		    ft->body : "{}"));
		if (ft->status == 429)
			resp->retry_after_s = 0;
		break;
	case F_TRUNCATE:
		body[strlen(body) / 2] = '\0';
		resp_set(resp, 200, xstrdup(body));
		break;
	case F_INVALID:
		resp_set(resp, 200, xstrdup("{\"refunds\": [ nope"));
		break;
	case F_TOOBIG:
		free(body);
		free(refunds);
		free(next);
		return RS_ERR_TOOBIG;
	case F_IO:
		resp->error = xstrdup("connection reset (fake)");
		free(body);
		free(refunds);
		free(next);
		return RS_ERR_IO;
	case F_STOP:
		wixapi_stop(f->w);
		if (f->stop_flag != NULL)
			atomic_store(f->stop_flag, true);
		resp->error = xstrdup("stopped (fake)");
		free(body);
		free(refunds);
		free(next);
		return RS_ERR_STOPPING;
	case F_HANG:
		atomic_store(&f->hanging, true);
		while (!wixapi_stopped(f->w))
			usleep(5000);
		resp->error = xstrdup("stopped (fake)");
		free(body);
		free(refunds);
		free(next);
		return RS_ERR_STOPPING;
	case F_REPEAT:
		free(next);
		next = off > 0 ? xasprintf("c%d", off) : xstrdup("c0");
		resp_set(resp, 200, fake_page(refunds, next, true));
		break;
	case F_EMPTY_HASNEXT:
		resp_set(resp, 200, fake_page("[]", "c-empty", true));
		break;
	case F_NO_CURSOR:
		resp_set(resp, 200, fake_page(refunds, NULL, true));
		break;
	case F_CYCLE:
		free(next);
		next = xasprintf("c%d", off - limit > 0 ? off - limit : 0);
		resp_set(resp, 200, fake_page(refunds, next, true));
		break;
	case F_BACKWARDS:
		free(refunds);
		refunds = fake_refunds(f, 0, limit < f->n ? limit : f->n,
		    false);
		free(next);
		next = xasprintf("c%db", end);
		resp_set(resp, 200, fake_page(refunds, next, true));
		break;
	default:
		ck_abort_msg("fault %d", (int)ft->kind);
	}
out:
	free(body);
	free(refunds);
	free(next);
	return RS_OK;
}

static enum rs_status
fake_transport(void *ctx, const struct wixapi_http_request *req,
    struct wixapi_http_response *resp)
{
	struct fake *f = ctx;
	enum rs_status st;
	struct timespec ts;

	if (f->delay_ms > 0) {
		ts.tv_sec = f->delay_ms / 1000;
		ts.tv_nsec = (long)(f->delay_ms % 1000) * 1000000L;
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&f->mu);
	if (strstr(req->url, "/oauth2/token") != NULL) {
		f->tokens++;
		if (f->big_tokens > 0) {
			f->big_tokens--;
			pthread_mutex_unlock(&f->mu);
			return RS_ERR_TOOBIG;
		}
		if (f->bad_tokens > 0) {
			f->bad_tokens--;
			resp_set(resp, 200, xstrdup("{\"access_token\":"
			    "\"OauthNG.JW"));
		} else if (strstr(req->body,
		    "\"client_secret\":\"s3cret\"") == NULL)
			resp_set(resp, 401, xstrdup("{\"message\":\"bad\"}"));
		else
			resp_set(resp, 200, xstrdup("{\"access_token\":"
			    "\"OauthNG.JWS.fake\",\"token_type\":\"Bearer\","
			    "\"expires_in\":14400}"));
		st = RS_OK;
	} else if (strstr(req->url,
	    "/payments/refunds/v1/refunds/query") != NULL) {
		st = fake_query(f, req, resp);
	} else {
		resp_set(resp, 404, xstrdup("{}"));
		st = RS_OK;
	}
	pthread_mutex_unlock(&f->mu);
	return st;
}

/* The fake clock of wixapi: sleeping only moves it on. */
static _Atomic int64_t fake_ms = 1000000;

static int64_t
fake_now(void *ctx)
{
	(void)ctx;
	return atomic_load(&fake_ms);
}

static void
fake_sleep(void *ctx, int64_t ms)
{
	(void)ctx;
	atomic_fetch_add(&fake_ms, ms);
}

static struct wixapi *
fake_wixapi(struct fake *f)
{
	struct wixapi_options o;
	struct wixapi *w = NULL;
	char *why = NULL;

	memset(&o, 0, sizeof(o));
	o.api_base = "https://wix.invalid";
	o.app_id = "app-1";
	o.app_secret = "s3cret";
	o.requests_per_minute = 100000;
	o.max_attempts = 4;
	o.transport = fake_transport;
	o.transport_ctx = f;
	o.now_ms = fake_now;
	o.sleep_ms = fake_sleep;
	ck_assert_msg(wixapi_new(&o, &w, &why) == RS_OK, "wixapi_new: %s",
	    why != NULL ? why : "?");
	return w;
}

/* ---- the store ----------------------------------------------------- */

struct env {
	char		*dir;
	char		*db_path;
	struct store	*st;
	sqlite3		*db;		/* a raw reader */
	struct fake	 fake;
	struct wixapi	*w;
};

static void
env_open(struct env *e, int n)
{
	struct store_options so = { .busy_timeout_ms = 2000 };
	char *why = NULL;

	memset(e, 0, sizeof(*e));
	/* The backfill counters are process-wide: start each test from
	 * zero, so its exact counts hold when check does not fork
	 * (CK_FORK=no, as scripts/valgrind.sh runs it). */
	metrics_reset();
	e->dir = test_dir();
	e->db_path = xasprintf("%s/refundsync.db", e->dir);
	ck_assert_int_eq(store_open(e->db_path, &so, &e->st, &why), RS_OK);
	ck_assert_int_eq(sqlite3_open_v2(e->db_path, &e->db,
	    SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_busy_timeout(e->db, 2000);
	fake_init(&e->fake, n);
	e->w = fake_wixapi(&e->fake);
	e->fake.w = e->w;
}

static void
env_close(struct env *e)
{
	wixapi_free(e->w);
	sqlite3_close(e->db);
	store_close(e->st);
	fake_cleanup(&e->fake);
	free(e->db_path);
	free(e->dir);
}

/* First cell as text ("NULL" for SQL NULL, "" for no row).  Caller
 * frees. */
static char *
sql_text(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	char *out;

	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) ==
	    SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	if (sqlite3_step(stmt) != SQLITE_ROW)
		out = xstrdup("");
	else if (sqlite3_column_type(stmt, 0) == SQLITE_NULL)
		out = xstrdup("NULL");
	else
		out = xstrdup((const char *)sqlite3_column_text(stmt, 0));
	sqlite3_finalize(stmt);
	return out;
}

static int64_t
sql_int(sqlite3 *db, const char *sql)
{
	char *t = sql_text(db, sql);
	int64_t v = strtoll(t, NULL, 10);

	free(t);
	return v;
}

#define ck_sql(db, sql, want) do {					\
	char *got_ = sql_text((db), (sql));				\
	ck_assert_msg(strcmp(got_, (want)) == 0,			\
	    "%s:\n got: %s\nwant: %s", (sql), got_, (want));		\
	free(got_);							\
} while (0)

/* backfill, pages, refunds, cursor, last_error of INST. */
#define INST_ROW "SELECT backfill || '|' || backfill_pages || '|' ||"	\
	" backfill_refunds || '|' || coalesce(backfill_cursor, '-') ||"	\
	" '|' || coalesce(last_error, '-') FROM instances"		\
	" WHERE instance_id = '" INST "'"

/* "r-00000,r-00001,...": the ids a complete backfill of n stores. */
static char *
ids_upto(int n)
{
	char *s = xstrdup(""), *t;
	int i;

	for (i = 0; i < n; i++) {
		t = xasprintf("%s%sr-%05d", s, i > 0 ? "," : "", i);
		free(s);
		s = t;
	}
	return s;
}

/* The stored refunds of INST are exactly r-00000 .. r-(n-1), from the
 * backfill, each with one change-log entry. */
static void
expect_exact_set(struct env *e, int n)
{
	char *want = ids_upto(n), *got;

	got = sql_text(e->db, "SELECT coalesce(group_concat(id, ','), '')"
	    " FROM (SELECT id FROM refunds WHERE instance_id = '" INST "'"
	    " ORDER BY id)");
	ck_assert_msg(strcmp(got, want) == 0, "stored set differs (%d "
	    "wanted)", n);
	free(got);
	free(want);
	ck_assert_int_eq(sql_int(e->db, "SELECT count(*) FROM refunds"), n);
	ck_assert_int_eq(sql_int(e->db, "SELECT count(*) FROM refunds"
	    " WHERE source = 'backfill' AND amount_minor = 150"
	    " AND currency = 'USD' AND status = 'SUCCEEDED'"), n);
}

static struct backfill_options
fast_opts(int page_size)
{
	struct backfill_options o;

	memset(&o, 0, sizeof(o));
	o.page_size = page_size;
	o.retry_base_ms = 1;
	o.retry_max_ms = 4;
	return o;
}

/* Run a backfill of INST; returns the status, *why freed unless out. */
static enum rs_status
run(struct env *e, const struct backfill_options *o, char **why_out)
{
	static char unset[] = "unset";
	char *why = unset;
	enum rs_status rc;

	rc = backfill_run(e->st, e->w, INST, o, &why);
	if (rc == RS_OK)
		ck_assert_ptr_null(why);
	else
		ck_assert_ptr_nonnull(why);
	if (why_out != NULL)
		*why_out = why;
	else
		free(why);
	return rc;
}

/* ---- tests: complete sets ------------------------------------------------ */

static const int set_sizes[] = { 0, 1, 99, 100, 101 };

START_TEST(test_exact_sets)
{
	struct backfill_options o = fast_opts(100);
	struct env e;
	int n = set_sizes[_i];
	int pages = n > 100 ? 2 : 1;
	char want[128];

	env_open(&e, n);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	expect_exact_set(&e, n);
	snprintf(want, sizeof(want), "done|%d|%d|-|-", pages, n);
	ck_sql(e.db, INST_ROW, want);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"
	    " WHERE source = 'backfill'"), n);
	ck_assert_str_eq(e.fake.cursors, pages == 1 ? "-" : "-,c100");
	ck_assert_str_eq(e.fake.problems, "");
	ck_assert_int_eq(e.fake.last_limit, 100);
	ck_assert_int_eq(e.fake.tokens, 1);
	ck_assert_uint_eq(wixapi_requests_sent(e.w, INST),
	    (uint64_t)pages + 1);
	ck_sql(e.db, "SELECT backfill_started_at IS NOT NULL AND"
	    " backfill_finished_at >= backfill_started_at FROM instances", "1");
	snprintf(want, sizeof(want), "instance=\"%s\"", INST);
	ck_assert_int_eq(metrics_get("refundsync_backfill_pages_total", want),
	    pages);
	ck_assert_int_eq(metrics_get("refundsync_backfill_refunds_total",
	    want), n);
	ck_assert_int_eq(metrics_get("refundsync_backfill_running", want), 0);
	ck_assert_int_eq(metrics_get("refundsync_backfill_failures_total",
	    want), 0);
	env_close(&e);
}
END_TEST

/* Small pages: 101 refunds in pages of 7 is 15 pages, each cursor asked
 * for once, in order. */
START_TEST(test_small_pages)
{
	struct backfill_options o = fast_opts(7);
	struct env e;
	char *want = xstrdup("-"), *t;
	int off;

	env_open(&e, 101);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	expect_exact_set(&e, 101);
	ck_sql(e.db, INST_ROW, "done|15|101|-|-");
	for (off = 7; off < 101; off += 7) {
		t = xasprintf("%s,c%d", want, off);
		free(want);
		want = t;
	}
	ck_assert_str_eq(e.fake.cursors, want);
	ck_assert_int_eq(e.fake.last_limit, 7);
	ck_assert_str_eq(e.fake.problems, "");
	free(want);

	/* Done, then run again without restart: from the first page. */
	free(e.fake.cursors);
	e.fake.cursors = xstrdup("");
	e.fake.queries = 0;
	o.page_size = 50;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert_str_eq(e.fake.cursors, "-,c50,c100");
	ck_sql(e.db, INST_ROW, "done|3|101|-|-");
	/* Nothing was newer: no new change-log entries. */
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 101);
	env_close(&e);
}
END_TEST

/* A newer revision stored from a webhook survives a backfill page that
 * carries an older one; an older webhook version is replaced. */
START_TEST(test_webhook_newer_survives)
{
	struct backfill_options o = fast_opts(10);
	struct event ev;
	struct env e;
	enum store_outcome out;
	const char *why = NULL;
	cJSON *json = NULL;
	const char *text[2] = {
	    "{\"id\":\"r-00005\",\"revision\":\"9\",\"createdDate\":"
	    "\"2024-01-01T00:00:05Z\",\"updatedDate\":\"2024-02-01T00:00:00Z\","
	    "\"chargeId\":\"ch-5\",\"currencyCode\":\"USD\",\"amount\":"
	    "\"1.50\",\"status\":\"REVERSED\"}",
	    "{\"id\":\"r-00012\",\"revision\":\"1\",\"createdDate\":"
	    "\"2024-01-01T00:00:12Z\",\"chargeId\":\"ch-12\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1.50\",\"status\":"
	    "\"PENDING\"}" };
	int i;

	env_open(&e, 25);
	e.fake.rev = 3;
	for (i = 0; i < 2; i++) {
		memset(&ev, 0, sizeof(ev));
		ev.kind = EVENT_REFUND;
		ev.event_type = xstrdup(EVENT_TYPE_REFUND_UPDATED);
		ev.instance_id = xstrdup(INST);
		ev.event_id = xasprintf("ev-%d", i);
		ck_assert_int_eq(json_parse_strict(text[i], strlen(text[i]),
		    JSON_MAX_DEPTH, &json, &why), RS_OK);
		ck_assert_int_eq(refund_from_json(json, &ev.refund, &why),
		    RS_OK);
		cJSON_Delete(json);
		ck_assert_int_eq(store_begin(e.st), RS_OK);
		ck_assert_int_eq(store_apply_event(e.st, &ev, ev.event_id,
		    &out), RS_OK);
		ck_assert_int_eq(store_commit(e.st), RS_OK);
		ck_assert_int_eq(out, STORE_APPLIED);
		event_cleanup(&ev);
	}

	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_sql(e.db, "SELECT status || '|' || revision || '|' || source FROM"
	    " refunds WHERE id = 'r-00005'", "REVERSED|9|webhook");
	ck_sql(e.db, "SELECT status || '|' || revision || '|' || source FROM"
	    " refunds WHERE id = 'r-00012'", "SUCCEEDED|3|backfill");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"), 25);
	/* 2 from webhooks, 24 from the backfill (r-00005 was stale). */
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 26);
	ck_sql(e.db, INST_ROW, "done|3|25|-|-");
	env_close(&e);
}
END_TEST

/* ---- tests: stop and resume ------------------------------------------- */

struct stop_after {
	atomic_bool	 stop;
	int64_t		 after;		/* stop after this many */
	int		 calls;
	int		 finished;
	char		*notes;
};

static void
stop_progress(void *arg, const struct backfill_progress *p)
{
	struct stop_after *s = arg;

	s->calls++;
	ck_assert_str_eq(p->instance_id, INST);
	ck_assert_int_ge(p->elapsed_ms, 0);
	ck_assert_uint_ge(p->requests, 1);
	if (p->finished)
		s->finished++;
	if (p->note != NULL) {
		append_str(&s->notes, p->note);
		append_str(&s->notes, ";");
	}
	if (s->after > 0 && p->run_pages >= s->after)
		atomic_store(&s->stop, true);
}

/* Zero s, and have a run with options o report its progress to s. */
static void
stop_after_init(struct stop_after *s, struct backfill_options *o)
{
	memset(s, 0, sizeof(*s));
	s->notes = xstrdup("");
	atomic_init(&s->stop, false);
	o->progress = stop_progress;
	o->progress_arg = s;
}

/* Stopped after page 3 (as a kill between pages would leave it), the
 * next run resumes from the committed cursor: no page lost, none asked
 * for twice.  The one-thread loop (no fetcher thread), where the stop
 * lands exactly after page 3; test_pipe_stop_resume has the same with a
 * fetcher thread. */
START_TEST(test_stop_resume)
{
	struct backfill_options o = fast_opts(10);
	struct stop_after s;
	struct store_instance in;
	struct env e;
	char *why = NULL;

	o.queue_pages = -1;
	env_open(&e, 95);
	stop_after_init(&s, &o);
	s.after = 3;
	o.stop = &s.stop;
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_STOPPING);
	ck_assert_ptr_nonnull(strstr(why, "stopped after page 3"));
	free(why);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c20");
	ck_sql(e.db, INST_ROW, "running|3|30|c30|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"), 30);
	ck_assert_int_eq(s.finished, 1);
	ck_assert_uint_eq(wixapi_requests_sent(e.w, INST), 4);
	ck_assert_int_eq(store_instance_get(e.st, INST, &in), RS_OK);
	ck_assert_int_eq(in.backfill, STORE_BACKFILL_RUNNING);
	ck_assert_str_eq(in.backfill_cursor, "c30");
	store_instance_cleanup(&in);

	/* The next run, with a new client (a new process). */
	wixapi_free(e.w);
	e.w = fake_wixapi(&e.fake);
	atomic_store(&s.stop, false);
	s.after = 0;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c20,c30,c40,c50,c60,c70,c80,"
	    "c90");
	ck_assert_int_eq(e.fake.queries, 10);
	ck_assert_uint_eq(wixapi_requests_sent(e.w, INST), 7 + 1);
	expect_exact_set(&e, 95);
	ck_sql(e.db, INST_ROW, "done|10|95|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 95);
	ck_assert_str_eq(s.notes, "stopped;");

	/* restart: from the first page although it is done. */
	free(e.fake.cursors);
	e.fake.cursors = xstrdup("");
	e.fake.queries = 0;
	o.restart = true;
	o.page_size = 60;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert_str_eq(e.fake.cursors, "-,c60");
	ck_sql(e.db, INST_ROW, "done|2|95|-|-");
	free(s.notes);
	env_close(&e);
}
END_TEST

/* A stop flag already set: nothing is asked for, the state stays
 * running. */
START_TEST(test_stop_before_start)
{
	struct backfill_options o = fast_opts(10);
	atomic_bool stop;
	struct env e;

	env_open(&e, 5);
	atomic_init(&stop, true);
	o.stop = &stop;
	ck_assert_int_eq(run(&e, &o, NULL), RS_ERR_STOPPING);
	ck_assert_int_eq(e.fake.queries, 0);
	ck_sql(e.db, INST_ROW, "running|0|0|-|-");
	env_close(&e);
}
END_TEST

/* ---- tests: Wix misbehaving ---------------------------------------------- */

#define CURSOR_400 "{\"message\":\"cursor expired\",\"details\":" \
	"{\"applicationError\":{\"code\":\"INVALID_CURSOR\"," \
	"\"description\":\"The cursor is no longer valid\"}}}"

/* A rejected cursor starts the run over from the first page; the counts
 * end as for one clean pass and the note says why. */
START_TEST(test_cursor_rejected)
{
	struct backfill_options o = fast_opts(10);
	struct stop_after s;
	struct env e;

	env_open(&e, 35);
	stop_after_init(&s, &o);
	fake_fault(&e.fake, 3, F_STATUS, 400, CURSOR_400);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c20,-,c10,c20,c30");
	expect_exact_set(&e, 35);
	ck_sql(e.db, INST_ROW, "done|4|35|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 35);
	ck_assert_msg(strstr(s.notes, "Wix rejected the cursor (HTTP 400: "
	    "INVALID_CURSOR") != NULL && strstr(s.notes, "starting again "
	    "from the first page") != NULL, "notes: %s", s.notes);
	free(s.notes);
	env_close(&e);
}
END_TEST

/* A cursor rejected again and again fails the run instead of looping. */
START_TEST(test_cursor_rejected_forever)
{
	struct backfill_options o = fast_opts(10);
	struct env e;
	char *why = NULL;

	env_open(&e, 35);
	o.max_restarts = 2;
	fake_fault(&e.fake, 2, F_STATUS, 400, CURSOR_400);
	fake_fault(&e.fake, 4, F_STATUS, 400, CURSOR_400);
	fake_fault(&e.fake, 6, F_STATUS, 400, CURSOR_400);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_RANGE);
	ck_assert_msg(strstr(why, "Wix rejected the cursor 3 times") != NULL,
	    "%s", why);
	ck_assert_str_eq(e.fake.cursors, "-,c10,-,c10,-,c10");
	ck_assert_int_eq(sql_int(e.db, "SELECT backfill = 'failed' AND"
	    " backfill_cursor = 'c10' AND last_error LIKE 'Wix rejected the"
	    " cursor 3 times%' FROM instances"), 1);
	free(why);
	env_close(&e);
}
END_TEST

/* ---- backfill_walk(): the pager without the store ------------------------ */

struct walk_seen {
	int	 pages;
	int	 refunds;
	int	 restarts;
	int	 stop_at;	/* return RS_ERR_IO at this page; 0: never */
	char	*ids;		/* "r-00000,r-00001,..." as handed over */
};

static enum rs_status
walk_page(void *arg, const struct wixapi_page *p)
{
	struct walk_seen *ws = arg;
	char *t;
	size_t i;

	ws->pages++;
	if (ws->stop_at != 0 && ws->pages == ws->stop_at)
		return RS_ERR_IO;
	for (i = 0; i < p->n; i++) {
		t = xasprintf("%s%s%s", ws->ids, ws->ids[0] != '\0' ? "," : "",
		    p->refunds[i].id);
		free(ws->ids);
		ws->ids = t;
		ws->refunds++;
	}
	return RS_OK;
}

static void
walk_restart(void *arg)
{
	struct walk_seen *ws = arg;

	ws->restarts++;
	ws->refunds = 0;
	free(ws->ids);
	ws->ids = xstrdup("");
}

/* A walk hands every page over, stores nothing, and a rejected cursor
 * makes the caller forget what it had before the first page comes
 * again. */
START_TEST(test_walk)
{
	struct backfill_options o = fast_opts(10);
	struct walk_seen ws;
	struct env e;
	char *why = NULL, *want;

	env_open(&e, 35);
	memset(&ws, 0, sizeof(ws));
	ws.ids = xstrdup("");
	fake_fault(&e.fake, 3, F_STATUS, 400, CURSOR_400);
	ck_assert_int_eq(backfill_walk(e.w, INST, &o, walk_page,
	    walk_restart, &ws, &why), RS_OK);
	ck_assert_ptr_null(why);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c20,-,c10,c20,c30");
	ck_assert_int_eq(ws.restarts, 1);
	ck_assert_int_eq(ws.pages, 6);
	ck_assert_int_eq(ws.refunds, 35);
	want = ids_upto(35);
	ck_assert_str_eq(ws.ids, want);
	free(want);
	/* Nothing stored, no instance row, no backfill counters. */
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"), 0);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM instances"), 0);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 0);
	free(ws.ids);
	env_close(&e);
}
END_TEST

/* The page callback's error ends the walk and is returned; the loop
 * checks of a backfill hold for a walk too. */
START_TEST(test_walk_errors)
{
	struct backfill_options o = fast_opts(10);
	struct walk_seen ws;
	struct env e;
	char *why = NULL;

	env_open(&e, 35);
	memset(&ws, 0, sizeof(ws));
	ws.ids = xstrdup("");
	ws.stop_at = 2;
	ck_assert_int_eq(backfill_walk(e.w, INST, &o, walk_page, NULL, &ws,
	    &why), RS_ERR_IO);
	ck_assert_msg(why != NULL && strstr(why, "page 2") != NULL, "%s",
	    why != NULL ? why : "(null)");
	ck_assert_str_eq(e.fake.cursors, "-,c10");
	ck_assert_int_eq(ws.refunds, 10);
	free(why);
	why = NULL;
	free(ws.ids);
	env_close(&e);

	env_open(&e, 35);
	memset(&ws, 0, sizeof(ws));
	ws.ids = xstrdup("");
	fake_fault(&e.fake, 3, F_REPEAT, 0, NULL);
	ck_assert_int_eq(backfill_walk(e.w, INST, &o, walk_page, NULL, &ws,
	    &why), RS_ERR_INPUT);
	ck_assert_msg(why != NULL && strstr(why, "repeated cursor") != NULL,
	    "%s", why != NULL ? why : "(null)");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM instances"), 0);
	free(why);
	why = NULL;
	ck_assert_int_eq(backfill_walk(e.w, NULL, &o, walk_page, NULL, &ws,
	    &why), RS_ERR_INPUT);
	free(why);
	free(ws.ids);
	env_close(&e);
}
END_TEST

/*
 * A stop that lands while a Query Refunds call is in flight (wixapi cuts
 * it short: RS_ERR_STOPPING) is a stop, not a failure: no retry, no
 * "trying again", no last_error, no failure counted; the run ends at
 * its last committed page with the state 'running' and the cursor
 * kept, and the next run (a new client) resumes there.  _i: 0, 1 the
 * one-thread loop, 2, 3 with the fetcher thread; odd: opt->stop is set
 * too (as the CLI does), even: only the client is stopped (as the
 * daemon does first).  4: a walk.
 */
START_TEST(test_stop_in_fetch)
{
	struct backfill_options o = fast_opts(10);
	struct stop_after s;
	struct walk_seen ws;
	struct env e;
	char *why = NULL, *want;

	env_open(&e, 95);
	stop_after_init(&s, &o);
	o.stop = &s.stop;
	o.queue_pages = _i < 2 ? -1 : 0;
	if (_i % 2 == 1)
		e.fake.stop_flag = &s.stop;
	if (_i == 4) {
		memset(&ws, 0, sizeof(ws));
		ws.ids = xstrdup("");
		fake_fault(&e.fake, 3, F_STOP, 0, NULL);
		ck_assert_int_eq(backfill_walk(e.w, INST, &o, walk_page,
		    walk_restart, &ws, &why), RS_ERR_STOPPING);
		ck_assert_str_eq(why, "stopped after page 2");
		free(why);
		ck_assert_int_eq(ws.pages, 2);
		ck_assert_int_eq(ws.refunds, 20);
		ck_assert_str_eq(e.fake.cursors, "-,c10,c20");
		ck_assert_int_eq(e.fake.queries, 3);
		ck_assert_str_eq(s.notes, "");
		free(ws.ids);
		free(s.notes);
		env_close(&e);
		return;
	}
	fake_fault(&e.fake, 4, F_STOP, 0, NULL);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_STOPPING);
	ck_assert_str_eq(why, "stopped after page 3");
	free(why);
	ck_assert(wixapi_stopped(e.w));
	/* Asked once, not retried. */
	ck_assert_str_eq(e.fake.cursors, "-,c10,c20,c30");
	ck_assert_int_eq(e.fake.queries, 4);
	ck_assert_uint_eq(wixapi_requests_sent(e.w, INST), 1 + 4);
	ck_sql(e.db, INST_ROW, "running|3|30|c30|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"), 30);
	ck_assert_int_eq(metrics_get("refundsync_backfill_failures_total",
	    "instance=\"" INST "\""), 0);
	ck_assert_int_eq(s.finished, 1);
	ck_assert_str_eq(s.notes, "stopped;");

	/* The next run, with a new client (a new process), resumes. */
	wixapi_free(e.w);
	e.w = fake_wixapi(&e.fake);
	e.fake.w = e.w;
	atomic_store(&s.stop, false);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	want = xasprintf("-,c10,c20,c30,c30,c40,c50,c60,c70,c80,c90");
	ck_assert_str_eq(e.fake.cursors, want);
	free(want);
	expect_exact_set(&e, 95);
	ck_sql(e.db, INST_ROW, "done|10|95|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 95);
	free(s.notes);
	env_close(&e);
}
END_TEST

struct loop_case {
	enum fault	 kind;
	const char	*message;	/* in why and last_error */
	const char	*cursors;	/* queries made */
};

static const struct loop_case loop_cases[] = {
	{ F_REPEAT, "Query Refunds repeated cursor \"c20\" after page 3: "
	    "stopping instead of looping", "-,c10,c20" },
	{ F_EMPTY_HASNEXT, "Query Refunds returned an empty page 3 with "
	    "hasNext true: stopping instead of looping", "-,c10,c20" },
	{ F_NO_CURSOR, "Query Refunds page 3 has hasNext true but no next "
	    "cursor: stopping instead of guessing", "-,c10,c20" },
	{ F_BACKWARDS, "Query Refunds went backwards: page 3 starts at "
	    "createdDate 2024-01-01T00:00:00Z, before the previous page's "
	    "last (2024-01-01T00:00:19Z): stopping instead of looping",
	    "-,c10,c20" },
};

/* The looping faults: a clear error, state failed, nothing of the bad
 * page stored, the cursor left at the last good page, and no loop. */
START_TEST(test_loop_faults)
{
	const struct loop_case *lc = &loop_cases[_i];
	struct backfill_options o = fast_opts(10);
	struct store_instance in;
	struct env e;
	char *why = NULL, label[64];

	env_open(&e, 55);
	fake_fault(&e.fake, 3, lc->kind, 0, NULL);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_INPUT);
	ck_assert_str_eq(why, lc->message);
	ck_assert_str_eq(e.fake.cursors, lc->cursors);
	ck_assert_int_eq(store_instance_get(e.st, INST, &in), RS_OK);
	ck_assert_int_eq(in.backfill, STORE_BACKFILL_FAILED);
	ck_assert_str_eq(in.last_error, lc->message);
	ck_assert_str_eq(in.backfill_cursor, "c20");
	ck_assert_int_eq(in.backfill_pages, 2);
	ck_assert_int_eq(in.backfill_refunds, 20);
	ck_assert_ptr_nonnull(in.backfill_finished_at);
	store_instance_cleanup(&in);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"), 20);
	snprintf(label, sizeof(label), "instance=\"%s\"", INST);
	ck_assert_int_eq(metrics_get("refundsync_backfill_failures_total",
	    label), 1);
	free(why);

	/* Wix behaves again: a new run resumes from c20 and completes. */
	e.fake.nfaults = 0;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	expect_exact_set(&e, 55);
	ck_sql(e.db, INST_ROW, "done|6|55|-|-");
	env_close(&e);
}
END_TEST

/* A repeated cursor from further back (a cycle of two) is caught too. */
START_TEST(test_cursor_cycle)
{
	struct backfill_options o = fast_opts(10);
	struct env e;
	char *why = NULL;

	env_open(&e, 55);
	/* Query 3 (for c20) answers with c10 as next: seen before. */
	fake_fault(&e.fake, 3, F_CYCLE, 0, NULL);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_INPUT);
	ck_assert_str_eq(why, "Query Refunds repeated cursor \"c10\" after "
	    "page 3: stopping instead of looping");
	ck_assert_int_eq(e.fake.queries, 3);
	ck_sql(e.db, INST_ROW, "failed|2|20|c20|Query Refunds repeated cursor"
	    " \"c10\" after page 3: stopping instead of looping");
	free(why);
	env_close(&e);
}
END_TEST

/* Malformed pages (truncated, not JSON, a refund that does not parse,
 * too big, a transport failure) are tried again; nothing of them is
 * stored, and the run completes. */
START_TEST(test_malformed_retried)
{
	struct backfill_options o = fast_opts(10);
	struct stop_after s;
	struct env e;

	env_open(&e, 45);
	stop_after_init(&s, &o);
	o.page_attempts = 6;
	fake_fault(&e.fake, 2, F_TRUNCATE, 0, NULL);
	fake_fault(&e.fake, 3, F_INVALID, 0, NULL);
	fake_fault(&e.fake, 4, F_BAD_REFUND, 0, NULL);
	fake_fault(&e.fake, 5, F_TOOBIG, 0, NULL);
	fake_fault(&e.fake, 7, F_STATUS, 500, "oops");
	fake_fault(&e.fake, 8, F_STATUS, 429, "{}");
	fake_fault(&e.fake, 9, F_IO, 0, NULL);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert_str_eq(e.fake.cursors,
	    "-,c10,c10,c10,c10,c10,c20,c20,c20,c20,c30,c40");
	expect_exact_set(&e, 45);
	ck_sql(e.db, INST_ROW, "done|5|45|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 45);
	ck_assert_msg(strstr(s.notes, "malformed page, HTTP 200") != NULL &&
	    strstr(s.notes, "oversized page") != NULL, "notes: %s", s.notes);
	free(s.notes);
	env_close(&e);
}
END_TEST

/* A page that stays malformed fails the run after page_attempts, with
 * the cursor kept for the next run. */
START_TEST(test_malformed_forever)
{
	struct backfill_options o = fast_opts(10);
	struct env e;
	char *why = NULL;

	env_open(&e, 45);
	o.page_attempts = 3;
	fake_fault_from(&e.fake, 2, F_TRUNCATE);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_INPUT);
	ck_assert_msg(strstr(why, "Query Refunds failed 3 times; the last: "
	    "malformed page, HTTP 200") != NULL, "%s", why);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c10,c10");
	ck_sql(e.db, INST_ROW, "failed|1|10|c10|Query Refunds failed 3 times;"
	    " the last: malformed page, HTTP 200: syntax error [request id"
	    " req-test]");
	free(why);
	env_close(&e);
}
END_TEST

/* A refund that never parses: last_error says which one and why, not
 * only that the page was malformed. */
START_TEST(test_bad_refund_forever)
{
	struct backfill_options o = fast_opts(10);
	struct env e;
	char *why = NULL;

	env_open(&e, 45);
	o.page_attempts = 2;
	fake_fault_from(&e.fake, 3, F_BAD_REFUND);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_INPUT);
	ck_assert_str_eq(why, "Query Refunds failed 2 times; the last: "
	    "malformed page, HTTP 200: refund 0 (r-00020): amount is not a "
	    "decimal string [request id req-test]");
	ck_sql(e.db, INST_ROW, "failed|2|20|c20|Query Refunds failed 2 times;"
	    " the last: malformed page, HTTP 200: refund 0 (r-00020): amount"
	    " is not a decimal string [request id req-test]");
	free(why);
	env_close(&e);
}
END_TEST

/* A 4xx application error fails the run at once (no retry), with the
 * code in last_error; the next run resumes once Wix agrees again. */
START_TEST(test_4xx_fails)
{
	struct backfill_options o = fast_opts(10);
	struct env e;
	char *why = NULL;

	env_open(&e, 25);
	fake_fault(&e.fake, 2, F_STATUS, 403, "{\"message\":\"nope\","
	    "\"details\":{\"applicationError\":{\"code\":\"FORBIDDEN\","
	    "\"description\":\"the app lacks the refunds scope\"}}}");
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_INPUT);
	ck_assert_str_eq(why, "Query Refunds failed: HTTP 403: FORBIDDEN: the "
	    "app lacks the refunds scope: nope [request id req-test]");
	ck_assert_str_eq(e.fake.cursors, "-,c10");
	ck_sql(e.db, INST_ROW, "failed|1|10|c10|Query Refunds failed: HTTP "
	    "403: FORBIDDEN: the app lacks the refunds scope: nope [request id"
	    " req-test]");
	free(why);
	e.fake.nfaults = 0;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c10,c20");
	expect_exact_set(&e, 25);
	ck_sql(e.db, INST_ROW, "done|3|25|-|-");
	env_close(&e);
}
END_TEST

/* Retries exhausted inside wixapi (5xx all along) count as transient
 * here, then fail with the cursor kept. */
START_TEST(test_5xx_forever)
{
	struct backfill_options o = fast_opts(10);
	struct env e;
	char *why = NULL;

	env_open(&e, 25);
	o.page_attempts = 2;
	fake_fault(&e.fake, 0, F_STATUS, 503, "busy");
	e.fake.faults[0].from = 2;
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_BUSY);
	ck_assert_msg(strstr(why, "Query Refunds failed 2 times") != NULL,
	    "%s", why);
	/* wixapi tried 4 times for each of the 2 attempts. */
	ck_assert_int_eq(e.fake.queries, 1 + 2 * 4);
	ck_sql(e.db, "SELECT backfill || '|' || backfill_cursor FROM"
	    " instances", "failed|c10");
	free(why);
	env_close(&e);
}
END_TEST

/* Credentials Wix refuses: a clear failure. */
START_TEST(test_auth_refused)
{
	struct backfill_options o = fast_opts(10);
	struct wixapi_options wo;
	struct env e;
	char *why = NULL, *cwhy = NULL;

	env_open(&e, 5);
	wixapi_free(e.w);
	memset(&wo, 0, sizeof(wo));
	wo.api_base = "https://wix.invalid";
	wo.app_id = "app-1";
	wo.app_secret = "wrong";
	wo.transport = fake_transport;
	wo.transport_ctx = &e.fake;
	wo.now_ms = fake_now;
	wo.sleep_ms = fake_sleep;
	ck_assert_int_eq(wixapi_new(&wo, &e.w, &cwhy), RS_OK);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_AUTH);
	ck_assert_msg(strstr(why, "Wix refused the app credentials") != NULL,
	    "%s", why);
	ck_assert_ptr_null(strstr(why, "wrong"));
	ck_assert_int_eq(e.fake.queries, 0);
	ck_sql(e.db, "SELECT backfill FROM instances", "failed");
	free(why);
	env_close(&e);
}
END_TEST

/*
 * A run over e, whose fake the test has set to spoil every token
 * answer, with two page attempts: it fails with status and the message
 * want, and no page was asked for.
 */
static void
tokens_fail(struct env *e, enum rs_status status, const char *want)
{
	struct backfill_options o = fast_opts(10);
	char *why = NULL;

	o.page_attempts = 2;
	ck_assert_int_eq(run(e, &o, &why), status);
	ck_assert_str_eq(why, want);
	ck_assert_int_eq(e->fake.queries, 0);
	free(why);
}

/* A token answer cut short on the way (a 200 that is not JSON) is not
 * a refusal of the credentials: the page is asked for again, and the
 * run completes.  One that stays garbled fails, saying so. */
START_TEST(test_token_garbled)
{
	struct backfill_options o = fast_opts(10);
	struct stop_after s;
	struct env e;

	env_open(&e, 25);
	stop_after_init(&s, &o);
	e.fake.bad_tokens = 2;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	expect_exact_set(&e, 25);
	ck_sql(e.db, INST_ROW, "done|3|25|-|-");
	ck_assert_int_eq(e.fake.tokens, 3);
	ck_assert_msg(strstr(s.notes, "no usable access token, HTTP 200: "
	    "syntax error") != NULL, "notes: %s", s.notes);
	free(s.notes);
	env_close(&e);

	env_open(&e, 25);
	e.fake.bad_tokens = 100;
	tokens_fail(&e, RS_ERR_AUTH, "Query Refunds failed 2 times; the last: "
	    "no usable access token, HTTP 200: syntax error [request id "
	    "req-test]");
	env_close(&e);
}
END_TEST

/* A token answer over the size cap is said to be one, not an oversized
 * page (no page was asked for); it is tried again like one, and one
 * that stays too large fails the run saying so. */
START_TEST(test_token_oversized)
{
	struct backfill_options o = fast_opts(10);
	struct stop_after s;
	struct env e;

	env_open(&e, 25);
	stop_after_init(&s, &o);
	e.fake.big_tokens = 1;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	expect_exact_set(&e, 25);
	ck_assert_int_eq(e.fake.tokens, 2);
	ck_assert_msg(strstr(s.notes, "oversized OAuth token answer, too "
	    "large; trying again") != NULL && strstr(s.notes, "page,") ==
	    NULL, "notes: %s", s.notes);
	free(s.notes);
	env_close(&e);

	env_open(&e, 25);
	e.fake.big_tokens = 100;
	tokens_fail(&e, RS_ERR_INPUT, "Query Refunds failed 2 times; the "
	    "last: oversized OAuth token answer, too large");
	env_close(&e);
}
END_TEST

/* An instance id wixapi cannot send (a control character, over 256
 * bytes) fails at once, saying so: nothing was sent, so it is no
 * malformed page to ask for again. */
START_TEST(test_instance_id_unusable)
{
	struct backfill_options o = fast_opts(10);
	const char *ids[] = { "inst\n2", NULL };
	struct env e;
	char *why = NULL, longid[300];
	size_t i;

	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	ids[1] = longid;
	env_open(&e, 5);
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(backfill_run(e.st, e.w, ids[i], &o, &why),
		    RS_ERR_INPUT);
		ck_assert_str_eq(why, "Query Refunds failed: bad input: no "
		    "usable instance id (empty, over 256 bytes or with "
		    "control characters)");
		free(why);
		why = NULL;
	}
	ck_assert_int_eq(e.fake.tokens + e.fake.queries, 0);
	env_close(&e);
}
END_TEST

/* The store cannot commit for a while: the page is tried again, then
 * goes in. */
struct lock_ctx {
	sqlite3		*db;
	int		 hold_ms;
};

static void *
lock_thread(void *arg)
{
	struct lock_ctx *l = arg;
	struct timespec ts = { 0, 0 };

	ts.tv_sec = l->hold_ms / 1000;
	ts.tv_nsec = (long)(l->hold_ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
	sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
	return NULL;
}

START_TEST(test_store_busy_retried)
{
	struct backfill_options o = fast_opts(10);
	struct store_options so = { .busy_timeout_ms = 20 };
	struct lock_ctx l;
	struct env e;
	pthread_t t;
	char *why = NULL;

	env_open(&e, 15);
	store_close(e.st);
	ck_assert_int_eq(store_open(e.db_path, &so, &e.st, &why), RS_OK);
	o.page_attempts = 20;
	o.retry_base_ms = 20;
	o.retry_max_ms = 40;
	ck_assert_int_eq(store_instance_ensure(e.st, INST, NULL), RS_OK);
	ck_assert_int_eq(sqlite3_exec(e.db, "BEGIN IMMEDIATE", NULL, NULL,
	    NULL), SQLITE_OK);
	l.db = e.db;
	l.hold_ms = 150;
	ck_assert_int_eq(pthread_create(&t, NULL, lock_thread, &l), 0);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	pthread_join(t, NULL);
	expect_exact_set(&e, 15);
	ck_sql(e.db, INST_ROW, "done|2|15|-|-");
	env_close(&e);
}
END_TEST

/* ---- tests: the pipeline (a fetcher thread, batched commits) ------------- */

/* Queries the fake has answered so far (the fetcher thread makes them). */
static int
fake_queries(struct fake *f)
{
	int n;

	pthread_mutex_lock(&f->mu);
	n = f->queries;
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* Wait (up to 10 s) for at least want queries, then 100 ms more: the
 * count then, once no more can come. */
static int
wait_queries(struct fake *f, int want)
{
	struct timespec ts = { 0, 2 * 1000000L };
	int i;

	for (i = 0; i < 5000 && fake_queries(f) < want; i++)
		nanosleep(&ts, NULL);
	ts.tv_nsec = 100 * 1000000L;
	nanosleep(&ts, NULL);
	return fake_queries(f);
}

/*
 * A progress callback that watches the pipeline from the committer's
 * side.  It records, for each committed page, "run_pages:backfill_pages
 * stored;" (so a multi-page transaction shows as several pages seeing
 * the same stored count) and, for a note, "N<run_pages>/<pages>;".  At
 * the first committed page it can hold the committer until the fetcher
 * has made hold_extra queries beyond the pages stored (then it is
 * blocked on a full queue) or hold_until queries in all, and then set
 * the stop flag and take the store's write lock.
 */
struct pipe_probe {
	struct env	*e;
	atomic_bool	 stop;
	int		 hold_extra;	/* 0: see hold_until */
	int		 hold_until;	/* 0: no hold */
	bool		 stop_held;	/* set stop when held */
	bool		 lock_held;	/* BEGIN IMMEDIATE on e->db when held */
	bool		 held;
	int64_t		 held_pages;	/* stored when held */
	int		 held_queries;	/* queries made when let go */
	char		*trace;
	char		*notes;
};

static void
probe_progress(void *arg, const struct backfill_progress *p)
{
	struct pipe_probe *pp = arg;
	int64_t stored;
	char *t;

	if (p->finished)
		return;
	stored = sql_int(pp->e->db, "SELECT backfill_pages FROM instances"
	    " WHERE instance_id = '" INST "'");
	if (p->note != NULL) {
		t = xasprintf("%sN%lld/%lld;", pp->trace,
		    (long long)p->run_pages, (long long)p->pages);
		append_str(&pp->notes, p->note);
		append_str(&pp->notes, ";");
	} else
		t = xasprintf("%s%lld:%lld;", pp->trace,
		    (long long)p->run_pages, (long long)stored);
	free(pp->trace);
	pp->trace = t;
	if (p->note != NULL || pp->held ||
	    (pp->hold_extra == 0 && pp->hold_until == 0))
		return;
	pp->held = true;
	pp->held_pages = stored;
	pp->held_queries = wait_queries(&pp->e->fake, pp->hold_until > 0 ?
	    pp->hold_until : (int)stored + pp->hold_extra);
	if (pp->lock_held)
		ck_assert_int_eq(sqlite3_exec(pp->e->db, "BEGIN IMMEDIATE",
		    NULL, NULL, NULL), SQLITE_OK);
	if (pp->stop_held)
		atomic_store(&pp->stop, true);
}

static void
probe_init(struct pipe_probe *pp, struct env *e, struct backfill_options *o)
{
	memset(pp, 0, sizeof(*pp));
	pp->e = e;
	atomic_init(&pp->stop, false);
	pp->trace = xstrdup("");
	pp->notes = xstrdup("");
	o->stop = &pp->stop;
	o->progress = probe_progress;
	o->progress_arg = pp;
}

static void
probe_cleanup(struct pipe_probe *pp)
{
	free(pp->trace);
	free(pp->notes);
}

/* Every page of the trace was stored when it was reported: the stored
 * count is never below run_pages (one run from the first page). */
static void
expect_trace_stored(const char *trace)
{
	long long a, b;
	int used;

	while (*trace != '\0') {
		if (*trace == 'N') {
			trace = strchr(trace, ';');
			ck_assert_ptr_nonnull(trace);
			trace++;
			continue;
		}
		ck_assert_int_eq(sscanf(trace, "%lld:%lld;%n", &a, &b,
		    &used), 2);
		ck_assert_msg(b >= a, "page %lld reported with %lld stored",
		    a, b);
		trace += used;
	}
}

/* "c<from>,c<from+step>,...,c<to>". Caller frees. */
static char *
cursors_from(int from, int to, int step)
{
	char *s = xstrdup(""), *t;
	int c;

	for (c = from; c <= to; c += step) {
		t = xasprintf("%s%sc%d", s, c > from ? "," : "", c);
		free(s);
		s = t;
	}
	return s;
}

/* Forget the fake's query log, before a second run. */
static void
fake_forget(struct fake *f)
{
	free(f->cursors);
	f->cursors = xstrdup("");
	f->queries = 0;
}

/*
 * Pages ready together go in one transaction: with the committer held
 * until the fetcher is blocked on a full queue of 3, the 3 queued pages
 * are committed at once (each reported with the same stored count, the
 * last one's), the cursor after the last; the queue never holds more
 * than 3; and the whole run stores the exact set, asks for each page
 * once and counts every page once.
 */
START_TEST(test_pipe_batches)
{
	struct backfill_options o = fast_opts(10);
	struct pipe_probe pp;
	struct env e;
	char *want, *batch;
	long long h;

	env_open(&e, 200);
	probe_init(&pp, &e, &o);
	o.queue_pages = 3;
	pp.hold_extra = 3 + 1;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert(pp.held);
	h = (long long)pp.held_pages;
	ck_assert_int_ge(h, 1);
	/* Blocked: the stored pages, 3 queued, 1 waiting to be. */
	ck_assert_int_eq(pp.held_queries, (int)h + 4);
	batch = xasprintf(";%lld:%lld;%lld:%lld;%lld:%lld;", h + 1, h + 3,
	    h + 2, h + 3, h + 3, h + 3);
	ck_assert_msg(strstr(pp.trace, batch + 1) == pp.trace ||
	    strstr(pp.trace, batch) != NULL, "no batch %s in %s", batch,
	    pp.trace);
	free(batch);
	expect_trace_stored(pp.trace);
	expect_exact_set(&e, 200);
	ck_sql(e.db, INST_ROW, "done|20|200|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 200);
	want = cursors_from(10, 190, 10);
	ck_assert_str_eq(e.fake.cursors + 2, want);
	ck_assert_int_eq(e.fake.queries, 20);
	ck_assert_str_eq(e.fake.problems, "");
	ck_assert_int_eq(metrics_get("refundsync_backfill_pages_total",
	    "instance=\"" INST "\""), 20);
	ck_assert_int_eq(metrics_get("refundsync_backfill_refunds_total",
	    "instance=\"" INST "\""), 200);
	free(want);
	probe_cleanup(&pp);
	env_close(&e);
}
END_TEST

/*
 * A commit that fails mid-pipeline (the database refuses a refund of
 * page 6) fails the run: the fetcher stops, the pages it had queued are
 * dropped and counted nowhere, and the state keeps the last committed
 * cursor with exactly the refunds before it.  Once the database takes
 * the page, the next run resumes there: no page lost, none stored
 * twice.
 */
START_TEST(test_pipe_commit_fails)
{
	struct backfill_options o = fast_opts(10);
	struct env e;
	char *why = NULL, *want, *t;
	int64_t p;
	int q;

	env_open(&e, 400);
	ck_assert_int_eq(sqlite3_exec(e.db, "CREATE TRIGGER no_55 BEFORE"
	    " INSERT ON refunds WHEN NEW.id = 'r-00055' BEGIN SELECT"
	    " RAISE(ABORT, 'refused'); END", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_INPUT);
	ck_assert_msg(strncmp(why, "cannot store page", 17) == 0 &&
	    strstr(why, ": bad input") != NULL, "%s", why);
	p = sql_int(e.db, "SELECT backfill_pages FROM instances");
	ck_assert_int_lt(p, 6);
	/* No cursor if the first transaction failed. */
	if (p > 0)
		t = xasprintf("failed|%lld|%lld|c%lld|%s", (long long)p,
		    (long long)p * 10, (long long)p * 10, why);
	else
		t = xasprintf("failed|0|0|-|%s", why);
	ck_sql(e.db, INST_ROW, t);
	free(t);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"),
	    p * 10);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"),
	    p * 10);
	ck_assert_int_eq(metrics_get("refundsync_backfill_pages_total",
	    "instance=\"" INST "\""), p);
	ck_assert_int_eq(metrics_get("refundsync_backfill_refunds_total",
	    "instance=\"" INST "\""), p * 10);
	ck_assert_int_eq(metrics_get("refundsync_backfill_failures_total",
	    "instance=\"" INST "\""), 1);
	/* The fetcher stopped: at most the failed batch (8), a full queue
	 * (8) and the one it held beyond the pages stored. */
	q = e.fake.queries;
	ck_assert_int_gt(q, (int)p);
	ck_assert_int_le(q, (int)p + 8 + 8 + 1);
	free(why);

	ck_assert_int_eq(sqlite3_exec(e.db, "DROP TRIGGER no_55", NULL, NULL,
	    NULL), SQLITE_OK);
	fake_forget(&e.fake);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	/* From the stored cursor, or from the first page if the first
	 * transaction was the one that failed. */
	if (p > 0)
		want = cursors_from((int)p * 10, 390, 10);
	else {
		t = cursors_from(10, 390, 10);
		want = xasprintf("-,%s", t);
		free(t);
	}
	ck_assert_str_eq(e.fake.cursors, want);
	ck_assert_int_eq(e.fake.queries, 40 - (int)p);
	expect_exact_set(&e, 400);
	ck_sql(e.db, INST_ROW, "done|40|400|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 400);
	free(want);
	env_close(&e);
}
END_TEST

/*
 * Wix rejects a cursor while pages fetched before it still wait for the
 * commit (one page a transaction, the committer held until the fetcher
 * has started over): those pages are committed first, then the stored
 * cursor is reset, then the first pages come again.  The trace shows it
 * exactly.
 */
START_TEST(test_pipe_cursor_rejected_queued)
{
	struct backfill_options o = fast_opts(10);
	struct pipe_probe pp;
	struct env e;

	env_open(&e, 100);
	probe_init(&pp, &e, &o);
	o.batch_pages = 1;
	pp.hold_until = 6;
	fake_fault(&e.fake, 4, F_STATUS, 400, CURSOR_400);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	/* Held after page 1 until page 1 had come again (query 5) and
	 * page 2 too: pages 2 and 3 were queued before the reset. */
	ck_assert(pp.held);
	ck_assert_int_eq(pp.held_pages, 1);
	ck_assert_int_ge(pp.held_queries, 6);
	ck_assert_str_eq(pp.trace, "1:1;2:2;3:3;N3/0;4:1;5:2;6:3;7:4;8:5;"
	    "9:6;10:7;11:8;12:9;");
	ck_assert_msg(strstr(pp.notes, "Wix rejected the cursor (HTTP 400: "
	    "INVALID_CURSOR") != NULL, "notes: %s", pp.notes);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c20,c30,-,c10,c20,c30,c40,"
	    "c50,c60,c70,c80,c90");
	expect_exact_set(&e, 100);
	ck_sql(e.db, INST_ROW, "done|10|100|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 100);
	/* The metrics count pages committed, before and after. */
	ck_assert_int_eq(metrics_get("refundsync_backfill_pages_total",
	    "instance=\"" INST "\""), 13);
	probe_cleanup(&pp);
	env_close(&e);
}
END_TEST

/*
 * Stop while the fetcher is blocked on a full queue: it asks for no
 * new page, the committer commits every page fetched (none is wasted),
 * and the run stops with the cursor after the last; the next run asks
 * for each remaining page once.
 */
START_TEST(test_pipe_stop_full_queue)
{
	struct backfill_options o = fast_opts(10);
	struct pipe_probe pp;
	struct env e;
	char *why = NULL, *want;
	int q;

	env_open(&e, 300);
	probe_init(&pp, &e, &o);
	o.queue_pages = 2;
	pp.hold_extra = 2 + 1;
	pp.stop_held = true;
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_STOPPING);
	ck_assert(pp.held);
	q = pp.held_queries;
	ck_assert_int_eq(q, (int)pp.held_pages + 3);
	/* Nothing asked for after the stop; all of it committed. */
	ck_assert_int_eq(e.fake.queries, q);
	want = xasprintf("running|%d|%d|c%d|-", q, q * 10, q * 10);
	ck_sql(e.db, INST_ROW, want);
	free(want);
	want = xasprintf("stopped after page %d", q);
	ck_assert_str_eq(why, want);
	free(want);
	free(why);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"),
	    q * 10);
	ck_assert_int_eq(metrics_get("refundsync_backfill_pages_total",
	    "instance=\"" INST "\""), q);
	expect_trace_stored(pp.trace);

	atomic_store(&pp.stop, false);
	pp.hold_extra = 0;
	fake_forget(&e.fake);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	want = cursors_from(q * 10, 290, 10);
	ck_assert_str_eq(e.fake.cursors, want);
	free(want);
	ck_assert_int_eq(e.fake.queries, 30 - q);
	expect_exact_set(&e, 300);
	ck_sql(e.db, INST_ROW, "done|30|300|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 300);
	probe_cleanup(&pp);
	env_close(&e);
}
END_TEST

/*
 * Stop while the fetcher is blocked on a full queue and the store cannot
 * commit: the committer gives up at once, the queued pages are dropped
 * (not counted, not stored), the fetcher ends, and the state keeps the
 * last committed cursor; the next run asks for the dropped pages again
 * and loses none.
 */
START_TEST(test_pipe_stop_store_busy)
{
	struct backfill_options o = fast_opts(10);
	struct store_options so = { .busy_timeout_ms = 20 };
	struct pipe_probe pp;
	struct env e;
	char *why = NULL, *want;
	int64_t h, t0;
	int q;

	env_open(&e, 300);
	store_close(e.st);
	ck_assert_int_eq(store_open(e.db_path, &so, &e.st, &why), RS_OK);
	probe_init(&pp, &e, &o);
	o.queue_pages = 2;
	o.page_attempts = 1000;
	o.retry_base_ms = 50;
	o.retry_max_ms = 50;
	pp.hold_extra = 2 + 1;
	pp.stop_held = true;
	pp.lock_held = true;
	t0 = clock_mono_ms();
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_STOPPING);
	/* Promptly: not 1000 tries. */
	ck_assert_int_lt(clock_mono_ms() - t0, 5000);
	ck_assert_int_eq(sqlite3_exec(e.db, "ROLLBACK", NULL, NULL, NULL),
	    SQLITE_OK);
	h = pp.held_pages;
	q = pp.held_queries;
	ck_assert_int_eq(q, (int)h + 3);
	ck_assert_int_eq(e.fake.queries, q);
	want = xasprintf("running|%lld|%lld|c%lld|-", (long long)h,
	    (long long)h * 10, (long long)h * 10);
	ck_sql(e.db, INST_ROW, want);
	free(want);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"),
	    h * 10);
	ck_assert_int_eq(metrics_get("refundsync_backfill_pages_total",
	    "instance=\"" INST "\""), h);
	free(why);

	atomic_store(&pp.stop, false);
	pp.hold_extra = 0;
	fake_forget(&e.fake);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	want = cursors_from((int)h * 10, 290, 10);
	ck_assert_str_eq(e.fake.cursors, want);
	free(want);
	expect_exact_set(&e, 300);
	ck_sql(e.db, INST_ROW, "done|30|300|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 300);
	probe_cleanup(&pp);
	env_close(&e);
}
END_TEST

/*
 * test_stop_resume with the fetcher thread: the stop set after page 3
 * lands a few pages later (the ones fetched ahead are committed, not
 * wasted), and the next run resumes from the committed cursor: no page
 * lost, none asked for twice.
 */
START_TEST(test_pipe_stop_resume)
{
	struct backfill_options o = fast_opts(10);
	struct stop_after s;
	struct env e;
	char *why = NULL, *want;
	int p;

	env_open(&e, 300);
	stop_after_init(&s, &o);
	s.after = 3;
	o.stop = &s.stop;
	ck_assert_int_eq(run(&e, &o, &why), RS_ERR_STOPPING);
	p = (int)sql_int(e.db, "SELECT backfill_pages FROM instances");
	/* Page 3's batch (up to 8), a full queue (8) and one more. */
	ck_assert_int_ge(p, 3);
	ck_assert_int_le(p, 10 + 8 + 1);
	ck_assert_int_eq(e.fake.queries, p);
	want = xasprintf("stopped after page %d", p);
	ck_assert_str_eq(why, want);
	free(want);
	free(why);
	want = xasprintf("running|%d|%d|c%d|-", p, p * 10, p * 10);
	ck_sql(e.db, INST_ROW, want);
	free(want);
	ck_assert_uint_eq(wixapi_requests_sent(e.w, INST), (uint64_t)p + 1);
	ck_assert_int_eq(s.finished, 1);

	wixapi_free(e.w);
	e.w = fake_wixapi(&e.fake);
	atomic_store(&s.stop, false);
	s.after = 0;
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	want = cursors_from(10, 290, 10);
	ck_assert_str_eq(e.fake.cursors + 2, want);
	free(want);
	ck_assert_int_eq(e.fake.queries, 30);
	expect_exact_set(&e, 300);
	ck_sql(e.db, INST_ROW, "done|30|300|-|-");
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM changes"), 300);
	ck_assert_str_eq(s.notes, "stopped;");
	free(s.notes);
	env_close(&e);
}
END_TEST

/* The one-thread loop (queue_pages < 0) still does a whole run, with a
 * fault, a rejected cursor and a store page per page. */
START_TEST(test_no_fetcher_thread)
{
	struct backfill_options o = fast_opts(10);
	struct env e;

	env_open(&e, 45);
	o.queue_pages = -1;
	fake_fault(&e.fake, 2, F_TRUNCATE, 0, NULL);
	fake_fault(&e.fake, 4, F_STATUS, 400, CURSOR_400);
	ck_assert_int_eq(run(&e, &o, NULL), RS_OK);
	ck_assert_str_eq(e.fake.cursors, "-,c10,c10,c20,-,c10,c20,c30,c40");
	expect_exact_set(&e, 45);
	ck_sql(e.db, INST_ROW, "done|5|45|-|-");
	env_close(&e);
}
END_TEST

/* ---- tests: the backfiller -------------------------------------------- */

static struct config *
test_config(const char *dir, const char *db, const char *extra)
{
	struct config *cfg = NULL;
	char *path, *text, *errors = NULL;

	path = xasprintf("%s/refundsync.conf", dir);
	text = xasprintf("[store]\npath = %s\n[wix]\npublic_key_file = %s/k.pem"
	    "\n%s", db, dir, extra != NULL ? extra : "");
	write_file(path, text);
	ck_assert_msg(config_load(path, &cfg, &errors) == RS_OK, "%s",
	    errors != NULL ? errors : "?");
	free(text);
	free(path);
	return cfg;
}

/* Wait up to ms for sql to give want. */
static bool
wait_sql(sqlite3 *db, const char *sql, const char *want, int ms)
{
	struct timespec ts = { 0, 10 * 1000000L };
	char *got;
	int i;

	for (i = 0; i < ms / 10; i++) {
		got = sql_text(db, sql);
		if (strcmp(got, want) == 0) {
			free(got);
			return true;
		}
		free(got);
		nanosleep(&ts, NULL);
	}
	return false;
}

START_TEST(test_backfiller)
{
	struct backfill_options tune = fast_opts(0);
	struct backfiller *bf;
	struct config *cfg;
	struct env e;

	env_open(&e, 230);
	cfg = test_config(e.dir, e.db_path, "[backfill]\npage_size = 20\n");
	bf = backfiller_start(cfg, e.w, &tune);
	ck_assert_uint_eq(backfiller_busy(bf), 0);
	backfiller_kick(bf, "inst-A");
	backfiller_kick(bf, "inst-B");
	backfiller_kick(bf, "inst-A");		/* ignored */
	backfiller_kick(bf, "");		/* ignored */
	ck_assert_uint_le(backfiller_busy(bf), 2);
	ck_assert(wait_sql(e.db, "SELECT group_concat(instance_id || ':' ||"
	    " backfill || ':' || backfill_pages || ':' || backfill_refunds,"
	    " ',') FROM (SELECT * FROM instances ORDER BY 1)",
	    "inst-A:done:12:230,inst-B:done:12:230", 10000));
	/* Both instances asked for every page once: 2 x 12 queries. */
	ck_assert_int_eq(e.fake.queries, 24);
	ck_assert_int_eq(e.fake.last_limit, 20);
	ck_assert_int_eq(e.fake.tokens, 2);
	ck_assert_int_eq(sql_int(e.db, "SELECT count(*) FROM refunds"), 230);
	ck_assert_int_eq(metrics_get("refundsync_backfill_pages_total",
	    "instance=\"inst-A\""), 12);
	ck_assert_int_eq(metrics_get("refundsync_backfill_running",
	    "instance=\"inst-B\""), 0);
	while (backfiller_busy(bf) > 0)
		usleep(1000);

	/* A done instance is not redone. */
	backfiller_kick(bf, "inst-A");
	while (backfiller_busy(bf) > 0)
		usleep(1000);
	ck_assert_int_eq(e.fake.queries, 24);
	ck_assert(backfiller_stop(bf, 5000));
	backfiller_kick(bf, "inst-late");	/* ignored after stop */
	ck_assert_uint_eq(backfiller_busy(bf), 0);
	ck_assert(backfiller_free(bf));
	config_free(cfg);
	env_close(&e);
}
END_TEST

/* Stop mid-run: the worker ends at a page boundary, the state stays
 * running with the cursor committed; start-up kicks resume it. */
START_TEST(test_backfiller_stop_resume)
{
	struct backfill_options tune = fast_opts(0);
	struct backfiller *bf;
	struct config *cfg;
	struct env e;
	int64_t pages;
	char *want;

	env_open(&e, 400);
	e.fake.delay_ms = 15;
	cfg = test_config(e.dir, e.db_path, "instances = inst-C, inst-D\n"
	    "app_id = a\napp_secret_file = s\n[backfill]\npage_size = 10\n");
	bf = backfiller_start(cfg, e.w, &tune);
	backfiller_kick(bf, INST);
	ck_assert(wait_sql(e.db, "SELECT backfill_pages >= 3 FROM instances"
	    " WHERE instance_id = '" INST "'", "1", 10000));
	ck_assert(backfiller_stop(bf, 5000));
	ck_assert(backfiller_free(bf));
	pages = sql_int(e.db, "SELECT backfill_pages FROM instances");
	ck_assert_int_lt(pages, 40);
	want = xasprintf("running|%lld|%lld|c%lld|-", (long long)pages,
	    (long long)pages * 10, (long long)pages * 10);
	ck_sql(e.db, INST_ROW, want);
	free(want);
	ck_assert_int_eq(e.fake.queries, (int)pages);

	/* inst-D is done already; inst-C has no row; INST is running; a
	 * pending one is kicked only with pending_too. */
	ck_assert_int_eq(store_instance_ensure(e.st, "inst-D", NULL), RS_OK);
	ck_assert_int_eq(store_backfill_start(e.st, "inst-D", false), RS_OK);
	ck_assert_int_eq(store_backfill_finish(e.st, "inst-D", true, NULL),
	    RS_OK);
	ck_assert_int_eq(store_instance_ensure(e.st, "inst-P", NULL), RS_OK);
	e.fake.delay_ms = 0;
	bf = backfiller_start(cfg, e.w, &tune);
	ck_assert_uint_eq(backfiller_kick_startup(bf, cfg, e.st, false), 2);
	ck_assert(wait_sql(e.db, "SELECT group_concat(instance_id || ':' ||"
	    " backfill || ':' || backfill_refunds, ',') FROM (SELECT * FROM"
	    " instances ORDER BY 1)", "inst-1:done:400,inst-C:done:400,"
	    "inst-D:done:0,inst-P:pending:0", 10000));
	while (backfiller_busy(bf) > 0)
		usleep(1000);
	/* No page of INST was asked for twice: 40 + 40 for inst-C. */
	ck_assert_int_eq(e.fake.queries, 80);
	ck_assert_uint_eq(backfiller_kick_startup(bf, cfg, e.st, true), 1);
	ck_assert(wait_sql(e.db, "SELECT backfill FROM instances WHERE"
	    " instance_id = 'inst-P'", "done", 10000));
	ck_assert(backfiller_stop(bf, 5000));
	ck_assert(backfiller_free(bf));
	ck_assert(backfiller_stop(NULL, 0));
	ck_assert(backfiller_free(NULL));
	config_free(cfg);
	env_close(&e);
}
END_TEST

/*
 * The daemon's shutdown with a worker inside a Wix call that would not
 * end by itself (a dead network): the client is stopped, then the
 * backfiller; the worker is gone well within the wait, the backfiller
 * can be freed, and the state is 'running' at the last committed page.
 */
START_TEST(test_backfiller_stop_in_call)
{
	struct backfill_options tune = fast_opts(0);
	struct backfiller *bf;
	struct config *cfg;
	struct env e;
	int64_t t0, dt;

	env_open(&e, 95);
	fake_fault(&e.fake, 4, F_HANG, 0, NULL);
	cfg = test_config(e.dir, e.db_path, "app_id = a\napp_secret_file = "
	    "s\n[backfill]\npage_size = 10\n");
	bf = backfiller_start(cfg, e.w, &tune);
	backfiller_kick(bf, INST);
	ck_assert(wait_sql(e.db, "SELECT backfill_pages FROM instances",
	    "3", 10000));
	t0 = clock_mono_ms();
	while (!atomic_load(&e.fake.hanging) && clock_mono_ms() - t0 < 10000)
		usleep(1000);
	ck_assert(atomic_load(&e.fake.hanging));
	ck_assert_uint_eq(backfiller_busy(bf), 1);
	t0 = clock_mono_ms();
	wixapi_stop(e.w);
	ck_assert(backfiller_stop(bf, 5000));
	dt = clock_mono_ms() - t0;
	printf("backfiller stop with a worker inside a Wix call: %lld ms\n",
	    (long long)dt);
	ck_assert_int_lt(dt, 1000);
	ck_assert(backfiller_free(bf));
	ck_sql(e.db, INST_ROW, "running|3|30|c30|-");
	ck_assert_int_eq(e.fake.queries, 4);
	ck_assert_int_eq(metrics_get("refundsync_backfill_failures_total",
	    "instance=\"" INST "\""), 0);
	config_free(cfg);
	env_close(&e);
}
END_TEST

/* ---- tests: credentials -------------------------------------------- */

START_TEST(test_wixapi_from_config)
{
	struct wixapi *w = NULL;
	struct config *cfg;
	char *dir = test_dir(), *db, *why = NULL, *p, *extra;

	db = xasprintf("%s/x.db", dir);
	/* Nothing configured: backfill is off. */
	cfg = test_config(dir, db, NULL);
	ck_assert_int_eq(backfill_wixapi_new(cfg, &w, &why), RS_ERR_NOTFOUND);
	ck_assert_ptr_null(why);
	config_free(cfg);

	/* OAuth with a secret file. */
	p = xasprintf("%s/secret", dir);
	write_file(p, "s3cret-value\n");
	extra = xasprintf("app_id = app-1\napp_secret_file = %s\n"
	    "api_base = http://127.0.0.1:9\n", p);
	cfg = test_config(dir, db, extra);
	ck_assert_int_eq(backfill_wixapi_new(cfg, &w, &why), RS_OK);
	ck_assert_ptr_nonnull(w);
	wixapi_free(w);
	w = NULL;
	/* The file goes away: a config error naming the key, not the
	 * content. */
	unlink(p);
	ck_assert_int_eq(backfill_wixapi_new(cfg, &w, &why), RS_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(why, "[wix] app_secret_file"));
	ck_assert_ptr_null(strstr(why, "s3cret-value"));
	free(why);
	why = NULL;
	/* An empty file. */
	write_file(p, "\n");
	ck_assert_int_eq(backfill_wixapi_new(cfg, &w, &why), RS_ERR_CONFIG);
	ck_assert_msg(strncmp(why, "[wix] app_secret_file: ", 23) == 0 &&
	    strstr(why, "empty") != NULL, "%s", why);
	free(why);
	why = NULL;
	config_free(cfg);
	free(extra);

	/* API-key mode. */
	write_file(p, "key-value");
	extra = xasprintf("api_key_file = %s\nsite_id = site-1\n", p);
	cfg = test_config(dir, db, extra);
	ck_assert_int_eq(backfill_wixapi_new(cfg, &w, &why), RS_OK);
	wixapi_free(w);
	w = NULL;
	config_free(cfg);

	/*
	 * The store's directory is missing: that is what is named, not the
	 * request budget file that cannot be created in it, and it is the
	 * store's failure (RS_ERR_IO), not a bad [wix] value.
	 */
	free(db);
	db = xasprintf("%s/nodir/x.db", dir);
	cfg = test_config(dir, db, extra);
	ck_assert_int_eq(backfill_wixapi_new(cfg, &w, &why), RS_ERR_IO);
	ck_assert_ptr_null(w);
	{
		char *want = xasprintf("store %s: its directory %s/nodir: No "
		    "such file or directory", db, dir);

		ck_assert_str_eq(why, want);
		free(want);
	}
	free(why);
	why = NULL;
	config_free(cfg);
	/* A file where the directory should be. */
	free(db);
	db = xasprintf("%s/x.db", p);
	cfg = test_config(dir, db, extra);
	ck_assert_int_eq(backfill_wixapi_new(cfg, &w, &why), RS_ERR_IO);
	ck_assert_msg(strncmp(why, "store ", 6) == 0 &&
	    strstr(why, "budget") == NULL, "%s", why);
	free(why);
	config_free(cfg);
	free(extra);
	free(p);
	free(db);
	free(dir);
}
END_TEST

/* ---- tests: the progress line ------------------------------------------ */

static char *
progress_line(int64_t pages, int64_t refunds, int64_t run_pages,
    int64_t elapsed_ms)
{
	struct backfill_progress p;
	char buf[256];

	memset(&p, 0, sizeof(p));
	p.instance_id = "inst2";
	p.pages = pages;
	p.refunds = refunds;
	p.run_pages = run_pages;
	p.elapsed_ms = elapsed_ms;
	/* What the old line's rate came from; none of it is a rate. */
	p.requests = 20;
	ck_assert_int_lt(backfill_progress_line(buf, sizeof(buf), &p),
	    (int)sizeof(buf));
	return xstrdup(buf);
}

#define ck_line(got, want) do {						\
	char *g_ = (got);						\
	ck_assert_str_eq(g_, (want));					\
	free(g_);							\
} while (0)

/*
 * The audit's case: requests_per_minute = 20, one refund a page.  The
 * budget lets a token and 19 pages through at once, then holds the next
 * page back for the rest of its minute.  The rate is this run's pages
 * over the time now, so it falls through the wait to the budget's pace
 * instead of staying at the burst's (the old line: "85714 req/min"), and
 * there is no ETA, as Query Refunds gives no total.
 */
START_TEST(test_progress_line)
{
	char small[16];
	struct backfill_progress p;

	/* The burst: too short a time for a rate. */
	ck_line(progress_line(19, 19, 19, 14), "inst2: page 19, 19 refunds, "
	    "- pages/min, 0 s elapsed, ETA unknown");
	ck_line(progress_line(19, 19, 19, 999), "inst2: page 19, 19 refunds, "
	    "- pages/min, 0 s elapsed, ETA unknown");
	/* The same page, redrawn while the budget waits. */
	ck_line(progress_line(19, 19, 19, 3000), "inst2: page 19, 19 refunds, "
	    "380 pages/min, 3 s elapsed, ETA unknown");
	ck_line(progress_line(19, 19, 19, 57000), "inst2: page 19, 19 "
	    "refunds, 20 pages/min, 57 s elapsed, ETA unknown");
	ck_line(progress_line(19, 19, 19, 60000), "inst2: page 19, 19 "
	    "refunds, 19 pages/min, 60 s elapsed, ETA unknown");
	/* Ten minutes at the budget's pace. */
	ck_line(progress_line(199, 199, 199, 600000), "inst2: page 199, 199 "
	    "refunds, 20 pages/min, 600 s elapsed, ETA unknown");
	/* A resumed run: the counts are the backfill's, the rate only this
	 * run's pages. */
	ck_line(progress_line(1019, 101900, 19, 60000), "inst2: page 1019, "
	    "101900 refunds, 19 pages/min, 60 s elapsed, ETA unknown");
	/* Rounded, in integers: 2 pages in 3 minutes is 0.67 a minute. */
	ck_line(progress_line(2, 200, 2, 180000), "inst2: page 2, 200 "
	    "refunds, 1 pages/min, 180 s elapsed, ETA unknown");
	ck_line(progress_line(0, 0, 0, 5000), "inst2: page 0, 0 refunds, "
	    "0 pages/min, 5 s elapsed, ETA unknown");

	/* Cut to fit, NUL-terminated, with snprintf()'s return. */
	memset(&p, 0, sizeof(p));
	p.instance_id = "inst2";
	p.pages = p.refunds = p.run_pages = 19;
	p.elapsed_ms = 60000;
	ck_assert_int_eq(backfill_progress_line(small, sizeof(small), &p),
	    (int)strlen("inst2: page 19, 19 refunds, 19 pages/min, 60 s "
	    "elapsed, ETA unknown"));
	ck_assert_str_eq(small, "inst2: page 19,");
}
END_TEST

static Suite *
backfill_suite(void)
{
	Suite *s = suite_create("backfill");
	TCase *tc = tcase_create("backfill");

	tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_exact_sets, 0,
	    (int)(sizeof(set_sizes) / sizeof(set_sizes[0])));
	tcase_add_test(tc, test_small_pages);
	tcase_add_test(tc, test_walk);
	tcase_add_test(tc, test_walk_errors);
	tcase_add_test(tc, test_webhook_newer_survives);
	tcase_add_test(tc, test_stop_resume);
	tcase_add_test(tc, test_stop_before_start);
	tcase_add_loop_test(tc, test_stop_in_fetch, 0, 5);
	tcase_add_test(tc, test_cursor_rejected);
	tcase_add_test(tc, test_cursor_rejected_forever);
	tcase_add_loop_test(tc, test_loop_faults, 0,
	    (int)(sizeof(loop_cases) / sizeof(loop_cases[0])));
	tcase_add_test(tc, test_cursor_cycle);
	tcase_add_test(tc, test_malformed_retried);
	tcase_add_test(tc, test_malformed_forever);
	tcase_add_test(tc, test_bad_refund_forever);
	tcase_add_test(tc, test_4xx_fails);
	tcase_add_test(tc, test_5xx_forever);
	tcase_add_test(tc, test_auth_refused);
	tcase_add_test(tc, test_token_garbled);
	tcase_add_test(tc, test_token_oversized);
	tcase_add_test(tc, test_instance_id_unusable);
	tcase_add_test(tc, test_store_busy_retried);
	tcase_add_test(tc, test_pipe_batches);
	tcase_add_test(tc, test_pipe_commit_fails);
	tcase_add_test(tc, test_pipe_cursor_rejected_queued);
	tcase_add_test(tc, test_pipe_stop_full_queue);
	tcase_add_test(tc, test_pipe_stop_store_busy);
	tcase_add_test(tc, test_pipe_stop_resume);
	tcase_add_test(tc, test_no_fetcher_thread);
	tcase_add_test(tc, test_backfiller);
	tcase_add_test(tc, test_backfiller_stop_resume);
	tcase_add_test(tc, test_backfiller_stop_in_call);
	tcase_add_test(tc, test_wixapi_from_config);
	tcase_add_test(tc, test_progress_line);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	xmalloc_init_json();
	log_init(0, false);
	sr = srunner_create(backfill_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
