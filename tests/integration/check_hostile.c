/*
 * check_hostile.c: the HARDENING.md checklist (rows 1-17 and 26-28)
 * against the real binary.
 *
 * Every case asserts the exact status, that nothing was stored for a
 * rejection, and that the daemon still serves afterwards: a fresh valid
 * webhook gets 200 and /healthz gets 200.  Hostile tokens are built byte
 * for byte with testutil's OpenSSL signer, so the daemon's own JWT code
 * is never trusted to make its test input.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "util/buf.h"
#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST	"inst-hostile"

#define ASSERT_SQL_INT(d, want, ...) do {				\
	int64_t got_ = tu_sql_int((d), INT64_MIN, __VA_ARGS__);	\
	ck_assert_msg(got_ == (int64_t)(want),				\
	    "query %s: got %lld, want %lld", #__VA_ARGS__,		\
	    (long long)got_, (long long)(want));			\
} while (0)

#define ASSERT_SQL(d, want, ...) do {					\
	char *got_ = tu_sqlf((d), __VA_ARGS__);				\
	const char *want_ = (want);					\
	ck_assert_msg((want_ == NULL && got_ == NULL) ||		\
	    (want_ != NULL && got_ != NULL && strcmp(want_, got_) == 0),\
	    "query %s: got \"%s\", want \"%s\"", #__VA_ARGS__,		\
	    got_ != NULL ? got_ : "(null)",				\
	    want_ != NULL ? want_ : "(null)");				\
	free(got_);							\
} while (0)

static struct tu_daemon *
start(const char *server_conf)
{
	struct tu_conf conf;
	struct tu_daemon *d;

	memset(&conf, 0, sizeof(conf));
	conf.server = server_conf;
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	return d;
}

/* A valid refund webhook for a fresh refund and event, signed by key. */
static char *
valid_token(const char *key)
{
	struct tu_refund r;
	struct tu_event ev;
	char *rid = tu_random_id("rf-"), *evid = tu_random_id("evt-"), *tok;

	memset(&r, 0, sizeof(r));
	r.id = rid;
	r.charge_id = "ch-h";
	r.currency = "USD";
	r.amount = "9.99";
	r.status = "SUCCEEDED";
	r.revision = 1;
	r.created_date = r.updated_date = "2025-08-09T15:26:24.000Z";
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = TU_CREATED;
	ev.seq = -1;
	tok = tu_refund_webhook(key, &ev, &r, INST);
	ck_assert_ptr_nonnull(tok);
	free(rid);
	free(evid);
	return tok;
}

/* The layer B text of a valid refund event (fresh ids). */
static char *
valid_layer_b(void)
{
	struct tu_event ev;
	char *rid = tu_random_id("rf-"), *evid = tu_random_id("evt-");
	char *entity, *c, *b;

	entity = xasprintf("{\"id\":\"%s\",\"chargeId\":\"ch-h\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1.00\",\"status\":"
	    "\"SUCCEEDED\",\"revision\":\"1\"}", rid);
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = TU_CREATED;
	ev.seq = -1;
	ev.entity_json = entity;
	c = tu_layer_c(&ev);
	b = tu_layer_b(c, INST, TU_EVT_CREATED);
	free(rid);
	free(evid);
	free(entity);
	free(c);
	return b;
}

/* Sign claims text RS256 with d's key under the usual header. */
static char *
sign(const struct tu_daemon *d, const char *claims)
{
	char *tok = tu_jwt_rs256(d->key.priv_pem, TU_DEFAULT_HDR, claims);

	ck_assert_ptr_nonnull(tok);
	return tok;
}

/* Claims around a valid layer B, with the time members given as text. */
static char *
claims_with(const char *times)
{
	char *b = valid_layer_b(), *q = tu_json_quote(b), *out;

	out = xasprintf("{\"data\":%s,%s}", q, times);
	free(b);
	free(q);
	return out;
}

/* POST len bytes of body; assert the status and the error body shape. */
static void
expect_status(const struct tu_daemon *d, const char *what, const void *body,
    size_t len, int want)
{
	struct tu_http_resp resp;
	char code[8];
	const char *needles[2] = { code, NULL };
	size_t mark = tu_daemon_log_size(d);
	int st;

	st = tu_http_post(d->port, "/webhooks", body, len, &resp);
	ck_assert_msg(st == want, "%s: got %d, want %d (body %s)", what, st,
	    want, resp.body != NULL ? resp.body : "-");
	if (want != 200) {
		ck_assert_msg(tu_is_error_json(resp.body),
		    "%s: error body is not {\"error\",\"reason\"}: %s", what,
		    resp.body != NULL ? resp.body : "(none)");
		/* "One log line with the reason" for every rejection. */
		snprintf(code, sizeof(code), " %d", want);
		ck_assert_msg(tu_daemon_wait_log(d, mark, needles, 2000),
		    "%s: no log line with \"%s\"", what, code);
	}
	tu_http_resp_cleanup(&resp);
}

static void
expect_token(const struct tu_daemon *d, const char *what, const char *tok,
    int want)
{
	expect_status(d, what, tok, strlen(tok), want);
}

/* Sign claims and expect want. */
static void
expect_claims(const struct tu_daemon *d, const char *what,
    const char *claims, int want)
{
	char *tok = sign(d, claims);

	expect_token(d, what, tok, want);
	free(tok);
}

/* Wrap layer C text into a valid B and claims, sign, expect want. */
static void
expect_layer_c(const struct tu_daemon *d, const char *what, const char *c,
    int want)
{
	char *tok = tu_webhook(d->key.priv_pem, c, INST, TU_EVT_CREATED);

	expect_token(d, what, tok, want);
	free(tok);
}

static void
assert_nothing_stored(const struct tu_daemon *d)
{
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM refunds");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM webhook_events");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM changes");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM instances");
}

/* Still serving: /healthz and a valid webhook (which is then stored). */
static void
assert_alive(const struct tu_daemon *d)
{
	int64_t before = tu_sql_int(d, -1, "SELECT count(*) FROM refunds");
	char *tok = valid_token(d->key.priv_pem);

	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
	ASSERT_SQL_INT(d, before + 1, "SELECT count(*) FROM refunds");
	free(tok);
}

/* A body of n base64url characters shaped like a token. */
static char *
filler_token(size_t n)
{
	char *s = xmalloc(n + 1);
	size_t i;

	for (i = 0; i < n; i++)
		s[i] = "ABCDEFGHabcdefgh0123456789-_"[i % 28];
	if (n > 10) {
		s[n / 3] = '.';
		s[2 * n / 3] = '.';
	}
	s[n] = '\0';
	return s;
}

/* ---- 1: body over max_body ----------------------------------------- */

START_TEST(test_01_body_too_large)
{
	struct tu_daemon *d = start("max_body = 4096");
	struct tu_http_resp resp;
	struct buf b;
	char *big, *req, *tok;
	size_t i;
	int st;

	/* Declared too large: refused on the headers alone, no body sent. */
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 100000000\r\nContent-Type: text/plain\r\n\r\n");
	st = tu_http_raw(d->port, req, strlen(req), 5000, &resp);
	ck_assert_int_eq(st, 413);
	ck_assert(tu_is_error_json(resp.body));
	tu_http_resp_cleanup(&resp);
	free(req);

	/* Declared and sent. */
	big = filler_token(8192);
	expect_status(d, "8 KiB body", big, 8192, 413);
	/* The boundary: 4096 is allowed (and is no token), 4097 is not. */
	expect_status(d, "4096 bytes", big, 4096, 401);
	expect_status(d, "4097 bytes", big, 4097, 413);

	/* Chunked, with no length up front: 4 chunks of 2 KiB. */
	buf_init(&b, 1u << 20);
	(void)buf_appends(&b, "POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
	for (i = 0; i < 4; i++) {
		(void)buf_appends(&b, "800\r\n");
		(void)buf_append(&b, big, 2048);
		(void)buf_appends(&b, "\r\n");
	}
	(void)buf_appends(&b, "0\r\n\r\n");
	st = tu_http_raw(d->port, b.data, b.len, 5000, &resp);
	ck_assert_msg(st == 413, "chunked 8 KiB: got %d", st);
	ck_assert(tu_is_error_json(resp.body));
	tu_http_resp_cleanup(&resp);
	buf_cleanup(&b);
	assert_nothing_stored(d);

	/* A real token is well under the cap, and chunked is fine. */
	tok = valid_token(d->key.priv_pem);
	ck_assert_uint_lt(strlen(tok), 4096);
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
	    "%zx\r\n%s\r\n0\r\n\r\n", strlen(tok), tok);
	ck_assert_int_eq(tu_http_raw(d->port, req, strlen(req), 5000, NULL),
	    200);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM refunds");
	assert_alive(d);
	free(req);
	free(tok);
	free(big);
	tu_daemon_free(d);
}
END_TEST

/* ---- 2: framing ---------------------------------------------------- */

