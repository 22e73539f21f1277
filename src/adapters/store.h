/*
 * store.h: the durable store of refunds, events, instances and the change
 * log.  All SQL lives behind this interface (store_sqlite.c today; a
 * PostgreSQL backend can slot in through store_backend.h without touching
 * any caller).
 *
 * Threads: a struct store is one connection and is used by one thread at
 * a time.  The daemon's writer thread owns one; CLI commands open their
 * own.  Several processes may open the same database: write transactions
 * are serialised by the database (BEGIN IMMEDIATE plus busy_timeout).
 *
 * Durability: the SQLite backend runs in WAL mode with synchronous=FULL,
 * so a successful store_commit() survives kill -9 and power loss.
 *
 * Errors: RS_ERR_BUSY means "the store cannot commit now" (locked past
 * busy_timeout, disk full, read-only, I/O error): the caller answers 503
 * and retries later; the transaction has been rolled back.
 */
#ifndef RS_STORE_H
#define RS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/event.h"
#include "domain/refund.h"
#include "util/status.h"

struct store;

/* What applying one event or refund version did. */
enum store_outcome {
	STORE_APPLIED,		/* stored; one change-log entry written */
	STORE_STALE,		/* older or equal version: nothing changed */
	STORE_DUPLICATE,	/* event id seen before: nothing changed */
	STORE_IGNORED		/* a type we do not act on: recorded only */
};

/* "applied", "stale", "duplicate", "ignored": the webhook_events.outcome
 * values. */
const char	*store_outcome_name(enum store_outcome o);

struct store_options {
	int	busy_timeout_ms;	/* wait this long for a lock */
	bool	readonly;		/* open for reading only (CLI) */
	/*
	 * Commit without waiting for the disk (synchronous=NORMAL): a
	 * commit survives the process being killed but a power cut may
	 * forget the last few.  Only for state that is rebuilt anyway:
	 * the export engine's positions (export.h).
	 */
	bool	lazy_sync;
	/*
	 * Failures that may pass (RS_ERR_BUSY: a lock, a full disk, a
	 * file that cannot be written, an I/O error) are logged at debug
	 * level only, because the caller logs them: the webhook writer
	 * (ingest.c) says once when the store goes bad and once when it
	 * recovers, and each refused request has its own line.  Other
	 * failures are logged as always.
	 */
	bool	quiet_busy;
};

/*
 * Open (creating it if needed, unless readonly) the database at path,
 * apply pending migrations from sql/ in order, and set the pragmas.
 * Returns RS_OK and *out (caller owns; store_close()), or an error with a
 * message in *why that begins with the path (caller frees with
 * free()): RS_ERR_BUSY when the
 * database exists but cannot be opened now (locked, or it, its -wal or
 * -shm file or their directory cannot be written or read), which may
 * pass; RS_ERR_IO when it does not exist and cannot be created, is not
 * a database or is from a newer program, which will not.  A database
 * that cannot be written may also open, for reading only: see
 * store_writable().
 */
enum rs_status	store_open(const char *path, const struct store_options *opt,
		    struct store **out /* OUT */, char **why /* OUT */);
void		store_close(struct store *st);

/* Schema version after migrations (the highest applied sql/NNN). */
int		store_schema_version(struct store *st);

/*
 * Why the last call that failed on st failed, in a few words for a log
 * line ("database or disk is full", "database is locked", ...), or NULL
 * if none has failed.  The string is static.  Same thread rules as st.
 */
const char	*store_last_error(struct store *st);

/*
 * Write transactions.  store_begin() takes the write lock (BEGIN
 * IMMEDIATE).  store_commit() makes everything durable or, on failure,
 * rolls back and returns RS_ERR_BUSY/RS_ERR_IO.  store_rollback() is safe
 * to call when no transaction is open.
 */
enum rs_status	store_begin(struct store *st);
enum rs_status	store_commit(struct store *st);
void		store_rollback(struct store *st);

/*
 * store_begin(), for a batch of store_apply_event() and
 * store_apply_refund() calls that go without their savepoints: cheaper
 * (no statement journal per event), but a call that fails may leave
 * part of its work behind.  So after any error from one of them the
 * caller must store_rollback() and, to keep the others, apply them
 * again inside store_begin(), where each fails alone.  The transaction
 * ends as any other, and the next store_begin() isolates again.
 */
