/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The strict JSON pull reader (jsonpull.h). One pass, no allocation: a
 * state says what may come next, a bit per open container says whether it
 * is an object. Its acceptance is held to strata_json_parse()'s by
 * tests/unit/test-jsonpull.c and tests/fuzz/fuzz-jsonpull.c.
 */
#include <string.h>

#include "jsonpull.h"
#include "store-internal.h"

enum {
	ST_VALUE,	/* a value must come */
	ST_ARR_FIRST,	/* after '[': a value or ']' */
	ST_OBJ_FIRST,	/* after '{': a key or '}' */
	ST_KEY,		/* after ',' in an object: a key */
	ST_AFTER,	/* after a value: ',', a close, or the end */
	ST_DONE,
	ST_ERROR,
};

void strata_jp_init(struct strata_jp *jp, char *buf, size_t len)
{
	memset(jp, 0, sizeof(*jp));
	jp->start = jp->p = (unsigned char *)buf;
	jp->end = jp->start + len;
	jp->state = ST_VALUE;
}

static enum strata_jp_tok fail(struct strata_jp *jp, const char *why)
{
	jp->error = why;
	jp->state = ST_ERROR;
	return STRATA_JP_ERROR;
}

static void skip_ws(struct strata_jp *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\n' ||
				   *jp->p == '\t' || *jp->p == '\r'))
		jp->p++;
}

