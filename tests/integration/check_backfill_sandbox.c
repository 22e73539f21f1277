/*
 * check_backfill_sandbox.c: backfills by the real refundsync binary (the
 * `backfill` command and the daemon) against the real Wix sandbox
 * (tests/sandbox/wix-sandbox) on loopback: complete sets, every sandbox
 * fault, kill -9 and resume, a newer webhook mid-backfill, two instances
 * at once, token expiry, and the request budget (HARDENING rows 20-23).
 *
 * Each test starts its own sandbox (port 0) and works in its own
 * temporary directory.  The expected set of refunds is read from the
 * sandbox itself, by walking Query Refunds with a token of our own before
 * any fault is armed, and compared with the rows in SQLite.
 *
 * Time: small pages make many pages quickly, and requests_per_minute is
 * high everywhere but in the budget test.  That one would need a whole
 * minute to see a second window, so it checks the burst bound instead:
 * with requests_per_minute = 10 the first 10 requests go at once and the
 * 11th has not gone a few seconds later (it waits for the window), with
 * zero 429 from a sandbox limiting at 10 too.  Timeouts come from
 * [wix] connect_timeout = 1 and timeout = 2 where a test needs one to
 * pass, so a stalled page or a connect that never completes costs
 * seconds, not the defaults' 5 and 30 s.  The whole file runs in one to
 * two minutes under the sanitizers; each test has 90 s.
 */
#include <sys/types.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "util/buf.h"
#include "util/clock.h"
#include "util/xmalloc.h"

#include "../netfault.h"
#include "../testutil.h"

#define APP_ID		TU_SANDBOX_APP_ID
#define APP_SECRET	TU_SANDBOX_APP_SECRET
#define CLI_MS		60000	/* a `backfill` command's limit */

/* ---- the sandbox --------------------------------------------------------- */

/*
 * Start a sandbox with seed refunds per instance for instances (a comma
 * list), rate_limit requests per minute (0: its default), writing into
 * dir.
 */
static void
sandbox_start(struct tu_sandbox *sb, const char *dir, int seed,
    const char *instances, int rate_limit)
{
	char rates[16];
	const char *extra[] = { "--rate-limit", rates, NULL };

	snprintf(rates, sizeof(rates), "%d", rate_limit);
	ck_assert_msg(tu_sandbox_start(sb, dir, seed, instances,
	    rate_limit > 0 ? extra : NULL), "the sandbox did not start");
}

/* Arm a fault (the JSON of POST /_sandbox/faults). */
static void
sb_fault(const struct tu_sandbox *sb, const char *json)
{
	ck_assert_msg(tu_sandbox_control(sb, "/_sandbox/faults", json),
	    "fault %s refused", json);
}

/* Slow every Query Refunds page down by ms (until sb_clear()), so a
 * test can act while a backfill is surely under way. */
static void
sb_slow(const struct tu_sandbox *sb, int ms)
{
	char *json;

	json = xasprintf("{\"fault\":\"stall\",\"count\":-1,\"ms\":%d,"
	    "\"endpoint\":\"query\"}", ms);
	sb_fault(sb, json);
	free(json);
}

/* Drop every fault. */
static void
sb_clear(const struct tu_sandbox *sb)
{
	ck_assert_int_eq(tu_sandbox_request(sb, "DELETE", "/_sandbox/faults",
	    NULL, NULL, NULL), 200);
}

/* The log entries for instance (NULL: all) whose path contains part
 * (NULL: any).  *n set; caller frees. */
static struct tu_sandbox_entry *
sb_entries(const struct tu_sandbox *sb, const char *instance, const char *part,
    size_t *n)
{
	struct tu_sandbox_entry *v;

	ck_assert(tu_sandbox_log(sb, instance, part, &v, n));
	return v;
}

/* How many log entries for instance have this status (0: any). */
static size_t
sb_count(const struct tu_sandbox *sb, const char *instance, const char *part,
    int status)
{
	struct tu_sandbox_entry *v;
	size_t n, i, c = 0;

	v = sb_entries(sb, instance, part, &n);
	for (i = 0; i < n; i++)
		if (status == 0 || v[i].status == status)
			c++;
	free(v);
	return c;
}