START_TEST(test_02_transfer_encoding)
{
	struct tu_daemon *d = start(NULL);
	struct tu_http_resp resp;
	char *tok, *req;
	int st;

	tok = valid_token(d->key.priv_pem);

	/* TE and CL together: a smuggling shape.  The chunked body is a
	 * valid webhook, so acting on it would answer 200. */
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
	    "Connection: close\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n", strlen(tok),
	    tok);
	st = tu_http_raw(d->port, req, strlen(req), 5000, &resp);
	ck_assert_msg(st == 400, "TE+CL: got %d", st);
	ck_assert(tu_is_error_json(resp.body));
	tu_http_resp_cleanup(&resp);
	free(req);

	/* A transfer coding other than chunked, with and without CL. */
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: gzip\r\nConnection: close\r\n\r\n%s", tok);
	st = tu_http_raw(d->port, req, strlen(req), 5000, &resp);
	ck_assert_msg(st == 400, "TE gzip: got %d", st);
	tu_http_resp_cleanup(&resp);
	free(req);
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Transfer-Encoding: gzip\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", strlen(tok), tok);
	st = tu_http_raw(d->port, req, strlen(req), 5000, &resp);
	ck_assert_msg(st == 400, "TE gzip + CL: got %d", st);
	tu_http_resp_cleanup(&resp);
	free(req);
	/* Two different Content-Lengths: MHD would frame the body by the
	 * first, and the rest of the body would be read as a second
	 * request on the same connection.  One 400, then the close. */
	{
		static const char smuggle[] = "POST /webhooks HTTP/1.1\r\n"
		    "Host: x\r\nContent-Length: 3\r\nContent-Length: 37\r\n"
		    "\r\nabcGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
		int fd, st2 = 0;

		fd = tu_connect(NULL, d->port, 5000);
		ck_assert_int_ge(fd, 0);
		ck_assert(write(fd, smuggle, sizeof(smuggle) - 1) ==
		    (ssize_t)(sizeof(smuggle) - 1));
		st = tu_read_response(fd, 5000, &resp);
		ck_assert_msg(st == 400, "two Content-Lengths: got %d", st);
		ck_assert(tu_is_error_json(resp.body));
		ck_assert_msg(strstr(resp.body, "conflicting content-length")
		    != NULL, "%s", resp.body);
		tu_http_resp_cleanup(&resp);
		ck_assert_msg(tu_wait_closed(fd, 5000, &st2) >= 0,
		    "the connection stayed open");
		ck_assert_msg(st2 == -1, "the smuggled request was answered "
		    "(%d)", st2);
		close(fd);
		{
			static const char *const line[] = { "400",
			    "conflicting Content-Length headers", NULL };

			ck_assert(tu_daemon_wait_log(d, 0, line, 5000));
		}
	}
	/* The same value twice frames the body one way: accepted. */
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: %zu\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", strlen(tok), strlen(tok), tok);
	st = tu_http_raw(d->port, req, strlen(req), 5000, &resp);
	ck_assert_msg(st == 200, "CL twice, same value: got %d", st);
	tu_http_resp_cleanup(&resp);
	free(req);
	assert_alive(d);
	free(tok);
	tu_daemon_free(d);
}
END_TEST

/* ---- 3: header block over the pool --------------------------------- */

START_TEST(test_03_huge_headers)
{
	struct tu_daemon *d = start(NULL);
	char *tok, *big, *req;
	size_t n = 64 * 1024;
	int st;

	tok = valid_token(d->key.priv_pem);
	big = xmalloc(n + 1);
	memset(big, 'a', n);
	big[n] = '\0';
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", big,
	    strlen(tok), tok);
	st = tu_http_raw(d->port, req, strlen(req), 5000, NULL);
	ck_assert_msg(st == 431, "64 KiB header: got %d", st);
	free(req);

	/* Many small headers add up the same way. */
	{
		char *many = xmalloc(2000 * 40 + 1), *p = many;
		int i;

		for (i = 0; i < 2000; i++)
			p += snprintf(p, 41, "X-H%05d: %028d\r\n", i, i);
		req = xasprintf("GET /healthz HTTP/1.1\r\nHost: x\r\n%s"
		    "Connection: close\r\n\r\n", many);
		st = tu_http_raw(d->port, req, strlen(req), 5000, NULL);
		ck_assert_msg(st == 431, "2000 headers: got %d", st);
		free(req);
		free(many);
	}
	assert_nothing_stored(d);
	assert_alive(d);
	free(big);
	free(tok);
	tu_daemon_free(d);
}
END_TEST

/* ---- 4: slowloris -------------------------------------------------- */

struct slow {
	int		 port;
	const char	*head;	/* sent at once */
	const char	*drip;	/* then one byte of this per interval */
	int		 interval_ms;
	int		 closed_ms;	/* OUT: time to close, -1 never */
	int		 status;	/* OUT: a status seen, or -1 */
};

static void *
slow_client(void *arg)
{
	struct slow *s = arg;
	int64_t start = clock_mono_ms();
	size_t i = 0, dl = strlen(s->drip);
	int fd, r, st;

	s->closed_ms = -1;
	s->status = -1;
	if ((fd = tu_connect(NULL, s->port, 2000)) == -1) {
		s->closed_ms = 0;
		return NULL;
	}
	if (s->head[0] != '\0' && !tu_send_all(fd, s->head,
	    strlen(s->head))) {
		s->closed_ms = (int)(clock_mono_ms() - start);
		goto out;
	}
	while (clock_mono_ms() - start < 10000) {
		r = tu_wait_closed(fd, s->interval_ms, &st);
		if (st != -1)
			s->status = st;
		if (r >= 0) {
			s->closed_ms = (int)(clock_mono_ms() - start);
			break;
		}
		if (dl > 0 && !tu_send_all(fd, s->drip + (i++ % dl), 1)) {
			s->closed_ms = (int)(clock_mono_ms() - start);
			break;
		}
	}
out:
	close(fd);
	return NULL;
}

/* Start slow clients, check that others are served meanwhile and that
 * every slow one is cut off within limit_ms. */
static void
run_slow(struct tu_daemon *d, struct slow *s, size_t n, int limit_ms)
{
	pthread_t th[8];
	int64_t t0;
	size_t i;
	int k;

	for (i = 0; i < n; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, slow_client,
		    &s[i]), 0);
	tu_sleep_ms(300);
	for (k = 0; k < 3; k++) {
		char *tok = valid_token(d->key.priv_pem);

		t0 = clock_mono_ms();
		ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
		ck_assert_int_eq(tu_daemon_post(d, tok, NULL), 200);
		ck_assert_msg(clock_mono_ms() - t0 < 1500,
		    "a normal client waited %lld ms behind slow ones",
		    (long long)(clock_mono_ms() - t0));
		free(tok);
		tu_sleep_ms(300);
	}
	for (i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < n; i++) {
		ck_assert_msg(s[i].closed_ms >= 0 && s[i].closed_ms <= limit_ms,
		    "slow client %zu (%.20s...) closed after %d ms, limit %d",
		    i, s[i].head, s[i].closed_ms, limit_ms);
		ck_assert_msg(s[i].status != 200, "slow client %zu got 200",
		    i);
	}
}

START_TEST(test_04_slowloris)
{
	struct tu_daemon *d = start("request_timeout = 2");
	struct slow s[3];

	memset(s, 0, sizeof(s));
	/* Headers that never end, one byte at a time. */
	s[0].port = d->port;
	s[0].head = "POST /webhooks HTTP/1.1\r\nHost: x\r\n";
	s[0].drip = "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
	s[0].interval_ms = 200;
	/* A body trickled a byte at a time, well inside its length. */
	s[1].port = d->port;
	s[1].head = "POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5000\r\n\r\n";
	s[1].drip = "eyJhbGciOiJSUzI1NiJ9";
	s[1].interval_ms = 200;
	/* Connected and silent. */
	s[2].port = d->port;
	s[2].head = "";
	s[2].drip = "";
	s[2].interval_ms = 200;
	/* request_timeout is 2 s; allow scheduling slack under ASan. */
	run_slow(d, s, 3, 4500);
	/* Only the three normal clients' webhooks were stored. */
	ASSERT_SQL_INT(d, 3, "SELECT count(*) FROM refunds");
	ASSERT_SQL_INT(d, 3, "SELECT count(*) FROM webhook_events");
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	tu_daemon_free(d);
}
END_TEST

/*
 * A request cut short, then silence, on a daemon with request_timeout 2:
 * the client is cut off, and the daemon logs one line saying why.
 * Either MHD's idle timeout (request_timeout too) or the deadline
 * sweeper ends it, whichever comes first.
 */
static void
assert_one_cutoff_line(const char *head)
{
	static const char *const closed[] = { "http public: ",
	    "2 s request deadline: closed", NULL };
	struct tu_daemon *d = start("request_timeout = 2");
	struct slow s[1];
	size_t mark = tu_daemon_log_size(d);
	const char *first;
	char *log;

	memset(s, 0, sizeof(s));
	s[0].port = d->port;
	s[0].head = head;
	s[0].drip = "";
	s[0].interval_ms = 200;
	run_slow(d, s, 1, 4500);
	ck_assert_msg(tu_daemon_wait_log(d, mark, closed, 2000),
	    "no log line for a stalled request: %.40s", head);
	log = tu_daemon_log(d);
	first = strstr(log + mark, "request deadline: closed");
	ck_assert_ptr_nonnull(first);
	ck_assert_msg(strstr(first + 1, "request deadline: closed") == NULL,
	    "more than one line for one stalled request: %s", log + mark);
	free(log);
	ASSERT_SQL_INT(d, 3, "SELECT count(*) FROM refunds");
	tu_daemon_free(d);
}

