/*
 * check_wixapi.c: the Wix REST client.
 *
 * Most tests drive the client through its two seams: a fake transport
 * that records every request and answers from a script (token-endpoint
 * answers and API answers in two queues, with defaults once a queue is
 * empty), and a fake monotonic clock that only moves when the client
 * sleeps, so backoff waits and the 60 s request budget are checked
 * exactly and instantly.  The shared budget (budget_path) is tested the
 * same way with two clients on one file and one fake clock, through
 * the budget's own API (growth, widening, damage, a reboot), and with
 * the real clock in two threads and in two processes.  One test runs
 * the real libcurl transport
 * against a libmicrohttpd server on 127.0.0.1:0 started inside the test:
 * a normal page, oversized bodies (with and without Content-Length), a
 * body cut short with no Content-Length, a stalled answer, Retry-After
 * headers and a refused connection.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <microhttpd.h>

#include "adapters/budget.h"
#include "adapters/wixapi.h"
#include "domain/json.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xmalloc.h"

#include "../netfault.h"

#define BASE		"https://wix.test"
#define APP_ID		"app-0001"
#define APP_SECRET	"S3CR3T-app-secret-value"
#define API_KEY		"IST.KEY-SECRET-123"
#define SITE_ID		"site-0001"
#define INST		"inst-A"
#define INST2		"inst-B"
#define QUERY_URL	BASE "/payments/refunds/v1/refunds/query"
#define TOKEN_URL	BASE "/oauth2/token"

#define REFUND(id, amount)						\
	"{\"id\":\"" id "\",\"chargeId\":\"ch-1\",\"currencyCode\":\"USD\","\
	"\"amount\":" amount ",\"status\":\"SUCCEEDED\",\"revision\":\"3\","\
	"\"createdDate\":\"2024-05-01T10:00:00.000Z\"}"

#define ERROR_BODY							\
	"{\"message\":\"bad refund\",\"details\":{"			\
	"\"applicationError\":{\"code\":"				\
	"\"PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH\",\"description\":"	\
	"\"sum differs\",\"data\":{}},\"validationError\":{"		\
	"\"fieldViolations\":"						\
	"[{\"field\":\"refund.amount\",\"description\":\"must be positive\","\
	"\"violatedRule\":\"MIN\"},{\"field\":\"refund.chargeId\","	\
	"\"description\":\"required\",\"violatedRule\":\"REQUIRED\"}]}}}"

/* ---- the fake clock --------------------------------------------------- */

struct fclock {
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	int64_t		 now;
	int64_t		 sleeps[256];	/* each sleep asked for */
	size_t		 nsleeps;
	bool		 hold;		/* sleepers wait until cleared */
	int		 sleeping;	/* sleepers waiting now */
};

static void
fc_init(struct fclock *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
}

static void
fc_destroy(struct fclock *c)
{
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
}

static int64_t
fc_now(void *ctx)
{
	struct fclock *c = ctx;
	int64_t n;

	pthread_mutex_lock(&c->mu);
	n = c->now;
	pthread_mutex_unlock(&c->mu);
	return n;
}

static void
fc_sleep(void *ctx, int64_t ms)
{
	struct fclock *c = ctx;

	pthread_mutex_lock(&c->mu);
	if (c->nsleeps < sizeof(c->sleeps) / sizeof(c->sleeps[0]))
		c->sleeps[c->nsleeps++] = ms;
	c->sleeping++;
	pthread_cond_broadcast(&c->cv);
	while (c->hold)
		pthread_cond_wait(&c->cv, &c->mu);
	c->sleeping--;
	c->now += ms;
	pthread_mutex_unlock(&c->mu);
}

static void
fc_advance(struct fclock *c, int64_t ms)
{
	pthread_mutex_lock(&c->mu);
	c->now += ms;
	pthread_mutex_unlock(&c->mu);
}

/* ---- the fake transport ----------------------------------------------- */

struct fake_resp {
	enum rs_status	 rc;		/* RS_OK, RS_ERR_IO, RS_ERR_TOOBIG */
	long		 status;
	const char	*body;		/* NULL: empty */
	const char	*request_id;
	bool		 has_ra;
	int64_t		 ra;		/* Retry-After seconds */
};

struct fake_req {
	char		*method;
	char		*url;
	char		*body;		/* NULL if none */
	char		**headers;	/* NULL-terminated copies */
	int64_t		 t;		/* clock when sent */
	size_t		 max_response;
	long		 connect_timeout_ms;
	long		 timeout_ms;
};

struct fake {
	pthread_mutex_t	 mu;
	struct fclock	*clock;		/* NULL: the real clock */
	struct fake_resp tok[16];
	size_t		 ntok, itok;
	struct fake_resp api[300];
	size_t		 napi, iapi;
	struct fake_req	*reqs;
	size_t		 nreqs;
	int		 token_seq;
	int64_t		 expires_in;	/* in default token answers */
	bool		 token_per_instance; /* "tok-<instance>" */
	int		 auth_mismatch;	/* see tl_instance */
	/* Called once, with no lock held, while request hook_at (an index
	 * into reqs) is in flight, after it took its answer. */
	void		(*hook)(void *);
	void		*hook_arg;
	size_t		 hook_at;
};

/* The instance this thread calls for, in the concurrency test: API
 * requests must carry its token. */
static _Thread_local const char *tl_instance;

static void
fake_init(struct fake *f, struct fclock *c)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->mu, NULL);
	f->clock = c;
	f->expires_in = 14400;
}

static void
fake_cleanup(struct fake *f)
{
	size_t i, j;

	for (i = 0; i < f->nreqs; i++) {
		free(f->reqs[i].method);
		free(f->reqs[i].url);
		free(f->reqs[i].body);
		for (j = 0; f->reqs[i].headers[j] != NULL; j++)
			free(f->reqs[i].headers[j]);
		free(f->reqs[i].headers);
	}
	free(f->reqs);
	pthread_mutex_destroy(&f->mu);
}

static void
fake_api(struct fake *f, long status, const char *body)
{
	struct fake_resp *r = &f->api[f->napi++];

	memset(r, 0, sizeof(*r));
	r->rc = RS_OK;
	r->status = status;
	r->body = body;
}

static void
fake_tok(struct fake *f, long status, const char *body)
{
	struct fake_resp *r = &f->tok[f->ntok++];

	memset(r, 0, sizeof(*r));
	r->rc = RS_OK;
	r->status = status;
	r->body = body;
}

/* The value of header name in r, or NULL.  Borrowed. */
static const char *
req_header(const struct fake_req *r, const char *name)
{
	size_t i, n = strlen(name);

	for (i = 0; r->headers[i] != NULL; i++)
		if (strncasecmp(r->headers[i], name, n) == 0 &&
		    r->headers[i][n] == ':')
			return r->headers[i] + n + 2;
	return NULL;
}

static char *
instance_of(const char *body)
{
	cJSON *root;
	const char *why, *s;
	char *out = NULL;

	if (json_parse_strict(body, strlen(body), 16, &root, &why) != RS_OK)
		return NULL;
	if ((s = json_get_string(root, "instance_id")) != NULL)
		out = xstrdup(s);
	cJSON_Delete(root);
	return out;
}

static enum rs_status
fake_transport(void *ctx, const struct wixapi_http_request *req,
    struct wixapi_http_response *resp)
{
	struct fake *f = ctx;
	struct fake_req *r;
	const struct fake_resp *a = NULL;
	const char *auth;
	char *inst, *want;
	enum rs_status rc = RS_OK;
	bool is_tok;
	size_t i, n, ri;

	pthread_mutex_lock(&f->mu);
	f->reqs = xreallocarray(f->reqs, f->nreqs + 1, sizeof(*f->reqs));
	ri = f->nreqs++;
	r = &f->reqs[ri];
	memset(r, 0, sizeof(*r));
	r->method = xstrdup(req->method);
	r->url = xstrdup(req->url);
	if (req->body != NULL)
		r->body = xstrndup(req->body, req->body_len);
	for (n = 0; req->headers[n] != NULL; n++)
		continue;
	r->headers = xcalloc(n + 1, sizeof(char *));
	for (i = 0; i < n; i++)
		r->headers[i] = xstrdup(req->headers[i]);
	r->t = f->clock != NULL ? fc_now(f->clock) : clock_mono_ms();
	r->max_response = req->max_response;
	r->connect_timeout_ms = req->connect_timeout_ms;
	r->timeout_ms = req->timeout_ms;

	is_tok = strstr(req->url, "/oauth2/token") != NULL;
	if (is_tok && f->itok < f->ntok)
		a = &f->tok[f->itok++];
	else if (!is_tok && f->iapi < f->napi)
		a = &f->api[f->iapi++];
	/* After this request took its answer, so nested requests get the
	 * next ones. */
	if (f->hook != NULL && f->nreqs - 1 == f->hook_at) {
		void (*hook)(void *) = f->hook;

		f->hook = NULL;
		pthread_mutex_unlock(&f->mu);
		hook(f->hook_arg);
		pthread_mutex_lock(&f->mu);
		/* The nested requests may have moved the array. */
		r = &f->reqs[ri];
	}
	if (!is_tok && tl_instance != NULL) {
		auth = req_header(r, "Authorization");
		want = xasprintf("tok-%s", tl_instance);
		if (auth == NULL || strcmp(auth, want) != 0)
			f->auth_mismatch++;
		free(want);
	}
	if (a == NULL) {
		resp->status = 200;
		if (is_tok && f->token_per_instance) {
			inst = instance_of(r->body);
			resp->body = xasprintf("{\"access_token\":\"tok-%s\","
			    "\"token_type\":\"Bearer\",\"expires_in\":%lld}",
			    inst != NULL ? inst : "?",
			    (long long)f->expires_in);
			free(inst);
		} else if (is_tok)
			resp->body = xasprintf("{\"access_token\":\"tok-%d\","
			    "\"token_type\":\"Bearer\",\"expires_in\":%lld}",
			    ++f->token_seq, (long long)f->expires_in);
		else
			resp->body = xstrdup("{\"refunds\":[]}");
		resp->body_len = strlen(resp->body);
		goto out;
	}
	rc = a->rc;
	if (rc == RS_ERR_IO) {
		resp->error = xstrdup("connection reset (fake)");
		goto out;
	}
	if (rc != RS_OK)
		goto out;
	resp->status = a->status;
	resp->body = xstrdup(a->body != NULL ? a->body : "");
	resp->body_len = strlen(resp->body);
	if (a->request_id != NULL)
		resp->request_id = xstrdup(a->request_id);
	resp->retry_after_s = a->has_ra ? a->ra : -1;
out:
	pthread_mutex_unlock(&f->mu);
	return rc;
}

/* ---- helpers ---------------------------------------------------------- */

static void
opts_init(struct wixapi_options *o, struct fake *f, struct fclock *c)
{
	memset(o, 0, sizeof(*o));
	o->api_base = BASE "/";
	o->app_id = APP_ID;
	o->app_secret = APP_SECRET;
	o->requests_per_minute = 1000;
	o->max_attempts = 4;
	o->backoff_base_ms = 100;
	o->backoff_max_ms = 5000;
	o->max_response = 65536;
	o->transport = fake_transport;
	o->transport_ctx = f;
	if (c != NULL) {
		o->now_ms = fc_now;
		o->sleep_ms = fc_sleep;
		o->clock_ctx = c;
	}
}

static struct wixapi *
mk(const struct wixapi_options *o)
{
	struct wixapi *w = NULL;
	char *why = NULL;

	ck_assert_int_eq(wixapi_new(o, &w, &why), RS_OK);
	ck_assert_ptr_null(why);
	ck_assert_ptr_nonnull(w);
	return w;
}

/* One Query Refunds call expected to succeed with an empty page. */
static void
query_ok(struct wixapi *w, const char *inst)
{
	struct wixapi_page p;
	struct wixapi_error e;

	ck_assert_int_eq(wixapi_query_refunds(w, inst, NULL, 100, NULL, &p,
	    &e), RS_OK);
	ck_assert_uint_eq(p.n, 0);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
}

static enum rs_status
query(struct wixapi *w, const char *inst, const char *cursor,
    struct wixapi_page *p, struct wixapi_error *e)
{
	return wixapi_query_refunds(w, inst, cursor, 100, NULL, p, e);
}

static cJSON *
parse(const char *text)
{
	cJSON *root = NULL;
	const char *why;

	ck_assert_ptr_nonnull(text);
	ck_assert_int_eq(json_parse_strict(text, strlen(text), 16, &root,
	    &why), RS_OK);
	return root;
}

static int
nmembers(const cJSON *obj)
{
	return cJSON_GetArraySize(obj);
}

/* Redirect stderr (fd 2) into a temporary file until capture_end(). */
struct capture {
	int	 saved;
	char	 path[64];
};

static void
capture_begin(struct capture *cap)
{
	int fd;

	snprintf(cap->path, sizeof(cap->path), "/tmp/check_wixapi.XXXXXX");
	fd = mkstemp(cap->path);
	ck_assert_int_ge(fd, 0);
	fflush(stderr);
	cap->saved = dup(STDERR_FILENO);
	ck_assert_int_ge(cap->saved, 0);
	ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
}

