/*
 * check_crash.c: the crash harness (issue #7).  The real daemon takes
 * signed webhooks from several client threads at once (creates, updates
 * with rising revisions, duplicates, out-of-order older versions) while
 * it backfills an instance from the Wix sandbox and exports its change
 * log through jsonl, csv, ledger and http exporters.  A killer sends it
 * SIGKILL at random moments, at least 24 times, and starts it again each
 * time.
 *
 * Afterwards: every event that got a 200 is in webhook_events, every
 * refund is stored at a revision no older than the newest one that got a
 * 200, PRAGMA integrity_check says ok (after every kill and at the end),
 * the change log has no gap, the backfill brought every sandbox refund,
 * every file exporter holds each change once, in order, and the http
 * sink (tu_sink_*, which honours Idempotency-Key) applied each key's
 * effect once.
 * It prints "crash: sent=N acknowledged=N found=N lost=0 kills=N ...".
 */
#include <sys/types.h>

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <sqlite3.h>

#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define NCLIENTS	4
#define NREFUNDS	150
#define NKILLS		24
#define BF_INST		"inst-bf"
#define BF_SEED		1200

/* ---- the clients ----------------------------------------------------- */

struct refstate {
	int64_t	 next_rev;	/* highest revision sent so far */
	int64_t	 acked_rev;	/* newest revision with a 200 */
	char	*last_tok;	/* the last token sent, for duplicates */
	char	*last_evid;
	int64_t	 last_rev;
};

struct crash {
	pthread_mutex_t	 mu;
	struct refstate	 refs[NREFUNDS];
	char		**acked;	/* event ids that got a 200 */
	size_t		 nacked;
	int64_t		 sent, n503, noanswer, other;
	int64_t		 dups, olds;
	atomic_int	 port;		/* 0 while the daemon is down */
	atomic_bool	 stop;
	const char	*priv;		/* signs webhooks; borrowed */
	unsigned	 seed;
};

struct client {
	struct crash	*c;
	int		 idx;
	pthread_t	 tid;
};

static const char *const statuses[] = {
	"PENDING", "SUCCEEDED", "REVERSED", "FAILED", "SUCCEEDED"
};

static char *
make_token(const struct crash *c, int ri, int64_t rev, const char *evid,
    int inst)
{
	struct tu_refund r;
	struct tu_event ev;
	char id[32], amount[32], instance[32];

	snprintf(id, sizeof(id), "cr-%03d", ri);
	snprintf(amount, sizeof(amount), "%d.%02d", 10 + ri, (int)(rev % 100));
	snprintf(instance, sizeof(instance), "inst-client-%d", inst);
	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-crash";
	r.currency = "USD";
	r.amount = amount;
	r.status = statuses[rev % 5];
	r.revision = rev;
	r.created_date = "2025-08-09T15:26:24.000Z";
	r.updated_date = "2025-08-09T15:26:25.000Z";
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = rev > 1 ? TU_UPDATED : TU_CREATED;
	ev.form = rev % 2 == 0 ? TU_FORM_STRING : TU_FORM_OBJECT;
	ev.seq = rev;
	return tu_refund_webhook(c->priv, &ev, &r, instance);
}

static void *
client_main(void *arg)
{
	struct client *cl = arg;
	struct crash *c = cl->c;
	struct refstate *rs;
	unsigned seed = c->seed ^ (unsigned)(cl->idx * 7919 + 1);
	char *tok, *evid;
	int64_t rev;
	int port, ri, act, st;
	bool dup;

	while (!atomic_load(&c->stop)) {
		if ((port = atomic_load(&c->port)) == 0) {
			tu_sleep_ms(5);
			continue;
		}
		ri = (int)(rand_r(&seed) % NREFUNDS);
		act = (int)(rand_r(&seed) % 10);
		dup = false;
		tok = evid = NULL;
		pthread_mutex_lock(&c->mu);
		rs = &c->refs[ri];
		if (act < 2 && rs->last_tok != NULL) {
			/* A duplicate: the same event again. */
			tok = xstrdup(rs->last_tok);
			evid = xstrdup(rs->last_evid);
			rev = rs->last_rev;
			dup = true;
			c->dups++;
		} else if (act < 4 && rs->next_rev > 1) {
			/* Out of order: an older version, a new event. */
			rev = 1 + (int64_t)(rand_r(&seed) %
			    (unsigned)(rs->next_rev - 1));
			c->olds++;
		} else if (act < 5) {
			/* Skip ahead: the versions between come later. */
			rev = rs->next_rev = rs->next_rev + 2;
		} else
			rev = ++rs->next_rev;
		pthread_mutex_unlock(&c->mu);
		if (!dup) {
			evid = tu_random_id("ev-crash-");
			tok = make_token(c, ri, rev, evid, ri % 3);
			ck_assert_ptr_nonnull(tok);
			pthread_mutex_lock(&c->mu);
			free(rs->last_tok);
			free(rs->last_evid);
			rs->last_tok = xstrdup(tok);
			rs->last_evid = xstrdup(evid);
			rs->last_rev = rev;
			pthread_mutex_unlock(&c->mu);
		}
		st = tu_http_post(port, "/webhooks", tok, strlen(tok), NULL);
		pthread_mutex_lock(&c->mu);
		c->sent++;
		if (st == 200) {
			c->acked = xreallocarray(c->acked, c->nacked + 1,
			    sizeof(*c->acked));
			c->acked[c->nacked++] = evid;
			evid = NULL;
			if (rev > rs->acked_rev)
				rs->acked_rev = rev;
		} else if (st == 503)
			c->n503++;
		else if (st == -1)
			c->noanswer++;
		else
			c->other++;
		pthread_mutex_unlock(&c->mu);
		free(tok);
		free(evid);
	}
	return NULL;
}

