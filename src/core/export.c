/*
 * export.c: the export engine (SPEC §5).  The contract is in export.h.
 *
 * Key decision: the store is the only shared state.  A worker keeps
 * nothing that the store does not also hold, except its backoff
 * deadline, so a restart, a crash or an operator's `export replay` in
 * another process are all handled the same way: the worker reads its
 * row (position, epoch, retry state) at every step, and every write it
 * makes is guarded by the epoch it read.  When the epoch moved, the
 * write is refused, the worker reloads, asks the exporter's recover()
 * where the target stands, and goes on from there.
 *
 * The order within a step is what makes delivery at least once without
 * gaps: read a batch after the position, deliver it, and only then
 * record the records reported done (delivery log, position) in one
 * transaction.  A crash between the two re-sends the batch with the
 * same idempotency keys; a file exporter's recover() reports the seq its
 * file already holds and the engine skips to it.
 *
 * Threads: one thread per worker (export_engine_*), each with its own
 * store connection and exporter instance; nothing else is shared but the
 * engine's stop flag and wake-up counter, under its mutex.  The CLI
 * commands at the bottom run on the main thread of a `refundsync export`
 * process.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/export.h"
#include "exporters/posting.h"
#include "exporters/registry.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/termsafe.h"
#include "util/xmalloc.h"

#define EXPORT_ERR_MAX		1024	/* bytes of an exporter's message */
#define EXPORT_STORE_RETRY_MS	1000	/* wait after a store failure */
#define EXPORT_SHIFT_MAX	40	/* doublings of the backoff, at most */

#define M_LAG		"refundsync_export_lag"
#define M_POSITION	"refundsync_export_position"
#define M_DELIVERED	"refundsync_export_delivered_total"
#define M_FAILURES	"refundsync_export_failures_total"
#define M_DEAD		"refundsync_export_dead_letters"

struct export_worker {
	char			*name;
	char			*label;		/* exporter="NAME" */
	struct rs_exporter_ops	 ops;		/* recover defaulted */
	struct rs_export_kv	*kv;		/* owned copies */
	size_t			 nkv;
	size_t			 batch;
	bool			 one_at_a_time;	/* see export_spec */
	const atomic_bool	*halt;		/* the engine's stop, or NULL */
	int64_t			 retry_initial_ms;
	int64_t			 retry_max_ms;
	int64_t			 retry_horizon_s;
	int64_t			 poll_ms;
	struct store		*st;
	void			*ctx;		/* the exporter instance */
	bool			 opened;
	int64_t			 open_failures;
	int64_t			 refusals;	/* in a row (export_refuse) */
	bool			 loaded;	/* epoch is the row's */
	int64_t			 epoch;
	/* The record being retried (mirrors the row's retry state). */
	int64_t			 retry_seq;	/* 0: none */
	int64_t			 attempts;
	int64_t			 since;		/* wall s of the first */
	int64_t			 due_ms;	/* no attempt before this */
	uint64_t		 rng;
	/* The batch under way. */
	struct store_change	*chg;
	struct rs_export_record	*recs;
	char			**keys;
	int64_t			*seqs;
	size_t			 nchg;
	char			 err[EXPORT_ERR_MAX];
};

/* The default for an exporter without recover(): it holds nothing. */
static int
export_no_recover(void *ctx, int64_t *last_seq, char *err, size_t errlen)
{
	(void)ctx;
	(void)err;
	(void)errlen;
	*last_seq = 0;
	return RS_EXPORT_OK;
}

static void
export_define_metrics(void)
{
	metrics_define(M_LAG, METRIC_GAUGE,
	    "Changes in the change log that an exporter has not handled yet.");
	metrics_define(M_POSITION, METRIC_GAUGE,
	    "The change-log seq up to which an exporter is done.");
	metrics_define(M_DELIVERED, METRIC_COUNTER,
	    "Records an exporter delivered.");
	metrics_define(M_FAILURES, METRIC_COUNTER,
	    "Failed delivery attempts of an exporter, dead letters included.");
	metrics_define(M_DEAD, METRIC_GAUGE,
	    "Dead letters of an exporter (queued for retry included).");
}

/* exporter="name" with the label escapes of the text format. */
static char *
export_label(const char *name)
{
	return metrics_label("exporter", name);
}

/* Make an exporter's message safe for one log line and a column. */
static void
export_err_clean(char *err, size_t errlen)
{
	size_t i;

	err[errlen - 1] = '\0';
	for (i = 0; err[i] != '\0'; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			err[i] = ' ';
}

/* xorshift64*: jitter needs spread, not secrecy. */
static uint64_t
export_rand(struct export_worker *w)
{
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 0x2545f4914f6cdd1dULL;
}

/*
 * The wait after the attempts-th failure in a row: d = initial * 2^(n-1)
 * capped at max, then drawn from [d/2, d] ("equal jitter"), so retries
 * of many exporters spread out but never come faster than half the
 * schedule.
 */
static int64_t
export_backoff(struct export_worker *w, int64_t attempts)
{
	int64_t d = w->retry_initial_ms, half;
	int64_t shift = attempts > 1 ? attempts - 1 : 0;

	if (shift > EXPORT_SHIFT_MAX)
		shift = EXPORT_SHIFT_MAX;
	while (shift-- > 0 && d < w->retry_max_ms)
		d *= 2;
	if (d > w->retry_max_ms)
		d = w->retry_max_ms;
	half = d / 2;
	return d - half + (int64_t)(export_rand(w) % (uint64_t)(half + 1));
}

/* Is c kept as it is in the date part of a key? */
static bool
export_key_byte(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '~' ||
	    c == ':' || c == '@' || c == '/' || c == '+' || c == '=' ||
	    c == '-';
}

char *
export_idempotency_key(const char *name, const struct store_change *c,
    enum rs_posting posting)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *rev_sfx = posting == RS_POSTING_REVERSE ? ":reverse" :
	    posting == RS_POSTING_ADJUST ? ":adjust" : "";
	const unsigned char *d;
	struct buf b;

	if (c->has_revision)
		return xasprintf("%s:%s:%" PRId64 "%s", name, c->refund_id,
		    c->revision, rev_sfx);
	if (!c->has_event_seq && c->updated_date == NULL)
		return xasprintf("%s:%s:-%s", name, c->refund_id, rev_sfx);
	/*
	 * No revision: the store ordered this version by its event
	 * sequence, then its updatedDate, so the two tell it from every
	 * other version of the refund.  Both come from the change log, so
	 * the key is the same on every retry, crash and replay.
	 */
	/* Room for all of it, so no append fails. */
	buf_init(&b, strlen(name) + strlen(c->refund_id) + 64 +
	    (c->updated_date != NULL ? 3 * strlen(c->updated_date) : 0));
	(void)buf_printf(&b, "%s:%s:-:", name, c->refund_id);
	if (c->has_event_seq)
		(void)buf_printf(&b, "%" PRId64 ":", c->event_seq);
	else
		(void)buf_appends(&b, "-:");
	if (c->updated_date == NULL)
		(void)buf_appends(&b, "-");
	for (d = (const unsigned char *)c->updated_date; d != NULL &&
	    *d != '\0'; d++) {
		if (export_key_byte(*d))
			(void)buf_append(&b, d, 1);
		else
			(void)buf_printf(&b, "%%%c%c", hex[*d >> 4],
			    hex[*d & 15]);
	}
	(void)buf_appends(&b, rev_sfx);
	return buf_detach(&b, NULL);
}

