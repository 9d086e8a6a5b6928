/* SPDX-License-Identifier: Apache-2.0 */
/* Go's reading of a layer tar: see tarscan.h. Each rule names the Go
 * function (archive/tar, Go 1.19) whose behaviour it follows. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cleanup.h"
#include "base/error.h"
#include "tarscan.h"

enum { S_HEADER, S_DATA, S_ZERO, S_DONE, S_FAILED };

#define SPECIAL_MAX (1u << 20)	/* Go's maxSpecialFileSize */

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

/* Go's isHeaderOnlyType: the size field is not followed by data. */
static bool header_only(char f)
{
	return f == '1' || f == '2' || f == '3' || f == '4' || f == '5' ||
	       f == '6';
}

static int refuse(struct strata_tarscan *t, const char *name, size_t nlen,
		  const char *fmt, ...)
{
	char p[200], why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (!name || !nlen || !name[0])
		snprintf(t->err, sizeof(t->err), "entry with no name (tar "
			 "header at byte %llu): %s",
			 (unsigned long long)t->hdr_offset, why);
	else {
		strata_printable(name, nlen, p, sizeof(p));
		snprintf(t->err, sizeof(t->err), "entry %s: %s", p, why);
	}
	t->state = S_FAILED;
	return -1;
}

/* Refuse the header block in @t->hdr. Its name field is not worth
 * reading when the block is garbage (a bad checksum): then it is named by
 * the entry it follows. */
