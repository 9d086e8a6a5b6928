/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict JSON. json-c 0.16 accepts trailing garbage, invalid UTF-8, NaN,
 * single quotes and duplicate keys (keeping the last) -- see OCI-RULES.md
 * R11. So every document first passes a small RFC 8259 checker that also
 * records each object's member count in document order; after json-c has
 * built the tree, a pre-order walk compares counts, and a smaller count in
 * the tree means json-c merged a duplicate key.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store-internal.h"

#define JSON_MAX_DEPTH STRATA_JSON_MAX_DEPTH

struct checker {
	const unsigned char *p, *end;
	uint32_t *counts;	/* member count per object, pre-order */
	size_t n_counts, cap;
	const char *error;
};

static void skip_ws(struct checker *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' ||
				 *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

int strata_utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned char b = p[0];
	int n, i;
	uint32_t cp;

	if (b < 0x80)
		return 1;
	if (b >= 0xc2 && b <= 0xdf) {
		n = 2;
		cp = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		n = 3;
		cp = b & 0x0f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		n = 4;
		cp = b & 0x07;
	} else {
		return -1;
	}
	if (end - p < n)
		return -1;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	return n;
}

bool strata_utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *end = p + strlen(s);

	while (p < end) {
		int n = strata_utf8_seq(p, end);

		if (n < 0)
			return false;
		p += n;
	}
	return true;
}

int strata_hex4(const unsigned char *p, uint32_t *v)
{
	int i;

	*v = 0;
	for (i = 0; i < 4; i++) {
		unsigned char h = p[i];

		*v <<= 4;
		if (h >= '0' && h <= '9')
			*v |= h - '0';
		else if (h >= 'a' && h <= 'f')
			*v |= h - 'a' + 10;
		else if (h >= 'A' && h <= 'F')
			*v |= h - 'A' + 10;
		else
			return -1;
	}
	return 0;
}

static int check_string(struct checker *c)
{
	c->p++;	/* opening quote */
	while (c->p < c->end) {
		unsigned char b = *c->p;

		if (b == '"') {
			c->p++;
			return 0;
		}
		if (b < 0x20) {
			c->error = "control character in string";
			return -1;
		}
		if (b == '\\') {
			uint32_t v, lo;

			if (c->end - c->p < 2)
				break;
			switch (c->p[1]) {
			case '"': case '\\': case '/': case 'b': case 'f':
			case 'n': case 'r': case 't':
				c->p += 2;
				continue;
			case 'u':
				if (c->end - c->p < 6 ||
				    strata_hex4(c->p + 2, &v) < 0)
					goto bad_escape;
				c->p += 6;
				if (v >= 0xdc00 && v <= 0xdfff)
					goto bad_escape;
				if (v >= 0xd800 && v <= 0xdbff) {
					if (c->end - c->p < 6 || c->p[0] != '\\' ||
					    c->p[1] != 'u' ||
					    strata_hex4(c->p + 2, &lo) < 0 ||
					    lo < 0xdc00 || lo > 0xdfff)
						goto bad_escape;
					c->p += 6;
				}
				continue;
			default:
				goto bad_escape;
			}
		}
		{
			int n = strata_utf8_seq(c->p, c->end);

			if (n < 0) {
				c->error = "invalid UTF-8";
				return -1;
			}
			c->p += n;
		}
	}
	c->error = "unterminated string";
	return -1;
bad_escape:
	c->error = "invalid escape in string";
	return -1;
}

static bool is_digit(unsigned char b)
{
	return b >= '0' && b <= '9';
}

static int check_number(struct checker *c)
{
	const unsigned char *s = c->p;

	if (c->p < c->end && *c->p == '-')
		c->p++;
	if (c->p < c->end && *c->p == '0') {
		c->p++;
	} else if (c->p < c->end && is_digit(*c->p)) {
		while (c->p < c->end && is_digit(*c->p))
			c->p++;
	} else {
		goto bad;
	}
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (c->p >= c->end || !is_digit(*c->p))
			goto bad;
		while (c->p < c->end && is_digit(*c->p))
			c->p++;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (c->p >= c->end || !is_digit(*c->p))
			goto bad;
		while (c->p < c->end && is_digit(*c->p))
			c->p++;
	}
	return c->p > s ? 0 : -1;
bad:
	c->error = "malformed number";
	return -1;
}

static int check_literal(struct checker *c, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n)) {
		c->error = "unexpected character";
		return -1;
	}
	c->p += n;
	return 0;
}

static int check_value(struct checker *c, int depth);

