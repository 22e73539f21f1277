/*
 * check_json.c: the strict JSON parser and the case-sensitive getters.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "domain/json.h"
#include "util/xmalloc.h"

/*
 * Parse len bytes from a heap copy of exactly that size, so ASan sees any
 * read past the end.  Returns NULL on success (the tree in *out if out is
 * not NULL), else the reason.
 */
static const char *
parse_n(const char *text, size_t len, int depth, cJSON **out)
{
	char *copy = xmalloc(len);
	cJSON *tree = NULL;
	const char *why = "unset";
	enum rs_status st;

	memcpy(copy, text, len);
	st = json_parse_strict(copy, len, depth, &tree, &why);
	free(copy);
	if (st != RS_OK) {
		ck_assert_int_eq(st, RS_ERR_INPUT);
		ck_assert_ptr_null(tree);
		return why;
	}
	ck_assert_ptr_nonnull(tree);
	if (out != NULL)
		*out = tree;
	else
		cJSON_Delete(tree);
	return NULL;
}

static const char *
parse(const char *text)
{
	return parse_n(text, strlen(text), JSON_MAX_DEPTH, NULL);
}

/* Parse a string literal into *t. */
#define PARSE_T(lit, t) \
	parse_n((lit), sizeof(lit) - 1, JSON_MAX_DEPTH, (t))

#define OK(text)	ck_assert_msg(parse(text) == NULL, \
			    "refused %s: %s", (text), parse(text))
#define BAD(text, reason) do {						\
	const char *why_ = parse(text);					\
	ck_assert_msg(why_ != NULL, "accepted %s", (text));		\
	ck_assert_str_eq(why_, (reason));				\
} while (0)

START_TEST(test_valid)
{
	cJSON *t = NULL;

	OK("{}");
	OK("[]");
	OK("{\"a\":1}");
	OK("\"x\"");
	OK("0");
	OK("-0");
	OK("-0.0");
	OK("0.5");
	OK("1.5e+10");
	OK("1E-2");
	OK("true");
	OK("false");
	OK("null");
	OK("[1,\"a\",true,false,null,{},[],-2.5e3]");
	OK("{\"a\":{\"b\":[{\"c\":\"d\"}]}}");
	OK("1e-999");
	ck_assert_ptr_null(PARSE_T("{\"a\":[1,2],\"b\":\"c\"}", &t));
	ck_assert_str_eq(json_get_string(t, "b"), "c");
	ck_assert_int_eq(cJSON_GetArraySize(json_get_array(t, "a")), 2);
	cJSON_Delete(t);
}
END_TEST

START_TEST(test_whitespace)
{
	cJSON *t = NULL;
	char *s;

	OK(" \t\r\n{} \n");
	OK("[ 1 , 2 ]");
	/* Real Wix layer C: pretty-printed, with trailing spaces. */
	ck_assert_ptr_null(PARSE_T("{\n  \"id\" : \"ev-1\", \n"
	    "  \"n\" : [ 1 , 2 ] ,\n  \"o\" : { } \n}\n", &t));
	s = json_print(t);
	ck_assert_str_eq(s, "{\"id\":\"ev-1\",\"n\":[1,2],\"o\":{}}");
	free(s);
	cJSON_Delete(t);
	/* Only the four JSON white-space bytes. */
	BAD("\v{}", "syntax error");
	BAD("{}\f", "trailing data");
	BAD("[1,\x01" "2]", "syntax error");
}
END_TEST

START_TEST(test_empty)
{
	BAD("", "empty");
	BAD("   \n\t", "empty");
	ck_assert_str_eq(parse_n("x", 0, JSON_MAX_DEPTH, NULL), "empty");
}
END_TEST

START_TEST(test_nul_byte)
{
	static const char doc[] = "{\"a\":\"x\0y\"}";

	ck_assert_str_eq(parse_n(doc, sizeof(doc) - 1, 16, NULL), "nul byte");
	ck_assert_str_eq(parse_n("{}\0", 3, 16, NULL), "nul byte");
	ck_assert_str_eq(parse_n("\0", 1, 16, NULL), "nul byte");
}
END_TEST

