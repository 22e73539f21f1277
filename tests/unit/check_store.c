/*
 * check_store.c: the SQLite store.  Migrations and pragmas, the public
 * schema, the version rule and the change log, deduplication, instances,
 * savepoints and rollback, the failure modes a caller must turn into
 * 503 (lock held past busy_timeout, read-only database), whether a
 * connection can write at all and why not (store_writable), and the
 * instances API the backfill drives (one transaction per page), and
 * what reconcile needs (003_reconcile): walks of the change log and the
 * delivery logs, the repair log, re-queuing a change for an exporter,
 * and the record of runs.
 *
 * Every test works in its own directory under one mkdtemp() directory
 * per test case ($TMPDIR or /tmp), removed at the end.  The database is
 * inspected through a second, raw sqlite3 connection, so the tests see
 * what an accounting tool reading the file would see.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <linux/fs.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include <check.h>
#include <sqlite3.h>

#include "adapters/store.h"
#include "adapters/store_backend.h"
#include "core/ingest.h"
#include "domain/event.h"
#include "domain/json.h"
#include "domain/refund.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define BUSY_MS	100

/* The per-test-case directory (unchecked fixture, made in the parent;
 * static storage, so forked tests do not see it as a leak). */
static char case_dir[512];

/* ---- files ------------------------------------------------------------- */

static void
case_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	int n;

	n = snprintf(case_dir, sizeof(case_dir), "%s/check_store.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (n < 0 || (size_t)n >= sizeof(case_dir)) {
		fprintf(stderr, "check_store: TMPDIR too long\n");
		exit(2);
	}
	if (mkdtemp(case_dir) == NULL) {
		perror(case_dir);
		exit(2);
	}
}

static void
case_teardown(void)
{
	tu_rmtree(case_dir);
	case_dir[0] = '\0';
}

/* A fresh directory for one test, and the database path in it.  Both
 * strings are the caller's. */
static char *
test_db(char **dir)
{
	char *d, *path;

	d = xasprintf("%s/t.XXXXXX", case_dir);
	ck_assert_ptr_nonnull(mkdtemp(d));
	path = xasprintf("%s/refundsync.db", d);
	if (dir != NULL)
		*dir = d;
	else
		free(d);
	return path;
}

/* ---- the store --------------------------------------------------------- */

static struct store *
open_store(const char *path, bool readonly)
{
	struct store_options opt = { .busy_timeout_ms = BUSY_MS,
	    .readonly = readonly };
	struct store *st = NULL;
	char *why = NULL;
	enum rs_status rc;

	rc = store_open(path, &opt, &st, &why);
	ck_assert_msg(rc == RS_OK, "store_open %s: %s (%s)", path,
	    rs_strstatus(rc), why != NULL ? why : "no message");
	ck_assert_ptr_null(why);
	ck_assert_ptr_nonnull(st);
	return st;
}

/* st's SQLite backend, to call past store.c's checks. */
static void *
sqlite_ctx(struct store *st)
{
	void *ctx = store_backend_ctx(st, &store_sqlite_ops);

	ck_assert_ptr_nonnull(ctx);
	return ctx;
}

/* ---- the raw connection ------------------------------------------------ */

static sqlite3 *
raw_open(const char *path)
{
	sqlite3 *db = NULL;

	ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE,
	    NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 2000);
	return db;
}

static void
raw_exec(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
}

/* First column of the first row as text (NULL for SQL NULL or no row).
 * Caller frees. */
static char *
raw_text(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	char *out = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	rc = sqlite3_step(stmt);
	ck_assert_msg(rc == SQLITE_ROW || rc == SQLITE_DONE, "%s: %s", sql,
	    sqlite3_errmsg(db));
	if (rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL)
		out = xstrdup((const char *)sqlite3_column_text(stmt, 0));
	sqlite3_finalize(stmt);
	return out;
}

static int64_t
raw_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	int64_t v;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	ck_assert_msg(sqlite3_step(stmt) == SQLITE_ROW, "%s: no row", sql);
	v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return v;
}

/*
 * All rows of sql, each column as text ("NULL" for SQL NULL), columns
 * joined by '|' and rows by '\n'.  Caller frees.
 */
static char *
raw_rows(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	char *out = xstrdup(""), *t;
	const char *v;
	int rc, i, n;

	rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	n = sqlite3_column_count(stmt);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		for (i = 0; i < n; i++) {
			v = sqlite3_column_type(stmt, i) == SQLITE_NULL ?
			    "NULL" : (const char *)sqlite3_column_text(stmt, i);
			t = xasprintf("%s%s%s", out, i > 0 ? "|" : "", v);
			free(out);
			out = t;
		}
		t = xasprintf("%s\n", out);
		free(out);
		out = t;
	}
	ck_assert_int_eq(rc, SQLITE_DONE);
	sqlite3_finalize(stmt);
	return out;
}

#define ck_assert_rows(db, sql, want) do {				\
	char *got_ = raw_rows((db), (sql));				\
	ck_assert_msg(strcmp(got_, (want)) == 0,			\
	    "%s:\n--- got ---\n%s--- want ---\n%s", (sql), got_, (want)); \
	free(got_);							\
} while (0)

/* Is s "YYYY-MM-DDTHH:MM:SS.mmmZ"? */
static bool
is_iso_ms(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	size_t i;

	if (s == NULL || strlen(s) != sizeof(shape) - 1)
		return false;
	for (i = 0; shape[i] != '\0'; i++)
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') :
		    s[i] != shape[i])
			return false;
	return true;
}

/* ---- values ------------------------------------------------------------ */

/*
 * A refund version.  rev < 0: no revision.  updated: NULL for none.
 * The entity text carries a few members we do not model, to show the
 * body is kept whole.
 */
static void
mk_refund(struct refund *r, const char *id, const char *status, int rev,
    const char *amount, const char *cur, const char *created,
    const char *updated)
{
	char *revs, *cr, *up, *text;
	const char *why = NULL;
	cJSON *json = NULL;

	revs = rev >= 0 ? xasprintf("\"revision\":\"%d\",", rev) :
	    xstrdup("");
	cr = created != NULL ? xasprintf("\"createdDate\":\"%s\",", created) :
	    xstrdup("");
	up = updated != NULL ? xasprintf("\"updatedDate\":\"%s\",", updated) :
	    xstrdup("");
	text = xasprintf("{\"id\":\"%s\",%s%s%s\"chargeId\":\"ch-%s\","
	    "\"currencyCode\":\"%s\",\"amount\":\"%s\",\"status\":\"%s\","
	    "\"full\":false,\"statusInfo\":{\"code\":\"1013\"}}",
	    id, revs, cr, up, id, cur, amount, status);
	ck_assert_int_eq(json_parse_strict(text, strlen(text), JSON_MAX_DEPTH,
	    &json, &why), RS_OK);
	ck_assert_msg(refund_from_json(json, r, &why) == RS_OK, "%s: %s",
	    text, why);
	cJSON_Delete(json);
	free(text);
	free(up);
	free(cr);
	free(revs);
}

/* A refund event.  seq < 0: no entityEventSequence. */
static void
mk_refund_event(struct event *ev, const char *evid, const char *instance,
    int64_t seq, const char *id, const char *status, int rev,
    const char *updated)
{
	memset(ev, 0, sizeof(*ev));
	ev->kind = EVENT_REFUND;
	ev->event_type = xstrdup(EVENT_TYPE_REFUND_UPDATED);
	ev->instance_id = xstrdup(instance);
	ev->event_id = xstrdup(evid);
	ev->entity_id = xstrdup(id);
	ev->event_time = xstrdup("2024-05-01T10:20:30.123456Z");
	ev->has_sequence = seq >= 0;
	ev->sequence = seq >= 0 ? seq : 0;
	mk_refund(&ev->refund, id, status, rev, "12.95", "USD",
	    "2024-05-01T10:00:00Z", updated);
}

static void
mk_app_event(struct event *ev, enum event_kind kind, const char *instance)
{
	memset(ev, 0, sizeof(*ev));
	ev->kind = kind;
	ev->event_type = xstrdup(kind == EVENT_APP_INSTALLED ?
	    EVENT_TYPE_APP_INSTALLED : EVENT_TYPE_APP_REMOVED);
	ev->instance_id = xstrdup(instance);
	ev->app_id = xstrdup("app-1");
}

/* Apply ev under key in a transaction of its own; return the outcome. */
static enum store_outcome
apply1(struct store *st, const struct event *ev, const char *key)
{
	enum store_outcome o = (enum store_outcome)-1;

	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_event(st, ev, key, &o), RS_OK);
	ck_assert_int_eq(store_commit(st), RS_OK);
	return o;
}

/* Build, apply and clean up one refund event. */
static enum store_outcome
apply_refund_event(struct store *st, const char *key, const char *instance,
    int64_t seq, const char *id, const char *status, int rev,
    const char *updated)
{
	struct event ev;
	enum store_outcome o;

	mk_refund_event(&ev, key, instance, seq, id, status, rev, updated);
	o = apply1(st, &ev, key);
	event_cleanup(&ev);
	return o;
}

static void
expect_counts(struct store *st, int64_t refunds, int64_t events,
    int64_t changes, int64_t last_change, int64_t instances)
{
	struct store_counts c;

	memset(&c, 0xa5, sizeof(c));
	ck_assert_int_eq(store_counts(st, &c), RS_OK);
	ck_assert_int_eq(c.refunds, refunds);
	ck_assert_int_eq(c.events, events);
	ck_assert_int_eq(c.changes, changes);
	ck_assert_int_eq(c.last_change, last_change);
	ck_assert_int_eq(c.instances, instances);
}

/* ---- tests ------------------------------------------------------------- */

START_TEST(test_outcome_names)
{
	ck_assert_str_eq(store_outcome_name(STORE_APPLIED), "applied");
	ck_assert_str_eq(store_outcome_name(STORE_STALE), "stale");
	ck_assert_str_eq(store_outcome_name(STORE_DUPLICATE), "duplicate");
	ck_assert_str_eq(store_outcome_name(STORE_IGNORED), "ignored");
}
END_TEST

START_TEST(test_open_migrate_reopen)
{
	char *path = test_db(NULL);
	struct store *st;
	struct store_refund_row row;
	sqlite3 *db;

	ck_assert_uint_eq(store_migration_count, 5);
	ck_assert_int_eq(store_migrations[0].version, 1);
	ck_assert_str_eq(store_migrations[0].name, "001_initial");
	ck_assert_int_eq(store_migrations[1].version, 2);
	ck_assert_str_eq(store_migrations[1].name, "002_exporters");
	ck_assert_int_eq(store_migrations[2].version, 3);
	ck_assert_str_eq(store_migrations[2].name, "003_reconcile");
	ck_assert_int_eq(store_migrations[3].version, 4);
	ck_assert_str_eq(store_migrations[3].name, "004_posted");
	ck_assert_int_eq(store_migrations[4].version, 5);
	ck_assert_str_eq(store_migrations[4].name, "005_first_indexes");

	st = open_store(path, false);
	ck_assert_int_eq(store_schema_version(st), 5);
	expect_counts(st, 0, 0, 0, 0, 0);
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 1, "r1",
	    "PENDING", 1, NULL), STORE_APPLIED);
	store_close(st);

	db = raw_open(path);
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), 5);
	sqlite3_close(db);

	/* Reopening migrates nothing and keeps the data. */
	st = open_store(path, false);
	ck_assert_int_eq(store_schema_version(st), 5);
	expect_counts(st, 1, 1, 1, 1, 0);
	ck_assert_int_eq(store_refund_get(st, "r1", &row), RS_OK);
	ck_assert_str_eq(row.refund.status, "PENDING");
	store_refund_row_cleanup(&row);
	ck_assert_int_eq(store_refund_get(st, "nope", &row),
	    RS_ERR_NOTFOUND);
	store_close(st);

	/* Read-only opens of a current database work, and read. */
	st = open_store(path, true);
	ck_assert_int_eq(store_schema_version(st), 5);
	expect_counts(st, 1, 1, 1, 1, 0);
	store_close(st);

	db = raw_open(path);
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), 5);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master"
	    " WHERE type = 'table' AND name IN ('refunds', 'webhook_events',"
	    " 'instances', 'changes', 'meta')"), 5);
	sqlite3_close(db);
	store_close(NULL);
	free(path);
}
END_TEST

START_TEST(test_pragmas)
{
	char *path = test_db(NULL), *mode;
	struct store *st;
	sqlite3 *db, *own;

	st = open_store(path, false);
	/* WAL is a property of the file: another connection sees it. */
	db = raw_open(path);
	mode = raw_text(db, "PRAGMA journal_mode");
	ck_assert_str_eq(mode, "wal");
	free(mode);
	sqlite3_close(db);
	/* synchronous, foreign_keys and busy_timeout belong to the
	 * connection: ask the store's own. */
	own = store_sqlite_handle(st);
	ck_assert_ptr_nonnull(own);
	ck_assert_int_eq(raw_int(own, "PRAGMA synchronous"), 2);  /* FULL */
	ck_assert_int_eq(raw_int(own, "PRAGMA foreign_keys"), 1);
	/* Its WAL writes are gathered (walbuf), which needs them all in
	 * commits: no spilling. */
	ck_assert_int_eq(raw_int(own, "PRAGMA cache_spill"), 0);
	/* The lock wait is the store's own busy handler (a 1 ms poll up to
	 * busy_timeout, store_sqlite.c), not SQLite's busy_timeout, which
	 * PRAGMA busy_timeout would show; test_busy checks the wait. */
	ck_assert_int_eq(raw_int(own, "PRAGMA busy_timeout"), 0);
	ck_assert_int_eq(sqlite3_get_autocommit(own), 1);
	store_close(st);
	free(path);
}
END_TEST

/*
 * A reader that may not write the store's directory (an accounting tool
 * of the group README.md "Reading the exports" sets up) can open a WAL
 * database only while its -wal and -shm files exist.  So the last close
 * keeps them, the -wal emptied, and such a reader still reads once the
 * daemon has stopped.  readonly_shm=1 makes SQLite open the -shm only
 * for reading and never create it, as that reader must, even as root.
 */
START_TEST(test_reader_after_close)
{
	char *path = test_db(NULL), *wal, *shm, *uri;
	struct store *st;
	struct stat sb;
	sqlite3 *db = NULL;

	st = open_store(path, false);
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 1, "r1",
	    "PENDING", 1, NULL), STORE_APPLIED);
	store_close(st);

	wal = xasprintf("%s-wal", path);
	shm = xasprintf("%s-shm", path);
	ck_assert_msg(stat(wal, &sb) == 0, "%s: %s", wal, strerror(errno));
	ck_assert_int_eq(sb.st_size, 0);
	ck_assert_msg(stat(shm, &sb) == 0, "%s: %s", shm, strerror(errno));

	uri = xasprintf("file:%s?readonly_shm=1", path);
	ck_assert_int_eq(sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY |
	    SQLITE_OPEN_URI, NULL), SQLITE_OK);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds"), 1);
	sqlite3_close(db);

	/* The store's own read-only open (status) leaves them too. */
	st = open_store(path, true);
	expect_counts(st, 1, 1, 1, 1, 0);
	store_close(st);
	ck_assert_int_eq(stat(wal, &sb), 0);
	ck_assert_int_eq(stat(shm, &sb), 0);
	free(uri);
	free(shm);
	free(wal);
	free(path);
}
END_TEST

/* One expected column of PRAGMA table_info. */
struct col {
	const char	*name;
	const char	*type;
	int		 notnull;
	int		 pk;
};

static void
expect_columns(sqlite3 *db, const char *table, const struct col *want,
    size_t nspec, size_t nwant)
{
	sqlite3_stmt *stmt = NULL;
	char *sql;
	size_t i = 0;
	int rc;

	sql = xasprintf("PRAGMA table_info(%s)", table);
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL),
	    SQLITE_OK);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		ck_assert_msg(i < nwant, "%s: unexpected column %s", table,
		    sqlite3_column_text(stmt, 1));
		ck_assert_msg(strcmp((const char *)sqlite3_column_text(stmt,
		    1), want[i].name) == 0, "%s: column %zu is %s, want %s%s",
		    table, i, sqlite3_column_text(stmt, 1), want[i].name,
		    i < nspec ? " (SPEC)" : "");
		ck_assert_str_eq((const char *)sqlite3_column_text(stmt, 2),
		    want[i].type);
		ck_assert_msg(sqlite3_column_int(stmt, 3) == want[i].notnull,
		    "%s.%s: notnull", table, want[i].name);
		ck_assert_msg(sqlite3_column_int(stmt, 5) == want[i].pk,
		    "%s.%s: pk", table, want[i].name);
		i++;
	}
	ck_assert_int_eq(rc, SQLITE_DONE);
	ck_assert_msg(i == nwant, "%s: %zu columns, want %zu", table, i,
	    nwant);
	sqlite3_finalize(stmt);
	free(sql);
}

