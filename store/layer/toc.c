/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A table of contents in JSON (toc.h), zstd:chunked's and eStargz's:
 *
 *   {"version": 1, "entries": [{"type": "reg", "name": "bin/sh",
 *     "mode": 493, "size": 123, "uid": 0, "gid": 0,
 *     "modtime": "RFC 3339", "linkName": "...", "devMajor": 0,
 *     "devMinor": 0, "xattrs": {"user.x": "base64"},
 *     "digest": "sha256:...", "offset": N, ...}, ...]}
 *
 * with types reg, hardlink, symlink, dir, char, block, fifo, and "chunk"
 * entries that split a large file: "digest" covers the whole
 * uncompressed file; when it is split, its "reg" entry also names its
 * first chunk ("chunkSize", "chunkDigest") and a "chunk" entry follows
 * for each other chunk ("chunkOffset" in the file, "chunkSize",
 * "chunkDigest"; "offset" where its frames or member start, the
 * format's to check). A fill checks every chunk and then the whole file;
 * a chunk list that does not cover its file exactly, in order, is
 * refused. What each entry says of its metadata is compared with the
 * tar's headers once the whole blob has been read (lazy.c reads the TOC
 * again then: strata_toc_metas()). Read as a stream (jsonpull.c, no json-c tree: 3.5x less CPU
 * on a 22 MB TOC).
 *
 * The TOC is as hostile as a tar: each entry goes through the same checks
 * as a tar entry (unpack.c: "..", absolute names, links out of the layer,
 * whiteouts, limits); where the format's content ranges may lie is the
 * format's to check (its content() and chunk()).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jsonpull.h"
#include "tarscan.h"
#include "toc.h"
#include "unpack.h"

static char type_flag(const char *t)
{
	static const struct {
		const char *name;
		char flag;
	} types[] = {
		{ "reg", '0' }, { "hardlink", '1' }, { "symlink", '2' },
		{ "char", '3' }, { "block", '4' }, { "dir", '5' },
		{ "fifo", '6' },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(types); i++)
		if (!strcmp(t, types[i].name))
			return types[i].flag;
	return 0;
}

/* hex digit values plus one, 0 for any other byte (a digest per entry
 * and one per chunk: a table, not two range tests per digit) */
