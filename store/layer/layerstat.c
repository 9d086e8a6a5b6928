/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer statistics (`strata layers`): what each layer adds, changes and
 * removes, and how much of the content it carries no path of the final
 * image reaches any more.
 *
 * The layers are applied bottom to top, as layer.md "Applying Changesets"
 * says, to a tree of paths built in memory from the layer indexes (after
 * grafts, so paths are where the mount shows them): a whiteout removes
 * the lower path and all below it, an opaque directory removes the lower
 * directory's children, an entry at a path the image already has changes
 * it (a directory listed again, a file rewritten, a directory replaced by
 * a file: its former children are removed). Whiteouts apply to lower
 * layers only, and the index already folded a whiteout that names an
 * entry of its own layer into that entry (STRATA_LX_REPLACED): the lower
 * path is removed, the entry added.
 *
 * Content is counted per inode: a hardlink group's bytes once, as the tar
 * carries them once. An inode is reachable while one of its names is;
 * when the last one goes, its bytes are the wasted bytes of the layer
 * that carried them, and the removed (or replaced) bytes of the layer
 * that made them unreachable. So, summed over the image, content minus
 * wasted is the content of the final tree, each inode once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store-internal.h"

#define NONE UINT32_MAX

struct tnode {
	const char *name;	/* borrowed from the layer's index */
	uint32_t len;
	uint32_t parent, child, sibling, hnext;
	uint32_t layer, inode;	/* content: the layer and its inode's
				 * entry (hardlink leader), or NONE */
	bool dir, dead;
};

struct walk {
	struct strata_lindex **lx;
	uint32_t n, cur;
	struct tnode *t;
	uint32_t nt, cap;
	uint32_t *hash, hsize;	/* bucket heads */
	uint32_t **refs;	/* [layer][leader]: visible names */
	uint32_t *stack;	/* scratch for subtree walks */
	uint32_t nstack, stack_cap;
	struct strata_layer_stat *out;
};

static uint32_t hash_of(uint32_t parent, const char *name, uint32_t len)
{
	uint64_t h = 1469598103934665603ull ^ parent;
	uint32_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (uint8_t)name[i]) * 1099511628211ull;
	return (uint32_t)(h ^ (h >> 32));
}

static uint32_t find(struct walk *w, uint32_t parent, const char *name,
		     uint32_t len)
{
	uint32_t k = w->hash[hash_of(parent, name, len) & (w->hsize - 1)];

	for (; k != NONE; k = w->t[k].hnext)
		if (w->t[k].parent == parent && w->t[k].len == len &&
		    !w->t[k].dead && !memcmp(w->t[k].name, name, len))
			return k;
	return NONE;
}

static int rehash(struct walk *w, uint32_t size)
{
	uint32_t *h = malloc((size_t)size * sizeof(*h)), i;

	if (!h)
		return -ENOMEM;
	memset(h, 0xff, (size_t)size * sizeof(*h));
	for (i = 1; i < w->nt; i++) {
		struct tnode *t = &w->t[i];
		uint32_t b;

		if (t->dead)
			continue;
		b = hash_of(t->parent, t->name, t->len) & (size - 1);
		t->hnext = h[b];
		h[b] = i;
	}
	free(w->hash);
	w->hash = h;
	w->hsize = size;
	return 0;
}

/* A new node @name under @parent. Return: its index, or NONE (ENOMEM). */
static uint32_t add(struct walk *w, uint32_t parent, const char *name,
		    uint32_t len, bool dir)
{
	struct tnode *t;
	uint32_t b;

	if (w->nt == w->cap) {
		uint32_t cap = w->cap * 2;
		struct tnode *nt;

		if (cap >= NONE / 2)
			return NONE;
		nt = realloc(w->t, (size_t)cap * sizeof(*nt));
		if (!nt)
			return NONE;
		w->t = nt;
		w->cap = cap;
	}
	if (w->nt >= w->hsize && rehash(w, w->hsize * 2) < 0)
		return NONE;
	t = &w->t[w->nt];
	memset(t, 0, sizeof(*t));
	t->name = name;
	t->len = len;
	t->parent = parent;
	t->layer = t->inode = NONE;
	t->dir = dir;
	t->sibling = w->t[parent].child;
	w->t[parent].child = w->nt;
	t->child = NONE;
	b = hash_of(parent, name, len) & (w->hsize - 1);
	t->hnext = w->hash[b];
	w->hash[b] = w->nt;
	return w->nt++;
}

