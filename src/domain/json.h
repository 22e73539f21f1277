/*
 * json.h: strict JSON for hostile input, on top of cJSON.
 *
 * cJSON 1.7.15 is lax (HARDENING.md): it accepts trailing garbage,
 * duplicate keys, invalid UTF-8, leading zeros, 1e999 and cuts strings at
 * \u0000; its nesting limit is 1000.  json_parse_strict() first runs a
 * small RFC 8259 validator over the raw bytes that refuses all of those,
 * then lets cJSON build the tree.  Use the json_get_* helpers (always
 * case-sensitive) to read it.
 */
#ifndef RS_JSON_H
#define RS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util/status.h"

/* Our documents need fewer than 10 levels; Wix refunds about 5. */
#define JSON_MAX_DEPTH	16

/* The reason json_parse_strict() gives for a number beyond a double
 * (1e999); compare the pointer. */
extern const char json_why_range[];

/*
 * Parse exactly len bytes at text as one JSON value.  Refused, with a
 * static reason in *why: empty input, a NUL byte, invalid UTF-8 (also
 * overlong forms and surrogates), a \u0000 escape, an unpaired surrogate
 * escape, nesting deeper than max_depth, a duplicate key in an object,
 * leading zeros, a non-finite number, any grammar error, anything after
 * the value but white space.
 * Returns RS_OK and the tree in *out (caller owns; cJSON_Delete), or
 * RS_ERR_INPUT.
 */
enum rs_status	json_parse_strict(const char *text, size_t len, int max_depth,
		    cJSON **out /* OUT */, const char **why /* OUT */);

/* Member key of obj, case-sensitive.  NULL if obj is not an object,
 * the key is absent, or the member has another type. */
const cJSON	*json_get(const cJSON *obj, const char *key);
const char	*json_get_string(const cJSON *obj, const char *key);
const cJSON	*json_get_object(const cJSON *obj, const char *key);
const cJSON	*json_get_array(const cJSON *obj, const char *key);
/* Booleans: RS_OK and *out if present and boolean, RS_ERR_NOTFOUND if
 * absent, RS_ERR_INPUT if of another type. */
enum rs_status	json_get_bool(const cJSON *obj, const char *key,
		    bool *out /* OUT */);

/*
 * An integer member that Wix may send as a string ("42") or as a number:
 * RS_OK and *out if it is a string holding an int64 (strnum_i64 rules) or
 * an integral number of magnitude at most 2^53 (so a double held it
 * exactly), RS_ERR_NOTFOUND if absent or null, RS_ERR_INPUT otherwise.
 */
enum rs_status	json_get_int64(const cJSON *obj, const char *key,
		    int64_t *out /* OUT */);

/* Compact text of item, which must not be NULL.  Caller owns; free
 * with free(). */
char		*json_print(const cJSON *item);

#endif
