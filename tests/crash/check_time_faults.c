/*
 * check_time_faults.c: the wall clock jumps +10 min and -10 min while the
 * real daemon is backing off (issue 7, "time faults").
 *
 * The daemon runs under libfaketime as in check_hostile's test_28: the
 * offset comes from a file (FAKETIME_TIMESTAMP_FILE, re-read on every
 * call with FAKETIME_NO_CACHE) that the test rewrites while the daemon
 * runs, and CLOCK_MONOTONIC stays real (FAKETIME_DONT_FAKE_MONOTONIC).
 * Each jump is made while the daemon is known to be inside a wait: the
 * test sees the failed request arrive (in the sandbox's request log, or
 * at its sink, tu_sink_*) and jumps a little later, well inside the shortest
 * wait that can follow it.
 *
 * Two waits are exercised:
 *   - a backfill against the Wix sandbox whose Query Refunds answers
 *     503 three times, 429 with Retry-After: 2 twice, then a body that is
 *     not JSON once: wixapi's backoff (full jitter, then exactly
 *     Retry-After) and the backfill's own page retry (1 s);
 *   - an http exporter whose sink answers 503 until the test lets it
 *     recover: the exporter's backoff (retry_initial_ms = 200, doubling
 *     to 1000, equal jitter) and its retry horizon (wall clock, default
 *     one day).
 * If a wait followed the wall clock, the +10 min jump would cut it short
 * (caught by the lower bound on the gap between two requests) and the
 * -10 min jump would stretch it by ten minutes (caught by the upper bound
 * and by the test's own deadline on CLOCK_MONOTONIC, so a hang fails the
 * test instead of hanging the suite).  The request times come from
 * CLOCK_MONOTONIC, which is one clock for every process on the host: the
 * sandbox logs its own, the sink reads the test's.
 *
 * Skipped (exit 77) without libfaketime (Debian package faketime).  The
 * two tests take about 8 and 5 s under the sanitizers.
 */
#include <sys/types.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST		"inst-time"
#define SEED		45	/* refunds in the sandbox */
#define PAGE		10	/* so 5 pages */
#define JUMP_DELAY_MS	200	/* from seeing a failure to the jump */
#define SLACK_MS	1500	/* scheduling under the sanitizers */
#define EARLY_MS	50	/* a wait may end this much early */
#define TEST_MS		30000	/* each test's own deadline */
#define NREFUNDS	5	/* exported records */

/* ---- the faked wall clock -------------------------------------------- */

struct fclock {
	char		*dir;
	char		*file;		/* FAKETIME_TIMESTAMP_FILE */
	char		*preload;	/* "LD_PRELOAD=..." */
	char		*tsenv;		/* FAKETIME_TIMESTAMP_FILE=... */
	const char	*env[6];	/* for tu_daemon_start() */
};

static void
fclock_open(struct fclock *c)
{
	const char *lib = tu_faketime_lib();

	ck_assert_msg(lib != NULL, "faketime is not installed");
	memset(c, 0, sizeof(*c));
	c->dir = tu_tempdir();
	c->file = xasprintf("%s/faketime", c->dir);
	ck_assert(tu_write_file(c->file, "+0\n", false));
	c->preload = xasprintf("LD_PRELOAD=%s", lib);
	c->tsenv = xasprintf("FAKETIME_TIMESTAMP_FILE=%s", c->file);
	c->env[0] = c->preload;
	c->env[1] = c->tsenv;
	c->env[2] = "FAKETIME_NO_CACHE=1";
	c->env[3] = "FAKETIME_DONT_FAKE_MONOTONIC=1";
	c->env[4] = "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0";
	c->env[5] = NULL;
}

/* Set the daemon's wall clock to real time plus offset ("+600"). */
static void
fclock_set(const struct fclock *c, const char *offset)
{
	char *text = xasprintf("%s\n", offset);

	ck_assert(tu_write_file(c->file, text, false));
	free(text);
}

static void
fclock_close(struct fclock *c)
{
	tu_rmtree(c->dir);
	free(c->dir);
	free(c->file);
	free(c->preload);
	free(c->tsenv);
}

/* ---- the sandbox's request log --------------------------------------- */