enum rs_status	store_begin_batch(struct store *st);

/*
 * Apply one decoded webhook inside an open transaction.  key is the
 * dedupe key (the event id, or a key the caller derived for events
 * without one).  A key seen before gives STORE_DUPLICATE and changes
 * nothing.  Otherwise, by kind:
 *   EVENT_REFUND: the refund is upserted under the version rule
 *     (refund_version_newer with the event's entityEventSequence);
 *     APPLIED writes one change-log entry, STALE writes none.
 *   EVENT_APP_INSTALLED / REMOVED: the instances row is created or
 *     updated (installed_at / removed_at); APPLIED, or DUPLICATE if the
 *     instance was already in that state.
 *   EVENT_IGNORED: IGNORED.
 * Every non-duplicate outcome is recorded in webhook_events.
 * The work is wrapped in a savepoint: on error nothing of this event
 * remains and the outer transaction stays usable unless the error is
 * RS_ERR_BUSY/RS_ERR_IO, after which the caller must roll back.
 */
enum rs_status	store_apply_event(struct store *st, const struct event *ev,
		    const char *key, enum store_outcome *out /* OUT */);

/*
 * Upsert one refund version inside an open transaction (backfill, CLI,
 * reconcile).  source is "backfill", "cli", "reconcile" or "webhook".
 * instance_id may be NULL.  has_seq/seq: the event sequence, if known.
 * *out is STORE_APPLIED or STORE_STALE.
 */
enum rs_status	store_apply_refund(struct store *st, const struct refund *r,
		    const char *instance_id, bool has_seq, int64_t seq,
		    const char *source, enum store_outcome *out /* OUT */);

/*
 * Readiness probe: can the store take a write now?  Writes one row of
 * internal metadata in its own transaction.  RS_OK, or the error a real
 * write would get.
 */
enum rs_status	store_probe(struct store *st);

/*
 * Was st opened so that it can write?  SQLite opens a database it
 * cannot write (the file, its -wal or -shm file read-only, a read-only
 * mount) for reading only, even when asked to open it for writing, and
 * such a connection never writes, even once the cause is gone: it must
 * be closed and opened again.  So a writer that must not start on one
 * (the daemon) asks once, right after store_open().  RS_OK: it can (a
 * write lock held elsewhere is not a "no"; the check does not wait for
 * it and writes nothing).  RS_ERR_BUSY: it cannot (so always when
 * opened readonly), and *why (caller frees) says why, naming the file
 * that refuses writes when the file system tells, e.g.
 * "/var/lib/refundsync/refundsync.db-wal: Operation not permitted".
 * RS_ERR_INTERNAL (logged) if a transaction is open.  Otherwise it logs
 * nothing: the caller says what it makes of it.
 */
enum rs_status	store_writable(struct store *st, char **why /* OUT */);

/* A stored refund with the columns beyond the entity. */
struct store_refund_row {
	struct refund	 refund;	/* as parsed back from the row */
	char		*instance_id;	/* may be NULL */
	char		*source;
	char		*stored_at;
	bool		 has_sequence;
	int64_t		 sequence;
};
void		store_refund_row_cleanup(struct store_refund_row *row);

/* Read one refund by id: RS_OK and *row (caller cleans), or
 * RS_ERR_NOTFOUND. */
enum rs_status	store_refund_get(struct store *st, const char *id,
		    struct store_refund_row *row /* OUT */);

/*
 * Call fn for each refund matching the filters (NULL = any), ordered by
 * created_date then id.  fn borrows row for the call only; a non-RS_OK
 * return from fn stops the walk and is returned.
 */
typedef enum rs_status (*store_refund_fn)(void *arg,
		    const struct store_refund_row *row);
enum rs_status	store_refund_foreach(struct store *st,
		    const char *instance_id, const char *status,
		    store_refund_fn fn, void *arg);

/* Counts for status pages and tests. */
struct store_counts {
	int64_t	refunds;
	int64_t	events;
	int64_t	changes;	/* change-log entries */
	int64_t	last_change;	/* highest change-log sequence, 0 if none */
	int64_t	instances;
};
enum rs_status	store_counts(struct store *st, struct store_counts *out /* OUT */);

