/* SPDX-License-Identifier: Apache-2.0 */
/* Unpacking one layer blob into a cache directory (store-internal). */
#ifndef STRATA_UNPACK_H
#define STRATA_UNPACK_H

#include "store-internal.h"

struct strata_unpack_job {
	int blob_fd;		/* open blob, read from its start */
	const char *digest;	/* descriptor digest of the blob */
	int64_t size;		/* descriptor size */
	const char *diff_id;	/* config's diff_id for the layer */
	int compression;	/* enum strata_compression */
	int dest_fd;		/* empty directory with a data/ subdirectory */
	uint64_t max_bytes;	/* limit on uncompressed bytes */
	uint64_t max_entries;
	void (*progress)(void *ctx, uint64_t compressed_bytes);
	void *progress_ctx;
	/* or NULL: access points recorded on the way (zran.h); the caller
	 * finishes the index once the layer is verified */
	struct strata_zran_builder *zran;
	/* or NULL: the metadata pass of a lazy layer (lazy-zran.c). No
	 * content is written; each non-empty regular file's content number,
	 * name, offset of its content in the uncompressed stream and size
	 * go to lazy_file (a non-zero return stops the pass), the blob's
	 * bytes as they are read and hashed are copied to copy_fd, and the
	 * uncompressed size to *usize. A sparse file ends the pass with
	 * -EOPNOTSUPP (its content is not one range: unpack in full). */
	int (*lazy_file)(void *ctx, uint32_t data_id, const char *name,
			 uint64_t uoff, uint64_t size);
	void *lazy_ctx;
	int copy_fd;
	uint64_t *usize;
	/* or NULL: the blob's bytes in memory (@map_len of them, blob_fd
	 * unused), read in place instead of read() into a buffer */
	const void *map;
	uint64_t map_len;
	/* or NULL: the mapped bytes are still arriving (the store's copy
	 * being made, lazy-zran.c): before reading up to byte @end of the
	 * map, the reader calls map_wait, which returns once they are there
	 * (0) or will never be (a negative errno) */
	int (*map_wait)(void *ctx, uint64_t end);
	void *map_wait_ctx;
	const char *map_what;	/* what failed when map_wait fails */
	/* the uncompressed stream is not hashed: the caller checks the
	 * diff_id later (a lazy layer's fill, lazy-zran.c) */
	bool diff_id_later;
	/* the blob is not hashed either: whoever delivers its bytes on
	 * blob_fd has checked, or checks before the caller uses the result,
	 * that they hash to the digest (a registry's download, which hashes
	 * what it sends: lazy-zran.c, stream_pass()) */
	bool digest_checked;
};

/*
 * Unpack and verify; on success dest_fd holds "index" and data/.
 * On failure dest_fd's contents are garbage for the caller to remove.
 */
int strata_unpack_layer(const struct strata_unpack_job *job,
			struct strata_err *err);

/*
 * Read a layer blob from @fd to its end with the same checks: @digest
 * (and @size, unless -1), decompressed as @compression says (or sniffed),
 * the tar read as far as its end blocks. @diff_id gets the sha256 of the
 * uncompressed bytes, *comp_out the compression, *size_out the blob's
 * size. For Docker schema 1, whose manifests carry no diff_ids.
 */
int strata_blob_diff_id(int fd, const char *digest, int64_t size,
			int compression, uint64_t max_bytes, char *diff_id,
			int *comp_out, int64_t *size_out,
			struct strata_err *err);

/*
 * Building a layer index from entries that do not come from a tar stream
 * (a lazy layer's table of contents): each entry is checked and applied
 * as unpacking applies a tar entry (paths, whiteouts, hardlinks, limits),
 * but no content is written; a non-empty regular file gets a content
 * number (1, 2, ... in order) for its data/ file.
 * new: @digest names the layer in messages (borrowed only during the
 * call); @expect, how many entries to size the tables for (a hint);
 * @err (borrowed until free) gets the first error. Caller frees
 * with strata_lxbuild_free(). add: *@data_id is the entry's content
 * number, or 0. finish: write "index" into @dest_fd (not synced: the
 * caller makes it durable or checkable).
 * Return: 0 or negative errno (message in @err).
 */
struct strata_tar_entry;
struct strata_lxbuild;
int strata_lxbuild_new(const char *digest, uint64_t max_entries,
		       uint64_t expect, struct strata_err *err,
		       struct strata_lxbuild **out);
int strata_lxbuild_add(struct strata_lxbuild *b,
		       const struct strata_tar_entry *g, uint32_t *data_id);
int strata_lxbuild_finish(struct strata_lxbuild *b, int dest_fd);
void strata_lxbuild_free(struct strata_lxbuild *b);
/* Hide eStargz's own files at the layer root (unpack.c explains). */
void strata_lxbuild_hide_esgz(struct strata_lxbuild *b);
/* Is @name (a tar or TOC name) eStargz's file @which: 0 stargz.index.json,
 * 1 .prefetch.landmark, 2 .no.prefetch.landmark? */
bool strata_esgz_meta_name(const char *name, size_t which);

#endif