START_TEST(test_schema)
{
	/* SPEC §4 first, exactly; then the columns we added. */
	static const struct col refunds[] = {
		{ "id", "TEXT", 0, 1 },
		{ "instance_id", "TEXT", 0, 0 },
		{ "charge_id", "TEXT", 1, 0 },
		{ "currency", "TEXT", 1, 0 },
		{ "amount", "TEXT", 1, 0 },
		{ "amount_minor", "INTEGER", 0, 0 },
		{ "status", "TEXT", 1, 0 },
		{ "revision", "INTEGER", 0, 0 },
		{ "created_date", "TEXT", 0, 0 },
		{ "updated_date", "TEXT", 0, 0 },
		{ "body", "TEXT", 1, 0 },
		{ "source", "TEXT", 1, 0 },
		{ "stored_at", "TEXT", 1, 0 },
		{ "event_seq", "INTEGER", 0, 0 },
		{ "amount_exponent", "INTEGER", 0, 0 }
	};
	static const struct col events[] = {
		{ "event_id", "TEXT", 0, 1 },
		{ "event_type", "TEXT", 1, 0 },
		{ "instance_id", "TEXT", 0, 0 },
		{ "entity_id", "TEXT", 0, 0 },
		{ "received_at", "TEXT", 1, 0 },
		{ "outcome", "TEXT", 1, 0 },
		{ "event_time", "TEXT", 0, 0 },
		{ "event_seq", "INTEGER", 0, 0 }
	};
	static const struct col instances[] = {
		{ "instance_id", "TEXT", 0, 1 },
		{ "installed_at", "TEXT", 0, 0 },
		{ "backfill", "TEXT", 1, 0 },
		{ "backfill_refunds", "INTEGER", 1, 0 },
		{ "last_error", "TEXT", 0, 0 },
		{ "app_id", "TEXT", 0, 0 },
		{ "removed_at", "TEXT", 0, 0 },
		{ "updated_at", "TEXT", 0, 0 },
		{ "backfill_cursor", "TEXT", 0, 0 },
		{ "backfill_pages", "INTEGER", 1, 0 },
		{ "backfill_started_at", "TEXT", 0, 0 },
		{ "backfill_finished_at", "TEXT", 0, 0 }
	};
	static const struct col changes[] = {
		{ "seq", "INTEGER", 0, 1 },
		{ "refund_id", "TEXT", 1, 0 },
		{ "instance_id", "TEXT", 0, 0 },
		{ "revision", "INTEGER", 0, 0 },
		{ "status", "TEXT", 1, 0 },
		{ "prev_status", "TEXT", 0, 0 },
		{ "currency", "TEXT", 1, 0 },
		{ "amount", "TEXT", 1, 0 },
		{ "amount_minor", "INTEGER", 0, 0 },
		{ "source", "TEXT", 1, 0 },
		{ "changed_at", "TEXT", 1, 0 },
		{ "body", "TEXT", 1, 0 },
		{ "event_seq", "INTEGER", 0, 0 },
		{ "amount_exponent", "INTEGER", 0, 0 },
		/* 002_exporters */
		{ "charge_id", "TEXT", 0, 0 },
		{ "created_date", "TEXT", 0, 0 },
		{ "updated_date", "TEXT", 0, 0 },
		{ "returned_application_fee", "TEXT", 0, 0 },
		{ "returned_processing_fee", "TEXT", 0, 0 }
	};
	static const struct col meta[] = {
		{ "key", "TEXT", 0, 1 },
		{ "value", "TEXT", 0, 0 }
	};
	/* 003_reconcile */
	static const struct col repairs[] = {
		{ "id", "INTEGER", 0, 1 },
		{ "at", "TEXT", 1, 0 },
		{ "instance_id", "TEXT", 0, 0 },
		{ "kind", "TEXT", 1, 0 },
		{ "refund_id", "TEXT", 0, 0 },
		{ "exporter", "TEXT", 0, 0 },
		{ "seq", "INTEGER", 0, 0 },
		{ "detail", "TEXT", 0, 0 }
	};
	static const struct col runs[] = {
		{ "id", "INTEGER", 0, 1 },
		{ "instance_id", "TEXT", 0, 0 },
		{ "started_at", "TEXT", 1, 0 },
		{ "finished_at", "TEXT", 1, 0 },
		{ "outcome", "TEXT", 1, 0 },
		{ "heal", "INTEGER", 1, 0 },
		{ "wix_refunds", "INTEGER", 1, 0 },
		{ "store_refunds", "INTEGER", 1, 0 },
		{ "drift", "INTEGER", 1, 0 },
		{ "repaired", "INTEGER", 1, 0 },
		{ "error", "TEXT", 0, 0 },
		{ "report", "TEXT", 0, 0 }
	};
	char *path = test_db(NULL), *v;
	struct store *st;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	expect_columns(db, "refunds", refunds, 13,
	    sizeof(refunds) / sizeof(refunds[0]));
	expect_columns(db, "webhook_events", events, 6,
	    sizeof(events) / sizeof(events[0]));
	expect_columns(db, "instances", instances, 5,
	    sizeof(instances) / sizeof(instances[0]));
	expect_columns(db, "changes", changes, 12,
	    sizeof(changes) / sizeof(changes[0]));
	expect_columns(db, "meta", meta, 2, sizeof(meta) / sizeof(meta[0]));
	expect_columns(db, "reconcile_repairs", repairs, 0,
	    sizeof(repairs) / sizeof(repairs[0]));
	expect_columns(db, "reconcile_runs", runs, 0,
	    sizeof(runs) / sizeof(runs[0]));

	/* backfill_refunds defaults to 0 (SPEC). */
	v = raw_text(db, "SELECT dflt_value FROM pragma_table_info('instances')"
	    " WHERE name = 'backfill_refunds'");
	ck_assert_str_eq(v, "0");
	free(v);
	/* change-log seq is never reused. */
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master"
	    " WHERE name = 'sqlite_sequence'"), 1);
	/* The indexes the reads use. */
	ck_assert_rows(db, "SELECT name FROM sqlite_master WHERE type ="
	    " 'index' AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY name",
	    "changes_refund\nreconcile_repairs_kind\n"
	    "reconcile_runs_instance\nrefunds_instance\n");
	ck_assert_rows(db, "SELECT name FROM pragma_index_info("
	    "'changes_refund')", "refund_id\nseq\n");
	ck_assert_rows(db, "SELECT name FROM pragma_index_info("
	    "'refunds_instance')", "instance_id\ncreated_date\nid\n");
	ck_assert_rows(db, "SELECT name FROM pragma_index_info("
	    "'reconcile_repairs_kind')", "kind\n");
	ck_assert_rows(db, "SELECT name FROM pragma_index_info("
	    "'reconcile_runs_instance')", "instance_id\nid\n");
	/* Pruning the runs of an instance, and counting repairs per kind,
	 * use their indexes. */
	v = raw_rows(db, "EXPLAIN QUERY PLAN DELETE FROM reconcile_runs"
	    " WHERE instance_id IS 'A' AND id <= (SELECT id FROM"
	    " reconcile_runs WHERE instance_id IS 'A' ORDER BY id DESC"
	    " LIMIT 1 OFFSET 100)");
	ck_assert_msg(strstr(v, "SEARCH reconcile_runs USING INDEX"
	    " reconcile_runs_instance (instance_id=? AND id<?)") != NULL &&
	    strstr(v, "TEMP B-TREE") == NULL, "plan: %s", v);
	free(v);
	v = raw_rows(db, "EXPLAIN QUERY PLAN SELECT kind, count(*) FROM"
	    " reconcile_repairs GROUP BY kind ORDER BY kind");
	ck_assert_msg(strstr(v, "SCAN reconcile_repairs USING COVERING INDEX"
	    " reconcile_repairs_kind") != NULL &&
	    strstr(v, "TEMP B-TREE") == NULL, "plan: %s", v);
	free(v);
	/* Listing by instance uses its index, and needs no sort. */
	v = raw_rows(db, "EXPLAIN QUERY PLAN SELECT body FROM refunds WHERE"
	    " instance_id = 'A' ORDER BY created_date, id");
	ck_assert_msg(strstr(v, "SEARCH refunds USING INDEX refunds_instance"
	    " (instance_id=?)") != NULL && strstr(v, "TEMP B-TREE") == NULL,
	    "plan: %s", v);
	free(v);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_create_update_stale_duplicate)
{
	char *path = test_db(NULL);
	struct store *st;
	struct store_refund_row row;
	struct event ev;
	enum store_outcome o;
	char *body1, *body2;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);

	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 1, "r1",
	    "PENDING", 1, "2024-05-01T10:00:00Z"), STORE_APPLIED);
	ck_assert_int_eq(apply_refund_event(st, "e2", "inst-1", 2, "r1",
	    "SUCCEEDED", 2, "2024-05-01T10:05:00Z"), STORE_APPLIED);
	/* An older version arriving late. */
	ck_assert_int_eq(apply_refund_event(st, "e3", "inst-1", 1, "r1",
	    "PENDING", 1, "2024-05-01T10:00:00Z"), STORE_STALE);
	/* The same delivery again, and a newer version under a seen key:
	 * both duplicates, both change nothing. */
	ck_assert_int_eq(apply_refund_event(st, "e2", "inst-1", 2, "r1",
	    "SUCCEEDED", 2, "2024-05-01T10:05:00Z"), STORE_DUPLICATE);
	ck_assert_int_eq(apply_refund_event(st, "e2", "inst-1", 3, "r1",
	    "REVERSED", 3, "2024-05-01T10:09:00Z"), STORE_DUPLICATE);
	expect_counts(st, 1, 3, 2, 2, 0);

	ck_assert_rows(db, "SELECT id, instance_id, charge_id, currency,"
	    " amount, amount_minor, status, revision, created_date,"
	    " updated_date, source, event_seq, amount_exponent FROM refunds",
	    "r1|inst-1|ch-r1|USD|12.95|1295|SUCCEEDED|2|2024-05-01T10:00:00Z|"
	    "2024-05-01T10:05:00Z|webhook|2|2\n");
	ck_assert_rows(db, "SELECT seq, refund_id, instance_id, revision,"
	    " status, prev_status, currency, amount, amount_minor, source,"
	    " event_seq, amount_exponent FROM changes ORDER BY seq",
	    "1|r1|inst-1|1|PENDING|NULL|USD|12.95|1295|webhook|1|2\n"
	    "2|r1|inst-1|2|SUCCEEDED|PENDING|USD|12.95|1295|webhook|2|2\n");
	ck_assert_rows(db, "SELECT event_id, event_type, instance_id,"
	    " entity_id, outcome, event_time, event_seq FROM webhook_events"
	    " ORDER BY event_id",
	    "e1|" EVENT_TYPE_REFUND_UPDATED "|inst-1|r1|applied|"
	    "2024-05-01T10:20:30.123456Z|1\n"
	    "e2|" EVENT_TYPE_REFUND_UPDATED "|inst-1|r1|applied|"
	    "2024-05-01T10:20:30.123456Z|2\n"
	    "e3|" EVENT_TYPE_REFUND_UPDATED "|inst-1|r1|stale|"
	    "2024-05-01T10:20:30.123456Z|1\n");

	/* Bodies: each change carries its own version; the row the last. */
	body1 = raw_text(db, "SELECT body FROM changes WHERE seq = 1");
	body2 = raw_text(db, "SELECT body FROM changes WHERE seq = 2");
	ck_assert_ptr_nonnull(strstr(body1, "\"status\":\"PENDING\""));
	ck_assert_ptr_nonnull(strstr(body2, "\"status\":\"SUCCEEDED\""));
	ck_assert_ptr_nonnull(strstr(body2, "\"statusInfo\":{\"code\":"
	    "\"1013\"}"));
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds r JOIN"
	    " changes c ON c.seq = 2 AND c.body = r.body"), 1);

	/* Timestamps are UTC with milliseconds. */
	memset(&row, 0, sizeof(row));
	ck_assert_int_eq(store_refund_get(st, "r1", &row), RS_OK);
	ck_assert_str_eq(row.refund.id, "r1");
	ck_assert_str_eq(row.refund.charge_id, "ch-r1");
	ck_assert_str_eq(row.refund.currency, "USD");
	ck_assert_str_eq(row.refund.amount, "12.95");
	ck_assert(row.refund.amount_exact);
	ck_assert_int_eq(row.refund.amount_minor, 1295);
	ck_assert_str_eq(row.refund.status, "SUCCEEDED");
	ck_assert(row.refund.has_revision);
	ck_assert_int_eq(row.refund.revision, 2);
	ck_assert_str_eq(row.refund.created_date, "2024-05-01T10:00:00Z");
	ck_assert_str_eq(row.refund.updated_date, "2024-05-01T10:05:00Z");
	ck_assert_str_eq(row.refund.body, body2);
	ck_assert_str_eq(row.instance_id, "inst-1");
	ck_assert_str_eq(row.source, "webhook");
	ck_assert_msg(is_iso_ms(row.stored_at), "stored_at %s",
	    row.stored_at);
	ck_assert(row.has_sequence);
	ck_assert_int_eq(row.sequence, 2);
	store_refund_row_cleanup(&row);
	ck_assert_ptr_null(row.source);
	store_refund_row_cleanup(NULL);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes WHERE"
	    " length(changed_at) = 24 AND changed_at LIKE '20__-__-__T__:__:"
	    "__.___Z'"), 2);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM webhook_events"
	    " WHERE received_at LIKE '20__-__-__T__:__:__.___Z'"), 3);

	/* A duplicate key inside a larger transaction leaves the rest. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	mk_refund_event(&ev, "e1", "inst-1", 9, "r1", "FAILED", 9, NULL);
	ck_assert_int_eq(store_apply_event(st, &ev, "e1", &o), RS_OK);
	ck_assert_int_eq(o, STORE_DUPLICATE);
	ck_assert_int_eq(store_apply_event(st, &ev, "e9", &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	ck_assert_int_eq(store_commit(st), RS_OK);
	event_cleanup(&ev);
	expect_counts(st, 1, 4, 3, 3, 0);
	ck_assert_rows(db, "SELECT seq, status, prev_status FROM changes"
	    " WHERE seq = 3", "3|FAILED|SUCCEEDED\n");

	free(body1);
	free(body2);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_out_of_order_burst)
{
	static const int revs[] = { 5, 3, 4, 1, 2 };
	char *path = test_db(NULL), *key;
	struct store *st;
	sqlite3 *db;
	size_t i;

	st = open_store(path, false);
	for (i = 0; i < sizeof(revs) / sizeof(revs[0]); i++) {
		key = xasprintf("burst-%d", revs[i]);
		ck_assert_int_eq(apply_refund_event(st, key, "inst-1",
		    revs[i], "r1", revs[i] % 2 ? "SUCCEEDED" : "PENDING",
		    revs[i], NULL), i == 0 ? STORE_APPLIED : STORE_STALE);
		free(key);
	}
	expect_counts(st, 1, 5, 1, 1, 0);
	db = raw_open(path);
	ck_assert_rows(db, "SELECT revision, status, event_seq FROM refunds",
	    "5|SUCCEEDED|5\n");
	ck_assert_rows(db, "SELECT seq, revision, prev_status FROM changes",
	    "1|5|NULL\n");
	ck_assert_rows(db, "SELECT outcome, count(*) FROM webhook_events"
	    " GROUP BY outcome ORDER BY outcome", "applied|1\nstale|4\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_equal_revision_tie)
{
	char *path = test_db(NULL);
	struct store *st;
	sqlite3 *db;

	st = open_store(path, false);
	ck_assert_int_eq(apply_refund_event(st, "a", "inst-1", 1, "r1",
	    "SUCCEEDED", 3, "2024-05-01T10:00:00Z"), STORE_APPLIED);
	/* Same revision, though a higher sequence and a later date: the
	 * revision alone decides, and a tie keeps the stored row. */
	ck_assert_int_eq(apply_refund_event(st, "b", "inst-1", 7, "r1",
	    "FAILED", 3, "2024-05-02T10:00:00Z"), STORE_STALE);
	/* The same for a refund without revisions: equal sequence and
	 * equal date. */
	ck_assert_int_eq(apply_refund_event(st, "c", "inst-1", 4, "r2",
	    "PENDING", -1, "2024-05-01T10:00:00Z"), STORE_APPLIED);
	ck_assert_int_eq(apply_refund_event(st, "d", "inst-1", 4, "r2",
	    "FAILED", -1, "2024-05-01T10:00:00.000Z"), STORE_STALE);
	expect_counts(st, 2, 4, 2, 2, 0);
	db = raw_open(path);
	ck_assert_rows(db, "SELECT id, status, revision, event_seq FROM"
	    " refunds ORDER BY id", "r1|SUCCEEDED|3|1\nr2|PENDING|NULL|4\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* The ids of refunds' instances: distinct, sorted, NULL left out; a
 * non-RS_OK return of the callback stops the walk. */
struct id_list {
	char	buf[128];
	int	stop_at;	/* 0: never */
	int	n;
};

static enum rs_status
id_list_fn(void *arg, const char *id)
{
	struct id_list *l = arg;
	size_t used = strlen(l->buf);

	(void)snprintf(l->buf + used, sizeof(l->buf) - used, "%s;", id);
	return ++l->n == l->stop_at ? RS_ERR_STOPPING : RS_OK;
}

START_TEST(test_refund_instances)
{
	static const char *const rows[][2] = { { "r1", "inst-b" },
	    { "r2", "inst-a" }, { "r3", "inst-b" }, { "r4", NULL },
	    { "r5", "inst-c" } };
	char *path = test_db(NULL);
	struct id_list l;
	struct store *st;
	struct refund r;
	enum store_outcome o;
	size_t i;

	st = open_store(path, false);
	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(store_refund_instances(st, id_list_fn, &l), RS_OK);
	ck_assert_str_eq(l.buf, "");
	ck_assert_int_eq(store_begin(st), RS_OK);
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		mk_refund(&r, rows[i][0], "SUCCEEDED", 1, "1.00", "USD",
		    "2024-05-01T08:00:00Z", "2024-05-01T08:00:00Z");
		ck_assert_int_eq(store_apply_refund(st, &r, rows[i][1], false,
		    0, "backfill", &o), RS_OK);
		ck_assert_int_eq(o, STORE_APPLIED);
		refund_cleanup(&r);
	}
	ck_assert_int_eq(store_commit(st), RS_OK);
	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(store_refund_instances(st, id_list_fn, &l), RS_OK);
	ck_assert_str_eq(l.buf, "inst-a;inst-b;inst-c;");
	memset(&l, 0, sizeof(l));
	l.stop_at = 2;
	ck_assert_int_eq(store_refund_instances(st, id_list_fn, &l),
	    RS_ERR_STOPPING);
	ck_assert_str_eq(l.buf, "inst-a;inst-b;");
	ck_assert_int_eq(store_refund_instances(st, NULL, &l), RS_ERR_INPUT);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_no_revision_order)
{
	char *path = test_db(NULL);
	struct store *st;
	struct refund r;
	enum store_outcome o;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	ck_assert_int_eq(apply_refund_event(st, "s10", "inst-1", 10, "r1",
	    "PENDING", -1, "2024-05-01T10:00:00Z"), STORE_APPLIED);
	/* Lower sequence loses although its date is later. */
	ck_assert_int_eq(apply_refund_event(st, "s9", "inst-1", 9, "r1",
	    "FAILED", -1, "2024-05-01T12:00:00Z"), STORE_STALE);
	/* Higher sequence wins although its date is earlier. */
	ck_assert_int_eq(apply_refund_event(st, "s11", "inst-1", 11, "r1",
	    "SUCCEEDED", -1, "2024-05-01T09:00:00Z"), STORE_APPLIED);
	ck_assert_rows(db, "SELECT status, event_seq, updated_date FROM"
	    " refunds", "SUCCEEDED|11|2024-05-01T09:00:00Z\n");

	/* Without a sequence (backfill), the later updatedDate wins,
	 * compared as instants: "…00.1Z" is after "…00Z". */
	mk_refund(&r, "r1", "REVERSED", -1, "12.95", "USD",
	    "2024-05-01T08:00:00Z", "2024-05-01T09:00:00.1Z");
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_refund(st, &r, NULL, false, 0,
	    "backfill", &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	ck_assert_int_eq(store_commit(st), RS_OK);
	refund_cleanup(&r);
	/* An earlier one loses; so does an equal one. */
	mk_refund(&r, "r1", "PENDING", -1, "12.95", "USD",
	    "2024-05-01T08:00:00Z", "2024-05-01T09:00:00Z");
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_refund(st, &r, "inst-1", false, 0,
	    "backfill", &o), RS_OK);
	ck_assert_int_eq(o, STORE_STALE);
	refund_cleanup(&r);
	mk_refund(&r, "r1", "PENDING", -1, "12.95", "USD",
	    "2024-05-01T08:00:00Z", "2024-05-01T09:00:00.100Z");
	ck_assert_int_eq(store_apply_refund(st, &r, "inst-1", false, 0,
	    "backfill", &o), RS_OK);
	ck_assert_int_eq(o, STORE_STALE);
	ck_assert_int_eq(store_commit(st), RS_OK);
	refund_cleanup(&r);

	/* The backfilled version has no sequence; instance_id was kept. */
	ck_assert_rows(db, "SELECT status, event_seq, instance_id, source,"
	    " updated_date FROM refunds",
	    "REVERSED|NULL|inst-1|backfill|2024-05-01T09:00:00.1Z\n");
	ck_assert_rows(db, "SELECT seq, status, prev_status, event_seq,"
	    " instance_id, source FROM changes ORDER BY seq",
	    "1|PENDING|NULL|10|inst-1|webhook\n"
	    "2|SUCCEEDED|PENDING|11|inst-1|webhook\n"
	    "3|REVERSED|SUCCEEDED|NULL|inst-1|backfill\n");
	expect_counts(st, 1, 3, 3, 3, 0);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_status_any_direction)
{
	char *path = test_db(NULL);
	struct store *st;
	sqlite3 *db;

	st = open_store(path, false);
	ck_assert_int_eq(apply_refund_event(st, "k1", "inst-1", 1, "r1",
	    "SUCCEEDED", 1, NULL), STORE_APPLIED);
	ck_assert_int_eq(apply_refund_event(st, "k2", "inst-1", 2, "r1",
	    "REVERSED", 2, NULL), STORE_APPLIED);
	ck_assert_int_eq(apply_refund_event(st, "k3", "inst-1", 3, "r1",
	    "SUCCEEDED", 3, NULL), STORE_APPLIED);
	db = raw_open(path);
	ck_assert_rows(db, "SELECT seq, revision, status, prev_status FROM"
	    " changes ORDER BY seq",
	    "1|1|SUCCEEDED|NULL\n2|2|REVERSED|SUCCEEDED\n"
	    "3|3|SUCCEEDED|REVERSED\n");
	ck_assert_rows(db, "SELECT status, revision FROM refunds",
	    "SUCCEEDED|3\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_amounts)
{
	static const struct {
		const char	*id;
		const char	*amount;
		const char	*cur;
		const char	*want;	/* amount|amount_minor|exponent */
	} c[] = {
		{ "a1", "12.345", "USD", "12.345|NULL|2" },
		{ "a2", "1500", "JPY", "1500|1500|0" },
		{ "a3", "1.250", "KWD", "1.250|1250|3" },
		{ "a4", "0.1", "JPY", "0.1|NULL|0" },
		{ "a5", "12.00000001", "EUR", "12.00000001|NULL|2" },
		{ "a6", "99999999999999999999", "USD",
		    "99999999999999999999|NULL|2" },
		{ "a7", "5.00", "QQQ", "5.00|NULL|NULL" }
	};
	char *path = test_db(NULL), *sql, *want;
	struct store *st;
	struct store_refund_row row;
	struct refund r;
	enum store_outcome o;
	sqlite3 *db;
	size_t i;

	st = open_store(path, false);
	db = raw_open(path);
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		mk_refund(&r, c[i].id, "SUCCEEDED", 1, c[i].amount, c[i].cur,
		    NULL, NULL);
		ck_assert_int_eq(store_begin(st), RS_OK);
		ck_assert_int_eq(store_apply_refund(st, &r, "inst-1", false,
		    0, "cli", &o), RS_OK);
		ck_assert_int_eq(o, STORE_APPLIED);
		ck_assert_int_eq(store_commit(st), RS_OK);
		refund_cleanup(&r);

		sql = xasprintf("SELECT amount, amount_minor, amount_exponent"
		    " FROM refunds WHERE id = '%s'", c[i].id);
		want = xasprintf("%s\n", c[i].want);
		ck_assert_rows(db, sql, want);
		free(sql);
		sql = xasprintf("SELECT amount, amount_minor, amount_exponent"
		    " FROM changes WHERE refund_id = '%s'", c[i].id);
		ck_assert_rows(db, sql, want);
		free(sql);
		free(want);

		ck_assert_int_eq(store_refund_get(st, c[i].id, &row), RS_OK);
		ck_assert_str_eq(row.refund.amount, c[i].amount);
		ck_assert_str_eq(row.source, "cli");
		ck_assert(!row.has_sequence);
		ck_assert_int_eq(row.refund.amount_exact,
		    strstr(c[i].want, "NULL") == NULL);
		store_refund_row_cleanup(&row);
	}
	/* The column is an integer, never a float. */
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds WHERE"
	    " amount_minor IS NOT NULL AND typeof(amount_minor) <> 'integer'"),
	    0);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_app_installed)
{
	char *path = test_db(NULL);
	struct store *st;
	struct event ev;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	mk_app_event(&ev, EVENT_APP_INSTALLED, "inst-A");
	ck_assert_int_eq(apply1(st, &ev, "install:inst-A:1"), STORE_APPLIED);
	/* The same delivery: known key, nothing recorded. */
	ck_assert_int_eq(apply1(st, &ev, "install:inst-A:1"),
	    STORE_DUPLICATE);
	/* Another delivery for an installed instance: recorded as such. */
	ck_assert_int_eq(apply1(st, &ev, "install:inst-A:2"),
	    STORE_DUPLICATE);
	event_cleanup(&ev);
	expect_counts(st, 0, 2, 0, 0, 1);
	ck_assert_rows(db, "SELECT instance_id, backfill, backfill_refunds,"
	    " app_id, removed_at, last_error, backfill_pages,"
	    " installed_at = updated_at FROM instances",
	    "inst-A|pending|0|app-1|NULL|NULL|0|1\n");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM instances WHERE"
	    " installed_at LIKE '20__-__-__T__:__:__.___Z'"), 1);
	ck_assert_rows(db, "SELECT event_id, event_type, instance_id,"
	    " entity_id, outcome FROM webhook_events ORDER BY event_id",
	    "install:inst-A:1|AppInstalled|inst-A|NULL|applied\n"
	    "install:inst-A:2|AppInstalled|inst-A|NULL|duplicate\n");

	/* An instance row made some other way (config) gets installed_at
	 * and keeps its backfill state. */
	raw_exec(db, "INSERT INTO instances (instance_id, backfill)"
	    " VALUES ('inst-C', 'done')");
	mk_app_event(&ev, EVENT_APP_INSTALLED, "inst-C");
	ck_assert_int_eq(apply1(st, &ev, "install:inst-C"), STORE_APPLIED);
	event_cleanup(&ev);
	ck_assert_rows(db, "SELECT backfill, installed_at IS NOT NULL, app_id"
	    " FROM instances WHERE instance_id = 'inst-C'", "done|1|app-1\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_app_removed)
{
	char *path = test_db(NULL);
	struct store *st;
	struct event ev;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	mk_app_event(&ev, EVENT_APP_INSTALLED, "inst-A");
	ck_assert_int_eq(apply1(st, &ev, "i1"), STORE_APPLIED);
	event_cleanup(&ev);
	raw_exec(db, "UPDATE instances SET backfill = 'done',"
	    " backfill_cursor = 'c9', last_error = 'old', backfill_pages = 3,"
	    " backfill_refunds = 251, backfill_started_at = 's',"
	    " backfill_finished_at = 'f'");

	mk_app_event(&ev, EVENT_APP_REMOVED, "inst-A");
	ck_assert_int_eq(apply1(st, &ev, "r1"), STORE_APPLIED);
	ck_assert_rows(db, "SELECT backfill, removed_at IS NOT NULL,"
	    " installed_at IS NOT NULL FROM instances", "done|1|1\n");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM instances WHERE"
	    " removed_at LIKE '20__-__-__T__:__:__.___Z'"), 1);
	ck_assert_int_eq(apply1(st, &ev, "r2"), STORE_DUPLICATE);
	event_cleanup(&ev);

	/* Installed again: webhooks were not delivered meanwhile, so the
	 * backfill is pending again, with nothing of the old run's counts
	 * (status would show "pending 3 251" until a run starts). */
	mk_app_event(&ev, EVENT_APP_INSTALLED, "inst-A");
	ck_assert_int_eq(apply1(st, &ev, "i2"), STORE_APPLIED);
	event_cleanup(&ev);
	ck_assert_rows(db, "SELECT backfill, backfill_cursor, last_error,"
	    " removed_at, backfill_pages, backfill_refunds,"
	    " backfill_started_at, backfill_finished_at FROM instances",
	    "pending|NULL|NULL|NULL|0|0|NULL|NULL\n");

	/* Removal of an instance never seen. */
	mk_app_event(&ev, EVENT_APP_REMOVED, "inst-B");
	ck_assert_int_eq(apply1(st, &ev, "r3"), STORE_APPLIED);
	event_cleanup(&ev);
	ck_assert_rows(db, "SELECT backfill, installed_at, removed_at IS NOT"
	    " NULL, app_id FROM instances WHERE instance_id = 'inst-B'",
	    "pending|NULL|1|app-1\n");
	ck_assert_rows(db, "SELECT event_id, event_type, outcome FROM"
	    " webhook_events ORDER BY event_id",
	    "i1|AppInstalled|applied\ni2|AppInstalled|applied\n"
	    "r1|AppRemoved|applied\nr2|AppRemoved|duplicate\n"
	    "r3|AppRemoved|applied\n");
	expect_counts(st, 0, 5, 0, 0, 2);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_ignored)
{
	char *path = test_db(NULL);
	struct store *st;
	struct event ev;
	sqlite3 *db;

	st = open_store(path, false);
	memset(&ev, 0, sizeof(ev));
	ev.kind = EVENT_IGNORED;
	ev.event_type = xstrdup("wix.ecom.v1.order_created");
	ev.instance_id = xstrdup("inst-1");
	ev.entity_id = xstrdup("o-1");
	ck_assert_int_eq(apply1(st, &ev, "x1"), STORE_IGNORED);
	ck_assert_int_eq(apply1(st, &ev, "x1"), STORE_DUPLICATE);
	event_cleanup(&ev);
	expect_counts(st, 0, 1, 0, 0, 0);
	db = raw_open(path);
	ck_assert_rows(db, "SELECT event_id, event_type, instance_id,"
	    " entity_id, outcome, event_time, event_seq FROM webhook_events",
	    "x1|wix.ecom.v1.order_created|inst-1|o-1|ignored|NULL|NULL\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_rollback)
{
	char *path = test_db(NULL);
	struct store *st;
	struct store_refund_row row;
	struct event ev, app;
	struct refund r;
	enum store_outcome o;
	sqlite3 *db;

	st = open_store(path, false);
	/* Safe without a transaction; commit and apply need one. */
	store_rollback(st);
	ck_assert_int_eq(store_commit(st), RS_ERR_INTERNAL);
	mk_refund_event(&ev, "e1", "inst-1", 1, "r1", "PENDING", 1, NULL);
	ck_assert_int_eq(store_apply_event(st, &ev, "e1", &o),
	    RS_ERR_INTERNAL);
	ck_assert_int_eq(store_apply_refund(st, &ev.refund, NULL, false, 0,
	    "cli", &o), RS_ERR_INTERNAL);
	ck_assert_int_eq(store_probe(st), RS_OK);

	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_begin(st), RS_ERR_INTERNAL);
	ck_assert_int_eq(store_probe(st), RS_ERR_INTERNAL);
	ck_assert_int_eq(store_apply_event(st, &ev, "e1", &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	mk_refund(&r, "r2", "SUCCEEDED", 1, "3.00", "EUR", NULL, NULL);
	ck_assert_int_eq(store_apply_refund(st, &r, NULL, false, 0,
	    "reconcile", &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	mk_app_event(&app, EVENT_APP_INSTALLED, "inst-9");
	ck_assert_int_eq(store_apply_event(st, &app, "i9", &o), RS_OK);
	expect_counts(st, 2, 2, 2, 2, 1);
	store_rollback(st);
	store_rollback(st);

	expect_counts(st, 0, 0, 0, 0, 0);
	ck_assert_int_eq(store_refund_get(st, "r1", &row), RS_ERR_NOTFOUND);
	db = raw_open(path);
	ck_assert_int_eq(raw_int(db, "SELECT (SELECT count(*) FROM refunds)"
	    " + (SELECT count(*) FROM changes) + (SELECT count(*) FROM"
	    " webhook_events) + (SELECT count(*) FROM instances)"), 0);
	sqlite3_close(db);

	/* The change-log sequence was not used up either... */
	ck_assert_int_eq(apply1(st, &ev, "e1"), STORE_APPLIED);
	expect_counts(st, 1, 1, 1, 1, 0);
	event_cleanup(&app);
	event_cleanup(&ev);
	refund_cleanup(&r);
	store_close(st);
	free(path);
}
END_TEST

/* A failure inside one event's savepoint leaves nothing of that event,
 * and the transaction goes on. */
START_TEST(test_savepoint)
{
	char *path = test_db(NULL);
	struct store *st;
	struct event ev;
	struct refund r;
	enum store_outcome o;
	void *ctx;
	sqlite3 *db;

	st = open_store(path, false);
	ctx = sqlite_ctx(st);

	ck_assert_int_eq(store_begin(st), RS_OK);
	mk_refund_event(&ev, "e1", "inst-1", 1, "r1", "PENDING", 1, NULL);
	ck_assert_int_eq(store_apply_event(st, &ev, "e1", &o), RS_OK);
	event_cleanup(&ev);
	/* store.c refuses a source it does not know ... */
	mk_refund(&r, "r2", "SUCCEEDED", 1, "3.00", "EUR", NULL, NULL);
	o = STORE_IGNORED;
	ck_assert_int_eq(store_apply_refund(st, &r, NULL, false, 0, "bogus",
	    &o), RS_ERR_INPUT);
	ck_assert_int_eq(store_apply_refund(st, &r, NULL, false, 0, NULL,
	    &o), RS_ERR_INPUT);
	/* ... and past it, the schema does: a constraint is bad input. */
	ck_assert_int_eq(store_sqlite_ops.apply_refund(ctx, &r, NULL, false,
	    0, "bogus", &o), RS_ERR_INPUT);
	ck_assert_int_eq(o, STORE_IGNORED);
	/* An event without a key, or a refund without an id. */
	mk_refund_event(&ev, "e2", "inst-1", 2, "r1", "FAILED", 2, NULL);
	ck_assert_int_eq(store_apply_event(st, &ev, NULL, &o), RS_ERR_INPUT);
	ck_assert_int_eq(store_apply_event(st, &ev, "", &o), RS_ERR_INPUT);
	/* A failure after the refund and its change were written (the
	 * event row violates NOT NULL): the savepoint undoes them. */
	free(ev.event_type);
	ev.event_type = NULL;
	ck_assert_int_eq(store_sqlite_ops.apply_event(ctx, &ev, "e2", &o),
	    RS_ERR_INPUT);
	ck_assert_int_eq(o, STORE_IGNORED);
	ev.event_type = xstrdup(EVENT_TYPE_REFUND_UPDATED);
	free(ev.refund.id);
	ev.refund.id = NULL;
	ck_assert_int_eq(store_apply_event(st, &ev, "e2", &o), RS_ERR_INPUT);
	event_cleanup(&ev);
	refund_cleanup(&r);
	ck_assert_int_eq(store_commit(st), RS_OK);

	expect_counts(st, 1, 1, 1, 1, 0);
	db = raw_open(path);
	ck_assert_rows(db, "SELECT id, status FROM refunds", "r1|PENDING\n");
	ck_assert_rows(db, "SELECT seq, status FROM changes", "1|PENDING\n");
	ck_assert_rows(db, "SELECT event_id FROM webhook_events", "e1\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/*
 * In an open transaction: e1 (refund r1) is applied, then e2 (refund
 * r2) fails after its refund and change were written, when its event
 * row violates NOT NULL (the backend called directly, past store.c's
 * checks).
 */
static void
apply_good_then_failing(struct store *st, void *ctx)
{
	struct event ev;
	enum store_outcome o;

	mk_refund_event(&ev, "e1", "inst-1", 1, "r1", "PENDING", 1, NULL);
	ck_assert_int_eq(store_apply_event(st, &ev, "e1", &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	event_cleanup(&ev);
	mk_refund_event(&ev, "e2", "inst-1", 1, "r2", "PENDING", 1, NULL);
	free(ev.event_type);
	ev.event_type = NULL;
	ck_assert_int_eq(store_sqlite_ops.apply_event(ctx, &ev, "e2", &o),
	    RS_ERR_INPUT);
	event_cleanup(&ev);
}

/* A batch transaction skips the savepoints: a failed event leaves its
 * work behind until the caller rolls back; the next store_begin()
 * isolates again. */
START_TEST(test_batch_txn)
{
	char *path = test_db(NULL);
	struct store *st;
	struct event ev;
	enum store_outcome o;
	void *ctx;
	sqlite3 *db;

	st = open_store(path, false);
	ctx = sqlite_ctx(st);

	/* In a batch, e2's refund and change stay until the rollback. */
	ck_assert_int_eq(store_begin_batch(st), RS_OK);
	apply_good_then_failing(st, ctx);
	expect_counts(st, 2, 1, 2, 2, 0);	/* no savepoint undid r2 */
	store_rollback(st);
	expect_counts(st, 0, 0, 0, 0, 0);

	/* The same events, isolated: e2 fails alone. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	apply_good_then_failing(st, ctx);
	expect_counts(st, 1, 1, 1, 1, 0);
	ck_assert_int_eq(store_commit(st), RS_OK);

	/* A batch that succeeds commits like any transaction. */
	ck_assert_int_eq(store_begin_batch(st), RS_OK);
	mk_refund_event(&ev, "e3", "inst-1", 2, "r1", "SUCCEEDED", 2, NULL);
	ck_assert_int_eq(store_apply_event(st, &ev, "e3", &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	ck_assert_int_eq(store_apply_event(st, &ev, "e3", &o), RS_OK);
	ck_assert_int_eq(o, STORE_DUPLICATE);
	event_cleanup(&ev);
	ck_assert_int_eq(store_commit(st), RS_OK);
	store_close(st);

	db = raw_open(path);
	ck_assert_rows(db, "SELECT id, status FROM refunds",
	    "r1|SUCCEEDED\n");
	ck_assert_rows(db, "SELECT seq, status FROM changes",
	    "1|PENDING\n2|SUCCEEDED\n");
	ck_assert_rows(db, "SELECT event_id, outcome FROM webhook_events"
	    " ORDER BY event_id", "e1|applied\ne3|applied\n");
	sqlite3_close(db);
	free(path);
}
END_TEST

/* What the ingest writer's done() callbacks saw. */
struct redo_seen {
	pthread_mutex_t	 mtx;
	pthread_cond_t	 cond;
	int		 done;
};

static void
redo_done(struct ingest_job *job, void *arg)
{
	struct redo_seen *rs = arg;

	(void)job;
	pthread_mutex_lock(&rs->mtx);
	rs->done++;
	pthread_cond_signal(&rs->cond);
	pthread_mutex_unlock(&rs->mtx);
}

/*
 * The ingest writer applies a batch without savepoints; when one event
 * fails on its own it rolls back and applies the batch again, isolated:
 * the failed event gets its error, the others are kept, and nothing of
 * the failed one remains.
 */
START_TEST(test_ingest_batch_redo)
{
	static const char *ids[] = { "r1", "r2", "bad", "r4" };
	struct store_options opt = { .busy_timeout_ms = 10000 };
	struct ingest_job jobs[4];
	struct redo_seen rs;
	struct ingest *in = NULL;
	struct store *st = NULL;
	char *path = test_db(NULL), *why = NULL;
	sqlite3 *db;
	size_t i;

	memset(jobs, 0, sizeof(jobs));
	pthread_mutex_init(&rs.mtx, NULL);
	pthread_cond_init(&rs.cond, NULL);
	rs.done = 0;
	ck_assert_int_eq(store_open(path, &opt, &st, &why), RS_OK);
	db = raw_open(path);
	/* The change of refund "bad" fails after its refund row was
	 * written: in a batch, something to undo. */
	raw_exec(db, "CREATE TRIGGER no_bad BEFORE INSERT ON changes"
	    " WHEN NEW.refund_id = 'bad'"
	    " BEGIN SELECT RAISE(ABORT, 'no bad'); END");
	metrics_reset();
	ck_assert_int_eq(ingest_start(st, 64, &in), RS_OK);
	for (i = 0; i < 4; i++) {
		char key[16];

		(void)snprintf(key, sizeof(key), "e%zu", i + 1);
		mk_refund_event(&jobs[i].ev, key, "inst-1", 1, ids[i],
		    "PENDING", 1, NULL);
		jobs[i].key = xstrdup(key);
		jobs[i].done = redo_done;
		jobs[i].arg = &rs;
	}
	/* Hold the write lock so the last three queue up behind the
	 * first and go in one batch. */
	raw_exec(db, "BEGIN IMMEDIATE");
	ck_assert_int_eq(ingest_submit(in, &jobs[0]), RS_OK);
	tu_sleep_ms(200);
	for (i = 1; i < 4; i++)
		ck_assert_int_eq(ingest_submit(in, &jobs[i]), RS_OK);
	tu_sleep_ms(100);
	raw_exec(db, "COMMIT");
	pthread_mutex_lock(&rs.mtx);
	while (rs.done < 4)
		pthread_cond_wait(&rs.cond, &rs.mtx);
	pthread_mutex_unlock(&rs.mtx);

	for (i = 0; i < 4; i++) {
		if (i == 2) {
			ck_assert_int_eq(jobs[i].status, RS_ERR_INPUT);
			continue;
		}
		ck_assert_int_eq(jobs[i].status, RS_OK);
		ck_assert_int_eq(jobs[i].outcome, STORE_APPLIED);
	}
	ck_assert_int_eq(metrics_get("refundsync_batch_redos_total", ""), 1);
	ingest_stop(in);
	for (i = 0; i < 4; i++)
		ingest_job_cleanup(&jobs[i]);
	ck_assert_rows(db, "SELECT id FROM refunds ORDER BY id",
	    "r1\nr2\nr4\n");
	ck_assert_rows(db, "SELECT refund_id FROM changes ORDER BY seq",
	    "r1\nr2\nr4\n");
	ck_assert_rows(db, "SELECT event_id FROM webhook_events"
	    " ORDER BY event_id", "e1\ne2\ne4\n");
	sqlite3_close(db);
	pthread_cond_destroy(&rs.cond);
	pthread_mutex_destroy(&rs.mtx);
	free(path);
}
END_TEST

struct walk {
	char	*seen;
	int	 calls;
	int	 stop_after;	/* return RS_ERR_STOPPING after so many */
	struct store *st;	/* walk again inside, if set */
};

static enum rs_status
walk_fn(void *arg, const struct store_refund_row *row)
{
	struct walk *w = arg;
	struct walk inner;
	char *t;

	t = xasprintf("%s%s/%s/%s ", w->seen, row->refund.id,
	    row->instance_id != NULL ? row->instance_id : "-",
	    row->refund.status);
	free(w->seen);
	w->seen = t;
	w->calls++;
	if (w->st != NULL) {
		memset(&inner, 0, sizeof(inner));
		inner.seen = xstrdup("");
		ck_assert_int_eq(store_refund_foreach(w->st, NULL, NULL,
		    walk_fn, &inner), RS_OK);
		ck_assert_int_eq(inner.calls, 5);
		free(inner.seen);
	}
	if (w->stop_after > 0 && w->calls >= w->stop_after)
		return RS_ERR_STOPPING;
	return RS_OK;
}

static void
expect_walk(struct store *st, const char *instance, const char *status,
    const char *want)
{
	struct walk w;

	memset(&w, 0, sizeof(w));
	w.seen = xstrdup("");
	ck_assert_int_eq(store_refund_foreach(st, instance, status, walk_fn,
	    &w), RS_OK);
	ck_assert_str_eq(w.seen, want);
	free(w.seen);
}

START_TEST(test_foreach)
{
	static const struct {
		const char	*id;
		const char	*inst;	/* NULL: none */
		const char	*status;
		const char	*created;
	} c[] = {
		{ "r5", "A", "SUCCEEDED", "2024-05-03T00:00:00Z" },
		{ "r1", "A", "PENDING", "2024-05-01T00:00:00Z" },
		{ "r3", "B", "SUCCEEDED", "2024-05-02T00:00:00Z" },
		{ "r2", NULL, "SUCCEEDED", "2024-05-02T00:00:00Z" },
		{ "r4", "B", "FAILED", NULL }
	};
	char *path = test_db(NULL);
	struct store *st;
	struct refund r;
	struct walk w;
	enum store_outcome o;
	size_t i;

	st = open_store(path, false);
	expect_walk(st, NULL, NULL, "");
	ck_assert_int_eq(store_begin(st), RS_OK);
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		mk_refund(&r, c[i].id, c[i].status, 1, "1.00", "USD",
		    c[i].created, NULL);
		ck_assert_int_eq(store_apply_refund(st, &r, c[i].inst, false,
		    0, "backfill", &o), RS_OK);
		ck_assert_int_eq(o, STORE_APPLIED);
		refund_cleanup(&r);
	}
	ck_assert_int_eq(store_commit(st), RS_OK);

	/* By created_date (no date first), then id. */
	expect_walk(st, NULL, NULL,
	    "r4/B/FAILED r1/A/PENDING r2/-/SUCCEEDED r3/B/SUCCEEDED "
	    "r5/A/SUCCEEDED ");
	expect_walk(st, "A", NULL, "r1/A/PENDING r5/A/SUCCEEDED ");
	expect_walk(st, NULL, "SUCCEEDED",
	    "r2/-/SUCCEEDED r3/B/SUCCEEDED r5/A/SUCCEEDED ");
	expect_walk(st, "B", "SUCCEEDED", "r3/B/SUCCEEDED ");
	expect_walk(st, "B", "PENDING", "");
	expect_walk(st, "nope", NULL, "");

	/* fn's error stops the walk and comes back. */
	memset(&w, 0, sizeof(w));
	w.seen = xstrdup("");
	w.stop_after = 2;
	ck_assert_int_eq(store_refund_foreach(st, NULL, NULL, walk_fn, &w),
	    RS_ERR_STOPPING);
	ck_assert_int_eq(w.calls, 2);
	ck_assert_str_eq(w.seen, "r4/B/FAILED r1/A/PENDING ");
	free(w.seen);

	/* fn may walk the store again. */
	memset(&w, 0, sizeof(w));
	w.seen = xstrdup("");
	w.st = st;
	ck_assert_int_eq(store_refund_foreach(st, NULL, NULL, walk_fn, &w),
	    RS_OK);
	ck_assert_int_eq(w.calls, 5);
	free(w.seen);

	/* And the cached statement is usable afterwards. */
	expect_walk(st, "A", NULL, "r1/A/PENDING r5/A/SUCCEEDED ");
	store_close(st);
	free(path);
}
END_TEST

/* A stored body that no longer parses: the row still reads, from the
 * columns. */
START_TEST(test_bad_body)
{
	char *path = test_db(NULL);
	struct store *st;
	struct store_refund_row row;
	sqlite3 *db;

	st = open_store(path, false);
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 4, "r1",
	    "SUCCEEDED", 7, "2024-05-01T10:05:00Z"), STORE_APPLIED);
	db = raw_open(path);
	raw_exec(db, "UPDATE refunds SET body = '{\"id\":'");
	sqlite3_close(db);
	ck_assert_int_eq(store_refund_get(st, "r1", &row), RS_OK);
	ck_assert_str_eq(row.refund.id, "r1");
	ck_assert_str_eq(row.refund.charge_id, "ch-r1");
	ck_assert_str_eq(row.refund.currency, "USD");
	ck_assert_str_eq(row.refund.amount, "12.95");
	ck_assert(row.refund.amount_exact);
	ck_assert_int_eq(row.refund.amount_minor, 1295);
	ck_assert_str_eq(row.refund.status, "SUCCEEDED");
	ck_assert(row.refund.has_revision);
	ck_assert_int_eq(row.refund.revision, 7);
	ck_assert_str_eq(row.refund.created_date, "2024-05-01T10:00:00Z");
	ck_assert_str_eq(row.refund.updated_date, "2024-05-01T10:05:00Z");
	ck_assert_str_eq(row.refund.body, "{\"id\":");
	ck_assert_str_eq(row.instance_id, "inst-1");
	ck_assert(row.has_sequence);
	ck_assert_int_eq(row.sequence, 4);
	store_refund_row_cleanup(&row);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_probe)
{
	char *path = test_db(NULL), *v;
	struct store *st;
	sqlite3 *db;

	st = open_store(path, false);
	ck_assert_int_eq(store_probe(st), RS_OK);
	ck_assert_int_eq(store_probe(st), RS_OK);
	db = raw_open(path);
	v = raw_text(db, "SELECT value FROM meta WHERE key = 'probe'");
	ck_assert_msg(is_iso_ms(v), "probe value %s", v);
	free(v);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM meta"), 1);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_busy)
{
	char *path = test_db(NULL);
	struct store *st;
	struct event ev;
	enum store_outcome o;
	int64_t t0, dt;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	raw_exec(db, "BEGIN IMMEDIATE");

	t0 = clock_mono_ms();
	ck_assert_int_eq(store_begin(st), RS_ERR_BUSY);
	dt = clock_mono_ms() - t0;
	ck_assert_msg(dt >= BUSY_MS - 10 && dt < 5000,
	    "waited %jd ms for a %d ms busy_timeout", (intmax_t)dt, BUSY_MS);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	ck_assert_int_eq(store_probe(st), RS_ERR_BUSY);
	/* Reading still works while another holds the write lock. */
	expect_counts(st, 0, 0, 0, 0, 0);

	raw_exec(db, "COMMIT");
	ck_assert_int_eq(store_probe(st), RS_OK);
	mk_refund_event(&ev, "e1", "inst-1", 1, "r1", "PENDING", 1, NULL);
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_event(st, &ev, "e1", &o), RS_OK);
	ck_assert_int_eq(store_commit(st), RS_OK);
	event_cleanup(&ev);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds"), 1);

	/* The other way round: the store holds the lock, the other
	 * writer waits and fails. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	sqlite3_busy_timeout(db, 50);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL,
	    NULL), SQLITE_BUSY);
	store_rollback(st);
	raw_exec(db, "BEGIN IMMEDIATE");
	raw_exec(db, "ROLLBACK");

	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* Disk full (simulated with max_page_count): RS_ERR_BUSY, nothing of the
 * event stays, and once there is room again the same event goes in. */
START_TEST(test_disk_full)
{
	char *path = test_db(NULL), *note, *text, *sql;
	const char *why = NULL;
	struct store *st;
	struct event ev;
	enum store_outcome o;
	enum rs_status rc;
	cJSON *json = NULL;
	sqlite3 *own;
	int64_t pages;

	st = open_store(path, false);
	own = store_sqlite_handle(st);
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 1, "r1",
	    "PENDING", 1, NULL), STORE_APPLIED);

	mk_refund_event(&ev, "e2", "inst-1", 2, "r1", "SUCCEEDED", 2, NULL);
	refund_cleanup(&ev.refund);
	note = xmalloc(200001);
	memset(note, 'n', 200000);
	note[200000] = '\0';
	text = xasprintf("{\"id\":\"r1\",\"revision\":\"2\","
	    "\"chargeId\":\"ch-r1\",\"currencyCode\":\"USD\","
	    "\"amount\":\"12.95\",\"status\":\"SUCCEEDED\","
	    "\"note\":\"%s\"}", note);
	ck_assert_int_eq(json_parse_strict(text, strlen(text), JSON_MAX_DEPTH,
	    &json, &why), RS_OK);
	ck_assert_int_eq(refund_from_json(json, &ev.refund, &why), RS_OK);
	cJSON_Delete(json);

	pages = raw_int(own, "PRAGMA page_count");
	sql = xasprintf("PRAGMA max_page_count = %jd", (intmax_t)pages);
	ck_assert_int_eq(raw_int(own, sql), pages);
	free(sql);
	ck_assert_int_eq(store_begin(st), RS_OK);
	rc = store_apply_event(st, &ev, "e2", &o);
	ck_assert_int_eq(rc, RS_ERR_BUSY);
	store_rollback(st);
	ck_assert_int_eq(sqlite3_get_autocommit(own), 1);
	expect_counts(st, 1, 1, 1, 1, 0);

	ck_assert_int_eq(raw_int(own, "PRAGMA max_page_count = 1000000"),
	    1000000);
	ck_assert_int_eq(apply1(st, &ev, "e2"), STORE_APPLIED);
	expect_counts(st, 1, 2, 2, 2, 0);
	event_cleanup(&ev);
	free(text);
	free(note);
	store_close(st);
	free(path);
}
END_TEST

START_TEST(test_readonly)
{
	char *path = test_db(NULL);
	struct store_options opt = { .busy_timeout_ms = BUSY_MS };
	struct store *st, *ro = NULL;
	struct store_refund_row row;
	struct event ev;
	enum store_outcome o;
	char *why = NULL;
	enum rs_status rc;

	st = open_store(path, false);
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 1, "r1",
	    "PENDING", 1, NULL), STORE_APPLIED);

	/* A read-only open: reads work, writes are RS_ERR_BUSY. */
	ro = open_store(path, true);
	ck_assert_int_eq(store_refund_get(ro, "r1", &row), RS_OK);
	store_refund_row_cleanup(&row);
	ck_assert_int_eq(store_probe(ro), RS_ERR_BUSY);
	mk_refund_event(&ev, "e2", "inst-1", 2, "r1", "SUCCEEDED", 2, NULL);
	ck_assert_int_eq(store_begin(ro), RS_ERR_BUSY);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(ro)), 1);
	/* Past store_begin, the database itself refuses. */
	ck_assert_int_eq(sqlite3_exec(store_sqlite_handle(ro),
	    "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(store_apply_event(ro, &ev, "e2", &o), RS_ERR_BUSY);
	store_rollback(ro);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(ro)), 1);
	expect_counts(ro, 1, 1, 1, 1, 0);
	store_close(ro);

	/* The writer is unaffected. */
	ck_assert_int_eq(apply1(st, &ev, "e2"), STORE_APPLIED);
	event_cleanup(&ev);
	store_close(st);

	/* A file the process cannot write.  root writes anyway. */
	if (geteuid() == 0) {
		printf("check_store: test_readonly: running as root, where "
		    "chmod 0444 does not stop writes: file-mode cases "
		    "skipped (the read-only open above covers the error "
		    "path)\n");
	} else {
		/* The file alone: SQLite opens it read-only, and every
		 * write is RS_ERR_BUSY. */
		ck_assert_int_eq(chmod(path, 0444), 0);
		st = NULL;
		rc = store_open(path, &opt, &st, &why);
		ck_assert_msg(rc == RS_OK, "open: %s", why);
		ck_assert_int_eq(store_probe(st), RS_ERR_BUSY);
		mk_refund_event(&ev, "e3", "inst-1", 3, "r1", "FAILED", 3,
		    NULL);
		ck_assert_int_eq(store_begin(st), RS_ERR_BUSY);
		event_cleanup(&ev);
		ck_assert_int_eq(store_refund_get(st, "r1", &row), RS_OK);
		ck_assert_str_eq(row.refund.status, "SUCCEEDED");
		store_refund_row_cleanup(&row);
		store_close(st);

		ck_assert_int_eq(chmod(path, 0644), 0);
	}
	free(path);
}
END_TEST

START_TEST(test_open_errors)
{
	char *dir = NULL, *path = test_db(&dir), *p2;
	struct store_options opt = { .busy_timeout_ms = BUSY_MS };
	struct store *st = NULL;
	char *why = NULL;
	sqlite3 *db;

	/* A database from a newer program is refused, with a message. */
	st = open_store(path, false);
	store_close(st);
	db = raw_open(path);
	raw_exec(db, "PRAGMA user_version = 6");
	sqlite3_close(db);
	st = NULL;
	ck_assert_int_eq(store_open(path, &opt, &st, &why), RS_ERR_IO);
	ck_assert_ptr_null(st);
	ck_assert_ptr_nonnull(why);
	ck_assert_msg(strstr(why, "schema version 6 is newer than this "
	    "program knows (5)") != NULL, "why: %s", why);
	ck_assert_ptr_nonnull(strstr(why, path));
	free(why);
	why = NULL;
	opt.readonly = true;
	ck_assert_int_eq(store_open(path, &opt, &st, &why), RS_ERR_IO);
	ck_assert_ptr_nonnull(strstr(why, "newer"));
	free(why);
	why = NULL;
	/* ... and left as it was. */
	db = raw_open(path);
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), 6);
	sqlite3_close(db);

	/* Read-only: no database, or one not yet migrated. */
	p2 = xasprintf("%s/absent.db", dir);
	ck_assert_int_eq(store_open(p2, &opt, &st, &why), RS_ERR_IO);
	ck_assert_ptr_nonnull(why);
	ck_assert_int_eq(access(p2, F_OK), -1);
	free(why);
	why = NULL;
	db = NULL;
	ck_assert_int_eq(sqlite3_open(p2, &db), SQLITE_OK);
	raw_exec(db, "CREATE TABLE x (y)");
	sqlite3_close(db);
	ck_assert_int_eq(store_open(p2, &opt, &st, &why), RS_ERR_IO);
	ck_assert_msg(strstr(why, "schema version 0, this program needs 5")
	    != NULL, "why: %s", why);
	free(why);
	why = NULL;
	free(p2);

	/* Not a database at all; a directory that does not exist. */
	opt.readonly = false;
	p2 = xasprintf("%s/garbage.db", dir);
	{
		FILE *f = fopen(p2, "w");

		ck_assert_ptr_nonnull(f);
		fputs("this is not an SQLite database, not at all........"
		    "..................................................",
		    f);
		ck_assert_int_eq(fclose(f), 0);
	}
	ck_assert_int_eq(store_open(p2, &opt, &st, &why), RS_ERR_IO);
	ck_assert_ptr_nonnull(why);
	free(why);
	why = NULL;
	free(p2);
	p2 = xasprintf("%s/no/such/dir/x.db", dir);
	ck_assert_int_eq(store_open(p2, &opt, &st, &why), RS_ERR_IO);
	ck_assert_ptr_nonnull(strstr(why, p2));
	free(why);
	why = NULL;
	free(p2);
	ck_assert_int_eq(store_open("", &opt, &st, &why), RS_ERR_CONFIG);
	free(why);
	ck_assert_ptr_null(st);
	free(dir);
	free(path);
}
END_TEST

/* ---- can it write? ----------------------------------------------------- */

/*
 * Make path refuse writes (on) or take them again (off).  root ignores
 * the mode bits, so as root this is the immutable attribute, which only
 * some file systems have (ext4, xfs, btrfs; not tmpfs); otherwise mode
 * 0444 (0555 for a directory).  Returns the strerror() text a write
 * then meets, or NULL if this cannot be done here.
 */
static const char *
deny_writes(const char *path, bool on)
{
	struct stat sb;
	int fd, flags;
	bool ok = false;

	if (geteuid() != 0) {
		if (stat(path, &sb) == -1)
			return NULL;
		if (chmod(path, S_ISDIR(sb.st_mode) ? (on ? 0555 : 0755) :
		    (on ? 0444 : 0644)) == -1)
			return NULL;
		return strerror(EACCES);
	}
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) == -1)
		return NULL;
	if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
		if (on)
			flags |= FS_IMMUTABLE_FL;
		else
			flags &= ~FS_IMMUTABLE_FL;
		ok = ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
	}
	close(fd);
	return ok ? strerror(EPERM) : NULL;
}

