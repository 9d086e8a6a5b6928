/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata store: the one header fs/ and tools/ include.
 *
 * References name images; the store resolves them to a manifest, a config and
 * layer descriptors, verifying every blob it reads; the layer cache unpacks
 * each layer once (keyed by diff_id) into content files plus a metadata index
 * (struct strata_lx_*) that stratafs serves from.
 *
 * Errors: functions return 0 (or a count) on success and a negative errno on
 * failure; those taking a struct strata_err * also record a message naming
 * the image, blob and entry.
 */
#ifndef STRATA_STORE_H
#define STRATA_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"

/* ---- digests ----------------------------------------------------------- */

#define STRATA_DIGEST_MAX 160	/* "sha512:" + 128 hex + NUL, with room */

/*
 * Check @s against the OCI digest grammar, and for sha256/sha512 the exact
 * lower-case hex length. @len is the string length (embedded NULs refused).
 * Return: 0, -EINVAL for a malformed digest, -EOPNOTSUPP for a well-formed
 * digest of an algorithm strata cannot verify.
 */
int strata_digest_validate(const char *s, size_t len);

struct strata_hasher;	/* streaming sha256 or sha512 */

/* Start hashing with the algorithm named by @digest's prefix ("sha256:...").
 * Return: 0, -EOPNOTSUPP, -ENOMEM. Caller frees with strata_hasher_free(). */
int strata_hasher_new(const char *digest, struct strata_hasher **out);
int strata_hasher_new_alg(const char *alg, struct strata_hasher **out);
void strata_hasher_update(struct strata_hasher *h, const void *buf, size_t n);
/* Feed all of @fd (pread from 0 to its end) to @h. Return: 0 or negative
 * errno. */
int strata_hash_fd(struct strata_hasher *h, int fd);
/* Write "alg:hex" into @out (STRATA_DIGEST_MAX bytes). */
void strata_hasher_final(struct strata_hasher *h, char *out);
void strata_hasher_free(struct strata_hasher *h);
static inline void strata_hasher_freep(struct strata_hasher **h)
{
	if (*h)
		strata_hasher_free(*h);
}

/* sha256 of a buffer, as "sha256:hex" into @out (STRATA_DIGEST_MAX). */
void strata_sha256(const void *buf, size_t n, char *out);

/* ---- references -------------------------------------------------------- */

enum strata_ref_kind {
	STRATA_REF_OCI,			/* oci:DIR[:TAG|@DIGEST] */
	STRATA_REF_OCI_ARCHIVE,		/* oci-archive:FILE[:TAG] */
	STRATA_REF_DOCKER_ARCHIVE,	/* docker-archive:FILE[:NAME:TAG] */
	STRATA_REF_STORE,		/* NAME[:TAG][@DIGEST] in the store */
	STRATA_REF_DOCKER,		/* docker://[HOST/]PATH[:TAG|@DIGEST] */
	STRATA_REF_DIR,			/* dir:DIR (skopeo's directory) */
};

struct strata_ref {
	enum strata_ref_kind kind;
	char *path;	/* DIR or FILE; NULL for STRATA_REF_STORE; the
			 * repository ("library/alpine") for docker:// */
	char *registry;	/* docker://: "docker.io", "localhost:5000" */
	char *tag;	/* tag, "NAME:TAG" for docker-archive and store; or NULL */
	char *digest;	/* "@DIGEST" form, or NULL */
	char *text;	/* the reference as given */
};

/*
 * Parse a containers-transports(5) reference. A store reference gets the
 * default tag "latest"; with "@DIGEST" (NAME[:TAG]@DIGEST) the digest picks
 * the image and the name is kept only for ":TAG" destinations. Return: 0, -EINVAL (message in @err), -ENOMEM.
 * Caller frees *out with strata_ref_free().
 */
int strata_ref_parse(const char *s, struct strata_ref **out,
		     struct strata_err *err);
void strata_ref_free(struct strata_ref *ref);
static inline void strata_ref_freep(struct strata_ref **r)
{
	if (*r)
		strata_ref_free(*r);
}

/* Normalise "NAME[:TAG]" for the store into "NAME:TAG" (malloc'd).
 * Return: 0, -EINVAL if the name is not a valid reference name. */
int strata_store_name(const char *s, char **out, struct strata_err *err);

/* ---- platforms ---------------------------------------------------------- */

struct strata_platform {
	char os[32];
	char arch[32];
	char variant[32];	/* "" when unset */
};

/* Parse "os/arch[/variant]". Return: 0 or -EINVAL. */
int strata_platform_parse(const char *s, struct strata_platform *out);
/* The platform strata runs on, in Go GOOS/GOARCH spelling. */
void strata_platform_host(struct strata_platform *out);

/* ---- store and images -------------------------------------------------- */

struct strata_store;

/*
 * Open (creating if needed) the store at @root, or when NULL at $STRATA_ROOT,
 * /var/lib/strata (root) or $XDG_DATA_HOME/strata. Caller frees with
 * strata_store_free().
 */
int strata_store_open(const char *root, struct strata_store **out,
		      struct strata_err *err);
void strata_store_free(struct strata_store *st);
static inline void strata_store_freep(struct strata_store **s)
{
	if (*s)
		strata_store_free(*s);
}
/* Borrowed, valid while @st lives. */
const char *strata_store_root(const struct strata_store *st);

