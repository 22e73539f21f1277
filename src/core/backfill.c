/*
 * backfill.c: page through Query Refunds and commit each page with its
 * cursor, for one instance (backfill_run) or for the daemon (struct
 * backfiller).
 *
 * Key decision: the unit of progress is the page.  A page's refunds and
 * the cursor that follows it go into the store in one transaction, so
 * the stored cursor always names the first page not yet stored: a kill
 * at any moment loses at most the page in flight, which the next run
 * asks for again.  Nothing of a page is stored before the page has
 * parsed and passed the loop checks (a repeated cursor, an empty page or
 * a missing cursor with hasNext, a page that starts before the previous
 * one ended), so a misbehaving API fails the run with a clear error
 * instead of looping or storing half a page.
 *
 * Pipelining: fetching a page (the network, JSON parsing) and committing
 * one (the upserts, then a synchronous commit that waits for the disk)
 * both take real time, so backfill_run() does them at once, and commits
 * the pages that are ready together, so several share one wait for the
 * disk.  A fetcher thread
 * fetches the pages in order, runs the loop checks on each (it owns the
 * cursor, the set of cursors seen and the end of the previous page) and
 * hands it to the calling thread, the committer, through a bounded
 * queue.  The committer takes every page ready (at most batch_pages) and
 * commits them in ONE transaction: each page's refunds in order, then
 * the cursor after the last of them (store_backfill_pages()), so the
 * stored cursor still always names the first page not stored.  The
 * queue also carries, in order with the pages, what the fetcher has to
 * say: a retry note for the progress callback, a rejected cursor (the
 * committer resets the stored cursor only after committing the pages
 * fetched before it), and the end of the fetching with its status.  A
 * failure of the fetcher thus reaches the committer after the pages
 * fetched before it, which are committed first.  When a commit fails (or
 * the store stays busy until stop), the committer aborts the queue: the
 * fetcher ends at once, and the pages queued are dropped, never
 * counted.  On stop, the fetcher asks for no new page and ends; the
 * committer commits what is queued, so no fetched page is wasted.
 * backfill_walk() (reconcile) keeps the one-thread loop: fetch, hand
 * over, next.
 *
 * Retries: wixapi retries 429, 5xx and transport errors itself.  Here a
 * page that came back malformed (truncated, invalid JSON, oversized), a
 * call whose retries ran out, or a store that cannot commit is tried
 * again a few times with capped exponential backoff; a 4xx application
 * error fails the run at once; a rejected cursor starts the run over
 * from the first page (the upsert is idempotent).
 *
 * Threads: backfill_run() commits in its caller's thread with the
 * caller's store connection, and fetches in a fetcher thread of its own
 * that it joins before returning.  Ownership in a run: the fetcher alone
 * touches the fetch state (cursor, prev_last, seen, fpage); the
 * committer alone the store, the counters and the progress callback;
 * the rest of struct bf_run is read-only while both run.  A queued item
 * belongs to the queue (under its mutex); the thread that takes it out
 * owns it.  The backfiller's workers are detached threads, one per
 * instance being backfilled (at most BF_MAX_WORKERS), each with its own
 * store connection; its queue and counters are under one mutex.
 */
#include <sys/stat.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "core/backfill.h"
#include "util/clock.h"
#include "util/isotime.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/xmalloc.h"

#define BF_DEF_PAGE_SIZE	100
#define BF_DEF_ATTEMPTS		5
#define BF_DEF_BASE_MS		1000
#define BF_DEF_MAX_MS		30000
#define BF_DEF_RESTARTS		3
#define BF_SLICE_MS		50	/* ms between looks at stop */
#define BF_MAX_WORKERS		8	/* instances run at once */
#define BF_CURSOR_SHOWN		24	/* cursor bytes in a message */
#define BF_DEF_QUEUE		8	/* pages fetched ahead of the commit */
#define BF_DEF_BATCH		8	/* pages in one commit */
#define BF_MAX_QUEUE		64
#define BF_MAX_BATCH		64
#define BF_RATE_MIN_MS		1000	/* a progress rate needs this much */

/* ---- metrics ----------------------------------------------------------- */

static void
bf_define_metrics(void)
{
	metrics_define("refundsync_backfill_pages_total", METRIC_COUNTER,
	    "Query Refunds pages committed by backfills, by instance.");
	metrics_define("refundsync_backfill_refunds_total", METRIC_COUNTER,
	    "Refunds seen by backfills, by instance.");
	metrics_define("refundsync_backfill_running", METRIC_GAUGE,
	    "1 while a backfill of the instance runs in this process.");
	metrics_define("refundsync_backfill_failures_total", METRIC_COUNTER,
	    "Backfill runs that failed, by instance.");
}

/* instance="id" with the id escaped for the text format.  Caller frees. */
static char *
bf_label(const char *id)
{
	return metrics_label("instance", id);
}

/* ---- the cursors seen in a run ----------------------------------------- */

/* An open-addressing set of strings: a cursor Wix gives twice is a loop. */
struct cursor_set {
	char	**slot;
	size_t	 cap;		/* a power of two, or 0 */
	size_t	 n;
};

static uint64_t
cs_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static void
cs_clear(struct cursor_set *cs)
{
	size_t i;

	for (i = 0; i < cs->cap; i++)
		free(cs->slot[i]);
	free(cs->slot);
	memset(cs, 0, sizeof(*cs));
}

static bool
cs_has(const struct cursor_set *cs, const char *s)
{
	size_t i;

	if (cs->cap == 0)
		return false;
	for (i = cs_hash(s) & (cs->cap - 1); cs->slot[i] != NULL;
	    i = (i + 1) & (cs->cap - 1))
		if (strcmp(cs->slot[i], s) == 0)
			return true;
	return false;
}

static void
cs_insert(struct cursor_set *cs, char *s)
{
	size_t i;

	for (i = cs_hash(s) & (cs->cap - 1); cs->slot[i] != NULL;
	    i = (i + 1) & (cs->cap - 1))
		continue;
	cs->slot[i] = s;
	cs->n++;
}

/* Add a copy of s (which must not be in the set yet). */
static void
cs_add(struct cursor_set *cs, const char *s)
{
	struct cursor_set big;
	size_t i;

	if (2 * (cs->n + 1) > cs->cap) {
		memset(&big, 0, sizeof(big));
		big.cap = cs->cap == 0 ? 64 : 2 * cs->cap;
		big.slot = xcalloc(big.cap, sizeof(*big.slot));
		for (i = 0; i < cs->cap; i++)
			if (cs->slot[i] != NULL)
				cs_insert(&big, cs->slot[i]);
		free(cs->slot);
		*cs = big;
	}
	cs_insert(cs, xstrdup(s));
}

/* ---- one run ----------------------------------------------------------- */

struct bf_pipe;

struct bf_run {
	struct store		*st;
	struct wixapi		*w;
	const char		*id;
	const struct backfill_options *opt;
	int			 page_size;
	int			 attempts;
	int			 max_restarts;
	int64_t			 base_ms;
	int64_t			 max_ms;
	int			 queue_pages;	/* < 0: no fetcher thread */
	int			 batch_pages;
	int64_t			 t0;		/* monotonic start */
	char			*label;		/* metrics label */
	/* The fetch state (the fetcher's while one runs): */
	char			*cursor;	/* next page's, or NULL */
	char			*prev_last;	/* createdDate ending the
						   previous page, or NULL */
	struct cursor_set	 seen;
	int64_t			 fpage;		/* pages fetched, as pages
						   counts them */
	/* The committer's (the calling thread's): */
	int64_t			 pages;		/* in all */
	int64_t			 refunds;
	int64_t			 run_pages;
	int64_t			 applied;
	/* A walk (backfill_walk()) hands pages to these instead of
	 * storing them; st is NULL then. */
	backfill_page_fn	 page_fn;
	backfill_restart_fn	 restart_fn;
	void			*walk_arg;
	/* The queue to the committer while a fetcher thread runs, else
	 * NULL.  Set before the thread starts, cleared after the join. */
	struct bf_pipe		*pipe;
};