/* A store that can write, a read-only open, a lock held elsewhere and
 * an open transaction. */
START_TEST(test_writable)
{
	char *path = test_db(NULL), *why = (char *)"unset";
	struct store_options opt = { .busy_timeout_ms = 3000 };
	struct store *st, *ro;
	sqlite3 *db;
	int64_t t0, dt;

	st = open_store(path, false);
	ck_assert_int_eq(store_writable(st, &why), RS_OK);
	ck_assert_ptr_null(why);
	/* It wrote nothing and holds no transaction. */
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	expect_counts(st, 0, 0, 0, 0, 0);

	ro = open_store(path, true);
	ck_assert_int_eq(store_writable(ro, &why), RS_ERR_BUSY);
	ck_assert_ptr_nonnull(why);
	ck_assert_msg(strstr(why, path) != NULL &&
	    strstr(why, "opened read-only") != NULL, "why: %s", why);
	free(why);
	store_close(ro);

	/* Another connection holds the write lock: not a "no", and no
	 * wait for busy_timeout (3 s here). */
	store_close(st);
	st = NULL;
	ck_assert_int_eq(store_open(path, &opt, &st, &why), RS_OK);
	db = raw_open(path);
	raw_exec(db, "BEGIN IMMEDIATE");
	t0 = clock_mono_ms();
	ck_assert_int_eq(store_writable(st, &why), RS_OK);
	dt = clock_mono_ms() - t0;
	ck_assert_msg(dt < 1000, "waited %jd ms", (intmax_t)dt);
	ck_assert_ptr_null(why);
	raw_exec(db, "ROLLBACK");
	sqlite3_close(db);

	/* Inside a transaction: a misuse. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_writable(st, &why), RS_ERR_INTERNAL);
	ck_assert_ptr_null(why);
	store_rollback(st);
	store_close(st);
	free(path);
}
END_TEST

/*
 * The database file, then its -wal file, cannot be written: SQLite opens
 * it all the same, for reading, and store_writable() says no, naming
 * the file.  Such a connection stays unable to write once the file can
 * be written again; a new one can.
 */
START_TEST(test_writable_denied)
{
	char *path = test_db(NULL), *wal = xasprintf("%s-wal", path), *why;
	char *want;
	struct store_options opt = { .busy_timeout_ms = BUSY_MS };
	struct store *st = NULL, *again = NULL;
	struct store_refund_row row;
	enum rs_status rc_open, rc_w, rc_after, rc_new;
	const char *errtext;
	int fd;

	st = open_store(path, false);
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 1, "r1",
	    "PENDING", 1, NULL), STORE_APPLIED);
	store_close(st);
	st = NULL;

	if ((errtext = deny_writes(path, true)) == NULL) {
		printf("check_store: test_writable_denied: cannot make %s "
		    "read-only here (%s): skipped\n", path, geteuid() == 0 ?
		    "no immutable flag on this file system" : "chmod");
		free(wal);
		free(path);
		return;
	}
	why = NULL;
	rc_open = store_open(path, &opt, &st, &why);
	rc_w = st != NULL ? store_writable(st, &why) : RS_ERR_INTERNAL;
	ck_assert_ptr_nonnull(deny_writes(path, false));
	ck_assert_int_eq(rc_open, RS_OK);
	ck_assert_int_eq(rc_w, RS_ERR_BUSY);
	want = xasprintf("%s: %s", path, errtext);
	ck_assert_msg(why != NULL && strcmp(why, want) == 0, "why: %s, want "
	    "%s", why != NULL ? why : "(null)", want);
	free(want);
	free(why);
	why = NULL;
	/* It reads. */
	ck_assert_int_eq(store_refund_get(st, "r1", &row), RS_OK);
	store_refund_row_cleanup(&row);
	/* The file can be written again; this connection still cannot. */
	ck_assert_int_eq(store_writable(st, &why), RS_ERR_BUSY);
	free(why);
	why = NULL;
	ck_assert_int_eq(store_probe(st), RS_ERR_BUSY);
	store_close(st);
	st = open_store(path, false);
	if (geteuid() != 0) {
		/* Not root: the connection that could only read created
		 * the -wal and -shm files with the database's mode, 0444,
		 * as any reader of it does; they refuse writes too until
		 * they are made writable. */
		ck_assert_int_eq(store_writable(st, &why), RS_ERR_BUSY);
		ck_assert_msg(why != NULL && strstr(why, path) != NULL &&
		    strstr(why, "Permission denied") != NULL, "why: %s",
		    why != NULL ? why : "(null)");
		free(why);
		why = NULL;
		store_close(st);
		want = xasprintf("%s-shm", path);
		ck_assert_int_eq(chmod(want, 0644), 0);
		free(want);
		ck_assert_int_eq(chmod(wal, 0644), 0);
		st = open_store(path, false);
	}
	ck_assert_int_eq(store_writable(st, &why), RS_OK);
	ck_assert_int_eq(store_probe(st), RS_OK);
	store_close(st);
	st = NULL;

	/* The -wal file: the main file opens for writing, the WAL only
	 * for reading, which only the write lock shows. */
	fd = open(wal, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_ptr_nonnull(deny_writes(wal, true));
	rc_open = store_open(path, &opt, &st, &why);
	rc_w = st != NULL ? store_writable(st, &why) : RS_ERR_INTERNAL;
	rc_after = RS_ERR_INTERNAL;
	ck_assert_ptr_nonnull(deny_writes(wal, false));
	if (st != NULL) {
		char *w2 = NULL;

		rc_after = store_writable(st, &w2);
		free(w2);
	}
	ck_assert_int_eq(rc_open, RS_OK);
	ck_assert_int_eq(rc_w, RS_ERR_BUSY);
	/* SQLite gives an empty -wal it opened only for reading the mode
	 * of the database when it may (its owner, not immutable), so as
	 * another user than root the file is writable again by the time
	 * it is named: the message is SQLite's. */
	if (geteuid() == 0)
		want = xasprintf("%s: %s", wal, errtext);
	else
		want = xasprintf("%s: attempt to write a readonly database "
		    "(sqlite code 8)", path);
	ck_assert_msg(why != NULL && strcmp(why, want) == 0, "why: %s, want "
	    "%s", why != NULL ? why : "(null)", want);
	free(want);
	free(why);
	why = NULL;
	ck_assert_int_eq(rc_after, RS_ERR_BUSY);
	store_close(st);
	rc_new = store_open(path, &opt, &again, &why);
	ck_assert_int_eq(rc_new, RS_OK);
	ck_assert_int_eq(store_writable(again, &why), RS_OK);
	ck_assert_int_eq(apply_refund_event(again, "e2", "inst-1", 2, "r1",
	    "SUCCEEDED", 2, NULL), STORE_APPLIED);
	store_close(again);
	free(wal);
	free(path);
}
END_TEST