/* How docker:// references reach their registry. */
struct strata_reg_opts {
	const char *creds;	/* "USER[:PASS]", else the auth files */
	int tls_verify;		/* -1 default (verify; registries.conf may
				 * mark a registry insecure), 0 off: plain
				 * HTTP or unverified TLS, 1 on */
	const char *cert_dir;	/* *.crt, *.cert, *.key, instead of certs.d */
	int fetchers;		/* Range requests in flight per image (a
				 * lazy mount's reads): 0 is the default,
				 * STRATA_FETCHERS_DEFAULT */
};

#define STRATA_FETCHERS_DEFAULT 4
#define STRATA_FETCHERS_MAX 64

/* Use @o (borrowed: it must outlive @st's use) for docker:// references
 * resolved through @st. */
void strata_store_set_reg_opts(struct strata_store *st,
			       const struct strata_reg_opts *o);

/* ---- login, logout, tags (store/image/registry/registry-login.c) --------------------- */

/* The auth file login writes and logout edits ($REGISTRY_AUTH_FILE,
 * $XDG_RUNTIME_DIR/containers/auth.json, /run/containers/0/auth.json for
 * root, ~/.config/containers/auth.json) into @out. Return: 0 or -ENOENT. */
int strata_auth_file_path(char *out, size_t cap);
/* Check @o->creds ("USER:PASS") against REGISTRY's /v2/. Return: 0,
 * -EACCES (refused), or another negative errno, with @err. */
int strata_registry_login(const char *registry,
			  const struct strata_reg_opts *o,
			  struct strata_err *err);
/* Set (atomically, 0600) or remove (@registry NULL: all) the entry of
 * @registry in the auth file @path, keeping the rest. Return: 0, -ENOENT
 * (remove: no entry), or negative errno, with @err. */
int strata_auth_file_set(const char *path, const char *registry,
			 const char *user, const char *pass,
			 struct strata_err *err);
int strata_auth_file_remove(const char *path, const char *registry,
			    struct strata_err *err);
/* Call @cb with each tag of docker:// repository @ref, @page_size (0:
 * the registry's default) per request, following Link rel="next".
 * Return: 0, @cb's negative value, or negative errno with @err. */
int strata_registry_tags(const char *ref, const struct strata_reg_opts *o,
			 int page_size, int (*cb)(void *ctx, const char *tag),
			 void *ctx, struct strata_err *err);

/* ---- copy (store/image/copy.c) ---------------------------------------------- */

struct strata_copy_opts {
	const char *src;		/* any reference */
	const char *dest;		/* store NAME[:TAG], oci:DIR:TAG,
					 * oci-archive:, docker-archive:,
					 * docker:// */
	const char *const *tags;	/* more tags at the destination */
	size_t n_tags;
	const struct strata_platform *platform;	/* NULL = host */
};

/*
 * Copy the image @o->src to @o->dest: the manifest's bytes and every blob
 * as they are, so the digest stays (a docker-archive keeps the blobs and
 * writes its own manifest.json). From a registry, only the blobs the
 * destination needs are downloaded (none for another repository of the
 * same registry: they are mounted). @digest_out gets the manifest
 * digest. Return: 0 or negative errno with @err.
 */
int strata_copy(struct strata_store *st, const struct strata_copy_opts *o,
		char *digest_out, struct strata_err *err);

/* ---- push (store/image/registry/registry-push.c) -------------------------------------- */

struct strata_push_opts {
	const char *dest;		/* docker://...; its tag is the first */
	const char *const *tags;	/* more tags (borrowed) */
	size_t n_tags;
	const char *manifest;		/* pushed verbatim (borrowed) */
	size_t manifest_len;
	const char *media_type;		/* the manifest's */
	const int *blob_fds;		/* blob directories (ALG/HEX), searched
					 * in order; borrowed */
	size_t n_blob_fds;
	/* a blob in none of them that must be uploaded: put it in the
	 * first (or NULL: an error) */
	int (*fetch)(void *ctx, const char *digest, int64_t size,
		     struct strata_err *err);
	void *fetch_ctx;
};

struct strata_push_result {
	char manifest_digest[STRATA_DIGEST_MAX];
	int uploaded, mounted, skipped;	/* blobs */
	uint64_t bytes;			/* of blobs, sent or found */
};

/*
 * Push a manifest (or an index, with its children by digest) and every
 * blob it names to the registry of @o->dest, using @st's registry
 * options; blobs the registry has are skipped, blobs pulled from another
 * repository of the same registry are mounted. Progress on a terminal.
 * Return: 0, or negative errno with @err naming registry, repository and
 * blob or manifest.
 */
int strata_push(struct strata_store *st, const struct strata_push_opts *o,
		struct strata_push_result *res, struct strata_err *err);

struct strata_history {
	char *created, *created_by, *author, *comment;
	bool empty_layer;
};

struct strata_layer {
	char *media_type;
	char *digest;		/* blob digest (compressed) */
	int64_t size;
	char *diff_id;		/* from the config, verified at unpack */
	int compression;	/* enum strata_compression */
	/* zstd:chunked: the descriptor's manifest-checksum and
	 * manifest-position annotations (io.containers. or
	 * io.github.containers.), or NULL */
	char *toc_digest;
	char *toc_position;
	bool lazy;		/* strata_cache_ensure() left it lazy */
};

