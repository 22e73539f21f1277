/*
 * jwtverify.c: verifying Wix webhook JWTs (RS256 only).
 *
 * Key decision: the signature is checked with OpenSSL EVP_DigestVerify*
 * (RSA PKCS#1 v1.5 with SHA-256) against EVP_PKEYs parsed ONCE, when the
 * keys are loaded, and not with libjwt 1.10.2's jwt_decode().  Per
 * HARDENING.md that libjwt has algorithm confusion (an HS256 token whose
 * HMAC secret is our public PEM is accepted), alloca()s each segment (a
 * 9 MB token crashes the process), re-parses the PEM on every call,
 * parses the claims with jansson (which keeps the last of duplicate keys,
 * so our strict parser would never see the duplicate), and cannot tell a
 * bad signature from a bad payload, while SPEC.md needs 401 for the one
 * and 400 for the other.  libjwt is still used by the test tooling to
 * sign tokens, which cross-checks this code against another
 * implementation.
 *
 * The order is: a gate on the raw bytes (length, charset, three non-empty
 * segments, strict base64url), the header (strict JSON, alg exactly
 * "RS256", everything else ignored), the signature against every
 * configured key, and only then the payload (strict JSON object) and its
 * claims (exp required; exp, nbf and iat integers; exp, nbf and iat
 * checked against the injected clock with a leeway, iat only against
 * the future).
 *
 * Threads: a key set is built once (at start or on SIGHUP, by the thread
 * loading the config) and its keys are immutable afterwards; read-only
 * use of an EVP_PKEY and a fetched EVP_MD is thread-safe in OpenSSL 3.
 * Setting up a verify operation costs a quarter of the RSA check itself
 * in OpenSSL 3 (provider look-ups), so each key keeps a stack of
 * EVP_PKEY_CTXs set up once for RSA PKCS#1 v1.5 with SHA-256: a call
 * takes one under the set's mutex, verifies the SHA-256 digest it
 * computed with it, and gives it back.  An EVP_PKEY_CTX is never used by
 * two threads at once; there are at most as many as threads that ever
 * verified at the same time.  So any number of HTTP threads may verify
 * with one set at the same time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cjson/cJSON.h>

#include "adapters/jwtverify.h"
#include "domain/json.h"
#include "util/log.h"
#include "util/xmalloc.h"

/* Smallest RSA modulus accepted, in bits. */
#define JWTV_MIN_RSA_BITS	2048
/* Ceiling on a key's text (PEM or base64 of PEM) and on a key file. */
#define JWTV_MAX_KEY_TEXT	(64 * 1024)
/* Claims are integers a double holds exactly: 0 .. 2^53. */
#define JWTV_MAX_TIME		((int64_t)1 << 53)

/* A verify operation set up for one key, waiting to be used again. */
struct jwtv_vctx {
	struct jwtv_vctx	*next;
	EVP_PKEY_CTX		*ctx;	/* owned */
};

/* Per key, a stack of idle contexts, guarded by mtx. */
struct jwtv_idle {
	pthread_mutex_t		  mtx;
	struct jwtv_vctx	**stacks;	/* owned; nkeys, each owned */
};

struct jwtv_keys {
	EVP_PKEY	**pkeys;	/* owned; nkeys RSA public keys */
	size_t		  nkeys;
	EVP_MD		 *sha256;	/* owned; fetched once */
	/* The idle contexts (see the top): a pointer, so that a verify
	 * may use them through a const key set; the keys never change. */
	struct jwtv_idle *idle;		/* owned */
};

static const char *const reason_names[] = {
	[JWTV_OK] = "ok",
	[JWTV_EMPTY] = "empty",
	[JWTV_TOO_LONG] = "too_long",
	[JWTV_CHARSET] = "charset",
	[JWTV_FORMAT] = "format",
	[JWTV_HEADER] = "header",
	[JWTV_ALG] = "alg",
	[JWTV_SIGNATURE] = "signature",
	[JWTV_CLAIMS] = "claims",
	[JWTV_EXPIRED] = "expired",
	[JWTV_NOT_YET_VALID] = "not_yet_valid",
	[JWTV_PAYLOAD] = "payload"
};

const char *
jwtv_reason_name(enum jwtv_reason r)
{
	if ((size_t)r >= sizeof(reason_names) / sizeof(reason_names[0]) ||
	    reason_names[r] == NULL)
		return "unknown";
	return reason_names[r];
}

