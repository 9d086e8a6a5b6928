/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writable mounts: removing and moving names (unlink, rmdir, link,
 * rename), with the whiteouts that hide lower entries.
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

/* ---- removal ---- */

/* Does the lower stack have anything at @name in @p? Then removing or
 * moving the upper entry there must leave a whiteout. */
static bool lower_has(struct wfs *w, struct wnode *p, const char *name)
{
	struct lnode *l = NULL;

	if (!p->lower || p->opaque)
		return false;
	if (w->lw->ops->lookup(w->lw, p->lower, name, &l) < 0)
		return false;
	w->lw->ops->put(w->lw, l);
	return true;
}

static int dir_is_empty(struct wfs *w, struct wnode *n)
{
	struct wdir *d;
	int r = list_dir(w, n, &d);

	if (r < 0)
		return r;
	r = d->n ? -ENOTEMPTY : 0;
	wdir_free(d);
	return r;
}

/*
 * Before a name of a lower file with several names goes away (unlink, or
 * rename over it): give the file an upper inode holding its other visible
 * names (a metadata-only copy-up links them), so the upper directory keeps
 * the right link count, now and after a remount. The kernel overlay does
 * the same (index=on: a copy-up before whiteout of an indexed lower).
 */
static int split_name(struct wfs *w, struct wnode *n)
{
	struct stat st;

	if (n->upper || !n->lower || S_ISDIR(n->type))
		return 0;
	w->lw->ops->stat(w->lw, n->lower, &st);
	if (st.st_nlink < 2)
		return 0;
	return wfs_copy_up(w, n, CU_META);
}

static int do_remove(struct wfs *w, struct wnode *p, const char *name,
		     bool dir)
{
	struct wnode *n;
	int pfd, r;

	if (w->upperfd < 0)
		return -EROFS;
	r = wn_resolve(w, p, name, &n);
	if (r < 0)
		return r;
	wn_ref(n);
	if (dir && !S_ISDIR(n->type))
		r = -ENOTDIR;
	else if (!dir && S_ISDIR(n->type))
		r = -EISDIR;
	else if (dir)
		r = dir_is_empty(w, n);
	if (r == 0)
		r = wfs_copy_up(w, p, CU_META);
	if (r == 0 && !dir)
		r = split_name(w, n);
	if (r < 0)
		goto out;
	pfd = wn_upper_dirfd(w, p);
	if (pfd < 0) {
		r = pfd;
		goto out;
	}
	/* still open: keep hold of the file for fstat */
	if (!dir && n->refs && n->upper && n->orphan_fd <= 0)
		n->orphan_fd = openat(pfd, name, O_PATH | O_NOFOLLOW |
				      O_CLOEXEC);
	if (dir && n->upper)
		r = wfs_clear_dir(w, pfd, name);
	if (r == 0 && lower_has(w, p, name))
		r = wfs_whiteout(w, pfd, name);
	else if (r == 0 && unlinkat(pfd, name, dir ? AT_REMOVEDIR : 0) < 0)
		r = -errno;
	close(pfd);
	if (r == 0) {
		wn_hash_del(w, n);
		n->deleted = true;
		wops_note_peers(w, n);
	}
out:
	wn_unref(w, n);
	return r;
}

void w_unlink_locked(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);
	int r;

	LOCK(w);
	r = do_remove(w, wn_get(w, parent), name, false);
	UNLOCK_NOW(w);
	fuse_reply_err(req, -r);
}

void w_rmdir_locked(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);
	int r;

	LOCK(w);
	r = do_remove(w, wn_get(w, parent), name, true);
	UNLOCK_NOW(w);
	fuse_reply_err(req, -r);
}

/* ---- link and rename ---- */

