/* SPDX-License-Identifier: Apache-2.0 */
/* store/image/json.c: the strict JSON checker (OCI-RULES.md R10, R11) and the
 * typed getters. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"
#include "tap.h"

#define S(x) { x, sizeof(x) - 1 }

struct doc {
	const char *s;
	size_t len;
};

static int parse(const char *s, size_t len, struct strata_err *err)
{
	struct json_object *o = NULL;
	int r = strata_json_parse(s, len, "doc", &o, err);

	json_object_put(o);
	return r;
}

static void test_valid(void)
{
	static const struct doc good[] = {
		S("{}"),
		S("[]"),
		S("{\"a\":1}"),
		S(" \t\r\n{\"a\" : [1, 2.5, -0, 0, 1e10, -1.5E-3, 2e+2, true, false, null, \"x\"]} \n"),
		S("\"just a string\""),
		S("true"),
		S("false"),
		S("[null]"),
		S("{\"a\":{\"b\":{\"c\":[{\"d\":1},{\"d\":2}]}}}"),
		S("{\"a\":1,\"A\":1,\"a \":1,\"\":2}"),
		S("{\"a\":{\"x\":1},\"b\":{\"x\":1},\"c\":[{\"x\":1},{\"x\":1}]}"),
		S("[{\"a\":1},{\"a\":2}]"),
		S("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00\""),
		S("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xef\xbf\xbf\""),
		S("{\"k\\u00e9y\":\"\xe2\x82\xac\"}"),
		S("{\"nul\":\"a\\u0000b\"}"),
		S("{\"big\":99999999999999999999999}"),
		S("[1,[2,[3,[4]]],{\"x\":[]}]"),
		S("{\"manifests\":[],\"schemaVersion\":2}"),
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct strata_err err = { 0 };

		is_int(parse(good[i].s, good[i].len, &err), 0,
		       "valid: %s", good[i].s);
		if (err.code)
			diag("message: %s", err.msg);
	}
	/* a top-level "null" parses to a NULL object */
	{
		struct json_object *o = (void *)1;

		is_int(strata_json_parse("null", 4, "doc", &o, NULL), 0,
		       "valid: null");
		ok(o == NULL, "null parses to a NULL json_object");
	}
	/* RFC 8259: any value is a JSON text, numbers included */
	is_int(parse("42", 2, NULL), 0, "valid: top-level number 42");
	is_int(parse("-1.5e3", 6, NULL), 0, "valid: top-level number -1.5e3");
	is_int(parse(" 7 ", 3, NULL), 0, "valid: top-level number with spaces");

	/* the tree is what the document says */
	{
		static const char d[] = "{\"a\":[1,\"two\",{\"b\":null}],\"c\":\"\\u00e9\"}";
		struct json_object *o = NULL, *a = NULL;
		const char *c = NULL;

		is_int(strata_json_parse(d, sizeof(d) - 1, "doc", &o, NULL), 0,
		       "parse a small object");
		is_int(json_object_object_length(o), 2, "two members");
		is_int(strata_json_array(o, "a", true, &a, "doc", NULL), 0, "a is an array");
		is_int(json_object_array_length(a), 3, "a has 3 items");
		is_int(strata_json_string(o, "c", true, &c, "doc", NULL), 0, "c is a string");
		is_str(c, "\xc3\xa9", "\\u00e9 decoded to UTF-8");
		json_object_put(o);
	}
}