/* ---- the daemon's store and exporters -------------------------------- */

/* Does any exporter have work outstanding? */
static bool
exporting(const struct tu_daemon *d)
{
	int64_t last = tu_last_change(d);
	size_t i;

	for (i = 0; i < TU_NEXPORTERS; i++)
		if (tu_exporter_position(d, tu_exporter_names[i]) < last)
			return true;
	return false;
}

/* Arm a sandbox fault (the JSON of POST /_sandbox/faults). */
static void
sb_fault(const struct tu_sandbox *sb, const char *json)
{
	ck_assert_msg(tu_sandbox_control(sb, "/_sandbox/faults", json),
	    "fault %s refused", json);
}

static bool
backfill_state_is(const struct tu_daemon *d, const char *state)
{
	char *v = tu_sqlf(d, "SELECT backfill FROM instances WHERE"
	    " instance_id = '" BF_INST "'");
	bool yes = v != NULL && strcmp(v, state) == 0;

	free(v);
	return yes;
}

static void
assert_integrity(const struct tu_daemon *d, const char *when)
{
	char *v = tu_sql(d->db_path, "PRAGMA integrity_check");

	ck_assert_msg(v != NULL && strcmp(v, "ok") == 0,
	    "integrity_check %s: %s", when, v != NULL ? v : "(null)");
	free(v);
}

/* ---- the test -------------------------------------------------------- */

