/* SPDX-License-Identifier: Apache-2.0 */
/* Declarations shared by the store/ sources only. fs/ and tools/ use store.h. */
#ifndef STRATA_STORE_INTERNAL_H
#define STRATA_STORE_INTERNAL_H

#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct strata_store {
	char *root;
	int root_fd;
	int images_fd;		/* ROOT/images: an OCI layout */
	int blobs_fd;		/* ROOT/images/blobs */
	int layers_fd;		/* ROOT/layers */
	int tmp_fd;		/* ROOT/tmp */
	const struct strata_reg_opts *reg_opts;	/* borrowed, or NULL */
	int hold_fd;		/* ROOT/gc.lock, shared, or -1 (gc.c) */
	int pin_fd;		/* ROOT/pins/pin_name, or -1 (gc.c) */
	char pin_name[32];
};

/* JSON documents larger than this are refused before parsing (the bound
 * containerd uses after CVE-2023-25153). */
#define STRATA_JSON_MAX (20u << 20)

/* ---- json.c: strict parsing ---- */

/*
 * Parse @len bytes as one JSON document, strictly: valid UTF-8, no trailing
 * bytes but whitespace, no duplicate keys, nesting at most 32 deep, no NaN
 * or single quotes, at most STRATA_JSON_MAX bytes. @what names the document
 * in messages. Caller puts *out with json_object_put().
 * Return: 0, -EBADMSG, -EFBIG, -ENOMEM.
 */
int strata_json_parse(const char *buf, size_t len, const char *what,
		      struct json_object **out, struct strata_err *err);
/* An RFC 3339 time ("2026-12-02T08:28:34.5Z", "...+02:00") as seconds
 * since the epoch and nanoseconds. Return: 0 or -EINVAL. */
int strata_rfc3339_parse(const char *s, int64_t *sec, uint32_t *nsec);
/* Is the NUL-terminated @s valid UTF-8 (no overlongs, no surrogates)? */
bool strata_utf8_valid(const char *s);
/* The length of the valid UTF-8 sequence at @p (before @end), or -1. */
int strata_utf8_seq(const unsigned char *p, const unsigned char *end);
/* The 4 hex digits at @p as *v; -1 if they are not hex digits. */
int strata_hex4(const unsigned char *p, uint32_t *v);
/* How deep strict JSON documents may nest (objects and arrays) */
#define STRATA_JSON_MAX_DEPTH 32
/* The same with a limit of its own (a lazy layer's table of contents). */
int strata_json_parse_max(const char *buf, size_t len, size_t max,
			  const char *what, struct json_object **out,
			  struct strata_err *err);

/* Typed getters. A key set to null counts as absent. String results are
 * borrowed from @obj and refused when they hold a NUL byte.
 * Return: 0, -ENOENT if absent and @required is false (out untouched),
 * -EBADMSG for a wrong type, a missing required key or a bad value. */
int strata_json_string(struct json_object *obj, const char *key,
		       bool required, const char **out, const char *what,
		       struct strata_err *err);
int strata_json_int64(struct json_object *obj, const char *key, bool required,
		      int64_t min, int64_t max, int64_t *out, const char *what,
		      struct strata_err *err);
int strata_json_object(struct json_object *obj, const char *key,
		       bool required, struct json_object **out,
		       const char *what, struct strata_err *err);
int strata_json_array(struct json_object *obj, const char *key,
		      bool required, struct json_object **out,
		      const char *what, struct strata_err *err);
/* Array of strings -> NULL-terminated malloc'd vector (NULL if absent). */
int strata_json_strv(struct json_object *obj, const char *key, char ***out,
		     const char *what, struct strata_err *err);
void strata_strv_free(char **v);

/* ---- fsutil.c ---- */

/* Write @len bytes to @dirfd/@name atomically: temp name, fsync, rename,
 * fsync of the directory. Return: 0 or negative errno. */
int strata_write_atomic(int dirfd, const char *name, const void *buf,
			size_t len, mode_t mode);