enum strata_compression {
	STRATA_COMP_NONE,
	STRATA_COMP_GZIP,
	STRATA_COMP_ZSTD,
	STRATA_COMP_SNIFF,	/* docker's ambiguous uncompressed types */
	STRATA_COMP_ZSTD_CHUNKED,	/* commit only: zstd with a TOC */
	STRATA_COMP_ESTARGZ,		/* commit only: gzip with a TOC */
};

/*
 * Where layer blobs that are not in blobs_fd come from (a registry).
 * open() starts fetching @l into the store and returns an fd delivering
 * its bytes from the start; finish() waits for that fetch after the
 * reader closed the fd, @reader_ret being the reader's status, and
 * returns the fetch's. It returns 0 only when the bytes delivered hash to
 * @l's digest (a registry's fetch hashes what it sends; dir: delivers the
 * store's copy, verified as it was stored), so a reader whose result is
 * kept only after finish() need not hash them again (lazy-zran.c,
 * stream_pass()). fetch() stores @l without a reader.
 */
struct strata_blob_source {
	int (*open)(struct strata_blob_source *s, const struct strata_layer *l,
		    void **handle, struct strata_err *err);
	/* or NULL: open(), but the bytes are delivered in the file the
	 * fetch writes, returned (read-only use, from offset 0): before
	 * reading up to byte @end of it, the reader calls *@wait(*@handle,
	 * @end), which returns 0 once they are written, or the fetch's
	 * negative errno when it ended short. No copy through a socket:
	 * the reader may map the file (lazy-zran.c). finish() as for
	 * open(); a reader_ret < 0 stops the fetch. */
	int (*open_file)(struct strata_blob_source *s,
			 const struct strata_layer *l, void **handle,
			 int (**wait)(void *ctx, uint64_t end),
			 struct strata_err *err);
	int (*finish)(struct strata_blob_source *s, void *handle,
		      int reader_ret, struct strata_err *err);
	int (*fetch)(struct strata_blob_source *s, const struct strata_layer *l,
		     struct strata_err *err);
	/* @len bytes at @off of blob @digest into @buf (an HTTP Range
	 * request; what a lazy layer reads), or NULL when unsupported.
	 * Safe from several threads. Return: 0 or negative errno. */
	int (*read_range)(struct strata_blob_source *s, const char *digest,
			  void *buf, size_t len, uint64_t off,
			  struct strata_err *err);
	void (*free)(struct strata_blob_source *s);
};

/* A resolved image: everything inspect shows and a mount needs. */
struct strata_image {
	char *ref_text;			/* what the user typed */
	char *manifest_digest;
	char *manifest_media_type;
	int64_t manifest_size;
	char *config_digest;
	char *config_media_type;
	int64_t config_size;
	struct strata_platform platform;
	char *created;
	char *author;
	char **env;			/* NULL-terminated lists, or NULL */
	char **entrypoint;
	char **cmd;
	char *working_dir;
	char *user;
	char **labels;			/* "K=V" */
	char **exposed_ports;
	char **volumes;
	char *stop_signal;
	size_t n_layers;
	struct strata_layer *layers;
	size_t n_history;
	struct strata_history *history;
	int blobs_fd;			/* dirfd of the blobs/ directory */
	char *blobs_desc;		/* where blobs come from, for messages */
	struct strata_blob_source *source;	/* layer blobs missing from
						 * blobs_fd, or NULL; owned */
};

/*
 * Resolve @ref (any kind) to an image: index.json -> (index -> platform) ->
 * manifest -> config, each verified against its descriptor. Archives are
 * read once into the store's blob directory (content-addressed, so repeated
 * use costs no space). @plat NULL means the host platform.
 * Caller frees *out with strata_image_free().
 */
int strata_image_resolve(struct strata_store *st, const char *ref,
			 const struct strata_platform *plat,
			 struct strata_image **out, struct strata_err *err);
void strata_image_free(struct strata_image *img);
static inline void strata_image_freep(struct strata_image **i)
{
	if (*i)
		strata_image_free(*i);
}

/*
 * Read blob @digest of @size bytes of @img (its manifest or config, at
 * most 20 MiB), verified. Caller frees *out. Return: 0 or negative errno.
 */
int strata_image_read_blob(const struct strata_image *img, const char *digest,
			   int64_t size, char **out, size_t *len,
			   struct strata_err *err);

/*
 * Copy @img (manifest, config, layer blobs; all verified) into the store
 * and point tag @name ("NAME:TAG") at it, replacing an older image of that
 * name. Return: 0 or negative errno.
 */
int strata_store_tag(struct strata_store *st, struct strata_image *img,
		     const char *name, struct strata_err *err);

struct strata_tag_info {
	char *name;		/* "NAME:TAG", NULL for an untagged image */
	char *digest;		/* manifest digest */
	int64_t size;		/* bytes of the manifest, config and
				 * (compressed) layer blobs; -1 unreadable */
	char *created;		/* the config's "created", or NULL */
};

/* List the tags of the store, in index.json's order; with @all also the
 * images that lost their last tag (name NULL) and wait for strata gc.
 * Caller frees with strata_tags_free(). */
