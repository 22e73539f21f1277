/*
 * json.c: strict JSON for hostile input.
 *
 * cJSON 1.7.15 is lax (see HARDENING.md): it takes trailing garbage,
 * duplicate keys, invalid UTF-8, leading zeros and 1e999, and it cuts
 * strings at \u0000.  So json_parse_strict() first runs the small
 * hand-written RFC 8259 validator below over the raw bytes, which refuses
 * all of those with a precise reason, and only then lets cJSON build the
 * tree.  A walk over the tree then refuses duplicate keys and numbers
 * that cJSON turned into infinities.  The one double here is cJSON's own
 * number value, checked for finiteness; money never goes through it.
 *
 * Stateless and thread-safe, once xmalloc_init_json() has run.
 */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "domain/json.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

/*
 * Hard ceiling on nesting whatever the caller asks for: the validator
 * recurses once per level, and cJSON itself stops at 1000.
 */
#define JSON_HARD_MAX_DEPTH	1000
/* cJSON copies a number into a 64-byte buffer before strtod(). */
#define JSON_MAX_NUMBER		63

/* Integers a double holds exactly: -2^53 .. 2^53. */
#define JSON_EXACT_INT		9007199254740992.0

/* Where a number's text is in the input, in document order. */
struct jv_num {
	size_t		 off;
	size_t		 len;
};

struct jv {
	const unsigned char	*start;	/* the input */
	const unsigned char	*p;	/* next byte */
	const unsigned char	*end;	/* one past the last byte */
	int			 depth;	/* open arrays and objects */
	int			 max_depth;
	const char		*why;	/* first failure */
	struct jv_num		*nums;	/* every number seen: few, or owned */
	size_t			 nnums, capnums;
	struct jv_num		 few[8];	/* most documents need no more */
};

static bool	jv_value(struct jv *);

static bool
jv_fail(struct jv *v, const char *why)
{
	if (v->why == NULL)
		v->why = why;
	return false;
}

/*
 * RFC 3629 well-formedness: no overlong forms, no surrogates (U+D800 to
 * U+DFFF), nothing above U+10FFFF, no stray continuation bytes.
 */
static bool
utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		unsigned char lo = 0x80, hi = 0xbf;
		size_t n, k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1;
		else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0;	/* overlong */
			else if (c == 0xed)
				hi = 0x9f;	/* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90;	/* overlong */
			else if (c == 0xf4)
				hi = 0x8f;	/* above U+10FFFF */
		} else
			return false;	/* 80..C1, F5..FF */
		if (len - i - 1 < n)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (k = 2; k <= n; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return false;
		i += n + 1;
	}
	return true;
}

