/*
 * http.c: the "http" exporter, which POSTs each record as JSON to a URL,
 * and the JSON form of a record that it shares with the "exec" exporter.
 *
 * One POST per record, in order, on one libcurl easy handle per instance
 * (so the connection is reused).  The body is exporter_record_json(), one
 * compact JSON object (docs/exporters.md has the full description):
 *
 *	{"seq":17,				change-log seq, a number
 *	 "schema":"refundsync.record.v1",
 *	 "idempotency_key":"books:r-1:3",	as the header below
 *	 "refund_id":"r-1","instance_id":"i-1"|null,"charge_id":"c-1"|null,
 *	 "revision":"3"|null,			int64 as a string
 *	 "status":"SUCCEEDED","prev_status":"PENDING"|null,
 *	 "posting":"none"|"post"|"reverse"|"adjust",
 *	 "currency":"USD","amount":"10.50",	decimal text as Wix sent it
 *	 "amount_minor":"1050"|null,		exact minor units (a string)
 *	 "exponent":2|null,			ISO 4217 minor-unit digits
 *	 "returned_application_fee":"0.30"|null,
 *	 "returned_processing_fee":"0.10"|null,
 *	 "created_date":...|null,"updated_date":...|null,
 *	 "changed_at":"2024-05-01T10:05:01.123Z",
 *	 "source":"webhook"|"backfill"|"reconcile"|"cli",
 *	 "refund":{...}|null}			the Wix refund entity
 *
 * No amount is ever a JSON number.  The body of every attempt for one
 * record is the same bytes.  Every request carries
 *
 *	Content-Type: application/json
 *	Idempotency-Key: <exporter>:<refund id>:<revision>[:reverse]
 *	    (without a revision, "-:<entityEventSequence>:<updatedDate>"
 *	    in its place: export_idempotency_key())
 *	X-Refundsync-Timestamp: <unix seconds of this attempt>
 *	X-Refundsync-Signature: sha256=<hex HMAC-SHA256(secret,
 *	    "<timestamp>.<raw body>")>	(only when secret_file is set)
 *
 * The outcome maps onto the ABI: 2xx is RS_EXPORT_OK; 429, 5xx and
 * transport failures (refused, reset, timed out, TLS) are RS_EXPORT_RETRY;
 * every other status (other 4xx, and 1xx/3xx, as redirects are not
 * followed) is RS_EXPORT_PERMANENT.  The reason given back names the
 * status and the start of the response body, which is what dead letters
 * keep.  Retry-After is reported in the reason only: the engine's backoff
 * paces retries.
 *
 * An answer must arrive whole for its status to count.  Only its first
 * HTTP_KEEP_RESPONSE bytes are kept; the rest is read and dropped, up to
 * HTTP_MAX_RESPONSE bytes of body and HTTP_MAX_HEADERS of header (the
 * write callbacks count, as CURLOPT_MAXFILESIZE does not bound an answer
 * of unknown length).  A larger answer is cut off there and, like one
 * cut by the timeout or a reset, is RS_EXPORT_RETRY whatever its status:
 * a receiver that acknowledges with megabytes is broken, and re-sending
 * the same key is safe.
 *
 * Key decision: the receiver sees each (refund, revision) once by
 * Idempotency-Key, not by us: a POST that timed out may have been
 * processed, and it is re-sent with the same key and the same body.
 *
 * Secrets: the HMAC secret is read once at open (a path or
 * "credential:NAME"), kept only in the instance, wiped on close and never
 * logged.  Log lines show the URL without user info and query.
 *
 * Threads: an instance is used by one thread at a time (ABI contract);
 * instances are independent.  libcurl's global init runs once.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "adapters/config.h"
#include "domain/json.h"
#include "exporters/builtin.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION		"unknown"
#endif

#define HTTP_DEF_TIMEOUT_S	30
#define HTTP_DEF_CONNECT_S	10
#define HTTP_MAX_TIMEOUT_S	3600
#define HTTP_MAX_URL		4096
#define HTTP_KEEP_RESPONSE	512	/* bytes of a response kept */
#define HTTP_SHOW_RESPONSE	200	/* ... and shown in a reason */
#define HTTP_MAX_RESPONSE	((size_t)1024 * 1024) /* body bytes read */
#define HTTP_MAX_HEADERS	((size_t)64 * 1024) /* header bytes read */
#define HTTP_USER_AGENT		"refundsync/" PACKAGE_VERSION
#define RECORD_JSON_MAX		((size_t)64 * 1024 * 1024)

