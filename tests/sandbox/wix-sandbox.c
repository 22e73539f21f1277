/*
 * wix-sandbox: a local stand-in for Wix's REST API (WIX.md §3-6) on
 * loopback, for refundsync's tests and for trying refundsync without a
 * Wix account.
 *
 *   wix-sandbox [options]            serve until SIGTERM/SIGINT
 *   wix-sandbox trigger [options]    sign and POST one webhook (like
 *                                    `stripe trigger`)
 *   wix-sandbox selftest [-v]        run the server in-process and check
 *                                    every endpoint and fault
 *
 * Once bound it prints "wix-sandbox listening on HOST:PORT" on stderr
 * (--listen 127.0.0.1:0 picks a free port).  --max-seconds N makes it
 * exit by itself, so a test cannot leak it.
 *
 * DATA.  Each instance (--instances A,B; default "sandbox-instance") has
 * --seed N refunds rf-<inst>-000001 ... made from their index by a hash
 * of (--data-seed, instance, index), so none is stored until something
 * changes it: a million seeded refunds cost nothing but an 8-byte slot
 * per refund once one of them is modified, and a changed or created
 * refund is a record of a few hundred bytes.  Seeded refund i belongs to
 * charge ch-<inst>-NNNNNN with NNNNNN = i / 2 + 1 (two refunds a
 * charge); --charges K more charges follow with no refund yet.  Amounts
 * are exact decimals in the instance's currency (--currency USD, or a
 * list matching --instances) with its ISO 4217 exponent (JPY "1234",
 * KWD "12.345"); 85% of seeded refunds are SUCCEEDED (revision "2"), 5%
 * PENDING ("1"), 6% FAILED ("2"), 4% REVERSED ("3").  createdDate rises
 * with the index from 2024-01-01; refunds created later get the current
 * time and go at the end, so insertion order is createdDate order.
 *
 * AUTH.  POST /oauth2/token {grant_type: client_credentials, client_id,
 * client_secret, instance_id} checks --app-id/--app-secret (defaults
 * sandbox-app / sandbox-secret) and answers {"access_token":
 * "OauthNG.JWS.<random>", "token_type": "Bearer", "expires_in": TTL}.
 * A token is bound to its instance and lasts --token-ttl seconds
 * (14400); it is sent raw as Authorization (no "Bearer").  With
 * --api-key K, "Authorization: K" plus "wix-site-id: <instance>" works
 * too.  Missing, unknown or expired: 401.
 *
 * QUERY REFUNDS.  POST /payments/refunds/v1/refunds/query.  First page:
 * {"query":{"sort":[{"fieldName":"createdDate","order":"ASC"}],
 * "cursorPaging":{"limit":L},"filter":{"chargeId":...}}}; the filter is
 * optional and takes "x", {"$eq":"x"} or {"$in":[...]} (at most 100).
 * Later pages: {"query":{"cursorPaging":{"limit":L,"cursor":"..."}}};
 * a filter or sort next to a cursor is a 400.  L is 1..100 (default 50).
 * The answer is {"refunds":[...],"pagingMetadata":{"count":n,"cursors":
 * {"next":...,"prev":...},"hasNext":b}}, with no next cursor on the last
 * page.  A cursor is opaque: base64url of an HMAC (key made at start)
 * and a small JSON state (instance, position, direction, limit, filter,
 * generation).  It names a position in insertion order, so it stays
 * valid while data grows: a refund created during a backfill shows up
 * at the end.  /_sandbox/reset bumps the generation, which expires every
 * cursor; a tampered cursor is INVALID_CURSOR "The cursor is not valid".
 * GET /payments/refunds/v1/refunds/{id} answers {"refund":{...}} or 404.
 *
 * CREATE REFUND.  POST /payments/refunds/v1/refunds {"refund":{chargeId,
 * currencyCode?, amount?, reason?, note?}, "previouslyRefundedAmount"?}.
 * Checks, in this order: refund.chargeId required (400 validation);
 * unknown charge: CHARGE_NOT_FOUND; an error code forced on the charge
 * by the control API; currencyCode not an ISO 4217 code (400
 * validation); amount without currencyCode: REFUND_CURRENCY_MISSING;
 * currencyCode not the charge's: REFUND_CURRENCY_MISMATCH; amount not a
 * decimal string > 0 with at most 8 decimals that fits the currency's
 * exponent: 400 validationError on refund.amount (FORMAT or MIN); a
 * PENDING refund on the charge: CHARGE_REFUND_IN_PROGRESS; nothing
 * left: CHARGE_REFUNDED; previouslyRefundedAmount (required for a
 * partial refund, optional for a full one) not exactly the sum of the
 * charge's SUCCEEDED refunds: PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH;
 * amount over what is left: REFUND_AMOUNT_OUT_OF_BOUNDS.  A full refund
 * (no amount) refunds what is left and has "full": true.  All sums are
 * exact integers of minor units (domain/money.h), so "1" equals "1.00".
 * The new refund is SUCCEEDED (PENDING if the charge is flagged
 * pending), revision "1", appended, and announced by a signed Refund
 * Created webhook when --webhook-url/--webhook-key are set; later status
 * changes send Refund Updated.  Webhooks go out as Wix sends them (the
 * raw JWT as a text/plain POST, entityEventSequence = the revision), up
 * to 3 attempts 0.5 s and 1 s apart.
 *
 * Default HTTP status of each application error code (override per
 * charge with the control API):
 *   400  REFUND_AMOUNT_OUT_OF_BOUNDS REFUND_CURRENCY_MISSING
 *        REFUND_CURRENCY_MISMATCH PARTIAL_REFUND_NOT_SUPPORTED
 *        PAYMENT_METHOD_NOT_SUPPORTED ONLINE_REFUND_NOT_SUPPORTED
 *        PROVIDER_NOT_SUPPORTED
 *   404  CHARGE_NOT_FOUND (the sandbox's own name)
 *   428  PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH CHARGE_REFUND_IN_PROGRESS
 *        CHARGE_REFUNDED CHARGE_DISPUTED CHARGE_REFUND_PERIOD_ENDED
 *        CHARGE_UNPAID PROVIDER_DOWN MERCHANT_BALANCE_INSUFFICIENT
 *
 * ERRORS are shaped as WIX.md §6: {"message":..., "details":
 * {"applicationError":{"code","description","data":{}}}} or
 * {"message":..., "details":{"validationError":{"fieldViolations":
 * [{"field","description","violatedRule"}]}}}.  Every response carries
 * x-wix-request-id.
 *
 * RATE LIMIT.  --rate-limit N (or N/min; 0, the default, is off): an
 * instance that already had N requests served in the last 60 s gets 429
 * (with Retry-After only if --rate-limit-retry-after).  It counts the
 * authenticated API calls that reach a handler; the token endpoint is
 * not limited.  The request log ("fault": "rate_limit" on those 429s)
 * lets a test check any sliding minute.
 *
 * FAULTS (POST /_sandbox/faults, a JSON object or {"faults":[...]}).
 * Each has "count" (default 1; -1 until cleared) and may be limited by
 * "path" (exact, or a prefix ending in '*'), "endpoint" (token, query,
 * get, create) and "instance".  Faults come first, before auth:
 *   "429" ... "599" (any 4xx/5xx)  that status; "retry_after": N or a
 *                  string sent verbatim as Retry-After; 502/504 bodies
 *                  are HTML, the others JSON
 *   "300" ... "399" a redirect: that status with {"message":"moved"} and
 *                  "Location: /redirected<path>" (relative, the same
 *                  sandbox).  A request to /redirected/... is answered
 *                  404 and logged with fault "redirected", or
 *                  "redirected_auth" if it carried Authorization, so a
 *                  test sees whether a client followed and with what
 *   "token_401"    the token endpoint answers 401
 *   "stall"        "seconds"/"ms": wait, then answer normally
 *   "stall_body"   headers and half the body, wait, then the rest
 *   "truncate"     Content-Length of the whole body, half of it, close;
 *                  "chunked": true closes mid-body without a length
 *   "reset"        like truncate, but 100 ms after the half the TCP
 *                  connection is reset (an RST, not a FIN: the client
 *                  reads "connection reset by peer"); "chunked" too
 *   "oversize"     200 with a valid JSON body of "bytes" (64 MiB),
 *                  generated as it is sent; "chunked": true for no
 *                  Content-Length
 *   "invalid_json" 200 with a body that is not JSON
 * The body faults (stall*, truncate, reset, oversize, invalid_json) let the
 * request take effect first: a Create Refund happens, its answer is
 * lost.  Query faults act on a Query Refunds page:
 *   "expire_cursor"        the next request with a cursor gets 400
 *                          {"message":"cursor expired","details":
 *                          {"applicationError":{"code":"INVALID_CURSOR",
 *                          "description":"The cursor has expired"}}}
 *   "repeat_cursor"        the next page with a cursor returns that same
 *                          cursor as next (a client loop)
 *   "has_next_no_cursor"   hasNext true, no next cursor
 *   "empty_page_has_next"  no refunds, hasNext true, a next cursor at
 *                          the same position
 *   "expire_tokens"        (immediate) every issued token expires now
 *   "clear"                (immediate) drop every fault
 *
 * CONTROL API, on the same listener, no auth (loopback only):
 *   POST /_sandbox/faults, GET (list), DELETE (clear)
 *   POST /_sandbox/refunds {"instance"?, "refunds":[...]} or one object:
 *        an item with the "id" of a refund updates it ("status",
 *        "amount", "revision", "reason", "note"; "bump" (default true)
 *        adds 1 to the revision; updatedDate becomes now); without a
 *        known id it adds one ("chargeId", "amount", "status",
 *        "revision", ...).  "webhook": true sends the signed Refund
 *        Created/Updated.  Answers {"refunds":[...]}.
 *   POST /_sandbox/charges {"instance"?, "id"?, "total"?, "currency"?,
 *        "error": CODE ("" clears), "status"?, "count"? (default: until
 *        cleared), "pending"?, "settle": STATUS}: make or change a
 *        charge (a new one defaults to 100 units), force an error code
 *        on its next Create Refunds, make new refunds start PENDING, or
 *        settle its PENDING refunds (Refund Updated webhooks).
 *        GET /_sandbox/charges?instance=&id= shows it.
 *   GET  /_sandbox/log[?since=SEQ&limit=N] the request log, JSON lines
 *        {"seq","t_ms" (monotonic ms),"wall","method","path","instance",
 *        "status","fault"} for every API request, token endpoint and
 *        429s included (also written to --log FILE as they happen)
 *   GET  /_sandbox/webhooks  webhooks sent, JSON lines
 *   GET|POST /_sandbox/config {"token_ttl","rate_limit",
 *        "rate_limit_retry_after","cursor_ttl"}
 *   POST /_sandbox/reset [{"seed":N,"charges":K}]  back to the seeded
 *        state (faults, log, created refunds and charges dropped, every
 *        cursor expired; issued tokens stay valid)
 *
 * BOUNDS.  Bodies are capped (1 MiB API, 8 MiB control), stalls at 600
 * s, oversize at 4 GiB (never held in memory), the log at 1,000,000
 * entries (a ring), tokens at 100,000, faults at 64, created refunds at
 * 1,000,000 per instance, the webhook queue at 10,000.  Every loop is
 * bounded by those or by the seeded size.
 *
 * THREADS.  libmicrohttpd runs a thread per connection, so a stall
 * holds only its own connection; one mutex guards all state, and no one
 * sleeps holding it.  Stalls wait on a condition that stopping signals.
 * One thread signs and POSTs webhooks from a queue.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "adapters/jwtverify.h"
#include "domain/event.h"
#include "domain/json.h"
#include "domain/money.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/isotime.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#include "testutil.h"

#define SB_NAME_MAX		64	/* instance names */
#define SB_ID_MAX		128	/* refund and charge ids, with NUL */
#define SB_STATUS_MAX		24	/* refund status, with NUL */
#define SB_TEXT_MAX		1000	/* reason, note */
#define SB_INSTANCES_MAX	16
#define SB_SEED_MAX		10000000
#define SB_FREE_CHARGES_MAX	10000000
#define SB_EXTRA_MAX		1000000	/* refunds added per instance */
#define SB_CTL_CHARGES_MAX	1000000	/* charges added per instance */
#define SB_LOG_MAX		1000000
#define SB_FAULTS_MAX		64
#define SB_TOKENS_MAX		100000
#define SB_API_BODY_MAX		(1024 * 1024)
#define SB_CTL_BODY_MAX		(8 * 1024 * 1024)
#define SB_STALL_MAX_MS		(600 * 1000)
#define SB_OVERSIZE_MIN		256
#define SB_OVERSIZE_MAX		((uint64_t)4 << 30)
#define SB_OVERSIZE_DEF		((uint64_t)64 << 20)
#define SB_PAGE_MAX		100
#define SB_PAGE_DEFAULT		50
#define SB_IN_MAX		100
#define SB_CURSOR_MAX		8192
#define SB_MAC_LEN		16
#define SB_HOOKQ_MAX		10000
#define SB_HOOKLOG_MAX		10000
#define SB_HOOK_ATTEMPTS	3
#define SB_AMOUNT_MAX		INT64_C(1000000000000000) /* minor units */
#define SB_WIX_DECIMALS		8	/* most decimals Wix takes */

#define SEED_BASE_MS		INT64_C(1704067200000) /* 2024-01-01Z */
#define SEED_SPAN_MS		(INT64_C(500) * 86400 * 1000)
#define SEED_STEP_MS		INT64_C(20000)

#define DEFAULT_INSTANCE	"sandbox-instance"
#define DEFAULT_APP_ID		"sandbox-app"
#define DEFAULT_APP_SECRET	"sandbox-secret"
#define DEFAULT_TOKEN_TTL	14400

#define PATH_TOKEN		"/oauth2/token"
#define PATH_REFUNDS		"/payments/refunds/v1/refunds"
#define PATH_QUERY		"/payments/refunds/v1/refunds/query"

#define EX_OK			0
#define EX_FAIL			1
#define EX_USAGE		2

/* ---- small helpers ------------------------------------------------- */

/* Wall-clock milliseconds since the epoch (for entity dates). */
static int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out[32]. */
static void
iso_ms(int64_t ms, char out[32])
{
	struct tm tm;
	time_t s;
	size_t n;

	if (ms < 0)
		ms = 0;
	s = (time_t)(ms / 1000);
	gmtime_r(&s, &tm);
	n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

/* splitmix64's finaliser: a good 64-bit mix. */
static uint64_t
mix64(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static uint64_t
hash3(uint64_t seed, uint64_t a, uint64_t b)
{
	return mix64(mix64(mix64(seed) ^ a) ^ b);
}

/* n random bytes as 2n lower-case hex digits into out[2n + 1]. */
static void
rand_hex(char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[32];
	size_t i;

	if (n > sizeof(b))
		n = sizeof(b);
	if (RAND_bytes(b, (int)n) != 1)
		fatalx("RAND_bytes failed");
	for (i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url of n bytes.  Caller frees. */
static char *
b64url_encode(const unsigned char *p, size_t n)
{
	char *out = xmalloc(n / 3 * 4 + 5), *o = out;
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 |
		    p[i + 2];

		*o++ = b64url_alphabet[v >> 18];
		*o++ = b64url_alphabet[(v >> 12) & 63];
		*o++ = b64url_alphabet[(v >> 6) & 63];
		*o++ = b64url_alphabet[v & 63];
	}
	if (n - i == 1) {
		*o++ = b64url_alphabet[p[i] >> 2];
		*o++ = b64url_alphabet[(p[i] & 3) << 4];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 8 | p[i + 1];

		*o++ = b64url_alphabet[v >> 10];
		*o++ = b64url_alphabet[(v >> 4) & 63];
		*o++ = b64url_alphabet[(v & 15) << 2];
	}
	*o = '\0';
	return out;
}

static int
b64url_value(char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64url_alphabet, c)) == NULL)
		return -1;
	return (int)(p - b64url_alphabet);
}

/*
 * Decode unpadded base64url s (n chars).  Returns the bytes (caller
 * frees, NUL-terminated for convenience) and their count, or NULL if s
 * is not base64url.
 */
static unsigned char *
b64url_decode(const char *s, size_t n, size_t *outlen)
{
	unsigned char *out;
	uint32_t acc = 0;
	size_t i, o = 0;
	int bits = 0, v;

	if (n % 4 == 1)
		return NULL;
	out = xmalloc(n / 4 * 3 + 4);
	for (i = 0; i < n; i++) {
		if ((v = b64url_value(s[i])) < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

/* Constant-time comparison of two NUL-terminated secrets. */
static bool
secret_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la != lb)
		return false;
	return CRYPTO_memcmp(a, b, la) == 0;
}

/* True if s is 1..max bytes of [A-Za-z0-9._-]. */
static bool
name_ok(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s != '\0'; s++, n++) {
		if (n >= max)
			return false;
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
		    *s == '-'))
			return false;
	}
	return n > 0;
}

/* True if s is 1..max printable ASCII bytes (no controls). */
static bool
printable_ok(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s != '\0'; s++, n++)
		if (n >= max || (unsigned char)*s < 0x20 ||
		    (unsigned char)*s > 0x7e)
			return false;
	return n > 0;
}

/* Compact JSON text of o, which is freed.  Caller frees the text. */
static char *
json_take_print(cJSON *o)
{
	char *s = cJSON_PrintUnformatted(o);

	cJSON_Delete(o);
	if (s == NULL)
		fatalx("cJSON_PrintUnformatted failed");
	return s;
}

/* The number of decimals in a well-formed decimal text. */
static size_t
decimals_of(const char *text)
{
	const char *dot = strchr(text, '.');

	return dot == NULL ? 0 : strlen(dot + 1);
}

/* ---- a string map (chained, growing) ------------------------------- */

struct mapent {
	char		*key;
	void		*val;
	struct mapent	*next;
};

struct map {
	struct mapent	**b;
	size_t		  nb;
	size_t		  n;
};

static uint64_t
str_hash(const char *s)
{
	uint64_t h = UINT64_C(1469598103934665603);

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(1099511628211);
	}
	return h;
}

static void *
map_get(const struct map *m, const char *key)
{
	const struct mapent *e;

	if (m->nb == 0)
		return NULL;
	for (e = m->b[str_hash(key) % m->nb]; e != NULL; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e->val;
	return NULL;
}

static void
map_grow(struct map *m)
{
	struct mapent **nb, *e, *next;
	size_t n = m->nb == 0 ? 64 : m->nb * 2, i, h;

	nb = xcalloc(n, sizeof(*nb));
	for (i = 0; i < m->nb; i++)
		for (e = m->b[i]; e != NULL; e = next) {
			next = e->next;
			h = str_hash(e->key) % n;
			e->next = nb[h];
			nb[h] = e;
		}
	free(m->b);
	m->b = nb;
	m->nb = n;
}

/* Add key (copied), which must not be in m yet. */
static void
map_put(struct map *m, const char *key, void *val)
{
	struct mapent *e;
	size_t h;

	if (m->n >= m->nb)
		map_grow(m);
	e = xmalloc(sizeof(*e));
	e->key = xstrdup(key);
	e->val = val;
	h = str_hash(key) % m->nb;
	e->next = m->b[h];
	m->b[h] = e;
	m->n++;
}

/*
 * Remove every entry for which drop(val, arg) is true (every entry if
 * drop is NULL), passing its value to freefn (if not NULL).
 */
static void
map_filter(struct map *m, bool (*drop)(void *, void *), void *arg,
    void (*freefn)(void *))
{
	struct mapent **pp, *e;
	size_t i;

	for (i = 0; i < m->nb; i++) {
		pp = &m->b[i];
		while ((e = *pp) != NULL) {
			if (drop != NULL && !drop(e->val, arg)) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			if (freefn != NULL)
				freefn(e->val);
			free(e->key);
			free(e);
			m->n--;
		}
	}
}

static void
map_cleanup(struct map *m, void (*freefn)(void *))
{
	map_filter(m, NULL, NULL, freefn);
	free(m->b);
	m->b = NULL;
	m->nb = 0;
	m->n = 0;
}

/* ---- the data: refunds, charges, instances ------------------------- */

/* One refund, materialised (changed, created, or a seeded one copied
 * out for reading). */
struct rec {
	char	 id[SB_ID_MAX];
	char	 charge_id[SB_ID_MAX];
	char	 currency[4];
	char	 amount[MONEY_MAX_TEXT + 1];	/* canonical decimal */
	char	 status[SB_STATUS_MAX];
	int64_t	 revision;
	int64_t	 created_ms;			/* wall ms */
	int64_t	 updated_ms;
	bool	 full;
	char	*reason;			/* owned, or NULL */
	char	*note;				/* owned, or NULL */
};

/* A charge someone has looked at or changed (the others are implied by
 * the seed). */
struct charge {
	char	 id[SB_ID_MAX];
	char	 currency[4];
	int64_t	 total;		/* minor units */
	size_t	 seed_lo;	/* its seeded refunds: [seed_lo, +seed_n) */
	size_t	 seed_n;
	size_t	*idx;		/* indices of its added refunds */
	size_t	 n, cap;
	bool	 pending;	/* new refunds start PENDING */
	char	 force_code[64];	/* "" none */
	unsigned force_status;
	int64_t	 force_count;	/* left; -1 until cleared */
};

struct instance {
	char		 name[SB_NAME_MAX + 1];
	char		 currency[4];
	int		 exp;		/* ISO 4217 exponent */
	uint64_t	 ordinal;	/* position in --instances */
	size_t		 nseed;		/* seeded refunds */
	size_t		 nseed_charges;	/* (nseed + 1) / 2 */
	size_t		 nfree_charges;	/* --charges */
	int64_t		 step_ms;	/* createdDate step of the seed */
	struct rec	**over;		/* nseed slots, or NULL: changes */
	struct rec	**extra;	/* added refunds, in order */
	size_t		 nextra, extracap;
	struct map	 charges;	/* id -> struct charge */
	struct map	 ids;		/* custom refund id -> index + 1 */
	size_t		 nctl_charges;
	int64_t		 last_created_ms;
	int64_t		*rl;		/* rate window: times served */
	size_t		 rl_cap, rl_head, rl_n;
};

static void
rec_free(struct rec *r)
{
	if (r == NULL)
		return;
	free(r->reason);
	free(r->note);
	free(r);
}

static void
charge_free(void *p)
{
	struct charge *ch = p;

	if (ch == NULL)
		return;
	free(ch->idx);
	free(ch);
}

static size_t
inst_total(const struct instance *in)
{
	return in->nseed + in->nextra;
}

/* Seeded amount of refund i, in minor units: 100 .. 99999. */
static int64_t
seed_amount(uint64_t seed, const struct instance *in, size_t i)
{
	return 100 + (int64_t)(hash3(seed, in->ordinal * 2 + 1, i) % 99900);
}

/* Fill *r with seeded refund i (0-based) of in. */
static void
seed_rec(uint64_t seed, const struct instance *in, size_t i, struct rec *r)
{
	unsigned pick = (unsigned)(hash3(seed, in->ordinal * 2, i) % 100);

	memset(r, 0, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "rf-%s-%06zu", in->name, i + 1);
	snprintf(r->charge_id, sizeof(r->charge_id), "ch-%s-%06zu", in->name,
	    i / 2 + 1);
	memcpy(r->currency, in->currency, sizeof(r->currency));
	if (money_format(seed_amount(seed, in, i), in->exp, r->amount,
	    sizeof(r->amount)) != RS_OK)
		RS_PANIC("seed amount does not format");
	r->created_ms = SEED_BASE_MS + (int64_t)i * in->step_ms;
	if (pick < 85) {
		snprintf(r->status, sizeof(r->status), "SUCCEEDED");
		r->revision = 2;
		r->updated_ms = r->created_ms + 2000;
	} else if (pick < 90) {
		snprintf(r->status, sizeof(r->status), "PENDING");
		r->revision = 1;
		r->updated_ms = r->created_ms;
	} else if (pick < 96) {
		snprintf(r->status, sizeof(r->status), "FAILED");
		r->revision = 2;
		r->updated_ms = r->created_ms + 5000;
	} else {
		snprintf(r->status, sizeof(r->status), "REVERSED");
		r->revision = 3;
		r->updated_ms = r->created_ms + 86400000;
	}
}

/*
 * The refund at index i (seeded, changed or added): a borrowed pointer,
 * or tmp filled in for a seeded one that never changed.
 */
static const struct rec *
rec_at(uint64_t seed, const struct instance *in, size_t i, struct rec *tmp)
{
	if (i >= in->nseed)
		return in->extra[i - in->nseed];
	if (in->over != NULL && in->over[i] != NULL)
		return in->over[i];
	seed_rec(seed, in, i, tmp);
	return tmp;
}

/* The refund at index i, made changeable (a seeded one is copied into
 * its slot first). */
static struct rec *
rec_mut(uint64_t seed, struct instance *in, size_t i)
{
	if (i >= in->nseed)
		return in->extra[i - in->nseed];
	if (in->over == NULL)
		in->over = xcalloc(in->nseed, sizeof(*in->over));
	if (in->over[i] == NULL) {
		in->over[i] = xmalloc(sizeof(struct rec));
		seed_rec(seed, in, i, in->over[i]);
	}
	return in->over[i];
}

/*
 * If id is "<prefix><inst>-<digits>", the number.  The digits must be
 * the canonical %06zu form of the number, so "rf-a-1" is not
 * "rf-a-000001".
 */
static bool
id_number(const char *id, const char *prefix, const char *inst,
    size_t *num)
{
	size_t pl = strlen(prefix), il = strlen(inst), n = 0, digits = 0;
	const char *p;
	char canon[32];

	if (strncmp(id, prefix, pl) != 0 || strncmp(id + pl, inst, il) != 0 ||
	    id[pl + il] != '-')
		return false;
	for (p = id + pl + il + 1; *p >= '0' && *p <= '9'; p++) {
		if (++digits > 12)
			return false;
		n = n * 10 + (size_t)(*p - '0');
	}
	if (*p != '\0' || digits == 0)
		return false;
	snprintf(canon, sizeof(canon), "%06zu", n);
	if (strcmp(canon, id + pl + il + 1) != 0)
		return false;
	*num = n;
	return true;
}

/* The index of refund id in in, or false. */
static bool
refund_index(uint64_t seed, const struct instance *in, const char *id,
    size_t *idx)
{
	struct rec tmp;
	size_t num;
	uintptr_t v;

	if (id_number(id, "rf-", in->name, &num)) {
		if (num == 0 || num - 1 >= inst_total(in) ||
		    strcmp(rec_at(seed, in, num - 1, &tmp)->id, id) != 0)
			return false;
		*idx = num - 1;
		return true;
	}
	if ((v = (uintptr_t)map_get(&in->ids, id)) == 0)
		return false;
	*idx = (size_t)v - 1;
	return true;
}

/* Seeded total of charge number num (1-based), and its seeded refunds. */
static int64_t
seed_charge_total(uint64_t seed, const struct instance *in, size_t num,
    size_t *lo, size_t *n)
{
	uint64_t h = hash3(seed, in->ordinal * 2 + 1, ~(uint64_t)num);
	int64_t total = 0;
	size_t k;

	*lo = 0;
	*n = 0;
	if (num > in->nseed_charges)
		return 1000 + (int64_t)(h % 99000);
	*lo = (num - 1) * 2;
	*n = in->nseed - *lo < 2 ? in->nseed - *lo : 2;
	for (k = 0; k < *n; k++)
		total += seed_amount(seed, in, *lo + k);
	/* A quarter of the charges are refunded to the last cent. */
	if (h % 4 != 0)
		total += 100 + (int64_t)((h >> 8) % 49900);
	return total;
}

/* The charge id of in, or NULL if there is none. */
static struct charge *
charge_find(uint64_t seed, struct instance *in, const char *id)
{
	struct charge *ch;
	size_t num;

	if ((ch = map_get(&in->charges, id)) != NULL)
		return ch;
	if (!id_number(id, "ch-", in->name, &num) || num == 0 ||
	    num > in->nseed_charges + in->nfree_charges)
		return NULL;
	ch = xcalloc(1, sizeof(*ch));
	snprintf(ch->id, sizeof(ch->id), "%s", id);
	memcpy(ch->currency, in->currency, sizeof(ch->currency));
	ch->total = seed_charge_total(seed, in, num, &ch->seed_lo,
	    &ch->seed_n);
	map_put(&in->charges, ch->id, ch);
	return ch;
}

/* The k-th refund index of ch (seeded ones first). */
static size_t
charge_refund(const struct charge *ch, size_t k)
{
	return k < ch->seed_n ? ch->seed_lo + k : ch->idx[k - ch->seed_n];
}

/* Sum of ch's SUCCEEDED refunds (its currency), and how many PENDING. */
static void
charge_state(uint64_t seed, const struct instance *in,
    const struct charge *ch, int64_t *succeeded, size_t *npending)
{
	const struct rec *r;
	struct rec tmp;
	int64_t m;
	size_t k;

	*succeeded = 0;
	*npending = 0;
	for (k = 0; k < ch->seed_n + ch->n; k++) {
		r = rec_at(seed, in, charge_refund(ch, k), &tmp);
		if (strcmp(r->status, "PENDING") == 0)
			(*npending)++;
		else if (strcmp(r->status, "SUCCEEDED") == 0 &&
		    strcmp(r->currency, ch->currency) == 0 &&
		    money_to_minor(r->amount, r->currency, &m) == RS_OK &&
		    m <= SB_AMOUNT_MAX && *succeeded <= INT64_MAX / 2)
			*succeeded += m;
	}
}

/* A createdDate after every other refund of in. */
static int64_t
next_created_ms(struct instance *in)
{
	int64_t t = wall_ms();

	if (t <= in->last_created_ms)
		t = in->last_created_ms + 1;
	in->last_created_ms = t;
	return t;
}

/* Append r (taken) to in and to ch if not NULL; returns its index. */
static size_t
inst_append(struct instance *in, struct charge *ch, struct rec *r)
{
	size_t idx;

	if (in->nextra == in->extracap) {
		in->extracap = in->extracap == 0 ? 64 : in->extracap * 2;
		in->extra = xreallocarray(in->extra, in->extracap,
		    sizeof(*in->extra));
	}
	in->extra[in->nextra++] = r;
	idx = inst_total(in) - 1;
	if (ch != NULL) {
		if (ch->n == ch->cap) {
			ch->cap = ch->cap == 0 ? 4 : ch->cap * 2;
			ch->idx = xreallocarray(ch->idx, ch->cap,
			    sizeof(*ch->idx));
		}
		ch->idx[ch->n++] = idx;
	}
	return idx;
}

/* Drop every change and addition; back to the seed with nseed refunds
 * and nfree more charges. */
static void
inst_reset(struct instance *in, size_t nseed, size_t nfree)
{
	size_t i;

	if (in->over != NULL)
		for (i = 0; i < in->nseed; i++)
			rec_free(in->over[i]);
	free(in->over);
	in->over = NULL;
	for (i = 0; i < in->nextra; i++)
		rec_free(in->extra[i]);
	free(in->extra);
	in->extra = NULL;
	in->nextra = in->extracap = 0;
	map_cleanup(&in->charges, charge_free);
	map_cleanup(&in->ids, NULL);
	in->nctl_charges = 0;
	in->nseed = nseed;
	in->nseed_charges = (nseed + 1) / 2;
	in->nfree_charges = nfree;
	in->step_ms = SEED_STEP_MS;
	if (nseed > 0 && (int64_t)nseed > SEED_SPAN_MS / SEED_STEP_MS)
		in->step_ms = SEED_SPAN_MS / (int64_t)nseed;
	in->last_created_ms = SEED_BASE_MS + (int64_t)nseed * in->step_ms;
	in->rl_head = in->rl_n = 0;
}

/* A refund as the Wix entity (REST field names, WIX.md §2). */
static cJSON *
rec_json(const struct rec *r)
{
	cJSON *o = cJSON_CreateObject(), *si;
	char rev[24], cd[32], ud[32];

	snprintf(rev, sizeof(rev), "%" PRId64, r->revision);
	iso_ms(r->created_ms, cd);
	iso_ms(r->updated_ms, ud);
	cJSON_AddStringToObject(o, "id", r->id);
	cJSON_AddStringToObject(o, "revision", rev);
	cJSON_AddStringToObject(o, "createdDate", cd);
	cJSON_AddStringToObject(o, "updatedDate", ud);
	cJSON_AddStringToObject(o, "chargeId", r->charge_id);
	cJSON_AddStringToObject(o, "currencyCode", r->currency);
	cJSON_AddStringToObject(o, "amount", r->amount);
	cJSON_AddBoolToObject(o, "full", r->full);
	cJSON_AddStringToObject(o, "status", r->status);
	if (strcmp(r->status, "FAILED") == 0) {
		si = cJSON_AddObjectToObject(o, "statusInfo");
		cJSON_AddStringToObject(si, "code", "1013");
		cJSON_AddStringToObject(si, "description",
		    "Insufficient funds");
	}
	if (r->reason != NULL)
		cJSON_AddStringToObject(o, "reason", r->reason);
	if (r->note != NULL)
		cJSON_AddStringToObject(o, "note", r->note);
	return o;
}

static char *
rec_text(const struct rec *r)
{
	return json_take_print(rec_json(r));
}

/* ---- the sandbox --------------------------------------------------- */

enum ep {
	EP_NONE = 0,
	EP_TOKEN,
	EP_QUERY,
	EP_GET,
	EP_CREATE
};

enum fault_kind {
	F_STATUS,
	F_TOKEN_401,
	F_STALL,
	F_STALL_BODY,
	F_TRUNCATE,
	F_OVERSIZE,
	F_INVALID_JSON,
	F_RESET,
	F_REDIRECT,
	F_EXPIRE_CURSOR,
	F_REPEAT_CURSOR,
	F_HAS_NEXT_NO_CURSOR,
	F_EMPTY_PAGE_HAS_NEXT
};

#define FMASK(k)	(1u << (k))
#define FMASK_GATE	(FMASK(F_STATUS) | FMASK(F_STALL) | \
	FMASK(F_STALL_BODY) | FMASK(F_TRUNCATE) | FMASK(F_OVERSIZE) | \
	FMASK(F_INVALID_JSON) | FMASK(F_RESET) | FMASK(F_REDIRECT))

