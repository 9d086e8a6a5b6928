/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal to store/: the pieces strata_commit() (store.h) is built from.
 *
 *   blobwrite.c   a blob being written: compress (gzip on both cores, zstd,
 *                 none), hash the uncompressed stream (diff_id) and the
 *                 compressed one (digest) in the same pass, publish
 *                 atomically under blobs/sha256/
 *   tarwrite.c    PAX tar headers, byte-for-byte reproducible
 *   imgview.c     the merged view of a cached image: resolve a path, list a
 *                 directory (for metacopy and redirect entries of an upper)
 *   layout-write.c  writing into an OCI layout under its lock: blobs,
 *                 index.json tags
 *   commit.c      the upper-directory walk, config, manifest
 *   zchunked.c    zstd:chunked and eStargz: a frame (gzip member) per file
 *                 content chunk and a TOC
 */
#ifndef STRATA_COMMIT_H
#define STRATA_COMMIT_H

#include "store-internal.h"

/* ---- blobwrite.c ---- */

/* gzip: zlib level 6, windowBits 15, memLevel 8, default strategy, one gzip
 * member of raw deflate chunks of 1 MiB input each ended by a sync flush
 * (pigz-style, no dictionary carried over), so the bytes do not depend on
 * the number of threads. zstd: level 3, checksum on. */
#define STRATA_GZIP_LEVEL 6
#define STRATA_ZSTD_LEVEL 3

struct strata_blobw;

/*
 * Start a blob in the layout whose directory is @dir_fd (temporary file
 * there, renamed into @dir_fd/blobs/sha256/ by strata_blobw_finish()).
 * @compression is STRATA_COMP_NONE, _GZIP, _ZSTD, _ZSTD_CHUNKED or _ESTARGZ; @threads is the number
 * of gzip workers (0 = online CPUs, capped at 4).
 * Caller frees with strata_blobw_free() (removes the temporary file when the
 * blob was not finished).
 */
int strata_blobw_new(int dir_fd, int compression, int threads,
		     struct strata_blobw **out);
/* Skip the fsyncs of strata_blobw_finish() and _finish_as(): for a blob in
 * a staging directory that is deleted once read (a commit to docker://). */
void strata_blobw_set_nosync(struct strata_blobw *w);
/* Do not hash what is written (the digests are not wanted: an export). */
void strata_blobw_set_nohash(struct strata_blobw *w);
/* An uncompressed, unhashed stream into @fd, the caller's (a pipe or a
 * file it opened): strata_blobw_flush() writes out the rest. */
int strata_blobw_new_fd(int fd, struct strata_blobw **out);
int strata_blobw_flush(struct strata_blobw *w);
int strata_blobw_write(struct strata_blobw *w, const void *buf, size_t n);
/* Uncompressed bytes written so far. */
uint64_t strata_blobw_bytes(const struct strata_blobw *w);
/*
 * Flush, fsync, rename to blobs/sha256/<hex>. @digest and @diff_id get
 * STRATA_DIGEST_MAX bytes each. Return: 0 or negative errno.
 */
int strata_blobw_finish(struct strata_blobw *w, char *digest, char *diff_id,
			int64_t *size);
/* Like strata_blobw_finish() but renamed to @name in the directory given
 * to strata_blobw_new() (an archive being written). */
int strata_blobw_finish_as(struct strata_blobw *w, const char *name);
void strata_blobw_free(struct strata_blobw *w);
static inline void strata_blobw_freep(struct strata_blobw **w)
{
	if (*w)
		strata_blobw_free(*w);
}

/* ---- tarwrite.c ---- */

struct strata_tar_xattr {
	const char *name;
	const void *value;
	size_t len;
};

struct strata_tar_hdr {
	const char *path;	/* relative, no leading "./" or "/"; "" = root */
	char type;		/* '0' '1' '2' '3' '4' '5' '6' */
	uint32_t mode;		/* permission bits (07777) */
	uint32_t uid, gid;
	uint64_t size;		/* regular files */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	const char *linkname;	/* '1' and '2' */
	uint32_t devmajor, devminor;
	const struct strata_tar_xattr *xattrs;	/* sorted by name */
	size_t n_xattrs;
};

/*
 * Write the header(s) of one entry: a PAX 'x' header when something does not
 * fit ustar exactly (long names, nanoseconds, big ids or sizes, xattrs as
 * SCHILY.xattr.*), then the ustar header; numeric owners, empty uname and
 * gname, directories named with a trailing '/'. The caller then writes
 * exactly @size bytes of content and calls strata_tar_pad().
 */