/* A body cut short: MHD's idle timeout usually wins, and ends the
 * request MHD had passed to us. */
START_TEST(test_04_stalled_body)
{
	assert_one_cutoff_line("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 5000\r\n\r\neyJhbGciOiJSUzI1NiJ9");
}
END_TEST

/* Headers cut short: MHD has not passed the request to us yet, so when
 * its idle timeout wins only the connection's close is seen. */
START_TEST(test_04_stalled_headers)
{
	assert_one_cutoff_line("POST /webhooks HTTP/1.1\r\nHost: x\r\n");
}
END_TEST

/* ---- 5: connections per IP ----------------------------------------- */

START_TEST(test_05_connections_per_ip)
{
	struct tu_daemon *d = start("max_connections_per_ip = 8");
	int fds[8], extra[4], i, st;
	int64_t deadline;
	char *req, *tok;

	for (i = 0; i < 8; i++) {
		fds[i] = tu_connect(NULL, d->port, 2000);
		ck_assert_int_ge(fds[i], 0);
	}
	tu_sleep_ms(300);	/* let the daemon accept them all */
	for (i = 0; i < 4; i++) {
		extra[i] = tu_connect(NULL, d->port, 2000);
		if (extra[i] >= 0) {
			ck_assert_msg(tu_wait_closed(extra[i], 2000, &st) >= 0,
			    "connection %d over the per-IP limit stayed open",
			    9 + i);
			ck_assert_int_ne(st, 200);
			close(extra[i]);
		}
	}
	/* A request from the same address gets no service... */
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), -1);
	/* ...while another address is served. */
	req = xasprintf("GET /healthz HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n");
	ck_assert_int_eq(tu_http_raw_from("127.0.0.2", d->port, req,
	    strlen(req), 5000, NULL), 200);
	free(req);
	tok = valid_token(d->key.priv_pem);
	req = xasprintf("POST /webhooks HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen(tok),
	    tok);
	ck_assert_int_eq(tu_http_raw_from("127.0.0.2", d->port, req,
	    strlen(req), 5000, NULL), 200);
	free(req);
	free(tok);

	/* Once they go, the address is served again. */
	for (i = 0; i < 8; i++)
		close(fds[i]);
	deadline = clock_mono_ms() + 3000;
	while ((st = tu_http_get(d->port, "/healthz", NULL)) != 200 &&
	    clock_mono_ms() < deadline)
		tu_sleep_ms(50);
	ck_assert_int_eq(st, 200);
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* A request on an open connection is answered 200. */
static void
assert_served(int fd)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

	ck_assert(tu_send_all(fd, req, sizeof(req) - 1));
	ck_assert_int_eq(tu_read_response(fd, 5000, NULL), 200);
}

/* A new connection from src is closed without an answer. */
static void
assert_refused(const struct tu_daemon *d, const char *src)
{
	int fd = tu_connect(src, d->port, 2000), st;

	if (fd < 0)
		return;
	ck_assert_msg(tu_wait_closed(fd, 2000, &st) >= 0,
	    "a connection from %s over the limit stayed open",
	    src != NULL ? src : "127.0.0.1");
	ck_assert_int_ne(st, 200);
	close(fd);
}

/*
 * With four workers, each with its own listening socket on the port, the
 * kernel spreads the connections over them.  The limits still hold for
 * the listener as a whole: what one worker sees would let every one of
 * these in.
 */
