/*
 * testutil.c: JWT material, Wix layer builders, a raw HTTP client,
 * harnesses that run the real daemon and the Wix sandbox, and an HTTP
 * sink for the http exporter, shared by every test and by wix-sign.
 *
 * Key decision: nothing here trusts the code under test.  Tokens are
 * signed with OpenSSL directly (never through libjwt or the daemon's
 * verifier), requests are written byte for byte on a plain socket, and
 * the store is read through a separate SQLite connection.  Every wait has
 * a deadline, so a broken daemon fails a test rather than hanging it.
 * Functions are called from the test's main thread, except the HTTP
 * client, which is thread-safe (it keeps no state), and the sink's, which
 * take its lock.
 *
 * A daemon, a sandbox or any child of tu_spawn() dies with the test
 * process (PR_SET_PDEATHSIG), so a failed assertion, which ends a forked
 * check test at once, leaves no process behind (a sandbox also exits by
 * itself after --max-seconds).  A daemon's temporary directory is left
 * behind with daemon.log for a look (RS_TEST_VERBOSE=1 prints which
 * directory each daemon uses).
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <sqlite3.h>

#include "core/export.h"
#include "exporters/posting.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/xmalloc.h"

#include "testutil.h"

extern char **environ;

#define TU_RESP_MAX	(32u * 1024 * 1024)	/* largest response read */
#define TU_READY_MS	15000			/* daemon start-up bound */
#define TU_SEND_MS	10000			/* tu_send_all bound */
#define TU_MAX_LIVE	16			/* daemons per test process */

static void
tu_die(const char *what)
{
	fprintf(stderr, "testutil: %s\n", what);
	ERR_print_errors_fp(stderr);
	abort();
}

void
tu_sleep_ms(int ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* ---- JWT material -------------------------------------------------- */

static char *
bio_to_string(BIO *bio)
{
	char *data, *s;
	long n;

	n = BIO_get_mem_data(bio, &data);
	if (n < 0)
		tu_die("BIO_get_mem_data");
	s = xmalloc((size_t)n + 1);
	memcpy(s, data, (size_t)n);
	s[n] = '\0';
	return s;
}

void
tu_keypair_generate(struct tu_keypair *kp)
{
	EVP_PKEY *pkey;
	BIO *bio;

	pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (pkey == NULL)
		tu_die("EVP_PKEY_Q_keygen");

	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL))
		tu_die("PEM_write_bio_PrivateKey");
	kp->priv_pem = bio_to_string(bio);
	BIO_free(bio);

	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PUBKEY(bio, pkey))
		tu_die("PEM_write_bio_PUBKEY");
	kp->pub_pem = bio_to_string(bio);
	BIO_free(bio);
	EVP_PKEY_free(pkey);
}

void
tu_keypair_cleanup(struct tu_keypair *kp)
{
	if (kp == NULL)
		return;
	freezero_str(kp->priv_pem);
	free(kp->pub_pem);
	kp->priv_pem = kp->pub_pem = NULL;
}

char *
tu_b64url(const void *data, size_t len)
{
	unsigned char *out;
	size_t i, n, olen;

	if (len > (size_t)INT32_MAX / 2)
		tu_die("tu_b64url: input too large");
	olen = 4 * ((len + 2) / 3) + 1;
	out = xmalloc(olen);
	n = (size_t)EVP_EncodeBlock(out, data, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (i = 0; i < n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	return (char *)out;
}

/* Load a private (or, when pub, public) key from PEM text. */
static EVP_PKEY *
load_key(const void *pem, size_t len, bool pub)
{
	EVP_PKEY *pkey;
	BIO *bio;

	if (pem == NULL || len > INT32_MAX)
		return NULL;
	if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
		return NULL;
	if (pub)
		pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	else
		pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return pkey;
}

char *
tu_rsa_jwk(const char *pem)
{
	EVP_PKEY *pkey;
	BIGNUM *n = NULL, *e = NULL;
	unsigned char *nb = NULL, *eb = NULL;
	char *n64 = NULL, *e64 = NULL, *out = NULL;
	int nlen, elen;

	if ((pkey = load_key(pem, strlen(pem), false)) == NULL &&
	    (pkey = load_key(pem, strlen(pem), true)) == NULL)
		goto out;
	if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
	    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e))
		goto out;
	nlen = BN_num_bytes(n);
	elen = BN_num_bytes(e);
	nb = xmalloc((size_t)nlen);
	eb = xmalloc((size_t)elen);
	BN_bn2bin(n, nb);
	BN_bn2bin(e, eb);
	n64 = tu_b64url(nb, (size_t)nlen);
	e64 = tu_b64url(eb, (size_t)elen);
	out = xasprintf("{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}",
	    n64, e64);
out:
	free(nb);
	free(eb);
	free(n64);
	free(e64);
	BN_free(n);
	BN_free(e);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return out;
}

/* Convert a DER ECDSA signature to JOSE's raw r||s (32 bytes each). */
static bool
ecdsa_der_to_raw(const unsigned char *der, size_t len,
    unsigned char raw[64])
{
	ECDSA_SIG *sig;
	const BIGNUM *r, *s;
	const unsigned char *p = der;
	bool ok = false;

	if ((sig = d2i_ECDSA_SIG(NULL, &p, (long)len)) == NULL)
		return false;
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2binpad(r, raw, 32) == 32 &&
	    BN_bn2binpad(s, raw + 32, 32) == 32)
		ok = true;
	ECDSA_SIG_free(sig);
	return ok;
}

/* Sign in with alg; the raw signature goes to sig and siglen. */
static bool
sign_input(enum tu_alg alg, const void *key, size_t keylen,
    const unsigned char *in, size_t inlen, unsigned char **sig,
    size_t *siglen)
{
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	const EVP_MD *digest = EVP_sha256();
	unsigned char *der = NULL;
	size_t derlen = 0;
	unsigned int hlen;
	bool ok = false;

	*sig = NULL;
	*siglen = 0;
	switch (alg) {
	case TU_ALG_NONE:
		*sig = xmalloc(1);
		return true;
	case TU_ALG_HS256:
		*sig = xmalloc(EVP_MAX_MD_SIZE);
		if (keylen > INT32_MAX || HMAC(EVP_sha256(), key, (int)keylen,
		    in, inlen, *sig, &hlen) == NULL) {
			free(*sig);
			*sig = NULL;
			return false;
		}
		*siglen = hlen;
		return true;
	case TU_ALG_ES256:
		if (key == NULL)
			pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		else
			pkey = load_key(key, keylen, false);
		break;
	case TU_ALG_RS512:
		digest = EVP_sha512();
		pkey = load_key(key, keylen, false);
		break;
	case TU_ALG_RS256:
	case TU_ALG_PS256:
		pkey = load_key(key, keylen, false);
		break;
	}
	if (pkey == NULL) {
		fprintf(stderr, "testutil: sign: unusable key\n");
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md, &pctx, digest, NULL, pkey) != 1)
		goto out;
	if (alg == TU_ALG_PS256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1))
		goto out;
	if (EVP_DigestSign(md, NULL, &derlen, in, inlen) != 1)
		goto out;
	der = xmalloc(derlen);
	if (EVP_DigestSign(md, der, &derlen, in, inlen) != 1)
		goto out;
	if (alg == TU_ALG_ES256) {
		*sig = xmalloc(64);
		if (!ecdsa_der_to_raw(der, derlen, *sig)) {
			free(*sig);
			*sig = NULL;
			goto out;
		}
		*siglen = 64;
	} else {
		*sig = der;
		*siglen = derlen;
		der = NULL;
	}
	ok = true;
out:
	if (!ok)
		ERR_print_errors_fp(stderr);
	free(der);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	return ok;
}

char *
tu_jwt_join(const char *h64, const char *p64, const char *s64)
{
	return xasprintf("%s.%s.%s", h64, p64, s64);
}

char *
tu_jwt_sign(enum tu_alg alg, const void *key, size_t keylen,
    const void *hdr, size_t hdrlen, const void *payload, size_t payloadlen)
{
	char *h64, *p64, *s64 = NULL, *input, *out = NULL;
	unsigned char *sig = NULL;
	size_t siglen;

	h64 = tu_b64url(hdr, hdrlen);
	p64 = tu_b64url(payload, payloadlen);
	input = xasprintf("%s.%s", h64, p64);
	if (sign_input(alg, key, keylen, (const unsigned char *)input,
	    strlen(input), &sig, &siglen)) {
		s64 = tu_b64url(sig, siglen);
		out = tu_jwt_join(h64, p64, s64);
	}
	free(h64);
	free(p64);
	free(s64);
	free(input);
	free(sig);
	return out;
}

char *
tu_jwt_rs256(const char *priv_pem, const char *hdr, const char *payload)
{
	return tu_jwt_sign(TU_ALG_RS256, priv_pem, strlen(priv_pem), hdr,
	    strlen(hdr), payload, strlen(payload));
}

/* ---- Wix layers ---------------------------------------------------- */