/* Restore stderr; the captured text.  Caller frees. */
static char *
capture_end(struct capture *cap)
{
	char *text;
	FILE *fp;
	long n;

	fflush(stderr);
	dup2(cap->saved, STDERR_FILENO);
	close(cap->saved);
	fp = fopen(cap->path, "r");
	ck_assert_ptr_nonnull(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	ck_assert_int_ge(n, 0);
	rewind(fp);
	text = xcalloc(1, (size_t)n + 1);
	ck_assert_uint_eq(fread(text, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	unlink(cap->path);
	/* Echo it, so a failing test still shows its log. */
	fputs(text, stderr);
	return text;
}

/* A budget file in a fresh directory, or none (the private ring). */
struct tbudget {
	char	 dir[64];
	char	*path;		/* NULL: no file */
};

/* The path to give budget_path: a file when shared, else NULL. */
static const char *
tb_init(struct tbudget *tb, bool shared)
{
	memset(tb, 0, sizeof(*tb));
	if (!shared)
		return NULL;
	snprintf(tb->dir, sizeof(tb->dir), "/tmp/check_wixapi.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tb->dir));
	tb->path = xasprintf("%s/store.db-wixbudget", tb->dir);
	return tb->path;
}

static void
tb_cleanup(struct tbudget *tb)
{
	if (tb->path == NULL)
		return;
	unlink(tb->path);
	rmdir(tb->dir);
	free(tb->path);
	tb->path = NULL;
}

static off_t
file_size(const char *path)
{
	struct stat sb;

	ck_assert_int_eq(stat(path, &sb), 0);
	return sb.st_size;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* No window of window ms holds more than max of the n times. */
static void
assert_windows(const int64_t *t, size_t n, int64_t window, size_t max)
{
	size_t i, j, k;

	for (i = 0; i < n; i++) {
		for (k = 0, j = 0; j < n; j++)
			if (t[j] >= t[i] && t[j] < t[i] + window)
				k++;
		ck_assert_msg(k <= max, "%zu requests in the %lld ms from %lld",
		    k, (long long)window, (long long)t[i]);
	}
}

/* ---- construction ----------------------------------------------------- */

START_TEST(test_new_errors)
{
	struct wixapi_options o;
	struct wixapi *w;
	struct fake f;
	char *why;
	int i;

	fake_init(&f, NULL);
	for (i = 0; i < 14; i++) {
		opts_init(&o, &f, NULL);
		switch (i) {
		case 0: o.api_base = "ftp://wix.test"; break;
		case 1: o.api_base = "https:///x"; break;
		case 2: o.api_base = "https://wix test"; break;
		case 3: o.api_key = API_KEY; o.site_id = SITE_ID; break;
		case 4: o.app_id = NULL; o.app_secret = NULL; break;
		case 5: o.app_secret = ""; break;
		case 6: o.app_id = NULL; o.app_secret = NULL;
			o.api_key = "bad key"; o.site_id = SITE_ID; break;
		case 7: o.requests_per_minute = -1; break;
		case 8: o.backoff_base_ms = 9000; break;
		case 9: o.now_ms = fc_now; break;
		case 10: o.max_attempts = -3; break;
		case 11: o.budget_window_ms = -1; break;
		case 12: o.budget_window_ms = 60001; break;
		case 13: o.budget_path = ""; break;
		}
		w = (struct wixapi *)&f;
		why = NULL;
		ck_assert_msg(wixapi_new(&o, &w, &why) == RS_ERR_CONFIG,
		    "case %d", i);
		ck_assert_ptr_null(w);
		ck_assert_ptr_nonnull(why);
		ck_assert_uint_gt(strlen(why), 5);
		free(why);
	}
	wixapi_free(NULL);
	fake_cleanup(&f);
}
END_TEST

/* ---- OAuth -------------------------------------------------------------- */

START_TEST(test_token_cached)
{
	struct wixapi_options o;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	cJSON *b;
	size_t i;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	query_ok(w, INST);
	query_ok(w, INST);
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 4);
	ck_assert_str_eq(f.reqs[0].method, "POST");
	ck_assert_str_eq(f.reqs[0].url, TOKEN_URL);
	ck_assert_str_eq(req_header(&f.reqs[0], "Content-Type"),
	    "application/json");
	ck_assert_ptr_null(req_header(&f.reqs[0], "Authorization"));
	b = parse(f.reqs[0].body);
	ck_assert_int_eq(nmembers(b), 4);
	ck_assert_str_eq(json_get_string(b, "grant_type"),
	    "client_credentials");
	ck_assert_str_eq(json_get_string(b, "client_id"), APP_ID);
	ck_assert_str_eq(json_get_string(b, "client_secret"), APP_SECRET);
	ck_assert_str_eq(json_get_string(b, "instance_id"), INST);
	cJSON_Delete(b);
	for (i = 1; i < 4; i++) {
		ck_assert_str_eq(f.reqs[i].method, "POST");
		ck_assert_str_eq(f.reqs[i].url, QUERY_URL);
		/* Raw, without "Bearer". */
		ck_assert_str_eq(req_header(&f.reqs[i], "Authorization"),
		    "tok-1");
		ck_assert_str_eq(req_header(&f.reqs[i], "Content-Type"),
		    "application/json");
		ck_assert_ptr_null(req_header(&f.reqs[i], "wix-site-id"));
		ck_assert_uint_eq(f.reqs[i].max_response, 65536);
		ck_assert_int_eq(f.reqs[i].connect_timeout_ms, 5000);
		ck_assert_int_eq(f.reqs[i].timeout_ms, 30000);
	}
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 4);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST2), 0);
	ck_assert_uint_eq(wixapi_requests_sent(w, NULL), 0);
	ck_assert_uint_eq(c.nsleeps, 0);

	/* A second instance has its own token. */
	query_ok(w, INST2);
	ck_assert_uint_eq(f.nreqs, 6);
	b = parse(f.reqs[4].body);
	ck_assert_str_eq(json_get_string(b, "instance_id"), INST2);
	cJSON_Delete(b);
	ck_assert_str_eq(req_header(&f.reqs[5], "Authorization"), "tok-2");
	ck_assert_uint_eq(wixapi_requests_sent(w, INST2), 2);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_token_expiry)
{
	struct wixapi_options o;
	struct wixapi *w;
	struct fake f;
	struct fclock c;

	fc_init(&c);
	fake_init(&f, &c);
	/* expires_in 100 s: refreshed 10 s (a tenth) early, at 90 s. */
	f.expires_in = 100;
	opts_init(&o, &f, &c);
	w = mk(&o);
	query_ok(w, INST);
	fc_advance(&c, 89999);
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 3);
	ck_assert_str_eq(req_header(&f.reqs[2], "Authorization"), "tok-1");
	fc_advance(&c, 1);
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 5);
	ck_assert_str_eq(f.reqs[3].url, TOKEN_URL);
	ck_assert_str_eq(req_header(&f.reqs[4], "Authorization"), "tok-2");

	/* expires_in 4 h: refreshed 5 min (the cap) early. */
	f.expires_in = 14400;
	fc_advance(&c, 90000);
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 7);
	ck_assert_str_eq(req_header(&f.reqs[6], "Authorization"), "tok-3");
	fc_advance(&c, (14400 - 300) * 1000 - 1);
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 8);
	ck_assert_str_eq(req_header(&f.reqs[7], "Authorization"), "tok-3");
	fc_advance(&c, 1);
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 10);
	ck_assert_str_eq(req_header(&f.reqs[9], "Authorization"), "tok-4");
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_401_refresh_once)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;
	struct fclock c;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	fake_api(&f, 401, "{\"message\":\"expired\"}");
	fake_api(&f, 200, "{\"refund\":{}}");
	ck_assert_int_eq(wixapi_call(w, INST, "GET",
	    "/payments/refunds/v1/refunds/r-1", NULL, &r, &e), RS_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "{\"refund\":{}}");
	ck_assert_uint_eq(f.nreqs, 4);
	ck_assert_str_eq(f.reqs[0].url, TOKEN_URL);
	ck_assert_str_eq(f.reqs[1].method, "GET");
	ck_assert_str_eq(f.reqs[1].url, BASE
	    "/payments/refunds/v1/refunds/r-1");
	ck_assert_ptr_null(f.reqs[1].body);
	ck_assert_ptr_null(req_header(&f.reqs[1], "Content-Type"));
	ck_assert_str_eq(req_header(&f.reqs[1], "Authorization"), "tok-1");
	ck_assert_str_eq(f.reqs[2].url, TOKEN_URL);
	ck_assert_str_eq(req_header(&f.reqs[3], "Authorization"), "tok-2");
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);

	/* The new token stays cached. */
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 5);
	ck_assert_str_eq(req_header(&f.reqs[4], "Authorization"), "tok-2");

	/* A second 401 in one call is final: no third token. */
	fake_api(&f, 401, "{\"message\":\"no\"}");
	fake_api(&f, 401, "{\"message\":\"still no\"}");
	ck_assert_int_eq(wixapi_call(w, INST, "GET", "/x", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(e.http_status, 401);
	ck_assert_str_eq(e.message, "still no");
	ck_assert_ptr_null(r.body);
	ck_assert_uint_eq(f.nreqs, 8);
	ck_assert_str_eq(f.reqs[6].url, TOKEN_URL);
	ck_assert_str_eq(req_header(&f.reqs[7], "Authorization"), "tok-3");
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 8);
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

struct nested {
	struct wixapi	*w;
	enum rs_status	 st;
};

static void
nested_call(void *arg)
{
	struct nested *n = arg;
	struct wixapi_http_response r;
	struct wixapi_error e;

	n->st = wixapi_call(n->w, INST, "GET", "/nested", NULL, &r, &e);
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);
}

/*
 * A 401 that arrives after another caller has already replaced the
 * token must not drop the new one.  The other caller runs inside the
 * first one's request (which also shows no lock is held across it).
 */
