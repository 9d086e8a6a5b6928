/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Grafts: a layer entry whose parent path is a symlink in the layers below
 * lands where the extractors put it (umoci unpack, containerd, moby): at
 * the symlink's target resolved inside the image root, with the missing
 * directories of that path made, and the symlink stays (OCI-RULES.md P9,
 * W4). In a tar this only happens when the parent directory has no entry
 * of its own in the layer, so only the layers' implied directories (listed
 * in each index) are examined, once per open: images whose tars list their
 * directories cost nothing here.
 *
 * The move rewrites the layer's index in memory, as if its tar had named
 * the resolved paths: the implied directory leaves its parent, and its
 * children join the directory at the target, made as implied directories
 * where the layer has none. Everything that reads the index afterwards
 * (the mount's merge, the writable mount, commit) then sees one consistent
 * tree without knowing about grafts.
 *
 * A tar entry for the directory itself (`lib/`) replaces the symlink
 * instead (layer.md: a non-directory is unlinked and recreated), so
 * explicit directories are never grafted. Same-layer paths through
 * symlinks are refused at unpack.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store-internal.h"
#include "base/log.h"

#define MAX_HOPS 40
#define PATH_BYTES 4096
#define MAX_LAYERS 128

struct src {
	uint32_t layer;
	uint32_t entry;
};

/* Topmost visible entry at the symlink-free @path (len @plen) in the
 * layers below @below. Return: true and *out, or false when absent. */
static bool view_entry(struct strata_lindex **lx, uint32_t below,
		       const char *path, size_t plen, struct src *out)
{
	struct src src[MAX_LAYERS], next[MAX_LAYERS];
	uint32_t n = 0, l;
	const char *p = path, *end = path + plen;

	if (below > MAX_LAYERS)
		return false;
	for (l = below; l-- > 0;) {
		src[n].layer = l;
		src[n++].entry = 0;
		if (strata_lx_entry(lx[l], 0)->flags & STRATA_LX_OPAQUE)
			break;
	}
	if (n == 0)
		return false;
	if (p == end) {
		*out = src[0];
		return true;
	}
	for (;;) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
		bool found = false;
		struct src top = { 0 };
		uint32_t k = 0, s;

		for (s = 0; s < n; s++) {
			uint32_t c = strata_lx_lookup(lx[src[s].layer],
						      src[s].entry, p, len);
			const struct strata_lx_entry *e;

			if (c == UINT32_MAX)
				continue;
			e = strata_lx_entry(lx[src[s].layer], c);
			/* a ghost only carries whiteouts down to a directory
			 * below it: never the visible entry */
			if (!found && !(e->flags & STRATA_LX_GHOST)) {
				found = true;
				top.layer = src[s].layer;
				top.entry = c;
			}
			if (!S_ISDIR(e->mode))
				break;
			next[k].layer = src[s].layer;
			next[k++].entry = c;
			if (e->flags & STRATA_LX_OPAQUE)
				break;
		}
		if (!found || (strata_lx_entry(lx[top.layer], top.entry)->flags &
			       STRATA_LX_WHITEOUT))
			return false;
		if (!slash) {
			*out = top;
			return true;
		}
		if (!S_ISDIR(strata_lx_entry(lx[top.layer], top.entry)->mode))
			return false;	/* not a directory */
		memcpy(src, next, k * sizeof(*src));
		n = k;
		p = slash + 1;
	}
}

static const struct strata_lx_entry *view_at(struct strata_lindex **lx,
					     uint32_t below, const char *path,
					     size_t len)
{
	struct src e;

	if (!view_entry(lx, below, path, len, &e))
		return NULL;
	return strata_lx_entry(lx[e.layer], e.entry);
}

/*
 * Resolve @path inside the image as seen below layer @below, following
 * symlinks in every component (absolute targets from the image root, ".."
 * clamped at the root). Writes the symlink-free path to @out; components
 * past the first missing one are kept as they are.
 */