/* How many log entries for instance got the fault named fault. */
static size_t
sb_faulted(const struct tu_sandbox *sb, const char *instance, const char *fault)
{
	struct tu_sandbox_entry *v;
	size_t n, i, c = 0;

	v = sb_entries(sb, instance, NULL, &n);
	for (i = 0; i < n; i++)
		if (strcmp(v[i].fault, fault) == 0)
			c++;
	free(v);
	return c;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Join ids sorted with ','.  Frees the array and its strings. */
static char *
join_sorted(char **ids, size_t n)
{
	char *s = xstrdup(""), *t;
	size_t i;

	if (n > 0)
		qsort(ids, n, sizeof(*ids), cmp_str);
	for (i = 0; i < n; i++) {
		t = xasprintf("%s%s%s", s, i > 0 ? "," : "", ids[i]);
		free(s);
		s = t;
		free(ids[i]);
	}
	free(ids);
	return s;
}

/*
 * Every refund id of instance, walking Query Refunds ourselves (100 a
 * page), sorted and joined with ','.  Do it before arming faults.
 * Caller frees.
 */
static char *
sb_ids(const struct tu_sandbox *sb, const char *instance, size_t *count)
{
	cJSON *all = tu_sandbox_refunds(sb, instance, 100);
	const cJSON *r, *id;
	char **ids = NULL;
	size_t n = 0;

	ck_assert_msg(all != NULL, "Query Refunds of %s failed", instance);
	cJSON_ArrayForEach(r, all) {
		id = cJSON_GetObjectItemCaseSensitive(r, "id");
		ck_assert(cJSON_IsString(id));
		ids = xreallocarray(ids, n + 1, sizeof(*ids));
		ids[n++] = xstrdup(id->valuestring);
	}
	cJSON_Delete(all);
	if (count != NULL)
		*count = n;
	return join_sorted(ids, n);
}

/* ---- one test's world ---------------------------------------------- */

struct env {
	char		*dir;
	char		*conf;
	char		*db;
	char		*out;		/* backfill_spawn()'s output */
	char		*instances;	/* [wix] instances, or NULL */
	int		 page_size;
	int		 rpm;
	struct tu_sandbox sb;
};

/*
 * (Re)write e's config: credentials for the sandbox, with api_base
 * replaced by api_base unless NULL, then the [wix] keys of wix (NULL:
 * none; each line ending in "\n").
 */
static void
env_conf(struct env *e, const char *api_base, const char *wix)
{
	char *keys, *text, *p;

	keys = tu_sandbox_wix_keys(&e->sb, e->dir);
	ck_assert_ptr_nonnull(keys);
	if (api_base != NULL) {
		/* The sandbox's api_base is the last line of keys. */
		p = strstr(keys, "api_base = ");
		ck_assert_ptr_nonnull(p);
		*p = '\0';
	}
	text = xasprintf("[store]\npath = %s\n[wix]\npublic_key_file = "
	    "%s/unused.pem\n%s%s%s%s%s%s%s%s[backfill]\npage_size = %d\n"
	    "requests_per_minute = %d\n", e->db, e->dir, keys,
	    api_base != NULL ? "api_base = " : "",
	    api_base != NULL ? api_base : "", api_base != NULL ? "\n" : "",
	    wix != NULL ? wix : "",
	    e->instances != NULL ? "instances = " : "",
	    e->instances != NULL ? e->instances : "",
	    e->instances != NULL ? "\n" : "", e->page_size, e->rpm);
	ck_assert(tu_write_file(e->conf, text, false));
	free(text);
	free(keys);
}

/*
 * A directory, a sandbox and a config: credentials for the sandbox,
 * [wix] instances = cfg_instances (may be NULL), page_size and rpm.
 */
static void
env_open(struct env *e, int seed, const char *instances,
    const char *cfg_instances, int page_size, int rpm, int rate_limit)
{
	memset(e, 0, sizeof(*e));
	e->dir = tu_tempdir();
	e->conf = xasprintf("%s/refundsync.conf", e->dir);
	e->db = xasprintf("%s/refundsync.db", e->dir);
	e->out = xasprintf("%s/backfill.out", e->dir);
	e->instances = cfg_instances != NULL ? xstrdup(cfg_instances) : NULL;
	e->page_size = page_size;
	e->rpm = rpm;
	sandbox_start(&e->sb, e->dir, seed, instances, rate_limit);
	env_conf(e, NULL, NULL);
}

static void
env_close(struct env *e)
{
	tu_sandbox_stop(&e->sb);
	tu_rmtree(e->dir);
	free(e->dir);
	free(e->conf);
	free(e->db);
	free(e->out);
	free(e->instances);
}

/* `refundsync backfill -c CONF [args]`, waited for; the exit status. */
static int
backfill_cmd(struct env *e, const char *instance, bool restart, char **out,
    char **err)
{
	char *argv[8], *bin = xstrdup(tu_binary()), *inst = NULL;
	int n = 0, rc;

	argv[n++] = bin;
	argv[n++] = (char *)"backfill";
	argv[n++] = (char *)"-c";
	argv[n++] = e->conf;
	if (instance != NULL) {
		inst = xstrdup(instance);
		argv[n++] = (char *)"--instance";
		argv[n++] = inst;
	}
	if (restart)
		argv[n++] = (char *)"--restart";
	argv[n] = NULL;
	rc = tu_run(argv, CLI_MS, out, err);
	free(bin);
	free(inst);
	return rc;
}

/* The same, not waited for: output to e->out.  The pid. */
static pid_t
backfill_spawn(struct env *e, const char *instance)
{
	char *argv[7], *bin = xstrdup(tu_binary()), *inst = xstrdup(instance);
	pid_t pid;

	argv[0] = bin;
	argv[1] = (char *)"backfill";
	argv[2] = (char *)"-c";
	argv[3] = e->conf;
	argv[4] = (char *)"--instance";
	argv[5] = inst;
	argv[6] = NULL;
	pid = tu_spawn(argv, e->out, NULL);
	ck_assert_int_gt(pid, 0);
	free(bin);
	free(inst);
	return pid;
}

/* First cell of sql on the store, "" for no row or NULL.  Caller frees. */
static char *
db_text(const struct env *e, const char *sql)
{
	char *v = tu_sql(e->db, sql);

	return v != NULL ? v : xstrdup("");
}

static int64_t
db_int(const struct env *e, const char *sql)
{
	char *v = db_text(e, sql);
	int64_t n = strtoll(v, NULL, 10);

	free(v);
	return n;
}

/* The stored ids of instance, sorted, joined with ','. Caller frees. */
static char *
db_ids(const struct env *e, const char *instance)
{
	char *sql, *v;

	sql = xasprintf("SELECT coalesce(group_concat(id, ','), '') FROM"
	    " (SELECT id FROM refunds WHERE instance_id = '%s' ORDER BY id)",
	    instance);
	v = db_text(e, sql);
	free(sql);
	return v;
}

/* backfill|pages|refunds|cursor?|last_error of instance. */
static char *
db_state(const struct env *e, const char *instance)
{
	char *sql, *v;

	sql = xasprintf("SELECT backfill || '|' || backfill_pages || '|' ||"
	    " backfill_refunds || '|' || (backfill_cursor IS NOT NULL) ||"
	    " '|' || coalesce(last_error, '-') FROM instances WHERE"
	    " instance_id = '%s'", instance);
	v = db_text(e, sql);
	free(sql);
	return v;
}

#define ck_str(got, want) do {						\
	char *g_ = (got);						\
	ck_assert_msg(strcmp(g_, (want)) == 0, "%s:\n got: %.300s\nwant: " \
	    "%.300s", #got, g_, (want));				\
	free(g_);							\
} while (0)

/* The stored set of instance equals want exactly, all from the
 * backfill (or the webhook where a test says so). */
static void
expect_set(const struct env *e, const char *instance, const char *want)
{
	char *got = db_ids(e, instance);

	ck_assert_msg(strcmp(got, want) == 0, "instance %s: stored set "
	    "differs (%zu vs %zu bytes of ids)", instance, strlen(got),
	    strlen(want));
	free(got);
}

/* Wait up to ms for sql to give at least min. */
static bool
wait_db_int(const struct env *e, const char *sql, int64_t min, int ms)
{
	int64_t end = clock_mono_ms() + ms;

	while (clock_mono_ms() < end) {
		if (db_int(e, sql) >= min)
			return true;
		tu_sleep_ms(20);
	}
	return false;
}

/* ---- tests: complete sets ---------------------------------------------- */

static const int sizes[] = { 0, 1, 99, 100, 101 };

START_TEST(test_exact_sets)
{
	struct env e;
	char *want, *out = NULL, *err = NULL, state[64];
	size_t n;
	int seed = sizes[_i];

	env_open(&e, seed, "inst-a", NULL, 100, 100000, 0);
	want = sb_ids(&e.sb, "inst-a", &n);
	ck_assert_uint_eq(n, (size_t)seed);
	ck_assert_msg(backfill_cmd(&e, "inst-a", false, &out, &err) == 0,
	    "stdout: %s\nstderr: %s", out, err);
	expect_set(&e, "inst-a", want);
	snprintf(state, sizeof(state), "done|%d|%d|0|-", seed > 100 ? 2 : 1,
	    seed);
	ck_str(db_state(&e, "inst-a"), state);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM refunds WHERE"
	    " source <> 'backfill'"), 0);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM changes"), seed);
	ck_assert_ptr_nonnull(strstr(out, "inst-a: done:"));
	/* The secret is never printed. */
	ck_assert_ptr_null(strstr(err, APP_SECRET));
	free(out);
	free(err);

	/* Again without --restart: already done, nothing asked. */
	n = sb_count(&e.sb, "inst-a", "/refunds/query", 0);
	ck_assert_int_eq(backfill_cmd(&e, "inst-a", false, &out, &err), 0);
	ck_assert_ptr_nonnull(strstr(out, "inst-a: already done"));
	ck_assert_uint_eq(sb_count(&e.sb, "inst-a", "/refunds/query", 0), n);
	free(out);
	free(err);
	free(want);
	env_close(&e);
}
END_TEST

/* 10,000 refunds, 100 a page. */
START_TEST(test_ten_thousand)
{
	struct env e;
	char *want, *out = NULL, *err = NULL;
	size_t n;

	env_open(&e, 10000, "inst-big", NULL, 100, 100000, 0);
	want = sb_ids(&e.sb, "inst-big", &n);
	ck_assert_uint_eq(n, 10000);
	ck_assert_msg(backfill_cmd(&e, "inst-big", false, &out, &err) == 0,
	    "stderr: %s", err);
	expect_set(&e, "inst-big", want);
	ck_str(db_state(&e, "inst-big"), "done|100|10000|0|-");
	ck_assert_uint_eq(sb_count(&e.sb, "inst-big", "/refunds/query", 0),
	    100 + 100 /* our own walk */);
	free(out);
	free(err);
	free(want);
	env_close(&e);
}
END_TEST

/* ---- tests: faults ------------------------------------------------------- */

struct fault_case {
	const char	*fault;		/* for POST /_sandbox/faults */
	const char	*name;		/* the log's "fault" */
	size_t		 hits;		/* requests it hit */
	int		 exit;		/* of the backfill command */
	const char	*message;	/* in stderr (and last_error if it
					   failed) */
	const char	*wix;		/* more [wix] keys, or NULL */
};

/* Short Wix API timeouts, for the cases that pass one. */
#define SHORT_TIMEOUTS	"connect_timeout = 1\ntimeout = 2\n"

#define Q	",\"endpoint\":\"query\""

