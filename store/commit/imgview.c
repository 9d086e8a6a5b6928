/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The merged view of a cached image, the one store copy of the mount's
 * merge rules (fs/merge.c), for commit (an upper directory's metacopy
 * files take their data from the image, a redirected lower directory is
 * written out in full), export and diff. A merged directory is its
 * sources, top first, cut below the first opaque one; a name shows the
 * topmost source's entry unless that is a whiteout, ghosts only carry
 * whiteouts down; a child directory's sources continue down only while
 * the layers below hold a directory of that name (layer.md "Applying
 * Changesets"). Directories take their attributes from the topmost source
 * the tar listed (not an implied one), as stratafs does, and layer paths
 * through lower symlinks are moved as stratafs moves them (graft.c).
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

/* ---- the merged tree (the rules of fs/merge.c and fs_dir_sources()) ---- */

static const struct strata_lx_entry *ent_of(struct strata_imgview *v,
					    struct strata_imgview_ent x)
{
	return strata_lx_entry(v->lx[x.layer], x.entry);
}

int strata_mdir_root(struct strata_imgview *v, struct strata_mdir *out)
{
	uint32_t l;

	out->n = 0;
	out->s = malloc((v->n ? v->n : 1) * sizeof(*out->s));
	if (!out->s)
		return -ENOMEM;
	for (l = v->n; l-- > 0;) {
		out->s[out->n].layer = l;
		out->s[out->n++].entry = 0;
		if (strata_lx_entry(v->lx[l], 0)->flags & STRATA_LX_OPAQUE)
			break;
	}
	return 0;
}

struct strata_imgview_ent strata_mdir_attr(struct strata_imgview *v,
					   const struct strata_mdir *m)
{
	uint32_t i;

	for (i = 0; i < m->n; i++)
		if (!(ent_of(v, m->s[i])->flags & STRATA_LX_IMPLIED))
			return m->s[i];
	return m->s[0];
}

int strata_mdir_child(struct strata_imgview *v,
		      const struct strata_mdir *parent,
		      const char *name, size_t len, struct strata_mdir *out)
{
	uint32_t i;

	out->n = 0;
	out->s = malloc((parent->n ? parent->n : 1) * sizeof(*out->s));
	if (!out->s)
		return -ENOMEM;
	for (i = 0; i < parent->n; i++) {
		const struct strata_lindex *lx = v->lx[parent->s[i].layer];
		uint32_t c = strata_lx_lookup(lx, parent->s[i].entry, name, len);
		const struct strata_lx_entry *e;

		if (c == UINT32_MAX)
			continue;
		e = strata_lx_entry(lx, c);
		if (!S_ISDIR(e->mode) || (e->flags & STRATA_LX_WHITEOUT))
			break;
		out->s[out->n].layer = parent->s[i].layer;
		out->s[out->n++].entry = c;
		if (e->flags & STRATA_LX_OPAQUE)
			break;
	}
	return 0;
}

bool strata_mdir_find(struct strata_imgview *v,
		      const struct strata_mdir *parent,
		      const char *name, size_t len,
		      struct strata_imgview_ent *out)
{
	uint32_t i;

	for (i = 0; i < parent->n; i++) {
		const struct strata_lindex *lx = v->lx[parent->s[i].layer];
		uint32_t c = strata_lx_lookup(lx, parent->s[i].entry, name, len);
		const struct strata_lx_entry *e;

		if (c == UINT32_MAX)
			continue;
		e = strata_lx_entry(lx, c);
		if (e->flags & STRATA_LX_GHOST)
			continue;
		if (e->flags & STRATA_LX_WHITEOUT)
			return false;
		out->layer = parent->s[i].layer;
		out->entry = c;
		return true;
	}
	return false;
}

static int kid_cmp(const void *a, const void *b)
{
	const struct strata_mkid *x = a, *y = b;
	int c = strata_lx_namecmp(x->name, x->len, y->name, y->len);

	if (c)
		return c;
	return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/*
 * The entry a merged name shows, from its candidates @k[0..n) (top
 * first): ghosts skipped, a whiteout hides the name (return false); a
 * directory takes its attributes from the topmost source the tar listed,
 * searching down while the layers hold a directory of that name and no
 * opaque one cut them (strata_mdir_child() then strata_mdir_attr()).
 */
static bool pick(struct strata_imgview *v, const struct strata_mkid *k,
		 size_t n, struct strata_imgview_ent *out)
{
	const struct strata_lx_entry *e;
	size_t t = 0, i;

	while (t < n && (ent_of(v, k[t].ent)->flags & STRATA_LX_GHOST))
		t++;
	if (t == n)
		return false;
	e = ent_of(v, k[t].ent);
	if (e->flags & STRATA_LX_WHITEOUT)
		return false;
	*out = k[t].ent;
	if (!S_ISDIR(e->mode))
		return true;
	for (i = t; i < n; i++) {
		e = ent_of(v, k[i].ent);
		if ((e->flags & STRATA_LX_WHITEOUT) || !S_ISDIR(e->mode))
			break;
		if (!(e->flags & STRATA_LX_IMPLIED)) {
			*out = k[i].ent;
			break;
		}
		if (e->flags & STRATA_LX_OPAQUE)
			break;
	}
	return true;
}

int strata_mdir_list(struct strata_imgview *v, const struct strata_mdir *m,
		     struct strata_mkid **out, size_t *n_out)
{
	struct strata_mkid *k;
	size_t total = 0, n = 0, i, w = 0;
	uint32_t r;

	for (r = 0; r < m->n; r++)
		total += ent_of(v, m->s[r])->b;
	k = malloc((total ? total : 1) * sizeof(*k));
	if (!k)
		return -ENOMEM;
	for (r = 0; r < m->n; r++) {
		const struct strata_lindex *lx = v->lx[m->s[r].layer];
		const struct strata_lx_entry *d = strata_lx_entry(lx,
								  m->s[r].entry);
		uint32_t c;

		for (c = 0; c < d->b; c++) {
			const struct strata_lx_entry *e =
				strata_lx_entry(lx, d->a + c);

			if (!e)
				break;
			k[n].name = strata_lx_str(lx, e->name_off);
			k[n].len = e->name_len;
			k[n].rank = r;
			k[n].ent.layer = m->s[r].layer;
			k[n].ent.entry = d->a + c;
			n++;
		}
	}
	/* one source is sorted already */
	if (m->n > 1)
		qsort(k, n, sizeof(*k), kid_cmp);
	for (i = 0; i < n;) {
		size_t j = i + 1;
		struct strata_imgview_ent x;

		while (j < n && k[j].len == k[i].len &&
		       !memcmp(k[j].name, k[i].name, k[i].len))
			j++;
		if (pick(v, k + i, j - i, &x)) {
			k[w] = k[i];
			k[w++].ent = x;
		}
		i = j;
	}
	*out = k;
	*n_out = w;
	return 0;
}

int strata_mdir_resolve(struct strata_imgview *v, const char *path,
			struct strata_imgview_ent *out, struct strata_mdir *dir,
			bool *found)
{
	struct strata_mdir cur = { 0 };
	int r;

	*found = false;
	dir->s = NULL;
	dir->n = 0;
	r = strata_mdir_root(v, &cur);
	if (r < 0)
		return r;
	if (cur.n == 0) {
		free(cur.s);
		return 0;
	}
	*out = cur.s[0];
	while (*path) {
		const char *slash = strchr(path, '/');
		size_t len = slash ? (size_t)(slash - path) : strlen(path);
		struct strata_mdir next;

		if (!strata_mdir_find(v, &cur, path, len, out)) {
			free(cur.s);
			return 0;
		}
		if (!S_ISDIR(ent_of(v, *out)->mode)) {
			free(cur.s);
			*found = !slash;
			return 0;
		}
		r = strata_mdir_child(v, &cur, path, len, &next);
		free(cur.s);
		if (r < 0)
			return r;
		cur = next;
		path = slash ? slash + 1 : path + len;
	}
	*found = true;
	*dir = cur;
	if (cur.n)
		*out = strata_mdir_attr(v, &cur);
	return 0;
}

/* ---- by path ---- */

int strata_imgview_lookup(struct strata_imgview *v, const char *path,
			  struct strata_imgview_ent *out)
{
	struct strata_mdir m;
	bool found;
	int r = strata_mdir_resolve(v, path, out, &m, &found);

	free(m.s);
	return r < 0 ? r : found ? 0 : -ENOENT;
}

void strata_imgview_children_free(struct strata_imgview_child *c, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(c[i].name);
	free(c);
}

int strata_imgview_list(struct strata_imgview *v, const char *path,
			struct strata_imgview_child **out, size_t *n_out)
{
	cleanup_free struct strata_mkid *k = NULL;
	struct strata_imgview_child *c;
	struct strata_imgview_ent x;
	struct strata_mdir m;
	size_t n = 0, i;
	bool found;
	int r;

	r = strata_mdir_resolve(v, path, &x, &m, &found);
	if (r == 0 && !found)
		r = -ENOENT;
	else if (r == 0 && !m.n)
		r = -ENOTDIR;
	if (r == 0)
		r = strata_mdir_list(v, &m, &k, &n);
	free(m.s);
	if (r < 0)
		return r;
	c = calloc(n ? n : 1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		c[i].ent = k[i].ent;
		c[i].name = strndup(k[i].name, k[i].len);
		if (!c[i].name) {
			strata_imgview_children_free(c, i);
			return -ENOMEM;
		}
	}
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