/*
 * Refunds per day and currency, for status pages: one row per (day,
 * currency) with day (the refund's createdDate, else when it was stored,
 * as YYYY-MM-DD in UTC) >= since, newest day first, then by currency.
 * Every refund counts whatever its status.
 */
struct store_day_total {
	const char	*day;		/* "YYYY-MM-DD" */
	const char	*currency;
	int64_t		 count;		/* refunds */
	int64_t		 sum_minor;	/* sum of the exact amounts, in
					   minor units */
	int		 exponent;	/* ISO 4217 digits; -1 if unknown */
	int64_t		 inexact;	/* refunds left out of sum_minor
					   (no exact minor amount) */
	bool		 overflow;	/* the sum does not fit in an
					   int64_t; sum_minor is 0 */
};

/*
 * Call fn for each row as described above (since: "YYYY-MM-DD").  fn
 * borrows d for the call only and must not write to the store; a non-RS_OK
 * return from fn stops the walk and is returned.
 */
typedef enum rs_status (*store_day_fn)(void *arg,
		    const struct store_day_total *d);
enum rs_status	store_refunds_by_day(struct store *st, const char *since,
		    store_day_fn fn, void *arg);

/* ---- instances and their backfill ------------------------------------ */

/*
 * The backfill state of an instance (instances.backfill).  pending: never
 * started, or to be done again from the first page (a new install);
 * running: started and not finished (a run that was stopped or killed
 * resumes from backfill_cursor); done: every page committed; failed: the
 * last run stopped on an error, kept in last_error (a new run resumes
 * from backfill_cursor).
 */
enum store_backfill {
	STORE_BACKFILL_PENDING,
	STORE_BACKFILL_RUNNING,
	STORE_BACKFILL_DONE,
	STORE_BACKFILL_FAILED
};

/* "pending", "running", "done", "failed": the instances.backfill values. */
const char	*store_backfill_name(enum store_backfill b);

/* One instances row.  Strings are owned; NULL when the column is NULL. */
struct store_instance {
	char		*instance_id;
	char		*installed_at;	/* AppInstalled, or NULL */
	char		*removed_at;	/* AppRemoved seen, or NULL */
	enum store_backfill backfill;
	int64_t		 backfill_refunds; /* refunds it has seen */
	int64_t		 backfill_pages;   /* pages committed */
	char		*backfill_cursor; /* the cursor to resume from */
	char		*last_error;	/* why the last run failed */
	char		*backfill_started_at;
	char		*backfill_finished_at;
};
void		store_instance_cleanup(struct store_instance *in);

/* Read one instance: RS_OK and *out (caller cleans), or RS_ERR_NOTFOUND. */
enum rs_status	store_instance_get(struct store *st, const char *id,
		    struct store_instance *out /* OUT */);

/*
 * Call fn for every instance, ordered by id.  fn borrows in for the call
 * only and must not write to the store (the walk holds a read
 * transaction); a non-RS_OK return from fn stops the walk and is
 * returned.
 */
typedef enum rs_status (*store_instance_fn)(void *arg,
		    const struct store_instance *in);
enum rs_status	store_instance_foreach(struct store *st,
		    store_instance_fn fn, void *arg);

/*
 * Call fn for every distinct instance id that stored refunds carry
 * (refunds.instance_id, NULL ones left out), ordered by id: the
 * instances the store holds money of, whether or not an AppInstalled
 * or a backfill gave them a row in instances.  fn borrows id for the
 * call only and must not write to the store; a non-RS_OK return from
 * fn stops the walk and is returned.
 */
typedef enum rs_status (*store_id_fn)(void *arg, const char *id);
enum rs_status	store_refund_instances(struct store *st, store_id_fn fn,
		    void *arg);

/*
 * The functions below run in a write transaction of their own (no
 * transaction may be open: RS_ERR_INTERNAL), and on any error roll it
 * back, so either all of their effect is durable or none of it.
 */

/* Create the row of instance id with backfill 'pending' if it does not
 * exist.  *created (may be NULL) says whether it was created. */
enum rs_status	store_instance_ensure(struct store *st, const char *id,
		    bool *created /* OUT, may be NULL */);