int strata_store_list(struct strata_store *st, bool all,
		      struct strata_tag_info **out, size_t *n,
		      struct strata_err *err);
void strata_tags_free(struct strata_tag_info *tags, size_t n);

/* Remove tag @name. Return: 0, -ENOENT (message lists existing tags). */
int strata_store_untag(struct strata_store *st, const char *name,
		       struct strata_err *err);

/* ---- save and load (store/commit/save.c, store/commit/separated.c) ------------------ */

/*
 * Write the images @images (references) into @dest, "docker-archive:FILE"
 * or "oci-archive:FILE": one archive, each shared blob once; each image
 * tagged with its name (a store NAME:TAG, a docker-archive's NAME:TAG, a
 * docker:// HOST/PATH:TAG). Return: 0 or negative errno with @err.
 */
int strata_save(struct strata_store *st, const char *const *images, size_t n,
		const char *dest, const struct strata_platform *plat,
		struct strata_err *err);

/*
 * Each image of the docker-archive or oci-archive @ref (no tag), read
 * once: @cb gets the image (borrowed, its blobs in the store) and the
 * names the archive records for it. Return: 0, @cb's error, or negative
 * errno with @err.
 */
typedef int (*strata_archive_each_fn)(void *ctx, struct strata_image *img,
				      const char *const *tags, size_t n_tags,
				      struct strata_err *err);
int strata_archive_load_each(struct strata_store *st, const char *ref,
			     const struct strata_platform *plat,
			     strata_archive_each_fn cb, void *ctx,
			     struct strata_err *err);

/* isula-build's separated images (store/commit/separated.c). */
struct strata_sep_save_opts {
	const char *const *images;	/* store names of the app images */
	size_t n_images;
	const char *base;		/* store name: its layers go to
					 * NAME_TAG_base_image.tar.gz */
	const char *lib;		/* or NULL: layers above base */
	const char *rename;		/* JSON [{"name":, "rename":}] or NULL */
	const char *dir;		/* created; holds tarballs, manifest */
};
int strata_save_separated(struct strata_store *st,
			  const struct strata_sep_save_opts *o,
			  struct strata_err *err);

struct strata_sep_load_opts {
	const char *dir;		/* the manifest and tarballs */
	const char *base, *lib;		/* tarball paths instead of DIR's */
	const char *app;		/* NAME[:TAG], its key in the manifest */
	bool no_check;			/* skip the sha256 checks */
};
/* Verify and reassemble the separated image @o->app into an image whose
 * blobs are in the store (untagged: cache and tag it). *name gets the
 * name it was saved under. Caller frees both. */
int strata_load_separated(struct strata_store *st,
			  const struct strata_sep_load_opts *o,
			  struct strata_image **img, char **name,
			  struct strata_err *err);

/* ---- users of the store and gc (store/gc.c) ---------------------------- */

/*
 * Hold the store (ROOT/gc.lock, shared) until strata_store_release() or
 * strata_store_free(): strata gc removes nothing while it is held. Taken
 * by strata_image_resolve(), strata_store_tag(), strata_cache_ensure()
 * and strata_commit() themselves; waits only while a gc runs.
 * Return: 0 or negative errno.
 */
int strata_store_hold(struct strata_store *st, struct strata_err *err);
void strata_store_release(struct strata_store *st);

/*
 * Keep @img's blobs (manifest, config, layers) and cached layers from
 * strata gc for as long as @st is open (or until strata_store_unpin()),
 * named or not: a pin file in ROOT/pins, flock'ed. For a mount, which
 * then lets go of the store with strata_store_release(). The lock lives
 * in the open file, so it survives a fork (daemonizing: the parent must
 * exit without strata_store_free(), which removes the pin) and dies
 * with the last process holding it. A store this user cannot write
 * (read-only, another user's) is neither held nor pinned: its owner's
 * gc could remove an untagged image mounted from it.
 * Return: 0 or negative errno.
 */
int strata_store_pin(struct strata_store *st, const struct strata_image *img,
		     struct strata_err *err);
void strata_store_unpin(struct strata_store *st);

struct strata_gc_result {
	uint64_t images;	/* untagged manifests taken out of index.json */
	uint64_t kept_images;	/* untagged, kept: a live mount pins them */
	uint64_t blobs, blob_bytes;
	uint64_t layers, layer_bytes;	/* cached layer directories */
	uint64_t temps, temp_bytes;	/* leftovers of killed writers */
	uint64_t live_pins, stale_pins;
};

/*
 * Remove the manifests index.json lists without a name, and every blob
 * and cached layer that no named manifest reaches, except what a live
 * pin names; and what killed writers left. Bytes are disk usage
 * (st_blocks). Return: 0; -EBUSY (nothing removed) while anyone holds
 * the store; -EBADMSG etc. when a named image cannot be read (nothing
 * removed, the message names it).
 */
int strata_store_gc(struct strata_store *st, struct strata_gc_result *res,
		    struct strata_err *err);

/* ---- layer cache ------------------------------------------------------- */

struct strata_unpack_opts {
	uint64_t max_layer_bytes;	/* uncompressed; 0 = default (64 GiB) */
	uint64_t max_entries;		/* per layer; 0 = default (16M) */
	int jobs;			/* parallel layers; 0 = number of CPUs */
	bool lazy;			/* zstd:chunked layers with a verified
					 * table of contents are made lazy
					 * (store/layer/lazy.c), not unpacked */
	bool lazy_plain;		/* with lazy: gzip and zstd layers
					 * too, after a verifying metadata
					 * pass (store/layer/lazy-zran.c) */
};