/*
 * A directory that cannot be written: an existing database whose -wal
 * and -shm files are gone (a connection of another program closed it
 * last) cannot be opened (its -wal cannot be created), which may pass:
 * RS_ERR_BUSY; a database that does not exist cannot be created, which
 * will not pass: RS_ERR_IO.  Both messages name the directory.  (With
 * the files our own close leaves, it opens: test_reader_after_close.)
 */
START_TEST(test_open_unwritable_dir)
{
	char *dir = NULL, *path = test_db(&dir), *p2, *want, *side;
	char *why1 = NULL, *why2 = NULL;
	struct store_options opt = { .busy_timeout_ms = BUSY_MS };
	struct store *st, *st2 = NULL;
	enum rs_status rc1, rc2;
	const char *errtext;

	st = open_store(path, false);
	store_close(st);
	st = NULL;
	ck_assert_int_eq(access(path, F_OK), 0);
	side = xasprintf("%s-wal", path);
	ck_assert_int_eq(unlink(side), 0);
	free(side);
	side = xasprintf("%s-shm", path);
	ck_assert_int_eq(unlink(side), 0);
	free(side);
	p2 = xasprintf("%s/absent.db", dir);
	if ((errtext = deny_writes(dir, true)) == NULL) {
		printf("check_store: test_open_unwritable_dir: cannot make "
		    "%s read-only here: skipped\n", dir);
		free(p2);
		free(dir);
		free(path);
		return;
	}
	rc1 = store_open(path, &opt, &st, &why1);
	rc2 = store_open(p2, &opt, &st2, &why2);
	ck_assert_ptr_nonnull(deny_writes(dir, false));
	ck_assert_int_eq(rc1, RS_ERR_BUSY);
	ck_assert_int_eq(rc2, RS_ERR_IO);
	ck_assert_ptr_null(st);
	ck_assert_ptr_null(st2);
	want = xasprintf("%s: %s", dir, errtext);
	ck_assert_msg(why1 != NULL && strstr(why1, path) != NULL &&
	    strstr(why1, want) != NULL, "why: %s", why1 != NULL ? why1 :
	    "(null)");
	ck_assert_msg(why2 != NULL && strstr(why2, p2) != NULL &&
	    strstr(why2, "cannot create it") != NULL &&
	    strstr(why2, want) != NULL, "why: %s", why2 != NULL ? why2 :
	    "(null)");
	ck_assert_int_eq(access(p2, F_OK), -1);
	free(want);
	free(why1);
	free(why2);
	/* Writable again: it opens. */
	st = open_store(path, false);
	ck_assert_int_eq(store_writable(st, &why1), RS_OK);
	ck_assert_ptr_null(why1);
	store_close(st);
	free(p2);
	free(dir);
	free(path);
}
END_TEST

