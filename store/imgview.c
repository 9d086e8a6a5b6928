/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The merged view of a cached image, for commit: an upper directory's
 * metacopy files take their data from the image, and a redirected (renamed)
 * lower directory is written out in full. Layers are searched top to bottom
 * (layer.md "Applying Changesets"): a whiteout or a non-directory on the way
 * ends the search, an opaque directory stops it below that layer.
 * Directories resolved through several layers take their attributes from
 * the topmost one the tar listed (not an implied one), as stratafs does,
 * and layer paths through lower symlinks are moved as stratafs moves them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commit.h"

struct strata_imgview {
	uint32_t n;
	struct strata_lindex **lx;	/* [0] = bottom layer */
};

void strata_imgview_free(struct strata_imgview *v)
{
	uint32_t i;

	for (i = 0; i < v->n; i++)
		if (v->lx[i])
			strata_lindex_close(v->lx[i]);
	free(v->lx);
	free(v);
}

int strata_imgview_open(struct strata_store *st, const struct strata_image *img,
			struct strata_imgview **out, struct strata_err *err)
{
	cleanup_(strata_imgview_freep) struct strata_imgview *v = NULL;
	uint32_t i;
	int r;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->lx = calloc(img->n_layers ? img->n_layers : 1, sizeof(*v->lx));
	if (!v->lx)
		return -ENOMEM;
	for (i = 0; i < img->n_layers; i++) {
		r = strata_layer_open(st, img, i, &v->lx[i], err);
		if (r < 0)
			return r;
		v->n++;
	}
	/* the tree the mount shows: layer paths moved through lower
	 * symlinks as extractors do (graft.c) */
	if (v->n && strata_lx_graft(v->lx, v->n) < 0)
		return -ENOMEM;
	*out = take_ptr(&v);
	return 0;
}

const struct strata_lindex *strata_imgview_layer(struct strata_imgview *v,
						 uint32_t layer)
{
	return layer < v->n ? v->lx[layer] : NULL;
}

/*
 * Directory sources of @path: (layer, entry) pairs top first, at most
 * v->n. Return: count (0 = no such directory), or -ENOTDIR when the
 * topmost match is not a directory (with *top set to it).
 */
static int dir_sources(struct strata_imgview *v, const char *path,
		       struct strata_imgview_ent *src,
		       struct strata_imgview_ent *top)
{
	uint32_t l;
	int n = 0;

	for (l = v->n; l-- > 0;) {
		const struct strata_lindex *lx = v->lx[l];
		const struct strata_lx_entry *e = strata_lx_entry(lx, 0);
		const char *p = path;
		uint32_t cur = 0;
		bool opaque = e->flags & STRATA_LX_OPAQUE, missing = false;

		while (*p) {
			const char *slash = strchr(p, '/');
			size_t len = slash ? (size_t)(slash - p) : strlen(p);
			uint32_t c = strata_lx_lookup(lx, cur, p, len);

			if (c == UINT32_MAX) {
				missing = true;
				break;
			}
			e = strata_lx_entry(lx, c);
			if (e->flags & STRATA_LX_WHITEOUT)
				return n;
			if (!S_ISDIR(e->mode)) {
				if (!slash && n == 0) {
					top->layer = l;
					top->entry = c;
					return -ENOTDIR;
				}
				return n;
			}
			cur = c;
			if (e->flags & STRATA_LX_OPAQUE)
				opaque = true;
			p = slash ? slash + 1 : p + len;
		}
		if (!missing) {
			src[n].layer = l;
			src[n].entry = cur;
			n++;
		}
		if (opaque)
			return n;
	}
	return n;
}

int strata_imgview_lookup(struct strata_imgview *v, const char *path,
			  struct strata_imgview_ent *out)
{
	cleanup_free struct strata_imgview_ent *src = NULL;
	const char *slash = strrchr(path, '/');
	cleanup_free char *parent = NULL;
	const char *name = slash ? slash + 1 : path;
	int n, i;

