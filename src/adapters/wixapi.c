/*
 * wixapi.c: the client for Wix's REST API (WIX.md §3-6), on libcurl.
 *
 * Every call goes through one path: find the instance, get its access
 * token (OAuth mode: cached until expires_in less a margin, fetched
 * under the instance's token mutex so concurrent callers wait for one
 * fetch), take a slot in the instance's request budget, hand the request
 * to the transport, and retry 429/5xx/transport errors with capped
 * exponential backoff and full jitter (or exactly Retry-After, capped).
 * A 401 drops the token and the call is retried once with a new one.
 *
 * Key decision: the budget is a sliding-window log, not a token bucket.
 * A bucket of capacity N refilled at N/60 per second lets nearly 2N
 * requests through in some 60 s window (a full bucket emptied at the end
 * of one minute, then refilled across the next).  Here each instance
 * keeps the send times of its last N requests in a ring; a request may
 * go when the oldest of them is at least 60 s old, which bounds every
 * 60 s window to N exactly and still allows a burst of N.  Waiting for a
 * slot sleeps on the monotonic clock with no lock held.  With
 * budget_path the same log lives in a file shared by every process on
 * the host (adapters/budget.c), keyed "instance:<id>" or "site:<id>";
 * the waiting is the same.
 *
 * Secrets (the app secret, the API key and access tokens) are copied,
 * wiped before they are freed, and never logged: log lines name the
 * instance, the method and the path (without a query string), the
 * status and x-wix-request-id, never a header or a request body.  The
 * token request body is printed into a buffer sized up front, so cJSON
 * never reallocates (and leaves copies of) the secret.
 *
 * Threads: any thread may call.  The instance list has a mutex held only
 * to look up or add an instance; each instance has a mutex for its
 * budget and counters and one for its token.  libcurl handles (an easy
 * handle and the multi handle that drives it) are kept in a small pool,
 * so connections are reused between calls; one pair serves one transfer
 * at a time.
 *
 * Stopping: wixapi_stop() sets a flag of the struct wixapi and makes
 * its eventfd readable.  Every sleep (backoff, Retry-After, the budget)
 * is cut into slices of at most WIXAPI_SLICE_MS and looks at the flag
 * between them.  A transfer runs on its own multi handle, in the loop
 * curl_easy_perform() has (so libcurl times out and words its errors
 * exactly as it does there), with the eventfd among the descriptors
 * curl_multi_poll() waits on: the stop wakes it at once, whatever the
 * transfer is doing (curl_easy_perform() alone would look at a stalled
 * transfer only once a second), and the transfer is abandoned; a
 * progress callback also aborts it from inside libcurl.  A stopped
 * attempt is neither retried nor logged as a failure: the call returns
 * RS_ERR_STOPPING.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "adapters/budget.h"
#include "adapters/wixapi.h"
#include "domain/json.h"
#include "domain/refund.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION		"unknown"
#endif

#define WIXAPI_WINDOW_MS	60000	/* the budget's window */
#define WIXAPI_DEF_RPM		200
#define WIXAPI_MAX_RPM		100000
#define WIXAPI_DEF_CONNECT_MS	5000
#define WIXAPI_DEF_TIMEOUT_MS	30000
#define WIXAPI_DEF_MAX_RESPONSE	((size_t)8 * 1024 * 1024)
#define WIXAPI_DEF_ATTEMPTS	8
#define WIXAPI_MAX_ATTEMPTS	100
#define WIXAPI_DEF_BASE_MS	500
#define WIXAPI_DEF_MAX_MS	60000
#define WIXAPI_MAX_LIMIT	100	/* Query Refunds page size */
/* Refresh a token expires_in / 10 early, but never more than 5 min. */
#define WIXAPI_TOKEN_MARGIN_S	300
/* expires_in when Wix leaves it out (it documents 4 h). */
#define WIXAPI_DEF_EXPIRES_S	3600
#define WIXAPI_MAX_EXPIRES_S	(7 * 86400)
#define WIXAPI_MAX_TOKEN	8192	/* bytes of an access token */
#define WIXAPI_MAX_ID		256	/* an instance or site id */
#define WIXAPI_MAX_PATH		2048
#define WIXAPI_MAX_REQUEST_ID	128	/* kept of x-wix-request-id */
#define WIXAPI_MAX_VIOLATIONS	4096	/* bytes of the violations text */
#define WIXAPI_MAX_BAD_ID	64	/* bytes of a bad refund's id shown */
#define WIXAPI_POOL_MAX		16	/* idle curl handles kept */
#define WIXAPI_SLICE_MS		50	/* a sleep looks at stop this often */
#define WIXAPI_POLL_MS		1000	/* curl_easy_perform()'s wait */
#define WIXAPI_TOKEN_PATH	"/oauth2/token"
#define WIXAPI_QUERY_PATH	"/payments/refunds/v1/refunds/query"
#define WIXAPI_USER_AGENT	"refundsync/" PACKAGE_VERSION

/* "instance:<id>" and "site:<id>" fit a shared budget's ids. */
_Static_assert(WIXAPI_MAX_ID + 9 <= BUDGET_ID_MAX, "budget id too short");

/* A transfer handle: an easy handle and the multi handle that drives it
 * (whose connection cache keeps the connections between calls). */
struct wixapi_conn {
	CURL	*h;
	CURLM	*m;
};

/* One app instance (or, in API-key mode, the one site). */
struct wixapi_inst {
	struct wixapi_inst	*next;
	char			*id;		/* "" in API-key mode */
	char			*label;		/* "instance X" / "site Y" */
	pthread_mutex_t		 tok_mu;	/* the token fields */
	char			*token;		/* secret, or NULL */
	int64_t			 token_exp;	/* monotonic ms: stale from */
	uint64_t		 token_gen;	/* +1 per new token */
	pthread_mutex_t		 mu;		/* the budget and counter */
	char			*bkey;		/* id in the shared budget */
	int64_t			*sent;		/* ring of rpm send times, or
						   NULL with a shared budget */
	size_t			 nsent;		/* slots used, up to rpm */
	size_t			 oldest;	/* ring index, once full */
	uint64_t		 requests;	/* requests sent */
};

struct wixapi {
	char			*base;		/* api_base, no trailing '/' */
	char			*app_id;
	char			*app_secret;	/* secret */
	char			*api_key;	/* secret */
	char			*site_id;
	bool			 oauth;
	size_t			 rpm;
	int64_t			 window_ms;	/* the budget's */
	struct budget		*budget;	/* shared, or NULL */
	long			 connect_ms;
	long			 timeout_ms;
	size_t			 max_response;
	int			 max_attempts;
	int64_t			 base_ms;
	int64_t			 max_ms;
	wixapi_transport_fn	 transport;
	void			*transport_ctx;
	wixapi_now_fn		 now_fn;
	wixapi_sleep_fn		 sleep_fn;	/* NULL: real_sleep() */
	void			*clock_ctx;
	atomic_bool		 stop;		/* wixapi_stop() was called */
	int			 stop_fd;	/* eventfd, readable once
						   stopped; -1 without
						   libcurl */
	_Atomic uint64_t	 rng;		/* splitmix64 state (jitter) */
	pthread_mutex_t		 mu;		/* insts */
	struct wixapi_inst	*insts;
	struct wixapi_inst	*key_inst;	/* API-key mode only */
	pthread_mutex_t		 pool_mu;	/* pool, npool */
	struct wixapi_conn	 pool[WIXAPI_POOL_MAX];
	size_t			 npool;
};

/* ---- small helpers ---------------------------------------------------- */

static pthread_once_t	curl_once = PTHREAD_ONCE_INIT;
static CURLcode		curl_init_rc = CURLE_FAILED_INIT;

static void
curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t
real_now(void *ctx)
{
	(void)ctx;
	return clock_mono_ms();
}