/*
 * malloc tuned for reading layers (on) or back to a long-running
 * process's (off): strata_cache_ensure() does it around its pool; a caller
 * that goes on to load what it unpacked may hold it on longer (nested
 * calls count). store/layer/cache.c says why.
 */
void strata_malloc_bulk(bool on);

/*
 * Make sure every layer of @img is unpacked in the cache: missing layers are
 * unpacked in parallel, each verified (size, digest, diff_id) before it is
 * published under layers/<alg>/<hex>. Concurrent callers are serialised per
 * layer with file locks; a killed unpack leaves only a temporary directory
 * that is never trusted. Return: 0 or negative errno.
 */
int strata_cache_ensure(struct strata_store *st, struct strata_image *img,
			const struct strata_unpack_opts *opts,
			struct strata_err *err);

/*
 * Open layer @i of @img as strata_cache_ensure() left it: unpacked (by
 * its diff_id), or lazy (l->lazy), its content then filled on demand
 * from the blob, which stays open. Return: 0 or negative errno with @err.
 * Caller frees with strata_lindex_close().
 */
struct strata_lindex;
int strata_layer_open(struct strata_store *st, const struct strata_image *img,
		      size_t i, struct strata_lindex **out,
		      struct strata_err *err);

/*
 * An fd (O_RDONLY, caller closes) of the complete content file @data_id
 * (an entry's `a`) of @lx. In a lazy layer a missing file is fetched,
 * decompressed and checked against its digest first (so the call may
 * take a while; safe from several threads and processes at once). The
 * one way every reader (the mount, copy-up, commit) opens content.
 * Return: the fd, or -EIO (bad content, a bad layer, or content that
 * cannot be fetched: a registry away or refusing; logged, naming image,
 * layer and file; nothing is kept, the next read tries again), or
 * -ENOMEM, -ENOSPC, -EDQUOT.
 */
int strata_lx_content_open(struct strata_lindex *lx, uint32_t data_id);

/* Is @lx a lazy layer? */
bool strata_lx_is_lazy(const struct strata_lindex *lx);

/*
 * Fill every missing content file of lazy layer @lx in order, then check
 * the whole blob (digest and diff_id) once; a mismatch makes the layer
 * bad (later reads fail with EIO, loudly; the next mount is refused).
 * @what: STRATA_PREFETCH_FIRST fills only the files the layer names as
 * most likely needed (eStargz: those before .prefetch.landmark), to be
 * done for every layer before the rest; _REST fills everything unless
 * the layer asks for no prefetch (.no.prefetch.landmark); _ALL even then.
 * Stops early when *@stop is set, and at the first range its source
 * cannot read (a registry away: not one failure per file). Return: 0
 * (also for an unlazy layer or when stopped), -EBADMSG for a bad layer,
 * or another negative errno (the source's: call again later to resume).
 */
enum { STRATA_PREFETCH_FIRST, STRATA_PREFETCH_REST, STRATA_PREFETCH_ALL };
int strata_lx_prefetch(struct strata_lindex *lx, int what,
		       const atomic_bool *stop);

/*
 * Open the cached layer with diff_id @diff_id read-only.
 * Return: 0, -ENOENT when not cached, -EBADMSG for a corrupt index.
 * Caller frees with strata_lindex_close().
 */
struct strata_lindex;
int strata_lindex_open(struct strata_store *st, const char *diff_id,
		       struct strata_lindex **out, struct strata_err *err);
void strata_lindex_close(struct strata_lindex *lx);

/* ---- the per-layer metadata index ------------------------------------- */

/*
 * On-disk format (host endianness; the cache is local), mmap'd read-only:
 *   header | entries[n] | strings | xattr table | xattrs | implied table
 * Entry 0 is the layer root. A directory's children are contiguous,
 * starting at `a`, sorted by name (bytewise, shorter first), so lookups are
 * binary searches. Whiteouts are entries with STRATA_LX_WHITEOUT carrying
 * the name they delete; a whiteout that names an entry of the same layer is
 * folded into it at unpack (OCI: whiteouts apply only to lower layers; a
 * directory that is whited out and recreated in one layer becomes opaque).
 * Hardlinked names all carry the attributes of their group; `b` is the
 * group leader's index (the inode identity), and the group's size is in
 * the links table. Owners are (uid, gid) pairs in the owner table, which an
 * entry names by index. An entry is 32 bytes: the daemon maps every index,
 * so its size is most of the mount's memory.
 */
#define STRATA_LX_MAGIC "STRTLX08"

enum {
	STRATA_LX_WHITEOUT = 1 << 0,	/* deletes `name` in lower layers */
	STRATA_LX_OPAQUE = 1 << 1,	/* dir hides lower layers' content */
	STRATA_LX_IMPLIED = 1 << 2,	/* dir not in the tar, made for a child */
	STRATA_LX_HARDLINK = 1 << 3,	/* shares its inode with other names */
	STRATA_LX_XATTRS = 1 << 4,	/* has extended attributes */
	STRATA_LX_GHOST = 1 << 5,	/* implied dir holding only whiteouts:
					 * applies them to a lower dir of its
					 * name, else invisible (W4, W8) */
	STRATA_LX_REPLACED = 1 << 6,	/* the layer also whited this name
					 * out: what was below is gone, so
					 * an implied dir is never moved
					 * through a lower symlink (graft.c) */
};

