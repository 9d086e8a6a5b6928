/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access points for random access into gzip and zstd layer blobs
 * (store-internal). The design, the on-disk format and the choice of the
 * spacing are explained at the top of zran.c.
 *
 * Life of an index:
 *   1. strata_zran_builder_new(); hand the builder to the pass that
 *      decompresses the blob (strata_unpack_job.zran, or
 *      strata_zran_build() for a blob alone). That pass calls
 *      strata_zran_inflate() in place of inflate() and
 *      strata_zran_zstd_frame() after each zstd frame it finishes.
 *   2. Once the whole blob has been read and verified:
 *      strata_zran_builder_finish() gives the index;
 *      strata_zran_write() stores it beside the cached layer.
 *   3. Later: strata_zran_load() (or strata_zran_parse()) and
 *      strata_zran_read() for any range of the uncompressed stream.
 *
 * A loaded index is never changed: strata_zran_read() and
 * strata_zran_locate() may run in any number of threads at once.
 */
#ifndef STRATA_ZRAN_H
#define STRATA_ZRAN_H

#include <zlib.h>

#include "store-internal.h"

/* Default spacing of access points in uncompressed bytes (zran.c says
 * why this value). */
#define STRATA_ZRAN_SPAN (4ull << 20)
/* The index's file name in a cached layer's directory, beside "index"
 * (so removing the layer removes it). */
#define STRATA_ZRAN_NAME "zran"
/* Largest index file strata_zran_load() reads. */
#define STRATA_ZRAN_FILE_MAX (256u << 20)

enum strata_zran_kind {
	STRATA_ZRAN_GZIP = 1,
	STRATA_ZRAN_ZSTD = 2,
};

struct strata_zran;		/* a finished or loaded index */
struct strata_zran_builder;	/* one being recorded */

/*
 * A builder recording a point at the first deflate block boundary (gzip)
 * or frame start (zstd) that lies @span or more uncompressed bytes after
 * the previous point (@span >= 1). With @deflate_windows, each gzip
 * point's 32 KiB window is stored deflated (level 1), else raw.
 * Return: 0, -EINVAL, -ENOMEM. Caller frees with
 * strata_zran_builder_free().
 */
int strata_zran_builder_new(uint64_t span, bool deflate_windows,
			    struct strata_zran_builder **out);
void strata_zran_builder_free(struct strata_zran_builder *b);

/*
 * Call in place of inflate(@z, Z_NO_FLUSH) for a gzip stream (@z set up
 * with inflateInit2(z, 16 + MAX_WBITS), reset with inflateReset()
 * between members, as unpack.c does). Same effect on @z: it decompresses
 * until the output is full, the input is used up or a member ends, but
 * stops at each deflate block boundary on the way to record a point.
 * @coff is the blob offset of @z->next_in[0], @uoff the uncompressed
 * offset of @z->next_out[0]. inflate()'s last return code goes to *@zret.
 * Return: 0, or -ENOMEM / -EINVAL (the builder was fed zstd before): a
 * failure of the index, not of the blob.
 */
int strata_zran_inflate(struct strata_zran_builder *b, z_stream *z,
			uint64_t coff, uint64_t uoff, int *zret);

/*
 * Is a point due at uncompressed offset @uoff (none yet, or @span bytes
 * since the last one)?
 */
bool strata_zran_point_due(const struct strata_zran_builder *b,
			   uint64_t uoff);
/* The uncompressed offset from which the next point is due. */
uint64_t strata_zran_next_due(const struct strata_zran_builder *b);

/*
 * Record a gzip point found by another decoder (gzdec.c): the deflate
 * block starting at bit @bit of the blob (bit 0 is the low bit of byte 0)
 * and uncompressed offset @uoff, after @wlen (<= 32 KiB) bytes of window
 * @win (borrowed; the member's output just before @uoff). The caller has
 * checked the point (zlib decodes from it what the stream holds there).
 * Return: 0, -ENOMEM, -EINVAL (fed zstd before, a window too long, or
 * not after the last point).
 */
int strata_zran_gzip_point(struct strata_zran_builder *b, uint64_t bit,
			   uint64_t uoff, const unsigned char *win,
			   size_t wlen);

/*
 * A zstd frame (skippable or not) ended: the next frame, if any, starts
 * at blob offset @coff and uncompressed offset @uoff.
 * Return: 0, -ENOMEM, -EINVAL (fed gzip before).
 */
int strata_zran_zstd_frame(struct strata_zran_builder *b, uint64_t coff,
			   uint64_t uoff);

/*
 * The index of a blob of @csize bytes that decompressed to @usize bytes,
 * which the caller has verified (digest, diff_id). The builder's points
 * go to *@out; the builder is left empty, to be freed.
 * Return: 0, -ENOMEM, -EOPNOTSUPP (neither gzip nor zstd was fed: an
 * uncompressed tar needs no index), -EINVAL (points beyond @usize or
 * @csize: the sizes are not those of the stream fed).
 * Caller frees *@out with strata_zran_free().
 */
