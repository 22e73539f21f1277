/*
 * check_jwt.c: unit tests for the JWT verification adapter (jwtverify).
 *
 * Tokens are built here from arbitrary header and payload bytes with
 * OpenSSL (RSA keys generated once in main(), EVP_DigestSign, a local
 * base64url encoder), so each hostile variant is signed correctly and
 * only the property under test is wrong.  A real Wix-signed token from
 * $RS_SHARED/fixtures/wix-real checks against the outside world, and
 * libjwt signs tokens too, as a second implementation.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <cjson/cJSON.h>

#include "adapters/jwtverify.h"
#include "domain/json.h"
#include "util/xmalloc.h"

/* The real fixture: issued and expiring at these times. */
#define FIX_IAT		INT64_C(1640788554)
#define FIX_EXP		INT64_C(1644388554)

/* A clock for the synthetic tokens, and their claims around it. */
#define NOW		INT64_C(1754753184)
#define LEEWAY		INT64_C(60)

static EVP_PKEY	*key_a, *key_b, *key_c;	/* RSA 2048 */
static EVP_PKEY	*key_small;		/* RSA 1024 */
static EVP_PKEY	*key_ec;		/* P-256 */

/* A non-NULL pointer that jwtv_verify must leave alone on failure. */
static cJSON	 sentinel_item;
#define SENTINEL	(&sentinel_item)

/* ---- helpers ----------------------------------------------------------- */

static char *
b64url(const void *data, size_t len)
{
	static const char	 tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char	*p = data;
	char			*out;
	size_t			 i, n = 0;
	uint32_t		 v;

	out = xmalloc(len / 3 * 4 + 5);
	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[n++] = tab[v >> 18 & 63];
		out[n++] = tab[v >> 12 & 63];
		out[n++] = tab[v >> 6 & 63];
		out[n++] = tab[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)p[i] << 16;
		out[n++] = tab[v >> 18 & 63];
		out[n++] = tab[v >> 12 & 63];
	} else if (len - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[n++] = tab[v >> 18 & 63];
		out[n++] = tab[v >> 12 & 63];
		out[n++] = tab[v >> 6 & 63];
	}
	out[n] = '\0';
	return out;
}

static char *
b64url_str(const char *s)
{
	return b64url(s, strlen(s));
}

/* RS256 signature of msg with key.  Caller frees; *siglen set. */
static unsigned char *
rs256_sign(EVP_PKEY *key, const char *msg, size_t *siglen)
{
	EVP_MD_CTX	*ctx;
	unsigned char	*sig;
	size_t		 len = 0;

	ctx = EVP_MD_CTX_new();
	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL,
	    key), 1);
	ck_assert_int_eq(EVP_DigestSign(ctx, NULL, &len,
	    (const unsigned char *)msg, strlen(msg)), 1);
	sig = xmalloc(len);
	ck_assert_int_eq(EVP_DigestSign(ctx, sig, &len,
	    (const unsigned char *)msg, strlen(msg)), 1);
	EVP_MD_CTX_free(ctx);
	*siglen = len;
	return sig;
}

/* "b64url(hdr).b64url(pay).b64url(RS256 sig)", from raw bytes. */
static char *
make_token_n(EVP_PKEY *key, const char *hdr, size_t hdrlen,
    const char *pay, size_t paylen)
{
	char		*h, *p, *input, *s, *tok;
	unsigned char	*sig;
	size_t		 siglen;

	h = b64url(hdr, hdrlen);
	p = b64url(pay, paylen);
	input = xasprintf("%s.%s", h, p);
	sig = rs256_sign(key, input, &siglen);
	s = b64url(sig, siglen);
	tok = xasprintf("%s.%s", input, s);
	free(h);
	free(p);
	free(input);
	free(sig);
	free(s);
	return tok;
}

static char *
make_token(EVP_PKEY *key, const char *hdr, const char *pay)
{
	return make_token_n(key, hdr, strlen(hdr), pay, strlen(pay));
}

#define HDR_OK		"{\"kid\":\"LGuapkSD\",\"alg\":\"RS256\"}"

/* A payload like Wix's, with exp and iat around NOW. */
static char *
pay_ok(void)
{
	return xasprintf("{\"data\":\"{}\",\"iat\":%lld,\"exp\":%lld}",
	    (long long)(NOW - 10), (long long)(NOW + 3600000));
}

static char *
pem_of(EVP_PKEY *key, bool private, const char *structure)
{
	OSSL_ENCODER_CTX	*ectx;
	unsigned char		*data = NULL;
	size_t			 len = 0;
	char			*s;

	ectx = OSSL_ENCODER_CTX_new_for_pkey(key, private ?
	    EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, "PEM",
	    structure, NULL);
	ck_assert_ptr_nonnull(ectx);
	ck_assert_int_eq(OSSL_ENCODER_to_data(ectx, &data, &len), 1);
	OSSL_ENCODER_CTX_free(ectx);
	s = xstrndup((const char *)data, len);
	OPENSSL_free(data);
	return s;
}

/* SPKI "-----BEGIN PUBLIC KEY-----".  Caller frees. */
static char *
pub_pem(EVP_PKEY *key)
{
	return pem_of(key, false, "SubjectPublicKeyInfo");
}

/* Standard, padded base64 on one line.  Caller frees. */
static char *
b64std(const char *s)
{
	size_t	 len = strlen(s);
	char	*out;

	out = xmalloc(len / 3 * 4 + 5);
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s,
	    (int)len);
	return out;
}

static struct jwtv_keys *
keys_of(EVP_PKEY *k1, EVP_PKEY *k2)
{
	struct jwtv_keys	*keys = NULL;
	const char		*why = NULL;
	char			*pem;

	pem = pub_pem(k1);
	ck_assert_int_eq(jwtv_keys_add_pem(&keys, pem, strlen(pem), &why),
	    RS_OK);
	free(pem);
	if (k2 != NULL) {
		pem = pub_pem(k2);
		ck_assert_int_eq(jwtv_keys_add_pem(&keys, pem, strlen(pem),
		    &why), RS_OK);
		free(pem);
	}
	return keys;
}

/* Verify tok (strlen) and return the status; the claims are dropped. */
static enum rs_status
vfy_n(const struct jwtv_keys *keys, const char *tok, size_t len,
    int64_t now, int64_t leeway, enum jwtv_reason *reason)
{
	cJSON		*claims = SENTINEL;
	enum rs_status	 st;

	*reason = (enum jwtv_reason)-1;
	st = jwtv_verify(keys, tok, len, now, leeway, &claims, reason);
	if (st == RS_OK) {
		ck_assert_int_eq(*reason, JWTV_OK);
		ck_assert_ptr_ne(claims, SENTINEL);
		ck_assert(cJSON_IsObject(claims));
		cJSON_Delete(claims);
	} else {
		ck_assert_int_ne(*reason, JWTV_OK);
		ck_assert_ptr_eq(claims, SENTINEL);
	}
	return st;
}

static enum rs_status
vfy(const struct jwtv_keys *keys, const char *tok, int64_t now,
    enum jwtv_reason *reason)
{
	return vfy_n(keys, tok, strlen(tok), now, LEEWAY, reason);
}