static int push(struct walk *w, uint32_t x)
{
	if (w->nstack == w->stack_cap) {
		uint32_t cap = w->stack_cap ? w->stack_cap * 2 : 256;
		uint32_t *s = realloc(w->stack, (size_t)cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		w->stack = s;
		w->stack_cap = cap;
	}
	w->stack[w->nstack++] = x;
	return 0;
}

/* Node @x loses its name: its inode, if this was the last name, is
 * unreachable from now on. */
static void drop(struct walk *w, uint32_t x, bool removal)
{
	struct tnode *t = &w->t[x];
	const struct strata_lx_entry *e;

	t->dead = true;
	if (t->layer == NONE || --w->refs[t->layer][t->inode])
		return;
	e = strata_lx_entry(w->lx[t->layer], t->inode);
	w->out[t->layer].wasted += e->size;
	if (removal)
		w->out[w->cur].removed_bytes += e->size;
	else
		w->out[w->cur].replaced_bytes += e->size;
}

/* Remove the children of @x (and all below them): they count as removed
 * by the current layer. */
static int remove_below(struct walk *w, uint32_t x)
{
	uint32_t c;

	w->nstack = 0;
	for (c = w->t[x].child; c != NONE; c = w->t[c].sibling)
		if (!w->t[c].dead && push(w, c) < 0)
			return -ENOMEM;
	w->t[x].child = NONE;
	while (w->nstack) {
		uint32_t y = w->stack[--w->nstack];

		for (c = w->t[y].child; c != NONE; c = w->t[c].sibling)
			if (!w->t[c].dead && push(w, c) < 0)
				return -ENOMEM;
		drop(w, y, true);
		w->out[w->cur].removed++;
	}
	return 0;
}

/* Remove @x itself, and what is below it; @x counts as removed when
 * @counted, else as replaced (a change of the current layer). */
static int remove_node(struct walk *w, uint32_t x, bool counted)
{
	int r = remove_below(w, x);

	if (r < 0)
		return r;
	drop(w, x, counted);
	if (counted)
		w->out[w->cur].removed++;
	return 0;
}

static int apply_dir(struct walk *w, uint32_t dir, uint32_t node, int depth);

/* Apply child entry @i (of the layer w->cur) under tree node @node. */
static int apply_entry(struct walk *w, uint32_t i, uint32_t node, int depth)
{
	struct strata_lindex *lx = w->lx[w->cur];
	const struct strata_lx_entry *e = strata_lx_entry(lx, i);
	struct strata_layer_stat *s = &w->out[w->cur];
	const char *name = strata_lx_str(lx, e->name_off);
	bool listed = !(e->flags & STRATA_LX_IMPLIED);
	uint32_t x = find(w, node, name, e->name_len), y, ino = e->b;
	uint64_t bytes = 0;
	int r;

	if (e->flags & STRATA_LX_WHITEOUT)
		return x == NONE ? 0 : remove_node(w, x, true);
	if (e->flags & STRATA_LX_GHOST)	/* its whiteouts, for a lower dir */
		return x != NONE && w->t[x].dir ? apply_dir(w, i, x, depth + 1)
						: 0;
	if (x != NONE && (e->flags & STRATA_LX_REPLACED)) {
		r = remove_node(w, x, true);	/* whited out, then made */
		if (r < 0)
			return r;
		x = NONE;
	}
	if (S_ISDIR(e->mode)) {
		if (x != NONE && !w->t[x].dir) {
			r = remove_node(w, x, !listed);
			if (r < 0)
				return r;
			s->changed += listed;
			x = NONE;
		} else if (x != NONE) {
			s->changed += listed;
			if ((e->flags & STRATA_LX_OPAQUE) &&
			    remove_below(w, x) < 0)
				return -ENOMEM;
		} else {
			s->added += listed;
		}
		if (x == NONE)
			x = add(w, node, name, e->name_len, true);
		if (x == NONE)
			return -ENOMEM;
		return apply_dir(w, i, x, depth + 1);
	}
	if (ino >= strata_lx_count(lx))
		ino = i;
	/* first name of its inode in this layer: the tar carries the bytes */
	if (S_ISREG(e->mode) && !w->refs[w->cur][ino])
		bytes = e->size;
	s->content += bytes;
	if (x != NONE) {
		r = remove_node(w, x, false);
		if (r < 0)
			return r;
		s->changed++;
		s->changed_bytes += bytes;
	} else {
		s->added++;
		s->added_bytes += bytes;
	}
	y = add(w, node, name, e->name_len, false);
	if (y == NONE)
		return -ENOMEM;
	if (S_ISREG(e->mode)) {
		w->t[y].layer = w->cur;
		w->t[y].inode = ino;
		w->refs[w->cur][ino]++;
	}
	return 0;
}

static int apply_dir(struct walk *w, uint32_t dir, uint32_t node, int depth)
{
	struct strata_lindex *lx = w->lx[w->cur];
	const struct strata_lx_entry *d = strata_lx_entry(lx, dir);
	uint32_t first = d->a, n = d->b, c;
	int r;

	if (depth > 4096)	/* a path is at most 4096 bytes */
		return -ELOOP;
	for (c = 0; c < n; c++) {
		r = apply_entry(w, first + c, node, depth);
		if (r < 0)
			return r;
	}
	return 0;
}

static void walk_free(struct walk *w)
{
	uint32_t l;

	for (l = 0; w->refs && l < w->n; l++)
		free(w->refs[l]);
	free(w->refs);
	free(w->t);
	free(w->hash);
	free(w->stack);
}

static int walk_layers(struct walk *w)
{
	uint32_t l;
	int r;

	w->cap = 1024;
	w->hsize = 1024;
	w->t = calloc(w->cap, sizeof(*w->t));
	w->hash = malloc(w->hsize * sizeof(*w->hash));
	w->refs = calloc(w->n, sizeof(*w->refs));
	if (!w->t || !w->hash || !w->refs)
		return -ENOMEM;
	memset(w->hash, 0xff, w->hsize * sizeof(*w->hash));
	w->t[0].dir = true;
	w->t[0].child = w->t[0].sibling = w->t[0].hnext = NONE;
	w->t[0].layer = w->t[0].inode = w->t[0].parent = NONE;
	w->nt = 1;
	for (l = 0; l < w->n; l++) {
		w->refs[l] = calloc(strata_lx_count(w->lx[l]), sizeof(uint32_t));
		if (!w->refs[l])
			return -ENOMEM;
	}
	for (l = 0; l < w->n; l++) {
		const struct strata_lx_entry *root = strata_lx_entry(w->lx[l], 0);

		w->cur = l;
		if ((root->flags & STRATA_LX_OPAQUE) && remove_below(w, 0) < 0)
			return -ENOMEM;
		r = apply_dir(w, 0, 0, 0);
		if (r < 0)
			return r;
	}
	return 0;
}

int strata_layer_stats(struct strata_store *st, const struct strata_image *img,
		       struct strata_layer_stat *out, struct strata_err *err)
{
	struct walk w = { .out = out };
	uint32_t l;
	int r = 0;

	memset(out, 0, img->n_layers * sizeof(*out));
	if (img->n_layers == 0)
		return 0;
	w.lx = calloc(img->n_layers, sizeof(*w.lx));
	if (!w.lx)
		return -ENOMEM;
	for (l = 0; l < img->n_layers && r == 0; l++) {
		r = strata_lindex_open(st, img->layers[l].diff_id, &w.lx[l], err);
		if (r == 0)
			w.n++;
	}
	/* paths where the mount shows them (graft.c) */
	if (r == 0 && strata_lx_graft(w.lx, w.n) < 0)
		r = -ENOMEM;
	if (r == 0)
		r = walk_layers(&w);
	if (r == -ELOOP)
		r = strata_err_set(err, -EBADMSG, "image %s: a layer's "
				   "directories nest too deep",
				   img->ref_text);
	walk_free(&w);
	for (l = 0; l < w.n; l++)
		strata_lindex_close(w.lx[l]);
	free(w.lx);
	return r;
}