void
export_spec_init(struct export_spec *spec, const char *name,
    const struct rs_exporter_ops *ops)
{
	memset(spec, 0, sizeof(*spec));
	spec->name = name;
	spec->ops = ops;
	spec->batch = CONFIG_EXPORT_BATCH;
	spec->retry_initial_ms = CONFIG_EXPORT_RETRY_INITIAL_MS;
	spec->retry_max_ms = CONFIG_EXPORT_RETRY_MAX_MS;
	spec->retry_horizon_s = CONFIG_EXPORT_RETRY_HORIZON;
	spec->poll_ms = CONFIG_EXPORT_POLL_MS;
}

/* Update the gauges from the row. */
static void
export_gauges(struct export_worker *w, const struct store_export *e)
{
	int64_t last = 0;

	metrics_set(M_DEAD, w->label, e->dead + e->queued);
	metrics_set(M_POSITION, w->label, e->position);
	if (store_changes_last(w->st, &last) == RS_OK)
		metrics_set(M_LAG, w->label, last > e->position ?
		    last - e->position : 0);
}

/* Update the gauges from the row as the store has it now. */
static void
export_gauges_read(struct export_worker *w)
{
	struct store_export e;

	if (store_export_get(w->st, w->name, &e) == RS_OK) {
		export_gauges(w, &e);
		store_export_cleanup(&e);
	}
}

enum rs_status
export_worker_new(const char *store_path, int busy_timeout_ms,
    const struct export_spec *spec, struct export_worker **out, char **why)
{
	struct store_options so;
	struct export_worker *w = NULL;
	enum rs_status st;
	size_t i;

	*why = NULL;
	if (spec == NULL || spec->name == NULL || *spec->name == '\0' ||
	    spec->ops == NULL || spec->ops->open == NULL ||
	    spec->ops->deliver == NULL || spec->ops->close == NULL ||
	    spec->batch == 0 || spec->retry_initial_ms <= 0 ||
	    spec->retry_max_ms < spec->retry_initial_ms ||
	    spec->retry_horizon_s <= 0 || spec->poll_ms <= 0) {
		*why = xasprintf("exporter %s: incomplete specification",
		    spec != NULL && spec->name != NULL ? spec->name : "?");
		return RS_ERR_INTERNAL;
	}
	if (spec->ops->abi_version != RS_EXPORTER_ABI_VERSION) {
		*why = xasprintf("exporter %s: ABI version %u, expected %u",
		    spec->name, (unsigned)spec->ops->abi_version,
		    (unsigned)RS_EXPORTER_ABI_VERSION);
		return RS_ERR_CONFIG;
	}
	export_define_metrics();
	w = xcalloc(1, sizeof(*w));
	w->name = xstrdup(spec->name);
	w->label = export_label(spec->name);
	w->ops = *spec->ops;
	if (w->ops.recover == NULL)
		w->ops.recover = export_no_recover;
	w->nkv = spec->nkv;
	w->kv = xcalloc(spec->nkv + 1, sizeof(*w->kv));
	for (i = 0; i < spec->nkv; i++) {
		w->kv[i].key = xstrdup(spec->kv[i].key);
		w->kv[i].value = xstrdup(spec->kv[i].value);
	}
	w->batch = spec->batch;
	w->one_at_a_time = spec->one_at_a_time;
	w->retry_initial_ms = spec->retry_initial_ms;
	w->retry_max_ms = spec->retry_max_ms;
	w->retry_horizon_s = spec->retry_horizon_s;
	w->poll_ms = spec->poll_ms;
	w->rng = (uint64_t)clock_mono_ms() * 0x9e3779b97f4a7c15ULL ^
	    (uint64_t)(uintptr_t)w ^ (uint64_t)clock_wall_s();
	if (w->rng == 0)
		w->rng = 0x853c49e6748fea9bULL;
	w->chg = xcalloc(w->batch, sizeof(*w->chg));
	w->recs = xcalloc(w->batch, sizeof(*w->recs));
	w->keys = xcalloc(w->batch, sizeof(*w->keys));
	w->seqs = xcalloc(w->batch, sizeof(*w->seqs));

	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = busy_timeout_ms;
	/* Positions may lag a power cut (never a crash): recover() and the
	 * idempotency keys make the re-sends harmless, and it saves one
	 * fsync per batch. */
	so.lazy_sync = true;
	if ((st = store_open(store_path, &so, &w->st, why)) != RS_OK)
		goto fail;
	if ((st = store_export_ensure(w->st, w->name)) != RS_OK) {
		*why = xasprintf("exporter %s: cannot create its state in the "
		    "store: %s", w->name, rs_strstatus(st));
		goto fail;
	}
	/* The gauges and counters exist from the start, at their values,
	 * also for an exporter that never opens. */
	metrics_add(M_DELIVERED, w->label, 0);
	metrics_add(M_FAILURES, w->label, 0);
	export_gauges_read(w);
	*out = w;
	return RS_OK;
fail:
	export_worker_free(w);
	return st;
}

/* Forget the batch under way. */
static void
export_batch_clear(struct export_worker *w)
{
	size_t i;

	for (i = 0; i < w->nchg; i++) {
		store_change_cleanup(&w->chg[i]);
		free(w->keys[i]);
		w->keys[i] = NULL;
	}
	w->nchg = 0;
}

void
export_worker_free(struct export_worker *w)
{
	size_t i;

	if (w == NULL)
		return;
	export_batch_clear(w);
	if (w->opened)
		w->ops.close(w->ctx);
	store_close(w->st);
	for (i = 0; i < w->nkv; i++) {
		free((char *)(uintptr_t)w->kv[i].key);
		free((char *)(uintptr_t)w->kv[i].value);
	}
	free(w->kv);
	free(w->chg);
	free(w->recs);
	free(w->keys);
	free(w->seqs);
	free(w->label);
	free(w->name);
	free(w);
}

const char *
export_worker_name(const struct export_worker *w)
{
	return w->name;
}