/* ---- the queue from the fetcher to the committer ------------------------ */

enum bf_kind {
	BF_PAGE,		/* a page that passed the loop checks */
	BF_NOTE,		/* a note for the progress callback */
	BF_RESET,		/* Wix rejected the cursor: from page one */
	BF_END			/* the fetcher is done: rc, text */
};

/* One thing the fetcher hands over.  Owned by the queue while queued,
 * then by the thread that took it out. */
struct bf_qitem {
	struct bf_qitem		*next;
	enum bf_kind		 kind;
	struct wixapi_page	 page;		/* BF_PAGE */
	char			*text;		/* BF_NOTE, BF_RESET: the note;
						   BF_END: why, or NULL */
	enum rs_status		 rc;		/* BF_END */
};

struct bf_pipe {
	pthread_mutex_t		 mu;		/* all below */
	pthread_cond_t		 ready;		/* an item was queued */
	pthread_cond_t		 space;		/* pages taken, or abort */
	struct bf_qitem		*head, *tail;
	size_t			 npages;	/* BF_PAGE items queued */
	size_t			 cap;		/* the most pages queued */
	/* The committer gave up: the fetcher stops.  Also read without
	 * the mutex, by bf_stopped(). */
	atomic_bool		 abort;
};

static struct bf_qitem *
bf_qitem_new(enum bf_kind kind)
{
	struct bf_qitem *it = xcalloc(1, sizeof(*it));

	it->kind = kind;
	return it;
}

static void
bf_qitem_free(struct bf_qitem *it)
{
	if (it == NULL)
		return;
	wixapi_page_cleanup(&it->page);
	free(it->text);
	free(it);
}

/*
 * Queue it (the fetcher's): from here the queue owns it.  A page waits
 * while cap pages are queued.  false if the committer gave up: it has
 * been freed, and the fetcher must end.
 */
static bool
bf_put(struct bf_pipe *q, struct bf_qitem *it)
{
	pthread_mutex_lock(&q->mu);
	while (it->kind == BF_PAGE && q->npages >= q->cap &&
	    !atomic_load(&q->abort))
		pthread_cond_wait(&q->space, &q->mu);
	if (atomic_load(&q->abort)) {
		pthread_mutex_unlock(&q->mu);
		bf_qitem_free(it);
		return false;
	}
	it->next = NULL;
	if (q->tail != NULL)
		q->tail->next = it;
	else
		q->head = it;
	q->tail = it;
	if (it->kind == BF_PAGE)
		q->npages++;
	pthread_cond_signal(&q->ready);
	pthread_mutex_unlock(&q->mu);
	return true;
}

/*
 * Take the next thing out of the queue (the committer's), waiting for
 * one: either up to max pages in a row, into batch (*n of them; the
 * caller owns them), or else one other item, returned (the caller owns
 * it; *n is 0).
 */
static struct bf_qitem *
bf_take(struct bf_pipe *q, struct bf_qitem **batch, size_t max, size_t *n)
{
	struct bf_qitem *it = NULL;

	*n = 0;
	pthread_mutex_lock(&q->mu);
	while (q->head == NULL)
		pthread_cond_wait(&q->ready, &q->mu);
	while (q->head != NULL && q->head->kind == BF_PAGE && *n < max) {
		batch[(*n)++] = q->head;
		q->head = q->head->next;
	}
	if (*n == 0) {
		it = q->head;
		q->head = it->next;
	}
	if (q->head == NULL)
		q->tail = NULL;
	if (*n > 0) {
		q->npages -= *n;
		pthread_cond_signal(&q->space);
	}
	pthread_mutex_unlock(&q->mu);
	return it;
}

/* The committer gives up: wake the fetcher, which ends. */
static void
bf_abort(struct bf_pipe *q)
{
	pthread_mutex_lock(&q->mu);
	atomic_store(&q->abort, true);
	pthread_cond_broadcast(&q->space);
	pthread_mutex_unlock(&q->mu);
}

/* ---- the steps of a run ------------------------------------------------ */

/* Stop asked for (the run's flag, or wixapi_stop() on its client: no
 * call of it can succeed any more), or (in the fetcher) the committer
 * gave up. */
static bool
bf_stopped(const struct bf_run *r)
{
	return (r->opt->stop != NULL && atomic_load(r->opt->stop)) ||
	    (r->opt->cancel != NULL && atomic_load(r->opt->cancel)) ||
	    wixapi_stopped(r->w) ||
	    (r->pipe != NULL && atomic_load(&r->pipe->abort));
}

static void
bf_progress(struct bf_run *r, bool finished, const char *note)
{
	struct backfill_progress p;

	if (r->opt->progress == NULL)
		return;
	memset(&p, 0, sizeof(p));
	p.instance_id = r->id;
	p.pages = r->pages;
	p.refunds = r->refunds;
	p.run_pages = r->run_pages;
	p.applied = r->applied;
	p.requests = wixapi_requests_sent(r->w, r->id);
	p.elapsed_ms = clock_mono_ms() - r->t0;
	p.finished = finished;
	p.note = note;
	r->opt->progress(r->opt->progress_arg, &p);
}

/* A note for the progress callback, from the fetching side: straight to
 * it in one thread, through the queue (in order with the pages) when a
 * fetcher thread runs. */
static void
bf_note(struct bf_run *r, const char *note)
{
	struct bf_qitem *it;

	if (r->pipe == NULL) {
		bf_progress(r, false, note);
		return;
	}
	if (r->opt->progress == NULL)
		return;
	it = bf_qitem_new(BF_NOTE);
	it->text = xstrdup(note);
	(void)bf_put(r->pipe, it);
}

/* Sleep ms in slices, watching the stop flag.  false if it was set. */
static bool
bf_sleep(const struct bf_run *r, int64_t ms)
{
	int64_t end = clock_mono_ms() + ms, left;
	struct timespec ts;

	while (!bf_stopped(r)) {
		if ((left = end - clock_mono_ms()) <= 0)
			return true;
		if (left > BF_SLICE_MS)
			left = BF_SLICE_MS;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left * 1000000L;
		nanosleep(&ts, NULL);
	}
	return false;
}

/* The wait before attempt number n + 1 (n >= 1 attempts made). */
static int64_t
bf_backoff(const struct bf_run *r, int n)
{
	int64_t ms = r->base_ms;

	while (--n > 0 && ms < r->max_ms)
		ms *= 2;
	return ms < r->max_ms ? ms : r->max_ms;
}

/* A cursor for a message: its first bytes.  Caller frees. */
static char *
bf_cursor_shown(const char *c)
{
	if (strlen(c) <= BF_CURSOR_SHOWN)
		return xasprintf("\"%s\"", c);
	return xasprintf("\"%.*s...\"", BF_CURSOR_SHOWN, c);
}

/* What a failed Query Refunds call says, in one line.  Caller frees. */
static char *
bf_call_error(enum rs_status rc, const struct wixapi_error *e)
{
	char *s, *t;

	if (e->http_status != 0)
		s = xasprintf("HTTP %ld", e->http_status);
	else
		s = xstrdup(rs_strstatus(rc));
	if (e->code != NULL) {
		t = xasprintf("%s: %s", s, e->code);
		free(s);
		s = t;
	}
	if (e->description != NULL) {
		t = xasprintf("%s: %s", s, e->description);
		free(s);
		s = t;
	}
	if (e->message != NULL) {
		t = xasprintf("%s: %s", s, e->message);
		free(s);
		s = t;
	}
	if (e->violations != NULL) {
		t = xasprintf("%s (%s)", s, e->violations);
		free(s);
		s = t;
	}
	if (e->request_id != NULL) {
		t = xasprintf("%s [request id %s]", s, e->request_id);
		free(s);
		s = t;
	}
	return s;
}