static const struct fault_case fault_cases[] = {
	{ "{\"fault\":\"429\",\"count\":3" Q "}", "429", 3, 0,
	    "HTTP 429", NULL },
	{ "{\"fault\":\"429\",\"count\":2,\"retry_after\":1" Q "}", "429",
	    2, 0, "(Retry-After)", NULL },
	{ "{\"fault\":\"500\",\"count\":2" Q "}", "500", 2, 0, "HTTP 500", NULL },
	{ "{\"fault\":\"503\",\"count\":1,\"endpoint\":\"token\"}", "503",
	    1, 0, "POST /oauth2/token: HTTP 503", NULL },
	{ "{\"fault\":\"stall\",\"count\":1,\"ms\":1500" Q "}", "stall", 1,
	    0, "done: 10 pages", NULL },
	{ "{\"fault\":\"stall_body\",\"count\":1,\"ms\":1500" Q "}",
	    "stall_body", 1, 0, "done: 10 pages", NULL },
	{ "{\"fault\":\"truncate\",\"count\":2" Q "}", "truncate", 2, 0,
	    "transfer closed", NULL },
	{ "{\"fault\":\"truncate\",\"count\":1,\"chunked\":true" Q "}",
	    "truncate", 1, 0, "retrying", NULL },
	{ "{\"fault\":\"oversize\",\"count\":1,\"bytes\":9437184" Q "}",
	    "oversize", 1, 0, "oversized page", NULL },
	{ "{\"fault\":\"invalid_json\",\"count\":2" Q "}", "invalid_json",
	    2, 0, "malformed page, HTTP 200", NULL },
	{ "{\"fault\":\"expire_cursor\",\"count\":1}", "expire_cursor", 1,
	    0, "Wix rejected the cursor (HTTP 400: INVALID_CURSOR", NULL },
	{ "{\"fault\":\"repeat_cursor\",\"count\":1}", "repeat_cursor", 1,
	    1, "Query Refunds repeated cursor", NULL },
	{ "{\"fault\":\"has_next_no_cursor\",\"count\":1}",
	    "has_next_no_cursor", 1, 1, "has hasNext true but no next cursor", NULL },
	{ "{\"fault\":\"empty_page_has_next\",\"count\":1}",
	    "empty_page_has_next", 1, 1, "returned an empty page", NULL },
	/* Network faults: a reset after half the body (an RST, not a
	 * clean close), with and without Content-Length ... */
	{ "{\"fault\":\"reset\",\"count\":2" Q "}", "reset", 2, 0,
	    "Recv failure: Connection reset by peer", NULL },
	{ "{\"fault\":\"reset\",\"count\":1,\"chunked\":true" Q "}",
	    "reset", 1, 0, "Recv failure: Connection reset by peer", NULL },
	/* ... a redirect, not followed: the run fails at once naming it
	 * (the target's absence is checked for every case) ... */
	{ "{\"fault\":\"302\",\"count\":1" Q "}", "302", 1, 1,
	    "HTTP 302", NULL },
	{ "{\"fault\":\"307\",\"count\":1,\"endpoint\":\"token\"}",
	    "307", 1, 1,
	    "redirect, not followed (check api_base): HTTP 307", NULL },
	/* ... and a page stalled (4 s) past [wix] timeout (2 s): cut at
	 * 2000-2099 ms, retried, completed. */
	{ "{\"fault\":\"stall\",\"count\":1,\"seconds\":4" Q "}",
	    "stall", 1, 0, "Operation timed out after 20", SHORT_TIMEOUTS },
};

START_TEST(test_faults)
{
	const struct fault_case *fc = &fault_cases[_i];
	struct env e;
	char *want, *out = NULL, *err = NULL, *state;
	int rc;

	env_open(&e, 95, "inst-f", NULL, 10, 100000, 0);
	if (fc->wix != NULL)
		env_conf(&e, NULL, fc->wix);
	want = sb_ids(&e.sb, "inst-f", NULL);
	sb_fault(&e.sb, fc->fault);
	rc = backfill_cmd(&e, "inst-f", false, &out, &err);
	ck_assert_msg(rc == fc->exit, "%s: exit %d\nstderr: %s", fc->fault,
	    rc, err);
	ck_assert_uint_eq(sb_faulted(&e.sb, "inst-f", fc->name), fc->hits);
	/* Nothing ever followed a redirect, with credentials or not. */
	ck_assert_uint_eq(sb_faulted(&e.sb, NULL, "redirected"), 0);
	ck_assert_uint_eq(sb_faulted(&e.sb, NULL, "redirected_auth"), 0);
	ck_assert_msg(strstr(err, fc->message) != NULL, "%s: want \"%s\" in "
	    "stderr: %s", fc->fault, fc->message, err);
	if (fc->exit == 0) {
		expect_set(&e, "inst-f", want);
		ck_str(db_state(&e, "inst-f"), "done|10|95|0|-");
	} else {
		ck_assert_msg(strstr(err, "refundsync: backfill inst-f: "
		    "failed: ") != NULL, "stderr: %s", err);
		state = db_state(&e, "inst-f");
		ck_assert_msg(strncmp(state, "failed|", 7) == 0 &&
		    strstr(state, fc->message) != NULL, "state %s", state);
		free(state);
		/* Stopped, not looping: a handful of queries. */
		ck_assert_uint_le(sb_count(&e.sb, "inst-f", "/refunds/query",
		    0), 10 + 2 + 1);
		/* Once Wix behaves, a new run resumes and completes. */
		free(out);
		free(err);
		ck_assert_int_eq(backfill_cmd(&e, "inst-f", false, &out, &err),
		    0);
		expect_set(&e, "inst-f", want);
	}
	free(out);
	free(err);
	free(want);
	env_close(&e);
}
END_TEST

/*
 * A 429 whose Retry-After is an HTTP date 4 s ahead: the backfill waits
 * until then (2-4 s, whole seconds from when the answer arrives), not
 * its own backoff (at most 500 ms) nor the 60 s cap, and completes.
 */
START_TEST(test_retry_after_date)
{
	struct tu_sandbox_entry *v;
	struct env e;
	char *want, *out = NULL, *err = NULL, *date, *json;
	size_t n, i;
	int64_t wait = -1;
	int rc;

	env_open(&e, 25, "inst-d", NULL, 10, 100000, 0);
	want = sb_ids(&e.sb, "inst-d", NULL);
	date = nf_http_date(4);
	json = xasprintf("{\"fault\":\"429\",\"count\":1,\"retry_after\":"
	    "\"%s\"" Q "}", date);
	sb_fault(&e.sb, json);
	rc = backfill_cmd(&e, "inst-d", false, &out, &err);
	ck_assert_msg(rc == 0, "exit %d\nstderr: %s", rc, err);
	expect_set(&e, "inst-d", want);
	ck_str(db_state(&e, "inst-d"), "done|3|25|0|-");
	ck_assert_ptr_nonnull(strstr(err, "HTTP 429"));
	ck_assert_ptr_nonnull(strstr(err, "(Retry-After)"));
	/* The wait, between the 429 and the next query, on the sandbox's
	 * monotonic clock. */
	v = sb_entries(&e.sb, "inst-d", "/refunds/query", &n);
	for (i = 0; i + 1 < n; i++)
		if (strcmp(v[i].fault, "429") == 0)
			wait = v[i + 1].t_ms - v[i].t_ms;
	free(v);
	ck_assert_uint_eq(sb_faulted(&e.sb, "inst-d", "429"), 1);
	ck_assert_msg(wait >= 1950 && wait <= 4600, "waited %lld ms",
	    (long long)wait);
	free(json);
	free(date);
	free(out);
	free(err);
	free(want);
	env_close(&e);
}
END_TEST

/* ---- tests: network faults through the binary ------------------------- */

/*
 * A connect that never completes, a certificate that does not verify and
 * a name that does not resolve, each as api_base of `refundsync
 * backfill` with [wix] connect_timeout = 1 and timeout = 2.  wixapi
 * retries every one of them (8 attempts with backoff) and the backfill
 * retries the page on top (5 times), so a run would take minutes to
 * fail; each test instead waits (a few seconds at most) for the first
 * failed attempt in the output, checks it, and stops the command with
 * ONE SIGTERM: it cuts short the Wix call under way (a connect, a
 * handshake or a backoff) and the run stops at its last committed page,
 * so the command exits within 2 s with 1 ("interrupted"), keeping every
 * committed page and the cursor, the state 'running' (resumable).
 */

#define NET_WAIT_MS	8000	/* for the first failed attempt */

/* Wait up to ms for e->out to contain want.  The time it took, or -1.
 * *text (may be NULL) gets the output (caller frees). */
static int64_t
wait_out(const struct env *e, const char *want, int ms, char **text)
{
	int64_t t0 = clock_mono_ms(), dt = -1;
	char *s = NULL;

	for (;;) {
		free(s);
		s = tu_read_file(e->out, NULL);
		if (s != NULL && strstr(s, want) != NULL) {
			dt = clock_mono_ms() - t0;
			break;
		}
		if (clock_mono_ms() - t0 > ms)
			break;
		tu_sleep_ms(20);
	}
	if (text != NULL)
		*text = s != NULL ? s : xstrdup("");
	else
		free(s);
	return dt;
}

/*
 * Stop a backfill command stuck inside a Wix call of instance with one
 * SIGTERM: it must exit within 2 s with 1, the status of an interrupted
 * run (as for a stop between pages), saying it stopped after page
 * pages and that a new run resumes, with no failure and no second
 * signal needed.
 */