struct strata_lx_header {
	char magic[8];
	uint32_t version;
	uint32_t n_entries;
	uint64_t entries_off;
	uint64_t strings_off;
	uint64_t strings_len;
	uint64_t xtable_off;		/* struct strata_lx_xref[n_xattr], */
	uint64_t n_xattr;		/* sorted by entry */
	uint64_t xattrs_off;
	uint64_t xattrs_len;
	uint64_t implied_off;		/* struct strata_lx_xref[n_implied]: */
	uint64_t n_implied;		/* implied dirs and their paths, BFS */
	uint64_t owners_off;		/* struct strata_lx_owner[n_owners] */
	uint64_t n_owners;
	uint64_t links_off;		/* struct strata_lx_xref[n_links]: */
	uint64_t n_links;		/* (hardlink leader, group size), sorted */
	uint64_t data_bytes;		/* sum of regular file sizes */
	uint64_t features;		/* STRATA_LX_HAS_* */
	uint64_t file_size;		/* whole index, for validation */
};

/* Header features: which kinds of xattrs occur anywhere in the layer. */
enum {
	STRATA_LX_HAS_ACL = 1 << 0,	/* system.posix_acl_* */
	STRATA_LX_HAS_SELINUX = 1 << 1,	/* security.selinux */
};

/* Limits of the entry fields (unpack refuses a layer beyond them). */
#define STRATA_LX_MAX_SIZE ((1ull << 48) - 1)
#define STRATA_LX_MAX_OWNERS 65535u

struct strata_lx_entry {
	uint32_t name_off;		/* into strings */
	uint8_t name_len;		/* a component: at most 255 bytes */
	uint8_t flags;
	uint16_t mode;			/* st_mode incl. file type; 0 = whiteout */
	uint32_t a;			/* dir: first child; regular: content
					 * file number (0 = empty); symlink:
					 * target string offset */
	uint32_t b;			/* dir: number of children; others:
					 * hardlink leader (self if none) */
	uint64_t size : 48;		/* regular: bytes; symlink: target
					 * length; char/block device: rdev;
					 * dir: nlink (2 + subdirectories) */
	uint64_t owner : 16;		/* index into the owner table */
	uint64_t mtime;			/* (sec + 2^33) << 30 | nsec */
};

struct strata_lx_owner {
	uint32_t uid;
	uint32_t gid;
};

/* An (entry, offset) pair: xattr records of an entry (offset into the
 * xattrs area: u32 total length, then records u16 name_len, u32 value_len,
 * name, value), or an implied directory's path (offset into strings). */
struct strata_lx_xref {
	uint32_t entry;
	uint32_t off;
};

#define STRATA_LX_SEC_BIAS (1ll << 33)

static inline int64_t strata_lx_mtime_sec(const struct strata_lx_entry *e)
{
	return (int64_t)(e->mtime >> 30) - STRATA_LX_SEC_BIAS;
}

static inline uint32_t strata_lx_mtime_nsec(const struct strata_lx_entry *e)
{
	return (uint32_t)(e->mtime & ((1u << 30) - 1));
}

/* Owner of @e (65534, the overflow id, if the index is damaged). */
void strata_lx_owner_of(const struct strata_lindex *lx,
			const struct strata_lx_entry *e,
			uint32_t *uid, uint32_t *gid);
/* Link count of @e: a directory's 2 + subdirectories, a hardlink group's
 * size, else 1. */
uint32_t strata_lx_nlink(const struct strata_lindex *lx,
			 const struct strata_lx_entry *e);

/* Borrowed views into an open index; valid until strata_lindex_close(). */
uint32_t strata_lx_count(const struct strata_lindex *lx);
const struct strata_lx_entry *strata_lx_entry(const struct strata_lindex *lx,
					      uint32_t i);
const char *strata_lx_str(const struct strata_lindex *lx, uint32_t off);
/* Xattr records of entry @i (NULL if none), their length in *len. */
const uint8_t *strata_lx_xattrs(const struct strata_lindex *lx, uint32_t i,
				size_t *len);
/* STRATA_LX_HAS_* bits of the layer. */
uint64_t strata_lx_features(const struct strata_lindex *lx);
/* The directories the tar did not list (made for a child), parents
 * first, each with the string offset of its path. Borrowed. */
const struct strata_lx_xref *strata_lx_implied(const struct strata_lindex *lx,
					       size_t *n);
/* dirfd of the layer's content directory (files named by data_id). */
int strata_lx_datafd(const struct strata_lindex *lx);
/* Find child @name of directory entry @dir. Return: index, or UINT32_MAX. */
uint32_t strata_lx_lookup(const struct strata_lindex *lx, uint32_t dir,
			  const char *name, size_t len);
/* Compare two names as the index orders them. */
int strata_lx_namecmp(const char *a, size_t alen, const char *b, size_t blen);

/*
 * Patching an open index in memory; the cached file never changes. Only
 * before the index is shared between threads: pointers from the accessors
 * above are invalidated.
 */