/*
 * A backfill run of id begins: backfill 'running', backfill_started_at
 * now, backfill_finished_at NULL; the row is created if absent.  The run
 * starts from the first page (backfill_cursor, backfill_pages,
 * backfill_refunds and last_error reset) when restart is set or the
 * state was 'pending' or 'done'; from a 'running' or 'failed' state it
 * resumes: the cursor and counts stay.
 */
enum rs_status	store_backfill_start(struct store *st, const char *id,
		    bool restart);

/*
 * Commit one page of the backfill of id, in ONE transaction: each of the
 * n refunds is upserted with source 'backfill' and instance id, under
 * the version rule of store_apply_refund (so an older version never
 * replaces a newer one stored from a webhook, and each applied version
 * gets one change-log entry); then backfill_cursor becomes next_cursor
 * (NULL: none), backfill_pages grows by one and backfill_refunds by n.
 * *applied (may be NULL) is the number of refunds APPLIED (the rest were
 * stale).  RS_ERR_NOTFOUND if the instance has no row; RS_ERR_INPUT if a
 * refund lacks what a row needs; RS_ERR_BUSY if the store cannot commit
 * now.  On any error nothing of the page is kept.  The one-page case of
 * store_backfill_pages().
 */
enum rs_status	store_backfill_page(struct store *st, const char *id,
		    const struct refund *refunds, size_t n,
		    const char *next_cursor, size_t *applied /* OUT */);

/* One page for store_backfill_pages().  All borrowed. */
struct store_bf_page {
	const struct refund *refunds;	/* n of them; may be NULL if n == 0 */
	size_t		 n;
	const char	*next_cursor;	/* the cursor after the page; NULL:
					   none (the last page) */
};

/*
 * Commit npages (>= 1) consecutive pages of the backfill of id, in ONE
 * transaction, as if store_backfill_page() were called for each in
 * order, but all or nothing: every refund of every page is upserted
 * under the same version rule, then backfill_cursor becomes the LAST
 * page's next_cursor, backfill_pages grows by npages and
 * backfill_refunds by the sum of the n.  So a page and the cursor that
 * follows it are never split, and the stored cursor always names the
 * first page not stored.  applied (may be NULL) is an array of npages
 * that gets, for each page, the number of its refunds APPLIED; it is
 * written only on RS_OK.  Errors as store_backfill_page() (RS_ERR_INPUT
 * also for npages 0 or pages NULL); on any error nothing of any page is
 * kept.
 */
enum rs_status	store_backfill_pages(struct store *st, const char *id,
		    const struct store_bf_page *pages, size_t npages,
		    size_t *applied /* OUT: npages, may be NULL */);

/*
 * Wix rejected the cursor: the run starts again from the first page.
 * backfill_cursor becomes NULL, backfill_pages and backfill_refunds 0,
 * and last_error why (may be NULL).  RS_ERR_NOTFOUND without a row.
 */
enum rs_status	store_backfill_reset_cursor(struct store *st,
		    const char *id, const char *why);

/*
 * The run of id ends.  done: backfill 'done', the cursor cleared and
 * last_error set to error (normally NULL).  Otherwise 'failed', the cursor
 * kept (a new run resumes from it) and last_error error.
 * backfill_finished_at is now.  RS_ERR_NOTFOUND without a row.
 */
enum rs_status	store_backfill_finish(struct store *st, const char *id,
		    bool done, const char *error);

/* ---- the change log and the exporters (sql/002_exporters.sql) -------- */

/*
 * One change-log entry: one applied version of one refund.  Strings are
 * owned and released by store_change_cleanup(); optional ones are NULL
 * when absent.  Entries written before migration 002 carry no entity
 * columns: charge_id, the dates and the fees then come from the body.
 */
