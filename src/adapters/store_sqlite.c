/*
 * store_sqlite.c: the SQLite backend of the store.  All of refundsync's
 * SQL is in this file.
 *
 * One struct sq is one connection, opened without SQLite's mutexes: it
 * belongs to one thread at a time (the daemon's writer thread, or a CLI
 * command).  The connection runs in WAL mode with synchronous=FULL, so a
 * successful COMMIT survives kill -9 and power loss, and readers never
 * block the writer.  Write transactions start with BEGIN IMMEDIATE and
 * wait busy_timeout for the lock; past it, the caller gets RS_ERR_BUSY
 * and answers 503.
 *
 * Which version of a refund wins is decided in C, by
 * refund_version_newer(), after reading the stored version inside the
 * write transaction; the upsert and its change-log entry are written
 * only when the incoming version wins.  Each event or refund is applied
 * inside a savepoint, so a failure leaves nothing of it behind and the
 * surrounding transaction usable; except in a batch transaction
 * (store_begin_batch), whose caller rolls back and redoes it instead.
 *
 * Every statement is prepared once, at open, and cached.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "adapters/store.h"
#include "adapters/store_backend.h"
#include "adapters/walbuf.h"
#include "domain/json.h"
#include "domain/money.h"
#include "domain/refund.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xmalloc.h"

/* The cached statements. */
enum sq_stmt {
	SQ_BEGIN,
	SQ_COMMIT,
	SQ_ROLLBACK,
	SQ_SP_BEGIN,
	SQ_SP_RELEASE,
	SQ_SP_ROLLBACK,
	SQ_EV_SEEN,
	SQ_EV_INSERT,
	SQ_RF_LOAD,
	SQ_RF_UPSERT,
	SQ_CH_INSERT,
	SQ_IN_LOAD,
	SQ_IN_NEW,
	SQ_IN_INSTALL,
	SQ_IN_REINSTALL,
	SQ_IN_REMOVE,
	SQ_PROBE,
	SQ_RF_GET,
	SQ_RF_ALL,
	SQ_RF_BY_INSTANCE,
	SQ_RF_BY_STATUS,
	SQ_RF_BY_BOTH,
	SQ_COUNTS,
	SQ_IN_GET,
	SQ_IN_ALL,
	SQ_IN_OF_REFUNDS,
	SQ_IN_ENSURE,
	SQ_BF_START,
	SQ_BF_PAGE,
	SQ_BF_RESET,
	SQ_BF_FINISH,
	SQ_CH_READ,
	SQ_CH_GET,
	SQ_CH_POSTED,
	SQ_CH_LAST,
	SQ_EX_GET,
	SQ_EX_ALL,
	SQ_EX_ENSURE,
	SQ_EX_POS,
	SQ_EX_DELIVERED,
	SQ_EX_LOG,
	SQ_EX_UNDEAD,
	SQ_EX_FAILED,
	SQ_EX_ERROR,
	SQ_EX_DEAD,
	SQ_EX_DEAD_PUT,
	SQ_EX_SKIP_LOG,
	SQ_EX_SKIP,
	SQ_EX_REPLAY,
	SQ_EX_QUEUE,
	SQ_EX_QUEUE_EPOCH,
	SQ_EX_DEAD_ALL,
	SQ_EX_DEAD_BY,
	SQ_EX_WAS,
	SQ_RF_DAILY,
	SQ_CH_EACH,
	SQ_CH_EACH_BY,
	SQ_CH_EXISTS,
	SQ_EX_DELIVERIES,
	SQ_EX_UNLOG,
	SQ_EX_BUMP,
	SQ_RP_INSERT,
	SQ_RP_COUNTS,
	SQ_RC_INSERT,
	SQ_RC_PRUNE,
	SQ_RC_LAST,
	SQ_NSTMT
};

/* The columns sq_row_read() expects, in this order. */
#define SQ_ROW_COLS							\
	"id, instance_id, charge_id, currency, amount, amount_minor, "	\
	"status, revision, created_date, updated_date, body, source, "	\
	"stored_at, event_seq"
enum {
	SQ_COL_ID, SQ_COL_INSTANCE, SQ_COL_CHARGE, SQ_COL_CURRENCY,
	SQ_COL_AMOUNT, SQ_COL_MINOR, SQ_COL_STATUS, SQ_COL_REVISION,
	SQ_COL_CREATED, SQ_COL_UPDATED, SQ_COL_BODY, SQ_COL_SOURCE,
	SQ_COL_STORED_AT, SQ_COL_SEQ
};
#define SQ_ROW_ORDER	" ORDER BY created_date, id"

/* The columns sq_change_read() expects, in this order. */
#define SQ_CH_COLS_HEAD							\
	"seq, refund_id, instance_id, charge_id, revision, status, "	\
	"prev_status, currency, amount, amount_minor, amount_exponent, "\
	"returned_application_fee, returned_processing_fee, "		\
	"created_date, updated_date, source, changed_at, event_seq, "
#define SQ_CH_COLS	SQ_CH_COLS_HEAD "body"
/* The same for a walk without bodies: only an entry written before
 * migration 002 (charge_id NULL) brings its body, for the fallback. */
#define SQ_CH_COLS_LIGHT						\
	SQ_CH_COLS_HEAD "CASE WHEN charge_id IS NULL THEN body END"

/* The status whose versions are posted (POSTING_STATUS_SUCCEEDED of
 * the exporters, a layer above). */
#define SQ_STATUS_POSTED	"SUCCEEDED"

/* How many runs of each instance reconcile_runs keeps. */
#define SQ_RUNS_KEPT	100

/* The columns sq_export_read() expects, in this order: an exporter's
 * row and the counts of its dead letters. */
#define SQ_EX_COLS							\
	"p.exporter, p.position, p.epoch, p.delivered, p.failures, "	\
	"coalesce(p.retry_seq, 0), p.retry_attempts, "			\
	"coalesce(p.retry_since, 0), p.last_error, p.last_error_at, "	\
	"p.last_delivery_at, "						\
	"(SELECT count(*) FROM exporter_dead_letters d"			\
	" WHERE d.exporter = p.exporter AND d.queued = 0), "		\
	"(SELECT count(*) FROM exporter_dead_letters d"			\
	" WHERE d.exporter = p.exporter AND d.queued = 1), "		\
	"(SELECT coalesce(min(d.seq), 0) FROM exporter_dead_letters d"	\
	" WHERE d.exporter = p.exporter AND d.queued = 1"		\
	" AND d.seq <= p.position)"

/* The columns sq_dead_read() expects, in this order. */
#define SQ_DEAD_COLS							\
	"exporter, seq, refund_id, revision, idempotency_key, reason, "	\
	"last_response, attempts, first_failure_at, dead_at, queued"

/* Clearing the retry state of an exporter row, in an UPDATE's SET. */
#define SQ_EX_NO_RETRY							\
	"retry_seq = NULL, retry_attempts = 0, retry_since = NULL"

/* The columns sq_instance_read() expects, in this order. */
#define SQ_IN_COLS							\
	"instance_id, installed_at, removed_at, backfill, "		\
	"backfill_refunds, backfill_pages, backfill_cursor, last_error, " \
	"backfill_started_at, backfill_finished_at"