struct fault {
	enum fault_kind	 kind;
	char		 name[24];	/* as given, for the log */
	unsigned	 status;	/* F_STATUS, F_REDIRECT */
	int64_t		 count;		/* left; -1 until cleared */
	bool		 has_retry_after;
	char		 retry_after[64];
	int64_t		 ms;		/* stalls */
	uint64_t	 bytes;		/* oversize */
	bool		 chunked;	/* truncate, reset, oversize */
	char		 path[256];	/* "" any */
	enum ep		 ep;		/* EP_NONE any */
	int		 inst;		/* -1 any */
};

struct logent {
	uint64_t	 seq;
	int64_t		 t_ms;		/* monotonic */
	int64_t		 wall_ms;
	char		 method[8];
	char		*path;
	int		 inst;		/* -1 unknown */
	unsigned	 status;
	char		 fault[24];	/* "" none */
};

struct token {
	int		 inst;
	int64_t		 expires_ms;	/* monotonic */
};

/* A webhook waiting to be signed and sent. */
struct hookjob {
	struct hookjob	*next;
	bool		 created;	/* else updated */
	bool		 installed;	/* AppInstalled (trigger only) */
	char		*instance;
	char		*entity;	/* refund JSON text */
	char		*refund_id;
	int64_t		 seq;		/* entityEventSequence */
	char		 event_time[32];
};

struct hookrec {
	uint64_t	 seq;
	int64_t		 t_ms;
	char		 event[48];
	char		 instance[SB_NAME_MAX + 1];
	char		 refund_id[SB_ID_MAX];
	char		 event_id[40];
	long		 status;	/* last HTTP status, -1 none */
	int		 attempts;
};

/* Everything the command line sets. */
struct sb_options {
	struct sockaddr_storage addr;
	char		 host[72];	/* for the "listening" line */
	char		*instances[SB_INSTANCES_MAX];
	size_t		 ninstances;
	char		*currencies[SB_INSTANCES_MAX];
	size_t		 ncurrencies;
	size_t		 seed;
	size_t		 charges;
	uint64_t	 data_seed;
	int64_t		 token_ttl_s;
	int64_t		 rate_limit;
	bool		 rate_limit_retry_after;
	int64_t		 cursor_ttl_s;	/* 0: never */
	const char	*app_id;
	const char	*app_secret;
	const char	*api_key;
	const char	*log_path;
	const char	*hook_url;
	char		*hook_key;	/* private PEM text, owned */
	int64_t		 max_seconds;
	bool		 quiet;
};

struct sandbox {
	pthread_mutex_t	 mtx;		/* guards everything below */
	struct instance	*inst;
	size_t		 ninst;
	uint64_t	 data_seed;
	uint64_t	 generation;
	unsigned char	 cursor_key[32];
	int64_t		 token_ttl_s;
	int64_t		 rate_limit;
	bool		 rate_limit_retry_after;
	int64_t		 cursor_ttl_s;
	char		*app_id;
	char		*app_secret;
	char		*api_key;
	struct map	 tokens;	/* token -> struct token */
	struct fault	 faults[SB_FAULTS_MAX];
	size_t		 nfaults;
	struct logent	*log;		/* ring once full */
	size_t		 log_cap, log_n, log_head;
	uint64_t	 log_seq;
	FILE		*logf;

	/* Stalls wait here; stopping wakes them. */
	pthread_mutex_t	 stop_mtx;
	pthread_cond_t	 stop_cond;
	bool		 stopping;

	/* The webhook sender (hook_mtx guards the queue and records). */
	char		*hook_url;
	char		*hook_key;
	pthread_mutex_t	 hook_mtx;
	pthread_cond_t	 hook_cond;
	pthread_t	 hook_thread;
	bool		 hook_running;
	bool		 hook_stop;
	struct hookjob	*hq_head, *hq_tail;
	size_t		 hq_n;
	struct hookrec	*hlog;
	size_t		 hlog_n, hlog_head;
	uint64_t	 hlog_seq;
	uint64_t	 hooks_dropped;

	struct MHD_Daemon *mhd;
	uint16_t	 port;
};

static int
inst_find(const struct sandbox *sb, const char *name)
{
	size_t i;

	if (name == NULL)
		return -1;
	for (i = 0; i < sb->ninst; i++)
		if (strcmp(sb->inst[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Wait ms on the monotonic clock, or less if the sandbox stops.  false
 * if it is stopping. */
static bool
sb_sleep(struct sandbox *sb, int64_t ms)
{
	struct timespec ts;
	bool stopping;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&sb->stop_mtx);
	while (!sb->stopping)
		if (pthread_cond_timedwait(&sb->stop_cond, &sb->stop_mtx,
		    &ts) == ETIMEDOUT)
			break;
	stopping = sb->stopping;
	pthread_mutex_unlock(&sb->stop_mtx);
	return !stopping;
}

/* ---- faults -------------------------------------------------------- */

static const struct {
	const char	*name;
	enum fault_kind	 kind;
} fault_names[] = {
	{ "token_401",		 F_TOKEN_401 },
	{ "stall",		 F_STALL },
	{ "stall_body",		 F_STALL_BODY },
	{ "truncate",		 F_TRUNCATE },
	{ "reset",		 F_RESET },
	{ "oversize",		 F_OVERSIZE },
	{ "invalid_json",	 F_INVALID_JSON },
	{ "expire_cursor",	 F_EXPIRE_CURSOR },
	{ "repeat_cursor",	 F_REPEAT_CURSOR },
	{ "has_next_no_cursor",	 F_HAS_NEXT_NO_CURSOR },
	{ "empty_page_has_next", F_EMPTY_PAGE_HAS_NEXT },
};

static const struct {
	const char	*name;
	enum ep		 ep;
} ep_names[] = {
	{ "token",	EP_TOKEN },
	{ "query",	EP_QUERY },
	{ "get",	EP_GET },
	{ "create",	EP_CREATE },
};

/*
 * Read one fault object into *f.  Returns NULL, or a static reason the
 * fault is refused.
 */
static const char *
fault_parse(const struct sandbox *sb, const cJSON *o, struct fault *f)
{
	static const char *const known[] = { "fault", "count", "retry_after",
	    "seconds", "ms", "bytes", "chunked", "path", "endpoint",
	    "instance", NULL };
	const cJSON *m, *ra;
	const char *name, *s;
	int64_t v;
	size_t i;
	bool found;

	memset(f, 0, sizeof(*f));
	f->count = 1;
	f->inst = -1;
	f->ms = 10000;
	f->bytes = SB_OVERSIZE_DEF;
	if (!cJSON_IsObject(o))
		return "a fault is a JSON object";
	cJSON_ArrayForEach(m, o) {
		found = false;
		for (i = 0; known[i] != NULL; i++)
			if (strcmp(m->string, known[i]) == 0)
				found = true;
		if (!found)
			return "unknown member in fault";
	}
	if ((name = json_get_string(o, "fault")) == NULL)
		return "\"fault\" (a string) is required";
	if (strlen(name) >= sizeof(f->name))
		return "unknown fault";
	snprintf(f->name, sizeof(f->name), "%s", name);
	if (strlen(name) == 3 && strnum_i64(name, 400, 599, &v) == NULL) {
		f->kind = F_STATUS;
		f->status = (unsigned)v;
	} else if (strlen(name) == 3 &&
	    strnum_i64(name, 300, 399, &v) == NULL) {
		f->kind = F_REDIRECT;
		f->status = (unsigned)v;
	} else {
		found = false;
		for (i = 0; i < sizeof(fault_names) / sizeof(fault_names[0]);
		    i++)
			if (strcmp(name, fault_names[i].name) == 0) {
				f->kind = fault_names[i].kind;
				found = true;
			}
		if (!found)
			return "unknown fault";
	}
	switch (json_get_int64(o, "count", &v)) {
	case RS_OK:
		if (v != -1 && (v < 1 || v > 1000000))
			return "count: 1..1000000, or -1 until cleared";
		f->count = v;
		break;
	case RS_ERR_NOTFOUND:
		break;
	default:
		return "count: an integer";
	}
	if ((ra = json_get(o, "retry_after")) != NULL) {
		if (cJSON_IsString(ra)) {
			if (!printable_ok(ra->valuestring,
			    sizeof(f->retry_after) - 1))
				return "retry_after: 1..63 printable bytes";
			snprintf(f->retry_after, sizeof(f->retry_after), "%s",
			    ra->valuestring);
		} else if (json_get_int64(o, "retry_after", &v) == RS_OK)
			snprintf(f->retry_after, sizeof(f->retry_after),
			    "%" PRId64, v);
		else
			return "retry_after: an integer or a string";
		f->has_retry_after = true;
	}
	if (json_get_int64(o, "seconds", &v) == RS_OK) {
		if (v < 0 || v > SB_STALL_MAX_MS / 1000)
			return "seconds: 0..600";
		f->ms = v * 1000;
	} else if (json_get(o, "seconds") != NULL)
		return "seconds: an integer";
	if (json_get_int64(o, "ms", &v) == RS_OK) {
		if (v < 0 || v > SB_STALL_MAX_MS)
			return "ms: 0..600000";
		f->ms = v;
	} else if (json_get(o, "ms") != NULL)
		return "ms: an integer";
	if (json_get_int64(o, "bytes", &v) == RS_OK) {
		if (v < SB_OVERSIZE_MIN || (uint64_t)v > SB_OVERSIZE_MAX)
			return "bytes: 256..4294967296";
		f->bytes = (uint64_t)v;
	} else if (json_get(o, "bytes") != NULL)
		return "bytes: an integer";
	if (json_get(o, "chunked") != NULL &&
	    json_get_bool(o, "chunked", &f->chunked) != RS_OK)
		return "chunked: a boolean";
	if ((m = json_get(o, "path")) != NULL) {
		if (!cJSON_IsString(m) || !printable_ok(m->valuestring,
		    sizeof(f->path) - 1) || m->valuestring[0] != '/')
			return "path: an absolute path";
		snprintf(f->path, sizeof(f->path), "%s", m->valuestring);
	}
	if ((m = json_get(o, "endpoint")) != NULL) {
		s = cJSON_IsString(m) ? m->valuestring : "";
		for (i = 0; i < sizeof(ep_names) / sizeof(ep_names[0]); i++)
			if (strcmp(s, ep_names[i].name) == 0)
				f->ep = ep_names[i].ep;
		if (f->ep == EP_NONE)
			return "endpoint: token, query, get or create";
	}
	if ((m = json_get(o, "instance")) != NULL) {
		if (!cJSON_IsString(m) ||
		    (f->inst = inst_find(sb, m->valuestring)) < 0)
			return "instance: not one of --instances";
	}
	return NULL;
}

static bool
path_match(const char *pattern, const char *path)
{
	size_t n = strlen(pattern);

	if (n > 0 && pattern[n - 1] == '*')
		return strncmp(pattern, path, n - 1) == 0;
	return strcmp(pattern, path) == 0;
}

/*
 * Take the first fault of a kind in mask that applies to (ep, path,
 * inst): copy it to *out and use up one of its count.
 */
static bool
fault_take(struct sandbox *sb, unsigned mask, enum ep ep, const char *path,
    int inst, struct fault *out)
{
	struct fault *f;
	size_t i;

	for (i = 0; i < sb->nfaults; i++) {
		f = &sb->faults[i];
		if ((mask & FMASK(f->kind)) == 0 ||
		    (f->inst >= 0 && f->inst != inst) ||
		    (f->ep != EP_NONE && f->ep != ep) ||
		    (f->path[0] != '\0' && !path_match(f->path, path)))
			continue;
		*out = *f;
		if (f->count > 0 && --f->count == 0) {
			memmove(f, f + 1, (sb->nfaults - i - 1) * sizeof(*f));
			sb->nfaults--;
		}
		return true;
	}
	return false;
}

static cJSON *
fault_json(const struct sandbox *sb, const struct fault *f)
{
	cJSON *o = cJSON_CreateObject();
	size_t i;

	cJSON_AddStringToObject(o, "fault", f->name);
	cJSON_AddNumberToObject(o, "count", (double)f->count);
	if (f->has_retry_after)
		cJSON_AddStringToObject(o, "retry_after", f->retry_after);
	if (f->kind == F_STALL || f->kind == F_STALL_BODY)
		cJSON_AddNumberToObject(o, "ms", (double)f->ms);
	if (f->kind == F_OVERSIZE)
		cJSON_AddNumberToObject(o, "bytes", (double)f->bytes);
	if (f->kind == F_OVERSIZE || f->kind == F_TRUNCATE ||
	    f->kind == F_RESET)
		cJSON_AddBoolToObject(o, "chunked", f->chunked);
	if (f->path[0] != '\0')
		cJSON_AddStringToObject(o, "path", f->path);
	for (i = 0; i < sizeof(ep_names) / sizeof(ep_names[0]); i++)
		if (f->ep == ep_names[i].ep)
			cJSON_AddStringToObject(o, "endpoint",
			    ep_names[i].name);
	if (f->inst >= 0)
		cJSON_AddStringToObject(o, "instance",
		    sb->inst[f->inst].name);
	return o;
}

/* ---- the request log ----------------------------------------------- */

static char *
logent_text(const struct sandbox *sb, const struct logent *e)
{
	cJSON *o = cJSON_CreateObject();
	char wall[32];

	iso_ms(e->wall_ms, wall);
	cJSON_AddNumberToObject(o, "seq", (double)e->seq);
	cJSON_AddNumberToObject(o, "t_ms", (double)e->t_ms);
	cJSON_AddStringToObject(o, "wall", wall);
	cJSON_AddStringToObject(o, "method", e->method);
	cJSON_AddStringToObject(o, "path", e->path);
	if (e->inst >= 0)
		cJSON_AddStringToObject(o, "instance", sb->inst[e->inst].name);
	else
		cJSON_AddNullToObject(o, "instance");
	cJSON_AddNumberToObject(o, "status", e->status);
	if (e->fault[0] != '\0')
		cJSON_AddStringToObject(o, "fault", e->fault);
	else
		cJSON_AddNullToObject(o, "fault");
	return json_take_print(o);
}

static void
log_add(struct sandbox *sb, int64_t t_ms, const char *method,
    const char *path, int inst, unsigned status, const char *fault)
{
	struct logent *e;
	char *line;

	if (sb->log_n < sb->log_cap)
		e = &sb->log[sb->log_n++];
	else if (sb->log_cap < SB_LOG_MAX) {
		sb->log_cap = sb->log_cap == 0 ? 1024 : sb->log_cap * 2;
		if (sb->log_cap > SB_LOG_MAX)
			sb->log_cap = SB_LOG_MAX;
		sb->log = xreallocarray(sb->log, sb->log_cap,
		    sizeof(*sb->log));
		e = &sb->log[sb->log_n++];
	} else {
		/* Full: overwrite the oldest. */
		e = &sb->log[sb->log_head];
		sb->log_head = (sb->log_head + 1) % sb->log_cap;
		free(e->path);
	}
	memset(e, 0, sizeof(*e));
	e->seq = ++sb->log_seq;
	e->t_ms = t_ms;
	e->wall_ms = wall_ms();
	snprintf(e->method, sizeof(e->method), "%s", method);
	e->path = xstrndup(path, 255);
	e->inst = inst;
	e->status = status;
	snprintf(e->fault, sizeof(e->fault), "%s", fault != NULL ? fault : "");
	if (sb->logf != NULL) {
		line = logent_text(sb, e);
		fprintf(sb->logf, "%s\n", line);
		fflush(sb->logf);
		free(line);
	}
}

static void
log_clear(struct sandbox *sb)
{
	size_t i;

	for (i = 0; i < sb->log_n; i++)
		free(sb->log[i].path);
	free(sb->log);
	sb->log = NULL;
	sb->log_cap = sb->log_n = sb->log_head = 0;
}

/* ---- tokens and the rate limit ------------------------------------- */

static bool
token_expired(void *val, void *arg)
{
	const struct token *t = val;
	const int64_t *now = arg;

	return t->expires_ms <= *now;
}

static char *
token_issue(struct sandbox *sb, int inst)
{
	unsigned char rnd[24];
	struct token *t;
	char *b, *tok;
	int64_t now = clock_mono_ms();

	if (sb->tokens.n >= SB_TOKENS_MAX)
		map_filter(&sb->tokens, token_expired, &now, free);
	if (sb->tokens.n >= SB_TOKENS_MAX) {
		log_warnx("token table full (%d): every token dropped",
		    SB_TOKENS_MAX);
		map_filter(&sb->tokens, NULL, NULL, free);
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		fatalx("RAND_bytes failed");
	b = b64url_encode(rnd, sizeof(rnd));
	tok = xasprintf("OauthNG.JWS.%s", b);
	free(b);
	t = xmalloc(sizeof(*t));
	t->inst = inst;
	t->expires_ms = now + sb->token_ttl_s * 1000;
	map_put(&sb->tokens, tok, t);
	return tok;
}

static bool
token_expire_one(void *val, void *arg)
{
	struct token *t = val;

	t->expires_ms = 0;
	return false;
}

enum auth {
	AUTH_OK,
	AUTH_MISSING,
	AUTH_BEARER,
	AUTH_INVALID,
	AUTH_EXPIRED,
	AUTH_SITE
};

/*
 * Who is calling: the instance of a token (set even when expired), or
 * of wix-site-id with the API key.
 */
static enum auth
auth_resolve(struct sandbox *sb, const char *authz, const char *site,
    int *inst)
{
	const struct token *t;

	*inst = -1;
	if (authz == NULL || *authz == '\0')
		return AUTH_MISSING;
	if (sb->api_key != NULL && secret_equal(authz, sb->api_key)) {
		if ((*inst = inst_find(sb, site)) < 0)
			return AUTH_SITE;
		return AUTH_OK;
	}
	if (strncasecmp(authz, "Bearer ", 7) == 0 &&
	    (t = map_get(&sb->tokens, authz + 7)) != NULL) {
		*inst = t->inst;
		return AUTH_BEARER;
	}
	if ((t = map_get(&sb->tokens, authz)) == NULL)
		return AUTH_INVALID;
	*inst = t->inst;
	if (clock_mono_ms() >= t->expires_ms)
		return AUTH_EXPIRED;
	return AUTH_OK;
}

/* Count a served request of in at now, unless the window is full; then
 * true, and *wait_s is when a slot frees. */
static bool
rate_limited(struct sandbox *sb, struct instance *in, int64_t now,
    int64_t *wait_s)
{
	if (sb->rate_limit <= 0)
		return false;
	if (in->rl == NULL || in->rl_cap != (size_t)sb->rate_limit) {
		free(in->rl);
		in->rl_cap = (size_t)sb->rate_limit;
		in->rl = xcalloc(in->rl_cap, sizeof(*in->rl));
		in->rl_head = in->rl_n = 0;
	}
	while (in->rl_n > 0 && in->rl[in->rl_head] <= now - 60000) {
		in->rl_head = (in->rl_head + 1) % in->rl_cap;
		in->rl_n--;
	}
	if (in->rl_n >= in->rl_cap) {
		*wait_s = (in->rl[in->rl_head] + 60000 - now + 999) / 1000;
		return true;
	}
	in->rl[(in->rl_head + in->rl_n) % in->rl_cap] = now;
	in->rl_n++;
	return false;
}

/* ---- cursors ------------------------------------------------------- */

/* Where a query is: the next refund has an index >= pos (ascending) or
 * < pos (descending), among those matching the filter. */
struct cstate {
	uint64_t	 gen;
	int		 inst;
	bool		 desc;
	size_t		 pos;
	int		 limit;
	int64_t		 issued_ms;	/* monotonic */
	char		*ids[SB_IN_MAX];	/* chargeId filter, owned */
	size_t		 nids;
	bool		 filtered;
};

static void
cstate_cleanup(struct cstate *cs)
{
	size_t i;

	for (i = 0; i < cs->nids; i++)
		free(cs->ids[i]);
	cs->nids = 0;
}

static char *
cursor_encode(const struct sandbox *sb, const struct cstate *cs)
{
	unsigned char mac[EVP_MAX_MD_SIZE], *blob;
	unsigned int maclen = 0;
	cJSON *o = cJSON_CreateObject(), *a;
	char *payload, *out;
	size_t n, i;

	cJSON_AddNumberToObject(o, "g", (double)cs->gen);
	cJSON_AddNumberToObject(o, "i", cs->inst);
	cJSON_AddNumberToObject(o, "d", cs->desc ? 1 : 0);
	cJSON_AddNumberToObject(o, "p", (double)cs->pos);
	cJSON_AddNumberToObject(o, "l", cs->limit);
	cJSON_AddNumberToObject(o, "t", (double)cs->issued_ms);
	if (cs->filtered) {
		a = cJSON_AddArrayToObject(o, "f");
		for (i = 0; i < cs->nids; i++)
			cJSON_AddItemToArray(a, cJSON_CreateString(cs->ids[i]));
	}
	payload = json_take_print(o);
	n = strlen(payload);
	if (HMAC(EVP_sha256(), sb->cursor_key, sizeof(sb->cursor_key),
	    (const unsigned char *)payload, n, mac, &maclen) == NULL ||
	    maclen < SB_MAC_LEN)
		fatalx("HMAC failed");
	blob = xmalloc(SB_MAC_LEN + n);
	memcpy(blob, mac, SB_MAC_LEN);
	memcpy(blob + SB_MAC_LEN, payload, n);
	out = b64url_encode(blob, SB_MAC_LEN + n);
	free(blob);
	free(payload);
	return out;
}

enum cursor_result {
	CURSOR_OK,
	CURSOR_INVALID,
	CURSOR_EXPIRED
};

static enum cursor_result
cursor_decode(const struct sandbox *sb, const char *cursor, int inst,
    struct cstate *cs)
{
	unsigned char mac[EVP_MAX_MD_SIZE], *blob = NULL;
	unsigned int maclen = 0;
	enum cursor_result res = CURSOR_INVALID;
	const cJSON *f, *e;
	const char *why;
	cJSON *o = NULL;
	size_t n, len = strlen(cursor);
	int64_t g, i, d, p, l, t;

	memset(cs, 0, sizeof(*cs));
	if (len == 0 || len > SB_CURSOR_MAX ||
	    (blob = b64url_decode(cursor, len, &n)) == NULL ||
	    n <= SB_MAC_LEN)
		goto out;
	if (HMAC(EVP_sha256(), sb->cursor_key, sizeof(sb->cursor_key),
	    blob + SB_MAC_LEN, n - SB_MAC_LEN, mac, &maclen) == NULL ||
	    maclen < SB_MAC_LEN || CRYPTO_memcmp(mac, blob, SB_MAC_LEN) != 0)
		goto out;
	if (json_parse_strict((const char *)blob + SB_MAC_LEN, n - SB_MAC_LEN,
	    4, &o, &why) != RS_OK || !cJSON_IsObject(o))
		goto out;
	if (json_get_int64(o, "g", &g) != RS_OK ||
	    json_get_int64(o, "i", &i) != RS_OK ||
	    json_get_int64(o, "d", &d) != RS_OK ||
	    json_get_int64(o, "p", &p) != RS_OK ||
	    json_get_int64(o, "l", &l) != RS_OK ||
	    json_get_int64(o, "t", &t) != RS_OK)
		goto out;
	if (i != inst || p < 0 || l < 1 || l > SB_PAGE_MAX)
		goto out;
	cs->gen = (uint64_t)g;
	cs->inst = (int)i;
	cs->desc = d != 0;
	cs->pos = (size_t)p;
	cs->limit = (int)l;
	cs->issued_ms = t;
	if ((f = json_get_array(o, "f")) != NULL) {
		cs->filtered = true;
		cJSON_ArrayForEach(e, f) {
			if (!cJSON_IsString(e) || cs->nids >= SB_IN_MAX) {
				cstate_cleanup(cs);
				goto out;
			}
			cs->ids[cs->nids++] = xstrdup(e->valuestring);
		}
	}
	if (cs->gen != sb->generation || (sb->cursor_ttl_s > 0 &&
	    clock_mono_ms() - cs->issued_ms > sb->cursor_ttl_s * 1000)) {
		cstate_cleanup(cs);
		res = CURSOR_EXPIRED;
		goto out;
	}
	res = CURSOR_OK;
out:
	cJSON_Delete(o);
	free(blob);
	return res;
}

/* ---- webhooks: signing and delivery -------------------------------- */

static void
hookjob_free(struct hookjob *j)
{
	if (j == NULL)
		return;
	free(j->instance);
	free(j->entity);
	free(j->refund_id);
	free(j);
}

static bool
sb_stopping(struct sandbox *sb)
{
	bool stop;

	pthread_mutex_lock(&sb->stop_mtx);
	stop = sb->stopping;
	pthread_mutex_unlock(&sb->stop_mtx);
	return stop;
}

static size_t
curl_sink(char *p, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb;

	if (buf_append(b, p, n) != RS_OK)
		return 0;	/* CURLE_WRITE_ERROR */
	return n;
}

/* Abort a transfer when the sandbox stops. */
static int
curl_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct sandbox *sb = arg;

	return sb != NULL && sb_stopping(sb) ? 1 : 0;
}

/*
 * POST tok to url as Wix does (the raw JWT, text/plain).  Returns the
 * HTTP status, or -1 with a reason in err[CURL_ERROR_SIZE].  *answer
 * gets the body (at most 64 KiB; caller frees).  sb, if not NULL,
 * aborts the transfer when it stops.
 */
static long
webhook_post(struct sandbox *sb, const char *url, const char *tok,
    long timeout_ms, char **answer, char *err)
{
	struct curl_slist *hdrs = NULL;
	struct buf b;
	CURL *c;
	CURLcode rc;
	long status = -1;

	buf_init(&b, 64 * 1024);
	err[0] = '\0';
	*answer = NULL;
	if ((c = curl_easy_init()) == NULL) {
		snprintf(err, CURL_ERROR_SIZE, "curl_easy_init failed");
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: text/plain");
	hdrs = curl_slist_append(hdrs, "User-Agent: wix-sandbox");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, tok);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(tok));
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, curl_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, sb);
	if ((rc = curl_easy_perform(c)) != CURLE_OK) {
		if (err[0] == '\0')
			snprintf(err, CURL_ERROR_SIZE, "%s",
			    curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	*answer = buf_detach(&b, NULL);
	if (*answer == NULL)
		*answer = xstrdup("");
out:
	curl_slist_free_all(hdrs);
	if (c != NULL)
		curl_easy_cleanup(c);
	buf_cleanup(&b);
	return status;
}

/* The signed webhook of job j; its event id goes to event_id[40].
 * Caller frees. */
static char *
hook_token(const char *key, const char *app_id, const struct hookjob *j,
    char *event_id)
{
	struct tu_event ev;
	char *eid, *c, *tok;

	if (j->installed) {
		snprintf(event_id, 40, "-");
		return tu_installed_webhook(key, j->instance, app_id);
	}
	eid = tu_random_id("evt-");
	snprintf(event_id, 40, "%s", eid);
	memset(&ev, 0, sizeof(ev));
	ev.id = eid;
	ev.slug = j->created ? TU_CREATED : TU_UPDATED;
	ev.form = TU_FORM_OBJECT;
	ev.entity_json = j->entity;
	ev.seq = j->seq;
	ev.event_time = j->event_time;
	tok = NULL;
	if ((c = tu_layer_c(&ev)) != NULL)
		tok = tu_webhook(key, c, j->instance, j->created ?
		    TU_EVT_CREATED : TU_EVT_UPDATED);
	free(c);
	free(eid);
	return tok;
}

static void
hook_record(struct sandbox *sb, const struct hookjob *j,
    const char *event_id, long status, int attempts)
{
	struct hookrec *h;

	pthread_mutex_lock(&sb->hook_mtx);
	if (sb->hlog == NULL)
		sb->hlog = xcalloc(SB_HOOKLOG_MAX, sizeof(*sb->hlog));
	if (sb->hlog_n < SB_HOOKLOG_MAX)
		h = &sb->hlog[sb->hlog_n++];
	else {
		h = &sb->hlog[sb->hlog_head];
		sb->hlog_head = (sb->hlog_head + 1) % SB_HOOKLOG_MAX;
	}
	memset(h, 0, sizeof(*h));
	h->seq = ++sb->hlog_seq;
	h->t_ms = clock_mono_ms();
	snprintf(h->event, sizeof(h->event), "%s", j->installed ?
	    TU_EVT_INSTALLED : j->created ? TU_EVT_CREATED : TU_EVT_UPDATED);
	snprintf(h->instance, sizeof(h->instance), "%s", j->instance);
	snprintf(h->refund_id, sizeof(h->refund_id), "%s",
	    j->refund_id != NULL ? j->refund_id : "");
	snprintf(h->event_id, sizeof(h->event_id), "%s", event_id);
	h->status = status;
	h->attempts = attempts;
	pthread_mutex_unlock(&sb->hook_mtx);
}

/* Sign j and POST it, retrying a few times a short while apart. */
static void
hook_deliver(struct sandbox *sb, const struct hookjob *j)
{
	char err[CURL_ERROR_SIZE], event_id[40], *tok, *answer = NULL;
	long status = -1;
	int attempt;

	if ((tok = hook_token(sb->hook_key, sb->app_id, j, event_id)) ==
	    NULL) {
		log_warnx("webhook: refund %s: cannot sign", j->refund_id);
		hook_record(sb, j, "-", -1, 0);
		return;
	}
	for (attempt = 1; attempt <= SB_HOOK_ATTEMPTS; attempt++) {
		free(answer);
		status = webhook_post(sb, sb->hook_url, tok, 5000, &answer,
		    err);
		if (status == 200)
			break;
		if (status < 0)
			log_warnx("webhook %s: refund %s: attempt %d: %s",
			    event_id, j->refund_id, attempt, err);
		else
			log_warnx("webhook %s: refund %s: attempt %d: HTTP "
			    "%ld: %.200s", event_id, j->refund_id, attempt,
			    status, answer);
		if (attempt < SB_HOOK_ATTEMPTS &&
		    !sb_sleep(sb, 500 * (int64_t)attempt))
			break;
	}
	if (status == 200)
		log_debug("webhook %s: refund %s: delivered", event_id,
		    j->refund_id != NULL ? j->refund_id : "-");
	free(answer);
	free(tok);
	hook_record(sb, j, event_id, status, attempt > SB_HOOK_ATTEMPTS ?
	    SB_HOOK_ATTEMPTS : attempt);
}

static void *
hook_main(void *arg)
{
	struct sandbox *sb = arg;
	struct hookjob *j;

	pthread_mutex_lock(&sb->hook_mtx);
	for (;;) {
		while (!sb->hook_stop && sb->hq_head == NULL)
			pthread_cond_wait(&sb->hook_cond, &sb->hook_mtx);
		if (sb->hook_stop)
			break;
		j = sb->hq_head;
		if ((sb->hq_head = j->next) == NULL)
			sb->hq_tail = NULL;
		sb->hq_n--;
		pthread_mutex_unlock(&sb->hook_mtx);
		hook_deliver(sb, j);
		hookjob_free(j);
		pthread_mutex_lock(&sb->hook_mtx);
	}
	pthread_mutex_unlock(&sb->hook_mtx);
	return NULL;
}

/*
 * Queue the Refund Created (created) or Updated webhook of r.  false if
 * webhooks are not configured or the queue is full.  Called with
 * sb->mtx held (lock order: mtx, then hook_mtx).
 */
static bool
hook_enqueue(struct sandbox *sb, const struct instance *in,
    const struct rec *r, bool created)
{
	struct hookjob *j;

	if (sb->hook_url == NULL || sb->hook_key == NULL)
		return false;
	j = xcalloc(1, sizeof(*j));
	j->created = created;
	j->instance = xstrdup(in->name);
	j->entity = rec_text(r);
	j->refund_id = xstrdup(r->id);
	j->seq = r->revision;
	iso_ms(r->updated_ms, j->event_time);
	pthread_mutex_lock(&sb->hook_mtx);
	if (sb->hq_n >= SB_HOOKQ_MAX) {
		sb->hooks_dropped++;
		pthread_mutex_unlock(&sb->hook_mtx);
		log_warnx("webhook queue full (%d): refund %s: dropped",
		    SB_HOOKQ_MAX, r->id);
		hookjob_free(j);
		return false;
	}
	if (sb->hq_tail != NULL)
		sb->hq_tail->next = j;
	else
		sb->hq_head = j;
	sb->hq_tail = j;
	sb->hq_n++;
	pthread_cond_signal(&sb->hook_cond);
	pthread_mutex_unlock(&sb->hook_mtx);
	return true;
}

/* ---- replies ------------------------------------------------------- */

enum shape {
	SHAPE_PLAIN,
	SHAPE_STALL_BODY,	/* half, stall, rest */
	SHAPE_TRUNCATE,		/* half, then close */
	SHAPE_RESET,		/* half, then a TCP reset */
	SHAPE_OVERSIZE		/* a generated body of bytes */
};

/* An answer, decided under the lock and sent after it. */
struct reply {
	unsigned	 status;
	char		*body;		/* owned */
	size_t		 len;
	const char	*ctype;
	char		 retry_after[64];	/* "" none */
	char		*location;	/* owned; NULL none */
	char		 fault[24];	/* for the log */
	enum shape	 shape;
	int64_t		 stall_ms;	/* before the answer */
	int64_t		 body_stall_ms;	/* SHAPE_STALL_BODY */
	bool		 chunked;	/* no Content-Length */
	uint64_t	 bytes;		/* SHAPE_OVERSIZE */
};

static void
reply_set(struct reply *rp, unsigned status, const char *ctype, char *body,
    size_t len)
{
	free(rp->body);
	rp->status = status;
	rp->ctype = ctype;
	rp->body = body;
	rp->len = len;
}

static void
reply_text(struct reply *rp, unsigned status, const char *ctype,
    const char *text)
{
	reply_set(rp, status, ctype, xstrdup(text), strlen(text));
}

/* Takes o. */
static void
reply_json(struct reply *rp, unsigned status, cJSON *o)
{
	char *s = json_take_print(o);

	reply_set(rp, status, "application/json", s, strlen(s));
}

static cJSON *
err_obj(const char *message, cJSON **details)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "message", message);
	*details = cJSON_AddObjectToObject(o, "details");
	return o;
}

/* {"message":message,"details":{}} */
static void
reply_message(struct reply *rp, unsigned status, const char *message)
{
	cJSON *d;

	reply_json(rp, status, err_obj(message, &d));
}

static void
reply_app_error(struct reply *rp, unsigned status, const char *message,
    const char *code, const char *description)
{
	cJSON *d, *o = err_obj(message, &d), *ae;

	ae = cJSON_AddObjectToObject(d, "applicationError");
	cJSON_AddStringToObject(ae, "code", code);
	cJSON_AddStringToObject(ae, "description", description);
	cJSON_AddObjectToObject(ae, "data");
	reply_json(rp, status, o);
}

static void
reply_validation(struct reply *rp, const char *message, const char *field,
    const char *description, const char *rule)
{
	cJSON *d, *o = err_obj(message, &d), *ve, *fv, *v;

	ve = cJSON_AddObjectToObject(d, "validationError");
	fv = cJSON_AddArrayToObject(ve, "fieldViolations");
	v = cJSON_CreateObject();
	cJSON_AddStringToObject(v, "field", field);
	cJSON_AddStringToObject(v, "description", description);
	cJSON_AddStringToObject(v, "violatedRule", rule);
	cJSON_AddItemToArray(fv, v);
	reply_json(rp, 400, o);
}

#define EXPIRED_CURSOR_BODY \
	"{\"message\":\"cursor expired\",\"details\":{\"applicationError\":" \
	"{\"code\":\"INVALID_CURSOR\",\"description\":" \
	"\"The cursor has expired\"}}}"

static void
reply_cursor_expired(struct reply *rp)
{
	reply_text(rp, 400, "application/json", EXPIRED_CURSOR_BODY);
}

/* The application error codes of Create Refund (WIX.md §5). */
static const struct {
	const char	*code;
	unsigned	 status;
	const char	*description;
} app_errors[] = {
	{ "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH", 428,
	  "previouslyRefundedAmount does not match the sum of the "
	  "charge's successful refunds" },
	{ "CHARGE_REFUND_IN_PROGRESS", 428,
	  "Another refund of this charge is pending" },
	{ "CHARGE_REFUNDED", 428, "The charge is already fully refunded" },
	{ "CHARGE_DISPUTED", 428, "The charge is disputed" },
	{ "CHARGE_REFUND_PERIOD_ENDED", 428,
	  "The refund period of this charge has ended" },
	{ "CHARGE_UNPAID", 428, "The charge is not paid" },
	{ "PROVIDER_DOWN", 428, "The payment provider is unavailable" },
	{ "MERCHANT_BALANCE_INSUFFICIENT", 428,
	  "The merchant's balance is too low for this refund" },
	{ "REFUND_AMOUNT_OUT_OF_BOUNDS", 400,
	  "The amount is more than what is left to refund" },
	{ "REFUND_CURRENCY_MISSING", 400,
	  "currencyCode is required together with amount" },
	{ "REFUND_CURRENCY_MISMATCH", 400,
	  "currencyCode is not the currency of the charge" },
	{ "PARTIAL_REFUND_NOT_SUPPORTED", 400,
	  "The payment provider does not support partial refunds" },
	{ "PAYMENT_METHOD_NOT_SUPPORTED", 400,
	  "The payment method does not support refunds" },
	{ "ONLINE_REFUND_NOT_SUPPORTED", 400,
	  "The payment provider does not support online refunds" },
	{ "PROVIDER_NOT_SUPPORTED", 400,
	  "The payment provider does not support refunds" },
	{ "CHARGE_NOT_FOUND", 404, "There is no charge with this id" },
};

/* The table row of code, or -1. */
static int
app_error_find(const char *code)
{
	size_t i;

	for (i = 0; i < sizeof(app_errors) / sizeof(app_errors[0]); i++)
		if (strcmp(app_errors[i].code, code) == 0)
			return (int)i;
	return -1;
}

/* Answer application error code (any code; status 0: its default). */
static void
reply_code(struct reply *rp, const char *code, unsigned status)
{
	int i = app_error_find(code);
	const char *desc = i >= 0 ? app_errors[i].description :
	    "Refund rejected";

	if (status == 0)
		status = i >= 0 ? app_errors[i].status : 428;
	reply_app_error(rp, status, desc, code, desc);
}

/* ---- the Wix API --------------------------------------------------- */

/* Parse a request body as one strict JSON object, or answer 400. */
static cJSON *
body_object(const char *body, size_t len, struct reply *rp)
{
	cJSON *root = NULL;
	const char *why = "empty";
	char msg[160];

	if (len == 0 || json_parse_strict(body, len, JSON_MAX_DEPTH, &root,
	    &why) != RS_OK || !cJSON_IsObject(root)) {
		if (root != NULL)
			why = "not an object";
		cJSON_Delete(root);
		snprintf(msg, sizeof(msg), "invalid request body: %s", why);
		reply_message(rp, 400, msg);
		return NULL;
	}
	return root;
}

/* POST /oauth2/token */
static void
h_token(struct sandbox *sb, const char *body, size_t len, struct reply *rp)
{
	cJSON *root, *o;
	const char *gt, *cid, *cs;
	char *tok;
	int inst;

	if ((root = body_object(body, len, rp)) == NULL)
		return;
	gt = json_get_string(root, "grant_type");
	cid = json_get_string(root, "client_id");
	cs = json_get_string(root, "client_secret");
	if (gt == NULL || strcmp(gt, "client_credentials") != 0)
		reply_validation(rp, "unsupported grant_type", "grant_type",
		    "must be client_credentials", "FORMAT");
	else if (cid == NULL || cs == NULL || !secret_equal(cid, sb->app_id) ||
	    !secret_equal(cs, sb->app_secret))
		reply_app_error(rp, 401, "invalid client credentials",
		    "INVALID_CLIENT", "client_id or client_secret is wrong");
	else if ((inst = inst_find(sb, json_get_string(root, "instance_id"))) <
	    0)
		reply_app_error(rp, 400, "unknown instance",
		    "INVALID_INSTANCE",
		    "instance_id is not an installation of this app");
	else {
		tok = token_issue(sb, inst);
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "access_token", tok);
		cJSON_AddStringToObject(o, "token_type", "Bearer");
		cJSON_AddNumberToObject(o, "expires_in",
		    (double)sb->token_ttl_s);
		reply_json(rp, 200, o);
		free(tok);
	}
	cJSON_Delete(root);
}

