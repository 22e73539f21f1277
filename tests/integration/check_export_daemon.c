/*
 * check_export_daemon.c: the real daemon exporting its change log (SPEC
 * §5) through jsonl, csv, ledger and http exporters at once, driven
 * through the external contract only: webhooks in, files and an HTTP
 * sink out, `refundsync export ...` on the command line, /metrics.
 *
 * The sink (tu_sink_*, tests/testutil.h) is a small libmicrohttpd server
 * on 127.0.0.1:0 standing in for an accounting system that honours
 * Idempotency-Key: it applies the effect of a key the first time it sees
 * it, and only acknowledges any later POST with the same key.  It can be
 * told to fail.
 *
 * The crash test kills the daemon with SIGKILL at random points while it
 * exports (at least 20 times, restarting it each time), then checks that
 * every file holds each change-log seq exactly once, in order (the
 * ledger: each seq that posts), and that the sink applied each key's
 * effect exactly once.
 */
#include <sys/types.h>

#include <fcntl.h>
#include <inttypes.h>
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

#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST		"inst-export"
/* The end of cli()'s arguments. */
#define END		((const char *)NULL)

/* ---- the daemon and its exporters ---------------------------------------- */

/* A sink with policy (NULL: accept everything). */
static struct tu_sink *
sink_start(const struct tu_sink_policy *policy)
{
	struct tu_sink *s = tu_sink_start(policy);

	ck_assert_msg(s != NULL, "the sink did not start");
	return s;
}

/* The four exporters: j (jsonl), c (csv), l (ledger), h (http). */
static char *
exporters_conf(const struct tu_sink *s, int batch)
{
	return tu_exporters_conf(tu_sink_port(s), batch, batch + 2,
	    batch + 1, batch);
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
	struct tu_sink *s = sink_start(NULL);
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
	ck_assert(tu_exporters_caught_up(d, tu_exporter_names,
	    TU_NEXPORTERS, 30000));
	ck_assert_int_eq(tu_last_change(d), 14);
	ck_assert(tu_exports_exact(d, s));

	/* The keys: one per (refund, revision), ":reverse" for a reversal. */
	ck_assert_int_eq(tu_sink_posts(s, "h:r-01:2:reverse"), 1);
	ck_assert_int_eq(tu_sink_posts(s, "h:r-03:2"), 1);

	/* Status, as JSON. */
	ck_assert_int_eq(cli(d, &out, "status", "--json", END),
	    0);
	doc = cJSON_Parse(out);
	ck_assert_msg(doc != NULL, "status: %s", out);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "last_change")->valueint,
	    14);
	for (i = 0; i < (int)TU_NEXPORTERS; i++) {
		o = status_of(doc, tu_exporter_names[i]);
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
	ck_assert(tu_exports_exact(d, s));
	tu_daemon_free(d);
	tu_sink_free(s);
	free(tail);
}
END_TEST