static const struct {
	const char	*name;	/* for log lines */
	const char	*sql;
} sq_defs[SQ_NSTMT] = {
	[SQ_BEGIN] = { "begin", "BEGIN IMMEDIATE" },
	[SQ_COMMIT] = { "commit", "COMMIT" },
	[SQ_ROLLBACK] = { "rollback", "ROLLBACK" },
	[SQ_SP_BEGIN] = { "savepoint", "SAVEPOINT ev" },
	[SQ_SP_RELEASE] = { "release savepoint", "RELEASE ev" },
	[SQ_SP_ROLLBACK] = { "roll back savepoint", "ROLLBACK TO ev" },
	[SQ_EV_SEEN] = { "look up event",
	    "SELECT 1 FROM webhook_events WHERE event_id = ?1" },
	[SQ_EV_INSERT] = { "record event",
	    "INSERT INTO webhook_events (event_id, event_type, instance_id,"
	    " entity_id, received_at, outcome, event_time, event_seq)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)" },
	[SQ_RF_LOAD] = { "load refund",
	    "SELECT revision, event_seq, updated_date, status, instance_id"
	    " FROM refunds WHERE id = ?1" },
	[SQ_RF_UPSERT] = { "store refund",
	    "INSERT INTO refunds (id, instance_id, charge_id, currency,"
	    " amount, amount_minor, status, revision, created_date,"
	    " updated_date, body, source, stored_at, event_seq,"
	    " amount_exponent)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
	    " ?13, ?14, ?15)"
	    " ON CONFLICT (id) DO UPDATE SET"
	    " instance_id = coalesce(excluded.instance_id,"
	    " refunds.instance_id),"
	    " charge_id = excluded.charge_id, currency = excluded.currency,"
	    " amount = excluded.amount, amount_minor = excluded.amount_minor,"
	    " status = excluded.status, revision = excluded.revision,"
	    " created_date = excluded.created_date,"
	    " updated_date = excluded.updated_date, body = excluded.body,"
	    " source = excluded.source, stored_at = excluded.stored_at,"
	    " event_seq = excluded.event_seq,"
	    " amount_exponent = excluded.amount_exponent" },
	[SQ_CH_INSERT] = { "append change",
	    "INSERT INTO changes (refund_id, instance_id, revision, status,"
	    " prev_status, currency, amount, amount_minor, source,"
	    " changed_at, body, event_seq, amount_exponent, charge_id,"
	    " created_date, updated_date, returned_application_fee,"
	    " returned_processing_fee)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
	    " ?13, ?14, ?15, ?16, ?17, ?18)" },
	[SQ_IN_LOAD] = { "load instance",
	    "SELECT installed_at IS NOT NULL, removed_at IS NOT NULL"
	    " FROM instances WHERE instance_id = ?1" },
	[SQ_IN_NEW] = { "create instance",
	    "INSERT INTO instances (instance_id, installed_at, app_id,"
	    " backfill, removed_at, updated_at)"
	    " VALUES (?1, ?2, ?3, 'pending', ?4, ?5)" },
	[SQ_IN_INSTALL] = { "install instance",
	    "UPDATE instances SET installed_at = ?2,"
	    " app_id = coalesce(?3, app_id), updated_at = ?2"
	    " WHERE instance_id = ?1" },
	[SQ_IN_REINSTALL] = { "reinstall instance",
	    "UPDATE instances SET installed_at = ?2,"
	    " app_id = coalesce(?3, app_id), removed_at = NULL,"
	    " backfill = 'pending', backfill_cursor = NULL,"
	    " backfill_pages = 0, backfill_refunds = 0,"
	    " backfill_started_at = NULL, backfill_finished_at = NULL,"
	    " last_error = NULL, updated_at = ?2"
	    " WHERE instance_id = ?1" },
	[SQ_IN_REMOVE] = { "remove instance",
	    "UPDATE instances SET removed_at = ?2,"
	    " app_id = coalesce(?3, app_id), updated_at = ?2"
	    " WHERE instance_id = ?1" },
	[SQ_PROBE] = { "probe",
	    "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?1)" },
	[SQ_RF_GET] = { "read refund",
	    "SELECT " SQ_ROW_COLS " FROM refunds WHERE id = ?1" },
	[SQ_RF_ALL] = { "list refunds",
	    "SELECT " SQ_ROW_COLS " FROM refunds" SQ_ROW_ORDER },
	[SQ_RF_BY_INSTANCE] = { "list refunds",
	    "SELECT " SQ_ROW_COLS " FROM refunds WHERE instance_id = ?1"
	    SQ_ROW_ORDER },
	[SQ_RF_BY_STATUS] = { "list refunds",
	    "SELECT " SQ_ROW_COLS " FROM refunds WHERE status = ?2"
	    SQ_ROW_ORDER },
	[SQ_RF_BY_BOTH] = { "list refunds",
	    "SELECT " SQ_ROW_COLS " FROM refunds"
	    " WHERE instance_id = ?1 AND status = ?2" SQ_ROW_ORDER },
	[SQ_COUNTS] = { "count",
	    "SELECT (SELECT count(*) FROM refunds),"
	    " (SELECT count(*) FROM webhook_events),"
	    " (SELECT count(*) FROM changes),"
	    " (SELECT coalesce(max(seq), 0) FROM changes),"
	    " (SELECT count(*) FROM instances)" },
	[SQ_IN_GET] = { "read instance",
	    "SELECT " SQ_IN_COLS " FROM instances WHERE instance_id = ?1" },
	[SQ_IN_ALL] = { "list instances",
	    "SELECT " SQ_IN_COLS " FROM instances ORDER BY instance_id" },
	/* Walks the refunds_instance index, not the table. */
	[SQ_IN_OF_REFUNDS] = { "list the instances of refunds",
	    "SELECT DISTINCT instance_id FROM refunds"
	    " WHERE instance_id IS NOT NULL ORDER BY instance_id" },
	[SQ_IN_ENSURE] = { "add instance",
	    "INSERT INTO instances (instance_id, backfill, updated_at)"
	    " VALUES (?1, 'pending', ?2)"
	    " ON CONFLICT (instance_id) DO NOTHING" },
	/* From pending or done (or on request) the run starts afresh;
	 * from running or failed it resumes.  SET reads the old row. */
	[SQ_BF_START] = { "start backfill",
	    "UPDATE instances SET backfill = 'running',"
	    " backfill_started_at = ?2, backfill_finished_at = NULL,"
	    " updated_at = ?2,"
	    " backfill_cursor = CASE WHEN ?3 OR backfill IN ('pending',"
	    " 'done') THEN NULL ELSE backfill_cursor END,"
	    " backfill_pages = CASE WHEN ?3 OR backfill IN ('pending',"
	    " 'done') THEN 0 ELSE backfill_pages END,"
	    " backfill_refunds = CASE WHEN ?3 OR backfill IN ('pending',"
	    " 'done') THEN 0 ELSE backfill_refunds END,"
	    " last_error = CASE WHEN ?3 OR backfill IN ('pending',"
	    " 'done') THEN NULL ELSE last_error END"
	    " WHERE instance_id = ?1" },
	[SQ_BF_PAGE] = { "record backfill pages",
	    "UPDATE instances SET backfill_cursor = ?2,"
	    " backfill_pages = backfill_pages + ?5,"
	    " backfill_refunds = backfill_refunds + ?3, updated_at = ?4"
	    " WHERE instance_id = ?1" },
	[SQ_BF_RESET] = { "reset backfill cursor",
	    "UPDATE instances SET backfill_cursor = NULL,"
	    " backfill_pages = 0, backfill_refunds = 0, last_error = ?2,"
	    " updated_at = ?3 WHERE instance_id = ?1" },
	[SQ_BF_FINISH] = { "finish backfill",
	    "UPDATE instances SET backfill = ?2, last_error = ?3,"
	    " backfill_finished_at = ?4, updated_at = ?4,"
	    " backfill_cursor = CASE WHEN ?2 = 'done' THEN NULL"
	    " ELSE backfill_cursor END"
	    " WHERE instance_id = ?1" },
	[SQ_CH_READ] = { "read change log",
	    "SELECT " SQ_CH_COLS " FROM changes WHERE seq > ?1"
	    " ORDER BY seq LIMIT ?2" },
	[SQ_CH_GET] = { "read change",
	    "SELECT " SQ_CH_COLS " FROM changes WHERE seq = ?1" },
	/* The entry before seq ?2 of refund ?1 (index changes_refund). */
	[SQ_CH_POSTED] = { "read previous change",
	    "SELECT " SQ_CH_COLS " FROM changes WHERE refund_id = ?1"
	    " AND seq < ?2 ORDER BY seq DESC LIMIT 1" },
	[SQ_CH_LAST] = { "last change",
	    "SELECT coalesce(max(seq), 0) FROM changes" },
	[SQ_EX_GET] = { "read exporter",
	    "SELECT " SQ_EX_COLS " FROM exporter_positions p"
	    " WHERE p.exporter = ?1" },
	[SQ_EX_ALL] = { "list exporters",
	    "SELECT " SQ_EX_COLS " FROM exporter_positions p"
	    " ORDER BY p.exporter" },
	[SQ_EX_ENSURE] = { "add exporter",
	    "INSERT INTO exporter_positions (exporter, created_at,"
	    " updated_at) VALUES (?1, ?2, ?2)"
	    " ON CONFLICT (exporter) DO NOTHING" },
	[SQ_EX_POS] = { "read exporter position",
	    "SELECT position, epoch FROM exporter_positions"
	    " WHERE exporter = ?1" },
	[SQ_EX_DELIVERED] = { "record delivery",
	    "UPDATE exporter_positions SET"
	    " position = CASE WHEN ?3 >= 0 THEN ?3 ELSE position END,"
	    " delivered = delivered + ?4, " SQ_EX_NO_RETRY ","
	    " last_delivery_at = ?5, updated_at = ?5"
	    " WHERE exporter = ?1 AND epoch = ?2" },
	[SQ_EX_LOG] = { "log delivery",
	    "INSERT OR REPLACE INTO exporter_deliveries (exporter, seq,"
	    " delivered_at) VALUES (?1, ?2, ?3)" },
	[SQ_EX_UNDEAD] = { "clear dead letter",
	    "DELETE FROM exporter_dead_letters"
	    " WHERE exporter = ?1 AND seq = ?2" },
	[SQ_EX_FAILED] = { "record failure",
	    "UPDATE exporter_positions SET failures = failures + 1,"
	    " retry_seq = ?3, retry_attempts = ?4, retry_since = ?5,"
	    " last_error = ?6, last_error_at = ?7, updated_at = ?7"
	    " WHERE exporter = ?1 AND epoch = ?2" },
	[SQ_EX_ERROR] = { "record exporter error",
	    "UPDATE exporter_positions SET failures = failures + 1,"
	    " last_error = ?2, last_error_at = ?3, updated_at = ?3"
	    " WHERE exporter = ?1" },
	[SQ_EX_DEAD] = { "record dead letter",
	    "UPDATE exporter_positions SET"
	    " position = CASE WHEN ?3 >= 0 THEN ?3 ELSE position END,"
	    " failures = failures + 1, " SQ_EX_NO_RETRY ","
	    " last_error = ?4, last_error_at = ?5, updated_at = ?5"
	    " WHERE exporter = ?1 AND epoch = ?2" },
	[SQ_EX_DEAD_PUT] = { "store dead letter",
	    "INSERT OR REPLACE INTO exporter_dead_letters (exporter, seq,"
	    " refund_id, revision, idempotency_key, reason, last_response,"
	    " attempts, first_failure_at, dead_at, queued)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
	    " CASE WHEN ?9 > 0 THEN"
	    " strftime('%Y-%m-%dT%H:%M:%SZ', ?9, 'unixepoch')"
	    " ELSE ?10 END, ?10, ?11)" },
	[SQ_EX_SKIP_LOG] = { "log skipped changes",
	    "INSERT OR REPLACE INTO exporter_deliveries (exporter, seq,"
	    " delivered_at) SELECT ?1, c.seq, ?4 FROM changes c"
	    " WHERE c.seq > ?2 AND c.seq <= ?3 AND NOT EXISTS"
	    " (SELECT 1 FROM exporter_dead_letters d"
	    " WHERE d.exporter = ?1 AND d.seq = c.seq)" },
	[SQ_EX_SKIP] = { "fast-forward exporter",
	    "UPDATE exporter_positions SET position = ?3,"
	    " delivered = delivered + ?4, " SQ_EX_NO_RETRY ","
	    " updated_at = ?5"
	    " WHERE exporter = ?1 AND epoch = ?2 AND position < ?3" },
	[SQ_EX_REPLAY] = { "replay exporter",
	    "UPDATE exporter_positions SET position = ?2,"
	    " epoch = epoch + 1, " SQ_EX_NO_RETRY ", updated_at = ?3"
	    " WHERE exporter = ?1" },
	[SQ_EX_QUEUE] = { "queue dead letters",
	    "UPDATE exporter_dead_letters SET queued = 1"
	    " WHERE queued = 0 AND (?1 IS NULL OR exporter = ?1)" },
	[SQ_EX_QUEUE_EPOCH] = { "move exporter epoch",
	    "UPDATE exporter_positions SET epoch = epoch + 1,"
	    " updated_at = ?2 WHERE (?1 IS NULL OR exporter = ?1)"
	    " AND exporter IN (SELECT exporter FROM exporter_dead_letters"
	    " WHERE queued = 1)" },
	[SQ_EX_DEAD_ALL] = { "list dead letters",
	    "SELECT " SQ_DEAD_COLS " FROM exporter_dead_letters"
	    " ORDER BY exporter, seq" },
	[SQ_EX_DEAD_BY] = { "list dead letters",
	    "SELECT " SQ_DEAD_COLS " FROM exporter_dead_letters"
	    " WHERE exporter = ?1 ORDER BY seq" },
	[SQ_EX_WAS] = { "look up delivery",
	    "SELECT 1 FROM exporter_deliveries"
	    " WHERE exporter = ?1 AND seq = ?2" },
	/* A scan, like the other listings: status pages are not the hot
	 * path.  One day's refunds of one currency share an exponent. */
	[SQ_RF_DAILY] = { "count refunds per day",
	    "SELECT substr(coalesce(created_date, stored_at), 1, 10) AS day,"
	    " currency, count(*),"
	    /* In two parts, each far from overflowing: sum() would fail
	     * the whole query on the day two huge amounts add up past
	     * INT64_MAX.  sq_day_each() adds them, checked. */
	    " coalesce(sum(amount_minor / 1000000000), 0),"
	    " coalesce(sum(amount_minor % 1000000000), 0),"
	    " max(amount_exponent), count(*) - count(amount_minor)"
	    " FROM refunds WHERE day >= ?1"
	    " GROUP BY day, currency ORDER BY day DESC, currency" },
	/* The walks of reconcile.  Without an instance the walk follows
	 * the primary key; with one it scans it too (no index on
	 * changes.instance_id: it would cost every webhook a page write
	 * for a periodic job's benefit). */
	[SQ_CH_EACH] = { "walk change log",
	    "SELECT " SQ_CH_COLS_LIGHT " FROM changes ORDER BY seq" },
	[SQ_CH_EACH_BY] = { "walk change log",
	    "SELECT " SQ_CH_COLS_LIGHT " FROM changes WHERE instance_id = ?1"
	    " ORDER BY seq" },
	[SQ_CH_EXISTS] = { "look up change",
	    "SELECT 1 FROM changes WHERE seq = ?1" },
	[SQ_EX_DELIVERIES] = { "walk delivery log",
	    "SELECT seq FROM exporter_deliveries WHERE exporter = ?1"
	    " ORDER BY seq" },
	[SQ_EX_UNLOG] = { "forget delivery",
	    "DELETE FROM exporter_deliveries"
	    " WHERE exporter = ?1 AND seq = ?2" },
	[SQ_EX_BUMP] = { "move exporter epoch",
	    "UPDATE exporter_positions SET epoch = epoch + 1,"
	    " updated_at = ?2 WHERE exporter = ?1" },
	[SQ_RP_INSERT] = { "record repair",
	    "INSERT INTO reconcile_repairs (at, instance_id, kind,"
	    " refund_id, exporter, seq, detail)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)" },
	[SQ_RP_COUNTS] = { "count repairs",
	    "SELECT kind, count(*) FROM reconcile_repairs"
	    " GROUP BY kind ORDER BY kind" },
	[SQ_RC_INSERT] = { "record reconcile run",
	    "INSERT INTO reconcile_runs (instance_id, started_at,"
	    " finished_at, outcome, heal, wix_refunds, store_refunds, drift,"
	    " repaired, error, report)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)" },
	/* Runs over no instance (NULL) are one group: IS, not =.  The
	 * subquery is the newest run beyond the ?2 kept: NULL, and
	 * nothing goes, while there are at most ?2. */
	[SQ_RC_PRUNE] = { "prune reconcile runs",
	    "DELETE FROM reconcile_runs WHERE instance_id IS ?1"
	    " AND id <= (SELECT id FROM reconcile_runs"
	    " WHERE instance_id IS ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)" },
	/* GROUP BY puts the runs over no instance in one group, which
	 * ORDER BY lists first. */
	[SQ_RC_LAST] = { "list reconcile runs",
	    "SELECT r.instance_id, r.started_at, r.outcome, r.heal,"
	    " r.wix_refunds, r.store_refunds, r.drift, r.repaired, r.error,"
	    " r.finished_at FROM reconcile_runs r"
	    " JOIN (SELECT max(id) AS id FROM reconcile_runs"
	    " GROUP BY instance_id) l ON r.id = l.id"
	    " ORDER BY r.instance_id" }
};

struct sq {
	sqlite3		*db;
	char		*path;
	bool		 readonly;
	bool		 lazy_sync;	/* synchronous=NORMAL */
	bool		 quiet_busy;	/* RS_ERR_BUSY logged at debug level */
	/* The open transaction is a batch: events go without their
	 * savepoints (store_begin_batch). */
	bool		 batch;
	int64_t		 busy_ms;	/* busy_timeout */
	int64_t		 busy_since;	/* when the current wait began */
	int		 version;	/* user_version after migrations */
	const char	*last_error;	/* static; see store_last_error() */
	sqlite3_stmt	*stmt[SQ_NSTMT];
};

static void	sq_close(void *ctx);

/* How often a connection waiting for the lock tries again. */
#define SQ_BUSY_POLL_MS	1

/*
 * The busy handler: try again every SQ_BUSY_POLL_MS until busy_timeout
 * has passed since this wait began.  SQLite's own handler
 * (sqlite3_busy_timeout) sleeps 1, 2, 5 ... 50 and then 100 ms between
 * tries, so a connection waiting behind a writer that commits back to
 * back (the webhook writer, at thousands of events a second) finds the
 * lock taken at nearly every try and can wait for seconds: the export
 * lag benchmark measured a delivery p99 of 3.2 s with it at 5,000
 * webhooks/s, and 120 ms with a 1 ms poll (BENCHMARKS.md).
 */
static int
sq_busy(void *arg, int count)
{
	struct sq *s = arg;
	struct timespec ts = { 0, SQ_BUSY_POLL_MS * 1000000L };

	if (count == 0)
		s->busy_since = clock_mono_ms();
	if (clock_mono_ms() - s->busy_since >= s->busy_ms)
		return 0;
	nanosleep(&ts, NULL);
	return 1;
}

/*
 * Map an SQLite result code to ours, and log one line saying what
 * failed (at debug level when it is RS_ERR_BUSY and quiet_busy is set).
 * Lock, space, permission and I/O trouble is RS_ERR_BUSY (the caller
 * answers 503 and Wix retries); a constraint is bad data; the rest is
 * RS_ERR_IO.  Call before any other call on the connection, so the
 * message is still the one of the failure.
 */