	src = calloc(v->n ? v->n : 1, sizeof(*src));
	if (!src)
		return -ENOMEM;
	if (!*path) {
		n = dir_sources(v, "", src, out);
		if (n <= 0)
			return -ENOENT;
		goto pick_attr;
	}
	parent = strndup(path, slash ? (size_t)(slash - path) : 0);
	if (!parent)
		return -ENOMEM;
	n = dir_sources(v, parent, src, out);
	if (n <= 0)
		return -ENOENT;
	for (i = 0; i < n; i++) {
		const struct strata_lindex *lx = v->lx[src[i].layer];
		uint32_t c = strata_lx_lookup(lx, src[i].entry, name,
					      strlen(name));
		const struct strata_lx_entry *e;

		if (c == UINT32_MAX)
			continue;
		e = strata_lx_entry(lx, c);
		if (e->flags & STRATA_LX_WHITEOUT)
			return -ENOENT;
		if (!S_ISDIR(e->mode)) {
			out->layer = src[i].layer;
			out->entry = c;
			return 0;
		}
		n = dir_sources(v, path, src, out);
		if (n <= 0)
			return -ENOENT;
		goto pick_attr;
	}
	return -ENOENT;
pick_attr:
	*out = src[0];
	for (i = 0; i < n; i++) {
		const struct strata_lx_entry *e =
			strata_lx_entry(v->lx[src[i].layer], src[i].entry);

		if (!(e->flags & STRATA_LX_IMPLIED)) {
			*out = src[i];
			break;
		}
	}
	return 0;
}

void strata_imgview_children_free(struct strata_imgview_child *c, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(c[i].name);
	free(c);
}

static int child_cmp(const void *a, const void *b)
{
	const struct strata_imgview_child *x = a, *y = b;

	return strcmp(x->name, y->name);
}

int strata_imgview_list(struct strata_imgview *v, const char *path,
			struct strata_imgview_child **out, size_t *n_out)
{
	cleanup_free struct strata_imgview_ent *src = NULL;
	struct strata_imgview_child *c = NULL;
	struct strata_imgview_ent top;
	size_t n = 0, cap = 0, k;
	char **hidden = NULL;
	size_t n_hidden = 0;
	int ns, i, r = 0;

	src = calloc(v->n ? v->n : 1, sizeof(*src));
	if (!src)
		return -ENOMEM;
	ns = dir_sources(v, path, src, &top);
	if (ns < 0)
		return ns;
	if (ns == 0)
		return -ENOENT;
	for (i = 0; i < ns && r == 0; i++) {
		const struct strata_lindex *lx = v->lx[src[i].layer];
		const struct strata_lx_entry *d = strata_lx_entry(lx, src[i].entry);
		uint32_t j;

		for (j = d->a; j < d->a + d->b && r == 0; j++) {
			const struct strata_lx_entry *e = strata_lx_entry(lx, j);
			char *name;
			bool seen = false;

			if (!e)
				break;
			name = strndup(strata_lx_str(lx, e->name_off),
				       e->name_len);
			if (!name) {
				r = -ENOMEM;
				break;
			}
			for (k = 0; k < n && !seen; k++)
				seen = !strcmp(c[k].name, name);
			for (k = 0; k < n_hidden && !seen; k++)
				seen = !strcmp(hidden[k], name);
			if (seen) {
				free(name);
				continue;
			}
			if (e->flags & STRATA_LX_WHITEOUT) {
				char **nh = realloc(hidden, (n_hidden + 1) *
						    sizeof(*nh));

				if (!nh) {
					free(name);
					r = -ENOMEM;
					break;
				}
				hidden = nh;
				hidden[n_hidden++] = name;
				continue;
			}
			if (n == cap) {
				struct strata_imgview_child *nc;

				cap = cap ? cap * 2 : 16;
				nc = realloc(c, cap * sizeof(*nc));
				if (!nc) {
					free(name);
					r = -ENOMEM;
					break;
				}
				c = nc;
			}
			c[n].name = name;
			c[n].ent.layer = src[i].layer;
			c[n].ent.entry = j;
			n++;
		}
	}
	for (k = 0; k < n_hidden; k++)
		free(hidden[k]);
	free(hidden);
	if (r < 0) {
		strata_imgview_children_free(c, n);
		return r;
	}
	if (n)
		qsort(c, n, sizeof(*c), child_cmp);
	*out = c;
	*n_out = n;
	return 0;
}

int strata_imgview_open_data(struct strata_imgview *v,
			     const struct strata_imgview_ent *ent)
{
	struct strata_lindex *lx = ent->layer < v->n ? v->lx[ent->layer] : NULL;
	const struct strata_lx_entry *e = lx ? strata_lx_entry(lx, ent->entry)
					     : NULL;
	int fd;

	if (!e || !S_ISREG(e->mode)) {
		errno = EINVAL;
		return -1;
	}
	if (e->a == 0) {
		errno = 0;
		return -1;
	}
	fd = strata_lx_content_open(lx, e->a);
	if (fd < 0) {
		errno = -fd;
		return -1;
	}
	return fd;
}