START_TEST(test_05_limits_across_workers)
{
	/* A long request_timeout: the connections stay idle between
	 * the steps, which take seconds under ASan on a busy machine. */
	struct tu_daemon *d = start("threads = 4\nmax_connections = 12\n"
	    "max_connections_per_ip = 8\nrequest_timeout = 120");
	const char *per_ip[] = { "127.0.0.1 over max_connections_per_ip (8)",
	    NULL };
	const char *total[] = { "127.0.0.3 over max_connections (12)", NULL };
	const char *lim[] = { "limit=\"max_connections_per_ip\"", NULL };
	int fds[12], i;
	char *m;

	for (i = 0; i < 8; i++) {
		fds[i] = tu_connect(NULL, d->port, 2000);
		ck_assert_int_ge(fds[i], 0);
	}
	for (i = 0; i < 8; i++)
		assert_served(fds[i]);
	for (i = 0; i < 4; i++)
		assert_refused(d, NULL);
	ck_assert(tu_daemon_wait_log(d, 0, per_ip, 5000));

	/* Four more from another address fill max_connections... */
	for (i = 8; i < 12; i++) {
		fds[i] = tu_connect("127.0.0.2", d->port, 2000);
		ck_assert_int_ge(fds[i], 0);
	}
	for (i = 8; i < 12; i++)
		assert_served(fds[i]);
	/* ...and a thirteenth, from a third, is over it. */
	assert_refused(d, "127.0.0.3");
	ck_assert(tu_daemon_wait_log(d, 0, total, 5000));
	m = tu_daemon_metrics(d);
	ck_assert_msg(tu_metric(m, "refundsync_http_connections_refused_total",
	    lim) >= 4, "refused per IP: %s", m);
	free(m);

	/* The open ones are still served. */
	for (i = 0; i < 12; i++)
		assert_served(fds[i]);

	/*
	 * A refused connection does not hold a slot while it is on its way
	 * out: with one slot free, a connection over the per-IP limit and,
	 * at once, one from a fourth address: the second gets the slot.
	 */
	close(fds[11]);
	tu_sleep_ms(200);
	for (i = 0; i < 30; i++) {
		int over = tu_connect(NULL, d->port, 2000), y;

		y = tu_connect("127.0.0.4", d->port, 2000);
		ck_assert_int_ge(y, 0);
		assert_served(y);
		close(y);
		if (over >= 0)
			close(over);
		tu_sleep_ms(20);
	}
	fds[11] = tu_connect("127.0.0.2", d->port, 2000);
	ck_assert_int_ge(fds[11], 0);
	assert_served(fds[11]);

	/* Once they go, new ones are let in again. */
	for (i = 0; i < 12; i++)
		close(fds[i]);
	tu_sleep_ms(300);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* A TCP connection to [::1]:port, or -1. */
static int
connect6(int port)
{
	struct sockaddr_in6 sin6;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons((uint16_t)port);
	sin6.sin6_addr = in6addr_loopback;
	if (connect(fd, (struct sockaddr *)&sin6, sizeof(sin6)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Can this machine listen on [::1]?  (Some containers have no IPv6.) */
static bool
have_ipv6_loopback(void)
{
	struct sockaddr_in6 sin6;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_loopback;
	ok = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
	close(fd);
	return ok;
}

/* The same over IPv6: the workers share [::1]:port, the per-address
 * limit counts the IPv6 peer over all of them. */
START_TEST(test_05_limits_across_workers_ipv6)
{
	struct tu_conf conf;
	struct tu_daemon *d;
	const char *per_ip[] = { "::1 over max_connections_per_ip (4)",
	    NULL };
	int fds[4], i, x, st;

	if (!have_ipv6_loopback()) {
		fprintf(stderr, "check_hostile: no IPv6 loopback here; the "
		    "IPv6 listener test is skipped\n");
		return;
	}
	memset(&conf, 0, sizeof(conf));
	conf.listen = "[::1]:0";
	conf.server = "threads = 3\nmax_connections_per_ip = 4\n"
	    "request_timeout = 120";
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start on [::1]");
	for (i = 0; i < 4; i++) {
		fds[i] = connect6(d->port);
		ck_assert_int_ge(fds[i], 0);
	}
	for (i = 0; i < 4; i++)
		assert_served(fds[i]);
	for (i = 0; i < 3; i++) {
		if ((x = connect6(d->port)) < 0)
			continue;
		ck_assert_msg(tu_wait_closed(x, 2000, &st) >= 0,
		    "an IPv6 connection over the limit stayed open");
		ck_assert_int_ne(st, 200);
		close(x);
	}
	ck_assert(tu_daemon_wait_log(d, 0, per_ip, 5000));
	for (i = 0; i < 4; i++) {
		assert_served(fds[i]);
		close(fds[i]);
	}
	tu_daemon_free(d);
}
END_TEST

/* ---- 6: methods and paths ------------------------------------------ */

static void
expect_request(const struct tu_daemon *d, const char *method,
    const char *path, const char *body, int want)
{
	struct tu_http_resp resp;
	char *req, *allow;
	int st;

	req = xasprintf("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", method, path, strlen(body), body);
	st = tu_http_raw(d->port, req, strlen(req), 5000, &resp);
	ck_assert_msg(st == want, "%s %s: got %d, want %d", method, path, st,
	    want);
	ck_assert_msg(tu_is_error_json(resp.body), "%s %s: body %s", method,
	    path, resp.body != NULL ? resp.body : "(none)");
	if (want == 405) {
		/* RFC 9110 15.5.6: a 405 names the allowed methods. */
		allow = tu_http_header(&resp, "Allow");
		ck_assert_msg(allow != NULL, "%s %s: 405 without Allow",
		    method, path);
		free(allow);
	}
	tu_http_resp_cleanup(&resp);
	free(req);
}

/*
 * A path from a stranger is logged as printable text: control bytes and
 * bytes that are not UTF-8 as \xHH, so the line can neither drive the
 * terminal of whoever reads the log nor show in journalctl as "[blob
 * data]" in place of the 404; UTF-8 text stays as it is.
 */
static void
assert_path_logged_clean(const struct tu_daemon *d)
{
	const char *line[] = { "GET /\\x1b[31mx\\x7fy\\xff\\xc2\\x85"
	    "caf\xc3\xa9 z from ", ": 404: no such path", NULL };
	size_t mark = tu_daemon_log_size(d);
	char *log;

	expect_request(d, "GET", "/%1b%5b31mx%7fy%ff%c2%85caf%c3%a9%0az", "",
	    404);
	ck_assert_msg(tu_daemon_wait_log(d, mark, line, 5000),
	    "no 404 line with the path escaped");
	log = tu_daemon_log(d);
	ck_assert_msg(strchr(log, 0x1b) == NULL && strchr(log, 0x7f) ==
	    NULL && strchr(log, 0xff) == NULL,
	    "a raw control or non-UTF-8 byte in the log");
	free(log);
}

START_TEST(test_06_method_and_path)
{
	struct tu_daemon *d = start(NULL);
	char *tok = valid_token(d->key.priv_pem);

	expect_request(d, "GET", "/webhooks", "", 405);
	expect_request(d, "PUT", "/webhooks", tok, 405);
	expect_request(d, "DELETE", "/webhooks", "", 405);
	expect_request(d, "POST", "/healthz", tok, 405);
	expect_request(d, "GET", "/nope", "", 404);
	expect_request(d, "POST", "/webhooks/x", tok, 404);
	expect_request(d, "POST", "/webhooksx", tok, 404);
	expect_request(d, "POST", "/", tok, 404);
	expect_request(d, "POST", "/WEBHOOKS", tok, 404);
	assert_path_logged_clean(d);
	assert_nothing_stored(d);
	assert_alive(d);
	free(tok);
	tu_daemon_free(d);
}
END_TEST

/* ---- 7: not a token ------------------------------------------------ */

START_TEST(test_07_not_a_token)
{
	struct tu_daemon *d = start(NULL);
	char *tok = valid_token(d->key.priv_pem), *s;
	size_t n = strlen(tok);

	expect_status(d, "empty", "", 0, 401);
	expect_status(d, "one segment", "abc", 3, 401);
	expect_status(d, "two segments", "abc.def", 7, 401);
	expect_status(d, "four segments", "a.b.c.d", 7, 401);
	expect_status(d, "dots only", "..", 2, 401);
	s = xasprintf("%s.x", tok);
	expect_token(d, "a valid token and a fourth segment", s, 401);
	free(s);
	s = xstrdup(tok);
	*strrchr(s, '.') = '\0';
	expect_token(d, "no signature segment", s, 401);
	free(s);
	s = xasprintf("%s==", tok);
	expect_token(d, "padding on the signature", s, 401);
	free(s);
	s = xstrdup(tok);
	s[5] = '+';
	expect_token(d, "'+' (not base64url)", s, 401);
	s[5] = '*';
	expect_token(d, "'*' in the header", s, 401);
	free(s);

	/* A valid token with a NUL and more after it: a C-string reader
	 * would see only the valid part. */
	s = xmalloc(n + 8);
	memcpy(s, tok, n);
	memcpy(s + n, "\0garbage", 8);
	expect_status(d, "NUL after a valid token", s, n + 8, 401);
	s[n / 2] = '\0';
	expect_status(d, "NUL inside", s, n, 401);
	free(s);

	/* Non-ASCII bytes. */
	s = xasprintf("%s\xc3\xa9", tok);
	expect_token(d, "UTF-8 after a valid token", s, 401);
	s[10] = (char)0xff;
	expect_token(d, "0xff inside", s, 401);
	free(s);
	expect_status(d, "binary", "\x00\x01\x02\xff\xfe", 5, 401);
	assert_nothing_stored(d);
	assert_alive(d);
	free(tok);
	tu_daemon_free(d);
}
END_TEST

/* ---- 8: a 9 MB token ----------------------------------------------- */

START_TEST(test_08_huge_token)
{
	struct tu_daemon *d = start("max_body = 16777216");
	size_t n = 9 * 1000 * 1000;
	char *big, *hdr;
	int64_t t0;

	/* A real header segment, then 9 MB of base64url: the shape that
	 * overflows libjwt's alloca. */
	hdr = tu_b64url(TU_DEFAULT_HDR, strlen(TU_DEFAULT_HDR));
	big = filler_token(n);
	memcpy(big, hdr, strlen(hdr));
	big[strlen(hdr)] = '.';
	t0 = clock_mono_ms();
	expect_status(d, "9 MB token", big, n, 401);
	ck_assert_msg(clock_mono_ms() - t0 < 5000, "9 MB took %lld ms",
	    (long long)(clock_mono_ms() - t0));
	expect_status(d, "9 MB token again", big, n, 401);
	assert_nothing_stored(d);
	assert_alive(d);
	free(hdr);
	free(big);
	tu_daemon_free(d);
}
END_TEST

/* ---- 9: algorithms ------------------------------------------------- */

static void
expect_alg(const struct tu_daemon *d, const char *what, enum tu_alg alg,
    const void *key, size_t keylen, const char *hdr, int want)
{
	char *claims = claims_with("\"iat\":1754753184,\"exp\":4102444800");
	char *tok;

	tok = tu_jwt_sign(alg, key, keylen, hdr, strlen(hdr), claims,
	    strlen(claims));
	ck_assert_ptr_nonnull(tok);
	expect_token(d, what, tok, want);
	free(tok);
	free(claims);
}

START_TEST(test_09_algorithms)
{
	struct tu_daemon *d = start(NULL);
	const char *priv = d->key.priv_pem, *pub = d->key.pub_pem;
	size_t pl = strlen(priv), publen = strlen(pub);
	char *file;
	size_t flen;

	expect_alg(d, "alg none", TU_ALG_NONE, NULL, 0,
	    "{\"alg\":\"none\"}", 401);
	expect_alg(d, "alg nOnE", TU_ALG_NONE, NULL, 0,
	    "{\"alg\":\"nOnE\",\"typ\":\"JWT\"}", 401);
	expect_alg(d, "alg rs256 (lower case)", TU_ALG_RS256, priv, pl,
	    "{\"alg\":\"rs256\"}", 401);
	expect_alg(d, "alg RS512", TU_ALG_RS512, priv, pl,
	    "{\"alg\":\"RS512\"}", 401);
	expect_alg(d, "alg PS256", TU_ALG_PS256, priv, pl,
	    "{\"alg\":\"PS256\"}", 401);
	expect_alg(d, "alg ES256", TU_ALG_ES256, NULL, 0,
	    "{\"alg\":\"ES256\"}", 401);
	expect_alg(d, "no alg", TU_ALG_RS256, priv, pl,
	    "{\"typ\":\"JWT\"}", 401);
	expect_alg(d, "alg a number", TU_ALG_RS256, priv, pl,
	    "{\"alg\":256}", 401);
	expect_alg(d, "alg \"RS256 \"", TU_ALG_RS256, priv, pl,
	    "{\"alg\":\"RS256 \"}", 401);
	expect_alg(d, "header not JSON", TU_ALG_RS256, priv, pl,
	    "RS256", 401);

	/* HS256 keyed with the public key, as text and as the file. */
	expect_alg(d, "HS256 with the public PEM", TU_ALG_HS256, pub, publen,
	    "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 401);
	expect_alg(d, "HS256 with the PEM, no newline", TU_ALG_HS256, pub,
	    publen - 1, "{\"alg\":\"HS256\"}", 401);
	file = tu_read_file(d->pub_path, &flen);
	ck_assert_ptr_nonnull(file);
	expect_alg(d, "HS256 with the key file", TU_ALG_HS256, file, flen,
	    "{\"alg\":\"HS256\"}", 401);
	/* Two alg members: a parser keeping the first sees RS256, one
	 * keeping the last (jansson, in libjwt) sees HS256. */
	expect_alg(d, "alg RS256 then HS256", TU_ALG_HS256, file, flen,
	    "{\"alg\":\"RS256\",\"alg\":\"HS256\"}", 401);
	free(file);

	/* The control: the same claims, RS256, the right key. */
	expect_alg(d, "RS256", TU_ALG_RS256, priv, pl,
	    "{\"alg\":\"RS256\"}", 200);
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM refunds");
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* ---- 10: keys named by the token ----------------------------------- */

START_TEST(test_10_embedded_keys)
{
	struct tu_daemon *d = start(NULL);
	struct tu_keypair evil;
	char *jwk, *hdr;
	size_t el;

	tu_keypair_generate(&evil);
	el = strlen(evil.priv_pem);
	expect_alg(d, "jku", TU_ALG_RS256, evil.priv_pem, el,
	    "{\"alg\":\"RS256\",\"kid\":\"evil\","
	    "\"jku\":\"http://127.0.0.1:9/jwks.json\"}", 401);
	expect_alg(d, "x5u", TU_ALG_RS256, evil.priv_pem, el,
	    "{\"alg\":\"RS256\",\"x5u\":\"http://127.0.0.1:9/cert.pem\"}",
	    401);
	jwk = tu_rsa_jwk(evil.pub_pem);
	ck_assert_ptr_nonnull(jwk);
	hdr = xasprintf("{\"alg\":\"RS256\",\"jwk\":%s}", jwk);
	expect_alg(d, "jwk", TU_ALG_RS256, evil.priv_pem, el, hdr, 401);
	assert_nothing_stored(d);

	/* The same members on a token from the configured key are just
	 * ignored. */
	expect_alg(d, "jwk header, right key", TU_ALG_RS256,
	    d->key.priv_pem, strlen(d->key.priv_pem), hdr, 200);
	assert_alive(d);
	free(hdr);
	free(jwk);
	tu_keypair_cleanup(&evil);
	tu_daemon_free(d);
}
END_TEST

/* ---- 11: wrong key, tampering -------------------------------------- */

START_TEST(test_11_wrong_key_tampered)
{
	struct tu_daemon *d = start(NULL);
	struct tu_keypair other;
	char *tok, *tok2, *s, *p1, *p2, *claims, *p64;

	tu_keypair_generate(&other);
	tok = valid_token(other.priv_pem);
	expect_token(d, "another key", tok, 401);
	free(tok);

	/* Swap in another payload under the original signature. */
	tok = valid_token(d->key.priv_pem);
	claims = claims_with("\"iat\":1754753184,\"exp\":4102444800");
	p64 = tu_b64url(claims, strlen(claims));
	p1 = strchr(tok, '.');
	p2 = strrchr(tok, '.');
	*p1 = '\0';
	s = xasprintf("%s.%s%s", tok, p64, p2);
	*p1 = '.';
	expect_token(d, "payload swapped", s, 401);
	free(s);

	/* One character of the payload changed. */
	s = xstrdup(tok);
	s[(p1 - tok) + 5] = s[(p1 - tok) + 5] == 'A' ? 'B' : 'A';
	expect_token(d, "payload tampered", s, 401);
	free(s);

	/* The signature changed, cut short, or taken from another token. */
	s = xstrdup(tok);
	s[(p2 - tok) + 1] = s[(p2 - tok) + 1] == 'A' ? 'B' : 'A';
	expect_token(d, "signature tampered", s, 401);
	free(s);
	s = xstrdup(tok);
	s[strlen(s) - 10] = '\0';
	expect_token(d, "signature truncated", s, 401);
	free(s);
	tok2 = valid_token(d->key.priv_pem);
	s = xstrndup(tok, (size_t)(p2 - tok));
	p1 = xasprintf("%s%s", s, strrchr(tok2, '.'));
	expect_token(d, "signature of another token", p1, 401);
	free(p1);
	free(s);
	assert_nothing_stored(d);

	/* The untouched tokens are fine. */
	expect_token(d, "original", tok, 200);
	expect_token(d, "second", tok2, 200);
	ASSERT_SQL_INT(d, 2, "SELECT count(*) FROM refunds");
	free(tok);
	free(tok2);
	free(claims);
	free(p64);
	tu_keypair_cleanup(&other);
	tu_daemon_free(d);
}
END_TEST

/* ---- 12: time claims ----------------------------------------------- */

/* tmpl with every '@' replaced by v. */
static char *
subst(const char *tmpl, long long v)
{
	struct buf b;
	char num[32];
	const char *p;

	snprintf(num, sizeof(num), "%lld", v);
	buf_init(&b, 4096);
	for (p = tmpl; *p != '\0'; p++) {
		if (*p == '@')
			(void)buf_appends(&b, num);
		else
			(void)buf_append(&b, p, 1);
	}
	return buf_detach(&b, NULL);
}

START_TEST(test_12_time_claims)
{
	static const struct {
		const char	*what;
		const char	*times;	/* '@' is replaced by now + delta */
		long long	 delta;
	} cases[] = {
		{ "exp an hour ago", "\"iat\":1754753184,\"exp\":@", -3600 },
		{ "exp 61 s past the 60 s leeway", "\"iat\":1754753184,"
		    "\"exp\":@", -121 },
		{ "nbf in an hour", "\"iat\":1754753184,\"exp\":4102444800,"
		    "\"nbf\":@", 3600 },
		{ "exp a string", "\"iat\":1754753184,\"exp\":\"@\"", 3600 },
		{ "exp a float", "\"iat\":1754753184,\"exp\":@.5", 3600 },
		{ "exp huge", "\"iat\":1754753184,\"exp\":1e30", 0 },
		{ "exp past int64", "\"iat\":1754753184,"
		    "\"exp\":99999999999999999999", 0 },
		{ "exp true", "\"iat\":1754753184,\"exp\":true", 0 },
		{ "exp null", "\"iat\":1754753184,\"exp\":null", 0 },
		{ "nbf a string", "\"iat\":1754753184,\"exp\":4102444800,"
		    "\"nbf\":\"1\"", 0 },
	};
	struct tu_daemon *d = start(NULL);
	long long now = (long long)time(NULL);
	struct tu_http_resp resp;
	char *times, *claims, *tok;
	size_t i;
	int st;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		times = subst(cases[i].times, now + cases[i].delta);
		claims = claims_with(times);
		expect_claims(d, cases[i].what, claims, 401);
		free(times);
		free(claims);
	}
	/* Two exp members, the last expired: whichever the parser keeps,
	 * this is no valid token (401, or 400 for the duplicate). */
	times = subst("\"iat\":1754753184,\"exp\":4102444800,\"exp\":@",
	    now - 3600);
	claims = claims_with(times);
	tok = sign(d, claims);
	st = tu_daemon_post(d, tok, &resp);
	ck_assert_msg(st == 401 || st == 400, "two exp: got %d", st);
	ck_assert(tu_is_error_json(resp.body));
	tu_http_resp_cleanup(&resp);
	free(tok);
	free(times);
	free(claims);
	assert_nothing_stored(d);

	/* Inside the 60 s leeway both ways, and a 47-hour-old retry. */
	times = subst("\"iat\":1754753184,\"exp\":@", now - 20);
	claims = claims_with(times);
	expect_claims(d, "exp 20 s ago", claims, 200);
	free(times);
	free(claims);
	times = subst("\"iat\":1754753184,\"exp\":4102444800,\"nbf\":@",
	    now + 20);
	claims = claims_with(times);
	expect_claims(d, "nbf in 20 s", claims, 200);
	free(times);
	free(claims);
	times = xasprintf("\"iat\":%lld,\"exp\":%lld", now - 47 * 3600,
	    now - 47 * 3600 + 3600000);
	claims = claims_with(times);
	expect_claims(d, "iat 47 hours ago", claims, 200);
	free(times);
	free(claims);
	ASSERT_SQL_INT(d, 3, "SELECT count(*) FROM refunds");
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* ---- 13: claims that are not a Wix envelope ------------------------ */

START_TEST(test_13_bad_envelope)
{
	struct tu_daemon *d = start(NULL);
	char *b = valid_layer_b(), *qb = tu_json_quote(b), *c, *qc, *s;
	const char *t = "\"iat\":1754753184,\"exp\":4102444800";

	s = xasprintf("{\"data\":{\"x\":1},%s}", t);
	expect_claims(d, "data an object", s, 400);
	free(s);
	s = xasprintf("{\"data\":42,%s}", t);
	expect_claims(d, "data a number", s, 400);
	free(s);
	s = xasprintf("{%s}", t);
	expect_claims(d, "no data", s, 400);
	free(s);
	s = xasprintf("{\"data\":\"not json\",%s}", t);
	expect_claims(d, "data not JSON", s, 400);
	free(s);
	s = xasprintf("{\"data\":\"[1,2]\",%s}", t);
	expect_claims(d, "data a JSON array", s, 400);
	free(s);

	/* Layer B without its members, or with the wrong types. */
	c = xstrdup("{\"id\":\"evt-x\",\"entityId\":\"rf-x\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-x\",\"chargeId\":"
	    "\"c\",\"currencyCode\":\"USD\",\"amount\":\"1.00\","
	    "\"status\":\"PENDING\"}}}");
	qc = tu_json_quote(c);
	{
		char *lb, *q;

		lb = tu_layer_b(c, NULL, TU_EVT_CREATED);
		q = tu_json_quote(lb);
		s = xasprintf("{\"data\":%s,%s}", q, t);
		expect_claims(d, "no instanceId", s, 400);
		free(s);
		free(q);
		free(lb);
		lb = tu_layer_b(c, INST, NULL);
		q = tu_json_quote(lb);
		s = xasprintf("{\"data\":%s,%s}", q, t);
		expect_claims(d, "no eventType", s, 400);
		free(s);
		free(q);
		free(lb);
		lb = xasprintf("{\"data\":%s,\"instanceId\":7,\"eventType\":"
		    "\"%s\"}", qc, TU_EVT_CREATED);
		q = tu_json_quote(lb);
		s = xasprintf("{\"data\":%s,%s}", q, t);
		expect_claims(d, "instanceId a number", s, 400);
		free(s);
		free(q);
		free(lb);
		lb = xasprintf("{\"data\":%s,\"instanceId\":\"%s\","
		    "\"eventType\":[]}", qc, INST);
		q = tu_json_quote(lb);
		s = xasprintf("{\"data\":%s,%s}", q, t);
		expect_claims(d, "eventType an array", s, 400);
		free(s);
		free(q);
		free(lb);
		lb = xasprintf("{\"data\":{},\"instanceId\":\"%s\","
		    "\"eventType\":\"%s\"}", INST, TU_EVT_CREATED);
		q = tu_json_quote(lb);
		s = xasprintf("{\"data\":%s,%s}", q, t);
		expect_claims(d, "B.data an object", s, 400);
		free(s);
		free(q);
		free(lb);
	}
	assert_nothing_stored(d);

	/* The control. */
	s = xasprintf("{\"data\":%s,%s}", qb, t);
	expect_claims(d, "valid", s, 200);
	free(s);
	assert_alive(d);
	free(b);
	free(qb);
	free(c);
	free(qc);
	tu_daemon_free(d);
}
END_TEST

/* ---- 14: layer C without what a refund needs ----------------------- */

/* Layer C for a created refund with entity text e (evid "evt-" n). */
static char *
layer_c_with(const char *evid_member, const char *entity)
{
	return xasprintf("{%s\"entityFqdn\":\"wix.payments.refunds.v1.refund\","
	    "\"slug\":\"created\",\"entityId\":\"rf-14\",\"eventTime\":"
	    "\"2025-08-09T15:26:27.272823Z\",\"createdEvent\":{\"entity\":%s}}",
	    evid_member, entity);
}

START_TEST(test_14_bad_refund)
{
	static const struct {
		const char	*what;
		const char	*evid;	/* the "id" member, or "" */
		const char	*entity;
	} cases[] = {
		{ "no event id", "",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"1.00\",\"status\":\"PENDING\"}" },
		{ "event id a number", "\"id\":17,",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"1.00\",\"status\":\"PENDING\"}" },
		{ "empty event id", "\"id\":\"\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"1.00\",\"status\":\"PENDING\"}" },
		{ "refund without id", "\"id\":\"evt-14a\",",
		    "{\"chargeId\":\"c\",\"currencyCode\":\"USD\","
		    "\"amount\":\"1.00\",\"status\":\"PENDING\"}" },
		{ "amount a number", "\"id\":\"evt-14b\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":1.00,\"status\":\"PENDING\"}" },
		{ "amount abc", "\"id\":\"evt-14c\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"abc\",\"status\":\"PENDING\"}" },
		{ "amount 1.2.3", "\"id\":\"evt-14d\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"1.2.3\",\"status\":\"PENDING\"}" },
		{ "amount empty", "\"id\":\"evt-14e\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"\",\"status\":\"PENDING\"}" },
		{ "amount 1e2", "\"id\":\"evt-14f\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"1e2\",\"status\":\"PENDING\"}" },
		{ "amount missing", "\"id\":\"evt-14g\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"status\":\"PENDING\"}" },
		{ "revision not a number", "\"id\":\"evt-14h\",",
		    "{\"id\":\"rf-14\",\"chargeId\":\"c\",\"currencyCode\":"
		    "\"USD\",\"amount\":\"1.00\",\"status\":\"PENDING\","
		    "\"revision\":\"abc\"}" },
		{ "entity a number", "\"id\":\"evt-14i\",", "5" },
		{ "entity null", "\"id\":\"evt-14j\",", "null" },
	};
	static const char *const named[] = { "webhook evt-14c (refund rf-14, "
	    "instance " INST ") from ", ": 400: amount is not a decimal "
	    "string", NULL };
	struct tu_daemon *d = start(NULL);
	char *c;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = layer_c_with(cases[i].evid, cases[i].entity);
		expect_layer_c(d, cases[i].what, c, 400);
		free(c);
	}
	/* The line names the event and the refund Wix will send again. */
	ck_assert_msg(tu_daemon_wait_log(d, 0, named, 2000),
	    "no 400 line naming evt-14c and rf-14");
	/* A refund event with no entity at all. */
	expect_layer_c(d, "no createdEvent", "{\"id\":\"evt-14k\","
	    "\"entityFqdn\":\"wix.payments.refunds.v1.refund\",\"slug\":"
	    "\"created\",\"entityId\":\"rf-14\"}", 400);
	assert_nothing_stored(d);

	/* The control. */
	c = layer_c_with("\"id\":\"evt-14ok\",", "{\"id\":\"rf-14\","
	    "\"chargeId\":\"c\",\"currencyCode\":\"USD\",\"amount\":\"1.00\","
	    "\"status\":\"PENDING\"}");
	expect_layer_c(d, "valid", c, 200);
	free(c);
	ASSERT_SQL(d, "100", "SELECT amount_minor FROM refunds WHERE id = "
	    "'rf-14'");
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* ---- 15: JSON the strict parser must refuse ------------------------ */

START_TEST(test_15_strict_json)
{
	static const char ent[] = "\"chargeId\":\"c\",\"currencyCode\":"
	    "\"USD\",\"status\":\"PENDING\"";
	struct tu_daemon *d = start(NULL);
	char *c, *nest, *p, *b, *q, *claims;
	int i;

	c = xasprintf("{\"id\":\"evt-15a\",\"id\":\"evt-15b\",\"entityId\":"
	    "\"rf-15\",\"createdEvent\":{\"entity\":{\"id\":\"rf-15\","
	    "\"amount\":\"1.00\",%s}}}", ent);
	expect_layer_c(d, "duplicate event id", c, 400);
	free(c);
	c = xasprintf("{\"id\":\"evt-15c\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",\"amount\":\"1000.00\",%s}}}", ent);
	expect_layer_c(d, "duplicate amount", c, 400);
	free(c);
	c = xasprintf("{\"id\":\"evt-15d\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",\"note\":\"caf\xc3\x28\",%s}}}", ent);
	expect_layer_c(d, "invalid UTF-8", c, 400);
	free(c);
	c = xasprintf("{\"id\":\"evt-15e\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",\"note\":\"\\ud800\",%s}}}", ent);
	expect_layer_c(d, "lone surrogate", c, 400);
	free(c);
	c = xasprintf("{\"id\":\"evt-15f\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\\u0000x\","
	    "\"amount\":\"1.00\",%s}}}", ent);
	expect_layer_c(d, "\\u0000 in the refund id", c, 400);
	free(c);
	c = xasprintf("{\"id\":\"evt-15g\\u0000\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",%s}}}", ent);
	expect_layer_c(d, "\\u0000 in the event id", c, 400);
	free(c);

	/* 30 levels of nesting inside the entity. */
	nest = xmalloc(30 * 7 + 8);
	for (p = nest, i = 0; i < 30; i++)
		p += snprintf(p, 8, "{\"a\":");
	p += snprintf(p, 4, "1");
	for (i = 0; i < 30; i++)
		*p++ = '}';
	*p = '\0';
	c = xasprintf("{\"id\":\"evt-15h\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",\"extendedFields\":%s,%s}}}", nest, ent);
	expect_layer_c(d, "nesting 33 deep", c, 400);
	free(c);
	free(nest);

	c = xasprintf("{\"id\":\"evt-15i\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",%s}}} trailing", ent);
	expect_layer_c(d, "trailing garbage", c, 400);
	free(c);
	c = xasprintf("{\"id\":\"evt-15j\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",%s}}}{}", ent);
	expect_layer_c(d, "a second document", c, 400);
	free(c);
	c = xasprintf("{\"id\":\"evt-15k\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",\"full\":01,%s}}}", ent);
	expect_layer_c(d, "leading zero", c, 400);
	free(c);

	/* The same faults one layer up, in B. */
	c = xasprintf("{\"id\":\"evt-15l\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",%s}}}", ent);
	q = tu_json_quote(c);
	b = xasprintf("{\"data\":%s,\"instanceId\":\"a\",\"instanceId\":"
	    "\"b\",\"eventType\":\"%s\"}", q, TU_EVT_CREATED);
	free(q);
	q = tu_json_quote(b);
	claims = xasprintf("{\"data\":%s,\"iat\":1754753184,"
	    "\"exp\":4102444800}", q);
	expect_claims(d, "B: duplicate instanceId", claims, 400);
	free(claims);
	free(q);
	free(b);
	q = tu_json_quote(c);
	b = xasprintf("{\"data\":%s,\"instanceId\":\"a\",\"eventType\":"
	    "\"%s\"} x", q, TU_EVT_CREATED);
	free(q);
	q = tu_json_quote(b);
	claims = xasprintf("{\"data\":%s,\"iat\":1754753184,"
	    "\"exp\":4102444800}", q);
	expect_claims(d, "B: trailing garbage", claims, 400);
	free(claims);
	free(q);
	free(b);
	free(c);
	assert_nothing_stored(d);

	/* The control: a deep but legal extendedFields. */
	c = xasprintf("{\"id\":\"evt-15ok\",\"entityId\":\"rf-15\","
	    "\"createdEvent\":{\"entity\":{\"id\":\"rf-15\",\"amount\":"
	    "\"1.00\",\"extendedFields\":{\"namespaces\":{\"@a/b\":{\"k\":"
	    "{\"v\":[1]}}}},\"note\":\"caf\xc3\xa9 \\u00e9\",%s}}}", ent);
	expect_layer_c(d, "valid", c, 200);
	free(c);
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* ---- 16, 17: ignored, duplicate, stale ----------------------------- */