static const uint8_t hexval1[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6,
	['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12,
	['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

/* @hex: lower-case hex digits only */
static int hex_bytes(const char *hex, uint8_t *out, size_t n)
{
	const unsigned char *h = (const unsigned char *)hex;
	unsigned bad = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned hi = hexval1[h[2 * i]], lo = hexval1[h[2 * i + 1]];

		bad |= !hi | !lo;
		out[i] = (uint8_t)((hi - 1) << 4 | ((lo - 1) & 15));
	}
	return bad ? -EINVAL : 0;
}

int strata_toc_entry_err(struct strata_toc_build *bd, const char *name,
			 const char *why)
{
	char p[300];

	strata_printable(name ? name : "", SIZE_MAX, p, sizeof(p));
	return strata_err_set(bd->err, -EBADMSG, "layer %s: table of contents "
			      "entry %s: %s", bd->sd, name ? p : "(no name)",
			      why);
}

int strata_toc_sha256(const char *digest, uint8_t out[32])
{
	if (strlen(digest) != 71 || strncmp(digest, "sha256:", 7))
		return -EINVAL;
	return hex_bytes(digest + 7, out, 32);
}

/* ---- what the TOC says of an entry, compared with the tar later ---- */

/* Hash @path as a path: empty and "." components dropped (gathered
 * first, one update: an update per component was most of the cost). */
static void hash_path(EVP_MD_CTX *c, const char *path)
{
	char buf[1024];
	const char *p = path, *q;
	size_t n = 0, len;
	bool first = true;

	for (; *p; p = *q ? q + 1 : q) {
		q = strchrnul(p, '/');
		len = (size_t)(q - p);
		if (len == 0 || (len == 1 && *p == '.'))
			continue;
		if (n + len + 1 > sizeof(buf)) {
			EVP_DigestUpdate(c, buf, n);
			n = 0;
		}
		if (!first)
			buf[n++] = '/';
		first = false;
		if (n + len > sizeof(buf)) {	/* a very long component */
			EVP_DigestUpdate(c, buf, n);
			EVP_DigestUpdate(c, p, len);
			n = 0;
			continue;
		}
		memcpy(buf + n, p, len);
		n += len;
	}
	EVP_DigestUpdate(c, buf, n);
}

/* The length of the xattr record at @r (tarscan's form: u16 name length,
 * u32 value length, little endian, name, value) */
static size_t xrec_len(const unsigned char *r)
{
	return 6 + ((size_t)r[0] | (size_t)r[1] << 8) +
	       ((size_t)r[2] | (size_t)r[3] << 8 | (size_t)r[4] << 16 |
		(size_t)r[5] << 24);
}

/* qsort_r: records at offsets into @arg, by name */
static int xrec_cmp(const void *a, const void *b, void *arg)
{
	const unsigned char *x = arg, *pa = x + *(const size_t *)a,
			    *pb = x + *(const size_t *)b;
	size_t la = (size_t)pa[0] | (size_t)pa[1] << 8;
	size_t lb = (size_t)pb[0] | (size_t)pb[1] << 8;
	int c = memcmp(pa + 6, pb + 6, la < lb ? la : lb);

	return c ? c : la < lb ? -1 : la > lb;
}

/* The xattr records @x (tarscan's form) hashed in name order. */
static void hash_xattrs(EVP_MD_CTX *c, const unsigned char *x, size_t len)
{
	size_t n = 0, i, pos, *offs = NULL;

	for (pos = 0; pos + 6 <= len; n++)
		pos += xrec_len(x + pos);
	if (n)
		offs = malloc(n * sizeof(*offs));
	if (!offs) {
		EVP_DigestUpdate(c, x, len);	/* n == 0, or no memory */
		return;
	}
	for (pos = 0, i = 0; i < n; i++) {
		offs[i] = pos;
		pos += xrec_len(x + pos);
	}
	qsort_r(offs, n, sizeof(*offs), xrec_cmp, (void *)x);
	for (i = 0; i < n; i++)
		EVP_DigestUpdate(c, x + offs[i], xrec_len(x + offs[i]));
	free(offs);
}

/* SHA-256 fetched once (EVP_sha256() in each init costs a fetch and a
 * lock: a tenth of the build of a 100,000-entry TOC) */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int strata_lz_meta_of(const struct strata_tar_entry *g,
		      struct strata_lz_meta *m)
{
	EVP_MD_CTX *c;

	memset(m, 0, sizeof(*m));
	m->type = g->type == '7' ? '0' : g->type;
	m->mode = g->mode;
	m->uid = g->uid;
	m->gid = g->gid;
	m->size = m->type == '0' ? g->size : 0;
	m->devmajor = g->devmajor;
	m->devminor = g->devminor;
	/* Go's zero time, which older TOCs hold for an mtime of 0 */
	m->mtime_sec = g->mtime_sec == -62135596800 ? 0 : g->mtime_sec;
	m->mtime_nsec = g->mtime_nsec;
	pthread_once(&sha256_once, sha256_fetch);
	c = sha256_md ? EVP_MD_CTX_new() : NULL;
	if (!c)
		return -ENOMEM;
	EVP_DigestInit_ex(c, sha256_md, NULL);
	hash_path(c, g->name ? g->name : "");
	EVP_DigestFinal_ex(c, m->name, NULL);
	/* no link target, no xattrs: zeros, no hash */
	if ((m->type == '1' || m->type == '2') && g->link) {
		EVP_DigestInit_ex(c, sha256_md, NULL);
		if (m->type == '1')
			hash_path(c, g->link);
		else
			EVP_DigestUpdate(c, g->link, strlen(g->link));
		EVP_DigestFinal_ex(c, m->link, NULL);
	}
	if (g->xattrs && g->xattrs_len) {
		EVP_DigestInit_ex(c, sha256_md, NULL);
		hash_xattrs(c, g->xattrs, g->xattrs_len);
		EVP_DigestFinal_ex(c, m->xattrs, NULL);
	}
	EVP_MD_CTX_free(c);
	return 0;
}

bool strata_lz_meta_differ(const struct strata_lz_meta *a,
			   const struct strata_lz_meta *b, char *why,
			   size_t len)
{
#define NUM(f, fmt) \
	if (a->f != b->f) { \
		snprintf(why, len, #f " " fmt " in the table of contents, " \
			 fmt " in the tar", (long long)a->f, (long long)b->f); \
		return true; \
	}
	if (a->type != b->type) {
		snprintf(why, len, "type '%c' in the table of contents, '%c' in "
			 "the tar", a->type, b->type);
		return true;
	}
	if (memcmp(a->name, b->name, 32)) {
		snprintf(why, len, "the table of contents names another path");
		return true;
	}
	NUM(mode, "0%llo")
	NUM(uid, "%lld")
	NUM(gid, "%lld")
	NUM(size, "%lld")
	NUM(devmajor, "%lld")
	NUM(devminor, "%lld")
	NUM(mtime_sec, "%lld")
	NUM(mtime_nsec, "%lld")
#undef NUM
	if (memcmp(a->link, b->link, 32)) {
		snprintf(why, len, "link target differs");
		return true;
	}
	if (memcmp(a->xattrs, b->xattrs, 32)) {
		snprintf(why, len, "extended attributes differ");
		return true;
	}
	return false;
}

/* ---- reading the TOC ---- */

static int add_rec(struct strata_toc_build *bd, uint64_t off, uint64_t end,
		   uint64_t size)
{
	struct strata_lz_rec *r;

	if (bd->n_recs == bd->cap_recs) {
		size_t c = bd->cap_recs ? bd->cap_recs * 2 : 256;
		void *p = realloc(bd->recs, c * sizeof(*bd->recs));

		if (!p)
			return -ENOMEM;
		strata_huge_hint(p, c * sizeof(*bd->recs));
		bd->recs = p;
		bd->cap_recs = c;
	}
	r = &bd->recs[bd->n_recs++];
	memset(r, 0, sizeof(*r));
	r->off = off;
	r->end = end;
	r->size = size;
	if (size)
		memcpy(r->sha256, bd->sha256, 32);
	return 0;
}

/* The fields of an entry strata reads; others are skipped. */
enum { F_STR, F_INT, F_XATTRS };

static const struct field {
	const char *key;
	size_t len;
	int kind;
	int64_t max;
} fields[TE_N] = {
	[TE_TYPE] = { "type", 4, F_STR, 0 },
	[TE_NAME] = { "name", 4, F_STR, 0 },
	[TE_LINK] = { "linkName", 8, F_STR, 0 },
	[TE_MODTIME] = { "modtime", 7, F_STR, 0 },
	[TE_DIGEST] = { "digest", 6, F_STR, 0 },
	[TE_MODE] = { "mode", 4, F_INT, 07777777 },
	[TE_SIZE] = { "size", 4, F_INT, INT64_MAX },
	[TE_UID] = { "uid", 3, F_INT, 0xfffffffe },
	[TE_GID] = { "gid", 3, F_INT, 0xfffffffe },
	[TE_MAJOR] = { "devMajor", 8, F_INT, INT64_MAX },
	[TE_MINOR] = { "devMinor", 8, F_INT, INT64_MAX },
	[TE_OFFSET] = { "offset", 6, F_INT, INT64_MAX },
	[TE_END] = { "endOffset", 9, F_INT, INT64_MAX },
	[TE_XATTRS] = { "xattrs", 6, F_XATTRS, 0 },
	[TE_CHUNK_OFFSET] = { "chunkOffset", 11, F_INT, INT64_MAX },
	[TE_CHUNK_SIZE] = { "chunkSize", 9, F_INT, INT64_MAX },
	[TE_CHUNK_DIGEST] = { "chunkDigest", 11, F_STR, 0 },
	[TE_INNER_OFFSET] = { "innerOffset", 11, F_INT, INT64_MAX },
};

static int json_err(struct strata_toc_build *bd, struct strata_jp *jp)
{
	return strata_err_set(bd->err, -EBADMSG, "layer %s: %s table of "
			      "contents: invalid JSON at byte %zu: %s", bd->sd,
			      bd->format, (size_t)(jp->p - jp->start),
			      jp->error);
}

static int field_err(struct strata_toc_build *bd, const struct strata_toc_entry *e, int f,
		     const char *why)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "field \"%s\" %s", fields[f].key, why);
	return strata_toc_entry_err(bd, e->set & 1u << TE_NAME ? e->s[TE_NAME] : NULL,
			 msg);
}

