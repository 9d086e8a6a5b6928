/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/image/jsonpull.c against json-c (through strata_json_parse(), the
 * project's strict reading): both readings of one input are written in
 * one canonical form, which must agree. Used by tests/unit/test-jsonpull.c
 * and tests/fuzz/fuzz-jsonpull.c.
 *
 * Form: { } [ ] around containers, K<len>:<bytes> for a key, S<len>:<bytes>
 * for a string, I<n> for an integer json-c holds exactly (I! for one it
 * saturates: out of int64, or at its ends), N for any other number, T F Z
 * for true false null. Keys are cut at a NUL, as json-c keeps them.
 */
#ifndef STRATA_JSONPULL_CMP_H
#define STRATA_JSONPULL_CMP_H

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonpull.h"
#include "store-internal.h"

struct cmp_out {
	char *s;
	size_t len, cap;
};

static void cmp_put(struct cmp_out *o, const void *b, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		o->cap = (o->len + n + 1) * 2;
		o->s = realloc(o->s, o->cap);
		if (!o->s)
			abort();
	}
	memcpy(o->s + o->len, b, n);
	o->len += n;
	o->s[o->len] = '\0';
}

static void cmp_str(struct cmp_out *o, char tag, const char *s, size_t n)
{
	char h[32];

	snprintf(h, sizeof(h), "%c%zu:", tag, n);
	cmp_put(o, h, strlen(h));
	cmp_put(o, s, n);
}

static void cmp_int(struct cmp_out *o, bool exact, int64_t v)
{
	char h[32];

	if (!exact || v == INT64_MAX || v == INT64_MIN)
		snprintf(h, sizeof(h), "I!");
	else
		snprintf(h, sizeof(h), "I%" PRId64, v);
	cmp_put(o, h, strlen(h));
}

static void cmp_tree(struct cmp_out *o, struct json_object *v)
{
	size_t i, n;

	switch (json_object_get_type(v)) {
	case json_type_null:
		cmp_put(o, "Z", 1);
		break;
	case json_type_boolean:
		cmp_put(o, json_object_get_boolean(v) ? "T" : "F", 1);
		break;
	case json_type_int:
		cmp_int(o, json_object_get_uint64(v) <= (uint64_t)INT64_MAX ||
			   json_object_get_int64(v) < 0,
			json_object_get_int64(v));
		break;
	case json_type_double:
		cmp_put(o, "N", 1);
		break;
	case json_type_string:
		cmp_str(o, 'S', json_object_get_string(v),
			(size_t)json_object_get_string_len(v));
		break;
	case json_type_array:
		cmp_put(o, "[", 1);
		n = json_object_array_length(v);
		for (i = 0; i < n; i++)
			cmp_tree(o, json_object_array_get_idx(v, i));
		cmp_put(o, "]", 1);
		break;
	case json_type_object:
		cmp_put(o, "{", 1);
		json_object_object_foreach(v, key, val) {
			cmp_str(o, 'K', key, strlen(key));
			cmp_tree(o, val);
		}
		cmp_put(o, "}", 1);
		break;
	}
}

/* The pull reading of @buf (copied) into @o; *dup set when an object
 * names a key twice. Return the last token (STRATA_JP_END: accepted). */
static enum strata_jp_tok cmp_pull(const char *buf, size_t len,
				   struct cmp_out *o, bool *dup)
{
	char *copy = malloc(len + 1);
	/* keys of the open objects, one list per depth */
	struct { const char **k; size_t n, cap; } keys[STRATA_JSON_MAX_DEPTH + 1];
	struct strata_jp jp;
	enum strata_jp_tok t;
	size_t i;

	if (!copy)
		abort();
	memcpy(copy, buf, len);
	memset(keys, 0, sizeof(keys));
	*dup = false;
	strata_jp_init(&jp, copy, len);
	while ((t = strata_jp_next(&jp)) > STRATA_JP_END) {
		switch (t) {
		case STRATA_JP_OBJ:
			keys[jp.depth].n = 0;
			cmp_put(o, "{", 1);
			break;
		case STRATA_JP_OBJ_END:
			cmp_put(o, "}", 1);
			break;
		case STRATA_JP_ARR:
			cmp_put(o, "[", 1);
			break;
		case STRATA_JP_ARR_END:
			cmp_put(o, "]", 1);
			break;
		case STRATA_JP_KEY:
			cmp_str(o, 'K', jp.str, strlen(jp.str));
			for (i = 0; i < keys[jp.depth].n; i++)
				if (!strcmp(keys[jp.depth].k[i], jp.str))
					*dup = true;
			if (keys[jp.depth].n == keys[jp.depth].cap) {
				keys[jp.depth].cap = keys[jp.depth].cap * 2 + 8;
				keys[jp.depth].k = realloc(keys[jp.depth].k,
					keys[jp.depth].cap * sizeof(char *));
				if (!keys[jp.depth].k)
					abort();
			}
			keys[jp.depth].k[keys[jp.depth].n++] = jp.str;
			break;
		case STRATA_JP_STR:
			cmp_str(o, 'S', jp.str, jp.len);
			break;
		case STRATA_JP_INT:
			cmp_int(o, jp.int_range, jp.i64);
			break;
		case STRATA_JP_NUM:
			cmp_put(o, "N", 1);
			break;
		case STRATA_JP_TRUE:
			cmp_put(o, "T", 1);
			break;
		case STRATA_JP_FALSE:
			cmp_put(o, "F", 1);
			break;
		default:
			cmp_put(o, "Z", 1);
			break;
		}
	}
	if (t == STRATA_JP_ERROR && !jp.error)
		abort();
	for (i = 0; i <= STRATA_JSON_MAX_DEPTH; i++)
		free(keys[i].k);
	free(copy);
	return t;
}

/*
 * Read @buf both ways. Return 0 when they agree (both refuse, or both
 * accept with the same values; a duplicate key is json-c's refusal only),
 * else -1 with a description in @why.
 */
static int cmp_json(const char *buf, size_t len, char *why, size_t why_len)
{
	struct cmp_out a = { 0 }, b = { 0 };
	struct json_object *obj = NULL;
	bool dup, pull_ok, jc_ok;
	int r, ret = 0;

	pull_ok = cmp_pull(buf, len, &a, &dup) == STRATA_JP_END;
	r = strata_json_parse(buf, len, "cmp", &obj, NULL);
	if (r == -ENOMEM)
		abort();
	jc_ok = r == 0;
	if (jc_ok)
		cmp_tree(&b, obj);
	json_object_put(obj);
	if (pull_ok && dup)
		pull_ok = false;
	/* strata_json_parse() takes a bare null only at byte 0 (json-c
	 * returns no object for it): not a document strata reads anyway */
	if (pull_ok && !jc_ok && !strcmp(a.s, "Z"))
		jc_ok = true, b.s = strdup("Z"), b.len = 1;
	if (pull_ok != jc_ok) {
		snprintf(why, why_len, "pull %s, json-c %s", pull_ok ? "accepts"
			 : "refuses", jc_ok ? "accepts" : "refuses");
		ret = -1;
	} else if (pull_ok && (a.len != b.len || memcmp(a.s, b.s, a.len)) &&
		   !memmem(b.s, b.len, "\xef\xbf\xbd", 3)) {
		/* json-c 0.16 reads some valid surrogate pairs as U+FFFD
		 * (\ud837\ude00, U+1DE00 to Python): no value to hold to */
		snprintf(why, why_len, "values differ: pull %.80s json-c %.80s",
			 a.s, b.s);
		ret = -1;
	}
	free(a.s);
	free(b.s);
	return ret;
}

#endif
