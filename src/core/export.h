/*
 * export.h: the export engine (SPEC §5).
 *
 * Every [exporter NAME] section runs as one worker: a thread with its own
 * store connection that reads the change log in seq order, hands records
 * to its exporter (include/refundsync/exporter.h) in batches, and records
 * in the store what became of them.  Workers share nothing but the
 * database, so one failing exporter never holds up another, and none
 * holds up the webhook path (their transactions are short).
 *
 * Per exporter, durably (sql/002_exporters.sql): the position (every
 * change up to it was delivered or given up), the retry state of the
 * record being retried, the dead letters and a delivery log.
 *
 * Delivery is at least once, in change-log order.  Each record carries
 * the idempotency key "<NAME>:<refund id>:<revision>" (when the version
 * has no revision: "-:<entityEventSequence>:<updatedDate>", see
 * export_idempotency_key()), with ":reverse" appended for a reversal and
 * ":adjust" for an adjustment, so the same change always carries the
 * same key and no two transactions share one.  What a record posts
 * (export_record_fill()) depends only on the change-log entry and the
 * refund's entry before it, so a retry, a replay or a re-queued dead
 * letter posts exactly what the first attempt did.  The position moves only
 * after deliver() reported records done (a file exporter has fsync()ed
 * them by then); a crash in between re-sends them with the same keys.  On
 * start, and after an operator moved the exporter, the engine asks the
 * exporter's recover() for the last seq the target holds and
 * fast-forwards past it, so a file exporter never writes a record twice.
 * A target that reports a seq beyond the newest change in the change log
 * was written against another store: the engine refuses it (closes the
 * exporter and opens it again after a backoff, with a warning) rather
 * than skip the changes still to come.
 * The same makes it safe for a worker to commit its own state without
 * waiting for the disk (store_options.lazy_sync): a power cut may forget
 * the last positions, which only means records sent again with the same
 * keys; killing the process forgets nothing.
 *
 * Failures: RS_EXPORT_RETRY is retried with capped exponential backoff
 * and jitter on the monotonic clock (retry_initial_ms doubling up to
 * retry_max_ms; each wait is drawn from [d/2, d]).  RS_EXPORT_PERMANENT,
 * or a record still failing retry_horizon seconds (wall clock, kept
 * across restarts) after its first failure, becomes a dead letter with
 * the reason and the exporter's last message, and the position moves
 * past it so later records flow.
 *
 * Operators (`refundsync export`, which may run beside the daemon):
 *  - replay --exporter NAME [--from SEQ]: the next record becomes the
 *    first change at or above SEQ (default 1) and the worker reloads.
 *    Records the target already holds are not sent again: recover()
 *    decides (a file exporter skips everything up to its file's last
 *    seq; to rewrite a file, move it away first and replay).  Targets
 *    without recover() (http, exec, plugins without it) get every record
 *    again with its original idempotency key, so a receiver that honours
 *    the key sees no effect twice.
 *  - retry-dead [--exporter NAME]: dead letters are queued; the worker
 *    delivers queued ones first, one at a time, oldest first, each alone
 *    and so after later records (reconcile's re-queued postings,
 *    store_export_requeue(), go the same way).  One that succeeds leaves
 *    the dead letters; one that fails again is a dead letter again.  The
 *    exporter decides whether it can take a record older than what it
 *    holds: a ledger or beancount file appends it (and skips it if the
 *    file holds it already); a jsonl or csv file is in seq order and
 *    refuses it (RS_EXPORT_PERMANENT), so it is a dead letter again with
 *    a reason that says to move the file away and replay.  Only when
 *    recover() reports exactly that seq is it taken as delivered without
 *    a call (it got there before a crash).
 *  - dead [--exporter NAME], status.
 *
 * While a worker backs off, it still refreshes its gauges every poll_ms,
 * and an operator's replay or retry-dead ends the backoff at once.
 *
 * Stopping: a worker stops between two steps, so what is in flight is
 * delivered and recorded (or not delivered) before it exits: exporters
 * stop at a record boundary.  That is the batch of a file exporter or
 * a plugin, but one record of http or exec (spec.one_at_a_time).
 */
#ifndef RS_EXPORT_H
#define RS_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "refundsync/exporter.h"
#include "util/status.h"

/* What one worker runs. */
struct export_spec {
	const char	*name;		/* the [exporter NAME] */
	const struct rs_exporter_ops *ops; /* borrowed: must outlive the
					   worker */
	const struct rs_export_kv *kv;	/* the keys for open(); copied */
	size_t		 nkv;
	size_t		 batch;		/* most records per deliver() */
	bool		 one_at_a_time;	/* hand deliver() one record per
					   call (a type that sends each
					   on its own: http, exec), so a
					   stop waits for one, not the
					   batch */
	int64_t		 retry_initial_ms;
	int64_t		 retry_max_ms;
	int64_t		 retry_horizon_s;
	int64_t		 poll_ms;	/* idle wait between looks */
};

/* Fill spec with the defaults of config.h and name, ops; no keys. */
void		export_spec_init(struct export_spec *spec, const char *name,
		    const struct rs_exporter_ops *ops);

struct export_worker;

/*
 * A worker for spec, with its own store connection to store_path (read
 * and write; busy_timeout_ms to wait for locks).  The exporter instance
 * is opened by the first step (and again, with backoff, while open()
 * fails).  Returns RS_OK and *out (caller owns; export_worker_free()),
 * or an error with a message in *why (caller frees).
 */
enum rs_status	export_worker_new(const char *store_path, int busy_timeout_ms,
		    const struct export_spec *spec,
		    struct export_worker **out /* OUT */,
		    char **why /* OUT */);