START_TEST(test_401_race)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_error e;
	struct nested n;
	struct wixapi *w;
	struct fake f;
	struct fclock c;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	query_ok(w, INST);			/* 0 token, 1 page */
	n.w = w;
	n.st = RS_ERR_INTERNAL;
	f.hook = nested_call;
	f.hook_arg = &n;
	f.hook_at = 2;
	fake_api(&f, 401, "");			/* 2 outer: tok-1 */
	fake_api(&f, 401, "");			/* 3 nested: tok-1 */
	fake_api(&f, 200, "{}");		/* 5 nested: tok-2 */
	fake_api(&f, 200, "{}");		/* 6 outer: tok-2 */
	ck_assert_int_eq(wixapi_call(w, INST, "GET", "/outer", NULL, &r, &e),
	    RS_OK);
	ck_assert_int_eq(n.st, RS_OK);
	ck_assert_uint_eq(f.nreqs, 7);
	ck_assert_str_eq(f.reqs[2].url, BASE "/outer");
	ck_assert_str_eq(f.reqs[3].url, BASE "/nested");
	ck_assert_str_eq(f.reqs[4].url, TOKEN_URL);
	ck_assert_str_eq(f.reqs[5].url, BASE "/nested");
	ck_assert_str_eq(req_header(&f.reqs[5], "Authorization"), "tok-2");
	ck_assert_str_eq(f.reqs[6].url, BASE "/outer");
	ck_assert_str_eq(req_header(&f.reqs[6], "Authorization"), "tok-2");
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_token_refused)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;
	struct fclock c;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);

	/* 401 and 403: RS_ERR_AUTH at once, nothing retried. */
	fake_tok(&f, 401, "{\"message\":\"invalid client\"}");
	f.tok[0].request_id = "rid-tok";
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_AUTH);
	ck_assert_int_eq(e.http_status, 401);
	ck_assert_str_eq(e.message, "invalid client");
	ck_assert_str_eq(e.request_id, "rid-tok");
	ck_assert_uint_eq(f.nreqs, 1);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_ptr_null(p.refunds);
	wixapi_error_cleanup(&e);
	fake_tok(&f, 403, "forbidden");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_AUTH);
	ck_assert_int_eq(e.http_status, 403);
	ck_assert_ptr_null(e.message);
	ck_assert_uint_eq(f.nreqs, 2);
	wixapi_error_cleanup(&e);

	/* A 200 without a usable token. */
	fake_tok(&f, 200, "{\"token_type\":\"Bearer\",\"expires_in\":10}");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_AUTH);
	ck_assert_int_eq(e.http_status, 200);
	wixapi_error_cleanup(&e);
	fake_tok(&f, 200, "{\"access_token\":\"a b\",\"expires_in\":10}");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_AUTH);
	wixapi_error_cleanup(&e);
	fake_tok(&f, 200, "{\"access_token\":\"ok\",\"expires_in\":\"x\"}");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_AUTH);
	wixapi_error_cleanup(&e);
	fake_tok(&f, 200, "{\"access_token\":\"ok\",\"expires_in\":10");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_AUTH);
	wixapi_error_cleanup(&e);
	ck_assert_uint_eq(f.nreqs, 6);

	/* 5xx and 429 from the token endpoint are retried like any call. */
	fake_tok(&f, 503, "busy");
	fake_tok(&f, 429, "slow down");
	f.tok[f.ntok - 1].has_ra = true;
	f.tok[f.ntok - 1].ra = 2;
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_OK);
	ck_assert_uint_eq(f.nreqs, 10);
	ck_assert_str_eq(f.reqs[8].url, TOKEN_URL);
	ck_assert_str_eq(req_header(&f.reqs[9], "Authorization"), "tok-1");
	/* Jitter after the 503 (a 0 is no sleep at all), then exactly
	 * Retry-After. */
	ck_assert_int_le(f.reqs[7].t - f.reqs[6].t, 100);
	ck_assert_int_eq(f.reqs[8].t - f.reqs[7].t, 2000);
	ck_assert_int_eq(c.sleeps[c.nsleeps - 1], 2000);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);

	/* An oversized token answer: not retried, no query sent, and the
	 * error says it was the token's, not the call's own answer. */
	f.tok[f.ntok++] = (struct fake_resp){ .rc = RS_ERR_TOOBIG };
	ck_assert_int_eq(query(w, "inst-big", NULL, &p, &e), RS_ERR_TOOBIG);
	ck_assert_msg(e.token, "an oversized token answer is not flagged "
	    "as the token's");
	ck_assert_uint_eq(f.nreqs, 11);
	ck_assert_str_eq(f.reqs[10].url, TOKEN_URL);
	wixapi_error_cleanup(&e);
	wixapi_free(w);

	/* Token endpoint down for good: RS_ERR_BUSY after max_attempts. */
	o.max_attempts = 3;
	w = mk(&o);
	fake_tok(&f, 500, "");
	fake_tok(&f, 502, "");
	fake_tok(&f, 504, "");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_BUSY);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 3);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_api_key)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;
	struct fclock c;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	o.app_id = NULL;
	o.app_secret = NULL;
	o.api_key = API_KEY;
	o.site_id = SITE_ID;
	w = mk(&o);
	query_ok(w, NULL);
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 2);
	ck_assert_str_eq(f.reqs[0].url, QUERY_URL);
	ck_assert_str_eq(req_header(&f.reqs[0], "Authorization"), API_KEY);
	ck_assert_str_eq(req_header(&f.reqs[0], "wix-site-id"), SITE_ID);
	ck_assert_str_eq(req_header(&f.reqs[1], "Authorization"), API_KEY);
	/* One budget and one count for the site. */
	ck_assert_uint_eq(wixapi_requests_sent(w, NULL), 2);
	ck_assert_uint_eq(wixapi_requests_sent(w, "other"), 2);

	/* No token to refresh: a 401 is final at once. */
	fake_api(&f, 401, "{\"message\":\"bad key\"}");
	ck_assert_int_eq(wixapi_call(w, NULL, "GET", "/x", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(e.http_status, 401);
	ck_assert_str_eq(e.message, "bad key");
	ck_assert_uint_eq(f.nreqs, 3);
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_bad_arguments)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;

	fake_init(&f, NULL);
	opts_init(&o, &f, NULL);
	w = mk(&o);
	/* An unusable instance id: err->message says so (caller cleans). */
	ck_assert_int_eq(wixapi_call(w, NULL, "GET", "/x", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_ptr_nonnull(e.message);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(wixapi_call(w, "", "GET", "/x", NULL, &r, &e),
	    RS_ERR_INPUT);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(wixapi_call(w, "a\nb", "GET", "/x", NULL, &r, &e),
	    RS_ERR_INPUT);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(wixapi_call(w, INST, "GET", "x", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(wixapi_call(w, INST, "GET", "/a b", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(wixapi_call(w, INST, "HEAD", "/x", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(e.http_status, 0);
	ck_assert_uint_eq(f.nreqs, 0);
	wixapi_free(w);
	fake_cleanup(&f);
}
END_TEST

/* ---- retries ------------------------------------------------------------ */

START_TEST(test_retry_after)
{
	struct wixapi_options o;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	static const int64_t ra[] = { 2, 100, 0, -5 };
	static const int64_t want[] = { 2000, 5000, -1, -1 };
	size_t i, before;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	query_ok(w, INST);	/* the token */
	for (i = 0; i < 4; i++) {
		before = f.nreqs;
		c.nsleeps = 0;
		fake_api(&f, i == 3 ? 503 : 429, "");
		f.api[f.napi - 1].has_ra = true;
		f.api[f.napi - 1].ra = ra[i];
		query_ok(w, INST);
		ck_assert_uint_eq(f.nreqs, before + 2);
		if (want[i] < 0)
			/* Retry-After 0 or past: at once, no sleep. */
			ck_assert_uint_eq(c.nsleeps, 0);
		else {
			ck_assert_uint_eq(c.nsleeps, 1);
			ck_assert_int_eq(c.sleeps[0], want[i]);
		}
		ck_assert_int_eq(f.reqs[before + 1].t - f.reqs[before].t,
		    want[i] < 0 ? 0 : want[i]);
	}
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_backoff_jitter)
{
	struct wixapi_options o;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	int64_t lo = INT64_MAX, hi = -1;
	size_t i, k;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	o.backoff_base_ms = 100;
	o.backoff_max_ms = 250;
	w = mk(&o);
	query_ok(w, INST);
	/* Three 429s without Retry-After: caps 100, 200, then 250.  The
	 * fake clock moves only in sleeps, so the gaps are the waits. */
	for (k = 0; k < 3; k++)
		fake_api(&f, 429, "");
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 6);
	ck_assert_int_le(f.reqs[3].t - f.reqs[2].t, 100);
	ck_assert_int_le(f.reqs[4].t - f.reqs[3].t, 200);
	ck_assert_int_le(f.reqs[5].t - f.reqs[4].t, 250);
	ck_assert_int_ge(f.reqs[3].t - f.reqs[2].t, 0);
	/* Full jitter: spread over [0, 100], not a constant. */
	for (i = 0; i < 60; i++) {
		int64_t d;

		fake_api(&f, 503, "");
		query_ok(w, INST);
		d = f.reqs[f.nreqs - 1].t - f.reqs[f.nreqs - 2].t;
		ck_assert_int_ge(d, 0);
		ck_assert_int_le(d, 100);
		if (d < lo)
			lo = d;
		if (d > hi)
			hi = d;
	}
	for (i = 0; i < c.nsleeps; i++)
		ck_assert_int_gt(c.sleeps[i], 0);
	ck_assert_int_lt(lo, 40);
	ck_assert_int_gt(hi, 60);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_5xx_then_ok)
{
	struct wixapi_options o;
	struct wixapi *w;
	struct fake f;
	struct fclock c;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	fake_api(&f, 500, "oops");
	fake_api(&f, 502, "<html>bad gateway</html>");
	fake_api(&f, 504, "");
	fake_api(&f, 200, "{\"refunds\":[" REFUND("r-1", "\"1.00\"") "]}");
	{
		struct wixapi_page p;
		struct wixapi_error e;

		ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_OK);
		ck_assert_uint_eq(p.n, 1);
		ck_assert_str_eq(p.refunds[0].id, "r-1");
		wixapi_page_cleanup(&p);
		wixapi_error_cleanup(&e);
	}
	ck_assert_uint_eq(f.nreqs, 5);
	ck_assert_uint_le(c.nsleeps, 3);
	/* An I/O error is retried too. */
	f.api[f.napi].rc = RS_ERR_IO;
	f.napi++;
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 7);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

START_TEST(test_retries_exhausted)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	int i;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	query_ok(w, INST);
	for (i = 0; i < 4; i++)
		fake_api(&f, i % 2 ? 429 : 503, "");
	fake_api(&f, 200, "{\"refunds\":[]}");	/* never reached */
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_BUSY);
	ck_assert_uint_eq(f.nreqs, 6);
	ck_assert_uint_eq(f.iapi, 4);
	ck_assert_int_eq(e.http_status, 0);
	ck_assert_uint_eq(p.n, 0);
	wixapi_error_cleanup(&e);
	/* Transport errors: the same. */
	f.iapi = f.napi = 0;
	for (i = 0; i < 4; i++)
		f.api[f.napi++].rc = RS_ERR_IO;
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_BUSY);
	ck_assert_uint_eq(f.nreqs, 10);
	wixapi_error_cleanup(&e);
	/* Oversized: not retried. */
	f.iapi = f.napi = 0;
	f.api[f.napi++].rc = RS_ERR_TOOBIG;
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_TOOBIG);
	ck_assert_uint_eq(f.nreqs, 11);
	ck_assert(!e.token);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

START_TEST(test_4xx_error)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;
	struct fclock c;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	fake_api(&f, 428, ERROR_BODY);
	f.api[0].request_id = "rid-428";
	ck_assert_int_eq(wixapi_call(w, INST, "POST",
	    "/payments/refunds/v1/refunds", "{\"refund\":{}}", &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(e.http_status, 428);
	ck_assert_str_eq(e.code, "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH");
	ck_assert_str_eq(e.description, "sum differs");
	ck_assert_str_eq(e.message, "bad refund");
	ck_assert_str_eq(e.violations, "refund.amount: must be positive (MIN); "
	    "refund.chargeId: required (REQUIRED)");
	ck_assert_str_eq(e.request_id, "rid-428");
	ck_assert_int_eq(r.status, 0);
	ck_assert_ptr_null(r.body);
	/* Not retried. */
	ck_assert_uint_eq(f.nreqs, 2);
	ck_assert_str_eq(f.reqs[1].body, "{\"refund\":{}}");
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);
	ck_assert_ptr_null(e.code);

	/* A body that is not JSON: only the status and request id. */
	fake_api(&f, 404, "<html>not found</html>");
	f.api[1].request_id = "rid-404";
	ck_assert_int_eq(wixapi_call(w, INST, "GET", "/nope", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(e.http_status, 404);
	ck_assert_ptr_null(e.code);
	ck_assert_ptr_null(e.description);
	ck_assert_ptr_null(e.message);
	ck_assert_ptr_null(e.violations);
	ck_assert_str_eq(e.request_id, "rid-404");
	wixapi_error_cleanup(&e);

	/* A redirect is not followed: final. */
	fake_api(&f, 302, "");
	ck_assert_int_eq(wixapi_call(w, INST, "GET", "/moved", NULL, &r, &e),
	    RS_ERR_INPUT);
	ck_assert_int_eq(e.http_status, 302);
	ck_assert_uint_eq(f.nreqs, 4);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

/* ---- Query Refunds ------------------------------------------------------ */

START_TEST(test_query_bodies)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;
	const cJSON *q, *s, *cp, *fl;
	cJSON *b;

	fake_init(&f, NULL);
	opts_init(&o, &f, NULL);
	w = mk(&o);

	/* First page with a filter. */
	ck_assert_int_eq(wixapi_query_refunds(w, INST, NULL, 50,
	    "ch-\"1\\", &p, &e), RS_OK);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	b = parse(f.reqs[1].body);
	ck_assert_int_eq(nmembers(b), 1);
	q = json_get_object(b, "query");
	ck_assert_int_eq(nmembers(q), 3);
	fl = json_get_object(q, "filter");
	ck_assert_int_eq(nmembers(fl), 1);
	ck_assert_str_eq(json_get_string(fl, "chargeId"), "ch-\"1\\");
	s = json_get_array(q, "sort");
	ck_assert_int_eq(cJSON_GetArraySize(s), 1);
	ck_assert_int_eq(nmembers(cJSON_GetArrayItem(s, 0)), 2);
	ck_assert_str_eq(json_get_string(cJSON_GetArrayItem(s, 0),
	    "fieldName"), "createdDate");
	ck_assert_str_eq(json_get_string(cJSON_GetArrayItem(s, 0), "order"),
	    "ASC");
	cp = json_get_object(q, "cursorPaging");
	ck_assert_int_eq(nmembers(cp), 1);
	ck_assert_int_eq(json_get(cp, "limit")->valueint, 50);
	cJSON_Delete(b);

	/* First page without one; the limit clamped to 100. */
	ck_assert_int_eq(wixapi_query_refunds(w, INST, NULL, 0, NULL, &p,
	    &e), RS_OK);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	b = parse(f.reqs[2].body);
	q = json_get_object(b, "query");
	ck_assert_int_eq(nmembers(q), 2);
	ck_assert_ptr_null(json_get(q, "filter"));
	ck_assert_ptr_nonnull(json_get_array(q, "sort"));
	ck_assert_int_eq(json_get(json_get_object(q, "cursorPaging"),
	    "limit")->valueint, 100);
	cJSON_Delete(b);

	/* A follow-up: only the cursor and the limit, even with a
	 * charge_id. */
	ck_assert_int_eq(wixapi_query_refunds(w, INST, "cur-\"2\"", 500,
	    "ch-1", &p, &e), RS_OK);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	b = parse(f.reqs[3].body);
	ck_assert_int_eq(nmembers(b), 1);
	q = json_get_object(b, "query");
	ck_assert_int_eq(nmembers(q), 1);
	cp = json_get_object(q, "cursorPaging");
	ck_assert_int_eq(nmembers(cp), 2);
	ck_assert_int_eq(json_get(cp, "limit")->valueint, 100);
	ck_assert_str_eq(json_get_string(cp, "cursor"), "cur-\"2\"");
	cJSON_Delete(b);
	ck_assert_str_eq(f.reqs[3].url, QUERY_URL);
	ck_assert_str_eq(f.reqs[3].method, "POST");
	wixapi_free(w);
	fake_cleanup(&f);
}
END_TEST

START_TEST(test_page_parse)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;

	fake_init(&f, NULL);
	opts_init(&o, &f, NULL);
	w = mk(&o);
	fake_api(&f, 200, "{\"refunds\":[" REFUND("r-1", "\"12.95\"") ","
	    REFUND("r-2", "\"0.50\"") "],\"pagingMetadata\":{\"count\":2,"
	    "\"cursors\":{\"next\":\"CUR-NEXT\",\"prev\":\"p\"},"
	    "\"hasNext\":true}}");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_OK);
	ck_assert_uint_eq(p.n, 2);
	ck_assert_str_eq(p.refunds[0].id, "r-1");
	ck_assert_str_eq(p.refunds[0].amount, "12.95");
	ck_assert_str_eq(p.refunds[0].currency, "USD");
	ck_assert_int_eq(p.refunds[0].revision, 3);
	ck_assert_str_eq(p.refunds[1].id, "r-2");
	ck_assert_str_eq(p.refunds[1].amount, "0.50");
	ck_assert_str_eq(p.next_cursor, "CUR-NEXT");
	ck_assert(p.has_next);
	ck_assert_int_eq(e.http_status, 0);
	wixapi_page_cleanup(&p);
	ck_assert_ptr_null(p.refunds);
	wixapi_error_cleanup(&e);

	/* The last page: no next cursor, hasNext false. */
	fake_api(&f, 200, "{\"refunds\":[" REFUND("r-3", "\"1\"") "],"
	    "\"pagingMetadata\":{\"count\":1,\"cursors\":{},"
	    "\"hasNext\":false}}");
	ck_assert_int_eq(query(w, INST, "CUR-NEXT", &p, &e), RS_OK);
	ck_assert_uint_eq(p.n, 1);
	ck_assert_ptr_null(p.next_cursor);
	ck_assert(!p.has_next);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);

	/* hasNext absent: false; an empty cursor is none; empty page. */
	fake_api(&f, 200, "{\"refunds\":[],\"pagingMetadata\":{\"cursors\":"
	    "{\"next\":\"\"}}}");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_OK);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_ptr_null(p.refunds);
	ck_assert_ptr_null(p.next_cursor);
	ck_assert(!p.has_next);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);

	/* hasNext true with a cursor but no pagingMetadata.count. */
	fake_api(&f, 200, "{\"refunds\":[],\"pagingMetadata\":{\"hasNext\":"
	    "true,\"cursors\":{\"next\":\"N2\"}}}");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_OK);
	ck_assert(p.has_next);
	ck_assert_str_eq(p.next_cursor, "N2");
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	fake_cleanup(&f);
}
END_TEST

START_TEST(test_page_bad)
{
	static const char *const bodies[] = {
		/* truncated */
		"{\"refunds\":[" REFUND("r-1", "\"12.95\"") ",{\"id\":\"r-2\"",
		/* a numeric amount */
		"{\"refunds\":[" REFUND("r-1", "\"12.95\"") ","
		    REFUND("r-2", "12.95") "]}",
		/* no refunds array */
		"{\"pagingMetadata\":{\"hasNext\":false}}",
		"{\"refunds\":{}}",
		"[]",
		"",
		"{\"refunds\":[],\"pagingMetadata\":{\"hasNext\":\"yes\"}}",
		"{\"refunds\":[],\"pagingMetadata\":{\"cursors\":"
		    "{\"next\":7}}}",
		"{\"refunds\":[],\"pagingMetadata\":[]}",
		"{\"refunds\":[]} trailing",
		"{\"refunds\":[],\"refunds\":[]}",
		"{\"refunds\":[" REFUND("r-1", "\"12.95\"") ",7]}",
	};
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;
	size_t i;

	fake_init(&f, NULL);
	opts_init(&o, &f, NULL);
	w = mk(&o);
	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		fake_api(&f, 200, bodies[i]);
		f.api[f.napi - 1].request_id = "rid-bad";
		memset(&p, 0x5a, sizeof(p));
		ck_assert_msg(query(w, INST, NULL, &p, &e) == RS_ERR_INPUT,
		    "body %zu", i);
		ck_assert_uint_eq(p.n, 0);
		ck_assert_ptr_null(p.refunds);
		ck_assert_ptr_null(p.next_cursor);
		ck_assert_int_eq(e.http_status, 200);
		ck_assert_str_eq(e.request_id, "rid-bad");
		wixapi_error_cleanup(&e);
	}
	/* Each page was one request: not retried here. */
	ck_assert_uint_eq(f.nreqs, 1 + sizeof(bodies) / sizeof(bodies[0]));
	wixapi_free(w);
	fake_cleanup(&f);
}
END_TEST

START_TEST(test_cursor_rejected)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct wixapi *w;
	struct fake f;

	fake_init(&f, NULL);
	opts_init(&o, &f, NULL);
	w = mk(&o);
	fake_api(&f, 400, "{\"message\":\"bad\",\"details\":{"
	    "\"applicationError\":{\"code\":\"INVALID_CURSOR\"}}}");
	ck_assert_int_eq(query(w, INST, "old", &p, &e), RS_ERR_RANGE);
	ck_assert_int_eq(e.http_status, 400);
	ck_assert_str_eq(e.code, "INVALID_CURSOR");
	wixapi_error_cleanup(&e);
	fake_api(&f, 400, "{\"message\":\"The Cursor has expired\"}");
	ck_assert_int_eq(query(w, INST, "old", &p, &e), RS_ERR_RANGE);
	wixapi_error_cleanup(&e);
	fake_api(&f, 400, "{\"details\":{\"validationError\":{"
	    "\"fieldViolations\":[{\"field\":\"query.cursorPaging.cursor\","
	    "\"description\":\"invalid\"}]}}}");
	ck_assert_int_eq(query(w, INST, "old", &p, &e), RS_ERR_RANGE);
	wixapi_error_cleanup(&e);
	/* Without a cursor it is a plain bad request. */
	fake_api(&f, 400, "{\"message\":\"The Cursor has expired\"}");
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_INPUT);
	wixapi_error_cleanup(&e);
	/* With a cursor, an error about something else. */
	fake_api(&f, 400, "{\"message\":\"limit too large\"}");
	ck_assert_int_eq(query(w, INST, "old", &p, &e), RS_ERR_INPUT);
	ck_assert_str_eq(e.message, "limit too large");
	wixapi_error_cleanup(&e);
	fake_api(&f, 400, "cursor? not JSON");
	ck_assert_int_eq(query(w, INST, "old", &p, &e), RS_ERR_INPUT);
	wixapi_error_cleanup(&e);
	ck_assert_uint_eq(f.nreqs, 7);
	wixapi_free(w);
	fake_cleanup(&f);
}
END_TEST

/* ---- the request budget ------------------------------------------------- */

/* Loop 0: the private ring; 1: a shared budget file. */
START_TEST(test_budget_window)
{
	struct wixapi_options o;
	struct tbudget tb;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	size_t i, j, n;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	o.requests_per_minute = 5;
	o.budget_path = tb_init(&tb, _i != 0);
	w = mk(&o);
	/* 24 requests: the token, then 23 pages. */
	for (i = 0; i < 23; i++)
		query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 24);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 24);
	/* Bursts of 5, one window apart. */
	for (i = 0; i < f.nreqs; i++)
		ck_assert_int_eq(f.reqs[i].t, (int64_t)(i / 5) * 60000);
	/* No 60 s window holds more than 5. */
	for (i = 0; i < f.nreqs; i++) {
		for (n = 0, j = 0; j < f.nreqs; j++)
			if (f.reqs[j].t >= f.reqs[i].t &&
			    f.reqs[j].t < f.reqs[i].t + 60000)
				n++;
		ck_assert_uint_le(n, 5);
	}

	/* Spread requests: the window slides, it does not reset. */
	c.now = 1000000;
	for (i = 0; i < 5; i++) {
		query_ok(w, INST);
		fc_advance(&c, 10000);
	}
	/* 5 sent at 1000000 .. 1040000; the 6th must wait for the first
	 * to be 60 s old: 1060000, not 1050000. */
	query_ok(w, INST);
	ck_assert_int_eq(f.reqs[f.nreqs - 1].t, 1060000);
	query_ok(w, INST);
	ck_assert_int_eq(f.reqs[f.nreqs - 1].t, 1070000);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
	tb_cleanup(&tb);
}
END_TEST