/* Read a whole file of at most @max bytes. Caller frees *out.
 * Return: 0, -EFBIG when larger, negative errno. */
int strata_read_file(int dirfd, const char *name, size_t max, char **out,
		     size_t *len);
int strata_read_fd(int fd, size_t max, char **out, size_t *len);
/* mkdir -p relative to @dirfd, mode 0755 (or 0700 for the root). */
int strata_mkdirat_p(int dirfd, const char *path, mode_t mode);
/*
 * An fd (O_RDONLY) of directory @path below @dirfd, reached without following
 * any symlink and without leaving @dirfd: where a store or layout that
 * another user owns is written, its "blobs/sha256" must not lead
 * elsewhere. Return: the fd (caller closes) or -errno (-ELOOP, -EXDEV
 * for a symlink on the way).
 */
int strata_open_beneath(int dirfd, const char *path);
/*
 * Bytes arriving in order (store/base/arrival.c): one thread writes a file
 * from its start and says how far it is (advance), then that it ended
 * (end, with a negative errno if it stopped short); others wait until the
 * first @end bytes are there (wait: 0, or that errno, -EIO for none).
 */
struct strata_arrival {
	pthread_mutex_t lock;
	pthread_cond_t more;
	_Atomic uint64_t have;
	bool ended;		/* under lock */
	int error;		/* under lock */
};
void strata_arrival_init(struct strata_arrival *a);
void strata_arrival_destroy(struct strata_arrival *a);
void strata_arrival_advance(struct strata_arrival *a, uint64_t have);
void strata_arrival_end(struct strata_arrival *a, int error);
uint64_t strata_arrival_have(struct strata_arrival *a);
int strata_arrival_wait(struct strata_arrival *a, uint64_t end);
/* rm -rf @name below @dirfd, never following symlinks. */
int strata_rmtree_at(int dirfd, const char *name);
/* Write all of @buf to @fd. */
int strata_write_all(int fd, const void *buf, size_t len);
/*
 * Ask for transparent huge pages for the @len bytes at @p, a large buffer
 * not written yet (nothing below STRATA_HUGE_MIN): building a lazy
 * layer's index from a 22 MB table of contents otherwise takes some
 * 15,000 page faults, a third of its time on a virtual machine.
 */
#define STRATA_HUGE_MIN (2u << 20)
void strata_huge_hint(void *p, size_t len);
/* The same, and the pages of @p made now, in one call, instead of a page
 * fault each as they are first written (a mount's thousands of faults
 * were a tenth of its CPU on a VM): for arrays written all or nearly. */
void strata_prefault(void *p, size_t len);
/* @len zeroed bytes of their own mapping, aligned for huge pages (malloc
 * hands out 4 KiB-aligned blocks, most of whose huge-page extents are cut);
 * freed with strata_big_free(@p, @len). NULL when out of memory. */
void *strata_big_alloc(size_t len);
void strata_big_free(void *p, size_t len);

/* ---- lock.c ---- */

/* Take an exclusive (or shared) flock on @dirfd/@name, creating it.
 * Return: the locked fd (close to unlock) or negative errno. */
int strata_lock_at(int dirfd, const char *name, bool exclusive);

/* ---- layout.c: reading OCI layouts and blobs ---- */

/* Path of a blob relative to blobs/: "sha256/<hex>". @digest must be valid. */
void strata_blob_relpath(const char *digest, char *out, size_t len);

/*
 * Read blob @digest of @size bytes from @blobs_fd, verify size and digest.
 * Return: 0, -ENOENT (missing), -EBADMSG (mismatch), -EFBIG (> @max).
 */
int strata_blob_read(int blobs_fd, const char *digest, int64_t size,
		     size_t max, char **out, struct strata_err *err);

/* A parsed descriptor; strings borrowed from the JSON object. */
struct strata_desc {
	const char *media_type;
	const char *digest;
	int64_t size;
	struct json_object *annotations;	/* borrowed or NULL */
	struct json_object *platform;		/* borrowed or NULL */
};