START_TEST(test_not_nul_terminated)
{
	cJSON *t = NULL;

	/* Only len bytes count; what follows is not ours. */
	ck_assert_ptr_null(parse_n("{\"a\":1}XYZ", 7, 16, &t));
	ck_assert_ptr_nonnull(json_get(t, "a"));
	cJSON_Delete(t);
	ck_assert_ptr_null(parse_n("12345", 3, 16, &t));
	ck_assert_int_eq(t->valueint, 123);
	cJSON_Delete(t);
	ck_assert_str_eq(parse_n("\"abc\"", 4, 16, NULL), "syntax error");
	ck_assert_str_eq(parse_n("tru", 3, 16, NULL), "syntax error");
}
END_TEST

START_TEST(test_invalid_utf8)
{
	BAD("\"\xff\"", "invalid utf-8");
	BAD("\"\xfe\"", "invalid utf-8");
	BAD("\"\x80\"", "invalid utf-8");	/* lone continuation */
	BAD("\"\xbf\"", "invalid utf-8");
	BAD("\"\xc3\"", "invalid utf-8");	/* truncated */
	BAD("\"\xc3" "(\"", "invalid utf-8");	/* bad continuation */
	BAD("\"\xe2\x82\"", "invalid utf-8");
	BAD("\"\xf0\x9f\x98\"", "invalid utf-8");
	BAD("\"\xf5\x80\x80\x80\"", "invalid utf-8");
	BAD("\"\xf8\x88\x80\x80\x80\"", "invalid utf-8");
	BAD("{\"k\xff\":1}", "invalid utf-8");	/* in a key */
	BAD("[1]\xff", "invalid utf-8");		/* outside strings */
	ck_assert_str_eq(parse_n("\"\xc3", 2, 16, NULL), "invalid utf-8");
}
END_TEST

START_TEST(test_overlong)
{
	BAD("\"\xc0\xaf\"", "invalid utf-8");	/* '/' in 2 bytes */
	BAD("\"\xc1\xbf\"", "invalid utf-8");
	BAD("\"\xc0\x80\"", "invalid utf-8");	/* modified UTF-8 NUL */
	BAD("\"\xe0\x80\xaf\"", "invalid utf-8");
	BAD("\"\xe0\x9f\xbf\"", "invalid utf-8");
	BAD("\"\xf0\x80\x80\xaf\"", "invalid utf-8");
	BAD("\"\xf0\x8f\xbf\xbf\"", "invalid utf-8");
}
END_TEST

START_TEST(test_surrogates_and_range)
{
	BAD("\"\xed\xa0\x80\"", "invalid utf-8");	/* U+D800 */
	BAD("\"\xed\xbf\xbf\"", "invalid utf-8");	/* U+DFFF */
	BAD("\"\xed\xa0\xbd\xed\xb8\x80\"", "invalid utf-8"); /* CESU-8 */
	BAD("\"\xf4\x90\x80\x80\"", "invalid utf-8");	/* U+110000 */
}
END_TEST

START_TEST(test_valid_utf8)
{
	cJSON *t = NULL;
	static const char doc[] = "[\"\xc3\xa9\",\"\xe2\x82\xac\","
	    "\"\xf0\x9f\x98\x80\",\"\xed\x9f\xbf\",\"\xee\x80\x80\","
	    "\"\xef\xbf\xbf\",\"\xf4\x8f\xbf\xbf\",\"\xc2\x80\"]";

	ck_assert_ptr_null(parse_n(doc, sizeof(doc) - 1, 16, &t));
	ck_assert_int_eq(cJSON_GetArraySize(t), 8);
	ck_assert_str_eq(cJSON_GetArrayItem(t, 0)->valuestring, "\xc3\xa9");
	ck_assert_str_eq(cJSON_GetArrayItem(t, 6)->valuestring,
	    "\xf4\x8f\xbf\xbf");
	cJSON_Delete(t);
}
END_TEST