static void test_invalid(void)
{
	static const struct doc bad[] = {
		/* nothing, or only whitespace */
		S(""), S("   "), S("\n"),
		/* trailing garbage */
		S("{}x"), S("{} {}"), S("{}]"), S("[1]]"), S("{\"a\":1}}"),
		S("{}\0"), S("{} \0 "), S("[] // comment"), S("\"a\"\"b\""),
		S("truex"), S("nullnull"), S("1 2"),
		/* invalid UTF-8: overlong, surrogates, out of range,
		 * truncated, stray bytes; in values and in keys */
		S("\"\xc0\xaf\""), S("\"\xc1\xbf\""), S("\"\xe0\x80\xaf\""),
		S("\"\xe0\x9f\xbf\""), S("\"\xf0\x80\x80\xaf\""),
		S("\"\xf0\x8f\xbf\xbf\""), S("\"\xed\xa0\x80\""),
		S("\"\xed\xbf\xbf\""), S("\"\xed\xa0\xbd\xed\xb8\x80\""),
		S("\"\xf4\x90\x80\x80\""), S("\"\xf5\x80\x80\x80\""),
		S("\"\xff\""), S("\"\xfe\""), S("\"\x80\""), S("\"a\xbf\""),
		S("\"\xe2\x82\""), S("\"\xc3\""), S("\"\xf0\x9f\x98\""),
		S("\"\xe2\x82"), S("\"\xc3"), S("{\"k\xc3\":1}"),
		S("{\"a\":[\"ok\",\"\xe2\x28\xa1\"]}"),
		/* bad escapes */
		S("\"\\ud800\""), S("\"\\udc00\""), S("\"\\ud800\\u0041\""),
		S("\"\\ud800x\""), S("\"\\x41\""), S("\"\\u12\""),
		S("\"\\u12g4\""), S("\"\\'\""), S("\"\\a\""), S("\"\\"),
		/* control characters inside strings */
		S("\"a\tb\""), S("\"a\nb\""), S("\"\x01\""), S("{\"a\x1f\":1}"),
		S("\"a\0b\""),
		/* duplicate keys at any depth */
		S("{\"a\":1,\"a\":2}"), S("{\"a\":1,\"b\":2,\"a\":1}"),
		S("{\"a\":{},\"a\":{}}"), S("{\"a\":{\"p\":1},\"a\":5}"),
		S("{\"x\":{\"a\":1,\"a\":1}}"),
		S("[{\"k\":{\"a\":[{\"z\":1,\"z\":2}]}}]"),
		S("{\"a\":[1],\"b\":{\"c\":{\"d\":{\"e\":true,\"e\":false}}}}"),
		S("{\"a\":1,\"\\u0061\":2}"),
		S("[{},{\"q\":1},{\"r\":[{},{\"s\":0,\"s\":0}]}]"),
		/* NaN, Infinity */
		S("NaN"), S("[NaN]"), S("{\"a\":Infinity}"), S("[-Infinity]"),
		S("[nan]"), S("[inf]"), S("[-inf]"),
		/* single quotes */
		S("{'a':1}"), S("{\"a\":'b'}"), S("['x']"), S("'x'"),
		/* numbers */
		S("01"), S("[01]"), S("[+1]"), S("[.5]"), S("[1.]"), S("[1e]"),
		S("[1e+]"), S("[-]"), S("[0x10]"), S("[--1]"), S("[1.5.2]"),
		/* structure */
		S("{\"a\"}"), S("{\"a\":}"), S("{,}"), S("[1,]"),
		S("{\"a\":1,}"), S("[1 2]"), S("{1:2}"), S("{a:1}"), S("["),
		S("{"), S("{\"a\":1"), S("[[]"), S("]"), S("}"), S("tru"),
		S("True"), S("nul"), S("/* c */ {}"), S("{\"a\" 1}"),
		S("{\"a\":1 \"b\":2}"), S("\"unterminated"),
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct strata_err err = { 0 };
		struct json_object *o = (void *)1;
		int r = strata_json_parse(bad[i].s, bad[i].len, "doc", &o, &err);

		is_int(r, -EBADMSG, "invalid: %.*s", (int)bad[i].len, bad[i].s);
		if (r == 0)
			json_object_put(o);
		else
			ok(o == (void *)1 && err.code == -EBADMSG &&
			   !strncmp(err.msg, "doc: invalid JSON", 17),
			   "  out untouched, message \"%s\"", err.msg);
	}
}

