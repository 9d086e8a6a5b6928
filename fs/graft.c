/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Grafts: a layer entry whose parent path is a symlink in the layers below
 * lands where the extractors put it (umoci unpack, containerd, moby), at
 * the symlink's target resolved inside the image root, and the symlink
 * stays (OCI-RULES.md P9, W4). In a tar this only happens when the parent
 * directory has no entry of its own in the layer, so only the layers'
 * implied directories (listed in each index) are examined, once per
 * mount: images whose tars list their directories cost nothing here.
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

#include "fs.h"

#define MAX_HOPS 40
#define PATH_BYTES 4096

/* Topmost visible entry at a symlink-free path in the layers below
 * @below. Return: true and *out, or false when absent. */
static bool view_entry(struct fs *fs, uint32_t below, const char *path,
		       struct fs_src *out)
{
	struct fs_src src[128], next[128];
	uint32_t n = 0, l;
	const char *p = path;

	if (below > 128)
		return false;
	for (l = below; l-- > 0;) {
		src[n].layer = l;
		src[n++].entry = 0;
		if (fs_entry(fs, l, 0)->flags & STRATA_LX_OPAQUE)
			break;
	}
	if (n == 0)
		return false;
	if (!*p) {
		*out = src[0];
		return true;
	}
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		bool found = false;
		struct fs_src top = { 0 };
		uint32_t k = 0, s;

		for (s = 0; s < n; s++) {
			uint32_t c = strata_lx_lookup(fs->layers[src[s].layer].lx,
						      src[s].entry, p, len);
			const struct strata_lx_entry *e;

			if (c == UINT32_MAX)
				continue;
			e = fs_entry(fs, src[s].layer, c);
			if (!found) {
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
		if (!found ||
		    (fs_entry(fs, top.layer, top.entry)->flags & STRATA_LX_WHITEOUT))
			return false;
		if (!slash) {
			*out = top;
			return true;
		}
		if (k == 0 || top.layer != next[0].layer ||
		    top.entry != next[0].entry)
			return false;	/* not a directory */
		memcpy(src, next, k * sizeof(*src));
		n = k;
		p = slash + 1;
	}
}

/*
 * Resolve @path inside the image as seen below layer @below, following
 * symlinks in every component (absolute targets from the image root, ".."
 * clamped at the root). Writes the symlink-free path to @out.
 */
static int view_resolve(struct fs *fs, uint32_t below, const char *path,
			char *out)
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
		struct fs_src e;

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
		if (snprintf(cand, sizeof(cand), "%s%s%s", out, out[0] ? "/" : "",
			     comp) >= (int)sizeof(cand))
			return -ENAMETOOLONG;
		if (view_entry(fs, below, cand, &e) &&
		    S_ISLNK(fs_entry(fs, e.layer, e.entry)->mode)) {
			const struct strata_lx_entry *le = fs_entry(fs, e.layer, e.entry);
			const char *target = strata_lx_str(fs->layers[e.layer].lx,
							   le->a);
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

static int graft_cmp(const void *a, const void *b)
{
	const struct fs_graft *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	return x->entry < y->entry ? -1 : x->entry > y->entry;
}

bool fs_is_grafted(const struct fs *fs, uint32_t layer, uint32_t entry)
{
	struct fs_graft key = { .layer = layer, .entry = entry };

	return fs->n_grafts && bsearch(&key, fs->grafts, fs->n_grafts, sizeof(key),
		       graft_cmp) != NULL;
}

/* Is @path below a directory this layer already grafted? */
static bool ancestor_grafted(struct fs *fs, uint32_t layer, const char *path,
			     size_t first)
{
	size_t g;

	for (g = first; g < fs->n_grafts; g++) {
		const char *gp = strata_lx_str(fs->layers[layer].lx,
					       fs->grafts[g].path_off);
		size_t n = strlen(gp);

		if (!strncmp(path, gp, n) && path[n] == '/')
			return true;
	}
	return false;
}

int fs_grafts_find(struct fs *fs)
{
	size_t cap = 0;
	uint32_t l;

	for (l = 1; l < fs->n_layers; l++) {
		size_t n, k, first = fs->n_grafts;
		const struct strata_lx_xref *imp =
			strata_lx_implied(fs->layers[l].lx, &n);

		for (k = 0; k < n; k++) {
			const char *path = strata_lx_str(fs->layers[l].lx,
							 imp[k].off);
			char target[PATH_BYTES];
			struct fs_src e;

			if (ancestor_grafted(fs, l, path, first))
				continue;
			if (!view_entry(fs, l, path, &e) ||
			    !S_ISLNK(fs_entry(fs, e.layer, e.entry)->mode))
				continue;
			if (view_resolve(fs, l, path, target) < 0 ||
			    !view_entry(fs, l, target, &e) ||
			    !S_ISDIR(fs_entry(fs, e.layer, e.entry)->mode)) {
				strata_warn("layer %u: %s: parent is a symlink "
					    "whose target is not a directory; "
					    "the layer's directory replaces it",
					    l, path);
				continue;
			}
			if (fs->n_grafts == cap) {
				size_t nc = cap ? cap * 2 : 8;
				struct fs_graft *ng = realloc(fs->grafts,
							      nc * sizeof(*ng));

				if (!ng)
					return -ENOMEM;
				fs->grafts = ng;
				cap = nc;
			}
			fs->grafts[fs->n_grafts].layer = l;
			fs->grafts[fs->n_grafts].entry = imp[k].entry;
			fs->grafts[fs->n_grafts].path_off = imp[k].off;
			fs->grafts[fs->n_grafts].target = strdup(target);
			if (!fs->grafts[fs->n_grafts].target)
				return -ENOMEM;
			fs->n_grafts++;
		}
	}
	if (fs->n_grafts)
		qsort(fs->grafts, fs->n_grafts, sizeof(*fs->grafts), graft_cmp);
	return 0;
}

void fs_grafts_free(struct fs *fs)
{
	size_t g;

	for (g = 0; g < fs->n_grafts; g++)
		free(fs->grafts[g].target);
	free(fs->grafts);
}