static enum rs_status
sq_status(struct sq *s, int rc, const char *what, const char *which)
{
	enum rs_status st;

	/* The error string of the primary code, for the log line of each
	 * request the failure turns away. */
	s->last_error = sqlite3_errstr(rc & 0xff);
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_FULL:
	case SQLITE_READONLY:
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
		st = RS_ERR_BUSY;
		break;
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_TOOBIG:
		st = RS_ERR_INPUT;
		break;
	default:
		st = RS_ERR_IO;
		break;
	}
	if (st == RS_ERR_BUSY && s->quiet_busy)
		log_debug("store: %s: %s%s%s: %s (sqlite code %d)", s->path,
		    what, which != NULL ? " " : "", which != NULL ? which : "",
		    sqlite3_errmsg(s->db), rc);
	else
		log_warnx("store: %s: %s%s%s: %s (sqlite code %d)", s->path,
		    what, which != NULL ? " " : "", which != NULL ? which : "",
		    sqlite3_errmsg(s->db), rc);
	return st;
}

/*
 * At open time: a lock, or a file that cannot be written now (the
 * database, its -wal or -shm, or their directory), is worth a retry;
 * anything else is not.  sq_open() makes it RS_ERR_IO when the database
 * did not exist.
 */
static enum rs_status
sq_open_status(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
		return RS_ERR_BUSY;
	default:
		return RS_ERR_IO;
	}
}

/* Bind helpers: NULL binds SQL NULL.  The first failure is kept in *brc. */
static void
sq_bind_text(sqlite3_stmt *stmt, int i, const char *v, int *brc)
{
	int rc;

	if (v == NULL)
		rc = sqlite3_bind_null(stmt, i);
	else
		rc = sqlite3_bind_text(stmt, i, v, -1, SQLITE_TRANSIENT);
	if (rc != SQLITE_OK && *brc == SQLITE_OK)
		*brc = rc;
}

static void
sq_bind_i64(sqlite3_stmt *stmt, int i, bool present, int64_t v, int *brc)
{
	int rc;

	if (!present)
		rc = sqlite3_bind_null(stmt, i);
	else
		rc = sqlite3_bind_int64(stmt, i, v);
	if (rc != SQLITE_OK && *brc == SQLITE_OK)
		*brc = rc;
}

/* Forget the last run of a cached statement. */
static void
sq_done(sqlite3_stmt *stmt)
{
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
}

/*
 * Run a cached statement that returns no rows, with its parameters
 * bound (brc: the bind result).  which: the id or key it is about, for
 * the log line, or NULL.  Resets it in all cases.
 */
static enum rs_status
sq_run(struct sq *s, enum sq_stmt id, int brc, const char *which)
{
	sqlite3_stmt *stmt = s->stmt[id];
	enum rs_status st = RS_OK;
	int rc = brc;

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(stmt);
		while (rc == SQLITE_ROW)
			rc = sqlite3_step(stmt);
	}
	if (rc != SQLITE_DONE)
		st = sq_status(s, rc, sq_defs[id].name, which);
	sq_done(stmt);
	return st;
}

/* Copy of a text column, or NULL if it is NULL. */
static char *
sq_col_dup(sqlite3_stmt *stmt, int col)
{
	const unsigned char *t;

	if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
		return NULL;
	t = sqlite3_column_text(stmt, col);
	return xstrdup(t != NULL ? (const char *)t : "");
}

/* ---- transactions ---------------------------------------------------- */

static bool
sq_in_txn(struct sq *s)
{
	return sqlite3_get_autocommit(s->db) == 0;
}

static enum rs_status
sq_begin(void *ctx)
{
	struct sq *s = ctx;

	s->batch = false;
	if (sq_in_txn(s)) {
		log_warnx("store: %s: begin: a transaction is already open",
		    s->path);
		return RS_ERR_INTERNAL;
	}
	/* Opened read-only (by request, or because the file is): say so
	 * now rather than at the first write. */
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		s->last_error = sqlite3_errstr(SQLITE_READONLY);
		if (s->quiet_busy)
			log_debug("store: %s: begin: the database is open "
			    "read-only", s->path);
		else
			log_warnx("store: %s: begin: the database is open "
			    "read-only", s->path);
		return RS_ERR_BUSY;
	}
	return sq_run(s, SQ_BEGIN, SQLITE_OK, NULL);
}

static enum rs_status
sq_begin_batch(void *ctx)
{
	struct sq *s = ctx;
	enum rs_status st;

	if ((st = sq_begin(s)) == RS_OK)
		s->batch = true;
	return st;
}

static void
sq_rollback(void *ctx)
{
	struct sq *s = ctx;

	if (sq_in_txn(s))
		(void)sq_run(s, SQ_ROLLBACK, SQLITE_OK, NULL);
}

static enum rs_status
sq_commit(void *ctx)
{
	struct sq *s = ctx;
	enum rs_status st;

	if (!sq_in_txn(s)) {
		log_warnx("store: %s: commit: no transaction is open",
		    s->path);
		return RS_ERR_INTERNAL;
	}
	st = sq_run(s, SQ_COMMIT, SQLITE_OK, NULL);
	if (st != RS_OK) {
		sq_rollback(s);
		if (st != RS_ERR_BUSY)
			st = RS_ERR_IO;
	}
	return st;
}

/* Open the savepoint of one event or refund; a transaction must be open. */
static enum rs_status
sq_sp_begin(struct sq *s, const char *func)
{
	if (!sq_in_txn(s)) {
		log_warnx("store: %s: %s: no transaction is open", s->path,
		    func);
		return RS_ERR_INTERNAL;
	}
	if (s->batch)
		return RS_OK;	/* the caller redoes a failed batch */
	return sq_run(s, SQ_SP_BEGIN, SQLITE_OK, NULL);
}

/* Close the savepoint: keep its work if st is RS_OK, else undo it. */
static enum rs_status
sq_sp_end(struct sq *s, enum rs_status st)
{
	if (s->batch)
		return st;
	if (st == RS_OK)
		st = sq_run(s, SQ_SP_RELEASE, SQLITE_OK, NULL);
	if (st != RS_OK && sq_in_txn(s)) {
		/* SQLite may have rolled back the whole transaction
		 * already (disk full, I/O error); then there is nothing
		 * left to undo. */
		(void)sq_run(s, SQ_SP_ROLLBACK, SQLITE_OK, NULL);
		(void)sq_run(s, SQ_SP_RELEASE, SQLITE_OK, NULL);
	}
	return st;
}

/* ---- refunds --------------------------------------------------------- */

/*
 * Upsert r under the version rule, inside an open savepoint, and append
 * to the change log if it won.  now: stored_at and changed_at.
 */
static enum rs_status
sq_refund_upsert(struct sq *s, const struct refund *r,
    const char *instance_id, bool has_seq, int64_t seq, const char *source,
    const char *now, enum store_outcome *out)
{
	sqlite3_stmt *stmt;
	struct refund_version in, old;
	char *old_updated = NULL, *prev_status = NULL, *old_instance = NULL;
	const char *inst;
	enum rs_status st = RS_OK;
	bool found = false;
	int brc = SQLITE_OK, rc, exp;

	memset(&old, 0, sizeof(old));
	/* The stored version, if any. */
	stmt = s->stmt[SQ_RF_LOAD];
	sq_bind_text(stmt, 1, r->id, &brc);
	rc = brc == SQLITE_OK ? sqlite3_step(stmt) : brc;
	if (rc == SQLITE_ROW) {
		found = true;
		old.has_revision = sqlite3_column_type(stmt, 0) != SQLITE_NULL;
		old.revision = sqlite3_column_int64(stmt, 0);
		old.has_sequence = sqlite3_column_type(stmt, 1) != SQLITE_NULL;
		old.sequence = sqlite3_column_int64(stmt, 1);
		old_updated = sq_col_dup(stmt, 2);
		old.updated_date = old_updated;
		prev_status = sq_col_dup(stmt, 3);
		old_instance = sq_col_dup(stmt, 4);
	} else if (rc != SQLITE_DONE)
		st = sq_status(s, rc, sq_defs[SQ_RF_LOAD].name, r->id);
	sq_done(stmt);
	if (st != RS_OK)
		goto out;

	if (found) {
		memset(&in, 0, sizeof(in));
		in.has_revision = r->has_revision;
		in.revision = r->revision;
		in.has_sequence = has_seq;
		in.sequence = seq;
		in.updated_date = r->updated_date;
		if (!refund_version_newer(&in, &old)) {
			*out = STORE_STALE;
			goto out;
		}
	}

	inst = instance_id != NULL ? instance_id : old_instance;
	exp = money_exponent(r->currency);

	stmt = s->stmt[SQ_RF_UPSERT];
	sq_bind_text(stmt, 1, r->id, &brc);
	sq_bind_text(stmt, 2, inst, &brc);
	sq_bind_text(stmt, 3, r->charge_id, &brc);
	sq_bind_text(stmt, 4, r->currency, &brc);
	sq_bind_text(stmt, 5, r->amount, &brc);
	sq_bind_i64(stmt, 6, r->amount_exact, r->amount_minor, &brc);
	sq_bind_text(stmt, 7, r->status, &brc);
	sq_bind_i64(stmt, 8, r->has_revision, r->revision, &brc);
	sq_bind_text(stmt, 9, r->created_date, &brc);
	sq_bind_text(stmt, 10, r->updated_date, &brc);
	sq_bind_text(stmt, 11, r->body, &brc);
	sq_bind_text(stmt, 12, source, &brc);
	sq_bind_text(stmt, 13, now, &brc);
	sq_bind_i64(stmt, 14, has_seq, seq, &brc);
	sq_bind_i64(stmt, 15, exp >= 0, exp, &brc);
	if ((st = sq_run(s, SQ_RF_UPSERT, brc, r->id)) != RS_OK)
		goto out;

	stmt = s->stmt[SQ_CH_INSERT];
	sq_bind_text(stmt, 1, r->id, &brc);
	sq_bind_text(stmt, 2, inst, &brc);
	sq_bind_i64(stmt, 3, r->has_revision, r->revision, &brc);
	sq_bind_text(stmt, 4, r->status, &brc);
	sq_bind_text(stmt, 5, prev_status, &brc);
	sq_bind_text(stmt, 6, r->currency, &brc);
	sq_bind_text(stmt, 7, r->amount, &brc);
	sq_bind_i64(stmt, 8, r->amount_exact, r->amount_minor, &brc);
	sq_bind_text(stmt, 9, source, &brc);
	sq_bind_text(stmt, 10, now, &brc);
	sq_bind_text(stmt, 11, r->body, &brc);
	sq_bind_i64(stmt, 12, has_seq, seq, &brc);
	sq_bind_i64(stmt, 13, exp >= 0, exp, &brc);
	sq_bind_text(stmt, 14, r->charge_id, &brc);
	sq_bind_text(stmt, 15, r->created_date, &brc);
	sq_bind_text(stmt, 16, r->updated_date, &brc);
	sq_bind_text(stmt, 17, r->returned_application_fee, &brc);
	sq_bind_text(stmt, 18, r->returned_processing_fee, &brc);
	if ((st = sq_run(s, SQ_CH_INSERT, brc, r->id)) != RS_OK)
		goto out;
	*out = STORE_APPLIED;
out:
	free(old_updated);
	free(prev_status);
	free(old_instance);
	return st;
}

static enum rs_status
sq_apply_refund(void *ctx, const struct refund *r, const char *instance_id,
    bool has_seq, int64_t seq, const char *source, enum store_outcome *out)
{
	struct sq *s = ctx;
	enum store_outcome o = STORE_STALE;
	enum rs_status st;
	char now[32];

	if ((st = sq_sp_begin(s, "apply refund")) != RS_OK)
		return st;
	clock_wall_iso(now);
	st = sq_refund_upsert(s, r, instance_id, has_seq, seq, source, now,
	    &o);
	st = sq_sp_end(s, st);
	if (st == RS_OK)
		*out = o;
	return st;
}

/* ---- events ---------------------------------------------------------- */

static enum rs_status
sq_event_seen(struct sq *s, const char *key, bool *seen)
{
	sqlite3_stmt *stmt = s->stmt[SQ_EV_SEEN];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK, rc;

	sq_bind_text(stmt, 1, key, &brc);
	rc = brc == SQLITE_OK ? sqlite3_step(stmt) : brc;
	if (rc == SQLITE_ROW)
		*seen = true;
	else if (rc == SQLITE_DONE)
		*seen = false;
	else
		st = sq_status(s, rc, sq_defs[SQ_EV_SEEN].name, key);
	sq_done(stmt);
	return st;
}

static enum rs_status
sq_event_record(struct sq *s, const struct event *ev, const char *key,
    const char *entity_id, const char *now, enum store_outcome o)
{
	sqlite3_stmt *stmt = s->stmt[SQ_EV_INSERT];
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, key, &brc);
	sq_bind_text(stmt, 2, ev->event_type, &brc);
	sq_bind_text(stmt, 3, ev->instance_id, &brc);
	sq_bind_text(stmt, 4, entity_id, &brc);
	sq_bind_text(stmt, 5, now, &brc);
	sq_bind_text(stmt, 6, store_outcome_name(o), &brc);
	sq_bind_text(stmt, 7, ev->event_time, &brc);
	sq_bind_i64(stmt, 8, ev->has_sequence, ev->sequence, &brc);
	return sq_run(s, SQ_EV_INSERT, brc, key);
}