static int check_container(struct checker *c, int depth, bool object)
{
	size_t slot = c->n_counts;
	uint32_t members = 0;
	char close = object ? '}' : ']';

	if (depth > JSON_MAX_DEPTH) {
		c->error = "nesting too deep";
		return -1;
	}
	if (object) {
		if (c->n_counts == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 64;
			uint32_t *n = realloc(c->counts, cap * sizeof(*n));

			if (!n) {
				c->error = "out of memory";
				return -1;
			}
			c->counts = n;
			c->cap = cap;
		}
		c->n_counts++;
	}
	c->p++;
	skip_ws(c);
	if (c->p < c->end && *c->p == close) {
		c->p++;
		goto done;
	}
	for (;;) {
		skip_ws(c);
		if (object) {
			if (c->p >= c->end || *c->p != '"') {
				c->error = "expected a key";
				return -1;
			}
			if (check_string(c) < 0)
				return -1;
			skip_ws(c);
			if (c->p >= c->end || *c->p != ':') {
				c->error = "expected ':'";
				return -1;
			}
			c->p++;
		}
		if (check_value(c, depth + 1) < 0)
			return -1;
		members++;
		skip_ws(c);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		if (c->p < c->end && *c->p == close) {
			c->p++;
			break;
		}
		c->error = object ? "expected ',' or '}'" : "expected ',' or ']'";
		return -1;
	}
done:
	if (object)
		c->counts[slot] = members;
	return 0;
}

static int check_value(struct checker *c, int depth)
{
	skip_ws(c);
	if (c->p >= c->end) {
		c->error = "unexpected end";
		return -1;
	}
	switch (*c->p) {
	case '{':
		return check_container(c, depth, true);
	case '[':
		return check_container(c, depth, false);
	case '"':
		return check_string(c);
	case 't':
		return check_literal(c, "true");
	case 'f':
		return check_literal(c, "false");
	case 'n':
		return check_literal(c, "null");
	default:
		return check_number(c);
	}
}

/* Pre-order walk comparing object sizes with the checker's counts. */
static int compare_counts(struct json_object *o, const uint32_t *counts,
			  size_t n, size_t *pos)
{
	size_t i, len;

	if (!o)
		return 0;
	if (json_object_is_type(o, json_type_object)) {
		if (*pos >= n ||
		    (size_t)json_object_object_length(o) != counts[*pos])
			return -1;
		(*pos)++;
		json_object_object_foreach(o, key, val) {
			(void)key;
			if (compare_counts(val, counts, n, pos) < 0)
				return -1;
		}
	} else if (json_object_is_type(o, json_type_array)) {
		len = json_object_array_length(o);
		for (i = 0; i < len; i++)
			if (compare_counts(json_object_array_get_idx(o, i),
					   counts, n, pos) < 0)
				return -1;
	}
	return 0;
}

int strata_json_parse(const char *buf, size_t len, const char *what,
		      struct json_object **out, struct strata_err *err)
{
	return strata_json_parse_max(buf, len, STRATA_JSON_MAX, what, out,
				     err);
}

int strata_json_parse_max(const char *buf, size_t len, size_t max,
			  const char *what, struct json_object **out,
			  struct strata_err *err)
{
	struct checker c = {
		.p = (const unsigned char *)buf,
		.end = (const unsigned char *)buf + len,
	};
	struct json_tokener *tok;
	struct json_object *obj;
	size_t pos = 0;
	int r;

	if (len > max)
		return strata_err_set(err, -EFBIG,
				      "%s: %zu bytes, more than the %zu allowed",
				      what, len, max);
	if (check_value(&c, 1) == 0) {
		skip_ws(&c);
		if (c.p != c.end)
			c.error = "trailing bytes after the document";
	}
	if (c.error) {
		r = strata_err_set(err, -EBADMSG,
				   "%s: invalid JSON at byte %zu: %s", what,
				   (size_t)(c.p - (const unsigned char *)buf),
				   c.error);
		free(c.counts);
		return r;
	}
	tok = json_tokener_new_ex(JSON_MAX_DEPTH + 1);
	if (!tok) {
		free(c.counts);
		return -ENOMEM;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
				    JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, buf, (int)len);
	/* a bare number or literal at the very end might still go on: tell
	 * json-c the input is over */
	if (!obj && json_tokener_get_error(tok) == json_tokener_continue)
		obj = json_tokener_parse_ex(tok, "", 1);
	json_tokener_free(tok);
	if (!obj && !(len >= 4 && c.n_counts == 0 && !memcmp(buf, "null", 4))) {
		free(c.counts);
		return strata_err_set(err, -EBADMSG, "%s: invalid JSON", what);
	}
	if (compare_counts(obj, c.counts, c.n_counts, &pos) < 0 ||
	    pos != c.n_counts) {
		free(c.counts);
		json_object_put(obj);
		return strata_err_set(err, -EBADMSG,
				      "%s: invalid JSON: duplicate key", what);
	}
	free(c.counts);
	*out = obj;
	return 0;
}

static struct json_object *get(struct json_object *obj, const char *key)
{
	struct json_object *v = NULL;