char *
tu_random_id(const char *prefix)
{
	unsigned char b[8];

	if (RAND_bytes(b, sizeof(b)) != 1)
		tu_die("RAND_bytes");
	return xasprintf("%s%02x%02x%02x%02x%02x%02x%02x%02x", prefix,
	    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
}

char *
tu_now_iso(void)
{
	struct timespec ts;
	struct tm tm;
	char date[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	return xasprintf("%s.%06ldZ", date, ts.tv_nsec / 1000);
}

static char *
print_json(cJSON *item)
{
	char *p, *s;

	if ((p = cJSON_PrintUnformatted(item)) == NULL)
		tu_die("cJSON_PrintUnformatted");
	s = xstrdup(p);
	cJSON_free(p);
	return s;
}

static void
add_str(cJSON *obj, const char *name, const char *val)
{
	if (val != NULL && cJSON_AddStringToObject(obj, name, val) == NULL)
		tu_die("cJSON_AddStringToObject");
}

char *
tu_json_quote(const char *s)
{
	cJSON *str;
	char *out;

	if ((str = cJSON_CreateString(s)) == NULL)
		tu_die("cJSON_CreateString");
	out = print_json(str);
	cJSON_Delete(str);
	return out;
}

char *
tu_refund_json(const struct tu_refund *r)
{
	cJSON *obj;
	char rev[32], *out;

	if ((obj = cJSON_CreateObject()) == NULL)
		tu_die("cJSON_CreateObject");
	add_str(obj, "id", r->id);
	add_str(obj, "chargeId", r->charge_id);
	add_str(obj, "currencyCode", r->currency);
	add_str(obj, "currency", r->currency_legacy);
	add_str(obj, "amount", r->amount);
	add_str(obj, "status", r->status);
	if (r->revision >= 0) {
		snprintf(rev, sizeof(rev), "%lld", (long long)r->revision);
		add_str(obj, "revision", rev);
	}
	add_str(obj, "createdDate", r->created_date);
	add_str(obj, "updatedDate", r->updated_date);
	out = print_json(obj);
	cJSON_Delete(obj);
	return out;
}

char *
tu_layer_c(const struct tu_event *ev)
{
	cJSON *obj = NULL, *entity = NULL, *wrap, *id;
	char seq[32], *now = NULL, *out = NULL;
	const char *entity_id = ev->entity_id;

	if ((entity = cJSON_Parse(ev->entity_json)) == NULL) {
		fprintf(stderr, "testutil: tu_layer_c: entity is not JSON\n");
		goto out;
	}
	if (entity_id == NULL) {
		id = cJSON_GetObjectItemCaseSensitive(entity, "id");
		if (cJSON_IsString(id))
			entity_id = id->valuestring;
	}
	if ((obj = cJSON_CreateObject()) == NULL)
		tu_die("cJSON_CreateObject");
	add_str(obj, "id", ev->id);
	add_str(obj, "entityFqdn", "wix.payments.refunds.v1.refund");
	add_str(obj, "slug", ev->slug == TU_CREATED ? "created" : "updated");
	add_str(obj, "entityId", entity_id);
	if (ev->event_time == NULL)
		now = tu_now_iso();
	add_str(obj, "eventTime", ev->event_time != NULL ? ev->event_time :
	    now);
	cJSON_AddBoolToObject(obj, "triggeredByAnonymizeRequest", 0);
	if (ev->seq >= 0) {
		snprintf(seq, sizeof(seq), "%lld", (long long)ev->seq);
		add_str(obj, "entityEventSequence", seq);
	}
	wrap = cJSON_AddObjectToObject(obj, ev->slug == TU_CREATED ?
	    "createdEvent" : "updatedEvent");
	if (wrap == NULL)
		tu_die("cJSON_AddObjectToObject");
	if (ev->form == TU_FORM_OBJECT) {
		cJSON_AddItemToObject(wrap, ev->slug == TU_CREATED ? "entity" :
		    "currentEntity", entity);
		entity = NULL;
	} else
		add_str(wrap, ev->slug == TU_CREATED ? "entityAsJson" :
		    "currentEntityAsJson", ev->entity_json);
	out = print_json(obj);
out:
	cJSON_Delete(entity);
	cJSON_Delete(obj);
	free(now);
	return out;
}

char *
tu_layer_b(const char *data, const char *instance, const char *event_type)
{
	cJSON *obj;
	char *out;

	if ((obj = cJSON_CreateObject()) == NULL)
		tu_die("cJSON_CreateObject");
	add_str(obj, "data", data);
	add_str(obj, "instanceId", instance);
	add_str(obj, "eventType", event_type);
	out = print_json(obj);
	cJSON_Delete(obj);
	return out;
}

char *
tu_claims(const char *data, int64_t iat)
{
	char *q, *out;

	q = tu_json_quote(data);
	out = xasprintf("{\"data\":%s,\"iat\":%lld,\"exp\":%lld}", q,
	    (long long)iat, (long long)(iat + 3600000));
	free(q);
	return out;
}

char *
tu_webhook(const char *priv_pem, const char *layer_c, const char *instance,
    const char *event_type)
{
	char *b, *claims, *tok;

	b = tu_layer_b(layer_c, instance, event_type);
	claims = tu_claims(b, (int64_t)time(NULL));
	tok = tu_jwt_rs256(priv_pem, TU_DEFAULT_HDR, claims);
	free(b);
	free(claims);
	return tok;
}

char *
tu_refund_webhook(const char *priv_pem, const struct tu_event *ev,
    const struct tu_refund *r, const char *instance)
{
	struct tu_event e = *ev;
	char *entity = NULL, *c, *tok = NULL;

	if (e.entity_json == NULL)
		e.entity_json = entity = tu_refund_json(r);
	if ((c = tu_layer_c(&e)) != NULL)
		tok = tu_webhook(priv_pem, c, instance,
		    e.slug == TU_CREATED ? TU_EVT_CREATED : TU_EVT_UPDATED);
	free(c);
	free(entity);
	return tok;
}

char *
tu_installed_webhook(const char *priv_pem, const char *instance,
    const char *app_id)
{
	cJSON *obj;
	char *c, *tok;

	if ((obj = cJSON_CreateObject()) == NULL)
		tu_die("cJSON_CreateObject");
	add_str(obj, "appId", app_id);
	add_str(obj, "originInstanceId", "");
	c = print_json(obj);
	cJSON_Delete(obj);
	tok = tu_webhook(priv_pem, c, instance, TU_EVT_INSTALLED);
	free(c);
	return tok;
}

/* ---- HTTP client --------------------------------------------------- */

void
tu_http_resp_cleanup(struct tu_http_resp *resp)
{
	if (resp == NULL)
		return;
	free(resp->headers);
	free(resp->body);
	memset(resp, 0, sizeof(*resp));
	resp->status = -1;
}

char *
tu_http_header(const struct tu_http_resp *resp, const char *name)
{
	const char *p, *eol, *v;
	size_t n = strlen(name);

	if (resp->headers == NULL)
		return NULL;
	/* Skip the status line. */
	if ((p = strstr(resp->headers, "\r\n")) == NULL)
		return NULL;
	for (p += 2; *p != '\0'; p = eol + 2) {
		if ((eol = strstr(p, "\r\n")) == NULL)
			eol = p + strlen(p);
		if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 &&
		    p[n] == ':') {
			for (v = p + n + 1; v < eol && (*v == ' ' ||
			    *v == '\t'); v++)
				;
			return xstrndup(v, (size_t)(eol - v));
		}
		if (*eol == '\0')
			break;
	}
	return NULL;
}

static int
remaining_ms(int64_t deadline)
{
	int64_t left = deadline - clock_mono_ms();

	if (left <= 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

int
tu_connect(const char *src, int port, int timeout_ms)
{
	struct sockaddr_in sin, from;
	struct pollfd pfd;
	socklen_t elen;
	int fd, err = 0, one = 1;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1)
		return -1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src != NULL) {
		memset(&from, 0, sizeof(from));
		from.sin_family = AF_INET;
		if (inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
		    bind(fd, (struct sockaddr *)&from, sizeof(from)) == -1)
			goto fail;
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
		return fd;
	if (errno != EINPROGRESS)
		goto fail;
	pfd.fd = fd;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, timeout_ms) != 1)
		goto fail;
	elen = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1 ||
	    err != 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

bool
tu_send_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	int64_t deadline = clock_mono_ms() + TU_SEND_MS;
	struct pollfd pfd;
	ssize_t n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			if (poll(&pfd, 1, remaining_ms(deadline)) != 1)
				return false;
			continue;
		}
		return false;
	}
	return true;
}

/* Parse "HTTP/1.x NNN" at the start of a header block. */
static int
parse_status(const char *h)
{
	int st;

	if (strncmp(h, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)h[7]) ||
	    h[8] != ' ')
		return -1;
	if (!isdigit((unsigned char)h[9]) || !isdigit((unsigned char)h[10]) ||
	    !isdigit((unsigned char)h[11]))
		return -1;
	st = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
	return st;
}

/*
 * Decode a chunked body in place.  Returns 1 when complete (len updated),
 * 0 when more bytes are needed, -1 on a malformed body.
 */
static int
dechunk(char *body, size_t *len)
{
	size_t in = 0, out = 0, n;
	char *end;
	unsigned long long sz;

	for (;;) {
		if ((end = memmem(body + in, *len - in, "\r\n", 2)) == NULL)
			return 0;
		errno = 0;
		sz = strtoull(body + in, NULL, 16);
		if (errno != 0 || sz > TU_RESP_MAX)
			return -1;
		n = (size_t)(end - (body + in)) + 2;
		if (sz == 0) {
			*len = out;
			return 1;
		}
		if (*len - in < n + sz + 2)
			return 0;
		memmove(body + out, body + in + n, sz);
		out += sz;
		in += n + sz + 2;
	}
}

/*
 * Is the response in b complete?  Sets *hdrlen once the header block is
 * known.  Returns 1 complete, 0 incomplete, -1 malformed.
 */
static int
response_complete(const struct buf *b, size_t *hdrlen, bool closed)
{
	const char *end;
	char *scratch;
	size_t blen;
	long long cl = -1;
	struct tu_http_resp tmp;
	char *v;
	int rc;

	if (b->data == NULL || (end = strstr(b->data, "\r\n\r\n")) == NULL)
		return closed ? -1 : 0;
	*hdrlen = (size_t)(end - b->data) + 4;
	memset(&tmp, 0, sizeof(tmp));
	tmp.headers = xstrndup(b->data, *hdrlen);
	rc = 0;
	if ((v = tu_http_header(&tmp, "Transfer-Encoding")) != NULL &&
	    strcasecmp(v, "chunked") == 0) {
		blen = b->len - *hdrlen;
		scratch = xmalloc(blen + 1);
		memcpy(scratch, b->data + *hdrlen, blen);
		rc = dechunk(scratch, &blen);
		free(scratch);
		if (rc == 0 && closed)
			rc = -1;
	} else {
		free(v);
		v = tu_http_header(&tmp, "Content-Length");
		if (v != NULL) {
			errno = 0;
			cl = strtoll(v, NULL, 10);
			if (errno != 0 || cl < 0)
				cl = -1;
		}
		if (parse_status(b->data) == 204 ||
		    parse_status(b->data) == 304)
			cl = 0;
		if (cl >= 0)
			rc = b->len - *hdrlen >= (size_t)cl ? 1 : (closed ?
			    -1 : 0);
		else
			rc = closed ? 1 : 0;
	}
	free(v);
	free(tmp.headers);
	return rc;
}

/* Move a complete response from b into resp. */
static void
response_take(struct buf *b, size_t hdrlen, struct tu_http_resp *resp)
{
	char *v;
	size_t blen;

	resp->headers = xstrndup(b->data, hdrlen);
	blen = b->len - hdrlen;
	resp->body = xmalloc(blen + 1);
	memcpy(resp->body, b->data + hdrlen, blen);
	resp->body[blen] = '\0';
	resp->body_len = blen;
	if ((v = tu_http_header(resp, "Transfer-Encoding")) != NULL &&
	    strcasecmp(v, "chunked") == 0) {
		if (dechunk(resp->body, &blen) == 1)
			resp->body_len = blen;
		resp->body[resp->body_len] = '\0';
	} else if (v == NULL && (v = tu_http_header(resp,
	    "Content-Length")) != NULL) {
		long long cl = strtoll(v, NULL, 10);

		if (cl >= 0 && (size_t)cl < resp->body_len) {
			resp->body_len = (size_t)cl;
			resp->body[cl] = '\0';
		}
	}
	free(v);
}