/* Assert that tok fails with st and reason r. */
#define CHECK_FAILS(keys, tok, now, st, r) do {				\
	enum jwtv_reason	 r_;					\
	ck_assert_int_eq(vfy((keys), (tok), (now), &r_), (st));		\
	ck_assert_str_eq(jwtv_reason_name(r_), jwtv_reason_name(r));	\
	ck_assert_int_eq(r_, (r));					\
} while (0)

#define CHECK_OK(keys, tok, now) do {					\
	enum jwtv_reason	 r_;					\
	ck_assert_int_eq(vfy((keys), (tok), (now), &r_), RS_OK);	\
	ck_assert_int_eq(r_, JWTV_OK);					\
} while (0)

/* Sign hdr/pay with key_a and expect failure (st, r) against {key_a}. */
static void
check_signed(const char *hdr, const char *pay, enum rs_status st,
    enum jwtv_reason r)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*tok = make_token(key_a, hdr, pay);

	if (st == RS_OK)
		CHECK_OK(keys, tok, NOW);
	else
		CHECK_FAILS(keys, tok, NOW, st, r);
	free(tok);
	jwtv_keys_free(keys);
}

/* Fixture file under $RS_SHARED or a ../shared relative to the cwd. */
static char *
shared_path(const char *rel)
{
	static const char *const dirs[] = { "../shared", "../../shared",
	    "../../../shared", "../../../../shared" };
	const char	*env = getenv("RS_SHARED");
	char		*path;
	size_t		 i;

	if (env != NULL && *env != '\0') {
		path = xasprintf("%s/%s", env, rel);
		if (access(path, R_OK) == 0)
			return path;
		free(path);
	}
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		path = xasprintf("%s/%s", dirs[i], rel);
		if (access(path, R_OK) == 0)
			return path;
		free(path);
	}
	ck_abort_msg("fixture %s not found: set RS_SHARED", rel);
	return NULL;
}

static char *
slurp(const char *path, size_t *lenp)
{
	FILE	*fp;
	char	*s;
	size_t	 len = 0, n;

	fp = fopen(path, "rb");
	ck_assert_msg(fp != NULL, "cannot open %s", path);
	s = xmalloc(1024 * 1024);
	while ((n = fread(s + len, 1, 1024 * 1024 - 1 - len, fp)) > 0)
		len += n;
	fclose(fp);
	s[len] = '\0';
	*lenp = len;
	return s;
}

/* The fixture token, trailing white space removed. */
static char *
fixture_token(void)
{
	char	*path, *tok;
	size_t	 len;

	path = shared_path("fixtures/wix-real/app-installed.jwt");
	tok = slurp(path, &len);
	free(path);
	while (len > 0 && (tok[len - 1] == '\n' || tok[len - 1] == '\r' ||
	    tok[len - 1] == ' '))
		tok[--len] = '\0';
	return tok;
}

static char *
fixture_pem(void)
{
	char	*path, *pem;
	size_t	 len;

	path = shared_path("fixtures/wix-real/app-installed.pub.pem");
	pem = slurp(path, &len);
	free(path);
	return pem;
}

static struct jwtv_keys *
fixture_keys(void)
{
	struct jwtv_keys	*keys = NULL;
	const char		*why = NULL;
	char			*pem = fixture_pem();

	ck_assert_int_eq(jwtv_keys_add_pem(&keys, pem, strlen(pem), &why),
	    RS_OK);
	ck_assert_ptr_null(why);
	free(pem);
	return keys;
}

/* ---- (1) the real Wix token ------------------------------------------ */

START_TEST(test_fixture_verifies)
{
	struct jwtv_keys	*keys = fixture_keys();
	char			*tok = fixture_token();
	cJSON			*claims = NULL;
	enum jwtv_reason	 r = JWTV_FORMAT;
	const cJSON		*exp;

	ck_assert_uint_eq(jwtv_keys_count(keys), 1);
	ck_assert_int_eq(jwtv_verify(keys, tok, strlen(tok), FIX_IAT + 10,
	    LEEWAY, &claims, &r), RS_OK);
	ck_assert_int_eq(r, JWTV_OK);
	ck_assert_ptr_nonnull(claims);
	ck_assert_ptr_nonnull(json_get_string(claims, "data"));
	ck_assert_ptr_nonnull(strstr(json_get_string(claims, "data"),
	    "\"eventType\":\"AppInstalled\""));
	exp = json_get(claims, "exp");
	ck_assert(cJSON_IsNumber(exp));
	ck_assert(exp->valuedouble == (double)FIX_EXP);
	cJSON_Delete(claims);
	free(tok);
	jwtv_keys_free(keys);
}
END_TEST

START_TEST(test_fixture_expiry)
{
	struct jwtv_keys	*keys = fixture_keys();
	char			*tok = fixture_token();
	enum jwtv_reason	 r;

	CHECK_FAILS(keys, tok, FIX_EXP + 61, RS_ERR_AUTH, JWTV_EXPIRED);
	CHECK_OK(keys, tok, FIX_EXP + 59);
	CHECK_OK(keys, tok, FIX_EXP + 60);
	/* Wix retries for ~47 hours: no maximum age on iat. */
	CHECK_OK(keys, tok, FIX_IAT + 47 * 3600);
	/* Without leeway, one second after exp is too late. */
	ck_assert_int_eq(vfy_n(keys, tok, strlen(tok), FIX_EXP + 1, 0, &r),
	    RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_EXPIRED);
	ck_assert_int_eq(vfy_n(keys, tok, strlen(tok), FIX_EXP, 0, &r),
	    RS_OK);
	free(tok);
	jwtv_keys_free(keys);
}
END_TEST

START_TEST(test_fixture_base64_key)
{
	struct jwtv_keys	*keys = NULL;
	const char		*why = NULL;
	char			*pem = fixture_pem(), *b64, *wrapped, *tok;
	size_t			 i, n = 0, len;

	/* One line of base64 of the PEM text, as Wix's SDK accepts. */
	b64 = b64std(pem);
	ck_assert_int_eq(jwtv_keys_add_pem(&keys, b64, strlen(b64), &why),
	    RS_OK);
	ck_assert_ptr_null(why);
	tok = fixture_token();
	CHECK_OK(keys, tok, FIX_IAT + 10);
	jwtv_keys_free(keys);
	keys = NULL;

	/* The same, wrapped at 76 columns as base64(1) does, plus CRLF. */
	len = strlen(b64);
	wrapped = xmalloc(len + len / 76 * 2 + 8);
	for (i = 0; i < len; i++) {
		if (i > 0 && i % 76 == 0) {
			wrapped[n++] = '\r';
			wrapped[n++] = '\n';
		}
		wrapped[n++] = b64[i];
	}
	wrapped[n++] = '\n';
	wrapped[n] = '\0';
	ck_assert_int_eq(jwtv_keys_add_pem(&keys, wrapped, n, &why), RS_OK);
	CHECK_OK(keys, tok, FIX_IAT + 10);
	jwtv_keys_free(keys);
	keys = NULL;

	/* Unpadded is fine; padding that does not fit is not. */
	while (len > 0 && b64[len - 1] == '=')
		b64[--len] = '\0';
	ck_assert_int_eq(jwtv_keys_add_pem(&keys, b64, len, &why), RS_OK);
	jwtv_keys_free(keys);
	keys = NULL;
	if (len % 4 != 0) {
		free(wrapped);
		wrapped = xasprintf("%s===", b64);
		ck_assert_int_eq(jwtv_keys_add_pem(&keys, wrapped,
		    strlen(wrapped), &why), RS_ERR_CONFIG);
		ck_assert_str_eq(why, "not a PEM public key");
		ck_assert_ptr_null(keys);
	}

	free(wrapped);
	free(tok);
	free(b64);
	free(pem);
}
END_TEST