START_TEST(test_failures_dead_letters_and_commands)
{
	struct tu_sink_policy down = { .fail_all = true };
	struct tu_sink_policy refuse = { .refuse_refund = "d-02" };
	struct tu_sink *s = sink_start(&down);
	char *tail = exporters_conf(s, 5), *out = NULL, *line, id[32];
	struct tu_daemon *d;
	cJSON *doc;
	const char *fast[] = { "j", "c", "l" };
	const char *only_h[] = { "h" };
	int64_t deadline, jsonl_before;
	int i, n;

	/* The sink is down: http retries, the others flow regardless. */
	d = start(tail);
	for (i = 0; i < 6; i++) {
		snprintf(id, sizeof(id), "d-%02d", i);
		ck_assert_int_eq(post(d, id, "SUCCEEDED", 1, "3.00"), 200);
	}
	ck_assert(tu_exporters_caught_up(d, fast, 3, 30000));
	ck_assert_int_eq(tu_exporter_position(d, "h"), 0);
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
	tu_sink_set_policy(s, &refuse);
	ck_assert(tu_exporters_caught_up(d, only_h, 1, 30000));
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
	/* The text form shows the key too (docs/exporters.md). */
	ck_assert_int_eq(cli(d, &out, "dead", END), 0);
	ck_assert_msg(strstr(out, "IDEMPOTENCY KEY") != NULL &&
	    strstr(out, " h:d-02:1 ") != NULL && strstr(out, "permanent") !=
	    NULL, "%s", out);
	free(out);
	ck_assert(metric(d, "refundsync_export_dead_letters",
	    "exporter=\"h\"") == 1);
	ck_assert_int_eq(tu_sink_posts(s, "h:d-03:1"), 1);

	/* Fixed: retry-dead delivers it. */
	tu_sink_set_policy(s, NULL);
	ck_assert_int_eq(cli(d, &out, "retry-dead", "--exporter", "h",
	    "--json", END), 0);
	doc = cJSON_Parse(out);
	ck_assert_int_eq(cJSON_GetObjectItem(doc, "queued")->valueint, 1);
	cJSON_Delete(doc);
	free(out);
	deadline = clock_mono_ms() + 20000;
	while (tu_sink_posts(s, "h:d-02:1") == 0 && clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert_int_eq(tu_sink_posts(s, "h:d-02:1"), 1);
	deadline = clock_mono_ms() + 10000;
	while (tu_sql_int(d, -1, "SELECT count(*) FROM exporter_dead_letters")
	    != 0 && clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert_int_eq(cli(d, &out, "dead", END), 0);
	ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1,
	    "only the header: %s", out);
	free(out);
	ck_assert(tu_exports_exact(d, s));

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
	while (tu_sink_posts(s, "h:d-05:1") < 2 && clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	ck_assert_int_eq(tu_sink_posts(s, "h:d-05:1"), 2);
	ck_assert_int_eq(tu_sink_posts(s, "h:d-03:1"), 2);
	ck_assert_int_eq(tu_sink_posts(s, "h:d-01:1"), 1);
	ck_assert(tu_exporters_caught_up(d, tu_exporter_names,
	    TU_NEXPORTERS, 30000));
	(void)jsonl_before;
	ck_assert(tu_exports_exact(d, s));

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
	tu_sink_free(s);
	free(tail);
}
END_TEST

/*
 * SIGKILL while exporting, at least 20 times: no duplicate and no gap in
 * any file, and the sink applies each key once.
 */
START_TEST(test_kill9_while_exporting)
{
	/* Some requests fail now and then: retries are in flight too; and
	 * the target is slow, so kills land in the middle of its batches. */
	struct tu_sink_policy flaky = { .fail_every = 7, .delay_ms = 8 };
	struct tu_sink *s = sink_start(&flaky);
	struct tu_sink_stats st_sink;
	char *tail = exporters_conf(s, 3), id[32];
	struct tu_daemon *d = start(tail);
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	int round, i, k = 0, kills = 0, st;
	const char *status;

	fprintf(stderr, "kill9 test: seed %u\n", seed);
	srand(seed);
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
	ck_assert(tu_exporters_caught_up(d, tu_exporter_names,
	    TU_NEXPORTERS, 60000));
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	ck_assert(tu_exports_exact(d, s));
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM"
	    " exporter_dead_letters"), 0);
	tu_sink_stats(s, &st_sink);
	fprintf(stderr, "kill9 test: %d kills, %lld changes, %lld requests "
	    "to the sink for %lld effects, %lld keys accepted again after a "
	    "crash\n", kills, (long long)tu_last_change(d),
	    (long long)st_sink.requests, (long long)st_sink.effects,
	    (long long)st_sink.keys_again);
	tu_daemon_free(d);
	tu_sink_free(s);
	free(tail);
}
END_TEST