/*
 * Sleep ms on CLOCK_MONOTONIC, or until *stop is set.  The wait is cut
 * into slices of at most WIXAPI_SLICE_MS, each to an absolute time on
 * the monotonic clock and all judged against one deadline, so the
 * slices never add up to more (or less) than ms, a signal (EINTR)
 * never shortens the wait, and a stop is seen within a slice.
 */
static void
real_sleep(const atomic_bool *stop, int64_t ms)
{
	struct timespec ts;
	int64_t end, left;
	bool relative = false;
	int rc;

	end = clock_mono_ms() + ms;
	while (!atomic_load(stop) && (left = end - clock_mono_ms()) > 0) {
		if (left > WIXAPI_SLICE_MS)
			left = WIXAPI_SLICE_MS;
		if (!relative) {
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += (long)left * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			while ((rc = clock_nanosleep(CLOCK_MONOTONIC,
			    TIMER_ABSTIME, &ts, NULL)) == EINTR)
				continue;
			if (rc == 0)
				continue;
			/*
			 * Refused (libfaketime's wrapper answers EINVAL when
			 * it leaves CLOCK_MONOTONIC alone): never skip the
			 * wait, sleep relative slices up to the same
			 * monotonic deadline.
			 */
			relative = true;
		}
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left * 1000000L;
		(void)nanosleep(&ts, NULL);
	}
}

static int64_t
w_now(struct wixapi *w)
{
	return w->now_fn(w->clock_ctx);
}

/* Sleep ms, or less if wixapi_stop() comes first.  false: stopped
 * (before or during the sleep). */
static bool
w_sleep(struct wixapi *w, int64_t ms)
{
	if (atomic_load(&w->stop))
		return false;
	if (ms > 0) {
		if (w->sleep_fn != NULL)
			w->sleep_fn(w->clock_ctx, ms);
		else
			real_sleep(&w->stop, ms);
	}
	return !atomic_load(&w->stop);
}

/* splitmix64: good enough for jitter, lock-free across threads. */
static uint64_t
w_random(struct wixapi *w)
{
	uint64_t z;

	z = atomic_fetch_add(&w->rng, 0x9e3779b97f4a7c15ULL) +
	    0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Non-empty, at most max bytes, every byte printable ASCII but space:
 * safe to put in a header line. */
static bool
header_safe(const char *s, size_t max)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return false;
	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

/* Non-empty, at most max bytes, no control bytes: safe to log. */
static bool
text_safe(const char *s, size_t max)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return false;
	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

static const char *
str_or(const char *s, const char *dflt)
{
	return s != NULL ? s : dflt;
}

static bool
status_2xx(long status)
{
	return status >= 200 && status <= 299;
}

/* Statuses worth another attempt (WIX.md §6). */
static bool
status_retried(long status)
{
	return status == 429 || status == 500 || status == 502 ||
	    status == 503 || status == 504;
}

static void
resp_init(struct wixapi_http_response *r)
{
	memset(r, 0, sizeof(*r));
	r->retry_after_s = -1;
}

void
wixapi_http_response_cleanup(struct wixapi_http_response *r)
{
	if (r == NULL)
		return;
	free(r->body);
	free(r->request_id);
	free(r->error);
	resp_init(r);
}

void
wixapi_error_cleanup(struct wixapi_error *e)
{
	if (e == NULL)
		return;
	free(e->code);
	free(e->description);
	free(e->message);
	free(e->violations);
	free(e->request_id);
	memset(e, 0, sizeof(*e));
}

void
wixapi_page_cleanup(struct wixapi_page *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->n; i++)
		refund_cleanup(&p->refunds[i]);
	free(p->refunds);
	free(p->next_cursor);
	memset(p, 0, sizeof(*p));
}

/* ---- the libcurl transport -------------------------------------------- */

/* What one transfer collects. */
struct xfer {
	struct buf	 body;		/* capped at max_response */
	bool		 toobig;	/* the write callback refused */
	char		*request_id;	/* x-wix-request-id, cleaned */
	int64_t		 retry_after_s;	/* -1: absent */
};

static size_t
xfer_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nmemb;

	/* Returning less than len makes libcurl stop: CURLE_WRITE_ERROR. */
	if (buf_append(&x->body, data, len) != RS_OK) {
		x->toobig = true;
		return 0;
	}
	return len;
}

/* A copy of len bytes at s, at most max of them, with every byte that is
 * not printable ASCII replaced: it goes into log lines.  NULL if empty. */
static char *
clean_copy(const char *s, size_t len, size_t max)
{
	char *c;
	size_t i;

	if (len == 0)
		return NULL;
	if (len > max)
		len = max;
	c = xmalloc(len + 1);
	for (i = 0; i < len; i++)
		c[i] = (char)(s[i] >= 0x21 && s[i] <= 0x7e ? s[i] : '?');
	c[len] = '\0';
	return c;
}

/*
 * Retry-After is delta-seconds or an HTTP date (RFC 9110 §10.2.3).  Parsed
 * here rather than read from CURLINFO_RETRY_AFTER, which is 0 both when
 * the header is absent and when it is garbage, and negative (on 7.88)
 * for a date in the past.  Returns seconds >= 0, or -1 if unusable.
 */
static int64_t
retry_after_parse(const char *v, size_t len)
{
	char tmp[64];
	int64_t n;
	time_t t, now;
	size_t i;

	if (len == 0 || len >= sizeof(tmp))
		return -1;
	memcpy(tmp, v, len);
	tmp[len] = '\0';
	for (i = 0; i < len; i++)
		if (tmp[i] < '0' || tmp[i] > '9')
			break;
	if (i == len) {
		/* Huge values are capped by the caller anyway. */
		if (len > 9)
			return INT32_MAX;
		while (len > 1 && tmp[0] == '0')
			memmove(tmp, tmp + 1, len--);
		if (strnum_i64(tmp, 0, INT32_MAX, &n) != NULL)
			return -1;
		return n;
	}
	if ((t = curl_getdate(tmp, NULL)) == -1)
		return -1;
	now = time(NULL);
	return t <= now ? 0 : (int64_t)(t - now);
}

/* libcurl's progress callback, called often during a transfer (connect
 * and TLS included): non-zero aborts it, CURLE_ABORTED_BY_CALLBACK. */
static int
xfer_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct wixapi *w = arg;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return atomic_load(&w->stop) ? 1 : 0;
}

static size_t
xfer_header(char *data, size_t size, size_t nmemb, void *arg)
{
	static const char rid[] = "x-wix-request-id";
	static const char ra[] = "retry-after";
	struct xfer *x = arg;
	size_t len = size * nmemb, nlen;
	const char *colon, *v, *end;

	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		/* A new response (after a 1xx): forget the last one. */
		free(x->request_id);
		x->request_id = NULL;
		x->retry_after_s = -1;
		return len;
	}
	if ((colon = memchr(data, ':', len)) == NULL)
		return len;
	nlen = (size_t)(colon - data);
	v = colon + 1;
	end = data + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
	    end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (nlen == sizeof(rid) - 1 && strncasecmp(data, rid, nlen) == 0) {
		free(x->request_id);
		x->request_id = clean_copy(v, (size_t)(end - v),
		    WIXAPI_MAX_REQUEST_ID);
	} else if (nlen == sizeof(ra) - 1 && strncasecmp(data, ra, nlen) == 0)
		x->retry_after_s = retry_after_parse(v, (size_t)(end - v));
	return len;
}

static void
conn_cleanup(struct wixapi_conn *c)
{
	if (c->m != NULL)
		curl_multi_cleanup(c->m);
	if (c->h != NULL)
		curl_easy_cleanup(c->h);
	c->m = NULL;
	c->h = NULL;
}

/* A transfer handle from the pool, or a new one.  false if libcurl
 * cannot make one. */
static bool
pool_get(struct wixapi *w, struct wixapi_conn *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_lock(&w->pool_mu);
	if (w->npool > 0)
		*c = w->pool[--w->npool];
	pthread_mutex_unlock(&w->pool_mu);
	if (c->h != NULL)
		return true;
	c->h = curl_easy_init();
	c->m = curl_multi_init();
	if (c->h == NULL || c->m == NULL) {
		conn_cleanup(c);
		return false;
	}
	return true;
}