/* The state of an instances row. */
static enum rs_status
sq_instance_load(struct sq *s, const char *id, bool *found,
    bool *installed, bool *removed)
{
	sqlite3_stmt *stmt = s->stmt[SQ_IN_LOAD];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK, rc;

	*found = *installed = *removed = false;
	sq_bind_text(stmt, 1, id, &brc);
	rc = brc == SQLITE_OK ? sqlite3_step(stmt) : brc;
	if (rc == SQLITE_ROW) {
		*found = true;
		*installed = sqlite3_column_int(stmt, 0) != 0;
		*removed = sqlite3_column_int(stmt, 1) != 0;
	} else if (rc != SQLITE_DONE)
		st = sq_status(s, rc, sq_defs[SQ_IN_LOAD].name, id);
	sq_done(stmt);
	return st;
}

/*
 * AppInstalled (install true) or AppRemoved.
 *
 * AppInstalled: a new instance starts with backfill pending.  A row that
 * exists without installed_at (named in the config, say) gets it.  A
 * removed instance that comes back is installed afresh, and its backfill
 * is pending again: webhooks sent while it was removed never reached us.
 * An instance already installed is a duplicate.
 *
 * AppRemoved: an unknown instance is recorded as removed; one removed
 * already is a duplicate.
 */
static enum rs_status
sq_instance_event(struct sq *s, const struct event *ev, const char *now,
    bool install, enum store_outcome *out)
{
	enum sq_stmt id;
	enum rs_status st;
	bool found, installed, removed;
	int brc = SQLITE_OK;

	st = sq_instance_load(s, ev->instance_id, &found, &installed,
	    &removed);
	if (st != RS_OK)
		return st;
	if (!found) {
		id = SQ_IN_NEW;
		sq_bind_text(s->stmt[id], 1, ev->instance_id, &brc);
		sq_bind_text(s->stmt[id], 2, install ? now : NULL, &brc);
		sq_bind_text(s->stmt[id], 3, ev->app_id, &brc);
		sq_bind_text(s->stmt[id], 4, install ? NULL : now, &brc);
		sq_bind_text(s->stmt[id], 5, now, &brc);
	} else if (install ? removed || !installed : !removed) {
		if (!install)
			id = SQ_IN_REMOVE;
		else
			id = removed ? SQ_IN_REINSTALL : SQ_IN_INSTALL;
		sq_bind_text(s->stmt[id], 1, ev->instance_id, &brc);
		sq_bind_text(s->stmt[id], 2, now, &brc);
		sq_bind_text(s->stmt[id], 3, ev->app_id, &brc);
	} else {
		*out = STORE_DUPLICATE;
		return RS_OK;
	}
	if ((st = sq_run(s, id, brc, ev->instance_id)) == RS_OK)
		*out = STORE_APPLIED;
	return st;
}

/*
 * A key seen before is a duplicate and records nothing (the first
 * delivery is in webhook_events already).  Everything else is recorded,
 * including an app event that finds its instance already in that state
 * (outcome "duplicate", under its own key).
 */
static enum rs_status
sq_apply_event(void *ctx, const struct event *ev, const char *key,
    enum store_outcome *out)
{
	struct sq *s = ctx;
	enum store_outcome o = STORE_IGNORED;
	enum rs_status st;
	const char *entity_id = ev->entity_id;
	char now[32];
	bool seen = false;

	if ((st = sq_sp_begin(s, "apply event")) != RS_OK)
		return st;
	if ((st = sq_event_seen(s, key, &seen)) != RS_OK)
		goto out;
	if (seen) {
		o = STORE_DUPLICATE;
		goto out;
	}
	clock_wall_iso(now);
	switch (ev->kind) {
	case EVENT_REFUND:
		entity_id = ev->refund.id;
		st = sq_refund_upsert(s, &ev->refund, ev->instance_id,
		    ev->has_sequence, ev->sequence, "webhook", now, &o);
		break;
	case EVENT_APP_INSTALLED:
		st = sq_instance_event(s, ev, now, true, &o);
		break;
	case EVENT_APP_REMOVED:
		st = sq_instance_event(s, ev, now, false, &o);
		break;
	case EVENT_IGNORED:
		o = STORE_IGNORED;
		break;
	default:
		log_warnx("store: %s: event %s: unknown kind %d", s->path,
		    key, (int)ev->kind);
		st = RS_ERR_INTERNAL;
		break;
	}
	if (st == RS_OK)
		st = sq_event_record(s, ev, key, entity_id, now, o);
out:
	st = sq_sp_end(s, st);
	if (st == RS_OK)
		*out = o;
	return st;
}

/* ---- the readiness probe --------------------------------------------- */

static enum rs_status
sq_probe(void *ctx)
{
	struct sq *s = ctx;
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	sq_bind_text(s->stmt[SQ_PROBE], 1, now, &brc);
	if ((st = sq_run(s, SQ_PROBE, brc, NULL)) != RS_OK) {
		sq_rollback(s);
		return st;
	}
	return sq_commit(s);
}

/* ---- reading --------------------------------------------------------- */

/* The entity from the columns alone: for a body that no longer parses. */
static void
sq_refund_from_columns(sqlite3_stmt *stmt, struct refund *r)
{
	memset(r, 0, sizeof(*r));
	r->id = sq_col_dup(stmt, SQ_COL_ID);
	r->charge_id = sq_col_dup(stmt, SQ_COL_CHARGE);
	r->currency = sq_col_dup(stmt, SQ_COL_CURRENCY);
	r->amount = sq_col_dup(stmt, SQ_COL_AMOUNT);
	r->amount_exact = sqlite3_column_type(stmt, SQ_COL_MINOR) !=
	    SQLITE_NULL;
	r->amount_minor = sqlite3_column_int64(stmt, SQ_COL_MINOR);
	r->status = sq_col_dup(stmt, SQ_COL_STATUS);
	r->has_revision = sqlite3_column_type(stmt, SQ_COL_REVISION) !=
	    SQLITE_NULL;
	r->revision = sqlite3_column_int64(stmt, SQ_COL_REVISION);
	r->created_date = sq_col_dup(stmt, SQ_COL_CREATED);
	r->updated_date = sq_col_dup(stmt, SQ_COL_UPDATED);
	r->body = sq_col_dup(stmt, SQ_COL_BODY);
}

/*
 * The row under stmt (selected with SQ_ROW_COLS).  The entity comes from
 * parsing the stored body again, so it reads exactly as it did when it
 * was stored; should that fail, from the columns, with a warning.
 */
static void
sq_row_read(struct sq *s, sqlite3_stmt *stmt, struct store_refund_row *row)
{
	const unsigned char *body;
	const char *why = NULL;
	cJSON *json = NULL;
	bool ok = false;
	int len;

	memset(row, 0, sizeof(*row));
	body = sqlite3_column_text(stmt, SQ_COL_BODY);
	len = sqlite3_column_bytes(stmt, SQ_COL_BODY);
	if (body == NULL)
		why = "no body";
	else if (json_parse_strict((const char *)body, (size_t)len,
	    JSON_MAX_DEPTH, &json, &why) == RS_OK &&
	    refund_from_json(json, &row->refund, &why) == RS_OK)
		ok = true;
	if (!ok) {
		log_warnx("store: %s: refund %s: stored body does not parse "
		    "(%s); using the columns", s->path,
		    (const char *)sqlite3_column_text(stmt, SQ_COL_ID),
		    why != NULL ? why : "unknown reason");
		refund_cleanup(&row->refund);
		sq_refund_from_columns(stmt, &row->refund);
	}
	cJSON_Delete(json);
	row->instance_id = sq_col_dup(stmt, SQ_COL_INSTANCE);
	row->source = sq_col_dup(stmt, SQ_COL_SOURCE);
	row->stored_at = sq_col_dup(stmt, SQ_COL_STORED_AT);
	row->has_sequence = sqlite3_column_type(stmt, SQ_COL_SEQ) !=
	    SQLITE_NULL;
	row->sequence = sqlite3_column_int64(stmt, SQ_COL_SEQ);
}

/*
 * Step statement id (parameters bound; brc is the binding result) for at
 * most one row: RS_OK with the row ready to read, RS_ERR_NOTFOUND, or the
 * mapped error (logged, naming which).  The caller reads the row, then
 * calls sq_done() in every case.
 */
static enum rs_status
sq_step_one(struct sq *s, enum sq_stmt id, int brc, const char *which)
{
	int rc = brc == SQLITE_OK ? sqlite3_step(s->stmt[id]) : brc;

	if (rc == SQLITE_ROW)
		return RS_OK;
	if (rc == SQLITE_DONE)
		return RS_ERR_NOTFOUND;
	return sq_status(s, rc, sq_defs[id].name, which);
}

static enum rs_status
sq_refund_get(void *ctx, const char *id, struct store_refund_row *row)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_RF_GET];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, id, &brc);
	if ((st = sq_step_one(s, SQ_RF_GET, brc, id)) == RS_OK)
		sq_row_read(s, stmt, row);
	sq_done(stmt);
	return st;
}

/*
 * The walk holds one read transaction open while fn runs (keep fn short:
 * a long reader stops WAL checkpoints).  fn may use the store, even walk
 * it again: a nested walk gets its own statement.
 */
static enum rs_status
sq_refund_foreach(void *ctx, const char *instance_id, const char *status,
    store_refund_fn fn, void *arg)
{
	struct sq *s = ctx;
	struct store_refund_row row;
	sqlite3_stmt *stmt;
	enum sq_stmt id;
	enum rs_status st = RS_OK;
	bool own = false;
	int brc = SQLITE_OK, rc;

	if (instance_id != NULL && status != NULL)
		id = SQ_RF_BY_BOTH;
	else if (instance_id != NULL)
		id = SQ_RF_BY_INSTANCE;
	else if (status != NULL)
		id = SQ_RF_BY_STATUS;
	else
		id = SQ_RF_ALL;
	stmt = s->stmt[id];
	if (sqlite3_stmt_busy(stmt)) {
		rc = sqlite3_prepare_v2(s->db, sq_defs[id].sql, -1, &stmt,
		    NULL);
		if (rc != SQLITE_OK)
			return sq_status(s, rc, sq_defs[id].name, NULL);
		own = true;
	}
	if (instance_id != NULL)
		sq_bind_text(stmt, 1, instance_id, &brc);
	if (status != NULL)
		sq_bind_text(stmt, 2, status, &brc);
	rc = brc;
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(stmt);
		if (rc != SQLITE_ROW)
			break;
		sq_row_read(s, stmt, &row);
		st = fn(arg, &row);
		store_refund_row_cleanup(&row);
		if (st != RS_OK)
			break;
	}
	if (st == RS_OK && rc != SQLITE_DONE)
		st = sq_status(s, rc, sq_defs[id].name, NULL);
	if (own)
		sqlite3_finalize(stmt);
	else
		sq_done(stmt);
	return st;
}

static enum rs_status
sq_counts(void *ctx, struct store_counts *out)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_COUNTS];
	enum rs_status st = RS_OK;
	int rc;

	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		out->refunds = sqlite3_column_int64(stmt, 0);
		out->events = sqlite3_column_int64(stmt, 1);
		out->changes = sqlite3_column_int64(stmt, 2);
		out->last_change = sqlite3_column_int64(stmt, 3);
		out->instances = sqlite3_column_int64(stmt, 4);
	} else
		st = sq_status(s, rc, sq_defs[SQ_COUNTS].name, NULL);
	sq_done(stmt);
	return st;
}

/* ---- instances and their backfill ------------------------------------ */

static enum store_backfill
sq_backfill_parse(const char *t)
{
	if (t != NULL && strcmp(t, "running") == 0)
		return STORE_BACKFILL_RUNNING;
	if (t != NULL && strcmp(t, "done") == 0)
		return STORE_BACKFILL_DONE;
	if (t != NULL && strcmp(t, "failed") == 0)
		return STORE_BACKFILL_FAILED;
	/* The CHECK constraint allows nothing else. */
	return STORE_BACKFILL_PENDING;
}

/* The row under stmt (selected with SQ_IN_COLS). */
static void
sq_instance_read(sqlite3_stmt *stmt, struct store_instance *out)
{
	memset(out, 0, sizeof(*out));
	out->instance_id = sq_col_dup(stmt, 0);
	out->installed_at = sq_col_dup(stmt, 1);
	out->removed_at = sq_col_dup(stmt, 2);
	out->backfill = sq_backfill_parse(
	    (const char *)sqlite3_column_text(stmt, 3));
	out->backfill_refunds = sqlite3_column_int64(stmt, 4);
	out->backfill_pages = sqlite3_column_int64(stmt, 5);
	out->backfill_cursor = sq_col_dup(stmt, 6);
	out->last_error = sq_col_dup(stmt, 7);
	out->backfill_started_at = sq_col_dup(stmt, 8);
	out->backfill_finished_at = sq_col_dup(stmt, 9);
}

static enum rs_status
sq_instance_get(void *ctx, const char *id, struct store_instance *out)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_IN_GET];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, id, &brc);
	if ((st = sq_step_one(s, SQ_IN_GET, brc, id)) == RS_OK)
		sq_instance_read(stmt, out);
	sq_done(stmt);
	return st;
}