static void
jv_ws(struct jv *v)
{
	while (v->p < v->end && (*v->p == ' ' || *v->p == '\t' ||
	    *v->p == '\n' || *v->p == '\r'))
		v->p++;
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Four hex digits at v->p, which is left after them. */
static bool
jv_hex4(struct jv *v, unsigned *out)
{
	unsigned cp = 0;

	if (v->end - v->p < 4)
		return jv_fail(v, "invalid escape");
	for (int i = 0; i < 4; i++) {
		int h = hexval(v->p[i]);

		if (h < 0)
			return jv_fail(v, "invalid escape");
		cp = cp << 4 | (unsigned)h;
	}
	v->p += 4;
	*out = cp;
	return true;
}

/* After the backslash. */
static bool
jv_escape(struct jv *v)
{
	unsigned cp, lo;

	if (v->p == v->end)
		return jv_fail(v, "syntax error");
	switch (*v->p) {
	case '"': case '\\': case '/':
	case 'b': case 'f': case 'n': case 'r': case 't':
		v->p++;
		return true;
	case 'u':
		v->p++;
		if (!jv_hex4(v, &cp))
			return false;
		if (cp == 0)
			return jv_fail(v, "\\u0000 escape");
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return jv_fail(v, "unpaired surrogate");
		if (cp < 0xd800 || cp > 0xdbff)
			return true;
		/* A high surrogate must be followed by a low one. */
		if (v->end - v->p < 2 || v->p[0] != '\\' || v->p[1] != 'u')
			return jv_fail(v, "unpaired surrogate");
		v->p += 2;
		if (!jv_hex4(v, &lo))
			return false;
		if (lo < 0xdc00 || lo > 0xdfff)
			return jv_fail(v, "unpaired surrogate");
		return true;
	default:
		return jv_fail(v, "invalid escape");
	}
}

/* At the opening quote.  The bytes are already known to be UTF-8. */
static bool
jv_string(struct jv *v)
{
	v->p++;
	while (v->p < v->end) {
		unsigned char c = *v->p;

		if (c == '"') {
			v->p++;
			return true;
		}
		if (c < 0x20)
			return jv_fail(v, "control character in string");
		v->p++;
		if (c == '\\' && !jv_escape(v))
			return false;
	}
	return jv_fail(v, "syntax error");
}

static bool
jv_number(struct jv *v)
{
	const unsigned char *start = v->p;

	if (*v->p == '-')
		v->p++;
	if (v->p == v->end || !is_digit(*v->p))
		return jv_fail(v, "syntax error");
	if (*v->p == '0') {
		v->p++;
		if (v->p < v->end && is_digit(*v->p))
			return jv_fail(v, "leading zero");
	} else {
		while (v->p < v->end && is_digit(*v->p))
			v->p++;
	}
	if (v->p < v->end && *v->p == '.') {
		v->p++;
		if (v->p == v->end || !is_digit(*v->p))
			return jv_fail(v, "syntax error");
		while (v->p < v->end && is_digit(*v->p))
			v->p++;
	}
	if (v->p < v->end && (*v->p == 'e' || *v->p == 'E')) {
		v->p++;
		if (v->p < v->end && (*v->p == '+' || *v->p == '-'))
			v->p++;
		if (v->p == v->end || !is_digit(*v->p))
			return jv_fail(v, "syntax error");
		while (v->p < v->end && is_digit(*v->p))
			v->p++;
	}
	if (v->p - start > JSON_MAX_NUMBER)
		return jv_fail(v, "number too long");
	if (v->nnums == v->capnums) {
		struct jv_num *n;

		v->capnums = v->capnums * 2;
		n = xreallocarray(v->nums != v->few ? v->nums : NULL,
		    v->capnums, sizeof(*v->nums));
		if (v->nums == v->few)
			memcpy(n, v->few, sizeof(v->few));
		v->nums = n;
	}
	v->nums[v->nnums].off = (size_t)(start - v->start);
	v->nums[v->nnums].len = (size_t)(v->p - start);
	v->nnums++;
	return true;
}

static bool
jv_literal(struct jv *v, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(v->end - v->p) < n || memcmp(v->p, word, n) != 0)
		return jv_fail(v, "syntax error");
	v->p += n;
	return true;
}

static bool
jv_open(struct jv *v)
{
	v->p++;
	if (++v->depth > v->max_depth)
		return jv_fail(v, "nesting too deep");
	jv_ws(v);
	return true;
}

/*
 * jv_array, jv_object and jv_value recurse once per nesting level, and
 * jv_open() stops at max_depth.
 * NOLINTBEGIN(misc-no-recursion)
 */
static bool
jv_array(struct jv *v)
{
	if (!jv_open(v))
		return false;
	if (v->p < v->end && *v->p == ']')
		goto done;
	for (;;) {
		if (!jv_value(v))
			return false;
		jv_ws(v);
		if (v->p == v->end)
			return jv_fail(v, "syntax error");
		if (*v->p == ']')
			break;
		if (*v->p != ',')
			return jv_fail(v, "syntax error");
		v->p++;
	}
done:
	v->p++;
	v->depth--;
	return true;
}

static bool
jv_object(struct jv *v)
{
	if (!jv_open(v))
		return false;
	if (v->p < v->end && *v->p == '}')
		goto done;
	for (;;) {
		jv_ws(v);
		if (v->p == v->end || *v->p != '"')
			return jv_fail(v, "syntax error");
		if (!jv_string(v))
			return false;
		jv_ws(v);
		if (v->p == v->end || *v->p != ':')
			return jv_fail(v, "syntax error");
		v->p++;
		if (!jv_value(v))
			return false;
		jv_ws(v);
		if (v->p == v->end)
			return jv_fail(v, "syntax error");
		if (*v->p == '}')
			break;
		if (*v->p != ',')
			return jv_fail(v, "syntax error");
		v->p++;
	}
done:
	v->p++;
	v->depth--;
	return true;
}