/* Append a copy of @e (@orig: the entry whose xattrs it has, or
 * UINT32_MAX). Return: its index, or UINT32_MAX (ENOMEM). */
uint32_t strata_lx_add(struct strata_lindex *lx,
		       const struct strata_lx_entry *e, uint32_t orig);
/* Append a string. Return: its offset, or UINT32_MAX (ENOMEM). */
uint32_t strata_lx_add_str(struct strata_lindex *lx, const char *s, size_t len);
/* A writable entry @i; NULL if out of range or out of memory. */
struct strata_lx_entry *strata_lx_entry_mut(struct strata_lindex *lx,
					    uint32_t i);
/* Make directory @dir's children copies of entries @kids (@n, sorted by
 * name). Return: 0 or -ENOMEM. */
int strata_lx_set_children(struct strata_lindex *lx, uint32_t dir,
			   const uint32_t *kids, uint32_t n);
/*
 * Move every layer's implied directories whose path is a symlink in the
 * layers below to where extractors put them: the symlink's target resolved
 * inside the image root, made (implied) where the image lacks it; the
 * symlink stays (OCI-RULES.md P9). @lx[0] is the bottom layer. A target
 * that is not a directory, or a resolution loop, leaves the layer's
 * directory in place (it replaces the symlink) with a warning.
 * Return: the number of directories moved, or -ENOMEM.
 */
int strata_lx_graft(struct strata_lindex **lx, uint32_t n);

/* ---- layer statistics (store/layer/layerstat.c) ------------------------------ */

/*
 * What one layer does to the image below it. Entries are what the tar
 * lists (not whiteouts, not directories made only for a child); bytes are
 * regular-file content, a hardlink group's once.
 */
struct strata_layer_stat {
	uint64_t added, added_bytes;	/* paths the image did not have */
	uint64_t changed, changed_bytes; /* paths it had: replaced, or a
					 * directory listed again */
	uint64_t removed;		/* paths hidden by whiteouts, opaque
					 * directories, or a directory
					 * replaced by a non-directory */
	uint64_t removed_bytes;		/* content they made unreachable */
	uint64_t replaced_bytes;	/* content its changes made
					 * unreachable */
	uint64_t content;		/* content bytes the layer carries */
	uint64_t wasted;		/* of those, what no path of the
					 * final image reaches */
};

/*
 * The statistics of every layer of cached image @img (strata_cache_ensure
 * first), bottom first, into @out (img->n_layers of them).
 * Return: 0 or negative errno.
 */
int strata_layer_stats(struct strata_store *st, const struct strata_image *img,
		       struct strata_layer_stat *out, struct strata_err *err);

/* ---- commit (store/commit/commit.c) ------------------------------------------ */

enum strata_cfg_edit_kind {
	STRATA_EDIT_ENV,		/* "K=V" */
	STRATA_EDIT_UNSET_ENV,		/* "K" */
	STRATA_EDIT_ENTRYPOINT,		/* JSON array, or a string for sh -c */
	STRATA_EDIT_UNSET_ENTRYPOINT,
	STRATA_EDIT_CMD,		/* likewise */
	STRATA_EDIT_UNSET_CMD,
	STRATA_EDIT_WORKDIR,
	STRATA_EDIT_UNSET_WORKDIR,
	STRATA_EDIT_USER,
	STRATA_EDIT_UNSET_USER,
	STRATA_EDIT_LABEL,		/* "K=V" */
	STRATA_EDIT_UNSET_LABEL,	/* "K" */
	STRATA_EDIT_EXPOSE,		/* "PORT[/PROTO]", tcp by default */
	STRATA_EDIT_UNSET_EXPOSE,
	STRATA_EDIT_VOLUME,		/* "/PATH" */
	STRATA_EDIT_UNSET_VOLUME,
};

struct strata_cfg_edit {
	enum strata_cfg_edit_kind kind;
	const char *value;	/* borrowed; NULL for the UNSET_ forms
				 * that take none */
};

struct strata_commit_opts {
	const char *upper;		/* the upper directory */
	const char *from;		/* the image it sits on */
	const char *from_digest;	/* NULL, or the manifest digest @from
					 * must resolve to (-ESTALE if not) */
	const struct strata_platform *platform;	/* NULL = host */
	/* destination: a reference, or ":TAG" for the source's own layout
	 * (or store name) under another tag */
	const char *dest;
	const char *const *tags;	/* extra tags in the destination */
	size_t n_tags;
	int compression;		/* STRATA_COMP_GZIP, _ZSTD, _NONE,
					 * _ZSTD_CHUNKED, _ESTARGZ */
	bool docker;			/* Docker schema 2 media types */
	const char *const *mask;	/* path prefixes left out */
	size_t n_mask;
	bool no_mask_volumes;		/* keep the config's Volumes too */
	const char *message, *author, *created_by;
	bool have_created;		/* else now; clamps file mtimes */
	int64_t created;		/* seconds since the epoch */
	const struct strata_cfg_edit *edits;
	size_t n_edits;
	bool allow_empty;		/* commit even with nothing changed */
	bool squash;			/* one layer: the image and the
					 * changes merged; history and
					 * diff_ids of the base dropped */
	int threads;			/* gzip workers; 0 = CPUs */
};

