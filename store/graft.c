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

static int kid_cmp(struct strata_lindex *lx, uint32_t a, uint32_t b)
{
	const struct strata_lx_entry *x = strata_lx_entry(lx, a);
	const struct strata_lx_entry *y = strata_lx_entry(lx, b);

	return strata_lx_namecmp(strata_lx_str(lx, x->name_off), x->name_len,
				 strata_lx_str(lx, y->name_off), y->name_len);
}

/*
 * Make @dir's children the merge of its own (minus @drop) and those of
 * directory @from (UINT32_MAX: none) and the single entry @add
 * (UINT32_MAX: none). On a name in both, @dir's own entry stays.
 * Return: subdirectories added, or -ENOMEM.
 */
static int rechild(struct strata_lindex *lx, uint32_t dir, uint32_t drop,
		   uint32_t from, uint32_t add)
{
	struct strata_lx_entry d = *strata_lx_entry(lx, dir);
	struct strata_lx_entry f = { 0 };
	uint32_t *kids, n = 0, i = 0, j = 0, nf = 0;
	int subdirs = 0, r;

	if (from != UINT32_MAX) {
		f = *strata_lx_entry(lx, from);
		nf = f.b;
	}
	kids = malloc(((size_t)d.b + nf + 1) * sizeof(*kids));
	if (!kids)
		return -ENOMEM;
	/* two sorted ranges and one more entry, merged by name */
	while (i < d.b || j < nf || add != UINT32_MAX) {
		uint32_t pick, cands[3], nc = 0, c, best;

		if (i < d.b)
			cands[nc++] = d.a + i;
		if (j < nf)
			cands[nc++] = f.a + j;
		if (add != UINT32_MAX)
			cands[nc++] = add;
		best = 0;
		for (c = 1; c < nc; c++)
			if (kid_cmp(lx, cands[c], cands[best]) < 0)
				best = c;
		pick = cands[best];
		if (i < d.b && pick == d.a + i) {
			i++;
			/* the same name coming from @from or @add: dropped */
			if (j < nf && !kid_cmp(lx, f.a + j, pick))
				j++;
			if (add != UINT32_MAX && !kid_cmp(lx, add, pick))
				add = UINT32_MAX;
			if (pick == drop)
				continue;
		} else if (j < nf && pick == f.a + j) {
			j++;
			if (add != UINT32_MAX && !kid_cmp(lx, add, pick))
				add = UINT32_MAX;
			if (S_ISDIR(strata_lx_entry(lx, pick)->mode))
				subdirs++;
		} else {
			add = UINT32_MAX;
			if (S_ISDIR(strata_lx_entry(lx, pick)->mode))
				subdirs++;
		}
		kids[n++] = pick;
	}
	r = strata_lx_set_children(lx, dir, kids, n);
	free(kids);
	return r < 0 ? r : subdirs;
}

/* Find directory @path (len @plen) in layer @lx. Return: its index, or
 * UINT32_MAX; *missing is set to the offset of the first component the
 * layer lacks (and the index is its deepest existing parent), or to @plen
 * when the whole path exists. -1 in *missing: a component is not a
 * directory. */
static uint32_t layer_walk(struct strata_lindex *lx, const char *path,
			   size_t plen, long *missing)
{
	const char *p = path, *end = path + plen;
	uint32_t cur = 0;

	*missing = (long)plen;
	while (p < end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
		uint32_t c = strata_lx_lookup(lx, cur, p, len);
		const struct strata_lx_entry *e;

		if (c == UINT32_MAX) {
			*missing = p - path;
			return cur;
		}
		e = strata_lx_entry(lx, c);
		if (!S_ISDIR(e->mode) || (e->flags & STRATA_LX_WHITEOUT)) {
			*missing = -1;
			return UINT32_MAX;
		}
		cur = c;
		p = slash ? slash + 1 : end;
	}
	return cur;
}

static int bump_nlink(struct strata_lindex *lx, uint32_t dir, int by)
{
	struct strata_lx_entry *d = strata_lx_entry_mut(lx, dir);

	if (!d)
		return -ENOMEM;
	d->nlink = (uint32_t)((int64_t)d->nlink + by);
	return 0;
}

/* Move implied directory @path of layer @lx to @target. Return: 1 moved,
 * 0 left in place, -ENOMEM. */