const char *const exporter_http_keys[] = {
	"url", "secret_file", "timeout", "connect_timeout", "ca_file", NULL
};

struct http_exporter {
	char		*name;		/* the section's NAME */
	char		*url;
	char		*shown_url;	/* for logs: no user info or query */
	char		*secret;	/* NULL: unsigned; wiped on close */
	size_t		 secretlen;
	char		*ca_file;	/* NULL: the system's CAs */
	long		 timeout_ms;
	long		 connect_ms;
	CURL		*h;
};

/* What one POST brings back. */
struct http_resp {
	char		 body[HTTP_KEEP_RESPONSE + 1];
	size_t		 len;
	size_t		 body_read;	/* body bytes received */
	size_t		 header_read;	/* header bytes received */
	const char	*cut;		/* "body" or "header": cut off past
					 * its cap; NULL: not */
	char		 retry_after[32];	/* printable, or "" */
};

/* ---- the JSON form of a record ------------------------------------ */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and past U+10FFFF. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/* s as a JSON string; invalid UTF-8 becomes U+FFFD.  NULL is null. */
static enum rs_status
json_str(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t n, k;
	char esc[7];

	if (s == NULL)
		return buf_appends(b, "null");
	n = strlen(s);
	if (buf_append(b, "\"", 1) != RS_OK)
		return RS_ERR_TOOBIG;
	while (n > 0) {
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			if (buf_append(b, esc, 2) != RS_OK)
				return RS_ERR_TOOBIG;
			p++;
			n--;
			continue;
		}
		if (*p < 0x20 || *p == 0x7f) {
			/* esc is six bytes appended by length, not a string. */
			/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 0xf];
			if (buf_append(b, esc, 6) != RS_OK)
				return RS_ERR_TOOBIG;
			p++;
			n--;
			continue;
		}
		if ((k = utf8_len(p, n)) == 0) {
			if (buf_appends(b, "\\ufffd") != RS_OK)
				return RS_ERR_TOOBIG;
			p++;
			n--;
			continue;
		}
		if (buf_append(b, p, k) != RS_OK)
			return RS_ERR_TOOBIG;
		p += k;
		n -= k;
	}
	return buf_append(b, "\"", 1);
}

/*
 * The refund entity: its text with the white space between tokens taken
 * out (a valid JSON text has no raw control character inside a string,
 * so this also takes out every line break), or null if it is not valid
 * JSON.  Its numbers are copied as text, never through a double.
 */
static enum rs_status
json_body(struct buf *b, const char *body)
{
	cJSON *tree = NULL;
	const char *why, *p, *run;
	bool instr = false, esc = false;

	if (body == NULL || json_parse_strict(body, strlen(body),
	    JSON_MAX_DEPTH, &tree, &why) != RS_OK)
		return buf_appends(b, "null");
	cJSON_Delete(tree);
	for (p = run = body; *p != '\0'; p++) {
		if (instr) {
			if (esc)
				esc = false;
			else if (*p == '\\')
				esc = true;
			else if (*p == '"')
				instr = false;
			continue;
		}
		if (*p == '"')
			instr = true;
		else if (*p == ' ' || *p == '\t' || *p == '\n' ||
		    *p == '\r') {
			if (p > run && buf_append(b, run,
			    (size_t)(p - run)) != RS_OK)
				return RS_ERR_TOOBIG;
			run = p + 1;
		}
	}
	if (p > run)
		return buf_append(b, run, (size_t)(p - run));
	return RS_OK;
}

static const char *
posting_name(enum rs_posting p)
{
	switch (p) {
	case RS_POSTING_NONE:
		return "none";
	case RS_POSTING_POST:
		return "post";
	case RS_POSTING_REVERSE:
		return "reverse";
	case RS_POSTING_ADJUST:
		return "adjust";
	}
	return "none";
}

