/*
 * store_backend.h: what a storage backend implements, and the embedded
 * migrations.  Only store.c, the backends and the store's unit tests
 * include this.
 *
 * A backend is a versioned ops table plus an instance (SQLite's
 * sqlite3_vfs, Postfix's DICT).  store.c checks the arguments that do
 * not depend on the backend, then calls the op with the backend's own
 * context first.  Every op has the contract of the store.h function of
 * the same name, with the struct store replaced by ctx.  All methods are
 * mandatory.
 */
#ifndef RS_STORE_BACKEND_H
#define RS_STORE_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "adapters/store.h"

/* One numbered file from sql/, embedded at build time
 * (scripts/embed-sql.sh). */
struct store_migration {
	int		 version;	/* NNN of sql/NNN_name.sql */
	const char	*name;		/* "001_initial" */
	const char	*sql;		/* the whole file */
};

extern const struct store_migration store_migrations[];
extern const unsigned store_migration_count;

/* Bumped when struct store_ops changes shape. */
#define STORE_OPS_VERSION	10

struct store_ops {
	int		 version;	/* STORE_OPS_VERSION */
	const char	*name;		/* "sqlite" */

	/*
	 * Open the database at path and migrate it.  RS_OK and *ctx (the
	 * backend owns it; released by close), or an error and a message
	 * in *why (caller frees).
	 */
	enum rs_status	(*open)(const char *path,
			    const struct store_options *opt,
			    void **ctx /* OUT */, char **why /* OUT */);
	/* Release ctx and everything it holds; ctx may be NULL. */
	void		(*close)(void *ctx);
	int		(*schema_version)(void *ctx);
	const char	*(*last_error)(void *ctx);

	enum rs_status	(*begin)(void *ctx);
	/* Optional: NULL makes store_begin_batch() a store_begin(). */
	enum rs_status	(*begin_batch)(void *ctx);
	enum rs_status	(*commit)(void *ctx);
	void		(*rollback)(void *ctx);

	/* store.c has checked ev and key (see store_apply_event). */
	enum rs_status	(*apply_event)(void *ctx, const struct event *ev,
			    const char *key, enum store_outcome *out);
	/* store.c has checked r and source. */
	enum rs_status	(*apply_refund)(void *ctx, const struct refund *r,
			    const char *instance_id, bool has_seq, int64_t seq,
			    const char *source, enum store_outcome *out);
	enum rs_status	(*probe)(void *ctx);

	enum rs_status	(*refund_get)(void *ctx, const char *id,
			    struct store_refund_row *row);
	enum rs_status	(*refund_foreach)(void *ctx, const char *instance_id,
			    const char *status, store_refund_fn fn, void *arg);
	enum rs_status	(*counts)(void *ctx, struct store_counts *out);

	/* Instances and their backfill (version 2).  store.c has checked
	 * that id is not empty and, for backfill_pages, that npages >= 1,
	 * that pages and every refund are sound, and that applied is an
	 * array of npages (version 6: backfill_pages replaced backfill_page;
	 * store_backfill_page() is its one-page case). */
	enum rs_status	(*instance_get)(void *ctx, const char *id,
			    struct store_instance *out);
	enum rs_status	(*instance_foreach)(void *ctx,
			    store_instance_fn fn, void *arg);
	enum rs_status	(*instance_ensure)(void *ctx, const char *id,
			    bool *created);
	enum rs_status	(*backfill_start)(void *ctx, const char *id,
			    bool restart);
	enum rs_status	(*backfill_pages)(void *ctx, const char *id,
			    const struct store_bf_page *pages, size_t npages,
			    size_t *applied);
	enum rs_status	(*backfill_reset_cursor)(void *ctx,
			    const char *id, const char *why);
	enum rs_status	(*backfill_finish)(void *ctx, const char *id,
			    bool done, const char *error);

