/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lazy layers (store-internal): a layer whose metadata index is built from
 * a table of contents (zstd:chunked, eStargz) and whose content files are
 * filled on first access from byte ranges of its blob (store/layer/lazy.c), and
 * the tables of contents themselves (store/layer/toc.c, zchunked-toc.c,
 * estargz.c).
 */
#ifndef STRATA_LAZY_H
#define STRATA_LAZY_H

#include <stdatomic.h>
#include <zlib.h>
#include <zstd.h>

#include "store-internal.h"

/*
 * Where a lazy layer's bytes come from: a blob in a local layout or the
 * store (pread), later a registry (HTTP Range). read() fills @len bytes at
 * @off or fails. Return: 0 or negative errno.
 */
struct strata_range_src {
	int (*read)(struct strata_range_src *s, void *buf, size_t len,
		    uint64_t off);
	void (*free)(struct strata_range_src *s);
	bool remote;	/* a registry's: each read is a request */
};

/*
 * A stream of zstd frames or gzip members, decompressed piece by piece
 * (lazy-src.c): step() makes up to @cap bytes into @out from @in, whose first
 * *@ipos bytes are used already; *@made says how many, and @done whether
 * a frame or member has just ended (a stream cut there is complete).
 * Return: 0 or -EBADMSG.
 */
struct strata_dec {
	ZSTD_DStream *zs;
	z_stream gz;
	bool gzip, gz_ready, gz_end, done;
};
int strata_dec_init(struct strata_dec *d, bool gzip);
int strata_dec_step(struct strata_dec *d, const void *in, size_t len,
		    size_t *ipos, void *out, size_t cap, size_t *made);
void strata_dec_free(struct strata_dec *d);

/* A source reading the open file @fd (ownership taken). */
int strata_range_src_fd(int fd, struct strata_range_src **out);
/* A registry's blob @digest, read with Range requests through @bs
 * (borrowed: it must outlive the source). -EOPNOTSUPP if it cannot. */
int strata_range_src_reg(struct strata_blob_source *bs, const char *digest,
			 struct strata_range_src **out);

/*
 * The content table of a lazy layer ("contents" in its directory): a
 * header, one record per content number (record i is data/<i + 1>). The
 * paths of the files, for messages, are found in the index (lazy-fill.c):
 * entries written before that still carry them after the records
 * (names_off, names_len), ignored.
 */
#define STRATA_LZ_MAGIC "STRTLZ01"

struct strata_lz_header {
	char magic[8];
	uint32_t n;		/* records */
	/* records 1..prefetch are filled first, before other layers'
	 * (eStargz: the files before .prefetch.landmark); NO_PREFETCH: no
	 * background fill (.no.prefetch.landmark) */
	uint32_t prefetch;
	uint64_t names_off;	/* the end of the records */
	uint64_t names_len;	/* 0 (older entries: paths, ignored) */
	uint64_t file_size;
};

#define STRATA_LZ_NO_PREFETCH UINT32_MAX

struct strata_lz_rec {
	uint64_t off, end;	/* compressed range in the blob */
	uint64_t size;		/* uncompressed */
	uint32_t pad0;		/* 0 (older entries: a name offset) */
	uint32_t pad;
	uint8_t sha256[32];	/* of the uncompressed content */
};

/*
 * The chunks of the files a TOC splits ("chunks" in the layer's
 * directory): a header (STRATA_LZC_MAGIC, n), then one record per chunk
 * in content order, each checked against its chunkDigest as the file is
 * decompressed. A file without chunks has none (its digest covers it).
 */
#define STRATA_LZC_MAGIC "STRTLZC1"

struct strata_lz_tab {
	char magic[8];
	uint64_t n;
};

struct strata_lz_chunk {
	uint32_t rec;		/* content record (data/<rec + 1>) */
	uint32_t pad;
	uint64_t uoff, size;	/* within the uncompressed file */
	uint8_t sha256[32];
};

/*
 * What a TOC says of each entry (one record per entry other than "chunk",
 * in order; made from the TOC again once the fill has read the whole
 * blob, not kept in the cache), compared with the tar's own headers
 * then: names and
 * link targets as paths are compared (leading "./" and "/", "//" and "."
 * dropped for names and hardlink targets), xattrs as a set (toc.c).
 * eStargz: modification times to the second, rounded as its writer
 * rounds them, and the tar's stargz.index.json has no record.
 */
