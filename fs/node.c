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
}

static struct dnode *find_locked(struct fs *fs, fuse_ino_t ino)
{
	struct dnode *d;

	for (d = fs->hash[bucket(fs, ino)]; d; d = d->hnext)
		if (d->ino == ino)
			return d;
	return NULL;
}

struct dnode *fs_dnode_get(struct fs *fs, fuse_ino_t ino)
{
	struct dnode *d;

	if (ino == FUSE_ROOT_ID)
		return fs->root;
	pthread_mutex_lock(&fs->lock);
	d = find_locked(fs, ino);
	pthread_mutex_unlock(&fs->lock);
	return d;
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