int strata_tar_header(struct strata_blobw *w, const struct strata_tar_hdr *h);
int strata_tar_pad(struct strata_blobw *w, uint64_t size);
/* An archive member of fixed owner (0:0) and mode (0755 for a directory,
 * 0644 otherwise) at @mtime; strata_tar_file() writes @len bytes of @buf
 * as its content and the padding. */
int strata_tar_member(struct strata_blobw *w, const char *name, char type,
		      uint64_t size, int64_t mtime);
int strata_tar_file(struct strata_blobw *w, const char *name, const void *buf,
		    size_t len, int64_t mtime);
/* The two zero blocks that end an archive. */
int strata_tar_end(struct strata_blobw *w);

/* ---- imgview.c ---- */

struct strata_imgview;

/* Open the cached layers of @img (strata_cache_ensure() first). Caller
 * frees with strata_imgview_free(). */
int strata_imgview_open(struct strata_store *st, const struct strata_image *img,
			struct strata_imgview **out, struct strata_err *err);
void strata_imgview_free(struct strata_imgview *v);
static inline void strata_imgview_freep(struct strata_imgview **v)
{
	if (*v)
		strata_imgview_free(*v);
}

/* A merged-view entry: the layer (0 = bottom) and index entry that win. */
struct strata_imgview_ent {
	uint32_t layer;
	uint32_t entry;
};

/*
 * Resolve @path ("a/b/c", "" for the root) in the merged view: layers top
 * to bottom, whiteouts and opaque directories honoured.
 * Return: 0, -ENOENT.
 */
int strata_imgview_lookup(struct strata_imgview *v, const char *path,
			  struct strata_imgview_ent *out);

struct strata_imgview_child {
	char *name;		/* malloc'd */
	struct strata_imgview_ent ent;
};

/* The merged children of directory @path, sorted by name, as the mount
 * lists them (fs/merge.c); a directory child's ent is the entry its
 * attributes come from, as strata_imgview_lookup() gives it. Caller frees
 * with strata_imgview_children_free(). Return: 0, -ENOENT, -ENOTDIR. */
int strata_imgview_list(struct strata_imgview *v, const char *path,
			struct strata_imgview_child **out, size_t *n);
void strata_imgview_children_free(struct strata_imgview_child *c, size_t n);

/*
 * The merged tree one directory at a time (for walks that keep their
 * place, as diff does). A merged directory is its sources: the layer
 * entries that are this directory, top first, cut below the first opaque
 * one (fs_dir_sources()). Caller frees ->s.
 */
struct strata_mdir {
	struct strata_imgview_ent *s;
	uint32_t n;
};
/* A visible child of a merged directory; @name borrowed from the index;
 * a directory's ent is the one its attributes come from. */
struct strata_mkid {
	const char *name;
	uint32_t len;
	uint32_t rank;
	struct strata_imgview_ent ent;
};
int strata_mdir_root(struct strata_imgview *v, struct strata_mdir *out);
/* Sources of child directory @name of @parent (none: n = 0). */
int strata_mdir_child(struct strata_imgview *v,
		      const struct strata_mdir *parent,
		      const char *name, size_t len, struct strata_mdir *out);
/* The visible entry @name of @parent: true and *@out if there is one. */
bool strata_mdir_find(struct strata_imgview *v,
		      const struct strata_mdir *parent,
		      const char *name, size_t len,
		      struct strata_imgview_ent *out);
/* The entry whose attributes directory @m shows. */
struct strata_imgview_ent strata_mdir_attr(struct strata_imgview *v,
					   const struct strata_mdir *m);
/* The visible children of @m sorted by name (fs_dir_merge()); caller
 * frees *@out. */
int strata_mdir_list(struct strata_imgview *v, const struct strata_mdir *m,
		     struct strata_mkid **out, size_t *n);
/* Resolve "a/b/c" ("" = the root): *@found, the visible entry and, for a
 * directory, its sources in @dir (caller frees dir->s). */
int strata_mdir_resolve(struct strata_imgview *v, const char *path,
			struct strata_imgview_ent *out, struct strata_mdir *dir,
			bool *found);

/* Borrowed; valid until strata_imgview_free(). */
const struct strata_lindex *strata_imgview_layer(struct strata_imgview *v,
						 uint32_t layer);
/* Open the content of a regular file entry read-only; -1 with errno for an
 * empty file (errno 0) or an error. */