/* Keeps the handle's connections for the next call.  c->h is not in
 * c->m any more. */
static void
pool_put(struct wixapi *w, struct wixapi_conn *c)
{
	if (c->h == NULL)
		return;
	curl_easy_reset(c->h);
	pthread_mutex_lock(&w->pool_mu);
	if (w->npool < WIXAPI_POOL_MAX) {
		w->pool[w->npool++] = *c;
		memset(c, 0, sizeof(*c));
	}
	pthread_mutex_unlock(&w->pool_mu);
	conn_cleanup(c);
}

/*
 * Run the transfer set up on c->h to its end, on c->m: the loop of
 * curl_easy_perform() (libcurl 7.88's easy_transfer(): wait up to a
 * second, then perform), so timeouts fire and read as they do there,
 * with the stop's eventfd among the descriptors waited on, so a stop
 * wakes the wait at once, and ends the transfer.  The progress callback
 * cuts it short from inside libcurl too.  CURLE_ABORTED_BY_CALLBACK
 * once stopped; otherwise the transfer's result, with errbuf filled by
 * libcurl or here.
 */
static CURLcode
xfer_perform(struct wixapi *w, struct wixapi_conn *c, char *errbuf)
{
	struct curl_waitfd wfd;
	CURLMcode mc;
	CURLMsg *msg;
	CURLcode rc = CURLE_OK;
	int running = 1, left;
	bool done = false;

	memset(&wfd, 0, sizeof(wfd));
	wfd.fd = w->stop_fd;
	wfd.events = CURL_WAIT_POLLIN;
	if ((mc = curl_multi_add_handle(c->m, c->h)) != CURLM_OK) {
		snprintf(errbuf, CURL_ERROR_SIZE, "curl_multi_add_handle: %s",
		    curl_multi_strerror(mc));
		return CURLE_FAILED_INIT;
	}
	for (;;) {
		if ((mc = curl_multi_poll(c->m, &wfd, w->stop_fd >= 0 ? 1 : 0,
		    WIXAPI_POLL_MS, NULL)) != CURLM_OK)
			break;
		if (atomic_load(&w->stop)) {
			rc = CURLE_ABORTED_BY_CALLBACK;
			done = true;
			break;
		}
		if ((mc = curl_multi_perform(c->m, &running)) != CURLM_OK)
			break;
		while ((msg = curl_multi_info_read(c->m, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE &&
			    msg->easy_handle == c->h) {
				rc = msg->data.result;
				done = true;
			}
		if (done || running == 0)
			break;
	}
	(void)curl_multi_remove_handle(c->m, c->h);
	if (done)
		return rc;
	if (mc != CURLM_OK)
		snprintf(errbuf, CURL_ERROR_SIZE, "curl_multi: %s",
		    curl_multi_strerror(mc));
	else
		snprintf(errbuf, CURL_ERROR_SIZE, "the transfer ended without "
		    "a result");
	return CURLE_FAILED_INIT;
}

static void
slist_wipe_free(struct curl_slist *l)
{
	struct curl_slist *p;

	for (p = l; p != NULL; p = p->next)
		explicit_bzero(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

/* Options common to every transfer; the method's come after. */
static CURLcode
xfer_setopts(CURL *h, struct wixapi *w, const struct wixapi_http_request *req,
    struct curl_slist *hl, struct xfer *x, char *errbuf)
{
	CURLcode rc;

	if ((rc = curl_easy_setopt(h, CURLOPT_URL, req->url)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR,
	    "http,https")) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	    req->connect_timeout_ms)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
	    req->timeout_ms)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t)req->max_response)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, xfer_write)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_WRITEDATA, x)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, xfer_header)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_HEADERDATA, x)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_USERAGENT,
	    WIXAPI_USER_AGENT)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION,
	    xfer_progress)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_XFERINFODATA, w)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L)) != CURLE_OK)
		return rc;
	if (strcmp(req->method, "GET") == 0)
		return curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	if (strcmp(req->method, "POST") == 0)
		rc = curl_easy_setopt(h, CURLOPT_POST, 1L);
	else
		rc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	if (rc == CURLE_OK && (req->body != NULL ||
	    strcmp(req->method, "POST") == 0)) {
		if ((rc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)(req->body != NULL ? req->body_len : 0))) ==
		    CURLE_OK)
			rc = curl_easy_setopt(h, CURLOPT_POSTFIELDS,
			    req->body != NULL ? req->body : "");
	}
	return rc;
}

static enum rs_status
curl_transport(void *ctx, const struct wixapi_http_request *req,
    struct wixapi_http_response *resp)
{
	struct wixapi *w = ctx;
	struct curl_slist *hl = NULL, *tmp;
	char errbuf[CURL_ERROR_SIZE];
	struct wixapi_conn c;
	struct xfer x;
	CURLcode rc;
	long status = 0;
	enum rs_status st = RS_ERR_IO;
	size_t i;

	memset(&x, 0, sizeof(x));
	buf_init(&x.body, req->max_response);
	x.retry_after_s = -1;
	errbuf[0] = '\0';
	if (!pool_get(w, &c)) {
		resp->error = xstrdup("curl_easy_init failed");
		goto out;
	}
	for (i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
		if ((tmp = curl_slist_append(hl, req->headers[i])) == NULL)
			goto nomem;
		hl = tmp;
	}
	/* No "Expect: 100-continue" round trip for larger bodies. */
	if ((tmp = curl_slist_append(hl, "Expect:")) == NULL)
		goto nomem;
	hl = tmp;
	if ((rc = xfer_setopts(c.h, w, req, hl, &x, errbuf)) != CURLE_OK) {
		resp->error = xasprintf("curl_easy_setopt: %s",
		    curl_easy_strerror(rc));
		goto out;
	}
	rc = xfer_perform(w, &c, errbuf);
	if (rc == CURLE_ABORTED_BY_CALLBACK) {
		/* xfer_progress(): wixapi_stop(). */
		resp->error = xstrdup("stopped");
		st = RS_ERR_STOPPING;
		goto out;
	}
	if (x.toobig || rc == CURLE_FILESIZE_EXCEEDED) {
		st = RS_ERR_TOOBIG;
		goto out;
	}
	if (rc != CURLE_OK) {
		resp->error = xasprintf("%s", errbuf[0] != '\0' ? errbuf :
		    curl_easy_strerror(rc));
		goto out;
	}
	if (curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &status) !=
	    CURLE_OK || status == 0) {
		resp->error = xstrdup("no HTTP status");
		goto out;
	}
	resp->status = status;
	resp->body = buf_detach(&x.body, &resp->body_len);
	if (resp->body == NULL) {
		resp->body = xstrdup("");
		resp->body_len = 0;
	}
	resp->request_id = x.request_id;
	x.request_id = NULL;
	resp->retry_after_s = x.retry_after_s;
	st = RS_OK;
	goto out;
nomem:
	resp->error = xstrdup("curl_slist_append failed");
out:
	slist_wipe_free(hl);
	pool_put(w, &c);
	buf_cleanup(&x.body);
	free(x.request_id);
	return st;
}

/* ---- instances, the budget and backoff -------------------------------- */

static struct wixapi_inst *
inst_new(struct wixapi *w, const char *id)
{
	struct wixapi_inst *in;

	in = xcalloc(1, sizeof(*in));
	in->id = xstrdup(id);
	if (id[0] != '\0') {
		in->label = xasprintf("instance %s", id);
		in->bkey = xasprintf("instance:%s", id);
	} else {
		in->label = xasprintf("site %s", w->site_id);
		in->bkey = xasprintf("site:%s", w->site_id);
	}
	if (w->budget == NULL)
		in->sent = xcalloc(w->rpm, sizeof(*in->sent));
	if (pthread_mutex_init(&in->tok_mu, NULL) != 0 ||
	    pthread_mutex_init(&in->mu, NULL) != 0)
		fatalx("%s: pthread_mutex_init failed", __func__);
	return in;
}

