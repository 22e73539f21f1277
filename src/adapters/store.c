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

const char *
store_last_error(struct store *st)
{
	return st->ops->last_error(st->ctx);
}

enum rs_status
store_begin(struct store *st)
{
	return st->ops->begin(st->ctx);
}

enum rs_status
store_begin_batch(struct store *st)
{
	if (st->ops->begin_batch == NULL)
		return st->ops->begin(st->ctx);
	return st->ops->begin_batch(st->ctx);
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

enum rs_status
store_writable(struct store *st, char **why)
{
	*why = NULL;
	return st->ops->writable(st->ctx, why);
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

enum rs_status
store_refunds_by_day(struct store *st, const char *since, store_day_fn fn,
    void *arg)
{
	if (since == NULL || strlen(since) != 10 || fn == NULL) {
		log_warnx("%s: since must be YYYY-MM-DD", __func__);
		return RS_ERR_INPUT;
	}
	return st->ops->refunds_by_day(st->ctx, since, fn, arg);
}

/* ---- instances and their backfill ------------------------------------ */

const char *
store_backfill_name(enum store_backfill b)
{
	switch (b) {
	case STORE_BACKFILL_PENDING:
		return "pending";
	case STORE_BACKFILL_RUNNING:
		return "running";
	case STORE_BACKFILL_DONE:
		return "done";
	case STORE_BACKFILL_FAILED:
		return "failed";
	}
	return "unknown";
}

void
store_instance_cleanup(struct store_instance *in)
{
	if (in == NULL)
		return;
	free(in->instance_id);
	free(in->installed_at);
	free(in->removed_at);
	free(in->backfill_cursor);
	free(in->last_error);
	free(in->backfill_started_at);
	free(in->backfill_finished_at);
	memset(in, 0, sizeof(*in));
}

/* Is id usable as an instance id?  Logs when not. */
static bool
store_instance_id_ok(const char *id, const char *func)
{
	if (id != NULL && *id != '\0')
		return true;
	log_warnx("%s: no instance id", func);
	return false;
}

enum rs_status
store_instance_get(struct store *st, const char *id,
    struct store_instance *out)
{
	if (id == NULL || *id == '\0')
		return RS_ERR_NOTFOUND;
	return st->ops->instance_get(st->ctx, id, out);
}

enum rs_status
store_instance_foreach(struct store *st, store_instance_fn fn, void *arg)
{
	return st->ops->instance_foreach(st->ctx, fn, arg);
}

enum rs_status
store_instance_ensure(struct store *st, const char *id, bool *created)
{
	bool c = false;
	enum rs_status rc;

	if (!store_instance_id_ok(id, __func__))
		return RS_ERR_INPUT;
	rc = st->ops->instance_ensure(st->ctx, id, &c);
	if (rc == RS_OK && created != NULL)
		*created = c;
	return rc;
}

enum rs_status
store_backfill_start(struct store *st, const char *id, bool restart)
{
	if (!store_instance_id_ok(id, __func__))
		return RS_ERR_INPUT;
	return st->ops->backfill_start(st->ctx, id, restart);
}

/*
 * store_backfill_pages() for func: check everything, then one call of
 * the backend.  applied (npages entries) is filled on RS_OK only.
 */
static enum rs_status
store_bf_commit(struct store *st, const char *func, const char *id,
    const struct store_bf_page *pages, size_t npages, size_t *applied)
{
	const struct store_bf_page *p;
	const char *why;
	size_t i, k, *a;
	enum rs_status rc;

	if (!store_instance_id_ok(id, func))
		return RS_ERR_INPUT;
	if (npages == 0 || pages == NULL) {
		log_warnx("%s: instance %s: no pages", func, id);
		return RS_ERR_INPUT;
	}
	/* Check every page first: a bad refund rejects all of them. */
	for (k = 0; k < npages; k++) {
		p = &pages[k];
		if (p->n > 0 && p->refunds == NULL) {
			log_warnx("%s: instance %s: %zu refunds but no array",
			    func, id, p->n);
			return RS_ERR_INPUT;
		}
		for (i = 0; i < p->n; i++)
			if ((why = store_refund_check(&p->refunds[i])) !=
			    NULL) {
				log_warnx("%s: instance %s: refund %s: %s",
				    func, id, p->refunds[i].id != NULL ?
				    p->refunds[i].id : "(none)", why);
				return RS_ERR_INPUT;
			}
	}
	a = xcalloc(npages, sizeof(*a));
	rc = st->ops->backfill_pages(st->ctx, id, pages, npages, a);
	if (rc == RS_OK && applied != NULL)
		memcpy(applied, a, npages * sizeof(*a));
	free(a);
	return rc;
}

enum rs_status
store_backfill_page(struct store *st, const char *id,
    const struct refund *refunds, size_t n, const char *next_cursor,
    size_t *applied)
{
	struct store_bf_page p;

	p.refunds = refunds;
	p.n = n;
	p.next_cursor = next_cursor;
	return store_bf_commit(st, __func__, id, &p, 1, applied);
}

enum rs_status
store_backfill_pages(struct store *st, const char *id,
    const struct store_bf_page *pages, size_t npages, size_t *applied)
{
	return store_bf_commit(st, __func__, id, pages, npages, applied);
}

enum rs_status
store_backfill_reset_cursor(struct store *st, const char *id,
    const char *why)
{
	if (!store_instance_id_ok(id, __func__))
		return RS_ERR_INPUT;
	return st->ops->backfill_reset_cursor(st->ctx, id, why);
}

enum rs_status
store_backfill_finish(struct store *st, const char *id, bool done,
    const char *error)
{
	if (!store_instance_id_ok(id, __func__))
		return RS_ERR_INPUT;
	return st->ops->backfill_finish(st->ctx, id, done, error);
}

/* ---- the change log and the exporters -------------------------------- */

void
store_change_cleanup(struct store_change *c)
{
	if (c == NULL)
		return;
	free(c->refund_id);
	free(c->instance_id);
	free(c->charge_id);
	free(c->status);
	free(c->prev_status);
	free(c->currency);
	free(c->amount);
	free(c->returned_application_fee);
	free(c->returned_processing_fee);
	free(c->created_date);
	free(c->updated_date);
	free(c->source);
	free(c->changed_at);
	free(c->body);
	free(c->posted_currency);
	free(c->posted_returned_application_fee);
	free(c->posted_returned_processing_fee);
	memset(c, 0, sizeof(*c));
}

void
store_export_cleanup(struct store_export *e)
{
	if (e == NULL)
		return;
	free(e->exporter);
	free(e->last_error);
	free(e->last_error_at);
	free(e->last_delivery_at);
	memset(e, 0, sizeof(*e));
}

/* Is name usable as an exporter name?  Logs when not. */
static bool
store_exporter_ok(const char *name, const char *func)
{
	if (name != NULL && *name != '\0')
		return true;
	log_warnx("%s: no exporter name", func);
	return false;
}

/* Does dl hold what a dead letter needs?  Logs when not. */
static bool
store_dead_letter_ok(const struct store_dead_letter *dl, const char *name,
    const char *func)
{
	if (dl != NULL && dl->seq > 0 && dl->refund_id != NULL &&
	    dl->idempotency_key != NULL && dl->reason != NULL)
		return true;
	log_warnx("%s: %s: incomplete dead letter", func, name);
	return false;
}

enum rs_status
store_changes_read(struct store *st, int64_t after, size_t max,
    struct store_change *out, size_t *n)
{
	size_t got = 0;
	enum rs_status rc;

	if (after < 0 || (max > 0 && out == NULL)) {
		log_warnx("%s: bad arguments", __func__);
		return RS_ERR_INPUT;
	}
	if (max == 0) {
		*n = 0;
		return RS_OK;
	}
	rc = st->ops->changes_read(st->ctx, after, max, out, &got);
	if (rc == RS_OK)
		*n = got;
	return rc;
}

enum rs_status
store_change_get(struct store *st, int64_t seq, struct store_change *out)
{
	if (seq <= 0)
		return RS_ERR_NOTFOUND;
	return st->ops->change_get(st->ctx, seq, out);
}

enum rs_status
store_changes_last(struct store *st, int64_t *seq)
{
	return st->ops->changes_last(st->ctx, seq);
}

enum rs_status
store_export_get(struct store *st, const char *name, struct store_export *out)
{
	if (name == NULL || *name == '\0')
		return RS_ERR_NOTFOUND;
	return st->ops->export_get(st->ctx, name, out);
}

enum rs_status
store_export_foreach(struct store *st, store_export_fn fn, void *arg)
{
	return st->ops->export_foreach(st->ctx, fn, arg);
}

enum rs_status
store_export_ensure(struct store *st, const char *name)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	return st->ops->export_ensure(st->ctx, name);
}

enum rs_status
store_export_delivered(struct store *st, const char *name, int64_t epoch,
    const int64_t *seqs, size_t n, int64_t position)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	if (n == 0 || seqs == NULL) {
		log_warnx("%s: %s: nothing delivered", __func__, name);
		return RS_ERR_INPUT;
	}
	return st->ops->export_delivered(st->ctx, name, epoch, seqs, n,
	    position);
}