START_TEST(test_fixture_key_file)
{
	struct jwtv_keys	*keys = NULL, *ours;
	const char		*why = NULL;
	char			*path, *tok, *mine, *pay;

	path = shared_path("fixtures/wix-real/app-installed.pub.pem");
	ck_assert_int_eq(jwtv_keys_add_file(&keys, path, &why), RS_OK);
	ck_assert_ptr_null(why);
	ck_assert_uint_eq(jwtv_keys_count(keys), 1);
	tok = fixture_token();
	CHECK_OK(keys, tok, FIX_IAT + 10);

	/* The fixture is not signed by our keys, and ours not by Wix's. */
	ours = keys_of(key_a, key_b);
	CHECK_FAILS(ours, tok, FIX_IAT + 10, RS_ERR_AUTH, JWTV_SIGNATURE);
	pay = pay_ok();
	mine = make_token(key_a, HDR_OK, pay);
	CHECK_OK(ours, mine, NOW);
	CHECK_FAILS(keys, mine, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);

	free(pay);
	free(mine);
	free(tok);
	free(path);
	jwtv_keys_free(ours);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (2) algorithms ---------------------------------------------------- */

START_TEST(test_alg_variants)
{
	static const char *const algs[] = { "rs256", "none", "nOnE",
	    "NONE", "RS512", "RS384", "PS256", "ES256", "HS256", "EdDSA",
	    "RS256 ", " RS256", "RS2560", "", "RS256\\u0000" };
	char	*pay = pay_ok(), *hdr;
	size_t	 i;

	for (i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		hdr = xasprintf("{\"alg\":\"%s\",\"typ\":\"JWT\"}", algs[i]);
		/* "\u0000" is refused by the strict parser: a bad header. */
		check_signed(hdr, pay, RS_ERR_AUTH,
		    strstr(algs[i], "\\u0000") != NULL ? JWTV_HEADER :
		    JWTV_ALG);
		free(hdr);
	}
	/* alg of another type is the wrong alg; no alg is a bad header. */
	check_signed("{\"alg\":256}", pay, RS_ERR_AUTH, JWTV_ALG);
	check_signed("{\"alg\":null}", pay, RS_ERR_AUTH, JWTV_ALG);
	check_signed("{\"alg\":[\"RS256\"]}", pay, RS_ERR_AUTH, JWTV_ALG);
	check_signed("{\"ALG\":\"RS256\"}", pay, RS_ERR_AUTH, JWTV_HEADER);
	check_signed("{\"typ\":\"JWT\"}", pay, RS_ERR_AUTH, JWTV_HEADER);
	check_signed("{}", pay, RS_ERR_AUTH, JWTV_HEADER);
	/* The header is strict JSON and an object. */
	check_signed("[\"RS256\"]", pay, RS_ERR_AUTH, JWTV_HEADER);
	check_signed("\"RS256\"", pay, RS_ERR_AUTH, JWTV_HEADER);
	check_signed("{\"alg\":\"RS256\"", pay, RS_ERR_AUTH, JWTV_HEADER);
	check_signed("{\"alg\":\"RS256\"}x", pay, RS_ERR_AUTH, JWTV_HEADER);
	check_signed("{\"alg\":\"none\",\"alg\":\"RS256\"}", pay,
	    RS_ERR_AUTH, JWTV_HEADER);
	check_signed("{\"alg\":\"RS256\",\"alg\":\"RS256\"}", pay,
	    RS_ERR_AUTH, JWTV_HEADER);
	/* An escaped spelling of RS256 is still RS256. */
	check_signed("{\"alg\":\"RS\\u0032\\u00356\"}", pay, RS_OK, JWTV_OK);
	check_signed(" {\"alg\" : \"RS256\"} ", pay, RS_OK, JWTV_OK);
	free(pay);
}
END_TEST

START_TEST(test_alg_none_unsigned)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*pay = pay_ok(), *h, *p, *tok;

	h = b64url_str("{\"alg\":\"none\"}");
	p = b64url_str(pay);
	/* The classic "alg":"none" token has an empty signature. */
	tok = xasprintf("%s.%s.", h, p);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(tok);
	tok = xasprintf("%s.%s.AAAA", h, p);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_ALG);
	free(tok);
	free(h);
	h = b64url_str(HDR_OK);
	tok = xasprintf("%s.%s.AAAA", h, p);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(tok);
	free(h);
	free(p);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

/* HS256 whose HMAC secret is our public PEM: the confusion attack. */
START_TEST(test_alg_hs256_confusion)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*pem = pub_pem(key_a), *pay = pay_ok();
	char			*h, *p, *input, *s, *tok;
	unsigned char		 mac[EVP_MAX_MD_SIZE];
	unsigned int		 maclen = 0;
	jwt_t			*jwt = NULL;

	/* By hand. */
	h = b64url_str("{\"alg\":\"HS256\",\"typ\":\"JWT\"}");
	p = b64url_str(pay);
	input = xasprintf("%s.%s", h, p);
	ck_assert_ptr_nonnull(HMAC(EVP_sha256(), pem, (int)strlen(pem),
	    (const unsigned char *)input, strlen(input), mac, &maclen));
	ck_assert_uint_eq(maclen, 32);
	s = b64url(mac, maclen);
	tok = xasprintf("%s.%s", input, s);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_ALG);
	free(tok);

	/* And by libjwt, which its own jwt_decode() would accept. */
	ck_assert_int_eq(jwt_new(&jwt), 0);
	ck_assert_int_eq(jwt_set_alg(jwt, JWT_ALG_HS256,
	    (const unsigned char *)pem, (int)strlen(pem)), 0);
	ck_assert_int_eq(jwt_add_grants_json(jwt, pay), 0);
	tok = jwt_encode_str(jwt);
	ck_assert_ptr_nonnull(tok);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_ALG);
	free(tok);
	jwt_free(jwt);

	free(s);
	free(input);
	free(p);
	free(h);
	free(pay);
	free(pem);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (3) headers that name another key are ignored --------------------- */

static char *
jwk_of(EVP_PKEY *key)
{
	BIGNUM		*n = NULL, *e = NULL;
	unsigned char	 nb[1024], eb[16];
	int		 nlen, elen;
	char		*ns, *es, *jwk;

	ck_assert_int_eq(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N,
	    &n), 1);
	ck_assert_int_eq(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E,
	    &e), 1);
	nlen = BN_bn2bin(n, nb);
	elen = BN_bn2bin(e, eb);
	ns = b64url(nb, (size_t)nlen);
	es = b64url(eb, (size_t)elen);
	jwk = xasprintf("{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", ns,
	    es);
	free(ns);
	free(es);
	BN_free(n);
	BN_free(e);
	return jwk;
}