struct store_change {
	int64_t	 seq;		/* increasing, never reused */
	char	*refund_id;
	char	*instance_id;
	char	*charge_id;
	int64_t	 revision;	/* if has_revision */
	char	*status;	/* this version's status */
	char	*prev_status;	/* the stored status it replaced */
	char	*currency;
	char	*amount;	/* decimal text as Wix sent it */
	int64_t	 amount_minor;	/* if amount_exact */
	char	*returned_application_fee;
	char	*returned_processing_fee;
	char	*created_date;
	char	*updated_date;
	char	*source;	/* webhook|backfill|reconcile|cli */
	char	*changed_at;	/* when it was stored */
	int64_t	 event_seq;	/* the event's entityEventSequence, if
				 * has_event_seq */
	char	*body;		/* the entity JSON of this version */
	/*
	 * What the version before it posted (SPEC §5): when prev_status
	 * is SUCCEEDED, the entity columns of the refund's previous entry
	 * in the log (has_posted true); otherwise, or if the log does not
	 * hold that entry, has_posted is false and the rest NULL/0.
	 */
	char	*posted_currency;
	int64_t	 posted_amount_minor;	/* if posted_amount_exact */
	char	*posted_returned_application_fee;
	char	*posted_returned_processing_fee;
	int	 exponent;	/* ISO 4217 digits; -1 if unknown */
	int	 posted_exponent;	/* ISO 4217 digits; -1 if unknown */
	bool	 has_revision;
	bool	 amount_exact;	/* amount_minor is meaningful */
	bool	 has_event_seq;	/* event_seq is known */
	bool	 has_posted;
	bool	 posted_amount_exact;	/* posted_amount_minor is meaningful */
};
void		store_change_cleanup(struct store_change *c);

/*
 * Read up to max entries with seq > after, in seq order, into out[0..max)
 * (caller-provided; each filled entry is the caller's to clean) and set
 * *n to their number (0: none yet).  One short read transaction.
 */
enum rs_status	store_changes_read(struct store *st, int64_t after,
		    size_t max, struct store_change *out /* OUT */,
		    size_t *n /* OUT */);
/* The entry seq: RS_OK and *out (caller cleans), or RS_ERR_NOTFOUND. */
enum rs_status	store_change_get(struct store *st, int64_t seq,
		    struct store_change *out /* OUT */);
/* The highest seq in the change log, 0 if it is empty. */
enum rs_status	store_changes_last(struct store *st, int64_t *seq /* OUT */);

/*
 * The state of one exporter (exporter_positions plus its dead letters).
 * Every change with seq <= position was delivered or given up; epoch
 * changes whenever an operator moves the exporter (replay, retry-dead).
 */
struct store_export {
	char	*exporter;	/* the [exporter NAME] */
	int64_t	 position;
	int64_t	 epoch;
	int64_t	 delivered;	/* records delivered, ever */
	int64_t	 failures;	/* failed attempts, ever */
	int64_t	 retry_seq;	/* the record being retried; 0: none */
	int64_t	 retry_attempts; /* its failed attempts so far */
	int64_t	 retry_since;	/* its first failure, Unix s; 0: none */
	char	*last_error;	/* NULL if none */
	char	*last_error_at;	/* NULL if none */
	char	*last_delivery_at; /* NULL if none */
	int64_t	 dead;		/* dead letters, not queued */
	int64_t	 queued;	/* dead letters queued by retry-dead */
	int64_t	 next_queued;	/* the lowest queued seq at or below
				   the position; 0: none (queued ones
				   above it come in the normal flow) */
};
void		store_export_cleanup(struct store_export *e);

/* Read the state of exporter name: RS_OK and *out (caller cleans), or
 * RS_ERR_NOTFOUND if it has never run. */
enum rs_status	store_export_get(struct store *st, const char *name,
		    struct store_export *out /* OUT */);

/*
 * Call fn for every exporter that has state, ordered by name.  fn
 * borrows e for the call only and must not write to the store.
 */
typedef enum rs_status (*store_export_fn)(void *arg,
		    const struct store_export *e);
enum rs_status	store_export_foreach(struct store *st, store_export_fn fn,
		    void *arg);

/*
 * The functions below run in a write transaction of their own (no
 * transaction may be open: RS_ERR_INTERNAL), and on any error roll it
 * back.  Those a worker calls take the epoch it read: if the row's epoch
 * is no longer that (an operator replayed or re-queued meanwhile), they
 * record nothing and return RS_ERR_NOTFOUND, and the worker reloads.
 */

/* Create the row of name (position 0) if it does not exist. */
enum rs_status	store_export_ensure(struct store *st, const char *name);