START_TEST(test_16_unknown_type)
{
	struct tu_daemon *d = start(NULL);
	char *tok;

	tok = tu_webhook(d->key.priv_pem, "{\"id\":\"evt-16\",\"entityId\":"
	    "\"x\"}", INST, "wix.ecom.v1.order_paid");
	expect_token(d, "unknown eventType", tok, 200);
	expect_token(d, "unknown eventType again", tok, 200);
	ASSERT_SQL(d, "ignored|wix.ecom.v1.order_paid", "SELECT outcome || "
	    "'|' || event_type FROM webhook_events");
	ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM webhook_events");
	ASSERT_SQL_INT(d, 0, "SELECT count(*) FROM refunds");
	free(tok);
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* Post one refund version; updated event, object form. */
static int
post_version(const struct tu_daemon *d, const char *evid, const char *rid,
    const char *status, int64_t rev, int64_t seq, const char *updated)
{
	struct tu_refund r;
	struct tu_event ev;
	char *tok;
	int st;

	memset(&r, 0, sizeof(r));
	r.id = rid;
	r.charge_id = "ch-17";
	r.currency = "USD";
	r.amount = "3.00";
	r.status = status;
	r.revision = rev;
	r.created_date = "2025-08-01T00:00:00.000Z";
	r.updated_date = updated;
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = TU_UPDATED;
	ev.seq = seq;
	tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	st = tu_daemon_post(d, tok, NULL);
	free(tok);
	return st;
}

/* The stored row and the change log, to compare before and after. */
static char *
snapshot(const struct tu_daemon *d, const char *rid)
{
	char *row, *log, *out;

	row = tu_sqlf(d, "SELECT status || '|' || coalesce(revision, '-') || "
	    "'|' || body || '|' || stored_at FROM refunds WHERE id = '%s'",
	    rid);
	log = tu_sqlf(d, "SELECT count(*) || '|' || max(seq) FROM changes");
	out = xasprintf("%s #%s", row != NULL ? row : "-", log != NULL ? log :
	    "-");
	free(row);
	free(log);
	return out;
}

START_TEST(test_17_duplicate_and_stale)
{
	struct tu_daemon *d = start(NULL);
	char *before, *after;

	/* By revision. */
	ck_assert_int_eq(post_version(d, "e1", "rf-a", "PENDING", 1, -1,
	    "2025-08-01T00:00:01.000Z"), 200);
	ck_assert_int_eq(post_version(d, "e2", "rf-a", "SUCCEEDED", 3, -1,
	    "2025-08-01T00:00:03.000Z"), 200);
	before = snapshot(d, "rf-a");
	ck_assert_int_eq(post_version(d, "e2", "rf-a", "SUCCEEDED", 3, -1,
	    "2025-08-01T00:00:03.000Z"), 200);
	ck_assert_int_eq(post_version(d, "e3", "rf-a", "FAILED", 2, -1,
	    "2025-08-01T00:00:09.000Z"), 200);
	/* A tie keeps the stored row. */
	ck_assert_int_eq(post_version(d, "e4", "rf-a", "REVERSED", 3, -1,
	    "2025-08-01T00:00:09.000Z"), 200);
	after = snapshot(d, "rf-a");
	ck_assert_str_eq(after, before);
	ASSERT_SQL(d, "stale", "SELECT outcome FROM webhook_events WHERE "
	    "event_id = 'e3'");
	ASSERT_SQL(d, "stale", "SELECT outcome FROM webhook_events WHERE "
	    "event_id = 'e4'");
	free(before);
	free(after);

	/* No revisions: entityEventSequence decides. */
	ck_assert_int_eq(post_version(d, "s1", "rf-b", "PENDING", -1, 5,
	    "2025-08-01T00:00:01.000Z"), 200);
	ck_assert_int_eq(post_version(d, "s2", "rf-b", "SUCCEEDED", -1, 7,
	    "2025-08-01T00:00:02.000Z"), 200);
	before = snapshot(d, "rf-b");
	ck_assert_int_eq(post_version(d, "s3", "rf-b", "FAILED", -1, 6,
	    "2025-08-01T00:00:09.000Z"), 200);
	after = snapshot(d, "rf-b");
	ck_assert_str_eq(after, before);
	ASSERT_SQL(d, "SUCCEEDED", "SELECT status FROM refunds WHERE id = "
	    "'rf-b'");
	free(before);
	free(after);

	/* Neither: updatedDate decides. */
	ck_assert_int_eq(post_version(d, "u1", "rf-c", "PENDING", -1, -1,
	    "2025-08-01T00:00:05.000Z"), 200);
	ck_assert_int_eq(post_version(d, "u2", "rf-c", "SUCCEEDED", -1, -1,
	    "2025-08-01T00:00:07.000Z"), 200);
	before = snapshot(d, "rf-c");
	ck_assert_int_eq(post_version(d, "u3", "rf-c", "FAILED", -1, -1,
	    "2025-08-01T00:00:06.000Z"), 200);
	after = snapshot(d, "rf-c");
	ck_assert_str_eq(after, before);
	ASSERT_SQL(d, "SUCCEEDED", "SELECT status FROM refunds WHERE id = "
	    "'rf-c'");
	free(before);
	free(after);

	/*
	 * updatedDate compares as an instant, not as text: ":07.100Z" is
	 * newer than ":07Z" though it sorts first; ":07.1Z" is the same
	 * instant as ":07.100Z", a tie, so the stored row stays.
	 */
	ck_assert_int_eq(post_version(d, "d1", "rf-d", "PENDING", -1, -1,
	    "2025-08-01T00:00:07Z"), 200);
	ck_assert_int_eq(post_version(d, "d2", "rf-d", "SUCCEEDED", -1, -1,
	    "2025-08-01T00:00:07.100Z"), 200);
	ASSERT_SQL(d, "SUCCEEDED", "SELECT status FROM refunds WHERE id = "
	    "'rf-d'");
	before = snapshot(d, "rf-d");
	ck_assert_int_eq(post_version(d, "d3", "rf-d", "FAILED", -1, -1,
	    "2025-08-01T00:00:07.000Z"), 200);
	ck_assert_int_eq(post_version(d, "d4", "rf-d", "REVERSED", -1, -1,
	    "2025-08-01T00:00:07.1Z"), 200);
	after = snapshot(d, "rf-d");
	ck_assert_str_eq(after, before);
	ASSERT_SQL(d, "stale,stale", "SELECT group_concat(outcome) FROM "
	    "(SELECT outcome FROM webhook_events WHERE event_id IN ('d3', "
	    "'d4') ORDER BY event_id)");
	free(before);
	free(after);

	/* Status moves any way a newer version says: SUCCEEDED to PENDING. */
	ck_assert_int_eq(post_version(d, "e5", "rf-a", "PENDING", 4, -1,
	    "2025-08-01T00:00:10.000Z"), 200);
	ASSERT_SQL(d, "PENDING|4", "SELECT status || '|' || revision FROM "
	    "refunds WHERE id = 'rf-a'");
	ASSERT_SQL_INT(d, 9, "SELECT count(*) FROM changes");
	ASSERT_SQL_INT(d, 15, "SELECT count(*) FROM webhook_events");
	assert_alive(d);
	tu_daemon_free(d);
}
END_TEST

/* ---- 26: SIGTERM under load ---------------------------------------- */

struct load {
	const struct tu_daemon	*d;
	char			**toks;
	char			**evids;
	int			*status;
	size_t			 n;
	size_t			 next;
	pthread_mutex_t		 mtx;
};

static void *
load_worker(void *arg)
{
	struct load *l = arg;
	size_t i;
	int fails = 0;

	for (;;) {
		pthread_mutex_lock(&l->mtx);
		i = l->next++;
		pthread_mutex_unlock(&l->mtx);
		if (i >= l->n)
			break;
		/* After the daemon is gone, stop hammering quickly. */
		if (fails >= 3) {
			l->status[i] = -2;	/* not sent */
			continue;
		}
		l->status[i] = tu_daemon_post(l->d, l->toks[i], NULL);
		fails = l->status[i] == -1 ? fails + 1 : 0;
	}
	return NULL;
}

START_TEST(test_26_sigterm_under_load)
{
	struct tu_daemon *d = start(NULL);
	struct load l;
	pthread_t th[4];
	size_t i, ok = 0, none = 0, unsent = 0, other = 0;
	int64_t deadline;
	char rid[32];
	int t, rc;

	memset(&l, 0, sizeof(l));
	l.d = d;
	l.n = 600;
	l.toks = xcalloc(l.n, sizeof(*l.toks));
	l.evids = xcalloc(l.n, sizeof(*l.evids));
	l.status = xcalloc(l.n, sizeof(*l.status));
	for (i = 0; i < l.n; i++) {
		struct tu_refund r;
		struct tu_event ev;

		snprintf(rid, sizeof(rid), "rf-load-%zu", i);
		l.evids[i] = xasprintf("evt-load-%zu", i);
		memset(&r, 0, sizeof(r));
		r.id = rid;
		r.charge_id = "ch-load";
		r.currency = "USD";
		r.amount = "1.00";
		r.status = "SUCCEEDED";
		r.revision = 1;
		memset(&ev, 0, sizeof(ev));
		ev.id = l.evids[i];
		ev.slug = TU_CREATED;
		ev.seq = -1;
		l.toks[i] = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	}
	pthread_mutex_init(&l.mtx, NULL);
	for (t = 0; t < 4; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, load_worker, &l),
		    0);
	/* Let the load build, then stop the daemon in the middle of it. */
	deadline = clock_mono_ms() + 10000;
	while (tu_sql_int(d, 0, "SELECT count(*) FROM webhook_events") < 20 &&
	    clock_mono_ms() < deadline)
		tu_sleep_ms(20);
	rc = tu_daemon_stop(d, 20000);
	for (t = 0; t < 4; t++)
		pthread_join(th[t], NULL);
	pthread_mutex_destroy(&l.mtx);
	ck_assert_int_eq(rc, 0);

	for (i = 0; i < l.n; i++) {
		switch (l.status[i]) {
		case 200:
			ok++;
			ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM "
			    "webhook_events WHERE event_id = '%s'", l.evids[i]);
			ASSERT_SQL_INT(d, 1, "SELECT count(*) FROM refunds "
			    "WHERE id = 'rf-load-%zu'", i);
			break;
		case -1:
			none++;
			break;
		case -2:
			unsent++;
			break;
		default:
			/* Only "try again later" is allowed otherwise. */
			ck_assert_msg(l.status[i] == 503, "request %zu got %d",
			    i, l.status[i]);
			other++;
			break;
		}
	}
	fprintf(stderr, "test_26: %zu answered 200 (all stored), %zu no "
	    "answer, %zu 503, %zu not sent after the daemon went\n", ok, none,
	    other, unsent);
	ck_assert_uint_ge(ok, 20);
	ck_assert_uint_lt(ok, l.n);
	ASSERT_SQL(d, "ok", "PRAGMA integrity_check");
	for (i = 0; i < l.n; i++) {
		free(l.toks[i]);
		free(l.evids[i]);
	}
	free(l.toks);
	free(l.evids);
	free(l.status);
	tu_daemon_free(d);
}
END_TEST