void
export_record_fill(struct rs_export_record *r, const struct store_change *c)
{
	memset(r, 0, sizeof(*r));
	r->seq = c->seq;
	r->refund_id = c->refund_id;
	r->instance_id = c->instance_id;
	r->charge_id = c->charge_id;
	r->has_revision = c->has_revision;
	r->revision = c->revision;
	r->status = c->status;
	r->prev_status = c->prev_status;
	r->currency = c->currency;
	r->amount = c->amount;
	r->amount_exact = c->amount_exact && c->exponent >= 0;
	r->amount_minor = c->amount_minor;
	r->exponent = c->exponent >= 0 ? c->exponent : 0;
	r->returned_application_fee = c->returned_application_fee;
	r->returned_processing_fee = c->returned_processing_fee;
	r->created_date = c->created_date;
	r->updated_date = c->updated_date;
	r->changed_at = c->changed_at;
	r->source = c->source;
	r->body = c->body;
	if (c->has_posted) {
		r->has_posted = 1;
		r->posted_currency = c->posted_currency;
		r->posted_amount_exact = c->posted_amount_exact &&
		    c->posted_exponent >= 0;
		r->posted_amount_minor = c->posted_amount_minor;
		r->posted_exponent = c->posted_exponent >= 0 ?
		    c->posted_exponent : 0;
		r->posted_returned_application_fee =
		    c->posted_returned_application_fee;
		r->posted_returned_processing_fee =
		    c->posted_returned_processing_fee;
	}
	r->posting = posting_classify_record(r);
}

/* The ABI records of the batch in w->chg[0..nchg). */
static void
export_batch_fill(struct export_worker *w)
{
	const struct store_change *c;
	struct rs_export_record *r;
	size_t i;

	for (i = 0; i < w->nchg; i++) {
		c = &w->chg[i];
		r = &w->recs[i];
		export_record_fill(r, c);
		w->keys[i] = export_idempotency_key(w->name, c, r->posting);
		r->idempotency_key = w->keys[i];
		w->seqs[i] = c->seq;
	}
}

/* A store call failed: log it and wait a little. */
static enum export_step
export_store_failed(struct export_worker *w, int64_t now, const char *what,
    enum rs_status st, int64_t *next)
{
	if (st == RS_ERR_NOTFOUND) {
		/* The epoch moved under us: an operator replayed or
		 * re-queued.  Nothing was recorded; reload now. */
		log_info("export %s: moved by an operator; reloading", w->name);
		w->loaded = false;
		*next = now;
		return EXPORT_STEP_PROGRESS;
	}
	log_warnx("export %s: store: %s: %s; trying again in %d ms", w->name,
	    what, rs_strstatus(st), EXPORT_STORE_RETRY_MS);
	w->due_ms = now + EXPORT_STORE_RETRY_MS;
	*next = w->due_ms;
	return EXPORT_STEP_ERROR;
}

/* Open the exporter instance; false (and a backoff) if it fails. */
static bool
export_open(struct export_worker *w, int64_t now)
{
	int rc;

	w->err[0] = '\0';
	w->ctx = NULL;
	rc = w->ops.open(&w->ctx, w->name, w->kv, w->nkv, w->err,
	    sizeof(w->err));
	export_err_clean(w->err, sizeof(w->err));
	if (rc == RS_EXPORT_OK) {
		if (w->open_failures > 0)
			log_info("export %s: opened after %" PRId64
			    " failures", w->name, w->open_failures);
		w->opened = true;
		w->open_failures = 0;
		w->loaded = false;	/* recover() before anything else */
		return true;
	}
	w->ctx = NULL;
	w->open_failures++;
	w->due_ms = now + export_backoff(w, w->open_failures);
	metrics_add(M_FAILURES, w->label, 1);
	log_warnx("export %s: cannot open the exporter (%s): %s; trying "
	    "again in %" PRId64 " ms", w->name,
	    rc == RS_EXPORT_PERMANENT ? "permanent" : "transient",
	    w->err[0] != '\0' ? w->err : "no reason given",
	    w->due_ms - now);
	/* Its lag keeps growing: /metrics must show it. */
	export_gauges_read(w);
	{
		/* So that `export status` says why it does not move. */
		char *e = xasprintf("cannot open the exporter: %s",
		    w->err[0] != '\0' ? w->err : "no reason given");

		(void)store_export_error(w->st, w->name, e);
		free(e);
	}
	return false;
}

/*
 * The instance's target cannot be used (the reason is in w->err): close
 * it and open it again after a backoff, as when open() fails, so that an
 * operator who moved a file away sees it taken up without a restart.
 */
static void
export_refuse(struct export_worker *w, int64_t now)
{
	w->ops.close(w->ctx);
	w->ctx = NULL;
	w->opened = false;
	w->loaded = false;
	w->refusals++;
	w->due_ms = now + export_backoff(w, w->refusals);
	metrics_add(M_FAILURES, w->label, 1);
	log_warnx("export %s: %s; trying again in %" PRId64 " ms", w->name,
	    w->err, w->due_ms - now);
	/* So that `export status` says why it does not move. */
	(void)store_export_error(w->st, w->name, w->err);
}

/*
 * Read the row into *e; on a new epoch (first step, reopen, replay,
 * retry-dead) take its retry state and fast-forward to what the target
 * holds.  *skipped: the position moved.  *alien: the target claims a
 * change the change log does not hold yet (w->err says so): it was
 * written against another store, and nothing is delivered to it.
 */
static enum rs_status
export_load(struct export_worker *w, struct store_export *e, bool *skipped,
    bool *alien)
{
	enum rs_status st;
	int64_t last = 0, k = 0, newest = 0;
	int rc;

	*skipped = false;
	*alien = false;
	st = store_export_get(w->st, w->name, e);
	if (st == RS_ERR_NOTFOUND) {
		/* Deleted by hand while running: start again. */
		if ((st = store_export_ensure(w->st, w->name)) != RS_OK)
			return st;
		st = store_export_get(w->st, w->name, e);
	}
	if (st != RS_OK)
		return st;
	if (w->loaded && e->epoch == w->epoch)
		return RS_OK;
	w->epoch = e->epoch;
	w->retry_seq = e->retry_seq;
	w->attempts = e->retry_attempts;
	w->since = e->retry_since;
	w->err[0] = '\0';
	rc = w->ops.recover(w->ctx, &last, w->err, sizeof(w->err));
	export_err_clean(w->err, sizeof(w->err));
	if (rc != RS_EXPORT_OK) {
		/* Not fatal: deliver() will meet the same trouble and the
		 * retry machinery handles it. */
		log_warnx("export %s: recover: %s", w->name,
		    w->err[0] != '\0' ? w->err : "failed");
		last = 0;
	}
	/*
	 * Seqs are never reused and the change log is durable before an
	 * exporter sees a change, so a target ahead of it was filled from
	 * another store (or this one was restored from an older copy).
	 * Skipping to its seq would skip every change up to it that this
	 * store will get.
	 */
	if (last > 0) {
		if ((st = store_changes_last(w->st, &newest)) != RS_OK)
			return st;
		if (last > newest) {
			snprintf(w->err, sizeof(w->err), "the target holds "
			    "changes up to seq %" PRId64 " but the change log "
			    "ends at seq %" PRId64 ": it was written against "
			    "another store; refusing it (move it away, or "
			    "choose another path)", last, newest);
			*alien = true;
			return RS_OK;
		}
	}
	if (last > e->position) {
		st = store_export_skip(w->st, w->name, w->epoch, last, &k);
		if (st != RS_OK)
			return st;
		log_info("export %s: the target already holds every change up "
		    "to seq %" PRId64 ": skipping from %" PRId64 " (%" PRId64
		    " changes it took before a restart or replay)", w->name,
		    last, e->position, k);
		metrics_add(M_DELIVERED, w->label, k);
		*skipped = true;
		return RS_OK;	/* w->loaded stays false: read again */
	}
	w->refusals = 0;
	w->loaded = true;
	return RS_OK;
}