int strata_imgview_open_data(struct strata_imgview *v,
			     const struct strata_imgview_ent *e);

/* ---- layout-write.c ---- */

struct strata_layoutw {
	char *path;
	int dir_fd;
	int blobs_fd;
	int lock_fd;
	bool keep_untagged;	/* the store: see strata_index_retag() */
	bool staging;		/* read once, then deleted: no fsync */
};

/*
 * Open (creating when @create) an OCI layout for writing and take its lock
 * (.index.lock, the lock the store uses too): two writers serialise here.
 * Caller frees with strata_layoutw_free(), which unlocks.
 */
int strata_layoutw_open(int at_fd, const char *path, bool create,
			struct strata_layoutw **out, struct strata_err *err);
/*
 * Create a staging layout at @at_fd/@path: as strata_layoutw_open(), but
 * nothing written into it is fsync'd (nor blobs made with a strata_blobw
 * the caller marks with strata_blobw_set_nosync()). For a directory that
 * is read once and deleted, never for one anything else reads.
 */
int strata_layoutw_open_staging(int at_fd, const char *path,
				struct strata_layoutw **out,
				struct strata_err *err);
void strata_layoutw_free(struct strata_layoutw *lw);
static inline void strata_layoutw_freep(struct strata_layoutw **lw)
{
	if (*lw)
		strata_layoutw_free(*lw);
}
/* Store @buf as a sha256 blob (temp, fsync, rename, fsync dir; without
 * the fsyncs when @lw->staging). */
int strata_layoutw_put(struct strata_layoutw *lw, const void *buf, size_t len,
		       char *digest_out);
/* Copy blob @digest from @src_blobs_fd unless present, verifying it
 * (fsync'd as strata_layoutw_put()). */
int strata_layoutw_copy(struct strata_layoutw *lw, int src_blobs_fd,
			const char *digest, int64_t size,
			struct strata_err *err);
/*
 * Point each of @tags at the manifest descriptor (replacing descriptors
 * with the same org.opencontainers.image.ref.name); index.json replaced
 * atomically.
 */
int strata_layoutw_tag(struct strata_layoutw *lw, const char *media_type,
		       const char *digest, int64_t size, const char *const *tags,
		       size_t n_tags, struct strata_err *err);


/* ---- commit-layer.c ---- */

struct strata_layer_walk {
	struct strata_store *st;
	struct strata_image *img;	/* the image under the upper dir */
	int upper_fd;			/* the upper directory */
	const char *const *mask;	/* "/a/b" or "a/b" prefixes */
	size_t n_mask;
	char **volumes;			/* NULL-terminated, or NULL */
	bool clamp;			/* clamp mtimes to clamp_sec */
	int64_t clamp_sec;
	/* instead of a tar (w NULL): each entry's header in tar order, then
	 * a regular file's content as @fd (-1: empty), borrowed for the
	 * call; what they return ends the walk when negative */
	int (*sink_entry)(void *ctx, const struct strata_tar_hdr *h,
			  struct strata_err *err);
	int (*sink_data)(void *ctx, int fd, uint64_t size,
			 struct strata_err *err);
	void *sink_ctx;
	bool squash;			/* the merged tree of image and upper
					 * (upper_fd -1: the image alone),
					 * not the changes; masks apply to the
					 * upper's changes only */
	const char *progress;		/* progress label; NULL: committing */
};

/* Xattrs a layer never carries: the overlay's own, override_stat,
 * security.selinux (umoci's rule, oci/layer/xattr.go). */
bool strata_commit_xattr_skipped(const char *name);

/*
 * Write the layer tar of the upper directory into @w (not finished).
 * *entries gets the number of entries written: 0 means no change.
 * With @lw->squash: the whole tree, directories first, names sorted
 * bytewise in each, hardlinks to the first name written.
 */
int strata_commit_layer(const struct strata_layer_walk *lw,
			struct strata_blobw *w, uint64_t *entries,
			struct strata_err *err);


/* ---- commit-archive.c ---- */

struct strata_archive_out {
	bool docker;			/* docker-archive, else oci-archive */
	const char *path;		/* the archive file */
	char *const *tags;		/* ref.name / RepoTags */
	size_t n_tags;
	int new_blobs_fd;		/* blobs/ holding config, manifest, */
	int base_blobs_fd;		/* new layer; blobs/ of the rest */
	const char *manifest_mt, *manifest_digest;
	int64_t manifest_size;
	const char *config_digest;
	int64_t config_size;
	const char *const *layers;	/* digests, base first */
	const int64_t *sizes;
	size_t n_layers;
};

