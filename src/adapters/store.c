/*
 * store.c: the backend-independent half of the store.
 *
 * struct store is a backend's ops table plus its context.  This file
 * picks the backend (today always SQLite), checks the arguments whose
 * validity does not depend on the backend, and dispatches.  No SQL lives
 * here: it is all in store_sqlite.c.
 *
 * Threads: like the connection it wraps, a struct store is used by one
 * thread at a time.
 */
#include <stdlib.h>
#include <string.h>

#include "adapters/store.h"
#include "adapters/store_backend.h"
#include "util/log.h"
#include "util/xmalloc.h"

struct store {
	const struct store_ops	*ops;
	void			*ctx;	/* the backend's, owned */
};

/* The values refunds.source may take. */
static const char *const store_sources[] = {
	"webhook", "backfill", "reconcile", "cli"
};

const char *
store_outcome_name(enum store_outcome o)
{
	switch (o) {
	case STORE_APPLIED:
		return "applied";
	case STORE_STALE:
		return "stale";
	case STORE_DUPLICATE:
		return "duplicate";
	case STORE_IGNORED:
		return "ignored";
	}
	return "unknown";
}

/* The backend for path.  One today; a "postgresql://" URL would pick
 * another here. */
static const struct store_ops *
store_backend_for(const char *path)
{
	(void)path;
	return &store_sqlite_ops;
}

enum rs_status
store_open(const char *path, const struct store_options *opt,
    struct store **out, char **why)
{
	const struct store_ops *ops;
	struct store *st;
	void *ctx = NULL;
	enum rs_status rc;

	*why = NULL;
	if (path == NULL || *path == '\0' || opt == NULL) {
		*why = xstrdup("no database path given");
		return RS_ERR_CONFIG;
	}
	if (opt->busy_timeout_ms < 0) {
		*why = xasprintf("%s: negative busy timeout", path);
		return RS_ERR_CONFIG;
	}
	ops = store_backend_for(path);
	if (ops->version != STORE_OPS_VERSION) {
		*why = xasprintf("%s: store backend %s has version %d, "
		    "expected %d", path, ops->name, ops->version,
		    STORE_OPS_VERSION);
		return RS_ERR_INTERNAL;
	}
	rc = ops->open(path, opt, &ctx, why);
	if (rc != RS_OK)
		return rc;
	st = xcalloc(1, sizeof(*st));
	st->ops = ops;
	st->ctx = ctx;
	*out = st;
	return RS_OK;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	st->ops->close(st->ctx);
	free(st);
}

void *
store_backend_ctx(struct store *st, const struct store_ops *ops)
{
	if (st == NULL || st->ops != ops)
		return NULL;
	return st->ctx;
}

int
store_schema_version(struct store *st)
{
	return st->ops->schema_version(st->ctx);
}

enum rs_status
store_begin(struct store *st)
{
	return st->ops->begin(st->ctx);
}

enum rs_status
store_commit(struct store *st)
{
	return st->ops->commit(st->ctx);
}

void
store_rollback(struct store *st)
{
	st->ops->rollback(st->ctx);
}

/* Does r have everything a stored row needs?  NULL, or why not. */
static const char *
store_refund_check(const struct refund *r)
{
	if (r->id == NULL || *r->id == '\0')
		return "refund without id";
	if (r->charge_id == NULL)
		return "refund without charge id";
	if (r->currency == NULL)
		return "refund without currency";
	if (r->amount == NULL)
		return "refund without amount";
	if (r->status == NULL)
		return "refund without status";
	if (r->body == NULL)
		return "refund without body";
	return NULL;
}

enum rs_status
store_apply_event(struct store *st, const struct event *ev, const char *key,
    enum store_outcome *out)
{
	const char *why = NULL;

	if (key == NULL || *key == '\0')
		why = "event without dedupe key";
	else if (ev->event_type == NULL)
		why = "event without type";
	else if ((ev->kind == EVENT_APP_INSTALLED ||
	    ev->kind == EVENT_APP_REMOVED) && ev->instance_id == NULL)
		why = "app event without instance id";
	else if (ev->kind == EVENT_REFUND)
		why = store_refund_check(&ev->refund);
	if (why != NULL) {
		log_warnx("%s: event %s: %s", __func__,
		    key != NULL && *key != '\0' ? key : "(none)", why);
		return RS_ERR_INPUT;
	}
	return st->ops->apply_event(st->ctx, ev, key, out);
}

enum rs_status
store_apply_refund(struct store *st, const struct refund *r,
    const char *instance_id, bool has_seq, int64_t seq, const char *source,
    enum store_outcome *out)
{
	const char *why;
	size_t i;

	why = store_refund_check(r);
	if (why == NULL) {
		why = "unknown source";
		for (i = 0; source != NULL &&
		    i < sizeof(store_sources) / sizeof(store_sources[0]); i++)
			if (strcmp(source, store_sources[i]) == 0) {
				why = NULL;
				break;
			}
	}
	if (why != NULL) {
		log_warnx("%s: refund %s: %s", __func__,
		    r->id != NULL ? r->id : "(none)", why);
		return RS_ERR_INPUT;
	}
	return st->ops->apply_refund(st->ctx, r, instance_id, has_seq, seq,
	    source, out);
}

enum rs_status
store_probe(struct store *st)
{
	return st->ops->probe(st->ctx);
}

void
store_refund_row_cleanup(struct store_refund_row *row)
{
	if (row == NULL)
		return;
	refund_cleanup(&row->refund);
	free(row->instance_id);
	free(row->source);
	free(row->stored_at);
	memset(row, 0, sizeof(*row));
}

enum rs_status
store_refund_get(struct store *st, const char *id,
    struct store_refund_row *row)
{
	if (id == NULL)
		return RS_ERR_NOTFOUND;
	return st->ops->refund_get(st->ctx, id, row);
}

enum rs_status
store_refund_foreach(struct store *st, const char *instance_id,
    const char *status, store_refund_fn fn, void *arg)
{
	return st->ops->refund_foreach(st->ctx, instance_id, status, fn, arg);
}

enum rs_status
store_counts(struct store *st, struct store_counts *out)
{
	return st->ops->counts(st->ctx, out);
}