/* ---- 27: SIGHUP with a broken config ------------------------------- */

START_TEST(test_27_sighup_broken)
{
	static const char *const refused[] = { "reload", "refused", NULL };
	struct tu_daemon *d = start("max_body = 4096");
	struct tu_keypair k2;
	struct tu_conf conf;
	char *big, *tok, *pub2, *keys;
	size_t mark;

	/* A value out of range, and a second key that would be welcome. */
	tu_keypair_generate(&k2);
	pub2 = xasprintf("%s/second.pem", d->dir);
	ck_assert(tu_write_file(pub2, k2.pub_pem, false));
	keys = xasprintf("%s,%s", d->pub_path, pub2);
	memset(&conf, 0, sizeof(conf));
	conf.server = "max_body = 1";
	conf.public_key_file = keys;
	ck_assert(tu_daemon_write_config(d, &conf));
	mark = tu_daemon_log_size(d);
	ck_assert(tu_daemon_signal(d, SIGHUP));
	ck_assert_msg(tu_daemon_wait_log(d, mark, refused, 5000),
	    "no \"reload ... refused\" log line");

	/* The old config serves: old limit, old key only. */
	big = filler_token(5000);
	expect_status(d, "over the old max_body", big, 5000, 413);
	tok = valid_token(k2.priv_pem);
	expect_token(d, "the key of the refused config", tok, 401);
	free(tok);
	assert_alive(d);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	free(big);
	free(pub2);
	free(keys);
	tu_keypair_cleanup(&k2);
	tu_daemon_free(d);
}
END_TEST

