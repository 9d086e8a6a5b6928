/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stratafs internals.
 *
 * Inode numbers. A lower entry is named by (layer, entry) in the layers'
 * metadata indexes, so its inode number is ((layer + 1) << 32) | leader,
 * leader being the entry's hardlink group leader: stable across remounts,
 * shared by hardlinks, and decodable without any table. The FUSE node id
 * is the same number (the root is FUSE_ROOT_ID). Files and symlinks need no
 * daemon memory at all; only directories get a struct dnode, holding the
 * layers that contribute to them (top first) and, once listed or searched,
 * the merged child array. dnodes live while the kernel holds a lookup
 * reference (forget frees them), so memory stays bounded on huge trees.
 *
 * Locking: fs->lock protects the dnode hash and lookup counts. A dnode's
 * merged children are built once under dnode->lock and never change after,
 * so readers use them without locks. Nothing on the read path takes a lock.
 */
#ifndef STRATAFS_FS_H
#define STRATAFS_FS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "store.h"

struct fs_layer {
	struct strata_lindex *lx;
	int datafd;
};

struct idmap {
	uint32_t from, to, count;
};

struct fs_src {
	uint32_t layer;
	uint32_t entry;
};

/* One visible name of a merged directory. */
struct fs_child {
	uint32_t layer;
	uint32_t entry;
};

struct dnode {
	fuse_ino_t ino;
	uint64_t nlookup;		/* protected by fs->lock */
	struct dnode *hnext;		/* protected by fs->lock */
	struct fs_src attr;		/* whose attributes the dir shows */
	struct fs_src *src;		/* contributing layers, top first;
					 * &attr when that is the only one */
	struct fs_child *children;	/* sorted by name; immutable once merged;
					 * NULL: the children are entries
					 * first.. of one layer's index */
	struct fs_child first;
	uint32_t n_src;
	uint32_t n_children;
	_Atomic bool merged;		/* set under fs_merge_lock() */
};

/* Merged child @i of @d (i < n_children). */
static inline struct fs_child fs_dir_child(const struct dnode *d, uint32_t i)
{
	struct fs_child c = d->first;

	if (d->children)
		return d->children[i];
	c.entry += i;
	return c;
}

#define FS_MERGE_LOCK_BITS 6
#define FS_MERGE_LOCKS (1u << FS_MERGE_LOCK_BITS)

struct fs {
	struct fs_layer *layers;	/* [0] is the bottom layer */
	uint32_t n_layers;
	struct dnode *root;
	pthread_mutex_t lock;
	struct dnode **hash;
	size_t hash_size, n_nodes;
	double timeout;
	bool squash_uid, squash_gid;
	uint32_t squash_uid_to, squash_gid_to;
	struct idmap *uidmap, *gidmap;
	size_t n_uidmap, n_gidmap;
	int statfs_fd;
	uint64_t total_entries;
	uint64_t features;		/* union of the layers' STRATA_LX_HAS_* */
	bool readonly;
	bool no_open;			/* kernel skips open/opendir (ro) */
	/* -o layer=N[,only]: serve layers [layer_lo, layer_lo + n_layers)
	 * of the image (layer_n 0: all of them); with show_whiteouts (one
	 * layer alone) its whiteouts are character devices 0:0 and its
	 * opaque directories carry the overlay opaque xattr, as in an
	 * overlay upper directory */
	uint32_t layer_lo, layer_n;
	bool show_whiteouts;
	bool lazy;			/* zstd:chunked layers mounted lazily */
	bool prefetch_all;		/* also layers that ask for none */
	bool prefetching;		/* the background fill runs: */
	pthread_t prefetch;
	atomic_bool stop_prefetch;
	/* node.c: each layer's entry -> parent directory entry, built on
	 * the first directory node id the kernel names that this process
	 * never gave out (a restarted worker, fs/resume.c) */
	pthread_mutex_t revive_lock;
	uint32_t **parents;
	uint32_t n_parents;
	/* Merges of different directories run in parallel; a lock per
	 * directory would cost 40 bytes each, so they share a few. */
	pthread_mutex_t merge_locks[FS_MERGE_LOCKS];
};

static inline pthread_mutex_t *fs_merge_lock(struct fs *fs,
					     const struct dnode *d)
{
	return &fs->merge_locks[(d->ino * 0x9e3779b97f4a7c15ull) >>
				(64 - FS_MERGE_LOCK_BITS)];
}

