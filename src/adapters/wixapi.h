/*
 * wixapi.h: the client for Wix's REST API (WIX.md §3-6), on libcurl.
 *
 * One struct wixapi serves every app instance of the process.  Per
 * instance it keeps an OAuth access token (cached until shortly before
 * expires_in, refreshed once and the call retried on a 401) and a
 * request budget of requests_per_minute, shared by every caller for that
 * instance (a backfill, a reconcile and the refund CLI in one process).
 * The budget is exact: a burst of at most requests_per_minute, and never
 * more than requests_per_minute requests sent in any 60 s window (a
 * sliding-window log of request times, each counted from its answer's
 * arrival; token requests count too).  With budget_path set, the log
 * lives in that file (adapters/budget.h) and is shared with every other
 * client, in this process or another on the host, opened on the same
 * file: a CLI reconcile beside the daemon's backfill then shares the
 * instance's budget instead of doubling the rate.  Without it the log
 * is private to this struct wixapi.
 * 429 and 5xx are retried with capped exponential backoff and full
 * jitter, honouring Retry-After (a negative or past one is clamped to 0;
 * a huge one to the cap).  Every transfer has connect and total timeouts
 * and a response-size cap enforced in the write callback.  Secrets are
 * never logged; x-wix-request-id is logged on failures.
 *
 * Thread-safe: calls for different instances run in parallel; calls for
 * one instance share its budget and token under a mutex (a token fetch
 * holds up only the callers of that instance).
 *
 * Stopping: wixapi_stop() ends every call of the client promptly (well
 * under a second) with RS_ERR_STOPPING: a backoff, Retry-After or budget
 * wait ends at once (sleeps are sliced at 50 ms), a libcurl transfer in
 * progress is abandoned at once (its wait is woken: connect, TLS and a
 * stalled body included), and no further attempt is made.  The flag
 * belongs to the struct wixapi (one per client: the daemon stops its
 * backfills and its reconcile together), so nothing borrowed has to
 * outlive anything.  A stopped call may have reached Wix: a caller of a
 * call that is not idempotent (Create Refund) must not stop it, or must
 * report its outcome as unknown.  refundcmd never stops its client.
 *
 * Test seams: the HTTP transport and the clock.  wixapi_options.transport,
 * when set, replaces libcurl, so unit tests can answer requests without
 * sockets.  wixapi_options.now_ms and .sleep_ms, when set, replace the
 * monotonic clock used for backoff, the budget and token expiry (with a
 * shared budget, every client on the file must use the same clock).
 * wixapi_options.budget_window_ms shortens the budget's window, so a test
 * with real processes and the real clock stays short.
 */
#ifndef RS_WIXAPI_H
#define RS_WIXAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/refund.h"
#include "util/status.h"

struct wixapi;

/* One HTTP exchange, as the transport sees it.  All borrowed. */
struct wixapi_http_request {
	const char	*method;	/* "GET", "POST" */
	const char	*url;		/* absolute */
	const char	*body;		/* JSON or NULL */
	size_t		 body_len;
	const char	*const *headers; /* "Name: value", NULL-terminated */
	long		 connect_timeout_ms;
	long		 timeout_ms;
	size_t		 max_response;	/* bytes; past it, RS_ERR_TOOBIG */
};

struct wixapi_http_response {
	long	 status;		/* HTTP status; 0 if none */
	char	*body;			/* owned; NUL-terminated */
	size_t	 body_len;
	char	*request_id;		/* x-wix-request-id, owned, or NULL */
	int64_t	 retry_after_s;		/* Retry-After, -1 if absent */
	char	*error;			/* owned, or NULL: why the transport
					   failed (RS_ERR_IO), for the log */
};

/* Free what r owns and leave it empty (status 0, retry_after_s -1).
 * NULL is fine. */
void	wixapi_http_response_cleanup(struct wixapi_http_response *r);

/*
 * A transport performs one exchange.  RS_OK with *resp filled (any HTTP
 * status), or RS_ERR_IO (connect failure, timeout, reset; resp->error
 * may say why), or RS_ERR_TOOBIG (the response passed max_response), or
 * RS_ERR_STOPPING (it saw wixapi_stopped() and cut the exchange short;
 * any failure other than RS_ERR_TOOBIG once the client is stopped is
 * taken as that).
 * *resp arrives zeroed with retry_after_s = -1; whatever the transport
 * leaves in it is released by the caller, whatever the result.  ctx
 * first.  Called from any thread.
 */