char *
exporter_record_json(const struct rs_export_record *r, size_t *len)
{
	struct buf b;
	char *out = NULL;
	bool ok;

	buf_init(&b, RECORD_JSON_MAX);
	ok = buf_printf(&b, "{\"seq\":%lld", (long long)r->seq) == RS_OK &&
	    buf_appends(&b, ",\"schema\":\"refundsync.record.v1\"") ==
	    RS_OK &&
	    buf_appends(&b, ",\"idempotency_key\":") == RS_OK &&
	    json_str(&b, r->idempotency_key) == RS_OK &&
	    buf_appends(&b, ",\"refund_id\":") == RS_OK &&
	    json_str(&b, r->refund_id) == RS_OK &&
	    buf_appends(&b, ",\"instance_id\":") == RS_OK &&
	    json_str(&b, r->instance_id) == RS_OK &&
	    buf_appends(&b, ",\"charge_id\":") == RS_OK &&
	    json_str(&b, r->charge_id) == RS_OK;
	if (ok && r->has_revision)
		ok = buf_printf(&b, ",\"revision\":\"%lld\"",
		    (long long)r->revision) == RS_OK;
	else if (ok)
		ok = buf_appends(&b, ",\"revision\":null") == RS_OK;
	ok = ok &&
	    buf_appends(&b, ",\"status\":") == RS_OK &&
	    json_str(&b, r->status) == RS_OK &&
	    buf_appends(&b, ",\"prev_status\":") == RS_OK &&
	    json_str(&b, r->prev_status) == RS_OK &&
	    buf_printf(&b, ",\"posting\":\"%s\"", posting_name(r->posting)) ==
	    RS_OK &&
	    buf_appends(&b, ",\"currency\":") == RS_OK &&
	    json_str(&b, r->currency) == RS_OK &&
	    buf_appends(&b, ",\"amount\":") == RS_OK &&
	    json_str(&b, r->amount) == RS_OK;
	if (ok && r->amount_exact)
		ok = buf_printf(&b, ",\"amount_minor\":\"%lld\","
		    "\"exponent\":%d", (long long)r->amount_minor,
		    r->exponent) == RS_OK;
	else if (ok)
		ok = buf_appends(&b, ",\"amount_minor\":null,"
		    "\"exponent\":null") == RS_OK;
	ok = ok &&
	    buf_appends(&b, ",\"returned_application_fee\":") == RS_OK &&
	    json_str(&b, r->returned_application_fee) == RS_OK &&
	    buf_appends(&b, ",\"returned_processing_fee\":") == RS_OK &&
	    json_str(&b, r->returned_processing_fee) == RS_OK &&
	    buf_appends(&b, ",\"created_date\":") == RS_OK &&
	    json_str(&b, r->created_date) == RS_OK &&
	    buf_appends(&b, ",\"updated_date\":") == RS_OK &&
	    json_str(&b, r->updated_date) == RS_OK &&
	    buf_appends(&b, ",\"changed_at\":") == RS_OK &&
	    json_str(&b, r->changed_at) == RS_OK &&
	    buf_appends(&b, ",\"source\":") == RS_OK &&
	    json_str(&b, r->source) == RS_OK &&
	    buf_appends(&b, ",\"refund\":") == RS_OK &&
	    json_body(&b, r->body) == RS_OK &&
	    buf_append(&b, "}", 1) == RS_OK;
	if (ok)
		out = buf_detach(&b, len);
	buf_cleanup(&b);
	return out;
}

/* ---- keys --------------------------------------------------------- */

static pthread_once_t	http_curl_once = PTHREAD_ONCE_INIT;
static CURLcode		http_curl_rc = CURLE_FAILED_INIT;