START_TEST(test_crash_harness)
{
	static const char *const sb_args[] = { "--rate-limit", "1000000",
	    "--max-seconds", "600", NULL };
	/* Every 11th request to the sink fails: retries in flight too. */
	struct tu_sink_policy flaky = { .fail_every = 11 };
	static struct crash c;
	struct client cl[NCLIENTS];
	struct tu_sink *s = tu_sink_start(&flaky);
	struct tu_sink_stats st_sink;
	struct tu_sandbox sb;
	struct tu_conf conf;
	struct tu_daemon *d;
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	char *sbdir = tu_tempdir(), *keys, *wix, *exporters, *tail, id[32];
	int64_t t0 = clock_mono_ms(), found = 0, lost = 0, behind = 0;
	int kills = 0, kills_bf = 0, kills_exp = 0, i;
	size_t k;

	memset(&c, 0, sizeof(c));
	pthread_mutex_init(&c.mu, NULL);
	c.seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	fprintf(stderr, "crash: seed %u\n", c.seed);
	srand(c.seed);
	ck_assert_msg(s != NULL, "the sink did not start");

	/* The sandbox, each Query Refunds page slowed down, so the
	 * backfill spans several of the daemon's lives. */
	ck_assert_msg(tu_sandbox_start(&sb, sbdir, BF_SEED, BF_INST, sb_args),
	    "the sandbox did not start");
	sb_fault(&sb, "{\"fault\":\"stall\",\"count\":-1,\"ms\":120,"
	    "\"endpoint\":\"query\"}");
	keys = tu_sandbox_wix_keys(&sb, sbdir);
	ck_assert_ptr_nonnull(keys);
	wix = xasprintf("%sinstances = " BF_INST, keys);
	exporters = tu_exporters_conf(tu_sink_port(s), 16, 9, 7, 8);
	tail = xasprintf("[backfill]\npage_size = 20\n"
	    "requests_per_minute = 100000\n%s", exporters);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	conf.tail = tail;
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	c.priv = d->key.priv_pem;
	atomic_store(&c.port, d->port);

	for (i = 0; i < NCLIENTS; i++) {
		cl[i].c = &c;
		cl[i].idx = i;
		ck_assert_int_eq(pthread_create(&cl[i].tid, NULL, client_main,
		    &cl[i]), 0);
	}

	/* The killer. */
	while (kills < NKILLS) {
		tu_sleep_ms(250 + rand() % 900);
		tu_daemon_kill9(d);
		atomic_store(&c.port, 0);
		kills++;
		if (backfill_state_is(d, "running"))
			kills_bf++;
		if (exporting(d))
			kills_exp++;
		assert_integrity(d, "after a kill");
		ck_assert_msg(tu_daemon_restart(d), "restart %d failed",
		    kills);
		atomic_store(&c.port, d->port);
	}
	/* Some more traffic on the last life, then stop the clients. */
	tu_sleep_ms(500);
	atomic_store(&c.stop, true);
	for (i = 0; i < NCLIENTS; i++)
		ck_assert_int_eq(pthread_join(cl[i].tid, NULL), 0);

	/* Let the backfill and the exporters finish; stop cleanly. */
	sb_fault(&sb, "{\"fault\":\"stall\",\"count\":-1,\"ms\":1,"
	    "\"endpoint\":\"query\"}");
	{
		int64_t end = clock_mono_ms() + 60000;

		while (!backfill_state_is(d, "done") &&
		    clock_mono_ms() < end)
			tu_sleep_ms(50);
	}
	ck_assert_msg(backfill_state_is(d, "done"), "the backfill did not "
	    "finish");
	ck_assert(tu_exporters_caught_up(d, tu_exporter_names, TU_NEXPORTERS,
	    60000));
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);

	/* The store. */
	assert_integrity(d, "at the end");
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) = max(seq) AND"
	    " min(seq) = 1 FROM changes"), 1);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM refunds"
	    " WHERE instance_id = '" BF_INST "'"), BF_SEED);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM"
	    " exporter_dead_letters"), 0);

	/* Every acknowledged event is there. */
	ck_assert_int_eq(sqlite3_open_v2(d->db_path, &db,
	    SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM"
	    " webhook_events WHERE event_id = ?1", -1, &stmt, NULL),
	    SQLITE_OK);
	for (k = 0; k < c.nacked; k++) {
		sqlite3_reset(stmt);
		sqlite3_bind_text(stmt, 1, c.acked[k], -1, SQLITE_STATIC);
		if (sqlite3_step(stmt) == SQLITE_ROW &&
		    sqlite3_column_int64(stmt, 0) == 1)
			found++;
		else {
			lost++;
			fprintf(stderr, "crash: lost event %s\n", c.acked[k]);
		}
	}
	sqlite3_finalize(stmt);
	/* Every refund at its newest acknowledged version or newer. */
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT revision FROM"
	    " refunds WHERE id = ?1", -1, &stmt, NULL), SQLITE_OK);
	for (i = 0; i < NREFUNDS; i++) {
		if (c.refs[i].acked_rev == 0)
			continue;
		snprintf(id, sizeof(id), "cr-%03d", i);
		sqlite3_reset(stmt);
		sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(stmt) != SQLITE_ROW ||
		    sqlite3_column_int64(stmt, 0) < c.refs[i].acked_rev) {
			behind++;
			fprintf(stderr, "crash: %s stored behind revision "
			    "%lld\n", id, (long long)c.refs[i].acked_rev);
		}
	}
	sqlite3_finalize(stmt);
	sqlite3_close(db);

	/* The exporters. */
	ck_assert(tu_exports_exact(d, s));
	tu_sink_stats(s, &st_sink);

	fprintf(stderr, "crash: sent=%lld acknowledged=%zu found=%lld "
	    "lost=%lld kills=%d (during backfill %d, with exports pending "
	    "%d) 503=%lld unanswered=%lld duplicates=%lld older=%lld "
	    "changes=%lld sink_requests=%lld behind=%lld in %lld ms\n",
	    (long long)c.sent, c.nacked, (long long)found, (long long)lost,
	    kills, kills_bf, kills_exp, (long long)c.n503,
	    (long long)c.noanswer, (long long)c.dups, (long long)c.olds,
	    (long long)tu_last_change(d), (long long)st_sink.requests,
	    (long long)behind,
	    (long long)(clock_mono_ms() - t0));
	ck_assert_int_eq(lost, 0);
	ck_assert_int_eq(behind, 0);
	ck_assert_int_eq(c.other, 0);
	ck_assert_int_ge(kills, 20);
	ck_assert_int_ge(kills_bf, 3);
	ck_assert_int_ge(kills_exp, 3);
	ck_assert_int_gt(c.nacked, 200);
	ck_assert_int_gt(c.dups, 0);
	ck_assert_int_gt(c.olds, 0);

	for (k = 0; k < c.nacked; k++)
		free(c.acked[k]);
	free(c.acked);
	for (i = 0; i < NREFUNDS; i++) {
		free(c.refs[i].last_tok);
		free(c.refs[i].last_evid);
	}
	pthread_mutex_destroy(&c.mu);
	tu_daemon_free(d);
	tu_sandbox_stop(&sb);
	tu_rmtree(sbdir);
	tu_sink_free(s);
	free(sbdir);
	free(keys);
	free(wix);
	free(exporters);
	free(tail);
}
END_TEST

static Suite *
crash_suite(void)
{
	Suite *s = suite_create("crash");
	TCase *tc = tcase_create("crash");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_crash_harness);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(crash_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? 1 : 0;
}