/* The Query Refunds requests of INST in the log, oldest first.  *n
 * set; caller frees. */
static struct tu_sandbox_entry *
sb_queries(const struct tu_sandbox *sb, size_t *n)
{
	struct tu_sandbox_entry *v;

	ck_assert(tu_sandbox_log(sb, INST, "/refunds/query", &v, n));
	return v;
}

/* How many of v[from..n) got fault. */
static size_t
sb_count_fault(const struct tu_sandbox_entry *v, size_t from, size_t n,
    const char *fault)
{
	size_t i, c = 0;

	for (i = from; i < n; i++)
		if (strcmp(v[i].fault, fault) == 0)
			c++;
	return c;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every refund id of INST, walking Query Refunds ourselves, sorted and
 * joined with ','.  Caller frees. */
static char *
sb_ids(const struct tu_sandbox *sb, size_t *count)
{
	cJSON *all = tu_sandbox_refunds(sb, INST, 100);
	const cJSON *r, *id;
	char **ids = NULL, *s, *t;
	size_t n = 0, i;

	ck_assert_msg(all != NULL, "Query Refunds of %s failed", INST);
	cJSON_ArrayForEach(r, all) {
		id = cJSON_GetObjectItemCaseSensitive(r, "id");
		ck_assert(cJSON_IsString(id));
		ids = xreallocarray(ids, n + 1, sizeof(*ids));
		ids[n++] = xstrdup(id->valuestring);
	}
	cJSON_Delete(all);
	if (n > 0)
		qsort(ids, n, sizeof(*ids), cmp_str);
	s = xstrdup("");
	for (i = 0; i < n; i++) {
		t = xasprintf("%s%s%s", s, i > 0 ? "," : "", ids[i]);
		free(s);
		s = t;
		free(ids[i]);
	}
	free(ids);
	*count = n;
	return s;
}

#define ck_str(got, want) do {						\
	char *g_ = (got);						\
	const char *w_ = (want);					\
	ck_assert_msg(g_ != NULL && strcmp(g_, w_) == 0,		\
	    "%s:\n got: %.300s\nwant: %.300s", #got,			\
	    g_ != NULL ? g_ : "(null)", w_);				\
	free(g_);							\
} while (0)

/* ---- (a) a backfill backing off across the jumps --------------------- */

/*
 * The gap from query i to query i + 1 must be one wait of [lo, hi] ms.
 */
static void
assert_gap(const struct tu_sandbox_entry *v, size_t i, int64_t lo, int64_t hi,
    const char *what)
{
	int64_t gap = v[i + 1].t_ms - v[i].t_ms;

	ck_assert_msg(gap >= lo && gap <= hi, "after %s (query %zu): the "
	    "next query came %lld ms later, want %lld..%lld ms", what, i,
	    (long long)gap, (long long)lo, (long long)hi);
}