static void
http_curl_init(void)
{
	http_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Seconds in [1, HTTP_MAX_TIMEOUT_S] as milliseconds, or a reason. */
static const char *
parse_seconds(const char *v, long *ms)
{
	const char *why;
	int64_t n;

	if ((why = strnum_i64(v, 1, HTTP_MAX_TIMEOUT_S, &n)) != NULL)
		return why;
	*ms = (long)n * 1000;
	return NULL;
}

/*
 * Check url (an absolute http or https URL with a host) and make the
 * form shown in logs and reasons.  NULL and *shown (caller frees), or a
 * reason without the key's name (caller frees).
 */
static char *
url_check(const char *url, char **shown)
{
	CURLU *u = NULL;
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	char *why = NULL;
	const char *p;

	if (url[0] == '\0')
		return xstrdup("must not be empty");
	if (strlen(url) > HTTP_MAX_URL)
		return xstrdup("too long");
	for (p = url; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return xstrdup("contains white space or a "
			    "control character");
	if (strncasecmp(url, "http://", 7) != 0 &&
	    strncasecmp(url, "https://", 8) != 0)
		return xstrdup("must start with http:// or https://");
	/* libcurl reads "http:///x" as host "x": refuse it here. */
	p = url + (url[4] == ':' ? 7 : 8);
	if (*p == '\0' || *p == '/' || *p == '?' || *p == '#')
		return xstrdup("no host");
	if ((u = curl_url()) == NULL)
		return xstrdup("curl_url failed");
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    host[0] == '\0') {
		why = xstrdup("not a valid URL with a host");
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
		port = NULL;
	if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
		path = NULL;
	*shown = xasprintf("%s://%s%s%s%s", scheme, host,
	    port != NULL ? ":" : "", port != NULL ? port : "",
	    path != NULL ? path : "/");
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return why;
}

static void
http_free(struct http_exporter *x)
{
	if (x == NULL)
		return;
	if (x->h != NULL)
		curl_easy_cleanup(x->h);
	freezero(x->secret, x->secretlen);
	free(x->ca_file);
	free(x->shown_url);
	free(x->url);
	free(x->name);
	free(x);
}

/* Report a bad key and return false. */
static bool
http_bad(exporter_report_fn *report, void *arg, const char *key,
    const char *reason)
{
	report(arg, key, reason);
	return false;
}

/*
 * Parse the keys into x, as open() and the check share: every bad value
 * is reported.  *secret_ref: the secret_file to read at open, or NULL.
 * Nothing outside the process is touched.
 */
static bool
http_parse(struct http_exporter *x, const struct rs_export_kv *kv,
    size_t nkv, const char **secret_ref, exporter_report_fn *report,
    void *arg)
{
	const char *url = NULL, *why;
	char *reason;
	bool ok = true, connect_set = false, timeout_bad = false;
	size_t i;

	*secret_ref = NULL;
	x->timeout_ms = HTTP_DEF_TIMEOUT_S * 1000L;
	x->connect_ms = HTTP_DEF_CONNECT_S * 1000L;
	/* Keys this type does not know (type, the engine's) are not ours
	 * to refuse: the config layer has checked the section. */
	for (i = 0; i < nkv; i++) {
		if (strcmp(kv[i].key, "url") == 0)
			url = kv[i].value;
		else if (strcmp(kv[i].key, "secret_file") == 0)
			*secret_ref = kv[i].value[0] != '\0' ? kv[i].value :
			    NULL;
		else if (strcmp(kv[i].key, "ca_file") == 0) {
			free(x->ca_file);
			x->ca_file = kv[i].value[0] != '\0' ?
			    xstrdup(kv[i].value) : NULL;
		} else if (strcmp(kv[i].key, "timeout") == 0 ||
		    strcmp(kv[i].key, "connect_timeout") == 0) {
			bool connect = kv[i].key[0] == 'c';

			if ((why = parse_seconds(kv[i].value, connect ?
			    &x->connect_ms : &x->timeout_ms)) != NULL) {
				reason = xasprintf("%s (whole seconds from 1 "
				    "to %d)", why, HTTP_MAX_TIMEOUT_S);
				ok = http_bad(report, arg, kv[i].key, reason);
				free(reason);
				timeout_bad = true;
			} else if (connect)
				connect_set = true;
		}
	}
	/* As for [wix]: a connect limit past the whole request's is a
	 * mistake, not something to cut silently. */
	if (connect_set && !timeout_bad && x->connect_ms > x->timeout_ms) {
		reason = xasprintf("%ld is more than timeout (%ld)",
		    x->connect_ms / 1000, x->timeout_ms / 1000);
		ok = http_bad(report, arg, "connect_timeout", reason);
		free(reason);
	}
	if (url == NULL)
		ok = http_bad(report, arg, "url", "required");
	else if ((reason = url_check(url, &x->shown_url)) != NULL) {
		ok = http_bad(report, arg, "url", reason);
		free(reason);
	} else
		x->url = xstrdup(url);
	if (!connect_set && x->connect_ms > x->timeout_ms)
		x->connect_ms = x->timeout_ms;
	return ok;
}

/* Where open() keeps the first bad key that http_parse() reports. */
static void
http_first_err(void *arg, const char *key, const char *reason)
{
	char **first = arg;

	if (*first == NULL)
		*first = xasprintf("%s: %s", key, reason);
}

bool
exporter_http_check(const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	struct http_exporter *x;
	const char *secret_ref;
	bool ok;

	(void)name;
	x = xcalloc(1, sizeof(*x));
	ok = http_parse(x, kv, nkv, &secret_ref, report, arg);
	http_free(x);
	return ok;
}

static int
http_open(void **ctxp, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	struct http_exporter *x;
	const char *secret_ref;
	char *reason = NULL, *swhy = NULL;

	*ctxp = NULL;
	x = xcalloc(1, sizeof(*x));
	x->name = xstrdup(name);
	if (!http_parse(x, kv, nkv, &secret_ref, http_first_err, &reason))
		goto fail;
	if (secret_ref != NULL) {
		if (config_read_secret(secret_ref, EXPORTER_HTTP_SECRET_MAX,
		    &x->secret, &swhy) != RS_OK) {
			reason = xasprintf("secret_file: %s", swhy);
			goto fail;
		}
		x->secretlen = strlen(x->secret);
		if (x->secretlen == 0) {
			reason = xasprintf("secret_file: %s: empty",
			    secret_ref);
			goto fail;
		}
	}
	pthread_once(&http_curl_once, http_curl_init);
	if (http_curl_rc != CURLE_OK) {
		reason = xasprintf("curl_global_init: %s",
		    curl_easy_strerror(http_curl_rc));
		goto fail;
	}
	if ((x->h = curl_easy_init()) == NULL) {
		reason = xstrdup("curl_easy_init failed");
		goto fail;
	}
	log_debug("exporter %s: http: %s, timeout %ld ms, %s", x->name,
	    x->shown_url, x->timeout_ms, x->secret != NULL ? "signed" :
	    "unsigned");
	*ctxp = x;
	return RS_EXPORT_OK;
fail:
	snprintf(err, errlen, "%s", reason != NULL ? reason : "cannot open");
	free(reason);
	free(swhy);
	http_free(x);
	return RS_EXPORT_PERMANENT;
}

/* ---- one POST ----------------------------------------------------- */

static size_t
resp_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_resp *r = arg;
	size_t len = size * nmemb, room;

	/* Keep the start for the reason; read and drop the rest. */
	room = HTTP_KEEP_RESPONSE - r->len;
	if (room > len)
		room = len;
	memcpy(r->body + r->len, data, room);
	r->len += room;
	r->body[r->len] = '\0';
	/* Up to the cap: a short count makes libcurl stop. */
	if (len > HTTP_MAX_RESPONSE - r->body_read) {
		r->cut = "body";
		return 0;
	}
	r->body_read += len;
	return len;
}

static size_t
resp_header(char *data, size_t size, size_t nmemb, void *arg)
{
	static const char ra[] = "retry-after:";
	struct http_resp *r = arg;
	size_t len = size * nmemb, i, o = 0;

	/* All header blocks (1xx ones too) count towards the cap. */
	if (len > HTTP_MAX_HEADERS - r->header_read) {
		r->cut = "header";
		return 0;
	}
	r->header_read += len;
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
		r->retry_after[0] = '\0';
	else if (len > sizeof(ra) - 1 &&
	    strncasecmp(data, ra, sizeof(ra) - 1) == 0) {
		for (i = sizeof(ra) - 1; i < len &&
		    o < sizeof(r->retry_after) - 1; i++)
			if (data[i] > 0x20 && data[i] < 0x7f)
				r->retry_after[o++] = data[i];
		r->retry_after[o] = '\0';
	}
	return len;
}

/* The response body start for a reason: printable ASCII only. */
static void
resp_shown(const struct http_resp *r, char *out, size_t outlen)
{
	size_t i, o = 0;

	for (i = 0; i < r->len && i < HTTP_SHOW_RESPONSE &&
	    o + 1 < outlen; i++)
		out[o++] = (char)(r->body[i] >= 0x20 && r->body[i] < 0x7f ?
		    r->body[i] : ' ');
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
}

/* The options set once per request.  CURLE_OK or the first failure. */
static CURLcode
post_setopts(struct http_exporter *x, struct curl_slist *hl,
    const char *body, size_t len, struct http_resp *r, char *errbuf)
{
	CURL *h = x->h;
	CURLcode rc;

	if ((rc = curl_easy_setopt(h, CURLOPT_URL, x->url)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR,
	    "http,https")) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	    x->connect_ms)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, x->timeout_ms)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, resp_write)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_WRITEDATA, r)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, resp_header)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_HEADERDATA, r)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_USERAGENT, HTTP_USER_AGENT)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf)) !=
	    CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_POST, 1L)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
	    (curl_off_t)len)) != CURLE_OK ||
	    (rc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, body)) != CURLE_OK)
		return rc;
	if (x->ca_file != NULL)
		rc = curl_easy_setopt(h, CURLOPT_CAINFO, x->ca_file);
	return rc;
}