/* Retries and token requests spend the same budget. */
START_TEST(test_budget_counts_everything)
{
	struct wixapi_options o;
	struct tbudget tb;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	size_t i;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	o.requests_per_minute = 3;
	o.budget_path = tb_init(&tb, _i != 0);
	o.backoff_base_ms = 1;
	o.backoff_max_ms = 1;
	w = mk(&o);
	fake_tok(&f, 500, "");
	fake_api(&f, 503, "");
	fake_api(&f, 401, "");
	/* tok 500, tok, api 503 | api 401, tok, api 200 */
	query_ok(w, INST);
	ck_assert_uint_eq(f.nreqs, 6);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 6);
	for (i = 3; i < 6; i++)
		ck_assert_int_ge(f.reqs[i].t, 60000);
	ck_assert_int_le(f.reqs[2].t, 2);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
	tb_cleanup(&tb);
}
END_TEST

struct waiter {
	struct wixapi	*w;
	const char	*inst;
	enum rs_status	 st;
};

static void *
waiter_main(void *arg)
{
	struct waiter *wt = arg;
	struct wixapi_page p;
	struct wixapi_error e;

	wt->st = query(wt->w, wt->inst, NULL, &p, &e);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	return NULL;
}

/* A caller waiting for one instance's budget holds up no other. */
START_TEST(test_budget_independent)
{
	struct wixapi_options o;
	struct tbudget tb;
	struct waiter wt;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	struct timespec ts;
	pthread_t th;
	int rc = 0;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	o.requests_per_minute = 2;
	o.budget_path = tb_init(&tb, _i != 0);
	w = mk(&o);
	query_ok(w, INST);	/* token + page: A's budget is spent */
	c.hold = true;
	wt.w = w;
	wt.inst = INST;
	wt.st = RS_ERR_INTERNAL;
	ck_assert_int_eq(pthread_create(&th, NULL, waiter_main, &wt), 0);
	pthread_mutex_lock(&c.mu);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	while (c.sleeping == 0 && rc == 0)
		rc = pthread_cond_timedwait(&c.cv, &c.mu, &ts);
	pthread_mutex_unlock(&c.mu);
	ck_assert_int_eq(rc, 0);
	/* A is asleep waiting for its budget; B goes straight through. */
	query_ok(w, INST2);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST2), 2);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 2);
	pthread_mutex_lock(&c.mu);
	c.hold = false;
	pthread_cond_broadcast(&c.cv);
	pthread_mutex_unlock(&c.mu);
	pthread_join(th, NULL);
	ck_assert_int_eq(wt.st, RS_OK);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 3);
	ck_assert_int_eq(f.reqs[f.nreqs - 1].t, 60000);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
	tb_cleanup(&tb);
}
END_TEST

/* ---- threads ------------------------------------------------------------ */

struct worker {
	struct wixapi	*w;
	const char	*inst;
	int		 ok;
};

static void *
worker_main(void *arg)
{
	struct worker *wk = arg;
	int i;

	tl_instance = wk->inst;
	for (i = 0; i < 40; i++) {
		struct wixapi_page p;
		struct wixapi_error e;

		if (query(wk->w, wk->inst, NULL, &p, &e) == RS_OK)
			wk->ok++;
		wixapi_page_cleanup(&p);
		wixapi_error_cleanup(&e);
	}
	return NULL;
}

START_TEST(test_concurrent)
{
	struct wixapi_options o;
	struct tbudget tb;
	struct worker wk[2];
	struct wixapi *w;
	struct fake f;
	pthread_t th[2];
	int i;

	fake_init(&f, NULL);
	f.token_per_instance = true;
	opts_init(&o, &f, NULL);
	o.budget_path = tb_init(&tb, _i != 0);
	w = mk(&o);
	wk[0].inst = INST;
	wk[1].inst = INST2;
	for (i = 0; i < 2; i++) {
		wk[i].w = w;
		wk[i].ok = 0;
		ck_assert_int_eq(pthread_create(&th[i], NULL, worker_main,
		    &wk[i]), 0);
	}
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(wk[0].ok, 40);
	ck_assert_int_eq(wk[1].ok, 40);
	ck_assert_int_eq(f.auth_mismatch, 0);
	ck_assert_uint_eq(f.nreqs, 82);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 41);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST2), 41);
	wixapi_free(w);
	fake_cleanup(&f);
	tb_cleanup(&tb);
}
END_TEST

/* ---- the budget shared between clients and processes -------------------- */

/* Two clients on one budget file and one clock, taking turns on one
 * instance: together they keep to rpm, as one client would, and both
 * get requests through all along. */
START_TEST(test_shared_two_clients)
{
	struct wixapi_options o;
	struct tbudget tb;
	struct wixapi *w[2];
	struct fake f[2];
	struct fclock c;
	int64_t t[64] = { 0 };
	size_t nt = 0, i, k, m, seen;

	fc_init(&c);
	tb_init(&tb, true);
	for (k = 0; k < 2; k++) {
		fake_init(&f[k], &c);
		opts_init(&o, &f[k], &c);
		o.requests_per_minute = 5;
		o.budget_path = tb.path;
		w[k] = mk(&o);
	}
	for (i = 0; i < 20; i++)
		for (k = 0; k < 2; k++)
			query_ok(w[k], INST);
	for (k = 0; k < 2; k++) {
		/* A token and 20 pages each. */
		ck_assert_uint_eq(f[k].nreqs, 21);
		ck_assert_uint_eq(wixapi_requests_sent(w[k], INST), 21);
		for (i = 0; i < f[k].nreqs; i++)
			t[nt++] = f[k].reqs[i].t;
	}
	qsort(t, nt, sizeof(t[0]), cmp_i64);
	/* Bursts of 5, one window apart: 42 requests in 9 windows. */
	for (i = 0; i < nt; i++)
		ck_assert_int_eq(t[i], (int64_t)(i / 5) * 60000);
	assert_windows(t, nt, 60000, 5);
	/* Each client sent in every full window. */
	for (k = 0; k < 2; k++)
		for (m = 0; m < 8; m++) {
			for (seen = 0, i = 0; i < f[k].nreqs; i++)
				if (f[k].reqs[i].t == (int64_t)m * 60000)
					seen++;
			ck_assert_msg(seen >= 2, "client %zu: %zu requests in "
			    "window %zu", k, seen, m);
		}
	for (k = 0; k < 2; k++) {
		wixapi_free(w[k]);
		fake_cleanup(&f[k]);
	}
	fc_destroy(&c);
	tb_cleanup(&tb);
}
END_TEST

static void
take_ok(struct budget *b, const char *id, size_t want_slot)
{
	int64_t wait = -1;
	size_t slot = 99;

	ck_assert_int_eq(budget_try_take(b, id, &wait, &slot), RS_OK);
	ck_assert_int_eq(wait, 0);
	ck_assert_uint_eq(slot, want_slot);
	budget_done(b, id, slot);
}

static int64_t
take_wait(struct budget *b, const char *id)
{
	int64_t wait = -1;
	size_t slot;

	ck_assert_int_eq(budget_try_take(b, id, &wait, &slot), RS_OK);
	return wait;
}

/* Ids added by turns through two budgets on one file: the file grows
 * by one slot each time and each budget remaps to see the other's.  A
 * budget with a larger rpm widens every slot, keeping the times; each
 * applies its own rpm.  A slot idle for a window is reused. */
START_TEST(test_shared_growth)
{
	struct budget *b[2], *big;
	struct tbudget tb;
	struct fclock c;
	char id[32], *why = NULL;
	off_t before, step = 0;
	int64_t wait;
	size_t slot;
	int i, k;

	fc_init(&c);
	c.now = 5000;
	tb_init(&tb, true);
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(budget_open(tb.path, 3, 60000, fc_now, &c,
		    &b[k], &why), RS_OK);
		ck_assert_ptr_null(why);
	}
	ck_assert_str_eq(budget_path(b[0]), tb.path);
	for (i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "instance:%d", i);
		before = file_size(tb.path);
		for (k = 0; k < 3; k++)
			take_ok(b[i % 2], id, (size_t)k);
		if (i == 0)
			step = file_size(tb.path) - before;
		ck_assert_int_gt(step, 3 * 8);
		ck_assert_int_eq(file_size(tb.path) - before, step);
		/* The other one sees the new slot full. */
		ck_assert_int_eq(take_wait(b[1 - i % 2], id), 60000);
	}
	for (i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "instance:%d", i);
		for (k = 0; k < 2; k++)
			ck_assert_int_eq(take_wait(b[k], id), 60000);
	}
	ck_assert_int_eq(file_size(tb.path), 64 + 8 * step);

	/* rpm 5: every slot gets room for 5 times and keeps its 3. */
	fc_advance(&c, 1000);
	ck_assert_int_eq(budget_open(tb.path, 5, 60000, fc_now, &c, &big,
	    &why), RS_OK);
	ck_assert_int_eq(file_size(tb.path), 64 + 8 * (step + 2 * 8));
	take_ok(big, "instance:0", 3);
	take_ok(big, "instance:0", 4);
	ck_assert_int_eq(take_wait(big, "instance:0"), 59000);
	ck_assert_int_eq(take_wait(b[0], "instance:0"), 59000);
	ck_assert_int_eq(take_wait(b[1], "instance:7"), 59000);
	take_ok(big, "instance:7", 3);

	/* A window after the first times, the slots holding only those
	 * (all but instance:0 and 7) are idle: new ids take them over and
	 * the file stays as it is. */
	before = file_size(tb.path);
	fc_advance(&c, 59000);
	take_ok(b[1], "instance:new", 0);	/* in instance:1's slot */
	take_ok(b[0], "instance:1", 0);		/* in instance:2's */
	ck_assert_int_eq(file_size(tb.path), before);
	/* instance:0 keeps its two times at 6000: room for one more at
	 * rpm 3, three at rpm 5. */
	take_ok(b[0], "instance:0", 0);
	ck_assert_int_eq(take_wait(b[0], "instance:0"), 1000);
	take_ok(big, "instance:0", 1);
	ck_assert_int_eq(file_size(tb.path), before);

	/* Bad ids and arguments. */
	ck_assert_int_eq(budget_try_take(b[0], "", &wait, &slot),
	    RS_ERR_INPUT);
	{
		char *longid = xcalloc(1, BUDGET_ID_MAX + 2);

		memset(longid, 'y', BUDGET_ID_MAX + 1);
		ck_assert_int_eq(budget_try_take(b[0], longid, &wait, &slot),
		    RS_ERR_INPUT);
		longid[BUDGET_ID_MAX] = '\0';
		ck_assert_int_eq(budget_try_take(b[0], longid, &wait, &slot),
		    RS_OK);
		ck_assert_int_eq(wait, 0);
		free(longid);
	}
	budget_close(big);
	ck_assert_int_eq(budget_open(tb.path, 0, 60000, NULL, NULL, &big,
	    &why), RS_ERR_INPUT);
	ck_assert_ptr_null(big);
	ck_assert_ptr_nonnull(why);
	free(why);
	for (k = 0; k < 2; k++)
		budget_close(b[k]);
	budget_close(NULL);
	fc_destroy(&c);
	tb_cleanup(&tb);
}
END_TEST

/* Claims: one holder per id among the opens of a file, given back on
 * budget_claim(false) and on close; the data is untouched. */
START_TEST(test_budget_claim)
{
	struct budget *b[2];
	struct tbudget tb;
	char *why = NULL;
	off_t size;
	int k;

	tb_init(&tb, true);
	for (k = 0; k < 2; k++)
		ck_assert_int_eq(budget_open(tb.path, 3, 60000, NULL, NULL,
		    &b[k], &why), RS_OK);
	size = file_size(tb.path);
	ck_assert_int_eq(budget_claim(b[0], "inst-a", true), RS_OK);
	ck_assert_int_eq(budget_claim(b[1], "inst-a", true), RS_ERR_BUSY);
	/* Another id is free; the holder's own open may claim again. */
	ck_assert_int_eq(budget_claim(b[1], "inst-b", true), RS_OK);
	ck_assert_int_eq(budget_claim(b[0], "inst-a", true), RS_OK);
	ck_assert_int_eq(budget_claim(b[0], "inst-b", true), RS_ERR_BUSY);
	ck_assert_int_eq(budget_claim(b[0], "inst-a", false), RS_OK);
	ck_assert_int_eq(budget_claim(b[1], "inst-a", true), RS_OK);
	/* Closing gives back every claim of that open. */
	budget_close(b[1]);
	ck_assert_int_eq(budget_claim(b[0], "inst-a", true), RS_OK);
	ck_assert_int_eq(budget_claim(b[0], "inst-b", true), RS_OK);
	ck_assert_int_eq(budget_claim(b[0], "", true), RS_ERR_INPUT);
	ck_assert_int_eq(file_size(tb.path), size);
	budget_close(b[0]);
	tb_cleanup(&tb);
}
END_TEST

static void
spoil(const char *path, off_t off, const char *bytes)
{
	int fd = open(path, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, bytes, strlen(bytes), off),
	    (ssize_t)strlen(bytes));
	close(fd);
}

/* A damaged file is rebuilt empty, with a log line naming it; one that
 * cannot be opened fails wixapi_new() with a message naming it. */
START_TEST(test_shared_rebuilt)
{
	struct wixapi_options o;
	struct capture cap = { .saved = -1 };
	struct tbudget tb;
	struct wixapi *w, *w2;
	struct fake f;
	struct fclock c;
	char *log, *why, *p;
	off_t size;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	o.requests_per_minute = 2;
	o.budget_path = tb_init(&tb, true);
	w = mk(&o);
	query_ok(w, INST);		/* token + page: full */
	size = file_size(tb.path);
	ck_assert_int_gt(size, 64);

	capture_begin(&cap);
	spoil(tb.path, 0, "garbage!");
	query_ok(w, INST);		/* at once: the history is gone */
	ck_assert_int_eq(f.reqs[2].t, 0);
	ck_assert_int_eq(truncate(tb.path, size + 3), 0);
	query_ok(w, INST);
	ck_assert_int_eq(f.reqs[3].t, 0);
	ck_assert_int_eq(truncate(tb.path, 10), 0);
	query_ok(w, INST);
	ck_assert_int_eq(f.reqs[4].t, 0);
	/* Rebuilt with one slot of one time: the next waits. */
	query_ok(w, INST);
	ck_assert_int_eq(f.reqs[5].t, 0);
	query_ok(w, INST);
	ck_assert_int_eq(f.reqs[6].t, 60000);
	ck_assert_int_eq(file_size(tb.path), size);
	/* A version from elsewhere. */
	spoil(tb.path, 8, "\x7f");
	query_ok(w, INST);
	log = capture_end(&cap);
	p = xasprintf("budget %s: bad magic: rebuilding it empty", tb.path);
	ck_assert_ptr_nonnull(strstr(log, p));
	free(p);
	ck_assert_ptr_nonnull(strstr(log, "size does not match its header: "
	    "rebuilding it empty"));
	ck_assert_ptr_nonnull(strstr(log, "shorter than its header: "
	    "rebuilding it empty"));
	ck_assert_ptr_nonnull(strstr(log, "unknown version: rebuilding it "
	    "empty"));
	free(log);
	wixapi_free(w);

	/* Garbage before anyone opened it: rebuilt at wixapi_new(). */
	capture_begin(&cap);
	spoil(tb.path, 0, "not a budget file at all, but long enough to "
	    "fill a header: 0123456789012345678901234567890123456789");
	w = mk(&o);
	log = capture_end(&cap);
	ck_assert_ptr_nonnull(strstr(log, "bad magic: rebuilding it empty"));
	free(log);
	wixapi_free(w);
	ck_assert_int_eq(file_size(tb.path), 64);

	/* A directory, then a missing one: RS_ERR_CONFIG naming the file. */
	o.budget_path = tb.dir;
	w2 = (struct wixapi *)&f;
	why = NULL;
	ck_assert_int_eq(wixapi_new(&o, &w2, &why), RS_ERR_CONFIG);
	ck_assert_ptr_null(w2);
	ck_assert_msg(strncmp(why, "request budget file ", 20) == 0 &&
	    strstr(why, tb.dir) != NULL, "%s", why);
	free(why);
	p = xasprintf("%s/nodir/b", tb.dir);
	o.budget_path = p;
	ck_assert_int_eq(wixapi_new(&o, &w2, &why), RS_ERR_CONFIG);
	ck_assert_ptr_null(w2);
	ck_assert_msg(strstr(why, p) != NULL &&
	    strstr(why, "No such file") != NULL, "%s", why);
	free(why);
	free(p);
	/* Mode 0600, no secret in it. */
	{
		struct stat sb;
		char buf[512];
		ssize_t n;
		int fd;

		ck_assert_int_eq(stat(tb.path, &sb), 0);
		ck_assert_int_eq(sb.st_mode & 0777, 0600);
		o.budget_path = tb.path;
		w = mk(&o);
		query_ok(w, INST);
		wixapi_free(w);
		fd = open(tb.path, O_RDONLY);
		ck_assert_int_ge(fd, 0);
		n = read(fd, buf, sizeof(buf));
		close(fd);
		ck_assert_int_gt(n, 64 + 14);
		ck_assert_ptr_nonnull(memmem(buf, (size_t)n,
		    "instance:" INST, strlen("instance:" INST) + 1));
		ck_assert_ptr_null(memmem(buf, (size_t)n, APP_SECRET,
		    strlen(APP_SECRET)));
		ck_assert_ptr_null(memmem(buf, (size_t)n, "tok-", 4));
	}
	/* Opened by root in a directory someone else owns: theirs. */
	if (geteuid() == 0) {
		struct stat sb;

		ck_assert_int_eq(unlink(tb.path), 0);
		ck_assert_int_eq(chown(tb.dir, 4242, 4343), 0);
		w = mk(&o);
		wixapi_free(w);
		ck_assert_int_eq(stat(tb.path, &sb), 0);
		ck_assert_int_eq(sb.st_uid, 4242);
		ck_assert_int_eq(sb.st_gid, 4343);
		ck_assert_int_eq(sb.st_mode & 0777, 0600);
	}
	fake_cleanup(&f);
	fc_destroy(&c);
	tb_cleanup(&tb);
}
END_TEST