static int view_resolve(struct strata_lindex **lx, uint32_t below,
			const char *path, char *out)
{
	char queue[PATH_BYTES * 2];
	int hops = 0;

	out[0] = '\0';
	if (snprintf(queue, sizeof(queue), "%s", path) >= (int)sizeof(queue))
		return -ENAMETOOLONG;
	while (queue[0]) {
		char comp[256], cand[PATH_BYTES];
		char *slash = strchr(queue, '/');
		size_t len = slash ? (size_t)(slash - queue) : strlen(queue);
		const struct strata_lx_entry *e;
		struct src at;
		int cl;

		if (len >= sizeof(comp))
			return -ENAMETOOLONG;
		memcpy(comp, queue, len);
		comp[len] = '\0';
		memmove(queue, slash ? slash + 1 : queue + len,
			strlen(slash ? slash + 1 : queue + len) + 1);
		if (!len || !strcmp(comp, "."))
			continue;
		if (!strcmp(comp, "..")) {
			char *s = strrchr(out, '/');

			if (s)
				*s = '\0';
			else
				out[0] = '\0';
			continue;
		}
		cl = snprintf(cand, sizeof(cand), "%s%s%s", out,
			      out[0] ? "/" : "", comp);
		if (cl >= (int)sizeof(cand))
			return -ENAMETOOLONG;
		if (view_entry(lx, below, cand, (size_t)cl, &at) &&
		    S_ISLNK((e = strata_lx_entry(lx[at.layer], at.entry))->mode)) {
			const char *target = strata_lx_str(lx[at.layer], e->a);
			char rest[PATH_BYTES * 2];

			if (++hops > MAX_HOPS)
				return -ELOOP;
			if (snprintf(rest, sizeof(rest), "%s/%s", target, queue) >=
			    (int)sizeof(rest))
				return -ENAMETOOLONG;
			strcpy(queue, rest);
			if (target[0] == '/')
				out[0] = '\0';
			continue;
		}
		strcpy(out, cand);
	}
	return 0;
}

/* Is every existing prefix of @target (below @below) a directory? */
static bool target_usable(struct strata_lindex **lx, uint32_t below,
			  const char *target)
{
	const char *p = target;

	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - target) : strlen(target);
		const struct strata_lx_entry *e = view_at(lx, below, target, len);

		if (!e)
			return true;	/* the rest is made */
		if (!S_ISDIR(e->mode))
			return false;
		if (!slash)
			break;
		p = slash + 1;
	}
	return true;
}

/*
 * The moves of one layer are planned first and applied at the end, each
 * changed directory rewritten once, so a hostile layer with thousands of
 * grafts costs time and memory linear in what it moves.
 *
 * A plan node is a directory of the layer that changes: an existing entry
 * (@dir) or one to make (@dir == UINT32_MAX, named @name). Its children
 * become its own (minus @drop), those of the implied directories it
 * adopts, and its new subdirectories (@sub, plan node numbers).
 */
struct plan {
	uint32_t dir;
	uint32_t name_off;
	uint16_t name_len;
	uint32_t depth;
	uint32_t parent;		/* plan node of a new node's parent */
	uint32_t made;			/* entry made for a new node */
	struct strata_lx_entry proto;	/* attributes of a new node */
	uint32_t *drop, n_drop;
	uint32_t *adopt, n_adopt;
	uint32_t *sub, n_sub;
};

struct planner {
	struct strata_lindex *lx;
	struct plan *p;
	uint32_t n, cap;
	uint32_t *tab, tab_size;	/* plan nodes by key, + 1; 0 = free */
	uint32_t layer;
	uint64_t budget;	/* search steps left: a hostile layer with
				 * very many grafts gets the rest refused */
	bool warned;
};

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

/* Key of an existing directory, or of a new one by parent and name. */
static uint64_t key_of(uint32_t dir, uint32_t parent, const char *name,
		       size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	if (dir != UINT32_MAX)
		return mix(dir);
	for (i = 0; i < len; i++)
		h = (h ^ (uint8_t)name[i]) * 0x100000001b3ull;
	return mix(h ^ ((uint64_t)parent << 32 | 0x9e3779b9u));
}

static bool plan_is(struct planner *pl, uint32_t k, uint32_t dir,
		    uint32_t parent, const char *name, size_t len)
{
	const struct plan *p = &pl->p[k];

	if (dir != UINT32_MAX)
		return p->dir == dir;
	return p->dir == UINT32_MAX && p->parent == parent &&
	       p->name_len == len &&
	       !memcmp(strata_lx_str(pl->lx, p->name_off), name, len);
}

static uint32_t tab_find(struct planner *pl, uint32_t dir, uint32_t parent,
			 const char *name, size_t len)
{
	uint32_t m, i;

	if (!pl->tab_size)
		return UINT32_MAX;
	m = pl->tab_size - 1;
	for (i = (uint32_t)key_of(dir, parent, name, len) & m; pl->tab[i];
	     i = (i + 1) & m)
		if (plan_is(pl, pl->tab[i] - 1, dir, parent, name, len))
			return pl->tab[i] - 1;
	return UINT32_MAX;
}