static struct curl_slist *
slist_add(struct curl_slist *l, const char *s, bool *ok)
{
	struct curl_slist *n;

	if (!*ok)
		return l;
	if ((n = curl_slist_append(l, s)) == NULL) {
		*ok = false;
		return l;
	}
	return n;
}

/*
 * The signature header for body sent at ts: "X-Refundsync-Signature:
 * sha256=" and the hex HMAC-SHA256 of "<ts>.<body>".  Caller frees.
 */
static char *
sign(const struct http_exporter *x, const char *ts, const char *body,
    size_t len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	char *msg, *hdr;
	size_t tslen = strlen(ts), o;

	/* "ts.body", HMAC'd by length: bytes, not a string. */
	msg = xmalloc(tslen + 1 + len);
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
	memcpy(msg, ts, tslen);
	msg[tslen] = '.';
	memcpy(msg + tslen + 1, body, len);
	if (HMAC(EVP_sha256(), x->secret, (int)x->secretlen,
	    (const unsigned char *)msg, tslen + 1 + len, md, &mdlen) ==
	    NULL) {
		free(msg);
		return NULL;
	}
	free(msg);
	hdr = xmalloc(sizeof("X-Refundsync-Signature: sha256=") +
	    2 * (size_t)mdlen);
	o = strlen("X-Refundsync-Signature: sha256=");
	memcpy(hdr, "X-Refundsync-Signature: sha256=", o);
	for (i = 0; i < mdlen; i++) {
		hdr[o++] = hex[md[i] >> 4];
		hdr[o++] = hex[md[i] & 0xf];
	}
	hdr[o] = '\0';
	return hdr;
}