/*
 * Is rc from Query Refunds worth another try?  A malformed page (a 2xx
 * that did not parse), an oversized one, retries that ran out inside
 * wixapi, a transport failure, a token endpoint's 2xx with no usable
 * token in it (cut short or garbled on the way, as a page can be).  A
 * 4xx is not, nor a token endpoint's refusal.
 */
static bool
bf_transient(enum rs_status rc, const struct wixapi_error *e)
{
	switch (rc) {
	case RS_ERR_AUTH:
	case RS_ERR_INPUT:
		/* RS_ERR_INPUT with no HTTP status: nothing was sent,
		 * wixapi refused the call itself (an instance id it
		 * cannot send), and will again. */
		return e->http_status >= 200 && e->http_status <= 299;
	case RS_ERR_TOOBIG:
	case RS_ERR_BUSY:
	case RS_ERR_IO:
		return true;
	default:
		return false;
	}
}

/* What went wrong, ahead of a transient failure's HTTP status. */
static const char *
bf_kind(enum rs_status rc, const struct wixapi_error *e)
{
	switch (rc) {
	case RS_ERR_INPUT:
		return "malformed page, ";
	case RS_ERR_TOOBIG:
		return e->token ? "oversized OAuth token answer, " :
		    "oversized page, ";
	case RS_ERR_AUTH:
		return "no usable access token, ";
	default:
		return "";
	}
}

/*
 * Fetch the page at r->cursor into *page.  RS_OK; RS_ERR_RANGE (the
 * cursor was rejected); RS_ERR_STOPPING (stopped before the call, or
 * wixapi cut the call short: a stop, not a failure, so no retry, no log
 * line and no *why); or a failure with *why.
 */
static enum rs_status
bf_fetch(struct bf_run *r, struct wixapi_page *page, char **why)
{
	struct wixapi_error err;
	enum rs_status rc;
	char *what, *note;
	int n;

	for (n = 1;; n++) {
		if (bf_stopped(r))
			return RS_ERR_STOPPING;
		memset(&err, 0, sizeof(err));
		rc = wixapi_query_refunds(r->w, r->id, r->cursor, r->page_size,
		    NULL, page, &err);
		if (rc == RS_OK || rc == RS_ERR_STOPPING) {
			wixapi_error_cleanup(&err);
			return rc;
		}
		what = bf_call_error(rc, &err);
		if (rc == RS_ERR_RANGE && r->cursor != NULL) {
			/* bf_reset() or the failure says it. */
			*why = what;
			wixapi_error_cleanup(&err);
			return RS_ERR_RANGE;
		}
		if (rc == RS_ERR_AUTH && err.http_status >= 300 &&
		    err.http_status < 400) {
			*why = xasprintf("the Wix token endpoint answered a "
			    "redirect, not followed (check api_base): %s",
			    what);
		} else if (rc == RS_ERR_AUTH && !bf_transient(rc, &err)) {
			*why = xasprintf("Wix refused the app credentials: "
			    "%s", what);
		} else if (!bf_transient(rc, &err)) {
			*why = xasprintf("Query Refunds failed: %s", what);
		} else if (n >= r->attempts) {
			*why = xasprintf("Query Refunds failed %d times; the "
			    "last: %s%s", n, bf_kind(rc, &err), what);
		} else {
			note = xasprintf("%s%s; trying again in %lld ms",
			    bf_kind(rc, &err), what,
			    (long long)bf_backoff(r, n));
			log_warnx("%s %s: page %lld: %s", r->page_fn != NULL ?
			    "query refunds" : "backfill", r->id,
			    (long long)r->fpage + 1, note);
			bf_note(r, note);
			free(note);
			free(what);
			wixapi_error_cleanup(&err);
			if (!bf_sleep(r, bf_backoff(r, n)))
				return RS_ERR_STOPPING;
			continue;
		}
		free(what);
		wixapi_error_cleanup(&err);
		return rc == RS_ERR_AUTH || rc == RS_ERR_BUSY ||
		    rc == RS_ERR_IO ? rc : RS_ERR_INPUT;
	}
}

/* Does created (ISO-8601) come strictly before than? Unparsable: no. */
static bool
bf_before(const char *created, const char *than)
{
	struct isotime a, b;

	if (created == NULL || than == NULL ||
	    isotime_parse(created, &a) != RS_OK ||
	    isotime_parse(than, &b) != RS_OK)
		return false;
	return isotime_cmp(&a, &b) < 0;
}

/* The loop checks on a page before any of it is stored.  RS_OK, or
 * RS_ERR_INPUT and *why. */
static enum rs_status
bf_check_page(struct bf_run *r, const struct wixapi_page *p, char **why)
{
	long long page = (long long)r->fpage + 1;
	char *c;

	if (p->has_next && p->n == 0) {
		*why = xasprintf("Query Refunds returned an empty page %lld "
		    "with hasNext true: stopping instead of looping", page);
		return RS_ERR_INPUT;
	}
	if (p->has_next && p->next_cursor == NULL) {
		*why = xasprintf("Query Refunds page %lld has hasNext true "
		    "but no next cursor: stopping instead of guessing", page);
		return RS_ERR_INPUT;
	}
	if (p->has_next && ((r->cursor != NULL &&
	    strcmp(p->next_cursor, r->cursor) == 0) ||
	    cs_has(&r->seen, p->next_cursor))) {
		c = bf_cursor_shown(p->next_cursor);
		*why = xasprintf("Query Refunds repeated cursor %s after page "
		    "%lld: stopping instead of looping", c, page);
		free(c);
		return RS_ERR_INPUT;
	}
	if (p->n > 0 && bf_before(p->refunds[0].created_date, r->prev_last)) {
		*why = xasprintf("Query Refunds went backwards: page %lld "
		    "starts at createdDate %s, before the previous page's "
		    "last (%s): stopping instead of looping", page,
		    p->refunds[0].created_date, r->prev_last);
		return RS_ERR_INPUT;
	}
	return RS_OK;
}

/*
 * Commit page p, retrying a store that cannot commit.  RS_OK;
 * RS_ERR_STOPPING; or a failure with *why.
 */
static enum rs_status
bf_commit(struct bf_run *r, const struct wixapi_page *p, char **why)
{
	const char *next = p->has_next ? p->next_cursor : NULL;
	enum rs_status rc;
	size_t applied = 0;
	int n;

	if (r->page_fn != NULL) {
		if ((rc = r->page_fn(r->walk_arg, p)) != RS_OK) {
			if (rc != RS_ERR_STOPPING)
				*why = xasprintf("page %lld: %s",
				    (long long)r->pages + 1,
				    rs_strstatus(rc));
			return rc;
		}
		r->pages++;
		r->run_pages++;
		r->refunds += (int64_t)p->n;
		return RS_OK;
	}
	for (n = 1;; n++) {
		rc = store_backfill_page(r->st, r->id, p->refunds, p->n, next,
		    &applied);
		if (rc == RS_OK)
			break;
		if (rc != RS_ERR_BUSY || n >= r->attempts) {
			*why = xasprintf("cannot store page %lld: %s",
			    (long long)r->pages + 1, rs_strstatus(rc));
			return rc;
		}
		log_warnx("backfill %s: page %lld: the store cannot commit "
		    "now; trying again", r->id, (long long)r->pages + 1);
		if (!bf_sleep(r, bf_backoff(r, n)))
			return RS_ERR_STOPPING;
	}
	r->pages++;
	r->run_pages++;
	r->refunds += (int64_t)p->n;
	r->applied += (int64_t)applied;
	metrics_add("refundsync_backfill_pages_total", r->label, 1);
	metrics_add("refundsync_backfill_refunds_total", r->label,
	    (int64_t)p->n);
	return RS_OK;
}