static int find_field(const char *key, size_t len)
{
	int f;

	for (f = 0; f < TE_N; f++)
		if (fields[f].key[0] == key[0] && fields[f].len == len &&
		    !memcmp(fields[f].key, key, len))
			return f;
	return -1;
}

static const unsigned char *xr_name(const struct strata_toc_entry *e, size_t i,
				    size_t *len)
{
	const unsigned char *p = e->xr + e->xoff[i];

	*len = (size_t)p[0] | (size_t)p[1] << 8;
	return p + 6;
}

/* Has the entry two xattrs of one name? (json-c would keep the last) */
static bool xattr_dups(struct strata_toc_entry *e)
{
	size_t i, la, lb;
	const unsigned char *a, *b;

	if (e->n_xattrs < 2)
		return false;
	qsort_r(e->xoff, e->n_xattrs, sizeof(*e->xoff), xrec_cmp, e->xr);
	for (i = 1; i < e->n_xattrs; i++) {
		a = xr_name(e, i - 1, &la);
		b = xr_name(e, i, &lb);
		if (la == lb && !memcmp(a, b, la))
			return true;
	}
	return false;
}

/* One xattr "name": "base64" as a tarscan record (u16 name length, u32
 * value length, little endian, name, value). */
static int add_xattr(struct strata_toc_entry *e, const char *key, size_t klen,
		     const char *b64, size_t blen)
{
	size_t need = e->xr_len + 6 + klen + blen / 4 * 3 + 1;
	unsigned char *buf;
	int vlen;

	if (klen > 255 || blen % 4 || blen > 4 * 65536 / 3 + 4 ||
	    memchr(key, '\0', klen))
		return -EBADMSG;
	if (need > e->xr_cap) {
		size_t c = need * 2;

		buf = realloc(e->xr, c);
		if (!buf)
			return -ENOMEM;
		e->xr = buf;
		e->xr_cap = c;
	}
	if (e->n_xattrs == e->xoff_cap) {
		size_t c = e->xoff_cap ? e->xoff_cap * 2 : 16;
		size_t *o = realloc(e->xoff, c * sizeof(*o));

		if (!o)
			return -ENOMEM;
		e->xoff = o;
		e->xoff_cap = c;
	}
	buf = e->xr + e->xr_len;
	vlen = EVP_DecodeBlock(buf + 6 + klen, (const unsigned char *)b64,
			       (int)blen);
	if (vlen < 0)
		return -EBADMSG;
	if (blen && b64[blen - 1] == '=')
		vlen -= b64[blen - 2] == '=' ? 2 : 1;
	buf[0] = (unsigned char)klen;
	buf[1] = (unsigned char)(klen >> 8);
	buf[2] = (unsigned char)vlen;
	buf[3] = (unsigned char)(vlen >> 8);
	buf[4] = (unsigned char)(vlen >> 16);
	buf[5] = (unsigned char)(vlen >> 24);
	memcpy(buf + 6, key, klen);
	e->xoff[e->n_xattrs++] = e->xr_len;
	e->xr_len += 6 + klen + (size_t)vlen;
	return 0;
}