/* GET /payments/refunds/v1/refunds/{id} */
static void
h_get(struct sandbox *sb, int inst, const char *id, struct reply *rp)
{
	const struct instance *in = &sb->inst[inst];
	struct rec tmp;
	size_t idx;
	cJSON *o;

	if (!refund_index(sb->data_seed, in, id, &idx)) {
		reply_app_error(rp, 404, "refund not found", "REFUND_NOT_FOUND",
		    "There is no refund with this id");
		return;
	}
	o = cJSON_CreateObject();
	cJSON_AddItemToObject(o, "refund",
	    rec_json(rec_at(sb->data_seed, in, idx, &tmp)));
	reply_json(rp, 200, o);
}

static int
cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* The sorted, distinct indices of the refunds of the charges ids.
 * Caller frees. */
static size_t *
filter_candidates(struct sandbox *sb, struct instance *in,
    char *const *ids, size_t nids, size_t *m)
{
	struct charge *ch;
	size_t *c = NULL, n = 0, cap = 0, i, k, out;

	for (i = 0; i < nids; i++) {
		if ((ch = charge_find(sb->data_seed, in, ids[i])) == NULL)
			continue;
		for (k = 0; k < ch->seed_n + ch->n; k++) {
			if (n == cap) {
				cap = cap == 0 ? 16 : cap * 2;
				c = xreallocarray(c, cap, sizeof(*c));
			}
			c[n++] = charge_refund(ch, k);
		}
	}
	if (n > 1)
		qsort(c, n, sizeof(*c), cmp_size);
	for (i = 0, out = 0; i < n; i++)
		if (out == 0 || c[out - 1] != c[i])
			c[out++] = c[i];
	*m = out;
	return c;
}

/* One page of a query over a view: cand[0..m) or, if cand is NULL,
 * every index 0..m-1. */
struct page {
	size_t	 idx[SB_PAGE_MAX];
	size_t	 n;
	bool	 has_next;
	size_t	 next_pos;
	bool	 has_prev;
	size_t	 prev_pos;
};

static size_t
view_at(const size_t *cand, size_t j)
{
	return cand != NULL ? cand[j] : j;
}

