/* SPDX-License-Identifier: Apache-2.0 */
/* store/image/jsonpull.c: the streaming reader of tables of contents accepts
 * and refuses what json-c read through strata_json_parse() does, with the
 * same values (jsonpull-cmp.h), for valid documents and for the hostile
 * forms of OCI-RULES.md R11: trailing bytes, bad UTF-8, lone surrogates,
 * huge numbers, NUL escapes, deep nesting, NaN and single quotes. */
#include "jsonpull-cmp.h"
#include "tap.h"

static void check(const char *doc, size_t len, bool accept)
{
	char why[256] = "";
	struct cmp_out o = { 0 };
	bool dup;
	bool ok_pull = cmp_pull(doc, len, &o, &dup) == STRATA_JP_END && !dup;

	free(o.s);
	ok(cmp_json(doc, len, why, sizeof(why)) == 0, "same reading: %.60s %s",
	   doc, why);
	is_int(ok_pull, accept, "pull %s %.60s", accept ? "accepts" :
	       "refuses", doc);
}

#define CASE(s, acc) check(s, sizeof(s) - 1, acc)

static void deep(int n, bool accept)
{
	char buf[256];
	int i;

	for (i = 0; i < n; i++)
		buf[i] = '[';
	for (i = 0; i < n; i++)
		buf[n + i] = ']';
	check(buf, (size_t)(2 * n), accept);
}

/* Where json-c 0.16 misreads (U+FFFD), the value Python's json reads */
static void python_value(void)
{
	char doc[] = "\"\\ud837\\ude00\"";
	struct strata_jp jp;

	strata_jp_init(&jp, doc, strlen(doc));
	ok(strata_jp_next(&jp) == STRATA_JP_STR && jp.len == 4 &&
	   !memcmp(jp.str, "\xf0\x9d\xb8\x80", 4),
	   "\\ud837\\ude00 is U+1DE00, as Python's json reads it");
}

int main(void)
{
	python_value();
	CASE("{\"version\":1,\"entries\":[{\"type\":\"reg\",\"name\":\"a\"}]}",
	     true);
	CASE(" [1, -2, 0, -0, 1.5, 1e3, 2E-2, true, false, null, \"\"] ", true);
	CASE("null", true);
	CASE("\"x\"", true);
	CASE("12", true);
	CASE("{}", true);
	CASE("[[],{},[{}]]", true);
	CASE("{\"a\":{\"a\":{\"a\":1}}}", true);
	CASE("9223372036854775806", true);
	CASE("9223372036854775807", true);
	CASE("-9223372036854775808", true);
	CASE("-9223372036854775807", true);
	CASE("99999999999999999999", true);
	CASE("-99999999999999999999", true);
	CASE("18446744073709551615", true);
	CASE("18446744073709551616", true);
	CASE("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]", true);
	CASE("[\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\"]", true);
	CASE("[\"a\\u0000b\"]", true);
	CASE("{\"k\\u0000x\":1}", true);
	CASE("[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]", true);
	CASE("{\"a\":1,\"a\":2}", false);	/* duplicate */
	CASE("{\"a\":1,\"b\":{\"a\":2}}", true);
	CASE("{\"a\":1}x", false);
	CASE("{\"a\":1} {}", false);
	CASE("", false);
	CASE("   ", false);
	CASE("{", false);
	CASE("{\"a\"}", false);
	CASE("{\"a\":}", false);
	CASE("{\"a\":1,}", false);
	CASE("[1,]", false);
	CASE("[,1]", false);
	CASE("{'a':1}", false);
	CASE("[NaN]", false);
	CASE("[Infinity]", false);
	CASE("[+1]", false);
	CASE("[01]", false);
	CASE("[1.]", false);
	CASE("[.5]", false);
	CASE("[1e]", false);
	CASE("[-]", false);
	CASE("[tru]", false);
	CASE("[nul]", false);
	CASE("[truex]", false);
	CASE("[\"\\ud800\"]", false);		/* lone high surrogate */
	CASE("[\"\\udc00\"]", false);		/* lone low surrogate */
	CASE("[\"\\ud800\\u0041\"]", false);
	CASE("[\"\\x41\"]", false);
	CASE("[\"\\u12\"]", false);
	CASE("[\"a\tb\"]", false);		/* raw control character */
	CASE("[\"\xc0\xaf\"]", false);		/* overlong */
	CASE("[\"\xed\xa0\x80\"]", false);	/* surrogate in UTF-8 */
	CASE("[\"\xf5\x80\x80\x80\"]", false);
	CASE("[\"\xe2\x82\"]", false);		/* truncated */
	CASE("[\"\xff\"]", false);
	CASE("[\"abc", false);
	check("[\"a\0b\"]", 6, false);		/* raw NUL */
	check("[1]\0", 4, false);
	deep(32, true);
	deep(33, false);
	return done_testing();
}
