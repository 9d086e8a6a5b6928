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

struct cand {
	const char *name;
	uint32_t len;
	uint32_t rank;		/* source position, 0 = top */
	struct strata_imgview_ent ent;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int c = strata_lx_namecmp(x->name, x->len, y->name, y->len);

	if (c)
		return c;
	return x->rank < y->rank ? -1 : x->rank > y->rank;
}

static const struct strata_lx_entry *cand_entry(struct strata_imgview *v,
						const struct cand *c)
{
	return strata_lx_entry(v->lx[c->ent.layer], c->ent.entry);
}

/*
 * The entry a merged name shows, from its candidates @c[0..n) (top first),
 * as fs/merge.c and fs_dir_sources() pick it: ghosts skipped, a whiteout
 * hides the name (return false); a directory takes its attributes from the
 * topmost source the tar listed, searching down while the layers hold a
 * directory of that name and no opaque one cut them.
 */
static bool pick(struct strata_imgview *v, const struct cand *c, size_t n,
		 struct strata_imgview_ent *out)
{
	const struct strata_lx_entry *e;
	size_t t = 0, k;

	while (t < n && (cand_entry(v, &c[t])->flags & STRATA_LX_GHOST))
		t++;
	if (t == n)
		return false;
	e = cand_entry(v, &c[t]);
	if (e->flags & STRATA_LX_WHITEOUT)
		return false;
	*out = c[t].ent;
	if (!S_ISDIR(e->mode))
		return true;
	for (k = t; k < n; k++) {
		e = cand_entry(v, &c[k]);
		if ((e->flags & STRATA_LX_WHITEOUT) || !S_ISDIR(e->mode))
			break;
		if (!(e->flags & (STRATA_LX_IMPLIED | STRATA_LX_GHOST))) {
			*out = c[k].ent;
			break;
		}
		if (e->flags & STRATA_LX_OPAQUE)
			break;
	}
	return true;
}

int strata_imgview_list(struct strata_imgview *v, const char *path,
			struct strata_imgview_child **out, size_t *n_out)
{
	cleanup_free struct strata_imgview_ent *src = NULL;
	cleanup_free struct cand *cands = NULL;
	struct strata_imgview_child *c = NULL;
	struct strata_imgview_ent top;
	size_t total = 0, n = 0, k = 0, i;
	int ns, s;

	src = calloc(v->n ? v->n : 1, sizeof(*src));
	if (!src)
		return -ENOMEM;
	ns = dir_sources(v, path, src, &top);
	if (ns < 0)
		return ns;
	if (ns == 0)
		return -ENOENT;
	for (s = 0; s < ns; s++)
		total += strata_lx_entry(v->lx[src[s].layer], src[s].entry)->b;
	cands = malloc((total ? total : 1) * sizeof(*cands));
	c = calloc(total ? total : 1, sizeof(*c));
	if (!cands || !c) {
		free(c);
		return -ENOMEM;
	}
	for (s = 0; s < ns; s++) {
		const struct strata_lindex *lx = v->lx[src[s].layer];
		const struct strata_lx_entry *d = strata_lx_entry(lx, src[s].entry);
		uint32_t j;

		for (j = d->a; j < d->a + d->b; j++) {
			const struct strata_lx_entry *e = strata_lx_entry(lx, j);

			if (!e)
				break;
			cands[n].name = strata_lx_str(lx, e->name_off);
			cands[n].len = e->name_len;
			cands[n].rank = (uint32_t)s;
			cands[n].ent.layer = src[s].layer;
			cands[n].ent.entry = j;
			n++;
		}
	}
	/* one source is sorted already */
	if (ns > 1)
		qsort(cands, n, sizeof(*cands), cand_cmp);
	for (i = 0; i < n;) {
		size_t j = i + 1;

		while (j < n && cands[j].len == cands[i].len &&
		       !memcmp(cands[j].name, cands[i].name, cands[i].len))
			j++;
		if (pick(v, cands + i, j - i, &c[k].ent)) {
			c[k].name = strndup(cands[i].name, cands[i].len);
			if (!c[k].name) {
				strata_imgview_children_free(c, k);
				return -ENOMEM;
			}
			k++;
		}
		i = j;
	}
	*out = c;
	*n_out = k;
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
