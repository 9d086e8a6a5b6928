/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writable mounts: extended attributes, with strata's own names
 * reserved.
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

/* ---- xattrs ---- */

static bool reserved_xattr(const char *name)
{
	return wh_private_xattr(name);
}

void w_setxattr_locked(fuse_req_t req, fuse_ino_t ino, const char *name,
		       const char *value, size_t size, int flags)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	char path[PATH_MAX];
	int pfd = -1, r;

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	LOCK(w);
	__atomic_store_n(&n->nocaps, false, __ATOMIC_RELAXED);
	r = w->upperfd < 0 ? -EROFS : wfs_copy_up(w, n, CU_META);
	if (r == 0)
		r = wn_xattr_path(w, n, path, sizeof(path), &pfd);
	if (r == 0 && lsetxattr(path, name, value, size, flags) < 0)
		r = -errno;
	if (pfd >= 0)
		close(pfd);
	UNLOCK(w);
	fuse_reply_err(req, -r);
}

void w_removexattr_locked(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	char path[PATH_MAX];
	ssize_t has;
	int pfd = -1, r = 0;

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	LOCK(w);
	if (w->upperfd < 0)
		r = -EROFS;
	/* removing what is not there must not copy anything up */
	if (r == 0 && !n->upper) {
		has = w->lw->ops->getxattr(w->lw, n->lower, name, NULL, 0);
		if (has < 0)
			r = (int)has;
	}
	if (r == 0)
		r = wfs_copy_up(w, n, CU_META);
	if (r == 0)
		r = wn_xattr_path(w, n, path, sizeof(path), &pfd);
	if (r == 0 && lremovexattr(path, name) < 0)
		r = -errno;
	if (pfd >= 0)
		close(pfd);
	UNLOCK(w);
	fuse_reply_err(req, -r);
}

void w_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		       size_t size)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	char path[PATH_MAX], *buf = NULL;
	int pfd = -1;
	ssize_t r;

	if (reserved_xattr(name) ||
	    (__atomic_load_n(&n->nocaps, __ATOMIC_RELAXED) &&
	     !strcmp(name, "security.capability"))) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (size && !(buf = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	LOCK(w);
	if (n->upper) {
		r = wn_xattr_path(w, n, path, sizeof(path), &pfd);
		if (r == 0) {
			r = lgetxattr(path, name, buf, size);
			if (r < 0)
				r = -errno;
		}
		if (pfd >= 0)
			close(pfd);
	} else {
		r = w->lw->ops->getxattr(w->lw, n->lower, name, buf, size);
	}
	UNLOCK(w);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else if (!size)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

void w_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	char path[PATH_MAX], *all = NULL, *out = NULL, *s;
	ssize_t len;
	size_t total = 0;
	int pfd = -1;

	LOCK(w);
	if (n->upper) {
		len = wn_xattr_path(w, n, path, sizeof(path), &pfd);
		if (len == 0) {
			len = llistxattr(path, NULL, 0);
			if (len > 0 && (all = malloc((size_t)len)))
				len = llistxattr(path, all, (size_t)len);
			if (len < 0)
				len = -errno;
		}
		if (pfd >= 0)
			close(pfd);
	} else {
		len = w->lw->ops->listxattr(w->lw, n->lower, NULL, 0);
		if (len > 0 && (all = malloc((size_t)len)))
			len = w->lw->ops->listxattr(w->lw, n->lower, all,
						    (size_t)len);
	}
	UNLOCK(w);
	if (len < 0) {
		free(all);
		fuse_reply_err(req, (int)-len);
		return;
	}
	out = malloc(len > 0 ? (size_t)len : 1);
	for (s = all; all && out && s < all + len; s += strlen(s) + 1) {
		if (reserved_xattr(s))
			continue;
		memcpy(out + total, s, strlen(s) + 1);
		total += strlen(s) + 1;
	}
	free(all);
	if (!size)
		fuse_reply_xattr(req, total);
	else if (size < total)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, out, total);
	free(out);
}