/*
 * Base64, written by hand rather than with EVP_DecodeBlock: that one is
 * standard base64 only ('+', '/'), wants '=' padding, accepts white space
 * and returns the padded length.  JWT segments are base64url with no
 * padding (RFC 7515), and a strict decoder refuses the lengths no encoder
 * produces (len % 4 == 1) and non-zero trailing bits, so that each token
 * has exactly one spelling.
 */
static int
b64_value(unsigned char c, bool url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

/*
 * b64_value() as two tables ([0] standard, [1] url), built once: the
 * per-character branches were a tenth of the webhook path's own CPU.
 */
#define B64_BAD	0xff		/* in b64_tab: not in the alphabet */
static unsigned char	b64_tab[2][256];
static pthread_once_t	b64_once = PTHREAD_ONCE_INIT;

static void
b64_tab_init(void)
{
	int v, c, url;

	for (url = 0; url < 2; url++)
		for (c = 0; c < 256; c++) {
			v = b64_value((unsigned char)c, url == 1);
			b64_tab[url][c] = v < 0 ? B64_BAD : (unsigned char)v;
		}
}

/*
 * Decode len bytes of unpadded base64 (base64url if url).  Returns true
 * and a NUL-terminated buffer in *out (caller owns; free()) of *outlen
 * bytes, or false.
 */
static bool
b64_decode(const char *in, size_t len, bool url, unsigned char **out,
    size_t *outlen)
{
	const unsigned char *tab;
	unsigned char	*p = NULL;
	uint32_t	 acc = 0;
	size_t		 i, n = 0;
	int		 bits = 0, v;

	if (len % 4 == 1)
		return false;
	(void)pthread_once(&b64_once, b64_tab_init);
	tab = b64_tab[url ? 1 : 0];
	p = xmalloc(len / 4 * 3 + 3);
	for (i = 0; i < len; i++) {
		if ((v = tab[(unsigned char)in[i]]) == B64_BAD)
			goto fail;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			p[n++] = (unsigned char)(acc >> bits);
			acc &= (1U << bits) - 1;
		}
	}
	/* 2 or 4 bits left over: they must be zero. */
	if (acc != 0)
		goto fail;
	p[n] = '\0';
	*out = p;
	*outlen = n;
	return true;
fail:
	free(p);
	return false;
}

static bool
is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	    c == '\f' || c == '\v';
}

/* Skip white space on both ends of [*s, *s + *len). */
static void
trim(const char **s, size_t *len)
{
	while (*len > 0 && is_space((unsigned char)(*s)[0])) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && is_space((unsigned char)(*s)[*len - 1]))
		(*len)--;
}

/*
 * Standard base64 of a PEM text, as Wix's SDK accepts it: white space
 * anywhere is skipped (base64(1) wraps at 76 columns) and '=' padding is
 * optional but, if present, must be right.
 */
static bool
b64_decode_std(const char *in, size_t len, unsigned char **out,
    size_t *outlen)
{
	char	*packed;
	size_t	 i, n = 0, pad = 0;
	bool	 ok = false;

	packed = xmalloc(len + 1);
	for (i = 0; i < len; i++)
		if (!is_space((unsigned char)in[i]))
			packed[n++] = in[i];
	while (n > 0 && packed[n - 1] == '=') {
		n--;
		pad++;
	}
	if (pad > 2 || (pad > 0 && (n + pad) % 4 != 0))
		goto out;
	ok = b64_decode(packed, n, false, out, outlen);
out:
	free(packed);
	return ok;
}

static bool
has_prefix(const char *s, size_t len, const char *prefix)
{
	size_t	plen = strlen(prefix);

	return len >= plen && memcmp(s, prefix, plen) == 0;
}

/*
 * Parse one PEM block holding an RSA public key, SPKI ("PUBLIC KEY") or
 * PKCS#1 ("RSA PUBLIC KEY").  Only white space may surround the block.
 * Returns the key (caller owns; EVP_PKEY_free()) or NULL and *why.
 */
