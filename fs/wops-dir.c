/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writable mounts: directory listings (opendir, readdir, readdirplus),
 * merged from the upper directory and the lower stack.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "whiteout.h"
#include "wfs.h"
#include "wops.h"

/* ---- directories ---- */

static int wdir_add(struct wdir *d, const char *name, ino_t ino, mode_t type)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 32;
		struct wdent *v = realloc(d->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n].name = strdup(name);
	if (!d->v[d->n].name)
		return -ENOMEM;
	d->v[d->n].ino = ino;
	d->v[d->n].type = type;
	d->n++;
	return 0;
}

void wdir_free(struct wdir *d)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	free(d);
}

static int wdent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct wdent *)a)->name,
		      ((const struct wdent *)b)->name);
}

struct list_ctx {
	struct wfs *w;
	struct wnode *d;
	struct wdir *out;
	struct wdir *upper;	/* sorted upper names (incl. whiteouts) */
	int r;
};

static int lower_child(void *ctx, const char *name, mode_t type, ino_t ino)
{
	struct list_ctx *c = ctx;
	struct wdent key = { .name = (char *)name };

	if (c->upper && c->upper->n && bsearch(&key, c->upper->v, c->upper->n,
				sizeof(key), wdent_cmp))
		return 0;	/* shadowed or whited out by the upper dir */
	c->r = wdir_add(c->out, name, ino, type);
	return c->r ? 1 : 0;
}

/* The merged listing of @d (under w->lock). */
int list_dir(struct wfs *w, struct wnode *d, struct wdir **out)
{
	struct wdir *res = calloc(1, sizeof(*res));
	struct wdir *up = calloc(1, sizeof(*up));
	struct list_ctx lc = { w, d, res, NULL, 0 };
	size_t i;
	int r = 0;

	if (!res || !up) {
		free(res);
		free(up);
		return -ENOMEM;
	}
	if (d->upper) {
		int pfd = wn_upper_dirfd(w, d);
		int dfd = pfd < 0 ? -1 : openat(pfd, ".", O_RDONLY |
						O_DIRECTORY | O_CLOEXEC);
		DIR *dir = dfd < 0 ? NULL : fdopendir(dfd);
		struct dirent *de;

		if (pfd >= 0)
			close(pfd);
		if (!dir) {
			if (dfd >= 0)
				close(dfd);
			r = pfd < 0 ? pfd : -EIO;
			goto fail;
		}
		while ((de = readdir(dir))) {
			const char *nm = de->d_name;
			struct stat st;
			mode_t type = 0;
			bool wh = false;

			if (!strcmp(nm, ".") || !strcmp(nm, ".."))
				continue;
			if (!strncmp(nm, WH_PREFIX, WH_PREFIX_LEN)) {
				if (!strcmp(nm, WH_OPQ_FILE))
					continue;
				nm += WH_PREFIX_LEN;
				wh = true;
			} else if (de->d_type == DT_CHR ||
				   de->d_type == DT_UNKNOWN) {
				if (fstatat(dfd, nm, &st,
					    AT_SYMLINK_NOFOLLOW) < 0)
					continue;
				wh = wh_is_whiteout_stat(&st);
			}
			/* upper listing: whiteouts get type 0 */
			type = wh ? 0 : DTTOIF(de->d_type);
			r = wdir_add(up, nm, de->d_ino, type);
			if (r < 0) {
				closedir(dir);
				goto fail;
			}
		}
		closedir(dir);
		if (up->n)
			qsort(up->v, up->n, sizeof(*up->v), wdent_cmp);
	}
	/* visible upper entries; their inode numbers are resolved like a
	 * lookup would, so `ls -i` and stat agree */
	for (i = 0; i < up->n; i++) {
		struct wnode *c;

		if (!up->v[i].type)
			continue;
		if (i + 1 < up->n && !strcmp(up->v[i].name, up->v[i + 1].name))
			continue;	/* entry plus `.wh.` twin: odd, skip */
		r = wn_resolve(w, d, up->v[i].name, &c);
		if (r == -EIO) {
			/* listed, and its stat fails: the kernel overlay's
			 * answer for a metacopy without its lower file */
			r = wdir_add(res, up->v[i].name, up->v[i].ino,
				     up->v[i].type);
			if (r < 0)
				goto fail;
			continue;
		}
		if (r < 0)
			continue;
		r = wdir_add(res, up->v[i].name, c->ino, c->type);
		wn_forget(w, c, 0);
		if (r < 0)
			goto fail;
	}
	if (d->lower && !d->opaque) {
		lc.upper = up;
		r = w->lw->ops->readdir(w->lw, d->lower, lower_child, &lc);
		if (r == 0)
			r = lc.r;
		if (r < 0)
			goto fail;
	}
	wdir_free(up);
	if (res->n)
		qsort(res->v, res->n, sizeof(*res->v), wdent_cmp);
	/* a cached node may carry an inode number from before a rename */
	for (i = 0; i < res->n; i++) {
		struct wnode *c = wn_find(w, d, res->v[i].name);

		if (c)
			res->v[i].ino = c->ino;
	}
	*out = res;
	return 0;
fail:
	wdir_free(up);
	wdir_free(res);
	return r;
}

