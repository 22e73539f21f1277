/*
 * check_export_daemon.c: the real daemon exporting its change log (SPEC
 * §5) through jsonl, csv, ledger and http exporters at once, driven
 * through the external contract only: webhooks in, files and an HTTP
 * sink out, `refundsync export ...` on the command line, /metrics.
 *
 * The sink is a small libmicrohttpd server on 127.0.0.1:0 standing in for
 * an accounting system that honours Idempotency-Key: it applies the
 * effect of a key the first time it sees it, and only acknowledges any
 * later POST with the same key.  It can be told to fail.
 *
 * The crash test kills the daemon with SIGKILL at random points while it
 * exports (at least 20 times, restarting it each time), then checks that
 * every file holds each change-log seq exactly once, in order (the
 * ledger: each seq that posts), and that the sink applied each key's
 * effect exactly once.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <sqlite3.h>

#include "core/export.h"
#include "exporters/posting.h"
#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST		"inst-export"
#define SINK_MAX_KEYS	4096
#define SINK_MAX_BODY	(1024 * 1024)
/* The end of cli()'s arguments. */
#define END		((const char *)NULL)

/* ---- the sink ------------------------------------------------------------ */

struct sink_key {
	char	*key;
	int64_t	 seq;		/* from the first body with this key */
	int	 posts;		/* POSTs with this key that got 2xx */
};

struct sink {
	struct MHD_Daemon *d;
	int		 port;
	pthread_mutex_t	 mu;
	struct sink_key	 keys[SINK_MAX_KEYS];
	int		 nkeys;
	int64_t		 effects;	/* keys applied (first 2xx) */
	int64_t		 requests;
	int64_t		 conflicts;	/* a key came with another seq */
	int64_t		 unsigned_or_bad; /* no key, or no seq */
	int		 fail_every;	/* every Nth request: 503; 0 never */
	const char	*refuse_refund;	/* this refund id: 400 */
	bool		 fail_all;	/* 503 to everything */
	int		 delay_ms;	/* a slow target: wait this long */
};

struct sink_req {
	char	*body;
	size_t	 len;
	bool	 toobig;
};