/* The first j with view_at(j) >= pos. */
static size_t
view_lower(const size_t *cand, size_t m, size_t pos)
{
	size_t lo = 0, hi = m, mid;

	if (cand == NULL)
		return pos < m ? pos : m;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (cand[mid] < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void
page_compute(const size_t *cand, size_t m, const struct cstate *cs,
    struct page *pg)
{
	size_t k = view_lower(cand, m, cs->pos), j;
	size_t lim = (size_t)cs->limit;

	memset(pg, 0, sizeof(*pg));
	if (!cs->desc) {
		for (j = k; j < m && pg->n < lim; j++)
			pg->idx[pg->n++] = view_at(cand, j);
		pg->has_next = j < m;
		pg->next_pos = pg->n > 0 ? pg->idx[pg->n - 1] + 1 : cs->pos;
		pg->has_prev = k > 0;
		if (pg->has_prev)
			pg->prev_pos = view_at(cand, k > lim ? k - lim : 0);
	} else {
		for (j = k; j > 0 && pg->n < lim; j--)
			pg->idx[pg->n++] = view_at(cand, j - 1);
		pg->has_next = j > 0;
		pg->next_pos = pg->n > 0 ? pg->idx[pg->n - 1] : cs->pos;
		pg->has_prev = k < m;
		if (pg->has_prev)
			pg->prev_pos = view_at(cand,
			    (m - k > lim ? k + lim : m) - 1) + 1;
	}
}

/* Read the first page's sort into cs->desc; false after answering 400. */
static bool
query_sort(const cJSON *sort, struct cstate *cs, struct reply *rp)
{
	const cJSON *e;
	const char *fn, *ord;

	if (sort == NULL || cJSON_IsNull(sort))
		return true;
	if (!cJSON_IsArray(sort)) {
		reply_validation(rp, "invalid sort", "query.sort",
		    "must be an array", "FORMAT");
		return false;
	}
	cJSON_ArrayForEach(e, sort) {
		fn = json_get_string(e, "fieldName");
		ord = json_get_string(e, "order");
		if (fn == NULL || strcmp(fn, "createdDate") != 0) {
			reply_validation(rp, "invalid sort", "query.sort",
			    "only createdDate can be sorted", "NOT_SUPPORTED");
			return false;
		}
		if (json_get(e, "order") != NULL && (ord == NULL ||
		    (strcmp(ord, "ASC") != 0 && strcmp(ord, "DESC") != 0))) {
			reply_validation(rp, "invalid sort", "query.sort",
			    "order is ASC or DESC", "FORMAT");
			return false;
		}
		cs->desc = ord != NULL && strcmp(ord, "DESC") == 0;
	}
	return true;
}

static bool
filter_id_add(struct cstate *cs, const cJSON *v, struct reply *rp)
{
	if (!cJSON_IsString(v) || v->valuestring[0] == '\0' ||
	    strlen(v->valuestring) >= SB_ID_MAX) {
		reply_validation(rp, "invalid filter", "query.filter.chargeId",
		    "a charge id is a non-empty string", "FORMAT");
		return false;
	}
	if (cs->nids >= SB_IN_MAX) {
		reply_validation(rp, "invalid filter", "query.filter.chargeId",
		    "at most 100 values", "MAX_SIZE");
		return false;
	}
	cs->ids[cs->nids++] = xstrdup(v->valuestring);
	return true;
}

/* Read the first page's filter into cs; false after answering 400. */
static bool
query_filter(const cJSON *filter, struct cstate *cs, struct reply *rp)
{
	const cJSON *m, *c, *e;

	if (filter == NULL || cJSON_IsNull(filter))
		return true;
	if (!cJSON_IsObject(filter)) {
		reply_validation(rp, "invalid filter", "query.filter",
		    "must be an object", "FORMAT");
		return false;
	}
	cJSON_ArrayForEach(m, filter) {
		if (strcmp(m->string, "chargeId") != 0) {
			reply_validation(rp, "invalid filter", "query.filter",
			    "only chargeId can be filtered", "NOT_SUPPORTED");
			return false;
		}
	}
	if ((c = json_get(filter, "chargeId")) == NULL)
		return true;
	cs->filtered = true;
	if (cJSON_IsString(c))
		return filter_id_add(cs, c, rp);
	if (!cJSON_IsObject(c) || cJSON_GetArraySize(c) != 1) {
		reply_validation(rp, "invalid filter", "query.filter.chargeId",
		    "a string, {\"$eq\": id} or {\"$in\": [ids]}", "FORMAT");
		return false;
	}
	if ((e = json_get(c, "$eq")) != NULL)
		return filter_id_add(cs, e, rp);
	if ((e = json_get_array(c, "$in")) == NULL) {
		reply_validation(rp, "invalid filter", "query.filter.chargeId",
		    "only $eq and $in are supported", "NOT_SUPPORTED");
		return false;
	}
	cJSON_ArrayForEach(m, e)
		if (!filter_id_add(cs, m, rp))
			return false;
	return true;
}

/* Members allowed in obj; false after answering 400 about field. */
static bool
members_known(const cJSON *obj, const char *const *known,
    const char *field, struct reply *rp)
{
	const cJSON *m;
	char msg[128];
	size_t i;
	bool found;

	cJSON_ArrayForEach(m, obj) {
		found = false;
		for (i = 0; known[i] != NULL; i++)
			if (strcmp(m->string, known[i]) == 0)
				found = true;
		if (!found) {
			snprintf(msg, sizeof(msg), "%s.%.60s", field,
			    m->string);
			reply_validation(rp, "unsupported query member", msg,
			    "not supported by Query Refunds", "NOT_SUPPORTED");
			return false;
		}
	}
	return true;
}

static void
page_reply(struct sandbox *sb, const struct instance *in,
    const struct page *pg, const char *next, const char *prev,
    bool has_next, struct reply *rp)
{
	cJSON *o = cJSON_CreateObject(), *a, *pm, *cu;
	struct rec tmp;
	size_t i;

	a = cJSON_AddArrayToObject(o, "refunds");
	for (i = 0; i < pg->n; i++)
		cJSON_AddItemToArray(a, rec_json(rec_at(sb->data_seed, in,
		    pg->idx[i], &tmp)));
	pm = cJSON_AddObjectToObject(o, "pagingMetadata");
	cJSON_AddNumberToObject(pm, "count", (double)pg->n);
	cu = cJSON_AddObjectToObject(pm, "cursors");
	if (next != NULL)
		cJSON_AddStringToObject(cu, "next", next);
	if (prev != NULL)
		cJSON_AddStringToObject(cu, "prev", prev);
	cJSON_AddBoolToObject(pm, "hasNext", has_next);
	reply_json(rp, 200, o);
}

/* POST /payments/refunds/v1/refunds/query */
static void
h_query(struct sandbox *sb, int inst, const char *body, size_t len,
    struct reply *rp)
{
	static const char *const qknown[] = { "sort", "filter",
	    "cursorPaging", NULL };
	static const char *const cpknown[] = { "limit", "cursor", NULL };
	struct instance *in = &sb->inst[inst];
	const cJSON *q, *cp = NULL, *cur;
	const char *cursor = NULL;
	struct cstate cs, ns;
	struct page pg;
	struct fault f;
	cJSON *root;
	size_t *cand = NULL, m;
	int64_t limit = 0;
	bool has_limit = false, has_next;
	char *next = NULL, *prev = NULL;

	memset(&cs, 0, sizeof(cs));
	if ((root = body_object(body, len, rp)) == NULL)
		return;
	q = json_get(root, "query");
	if (q != NULL && !cJSON_IsObject(q)) {
		reply_validation(rp, "invalid query", "query",
		    "must be an object", "FORMAT");
		goto out;
	}
	if (q != NULL && !members_known(q, qknown, "query", rp))
		goto out;
	if (q != NULL && (cp = json_get(q, "cursorPaging")) != NULL) {
		if (!cJSON_IsObject(cp)) {
			reply_validation(rp, "invalid paging",
			    "query.cursorPaging", "must be an object",
			    "FORMAT");
			goto out;
		}
		if (!members_known(cp, cpknown, "query.cursorPaging", rp))
			goto out;
		switch (json_get_int64(cp, "limit", &limit)) {
		case RS_OK:
			has_limit = true;
			if (limit < 1 || limit > SB_PAGE_MAX) {
				reply_validation(rp, "invalid paging",
				    "query.cursorPaging.limit",
				    "must be between 1 and 100",
				    limit < 1 ? "MIN" : "MAX");
				goto out;
			}
			break;
		case RS_ERR_NOTFOUND:
			break;
		default:
			reply_validation(rp, "invalid paging",
			    "query.cursorPaging.limit", "must be an integer",
			    "FORMAT");
			goto out;
		}
		if ((cur = json_get(cp, "cursor")) != NULL &&
		    !cJSON_IsNull(cur)) {
			if (!cJSON_IsString(cur)) {
				reply_validation(rp, "invalid paging",
				    "query.cursorPaging.cursor",
				    "must be a string", "FORMAT");
				goto out;
			}
			if (cur->valuestring[0] != '\0')
				cursor = cur->valuestring;
		}
	}
	if (cursor != NULL) {
		if (json_get(q, "filter") != NULL ||
		    json_get(q, "sort") != NULL) {
			reply_validation(rp, "filter and sort cannot be used "
			    "with a cursor", json_get(q, "filter") != NULL ?
			    "query.filter" : "query.sort",
			    "a request with a cursor carries only "
			    "cursorPaging", "NOT_ALLOWED");
			goto out;
		}
		if (fault_take(sb, FMASK(F_EXPIRE_CURSOR), EP_QUERY,
		    PATH_QUERY, inst, &f)) {
			snprintf(rp->fault, sizeof(rp->fault), "%s", f.name);
			reply_cursor_expired(rp);
			goto out;
		}
		switch (cursor_decode(sb, cursor, inst, &cs)) {
		case CURSOR_OK:
			break;
		case CURSOR_EXPIRED:
			reply_cursor_expired(rp);
			goto out;
		default:
			reply_app_error(rp, 400, "invalid cursor",
			    "INVALID_CURSOR", "The cursor is not valid");
			goto out;
		}
		if (has_limit)
			cs.limit = (int)limit;
	} else {
		if (q != NULL && (!query_sort(json_get(q, "sort"), &cs, rp) ||
		    !query_filter(json_get(q, "filter"), &cs, rp)))
			goto out;
		cs.gen = sb->generation;
		cs.inst = inst;
		cs.limit = has_limit ? (int)limit : SB_PAGE_DEFAULT;
		cs.pos = cs.desc ? inst_total(in) : 0;
	}
	if (cs.filtered)
		cand = filter_candidates(sb, in, cs.ids, cs.nids, &m);
	else
		m = inst_total(in);
	page_compute(cand, m, &cs, &pg);
	has_next = pg.has_next;
	if (fault_take(sb, FMASK(F_EMPTY_PAGE_HAS_NEXT), EP_QUERY, PATH_QUERY,
	    inst, &f)) {
		snprintf(rp->fault, sizeof(rp->fault), "%s", f.name);
		pg.n = 0;
		pg.next_pos = cs.pos;
		has_next = true;
	}
	ns = cs;
	ns.issued_ms = clock_mono_ms();
	if (has_next) {
		ns.pos = pg.next_pos;
		next = cursor_encode(sb, &ns);
	}
	if (pg.has_prev) {
		ns.pos = pg.prev_pos;
		prev = cursor_encode(sb, &ns);
	}
	if (cursor != NULL && fault_take(sb, FMASK(F_REPEAT_CURSOR), EP_QUERY,
	    PATH_QUERY, inst, &f)) {
		snprintf(rp->fault, sizeof(rp->fault), "%s", f.name);
		free(next);
		next = xstrdup(cursor);
		has_next = true;
	}
	if (fault_take(sb, FMASK(F_HAS_NEXT_NO_CURSOR), EP_QUERY, PATH_QUERY,
	    inst, &f)) {
		snprintf(rp->fault, sizeof(rp->fault), "%s", f.name);
		free(next);
		next = NULL;
		has_next = true;
	}
	page_reply(sb, in, &pg, next, prev, has_next, rp);
out:
	free(next);
	free(prev);
	free(cand);
	cstate_cleanup(&cs);
	cJSON_Delete(root);
}

/* An optional string member of at most SB_TEXT_MAX bytes; false after
 * answering 400. */
static bool
text_member(const cJSON *obj, const char *key, const char *field,
    const char **out, struct reply *rp)
{
	const cJSON *m = json_get(obj, key);

	*out = NULL;
	if (m == NULL || cJSON_IsNull(m))
		return true;
	if (!cJSON_IsString(m) || strlen(m->valuestring) > SB_TEXT_MAX) {
		reply_validation(rp, "invalid request", field,
		    "a string of at most 1000 bytes", "MAX_LENGTH");
		return false;
	}
	*out = m->valuestring;
	return true;
}

/*
 * Check an amount member: a decimal string > 0 with at most 8 decimals
 * that fits currency exactly.  RS_OK and *minor, or false after
 * answering 400 about field.
 */
static bool
amount_member(const cJSON *m, const char *field, const char *currency,
    bool allow_zero, int64_t *minor, struct reply *rp)
{
	char msg[128];

	if (!cJSON_IsString(m) || !money_decimal_wellformed(m->valuestring)) {
		reply_validation(rp, "invalid amount", field,
		    "must be a decimal string such as \"12.95\"", "FORMAT");
		return false;
	}
	if (decimals_of(m->valuestring) > SB_WIX_DECIMALS) {
		reply_validation(rp, "invalid amount", field,
		    "at most 8 decimal places", "FORMAT");
		return false;
	}
	if (money_to_minor(m->valuestring, currency, minor) != RS_OK ||
	    *minor > SB_AMOUNT_MAX) {
		snprintf(msg, sizeof(msg), "more decimal places than %s has, "
		    "or too large", currency);
		reply_validation(rp, "invalid amount", field, msg, "FORMAT");
		return false;
	}
	if (*minor == 0 && !allow_zero) {
		reply_validation(rp, "invalid amount", field,
		    "must be greater than 0", "MIN");
		return false;
	}
	return true;
}

/* POST /payments/refunds/v1/refunds */
static void
h_create(struct sandbox *sb, int inst, const char *body, size_t len,
    struct reply *rp)
{
	struct instance *in = &sb->inst[inst];
	const cJSON *ref, *am, *cu, *pr;
	const char *cid, *reason, *note, *code;
	struct charge *ch;
	struct rec *r;
	cJSON *root, *o;
	int64_t amount = 0, prev = -1, succ, left;
	size_t npending;
	bool full = false;

	if ((root = body_object(body, len, rp)) == NULL)
		return;
	if ((ref = json_get_object(root, "refund")) == NULL) {
		reply_validation(rp, "refund is required", "refund",
		    "must be an object", "REQUIRED");
		goto out;
	}
	if ((cid = json_get_string(ref, "chargeId")) == NULL ||
	    cid[0] == '\0') {
		reply_validation(rp, "chargeId is required", "refund.chargeId",
		    "must be a non-empty string", "REQUIRED");
		goto out;
	}
	if ((ch = charge_find(sb->data_seed, in, cid)) == NULL) {
		reply_code(rp, "CHARGE_NOT_FOUND", 0);
		goto out;
	}
	if (ch->force_code[0] != '\0') {
		reply_code(rp, ch->force_code, ch->force_status);
		if (ch->force_count > 0 && --ch->force_count == 0)
			ch->force_code[0] = '\0';
		goto out;
	}
	if ((am = json_get(ref, "amount")) != NULL && cJSON_IsNull(am))
		am = NULL;
	if ((cu = json_get(ref, "currencyCode")) != NULL && cJSON_IsNull(cu))
		cu = NULL;
	if ((pr = json_get(root, "previouslyRefundedAmount")) != NULL &&
	    cJSON_IsNull(pr))
		pr = NULL;
	if (cu != NULL && (!cJSON_IsString(cu) ||
	    !money_currency_wellformed(cu->valuestring) ||
	    money_exponent(cu->valuestring) < 0)) {
		reply_validation(rp, "invalid currency", "refund.currencyCode",
		    "must be an ISO 4217 currency code", "FORMAT");
		goto out;
	}
	if (!text_member(ref, "reason", "refund.reason", &reason, rp) ||
	    !text_member(ref, "note", "refund.note", &note, rp))
		goto out;
	if (am != NULL && cu == NULL) {
		reply_code(rp, "REFUND_CURRENCY_MISSING", 0);
		goto out;
	}
	if (cu != NULL && strcmp(cu->valuestring, ch->currency) != 0) {
		reply_code(rp, "REFUND_CURRENCY_MISMATCH", 0);
		goto out;
	}
	if (am != NULL && !amount_member(am, "refund.amount", ch->currency,
	    false, &amount, rp))
		goto out;
	if (pr != NULL) {
		if (!cJSON_IsString(pr) ||
		    !money_decimal_wellformed(pr->valuestring)) {
			reply_validation(rp, "invalid amount",
			    "previouslyRefundedAmount",
			    "must be a decimal string such as \"12.95\"",
			    "FORMAT");
			goto out;
		}
		/* One that does not fit the currency matches nothing. */
		if (money_to_minor(pr->valuestring, ch->currency, &prev) !=
		    RS_OK)
			prev = -1;
	}
	charge_state(sb->data_seed, in, ch, &succ, &npending);
	left = ch->total - succ;
	code = NULL;
	if (npending > 0)
		code = "CHARGE_REFUND_IN_PROGRESS";
	else if (left <= 0)
		code = "CHARGE_REFUNDED";
	else if ((am != NULL || pr != NULL) && prev != succ)
		code = "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH";
	else if (am != NULL && amount > left)
		code = "REFUND_AMOUNT_OUT_OF_BOUNDS";
	if (code != NULL) {
		reply_code(rp, code, 0);
		goto out;
	}
	if (am == NULL) {
		amount = left;
		full = true;
	} else
		full = amount == ch->total;
	if (in->nextra >= SB_EXTRA_MAX) {
		reply_message(rp, 503, "the sandbox holds too many refunds");
		goto out;
	}
	r = xcalloc(1, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "rf-%s-%06zu", in->name,
	    inst_total(in) + 1);
	snprintf(r->charge_id, sizeof(r->charge_id), "%s", ch->id);
	memcpy(r->currency, ch->currency, sizeof(r->currency));
	if (money_format(amount, money_exponent(ch->currency), r->amount,
	    sizeof(r->amount)) != RS_OK)
		RS_PANIC("amount does not format");
	snprintf(r->status, sizeof(r->status), "%s", ch->pending ? "PENDING" :
	    "SUCCEEDED");
	r->revision = 1;
	r->created_ms = r->updated_ms = next_created_ms(in);
	r->full = full;
	r->reason = reason != NULL ? xstrdup(reason) : NULL;
	r->note = note != NULL ? xstrdup(note) : NULL;
	inst_append(in, ch, r);
	hook_enqueue(sb, in, r, true);
	o = cJSON_CreateObject();
	cJSON_AddItemToObject(o, "refund", rec_json(r));
	reply_json(rp, 200, o);
out:
	cJSON_Delete(root);
}

/* Which endpoint; *id gets the refund id of EP_GET.  *bad_method if
 * the path exists with another method. */
static enum ep
endpoint_of(const char *method, const char *url, const char **id,
    bool *bad_method)
{
	size_t n = strlen(PATH_REFUNDS);
	bool post = strcmp(method, "POST") == 0;

	*id = NULL;
	*bad_method = false;
	if (strcmp(url, PATH_TOKEN) == 0) {
		*bad_method = !post;
		return post ? EP_TOKEN : EP_NONE;
	}
	if (strcmp(url, PATH_QUERY) == 0) {
		*bad_method = !post;
		return post ? EP_QUERY : EP_NONE;
	}
	if (strcmp(url, PATH_REFUNDS) == 0) {
		*bad_method = !post;
		return post ? EP_CREATE : EP_NONE;
	}
	if (strncmp(url, PATH_REFUNDS "/", n + 1) == 0 && url[n + 1] != '\0' &&
	    strchr(url + n + 1, '/') == NULL) {
		*bad_method = strcmp(method, "GET") != 0;
		*id = url + n + 1;
		return *bad_method ? EP_NONE : EP_GET;
	}
	return EP_NONE;
}

/* The instance named in a token request (for the log and faults). */
static int
token_body_instance(const struct sandbox *sb, const char *body, size_t len)
{
	cJSON *root = NULL;
	const char *why;
	int inst = -1;

	if (len > 0 && json_parse_strict(body, len, JSON_MAX_DEPTH, &root,
	    &why) == RS_OK)
		inst = inst_find(sb, json_get_string(root, "instance_id"));
	cJSON_Delete(root);
	return inst;
}

/* Answer a status fault: 502/504 as a gateway's HTML, others as JSON. */
static void
reply_status_fault(struct reply *rp, const struct fault *f)
{
	char msg[64];

	if (f->status == 502 || f->status == 504) {
		snprintf(msg, sizeof(msg), "<html><body><h1>%u</h1>"
		    "</body></html>\n", f->status);
		reply_text(rp, f->status, "text/html", msg);
	} else if (f->status == 429)
		reply_message(rp, 429, "Too Many Requests");
	else {
		snprintf(msg, sizeof(msg), "sandbox fault %u", f->status);
		reply_message(rp, f->status, msg);
	}
	if (f->has_retry_after)
		snprintf(rp->retry_after, sizeof(rp->retry_after), "%s",
		    f->retry_after);
}

static void
reply_auth(struct reply *rp, enum auth a)
{
	switch (a) {
	case AUTH_EXPIRED:
		reply_app_error(rp, 401, "access token expired",
		    "EXPIRED_TOKEN", "The access token has expired");
		break;
	case AUTH_BEARER:
		reply_app_error(rp, 401, "invalid access token",
		    "INVALID_TOKEN", "Send the access token as Authorization "
		    "without the \"Bearer \" prefix");
		break;
	case AUTH_SITE:
		reply_app_error(rp, 401, "unknown site", "INVALID_SITE",
		    "wix-site-id does not name an instance");
		break;
	case AUTH_MISSING:
		reply_app_error(rp, 401, "missing authorization",
		    "UNAUTHENTICATED", "Authorization header is required");
		break;
	default:
		reply_app_error(rp, 401, "invalid access token",
		    "INVALID_TOKEN", "The access token is not valid");
		break;
	}
}

/* Replace the answer by a body fault, keeping its text for the
 * partial shapes. */
static void
apply_body_fault(struct reply *rp, const struct fault *f)
{
	static const char bad[] = "{\"refunds\":[{\"id\":\"rf-\" <html>oops";

	snprintf(rp->fault, sizeof(rp->fault), "%s", f->name);
	switch (f->kind) {
	case F_STALL:
		rp->stall_ms = f->ms;
		break;
	case F_STALL_BODY:
		rp->shape = SHAPE_STALL_BODY;
		rp->body_stall_ms = f->ms;
		break;
	case F_TRUNCATE:
		rp->shape = SHAPE_TRUNCATE;
		rp->chunked = f->chunked;
		break;
	case F_RESET:
		rp->shape = SHAPE_RESET;
		rp->chunked = f->chunked;
		break;
	case F_OVERSIZE:
		rp->status = 200;
		rp->ctype = "application/json";
		rp->shape = SHAPE_OVERSIZE;
		rp->bytes = f->bytes;
		rp->chunked = f->chunked;
		break;
	case F_INVALID_JSON:
		reply_text(rp, 200, "application/json", bad);
		break;
	default:
		break;
	}
}

/*
 * Everything an API request gets, decided under the lock: faults first,
 * then auth, the rate limit and the handler.  Logs the request.
 */
static void
api_dispatch(struct sandbox *sb, struct MHD_Connection *c,
    const char *method, const char *url, const char *body, size_t len,
    bool too_big, struct reply *rp)
{
	const char *id, *authz, *site;
	enum auth a = AUTH_MISSING;
	struct fault f;
	bool bad_method, faulted = false;
	enum ep ep;
	int inst = -1;
	int64_t now, wait_s;
	unsigned mask = FMASK_GATE;

	ep = endpoint_of(method, url, &id, &bad_method);
	authz = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Authorization");
	site = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "wix-site-id");
	pthread_mutex_lock(&sb->mtx);
	now = clock_mono_ms();
	if (ep == EP_TOKEN) {
		inst = token_body_instance(sb, body, len);
		mask |= FMASK(F_TOKEN_401);
	} else if (ep != EP_NONE)
		a = auth_resolve(sb, authz, site, &inst);
	if (ep != EP_NONE)
		faulted = fault_take(sb, mask, ep, url, inst, &f);
	if (too_big)
		reply_message(rp, 413, "request body too large");
	else if (bad_method)
		reply_message(rp, 405, "Method Not Allowed");
	else if (ep == EP_NONE) {
		reply_message(rp, 404, "Not Found");
		/* A client that followed a redirect fault: with or without
		 * the credentials? */
		if (strncmp(url, "/redirected/", 12) == 0)
			snprintf(rp->fault, sizeof(rp->fault), "%s",
			    authz != NULL ? "redirected_auth" : "redirected");
	} else if (faulted && f.kind == F_STATUS) {
		snprintf(rp->fault, sizeof(rp->fault), "%s", f.name);
		reply_status_fault(rp, &f);
		faulted = false;
	} else if (faulted && f.kind == F_REDIRECT) {
		snprintf(rp->fault, sizeof(rp->fault), "%s", f.name);
		reply_message(rp, f.status, "moved");
		free(rp->location);
		rp->location = xasprintf("/redirected%s", url);
		faulted = false;
	} else if (faulted && f.kind == F_TOKEN_401) {
		snprintf(rp->fault, sizeof(rp->fault), "%s", f.name);
		reply_app_error(rp, 401, "invalid client credentials",
		    "INVALID_CLIENT", "sandbox fault token_401");
		faulted = false;
	} else if (ep == EP_TOKEN)
		h_token(sb, body, len, rp);
	else if (a != AUTH_OK)
		reply_auth(rp, a);
	else if (rate_limited(sb, &sb->inst[inst], now, &wait_s)) {
		snprintf(rp->fault, sizeof(rp->fault), "rate_limit");
		reply_message(rp, 429, "Too Many Requests");
		if (sb->rate_limit_retry_after)
			snprintf(rp->retry_after, sizeof(rp->retry_after),
			    "%" PRId64, wait_s);
	} else if (ep == EP_QUERY)
		h_query(sb, inst, body, len, rp);
	else if (ep == EP_GET)
		h_get(sb, inst, id, rp);
	else
		h_create(sb, inst, body, len, rp);
	if (faulted)
		apply_body_fault(rp, &f);
	log_add(sb, now, method, url, inst, rp->status, rp->fault);
	pthread_mutex_unlock(&sb->mtx);
}

/* ---- the control API (/_sandbox/) ---------------------------------- */

/* The instance named by obj's "instance" (default: the first), or -1
 * after answering 400. */
static int
ctl_instance(const struct sandbox *sb, const cJSON *obj, const char *name,
    struct reply *rp)
{
	const cJSON *m = obj != NULL ? json_get(obj, "instance") : NULL;
	int inst;

	if (m != NULL && !cJSON_IsString(m)) {
		reply_message(rp, 400, "instance: a string");
		return -1;
	}
	if (m != NULL)
		name = m->valuestring;
	if (name == NULL)
		return 0;
	if ((inst = inst_find(sb, name)) < 0)
		reply_message(rp, 400, "instance: not one of --instances");
	return inst;
}

static void
ctl_faults_list(struct sandbox *sb, struct reply *rp)
{
	cJSON *o = cJSON_CreateObject(), *a;
	size_t i;

	a = cJSON_AddArrayToObject(o, "faults");
	for (i = 0; i < sb->nfaults; i++)
		cJSON_AddItemToArray(a, fault_json(sb, &sb->faults[i]));
	reply_json(rp, 200, o);
}

/* Add one fault object (or run an immediate one); false after
 * answering 400. */
static bool
ctl_fault_one(struct sandbox *sb, const cJSON *o, struct reply *rp)
{
	const char *name = json_get_string(o, "fault"), *why;
	char msg[160];
	int64_t never = 0;

	if (name != NULL && strcmp(name, "clear") == 0) {
		sb->nfaults = 0;
		return true;
	}
	if (name != NULL && strcmp(name, "expire_tokens") == 0) {
		map_filter(&sb->tokens, token_expire_one, &never, NULL);
		return true;
	}
	if (sb->nfaults >= SB_FAULTS_MAX) {
		reply_message(rp, 400, "too many faults (64)");
		return false;
	}
	if ((why = fault_parse(sb, o, &sb->faults[sb->nfaults])) != NULL) {
		snprintf(msg, sizeof(msg), "fault: %s", why);
		reply_message(rp, 400, msg);
		return false;
	}
	sb->nfaults++;
	return true;
}

static void
ctl_faults(struct sandbox *sb, const char *method, cJSON *root,
    struct reply *rp)
{
	const cJSON *list, *e;

	if (strcmp(method, "DELETE") == 0) {
		sb->nfaults = 0;
		ctl_faults_list(sb, rp);
		return;
	}
	if (strcmp(method, "GET") == 0) {
		ctl_faults_list(sb, rp);
		return;
	}
	if ((list = json_get_array(root, "faults")) != NULL) {
		cJSON_ArrayForEach(e, list)
			if (!ctl_fault_one(sb, e, rp))
				return;
	} else if (!ctl_fault_one(sb, root, rp))
		return;
	ctl_faults_list(sb, rp);
}

/* Apply the changeable members of item to r; false after a 400. */
static bool
ctl_refund_fields(const cJSON *item, struct rec *r, bool *changed,
    struct reply *rp)
{
	const cJSON *m;
	const char *s;
	int64_t v, minor;
	char amt[MONEY_MAX_TEXT + 1];

	*changed = false;
	if ((m = json_get(item, "status")) != NULL) {
		if (!cJSON_IsString(m) || !name_ok(m->valuestring,
		    SB_STATUS_MAX - 1)) {
			reply_message(rp, 400, "status: 1..23 of "
			    "[A-Za-z0-9._-]");
			return false;
		}
		snprintf(r->status, sizeof(r->status), "%s", m->valuestring);
		*changed = true;
	}
	if ((m = json_get(item, "amount")) != NULL) {
		if (!amount_member(m, "amount", r->currency, false, &minor,
		    rp))
			return false;
		if (money_format(minor, money_exponent(r->currency), amt,
		    sizeof(amt)) != RS_OK)
			RS_PANIC("amount does not format");
		memcpy(r->amount, amt, sizeof(amt));
		*changed = true;
	}
	if (json_get(item, "revision") != NULL) {
		if (json_get_int64(item, "revision", &v) != RS_OK || v < 0) {
			reply_message(rp, 400, "revision: an int64 >= 0, as a "
			    "string or a number");
			return false;
		}
		r->revision = v;
		*changed = true;
	}
	if (!text_member(item, "reason", "reason", &s, rp))
		return false;
	if (s != NULL) {
		free(r->reason);
		r->reason = xstrdup(s);
		*changed = true;
	}
	if (!text_member(item, "note", "note", &s, rp))
		return false;
	if (s != NULL) {
		free(r->note);
		r->note = xstrdup(s);
		*changed = true;
	}
	return true;
}

/* Update refund idx of in from item. */
static bool
ctl_refund_update(struct sandbox *sb, struct instance *in, size_t idx,
    const cJSON *item, cJSON *out, struct reply *rp)
{
	struct rec *r = rec_mut(sb->data_seed, in, idx), saved;
	bool bump = true, webhook = false, changed;
	int64_t now;

	if ((json_get(item, "bump") != NULL &&
	    json_get_bool(item, "bump", &bump) != RS_OK) ||
	    (json_get(item, "webhook") != NULL &&
	    json_get_bool(item, "webhook", &webhook) != RS_OK)) {
		reply_message(rp, 400, "bump, webhook: booleans");
		return false;
	}
	saved = *r;
	if (!ctl_refund_fields(item, r, &changed, rp)) {
		/* Strings were not replaced on failure paths before them;
		 * restore the scalars. */
		saved.reason = r->reason;
		saved.note = r->note;
		*r = saved;
		return false;
	}
	if (bump && json_get(item, "revision") == NULL)
		r->revision++;
	if (bump || changed) {
		now = wall_ms();
		r->updated_ms = now > r->updated_ms ? now : r->updated_ms + 1;
	}
	if (webhook)
		hook_enqueue(sb, in, r, false);
	cJSON_AddItemToArray(out, rec_json(r));
	return true;
}

/* A charge made by the control API for a refund with no known charge. */
static struct charge *
ctl_charge_new(struct instance *in, const char *id, const char *currency,
    int64_t total)
{
	struct charge *ch = xcalloc(1, sizeof(*ch));

	if (id != NULL)
		snprintf(ch->id, sizeof(ch->id), "%s", id);
	else
		snprintf(ch->id, sizeof(ch->id), "ch-%s-ctl-%06zu", in->name,
		    in->nctl_charges + 1);
	memcpy(ch->currency, currency, sizeof(ch->currency));
	ch->total = total;
	map_put(&in->charges, ch->id, ch);
	in->nctl_charges++;
	return ch;
}

/* Add a refund to in from item. */
static bool
ctl_refund_add(struct sandbox *sb, struct instance *in, const cJSON *item,
    cJSON *out, struct reply *rp)
{
	const char *id = json_get_string(item, "id");
	const char *cid = json_get_string(item, "chargeId");
	struct charge *ch = NULL;
	struct rec *r = NULL;
	bool webhook = false, changed;
	size_t num, idx;
	int64_t minor;

	if (json_get(item, "webhook") != NULL &&
	    json_get_bool(item, "webhook", &webhook) != RS_OK) {
		reply_message(rp, 400, "webhook: a boolean");
		return false;
	}
	if (id != NULL && (!printable_ok(id, SB_ID_MAX - 1) ||
	    id_number(id, "rf-", in->name, &num))) {
		reply_message(rp, 400, "id: printable, and not of the form "
		    "rf-<instance>-NNNNNN (those are the sandbox's)");
		return false;
	}
	if (cid != NULL && !printable_ok(cid, SB_ID_MAX - 1)) {
		reply_message(rp, 400, "chargeId: 1..127 printable bytes");
		return false;
	}
	if (in->nextra >= SB_EXTRA_MAX ||
	    in->nctl_charges >= SB_CTL_CHARGES_MAX) {
		reply_message(rp, 503, "the sandbox holds too many refunds");
		return false;
	}
	r = xcalloc(1, sizeof(*r));
	if (id != NULL)
		snprintf(r->id, sizeof(r->id), "%s", id);
	else
		snprintf(r->id, sizeof(r->id), "rf-%s-%06zu", in->name,
		    inst_total(in) + 1);
	memcpy(r->currency, in->currency, sizeof(r->currency));
	if (cid != NULL && (ch = charge_find(sb->data_seed, in, cid)) != NULL)
		memcpy(r->currency, ch->currency, sizeof(r->currency));
	if (money_format(1000, money_exponent(r->currency), r->amount,
	    sizeof(r->amount)) != RS_OK)
		RS_PANIC("amount does not format");
	snprintf(r->status, sizeof(r->status), "SUCCEEDED");
	r->revision = 1;
	if (!ctl_refund_fields(item, r, &changed, rp)) {
		rec_free(r);
		return false;
	}
	if (ch == NULL) {
		if (money_to_minor(r->amount, r->currency, &minor) != RS_OK)
			RS_PANIC("stored amount does not parse");
		ch = ctl_charge_new(in, cid, r->currency, minor);
	}
	snprintf(r->charge_id, sizeof(r->charge_id), "%s", ch->id);
	r->created_ms = r->updated_ms = next_created_ms(in);
	idx = inst_append(in, ch, r);
	if (id != NULL)
		map_put(&in->ids, id, (void *)(uintptr_t)(idx + 1));
	if (webhook)
		hook_enqueue(sb, in, r, true);
	cJSON_AddItemToArray(out, rec_json(r));
	return true;
}

static void
ctl_refunds(struct sandbox *sb, cJSON *root, struct reply *rp)
{
	const cJSON *list, *e;
	const char *id;
	cJSON *o = cJSON_CreateObject(), *out;
	struct instance *in;
	size_t idx;
	int inst;
	bool ok = true;

	out = cJSON_AddArrayToObject(o, "refunds");
	if ((inst = ctl_instance(sb, root, NULL, rp)) < 0)
		goto out;
	in = &sb->inst[inst];
	if ((list = json_get_array(root, "refunds")) != NULL) {
		cJSON_ArrayForEach(e, list) {
			if (!cJSON_IsObject(e)) {
				reply_message(rp, 400, "refunds: objects");
				goto out;
			}
			id = json_get_string(e, "id");
			if (id != NULL && refund_index(sb->data_seed, in, id,
			    &idx))
				ok = ctl_refund_update(sb, in, idx, e, out, rp);
			else
				ok = ctl_refund_add(sb, in, e, out, rp);
			if (!ok)
				goto out;
		}
	} else {
		id = json_get_string(root, "id");
		if (id != NULL && refund_index(sb->data_seed, in, id, &idx))
			ok = ctl_refund_update(sb, in, idx, root, out, rp);
		else
			ok = ctl_refund_add(sb, in, root, out, rp);
		if (!ok)
			goto out;
	}
	reply_json(rp, 200, o);
	o = NULL;
out:
	cJSON_Delete(o);
}

static cJSON *
charge_json(struct sandbox *sb, const struct instance *in,
    const struct charge *ch)
{
	cJSON *o = cJSON_CreateObject(), *a;
	struct rec tmp;
	char amt[MONEY_MAX_TEXT + 1];
	int exp = money_exponent(ch->currency);
	int64_t succ;
	size_t npending, k;

	charge_state(sb->data_seed, in, ch, &succ, &npending);
	cJSON_AddStringToObject(o, "id", ch->id);
	cJSON_AddStringToObject(o, "instance", in->name);
	cJSON_AddStringToObject(o, "currency", ch->currency);
	if (money_format(ch->total, exp, amt, sizeof(amt)) == RS_OK)
		cJSON_AddStringToObject(o, "total", amt);
	if (money_format(succ, exp, amt, sizeof(amt)) == RS_OK)
		cJSON_AddStringToObject(o, "refunded", amt);
	if (money_format(ch->total - succ, exp, amt, sizeof(amt)) == RS_OK)
		cJSON_AddStringToObject(o, "left", amt);
	cJSON_AddNumberToObject(o, "pendingRefunds", (double)npending);
	cJSON_AddBoolToObject(o, "pending", ch->pending);
	if (ch->force_code[0] != '\0') {
		cJSON_AddStringToObject(o, "error", ch->force_code);
		cJSON_AddNumberToObject(o, "count", (double)ch->force_count);
	}
	a = cJSON_AddArrayToObject(o, "refunds");
	for (k = 0; k < ch->seed_n + ch->n; k++)
		cJSON_AddItemToArray(a, cJSON_CreateString(rec_at(
		    sb->data_seed, in, charge_refund(ch, k), &tmp)->id));
	return o;
}

/* Settle every PENDING refund of ch to status (Refund Updated each). */
static void
charge_settle(struct sandbox *sb, struct instance *in, struct charge *ch,
    const char *status)
{
	struct rec tmp, *r;
	size_t k, idx;
	int64_t now;

	for (k = 0; k < ch->seed_n + ch->n; k++) {
		idx = charge_refund(ch, k);
		if (strcmp(rec_at(sb->data_seed, in, idx, &tmp)->status,
		    "PENDING") != 0)
			continue;
		r = rec_mut(sb->data_seed, in, idx);
		snprintf(r->status, sizeof(r->status), "%s", status);
		r->revision++;
		now = wall_ms();
		r->updated_ms = now > r->updated_ms ? now : r->updated_ms + 1;
		hook_enqueue(sb, in, r, false);
	}
}

static void
ctl_charges(struct sandbox *sb, struct MHD_Connection *c,
    const char *method, cJSON *root, struct reply *rp)
{
	static const char *const known[] = { "instance", "id", "charge",
	    "total", "currency", "error", "status", "count", "pending",
	    "settle", NULL };
	const char *id, *cur, *err, *settle;
	const cJSON *m;
	struct instance *in;
	struct charge *ch;
	int64_t total = -1, v, count = -1;
	unsigned status = 0;
	bool pending = false;
	size_t num;
	int inst, e;

	if (strcmp(method, "GET") == 0) {
		inst = ctl_instance(sb, NULL, MHD_lookup_connection_value(c,
		    MHD_GET_ARGUMENT_KIND, "instance"), rp);
		if (inst < 0)
			return;
		in = &sb->inst[inst];
		id = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
		    "id");
		if (id == NULL || (ch = charge_find(sb->data_seed, in, id)) ==
		    NULL) {
			reply_message(rp, 404, "no such charge");
			return;
		}
		reply_json(rp, 200, charge_json(sb, in, ch));
		return;
	}
	cJSON_ArrayForEach(m, root) {
		for (e = 0; known[e] != NULL; e++)
			if (strcmp(m->string, known[e]) == 0)
				break;
		if (known[e] == NULL) {
			reply_message(rp, 400, "unknown member in a charge");
			return;
		}
	}
	if ((inst = ctl_instance(sb, root, NULL, rp)) < 0)
		return;
	in = &sb->inst[inst];
	if ((id = json_get_string(root, "id")) == NULL)
		id = json_get_string(root, "charge");
	if (id != NULL && !printable_ok(id, SB_ID_MAX - 1)) {
		reply_message(rp, 400, "id: 1..127 printable bytes");
		return;
	}
	cur = json_get_string(root, "currency");
	if (json_get(root, "currency") != NULL && (cur == NULL ||
	    !money_currency_wellformed(cur) || money_exponent(cur) < 0)) {
		reply_message(rp, 400, "currency: an ISO 4217 code");
		return;
	}
	if (cur == NULL)
		cur = in->currency;
	ch = id != NULL ? charge_find(sb->data_seed, in, id) : NULL;
	if ((m = json_get(root, "total")) != NULL &&
	    !amount_member(m, "total", ch != NULL ? ch->currency : cur, false,
	    &total, rp))
		return;
	err = json_get_string(root, "error");
	if (json_get(root, "error") != NULL && (err == NULL || (err[0] != '\0'
	    && !name_ok(err, 63)))) {
		reply_message(rp, 400, "error: an error code, or \"\"");
		return;
	}
	if (json_get(root, "status") != NULL) {
		if (json_get_int64(root, "status", &v) != RS_OK || v < 400 ||
		    v > 599) {
			reply_message(rp, 400, "status: 400..599");
			return;
		}
		status = (unsigned)v;
	}
	if (json_get(root, "count") != NULL) {
		if (json_get_int64(root, "count", &count) != RS_OK ||
		    (count != -1 && (count < 1 || count > 1000000))) {
			reply_message(rp, 400, "count: 1..1000000 or -1");
			return;
		}
	}
	settle = json_get_string(root, "settle");
	if (json_get(root, "settle") != NULL && (settle == NULL ||
	    !name_ok(settle, SB_STATUS_MAX - 1))) {
		reply_message(rp, 400, "settle: a refund status");
		return;
	}
	if (json_get(root, "pending") != NULL &&
	    json_get_bool(root, "pending", &pending) != RS_OK) {
		reply_message(rp, 400, "pending: a boolean");
		return;
	}
	if (ch == NULL) {
		if (id != NULL && id_number(id, "ch-", in->name, &num)) {
			reply_message(rp, 400, "id: ch-<instance>-NNNNNN "
			    "names are the sandbox's");
			return;
		}
		if (in->nctl_charges >= SB_CTL_CHARGES_MAX) {
			reply_message(rp, 503, "too many charges");
			return;
		}
		if (total < 0 && money_to_minor("100", cur, &total) != RS_OK)
			RS_PANIC("100 does not parse");
		ch = ctl_charge_new(in, id, cur, total);
	} else if (total >= 0)
		ch->total = total;
	if (err != NULL) {
		snprintf(ch->force_code, sizeof(ch->force_code), "%s", err);
		ch->force_status = status;
		ch->force_count = count;
	} else if (ch->force_code[0] != '\0' && status != 0)
		ch->force_status = status;
	if (json_get(root, "pending") != NULL)
		ch->pending = pending;
	if (settle != NULL)
		charge_settle(sb, in, ch, settle);
	reply_json(rp, 200, charge_json(sb, in, ch));
}

/* The query argument name as an unsigned number, or def. */
static uint64_t
arg_u64(struct MHD_Connection *c, const char *name, uint64_t def)
{
	const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
	    name);
	int64_t v;

	if (s == NULL || strnum_i64(s, 0, INT64_MAX, &v) != NULL)
		return def;
	return (uint64_t)v;
}

static void
ctl_log(struct sandbox *sb, struct MHD_Connection *c, struct reply *rp)
{
	uint64_t since = arg_u64(c, "since", 0), limit = arg_u64(c, "limit",
	    SB_LOG_MAX);
	const struct logent *e;
	struct buf b;
	char *line;
	size_t k, n = 0;

	buf_init(&b, (size_t)1 << 30);
	for (k = 0; k < sb->log_n && n < limit; k++) {
		e = &sb->log[(sb->log_head + k) % sb->log_cap];
		if (e->seq <= since)
			continue;
		line = logent_text(sb, e);
		if (buf_appends(&b, line) != RS_OK ||
		    buf_append(&b, "\n", 1) != RS_OK) {
			free(line);
			break;
		}
		free(line);
		n++;
	}
	line = buf_detach(&b, &k);
	if (line == NULL) {
		line = xstrdup("");
		k = 0;
	}
	reply_set(rp, 200, "application/x-ndjson", line, k);
	buf_cleanup(&b);
}

static void
ctl_webhooks(struct sandbox *sb, struct reply *rp)
{
	const struct hookrec *h;
	struct buf b;
	cJSON *o;
	char *line;
	size_t k;

	buf_init(&b, (size_t)64 << 20);
	pthread_mutex_lock(&sb->hook_mtx);
	for (k = 0; k < sb->hlog_n; k++) {
		h = &sb->hlog[(sb->hlog_head + k) % SB_HOOKLOG_MAX];
		o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "seq", (double)h->seq);
		cJSON_AddNumberToObject(o, "t_ms", (double)h->t_ms);
		cJSON_AddStringToObject(o, "eventType", h->event);
		cJSON_AddStringToObject(o, "instance", h->instance);
		cJSON_AddStringToObject(o, "refundId", h->refund_id);
		cJSON_AddStringToObject(o, "eventId", h->event_id);
		cJSON_AddNumberToObject(o, "status", (double)h->status);
		cJSON_AddNumberToObject(o, "attempts", h->attempts);
		line = json_take_print(o);
		(void)buf_appends(&b, line);
		(void)buf_append(&b, "\n", 1);
		free(line);
	}
	o = NULL;
	pthread_mutex_unlock(&sb->hook_mtx);
	line = buf_detach(&b, &k);
	if (line == NULL) {
		line = xstrdup("");
		k = 0;
	}
	reply_set(rp, 200, "application/x-ndjson", line, k);
	buf_cleanup(&b);
}

static void
ctl_config(struct sandbox *sb, const char *method, cJSON *root,
    struct reply *rp)
{
	cJSON *o, *a;
	int64_t v;
	bool flag;
	size_t i;

	if (strcmp(method, "POST") == 0) {
		if (json_get(root, "token_ttl") != NULL) {
			if (json_get_int64(root, "token_ttl", &v) != RS_OK ||
			    v < 1 || v > 86400 * 365) {
				reply_message(rp, 400,
				    "token_ttl: 1..31536000");
				return;
			}
			sb->token_ttl_s = v;
		}
		if (json_get(root, "rate_limit") != NULL) {
			if (json_get_int64(root, "rate_limit", &v) != RS_OK ||
			    v < 0 || v > 1000000) {
				reply_message(rp, 400,
				    "rate_limit: 0..1000000");
				return;
			}
			sb->rate_limit = v;
			for (i = 0; i < sb->ninst; i++)
				sb->inst[i].rl_head = sb->inst[i].rl_n = 0;
		}
		if (json_get(root, "rate_limit_retry_after") != NULL) {
			if (json_get_bool(root, "rate_limit_retry_after",
			    &flag) != RS_OK) {
				reply_message(rp, 400,
				    "rate_limit_retry_after: a boolean");
				return;
			}
			sb->rate_limit_retry_after = flag;
		}
		if (json_get(root, "cursor_ttl") != NULL) {
			if (json_get_int64(root, "cursor_ttl", &v) != RS_OK ||
			    v < 0 || v > 86400 * 365) {
				reply_message(rp, 400,
				    "cursor_ttl: 0..31536000");
				return;
			}
			sb->cursor_ttl_s = v;
		}
	}
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "port", sb->port);
	cJSON_AddNumberToObject(o, "token_ttl", (double)sb->token_ttl_s);
	cJSON_AddNumberToObject(o, "rate_limit", (double)sb->rate_limit);
	cJSON_AddBoolToObject(o, "rate_limit_retry_after",
	    sb->rate_limit_retry_after);
	cJSON_AddNumberToObject(o, "cursor_ttl", (double)sb->cursor_ttl_s);
	cJSON_AddNumberToObject(o, "generation", (double)sb->generation);
	cJSON_AddBoolToObject(o, "webhooks", sb->hook_url != NULL);
	a = cJSON_AddArrayToObject(o, "instances");
	for (i = 0; i < sb->ninst; i++) {
		cJSON *io = cJSON_CreateObject();

		cJSON_AddStringToObject(io, "name", sb->inst[i].name);
		cJSON_AddStringToObject(io, "currency", sb->inst[i].currency);
		cJSON_AddNumberToObject(io, "seeded",
		    (double)sb->inst[i].nseed);
		cJSON_AddNumberToObject(io, "refunds",
		    (double)inst_total(&sb->inst[i]));
		cJSON_AddNumberToObject(io, "charges",
		    (double)(sb->inst[i].nseed_charges +
		    sb->inst[i].nfree_charges + sb->inst[i].nctl_charges));
		cJSON_AddItemToArray(a, io);
	}
	reply_json(rp, 200, o);
}

static void
ctl_reset(struct sandbox *sb, cJSON *root, struct reply *rp)
{
	size_t i;
	int64_t seed = -1, charges = -1;
	cJSON *o;

	if (root != NULL && json_get(root, "seed") != NULL &&
	    (json_get_int64(root, "seed", &seed) != RS_OK || seed < 0 ||
	    seed > SB_SEED_MAX)) {
		reply_message(rp, 400, "seed: 0..10000000");
		return;
	}
	if (root != NULL && json_get(root, "charges") != NULL &&
	    (json_get_int64(root, "charges", &charges) != RS_OK ||
	    charges < 0 || charges > SB_FREE_CHARGES_MAX)) {
		reply_message(rp, 400, "charges: 0..10000000");
		return;
	}
	for (i = 0; i < sb->ninst; i++)
		inst_reset(&sb->inst[i], seed >= 0 ? (size_t)seed :
		    sb->inst[i].nseed, charges >= 0 ? (size_t)charges :
		    sb->inst[i].nfree_charges);
	sb->nfaults = 0;
	sb->generation++;
	log_clear(sb);
	pthread_mutex_lock(&sb->hook_mtx);
	sb->hlog_n = sb->hlog_head = 0;
	pthread_mutex_unlock(&sb->hook_mtx);
	o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "ok", 1);
	cJSON_AddNumberToObject(o, "generation", (double)sb->generation);
	reply_json(rp, 200, o);
}

static void
ctl_dispatch(struct sandbox *sb, struct MHD_Connection *c,
    const char *method, const char *url, const char *body, size_t len,
    bool too_big, struct reply *rp)
{
	const char *what = url + strlen("/_sandbox/"), *why;
	bool get = strcmp(method, "GET") == 0;
	bool post = strcmp(method, "POST") == 0;
	cJSON *root = NULL;
	char msg[160];

	if (too_big) {
		reply_message(rp, 413, "request body too large");
		return;
	}
	if (post && len > 0 && (json_parse_strict(body, len, JSON_MAX_DEPTH,
	    &root, &why) != RS_OK || !cJSON_IsObject(root))) {
		snprintf(msg, sizeof(msg), "invalid JSON object: %s",
		    root != NULL ? "not an object" : why);
		cJSON_Delete(root);
		reply_message(rp, 400, msg);
		return;
	}
	if (post && root == NULL && strcmp(what, "reset") != 0) {
		reply_message(rp, 400, "a JSON object body is required");
		return;
	}
	pthread_mutex_lock(&sb->mtx);
	if (strcmp(what, "faults") == 0 && (get || post ||
	    strcmp(method, "DELETE") == 0))
		ctl_faults(sb, method, root, rp);
	else if (strcmp(what, "refunds") == 0 && post)
		ctl_refunds(sb, root, rp);
	else if (strcmp(what, "charges") == 0 && (get || post))
		ctl_charges(sb, c, method, root, rp);
	else if (strcmp(what, "log") == 0 && get)
		ctl_log(sb, c, rp);
	else if (strcmp(what, "webhooks") == 0 && get)
		ctl_webhooks(sb, rp);
	else if (strcmp(what, "config") == 0 && (get || post))
		ctl_config(sb, method, root, rp);
	else if (strcmp(what, "reset") == 0 && post)
		ctl_reset(sb, root, rp);
	else
		reply_message(rp, 404, "no such control endpoint");
	pthread_mutex_unlock(&sb->mtx);
	cJSON_Delete(root);
}

/* ---- HTTP (libmicrohttpd, a thread per connection) ----------------- */

struct sbreq {
	struct buf	 body;
	bool		 too_big;
	bool		 ctl;
};

/* A body sent in two halves: stalled in between, or cut after the
 * first (closed, or reset). */
struct stream {
	struct sandbox	*sb;
	char		*body;
	size_t		 len;
	size_t		 cut;
	int64_t		 stall_ms;
	bool		 stalled;
	bool		 truncate;
	bool		 reset;
	int		 fd;		/* the connection's, for a reset */
};

/*
 * Abort the connection on fd with a TCP reset, leaving the descriptor to
 * libmicrohttpd: connect() to AF_UNSPEC disconnects a Linux TCP socket,
 * which sends an RST from an established connection.  SO_LINGER {1, 0}
 * makes the close that follows abortive too.
 */