int strata_desc_parse(struct json_object *obj, struct strata_desc *d,
		      const char *what, struct strata_err *err);

/*
 * From an index.json (parsed), pick the manifest descriptor named by @tag
 * (ref.name or io.containerd.image.name) or @digest, or the only one.
 * On failure the message lists the tags that exist.
 */
int strata_index_pick(struct json_object *index, const char *tag,
		      const char *digest, const char *where,
		      struct json_object **out, struct strata_err *err);

/*
 * Resolve starting from a descriptor (manifest or index) in @blobs_fd down
 * to a manifest for @plat, then config; fill @img. Nested indexes up to
 * depth 4.
 */
int strata_image_from_desc(struct strata_image *img, int blobs_fd,
			   struct json_object *desc,
			   const struct strata_platform *plat,
			   struct strata_err *err);
/* The same, calling @fetch(@ctx, digest, size, media type, err) for a
 * manifest, index or config missing from @blobs_fd, which puts it there
 * (verified) or fails. */
typedef int (*strata_fetch_fn)(void *ctx, const char *digest, int64_t size,
			       const char *media_type, struct strata_err *err);
int strata_image_from_desc_fetch(struct strata_image *img, int blobs_fd,
				 struct json_object *desc,
				 const struct strata_platform *plat,
				 strata_fetch_fn fetch, void *ctx,
				 struct strata_err *err);

/* ---- schema1.c: Docker schema 1 manifests ---- */

/* If @buf is a signed schema 1 manifest, *payload gets what the JWS
 * signs (the manifest without "signatures", malloc'd), whose sha256 is
 * its digest, and a notice says the signature is not checked.
 * Return: 1 (signed), 0 (unsigned: nothing allocated), -EBADMSG. */
int strata_schema1_unsign(const char *buf, size_t len, const char *what,
			  char **payload, size_t *plen, struct strata_err *err);
/* Convert schema 1 manifest @doc into an OCI config and manifest stored
 * in @blobs_fd, fetching each layer blob (@fetch with size -1) to hash
 * it uncompressed; *desc_out gets the new manifest's descriptor. */
int strata_schema1_convert(int blobs_fd, const char *what,
			   struct json_object *doc, strata_fetch_fn fetch,
			   void *ctx, struct json_object **desc_out,
			   struct strata_err *err);

/* ---- layout-dir.c: skopeo's dir: transport ---- */

/* Resolve a dir: reference: its manifest (and config) into the store's
 * blobs, @img->source set for the layers, each copied in verified. */
int strata_dir_resolve(struct strata_store *st, const struct strata_ref *ref,
		       const struct strata_platform *plat,
		       struct strata_image *img, struct strata_err *err);
/* Copy @in_fd (from where it is) to @out_fd, verifying @digest and @size
 * (-1: any) as the bytes pass; @what names the source in messages. The
 * one copy-and-verify loop of the store, the layout writer and dir:. */
int strata_blob_copy_fd(int in_fd, int out_fd, const char *digest,
			int64_t size, const char *what, struct strata_err *err);
/* Copy @in_fd (from its start) to @dir_fd/@name through a temporary
 * file, verifying @digest and @size (-1: any), fsync'd when @sync.
 * @what names the source in messages. */
int strata_blob_copy_verified(int in_fd, int dir_fd, const char *name,
			      const char *digest, int64_t size, bool sync,
			      const char *what, struct strata_err *err);

/* ---- archive.c ---- */

/*
 * Read an oci-archive or docker-archive into the store's blob directory
 * and fill @img for @ref.
 */
int strata_archive_resolve(struct strata_store *st, const struct strata_ref *ref,
			   const struct strata_platform *plat,
			   struct strata_image *img, struct strata_err *err);

/* Where a layer a docker-archive lacks is found (a separated image whose
 * base stays in the store): put the digest and size of a blob of the
 * store's whose uncompressed content has @diff_id (@member: the layer's
 * name in manifest.json, for messages). */
