/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A pull reader of strict JSON (store/image/jsonpull.c) for documents too big to
 * build a json-c tree of, such as a lazy layer's table of contents: the
 * caller asks for one token at a time. It accepts exactly what
 * strata_json_parse() accepts (RFC 8259, valid UTF-8, no lone surrogates,
 * nesting at most STRATA_JSON_MAX_DEPTH, no trailing bytes) except that
 * duplicate keys are the caller's to refuse where they matter.
 *
 * Strings are decoded in place: the buffer is modified, and a string's
 * bytes (NUL-terminated, but \u0000 may put a NUL inside: compare len)
 * stay valid as long as the buffer.
 */
#ifndef STRATA_JSONPULL_H
#define STRATA_JSONPULL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum strata_jp_tok {
	STRATA_JP_ERROR = -1,	/* jp.error says what, at jp.p */
	STRATA_JP_END = 0,	/* the document is over */
	STRATA_JP_OBJ,		/* { */
	STRATA_JP_OBJ_END,	/* } */
	STRATA_JP_ARR,		/* [ */
	STRATA_JP_ARR_END,	/* ] */
	STRATA_JP_KEY,		/* a member name: str, len (':' consumed) */
	STRATA_JP_STR,		/* str, len */
	STRATA_JP_INT,		/* no fraction or exponent: i64 unless
				 * int_range is false (out of int64) */
	STRATA_JP_NUM,		/* a number with a fraction or exponent */
	STRATA_JP_TRUE,
	STRATA_JP_FALSE,
	STRATA_JP_NULL,
};

struct strata_jp {
	unsigned char *start, *p, *end;
	const char *error;
	char *str;
	size_t len;
	int64_t i64;
	bool int_range;
	int depth;
	int state;
	uint64_t in_obj;	/* bit d: the container at depth d + 1 is an
				 * object */
};

/* Read the @len bytes at @buf (modified as strings are decoded). */
void strata_jp_init(struct strata_jp *jp, char *buf, size_t len);
/* The next token; after STRATA_JP_ERROR or _END it stays there. */
enum strata_jp_tok strata_jp_next(struct strata_jp *jp);
/* Skip the value whose first token was @t (all of a container).
 * Return: 0 or -1 (jp.error set). */
int strata_jp_skip(struct strata_jp *jp, enum strata_jp_tok t);

#endif