/* ---- instances and the backfill ---------------------------------------- */

/* The columns of one instances row that the backfill drives. */
#define BF_ROW	"SELECT backfill, backfill_cursor, backfill_pages," \
	" backfill_refunds, last_error FROM instances WHERE instance_id = "

/* A page of n refunds "<prefix>-<i>" with revision rev. */
static struct refund *
mk_page(const char *prefix, size_t n, int rev)
{
	struct refund *p = xcalloc(n > 0 ? n : 1, sizeof(*p));
	char id[64], created[32];
	size_t i;

	for (i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "%s-%zu", prefix, i);
		snprintf(created, sizeof(created),
		    "2024-05-01T10:%02u:%02uZ", (unsigned)(i / 60 % 60),
		    (unsigned)(i % 60));
		mk_refund(&p[i], id, "SUCCEEDED", rev, "1.50", "EUR",
		    created, created);
	}
	return p;
}

static void
free_page(struct refund *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		refund_cleanup(&p[i]);
	free(p);
}

START_TEST(test_backfill_names)
{
	ck_assert_str_eq(store_backfill_name(STORE_BACKFILL_PENDING),
	    "pending");
	ck_assert_str_eq(store_backfill_name(STORE_BACKFILL_RUNNING),
	    "running");
	ck_assert_str_eq(store_backfill_name(STORE_BACKFILL_DONE), "done");
	ck_assert_str_eq(store_backfill_name(STORE_BACKFILL_FAILED),
	    "failed");
}
END_TEST

/* ensure, get and foreach. */
START_TEST(test_instance_ensure_get)
{
	char *path = test_db(NULL);
	struct store *st;
	struct store_instance in;
	struct event ev;
	bool created = false;
	sqlite3 *db;

	st = open_store(path, false);
	ck_assert_int_eq(store_instance_get(st, "inst-A", &in),
	    RS_ERR_NOTFOUND);
	ck_assert_int_eq(store_instance_get(st, "", &in), RS_ERR_NOTFOUND);
	ck_assert_int_eq(store_instance_ensure(st, "", NULL), RS_ERR_INPUT);
	ck_assert_int_eq(store_instance_ensure(st, NULL, NULL), RS_ERR_INPUT);

	ck_assert_int_eq(store_instance_ensure(st, "inst-A", &created), RS_OK);
	ck_assert(created);
	ck_assert_int_eq(store_instance_ensure(st, "inst-A", &created), RS_OK);
	ck_assert(!created);
	ck_assert_int_eq(store_instance_ensure(st, "inst-B", NULL), RS_OK);

	memset(&in, 0xa5, sizeof(in));
	ck_assert_int_eq(store_instance_get(st, "inst-A", &in), RS_OK);
	ck_assert_str_eq(in.instance_id, "inst-A");
	ck_assert_ptr_null(in.installed_at);
	ck_assert_ptr_null(in.removed_at);
	ck_assert_int_eq(in.backfill, STORE_BACKFILL_PENDING);
	ck_assert_int_eq(in.backfill_refunds, 0);
	ck_assert_int_eq(in.backfill_pages, 0);
	ck_assert_ptr_null(in.backfill_cursor);
	ck_assert_ptr_null(in.last_error);
	ck_assert_ptr_null(in.backfill_started_at);
	ck_assert_ptr_null(in.backfill_finished_at);
	store_instance_cleanup(&in);
	ck_assert_ptr_null(in.instance_id);
	store_instance_cleanup(NULL);

	/* An AppInstalled for a row made by ensure fills installed_at and
	 * keeps the backfill state. */
	mk_app_event(&ev, EVENT_APP_INSTALLED, "inst-B");
	ck_assert_int_eq(apply1(st, &ev, "inst-B"), STORE_APPLIED);
	event_cleanup(&ev);
	ck_assert_int_eq(store_instance_get(st, "inst-B", &in), RS_OK);
	ck_assert(is_iso_ms(in.installed_at));
	ck_assert_int_eq(in.backfill, STORE_BACKFILL_PENDING);
	store_instance_cleanup(&in);

	/* Ensure in an open transaction is a caller bug. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_instance_ensure(st, "inst-C", NULL),
	    RS_ERR_INTERNAL);
	store_rollback(st);

	db = raw_open(path);
	ck_assert_rows(db, "SELECT instance_id, backfill, installed_at IS NOT"
	    " NULL, updated_at IS NOT NULL FROM instances ORDER BY 1",
	    "inst-A|pending|0|1\ninst-B|pending|1|1\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

struct inst_walk {
	char	*seen;		/* "id:state:pages:refunds:cursor;"... */
	int	 stop_after;	/* stop after this many; 0: never */
	int	 n;
};

static enum rs_status
inst_walk_fn(void *arg, const struct store_instance *in)
{
	struct inst_walk *w = arg;
	char *t;

	t = xasprintf("%s%s:%s:%lld:%lld:%s;", w->seen, in->instance_id,
	    store_backfill_name(in->backfill), (long long)in->backfill_pages,
	    (long long)in->backfill_refunds,
	    in->backfill_cursor != NULL ? in->backfill_cursor : "-");
	free(w->seen);
	w->seen = t;
	if (++w->n == w->stop_after)
		return RS_ERR_STOPPING;
	return RS_OK;
}

START_TEST(test_instance_foreach)
{
	char *path = test_db(NULL);
	struct store *st;
	struct refund *p;
	struct inst_walk w;
	size_t applied = 99;

	st = open_store(path, false);
	memset(&w, 0, sizeof(w));
	w.seen = xstrdup("");
	ck_assert_int_eq(store_instance_foreach(st, inst_walk_fn, &w), RS_OK);
	ck_assert_str_eq(w.seen, "");
	free(w.seen);

	ck_assert_int_eq(store_instance_ensure(st, "i-c", NULL), RS_OK);
	ck_assert_int_eq(store_instance_ensure(st, "i-a", NULL), RS_OK);
	ck_assert_int_eq(store_backfill_start(st, "i-b", false), RS_OK);
	p = mk_page("r", 2, 1);
	ck_assert_int_eq(store_backfill_page(st, "i-b", p, 2, "cur-1",
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 2);
	free_page(p, 2);

	memset(&w, 0, sizeof(w));
	w.seen = xstrdup("");
	ck_assert_int_eq(store_instance_foreach(st, inst_walk_fn, &w), RS_OK);
	ck_assert_str_eq(w.seen, "i-a:pending:0:0:-;i-b:running:1:2:cur-1;"
	    "i-c:pending:0:0:-;");
	free(w.seen);

	/* A callback's status stops the walk and comes back. */
	memset(&w, 0, sizeof(w));
	w.seen = xstrdup("");
	w.stop_after = 2;
	ck_assert_int_eq(store_instance_foreach(st, inst_walk_fn, &w),
	    RS_ERR_STOPPING);
	ck_assert_str_eq(w.seen, "i-a:pending:0:0:-;i-b:running:1:2:cur-1;");
	free(w.seen);
	store_close(st);
	free(path);
}
END_TEST

/* The states and counters through a whole life: start, pages, a failure,
 * a resume, a cursor reset, done, a redo. */
START_TEST(test_backfill_lifecycle)
{
	char *path = test_db(NULL), *t;
	struct store *st;
	struct store_instance in;
	struct refund *p;
	size_t applied = 99;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);

	/* Start creates the row when absent. */
	ck_assert_int_eq(store_backfill_start(st, "inst-1", false), RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|0|0|NULL\n");
	ck_assert_int_eq(store_instance_get(st, "inst-1", &in), RS_OK);
	ck_assert_int_eq(in.backfill, STORE_BACKFILL_RUNNING);
	ck_assert(is_iso_ms(in.backfill_started_at));
	ck_assert_ptr_null(in.backfill_finished_at);
	ck_assert_ptr_null(in.installed_at);
	store_instance_cleanup(&in);

	/* Two pages. */
	p = mk_page("a", 3, 1);
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 3, "c1",
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 3);
	free_page(p, 3);
	p = mk_page("b", 2, 1);
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 2, "c2",
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 2);
	free_page(p, 2);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c2|2|5|NULL\n");
	ck_assert_rows(db, "SELECT id, instance_id, source, status, revision,"
	    " amount, amount_minor, currency FROM refunds ORDER BY id",
	    "a-0|inst-1|backfill|SUCCEEDED|1|1.50|150|EUR\n"
	    "a-1|inst-1|backfill|SUCCEEDED|1|1.50|150|EUR\n"
	    "a-2|inst-1|backfill|SUCCEEDED|1|1.50|150|EUR\n"
	    "b-0|inst-1|backfill|SUCCEEDED|1|1.50|150|EUR\n"
	    "b-1|inst-1|backfill|SUCCEEDED|1|1.50|150|EUR\n");
	ck_assert_rows(db, "SELECT seq, refund_id, source, prev_status"
	    " FROM changes ORDER BY seq",
	    "1|a-0|backfill|NULL\n2|a-1|backfill|NULL\n3|a-2|backfill|NULL\n"
	    "4|b-0|backfill|NULL\n5|b-1|backfill|NULL\n");

	/* The same page again (a restarted run): all stale, no change-log
	 * entry, but the page counts. */
	p = mk_page("b", 2, 1);
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 2, "c3",
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 0);
	free_page(p, 2);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes"), 5);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c3|3|7|NULL\n");

	/* Failure keeps the cursor, so a new run resumes from it. */
	ck_assert_int_eq(store_backfill_finish(st, "inst-1", false,
	    "Query Refunds: 403 forbidden"), RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'",
	    "failed|c3|3|7|Query Refunds: 403 forbidden\n");
	ck_assert_int_eq(store_instance_get(st, "inst-1", &in), RS_OK);
	ck_assert_int_eq(in.backfill, STORE_BACKFILL_FAILED);
	ck_assert(is_iso_ms(in.backfill_finished_at));
	ck_assert_str_eq(in.last_error, "Query Refunds: 403 forbidden");
	store_instance_cleanup(&in);
	ck_assert_int_eq(store_backfill_start(st, "inst-1", false), RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'",
	    "running|c3|3|7|Query Refunds: 403 forbidden\n");
	t = raw_text(db, "SELECT backfill_finished_at FROM instances");
	ck_assert_ptr_null(t);

	/* A rejected cursor starts the run over from the first page. */
	ck_assert_int_eq(store_backfill_reset_cursor(st, "inst-1",
	    "cursor rejected: starting again from the first page"), RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|0|0|cursor "
	    "rejected: starting again from the first page\n");
	p = mk_page("a", 3, 1);
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 3, NULL,
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 0);
	free_page(p, 3);

	/* Done clears the cursor and the error. */
	ck_assert_int_eq(store_backfill_finish(st, "inst-1", true, NULL),
	    RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'", "done|NULL|1|3|NULL\n");
	ck_assert_int_eq(raw_int(db, "SELECT backfill_finished_at >="
	    " backfill_started_at FROM instances"), 1);

	/* Starting a done instance runs it again from the first page. */
	ck_assert_int_eq(store_backfill_start(st, "inst-1", false), RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|0|0|NULL\n");
	p = mk_page("a", 1, 1);
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 1, "x1",
	    &applied), RS_OK);
	free_page(p, 1);
	/* restart resets a running one too. */
	ck_assert_int_eq(store_backfill_start(st, "inst-1", true), RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|0|0|NULL\n");
	/* A failed one with restart as well. */
	ck_assert_int_eq(store_backfill_finish(st, "inst-1", false, "e"),
	    RS_OK);
	ck_assert_int_eq(store_backfill_start(st, "inst-1", true), RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|0|0|NULL\n");

	/* Operations on an instance without a row. */
	p = mk_page("z", 1, 1);
	ck_assert_int_eq(store_backfill_page(st, "ghost", p, 1, "c",
	    &applied), RS_ERR_NOTFOUND);
	free_page(p, 1);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds"
	    " WHERE id = 'z-0'"), 0);
	ck_assert_int_eq(store_backfill_reset_cursor(st, "ghost", NULL),
	    RS_ERR_NOTFOUND);
	ck_assert_int_eq(store_backfill_finish(st, "ghost", true, NULL),
	    RS_ERR_NOTFOUND);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM instances"), 1);
	ck_assert_int_eq(store_backfill_start(st, "", false), RS_ERR_INPUT);
	ck_assert_int_eq(store_backfill_finish(st, NULL, true, NULL),
	    RS_ERR_INPUT);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);

	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* A backfill page never undoes a newer webhook, and a newer backfill
 * version does replace an older webhook one. */