static EVP_PKEY *
parse_pem(const char *text, size_t len, const char **why)
{
	BIO			*bio = NULL;
	EVP_PKEY		*pkey = NULL;
	char			*name = NULL, *header = NULL, *rest = NULL;
	unsigned char		*der = NULL;
	const unsigned char	*p;
	long			 derlen = 0, restlen;

	*why = "not a PEM public key";
	trim(&text, &len);
	if (!has_prefix(text, len, "-----BEGIN ") || len > JWTV_MAX_KEY_TEXT)
		goto out;
	if ((bio = BIO_new_mem_buf(text, (int)len)) == NULL)
		goto out;
	if (PEM_read_bio(bio, &name, &header, &der, &derlen) != 1)
		goto out;
	/* Public keys are never encrypted: no Proc-Type or DEK-Info. */
	if (header[0] != '\0' || derlen <= 0)
		goto out;
	restlen = BIO_get_mem_data(bio, &rest);
	for (; restlen > 0; restlen--, rest++)
		if (!is_space((unsigned char)*rest))
			goto out;

	p = der;
	if (strcmp(name, "PUBLIC KEY") == 0)
		pkey = d2i_PUBKEY(NULL, &p, derlen);
	else if (strcmp(name, "RSA PUBLIC KEY") == 0)
		pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, derlen);
	else
		goto out;
	if (pkey == NULL || p != der + derlen) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
		goto out;
	}
	/* "RSA-PSS" keys cannot verify PKCS#1 v1.5 and are refused too. */
	if (!EVP_PKEY_is_a(pkey, "RSA")) {
		*why = "not an RSA key";
		EVP_PKEY_free(pkey);
		pkey = NULL;
		goto out;
	}
	if (EVP_PKEY_get_bits(pkey) < JWTV_MIN_RSA_BITS) {
		*why = "RSA key shorter than 2048 bits";
		EVP_PKEY_free(pkey);
		pkey = NULL;
		goto out;
	}
	*why = NULL;
out:
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	BIO_free(bio);
	if (pkey == NULL)
		ERR_clear_error();
	return pkey;
}

