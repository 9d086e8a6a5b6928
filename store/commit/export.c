/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata export: an image's root filesystem, flattened, as one PAX tar (the
 * tree `docker export` and `crane export` give). The walk is commit's
 * (commit-layer.c) in squash mode, so the bytes follow from the image
 * alone: directories before their contents, names sorted bytewise in each
 * directory, numeric owners, PAX mtimes to the nanosecond and
 * SCHILY.xattr records, hardlinks to the first name written; no time of
 * export anywhere. With an upper directory, the tree a writable mount
 * shows (image and upper) is exported instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commit.h"

static int write_tree(struct strata_store *st, const struct strata_export_opts *o,
		      struct strata_image *img, struct strata_blobw *w,
		      struct strata_err *err)
{
	cleanup_fd int ufd = -1;
	struct strata_layer_walk lw = {
		.st = st,
		.img = img,
		.upper_fd = -1,
		.squash = true,
		.progress = "exporting",
	};
	uint64_t entries = 0;

	if (o->upper) {
		ufd = open(o->upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (ufd < 0)
			return strata_err_set(err, -errno, "upper directory "
					      "%s: %s", o->upper,
					      strerror(errno));
		lw.upper_fd = ufd;
	}
	return strata_commit_layer(&lw, w, &entries, err);
}

int strata_export(struct strata_store *st, const struct strata_export_opts *o,
		  uint64_t *bytes, struct strata_err *err)
{
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	cleanup_free char *dir = NULL, *base = NULL;
	cleanup_fd int dfd = -1;	/* closed after w, which removes its
					 * temporary file there */
	cleanup_(strata_blobw_freep) struct strata_blobw *w = NULL;
	const char *name = NULL;
	int r;

	r = strata_image_resolve(st, o->ref, o->platform, &img, err);
	if (r == 0)
		r = strata_cache_ensure(st, img, NULL, err);
	if (r < 0)
		return r;
	if (o->from_digest && strcmp(o->from_digest, img->manifest_digest))
		return strata_err_set(err, -ESTALE, "%s now holds image %s, "
				      "not %s, the image the upper directory "
				      "sits on: nothing written", o->ref,
				      img->manifest_digest, o->from_digest);
	if (o->file) {
		/* a temporary file beside FILE, renamed over it when whole */
		dir = strdup(o->file);
		base = strdup(o->file);
		if (!dir || !base)
			return -ENOMEM;
		name = basename(base);
		if (!*name || !strcmp(name, "/") || !strcmp(name, ".") ||
		    !strcmp(name, ".."))
			return strata_err_set(err, -EINVAL, "export: %s: not "
					      "a file name", o->file);
		dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return strata_err_set(err, -errno, "export: %s: %s",
					      dir, strerror(errno));
		r = strata_blobw_new(dfd, STRATA_COMP_NONE, 1, &w);
		if (r == 0)
			strata_blobw_set_nohash(w);
	} else {
		r = strata_blobw_new_fd(o->fd, &w);
	}
	if (r < 0)
		return strata_err_set(err, r, "export: %s: %s",
				      o->file ? o->file : "output",
				      strerror(-r));
	r = write_tree(st, o, img, w, err);
	if (r < 0)
		return r;
	r = o->file ? strata_blobw_finish_as(w, name) : strata_blobw_flush(w);
	if (r < 0)
		return strata_err_set(err, r, "export: writing %s: %s",
				      o->file ? o->file : "the tar",
				      strerror(-r));
	*bytes = strata_blobw_bytes(w);
	return 0;
}