static int read_xattrs(struct strata_toc_build *bd, struct strata_jp *jp,
		       struct strata_toc_entry *e)
{
	enum strata_jp_tok t;
	int r;

	while ((t = strata_jp_next(jp)) == STRATA_JP_KEY) {
		const char *key = jp->str;
		size_t klen = jp->len;

		t = strata_jp_next(jp);
		if (t == STRATA_JP_ERROR)
			return json_err(bd, jp);
		if (t != STRATA_JP_STR)
			return field_err(bd, e, TE_XATTRS, "holds a value that "
					 "is not a string");
		r = add_xattr(e, key, klen, jp->str, jp->len);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			return field_err(bd, e, TE_XATTRS, "holds an invalid "
					 "extended attribute");
	}
	if (t == STRATA_JP_ERROR)
		return json_err(bd, jp);
	if (xattr_dups(e))
		return field_err(bd, e, TE_XATTRS, "names an extended "
				 "attribute twice");
	return 0;
}

/* The value of field @f, its key just read. */
static int read_field(struct strata_toc_build *bd, struct strata_jp *jp,
		      struct strata_toc_entry *e, int f)
{
	enum strata_jp_tok t = strata_jp_next(jp);

	if (t == STRATA_JP_ERROR)
		return json_err(bd, jp);
	if (e->seen & 1u << f)
		return field_err(bd, e, f, "comes twice");
	e->seen |= 1u << f;
	if (t == STRATA_JP_NULL)	/* as absent, as strata_json_* read it */
		return 0;
	e->set |= 1u << f;
	switch (fields[f].kind) {
	case F_STR:
		if (t != STRATA_JP_STR)
			return field_err(bd, e, f, "is not a string");
		if (strlen(jp->str) != jp->len)
			return field_err(bd, e, f, "holds a NUL byte");
		e->s[f] = jp->str;
		return 0;
	case F_INT:
		if (t != STRATA_JP_INT)
			return field_err(bd, e, f, "is not an integer");
		if (!jp->int_range || jp->i64 < 0 || jp->i64 > fields[f].max)
			return field_err(bd, e, f, "is out of range");
		e->n[f] = jp->i64;
		return 0;
	default:
		if (t != STRATA_JP_OBJ)
			return field_err(bd, e, f, "is not an object");
		return read_xattrs(bd, jp, e);
	}
}

