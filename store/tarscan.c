/* SPDX-License-Identifier: Apache-2.0 */
/* The tar type-flag watch: see tarscan.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tarscan.h"

enum { S_HEADER, S_DATA, S_DONE, S_OFF };

#define EXT_MAX (1u << 20)	/* extended headers kept up to this size */

/* Type flags of entries a layer may hold: regular ('0', NUL, and '7',
 * contiguous, read as regular), hard link, symlink, character and block
 * device, directory, fifo. Old GNU sparse files ('S') are refused as
 * umoci and moby refuse them; pax sparse files (type '0') are fine. */
static bool entry_type_ok(char f)
{
	return (f >= '0' && f <= '7') || f == '\0';
}

/* Extended headers: pax ('x', 'g'), GNU long name and long link. */
static bool ext_type(char f)
{
	return f == 'x' || f == 'g' || f == 'L' || f == 'K';
}

/* Types whose size field is not followed by data (as Go's archive/tar
 * reads them; libarchive agrees for every tar writer in use). */
static bool header_only(char f)
{
	return f == '1' || f == '2' || f == '3' || f == '4' || f == '5' ||
	       f == '6';
}

static bool parse_octal(const unsigned char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;
	bool digits = false;

	while (i < n && p[i] == ' ')
		i++;
	for (; i < n && p[i] >= '0' && p[i] <= '7'; i++) {
		if (v >> 61)
			return false;
		v = v * 8 + (uint64_t)(p[i] - '0');
		digits = true;
	}
	for (; i < n; i++)
		if (p[i] != ' ' && p[i] != '\0')
			return false;
	*out = v;
	return digits;
}

static bool parse_size(const unsigned char *p, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (!(p[0] & 0x80))
		return parse_octal(p, 12, out);
	if (p[0] != 0x80)		/* negative, or too big */
		return false;
	for (i = 1; i < 12; i++) {
		if (v >> 56)
			return false;
		v = (v << 8) | p[i];
	}
	*out = v;
	return true;
}

static bool checksum_ok(const unsigned char *h)
{
	uint64_t want;
	unsigned long u = 0;
	long s = 0;
	size_t i;

	if (!parse_octal(h + 148, 8, &want))
		return false;
	for (i = 0; i < 512; i++) {
		unsigned char c = i >= 148 && i < 156 ? ' ' : h[i];

		u += c;
		s += (signed char)c;
	}
	return want == u || (long)want == s;
}

static bool all_zero(const unsigned char *h)
{
	size_t i;

	for (i = 0; i < 512; i++)
		if (h[i])
			return false;
	return true;
}

/* The pax records "LEN key=value\n" of @t->ext: size and path. */
static void parse_pax(struct strata_tarscan *t)
{
	size_t pos = 0;

	while (pos < t->ext_len) {
		char *rec = t->ext + pos, *end, *key, *eq;
		unsigned long len = strtoul(rec, &end, 10);

		if (end == rec || *end != ' ' || len == 0 ||
		    len > t->ext_len - pos || rec[len - 1] != '\n')
			return;
		key = end + 1;
		eq = memchr(key, '=', (size_t)(rec + len - 1 - key));
		if (eq) {
			size_t vlen = (size_t)(rec + len - 1 - (eq + 1));

			if (eq - key == 4 && !memcmp(key, "size", 4)) {
				char num[32];

				if (vlen < sizeof(num)) {
					memcpy(num, eq + 1, vlen);
					num[vlen] = '\0';
					t->size = strtoull(num, NULL, 10);
					t->size_set = true;
				}
			} else if (eq - key == 4 && !memcmp(key, "path", 4)) {
				free(t->path);
				t->path = strndup(eq + 1, vlen);
			}
		}
		pos += len;
	}
}

