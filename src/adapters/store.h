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
};

/*
 * Open (creating it if needed, unless readonly) the database at path,
 * apply pending migrations from sql/ in order, and set the pragmas.
 * Returns RS_OK and *out (caller owns; store_close()), or an error with a
 * message in *why (caller frees with free()).
 */
enum rs_status	store_open(const char *path, const struct store_options *opt,
		    struct store **out /* OUT */, char **why /* OUT */);
void		store_close(struct store *st);

/* Schema version after migrations (the highest applied sql/NNN). */
int		store_schema_version(struct store *st);

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

#endif