static void
conn_reset(int fd)
{
	struct linger lg;
	struct sockaddr sa;

	if (fd < 0)
		return;
	lg.l_onoff = 1;
	lg.l_linger = 0;
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNSPEC;
	(void)connect(fd, &sa, sizeof(sa));
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct stream *s = cls;
	size_t limit, n;

	if (pos >= s->cut) {
		if (s->reset) {
			/* Let the client read the first half. */
			(void)sb_sleep(s->sb, 100);
			conn_reset(s->fd);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (s->truncate)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (!s->stalled) {
			s->stalled = true;
			if (!sb_sleep(s->sb, s->stall_ms))
				return MHD_CONTENT_READER_END_WITH_ERROR;
		}
	}
	if (pos >= s->len)
		return MHD_CONTENT_READER_END_OF_STREAM;
	limit = pos < s->cut ? s->cut : s->len;
	n = limit - (size_t)pos;
	if (n > max)
		n = max;
	memcpy(out, s->body + pos, n);
	return (ssize_t)n;
}

static void
stream_free(void *cls)
{
	struct stream *s = cls;

	free(s->body);
	free(s);
}

/*
 * An oversized but valid body, made as it is sent: the prefix, padding
 * spaces, k copies of one refund separated by commas, the suffix.
 */
struct gen {
	uint64_t	 total;
	char		*unit;
	size_t		 ulen;
	uint64_t	 pad;
	uint64_t	 k;
	char		*suffix;
	size_t		 slen;
};

#define GEN_PREFIX	"{\"refunds\":["

static struct gen *
gen_new(uint64_t total)
{
	static const struct rec sample = {
		.id = "rf-oversize", .charge_id = "ch-oversize",
		.currency = "USD", .amount = "12.95", .status = "SUCCEEDED",
		.revision = 1, .created_ms = SEED_BASE_MS,
		.updated_ms = SEED_BASE_MS
	};
	struct gen *g = xcalloc(1, sizeof(*g));
	uint64_t room, plen = sizeof(GEN_PREFIX) - 1, smax;

	g->total = total;
	g->unit = rec_text(&sample);
	g->ulen = strlen(g->unit);
	/* The longest suffix, with a 20-digit count. */
	smax = strlen("],\"pagingMetadata\":{\"count\":,\"cursors\":{},"
	    "\"hasNext\":false}}") + 20;
	room = total > plen + smax ? total - plen - smax : 0;
	g->k = (room + 1) / (g->ulen + 1);
	g->suffix = xasprintf("],\"pagingMetadata\":{\"count\":%" PRIu64
	    ",\"cursors\":{},\"hasNext\":false}}", g->k);
	g->slen = strlen(g->suffix);
	g->pad = total - plen - g->slen - (g->k > 0 ? g->k * (g->ulen + 1) - 1 :
	    0);
	if (total < plen + g->slen)
		g->pad = 0;
	return g;
}

static ssize_t
gen_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct gen *g = cls;
	const uint64_t plen = sizeof(GEN_PREFIX) - 1;
	uint64_t p, units = g->k > 0 ? g->k * (g->ulen + 1) - 1 : 0, u;
	size_t n = 0, m;

	if (pos >= g->total)
		return MHD_CONTENT_READER_END_OF_STREAM;
	while (n < max && pos < g->total) {
		p = pos;
		if (p < plen) {
			m = (size_t)(plen - p);
			if (m > max - n)
				m = max - n;
			memcpy(out + n, &GEN_PREFIX[p], m);
		} else if ((p -= plen) < g->pad) {
			m = g->pad - p > max - n ? max - n :
			    (size_t)(g->pad - p);
			memset(out + n, ' ', m);
		} else if ((p -= g->pad) < units) {
			u = p % (g->ulen + 1);
			if (u == g->ulen) {
				out[n] = ',';
				m = 1;
			} else {
				m = g->ulen - (size_t)u;
				if (m > max - n)
					m = max - n;
				memcpy(out + n, g->unit + u, m);
			}
		} else {
			p -= units;
			if (p >= g->slen)
				break;	/* total < prefix + suffix */
			m = g->slen - (size_t)p;
			if (m > max - n)
				m = max - n;
			memcpy(out + n, g->suffix + p, m);
		}
		n += m;
		pos += m;
	}
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	return (ssize_t)n;
}

static void
gen_free(void *cls)
{
	struct gen *g = cls;

	free(g->unit);
	free(g->suffix);
	free(g);
}

static void
reply_cleanup(struct reply *rp)
{
	free(rp->body);
	rp->body = NULL;
	free(rp->location);
	rp->location = NULL;
}

/* Hand the answer to MHD: stall first if asked, then the body in the
 * shape asked for. */
static enum MHD_Result
reply_send(struct sandbox *sb, struct MHD_Connection *c, struct reply *rp)
{
	const union MHD_ConnectionInfo *ci;
	struct MHD_Response *resp = NULL;
	struct stream *s;
	struct gen *g;
	enum MHD_Result r;
	char rid[40];

	if (rp->stall_ms > 0)
		(void)sb_sleep(sb, rp->stall_ms);
	switch (rp->shape) {
	case SHAPE_PLAIN:
		resp = MHD_create_response_from_buffer(rp->len, rp->body,
		    MHD_RESPMEM_MUST_FREE);
		if (resp != NULL)
			rp->body = NULL;
		break;
	case SHAPE_STALL_BODY:
	case SHAPE_TRUNCATE:
	case SHAPE_RESET:
		s = xcalloc(1, sizeof(*s));
		s->sb = sb;
		s->body = rp->body;
		s->len = rp->len;
		s->cut = rp->len / 2;
		s->stall_ms = rp->body_stall_ms;
		s->truncate = rp->shape == SHAPE_TRUNCATE;
		s->reset = rp->shape == SHAPE_RESET;
		ci = MHD_get_connection_info(c,
		    MHD_CONNECTION_INFO_CONNECTION_FD);
		s->fd = ci != NULL ? ci->connect_fd : -1;
		rp->body = NULL;
		resp = MHD_create_response_from_callback(rp->chunked ?
		    MHD_SIZE_UNKNOWN : s->len, 1024, stream_read, s,
		    stream_free);
		if (resp == NULL)
			stream_free(s);
		break;
	case SHAPE_OVERSIZE:
		g = gen_new(rp->bytes);
		resp = MHD_create_response_from_callback(rp->chunked ?
		    MHD_SIZE_UNKNOWN : g->total, 64 * 1024, gen_read, g,
		    gen_free);
		if (resp == NULL)
			gen_free(g);
		break;
	}
	if (resp == NULL) {
		reply_cleanup(rp);
		return MHD_NO;
	}
	rand_hex(rid, 16);
	MHD_add_response_header(resp, "x-wix-request-id", rid);
	if (rp->ctype != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
		    rp->ctype);
	if (rp->retry_after[0] != '\0')
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER,
		    rp->retry_after);
	if (rp->location != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION,
		    rp->location);
	r = MHD_queue_response(c, rp->status, resp);
	MHD_destroy_response(resp);
	reply_cleanup(rp);
	return r;
}

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upsize, void **con_cls)
{
	struct sandbox *sb = cls;
	struct sbreq *rq = *con_cls;
	struct reply rp;
	const char *body;

	if (rq == NULL) {
		rq = xcalloc(1, sizeof(*rq));
		rq->ctl = strncmp(url, "/_sandbox/", 10) == 0;
		buf_init(&rq->body, rq->ctl ? SB_CTL_BODY_MAX :
		    SB_API_BODY_MAX);
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upsize != 0) {
		if (!rq->too_big && buf_append(&rq->body, upload, *upsize) !=
		    RS_OK) {
			rq->too_big = true;
			buf_cleanup(&rq->body);
		}
		*upsize = 0;
		return MHD_YES;
	}
	memset(&rp, 0, sizeof(rp));
	body = rq->body.data != NULL ? rq->body.data : "";
	if (rq->ctl)
		ctl_dispatch(sb, c, method, url, body, rq->body.len,
		    rq->too_big, &rp);
	else
		api_dispatch(sb, c, method, url, body, rq->body.len,
		    rq->too_big, &rp);
	if (rp.body == NULL)
		reply_message(&rp, 500, "internal error");
	log_debug("%s %s: %u%s%s", method, url, rp.status,
	    rp.fault[0] != '\0' ? " fault " : "", rp.fault);
	return reply_send(sb, c, &rp);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct sbreq *rq = *con_cls;

	if (rq == NULL)
		return;
	buf_cleanup(&rq->body);
	free(rq);
	*con_cls = NULL;
}

static void mhd_logger(void *, const char *, va_list)
    __attribute__((format(printf, 2, 0)));

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_debug("mhd: %s", msg);
}

static uint16_t
bound_port(struct MHD_Daemon *mhd)
{
	const union MHD_DaemonInfo *di;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	di = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_LISTEN_FD);
	if (di == NULL || getsockname(di->listen_fd, (struct sockaddr *)&ss,
	    &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

static void
cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

/* A sandbox with opt's data, not yet listening.  Free with
 * sandbox_free(). */
static struct sandbox *
sandbox_new(const struct sb_options *opt)
{
	struct sandbox *sb = xcalloc(1, sizeof(*sb));
	struct instance *in;
	size_t i;

	pthread_mutex_init(&sb->mtx, NULL);
	pthread_mutex_init(&sb->stop_mtx, NULL);
	pthread_mutex_init(&sb->hook_mtx, NULL);
	cond_init_mono(&sb->stop_cond);
	cond_init_mono(&sb->hook_cond);
	sb->ninst = opt->ninstances;
	sb->inst = xcalloc(sb->ninst, sizeof(*sb->inst));
	for (i = 0; i < sb->ninst; i++) {
		in = &sb->inst[i];
		snprintf(in->name, sizeof(in->name), "%s", opt->instances[i]);
		snprintf(in->currency, sizeof(in->currency), "%s",
		    opt->currencies[opt->ncurrencies == 1 ? 0 : i]);
		in->exp = money_exponent(in->currency);
		in->ordinal = i;
		inst_reset(in, opt->seed, opt->charges);
	}
	sb->data_seed = opt->data_seed;
	sb->generation = 1;
	if (RAND_bytes(sb->cursor_key, sizeof(sb->cursor_key)) != 1)
		fatalx("RAND_bytes failed");
	sb->token_ttl_s = opt->token_ttl_s;
	sb->rate_limit = opt->rate_limit;
	sb->rate_limit_retry_after = opt->rate_limit_retry_after;
	sb->cursor_ttl_s = opt->cursor_ttl_s;
	sb->app_id = xstrdup(opt->app_id);
	sb->app_secret = xstrdup(opt->app_secret);
	sb->api_key = opt->api_key != NULL ? xstrdup(opt->api_key) : NULL;
	if (opt->hook_url != NULL && opt->hook_key != NULL) {
		sb->hook_url = xstrdup(opt->hook_url);
		sb->hook_key = xstrdup(opt->hook_key);
	}
	return sb;
}

/* Listen on addr, start the webhook sender.  RS_ERR_IO with a message in
 * *why (caller frees) if it cannot. */
static enum rs_status
sandbox_start(struct sandbox *sb, const struct sockaddr_storage *addr,
    const char *log_path, char **why)
{
	unsigned int flags;
	int r;

	if (log_path != NULL && (sb->logf = fopen(log_path, "w")) == NULL) {
		*why = xasprintf("--log %s: %s", log_path, strerror(errno));
		return RS_ERR_IO;
	}
	flags = MHD_USE_THREAD_PER_CONNECTION |
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
	    MHD_USE_ERROR_LOG | MHD_USE_ITC;
	if (addr->ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	sb->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_access, sb,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, sb,
	    MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)addr,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)256,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, sb,
	    MHD_OPTION_END);
	if (sb->mhd == NULL) {
		*why = xasprintf("cannot listen: %s", strerror(errno));
		return RS_ERR_IO;
	}
	sb->port = bound_port(sb->mhd);
	if (sb->hook_url != NULL) {
		if ((r = pthread_create(&sb->hook_thread, NULL, hook_main,
		    sb)) != 0) {
			*why = xasprintf("pthread_create: %s", strerror(r));
			return RS_ERR_IO;
		}
		sb->hook_running = true;
	}
	return RS_OK;
}

/* Stop listening, wake every stall, stop the sender, free it all. */
static void
sandbox_free(struct sandbox *sb)
{
	struct hookjob *j;
	size_t i;

	if (sb == NULL)
		return;
	pthread_mutex_lock(&sb->stop_mtx);
	sb->stopping = true;
	pthread_cond_broadcast(&sb->stop_cond);
	pthread_mutex_unlock(&sb->stop_mtx);
	if (sb->mhd != NULL)
		MHD_stop_daemon(sb->mhd);
	if (sb->hook_running) {
		pthread_mutex_lock(&sb->hook_mtx);
		sb->hook_stop = true;
		pthread_cond_signal(&sb->hook_cond);
		pthread_mutex_unlock(&sb->hook_mtx);
		pthread_join(sb->hook_thread, NULL);
	}
	while ((j = sb->hq_head) != NULL) {
		sb->hq_head = j->next;
		hookjob_free(j);
	}
	free(sb->hlog);
	for (i = 0; i < sb->ninst; i++) {
		inst_reset(&sb->inst[i], 0, 0);
		free(sb->inst[i].rl);
	}
	free(sb->inst);
	map_cleanup(&sb->tokens, free);
	log_clear(sb);
	if (sb->logf != NULL)
		fclose(sb->logf);
	free(sb->app_id);
	freezero_str(sb->app_secret);
	freezero_str(sb->api_key);
	free(sb->hook_url);
	freezero_str(sb->hook_key);
	pthread_cond_destroy(&sb->stop_cond);
	pthread_cond_destroy(&sb->hook_cond);
	pthread_mutex_destroy(&sb->hook_mtx);
	pthread_mutex_destroy(&sb->stop_mtx);
	pthread_mutex_destroy(&sb->mtx);
	free(sb);
}

/* ---- trigger: one signed webhook, like `stripe trigger` ------------ */

struct trigger {
	const char	*key_path;
	const char	*url;
	const char	*event;		/* refund-created, refund-updated,
					   app-installed */
	const char	*instance;
	const char	*id;
	const char	*charge;
	const char	*amount;
	const char	*currency;
	const char	*status;
	const char	*app_id;
	int64_t		 revision;	/* < 0: by event */
};

static const char trigger_usage[] =
"usage: wix-sandbox trigger --key PRIV.pem --url URL [EVENT] [options]\n"
"\n"
"Signs one Wix webhook (RS256, the three nested layers of WIX.md §1) with\n"
"the private key and POSTs it to URL as Wix does: the raw JWT as a\n"
"text/plain body.  Prints the HTTP status, then the answer.\n"
"\n"
"EVENT: refund-created (default), refund-updated or app-installed.\n"
"\n"
"  --key PRIV.pem    private key; the daemon must hold its public half\n"
"                    ([wix] public_key_file)\n"
"  --url URL         e.g. http://127.0.0.1:8080/webhooks\n"
"  --instance ID     instanceId [" DEFAULT_INSTANCE "]\n"
"  --id R            refund id [random rf-trigger-...]\n"
"  --charge C        chargeId [random ch-trigger-...]\n"
"  --amount DEC      amount [10 units: 10.00, 10 JPY, 10.000 KWD]\n"
"  --currency CUR    currencyCode [USD]\n"
"  --status S        status [SUCCEEDED]\n"
"  --revision N      revision [1 created, 2 updated]; also the\n"
"                    entityEventSequence\n"
"  --app-id ID       appId of app-installed [" DEFAULT_APP_ID "]\n"
"\n"
"Exit status: 0 the answer was 200, 1 otherwise, 2 usage error.\n";

/*
 * Build and POST the webhook t describes.  Returns the HTTP status or
 * -1; *answer gets the body or an error message (caller frees).
 */
static long
trigger_run(const struct trigger *t, char **answer)
{
	struct rec r;
	struct tu_event ev;
	char err[CURL_ERROR_SIZE], *key = NULL, *tok = NULL, *entity = NULL;
	char *rid = NULL, *cid = NULL, *eid = NULL, *c = NULL, now[32];
	const char *cur = t->currency != NULL ? t->currency : "USD";
	const char *inst = t->instance != NULL ? t->instance : DEFAULT_INSTANCE;
	bool created = true;
	int64_t minor;
	long status = -1;
	int exp, k;

	*answer = NULL;
	if ((key = tu_read_file(t->key_path, NULL)) == NULL) {
		*answer = xasprintf("--key %s: cannot read", t->key_path);
		goto out;
	}
	if (t->event == NULL || strcmp(t->event, "refund-created") == 0)
		created = true;
	else if (strcmp(t->event, "refund-updated") == 0)
		created = false;
	else if (strcmp(t->event, "app-installed") == 0) {
		tok = tu_installed_webhook(key, inst, t->app_id != NULL ?
		    t->app_id : DEFAULT_APP_ID);
		goto post;
	} else {
		*answer = xasprintf("unknown event %s", t->event);
		goto out;
	}
	if (!money_currency_wellformed(cur) ||
	    (exp = money_exponent(cur)) < 0) {
		*answer = xasprintf("--currency %s: not an ISO 4217 code", cur);
		goto out;
	}
	memset(&r, 0, sizeof(r));
	if (t->amount != NULL) {
		if (money_to_minor(t->amount, cur, &minor) != RS_OK ||
		    minor <= 0 || minor > SB_AMOUNT_MAX) {
			*answer = xasprintf("--amount %s: not an amount in %s",
			    t->amount, cur);
			goto out;
		}
	} else {
		/* Ten main units: 10.00 USD, 10 JPY, 10.000 KWD. */
		for (minor = 10, k = 0; k < exp; k++)
			minor *= 10;
	}
	if (money_format(minor, exp, r.amount, sizeof(r.amount)) != RS_OK)
		RS_PANIC("amount does not format");
	rid = t->id != NULL ? xstrdup(t->id) : tu_random_id("rf-trigger-");
	cid = t->charge != NULL ? xstrdup(t->charge) :
	    tu_random_id("ch-trigger-");
	if (strlen(rid) >= sizeof(r.id) || strlen(cid) >= sizeof(r.charge_id)
	    || (t->status != NULL && !name_ok(t->status, SB_STATUS_MAX - 1))) {
		*answer = xasprintf("--id, --charge or --status too long or "
		    "malformed");
		goto out;
	}
	snprintf(r.id, sizeof(r.id), "%s", rid);
	snprintf(r.charge_id, sizeof(r.charge_id), "%s", cid);
	snprintf(r.currency, sizeof(r.currency), "%s", cur);
	snprintf(r.status, sizeof(r.status), "%s", t->status != NULL ?
	    t->status : "SUCCEEDED");
	r.revision = t->revision >= 0 ? t->revision : created ? 1 : 2;
	r.updated_ms = wall_ms();
	r.created_ms = created ? r.updated_ms : r.updated_ms - 60000;
	entity = rec_text(&r);
	eid = tu_random_id("evt-");
	iso_ms(r.updated_ms, now);
	memset(&ev, 0, sizeof(ev));
	ev.id = eid;
	ev.slug = created ? TU_CREATED : TU_UPDATED;
	ev.form = TU_FORM_OBJECT;
	ev.entity_json = entity;
	ev.seq = r.revision;
	ev.event_time = now;
	if ((c = tu_layer_c(&ev)) != NULL)
		tok = tu_webhook(key, c, inst, created ? TU_EVT_CREATED :
		    TU_EVT_UPDATED);
post:
	if (tok == NULL) {
		*answer = xasprintf("cannot sign with %s (an RSA private key "
		    "PEM?)", t->key_path);
		goto out;
	}
	status = webhook_post(NULL, t->url, tok, 10000, answer, err);
	if (status < 0)
		*answer = xasprintf("%s: %s", t->url, err);
out:
	freezero_str(key);
	free(tok);
	free(entity);
	free(rid);
	free(cid);
	free(eid);
	free(c);
	return status;
}

static int
trigger_main(int argc, char *argv[])
{
	enum { T_KEY = 256, T_URL, T_INSTANCE, T_ID, T_CHARGE, T_AMOUNT,
	    T_CURRENCY, T_STATUS, T_REVISION, T_APP_ID };
	static const struct option lo[] = {
		{ "key",	required_argument, NULL, T_KEY },
		{ "url",	required_argument, NULL, T_URL },
		{ "instance",	required_argument, NULL, T_INSTANCE },
		{ "id",		required_argument, NULL, T_ID },
		{ "charge",	required_argument, NULL, T_CHARGE },
		{ "amount",	required_argument, NULL, T_AMOUNT },
		{ "currency",	required_argument, NULL, T_CURRENCY },
		{ "status",	required_argument, NULL, T_STATUS },
		{ "revision",	required_argument, NULL, T_REVISION },
		{ "app-id",	required_argument, NULL, T_APP_ID },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL,		0,		   NULL, 0 }
	};
	struct trigger t;
	char *answer = NULL;
	long status;
	int ch;

	memset(&t, 0, sizeof(t));
	t.revision = -1;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case T_KEY:
			t.key_path = optarg;
			break;
		case T_URL:
			t.url = optarg;
			break;
		case T_INSTANCE:
			t.instance = optarg;
			break;
		case T_ID:
			t.id = optarg;
			break;
		case T_CHARGE:
			t.charge = optarg;
			break;
		case T_AMOUNT:
			t.amount = optarg;
			break;
		case T_CURRENCY:
			t.currency = optarg;
			break;
		case T_STATUS:
			t.status = optarg;
			break;
		case T_REVISION:
			if (strnum_i64(optarg, 0, INT64_MAX, &t.revision) !=
			    NULL) {
				fprintf(stderr, "--revision %s: not an "
				    "integer >= 0\n", optarg);
				return EX_USAGE;
			}
			break;
		case T_APP_ID:
			t.app_id = optarg;
			break;
		case 'h':
			fputs(trigger_usage, stdout);
			return EX_OK;
		default:
			fputs(trigger_usage, stderr);
			return EX_USAGE;
		}
	}
	if (optind < argc)
		t.event = argv[optind++];
	if (optind < argc || t.key_path == NULL || t.url == NULL) {
		fputs(trigger_usage, stderr);
		return EX_USAGE;
	}
	status = trigger_run(&t, &answer);
	if (status < 0)
		fprintf(stderr, "wix-sandbox trigger: %s\n", answer != NULL ?
		    answer : "failed");
	else
		printf("HTTP %ld\n%s\n", status, answer != NULL ? answer : "");
	free(answer);
	return status == 200 ? EX_OK : EX_FAIL;
}

/* ---- serve: the command line --------------------------------------- */

static const char usage_text[] =
"usage: wix-sandbox [options]              serve until SIGTERM/SIGINT\n"
"       wix-sandbox trigger --help         sign and POST one webhook\n"
"       wix-sandbox selftest [-v]          check everything in-process\n"
"\n"
"A local stand-in for Wix's REST API (token, Query Refunds, Get Refund,\n"
"Create Refund) with seeded data, switchable faults and a control API\n"
"under /_sandbox/.  The design is in the comment at the top of\n"
"tests/sandbox/wix-sandbox.c.\n"
"\n"
"  --listen HOST:PORT     address [127.0.0.1:0]; port 0 picks one, and\n"
"                         \"wix-sandbox listening on HOST:PORT\" goes to\n"
"                         stderr once bound\n"
"  --instances A,B        app instances [" DEFAULT_INSTANCE "]\n"
"  --seed N               seeded refunds per instance [100], up to\n"
"                         10000000 (made on demand, never stored)\n"
"  --charges K            extra charges per instance with no refund yet\n"
"                         [10]: ch-<inst>-NNNNNN after the seeded ones\n"
"  --currency CUR[,CUR]   currency of each instance (one for all) [USD]\n"
"  --data-seed S          varies the generated data [1]\n"
"  --app-id ID            OAuth client_id [" DEFAULT_APP_ID "]\n"
"  --app-secret S         OAuth client_secret [" DEFAULT_APP_SECRET "]\n"
"  --api-key K            also accept Authorization: K + wix-site-id\n"
"  --token-ttl SECONDS    access token lifetime [14400]\n"
"  --rate-limit N[/min]   429 past N requests per instance in any 60 s\n"
"                         [0: off]\n"
"  --rate-limit-retry-after  send Retry-After with those 429s\n"
"  --cursor-ttl SECONDS   cursors expire after this [0: never]\n"
"  --log FILE             write the request log (JSON lines) to FILE as\n"
"                         requests come (emptied at start)\n"
"  --webhook-url URL      POST signed Refund Created/Updated webhooks\n"
"                         here (e.g. http://127.0.0.1:8080/webhooks)\n"
"  --webhook-key PRIV.pem sign them with this RSA private key\n"
"  --max-seconds N        exit after N seconds [0: never]\n"
"  -q, --quiet            only the listening line and errors\n"
"  -v, --verbose          log every request\n"
"  -h, --help             this text\n"
"\n"
"Wix endpoints (Authorization: the raw access token, no \"Bearer\"):\n"
"  POST /oauth2/token                      client credentials -> token\n"
"  POST /payments/refunds/v1/refunds/query Query Refunds, cursor paging\n"
"  GET  /payments/refunds/v1/refunds/{id}  Get Refund\n"
"  POST /payments/refunds/v1/refunds       Create Refund (WIX.md §5)\n"
"Seeded ids: refunds rf-<instance>-000001.., charges ch-<instance>-000001..\n"
"(two refunds each), then --charges charges with nothing refunded yet.\n"
"\n"
"Control API (no auth):\n"
"  POST|GET|DELETE /_sandbox/faults  add, list, clear faults\n"
"  POST /_sandbox/refunds            add or update refunds (and webhooks)\n"
"  POST|GET /_sandbox/charges        make charges, force error codes,\n"
"                                    pending refunds, settle them\n"
"  GET  /_sandbox/log                request log, JSON lines\n"
"  GET  /_sandbox/webhooks           webhooks sent, JSON lines\n"
"  POST|GET /_sandbox/config         token_ttl, rate_limit, cursor_ttl\n"
"  POST /_sandbox/reset              back to the seed\n"
"Faults {\"fault\": F, \"count\": N} (+ \"path\" \"endpoint\" \"instance\"):\n"
"  \"429\" .. \"599\" (\"retry_after\": N or text), \"300\" .. \"399\"\n"
"  (a redirect to /redirected<path>), token_401, stall and stall_body\n"
"  (\"seconds\" or \"ms\"), truncate, reset (\"chunked\") and oversize\n"
"  (\"bytes\", \"chunked\"), invalid_json, expire_cursor, repeat_cursor,\n"
"  has_next_no_cursor, empty_page_has_next; now: expire_tokens, clear.\n"
"  curl -d '{\"fault\":\"429\",\"count\":2,\"retry_after\":3}' \\\n"
"      http://127.0.0.1:PORT/_sandbox/faults\n"
"\n"
"Exit status: 0 after a signal or --max-seconds, 1 a runtime failure,\n"
"2 a usage error.\n";

/* Split s at commas into out[max] (copies).  false if an item is
 * empty or there are too many. */
static bool
split_list(const char *s, char **out, size_t max, size_t *n)
{
	const char *p = s, *comma;

	*n = 0;
	for (;;) {
		comma = strchr(p, ',');
		if (*n >= max || comma == p || *p == '\0')
			return false;
		out[(*n)++] = comma != NULL ? xstrndup(p, (size_t)(comma - p)) :
		    xstrdup(p);
		if (comma == NULL)
			return true;
		p = comma + 1;
	}
}

static bool
parse_listen(const char *s, struct sb_options *o)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&o->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&o->addr;
	const char *port, *end;
	char host[64];
	int64_t p;
	size_t n;

	memset(&o->addr, 0, sizeof(o->addr));
	if (s[0] == '[') {
		if ((end = strchr(s, ']')) == NULL || end[1] != ':')
			return false;
		n = (size_t)(end - s - 1);
		port = end + 2;
		if (n >= sizeof(host))
			return false;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return false;
		sin6->sin6_family = AF_INET6;
	} else {
		if ((end = strrchr(s, ':')) == NULL)
			return false;
		n = (size_t)(end - s);
		port = end + 1;
		if (n >= sizeof(host))
			return false;
		memcpy(host, s, n);
		host[n] = '\0';
		if (strcmp(host, "localhost") == 0)
			snprintf(host, sizeof(host), "127.0.0.1");
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return false;
		sin->sin_family = AF_INET;
	}
	if (strnum_i64(port, 0, 65535, &p) != NULL)
		return false;
	if (o->addr.ss_family == AF_INET6) {
		sin6->sin6_port = htons((uint16_t)p);
		snprintf(o->host, sizeof(o->host), "[%s]", host);
	} else {
		sin->sin_port = htons((uint16_t)p);
		snprintf(o->host, sizeof(o->host), "%s", host);
	}
	return true;
}

static void
options_cleanup(struct sb_options *o)
{
	size_t i;

	for (i = 0; i < o->ninstances; i++)
		free(o->instances[i]);
	for (i = 0; i < o->ncurrencies; i++)
		free(o->currencies[i]);
	freezero_str(o->hook_key);
	memset(o, 0, sizeof(*o));
}

/* Defaults for every option (also for selftest). */
static void
options_defaults(struct sb_options *o)
{
	memset(o, 0, sizeof(*o));
	(void)parse_listen("127.0.0.1:0", o);
	o->seed = 100;
	o->charges = 10;
	o->data_seed = 1;
	o->token_ttl_s = DEFAULT_TOKEN_TTL;
	o->app_id = DEFAULT_APP_ID;
	o->app_secret = DEFAULT_APP_SECRET;
}

/* Check the options as a whole; a message on stderr and false if
 * bad. */
static bool
options_check(struct sb_options *o)
{
	size_t i, j;

	if (o->ninstances == 0)
		o->instances[o->ninstances++] = xstrdup(DEFAULT_INSTANCE);
	if (o->ncurrencies == 0)
		o->currencies[o->ncurrencies++] = xstrdup("USD");
	for (i = 0; i < o->ninstances; i++) {
		if (!name_ok(o->instances[i], SB_NAME_MAX)) {
			fprintf(stderr, "--instances: %s: 1..64 of "
			    "[A-Za-z0-9._-]\n", o->instances[i]);
			return false;
		}
		for (j = 0; j < i; j++)
			if (strcmp(o->instances[i], o->instances[j]) == 0) {
				fprintf(stderr, "--instances: %s twice\n",
				    o->instances[i]);
				return false;
			}
	}
	if (o->ncurrencies != 1 && o->ncurrencies != o->ninstances) {
		fprintf(stderr, "--currency: one, or one per instance\n");
		return false;
	}
	for (i = 0; i < o->ncurrencies; i++)
		if (!money_currency_wellformed(o->currencies[i]) ||
		    money_exponent(o->currencies[i]) < 0) {
			fprintf(stderr, "--currency: %s: not an ISO 4217 "
			    "code\n", o->currencies[i]);
			return false;
		}
	if ((o->hook_url == NULL) != (o->hook_key == NULL)) {
		fprintf(stderr, "--webhook-url and --webhook-key go "
		    "together\n");
		return false;
	}
	return true;
}

/* Parse a number option in [min, max] or print why and return false. */
static bool
num_opt(const char *name, const char *s, int64_t min, int64_t max,
    int64_t *out)
{
	const char *why;

	if ((why = strnum_i64(s, min, max, out)) != NULL) {
		fprintf(stderr, "--%s %s: %s (%" PRId64 "..%" PRId64 ")\n",
		    name, s, why, min, max);
		return false;
	}
	return true;
}

/* Read the webhook key and check that it signs. */
static bool
load_hook_key(struct sb_options *o, const char *path)
{
	char *tok;

	if ((o->hook_key = tu_read_file(path, NULL)) == NULL) {
		fprintf(stderr, "--webhook-key %s: cannot read\n", path);
		return false;
	}
	if ((tok = tu_jwt_rs256(o->hook_key, TU_DEFAULT_HDR, "{}")) == NULL) {
		fprintf(stderr, "--webhook-key %s: not an RSA private key\n",
		    path);
		return false;
	}
	free(tok);
	return true;
}


/* ---- selftest: the server in-process, checked with libcurl --------- */

#define ST_RX_MAX	512

struct st {
	int		 pass, fail;
	bool		 verbose;
	struct sandbox	*sb;
	char		 base[64];
	CURL		*curl;		/* keep-alive handle, main thread */
	pthread_mutex_t	 mtx;		/* counters from walker threads */
	size_t		 no_request_id;
	/* The webhook receiver. */
	struct MHD_Daemon *rx;
	uint16_t	 rx_port;
	char		 rx_url[64];
	char		*rx_body[ST_RX_MAX];
	size_t		 rx_n;
	struct tu_keypair kp;
	struct jwtv_keys *keys;
	char		*dir;
	char		*key_path;
	char		*log_path;
};

