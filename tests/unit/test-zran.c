/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/layer/zran.c: access points into gzip and zstd blobs. Each blob is made
 * here from known bytes (zlib and libzstd called directly, and the gzip
 * and zstd command-line tools), indexed, and random ranges read through
 * the points are compared with the bytes that were compressed: the answer
 * does not depend on any decoder. Then the index file is damaged in every
 * part and must be refused.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "store-internal.h"
#include "unpack.h"
#include "config.h"
#include "zran.h"
#include "tap.h"

static char tmpdir[4096];
static int tmpfd = -1;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Text-like bytes: words that repeat (so deflate refers back across
 * access points and the windows matter) with runs of noise. */
static unsigned char *make_data(size_t len)
{
	static const char *words[] = { "layer ", "strata ", "gzip\n", "zstd ",
				       "inflate ", "window ", "\t{", "}\n",
				       "0123456789 ", "access point " };
	unsigned char *d = malloc(len);
	size_t i = 0;

	while (d && i < len) {
		const char *w = words[rnd() % 10];
		size_t n = strlen(w);

		if (rnd() % 16 == 0) {
			for (n = rnd() % 200; n-- && i < len;)
				d[i++] = (unsigned char)rnd();
			continue;
		}
		while (*w && i < len)
			d[i++] = (unsigned char)*w++;
	}
	return d;
}

/* ---- making blobs ---- */

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/* One gzip member of @d at @level; @flush_every > 0 adds a full flush (an
 * empty stored block, byte-aligned) every that many bytes. */
static void gzip_member(struct buf *out, const unsigned char *d, size_t len,
			int level, size_t flush_every)
{
	z_stream s = { 0 };
	unsigned char tmp[65536];
	size_t pos = 0;
	int fl, zr;

	deflateInit2(&s, level, Z_DEFLATED, 16 + MAX_WBITS, 8,
		     Z_DEFAULT_STRATEGY);
	do {
		size_t n = len - pos;

		if (flush_every && n > flush_every)
			n = flush_every;
		s.next_in = (unsigned char *)d + pos;
		s.avail_in = (uInt)n;
		pos += n;
		fl = pos == len ? Z_FINISH : flush_every ? Z_FULL_FLUSH : Z_NO_FLUSH;
		do {
			s.next_out = tmp;
			s.avail_out = sizeof(tmp);
			zr = deflate(&s, fl);
			buf_add(out, tmp, sizeof(tmp) - s.avail_out);
		} while (s.avail_out == 0 || (fl == Z_FINISH && zr != Z_STREAM_END));
	} while (pos < len);
	deflateEnd(&s);
}

static void zstd_frame(struct buf *out, const unsigned char *d, size_t len,
		       int level)
{
	size_t cap = ZSTD_compressBound(len);
	unsigned char *c = malloc(cap);
	size_t n = ZSTD_compress(c, cap, d, len, level);

	if (!ZSTD_isError(n))
		buf_add(out, c, n);
	free(c);
}

static void skippable_frame(struct buf *out)
{
	static const unsigned char f[] = { 0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0,
					   'S', 'K', 'I', 'P' };

	buf_add(out, f, sizeof(f));
}