/* Close the exporter instance and the store connection.  NULL is fine. */
void		export_worker_free(struct export_worker *w);

/* What a step did. */
enum export_step {
	EXPORT_STEP_PROGRESS,	/* delivered or gave up something, or
				   fast-forwarded: step again now */
	EXPORT_STEP_IDLE,	/* the change log has nothing new */
	EXPORT_STEP_WAIT,	/* backing off after a failure */
	EXPORT_STEP_ERROR	/* the store failed; try again later */
};

/*
 * Do one unit of work at monotonic time now_ms (clock_mono_ms(); tests
 * pass their own): deliver one batch, or one queued dead letter, and
 * record the outcome.  *next_ms (may be NULL) is the latest time to step
 * again (now_ms for PROGRESS); stepping earlier does no harm.  The retry
 * horizon is measured on clock_wall_s(), so tests can fake it.
 */
enum export_step export_worker_step(struct export_worker *w, int64_t now_ms,
		    int64_t *next_ms /* OUT, may be NULL */);

/*
 * Make the next step start as after a replay, without moving anything:
 * it asks recover() again (a file exporter whose path no longer names
 * the file it writes, as after logrotate's create, opens the path anew)
 * and cuts a backoff short.  now_ms as for export_worker_step().
 */
void		export_worker_reopen(struct export_worker *w, int64_t now_ms);

/* The worker's name.  Borrowed. */
const char	*export_worker_name(const struct export_worker *w);

/*
 * Fill r from change c (r borrows c's strings), its posting included
 * (posting_classify_record()); the idempotency key is left NULL.  The
 * exporters and reconcile decide what a change posts through this one
 * function.
 */
void		export_record_fill(struct rs_export_record *r,
		    const struct store_change *c);

/*
 * The idempotency key of change c for exporter name, posting as
 * export_record_fill() says: "<name>:<refund_id>:<version>[:reverse|
 * :adjust]".  The version is c's revision; without one it is
 * "-:<entityEventSequence>:<updatedDate>" ("-" for a part that is
 * unknown; the date with bytes outside [A-Za-z0-9._~:@/+=-] written as
 * %XX), the fields the store orders such versions by (SPEC §4), so two
 * versions of a refund never share a key; and just "-" when both are
 * unknown (only a refund's first version can lack all three).  Caller
 * frees.
 */
char		*export_idempotency_key(const char *name,
		    const struct store_change *c, enum rs_posting posting);

/* ---- the engine: one thread per worker --------------------------------- */

struct export_engine;

/*
 * Start a thread for each spec.  Returns RS_OK and *out (caller owns;
 * export_engine_stop()), or an error with a message in *why.  n may be
 * 0: an engine with nothing to do.
 */
enum rs_status	export_engine_new(const char *store_path, int busy_timeout_ms,
		    const struct export_spec *specs, size_t n,
		    struct export_engine **out /* OUT */,
		    char **why /* OUT */);

/*
 * Start the exporters of cfg: resolve each type (loading and checking
 * plugins) and start its worker.  A plugin that cannot be loaded or has
 * the wrong ABI version refuses the start: RS_ERR_CONFIG with a message
 * naming the section in *why (caller frees).  An exporter whose open()
 * fails is not a start failure: its worker retries with backoff.
 */
enum rs_status	export_engine_start(const struct config *cfg,
		    struct export_engine **out /* OUT */,
		    char **why /* OUT */);

/* New changes were committed: wake idle workers now.  NULL is fine. */
void		export_engine_notify(struct export_engine *e);

/*
 * SIGHUP: every worker does export_worker_reopen() at its next step, and
 * those backing off step at once.  NULL is fine.
 */
void		export_engine_reopen(struct export_engine *e);

/*
 * Stop every worker at a record boundary, wait for them, and close the
 * exporters (and unload plugins).  e stays valid for
 * export_engine_notify(), which does nothing from then on.  Calling it
 * twice is fine; NULL is fine.
 */
void		export_engine_halt(struct export_engine *e);

/* Halt e if needed, and free it.  NULL is fine. */
void		export_engine_stop(struct export_engine *e);

/*
 * Load every plugin of cfg and check its ABI version, as the daemon
 * would at start, then unload it (for `refundsync check`).  RS_OK, or
 * RS_ERR_CONFIG with one line per plugin refused in *why (caller frees),
 * each "file:line: [exporter NAME] path: reason" like a config error.
 */
enum rs_status	export_check_config(const struct config *cfg, char **why);

/* ---- the `refundsync export` commands ---------------------------------- */

/*
 * Each prints its result on out (text, or JSON when json is set: one
 * document for status, replay and retry-dead; one object per line for
 * dead) and a reason on err when it fails.  They return RS_OK, or
 * RS_ERR_CONFIG for an exporter that is not configured or a replay --from
 * ahead of the exporter's position (usage errors), or the store's error.  st must be open (read-write for replay and
 * retry-dead).
 */
enum rs_status	export_cmd_status(const struct config *cfg, struct store *st,
		    bool json, FILE *out, FILE *err);
enum rs_status	export_cmd_replay(const struct config *cfg, struct store *st,
		    const char *name, int64_t from, bool json, FILE *out,
		    FILE *err);
enum rs_status	export_cmd_dead(const struct config *cfg, struct store *st,
		    const char *name, bool json, FILE *out, FILE *err);
enum rs_status	export_cmd_retry_dead(const struct config *cfg,
		    struct store *st, const char *name, bool json, FILE *out,
		    FILE *err);

#endif