static enum MHD_Result
sink_answer(struct MHD_Connection *c, unsigned code, const char *text)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(strlen(text),
	    (void *)(uintptr_t)text, MHD_RESPMEM_MUST_COPY);
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
sink_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct sink *s = cls;
	struct sink_req *rq = *con_cls;
	const char *key, *refund;
	cJSON *doc = NULL, *seqj;
	int64_t seq = -1;
	unsigned code = 200;
	int i;

	(void)url;
	(void)version;
	if (rq == NULL) {
		rq = xcalloc(1, sizeof(*rq));
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_size > 0) {
		if (rq->len + *upload_size > SINK_MAX_BODY)
			rq->toobig = true;
		else {
			rq->body = xrealloc(rq->body, rq->len + *upload_size +
			    1);
			memcpy(rq->body + rq->len, upload, *upload_size);
			rq->len += *upload_size;
			rq->body[rq->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "POST") != 0 || rq->toobig || rq->body == NULL)
		return sink_answer(c, 400, "{\"error\":\"bad request\"}");
	key = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Idempotency-Key");
	if ((doc = cJSON_Parse(rq->body)) != NULL &&
	    (seqj = cJSON_GetObjectItem(doc, "seq")) != NULL &&
	    cJSON_IsNumber(seqj))
		seq = (int64_t)seqj->valuedouble;
	refund = doc != NULL && cJSON_IsString(cJSON_GetObjectItem(doc,
	    "refund_id")) ? cJSON_GetObjectItem(doc, "refund_id")->valuestring
	    : "";

	if (s->delay_ms > 0)
		tu_sleep_ms(s->delay_ms);
	pthread_mutex_lock(&s->mu);
	s->requests++;
	if (s->fail_all ||
	    (s->fail_every > 0 && s->requests % s->fail_every == 0))
		code = 503;
	else if (s->refuse_refund != NULL &&
	    strcmp(s->refuse_refund, refund) == 0)
		code = 400;
	else if (key == NULL || seq < 0) {
		s->unsigned_or_bad++;
		code = 400;
	} else {
		for (i = 0; i < s->nkeys; i++)
			if (strcmp(s->keys[i].key, key) == 0)
				break;
		if (i == s->nkeys && s->nkeys < SINK_MAX_KEYS) {
			/* The effect, once per key. */
			s->keys[i].key = xstrdup(key);
			s->keys[i].seq = seq;
			s->nkeys++;
			s->effects++;
		}
		if (i < s->nkeys) {
			if (s->keys[i].seq != seq)
				s->conflicts++;
			s->keys[i].posts++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	cJSON_Delete(doc);
	if (code == 503)
		return sink_answer(c, 503, "{\"error\":\"busy\"}");
	if (code == 400)
		return sink_answer(c, 400, "{\"error\":\"refused\"}");
	return sink_answer(c, 200, "{\"ok\":true}");
}

static void
sink_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct sink_req *rq = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (rq != NULL) {
		free(rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

static struct sink *
sink_start(void)
{
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sin;
	struct sink *s = xcalloc(1, sizeof(*s));

	pthread_mutex_init(&s->mu, NULL);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, sink_handler, s,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
	    MHD_OPTION_NOTIFY_COMPLETED, sink_completed, s,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
	    MHD_OPTION_END);
	ck_assert_ptr_nonnull(s->d);
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	ck_assert_ptr_nonnull(info);
	s->port = (int)info->port;
	ck_assert_int_gt(s->port, 0);
	return s;
}

static void
sink_stop(struct sink *s)
{
	int i;

	MHD_stop_daemon(s->d);
	for (i = 0; i < s->nkeys; i++)
		free(s->keys[i].key);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* Posts that got 2xx for key, 0 if never. */
static int
sink_posts(struct sink *s, const char *key)
{
	int i, n = 0;

	pthread_mutex_lock(&s->mu);
	for (i = 0; i < s->nkeys; i++)
		if (strcmp(s->keys[i].key, key) == 0)
			n = s->keys[i].posts;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* ---- the daemon and its exporters ---------------------------------------- */

/* The four exporters: j (jsonl), c (csv), l (ledger), h (http). */
static const char *const names[] = { "j", "c", "l", "h" };
#define NEXP	(sizeof(names) / sizeof(names[0]))

static char *
exporters_conf(const struct sink *s, int batch)
{
	return xasprintf(
	    "[exporter j]\ntype = jsonl\npath = out.jsonl\nbatch = %d\n"
	    "poll_ms = 20\n"
	    "[exporter c]\ntype = csv\npath = out.csv\nbatch = %d\n"
	    "poll_ms = 20\n"
	    "[exporter l]\ntype = ledger\npath = out.journal\nbatch = %d\n"
	    "poll_ms = 20\n"
	    "[exporter h]\ntype = http\nurl = http://127.0.0.1:%d/hook\n"
	    "batch = %d\npoll_ms = 20\nretry_initial_ms = 20\n"
	    "retry_max_ms = 200\ntimeout = 5\n",
	    batch, batch + 2, batch + 1, s->port, batch);
}

static struct tu_daemon *
start(const char *tail)
{
	struct tu_conf conf;
	struct tu_daemon *d;

	memset(&conf, 0, sizeof(conf));
	conf.tail = tail;
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	return d;
}

/* Post one refund version; the status. */
static int
post(const struct tu_daemon *d, const char *id, const char *status,
    int64_t rev, const char *amount)
{
	struct tu_refund r;
	struct tu_event ev;
	char *tok, *evid;
	int st;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-export";
	r.currency = "USD";
	r.amount = amount;
	r.status = status;
	r.revision = rev;
	r.created_date = "2025-08-09T15:26:24.000Z";
	r.updated_date = "2025-08-09T15:26:25.000Z";
	memset(&ev, 0, sizeof(ev));
	evid = tu_random_id("ev-");
	ev.id = evid;
	ev.slug = rev > 1 ? TU_UPDATED : TU_CREATED;
	ev.form = TU_FORM_OBJECT;
	ev.seq = -1;
	tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	ck_assert_ptr_nonnull(tok);
	st = tu_daemon_post(d, tok, NULL);
	free(tok);
	free(evid);
	return st;
}

static int64_t
last_seq(const struct tu_daemon *d)
{
	return tu_sql_int(d, 0, "SELECT coalesce(max(seq), 0) FROM changes");
}

static int64_t
position(const struct tu_daemon *d, const char *name)
{
	return tu_sql_int(d, -1, "SELECT position FROM exporter_positions"
	    " WHERE exporter = '%s'", name);
}

/* Wait until every exporter in want[] is at the last change. */
static bool
caught_up(const struct tu_daemon *d, const char *const *want, size_t n,
    int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms, last;
	size_t i;

	for (;;) {
		last = last_seq(d);
		for (i = 0; i < n; i++)
			if (position(d, want[i]) != last)
				break;
		if (i == n)
			return true;
		if (clock_mono_ms() > deadline) {
			for (i = 0; i < n; i++)
				fprintf(stderr, "exporter %s at %lld of %lld\n",
				    want[i], (long long)position(d, want[i]),
				    (long long)last);
			return false;
		}
		tu_sleep_ms(20);
	}
}

/* ---- what the change log says each target should hold -------------------- */

struct expect {
	int64_t	*seqs;		/* every change */
	size_t	 n;
	int64_t	*posting;	/* the changes that post (ledger) */
	size_t	 nposting;
	char	**hkeys;	/* the http exporter's keys, by change */
};

static void
expect_load(const struct tu_daemon *d, struct expect *x)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	enum rs_posting p;

	memset(x, 0, sizeof(*x));
	ck_assert_int_eq(sqlite3_open_v2(d->db_path, &db,
	    SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT seq, refund_id,"
	    " revision, status, prev_status FROM changes ORDER BY seq", -1,
	    &stmt, NULL), SQLITE_OK);
	while (sqlite3_step(stmt) == SQLITE_ROW) {
		x->seqs = xreallocarray(x->seqs, x->n + 1, sizeof(*x->seqs));
		x->hkeys = xreallocarray(x->hkeys, x->n + 1,
		    sizeof(*x->hkeys));
		x->posting = xreallocarray(x->posting, x->n + 1,
		    sizeof(*x->posting));
		x->seqs[x->n] = sqlite3_column_int64(stmt, 0);
		p = posting_classify((const char *)sqlite3_column_text(stmt,
		    3), (const char *)sqlite3_column_text(stmt, 4));
		x->hkeys[x->n] = export_idempotency_key("h",
		    (const char *)sqlite3_column_text(stmt, 1),
		    sqlite3_column_type(stmt, 2) != SQLITE_NULL,
		    sqlite3_column_int64(stmt, 2), p);
		if (p != RS_POSTING_NONE)
			x->posting[x->nposting++] = x->seqs[x->n];
		x->n++;
	}
	sqlite3_finalize(stmt);
	sqlite3_close(db);
}

static void
expect_free(struct expect *x)
{
	size_t i;

	for (i = 0; i < x->n; i++)
		free(x->hkeys[i]);
	free(x->hkeys);
	free(x->seqs);
	free(x->posting);
}

/*
 * The seqs a file names, in order: the number after prefix at the start
 * of each line (after the first skip lines).
 */
static size_t
file_seqs(const char *path, const char *prefix, size_t skip, int64_t **out)
{
	char *text = tu_read_file(path, NULL), *line, *nl;
	size_t n = 0, plen = strlen(prefix), lineno = 0;
	int64_t v;

	*out = NULL;
	ck_assert_msg(text != NULL, "%s: cannot read", path);
	for (line = text; *line != '\0'; line = nl + 1) {
		nl = strchr(line, '\n');
		ck_assert_msg(nl != NULL, "%s: the last line is torn", path);
		*nl = '\0';
		if (lineno++ < skip || strncmp(line, prefix, plen) != 0)
			continue;
		v = strtoll(line + plen, NULL, 10);
		if (v == 0)
			continue;	/* the ledger's header commit */
		*out = xreallocarray(*out, n + 1, sizeof(**out));
		(*out)[n++] = v;
	}
	free(text);
	return n;
}

/* got[0..ngot) must be exactly want[0..nwant). */
static void
assert_seqs(const char *what, const int64_t *got, size_t ngot,
    const int64_t *want, size_t nwant)
{
	size_t i;

	for (i = 0; i < ngot && i < nwant; i++)
		ck_assert_msg(got[i] == want[i], "%s: entry %zu is seq %lld, "
		    "want %lld (a duplicate or a gap)", what, i,
		    (long long)got[i], (long long)want[i]);
	ck_assert_msg(ngot == nwant, "%s: %zu entries, want %zu", what, ngot,
	    nwant);
}

/* Every file and the sink hold what the change log says, once. */
static void
assert_targets(const struct tu_daemon *d, struct sink *s)
{
	struct expect x;
	int64_t *got;
	char *path;
	size_t n, i;

	expect_load(d, &x);
	ck_assert_uint_gt(x.n, 0);

	path = xasprintf("%s/out.jsonl", d->dir);
	n = file_seqs(path, "{\"seq\":", 0, &got);
	assert_seqs("jsonl", got, n, x.seqs, x.n);
	free(got);
	free(path);

	path = xasprintf("%s/out.csv", d->dir);
	n = file_seqs(path, "", 1, &got);
	assert_seqs("csv", got, n, x.seqs, x.n);
	free(got);
	free(path);

	path = xasprintf("%s/out.journal", d->dir);
	n = file_seqs(path, "; rs-seq: ", 0, &got);
	assert_seqs("ledger", got, n, x.posting, x.nposting);
	free(got);
	free(path);

	/* The sink: every key, one effect each, never two seqs per key. */
	pthread_mutex_lock(&s->mu);
	ck_assert_int_eq(s->conflicts, 0);
	ck_assert_int_eq(s->unsigned_or_bad, 0);
	ck_assert_int_eq(s->effects, (int64_t)x.n);
	ck_assert_int_eq(s->nkeys, (int)x.n);
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < x.n; i++)
		ck_assert_msg(sink_posts(s, x.hkeys[i]) >= 1, "the sink never "
		    "got %s", x.hkeys[i]);
	expect_free(&x);
}

/*
 * Run `refundsync export -c CONF ARGS...` (ARGS NULL-terminated); the
 * exit status, and the output in *out.
 */
static int
cli(const struct tu_daemon *d, char **out, ...)
{
	char *argv[16], *err = NULL;
	const char *a;
	va_list ap;
	int n = 0, i, rc;

	argv[n++] = xstrdup(tu_binary());
	argv[n++] = xstrdup("export");
	argv[n++] = xstrdup("-c");
	argv[n++] = xstrdup(d->conf_path);
	va_start(ap, out);
	while (n < 15 && (a = va_arg(ap, const char *)) != NULL)
		argv[n++] = xstrdup(a);
	va_end(ap);
	argv[n] = NULL;
	rc = tu_run(argv, 30000, out, &err);
	if (rc != 0)
		fprintf(stderr, "export %s: %d: %s\n", argv[4], rc,
		    err != NULL ? err : "");
	for (i = 0; i < n; i++)
		free(argv[i]);
	free(err);
	return rc;
}

/* The exporter name in `export status --json`. */
static cJSON *
status_of(cJSON *doc, const char *name)
{
	cJSON *arr = cJSON_GetObjectItem(doc, "exporters"), *o;

	cJSON_ArrayForEach(o, arr)
		if (strcmp(cJSON_GetObjectItem(o, "exporter")->valuestring,
		    name) == 0)
			return o;
	ck_abort_msg("no %s in the status", name);
	return NULL;
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

/* ---- tests --------------------------------------------------------------- */

START_TEST(test_four_exporters_deliver)
{
	struct sink *s = sink_start();
	char *tail = exporters_conf(s, 4), *out = NULL, id[32];
	struct tu_daemon *d = start(tail);
	cJSON *doc, *o;
	int i;

	/* Created, refunded, some reversed, some pending. */
	for (i = 0; i < 12; i++) {
		snprintf(id, sizeof(id), "r-%02d", i);
		ck_assert_int_eq(post(d, id, i % 4 == 3 ? "PENDING" :
		    "SUCCEEDED", 1, "12.95"), 200);
	}
	ck_assert_int_eq(post(d, "r-01", "REVERSED", 2, "12.95"), 200);
	ck_assert_int_eq(post(d, "r-03", "SUCCEEDED", 2, "12.95"), 200);
	ck_assert_int_eq(post(d, "r-03", "SUCCEEDED", 2, "12.95"), 200);
	ck_assert(caught_up(d, names, NEXP, 30000));
	ck_assert_int_eq(last_seq(d), 14);
	assert_targets(d, s);

	/* The keys: one per (refund, revision), ":reverse" for a reversal. */
	ck_assert_int_eq(sink_posts(s, "h:r-01:2:reverse"), 1);
	ck_assert_int_eq(sink_posts(s, "h:r-03:2"), 1);

	/* Status, as JSON. */
	ck_assert_int_eq(cli(d, &out, "status", "--json", END),
	    0);
	doc = cJSON_Parse(out);
	ck_assert_msg(doc != NULL, "status: %s", out);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "last_change")->valueint,
	    14);
	for (i = 0; i < (int)NEXP; i++) {
		o = status_of(doc, names[i]);
		ck_assert_int_eq(cJSON_GetObjectItem(o, "position")->valueint,
		    14);
		ck_assert_int_eq(cJSON_GetObjectItem(o, "lag")->valueint, 0);
		ck_assert_int_eq(cJSON_GetObjectItem(o,
		    "dead_letters")->valueint, 0);
		ck_assert_str_eq(cJSON_GetObjectItem(o, "state")->valuestring,
		    "ok");
	}
	ck_assert_str_eq(cJSON_GetObjectItem(status_of(doc, "l"),
	    "type")->valuestring, "ledger");
	cJSON_Delete(doc);
	free(out);

	/* /metrics. */
	ck_assert(metric(d, "refundsync_export_delivered_total",
	    "exporter=\"j\"") == 14);
	ck_assert(metric(d, "refundsync_export_delivered_total",
	    "exporter=\"h\"") == 14);
	ck_assert(metric(d, "refundsync_export_lag", "exporter=\"c\"") == 0);
	ck_assert(metric(d, "refundsync_export_dead_letters",
	    "exporter=\"l\"") == 0);
	ck_assert(metric(d, "refundsync_export_failures_total",
	    "exporter=\"h\"") == 0);

	/* SIGTERM: the exporters stop at a record boundary; exit 0. */
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	assert_targets(d, s);
	tu_daemon_free(d);
	sink_stop(s);
	free(tail);
}
END_TEST

START_TEST(test_failures_dead_letters_and_commands)
{
	struct sink *s = sink_start();
	char *tail = exporters_conf(s, 5), *out = NULL, *line, id[32];
	struct tu_daemon *d;
	cJSON *doc;
	const char *fast[] = { "j", "c", "l" };
	const char *only_h[] = { "h" };
	int64_t deadline, jsonl_before;
	int i, n;

	/* The sink is down: http retries, the others flow regardless. */
	s->fail_all = true;
	d = start(tail);
	for (i = 0; i < 6; i++) {
		snprintf(id, sizeof(id), "d-%02d", i);
		ck_assert_int_eq(post(d, id, "SUCCEEDED", 1, "3.00"), 200);
	}
	ck_assert(caught_up(d, fast, 3, 30000));
	ck_assert_int_eq(position(d, "h"), 0);
	deadline = clock_mono_ms() + 10000;
	while (metric(d, "refundsync_export_failures_total",
	    "exporter=\"h\"") < 3 && clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert(metric(d, "refundsync_export_failures_total",
	    "exporter=\"h\"") >= 3);
	/* The gauges stay fresh while it backs off. */
	deadline = clock_mono_ms() + 10000;
	while (metric(d, "refundsync_export_lag", "exporter=\"h\"") != 6 &&
	    clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert(metric(d, "refundsync_export_lag", "exporter=\"h\"") == 6);
	ck_assert_int_eq(cli(d, &out, "status", "--json", END),
	    0);
	doc = cJSON_Parse(out);
	ck_assert_ptr_nonnull(doc);
	ck_assert_msg(strncmp(cJSON_GetObjectItem(status_of(doc, "h"),
	    "state")->valuestring, "retrying seq 1 ", 15) == 0, "%s", out);
	ck_assert_msg(strstr(cJSON_GetObjectItem(status_of(doc, "h"),
	    "last_error")->valuestring, "503") != NULL, "%s", out);
	cJSON_Delete(doc);
	free(out);

	/* It comes back, but refuses one refund for good: a dead letter
	 * with the reason and the response, and the rest flows. */
	pthread_mutex_lock(&s->mu);
	s->fail_all = false;
	s->refuse_refund = "d-02";
	pthread_mutex_unlock(&s->mu);
	ck_assert(caught_up(d, only_h, 1, 30000));
	ck_assert_int_eq(cli(d, &out, "dead", "--json", END), 0);
	line = strchr(out, '\n');
	ck_assert_msg(line != NULL && line[1] == '\0', "one line: %s", out);
	doc = cJSON_Parse(out);
	ck_assert_ptr_nonnull(doc);
	ck_assert_str_eq(cJSON_GetObjectItem(doc, "exporter")->valuestring,
	    "h");
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "seq")->valueint, 3);
	ck_assert_str_eq(cJSON_GetObjectItem(doc,
	    "idempotency_key")->valuestring, "h:d-02:1");
	ck_assert_msg(strstr(cJSON_GetObjectItem(doc, "reason")->valuestring,
	    "permanent") != NULL, "%s", out);
	ck_assert_msg(strstr(cJSON_GetObjectItem(doc,
	    "last_response")->valuestring, "400") != NULL, "%s", out);
	cJSON_Delete(doc);
	free(out);
	ck_assert(metric(d, "refundsync_export_dead_letters",
	    "exporter=\"h\"") == 1);
	ck_assert_int_eq(sink_posts(s, "h:d-03:1"), 1);

	/* Fixed: retry-dead delivers it. */
	pthread_mutex_lock(&s->mu);
	s->refuse_refund = NULL;
	pthread_mutex_unlock(&s->mu);
	ck_assert_int_eq(cli(d, &out, "retry-dead", "--exporter", "h",
	    "--json", END), 0);
	doc = cJSON_Parse(out);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "queued")->valueint, 1);
	cJSON_Delete(doc);
	free(out);
	deadline = clock_mono_ms() + 20000;
	while (sink_posts(s, "h:d-02:1") == 0 && clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert_int_eq(sink_posts(s, "h:d-02:1"), 1);
	deadline = clock_mono_ms() + 10000;
	while (tu_sql_int(d, -1, "SELECT count(*) FROM exporter_dead_letters")
	    != 0 && clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert_int_eq(cli(d, &out, "dead", END), 0);
	ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1,
	    "only the header: %s", out);
	free(out);
	assert_targets(d, s);

	/* Replay: http re-sends 4..6 with the same keys (no new effect);
	 * the jsonl file already holds them, so nothing is written twice. */
	jsonl_before = tu_sql_int(d, -1, "SELECT delivered FROM"
	    " exporter_positions WHERE exporter = 'j'");
	ck_assert_int_eq(cli(d, &out, "replay", "--exporter", "h", "--from",
	    "4", END), 0);
	free(out);
	ck_assert_int_eq(cli(d, &out, "replay", "--exporter", "j", "--json",
	    END), 0);
	doc = cJSON_Parse(out);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "from")->valueint, 1);
	ck_assert_int_eq(cJSON_GetObjectItem(doc,
	    "previous_position")->valueint, 6);
	cJSON_Delete(doc);
	free(out);
	deadline = clock_mono_ms() + 20000;
	while (sink_posts(s, "h:d-05:1") < 2 && clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert_int_eq(sink_posts(s, "h:d-05:1"), 2);
	ck_assert_int_eq(sink_posts(s, "h:d-03:1"), 2);
	ck_assert_int_eq(sink_posts(s, "h:d-01:1"), 1);
	ck_assert(caught_up(d, names, NEXP, 30000));
	(void)jsonl_before;
	assert_targets(d, s);

	/* Usage errors are 2. */
	ck_assert_int_eq(cli(d, &out, "replay", END), 2);
	free(out);
	ck_assert_int_eq(cli(d, &out, "replay", "--exporter", "nope", END), 2);
	free(out);
	ck_assert_int_eq(cli(d, &out, "replay", "--exporter", "j", "--from",
	    "0", END), 2);
	free(out);
	ck_assert_int_eq(cli(d, &out, "bogus", END), 2);
	free(out);
	n = cli(d, &out, "status", END);
	ck_assert_int_eq(n, 0);
	ck_assert_msg(strstr(out, "EXPORTER") == out, "%s", out);
	free(out);

	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	tu_daemon_free(d);
	sink_stop(s);
	free(tail);
}
END_TEST