void w_link_locked(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		   const char *newname)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino), *np = wn_get(w, newparent), *c;
	struct stat st;
	int spfd = -1, npfd = -1, r;

	r = check_name(newname);
	LOCK(w);
	/* another name could give the inode xattrs behind this node */
	__atomic_store_n(&n->nocaps, false, __ATOMIC_RELAXED);
	if (r == 0 && w->upperfd < 0)
		r = -EROFS;
	if (r == 0 && wn_resolve(w, np, newname, &c) == 0) {
		wn_forget(w, c, 0);
		r = -EEXIST;
	}
	if (r == 0)
		r = wfs_copy_up(w, n, CU_DATA);
	if (r == 0)
		r = wfs_copy_up(w, np, CU_META);
	if (r == 0 && (spfd = wn_upper_dirfd(w, n->parent)) < 0)
		r = spfd;
	if (r == 0 && (npfd = wn_upper_dirfd(w, np)) < 0)
		r = npfd;
	if (r == 0 && wfs_has_whiteout(npfd, newname))
		r = wfs_clear_whiteout(w, npfd, newname);
	if (r == 0 && linkat(spfd, n->name, npfd, newname, 0) < 0)
		r = -errno;
	(void)st;
	if (spfd >= 0)
		close(spfd);
	if (npfd >= 0)
		close(npfd);
	c = NULL;
	if (r == 0)
		r = wn_resolve(w, np, newname, &c);
	if (r == 0) {
		wn_set_ino(w, c, n->ino);	/* one file, one inode number */
		wops_note_peers(w, c);
	}
	reply_entry(req, w, c, r);
}

/* After moving directory @n to (@np, @name): if a lower directory shows
 * through at the new place, hide it. */
static int hide_lower_at(struct wfs *w, struct wnode *np, const char *name,
			 int npfd, struct wnode *n)
{
	struct lnode *l = NULL;
	int r;

	if (!S_ISDIR(n->type) || n->opaque || !np->lower || np->opaque)
		return 0;
	r = w->lw->ops->lookup(w->lw, np->lower, name, &l);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	w->lw->ops->put(w->lw, l);
	r = wfs_set_opaque(w, npfd, name);
	if (r == 0)
		n->opaque = true;
	return r;
}

/* Make @n movable: entirely in the upper dir, nothing read from below. */
static int detach(struct wfs *w, struct wnode *n)
{
	if (S_ISDIR(n->type))
		return n->lower && !n->opaque ? wfs_copy_up_tree(w, n)
					       : wfs_copy_up(w, n, CU_META);
	return wfs_copy_up(w, n, CU_DATA);
}

/* The moved node no longer reads from a lower object (its inode number
 * stays). */
static void drop_lower(struct wfs *w, struct wnode *n)
{
	if (n->lower) {
		w->lw->ops->put(w->lw, n->lower);
		n->lower = NULL;
	}
}

/* May @src be renamed over @dst (NULL: nothing there) with @flags? */
static int rename_allowed(struct wfs *w, struct wnode *src, struct wnode *dst,
			  unsigned flags)
{
	if ((flags & RENAME_NOREPLACE) && dst)
		return -EEXIST;
	if ((flags & RENAME_EXCHANGE) && !dst)
		return -ENOENT;
	if (!dst || (flags & RENAME_EXCHANGE))
		return 0;
	if (S_ISDIR(src->type) && !S_ISDIR(dst->type))
		return -ENOTDIR;
	if (!S_ISDIR(src->type) && S_ISDIR(dst->type))
		return -EISDIR;
	return S_ISDIR(dst->type) ? dir_is_empty(w, dst) : 0;
}

/* RENAME_EXCHANGE of @src at (@p, @name) and @dst at (@np, @newname),
 * both detached, the upper directories open as @pfd and @npfd. */
static int rename_exchange(struct wfs *w, struct wnode *p, const char *name,
			   int pfd, struct wnode *np, const char *newname,
			   int npfd, struct wnode *src, struct wnode *dst)
{
	int r;

	if (renameat2(pfd, name, npfd, newname, RENAME_EXCHANGE) < 0)
		return -errno;
	r = hide_lower_at(w, np, newname, npfd, src);
	if (r == 0)
		r = hide_lower_at(w, p, name, pfd, dst);
	wn_hash_del(w, src);
	wn_hash_del(w, dst);
	if (r == 0)
		r = wn_move(w, src, np, newname);
	if (r == 0)
		r = wn_move(w, dst, p, name);
	if (r == 0) {
		drop_lower(w, src);
		drop_lower(w, dst);
	}
	return r;
}