static void
stop_once(const struct env *e, pid_t pid, const char *instance,
    int64_t pages)
{
	int64_t t0, dt;
	char *text, *after, *want;
	int rc;

	t0 = clock_mono_ms();
	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	rc = tu_wait_exit(pid, 5000);
	dt = clock_mono_ms() - t0;
	text = tu_read_file(e->out, NULL);
	ck_assert_ptr_nonnull(text);
	printf("backfill %s: exited %lld ms after one SIGTERM\n", instance,
	    (long long)dt);
	ck_assert_msg(rc == 1, "exit %d: %s", rc, text);
	ck_assert_msg(dt < 2000, "exited %lld ms after SIGTERM: %s",
	    (long long)dt, text);
	after = strstr(text, "SIGTERM: stopping at the next page boundary");
	ck_assert_msg(after != NULL, "output: %s", text);
	want = xasprintf("backfill %s: stopped after page %lld; the next run "
	    "resumes there", instance, (long long)pages);
	ck_assert_msg(strstr(after, want) != NULL, "want %s: %s", want, text);
	free(want);
	want = xasprintf("refundsync: backfill %s: interrupted after page "
	    "%lld; run it again to resume", instance, (long long)pages);
	ck_assert_msg(strstr(after, want) != NULL, "want %s: %s", want, text);
	free(want);
	ck_assert_ptr_null(strstr(text, "failed"));
	ck_assert_ptr_null(strstr(text, "second signal"));
	free(text);
}

/* The milliseconds libcurl reports in "... after N ms" following
 * what in text, or -1. */
static int64_t
after_ms(const char *text, const char *what)
{
	const char *p = strstr(text, what);
	char *end;
	long long v;

	if (p == NULL)
		return -1;
	p += strlen(what);
	v = strtoll(p, &end, 10);
	if (end == p || strncmp(end, " ms", 3) != 0)
		return -1;
	return v;
}

/*
 * A peer that never answers the SYN, on a resumed backfill: every
 * attempt is cut at [wix] connect_timeout (1 s, not the default 5 s),
 * retried, and the cursor of the pages stored before is kept; back on
 * the sandbox, the next run resumes from it and completes the exact set.
 */
START_TEST(test_net_connect_timeout)
{
	struct nf_blackhole *b;
	struct env e;
	char *want, *cursor, *state, *text, *out = NULL, *err = NULL;
	char base[64], what[160], resume[64];
	int64_t pages, dt, ms;
	pid_t pid;

	env_open(&e, 95, "inst-h", NULL, 5, 100000, 0);
	want = sb_ids(&e.sb, "inst-h", NULL);
	/* 19 pages of 200 ms: some pages, a cursor, then kill -9. */
	sb_slow(&e.sb, 200);
	pid = backfill_spawn(&e, "inst-h");
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    2, 20000));
	kill(pid, SIGKILL);
	ck_assert_int_eq(tu_wait_exit(pid, 5000), 128 + SIGKILL);
	sb_clear(&e.sb);
	pages = db_int(&e, "SELECT backfill_pages FROM instances");
	ck_assert_int_lt(pages, 19);
	cursor = db_text(&e, "SELECT backfill_cursor FROM instances");
	ck_assert_str_ne(cursor, "");
	state = db_state(&e, "inst-h");

	b = nf_blackhole_start();
	ck_assert_ptr_nonnull(b);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", b->port);
	env_conf(&e, base, SHORT_TIMEOUTS);
	ck_assert_int_eq(unlink(e.out), 0);
	pid = backfill_spawn(&e, "inst-h");
	/* A new process: the token request is the first to hang. */
	snprintf(what, sizeof(what), "instance inst-h: POST /oauth2/token: "
	    "Failed to connect to 127.0.0.1 port %d after ", b->port);
	dt = wait_out(&e, "attempt 2 of 8", NET_WAIT_MS, &text);
	ck_assert_msg(dt >= 0, "output: %s", text);
	ms = after_ms(text, what);
	ck_assert_msg(ms >= 1000 && ms < 1900, "connect cut after %lld ms: "
	    "%s", (long long)ms, text);
	ck_assert_ptr_nonnull(strstr(text, " ms: Timeout was reached "
	    "(request id none): attempt 1 of 8, retrying in "));
	snprintf(resume, sizeof(resume), "resuming after page %lld",
	    (long long)pages);
	ck_assert_ptr_nonnull(strstr(text, resume));
	ck_assert_ptr_null(strstr(text, APP_SECRET));
	free(text);
	stop_once(&e, pid, "inst-h", pages);
	nf_blackhole_stop(b);
	/* Nothing changed: the same pages, the same cursor. */
	ck_str(db_state(&e, "inst-h"), state);
	ck_str(db_text(&e, "SELECT backfill_cursor FROM instances"), cursor);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM refunds"),
	    pages * 5);

	env_conf(&e, NULL, SHORT_TIMEOUTS);
	ck_assert_msg(backfill_cmd(&e, "inst-h", false, &out, &err) == 0,
	    "stderr: %s", err);
	ck_assert_ptr_nonnull(strstr(err, resume));
	expect_set(&e, "inst-h", want);
	ck_str(db_state(&e, "inst-h"), "done|19|95|0|-");
	free(out);
	free(err);
	free(state);
	free(cursor);
	free(want);
	env_close(&e);
}
END_TEST

/* A first run against api_base that fails at once: the state it
 * leaves when stopped inside its first Wix call (resumable). */
static void
expect_stuck_state(const struct env *e, const char *instance)
{
	char *state = db_state(e, instance);

	ck_assert_msg(strcmp(state, "running|0|0|0|-") == 0, "state %s",
	    state);
	free(state);
}

/*
 * https://127.0.0.1 served with a self-signed certificate: the handshake
 * fails verification, so no request reaches the server, and the output
 * says why.
 */
START_TEST(test_net_tls_self_signed)
{
	struct nf_tls_server *t;
	struct env e;
	char base[64], *text;
	int64_t dt;
	pid_t pid;

	env_open(&e, 0, "inst-s", NULL, 10, 100000, 0);
	t = nf_tls_start(NF_CERT_SELF_SIGNED, 200, "{}");
	ck_assert_ptr_nonnull(t);
	snprintf(base, sizeof(base), "https://127.0.0.1:%d", nf_tls_port(t));
	env_conf(&e, base, SHORT_TIMEOUTS);
	pid = backfill_spawn(&e, "inst-s");
	dt = wait_out(&e, "instance inst-s: POST /oauth2/token: SSL "
	    "certificate problem: self-signed certificate (request id "
	    "none): attempt 1 of 8, retrying", NET_WAIT_MS, &text);
	ck_assert_msg(dt >= 0, "output: %s", text);
	ck_assert_ptr_null(strstr(text, APP_SECRET));
	free(text);
	stop_once(&e, pid, "inst-s", 0);
	ck_assert_uint_ge(nf_tls_connections(t), 1);
	ck_assert_uint_eq(nf_tls_requests(t), 0);
	nf_tls_stop(t);
	expect_stuck_state(&e, "inst-s");
	env_close(&e);
}
END_TEST

/* A host name that does not resolve: the output names it. */
START_TEST(test_net_dns)
{
	struct env e;
	char *text;
	int64_t dt, ms;
	pid_t pid;

	/* The machine fails the name at once (no network round trip). */
	ck_assert(nf_unresolvable_check(&ms));
	ck_assert_int_lt(ms, 2000);
	env_open(&e, 0, "inst-n", NULL, 10, 100000, 0);
	env_conf(&e, "https://" NF_UNRESOLVABLE_HOST, SHORT_TIMEOUTS);
	pid = backfill_spawn(&e, "inst-n");
	dt = wait_out(&e, "instance inst-n: POST /oauth2/token: Could not "
	    "resolve host: " NF_UNRESOLVABLE_HOST " (request id none): "
	    "attempt 1 of 8, retrying", NET_WAIT_MS, &text);
	ck_assert_msg(dt >= 0, "output: %s", text);
	ck_assert_ptr_null(strstr(text, APP_SECRET));
	free(text);
	stop_once(&e, pid, "inst-n", 0);
	expect_stuck_state(&e, "inst-n");
	env_close(&e);
}
END_TEST

/* ---- tests: kill -9 and resume ----------------------------------------- */