enum rs_status
store_export_failed(struct store *st, const char *name, int64_t epoch,
    int64_t seq, int64_t attempts, int64_t since, const char *error)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	if (seq <= 0 || attempts <= 0) {
		log_warnx("%s: %s: bad seq or attempts", __func__, name);
		return RS_ERR_INPUT;
	}
	return st->ops->export_failed(st->ctx, name, epoch, seq, attempts,
	    since, error);
}

enum rs_status
store_export_error(struct store *st, const char *name, const char *error)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	return st->ops->export_error(st->ctx, name, error != NULL ? error :
	    "");
}

enum rs_status
store_export_dead(struct store *st, const char *name, int64_t epoch,
    const struct store_dead_letter *dl, int64_t position)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	if (!store_dead_letter_ok(dl, name, __func__))
		return RS_ERR_INPUT;
	return st->ops->export_dead(st->ctx, name, epoch, dl, position);
}

enum rs_status
store_export_skip(struct store *st, const char *name, int64_t epoch,
    int64_t to, int64_t *skipped)
{
	int64_t k = 0;
	enum rs_status rc;

	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	rc = st->ops->export_skip(st->ctx, name, epoch, to, &k);
	if (rc == RS_OK && skipped != NULL)
		*skipped = k;
	return rc;
}