/* Grow array *@p of *@cap elements of @size to hold @n + 1. */
static int grow(void *p, size_t *cap, size_t n, size_t size)
{
	void *q;
	size_t c;

	if (n < *cap)
		return 0;
	c = *cap ? *cap * 2 : 256;
	q = realloc(*(void **)p, c * size);
	if (!q)
		return -ENOMEM;
	*(void **)p = q;
	*cap = c;
	return 0;
}

/* One chunk of the file being added (its "reg" entry or a "chunk"
 * entry): it must start where the last one ended and lie inside the
 * file; its chunkDigest is kept for the fill. */
static int add_chunk(struct strata_toc_build *bd,
		     const struct strata_toc_entry *e)
{
	const char *name = e->s[TE_NAME];
	uint64_t uoff = TE_HAS(e, TE_CHUNK_OFFSET)
			? (uint64_t)e->n[TE_CHUNK_OFFSET] : 0;
	uint64_t size = TE_HAS(e, TE_CHUNK_SIZE)
			? (uint64_t)e->n[TE_CHUNK_SIZE] : 0;
	struct strata_lz_chunk *c;
	uint8_t sha[32];
	char why[160];

	if (!TE_HAS(e, TE_CHUNK_DIGEST) ||
	    strata_toc_sha256(e->s[TE_CHUNK_DIGEST], sha) < 0)
		return strata_toc_entry_err(bd, name, "chunkDigest is not a "
					    "sha256 digest");
	if (uoff != bd->chunk_end) {
		snprintf(why, sizeof(why), "chunk at offset %llu does not "
			 "start where the file's previous chunk ends (%llu)",
			 (unsigned long long)uoff,
			 (unsigned long long)bd->chunk_end);
		return strata_toc_entry_err(bd, name, why);
	}
	if (size == 0 && bd->chunk_rest && !TE_HAS(e, TE_CHUNK_SIZE))
		size = bd->reg_size - uoff;
	if (size == 0 || size > bd->reg_size - uoff) {
		snprintf(why, sizeof(why), "chunk at offset %llu of %llu "
			 "bytes runs past the file's %llu bytes (or is empty)",
			 (unsigned long long)uoff, (unsigned long long)size,
			 (unsigned long long)bd->reg_size);
		return strata_toc_entry_err(bd, name, why);
	}
	bd->chunk_end = uoff + size;
	if (bd->reg_rec == UINT32_MAX)
		return 0;	/* a file without content of its own */
	if (grow(&bd->chunks, &bd->cap_chunks, bd->n_chunks,
		 sizeof(*bd->chunks)) < 0)
		return -ENOMEM;
	c = &bd->chunks[bd->n_chunks++];
	memset(c, 0, sizeof(*c));
	c->rec = bd->reg_rec;
	c->uoff = uoff;
	c->size = size;
	memcpy(c->sha256, sha, 32);
	return 0;
}

/* A "chunk" entry: the next part of the chunked regular file before it
 * (where its bytes lie in the blob is the format's chunk() to check). */
static int chunk_entry(struct strata_toc_build *bd,
		       const struct strata_toc_entry *e)
{
	const char *name = e->s[TE_NAME];
	int r;

	if (!bd->reg_name || strcmp(name, bd->reg_name))
		return strata_toc_entry_err(bd, name, "chunk of no file before "
					    "it");
	if (!bd->chunked)
		return strata_toc_entry_err(bd, name, "chunk of a file whose "
					    "entry has no chunkSize and "
					    "chunkDigest");
	r = bd->chunk(bd, e);
	return r < 0 ? r : add_chunk(bd, e);
}

/* The end of a file's chunk list: do its chunks cover it? One chunk
 * that is the whole file with the file's digest is not kept: the fill
 * checks that digest anyway (most files: a third of a big TOC's chunk
 * table otherwise). */