/* Move @src from (@p, @name) to (@np, @newname), over @dst (or NULL),
 * leaving a whiteout where a lower entry showed through (@src_lower)
 * and making a moved directory opaque where the new name has one. */
static int rename_move(struct wfs *w, struct wnode *p, const char *name,
		       int pfd, struct wnode *np, const char *newname,
		       int npfd, struct wnode *src, struct wnode *dst,
		       bool src_lower)
{
	bool dst_lower_name = false;
	int r = 0;

	/* the target: an upper dir holding only whiteouts is emptied; a
	 * whiteout there means a lower entry is hidden at that name */
	if (dst && dst->upper && S_ISDIR(dst->type) &&
	    (r = wfs_clear_dir(w, npfd, newname)) < 0)
		return r;
	if (dst && !S_ISDIR(dst->type) && (r = split_name(w, dst)) < 0)
		return r;
	if (dst)
		dst_lower_name = lower_has(w, np, newname);
	if (!dst && wfs_has_whiteout(npfd, newname)) {
		dst_lower_name = true;
		r = wfs_clear_whiteout(w, npfd, newname);
		if (r < 0)
			return r;
	}
	if (src_lower && w->priv_wh &&
	    renameat2(pfd, name, npfd, newname, RENAME_WHITEOUT) == 0)
		src_lower = false;	/* the kernel left the whiteout */
	else if (renameat(pfd, name, npfd, newname) < 0)
		return -errno;
	if (src_lower)
		r = wfs_whiteout(w, pfd, name);
	if (r == 0 && S_ISDIR(src->type) && dst_lower_name && !src->opaque) {
		r = wfs_set_opaque(w, npfd, newname);
		if (r == 0)
			src->opaque = true;
	}
	if (r == 0)
		r = hide_lower_at(w, np, newname, npfd, src);
	if (dst) {
		wn_hash_del(w, dst);
		dst->deleted = true;
		wops_note_peers(w, dst);
	}
	wn_hash_del(w, src);
	if (r == 0)
		r = wn_move(w, src, np, newname);
	if (r == 0)
		drop_lower(w, src);
	return r;
}

static int do_rename(struct wfs *w, struct wnode *p, const char *name,
		     struct wnode *np, const char *newname, unsigned flags)
{
	struct wnode *src = NULL, *dst = NULL;
	bool src_lower;
	int pfd = -1, npfd = -1, r;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	r = check_name(newname);
	if (r < 0)
		return r;
	if (w->upperfd < 0)
		return -EROFS;
	r = wn_resolve(w, p, name, &src);
	if (r < 0)
		return r;
	wn_ref(src);
	r = wn_resolve(w, np, newname, &dst);
	if (r == 0)
		wn_ref(dst);
	else if (r == -ENOENT)
		dst = NULL, r = 0;
	if (r < 0 || dst == src)
		goto out;
	r = rename_allowed(w, src, dst, flags);
	if (r < 0)
		goto out;
	src_lower = lower_has(w, p, name);
	r = wfs_copy_up(w, np, CU_META);
	if (r == 0)
		r = wfs_copy_up(w, p, CU_META);
	if (r == 0)
		r = detach(w, src);
	if (r == 0 && dst && (flags & RENAME_EXCHANGE))
		r = detach(w, dst);
	if (r < 0)
		goto out;
	pfd = wn_upper_dirfd(w, p);
	npfd = pfd < 0 ? -1 : wn_upper_dirfd(w, np);
	if (pfd < 0 || npfd < 0)
		r = pfd < 0 ? pfd : npfd;
	else if (flags & RENAME_EXCHANGE)
		r = rename_exchange(w, p, name, pfd, np, newname, npfd, src,
				    dst);
	else
		r = rename_move(w, p, name, pfd, np, newname, npfd, src, dst,
				src_lower);
out:
	if (pfd >= 0)
		close(pfd);
	if (npfd >= 0)
		close(npfd);
	if (dst)
		wn_unref(w, dst);
	wn_unref(w, src);
	return r;
}

void w_rename_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	struct wfs *w = W(req);
	int r;

	LOCK(w);
	r = do_rename(w, wn_get(w, parent), name, wn_get(w, newparent),
		      newname, flags);
	UNLOCK_NOW(w);
	fuse_reply_err(req, -r);
}