START_TEST(test_header_key_hints_ignored)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*pay = pay_ok(), *jwk, *hdr, *tok;

	jwk = jwk_of(key_c);
	hdr = xstrdup("{\"alg\":\"RS256\",\"jku\":"
	    "\"https://evil.example/jwks.json\"}");
	tok = make_token(key_c, hdr, pay);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(tok);
	free(hdr);
	hdr = xstrdup("{\"alg\":\"RS256\",\"x5u\":"
	    "\"https://evil.example/cert.pem\"}");
	tok = make_token(key_c, hdr, pay);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(tok);
	free(hdr);
	hdr = xasprintf("{\"alg\":\"RS256\",\"jwk\":%s}", jwk);
	tok = make_token(key_c, hdr, pay);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(tok);
	/* The same headers on a token signed by our key do no harm. */
	tok = make_token(key_a, hdr, pay);
	CHECK_OK(keys, tok, NOW);
	free(tok);
	free(hdr);
	hdr = xstrdup("{\"alg\":\"RS256\",\"kid\":\"no-such-kid\","
	    "\"typ\":\"JOSE\",\"x\":{\"y\":[1,2,3]}}");
	tok = make_token(key_a, hdr, pay);
	CHECK_OK(keys, tok, NOW);
	free(tok);
	free(hdr);
	free(jwk);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (4) rotation ------------------------------------------------------ */

START_TEST(test_key_rotation)
{
	struct jwtv_keys	*keys = keys_of(key_a, key_b);
	char			*pay = pay_ok(), *ta, *tb, *tc;

	ck_assert_uint_eq(jwtv_keys_count(keys), 2);
	ta = make_token(key_a, HDR_OK, pay);
	tb = make_token(key_b, HDR_OK, pay);
	tc = make_token(key_c, HDR_OK, pay);
	CHECK_OK(keys, ta, NOW);
	CHECK_OK(keys, tb, NOW);
	CHECK_FAILS(keys, tc, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(ta);
	free(tb);
	free(tc);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (5) tampering ----------------------------------------------------- */

START_TEST(test_tampered)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*pay = pay_ok(), *tok, *bad, *dot, *pay2;
	char			*h, *p, *input, *s;
	unsigned char		*sig;
	size_t			 siglen;

	tok = make_token(key_a, HDR_OK, pay);
	CHECK_OK(keys, tok, NOW);

	/* A payload changed after signing (a later exp). */
	pay2 = xasprintf("{\"data\":\"{}\",\"iat\":%lld,\"exp\":%lld}",
	    (long long)(NOW - 10), (long long)(NOW + 9999999));
	h = b64url_str(HDR_OK);
	p = b64url_str(pay2);
	dot = strrchr(tok, '.');
	bad = xasprintf("%s.%s%s", h, p, dot);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);
	/* One character of the payload segment changed. */
	bad = xstrdup(tok);
	dot = strchr(bad, '.');
	dot[3] = dot[3] == 'A' ? 'B' : 'A';
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);
	/* The header changed (kid). */
	free(h);
	h = b64url_str("{\"kid\":\"LGuapkSE\",\"alg\":\"RS256\"}");
	dot = strchr(tok, '.');
	bad = xasprintf("%s%s", h, dot);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);

	/* Signature bits flipped, cut short, or lengthened. */
	free(p);
	p = b64url_str(pay);
	free(h);
	h = b64url_str(HDR_OK);
	input = xasprintf("%s.%s", h, p);
	sig = rs256_sign(key_a, input, &siglen);
	ck_assert_uint_eq(siglen, 256);
	sig[100] ^= 0x01;
	s = b64url(sig, siglen);
	bad = xasprintf("%s.%s", input, s);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);
	free(s);
	sig[100] ^= 0x01;
	s = b64url(sig, siglen);
	bad = xasprintf("%s.%s", input, s);
	CHECK_OK(keys, bad, NOW);
	free(bad);
	free(s);
	s = b64url(sig, siglen - 1);
	bad = xasprintf("%s.%s", input, s);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);
	free(s);
	sig = xrealloc(sig, siglen + 1);
	memmove(sig + 1, sig, siglen);
	sig[0] = 0;
	s = b64url(sig, siglen + 1);
	bad = xasprintf("%s.%s", input, s);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);
	free(s);
	/* The signature segment moved to the wrong place. */
	dot = strrchr(tok, '.');
	bad = xasprintf("%s.%s.%s", h, dot + 1, p);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);

	free(sig);
	free(input);
	free(h);
	free(p);
	free(pay2);
	free(tok);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

/*
 * RSA verification in OpenSSL takes a signature shorter than the modulus
 * as if it had leading zeros.  Find a real signature that starts with a
 * zero byte (one in 256) and check that it verifies only at full length.
 */
START_TEST(test_signature_short)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*h, *p, *pay, *input = NULL, *s, *tok;
	unsigned char		*sig = NULL;
	size_t			 siglen = 0;
	int			 i;

	h = b64url_str(HDR_OK);
	for (i = 0; i < 20000; i++) {
		pay = xasprintf("{\"exp\":%lld,\"n\":%d}",
		    (long long)NOW, i);
		p = b64url_str(pay);
		free(pay);
		input = xasprintf("%s.%s", h, p);
		free(p);
		sig = rs256_sign(key_a, input, &siglen);
		if (sig[0] == 0)
			break;
		free(sig);
		free(input);
		sig = NULL;
		input = NULL;
	}
	ck_assert_ptr_nonnull(sig);
	ck_assert_uint_eq(siglen, 256);
	s = b64url(sig, siglen);
	tok = xasprintf("%s.%s", input, s);
	CHECK_OK(keys, tok, NOW);
	free(tok);
	free(s);
	s = b64url(sig + 1, siglen - 1);
	tok = xasprintf("%s.%s", input, s);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(tok);
	free(s);
	free(sig);
	free(input);
	free(h);
	jwtv_keys_free(keys);
}
END_TEST