static int end_chunks(struct strata_toc_build *bd)
{
	const struct strata_lz_chunk *c = bd->n_chunks
					  ? &bd->chunks[bd->n_chunks - 1] : NULL;
	char why[128];

	if (!bd->chunked || bd->chunk_end == bd->reg_size) {
		if (bd->chunked && c && c->rec == bd->reg_rec && c->uoff == 0 &&
		    c->size == bd->reg_size && !memcmp(c->sha256, bd->sha256, 32))
			bd->n_chunks--;
		bd->chunked = false;
		return 0;
	}
	snprintf(why, sizeof(why), "its chunks cover %llu of its %llu bytes",
		 (unsigned long long)bd->chunk_end,
		 (unsigned long long)bd->reg_size);
	return strata_toc_entry_err(bd, bd->reg_name, why);
}

static int add_entry(struct strata_toc_build *bd, struct strata_toc_entry *e)
{
	struct strata_tar_entry g;
	const char *type = e->s[TE_TYPE], *name = e->s[TE_NAME];
	uint64_t off = 0, end = 0;
	uint32_t data_id;
	int r;

	if (!(e->set & 1u << TE_TYPE) || !(e->set & 1u << TE_NAME))
		return strata_toc_entry_err(bd, name, !(e->set & 1u << TE_NAME) ?
				 "missing field \"name\"" :
				 "missing field \"type\"");
	if (!strcmp(type, "chunk"))
		return chunk_entry(bd, e);
	r = end_chunks(bd);
	if (r < 0)
		return r;
	bd->reg_name = NULL;
	memset(&g, 0, sizeof(g));
	g.type = type_flag(type);
	if (!g.type)
		return strata_toc_entry_err(bd, name, "unknown entry type");
	g.name = (char *)name;
	g.link = (char *)e->s[TE_LINK];
	if ((g.type == '1' || g.type == '2') && !g.link)
		return strata_toc_entry_err(bd, name, "link without a target");
	g.mode = e->n[TE_MODE];
	g.size = e->n[TE_SIZE];
	g.uid = e->n[TE_UID];
	g.gid = e->n[TE_GID];
	g.devmajor = e->n[TE_MAJOR];
	g.devminor = e->n[TE_MINOR];
	if (e->s[TE_MODTIME] &&
	    strata_rfc3339_parse(e->s[TE_MODTIME], &g.mtime_sec,
				 &g.mtime_nsec) < 0)
		return strata_toc_entry_err(bd, name, "modtime is not an RFC 3339 time");
	if (e->n_xattrs) {
		g.xattrs = e->xr;
		g.xattrs_len = e->xr_len;
	}
	if (g.type != '0')
		g.size = 0;
	if (g.type == '0' && g.size > 0) {
		if (!TE_HAS(e, TE_DIGEST) ||
		    strata_toc_sha256(e->s[TE_DIGEST], bd->sha256) < 0)
			return strata_toc_entry_err(bd, name, "no sha256 digest "
						    "of its content");
		r = bd->content(bd, e, (uint64_t)g.size, &off, &end);
		if (r < 0)
			return r;
		bd->total += (uint64_t)g.size;
		if (bd->total > bd->max_bytes)
			return strata_toc_entry_err(bd, name, "the layer's files "
						    "are larger than the limit "
						    "(decompression bomb?)");
		bd->reg_name = name;
		bd->reg_off = off;
		bd->reg_end = end;
	}
	if (bd->meta_only) {	/* strata_toc_metas(): nothing built */
		if (grow(&bd->metas, &bd->cap_metas, bd->n_metas,
			 sizeof(*bd->metas)) < 0 ||
		    strata_lz_meta_of(&g, &bd->metas[bd->n_metas++]) < 0)
			return -ENOMEM;
		data_id = 0;
	} else {
		r = strata_lxbuild_add(bd->b, &g, &data_id);
		if (r < 0)
			return r;
	}
	if (data_id && data_id != bd->n_recs + 1)
		return -EINVAL;	/* content numbers are given in order */
	if (data_id) {
		r = add_rec(bd, off, end, (uint64_t)g.size);
		if (r < 0)
			return r;
	}
	bd->reg_rec = data_id ? data_id - 1 : UINT32_MAX;
	if (!TE_HAS(e, TE_CHUNK_SIZE) && !TE_HAS(e, TE_CHUNK_DIGEST))
		return 0;
	/* a chunked file: this entry names its first chunk */
	if (g.type != '0' || g.size == 0)
		return strata_toc_entry_err(bd, name, "chunk list on an entry "
					    "that is not a non-empty regular "
					    "file");
	bd->chunked = true;
	bd->reg_size = (uint64_t)g.size;
	bd->chunk_end = 0;
	return add_chunk(bd, e);
}