/* ---- 28: the wall clock jumps -------------------------------------- */

/* Post a token whose exp is real now + 5 min until it gets want. */
static int
post_short_exp_until(const struct tu_daemon *d, int want, int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	long long now;
	char *times, *claims, *tok;
	int st;

	for (;;) {
		now = (long long)time(NULL);
		times = xasprintf("\"iat\":%lld,\"exp\":%lld", now, now + 300);
		claims = claims_with(times);
		tok = sign(d, claims);
		st = tu_daemon_post(d, tok, NULL);
		free(times);
		free(claims);
		free(tok);
		if (st == want || clock_mono_ms() >= deadline)
			return st;
		tu_sleep_ms(200);
	}
}

START_TEST(test_28_clock_jump)
{
	const char *lib = tu_faketime_lib();
	struct tu_daemon *d;
	struct tu_conf conf;
	struct slow s[1];
	pthread_t th;
	char *pre, *tsfile, *tsenv, *times, *claims, *tok, *dir;
	const char *env[7];
	long long now;

	if (lib == NULL) {
		fprintf(stderr, "SKIP test_28_clock_jump: faketime is not "
		    "installed (Debian package faketime)\n");
		return;
	}
	/* The offset comes from a file the test rewrites while the daemon
	 * runs: a jump of the wall clock, with CLOCK_MONOTONIC real. */
	dir = tu_tempdir();
	tsfile = xasprintf("%s/faketime", dir);
	ck_assert(tu_write_file(tsfile, "+0\n", false));
	pre = xasprintf("LD_PRELOAD=%s", lib);
	tsenv = xasprintf("FAKETIME_TIMESTAMP_FILE=%s", tsfile);
	env[0] = pre;
	env[1] = tsenv;
	env[2] = "FAKETIME_NO_CACHE=1";
	env[3] = "FAKETIME_DONT_FAKE_MONOTONIC=1";
	env[4] = "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0";
	env[5] = NULL;
	memset(&conf, 0, sizeof(conf));
	conf.server = "request_timeout = 2";
	d = tu_daemon_start(&conf, env);
	ck_assert_msg(d != NULL, "the daemon did not start under faketime");
	ck_assert_int_eq(post_short_exp_until(d, 200, 0), 200);

	/* +10 min: exp = now + 5 min is now past, beyond the leeway. */
	ck_assert(tu_write_file(tsfile, "+600\n", false));
	ck_assert_int_eq(post_short_exp_until(d, 401, 5000), 401);
	tok = valid_token(d->key.priv_pem);
	expect_token(d, "a normal token after +10 min", tok, 200);
	free(tok);

	/* -10 min (from real): nbf = now - 5 min is now in the future, and
	 * a slow client is still cut off on the monotonic clock. */
	memset(s, 0, sizeof(s));
	s[0].port = d->port;
	s[0].head = "POST /webhooks HTTP/1.1\r\nHost: x\r\n";
	s[0].drip = "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
	s[0].interval_ms = 200;
	ck_assert_int_eq(pthread_create(&th, NULL, slow_client, &s[0]), 0);
	tu_sleep_ms(100);
	ck_assert(tu_write_file(tsfile, "-600\n", false));
	now = (long long)time(NULL);
	times = xasprintf("\"iat\":%lld,\"exp\":%lld,\"nbf\":%lld", now - 700,
	    now + 3600000, now - 300);
	claims = claims_with(times);
	tu_sleep_ms(200);
	expect_claims(d, "nbf 5 min ago, clock 10 min back", claims, 401);
	free(times);
	free(claims);
	times = xasprintf("\"iat\":%lld,\"exp\":%lld", now - 700,
	    now - 700 + 3600000);
	claims = claims_with(times);
	expect_claims(d, "a token from before the clock", claims, 200);
	free(times);
	free(claims);
	pthread_join(th, NULL);
	ck_assert_msg(s[0].closed_ms >= 0 && s[0].closed_ms <= 4500,
	    "a slow client across a clock jump closed after %d ms",
	    s[0].closed_ms);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	tu_daemon_free(d);
	tu_rmtree(dir);
	free(dir);
	free(tsfile);
	free(tsenv);
	free(pre);
}
END_TEST

