/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata copy: an image from any transport to any other, converting
 * nothing. The source is resolved as everywhere (for an index, to the
 * platform's manifest, as skopeo copy does without --all); its manifest's
 * bytes are written as they are, so the destination has the same digest,
 * and each blob is copied (verified) or, to a registry, pushed only if
 * the registry lacks it (registry-push.c). A docker:// source downloads
 * a layer only when the destination needs its bytes: never for another
 * repository of the same registry, whose blobs are mounted.
 *
 * Layouts and the store are written as commit writes them (blobs first,
 * the tag last, atomically); archives are written whole to a temporary
 * name and renamed (commit-archive.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commit.h"
#include "store-internal.h"

struct cdest {
	struct strata_ref *ref;
	char **tags;
	size_t n_tags;
};

static void cdest_free(struct cdest *d)
{
	for (size_t i = 0; i < d->n_tags; i++)
		free(d->tags[i]);
	free(d->tags);
	if (d->ref)
		strata_ref_free(d->ref);
}

/* "NAME:TAG" -> "NAME" (a colon after the last slash). */
static char *name_part(const char *nametag)
{
	const char *slash = strrchr(nametag, '/');
	const char *colon = strrchr(slash ? slash : nametag, ':');

	return colon ? strndup(nametag, (size_t)(colon - nametag))
		     : strdup(nametag);
}

static int dest_tags(const struct strata_copy_opts *o, struct cdest *d,
		     struct strata_err *err)
{
	struct strata_ref *ref = d->ref;
	cleanup_free char *name = NULL;
	size_t i;

	d->tags = calloc(o->n_tags + 1, sizeof(*d->tags));
	if (!d->tags)
		return -ENOMEM;
	if (ref->kind == STRATA_REF_OCI && !ref->tag)
		return strata_err_set(err, -EINVAL, "destination %s: name a "
				      "tag (oci:DIR:TAG)", o->dest);
	if (ref->tag && (ref->kind == STRATA_REF_STORE ||
			 ref->kind == STRATA_REF_DOCKER_ARCHIVE)) {
		name = name_part(ref->tag);
		if (!name)
			return -ENOMEM;
	}
	if (ref->tag) {
		d->tags[d->n_tags] = strdup(ref->tag);
		if (!d->tags[d->n_tags++])
			return -ENOMEM;
	}
	for (i = 0; i < o->n_tags; i++) {
		char *t;

		if (name && !strchr(o->tags[i], ':')) {
			if (asprintf(&t, "%s:%s", name, o->tags[i]) < 0)
				return -ENOMEM;
		} else {
			t = strdup(o->tags[i]);
			if (!t)
				return -ENOMEM;
		}
		d->tags[d->n_tags++] = t;
	}
	return 0;
}

/* ---- blobs a registry source has not downloaded ---- */

struct fetcher {
	struct strata_image *img;
};

static int fetch_blob(void *ctx, const char *digest, int64_t size,
		      struct strata_err *err)
{
	struct fetcher *f = ctx;
	struct strata_image *img = f->img;

	for (size_t i = 0; i < img->n_layers; i++)
		if (!strcmp(img->layers[i].digest, digest) &&
		    img->layers[i].size == size && img->source)
			return img->source->fetch(img->source, &img->layers[i],
						  err);
	return strata_err_set(err, -ENOENT, "blob %s: not in %s", digest,
			      img->blobs_desc ? img->blobs_desc : "the source");
}

static int have_blob(int blobs_fd, const char *digest)
{
	char rel[STRATA_DIGEST_MAX + 8];

	strata_blob_relpath(digest, rel, sizeof(rel));
	return faccessat(blobs_fd, rel, F_OK, 0) == 0;
}

int strata_image_fetch_layers(struct strata_image *img, struct strata_err *err)
{
	for (size_t i = 0; i < img->n_layers; i++) {
		int r;

		if (have_blob(img->blobs_fd, img->layers[i].digest) ||
		    !img->source)
			continue;
		r = img->source->fetch(img->source, &img->layers[i], err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- destinations ---- */

static int to_registry(struct strata_store *st, const struct strata_copy_opts *o,
		       struct strata_image *img, const char *man,
		       struct strata_err *err)
{
	int fds[2] = { img->blobs_fd, st->blobs_fd };
	struct fetcher f = { img };
	struct strata_push_opts po = {
		.dest = o->dest,
		.tags = o->tags,
		.n_tags = o->n_tags,
		.manifest = man,
		.manifest_len = (size_t)img->manifest_size,
		.media_type = img->manifest_media_type,
		.blob_fds = fds,
		.n_blob_fds = 2,
		.fetch = fetch_blob,
		.fetch_ctx = &f,
	};
	struct strata_push_result pr;

	return strata_push(st, &po, &pr, err);
}

static int to_layout(struct strata_layoutw *lw, struct strata_image *img,
		     const char *man, struct cdest *d, struct strata_err *err)
{
	char digest[STRATA_DIGEST_MAX];
	int r;

	for (size_t i = 0; i < img->n_layers; i++) {
		r = strata_layoutw_copy(lw, img->blobs_fd, img->layers[i].digest,
					img->layers[i].size, err);
		if (r < 0)
			return r;
	}
	r = strata_layoutw_copy(lw, img->blobs_fd, img->config_digest,
				img->config_size, err);
	if (r < 0)
		return r;
	r = strata_layoutw_put(lw, man, (size_t)img->manifest_size, digest);
	if (r < 0)
		return strata_err_set(err, r, "%s: writing the manifest: %s",
				      lw->path, strerror(-r));
	return strata_layoutw_tag(lw, img->manifest_media_type, digest,
				  img->manifest_size,
				  (const char *const *)d->tags, d->n_tags, err);
}

static int to_archive(struct strata_store *st, struct strata_image *img,
		      const char *man, struct cdest *d,
		      struct strata_err *err)
{
	cleanup_free const char **layers = calloc(img->n_layers + 1,
						  sizeof(*layers));
	cleanup_free int64_t *sizes = calloc(img->n_layers + 1, sizeof(*sizes));
	struct strata_archive_out a = {
		.docker = d->ref->kind == STRATA_REF_DOCKER_ARCHIVE,
		.path = d->ref->path,
		.tags = d->tags,
		.n_tags = d->n_tags,
		.new_blobs_fd = img->blobs_fd,
		.base_blobs_fd = img->blobs_fd,
		.manifest_mt = img->manifest_media_type,
		.manifest_digest = img->manifest_digest,
		.manifest_size = img->manifest_size,
		.config_digest = img->config_digest,
		.config_size = img->config_size,
		.layers = layers,
		.sizes = sizes,
		.n_layers = img->n_layers,
	};

	(void)st;
	if (!layers || !sizes)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_layers; i++) {
		layers[i] = img->layers[i].digest;
		sizes[i] = img->layers[i].size;
	}
	if (d->ref->kind == STRATA_REF_DIR)
		return strata_dir_write(&a, man, err);
	return strata_archive_write(&a, err);
}

int strata_copy(struct strata_store *st, const struct strata_copy_opts *o,
		char *digest_out, struct strata_err *err)
{
	cleanup_(strata_layoutw_freep) struct strata_layoutw *lw = NULL;
	struct strata_image *img = NULL;
	struct cdest d = { 0 };
	cleanup_free char *man = NULL;
	int r;

	r = strata_ref_parse(o->dest, &d.ref, err);
	if (r < 0)
		goto out;
	if (d.ref->digest) {
		r = strata_err_set(err, -EINVAL, "destination %s: cannot write "
				   "to a digest", o->dest);
		goto out;
	}
	r = dest_tags(o, &d, err);
	if (r < 0)
		goto out;
	r = strata_image_resolve(st, o->src, o->platform, &img, err);
	if (r < 0)
		goto out;
	r = strata_blob_read(img->blobs_fd, img->manifest_digest,
			     img->manifest_size, STRATA_JSON_MAX, &man, err);
	if (r < 0)
		goto out;
	if (d.ref->kind == STRATA_REF_DOCKER) {
		r = to_registry(st, o, img, man, err);
		goto done;
	}
	r = strata_image_fetch_layers(img, err);
	if (r < 0)
		goto out;
	if (d.ref->kind == STRATA_REF_STORE)
		r = strata_layoutw_open(st->root_fd, "images", false, &lw, err);
	else if (d.ref->kind == STRATA_REF_OCI)
		r = strata_layoutw_open(AT_FDCWD, d.ref->path, true, &lw, err);
	if (r < 0)
		goto out;
	r = lw ? to_layout(lw, img, man, &d, err) : to_archive(st, img, man, &d, err);
done:
	if (r == 0)
		snprintf(digest_out, STRATA_DIGEST_MAX, "%s",
			 img->manifest_digest);
out:
	if (img)
		strata_image_free(img);
	cdest_free(&d);
	return r;
}