static inline fuse_ino_t fs_make_ino(uint32_t layer, uint32_t entry)
{
	return ((fuse_ino_t)(layer + 1) << 32) | entry;
}

static inline const struct strata_lx_entry *
fs_entry(const struct fs *fs, uint32_t layer, uint32_t entry)
{
	return strata_lx_entry(fs->layers[layer].lx, entry);
}

/* The file type and mode @e shows: a whiteout (only with
 * show_whiteouts is one ever reached) is a character device 0:0. */
static inline mode_t fs_entry_mode(const struct strata_lx_entry *e)
{
	return (e->flags & STRATA_LX_WHITEOUT) ? S_IFCHR : e->mode;
}

/* Is @e shown as a directory (a whited-out implied directory is not)? */
static inline bool fs_entry_isdir(const struct strata_lx_entry *e)
{
	return S_ISDIR(e->mode) && !(e->flags & STRATA_LX_WHITEOUT);
}

static inline const char *fs_name(const struct fs *fs, uint32_t layer,
				  const struct strata_lx_entry *e)
{
	return strata_lx_str(fs->layers[layer].lx, e->name_off);
}

/* image.c: the background fill of lazy layers (strata_lx_prefetch),
 * bottom layer first, in a thread of its own; stop waits for it. */
int fs_prefetch_start(struct fs *fs);
void fs_prefetch_stop(struct fs *fs);

/* node.c */
int fs_nodes_init(struct fs *fs);
void fs_nodes_free(struct fs *fs);
/* Find the dnode for @ino; NULL if none. Borrowed: valid while the kernel
 * holds a reference, i.e. for the duration of a request on it. A
 * directory node id this process never gave out (the kernel kept it
 * across a restart of the serving process) is rebuilt from the image:
 * node ids name (layer, entry), so the entry's path is walked again from
 * the root, and the node is made only if that walk ends at the same
 * entry (taking one lookup reference, which the kernel's FORGET of its
 * own count, never smaller, gives back). */
struct dnode *fs_dnode_get(struct fs *fs, fuse_ino_t ino);
/* Find or create the dnode of directory child @c of @parent and take one
 * lookup reference. Return: the node or NULL (-ENOMEM). */
struct dnode *fs_dnode_ref(struct fs *fs, struct dnode *parent,
			   const struct fs_child *c);
void fs_dnode_forget(struct fs *fs, fuse_ino_t ino, uint64_t n);

/* merge.c */
/* Build @d's merged child array once. Return: 0 or -ENOMEM. */
int fs_dir_merge(struct fs *fs, struct dnode *d);
/* Find @name among @d's merged children. Return: found (into *out). */
bool fs_dir_find(struct fs *fs, struct dnode *d, const char *name,
		 size_t len, struct fs_child *out);
/* Sources of directory @name in @parent (top first) into @d: src, n_src
 * and the attribute source (src is &d->attr when that is the only one).
 * Return: 0, -ENOENT or -ENOMEM. */
int fs_dir_sources(struct fs *fs, struct dnode *parent, const char *name,
		   size_t len, struct dnode *d);
int fs_root_sources(struct fs *fs, struct dnode *root);

/* image.c */
/* Open @img's layer indexes into @fs, move the layers' paths through
 * lower symlinks (strata_lx_graft) and set up its root. */
int fs_image_load(struct fs *fs, struct strata_store *st,
		  struct strata_image *img, struct strata_err *err);
void fs_image_unload(struct fs *fs);
struct wfs;
/* After a live commit: serve image @ref (settings like @like's) under @w
 * with an empty upper directory; *manifest is its digest (borrowed). */
int fs_continue(struct wfs *w, struct strata_store *st, const struct fs *like,
		const char *ref, char **manifest, struct strata_err *err);
void fs_continue_free(void);

/* ops.c */
extern const struct fuse_lowlevel_ops fs_ops;
void fs_fill_stat(struct fs *fs, fuse_ino_t ino, uint32_t layer,
		  const struct strata_lx_entry *e, uint32_t n_src,
		  struct stat *st);
/* Answer a read of @size bytes at @off of @fd: small ones with pread into
 * a stack buffer, larger ones spliced. */
void fs_reply_read(fuse_req_t req, int fd, size_t size, off_t off);
/* Walk an entry's xattr records (u16 name_len, u32 value_len, name,
 * value); NULL at the end or on a malformed record. */
const uint8_t *fs_xattr_next(const uint8_t *p, const uint8_t *end,
			     const char **name, size_t *nlen,
			     const void **val, size_t *vlen);

#endif