/*
 * Give record i of the batch up: a dead letter with reason and the
 * exporter's message.  position: where the position goes (-1: stays).
 */
static enum rs_status
export_dead(struct export_worker *w, size_t i, const char *reason,
    const char *response, int64_t attempts, int64_t position)
{
	struct store_dead_letter dl;
	const struct rs_export_record *r = &w->recs[i];
	enum rs_status st;

	memset(&dl, 0, sizeof(dl));
	dl.seq = r->seq;
	dl.refund_id = r->refund_id;
	dl.has_revision = r->has_revision != 0;
	dl.revision = r->revision;
	dl.idempotency_key = r->idempotency_key;
	dl.reason = reason;
	dl.last_response = response != NULL && *response != '\0' ?
	    response : NULL;
	dl.attempts = attempts;
	dl.since = w->retry_seq == r->seq ? w->since : 0;
	st = store_export_dead(w->st, w->name, w->epoch, &dl, position);
	if (st == RS_OK) {
		log_warnx("export %s: seq %" PRId64 " (%s) is a dead letter: "
		    "%s%s%s", w->name, r->seq, r->idempotency_key, reason,
		    dl.last_response != NULL ? ": " : "",
		    dl.last_response != NULL ? dl.last_response : "");
		w->retry_seq = 0;
		w->attempts = 0;
		w->since = 0;
	}
	return st;
}

/*
 * Record i of the batch failed with rc (the message is in w->err).
 * position: where the position goes if it becomes a dead letter.
 */
static enum export_step
export_failed(struct export_worker *w, int64_t now, size_t i, int rc,
    int64_t position, int64_t *next)
{
	const struct rs_export_record *r = &w->recs[i];
	enum rs_status st;
	int64_t wall = clock_wall_s(), delay;
	char *reason = NULL;

	metrics_add(M_FAILURES, w->label, 1);
	if (w->retry_seq != r->seq) {
		w->retry_seq = r->seq;
		w->attempts = 0;
		w->since = wall;
	}
	w->attempts++;
	if (rc == RS_EXPORT_PERMANENT)
		reason = xasprintf("permanent failure (attempt %" PRId64 ")",
		    w->attempts);
	else if (wall - w->since >= w->retry_horizon_s)
		reason = xasprintf("still failing after %" PRId64 " attempts "
		    "over %" PRId64 " s (retry_horizon is %" PRId64 " s)",
		    w->attempts, wall - w->since, w->retry_horizon_s);
	if (reason != NULL) {
		st = export_dead(w, i, reason, w->err, w->attempts, position);
		free(reason);
		if (st != RS_OK)
			return export_store_failed(w, now, "dead letter", st,
			    next);
		*next = now;
		return EXPORT_STEP_PROGRESS;
	}
	st = store_export_failed(w->st, w->name, w->epoch, r->seq,
	    w->attempts, w->since, w->err[0] != '\0' ? w->err :
	    "transient failure");
	if (st != RS_OK)
		return export_store_failed(w, now, "record failure", st, next);
	delay = export_backoff(w, w->attempts);
	w->due_ms = now + delay;
	*next = w->due_ms;
	log_warnx("export %s: seq %" PRId64 " (%s): attempt %" PRId64
	    " failed: %s; next in %" PRId64 " ms", w->name, r->seq,
	    r->idempotency_key, w->attempts, w->err[0] != '\0' ? w->err :
	    "transient failure", delay);
	return EXPORT_STEP_WAIT;
}

/*
 * Deliver the batch in w->recs[0..nchg).  advance: the position follows
 * the records (the normal flow), else it stays (a queued dead letter).
 */
static enum export_step
export_deliver(struct export_worker *w, int64_t now, bool advance,
    int64_t *next)
{
	enum rs_status st;
	size_t n = w->nchg, done = 0;
	int rc;

	w->err[0] = '\0';
	if (w->one_at_a_time && n > 1) {
		/*
		 * One record per call, the same requests as one call for
		 * the lot, but a stop (SIGTERM) waits for the record in
		 * flight only: the batch ends there, with what is done.
		 */
		size_t one;

		for (;;) {
			one = 0;
			rc = w->ops.deliver(w->ctx, &w->recs[done], 1, &one,
			    w->err, sizeof(w->err));
			if (one > 1) {
				done = n + 1;	/* refused below */
				break;
			}
			done += one;
			if (rc != RS_EXPORT_OK || one == 0 || done == n)
				break;
			if (w->halt != NULL && atomic_load(w->halt)) {
				n = done;	/* the rest waits */
				break;
			}
		}
	} else
		rc = w->ops.deliver(w->ctx, w->recs, n, &done, w->err,
		    sizeof(w->err));
	export_err_clean(w->err, sizeof(w->err));
	/* A plugin's answer is checked like any other input. */
	if (rc != RS_EXPORT_OK && rc != RS_EXPORT_RETRY &&
	    rc != RS_EXPORT_PERMANENT) {
		snprintf(w->err, sizeof(w->err), "the exporter returned an "
		    "unknown result (%d)", rc);
		rc = RS_EXPORT_RETRY;
		done = 0;
	} else if (done > n) {
		snprintf(w->err, sizeof(w->err), "the exporter reported %zu "
		    "of %zu records done", done, n);
		rc = RS_EXPORT_RETRY;
		done = 0;
	} else if (rc == RS_EXPORT_OK && done < n) {
		snprintf(w->err, sizeof(w->err), "the exporter reported "
		    "success for %zu of %zu records only", done, n);
		rc = RS_EXPORT_RETRY;
	} else if (rc != RS_EXPORT_OK && done == n) {
		/* A failure with every record done: nothing to retry. */
		rc = RS_EXPORT_OK;
	}
	if (done > 0) {
		st = store_export_delivered(w->st, w->name, w->epoch, w->seqs,
		    done, advance ? w->seqs[done - 1] : -1);
		if (st != RS_OK)
			return export_store_failed(w, now, "record delivery",
			    st, next);
		metrics_add(M_DELIVERED, w->label, (int64_t)done);
		if (w->retry_seq != 0 && w->retry_seq <= w->seqs[done - 1]) {
			if (w->attempts > 0)
				log_info("export %s: seq %" PRId64 " delivered "
				    "after %" PRId64 " failed attempts",
				    w->name, w->retry_seq, w->attempts);
			w->retry_seq = 0;
			w->attempts = 0;
			w->since = 0;
		}
	}
	if (rc == RS_EXPORT_OK) {
		*next = now;
		return EXPORT_STEP_PROGRESS;
	}
	return export_failed(w, now, done, rc, advance ? w->seqs[done] : -1,
	    next);
}