/* Read until a whole response is in b or the deadline passes. */
static int
read_response_until(int fd, int64_t deadline, struct buf *b,
    struct tu_http_resp *resp)
{
	struct pollfd pfd;
	char chunk[65536];
	size_t hdrlen = 0;
	ssize_t n;
	int rc, st = -1;
	bool closed = false;

	for (;;) {
		rc = response_complete(b, &hdrlen, closed);
		if (rc != 0 || closed)
			break;
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, remaining_ms(deadline)) != 1)
			break;
		n = recv(fd, chunk, sizeof(chunk), 0);
		if (n > 0) {
			if (buf_append(b, chunk, (size_t)n) != RS_OK)
				break;
		} else if (n == 0 || (errno != EINTR && errno != EAGAIN))
			closed = true;
	}
	if (hdrlen > 0 && b->data != NULL)
		st = parse_status(b->data);
	if (st != -1 && resp != NULL) {
		response_take(b, hdrlen, resp);
		resp->status = st;
	}
	return st;
}

int
tu_read_response(int fd, int timeout_ms, struct tu_http_resp *resp)
{
	struct buf b;
	int st;

	if (resp != NULL) {
		memset(resp, 0, sizeof(*resp));
		resp->status = -1;
	}
	buf_init(&b, TU_RESP_MAX);
	st = read_response_until(fd, clock_mono_ms() + timeout_ms, &b, resp);
	buf_cleanup(&b);
	return st;
}

int
tu_wait_closed(int fd, int timeout_ms, int *got_status)
{
	int64_t start = clock_mono_ms(), deadline = start + timeout_ms;
	struct pollfd pfd;
	char chunk[4096];
	ssize_t n;
	bool first = true;

	if (got_status != NULL)
		*got_status = -1;
	for (;;) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, remaining_ms(deadline)) != 1)
			return -1;
		n = recv(fd, chunk, sizeof(chunk) - 1, 0);
		if (n == 0 || (n == -1 && errno != EINTR && errno != EAGAIN))
			return (int)(clock_mono_ms() - start);
		if (n > 0 && first) {
			chunk[n] = '\0';
			if (got_status != NULL && n >= 12)
				*got_status = parse_status(chunk);
			first = false;
		}
	}
}

int
tu_http_raw(int port, const void *req, size_t len, int timeout_ms,
    struct tu_http_resp *resp)
{
	return tu_http_raw_from(NULL, port, req, len, timeout_ms, resp);
}

int
tu_http_raw_from(const char *src, int port, const void *req, size_t len,
    int timeout_ms, struct tu_http_resp *resp)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	const char *p = req;
	struct pollfd pfd;
	struct buf b;
	ssize_t n;
	int fd, st = -1;

	if (resp != NULL) {
		memset(resp, 0, sizeof(*resp));
		resp->status = -1;
	}
	if ((fd = tu_connect(src, port, timeout_ms)) == -1)
		return -1;
	buf_init(&b, TU_RESP_MAX);
	/*
	 * Send while watching for an early answer: a server that rejects a
	 * request by its headers may answer and stop reading the body.
	 */
	while (len > 0) {
		pfd.fd = fd;
		pfd.events = POLLIN | POLLOUT;
		if (poll(&pfd, 1, remaining_ms(deadline)) != 1)
			goto out;
		if (pfd.revents & POLLIN)
			break;
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n == -1 && errno != EINTR && errno != EAGAIN)
			break;	/* closed or reset: read what came back */
	}
	st = read_response_until(fd, deadline, &b, resp);
out:
	buf_cleanup(&b);
	close(fd);
	return st;
}

int
tu_http_post(int port, const char *path, const void *body, size_t len,
    struct tu_http_resp *resp)
{
	char *hdr, *req;
	size_t hlen;
	int st;

	hdr = xasprintf("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
	    "Content-Type: text/plain\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n", path, port, len);
	hlen = strlen(hdr);
	req = xmalloc(hlen + len);
	memcpy(req, hdr, hlen);
	if (len > 0)
		memcpy(req + hlen, body, len);
	st = tu_http_raw(port, req, hlen + len, 10000, resp);
	free(hdr);
	free(req);
	return st;
}

int
tu_http_get(int port, const char *path, struct tu_http_resp *resp)
{
	char *req;
	int st;

	req = xasprintf("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
	    "Connection: close\r\n\r\n", path, port);
	st = tu_http_raw(port, req, strlen(req), 10000, resp);
	free(req);
	return st;
}

bool
tu_is_error_json(const char *body)
{
	cJSON *obj, *e, *r, *it;
	bool ok = false;

	if (body == NULL)
		return false;
	if ((obj = cJSON_ParseWithOpts(body, NULL, 1)) == NULL)
		return false;
	e = cJSON_GetObjectItemCaseSensitive(obj, "error");
	r = cJSON_GetObjectItemCaseSensitive(obj, "reason");
	if (cJSON_IsObject(obj) && cJSON_IsString(e) && cJSON_IsString(r) &&
	    e->valuestring[0] != '\0') {
		ok = true;
		cJSON_ArrayForEach(it, obj) {
			if (!cJSON_IsString(it))
				ok = false;
		}
	}
	cJSON_Delete(obj);
	return ok;
}

/* Does the label text (between the braces) hold the pair want? */
static bool
has_label(const char *labels, size_t len, const char *want)
{
	size_t wl = strlen(want);
	const char *p = labels, *end = labels + len;

	while (p < end) {
		if ((size_t)(end - p) >= wl && strncmp(p, want, wl) == 0 &&
		    (p == labels || p[-1] == ',') &&
		    (p + wl == end || p[wl] == ','))
			return true;
		/* Next pair: skip to a comma outside quotes. */
		while (p < end && *p != '"')
			p++;
		for (p++; p < end && *p != '"'; p++)
			if (*p == '\\')
				p++;
		while (p < end && *p != ',')
			p++;
		if (p < end)
			p++;
	}
	return false;
}

double
tu_metric(const char *text, const char *name, const char *const *labels)
{
	const char *line, *eol, *p, *lb = "", *vp;
	size_t nl = strlen(name), lblen;
	double sum = 0;
	bool found = false, ok;
	size_t i;

	for (line = text; line != NULL && *line != '\0'; line = eol) {
		if ((eol = strchr(line, '\n')) != NULL)
			eol++;
		if (*line == '#' || strncmp(line, name, nl) != 0)
			continue;
		p = line + nl;
		lblen = 0;
		if (*p == '{') {
			lb = p + 1;
			if ((p = strchr(lb, '}')) == NULL)
				continue;
			lblen = (size_t)(p - lb);
			p++;
		} else if (*p != ' ')
			continue;
		ok = true;
		for (i = 0; labels != NULL && labels[i] != NULL; i++)
			if (lblen == 0 || !has_label(lb, lblen, labels[i]))
				ok = false;
		if (!ok)
			continue;
		vp = p;
		while (*vp == ' ')
			vp++;
		sum += strtod(vp, NULL);
		found = true;
	}
	return found ? sum : -1;
}

/* ---- files and processes ------------------------------------------- */

bool
tu_write_file(const char *path, const char *text, bool secret)
{
	size_t len = strlen(text);
	ssize_t n;
	int fd;
	bool ok;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    secret ? 0600 : 0644);
	if (fd == -1) {
		fprintf(stderr, "testutil: %s: %s\n", path, strerror(errno));
		return false;
	}
	n = write(fd, text, len);
	ok = n >= 0 && (size_t)n == len;
	if (close(fd) == -1)
		ok = false;
	if (!ok)
		fprintf(stderr, "testutil: %s: short write\n", path);
	return ok;
}

char *
tu_read_file(const char *path, size_t *lenp)
{
	struct buf b;
	char chunk[65536];
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	buf_init(&b, SIZE_MAX / 2);
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			close(fd);
			buf_cleanup(&b);
			return NULL;
		}
		(void)buf_append(&b, chunk, (size_t)n);
	}
	close(fd);
	if (b.data == NULL)
		(void)buf_append(&b, "", 0);
	return buf_detach(&b, lenp);
}

const char *
tu_binary(void)
{
	const char *b = getenv("RS_BINARY");

	return b != NULL && *b != '\0' ? b : "./refundsync";
}

/* Wait for pid up to timeout_ms.  Returns true and *status if it ended. */
static bool
wait_pid(pid_t pid, int timeout_ms, int *status)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return true;
		if (r == -1 && errno != EINTR)
			return false;
		if (clock_mono_ms() >= deadline)
			return false;
		tu_sleep_ms(5);
	}
}

static int
exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/* Read from fd into b if readable; false at EOF. */
static bool
drain_fd(int fd, struct buf *b)
{
	char chunk[4096];
	ssize_t n;

	n = read(fd, chunk, sizeof(chunk));
	if (n > 0) {
		(void)buf_append(b, chunk, (size_t)n);
		return true;
	}
	return n == -1 && (errno == EINTR || errno == EAGAIN);
}

/*
 * In a child just forked by parent: die with the test, even when an
 * assertion kills it (PR_SET_PDEATHSIG); take in (-1: keep stdin), out
 * and err as the standard streams; exec argv with envp (NULL: this
 * environment).  Never returns.
 */
static void __attribute__((noreturn))
child_exec(pid_t parent, int in, int out, int err, char *const argv[],
    char *const envp[])
{
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	if ((in != -1 && dup2(in, STDIN_FILENO) == -1) ||
	    dup2(out, STDOUT_FILENO) == -1 || dup2(err, STDERR_FILENO) == -1)
		_exit(127);
	if (envp != NULL)
		execve(argv[0], argv, envp);
	else
		execv(argv[0], argv);
	_exit(127);
}