static void test_messages(void)
{
	struct strata_err err = { 0 };

	is_int(parse("{}x", 3, &err), -EBADMSG, "trailing byte");
	is_str(err.msg, "doc: invalid JSON at byte 2: trailing bytes after the document",
	       "message gives the offset of the garbage");
	memset(&err, 0, sizeof(err));
	is_int(parse("{\"a\":1,\"a\":2}", 13, &err), -EBADMSG, "duplicate");
	ok(strstr(err.msg, "duplicate key") != NULL,
	   "message says duplicate key: %s", err.msg);
	memset(&err, 0, sizeof(err));
	is_int(parse("[\"\xc0\xaf\"]", 6, &err), -EBADMSG, "overlong");
	ok(strstr(err.msg, "UTF-8") != NULL, "message says UTF-8: %s", err.msg);
}

static char *nest(int depth, const char *open, const char *close,
		  const char *inner)
{
	size_t lo = strlen(open), lc = strlen(close), li = strlen(inner);
	char *s = malloc((size_t)depth * (lo + lc) + li + 1), *p = s;
	int i;

	if (!s)
		abort();
	for (i = 0; i < depth; i++, p += lo)
		memcpy(p, open, lo);
	memcpy(p, inner, li);
	p += li;
	for (i = 0; i < depth; i++, p += lc)
		memcpy(p, close, lc);
	*p = '\0';
	return s;
}

static void test_depth(void)
{
	static const struct {
		int depth;
		const char *open, *close, *inner;
		int want;
	} cases[] = {
		{ 31, "[", "]", "", 0 },
		{ 32, "[", "]", "", 0 },
		{ 32, "[", "]", "1", 0 },
		{ 33, "[", "]", "", -EBADMSG },
		{ 32, "{\"a\":", "}", "{}", -EBADMSG },	/* 33 objects */
		{ 31, "{\"a\":", "}", "{}", 0 },	/* 32 objects */
		{ 31, "[{\"a\":", "}]", "", -EBADMSG },
		{ 16, "[{\"a\":", "}]", "1", 0 },	/* 32 containers */
		{ 17, "[{\"a\":", "}]", "1", -EBADMSG },
		{ 100000, "[", "]", "", -EBADMSG },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cleanup_free char *s = nest(cases[i].depth, cases[i].open,
					    cases[i].close, cases[i].inner);

		is_int(parse(s, strlen(s), NULL), cases[i].want,
		       "%d x %s...%s%s", cases[i].depth, cases[i].open,
		       cases[i].inner, cases[i].close);
	}
}

static void test_size_limit(void)
{
	cleanup_free char *buf = malloc(STRATA_JSON_MAX + 2);
	struct strata_err err = { 0 };

	if (!buf)
		abort();
	memset(buf, ' ', STRATA_JSON_MAX + 2);
	memcpy(buf, "{}", 2);
	is_int(parse(buf, STRATA_JSON_MAX, NULL), 0,
	       "a document of exactly STRATA_JSON_MAX bytes");
	is_int(parse(buf, STRATA_JSON_MAX + 1, &err), -EFBIG,
	       "one byte more -> EFBIG");
	ok(strstr(err.msg, "doc:") == err.msg, "message names the document: %s",
	   err.msg);
}