/* POST one record.  An RS_EXPORT_* result, with a reason in err. */
static int
post_one(struct http_exporter *x, const struct rs_export_record *rec,
    char *err, size_t errlen)
{
	struct curl_slist *hl = NULL;
	struct http_resp resp;
	char errbuf[CURL_ERROR_SIZE], shown[HTTP_SHOW_RESPONSE + 1];
	char ts[32];
	char *body = NULL, *keyhdr = NULL, *tshdr = NULL, *sighdr = NULL;
	size_t len = 0;
	long status = 0;
	CURLcode rc;
	int result = RS_EXPORT_RETRY;
	bool ok = true;

	memset(&resp, 0, sizeof(resp));
	errbuf[0] = '\0';
	if (rec->idempotency_key == NULL || rec->idempotency_key[0] == '\0' ||
	    strpbrk(rec->idempotency_key, "\r\n") != NULL) {
		snprintf(err, errlen, "record %lld: no usable idempotency key",
		    (long long)rec->seq);
		result = RS_EXPORT_PERMANENT;
		goto out;
	}
	if ((body = exporter_record_json(rec, &len)) == NULL) {
		snprintf(err, errlen, "record %lld: too large to send",
		    (long long)rec->seq);
		result = RS_EXPORT_PERMANENT;
		goto out;
	}
	snprintf(ts, sizeof(ts), "%lld", (long long)clock_wall_s());
	keyhdr = xasprintf("Idempotency-Key: %s", rec->idempotency_key);
	tshdr = xasprintf("X-Refundsync-Timestamp: %s", ts);
	if (x->secret != NULL && (sighdr = sign(x, ts, body, len)) == NULL) {
		snprintf(err, errlen, "HMAC-SHA256 failed");
		goto out;
	}
	hl = slist_add(hl, "Content-Type: application/json", &ok);
	hl = slist_add(hl, "Accept: application/json, */*;q=0.5", &ok);
	hl = slist_add(hl, keyhdr, &ok);
	hl = slist_add(hl, tshdr, &ok);
	if (sighdr != NULL)
		hl = slist_add(hl, sighdr, &ok);
	/* No "Expect: 100-continue" round trip for larger bodies. */
	hl = slist_add(hl, "Expect:", &ok);
	if (!ok) {
		snprintf(err, errlen, "curl_slist_append failed");
		goto out;
	}
	curl_easy_reset(x->h);
	if ((rc = post_setopts(x, hl, body, len, &resp, errbuf)) !=
	    CURLE_OK) {
		snprintf(err, errlen, "curl_easy_setopt: %s",
		    curl_easy_strerror(rc));
		goto out;
	}
	rc = curl_easy_perform(x->h);
	if (rc != CURLE_OK && resp.cut != NULL) {
		/* Too large to be an acknowledgement: retried. */
		if (curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status) !=
		    CURLE_OK)
			status = 0;
		snprintf(err, errlen, "%s: answer cut off: its %s is over %zu "
		    "bytes (HTTP %ld)", x->shown_url, resp.cut,
		    strcmp(resp.cut, "body") == 0 ? HTTP_MAX_RESPONSE :
		    HTTP_MAX_HEADERS, status);
		goto out;
	}
	if (rc == CURLE_OUT_OF_MEMORY) {
		/* libcurl's answer to a header line over its 100 KiB limit
		 * (CURL_MAX_HTTP_HEADER) too, which "Out of memory" hides. */
		snprintf(err, errlen, "%s: answer cut off: libcurl gave up "
		    "on it (%s; a header line over 100 KiB does this)",
		    x->shown_url, errbuf[0] != '\0' ? errbuf :
		    curl_easy_strerror(rc));
		goto out;
	}
	if (rc != CURLE_OK) {
		/* Refused, reset, timed out, DNS, TLS: all transient. */
		snprintf(err, errlen, "%s: %s", x->shown_url,
		    errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	if (curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status) !=
	    CURLE_OK || status == 0) {
		snprintf(err, errlen, "%s: no HTTP status", x->shown_url);
		goto out;
	}
	resp_shown(&resp, shown, sizeof(shown));
	if (status >= 200 && status <= 299) {
		log_debug("exporter %s: refund %s: %s accepted: HTTP %ld",
		    x->name, rec->refund_id != NULL ? rec->refund_id : "?",
		    rec->idempotency_key, status);
		result = RS_EXPORT_OK;
		goto out;
	}
	if (status == 429 || (status >= 500 && status <= 599))
		result = RS_EXPORT_RETRY;
	else
		result = RS_EXPORT_PERMANENT;
	snprintf(err, errlen, "%s: HTTP %ld%s%s%s%s%s", x->shown_url, status,
	    resp.retry_after[0] != '\0' ? " (Retry-After: " : "",
	    resp.retry_after, resp.retry_after[0] != '\0' ? ")" : "",
	    shown[0] != '\0' ? ": " : "", shown);
out:
	curl_slist_free_all(hl);
	free(sighdr);
	free(tshdr);
	free(keyhdr);
	free(body);
	return result;
}

static int
http_deliver(void *ctx, const struct rs_export_record *recs, size_t n,
    size_t *done, char *err, size_t errlen)
{
	struct http_exporter *x = ctx;
	size_t i;
	int r;

	*done = 0;
	for (i = 0; i < n; i++) {
		if ((r = post_one(x, &recs[i], err, errlen)) != RS_EXPORT_OK)
			return r;
		*done = i + 1;
	}
	return RS_EXPORT_OK;
}

static void
http_close(void *ctx)
{
	http_free(ctx);
}

const struct rs_exporter_ops exporter_http_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "http",
	.open = http_open,
	.deliver = http_deliver,
	.recover = NULL,
	.close = http_close
};