/* After a reboot CLOCK_MONOTONIC starts over: the times left in the file
 * are in the future and have expired. */
START_TEST(test_shared_reboot)
{
	struct wixapi_options o;
	struct tbudget tb;
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	size_t i;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	o.app_id = NULL;
	o.app_secret = NULL;
	o.api_key = API_KEY;
	o.site_id = SITE_ID;
	o.requests_per_minute = 5;
	o.budget_path = tb_init(&tb, true);
	c.now = 10000000;
	w = mk(&o);
	for (i = 0; i < 5; i++)
		query_ok(w, NULL);
	wixapi_free(w);
	c.now = 1000;
	w = mk(&o);
	for (i = 0; i < 6; i++)
		query_ok(w, NULL);
	ck_assert_uint_eq(f.nreqs, 11);
	for (i = 0; i < 5; i++)
		ck_assert_int_eq(f.reqs[i].t, 10000000);
	for (i = 5; i < 10; i++)
		ck_assert_int_eq(f.reqs[i].t, 1000);
	ck_assert_int_eq(f.reqs[10].t, 61000);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
	tb_cleanup(&tb);
}
END_TEST

/* Racing takes on one id at a fixed time: exactly rpm go through in
 * all, whoever races (processes, budgets of one process, threads of one
 * budget), so none ever takes a time another took. */
#define RACE_RPM	2000

static int64_t
fixed_now(void *ctx)
{
	(void)ctx;
	return 7000;
}

/* Take until refused; how many were taken, or -1 on an error. */
static long
race_takes(struct budget *b)
{
	int64_t wait = 0;
	size_t slot;
	long n = 0;

	for (;;) {
		if (budget_try_take(b, "instance:race", &wait, &slot) != RS_OK)
			return -1;
		if (wait != 0)
			return wait == 60000 ? n : -1;
		n++;
	}
}

struct racer {
	struct budget	*b;		/* shared, or NULL: open one */
	const char	*path;
	long		 n;
};

static void *
racer_main(void *arg)
{
	struct racer *r = arg;
	struct budget *b = r->b;
	char *why = NULL;

	if (b == NULL && budget_open(r->path, RACE_RPM, 60000, fixed_now,
	    NULL, &b, &why) != RS_OK) {
		free(why);
		r->n = -1;
		return NULL;
	}
	r->n = race_takes(b);
	if (r->b == NULL)
		budget_close(b);
	return NULL;
}

START_TEST(test_shared_race)
{
	struct racer rc[4];
	struct tbudget tb;
	struct budget *b;
	pthread_t th[4];
	long *counts, total;
	char *why = NULL;
	pid_t pid[3];
	int k, status;

	/* Three processes. */
	tb_init(&tb, true);
	counts = mmap(NULL, 3 * sizeof(long), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(counts, MAP_FAILED);
	for (k = 0; k < 3; k++) {
		pid[k] = fork();
		ck_assert_int_ge(pid[k], 0);
		if (pid[k] == 0) {
			rc[0].b = NULL;
			rc[0].path = tb.path;
			racer_main(&rc[0]);
			counts[k] = rc[0].n;
			_exit(0);
		}
	}
	for (total = 0, k = 0; k < 3; k++) {
		ck_assert_int_eq(waitpid(pid[k], &status, 0), pid[k]);
		ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		ck_assert_int_ge(counts[k], 0);
		total += counts[k];
	}
	ck_assert_int_eq(total, RACE_RPM);
	munmap(counts, 3 * sizeof(long));
	tb_cleanup(&tb);

	/* Four threads: two with a budget each, two sharing one. */
	tb_init(&tb, true);
	ck_assert_int_eq(budget_open(tb.path, RACE_RPM, 60000, fixed_now,
	    NULL, &b, &why), RS_OK);
	for (k = 0; k < 4; k++) {
		rc[k].b = k < 2 ? NULL : b;
		rc[k].path = tb.path;
		rc[k].n = -1;
		ck_assert_int_eq(pthread_create(&th[k], NULL, racer_main,
		    &rc[k]), 0);
	}
	for (total = 0, k = 0; k < 4; k++) {
		pthread_join(th[k], NULL);
		ck_assert_int_ge(rc[k].n, 0);
		total += rc[k].n;
	}
	ck_assert_int_eq(total, RACE_RPM);
	budget_close(b);
	tb_cleanup(&tb);
}
END_TEST

/* The real clock, a window of SHORT_WINDOW ms. */
#define SHORT_WINDOW	400

struct sharer {
	struct wixapi	*w;
	int		 ok;
};

static void *
sharer_main(void *arg)
{
	struct sharer *sh = arg;
	int i;

	for (i = 0; i < 5; i++) {
		struct wixapi_page p;
		struct wixapi_error e;

		if (query(sh->w, INST, NULL, &p, &e) == RS_OK)
			sh->ok++;
		wixapi_page_cleanup(&p);
		wixapi_error_cleanup(&e);
	}
	return NULL;
}

/* Two clients on one file, each in its own thread, on the real clock. */
START_TEST(test_shared_threads)
{
	struct wixapi_options o;
	struct tbudget tb;
	struct sharer sh[2];
	struct fake f[2];
	pthread_t th[2];
	int64_t t[32] = { 0 };
	size_t nt = 0, i;
	int k;

	tb_init(&tb, true);
	for (k = 0; k < 2; k++) {
		fake_init(&f[k], NULL);
		opts_init(&o, &f[k], NULL);
		o.requests_per_minute = 4;
		o.budget_path = tb.path;
		o.budget_window_ms = SHORT_WINDOW;
		sh[k].w = mk(&o);
		sh[k].ok = 0;
	}
	for (k = 0; k < 2; k++)
		ck_assert_int_eq(pthread_create(&th[k], NULL, sharer_main,
		    &sh[k]), 0);
	for (k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(sh[k].ok, 5);
		ck_assert_uint_eq(f[k].nreqs, 6);
		for (i = 0; i < f[k].nreqs; i++)
			t[nt++] = f[k].reqs[i].t;
		wixapi_free(sh[k].w);
		fake_cleanup(&f[k]);
	}
	qsort(t, nt, sizeof(t[0]), cmp_i64);
	assert_windows(t, nt, SHORT_WINDOW, 4);
	/* 12 requests at 4 a window: at least 2 windows between the first
	 * and the last. */
	ck_assert_int_ge(t[nt - 1] - t[0], 2 * SHORT_WINDOW);
	tb_cleanup(&tb);
}
END_TEST

/* What the children of test_shared_processes send, in shared memory. */
struct shm_log {
	_Atomic unsigned n;
	int64_t		 t[64];
	int		 who[64];
};

static int child_no;

static enum rs_status
shm_transport(void *ctx, const struct wixapi_http_request *req,
    struct wixapi_http_response *resp)
{
	struct shm_log *l = ctx;
	unsigned i;

	(void)req;
	i = atomic_fetch_add(&l->n, 1);
	if (i < 64) {
		l->t[i] = clock_mono_ms();
		l->who[i] = child_no;
	}
	resp->status = 200;
	resp->body = xstrdup("{\"refunds\":[]}");
	resp->body_len = strlen(resp->body);
	return RS_OK;
}

/* A child's work: its own client on the file, 10 pages.  0 if all went
 * through.  No check asserts here: this is another process. */
static int
child_main(const char *path, struct shm_log *l)
{
	struct wixapi_options o;
	struct wixapi *w = NULL;
	char *why = NULL;
	int i, ok = 0;

	opts_init(&o, NULL, NULL);
	o.app_id = NULL;
	o.app_secret = NULL;
	o.api_key = API_KEY;
	o.site_id = SITE_ID;
	o.transport = shm_transport;
	o.transport_ctx = l;
	o.requests_per_minute = 5;
	o.budget_path = path;
	o.budget_window_ms = SHORT_WINDOW;
	if (wixapi_new(&o, &w, &why) != RS_OK) {
		fprintf(stderr, "child %d: %s\n", child_no, why);
		free(why);
		return 1;
	}
	for (i = 0; i < 10; i++) {
		struct wixapi_page p;
		struct wixapi_error e;

		if (query(w, NULL, NULL, &p, &e) == RS_OK)
			ok++;
		wixapi_page_cleanup(&p);
		wixapi_error_cleanup(&e);
	}
	wixapi_free(w);
	return ok == 10 ? 0 : 1;
}

/* Two processes, each with its own client on one file, on the real
 * clock: together they keep to rpm in every window. */
START_TEST(test_shared_processes)
{
	struct tbudget tb;
	struct shm_log *l;
	pid_t pid[2];
	int64_t t[64] = { 0 };
	unsigned i, n, mine[3] = { 0, 0, 0 };
	int k, status;

	tb_init(&tb, true);
	l = mmap(NULL, sizeof(*l), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(l, MAP_FAILED);
	memset(l, 0, sizeof(*l));
	atomic_init(&l->n, 0);
	for (k = 0; k < 2; k++) {
		pid[k] = fork();
		ck_assert_int_ge(pid[k], 0);
		if (pid[k] == 0) {
			child_no = k + 1;
			_exit(child_main(tb.path, l));
		}
	}
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(waitpid(pid[k], &status, 0), pid[k]);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		    "child %d: status %d", k + 1, status);
	}
	n = atomic_load(&l->n);
	ck_assert_uint_eq(n, 20);
	for (i = 0; i < n; i++) {
		t[i] = l->t[i];
		ck_assert_int_ge(l->who[i], 1);
		ck_assert_int_le(l->who[i], 2);
		mine[l->who[i]]++;
	}
	ck_assert_uint_eq(mine[1], 10);
	ck_assert_uint_eq(mine[2], 10);
	qsort(t, n, sizeof(t[0]), cmp_i64);
	assert_windows(t, n, SHORT_WINDOW, 5);
	/* 20 at 5 a window: 3 windows at least from the first to the last
	 * (each process alone would take 1). */
	ck_assert_int_ge(t[n - 1] - t[0], 3 * SHORT_WINDOW);
	munmap(l, sizeof(*l));
	tb_cleanup(&tb);
}
END_TEST

/* ---- secrets ------------------------------------------------------------ */

START_TEST(test_secrets_not_logged)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	char *log;

	fc_init(&c);
	fake_init(&f, &c);
	opts_init(&o, &f, &c);
	w = mk(&o);
	fake_tok(&f, 500, "");
	fake_tok(&f, 200, "{\"access_token\":\"ACCESS-TOKEN-XYZ\","
	    "\"expires_in\":14400}");
	fake_tok(&f, 200, "{\"access_token\":\"ACCESS-TOKEN-2ND\","
	    "\"expires_in\":14400}");
	fake_api(&f, 401, "");
	fake_api(&f, 503, "");
	f.api[1].request_id = "rid-503";
	fake_api(&f, 400, ERROR_BODY);
	fake_api(&f, 503, "");
	fake_api(&f, 200, "{}");
	log_setverbose(1);
	capture_begin(&cap);
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_INPUT);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(wixapi_call(w, INST, "GET",
	    "/payments/refunds/v1/refunds?token=QUERY-SECRET", NULL, &r, &e),
	    RS_OK);
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);
	wixapi_free(w);

	/* API-key mode too. */
	o.app_id = NULL;
	o.app_secret = NULL;
	o.api_key = API_KEY;
	o.site_id = SITE_ID;
	w = mk(&o);
	fake_api(&f, 503, "");
	fake_api(&f, 403, "{\"message\":\"nope\"}");
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_INPUT);
	wixapi_error_cleanup(&e);
	log = capture_end(&cap);
	log_setverbose(0);

	/* The failures were logged ... */
	ck_assert_ptr_nonnull(strstr(log, "POST /oauth2/token: HTTP 500"));
	ck_assert_ptr_nonnull(strstr(log, "HTTP 401"));
	ck_assert_ptr_nonnull(strstr(log, "HTTP 503 (request id rid-503)"));
	ck_assert_ptr_nonnull(strstr(log,
	    "HTTP 400 PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH"));
	ck_assert_ptr_nonnull(strstr(log, "instance " INST));
	ck_assert_ptr_nonnull(strstr(log, "site " SITE_ID));
	ck_assert_ptr_nonnull(strstr(log,
	    "GET /payments/refunds/v1/refunds: HTTP 503"));
	ck_assert_ptr_nonnull(strstr(log, "new access token"));
	/* ... and no secret, token or request body with them. */
	ck_assert_ptr_null(strstr(log, APP_SECRET));
	ck_assert_ptr_null(strstr(log, "ACCESS-TOKEN"));
	ck_assert_ptr_null(strstr(log, "client_secret"));
	ck_assert_ptr_null(strstr(log, "QUERY-SECRET"));
	ck_assert_ptr_null(strstr(log, API_KEY));
	ck_assert_ptr_null(strstr(log, "cursorPaging"));
	free(log);
	wixapi_free(w);
	fake_cleanup(&f);
	fc_destroy(&c);
}
END_TEST

/* ---- the real libcurl transport against libmicrohttpd ------------------ */

enum srv_mode {
	SRV_PAGE,		/* 200, a page, x-wix-request-id */
	SRV_BIG_CL,		/* 200, a big body with Content-Length */
	SRV_BIG_CHUNKED,	/* 200, a big chunked body */
	SRV_CUT,		/* half a page, then close (no length) */
	SRV_STALL,		/* answers after the client's timeout */
	SRV_429_ONCE,		/* 429 Retry-After: 1, then a page */
	SRV_429_PAST		/* 429 Retry-After: a past date, then a page */
};

#define SRV_PAGE_BODY							\
	"{\"refunds\":[" REFUND("r-9", "\"9.99\"") "],\"pagingMetadata\":"\
	"{\"count\":1,\"cursors\":{\"next\":\"C2\"},\"hasNext\":true}}"
#define SRV_BIG		100000
/* A stall well past the client's timeout_ms (1 s) in test_curl_mhd.  The
 * timeout is not shorter so that a normal request never hits it under
 * valgrind (scripts/valgrind.sh), which slows a request to some 300 ms. */