START_TEST(test_escapes)
{
	cJSON *t = NULL;

	ck_assert_ptr_null(PARSE_T("[\"\\u0041\\u00e9\\u20AC\","
	    "\"\\ud83d\\ude00\",\"\\uDBFF\\uDFFF\","
	    "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]", &t));
	ck_assert_str_eq(cJSON_GetArrayItem(t, 0)->valuestring,
	    "A\xc3\xa9\xe2\x82\xac");
	ck_assert_str_eq(cJSON_GetArrayItem(t, 1)->valuestring,
	    "\xf0\x9f\x98\x80");
	ck_assert_str_eq(cJSON_GetArrayItem(t, 2)->valuestring,
	    "\xf4\x8f\xbf\xbf");
	ck_assert_str_eq(cJSON_GetArrayItem(t, 3)->valuestring,
	    "\"\\/\b\f\n\r\t");
	cJSON_Delete(t);

	BAD("\"\\u0000\"", "\\u0000 escape");
	BAD("{\"a\\u0000b\":1}", "\\u0000 escape");
	BAD("\"\\ud83d\"", "unpaired surrogate");
	BAD("\"\\ud83dx\"", "unpaired surrogate");
	BAD("\"\\ud83d\\u0041\"", "unpaired surrogate");
	BAD("\"\\ud83d\\ud83d\"", "unpaired surrogate");
	BAD("\"\\ude00\"", "unpaired surrogate");
	BAD("\"\\ude00\\ud83d\"", "unpaired surrogate");
	BAD("\"\\DFFF\"", "invalid escape");
	BAD("\"\\x41\"", "invalid escape");
	BAD("\"\\u12\"", "invalid escape");
	BAD("\"\\u12g4\"", "invalid escape");
	BAD("\"\\ud83d\\u12\"", "invalid escape");
	BAD("\"\\'\"", "invalid escape");
	BAD("\"\\", "syntax error");
	BAD("\"a\tb\"", "control character in string");
	BAD("\"a\nb\"", "control character in string");
	BAD("\"\x1f\"", "control character in string");
	OK("\"\x7f\"");
}
END_TEST

/* n nested arrays around a 1. */
static char *
nested_arrays(size_t n)
{
	char *s = xmalloc(2 * n + 2);

	memset(s, '[', n);
	s[n] = '1';
	memset(s + n + 1, ']', n);
	s[2 * n + 1] = '\0';
	return s;
}

START_TEST(test_depth)
{
	char *s;
	char obj[512];
	size_t i, n = 0;

	s = nested_arrays(JSON_MAX_DEPTH);
	ck_assert_ptr_null(parse(s));
	free(s);
	s = nested_arrays(JSON_MAX_DEPTH + 1);
	ck_assert_str_eq(parse(s), "nesting too deep");
	free(s);
	s = nested_arrays(3);
	ck_assert_ptr_null(parse_n(s, strlen(s), 3, NULL));
	ck_assert_str_eq(parse_n(s, strlen(s), 2, NULL), "nesting too deep");
	ck_assert_str_eq(parse_n(s, strlen(s), 0, NULL), "nesting too deep");
	free(s);
	/* Scalars have no depth. */
	ck_assert_ptr_null(parse_n("1", 1, 0, NULL));

	/* Objects count as well: {"a":{"a":...}} 16 and 17 deep. */
	for (i = 0; i < JSON_MAX_DEPTH; i++) {
		memcpy(obj + n, "{\"a\":", 5);
		n += 5;
	}
	obj[n++] = '1';
	memset(obj + n, '}', JSON_MAX_DEPTH);
	obj[n + JSON_MAX_DEPTH] = '\0';
	ck_assert_ptr_null(parse(obj));
	ck_assert_str_eq(parse_n(obj, strlen(obj), JSON_MAX_DEPTH - 1, NULL),
	    "nesting too deep");
}
END_TEST

START_TEST(test_depth_hostile)
{
	char *s;

	/* Deep enough to smash a naive recursive parser's stack. */
	s = nested_arrays(200000);
	ck_assert_str_eq(parse(s), "nesting too deep");
	/* Even when the caller asks for no limit. */
	ck_assert_str_eq(parse_n(s, strlen(s), INT_MAX, NULL),
	    "nesting too deep");
	free(s);
	s = nested_arrays(1000);
	ck_assert_ptr_null(parse_n(s, strlen(s), INT_MAX, NULL));
	free(s);
}
END_TEST

START_TEST(test_trailing)
{
	BAD("{} x", "trailing data");
	BAD("{}{}", "trailing data");
	BAD("1 2", "trailing data");
	BAD("\"a\" ,", "trailing data");
	BAD("[1]]", "trailing data");
	BAD("0x10", "trailing data");
	BAD("nullx", "trailing data");
	BAD("{}//", "trailing data");
	OK("{}\n");
}
END_TEST

START_TEST(test_leading_zero)
{
	BAD("01", "leading zero");
	BAD("-01", "leading zero");
	BAD("00", "leading zero");
	BAD("[00]", "leading zero");
	BAD("{\"a\":012}", "leading zero");
	BAD("0.5e01x", "trailing data");
	OK("0.05");
	OK("1.0e05");
	OK("10");
}
END_TEST