static void
inst_free(struct wixapi_inst *in)
{
	if (in == NULL)
		return;
	freezero_str(in->token);
	pthread_mutex_destroy(&in->tok_mu);
	pthread_mutex_destroy(&in->mu);
	free(in->sent);
	free(in->bkey);
	free(in->label);
	free(in->id);
	free(in);
}

/* The instance for id, added if create.  API-key mode: always the site.
 * Instances live until wixapi_free(), so the pointer stays valid. */
static struct wixapi_inst *
inst_get(struct wixapi *w, const char *id, bool create)
{
	struct wixapi_inst *in;

	if (w->key_inst != NULL)
		return w->key_inst;
	pthread_mutex_lock(&w->mu);
	for (in = w->insts; in != NULL; in = in->next)
		if (strcmp(in->id, id) == 0)
			break;
	if (in == NULL && create) {
		in = inst_new(w, id);
		in->next = w->insts;
		w->insts = in;
	}
	pthread_mutex_unlock(&w->mu);
	return in;
}

/*
 * Try the private ring: at most rpm requests in any window of window_ms.
 * The ring holds the times of the last rpm requests; a request may go
 * once the slot it replaces is a whole window old.  0 and *slot: taken.
 * Otherwise the ms to wait.
 */
static int64_t
ring_try_take(struct wixapi *w, struct wixapi_inst *in, size_t *slot)
{
	int64_t now, wait = 0;

	pthread_mutex_lock(&in->mu);
	now = w_now(w);
	if (in->nsent < w->rpm) {
		*slot = in->nsent;
		in->sent[in->nsent++] = now;
	} else if ((wait = in->sent[in->oldest] + w->window_ms - now) <= 0) {
		wait = 0;
		*slot = in->oldest;
		in->sent[in->oldest] = now;
		in->oldest = (in->oldest + 1) % w->rpm;
	}
	pthread_mutex_unlock(&in->mu);
	return wait;
}

/*
 * Take a slot in in's budget, the shared one (budget_path) or the
 * private ring.  Sleeps with no lock held, then looks again (another
 * thread or process may have taken the slot).  RS_OK and *slot, for
 * inst_done(); RS_ERR_IO when the shared budget cannot be used (logged
 * by it; nothing was taken); RS_ERR_STOPPING when wixapi_stop() ends
 * the wait (nothing was taken).
 */
static enum rs_status
inst_take(struct wixapi *w, struct wixapi_inst *in, size_t *slot)
{
	enum rs_status st;
	int64_t wait;

	for (;;) {
		if (w->budget != NULL) {
			st = budget_try_take(w->budget, in->bkey, &wait, slot);
			if (st != RS_OK)
				return st;
		} else
			wait = ring_try_take(w, in, slot);
		if (wait == 0)
			break;
		if (log_enabled(LOG_LVL_DEBUG))
			log_debug("wixapi: %s: %zu requests in the last "
			    "minute, waiting %lld ms", in->label, w->rpm,
			    (long long)wait);
		if (!w_sleep(w, wait))
			return RS_ERR_STOPPING;
	}
	pthread_mutex_lock(&in->mu);
	in->requests++;
	pthread_mutex_unlock(&in->mu);
	return RS_OK;
}

/*
 * The request of slot has its answer: count it from now on.  Wix counts
 * a request when it arrives, which is some time after we send it; with
 * the send time, a request a full window after another by our clock
 * could arrive a few ms inside Wix's window and get a 429 (the
 * benchmark saw one per minute boundary).  The answer's time is never
 * earlier than the arrival, so counting from it never overruns.  The
 * ring need not stay sorted for that: a slot is only reused once its
 * own time is a window old.  The shared budget does the same.
 */
static void
inst_done(struct wixapi *w, struct wixapi_inst *in, size_t slot)
{
	int64_t now;

	if (w->budget != NULL) {
		budget_done(w->budget, in->bkey, slot);
		return;
	}
	pthread_mutex_lock(&in->mu);
	now = w_now(w);
	if (in->sent[slot] < now)
		in->sent[slot] = now;
	pthread_mutex_unlock(&in->mu);
}

/*
 * How long to wait before attempt + 1.  Retry-After when given (clamped
 * to 0 .. backoff_max), else full jitter: uniform in
 * [0, min(backoff_max, backoff_base * 2^(attempt - 1))].
 */
static int64_t
backoff_ms(struct wixapi *w, int attempt, int64_t retry_after_s)
{
	int64_t cap;
	int i;

	if (retry_after_s != -1) {
		if (retry_after_s <= 0)
			return 0;
		/* Compared in seconds, so a huge value cannot overflow. */
		if (retry_after_s > w->max_ms / 1000)
			return w->max_ms;
		return retry_after_s * 1000;
	}
	cap = w->base_ms;
	for (i = 1; i < attempt && cap < w->max_ms; i++)
		cap = cap > w->max_ms / 2 ? w->max_ms : cap * 2;
	if (cap > w->max_ms)
		cap = w->max_ms;
	return (int64_t)(w_random(w) % ((uint64_t)cap + 1));
}

/* ---- sending ---------------------------------------------------------- */

/*
 * One exchange, counted against in's budget.  RS_ERR_STOPPING (resp
 * empty) if wixapi_stop() came before it was sent, or cut it short; a
 * whole answer that arrived is kept even if a stop came meanwhile.
 */
static enum rs_status
send_once(struct wixapi *w, struct wixapi_inst *in,
    const struct wixapi_http_request *req, struct wixapi_http_response *resp)
{
	enum rs_status st;
	size_t slot;

	resp_init(resp);
	if (atomic_load(&w->stop))
		return RS_ERR_STOPPING;
	if ((st = inst_take(w, in, &slot)) != RS_OK) {
		if (st == RS_ERR_STOPPING)
			return st;
		/* Never send past a budget we cannot read: retried like a
		 * transport error. */
		resp->error = xasprintf("request budget %s unusable",
		    budget_path(w->budget));
		return RS_ERR_IO;
	}
	st = w->transport(w->transport_ctx, req, resp);
	inst_done(w, in, slot);
	if (st != RS_OK && st != RS_ERR_TOOBIG && atomic_load(&w->stop)) {
		/* Cut short by the stop (or failed as it came): no answer,
		 * and nothing to retry or report. */
		wixapi_http_response_cleanup(resp);
		return RS_ERR_STOPPING;
	}
	if (st != RS_OK && st != RS_ERR_TOOBIG)
		st = RS_ERR_IO;
	if (st == RS_OK && (resp->status < 100 || resp->status > 599)) {
		free(resp->error);
		resp->error = xasprintf("bad HTTP status %ld", resp->status);
		st = RS_ERR_IO;
	}
	if (st == RS_OK && resp->body == NULL) {
		resp->body = xstrdup("");
		resp->body_len = 0;
	}
	return st;
}

/*
 * Send req until an answer that is not retried.  RS_OK with *resp (any
 * status but one of status_retried()), RS_ERR_TOOBIG, RS_ERR_BUSY once
 * max_attempts are spent, or RS_ERR_STOPPING (resp empty) once
 * wixapi_stop() is called: no further attempt, no backoff, and no
 * failure logged for it.  Logs each failed attempt.  what is
 * "METHOD /path" with no query string.
 */
static enum rs_status
send_retry(struct wixapi *w, struct wixapi_inst *in,
    const struct wixapi_http_request *req, const char *what,
    struct wixapi_http_response *resp)
{
	char why[160];
	enum rs_status st;
	int64_t wait;
	int attempt;

