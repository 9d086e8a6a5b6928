/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata save: several images into one docker-archive or oci-archive, as
 * `podman save -m` and `docker save` write them. Each image is resolved as
 * everywhere (verified), its blobs copied as they are (so an oci-archive
 * keeps the manifest digests); a blob shared by several images is written
 * once (commit-archive.c). The same image named twice is one entry with
 * both names.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "commit.h"
#include "store-internal.h"

struct saved {
	struct strata_image *img;
	char **tags;
	size_t n_tags;
	const char **layers;
	int64_t *sizes;
};

/* The name an image is saved under: NAME:TAG, or NULL for none. */
static int image_name(const char *refstr, char **out, struct strata_err *err)
{
	cleanup_(strata_ref_freep) struct strata_ref *ref = NULL;
	int r = strata_ref_parse(refstr, &ref, err);

	*out = NULL;
	if (r < 0)
		return r;
	switch (ref->kind) {
	case STRATA_REF_DOCKER:
		if (ref->tag && asprintf(out, "%s/%s:%s", ref->registry,
					 ref->path, ref->tag) < 0)
			return -ENOMEM;
		return 0;
	case STRATA_REF_DIR:		/* dir: holds no name */
		return 0;
	case STRATA_REF_STORE:
	case STRATA_REF_DOCKER_ARCHIVE:
	case STRATA_REF_OCI:
	case STRATA_REF_OCI_ARCHIVE:
		if (!ref->tag)
			return 0;
		/* oci:DIR:TAG: TAG is a name only if it reads as one */
		if (strata_store_name(ref->tag, out, NULL) < 0)
			*out = NULL;
		return 0;
	}
	return 0;
}

static int add_tag(struct saved *s, char *name)
{
	char **v;

	if (!name)
		return 0;
	for (size_t i = 0; i < s->n_tags; i++)
		if (!strcmp(s->tags[i], name)) {
			free(name);
			return 0;
		}
	v = realloc(s->tags, (s->n_tags + 1) * sizeof(*v));
	if (!v) {
		free(name);
		return -ENOMEM;
	}
	s->tags = v;
	s->tags[s->n_tags++] = name;
	return 0;
}

static void saved_free(struct saved *s)
{
	for (size_t i = 0; i < s->n_tags; i++)
		free(s->tags[i]);
	free(s->tags);
	free(s->layers);
	free(s->sizes);
	if (s->img)
		strata_image_free(s->img);
}

int strata_save(struct strata_store *st, const char *const *images, size_t n,
		const char *dest, const struct strata_platform *plat,
		struct strata_err *err)
{
	cleanup_(strata_ref_freep) struct strata_ref *dref = NULL;
	struct strata_archive_img *out = NULL;
	struct saved *sv = NULL;
	size_t i, k, nsv = 0;
	int r;

	r = strata_ref_parse(dest, &dref, err);
	if (r < 0)
		return r;
	if ((dref->kind != STRATA_REF_DOCKER_ARCHIVE &&
	     dref->kind != STRATA_REF_OCI_ARCHIVE) || dref->tag || dref->digest)
		return strata_err_set(err, -EINVAL, "destination %s: want "
				      "docker-archive:FILE or oci-archive:FILE "
				      "(the images keep their own names)", dest);
	sv = calloc(n + 1, sizeof(*sv));
	out = calloc(n + 1, sizeof(*out));
	if (!sv || !out) {
		r = -ENOMEM;
		goto done;
	}
	for (i = 0; i < n; i++) {
		struct strata_image *img = NULL;
		char *name = NULL;
		struct saved *s;

		r = image_name(images[i], &name, err);
		if (r == 0)
			r = strata_image_resolve(st, images[i], plat, &img, err);
		if (r == 0)
			r = strata_image_fetch_layers(img, err);
		if (r < 0) {
			free(name);
			if (img)
				strata_image_free(img);
			goto done;
		}
		for (k = 0; k < nsv; k++)
			if (!strcmp(sv[k].img->manifest_digest,
				    img->manifest_digest))
				break;
		s = &sv[k];
		if (k == nsv) {
			nsv++;
			s->img = img;
		} else {
			strata_image_free(img);
		}
		r = add_tag(s, name);
		if (r < 0)
			goto done;
	}
	for (k = 0; k < nsv; k++) {
		struct strata_image *img = sv[k].img;

		sv[k].layers = calloc(img->n_layers + 1, sizeof(char *));
		sv[k].sizes = calloc(img->n_layers + 1, sizeof(int64_t));
		if (!sv[k].layers || !sv[k].sizes) {
			r = -ENOMEM;
			goto done;
		}
		for (i = 0; i < img->n_layers; i++) {
			sv[k].layers[i] = img->layers[i].digest;
			sv[k].sizes[i] = img->layers[i].size;
		}
		out[k] = (struct strata_archive_img){
			.tags = sv[k].tags,
			.n_tags = sv[k].n_tags,
			.manifest_mt = img->manifest_media_type,
			.manifest_digest = img->manifest_digest,
			.manifest_size = img->manifest_size,
			.config_digest = img->config_digest,
			.config_size = img->config_size,
			.layers = sv[k].layers,
			.sizes = sv[k].sizes,
			.n_layers = img->n_layers,
			.blobs_fd = { img->blobs_fd, st->blobs_fd },
		};
	}
	r = strata_archive_write_images(dref->path,
					dref->kind == STRATA_REF_DOCKER_ARCHIVE,
					out, nsv, err);
done:
	for (k = 0; sv && k < nsv; k++)
		saved_free(&sv[k]);
	free(sv);
	free(out);
	return r;
}