/*
 * A dead letter queued by retry-dead or reconcile, at seq (at or below
 * the position): delivered alone, so it may come after later records.
 * The exporter decides whether it can take it: a ledger or beancount
 * file appends it, a jsonl or csv file (in seq order) refuses it with
 * RS_EXPORT_PERMANENT, and it is a dead letter again.
 */
static enum export_step
export_requeued(struct export_worker *w, int64_t now, int64_t seq,
    int64_t *next)
{
	enum rs_status st;

	st = store_change_get(w->st, seq, &w->chg[0]);
	if (st != RS_OK)
		return export_store_failed(w, now, "read a dead letter's "
		    "change", st == RS_ERR_NOTFOUND ? RS_ERR_IO : st, next);
	w->nchg = 1;
	export_batch_fill(w);
	/*
	 * The target decides: a file exporter skips a record its file
	 * holds and appends one it lacks (or refuses it, if the file is in
	 * seq order); any other target gets it again with its original
	 * idempotency key.  Asking recover() is not enough: the file's
	 * last seq may be a header or mark line of a record removed by
	 * hand.
	 */
	return export_deliver(w, now, false, next);
}

/*
 * Backing off until w->due_ms: keep the gauges fresh every poll_ms, and
 * stop waiting at once if an operator moved the exporter (replay,
 * retry-dead).  true: go on with the step now.
 */
static bool
export_waiting(struct export_worker *w, int64_t now, int64_t *next)
{
	struct store_export e;
	bool moved = false;

	if (w->opened && store_export_get(w->st, w->name, &e) == RS_OK) {
		export_gauges(w, &e);
		moved = w->loaded && e.epoch != w->epoch;
		store_export_cleanup(&e);
	}
	if (moved) {
		w->due_ms = now;
		return true;
	}
	*next = w->due_ms < now + w->poll_ms ? w->due_ms : now + w->poll_ms;
	return false;
}

enum export_step
export_worker_step(struct export_worker *w, int64_t now, int64_t *next_ms)
{
	struct store_export e;
	enum export_step r;
	enum rs_status st;
	int64_t next = now + w->poll_ms;
	bool skipped = false, alien = false;

	memset(&e, 0, sizeof(e));
	export_batch_clear(w);
	if (now < w->due_ms && !export_waiting(w, now, &next)) {
		r = EXPORT_STEP_WAIT;
		goto out;
	}
	if (!w->opened && !export_open(w, now)) {
		next = w->due_ms;
		r = EXPORT_STEP_WAIT;
		goto out;
	}
	if ((st = export_load(w, &e, &skipped, &alien)) != RS_OK) {
		r = export_store_failed(w, now, "read state", st, &next);
		goto out;
	}
	if (alien) {
		export_gauges(w, &e);
		export_refuse(w, now);
		next = w->due_ms;
		r = EXPORT_STEP_WAIT;
		goto out;
	}
	export_gauges(w, &e);
	if (skipped) {
		next = now;
		r = EXPORT_STEP_PROGRESS;
		goto out;
	}
	if (e.next_queued > 0) {
		r = export_requeued(w, now, e.next_queued, &next);
		goto out;
	}
	st = store_changes_read(w->st, e.position, w->batch, w->chg, &w->nchg);
	if (st != RS_OK) {
		r = export_store_failed(w, now, "read the change log", st,
		    &next);
		goto out;
	}
	if (w->nchg == 0) {
		r = EXPORT_STEP_IDLE;
		goto out;
	}
	export_batch_fill(w);
	r = export_deliver(w, now, true, &next);
out:
	export_batch_clear(w);
	store_export_cleanup(&e);
	if (next_ms != NULL)
		*next_ms = next;
	return r;
}

void
export_worker_reopen(struct export_worker *w, int64_t now_ms)
{
	/* As after a replay: the next step asks recover() again, which
	 * opens a file exporter's path anew if it names another file. */
	w->loaded = false;
	if (w->due_ms > now_ms)
		w->due_ms = now_ms;
}

/* ---- the engine -------------------------------------------------------- */

struct export_thread {
	struct export_engine	*eng;
	struct export_worker	*w;
	pthread_t		 tid;
	bool			 started;
};

struct export_engine {
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;	/* on CLOCK_MONOTONIC */
	bool			 stop;
	atomic_bool		 halting; /* stop, read between deliveries */
	uint64_t		 kicks;	/* export_engine_notify() calls */
	uint64_t		 reopens; /* export_engine_reopen() calls */
	struct export_thread	*t;
	size_t			 n;
	/* From a config: the resolved types, closed after the workers. */
	struct registry_entry	**reg;
	size_t			 nreg;
};

static void *
export_thread_main(void *arg)
{
	struct export_thread *t = arg;
	struct export_engine *eng = t->eng;
	struct timespec ts;
	uint64_t seen, reopened = 0;
	int64_t next = 0;
	enum export_step r;
	bool reopen;

	for (;;) {
		pthread_mutex_lock(&eng->mu);
		if (eng->stop) {
			pthread_mutex_unlock(&eng->mu);
			break;
		}
		seen = eng->kicks;
		reopen = eng->reopens != reopened;
		reopened = eng->reopens;
		pthread_mutex_unlock(&eng->mu);

		if (reopen)
			export_worker_reopen(t->w, clock_mono_ms());
		r = export_worker_step(t->w, clock_mono_ms(), &next);
		if (r == EXPORT_STEP_PROGRESS)
			continue;

		pthread_mutex_lock(&eng->mu);
		while (!eng->stop && clock_mono_ms() < next &&
		    eng->reopens == reopened &&
		    (eng->kicks == seen || r != EXPORT_STEP_IDLE)) {
			ts.tv_sec = (time_t)(next / 1000);
			ts.tv_nsec = (long)(next % 1000) * 1000000L;
			(void)pthread_cond_timedwait(&eng->cv, &eng->mu, &ts);
		}
		pthread_mutex_unlock(&eng->mu);
	}
	return NULL;
}

void
export_engine_halt(struct export_engine *e)
{
	size_t i;

	if (e == NULL)
		return;
	atomic_store(&e->halting, true);
	pthread_mutex_lock(&e->mu);
	e->stop = true;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	for (i = 0; i < e->n; i++)
		if (e->t[i].started)
			pthread_join(e->t[i].tid, NULL);
	/* The instances first, then the plugins they came from. */
	for (i = 0; i < e->n; i++)
		export_worker_free(e->t[i].w);
	for (i = 0; i < e->nreg; i++)
		registry_close(e->reg[i]);
	free(e->reg);
	free(e->t);
	e->reg = NULL;
	e->t = NULL;
	e->n = e->nreg = 0;
}