START_TEST(test_kill9_resume)
{
	struct env e;
	char *want, *out = NULL, *err = NULL, *state;
	int64_t pages;
	pid_t pid;

	env_open(&e, 1000, "inst-k", NULL, 5, 100000, 0);
	want = sb_ids(&e.sb, "inst-k", NULL);
	/* 200 pages, 20 ms each: the kill lands mid-run. */
	sb_slow(&e.sb, 20);
	pid = backfill_spawn(&e, "inst-k");
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    20, 30000));
	kill(pid, SIGKILL);
	ck_assert_int_eq(tu_wait_exit(pid, 5000), 128 + SIGKILL);
	sb_clear(&e.sb);
	pages = db_int(&e, "SELECT backfill_pages FROM instances");
	ck_assert_int_lt(pages, 200);
	state = db_state(&e, "inst-k");
	ck_assert_msg(strncmp(state, "running|", 8) == 0 &&
	    strstr(state, "|1|-") != NULL, "state %s", state);
	free(state);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM refunds"),
	    pages * 5);

	ck_assert_msg(backfill_cmd(&e, "inst-k", false, &out, &err) == 0,
	    "stderr: %s", err);
	ck_assert_ptr_nonnull(strstr(err, "resuming after page"));
	expect_set(&e, "inst-k", want);
	ck_str(db_state(&e, "inst-k"), "done|200|1000|0|-");
	/* Every refund has exactly one change-log entry: nothing was
	 * stored twice or lost. */
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM changes"), 1000);
	free(out);
	free(err);
	free(want);
	env_close(&e);
}
END_TEST

/* ---- tests: the daemon --------------------------------------------- */

/* A daemon for e's sandbox, backfilling cfg_instances at start. */
static struct tu_daemon *
daemon_for(struct env *e, const char *cfg_instances, int page_size,
    int rpm)
{
	struct tu_conf conf;
	struct tu_daemon *d;
	char *wix, *tail, *keys;

	keys = tu_sandbox_wix_keys(&e->sb, e->dir);
	ck_assert_ptr_nonnull(keys);
	wix = xasprintf("%s%s%s", keys,
	    cfg_instances != NULL ? "instances = " : "",
	    cfg_instances != NULL ? cfg_instances : "");
	tail = xasprintf("[backfill]\npage_size = %d\n"
	    "requests_per_minute = %d", page_size, rpm);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	conf.tail = tail;
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	free(wix);
	free(tail);
	free(keys);
	/* The checks below read the daemon's store. */
	free(e->db);
	e->db = xstrdup(d->db_path);
	return d;
}

/* POST an AppInstalled (installed) or AppRemoved webhook for instance
 * to d; it must get 200. */
static void
post_app_event(struct tu_daemon *d, bool installed, const char *instance)
{
	char *tok = installed ?
	    tu_installed_webhook(d->key.priv_pem, instance, APP_ID) :
	    tu_webhook(d->key.priv_pem, "{\"appId\":\"" APP_ID "\","
	    "\"originInstanceId\":\"\"}", instance, "AppRemoved");

	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	free(tok);
}

/*
 * A daemon for e that started backfilling instance (seeded with 400
 * refunds: 80 pages of 5, each answered in 50 ms) on an AppInstalled and
 * has stored 3 pages: what the test does next lands mid-run.
 */
static struct tu_daemon *
daemon_mid_backfill(struct env *e, const char *instance)
{
	struct tu_daemon *d;

	sb_slow(&e->sb, 50);
	d = daemon_for(e, NULL, 5, 100000);
	post_app_event(d, true, instance);
	ck_assert(wait_db_int(e, "SELECT backfill_pages FROM instances",
	    3, 20000));
	return d;
}

/* Like testutil's refund builder, from an id and revision. */
static char *
newer_webhook(const struct tu_daemon *d, const char *instance,
    const char *id, int64_t rev)
{
	struct tu_refund r;
	struct tu_event ev;
	char *evid = tu_random_id("ev-"), *now = tu_now_iso(), *tok;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-webhook";
	r.currency = "USD";
	r.amount = "7.00";
	r.status = "REVERSED";
	r.revision = rev;
	r.created_date = "2020-01-01T00:00:00Z";
	r.updated_date = now;
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = TU_UPDATED;
	ev.seq = -1;
	tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, instance);
	free(evid);
	free(now);
	return tok;
}

/*
 * The daemon backfills a configured instance at start; a webhook with a
 * newer revision of a refund of a page not yet fetched arrives
 * meanwhile and survives; live webhooks keep flowing; the metrics count
 * the pages.
 */
START_TEST(test_daemon_webhook_mid_backfill)
{
	struct tu_daemon *d;
	struct env e;
	char *want, *tok, *last, *metrics, *comma;
	const char *lbl[] = { "instance=\"inst-d\"", NULL };
	int64_t t0;

	env_open(&e, 600, "inst-d", NULL, 10, 100000, 0);
	want = sb_ids(&e.sb, "inst-d", NULL);
	comma = strrchr(want, ',');
	ck_assert_ptr_nonnull(comma);
	last = xstrdup(comma + 1);
	/* 60 pages of 100 ms: the last page comes seconds later. */
	sb_slow(&e.sb, 100);
	d = daemon_for(&e, "inst-d", 10, 100000);
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    2, 20000));
	ck_assert_int_lt(db_int(&e, "SELECT backfill_pages FROM instances"),
	    40);
	/* Revision 1000 is newer than anything the sandbox has. */
	tok = newer_webhook(d, "inst-d", last, 1000);
	t0 = clock_mono_ms();
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ck_assert_int_lt(clock_mono_ms() - t0, 1250);
	free(tok);
	ck_assert_int_eq(db_int(&e, "SELECT backfill = 'running' FROM"
	    " instances"), 1);
	sb_clear(&e.sb);
	ck_assert(wait_db_int(&e, "SELECT backfill = 'done' FROM instances",
	    1, 40000));
	expect_set(&e, "inst-d", want);
	ck_str(db_text(&e, "SELECT 'x' || status || '|' || revision || '|'"
	    " || source FROM refunds WHERE revision = 1000"),
	    "xREVERSED|1000|webhook");
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM refunds WHERE"
	    " source = 'backfill'"), 599);
	/* The backfill's older version was stale: one change, the
	 * webhook's. */
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM changes WHERE"
	    " revision = 1000"), 1);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM changes"), 600);
	metrics = tu_daemon_metrics(d);
	ck_assert_int_eq((int)tu_metric(metrics,
	    "refundsync_backfill_pages_total", lbl), 60);
	ck_assert_int_eq((int)tu_metric(metrics,
	    "refundsync_backfill_refunds_total", lbl), 600);
	ck_assert_int_eq((int)tu_metric(metrics,
	    "refundsync_backfill_running", lbl), 0);
	free(metrics);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	free(last);
	free(want);
	env_close(&e);
}
END_TEST

/* AppInstalled starts a backfill in the background (the webhook is
 * answered at once); SIGTERM mid-backfill leaves it running with the
 * cursor committed, and the next start resumes it. */
START_TEST(test_daemon_install_stop_resume)
{
	struct tu_daemon *d;
	struct env e;
	char *want, *tok;
	int64_t t0, pages;

	env_open(&e, 400, "inst-i", NULL, 5, 100000, 0);
	want = sb_ids(&e.sb, "inst-i", NULL);
	/* 80 pages of 50 ms: SIGTERM lands mid-run. */
	sb_slow(&e.sb, 50);
	d = daemon_for(&e, NULL, 5, 100000);
	tok = tu_installed_webhook(d->key.priv_pem, "inst-i", APP_ID);
	t0 = clock_mono_ms();
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ck_assert_int_lt(clock_mono_ms() - t0, 1250);
	free(tok);
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    5, 20000));
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	pages = db_int(&e, "SELECT backfill_pages FROM instances");
	ck_assert_int_lt(pages, 80);
	ck_assert_int_eq(db_int(&e, "SELECT backfill = 'running' AND"
	    " backfill_cursor IS NOT NULL FROM instances"), 1);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM refunds"),
	    pages * 5);
	sb_clear(&e.sb);
	ck_assert(tu_daemon_restart(d));
	ck_assert(wait_db_int(&e, "SELECT backfill = 'done' FROM instances",
	    1, 40000));
	expect_set(&e, "inst-i", want);
	ck_assert_int_eq(db_int(&e, "SELECT backfill_pages FROM instances"),
	    80);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM changes"), 400);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	free(want);
	env_close(&e);
}
END_TEST

/*
 * A backfill that failed for an instance installed by webhook is tried
 * again at the daemon's next start (with on_install), from its cursor,
 * and completes the exact set.
 */
