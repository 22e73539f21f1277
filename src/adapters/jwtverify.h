/*
 * jwtverify.h: verifying Wix webhook JWTs (RS256 only).
 *
 * The token is gated before anything parses it: a length cap and the
 * charset [A-Za-z0-9_.-] (libjwt 1.10.2 alloca()s each segment, and any
 * other byte is an attack or garbage).  The header must be strict JSON
 * whose "alg" is exactly "RS256"; every other header member (kid, typ,
 * jku, x5u, jwk, ...) is ignored, so only configured keys ever verify.
 * The signature is checked with OpenSSL against keys parsed once at load
 * time; see the module comment in jwtverify.c for why not libjwt.
 * Then the claims: strict JSON, exp (required) and nbf (if present)
 * integers checked against the injected wall clock with a leeway; iat
 * (if present) no more than the leeway in the future, and no maximum age
 * (Wix retries the same token for ~47 hours).
 */
#ifndef RS_JWTVERIFY_H
#define RS_JWTVERIFY_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util/status.h"

/* Longest token accepted: a refund webhook is a few KiB. */
#define JWTV_MAX_TOKEN	(64 * 1024)

/* Why a token was refused; also the /metrics label (jwtv_reason_name). */
enum jwtv_reason {
	JWTV_OK = 0,
	JWTV_EMPTY,		/* no token */
	JWTV_TOO_LONG,		/* over JWTV_MAX_TOKEN */
	JWTV_CHARSET,		/* a byte outside [A-Za-z0-9_.-] */
	JWTV_FORMAT,		/* not three segments, bad base64url */
	JWTV_HEADER,		/* header not strict JSON or no alg */
	JWTV_ALG,		/* alg is not exactly RS256 */
	JWTV_SIGNATURE,		/* no configured key verifies it */
	JWTV_CLAIMS,		/* exp/nbf of the wrong type */
	JWTV_EXPIRED,		/* exp + leeway is past */
	JWTV_NOT_YET_VALID,	/* nbf or iat - leeway is in the future */
	JWTV_PAYLOAD		/* signature fine, payload not strict JSON
				   object: the caller answers 400 */
};

/* "expired", "signature", ... static. */
const char	*jwtv_reason_name(enum jwtv_reason r);

/* A set of RSA public keys (rotation).  Immutable once built, so one set
 * may be used by many threads at once. */
struct jwtv_keys;

/*
 * Parse one key, given as SPKI PEM text ("-----BEGIN PUBLIC KEY-----"),
 * PKCS#1 PEM ("-----BEGIN RSA PUBLIC KEY-----"), or as base64 of that
 * PEM text (what Wix's SDK also accepts; white space in it is skipped),
 * and add it to *keys (created if *keys is NULL).  It must be RSA of at
 * least 2048 bits.  Returns RS_OK, or RS_ERR_CONFIG with a static reason
 * in *why and *keys unchanged.
 */
enum rs_status	jwtv_keys_add_pem(struct jwtv_keys **keys, const char *text,
		    size_t len, const char **why /* OUT */);
/* Read a file (at most 64 KiB) holding one key as above; RS_ERR_CONFIG
 * with a static *why if it cannot be read. */
enum rs_status	jwtv_keys_add_file(struct jwtv_keys **keys, const char *path,
		    const char **why /* OUT */);
size_t		jwtv_keys_count(const struct jwtv_keys *keys);
void		jwtv_keys_free(struct jwtv_keys *keys);

/*
 * Verify token (len bytes, need not be NUL-terminated) at wall time now
 * (seconds) with leeway seconds of skew.
 * RS_OK: *claims is the strict-parsed claims object (caller owns;
 *   cJSON_Delete).
 * RS_ERR_AUTH: refused (401); *reason says why.
 * RS_ERR_INPUT: the signature verified but the payload is not a strict
 *   JSON object (400); *reason is JWTV_PAYLOAD.
 * *claims is set only on RS_OK; *reason is always set.
 */
enum rs_status	jwtv_verify(const struct jwtv_keys *keys, const char *token,
		    size_t len, int64_t now, int64_t leeway,
		    cJSON **claims /* OUT */, enum jwtv_reason *reason /* OUT */);

#endif
