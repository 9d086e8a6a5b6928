/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Merging a directory from its layers (image-spec layer.md, "Whiteouts").
 *
 * A dnode's sources are the layers' entries for that directory, top first,
 * cut below the first opaque one. The merged listing takes, for every name,
 * the entry of the topmost source that has it; if that entry is a whiteout
 * the name is hidden. Whiteouts never hide entries of their own layer (the
 * unpacker already folded such pairs), so this single rule is the spec's.
 * A child directory's own sources continue down only while the layers
 * below still hold a directory of that name (a file or whiteout in between
 * was an unlink, so lower content is gone).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"

struct cand {
	const char *name;
	uint32_t len;
	uint32_t rank;		/* source position, 0 = top */
	uint32_t layer;
	uint32_t entry;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int c = strata_lx_namecmp(x->name, x->len, y->name, y->len);

	if (c)
		return c;
	return x->rank < y->rank ? -1 : x->rank > y->rank;
}

int fs_dir_merge(struct fs *fs, struct dnode *d)
{
	struct cand *cands;
	struct fs_child *out;
	size_t total = 0, n = 0, i, k = 0;
	uint32_t s;

	if (atomic_load_explicit(&d->merged, memory_order_acquire))
		return 0;
	pthread_mutex_lock(fs_merge_lock(fs, d));
	if (d->merged) {
		pthread_mutex_unlock(fs_merge_lock(fs, d));
		return 0;
	}
	for (s = 0; s < d->n_src; s++)
		total += fs_entry(fs, d->src[s].layer, d->src[s].entry)->b;
	/* One source without whiteouts or ghosts (most directories): the
	 * children are the index's own run of entries; nothing to keep.
	 * One layer shown alone (show_whiteouts) is always that. */
	if (d->n_src == 1 && fs->show_whiteouts) {
		const struct strata_lx_entry *e = fs_entry(fs, d->src[0].layer,
							   d->src[0].entry);

		d->first.layer = d->src[0].layer;
		d->first.entry = e->a;
		d->n_children = e->b;
		atomic_store_explicit(&d->merged, true, memory_order_release);
		pthread_mutex_unlock(fs_merge_lock(fs, d));
		return 0;
	}
	if (d->n_src == 1) {
		uint32_t layer = d->src[0].layer, c;
		const struct strata_lx_entry *e = fs_entry(fs, layer,
							   d->src[0].entry);

		for (c = 0; c < e->b; c++) {
			const struct strata_lx_entry *ce = fs_entry(fs, layer,
								    e->a + c);

			if (!ce || (ce->flags & (STRATA_LX_WHITEOUT |
						 STRATA_LX_GHOST)))
				break;
		}
		if (c == e->b) {
			d->first.layer = layer;
			d->first.entry = e->a;
			d->n_children = e->b;
			atomic_store_explicit(&d->merged, true,
					      memory_order_release);
			pthread_mutex_unlock(fs_merge_lock(fs, d));
			return 0;
		}
	}
	cands = malloc((total ? total : 1) * sizeof(*cands));
	out = malloc((total ? total : 1) * sizeof(*out));
	if (!cands || !out) {
		free(cands);
		free(out);
		pthread_mutex_unlock(fs_merge_lock(fs, d));
		return -ENOMEM;
	}
	for (s = 0; s < d->n_src; s++) {
		uint32_t layer = d->src[s].layer;
		const struct strata_lx_entry *e = fs_entry(fs, layer, d->src[s].entry);
		uint32_t c;

		for (c = 0; c < e->b; c++) {
			uint32_t ci = e->a + c;
			const struct strata_lx_entry *ce = fs_entry(fs, layer, ci);

			if (!ce)
				break;
			cands[n].name = fs_name(fs, layer, ce);
			cands[n].len = ce->name_len;
			cands[n].rank = s;
			cands[n].layer = layer;
			cands[n].entry = ci;
			n++;
		}
	}
	/* A single source is already sorted and has no whiteouts that
	 * matter (they only hide lower layers): skip the sort. */
	if (d->n_src > 1)
		qsort(cands, n, sizeof(*cands), cand_cmp);
	for (i = 0; i < n;) {
		size_t j = i + 1, t = i;
		const struct strata_lx_entry *top;

		while (j < n && cands[j].len == cands[i].len &&
		       !memcmp(cands[j].name, cands[i].name, cands[i].len))
			j++;
		/* ghosts only carry whiteouts down: the name is what the
		 * first real entry says, or nothing */
		while (t < j && (fs_entry(fs, cands[t].layer,
					  cands[t].entry)->flags &
				 STRATA_LX_GHOST))
			t++;
		if (t < j) {
			top = fs_entry(fs, cands[t].layer, cands[t].entry);
			if (!(top->flags & STRATA_LX_WHITEOUT)) {
				out[k].layer = cands[t].layer;
				out[k].entry = cands[t].entry;
				k++;
			}
		}
		i = j;
	}
	free(cands);
	if (k < total) {	/* give back what whiteouts and shadowed
				 * names did not use */
		struct fs_child *shrunk = realloc(out, (k ? k : 1) *
						  sizeof(*out));

		if (shrunk)
			out = shrunk;
	}
	d->children = out;
	d->n_children = (uint32_t)k;
	atomic_store_explicit(&d->merged, true, memory_order_release);
	pthread_mutex_unlock(fs_merge_lock(fs, d));
	return 0;
}