typedef enum rs_status (*wixapi_transport_fn)(void *ctx,
		    const struct wixapi_http_request *req,
		    struct wixapi_http_response *resp /* OUT */);

/* The clock seam: milliseconds on a monotonic clock, and a sleep of ms
 * milliseconds on it.  ctx first.  Called from any thread.  A seam's
 * sleep is not cut short by wixapi_stop(): the client looks at the flag
 * before and after it (the real sleep looks every 50 ms). */
typedef int64_t	(*wixapi_now_fn)(void *ctx);
typedef void	(*wixapi_sleep_fn)(void *ctx, int64_t ms);

/*
 * Options for wixapi_new().  All borrowed for the call only (strings are
 * copied).  Exactly one of the two credentials must be given.
 */
struct wixapi_options {
	const char	*api_base;	/* "https://www.wixapis.com"; http or
					   https, trailing '/' ignored */
	/* OAuth client credentials (one token per instance) ... */
	const char	*app_id;
	const char	*app_secret;	/* copied and wiped on free */
	/* ... or an API key for one site. */
	const char	*api_key;	/* copied and wiped on free */
	const char	*site_id;
	int64_t		 requests_per_minute;	/* per instance; 0: 200 */
	long		 connect_timeout_ms;	/* 0: 5000 */
	long		 timeout_ms;		/* 0: 30000 */
	size_t		 max_response;		/* 0: 8 MiB */
	int		 max_attempts;		/* 0: 8, per call */
	int64_t		 backoff_base_ms;	/* 0: 500 */
	int64_t		 backoff_max_ms;	/* 0: 60000 */
	wixapi_transport_fn transport;	/* NULL: libcurl */
	void		*transport_ctx;
	/* Test seam: the clock.  NULL: CLOCK_MONOTONIC and a real sleep.
	 * Set both or neither. */
	wixapi_now_fn	 now_ms;
	wixapi_sleep_fn	 sleep_ms;
	void		*clock_ctx;
	/* The file of the request budget shared with other processes
	 * (created mode 0600 if missing; see adapters/budget.h), or NULL:
	 * a budget private to this client. */
	const char	*budget_path;
	/* Test seam: the budget's window in ms, 1..60000; 0: 60000, Wix's
	 * minute.  Only tests set it; every client on one budget file must
	 * use the same. */
	int64_t		 budget_window_ms;
};

/*
 * RS_OK and *out (caller owns; wixapi_free()), or RS_ERR_CONFIG and a
 * message in *why (caller frees), also when the budget file cannot be
 * opened (the message names it).  Initialises libcurl once per process
 * (thread-safe) when the libcurl transport is used; the client then
 * holds one descriptor (an eventfd, for wixapi_stop()) until
 * wixapi_free().
 */
enum rs_status	wixapi_new(const struct wixapi_options *opt,
		    struct wixapi **out /* OUT */, char **why /* OUT */);
/* Wipes the secrets and tokens.  No call may be running.  NULL is fine. */
void		wixapi_free(struct wixapi *w);

/*
 * A Wix application error from a 4xx body (WIX.md §6).  Strings owned;
 * NULL when absent (a body that is not JSON leaves them all NULL but
 * http_status and request_id are still set).
 */
struct wixapi_error {
	long	 http_status;	/* 0 if no HTTP answer */
	char	*code;		/* details.applicationError.code */
	char	*description;	/* details.applicationError.description */
	char	*message;	/* top-level message */
	char	*violations;	/* validationError.fieldViolations as
				   "field: description (rule); ..." */
	char	*request_id;
	bool	 token;		/* the failure was the OAuth token
				   request's, not the call's own */
};
/* Free what e owns and zero it.  NULL is fine. */
void	wixapi_error_cleanup(struct wixapi_error *e);