/* Test files need no fsync: a plain write is enough and much faster. */
static int save(const char *name, const void *p, size_t len)
{
	cleanup_fd int fd = openat(tmpfd, name, O_WRONLY | O_CREAT | O_TRUNC |
				   O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	return strata_write_all(fd, p, len);
}

/* Run @cmd (sh -c) in the temp dir; the output file @name is read into
 * @out. Return: 0, or -1 when the tool is missing or failed. */
static int tool(const char *cmd, const char *name, struct buf *out)
{
	char full[8400];
	cleanup_free char *p = NULL;
	size_t len;

	snprintf(full, sizeof(full), "cd '%s' && %s", tmpdir, cmd);
	if (system(full) != 0)
		return -1;
	if (strata_read_file(tmpfd, name, 1u << 30, &p, &len) < 0)
		return -1;
	out->len = 0;
	buf_add(out, p, len);
	return 0;
}

/* ---- checking ---- */

static int index_blob(const struct buf *blob, uint64_t span, bool deflated,
		      struct strata_zran **z)
{
	struct strata_err err = { 0 };
	cleanup_fd int fd = -1;
	int r;

	if (save("blob", blob->p, blob->len) < 0)
		return -EIO;
	fd = openat(tmpfd, "blob", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = strata_zran_build(fd, span, deflated, z, &err);
	if (r < 0)
		diag("build: %s", err.msg);
	return r;
}

/* Random and edge ranges of @data read through @z from the blob in
 * "blob"; Return: the number that differ. */
static int check_ranges(const struct strata_zran *z, const unsigned char *data,
			size_t len, int n_random)
{
	struct strata_zran_src src = { .fd = -1 };
	struct strata_zran_info info;
	cleanup_free unsigned char *got = malloc(len + 1);
	uint64_t edges[][2] = { { 0, len }, { 0, 1 }, { len - 1, 1 },
				{ len / 2, len - len / 2 }, { 0, 0 },
				{ len, 0 } };
	int bad = 0, i, r;

	strata_zran_info(z, &info);
	src.fd = openat(tmpfd, "blob", O_RDONLY | O_CLOEXEC);
	for (i = 0; i < (int)(sizeof(edges) / sizeof(edges[0])) + n_random; i++) {
		uint64_t off, n;

		if (i < (int)(sizeof(edges) / sizeof(edges[0]))) {
			off = edges[i][0];
			n = edges[i][1];
		} else if (i % 3 == 0) {	/* around a multiple of 64 KiB */
			off = (rnd() % (len / 65536 + 1)) * 65536;
			off = off > 3 ? off - rnd() % 4 : off;
			off = off >= len ? len - 1 : off;
			n = 1 + rnd() % 16;
		} else {
			off = rnd() % len;
			n = rnd() % (i % 2 ? 4096 : 200000);
		}
		if (n > len - off)
			n = len - off;
		memset(got, 0xa5, n + 1);
		r = strata_zran_read(z, &src, off, (size_t)n, got);
		if (r < 0 || memcmp(got, data + off, (size_t)n) ||
		    got[n] != 0xa5) {
			if (bad++ < 3)
				diag("range %llu+%llu: %d", (unsigned long long)off,
				     (unsigned long long)n, r);
		}
	}
	close(src.fd);
	return bad;
}

/* Index @blob (made from @data) with a small span and with one point,
 * deflated and raw windows, and read ranges. */
static void check_blob(const char *what, const struct buf *blob,
		       const unsigned char *data, size_t len, int kind,
		       uint64_t min_points)
{
	static const uint64_t spans[] = { 65536, 1ull << 40 };
	struct strata_zran_info info;

	for (size_t s = 0; s < 2; s++) {
		for (int deflated = 0; deflated < 2; deflated++) {
			cleanup_(strata_zran_freep) struct strata_zran *z = NULL;

			if (s == 1 && !deflated)
				continue;	/* one point: no window */
			if (!ok(index_blob(blob, spans[s], deflated, &z) == 0,
				"%s: span %llu, %s windows: indexed", what,
				(unsigned long long)spans[s],
				deflated ? "deflated" : "raw"))
				continue;
			strata_zran_info(z, &info);
			if (s == 0 && deflated == 1)
				diag("%s: %llu points, %llu window bytes", what,
				     (unsigned long long)info.n_points,
				     (unsigned long long)info.window_bytes);
			ok(info.kind == kind && info.usize == len &&
			   info.csize == blob->len, "%s: kind and sizes", what);
			if (s == 1)
				is_int(info.n_points, 1, "%s: one point", what);
			else
				ok(info.n_points >= min_points &&
				   info.n_points <= len / 65536 + 1,
				   "%s: span 64 KiB: %llu points", what,
				   (unsigned long long)info.n_points);
			is_int(check_ranges(z, data, len, s ? 8 : 60), 0,
			       "%s: span %llu, %s windows: ranges read equal "
			       "the input", what, (unsigned long long)spans[s],
			       deflated ? "deflated" : "raw");
		}
	}
}

static void test_gzip(void)
{
	size_t len = 1536u << 10;
	cleanup_free unsigned char *d = make_data(len);
	struct buf b = { 0 };

	gzip_member(&b, d, len, 6, 0);
	check_blob("gzip -6, one member", &b, d, len,
			   STRATA_ZRAN_GZIP, len / 65536 / 2);
	b.len = 0;
	gzip_member(&b, d, len / 3, 9, 0);
	gzip_member(&b, d + len / 3, 0, 6, 0);	/* an empty member */
	gzip_member(&b, d + len / 3, len / 3 + 1, 1, 0);
	gzip_member(&b, d + 2 * (len / 3) + 1, len - 2 * (len / 3) - 1, 6, 0);
	check_blob("gzip, four members", &b, d, len,
			   STRATA_ZRAN_GZIP, len / 65536 / 2);
	b.len = 0;
	gzip_member(&b, d, len, 0, 0);
	check_blob("gzip, stored blocks", &b, d, len,
			   STRATA_ZRAN_GZIP, len / 65536 / 2);
	b.len = 0;
	gzip_member(&b, d, len, 6, 100000);
	check_blob("gzip, full flushes", &b, d, len,
			   STRATA_ZRAN_GZIP, len / 65536 / 2);
	if (save("data", d, len) == 0 &&
	    tool("gzip -1 -c -n data > data.gz", "data.gz", &b) == 0)
		check_blob("gzip -1 (the tool)", &b, d, len,
			   STRATA_ZRAN_GZIP, len / 65536 / 2);
	else
		ok(0, "gzip -1 ran");
	if (tool("command -v pigz >/dev/null && pigz -c data > data.pz",
		 "data.pz", &b) == 0)
		check_blob("pigz", &b, d, len,
			   STRATA_ZRAN_GZIP, len / 65536 / 2);
	else
		diag("pigz not installed: skipped");
	free(b.p);
}

static void test_zstd(void)
{
	size_t len = 1536u << 10, i;
	cleanup_free unsigned char *d = make_data(len);
	struct buf b = { 0 };
	cleanup_(strata_zran_freep) struct strata_zran *z = NULL;

	zstd_frame(&b, d, len, 3);
	check_blob("zstd, one frame", &b, d, len, STRATA_ZRAN_ZSTD, 1);
	b.len = 0;
	for (i = 0; i < len; i += 40000) {
		if (i == 120000)
			skippable_frame(&b);
		zstd_frame(&b, d + i, len - i < 40000 ? len - i : 40000, 3);
	}
	skippable_frame(&b);
	check_blob("zstd, frames of 40000 bytes", &b, d, len, STRATA_ZRAN_ZSTD,
		   len / 80000);
	/* a point falls on the first frame start 64 KiB past the last one */
	if (index_blob(&b, 65536, true, &z) == 0) {
		struct strata_zran_info info;

		strata_zran_info(z, &info);
		is_int(info.n_points, (len + 79999) / 80000,
		       "zstd frames of 40000 bytes, span 64 KiB: a point "
		       "every second frame");
	}
	if (save("data", d, len) == 0 &&
	    tool("zstd -q -f -3 data -o data.zst", "data.zst", &b) == 0)
		check_blob("zstd (the tool)", &b, d, len, STRATA_ZRAN_ZSTD, 1);
	else
		ok(0, "zstd ran");
	free(b.p);
}

/* A source that is a buffer (as a registry range reader would be). */
struct mem {
	const unsigned char *p;
	size_t len;
	int calls;
};

static ssize_t mem_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct mem *m = ctx;

	m->calls++;
	if (off >= m->len)
		return 0;
	if (len > m->len - off)
		len = m->len - (size_t)off;
	memcpy(buf, m->p + off, len);
	return (ssize_t)len;
}

static void test_callback_source(void)
{
	size_t len = 1u << 20;
	cleanup_free unsigned char *d = make_data(len);
	cleanup_free unsigned char *got = malloc(70000);
	cleanup_(strata_zran_freep) struct strata_zran *z = NULL;
	struct buf b = { 0 };
	struct mem m = { 0 };
	struct strata_zran_src src = { .fd = -1, .pread = mem_pread, .ctx = &m };
	int bad = 0;

	gzip_member(&b, d, len / 2, 6, 0);
	gzip_member(&b, d + len / 2, len - len / 2, 6, 0);
	m.p = b.p;
	m.len = b.len;
	if (!ok(index_blob(&b, 65536, true, &z) == 0, "callback source: indexed"))
		return;
	for (int i = 0; i < 30; i++) {
		uint64_t off = rnd() % len, n = rnd() % 70000;

		if (n > len - off)
			n = len - off;
		if (strata_zran_read(z, &src, off, (size_t)n, got) < 0 ||
		    memcmp(got, d + off, (size_t)n))
			bad++;
	}
	is_int(bad, 0, "callback source: ranges read equal the input");
	ok(m.calls > 0, "callback source: the callback was used");
	m.len = b.len / 3;	/* the source ends early */
	is_int(strata_zran_read(z, &src, len - 10, 10, got), -EBADMSG,
	       "callback source ending early: EBADMSG");
	free(b.p);
}

/* ---- the index file ---- */

static int load(const char *name, struct strata_zran **z, const char *digest)
{
	struct strata_err err = { 0 };
	int r = strata_zran_load(tmpfd, name, digest, z, &err);

	if (r < 0 && !err.msg[0])
		diag("%s refused without a message", name);
	return r;
}

/* Rewrite the trailing checksum of @p (so that only the damage inside is
 * seen). */
static void reseal(unsigned char *p, size_t len)
{
	char sum[STRATA_DIGEST_MAX];

	strata_sha256(p, len - 64, sum);
	memcpy(p + len - 64, sum + 7, 64);
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void test_file(void)
{
	static const char dig[] = "sha256:0123456789abcdef0123456789abcdef"
				  "0123456789abcdef0123456789abcdef";
	size_t len = 1u << 20, flen;
	cleanup_free unsigned char *d = make_data(len);
	cleanup_free char *file = NULL;
	cleanup_(strata_zran_freep) struct strata_zran *z = NULL;
	struct strata_zran *y = NULL;
	struct strata_zran_info info;
	struct buf b = { 0 };
	uint64_t cs, ce;
	unsigned char one;
	struct strata_zran_src src = { .fd = -1 };
	/* offsets inside the file: 208 header, then 32-byte points */
	static const struct {
		const char *what;
		size_t off;	/* byte to change; (size_t)-1: see below */
		int bytes;
		uint64_t value;
		bool reseal;
		int want;
	} bad[] = {
		{ "magic", 0, 1, 'X', true, -EBADMSG },
		{ "version 2", 8, 4, 2, true, -EOPNOTSUPP },
		{ "kind 3", 12, 4, 3, true, -EBADMSG },
		{ "span 0", 16, 8, 0, true, -EBADMSG },
		{ "more points than the file holds", 40, 8, 1ull << 40, true, -EBADMSG },
		{ "no points", 40, 8, 0, true, -EBADMSG },
		{ "window area longer", 48, 8, 1ull << 62, true, -EBADMSG },
		{ "unknown flag", 56, 4, 2, true, -EBADMSG },
		{ "reserved set", 60, 4, 1, true, -EBADMSG },
		{ "other blob's digest", 70, 1, 'f', true, -EBADMSG },
		{ "first point not at 0", 208 + 8, 8, 5, true, -EBADMSG },
		{ "second point before the first", 240 + 8, 8, 0, true, -EBADMSG },
		{ "point beyond the blob", 240, 8, 1ull << 50, true, -EBADMSG },
		{ "point beyond the stream", 240 + 8, 8, 1ull << 50, true, -EBADMSG },
		{ "window offset outside", 240 + 16, 8, 1ull << 63, true, -EBADMSG },
		{ "window length 40000", 240 + 28, 2, 40000, true, -EBADMSG },
		{ "bit offset 8", 240 + 30, 1, 8, true, -EBADMSG },
		{ "a header byte, not resealed", 20, 1, 0x77, false, -EBADMSG },
		{ "a point byte, not resealed", 250, 1, 0x77, false, -EBADMSG },
	};

	gzip_member(&b, d, len, 6, 0);
	if (!ok(index_blob(&b, 65536, true, &z) == 0, "indexed"))
		return;
	is_int(strata_zran_write(z, dig, tmpfd, "idx"), 0, "index written");
	is_int(load("idx", &y, dig), 0, "index loads");
	if (y) {
		strata_zran_info(y, &info);
		is_str(info.blob_digest, dig, "loaded index names its blob");
		ok(info.usize == len && info.n_points > 8 &&
		   info.deflated_windows, "loaded: sizes and points");
		is_int(check_ranges(y, d, len, 40), 0,
		       "loaded index: ranges read equal the input");
		strata_zran_free(y);
		y = NULL;
	}
	is_int(load("idx", &y, "sha256:00"), -EBADMSG,
	       "index of another blob refused");
	is_int(load("nonexistent", &y, dig), -ENOENT, "missing index: ENOENT");
	if (strata_read_file(tmpfd, "idx", 1u << 30, &file, &flen) < 0)
		return;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cleanup_free unsigned char *c = malloc(flen);

		memcpy(c, file, flen);
		put_le(c + bad[i].off, bad[i].value, bad[i].bytes);
		if (bad[i].reseal)
			reseal(c, flen);
		save("bad", c, flen);
		is_int(load("bad", &y, dig), bad[i].want, "%s: refused",
		       bad[i].what);
		ok(!y, "%s: nothing loaded", bad[i].what);
	}
	for (size_t cut = 0; cut < flen; cut += cut < 300 ? 37 : flen / 7) {
		save("bad", file, cut);
		is_int(load("bad", &y, dig), -EBADMSG, "truncated to %zu bytes: "
		       "refused", cut);
	}
	{	/* a window that does not inflate: refused when read */
		cleanup_free unsigned char *c = malloc(flen);
		struct strata_zran_info zi;
		uint64_t n_pts, woff;

		strata_zran_info(z, &zi);
		n_pts = zi.n_points;
		memcpy(c, file, flen);
		woff = 208 + n_pts * 32;
		memset(c + woff, 0xff, flen - 64 - woff);	/* every window */
		reseal(c, flen);
		save("bad", c, flen);
		is_int(load("bad", &y, dig), 0, "damaged window: loads");
		src.fd = openat(tmpfd, "blob", O_RDONLY | O_CLOEXEC);
		if (y)
			is_int(strata_zran_read(y, &src, len / 2, 1, &one),
			       -EBADMSG, "damaged window: read refused");
		strata_zran_free(y);
		y = NULL;
	}
	/* ranges beyond the end */
	is_int(strata_zran_read(z, &src, len, 1, &one), -EINVAL,
	       "read at the end: EINVAL");
	is_int(strata_zran_read(z, &src, len + 1, 0, &one), -EINVAL,
	       "read past the end: EINVAL");
	is_int(strata_zran_read(z, &src, UINT64_MAX, 2, &one), -EINVAL,
	       "read at 2^64-1: EINVAL");
	is_int(strata_zran_read(z, &src, len - 1, 2, &one), -EINVAL,
	       "read across the end: EINVAL");
	is_int(strata_zran_locate(z, len, 1, &cs, &ce), -EINVAL,
	       "locate past the end: EINVAL");
	is_int(strata_zran_locate(z, 200000, 1000, &cs, &ce), 0, "locate");
	{	/* reading from the located bytes alone gives the range */
		cleanup_free unsigned char *part = calloc(1, b.len);
		unsigned char got[1000];
		struct strata_zran_src mem = { .fd = -1 };
		int r;

		ok(cs < ce && ce <= b.len && ce - cs < 3 * 65536,
		   "located range is near one span");
		memcpy(part + cs, b.p + cs, ce - cs);
		save("partial", part, b.len);	/* zeros outside [cs, ce) */
		mem.fd = openat(tmpfd, "partial", O_RDONLY | O_CLOEXEC);
		r = strata_zran_read(z, &mem, 200000, sizeof(got), got);
		ok(r == 0 && !memcmp(got, d + 200000, sizeof(got)),
		   "read from the located compressed bytes only");
		close(mem.fd);
	}
	/* the blob changed (truncated) after it was indexed */
	close(src.fd);
	save("blob", b.p, b.len / 2);
	src.fd = openat(tmpfd, "blob", O_RDONLY | O_CLOEXEC);
	{
		cleanup_free unsigned char *big = malloc(len);

		is_int(strata_zran_read(z, &src, len - 100, 100, big), -EBADMSG,
		       "blob shorter than indexed: EBADMSG");
	}
	close(src.fd);
	free(b.p);
}

/* ---- inside unpack's pass ---- */

static int make_tar(struct buf *out)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	cleanup_free unsigned char *d = make_data(5u << 20);
	char path[4200];
	int r = 0;

	snprintf(path, sizeof(path), "%s/layer.tar", tmpdir);
	archive_write_set_format_pax_restricted(a);
	archive_write_open_filename(a, path);
	for (int i = 0; i < 40; i++) {
		char name[32];
		size_t sz = i % 4 == 0 ? (1u << 20) + 7 * (size_t)i : 100 * (size_t)i;

		snprintf(name, sizeof(name), "f%02d", i);
		archive_entry_clear(e);
		archive_entry_set_pathname(e, name);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_size(e, (la_int64_t)sz);
		if (archive_write_header(a, e) != ARCHIVE_OK ||
		    archive_write_data(a, d + (size_t)i * 100000, sz) != (la_ssize_t)sz)
			r = -EIO;
	}
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	if (r == 0) {
		cleanup_free char *p = NULL;
		size_t len;

		r = strata_read_file(tmpfd, "layer.tar", 1u << 30, &p, &len);
		if (r == 0)
			buf_add(out, p, len);
	}
	return r;
}