START_TEST(test_daemon_failed_retried)
{
	static const char *const one[] = { "backfill on: 1 instances", NULL };
	struct tu_daemon *d;
	struct env e;
	char *want;
	size_t mark;

	env_open(&e, 400, "inst-f", NULL, 5, 100000, 0);
	want = sb_ids(&e.sb, "inst-f", NULL);
	d = daemon_mid_backfill(&e, "inst-f");
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	/* As a run that gave up leaves it: failed, its cursor kept. */
	tu_sql_exec(e.db, "UPDATE instances SET backfill = 'failed',"
	    " last_error = 'Query Refunds failed 5 times'");
	ck_assert_int_eq(db_int(&e, "SELECT backfill = 'failed' AND"
	    " backfill_cursor IS NOT NULL FROM instances"), 1);
	sb_clear(&e.sb);

	mark = tu_daemon_log_size(d);
	ck_assert(tu_daemon_restart(d));
	ck_assert(tu_daemon_wait_log(d, mark, one, 5000));
	ck_assert(wait_db_int(&e, "SELECT backfill = 'done' FROM instances",
	    1, 40000));
	expect_set(&e, "inst-f", want);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM changes"), 400);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	free(want);
	env_close(&e);
}
END_TEST

/*
 * One backfill of an instance at a time on a host: `refundsync backfill`
 * run while the daemon backfills the same instance refuses, says why and
 * sends nothing, and the daemon's run ends with exact counters.  (Two
 * runs fetched every page twice and added both runs' pages and refunds
 * to the instance's row.)
 */
START_TEST(test_one_run_per_instance)
{
	struct tu_daemon *d;
	struct env e;
	char *want, *out = NULL, *err = NULL;
	size_t before;
	int rc;

	env_open(&e, 400, "inst-j", NULL, 5, 100000, 0);
	want = sb_ids(&e.sb, "inst-j", NULL);
	d = daemon_mid_backfill(&e, "inst-j");
	env_conf(&e, NULL, NULL);
	before = sb_count(&e.sb, "inst-j", NULL, 0);
	rc = backfill_cmd(&e, "inst-j", false, &out, &err);
	ck_assert_msg(rc == 1 && strstr(err, "another process is "
	    "backfilling this instance") != NULL, "exit %d\nstdout: %s\n"
	    "stderr: %s", rc, out, err);
	free(out);
	free(err);
	ck_assert(wait_db_int(&e, "SELECT backfill = 'done' FROM instances",
	    1, 40000));
	ck_str(db_state(&e, "inst-j"), "done|80|400|0|-");
	expect_set(&e, "inst-j", want);
	/* The daemon's pages and token only: nothing fetched twice. */
	ck_assert_uint_le(sb_count(&e.sb, "inst-j", NULL, 0) - before, 80);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	free(want);
	env_close(&e);
}
END_TEST

/* [wix] instances is read at start: a reload that changes it says a
 * restart applies it, and backfills nothing new. */
START_TEST(test_daemon_reload_instances)
{
	static const char *const warned[] = { "reload: [wix] instances "
	    "changed: restart to apply it", NULL };
	static const char *const applied[] = { "reload: applied", NULL };
	struct tu_daemon *d;
	struct tu_conf conf;
	struct env e;
	char *keys, *wix;
	size_t mark;

	env_open(&e, 10, "inst-h,inst-k", NULL, 5, 100000, 0);
	d = daemon_for(&e, "inst-h", 5, 100000);
	ck_assert(wait_db_int(&e, "SELECT count(*) FROM instances WHERE"
	    " backfill = 'done'", 1, 20000));
	keys = tu_sandbox_wix_keys(&e.sb, e.dir);
	ck_assert_ptr_nonnull(keys);
	wix = xasprintf("%sinstances = inst-h, inst-k", keys);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	conf.tail = "[backfill]\npage_size = 5\nrequests_per_minute = 100000";
	ck_assert(tu_daemon_write_config(d, &conf));
	mark = tu_daemon_log_size(d);
	ck_assert(tu_daemon_signal(d, SIGHUP));
	ck_assert(tu_daemon_wait_log(d, mark, warned, 5000));
	ck_assert(tu_daemon_wait_log(d, mark, applied, 5000));
	tu_sleep_ms(300);
	ck_assert_uint_eq(sb_count(&e.sb, "inst-k", NULL, 0), 0);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	free(wix);
	free(keys);
	tu_daemon_free(d);
	env_close(&e);
}
END_TEST

/* Without credentials, AppInstalled only records the instance, and the
 * daemon says once that backfill is off. */
START_TEST(test_daemon_no_credentials)
{
	static const struct tu_conf conf = { .tail = "[backfill]\n"
	    "on_install = yes" };
	static const char *const off[] = { "backfill is off", NULL };
	struct tu_daemon *d;
	char *log, *p;

	d = tu_daemon_start(&conf, NULL);
	ck_assert_ptr_nonnull(d);
	ck_assert(tu_daemon_wait_log(d, 0, off, 5000));
	post_app_event(d, true, "inst-n");
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM instances"
	    " WHERE instance_id = 'inst-n' AND backfill = 'pending'"), 1);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	log = tu_daemon_log(d);
	p = strstr(log, "backfill is off");
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_null(strstr(p + 1, "backfill is off"));
	free(log);
	tu_daemon_free(d);
}
END_TEST

/*
 * An instance the app was removed from is not backfilled: not at the
 * daemon's next start (an AppRemoved for an instance never seen leaves
 * it 'pending'; one removed mid-backfill leaves it 'failed'), nor by a
 * bare `backfill`, which says it skipped it and exits 0.  Wix would
 * refuse its token, so each start and each run failed on it.
 * --instance still runs it.
 */
START_TEST(test_removed_not_backfilled)
{
	static const char *const none[] = { "backfill on: 0 instances", NULL };
	struct tu_daemon *d;
	struct env e;
	char *out = NULL, *err = NULL;
	size_t mark;

	env_open(&e, 30, "inst-r,inst-s", NULL, 5, 100000, 0);
	/* inst-s: 6 pages of 500 ms, removed after the first. */
	sb_fault(&e.sb, "{\"fault\":\"stall\",\"count\":-1,\"ms\":500,"
	    "\"endpoint\":\"query\",\"instance\":\"inst-s\"}");
	d = daemon_for(&e, NULL, 5, 100000);
	post_app_event(d, false, "inst-r");
	post_app_event(d, true, "inst-s");
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances"
	    " WHERE instance_id = 'inst-s'", 1, 20000));
	post_app_event(d, false, "inst-s");
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	ck_str(db_text(&e, "SELECT group_concat(instance_id || ':' || backfill"
	    " || ':' || (removed_at IS NOT NULL), ',') FROM (SELECT * FROM"
	    " instances ORDER BY instance_id)"),
	    "inst-r:pending:1,inst-s:failed:1");
	sb_clear(&e.sb);

	mark = tu_daemon_log_size(d);
	ck_assert(tu_daemon_restart(d));
	ck_assert(tu_daemon_wait_log(d, mark, none, 5000));
	tu_sleep_ms(500);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	ck_assert_uint_eq(sb_count(&e.sb, "inst-r", NULL, 0), 0);
	ck_str(db_text(&e, "SELECT group_concat(instance_id || ':' || backfill,"
	    " ',') FROM (SELECT * FROM instances ORDER BY instance_id)"),
	    "inst-r:pending,inst-s:failed");

	/* A bare run skips both, says so, and succeeds. */
	env_conf(&e, NULL, NULL);
	ck_assert_msg(backfill_cmd(&e, NULL, false, &out, &err) == 0,
	    "stdout: %s\nstderr: %s", out, err);
	ck_assert_msg(strstr(out, "inst-r: skipped: the app was removed") !=
	    NULL && strstr(out, "inst-s: skipped: the app was removed") !=
	    NULL, "stdout: %s", out);
	ck_assert_uint_eq(sb_count(&e.sb, "inst-r", NULL, 0), 0);
	free(out);
	free(err);
	/* Named, it runs. */
	ck_assert_int_eq(backfill_cmd(&e, "inst-r", false, &out, &err), 0);
	ck_str(db_state(&e, "inst-r"), "done|6|30|0|-");
	free(out);
	free(err);
	tu_daemon_free(d);
	env_close(&e);
}
END_TEST

/*
 * An AppRemoved that arrives while the daemon backfills that instance
 * stops the run at its next page: no more Query Refunds for it, the
 * state becomes 'failed' with its cursor and says why, and the log too.
 */