#define SRV_STALL_MS	3000

struct srv {
	struct MHD_Daemon	*d;
	int			 port;
	_Atomic int		 mode;
	_Atomic int		 hits;
	_Atomic int		 bad_auth;
};

static ssize_t
srv_chunked_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	if (pos >= SRV_BIG)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (max > SRV_BIG - pos)
		max = (size_t)(SRV_BIG - pos);
	memset(buf, ' ', max);
	return (ssize_t)max;
}

static ssize_t
srv_cut_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	static const char page[] = SRV_PAGE_BODY;
	size_t half = (sizeof(page) - 1) / 2;

	(void)cls;
	if (pos >= half)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (max > half - pos)
		max = (size_t)(half - pos);
	memcpy(buf, page + pos, max);
	return (ssize_t)max;
}

static enum MHD_Result
srv_handler(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	static int marker;
	static char big[SRV_BIG];
	struct srv *s = cls;
	struct MHD_Response *r;
	const char *auth, *site;
	enum MHD_Result ret;
	int mode, hit;
	long status = 200;

	(void)url;
	(void)method;
	(void)version;
	(void)upload;
	if (*con_cls == NULL) {
		*con_cls = &marker;
		return MHD_YES;
	}
	if (*upload_size > 0) {
		*upload_size = 0;
		return MHD_YES;
	}
	hit = atomic_fetch_add(&s->hits, 1);
	auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    "Authorization");
	site = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    "wix-site-id");
	if (auth == NULL || strcmp(auth, API_KEY) != 0 || site == NULL ||
	    strcmp(site, SITE_ID) != 0)
		atomic_fetch_add(&s->bad_auth, 1);
	mode = atomic_load(&s->mode);
	switch (mode) {
	case SRV_BIG_CL:
		memset(big, 'x', sizeof(big));
		r = MHD_create_response_from_buffer(sizeof(big), big,
		    MHD_RESPMEM_MUST_COPY);
		break;
	case SRV_BIG_CHUNKED:
		r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024,
		    srv_chunked_reader, NULL, NULL);
		break;
	case SRV_CUT:
		r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024,
		    srv_cut_reader, NULL, NULL);
		MHD_set_response_options(r, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT,
		    MHD_RO_END);
		break;
	case SRV_STALL:
		usleep(SRV_STALL_MS * 1000);
		/* FALLTHROUGH */
	default:
		r = MHD_create_response_from_buffer(strlen(SRV_PAGE_BODY),
		    (void *)(uintptr_t)SRV_PAGE_BODY, MHD_RESPMEM_PERSISTENT);
		if ((mode == SRV_429_ONCE || mode == SRV_429_PAST) &&
		    hit == 0) {
			status = 429;
			MHD_add_response_header(r, "x-wix-request-id",
			    "rid-429");
			MHD_add_response_header(r, "Retry-After",
			    mode == SRV_429_ONCE ? "1" :
			    "Wed, 21 Oct 2015 07:28:00 GMT");
		} else
			MHD_add_response_header(r, "x-wix-request-id",
			    "rid-page");
		break;
	}
	ret = MHD_queue_response(conn, (unsigned int)status, r);
	MHD_destroy_response(r);
	return ret;
}

static void
srv_start(struct srv *s)
{
	struct sockaddr_in sin;
	const union MHD_DaemonInfo *info;

	memset(s, 0, sizeof(*s));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = 0;
	s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, srv_handler, s,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
	    MHD_OPTION_END);
	ck_assert_ptr_nonnull(s->d);
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	ck_assert_ptr_nonnull(info);
	s->port = info->port;
	ck_assert_int_gt(s->port, 0);
}

START_TEST(test_curl_mhd)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct wixapi *w;
	struct srv s;
	char base[64], *log, *why = NULL;
	int64_t t0, dt;

	srv_start(&s);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", s.port);
	memset(&o, 0, sizeof(o));
	o.api_base = base;
	o.api_key = API_KEY;
	o.site_id = SITE_ID;
	o.max_response = 4096;
	o.connect_timeout_ms = 1000;
	o.timeout_ms = 1000;
	o.max_attempts = 2;
	o.backoff_base_ms = 1;
	o.backoff_max_ms = 1000;
	ck_assert_int_eq(wixapi_new(&o, &w, &why), RS_OK);

	/* A page, through libcurl and back. */
	atomic_store(&s.mode, SRV_PAGE);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_OK);
	ck_assert_uint_eq(p.n, 1);
	ck_assert_str_eq(p.refunds[0].id, "r-9");
	ck_assert_str_eq(p.refunds[0].amount, "9.99");
	ck_assert_str_eq(p.next_cursor, "C2");
	ck_assert(p.has_next);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(wixapi_call(w, NULL, "GET", "/anything", NULL, &r,
	    &e), RS_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, SRV_PAGE_BODY);
	ck_assert_uint_eq(r.body_len, strlen(SRV_PAGE_BODY));
	ck_assert_str_eq(r.request_id, "rid-page");
	ck_assert_int_eq(r.retry_after_s, -1);
	wixapi_http_response_cleanup(&r);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(atomic_load(&s.hits), 2);
	ck_assert_int_eq(atomic_load(&s.bad_auth), 0);

	/* Over max_response, with and without Content-Length. */
	atomic_store(&s.mode, SRV_BIG_CL);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_TOOBIG);
	wixapi_error_cleanup(&e);
	atomic_store(&s.mode, SRV_BIG_CHUNKED);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_TOOBIG);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(atomic_load(&s.hits), 4);

	/* Cut short with no length: libcurl says fine, the parse does not. */
	atomic_store(&s.mode, SRV_CUT);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_INPUT);
	ck_assert_int_eq(e.http_status, 200);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(atomic_load(&s.hits), 5);

	/* Retry-After: 1 is waited exactly (not the 1 ms backoff); a past
	 * date means at once. */
	capture_begin(&cap);
	atomic_store(&s.hits, 0);
	atomic_store(&s.mode, SRV_429_ONCE);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_OK);
	dt = clock_mono_ms() - t0;
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	atomic_store(&s.hits, 0);
	atomic_store(&s.mode, SRV_429_PAST);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_OK);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);

	/* Stalled past timeout_ms: retried, then RS_ERR_BUSY. */
	atomic_store(&s.hits, 0);
	atomic_store(&s.mode, SRV_STALL);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_BUSY);
	/* Two attempts cut at 1 s each; waiting out the stalls takes 6 s. */
	ck_assert_int_lt(clock_mono_ms() - t0, 5000);
	wixapi_error_cleanup(&e);
	ck_assert_int_eq(atomic_load(&s.hits), 2);

	/* Nobody listening: a transport error, retried, RS_ERR_BUSY. */
	MHD_stop_daemon(s.d);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_BUSY);
	wixapi_error_cleanup(&e);
	log = capture_end(&cap);

	ck_assert_int_ge(dt, 1000);
	ck_assert_int_lt(dt, 2500);
	ck_assert_ptr_nonnull(strstr(log, "HTTP 429 (request id rid-429): "
	    "attempt 1 of 2, retrying in 1000 ms (Retry-After)"));
	ck_assert_ptr_nonnull(strstr(log, "HTTP 429 (request id rid-429): "
	    "attempt 1 of 2, retrying in 0 ms (Retry-After)"));
	ck_assert_ptr_nonnull(strstr(log, "attempt 2 of 2, giving up"));
	ck_assert_ptr_nonnull(strstr(log, "timed out"));
	ck_assert_ptr_null(strstr(log, API_KEY));
	free(log);
	wixapi_free(w);
}
END_TEST

/* ---- network faults (tests/netfault.h), through real libcurl ----------- */

/*
 * Each test runs the real libcurl transport against a fault on loopback:
 * a peer that never answers the SYN, a name that does not resolve, TLS
 * servers with bad certificates or none, a Retry-After date in the
 * future, a connection reset mid-answer and a redirect.  Waits are real
 * but short (connect timeouts of 500 ms, backoff of 1 ms), and every
 * call is bounded by its own assertions on the elapsed time.
 */

#define NF_PAGE(id)							\
	"{\"refunds\":[" REFUND(id, "\"4.20\"") "],\"pagingMetadata\":"	\
	"{\"count\":1,\"cursors\":{},\"hasNext\":false}}"
#define NF_TOKEN_BODY	"{\"access_token\":\"NF-ACCESS-TOKEN\","	\
	"\"expires_in\":14400}"

/* Options for the libcurl transport to base: API-key mode (or OAuth if
 * oauth), two attempts, 1 ms backoff, short timeouts. */
static void
nf_opts(struct wixapi_options *o, const char *base, bool oauth)
{
	memset(o, 0, sizeof(*o));
	o->api_base = base;
	if (oauth) {
		o->app_id = APP_ID;
		o->app_secret = APP_SECRET;
	} else {
		o->api_key = API_KEY;
		o->site_id = SITE_ID;
	}
	o->connect_timeout_ms = 500;
	o->timeout_ms = 5000;
	o->max_attempts = 2;
	o->backoff_base_ms = 1;
	o->backoff_max_ms = 1;
	o->max_response = 65536;
}

/* "HTTP/1.1 status reason" with a JSON body, extra header lines (each
 * ending in "\r\n", or ""), Content-Length and Connection: close.
 * Caller frees. */
static char *
nf_answer(int status, const char *reason, const char *extra,
    const char *body)
{
	return xasprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	    "x-wix-request-id: rid-nf-%d\r\n%sContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", status, reason, status, extra,
	    strlen(body), body);
}

/* A peer that never answers the SYN: each attempt is cut at the connect
 * timeout (not the 5 s total timeout), retried, then RS_ERR_BUSY. */
/*
 * Some line of log holds both what and then, and says that the connect
 * timed out, in any of libcurl's wordings.
 */
static void
assert_timeout_line(const char *log, const char *what, const char *then)
{
	const char *p, *eol;

	for (p = log; (p = strstr(p, what)) != NULL; p = eol) {
		size_t n;
		char *line;
		bool ok;

		eol = strchr(p, '\n');
		if (eol == NULL)
			eol = p + strlen(p);
		n = (size_t)(eol - p);
		line = xstrndup(p, n);
		ok = strstr(line, then) != NULL &&
		    (strstr(line, " ms: Timeout was reached") != NULL ||
		    strstr(line, "Connection timeout after ") != NULL ||
		    strstr(line, "Connection timed out after ") != NULL);
		free(line);
		if (ok)
			return;
	}
	ck_abort_msg("no line with \"%s\" ... \"%s\" saying the connect "
	    "timed out in: %s", what, then, log);
}

START_TEST(test_nf_connect_timeout)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct nf_blackhole *b;
	struct wixapi *w;
	char base[64], want[128], *log;
	int64_t t0, dt, dt2;
	int port;

	b = nf_blackhole_start();
	ck_assert_ptr_nonnull(b);
	port = b->port;
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	nf_opts(&o, base, false);
	w = mk(&o);
	capture_begin(&cap);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_BUSY);
	dt = clock_mono_ms() - t0;
	ck_assert_int_eq(e.http_status, 0);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_ptr_null(p.refunds);
	wixapi_error_cleanup(&e);
	ck_assert_uint_eq(wixapi_requests_sent(w, NULL), 2);
	wixapi_free(w);

	/* OAuth: the token request hangs the same way. */
	nf_opts(&o, base, true);
	w = mk(&o);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_BUSY);
	dt2 = clock_mono_ms() - t0;
	wixapi_error_cleanup(&e);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 2);
	wixapi_free(w);
	log = capture_end(&cap);
	nf_blackhole_stop(b);

	/* Two attempts of 500 ms each, far below the 5 s total timeout. */
	ck_assert_int_ge(dt, 2 * 500 - 50);
	ck_assert_int_lt(dt, 4500);
	ck_assert_int_ge(dt2, 2 * 500 - 50);
	ck_assert_int_lt(dt2, 4500);
	/*
	 * libcurl words a connect timeout in one of three ways, depending
	 * on which of its checks sees the deadline first: "Failed to
	 * connect to ADDR port N after T ms: Timeout was reached" (usual),
	 * "Connection timeout after T ms" or "Connection timed out after T
	 * milliseconds" (seen under valgrind on a busy machine).
	 */
	assert_timeout_line(log, "POST /payments/refunds/v1/refunds/query: ",
	    "(request id none): attempt 1 of 2, retrying in");
	assert_timeout_line(log, "POST /payments/refunds/v1/refunds/query: ",
	    "attempt 2 of 2, giving up");
	assert_timeout_line(log, "instance " INST ": POST /oauth2/token: ",
	    "attempt 1 of 2, retrying in");
	snprintf(want, sizeof(want), "Failed to connect to 127.0.0.1 port %d "
	    "after ", port);
	ck_assert_msg(strstr(log, want) != NULL || strstr(log, "Connection "
	    "time") != NULL, "want %s in: %s", want, log);
	ck_assert_ptr_null(strstr(log, API_KEY));
	ck_assert_ptr_null(strstr(log, APP_SECRET));
	free(log);
}
END_TEST

/* A host name that does not resolve: a transport error naming it,
 * retried, then RS_ERR_BUSY, quickly. */
START_TEST(test_nf_dns_failure)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct wixapi *w;
	char *log;
	int64_t ms, t0, dt;

	/* The machine fails the name at once (no network round trip). */
	ck_assert(nf_unresolvable_check(&ms));
	ck_assert_int_lt(ms, 2000);
	nf_opts(&o, "https://" NF_UNRESOLVABLE_HOST, true);
	w = mk(&o);
	capture_begin(&cap);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_BUSY);
	dt = clock_mono_ms() - t0;
	ck_assert_int_eq(e.http_status, 0);
	wixapi_error_cleanup(&e);
	ck_assert_uint_eq(wixapi_requests_sent(w, INST), 2);
	wixapi_free(w);
	log = capture_end(&cap);
	ck_assert_int_lt(dt, 2 * ms + 2000);
	ck_assert_ptr_nonnull(strstr(log, "POST /oauth2/token: Could not "
	    "resolve host: " NF_UNRESOLVABLE_HOST " (request id none): "
	    "attempt 1 of 2, retrying"));
	ck_assert_ptr_nonnull(strstr(log, "attempt 2 of 2, giving up"));
	ck_assert_ptr_null(strstr(log, APP_SECRET));
	free(log);
}
END_TEST

/*
 * TLS.  wixapi has no CA option: it trusts the system's CAs only, so
 * every test certificate must fail verification.  Each case first shows
 * that the server works and what its certificate is, with a plain libcurl
 * client trusting the test CA (the good one is accepted; the others fail
 * for their own reason), then that wixapi, in OAuth mode, never gets an
 * HTTP request through: the app secret is never sent.
 */
enum nf_tls_case {
	NFT_GOOD,		/* valid, but from a CA wixapi does not know */
	NFT_SELF_SIGNED,
	NFT_EXPIRED,
	NFT_WRONG_HOST,
	NFT_PLAIN,		/* plain HTTP on an https:// URL */
	NFT_STALLED,		/* accepts, never answers the ClientHello */
	NFT_NCASES
};

static const struct {
	const char	*control;	/* libcurl with the CA: errbuf part,
					   NULL: 200 expected */
	const char	*wixapi;	/* in wixapi's log */
} nf_tls_cases[NFT_NCASES] = {
	[NFT_GOOD] = { NULL, "SSL certificate problem: unable to get local "
	    "issuer certificate" },
	[NFT_SELF_SIGNED] = { "self-signed certificate",
	    "SSL certificate problem: self-signed certificate" },
	[NFT_EXPIRED] = { "certificate has expired", "SSL certificate "
	    "problem: unable to get local issuer certificate" },
	[NFT_WRONG_HOST] = { "no alternative certificate subject name "
	    "matches target host name '127.0.0.1'", "SSL certificate "
	    "problem: unable to get local issuer certificate" },
	[NFT_PLAIN] = { "wrong version number", "wrong version number" },
	[NFT_STALLED] = { "timed out", "SSL connection timeout" },
};