/*
 * The n changes seqs[] were delivered: each gets a row in the delivery
 * log (replacing an older one) and leaves dead letters, delivered grows
 * by n, the retry state is cleared and last_delivery_at is now.  The
 * position becomes position (ignored if < 0: a retried dead letter).
 */
enum rs_status	store_export_delivered(struct store *st, const char *name,
		    int64_t epoch, const int64_t *seqs, size_t n,
		    int64_t position);

/*
 * An attempt on seq failed and will be retried: failures grows by one,
 * the retry state becomes (seq, attempts, since), last_error error.
 */
enum rs_status	store_export_failed(struct store *st, const char *name,
		    int64_t epoch, int64_t seq, int64_t attempts, int64_t since,
		    const char *error);

/*
 * The exporter itself could not be opened (no record involved): failures
 * grows by one and last_error is error, so `export status` says why the
 * exporter is not moving.  The retry state is left alone.
 */
enum rs_status	store_export_error(struct store *st, const char *name,
		    const char *error);

/* What store_export_dead() records; every pointer is borrowed. */
struct store_dead_letter {
	int64_t		 seq;
	const char	*refund_id;
	bool		 has_revision;
	int64_t		 revision;
	const char	*idempotency_key;
	const char	*reason;	/* why it was given up */
	const char	*last_response;	/* the target's last word, or NULL */
	int64_t		 attempts;	/* attempts made, the last included */
	int64_t		 since;		/* first failure, Unix s; 0: now */
};

/*
 * Give a record up: it becomes (or replaces) a dead letter, not queued;
 * failures grows by one, the retry state is cleared, last_error is
 * dl->reason, and the position becomes position (ignored if < 0).
 */
enum rs_status	store_export_dead(struct store *st, const char *name,
		    int64_t epoch, const struct store_dead_letter *dl,
		    int64_t position);

/*
 * The target already holds every change up to seq to (a file's tail
 * after a crash): if to is above the position, the changes in between,
 * dead letters excepted, get delivery-log rows and the position becomes
 * to.  *skipped (may be NULL) is the number of changes skipped.
 */
enum rs_status	store_export_skip(struct store *st, const char *name,
		    int64_t epoch, int64_t to, int64_t *skipped /* OUT */);

/*
 * `export replay`: the next record of name becomes the first change with
 * seq >= from (from >= 1); the row is created if absent, its epoch moves
 * on and its retry state is cleared.  *old (may be NULL) is the position
 * it had.  A replay only moves an exporter back (or to where it is, which
 * retries its next record at once): RS_ERR_RANGE, with *old set, if from
 * is past the record after its position, since moving there would skip
 * records it never delivered.
 */
enum rs_status	store_export_replay(struct store *st, const char *name,
		    int64_t from, int64_t *old /* OUT */);

/*
 * `export retry-dead`: queue the dead letters of name (NULL: of every
 * exporter) for another delivery, and move the epoch of each exporter
 * concerned.  *n (may be NULL) is the number queued.
 */
enum rs_status	store_export_retry_dead(struct store *st, const char *name,
		    int64_t *n /* OUT */);

/* One dead letter as listed.  Strings are owned; NULL when absent. */
struct store_dead_row {
	char	*exporter;
	int64_t	 seq;
	char	*refund_id;
	bool	 has_revision;
	int64_t	 revision;
	char	*idempotency_key;
	char	*reason;
	char	*last_response;
	int64_t	 attempts;
	char	*first_failure_at;
	char	*dead_at;
	bool	 queued;
};

/*
 * Call fn for each dead letter of name (NULL: every exporter), ordered by
 * exporter then seq.  fn borrows d for the call only and must not write
 * to the store.
 */
typedef enum rs_status (*store_dead_fn)(void *arg,
		    const struct store_dead_row *d);
enum rs_status	store_dead_foreach(struct store *st, const char *name,
		    store_dead_fn fn, void *arg);

/* Has name delivered change seq?  (The delivery log.) */
enum rs_status	store_export_was_delivered(struct store *st, const char *name,
		    int64_t seq, bool *yes /* OUT */);

/* ---- reconcile (sql/003_reconcile.sql) --------------------------------- */