static void st_check(struct st *, bool, int, const char *, ...)
    __attribute__((format(printf, 4, 5)));

static void
st_check(struct st *st, bool ok, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ok) {
		st->pass++;
		if (st->verbose)
			fprintf(stderr, "ok   %s\n", msg);
	} else {
		st->fail++;
		fprintf(stderr, "FAIL (line %d) %s\n", line, msg);
	}
}

#define CHECK(st, cond, ...) st_check((st), (cond), __LINE__, __VA_ARGS__)

struct hres {
	long		 status;	/* -1: no status line */
	CURLcode	 rc;
	char		*body;
	size_t		 len;
	char		*hdrs;
	cJSON		*json;		/* the body if strict JSON */
	int64_t		 ms;		/* how long it took */
};

static void
hres_cleanup(struct hres *r)
{
	free(r->body);
	free(r->hdrs);
	cJSON_Delete(r->json);
	memset(r, 0, sizeof(*r));
}

/*
 * One exchange with the sandbox: method path, Authorization authz and
 * one extra header line if not NULL, a JSON body if not NULL.  fresh:
 * a new connection (and thread-safe); else the keep-alive handle.
 */
static void
st_http(struct st *st, const char *method, const char *path,
    const char *authz, const char *extra, const char *body, long timeout_ms,
    bool fresh, struct hres *r)
{
	struct curl_slist *h = NULL;
	struct buf b, hb;
	const char *why;
	char *url, *ah = NULL;
	int64_t t0 = clock_mono_ms();
	CURL *c;

	memset(r, 0, sizeof(*r));
	buf_init(&b, (size_t)64 << 20);
	buf_init(&hb, (size_t)1 << 20);
	if (fresh)
		c = curl_easy_init();
	else {
		c = st->curl;
		curl_easy_reset(c);
	}
	if (c == NULL)
		fatalx("curl_easy_init failed");
	url = xasprintf("%s%s", st->base, path);
	if (body != NULL)
		h = curl_slist_append(h, "Content-Type: application/json");
	if (authz != NULL) {
		ah = xasprintf("Authorization: %s", authz);
		h = curl_slist_append(h, ah);
	}
	if (extra != NULL)
		h = curl_slist_append(h, extra);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, curl_sink);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	r->rc = curl_easy_perform(c);
	r->status = -1;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->status == 0)
		r->status = -1;
	if ((r->body = buf_detach(&b, &r->len)) == NULL) {
		r->body = xstrdup("");
		r->len = 0;
	}
	if ((r->hdrs = buf_detach(&hb, NULL)) == NULL)
		r->hdrs = xstrdup("");
	if (r->len > 0 && json_parse_strict(r->body, r->len, JSON_MAX_DEPTH,
	    &r->json, &why) != RS_OK)
		r->json = NULL;
	r->ms = clock_mono_ms() - t0;
	if (r->status > 0 && strcasestr(r->hdrs, "\nx-wix-request-id: ") ==
	    NULL) {
		pthread_mutex_lock(&st->mtx);
		st->no_request_id++;
		pthread_mutex_unlock(&st->mtx);
	}
	curl_slist_free_all(h);
	if (fresh)
		curl_easy_cleanup(c);
	buf_cleanup(&b);
	buf_cleanup(&hb);
	free(url);
	free(ah);
}

/* The value of response header name, or NULL.  Caller frees. */
static char *
st_header(const struct hres *r, const char *name)
{
	const char *p = r->hdrs, *eol, *v;
	size_t n = strlen(name);

	while ((eol = strstr(p, "\r\n")) != NULL) {
		if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 &&
		    p[n] == ':') {
			for (v = p + n + 1; *v == ' '; v++)
				;
			return xstrndup(v, (size_t)(eol - v));
		}
		p = eol + 2;
	}
	return NULL;
}

/* The member at a dotted path ("a.b.0.c"; numbers index arrays). */
static const cJSON *
jp(const cJSON *o, const char *path)
{
	const char *p = path, *dot;
	char key[64];
	int64_t idx;
	size_t n;

	while (o != NULL && *p != '\0') {
		dot = strchr(p, '.');
		n = dot != NULL ? (size_t)(dot - p) : strlen(p);
		if (n >= sizeof(key))
			return NULL;
		memcpy(key, p, n);
		key[n] = '\0';
		if (cJSON_IsArray(o) && strnum_i64(key, 0, 1000000, &idx) ==
		    NULL)
			o = cJSON_GetArrayItem(o, (int)idx);
		else
			o = json_get(o, key);
		p = dot != NULL ? dot + 1 : p + n;
	}
	return o;
}

static const char *
jstr(const cJSON *o, const char *path)
{
	const cJSON *v = jp(o, path);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool
jeq(const cJSON *o, const char *path, const char *want)
{
	const char *s = jstr(o, path);

	return s != NULL && strcmp(s, want) == 0;
}

static int64_t
jint(const cJSON *o, const char *path, int64_t def)
{
	const cJSON *v = jp(o, path);

	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : def;
}

/* 1 true, 0 false, -1 absent or not a boolean. */
static int
jbool(const cJSON *o, const char *path)
{
	const cJSON *v = jp(o, path);

	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
}

static const char *
jcode(const struct hres *r)
{
	const char *s = jstr(r->json, "details.applicationError.code");

	return s != NULL ? s : "(none)";
}

static char *
st_token(struct st *st, const char *inst)
{
	struct hres r;
	char *body, *tok = NULL;

	body = xasprintf("{\"grant_type\":\"client_credentials\","
	    "\"client_id\":\"%s\",\"client_secret\":\"%s\","
	    "\"instance_id\":\"%s\"}", DEFAULT_APP_ID, DEFAULT_APP_SECRET,
	    inst);
	st_http(st, "POST", PATH_TOKEN, NULL, NULL, body, 5000, false, &r);
	if (r.status == 200 && jstr(r.json, "access_token") != NULL)
		tok = xstrdup(jstr(r.json, "access_token"));
	CHECK(st, tok != NULL, "token for %s: HTTP %ld", inst, r.status);
	hres_cleanup(&r);
	free(body);
	return tok != NULL ? tok : xstrdup("none");
}

static void
st_ctl(struct st *st, const char *method, const char *path,
    const char *body, struct hres *r)
{
	st_http(st, method, path, NULL, NULL, body, 10000, false, r);
}

/* POST a fault (JSON text); checks that it was accepted. */
static void
st_fault(struct st *st, const char *json)
{
	struct hres r;

	st_ctl(st, "POST", "/_sandbox/faults", json, &r);
	CHECK(st, r.status == 200, "fault %s accepted: %ld %s", json,
	    r.status, r.body);
	hres_cleanup(&r);
}

static char *
q_first(int limit, const char *filter, const char *order)
{
	return xasprintf("{\"query\":{\"sort\":[{\"fieldName\":"
	    "\"createdDate\",\"order\":\"%s\"}],\"cursorPaging\":"
	    "{\"limit\":%d}%s%s}}", order != NULL ? order : "ASC", limit,
	    filter != NULL ? ",\"filter\":" : "", filter != NULL ? filter : "");
}

static char *
q_next(int limit, const char *cursor)
{
	return xasprintf("{\"query\":{\"cursorPaging\":{\"limit\":%d,"
	    "\"cursor\":\"%s\"}}}", limit, cursor);
}

static void
st_get(struct st *st, const char *tok, const char *id, struct hres *r)
{
	char *path = xasprintf("%s/%s", PATH_REFUNDS, id);

	st_http(st, "GET", path, tok, NULL, NULL, 10000, false, r);
	free(path);
}

static void
st_query(struct st *st, const char *tok, const char *body, struct hres *r)
{
	st_http(st, "POST", PATH_QUERY, tok, NULL, body, 10000, false, r);
}

/* What a walk through every page saw. */
struct walk {
	size_t		 n;		/* refunds */
	size_t		 pages;
	size_t		 dups;
	bool		 ok;		/* every page well-formed */
	bool		 ordered;	/* createdDate strictly monotonic */
	char		 first_id[SB_ID_MAX];
	char		 last_id[SB_ID_MAX];
	char		 why[160];
	/* For threads. */
	struct st	*st;
	const char	*tok;
	int		 limit;
};

/* Page through a whole query.  Thread-safe: no checks, fresh handles. */
static void
st_walk(struct st *st, const char *tok, int limit, const char *filter,
    bool desc, struct walk *w)
{
	struct isotime prev, cur;
	const cJSON *a, *e;
	const char *id, *next, *cd;
	struct hres r;
	struct map seen;
	char *body;
	bool have_prev = false;
	int64_t count;
	int hn;

	memset(&seen, 0, sizeof(seen));
	w->n = w->pages = w->dups = 0;
	w->ok = w->ordered = true;
	w->first_id[0] = w->last_id[0] = w->why[0] = '\0';
	body = q_first(limit, filter, desc ? "DESC" : "ASC");
	for (w->pages = 0; w->pages < 200000; ) {
		st_http(st, "POST", PATH_QUERY, tok, NULL, body, 10000, true,
		    &r);
		w->pages++;
		a = jp(r.json, "refunds");
		count = jint(r.json, "pagingMetadata.count", -1);
		hn = jbool(r.json, "pagingMetadata.hasNext");
		next = jstr(r.json, "pagingMetadata.cursors.next");
		if (r.status != 200 || !cJSON_IsArray(a) || hn < 0 ||
		    count != cJSON_GetArraySize(a) || count > limit) {
			snprintf(w->why, sizeof(w->why), "page %zu: HTTP %ld "
			    "%.80s", w->pages, r.status, r.body);
			w->ok = false;
			hres_cleanup(&r);
			break;
		}
		if ((w->pages == 1) != (jp(r.json,
		    "pagingMetadata.cursors.prev") == NULL)) {
			snprintf(w->why, sizeof(w->why), "page %zu: prev "
			    "cursor wrong", w->pages);
			w->ok = false;
		}
		cJSON_ArrayForEach(e, a) {
			id = jstr(e, "id");
			cd = jstr(e, "createdDate");
			if (id == NULL || cd == NULL ||
			    isotime_parse(cd, &cur) != RS_OK) {
				w->ok = false;
				continue;
			}
			if (have_prev && (desc ? isotime_cmp(&cur, &prev) >= 0
			    : isotime_cmp(&cur, &prev) <= 0))
				w->ordered = false;
			prev = cur;
			have_prev = true;
			if (map_get(&seen, id) != NULL)
				w->dups++;
			else
				map_put(&seen, id, (void *)1);
			if (w->n == 0)
				snprintf(w->first_id, sizeof(w->first_id),
				    "%s", id);
			snprintf(w->last_id, sizeof(w->last_id), "%s", id);
			w->n++;
		}
		if (hn == 0) {
			if (next != NULL) {
				snprintf(w->why, sizeof(w->why), "last page "
				    "has a next cursor");
				w->ok = false;
			}
			hres_cleanup(&r);
			break;
		}
		if (next == NULL) {
			snprintf(w->why, sizeof(w->why), "hasNext without "
			    "next");
			w->ok = false;
			hres_cleanup(&r);
			break;
		}
		free(body);
		body = q_next(limit, next);
		hres_cleanup(&r);
	}
	free(body);
	map_cleanup(&seen, NULL);
}

static void *
st_walk_thread(void *arg)
{
	struct walk *w = arg;

	st_walk(w->st, w->tok, w->limit, NULL, false, w);
	return NULL;
}

/* ---- the webhook receiver ---- */

static enum MHD_Result
rx_access(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upsize, void **con_cls)
{
	static char ok[] = "ok";
	struct st *st = cls;
	struct buf *b = *con_cls;
	struct MHD_Response *resp;
	enum MHD_Result r;

	if (b == NULL) {
		b = xmalloc(sizeof(*b));
		buf_init(b, (size_t)1 << 20);
		*con_cls = b;
		return MHD_YES;
	}
	if (*upsize != 0) {
		(void)buf_append(b, upload, *upsize);
		*upsize = 0;
		return MHD_YES;
	}
	pthread_mutex_lock(&st->mtx);
	if (st->rx_n < ST_RX_MAX)
		st->rx_body[st->rx_n++] = xstrdup(b->data != NULL ? b->data :
		    "");
	pthread_mutex_unlock(&st->mtx);
	resp = MHD_create_response_from_buffer(2, ok, MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	r = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return r;
}

static void
rx_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct buf *b = *con_cls;

	if (b != NULL) {
		buf_cleanup(b);
		free(b);
	}
	*con_cls = NULL;
}

static size_t
rx_count(struct st *st)
{
	size_t n;

	pthread_mutex_lock(&st->mtx);
	n = st->rx_n;
	pthread_mutex_unlock(&st->mtx);
	return n;
}

/* Verify and decode a received token.  Caller cleans *ev on true. */
static bool
rx_decode(struct st *st, const char *tok, struct event *ev)
{
	enum jwtv_reason reason;
	cJSON *claims = NULL;
	const char *why;
	enum rs_status s;

	memset(ev, 0, sizeof(*ev));
	if (jwtv_verify(st->keys, tok, strlen(tok), clock_wall_s(), 60,
	    &claims, &reason) != RS_OK)
		return false;
	s = event_decode(claims, ev, &why);
	cJSON_Delete(claims);
	if (s != RS_OK) {
		event_cleanup(ev);
		return false;
	}
	return true;
}

/*
 * Wait up to 10 s for a received webhook of event type type about
 * refund id (NULL: any) with revision rev (< 0: any); decode it into
 * *ev (caller cleans).
 */
static bool
rx_find(struct st *st, const char *type, const char *id, int64_t rev,
    struct event *ev)
{
	int64_t deadline = clock_mono_ms() + 10000;
	size_t i, n;
	char *tok;

	do {
		n = rx_count(st);
		for (i = 0; i < n; i++) {
			pthread_mutex_lock(&st->mtx);
			tok = xstrdup(st->rx_body[i]);
			pthread_mutex_unlock(&st->mtx);
			if (rx_decode(st, tok, ev)) {
				if (strcmp(ev->event_type, type) == 0 &&
				    (id == NULL || (ev->kind == EVENT_REFUND &&
				    strcmp(ev->refund.id, id) == 0)) &&
				    (rev < 0 || (ev->refund.has_revision &&
				    ev->refund.revision == rev))) {
					free(tok);
					return true;
				}
				event_cleanup(ev);
			}
			free(tok);
		}
		tu_sleep_ms(20);
	} while (clock_mono_ms() < deadline);
	memset(ev, 0, sizeof(*ev));
	return false;
}

/* ---- the checks ---- */

static void
t_cli(struct st *st)
{
	struct sb_options o;
	char *l[SB_INSTANCES_MAX];
	size_t n, i;

	options_defaults(&o);
	CHECK(st, parse_listen("127.0.0.1:8080", &o) &&
	    strcmp(o.host, "127.0.0.1") == 0, "--listen 127.0.0.1:8080");
	CHECK(st, parse_listen("[::1]:0", &o) && strcmp(o.host, "[::1]") == 0,
	    "--listen [::1]:0");
	CHECK(st, parse_listen("localhost:1", &o), "--listen localhost:1");
	CHECK(st, !parse_listen("127.0.0.1", &o), "--listen without port");
	CHECK(st, !parse_listen("127.0.0.1:65536", &o), "--listen port 65536");
	CHECK(st, !parse_listen("example.com:80", &o), "--listen a name");
	CHECK(st, split_list("a,b,c", l, SB_INSTANCES_MAX, &n) && n == 3 &&
	    strcmp(l[2], "c") == 0, "split a,b,c");
	for (i = 0; i < n; i++)
		free(l[i]);
	CHECK(st, !split_list("a,,b", l, SB_INSTANCES_MAX, &n), "split a,,b");
	for (i = 0; i < n; i++)
		free(l[i]);
	CHECK(st, !split_list("a,", l, SB_INSTANCES_MAX, &n), "split a,");
	for (i = 0; i < n; i++)
		free(l[i]);
}

static void
t_token(struct st *st)
{
	struct hres r;
	char *rid;

	st_http(st, "POST", PATH_TOKEN, NULL, NULL, "{\"grant_type\":"
	    "\"client_credentials\",\"client_id\":\"sandbox-app\","
	    "\"client_secret\":\"sandbox-secret\",\"instance_id\":\"alpha\"}",
	    5000, false, &r);
	CHECK(st, r.status == 200, "token: 200 (%ld)", r.status);
	CHECK(st, jstr(r.json, "access_token") != NULL &&
	    strncmp(jstr(r.json, "access_token"), "OauthNG.JWS.", 12) == 0,
	    "token: OauthNG.JWS. prefix");
	CHECK(st, jeq(r.json, "token_type", "Bearer") &&
	    jint(r.json, "expires_in", 0) == DEFAULT_TOKEN_TTL,
	    "token: Bearer, expires_in 14400");
	rid = st_header(&r, "x-wix-request-id");
	CHECK(st, rid != NULL && strlen(rid) == 32, "x-wix-request-id on the "
	    "token answer");
	free(rid);
	hres_cleanup(&r);

	st_http(st, "POST", PATH_TOKEN, NULL, NULL, "{\"grant_type\":"
	    "\"client_credentials\",\"client_id\":\"sandbox-app\","
	    "\"client_secret\":\"wrong\",\"instance_id\":\"alpha\"}",
	    5000, false, &r);
	CHECK(st, r.status == 401 && strcmp(jcode(&r), "INVALID_CLIENT") == 0,
	    "token: wrong secret 401 INVALID_CLIENT (%ld %s)", r.status,
	    jcode(&r));
	hres_cleanup(&r);
	st_http(st, "POST", PATH_TOKEN, NULL, NULL, "{\"grant_type\":"
	    "\"password\",\"client_id\":\"sandbox-app\","
	    "\"client_secret\":\"sandbox-secret\",\"instance_id\":\"alpha\"}",
	    5000, false, &r);
	CHECK(st, r.status == 400 && jeq(r.json,
	    "details.validationError.fieldViolations.0.field", "grant_type"),
	    "token: bad grant_type 400 validationError");
	hres_cleanup(&r);
	st_http(st, "POST", PATH_TOKEN, NULL, NULL, "{\"grant_type\":"
	    "\"client_credentials\",\"client_id\":\"sandbox-app\","
	    "\"client_secret\":\"sandbox-secret\",\"instance_id\":\"nope\"}",
	    5000, false, &r);
	CHECK(st, r.status == 400 && strcmp(jcode(&r), "INVALID_INSTANCE") ==
	    0, "token: unknown instance 400");
	hres_cleanup(&r);
	st_http(st, "POST", PATH_TOKEN, NULL, NULL, "{\"grant_type\":", 5000,
	    false, &r);
	CHECK(st, r.status == 400 && jstr(r.json, "message") != NULL &&
	    jp(r.json, "details") != NULL, "token: broken JSON 400 "
	    "{message, details}");
	hres_cleanup(&r);
	st_http(st, "GET", PATH_TOKEN, NULL, NULL, NULL, 5000, false, &r);
	CHECK(st, r.status == 405, "token: GET 405 (%ld)", r.status);
	hres_cleanup(&r);
}

static void
t_auth(struct st *st)
{
	struct hres r;
	char *tok = st_token(st, "alpha"), *bearer, *old;

	st_get(st, NULL, "rf-alpha-000001", &r);
	CHECK(st, r.status == 401 && strcmp(jcode(&r), "UNAUTHENTICATED") ==
	    0, "no Authorization: 401 (%ld %s)", r.status, jcode(&r));
	hres_cleanup(&r);
	bearer = xasprintf("Bearer %s", tok);
	st_get(st, bearer, "rf-alpha-000001", &r);
	CHECK(st, r.status == 401 && strcmp(jcode(&r), "INVALID_TOKEN") == 0 &&
	    strstr(r.body, "Bearer") != NULL, "Bearer prefix: 401 with a "
	    "hint");
	hres_cleanup(&r);
	free(bearer);
	st_get(st, "OauthNG.JWS.nope", "rf-alpha-000001", &r);
	CHECK(st, r.status == 401 && strcmp(jcode(&r), "INVALID_TOKEN") == 0,
	    "unknown token: 401");
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 200, "token works: 200 (%ld)", r.status);
	hres_cleanup(&r);
	st_http(st, "GET", PATH_REFUNDS "/rf-beta-000001", "sandbox-api-key",
	    "wix-site-id: beta", NULL, 5000, false, &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.id",
	    "rf-beta-000001"), "API key + wix-site-id: 200 (%ld)", r.status);
	hres_cleanup(&r);
	st_http(st, "GET", PATH_REFUNDS "/rf-beta-000001", "sandbox-api-key",
	    "wix-site-id: nope", NULL, 5000, false, &r);
	CHECK(st, r.status == 401, "API key + unknown site: 401");
	hres_cleanup(&r);
	st_http(st, "GET", PATH_REFUNDS "/rf-beta-000001", "wrong-api-key",
	    "wix-site-id: beta", NULL, 5000, false, &r);
	CHECK(st, r.status == 401, "wrong API key: 401");
	hres_cleanup(&r);

	/* expire_tokens: every issued token expires at once. */
	st_fault(st, "{\"fault\":\"expire_tokens\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 401 && strcmp(jcode(&r), "EXPIRED_TOKEN") == 0,
	    "expire_tokens: 401 EXPIRED_TOKEN (%ld %s)", r.status, jcode(&r));
	hres_cleanup(&r);
	old = tok;
	tok = st_token(st, "alpha");
	CHECK(st, strcmp(old, tok) != 0, "a new token differs");
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 200, "refreshed token: 200");
	hres_cleanup(&r);
	free(old);
	free(tok);
}

static void
t_get(struct st *st)
{
	struct isotime t;
	struct hres r, r2;
	char *tok = st_token(st, "alpha"), *ty = st_token(st, "yen");
	char *td = st_token(st, "dinar");
	const char *amt;
	int64_t minor;

	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.id",
	    "rf-alpha-000001") && jeq(r.json, "refund.chargeId",
	    "ch-alpha-000001") && jeq(r.json, "refund.currencyCode", "USD"),
	    "GET seeded refund: id, chargeId, currencyCode");
	amt = jstr(r.json, "refund.amount");
	CHECK(st, amt != NULL && decimals_of(amt) == 2 &&
	    money_to_minor(amt, "USD", &minor) == RS_OK && minor >= 100 &&
	    minor < 100000, "USD amount has 2 decimals: %s",
	    amt != NULL ? amt : "-");
	CHECK(st, jstr(r.json, "refund.revision") != NULL &&
	    strnum_i64(jstr(r.json, "refund.revision"), 1, 3, &minor) == NULL,
	    "revision is a string 1..3");
	CHECK(st, jstr(r.json, "refund.createdDate") != NULL &&
	    isotime_parse(jstr(r.json, "refund.createdDate"), &t) == RS_OK &&
	    t.sec == SEED_BASE_MS / 1000,
	    "createdDate is ISO-8601, 2024-01-01");
	CHECK(st, jstr(r.json, "refund.status") != NULL &&
	    jbool(r.json, "refund.full") == 0, "status and full present");
	st_get(st, tok, "rf-alpha-000001", &r2);
	CHECK(st, r2.body != NULL && strcmp(r.body, r2.body) == 0,
	    "a seeded refund is the same every time");
	hres_cleanup(&r);
	hres_cleanup(&r2);
	st_get(st, tok, "rf-alpha-000250", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.chargeId",
	    "ch-alpha-000125"), "refund 250 is on charge 125");
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-000251", &r);
	CHECK(st, r.status == 404 && strcmp(jcode(&r), "REFUND_NOT_FOUND") ==
	    0, "GET past the seed: 404");
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-1", &r);
	CHECK(st, r.status == 404, "GET a non-canonical id: 404");
	hres_cleanup(&r);
	st_get(st, tok, "rf-beta-000001", &r);
	CHECK(st, r.status == 404, "GET another instance's refund: 404");
	hres_cleanup(&r);
	st_get(st, ty, "rf-yen-000001", &r);
	amt = jstr(r.json, "refund.amount");
	CHECK(st, amt != NULL && strchr(amt, '.') == NULL &&
	    jeq(r.json, "refund.currencyCode", "JPY"), "JPY amount has no "
	    "decimals: %s", amt != NULL ? amt : "-");
	hres_cleanup(&r);
	st_get(st, td, "rf-dinar-000001", &r);
	amt = jstr(r.json, "refund.amount");
	CHECK(st, amt != NULL && decimals_of(amt) == 3 &&
	    jeq(r.json, "refund.currencyCode", "KWD"), "KWD amount has 3 "
	    "decimals: %s", amt != NULL ? amt : "-");
	hres_cleanup(&r);
	free(tok);
	free(ty);
	free(td);
}

static void
t_query(struct st *st)
{
	struct walk w;
	struct hres r, r2;
	char *tok = st_token(st, "alpha"), *tb = st_token(st, "beta");
	char *body, *cur, *bad;

	st_walk(st, tok, 100, NULL, false, &w);
	CHECK(st, w.ok && w.n == 250 && w.pages == 3 && w.dups == 0 &&
	    w.ordered, "walk alpha by 100: 250 refunds in 3 pages, ordered "
	    "(%zu in %zu, %s)", w.n, w.pages, w.why);
	CHECK(st, strcmp(w.first_id, "rf-alpha-000001") == 0 &&
	    strcmp(w.last_id, "rf-alpha-000250") == 0, "walk: first and last");
	st_walk(st, tok, 7, NULL, true, &w);
	CHECK(st, w.ok && w.n == 250 && w.dups == 0 && w.ordered &&
	    strcmp(w.first_id, "rf-alpha-000250") == 0, "walk DESC by 7 "
	    "(%zu, %s)", w.n, w.why);

	st_query(st, tok, "{\"query\":{}}", &r);
	CHECK(st, r.status == 200 && jint(r.json, "pagingMetadata.count", 0) ==
	    SB_PAGE_DEFAULT && jbool(r.json, "pagingMetadata.hasNext") == 1,
	    "no limit: 50 a page");
	hres_cleanup(&r);

	body = q_first(100, NULL, NULL);
	st_query(st, tok, body, &r);
	free(body);
	CHECK(st, r.status == 200 && jint(r.json, "pagingMetadata.count", 0) ==
	    100 && jstr(r.json, "pagingMetadata.cursors.next") != NULL &&
	    jp(r.json, "pagingMetadata.cursors.prev") == NULL,
	    "first page: 100, next, no prev");
	cur = xstrdup(jstr(r.json, "pagingMetadata.cursors.next") != NULL ?
	    jstr(r.json, "pagingMetadata.cursors.next") : "x");
	hres_cleanup(&r);

	body = q_first(101, NULL, NULL);
	st_query(st, tok, body, &r);
	free(body);
	CHECK(st, r.status == 400 && jeq(r.json,
	    "details.validationError.fieldViolations.0.field",
	    "query.cursorPaging.limit") && jeq(r.json,
	    "details.validationError.fieldViolations.0.violatedRule", "MAX"),
	    "limit 101: 400 MAX");
	hres_cleanup(&r);
	body = q_first(0, NULL, NULL);
	st_query(st, tok, body, &r);
	free(body);
	CHECK(st, r.status == 400, "limit 0: 400");
	hres_cleanup(&r);

	body = xasprintf("{\"query\":{\"cursorPaging\":{\"limit\":10,"
	    "\"cursor\":\"%s\"},\"filter\":{\"chargeId\":\"x\"}}}", cur);
	st_query(st, tok, body, &r);
	free(body);
	CHECK(st, r.status == 400 && jeq(r.json,
	    "details.validationError.fieldViolations.0.field", "query.filter"),
	    "cursor + filter: 400");
	hres_cleanup(&r);
	body = xasprintf("{\"query\":{\"cursorPaging\":{\"limit\":10,"
	    "\"cursor\":\"%s\"},\"sort\":[{\"fieldName\":\"createdDate\"}]}}",
	    cur);
	st_query(st, tok, body, &r);
	free(body);
	CHECK(st, r.status == 400 && jeq(r.json,
	    "details.validationError.fieldViolations.0.field", "query.sort"),
	    "cursor + sort: 400");
	hres_cleanup(&r);

	body = q_next(100, cur);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refunds.0.id",
	    "rf-alpha-000101") && jstr(r.json, "pagingMetadata.cursors.prev") !=
	    NULL, "second page starts at 101, has prev");
	st_query(st, tok, body, &r2);
	{
		char *a = jp(r.json, "refunds") != NULL ?
		    json_print(jp(r.json, "refunds")) : xstrdup("a");
		char *b = jp(r2.json, "refunds") != NULL ?
		    json_print(jp(r2.json, "refunds")) : xstrdup("b");

		CHECK(st, r2.status == 200 && strcmp(a, b) == 0,
		    "a cursor can be used twice: the same page");
		free(a);
		free(b);
	}
	hres_cleanup(&r);
	hres_cleanup(&r2);
	free(body);
	body = q_next(100, cur);
	st_query(st, tb, body, &r);
	CHECK(st, r.status == 400 && strcmp(jcode(&r), "INVALID_CURSOR") == 0 &&
	    jeq(r.json, "details.applicationError.description",
	    "The cursor is not valid"), "another instance's cursor: 400 "
	    "INVALID_CURSOR");
	hres_cleanup(&r);
	free(body);
	bad = xstrdup(cur);
	bad[strlen(bad) / 2] = bad[strlen(bad) / 2] == 'A' ? 'B' : 'A';
	body = q_next(100, bad);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 400 && strcmp(jcode(&r), "INVALID_CURSOR") == 0,
	    "tampered cursor: 400 INVALID_CURSOR");
	hres_cleanup(&r);
	free(body);
	free(bad);
	body = q_next(100, "!!not base64!!");
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 400 && strcmp(jcode(&r), "INVALID_CURSOR") == 0,
	    "garbage cursor: 400 INVALID_CURSOR");
	hres_cleanup(&r);
	free(body);

	st_query(st, tok, "{\"query\":{\"filter\":{\"status\":\"x\"}}}", &r);
	CHECK(st, r.status == 400, "filter on status: 400");
	hres_cleanup(&r);
	st_query(st, tok, "{\"query\":{\"sort\":[{\"fieldName\":\"amount\"}]}}",
	    &r);
	CHECK(st, r.status == 400, "sort on amount: 400");
	hres_cleanup(&r);
	st_query(st, tok, "{\"query\":{\"paging\":{\"offset\":10}}}", &r);
	CHECK(st, r.status == 400, "offset paging: 400");
	hres_cleanup(&r);
	st_query(st, tok, "{\"query\":{\"cursorPaging\":{\"limit\":\"10\"}}}",
	    &r);
	CHECK(st, r.status == 200 && jint(r.json, "pagingMetadata.count", 0) ==
	    10, "limit as a string is read (Wix's int64 convention)");
	hres_cleanup(&r);
	st_query(st, tok, "[]", &r);
	CHECK(st, r.status == 400, "body not an object: 400");
	hres_cleanup(&r);
	free(cur);
	free(tok);
	free(tb);
}

static void
t_filter(struct st *st)
{
	struct walk w;
	struct hres r;
	char *tok = st_token(st, "alpha"), *body;

	body = q_first(100, "{\"chargeId\":\"ch-alpha-000001\"}", NULL);
	st_query(st, tok, body, &r);
	free(body);
	CHECK(st, r.status == 200 && jint(r.json, "pagingMetadata.count", 0) ==
	    2 && jeq(r.json, "refunds.0.id", "rf-alpha-000001") && jeq(r.json,
	    "refunds.1.id", "rf-alpha-000002") && jbool(r.json,
	    "pagingMetadata.hasNext") == 0 && jp(r.json,
	    "pagingMetadata.cursors.next") == NULL, "filter chargeId: its 2 "
	    "refunds, no next");
	hres_cleanup(&r);
	body = q_first(100, "{\"chargeId\":{\"$eq\":\"ch-alpha-000002\"}}",
	    NULL);
	st_query(st, tok, body, &r);
	free(body);
	CHECK(st, r.status == 200 && jint(r.json, "pagingMetadata.count", 0) ==
	    2 && jeq(r.json, "refunds.0.id", "rf-alpha-000003"),
	    "filter $eq");
	hres_cleanup(&r);
	st_walk(st, tok, 1, "{\"chargeId\":{\"$in\":[\"ch-alpha-000003\","
	    "\"ch-alpha-000001\",\"ch-alpha-000003\",\"ch-nope\"]}}", false,
	    &w);
	CHECK(st, w.ok && w.n == 4 && w.pages == 4 && w.dups == 0 &&
	    strcmp(w.first_id, "rf-alpha-000001") == 0 &&
	    strcmp(w.last_id, "rf-alpha-000006") == 0, "filter $in by 1: 4 "
	    "refunds over 4 pages, cursor keeps the filter (%zu %zu %s)", w.n,
	    w.pages, w.why);
	st_walk(st, tok, 100, "{\"chargeId\":\"ch-nope\"}", false, &w);
	CHECK(st, w.ok && w.n == 0 && w.pages == 1, "unknown charge: empty");
	st_walk(st, tok, 3, "{\"chargeId\":\"ch-alpha-000130\"}", false, &w);
	CHECK(st, w.ok && w.n == 0, "free charge: no refunds yet");
	st_query(st, tok, "{\"query\":{\"filter\":{\"chargeId\":{\"$gt\":"
	    "\"a\"}}}}", &r);
	CHECK(st, r.status == 400, "filter $gt: 400");
	hres_cleanup(&r);
	free(tok);
}

