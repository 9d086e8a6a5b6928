/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access points into gzip and zstd layer blobs ("zran", after zlib's
 * examples/zran.c, whose technique this is).
 *
 * A gzip stream can only be decoded from its start: each deflate block
 * refers to up to 32 KiB of the output before it. But at a block boundary
 * the whole state of the decoder is (a) the position in the compressed
 * stream, down to the bit (blocks are not byte-aligned), and (b) the last
 * 32 KiB of output. Recording both every SPAN bytes of output gives access
 * points: to read at any offset, start at the point at or below it
 * (inflatePrime() feeds the 0-7 bits of the byte before the point,
 * inflateSetDictionary() the window), decompress forward and keep what
 * was asked for. A point right after a member's gzip header needs no
 * window (the window starts empty there). Reading across a member end
 * skips the 8-byte trailer and decodes the next member's header.
 *
 * zstd frames are independent: a frame start is an access point with no
 * state at all. But `zstd` and skopeo write one frame for a whole layer,
 * which gives a single point at offset 0: a read then decompresses
 * everything before it (zstd decodes about 3 times as fast as inflate, which
 * helps, but a read near the end of a 1 GiB layer costs the whole layer:
 * on the bench image's largest layer, 475 MiB of tar, a random 4 KiB read
 * takes 246 ms median as one frame and 1.5 ms as frames of 4 MiB).
 * A zstd block cannot be resumed from the public API (its state holds
 * entropy tables and repeat offsets besides the window), so a single
 * frame stays serial; zstd:chunked (one frame per file) is the answer for
 * zstd, and it has its own table of contents.
 *
 * The points are recorded during the pass that reads the layer anyway
 * (unpack.c's gzip decoder, gzdec.c, calls strata_zran_inflate() in place
 * of inflate(), or with ISA-L strata_zran_gzip_point(); unpack.c calls
 * strata_zran_zstd_frame() at each frame end), never in a second pass:
 * inflate is asked to stop at block boundaries (Z_BLOCK) and, where a
 * point is due, inflateGetDictionary() copies zlib's own window, so
 * recording costs nothing but the copies of the windows (ISA-L: gzdec.c
 * says how it finds a boundary, and checks each point with zlib).
 *
 * On disk (little-endian; written atomically beside the cached layer):
 *
 *   0    8  magic "STRATAZR"
 *   8    4  version (1)
 *   12   4  kind: 1 gzip, 2 zstd
 *   16   8  span the points were recorded with
 *   24   8  blob size (compressed)
 *   32   8  uncompressed size
 *   40   8  number of points (>= 1)
 *   48   8  bytes of the window area
 *   56   4  flags: bit 0 windows are raw deflate streams (else raw bytes)
 *   60   4  zero
 *   64 144  the blob's digest, "sha256:<hex>", NUL-padded
 *   208     points, 32 bytes each, ascending:
 *             8 compressed offset of the first whole byte after the point
 *             8 uncompressed offset (the first point's is 0)
 *             8 offset of its window in the window area
 *             4 stored window bytes
 *             2 window bytes once inflated (<= 32768; 0 at a member or
 *               frame start)
 *             1 bits of the byte before the compressed offset that belong
 *               to the point's block (0-7; always 0 for zstd)
 *             1 zero
 *           the window area
 *   end-64  sha256 of everything before it, 64 lower-case hex digits
 *
 * The file is untrusted on load: the checksum is checked, then every count
 * and offset (points ascending, inside the blob and the stream, windows
 * inside the area and no longer than the output before them); a window
 * that does not inflate to its length fails the read that needs it.
 *
 * Windows are stored deflated (level 1, ISA-L's where strata has it, else
 * zlib's): on the bench image's layers that
 * makes the index 2.4 times smaller (3.3 against 7.9 MiB per GiB of tar at
 * a 4 MiB span) for about 0.3 ms of CPU per point when recording; a read
 * inflates one window, 32 KiB, next to the megabytes it inflates anyway.
 *
 * Spacing: STRATA_ZRAN_SPAN, 4 MiB of uncompressed output, chosen by
 * tests/bench/zran.py on the bench image (4 gzip layers, 1.2 GiB of tar;
 * CPU time; table in tests/bench/README.md):
 *
 *   span    index/GiB   pass*  4 KiB read median/p99   small file median
 *   1 MiB   13.5 MiB    +13%   1.3 / 5.4 ms            1.4 ms
 *   2 MiB    6.7 MiB    +16%   2.5 / 14 ms             2.7 ms
 *   4 MiB    3.3 MiB     +4%   5.0 / 23 ms             5.0 ms
 *   8 MiB    1.6 MiB     +5%   10 / 38 ms              8.7 ms
 *   16 MiB   0.8 MiB      0%   21 / 76 ms              19 ms
 *   (* extra CPU over the same pass with plain inflate(), +-10% noise)
 *
 * A read costs half a span of inflate on average, so latency follows the
 * span; the pass pays for each point's window (deflating it), which is
 * noise from 4 MiB up. The metadata pass is what stands between the
 * mount command and a live mount, while a read from a point only serves
 * a file the background fill has not reached yet: 4 MiB keeps the pass
 * within a few per cent (strata_unpack_layer() 1.03 times as long) and
 * such a read at 5 ms, with an index of a third of a per cent of the
 * layer. SOCI's default span is also 4 MiB (and it skips layers under
 * 10 MiB), eStargz's default chunk (one gzip member each) 4 MiB; nydus's
 * zran mode starts a new context every 1-2 MiB. The span is recorded in
 * each index, so it can change without a new format.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "config.h"
#include "zran.h"

#ifdef STRATA_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#define WINSIZE 32768u
#define MAGIC "STRATAZR"
#define VERSION 1
#define HDR_SIZE 208
#define DIGEST_FIELD 144
#define POINT_SIZE 32
#define SUM_SIZE 64
#define FLAG_DEFLATED 1u
#define IN_BUF (64u << 10)
#define SKIP_BUF (32u << 10)

struct point {
	uint64_t coff, uoff, woff;
	uint32_t wclen;
	uint16_t wlen;
	uint8_t bits;
};

struct strata_zran {
	int kind;
	bool deflated;
	uint64_t span, csize, usize;
	size_t n;
	struct point *pts;
	unsigned char *win;
	size_t win_len;
	char digest[DIGEST_FIELD];
};

struct strata_zran_builder {
	struct strata_zran z;
	size_t pts_cap, win_cap;
	z_stream def;
	bool def_ready;
	unsigned char dict[WINSIZE];
#ifdef STRATA_HAVE_ISAL
	struct isal_zstream *isal;	/* deflates windows where it can */
	unsigned char *isal_level_buf;
#endif
};

/* ---- little-endian fields ---- */

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* ---- recording ---- */

int strata_zran_builder_new(uint64_t span, bool deflate_windows,
			    struct strata_zran_builder **out)
{
	struct strata_zran_builder *b;

	if (span == 0)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->z.span = span;
	b->z.deflated = deflate_windows;
	*out = b;
	return 0;
}

void strata_zran_builder_free(struct strata_zran_builder *b)
{
	if (!b)
		return;
	if (b->def_ready)
		deflateEnd(&b->def);
#ifdef STRATA_HAVE_ISAL
	free(b->isal);
	free(b->isal_level_buf);
#endif
	free(b->z.pts);
	free(b->z.win);
	free(b);
}

static int set_kind(struct strata_zran_builder *b, int kind)
{
	if (b->z.kind && b->z.kind != kind)
		return -EINVAL;
	b->z.kind = kind;
	return 0;
}

static bool point_due(const struct strata_zran_builder *b, uint64_t uoff)
{
	return b->z.n == 0 || uoff - b->z.pts[b->z.n - 1].uoff >= b->z.span;
}

static struct point *new_point(struct strata_zran_builder *b)
{
	if (b->z.n == b->pts_cap) {
		size_t cap = b->pts_cap ? b->pts_cap * 2 : 64;
		struct point *p = realloc(b->z.pts, cap * sizeof(*p));

		if (!p)
			return NULL;
		b->z.pts = p;
		b->pts_cap = cap;
	}
	memset(&b->z.pts[b->z.n], 0, sizeof(struct point));
	return &b->z.pts[b->z.n];
}

static int win_reserve(struct strata_zran_builder *b, size_t more)
{
	size_t cap = b->win_cap ? b->win_cap : 256u << 10;
	unsigned char *w;

	if (b->z.win_len + more <= b->win_cap)
		return 0;
	while (cap < b->z.win_len + more)
		cap *= 2;
	w = realloc(b->z.win, cap);
	if (!w)
		return -ENOMEM;
	b->z.win = w;
	b->win_cap = cap;
	return 0;
}

#ifdef STRATA_HAVE_ISAL
/* Deflate a window with ISA-L (level 1, raw deflate, read back by zlib
 * like zlib's own): on the bench image about four times as fast as
 * zlib's level 1 (0.09 against 0.37 ms a window), for the same size
 * within 1%. -ENOSPC when it does not fit the bound (zlib
 * then does it), -ENOMEM. */
static int isal_window(struct strata_zran_builder *b, struct point *p,
		       const unsigned char *w, size_t len)
{
	struct isal_zstream *s;
	size_t bound = len + len / 8 + 1024;

	if (!b->isal) {
		b->isal = malloc(sizeof(*b->isal));
		b->isal_level_buf = malloc(ISAL_DEF_LVL1_DEFAULT);
		if (!b->isal || !b->isal_level_buf)
			return -ENOMEM;
	}
	if (win_reserve(b, bound) < 0)
		return -ENOMEM;
	s = b->isal;
	isal_deflate_stateless_init(s);
	s->level = 1;
	s->level_buf = b->isal_level_buf;
	s->level_buf_size = ISAL_DEF_LVL1_DEFAULT;
	s->next_in = (uint8_t *)w;
	s->avail_in = (uint32_t)len;
	s->next_out = b->z.win + b->z.win_len;
	s->avail_out = (uint32_t)bound;
	if (isal_deflate_stateless(s) != COMP_OK)
		return -ENOSPC;
	p->wclen = (uint32_t)(bound - s->avail_out);
	b->z.win_len += p->wclen;
	return 0;
}
#endif

/* Store @len bytes of window for point @p, deflated or raw. */
static int store_window(struct strata_zran_builder *b, struct point *p,
			const unsigned char *w, size_t len)
{
	size_t bound;

	p->woff = b->z.win_len;
	p->wlen = (uint16_t)len;
	if (!len)
		return 0;
	if (!b->z.deflated) {
		if (win_reserve(b, len) < 0)
			return -ENOMEM;
		memcpy(b->z.win + b->z.win_len, w, len);
		p->wclen = (uint32_t)len;
		b->z.win_len += len;
		return 0;
	}
#ifdef STRATA_HAVE_ISAL
	if (isal_window(b, p, w, len) == 0)
		return 0;
#endif
	if (!b->def_ready) {
		if (deflateInit2(&b->def, 1, Z_DEFLATED, -MAX_WBITS, 8,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		b->def_ready = true;
	} else if (deflateReset(&b->def) != Z_OK) {
		return -ENOMEM;
	}
	bound = deflateBound(&b->def, (uLong)len);
	if (win_reserve(b, bound) < 0)
		return -ENOMEM;
	b->def.next_in = (unsigned char *)w;
	b->def.avail_in = (uInt)len;
	b->def.next_out = b->z.win + b->z.win_len;
	b->def.avail_out = (uInt)bound;
	if (deflate(&b->def, Z_FINISH) != Z_STREAM_END)
		return -ENOMEM;
	p->wclen = (uint32_t)(bound - b->def.avail_out);
	b->z.win_len += p->wclen;
	return 0;
}

static int add_gzip_point(struct strata_zran_builder *b, z_stream *z,
			  uint64_t coff, uint64_t uoff)
{
	struct point *p = new_point(b);
	uInt len = 0;

	if (!p)
		return -ENOMEM;
	if (inflateGetDictionary(z, b->dict, &len) != Z_OK || len > WINSIZE)
		return -EINVAL;
	p->coff = coff;
	p->uoff = uoff;
	p->bits = (uint8_t)(z->data_type & 7);
	if (store_window(b, p, b->dict, len) < 0)
		return -ENOMEM;
	b->z.n++;
	return 0;
}

uint64_t strata_zran_next_due(const struct strata_zran_builder *b)
{
	return b->z.n == 0 ? 0 : b->z.pts[b->z.n - 1].uoff + b->z.span;
}

bool strata_zran_point_due(const struct strata_zran_builder *b,
			   uint64_t uoff)
{
	return point_due(b, uoff);
}

int strata_zran_gzip_point(struct strata_zran_builder *b, uint64_t bit,
			   uint64_t uoff, const unsigned char *win,
			   size_t wlen)
{
	struct point *p;
	int r = set_kind(b, STRATA_ZRAN_GZIP);

	if (r < 0)
		return r;
	if (wlen > WINSIZE || wlen > uoff ||
	    (b->z.n && b->z.pts[b->z.n - 1].uoff >= uoff && uoff))
		return -EINVAL;
	p = new_point(b);
	if (!p)
		return -ENOMEM;
	/* the whole bytes start after the bit's byte; its high bits are
	 * the point's */
	p->coff = (bit + 7) / 8;
	p->bits = (uint8_t)((8 - bit % 8) % 8);
	p->uoff = uoff;
	if (store_window(b, p, win, wlen) < 0)
		return -ENOMEM;
	b->z.n++;
	return 0;
}

int strata_zran_inflate(struct strata_zran_builder *b, z_stream *z,
			uint64_t coff, uint64_t uoff, int *zret)
{
	const unsigned char *in0 = z->next_in;
	const unsigned char *out0 = z->next_out;
	int r = set_kind(b, STRATA_ZRAN_GZIP);

	if (r < 0)
		return r;
	for (;;) {
		int zr = inflate(z, Z_BLOCK);
		uint64_t u;

		*zret = zr;
		if (zr != Z_OK)
			return 0;
		/* 128: stopped at a block boundary (or after a header);
		 * 64: that was the last block, a trailer follows */
		if ((z->data_type & 128) && !(z->data_type & 64)) {
			u = uoff + (uint64_t)(z->next_out - out0);
			if (point_due(b, u)) {
				r = add_gzip_point(b, z, coff + (uint64_t)
						   (z->next_in - in0), u);
				if (r < 0)
					return r;
			}
		}
		if (z->avail_in == 0 || z->avail_out == 0)
			return 0;
	}
}

int strata_zran_zstd_frame(struct strata_zran_builder *b, uint64_t coff,
			   uint64_t uoff)
{
	struct point *p;
	int r = set_kind(b, STRATA_ZRAN_ZSTD);

	if (r < 0)
		return r;
	if (b->z.n == 0) {	/* the first frame starts the blob */
		p = new_point(b);
		if (!p)
			return -ENOMEM;
		b->z.n++;
	}
	if (!point_due(b, uoff))
		return 0;
	p = new_point(b);
	if (!p)
		return -ENOMEM;
	p->coff = coff;
	p->uoff = uoff;
	b->z.n++;
	return 0;
}

int strata_zran_builder_finish(struct strata_zran_builder *b, uint64_t csize,
			       uint64_t usize, struct strata_zran **out)
{
	struct strata_zran *z;
	size_t i;

	if (!b->z.kind)
		return -EOPNOTSUPP;
	if (b->z.kind == STRATA_ZRAN_ZSTD && b->z.n == 0 &&
	    strata_zran_zstd_frame(b, 0, 0) < 0)
		return -ENOMEM;
	/* points where the stream ends (after a last frame, before an
	 * empty last member) lead nowhere */
	while (b->z.n > 1 && b->z.pts[b->z.n - 1].uoff >= usize)
		b->z.n--;
	for (i = 0; i < b->z.n; i++)
		if (b->z.pts[i].coff > csize ||
		    (i > 0 && b->z.pts[i].uoff >= usize))
			return -EINVAL;
	if (b->z.n == 0 || b->z.pts[0].uoff != 0)
		return -EINVAL;
	z = malloc(sizeof(*z));
	if (!z)
		return -ENOMEM;
	*z = b->z;
	z->csize = csize;
	z->usize = usize;
	memset(&b->z, 0, sizeof(b->z));
	b->pts_cap = b->win_cap = 0;
	*out = z;
	return 0;
}

void strata_zran_free(struct strata_zran *z)
{
	if (!z)
		return;
	free(z->pts);
	free(z->win);
	free(z);
}

void strata_zran_info(const struct strata_zran *z,
		      struct strata_zran_info *info)
{
	info->kind = z->kind;
	info->span = z->span;
	info->csize = z->csize;
	info->usize = z->usize;
	info->n_points = z->n;
	info->window_bytes = z->win_len;
	info->deflated_windows = z->deflated;
	info->blob_digest = z->digest;
}

/* ---- the file ---- */

int strata_zran_write(const struct strata_zran *z, const char *blob_digest,
		      int dirfd, const char *name)
{
	size_t dlen = strlen(blob_digest);
	size_t len = HDR_SIZE + z->n * POINT_SIZE + z->win_len + SUM_SIZE;
	cleanup_free unsigned char *buf = NULL;
	char sum[STRATA_DIGEST_MAX];
	unsigned char *p;
	size_t i;

	if (dlen >= DIGEST_FIELD)
		return -EINVAL;
	buf = calloc(1, len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, MAGIC, 8);
	put32(buf + 8, VERSION);
	put32(buf + 12, (uint32_t)z->kind);
	put64(buf + 16, z->span);
	put64(buf + 24, z->csize);
	put64(buf + 32, z->usize);
	put64(buf + 40, z->n);
	put64(buf + 48, z->win_len);
	put32(buf + 56, z->deflated ? FLAG_DEFLATED : 0);
	memcpy(buf + 64, blob_digest, dlen);
	p = buf + HDR_SIZE;
	for (i = 0; i < z->n; i++, p += POINT_SIZE) {
		const struct point *pt = &z->pts[i];

		put64(p, pt->coff);
		put64(p + 8, pt->uoff);
		put64(p + 16, pt->woff);
		put32(p + 24, pt->wclen);
		p[28] = (unsigned char)pt->wlen;
		p[29] = (unsigned char)(pt->wlen >> 8);
		p[30] = pt->bits;
	}
	if (z->win_len)
		memcpy(p, z->win, z->win_len);
	p += z->win_len;
	strata_sha256(buf, len - SUM_SIZE, sum);
	memcpy(p, sum + strlen("sha256:"), SUM_SIZE);
	return strata_write_atomic(dirfd, name, buf, len, 0644);
}

#define BAD(...) strata_err_set(err, -EBADMSG, __VA_ARGS__)

/* Check point @i (@p, the raw record) against the header and the points
 * before it; fill @pt. */
static int parse_point(const struct strata_zran *z, size_t i,
		       const unsigned char *p, struct point *pt,
		       const char *what, struct strata_err *err)
{
	pt->coff = get64(p);
	pt->uoff = get64(p + 8);
	pt->woff = get64(p + 16);
	pt->wclen = get32(p + 24);
	pt->wlen = (uint16_t)(p[28] | p[29] << 8);
	pt->bits = p[30];
	if (p[31] || pt->bits > 7 || (pt->bits && pt->coff == 0))
		return BAD("%s: point %zu: bad bit offset", what, i);
	if (i == 0 ? pt->uoff != 0
		   : pt->uoff <= z->pts[i - 1].uoff || pt->coff < z->pts[i - 1].coff)
		return BAD("%s: point %zu: points out of order", what, i);
	if ((i > 0 && pt->uoff >= z->usize) || pt->coff > z->csize)
		return BAD("%s: point %zu: beyond the end of the blob", what, i);
	if (pt->wlen > WINSIZE || pt->wlen > pt->uoff ||
	    (z->kind == STRATA_ZRAN_ZSTD && (pt->wlen || pt->wclen || pt->bits)) ||
	    (!z->deflated && pt->wclen != pt->wlen) ||
	    (pt->wlen == 0) != (pt->wclen == 0) ||
	    pt->woff > z->win_len || pt->wclen > z->win_len - pt->woff)
		return BAD("%s: point %zu: bad window", what, i);
	return 0;
}

int strata_zran_parse(const void *data, size_t len, const char *blob_digest,
		      const char *what, struct strata_zran **out,
		      struct strata_err *err)
{
	const unsigned char *buf = data;
	cleanup_(strata_zran_freep) struct strata_zran *z = NULL;
	char sum[STRATA_DIGEST_MAX];
	uint64_t n, wlen;
	uint32_t version, flags;
	size_t i;
	int r;

	if (len < HDR_SIZE + SUM_SIZE || memcmp(buf, MAGIC, 8))
		return BAD("%s: not a strata access point index", what);
	version = get32(buf + 8);
	if (version != VERSION)
		return strata_err_set(err, -EOPNOTSUPP, "%s: index format "
				      "version %u (this strata reads %u)",
				      what, version, VERSION);
	strata_sha256(buf, len - SUM_SIZE, sum);
	if (memcmp(buf + len - SUM_SIZE, sum + strlen("sha256:"), SUM_SIZE))
		return BAD("%s: checksum mismatch (damaged or truncated)", what);
	z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->kind = (int)get32(buf + 12);
	z->span = get64(buf + 16);
	z->csize = get64(buf + 24);
	z->usize = get64(buf + 32);
	n = get64(buf + 40);
	wlen = get64(buf + 48);
	flags = get32(buf + 56);
	if ((z->kind != STRATA_ZRAN_GZIP && z->kind != STRATA_ZRAN_ZSTD) ||
	    (flags & ~FLAG_DEFLATED) || get32(buf + 60) || z->span == 0)
		return BAD("%s: bad header", what);
	z->deflated = flags & FLAG_DEFLATED;
	if (n == 0 || n > (len - HDR_SIZE - SUM_SIZE) / POINT_SIZE ||
	    wlen != len - HDR_SIZE - SUM_SIZE - n * POINT_SIZE)
		return BAD("%s: sizes do not match the file", what);
	if (!memchr(buf + 64, '\0', DIGEST_FIELD))
		return BAD("%s: bad header", what);
	memcpy(z->digest, buf + 64, DIGEST_FIELD);
	if (blob_digest && strcmp(z->digest, blob_digest))
		return BAD("%s: index of blob %s, not of %s", what, z->digest,
			   blob_digest);
	z->win_len = (size_t)wlen;
	z->pts = malloc((size_t)n * sizeof(*z->pts));
	z->win = malloc(z->win_len ? z->win_len : 1);
	if (!z->pts || !z->win)
		return -ENOMEM;
	memcpy(z->win, buf + HDR_SIZE + n * POINT_SIZE, z->win_len);
	for (i = 0; i < n; i++) {
		r = parse_point(z, i, buf + HDR_SIZE + i * POINT_SIZE,
				&z->pts[i], what, err);
		if (r < 0)
			return r;
		z->n = i + 1;
	}
	*out = take_ptr(&z);
	return 0;
}

int strata_zran_load(int dirfd, const char *name, const char *blob_digest,
		     struct strata_zran **out, struct strata_err *err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	int r;

	r = strata_read_file(dirfd, name, STRATA_ZRAN_FILE_MAX, &buf, &len);
	if (r < 0)
		return strata_err_set(err, r, "%s: %s", name,
				      r == -EFBIG ? "index file too large"
						  : strerror(-r));
	return strata_zran_parse(buf, len, blob_digest, name, out, err);
}

/* ---- reading ---- */

/* The last point at or below @uoff. */
static const struct point *find_point(const struct strata_zran *z,
				      uint64_t uoff)
{
	size_t lo = 0, hi = z->n;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (z->pts[mid].uoff <= uoff)
			lo = mid;
		else
			hi = mid;
	}
	return &z->pts[lo];
}

int strata_zran_locate(const struct strata_zran *z, uint64_t uoff,
		       size_t len, uint64_t *cstart, uint64_t *cend)
{
	const struct point *p;
	size_t i;

	if (uoff > z->usize || len > z->usize - uoff)
		return -EINVAL;
	p = find_point(z, uoff);
	*cstart = p->coff - (p->bits ? 1 : 0);
	*cend = z->csize;
	for (i = (size_t)(p - z->pts) + 1; i < z->n; i++)
		if (z->pts[i].uoff >= uoff + len) {
			*cend = z->pts[i].coff;
			break;
		}
	return 0;
}

static ssize_t src_read(const struct strata_zran_src *s, void *buf,
			size_t len, uint64_t off)
{
	ssize_t n;

	if (s->pread)
		return s->pread(s->ctx, buf, len, off);
	do {
		n = pread(s->fd, buf, len, (off_t)(s->base + off));
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* The compressed input of one read: refilled from the source, with
 * @skip bytes (a gzip trailer) to pass over first. */
struct input {
	const struct strata_zran *z;
	const struct strata_zran_src *src;
	unsigned char *buf;
	const unsigned char *next;
	size_t avail;
	uint64_t cpos;	/* blob offset of the next byte to read */
	size_t skip;
};

/* Return: 0 with input available, -EBADMSG at the end of the blob. */
static int refill(struct input *in)
{
	for (;;) {
		ssize_t n;

		if (in->avail && in->skip) {
			size_t k = in->avail < in->skip ? in->avail : in->skip;

			in->next += k;
			in->avail -= k;
			in->skip -= k;
		}
		if (in->avail)
			return 0;
		if (in->cpos >= in->z->csize)
			return -EBADMSG;
		n = src_read(in->src, in->buf, (size_t)(in->z->csize - in->cpos) <
			     IN_BUF ? (size_t)(in->z->csize - in->cpos) : IN_BUF,
			     in->cpos);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EBADMSG;
		in->cpos += (uint64_t)n;
		in->next = in->buf;
		in->avail = (size_t)n;
	}
}

/* Where decompressed bytes go: first @skip of them into a scratch buffer,
 * then @len into @buf. */
struct output {
	unsigned char *scratch;
	uint64_t skip;
	unsigned char *buf;
	size_t len, got;
};

static unsigned char *out_next(struct output *o, size_t *room)
{
	if (o->skip) {
		*room = o->skip < SKIP_BUF ? (size_t)o->skip : SKIP_BUF;
		return o->scratch;
	}
	*room = o->len - o->got;
	if (*room > UINT32_MAX)
		*room = UINT32_MAX;
	return o->buf + o->got;
}

static void out_advance(struct output *o, size_t n)
{
	if (o->skip)
		o->skip -= n;
	else
		o->got += n;
}

static int inflate_window(const struct strata_zran *z, const struct point *p,
			  unsigned char *win)
{
	z_stream s = { 0 };
	int zr;

	if (!z->deflated) {
		memcpy(win, z->win + p->woff, p->wlen);
		return 0;
	}
	if (inflateInit2(&s, -MAX_WBITS) != Z_OK)
		return -ENOMEM;
	s.next_in = z->win + p->woff;
	s.avail_in = p->wclen;
	s.next_out = win;
	s.avail_out = WINSIZE;
	zr = inflate(&s, Z_FINISH);
	inflateEnd(&s);
	if (zr != Z_STREAM_END || s.total_out != p->wlen)
		return -EBADMSG;
	return 0;
}

static int read_gzip(const struct strata_zran *z, const struct point *p,
		     struct input *in, struct output *o)
{
	cleanup_free unsigned char *win = malloc(WINSIZE);
	z_stream s = { 0 };
	bool raw = true;
	int r = 0, zr;

	if (!win)
		return -ENOMEM;
	if (inflateInit2(&s, -MAX_WBITS) != Z_OK)
		return -ENOMEM;
	if (p->bits) {
		unsigned char c;
		ssize_t n = src_read(in->src, &c, 1, p->coff - 1);

		r = n < 0 ? (int)n : n == 0 ? -EBADMSG : 0;
		if (r == 0 && inflatePrime(&s, p->bits, c >> (8 - p->bits)) != Z_OK)
			r = -EBADMSG;
	}
	if (r == 0 && p->wlen) {
		r = inflate_window(z, p, win);
		if (r == 0 && inflateSetDictionary(&s, win, p->wlen) != Z_OK)
			r = -EBADMSG;
	}
	while (r == 0 && o->got < o->len) {
		size_t room, made;
		unsigned char *dst;

		r = refill(in);
		if (r < 0)
			break;
		dst = out_next(o, &room);
		s.next_in = (unsigned char *)in->next;
		s.avail_in = in->avail > UINT32_MAX ? UINT32_MAX : (uInt)in->avail;
		s.next_out = dst;
		s.avail_out = (uInt)room;
		zr = inflate(&s, Z_NO_FLUSH);
		made = room - s.avail_out;
		in->avail -= (size_t)(s.next_in - in->next);
		in->next = s.next_in;
		out_advance(o, made);
		if (zr == Z_STREAM_END) {
			/* a member ends: a raw stream is followed by the
			 * member's trailer, then the next member */
			if (raw)
				in->skip = 8;
			raw = false;
			if (inflateReset2(&s, 16 + MAX_WBITS) != Z_OK)
				r = -ENOMEM;
		} else if (zr != Z_OK && zr != Z_BUF_ERROR) {
			r = zr == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
		}
	}
	inflateEnd(&s);
	return r;
}

static int read_zstd(struct input *in, struct output *o)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	int r = 0;

	if (!d)
		return -ENOMEM;
	while (o->got < o->len) {
		ZSTD_inBuffer ib;
		ZSTD_outBuffer ob;
		size_t room, zr;

		r = refill(in);
		if (r < 0)
			break;
		ib = (ZSTD_inBuffer){ in->next, in->avail, 0 };
		ob.dst = out_next(o, &room);
		ob.size = room;
		ob.pos = 0;
		zr = ZSTD_decompressStream(d, &ob, &ib);
		if (ZSTD_isError(zr)) {
			r = -EBADMSG;
			break;
		}
		in->next += ib.pos;
		in->avail -= ib.pos;
		out_advance(o, ob.pos);
	}
	ZSTD_freeDCtx(d);
	return r;
}

int strata_zran_read(const struct strata_zran *z,
		     const struct strata_zran_src *src, uint64_t uoff,
		     size_t len, void *buf)
{
	cleanup_free unsigned char *inbuf = NULL, *scratch = NULL;
	const struct point *p;
	struct input in = { .z = z, .src = src };
	struct output o = { .buf = buf, .len = len };

	if (uoff > z->usize || len > z->usize - uoff)
		return -EINVAL;
	if (len == 0)
		return 0;
	p = find_point(z, uoff);
	inbuf = malloc(IN_BUF);
	scratch = malloc(SKIP_BUF);
	if (!inbuf || !scratch)
		return -ENOMEM;
	in.buf = inbuf;
	in.cpos = p->coff;
	o.scratch = scratch;
	o.skip = uoff - p->uoff;
	if (z->kind == STRATA_ZRAN_GZIP)
		return read_gzip(z, p, &in, &o);
	return read_zstd(&in, &o);
}

/* ---- a standalone pass ---- */

struct pass {
	int fd;
	unsigned char *in, *out;
	size_t in_pos, in_len;
	uint64_t coff;		/* blob offset of in[in_pos] */
	uint64_t uoff;
	bool eof;
};

static int pass_fill(struct pass *ps)
{
	ssize_t n;

	if (ps->in_pos < ps->in_len || ps->eof)
		return 0;
	do {
		n = read(ps->fd, ps->in, IN_BUF);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	ps->in_pos = 0;
	ps->in_len = (size_t)n;
	ps->eof = n == 0;
	return 0;
}

static int pass_gzip(struct pass *ps, struct strata_zran_builder *b,
		     struct strata_err *err)
{
	z_stream s = { 0 };
	bool ended = false;
	int r = 0, zr;

	if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	for (;;) {
		r = pass_fill(ps);
		if (r < 0 || ps->eof)
			break;
		if (ended) {
			if (ps->in[ps->in_pos] != 0x1f) {
				r = strata_err_set(err, -EBADMSG, "bytes after "
						   "the gzip stream");
				break;
			}
			inflateReset(&s);
			ended = false;
		}
		s.next_in = ps->in + ps->in_pos;
		s.avail_in = (uInt)(ps->in_len - ps->in_pos);
		s.next_out = ps->out;
		s.avail_out = IN_BUF;
		r = strata_zran_inflate(b, &s, ps->coff, ps->uoff, &zr);
		if (r < 0)
			break;
		ps->coff += (uint64_t)(s.next_in - (ps->in + ps->in_pos));
		ps->in_pos = (size_t)(s.next_in - ps->in);
		ps->uoff += IN_BUF - s.avail_out;
		if (zr == Z_STREAM_END) {
			ended = true;
		} else if (zr != Z_OK && zr != Z_BUF_ERROR) {
			r = strata_err_set(err, -EBADMSG, "corrupt gzip data: "
					   "%s", s.msg ? s.msg : "inflate failed");
			break;
		}
	}
	inflateEnd(&s);
	if (r == 0 && !ended)
		r = strata_err_set(err, -EBADMSG, "truncated gzip stream");
	return r;
}

static int pass_zstd(struct pass *ps, struct strata_zran_builder *b,
		     struct strata_err *err)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	bool ended = true;
	int r = 0;

	if (!d)
		return -ENOMEM;
	for (;;) {
		ZSTD_inBuffer ib;
		ZSTD_outBuffer ob = { ps->out, IN_BUF, 0 };
		size_t zr;

		r = pass_fill(ps);
		if (r < 0 || ps->eof)
			break;
		ib = (ZSTD_inBuffer){ ps->in, ps->in_len, ps->in_pos };
		zr = ZSTD_decompressStream(d, &ob, &ib);
		if (ZSTD_isError(zr)) {
			r = strata_err_set(err, -EBADMSG, "corrupt zstd data: "
					   "%s", ZSTD_getErrorName(zr));
			break;
		}
		ps->coff += ib.pos - ps->in_pos;
		ps->in_pos = ib.pos;
		ps->uoff += ob.pos;
		ended = zr == 0;
		if (ended) {
			r = strata_zran_zstd_frame(b, ps->coff, ps->uoff);
			if (r < 0)
				break;
		}
	}
	ZSTD_freeDCtx(d);
	if (r == 0 && !ended)
		r = strata_err_set(err, -EBADMSG, "truncated zstd stream");
	return r;
}

int strata_zran_build(int fd, uint64_t span, bool deflate_windows,
		      struct strata_zran **out, struct strata_err *err)
{
	struct strata_zran_builder *b = NULL;
	cleanup_free unsigned char *in = malloc(IN_BUF);
	cleanup_free unsigned char *obuf = malloc(IN_BUF);
	struct pass ps = { .fd = fd, .in = in, .out = obuf };
	int r;

	if (!in || !obuf)
		return -ENOMEM;
	r = strata_zran_builder_new(span, deflate_windows, &b);
	if (r < 0)
		return r;
	r = pass_fill(&ps);
	if (r == 0 && ps.in_len >= 4 && in[0] == 0x1f && in[1] == 0x8b)
		r = pass_gzip(&ps, b, err);
	else if (r == 0 && ps.in_len >= 4 && in[0] == 0x28 && in[1] == 0xb5 &&
		 in[2] == 0x2f && in[3] == 0xfd)
		r = pass_zstd(&ps, b, err);
	else if (r == 0)
		r = strata_err_set(err, -EBADMSG, "neither gzip nor zstd");
	if (r == 0)
		r = strata_zran_builder_finish(b, ps.coff, ps.uoff, out);
	strata_zran_builder_free(b);
	return r;
}