static bool
jv_value(struct jv *v)
{
	jv_ws(v);
	if (v->p == v->end)
		return jv_fail(v, "syntax error");
	switch (*v->p) {
	case '{':
		return jv_object(v);
	case '[':
		return jv_array(v);
	case '"':
		return jv_string(v);
	case 't':
		return jv_literal(v, "true");
	case 'f':
		return jv_literal(v, "false");
	case 'n':
		return jv_literal(v, "null");
	default:
		if (*v->p == '-' || is_digit(*v->p))
			return jv_number(v);
		return jv_fail(v, "syntax error");
	}
}
/* NOLINTEND(misc-no-recursion) */

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char * const *)a, *(const char * const *)b);
}

/*
 * What the validator cannot see: duplicate keys and numbers cJSON made
 * non-finite.  Recursion is bounded by the validated depth.
 * NOLINTBEGIN(misc-no-recursion)
 */
const char json_why_range[] = "number out of range";

static const char *
tree_check(const cJSON *item)
{
	const cJSON *c;
	const char **names;
	const char *why = NULL;
	size_t n = 0, i;

	if (cJSON_IsNumber(item) && !isfinite(item->valuedouble))
		return json_why_range;
	if (!cJSON_IsArray(item) && !cJSON_IsObject(item))
		return NULL;
	for (c = item->child; c != NULL; c = c->next) {
		if ((why = tree_check(c)) != NULL)
			return why;
		n++;
	}
	if (!cJSON_IsObject(item) || n < 2)
		return NULL;
	names = xreallocarray(NULL, n, sizeof(*names));
	for (i = 0, c = item->child; c != NULL; c = c->next)
		names[i++] = c->string != NULL ? c->string : "";
	qsort(names, n, sizeof(*names), cmp_names);
	for (i = 1; i < n; i++) {
		if (strcmp(names[i - 1], names[i]) == 0) {
			why = "duplicate key";
			break;
		}
	}
	free(names);
	return why;
}
/* NOLINTEND(misc-no-recursion) */

/*
 * Give each number of tree, in document order, its text from the input
 * as valuestring (cJSON keeps only the double, and prints 1e5 as 100000
 * and 12345678901234567890.1 rounded).  json_print() prints that text.
 * cJSON_Delete() frees a valuestring whatever the type; cJSON_Duplicate()
 * copies it.  Returns the next index into v->nums.
 * NOLINTBEGIN(misc-no-recursion): bounded by the validated depth.
 */
static size_t
keep_numbers(cJSON *item, const struct jv *v, const char *text, size_t i)
{
	cJSON *c;

	if (cJSON_IsNumber(item) && i < v->nnums) {
		char *s = cJSON_malloc(v->nums[i].len + 1);

		if (s == NULL)
			fatalx("%s: out of memory", __func__);
		memcpy(s, text + v->nums[i].off, v->nums[i].len);
		s[v->nums[i].len] = '\0';
		item->valuestring = s;
		return i + 1;
	}
	for (c = item->child; c != NULL; c = c->next)
		i = keep_numbers(c, v, text, i);
	return i;
}
/* NOLINTEND(misc-no-recursion) */

enum rs_status
json_parse_strict(const char *text, size_t len, int max_depth, cJSON **out,
    const char **why)
{
	struct jv v;
	cJSON *tree = NULL;
	char *copy = NULL;
	const char *reason = NULL;

	memset(&v, 0, sizeof(v));
	v.nums = v.few;
	v.capnums = sizeof(v.few) / sizeof(v.few[0]);
	if (text == NULL || len == 0) {
		reason = "empty";
		goto out;
	}
	if (memchr(text, '\0', len) != NULL) {
		reason = "nul byte";
		goto out;
	}
	if (!utf8_valid((const unsigned char *)text, len)) {
		reason = "invalid utf-8";
		goto out;
	}
	v.start = v.p = (const unsigned char *)text;
	v.end = v.p + len;
	v.max_depth = max_depth < JSON_HARD_MAX_DEPTH ? max_depth :
	    JSON_HARD_MAX_DEPTH;
	jv_ws(&v);
	if (v.p == v.end) {
		reason = "empty";
		goto out;
	}
	if (!jv_value(&v)) {
		reason = v.why;
		goto out;
	}
	jv_ws(&v);
	if (v.p != v.end) {
		reason = "trailing data";
		goto out;
	}

	/*
	 * The input need not be NUL-terminated; cJSON's "require null
	 * terminated" check wants the NUL inside the length it is given.
	 */
	copy = xmalloc(len + 1);
	memcpy(copy, text, len);
	copy[len] = '\0';
	if ((tree = cJSON_ParseWithLengthOpts(copy, len + 1, NULL, 1)) ==
	    NULL) {
		reason = "syntax error";
		goto out;
	}
	if ((reason = tree_check(tree)) != NULL)
		goto out;
	if (v.nnums > 0 && keep_numbers(tree, &v, text, 0) != v.nnums)
		RS_PANIC("numbers of the text and of the tree differ");
	*out = tree;
	tree = NULL;
out:
	if (v.nums != v.few)
		free(v.nums);
	free(copy);
	cJSON_Delete(tree);
	if (reason != NULL) {
		if (why != NULL)
			*why = reason;
		return RS_ERR_INPUT;
	}
	return RS_OK;
}