START_TEST(test_backfill_version_rule)
{
	char *path = test_db(NULL);
	struct store *st;
	struct refund p[3];
	size_t applied = 99;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 7, "r1",
	    "REVERSED", 5, "2024-05-03T00:00:00Z"), STORE_APPLIED);
	ck_assert_int_eq(apply_refund_event(st, "e2", "inst-1", 2, "r2",
	    "PENDING", 1, "2024-05-01T00:00:00Z"), STORE_APPLIED);
	ck_assert_int_eq(store_backfill_start(st, "inst-1", false), RS_OK);

	/* r1 older (rev 3), r2 newer (rev 2), r3 new; r1 again with the
	 * same revision as stored (a tie keeps the stored row). */
	mk_refund(&p[0], "r1", "SUCCEEDED", 3, "12.95", "USD",
	    "2024-05-01T10:00:00Z", "2024-05-02T00:00:00Z");
	mk_refund(&p[1], "r2", "SUCCEEDED", 2, "12.95", "USD",
	    "2024-05-01T10:00:00Z", "2024-05-02T00:00:00Z");
	mk_refund(&p[2], "r3", "FAILED", 1, "3", "JPY",
	    "2024-05-01T11:00:00Z", "2024-05-01T11:00:00Z");
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 3, "c1",
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 2);
	refund_cleanup(&p[0]);
	mk_refund(&p[0], "r1", "SUCCEEDED", 5, "12.95", "USD",
	    "2024-05-01T10:00:00Z", "2024-05-09T00:00:00Z");
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 1, "c2",
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 0);
	refund_cleanup(&p[0]);
	refund_cleanup(&p[1]);
	refund_cleanup(&p[2]);

	ck_assert_rows(db, "SELECT id, status, revision, source, event_seq,"
	    " amount_minor FROM refunds ORDER BY id",
	    "r1|REVERSED|5|webhook|7|1295\n"
	    "r2|SUCCEEDED|2|backfill|NULL|1295\n"
	    "r3|FAILED|1|backfill|NULL|3\n");
	ck_assert_rows(db, "SELECT refund_id, status, prev_status, source"
	    " FROM changes ORDER BY seq",
	    "r1|REVERSED|NULL|webhook\nr2|PENDING|NULL|webhook\n"
	    "r2|SUCCEEDED|PENDING|backfill\nr3|FAILED|NULL|backfill\n");
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c2|2|4|NULL\n");
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* A page is all or nothing: a refund the database refuses halfway, a
 * malformed refund, or a lock held past busy_timeout leaves the refunds,
 * the change log and the cursor as they were. */
START_TEST(test_backfill_page_atomic)
{
	char *path = test_db(NULL);
	struct store *st;
	struct refund *p;
	size_t applied = 99;
	char *amount;
	int64_t t0;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	ck_assert_int_eq(store_backfill_start(st, "inst-1", false), RS_OK);
	p = mk_page("ok", 2, 1);
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 2, "c1",
	    &applied), RS_OK);
	free_page(p, 2);

	/* The third of four refunds fails inside the transaction. */
	raw_exec(db, "CREATE TRIGGER no_bad BEFORE INSERT ON refunds"
	    " WHEN NEW.id = 'x-2' BEGIN SELECT RAISE(ABORT, 'refused'); END");
	p = mk_page("x", 4, 1);
	applied = 99;
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 4, "c2",
	    &applied), RS_ERR_INPUT);
	ck_assert_uint_eq(applied, 99);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c1|1|2|NULL\n");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds"), 2);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes"), 2);
	raw_exec(db, "DROP TRIGGER no_bad");

	/* A refund without an amount is refused before any write. */
	amount = p[1].amount;
	p[1].amount = NULL;
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 4, "c2",
	    &applied), RS_ERR_INPUT);
	p[1].amount = amount;
	ck_assert_int_eq(store_backfill_page(st, "inst-1", NULL, 1, "c2",
	    &applied), RS_ERR_INPUT);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c1|1|2|NULL\n");

	/* Locked: busy, nothing kept; then the same page goes in. */
	raw_exec(db, "BEGIN IMMEDIATE");
	t0 = clock_mono_ms();
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 4, "c2",
	    &applied), RS_ERR_BUSY);
	ck_assert_int_ge(clock_mono_ms() - t0, BUSY_MS - 10);
	ck_assert_int_eq(store_backfill_start(st, "inst-1", false),
	    RS_ERR_BUSY);
	ck_assert_int_eq(store_backfill_finish(st, "inst-1", true, NULL),
	    RS_ERR_BUSY);
	raw_exec(db, "ROLLBACK");
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c1|1|2|NULL\n");
	ck_assert_int_eq(store_backfill_page(st, "inst-1", p, 4, "c2",
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 4);
	free_page(p, 4);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c2|2|6|NULL\n");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes"), 6);

	/* An empty last page: no refunds, no cursor. */
	ck_assert_int_eq(store_backfill_page(st, "inst-1", NULL, 0, NULL,
	    &applied), RS_OK);
	ck_assert_uint_eq(applied, 0);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|3|6|NULL\n");

	/* Inside a caller's transaction: refused, the caller's stays. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_backfill_page(st, "inst-1", NULL, 0, "c9",
	    &applied), RS_ERR_INTERNAL);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 0);
	store_rollback(st);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* Set one page of store_backfill_pages(). */
static void
set_bf_page(struct store_bf_page *pg, const struct refund *r, size_t n,
    const char *next)
{
	pg->refunds = r;
	pg->n = n;
	pg->next_cursor = next;
}

/* Several pages in ONE transaction: every refund of every page under the
 * version rule, then the cursor after the last page, the pages and
 * refunds of all, and the applied count of each; all or nothing. */
START_TEST(test_backfill_pages)
{
	char *path = test_db(NULL);
	struct store *st;
	struct store_bf_page pg[3];
	struct refund *a, *b, *c;
	size_t applied[3];
	char *amount;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	/* A webhook stored b-1 at revision 5 already. */
	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-1", 7, "b-1",
	    "REVERSED", 5, "2024-05-03T00:00:00Z"), STORE_APPLIED);
	ck_assert_int_eq(store_backfill_start(st, "inst-1", false), RS_OK);
	a = mk_page("a", 2, 1);
	b = mk_page("b", 3, 1);
	c = mk_page("c", 1, 1);
	set_bf_page(&pg[0], a, 2, "c1");
	set_bf_page(&pg[1], b, 3, "c2");
	set_bf_page(&pg[2], c, 1, "c3");

	/* The last page's refund is refused: nothing of the three stays,
	 * and applied is not written. */
	raw_exec(db, "CREATE TRIGGER no_c BEFORE INSERT ON refunds"
	    " WHEN NEW.id = 'c-0' BEGIN SELECT RAISE(ABORT, 'refused'); END");
	applied[0] = applied[1] = applied[2] = 99;
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 3, applied),
	    RS_ERR_INPUT);
	ck_assert_uint_eq(applied[0], 99);
	ck_assert_uint_eq(applied[2], 99);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|0|0|NULL\n");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds"), 1);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes"), 1);
	raw_exec(db, "DROP TRIGGER no_c");

	/* Refused before any write: a refund of page 2 without an amount,
	 * no pages, no array of pages, refunds without their array, no
	 * instance id; an instance without a row. */
	amount = b[2].amount;
	b[2].amount = NULL;
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 3, applied),
	    RS_ERR_INPUT);
	b[2].amount = amount;
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 0, applied),
	    RS_ERR_INPUT);
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", NULL, 1, applied),
	    RS_ERR_INPUT);
	pg[1].refunds = NULL;
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 3, applied),
	    RS_ERR_INPUT);
	pg[1].refunds = b;
	ck_assert_int_eq(store_backfill_pages(st, "", pg, 3, applied),
	    RS_ERR_INPUT);
	ck_assert_int_eq(store_backfill_pages(st, "ghost", pg, 3, applied),
	    RS_ERR_NOTFOUND);
	ck_assert_uint_eq(applied[0], 99);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds"), 1);

	/* Locked past busy_timeout: busy, nothing kept. */
	raw_exec(db, "BEGIN IMMEDIATE");
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 3, applied),
	    RS_ERR_BUSY);
	raw_exec(db, "ROLLBACK");
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|0|0|NULL\n");
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);

	/* All three at once; b-1 is stale against the webhook's. */
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 3, applied),
	    RS_OK);
	ck_assert_uint_eq(applied[0], 2);
	ck_assert_uint_eq(applied[1], 2);
	ck_assert_uint_eq(applied[2], 1);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c3|3|6|NULL\n");
	ck_assert_rows(db, "SELECT id, status, revision, source FROM refunds"
	    " ORDER BY id",
	    "a-0|SUCCEEDED|1|backfill\na-1|SUCCEEDED|1|backfill\n"
	    "b-0|SUCCEEDED|1|backfill\nb-1|REVERSED|5|webhook\n"
	    "b-2|SUCCEEDED|1|backfill\nc-0|SUCCEEDED|1|backfill\n");
	ck_assert_rows(db, "SELECT refund_id, source FROM changes ORDER BY"
	    " seq", "b-1|webhook\na-0|backfill\na-1|backfill\nb-0|backfill\n"
	    "b-2|backfill\nc-0|backfill\n");

	/* Again (a restarted run): all stale, every page counted; applied
	 * may be NULL. */
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 3, NULL),
	    RS_OK);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|c3|6|12|NULL\n");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes"), 6);

	/* Ending with the last page (no cursor, no refunds): the cursor is
	 * the last page's, NULL. */
	set_bf_page(&pg[1], NULL, 0, NULL);
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 2, applied),
	    RS_OK);
	ck_assert_uint_eq(applied[0], 0);
	ck_assert_uint_eq(applied[1], 0);
	ck_assert_rows(db, BF_ROW "'inst-1'", "running|NULL|8|14|NULL\n");

	/* Inside a caller's transaction: refused, the caller's stays. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_backfill_pages(st, "inst-1", pg, 1, applied),
	    RS_ERR_INTERNAL);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 0);
	store_rollback(st);

	free_page(a, 2);
	free_page(b, 3);
	free_page(c, 1);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* ---- reconcile (003_reconcile) ----------------------------------------- */

static const char *
nz(const char *s)
{
	return s != NULL ? s : "NULL";
}

/* Append one line to *out (owned). */
static void
append(char **out, const char *line)
{
	char *t = xasprintf("%s%s\n", *out, line);

	free(*out);
	*out = t;
}

/* What a walk of the change log saw. */
struct chg_walk {
	struct store	*st;
	char		*out;		/* one line per entry */
	int		 calls;
	int		 stop_after;	/* return RS_ERR_NOTFOUND then; 0:
					   never */
	int64_t		 nested;	/* entries a nested walk saw */
};

static enum rs_status
chg_count_fn(void *arg, const struct store_change *c)
{
	int64_t *n = arg;

	ck_assert_ptr_null(c->body);
	(*n)++;
	return RS_OK;
}

static enum rs_status
chg_walk_fn(void *arg, const struct store_change *c)
{
	struct chg_walk *w = arg;
	struct store_change full;
	char *line;

	w->calls++;
	ck_assert_ptr_null(c->body);
	/* Every other field is as store_change_get() reads it (a read
	 * while the walk is open). */
	ck_assert_int_eq(store_change_get(w->st, c->seq, &full), RS_OK);
	ck_assert_ptr_nonnull(full.body);
	ck_assert_str_eq(c->refund_id, full.refund_id);
	ck_assert_str_eq(nz(c->instance_id), nz(full.instance_id));
	ck_assert_str_eq(c->charge_id, full.charge_id);
	ck_assert_int_eq(c->has_revision, full.has_revision);
	ck_assert_int_eq(c->revision, full.revision);
	ck_assert_str_eq(c->status, full.status);
	ck_assert_str_eq(nz(c->prev_status), nz(full.prev_status));
	ck_assert_str_eq(c->currency, full.currency);
	ck_assert_str_eq(c->amount, full.amount);
	ck_assert_int_eq(c->amount_exact, full.amount_exact);
	ck_assert_int_eq(c->amount_minor, full.amount_minor);
	ck_assert_int_eq(c->exponent, full.exponent);
	ck_assert_str_eq(nz(c->returned_application_fee),
	    nz(full.returned_application_fee));
	ck_assert_str_eq(nz(c->returned_processing_fee),
	    nz(full.returned_processing_fee));
	ck_assert_str_eq(nz(c->created_date), nz(full.created_date));
	ck_assert_str_eq(nz(c->updated_date), nz(full.updated_date));
	ck_assert_str_eq(c->source, full.source);
	ck_assert_str_eq(c->changed_at, full.changed_at);
	store_change_cleanup(&full);
	/* A nested walk gets its own statement. */
	if (w->calls == 1 && w->nested == 0)
		ck_assert_int_eq(store_changes_foreach(w->st, NULL,
		    chg_count_fn, &w->nested), RS_OK);

	line = xasprintf("%lld|%s|%s|%s|%s|%s|%s|%s|%s|%s|%d|%s|%s|%s|%s",
	    (long long)c->seq, c->refund_id, nz(c->instance_id), c->charge_id,
	    c->has_revision ? "rev" : "norev", c->status, nz(c->prev_status),
	    c->currency, c->amount, c->amount_exact ? "exact" : "inexact",
	    c->exponent, nz(c->created_date), nz(c->updated_date),
	    nz(c->returned_application_fee), c->source);
	append(&w->out, line);
	free(line);
	if (w->stop_after > 0 && w->calls == w->stop_after)
		return RS_ERR_NOTFOUND;
	return RS_OK;
}

/* Walk the changes of instance; return the lines, check the status. */
static char *
walk_changes(struct store *st, const char *instance, int stop_after,
    enum rs_status want, int64_t *nested)
{
	struct chg_walk w;

	memset(&w, 0, sizeof(w));
	w.st = st;
	w.out = xstrdup("");
	w.stop_after = stop_after;
	ck_assert_int_eq(store_changes_foreach(st, instance, chg_walk_fn, &w),
	    want);
	if (stop_after > 0)
		ck_assert_int_eq(w.calls, stop_after);
	/* The walk's read transaction ended with it. */
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	if (nested != NULL)
		*nested = w.nested;
	return w.out;
}

#define ck_assert_walk(st, inst, stop, want_rc, want) do {		\
	char *got_ = walk_changes((st), (inst), (stop), (want_rc), NULL); \
	ck_assert_msg(strcmp(got_, (want)) == 0,			\
	    "walk %s:\n--- got ---\n%s--- want ---\n%s", nz(inst), got_, \
	    (want));							\
	free(got_);							\
} while (0)

#define CHG_1	"1|r1|inst-A|ch-r1|rev|PENDING|NULL|USD|12.95|exact|2|" \
		"2024-05-01T10:00:00Z|NULL|NULL|webhook\n"
#define CHG_2	"2|r2|inst-B|ch-r2|rev|PENDING|NULL|USD|12.95|exact|2|" \
		"2024-05-01T10:00:00Z|NULL|NULL|webhook\n"
#define CHG_3	"3|r1|inst-A|ch-r1|rev|SUCCEEDED|PENDING|USD|12.95|exact|2|" \
		"2024-05-01T10:00:00Z|2024-05-02T00:00:00Z|NULL|webhook\n"
#define CHG_4	"4|r3|NULL|ch-r3|rev|PENDING|NULL|JPY|500|exact|0|" \
		"2024-05-03T00:00:00Z|NULL|NULL|cli\n"
/* Written before 002: charge, dates and fee from the body. */
#define CHG_5	"5|r1|inst-A|ch-old|norev|REFUNDED|SUCCEEDED|USD|12.95|" \
		"inexact|-1|2024-04-01T00:00:00Z|2024-04-02T00:00:00Z|0.30|" \
		"webhook\n"

