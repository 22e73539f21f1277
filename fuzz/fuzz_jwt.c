/*
 * fuzz_jwt.c: libFuzzer target for the JWT pre-check, header parse and
 * claims checks (jwtv_verify).
 *
 * One RSA key is generated at start-up.  The first input byte picks a
 * mode:
 *   0x01  the rest is a header: the token is b64url(rest).b64url(claims)
 *         .b64url(junk), so the header parser and alg check are reached;
 *   0x02  the rest is a claims payload, signed correctly with the key
 *         under {"alg":"RS256","typ":"JWT"}, so the claims checks are
 *         reached;
 *   else  the whole input is the token.
 * Invariants: the reason and status agree; nothing but a correctly
 * signed token is ever accepted; a refusal past the header stage means
 * the header was strict JSON with alg exactly "RS256"; a correctly
 * signed token is never refused for its signature or header; an
 * accepted token's claims are an object with an integer exp in the
 * future (less the leeway).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "adapters/jwtverify.h"
#include "domain/json.h"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

#define NOW	1700000000
#define LEEWAY	60

static struct jwtv_keys	*keys;
static EVP_PKEY		*pkey;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	BIO *bio;
	char *pem;
	long len;
	const char *why = NULL;

	pkey = EVP_RSA_gen(2048);
	CHECK(pkey != NULL);
	bio = BIO_new(BIO_s_mem());
	CHECK(bio != NULL && PEM_write_bio_PUBKEY(bio, pkey) == 1);
	len = BIO_get_mem_data(bio, &pem);
	CHECK(len > 0);
	CHECK(jwtv_keys_add_pem(&keys, pem, (size_t)len, &why) == RS_OK);
	BIO_free(bio);
	return 0;
}

/* base64url of n bytes at p, unpadded, appended at out; returns the
 * length written (out needs 4 * n / 3 + 4 bytes). */
static size_t
b64url(char *out, const unsigned char *p, size_t n)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t i, o = 0;
	uint32_t v;

	for (i = 0; i + 2 < n; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
		out[o++] = tab[v & 63];
	}
	if (n - i == 1) {
		v = (uint32_t)p[i] << 16;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
	} else if (n - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
	}
	return o;
}

/* Does header (n bytes) parse strictly with alg exactly "RS256"? */
static int
header_rs256(const unsigned char *h, size_t n)
{
	cJSON *root = NULL;
	const char *why, *alg;
	int ok = 0;

	if (json_parse_strict((const char *)h, n, JSON_MAX_DEPTH, &root,
	    &why) != RS_OK)
		return 0;
	alg = json_get_string(root, "alg");
	ok = alg != NULL && strcmp(alg, "RS256") == 0;
	cJSON_Delete(root);
	return ok;
}

/* signed_ok: 1 if tok is correctly signed, 2 if so but with an empty
 * payload (which may be refused as FORMAT). */
static void
verify(const char *tok, size_t len, int signed_ok, const unsigned char *hdr,
    size_t hdrlen)
{
	cJSON *claims = NULL;
	enum jwtv_reason reason = (enum jwtv_reason)-1;
	enum rs_status st;
	int64_t exp;

	st = jwtv_verify(keys, tok, len, NOW, LEEWAY, &claims, &reason);
	CHECK(reason >= JWTV_OK && reason <= JWTV_PAYLOAD);
	CHECK(jwtv_reason_name(reason) != NULL);
	if (st == RS_OK) {
		CHECK(signed_ok && reason == JWTV_OK);
		CHECK(claims != NULL && cJSON_IsObject(claims));
		CHECK(json_get_int64(claims, "exp", &exp) == RS_OK);
		CHECK(exp + LEEWAY >= NOW);
		cJSON_Delete(claims);
		return;
	}
	CHECK(claims == NULL && reason != JWTV_OK);
	if (st == RS_ERR_INPUT)
		CHECK(reason == JWTV_PAYLOAD && signed_ok);
	else
		CHECK(st == RS_ERR_AUTH);
	if (hdr != NULL && reason >= JWTV_SIGNATURE)
		CHECK(header_rs256(hdr, hdrlen));
	if (signed_ok)
		CHECK(reason != JWTV_SIGNATURE && reason != JWTV_HEADER &&
		    reason != JWTV_ALG && reason != JWTV_CHARSET &&
		    (reason != JWTV_FORMAT || signed_ok == 2));
	if (len == 0)
		CHECK(reason == JWTV_EMPTY);
	if (len > JWTV_MAX_TOKEN)
		CHECK(reason == JWTV_TOO_LONG);
}

static void
header_mode(const uint8_t *h, size_t n)
{
	static const char claims[] = "{\"exp\":1900000000}";
	unsigned char junk[256];
	char *tok;
	size_t o;

	memset(junk, 0x5a, sizeof(junk));
	tok = malloc(4 * (n + sizeof(claims) + sizeof(junk)) / 3 + 16);
	CHECK(tok != NULL);
	o = b64url(tok, h, n);
	tok[o++] = '.';
	o += b64url(tok + o, (const unsigned char *)claims,
	    sizeof(claims) - 1);
	tok[o++] = '.';
	o += b64url(tok + o, junk, sizeof(junk));
	verify(tok, o, 0, h, n);
	free(tok);
}

static void
signed_mode(const uint8_t *c, size_t n)
{
	static const char hdr[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	unsigned char sig[512];
	size_t siglen = sizeof(sig), o;
	EVP_MD_CTX *md;
	char *tok;

	tok = malloc(4 * (n + sizeof(hdr) + sizeof(sig)) / 3 + 16);
	CHECK(tok != NULL);
	o = b64url(tok, (const unsigned char *)hdr, sizeof(hdr) - 1);
	tok[o++] = '.';
	o += b64url(tok + o, c, n);
	md = EVP_MD_CTX_new();
	CHECK(md != NULL);
	CHECK(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) == 1);
	CHECK(EVP_DigestSign(md, sig, &siglen, (const unsigned char *)tok,
	    o) == 1);
	EVP_MD_CTX_free(md);
	tok[o++] = '.';
	o += b64url(tok + o, sig, siglen);
	verify(tok, o, n == 0 ? 2 : 1, NULL, 0);
	free(tok);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 0 && data[0] == 0x01)
		header_mode(data + 1, size - 1);
	else if (size > 0 && data[0] == 0x02)
		signed_mode(data + 1, size - 1);
	else
		verify((const char *)data, size, 0, NULL, 0);
	return 0;
}