START_TEST(test_removed_stops_backfill)
{
	static const char *const stopped[] = { "backfill inst-c: stopped: "
	    "the app was removed from it", NULL };
	struct tu_daemon *d;
	struct env e;
	size_t mark, n;
	int64_t pages;

	env_open(&e, 400, "inst-c", NULL, 5, 100000, 0);
	d = daemon_mid_backfill(&e, "inst-c");
	mark = tu_daemon_log_size(d);
	post_app_event(d, false, "inst-c");
	ck_assert(tu_daemon_wait_log(d, mark, stopped, 5000));
	n = sb_count(&e.sb, "inst-c", NULL, 0);
	tu_sleep_ms(500);
	ck_assert_uint_eq(sb_count(&e.sb, "inst-c", NULL, 0), n);
	pages = db_int(&e, "SELECT backfill_pages FROM instances");
	ck_assert_int_lt(pages, 80);
	ck_assert_int_eq(db_int(&e, "SELECT backfill = 'failed' AND"
	    " backfill_cursor IS NOT NULL AND removed_at IS NOT NULL"
	    " AND last_error = 'stopped: the app was removed from it'"
	    " AND backfill_finished_at IS NOT NULL FROM instances"), 1);
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM refunds"),
	    pages * 5);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	env_close(&e);
}
END_TEST

/*
 * Removed and installed again while the daemon backfills it: the run
 * under way stops at its next page, and the instance is backfilled again
 * from the first page (refundsync(8)), not left 'failed' with "the app
 * was removed" for an app that is installed, and no backfill until the
 * next start.  The AppInstalled comes while the stopped run is still
 * waiting for its page (500 ms each, 10 pages), so its kick finds it
 * running.  It is signed in a later second than the first one, whose
 * token it would otherwise repeat (a duplicate).
 */
START_TEST(test_removed_then_installed_mid_backfill)
{
	static const char *const again[] = { "backfill inst-t: stopped: "
	    "the app was removed from it and installed again", NULL };
	struct tu_daemon *d;
	struct env e;
	size_t mark;
	time_t t0;
	int64_t pages;
	char *sql;

	env_open(&e, 50, "inst-t", NULL, 5, 100000, 0);
	sb_fault(&e.sb, "{\"fault\":\"stall\",\"count\":-1,\"ms\":500,"
	    "\"endpoint\":\"query\",\"instance\":\"inst-t\"}");
	d = daemon_for(&e, NULL, 5, 100000);
	t0 = time(NULL);
	post_app_event(d, true, "inst-t");
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    1, 20000));
	while (time(NULL) <= t0 + 1)
		tu_sleep_ms(20);
	/* Remove and install just after a page landed, so that the run is
	 * at the start of its next 500 ms wait, not at a random point of
	 * it: near its end, the run could see the removal alone. */
	pages = db_int(&e, "SELECT backfill_pages FROM instances");
	ck_assert(pages < 9);
	sql = xasprintf("SELECT backfill_pages > %lld FROM instances",
	    (long long)pages);
	ck_assert(wait_db_int(&e, sql, 1, 20000));
	free(sql);
	mark = tu_daemon_log_size(d);
	post_app_event(d, false, "inst-t");
	post_app_event(d, true, "inst-t");
	ck_assert_msg(wait_db_int(&e, "SELECT backfill = 'done' FROM"
	    " instances", 1, 30000), "state: %s", db_state(&e, "inst-t"));
	ck_assert_msg(tu_daemon_wait_log(d, mark, again, 5000),
	    "the stopped run did not see the new install");
	ck_str(db_state(&e, "inst-t"), "done|10|50|0|-");
	ck_assert_int_eq(db_int(&e, "SELECT count(*) FROM refunds"), 50);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	env_close(&e);
}
END_TEST

/* ---- tests: two instances, tokens, budget ------------------------------ */

/* The most entries of v (in time order) inside any window of ms. */
static size_t
max_in_window(const struct tu_sandbox_entry *v, size_t n, int64_t ms)
{
	size_t i, j = 0, best = 0;

	for (i = 0; i < n; i++) {
		while (v[i].t_ms - v[j].t_ms >= ms)
			j++;
		if (i - j + 1 > best)
			best = i - j + 1;
	}
	return best;
}

START_TEST(test_two_instances)
{
	struct tu_sandbox_entry *a, *b;
	struct env e;
	char *wa, *wb, *out = NULL, *err = NULL;
	size_t na, nb;

	env_open(&e, 300, "inst-x,inst-y", "inst-x, inst-y", 5, 100000, 0);
	wa = sb_ids(&e.sb, "inst-x", NULL);
	wb = sb_ids(&e.sb, "inst-y", NULL);
	ck_assert_str_ne(wa, wb);
	ck_assert_msg(backfill_cmd(&e, NULL, false, &out, &err) == 0,
	    "stderr: %s", err);
	expect_set(&e, "inst-x", wa);
	expect_set(&e, "inst-y", wb);
	ck_str(db_state(&e, "inst-x"), "done|60|300|0|-");
	ck_str(db_state(&e, "inst-y"), "done|60|300|0|-");
	ck_assert_ptr_nonnull(strstr(out, "inst-x: done:"));
	ck_assert_ptr_nonnull(strstr(out, "inst-y: done:"));
	/* At once: each started before the other finished. */
	a = sb_entries(&e.sb, "inst-x", "/refunds/query", &na);
	b = sb_entries(&e.sb, "inst-y", "/refunds/query", &nb);
	ck_assert_uint_eq(na, 60 + 3);
	ck_assert_uint_eq(nb, 60 + 3);
	/* Skip our own walks (the first 3 of each). */
	ck_assert_int_lt(a[3].t_ms, b[nb - 1].t_ms);
	ck_assert_int_lt(b[3].t_ms, a[na - 1].t_ms);
	free(a);
	free(b);
	free(out);
	free(err);
	free(wa);
	free(wb);
	env_close(&e);
}
END_TEST

/*
 * A bare `backfill --restart` runs every stored instance again from the
 * first page, the done ones included; a bare `backfill` leaves those
 * alone.
 */
START_TEST(test_restart_all)
{
	struct env e;
	char *out = NULL, *err = NULL;
	size_t nx, ny;

	env_open(&e, 12, "inst-x,inst-y", NULL, 5, 100000, 0);
	ck_assert_int_eq(backfill_cmd(&e, "inst-x", false, &out, &err), 0);
	free(out);
	free(err);
	ck_assert_int_eq(backfill_cmd(&e, "inst-y", false, &out, &err), 0);
	free(out);
	free(err);
	ck_str(db_state(&e, "inst-x"), "done|3|12|0|-");
	ck_str(db_state(&e, "inst-y"), "done|3|12|0|-");
	nx = sb_count(&e.sb, "inst-x", "/refunds/query", 0);
	ny = sb_count(&e.sb, "inst-y", "/refunds/query", 0);

	ck_assert_msg(backfill_cmd(&e, NULL, false, &out, &err) == 0,
	    "stdout: %s\nstderr: %s", out, err);
	ck_assert_ptr_nonnull(strstr(out, "nothing to backfill"));
	ck_assert_uint_eq(sb_count(&e.sb, "inst-x", "/refunds/query", 0), nx);
	ck_assert_uint_eq(sb_count(&e.sb, "inst-y", "/refunds/query", 0), ny);
	free(out);
	free(err);

	ck_assert_msg(backfill_cmd(&e, NULL, true, &out, &err) == 0,
	    "stdout: %s\nstderr: %s", out, err);
	ck_assert_msg(strstr(out, "inst-x: done:") != NULL &&
	    strstr(out, "inst-y: done:") != NULL, "stdout: %s", out);
	ck_assert_uint_eq(sb_count(&e.sb, "inst-x", "/refunds/query", 0),
	    nx + 3);
	ck_assert_uint_eq(sb_count(&e.sb, "inst-y", "/refunds/query", 0),
	    ny + 3);
	ck_str(db_state(&e, "inst-x"), "done|3|12|0|-");
	ck_str(db_state(&e, "inst-y"), "done|3|12|0|-");
	free(out);
	free(err);
	env_close(&e);
}
END_TEST

/* Tokens that expire mid-run are refreshed and the run completes; a
 * token endpoint that refuses the credentials is a clear failure. */