int strata_zran_builder_finish(struct strata_zran_builder *b, uint64_t csize,
			       uint64_t usize, struct strata_zran **out);

void strata_zran_free(struct strata_zran *z);
static inline void strata_zran_freep(struct strata_zran **z)
{
	if (*z)
		strata_zran_free(*z);
}

/*
 * Decompress the whole blob on @fd (from its current offset to the end)
 * once, recording points: for tests, benchmarks and layers unpacked before
 * indexes existed. No digest is checked here.
 * Return: 0, -EBADMSG (not gzip or zstd, corrupt, truncated, trailing
 * junk), -ENOMEM, -errno of read(). Caller frees *@out.
 */
int strata_zran_build(int fd, uint64_t span, bool deflate_windows,
		      struct strata_zran **out, struct strata_err *err);

/* What an index describes. */
struct strata_zran_info {
	int kind;		/* enum strata_zran_kind */
	uint64_t span;
	uint64_t csize, usize;	/* blob and uncompressed sizes */
	uint64_t n_points;
	uint64_t window_bytes;	/* stored window bytes, all points */
	bool deflated_windows;
	const char *blob_digest;	/* borrowed from the index; "" until
					 * written or loaded */
};
void strata_zran_info(const struct strata_zran *z,
		      struct strata_zran_info *info);

/*
 * Serialize @z for blob @blob_digest and write it to @dirfd/@name
 * atomically (temp file, fsync, rename, fsync of the directory).
 * Return: 0, -EINVAL (digest too long), -ENOMEM, -errno.
 */
int strata_zran_write(const struct strata_zran *z, const char *blob_digest,
		      int dirfd, const char *name);

/*
 * Check and load an index from @len bytes of @buf (untrusted: magic,
 * version, checksum, every count and offset bounds-checked). With
 * @blob_digest set, an index of another blob is refused. Messages name
 * @what (e.g. the file). Return: 0, -EBADMSG (damaged, truncated, another
 * blob's), -EOPNOTSUPP (a newer format version), -ENOMEM.
 * Caller frees *@out.
 */
int strata_zran_parse(const void *buf, size_t len, const char *blob_digest,
		      const char *what, struct strata_zran **out,
		      struct strata_err *err);
/* The same, reading @dirfd/@name (at most STRATA_ZRAN_FILE_MAX bytes). */
int strata_zran_load(int dirfd, const char *name, const char *blob_digest,
		     struct strata_zran **out, struct strata_err *err);

/* Where strata_zran_read() gets compressed bytes. */
struct strata_zran_src {
	int fd;			/* read with pread(fd, .., base + offset) */
	uint64_t base;		/* where the blob starts in @fd */
	/* or, when set, this (a registry range request, say): read up to
	 * @len bytes at blob offset @off; return the count (0 at the end
	 * of the blob) or -errno */
	ssize_t (*pread)(void *ctx, void *buf, size_t len, uint64_t off);
	void *ctx;
};

/*
 * Copy @len bytes of the uncompressed stream at @uoff into @buf:
 * decompression starts at the last point at or below @uoff.
 * Return: 0, -EINVAL (range beyond the end of the stream), -EBADMSG (the
 * blob does not decompress as it did when indexed), -ENOMEM, -errno of
 * the source.
 */
int strata_zran_read(const struct strata_zran *z,
		     const struct strata_zran_src *src, uint64_t uoff,
		     size_t len, void *buf);

/*
 * The compressed bytes [*@cstart, *@cend) that strata_zran_read() of
 * @len bytes at @uoff reads at most (for a range request).
 * Return: 0, -EINVAL (range beyond the end).
 */
int strata_zran_locate(const struct strata_zran *z, uint64_t uoff,
		       size_t len, uint64_t *cstart, uint64_t *cend);

/*
 * The gzip decoder of the pass (gzdec.c): ISA-L where built with it, else
 * zlib; records points in @b (borrowed, may be NULL) as it goes.
 * Return: 0, -ENOMEM. Caller frees with strata_gzdec_free().
 */
struct strata_gzdec;
int strata_gzdec_new(struct strata_zran_builder *b,
		     struct strata_gzdec **out);
void strata_gzdec_free(struct strata_gzdec *d);

/*
 * Decode from @in (@in_len bytes; byte 0 is blob byte @coff) into @out
 * (@out_len bytes; byte 0 is stream byte @uoff), as inflate() would:
 * *@in_used input taken, *@produced output made. A member header is
 * expected first and after each member end (*@member_end set when a
 * member's trailer has been checked). Call with @in_len 0 at the end of
 * the blob while strata_gzdec_pending(): buffered bits may still give
 * output. Return: 0, -EBADMSG (corrupt; @msg says why), -ENOMEM.
 */
int strata_gzdec_run(struct strata_gzdec *d, const unsigned char *in,
		     size_t in_len, uint64_t coff, unsigned char *out,
		     size_t out_len, uint64_t uoff, size_t *in_used,
		     size_t *produced, bool *member_end, char *msg,
		     size_t msglen);
/* Inside a member (its end not seen yet)? */
bool strata_gzdec_pending(const struct strata_gzdec *d);

#endif