/* A store call of the run's own (start, reset, finish), retried while
 * the store is busy.  which: 0 start, 1 reset, 2 finish. */
static enum rs_status
bf_store_op(struct bf_run *r, int which, bool flag, const char *text)
{
	enum rs_status rc = RS_ERR_INTERNAL;
	int n;

	for (n = 1;; n++) {
		switch (which) {
		case 0:
			rc = store_backfill_start(r->st, r->id, flag);
			break;
		case 1:
			rc = store_backfill_reset_cursor(r->st, r->id, text);
			break;
		default:
			rc = store_backfill_finish(r->st, r->id, flag, text);
			break;
		}
		if (rc != RS_ERR_BUSY || n >= r->attempts)
			return rc;
		/* Finishing ignores stop: the outcome must be recorded. */
		if (which == 2) {
			struct timespec ts = { 0, 0 };

			ts.tv_nsec = 100 * 1000000L;
			nanosleep(&ts, NULL);
		} else if (!bf_sleep(r, bf_backoff(r, n)))
			return RS_ERR_STOPPING;
	}
}

/* Forget where the fetching stood: the next page is the first. */
static void
bf_reset_fetch(struct bf_run *r)
{
	free(r->cursor);
	r->cursor = NULL;
	free(r->prev_last);
	r->prev_last = NULL;
	cs_clear(&r->seen);
	r->fpage = 0;
}

/*
 * Start over from the first page after a rejected cursor: say so, reset
 * the stored cursor (or tell the walk's caller), zero the counts.  With
 * a fetcher thread, this is the committer's side (after the pages
 * queued before the rejection are committed); the fetcher has reset its
 * own state already.
 */
static enum rs_status
bf_reset(struct bf_run *r, const char *what, char **why)
{
	enum rs_status rc;
	char *note;

	note = xasprintf("Wix rejected the cursor (%s): starting again from "
	    "the first page", what);
	log_warnx("%s %s: %s", r->page_fn != NULL ? "query refunds" :
	    "backfill", r->id, note);
	if (r->page_fn != NULL) {
		if (r->restart_fn != NULL)
			r->restart_fn(r->walk_arg);
		rc = RS_OK;
	} else
		rc = bf_store_op(r, 1, false, note);
	if (rc == RS_OK) {
		if (r->pipe == NULL)
			bf_reset_fetch(r);
		r->pages = r->refunds = 0;
		bf_progress(r, false, note);
	} else if (rc != RS_ERR_STOPPING)
		*why = xasprintf("cannot reset the cursor: %s",
		    rs_strstatus(rc));
	free(note);
	return rc;
}

/* Read where the backfill stands after store_backfill_start(). */
static enum rs_status
bf_load(struct bf_run *r, char **why)
{
	struct store_instance in;
	enum rs_status rc;

	if ((rc = store_instance_get(r->st, r->id, &in)) != RS_OK) {
		*why = xasprintf("cannot read the instance: %s",
		    rs_strstatus(rc));
		return rc;
	}
	r->pages = in.backfill_pages;
	r->refunds = in.backfill_refunds;
	if (in.backfill_cursor != NULL) {
		r->cursor = in.backfill_cursor;
		in.backfill_cursor = NULL;
		cs_add(&r->seen, r->cursor);
	}
	store_instance_cleanup(&in);
	return RS_OK;
}

/* Move the fetch state past page p, which passed the loop checks. */
static void
bf_advance(struct bf_run *r, const struct wixapi_page *p)
{
	r->fpage++;
	if (!p->has_next)
		return;
	free(r->cursor);
	r->cursor = xstrdup(p->next_cursor);
	cs_add(&r->seen, r->cursor);
	if (p->n > 0 && p->refunds[p->n - 1].created_date != NULL) {
		free(r->prev_last);
		r->prev_last = xstrdup(p->refunds[p->n - 1].created_date);
	}
}

/* Walk the pages from r->cursor to the end, in one thread: fetch,
 * check, commit (or hand over), next. */
static enum rs_status
bf_loop(struct bf_run *r, char **why)
{
	struct wixapi_page page;
	enum rs_status rc;
	char *what = NULL;
	int restarts = 0;
	bool last;

	for (;;) {
		memset(&page, 0, sizeof(page));
		rc = bf_fetch(r, &page, &what);
		if (rc == RS_ERR_RANGE) {
			if (++restarts > r->max_restarts) {
				*why = xasprintf("Wix rejected the cursor %d "
				    "times; the last: %s", restarts, what);
				free(what);
				return RS_ERR_RANGE;
			}
			rc = bf_reset(r, what, why);
			free(what);
			what = NULL;
			if (rc != RS_OK)
				return rc;
			continue;
		}
		if (rc != RS_OK) {
			*why = what;
			return rc;
		}
		if ((rc = bf_check_page(r, &page, why)) == RS_OK)
			rc = bf_commit(r, &page, why);
		if (rc != RS_OK) {
			wixapi_page_cleanup(&page);
			return rc;
		}
		last = !page.has_next;
		bf_advance(r, &page);
		wixapi_page_cleanup(&page);
		if (last)
			return RS_OK;
		bf_progress(r, false, NULL);
		if (bf_stopped(r))
			return RS_ERR_STOPPING;
	}
}

/* ---- the pipeline ------------------------------------------------------- */

/*
 * The fetcher thread: fetch and check the pages in order from r->cursor
 * and queue them; queue a reset when Wix rejects a cursor, and an end
 * with the status last.  Ends without one if the committer gives up.
 */
static void *
bf_fetcher(void *arg)
{
	struct bf_run *r = arg;
	struct bf_qitem *it;
	enum rs_status rc;
	char *what = NULL, *why = NULL;
	int restarts = 0;
	bool last;

	for (;;) {
		it = bf_qitem_new(BF_PAGE);
		rc = bf_fetch(r, &it->page, &what);
		if (rc == RS_ERR_RANGE && ++restarts <= r->max_restarts) {
			/* The committer resets the store in its turn. */
			bf_reset_fetch(r);
			wixapi_page_cleanup(&it->page);
			it->kind = BF_RESET;
			it->text = what;
			what = NULL;
			if (!bf_put(r->pipe, it))
				return NULL;
			continue;
		}
		if (rc == RS_ERR_RANGE) {
			why = xasprintf("Wix rejected the cursor %d times; the "
			    "last: %s", restarts, what);
			free(what);
			what = NULL;
		} else if (rc != RS_OK) {
			why = what;
			what = NULL;
		} else if ((rc = bf_check_page(r, &it->page, &why)) == RS_OK) {
			last = !it->page.has_next;
			bf_advance(r, &it->page);
			if (!bf_put(r->pipe, it))
				return NULL;
			if (!last)
				continue;
			it = bf_qitem_new(BF_END);
		}
		wixapi_page_cleanup(&it->page);
		it->kind = BF_END;
		it->rc = rc;
		it->text = why;
		(void)bf_put(r->pipe, it);
		return NULL;
	}
}

/*
 * Commit the n pages of batch (borrowed) in one transaction, retrying a
 * store that cannot commit; then count them and tell the progress
 * callback, page by page.  RS_OK; RS_ERR_STOPPING; or a failure with
 * *why, and nothing counted.
 */