struct strata_lz_meta {
	int64_t mode, uid, gid, size, devmajor, devminor, mtime_sec;
	uint32_t mtime_nsec;
	char type;
	char pad[3];
	uint8_t name[32], link[32], xattrs[32];	/* sha256 */
};

struct strata_tar_entry;
/* The record of entry @g (from the TOC or from tarscan). 0, -ENOMEM. */
int strata_lz_meta_of(const struct strata_tar_entry *g,
		      struct strata_lz_meta *m);
/* Do @toc and @tar differ? Writes what differs into @why. */
bool strata_lz_meta_differ(const struct strata_lz_meta *toc,
			   const struct strata_lz_meta *tar, char *why,
			   size_t len);

/* The largest table of contents read (uncompressed JSON): about 1 KiB an
 * entry with chunks, so room for a quarter million files */
#define STRATA_TOC_MAX (256u << 20)

/* zstd:chunked: where the TOC is, from the layer descriptor's annotations */
struct strata_zc_pos {
	uint64_t off, len, ulen;	/* compressed TOC in the blob */
};

/*
 * Is layer @l a zstd:chunked layer strata can mount lazily? Parses its
 * annotations into @pos. Return: 0; -EOPNOTSUPP when it is not (no or
 * unknown annotations: it is unpacked in full); -EBADMSG for annotations
 * that lie outside the blob (message in @err).
 */
int strata_zc_locate(const struct strata_layer *l, struct strata_zc_pos *pos,
		     struct strata_err *err);

/*
 * Read the TOC of layer @l from @src, verify it against the manifest's
 * checksum, and build the layer's index and content table in directory
 * @dest_fd ("index", "contents", empty "data/"; not synced). Every entry
 * is checked as a tar entry is (paths, links, whiteouts, limits) and
 * every content range must lie before the TOC, in order, without overlap.
 * Return: 0, -EBADMSG (message naming the layer and entry), -EOPNOTSUPP
 * (a TOC version or digest strata cannot read: unpack in full), or
 * another negative errno.
 */
int strata_zc_build(struct strata_range_src *src, const struct strata_layer *l,
		    const struct strata_zc_pos *pos, uint64_t max_bytes,
		    uint64_t max_entries, int dest_fd, struct strata_err *err);

/* What the TOC of @l (read from @src and verified again) says of each
 * entry, in order, for the compare with the tar once the whole blob has
 * been read: *@metas (*@n records; free()). Return: 0, -EBADMSG, or the
 * source's error (message in @err). */
int strata_zc_metas(struct strata_range_src *src, const struct strata_layer *l,
		    struct strata_lz_meta **metas, size_t *n,
		    struct strata_err *err);

/* eStargz (estargz.c): is layer @l one strata can mount lazily (gzip,
 * with a toc.digest annotation)? 0 or -EOPNOTSUPP. */
int strata_esgz_locate(const struct strata_layer *l);
/* As strata_zc_build(), for eStargz: the TOC found by the footer and
 * checked against the toc.digest annotation. */
int strata_esgz_build(struct strata_range_src *src,
		      const struct strata_layer *l, uint64_t max_bytes,
		      uint64_t max_entries, int dest_fd, struct strata_err *err);
/* As strata_zc_metas(), for eStargz. */
int strata_esgz_metas(struct strata_range_src *src,
		      const struct strata_layer *l,
		      struct strata_lz_meta **metas, size_t *n,
		      struct strata_err *err);

/*
 * Make layer @i of @img ready to mount lazily (layers/lazy/NAME, built
 * under tmp/ and renamed, under NAME.lock). Return: 0; -EOPNOTSUPP if the
 * layer cannot be lazy (unpack it in full); another negative errno with
 * @err naming image and layer.
 */
int strata_lazy_prepare(struct strata_store *st, struct strata_image *img,
			size_t i, const struct strata_unpack_opts *opts,
			struct strata_err *err);