enum rs_status
jwtv_keys_add_pem(struct jwtv_keys **keys, const char *text, size_t len,
    const char **why)
{
	struct jwtv_keys	*k;
	struct jwtv_vctx	**st;
	EVP_PKEY		*pkey = NULL;
	EVP_MD			*md = NULL;
	unsigned char		*pem = NULL;
	size_t			 pemlen;
	const char		*t = text;
	size_t			 tlen = len;

	*why = "not a PEM public key";
	if (text == NULL || len == 0 || len > JWTV_MAX_KEY_TEXT)
		return RS_ERR_CONFIG;
	trim(&t, &tlen);
	if (has_prefix(t, tlen, "-----BEGIN "))
		pkey = parse_pem(t, tlen, why);
	else if (b64_decode_std(t, tlen, &pem, &pemlen)) {
		/* Only one level: the base64 must hold the PEM text. */
		pkey = parse_pem((const char *)pem, pemlen, why);
		free(pem);
	}
	if (pkey == NULL)
		return RS_ERR_CONFIG;

	if ((k = *keys) == NULL) {
		if ((md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL) {
			ERR_clear_error();
			EVP_PKEY_free(pkey);
			*why = "SHA-256 is not available in OpenSSL";
			return RS_ERR_CONFIG;
		}
		k = xcalloc(1, sizeof(*k));
		k->sha256 = md;
		k->idle = xcalloc(1, sizeof(*k->idle));
		if (pthread_mutex_init(&k->idle->mtx, NULL) != 0)
			fatalx("jwtverify: cannot create a mutex");
		*keys = k;
	}
	/* An array of EVP_PKEY pointers: sizeof(EVP_PKEY *) is meant. */
	/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
	k->pkeys = xreallocarray(k->pkeys, k->nkeys + 1, sizeof(*k->pkeys));
	/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
	st = xreallocarray(k->idle->stacks, k->nkeys + 1, sizeof(*st));
	st[k->nkeys] = NULL;
	k->idle->stacks = st;
	k->pkeys[k->nkeys++] = pkey;
	*why = NULL;
	return RS_OK;
}

enum rs_status
jwtv_keys_add_file(struct jwtv_keys **keys, const char *path,
    const char **why)
{
	FILE		*fp = NULL;
	char		*text = NULL;
	size_t		 len = 0, n;
	enum rs_status	 st = RS_ERR_CONFIG;

	if ((fp = fopen(path, "rb")) == NULL) {
		if (errno == ENOENT)
			*why = "key file not found";
		else if (errno == EACCES)
			*why = "key file not readable: permission denied";
		else
			*why = "cannot open key file";
		goto out;
	}
	/* One byte over the ceiling tells a full file from a long one. */
	text = xmalloc(JWTV_MAX_KEY_TEXT + 1);
	while (len <= JWTV_MAX_KEY_TEXT &&
	    (n = fread(text + len, 1, JWTV_MAX_KEY_TEXT + 1 - len, fp)) > 0)
		len += n;
	if (ferror(fp)) {
		*why = "cannot read key file";
		goto out;
	}
	if (len > JWTV_MAX_KEY_TEXT) {
		*why = "key file larger than 64 KiB";
		goto out;
	}
	st = jwtv_keys_add_pem(keys, text, len, why);
out:
	if (fp != NULL)
		(void)fclose(fp);	/* only read: nothing to lose */
	free(text);
	return st;
}

size_t
jwtv_keys_count(const struct jwtv_keys *keys)
{
	return keys == NULL ? 0 : keys->nkeys;
}

void
jwtv_keys_free(struct jwtv_keys *keys)
{
	struct jwtv_vctx *v;
	size_t	i;

	if (keys == NULL)
		return;
	for (i = 0; i < keys->nkeys; i++) {
		while ((v = keys->idle->stacks[i]) != NULL) {
			keys->idle->stacks[i] = v->next;
			EVP_PKEY_CTX_free(v->ctx);
			free(v);
		}
		EVP_PKEY_free(keys->pkeys[i]);
	}
	free(keys->idle->stacks);
	(void)pthread_mutex_destroy(&keys->idle->mtx);
	free(keys->idle);
	free(keys->pkeys);
	EVP_MD_free(keys->sha256);
	free(keys);
}

/* The JWT alphabet: base64url plus the segment separator. */
static bool
is_token_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/*
 * An idle verify context for key i, or a new one set up for RSA PKCS#1
 * v1.5 with SHA-256 (NULL if OpenSSL cannot).  The caller owns it until
 * vctx_put().
 */
static struct jwtv_vctx *
vctx_get(const struct jwtv_keys *keys, size_t i)
{
	struct jwtv_vctx *v;

	pthread_mutex_lock(&keys->idle->mtx);
	if ((v = keys->idle->stacks[i]) != NULL)
		keys->idle->stacks[i] = v->next;
	pthread_mutex_unlock(&keys->idle->mtx);
	if (v != NULL)
		return v;
	v = xcalloc(1, sizeof(*v));
	if ((v->ctx = EVP_PKEY_CTX_new_from_pkey(NULL, keys->pkeys[i],
	    NULL)) == NULL ||
	    EVP_PKEY_verify_init(v->ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(v->ctx, RSA_PKCS1_PADDING) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(v->ctx, keys->sha256) <= 0) {
		EVP_PKEY_CTX_free(v->ctx);
		free(v);
		ERR_clear_error();
		return NULL;
	}
	return v;
}

/* Give v back to key i's stack. */
static void
vctx_put(const struct jwtv_keys *keys, size_t i, struct jwtv_vctx *v)
{
	pthread_mutex_lock(&keys->idle->mtx);
	v->next = keys->idle->stacks[i];
	keys->idle->stacks[i] = v;
	pthread_mutex_unlock(&keys->idle->mtx);
}

/*
 * One RSASSA-PKCS1-v1_5 SHA-256 check of sig over msg with key i: the
 * digest here, then the RSA check of it with a context set up once.
 * The same as EVP_DigestVerify() with SHA-256 and PKCS#1 padding (the
 * DigestInfo must name SHA-256).
 */
static bool
verify_one(const struct jwtv_keys *keys, size_t i, const char *msg,
    size_t msglen, const unsigned char *sig, size_t siglen)
{
	EVP_PKEY		*pkey = keys->pkeys[i];
	struct jwtv_vctx	*v;
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen = 0;
	bool			 ok = false;

	/*
	 * RSA verification pads a short signature with leading zeros; RFC
	 * 7518 says it is exactly the modulus size, so anything else is a
	 * different (malleated) token.
	 */
	if (EVP_PKEY_get_size(pkey) <= 0 ||
	    siglen != (size_t)EVP_PKEY_get_size(pkey))
		return false;
	if (EVP_Digest(msg, msglen, md, &mdlen, keys->sha256, NULL) != 1) {
		ERR_clear_error();
		return false;
	}
	if ((v = vctx_get(keys, i)) == NULL)
		return false;
	ok = EVP_PKEY_verify(v->ctx, sig, siglen, md, mdlen) == 1;
	vctx_put(keys, i, v);
	if (!ok)
		ERR_clear_error();
	return ok;
}

/*
 * Read the time claim name: absent is fine (*present false); otherwise it
 * must be an integral JSON number in 0 .. 2^53.  Returns false if not.
 */
static bool
claim_time(const cJSON *claims, const char *name, bool *present,
    int64_t *out)
{
	const cJSON	*item;
	double		 d;

	*present = false;
	if ((item = json_get(claims, name)) == NULL)
		return true;
	if (!cJSON_IsNumber(item))
		return false;
	d = item->valuedouble;
	/* Written so that NaN fails too. */
	if (!(d >= 0.0 && d <= (double)JWTV_MAX_TIME))
		return false;
	if ((double)(int64_t)d != d)
		return false;
	*present = true;
	*out = (int64_t)d;
	return true;
}

enum rs_status
jwtv_verify(const struct jwtv_keys *keys, const char *token, size_t len,
    int64_t now, int64_t leeway, cJSON **claims, enum jwtv_reason *reason)
{
	unsigned char	*hdr = NULL, *pay = NULL, *sig = NULL;
	size_t		 hdrlen, paylen, siglen, i, dot1 = 0, dot2 = 0;
	size_t		 ndots = 0;
	cJSON		*hjson = NULL, *cjson = NULL;
	const cJSON	*alg;
	const char	*why = NULL;
	int64_t		 exp = 0, nbf = 0, iat = 0;
	bool		 has_exp, has_nbf, has_iat, verified = false;
	enum rs_status	 st = RS_ERR_AUTH;

	/* The gate: nothing below parses bytes that did not pass it. */
	if (token == NULL || len == 0) {
		*reason = JWTV_EMPTY;
		goto out;
	}
	if (len > JWTV_MAX_TOKEN) {
		*reason = JWTV_TOO_LONG;
		goto out;
	}
	for (i = 0; i < len; i++) {
		if (!is_token_char((unsigned char)token[i])) {
			*reason = JWTV_CHARSET;
			goto out;
		}
		if (token[i] == '.') {
			if (ndots == 0)
				dot1 = i;
			else if (ndots == 1)
				dot2 = i;
			ndots++;
		}
	}
	*reason = JWTV_FORMAT;
	if (ndots != 2 || dot1 == 0 || dot2 == dot1 + 1 || dot2 == len - 1)
		goto out;
	if (!b64_decode(token, dot1, true, &hdr, &hdrlen) ||
	    !b64_decode(token + dot1 + 1, dot2 - dot1 - 1, true, &pay,
	    &paylen) ||
	    !b64_decode(token + dot2 + 1, len - dot2 - 1, true, &sig, &siglen))
		goto out;

	/* The header: pin the algorithm before looking at the signature. */
	*reason = JWTV_HEADER;
	if (json_parse_strict((const char *)hdr, hdrlen, JSON_MAX_DEPTH,
	    &hjson, &why) != RS_OK || !cJSON_IsObject(hjson))
		goto out;
	if ((alg = json_get(hjson, "alg")) == NULL)
		goto out;
	if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "RS256") != 0) {
		*reason = JWTV_ALG;
		goto out;
	}

	/* The signature covers the ASCII "header.payload" (RFC 7515 5.2). */
	*reason = JWTV_SIGNATURE;
	for (i = 0; keys != NULL && i < keys->nkeys && !verified; i++)
		verified = verify_one(keys, i, token, dot2, sig, siglen);
	if (!verified)
		goto out;

	/* From here on the sender is authentic: a bad payload is a 400.
	 * But the payload's numbers are its claims, and a claim beyond any
	 * time (exp: 1e999) fails like any bad claim (HARDENING row 12). */
	if (json_parse_strict((const char *)pay, paylen, JSON_MAX_DEPTH,
	    &cjson, &why) != RS_OK || !cJSON_IsObject(cjson)) {
		if (why == json_why_range) {
			*reason = JWTV_CLAIMS;
			goto out;
		}
		*reason = JWTV_PAYLOAD;
		st = RS_ERR_INPUT;
		goto out;
	}

	*reason = JWTV_CLAIMS;
	if (!claim_time(cjson, "exp", &has_exp, &exp) || !has_exp ||
	    !claim_time(cjson, "nbf", &has_nbf, &nbf) ||
	    !claim_time(cjson, "iat", &has_iat, &iat))
		goto out;
	/* Clamped so that exp + leeway and nbf - leeway cannot overflow. */
	if (leeway < 0)
		leeway = 0;
	if (leeway > JWTV_MAX_TIME)
		leeway = JWTV_MAX_TIME;
	if (now > exp + leeway) {
		*reason = JWTV_EXPIRED;
		goto out;
	}
	if (has_nbf && now < nbf - leeway) {
		*reason = JWTV_NOT_YET_VALID;
		goto out;
	}
	/* No maximum age, but a token issued in the future is clock skew
	 * past the leeway, or forged with a wrong clock. */
	if (has_iat && now < iat - leeway) {
		*reason = JWTV_NOT_YET_VALID;
		goto out;
	}

	*reason = JWTV_OK;
	*claims = cjson;
	cjson = NULL;
	st = RS_OK;
out:
	cJSON_Delete(hjson);
	cJSON_Delete(cjson);
	free(hdr);
	free(pay);
	free(sig);
	return st;
}
