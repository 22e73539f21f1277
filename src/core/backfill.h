/*
 * backfill.h: page through Query Refunds (WIX.md §4) and store every
 * refund of an app instance, resuming from the last committed cursor.
 *
 * backfill_run() does one instance.  Each page's refunds and the cursor
 * that follows it are committed in one transaction, under the same
 * version rule as webhooks, so a backfill never undoes a newer webhook,
 * and a run that is killed resumes from the last committed cursor with
 * no page lost.  To overlap the network with the disk, a fetcher thread
 * of the run asks for the next pages while the calling thread commits
 * the ones fetched, several ready pages in one transaction
 * (store_backfill_pages(): a page and its cursor are never split).
 *
 * struct backfiller runs backfills in the daemon: a few worker threads,
 * each with its own store connection, take kicked instances from a queue.
 * Kicking never blocks on I/O, so ingest's done() callback may kick.
 */
#ifndef RS_BACKFILL_H
#define RS_BACKFILL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "util/status.h"

/* Where a run stands, for a progress display.  All borrowed for the
 * callback only. */
struct backfill_progress {
	const char	*instance_id;
	/* The whole backfill's, across runs: */
	int64_t		 pages;		/* pages committed */
	int64_t		 refunds;	/* refunds seen */
	/* This run's: */
	int64_t		 run_pages;	/* pages committed */
	int64_t		 applied;	/* refunds stored as new or
					   newer versions */
	uint64_t	 requests;	/* HTTP requests sent for the instance
					   by this process */
	int64_t		 elapsed_ms;	/* since this run began */
	bool		 finished;	/* the last call of the run */
	const char	*note;		/* a retry, restart or NULL */
};

/* Called after each committed page (once per page, in order, after the
 * transaction that holds it), on a retry or restart (note set), and once
 * at the end (finished).  Always from the thread that called
 * backfill_run() or backfill_walk(), never two calls at once.  arg
 * first. */
typedef void	(*backfill_progress_fn)(void *arg,
		    const struct backfill_progress *p);

/*
 * Format p as one short progress line into buf (len bytes; cut to fit,
 * NUL-terminated when len > 0):
 *	"ID: page P, R refunds, N pages/min, S s elapsed, ETA unknown"
 * P and R are the whole backfill's.  N is this run's pages over
 * p->elapsed_ms, rounded, or "-" before the run's first second.  A
 * caller that draws between pages must set elapsed_ms to the time now:
 * taken when the last page arrived, the rate stays at the speed of the
 * burst before a budget wait for as long as the wait lasts.  The ETA is
 * always unknown: Query Refunds tells no total (see backfill.c).
 * Returns what snprintf() returns.
 */
int		backfill_progress_line(char *buf, size_t len,
		    const struct backfill_progress *p);

struct backfill_options {
	int		 page_size;	/* per page, 1..100; 0: 100 */
	bool		 restart;	/* from the first page even if a
					   cursor is stored */
	const atomic_bool *stop;	/* when set, ask for no new page,
					   commit the pages already
					   fetched, and stop; NULL: never.
					   Looked at between calls; for a
					   call under way, wixapi_stop() */
	const atomic_bool *cancel;	/* the same as stop, for this run
					   alone (its app was removed);
					   NULL: never */
	backfill_progress_fn progress;	/* NULL: none */
	void		*progress_arg;
	/* A malformed, oversized or failed page (or a store that cannot
	 * commit) is tried this many times in all, with capped exponential
	 * backoff, before the run fails. */
	int		 page_attempts;	/* 0: 5 */
	int64_t		 retry_base_ms;	/* 0: 1000 */
	int64_t		 retry_max_ms;	/* 0: 30000 */
	int		 max_restarts;	/* cursor rejections; 0: 3 */
	/*
	 * backfill_run() only.  A fetcher thread fetches and checks the
	 * pages ahead of the commit; at most queue_pages fetched pages
	 * wait for it, and one transaction commits at most batch_pages of
	 * them (those ready when it begins).  Memory: about queue_pages +
	 * batch_pages + 1 pages.  queue_pages < 0: no fetcher thread;
	 * each page is fetched, then committed, in the calling thread.
	 */
	int		 queue_pages;	/* 0: 8; at most 64 */
	int		 batch_pages;	/* 0: 8; at most 64 */
};