/* Like sq_refund_foreach: a nested walk gets its own statement. */
static enum rs_status
sq_instance_foreach(void *ctx, store_instance_fn fn, void *arg)
{
	struct sq *s = ctx;
	struct store_instance in;
	sqlite3_stmt *stmt = s->stmt[SQ_IN_ALL];
	enum rs_status st = RS_OK;
	bool own = false;
	int rc;

	if (sqlite3_stmt_busy(stmt)) {
		rc = sqlite3_prepare_v2(s->db, sq_defs[SQ_IN_ALL].sql, -1,
		    &stmt, NULL);
		if (rc != SQLITE_OK)
			return sq_status(s, rc, sq_defs[SQ_IN_ALL].name, NULL);
		own = true;
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		sq_instance_read(stmt, &in);
		st = fn(arg, &in);
		store_instance_cleanup(&in);
		if (st != RS_OK)
			break;
	}
	if (st == RS_OK && rc != SQLITE_DONE)
		st = sq_status(s, rc, sq_defs[SQ_IN_ALL].name, NULL);
	if (own)
		sqlite3_finalize(stmt);
	else
		sq_done(stmt);
	return st;
}

/* Create the row of id if absent, inside an open transaction. */
static enum rs_status
sq_instance_add(struct sq *s, const char *id, const char *now,
    bool *created)
{
	sqlite3_stmt *stmt = s->stmt[SQ_IN_ENSURE];
	enum rs_status st;
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, id, &brc);
	sq_bind_text(stmt, 2, now, &brc);
	st = sq_run(s, SQ_IN_ENSURE, brc, id);
	if (st == RS_OK)
		*created = sqlite3_changes(s->db) > 0;
	return st;
}

/*
 * Run the bound UPDATE id, about instance which, inside an open
 * transaction: RS_ERR_NOTFOUND if it touched no row.
 */
static enum rs_status
sq_instance_update(struct sq *s, enum sq_stmt id, int brc,
    const char *which)
{
	enum rs_status st;

	st = sq_run(s, id, brc, which);
	if (st == RS_OK && sqlite3_changes(s->db) == 0)
		st = RS_ERR_NOTFOUND;
	return st;
}

/* End the transaction of one instance operation: commit if st is RS_OK,
 * else roll back. */
static enum rs_status
sq_txn_end(struct sq *s, enum rs_status st)
{
	if (st == RS_OK)
		return sq_commit(s);
	sq_rollback(s);
	return st;
}

static const char *
sq_last_error(void *ctx)
{
	return ((struct sq *)ctx)->last_error;
}

static enum rs_status
sq_instance_ensure(void *ctx, const char *id, bool *created)
{
	struct sq *s = ctx;
	enum rs_status st;
	char now[32];

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	st = sq_instance_add(s, id, now, created);
	return sq_txn_end(s, st);
}

static enum rs_status
sq_backfill_start(void *ctx, const char *id, bool restart)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_BF_START];
	enum rs_status st;
	char now[32];
	bool created;
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	if ((st = sq_instance_add(s, id, now, &created)) == RS_OK) {
		sq_bind_text(stmt, 1, id, &brc);
		sq_bind_text(stmt, 2, now, &brc);
		sq_bind_i64(stmt, 3, true, restart ? 1 : 0, &brc);
		st = sq_instance_update(s, SQ_BF_START, brc, id);
	}
	return sq_txn_end(s, st);
}

/* Every page's refunds in order, then one update of the instance row:
 * the last page's cursor, npages more pages and all their refunds. */
static enum rs_status
sq_backfill_pages(void *ctx, const char *id,
    const struct store_bf_page *pages, size_t npages, size_t *applied)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_BF_PAGE];
	const struct store_bf_page *p;
	enum store_outcome o;
	enum rs_status st;
	size_t i, k;
	int64_t total = 0;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	for (k = 0; k < npages && st == RS_OK; k++) {
		p = &pages[k];
		applied[k] = 0;
		for (i = 0; i < p->n && st == RS_OK; i++) {
			o = STORE_STALE;
			st = sq_apply_refund(s, &p->refunds[i], id, false, 0,
			    "backfill", &o);
			if (st == RS_OK && o == STORE_APPLIED)
				applied[k]++;
		}
		total += (int64_t)p->n;
	}
	if (st == RS_OK) {
		clock_wall_iso(now);
		sq_bind_text(stmt, 1, id, &brc);
		sq_bind_text(stmt, 2, pages[npages - 1].next_cursor, &brc);
		sq_bind_i64(stmt, 3, true, total, &brc);
		sq_bind_text(stmt, 4, now, &brc);
		sq_bind_i64(stmt, 5, true, (int64_t)npages, &brc);
		st = sq_instance_update(s, SQ_BF_PAGE, brc, id);
	}
	return sq_txn_end(s, st);
}

static enum rs_status
sq_backfill_reset_cursor(void *ctx, const char *id, const char *why)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_BF_RESET];
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	sq_bind_text(stmt, 1, id, &brc);
	sq_bind_text(stmt, 2, why, &brc);
	sq_bind_text(stmt, 3, now, &brc);
	st = sq_instance_update(s, SQ_BF_RESET, brc, id);
	return sq_txn_end(s, st);
}

static enum rs_status
sq_backfill_finish(void *ctx, const char *id, bool done, const char *error)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_BF_FINISH];
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	sq_bind_text(stmt, 1, id, &brc);
	sq_bind_text(stmt, 2, store_backfill_name(done ?
	    STORE_BACKFILL_DONE : STORE_BACKFILL_FAILED), &brc);
	sq_bind_text(stmt, 3, error, &brc);
	sq_bind_text(stmt, 4, now, &brc);
	st = sq_instance_update(s, SQ_BF_FINISH, brc, id);
	return sq_txn_end(s, st);
}

/* ---- the change log and the exporters -------------------------------- */

enum {
	SQ_CH_SEQ, SQ_CH_REFUND, SQ_CH_INSTANCE, SQ_CH_CHARGE, SQ_CH_REVISION,
	SQ_CH_STATUS, SQ_CH_PREV, SQ_CH_CURRENCY, SQ_CH_AMOUNT, SQ_CH_MINOR,
	SQ_CH_EXP, SQ_CH_APPFEE, SQ_CH_PROCFEE, SQ_CH_CREATED, SQ_CH_UPDATED,
	SQ_CH_SOURCE, SQ_CH_CHANGED, SQ_CH_EVSEQ, SQ_CH_BODY
};

/*
 * An entry written before migration 002 has no entity columns: take
 * them from its body, which the store validated when it was written.
 */
static void
sq_change_from_body(struct sq *s, struct store_change *c)
{
	struct refund r;
	const char *why = NULL;
	cJSON *json = NULL;

	memset(&r, 0, sizeof(r));
	if (c->body != NULL && json_parse_strict(c->body, strlen(c->body),
	    JSON_MAX_DEPTH, &json, &why) == RS_OK &&
	    refund_from_json(json, &r, &why) == RS_OK) {
		free(c->charge_id);
		free(c->created_date);
		free(c->updated_date);
		free(c->returned_application_fee);
		free(c->returned_processing_fee);
		c->charge_id = r.charge_id;
		c->created_date = r.created_date;
		c->updated_date = r.updated_date;
		c->returned_application_fee = r.returned_application_fee;
		c->returned_processing_fee = r.returned_processing_fee;
		r.charge_id = r.created_date = r.updated_date = NULL;
		r.returned_application_fee = r.returned_processing_fee = NULL;
	} else
		log_warnx("store: %s: change %lld: body does not parse (%s)",
		    s->path, (long long)c->seq,
		    why != NULL ? why : "no body");
	refund_cleanup(&r);
	cJSON_Delete(json);
	if (c->charge_id == NULL)
		c->charge_id = xstrdup("");
}

/* The row under stmt (selected with SQ_CH_COLS). */
static void
sq_change_read(struct sq *s, sqlite3_stmt *stmt, struct store_change *c)
{
	memset(c, 0, sizeof(*c));
	c->seq = sqlite3_column_int64(stmt, SQ_CH_SEQ);
	c->refund_id = sq_col_dup(stmt, SQ_CH_REFUND);
	c->instance_id = sq_col_dup(stmt, SQ_CH_INSTANCE);
	c->charge_id = sq_col_dup(stmt, SQ_CH_CHARGE);
	c->has_revision = sqlite3_column_type(stmt, SQ_CH_REVISION) !=
	    SQLITE_NULL;
	c->revision = sqlite3_column_int64(stmt, SQ_CH_REVISION);
	c->status = sq_col_dup(stmt, SQ_CH_STATUS);
	c->prev_status = sq_col_dup(stmt, SQ_CH_PREV);
	c->currency = sq_col_dup(stmt, SQ_CH_CURRENCY);
	c->amount = sq_col_dup(stmt, SQ_CH_AMOUNT);
	c->amount_exact = sqlite3_column_type(stmt, SQ_CH_MINOR) !=
	    SQLITE_NULL;
	c->amount_minor = sqlite3_column_int64(stmt, SQ_CH_MINOR);
	c->exponent = sqlite3_column_type(stmt, SQ_CH_EXP) != SQLITE_NULL ?
	    sqlite3_column_int(stmt, SQ_CH_EXP) : -1;
	c->returned_application_fee = sq_col_dup(stmt, SQ_CH_APPFEE);
	c->returned_processing_fee = sq_col_dup(stmt, SQ_CH_PROCFEE);
	c->created_date = sq_col_dup(stmt, SQ_CH_CREATED);
	c->updated_date = sq_col_dup(stmt, SQ_CH_UPDATED);
	c->source = sq_col_dup(stmt, SQ_CH_SOURCE);
	c->changed_at = sq_col_dup(stmt, SQ_CH_CHANGED);
	c->has_event_seq = sqlite3_column_type(stmt, SQ_CH_EVSEQ) !=
	    SQLITE_NULL;
	c->event_seq = sqlite3_column_int64(stmt, SQ_CH_EVSEQ);
	c->body = sq_col_dup(stmt, SQ_CH_BODY);
	if (c->charge_id == NULL)
		sq_change_from_body(s, c);
}

/*
 * Fill c's posted_* fields: when c left or followed a SUCCEEDED version,
 * what that version posted is the refund's previous entry in the log
 * (every applied version has one, in seq order).  Its own statement, so
 * it can run while a walk or a batch read steps another.
 */
static enum rs_status
sq_change_posted(struct sq *s, struct store_change *c)
{
	sqlite3_stmt *stmt = s->stmt[SQ_CH_POSTED];
	struct store_change p;
	enum rs_status st;
	int brc = SQLITE_OK;

	if (c->prev_status == NULL ||
	    strcmp(c->prev_status, SQ_STATUS_POSTED) != 0)
		return RS_OK;
	sq_bind_text(stmt, 1, c->refund_id, &brc);
	sq_bind_i64(stmt, 2, true, c->seq, &brc);
	st = sq_step_one(s, SQ_CH_POSTED, brc, c->refund_id);
	if (st == RS_OK) {
		sq_change_read(s, stmt, &p);
		c->has_posted = true;
		c->posted_currency = p.currency;
		c->posted_amount_exact = p.amount_exact;
		c->posted_amount_minor = p.amount_minor;
		c->posted_exponent = p.exponent;
		c->posted_returned_application_fee =
		    p.returned_application_fee;
		c->posted_returned_processing_fee =
		    p.returned_processing_fee;
		p.currency = p.returned_application_fee =
		    p.returned_processing_fee = NULL;
		store_change_cleanup(&p);
	} else if (st == RS_ERR_NOTFOUND) {
		/* The log does not hold it (a store older than the log). */
		st = RS_OK;
	}
	sq_done(stmt);
	return st;
}

/*
 * The rows are read in one statement, which is one read transaction
 * when none is open: short, since it ends with the last row.
 */
static enum rs_status
sq_changes_read(void *ctx, int64_t after, size_t max,
    struct store_change *out, size_t *n)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_CH_READ];
	enum rs_status st = RS_OK;
	size_t got = 0, i;
	int brc = SQLITE_OK, rc;

	sq_bind_i64(stmt, 1, true, after, &brc);
	sq_bind_i64(stmt, 2, true, max > INT64_MAX ? INT64_MAX :
	    (int64_t)max, &brc);
	rc = brc;
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		if (got == max)
			break;
		if ((rc = sqlite3_step(stmt)) != SQLITE_ROW)
			break;
		sq_change_read(s, stmt, &out[got]);
		if ((st = sq_change_posted(s, &out[got++])) != RS_OK)
			break;
	}
	if (st == RS_OK && got < max && rc != SQLITE_DONE)
		st = sq_status(s, rc, sq_defs[SQ_CH_READ].name, NULL);
	if (st != RS_OK) {
		for (i = 0; i < got; i++)
			store_change_cleanup(&out[i]);
		got = 0;
	}
	sq_done(stmt);
	if (st == RS_OK)
		*n = got;
	return st;
}

static enum rs_status
sq_change_get(void *ctx, int64_t seq, struct store_change *out)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_CH_GET];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK;

	sq_bind_i64(stmt, 1, true, seq, &brc);
	if ((st = sq_step_one(s, SQ_CH_GET, brc, NULL)) == RS_OK) {
		sq_change_read(s, stmt, out);
		if ((st = sq_change_posted(s, out)) != RS_OK)
			store_change_cleanup(out);
	}
	sq_done(stmt);
	return st;
}

static enum rs_status
sq_changes_last(void *ctx, int64_t *seq)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_CH_LAST];
	enum rs_status st = RS_OK;
	int rc;

	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		*seq = sqlite3_column_int64(stmt, 0);
	else
		st = sq_status(s, rc, sq_defs[SQ_CH_LAST].name, NULL);
	sq_done(stmt);
	return st;
}