/* One element of "entries", its first token @t read. */
static int read_entry(struct strata_toc_build *bd, struct strata_jp *jp,
		      enum strata_jp_tok t, struct strata_toc_entry *e)
{
	int r, f;

	if (t != STRATA_JP_OBJ)
		return strata_toc_entry_err(bd, NULL, "not an object");
	e->seen = e->set = 0;
	memset(e->s, 0, sizeof(e->s));
	memset(e->n, 0, sizeof(e->n));
	e->xr_len = e->n_xattrs = 0;
	while ((t = strata_jp_next(jp)) == STRATA_JP_KEY) {
		f = find_field(jp->str, jp->len);
		if (f < 0) {
			if (strata_jp_skip(jp, strata_jp_next(jp)) < 0)
				return json_err(bd, jp);
			continue;
		}
		r = read_field(bd, jp, e, f);
		if (r < 0)
			return r;
	}
	if (t == STRATA_JP_ERROR)
		return json_err(bd, jp);
	return add_entry(bd, e);
}

/* The document: {"version": 1, "entries": [...], ...}. A version after
 * the entries is checked once they are read. */
static int read_doc(struct strata_toc_build *bd, struct strata_jp *jp, int64_t *version)
{
	struct strata_toc_entry e = { 0 };
	enum strata_jp_tok t;
	bool have_entries = false, have_version = false;
	int r = 0;

	t = strata_jp_next(jp);
	if (t == STRATA_JP_ERROR)
		return json_err(bd, jp);
	if (t != STRATA_JP_OBJ)
		return strata_err_set(bd->err, -EBADMSG, "layer %s: %s table "
				      "of contents is not an object", bd->sd,
				      bd->format);
	while (r == 0 && (t = strata_jp_next(jp)) == STRATA_JP_KEY) {
		bool is_v = !strcmp(jp->str, "version") && jp->len == 7;
		bool is_e = !strcmp(jp->str, "entries") && jp->len == 7;

		if ((is_v && have_version) || (is_e && have_entries)) {
			r = strata_err_set(bd->err, -EBADMSG, "layer %s: table "
					   "of contents: field \"%s\" comes "
					   "twice", bd->sd, jp->str);
			break;
		}
		t = strata_jp_next(jp);
		if (t == STRATA_JP_ERROR)
			break;
		if (is_v) {
			have_version = t != STRATA_JP_NULL;
			if (t == STRATA_JP_INT && jp->int_range &&
			    jp->i64 >= 0)
				*version = jp->i64;
			else if (have_version)
				r = strata_err_set(bd->err, -EBADMSG, "layer "
						   "%s: table of contents: "
						   "field \"version\" is not "
						   "a version number", bd->sd);
		} else if (is_e) {
			have_entries = t != STRATA_JP_NULL;
			if (have_entries && t != STRATA_JP_ARR)
				r = strata_err_set(bd->err, -EBADMSG, "layer "
						   "%s: table of contents: "
						   "field \"entries\" is not "
						   "an array", bd->sd);
			while (r == 0 && have_entries &&
			       (t = strata_jp_next(jp)) != STRATA_JP_ARR_END &&
			       t != STRATA_JP_ERROR)
				r = read_entry(bd, jp, t, &e);
		} else if (strata_jp_skip(jp, t) < 0) {
			t = STRATA_JP_ERROR;
		}
		if (t == STRATA_JP_ERROR)
			break;
	}
	free(e.xr);
	free(e.xoff);
	if (r < 0)
		return r;
	if (t == STRATA_JP_ERROR || strata_jp_next(jp) != STRATA_JP_END)
		return json_err(bd, jp);
	if (!have_version || !have_entries)
		return strata_err_set(bd->err, -EBADMSG, "layer %s: table of "
				      "contents: missing field \"%s\"", bd->sd,
				      have_version ? "entries" : "version");
	return 0;
}

static int write_contents(struct strata_toc_build *bd, int dest_fd)
{
	struct strata_lz_header h;
	cleanup_fd int fd = -1;
	size_t rb = bd->n_recs * sizeof(*bd->recs);
	int r;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, STRATA_LZ_MAGIC, 8);
	h.n = (uint32_t)bd->n_recs;
	h.prefetch = bd->prefetch;
	h.names_off = sizeof(h) + rb;	/* no names: lazy.c's path_of() */
	h.file_size = h.names_off;
	fd = openat(dest_fd, "contents", O_WRONLY | O_CREAT | O_TRUNC |
		    O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if ((r = strata_write_all(fd, &h, sizeof(h))) < 0 ||
	    (r = strata_write_all(fd, bd->recs ? (void *)bd->recs : "", rb)) < 0)
		return r;
	return 0;	/* not synced: lazy.c sums the entry */
}