/* Create Refund; returns the HTTP status, the answer in *r. */
static long
st_create(struct st *st, const char *tok, const char *body, struct hres *r)
{
	st_http(st, "POST", PATH_REFUNDS, tok, NULL, body, 10000, false, r);
	return r->status;
}

static void
st_charge(struct st *st, const char *inst, const char *id, struct hres *r)
{
	char *path = xasprintf("/_sandbox/charges?instance=%s&id=%s", inst,
	    id);

	st_ctl(st, "GET", path, NULL, r);
	free(path);
}

/* The sum of the SUCCEEDED refunds of charge, from Query Refunds, as a
 * client computes previouslyRefundedAmount.  Caller frees. */
static char *
st_refunded(struct st *st, const char *tok, const char *charge,
    const char *cur)
{
	const cJSON *e;
	struct hres r;
	char *f = xasprintf("{\"chargeId\":\"%s\"}", charge), *body, out[64];
	int64_t sum = 0, m;

	body = q_first(100, f, NULL);
	st_query(st, tok, body, &r);
	cJSON_ArrayForEach(e, jp(r.json, "refunds"))
		if (jeq(e, "status", "SUCCEEDED") && money_to_minor(jstr(e,
		    "amount"), cur, &m) == RS_OK)
			sum += m;
	hres_cleanup(&r);
	free(body);
	free(f);
	if (money_format(sum, money_exponent(cur), out, sizeof(out)) != RS_OK)
		return xstrdup("?");
	return xstrdup(out);
}

static void
t_create(struct st *st)
{
	struct hres r, c;
	struct event ev;
	char *tok = st_token(st, "alpha"), *ty = st_token(st, "yen");
	char *td = st_token(st, "dinar"), *body, *total = NULL, *prev;
	char id[SB_ID_MAX], cid[SB_ID_MAX];
	bool found;
	int k;

	/* A full refund of a free charge. */
	st_charge(st, "alpha", "ch-alpha-000126", &c);
	CHECK(st, c.status == 200 && jeq(c.json, "refunded", "0.00") &&
	    jstr(c.json, "total") != NULL, "control: charge 126 is free");
	total = xstrdup(jstr(c.json, "total") != NULL ? jstr(c.json, "total") :
	    "?");
	hres_cleanup(&c);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000126\","
	    "\"reason\":\"customer request\"}}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.id",
	    "rf-alpha-000251") && jeq(r.json, "refund.amount", total) &&
	    jbool(r.json, "refund.full") == 1 && jeq(r.json, "refund.status",
	    "SUCCEEDED") && jeq(r.json, "refund.revision", "1") &&
	    jeq(r.json, "refund.reason", "customer request"),
	    "full refund: 200, the whole %s, SUCCEEDED, revision \"1\" "
	    "(%ld %.200s)", total, r.status, r.body);
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-000251", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.amount", total),
	    "the created refund can be read");
	hres_cleanup(&r);
	prev = st_refunded(st, tok, "ch-alpha-000126", "USD");
	CHECK(st, strcmp(prev, total) == 0, "Query Refunds by chargeId sees "
	    "it (%s)", prev);
	free(prev);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000126\"}}",
	    &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r), "CHARGE_REFUNDED") == 0,
	    "second full refund: 428 CHARGE_REFUNDED (%ld %s)", r.status,
	    jcode(&r));
	hres_cleanup(&r);
	found = rx_find(st, TU_EVT_CREATED, "rf-alpha-000251", 1, &ev);
	CHECK(st, found && strcmp(ev.refund.amount, total) == 0 &&
	    strcmp(ev.instance_id, "alpha") == 0 && ev.has_sequence &&
	    ev.sequence == 1, "Refund Created webhook: verifies, decodes, "
	    "amount %s", total);
	if (found)
		event_cleanup(&ev);
	free(total);

	/* Partial refunds and previouslyRefundedAmount. */
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1.00\"},"
	    "\"previouslyRefundedAmount\":\"0.00\"}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.amount", "1.00") &&
	    jbool(r.json, "refund.full") == 0, "partial 1.00: 200 (%ld %.200s)",
	    r.status, r.body);
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"currencyCode\":\"USD\",\"amount\":\"2.50\"},"
	    "\"previouslyRefundedAmount\":\"0.00\"}", &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r),
	    "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH") == 0 && jp(r.json,
	    "details.applicationError.data") != NULL && jstr(r.json,
	    "message") != NULL, "stale previouslyRefundedAmount: 428 "
	    "MISMATCH, WIX.md §6 shape");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"currencyCode\":\"USD\",\"amount\":\"2.50\"}}", &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r),
	    "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH") == 0, "partial without "
	    "previouslyRefundedAmount: MISMATCH");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"currencyCode\":\"USD\",\"amount\":\"2.5\"},"
	    "\"previouslyRefundedAmount\":\"1\"}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.amount", "2.50"),
	    "previouslyRefundedAmount \"1\" equals 1.00 exactly: 200");
	hres_cleanup(&r);
	st_charge(st, "alpha", "ch-alpha-000127", &c);
	CHECK(st, jeq(c.json, "refunded", "3.50"), "control: 3.50 refunded");
	total = xstrdup(jstr(c.json, "total") != NULL ? jstr(c.json, "total") :
	    "0");
	hres_cleanup(&c);
	body = xasprintf("{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"currencyCode\":\"USD\",\"amount\":\"%s\"},"
	    "\"previouslyRefundedAmount\":\"3.50\"}", total);
	st_create(st, tok, body, &r);
	CHECK(st, r.status == 400 && strcmp(jcode(&r),
	    "REFUND_AMOUNT_OUT_OF_BOUNDS") == 0, "more than left: 400 "
	    "REFUND_AMOUNT_OUT_OF_BOUNDS (%ld %s)", r.status, jcode(&r));
	hres_cleanup(&r);
	free(body);
	free(total);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"amount\":\"1.00\"},\"previouslyRefundedAmount\":\"3.50\"}", &r);
	CHECK(st, r.status == 400 && strcmp(jcode(&r),
	    "REFUND_CURRENCY_MISSING") == 0, "amount without currency: "
	    "REFUND_CURRENCY_MISSING");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"currencyCode\":\"EUR\",\"amount\":\"1.00\"},"
	    "\"previouslyRefundedAmount\":\"3.50\"}", &r);
	CHECK(st, r.status == 400 && strcmp(jcode(&r),
	    "REFUND_CURRENCY_MISMATCH") == 0, "EUR on a USD charge: "
	    "REFUND_CURRENCY_MISMATCH");
	hres_cleanup(&r);
	{
		static const struct {
			const char *amount, *rule;
		} bad[] = {
			{ "\"12.345\"", "FORMAT" }, { "\"abc\"", "FORMAT" },
			{ "\"0\"", "MIN" }, { "\"0.00\"", "MIN" },
			{ "12.5", "FORMAT" }, { "\"1.123456789\"", "FORMAT" },
			{ "\"-1.00\"", "FORMAT" }, { "\"01.00\"", "FORMAT" },
		};

		for (k = 0; k < (int)(sizeof(bad) / sizeof(bad[0])); k++) {
			body = xasprintf("{\"refund\":{\"chargeId\":"
			    "\"ch-alpha-000127\",\"currencyCode\":\"USD\","
			    "\"amount\":%s},\"previouslyRefundedAmount\":"
			    "\"3.50\"}", bad[k].amount);
			st_create(st, tok, body, &r);
			CHECK(st, r.status == 400 && jeq(r.json,
			    "details.validationError.fieldViolations.0.field",
			    "refund.amount") && jeq(r.json, "details."
			    "validationError.fieldViolations.0.violatedRule",
			    bad[k].rule) && jstr(r.json, "details."
			    "validationError.fieldViolations.0.description") !=
			    NULL, "amount %s: 400 validationError %s",
			    bad[k].amount, bad[k].rule);
			hres_cleanup(&r);
			free(body);
		}
	}
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\"},"
	    "\"previouslyRefundedAmount\":\"3.50\"}", &r);
	CHECK(st, r.status == 200 && jbool(r.json, "refund.full") == 1,
	    "full refund of the rest: 200");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000127\","
	    "\"currencyCode\":\"USD\",\"amount\":\"0.01\"},"
	    "\"previouslyRefundedAmount\":\"3.50\"}", &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r), "CHARGE_REFUNDED") == 0,
	    "partial on a refunded charge: CHARGE_REFUNDED");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-nope\"}}", &r);
	CHECK(st, r.status == 404 && strcmp(jcode(&r), "CHARGE_NOT_FOUND") == 0,
	    "unknown charge: 404 CHARGE_NOT_FOUND");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{}}", &r);
	CHECK(st, r.status == 400 && jeq(r.json,
	    "details.validationError.fieldViolations.0.field",
	    "refund.chargeId"), "no chargeId: 400 refund.chargeId");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":", &r);
	CHECK(st, r.status == 400, "broken JSON: 400");
	hres_cleanup(&r);

	/* PENDING: one at a time; settling sends Refund Updated. */
	st_ctl(st, "POST", "/_sandbox/charges", "{\"instance\":\"alpha\","
	    "\"id\":\"ch-alpha-000128\",\"pending\":true}", &c);
	CHECK(st, c.status == 200 && jbool(c.json, "pending") == 1,
	    "control: charge 128 pending");
	hres_cleanup(&c);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000128\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1.00\"},"
	    "\"previouslyRefundedAmount\":\"0\"}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.status", "PENDING"),
	    "refund on a pending charge: PENDING");
	snprintf(id, sizeof(id), "%s", jstr(r.json, "refund.id") != NULL ?
	    jstr(r.json, "refund.id") : "?");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000128\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1.00\"},"
	    "\"previouslyRefundedAmount\":\"0\"}", &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r),
	    "CHARGE_REFUND_IN_PROGRESS") == 0, "second refund while one is "
	    "PENDING: CHARGE_REFUND_IN_PROGRESS");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/charges", "{\"instance\":\"alpha\","
	    "\"id\":\"ch-alpha-000128\",\"pending\":false,"
	    "\"settle\":\"SUCCEEDED\"}", &c);
	CHECK(st, c.status == 200 && jeq(c.json, "refunded", "1.00") &&
	    jint(c.json, "pendingRefunds", -1) == 0, "settle: 1.00 refunded");
	hres_cleanup(&c);
	st_get(st, tok, id, &r);
	CHECK(st, jeq(r.json, "refund.status", "SUCCEEDED") && jeq(r.json,
	    "refund.revision", "2"), "settled refund: SUCCEEDED, revision 2");
	hres_cleanup(&r);
	found = rx_find(st, TU_EVT_UPDATED, id, 2, &ev);
	CHECK(st, found && strcmp(ev.refund.status, "SUCCEEDED") == 0,
	    "Refund Updated webhook after settling");
	if (found)
		event_cleanup(&ev);

	/* Forced error codes. */
	st_ctl(st, "POST", "/_sandbox/charges", "{\"instance\":\"alpha\","
	    "\"id\":\"ch-alpha-000129\",\"error\":\"CHARGE_DISPUTED\","
	    "\"count\":1}", &c);
	hres_cleanup(&c);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000129\"}}",
	    &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r), "CHARGE_DISPUTED") == 0,
	    "forced CHARGE_DISPUTED: 428");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000129\"}}",
	    &r);
	CHECK(st, r.status == 200, "count 1: the next one goes through");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/charges", "{\"instance\":\"alpha\","
	    "\"id\":\"ch-alpha-000130\",\"error\":\"PROVIDER_DOWN\","
	    "\"status\":503}", &c);
	hres_cleanup(&c);
	for (k = 0; k < 2; k++) {
		st_create(st, tok, "{\"refund\":{\"chargeId\":"
		    "\"ch-alpha-000130\"}}", &r);
		CHECK(st, r.status == 503 && strcmp(jcode(&r),
		    "PROVIDER_DOWN") == 0, "forced PROVIDER_DOWN with status "
		    "503, sticky (%d)", k);
		hres_cleanup(&r);
	}
	st_ctl(st, "POST", "/_sandbox/charges", "{\"instance\":\"alpha\","
	    "\"id\":\"ch-alpha-000130\",\"error\":\"\"}", &c);
	hres_cleanup(&c);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"ch-alpha-000130\"}}",
	    &r);
	CHECK(st, r.status == 200, "cleared: 200");
	hres_cleanup(&r);
	for (k = 0; k < (int)(sizeof(app_errors) / sizeof(app_errors[0]));
	    k++) {
		body = xasprintf("{\"instance\":\"alpha\",\"id\":"
		    "\"ch-alpha-000131\",\"error\":\"%s\",\"count\":1}",
		    app_errors[k].code);
		st_ctl(st, "POST", "/_sandbox/charges", body, &c);
		hres_cleanup(&c);
		free(body);
		st_create(st, tok, "{\"refund\":{\"chargeId\":"
		    "\"ch-alpha-000131\"}}", &r);
		CHECK(st, r.status == (long)app_errors[k].status &&
		    strcmp(jcode(&r), app_errors[k].code) == 0,
		    "forced %s: %u", app_errors[k].code, app_errors[k].status);
		hres_cleanup(&r);
	}

	/* Seeded charges: sums from Query Refunds are what Wix expects. */
	found = false;
	for (k = 1; k <= 60 && !found; k++) {
		snprintf(cid, sizeof(cid), "ch-alpha-%06d", k);
		st_charge(st, "alpha", cid, &c);
		if (jint(c.json, "pendingRefunds", 1) == 0 &&
		    !jeq(c.json, "left", "0.00"))
			found = true;
		hres_cleanup(&c);
	}
	CHECK(st, found, "a seeded charge with something left");
	prev = st_refunded(st, tok, cid, "USD");
	body = xasprintf("{\"refund\":{\"chargeId\":\"%s\",\"currencyCode\":"
	    "\"USD\",\"amount\":\"0.01\"},\"previouslyRefundedAmount\":"
	    "\"%s\"}", cid, prev);
	st_create(st, tok, body, &r);
	CHECK(st, r.status == 200, "partial on seeded %s with "
	    "previouslyRefundedAmount %s from Query Refunds: 200 (%ld %s)",
	    cid, prev, r.status, jcode(&r));
	hres_cleanup(&r);
	free(body);
	free(prev);
	found = false;
	for (k = 1; k <= 125 && !found; k++) {
		snprintf(cid, sizeof(cid), "ch-alpha-%06d", k);
		st_charge(st, "alpha", cid, &c);
		if (jint(c.json, "pendingRefunds", 0) > 0)
			found = true;
		hres_cleanup(&c);
	}
	CHECK(st, found, "a seeded charge with a PENDING refund");
	body = xasprintf("{\"refund\":{\"chargeId\":\"%s\"}}", cid);
	st_create(st, tok, body, &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r),
	    "CHARGE_REFUND_IN_PROGRESS") == 0, "full refund on seeded %s: "
	    "CHARGE_REFUND_IN_PROGRESS", cid);
	hres_cleanup(&r);
	free(body);
	found = false;
	for (k = 1; k <= 125 && !found; k++) {
		snprintf(cid, sizeof(cid), "ch-alpha-%06d", k);
		st_charge(st, "alpha", cid, &c);
		if (jint(c.json, "pendingRefunds", 1) == 0 &&
		    jeq(c.json, "left", "0.00"))
			found = true;
		hres_cleanup(&c);
	}
	CHECK(st, found, "a seeded charge refunded in full");
	body = xasprintf("{\"refund\":{\"chargeId\":\"%s\"}}", cid);
	st_create(st, tok, body, &r);
	CHECK(st, r.status == 428 && strcmp(jcode(&r), "CHARGE_REFUNDED") == 0,
	    "full refund on seeded %s: CHARGE_REFUNDED", cid);
	hres_cleanup(&r);
	free(body);

	/* Zero- and three-decimal currencies. */
	st_create(st, ty, "{\"refund\":{\"chargeId\":\"ch-yen-000126\","
	    "\"currencyCode\":\"JPY\",\"amount\":\"100\"},"
	    "\"previouslyRefundedAmount\":\"0\"}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.amount", "100") &&
	    jeq(r.json, "refund.currencyCode", "JPY"), "JPY 100: 200");
	hres_cleanup(&r);
	st_create(st, ty, "{\"refund\":{\"chargeId\":\"ch-yen-000126\","
	    "\"currencyCode\":\"JPY\",\"amount\":\"100.5\"},"
	    "\"previouslyRefundedAmount\":\"100\"}", &r);
	CHECK(st, r.status == 400 && jeq(r.json,
	    "details.validationError.fieldViolations.0.field",
	    "refund.amount"), "JPY 100.5: 400");
	hres_cleanup(&r);
	st_create(st, ty, "{\"refund\":{\"chargeId\":\"ch-yen-000126\"},"
	    "\"previouslyRefundedAmount\":\"100.00\"}", &r);
	CHECK(st, r.status == 200 && jstr(r.json, "refund.amount") != NULL &&
	    strchr(jstr(r.json, "refund.amount"), '.') == NULL,
	    "JPY full refund of the rest, no decimals");
	hres_cleanup(&r);
	st_create(st, td, "{\"refund\":{\"chargeId\":\"ch-dinar-000126\","
	    "\"currencyCode\":\"KWD\",\"amount\":\"1.234\"},"
	    "\"previouslyRefundedAmount\":\"0.000\"}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.amount", "1.234"),
	    "KWD 1.234: 200");
	hres_cleanup(&r);
	st_create(st, td, "{\"refund\":{\"chargeId\":\"ch-dinar-000126\","
	    "\"currencyCode\":\"KWD\",\"amount\":\"1.2345\"},"
	    "\"previouslyRefundedAmount\":\"1.234\"}", &r);
	CHECK(st, r.status == 400, "KWD 1.2345: 400");
	hres_cleanup(&r);
	free(tok);
	free(ty);
	free(td);
}

static void
t_growth(struct st *st)
{
	struct hres r;
	char *tok = st_token(st, "beta"), *body;
	const char *next;
	const cJSON *e;
	size_t n = 0;
	int pages = 0;
	bool seen_new = false;

	body = q_first(100, NULL, NULL);
	for (pages = 0; pages < 10; pages++) {
		st_query(st, tok, body, &r);
		free(body);
		body = NULL;
		cJSON_ArrayForEach(e, jp(r.json, "refunds")) {
			n++;
			if (jeq(e, "id", "rf-beta-000251"))
				seen_new = true;
		}
		if (pages == 0) {
			struct hres c;

			st_create(st, tok, "{\"refund\":{\"chargeId\":"
			    "\"ch-beta-000126\"}}", &c);
			CHECK(st, c.status == 200 && jeq(c.json, "refund.id",
			    "rf-beta-000251"), "created mid-query");
			hres_cleanup(&c);
		}
		next = jstr(r.json, "pagingMetadata.cursors.next");
		if (jbool(r.json, "pagingMetadata.hasNext") != 1 ||
		    next == NULL) {
			hres_cleanup(&r);
			break;
		}
		body = q_next(100, next);
		hres_cleanup(&r);
	}
	free(body);
	CHECK(st, n == 251 && seen_new, "a refund created after the query "
	    "began shows up at the end (%zu)", n);
	free(tok);
}

static void
t_faults(struct st *st)
{
	struct hres r, r2;
	char *tok = st_token(st, "alpha"), *tb = st_token(st, "beta");
	char *h, *body, *c1, *c2;
	int k;

	st_fault(st, "{\"fault\":\"429\",\"retry_after\":3,"
	    "\"endpoint\":\"get\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	h = st_header(&r, "Retry-After");
	CHECK(st, r.status == 429 && h != NULL && strcmp(h, "3") == 0,
	    "429 with Retry-After: 3");
	free(h);
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 200, "count 1: then 200");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"429\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	h = st_header(&r, "Retry-After");
	CHECK(st, r.status == 429 && h == NULL, "429 without Retry-After");
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"500\",\"count\":2}");
	for (k = 0; k < 3; k++) {
		st_get(st, tok, "rf-alpha-000001", &r);
		CHECK(st, r.status == (k < 2 ? 500 : 200), "500 count 2: "
		    "answer %d is %ld", k, r.status);
		hres_cleanup(&r);
	}
	st_fault(st, "{\"fault\":\"502\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 502 && r.json == NULL && strstr(r.body,
	    "<html>") != NULL, "502: an HTML body");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"503\",\"retry_after\":"
	    "\"Wed, 21 Oct 2015 07:28:00 GMT\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	h = st_header(&r, "Retry-After");
	CHECK(st, r.status == 503 && h != NULL && strcmp(h,
	    "Wed, 21 Oct 2015 07:28:00 GMT") == 0 && r.json != NULL,
	    "503 with an HTTP-date Retry-After");
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"504\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 504, "504");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"500\",\"instance\":\"beta\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	st_get(st, tb, "rf-beta-000001", &r2);
	CHECK(st, r.status == 200 && r2.status == 500, "instance beta only");
	hres_cleanup(&r);
	hres_cleanup(&r2);
	st_fault(st, "{\"fault\":\"503\",\"path\":\"" PATH_QUERY "\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	st_query(st, tok, "{\"query\":{}}", &r2);
	CHECK(st, r.status == 200 && r2.status == 503, "path query only");
	hres_cleanup(&r);
	hres_cleanup(&r2);
	st_fault(st, "{\"fault\":\"500\",\"path\":\"" PATH_REFUNDS "/*\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 500, "path prefix with *");
	hres_cleanup(&r);

	/* Stalls hold one connection only. */
	st_fault(st, "{\"fault\":\"stall\",\"ms\":1500}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    300, true, &r);
	CHECK(st, r.rc == CURLE_OPERATION_TIMEDOUT && r.status < 0,
	    "stall: the client times out (%d)", (int)r.rc);
	hres_cleanup(&r);
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    1000, true, &r);
	CHECK(st, r.status == 200 && r.ms < 1000, "while one stalls, "
	    "another connection is served");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"stall\",\"ms\":300}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    5000, true, &r);
	CHECK(st, r.status == 200 && r.ms >= 290, "stall 300 ms, then the "
	    "answer (%" PRId64 " ms)", r.ms);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"stall_body\",\"ms\":1500}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    500, true, &r);
	CHECK(st, r.rc == CURLE_OPERATION_TIMEDOUT && r.status == 200 &&
	    r.len > 0 && r.json == NULL, "stall_body: headers and part of "
	    "the body, then silence (%d, %zu bytes)", (int)r.rc, r.len);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"stall_body\",\"ms\":200}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    5000, true, &r);
	CHECK(st, r.status == 200 && r.json != NULL && r.ms >= 190,
	    "stall_body 200 ms: then the whole body");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"truncate\"}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    5000, true, &r);
	h = st_header(&r, "Content-Length");
	CHECK(st, r.rc == CURLE_PARTIAL_FILE && h != NULL &&
	    r.len < (size_t)strtoul(h, NULL, 10), "truncate: Content-Length "
	    "%s, fewer bytes, closed (%d)", h != NULL ? h : "-", (int)r.rc);
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"truncate\",\"chunked\":true}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    5000, true, &r);
	h = st_header(&r, "Content-Length");
	CHECK(st, r.rc != CURLE_OK && h == NULL && r.json == NULL,
	    "truncate chunked: closed mid-body (%d)", (int)r.rc);
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"reset\"}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    5000, true, &r);
	h = st_header(&r, "Content-Length");
	CHECK(st, r.rc == CURLE_RECV_ERROR && r.status == 200 && h != NULL &&
	    r.len > 0 && r.len < (size_t)strtoul(h, NULL, 10),
	    "reset: Content-Length %s, %zu bytes, then a reset (%d)",
	    h != NULL ? h : "-", r.len, (int)r.rc);
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"reset\",\"chunked\":true}");
	st_http(st, "GET", PATH_REFUNDS "/rf-alpha-000001", tok, NULL, NULL,
	    5000, true, &r);
	h = st_header(&r, "Content-Length");
	CHECK(st, r.rc == CURLE_RECV_ERROR && h == NULL && r.len > 0 &&
	    r.json == NULL, "reset chunked: part of the body, then a reset "
	    "(%d)", (int)r.rc);
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"307\",\"endpoint\":\"get\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	h = st_header(&r, "Location");
	CHECK(st, r.status == 307 && h != NULL && strcmp(h, "/redirected"
	    PATH_REFUNDS "/rf-alpha-000001") == 0 && r.json != NULL,
	    "307: Location %s", h != NULL ? h : "-");
	hres_cleanup(&r);
	if (h != NULL) {
		st_http(st, "GET", h, tok, NULL, NULL, 5000, true, &r);
		CHECK(st, r.status == 404, "the redirect target answers 404");
		hres_cleanup(&r);
		st_http(st, "GET", h, NULL, NULL, NULL, 5000, true, &r);
		hres_cleanup(&r);
	}
	free(h);
	st_ctl(st, "GET", "/_sandbox/log", NULL, &r);
	CHECK(st, strstr(r.body, "\"fault\":\"307\"") != NULL &&
	    strstr(r.body, "\"fault\":\"redirected_auth\"") != NULL &&
	    strstr(r.body, "\"fault\":\"redirected\"") != NULL,
	    "the log names the redirect and who followed it, with "
	    "Authorization and without");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"oversize\",\"bytes\":2000000,"
	    "\"endpoint\":\"query\"}");
	st_query(st, tok, "{\"query\":{}}", &r);
	h = st_header(&r, "Content-Length");
	CHECK(st, r.status == 200 && r.len == 2000000 && h != NULL &&
	    strcmp(h, "2000000") == 0 && r.json != NULL &&
	    cJSON_GetArraySize(jp(r.json, "refunds")) > 1000 &&
	    jint(r.json, "pagingMetadata.count", -1) ==
	    cJSON_GetArraySize(jp(r.json, "refunds")),
	    "oversize: exactly 2000000 bytes of valid JSON (%zu)", r.len);
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"oversize\",\"bytes\":300000,"
	    "\"chunked\":true}");
	st_query(st, tok, "{\"query\":{}}", &r);
	h = st_header(&r, "Content-Length");
	CHECK(st, r.status == 200 && r.len == 300000 && h == NULL &&
	    r.json != NULL, "oversize chunked: 300000 bytes, no length");
	free(h);
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"invalid_json\"}");
	st_query(st, tok, "{\"query\":{}}", &r);
	CHECK(st, r.status == 200 && r.json == NULL && r.len > 0,
	    "invalid_json: 200 and not JSON");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"token_401\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 200, "token_401 leaves API calls alone");
	hres_cleanup(&r);
	st_http(st, "POST", PATH_TOKEN, NULL, NULL, "{\"grant_type\":"
	    "\"client_credentials\",\"client_id\":\"sandbox-app\","
	    "\"client_secret\":\"sandbox-secret\",\"instance_id\":\"alpha\"}",
	    5000, false, &r);
	CHECK(st, r.status == 401, "token_401: the token endpoint fails");
	hres_cleanup(&r);
	free(st_token(st, "alpha"));

	/* Cursor faults. */
	body = q_first(10, NULL, NULL);
	st_fault(st, "{\"fault\":\"expire_cursor\"}");
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 200, "expire_cursor waits for a cursor");
	free(body);
	c1 = xstrdup(jstr(r.json, "pagingMetadata.cursors.next") != NULL ?
	    jstr(r.json, "pagingMetadata.cursors.next") : "x");
	hres_cleanup(&r);
	body = q_next(10, c1);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 400 && strcmp(r.body, EXPIRED_CURSOR_BODY) == 0,
	    "expire_cursor: the exact expired-cursor 400 (%s)", r.body);
	hres_cleanup(&r);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refunds.0.id",
	    "rf-alpha-000011"), "the same cursor works again after it");
	c2 = xstrdup(jstr(r.json, "pagingMetadata.cursors.next") != NULL ?
	    jstr(r.json, "pagingMetadata.cursors.next") : "x");
	hres_cleanup(&r);
	free(body);
	st_fault(st, "{\"fault\":\"repeat_cursor\"}");
	body = q_next(10, c2);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 200 && jeq(r.json, "pagingMetadata.cursors.next",
	    c2) && jeq(r.json, "refunds.0.id", "rf-alpha-000021"),
	    "repeat_cursor: next is the cursor just sent");
	hres_cleanup(&r);
	free(body);
	st_fault(st, "{\"fault\":\"has_next_no_cursor\"}");
	body = q_first(10, NULL, NULL);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 200 && jbool(r.json, "pagingMetadata.hasNext") ==
	    1 && jp(r.json, "pagingMetadata.cursors.next") == NULL &&
	    jint(r.json, "pagingMetadata.count", 0) == 10,
	    "has_next_no_cursor");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"empty_page_has_next\"}");
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 200 && jbool(r.json, "pagingMetadata.hasNext") ==
	    1 && jint(r.json, "pagingMetadata.count", -1) == 0 &&
	    cJSON_GetArraySize(jp(r.json, "refunds")) == 0 &&
	    jstr(r.json, "pagingMetadata.cursors.next") != NULL,
	    "empty_page_has_next");
	free(body);
	body = q_next(10, jstr(r.json, "pagingMetadata.cursors.next") !=
	    NULL ? jstr(r.json, "pagingMetadata.cursors.next") : "x");
	hres_cleanup(&r);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refunds.0.id",
	    "rf-alpha-000001"), "after the empty page, the real first page");
	hres_cleanup(&r);
	free(body);
	free(c1);
	free(c2);

	/* The list, and bad faults. */
	st_fault(st, "{\"faults\":[{\"fault\":\"500\",\"count\":-1,"
	    "\"endpoint\":\"create\"},{\"fault\":\"stall\",\"seconds\":1,"
	    "\"instance\":\"beta\"}]}");
	st_ctl(st, "GET", "/_sandbox/faults", NULL, &r);
	CHECK(st, cJSON_GetArraySize(jp(r.json, "faults")) == 2 &&
	    jeq(r.json, "faults.0.endpoint", "create") && jint(r.json,
	    "faults.0.count", 0) == -1, "GET /_sandbox/faults lists them");
	hres_cleanup(&r);
	st_ctl(st, "DELETE", "/_sandbox/faults", NULL, &r);
	CHECK(st, r.status == 200 && cJSON_GetArraySize(jp(r.json, "faults")) ==
	    0, "DELETE clears them");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"500\"}");
	st_fault(st, "{\"fault\":\"clear\"}");
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 200, "clear");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/faults", "{\"fault\":\"nope\"}", &r);
	CHECK(st, r.status == 400, "unknown fault: 400");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/faults", "{\"fault\":\"500\","
	    "\"bogus\":1}", &r);
	CHECK(st, r.status == 400, "unknown member: 400");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/faults", "{\"fault\":\"stall\","
	    "\"seconds\":601}", &r);
	CHECK(st, r.status == 400, "stall over 600 s: 400");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/faults", "{\"fault\":\"500\","
	    "\"instance\":\"nope\"}", &r);
	CHECK(st, r.status == 400, "unknown instance: 400");
	hres_cleanup(&r);
	free(tok);
	free(tb);
}

/* The most requests of instance served (status not 429, token endpoint
 * excluded) in any window_ms, from the JSON-lines log text. */
static size_t
log_max_window(const char *text, const char *inst, int64_t window_ms,
    size_t *total)
{
	int64_t *t = NULL;
	size_t n = 0, cap = 0, i, j = 0, best = 0;
	const char *p = text, *eol, *why;
	cJSON *o;

	while (*p != '\0' && (eol = strchr(p, '\n')) != NULL) {
		if (json_parse_strict(p, (size_t)(eol - p), 4, &o, &why) ==
		    RS_OK) {
			if (jeq(o, "instance", inst) &&
			    jint(o, "status", 0) != 429 &&
			    !jeq(o, "path", PATH_TOKEN)) {
				if (n == cap) {
					cap = cap == 0 ? 64 : cap * 2;
					t = xreallocarray(t, cap, sizeof(*t));
				}
				t[n++] = jint(o, "t_ms", 0);
			}
			cJSON_Delete(o);
		}
		p = eol + 1;
	}
	for (i = 0; i < n; i++) {
		while (t[i] - t[j] >= window_ms)
			j++;
		if (i - j + 1 > best)
			best = i - j + 1;
	}
	free(t);
	*total = n;
	return best;
}