/* The row under stmt (selected with SQ_EX_COLS). */
static void
sq_export_read(sqlite3_stmt *stmt, struct store_export *e)
{
	memset(e, 0, sizeof(*e));
	e->exporter = sq_col_dup(stmt, 0);
	e->position = sqlite3_column_int64(stmt, 1);
	e->epoch = sqlite3_column_int64(stmt, 2);
	e->delivered = sqlite3_column_int64(stmt, 3);
	e->failures = sqlite3_column_int64(stmt, 4);
	e->retry_seq = sqlite3_column_int64(stmt, 5);
	e->retry_attempts = sqlite3_column_int64(stmt, 6);
	e->retry_since = sqlite3_column_int64(stmt, 7);
	e->last_error = sq_col_dup(stmt, 8);
	e->last_error_at = sq_col_dup(stmt, 9);
	e->last_delivery_at = sq_col_dup(stmt, 10);
	e->dead = sqlite3_column_int64(stmt, 11);
	e->queued = sqlite3_column_int64(stmt, 12);
	e->next_queued = sqlite3_column_int64(stmt, 13);
}

static enum rs_status
sq_export_get(void *ctx, const char *name, struct store_export *out)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_EX_GET];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, name, &brc);
	if ((st = sq_step_one(s, SQ_EX_GET, brc, name)) == RS_OK)
		sq_export_read(stmt, out);
	sq_done(stmt);
	return st;
}

/* The callback of a walk and its argument. */
struct sq_walker {
	struct sq		*s;
	store_export_fn		 export_fn;
	store_dead_fn		 dead_fn;
	store_day_fn		 day_fn;
	store_change_fn		 change_fn;
	store_seq_fn		 seq_fn;
	store_kind_count_fn	 kind_fn;
	store_reconcile_fn	 run_fn;
	store_id_fn		 id_fn;
	void			*arg;
};

/* Walk the rows of select id (name bound to ?1 unless NULL), calling
 * each() on every row; a nested walk gets its own statement. */
static enum rs_status
sq_walk(struct sq *s, enum sq_stmt id, const char *name,
    enum rs_status (*each)(sqlite3_stmt *, const struct sq_walker *),
    const struct sq_walker *w)
{
	sqlite3_stmt *stmt = s->stmt[id];
	enum rs_status st = RS_OK;
	bool own = false;
	int brc = SQLITE_OK, rc;

	if (sqlite3_stmt_busy(stmt)) {
		rc = sqlite3_prepare_v2(s->db, sq_defs[id].sql, -1, &stmt,
		    NULL);
		if (rc != SQLITE_OK)
			return sq_status(s, rc, sq_defs[id].name, NULL);
		own = true;
	}
	if (name != NULL)
		sq_bind_text(stmt, 1, name, &brc);
	rc = brc;
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		if ((rc = sqlite3_step(stmt)) != SQLITE_ROW)
			break;
		if ((st = each(stmt, w)) != RS_OK)
			break;
	}
	if (st == RS_OK && rc != SQLITE_DONE)
		st = sq_status(s, rc, sq_defs[id].name, name);
	if (own)
		sqlite3_finalize(stmt);
	else
		sq_done(stmt);
	return st;
}

/* The instance ids that refunds carry (the select leaves out NULLs). */
static enum rs_status
sq_id_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	const char *id = (const char *)sqlite3_column_text(stmt, 0);

	return id != NULL ? w->id_fn(w->arg, id) : RS_OK;
}

static enum rs_status
sq_refund_instances(void *ctx, store_id_fn fn, void *arg)
{
	struct sq_walker w = { .s = ctx, .id_fn = fn, .arg = arg };

	return sq_walk(ctx, SQ_IN_OF_REFUNDS, NULL, sq_id_each, &w);
}

static enum rs_status
sq_export_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	struct store_export e;
	enum rs_status st;

	sq_export_read(stmt, &e);
	st = w->export_fn(w->arg, &e);
	store_export_cleanup(&e);
	return st;
}

static enum rs_status
sq_export_foreach(void *ctx, store_export_fn fn, void *arg)
{
	struct sq_walker w = { .export_fn = fn, .arg = arg };

	return sq_walk(ctx, SQ_EX_ALL, NULL, sq_export_each, &w);
}

static enum rs_status
sq_dead_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	struct store_dead_row d;
	enum rs_status st;

	memset(&d, 0, sizeof(d));
	d.exporter = sq_col_dup(stmt, 0);
	d.seq = sqlite3_column_int64(stmt, 1);
	d.refund_id = sq_col_dup(stmt, 2);
	d.has_revision = sqlite3_column_type(stmt, 3) != SQLITE_NULL;
	d.revision = sqlite3_column_int64(stmt, 3);
	d.idempotency_key = sq_col_dup(stmt, 4);
	d.reason = sq_col_dup(stmt, 5);
	d.last_response = sq_col_dup(stmt, 6);
	d.attempts = sqlite3_column_int64(stmt, 7);
	d.first_failure_at = sq_col_dup(stmt, 8);
	d.dead_at = sq_col_dup(stmt, 9);
	d.queued = sqlite3_column_int(stmt, 10) != 0;
	st = w->dead_fn(w->arg, &d);
	free(d.exporter);
	free(d.refund_id);
	free(d.idempotency_key);
	free(d.reason);
	free(d.last_response);
	free(d.first_failure_at);
	free(d.dead_at);
	return st;
}

static enum rs_status
sq_dead_foreach(void *ctx, const char *name, store_dead_fn fn, void *arg)
{
	struct sq_walker w = { .dead_fn = fn, .arg = arg };

	return sq_walk(ctx, name != NULL ? SQ_EX_DEAD_BY : SQ_EX_DEAD_ALL,
	    name, sq_dead_each, &w);
}

static enum rs_status
sq_day_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	struct store_day_total d;
	const char *day, *cur;

	day = (const char *)sqlite3_column_text(stmt, 0);
	cur = (const char *)sqlite3_column_text(stmt, 1);
	d.day = day != NULL ? day : "";
	d.currency = cur != NULL ? cur : "";
	d.count = sqlite3_column_int64(stmt, 2);
	d.overflow = __builtin_mul_overflow(sqlite3_column_int64(stmt, 3),
	    (int64_t)1000000000, &d.sum_minor) ||
	    __builtin_add_overflow(d.sum_minor, sqlite3_column_int64(stmt, 4),
	    &d.sum_minor);
	if (d.overflow)
		d.sum_minor = 0;
	d.exponent = sqlite3_column_type(stmt, 5) == SQLITE_NULL ? -1 :
	    sqlite3_column_int(stmt, 5);
	d.inexact = sqlite3_column_int64(stmt, 6);
	return w->day_fn(w->arg, &d);
}

static enum rs_status
sq_refunds_by_day(void *ctx, const char *since, store_day_fn fn, void *arg)
{
	struct sq_walker w = { .day_fn = fn, .arg = arg };

	return sq_walk(ctx, SQ_RF_DAILY, since, sq_day_each, &w);
}

static enum rs_status
sq_export_add(struct sq *s, const char *name, const char *now)
{
	sqlite3_stmt *stmt = s->stmt[SQ_EX_ENSURE];
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_text(stmt, 2, now, &brc);
	return sq_run(s, SQ_EX_ENSURE, brc, name);
}

static enum rs_status
sq_export_ensure(void *ctx, const char *name)
{
	struct sq *s = ctx;
	enum rs_status st;
	char now[32];

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	st = sq_export_add(s, name, now);
	return sq_txn_end(s, st);
}

/* Run the bound UPDATE id of an exporter row, guarded by its epoch:
 * RS_ERR_NOTFOUND if it touched no row. */
static enum rs_status
sq_export_update(struct sq *s, enum sq_stmt id, int brc, const char *name)
{
	enum rs_status st;

	st = sq_run(s, id, brc, name);
	if (st == RS_OK && sqlite3_changes(s->db) == 0)
		st = RS_ERR_NOTFOUND;
	return st;
}

static enum rs_status
sq_export_delivered(void *ctx, const char *name, int64_t epoch,
    const int64_t *seqs, size_t n, int64_t position)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt;
	enum rs_status st;
	char now[32];
	size_t i;
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	stmt = s->stmt[SQ_EX_DELIVERED];
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, epoch, &brc);
	sq_bind_i64(stmt, 3, true, position, &brc);
	sq_bind_i64(stmt, 4, true, (int64_t)n, &brc);
	sq_bind_text(stmt, 5, now, &brc);
	st = sq_export_update(s, SQ_EX_DELIVERED, brc, name);
	for (i = 0; i < n && st == RS_OK; i++) {
		stmt = s->stmt[SQ_EX_LOG];
		sq_bind_text(stmt, 1, name, &brc);
		sq_bind_i64(stmt, 2, true, seqs[i], &brc);
		sq_bind_text(stmt, 3, now, &brc);
		if ((st = sq_run(s, SQ_EX_LOG, brc, name)) != RS_OK)
			break;
		stmt = s->stmt[SQ_EX_UNDEAD];
		sq_bind_text(stmt, 1, name, &brc);
		sq_bind_i64(stmt, 2, true, seqs[i], &brc);
		st = sq_run(s, SQ_EX_UNDEAD, brc, name);
	}
	return sq_txn_end(s, st);
}

static enum rs_status
sq_export_failed(void *ctx, const char *name, int64_t epoch, int64_t seq,
    int64_t attempts, int64_t since, const char *error)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_EX_FAILED];
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, epoch, &brc);
	sq_bind_i64(stmt, 3, true, seq, &brc);
	sq_bind_i64(stmt, 4, true, attempts, &brc);
	sq_bind_i64(stmt, 5, since > 0, since, &brc);
	sq_bind_text(stmt, 6, error, &brc);
	sq_bind_text(stmt, 7, now, &brc);
	st = sq_export_update(s, SQ_EX_FAILED, brc, name);
	return sq_txn_end(s, st);
}

static enum rs_status
sq_export_error(void *ctx, const char *name, const char *error)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_EX_ERROR];
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_text(stmt, 2, error, &brc);
	sq_bind_text(stmt, 3, now, &brc);
	st = sq_export_update(s, SQ_EX_ERROR, brc, name);
	return sq_txn_end(s, st);
}

/* Inside a transaction: dl becomes (or replaces) a dead letter of name,
 * queued or not; dead_at, and first_failure_at without dl->since, now. */
static enum rs_status
sq_dead_put(struct sq *s, const char *name,
    const struct store_dead_letter *dl, const char *now, bool queued)
{
	sqlite3_stmt *stmt = s->stmt[SQ_EX_DEAD_PUT];
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, dl->seq, &brc);
	sq_bind_text(stmt, 3, dl->refund_id, &brc);
	sq_bind_i64(stmt, 4, dl->has_revision, dl->revision, &brc);
	sq_bind_text(stmt, 5, dl->idempotency_key, &brc);
	sq_bind_text(stmt, 6, dl->reason, &brc);
	sq_bind_text(stmt, 7, dl->last_response, &brc);
	sq_bind_i64(stmt, 8, true, dl->attempts, &brc);
	sq_bind_i64(stmt, 9, true, dl->since, &brc);
	sq_bind_text(stmt, 10, now, &brc);
	sq_bind_i64(stmt, 11, true, queued ? 1 : 0, &brc);
	return sq_run(s, SQ_EX_DEAD_PUT, brc, name);
}

static enum rs_status
sq_export_dead(void *ctx, const char *name, int64_t epoch,
    const struct store_dead_letter *dl, int64_t position)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_EX_DEAD];
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, epoch, &brc);
	sq_bind_i64(stmt, 3, true, position, &brc);
	sq_bind_text(stmt, 4, dl->reason, &brc);
	sq_bind_text(stmt, 5, now, &brc);
	if ((st = sq_export_update(s, SQ_EX_DEAD, brc, name)) == RS_OK)
		st = sq_dead_put(s, name, dl, now, false);
	return sq_txn_end(s, st);
}

/* Inside a transaction: the position and epoch of name. */
static enum rs_status
sq_export_pos(struct sq *s, const char *name, int64_t *position,
    int64_t *epoch)
{
	sqlite3_stmt *stmt = s->stmt[SQ_EX_POS];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, name, &brc);
	if ((st = sq_step_one(s, SQ_EX_POS, brc, name)) == RS_OK) {
		*position = sqlite3_column_int64(stmt, 0);
		*epoch = sqlite3_column_int64(stmt, 1);
	}
	sq_done(stmt);
	return st;
}

static enum rs_status
sq_export_skip(void *ctx, const char *name, int64_t epoch, int64_t to,
    int64_t *skipped)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt;
	enum rs_status st;
	int64_t pos = 0, ep = 0, k = 0;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	if ((st = sq_export_pos(s, name, &pos, &ep)) != RS_OK)
		goto out;
	if (ep != epoch) {
		st = RS_ERR_NOTFOUND;
		goto out;
	}
	if (to <= pos)
		goto out;
	stmt = s->stmt[SQ_EX_SKIP_LOG];
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, pos, &brc);
	sq_bind_i64(stmt, 3, true, to, &brc);
	sq_bind_text(stmt, 4, now, &brc);
	if ((st = sq_run(s, SQ_EX_SKIP_LOG, brc, name)) != RS_OK)
		goto out;
	k = sqlite3_changes(s->db);
	stmt = s->stmt[SQ_EX_SKIP];
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, epoch, &brc);
	sq_bind_i64(stmt, 3, true, to, &brc);
	sq_bind_i64(stmt, 4, true, k, &brc);
	sq_bind_text(stmt, 5, now, &brc);
	st = sq_export_update(s, SQ_EX_SKIP, brc, name);