/* "chunks" or "meta": a header and @n records of @size (not synced:
 * lazy.c sums the entry) */
static int write_table(int dest_fd, const char *name, const char *magic,
		       const void *recs, size_t n, size_t size)
{
	struct strata_lz_tab h;
	cleanup_fd int fd = -1;
	int r;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, magic, 8);
	h.n = n;
	fd = openat(dest_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0644);
	if (fd < 0)
		return -errno;
	if ((r = strata_write_all(fd, &h, sizeof(h))) < 0 ||
	    (r = strata_write_all(fd, recs ? recs : "", n * size)) < 0)
		return r;
	return 0;
}

int strata_toc_read(struct strata_toc_build *bd, char *json, size_t len,
		    const char *digest, uint64_t max_entries, int dest_fd)
{
	struct strata_jp jp;
	int64_t version = -1;
	uint64_t expect;
	int r;

	strata_jp_init(&jp, json, len);
	/* skopeo's TOCs take 300-450 bytes an entry, a tenth of them the
	 * name: the tables sized once, not regrown and copied (pages not
	 * written are never faulted in) */
	expect = len / 320 < max_entries ? len / 320 : max_entries;
	if (!bd->recs) {
		bd->recs = malloc((expect + 1) * sizeof(*bd->recs));
		if (!bd->recs)
			return -ENOMEM;
		bd->cap_recs = expect + 1;
		strata_prefault(bd->recs, bd->cap_recs * sizeof(*bd->recs));
	}
	if (!bd->chunks) {	/* as the records, once */
		bd->chunks = malloc((expect + 1) * sizeof(*bd->chunks));
		if (bd->chunks) {
			bd->cap_chunks = expect + 1;
			strata_huge_hint(bd->chunks, bd->cap_chunks *
					 sizeof(*bd->chunks));
		}
	}
	bd->reg_rec = UINT32_MAX;
	r = strata_lxbuild_new(digest, max_entries, expect, bd->err, &bd->b);
	if (r == 0)
		r = read_doc(bd, &jp, &version);
	if (r == 0)
		r = end_chunks(bd);
	if (r == 0 && version != 1) {
		strata_warn("layer %s: %s table of contents version %lld is "
			    "unknown: unpacking the layer in full", bd->sd,
			    bd->format, (long long)version);
		r = -EOPNOTSUPP;
	}
	if (r == 0 && bd->finish)
		r = bd->finish(bd);
	if (r == 0)
		r = strata_lxbuild_finish(bd->b, dest_fd);
	if (r == 0 && mkdirat(dest_fd, "data", 0755) < 0)
		r = -errno;
	if (r == 0)
		r = write_table(dest_fd, "chunks", STRATA_LZC_MAGIC, bd->chunks,
				bd->n_chunks, sizeof(*bd->chunks));
	if (r == 0)
		r = write_contents(bd, dest_fd);
	if (r < 0 && !strata_err_isset(bd->err))
		strata_err_set(bd->err, r, "layer %s: table of contents: %s",
			       bd->sd, strerror(-r));
	strata_lxbuild_free(bd->b);
	bd->b = NULL;
	free(bd->recs);
	free(bd->chunks);
	bd->recs = NULL;
	bd->chunks = NULL;
	return r;
}

int strata_toc_metas(struct strata_toc_build *bd, char *json, size_t len,
		     struct strata_lz_meta **metas, size_t *n)
{
	struct strata_jp jp;
	int64_t version = -1;
	int r;

	strata_jp_init(&jp, json, len);
	bd->meta_only = true;
	bd->reg_rec = UINT32_MAX;
	bd->cap_metas = len / 320 + 1;
	bd->metas = malloc(bd->cap_metas * sizeof(*bd->metas));
	if (!bd->metas)
		return -ENOMEM;
	r = read_doc(bd, &jp, &version);
	if (r == 0)
		r = end_chunks(bd);
	if (r == 0 && version != 1)
		r = strata_err_set(bd->err, -EBADMSG, "layer %s: table of "
				   "contents version %lld", bd->sd,
				   (long long)version);
	free(bd->chunks);
	bd->chunks = NULL;
	if (r < 0) {
		free(bd->metas);
		bd->metas = NULL;
		return r;
	}
	*metas = bd->metas;
	*n = bd->n_metas;
	bd->metas = NULL;
	return 0;
}