START_TEST(test_numbers)
{
	char s[80];

	BAD("1e999", "number out of range");
	BAD("-1e999", "number out of range");
	BAD("[1E400]", "number out of range");
	BAD("{\"a\":{\"b\":[2e308]}}", "number out of range");
	BAD("1.", "syntax error");
	BAD(".5", "syntax error");
	BAD("+1", "syntax error");
	BAD("1e", "syntax error");
	BAD("1e+", "syntax error");
	BAD("-", "syntax error");
	BAD("-a", "syntax error");
	BAD("1.e5", "syntax error");
	BAD("NaN", "syntax error");
	BAD("Infinity", "syntax error");
	BAD("-Infinity", "syntax error");
	/* cJSON would cut a number past 63 bytes. */
	memset(s, '1', 63);
	s[63] = '\0';
	OK(s);
	memset(s, '1', 64);
	s[64] = '\0';
	BAD(s, "number too long");
}
END_TEST

START_TEST(test_duplicate_keys)
{
	char *s;
	size_t i, n;

	BAD("{\"a\":1,\"a\":2}", "duplicate key");
	BAD("{\"a\":1,\"b\":2,\"a\":1}", "duplicate key");
	BAD("{\"x\":{\"b\":1,\"b\":1}}", "duplicate key");
	BAD("[1,{\"a\":1,\"a\":null}]", "duplicate key");
	BAD("{\"a\":[{\"c\":{\"d\":1,\"d\":2}}]}", "duplicate key");
	/* The same key after unescaping. */
	BAD("{\"id\":1,\"\\u0069d\":2}", "duplicate key");
	BAD("{\"\":1,\"\":2}", "duplicate key");
	OK("{\"id\":1,\"Id\":2,\"ID\":3}");
	OK("{\"a\":{\"a\":{\"a\":1}}}");
	OK("[{\"a\":1},{\"a\":1}]");
	OK("{\"a\":1,\"ab\":2,\"b\":3}");

	/* Many keys: distinct is fine, one repeat at the end is not. */
	s = xmalloc(20 * 2001 + 16);
	n = 0;
	s[n++] = '{';
	for (i = 0; i < 2000; i++)
		n += (size_t)snprintf(s + n, 32, "%s\"k%zu\":%zu",
		    i == 0 ? "" : ",", i, i);
	s[n] = '}';
	s[n + 1] = '\0';
	ck_assert_ptr_null(parse(s));
	n += (size_t)snprintf(s + n, 32, ",\"k1234\":0}");
	ck_assert_str_eq(parse(s), "duplicate key");
	free(s);
}
END_TEST

START_TEST(test_grammar)
{
	BAD("{", "syntax error");
	BAD("[", "syntax error");
	BAD("}", "syntax error");
	BAD("[1,]", "syntax error");
	BAD("[,1]", "syntax error");
	BAD("[1 2]", "syntax error");
	BAD("{\"a\"}", "syntax error");
	BAD("{\"a\":}", "syntax error");
	BAD("{\"a\" 1}", "syntax error");
	BAD("{\"a\":1,}", "syntax error");
	BAD("{\"a\":1 \"b\":2}", "syntax error");
	BAD("{a:1}", "syntax error");
	BAD("{'a':1}", "syntax error");
	BAD("{1:1}", "syntax error");
	BAD("tru", "syntax error");
	BAD("True", "syntax error");
	BAD("nul", "syntax error");
	BAD("\"abc", "syntax error");
	BAD("'abc'", "syntax error");
	BAD("\xef\xbb\xbf{}", "syntax error");	/* BOM */
	BAD("/* c */ {}", "syntax error");
}
END_TEST

