/* SPDX-License-Identifier: Apache-2.0 */
/* The directory node table: ino -> struct dnode, with lookup counts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"

static size_t bucket(const struct fs *fs, fuse_ino_t ino)
{
	uint64_t h = ino * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 20) & (fs->hash_size - 1);
}

int fs_nodes_init(struct fs *fs)
{
	size_t i;

	fs->hash_size = 1024;
	fs->hash = calloc(fs->hash_size, sizeof(*fs->hash));
	if (!fs->hash)
		return -ENOMEM;
	for (i = 0; i < FS_MERGE_LOCKS; i++)
		pthread_mutex_init(&fs->merge_locks[i], NULL);
	pthread_mutex_init(&fs->revive_lock, NULL);
	return pthread_mutex_init(&fs->lock, NULL) ? -ENOMEM : 0;
}

static void dnode_free(struct dnode *d)
{
	if (d->src != &d->attr)
		free(d->src);
	free(d->children);
	free(d);
}

void fs_nodes_free(struct fs *fs)
{
	size_t i;

	for (i = 0; i < fs->hash_size; i++) {
		struct dnode *d = fs->hash[i];

		while (d) {
			struct dnode *n = d->hnext;

			if (d != fs->root)
				dnode_free(d);
			d = n;
		}
	}
	free(fs->hash);
	if (fs->root)
		dnode_free(fs->root);
	for (i = 0; i < FS_MERGE_LOCKS; i++)
		pthread_mutex_destroy(&fs->merge_locks[i]);
	if (fs->parents)
		for (i = 0; i < fs->n_parents; i++)
			free(fs->parents[i]);
	free(fs->parents);
	fs->parents = NULL;
	pthread_mutex_destroy(&fs->revive_lock);
}

static struct dnode *find_locked(struct fs *fs, fuse_ino_t ino)
{
	struct dnode *d;

	for (d = fs->hash[bucket(fs, ino)]; d; d = d->hnext)
		if (d->ino == ino)
			return d;
	return NULL;
}

static struct dnode *revive(struct fs *fs, fuse_ino_t ino);

struct dnode *fs_dnode_get(struct fs *fs, fuse_ino_t ino)
{
	struct dnode *d;

	if (ino == FUSE_ROOT_ID)
		return fs->root;
	pthread_mutex_lock(&fs->lock);
	d = find_locked(fs, ino);
	pthread_mutex_unlock(&fs->lock);
	return d ? d : revive(fs, ino);
}

static void grow_locked(struct fs *fs)
{
	size_t n = fs->hash_size * 2, i;
	struct dnode **h = calloc(n, sizeof(*h));

	if (!h)
		return;	/* keep the smaller table; chains just get longer */
	for (i = 0; i < fs->hash_size; i++) {
		struct dnode *d = fs->hash[i];

		while (d) {
			struct dnode *next = d->hnext;
			size_t b;

			fs->hash_size = n;
			b = bucket(fs, d->ino);
			fs->hash_size = n / 2;
			d->hnext = h[b];
			h[b] = d;
			d = next;
		}
	}
	free(fs->hash);
	fs->hash = h;
	fs->hash_size = n;
}

struct dnode *fs_dnode_ref(struct fs *fs, struct dnode *parent,
			   const struct fs_child *c)
{
	fuse_ino_t ino = fs_make_ino(c->layer, c->entry);
	const struct strata_lx_entry *e = fs_entry(fs, c->layer, c->entry);
	struct dnode *d, *other;
	size_t b;

	pthread_mutex_lock(&fs->lock);
	d = find_locked(fs, ino);
	if (d) {
		d->nlookup++;
		pthread_mutex_unlock(&fs->lock);
		return d;
	}
	pthread_mutex_unlock(&fs->lock);

	/* Build outside the lock: computing sources reads only immutable
	 * data. A racing builder may win; then ours is dropped. */
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->ino = ino;
	if (fs_dir_sources(fs, parent, fs_name(fs, c->layer, e), e->name_len,
			   d) < 0) {
		dnode_free(d);
		return NULL;
	}
	pthread_mutex_lock(&fs->lock);
	other = find_locked(fs, ino);
	if (other) {
		other->nlookup++;
		pthread_mutex_unlock(&fs->lock);
		dnode_free(d);
		return other;
	}
	d->nlookup = 1;
	b = bucket(fs, ino);
	d->hnext = fs->hash[b];
	fs->hash[b] = d;
	if (++fs->n_nodes > fs->hash_size)
		grow_locked(fs);
	pthread_mutex_unlock(&fs->lock);
	return d;
}