static void test_getters(void)
{
	static const char d[] =
		"{\"s\":\"str\",\"n\":5,\"neg\":-1,"
		"\"max\":9223372036854775806,\"min\":-9223372036854775807,"
		"\"i64max\":9223372036854775807,\"i64min\":-9223372036854775808,"
		"\"huge\":99999999999999999999,\"nhuge\":-99999999999999999999,"
		"\"f\":1.5,\"fi\":1.0,\"e\":1e3,\"strnum\":\"5\",\"t\":true,"
		"\"null\":null,\"o\":{\"x\":1},\"a\":[\"x\",\"y\"],"
		"\"nul\":\"a\\u0000b\",\"bad\":[\"x\",1],\"empty\":[],"
		"\"nulv\":[\"ok\",\"a\\u0000b\"]}";
	struct json_object *o = NULL, *arr = NULL, *sub = NULL;
	struct strata_err err = { 0 };
	const char *s = "untouched";
	int64_t n = 77;
	char **v = NULL;

	if (strata_json_parse(d, sizeof(d) - 1, "config", &o, NULL) < 0) {
		ok(0, "getter document parses");
		return;
	}

	/* strings */
	is_int(strata_json_string(o, "s", true, &s, "config", NULL), 0, "string s");
	is_str(s, "str", "s = str");
	s = "untouched";
	is_int(strata_json_string(o, "missing", false, &s, "config", NULL),
	       -ENOENT, "optional missing string -> ENOENT");
	is_str(s, "untouched", "out untouched when absent");
	is_int(strata_json_string(o, "null", false, &s, "config", NULL),
	       -ENOENT, "null counts as absent");
	is_int(strata_json_string(o, "missing", true, &s, "config", &err),
	       -EBADMSG, "required missing string -> EBADMSG");
	is_str(err.msg, "config: missing field \"missing\"", "message names the field");
	memset(&err, 0, sizeof(err));
	is_int(strata_json_string(o, "null", true, &s, "config", NULL),
	       -EBADMSG, "required null -> EBADMSG");
	is_int(strata_json_string(o, "n", true, &s, "config", &err), -EBADMSG,
	       "number as string -> EBADMSG");
	is_str(err.msg, "config: field \"n\" is not a string", "wrong type message");
	memset(&err, 0, sizeof(err));
	is_int(strata_json_string(o, "nul", true, &s, "config", &err), -EBADMSG,
	       "string with \\u0000 -> EBADMSG");
	ok(strstr(err.msg, "NUL") != NULL, "message mentions NUL: %s", err.msg);
	is_str(s, "untouched", "out untouched on error");
	memset(&err, 0, sizeof(err));
	is_int(strata_json_string(o, "o", true, &s, "config", NULL), -EBADMSG,
	       "object as string -> EBADMSG");

	/* integers and their ranges */
	is_int(strata_json_int64(o, "n", true, 0, 10, &n, "config", NULL), 0, "n in [0,10]");
	is_int(n, 5, "n = 5");
	n = 77;
	is_int(strata_json_int64(o, "n", true, 5, 5, &n, "config", NULL), 0, "n in [5,5]");
	is_int(n, 5, "n = 5 at both bounds");
	n = 77;
	is_int(strata_json_int64(o, "n", true, 6, 10, &n, "config", &err), -EBADMSG,
	       "n below min -> EBADMSG");
	is_str(err.msg, "config: field \"n\" = 5 is out of range", "range message");
	memset(&err, 0, sizeof(err));
	is_int(strata_json_int64(o, "n", true, 0, 4, &n, "config", NULL), -EBADMSG,
	       "n above max -> EBADMSG");
	is_int(n, 77, "out untouched on range error");
	is_int(strata_json_int64(o, "neg", true, 0, INT64_MAX, &n, "config", NULL),
	       -EBADMSG, "negative size refused with min 0");
	is_int(strata_json_int64(o, "neg", true, -1, 0, &n, "config", NULL), 0,
	       "-1 accepted with min -1");
	is_int(n, -1, "neg = -1");
	is_int(strata_json_int64(o, "max", true, 0, INT64_MAX, &n, "config", NULL), 0,
	       "2^63-2 accepted");
	is_int(n, INT64_MAX - 1, "max = 2^63-2");
	is_int(strata_json_int64(o, "min", true, INT64_MIN, 0, &n, "config", NULL), 0,
	       "-(2^63-1) accepted");
	is_int(n, -INT64_MAX, "min = -(2^63-1)");
	is_int(strata_json_int64(o, "huge", true, 0, INT64_MAX, &n, "config", NULL),
	       -EBADMSG, "99999999999999999999 (saturated by json-c) refused");
	is_int(strata_json_int64(o, "nhuge", true, INT64_MIN, INT64_MAX, &n, "config", NULL),
	       -EBADMSG, "-99999999999999999999 refused");
	is_int(strata_json_int64(o, "f", true, 0, 10, &n, "config", NULL), -EBADMSG,
	       "1.5 is not an integer");
	is_int(strata_json_int64(o, "fi", true, 0, 10, &n, "config", NULL), -EBADMSG,
	       "1.0 is not an integer");
	is_int(strata_json_int64(o, "e", true, 0, 10000, &n, "config", NULL), -EBADMSG,
	       "1e3 is not an integer");
	is_int(strata_json_int64(o, "strnum", true, 0, 10, &n, "config", NULL), -EBADMSG,
	       "\"5\" is not an integer");
	is_int(strata_json_int64(o, "t", true, 0, 10, &n, "config", NULL), -EBADMSG,
	       "true is not an integer");
	n = 77;
	is_int(strata_json_int64(o, "missing", false, 0, 10, &n, "config", NULL), -ENOENT,
	       "optional missing integer -> ENOENT");
	is_int(strata_json_int64(o, "null", false, 0, 10, &n, "config", NULL), -ENOENT,
	       "optional null integer -> ENOENT");
	is_int(n, 77, "out untouched");
	is_int(strata_json_int64(o, "missing", true, 0, 10, &n, "config", NULL), -EBADMSG,
	       "required missing integer -> EBADMSG");

	/* objects and arrays */
	is_int(strata_json_object(o, "o", true, &sub, "config", NULL), 0, "object o");
	ok(sub && json_object_object_length(sub) == 1, "o has one member");
	is_int(strata_json_object(o, "a", true, &sub, "config", NULL), -EBADMSG,
	       "array as object -> EBADMSG");
	is_int(strata_json_object(o, "missing", false, &sub, "config", NULL), -ENOENT,
	       "optional missing object -> ENOENT");
	is_int(strata_json_array(o, "a", true, &arr, "config", NULL), 0, "array a");
	ok(arr && json_object_array_length(arr) == 2, "a has two items");
	is_int(strata_json_array(o, "o", true, &arr, "config", NULL), -EBADMSG,
	       "object as array -> EBADMSG");
	is_int(strata_json_array(o, "null", true, &arr, "config", NULL), -EBADMSG,
	       "required null array -> EBADMSG");
	/* getters on something that is not an object: everything absent */
	is_int(strata_json_string(arr, "x", false, &s, "config", NULL), -ENOENT,
	       "string getter on an array -> ENOENT");
	is_int(strata_json_int64(NULL, "x", true, 0, 1, &n, "config", NULL), -EBADMSG,
	       "required getter on NULL -> EBADMSG");

	/* string vectors */
	is_int(strata_json_strv(o, "a", &v, "config", NULL), 0, "strv a");
	ok(v && v[0] && v[1] && !v[2], "two strings, NULL-terminated");
	if (v && v[0] && v[1]) {
		is_str(v[0], "x", "a[0]");
		is_str(v[1], "y", "a[1]");
	}
	strata_strv_free(v);
	v = (void *)1;
	is_int(strata_json_strv(o, "missing", &v, "config", NULL), 0, "strv of a missing key");
	ok(v == NULL, "gives NULL");
	is_int(strata_json_strv(o, "null", &v, "config", NULL), 0, "strv of null");
	ok(v == NULL, "gives NULL");
	is_int(strata_json_strv(o, "empty", &v, "config", NULL), 0, "strv of []");
	ok(v && !v[0], "gives an empty vector");
	strata_strv_free(v);
	v = NULL;
	is_int(strata_json_strv(o, "bad", &v, "config", &err), -EBADMSG,
	       "strv with a number item -> EBADMSG");
	ok(v == NULL, "no vector on error");
	is_str(err.msg, "config: field \"bad\" is not an array of strings", "strv message");
	memset(&err, 0, sizeof(err));
	is_int(strata_json_strv(o, "s", &v, "config", NULL), -EBADMSG,
	       "strv of a string -> EBADMSG");
	v = NULL;
	is_int(strata_json_strv(o, "nulv", &v, "config", NULL), -EBADMSG,
	       "strv with \"a\\u0000b\" -> EBADMSG (no silent truncation)");
	if (v) {
		diag("strv gave \"%s\", \"%s\"", v[0] ? v[0] : "(null)",
		     v[0] && v[1] ? v[1] : "(null)");
		strata_strv_free(v);
	}
	json_object_put(o);
}

int main(void)
{
	test_valid();
	test_invalid();
	test_messages();
	test_depth();
	test_size_limit();
	test_getters();
	return done_testing();
}