START_TEST(test_backfill_backoff_across_jumps)
{
	static const char faults[] = "{\"faults\":["
	    "{\"fault\":\"503\",\"count\":3,\"endpoint\":\"query\"},"
	    "{\"fault\":\"429\",\"count\":2,\"retry_after\":2,"
	    "\"endpoint\":\"query\"},"
	    "{\"fault\":\"invalid_json\",\"count\":1,\"endpoint\":\"query\"}"
	    "]}";
	static const char *const ra[] = { "(Retry-After)", NULL };
	struct tu_sandbox sb;
	struct tu_daemon *d;
	struct tu_conf conf;
	struct fclock fc;
	struct tu_sandbox_entry *v = NULL;
	char *want, *keys, *wix, *tail, *state, *st;
	size_t n = 0, n0, count, i;
	int64_t t0, deadline, took;
	int jumps = 0;
	bool done = false;

	fclock_open(&fc);
	ck_assert_msg(tu_sandbox_start(&sb, fc.dir, SEED, INST, NULL),
	    "the sandbox did not start");
	want = sb_ids(&sb, &count);
	ck_assert_uint_eq(count, SEED);
	free(sb_queries(&sb, &n0));	/* our own walk's queries */
	ck_assert_msg(tu_sandbox_control(&sb, "/_sandbox/faults", faults),
	    "faults refused");

	keys = tu_sandbox_wix_keys(&sb, fc.dir);
	ck_assert_ptr_nonnull(keys);
	wix = xasprintf("%sinstances = %s", keys, INST);
	tail = xasprintf("[backfill]\npage_size = %d\n"
	    "requests_per_minute = 100000", PAGE);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	conf.tail = tail;
	t0 = clock_mono_ms();
	deadline = t0 + TEST_MS;
	d = tu_daemon_start(&conf, fc.env);
	ck_assert_msg(d != NULL, "the daemon did not start under faketime");

	/*
	 * Jump +10 min in the first Retry-After wait, -10 min (back to
	 * real) in the second, and -10 min again (10 min behind real) in
	 * the backfill's own wait after the page that was not JSON.
	 */
	while (!done && clock_mono_ms() < deadline) {
		free(v);
		v = sb_queries(&sb, &n);
		if (jumps == 0 && sb_count_fault(v, n0, n, "429") >= 1) {
			tu_sleep_ms(JUMP_DELAY_MS);
			fclock_set(&fc, "+600");
			jumps++;
		} else if (jumps == 1 && sb_count_fault(v, n0, n, "429") >= 2) {
			tu_sleep_ms(JUMP_DELAY_MS);
			fclock_set(&fc, "+0");
			jumps++;
		} else if (jumps == 2 &&
		    sb_count_fault(v, n0, n, "invalid_json") >= 1) {
			tu_sleep_ms(JUMP_DELAY_MS);
			fclock_set(&fc, "-600");
			jumps++;
		} else if (jumps == 3) {
			st = tu_sql(d->db_path, "SELECT backfill FROM"
			    " instances");
			done = st != NULL && strcmp(st, "done") == 0;
			free(st);
		}
		if (!done)
			tu_sleep_ms(10);
	}
	took = clock_mono_ms() - t0;
	state = tu_sql(d->db_path, "SELECT backfill || '|' ||"
	    " backfill_pages || '|' || backfill_refunds FROM instances");
	ck_assert_msg(done, "the backfill did not finish within %d ms "
	    "(%d jumps made, state %s, %zu queries)", TEST_MS, jumps,
	    state != NULL ? state : "(none)", n - n0);
	free(state);
	free(v);
	v = sb_queries(&sb, &n);

	/* The exact set, each refund once, all from the backfill. */
	ck_str(tu_sql(d->db_path, "SELECT coalesce(group_concat(id, ','),"
	    " '') FROM (SELECT id FROM refunds WHERE instance_id = '" INST
	    "' ORDER BY id)"), want);
	ck_str(tu_sql(d->db_path, "SELECT backfill || '|' || backfill_pages"
	    " || '|' || backfill_refunds || '|' || (backfill_cursor IS NOT"
	    " NULL) || '|' || coalesce(last_error, '-') FROM instances"),
	    "done|5|45|0|-");
	ck_str(tu_sql(d->db_path, "SELECT count(*) FROM changes"), "45");
	ck_str(tu_sql(d->db_path, "SELECT count(*) FROM refunds WHERE"
	    " source <> 'backfill'"), "0");

	/*
	 * The queries: 503 x3, 429 x2, invalid_json, then page 1 again and
	 * pages 2-5, nothing more.  Each wait has its length on the
	 * monotonic clock: 503 attempt k at most 500 * 2^(k-1) ms (full
	 * jitter), a Retry-After of 2 s exactly 2 s, the backfill's page
	 * retry 1 s.
	 */
	ck_assert_uint_eq(n - n0, 3 + 2 + 1 + 5);
	for (i = n0; i < n0 + 3; i++)
		ck_assert_str_eq(v[i].fault, "503");
	ck_assert_str_eq(v[n0 + 3].fault, "429");
	ck_assert_str_eq(v[n0 + 4].fault, "429");
	ck_assert_str_eq(v[n0 + 5].fault, "invalid_json");
	for (i = n0 + 6; i < n; i++) {
		ck_assert_str_eq(v[i].fault, "");
		ck_assert_int_eq(v[i].status, 200);
	}
	assert_gap(v, n0 + 0, 0, 500 + SLACK_MS, "503 #1");
	assert_gap(v, n0 + 1, 0, 1000 + SLACK_MS, "503 #2");
	assert_gap(v, n0 + 2, 0, 2000 + SLACK_MS, "503 #3");
	assert_gap(v, n0 + 3, 2000 - EARLY_MS, 2000 + SLACK_MS,
	    "429 Retry-After: 2 with a +10 min jump");
	assert_gap(v, n0 + 4, 2000 - EARLY_MS, 2000 + SLACK_MS,
	    "429 Retry-After: 2 with a -10 min jump");
	assert_gap(v, n0 + 5, 1000 - EARLY_MS, 1000 + SLACK_MS,
	    "a page that is not JSON, with a -10 min jump");
	ck_assert_msg(took < 20000, "the backfill took %lld ms",
	    (long long)took);
	ck_assert(tu_daemon_wait_log(d, 0, ra, 1000));

	/* Still serving, and stops cleanly 10 min behind real time. */
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	tu_sandbox_stop(&sb);
	free(v);
	free(want);
	free(keys);
	free(wix);
	free(tail);
	fclock_close(&fc);
}
END_TEST