/*
 * Call fn for each change-log entry of instance_id (NULL: every entry,
 * whatever its instance), in seq order, WITHOUT its body (c->body is
 * NULL; every other field is as store_changes_read() gives it, the
 * fallbacks from the body for pre-002 rows included).  fn borrows c for
 * the call only and must not write to the store; a non-RS_OK return
 * from fn stops the walk and is returned.  One read transaction.
 */
typedef enum rs_status (*store_change_fn)(void *arg,
		    const struct store_change *c);
enum rs_status	store_changes_foreach(struct store *st,
		    const char *instance_id, store_change_fn fn, void *arg);

/*
 * Call fn for each row of exporter name's delivery log (the seqs it has
 * delivered), in seq order.  Same rules for fn.
 */
typedef enum rs_status (*store_seq_fn)(void *arg, int64_t seq);
enum rs_status	store_export_deliveries_foreach(struct store *st,
		    const char *name, store_seq_fn fn, void *arg);

/*
 * One repair that reconcile made, for the audit table reconcile_repairs
 * (one row each, with the time it was made).  Strings are borrowed; the
 * optional ones may be NULL.
 */
struct store_repair {
	const char	*instance_id;	/* may be NULL */
	const char	*kind;		/* "refund_missing", "refund_stale",
					   "posting_requeued", ... */
	const char	*refund_id;	/* may be NULL */
	const char	*exporter;	/* may be NULL */
	int64_t		 seq;		/* the change concerned; 0: none */
	const char	*detail;	/* one line for people; may be NULL */
};

/*
 * Inside an open transaction (else RS_ERR_INTERNAL): record repair r, so
 * that it is durable exactly when the repair itself is (a reconcile
 * upsert logs its repair in the same transaction).
 */
enum rs_status	store_repair_log(struct store *st,
		    const struct store_repair *r);

/*
 * In a write transaction of its own: queue change dl->seq again for
 * exporter name, as `export retry-dead` would for a dead letter.  The
 * change becomes (or replaces) a dead letter with queued = 1, reason
 * dl->reason and the other fields of dl; its row in the delivery log is
 * removed (it is no longer known to be delivered); the exporter's row is
 * created if absent and its epoch moves on, so its worker reloads and
 * delivers the record before new ones.  rep (may be NULL) is logged as
 * by store_repair_log() in the same transaction.  RS_ERR_NOTFOUND if
 * change dl->seq does not exist.
 */
enum rs_status	store_export_requeue(struct store *st, const char *name,
		    const struct store_dead_letter *dl,
		    const struct store_repair *rep);

/*
 * Call fn once per repair kind with the number of repairs of that kind
 * ever recorded, ordered by kind (for /metrics).
 */
typedef enum rs_status (*store_kind_count_fn)(void *arg, const char *kind,
		    int64_t count);
enum rs_status	store_repair_counts(struct store *st,
		    store_kind_count_fn fn, void *arg);

/* The summary of one reconcile run, for reconcile_runs.  Borrowed. */
struct store_reconcile_run {
	const char	*instance_id;
	const char	*started_at;	/* UTC ISO-8601 */
	const char	*outcome;	/* "clean", "drift" or "failed" */
	bool		 heal;		/* --heal was given */
	int64_t		 wix_refunds;	/* refunds Wix returned */
	int64_t		 store_refunds;	/* refunds the store holds */
	int64_t		 drift;		/* discrepancies found */
	int64_t		 repaired;	/* repairs made */
	const char	*error;		/* why it failed, or NULL */
	const char	*report;	/* the JSON report, or NULL */
};

/*
 * In a write transaction of its own: record run r (finished now).  Only
 * the last 100 runs of each instance are kept.
 */
enum rs_status	store_reconcile_record(struct store *st,
		    const struct store_reconcile_run *r);

/*
 * The last recorded run of each instance, ordered by instance: fn gets
 * r with every string borrowed for the call (report is NULL here) and
 * finished_at.  Same rules for fn.
 */
typedef enum rs_status (*store_reconcile_fn)(void *arg,
		    const struct store_reconcile_run *r,
		    const char *finished_at);
enum rs_status	store_reconcile_last_foreach(struct store *st,
		    store_reconcile_fn fn, void *arg);

#endif