START_TEST(test_wrong_key)
{
	struct jwtv_keys	*keys = keys_of(key_b, NULL);
	char			*pay = pay_ok(), *tok;

	tok = make_token(key_a, HDR_OK, pay);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	/* No key set at all verifies nothing. */
	CHECK_FAILS(NULL, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(tok);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (6) claims -------------------------------------------------------- */

static void
check_claims(const char *pay, int64_t now, int64_t leeway,
    enum rs_status st, enum jwtv_reason r)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*tok = make_token(key_a, HDR_OK, pay);
	enum jwtv_reason	 got;

	ck_assert_int_eq(vfy_n(keys, tok, strlen(tok), now, leeway, &got),
	    st);
	ck_assert_msg(got == r, "%s: reason %s, want %s", pay,
	    jwtv_reason_name(got), jwtv_reason_name(r));
	free(tok);
	jwtv_keys_free(keys);
}

START_TEST(test_claims_types)
{
	const int64_t	 t = 1000000;

	/* exp is required, and an integral number in 0 .. 2^53. */
	check_claims("{\"exp\":1000000}", t, 0, RS_OK, JWTV_OK);
	check_claims("{\"exp\":1000000.0}", t, 0, RS_OK, JWTV_OK);
	check_claims("{\"exp\":1e6}", t, 0, RS_OK, JWTV_OK);
	check_claims("{\"exp\":9007199254740992}", t, 0, RS_OK, JWTV_OK);
	check_claims("{\"data\":\"x\"}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":\"2000000\"}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	check_claims("{\"exp\":2000000.5}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":1.5}", 0, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":1e300}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	/* Beyond a double too: still a bad claim (HARDENING row 12), not
	 * a malformed payload; also in another member of layer A. */
	check_claims("{\"exp\":1e999}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":-1e999}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":2000000,\"iat\":1e999}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	check_claims("{\"exp\":9007199254740994}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	check_claims("{\"exp\":-1}", -100, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":true}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":null}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":[2000000]}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	check_claims("{\"exp\":{}}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	/* Case-sensitive names: "EXP" is not exp. */
	check_claims("{\"EXP\":2000000}", t, 0, RS_ERR_AUTH, JWTV_CLAIMS);
	/* nbf and iat are optional, with the same type rule. */
	check_claims("{\"exp\":2000000,\"nbf\":\"1\"}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	check_claims("{\"exp\":2000000,\"nbf\":0.5}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	check_claims("{\"exp\":2000000,\"iat\":\"1\"}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	check_claims("{\"exp\":2000000,\"iat\":1e300}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	check_claims("{\"exp\":2000000,\"iat\":-5}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	/* A type error wins over an expiry. */
	check_claims("{\"exp\":1,\"iat\":\"x\"}", t, 0, RS_ERR_AUTH,
	    JWTV_CLAIMS);
	/* iat: no maximum age; in the future only within the leeway
	 * (SPEC: jwt_leeway is the skew allowed on exp, nbf and iat). */
	check_claims("{\"exp\":2000000,\"iat\":0}", t, 0, RS_OK, JWTV_OK);
	check_claims("{\"exp\":2000000,\"iat\":1999999}", t, 0,
	    RS_ERR_AUTH, JWTV_NOT_YET_VALID);
	check_claims("{\"exp\":2000000,\"iat\":1000060}", t, 60, RS_OK,
	    JWTV_OK);
	check_claims("{\"exp\":2000000,\"iat\":1000061}", t, 60,
	    RS_ERR_AUTH, JWTV_NOT_YET_VALID);
	check_claims("{\"exp\":2000000,\"iat\":1000000}", t, 0, RS_OK,
	    JWTV_OK);
	check_claims("{\"exp\":2000000,\"nbf\":0,\"iat\":5}", t, 0, RS_OK,
	    JWTV_OK);
}
END_TEST

START_TEST(test_claims_times)
{
	/* exp + leeway is the last second accepted. */
	check_claims("{\"exp\":1000}", 1060, 60, RS_OK, JWTV_OK);
	check_claims("{\"exp\":1000}", 1061, 60, RS_ERR_AUTH, JWTV_EXPIRED);
	check_claims("{\"exp\":1000}", 1000, 0, RS_OK, JWTV_OK);
	check_claims("{\"exp\":1000}", 1001, 0, RS_ERR_AUTH, JWTV_EXPIRED);
	check_claims("{\"exp\":0}", 1, 0, RS_ERR_AUTH, JWTV_EXPIRED);
	check_claims("{\"exp\":1000}", INT64_MAX, 60, RS_ERR_AUTH,
	    JWTV_EXPIRED);
	/* A negative leeway counts as none; a huge one cannot overflow. */
	check_claims("{\"exp\":1000}", 1000, -5, RS_OK, JWTV_OK);
	check_claims("{\"exp\":1000}", 1001, -5, RS_ERR_AUTH, JWTV_EXPIRED);
	check_claims("{\"exp\":1000}", INT64_MAX, INT64_MAX, RS_ERR_AUTH,
	    JWTV_EXPIRED);
	check_claims("{\"exp\":9007199254740992}", INT64_MIN, INT64_MAX,
	    RS_OK, JWTV_OK);
	/* nbf - leeway is the first second accepted. */
	check_claims("{\"exp\":5000,\"nbf\":2000}", 1940, 60, RS_OK,
	    JWTV_OK);
	check_claims("{\"exp\":5000,\"nbf\":2000}", 1939, 60, RS_ERR_AUTH,
	    JWTV_NOT_YET_VALID);
	check_claims("{\"exp\":5000,\"nbf\":2000}", 1999, 0, RS_ERR_AUTH,
	    JWTV_NOT_YET_VALID);
	check_claims("{\"exp\":5000,\"nbf\":2000}", 2000, 0, RS_OK, JWTV_OK);
	/* A token from an hour in the future. */
	check_claims("{\"exp\":9000,\"nbf\":4600,\"iat\":4600}", 1000, 60,
	    RS_ERR_AUTH, JWTV_NOT_YET_VALID);
	/* Expired and not yet valid at once (exp < nbf): expired. */
	check_claims("{\"exp\":100,\"nbf\":2000}", 1000, 0, RS_ERR_AUTH,
	    JWTV_EXPIRED);
}
END_TEST

START_TEST(test_claims_returned)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*tok;
	cJSON			*claims = NULL;
	enum jwtv_reason	 r = JWTV_FORMAT;

	tok = make_token(key_a, HDR_OK,
	    "{\"data\":\"{\\\"a\\\":1}\",\"iat\":5,\"exp\":2000,\"x\":[1]}");
	ck_assert_int_eq(jwtv_verify(keys, tok, strlen(tok), 1000, 0,
	    &claims, &r), RS_OK);
	ck_assert_int_eq(r, JWTV_OK);
	ck_assert_str_eq(json_get_string(claims, "data"), "{\"a\":1}");
	ck_assert(json_get(claims, "iat")->valuedouble == 5.0);
	ck_assert_ptr_nonnull(json_get_array(claims, "x"));
	cJSON_Delete(claims);
	free(tok);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (7) the gate ------------------------------------------------------ */

START_TEST(test_gate)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*pay = pay_ok(), *tok, *bad, *dot;
	enum jwtv_reason	 r;
	size_t			 len;

	tok = make_token(key_a, HDR_OK, pay);
	len = strlen(tok);
	CHECK_OK(keys, tok, NOW);

	ck_assert_int_eq(vfy_n(keys, "", 0, NOW, LEEWAY, &r), RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_EMPTY);
	ck_assert_int_eq(vfy_n(keys, NULL, 0, NOW, LEEWAY, &r), RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_EMPTY);
	/* len counts, not the NUL: bytes past len are never looked at. */
	bad = xasprintf("%s garbage \xff", tok);
	ck_assert_int_eq(vfy_n(keys, bad, len, NOW, LEEWAY, &r), RS_OK);
	free(bad);
	ck_assert_int_eq(vfy_n(keys, tok, len - 2, NOW, LEEWAY, &r),
	    RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_SIGNATURE);
	ck_assert_int_eq(vfy_n(keys, tok, len - 1, NOW, LEEWAY, &r),
	    RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_FORMAT);

	/* Segments: two, four, and an empty one in each place. */
	dot = strrchr(tok, '.');
	bad = xstrndup(tok, (size_t)(dot - tok));
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	bad = xasprintf("%s.", tok);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	bad = xasprintf("%s.AAAA", tok);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	bad = xasprintf("%s.", tok);
	bad[len - (strlen(dot) - 1)] = '\0';
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	bad = xasprintf(".%s", strchr(tok, '.') + 1);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	bad = xstrndup(tok, (size_t)(strchr(tok, '.') - tok) + 1);
	dot = xasprintf("%s%s", bad, dot);
	CHECK_FAILS(keys, dot, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(dot);
	free(bad);
	CHECK_FAILS(keys, "..", NOW, RS_ERR_AUTH, JWTV_FORMAT);
	CHECK_FAILS(keys, ".", NOW, RS_ERR_AUTH, JWTV_FORMAT);
	CHECK_FAILS(keys, "abc", NOW, RS_ERR_AUTH, JWTV_FORMAT);
	CHECK_FAILS(keys, "a.b.c", NOW, RS_ERR_AUTH, JWTV_FORMAT);

	/* Bytes outside [A-Za-z0-9_.-], at the start, middle and end. */
	{
		static const char	bytes[] = { '=', '+', '/', ' ', '\n',
		    '\r', '\t', '\0', '"', '\\', '%', '~', '!', ',', '*',
		    (char)0x80, (char)0xc3, (char)0xff, 0x7f, 0x01 };
		size_t			i, pos[3];
		size_t			j;

		pos[0] = 0;
		pos[1] = len / 2;
		pos[2] = len - 1;
		for (i = 0; i < sizeof(bytes); i++)
			for (j = 0; j < 3; j++) {
				bad = xstrdup(tok);
				bad[pos[j]] = bytes[i];
				ck_assert_int_eq(vfy_n(keys, bad, len, NOW,
				    LEEWAY, &r), RS_ERR_AUTH);
				ck_assert_msg(r == JWTV_CHARSET,
				    "byte 0x%02x at %zu: %s",
				    (unsigned char)bytes[i], pos[j],
				    jwtv_reason_name(r));
				free(bad);
			}
	}
	/* '=' padding after a segment, and a trailing newline. */
	bad = xasprintf("%s==", tok);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_CHARSET);
	free(bad);
	bad = xasprintf("%s\n", tok);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_CHARSET);
	free(bad);
	/* A NUL inside: the token is len bytes, not a C string. */
	bad = xasprintf("%s", tok);
	bad[10] = '\0';
	ck_assert_int_eq(vfy_n(keys, bad, len, NOW, LEEWAY, &r),
	    RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_CHARSET);
	free(bad);
	/* The same token with a whole UTF-8 character in it. */
	bad = xasprintf("%.*s\xc3\xa9%s", 20, tok, tok + 20);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_CHARSET);
	free(bad);

	free(tok);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

START_TEST(test_gate_base64url)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*pay = pay_ok(), *tok, *bad, *h, *p;

	tok = make_token(key_a, HDR_OK, pay);
	h = b64url_str(HDR_OK);

	/* len % 4 == 1 is no base64 length. */
	bad = xasprintf("eyJhbGciOiJSUzI1NiJ9A.%s", strchr(tok, '.') + 1);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	/* "{"alg":"RS256"}" is 15 bytes: 20 characters, no slack.  One
	 * more byte gives 2 characters, the second with 4 spare bits. */
	p = b64url_str("{\"alg\":\"RS256\"} ");
	ck_assert_str_eq(p, "eyJhbGciOiJSUzI1NiJ9IA");
	bad = xasprintf("eyJhbGciOiJSUzI1NiJ9IB.%s", strchr(tok, '.') + 1);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	bad = xasprintf("eyJhbGciOiJSUzI1NiJ9IA.%s", strchr(tok, '.') + 1);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);
	free(p);

	/* Non-zero spare bits in the signature: 256 bytes leave 4. */
	bad = xstrdup(tok);
	ck_assert_uint_eq(strlen(strrchr(bad, '.') + 1), 342);
	bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' :
	    (char)(bad[strlen(bad) - 1] ^ 1);
	CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	free(bad);
	/* A bad payload segment is a format error, before any RSA. */
	p = b64url_str(pay);
	bad = xasprintf("%s.%sA.%s", h, p, strrchr(tok, '.') + 1);
	if ((strlen(p) + 1) % 4 == 1)
		CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_FORMAT);
	else
		CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(bad);
	free(p);

	free(h);
	free(tok);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

START_TEST(test_gate_too_long)
{
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	size_t			 big = 9 * 1024 * 1024;
	char			*tok;
	enum jwtv_reason	 r;

	/* A 9 MB token of valid characters and dots. */
	tok = xmalloc(big + 1);
	memset(tok, 'A', big);
	tok[1000] = '.';
	tok[big - 1000] = '.';
	tok[big] = '\0';
	ck_assert_int_eq(vfy_n(keys, tok, big, NOW, LEEWAY, &r),
	    RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_TOO_LONG);
	/* One byte over the cap, and exactly at it. */
	ck_assert_int_eq(vfy_n(keys, tok, JWTV_MAX_TOKEN + 1, NOW, LEEWAY,
	    &r), RS_ERR_AUTH);
	ck_assert_int_eq(r, JWTV_TOO_LONG);
	tok[JWTV_MAX_TOKEN - 1000] = '.';
	ck_assert_int_eq(vfy_n(keys, tok, JWTV_MAX_TOKEN, NOW, LEEWAY, &r),
	    RS_ERR_AUTH);
	ck_assert_int_ne(r, JWTV_TOO_LONG);
	ck_assert_int_eq(r, JWTV_HEADER);
	free(tok);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (8) a valid signature over a bad payload is a 400 ----------------- */

START_TEST(test_payload_bad)
{
	static const char *const pays[] = {
		"not json",
		"{\"exp\":2000000000,\"exp\":2000000001}",
		"{\"data\":\"a\",\"data\":\"b\",\"exp\":2000000000}",
		"{\"exp\":2000000000} x",
		"{\"exp\":2000000000}{}",
		"{\"exp\":2000000000,}",
		"{\"exp\":02000000000}",
		"{\"exp\":2000000000,\"data\":\"\\u0000\"}",
		"{\"exp\":2000000000,\"data\":\"\xff\"}",
		"[{\"exp\":2000000000}]",
		"\"exp\"",
		"2000000000",
		"null",
		" ",
		/* Nesting deeper than JSON_MAX_DEPTH. */
		("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1"
		    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],\"exp\":2000000000}")
	};
	struct jwtv_keys	*keys = keys_of(key_a, NULL);
	char			*tok, *dot, *bad;
	size_t			 i;
	enum jwtv_reason	 r;

	for (i = 0; i < sizeof(pays) / sizeof(pays[0]); i++) {
		tok = make_token(key_a, HDR_OK, pays[i]);
		ck_assert_int_eq(vfy(keys, tok, NOW, &r), RS_ERR_INPUT);
		ck_assert_msg(r == JWTV_PAYLOAD, "payload %zu: %s", i,
		    jwtv_reason_name(r));
		/* With a bad signature it is a 401, not a 400. */
		dot = strrchr(tok, '.');
		bad = xstrdup(tok);
		bad[dot - tok + 5] = bad[dot - tok + 5] == 'A' ? 'B' : 'A';
		CHECK_FAILS(keys, bad, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
		free(bad);
		free(tok);
	}
	/* A NUL byte in the payload, signed. */
	tok = make_token_n(key_a, HDR_OK, strlen(HDR_OK),
	    "{\"exp\":2000000000}\0", 19);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_INPUT, JWTV_PAYLOAD);
	free(tok);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (9) libjwt signs, we verify ---------------------------------------- */

START_TEST(test_libjwt_cross)
{
	struct jwtv_keys	*keys = keys_of(key_b, key_a), *other;
	char			*priv = pem_of(key_a, true, "PrivateKeyInfo");
	char			*pub = pub_pem(key_a), *pay = pay_ok(), *tok;
	char			*mine;
	jwt_t			*jwt = NULL, *dec = NULL;
	cJSON			*claims = NULL;
	enum jwtv_reason	 r = JWTV_FORMAT;

	ck_assert_int_eq(jwt_new(&jwt), 0);
	ck_assert_int_eq(jwt_set_alg(jwt, JWT_ALG_RS256,
	    (const unsigned char *)priv, (int)strlen(priv)), 0);
	ck_assert_int_eq(jwt_add_grants_json(jwt, pay), 0);
	tok = jwt_encode_str(jwt);
	ck_assert_ptr_nonnull(tok);
	ck_assert_int_eq(jwtv_verify(keys, tok, strlen(tok), NOW, LEEWAY,
	    &claims, &r), RS_OK);
	ck_assert_int_eq(r, JWTV_OK);
	ck_assert_str_eq(json_get_string(claims, "data"), "{}");
	ck_assert(json_get(claims, "exp")->valuedouble ==
	    (double)(NOW + 3600000));
	cJSON_Delete(claims);
	other = keys_of(key_c, NULL);
	CHECK_FAILS(other, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	jwtv_keys_free(other);
	free(tok);
	jwt_free(jwt);

	/* The other way round: libjwt accepts what these tests sign. */
	mine = make_token(key_a, HDR_OK, pay);
	ck_assert_int_eq(jwt_decode(&dec, mine, (const unsigned char *)pub,
	    (int)strlen(pub)), 0);
	ck_assert_int_eq(jwt_get_alg(dec), JWT_ALG_RS256);
	jwt_free(dec);
	free(mine);

	free(pay);
	free(pub);
	free(priv);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- (10) reason names ------------------------------------------------- */

START_TEST(test_reason_names)
{
	const char	*names[JWTV_PAYLOAD + 1];
	int		 i, j;

	for (i = JWTV_OK; i <= JWTV_PAYLOAD; i++) {
		names[i] = jwtv_reason_name((enum jwtv_reason)i);
		ck_assert_ptr_nonnull(names[i]);
		ck_assert_uint_gt(strlen(names[i]), 0);
		for (j = 0; j < i; j++)
			ck_assert_str_ne(names[i], names[j]);
	}
	ck_assert_str_eq(jwtv_reason_name(JWTV_EXPIRED), "expired");
	ck_assert_str_eq(jwtv_reason_name(JWTV_SIGNATURE), "signature");
	ck_assert_str_eq(jwtv_reason_name(JWTV_OK), "ok");
	ck_assert_str_eq(jwtv_reason_name((enum jwtv_reason)(JWTV_PAYLOAD +
	    1)), "unknown");
	ck_assert_str_eq(jwtv_reason_name((enum jwtv_reason)-1), "unknown");
}
END_TEST

/* ---- keys -------------------------------------------------------------- */

static void
check_key_refused(const char *text, size_t len, const char *want)
{
	struct jwtv_keys	*keys = NULL, *two;
	const char		*why = NULL;

	ck_assert_int_eq(jwtv_keys_add_pem(&keys, text, len, &why),
	    RS_ERR_CONFIG);
	ck_assert_ptr_null(keys);
	ck_assert_str_eq(why, want);
	/* An existing set is left unchanged. */
	two = keys_of(key_a, key_b);
	why = NULL;
	ck_assert_int_eq(jwtv_keys_add_pem(&two, text, len, &why),
	    RS_ERR_CONFIG);
	ck_assert_str_eq(why, want);
	ck_assert_uint_eq(jwtv_keys_count(two), 2);
	jwtv_keys_free(two);
}

/* SPKI PEM whose DER is followed by two more bytes.  Caller frees. */
static char *
pem_trailing_der(EVP_PKEY *key)
{
	unsigned char	*der = NULL, *der2;
	int		 len;
	BIO		*bio;
	char		*data, *s;
	long		 n;

	len = i2d_PUBKEY(key, &der);
	ck_assert_int_gt(len, 0);
	der2 = xmalloc((size_t)len + 2);
	memcpy(der2, der, (size_t)len);
	der2[len] = 0x05;
	der2[len + 1] = 0x00;
	bio = BIO_new(BIO_s_mem());
	ck_assert_ptr_nonnull(bio);
	ck_assert_int_gt(PEM_write_bio(bio, "PUBLIC KEY", "", der2,
	    len + 2), 0);
	n = BIO_get_mem_data(bio, &data);
	s = xstrndup(data, (size_t)n);
	BIO_free(bio);
	free(der2);
	OPENSSL_free(der);
	return s;
}

START_TEST(test_keys_refused)
{
	char	*pem, *s, *b64;

	check_key_refused("", 0, "not a PEM public key");
	check_key_refused("   \n", 4, "not a PEM public key");
	check_key_refused("hello", 5, "not a PEM public key");
	s = xstrdup("-----BEGIN PUBLIC KEY-----\nAAAA\n"
	    "-----END PUBLIC KEY-----\n");
	check_key_refused(s, strlen(s), "not a PEM public key");
	free(s);
	pem = pem_of(key_ec, false, "SubjectPublicKeyInfo");
	check_key_refused(pem, strlen(pem), "not an RSA key");
	b64 = b64std(pem);
	check_key_refused(b64, strlen(b64), "not an RSA key");
	free(b64);
	free(pem);
	pem = pub_pem(key_small);
	check_key_refused(pem, strlen(pem), "RSA key shorter than 2048 bits");
	free(pem);
	/* A private key is not a public key. */
	pem = pem_of(key_a, true, "PrivateKeyInfo");
	check_key_refused(pem, strlen(pem), "not a PEM public key");
	free(pem);
	/* Two keys in one text, or junk around the block. */
	pem = pub_pem(key_a);
	s = xasprintf("%s%s", pem, pem);
	check_key_refused(s, strlen(s), "not a PEM public key");
	free(s);
	s = xasprintf("key:\n%s", pem);
	check_key_refused(s, strlen(s), "not a PEM public key");
	free(s);
	s = xasprintf("%sjunk\n", pem);
	check_key_refused(s, strlen(s), "not a PEM public key");
	free(s);
	/* Cut short: len bytes only, the rest of the string is unseen. */
	check_key_refused(pem, strlen(pem) - 30, "not a PEM public key");
	/* Base64 of something that is not PEM, or base64 of base64. */
	b64 = b64std("hello world");
	check_key_refused(b64, strlen(b64), "not a PEM public key");
	free(b64);
	s = b64std(pem);
	b64 = b64std(s);
	check_key_refused(b64, strlen(b64), "not a PEM public key");
	free(b64);
	free(s);
	free(pem);
	/* Base64 of a PEM with junk before the block. */
	pem = pub_pem(key_a);
	s = xasprintf("junk\n%s", pem);
	b64 = b64std(s);
	check_key_refused(b64, strlen(b64), "not a PEM public key");
	free(b64);
	free(s);
	/* PEM headers (as in an encrypted key) have no place here. */
	s = xasprintf("-----BEGIN PUBLIC KEY-----\nProc-Type: 4,ENCRYPTED\n"
	    "DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n%s",
	    strchr(pem, '\n') + 1);
	check_key_refused(s, strlen(s), "not a PEM public key");
	free(s);
	free(pem);
	/* A good SubjectPublicKeyInfo followed by more DER in the block. */
	s = pem_trailing_der(key_a);
	check_key_refused(s, strlen(s), "not a PEM public key");
	free(s);
	/* A key text over 64 KiB. */
	s = xmalloc(70 * 1024);
	memset(s, 'A', 70 * 1024);
	check_key_refused(s, 70 * 1024, "not a PEM public key");
	free(s);
}
END_TEST

START_TEST(test_keys_forms)
{
	struct jwtv_keys	*keys = NULL;
	const char		*why = NULL;
	char			*pem, *pay = pay_ok(), *tok, *s;

	/* PKCS#1 "RSA PUBLIC KEY". */
	pem = pem_of(key_b, false, "type-specific");
	ck_assert_ptr_nonnull(strstr(pem, "-----BEGIN RSA PUBLIC KEY-----"));
	ck_assert_int_eq(jwtv_keys_add_pem(&keys, pem, strlen(pem), &why),
	    RS_OK);
	ck_assert_ptr_null(why);
	tok = make_token(key_b, HDR_OK, pay);
	CHECK_OK(keys, tok, NOW);
	free(tok);
	free(pem);
	/* SPKI with surrounding white space and CRLF line ends. */
	pem = pub_pem(key_a);
	s = xasprintf("\n\n  %s  \n", pem);
	ck_assert_int_eq(jwtv_keys_add_pem(&keys, s, strlen(s), &why),
	    RS_OK);
	ck_assert_uint_eq(jwtv_keys_count(keys), 2);
	free(s);
	tok = make_token(key_a, HDR_OK, pay);
	CHECK_OK(keys, tok, NOW);
	free(tok);
	free(pem);
	tok = make_token(key_c, HDR_OK, pay);
	CHECK_FAILS(keys, tok, NOW, RS_ERR_AUTH, JWTV_SIGNATURE);
	free(tok);
	ck_assert_uint_eq(jwtv_keys_count(NULL), 0);
	jwtv_keys_free(keys);
	jwtv_keys_free(NULL);
	free(pay);
}
END_TEST

START_TEST(test_keys_file)
{
	struct jwtv_keys	*keys = NULL;
	const char		*why = NULL;
	char			 dir[] = "/tmp/check_jwt.XXXXXX";
	char			*path, *pem, *big;
	FILE			*fp;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	path = xasprintf("%s/missing.pem", dir);
	ck_assert_int_eq(jwtv_keys_add_file(&keys, path, &why),
	    RS_ERR_CONFIG);
	ck_assert_str_eq(why, "key file not found");
	ck_assert_ptr_null(keys);
	free(path);

	/* Exactly 64 KiB with the key in it is fine; one more byte not. */
	pem = pub_pem(key_a);
	big = xmalloc(64 * 1024 + 2);
	memset(big, '\n', 64 * 1024 + 1);
	memcpy(big, pem, strlen(pem));
	path = xasprintf("%s/key.pem", dir);
	fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(big, 1, 64 * 1024, fp), 64 * 1024);
	fclose(fp);
	ck_assert_int_eq(jwtv_keys_add_file(&keys, path, &why), RS_OK);
	ck_assert_uint_eq(jwtv_keys_count(keys), 1);
	fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(big, 1, 64 * 1024 + 1, fp), 64 * 1024 + 1);
	fclose(fp);
	ck_assert_int_eq(jwtv_keys_add_file(&keys, path, &why),
	    RS_ERR_CONFIG);
	ck_assert_str_eq(why, "key file larger than 64 KiB");
	ck_assert_uint_eq(jwtv_keys_count(keys), 1);
	ck_assert_int_eq(unlink(path), 0);
	free(path);

	/* A directory is not a key file. */
	ck_assert_int_eq(jwtv_keys_add_file(&keys, dir, &why),
	    RS_ERR_CONFIG);
	ck_assert_uint_eq(jwtv_keys_count(keys), 1);
	ck_assert_int_eq(rmdir(dir), 0);

	free(big);
	free(pem);
	jwtv_keys_free(keys);
}
END_TEST

/* ---- threads share one key set ---------------------------------------- */

struct worker {
	const struct jwtv_keys	*keys;
	const char		*good;
	const char		*bad;
	int			 fails;
};

static void *
worker_main(void *arg)
{
	struct worker		*w = arg;
	cJSON			*claims;
	enum jwtv_reason	 r;
	int			 i;

	for (i = 0; i < 100; i++) {
		claims = NULL;
		if (jwtv_verify(w->keys, w->good, strlen(w->good), NOW,
		    LEEWAY, &claims, &r) != RS_OK || r != JWTV_OK)
			w->fails++;
		cJSON_Delete(claims);
		if (jwtv_verify(w->keys, w->bad, strlen(w->bad), NOW,
		    LEEWAY, &claims, &r) != RS_ERR_AUTH ||
		    r != JWTV_SIGNATURE)
			w->fails++;
	}
	return NULL;
}

START_TEST(test_threads)
{
	struct jwtv_keys	*keys = keys_of(key_a, key_b);
	char			*pay = pay_ok(), *good, *bad;
	struct worker		 w[4];
	pthread_t		 t[4];
	int			 i;

	good = make_token(key_b, HDR_OK, pay);
	bad = make_token(key_c, HDR_OK, pay);
	for (i = 0; i < 4; i++) {
		w[i].keys = keys;
		w[i].good = good;
		w[i].bad = bad;
		w[i].fails = 0;
		ck_assert_int_eq(pthread_create(&t[i], NULL, worker_main,
		    &w[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
		ck_assert_int_eq(w[i].fails, 0);
	}
	free(good);
	free(bad);
	free(pay);
	jwtv_keys_free(keys);
}
END_TEST

static Suite *
jwt_suite(void)
{
	Suite	*s = suite_create("jwtverify");
	TCase	*tc;

	tc = tcase_create("fixture");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_fixture_verifies);
	tcase_add_test(tc, test_fixture_expiry);
	tcase_add_test(tc, test_fixture_base64_key);
	tcase_add_test(tc, test_fixture_key_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("alg");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_alg_variants);
	tcase_add_test(tc, test_alg_none_unsigned);
	tcase_add_test(tc, test_alg_hs256_confusion);
	tcase_add_test(tc, test_header_key_hints_ignored);
	suite_add_tcase(s, tc);

	tc = tcase_create("signature");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_key_rotation);
	tcase_add_test(tc, test_tampered);
	tcase_add_test(tc, test_signature_short);
	tcase_add_test(tc, test_wrong_key);
	tcase_add_test(tc, test_libjwt_cross);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);

	tc = tcase_create("claims");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_claims_types);
	tcase_add_test(tc, test_claims_times);
	tcase_add_test(tc, test_claims_returned);
	tcase_add_test(tc, test_payload_bad);
	suite_add_tcase(s, tc);

	tc = tcase_create("gate");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_gate);
	tcase_add_test(tc, test_gate_base64url);
	tcase_add_test(tc, test_gate_too_long);
	suite_add_tcase(s, tc);

	tc = tcase_create("keys");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_keys_refused);
	tcase_add_test(tc, test_keys_forms);
	tcase_add_test(tc, test_keys_file);
	tcase_add_test(tc, test_reason_names);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner	*sr;
	int	 failed;

	xmalloc_init_json();
	/* Keys are made once here; forked tests inherit them. */
	key_a = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	key_b = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	key_c = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	key_small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	key_ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (key_a == NULL || key_b == NULL || key_c == NULL ||
	    key_small == NULL || key_ec == NULL) {
		fprintf(stderr, "check_jwt: key generation failed\n");
		return 1;
	}

	sr = srunner_create(jwt_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	EVP_PKEY_free(key_a);
	EVP_PKEY_free(key_b);
	EVP_PKEY_free(key_c);
	EVP_PKEY_free(key_small);
	EVP_PKEY_free(key_ec);
	return failed != 0;
}