/*
 * Backfill instance_id with w into st (a connection of the caller's
 * thread; no transaction open).  The instance row is created if absent
 * and marked running; a running or failed backfill resumes from its
 * cursor unless opt->restart.
 *
 * RS_OK: every page is committed and the state is 'done'.
 * RS_ERR_STOPPING: *opt->stop was set, or wixapi_stop() was called on
 *   w; the run asked for no new page, committed the pages already
 *   fetched (unless the store could not take them then: they are asked
 *   for again next time) and stopped at a page boundary, with the state
 *   left 'running' and the cursor committed, so the next run resumes.
 *   *opt->stop alone is only looked at between calls: a fetch under way
 *   (with its retries and backoff, possibly minutes) ends first.  To
 *   cut it short, call wixapi_stop(w) too (the CLI and the daemon do):
 *   the call then returns RS_ERR_STOPPING within a fraction of a second,
 *   and the run stops as above, at its last committed page, without
 *   counting it as a failure.
 * Anything else: the run failed; the state is 'failed' with last_error
 *   (and the cursor kept) when the store could record it.  A failure
 *   of the fetching side (a loop check, a call that failed) comes after
 *   the pages fetched before it, which are committed first; when a
 *   commit fails, the pages fetched after it are dropped and counted
 *   nowhere.  A cursor Wix
 *   repeats, an empty page or a missing cursor with hasNext, and a page
 *   that starts before the previous one ended all fail the run
 *   (RS_ERR_INPUT) instead of looping.
 * Unless RS_OK, *why (caller frees) says why; it never holds a secret.
 */
enum rs_status	backfill_run(struct store *st, struct wixapi *w,
		    const char *instance_id, const struct backfill_options *opt,
		    char **why /* OUT */);

/*
 * Walk every page of Query Refunds for instance_id from the first, with
 * what a backfill run does around each page (fetch retries with backoff,
 * the loop checks, starting again when Wix rejects a cursor, the stop
 * flag and the progress callback of opt; opt->restart, queue_pages and
 * batch_pages are ignored: a walk runs in the calling thread) but
 * without storing anything: each page goes to page(arg, p), which
 * borrows p for the call.  When Wix rejects a cursor, restart(arg) (may
 * be NULL) is called before the first page comes again, so the caller
 * can forget what the earlier pages gave.  A non-RS_OK return from page
 * ends the walk and is returned.  Used by reconcile, so its requests
 * share the instance's budget in w with any backfill of this process.
 * RS_OK once the last page was handed over; otherwise *why (caller
 * frees) says why, as for backfill_run().
 */
typedef enum rs_status (*backfill_page_fn)(void *arg,
		    const struct wixapi_page *p);
typedef void	(*backfill_restart_fn)(void *arg);
enum rs_status	backfill_walk(struct wixapi *w, const char *instance_id,
		    const struct backfill_options *opt, backfill_page_fn page,
		    backfill_restart_fn restart, void *arg,
		    char **why /* OUT */);

/* The most bytes of the [wix] app_secret_file or api_key_file read. */
#define BACKFILL_SECRET_MAX	(64 * 1024)