/* ---- (b) an http exporter backing off across the jumps --------------- */

/* Wait until the sink has answered want requests with code. */
static bool
sink_wait(struct tu_sink *s, int code, int want, int64_t deadline)
{
	int64_t left = deadline - clock_mono_ms();

	return tu_sink_wait(s, NULL, code, want, left > 0 ? (int)left : 0);
}

/* Post refund id (SUCCEEDED, revision 1).  The status. */
static int
post_refund(const struct tu_daemon *d, const char *id)
{
	struct tu_refund r;
	struct tu_event ev;
	char *tok, *evid = tu_random_id("ev-");
	int st;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-time";
	r.currency = "USD";
	r.amount = "12.34";
	r.status = "SUCCEEDED";
	r.revision = 1;
	r.created_date = "2025-08-09T15:26:24.000Z";
	r.updated_date = "2025-08-09T15:26:25.000Z";
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = TU_CREATED;
	ev.form = TU_FORM_OBJECT;
	ev.seq = -1;
	tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	ck_assert_ptr_nonnull(tok);
	st = tu_daemon_post(d, tok, NULL);
	free(tok);
	free(evid);
	return st;
}

/* The exporter's wait after its k-th failure in a row, before jitter:
 * retry_initial_ms 200 doubling, capped at retry_max_ms 1000. */
static int64_t
sink_schedule(int k)
{
	int64_t w = 200;

	while (--k > 0 && w < 1000)
		w *= 2;
	return w < 1000 ? w : 1000;
}