/*
 * SIGKILL while exporting, at least 20 times: no duplicate and no gap in
 * any file, and the sink applies each key once.
 */
START_TEST(test_kill9_while_exporting)
{
	struct sink *s = sink_start();
	char *tail = exporters_conf(s, 3), id[32];
	struct tu_daemon *d = start(tail);
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	int round, i, k = 0, kills = 0, st;
	const char *status;

	fprintf(stderr, "kill9 test: seed %u\n", seed);
	srand(seed);
	/* Some requests fail now and then: retries are in flight too; and
	 * the target is slow, so kills land in the middle of its batches. */
	s->fail_every = 7;
	s->delay_ms = 8;
	for (round = 0; round < 24; round++) {
		for (i = 0; i < 12; i++, k++) {
			/* New refunds, and updates of earlier ones. */
			if (k % 5 == 4) {
				snprintf(id, sizeof(id), "k-%04d", k - 4);
				status = (k / 5) % 2 == 0 ? "REVERSED" :
				    "FAILED";
				st = post(d, id, status, 2, "7.50");
			} else {
				snprintf(id, sizeof(id), "k-%04d", k);
				status = k % 3 == 0 ? "PENDING" : "SUCCEEDED";
				st = post(d, id, status, 1, "7.50");
			}
			ck_assert_int_eq(st, 200);
		}
		/* Let the exporters get going, then kill at a random
		 * point of their work. */
		tu_sleep_ms(rand() % 60);
		tu_daemon_kill9(d);
		kills++;
		ck_assert_msg(tu_daemon_restart(d), "restart %d failed",
		    kills);
	}
	ck_assert_int_ge(kills, 20);
	ck_assert(caught_up(d, names, NEXP, 60000));
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	assert_targets(d, s);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM"
	    " exporter_dead_letters"), 0);
	for (i = 0, k = 0; i < s->nkeys; i++)
		if (s->keys[i].posts > 1)
			k++;
	fprintf(stderr, "kill9 test: %d kills, %lld changes, %lld requests "
	    "to the sink for %lld effects, %d keys accepted again after a "
	    "crash\n", kills, (long long)last_seq(d),
	    (long long)s->requests, (long long)s->effects, k);
	tu_daemon_free(d);
	sink_stop(s);
	free(tail);
}
END_TEST