/* "ALG-BLOBHEX.TOCHEX", or "ALG-BLOBHEX.zran" for a layer without a TOC
 * (lazy-zran.c) */
void strata_lazy_name(const struct strata_layer *l, char *out, size_t len);
/* Finish a lazy entry built in tmp/@tmpname (@dest its fd) whose build
 * returned @r: synced and renamed to lazy/@name, or removed when @r < 0.
 * Return: 0 or negative errno (message in @err). */
int strata_lazy_publish(struct strata_store *st, int r, int dest,
			const char *tmpname, int lazyfd, const char *name,
			struct strata_err *err);
/* Open ROOT/layers/lazy (made if missing) into *lazyfd and take the lock
 * of entry @name (NAME.lock) into *lock, waiting for its holder.
 * Return: 0 or negative errno (message in @err). */
int strata_lazy_lock(struct strata_store *st, const char *name, int *lazyfd,
		     int *lock, struct strata_err *err);

/*
 * lazy-zran.c: make gzip or zstd layer @i of @img ready to mount lazily
 * after one pass over its blob (local, or a registry's as it downloads)
 * that verifies its digest, indexes it and records access points
 * (layers/lazy/ALG-BLOBHEX.zran); @progress (or NULL) is told the blob
 * bytes read. Return: 0; -EOPNOTSUPP (not gzip/zstd, no blob and no
 * registry, a sparse file: unpack in full); another negative errno with
 * @err naming the layer.
 */
int strata_lazy_zran_prepare(struct strata_store *st, struct strata_image *img,
			     size_t i, const struct strata_unpack_opts *opts,
			     void (*progress)(void *ctx, uint64_t bytes),
			     void *progress_ctx, struct strata_err *err);
struct strata_zran;
/* Records of a zran layer in order, within the stream. 0 or -EBADMSG. */
int strata_lzr_check(const struct strata_zran *z,
		     const struct strata_lz_rec *recs, uint32_t n);
/* Write record @r's content, read through access points of blob @blobfd,
 * to @fd. Return: 0, -EBADMSG, -errno. */
int strata_lzr_fill(const struct strata_zran *z, int blobfd,
		    const struct strata_lz_rec *r, int fd);
/* One sequential decompress of the blob filling every missing data/ file
 * of records @recs; with @dh (or NULL), to the end of the stream, every
 * uncompressed byte hashed into @dh (the diff_id).
 * Return: 0, -EINTR (*@stop), -EBADMSG, -errno. */
int strata_lzr_fill_all(const struct strata_zran *z, int blobfd,
			const struct strata_lz_rec *recs, uint32_t n,
			int datafd, struct strata_hasher *dh,
			const atomic_bool *stop);

/* lindex.c: open the index in directory @dfd (@what names it in
 * messages); attach and read lazy state. */
int strata_lindex_open_dir(int dfd, const char *what,
			   struct strata_lindex **out, struct strata_err *err);
struct strata_lazy;
/* Ownership of @z taken. */
void strata_lindex_set_lazy(struct strata_lindex *lx, struct strata_lazy *z);
struct strata_lazy *strata_lindex_lazy(const struct strata_lindex *lx);
void strata_lazy_free(struct strata_lazy *z);

/* In a gzip/zstd layer's entry (lazy-zran.c): its "blob" is on disk. */
#define STRATA_LZR_SYNCED "blob.synced"

/* lazy-check.c: what a crash may have torn, checked once per boot */

/* This boot's id ($STRATA_BOOT_ID if set), "" if unknown. */
const char *strata_boot_id(void);
/* Mark content file @fd as checked in this boot. Return: 0, or negative
 * errno (no user xattrs there, no boot id). */
int strata_lz_mark(int fd);
/* Is @fd marked as checked in this boot? */
bool strata_lz_marked(int fd);
/* Is content file @fd intact: marked in this boot, or hashing to
 * @sha256 (then marked)? Return: 1 yes, 0 no, negative errno. */
int strata_lz_verify(int fd, const uint8_t sha256[32]);
/* The same for a file named by its digest ("ALG:HEX"), such as the blob
 * of a lazy gzip layer. */
int strata_lz_verify_digest(int fd, const char *digest);

#endif
