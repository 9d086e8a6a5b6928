/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writable mounts: making entries (mknod, mkdir, symlink, create), owned
 * by the caller and checked by fd before they are answered.
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

/*
 * The fd of the entry just made at (@pfd, @name), checked: of type @type,
 * ours (the daemon's) and with no other name, so that what a user of the
 * upper directory renamed into its place meanwhile is never changed.
 */
static int made_fd(int pfd, const char *name, mode_t type)
{
	struct stat st;
	int fd = openat(pfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || (st.st_mode & S_IFMT) != (type & S_IFMT) ||
	    st.st_uid != geteuid() || (!S_ISDIR(type) && st.st_nlink != 1)) {
		close(fd);
		strata_warn("new upper entry %s was replaced outside the mount",
			    name);
		return -EIO;
	}
	return fd;
}

static int upper_owner(struct wfs *w, int pfd, const char *name,
		       const struct fuse_ctx *ctx, mode_t mode, bool lnk,
		       const struct stat *made)
{
	struct stat pst;
	char proc[32];
	int fd = -1, r = 0;

	if (w->root_daemon) {
		gid_t gid = ctx->gid;

		/* BSD group semantics of a setgid directory; @made, what the
		 * upper filesystem gave the new entry, already has them (the
		 * kernel applied them), so an entry owned by the caller needs
		 * neither the parent's stat nor a chown */
		bool owned = made && made->st_uid == ctx->uid;
		bool chown_ = false;

		if (!owned || made->st_gid != ctx->gid) {
			if (fstat(pfd, &pst) == 0 && (pst.st_mode & S_ISGID))
				gid = pst.st_gid;
			chown_ = !owned || made->st_gid != gid;
		}
		if (!chown_ && (lnk || !(mode & (S_ISUID | S_ISGID | S_ISVTX))))
			return 0;
		fd = made_fd(pfd, name, mode);
		if (fd < 0)
			return fd;
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		if (chown_ && fchownat(fd, "", ctx->uid, gid, AT_EMPTY_PATH) < 0)
			r = -errno;
		/* chown dropped the set-id bits: put back what was asked,
		 * over the permissions the upper filesystem chose (umask or
		 * default ACL) */
		if (r == 0 && !lnk && (mode & (S_ISUID | S_ISGID | S_ISVTX)) &&
		    (fstat(fd, &pst) < 0 ||
		     chmod(proc, (pst.st_mode & 07777) | (mode & 07000)) < 0))
			r = -errno;
		close(fd);
	}
	return r;
}

/*
 * Create @name in @p: the shared part of create, mkdir, mknod and symlink.
 * @make builds the object at (dfd, nm). An entry over a whiteout is built
 * in the work directory and swapped in, so the lower entry never shows.
 */
struct mk {
	mode_t mode;
	dev_t rdev;
	const char *link;
	int flags;	/* create: open flags */
	int fd;		/* create: the open fd */
};

static int make_obj(struct wfs *w, int dfd, const char *nm, struct mk *m)
{
	switch (m->mode & S_IFMT) {
	case S_IFDIR:
		return mkdirat(dfd, nm, m->mode & 07777) < 0 ? -errno : 0;
	case S_IFLNK:
		return symlinkat(m->link, dfd, nm) < 0 ? -errno : 0;
	case S_IFREG:
		m->fd = openat(dfd, nm, (m->flags & ~(O_TRUNC | O_APPEND)) |
			       O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			       m->mode & 07777);
		return m->fd < 0 ? -errno : 0;
	default:
		if (mknodat(dfd, nm, m->mode, m->rdev) == 0)
			return 0;
		if (errno != EPERM || !w->override)
			return -errno;
		/* unprivileged device node: a file that records what it is */
		m->fd = openat(dfd, nm, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			       0600);
		if (m->fd < 0)
			return -errno;
		close(m->fd);
		m->fd = -1;
		return wfs_set_override(w, dfd, nm, getuid(), getgid(),
					m->mode);
	}
}

#define ACL_DEFAULT "system.posix_acl_default"

/*
 * The caller's umask, as the kernel overlay applies it: the upper
 * filesystem gets the mode the caller asked for and, when the parent has
 * a default ACL, derives the new entry's permissions and ACL from it (the
 * umask is then ignored, POSIX.1e); without one the umask applies. The
 * daemon's own umask is 0 (main.c), so it never touches a new entry.
 * Return: whether upper directory @pfd has a default ACL.
 */