int
tu_run(char *const argv[], int timeout_ms, char **out, char **err)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	int po[2], pe[2], status = 0, rc = -1;
	struct pollfd pfd[2];
	struct buf bo, be;
	bool oopen = true, eopen = true, ended = false;
	pid_t pid, parent;

	if (pipe2(po, O_CLOEXEC) == -1 || pipe2(pe, O_CLOEXEC) == -1)
		tu_die("pipe2");
	parent = getpid();
	if ((pid = fork()) == -1)
		tu_die("fork");
	if (pid == 0)
		child_exec(parent, -1, po[1], pe[1], argv, NULL);
	close(po[1]);
	close(pe[1]);
	buf_init(&bo, 64u * 1024 * 1024);
	buf_init(&be, 64u * 1024 * 1024);
	while ((oopen || eopen) && remaining_ms(deadline) > 0) {
		pfd[0].fd = oopen ? po[0] : -1;
		pfd[0].events = POLLIN;
		pfd[1].fd = eopen ? pe[0] : -1;
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, remaining_ms(deadline)) <= 0)
			continue;
		if (pfd[0].revents != 0)
			oopen = drain_fd(po[0], &bo);
		if (pfd[1].revents != 0)
			eopen = drain_fd(pe[0], &be);
	}
	ended = wait_pid(pid, remaining_ms(deadline), &status);
	if (!ended) {
		fprintf(stderr, "testutil: %s: timed out, killing\n",
		    argv[0]);
		kill(pid, SIGKILL);
		(void)waitpid(pid, &status, 0);
	} else
		rc = exit_code(status);
	close(po[0]);
	close(pe[0]);
	(void)buf_append(&bo, "", 0);
	(void)buf_append(&be, "", 0);
	if (out != NULL)
		*out = buf_detach(&bo, NULL);
	if (err != NULL)
		*err = buf_detach(&be, NULL);
	buf_cleanup(&bo);
	buf_cleanup(&be);
	return rc;
}

pid_t
tu_spawn(char *const argv[], const char *out_path, const char *err_path)
{
	pid_t pid, parent = getpid();
	int fo, fe, nul;

	fo = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	fe = open(err_path != NULL ? err_path : out_path, O_WRONLY | O_CREAT |
	    O_APPEND | O_CLOEXEC, 0644);
	nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pid = -1;
	if (fo == -1 || fe == -1 || nul == -1) {
		fprintf(stderr, "testutil: spawn %s: open: %s\n", argv[0],
		    strerror(errno));
		goto out;
	}
	if ((pid = fork()) == -1) {
		fprintf(stderr, "testutil: spawn %s: fork: %s\n", argv[0],
		    strerror(errno));
		goto out;
	}
	if (pid == 0)
		child_exec(parent, nul, fo, fe, argv, NULL);
out:
	if (fo != -1)
		close(fo);
	if (fe != -1)
		close(fe);
	if (nul != -1)
		close(nul);
	return pid;
}

int
tu_wait_exit(pid_t pid, int timeout_ms)
{
	int status;

	if (pid <= 0)
		return -1;
	if (wait_pid(pid, timeout_ms, &status))
		return exit_code(status);
	kill(pid, SIGKILL);
	(void)waitpid(pid, &status, 0);
	return -1;
}

/* ---- the daemon ---------------------------------------------------- */

/* Daemons of this process still running, killed (logs shown) at exit,
 * for example when a failed assertion ends the test early. */
static struct tu_daemon *live[TU_MAX_LIVE];
static bool atexit_done;

static void
print_log_tail(const struct tu_daemon *d)
{
	char *log;
	size_t len, from;

	if ((log = tu_read_file(d->log_path, &len)) == NULL)
		return;
	from = len > 8192 ? len - 8192 : 0;
	fprintf(stderr, "---- daemon log %s (last %zu bytes) ----\n%s"
	    "---- end of log ----\n", d->log_path, len - from, log + from);
	free(log);
}

static void
live_atexit(void)
{
	int i, status;

	for (i = 0; i < TU_MAX_LIVE; i++) {
		if (live[i] == NULL || live[i]->pid <= 0)
			continue;
		fprintf(stderr, "testutil: test ended with the daemon still "
		    "running in %s\n", live[i]->dir);
		kill(live[i]->pid, SIGKILL);
		(void)waitpid(live[i]->pid, &status, 0);
		live[i]->pid = 0;
		print_log_tail(live[i]);
	}
}

static void
live_add(struct tu_daemon *d)
{
	int i;

	if (!atexit_done) {
		atexit(live_atexit);
		atexit_done = true;
	}
	for (i = 0; i < TU_MAX_LIVE; i++)
		if (live[i] == d)
			return;
	for (i = 0; i < TU_MAX_LIVE; i++)
		if (live[i] == NULL) {
			live[i] = d;
			return;
		}
}

static void
live_remove(const struct tu_daemon *d)
{
	int i;

	for (i = 0; i < TU_MAX_LIVE; i++)
		if (live[i] == d)
			live[i] = NULL;
}

size_t
tu_daemon_log_size(const struct tu_daemon *d)
{
	struct stat sb;

	if (stat(d->log_path, &sb) == -1)
		return 0;
	return (size_t)sb.st_size;
}

char *
tu_daemon_log(const struct tu_daemon *d)
{
	char *s = tu_read_file(d->log_path, NULL);

	return s != NULL ? s : xstrdup("");
}

/* Find a line at or after mark with all needles; NULL if none.  Returns
 * a pointer into log. */
static const char *
find_line(const char *log, size_t len, size_t mark,
    const char *const *needles)
{
	const char *line, *eol;
	char *copy;
	bool all;
	size_t i;

	if (mark > len)
		return NULL;
	for (line = log + mark; *line != '\0'; line = eol + 1) {
		if ((eol = strchr(line, '\n')) == NULL)
			break;	/* only whole lines */
		copy = xstrndup(line, (size_t)(eol - line));
		all = true;
		for (i = 0; needles[i] != NULL; i++)
			if (strstr(copy, needles[i]) == NULL)
				all = false;
		free(copy);
		if (all)
			return line;
	}
	return NULL;
}

bool
tu_daemon_wait_log(const struct tu_daemon *d, size_t mark,
    const char *const *needles, int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	char *log;
	size_t len;
	bool found;

	for (;;) {
		if ((log = tu_read_file(d->log_path, &len)) == NULL)
			log = xstrdup("");
		else
			len = strlen(log);
		found = find_line(log, len, mark, needles) != NULL;
		free(log);
		if (found)
			return true;
		if (clock_mono_ms() >= deadline)
			return false;
		tu_sleep_ms(20);
	}
}

/* The port at the end of "... NEEDLE host:port ..." in line. */
static int
port_after(const char *line, const char *needle)
{
	const char *p, *end, *colon = NULL;
	long port;

	if ((p = strstr(line, needle)) == NULL)
		return -1;
	p += strlen(needle);
	for (end = p; *end != '\0' && *end != '\n' && *end != ' ' &&
	    *end != ','; end++)
		if (*end == ':')
			colon = end;
	if (colon == NULL)
		return -1;
	port = strtol(colon + 1, NULL, 10);
	return port > 0 && port < 65536 ? (int)port : -1;
}

/* Is there a line after mark saying "ready" (not "readyz")? */
static bool
has_ready_line(const char *log, size_t mark)
{
	const char *p;

	for (p = log + mark; (p = strstr(p, "ready")) != NULL; p += 5) {
		if (isalnum((unsigned char)p[5]) || p[5] == '_')
			continue;
		if (p > log && (isalnum((unsigned char)p[-1]) ||
		    p[-1] == '_' || p[-1] == '/'))
			continue;
		if (strchr(p, '\n') != NULL)
			return true;
	}
	return false;
}

static bool
wait_ready(struct tu_daemon *d)
{
	int64_t deadline = clock_mono_ms() + TU_READY_MS;
	static const char *const pub[] = { "public listener on ", NULL };
	static const char *const adm[] = { "admin listener on ", NULL };
	const char *line;
	char *log;
	size_t len;
	int status;

	d->port = d->admin_port = 0;
	for (;;) {
		if ((log = tu_read_file(d->log_path, &len)) != NULL) {
			len = strlen(log);
			if (d->port <= 0 && (line = find_line(log, len,
			    d->log_mark, pub)) != NULL)
				d->port = port_after(line, pub[0]);
			if (d->admin_port <= 0 && (line = find_line(log, len,
			    d->log_mark, adm)) != NULL)
				d->admin_port = port_after(line, adm[0]);
			if (d->port > 0 && d->log_mark <= len &&
			    has_ready_line(log, d->log_mark)) {
				free(log);
				return true;
			}
			free(log);
		}
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			fprintf(stderr, "testutil: daemon exited early "
			    "(status %d)\n", exit_code(status));
			d->pid = 0;
			break;
		}
		if (clock_mono_ms() >= deadline) {
			fprintf(stderr, "testutil: daemon not ready after "
			    "%d ms\n", TU_READY_MS);
			break;
		}
		tu_sleep_ms(20);
	}
	print_log_tail(d);
	return false;
}

/* Does environment entry e set one of the names in extra? */
static bool
env_overridden(const char *e, char *const *extra)
{
	const char *eq = strchr(e, '=');
	size_t n = eq != NULL ? (size_t)(eq - e) : strlen(e);
	size_t i;

	if (n == strlen("JOURNAL_STREAM") && strncmp(e, "JOURNAL_STREAM",
	    n) == 0)
		return true;
	for (i = 0; extra != NULL && extra[i] != NULL; i++)
		if (strncmp(extra[i], e, n) == 0 && extra[i][n] == '=')
			return true;
	return false;
}

static bool
spawn(struct tu_daemon *d)
{
	char **envp;
	size_t n = 0, m = 0, i;
	int fd, nul;
	pid_t pid, parent;
	char *argv[6];

	d->log_mark = tu_daemon_log_size(d);
	for (i = 0; environ[i] != NULL; i++)
		n++;
	for (i = 0; d->env != NULL && d->env[i] != NULL; i++)
		m++;
	envp = xcalloc(n + m + 1, sizeof(*envp));
	m = 0;
	for (i = 0; environ[i] != NULL; i++)
		if (!env_overridden(environ[i], d->env))
			envp[m++] = environ[i];
	for (i = 0; d->env != NULL && d->env[i] != NULL; i++)
		envp[m++] = d->env[i];
	envp[m] = NULL;
	argv[0] = xstrdup(tu_binary());
	argv[1] = (char *)"serve";
	argv[2] = (char *)"-c";
	argv[3] = d->conf_path;
	argv[4] = NULL;

	fd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
	    0644);
	nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd == -1 || nul == -1)
		tu_die("open log");
	parent = getpid();
	if ((pid = fork()) == -1)
		tu_die("fork");
	if (pid == 0)
		child_exec(parent, nul, fd, fd, argv, envp);
	close(fd);
	close(nul);
	free(envp);
	free(argv[0]);
	d->pid = pid;
	live_add(d);
	if (getenv("RS_TEST_VERBOSE") != NULL)
		fprintf(stderr, "testutil: daemon %ld in %s\n", (long)pid,
		    d->dir);
	return wait_ready(d);
}