START_TEST(test_tokens)
{
	struct env e;
	char *want, *out = NULL, *err = NULL, *state;
	pid_t pid;
	int rc;

	env_open(&e, 500, "inst-t", NULL, 5, 100000, 0);
	want = sb_ids(&e.sb, "inst-t", NULL);
	/* 100 pages of 20 ms; every token expires after page 10. */
	sb_slow(&e.sb, 20);
	pid = backfill_spawn(&e, "inst-t");
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    10, 20000));
	sb_fault(&e.sb, "{\"fault\":\"expire_tokens\"}");
	ck_assert_int_lt(db_int(&e, "SELECT backfill_pages FROM instances"),
	    90);
	sb_clear(&e.sb);
	ck_assert_int_eq(tu_wait_exit(pid, CLI_MS), 0);
	expect_set(&e, "inst-t", want);
	ck_str(db_state(&e, "inst-t"), "done|100|500|0|-");
	ck_assert_uint_ge(sb_count(&e.sb, "inst-t", "/oauth2/token", 200),
	    2 + 1);
	ck_assert_uint_ge(sb_count(&e.sb, "inst-t", "/refunds/query", 401),
	    1);

	sb_fault(&e.sb, "{\"fault\":\"token_401\",\"count\":100}");
	rc = backfill_cmd(&e, "inst-t", true, &out, &err);
	ck_assert_int_eq(rc, 1);
	ck_assert_msg(strstr(err, "refused the app credentials") != NULL,
	    "stderr: %s", err);
	ck_assert_ptr_null(strstr(err, APP_SECRET));
	state = db_state(&e, "inst-t");
	ck_assert_msg(strncmp(state, "failed|", 7) == 0, "%s", state);
	free(state);
	free(out);
	free(err);
	free(want);
	env_close(&e);
}
END_TEST

/*
 * The budget: requests_per_minute = 10 against a sandbox limiting at 10.
 * The first 10 requests (a token and 9 pages) go at once; the 11th waits
 * for the window, so none has gone 4 s later, and no 429 was answered.
 */
START_TEST(test_budget)
{
	struct tu_sandbox_entry *v;
	struct env e;
	size_t n, i;
	pid_t pid;

	env_open(&e, 40, "inst-b", NULL, 1, 10, 10);
	pid = backfill_spawn(&e, "inst-b");
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    9, 20000));
	tu_sleep_ms(4000);
	v = sb_entries(&e.sb, "inst-b", NULL, &n);
	ck_assert_uint_eq(n, 10);
	for (i = 0; i < n; i++)
		ck_assert_int_ne(v[i].status, 429);
	/* The ten went within a short burst, and no minute holds more
	 * than the budget. */
	ck_assert_int_lt(v[n - 1].t_ms - v[0].t_ms, 3000);
	ck_assert_uint_le(max_in_window(v, n, 60000), 10);
	free(v);
	ck_assert_int_eq(db_int(&e, "SELECT backfill_pages FROM instances"),
	    9);
	kill(pid, SIGKILL);
	(void)tu_wait_exit(pid, 5000);
	env_close(&e);
}
END_TEST

/*
 * The progress line on a terminal (stderr on a pty), under the same
 * budget as test_budget: 9 pages at once, then a wait for the window.
 * While it waits, the line is redrawn with the rate over the time now,
 * falling (the old line kept the rate of the burst, "60000 req/min"),
 * and says the ETA is unknown rather than making one up.
 */
START_TEST(test_progress_tty)
{
	static const char head[] = "\033[Kinst-p: page 9, 9 refunds, ";
	char *argv[7], *bin = xstrdup(tu_binary()), *out, *seg, *cr, *rest;
	char chunk[4096];
	struct buf b;
	struct pollfd pfd;
	int64_t end;
	long long rate, first = -1, last = -1;
	ssize_t n;
	pid_t pid;
	int pty;
	struct env e;

	env_open(&e, 40, "inst-p", NULL, 1, 10, 0);
	pty = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	ck_assert_int_ne(pty, -1);
	ck_assert(grantpt(pty) == 0 && unlockpt(pty) == 0);
	argv[0] = bin;
	argv[1] = (char *)"backfill";
	argv[2] = (char *)"-c";
	argv[3] = e.conf;
	argv[4] = (char *)"--instance";
	argv[5] = (char *)"inst-p";
	argv[6] = NULL;
	pid = tu_spawn(argv, e.out, ptsname(pty));
	ck_assert_int_gt(pid, 0);
	ck_assert(wait_db_int(&e, "SELECT backfill_pages FROM instances",
	    9, 20000));
	/* Three seconds into the wait, a dozen redraws. */
	buf_init(&b, 1024 * 1024);
	end = clock_mono_ms() + 3000;
	pfd.fd = pty;
	pfd.events = POLLIN;
	while (clock_mono_ms() < end) {
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if ((n = read(pty, chunk, sizeof(chunk))) <= 0)
			break;
		(void)buf_append(&b, chunk, (size_t)n);
	}
	(void)buf_append(&b, "", 0);
	out = buf_detach(&b, NULL);
	buf_cleanup(&b);
	kill(pid, SIGKILL);
	(void)tu_wait_exit(pid, 5000);
	/* Each redraw is "\r\033[K" then the line. */
	for (seg = out; seg != NULL; seg = cr != NULL ? cr + 1 : NULL) {
		if ((cr = strchr(seg, '\r')) != NULL)
			*cr = '\0';
		if (strncmp(seg, head, sizeof(head) - 1) != 0)
			continue;
		ck_assert_msg(strstr(seg, ", ETA unknown") != NULL, "%s",
		    seg + 3);
		seg += sizeof(head) - 1;
		rate = strtoll(seg, &rest, 10);
		if (rest == seg || strncmp(rest, " pages/min, ", 12) != 0)
			continue;
		ck_assert_msg(last == -1 || rate <= last, "rate rose: %s",
		    seg);
		if (first == -1)
			first = rate;
		last = rate;
	}
	ck_assert_msg(last != -1, "no progress line with a rate");
	/* 9 pages over at least 2.75 s of the run: under 200 a minute,
	 * and falling while no page comes. */
	ck_assert_int_le(last, 200);
	ck_assert_int_lt(last, first);
	free(out);
	free(bin);
	env_close(&e);
}
END_TEST

/* Usage and config errors: exit 2. */
START_TEST(test_cli_usage)
{
	struct env e;
	char *out = NULL, *err = NULL, *argv[6], *bin = xstrdup(tu_binary());

	env_open(&e, 0, "inst-u", NULL, 10, 100000, 0);
	argv[0] = bin;
	argv[1] = (char *)"backfill";
	argv[2] = (char *)"-c";
	argv[3] = e.conf;
	argv[4] = (char *)"extra";
	argv[5] = NULL;
	ck_assert_int_eq(tu_run(argv, 10000, &out, &err), 2);
	free(out);
	free(err);
	argv[4] = (char *)"--bogus";
	ck_assert_int_eq(tu_run(argv, 10000, &out, &err), 2);
	free(out);
	free(err);
	/* No credentials. */
	ck_assert(tu_write_file(e.conf, "[wix]\npublic_key_file = /x.pem\n",
	    false));
	argv[4] = NULL;
	ck_assert_int_eq(tu_run(argv, 10000, &out, &err), 2);
	ck_assert_ptr_nonnull(strstr(err, "no Wix credentials"));
	free(out);
	free(err);
	free(bin);
	env_close(&e);
}
END_TEST

static Suite *
sandbox_suite(void)
{
	Suite *s = suite_create("backfill_sandbox");
	TCase *tc = tcase_create("sandbox");

	tcase_set_timeout(tc, 90);
	tcase_add_loop_test(tc, test_exact_sets, 0,
	    (int)(sizeof(sizes) / sizeof(sizes[0])));
	tcase_add_test(tc, test_ten_thousand);
	tcase_add_loop_test(tc, test_faults, 0,
	    (int)(sizeof(fault_cases) / sizeof(fault_cases[0])));
	tcase_add_test(tc, test_retry_after_date);
	tcase_add_test(tc, test_net_connect_timeout);
	tcase_add_test(tc, test_net_tls_self_signed);
	tcase_add_test(tc, test_net_dns);
	tcase_add_test(tc, test_kill9_resume);
	tcase_add_test(tc, test_daemon_webhook_mid_backfill);
	tcase_add_test(tc, test_daemon_install_stop_resume);
	tcase_add_test(tc, test_daemon_failed_retried);
	tcase_add_test(tc, test_daemon_reload_instances);
	tcase_add_test(tc, test_one_run_per_instance);
	tcase_add_test(tc, test_daemon_no_credentials);
	tcase_add_test(tc, test_removed_not_backfilled);
	tcase_add_test(tc, test_removed_stops_backfill);
	tcase_add_test(tc, test_removed_then_installed_mid_backfill);
	tcase_add_test(tc, test_two_instances);
	tcase_add_test(tc, test_restart_all);
	tcase_add_test(tc, test_tokens);
	tcase_add_test(tc, test_budget);
	tcase_add_test(tc, test_progress_tty);
	tcase_add_test(tc, test_cli_usage);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	xmalloc_init_json();
	sr = srunner_create(sandbox_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