	for (attempt = 1;; attempt++) {
		st = send_once(w, in, req, resp);
		if (st == RS_ERR_STOPPING)
			goto stopped;
		if (st == RS_ERR_TOOBIG) {
			log_warnx("wixapi: %s: %s: response over %zu bytes, "
			    "dropped", in->label, what, req->max_response);
			wixapi_http_response_cleanup(resp);
			return RS_ERR_TOOBIG;
		}
		if (st == RS_OK && !status_retried(resp->status))
			return RS_OK;
		if (atomic_load(&w->stop))
			goto stopped;
		if (st == RS_OK)
			snprintf(why, sizeof(why), "HTTP %ld", resp->status);
		else
			snprintf(why, sizeof(why), "%s",
			    str_or(resp->error, "transport error"));
		if (attempt >= w->max_attempts) {
			log_warnx("wixapi: %s: %s: %s (request id %s): "
			    "attempt %d of %d, giving up", in->label, what,
			    why, str_or(resp->request_id, "none"), attempt,
			    w->max_attempts);
			wixapi_http_response_cleanup(resp);
			return RS_ERR_BUSY;
		}
		wait = backoff_ms(w, attempt,
		    st == RS_OK ? resp->retry_after_s : -1);
		log_warnx("wixapi: %s: %s: %s (request id %s): attempt %d "
		    "of %d, retrying in %lld ms%s", in->label, what, why,
		    str_or(resp->request_id, "none"), attempt,
		    w->max_attempts, (long long)wait,
		    st == RS_OK && resp->retry_after_s != -1 ?
		    " (Retry-After)" : "");
		wixapi_http_response_cleanup(resp);
		if (!w_sleep(w, wait))
			goto stopped;
	}
stopped:
	wixapi_http_response_cleanup(resp);
	if (log_enabled(LOG_LVL_DEBUG))
		log_debug("wixapi: %s: %s: stopped at attempt %d", in->label,
		    what, attempt);
	return RS_ERR_STOPPING;
}

/* ---- errors ----------------------------------------------------------- */

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

/* "field: description (rule); ..." of validationError.fieldViolations. */
static char *
violations_text(const cJSON *arr)
{
	const cJSON *fv;
	const char *field, *desc, *rule;
	struct buf b;

	buf_init(&b, WIXAPI_MAX_VIOLATIONS);
	cJSON_ArrayForEach(fv, arr) {
		if (!cJSON_IsObject(fv))
			continue;
		field = json_get_string(fv, "field");
		desc = json_get_string(fv, "description");
		rule = json_get_string(fv, "violatedRule");
		/* Past the ceiling a part is left out; what fits stays. */
		(void)buf_printf(&b, "%s%s%s%s%s%s%s", b.len > 0 ? "; " : "",
		    str_or(field, "?"), desc != NULL ? ": " : "",
		    str_or(desc, ""), rule != NULL ? " (" : "",
		    str_or(rule, ""), rule != NULL ? ")" : "");
	}
	return buf_detach(&b, NULL);
}

/* Fill e from an answer that is not a 2xx (WIX.md §6).  A body that is
 * not a JSON object leaves the strings NULL. */
static void
error_fill(const struct wixapi_http_response *r, struct wixapi_error *e)
{
	const cJSON *details, *app, *val, *arr;
	const char *why;
	cJSON *root = NULL;

	wixapi_error_cleanup(e);
	e->http_status = r->status;
	e->request_id = dup_or_null(r->request_id);
	if (r->body == NULL || json_parse_strict(r->body, r->body_len,
	    JSON_MAX_DEPTH, &root, &why) != RS_OK)
		return;
	e->message = dup_or_null(json_get_string(root, "message"));
	details = json_get_object(root, "details");
	app = json_get_object(details, "applicationError");
	e->code = dup_or_null(json_get_string(app, "code"));
	e->description = dup_or_null(json_get_string(app, "description"));
	val = json_get_object(details, "validationError");
	if ((arr = json_get_array(val, "fieldViolations")) != NULL &&
	    cJSON_GetArraySize(arr) > 0)
		e->violations = violations_text(arr);
	cJSON_Delete(root);
}

/* ---- the OAuth token -------------------------------------------------- */

/* Wipe the string value of member key of obj, if any. */
static void
json_wipe_member(cJSON *obj, const char *key)
{
	cJSON *item;

	item = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (cJSON_IsString(item) && item->valuestring != NULL)
		explicit_bzero(item->valuestring, strlen(item->valuestring));
}

/*
 * The client-credentials body, in a buffer of *cap bytes (caller wipes it
 * with freezero(body, *cap)).  Printed into a buffer sized for the worst
 * case (every byte escaped as \uXXXX), so nothing is reallocated.
 */
static char *
token_body(struct wixapi *w, const char *instance, size_t *cap)
{
	cJSON *root;
	char *body;

	*cap = 128 + 6 * (strlen(w->app_id) + strlen(w->app_secret) +
	    strlen(instance));
	body = xcalloc(1, *cap);
	root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "grant_type", "client_credentials");
	cJSON_AddStringToObject(root, "client_id", w->app_id);
	cJSON_AddStringToObject(root, "client_secret", w->app_secret);
	cJSON_AddStringToObject(root, "instance_id", instance);
	if (!cJSON_PrintPreallocated(root, body, (int)*cap, 0))
		RS_PANIC("token body does not fit its buffer");
	json_wipe_member(root, "client_secret");
	cJSON_Delete(root);
	return body;
}

/*
 * Ask the token endpoint for a new access token for in.  RS_OK with *tok
 * (a secret: caller wipes it) and *expires_s; RS_ERR_AUTH (refused, or a
 * 2xx without a usable token; *err filled); RS_ERR_BUSY; RS_ERR_TOOBIG.
 */
static enum rs_status
token_fetch(struct wixapi *w, struct wixapi_inst *in, char **tok,
    int64_t *expires_s, struct wixapi_error *err)
{
	static const char *const hdrs[] = {
		"Content-Type: application/json",
		"Accept: application/json",
		NULL
	};
	struct wixapi_http_request req;
	struct wixapi_http_response resp;
	const char *why = NULL, *t;
	cJSON *root = NULL;
	char *body = NULL, *url = NULL;
	size_t cap = 0;
	int64_t exp = WIXAPI_DEF_EXPIRES_S;
	enum rs_status st, rc;

	resp_init(&resp);
	body = token_body(w, in->id, &cap);
	url = xasprintf("%s%s", w->base, WIXAPI_TOKEN_PATH);
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.url = url;
	req.body = body;
	req.body_len = strlen(body);
	req.headers = hdrs;
	req.connect_timeout_ms = w->connect_ms;
	req.timeout_ms = w->timeout_ms;
	req.max_response = w->max_response;
	st = send_retry(w, in, &req, "POST " WIXAPI_TOKEN_PATH, &resp);
	if (st != RS_OK)
		goto out;
	if (resp.status >= 300 && resp.status <= 399) {
		/* Not the credentials: api_base points at the wrong place
		 * (http for https, another host).  Never followed, so the
		 * secret goes nowhere else. */
		error_fill(&resp, err);
		log_warnx("wixapi: %s: the token endpoint answered a redirect "
		    "(HTTP %ld, request id %s), not followed; check api_base",
		    in->label, resp.status, str_or(resp.request_id, "none"));
		st = RS_ERR_AUTH;
		goto out;
	}
	if (!status_2xx(resp.status)) {
		error_fill(&resp, err);
		log_warnx("wixapi: %s: the token endpoint refused the app "
		    "credentials: HTTP %ld%s%s (request id %s); check app_id, "
		    "app_secret and that the app is installed on the instance",
		    in->label, resp.status, err->code != NULL ? " " : "",
		    str_or(err->code, ""), str_or(resp.request_id, "none"));
		st = RS_ERR_AUTH;
		goto out;
	}
	st = RS_ERR_AUTH;
	if (json_parse_strict(resp.body, resp.body_len, JSON_MAX_DEPTH, &root,
	    &why) != RS_OK)
		goto bad;
	t = json_get_string(root, "access_token");
	if (!header_safe(t, WIXAPI_MAX_TOKEN)) {
		why = "no usable access_token";
		goto bad;
	}
	rc = json_get_int64(root, "expires_in", &exp);
	if (rc == RS_ERR_NOTFOUND)
		exp = WIXAPI_DEF_EXPIRES_S;
	else if (rc != RS_OK || exp <= 0 || exp > WIXAPI_MAX_EXPIRES_S) {
		why = "bad expires_in";
		goto bad;
	}
	*tok = xstrdup(t);
	*expires_s = exp;
	st = RS_OK;
	goto out;
bad:
	wixapi_error_cleanup(err);
	err->http_status = resp.status;
	err->request_id = dup_or_null(resp.request_id);
	err->message = xstrdup(why);
	log_warnx("wixapi: %s: the token endpoint answered HTTP %ld without "
	    "a usable token: %s (request id %s)", in->label, resp.status,
	    why, str_or(resp.request_id, "none"));
out:
	/* So that a caller's message can tell this answer from its own
	 * call's (an oversized token answer is no oversized page). */
	if (st != RS_OK && st != RS_ERR_STOPPING)
		err->token = true;
	if (root != NULL) {
		json_wipe_member(root, "access_token");
		cJSON_Delete(root);
	}
	if (resp.body != NULL)
		explicit_bzero(resp.body, resp.body_len);
	wixapi_http_response_cleanup(&resp);
	freezero(body, cap);
	free(url);
	return st;
}