/* Halt, then free. */
static void
export_engine_free(struct export_engine *e)
{
	export_engine_halt(e);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

static struct export_engine *
export_engine_alloc(void)
{
	struct export_engine *e;
	pthread_condattr_t ca;

	e = xcalloc(1, sizeof(*e));
	atomic_init(&e->halting, false);
	pthread_mutex_init(&e->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->cv, &ca);
	pthread_condattr_destroy(&ca);
	return e;
}

/* Make the workers of specs in e and start their threads. */
static enum rs_status
export_engine_run(struct export_engine *e, const char *store_path,
    int busy_timeout_ms, const struct export_spec *specs, size_t n,
    char **why)
{
	enum rs_status st;
	size_t i;

	e->t = xcalloc(n + 1, sizeof(*e->t));
	for (i = 0; i < n; i++) {
		st = export_worker_new(store_path, busy_timeout_ms, &specs[i],
		    &e->t[i].w, why);
		if (st != RS_OK)
			return st;
		e->t[i].w->halt = &e->halting;
		e->t[i].eng = e;
		e->n = i + 1;
	}
	for (i = 0; i < n; i++) {
		if (pthread_create(&e->t[i].tid, NULL, export_thread_main,
		    &e->t[i]) != 0) {
			*why = xasprintf("exporter %s: cannot start a thread",
			    specs[i].name);
			return RS_ERR_IO;
		}
		e->t[i].started = true;
	}
	return RS_OK;
}

enum rs_status
export_engine_new(const char *store_path, int busy_timeout_ms,
    const struct export_spec *specs, size_t n, struct export_engine **out,
    char **why)
{
	struct export_engine *e;
	enum rs_status st;

	*why = NULL;
	e = export_engine_alloc();
	st = export_engine_run(e, store_path, busy_timeout_ms, specs, n, why);
	if (st != RS_OK) {
		export_engine_free(e);
		return st;
	}
	*out = e;
	return RS_OK;
}

/* The value of key in the section, or NULL. */
static const char *
export_kv(const struct config_exporter *ce, const char *key)
{
	size_t i;

	for (i = 0; i < ce->nkv; i++)
		if (strcmp(ce->kv[i].key, key) == 0)
			return ce->kv[i].value;
	return NULL;
}

/*
 * Resolve the type of section ce of cfg; RS_OK and *out, or
 * RS_ERR_CONFIG and *why as a config error: "file:line: [exporter NAME]
 * path: reason", at the line of the plugin's path (a plugin is the only
 * type that can fail here: config_load() knows the others).
 */
static enum rs_status
export_resolve(const struct config *cfg, const struct config_exporter *ce,
    struct registry_entry **out, char **why)
{
	char *r = NULL;
	enum rs_status st;
	size_t i;
	int line = ce->line;

	st = registry_open(ce->type, export_kv(ce, "path"), out, &r);
	if (st != RS_OK) {
		for (i = 0; i < ce->nkv; i++)
			if (strcmp(ce->kv[i].key, "path") == 0)
				line = ce->kv[i].line;
		*why = xasprintf("%s:%d: [exporter %s] path: %s", cfg->path,
		    line, ce->name, r != NULL ? r : "cannot resolve its type");
		free(r);
	}
	return st;
}

enum rs_status
export_engine_start(const struct config *cfg, struct export_engine **out,
    char **why)
{
	struct export_engine *e;
	struct export_spec *specs;
	struct rs_export_kv **kvs;
	const struct config_exporter *ce;
	enum rs_status st = RS_OK;
	size_t i, j, n = cfg->nexporters;

	*why = NULL;
	e = export_engine_alloc();
	/* Arrays of pointers: sizeof(*x) is a pointer's size, as meant. */
	/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
	e->reg = xcalloc(n + 1, sizeof(*e->reg));
	specs = xcalloc(n + 1, sizeof(*specs));
	/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
	kvs = xcalloc(n + 1, sizeof(*kvs));
	for (i = 0; i < n && st == RS_OK; i++) {
		ce = &cfg->exporters[i];
		if ((st = export_resolve(cfg, ce, &e->reg[i], why)) !=
		    RS_OK)
			break;
		e->nreg = i + 1;
		/* open() gets "type" and the type's own keys. */
		kvs[i] = xcalloc(ce->nkv + 1, sizeof(**kvs));
		kvs[i][0].key = "type";
		kvs[i][0].value = ce->type;
		for (j = 0; j < ce->nkv; j++) {
			kvs[i][j + 1].key = ce->kv[j].key;
			kvs[i][j + 1].value = ce->kv[j].value;
		}
		export_spec_init(&specs[i], ce->name, e->reg[i]->ops);
		specs[i].kv = kvs[i];
		specs[i].nkv = ce->nkv + 1;
		specs[i].batch = ce->batch > 0 ? (size_t)ce->batch :
		    registry_default_batch(ce->type);
		specs[i].one_at_a_time = registry_one_at_a_time(ce->type);
		specs[i].retry_initial_ms = ce->retry_initial_ms;
		specs[i].retry_max_ms = ce->retry_max_ms;
		specs[i].retry_horizon_s = ce->retry_horizon;
		specs[i].poll_ms = ce->poll_ms;
	}
	if (st == RS_OK)
		st = export_engine_run(e, cfg->store_path,
		    (int)cfg->busy_timeout_ms, specs, n, why);
	for (i = 0; i < n; i++)
		free(kvs[i]);
	free(kvs);
	free(specs);
	if (st != RS_OK) {
		export_engine_free(e);
		return st;
	}
	for (i = 0; i < n; i++)
		log_info("export %s: %s exporter started (batch %zu, retry "
		    "%lld..%lld ms, horizon %lld s)", cfg->exporters[i].name,
		    cfg->exporters[i].type, e->t[i].w->batch,
		    (long long)cfg->exporters[i].retry_initial_ms,
		    (long long)cfg->exporters[i].retry_max_ms,
		    (long long)cfg->exporters[i].retry_horizon);
	*out = e;
	return RS_OK;
}

void
export_engine_notify(struct export_engine *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&e->mu);
	e->kicks++;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

void
export_engine_reopen(struct export_engine *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&e->mu);
	e->reopens++;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

void
export_engine_stop(struct export_engine *e)
{
	if (e == NULL)
		return;
	export_engine_free(e);
}

enum rs_status
export_check_config(const struct config *cfg, char **why)
{
	struct registry_entry *r = NULL;
	enum rs_status st = RS_OK;
	struct buf b;
	char *one = NULL;
	size_t i;

	*why = NULL;
	buf_init(&b, 1024 * 1024);
	for (i = 0; i < cfg->nexporters; i++) {
		if (export_resolve(cfg, &cfg->exporters[i], &r, &one) !=
		    RS_OK) {
			(void)buf_printf(&b, "%s%s", b.len > 0 ? "\n" : "",
			    one);
			free(one);
			one = NULL;
			st = RS_ERR_CONFIG;
			continue;
		}
		registry_close(r);
		r = NULL;
	}
	if (st != RS_OK)
		*why = buf_detach(&b, NULL);
	buf_cleanup(&b);
	return st;
}

/* ---- the `refundsync export` commands ---------------------------------- */

static void
export_json_print(cJSON *o, FILE *out)
{
	char *s = cJSON_PrintUnformatted(o);

	fprintf(out, "%s\n", s != NULL ? s : "{}");
	free(s);
	cJSON_Delete(o);
}

static void
export_json_str(cJSON *o, const char *key, const char *v)
{
	if (v != NULL)
		cJSON_AddStringToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

/* Unix seconds as ISO-8601 UTC into out[32]; "" for 0. */
static void
export_iso(int64_t t, char out[32])
{
	struct tm tm;
	time_t tt = (time_t)t;

	out[0] = '\0';
	if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
		return;
	(void)strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * Is the row's last error why it does not move now: a retry under way,
 * or changes waiting and nothing delivered since the error (an exporter
 * that cannot open, or a target it refuses)?  An older error is history.
 */
static bool
export_error_current(const struct store_export *e, int64_t lag)
{
	if (e->last_error == NULL || e->last_error_at == NULL)
		return false;
	if (e->retry_seq != 0)
		return true;
	/* Both are the store's ISO-8601 UTC times: text order is time
	 * order. */
	return lag > 0 && (e->last_delivery_at == NULL ||
	    strcmp(e->last_error_at, e->last_delivery_at) > 0);
}

/* What status shows for one exporter; collected, then printed. */
struct export_row {
	char			*name;
	const char		*type;	/* NULL: not in the config */
	bool			 found;	/* has state in the store */
	struct store_export	 e;
};

struct export_rows {
	struct export_row	*v;
	size_t			 n;
};

static struct export_row *
export_rows_add(struct export_rows *rows, const char *name)
{
	struct export_row *r;

	rows->v = xreallocarray(rows->v, rows->n + 1, sizeof(*rows->v));
	r = &rows->v[rows->n++];
	memset(r, 0, sizeof(*r));
	r->name = xstrdup(name);
	return r;
}

static enum rs_status
export_rows_collect(void *arg, const struct store_export *e)
{
	struct export_rows *rows = arg;
	struct export_row *r;

	r = export_rows_add(rows, e->exporter);
	r->found = true;
	r->e = *e;
	r->e.exporter = xstrdup(e->exporter);
	r->e.last_error = e->last_error != NULL ? xstrdup(e->last_error) :
	    NULL;
	r->e.last_error_at = e->last_error_at != NULL ?
	    xstrdup(e->last_error_at) : NULL;
	r->e.last_delivery_at = e->last_delivery_at != NULL ?
	    xstrdup(e->last_delivery_at) : NULL;
	return RS_OK;
}

enum rs_status
export_cmd_status(const struct config *cfg, struct store *st, bool json,
    FILE *out, FILE *err)
{
	struct export_rows rows;
	struct export_row *r;
	const struct config_exporter *ce;
	enum rs_status s;
	cJSON *doc, *arr, *o, *retry;
	int64_t last = 0, lag;
	char since[32], state[160];
	size_t i, j;

	memset(&rows, 0, sizeof(rows));
	if ((s = store_changes_last(st, &last)) != RS_OK ||
	    (s = store_export_foreach(st, export_rows_collect, &rows)) !=
	    RS_OK) {
		fprintf(err, "refundsync: export status: store: %s\n",
		    rs_strstatus(s));
		goto out;
	}
	/* Configured exporters first, in config order; then any the store
	 * knows that the config no longer names. */
	for (i = 0; i < cfg->nexporters; i++) {
		ce = &cfg->exporters[i];
		for (j = 0; j < rows.n; j++)
			if (strcmp(rows.v[j].name, ce->name) == 0)
				break;
		if (j == rows.n)
			(void)export_rows_add(&rows, ce->name);
		rows.v[j].type = ce->type;
	}
	if (json) {
		doc = cJSON_CreateObject();
		cJSON_AddNumberToObject(doc, "last_change", (double)last);
		arr = cJSON_AddArrayToObject(doc, "exporters");
	} else {
		doc = arr = NULL;
		fprintf(out, "%-16s %-10s %10s %10s %10s %10s %8s %6s  %s\n",
		    "EXPORTER", "TYPE", "POSITION", "LAG", "DELIVERED",
		    "FAILURES", "DEAD", "QUEUED", "STATE");
	}
	for (i = 0; i < cfg->nexporters + rows.n; i++) {
		/* Two passes over rows: configured, then the others. */
		if (i < cfg->nexporters) {
			for (j = 0; j < rows.n; j++)
				if (strcmp(rows.v[j].name,
				    cfg->exporters[i].name) == 0)
					break;
		} else {
			j = i - cfg->nexporters;
			if (rows.v[j].type != NULL)
				continue;
		}
		r = &rows.v[j];
		lag = last > r->e.position ? last - r->e.position : 0;
		export_iso(r->e.retry_since, since);
		if (r->type == NULL)
			snprintf(state, sizeof(state), "not configured");
		else if (!r->found)
			snprintf(state, sizeof(state), "never ran");
		else if (r->e.retry_seq != 0)
			snprintf(state, sizeof(state), "retrying seq %" PRId64
			    " (%" PRId64 " attempts since %s)", r->e.retry_seq,
			    r->e.retry_attempts, since);
		else if (lag > 0)
			snprintf(state, sizeof(state), "behind");
		else
			snprintf(state, sizeof(state), "ok");
		if (!json) {
			fprintf(out, "%-16s %-10s %10" PRId64 " %10" PRId64
			    " %10" PRId64 " %10" PRId64 " %8" PRId64 " %6"
			    PRId64 "  %s\n", r->name,
			    r->type != NULL ? r->type : "-", r->e.position,
			    lag, r->e.delivered, r->e.failures, r->e.dead,
			    r->e.queued, state);
			if (export_error_current(&r->e, lag))
				fprintf(out, "%-16s   last error: %s\n", "",
				    r->e.last_error);
			continue;
		}
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "exporter", r->name);
		export_json_str(o, "type", r->type);
		cJSON_AddBoolToObject(o, "configured", r->type != NULL);
		cJSON_AddNumberToObject(o, "position", (double)r->e.position);
		cJSON_AddNumberToObject(o, "lag", (double)lag);
		cJSON_AddNumberToObject(o, "delivered",
		    (double)r->e.delivered);
		cJSON_AddNumberToObject(o, "failures", (double)r->e.failures);
		cJSON_AddNumberToObject(o, "dead_letters", (double)r->e.dead);
		cJSON_AddNumberToObject(o, "queued", (double)r->e.queued);
		if (r->e.retry_seq != 0) {
			retry = cJSON_AddObjectToObject(o, "retry");
			cJSON_AddNumberToObject(retry, "seq",
			    (double)r->e.retry_seq);
			cJSON_AddNumberToObject(retry, "attempts",
			    (double)r->e.retry_attempts);
			export_json_str(retry, "since", since[0] != '\0' ?
			    since : NULL);
		} else
			cJSON_AddNullToObject(o, "retry");
		export_json_str(o, "last_error", r->e.last_error);
		export_json_str(o, "last_error_at", r->e.last_error_at);
		export_json_str(o, "last_delivery_at", r->e.last_delivery_at);
		cJSON_AddStringToObject(o, "state", state);
		cJSON_AddItemToArray(arr, o);
	}
	if (json)
		export_json_print(doc, out);
	s = RS_OK;
out:
	for (i = 0; i < rows.n; i++) {
		free(rows.v[i].name);
		store_export_cleanup(&rows.v[i].e);
	}
	free(rows.v);
	return s;
}

/* The exporter name must be configured. */
static bool
export_cmd_known(const struct config *cfg, const char *cmd, const char *name,
    FILE *err)
{
	if (config_exporter_find(cfg, name) != NULL)
		return true;
	fprintf(err, "refundsync: export %s: no [exporter %s] in %s\n", cmd,
	    name, cfg->path);
	return false;
}

enum rs_status
export_cmd_replay(const struct config *cfg, struct store *st,
    const char *name, int64_t from, bool json, FILE *out, FILE *err)
{
	const struct config_exporter *ce;
	const char *what;
	enum rs_status s;
	int64_t old = 0;
	cJSON *o;

	if (name == NULL || !export_cmd_known(cfg, "replay", name, err))
		return RS_ERR_CONFIG;
	/* What the target makes of it (docs/exporters.md, replay). */
	ce = config_exporter_find(cfg, name);
	if (strcmp(ce->type, "http") == 0 || strcmp(ce->type, "exec") == 0)
		what = "every record from there on is sent again, with its "
		    "original idempotency key";
	else if (strcmp(ce->type, REGISTRY_PLUGIN) == 0)
		what = "what the target already holds is skipped if the "
		    "plugin can tell (recover), else every record is sent "
		    "again with its original idempotency key";
	else
		what = "records up to the last one in its file are "
		    "skipped, even one removed from it";
	if ((s = store_export_replay(st, name, from, &old)) == RS_ERR_RANGE) {
		/* A usage error: the operator asked to skip records. */
		fprintf(err, "refundsync: export replay %s: --from %" PRId64
		    " is ahead of it: it has delivered up to seq %" PRId64
		    ", and a replay only moves an exporter back (--from %"
		    PRId64 " at most), since records %" PRId64 " to %" PRId64
		    " would never be delivered\n", name, from, old, old + 1,
		    old + 1, from - 1);
		return RS_ERR_CONFIG;
	}
	if (s != RS_OK) {
		fprintf(err, "refundsync: export replay %s: store: %s\n", name,
		    rs_strstatus(s));
		return s;
	}
	if (json) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "exporter", name);
		cJSON_AddNumberToObject(o, "from", (double)from);
		cJSON_AddNumberToObject(o, "previous_position", (double)old);
		export_json_print(o, out);
	} else
		fprintf(out, "%s: replaying from seq %" PRId64 " (it was done "
		    "up to %" PRId64 "); %s\n", name, from, old, what);
	return RS_OK;
}