START_TEST(test_changes_foreach)
{
	char *path = test_db(NULL), *got;
	struct store *st;
	struct refund r;
	enum store_outcome o;
	int64_t nested = 0;
	sqlite3 *db;

	st = open_store(path, false);
	/* An empty log: fn is never called. */
	ck_assert_walk(st, NULL, 0, RS_OK, "");

	ck_assert_int_eq(apply_refund_event(st, "e1", "inst-A", 1, "r1",
	    "PENDING", 1, NULL), STORE_APPLIED);
	ck_assert_int_eq(apply_refund_event(st, "e2", "inst-B", 1, "r2",
	    "PENDING", 1, NULL), STORE_APPLIED);
	ck_assert_int_eq(apply_refund_event(st, "e3", "inst-A", 2, "r1",
	    "SUCCEEDED", 2, "2024-05-02T00:00:00Z"), STORE_APPLIED);
	mk_refund(&r, "r3", "PENDING", 1, "500", "JPY",
	    "2024-05-03T00:00:00Z", NULL);
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_refund(st, &r, NULL, false, 0, "cli",
	    &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	ck_assert_int_eq(store_commit(st), RS_OK);
	refund_cleanup(&r);
	/* An entry as migration 001 wrote it: no entity columns. */
	db = raw_open(path);
	raw_exec(db, "INSERT INTO changes (refund_id, instance_id, revision,"
	    " status, prev_status, currency, amount, amount_minor, source,"
	    " changed_at, body) VALUES ('r1', 'inst-A', NULL, 'REFUNDED',"
	    " 'SUCCEEDED', 'USD', '12.95', NULL, 'webhook',"
	    " '2024-04-02T00:00:00.000Z', '{\"id\":\"r1\",\"chargeId\":"
	    "\"ch-old\",\"currencyCode\":\"USD\",\"amount\":\"12.95\","
	    "\"status\":\"REFUNDED\",\"createdDate\":\"2024-04-01T00:00:00Z\","
	    "\"updatedDate\":\"2024-04-02T00:00:00Z\","
	    "\"returnedApplicationFee\":\"0.30\"}')");

	/* Everything, whatever the instance, in seq order; a nested walk
	 * from inside fn sees the same log. */
	got = walk_changes(st, NULL, 0, RS_OK, &nested);
	ck_assert_str_eq(got, CHG_1 CHG_2 CHG_3 CHG_4 CHG_5);
	free(got);
	ck_assert_int_eq(nested, 5);
	/* One instance. */
	ck_assert_walk(st, "inst-A", 0, RS_OK, CHG_1 CHG_3 CHG_5);
	ck_assert_walk(st, "inst-B", 0, RS_OK, CHG_2);
	ck_assert_walk(st, "inst-C", 0, RS_OK, "");
	/* fn stops the walk: its status comes back. */
	ck_assert_walk(st, NULL, 2, RS_ERR_NOTFOUND, CHG_1 CHG_2);
	ck_assert_walk(st, "inst-A", 1, RS_ERR_NOTFOUND, CHG_1);
	/* The store is usable after a stopped walk. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	store_rollback(st);
	ck_assert_int_eq(store_changes_foreach(st, NULL, NULL, NULL),
	    RS_ERR_INPUT);

	/* It reads inside a caller's transaction too, and sees its work. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	raw_exec(store_sqlite_handle(st), "DELETE FROM changes WHERE seq > 1");
	{
		int64_t n = 0;

		ck_assert_int_eq(store_changes_foreach(st, NULL, chg_count_fn,
		    &n), RS_OK);
		ck_assert_int_eq(n, 1);
	}
	store_rollback(st);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM changes"), 5);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* What a walk of a big log checks as it goes. */
struct big_walk {
	sqlite3	*db;	/* the store's connection */
	int64_t	 n;
	int64_t	 last;
	int64_t	 step;	/* expected seq gap */
	int	 probes;
};

/*
 * The walk's statement, seen from inside the walk: it has read no
 * further than the entry in hand (rows stream, none are collected), it
 * sorts nothing, and its memory does not grow with the log.
 */
static void
big_walk_probe(struct big_walk *w)
{
	sqlite3_stmt *stmt = NULL;
	const char *sql;
	int found = 0;

	while ((stmt = sqlite3_next_stmt(w->db, stmt)) != NULL) {
		sql = sqlite3_sql(stmt);
		if (!sqlite3_stmt_busy(stmt) || sql == NULL ||
		    strstr(sql, "FROM changes") == NULL)
			continue;
		found++;
		ck_assert_int_le(sqlite3_stmt_status(stmt,
		    SQLITE_STMTSTATUS_FULLSCAN_STEP, 0), w->last + 1);
		ck_assert_int_eq(sqlite3_stmt_status(stmt,
		    SQLITE_STMTSTATUS_SORT, 0), 0);
		ck_assert_int_eq(sqlite3_stmt_status(stmt,
		    SQLITE_STMTSTATUS_AUTOINDEX, 0), 0);
		ck_assert_int_lt(sqlite3_stmt_status(stmt,
		    SQLITE_STMTSTATUS_MEMUSED, 0), 64 * 1024);
	}
	ck_assert_int_eq(found, 1);
	w->probes++;
}

static enum rs_status
big_walk_fn(void *arg, const struct store_change *c)
{
	struct big_walk *w = arg;

	if (c->body != NULL || c->seq != w->last + w->step ||
	    c->charge_id == NULL || strcmp(c->charge_id, "ch") != 0)
		return RS_ERR_INTERNAL;
	w->last = c->seq;
	w->n++;
	if (w->n == 1 || w->n % 250000 == 0)
		big_walk_probe(w);
	return RS_OK;
}

/* A million entries are walked one at a time (the statement is stepped,
 * nothing is collected), their bodies never read. */
START_TEST(test_changes_foreach_million)
{
	char *path = test_db(NULL);
	struct store *st;
	struct big_walk w;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	raw_exec(db, "BEGIN");
	raw_exec(db, "INSERT INTO changes (refund_id, instance_id, revision,"
	    " status, currency, amount, amount_minor, source, changed_at,"
	    " body, amount_exponent, charge_id) WITH RECURSIVE n(i) AS"
	    " (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)"
	    " SELECT 'r' || i, CASE i % 2 WHEN 0 THEN 'A' ELSE 'B' END, 1,"
	    " 'SUCCEEDED', 'USD', '1.00', 100, 'webhook',"
	    " '2024-05-01T00:00:00.000Z', hex(zeroblob(100)), 2, 'ch' FROM n");
	raw_exec(db, "COMMIT");
	sqlite3_close(db);

	memset(&w, 0, sizeof(w));
	w.db = store_sqlite_handle(st);
	w.step = 1;
	ck_assert_int_eq(store_changes_foreach(st, NULL, big_walk_fn, &w),
	    RS_OK);
	ck_assert_int_eq(w.n, 1000000);
	ck_assert_int_eq(w.last, 1000000);
	ck_assert_int_eq(w.probes, 5);
	memset(&w, 0, sizeof(w));
	w.db = store_sqlite_handle(st);
	w.step = 2;
	ck_assert_int_eq(store_changes_foreach(st, "A", big_walk_fn, &w),
	    RS_OK);
	ck_assert_int_eq(w.n, 500000);
	ck_assert_int_eq(w.last, 1000000);
	ck_assert_int_eq(w.probes, 3);
	store_close(st);
	free(path);
}
END_TEST

/* Collects seqs as "1,2,3". */
struct seq_walk {
	char	*out;
	int	 calls;
	int	 stop_after;
};

static enum rs_status
seq_walk_fn(void *arg, int64_t seq)
{
	struct seq_walk *w = arg;
	char *t;

	t = xasprintf("%s%s%lld", w->out, w->calls > 0 ? "," : "",
	    (long long)seq);
	free(w->out);
	w->out = t;
	w->calls++;
	return w->stop_after > 0 && w->calls == w->stop_after ?
	    RS_ERR_INPUT : RS_OK;
}

static void
expect_deliveries(struct store *st, const char *name, int stop_after,
    enum rs_status want_rc, const char *want)
{
	struct seq_walk w = { .out = xstrdup(""), .stop_after = stop_after };

	ck_assert_int_eq(store_export_deliveries_foreach(st, name,
	    seq_walk_fn, &w), want_rc);
	ck_assert_msg(strcmp(w.out, want) == 0, "%s: got %s, want %s", name,
	    w.out, want);
	free(w.out);
}

/* Apply n refund events r1..rn on inst-A: changes 1..n. */
static void
mk_changes(struct store *st, int n)
{
	char key[32], id[32];
	int i;

	for (i = 1; i <= n; i++) {
		snprintf(key, sizeof(key), "e%d", i);
		snprintf(id, sizeof(id), "r%d", i);
		ck_assert_int_eq(apply_refund_event(st, key, "inst-A", 1, id,
		    "SUCCEEDED", 1, NULL), STORE_APPLIED);
	}
}

START_TEST(test_deliveries_foreach)
{
	char *path = test_db(NULL);
	struct store *st;
	const int64_t a[] = { 5, 2, 4 }, b[] = { 1 }, c[] = { 3 };

	st = open_store(path, false);
	mk_changes(st, 5);
	expect_deliveries(st, "led", 0, RS_OK, "");
	ck_assert_int_eq(store_export_ensure(st, "led"), RS_OK);
	ck_assert_int_eq(store_export_ensure(st, "csv"), RS_OK);
	ck_assert_int_eq(store_export_delivered(st, "led", 0, a, 3, 5), RS_OK);
	ck_assert_int_eq(store_export_delivered(st, "led", 0, b, 1, -1),
	    RS_OK);
	ck_assert_int_eq(store_export_delivered(st, "csv", 0, c, 1, 3), RS_OK);
	/* In seq order, whatever the order of delivery; only its own. */
	expect_deliveries(st, "led", 0, RS_OK, "1,2,4,5");
	expect_deliveries(st, "csv", 0, RS_OK, "3");
	expect_deliveries(st, "nobody", 0, RS_OK, "");
	/* fn stops it. */
	expect_deliveries(st, "led", 2, RS_ERR_INPUT, "1,2");
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	/* No name, no callback. */
	expect_deliveries(st, "", 0, RS_ERR_INPUT, "");
	expect_deliveries(st, NULL, 0, RS_ERR_INPUT, "");
	ck_assert_int_eq(store_export_deliveries_foreach(st, "led", NULL,
	    NULL), RS_ERR_INPUT);
	store_close(st);
	free(path);
}
END_TEST

#define REPAIR_ROWS	"SELECT instance_id, kind, refund_id, exporter, seq," \
	" detail FROM reconcile_repairs ORDER BY id"

START_TEST(test_repair_log)
{
	char *path = test_db(NULL), *at;
	struct store *st;
	struct store_repair full = { .instance_id = "inst-A",
	    .kind = "refund_missing", .refund_id = "r1", .exporter = "led",
	    .seq = 7, .detail = "in Wix, not in the store" };
	struct store_repair bare = { .kind = "refund_stale" };
	struct store_repair bad;
	struct refund r;
	enum store_outcome o;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);

	/* Outside a transaction: refused, nothing written. */
	ck_assert_int_eq(store_repair_log(st, &full), RS_ERR_INTERNAL);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM"
	    " reconcile_repairs"), 0);

	/* Inside one: durable at the commit, not before. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_repair_log(st, &full), RS_OK);
	ck_assert_int_eq(store_repair_log(st, &bare), RS_OK);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM"
	    " reconcile_repairs"), 0);
	ck_assert_int_eq(store_commit(st), RS_OK);
	ck_assert_rows(db, REPAIR_ROWS,
	    "inst-A|refund_missing|r1|led|7|in Wix, not in the store\n"
	    "NULL|refund_stale|NULL|NULL|NULL|NULL\n");
	at = raw_text(db, "SELECT at FROM reconcile_repairs WHERE id = 1");
	ck_assert_msg(is_iso_ms(at), "at: %s", nz(at));
	free(at);

	/* Rolled back with the repair it records: neither remains. */
	mk_refund(&r, "r9", "SUCCEEDED", 1, "1.00", "USD",
	    "2024-05-01T00:00:00Z", NULL);
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_apply_refund(st, &r, "inst-A", false, 0,
	    "reconcile", &o), RS_OK);
	ck_assert_int_eq(o, STORE_APPLIED);
	ck_assert_int_eq(store_repair_log(st, &full), RS_OK);
	store_rollback(st);
	refund_cleanup(&r);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM"
	    " reconcile_repairs"), 2);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM refunds"), 0);

	/* What a row needs. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_repair_log(st, NULL), RS_ERR_INPUT);
	bad = full;
	bad.kind = NULL;
	ck_assert_int_eq(store_repair_log(st, &bad), RS_ERR_INPUT);
	bad.kind = "";
	ck_assert_int_eq(store_repair_log(st, &bad), RS_ERR_INPUT);
	bad = full;
	bad.seq = -1;
	ck_assert_int_eq(store_repair_log(st, &bad), RS_ERR_INPUT);
	/* The transaction is still usable. */
	ck_assert_int_eq(store_repair_log(st, &bare), RS_OK);
	ck_assert_int_eq(store_commit(st), RS_OK);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM"
	    " reconcile_repairs"), 3);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* Everything store_export_requeue() may touch, as text. */
static char *
requeue_state(sqlite3 *db)
{
	static const char *const q[] = {
		"SELECT * FROM exporter_positions ORDER BY exporter",
		"SELECT * FROM exporter_dead_letters ORDER BY exporter, seq",
		"SELECT * FROM exporter_deliveries ORDER BY exporter, seq",
		"SELECT * FROM reconcile_repairs ORDER BY id",
		"SELECT seq FROM changes ORDER BY seq"
	};
	char *out = xstrdup(""), *rows, *t;
	size_t i;

	for (i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		rows = raw_rows(db, q[i]);
		t = xasprintf("%s--\n%s", out, rows);
		free(rows);
		free(out);
		out = t;
	}
	return out;
}

static void
expect_export(struct store *st, const char *name, int64_t position,
    int64_t epoch, int64_t dead, int64_t queued, int64_t next_queued)
{
	struct store_export e;

	ck_assert_int_eq(store_export_get(st, name, &e), RS_OK);
	ck_assert_int_eq(e.position, position);
	ck_assert_int_eq(e.epoch, epoch);
	ck_assert_int_eq(e.dead, dead);
	ck_assert_int_eq(e.queued, queued);
	ck_assert_int_eq(e.next_queued, next_queued);
	store_export_cleanup(&e);
}

#define DEAD_ROWS	"SELECT exporter, seq, refund_id, revision," \
	" idempotency_key, reason, last_response, attempts, queued" \
	" FROM exporter_dead_letters ORDER BY exporter, seq"
#define LOG_ROWS	"SELECT exporter, seq FROM exporter_deliveries" \
	" ORDER BY exporter, seq"

START_TEST(test_export_requeue)
{
	char *path = test_db(NULL), *before, *after, *t1, *t2;
	struct store *st;
	const int64_t a[] = { 1, 2, 3 }, b[] = { 1, 2 }, two[] = { 2 },
	    rest[] = { 4, 5 };
	struct store_dead_letter dl = { .seq = 2, .refund_id = "r2",
	    .has_revision = true, .revision = 1, .idempotency_key = "k-2",
	    .reason = "missing from the file", .attempts = 0, .since = 0 };
	struct store_repair rep = { .instance_id = "inst-A",
	    .kind = "posting_requeued", .refund_id = "r2", .exporter = "led",
	    .seq = 2, .detail = "absent from led's file" };
	struct store_dead_letter bad;
	struct store_repair badrep;
	bool yes = true;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	mk_changes(st, 5);
	ck_assert_int_eq(store_export_ensure(st, "led"), RS_OK);
	ck_assert_int_eq(store_export_ensure(st, "csv"), RS_OK);
	ck_assert_int_eq(store_export_delivered(st, "led", 0, a, 3, 3), RS_OK);
	ck_assert_int_eq(store_export_delivered(st, "csv", 0, b, 2, 2), RS_OK);
	expect_export(st, "led", 3, 0, 0, 0, 0);

	/* A delivered change at or below the position: queued, out of the
	 * delivery log, the epoch moved, and next for the worker. */
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, &rep), RS_OK);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	ck_assert_rows(db, DEAD_ROWS,
	    "led|2|r2|1|k-2|missing from the file|NULL|0|1\n");
	t1 = raw_text(db, "SELECT first_failure_at FROM"
	    " exporter_dead_letters WHERE seq = 2");
	t2 = raw_text(db, "SELECT dead_at FROM exporter_dead_letters"
	    " WHERE seq = 2");
	ck_assert_msg(is_iso_ms(t2), "dead_at: %s", nz(t2));
	ck_assert_str_eq(t1, t2);
	free(t1);
	free(t2);
	ck_assert_rows(db, LOG_ROWS, "csv|1\ncsv|2\nled|1\nled|3\n");
	ck_assert_int_eq(store_export_was_delivered(st, "led", 2, &yes),
	    RS_OK);
	ck_assert_int_eq(yes, false);
	expect_export(st, "led", 3, 1, 0, 1, 2);
	expect_export(st, "csv", 2, 0, 0, 0, 0);
	ck_assert_rows(db, REPAIR_ROWS,
	    "inst-A|posting_requeued|r2|led|2|absent from led's file\n");
	t1 = raw_text(db, "SELECT updated_at FROM exporter_positions"
	    " WHERE exporter = 'led'");
	t2 = raw_text(db, "SELECT at FROM reconcile_repairs");
	ck_assert_str_eq(t1, t2);
	free(t1);
	free(t2);

	/* Above the position (never delivered): queued, comes in the
	 * normal flow, so it is not next_queued.  No repair to log. */
	dl.seq = 5;
	dl.refund_id = "r5";
	dl.idempotency_key = "k-5";
	dl.last_response = "HTTP 500";
	dl.attempts = 3;
	dl.since = 1714558800;		/* 2024-05-01T10:20:00Z */
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, NULL), RS_OK);
	ck_assert_rows(db, DEAD_ROWS,
	    "led|2|r2|1|k-2|missing from the file|NULL|0|1\n"
	    "led|5|r5|1|k-5|missing from the file|HTTP 500|3|1\n");
	ck_assert_rows(db, "SELECT first_failure_at FROM exporter_dead_letters"
	    " WHERE seq = 5", "2024-05-01T10:20:00Z\n");
	expect_export(st, "led", 3, 2, 0, 2, 2);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM"
	    " reconcile_repairs"), 1);

	/* A dead letter that exists is replaced (and queued). */
	raw_exec(db, "UPDATE exporter_dead_letters SET queued = 0"
	    " WHERE seq = 2");
	expect_export(st, "led", 3, 2, 1, 1, 0);
	dl.seq = 2;
	dl.refund_id = "r2";
	dl.idempotency_key = "k-2";
	dl.reason = "again";
	dl.last_response = NULL;
	dl.attempts = 4;
	dl.since = 0;
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, &rep), RS_OK);
	ck_assert_rows(db, DEAD_ROWS,
	    "led|2|r2|1|k-2|again|NULL|4|1\n"
	    "led|5|r5|1|k-5|missing from the file|HTTP 500|3|1\n");
	expect_export(st, "led", 3, 3, 0, 2, 2);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM"
	    " reconcile_repairs"), 2);

	/* The worker's flow: the queued one goes out on its own and
	 * leaves the dead letters; the normal flow takes 4 and 5 and
	 * clears 5. */
	ck_assert_int_eq(store_export_delivered(st, "led", 2, two, 1, -1),
	    RS_ERR_NOTFOUND);		/* an old epoch */
	ck_assert_int_eq(store_export_delivered(st, "led", 3, two, 1, -1),
	    RS_OK);
	expect_export(st, "led", 3, 3, 0, 1, 0);
	ck_assert_int_eq(store_export_delivered(st, "led", 3, rest, 2, 5),
	    RS_OK);
	expect_export(st, "led", 5, 3, 0, 0, 0);
	ck_assert_rows(db, DEAD_ROWS, "");
	ck_assert_rows(db, LOG_ROWS, "csv|1\ncsv|2\nled|1\nled|2\nled|3\n"
	    "led|4\nled|5\n");

	/* An exporter that never ran gets its row (position 0). */
	dl.seq = 1;
	dl.refund_id = "r1";
	dl.idempotency_key = "k-1";
	ck_assert_int_eq(store_export_requeue(st, "fresh", &dl, NULL), RS_OK);
	expect_export(st, "fresh", 0, 1, 0, 1, 0);

	/* A change that does not exist: NOTFOUND, nothing changed (not
	 * even a row for a new exporter). */
	before = requeue_state(db);
	dl.seq = 99;
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, &rep),
	    RS_ERR_NOTFOUND);
	ck_assert_int_eq(store_export_requeue(st, "other", &dl, &rep),
	    RS_ERR_NOTFOUND);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	after = requeue_state(db);
	ck_assert_str_eq(after, before);
	free(after);

	/* Bad arguments change nothing either. */
	dl.seq = 2;
	ck_assert_int_eq(store_export_requeue(st, "", &dl, NULL),
	    RS_ERR_INPUT);
	ck_assert_int_eq(store_export_requeue(st, NULL, &dl, NULL),
	    RS_ERR_INPUT);
	ck_assert_int_eq(store_export_requeue(st, "led", NULL, NULL),
	    RS_ERR_INPUT);
	bad = dl;
	bad.reason = NULL;
	ck_assert_int_eq(store_export_requeue(st, "led", &bad, NULL),
	    RS_ERR_INPUT);
	bad = dl;
	bad.seq = 0;
	ck_assert_int_eq(store_export_requeue(st, "led", &bad, NULL),
	    RS_ERR_INPUT);
	badrep = rep;
	badrep.kind = NULL;
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, &badrep),
	    RS_ERR_INPUT);

	/* Inside a caller's transaction: refused, the caller's stays. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, &rep),
	    RS_ERR_INTERNAL);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 0);
	store_rollback(st);

	/* Locked: busy, nothing kept. */
	raw_exec(db, "BEGIN IMMEDIATE");
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, &rep),
	    RS_ERR_BUSY);
	raw_exec(db, "ROLLBACK");
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);

	/* A failure after the first writes undoes them all. */
	raw_exec(db, "CREATE TRIGGER no_repair BEFORE INSERT ON"
	    " reconcile_repairs BEGIN SELECT RAISE(ABORT, 'refused'); END");
	ck_assert_int_eq(store_export_requeue(st, "led", &dl, &rep),
	    RS_ERR_INPUT);
	raw_exec(db, "DROP TRIGGER no_repair");
	after = requeue_state(db);
	ck_assert_str_eq(after, before);
	free(after);
	free(before);
	sqlite3_close(db);
	store_close(st);
	free(path);
}
END_TEST