/*
 * A valid token for in: the cached one, or a new one.  The token mutex is
 * held across a fetch, so callers of one instance wait for a single
 * fetch.  RS_OK with *tok (caller wipes with freezero_str()) and *gen
 * (for token_drop()); else as token_fetch().
 */
static enum rs_status
token_get(struct wixapi *w, struct wixapi_inst *in, char **tok,
    uint64_t *gen, struct wixapi_error *err)
{
	enum rs_status st = RS_OK;
	int64_t t0, exp_s = 0, margin_s;
	char *t = NULL;

	pthread_mutex_lock(&in->tok_mu);
	if (in->token != NULL && w_now(w) < in->token_exp)
		goto have;
	freezero_str(in->token);
	in->token = NULL;
	/* Counted from before the request: the token may be older. */
	t0 = w_now(w);
	if ((st = token_fetch(w, in, &t, &exp_s, err)) != RS_OK)
		goto out;
	margin_s = exp_s / 10;
	if (margin_s > WIXAPI_TOKEN_MARGIN_S)
		margin_s = WIXAPI_TOKEN_MARGIN_S;
	in->token = t;
	in->token_exp = t0 + (exp_s - margin_s) * 1000;
	in->token_gen++;
	if (log_enabled(LOG_LVL_DEBUG))
		log_debug("wixapi: %s: new access token, refreshed in %lld s",
		    in->label, (long long)(exp_s - margin_s));
have:
	*tok = xstrdup(in->token);
	*gen = in->token_gen;
out:
	pthread_mutex_unlock(&in->tok_mu);
	return st;
}

/* Forget token generation gen of in after a 401, unless a newer one has
 * replaced it meanwhile. */
static void
token_drop(struct wixapi_inst *in, uint64_t gen)
{
	pthread_mutex_lock(&in->tok_mu);
	if (in->token != NULL && in->token_gen == gen) {
		freezero_str(in->token);
		in->token = NULL;
	}
	pthread_mutex_unlock(&in->tok_mu);
}

/* ---- calls ------------------------------------------------------------ */

static bool
method_ok(const char *m)
{
	return m != NULL && (strcmp(m, "GET") == 0 || strcmp(m, "POST") == 0 ||
	    strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0 ||
	    strcmp(m, "DELETE") == 0);
}

enum rs_status
wixapi_call(struct wixapi *w, const char *instance_id, const char *method,
    const char *path, const char *body, struct wixapi_http_response *resp,
    struct wixapi_error *err)
{
	struct wixapi_http_request req;
	struct wixapi_inst *in;
	const char *hdrs[6];
	char *url = NULL, *what = NULL, *auth = NULL, *site = NULL;
	char *tok = NULL;
	uint64_t gen = 0;
	bool refreshed = false;
	enum rs_status st = RS_ERR_INPUT;
	size_t nh;

	resp_init(resp);
	memset(err, 0, sizeof(*err));
	if (!method_ok(method) || path == NULL || path[0] != '/' ||
	    !header_safe(path, WIXAPI_MAX_PATH)) {
		log_warnx("wixapi: %s: bad method or path", __func__);
		goto out;
	}
	if (w->oauth && !text_safe(instance_id, WIXAPI_MAX_ID)) {
		err->message = xasprintf("no usable instance id (empty, over "
		    "%d bytes or with control characters)", WIXAPI_MAX_ID);
		log_warnx("wixapi: %s %s: %s", method, path, err->message);
		goto out;
	}
	if (atomic_load(&w->stop)) {
		st = RS_ERR_STOPPING;
		goto out;
	}
	in = inst_get(w, w->oauth ? instance_id : "", true);
	url = xasprintf("%s%s", w->base, path);
	/* Never log a query string. */
	what = xasprintf("%s %.*s", method, (int)strcspn(path, "?"), path);
	if (!w->oauth) {
		auth = xasprintf("Authorization: %s", w->api_key);
		site = xasprintf("wix-site-id: %s", w->site_id);
	}
	for (;;) {
		if (w->oauth) {
			if ((st = token_get(w, in, &tok, &gen, err)) != RS_OK)
				goto out;
			auth = xasprintf("Authorization: %s", tok);
			freezero_str(tok);
			tok = NULL;
		}
		nh = 0;
		hdrs[nh++] = auth;
		if (site != NULL)
			hdrs[nh++] = site;
		hdrs[nh++] = "Accept: application/json";
		if (body != NULL)
			hdrs[nh++] = "Content-Type: application/json";
		hdrs[nh] = NULL;
		memset(&req, 0, sizeof(req));
		req.method = method;
		req.url = url;
		req.body = body;
		req.body_len = body != NULL ? strlen(body) : 0;
		req.headers = hdrs;
		req.connect_timeout_ms = w->connect_ms;
		req.timeout_ms = w->timeout_ms;
		req.max_response = w->max_response;
		st = send_retry(w, in, &req, what, resp);
		if (w->oauth) {
			freezero_str(auth);
			auth = NULL;
		}
		if (st != RS_OK)
			goto out;
		if (status_2xx(resp->status))
			goto out;
		if (resp->status == 401 && w->oauth && !refreshed) {
			log_warnx("wixapi: %s: %s: HTTP 401 (request id %s): "
			    "fetching a new access token and trying again",
			    in->label, what, str_or(resp->request_id, "none"));
			token_drop(in, gen);
			refreshed = true;
			wixapi_http_response_cleanup(resp);
			continue;
		}
		error_fill(resp, err);
		log_warnx("wixapi: %s: %s: HTTP %ld%s%s (request id %s)%s",
		    in->label, what, resp->status, err->code != NULL ? " " : "",
		    str_or(err->code, ""), str_or(resp->request_id, "none"),
		    resp->status >= 300 && resp->status <= 399 ?
		    ": a redirect, not followed; check api_base" : "");
		wixapi_http_response_cleanup(resp);
		st = RS_ERR_INPUT;
		goto out;
	}
out:
	freezero_str(auth);
	free(site);
	free(what);
	free(url);
	return st;
}

/* ---- Query Refunds ---------------------------------------------------- */