START_TEST(test_getters)
{
	cJSON *t = NULL;
	bool b = false;
	static const char doc[] = "{\"id\":\"x\",\"n\":5,\"o\":{\"k\":1},"
	    "\"a\":[1],\"t\":true,\"f\":false,\"z\":null}";

	ck_assert_ptr_null(parse_n(doc, sizeof(doc) - 1, 16, &t));
	ck_assert_str_eq(json_get_string(t, "id"), "x");
	/* Case-sensitive, unlike cJSON_GetObjectItem. */
	ck_assert_ptr_null(json_get_string(t, "Id"));
	ck_assert_ptr_null(json_get_string(t, "ID"));
	ck_assert_ptr_null(json_get(t, "Id"));
	ck_assert_ptr_null(json_get_object(t, "O"));
	/* Wrong types. */
	ck_assert_ptr_null(json_get_string(t, "n"));
	ck_assert_ptr_null(json_get_object(t, "a"));
	ck_assert_ptr_null(json_get_array(t, "o"));
	ck_assert_ptr_null(json_get_string(t, "z"));
	ck_assert_ptr_nonnull(json_get(t, "z"));
	ck_assert_ptr_nonnull(json_get_object(t, "o"));
	ck_assert_ptr_nonnull(json_get_array(t, "a"));
	ck_assert_ptr_null(json_get_string(t, "missing"));
	/* Not an object. */
	ck_assert_ptr_null(json_get(json_get_array(t, "a"), "id"));
	ck_assert_ptr_null(json_get(NULL, "id"));
	ck_assert_ptr_null(json_get_string(json_get(t, "id"), "id"));

	ck_assert_int_eq(json_get_bool(t, "t", &b), RS_OK);
	ck_assert(b);
	ck_assert_int_eq(json_get_bool(t, "f", &b), RS_OK);
	ck_assert(!b);
	b = true;
	ck_assert_int_eq(json_get_bool(t, "T", &b), RS_ERR_NOTFOUND);
	ck_assert_int_eq(json_get_bool(t, "n", &b), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_bool(t, "z", &b), RS_ERR_INPUT);
	ck_assert(b);
	cJSON_Delete(t);
}
END_TEST

START_TEST(test_get_int64)
{
	cJSON *t = NULL;
	int64_t v = 77;
	static const char doc[] = "{\"s\":\"42\",\"neg\":\"-7\",\"n\":42,"
	    "\"max\":\"9223372036854775807\",\"over\":\"9223372036854775808\","
	    "\"lz\":\"042\",\"sp\":\" 1\",\"plus\":\"+1\",\"txt\":\"abc\","
	    "\"frac\":1.5,\"e\":\"\",\"b\":true,\"z\":null,"
	    "\"p53\":9007199254740992,\"p53b\":9007199254740994,"
	    "\"nf\":-12,\"f0\":3.0,\"o\":{}}";

	ck_assert_ptr_null(parse_n(doc, sizeof(doc) - 1, 16, &t));
	ck_assert_int_eq(json_get_int64(t, "s", &v), RS_OK);
	ck_assert_int_eq(v, 42);
	ck_assert_int_eq(json_get_int64(t, "neg", &v), RS_OK);
	ck_assert_int_eq(v, -7);
	ck_assert_int_eq(json_get_int64(t, "n", &v), RS_OK);
	ck_assert_int_eq(v, 42);
	ck_assert_int_eq(json_get_int64(t, "max", &v), RS_OK);
	ck_assert_int_eq(v, INT64_MAX);
	ck_assert_int_eq(json_get_int64(t, "p53", &v), RS_OK);
	ck_assert_int_eq(v, 9007199254740992);
	ck_assert_int_eq(json_get_int64(t, "nf", &v), RS_OK);
	ck_assert_int_eq(v, -12);
	ck_assert_int_eq(json_get_int64(t, "f0", &v), RS_OK);
	ck_assert_int_eq(v, 3);
	v = 77;
	ck_assert_int_eq(json_get_int64(t, "over", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "lz", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "sp", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "plus", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "txt", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "frac", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "e", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "b", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "o", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "p53b", &v), RS_ERR_INPUT);
	ck_assert_int_eq(json_get_int64(t, "z", &v), RS_ERR_NOTFOUND);
	ck_assert_int_eq(json_get_int64(t, "S", &v), RS_ERR_NOTFOUND);
	ck_assert_int_eq(v, 77);
	cJSON_Delete(t);
}
END_TEST

START_TEST(test_print)
{
	cJSON *t = NULL;
	char *s;
	static const char doc[] = "{ \"b\" : [ 1, 2.5, \"x\\u00e9\" ],\n"
	    "  \"a\" : { \"c\" : null, \"d\" : false } }";

	ck_assert_ptr_null(parse_n(doc, sizeof(doc) - 1, 16, &t));
	s = json_print(t);
	ck_assert_str_eq(s,
	    "{\"b\":[1,2.5,\"x\xc3\xa9\"],\"a\":{\"c\":null,\"d\":false}}");
	free(s);
	s = json_print(json_get(t, "a"));
	ck_assert_str_eq(s, "{\"c\":null,\"d\":false}");
	free(s);
	cJSON_Delete(t);
}
END_TEST