static void tab_put(struct planner *pl, uint32_t k)
{
	const struct plan *p = &pl->p[k];
	uint32_t m = pl->tab_size - 1, i;

	i = (uint32_t)key_of(p->dir, p->parent,
			     strata_lx_str(pl->lx, p->name_off),
			     p->name_len) & m;
	while (pl->tab[i])
		i = (i + 1) & m;
	pl->tab[i] = k + 1;
}

static int tab_grow(struct planner *pl)
{
	uint32_t size = pl->tab_size ? pl->tab_size * 2 : 64, k;
	uint32_t *t = calloc(size, sizeof(*t));

	if (!t)
		return -ENOMEM;
	free(pl->tab);
	pl->tab = t;
	pl->tab_size = size;
	for (k = 0; k < pl->n; k++)
		tab_put(pl, k);
	return 0;
}

static bool spend(struct planner *pl, uint64_t steps)
{
	if (pl->budget < steps) {
		pl->budget = 0;
		return false;
	}
	pl->budget -= steps;
	return true;
}

/* Out of search budget? Says so once. */
static bool exhausted(struct planner *pl, uint32_t layer, const char *path)
{
	if (pl->budget)
		return false;
	if (!pl->warned)
		strata_warn("layer %u: %s and the directories after it: too "
			    "many paths through lower symlinks; these layer "
			    "directories replace the symlinks", layer, path);
	pl->warned = true;
	return true;
}