out:
	if ((st = sq_txn_end(s, st)) == RS_OK)
		*skipped = k;
	return st;
}

static enum rs_status
sq_export_replay(void *ctx, const char *name, int64_t from, int64_t *old)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_EX_REPLAY];
	enum rs_status st;
	int64_t pos = 0, ep = 0;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	if ((st = sq_export_add(s, name, now)) != RS_OK ||
	    (st = sq_export_pos(s, name, &pos, &ep)) != RS_OK)
		goto out;
	if (from - 1 > pos) {
		/* Forward: records pos+1 .. from-1 would never go out. */
		st = RS_ERR_RANGE;
		goto out;
	}
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, from - 1, &brc);
	sq_bind_text(stmt, 3, now, &brc);
	st = sq_export_update(s, SQ_EX_REPLAY, brc, name);
out:
	if ((st = sq_txn_end(s, st)) == RS_OK || st == RS_ERR_RANGE)
		*old = pos;
	return st;
}

static enum rs_status
sq_export_retry_dead(void *ctx, const char *name, int64_t *n)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt;
	enum rs_status st;
	int64_t k = 0;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	stmt = s->stmt[SQ_EX_QUEUE];
	sq_bind_text(stmt, 1, name, &brc);
	if ((st = sq_run(s, SQ_EX_QUEUE, brc, name)) != RS_OK)
		goto out;
	k = sqlite3_changes(s->db);
	stmt = s->stmt[SQ_EX_QUEUE_EPOCH];
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_text(stmt, 2, now, &brc);
	st = sq_run(s, SQ_EX_QUEUE_EPOCH, brc, name);
out:
	if ((st = sq_txn_end(s, st)) == RS_OK)
		*n = k;
	return st;
}

static enum rs_status
sq_export_was_delivered(void *ctx, const char *name, int64_t seq, bool *yes)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt = s->stmt[SQ_EX_WAS];
	enum rs_status st = RS_OK;
	int brc = SQLITE_OK, rc;

	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, seq, &brc);
	rc = brc == SQLITE_OK ? sqlite3_step(stmt) : brc;
	if (rc == SQLITE_ROW)
		*yes = true;
	else if (rc == SQLITE_DONE)
		*yes = false;
	else
		st = sq_status(s, rc, sq_defs[SQ_EX_WAS].name, name);
	sq_done(stmt);
	return st;
}

/* ---- reconcile ------------------------------------------------------- */

static enum rs_status
sq_change_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	struct store_change c;
	enum rs_status st;

	/* The body, selected only for the fallback, is not handed on. */
	sq_change_read(w->s, stmt, &c);
	free(c.body);
	c.body = NULL;
	if ((st = sq_change_posted(w->s, &c)) == RS_OK)
		st = w->change_fn(w->arg, &c);
	store_change_cleanup(&c);
	return st;
}

/*
 * One statement stepped row by row: one read transaction when none is
 * open, and memory for one entry at a time however long the log.
 */
static enum rs_status
sq_changes_foreach(void *ctx, const char *instance_id, store_change_fn fn,
    void *arg)
{
	struct sq_walker w = { .s = ctx, .change_fn = fn, .arg = arg };

	return sq_walk(ctx, instance_id != NULL ? SQ_CH_EACH_BY : SQ_CH_EACH,
	    instance_id, sq_change_each, &w);
}

static enum rs_status
sq_seq_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	return w->seq_fn(w->arg, sqlite3_column_int64(stmt, 0));
}

static enum rs_status
sq_export_deliveries_foreach(void *ctx, const char *name, store_seq_fn fn,
    void *arg)
{
	struct sq_walker w = { .s = ctx, .seq_fn = fn, .arg = arg };

	return sq_walk(ctx, SQ_EX_DELIVERIES, name, sq_seq_each, &w);
}

/* Inside a transaction: one reconcile_repairs row for r, made now. */
static enum rs_status
sq_repair_put(struct sq *s, const struct store_repair *r, const char *now)
{
	sqlite3_stmt *stmt = s->stmt[SQ_RP_INSERT];
	int brc = SQLITE_OK;

	sq_bind_text(stmt, 1, now, &brc);
	sq_bind_text(stmt, 2, r->instance_id, &brc);
	sq_bind_text(stmt, 3, r->kind, &brc);
	sq_bind_text(stmt, 4, r->refund_id, &brc);
	sq_bind_text(stmt, 5, r->exporter, &brc);
	sq_bind_i64(stmt, 6, r->seq > 0, r->seq, &brc);
	sq_bind_text(stmt, 7, r->detail, &brc);
	return sq_run(s, SQ_RP_INSERT, brc, r->kind);
}

static enum rs_status
sq_repair_log(void *ctx, const struct store_repair *r)
{
	struct sq *s = ctx;
	char now[32];

	if (!sq_in_txn(s)) {
		log_warnx("store: %s: record repair %s: no transaction is "
		    "open", s->path, r->kind);
		return RS_ERR_INTERNAL;
	}
	clock_wall_iso(now);
	return sq_repair_put(s, r, now);
}

/*
 * The worker reloads on the new epoch.  A seq at or below its position
 * is its next_queued (SQ_EX_COLS) and goes out before new records; one
 * above comes in the normal flow, whose delivery clears the dead letter
 * (sq_export_delivered).
 */
static enum rs_status
sq_export_requeue(void *ctx, const char *name,
    const struct store_dead_letter *dl, const struct store_repair *rep)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt;
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	stmt = s->stmt[SQ_CH_EXISTS];
	sq_bind_i64(stmt, 1, true, dl->seq, &brc);
	st = sq_step_one(s, SQ_CH_EXISTS, brc, name);
	sq_done(stmt);
	if (st != RS_OK)
		goto out;
	if ((st = sq_export_add(s, name, now)) != RS_OK ||
	    (st = sq_dead_put(s, name, dl, now, true)) != RS_OK)
		goto out;
	stmt = s->stmt[SQ_EX_UNLOG];
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_i64(stmt, 2, true, dl->seq, &brc);
	if ((st = sq_run(s, SQ_EX_UNLOG, brc, name)) != RS_OK)
		goto out;
	stmt = s->stmt[SQ_EX_BUMP];
	sq_bind_text(stmt, 1, name, &brc);
	sq_bind_text(stmt, 2, now, &brc);
	if ((st = sq_export_update(s, SQ_EX_BUMP, brc, name)) != RS_OK)
		goto out;
	if (rep != NULL)
		st = sq_repair_put(s, rep, now);
out:
	return sq_txn_end(s, st);
}

static enum rs_status
sq_kind_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	const char *kind = (const char *)sqlite3_column_text(stmt, 0);

	return w->kind_fn(w->arg, kind != NULL ? kind : "",
	    sqlite3_column_int64(stmt, 1));
}

static enum rs_status
sq_repair_counts(void *ctx, store_kind_count_fn fn, void *arg)
{
	struct sq_walker w = { .s = ctx, .kind_fn = fn, .arg = arg };

	return sq_walk(ctx, SQ_RP_COUNTS, NULL, sq_kind_each, &w);
}

static enum rs_status
sq_reconcile_record(void *ctx, const struct store_reconcile_run *r)
{
	struct sq *s = ctx;
	sqlite3_stmt *stmt;
	enum rs_status st;
	char now[32];
	int brc = SQLITE_OK;

	if ((st = sq_begin(s)) != RS_OK)
		return st;
	clock_wall_iso(now);
	stmt = s->stmt[SQ_RC_INSERT];
	sq_bind_text(stmt, 1, r->instance_id, &brc);
	sq_bind_text(stmt, 2, r->started_at, &brc);
	sq_bind_text(stmt, 3, now, &brc);
	sq_bind_text(stmt, 4, r->outcome, &brc);
	sq_bind_i64(stmt, 5, true, r->heal ? 1 : 0, &brc);
	sq_bind_i64(stmt, 6, true, r->wix_refunds, &brc);
	sq_bind_i64(stmt, 7, true, r->store_refunds, &brc);
	sq_bind_i64(stmt, 8, true, r->drift, &brc);
	sq_bind_i64(stmt, 9, true, r->repaired, &brc);
	sq_bind_text(stmt, 10, r->error, &brc);
	sq_bind_text(stmt, 11, r->report, &brc);
	if ((st = sq_run(s, SQ_RC_INSERT, brc, r->instance_id)) != RS_OK)
		goto out;
	stmt = s->stmt[SQ_RC_PRUNE];
	sq_bind_text(stmt, 1, r->instance_id, &brc);
	sq_bind_i64(stmt, 2, true, SQ_RUNS_KEPT, &brc);
	st = sq_run(s, SQ_RC_PRUNE, brc, r->instance_id);
out:
	return sq_txn_end(s, st);
}

static enum rs_status
sq_run_each(sqlite3_stmt *stmt, const struct sq_walker *w)
{
	struct store_reconcile_run r;
	const char *t;

	memset(&r, 0, sizeof(r));
	r.instance_id = (const char *)sqlite3_column_text(stmt, 0);
	t = (const char *)sqlite3_column_text(stmt, 1);
	r.started_at = t != NULL ? t : "";
	t = (const char *)sqlite3_column_text(stmt, 2);
	r.outcome = t != NULL ? t : "";
	r.heal = sqlite3_column_int(stmt, 3) != 0;
	r.wix_refunds = sqlite3_column_int64(stmt, 4);
	r.store_refunds = sqlite3_column_int64(stmt, 5);
	r.drift = sqlite3_column_int64(stmt, 6);
	r.repaired = sqlite3_column_int64(stmt, 7);
	r.error = (const char *)sqlite3_column_text(stmt, 8);
	r.report = NULL;
	t = (const char *)sqlite3_column_text(stmt, 9);
	return w->run_fn(w->arg, &r, t != NULL ? t : "");
}

static enum rs_status
sq_reconcile_last_foreach(void *ctx, store_reconcile_fn fn, void *arg)
{
	struct sq_walker w = { .s = ctx, .run_fn = fn, .arg = arg };

	return sq_walk(ctx, SQ_RC_LAST, NULL, sq_run_each, &w);
}

/* ---- open, migrations, close ----------------------------------------- */

/* The first column of the first row of sql as text, into out. */
static int
sq_query_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt *stmt = NULL;
	const unsigned char *t;
	int rc;

	out[0] = '\0';
	rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		t = sqlite3_column_text(stmt, 0);
		snprintf(out, outlen, "%s", t != NULL ? (const char *)t : "");
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	sqlite3_finalize(stmt);
	return rc;
}

static int
sq_user_version(sqlite3 *db, int *out)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int(stmt, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(stmt);
	return rc;
}

/* One migration, in its own transaction.  Another process may have
 * applied it meanwhile: then it is skipped. */