static enum rs_status
bf_commit_batch(struct bf_run *r, struct bf_qitem *const *batch, size_t n,
    char **why)
{
	struct store_bf_page sp[BF_MAX_BATCH];
	size_t applied[BF_MAX_BATCH], k;
	const struct wixapi_page *p;
	enum rs_status rc;
	char *which;
	int tries;

	for (k = 0; k < n; k++) {
		p = &batch[k]->page;
		sp[k].refunds = p->refunds;
		sp[k].n = p->n;
		sp[k].next_cursor = p->has_next ? p->next_cursor : NULL;
	}
	for (tries = 1;; tries++) {
		rc = store_backfill_pages(r->st, r->id, sp, n, applied);
		if (rc == RS_OK)
			break;
		if (n == 1)
			which = xasprintf("page %lld", (long long)r->pages + 1);
		else
			which = xasprintf("pages %lld-%lld",
			    (long long)r->pages + 1,
			    (long long)r->pages + (long long)n);
		if (rc != RS_ERR_BUSY || tries >= r->attempts) {
			*why = xasprintf("cannot store %s: %s", which,
			    rs_strstatus(rc));
			free(which);
			return rc;
		}
		log_warnx("backfill %s: %s: the store cannot commit now; "
		    "trying again", r->id, which);
		free(which);
		if (!bf_sleep(r, bf_backoff(r, tries)))
			return RS_ERR_STOPPING;
	}
	for (k = 0; k < n; k++) {
		p = &batch[k]->page;
		r->pages++;
		r->run_pages++;
		r->refunds += (int64_t)p->n;
		r->applied += (int64_t)applied[k];
		metrics_add("refundsync_backfill_pages_total", r->label, 1);
		metrics_add("refundsync_backfill_refunds_total", r->label,
		    (int64_t)p->n);
		if (p->has_next)
			bf_progress(r, false, NULL);
	}
	return RS_OK;
}

/* The committer: take what the fetcher queues, in order, until its end
 * or a failure here. */
static enum rs_status
bf_committer(struct bf_run *r, char **why)
{
	struct bf_qitem *batch[BF_MAX_BATCH], *it;
	enum rs_status rc;
	size_t n, k;

	for (;;) {
		it = bf_take(r->pipe, batch, (size_t)r->batch_pages, &n);
		if (n > 0) {
			rc = bf_commit_batch(r, batch, n, why);
			for (k = 0; k < n; k++)
				bf_qitem_free(batch[k]);
			if (rc != RS_OK)
				return rc;
			continue;
		}
		switch (it->kind) {
		case BF_NOTE:
			bf_progress(r, false, it->text);
			rc = RS_OK;
			break;
		case BF_RESET:
			rc = bf_reset(r, it->text, why);
			break;
		default:
			rc = it->rc;
			if (rc != RS_OK) {
				*why = it->text;
				it->text = NULL;
			}
			bf_qitem_free(it);
			return rc;
		}
		bf_qitem_free(it);
		if (rc != RS_OK)
			return rc;
	}
}

/*
 * Walk the pages from r->cursor to the end with a fetcher thread and
 * commit them in the calling thread.  As bf_loop() (which it falls back
 * to if no thread can start).
 */
static enum rs_status
bf_pipeline(struct bf_run *r, char **why)
{
	struct bf_pipe q;
	struct bf_qitem *it;
	enum rs_status rc;
	pthread_t tid;
	int e;

	memset(&q, 0, sizeof(q));
	pthread_mutex_init(&q.mu, NULL);
	pthread_cond_init(&q.ready, NULL);
	pthread_cond_init(&q.space, NULL);
	atomic_init(&q.abort, false);
	q.cap = (size_t)r->queue_pages;
	r->pipe = &q;
	if ((e = pthread_create(&tid, NULL, bf_fetcher, r)) != 0) {
		log_warnx("backfill %s: cannot start a fetcher thread (%s); "
		    "fetching and committing in turn", r->id, strerror(e));
		r->pipe = NULL;
		rc = bf_loop(r, why);
		goto out;
	}
	rc = bf_committer(r, why);
	/* After an end the fetcher has returned or is returning; after a
	 * failure here it must stop.  Either way, then nothing is left
	 * but what it queued before it saw the abort. */
	bf_abort(&q);
	pthread_join(tid, NULL);
	r->pipe = NULL;
	while ((it = q.head) != NULL) {
		q.head = it->next;
		bf_qitem_free(it);
	}
out:
	pthread_cond_destroy(&q.space);
	pthread_cond_destroy(&q.ready);
	pthread_mutex_destroy(&q.mu);
	return rc;
}

/* Fill r's tuning from opt, as a run and a walk both do. */
static void
bf_tune(struct bf_run *r, const struct backfill_options *opt)
{
	r->opt = opt;
	r->page_size = opt->page_size > 0 && opt->page_size <= 100 ?
	    opt->page_size : BF_DEF_PAGE_SIZE;
	r->attempts = opt->page_attempts > 0 ? opt->page_attempts :
	    BF_DEF_ATTEMPTS;
	r->max_restarts = opt->max_restarts > 0 ? opt->max_restarts :
	    BF_DEF_RESTARTS;
	r->base_ms = opt->retry_base_ms > 0 ? opt->retry_base_ms :
	    BF_DEF_BASE_MS;
	r->max_ms = opt->retry_max_ms > 0 ? opt->retry_max_ms : BF_DEF_MAX_MS;
	if (r->max_ms < r->base_ms)
		r->max_ms = r->base_ms;
	r->queue_pages = opt->queue_pages < 0 ? -1 : opt->queue_pages == 0 ?
	    BF_DEF_QUEUE : opt->queue_pages > BF_MAX_QUEUE ? BF_MAX_QUEUE :
	    opt->queue_pages;
	r->batch_pages = opt->batch_pages <= 0 ? BF_DEF_BATCH :
	    opt->batch_pages > BF_MAX_BATCH ? BF_MAX_BATCH : opt->batch_pages;
	r->t0 = clock_mono_ms();
}

/*
 * The rate is this run's pages over this run's time, in whole pages a
 * minute (the unit of requests_per_minute, so the two compare at a
 * glance).  Over less than a second it would mostly measure the first
 * burst the budget lets through, so none is given.
 *
 * There is no ETA: Query Refunds pages by cursor and tells neither a
 * total nor the pages left (WIX.md §4: pagingMetadata has only this
 * page's count, hasNext and the cursors).  The budget bounds the time a
 * page takes, but without the pages left that gives no end time, so the
 * line says so instead of guessing one.
 */
int
backfill_progress_line(char *buf, size_t len,
    const struct backfill_progress *p)
{
	char rate[24];

	if (p->elapsed_ms >= BF_RATE_MIN_MS && p->run_pages >= 0)
		(void)snprintf(rate, sizeof(rate), "%lld", (long long)
		    ((p->run_pages * 60000 + p->elapsed_ms / 2) /
		    p->elapsed_ms));
	else
		(void)snprintf(rate, sizeof(rate), "-");
	return snprintf(buf, len, "%s: page %lld, %lld refunds, %s pages/min, "
	    "%lld s elapsed, ETA unknown", p->instance_id, (long long)p->pages,
	    (long long)p->refunds, rate, (long long)(p->elapsed_ms / 1000));
}