/* unpack.c records the same points as the standalone pass (or, with
 * ISA-L, about as many), and a read through them gives the tar's bytes.
 * @lvl0: the gzip's first member is stored blocks only (level 0), which
 * has no block header long enough to stop ISA-L (gzdec.c): no points
 * there, but the right bytes. */
static void test_unpack_hook(int comp, bool lvl0)
{
	const char *what = comp != STRATA_COMP_GZIP ? "zstd"
			   : lvl0 ? "gzip, stored then -6" : "gzip";
	struct buf tar = { 0 }, blob = { 0 };
	char digest[STRATA_DIGEST_MAX], diff_id[STRATA_DIGEST_MAX];
	struct strata_zran_builder *b = NULL;
	cleanup_(strata_zran_freep) struct strata_zran *z1 = NULL, *z2 = NULL;
	struct strata_err err = { 0 };
	struct strata_unpack_job job = { 0 };
	cleanup_fd int bfd = -1, dest = -1;
	int r;

	if (make_tar(&tar) < 0)
		return;
	if (comp == STRATA_COMP_GZIP) {
		gzip_member(&blob, tar.p, tar.len / 2, lvl0 ? 0 : 6, 0);
		gzip_member(&blob, tar.p + tar.len / 2, tar.len - tar.len / 2, 6, 0);
	} else {
		for (size_t i = 0; i < tar.len; i += 300000)
			zstd_frame(&blob, tar.p + i, tar.len - i < 300000 ?
				   tar.len - i : 300000, 3);
	}
	strata_sha256(tar.p, tar.len, diff_id);
	strata_sha256(blob.p, blob.len, digest);
	save("blob", blob.p, blob.len);
	strata_rmtree_at(tmpfd, "dest");
	mkdirat(tmpfd, "dest", 0755);
	dest = openat(tmpfd, "dest", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	mkdirat(dest, "data", 0755);
	bfd = openat(tmpfd, "blob", O_RDONLY | O_CLOEXEC);
	strata_zran_builder_new(1u << 20, true, &b);
	job.blob_fd = bfd;
	job.digest = digest;
	job.size = (int64_t)blob.len;
	job.diff_id = diff_id;
	job.compression = comp;
	job.dest_fd = dest;
	job.max_bytes = 1ull << 30;
	job.max_entries = 1000;
	job.zran = b;
	r = strata_unpack_layer(&job, &err);
	is_int(r, 0, "%s layer unpacked with access points recorded %s", what,
	       err.msg);
	is_int(strata_zran_builder_finish(b, blob.len, tar.len, &z1), 0,
	       "%s: index finished", what);
	strata_zran_builder_free(b);
	if (z1 && index_blob(&blob, 1u << 20, true, &z2) == 0) {
		struct strata_zran_info i1, i2;

		strata_zran_info(z1, &i1);
		strata_zran_info(z2, &i2);
		bool same = i1.n_points == i2.n_points && i1.n_points > 3 &&
			    i1.window_bytes == i2.window_bytes;

#ifdef STRATA_HAVE_ISAL
		/* gzdec.c's ISA-L points lie at other block boundaries,
		 * about as many (a few are dropped when they cannot be
		 * checked) */
		if (comp == STRATA_COMP_GZIP)
			same = i1.n_points > 3 &&
			       2 * i1.n_points >= i2.n_points &&
			       i1.n_points <= i2.n_points + 1;
#endif
		if (lvl0)
			same = i1.n_points >= 1 && i1.n_points <= i2.n_points;
		ok(same, "%s: unpack's points are the standalone pass's "
		   "(%llu, %llu)", what, (unsigned long long)i1.n_points,
		   (unsigned long long)i2.n_points);
		is_int(check_ranges(z1, tar.p, tar.len, 60), 0,
		       "%s: ranges read through unpack's points equal the tar",
		       what);
	}
	strata_rmtree_at(tmpfd, "dest");
	free(tar.p);
	free(blob.p);
}

static void test_builder(void)
{
	struct strata_zran_builder *b = NULL;
	struct strata_zran *z = NULL;
	z_stream s = { 0 };
	int zr;

	is_int(strata_zran_builder_new(0, true, &b), -EINVAL, "span 0: EINVAL");
	is_int(strata_zran_builder_new(64, true, &b), 0, "builder");
	is_int(strata_zran_builder_finish(b, 0, 0, &z), -EOPNOTSUPP,
	       "nothing fed (an uncompressed tar): EOPNOTSUPP");
	is_int(strata_zran_zstd_frame(b, 10, 100), 0, "a zstd frame");
	inflateInit2(&s, 16 + MAX_WBITS);
	is_int(strata_zran_inflate(b, &s, 0, 0, &zr), -EINVAL,
	       "gzip after zstd: EINVAL");
	inflateEnd(&s);
	is_int(strata_zran_builder_finish(b, 5, 1000, &z), -EINVAL,
	       "points beyond the sizes given: EINVAL");
	strata_zran_builder_free(b);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/strata-zran-XXXXXX",
		 t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 99;
	}
	tmpfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (tmpfd < 0)
		return 99;
	test_builder();
	test_gzip();
	test_zstd();
	test_file();
	test_callback_source();
	test_unpack_hook(STRATA_COMP_GZIP, false);
	test_unpack_hook(STRATA_COMP_GZIP, true);
	test_unpack_hook(STRATA_COMP_ZSTD, false);
	close(tmpfd);
	is_int(strata_rmtree_at(AT_FDCWD, tmpdir), 0, "temp dir removed");
	return done_testing();
}