struct strata_commit_result {
	bool nothing;			/* nothing to commit: nothing written */
	bool layer;			/* a layer was added */
	char manifest_digest[STRATA_DIGEST_MAX];
	char config_digest[STRATA_DIGEST_MAX];
	char layer_digest[STRATA_DIGEST_MAX];
	char diff_id[STRATA_DIGEST_MAX];
	int64_t layer_size;		/* compressed */
	uint64_t tar_size;		/* uncompressed */
	uint64_t entries;		/* tar entries written */
	bool pushed;			/* to a docker:// destination: */
	int push_uploaded, push_mounted, push_skipped;	/* blobs */
};

/*
 * Turn the upper directory @o->upper (overlay or .wh. format) over image
 * @o->from into a new layer, config and manifest, and tag it in the
 * destination. Blobs and index.json are written atomically under the
 * destination layout's lock. With no file change and no config edit, sets
 * res->nothing and writes nothing (unless @o->allow_empty).
 * Return: 0 or negative errno (message in @err).
 */
int strata_commit(struct strata_store *st, const struct strata_commit_opts *o,
		  struct strata_commit_result *res, struct strata_err *err);

/* ---- diff (store/commit/imgdiff.c) ------------------------------------------- */

/* What a changed entry changed (strata_diff_entry.what). */
enum {
	STRATA_DIFF_TYPE = 1 << 0,	/* file type (then nothing else) */
	STRATA_DIFF_MODE = 1 << 1,	/* permission bits */
	STRATA_DIFF_OWNER = 1 << 2,	/* uid or gid */
	STRATA_DIFF_SIZE = 1 << 3,	/* regular file size */
	STRATA_DIFF_CONTENT = 1 << 4,	/* same size, other bytes (read only
					 * when nothing else differs) */
	STRATA_DIFF_MTIME = 1 << 5,	/* seconds or nanoseconds */
	STRATA_DIFF_XATTRS = 1 << 6,
	STRATA_DIFF_LINK = 1 << 7,	/* symlink target */
	STRATA_DIFF_DEVICE = 1 << 8,	/* device number */
	STRATA_DIFF_CONTENTS = 1 << 9,	/* a directory: something inside it
					 * (podman and docker list these) */
};

struct strata_diff_entry {
	char kind;		/* 'A' added, 'D' deleted, 'C' changed */
	uint32_t what;		/* 'C': STRATA_DIFF_* */
	char *path;		/* "/a/b" */
	uint32_t old_mode, new_mode;	/* st_mode with type; 0 = absent */
	uint64_t old_size, new_size;	/* regular files' bytes; a deleted
					 * directory's old_size is the bytes
					 * of the files it held */
};

struct strata_diff {
	struct strata_diff_entry *e;	/* sorted by path (strcmp) */
	size_t n, cap;
	uint64_t added, deleted, changed;		/* entries */
	uint64_t added_bytes, deleted_bytes, changed_bytes;
	/* (new_size of A and C, old_size of D) */
};

/*
 * What differs from image @a to image @b: one entry per path; a deleted
 * directory is one entry, an added one lists what it holds. Both are
 * unpacked into the cache first (strata_cache_ensure()). Free @out with
 * strata_diff_clear(). Return: 0 or negative errno with @err.
 */
int strata_diff_images(struct strata_store *st, struct strata_image *a,
		       struct strata_image *b, struct strata_diff *out,
		       struct strata_err *err);
/* What the upper directory @upper_fd (overlay or .wh. format, as commit
 * reads it) changes in image @img. */
int strata_diff_upper(struct strata_store *st, struct strata_image *img,
		      int upper_fd, struct strata_diff *out,
		      struct strata_err *err);
void strata_diff_clear(struct strata_diff *d);

/* Sum of the regular file sizes of cached layer @diff_id (each inode
 * once). Return: 0, -ENOENT when not cached, or negative errno. */
int strata_layer_data_bytes(struct strata_store *st, const char *diff_id,
			    uint64_t *out);
/* ---- export (store/commit/export.c) ------------------------------------------ */

struct strata_export_opts {
	const char *ref;		/* the image */
	const struct strata_platform *platform;	/* NULL = host */
	const char *upper;		/* NULL, or the upper directory of a
					 * writable mount of @ref: export
					 * what the mount shows */
	const char *from_digest;	/* NULL, or the digest @ref must
					 * resolve to (-ESTALE if not) */
	const char *file;		/* written as a temp file, fsync'd,
					 * renamed; NULL: stream to @fd */
	int fd;
};
/*
 * The image's root filesystem as one PAX tar, reproducibly (see
 * store/commit/export.c). *bytes gets the tar's size.
 */
int strata_export(struct strata_store *st, const struct strata_export_opts *o,
		  uint64_t *bytes, struct strata_err *err);

/*
 * Copy bytes @off to @off + @len of @in to the same place in @out:
 * copy_file_range (a reflink where the filesystem shares extents), else
 * sendfile, else a buffer (store/base/fsutil.c). Return: 0, -EIO when @in is
 * shorter, or negative errno.
 */
int strata_copy_range(int in, int out, off_t off, off_t len);
/* The first @size bytes: strata_copy_range(@in, @out, 0, @size). */
int strata_copy_data(int in, int out, off_t size);

#endif