START_TEST(test_export_backoff_across_jumps)
{
	/* The sink answers 503 until the test lets it recover. */
	struct tu_sink_policy down = { .fail_all = true };
	struct tu_sink_req *log;
	struct tu_daemon *d;
	struct tu_conf conf;
	struct fclock fc;
	struct tu_sink *s;
	char *tail, id[32], key[64];
	int64_t t0, deadline, t_rec, gap, lo, hi, last_done;
	size_t nlog, i;
	int nfail;

	fclock_open(&fc);
	s = tu_sink_start(&down);
	ck_assert_msg(s != NULL, "the sink did not start");
	tail = xasprintf("[exporter h]\ntype = http\n"
	    "url = http://127.0.0.1:%d/hook\npoll_ms = 20\n"
	    "retry_initial_ms = 200\nretry_max_ms = 1000\ntimeout = 5\n",
	    tu_sink_port(s));
	memset(&conf, 0, sizeof(conf));
	conf.tail = tail;
	t0 = clock_mono_ms();
	deadline = t0 + TEST_MS;
	d = tu_daemon_start(&conf, fc.env);
	ck_assert_msg(d != NULL, "the daemon did not start under faketime");
	/* The webhooks go in before any jump, while the JWT times agree. */
	for (i = 1; i <= NREFUNDS; i++) {
		snprintf(id, sizeof(id), "rf-time-%zu", i);
		ck_assert_int_eq(post_refund(d, id), 200);
	}

	/*
	 * Failures 1-2 wait 100-400 ms; from the 3rd on, at least 400 ms, so
	 * a jump 100 ms after a failure lands inside the wait.  +10 min
	 * after the 3rd, -10 min (back to real) after the 5th, -10 min
	 * again (10 min behind) after the 6th; the sink recovers after the
	 * 7th.
	 */
	ck_assert_msg(sink_wait(s, 503, 3, deadline), "no 3rd attempt");
	tu_sleep_ms(100);
	fclock_set(&fc, "+600");
	ck_assert_msg(sink_wait(s, 503, 5, deadline), "no 5th attempt after "
	    "a +10 min jump");
	tu_sleep_ms(100);
	fclock_set(&fc, "+0");
	ck_assert_msg(sink_wait(s, 503, 6, deadline), "no 6th attempt after "
	    "a -10 min jump");
	tu_sleep_ms(100);
	fclock_set(&fc, "-600");
	ck_assert_msg(sink_wait(s, 503, 7, deadline), "no 7th attempt after "
	    "a -10 min jump");
	tu_sleep_ms(100);
	tu_sink_set_policy(s, NULL);
	t_rec = clock_mono_ms();
	ck_assert_msg(sink_wait(s, 200, NREFUNDS, deadline), "%d of %d "
	    "delivered by the test's deadline", tu_sink_count(s, NULL, 200),
	    NREFUNDS);

	/* Let any duplicate show up before counting. */
	tu_sleep_ms(300);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT position FROM"
	    " exporter_positions WHERE exporter = 'h'"), NREFUNDS);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM"
	    " exporter_dead_letters"), 0);
	ck_assert_int_eq(tu_sink_count(s, NULL, 400), 0);

	log = tu_sink_log(s, &nlog);
	/* Every request until the recovery was the first record's retry,
	 * every one after it a delivery. */
	nfail = 0;
	for (i = 0; i < nlog && log[i].status == 503; i++) {
		ck_assert_str_eq(log[i].key, "h:rf-time-1:1");
		nfail++;
	}
	ck_assert_int_eq(nfail, 7);
	ck_assert_uint_eq(nlog, (size_t)nfail + NREFUNDS);
	/* Each key delivered exactly once, in order. */
	for (i = 1; i <= NREFUNDS; i++) {
		snprintf(key, sizeof(key), "h:rf-time-%zu:1", i);
		ck_assert_str_eq(log[(size_t)nfail + i - 1].key, key);
		ck_assert_int_eq(tu_sink_count(s, key, 200), 1);
	}
	/*
	 * Each wait on the schedule: after the k-th failure, within
	 * [w/2, w] of w = 200 * 2^(k-1) capped at 1000 (equal jitter),
	 * neither skipped by the +10 min jump nor stretched by the -10 min
	 * ones.  The one after the 7th failure ends in the first delivery.
	 */
	for (i = 0; i < (size_t)nfail; i++) {
		gap = log[i + 1].t_ms - log[i].t_ms;
		lo = sink_schedule((int)i + 1) / 2 - EARLY_MS;
		hi = sink_schedule((int)i + 1) + SLACK_MS;
		ck_assert_msg(gap >= lo && gap <= hi, "the wait after failure "
		    "%zu was %lld ms, want %lld..%lld", i + 1, (long long)gap,
		    (long long)lo, (long long)hi);
	}
	/* Delivered soon after the sink recovered. */
	last_done = log[nlog - 1].t_ms;
	tu_sink_log_free(log, nlog);
	ck_assert_msg(last_done - t_rec <= 1000 + SLACK_MS, "all delivered "
	    "%lld ms after the sink recovered", (long long)(last_done - t_rec));

	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	tu_sink_free(s);
	free(tail);
	fclock_close(&fc);
}
END_TEST

static Suite *
time_faults_suite(void)
{
	Suite *s = suite_create("time_faults");
	TCase *tc;

	tc = tcase_create("backoff");
	/* Past the tests' own 30 s deadlines, so those report first. */
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_backfill_backoff_across_jumps);
	tcase_add_test(tc, test_export_backoff_across_jumps);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	if (tu_faketime_lib() == NULL) {
		fprintf(stderr, "SKIP check_time_faults: faketime is not "
		    "installed (Debian package faketime)\n");
		return 77;
	}
	sr = srunner_create(time_faults_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