static Suite *
hostile_suite(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc;

	tc = tcase_create("transport");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_01_body_too_large);
	tcase_add_test(tc, test_02_transfer_encoding);
	tcase_add_test(tc, test_03_huge_headers);
	tcase_add_test(tc, test_04_slowloris);
	tcase_add_test(tc, test_04_stalled_body);
	tcase_add_test(tc, test_04_stalled_headers);
	tcase_add_test(tc, test_05_connections_per_ip);
	tcase_add_test(tc, test_05_limits_across_workers);
	tcase_add_test(tc, test_05_limits_across_workers_ipv6);
	tcase_add_test(tc, test_06_method_and_path);
	suite_add_tcase(s, tc);

	tc = tcase_create("token");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_07_not_a_token);
	tcase_add_test(tc, test_08_huge_token);
	tcase_add_test(tc, test_09_algorithms);
	tcase_add_test(tc, test_10_embedded_keys);
	tcase_add_test(tc, test_11_wrong_key_tampered);
	tcase_add_test(tc, test_12_time_claims);
	suite_add_tcase(s, tc);

	tc = tcase_create("payload");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_13_bad_envelope);
	tcase_add_test(tc, test_14_bad_refund);
	tcase_add_test(tc, test_15_strict_json);
	tcase_add_test(tc, test_16_unknown_type);
	tcase_add_test(tc, test_17_duplicate_and_stale);
	suite_add_tcase(s, tc);

	tc = tcase_create("process");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_26_sigterm_under_load);
	tcase_add_test(tc, test_27_sighup_broken);
	tcase_add_test(tc, test_28_clock_jump);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(hostile_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