static int push(uint32_t **v, uint32_t *n, uint32_t x)
{
	if (!(*n & (*n - 1)) || *n == 0) {	/* at 0, 1, 2, 4, ...: grow */
		uint32_t *nv = realloc(*v, (*n ? *n * 2 : 1) * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		*v = nv;
	}
	(*v)[(*n)++] = x;
	return 0;
}

static uint32_t plan_find(struct planner *pl, uint32_t dir)
{
	return tab_find(pl, dir, 0, NULL, 0);
}

/* A new plan node: for existing directory @dir, or (@dir UINT32_MAX) a
 * new directory @name (@off in the strings) under plan node @parent.
 * Return: its number, or UINT32_MAX (ENOMEM). */
static uint32_t plan_add(struct planner *pl, uint32_t dir, uint32_t depth,
			 uint32_t parent, uint32_t off, size_t len)
{
	if ((pl->n + 1) * 2 > pl->tab_size && tab_grow(pl) < 0)
		return UINT32_MAX;
	if (pl->n == pl->cap) {
		uint32_t cap = pl->cap ? pl->cap * 2 : 8;
		struct plan *np = realloc(pl->p, cap * sizeof(*np));

		if (!np)
			return UINT32_MAX;
		pl->p = np;
		pl->cap = cap;
	}
	memset(&pl->p[pl->n], 0, sizeof(pl->p[0]));
	pl->p[pl->n].dir = dir;
	pl->p[pl->n].depth = depth;
	pl->p[pl->n].parent = parent;
	pl->p[pl->n].name_off = off;
	pl->p[pl->n].name_len = (uint16_t)len;
	pl->p[pl->n].made = UINT32_MAX;
	tab_put(pl, pl->n);
	return pl->n++;
}

/* Plan node of existing directory @dir, made if absent. */
static uint32_t plan_of(struct planner *pl, uint32_t dir, uint32_t depth)
{
	uint32_t i = plan_find(pl, dir);

	return i != UINT32_MAX ? i : plan_add(pl, dir, depth, 0, 0, 0);
}

/* Child @name of plan node @k among its new subdirectories. */
static uint32_t plan_sub(struct planner *pl, uint32_t k, const char *name,
			 size_t len)
{
	return tab_find(pl, UINT32_MAX, k, name, len);
}

/* Child @name among the children of the directories plan node @k adopts. */
static uint32_t plan_adopted(struct planner *pl, uint32_t k, const char *name,
			     size_t len)
{
	uint32_t i, c;

	if (k != UINT32_MAX)
		spend(pl, pl->p[k].n_adopt);
	for (i = 0; k != UINT32_MAX && i < pl->p[k].n_adopt; i++) {
		c = strata_lx_lookup(pl->lx, pl->p[k].adopt[i], name, len);
		if (c != UINT32_MAX)
			return c;
	}
	return UINT32_MAX;
}

/*
 * Plan the move of implied directory @xi (at @path, child of @parent) to
 * @target. Return: 1 planned, 0 not possible (warned), -ENOMEM.
 */
static int plan_move(struct planner *pl, uint32_t layer, const char *path,
		     uint32_t parent, uint32_t pdepth, uint32_t xi,
		     const char *target)
{
	struct strata_lindex *lx = pl->lx;
	const char *p = target, *end = target + strlen(target);
	uint32_t cur = 0, node = UINT32_MAX, depth = 0, k;

	if (exhausted(pl, layer, path))
		return 0;

	/* the part that exists: in the layer itself, in directories moved
	 * here already, or planned */
	while (p < end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
		uint32_t c = UINT32_MAX;
		const struct strata_lx_entry *e;

		if (node == UINT32_MAX) {
			c = strata_lx_lookup(lx, cur, p, len);
			k = plan_find(pl, cur);
		} else {
			k = node;
		}
		if (c == UINT32_MAX && k != UINT32_MAX) {
			uint32_t sub = plan_sub(pl, k, p, len);

			if (sub != UINT32_MAX) {
				node = sub;
				depth++;
				p = slash ? slash + 1 : end;
				continue;
			}
			c = plan_adopted(pl, k, p, len);
		}
		if (c == UINT32_MAX)
			break;
		e = strata_lx_entry(lx, c);
		if (!S_ISDIR(e->mode) || (e->flags & STRATA_LX_WHITEOUT)) {
			strata_warn("layer %u: %s: the target of the symlink "
				    "below, /%s, is not a directory in this "
				    "layer; the layer's directory replaces the "
				    "symlink", layer, path, target);
			return 0;
		}
		cur = c;
		node = UINT32_MAX;
		depth++;
		p = slash ? slash + 1 : end;
	}
	if (exhausted(pl, layer, path))
		return 0;
	k = plan_of(pl, parent, pdepth);
	if (k == UINT32_MAX || push(&pl->p[k].drop, &pl->p[k].n_drop, xi) < 0)
		return -ENOMEM;
	if (node == UINT32_MAX) {
		node = plan_of(pl, cur, depth);
		if (node == UINT32_MAX)
			return -ENOMEM;
	}
	/* the rest is made, as implied directories like @xi */
	while (p < end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
		uint32_t nk, off = strata_lx_add_str(lx, p, len);

		if (off == UINT32_MAX || len > UINT16_MAX)
			return -ENOMEM;
		nk = plan_add(pl, UINT32_MAX, ++depth, node, off, len);
		if (nk == UINT32_MAX)
			return -ENOMEM;
		pl->p[nk].proto = *strata_lx_entry(lx, xi);
		if (push(&pl->p[node].sub, &pl->p[node].n_sub, nk) < 0)
			return -ENOMEM;
		node = nk;
		p = slash ? slash + 1 : end;
	}
	if (push(&pl->p[node].adopt, &pl->p[node].n_adopt, xi) < 0)
		return -ENOMEM;
	return 1;
}

struct kid {
	uint32_t entry;
	uint32_t rank;		/* own children first, then adopted, then new */
};

/* qsort_r order of children: by name, then rank (@ctx: the index; a live
 * commit grafts the next image while other threads serve requests) */
static int kid_cmp(const void *a, const void *b, void *ctx)
{
	const struct kid *x = a, *y = b;
	struct strata_lindex *lx = ctx;
	const struct strata_lx_entry *ex = strata_lx_entry(lx, x->entry);
	const struct strata_lx_entry *ey = strata_lx_entry(lx, y->entry);
	int c = strata_lx_namecmp(strata_lx_str(lx, ex->name_off),
				  ex->name_len,
				  strata_lx_str(lx, ey->name_off),
				  ey->name_len);

	if (c)
		return c;
	return x->rank < y->rank ? -1 : x->rank > y->rank;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* @p->drop sorted */
static bool dropped(const struct plan *p, uint32_t e)
{
	return p->n_drop &&
	       bsearch(&e, p->drop, p->n_drop, sizeof(e), u32_cmp) != NULL;
}

static int add_range(struct kid **k, size_t *n, size_t *cap,
		     const struct strata_lx_entry *d, uint32_t rank,
		     const struct plan *skip)
{
	uint32_t i;

	if (*n + d->b > *cap) {
		size_t nc = (*n + d->b) * 2;
		struct kid *nk = realloc(*k, nc * sizeof(*nk));

		if (!nk)
			return -ENOMEM;
		*k = nk;
		*cap = nc;
	}
	for (i = 0; i < d->b; i++) {
		if (skip && dropped(skip, d->a + i))
			continue;
		(*k)[*n].entry = d->a + i;
		(*k)[(*n)++].rank = rank;
	}
	return 0;
}

/* Rewrite plan node @k: its entry's children and link count. */
static int apply(struct planner *pl, uint32_t k)
{
	struct strata_lindex *lx = pl->lx;
	struct plan *p = &pl->p[k];
	struct kid *kids = NULL;
	size_t n = 0, cap = 0, i, j;
	uint32_t *idx = NULL, subdirs = 0, dir = p->dir;
	struct strata_lx_entry *d;
	bool opaque = false;
	int r = -ENOMEM;

	for (i = 0; i < p->n_adopt; i++)	/* `x/.wh..wh..opq`: */
		if (strata_lx_entry(lx, p->adopt[i])->flags & STRATA_LX_OPAQUE)
			opaque = true;	/* applies through the link */
	if (dir == UINT32_MAX) {
		struct strata_lx_entry e = p->proto;

		e.name_off = p->name_off;
		e.name_len = p->name_len;
		e.flags &= (uint8_t)~(STRATA_LX_XATTRS | STRATA_LX_OPAQUE);
		if (opaque)
			e.flags |= STRATA_LX_OPAQUE;
		e.b = 0;
		e.size = 2;	/* nlink of an empty directory */
		if (p->n_adopt == 1 && p->n_sub == 0) {
			const struct strata_lx_entry *x =
				strata_lx_entry(lx, p->adopt[0]);

			e.a = x->a;	/* the moved directory's own run */
			e.b = x->b;
			e.size = x->size;	/* its nlink */
		}
		p->made = strata_lx_add(lx, &e, UINT32_MAX);
		if (p->made == UINT32_MAX)
			return -ENOMEM;
		if (e.b || (p->n_adopt == 0 && p->n_sub == 0))
			return 0;
		dir = p->made;
	} else if (p->n_drop + p->n_adopt + p->n_sub == 0) {
		return 0;
	}
	if (p->n_drop)
		qsort(p->drop, p->n_drop, sizeof(*p->drop), u32_cmp);
	if (add_range(&kids, &n, &cap, strata_lx_entry(lx, dir), 0, p) < 0)
		goto out;
	for (i = 0; i < p->n_adopt; i++)
		if (add_range(&kids, &n, &cap, strata_lx_entry(lx, p->adopt[i]),
			      (uint32_t)(1 + i), NULL) < 0)
			goto out;
	if (n + p->n_sub > cap) {
		struct kid *nk = realloc(kids, (n + p->n_sub) * sizeof(*nk));

		if (!nk)
			goto out;
		kids = nk;
	}
	for (i = 0; i < p->n_sub; i++) {
		kids[n].entry = pl->p[p->sub[i]].made;
		kids[n++].rank = UINT32_MAX;
	}
	if (n)	/* kids is still NULL for a directory left empty */
		qsort_r(kids, n, sizeof(*kids), kid_cmp, lx);
	idx = malloc((n ? n : 1) * sizeof(*idx));
	if (!idx)
		goto out;
	/* on a name twice, the first (own, then adopted) stays */
	for (i = 0, j = 0; i < n; i++) {
		const struct strata_lx_entry *a = strata_lx_entry(lx,
								  kids[i].entry);

		if (j) {
			const struct strata_lx_entry *b =
				strata_lx_entry(lx, idx[j - 1]);

			if (!strata_lx_namecmp(strata_lx_str(lx, a->name_off),
					       a->name_len,
					       strata_lx_str(lx, b->name_off),
					       b->name_len)) {
				/* the tar order that would decide is not
				 * kept: the entry named directly wins */
				strata_warn("layer %u: %.*s is named twice "
					    "in one directory, through a lower "
					    "symlink; the entry named directly "
					    "(or the first) is kept",
					    pl->layer, (int)a->name_len,
					    strata_lx_str(lx, a->name_off));
				continue;
			}
		}
		idx[j++] = kids[i].entry;
		if (S_ISDIR(strata_lx_entry(lx, kids[i].entry)->mode))
			subdirs++;
	}
	r = strata_lx_set_children(lx, dir, idx, (uint32_t)j);
	if (r == 0) {
		d = strata_lx_entry_mut(lx, dir);
		if (!d) {
			r = -ENOMEM;
		} else {
			d->size = 2 + subdirs;	/* nlink */
			if (opaque)
				d->flags |= STRATA_LX_OPAQUE;
		}
	}
out:
	free(kids);
	free(idx);
	return r;
}

static int depth_cmp(const void *a, const void *b)
{
	const uint32_t *x = a, *y = b;

	/* deepest first: a parent copies its children's final entries */
	if (x[0] != y[0])
		return x[0] > y[0] ? -1 : 1;
	return x[1] < y[1] ? -1 : x[1] > y[1];
}

static void planner_free(struct planner *pl)
{
	uint32_t i;

	for (i = 0; i < pl->n; i++) {
		free(pl->p[i].drop);
		free(pl->p[i].adopt);
		free(pl->p[i].sub);
	}
	free(pl->p);
	free(pl->tab);
}

/*
 * The parent of @path in layer @lx, walking from the root; false when a
 * directory on the way was moved (@moved: bitmap by entry), since its
 * content moves with it, or the path is not there.
 */
static bool layer_parent(struct strata_lindex *lx, const uint8_t *moved,
			 const char *path, uint32_t *parent, uint32_t *depth)
{
	const char *p = path, *end = strrchr(path, '/');
	uint32_t cur = 0;

	*depth = 0;
	while (end && p < end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);

		cur = strata_lx_lookup(lx, cur, p, len);
		if (cur == UINT32_MAX || (moved[cur / 8] & (1u << (cur % 8))))
			return false;
		(*depth)++;
		p = slash ? slash + 1 : end;
	}
	*parent = cur;
	return true;
}

/* Plan and apply the moves of layer @l. Return: moves, or -ENOMEM. */
static int graft_layer(struct strata_lindex **lx, uint32_t l)
{
	uint32_t count = strata_lx_count(lx[l]);
	struct planner pl = {
		.lx = lx[l],
		.layer = l,
		/* generous for real images (a handful of grafts), bounded
		 * for hostile ones */
		.budget = 64 * ((uint64_t)count + 4096),
	};
	size_t ni, k;
	const struct strata_lx_xref *imp = strata_lx_implied(lx[l], &ni);
	uint32_t (*order)[2] = NULL, i;
	uint8_t *moved = calloc(count / 8 + 1, 1);
	int n_moved = 0, r = 0;

	if (!moved)
		return -ENOMEM;
	for (k = 0; k < ni && r >= 0; k++) {
		/* implied paths live in the file's strings: stable */
		const char *path = strata_lx_str(lx[l], imp[k].off);
		const char *slash = strrchr(path, '/');
		const char *name = slash ? slash + 1 : path;
		const struct strata_lx_entry *e;
		char target[PATH_BYTES];
		uint32_t parent, pdepth, xi = imp[k].entry;

		if (xi >= count ||
		    (strata_lx_entry(lx[l], xi)->flags & STRATA_LX_REPLACED) ||
		    !layer_parent(lx[l], moved, path, &parent, &pdepth) ||
		    strata_lx_lookup(lx[l], parent, name, strlen(name)) != xi)
			continue;	/* a whiteout replaced the symlink */
		e = view_at(lx, l, path, strlen(path));
		if (!e || !S_ISLNK(e->mode))
			continue;
		if (view_resolve(lx, l, path, target) < 0 ||
		    !target_usable(lx, l, target)) {
			strata_warn("layer %u: %s: parent is a symlink whose "
				    "target is not a directory; the layer's "
				    "directory replaces it", l, path);
			continue;
		}
		r = plan_move(&pl, l, path, parent, pdepth, xi, target);
		if (r > 0) {
			n_moved++;
			moved[xi / 8] |= (uint8_t)(1u << (xi % 8));
		}
	}
	if (r >= 0 && pl.n) {
		order = malloc(pl.n * sizeof(*order));
		if (!order)
			r = -ENOMEM;
		for (i = 0; order && i < pl.n; i++) {
			order[i][0] = pl.p[i].depth;
			order[i][1] = i;
		}
		if (order)
			qsort(order, pl.n, sizeof(*order), depth_cmp);
		for (i = 0; order && i < pl.n && r >= 0; i++)
			r = apply(&pl, order[i][1]);
	}
	free(order);
	free(moved);
	planner_free(&pl);
	return r < 0 ? r : n_moved;
}

int strata_lx_graft(struct strata_lindex **lx, uint32_t n)
{
	uint32_t l;
	int moved = 0, r;

	for (l = 1; l < n && l <= MAX_LAYERS; l++) {
		r = graft_layer(lx, l);
		if (r < 0)
			return r;
		moved += r;
	}
	return moved;
}