enum rs_status
backfill_run(struct store *st, struct wixapi *w, const char *instance_id,
    const struct backfill_options *opt, char **why)
{
	static const struct backfill_options defaults;
	struct bf_run r;
	enum rs_status rc, frc;
	char *err = NULL;
	int64_t ms;
	bool claimed;

	*why = NULL;
	if (instance_id == NULL || *instance_id == '\0') {
		*why = xstrdup("no instance id");
		return RS_ERR_INPUT;
	}
	/* One run of an instance at a time on this host: two (the daemon's
	 * and a `refundsync backfill`) would fetch every page twice and
	 * add both runs' pages and refunds to the instance's counters. */
	if ((rc = wixapi_claim(w, instance_id, true)) == RS_ERR_BUSY) {
		*why = xstrdup("another process is backfilling this instance "
		    "now; it resumes from the cursor if stopped");
		log_warnx("backfill %s: not started: %s", instance_id, *why);
		return rc;
	}
	claimed = rc == RS_OK;	/* else logged: go on unguarded */
	if (opt == NULL)
		opt = &defaults;
	bf_define_metrics();
	memset(&r, 0, sizeof(r));
	r.st = st;
	r.w = w;
	r.id = instance_id;
	bf_tune(&r, opt);
	r.label = bf_label(instance_id);

	if ((rc = bf_store_op(&r, 0, opt->restart, NULL)) != RS_OK) {
		err = xasprintf("cannot start: %s", rs_strstatus(rc));
		goto fail;
	}
	if ((rc = bf_load(&r, &err)) != RS_OK)
		goto fail;
	metrics_set("refundsync_backfill_running", r.label, 1);
	if (r.cursor == NULL)
		log_info("backfill %s: starting from the first page (%d a "
		    "page)", instance_id, r.page_size);
	else
		log_info("backfill %s: resuming after page %lld (%lld refunds "
		    "so far)", instance_id, (long long)r.pages,
		    (long long)r.refunds);

	r.fpage = r.pages;
	rc = r.queue_pages < 0 ? bf_loop(&r, &err) : bf_pipeline(&r, &err);
	metrics_set("refundsync_backfill_running", r.label, 0);
	if (rc == RS_ERR_STOPPING) {
		log_info("backfill %s: stopped after page %lld; the next run "
		    "resumes there", instance_id, (long long)r.pages);
		*why = xasprintf("stopped after page %lld", (long long)r.pages);
		bf_progress(&r, true, "stopped");
		goto out;
	}
	if (rc != RS_OK)
		goto fail;
	if ((frc = bf_store_op(&r, 2, true, NULL)) != RS_OK) {
		rc = frc;
		*why = xasprintf("all pages are stored, but the end of the "
		    "backfill could not be recorded: %s", rs_strstatus(rc));
		log_warnx("backfill %s: %s", instance_id, *why);
		goto out;
	}
	ms = clock_mono_ms() - r.t0;
	log_info("backfill %s: done: %lld pages, %lld refunds (%lld new or "
	    "newer) in %lld.%03lld s, %llu requests", instance_id,
	    (long long)r.pages, (long long)r.refunds, (long long)r.applied,
	    (long long)(ms / 1000), (long long)(ms % 1000),
	    (unsigned long long)wixapi_requests_sent(w, instance_id));
	bf_progress(&r, true, NULL);
	goto out;

fail:
	metrics_set("refundsync_backfill_running", r.label, 0);
	if (err == NULL)
		err = xstrdup(rs_strstatus(rc));
	if (rc == RS_ERR_STOPPING) {
		/* Stopped while waiting for the store: nothing to record. */
		*why = err;
		err = NULL;
		goto out;
	}
	metrics_add("refundsync_backfill_failures_total", r.label, 1);
	log_warnx("backfill %s: failed after page %lld: %s", instance_id,
	    (long long)r.pages, err);
	if ((frc = bf_store_op(&r, 2, false, err)) != RS_OK)
		log_warnx("backfill %s: cannot record the failure: %s",
		    instance_id, rs_strstatus(frc));
	bf_progress(&r, true, err);
	*why = err;
	err = NULL;
out:
	if (claimed)
		(void)wixapi_claim(w, instance_id, false);
	free(err);
	free(r.cursor);
	free(r.prev_last);
	cs_clear(&r.seen);
	free(r.label);
	return rc;
}

enum rs_status
backfill_walk(struct wixapi *w, const char *instance_id,
    const struct backfill_options *opt, backfill_page_fn page,
    backfill_restart_fn restart, void *arg, char **why)
{
	static const struct backfill_options defaults;
	struct bf_run r;
	enum rs_status rc;
	char *err = NULL;

	*why = NULL;
	if (instance_id == NULL || *instance_id == '\0' || page == NULL) {
		*why = xstrdup(page == NULL ? "no page callback" :
		    "no instance id");
		return RS_ERR_INPUT;
	}
	memset(&r, 0, sizeof(r));
	r.w = w;
	r.id = instance_id;
	bf_tune(&r, opt != NULL ? opt : &defaults);
	r.page_fn = page;
	r.restart_fn = restart;
	r.walk_arg = arg;
	rc = bf_loop(&r, &err);
	if (rc == RS_OK)
		bf_progress(&r, true, NULL);
	else if (rc == RS_ERR_STOPPING && err == NULL)
		err = xasprintf("stopped after page %lld", (long long)r.pages);
	else if (err == NULL)
		err = xstrdup(rs_strstatus(rc));
	*why = err;
	free(r.cursor);
	free(r.prev_last);
	cs_clear(&r.seen);
	return rc;
}

/* ---- credentials -------------------------------------------------------- */

/*
 * The request budget file lives next to the database: when the store's
 * directory is missing (or no directory), that is the problem to name,
 * not the budget file that cannot be created in it.  RS_OK, or RS_ERR_IO
 * and *why (caller frees).
 */
static enum rs_status
bf_store_dir_check(const char *store_path, char **why)
{
	const char *slash = strrchr(store_path, '/');
	struct stat sb;
	char *dir;
	enum rs_status rc = RS_OK;

	if (slash == NULL)
		dir = xstrdup(".");
	else if (slash == store_path)
		dir = xstrdup("/");
	else
		dir = xstrndup(store_path, (size_t)(slash - store_path));
	if (stat(dir, &sb) != 0) {
		*why = xasprintf("store %s: its directory %s: %s", store_path,
		    dir, strerror(errno));
		rc = RS_ERR_IO;
	} else if (!S_ISDIR(sb.st_mode)) {
		*why = xasprintf("store %s: %s is not a directory",
		    store_path, dir);
		rc = RS_ERR_IO;
	}
	free(dir);
	return rc;
}

/*
 * The Wix secret cfg names, read as backfill_wixapi_new() reads it:
 * RS_OK, *oauth and *secret (caller wipes it with freezero_str());
 * RS_ERR_NOTFOUND when no credentials are configured; RS_ERR_CONFIG and
 * *why (caller frees) when the file cannot be read or is empty.
 */
static enum rs_status
bf_read_secret(const struct config *cfg, bool *oauth, char **secret,
    char **why)
{
	const char *key, *file;
	char *rwhy = NULL;
	enum rs_status rc;

	if (cfg->app_secret_file[0] != '\0' && cfg->app_id[0] != '\0') {
		*oauth = true;
		key = "app_secret_file";
		file = cfg->app_secret_file;
	} else if (cfg->api_key_file[0] != '\0' && cfg->site_id[0] != '\0') {
		*oauth = false;
		key = "api_key_file";
		file = cfg->api_key_file;
	} else
		return RS_ERR_NOTFOUND;
	rc = config_read_secret(file, BACKFILL_SECRET_MAX, secret, &rwhy);
	if (rc != RS_OK) {
		*why = xasprintf("[wix] %s: %s", key,
		    rwhy != NULL ? rwhy : rs_strstatus(rc));
		free(rwhy);
		return RS_ERR_CONFIG;
	}
	if ((*secret)[0] == '\0') {
		*why = xasprintf("[wix] %s: the file is empty", key);
		freezero_str(*secret);
		*secret = NULL;
		return RS_ERR_CONFIG;
	}
	return RS_OK;
}

enum rs_status
backfill_check_secret(const struct config *cfg, char **why)
{
	char *secret = NULL;
	enum rs_status rc;
	bool oauth;

	*why = NULL;
	rc = bf_read_secret(cfg, &oauth, &secret, why);
	freezero_str(secret);
	return rc == RS_ERR_NOTFOUND ? RS_OK : rc;
}