/*
 * One authenticated call for instance_id (ignored, and may be NULL, in
 * API-key mode: the site has one budget), with the budget, retries and
 * token refresh described above.  path starts with '/' and is appended
 * to api_base; body is NUL-terminated JSON or NULL.  *resp and *err are
 * always initialised (emptied) first, so the caller may clean both
 * whatever the result.
 * RS_OK: a 2xx; *resp holds it (caller cleans).
 * RS_ERR_INPUT: any other final status: a 4xx other than 401/429, a 401
 *   after one refresh (or any 401 in API-key mode), a 3xx (redirects are
 *   not followed); *err filled (caller cleans).  Not retried.  Also a
 *   bad argument (no instance in OAuth mode, a bad path or method):
 *   nothing sent, err->http_status 0 (err->message says why for the
 *   instance id).
 * RS_ERR_AUTH: the token endpoint refused the credentials (any answer
 *   but a 2xx, 429 or 5xx), or answered a 2xx without a usable
 *   access_token; *err filled (err->message says why for a 2xx).
 * RS_ERR_BUSY: retries exhausted on 429/5xx/transport errors (a shared
 *   budget file that cannot be used at the moment, such as on a full
 *   disk, counts as a transport error: nothing is sent past it).
 * RS_ERR_TOOBIG: the response passed max_response (not retried);
 *   err->token is set when it was the token endpoint's answer.
 * RS_ERR_STOPPING: wixapi_stop() was called before or during the call:
 *   no (further) request is sent, a wait or a transfer under way is cut
 *   short, *resp and *err stay empty, and nothing is logged as a
 *   failure.  A request cut short mid-transfer may have reached Wix.
 *   A whole answer that arrived before the stop is returned as usual.
 */
enum rs_status	wixapi_call(struct wixapi *w, const char *instance_id,
		    const char *method, const char *path, const char *body,
		    struct wixapi_http_response *resp /* OUT */,
		    struct wixapi_error *err /* OUT */);

/* One page of Query Refunds. */
struct wixapi_page {
	struct refund	*refunds;	/* owned array of n; NULL if n == 0 */
	size_t		 n;
	char		*next_cursor;	/* owned; NULL if none (absent, null
					   or "") */
	bool		 has_next;	/* pagingMetadata.hasNext; absent:
					   false */
};
/* Free what p owns and zero it.  NULL is fine. */
void	wixapi_page_cleanup(struct wixapi_page *p);

/*
 * Query Refunds (WIX.md §4).  cursor NULL: the first page, sorted by
 * createdDate ASC, limit, and chargeId filter if charge_id is not NULL;
 * otherwise the follow-up body carries only the cursor and limit.  limit
 * is clamped to 1..100 (0 or less: 100).  The page is parsed strictly: a
 * body that is not strict JSON (such as a truncated one), a refund that
 * does not parse, or a missing refunds array is RS_ERR_INPUT (retried by
 * the caller's policy, nothing of it used; err->http_status and
 * request_id say which answer, err->message why: the parser's reason,
 * after "refund N (ID): " when a refund did not parse).  A 4xx to a request that carried a
 * cursor, whose error names the cursor (code, description, message or a
 * field violation, case-insensitive), is RS_ERR_RANGE ("cursor
 * rejected": start over; *err filled).  Otherwise as wixapi_call().
 * *out is emptied first and filled only on RS_OK (caller cleans it with
 * wixapi_page_cleanup() either way); *err as for wixapi_call().
 */
enum rs_status	wixapi_query_refunds(struct wixapi *w, const char *instance_id,
		    const char *cursor, int limit, const char *charge_id,
		    struct wixapi_page *out /* OUT */,
		    struct wixapi_error *err /* OUT */);

/*
 * Stop w, for good: every call under way returns RS_ERR_STOPPING within
 * about 50 ms (a transfer at once: its wait is woken through an
 * eventfd; a sleep within a 50 ms slice; tests/unit/check_wixapi.c
 * measures both), and every later call returns it without sending
 * anything.  An atomic exchange and a write(2): callable from any
 * thread, and from a signal handler.  Idempotent; w stays valid and is
 * still freed with wixapi_free() once no call runs.  NULL is fine.
 */
void		wixapi_stop(struct wixapi *w);
/* Has wixapi_stop() been called on w?  NULL: false. */
bool		wixapi_stopped(const struct wixapi *w);

/* HTTP requests this process has sent for instance_id (every attempt,
 * token requests included; for progress/ETA).  0 for an unknown one.
 * In API-key mode instance_id is ignored. */
uint64_t	wixapi_requests_sent(struct wixapi *w, const char *instance_id);

/*
 * Claim (claim true) or give back instance_id's backfill among the
 * processes sharing this client's budget file (budget_claim()): RS_OK,
 * RS_ERR_BUSY when another process runs it now, RS_ERR_IO (logged).
 * Without a budget file there is no one to share with: RS_OK.
 */
enum rs_status	wixapi_claim(struct wixapi *w, const char *instance_id,
		    bool claim);

#endif