bool
tu_daemon_write_config(struct tu_daemon *d, const struct tu_conf *conf)
{
	static const struct tu_conf none;
	char *text;
	bool ok;

	if (conf == NULL)
		conf = &none;
	text = xasprintf(
	    "[server]\n"
	    "listen = %s\n"
	    "admin_listen = 127.0.0.1:0\n"
	    "%s%s"
	    "[store]\n"
	    "path = %s\n"
	    "%s%s"
	    "[wix]\n"
	    "public_key_file = %s\n"
	    "%s%s"
	    "%s%s",
	    conf->listen != NULL ? conf->listen : "127.0.0.1:0",
	    conf->server != NULL ? conf->server : "",
	    conf->server != NULL ? "\n" : "",
	    d->db_path,
	    conf->store != NULL ? conf->store : "",
	    conf->store != NULL ? "\n" : "",
	    conf->public_key_file != NULL ? conf->public_key_file :
	    d->pub_path,
	    conf->wix != NULL ? conf->wix : "",
	    conf->wix != NULL ? "\n" : "",
	    conf->tail != NULL ? conf->tail : "",
	    conf->tail != NULL ? "\n" : "");
	ok = tu_write_file(d->conf_path, text, false);
	free(text);
	return ok;
}

struct tu_daemon *
tu_daemon_start(const struct tu_conf *conf, const char *const *env)
{
	struct tu_daemon *d;
	size_t i, n = 0;

	d = xcalloc(1, sizeof(*d));
	d->dir = tu_tempdir();
	d->conf_path = xasprintf("%s/refundsync.conf", d->dir);
	d->log_path = xasprintf("%s/daemon.log", d->dir);
	d->db_path = xasprintf("%s/refundsync.db", d->dir);
	d->pub_path = xasprintf("%s/wix-public.pem", d->dir);
	for (i = 0; env != NULL && env[i] != NULL; i++)
		n++;
	if (n > 0) {
		d->env = xcalloc(n + 1, sizeof(*d->env));
		for (i = 0; i < n; i++)
			d->env[i] = xstrdup(env[i]);
	}
	tu_keypair_generate(&d->key);
	if (!tu_write_file(d->pub_path, d->key.pub_pem, false) ||
	    !tu_daemon_write_config(d, conf) || !spawn(d)) {
		fprintf(stderr, "testutil: daemon failed to start in %s\n",
		    d->dir);
		if (d->pid > 0)
			tu_daemon_kill9(d);
		live_remove(d);
		/* Keep the directory for a look; free the rest. */
		free(d->dir);
		d->dir = NULL;
		tu_daemon_free(d);
		return NULL;
	}
	return d;
}

bool
tu_daemon_restart(struct tu_daemon *d)
{
	if (d->pid > 0) {
		fprintf(stderr, "testutil: restart: still running\n");
		return false;
	}
	return spawn(d);
}

bool
tu_daemon_signal(struct tu_daemon *d, int sig)
{
	return d->pid > 0 && kill(d->pid, sig) == 0;
}

int
tu_daemon_stop(struct tu_daemon *d, int timeout_ms)
{
	return tu_daemon_stop_sig(d, SIGTERM, timeout_ms);
}

int
tu_daemon_stop_sig(struct tu_daemon *d, int sig, int timeout_ms)
{
	int status, rc;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, sig);
	if (wait_pid(d->pid, timeout_ms, &status))
		rc = exit_code(status);
	else {
		fprintf(stderr, "testutil: daemon ignored signal %d for %d "
		    "ms\n", sig, timeout_ms);
		kill(d->pid, SIGKILL);
		(void)waitpid(d->pid, &status, 0);
		rc = -1;
	}
	d->pid = 0;
	if (rc != 0)
		print_log_tail(d);
	return rc;
}

void
tu_daemon_kill9(struct tu_daemon *d)
{
	int status;

	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	(void)waitpid(d->pid, &status, 0);
	d->pid = 0;
}

int
tu_daemon_post(const struct tu_daemon *d, const char *tok,
    struct tu_http_resp *resp)
{
	return tu_http_post(d->port, d->webhook_path != NULL ?
	    d->webhook_path : "/webhooks", tok, strlen(tok), resp);
}

char *
tu_daemon_metrics(const struct tu_daemon *d)
{
	struct tu_http_resp resp;
	char *text;

	if (tu_http_get(d->admin_port, "/metrics", &resp) != 200) {
		tu_http_resp_cleanup(&resp);
		return xstrdup("");
	}
	text = resp.body;
	resp.body = NULL;
	tu_http_resp_cleanup(&resp);
	return text;
}

const char *
tu_faketime_lib(void)
{
	static const char *const paths[] = {
		"/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
		"/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
		"/usr/lib/faketime/libfaketimeMT.so.1",
		"/usr/local/lib/faketime/libfaketimeMT.so.1",
	};
	size_t i;

	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], R_OK) == 0)
			return paths[i];
	return NULL;
}

char *
tu_tempdir(void)
{
	const char *tmp = getenv("TMPDIR");
	char *templ;

	templ = xasprintf("%s/rs-test-XXXXXX", tmp != NULL && *tmp != '\0' ?
	    tmp : "/tmp");
	if (mkdtemp(templ) == NULL)
		tu_die("mkdtemp");
	return templ;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* Let a directory's entries be removed (a test may have taken the
 * permission away); files need none. */
static int
rm_open_dir(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
	if (flag == FTW_D || flag == FTW_DNR)
		(void)chmod(path, 0700);
	return 0;
}

void
tu_rmtree(const char *dir)
{
	if (dir == NULL || getenv("RS_KEEP_TMP") != NULL)
		return;
	(void)nftw(dir, rm_open_dir, 16, FTW_PHYS);
	(void)nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void
tu_daemon_free(struct tu_daemon *d)
{
	size_t i;

	if (d == NULL)
		return;
	tu_daemon_kill9(d);
	live_remove(d);
	if (d->dir != NULL)
		tu_rmtree(d->dir);
	for (i = 0; d->env != NULL && d->env[i] != NULL; i++)
		free(d->env[i]);
	free(d->env);
	free(d->dir);
	free(d->conf_path);
	free(d->log_path);
	free(d->db_path);
	free(d->pub_path);
	tu_keypair_cleanup(&d->key);
	free(d);
}

/* ---- the Wix sandbox ---------------------------------------------- */

#define TU_SANDBOX_READY_MS	10000
#define TU_SANDBOX_STOP_MS	5000
#define TU_SANDBOX_HTTP_MS	30000
#define TU_SANDBOX_MAX_PAGES	200000	/* a walk that goes on is a loop */
#define TU_SANDBOX_LISTENING	"wix-sandbox listening on 127.0.0.1:"

char *
tu_sandbox_binary(void)
{
	const char *env = getenv("RS_SANDBOX"), *bin = tu_binary();
	const char *slash = strrchr(bin, '/');

	if (env != NULL && *env != '\0')
		return xstrdup(env);
	if (slash == NULL)
		return xstrdup("./tests/sandbox/wix-sandbox");
	return xasprintf("%.*s/tests/sandbox/wix-sandbox",
	    (int)(slash - bin), bin);
}

/* The port of the sandbox's "listening" line in its log, or 0. */
static int
sandbox_port(const char *log_path)
{
	char *text = tu_read_file(log_path, NULL), *p;
	long port = 0;

	p = text != NULL ? strstr(text, TU_SANDBOX_LISTENING) : NULL;
	if (p != NULL && strchr(p, '\n') != NULL)
		port = strtol(p + strlen(TU_SANDBOX_LISTENING), NULL, 10);
	free(text);
	return port > 0 && port < 65536 ? (int)port : 0;
}

bool
tu_sandbox_start(struct tu_sandbox *sb, const char *dir, int seed,
    const char *instances, const char *const *extra)
{
	char *argv[64], seeds[24], *log;
	int64_t deadline;
	int n = 0, status;
	size_t i;

	memset(sb, 0, sizeof(*sb));
	sb->log_path = xasprintf("%s/sandbox.log", dir);
	snprintf(seeds, sizeof(seeds), "%d", seed);
	argv[n++] = tu_sandbox_binary();
	argv[n++] = (char *)"--listen";
	argv[n++] = (char *)"127.0.0.1:0";
	argv[n++] = (char *)"--seed";
	argv[n++] = seeds;
	argv[n++] = (char *)"--instances";
	argv[n++] = (char *)(uintptr_t)instances;
	argv[n++] = (char *)"--max-seconds";
	argv[n++] = (char *)"300";
	for (i = 0; extra != NULL && extra[i] != NULL && n < 63; i++)
		argv[n++] = (char *)(uintptr_t)extra[i];
	argv[n] = NULL;
	sb->pid = tu_spawn(argv, sb->log_path, NULL);
	free(argv[0]);
	deadline = clock_mono_ms() + TU_SANDBOX_READY_MS;
	while (sb->pid > 0 && (sb->port = sandbox_port(sb->log_path)) == 0 &&
	    clock_mono_ms() < deadline) {
		if (waitpid(sb->pid, &status, WNOHANG) == sb->pid) {
			sb->pid = 0;	/* it gave up: reaped */
			break;
		}
		tu_sleep_ms(10);
	}
	if (sb->port == 0) {
		log = tu_read_file(sb->log_path, NULL);
		fprintf(stderr, "testutil: the sandbox did not start; its "
		    "log %s:\n%s\n", sb->log_path, log != NULL ? log : "");
		free(log);
		tu_sandbox_stop(sb);
		return false;
	}
	sb->base = xasprintf("http://127.0.0.1:%d", sb->port);
	return true;
}

void
tu_sandbox_stop(struct tu_sandbox *sb)
{
	if (sb->pid > 0) {
		kill(sb->pid, SIGTERM);
		if (tu_wait_exit(sb->pid, TU_SANDBOX_STOP_MS) == -1)
			fprintf(stderr, "testutil: sandbox: killed\n");
	}
	free(sb->log_path);
	free(sb->base);
	memset(sb, 0, sizeof(*sb));
}

int
tu_sandbox_request(const struct tu_sandbox *sb, const char *method,
    const char *path, const char *auth, const char *body,
    struct tu_http_resp *resp)
{
	char *req, *ah;
	int st;

	ah = auth != NULL ? xasprintf("Authorization: %s\r\n", auth) :
	    xstrdup("");
	req = xasprintf("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
	    "Content-Type: application/json\r\n%sContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s", method, path, sb->port, ah,
	    body != NULL ? strlen(body) : 0, body != NULL ? body : "");
	st = tu_http_raw(sb->port, req, strlen(req), TU_SANDBOX_HTTP_MS,
	    resp);
	free(req);
	free(ah);
	return st;
}

bool
tu_sandbox_control(const struct tu_sandbox *sb, const char *path,
    const char *json)
{
	struct tu_http_resp resp;
	int st;

	memset(&resp, 0, sizeof(resp));
	st = tu_sandbox_request(sb, "POST", path, NULL, json, &resp);
	if (st != 200)
		fprintf(stderr, "testutil: sandbox POST %s %s: HTTP %d %s\n",
		    path, json, st, resp.body != NULL ? resp.body : "");
	tu_http_resp_cleanup(&resp);
	return st == 200;
}

char *
tu_sandbox_token(const struct tu_sandbox *sb, const char *instance)
{
	struct tu_http_resp resp;
	const cJSON *t;
	cJSON *o = NULL;
	char *body, *tok = NULL;
	int st;

	memset(&resp, 0, sizeof(resp));
	body = xasprintf("{\"grant_type\":\"client_credentials\","
	    "\"client_id\":\"" TU_SANDBOX_APP_ID "\",\"client_secret\":\""
	    TU_SANDBOX_APP_SECRET "\",\"instance_id\":\"%s\"}", instance);
	st = tu_sandbox_request(sb, "POST", "/oauth2/token", NULL, body,
	    &resp);
	if (st == 200 && (o = cJSON_Parse(resp.body)) != NULL &&
	    cJSON_IsString(t = cJSON_GetObjectItemCaseSensitive(o,
	    "access_token")))
		tok = xstrdup(t->valuestring);
	else
		fprintf(stderr, "testutil: sandbox token for %s: HTTP %d %s\n",
		    instance, st, resp.body != NULL ? resp.body : "");
	cJSON_Delete(o);
	tu_http_resp_cleanup(&resp);
	free(body);
	return tok;
}

/* One Query Refunds page: its refunds moved to all, and *cursor set to
 * the next page's cursor (NULL: the last page).  false on an error. */
static bool
sandbox_page(const struct tu_sandbox *sb, const char *tok, int limit,
    char **cursor, cJSON *all)
{
	struct tu_http_resp resp;
	cJSON *o = NULL, *arr, *r;
	const cJSON *pm, *hn, *next;
	char *body;
	bool ok = false;
	int st;

	if (*cursor == NULL)
		body = xasprintf("{\"query\":{\"sort\":[{\"fieldName\":"
		    "\"createdDate\",\"order\":\"ASC\"}],"
		    "\"cursorPaging\":{\"limit\":%d}}}", limit);
	else
		body = xasprintf("{\"query\":{\"cursorPaging\":"
		    "{\"limit\":%d,\"cursor\":\"%s\"}}}", limit, *cursor);
	free(*cursor);
	*cursor = NULL;
	memset(&resp, 0, sizeof(resp));
	st = tu_sandbox_request(sb, "POST",
	    "/payments/refunds/v1/refunds/query", tok, body, &resp);
	if (st != 200 || (o = cJSON_Parse(resp.body)) == NULL ||
	    !cJSON_IsArray(arr = cJSON_GetObjectItemCaseSensitive(o,
	    "refunds"))) {
		fprintf(stderr, "testutil: Query Refunds: HTTP %d %.300s\n",
		    st, resp.body != NULL ? resp.body : "");
		goto out;
	}
	while ((r = cJSON_DetachItemFromArray(arr, 0)) != NULL)
		cJSON_AddItemToArray(all, r);
	pm = cJSON_GetObjectItemCaseSensitive(o, "pagingMetadata");
	hn = cJSON_GetObjectItemCaseSensitive(pm, "hasNext");
	next = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(pm, "cursors"), "next");
	if (cJSON_IsTrue(hn) && cJSON_IsString(next))
		*cursor = xstrdup(next->valuestring);
	ok = true;
out:
	cJSON_Delete(o);
	tu_http_resp_cleanup(&resp);
	free(body);
	return ok;
}