void w_opendir(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct wdir *d;
	int r;

	LOCK(w);
	r = list_dir(w, wn_get(w, ino), &d);
	UNLOCK(w);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) != 0)
		wdir_free(d);
}

/* Offsets: 1 after ".", 2 after "..", i + 3 after entry i of the snapshot
 * taken at opendir, so telldir/seekdir and deleting while listing work. */
static void w_do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			 off_t off, struct fuse_file_info *fi, bool plus)
{
	struct wfs *w = W(req);
	struct wdir *d = (struct wdir *)(uintptr_t)fi->fh;
	char *buf = malloc(size), *p = buf;
	size_t rem = size;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (; off < (off_t)d->n + 2; off++) {
		struct fuse_entry_param ep;
		const char *name;
		struct wnode *c = NULL;
		size_t k;

		memset(&ep, 0, sizeof(ep));
		if (off < 2) {
			name = off ? ".." : ".";
			ep.attr.st_ino = ino;
			ep.attr.st_mode = S_IFDIR;
		} else {
			name = d->v[off - 2].name;
			ep.attr.st_ino = d->v[off - 2].ino;
			ep.attr.st_mode = d->v[off - 2].type;
			if (plus) {
				LOCK(w);
				if (wn_resolve(w, wn_get(w, ino), name, &c) < 0 ||
				    fill_entry(w, c, &ep) < 0) {
					if (c)
						wn_forget(w, c, 0);
					c = NULL;
					memset(&ep, 0, sizeof(ep));
					ep.attr.st_ino = d->v[off - 2].ino;
					ep.attr.st_mode = d->v[off - 2].type;
				}
				UNLOCK(w);
			}
		}
		if (plus)
			k = fuse_add_direntry_plus(req, p, rem, name, &ep,
						   off + 1);
		else
			k = fuse_add_direntry(req, p, rem, name, &ep.attr,
					      off + 1);
		if (k > rem) {
			if (c) {
				LOCK(w);
				wn_forget(w, c, 1);
				UNLOCK(w);
			}
			break;
		}
		p += k;
		rem -= k;
	}
	fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

void w_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	w_do_readdir(req, ino, size, off, fi, false);
}

void w_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	w_do_readdir(req, ino, size, off, fi, true);
}

void w_releasedir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	(void)ino;
	wdir_free((struct wdir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

void w_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
		       struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	int fd = -1, r = 0;

	(void)datasync;
	(void)fi;
	LOCK(w);
	if (n->upper && !w->volatile_) {
		int pfd = wn_upper_dirfd(w, n);

		if (pfd >= 0) {
			fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY |
				    O_CLOEXEC);
			close(pfd);
		}
	}
	UNLOCK(w);
	if (fd >= 0) {
		r = fsync(fd) < 0 ? errno : 0;
		close(fd);
	}
	fuse_reply_err(req, r);
}