void fs_dnode_forget(struct fs *fs, fuse_ino_t ino, uint64_t n)
{
	struct dnode **pp, *d = NULL;

	if (ino == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&fs->lock);
	for (pp = &fs->hash[bucket(fs, ino)]; *pp; pp = &(*pp)->hnext) {
		if ((*pp)->ino != ino)
			continue;
		d = *pp;
		if (d->nlookup > n) {
			d->nlookup -= n;
			d = NULL;
		} else {
			*pp = d->hnext;
			fs->n_nodes--;
		}
		break;
	}
	pthread_mutex_unlock(&fs->lock);
	if (d)
		dnode_free(d);
}

/* ---- directory node ids from before a restart (fs/resume.c) ---------- */

#define REVIVE_DEPTH 2048	/* components: a path is at most PATH_MAX */

/* Entry -> parent directory entry of layer @l (UINT32_MAX: none), made
 * once. Return: borrowed, or NULL (-ENOMEM). */
static const uint32_t *layer_parents(struct fs *fs, uint32_t l)
{
	const struct strata_lindex *lx = fs->layers[l].lx;
	uint32_t n = strata_lx_count(lx), i, c;
	uint32_t *p;

	pthread_mutex_lock(&fs->revive_lock);
	if (!fs->parents) {
		fs->parents = calloc(fs->n_layers, sizeof(*fs->parents));
		fs->n_parents = fs->parents ? fs->n_layers : 0;
	}
	if (!fs->parents || fs->parents[l]) {
		p = fs->parents ? fs->parents[l] : NULL;
		pthread_mutex_unlock(&fs->revive_lock);
		return p;
	}
	p = malloc((n ? n : 1) * sizeof(*p));
	if (p) {
		memset(p, 0xff, (n ? n : 1) * sizeof(*p));
		for (i = 0; i < n; i++) {
			const struct strata_lx_entry *e = strata_lx_entry(lx, i);

			if (!S_ISDIR(e->mode) || (e->flags & STRATA_LX_WHITEOUT))
				continue;
			for (c = 0; c < e->b && e->a + c < n &&
			     e->a + c >= e->a; c++)
				p[e->a + c] = i;
		}
		fs->parents[l] = p;
	}
	pthread_mutex_unlock(&fs->revive_lock);
	return p;
}

/* A dnode for directory @name of @parent that nobody else sees, merged. */
static struct dnode *walk_step(struct fs *fs, struct dnode *parent,
			       const struct fs_child *c)
{
	const struct strata_lx_entry *e = fs_entry(fs, c->layer, c->entry);
	struct dnode *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->ino = fs_make_ino(c->layer, c->entry);
	if (fs_dir_sources(fs, parent, fs_name(fs, c->layer, e), e->name_len,
			   d) < 0 || fs_dir_merge(fs, d) < 0) {
		dnode_free(d);
		return NULL;
	}
	return d;
}

/*
 * Directory node id @ino, unknown here: if it names a directory entry
 * (layer, entry) whose path, walked from the root through the merged
 * tree as lookups do, shows that very entry, make its node (one lookup
 * reference). Anything else (a file, an entry the merge hides, a damaged
 * index) is NULL: the caller answers ESTALE, never another directory.
 */
static struct dnode *revive(struct fs *fs, fuse_ino_t ino)
{
	uint64_t l = ino >> 32;
	uint32_t layer, entry = (uint32_t)ino, chain[REVIVE_DEPTH];
	const struct strata_lx_entry *e;
	const uint32_t *par;
	struct dnode *cur, *d = NULL;
	size_t depth = 0;

	if (l == 0 || l > fs->n_layers)
		return NULL;
	layer = (uint32_t)(l - 1);
	if (entry == 0 || entry >= strata_lx_count(fs->layers[layer].lx))
		return NULL;
	e = fs_entry(fs, layer, entry);
	if (!e || !fs_entry_isdir(e))
		return NULL;
	par = layer_parents(fs, layer);
	if (!par)
		return NULL;
	for (uint32_t x = entry; x != 0; x = par[x]) {
		if (x == UINT32_MAX || depth == REVIVE_DEPTH)
			return NULL;	/* an orphan, or a loop */
		chain[depth++] = x;
	}
	cur = fs->root;
	while (depth--) {
		const struct strata_lx_entry *ce =
			fs_entry(fs, layer, chain[depth]);
		struct fs_child c;
		struct dnode *next = NULL;

		if (fs_dir_merge(fs, cur) == 0 &&
		    fs_dir_find(fs, cur, fs_name(fs, layer, ce), ce->name_len,
				&c) &&
		    fs_entry_isdir(fs_entry(fs, c.layer, c.entry))) {
			if (depth == 0 && c.layer == layer && c.entry == entry)
				d = fs_dnode_ref(fs, cur, &c);
			else if (depth)
				next = walk_step(fs, cur, &c);
		}
		if (cur != fs->root)
			dnode_free(cur);
		if (!next)
			break;
		cur = next;
	}
	return d;
}