const cJSON *
json_get(const cJSON *obj, const char *key)
{
	if (!cJSON_IsObject(obj) || key == NULL)
		return NULL;
	return cJSON_GetObjectItemCaseSensitive(obj, key);
}

const char *
json_get_string(const cJSON *obj, const char *key)
{
	const cJSON *item = json_get(obj, key);

	return cJSON_IsString(item) ? item->valuestring : NULL;
}

const cJSON *
json_get_object(const cJSON *obj, const char *key)
{
	const cJSON *item = json_get(obj, key);

	return cJSON_IsObject(item) ? item : NULL;
}

const cJSON *
json_get_array(const cJSON *obj, const char *key)
{
	const cJSON *item = json_get(obj, key);

	return cJSON_IsArray(item) ? item : NULL;
}

enum rs_status
json_get_bool(const cJSON *obj, const char *key, bool *out)
{
	const cJSON *item = json_get(obj, key);

	if (item == NULL)
		return RS_ERR_NOTFOUND;
	if (!cJSON_IsBool(item))
		return RS_ERR_INPUT;
	*out = cJSON_IsTrue(item);
	return RS_OK;
}

enum rs_status
json_get_int64(const cJSON *obj, const char *key, int64_t *out)
{
	const cJSON *item = json_get(obj, key);
	double d;
	int64_t i;

	if (item == NULL || cJSON_IsNull(item))
		return RS_ERR_NOTFOUND;
	if (cJSON_IsString(item)) {
		if (strnum_i64(item->valuestring, INT64_MIN, INT64_MAX,
		    &i) != NULL)
			return RS_ERR_INPUT;
		*out = i;
		return RS_OK;
	}
	if (!cJSON_IsNumber(item))
		return RS_ERR_INPUT;
	/* Only integers a double holds exactly, so nothing is rounded. */
	d = item->valuedouble;
	if (!(d >= -JSON_EXACT_INT && d <= JSON_EXACT_INT))
		return RS_ERR_INPUT;
	i = (int64_t)d;
	if ((double)i != d)
		return RS_ERR_INPUT;
	*out = i;
	return RS_OK;
}

/* Has item a number with its text kept (keep_numbers())?
 * NOLINTBEGIN(misc-no-recursion): bounded by the validated depth. */
static bool
has_kept_number(const cJSON *item)
{
	const cJSON *c;

	if (cJSON_IsNumber(item))
		return item->valuestring != NULL;
	for (c = item->child; c != NULL; c = c->next)
		if (has_kept_number(c))
			return true;
	return false;
}

/* Numbers with their text become raw nodes of that text. */
static void
numbers_to_raw(cJSON *item)
{
	cJSON *c;

	if (cJSON_IsNumber(item) && item->valuestring != NULL) {
		item->type = cJSON_Raw | (item->type & cJSON_StringIsConst);
		return;
	}
	for (c = item->child; c != NULL; c = c->next)
		numbers_to_raw(c);
}
/* NOLINTEND(misc-no-recursion) */

char *
json_print(const cJSON *item)
{
	cJSON *copy;
	char *s;

	if (item == NULL)
		RS_PANIC("json_print of NULL");
	if (!has_kept_number(item)) {
		if ((s = cJSON_PrintUnformatted(item)) == NULL)
			fatalx("%s: cJSON_PrintUnformatted failed", __func__);
		return s;
	}
	/* Each number as it was sent, never through a double. */
	if ((copy = cJSON_Duplicate(item, 1)) == NULL)
		fatalx("%s: cJSON_Duplicate failed", __func__);
	numbers_to_raw(copy);
	if ((s = cJSON_PrintUnformatted(copy)) == NULL)
		fatalx("%s: cJSON_PrintUnformatted failed", __func__);
	cJSON_Delete(copy);
	return s;
}