/* A plugin is loaded and delivers; one with the wrong ABI is refused. */
START_TEST(test_plugins)
{
	const char *b = getenv("RS_BUILDDIR");
	char *good, *bad, *tail, *conf, *text, *argv[5], *out = NULL;
	char *err = NULL, *want;
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
	ck_assert(tu_exporters_caught_up(d, only, 1, 30000));
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
	/* A config error at the plugin's path: tu_daemon_write_config()
	 * writes seven lines before the tail. */
	want = xasprintf("%s:10: [exporter old] path: plugin ",
	    d->conf_path);
	ck_assert_msg(strstr(err, want) != NULL &&
	    strstr(err, "exporter ABI version 3, but this refundsync supports "
	    "version 2") != NULL, "check: %s", err);
	free(want);
	free(out);
	free(err);
	free(argv[1]);
	argv[1] = xstrdup("serve");
	rc = tu_run(argv, 30000, &out, &err);
	ck_assert_int_eq(rc, 2);
	ck_assert_msg(strstr(err, "ABI version 3") != NULL, "serve: %s", err);
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

/* ---- files moved under the daemon ---------------------------------------- */

/* The three file exporters, polling every 20 ms. */
#define FILES_CONF							\
	"[exporter j]\ntype = jsonl\npath = out.jsonl\npoll_ms = 20\n"	\
	"retry_initial_ms = 20\nretry_max_ms = 200\n"			\
	"[exporter c]\ntype = csv\npath = out.csv\npoll_ms = 20\n"	\
	"retry_initial_ms = 20\nretry_max_ms = 200\n"			\
	"[exporter l]\ntype = ledger\npath = out.journal\npoll_ms = 20\n" \
	"retry_initial_ms = 20\nretry_max_ms = 200\n"

static const char *const files_names[] = { "j", "c", "l" };
static const char *const files_paths[] = { "out.jsonl", "out.csv",
    "out.journal" };
#define NFILES	3

/* DIR/name + suffix.  Caller frees. */
static char *
out_path(const struct tu_daemon *d, int i, const char *suffix)
{
	return xasprintf("%s/%s%s", d->dir, files_paths[i], suffix);
}

/*
 * How many records of refund id file i (+ suffix) holds, by each
 * format's own words; -1 if it cannot be read.  A NUL byte anywhere (a
 * write past a cut) fails the test.
 */
static int
records_of(const struct tu_daemon *d, int i, const char *suffix,
    const char *id)
{
	char *path = out_path(d, i, suffix), *text, *needle;
	const char *p;
	size_t len;
	int n = 0;

	text = tu_read_file(path, &len);
	if (text == NULL) {
		free(path);
		return -1;
	}
	ck_assert_msg(memchr(text, '\0', len) == NULL, "%s holds a NUL byte",
	    path);
	if (i == 0)
		needle = xasprintf("\"refund_id\":\"%s\"", id);
	else if (i == 1)
		needle = xasprintf(",%s,", id);
	else
		needle = xasprintf("* Wix refund %s\n", id);
	for (p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	free(needle);
	free(text);
	free(path);
	return n;
}

/* Each file (+ suffix) holds refund id once, or not at all. */
static void
expect_records(const struct tu_daemon *d, const char *suffix,
    const char *id, int want)
{
	for (int i = 0; i < NFILES; i++)
		ck_assert_msg(records_of(d, i, suffix, id) == want,
		    "%s%s holds %d records of %s, not %d", files_paths[i],
		    suffix, records_of(d, i, suffix, id), id, want);
}

static void
post_caught_up(const struct tu_daemon *d, const char *id)
{
	ck_assert_int_eq(post(d, id, "SUCCEEDED", 1, "1.00"), 200);
	ck_assert(tu_exporters_caught_up(d, files_names, NFILES, 30000));
}

/*
 * A file cut to nothing under the daemon (logrotate's copytruncate), or
 * removed (its directory deleted, or rotated and compressed), is not
 * written to as if nothing happened: the next record starts a new file
 * at the path, with a log line, rather than following a run of NUL
 * bytes or going into a file nobody can read.
 */
START_TEST(test_file_cut_or_removed)
{
	struct tu_daemon *d = start(FILES_CONF);
	char *path, *copy, *text;
	size_t len, mark;
	int i;

	post_caught_up(d, "m-1");

	/* copytruncate: copy, then cut the file the daemon holds. */
	mark = tu_daemon_log_size(d);
	for (i = 0; i < NFILES; i++) {
		path = out_path(d, i, "");
		copy = out_path(d, i, ".1");
		text = tu_read_file(path, &len);
		ck_assert_ptr_nonnull(text);
		ck_assert(tu_write_file(copy, text, false));
		ck_assert_int_eq(truncate(path, 0), 0);
		free(text);
		free(copy);
		free(path);
	}
	post_caught_up(d, "m-2");
	expect_records(d, ".1", "m-1", 1);
	expect_records(d, "", "m-1", 0);
	expect_records(d, "", "m-2", 1);
	ck_assert(tu_daemon_wait_log(d, mark, (const char *const[]){
	    "export j: ", "out.jsonl was cut from ", " to 0 bytes",
	    "starting it anew", NULL }, 5000));

	/* Removed: the next record makes the file again. */
	mark = tu_daemon_log_size(d);
	for (i = 0; i < NFILES; i++) {
		path = out_path(d, i, "");
		ck_assert_int_eq(unlink(path), 0);
		free(path);
	}
	post_caught_up(d, "m-3");
	expect_records(d, "", "m-2", 0);
	expect_records(d, "", "m-3", 1);
	ck_assert(tu_daemon_wait_log(d, mark, (const char *const[]){
	    "export l: ", "out.journal was removed while open", NULL },
	    5000));

	/* The files are whole: a restart takes them, and goes on. */
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	ck_assert(tu_daemon_restart(d));
	post_caught_up(d, "m-4");
	expect_records(d, "", "m-3", 1);
	expect_records(d, "", "m-4", 1);
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	tu_daemon_free(d);
}
END_TEST

/*
 * logrotate's create mode: the file is renamed and an empty one made in
 * its place.  The exporter goes on writing to the renamed file (nothing
 * is lost) until SIGHUP, which logrotate's postrotate sends; from then
 * on it writes to the new file, and no record is in both.
 */
START_TEST(test_sighup_reopens)
{
	struct tu_daemon *d = start(FILES_CONF);
	char *path, *moved;
	size_t mark;
	int i, fd;

	post_caught_up(d, "n-1");
	for (i = 0; i < NFILES; i++) {
		path = out_path(d, i, "");
		moved = out_path(d, i, ".1");
		ck_assert_int_eq(rename(path, moved), 0);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0640);
		ck_assert_int_ge(fd, 0);
		close(fd);
		free(moved);
		free(path);
	}
	post_caught_up(d, "n-2");
	expect_records(d, ".1", "n-2", 1);

	mark = tu_daemon_log_size(d);
	ck_assert(tu_daemon_signal(d, SIGHUP));
	for (i = 0; i < NFILES; i++) {
		char *who = xasprintf("export %s: ", files_names[i]);

		ck_assert(tu_daemon_wait_log(d, mark, (const char *const[]){
		    who, "is no longer the file it was writing", NULL },
		    10000));
		free(who);
	}
	post_caught_up(d, "n-3");
	expect_records(d, ".1", "n-1", 1);
	expect_records(d, ".1", "n-3", 0);
	expect_records(d, "", "n-1", 0);
	expect_records(d, "", "n-2", 0);
	expect_records(d, "", "n-3", 1);

	/* The new files are whole: a restart takes them. */
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	ck_assert(tu_daemon_restart(d));
	post_caught_up(d, "n-4");
	expect_records(d, "", "n-4", 1);
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	tu_daemon_free(d);
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
	tcase_add_test(tc, test_file_cut_or_removed);
	tcase_add_test(tc, test_sighup_reopens);
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