static enum rs_status
sq_migrate_one(struct sq *s, const struct store_migration *m, int latest,
    char **why)
{
	char *pragma = NULL;
	int rc, v = 0;

	rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sq_user_version(s->db, &v);
	if (rc != SQLITE_OK)
		goto fail;
	if (v > latest) {
		*why = xasprintf("%s: database schema version %d is newer "
		    "than this program knows (%d): upgrade refundsync",
		    s->path, v, latest);
		(void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return RS_ERR_IO;
	}
	if (v < m->version) {
		rc = sqlite3_exec(s->db, m->sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		pragma = xasprintf("PRAGMA user_version = %d", m->version);
		rc = sqlite3_exec(s->db, pragma, NULL, NULL, NULL);
		free(pragma);
		if (rc != SQLITE_OK)
			goto fail;
	}
	rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	if (v < m->version)
		log_info("store: %s: applied migration %s", s->path, m->name);
	return RS_OK;
fail:
	*why = xasprintf("%s: migration %s: %s (sqlite code %d)", s->path,
	    m->name, sqlite3_errmsg(s->db), rc);
	if (sq_in_txn(s))
		(void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return sq_open_status(rc);
}

/*
 * Bring the schema to the newest embedded migration, refusing a
 * database from a newer program.  Read-only: only check it is current.
 */
static enum rs_status
sq_migrate(struct sq *s, char **why)
{
	enum rs_status st;
	unsigned i;
	int latest, v = 0, rc;

	for (i = 0; i < store_migration_count; i++)
		if (store_migrations[i].version != (int)i + 1) {
			*why = xasprintf("%s: embedded migration %s is out of "
			    "sequence", s->path, store_migrations[i].name);
			return RS_ERR_INTERNAL;
		}
	latest = (int)store_migration_count;
	if ((rc = sq_user_version(s->db, &v)) != SQLITE_OK) {
		*why = xasprintf("%s: cannot read the schema version: %s "
		    "(sqlite code %d)", s->path, sqlite3_errmsg(s->db), rc);
		return sq_open_status(rc);
	}
	if (v > latest) {
		*why = xasprintf("%s: database schema version %d is newer "
		    "than this program knows (%d): upgrade refundsync",
		    s->path, v, latest);
		return RS_ERR_IO;
	}
	if (s->readonly) {
		if (v != latest) {
			*why = xasprintf("%s: database schema version %d, "
			    "this program needs %d: open it read-write once "
			    "to migrate it", s->path, v, latest);
			return RS_ERR_IO;
		}
	} else {
		for (i = 0; i < store_migration_count; i++) {
			if (store_migrations[i].version <= v)
				continue;
			st = sq_migrate_one(s, &store_migrations[i], latest,
			    why);
			if (st != RS_OK)
				return st;
		}
	}
	if ((rc = sq_user_version(s->db, &v)) != SQLITE_OK) {
		*why = xasprintf("%s: cannot read the schema version: %s "
		    "(sqlite code %d)", s->path, sqlite3_errmsg(s->db), rc);
		return sq_open_status(rc);
	}
	s->version = v;
	return RS_OK;
}

/* The WAL is trimmed to this many bytes when it restarts, and emptied
 * at close (sq_pragmas). */
#define SQ_WAL_LIMIT	"67108864"

/* Set the connection's pragmas and check they took. */
static enum rs_status
sq_pragmas(struct sq *s, char **why)
{
	static const struct {
		const char	*set;
		const char	*get;
		const char	*want;
	} p[] = {
		{ "PRAGMA synchronous = FULL", "PRAGMA synchronous", "2" },
		{ "PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", "1" }
	};
	char got[32];
	size_t i;
	int rc, persist = 1;

	if (!s->readonly) {
		/* Returns the mode now in force. */
		rc = sq_query_text(s->db, "PRAGMA journal_mode = WAL", got,
		    sizeof(got));
		if (rc != SQLITE_OK)
			goto fail;
		if (strcmp(got, "wal") != 0) {
			*why = xasprintf("%s: cannot use WAL mode (journal "
			    "mode is %s)", s->path, got);
			return RS_ERR_IO;
		}
		/*
		 * Keep the -wal and -shm files when the last connection
		 * closes: SQLite can open a WAL database for a reader that
		 * may not write its directory (an accounting tool in the
		 * group README.md sets up) only while both exist, so
		 * without them such a reader fails whenever the daemon is
		 * stopped.  A non-negative journal_size_limit makes that
		 * close truncate the checkpointed WAL to nothing; while
		 * running it only trims a WAL that a long reader let grow
		 * past it.
		 */
		rc = sqlite3_file_control(s->db, "main",
		    SQLITE_FCNTL_PERSIST_WAL, &persist);
		/* A VFS without the control removes them, as before. */
		if (rc != SQLITE_OK && rc != SQLITE_NOTFOUND) {
			*why = xasprintf("%s: cannot keep the WAL file at "
			    "close (sqlite code %d)", s->path, rc);
			return sq_open_status(rc);
		}
		rc = sq_query_text(s->db, "PRAGMA journal_size_limit = "
		    SQ_WAL_LIMIT, got, sizeof(got));
		if (rc != SQLITE_OK)
			goto fail;
		if (strcmp(got, SQ_WAL_LIMIT) != 0) {
			*why = xasprintf("%s: PRAGMA journal_size_limit did "
			    "not take (%s)", s->path, got);
			return RS_ERR_IO;
		}
	}
	for (i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
		rc = sqlite3_exec(s->db, p[i].set, NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sq_query_text(s->db, p[i].get, got, sizeof(got));
		if (rc != SQLITE_OK)
			goto fail;
		if (strcmp(got, p[i].want) != 0) {
			*why = xasprintf("%s: %s did not take (%s)", s->path,
			    p[i].set, got);
			return RS_ERR_IO;
		}
	}
	if (!s->readonly && !s->lazy_sync) {
		/* walbuf (see sq_open) needs every WAL write in a commit. */
		rc = sqlite3_exec(s->db, "PRAGMA cache_spill = OFF", NULL,
		    NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sq_query_text(s->db, "PRAGMA cache_spill", got,
			    sizeof(got));
		if (rc != SQLITE_OK)
			goto fail;
		if (strcmp(got, "0") != 0) {
			*why = xasprintf("%s: PRAGMA cache_spill = OFF did "
			    "not take (%s)", s->path, got);
			return RS_ERR_IO;
		}
	}
	if (s->lazy_sync) {
		rc = sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL", NULL,
		    NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sq_query_text(s->db, "PRAGMA synchronous", got,
			    sizeof(got));
		if (rc != SQLITE_OK)
			goto fail;
		if (strcmp(got, "1") != 0) {
			*why = xasprintf("%s: PRAGMA synchronous = NORMAL did "
			    "not take (%s)", s->path, got);
			return RS_ERR_IO;
		}
	}
	return RS_OK;
fail:
	*why = xasprintf("%s: %s (sqlite code %d)", s->path,
	    sqlite3_errmsg(s->db), rc);
	return sq_open_status(rc);
}

/* ---- can it write? --------------------------------------------------- */

/* The database file as SQLite resolved it (symbolic links followed: its
 * -wal and -shm files live beside that), else the path as given. */
static const char *
sq_file(const struct sq *s)
{
	const char *f = NULL;

	if (s->db != NULL)
		f = sqlite3_db_filename(s->db, "main");
	return f != NULL && *f != '\0' ? f : s->path;
}

/*
 * For messages: which file of the database at file this process may not
 * write, and why ("/var/lib/x.db-wal: Operation not permitted"): the
 * database, its -wal or -shm file or, when one of those does not exist,
 * the directory that would hold it.  NULL if none (the cause is then
 * elsewhere).  Caller frees.
 */
static char *
sq_unwritable(const char *file)
{
	static const char *const sfx[] = { "", "-wal", "-shm" };
	const char *slash;
	char *f, *dir, *r = NULL;
	bool missing = false;
	size_t i;

	for (i = 0; i < sizeof(sfx) / sizeof(sfx[0]) && r == NULL; i++) {
		f = xasprintf("%s%s", file, sfx[i]);
		if (faccessat(AT_FDCWD, f, W_OK, AT_EACCESS) == -1) {
			if (errno == ENOENT)
				missing = true;
			else
				r = xasprintf("%s: %s", f, strerror(errno));
		}
		free(f);
	}
	if (r != NULL || !missing)
		return r;
	if ((slash = strrchr(file, '/')) == NULL)
		dir = xstrdup(".");
	else if (slash == file)
		dir = xstrdup("/");
	else
		dir = xstrndup(file, (size_t)(slash - file));
	if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == -1)
		r = xasprintf("%s: %s", dir, strerror(errno));
	free(dir);
	return r;
}

/*
 * See store_writable().  SQLite says when the database file itself is
 * open read-only; a -wal or -shm file it could open only for reading
 * shows when it takes the write lock.  That check does not wait: a lock
 * held elsewhere says nothing about this connection.
 */
static enum rs_status
sq_writable(void *ctx, char **why)
{
	struct sq *s = ctx;
	const char *msg;
	int64_t busy_ms;
	int rc;

	if (sq_in_txn(s)) {
		log_warnx("store: %s: writable: a transaction is open",
		    s->path);
		return RS_ERR_INTERNAL;
	}
	if (s->readonly) {
		*why = xasprintf("%s: opened read-only", s->path);
		return RS_ERR_BUSY;
	}
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		rc = SQLITE_READONLY;
		msg = "the database is open read-only";
	} else {
		busy_ms = s->busy_ms;
		s->busy_ms = 0;
		rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		s->busy_ms = busy_ms;
		if (rc == SQLITE_OK) {
			(void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return RS_OK;
		}
		if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
			return RS_OK;
		msg = sqlite3_errmsg(s->db);
	}
	if ((*why = sq_unwritable(sq_file(s))) == NULL)
		*why = xasprintf("%s: %s (sqlite code %d)", s->path, msg, rc);
	return RS_ERR_BUSY;
}

/*
 * Process-wide SQLite settings, once, before the library initialises.
 * Memory statistics cost a global mutex on every allocation, which the
 * writer and the CLI never read.
 */
static void
sq_global_init(void)
{
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static enum rs_status
sq_open(const char *path, const struct store_options *opt, void **ctx,
    char **why)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct sq *s;
	enum rs_status st;
	unsigned i;
	int flags, rc;
	bool existed, missing;
	char *which, *full;

	(void)pthread_once(&once, sq_global_init);
	s = xcalloc(1, sizeof(*s));
	s->path = xstrdup(path);
	s->readonly = opt->readonly;
	s->lazy_sync = opt->lazy_sync;
	s->quiet_busy = opt->quiet_busy;
	existed = access(path, F_OK) == 0;
	missing = !existed && errno == ENOENT;
	flags = SQLITE_OPEN_NOMUTEX;
	if (s->readonly)
		flags |= SQLITE_OPEN_READONLY;
	else
		flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	/* A connection that commits with synchronous=FULL gathers each
	 * commit's WAL writes into a few large ones (walbuf.h; it also
	 * turns cache_spill off, sq_pragmas); one that commits without a
	 * sync must not, and a read-only one has nothing to gather.
	 * NULL: the default VFS. */
	if (s->readonly && missing) {
		/* Only serve, backfill and the commands that write create
		 * the database. */
		*why = xasprintf("%s: no such database: nothing is stored "
		    "yet (serve creates it)", path);
		st = RS_ERR_NOTFOUND;
		goto fail;
	}
	rc = sqlite3_open_v2(path, &s->db, flags,
	    !s->readonly && !s->lazy_sync ? walbuf_vfs() : NULL);
	if (rc != SQLITE_OK) {
		*why = xasprintf("%s: cannot %s: %s", path,
		    existed || s->readonly ? "open" : "create it",
		    s->db != NULL ? sqlite3_errmsg(s->db) :
		    sqlite3_errstr(rc));
		st = sq_open_status(rc);
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	s->busy_ms = opt->busy_timeout_ms > 0 ? opt->busy_timeout_ms : 0;
	sqlite3_busy_handler(s->db, sq_busy, s);
	/* A file SQLite cannot write opens read-only all the same: see
	 * sq_writable(). */
	if ((st = sq_pragmas(s, why)) != RS_OK)
		goto fail;
	if ((st = sq_migrate(s, why)) != RS_OK)
		goto fail;
	for (i = 0; i < SQ_NSTMT; i++) {
		rc = sqlite3_prepare_v3(s->db, sq_defs[i].sql, -1,
		    SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			*why = xasprintf("%s: prepare %s: %s (sqlite code "
			    "%d)", path, sq_defs[i].name,
			    sqlite3_errmsg(s->db), rc);
			st = sq_open_status(rc);
			goto fail;
		}
	}
	*ctx = s;
	return RS_OK;
fail:
	/* A database that was not there is no reason to retry: the path
	 * is wrong, or it must be created where it can be. */
	if (!existed)
		st = RS_ERR_IO;
	/* Say which file or directory refuses, when it is one. */
	if ((st == RS_ERR_BUSY || (!existed && !s->readonly)) &&
	    *why != NULL && (which = sq_unwritable(sq_file(s))) != NULL) {
		full = xasprintf("%s; %s", *why, which);
		free(which);
		free(*why);
		*why = full;
	}
	sq_close(s);
	return st;
}

static void
sq_close(void *ctx)
{
	struct sq *s = ctx;
	unsigned i;
	int rc;

	if (s == NULL)
		return;
	for (i = 0; i < SQ_NSTMT; i++)
		sqlite3_finalize(s->stmt[i]);
	if (s->db != NULL && (rc = sqlite3_close(s->db)) != SQLITE_OK)
		log_warnx("store: %s: close: %s (sqlite code %d)", s->path,
		    sqlite3_errmsg(s->db), rc);
	free(s->path);
	free(s);
}

static int
sq_schema_version(void *ctx)
{
	struct sq *s = ctx;

	return s->version;
}

const struct store_ops store_sqlite_ops = {
	.version = STORE_OPS_VERSION,
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.schema_version = sq_schema_version,
	.last_error = sq_last_error,
	.begin = sq_begin,
	.begin_batch = sq_begin_batch,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.apply_event = sq_apply_event,
	.apply_refund = sq_apply_refund,
	.probe = sq_probe,
	.refund_get = sq_refund_get,
	.refund_foreach = sq_refund_foreach,
	.counts = sq_counts,
	.instance_get = sq_instance_get,
	.instance_foreach = sq_instance_foreach,
	.refund_instances = sq_refund_instances,
	.instance_ensure = sq_instance_ensure,
	.backfill_start = sq_backfill_start,
	.backfill_pages = sq_backfill_pages,
	.backfill_reset_cursor = sq_backfill_reset_cursor,
	.backfill_finish = sq_backfill_finish,
	.changes_read = sq_changes_read,
	.change_get = sq_change_get,
	.changes_last = sq_changes_last,
	.export_get = sq_export_get,
	.export_foreach = sq_export_foreach,
	.export_ensure = sq_export_ensure,
	.export_delivered = sq_export_delivered,
	.export_failed = sq_export_failed,
	.export_error = sq_export_error,
	.export_dead = sq_export_dead,
	.export_skip = sq_export_skip,
	.export_replay = sq_export_replay,
	.export_retry_dead = sq_export_retry_dead,
	.dead_foreach = sq_dead_foreach,
	.export_was_delivered = sq_export_was_delivered,
	.refunds_by_day = sq_refunds_by_day,
	.changes_foreach = sq_changes_foreach,
	.export_deliveries_foreach = sq_export_deliveries_foreach,
	.repair_log = sq_repair_log,
	.export_requeue = sq_export_requeue,
	.repair_counts = sq_repair_counts,
	.reconcile_record = sq_reconcile_record,
	.reconcile_last_foreach = sq_reconcile_last_foreach,
	.writable = sq_writable
};

struct sqlite3 *
store_sqlite_handle(struct store *st)
{
	struct sq *s = store_backend_ctx(st, &store_sqlite_ops);

	return s != NULL ? s->db : NULL;
}