int strata_archive_write(const struct strata_archive_out *a,
			 struct strata_err *err);
/* The same image as a dir: directory at @a->path (layout-dir.c; docker
 * and tags unused): @manifest holds the manifest's bytes, or NULL to read
 * them from @a->new_blobs_fd. */
int strata_dir_write(const struct strata_archive_out *a, const char *manifest,
		     struct strata_err *err);

/* ---- zchunked.c (and its hooks in blobwrite.c) ---- */

struct strata_zck;

/* blobwrite.c: after the header block(s) of an entry named @name (as in
 * the tar header) are written, before its content: a TOC entry for a
 * zstd:chunked blob, nothing for others. tarwrite.c calls it. */
int strata_blobw_entry(struct strata_blobw *w, const struct strata_tar_hdr *h,
		       const char *name);
#define STRATA_TOC_ANNOTATIONS 2
/* blobwrite.c: once a zstd:chunked or eStargz blob is finished, the keys
 * and values of the manifest annotations that name its TOC
 * (...zstd-chunked.manifest-checksum and -position; containerd.io/
 * snapshot/stargz/toc.digest and io.containers.estargz.uncompressed-size),
 * borrowed until strata_blobw_free(); -ENOENT for other blobs. */
int strata_blobw_toc(const struct strata_blobw *w,
		     const char *key[STRATA_TOC_ANNOTATIONS],
		     const char *val[STRATA_TOC_ANNOTATIONS]);
/* blobwrite.c: before the tar's end-of-archive blocks, the JSON of a TOC
 * that goes into the tar as its last entry (eStargz's stargz.index.json):
 * @*text NULL for other blobs. tarwrite.c calls it. */
int strata_blobw_toc_entry(struct strata_blobw *w, const char **text,
			   size_t *len);
/* blobwrite.c: append compressed bytes to the blob (hashed as its
 * digest). For zchunked.c. */
int strata_blobw_out(struct strata_blobw *w, const void *buf, size_t n);

/* The zstd:chunked compressor of a blob, or with @estargz the eStargz one
 * (formats: zchunked.c). Caller frees with strata_zck_free(). */
int strata_zck_new(struct strata_zck **out, bool estargz);
void strata_zck_free(struct strata_zck *z);
/* Tar bytes, in order (compressed out through strata_blobw_out()). */
int strata_zck_data(struct strata_zck *z, struct strata_blobw *w,
		    const void *buf, size_t n);
int strata_zck_entry(struct strata_zck *z, struct strata_blobw *w,
		     const struct strata_tar_hdr *h, const char *name);
/* eStargz: the TOC JSON to write as the tar entry stargz.index.json,
 * right now (borrowed; a new member starts); NULL for zstd:chunked. */
int strata_zck_toc_entry(struct strata_zck *z, struct strata_blobw *w,
			 const char **text, size_t *len);
/* The last frame, the TOC and the footer. */
int strata_zck_finish(struct strata_zck *z, struct strata_blobw *w);
int strata_zck_toc(const struct strata_zck *z,
		   const char *key[STRATA_TOC_ANNOTATIONS],
		   const char *val[STRATA_TOC_ANNOTATIONS]);
/* One image of an archive holding several (strata save). */
struct strata_archive_img {
	char *const *tags;		/* ref.name / RepoTags "NAME:TAG" */
	size_t n_tags;
	const char *manifest_mt, *manifest_digest;
	int64_t manifest_size;
	const char *config_digest;
	int64_t config_size;
	const char *const *layers;	/* digests, base first */
	const int64_t *sizes;
	size_t n_layers;
	int blobs_fd[2];		/* where its blobs are: searched in
					 * order */
};

/*
 * Write the images @imgs into the docker-archive (@docker) or oci-archive
 * @path, each blob once however many images share it. A docker-archive gets
 * manifest.json (an entry per image) and repositories. Written to a
 * temporary name beside @path, fsync'd, renamed. Progress on a terminal.
 */
int strata_archive_write_images(const char *path, bool docker,
				const struct strata_archive_img *imgs, size_t n,
				struct strata_err *err);

/* Write the legacy (docker save) ID of each layer, whose diff_ids are
 * @diff_ids, into @ids[i] (64 hex + NUL): the hex of the layer's chain ID
 * (sha256 of "CHAIN_ID(i-1) DIFF_ID(i)"), as containers/image did. */
void strata_legacy_layer_ids(char *const *diff_ids, size_t n, char (*ids)[65]);

#endif