struct export_dead_print {
	bool	 json;
	FILE	*out;
	int64_t	 n;
};

static enum rs_status
export_dead_one(void *arg, const struct store_dead_row *d)
{
	struct export_dead_print *p = arg;
	cJSON *o;
	char rev[24] = "-";

	p->n++;
	if (!p->json) {
		/* The key names the refund and its version; it, the reason
		 * and the answer hold text from outside, shown safe. */
		char key[512];

		fprintf(p->out, "%-16s %10" PRId64 " %-36s %5" PRId64
		    " %-7s %-24s  ", d->exporter, d->seq,
		    term_safe(d->idempotency_key, key, sizeof(key)),
		    d->attempts, d->queued ? "queued" : "dead", d->dead_at);
		term_fputs(d->reason, p->out);
		if (d->last_response != NULL) {
			fputs(": ", p->out);
			term_fputs(d->last_response, p->out);
		}
		fputc('\n', p->out);
		return RS_OK;
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "exporter", d->exporter);
	cJSON_AddNumberToObject(o, "seq", (double)d->seq);
	cJSON_AddStringToObject(o, "refund_id", d->refund_id);
	if (d->has_revision) {
		snprintf(rev, sizeof(rev), "%" PRId64, d->revision);
		cJSON_AddStringToObject(o, "revision", rev);
	} else
		cJSON_AddNullToObject(o, "revision");
	cJSON_AddStringToObject(o, "idempotency_key", d->idempotency_key);
	cJSON_AddStringToObject(o, "reason", d->reason);
	export_json_str(o, "last_response", d->last_response);
	cJSON_AddNumberToObject(o, "attempts", (double)d->attempts);
	export_json_str(o, "first_failure_at", d->first_failure_at);
	cJSON_AddStringToObject(o, "dead_at", d->dead_at);
	cJSON_AddBoolToObject(o, "queued", d->queued);
	export_json_print(o, p->out);
	return RS_OK;
}