static bool apply_umask(int pfd, const struct fuse_ctx *ctx, struct mk *m)
{
	char path[32];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", pfd);
	if (getxattr(path, ACL_DEFAULT, NULL, 0) > 0)
		return true;
	if (!S_ISLNK(m->mode))
		m->mode &= ~(mode_t)(ctx->umask & 0777);
	return false;
}

/*
 * A fresh directory in the work directory with the default ACL of upper
 * directory @pfd, to build an entry over a whiteout in: it inherits what
 * it would in @pfd. Its name goes to @name. Return: its O_PATH fd.
 */
static int acl_scratch(struct wfs *w, int pfd, char *name, size_t size)
{
	char src[32], dst[32], *val;
	ssize_t len;
	int fd, r = 0;

	snprintf(src, sizeof(src), "/proc/self/fd/%d", pfd);
	len = getxattr(src, ACL_DEFAULT, NULL, 0);
	if (len <= 0)
		return len < 0 ? -errno : -ENODATA;
	val = malloc((size_t)len);
	if (!val)
		return -ENOMEM;
	len = getxattr(src, ACL_DEFAULT, val, (size_t)len);
	wfs_tmpname(w, name, size);
	if (len < 0 || mkdirat(w->workfd, name, 0700) < 0) {
		r = -errno;
		free(val);
		return r;
	}
	fd = openat(w->workfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		r = -errno;
	snprintf(dst, sizeof(dst), "/proc/self/fd/%d", fd);
	if (r == 0 && setxattr(dst, ACL_DEFAULT, val, (size_t)len, 0) < 0)
		r = -errno;
	free(val);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		unlinkat(w->workfd, name, AT_REMOVEDIR);
		return r;
	}
	return fd;
}

static int do_make(fuse_req_t req, struct wfs *w, fuse_ino_t parent,
		   const char *name, struct mk *m, struct wnode **out)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct wnode *p = wn_get(w, parent), *n;
	bool dir = S_ISDIR(m->mode), over_wh = false, lower_below = false;
	struct stat st;
	bool have_st = false, acl;
	char tmp[64], scratch[64];
	int pfd, sfd = -1, r;

	m->fd = -1;
	r = check_name(name);
	if (r < 0)
		return r;
	if (w->upperfd < 0)
		return -EROFS;
	r = wn_resolve_wh(w, p, name, &n, &over_wh);
	if (r == 0) {
		wn_forget(w, n, 0);
		return -EEXIST;
	}
	if (r != -ENOENT)
		return r;
	r = wfs_copy_up(w, p, CU_META);
	if (r < 0)
		return r;
	pfd = wn_upper_dirfd(w, p);
	if (pfd < 0)
		return pfd;
	acl = apply_umask(pfd, ctx, m);
	lower_below = over_wh;
	if (over_wh && w->priv_wh) {
		/* char-device whiteout: build aside (where the parent's
		 * default ACL applies as it would in the parent), exchange,
		 * drop it */
		int bfd = w->workfd;

		if (acl) {
			sfd = acl_scratch(w, pfd, scratch, sizeof(scratch));
			r = sfd < 0 ? sfd : 0;
			bfd = sfd;
		}
		wfs_tmpname(w, tmp, sizeof(tmp));
		if (r == 0)
			r = make_obj(w, bfd, tmp, m);
		if (r == 0 && dir)
			r = wfs_set_opaque(w, bfd, tmp);
		if (r == 0)
			r = upper_owner(w, bfd, tmp, ctx, m->mode,
					S_ISLNK(m->mode), NULL);
		if (r == 0 && fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    wh_is_whiteout_stat(&st)) {
			if (renameat2(bfd, tmp, pfd, name, RENAME_EXCHANGE) < 0)
				r = -errno;
			else
				unlinkat(bfd, tmp, 0);
			if (r == 0)
				r = wfs_clear_whiteout(w, pfd, name);
		} else if (r == 0) {
			if (renameat2(bfd, tmp, pfd, name,
				      RENAME_NOREPLACE) < 0)
				r = -errno;
			if (r == 0)
				r = wfs_clear_whiteout(w, pfd, name);
		}
		if (r < 0) {
			if (bfd >= 0)
				unlinkat(bfd, tmp, dir ? AT_REMOVEDIR : 0);
			if (m->fd >= 0)
				close(m->fd);
			m->fd = -1;
		}
		if (sfd >= 0) {
			close(sfd);
			unlinkat(w->workfd, scratch, AT_REMOVEDIR);
		}
	} else {
		if (over_wh)
			r = wfs_clear_whiteout(w, pfd, name);
		if (r == 0)
			r = make_obj(w, pfd, name, m);
		if (r == 0 && dir && lower_below)
			r = wfs_set_opaque(w, pfd, name);
		if (r == 0) {
			if ((m->fd >= 0 ? fstat(m->fd, &st)
				: fstatat(pfd, name, &st,
					  AT_SYMLINK_NOFOLLOW)) < 0)
				r = -errno;
			else
				have_st = true;
		}
		if (r == 0)
			r = upper_owner(w, pfd, name, ctx, m->mode,
					S_ISLNK(m->mode), &st);
	}
	/* the new entry is known: upper only, a file of its own (no lower
	 * entry shows at a free name), a directory opaque if it replaced a
	 * whiteout; no need to look it up again */
	n = NULL;
	if (r == 0) {
		if (!have_st &&
		    (m->fd >= 0 ? fstat(m->fd, &st)
				: fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW)) < 0)
			r = -errno;
		else if (!(n = wn_new(w, p, name)))
			r = -ENOMEM;
		if (n) {
			n->upper = true;
			n->opaque = dir && over_wh;
			n->type = st.st_mode & S_IFMT;
			__atomic_store_n(&n->nocaps, S_ISREG(st.st_mode),
					 __ATOMIC_RELAXED);
			wn_set_ino(w, n, st.st_ino | (1ull << 63));
			wn_hash_add(w, n);
		}
	}
	close(pfd);
	if (r < 0) {
		if (m->fd >= 0)
			close(m->fd);
		m->fd = -1;
		return r;
	}
	*out = n;
	return 0;
}