bool
tu_sandbox_log(const struct tu_sandbox *sb, const char *instance,
    const char *part, struct tu_sandbox_entry **out, size_t *n)
{
	struct tu_sandbox_entry *v = NULL;
	struct tu_http_resp resp;
	const cJSON *t, *in, *p, *s, *f;
	char *line, *nl;
	cJSON *o;
	int st;

	*out = NULL;
	*n = 0;
	memset(&resp, 0, sizeof(resp));
	st = tu_sandbox_request(sb, "GET", "/_sandbox/log", NULL, NULL,
	    &resp);
	if (st != 200) {
		fprintf(stderr, "tu_sandbox_log: GET /_sandbox/log: %d\n", st);
		tu_http_resp_cleanup(&resp);
		return false;
	}
	for (line = resp.body; line != NULL && *line != '\0'; line = nl) {
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl++ = '\0';
		if ((o = cJSON_Parse(line)) == NULL)
			continue;
		t = cJSON_GetObjectItemCaseSensitive(o, "t_ms");
		in = cJSON_GetObjectItemCaseSensitive(o, "instance");
		p = cJSON_GetObjectItemCaseSensitive(o, "path");
		s = cJSON_GetObjectItemCaseSensitive(o, "status");
		f = cJSON_GetObjectItemCaseSensitive(o, "fault");
		if (cJSON_IsNumber(t) && cJSON_IsString(p) &&
		    cJSON_IsNumber(s) && (instance == NULL ||
		    (cJSON_IsString(in) &&
		    strcmp(in->valuestring, instance) == 0)) &&
		    (part == NULL || strstr(p->valuestring, part) != NULL)) {
			struct tu_sandbox_entry *e;

			v = xreallocarray(v, *n + 1, sizeof(*v));
			e = &v[(*n)++];
			e->t_ms = (int64_t)t->valuedouble;
			snprintf(e->instance, sizeof(e->instance), "%s",
			    cJSON_IsString(in) ? in->valuestring : "");
			snprintf(e->path, sizeof(e->path), "%s",
			    p->valuestring);
			e->status = s->valueint;
			snprintf(e->fault, sizeof(e->fault), "%s",
			    cJSON_IsString(f) ? f->valuestring : "");
		}
		cJSON_Delete(o);
	}
	tu_http_resp_cleanup(&resp);
	*out = v;
	return true;
}

cJSON *
tu_sandbox_refunds(const struct tu_sandbox *sb, const char *instance,
    int limit)
{
	cJSON *all = cJSON_CreateArray();
	char *tok, *cursor = NULL;
	int pages = 0;

	if ((tok = tu_sandbox_token(sb, instance)) == NULL)
		goto fail;
	do {
		if (++pages > TU_SANDBOX_MAX_PAGES) {
			fprintf(stderr, "testutil: Query Refunds of %s: more "
			    "than %d pages\n", instance,
			    TU_SANDBOX_MAX_PAGES);
			goto fail;
		}
		if (!sandbox_page(sb, tok, limit, &cursor, all))
			goto fail;
	} while (cursor != NULL);
	free(tok);
	return all;
fail:
	free(cursor);
	free(tok);
	cJSON_Delete(all);
	return NULL;
}

char *
tu_sandbox_wix_keys(const struct tu_sandbox *sb, const char *dir)
{
	char *secret, *keys = NULL;

	secret = xasprintf("%s/app-secret", dir);
	if (tu_write_file(secret, TU_SANDBOX_APP_SECRET "\n", true))
		keys = xasprintf("app_id = " TU_SANDBOX_APP_ID "\n"
		    "app_secret_file = %s\napi_base = %s\n", secret,
		    sb->base);
	free(secret);
	return keys;
}

/* ---- the store ----------------------------------------------------- */

char *
tu_sql(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	const unsigned char *txt;
	char *out = NULL;
	int rc;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		fprintf(stderr, "testutil: sqlite open %s: %s\n", path,
		    db != NULL ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
		fprintf(stderr, "testutil: sql \"%s\": %s\n", sql,
		    sqlite3_errmsg(db));
		goto out;
	}
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		if ((txt = sqlite3_column_text(stmt, 0)) != NULL)
			out = xstrdup((const char *)txt);
	} else if (rc != SQLITE_DONE)
		fprintf(stderr, "testutil: sql \"%s\": %s\n", sql,
		    sqlite3_errmsg(db));
out:
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return out;
}

void
tu_sql_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK) {
		fprintf(stderr, "testutil: sqlite open %s: %s\n", path,
		    db != NULL ? sqlite3_errmsg(db) : "out of memory");
		tu_die("tu_sql_exec");
	}
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "testutil: sql \"%s\": %s\n", sql,
		    err != NULL ? err : "?");
		tu_die("tu_sql_exec");
	}
	sqlite3_close(db);
}

static char	*vsqlf(const struct tu_daemon *, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));

static char *
vsqlf(const struct tu_daemon *d, const char *fmt, va_list ap)
{
	char *sql, *out;

	if (vasprintf(&sql, fmt, ap) == -1)
		tu_die("vasprintf");
	out = tu_sql(d->db_path, sql);
	free(sql);
	return out;
}

char *
tu_sqlf(const struct tu_daemon *d, const char *fmt, ...)
{
	va_list ap;
	char *out;

	va_start(ap, fmt);
	out = vsqlf(d, fmt, ap);
	va_end(ap);
	return out;
}

int64_t
tu_sql_int(const struct tu_daemon *d, int64_t def, const char *fmt, ...)
{
	va_list ap;
	char *s, *end;
	long long v;

	va_start(ap, fmt);
	s = vsqlf(d, fmt, ap);
	va_end(ap);
	if (s == NULL)
		return def;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s)
		v = def;
	free(s);
	return v;
}

/* ---- the HTTP sink ------------------------------------------------- */

#define TU_SINK_CONN_TIMEOUT_S	10	/* an idle connection is closed */
#define TU_SINK_POLL_MS		5	/* tu_sink_wait()'s step */

/* An applied key. */
struct sink_key {
	char	*key;
	int64_t	 seq;		/* from the body that applied it */
	int	 posts;		/* 2xx answers with this key */
};

struct tu_sink {
	struct MHD_Daemon	*d;
	int			 port;
	pthread_mutex_t		 mu;		/* guards all below */
	struct tu_sink_policy	 pol;		/* refuse_refund owned */
	struct tu_sink_step	 steps[TU_SINK_MAX_STEPS]; /* strings owned */
	size_t			 nsteps;
	struct sink_key		*keys;		/* in the order applied */
	size_t			 nkeys;
	struct tu_sink_req	*log;
	size_t			 nlog;
	struct tu_sink_stats	 st;
};

/* A request being received. */
struct sink_conn {
	struct buf	 body;
	bool		 toobig;
};

/* The answer decided for a request.  Strings owned. */
struct sink_answer {
	int	 status;
	char	*body;
	char	*header;	/* "Name: value", or NULL */
	int	 delay_ms;
};

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static bool
status_matches(int got, int want)
{
	if (want == 0)
		return true;
	if (want >= 1 && want <= 5)
		return got / 100 == want;
	return got == want;
}

static void
sink_step_cleanup(struct tu_sink_step *st)
{
	free((char *)(uintptr_t)st->body);
	free((char *)(uintptr_t)st->header);
	memset(st, 0, sizeof(*st));
}

