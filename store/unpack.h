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

#endif