enum rs_status
backfill_wixapi_new(const struct config *cfg, struct wixapi **out,
    char **why)
{
	struct wixapi_options opt;
	char *secret = NULL, *cwhy = NULL, *bpath;
	enum rs_status rc;
	bool oauth = false;

	*why = NULL;
	memset(&opt, 0, sizeof(opt));
	if ((rc = bf_read_secret(cfg, &oauth, &secret, why)) != RS_OK)
		return rc;
	if ((rc = bf_store_dir_check(cfg->store_path, why)) != RS_OK) {
		freezero_str(secret);
		return rc;
	}
	opt.api_base = cfg->api_base;
	if (oauth) {
		opt.app_id = cfg->app_id;
		opt.app_secret = secret;
	} else {
		opt.api_key = secret;
		opt.site_id = cfg->site_id;
	}
	opt.requests_per_minute = cfg->requests_per_minute;
	/* [wix] connect_timeout and timeout (config.c keeps the one at
	 * most the other). */
	opt.connect_timeout_ms = (long)cfg->wix_connect_timeout * 1000L;
	opt.timeout_ms = (long)cfg->wix_timeout * 1000L;
	/* One budget per store, so the daemon and every CLI command
	 * working on it share each instance's requests per minute. */
	bpath = xasprintf("%s-wixbudget", cfg->store_path);
	opt.budget_path = bpath;
	rc = wixapi_new(&opt, out, &cwhy);
	freezero_str(secret);
	free(bpath);
	if (rc != RS_OK) {
		*why = xasprintf("[wix]: %s", cwhy != NULL ? cwhy :
		    rs_strstatus(rc));
		free(cwhy);
		return RS_ERR_CONFIG;
	}
	return RS_OK;
}

/* ---- the daemon's backfiller ------------------------------------------- */

/* A kicked instance waiting for a worker. */
struct bf_item {
	struct bf_item	*next;
	char		*id;
};

/* An instance a worker is backfilling now. */
struct bf_active {
	struct bf_active *next;
	char		*id;
	atomic_bool	 cancel;	/* backfiller_cancel() */
	atomic_bool	 again;		/* installed again since: run again */
};

struct backfiller {
	struct wixapi		*w;		/* borrowed */
	char			*store_path;
	struct store_options	 sopt;
	struct backfill_options	 opt;		/* stop, tuning */
	atomic_bool		 stop;
	pthread_mutex_t		 mu;		/* all below */
	pthread_cond_t		 idle;		/* nworkers fell */
	struct bf_item		*head, *tail;	/* the queue */
	struct bf_active	*active;
	size_t			 nworkers;	/* threads alive */
	bool			 stopping;
};

static bool
bf_listed(const struct backfiller *bf, const char *id)
{
	const struct bf_item *q;
	const struct bf_active *a;

	for (q = bf->head; q != NULL; q = q->next)
		if (strcmp(q->id, id) == 0)
			return true;
	for (a = bf->active; a != NULL; a = a->next)
		if (strcmp(a->id, id) == 0)
			return true;
	return false;
}

/* Backfill one instance in a worker, unless it is done or its app was
 * removed (Wix gives no token for it; AppInstalled again makes it
 * pending and clears the removal). */
static void
bf_work_one(struct backfiller *bf, struct store *st, struct bf_active *act)
{
	struct backfill_options opt = bf->opt;
	const char *id = act->id;
	struct store_instance in;
	enum rs_status rc;
	char *why = NULL;

	rc = store_instance_get(st, id, &in);
	if (rc == RS_OK) {
		if (in.backfill == STORE_BACKFILL_DONE) {
			log_debug("backfill %s: already done", id);
			store_instance_cleanup(&in);
			return;
		}
		if (in.removed_at != NULL) {
			log_info("backfill %s: not started: the app was "
			    "removed from it (AppRemoved at %s)", id,
			    in.removed_at);
			store_instance_cleanup(&in);
			return;
		}
		store_instance_cleanup(&in);
	} else if (rc != RS_ERR_NOTFOUND) {
		log_warnx("backfill %s: cannot read the instance: %s", id,
		    rs_strstatus(rc));
		return;
	}
	opt.cancel = &act->cancel;
	rc = backfill_run(st, bf->w, id, &opt, &why);
	if (rc == RS_ERR_STOPPING && atomic_load(&act->cancel) &&
	    atomic_load(&act->again))
		/* The AppInstalled made it pending; bf_worker() queues it
		 * again, and that run starts from the first page. */
		log_info("backfill %s: stopped: the app was removed from it "
		    "and installed again; it runs again from the first page",
		    id);
	else if (rc == RS_ERR_STOPPING && atomic_load(&act->cancel)) {
		/*
		 * Not 'running' for good: the run has ended.  'failed' keeps
		 * the cursor (a named run resumes from it) and says why;
		 * AppInstalled makes it pending again.
		 */
		rc = store_backfill_finish(st, id, false,
		    "stopped: the app was removed from it");
		if (rc != RS_OK)
			log_warnx("backfill %s: cannot record the stop: %s",
			    id, rs_strstatus(rc));
		log_info("backfill %s: stopped: the app was removed from it",
		    id);
	} else if (rc != RS_OK && rc != RS_ERR_STOPPING)
		log_warnx("backfill %s: not completed: %s", id,
		    why != NULL ? why : rs_strstatus(rc));
	free(why);
}

static void *
bf_worker(void *arg)
{
	struct backfiller *bf = arg;
	struct store *st = NULL;
	struct bf_item *it;
	struct bf_active act, **ap;
	char *why = NULL;

	if (store_open(bf->store_path, &bf->sopt, &st, &why) != RS_OK) {
		log_warnx("backfill: cannot open the store: %s",
		    why != NULL ? why : "unknown reason");
		free(why);
	}
	pthread_mutex_lock(&bf->mu);
	while (st != NULL && !bf->stopping && (it = bf->head) != NULL) {
		bf->head = it->next;
		if (bf->head == NULL)
			bf->tail = NULL;
		act.id = it->id;
		atomic_init(&act.cancel, false);
		atomic_init(&act.again, false);
		act.next = bf->active;
		bf->active = &act;
		free(it);
		pthread_mutex_unlock(&bf->mu);

		bf_work_one(bf, st, &act);

		pthread_mutex_lock(&bf->mu);
		for (ap = &bf->active; *ap != NULL; ap = &(*ap)->next)
			if (*ap == &act) {
				*ap = act.next;
				break;
			}
		if (atomic_load(&act.again) && !bf->stopping &&
		    !bf_listed(bf, act.id)) {
			/* Its kick came while this run stopped: this
			 * worker takes it next. */
			it = xcalloc(1, sizeof(*it));
			it->id = act.id;
			it->next = bf->head;
			bf->head = it;
			if (bf->tail == NULL)
				bf->tail = it;
		} else
			free(act.id);
	}
	pthread_mutex_unlock(&bf->mu);
	/* The store goes before the count falls: stop() may free bf the
	 * moment it does. */
	store_close(st);
	pthread_mutex_lock(&bf->mu);
	bf->nworkers--;
	pthread_cond_broadcast(&bf->idle);
	pthread_mutex_unlock(&bf->mu);
	return NULL;
}

struct backfiller *
backfiller_start(const struct config *cfg, struct wixapi *w,
    const struct backfill_options *tune)
{
	struct backfiller *bf;

	bf_define_metrics();
	bf = xcalloc(1, sizeof(*bf));
	bf->w = w;
	bf->store_path = xstrdup(cfg->store_path);
	bf->sopt.busy_timeout_ms = (int)cfg->busy_timeout_ms;
	if (tune != NULL)
		bf->opt = *tune;
	bf->opt.page_size = (int)cfg->page_size;
	bf->opt.restart = false;
	bf->opt.progress = NULL;
	bf->opt.progress_arg = NULL;
	atomic_init(&bf->stop, false);
	bf->opt.stop = &bf->stop;
	pthread_mutex_init(&bf->mu, NULL);
	pthread_cond_init(&bf->idle, NULL);
	return bf;
}