static size_t
nf_discard(char *data, size_t size, size_t nmemb, void *arg)
{
	(void)data;
	(void)arg;
	return size * nmemb;
}

/* GET url with libcurl trusting only the test CA (written into dir).
 * The status (0 if none), the error text in errbuf. */
static long
nf_ca_get(const char *url, const char *dir, char *errbuf)
{
	CURL *h;
	char *ca;
	long status = 0;

	ca = nf_tls_ca_file(dir);
	ck_assert_ptr_nonnull(ca);
	h = curl_easy_init();
	ck_assert_ptr_nonnull(h);
	errbuf[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, nf_discard);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	unlink(ca);
	free(ca);
	return status;
}

START_TEST(test_nf_tls)
{
	static const enum nf_cert kinds[] = {
		[NFT_GOOD] = NF_CERT_GOOD,
		[NFT_SELF_SIGNED] = NF_CERT_SELF_SIGNED,
		[NFT_EXPIRED] = NF_CERT_EXPIRED,
		[NFT_WRONG_HOST] = NF_CERT_WRONG_HOST
	};
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct nf_tls_server *ts = NULL;
	struct nf_raw_server *rs = NULL;
	struct nf_raw_step step;
	struct wixapi *w;
	char base[64], url[96], dir[64], errbuf[CURL_ERROR_SIZE], *log, *req;
	char *ans = NULL;
	int port;
	unsigned k;
	int64_t t0, dt;

	snprintf(dir, sizeof(dir), "/tmp/check_wixapi.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	if (_i <= NFT_WRONG_HOST) {
		ts = nf_tls_start(kinds[_i], 200, NF_TOKEN_BODY);
		ck_assert_ptr_nonnull(ts);
		port = nf_tls_port(ts);
	} else {
		memset(&step, 0, sizeof(step));
		if (_i == NFT_PLAIN) {
			ans = nf_answer(200, "OK", "", NF_TOKEN_BODY);
			step.action = NF_RAW_CLOSE;
			step.data = ans;
		} else
			step.action = NF_RAW_HOLD;
		rs = nf_raw_start(&step, 1);
		ck_assert_ptr_nonnull(rs);
		port = nf_raw_port(rs);
	}
	snprintf(base, sizeof(base), "https://127.0.0.1:%d", port);

	/* The control: what the server presents, with the CA trusted. */
	snprintf(url, sizeof(url), "%s/oauth2/token", base);
	if (nf_tls_cases[_i].control == NULL)
		ck_assert_int_eq(nf_ca_get(url, dir, errbuf), 200);
	else {
		ck_assert_int_eq(nf_ca_get(url, dir, errbuf), 0);
		ck_assert_msg(strstr(errbuf, nf_tls_cases[_i].control) !=
		    NULL, "case %d: %s", _i, errbuf);
	}
	if (ts != NULL)
		ck_assert_uint_eq(nf_tls_requests(ts),
		    nf_tls_cases[_i].control == NULL ? 1 : 0);
	k = ts != NULL ? nf_tls_connections(ts) : nf_raw_connections(rs);
	ck_assert_uint_eq(k, 1);

	/* wixapi: a transport error, retried, then RS_ERR_BUSY, and the
	 * token request (the app secret) never got through.  The connect
	 * timeout covers the handshake, and loading the system's CAs under
	 * the sanitizers on a busy machine can take a good part of 500 ms:
	 * 4 s here, 1 s for the stalled handshake. */
	nf_opts(&o, base, true);
	o.connect_timeout_ms = _i == NFT_STALLED ? 1000 : 4000;
	w = mk(&o);
	capture_begin(&cap);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_BUSY);
	dt = clock_mono_ms() - t0;
	ck_assert_int_eq(e.http_status, 0);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	log = capture_end(&cap);
	ck_assert_int_lt(dt, 2 * o.connect_timeout_ms + 2000);
	if (ts != NULL) {
		ck_assert_uint_eq(nf_tls_connections(ts), 1 + 2);
		ck_assert_uint_eq(nf_tls_requests(ts),
		    nf_tls_cases[_i].control == NULL ? 1 : 0);
	} else {
		ck_assert_uint_eq(nf_raw_connections(rs), 1 + 2);
		for (k = 1; k <= 2; k++) {
			req = nf_raw_request(rs, k);
			ck_assert_ptr_nonnull(req);
			/* A ClientHello, not a request. */
			ck_assert_ptr_null(strstr(req, "POST"));
			ck_assert_ptr_null(strstr(req, APP_SECRET));
			free(req);
		}
	}
	ck_assert_msg(strstr(log, nf_tls_cases[_i].wixapi) != NULL,
	    "case %d: want \"%s\"", _i, nf_tls_cases[_i].wixapi);
	ck_assert_ptr_nonnull(strstr(log, "POST /oauth2/token: "));
	ck_assert_ptr_nonnull(strstr(log, "attempt 2 of 2, giving up"));
	ck_assert_ptr_null(strstr(log, APP_SECRET));
	if (_i == NFT_STALLED)
		/* Cut at the connect timeout, not the 5 s total. */
		ck_assert_int_ge(dt, 2 * 1000 - 50);
	free(log);
	nf_tls_stop(ts);
	nf_raw_stop(rs);
	free(ans);
	rmdir(dir);
}
END_TEST

/* Start a raw server playing steps[0..n) and write its http:// address
 * to base (of size len). */
static struct nf_raw_server *
raw_start_base(const struct nf_raw_step *steps, size_t n, char *base,
    size_t len)
{
	struct nf_raw_server *rs = nf_raw_start(steps, n);

	ck_assert_ptr_nonnull(rs);
	snprintf(base, len, "http://127.0.0.1:%d", nf_raw_port(rs));
	return rs;
}

/*
 * One query against a raw server that answers 429 with Retry-After an
 * HTTP date secs ahead, then the page of refund "r-after", with waits
 * capped at backoff_max_ms.  Returns how long the query took, in ms.
 */
static int64_t
retry_after_date_query(int secs, int backoff_max_ms)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct nf_raw_server *rs;
	struct nf_raw_step steps[2];
	struct wixapi *w;
	char base[64], *date, *hdr, *ans429, *ans200;
	int64_t t0, dt;

	date = nf_http_date(secs);
	hdr = xasprintf("Retry-After: %s\r\n", date);
	ans429 = nf_answer(429, "Too Many Requests", hdr, "{}");
	ans200 = nf_answer(200, "OK", "", NF_PAGE("r-after"));
	memset(steps, 0, sizeof(steps));
	steps[0].action = NF_RAW_CLOSE;
	steps[0].data = ans429;
	steps[1].action = NF_RAW_CLOSE;
	steps[1].data = ans200;
	rs = raw_start_base(steps, 2, base, sizeof(base));
	nf_opts(&o, base, false);
	o.backoff_max_ms = backoff_max_ms;
	w = mk(&o);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_OK);
	dt = clock_mono_ms() - t0;
	ck_assert_uint_eq(p.n, 1);
	ck_assert_str_eq(p.refunds[0].id, "r-after");
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	ck_assert_uint_eq(nf_raw_connections(rs), 2);
	wixapi_free(w);
	nf_raw_stop(rs);
	free(ans200);
	free(ans429);
	free(hdr);
	free(date);
	return dt;
}

/* Retry-After as an HTTP date in the future: waited for, capped at
 * backoff_max_ms, not taken for the 1 ms backoff nor for a huge wait. */
START_TEST(test_nf_retry_after_date)
{
	struct capture cap = { .saved = -1 };
	int64_t dt, dt2;
	char *log;

	capture_begin(&cap);
	/* Three seconds ahead: a wait of 2-3 s (whole seconds, counted
	 * when the answer arrives). */
	dt = retry_after_date_query(3, 10000);
	/* A day ahead: capped at backoff_max_ms (1.5 s here). */
	dt2 = retry_after_date_query(86400, 1500);
	log = capture_end(&cap);

	ck_assert_msg(strstr(log, "HTTP 429 (request id rid-nf-429): attempt "
	    "1 of 2, retrying in 3000 ms (Retry-After)") != NULL ||
	    strstr(log, "HTTP 429 (request id rid-nf-429): attempt 1 of 2, "
	    "retrying in 2000 ms (Retry-After)") != NULL, "log: %s", log);
	ck_assert_int_ge(dt, 1950);
	ck_assert_int_lt(dt, 4500);
	ck_assert_ptr_nonnull(strstr(log, "HTTP 429 (request id rid-nf-429): "
	    "attempt 1 of 2, retrying in 1500 ms (Retry-After)"));
	ck_assert_int_ge(dt2, 1450);
	ck_assert_int_lt(dt2, 3000);
	free(log);
}
END_TEST

/*
 * A connection reset after the headers and part of the body, with
 * Content-Length and chunked: each is a transport error, retried; the
 * page returned is the whole one from the last answer, nothing of the
 * cut ones.  With no attempts left, nothing at all.
 */
START_TEST(test_nf_reset_mid_answer)
{
	static const char cut[] = NF_PAGE("r-cut");
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct nf_raw_server *rs;
	struct nf_raw_step steps[3];
	struct wixapi *w;
	char base[64], *log, *a_cl, *a_chunk, *a_ok, *req;

	a_cl = xasprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%.*s", strlen(cut),
	    (int)(strlen(cut) / 2), cut);
	a_chunk = xasprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json"
	    "\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n%x\r\n%.*s",
	    strlen(cut), cut, 40, 20, cut);
	a_ok = nf_answer(200, "OK", "", NF_PAGE("r-whole"));
	memset(steps, 0, sizeof(steps));
	steps[0].action = NF_RAW_RESET;
	steps[0].data = a_cl;
	steps[1].action = NF_RAW_RESET;
	steps[1].data = a_chunk;
	steps[2].action = NF_RAW_CLOSE;
	steps[2].data = a_ok;
	rs = raw_start_base(steps, 3, base, sizeof(base));
	nf_opts(&o, base, false);
	o.max_attempts = 3;
	w = mk(&o);
	capture_begin(&cap);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_OK);
	ck_assert_uint_eq(p.n, 1);
	ck_assert_str_eq(p.refunds[0].id, "r-whole");
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	ck_assert_uint_eq(nf_raw_connections(rs), 3);
	/* Each attempt was the whole request, with the credentials. */
	req = nf_raw_request(rs, 1);
	ck_assert_ptr_nonnull(req);
	ck_assert_ptr_nonnull(strstr(req, "\"cursorPaging\""));
	free(req);
	wixapi_free(w);
	nf_raw_stop(rs);

	/* One attempt only: RS_ERR_BUSY, nothing of the page. */
	rs = raw_start_base(steps, 1, base, sizeof(base));
	nf_opts(&o, base, false);
	o.max_attempts = 1;
	w = mk(&o);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_BUSY);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_ptr_null(p.refunds);
	ck_assert_int_eq(e.http_status, 0);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	wixapi_free(w);
	log = capture_end(&cap);
	nf_raw_stop(rs);

	ck_assert_ptr_nonnull(strstr(log, "Recv failure: Connection reset by "
	    "peer (request id none): attempt 1 of 3, retrying"));
	ck_assert_ptr_nonnull(strstr(log, "Recv failure: Connection reset by "
	    "peer (request id none): attempt 2 of 3, retrying"));
	ck_assert_ptr_nonnull(strstr(log, "Connection reset by peer (request "
	    "id none): attempt 1 of 1, giving up"));
	free(log);
	free(a_cl);
	free(a_chunk);
	free(a_ok);
}
END_TEST

/*
 * A 3xx from Wix is not followed: a call is RS_ERR_INPUT naming the
 * status, not retried; the token endpoint's is RS_ERR_AUTH; and the
 * redirect's target never sees a request, so no credential reaches it.
 */
START_TEST(test_nf_redirect)
{
	static const int codes[] = { 301, 302, 303, 307, 308 };
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct nf_raw_server *rs, *target;
	struct nf_raw_step step;
	struct wixapi *w;
	char base[64], *loc, *ans, *log, *req, *ok, want[96];
	size_t i;

	ok = nf_answer(200, "OK", "", NF_PAGE("r-stolen"));
	memset(&step, 0, sizeof(step));
	step.action = NF_RAW_CLOSE;
	step.data = ok;
	target = nf_raw_start(&step, 1);
	ck_assert_ptr_nonnull(target);
	loc = xasprintf("Location: http://127.0.0.1:%d/steal\r\n",
	    nf_raw_port(target));
	capture_begin(&cap);
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		ans = nf_answer(codes[i], "Moved", loc, "{\"message\":"
		    "\"moved\"}");
		step.data = ans;
		rs = nf_raw_start(&step, 1);
		ck_assert_ptr_nonnull(rs);
		snprintf(base, sizeof(base), "http://127.0.0.1:%d",
		    nf_raw_port(rs));

		/* API key: a call, a first page, a page with a cursor. */
		nf_opts(&o, base, false);
		w = mk(&o);
		ck_assert_int_eq(wixapi_call(w, NULL, "GET", "/anything",
		    NULL, &r, &e), RS_ERR_INPUT);
		ck_assert_int_eq(e.http_status, codes[i]);
		ck_assert_str_eq(e.message, "moved");
		snprintf(want, sizeof(want), "rid-nf-%d", codes[i]);
		ck_assert_str_eq(e.request_id, want);
		wixapi_http_response_cleanup(&r);
		wixapi_error_cleanup(&e);
		ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_ERR_INPUT);
		ck_assert_int_eq(e.http_status, codes[i]);
		wixapi_error_cleanup(&e);
		ck_assert_int_eq(query(w, NULL, "CURSOR-1", &p, &e),
		    RS_ERR_INPUT);
		wixapi_error_cleanup(&e);
		wixapi_free(w);
		/* One request each, not retried, with the credentials
		 * (it is the configured host). */
		ck_assert_uint_eq(nf_raw_connections(rs), 3);
		req = nf_raw_request(rs, 0);
		ck_assert_ptr_nonnull(strstr(req, "Authorization: " API_KEY));
		free(req);

		/* OAuth: the token endpoint's redirect is RS_ERR_AUTH. */
		nf_opts(&o, base, true);
		w = mk(&o);
		ck_assert_int_eq(query(w, INST, NULL, &p, &e), RS_ERR_AUTH);
		ck_assert_int_eq(e.http_status, codes[i]);
		wixapi_error_cleanup(&e);
		wixapi_free(w);
		ck_assert_uint_eq(nf_raw_connections(rs), 4);
		nf_raw_stop(rs);
		free(ans);
	}
	log = capture_end(&cap);
	/* The target saw nothing. */
	ck_assert_uint_eq(nf_raw_connections(target), 0);
	nf_raw_stop(target);
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		snprintf(want, sizeof(want), "GET /anything: HTTP %d "
		    "(request id rid-nf-%d)", codes[i], codes[i]);
		ck_assert_msg(strstr(log, want) != NULL, "want %s", want);
		snprintf(want, sizeof(want), "the token endpoint answered "
		    "a redirect (HTTP %d", codes[i]);
		ck_assert_msg(strstr(log, want) != NULL, "want %s", want);
	}
	ck_assert_ptr_null(strstr(log, "retrying"));
	ck_assert_ptr_null(strstr(log, "refused the app credentials"));
	ck_assert_ptr_null(strstr(log, API_KEY));
	ck_assert_ptr_null(strstr(log, APP_SECRET));
	free(log);
	free(loc);
	free(ok);
}
END_TEST

/* ---- stop -------------------------------------------------------------- */

/*
 * wixapi_stop() from another thread while a call waits: in a connect
 * that never completes, a TLS handshake that never gets an answer, a
 * body that stalls half-way, a Retry-After of two minutes and a full
 * request budget.  Every timeout and wait is far longer than the test:
 * the call must come back with RS_ERR_STOPPING within 1 s of the stop
 * (measured, and printed), without a retry or a failure in the log.
 */

#define STOP_DELAY_MS	200
#define STOP_BOUND_MS	1000
/* Under valgrind (scripts/valgrind.sh sets RS_VALGRIND): libcurl loads
 * the system's CA certificates while the TLS handshake waits, about a
 * second of CPU there, and cannot be stopped meanwhile. */