static int move(struct strata_lindex *lx, uint32_t layer, const char *path,
		const char *target)
{
	const char *slash = strrchr(path, '/');
	size_t plen = slash ? (size_t)(slash - path) : 0;
	const char *name = slash ? slash + 1 : path;
	struct strata_lx_entry x;
	uint32_t parent, xi, dir, made;
	long missing;
	int r;

	parent = layer_walk(lx, path, plen, &missing);
	if (parent == UINT32_MAX || missing != (long)plen)
		return 0;
	xi = strata_lx_lookup(lx, parent, name, strlen(name));
	if (xi == UINT32_MAX)
		return 0;
	x = *strata_lx_entry(lx, xi);
	if (!S_ISDIR(x.mode) || !(x.flags & STRATA_LX_IMPLIED))
		return 0;
	/* the layer's own entries on the way must be directories */
	dir = layer_walk(lx, target, strlen(target), &missing);
	if (missing < 0) {
		strata_warn("layer %u: %s: the target of the symlink below, "
			    "/%s, is not a directory in this layer; the "
			    "layer's directory replaces the symlink",
			    layer, path, target);
		return 0;
	}
	(void)dir;
	r = rechild(lx, parent, xi, UINT32_MAX, UINT32_MAX);
	if (r < 0 || bump_nlink(lx, parent, -1) < 0)
		return -ENOMEM;
	dir = layer_walk(lx, target, strlen(target), &missing);
	if (dir == UINT32_MAX)
		return 0;	/* cannot happen: checked above */
	if (missing == (long)strlen(target)) {
		r = rechild(lx, dir, UINT32_MAX, xi, UINT32_MAX);
		if (r < 0 || bump_nlink(lx, dir, r) < 0)
			return -ENOMEM;
		return 1;
	}
	/* make target[missing..] bottom up: the last one takes the
	 * children, each parent holds one */
	{
		const char *rest = target + missing, *end = rest + strlen(rest);
		uint32_t child = UINT32_MAX;

		while (end > rest) {
			const char *b = end;
			struct strata_lx_entry e = x;
			uint32_t off;

			while (b > rest && b[-1] != '/')
				b--;
			off = strata_lx_add_str(lx, b, (size_t)(end - b));
			if (off == UINT32_MAX)
				return -ENOMEM;
			e.name_off = off;
			e.name_len = (uint16_t)(end - b);
			e.flags &= (uint16_t)~STRATA_LX_XATTRS;
			if (child != UINT32_MAX) {
				e.a = child;
				e.b = 1;
				e.nlink = 3;
			}
			made = strata_lx_add(lx, &e, UINT32_MAX);
			if (made == UINT32_MAX)
				return -ENOMEM;
			child = made;
			end = b > rest ? b - 1 : b;
		}
		r = rechild(lx, dir, UINT32_MAX, UINT32_MAX, child);
		if (r < 0 || bump_nlink(lx, dir, 1) < 0)
			return -ENOMEM;
	}
	return 1;
}

int strata_lx_graft(struct strata_lindex **lx, uint32_t n)
{
	uint32_t l;
	int moved = 0;

	for (l = 1; l < n && l <= MAX_LAYERS; l++) {
		size_t ni, k, n_done = 0, cap = 0;
		const struct strata_lx_xref *imp = strata_lx_implied(lx[l], &ni);
		uint32_t *done = NULL;

		for (k = 0; k < ni; k++) {
			/* implied paths live in the file's strings: stable */
			const char *path = strata_lx_str(lx[l], imp[k].off);
			const struct strata_lx_entry *e;
			char target[PATH_BYTES];
			size_t d;
			int r;

			for (d = 0; d < n_done; d++) {
				const char *gp = strata_lx_str(lx[l], done[d]);
				size_t gl = strlen(gp);

				if (!strncmp(path, gp, gl) && path[gl] == '/')
					break;
			}
			if (d < n_done)
				continue;	/* moved with an ancestor */
			e = view_at(lx, l, path, strlen(path));
			if (!e || !S_ISLNK(e->mode))
				continue;
			if (view_resolve(lx, l, path, target) < 0 ||
			    !target_usable(lx, l, target)) {
				strata_warn("layer %u: %s: parent is a symlink "
					    "whose target is not a directory; "
					    "the layer's directory replaces it",
					    l, path);
				continue;
			}
			r = move(lx[l], l, path, target);
			if (r < 0) {
				free(done);
				return r;
			}
			if (r == 0)
				continue;
			moved++;
			if (n_done == cap) {
				uint32_t *nd = realloc(done, (cap * 2 + 4) *
						       sizeof(*nd));

				if (!nd) {
					free(done);
					return -ENOMEM;
				}
				done = nd;
				cap = cap * 2 + 4;
			}
			done[n_done++] = imp[k].off;
		}
		free(done);
	}
	return moved;
}