	if (!obj || !json_object_is_type(obj, json_type_object))
		return NULL;
	if (!json_object_object_get_ex(obj, key, &v))
		return NULL;
	return v;	/* JSON null is a NULL object in json-c */
}

static int missing(bool required, const char *key, const char *what,
		   struct strata_err *err)
{
	if (!required)
		return -ENOENT;
	return strata_err_set(err, -EBADMSG, "%s: missing field \"%s\"",
			      what, key);
}

static int wrong_type(const char *key, const char *want, const char *what,
		      struct strata_err *err)
{
	return strata_err_set(err, -EBADMSG, "%s: field \"%s\" is not %s",
			      what, key, want);
}

int strata_json_string(struct json_object *obj, const char *key,
		       bool required, const char **out, const char *what,
		       struct strata_err *err)
{
	struct json_object *v = get(obj, key);
	const char *s;

	if (!v)
		return missing(required, key, what, err);
	if (!json_object_is_type(v, json_type_string))
		return wrong_type(key, "a string", what, err);
	s = json_object_get_string(v);
	if (strlen(s) != (size_t)json_object_get_string_len(v))
		return strata_err_set(err, -EBADMSG,
				      "%s: field \"%s\" holds a NUL byte",
				      what, key);
	*out = s;
	return 0;
}

int strata_json_int64(struct json_object *obj, const char *key, bool required,
		      int64_t min, int64_t max, int64_t *out, const char *what,
		      struct strata_err *err)
{
	struct json_object *v = get(obj, key);
	int64_t n;

	if (!v)
		return missing(required, key, what, err);
	if (!json_object_is_type(v, json_type_int))
		return wrong_type(key, "an integer", what, err);
	/* json-c saturates out-of-range integers; reject the saturated ends. */
	errno = 0;
	n = json_object_get_int64(v);
	if (n == INT64_MAX || n == INT64_MIN ||
	    json_object_get_uint64(v) > (uint64_t)INT64_MAX)
		return strata_err_set(err, -EBADMSG,
				      "%s: field \"%s\" is out of range", what,
				      key);
	if (n < min || n > max)
		return strata_err_set(err, -EBADMSG,
				      "%s: field \"%s\" = %lld is out of range",
				      what, key, (long long)n);
	*out = n;
	return 0;
}

int strata_json_object(struct json_object *obj, const char *key,
		       bool required, struct json_object **out,
		       const char *what, struct strata_err *err)
{
	struct json_object *v = get(obj, key);

	if (!v)
		return missing(required, key, what, err);
	if (!json_object_is_type(v, json_type_object))
		return wrong_type(key, "an object", what, err);
	*out = v;
	return 0;
}

int strata_json_array(struct json_object *obj, const char *key,
		      bool required, struct json_object **out,
		      const char *what, struct strata_err *err)
{
	struct json_object *v = get(obj, key);

	if (!v)
		return missing(required, key, what, err);
	if (!json_object_is_type(v, json_type_array))
		return wrong_type(key, "an array", what, err);
	*out = v;
	return 0;
}

void strata_strv_free(char **v)
{
	char **p;

	if (!v)
		return;
	for (p = v; *p; p++)
		free(*p);
	free(v);
}

int strata_json_strv(struct json_object *obj, const char *key, char ***out,
		     const char *what, struct strata_err *err)
{
	struct json_object *arr;
	size_t n, i;
	char **v;
	int r;

	*out = NULL;
	r = strata_json_array(obj, key, false, &arr, what, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	n = json_object_array_length(arr);
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct json_object *s = json_object_array_get_idx(arr, i);

		if (!json_object_is_type(s, json_type_string)) {
			strata_strv_free(v);
			return wrong_type(key, "an array of strings", what,
					  err);
		}
		if (strlen(json_object_get_string(s)) !=
		    (size_t)json_object_get_string_len(s)) {
			strata_strv_free(v);
			return strata_err_set(err, -EBADMSG, "%s: field \"%s\" "
					      "holds a string with a NUL "
					      "character", what, key);
		}
		v[i] = strdup(json_object_get_string(s));
		if (!v[i]) {
			strata_strv_free(v);
			return -ENOMEM;
		}
	}
	*out = v;
	return 0;
}

int strata_rfc3339_parse(const char *s, int64_t *sec, uint32_t *nsec)
{
	struct tm tm;
	const char *p;
	long off = 0;
	uint32_t ns = 0, scale = 100000000;

	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -EINVAL;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
			ns += (uint32_t)(*p - '0') * scale;
	if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 +
		      ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
		if (*p == '-')
			off = -off;
	} else if (strcmp(p, "Z")) {
		return -EINVAL;
	}
	*sec = (int64_t)timegm(&tm) - off;
	*nsec = ns;
	return 0;
}