void w_mknod_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode, dev_t rdev)
{
	struct wfs *w = W(req);
	struct mk m = { .mode = mode, .rdev = rdev };
	struct wnode *n = NULL;
	int r;

	if (S_ISREG(mode) || !(mode & S_IFMT))
		m.mode = S_IFREG | (mode & 07777), m.flags = O_WRONLY;
	LOCK(w);
	r = do_make(req, w, parent, name, &m, &n);
	if (m.fd >= 0)
		close(m.fd);
	reply_entry(req, w, n, r);
}

void w_mkdir_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode)
{
	struct wfs *w = W(req);
	struct mk m = { .mode = S_IFDIR | (mode & 07777) };
	struct wnode *n = NULL;
	int r;

	LOCK(w);
	r = do_make(req, w, parent, name, &m, &n);
	reply_entry(req, w, n, r);
}

void w_symlink_locked(fuse_req_t req, const char *link, fuse_ino_t parent,
		      const char *name)
{
	struct wfs *w = W(req);
	struct mk m = { .mode = S_IFLNK | 0777, .link = link };
	struct wnode *n = NULL;
	int r;

	LOCK(w);
	r = do_make(req, w, parent, name, &m, &n);
	reply_entry(req, w, n, r);
}

void w_create_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct mk m = { .mode = S_IFREG | (mode & 07777), .flags = fi->flags };
	struct fuse_entry_param ep;
	struct whandle *h = NULL;
	struct wnode *n = NULL;
	int r;

	LOCK(w);
	r = do_make(req, w, parent, name, &m, &n);
	if (r == 0)
		r = fill_entry(w, n, &ep);
	if (r == 0) {
		h = handle_new(w, n, m.fd, false, true, fi->flags);
		if (!h) {
			wn_forget(w, n, 1);
			r = -ENOMEM;
		}
	}
	if (r < 0) {
		if (m.fd >= 0)
			close(m.fd);
		if (n)
			wn_forget(w, n, 0);
		UNLOCK(w);
		fuse_reply_err(req, -r);
		return;
	}
	UNLOCK(w);
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->keep_cache = 0;
	fi->noflush = 1;	/* a new file has no other names to tell */
	if (fuse_reply_create(req, &ep, fi) != 0) {
		close(h->fd);
		LOCK(w);
		wn_unref(w, n);
		wn_forget(w, n, 1);
		UNLOCK(w);
		free(h);
	}
}