static void
t_rate(struct st *st)
{
	struct hres r;
	char *tok, *h;
	size_t total, best;
	int k;

	st_ctl(st, "POST", "/_sandbox/config", "{\"rate_limit\":5,"
	    "\"rate_limit_retry_after\":true}", &r);
	CHECK(st, r.status == 200 && jint(r.json, "rate_limit", 0) == 5,
	    "config rate_limit 5");
	hres_cleanup(&r);
	tok = st_token(st, "gamma");
	free(st_token(st, "gamma"));
	for (k = 0; k < 5; k++) {
		st_get(st, tok, "rf-gamma-000001", &r);
		CHECK(st, r.status == 200, "rate: request %d of 5 served", k);
		hres_cleanup(&r);
	}
	st_get(st, tok, "rf-gamma-000002", &r);
	h = st_header(&r, "Retry-After");
	CHECK(st, r.status == 429 && h != NULL && strtol(h, NULL, 10) >= 1 &&
	    strtol(h, NULL, 10) <= 60, "rate: the 6th in a minute is 429 "
	    "with Retry-After %s", h != NULL ? h : "-");
	free(h);
	hres_cleanup(&r);
	free(st_token(st, "gamma"));
	st_ctl(st, "GET", "/_sandbox/log", NULL, &r);
	best = log_max_window(r.body, "gamma", 60000, &total);
	CHECK(st, best == 5 && total == 5, "the log shows 5 served in the "
	    "sliding minute (%zu of %zu)", best, total);
	CHECK(st, strstr(r.body, "\"fault\":\"rate_limit\"") != NULL,
	    "the log names the rate-limit 429");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/config", "{\"rate_limit\":0}", &r);
	hres_cleanup(&r);
	st_get(st, tok, "rf-gamma-000002", &r);
	CHECK(st, r.status == 200, "rate limit off again");
	hres_cleanup(&r);
	free(tok);
}

static void
t_ttl(struct st *st)
{
	struct hres r;
	char *tok, *body, *cur;

	st_ctl(st, "POST", "/_sandbox/config", "{\"token_ttl\":1,"
	    "\"cursor_ttl\":1}", &r);
	CHECK(st, r.status == 200, "config token_ttl 1, cursor_ttl 1");
	hres_cleanup(&r);
	tok = st_token(st, "alpha");
	body = q_first(10, NULL, NULL);
	st_query(st, tok, body, &r);
	free(body);
	cur = xstrdup(jstr(r.json, "pagingMetadata.cursors.next") != NULL ?
	    jstr(r.json, "pagingMetadata.cursors.next") : "x");
	hres_cleanup(&r);
	tu_sleep_ms(1100);
	st_get(st, tok, "rf-alpha-000001", &r);
	CHECK(st, r.status == 401 && strcmp(jcode(&r), "EXPIRED_TOKEN") == 0,
	    "token expired after its TTL, mid-run");
	hres_cleanup(&r);
	free(tok);
	tok = st_token(st, "alpha");
	body = q_next(10, cur);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 400 && strcmp(r.body, EXPIRED_CURSOR_BODY) == 0,
	    "cursor expired after cursor_ttl");
	hres_cleanup(&r);
	free(body);
	free(cur);
	free(tok);
	st_ctl(st, "POST", "/_sandbox/config", "{\"token_ttl\":14400,"
	    "\"cursor_ttl\":0}", &r);
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/config", "{\"token_ttl\":0}", &r);
	CHECK(st, r.status == 400, "token_ttl 0: 400");
	hres_cleanup(&r);
}

static void
t_control(struct st *st)
{
	struct isotime a, b;
	struct hres r, g;
	struct event ev;
	char *tok = st_token(st, "alpha"), *tb = st_token(st, "beta");
	char *body, *old_upd;
	int64_t rev = 0;
	bool found;

	st_get(st, tok, "rf-alpha-000003", &g);
	(void)strnum_i64(jstr(g.json, "refund.revision") != NULL ?
	    jstr(g.json, "refund.revision") : "0", 0, 100, &rev);
	old_upd = xstrdup(jstr(g.json, "refund.updatedDate") != NULL ?
	    jstr(g.json, "refund.updatedDate") : "x");
	hres_cleanup(&g);
	st_ctl(st, "POST", "/_sandbox/refunds", "{\"instance\":\"alpha\","
	    "\"id\":\"rf-alpha-000003\",\"status\":\"REVERSED\","
	    "\"webhook\":true}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refunds.0.status",
	    "REVERSED"), "control: update a seeded refund");
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-000003", &g);
	body = xasprintf("%" PRId64, rev + 1);
	CHECK(st, jeq(g.json, "refund.revision", body) && jeq(g.json,
	    "refund.status", "REVERSED"), "revision bumped to %s", body);
	CHECK(st, jstr(g.json, "refund.updatedDate") != NULL &&
	    isotime_parse(jstr(g.json, "refund.updatedDate"), &b) == RS_OK &&
	    isotime_parse(old_upd, &a) == RS_OK && isotime_cmp(&b, &a) > 0,
	    "updatedDate moved on");
	hres_cleanup(&g);
	found = rx_find(st, TU_EVT_UPDATED, "rf-alpha-000003", rev + 1, &ev);
	CHECK(st, found && strcmp(ev.refund.status, "REVERSED") == 0 &&
	    ev.has_sequence && ev.sequence == rev + 1, "Refund Updated "
	    "webhook with the new revision %s", body);
	if (found)
		event_cleanup(&ev);
	free(body);
	free(old_upd);
	body = q_first(100, "{\"chargeId\":\"ch-alpha-000002\"}", NULL);
	st_query(st, tok, body, &r);
	CHECK(st, jeq(r.json, "refunds.0.status", "REVERSED"), "Query "
	    "Refunds shows the update");
	hres_cleanup(&r);
	free(body);
	st_ctl(st, "POST", "/_sandbox/refunds", "{\"instance\":\"alpha\","
	    "\"id\":\"rf-alpha-000003\",\"revision\":\"10\",\"bump\":false}",
	    &r);
	CHECK(st, jeq(r.json, "refunds.0.revision", "10"), "set revision 10");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/refunds", "{\"instance\":\"alpha\","
	    "\"id\":\"custom-refund-1\",\"chargeId\":\"custom-charge-1\","
	    "\"amount\":\"5\",\"status\":\"PENDING\",\"webhook\":true}", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refunds.0.amount", "5.00") &&
	    jeq(r.json, "refunds.0.chargeId", "custom-charge-1"),
	    "control: add a refund with its own ids");
	hres_cleanup(&r);
	st_get(st, tok, "custom-refund-1", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refund.status", "PENDING"),
	    "GET the added refund");
	hres_cleanup(&r);
	st_charge(st, "alpha", "custom-charge-1", &r);
	CHECK(st, jeq(r.json, "total", "5.00") && jint(r.json,
	    "pendingRefunds", 0) == 1, "its charge was made");
	hres_cleanup(&r);
	found = rx_find(st, TU_EVT_CREATED, "custom-refund-1", 1, &ev);
	CHECK(st, found, "Refund Created webhook for the added refund");
	if (found)
		event_cleanup(&ev);
	st_ctl(st, "POST", "/_sandbox/refunds", "{\"instance\":\"beta\","
	    "\"refunds\":[{},{\"amount\":\"2.00\",\"chargeId\":"
	    "\"ch-beta-000127\"}]}", &r);
	CHECK(st, r.status == 200 && cJSON_GetArraySize(jp(r.json,
	    "refunds")) == 2 && jeq(r.json, "refunds.0.id", "rf-beta-000252") &&
	    jeq(r.json, "refunds.1.chargeId", "ch-beta-000127") &&
	    jeq(r.json, "refunds.1.currencyCode", "EUR"),
	    "control: add a list (%.200s)", r.body);
	hres_cleanup(&r);
	st_get(st, tb, "rf-beta-000253", &r);
	CHECK(st, r.status == 200, "GET an added refund by its sandbox id");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/refunds", "{\"instance\":\"alpha\","
	    "\"id\":\"rf-alpha-000003\",\"status\":\"bad status!\"}", &r);
	CHECK(st, r.status == 400, "bad status: 400");
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-000003", &r);
	CHECK(st, jeq(r.json, "refund.status", "REVERSED") && jeq(r.json,
	    "refund.revision", "10"), "a refused update changes nothing");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/refunds", "{\"instance\":\"alpha\","
	    "\"id\":\"rf-alpha-999999\"}", &r);
	CHECK(st, r.status == 400, "sandbox-form id that does not exist: 400");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/refunds", "{\"instance\":\"nope\"}", &r);
	CHECK(st, r.status == 400, "unknown instance: 400");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/charges", "{\"instance\":\"alpha\","
	    "\"id\":\"my-charge\",\"total\":\"20.00\",\"currency\":\"EUR\"}",
	    &r);
	CHECK(st, r.status == 200 && jeq(r.json, "total", "20.00") &&
	    jeq(r.json, "currency", "EUR"), "control: make a charge");
	hres_cleanup(&r);
	st_create(st, tok, "{\"refund\":{\"chargeId\":\"my-charge\","
	    "\"currencyCode\":\"EUR\",\"amount\":\"20\"},"
	    "\"previouslyRefundedAmount\":\"0\"}", &r);
	CHECK(st, r.status == 200 && jbool(r.json, "refund.full") == 1 &&
	    jeq(r.json, "refund.currencyCode", "EUR"), "refund all of it: "
	    "full");
	hres_cleanup(&r);
	free(tok);
	free(tb);
}

static void
t_webhooks(struct st *st)
{
	struct hres r;
	const char *p, *eol, *why;
	size_t lines = 0, ok = 0;
	cJSON *o;

	st_ctl(st, "GET", "/_sandbox/webhooks", NULL, &r);
	for (p = r.body; (eol = strchr(p, '\n')) != NULL; p = eol + 1) {
		lines++;
		if (json_parse_strict(p, (size_t)(eol - p), 4, &o, &why) ==
		    RS_OK) {
			if (jint(o, "status", 0) == 200 && jint(o, "attempts",
			    0) == 1)
				ok++;
			cJSON_Delete(o);
		}
	}
	CHECK(st, lines >= 5 && ok == lines && lines <= rx_count(st),
	    "/_sandbox/webhooks: %zu sent, all 200 at once", lines);
	hres_cleanup(&r);
}

static void
t_log(struct st *st)
{
	struct hres r;
	const char *p, *eol, *why;
	char *file;
	size_t lines = 0, good = 0, tokens = 0;
	int64_t seq = 0, t = 0;
	cJSON *o;

	st_ctl(st, "GET", "/_sandbox/log", NULL, &r);
	for (p = r.body; (eol = strchr(p, '\n')) != NULL; p = eol + 1) {
		lines++;
		if (json_parse_strict(p, (size_t)(eol - p), 4, &o, &why) !=
		    RS_OK)
			continue;
		if (jint(o, "seq", 0) > seq && jint(o, "t_ms", -1) >= t &&
		    jstr(o, "wall") != NULL && jstr(o, "method") != NULL &&
		    jstr(o, "path") != NULL && jp(o, "instance") != NULL &&
		    jint(o, "status", 0) >= 200 && jp(o, "fault") != NULL)
			good++;
		if (jeq(o, "path", PATH_TOKEN))
			tokens++;
		seq = jint(o, "seq", 0);
		t = jint(o, "t_ms", 0);
		cJSON_Delete(o);
	}
	CHECK(st, lines > 100 && good == lines && tokens > 10,
	    "request log: %zu lines, every field, seq and t_ms rising, "
	    "token calls too", lines);
	file = tu_read_file(st->log_path, NULL);
	CHECK(st, file != NULL && strcmp(file, r.body) == 0, "--log FILE "
	    "holds the same lines");
	free(file);
	hres_cleanup(&r);
	st_ctl(st, "GET", "/_sandbox/log?since=5&limit=3", NULL, &r);
	CHECK(st, r.status == 200 && strncmp(r.body, "{\"seq\":6,", 9) == 0 &&
	    strchr(r.body, '\n') != NULL, "log ?since=5&limit=3");
	lines = 0;
	for (p = r.body; (eol = strchr(p, '\n')) != NULL; p = eol + 1)
		lines++;
	CHECK(st, lines == 3, "limit 3: 3 lines");
	hres_cleanup(&r);
}

static void
t_two(struct st *st)
{
	struct walk w[2];
	pthread_t th[2];
	struct hres r;
	int64_t want[2];
	char *tok[2];
	int k;

	st_ctl(st, "GET", "/_sandbox/config", NULL, &r);
	want[0] = jint(r.json, "instances.2.refunds", -1);	/* yen */
	want[1] = jint(r.json, "instances.3.refunds", -1);	/* dinar */
	hres_cleanup(&r);
	tok[0] = st_token(st, "yen");
	tok[1] = st_token(st, "dinar");
	for (k = 0; k < 2; k++) {
		memset(&w[k], 0, sizeof(w[k]));
		w[k].st = st;
		w[k].tok = tok[k];
		w[k].limit = 20;
		if (pthread_create(&th[k], NULL, st_walk_thread, &w[k]) != 0)
			fatalx("pthread_create");
	}
	for (k = 0; k < 2; k++) {
		pthread_join(th[k], NULL);
		CHECK(st, w[k].ok && w[k].dups == 0 && w[k].ordered &&
		    (int64_t)w[k].n == want[k], "two instances at once: "
		    "walker %d saw %zu of %" PRId64 " (%s)", k, w[k].n,
		    want[k], w[k].why);
		free(tok[k]);
	}
}

static void
t_trigger(struct st *st)
{
	struct trigger t;
	struct event ev;
	char *answer;
	long status;
	bool found;

	memset(&t, 0, sizeof(t));
	t.key_path = st->key_path;
	t.url = st->rx_url;
	t.instance = "trig-inst";
	t.id = "rf-trig-1";
	t.amount = "12.95";
	t.revision = -1;
	status = trigger_run(&t, &answer);
	CHECK(st, status == 200, "trigger refund-created: 200 (%s)",
	    answer != NULL ? answer : "-");
	free(answer);
	found = rx_find(st, TU_EVT_CREATED, "rf-trig-1", 1, &ev);
	CHECK(st, found && strcmp(ev.refund.amount, "12.95") == 0 &&
	    strcmp(ev.instance_id, "trig-inst") == 0, "the triggered webhook "
	    "verifies and decodes");
	if (found)
		event_cleanup(&ev);
	t.event = "refund-updated";
	t.status = "REVERSED";
	t.revision = 5;
	t.currency = "JPY";
	t.amount = NULL;
	status = trigger_run(&t, &answer);
	free(answer);
	found = rx_find(st, TU_EVT_UPDATED, "rf-trig-1", 5, &ev);
	CHECK(st, status == 200 && found && ev.sequence == 5 &&
	    strcmp(ev.refund.amount, "10") == 0 &&
	    strcmp(ev.refund.status, "REVERSED") == 0,
	    "trigger refund-updated: revision 5, JPY 10");
	if (found)
		event_cleanup(&ev);
	t.event = "app-installed";
	status = trigger_run(&t, &answer);
	free(answer);
	found = rx_find(st, TU_EVT_INSTALLED, NULL, -1, &ev);
	CHECK(st, status == 200 && found && ev.kind == EVENT_APP_INSTALLED &&
	    strcmp(ev.instance_id, "trig-inst") == 0, "trigger app-installed");
	if (found)
		event_cleanup(&ev);
	t.event = "nope";
	status = trigger_run(&t, &answer);
	CHECK(st, status < 0 && answer != NULL, "trigger: unknown event");
	free(answer);
	t.event = NULL;
	t.currency = "XXY";
	status = trigger_run(&t, &answer);
	CHECK(st, status < 0, "trigger: bad currency");
	free(answer);
	t.currency = NULL;
	t.key_path = "/nonexistent/key.pem";
	status = trigger_run(&t, &answer);
	CHECK(st, status < 0, "trigger: missing key");
	free(answer);
	t.key_path = st->key_path;
	t.url = "http://127.0.0.1:1/webhooks";
	status = trigger_run(&t, &answer);
	CHECK(st, status < 0, "trigger: nothing listening");
	free(answer);
}

static void
t_reset(struct st *st)
{
	struct walk w;
	struct hres r;
	char *tok = st_token(st, "alpha"), *body, *cur;

	body = q_first(10, NULL, NULL);
	st_query(st, tok, body, &r);
	free(body);
	cur = xstrdup(jstr(r.json, "pagingMetadata.cursors.next") != NULL ?
	    jstr(r.json, "pagingMetadata.cursors.next") : "x");
	hres_cleanup(&r);
	st_fault(st, "{\"fault\":\"500\",\"count\":-1}");
	st_ctl(st, "POST", "/_sandbox/reset", "{}", &r);
	CHECK(st, r.status == 200 && jint(r.json, "generation", 0) == 2,
	    "reset: generation 2");
	hres_cleanup(&r);
	body = q_next(10, cur);
	st_query(st, tok, body, &r);
	CHECK(st, r.status == 400 && strcmp(r.body, EXPIRED_CURSOR_BODY) == 0,
	    "after a reset, old cursors have expired (faults gone too)");
	hres_cleanup(&r);
	free(body);
	free(cur);
	st_get(st, tok, "rf-alpha-000251", &r);
	CHECK(st, r.status == 404, "created refunds are gone");
	hres_cleanup(&r);
	st_get(st, tok, "rf-alpha-000003", &r);
	CHECK(st, r.status == 200 && !jeq(r.json, "refund.revision", "10"),
	    "changed refunds are back to the seed");
	hres_cleanup(&r);
	st_ctl(st, "GET", "/_sandbox/log", NULL, &r);
	CHECK(st, r.status == 200 && strstr(r.body, "rf-alpha-000251") !=
	    NULL && strstr(r.body, "\"seq\":1,") == NULL,
	    "the log starts again (seq goes on)");
	hres_cleanup(&r);

	st_ctl(st, "POST", "/_sandbox/reset", "{\"seed\":10000,"
	    "\"charges\":3}", &r);
	hres_cleanup(&r);
	st_walk(st, tok, 100, NULL, false, &w);
	CHECK(st, w.ok && w.n == 10000 && w.pages == 100 && w.dups == 0 &&
	    w.ordered && strcmp(w.last_id, "rf-alpha-010000") == 0,
	    "10000 seeded: 100 pages of 100, unique, ordered (%zu, %s)", w.n,
	    w.why);
	st_charge(st, "alpha", "ch-alpha-005003", &r);
	CHECK(st, r.status == 200 && jeq(r.json, "refunded", "0.00"),
	    "--charges 3 after 5000 seeded charges");
	hres_cleanup(&r);
	st_charge(st, "alpha", "ch-alpha-005004", &r);
	CHECK(st, r.status == 404, "and no more");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/reset", "{\"seed\":250,\"charges\":20}",
	    &r);
	CHECK(st, r.status == 200, "reset back");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/reset", "{\"seed\":-1}", &r);
	CHECK(st, r.status == 400, "reset seed -1: 400");
	hres_cleanup(&r);
	free(tok);
}

static void
t_misc(struct st *st)
{
	struct hres r;
	char *tok = st_token(st, "alpha"), *big;
	size_t n = (size_t)1536 * 1024;

	st_http(st, "GET", "/nope", NULL, NULL, NULL, 5000, false, &r);
	CHECK(st, r.status == 404 && jstr(r.json, "message") != NULL,
	    "unknown path: 404 {message}");
	hres_cleanup(&r);
	st_http(st, "GET", PATH_QUERY, tok, NULL, NULL, 5000, false, &r);
	CHECK(st, r.status == 405, "GET query: 405");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/nope", "{}", &r);
	CHECK(st, r.status == 404, "unknown control endpoint: 404");
	hres_cleanup(&r);
	st_ctl(st, "POST", "/_sandbox/faults", "[1]", &r);
	CHECK(st, r.status == 400, "control body not an object: 400");
	hres_cleanup(&r);
	big = xmalloc(n + 1);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	big[n] = '\0';
	st_query(st, tok, big, &r);
	CHECK(st, r.status == 413, "1.5 MiB body: 413 (%ld)", r.status);
	hres_cleanup(&r);
	free(big);
	free(tok);
	CHECK(st, st->no_request_id == 0, "x-wix-request-id on every answer "
	    "(%zu without)", st->no_request_id);
}

static bool
rx_start(struct st *st)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	st->rx = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION |
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
	    MHD_USE_ERROR_LOG | MHD_USE_ITC, 0, NULL, NULL, rx_access, st,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
	    MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&sin,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
	    MHD_OPTION_NOTIFY_COMPLETED, rx_completed, st,
	    MHD_OPTION_END);
	if (st->rx == NULL)
		return false;
	st->rx_port = bound_port(st->rx);
	snprintf(st->rx_url, sizeof(st->rx_url),
	    "http://127.0.0.1:%u/webhooks", (unsigned)st->rx_port);
	return true;
}

static int
selftest_main(int argc, char *argv[])
{
	static const char *const names[] = { "alpha", "beta", "yen", "dinar",
	    "gamma" };
	static const char *const curs[] = { "USD", "EUR", "JPY", "KWD",
	    "USD" };
	struct sb_options o;
	struct st st;
	const char *why = NULL;
	char *err = NULL;
	size_t i;
	int verbose = 0, k;

	for (k = 1; k < argc; k++) {
		if (strcmp(argv[k], "-v") == 0)
			verbose++;
		else if (strcmp(argv[k], "-vv") == 0)
			verbose += 2;
		else {
			fprintf(stderr, "usage: wix-sandbox selftest [-v]\n");
			return EX_USAGE;
		}
	}
	memset(&st, 0, sizeof(st));
	st.verbose = verbose > 0;
	log_init(verbose > 1 ? 1 : 0, false);
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatalx("curl_global_init failed");
	pthread_mutex_init(&st.mtx, NULL);
	tu_keypair_generate(&st.kp);
	if (jwtv_keys_add_pem(&st.keys, st.kp.pub_pem, strlen(st.kp.pub_pem),
	    &why) != RS_OK)
		fatalx("selftest: public key: %s", why);
	if ((st.dir = tu_tempdir()) == NULL)
		fatalx("selftest: no temporary directory");
	st.key_path = xasprintf("%s/wix-private.pem", st.dir);
	st.log_path = xasprintf("%s/requests.jsonl", st.dir);
	if (!tu_write_file(st.key_path, st.kp.priv_pem, true))
		fatalx("selftest: cannot write %s", st.key_path);
	if (!rx_start(&st))
		fatalx("selftest: cannot start the webhook receiver");

	options_defaults(&o);
	for (i = 0; i < 5; i++) {
		o.instances[o.ninstances++] = xstrdup(names[i]);
		o.currencies[o.ncurrencies++] = xstrdup(curs[i]);
	}
	o.seed = 250;
	o.charges = 20;
	o.api_key = "sandbox-api-key";
	o.hook_url = st.rx_url;
	o.hook_key = xstrdup(st.kp.priv_pem);
	if (!options_check(&o))
		fatalx("selftest: bad options");
	st.sb = sandbox_new(&o);
	if (sandbox_start(st.sb, &o.addr, st.log_path, &err) != RS_OK)
		fatalx("selftest: %s", err);
	snprintf(st.base, sizeof(st.base), "http://127.0.0.1:%u",
	    (unsigned)st.sb->port);
	if ((st.curl = curl_easy_init()) == NULL)
		fatalx("curl_easy_init failed");

	t_cli(&st);
	t_token(&st);
	t_auth(&st);
	t_get(&st);
	t_query(&st);
	t_filter(&st);
	t_create(&st);
	t_growth(&st);
	t_faults(&st);
	t_rate(&st);
	t_ttl(&st);
	t_control(&st);
	t_webhooks(&st);
	t_log(&st);
	t_two(&st);
	t_trigger(&st);
	t_reset(&st);
	t_misc(&st);

	curl_easy_cleanup(st.curl);
	sandbox_free(st.sb);
	MHD_stop_daemon(st.rx);
	for (i = 0; i < st.rx_n; i++)
		free(st.rx_body[i]);
	jwtv_keys_free(st.keys);
	tu_keypair_cleanup(&st.kp);
	tu_rmtree(st.dir);
	free(st.dir);
	free(st.key_path);
	free(st.log_path);
	options_cleanup(&o);
	pthread_mutex_destroy(&st.mtx);
	curl_global_cleanup();
	printf("selftest: %d passed, %d failed\n", st.pass, st.fail);
	return st.fail == 0 ? EX_OK : EX_FAIL;
}

static int
serve_main(int argc, char *argv[])
{
	enum { O_LISTEN = 256, O_SEED, O_INSTANCES, O_CHARGES, O_CURRENCY,
	    O_DATA_SEED, O_APP_ID, O_APP_SECRET, O_API_KEY, O_TOKEN_TTL,
	    O_RATE, O_RATE_RA, O_CURSOR_TTL, O_LOG, O_HOOK_URL, O_HOOK_KEY,
	    O_MAX_SECONDS };
	static const struct option lo[] = {
		{ "listen",	required_argument, NULL, O_LISTEN },
		{ "seed",	required_argument, NULL, O_SEED },
		{ "instances",	required_argument, NULL, O_INSTANCES },
		{ "charges",	required_argument, NULL, O_CHARGES },
		{ "currency",	required_argument, NULL, O_CURRENCY },
		{ "data-seed",	required_argument, NULL, O_DATA_SEED },
		{ "app-id",	required_argument, NULL, O_APP_ID },
		{ "app-secret",	required_argument, NULL, O_APP_SECRET },
		{ "api-key",	required_argument, NULL, O_API_KEY },
		{ "token-ttl",	required_argument, NULL, O_TOKEN_TTL },
		{ "rate-limit",	required_argument, NULL, O_RATE },
		{ "rate-limit-retry-after", no_argument, NULL, O_RATE_RA },
		{ "cursor-ttl",	required_argument, NULL, O_CURSOR_TTL },
		{ "log",	required_argument, NULL, O_LOG },
		{ "webhook-url", required_argument, NULL, O_HOOK_URL },
		{ "webhook-key", required_argument, NULL, O_HOOK_KEY },
		{ "max-seconds", required_argument, NULL, O_MAX_SECONDS },
		{ "quiet",	no_argument,	   NULL, 'q' },
		{ "verbose",	no_argument,	   NULL, 'v' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL,		0,		   NULL, 0 }
	};
	struct sb_options o;
	struct sandbox *sb = NULL;
	const char *hook_key_path = NULL;
	char *why = NULL, rate[32], *slash;
	sigset_t set;
	struct timespec ts;
	int64_t v, deadline = 0;
	int ch, sig, verbose = 0, rc = EX_USAGE;
	bool curl_up = false;
	size_t i;

	options_defaults(&o);
	while ((ch = getopt_long(argc, argv, "qvh", lo, NULL)) != -1) {
		switch (ch) {
		case O_LISTEN:
			if (!parse_listen(optarg, &o)) {
				fprintf(stderr, "--listen %s: want IPv4:PORT "
				    "or [IPv6]:PORT\n", optarg);
				goto out;
			}
			break;
		case O_SEED:
			if (!num_opt("seed", optarg, 0, SB_SEED_MAX, &v))
				goto out;
			o.seed = (size_t)v;
			break;
		case O_INSTANCES:
			for (i = 0; i < o.ninstances; i++)
				free(o.instances[i]);
			if (!split_list(optarg, o.instances, SB_INSTANCES_MAX,
			    &o.ninstances)) {
				fprintf(stderr, "--instances: 1..16 names, "
				    "comma-separated\n");
				goto out;
			}
			break;
		case O_CHARGES:
			if (!num_opt("charges", optarg, 0,
			    SB_FREE_CHARGES_MAX, &v))
				goto out;
			o.charges = (size_t)v;
			break;
		case O_CURRENCY:
			for (i = 0; i < o.ncurrencies; i++)
				free(o.currencies[i]);
			if (!split_list(optarg, o.currencies,
			    SB_INSTANCES_MAX, &o.ncurrencies)) {
				fprintf(stderr, "--currency: codes, "
				    "comma-separated\n");
				goto out;
			}
			break;
		case O_DATA_SEED:
			if (!num_opt("data-seed", optarg, 0, INT64_MAX, &v))
				goto out;
			o.data_seed = (uint64_t)v;
			break;
		case O_APP_ID:
			o.app_id = optarg;
			break;
		case O_APP_SECRET:
			o.app_secret = optarg;
			break;
		case O_API_KEY:
			o.api_key = optarg;
			break;
		case O_TOKEN_TTL:
			if (!num_opt("token-ttl", optarg, 1, 86400 * 365,
			    &o.token_ttl_s))
				goto out;
			break;
		case O_RATE:
			snprintf(rate, sizeof(rate), "%s", optarg);
			if ((slash = strchr(rate, '/')) != NULL) {
				if (strcmp(slash, "/min") != 0) {
					fprintf(stderr, "--rate-limit: N or "
					    "N/min\n");
					goto out;
				}
				*slash = '\0';
			}
			if (!num_opt("rate-limit", rate, 0, 1000000,
			    &o.rate_limit))
				goto out;
			break;
		case O_RATE_RA:
			o.rate_limit_retry_after = true;
			break;
		case O_CURSOR_TTL:
			if (!num_opt("cursor-ttl", optarg, 0, 86400 * 365,
			    &o.cursor_ttl_s))
				goto out;
			break;
		case O_LOG:
			o.log_path = optarg;
			break;
		case O_HOOK_URL:
			o.hook_url = optarg;
			break;
		case O_HOOK_KEY:
			hook_key_path = optarg;
			break;
		case O_MAX_SECONDS:
			if (!num_opt("max-seconds", optarg, 0, 86400 * 365,
			    &o.max_seconds))
				goto out;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			fputs(usage_text, stdout);
			rc = EX_OK;
			goto out;
		default:
			fputs(usage_text, stderr);
			goto out;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "wix-sandbox: unexpected argument %s\n",
		    argv[optind]);
		fputs(usage_text, stderr);
		goto out;
	}
	if (hook_key_path != NULL && !load_hook_key(&o, hook_key_path))
		goto out;
	if (!options_check(&o))
		goto out;
	log_init(verbose, false);
	rc = EX_FAIL;

	/* Signals are taken synchronously below; block them before any
	 * thread starts, so every thread inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "wix-sandbox: curl_global_init failed\n");
		goto out;
	}
	curl_up = true;
	sb = sandbox_new(&o);
	if (sandbox_start(sb, &o.addr, o.log_path, &why) != RS_OK) {
		fprintf(stderr, "wix-sandbox: --listen %s:%u: %s\n", o.host,
		    (unsigned)ntohs(o.addr.ss_family == AF_INET6 ?
		    ((struct sockaddr_in6 *)&o.addr)->sin6_port :
		    ((struct sockaddr_in *)&o.addr)->sin_port), why);
		goto out;
	}
	fprintf(stderr, "wix-sandbox listening on %s:%u\n", o.host,
	    (unsigned)sb->port);
	if (!o.quiet) {
		for (i = 0; i < sb->ninst; i++)
			fprintf(stderr, "  instance %s: %zu refunds, %zu "
			    "charges, %s\n", sb->inst[i].name,
			    sb->inst[i].nseed, sb->inst[i].nseed_charges +
			    sb->inst[i].nfree_charges, sb->inst[i].currency);
		fprintf(stderr, "  app id %s, app secret %s%s%s\n",
		    o.app_id, o.app_secret, o.api_key != NULL ?
		    ", API key set" : "", o.rate_limit > 0 ?
		    ", rate limit on" : "");
		if (o.hook_url != NULL)
			fprintf(stderr, "  webhooks to %s\n", o.hook_url);
	}
	fflush(stderr);
	if (o.max_seconds > 0)
		deadline = clock_mono_ms() + o.max_seconds * 1000;
	for (;;) {
		ts.tv_sec = 0;
		ts.tv_nsec = 250 * 1000000L;
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT) {
			if (!o.quiet)
				fprintf(stderr, "wix-sandbox: %s, stopping\n",
				    sig == SIGTERM ? "SIGTERM" : "SIGINT");
			break;
		}
		if (deadline > 0 && clock_mono_ms() >= deadline) {
			if (!o.quiet)
				fprintf(stderr, "wix-sandbox: --max-seconds "
				    "reached, stopping\n");
			break;
		}
	}
	rc = EX_OK;
out:
	sandbox_free(sb);
	free(why);
	options_cleanup(&o);
	if (curl_up)
		curl_global_cleanup();
	return rc;
}

int
main(int argc, char *argv[])
{
	xmalloc_init_json();
	log_init(0, false);
	if (argc > 1 && strcmp(argv[1], "trigger") == 0) {
		int rc;

		curl_global_init(CURL_GLOBAL_DEFAULT);
		rc = trigger_main(argc - 1, argv + 1);
		curl_global_cleanup();
		return rc;
	}
	if (argc > 1 && strcmp(argv[1], "selftest") == 0)
		return selftest_main(argc - 1, argv + 1);
	return serve_main(argc, argv);
}