/* Numbers print as they were sent, never through a double; their values
 * are still there for the getters. */
START_TEST(test_print_numbers_as_sent)
{
	cJSON *t = NULL, *d;
	char *s;
	int64_t i;
	static const char doc[] = "{\"x\": 12345678901234567890.123, "
	    "\"y\": 1e5, \"z\": [0.10, -0, 1E-7, 9007199254740993],"
	    " \"n\": {\"k\": 42}}";

	ck_assert_ptr_null(parse_n(doc, sizeof(doc) - 1, 16, &t));
	s = json_print(t);
	ck_assert_str_eq(s, "{\"x\":12345678901234567890.123,\"y\":1e5,"
	    "\"z\":[0.10,-0,1E-7,9007199254740993],\"n\":{\"k\":42}}");
	free(s);
	s = json_print(json_get(t, "n"));
	ck_assert_str_eq(s, "{\"k\":42}");
	free(s);
	ck_assert_int_eq(json_get_int64(json_get(t, "n"), "k", &i), RS_OK);
	ck_assert_int_eq(i, 42);
	ck_assert(cJSON_IsNumber(json_get(t, "y")));
	/* A copy keeps the text; the tree itself is not changed. */
	d = cJSON_Duplicate(t, 1);
	s = json_print(d);
	ck_assert_ptr_nonnull(strstr(s, "12345678901234567890.123"));
	free(s);
	cJSON_Delete(d);
	ck_assert(cJSON_IsNumber(json_get(t, "x")));
	cJSON_Delete(t);
	/* More numbers than the parser keeps without allocating. */
	{
		static const char many[] = "[1.0,2.0,3.0,4.0,5.0,6.0,7.0,"
		    "8.0,9.0,1e1,1.1e1,12.0,13.0,14.0,15.0,16.0,17.0,18.0,"
		    "19.0,2e1,[21.0,{\"v\":22.0}]]";

		ck_assert_ptr_null(parse_n(many, sizeof(many) - 1, 16, &t));
		s = json_print(t);
		ck_assert_str_eq(s, many);
		free(s);
		cJSON_Delete(t);
	}
	/* A tree built here has no text for its numbers: cJSON's. */
	t = cJSON_CreateObject();
	cJSON_AddNumberToObject(t, "a", 100000);
	s = json_print(t);
	ck_assert_str_eq(s, "{\"a\":100000}");
	free(s);
	cJSON_Delete(t);
}
END_TEST

START_TEST(test_why_optional)
{
	cJSON *t = NULL;

	/* why may be NULL; out is untouched on failure. */
	ck_assert_int_eq(json_parse_strict("[1,]", 4, 16, &t, NULL),
	    RS_ERR_INPUT);
	ck_assert_ptr_null(t);
	ck_assert_int_eq(json_parse_strict(NULL, 0, 16, &t, NULL),
	    RS_ERR_INPUT);
	ck_assert_ptr_null(t);
}
END_TEST

static Suite *
json_suite(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_valid);
	tcase_add_test(tc, test_whitespace);
	tcase_add_test(tc, test_empty);
	tcase_add_test(tc, test_nul_byte);
	tcase_add_test(tc, test_not_nul_terminated);
	tcase_add_test(tc, test_invalid_utf8);
	tcase_add_test(tc, test_overlong);
	tcase_add_test(tc, test_surrogates_and_range);
	tcase_add_test(tc, test_valid_utf8);
	tcase_add_test(tc, test_escapes);
	tcase_add_test(tc, test_depth);
	tcase_add_test(tc, test_depth_hostile);
	tcase_add_test(tc, test_trailing);
	tcase_add_test(tc, test_leading_zero);
	tcase_add_test(tc, test_numbers);
	tcase_add_test(tc, test_duplicate_keys);
	tcase_add_test(tc, test_grammar);
	tcase_add_test(tc, test_getters);
	tcase_add_test(tc, test_get_int64);
	tcase_add_test(tc, test_print);
	tcase_add_test(tc, test_print_numbers_as_sent);
	tcase_add_test(tc, test_why_optional);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(json_suite());
	int failed;

	xmalloc_init_json();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