/* The run of id under way that backfiller_cancel() stops, or NULL.
 * Caller holds bf->mu. */
static struct bf_active *
bf_cancelled(const struct backfiller *bf, const char *id)
{
	struct bf_active *a;

	for (a = bf->active; a != NULL; a = a->next)
		if (strcmp(a->id, id) == 0 && atomic_load(&a->cancel))
			return a;
	return NULL;
}

void
backfiller_kick(struct backfiller *bf, const char *instance_id)
{
	struct bf_active *a;
	struct bf_item *it;
	pthread_attr_t attr;
	pthread_t tid;
	int e;

	if (bf == NULL || instance_id == NULL || *instance_id == '\0')
		return;
	pthread_mutex_lock(&bf->mu);
	if (!bf->stopping && (a = bf_cancelled(bf, instance_id)) != NULL) {
		/*
		 * Removed, and installed again before its run stopped: that
		 * run ends at its next page, and its worker then runs it
		 * again (from the first page: the AppInstalled made it
		 * pending), rather than this kick being lost.
		 */
		atomic_store(&a->again, true);
		pthread_mutex_unlock(&bf->mu);
		log_info("backfill %s: queued: after the run that its "
		    "removal stops", instance_id);
		return;
	}
	if (bf->stopping || bf_listed(bf, instance_id)) {
		pthread_mutex_unlock(&bf->mu);
		log_debug("backfill %s: already queued or running",
		    instance_id);
		return;
	}
	it = xcalloc(1, sizeof(*it));
	it->id = xstrdup(instance_id);
	if (bf->tail != NULL)
		bf->tail->next = it;
	else
		bf->head = it;
	bf->tail = it;
	if (bf->nworkers < BF_MAX_WORKERS) {
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if ((e = pthread_create(&tid, &attr, bf_worker, bf)) == 0)
			bf->nworkers++;
		else
			log_warnx("backfill %s: cannot start a worker (%s); "
			    "it waits for one", instance_id, strerror(e));
		pthread_attr_destroy(&attr);
	}
	pthread_mutex_unlock(&bf->mu);
	log_info("backfill %s: queued", instance_id);
}

/* Collects the start-up kicks. */
struct bf_startup {
	const struct config	*cfg;
	bool			 pending_too;
	char			**ids;
	size_t			 n;
};

static void
bf_startup_add(struct bf_startup *s, const char *id)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->ids[i], id) == 0)
			return;
	s->ids = xreallocarray(s->ids, s->n + 1, sizeof(*s->ids));
	s->ids[s->n++] = xstrdup(id);
}

static enum rs_status
bf_startup_row(void *arg, const struct store_instance *in)
{
	struct bf_startup *s = arg;
	size_t i;

	/* Removed: nothing to resume until AppInstalled comes again. */
	if (in->removed_at != NULL)
		return RS_OK;
	/* With on_install, a backfill that failed (Wix down for longer
	 * than the retries, say) is tried again too, from its cursor:
	 * else the history of an instance installed by webhook would stay
	 * incomplete until an operator ran it by hand. */
	if (in->backfill == STORE_BACKFILL_RUNNING ||
	    (s->pending_too && (in->backfill == STORE_BACKFILL_PENDING ||
	    in->backfill == STORE_BACKFILL_FAILED)))
		bf_startup_add(s, in->instance_id);
	else if (in->backfill != STORE_BACKFILL_DONE)
		for (i = 0; i < s->cfg->ninstances; i++)
			if (strcmp(s->cfg->instances[i], in->instance_id) == 0)
				bf_startup_add(s, in->instance_id);
	return RS_OK;
}

size_t
backfiller_kick_startup(struct backfiller *bf, const struct config *cfg,
    struct store *st, bool pending_too)
{
	struct bf_startup s;
	struct store_instance in;
	enum rs_status rc;
	size_t i, n;

	memset(&s, 0, sizeof(s));
	s.cfg = cfg;
	s.pending_too = pending_too;
	/* Configured instances with no row yet have never run. */
	for (i = 0; i < cfg->ninstances; i++) {
		rc = store_instance_get(st, cfg->instances[i], &in);
		if (rc == RS_ERR_NOTFOUND)
			bf_startup_add(&s, cfg->instances[i]);
		else if (rc == RS_OK)
			store_instance_cleanup(&in);
	}
	if ((rc = store_instance_foreach(st, bf_startup_row, &s)) != RS_OK)
		log_warnx("backfill: cannot list the instances: %s",
		    rs_strstatus(rc));
	for (i = 0; i < s.n; i++) {
		backfiller_kick(bf, s.ids[i]);
		free(s.ids[i]);
	}
	free(s.ids);
	n = s.n;
	return n;
}

void
backfiller_cancel(struct backfiller *bf, const char *instance_id)
{
	struct bf_item **qp, *q;
	struct bf_active *a;

	if (bf == NULL || instance_id == NULL)
		return;
	pthread_mutex_lock(&bf->mu);
	for (qp = &bf->head; (q = *qp) != NULL;) {
		if (strcmp(q->id, instance_id) != 0) {
			qp = &q->next;
			continue;
		}
		*qp = q->next;
		free(q->id);
		free(q);
	}
	bf->tail = NULL;
	for (q = bf->head; q != NULL; q = q->next)
		bf->tail = q;
	for (a = bf->active; a != NULL; a = a->next)
		if (strcmp(a->id, instance_id) == 0) {
			atomic_store(&a->cancel, true);
			/* Removed again after a new install: no rerun. */
			atomic_store(&a->again, false);
		}
	pthread_mutex_unlock(&bf->mu);
}

size_t
backfiller_busy(struct backfiller *bf)
{
	const struct bf_item *q;
	const struct bf_active *a;
	size_t n = 0;

	if (bf == NULL)
		return 0;
	pthread_mutex_lock(&bf->mu);
	for (q = bf->head; q != NULL; q = q->next)
		n++;
	for (a = bf->active; a != NULL; a = a->next)
		n++;
	pthread_mutex_unlock(&bf->mu);
	return n;
}

bool
backfiller_stop(struct backfiller *bf, int64_t wait_ms)
{
	struct bf_item *it;
	struct timespec ts;
	int64_t end;
	bool all;

	if (bf == NULL)
		return true;
	atomic_store(&bf->stop, true);
	pthread_mutex_lock(&bf->mu);
	bf->stopping = true;
	while ((it = bf->head) != NULL) {
		bf->head = it->next;
		free(it->id);
		free(it);
	}
	bf->tail = NULL;
	end = clock_mono_ms() + (wait_ms > 0 ? wait_ms : 0);
	while (bf->nworkers > 0 && clock_mono_ms() < end) {
		/* The condvar runs on CLOCK_REALTIME; wake often and
		 * judge the deadline on the monotonic clock. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&bf->idle, &bf->mu, &ts);
	}
	all = bf->nworkers == 0;
	if (!all)
		log_warnx("backfill: %zu workers still busy (a Wix call or "
		    "the store); not waiting for them (the next start resumes "
		    "from the committed cursor)", bf->nworkers);
	pthread_mutex_unlock(&bf->mu);
	return all;
}

bool
backfiller_free(struct backfiller *bf)
{
	bool idle;

	if (bf == NULL)
		return true;
	pthread_mutex_lock(&bf->mu);
	idle = bf->stopping && bf->nworkers == 0;
	pthread_mutex_unlock(&bf->mu);
	if (!idle)
		return false;
	pthread_cond_destroy(&bf->idle);
	pthread_mutex_destroy(&bf->mu);
	free(bf->store_path);
	free(bf);
	return true;
}