static int refuse_hdr(struct strata_tarscan *t, bool named, const char *fmt,
		      ...)
{
	char why[200], p[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (named && t->long_name)
		return refuse(t, t->long_name, strlen(t->long_name), "%s", why);
	if (named && t->hdr[0])
		return refuse(t, (const char *)t->hdr, 100, "%s", why);
	if (t->last[0]) {
		strata_printable(t->last, sizeof(t->last), p, sizeof(p));
		snprintf(t->err, sizeof(t->err), "the tar header after entry "
			 "%s (byte %llu): %s", p,
			 (unsigned long long)t->hdr_offset, why);
	} else {
		snprintf(t->err, sizeof(t->err), "the tar header at byte %llu: "
			 "%s", (unsigned long long)t->hdr_offset, why);
	}
	t->state = S_FAILED;
	return -1;
}

/* Go's parseOctal: leading and trailing spaces and NULs trimmed, cut at a
 * NUL, then only octal digits (strconv.ParseUint base 8). */
static bool go_octal(const unsigned char *p, size_t n, int64_t *out)
{
	size_t b = 0, e = n, i;
	uint64_t v = 0;

	while (b < e && (p[b] == ' ' || p[b] == '\0'))
		b++;
	while (e > b && (p[e - 1] == ' ' || p[e - 1] == '\0'))
		e--;
	*out = 0;
	if (b == e)
		return true;
	for (i = b; i < e && p[i]; i++) {
		if (p[i] < '0' || p[i] > '7' || v >> 61)
			return false;
		v = v * 8 + (uint64_t)(p[i] - '0');
	}
	*out = (int64_t)v;
	return true;
}

/* Go's parseNumeric: base-256 two's complement when the high bit of the
 * first byte is set, else octal. */
static bool go_numeric(const unsigned char *p, size_t n, int64_t *out)
{
	unsigned char inv;
	uint64_t x = 0;
	size_t i;

	if (!(p[0] & 0x80))
		return go_octal(p, n, out);
	inv = (p[0] & 0x40) ? 0xff : 0;
	for (i = 0; i < n; i++) {
		unsigned char c = p[i] ^ inv;

		if (i == 0)
			c &= 0x7f;
		if (x >> 56)
			return false;
		x = x << 8 | c;
	}
	if (x >> 63)
		return false;
	*out = inv ? ~(int64_t)x : (int64_t)x;
	return true;
}

/* Go's strconv.ParseInt(s, 10, 64). */
static bool go_int(const char *s, size_t n, int64_t *out)
{
	bool neg = false;
	uint64_t v = 0, lim;
	size_t i = 0;

	if (n && (s[0] == '+' || s[0] == '-')) {
		neg = s[0] == '-';
		i++;
	}
	if (i == n)
		return false;
	lim = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (lim - (uint64_t)(s[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

/* Go's parsePAXTime: seconds, then optional digits after a '.'. */
static bool go_pax_time(const char *s, size_t n, int64_t *sec, uint32_t *ns)
{
	const char *dot = memchr(s, '.', n);
	size_t sl = dot ? (size_t)(dot - s) : n, i;
	uint32_t v = 0;

	if (!go_int(s, sl, sec))
		return false;
	*ns = 0;
	if (!dot)
		return true;
	for (i = sl + 1; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	for (i = 0; i < 9; i++)
		v = v * 10 + (sl + 1 + i < n ? (uint32_t)(s[sl + 1 + i] - '0')
					     : 0);
	/* time.Unix(secs, -nsecs) for a negative time, normalised */
	if (s[0] == '-' && v) {
		if (*sec == INT64_MIN)
			return false;
		*sec -= 1;
		v = 1000000000u - v;
	}
	*ns = v;
	return true;
}

static bool checksum_ok(const unsigned char *h)
{
	int64_t want, u = 0, s = 0;
	size_t i;

	if (!go_octal(h + 148, 8, &want))
		return false;
	for (i = 0; i < 512; i++) {
		unsigned char c = i >= 148 && i < 156 ? ' ' : h[i];

		u += c;
		s += (signed char)c;
	}
	return want == u || want == s;
}

static bool all_zero(const unsigned char *h)
{
	size_t i;

	for (i = 0; i < 512; i++)
		if (h[i])
			return false;
	return true;
}

static char *strndup_nul(const void *p, size_t n)
{
	const char *z = memchr(p, '\0', n);

	return strndup(p, z ? (size_t)(z - (const char *)p) : n);
}

/* One pax record at @s (@n bytes left), as Go's parsePAXRecord reads it.
 * Return: its length, or 0 if it is not one. */
static size_t pax_record(const char *s, size_t n, const char **k, size_t *kl,
			 const char **v, size_t *vl)
{
	const char *sp = memchr(s, ' ', n), *eq;
	int64_t len;

	if (!sp || !go_int(s, (size_t)(sp - s), &len) || len < 5 ||
	    (uint64_t)len > n || len <= sp - s + 1 || s[len - 1] != '\n')
		return 0;
	*k = sp + 1;
	eq = memchr(*k, '=', (size_t)(s + len - 1 - *k));
	if (!eq || eq == *k)
		return 0;
	*kl = (size_t)(eq - *k);
	*v = eq + 1;
	*vl = (size_t)(s + len - 1 - *v);
	/* validPAXRecord: no NUL in the value of these four, nor in any
	 * other key */
	if ((*kl == 4 && !memcmp(*k, "path", 4)) ||
	    (*kl == 8 && !memcmp(*k, "linkpath", 8)) ||
	    (*kl == 5 && !memcmp(*k, "uname", 5)) ||
	    (*kl == 5 && !memcmp(*k, "gname", 5))) {
		if (memchr(*v, '\0', *vl))
			return 0;
	} else if (memchr(*k, '\0', *kl)) {
		return 0;
	}
	return (size_t)len;
}

static bool key_is(const char *k, size_t kl, const char *want)
{
	return strlen(want) == kl && !memcmp(k, want, kl);
}

/* Go's parsePAX: every record in grammar, GNU sparse 0.0 offsets and
 * sizes alternating. */
static bool pax_valid(const char *s, size_t n)
{
	size_t pos = 0, sparse = 0;

	while (pos < n) {
		const char *k, *v;
		size_t kl, vl, len = pax_record(s + pos, n - pos, &k, &kl,
						&v, &vl);

		if (!len)
			return false;
		if (key_is(k, kl, "GNU.sparse.offset") ||
		    key_is(k, kl, "GNU.sparse.numbytes")) {
			if ((sparse % 2 == 0) !=
			    key_is(k, kl, "GNU.sparse.offset") ||
			    memchr(v, ',', vl))
				return false;
			sparse++;
		}
		pos += len;
	}
	return true;
}

/* The pax keys Go acts on, the last record of each. */
enum { K_PATH, K_LINK, K_UID, K_GID, K_ATIME, K_MTIME, K_CTIME, K_SIZE,
       K_SMAJOR, K_SMINOR, K_SNAME, K_SSIZE, K_SREAL, K_SMAP, K_SBLOCKS,
       K_N };
static const char *const pax_keys[K_N] = {
	"path", "linkpath", "uid", "gid", "atime", "mtime", "ctime", "size",
	"GNU.sparse.major", "GNU.sparse.minor", "GNU.sparse.name",
	"GNU.sparse.size", "GNU.sparse.realsize", "GNU.sparse.map",
	"GNU.sparse.numblocks",
};

struct val {
	const char *v;
	size_t n;
};

static bool val_is(const struct val *v, const char *s)
{
	return key_is(v->v ? v->v : "", v->n, s);
}

/* Remove the xattr record @name from @e (a later one replaces it). */
static void drop_xattr(struct strata_tar_entry *e, const char *name, size_t nl)
{
	size_t off = 0;

	while (off + 6 <= e->xattrs_len) {
		unsigned char *p = e->xattrs + off;
		size_t rn = (size_t)p[0] | (size_t)p[1] << 8;
		size_t rv = (size_t)p[2] | (size_t)p[3] << 8 |
			    (size_t)p[4] << 16 | (size_t)p[5] << 24;
		size_t len = 6 + rn + rv;

		if (rn == nl && !memcmp(p + 6, name, nl)) {
			memmove(p, p + len, e->xattrs_len - off - len);
			e->xattrs_len -= len;
			return;
		}
		off += len;
	}
}

static int add_xattr(struct strata_tar_entry *e, const char *k, size_t kl,
		     const char *v, size_t vl)
{
	unsigned char *p;

	if (kl > 0xffff || vl > 0xffffffffu)
		return -1;
	drop_xattr(e, k, kl);
	p = realloc(e->xattrs, e->xattrs_len + 6 + kl + vl);
	if (!p)
		return -1;
	e->xattrs = p;
	p += e->xattrs_len;
	p[0] = (unsigned char)kl;
	p[1] = (unsigned char)(kl >> 8);
	p[2] = (unsigned char)vl;
	p[3] = (unsigned char)(vl >> 8);
	p[4] = (unsigned char)(vl >> 16);
	p[5] = (unsigned char)(vl >> 24);
	memcpy(p + 6, k, kl);
	memcpy(p + 6 + kl, v, vl);
	e->xattrs_len += 6 + kl + vl;
	return 0;
}

static void entry_free(struct strata_tar_entry *e)
{
	free(e->map);
	free(e->name);
	free(e->link);
	free(e->xattrs);
	memset(e, 0, sizeof(*e));
}

/* Go's validateSparseEntries, and its sparse reader's demand that the
 * fragments take exactly the @phys bytes of data there are. */
static bool map_valid(const int64_t *m, size_t n, int64_t size, int64_t phys)
{
	int64_t pre_end = 0, sum = 0;
	size_t i;

	if (size < 0)
		return false;
	for (i = 0; i < n; i++) {
		int64_t off = m[2 * i], len = m[2 * i + 1];

		if (off < 0 || len < 0 || off > INT64_MAX - len ||
		    off + len > size || pre_end > off)
			return false;
		pre_end = off + len;
		sum += len;
	}
	return sum == phys;
}

/* Go's readGNUSparseMap0x1: @nb pairs in the comma-separated @map. */
static bool map_0x1(struct strata_tar_entry *e, const struct val *nb,
		    const char *map, size_t len)
{
	int64_t n;
	size_t i, k = 0, start = 0;

	if (!go_int(nb->v ? nb->v : "", nb->n, &n) || n < 0 ||
	    n > INT64_MAX / 2 || (uint64_t)n > len + 1)
		return false;
	e->map = calloc((size_t)n * 2 + 1, sizeof(*e->map));
	if (!e->map)
		return false;
	for (i = 0; len && i <= len; i++) {
		if (i < len && map[i] != ',')
			continue;
		if (k == (size_t)n * 2 ||
		    !go_int(map + start, i - start, &e->map[k]))
			return false;
		k++;
		start = i + 1;
	}
	e->map_n = (size_t)n;
	return k == (size_t)n * 2;
}

/* Go's mergePAX and readGNUSparsePAXHeaders on entry @e (whose physical
 * data size comes back in @phys). Return: 0, or -1 refused. */
static int merge_pax(struct strata_tarscan *t, struct strata_tar_entry *e,
		     int64_t *phys)
{
	struct val kv[K_N] = { { NULL, 0 } };
	cleanup_free char *joined = NULL;
	size_t pos = 0, i, jlen = 0;
	int64_t n;
	uint32_t ns;
	char *s;

	if (!t->pax.set)
		return 0;
	while (pos < t->pax.len) {
		const char *k, *v;
		size_t kl, vl, len = pax_record(t->pax.rec + pos,
						t->pax.len - pos, &k, &kl,
						&v, &vl);

		pos += len;
		if (kl > 12 && !memcmp(k, "SCHILY.xattr.", 13)) {
			if (add_xattr(e, k + 13, kl - 13, v, vl) < 0)
				return refuse(t, e->name, strlen(e->name),
					      "out of memory");
			continue;
		}
		if (key_is(k, kl, "GNU.sparse.offset") ||
		    key_is(k, kl, "GNU.sparse.numbytes")) {
			/* 0.0: Go joins them into GNU.sparse.map */
			char *j = realloc(joined, jlen + vl + 2);

			if (!j)
				return refuse(t, e->name, strlen(e->name),
					      "out of memory");
			joined = j;
			if (jlen)
				joined[jlen++] = ',';
			memcpy(joined + jlen, v, vl);
			jlen += vl;
			joined[jlen] = '\0';
			continue;
		}
		for (i = 0; i < K_N; i++)
			if (key_is(k, kl, pax_keys[i])) {
				kv[i].v = v;
				kv[i].n = vl;
			}
	}
	for (i = 0; i < K_N; i++) {
		const struct val *x = &kv[i];
		bool ok = true;

		if (!x->n)	/* Go keeps the header's value */
			continue;
		switch (i) {
		case K_PATH:
		case K_LINK:
			s = strndup(x->v, x->n);
			if (!s)
				return refuse(t, e->name, strlen(e->name),
					      "out of memory");
			free(i == K_PATH ? e->name : e->link);
			if (i == K_PATH)
				e->name = s;
			else
				e->link = s;
			break;
		case K_UID:
			ok = go_int(x->v, x->n, &e->uid);
			break;
		case K_GID:
			ok = go_int(x->v, x->n, &e->gid);
			break;
		case K_MTIME:
			ok = go_pax_time(x->v, x->n, &e->mtime_sec,
					 &e->mtime_nsec);
			break;
		case K_ATIME:
		case K_CTIME:
			ok = go_pax_time(x->v, x->n, &n, &ns);
			break;
		case K_SIZE:
			ok = go_int(x->v, x->n, &e->size);
			break;
		}
		if (!ok)
			return refuse(t, e->name, strlen(e->name), "pax record "
				      "%s is not a value Go's archive/tar "
				      "reads", pax_keys[i]);
	}
	*phys = e->size;
	if (joined) {
		kv[K_SMAP].v = joined;
		kv[K_SMAP].n = jlen;
	}
	/* readGNUSparsePAXHeaders */
	if ((val_is(&kv[K_SMAJOR], "0") && (val_is(&kv[K_SMINOR], "0") ||
					    val_is(&kv[K_SMINOR], "1"))) ||
	    (val_is(&kv[K_SMAJOR], "1") && val_is(&kv[K_SMINOR], "0")))
		e->sparse = true;
	else if (!kv[K_SMAJOR].n && !kv[K_SMINOR].n && kv[K_SMAP].n)
		e->sparse = true;
	if (!e->sparse)
		return 0;
	if (kv[K_SNAME].n) {
		s = strndup(kv[K_SNAME].v, kv[K_SNAME].n);
		if (!s)
			return refuse(t, e->name, strlen(e->name),
				      "out of memory");
		free(e->name);
		e->name = s;
	}
	i = kv[K_SSIZE].n ? K_SSIZE : K_SREAL;
	if (kv[i].n && !go_int(kv[i].v, kv[i].n, &e->size))
		return refuse(t, e->name, strlen(e->name), "pax record %s is "
			      "not a value Go's archive/tar reads",
			      pax_keys[i]);
	if (val_is(&kv[K_SMAJOR], "1") && val_is(&kv[K_SMINOR], "0"))
		return 0;	/* 1.0: the map is in the data */
	if (!map_0x1(e, &kv[K_SBLOCKS], kv[K_SMAP].v, kv[K_SMAP].n) ||
	    !map_valid(e->map, e->map_n, e->size, *phys))
		return refuse(t, e->name, strlen(e->name), "sparse map "
			      "that Go's archive/tar refuses");
	e->map_ready = true;
	return 0;
}

/* Go's readGNUSparseMap1x0, fed the entry's data a block at a time:
 * a count, then that many offset and length pairs, one number a line.
 * Return: 0 (more wanted or done), -1 refused. */
static int map_1x0_block(struct strata_tarscan *t)
{
	struct strata_tar_entry *e = t->map_q < t->q_len ? &t->q[t->map_q]
							 : NULL;
	const char *name = e && e->name ? e->name : t->last;
	cleanup_free int64_t *m = NULL;
	const char *p = t->mbuf, *nl;
	int64_t n, i;
	size_t k;

	for (k = t->mbuf_len - 512; k < t->mbuf_len; k++)
		t->mbuf_nl += t->mbuf[k] == '\n';
	if (!t->map_want) {
		if (t->mbuf_nl < 1)
			return 0;
		nl = memchr(p, '\n', t->mbuf_len);
		if (!go_int(p, (size_t)(nl - p), &n) || n < 0 ||
		    n > INT64_MAX / 2 - 1)
			goto bad;
		t->map_want = 1 + 2 * n;
	}
	if ((int64_t)t->mbuf_nl < t->map_want)
		return 0;
	n = (t->map_want - 1) / 2;
	m = calloc((size_t)n * 2 + 1, sizeof(*m));
	if (!m)
		goto bad;
	p = memchr(p, '\n', t->mbuf_len) + 1;
	for (i = 0; i < 2 * n; i++) {
		nl = memchr(p, '\n', (size_t)(t->mbuf + t->mbuf_len - p));
		if (!go_int(p, (size_t)(nl - p), &m[i]))
			goto bad;
		p = nl + 1;
	}
	if (!map_valid(m, (size_t)n, t->map_size,
		       t->map_phys - (int64_t)t->mbuf_len))
		goto bad;
	t->map_pending = false;
	free(t->mbuf);
	t->mbuf = NULL;
	if (e && e->name) {	/* not taken yet */
		e->map = m;
		m = NULL;
		e->map_n = (size_t)n;
		e->map_ready = true;
	}
	return 0;
bad:
	return refuse(t, name, strlen(name), "sparse map that Go's "
		      "archive/tar refuses");
}

static int queue(struct strata_tarscan *t, struct strata_tar_entry *e)
{
	if (t->q_head == t->q_len)
		t->q_head = t->q_len = 0;
	if (t->q_len == t->q_cap) {
		size_t cap = t->q_cap ? t->q_cap * 2 : 64;
		struct strata_tar_entry *q = realloc(t->q, cap * sizeof(*q));

		if (!q)
			return -1;
		t->q = q;
		t->q_cap = cap;
	}
	t->q[t->q_len++] = *e;
	memset(e, 0, sizeof(*e));
	return 0;
}

static void forget_pending(struct strata_tarscan *t)
{
	free(t->pax.rec);
	free(t->long_name);
	free(t->long_link);
	memset(&t->pax, 0, sizeof(t->pax));
	t->long_name = t->long_link = NULL;
}

static const char *const field_names[] = {
	"size", "mode", "uid", "gid", "mtime", "devmajor", "devminor",
	"atime", "ctime",
};

static int ext_done(struct strata_tarscan *t);

/* Go's readHeader and next() for the header block in @t->hdr. */
static int header(struct strata_tarscan *t)
{
	const unsigned char *h = t->hdr;
	static const size_t off[] = { 124, 100, 108, 116, 136, 329, 337 };
	static const size_t len[] = { 12, 8, 8, 8, 12, 8, 8 };
	int64_t v[7] = { 0 }, phys;
	struct strata_tar_entry e = { 0 };
	bool ustar, gnu, star, v7, gnu_prefix = false;
	const char *prefix = NULL;
	size_t plen = 0, i, nf;
	char f = (char)h[156];

	if (all_zero(h)) {
		t->state = S_ZERO;
		return 0;
	}
	if (t->state == S_ZERO)
		return refuse_hdr(t, false, "a tar header after an end-of-archive "
				  "block (Go's archive/tar refuses it)");
	if (!checksum_ok(h))
		return refuse_hdr(t, false, "bad tar header checksum%s",
				  t->hdr_offset ? "" : " (not a tar archive)");
	ustar = !memcmp(h + 257, "ustar\0", 6);
	star = ustar && !memcmp(h + 508, "tar\0", 4);
	gnu = !memcmp(h + 257, "ustar ", 6) && !memcmp(h + 263, " \0", 2);
	v7 = !ustar && !gnu;
	nf = v7 ? 5 : 7;
	for (i = 0; i < nf; i++)
		if (!go_numeric(h + off[i], len[i], &v[i]))
			return refuse_hdr(t, true, "tar header field %s is not a "
					  "number Go's archive/tar reads",
					  field_names[i]);
	if (star) {
		int64_t x;

		prefix = (const char *)h + 345;
		plen = 131;
		for (i = 0; i < 2; i++)
			if (!go_numeric(h + 476 + 12 * i, 12, &x))
				return refuse_hdr(t, true, "tar header field %s is "
						  "not a number Go's "
						  "archive/tar reads",
						  field_names[7 + i]);
	} else if (ustar) {
		prefix = (const char *)h + 345;
		plen = 155;
	} else if (gnu) {
		int64_t x;

		/* Go reads a GNU header whose atime or ctime it cannot
		 * parse as one of its own pre-1.8 bugs: with a prefix */
		if ((h[345] && !go_numeric(h + 345, 12, &x)) ||
		    (h[357] && !go_numeric(h + 357, 12, &x)))
			gnu_prefix = true;
		if (gnu_prefix) {
			const unsigned char *z = memchr(h + 345, 0, 155);
			size_t l = z ? (size_t)(z - (h + 345)) : 155;

			for (i = 0; i < l && h[345 + i] < 0x80; i++)
				;
			if (i == l) {
				prefix = (const char *)h + 345;
				plen = 155;
			}
		}
	}
	/* handleRegularFile */
	phys = header_only(f) ? 0 : v[0];
	if (phys < 0)
		return refuse_hdr(t, true, "negative size");
	if (ext_type(f)) {
		if ((uint64_t)phys > SPECIAL_MAX)
			return refuse_hdr(t, true, "extended header of %lld bytes "
					  "(Go's archive/tar reads at most "
					  "1 MiB)", (long long)phys);
		if (t->ext_cap < (size_t)phys + 1) {
			unsigned char *n = realloc(t->ext, (size_t)phys + 1);

			if (!n)
				return refuse_hdr(t, true, "out of memory");
			t->ext = n;
			t->ext_cap = (size_t)phys + 1;
		}
		t->ext_type = f;
		t->ext_len = 0;
		t->data = (uint64_t)phys;
		t->pad = (512 - t->data % 512) % 512;
		t->state = S_DATA;
		return phys ? 0 : ext_done(t);
	}
	/* a real entry */
	e.offset = t->hdr_offset;
	e.name = strndup_nul(h, 100);
	e.link = strndup_nul(h + 157, 100);
	if (!e.name || !e.link)
		goto nomem;
	if (prefix && prefix[0]) {
		char *p = strndup_nul(prefix, plen), *n = NULL;

		if (!p || asprintf(&n, "%s/%s", p, e.name) < 0)
			n = NULL;
		free(p);
		if (!n)
			goto nomem;
		free(e.name);
		e.name = n;
	}
	e.type = f;
	e.size = v[0];
	e.mode = v[1];
	e.uid = v[2];
	e.gid = v[3];
	e.mtime_sec = v[4];
	e.devmajor = v[5];
	e.devminor = v[6];
	if (merge_pax(t, &e, &phys) < 0)
		goto fail;
	if (t->long_name && t->long_name[0]) {
		free(e.name);
		e.name = t->long_name;
		t->long_name = NULL;
	}
	if (t->long_link && t->long_link[0]) {
		free(e.link);
		e.link = t->long_link;
		t->long_link = NULL;
	}
	if (f == '\0') {
		size_t l = strlen(e.name);

		e.type = f = l && e.name[l - 1] == '/' ? '5' : '0';
	}
	if (header_only(f))
		phys = 0;
	if (phys < 0 || e.size < 0) {
		refuse(t, e.name, strlen(e.name), "negative size");
		goto fail;
	}
	if (!entry_type_ok(f)) {
		if (f >= 0x21 && f < 0x7f)
			refuse(t, e.name, strlen(e.name), "tar entry type "
			       "'%c' is not one a layer may hold", f);
		else
			refuse(t, e.name, strlen(e.name), "tar entry type "
			       "0x%02x is not one a layer may hold",
			       (unsigned char)f);
		goto fail;
	}
	if (e.sparse && header_only(f)) {
		refuse(t, e.name, strlen(e.name), "sparse map on a %c entry",
		       f);
		goto fail;
	}
	if (!e.sparse && header_only(f))
		e.size = 0;
	forget_pending(t);
	snprintf(t->last, sizeof(t->last), "%.199s", e.name);
	if (e.sparse && !e.map_ready) {
		t->map_pending = true;
		t->map_size = e.size;
		t->map_phys = phys;
		t->map_want = 0;
		t->mbuf_len = t->mbuf_nl = 0;
	}
	if (queue(t, &e) < 0)
		goto nomem;
	t->map_q = t->q_len - 1;
	t->data = (uint64_t)phys;
	t->pad = (512 - t->data % 512) % 512;
	t->state = S_DATA;
	return 0;
nomem:
	refuse_hdr(t, true, "out of memory");
fail:
	entry_free(&e);
	return -1;
}

/* The data of an extended header is complete. */
static int ext_done(struct strata_tarscan *t)
{
	char f = t->ext_type;
	char **dst;

	t->ext_type = 0;
	t->ext[t->ext_len] = '\0';
	if (f == 'x' || f == 'g') {
		if (!pax_valid((const char *)t->ext, t->ext_len))
			return refuse_hdr(t, false, "pax extended header out of "
					  "grammar (Go's archive/tar refuses "
					  "it)");
		if (f == 'g') {
			/* Go returns a global header as an entry of its
			 * own: what was pending is dropped */
			forget_pending(t);
			return 0;
		}
		free(t->pax.rec);
		t->pax.rec = (char *)t->ext;
		t->pax.len = t->ext_len;
		t->pax.set = true;
		t->ext = NULL;
		t->ext_cap = 0;
		return 0;
	}
	dst = f == 'L' ? &t->long_name : &t->long_link;
	free(*dst);
	*dst = strdup((const char *)t->ext);
	if (!*dst)
		return refuse_hdr(t, true, "out of memory");
	return 0;
}

#define MAP_MAX (16u << 20)	/* sparse 1.0 maps kept up to this size */

/* @d more bytes of the data of the entry whose sparse map is pending. */
static int map_feed(struct strata_tarscan *t, const unsigned char *p,
		    size_t d)
{
	while (d > 0 && t->map_pending) {
		size_t k = 512 - t->mbuf_len % 512;

		if (k > d)
			k = d;
		if (t->mbuf_len % 512 == 0) {
			char *b;

			if (t->mbuf_len >= MAP_MAX)
				return refuse(t, t->last, strlen(t->last),
					      "sparse map over 16 MiB");
			b = realloc(t->mbuf, t->mbuf_len + 512);
			if (!b)
				return refuse(t, t->last, strlen(t->last),
					      "out of memory");
			t->mbuf = b;
		}
		memcpy(t->mbuf + t->mbuf_len, p, k);
		t->mbuf_len += k;
		p += k;
		d -= k;
		if (t->mbuf_len % 512 == 0 && map_1x0_block(t) < 0)
			return -1;
	}
	return 0;
}

int strata_tarscan_feed(struct strata_tarscan *t, const void *buf, size_t n,
			char *msg, size_t msg_size)
{
	const unsigned char *p = buf;

	while (n > 0 && t->state != S_DONE && t->state != S_FAILED) {
		if (t->state == S_DATA) {
			uint64_t left = t->data + t->pad;
			size_t k = left < n ? (size_t)left : n;
			size_t d = t->data < k ? (size_t)t->data : k;

			if (t->ext_type) {
				memcpy(t->ext + t->ext_len, p, d);
				t->ext_len += d;
			}
			if (t->map_pending && map_feed(t, p, d) < 0)
				break;
			t->data -= d;
			t->pad -= k - d;
			t->offset += k;
			p += k;
			n -= k;
			if (t->data == 0 && t->ext_type && ext_done(t) < 0)
				break;
			if (t->data == 0 && t->map_pending) {
				refuse(t, t->last, strlen(t->last), "sparse "
				       "map cut short by the end of the data");
				break;
			}
			if (t->data == 0 && t->pad == 0) {
				t->state = S_HEADER;
				t->have = 0;
			}
			continue;
		}
		{
			size_t k = 512 - t->have < n ? 512 - t->have : n;

			if (t->have == 0)
				t->hdr_offset = t->offset;
			memcpy(t->hdr + t->have, p, k);
			t->have += k;
			t->offset += k;
			p += k;
			n -= k;
			if (t->have < 512)
				continue;
			t->have = 0;
			if (t->state == S_ZERO && all_zero(t->hdr))
				t->state = S_DONE;
			else
				header(t);
		}
	}
	if (t->state == S_FAILED) {
		snprintf(msg, msg_size, "%s", t->err);
		return -1;
	}
	return 0;
}

int strata_tarscan_finish(struct strata_tarscan *t, char *msg,
			  size_t msg_size)
{
	/* a partial block where a header, or the second end-of-archive
	 * block, should be: Go's io.ReadFull gives io.ErrUnexpectedEOF */
	if ((t->state == S_HEADER || t->state == S_ZERO) && t->have)
		refuse_hdr(t, false, "the tar stream ends inside a header");
	else if (t->state == S_DATA && (t->data || t->ext_type ||
					t->map_pending))
		refuse(t, t->last, strlen(t->last),
		       "the tar stream ends inside the entry's data");
	if (t->state == S_FAILED) {
		snprintf(msg, msg_size, "%s", t->err);
		return -1;
	}
	return 0;
}

const struct strata_tar_entry *strata_tarscan_next(struct strata_tarscan *t)
{
	entry_free(&t->cur);
	if (t->q_head == t->q_len)
		return NULL;
	t->cur = t->q[t->q_head];
	memset(&t->q[t->q_head++], 0, sizeof(t->cur));
	return &t->cur;
}

bool strata_tarscan_followed(const struct strata_tarscan *t)
{
	return t->state == S_DONE;
}

void strata_tarscan_free(struct strata_tarscan *t)
{
	size_t i;

	for (i = t->q_head; i < t->q_len; i++)
		entry_free(&t->q[i]);
	free(t->mbuf);
	entry_free(&t->cur);
	forget_pending(t);
	free(t->q);
	free(t->ext);
	memset(t, 0, sizeof(*t));
}