/*
 * A REST client from the [wix] section of cfg: OAuth (app_id and the
 * secret in app_secret_file) or API-key mode (api_key_file and site_id),
 * api_base, connect_timeout and timeout, and [backfill]
 * requests_per_minute.  The secret file is read (at most
 * BACKFILL_SECRET_MAX bytes) with config_read_secret() and wiped once
 * the client has its copy.
 * The shared request budget is a file next to the [store] path.
 * RS_OK and *out (caller owns; wixapi_free()); RS_ERR_NOTFOUND when no
 * credentials are configured (backfill is off); RS_ERR_CONFIG and *why
 * (caller frees) when they cannot be used; RS_ERR_IO and *why (naming
 * the store and its directory) when the store's directory is missing
 * or no directory, a runtime failure like a store that cannot be
 * opened.
 */
enum rs_status	backfill_wixapi_new(const struct config *cfg,
		    struct wixapi **out /* OUT */, char **why /* OUT */);

/*
 * Can the Wix secret cfg names be read, as backfill_wixapi_new() reads
 * it (a file that is there and not empty)?  RS_OK (also when no
 * credentials are configured), or RS_ERR_CONFIG and *why (caller frees).
 * The secret itself is wiped at once.
 */
enum rs_status	backfill_check_secret(const struct config *cfg,
		    char **why /* OUT */);

/* ---- the daemon's backfiller ----------------------------------------- */

struct backfiller;

/*
 * Start a backfiller over the store at cfg's [store] path (each worker
 * opens its own connection with busy_timeout) with cfg's [backfill]
 * page_size.  w is borrowed and must outlive backfiller_stop().  cfg is
 * read during the call only.  No thread runs until the first kick.
 * Returns the backfiller (caller owns; backfiller_stop(), then
 * backfiller_free()).
 */
struct backfiller *backfiller_start(const struct config *cfg,
		    struct wixapi *w, const struct backfill_options *tune);

/*
 * Ask for a backfill of instance_id.  Idempotent: a kick for an instance
 * queued or running is ignored, and an instance whose backfill is 'done'
 * or whose app was removed is left alone (the worker checks the store).  Never waits for I/O:
 * safe from ingest's done() callback.  A kick after backfiller_stop()
 * began is ignored.
 */
void		backfiller_kick(struct backfiller *bf,
		    const char *instance_id);

/*
 * The app was removed from instance_id: drop it from the queue, and ask
 * a run of it under way to stop at its next page boundary (its state
 * stays 'running' with its cursor, as for a stop, and the next
 * AppInstalled backfills it again).  Never waits: safe from ingest's
 * done() callback.
 */
void		backfiller_cancel(struct backfiller *bf,
		    const char *instance_id);

/*
 * The start-up kicks, read through st (a connection of the calling
 * thread): every instance named in [wix] instances whose backfill is not
 * 'done', every stored instance left 'running', and, when pending_too
 * (on_install = yes), every stored instance still 'pending'; but none
 * whose app was removed (an AppRemoved not followed by AppInstalled).
 * Returns how many were kicked.
 */
size_t		backfiller_kick_startup(struct backfiller *bf,
		    const struct config *cfg, struct store *st,
		    bool pending_too);

/* Instances queued or running now. */
size_t		backfiller_busy(struct backfiller *bf);

/*
 * Stop: set the stop flag, drop the queue, and wait up to wait_ms for
 * the workers to reach a page boundary (the state stays 'running' with
 * the cursor committed, so the next start resumes).  From here on kicks
 * are ignored, and bf stays valid until backfiller_free().  Call
 * wixapi_stop() on the client first (the daemon does), so a worker
 * inside a Wix call (a long backoff, a dead network) returns within a
 * fraction of a second instead of finishing the call.  true: every
 * worker has ended; false: one is still busy (a Wix call of a client
 * not stopped, or a store that does not answer).  May be called again.
 * NULL is fine (true).
 */
bool		backfiller_stop(struct backfiller *bf, int64_t wait_ms);

/*
 * Free bf after backfiller_stop().  true: freed.  false: a worker still
 * runs, so bf is left to it (and the wixapi it borrows must not be
 * freed either: the process is about to exit).  NULL is fine (true).
 */
bool		backfiller_free(struct backfiller *bf);

#endif