/* A plugin is loaded and delivers; one with the wrong ABI is refused. */
START_TEST(test_plugins)
{
	const char *b = getenv("RS_BUILDDIR");
	char *good, *bad, *tail, *conf, *text, *argv[5], *out = NULL;
	char *err = NULL;
	struct tu_daemon *d;
	struct tu_conf tc;
	const char *only[] = { "p" };
	int rc;

	ck_assert_msg(b != NULL, "RS_BUILDDIR is not set");
	good = xasprintf("%s/examples/plugin/rs-example-exporter.so", b);
	bad = xasprintf("%s/tests/data/rs-bad-abi-exporter.so", b);
	tail = xasprintf("[exporter p]\ntype = plugin\npath = %s\n"
	    "file = audit.tsv\npoll_ms = 20\n", good);
	d = start(tail);
	ck_assert_int_eq(post(d, "p-1", "SUCCEEDED", 1, "1.00"), 200);
	ck_assert_int_eq(post(d, "p-2", "SUCCEEDED", 1, "2.00"), 200);
	ck_assert(caught_up(d, only, 1, 30000));
	conf = xasprintf("%s/audit.tsv", d->dir);
	text = tu_read_file(conf, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_msg(strncmp(text, "1\tp:p-1:1\t", 10) == 0 &&
	    strstr(text, "\n2\tp:p-2:1\t") != NULL, "%s", text);
	free(text);
	free(conf);
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);

	/* The wrong ABI: `check` says so, and serve refuses to start. */
	free(tail);
	tail = xasprintf("[exporter old]\ntype = plugin\npath = %s\n", bad);
	memset(&tc, 0, sizeof(tc));
	tc.tail = tail;
	ck_assert(tu_daemon_write_config(d, &tc));
	argv[0] = xstrdup(tu_binary());
	argv[1] = xstrdup("check");
	argv[2] = xstrdup("-c");
	argv[3] = d->conf_path;
	argv[4] = NULL;
	rc = tu_run(argv, 30000, &out, &err);
	ck_assert_int_eq(rc, 1);
	ck_assert_msg(strstr(err, "[exporter old]: plugin ") != NULL &&
	    strstr(err, "exporter ABI version 2, but this refundsync supports "
	    "version 1") != NULL, "check: %s", err);
	free(out);
	free(err);
	free(argv[1]);
	argv[1] = xstrdup("serve");
	rc = tu_run(argv, 30000, &out, &err);
	ck_assert_int_eq(rc, 2);
	ck_assert_msg(strstr(err, "ABI version 2") != NULL, "serve: %s", err);
	free(out);
	free(err);
	free(argv[0]);
	free(argv[1]);
	free(argv[2]);
	tu_daemon_free(d);
	free(tail);
	free(good);
	free(bad);
}
END_TEST

static Suite *
export_daemon_suite(void)
{
	Suite *s = suite_create("export_daemon");
	TCase *tc = tcase_create("daemon");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_four_exporters_deliver);
	tcase_add_test(tc, test_failures_dead_letters_and_commands);
	tcase_add_test(tc, test_kill9_while_exporting);
	tcase_add_test(tc, test_plugins);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(export_daemon_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? 1 : 0;
}