#define STOP_BOUND_VALGRIND_MS	10000

/* Calls wixapi_stop(w) delay_ms after it starts, and notes when. */
struct stopper {
	pthread_t	 tid;
	struct wixapi	*w;
	int64_t		 delay_ms;
	/* If set, delay_ms counts from when this server has the first
	 * bytes of its first connection: the client is then waiting for
	 * the server, not still setting up (loading CA certificates takes
	 * over a second under valgrind). */
	const struct nf_raw_server *after;
	_Atomic int64_t	 at;		/* clock_mono_ms() of the stop */
};

/* Has s read anything on its first connection yet? */
static bool
raw_has_request(const struct nf_raw_server *s)
{
	char *req = nf_raw_request(s, 0);
	bool got = req != NULL && *req != '\0';

	free(req);
	return got;
}

static void *
stopper_main(void *arg)
{
	struct stopper *s = arg;
	struct timespec ts;
	int64_t t0 = clock_mono_ms();

	while (s->after != NULL && !raw_has_request(s->after) &&
	    clock_mono_ms() - t0 < 60000) {
		ts.tv_sec = 0;
		ts.tv_nsec = 5 * 1000000L;
		(void)nanosleep(&ts, NULL);
	}
	ts.tv_sec = (time_t)(s->delay_ms / 1000);
	ts.tv_nsec = (long)(s->delay_ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		continue;
	atomic_store(&s->at, clock_mono_ms());
	wixapi_stop(s->w);
	return NULL;
}

/*
 * query() on w (for inst) with wixapi_stop(w) STOP_DELAY_MS in (after
 * the raw server after has the request, if set), from another thread:
 * RS_ERR_STOPPING, *p and *e empty, not before the stop and within
 * STOP_BOUND_MS of it.  Then a second call is refused at once, sending
 * nothing.  Returns the latency (ms from the stop).
 */
static int64_t
query_stopped(struct wixapi *w, const char *inst, const char *what,
    const struct nf_raw_server *after)
{
	struct stopper s;
	struct wixapi_page p;
	struct wixapi_error e;
	int64_t t0, t1, lat;
	uint64_t sent;

	memset(&s, 0, sizeof(s));
	s.w = w;
	s.delay_ms = STOP_DELAY_MS;
	s.after = after;
	atomic_init(&s.at, 0);
	ck_assert(!wixapi_stopped(w));
	t0 = clock_mono_ms();
	ck_assert_int_eq(pthread_create(&s.tid, NULL, stopper_main, &s), 0);
	ck_assert_int_eq(query(w, inst, NULL, &p, &e), RS_ERR_STOPPING);
	t1 = clock_mono_ms();
	ck_assert_int_eq(pthread_join(s.tid, NULL), 0);
	ck_assert(wixapi_stopped(w));
	ck_assert_uint_eq(p.n, 0);
	ck_assert_ptr_null(p.refunds);
	ck_assert_ptr_null(p.next_cursor);
	ck_assert_int_eq(e.http_status, 0);
	ck_assert_ptr_null(e.request_id);
	ck_assert_ptr_null(e.code);
	ck_assert_int_ge(t1 - t0, STOP_DELAY_MS - 10);
	lat = t1 - atomic_load(&s.at);
	printf("wixapi stop latency, %s: %lld ms\n", what, (long long)lat);
	ck_assert_msg(lat >= 0 && lat < (getenv("RS_VALGRIND") != NULL ?
	    STOP_BOUND_VALGRIND_MS : STOP_BOUND_MS), "%s: returned %lld ms "
	    "after the stop", what, (long long)lat);

	/* Stopped for good: the next call sends nothing. */
	sent = wixapi_requests_sent(w, inst);
	t0 = clock_mono_ms();
	ck_assert_int_eq(query(w, inst, "CURSOR-2", &p, &e), RS_ERR_STOPPING);
	ck_assert_int_lt(clock_mono_ms() - t0, 100);
	ck_assert_uint_eq(p.n, 0);
	ck_assert_int_eq(e.http_status, 0);
	ck_assert_uint_eq(wixapi_requests_sent(w, inst), sent);
	return lat;
}

/* Options for a stop test against base: long timeouts, the default 8
 * attempts and backoff (up to 60 s). */
static void
stop_opts(struct wixapi_options *o, const char *base, bool oauth)
{
	nf_opts(o, base, oauth);
	o->connect_timeout_ms = 20000;
	o->timeout_ms = 30000;
	o->max_attempts = 0;
	o->backoff_base_ms = 0;
	o->backoff_max_ms = 0;
}

/* The log of a stopped call: no attempt failed, nothing retried. */
static void
assert_quiet_stop(const char *log)
{
	ck_assert_ptr_null(strstr(log, "attempt "));
	ck_assert_ptr_null(strstr(log, "giving up"));
	ck_assert_ptr_null(strstr(log, "Timeout"));
	ck_assert_ptr_null(strstr(log, "stopped"));
	ck_assert_ptr_null(strstr(log, API_KEY));
	ck_assert_ptr_null(strstr(log, APP_SECRET));
}

/* A connect that never completes (the SYN is dropped), API key and
 * OAuth (the token request is the one that hangs). */
START_TEST(test_stop_connect)
{
	struct wixapi_options o;
	struct capture cap = { .saved = -1 };
	struct nf_blackhole *b;
	struct wixapi *w;
	const char *inst = _i == 0 ? NULL : INST;
	char base[64], *log;

	b = nf_blackhole_start();
	ck_assert_ptr_nonnull(b);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", b->port);
	stop_opts(&o, base, _i == 1);
	w = mk(&o);
	capture_begin(&cap);
	(void)query_stopped(w, inst, _i == 0 ? "connect" : "connect (token)",
	    NULL);
	log = capture_end(&cap);
	ck_assert_uint_eq(wixapi_requests_sent(w, inst), 1);
	assert_quiet_stop(log);
	free(log);
	wixapi_free(w);
	nf_blackhole_stop(b);
}
END_TEST

/*
 * Run query_stopped() against a raw server playing step, over https://
 * if tls, in OAuth mode (instance INST) if oauth, else API-key mode:
 * one connection, one request attempted.  Returns what was logged
 * (caller frees).
 */
static char *
stop_on_raw(const struct nf_raw_step *step, bool tls, bool oauth,
    const char *what)
{
	struct wixapi_options o;
	struct capture cap = { .saved = -1 };
	struct nf_raw_server *rs;
	struct wixapi *w;
	const char *inst = oauth ? INST : NULL;
	char base[64], *log;

	rs = nf_raw_start(step, 1);
	ck_assert_ptr_nonnull(rs);
	snprintf(base, sizeof(base), "%s://127.0.0.1:%d", tls ? "https" :
	    "http", nf_raw_port(rs));
	stop_opts(&o, base, oauth);
	w = mk(&o);
	capture_begin(&cap);
	(void)query_stopped(w, inst, what, rs);
	log = capture_end(&cap);
	ck_assert_uint_eq(nf_raw_connections(rs), 1);
	ck_assert_uint_eq(wixapi_requests_sent(w, inst), 1);
	wixapi_free(w);
	nf_raw_stop(rs);
	return log;
}

/* https:// to a server that accepts and never answers the ClientHello. */
START_TEST(test_stop_tls_handshake)
{
	struct nf_raw_step step;
	char *log;

	memset(&step, 0, sizeof(step));
	step.action = NF_RAW_HOLD;
	log = stop_on_raw(&step, true, true, "TLS handshake");
	assert_quiet_stop(log);
	free(log);
}
END_TEST

/* An answer whose body stops half-way, the connection held open. */
START_TEST(test_stop_stalled_body)
{
	struct nf_raw_step step;
	char *log;

	memset(&step, 0, sizeof(step));
	step.action = NF_RAW_HOLD;
	step.data = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Content-Length: 5000\r\n\r\n{\"refunds\":[";
	log = stop_on_raw(&step, false, false, "stalled body");
	assert_quiet_stop(log);
	free(log);
}
END_TEST

/* A 503 with Retry-After: 120 (capped to the 60 s backoff): the stop
 * ends the wait; no second attempt. */
START_TEST(test_stop_retry_after)
{
	struct nf_raw_step step;
	char *log, *ans;

	ans = nf_answer(503, "Service Unavailable", "Retry-After: 120\r\n",
	    "{}");
	memset(&step, 0, sizeof(step));
	step.action = NF_RAW_CLOSE;
	step.data = ans;
	log = stop_on_raw(&step, false, false, "Retry-After wait");
	/* The 503 itself is logged, as any failed attempt; then nothing. */
	ck_assert_ptr_nonnull(strstr(log, "HTTP 503 (request id rid-nf-503): "
	    "attempt 1 of 8, retrying in 60000 ms (Retry-After)"));
	ck_assert_ptr_null(strstr(log, "attempt 2"));
	ck_assert_ptr_null(strstr(log, "giving up"));
	free(log);
	free(ans);
}
END_TEST

/* A full request budget (1 a minute): the second call waits for a
 * slot; the stop ends the wait and nothing is sent. */
START_TEST(test_stop_budget_wait)
{
	struct wixapi_options o;
	struct wixapi_page p;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct nf_raw_server *rs;
	struct nf_raw_step step;
	struct wixapi *w;
	char base[64], *log, *ans;

	ans = nf_answer(200, "OK", "", NF_PAGE("r-1"));
	memset(&step, 0, sizeof(step));
	step.action = NF_RAW_CLOSE;
	step.data = ans;
	rs = raw_start_base(&step, 1, base, sizeof(base));
	stop_opts(&o, base, false);
	o.requests_per_minute = 1;
	w = mk(&o);
	ck_assert_int_eq(query(w, NULL, NULL, &p, &e), RS_OK);
	ck_assert_uint_eq(p.n, 1);
	wixapi_page_cleanup(&p);
	wixapi_error_cleanup(&e);
	capture_begin(&cap);
	(void)query_stopped(w, NULL, "budget wait", NULL);
	log = capture_end(&cap);
	ck_assert_uint_eq(nf_raw_connections(rs), 1);
	ck_assert_uint_eq(wixapi_requests_sent(w, NULL), 1);
	assert_quiet_stop(log);
	free(log);
	wixapi_free(w);
	nf_raw_stop(rs);
	free(ans);
}
END_TEST

static void
stop_hook(void *arg)
{
	wixapi_stop(arg);
}

/*
 * The fake transport and clock: a stop that comes while an attempt is
 * in flight.  If the attempt then fails (a transport error, a 503), the
 * call is RS_ERR_STOPPING at once: no backoff sleep, no second attempt,
 * nothing logged.  A whole answer that arrived is returned as usual.
 */
START_TEST(test_stop_fake)
{
	struct wixapi_options o;
	struct wixapi_http_response r;
	struct wixapi_error e;
	struct capture cap = { .saved = -1 };
	struct wixapi *w;
	struct fake f;
	struct fclock c;
	char *log;
	int k;

	wixapi_stop(NULL);
	ck_assert(!wixapi_stopped(NULL));
	capture_begin(&cap);
	for (k = 0; k < 3; k++) {
		fc_init(&c);
		fake_init(&f, &c);
		opts_init(&o, &f, &c);
		w = mk(&o);
		query_ok(w, INST);		/* the token */
		if (k == 0) {
			fake_api(&f, 0, NULL);
			f.api[f.napi - 1].rc = RS_ERR_IO;
		} else
			fake_api(&f, k == 1 ? 503 : 200, "{\"ok\":1}");
		f.hook = stop_hook;
		f.hook_arg = w;
		f.hook_at = f.nreqs;
		ck_assert_int_eq(wixapi_call(w, INST, "GET", "/x", NULL, &r,
		    &e), k == 2 ? RS_OK : RS_ERR_STOPPING);
		/* The token, the first query, this call: once. */
		ck_assert_uint_eq(f.nreqs, 3);
		ck_assert_uint_eq(c.nsleeps, 0);
		ck_assert(wixapi_stopped(w));
		if (k == 2) {
			ck_assert_int_eq(r.status, 200);
			ck_assert_str_eq(r.body, "{\"ok\":1}");
		} else {
			ck_assert_int_eq(r.status, 0);
			ck_assert_ptr_null(r.body);
			ck_assert_ptr_null(r.error);
		}
		ck_assert_int_eq(e.http_status, 0);
		wixapi_http_response_cleanup(&r);
		wixapi_error_cleanup(&e);
		/* Every later call: refused before the transport. */
		ck_assert_int_eq(wixapi_call(w, INST, "GET", "/x", NULL, &r,
		    &e), RS_ERR_STOPPING);
		ck_assert_uint_eq(f.nreqs, 3);
		wixapi_free(w);
		fake_cleanup(&f);
		fc_destroy(&c);
	}
	log = capture_end(&cap);
	ck_assert_ptr_null(strstr(log, "attempt"));
	ck_assert_ptr_null(strstr(log, "HTTP 503"));
	free(log);
}
END_TEST

static Suite *
wixapi_suite(void)
{
	Suite *s = suite_create("wixapi");
	TCase *tc = tcase_create("fake");
	TCase *tn = tcase_create("libcurl");
	TCase *tf = tcase_create("netfault");
	TCase *ts = tcase_create("stop");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_new_errors);
	tcase_add_test(tc, test_token_cached);
	tcase_add_test(tc, test_token_expiry);
	tcase_add_test(tc, test_401_refresh_once);
	tcase_add_test(tc, test_401_race);
	tcase_add_test(tc, test_token_refused);
	tcase_add_test(tc, test_api_key);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_retry_after);
	tcase_add_test(tc, test_backoff_jitter);
	tcase_add_test(tc, test_5xx_then_ok);
	tcase_add_test(tc, test_retries_exhausted);
	tcase_add_test(tc, test_4xx_error);
	tcase_add_test(tc, test_query_bodies);
	tcase_add_test(tc, test_page_parse);
	tcase_add_test(tc, test_page_bad);
	tcase_add_test(tc, test_cursor_rejected);
	tcase_add_loop_test(tc, test_budget_window, 0, 2);
	tcase_add_loop_test(tc, test_budget_counts_everything, 0, 2);
	tcase_add_loop_test(tc, test_budget_independent, 0, 2);
	tcase_add_loop_test(tc, test_concurrent, 0, 2);
	tcase_add_test(tc, test_shared_two_clients);
	tcase_add_test(tc, test_shared_growth);
	tcase_add_test(tc, test_budget_claim);
	tcase_add_test(tc, test_shared_rebuilt);
	tcase_add_test(tc, test_shared_reboot);
	tcase_add_test(tc, test_shared_race);
	tcase_add_test(tc, test_shared_threads);
	tcase_add_test(tc, test_shared_processes);
	tcase_add_test(tc, test_secrets_not_logged);
	suite_add_tcase(s, tc);
	tcase_set_timeout(tn, 60);
	tcase_add_test(tn, test_curl_mhd);
	suite_add_tcase(s, tn);
	tcase_set_timeout(tf, 60);
	tcase_add_test(tf, test_nf_connect_timeout);
	tcase_add_test(tf, test_nf_dns_failure);
	tcase_add_loop_test(tf, test_nf_tls, 0, NFT_NCASES);
	tcase_add_test(tf, test_nf_retry_after_date);
	tcase_add_test(tf, test_nf_reset_mid_answer);
	tcase_add_test(tf, test_nf_redirect);
	suite_add_tcase(s, tf);
	tcase_set_timeout(ts, 30);
	tcase_add_loop_test(ts, test_stop_connect, 0, 2);
	tcase_add_test(ts, test_stop_tls_handshake);
	tcase_add_test(ts, test_stop_stalled_body);
	tcase_add_test(ts, test_stop_retry_after);
	tcase_add_test(ts, test_stop_budget_wait);
	tcase_add_test(ts, test_stop_fake);
	suite_add_tcase(s, ts);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	xmalloc_init_json();
	log_init(0, false);
	sr = srunner_create(wixapi_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