enum rs_status
store_export_replay(struct store *st, const char *name, int64_t from,
    int64_t *old)
{
	int64_t o = 0;
	enum rs_status rc;

	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	if (from < 1) {
		log_warnx("%s: %s: replay from %lld: seqs start at 1",
		    __func__, name, (long long)from);
		return RS_ERR_INPUT;
	}
	rc = st->ops->export_replay(st->ctx, name, from, &o);
	if ((rc == RS_OK || rc == RS_ERR_RANGE) && old != NULL)
		*old = o;
	return rc;
}

enum rs_status
store_export_retry_dead(struct store *st, const char *name, int64_t *n)
{
	int64_t k = 0;
	enum rs_status rc;

	if (name != NULL && *name == '\0')
		name = NULL;
	rc = st->ops->export_retry_dead(st->ctx, name, &k);
	if (rc == RS_OK && n != NULL)
		*n = k;
	return rc;
}

enum rs_status
store_dead_foreach(struct store *st, const char *name, store_dead_fn fn,
    void *arg)
{
	if (name != NULL && *name == '\0')
		name = NULL;
	return st->ops->dead_foreach(st->ctx, name, fn, arg);
}

enum rs_status
store_export_was_delivered(struct store *st, const char *name, int64_t seq,
    bool *yes)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	return st->ops->export_was_delivered(st->ctx, name, seq, yes);
}

