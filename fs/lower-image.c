/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The lower stack of a writable image mount: the image's layers, served by
 * the read-only engine (merged directories from the layers' indexes). A
 * directory lnode holds one lookup reference on its dnode.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "lower.h"

struct lnode {
	atomic_int refs;
	uint32_t layer, entry;	/* the entry (dirs: its attribute source) */
	struct dnode *d;	/* directories only */
};

struct lower_image {
	struct lower base;
	struct fs *fs;
	struct lnode root;
};

static struct lower_image *LI(struct lower *lw)
{
	return (struct lower_image *)lw;
}

static struct lnode *li_root(struct lower *lw)
{
	return &LI(lw)->root;
}

static int li_lookup(struct lower *lw, struct lnode *dir, const char *name,
		     struct lnode **out)
{
	struct fs *fs = LI(lw)->fs;
	struct fs_child found, *c = &found;
	struct lnode *n;
	int r;

	if (!dir->d)
		return -ENOTDIR;
	r = fs_dir_merge(fs, dir->d);
	if (r < 0)
		return r;
	if (!fs_dir_find(fs, dir->d, name, strlen(name), &found))
		return -ENOENT;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	atomic_init(&n->refs, 1);
	n->layer = c->layer;
	n->entry = c->entry;
	if (S_ISDIR(fs_entry(fs, c->layer, c->entry)->mode)) {
		n->d = fs_dnode_ref(fs, dir->d, c);
		if (!n->d) {
			free(n);
			return -ENOMEM;
		}
	}
	*out = n;
	return 0;
}

static void li_stat(struct lower *lw, struct lnode *n, struct stat *st)
{
	struct fs *fs = LI(lw)->fs;

	if (n->d) {
		const struct strata_lx_entry *e =
			fs_entry(fs, n->d->attr.layer, n->d->attr.entry);

		fs_fill_stat(fs, n->d->ino, n->d->attr.layer, e, n->d->n_src,
			     st);
	} else {
		const struct strata_lx_entry *e =
			fs_entry(fs, n->layer, n->entry);

		fs_fill_stat(fs, fs_make_ino(n->layer, e->b), n->layer, e, 1,
			     st);
	}
}

static int li_readdir(struct lower *lw, struct lnode *dir,
		      int (*fn)(void *, const char *, mode_t, ino_t),
		      void *ctx)
{
	struct fs *fs = LI(lw)->fs;
	char name[256];
	uint32_t i;
	int r;

	if (!dir->d)
		return -ENOTDIR;
	r = fs_dir_merge(fs, dir->d);
	if (r < 0)
		return r;
	for (i = 0; i < dir->d->n_children; i++) {
		const struct fs_child child = fs_dir_child(dir->d, i);
		const struct fs_child *c = &child;
		const struct strata_lx_entry *e =
			fs_entry(fs, c->layer, c->entry);
		mode_t type = e->mode & S_IFMT;

		if (e->flags & STRATA_LX_IMPLIED)
			type = S_IFDIR;
		memcpy(name, fs_name(fs, c->layer, e), e->name_len);
		name[e->name_len] = '\0';
		r = fn(ctx, name, type, S_ISDIR(type)
			   ? fs_make_ino(c->layer, c->entry)
			   : fs_make_ino(c->layer, e->b));
		if (r)
			return r;
	}
	return 0;
}

static int li_open(struct lower *lw, struct lnode *n)
{
	struct fs *fs = LI(lw)->fs;
	const struct strata_lx_entry *e = fs_entry(fs, n->layer, n->entry);
	int fd;

	if (!S_ISREG(e->mode))
		return -EINVAL;
	if (!e->a)
		return -ENODATA;
	fd = strata_lx_content_open(fs->layers[n->layer].lx, e->a);
	return fd < 0 ? -EIO : fd;
}

static ssize_t li_readlink(struct lower *lw, struct lnode *n, char *buf,
			   size_t size)
{
	struct fs *fs = LI(lw)->fs;
	const struct strata_lx_entry *e = fs_entry(fs, n->layer, n->entry);
	size_t len;

	if (!S_ISLNK(e->mode))
		return -EINVAL;
	len = e->size;
	if (len >= size)
		len = size - 1;
	memcpy(buf, strata_lx_str(fs->layers[n->layer].lx, e->a), len);
	buf[len] = '\0';
	return (ssize_t)len;
}

static const uint8_t *li_xattrs(struct fs *fs, struct lnode *n, size_t *len)
{
	uint32_t layer = n->d ? n->d->attr.layer : n->layer;
	uint32_t entry = n->d ? n->d->attr.entry : n->entry;
	const uint8_t *p = strata_lx_xattrs(fs->layers[layer].lx, entry, len);

	if (!p)
		*len = 0;
	return p;
}

static ssize_t li_listxattr(struct lower *lw, struct lnode *n, char *buf,
			    size_t size)
{
	struct fs *fs = LI(lw)->fs;
	size_t xlen, total = 0;
	const uint8_t *p = li_xattrs(fs, n, &xlen), *end = p + xlen;
	const char *name;
	const void *val;
	size_t nlen, vlen;

	while (p && (p = fs_xattr_next(p, end, &name, &nlen, &val, &vlen))) {
		if (size) {
			if (total + nlen + 1 > size)
				return -ERANGE;
			memcpy(buf + total, name, nlen);
			buf[total + nlen] = '\0';
		}
		total += nlen + 1;
	}
	return (ssize_t)total;
}

static ssize_t li_getxattr(struct lower *lw, struct lnode *n,
			   const char *want, void *buf, size_t size)
{
	struct fs *fs = LI(lw)->fs;
	size_t xlen, wlen = strlen(want);
	const uint8_t *p = li_xattrs(fs, n, &xlen), *end = p + xlen;
	const char *name;
	const void *val;
	size_t nlen, vlen;

	while (p && (p = fs_xattr_next(p, end, &name, &nlen, &val, &vlen))) {
		if (nlen != wlen || memcmp(name, want, nlen))
			continue;
		if (size && vlen > size)
			return -ERANGE;
		if (size)
			memcpy(buf, val, vlen);
		return (ssize_t)vlen;
	}
	return -ENODATA;
}

struct links_walk {
	const struct strata_lindex *lx;
	uint32_t leader, self;
	char path[4096];
	int (*fn)(void *, const char *);
	void *ctx;
};

static int links_dir(struct links_walk *lw, uint32_t dir, size_t len)
{
	const struct strata_lx_entry *d = strata_lx_entry(lw->lx, dir);
	uint32_t i;
	int r;

	for (i = d->a; i < d->a + d->b; i++) {
		const struct strata_lx_entry *e = strata_lx_entry(lw->lx, i);
		size_t l = len + (len ? 1 : 0) + e->name_len;

		if (!e || l >= sizeof(lw->path))
			continue;
		if (len)
			lw->path[len] = '/';
		memcpy(lw->path + len + (len ? 1 : 0),
		       strata_lx_str(lw->lx, e->name_off), e->name_len);
		lw->path[l] = '\0';
		if (S_ISDIR(e->mode) || (e->flags & STRATA_LX_IMPLIED)) {
			r = links_dir(lw, i, l);
			if (r)
				return r;
		} else if (e->b == lw->leader && i != lw->self &&
			   !(e->flags & STRATA_LX_WHITEOUT)) {
			r = lw->fn(lw->ctx, lw->path);
			if (r)
				return r;
		}
		lw->path[len] = '\0';
	}
	return 0;
}

static int li_links(struct lower *lw, struct lnode *n,
		    int (*fn)(void *, const char *), void *ctx)
{
	struct fs *fs = LI(lw)->fs;
	const struct strata_lx_entry *e = fs_entry(fs, n->layer, n->entry);
	struct links_walk *w;
	int r;

	if (n->d || S_ISDIR(e->mode) ||
	    strata_lx_nlink(fs->layers[n->layer].lx, e) < 2)
		return 0;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->lx = fs->layers[n->layer].lx;
	w->leader = e->b;
	w->self = n->entry;
	w->fn = fn;
	w->ctx = ctx;
	r = links_dir(w, 0, 0);
	free(w);
	return r < 0 ? r : 0;
}

static void li_get(struct lnode *n)
{
	atomic_fetch_add(&n->refs, 1);
}

static void li_put(struct lower *lw, struct lnode *n)
{
	if (!n || n == &LI(lw)->root)
		return;
	if (atomic_fetch_sub(&n->refs, 1) != 1)
		return;
	if (n->d)
		fs_dnode_forget(LI(lw)->fs, n->d->ino, 1);
	free(n);
}

static int li_statfs_fd(struct lower *lw)
{
	return LI(lw)->fs->statfs_fd;
}

static void li_free(struct lower *lw)
{
	free(lw);
}

static const struct lower_ops li_ops = {
	.root = li_root,
	.lookup = li_lookup,
	.stat = li_stat,
	.readdir = li_readdir,
	.open = li_open,
	.readlink = li_readlink,
	.listxattr = li_listxattr,
	.getxattr = li_getxattr,
	.links = li_links,
	.get = li_get,
	.put = li_put,
	.statfs_fd = li_statfs_fd,
	.free = li_free,
};

int lower_image_new(struct fs *fs, struct lower **out)
{
	struct lower_image *li = calloc(1, sizeof(*li));

	if (!li)
		return -ENOMEM;
	li->base.ops = &li_ops;
	li->fs = fs;
	atomic_init(&li->root.refs, 1);
	li->root.d = fs->root;
	li->root.layer = fs->root->attr.layer;
	li->root.entry = fs->root->attr.entry;
	*out = &li->base;
	return 0;
}