	/* The change log and the exporters (version 3).  store.c has
	 * checked that names are not empty and that counts, seqs and
	 * arrays agree. */
	enum rs_status	(*changes_read)(void *ctx, int64_t after, size_t max,
			    struct store_change *out, size_t *n);
	enum rs_status	(*change_get)(void *ctx, int64_t seq,
			    struct store_change *out);
	enum rs_status	(*changes_last)(void *ctx, int64_t *seq);
	enum rs_status	(*export_get)(void *ctx, const char *name,
			    struct store_export *out);
	enum rs_status	(*export_foreach)(void *ctx, store_export_fn fn,
			    void *arg);
	enum rs_status	(*export_ensure)(void *ctx, const char *name);
	enum rs_status	(*export_delivered)(void *ctx, const char *name,
			    int64_t epoch, const int64_t *seqs, size_t n,
			    int64_t position);
	enum rs_status	(*export_failed)(void *ctx, const char *name,
			    int64_t epoch, int64_t seq, int64_t attempts,
			    int64_t since, const char *error);
	enum rs_status	(*export_dead)(void *ctx, const char *name,
			    int64_t epoch, const struct store_dead_letter *dl,
			    int64_t position);
	enum rs_status	(*export_skip)(void *ctx, const char *name,
			    int64_t epoch, int64_t to, int64_t *skipped);
	enum rs_status	(*export_error)(void *ctx, const char *name,
			    const char *error);
	enum rs_status	(*export_replay)(void *ctx, const char *name,
			    int64_t from, int64_t *old);
	enum rs_status	(*export_retry_dead)(void *ctx, const char *name,
			    int64_t *n);
	enum rs_status	(*dead_foreach)(void *ctx, const char *name,
			    store_dead_fn fn, void *arg);
	enum rs_status	(*export_was_delivered)(void *ctx, const char *name,
			    int64_t seq, bool *yes);

	/* Status pages (version 4).  store.c has checked since. */
	enum rs_status	(*refunds_by_day)(void *ctx, const char *since,
			    store_day_fn fn, void *arg);

	/* Reconcile (version 5).  store.c has checked that names are not
	 * empty, that r, dl and rep hold what a row needs, and that fn is
	 * set. */
	enum rs_status	(*changes_foreach)(void *ctx, const char *instance_id,
			    store_change_fn fn, void *arg);
	enum rs_status	(*export_deliveries_foreach)(void *ctx,
			    const char *name, store_seq_fn fn, void *arg);
	enum rs_status	(*repair_log)(void *ctx, const struct store_repair *r);
	enum rs_status	(*export_requeue)(void *ctx, const char *name,
			    const struct store_dead_letter *dl,
			    const struct store_repair *rep);
	enum rs_status	(*repair_counts)(void *ctx, store_kind_count_fn fn,
			    void *arg);
	enum rs_status	(*reconcile_record)(void *ctx,
			    const struct store_reconcile_run *r);
	enum rs_status	(*reconcile_last_foreach)(void *ctx,
			    store_reconcile_fn fn, void *arg);
	/* Version 10.  store.c has checked that fn is set. */
	enum rs_status	(*refund_instances)(void *ctx, store_id_fn fn,
			    void *arg);

	/* Start-up (version 7). */
	enum rs_status	(*writable)(void *ctx, char **why);
};

/* The SQLite backend (store_sqlite.c). */
extern const struct store_ops store_sqlite_ops;

/*
 * The backend context behind st if st runs on ops, else NULL.
 * Borrowed; valid until store_close(st).
 */
void		*store_backend_ctx(struct store *st,
		    const struct store_ops *ops);

/*
 * For tests and diagnostics only: the SQLite connection behind st, or
 * NULL if st is not an SQLite store.  Borrowed; valid until
 * store_close(st).  Whoever uses it must leave the connection as found
 * (no open transaction, same pragmas).
 */
struct sqlite3	*store_sqlite_handle(struct store *st);

#endif