bool fs_dir_find(struct fs *fs, struct dnode *d, const char *name,
		 size_t len, struct fs_child *out)
{
	uint32_t lo = 0, hi = d->n_children;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		struct fs_child c = fs_dir_child(d, mid);
		const struct strata_lx_entry *e = fs_entry(fs, c.layer, c.entry);
		int r = strata_lx_namecmp(fs_name(fs, c.layer, e), e->name_len,
					  name, len);

		if (r == 0) {
			*out = c;
			return true;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Append source (layer, entry) of a directory; stop after an opaque one. */
static bool add_src(struct fs *fs, struct fs_src *src, uint32_t *n,
		    struct fs_src *attr, bool *have_attr, uint32_t layer,
		    uint32_t entry)
{
	const struct strata_lx_entry *e = fs_entry(fs, layer, entry);

	src[*n].layer = layer;
	src[*n].entry = entry;
	(*n)++;
	if (!*have_attr && !(e->flags & STRATA_LX_IMPLIED)) {
		attr->layer = layer;
		attr->entry = entry;
		*have_attr = true;
	}
	return !(e->flags & STRATA_LX_OPAQUE);
}

int fs_dir_sources(struct fs *fs, struct dnode *parent, const char *name,
		   size_t len, struct dnode *d)
{
	struct fs_src stack[8], *src = stack;
	bool have_attr = false;
	uint32_t s, n = 0;

	if (parent->n_src > 8) {
		src = malloc(parent->n_src * sizeof(*src));
		if (!src)
			return -ENOMEM;
	}
	for (s = 0; s < parent->n_src; s++) {
		uint32_t layer = parent->src[s].layer;
		uint32_t c = strata_lx_lookup(fs->layers[layer].lx,
					      parent->src[s].entry, name, len);
		const struct strata_lx_entry *e;

		if (c == UINT32_MAX)
			continue;
		e = fs_entry(fs, layer, c);
		if (!S_ISDIR(e->mode) || (e->flags & STRATA_LX_WHITEOUT))
			break;	/* whiteout or non-directory: lower is gone */
		if (!add_src(fs, src, &n, &d->attr, &have_attr, layer, c))
			break;
	}
	if (n == 0) {
		if (src != stack)
			free(src);
		return -ENOENT;
	}
	if (!have_attr)
		d->attr = src[0];
	d->n_src = n;
	if (n == 1 && src[0].layer == d->attr.layer &&
	    src[0].entry == d->attr.entry) {
		d->src = &d->attr;	/* most directories: one layer's */
		if (src != stack)
			free(src);
	} else if (src == stack) {
		d->src = malloc(n * sizeof(*src));
		if (!d->src)
			return -ENOMEM;
		memcpy(d->src, src, n * sizeof(*src));
	} else {
		d->src = src;
	}
	return 0;
}

int fs_root_sources(struct fs *fs, struct dnode *root)
{
	bool have_attr = false;
	uint32_t l;

	root->src = malloc(fs->n_layers * sizeof(*root->src));
	if (!root->src)
		return -ENOMEM;
	root->n_src = 0;
	for (l = fs->n_layers; l-- > 0;)
		if (!add_src(fs, root->src, &root->n_src, &root->attr,
			     &have_attr, l, 0))
			break;
	if (!have_attr)
		root->attr = root->src[0];
	return 0;
}