/* The request body (WIX.md §4).  Caller frees. */
static char *
query_body(const char *cursor, int limit, const char *charge_id)
{
	cJSON *root, *q, *o, *arr;
	char *text;

	root = cJSON_CreateObject();
	q = cJSON_AddObjectToObject(root, "query");
	if (cursor == NULL) {
		if (charge_id != NULL) {
			o = cJSON_AddObjectToObject(q, "filter");
			cJSON_AddStringToObject(o, "chargeId", charge_id);
		}
		arr = cJSON_AddArrayToObject(q, "sort");
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "fieldName", "createdDate");
		cJSON_AddStringToObject(o, "order", "ASC");
		cJSON_AddItemToArray(arr, o);
	}
	o = cJSON_AddObjectToObject(q, "cursorPaging");
	cJSON_AddNumberToObject(o, "limit", limit);
	if (cursor != NULL)
		cJSON_AddStringToObject(o, "cursor", cursor);
	text = json_print(root);
	cJSON_Delete(root);
	return text;
}

/*
 * Parse a page strictly into *p (zeroed first; caller cleans it whatever
 * the result).  RS_ERR_INPUT with a static reason in *why, and in *bad
 * the index of the refund that failed (SIZE_MAX if none did) and in
 * *bad_id its id, cleaned for a log line, if it has a string one (else
 * NULL; caller frees).
 */
static enum rs_status
page_parse(const char *text, size_t len, struct wixapi_page *p,
    const char **why, size_t *bad, char **bad_id)
{
	const char *id;
	const cJSON *arr, *item, *pm, *cursors, *next;
	cJSON *root = NULL;
	enum rs_status st = RS_ERR_INPUT, rc;
	size_t n;
	bool has_next = false;

	memset(p, 0, sizeof(*p));
	*bad = SIZE_MAX;
	*bad_id = NULL;
	if (json_parse_strict(text, len, JSON_MAX_DEPTH, &root, why) !=
	    RS_OK)
		goto out;
	if (!cJSON_IsObject(root)) {
		*why = "page is not an object";
		goto out;
	}
	if ((arr = json_get_array(root, "refunds")) == NULL) {
		*why = "no refunds array";
		goto out;
	}
	n = (size_t)cJSON_GetArraySize(arr);
	p->refunds = n > 0 ? xcalloc(n, sizeof(*p->refunds)) : NULL;
	cJSON_ArrayForEach(item, arr) {
		if (refund_from_json(item, &p->refunds[p->n], why) != RS_OK) {
			*bad = p->n;
			if ((id = json_get_string(item, "id")) != NULL)
				*bad_id = clean_copy(id, strlen(id),
				    WIXAPI_MAX_BAD_ID);
			goto out;
		}
		p->n++;
	}
	pm = json_get(root, "pagingMetadata");
	if (pm != NULL && !cJSON_IsNull(pm) && !cJSON_IsObject(pm)) {
		*why = "pagingMetadata is not an object";
		goto out;
	}
	cursors = json_get(pm, "cursors");
	if (cursors != NULL && !cJSON_IsNull(cursors) &&
	    !cJSON_IsObject(cursors)) {
		*why = "pagingMetadata.cursors is not an object";
		goto out;
	}
	next = json_get(cursors, "next");
	if (next != NULL && !cJSON_IsNull(next) && !cJSON_IsString(next)) {
		*why = "pagingMetadata.cursors.next is not a string";
		goto out;
	}
	if (next != NULL && cJSON_IsString(next) &&
	    next->valuestring[0] != '\0')
		p->next_cursor = xstrdup(next->valuestring);
	rc = json_get_bool(pm, "hasNext", &has_next);
	if (rc == RS_ERR_NOTFOUND)
		has_next = false;
	else if (rc != RS_OK) {
		*why = "pagingMetadata.hasNext is not a boolean";
		goto out;
	}
	p->has_next = has_next;
	st = RS_OK;
out:
	cJSON_Delete(root);
	return st;
}

/* Does the error name the cursor? */
static bool
error_names_cursor(const struct wixapi_error *e)
{
	const char *const s[] = { e->code, e->description, e->message,
	    e->violations };
	size_t i;

	for (i = 0; i < sizeof(s) / sizeof(s[0]); i++)
		if (s[i] != NULL && strcasestr(s[i], "cursor") != NULL)
			return true;
	return false;
}

enum rs_status
wixapi_query_refunds(struct wixapi *w, const char *instance_id,
    const char *cursor, int limit, const char *charge_id,
    struct wixapi_page *out, struct wixapi_error *err)
{
	struct wixapi_http_response resp;
	struct wixapi_page page;
	const char *why = NULL, *kind, *name;
	char *body = NULL, *bad_id = NULL;
	enum rs_status st;
	size_t bad;

	/* As the instance's label: "instance X" or "site Y". */
	kind = w->oauth ? "instance" : "site";
	name = w->oauth ? str_or(instance_id, "?") : w->site_id;
	memset(out, 0, sizeof(*out));
	memset(&page, 0, sizeof(page));
	if (limit <= 0 || limit > WIXAPI_MAX_LIMIT)
		limit = WIXAPI_MAX_LIMIT;
	body = query_body(cursor, limit, charge_id);
	st = wixapi_call(w, instance_id, "POST", WIXAPI_QUERY_PATH, body,
	    &resp, err);
	if (st == RS_ERR_INPUT && cursor != NULL && err->http_status >= 400 &&
	    err->http_status <= 499 && err->http_status != 401 &&
	    err->http_status != 403 && error_names_cursor(err)) {
		log_warnx("wixapi: %s %s: query refunds: cursor rejected "
		    "(HTTP %ld, request id %s): start over from the first page",
		    kind, name, err->http_status,
		    str_or(err->request_id, "none"));
		st = RS_ERR_RANGE;
	}
	if (st != RS_OK)
		goto out;
	if ((st = page_parse(resp.body, resp.body_len, &page, &why, &bad,
	    &bad_id)) != RS_OK) {
		err->http_status = resp.status;
		err->request_id = dup_or_null(resp.request_id);
		/* Why, for the caller's own message (last_error). */
		if (bad != SIZE_MAX)
			err->message = xasprintf("refund %zu%s%s%s: %s", bad,
			    bad_id != NULL ? " (" : "", str_or(bad_id, ""),
			    bad_id != NULL ? ")" : "", why);
		else
			err->message = xstrdup(why);
		log_warnx("wixapi: %s %s: query refunds: page rejected: %s "
		    "(request id %s)", kind, name, err->message,
		    str_or(resp.request_id, "none"));
		free(bad_id);
		goto out;
	}
	*out = page;
	memset(&page, 0, sizeof(page));
out:
	wixapi_page_cleanup(&page);
	wixapi_http_response_cleanup(&resp);
	free(body);
	return st;
}

enum rs_status
wixapi_claim(struct wixapi *w, const char *instance_id, bool claim)
{
	if (w->budget == NULL)
		return RS_OK;
	return budget_claim(w->budget, instance_id, claim);
}

uint64_t
wixapi_requests_sent(struct wixapi *w, const char *instance_id)
{
	struct wixapi_inst *in;
	uint64_t n;

	if (w->oauth && instance_id == NULL)
		return 0;
	if ((in = inst_get(w, w->oauth ? instance_id : "", false)) == NULL)
		return 0;
	pthread_mutex_lock(&in->mu);
	n = in->requests;
	pthread_mutex_unlock(&in->mu);
	return n;
}

/* ---- lifecycle -------------------------------------------------------- */

/* "http://" or "https://" then a host, no spaces or control bytes. */
static bool
base_ok(const char *s)
{
	size_t skip;

	if (!header_safe(s, WIXAPI_MAX_PATH))
		return false;
	if (strncasecmp(s, "https://", 8) == 0)
		skip = 8;
	else if (strncasecmp(s, "http://", 7) == 0)
		skip = 7;
	else
		return false;
	return s[skip] != '\0' && s[skip] != '/' && strchr(s, '?') == NULL &&
	    strchr(s, '#') == NULL;
}

