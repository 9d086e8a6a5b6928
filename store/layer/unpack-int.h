/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inside the unpacker (unpack.c, the entries; unpack-read.c, the
 * decompressing, hashing reader; unpack-tree.c, the in-memory tree and
 * the index written from it). Not for other files: store/layer/unpack.h
 * is the unpacker's interface.
 */
#ifndef STRATA_UNPACK_INT_H
#define STRATA_UNPACK_INT_H

#include <archive.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <zstd.h>

#include "tarscan.h"
#include "unpack.h"
#include "zran.h"

#define BUF_SIZE (1u << 20)
#define NONE UINT32_MAX
#define PATH_MAX_BYTES 4096
#define NAME_MAX_BYTES 255

/* ---- the decompressing, hashing reader (unpack-read.c) ---- */

struct reader {
	int fd;
	int comp;
	uint64_t want_size;
	uint64_t compressed, uncompressed, max_uncompressed;
	struct strata_hasher *blob_h, *diff_h;	/* diff_h may be NULL */
	const unsigned char *in;	/* inbuf, or into map */
	unsigned char *inbuf, *out;
	const unsigned char *map;	/* or NULL: the blob in memory */
	uint64_t map_len;
	int (*map_wait)(void *ctx, uint64_t end);	/* unpack.h */
	void *map_wait_ctx;
	const char *map_what;
	pthread_t map_hasher;	/* hashes fd, the mapped file, into blob_h */
	bool map_hashing;
	size_t in_pos, in_len;
	bool in_eof, stream_end;
	struct strata_gzdec *gz;	/* gzdec.c */
	ZSTD_DStream *zs;
	int error;
	char msg[256];
	void (*progress)(void *ctx, uint64_t bytes);
	void *progress_ctx;
	struct strata_tarscan scan;	/* refuses unknown type flags */
	struct strata_zran_builder *zran;	/* or NULL (zran.h) */
	int copy_fd;		/* or -1: gets the blob's bytes */
};

/* ---- the in-memory tree (unpack-tree.c) ---- */

struct unode {
	uint32_t parent;
	uint32_t name_off;
	uint16_t name_len;
	uint16_t flags;
	uint32_t mode;
	uint16_t owner;		/* index of (uid, gid) in the owner table */
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t rdev;
	uint32_t leader;	/* hardlink leader */
	uint32_t nlink;		/* group size, at the leader */
	uint32_t link_off;	/* symlink target */
	uint32_t xattr_off, xattr_len;
	uint32_t data_id;
	uint32_t first_child, next_sibling, n_children;
	uint32_t final;
};

struct tree {
	struct unode *nodes;
	uint32_t n, cap;
	char *str;
	size_t str_len, str_cap;
	uint32_t *str_slots;	/* hash of the strings -> offset + 1 */
	size_t n_str_slots, n_strs;
	uint8_t *xat;
	size_t xat_len, xat_cap;
	uint32_t *slots;	/* hash of (parent, name) -> node + 1 */
	size_t n_slots;
	uint32_t next_data;
	uint64_t data_bytes;
	uint64_t features;
	struct strata_lx_owner *owners;	/* [0] is 0:0 */
	size_t n_owners, owners_cap;
	uint32_t *owner_slots;	/* hash of (uid, gid) -> owner + 1 */
	size_t n_owner_slots;
};

/* a node hidden by a whiteout of the same layer (until settled) */
#define U_WHITED (1u << 15)

/* unpack-read.c */
void up_reader_release(struct reader *rd);
void *up_hash_map(void *arg);
ssize_t up_next_chunk(struct reader *r, const void **buf);
la_ssize_t up_archive_read_cb(struct archive *a, void *ctx,
			      const void **buf);
int up_drain(struct reader *rd, const char *sd, struct strata_err *err);
void up_map_hash_join(struct reader *r);

/* unpack-tree.c */
uint32_t up_tree_find(struct tree *t, uint32_t parent, const char *name,
		      size_t len);
int up_tree_add(struct tree *t, uint32_t parent, const char *name,
		size_t len, uint32_t *out);
void up_make_implied_dir(struct unode *u);
int up_grow(void **p, size_t *cap, size_t need, size_t elem);
int up_owner_index(struct tree *t, uint32_t uid, uint32_t gid);
int up_add_str(struct tree *t, const char *s, size_t len, uint32_t *off);
int up_rehash(struct tree *t);
int up_rehash_to(struct tree *t, size_t n);
void up_settle_implied(struct tree *t);
int up_write_index(struct tree *t, int dirfd, bool sync);
void up_tree_free(struct tree *t);

#endif
