/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A layer's table of contents in JSON, as zstd:chunked and eStargz both
 * write it (the same entry fields, from the same stargz lineage), read
 * into a lazy layer's index and content table (store/layer/toc.c). What differs
 * between the formats, where a file's bytes are in the blob and what a
 * "chunk" entry means, is in zchunked-toc.c and estargz.c.
 */
#ifndef STRATA_TOC_H
#define STRATA_TOC_H

#include "lazy.h"

/* The fields of an entry strata reads; others are skipped. */
enum {
	TE_TYPE, TE_NAME, TE_LINK, TE_MODTIME, TE_DIGEST, TE_MODE, TE_SIZE,
	TE_UID, TE_GID, TE_MAJOR, TE_MINOR, TE_OFFSET, TE_END, TE_XATTRS,
	TE_CHUNK_OFFSET, TE_CHUNK_SIZE, TE_CHUNK_DIGEST, TE_INNER_OFFSET,
	TE_N
};

struct strata_toc_entry {
	uint32_t seen, set;	/* bit per field: its key came; not null */
	const char *s[TE_N];
	int64_t n[TE_N];
	unsigned char *xr;	/* tarscan's xattr records, reused */
	size_t xr_len, xr_cap, n_xattrs;
	size_t *xoff;		/* offsets of the records, for duplicates */
	size_t xoff_cap;
};

#define TE_HAS(e, f) (((e)->set >> (f)) & 1u)

struct strata_toc_build {
	/* set by the format before strata_toc_read() */
	const char *format;	/* "zstd:chunked", "eStargz", in messages */
	const char *sd;		/* short layer digest, in messages */
	struct strata_err *err;
	uint64_t toc_start;	/* content ranges end before this */
	uint64_t max_bytes;	/* of all files' content */
	/* the content range of regular file @e (@size bytes, its digest
	 * already checked): *off, and *end or 0 while it is not known */
	int (*content)(struct strata_toc_build *bd,
		       const struct strata_toc_entry *e, uint64_t size,
		       uint64_t *off, uint64_t *end);
	/* a "chunk" entry, part of the file before it */
	int (*chunk)(struct strata_toc_build *bd,
		     const struct strata_toc_entry *e);
	/* after the last entry, before the index is written, or NULL */
	int (*finish)(struct strata_toc_build *bd);
	/* a chunk without "chunkSize" runs to the end of its file (eStargz
	 * writes none for a file's last or only chunk) */
	bool chunk_rest;
	/* state */
	struct strata_lxbuild *b;
	uint64_t prev_end;	/* of the last content range */
	uint64_t last_off;	/* the format's: last content offset seen */
	uint64_t total;
	uint32_t prefetch;	/* the content table header's */
	struct strata_lz_rec *recs;
	size_t n_recs, cap_recs;
	const char *reg_name;	/* the regular file "chunk" entries follow */
	uint8_t sha256[32];	/* the digest of the entry being added */
	uint64_t reg_off, reg_end;
	/* the chunk list of that file ("chunks", lazy.h) */
	struct strata_lz_chunk *chunks;
	size_t n_chunks, cap_chunks;
	bool chunked;		/* its entry names a first chunk */
	uint32_t reg_rec;	/* its content record, or UINT32_MAX */
	uint64_t reg_size, chunk_end;
	/* strata_toc_metas(): what the TOC says of each entry (lazy.h) */
	bool meta_only;
	struct strata_lz_meta *metas;
	size_t n_metas, cap_metas;
};

/* An error about entry @name (NULL: it has none): -EBADMSG. */
int strata_toc_entry_err(struct strata_toc_build *bd, const char *name,
			 const char *why);

/* "sha256:" and 64 lower-case hex digits into @out. 0 or -EINVAL. */
int strata_toc_sha256(const char *digest, uint8_t out[32]);

/* (toc.c also holds strata_lz_meta_of() and strata_lz_meta_differ(),
 * declared in lazy.h for lazy-fill.c's check after the fill.) */

/*
 * Read the TOC document @json (@len bytes, NUL-terminated; the reader
 * unescapes strings in place) of layer @digest into directory @dest_fd
 * ("index", "contents", "chunks", empty "data/"; not synced):
 * every entry is checked as a tar entry is (unpack.c), and the chunks of
 * a file must follow one another and cover it exactly. Frees what @bd
 * gathered. Return: 0, -EBADMSG (message in bd->err), -EOPNOTSUPP for a
 * version other than 1, or another negative errno.
 */
int strata_toc_read(struct strata_toc_build *bd, char *json, size_t len,
		    const char *digest, uint64_t max_entries, int dest_fd);

/*
 * Read the TOC document @json again, once the whole blob is at hand,
 * building nothing: only what each entry other than "chunk" says of its
 * metadata, in order, into *@metas (*@n records, free() them) for the
 * compare with the tar (lazy-fill.c). The work of a sha256 or three an entry
 * is done there, in the background, not before the mount is live.
 * Return: 0, -EBADMSG (message in bd->err), -ENOMEM.
 */
int strata_toc_metas(struct strata_toc_build *bd, char *json, size_t len,
		     struct strata_lz_meta **metas, size_t *n);

#endif