enum rs_status
wixapi_new(const struct wixapi_options *opt, struct wixapi **out,
    char **why)
{
	struct wixapi *w = NULL;
	const curl_version_info_data *vi;
	char *bwhy = NULL;
	bool oauth, key;
	size_t n;

	*out = NULL;
	*why = NULL;
	if (!base_ok(opt->api_base)) {
		*why = xstrdup("api_base must be an http:// or https:// URL");
		goto fail;
	}
	oauth = opt->app_id != NULL || opt->app_secret != NULL;
	key = opt->api_key != NULL || opt->site_id != NULL;
	if (oauth == key) {
		*why = xstrdup("give either app_id and app_secret or api_key "
		    "and site_id");
		goto fail;
	}
	if (oauth && (!text_safe(opt->app_id, WIXAPI_MAX_ID) ||
	    opt->app_secret == NULL || opt->app_secret[0] == '\0' ||
	    strnlen(opt->app_secret, WIXAPI_MAX_TOKEN + 1) >
	    WIXAPI_MAX_TOKEN)) {
		*why = xstrdup("app_id and app_secret are both required, "
		    "without control characters and not over-long");
		goto fail;
	}
	if (key && (!header_safe(opt->api_key, WIXAPI_MAX_TOKEN) ||
	    !header_safe(opt->site_id, WIXAPI_MAX_ID))) {
		*why = xstrdup("api_key and site_id are both required, "
		    "without spaces or control characters");
		goto fail;
	}
	if (opt->requests_per_minute < 0 ||
	    opt->requests_per_minute > WIXAPI_MAX_RPM ||
	    opt->connect_timeout_ms < 0 || opt->timeout_ms < 0 ||
	    opt->max_attempts < 0 || opt->max_attempts > WIXAPI_MAX_ATTEMPTS ||
	    opt->backoff_base_ms < 0 || opt->backoff_max_ms < 0 ||
	    opt->backoff_base_ms > INT64_MAX / 4 ||
	    opt->backoff_max_ms > INT64_MAX / 4 ||
	    opt->budget_window_ms < 0 ||
	    opt->budget_window_ms > WIXAPI_WINDOW_MS) {
		*why = xstrdup("a limit, timeout or backoff is out of range");
		goto fail;
	}
	if ((opt->now_ms == NULL) != (opt->sleep_ms == NULL)) {
		*why = xstrdup("now_ms and sleep_ms go together");
		goto fail;
	}
	if (opt->budget_path != NULL && opt->budget_path[0] == '\0') {
		*why = xstrdup("budget_path is empty");
		goto fail;
	}
	if (opt->transport == NULL) {
		(void)pthread_once(&curl_once, curl_init);
		if (curl_init_rc != CURLE_OK) {
			*why = xasprintf("curl_global_init: %s",
			    curl_easy_strerror(curl_init_rc));
			goto fail;
		}
		vi = curl_version_info(CURLVERSION_NOW);
		/* CURLOPT_PROTOCOLS_STR came with 7.85.0. */
		if (vi == NULL || vi->version_num < 0x075500) {
			*why = xstrdup("libcurl 7.85.0 or later is needed");
			goto fail;
		}
	}

	w = xcalloc(1, sizeof(*w));
	w->stop_fd = -1;
	w->base = xstrdup(opt->api_base);
	n = strlen(w->base);
	while (n > 0 && w->base[n - 1] == '/')
		w->base[--n] = '\0';
	w->oauth = oauth;
	if (oauth) {
		w->app_id = xstrdup(opt->app_id);
		w->app_secret = xstrdup(opt->app_secret);
	} else {
		w->api_key = xstrdup(opt->api_key);
		w->site_id = xstrdup(opt->site_id);
	}
	w->rpm = opt->requests_per_minute > 0 ?
	    (size_t)opt->requests_per_minute : WIXAPI_DEF_RPM;
	w->window_ms = opt->budget_window_ms > 0 ?
	    opt->budget_window_ms : WIXAPI_WINDOW_MS;
	w->connect_ms = opt->connect_timeout_ms > 0 ?
	    opt->connect_timeout_ms : WIXAPI_DEF_CONNECT_MS;
	w->timeout_ms = opt->timeout_ms > 0 ?
	    opt->timeout_ms : WIXAPI_DEF_TIMEOUT_MS;
	w->max_response = opt->max_response > 0 ?
	    opt->max_response : WIXAPI_DEF_MAX_RESPONSE;
	w->max_attempts = opt->max_attempts > 0 ?
	    opt->max_attempts : WIXAPI_DEF_ATTEMPTS;
	w->base_ms = opt->backoff_base_ms > 0 ?
	    opt->backoff_base_ms : WIXAPI_DEF_BASE_MS;
	w->max_ms = opt->backoff_max_ms > 0 ?
	    opt->backoff_max_ms : WIXAPI_DEF_MAX_MS;
	if (w->base_ms > w->max_ms) {
		*why = xstrdup("backoff_base_ms is above backoff_max_ms");
		goto fail;
	}
	if (opt->transport != NULL) {
		w->transport = opt->transport;
		w->transport_ctx = opt->transport_ctx;
	} else {
		w->transport = curl_transport;
		w->transport_ctx = w;
		if ((w->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) ==
		    -1) {
			*why = xasprintf("eventfd: %s", strerror(errno));
			goto fail;
		}
	}
	if (opt->now_ms != NULL) {
		w->now_fn = opt->now_ms;
		w->sleep_fn = opt->sleep_ms;
		w->clock_ctx = opt->clock_ctx;
	} else {
		w->now_fn = real_now;
		w->sleep_fn = NULL;
	}
	atomic_init(&w->stop, false);
	if (opt->budget_path != NULL && budget_open(opt->budget_path,
	    (int64_t)w->rpm, w->window_ms, w->now_fn, w->clock_ctx,
	    &w->budget, &bwhy) != RS_OK) {
		/* Its message starts with the path, as a rule. */
		n = strlen(opt->budget_path);
		if (bwhy != NULL && strncmp(bwhy, opt->budget_path, n) == 0)
			*why = xasprintf("request budget file %s", bwhy);
		else
			*why = xasprintf("request budget file %s: %s",
			    opt->budget_path, str_or(bwhy, "cannot be used"));
		free(bwhy);
		goto fail;
	}
	atomic_init(&w->rng, (uint64_t)clock_mono_ms() ^
	    ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)w);
	if (pthread_mutex_init(&w->mu, NULL) != 0 ||
	    pthread_mutex_init(&w->pool_mu, NULL) != 0)
		fatalx("%s: pthread_mutex_init failed", __func__);
	if (!oauth)
		w->key_inst = inst_new(w, "");
	*out = w;
	return RS_OK;
fail:
	if (w != NULL) {
		if (w->stop_fd >= 0)
			close(w->stop_fd);
		budget_close(w->budget);
		freezero_str(w->app_secret);
		freezero_str(w->api_key);
		free(w->app_id);
		free(w->site_id);
		free(w->base);
		free(w);
	}
	return RS_ERR_CONFIG;
}

void
wixapi_stop(struct wixapi *w)
{
	uint64_t one = 1;

	if (w == NULL || atomic_exchange(&w->stop, true))
		return;
	/* Wakes every transfer's wait; it stays readable. */
	if (w->stop_fd >= 0 && write(w->stop_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN only (the counter is full): it is readable. */
	}
}

bool
wixapi_stopped(const struct wixapi *w)
{
	return w != NULL && atomic_load(&w->stop);
}

void
wixapi_free(struct wixapi *w)
{
	struct wixapi_inst *in, *next;
	size_t i;

	if (w == NULL)
		return;
	for (in = w->insts; in != NULL; in = next) {
		next = in->next;
		inst_free(in);
	}
	inst_free(w->key_inst);
	budget_close(w->budget);
	for (i = 0; i < w->npool; i++)
		conn_cleanup(&w->pool[i]);
	pthread_mutex_destroy(&w->mu);
	pthread_mutex_destroy(&w->pool_mu);
	if (w->stop_fd >= 0)
		close(w->stop_fd);
	freezero_str(w->app_secret);
	freezero_str(w->api_key);
	free(w->app_id);
	free(w->site_id);
	free(w->base);
	free(w);
}
