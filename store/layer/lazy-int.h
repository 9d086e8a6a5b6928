/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inside lazy layers: lazy.c (the cache entry, opening a layer),
 * lazy-fill.c (filling and the check after it), lazy-src.c (range
 * sources, decompressing). Other files use lazy.h.
 */
#ifndef STRATA_LAZY_INT_H
#define STRATA_LAZY_INT_H

#include <stdatomic.h>

#include "lazy.h"
#include "tarscan.h"
#include "unpack.h"
#include "zran.h"

#define IO_SIZE (1u << 20)
/* what the check after the fill asks a registry for at a time */
#define REMOTE_IO_SIZE (8u << 20)

/* An open lazy layer (strata_layer_open(); the index's lazy part). */
struct strata_lazy {
	struct strata_range_src *src;
	const struct strata_lz_rec *recs;
	uint32_t n;
	const struct strata_lindex *lx;	/* the layer's, for path_of() */
	void *map;
	size_t map_len;
	/* "chunks" of a TOC layer (toc.c) */
	const struct strata_lz_chunk *chunks;
	uint64_t n_chunks;
	void *chunkmap;
	size_t chunkmap_len;
	/* what the TOC says of each entry: only while verify_layer() runs */
	struct strata_lz_meta *metas;
	size_t n_metas;
	char *toc_digest, *toc_position;	/* the layer's annotations */
	int dirfd;		/* the layer's directory */
	int datafd;		/* its data/ */
	int contentfd;		/* layers/lazy/content, or -1 */
	char *image, *digest, *diff_id;
	int64_t size;		/* of the blob */
	atomic_bool bad;
	/* a gzip/zstd layer (lazy-zran.c): its access points and the
	 * store's copy of its blob; records hold uncompressed ranges */
	struct strata_zran *zran;
	int blobfd;
	bool gzip;		/* eStargz: gzip members, not zstd frames */
	uint32_t prefetch;	/* the content table header's */
	/* a bit per content number: its data/ file was found intact, or
	 * filled, by this mount (where there are no xattrs to say so) */
	atomic_uchar *intact;
};

/* Is content file @id neither filled nor found intact yet? (lazy-fill.c) */
bool lz_missing(struct strata_lazy *z, uint32_t id);
/* Every file filled: remove the store's copy of a gzip/zstd layer's
 * blob, the files synced first (lazy.c). */
int lz_drop_blob(struct strata_lazy *z);

#endif