/* Collects "kind=count" lines. */
struct kind_walk {
	char	*out;
	int	 calls;
	int	 stop_after;
};

static enum rs_status
kind_walk_fn(void *arg, const char *kind, int64_t count)
{
	struct kind_walk *w = arg;
	char *line;

	line = xasprintf("%s=%lld", kind, (long long)count);
	append(&w->out, line);
	free(line);
	w->calls++;
	return w->stop_after > 0 && w->calls == w->stop_after ?
	    RS_ERR_BUSY : RS_OK;
}

static void
expect_kinds(struct store *st, int stop_after, enum rs_status want_rc,
    const char *want)
{
	struct kind_walk w = { .out = xstrdup(""), .stop_after = stop_after };

	ck_assert_int_eq(store_repair_counts(st, kind_walk_fn, &w), want_rc);
	ck_assert_msg(strcmp(w.out, want) == 0, "got:\n%swant:\n%s", w.out,
	    want);
	free(w.out);
}

START_TEST(test_repair_counts)
{
	static const char *const kinds[] = { "refund_stale", "refund_missing",
	    "posting_requeued", "refund_missing", "refund_stale",
	    "refund_missing" };
	char *path = test_db(NULL);
	struct store *st;
	struct store_repair r;
	size_t i;

	st = open_store(path, false);
	expect_kinds(st, 0, RS_OK, "");
	ck_assert_int_eq(store_begin(st), RS_OK);
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		memset(&r, 0, sizeof(r));
		r.kind = kinds[i];
		ck_assert_int_eq(store_repair_log(st, &r), RS_OK);
	}
	ck_assert_int_eq(store_commit(st), RS_OK);
	expect_kinds(st, 0, RS_OK,
	    "posting_requeued=1\nrefund_missing=3\nrefund_stale=2\n");
	expect_kinds(st, 2, RS_ERR_BUSY,
	    "posting_requeued=1\nrefund_missing=3\n");
	ck_assert_int_eq(store_repair_counts(st, NULL, NULL), RS_ERR_INPUT);
	store_close(st);
	free(path);
}
END_TEST

/* Collects the last runs, one line each. */
struct run_walk {
	char	*out;
	int	 calls;
	int	 stop_after;
};

static enum rs_status
run_walk_fn(void *arg, const struct store_reconcile_run *r,
    const char *finished_at)
{
	struct run_walk *w = arg;
	char *line;

	ck_assert_ptr_null(r->report);
	ck_assert_msg(is_iso_ms(finished_at), "finished_at: %s", finished_at);
	line = xasprintf("%s|%s|%s|%d|%lld|%lld|%lld|%lld|%s",
	    nz(r->instance_id), r->started_at, r->outcome, r->heal ? 1 : 0,
	    (long long)r->wix_refunds, (long long)r->store_refunds,
	    (long long)r->drift, (long long)r->repaired, nz(r->error));
	append(&w->out, line);
	free(line);
	w->calls++;
	return w->stop_after > 0 && w->calls == w->stop_after ?
	    RS_ERR_IO : RS_OK;
}

static void
expect_last_runs(struct store *st, int stop_after, enum rs_status want_rc,
    const char *want)
{
	struct run_walk w = { .out = xstrdup(""), .stop_after = stop_after };

	ck_assert_int_eq(store_reconcile_last_foreach(st, run_walk_fn, &w),
	    want_rc);
	ck_assert_msg(strcmp(w.out, want) == 0, "got:\n%swant:\n%s", w.out,
	    want);
	free(w.out);
}

/* Record a run of instance with drift d; the rest fixed. */
static void
record_run(struct store *st, const char *instance, const char *outcome,
    int64_t d, const char *error)
{
	struct store_reconcile_run r = { .instance_id = instance,
	    .started_at = "2024-05-01T10:00:00.000Z", .outcome = outcome,
	    .heal = d % 2 == 0, .wix_refunds = 10 + d, .store_refunds = 9 + d,
	    .drift = d, .repaired = d / 2, .error = error,
	    .report = "{\"outcome\":\"drift\"}" };

	ck_assert_int_eq(store_reconcile_record(st, &r), RS_OK);
}

#define RUN_COUNT(inst)	"SELECT count(*), min(drift), max(drift) FROM" \
	" reconcile_runs WHERE instance_id IS " inst

START_TEST(test_reconcile_record)
{
	char *path = test_db(NULL), *t;
	struct store *st;
	struct store_reconcile_run r, bad;
	int64_t i;
	sqlite3 *db;

	st = open_store(path, false);
	db = raw_open(path);
	expect_last_runs(st, 0, RS_OK, "");

	/* One run, as written. */
	memset(&r, 0, sizeof(r));
	r.instance_id = "inst-A";
	r.started_at = "2024-05-01T09:00:00.000Z";
	r.outcome = "drift";
	r.heal = true;
	r.wix_refunds = 12;
	r.store_refunds = 11;
	r.drift = 2;
	r.repaired = 1;
	r.report = "{\"outcome\":\"drift\",\"drift\":2}";
	ck_assert_int_eq(store_reconcile_record(st, &r), RS_OK);
	ck_assert_int_eq(sqlite3_get_autocommit(store_sqlite_handle(st)), 1);
	ck_assert_rows(db, "SELECT id, instance_id, started_at, outcome, heal,"
	    " wix_refunds, store_refunds, drift, repaired, error, report"
	    " FROM reconcile_runs",
	    "1|inst-A|2024-05-01T09:00:00.000Z|drift|1|12|11|2|1|NULL|"
	    "{\"outcome\":\"drift\",\"drift\":2}\n");
	t = raw_text(db, "SELECT finished_at FROM reconcile_runs");
	ck_assert_msg(is_iso_ms(t), "finished_at: %s", nz(t));
	free(t);
	expect_last_runs(st, 0, RS_OK,
	    "inst-A|2024-05-01T09:00:00.000Z|drift|1|12|11|2|1|NULL\n");

	/* What a row needs; the schema says the same of outcome. */
	ck_assert_int_eq(store_reconcile_record(st, NULL), RS_ERR_INPUT);
	bad = r;
	bad.outcome = "fine";
	ck_assert_int_eq(store_reconcile_record(st, &bad), RS_ERR_INPUT);
	bad.outcome = NULL;
	ck_assert_int_eq(store_reconcile_record(st, &bad), RS_ERR_INPUT);
	bad = r;
	bad.started_at = NULL;
	ck_assert_int_eq(store_reconcile_record(st, &bad), RS_ERR_INPUT);
	bad = r;
	bad.drift = -1;
	ck_assert_int_eq(store_reconcile_record(st, &bad), RS_ERR_INPUT);
	ck_assert_int_ne(sqlite3_exec(db, "INSERT INTO reconcile_runs"
	    " (started_at, finished_at, outcome, heal, wix_refunds,"
	    " store_refunds, drift, repaired) VALUES ('a', 'b', 'fine', 0, 0,"
	    " 0, 0, 0)", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM reconcile_runs"),
	    1);

	/* 105 runs of inst-A in all keep the newest 100; the others'
	 * runs, and those over no instance (one group), are counted
	 * apart. */
	for (i = 0; i < 104; i++)
		record_run(st, "inst-A", "drift", 100 + i, NULL);
	ck_assert_rows(db, RUN_COUNT("'inst-A'"), "100|104|203\n");
	record_run(st, "inst-B", "clean", 0, NULL);
	record_run(st, "inst-B", "clean", 1, NULL);
	record_run(st, NULL, "failed", 7, "Wix unreachable");
	record_run(st, NULL, "failed", 8, "Wix unreachable again");
	record_run(st, "inst-A", "clean", 300, NULL);
	ck_assert_rows(db, RUN_COUNT("'inst-A'"), "100|105|300\n");
	ck_assert_rows(db, RUN_COUNT("'inst-B'"), "2|0|1\n");
	ck_assert_rows(db, RUN_COUNT("NULL"), "2|7|8\n");
	for (i = 0; i < 100; i++)
		record_run(st, NULL, "failed", 1000 + i, "x");
	ck_assert_rows(db, RUN_COUNT("NULL"), "100|1000|1099\n");
	ck_assert_rows(db, RUN_COUNT("'inst-A'"), "100|105|300\n");
	ck_assert_rows(db, RUN_COUNT("'inst-B'"), "2|0|1\n");

	/* The newest of each, by instance, no instance first. */
	expect_last_runs(st, 0, RS_OK,
	    "NULL|2024-05-01T10:00:00.000Z|failed|0|1109|1108|1099|549|x\n"
	    "inst-A|2024-05-01T10:00:00.000Z|clean|1|310|309|300|150|NULL\n"
	    "inst-B|2024-05-01T10:00:00.000Z|clean|0|11|10|1|0|NULL\n");
	expect_last_runs(st, 2, RS_ERR_IO,
	    "NULL|2024-05-01T10:00:00.000Z|failed|0|1109|1108|1099|549|x\n"
	    "inst-A|2024-05-01T10:00:00.000Z|clean|1|310|309|300|150|NULL\n");
	ck_assert_int_eq(store_reconcile_last_foreach(st, NULL, NULL),
	    RS_ERR_INPUT);

	/* Inside a caller's transaction: refused.  Locked: busy.  Neither
	 * writes anything. */
	ck_assert_int_eq(store_begin(st), RS_OK);
	ck_assert_int_eq(store_reconcile_record(st, &r), RS_ERR_INTERNAL);
	store_rollback(st);
	raw_exec(db, "BEGIN IMMEDIATE");
	ck_assert_int_eq(store_reconcile_record(st, &r), RS_ERR_BUSY);
	raw_exec(db, "ROLLBACK");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM reconcile_runs"),
	    202);
	store_close(st);

	/* A read-only store lists, and cannot record. */
	st = open_store(path, true);
	expect_last_runs(st, 1, RS_ERR_IO,
	    "NULL|2024-05-01T10:00:00.000Z|failed|0|1109|1108|1099|549|x\n");
	ck_assert_int_eq(store_reconcile_record(st, &r), RS_ERR_BUSY);
	store_close(st);
	sqlite3_close(db);
	free(path);
}
END_TEST

/* A database written by a program that knew 002 only. */
START_TEST(test_migrate_2_to_3)
{
	char *path = test_db(NULL);
	struct store *st;
	struct store_export e;
	int64_t n = 0;
	sqlite3 *db = NULL;

	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	raw_exec(db, "PRAGMA journal_mode = WAL");
	raw_exec(db, "BEGIN");
	raw_exec(db, store_migrations[0].sql);
	raw_exec(db, store_migrations[1].sql);
	raw_exec(db, "PRAGMA user_version = 2");
	raw_exec(db, "COMMIT");
	raw_exec(db, "INSERT INTO refunds (id, charge_id, currency, amount,"
	    " status, body, source, stored_at) VALUES ('r1', 'ch-r1', 'USD',"
	    " '1.00', 'SUCCEEDED', '{}', 'webhook', '2024-05-01T00:00:00Z')");
	raw_exec(db, "INSERT INTO changes (refund_id, instance_id, status,"
	    " currency, amount, source, changed_at, body, charge_id) VALUES"
	    " ('r1', 'inst-A', 'SUCCEEDED', 'USD', '1.00', 'webhook',"
	    " '2024-05-01T00:00:00Z', '{}', 'ch-r1')");
	raw_exec(db, "INSERT INTO exporter_positions (exporter, position,"
	    " epoch, created_at, updated_at) VALUES ('led', 1, 4, 'x', 'x')");
	raw_exec(db, "INSERT INTO exporter_deliveries VALUES ('led', 1,"
	    " '2024-05-01T00:00:00Z')");
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master"
	    " WHERE name LIKE 'reconcile_%'"), 0);
	sqlite3_close(db);

	/* Read-only cannot use it yet. */
	{
		struct store_options opt = { .busy_timeout_ms = BUSY_MS,
		    .readonly = true };
		char *why = NULL;

		st = NULL;
		ck_assert_int_eq(store_open(path, &opt, &st, &why),
		    RS_ERR_IO);
		ck_assert_msg(strstr(why, "schema version 2, this program "
		    "needs 5") != NULL, "why: %s", why);
		free(why);
	}

	st = open_store(path, false);
	ck_assert_int_eq(store_schema_version(st), 5);
	db = raw_open(path);
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), 5);
	ck_assert_rows(db, "SELECT name FROM sqlite_master WHERE name LIKE"
	    " 'reconcile_%' ORDER BY name", "reconcile_repairs\n"
	    "reconcile_repairs_kind\nreconcile_runs\n"
	    "reconcile_runs_instance\n");
	/* The data of 002 is kept, and the new calls work on it. */
	ck_assert_int_eq(store_changes_foreach(st, "inst-A", chg_count_fn, &n),
	    RS_OK);
	ck_assert_int_eq(n, 1);
	expect_deliveries(st, "led", 0, RS_OK, "1");
	ck_assert_int_eq(store_export_get(st, "led", &e), RS_OK);
	ck_assert_int_eq(e.position, 1);
	ck_assert_int_eq(e.epoch, 4);
	store_export_cleanup(&e);
	record_run(st, "inst-A", "clean", 0, NULL);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM reconcile_runs"),
	    1);
	sqlite3_close(db);
	store_close(st);

	/* Reopening migrates nothing more. */
	st = open_store(path, false);
	ck_assert_int_eq(store_schema_version(st), 5);
	store_close(st);
	free(path);
}
END_TEST

/* The indexes of a store at the newest version, however it got there. */
#define NEWEST_INDEXES \
	"changes_refund\nreconcile_repairs_kind\n" \
	"reconcile_runs_instance\nrefunds_instance\n"
#define INDEXES_SQL \
	"SELECT name FROM sqlite_master WHERE type = 'index'" \
	" AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY name"
#define SCHEMA_SQL \
	"SELECT type || ' ' || name || ' ' || coalesce(sql, '')" \
	" FROM sqlite_master ORDER BY type, name"

/*
 * A database written by the first build (commit 6df127e), whose
 * 001_initial also made the indexes a later commit took out of that file:
 * changes_refund among them, which 004_posted makes again.  It must
 * migrate to the newest version, not stop at 3 on "index changes_refund
 * already exists", and 005_first_indexes drops the other four: it ends
 * with the indexes of a new store, and its rows and reads as they were.
 */
START_TEST(test_migrate_first_schema)
{
	char *path = test_db(NULL), *fresh_path = test_db(NULL), *fresh;
	struct store *st;
	sqlite3 *db = NULL;

	/* A store made new, for comparison: 005 changes nothing there. */
	st = open_store(fresh_path, false);
	store_close(st);
	db = raw_open(fresh_path);
	ck_assert_rows(db, INDEXES_SQL, NEWEST_INDEXES);
	fresh = raw_rows(db, SCHEMA_SQL);
	sqlite3_close(db);
	db = NULL;

	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	raw_exec(db, "PRAGMA journal_mode = WAL");
	raw_exec(db, "BEGIN");
	raw_exec(db, store_migrations[0].sql);
	raw_exec(db, "CREATE INDEX refunds_created ON refunds (created_date,"
	    " id)");
	raw_exec(db, "CREATE INDEX refunds_status ON refunds (status,"
	    " created_date, id)");
	raw_exec(db, "CREATE INDEX refunds_charge ON refunds (charge_id)");
	raw_exec(db, "CREATE INDEX webhook_events_received ON webhook_events"
	    " (received_at)");
	raw_exec(db, "CREATE INDEX changes_refund ON changes (refund_id, seq)");
	raw_exec(db, "PRAGMA user_version = 1");
	raw_exec(db, "COMMIT");
	raw_exec(db, "INSERT INTO refunds (id, charge_id, currency, amount,"
	    " status, body, source, stored_at) VALUES ('r1', 'ch-r1', 'USD',"
	    " '1.00', 'SUCCEEDED', '{}', 'webhook', '2024-05-01T00:00:00Z')");
	sqlite3_close(db);

	st = open_store(path, false);
	ck_assert_int_eq(store_schema_version(st), 5);
	expect_counts(st, 1, 0, 0, 0, 0);
	store_close(st);
	db = raw_open(path);
	ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), 5);
	ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_master"
	    " WHERE type = 'index' AND name = 'changes_refund'"), 1);
	ck_assert_rows(db, INDEXES_SQL, NEWEST_INDEXES);
	ck_assert_rows(db, SCHEMA_SQL, fresh);
	ck_assert_rows(db, "SELECT id || ' ' || status FROM refunds"
	    " WHERE status = 'SUCCEEDED' ORDER BY created_date, id",
	    "r1 SUCCEEDED\n");
	sqlite3_close(db);
	free(fresh);
	free(fresh_path);
	free(path);
}
END_TEST

static Suite *
store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("sqlite");

	tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_outcome_names);
	tcase_add_test(tc, test_open_migrate_reopen);
	tcase_add_test(tc, test_pragmas);
	tcase_add_test(tc, test_reader_after_close);
	tcase_add_test(tc, test_schema);
	tcase_add_test(tc, test_create_update_stale_duplicate);
	tcase_add_test(tc, test_refund_instances);
	tcase_add_test(tc, test_out_of_order_burst);
	tcase_add_test(tc, test_equal_revision_tie);
	tcase_add_test(tc, test_no_revision_order);
	tcase_add_test(tc, test_status_any_direction);
	tcase_add_test(tc, test_amounts);
	tcase_add_test(tc, test_app_installed);
	tcase_add_test(tc, test_app_removed);
	tcase_add_test(tc, test_ignored);
	tcase_add_test(tc, test_rollback);
	tcase_add_test(tc, test_savepoint);
	tcase_add_test(tc, test_batch_txn);
	tcase_add_test(tc, test_ingest_batch_redo);
	tcase_add_test(tc, test_foreach);
	tcase_add_test(tc, test_bad_body);
	tcase_add_test(tc, test_probe);
	tcase_add_test(tc, test_busy);
	tcase_add_test(tc, test_disk_full);
	tcase_add_test(tc, test_readonly);
	tcase_add_test(tc, test_open_errors);
	tcase_add_test(tc, test_writable);
	tcase_add_test(tc, test_writable_denied);
	tcase_add_test(tc, test_open_unwritable_dir);
	tcase_add_test(tc, test_backfill_names);
	tcase_add_test(tc, test_instance_ensure_get);
	tcase_add_test(tc, test_instance_foreach);
	tcase_add_test(tc, test_backfill_lifecycle);
	tcase_add_test(tc, test_backfill_version_rule);
	tcase_add_test(tc, test_backfill_page_atomic);
	tcase_add_test(tc, test_backfill_pages);
	tcase_add_test(tc, test_changes_foreach);
	tcase_add_test(tc, test_changes_foreach_million);
	tcase_add_test(tc, test_deliveries_foreach);
	tcase_add_test(tc, test_repair_log);
	tcase_add_test(tc, test_export_requeue);
	tcase_add_test(tc, test_repair_counts);
	tcase_add_test(tc, test_reconcile_record);
	tcase_add_test(tc, test_migrate_2_to_3);
	tcase_add_test(tc, test_migrate_first_schema);
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
	sr = srunner_create(store_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