enum rs_status
export_cmd_dead(const struct config *cfg, struct store *st, const char *name,
    bool json, FILE *out, FILE *err)
{
	struct export_dead_print p = { json, out, 0 };
	enum rs_status s;

	if (name != NULL && !export_cmd_known(cfg, "dead", name, err))
		return RS_ERR_CONFIG;
	if (!json)
		fprintf(out, "%-16s %10s %-36s %5s %-7s %-24s  %s\n",
		    "EXPORTER", "SEQ", "IDEMPOTENCY KEY", "TRIES", "STATE",
		    "DEAD SINCE", "REASON: LAST ANSWER");
	if ((s = store_dead_foreach(st, name, export_dead_one, &p)) !=
	    RS_OK) {
		fprintf(err, "refundsync: export dead: store: %s\n",
		    rs_strstatus(s));
		return s;
	}
	return RS_OK;
}

enum rs_status
export_cmd_retry_dead(const struct config *cfg, struct store *st,
    const char *name, bool json, FILE *out, FILE *err)
{
	enum rs_status s;
	int64_t n = 0;
	cJSON *o;

	if (name != NULL && !export_cmd_known(cfg, "retry-dead", name, err))
		return RS_ERR_CONFIG;
	/*
	 * Without --exporter: those of the configured exporters only.  The
	 * dead letters of a section since removed from the config would be
	 * queued for a worker that never comes, and reported as queued.
	 */
	for (size_t i = 0; name != NULL ? i < 1 : i < cfg->nexporters; i++) {
		int64_t k = 0;

		s = store_export_retry_dead(st, name != NULL ? name :
		    cfg->exporters[i].name, &k);
		if (s != RS_OK) {
			fprintf(err, "refundsync: export retry-dead: store: "
			    "%s\n", rs_strstatus(s));
			return s;
		}
		n += k;
	}
	if (json) {
		o = cJSON_CreateObject();
		export_json_str(o, "exporter", name);
		cJSON_AddNumberToObject(o, "queued", (double)n);
		export_json_print(o, out);
	} else
		fprintf(out, "%" PRId64 " dead letter%s queued for another "
		    "delivery%s%s\n", n, n == 1 ? "" : "s",
		    name != NULL ? " by " : "", name != NULL ? name : "");
	return RS_OK;
}