/* A whole header block is in @t->hdr. */
static int header(struct strata_tarscan *t, char *msg, size_t msg_size)
{
	const unsigned char *h = t->hdr;
	char f = (char)h[156];
	uint64_t size;

	if (all_zero(h)) {
		t->state = S_DONE;	/* end of archive, as libarchive reads it */
		return 0;
	}
	if (!checksum_ok(h) || !parse_size(h + 124, &size)) {
		t->state = S_OFF;	/* lost: libarchive's reading stands */
		return 0;
	}
	if (ext_type(f)) {
		t->ext_len = 0;
		t->ext_type = 0;
		if ((f == 'x' || f == 'L') && size <= EXT_MAX) {
			t->ext_type = f;
			t->ext_want = size;
			if (t->ext_cap < size + 1) {
				char *n = realloc(t->ext, size + 1);

				if (!n) {
					t->state = S_OFF;
					return 0;
				}
				t->ext = n;
				t->ext_cap = size + 1;
			}
		} else if (f == 'x' || f == 'L') {
			t->state = S_OFF;	/* cannot follow its effect */
			return 0;
		}
		t->skip = (size + 511) & ~(uint64_t)511;
		t->state = S_DATA;
		return 0;
	}
	if (!entry_type_ok(f)) {
		char name[256 + 1 + 100 + 1];

		if (t->path)
			snprintf(name, sizeof(name), "%s", t->path);
		else if (h[345] && !memcmp(h + 257, "ustar", 5))
			snprintf(name, sizeof(name), "%.155s/%.100s",
				 (const char *)h + 345, (const char *)h);
		else
			snprintf(name, sizeof(name), "%.100s",
				 (const char *)h);
		if (f >= 0x21 && f < 0x7f)
			snprintf(msg, msg_size, "entry %s: tar entry type '%c' "
				 "is not one a layer may hold", name, f);
		else
			snprintf(msg, msg_size, "entry %s: tar entry type "
				 "0x%02x is not one a layer may hold", name,
				 (unsigned char)f);
		return -1;
	}
	if (t->size_set)
		size = t->size;
	if (header_only(f))
		size = 0;
	t->size_set = false;
	free(t->path);
	t->path = NULL;
	t->skip = (size + 511) & ~(uint64_t)511;
	t->state = S_DATA;
	return 0;
}

/* The data of an extended header is complete. */
static void ext_done(struct strata_tarscan *t)
{
	if (t->ext_type == 'x') {
		parse_pax(t);
	} else if (t->ext_type == 'L') {
		t->ext[t->ext_len] = '\0';
		free(t->path);
		t->path = strdup(t->ext);
	}
	t->ext_type = 0;
}

int strata_tarscan_feed(struct strata_tarscan *t, const void *buf, size_t n,
			char *msg, size_t msg_size)
{
	const unsigned char *p = buf;

	while (n > 0 && (t->state == S_HEADER || t->state == S_DATA)) {
		if (t->state == S_DATA) {
			size_t k = t->skip < n ? (size_t)t->skip : n;

			if (t->ext_type && t->ext_len < t->ext_want) {
				size_t want = (size_t)(t->ext_want - t->ext_len);
				size_t c = k < want ? k : want;

				memcpy(t->ext + t->ext_len, p, c);
				t->ext_len += c;
			}
			t->skip -= k;
			p += k;
			n -= k;
			if (t->skip == 0) {
				if (t->ext_type)
					ext_done(t);
				t->state = S_HEADER;
				t->have = 0;
			}
			continue;
		}
		{
			size_t k = 512 - t->have < n ? 512 - t->have : n;

			memcpy(t->hdr + t->have, p, k);
			t->have += k;
			p += k;
			n -= k;
			if (t->have == 512 && header(t, msg, msg_size) < 0)
				return -1;
		}
	}
	return 0;
}

bool strata_tarscan_followed(const struct strata_tarscan *t)
{
	return t->state == S_DONE;
}

void strata_tarscan_free(struct strata_tarscan *t)
{
	free(t->ext);
	free(t->path);
	memset(t, 0, sizeof(*t));
}