/* ---- reconcile ------------------------------------------------------- */

/* Does r hold what a reconcile_repairs row needs?  Logs when not. */
static bool
store_repair_ok(const struct store_repair *r, const char *func)
{
	if (r != NULL && r->kind != NULL && *r->kind != '\0' && r->seq >= 0)
		return true;
	log_warnx("%s: repair without kind, or with a negative seq", func);
	return false;
}

enum rs_status
store_changes_foreach(struct store *st, const char *instance_id,
    store_change_fn fn, void *arg)
{
	if (fn == NULL) {
		log_warnx("%s: no callback", __func__);
		return RS_ERR_INPUT;
	}
	return st->ops->changes_foreach(st->ctx, instance_id, fn, arg);
}

enum rs_status
store_refund_instances(struct store *st, store_id_fn fn, void *arg)
{
	if (fn == NULL) {
		log_warnx("%s: no callback", __func__);
		return RS_ERR_INPUT;
	}
	return st->ops->refund_instances(st->ctx, fn, arg);
}

enum rs_status
store_export_deliveries_foreach(struct store *st, const char *name,
    store_seq_fn fn, void *arg)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	if (fn == NULL) {
		log_warnx("%s: %s: no callback", __func__, name);
		return RS_ERR_INPUT;
	}
	return st->ops->export_deliveries_foreach(st->ctx, name, fn, arg);
}

enum rs_status
store_repair_log(struct store *st, const struct store_repair *r)
{
	if (!store_repair_ok(r, __func__))
		return RS_ERR_INPUT;
	return st->ops->repair_log(st->ctx, r);
}

enum rs_status
store_export_requeue(struct store *st, const char *name,
    const struct store_dead_letter *dl, const struct store_repair *rep)
{
	if (!store_exporter_ok(name, __func__))
		return RS_ERR_INPUT;
	if (!store_dead_letter_ok(dl, name, __func__))
		return RS_ERR_INPUT;
	if (rep != NULL && !store_repair_ok(rep, __func__))
		return RS_ERR_INPUT;
	return st->ops->export_requeue(st->ctx, name, dl, rep);
}

enum rs_status
store_repair_counts(struct store *st, store_kind_count_fn fn, void *arg)
{
	if (fn == NULL) {
		log_warnx("%s: no callback", __func__);
		return RS_ERR_INPUT;
	}
	return st->ops->repair_counts(st->ctx, fn, arg);
}

/* The values reconcile_runs.outcome may take. */
static const char *const store_run_outcomes[] = {
	"clean", "drift", "failed"
};

enum rs_status
store_reconcile_record(struct store *st, const struct store_reconcile_run *r)
{
	const char *why = NULL;
	size_t i;

	if (r == NULL)
		why = "no run";
	else if (r->started_at == NULL || *r->started_at == '\0')
		why = "run without start time";
	else if (r->wix_refunds < 0 || r->store_refunds < 0 ||
	    r->drift < 0 || r->repaired < 0)
		why = "run with a negative count";
	else {
		why = "run with an unknown outcome";
		for (i = 0; r->outcome != NULL && i <
		    sizeof(store_run_outcomes) / sizeof(store_run_outcomes[0]);
		    i++)
			if (strcmp(r->outcome, store_run_outcomes[i]) == 0) {
				why = NULL;
				break;
			}
	}
	if (why != NULL) {
		log_warnx("%s: instance %s: %s", __func__,
		    r != NULL && r->instance_id != NULL ? r->instance_id :
		    "(none)", why);
		return RS_ERR_INPUT;
	}
	return st->ops->reconcile_record(st->ctx, r);
}

enum rs_status
store_reconcile_last_foreach(struct store *st, store_reconcile_fn fn,
    void *arg)
{
	if (fn == NULL) {
		log_warnx("%s: no callback", __func__);
		return RS_ERR_INPUT;
	}
	return st->ops->reconcile_last_foreach(st->ctx, fn, arg);
}