struct strata_layer_lookup {
	int (*fn)(void *ctx, const char *diff_id, const char *member,
		  char *digest, int64_t *size, struct strata_err *err);
	void *ctx;
};

/*
 * Read the docker-archive split over the tars @paths (each may be
 * gzip'd; read through @fds[i]) as one archive and resolve the image
 * tagged @tag; @where names it in messages. Caller frees *out.
 */
int strata_archive_resolve_parts(struct strata_store *st,
				 const char *const *paths, const int *fds,
				 size_t n,
				 const char *where, const char *tag,
				 const struct strata_platform *plat,
				 const struct strata_layer_lookup *lookup,
				 struct strata_image **out,
				 struct strata_err *err);

/* Does RepoTags entry @have name @want ("docker.io/library/",
 * "docker.io/" and "localhost/" prefixes aside)? */
bool strata_repotag_matches(const char *have, const char *want);

/* Store a blob from memory under its sha256 (atomic). @digest_out may be
 * NULL. */
int strata_blob_put(int blobs_fd, const void *buf, size_t len,
		    char *digest_out);

/* ---- copy.c ---- */

/* Fetch the layer blobs of @img missing from its blobs_fd from its
 * source (a registry) into the store. Return: 0 or negative errno. */
int strata_image_fetch_layers(struct strata_image *img, struct strata_err *err);

/* ---- registry-push.c ---- */

/* Remember that blob @digest was seen in @registry/@repo (a hint for
 * cross-repository mounts: ROOT/origins/ALG-HEX); best effort. */
void strata_origin_record(struct strata_store *st, const char *digest,
			  const char *registry, const char *repo);

/* ---- ref.c ---- */

/* Is @s (@n bytes) a repository path component (distribution/reference:
 * lower-case alphanumerics joined by one '.', one or two '_', or any
 * number of '-')? */
bool strata_ref_component_ok(const char *s, size_t n);

/* ---- ref-docker.c ---- */

/* Fill @r (kind, text set) from the part of a docker:// reference after
 * "docker:" (so starting with "//"): registry, repository (path), tag, digest, normalised as
 * podman does. Return: 0, -EINVAL (message in @err), -ENOMEM. */
int strata_ref_parse_docker(const char *s, struct strata_ref *r,
			    struct strata_err *err);

/* ---- registry.c ---- */

/* Resolve a docker:// reference: manifest (and index) and config into
 * the store's blobs, @img->source set for the layers. */
int strata_registry_resolve(struct strata_store *st,
			    const struct strata_ref *ref,
			    const struct strata_platform *plat,
			    struct strata_image *img, struct strata_err *err);
/* ---- layout-write.c: tags in an index.json ---- */

/*
 * In the "manifests" array @manifests of an index.json: take tag @name
 * (an org.opencontainers.image.ref.name value) off every descriptor that
 * has it, then, when @desc is not NULL, add @desc (ownership taken), which
 * carries the tag. With @keep (the store), an image that loses its last
 * name stays listed, as a descriptor without the ref.name annotation, so
 * it is still reachable by digest until strata gc; and @desc replaces
 * such an unnamed descriptor of its digest.
 * Return: the number of descriptors the tag was taken off, or -ENOMEM.
 */
int strata_index_retag(struct json_object *manifests, const char *name,
		       struct json_object *desc, bool keep);
/* The ref.name annotation of descriptor @desc, or NULL. Borrowed. */
const char *strata_desc_ref_name(struct json_object *desc);

/* ---- store.c ---- */
int strata_store_index_load(struct strata_store *st, struct json_object **out,
			    struct strata_err *err);

/* ---- misc ---- */
bool strata_media_is_manifest(const char *mt);
bool strata_media_is_index(const char *mt);
bool strata_media_is_schema1(const char *mt);
int strata_media_layer_compression(const char *mt);	/* <0 unsupported */

struct archive;
/* libarchive's message for the last failure of @a, or (libarchive fails
 * some archives without one) the text of its errno, or "malformed tar".
 * Never NULL; borrowed until @a is next used. */
const char *strata_archive_error(struct archive *a);

#endif