/* Write code point @cp as UTF-8 at @w; return the byte count. */
static size_t put_utf8(unsigned char *w, uint32_t cp)
{
	if (cp < 0x80) {
		w[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		w[0] = (unsigned char)(0xc0 | cp >> 6);
		w[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		w[0] = (unsigned char)(0xe0 | cp >> 12);
		w[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		w[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	w[0] = (unsigned char)(0xf0 | cp >> 18);
	w[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	w[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	w[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/* The string at p (on its opening quote), decoded in place: an escape is
 * never shorter than what it stands for, so the writer trails the reader. */
static int read_string(struct strata_jp *jp)
{
	unsigned char *r = jp->p + 1, *w = r, *end = jp->end;

	jp->str = (char *)w;
	for (;;) {
		unsigned char b;

		/* plain ASCII runs need no decoding */
		while (r < end && *r >= 0x20 && *r < 0x80 && *r != '"' &&
		       *r != '\\')
			*w++ = *r++;
		if (r >= end) {
			jp->p = r;
			jp->error = "unterminated string";
			return -1;
		}
		b = *r;
		if (b == '"') {
			jp->len = (size_t)(w - (unsigned char *)jp->str);
			*w = '\0';
			jp->p = r + 1;
			return 0;
		}
		if (b < 0x20) {
			jp->p = r;
			jp->error = "control character in string";
			return -1;
		}
		if (b == '\\') {
			uint32_t v, lo;
			static const char esc[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
			const char *e;

			if (end - r < 2)
				goto bad_escape;
			if (r[1] != 'u') {
				for (e = esc; *e && *e != (char)r[1]; e += 2)
					;
				if (!*e)
					goto bad_escape;
				*w++ = (unsigned char)e[1];
				r += 2;
				continue;
			}
			if (end - r < 6 || strata_hex4(r + 2, &v) < 0 ||
			    (v >= 0xdc00 && v <= 0xdfff))
				goto bad_escape;
			r += 6;
			if (v >= 0xd800 && v <= 0xdbff) {
				if (end - r < 6 || r[0] != '\\' ||
				    r[1] != 'u' || strata_hex4(r + 2, &lo) < 0 ||
				    lo < 0xdc00 || lo > 0xdfff)
					goto bad_escape;
				r += 6;
				v = 0x10000 + ((v - 0xd800) << 10) +
				    (lo - 0xdc00);
			}
			w += put_utf8(w, v);
			continue;
		}
		{
			int n = strata_utf8_seq(r, end);

			if (n < 0) {
				jp->p = r;
				jp->error = "invalid UTF-8";
				return -1;
			}
			memmove(w, r, (size_t)n);
			w += n;
			r += n;
		}
	}
bad_escape:
	jp->p = r;
	jp->error = "invalid escape in string";
	return -1;
}

static bool digit(const unsigned char *p, const unsigned char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

static enum strata_jp_tok read_number(struct strata_jp *jp)
{
	unsigned char *p = jp->p, *end = jp->end;
	bool neg = false, is_int = true;
	uint64_t v = 0, lim;

	jp->int_range = true;
	if (p < end && *p == '-') {
		neg = true;
		p++;
	}
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	if (p < end && *p == '0') {
		p++;
	} else if (digit(p, end)) {
		while (digit(p, end)) {
			unsigned d = (unsigned)(*p++ - '0');

			if (v > (lim - d) / 10)
				jp->int_range = false;
			else
				v = v * 10 + d;
		}
	} else {
		jp->p = p;
		return fail(jp, neg ? "malformed number" :
				"unexpected character");
	}
	if (p < end && *p == '.') {
		is_int = false;
		if (!digit(++p, end))
			goto bad;
		while (digit(p, end))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		is_int = false;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!digit(p, end))
			goto bad;
		while (digit(p, end))
			p++;
	}
	jp->p = p;
	jp->state = ST_AFTER;
	if (!is_int)
		return STRATA_JP_NUM;
	jp->i64 = !jp->int_range ? 0 : neg ? (int64_t)(0 - v) : (int64_t)v;
	return STRATA_JP_INT;
bad:
	jp->p = p;
	return fail(jp, "malformed number");
}

static enum strata_jp_tok literal(struct strata_jp *jp, const char *lit,
				  enum strata_jp_tok t)
{
	size_t n = strlen(lit);

	if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, lit, n))
		return fail(jp, "unexpected character");
	jp->p += n;
	jp->state = ST_AFTER;
	return t;
}

static enum strata_jp_tok open_container(struct strata_jp *jp, bool obj)
{
	if (jp->depth >= STRATA_JSON_MAX_DEPTH)
		return fail(jp, "nesting too deep");
	if (obj)
		jp->in_obj |= 1ull << jp->depth;
	else
		jp->in_obj &= ~(1ull << jp->depth);
	jp->depth++;
	jp->p++;
	jp->state = obj ? ST_OBJ_FIRST : ST_ARR_FIRST;
	return obj ? STRATA_JP_OBJ : STRATA_JP_ARR;
}

static enum strata_jp_tok close_container(struct strata_jp *jp)
{
	bool obj = jp->in_obj >> (jp->depth - 1) & 1;

	jp->depth--;
	jp->p++;
	jp->state = ST_AFTER;
	return obj ? STRATA_JP_OBJ_END : STRATA_JP_ARR_END;
}

static enum strata_jp_tok read_key(struct strata_jp *jp)
{
	if (jp->p >= jp->end || *jp->p != '"')
		return fail(jp, "expected a key");
	if (read_string(jp) < 0)
		return fail(jp, jp->error);
	skip_ws(jp);
	if (jp->p >= jp->end || *jp->p != ':')
		return fail(jp, "expected ':'");
	jp->p++;
	jp->state = ST_VALUE;
	return STRATA_JP_KEY;
}

static enum strata_jp_tok read_value(struct strata_jp *jp)
{
	if (jp->p >= jp->end)
		return fail(jp, "unexpected end");
	switch (*jp->p) {
	case '{':
		return open_container(jp, true);
	case '[':
		return open_container(jp, false);
	case '"':
		if (read_string(jp) < 0)
			return fail(jp, jp->error);
		jp->state = ST_AFTER;
		return STRATA_JP_STR;
	case 't':
		return literal(jp, "true", STRATA_JP_TRUE);
	case 'f':
		return literal(jp, "false", STRATA_JP_FALSE);
	case 'n':
		return literal(jp, "null", STRATA_JP_NULL);
	default:
		return read_number(jp);
	}
}

enum strata_jp_tok strata_jp_next(struct strata_jp *jp)
{
	bool obj;

	skip_ws(jp);
	switch (jp->state) {
	case ST_ARR_FIRST:
		if (jp->p < jp->end && *jp->p == ']')
			return close_container(jp);
		return read_value(jp);
	case ST_VALUE:
		return read_value(jp);
	case ST_OBJ_FIRST:
		if (jp->p < jp->end && *jp->p == '}')
			return close_container(jp);
		return read_key(jp);
	case ST_KEY:
		return read_key(jp);
	case ST_AFTER:
		if (jp->depth == 0) {
			if (jp->p != jp->end)
				return fail(jp, "trailing bytes after the "
					    "document");
			jp->state = ST_DONE;
			return STRATA_JP_END;
		}
		obj = jp->in_obj >> (jp->depth - 1) & 1;
		if (jp->p < jp->end && *jp->p == ',') {
			jp->p++;
			skip_ws(jp);
			return obj ? read_key(jp) : read_value(jp);
		}
		if (jp->p < jp->end && *jp->p == (obj ? '}' : ']'))
			return close_container(jp);
		return fail(jp, obj ? "expected ',' or '}'" :
				"expected ',' or ']'");
	case ST_DONE:
		return STRATA_JP_END;
	default:
		return STRATA_JP_ERROR;
	}
}

int strata_jp_skip(struct strata_jp *jp, enum strata_jp_tok t)
{
	int depth;

	if (t == STRATA_JP_ERROR)
		return -1;
	if (t != STRATA_JP_OBJ && t != STRATA_JP_ARR)
		return 0;
	depth = jp->depth - 1;
	while (jp->depth > depth) {
		t = strata_jp_next(jp);
		if (t == STRATA_JP_ERROR)
			return -1;
		if (t == STRATA_JP_END)
			return fail(jp, "unexpected end"), -1;
	}
	return 0;
}