static void
sink_req_cleanup(struct tu_sink_req *r)
{
	free(r->method);
	free(r->path);
	free(r->key);
	free(r->content_type);
	free(r->timestamp);
	free(r->signature);
	free(r->authorization);
	free(r->refund_id);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* A deep copy of r into out. */
static void
sink_req_copy(struct tu_sink_req *out, const struct tu_sink_req *r)
{
	*out = *r;
	out->method = dup_or_null(r->method);
	out->path = dup_or_null(r->path);
	out->key = dup_or_null(r->key);
	out->content_type = dup_or_null(r->content_type);
	out->timestamp = dup_or_null(r->timestamp);
	out->signature = dup_or_null(r->signature);
	out->authorization = dup_or_null(r->authorization);
	out->refund_id = dup_or_null(r->refund_id);
	out->body = r->body != NULL ? xstrndup(r->body, r->body_len) : NULL;
}

/*
 * The request as a log entry (t_ms, status, delay_ms and applied are
 * filled in later), and why it is malformed, or NULL.
 */
static const char *
sink_parse(struct MHD_Connection *c, const char *url, const char *method,
    struct sink_conn *rq, struct tu_sink_req *r)
{
	const cJSON *seq, *key, *id;
	cJSON *o = NULL;
	const char *why = NULL;

	memset(r, 0, sizeof(*r));
	r->seq = -1;
	r->method = xstrdup(method);
	r->path = xstrdup(url);
	r->key = dup_or_null(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Idempotency-Key"));
	r->content_type = dup_or_null(MHD_lookup_connection_value(c,
	    MHD_HEADER_KIND, "Content-Type"));
	r->timestamp = dup_or_null(MHD_lookup_connection_value(c,
	    MHD_HEADER_KIND, "X-Refundsync-Timestamp"));
	r->signature = dup_or_null(MHD_lookup_connection_value(c,
	    MHD_HEADER_KIND, "X-Refundsync-Signature"));
	r->authorization = dup_or_null(MHD_lookup_connection_value(c,
	    MHD_HEADER_KIND, "Authorization"));
	if (rq->body.data != NULL) {
		r->body = xstrndup(rq->body.data, rq->body.len);
		r->body_len = rq->body.len;
		o = cJSON_ParseWithLength(rq->body.data, rq->body.len);
	}
	if (cJSON_IsString(id = cJSON_GetObjectItemCaseSensitive(o,
	    "refund_id")))
		r->refund_id = xstrdup(id->valuestring);
	if (cJSON_IsNumber(seq = cJSON_GetObjectItemCaseSensitive(o, "seq")))
		r->seq = (int64_t)seq->valuedouble;
	key = cJSON_GetObjectItemCaseSensitive(o, "idempotency_key");
	if (strcmp(method, "POST") != 0)
		why = "not a POST";
	else if (rq->toobig)
		why = "a body over TU_SINK_MAX_BODY";
	else if (r->key == NULL)
		why = "no Idempotency-Key";
	else if (!cJSON_IsObject(o) || r->seq < 0)
		why = "no JSON object with a \"seq\"";
	else if (!cJSON_IsString(key) || strcmp(key->valuestring,
	    r->key) != 0)
		why = "the body's idempotency_key differs from the header";
	cJSON_Delete(o);
	return why;
}

/* Apply a 2xx to r's key, under s->mu. */
static void
sink_apply(struct tu_sink *s, struct tu_sink_req *r)
{
	struct sink_key *k = NULL;
	size_t i;

	for (i = 0; i < s->nkeys; i++)
		if (strcmp(s->keys[i].key, r->key) == 0) {
			k = &s->keys[i];
			break;
		}
	if (k == NULL) {
		/* The effect, once per key. */
		s->keys = xreallocarray(s->keys, s->nkeys + 1,
		    sizeof(*s->keys));
		k = &s->keys[s->nkeys++];
		k->key = xstrdup(r->key);
		k->seq = r->seq;
		k->posts = 0;
		r->applied = true;
		s->st.effects++;
	} else {
		s->st.again++;
		if (k->posts == 1)
			s->st.keys_again++;
		if (k->seq != r->seq)
			s->st.conflicts++;
	}
	k->posts++;
}

/* Decide the answer to a parsed request and log it, under s->mu.  r is
 * moved into the log. */
static void
sink_decide(struct tu_sink *s, struct tu_sink_req *r, const char *bad,
    struct sink_answer *a)
{
	struct tu_sink_step step;

	memset(a, 0, sizeof(*a));
	memset(&step, 0, sizeof(step));
	s->st.requests++;
	a->delay_ms = s->pol.delay_ms;
	if (bad != NULL) {
		s->st.bad++;
		snprintf(s->st.bad_why, sizeof(s->st.bad_why), "%s", bad);
		a->status = 400;
		a->body = xstrdup("{\"error\":\"bad request\"}");
	} else if (s->nsteps > 0) {
		step = s->steps[0];
		memmove(&s->steps[0], &s->steps[1], (s->nsteps - 1) *
		    sizeof(s->steps[0]));
		memset(&s->steps[--s->nsteps], 0, sizeof(s->steps[0]));
		a->status = step.status;
		a->body = step.body != NULL ? xstrdup(step.body) :
		    xstrdup(step.status / 100 == 2 ? "{\"ok\":true}" :
		    "{\"error\":\"injected\"}");
		a->header = dup_or_null(step.header);
		a->delay_ms += step.delay_ms;
		if (step.status / 100 != 2)
			s->st.failed++;
		sink_step_cleanup(&step);
	} else if (s->pol.fail_all || (s->pol.fail_every > 0 &&
	    s->st.requests % s->pol.fail_every == 0)) {
		s->st.failed++;
		a->status = s->pol.fail_status != 0 ? s->pol.fail_status : 503;
		a->body = xstrdup("{\"error\":\"busy\"}");
	} else if (s->pol.refuse_refund != NULL && r->refund_id != NULL &&
	    strcmp(r->refund_id, s->pol.refuse_refund) == 0) {
		s->st.refused++;
		a->status = 400;
		a->body = xstrdup("{\"error\":\"unknown account\"}");
	} else {
		a->status = s->pol.ok_status != 0 ? s->pol.ok_status : 200;
		a->body = xstrdup("{\"ok\":true}");
	}
	if (bad == NULL && a->status / 100 == 2)
		sink_apply(s, r);
	r->t_ms = clock_mono_ms();
	r->status = a->status;
	r->delay_ms = a->delay_ms;
	s->log = xreallocarray(s->log, s->nlog + 1, sizeof(*s->log));
	s->log[s->nlog++] = *r;
	memset(r, 0, sizeof(*r));
}

static enum MHD_Result
sink_respond(struct MHD_Connection *c, const struct sink_answer *a)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *name = NULL, *value;

	resp = MHD_create_response_from_buffer(strlen(a->body), a->body,
	    MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	if (a->header != NULL && (value = strchr(a->header, ':')) != NULL) {
		name = xstrndup(a->header, (size_t)(value - a->header));
		for (value++; *value == ' ' || *value == '\t'; value++)
			;
		(void)MHD_add_response_header(resp, name, value);
	}
	ret = MHD_queue_response(c, (unsigned int)a->status, resp);
	MHD_destroy_response(resp);
	free(name);
	return ret;
}

static enum MHD_Result
sink_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct tu_sink *s = cls;
	struct sink_conn *rq = *con_cls;
	struct sink_answer a;
	struct tu_sink_req r;
	const char *bad;
	enum MHD_Result ret;

	(void)version;
	if (rq == NULL) {
		rq = xcalloc(1, sizeof(*rq));
		buf_init(&rq->body, TU_SINK_MAX_BODY);
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_size > 0) {
		if (buf_append(&rq->body, upload, *upload_size) != RS_OK)
			rq->toobig = true;
		*upload_size = 0;
		return MHD_YES;
	}
	bad = sink_parse(c, url, method, rq, &r);
	pthread_mutex_lock(&s->mu);
	sink_decide(s, &r, bad, &a);
	pthread_mutex_unlock(&s->mu);
	tu_sleep_ms(a.delay_ms);
	ret = sink_respond(c, &a);
	free(a.body);
	free(a.header);
	return ret;
}

static void
sink_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct sink_conn *rq = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (rq != NULL) {
		buf_cleanup(&rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

/* Copy p into s->pol (NULL: the zero policy), under s->mu. */
static void
sink_policy_copy(struct tu_sink *s, const struct tu_sink_policy *p)
{
	free((char *)(uintptr_t)s->pol.refuse_refund);
	memset(&s->pol, 0, sizeof(s->pol));
	if (p != NULL) {
		s->pol = *p;
		s->pol.refuse_refund = dup_or_null(p->refuse_refund);
	}
}

struct tu_sink *
tu_sink_start(const struct tu_sink_policy *policy)
{
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sin;
	struct tu_sink *s = xcalloc(1, sizeof(*s));

	pthread_mutex_init(&s->mu, NULL);
	sink_policy_copy(s, policy);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, sink_handler, s,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
	    MHD_OPTION_NOTIFY_COMPLETED, sink_completed, s,
	    MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int)TU_SINK_CONN_TIMEOUT_S, MHD_OPTION_END);
	if (s->d == NULL ||
	    (info = MHD_get_daemon_info(s->d,
	    MHD_DAEMON_INFO_BIND_PORT)) == NULL || info->port == 0) {
		fprintf(stderr, "testutil: sink: cannot listen on "
		    "127.0.0.1:0\n");
		tu_sink_free(s);
		return NULL;
	}
	s->port = (int)info->port;
	return s;
}

void
tu_sink_free(struct tu_sink *s)
{
	size_t i;

	if (s == NULL)
		return;
	if (s->d != NULL)
		MHD_stop_daemon(s->d);
	for (i = 0; i < s->nkeys; i++)
		free(s->keys[i].key);
	free(s->keys);
	for (i = 0; i < s->nlog; i++)
		sink_req_cleanup(&s->log[i]);
	free(s->log);
	for (i = 0; i < s->nsteps; i++)
		sink_step_cleanup(&s->steps[i]);
	sink_policy_copy(s, NULL);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

int
tu_sink_port(const struct tu_sink *s)
{
	return s->port;
}

void
tu_sink_set_policy(struct tu_sink *s, const struct tu_sink_policy *policy)
{
	pthread_mutex_lock(&s->mu);
	sink_policy_copy(s, policy);
	pthread_mutex_unlock(&s->mu);
}

bool
tu_sink_script(struct tu_sink *s, const struct tu_sink_step *steps,
    size_t n)
{
	struct tu_sink_step *st;
	bool ok;
	size_t i;

	pthread_mutex_lock(&s->mu);
	if ((ok = n <= TU_SINK_MAX_STEPS - s->nsteps)) {
		for (i = 0; i < n; i++) {
			st = &s->steps[s->nsteps++];
			*st = steps[i];
			st->body = dup_or_null(steps[i].body);
			st->header = dup_or_null(steps[i].header);
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (!ok)
		fprintf(stderr, "testutil: sink: more than %d script steps\n",
		    TU_SINK_MAX_STEPS);
	return ok;
}

void
tu_sink_stats(struct tu_sink *s, struct tu_sink_stats *st)
{
	pthread_mutex_lock(&s->mu);
	*st = s->st;
	pthread_mutex_unlock(&s->mu);
}

int
tu_sink_posts(struct tu_sink *s, const char *key)
{
	size_t i;
	int n = 0;

	pthread_mutex_lock(&s->mu);
	for (i = 0; i < s->nkeys; i++)
		if (strcmp(s->keys[i].key, key) == 0) {
			n = s->keys[i].posts;
			break;
		}
	pthread_mutex_unlock(&s->mu);
	return n;
}

int
tu_sink_count(struct tu_sink *s, const char *key, int status)
{
	size_t i;
	int n = 0;

	pthread_mutex_lock(&s->mu);
	for (i = 0; i < s->nlog; i++)
		if (status_matches(s->log[i].status, status) &&
		    (key == NULL || (s->log[i].key != NULL &&
		    strcmp(s->log[i].key, key) == 0)))
			n++;
	pthread_mutex_unlock(&s->mu);
	return n;
}

bool
tu_sink_wait(struct tu_sink *s, const char *key, int status, int want,
    int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;

	while (tu_sink_count(s, key, status) < want) {
		if (clock_mono_ms() >= deadline)
			return false;
		tu_sleep_ms(TU_SINK_POLL_MS);
	}
	return true;
}

char *
tu_sink_key(struct tu_sink *s, size_t i)
{
	char *k = NULL;

	pthread_mutex_lock(&s->mu);
	if (i < s->nkeys)
		k = xstrdup(s->keys[i].key);
	pthread_mutex_unlock(&s->mu);
	return k;
}

struct tu_sink_req *
tu_sink_log(struct tu_sink *s, size_t *n)
{
	struct tu_sink_req *v = NULL;
	size_t i;

	pthread_mutex_lock(&s->mu);
	*n = s->nlog;
	if (s->nlog > 0) {
		v = xcalloc(s->nlog, sizeof(*v));
		for (i = 0; i < s->nlog; i++)
			sink_req_copy(&v[i], &s->log[i]);
	}
	pthread_mutex_unlock(&s->mu);
	return v;
}

void
tu_sink_log_free(struct tu_sink_req *log, size_t n)
{
	size_t i;

	for (i = 0; log != NULL && i < n; i++)
		sink_req_cleanup(&log[i]);
	free(log);
}

/* ---- the four standard exporters ----------------------------------- */

const char *const tu_exporter_names[TU_NEXPORTERS] = { "j", "c", "l", "h" };

char *
tu_exporters_conf(int sink_port, int batch_j, int batch_c, int batch_l,
    int batch_h)
{
	return xasprintf(
	    "[exporter j]\ntype = jsonl\npath = out.jsonl\nbatch = %d\n"
	    "poll_ms = 20\n"
	    "[exporter c]\ntype = csv\npath = out.csv\nbatch = %d\n"
	    "poll_ms = 20\n"
	    "[exporter l]\ntype = ledger\npath = out.journal\nbatch = %d\n"
	    "poll_ms = 20\n"
	    "[exporter h]\ntype = http\nurl = http://127.0.0.1:%d/hook\n"
	    "batch = %d\npoll_ms = 20\nretry_initial_ms = 20\n"
	    "retry_max_ms = 200\ntimeout = 5\n",
	    batch_j, batch_c, batch_l, sink_port, batch_h);
}

int64_t
tu_last_change(const struct tu_daemon *d)
{
	return tu_sql_int(d, 0, "SELECT coalesce(max(seq), 0) FROM changes");
}

int64_t
tu_exporter_position(const struct tu_daemon *d, const char *name)
{
	return tu_sql_int(d, -1, "SELECT position FROM exporter_positions"
	    " WHERE exporter = '%s'", name);
}

bool
tu_exporters_caught_up(const struct tu_daemon *d, const char *const *names,
    size_t n, int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms, last;
	size_t i;

	for (;;) {
		last = tu_last_change(d);
		for (i = 0; i < n; i++)
			if (tu_exporter_position(d, names[i]) != last)
				break;
		if (i == n)
			return true;
		if (clock_mono_ms() > deadline) {
			for (i = 0; i < n; i++)
				fprintf(stderr, "testutil: exporter %s at %lld "
				    "of %lld\n", names[i], (long long)
				    tu_exporter_position(d, names[i]),
				    (long long)last);
			return false;
		}
		tu_sleep_ms(20);
	}
}

/* What the change log says the targets hold. */
struct expect {
	int64_t	*seqs;		/* every change */
	size_t	 n;
	int64_t	*posting;	/* the changes that post (ledger) */
	size_t	 nposting;
	char	**hkeys;	/* exporter h's key for each change */
};

static void
expect_cleanup(struct expect *x)
{
	size_t i;

	for (i = 0; i < x->n; i++)
		free(x->hkeys[i]);
	free(x->hkeys);
	free(x->seqs);
	free(x->posting);
	memset(x, 0, sizeof(*x));
}

/* One change, as the exporters see it (export_record_fill()). */
static enum rs_status
expect_change(void *arg, const struct store_change *c)
{
	struct expect *x = arg;
	struct rs_export_record r;

	export_record_fill(&r, c);
	x->seqs = xreallocarray(x->seqs, x->n + 1, sizeof(*x->seqs));
	x->hkeys = xreallocarray(x->hkeys, x->n + 1, sizeof(*x->hkeys));
	x->posting = xreallocarray(x->posting, x->n + 1,
	    sizeof(*x->posting));
	x->seqs[x->n] = c->seq;
	x->hkeys[x->n] = export_idempotency_key("h", c, r.posting);
	if (r.posting != RS_POSTING_NONE)
		x->posting[x->nposting++] = c->seq;
	x->n++;
	return RS_OK;
}

static bool
expect_load(const char *db_path, struct expect *x)
{
	struct store_options opt = { .busy_timeout_ms = 5000,
	    .readonly = true };
	struct store *st = NULL;
	enum rs_status rc;
	char *why = NULL;
	bool ok = false;

	memset(x, 0, sizeof(*x));
	if (store_open(db_path, &opt, &st, &why) != RS_OK) {
		fprintf(stderr, "testutil: %s\n", why != NULL ? why : db_path);
		free(why);
		return false;
	}
	if ((rc = store_changes_foreach(st, NULL, expect_change, x)) != RS_OK)
		fprintf(stderr, "testutil: %s: %s\n", db_path,
		    rs_strstatus(rc));
	else if (x->n == 0)
		fprintf(stderr, "testutil: %s: no changes\n", db_path);
	else
		ok = true;
	store_close(st);
	return ok;
}

/*
 * The seqs a file names, in order: the number after prefix at the start
 * of each line, after the first skip lines (0, the ledger's header
 * commit, is passed over).  false if it cannot be read or its last line
 * is torn.  *out: caller frees.
 */
static bool
file_seqs(const char *path, const char *prefix, size_t skip,
    int64_t **out, size_t *n)
{
	char *text = tu_read_file(path, NULL), *line, *nl;
	size_t plen = strlen(prefix), lineno = 0;
	bool ok = true;
	int64_t v;

	*out = NULL;
	*n = 0;
	if (text == NULL) {
		fprintf(stderr, "testutil: %s: cannot read\n", path);
		return false;
	}
	for (line = text; *line != '\0'; line = nl + 1) {
		if ((nl = strchr(line, '\n')) == NULL) {
			fprintf(stderr, "testutil: %s: the last line is "
			    "torn\n", path);
			ok = false;
			break;
		}
		*nl = '\0';
		if (lineno++ < skip || strncmp(line, prefix, plen) != 0)
			continue;
		if ((v = strtoll(line + plen, NULL, 10)) == 0)
			continue;
		*out = xreallocarray(*out, *n + 1, sizeof(**out));
		(*out)[(*n)++] = v;
	}
	free(text);
	return ok;
}

/* The seqs path names must be exactly want[0..nwant). */
static bool
file_holds(const char *dir, const char *name, const char *prefix,
    size_t skip, const int64_t *want, size_t nwant)
{
	char *path = xasprintf("%s/%s", dir, name);
	int64_t *got = NULL;
	size_t ngot = 0, i;
	bool ok;

	if ((ok = file_seqs(path, prefix, skip, &got, &ngot))) {
		for (i = 0; ok && i < ngot && i < nwant; i++)
			if (got[i] != want[i]) {
				fprintf(stderr, "testutil: %s: entry %zu is "
				    "seq %lld, want %lld (a duplicate or a "
				    "gap)\n", name, i, (long long)got[i],
				    (long long)want[i]);
				ok = false;
			}
		if (ok && ngot != nwant) {
			fprintf(stderr, "testutil: %s: %zu entries, want "
			    "%zu\n", name, ngot, nwant);
			ok = false;
		}
	}
	free(got);
	free(path);
	return ok;
}

bool
tu_exports_exact(const struct tu_daemon *d, struct tu_sink *s)
{
	struct tu_sink_stats st;
	struct expect x;
	bool ok;
	size_t i;

	if (!expect_load(d->db_path, &x))
		return false;
	ok = file_holds(d->dir, "out.jsonl", "{\"seq\":", 0, x.seqs, x.n) &&
	    file_holds(d->dir, "out.csv", "", 1, x.seqs, x.n) &&
	    file_holds(d->dir, "out.journal", "; rs-seq: ", 0, x.posting,
	    x.nposting);
	tu_sink_stats(s, &st);
	if (ok && (st.conflicts != 0 || st.bad != 0 ||
	    st.effects != (int64_t)x.n)) {
		fprintf(stderr, "testutil: the sink applied %lld keys for %zu "
		    "changes, %lld conflicts, %lld malformed (%s)\n",
		    (long long)st.effects, x.n, (long long)st.conflicts,
		    (long long)st.bad, st.bad_why);
		ok = false;
	}
	for (i = 0; ok && i < x.n; i++)
		if (tu_sink_posts(s, x.hkeys[i]) < 1) {
			fprintf(stderr, "testutil: the sink never got %s\n",
			    x.hkeys[i]);
			ok = false;
		}
	expect_cleanup(&x);
	return ok;
}
