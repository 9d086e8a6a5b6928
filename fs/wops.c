/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE operations of writable (and lowerdir=) mounts. Each handler takes
 * w->lock for anything that reads or changes the namespace, replies once,
 * and maps failures to the errno a program expects.
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

struct whandle {
	struct wnode *n;
	int fd;			/* -1: empty lower file */
	int flags;		/* open flags */
	uint64_t gen;		/* w->gen when fd was opened */
	bool lower;		/* fd reads the lower file */
	bool writable;
	bool wrote;		/* written since the last flush */
	pthread_mutex_t lock;	/* swapping fd after a copy-up */
};

static struct wfs *W(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Every change holds the freeze lock's read side, so a commit can hold
 * the mount still while it reads the upper directory. */
#define CHANGE(w) change(w)
#define CHANGED(w) changed(w)
/*
 * Other names of files changed under the lock, whose cached attributes and
 * pages the kernel must drop: collected by note_peers() while w->lock is
 * held, sent by UNLOCK() once it is dropped (a notification can wait on
 * the kernel's locks of those inodes, so never under w->lock).
 */
#define MAX_PEERS 64
static __thread struct {
	fuse_ino_t ids[MAX_PEERS];
	size_t n;
} pending;

static void note_peers(struct wfs *w, struct wnode *n)
{
	if (n && !S_ISDIR(n->type))
		pending.n += wn_peers(w, n, pending.ids + pending.n,
				      MAX_PEERS - pending.n);
}

static __thread int changing;	/* inside CHANGE() .. CHANGED() */

static void send_pending(struct wfs *w)
{
	size_t k = pending.n;

	if (k) {
		pending.n = 0;
		wfs_inval(w, pending.ids, k);
	}
}

/* Notifications wait until the freeze lock is dropped too: a WRITE to
 * the other name may hold that inode's page lock while it waits for the
 * freeze lock behind a commit that waits for us. */
static void unlock_and_notify(struct wfs *w)
{
	pthread_mutex_unlock(&w->lock);
	if (!changing)
		send_pending(w);
}

static void change(struct wfs *w)
{
	pthread_rwlock_rdlock(&w->freeze);
	changing++;
}

static __thread bool thawed;	/* freeze lock dropped by unlock_now() */

static void changed(struct wfs *w)
{
	if (thawed) {
		thawed = false;
	} else {
		pthread_rwlock_unlock(&w->freeze);
		changing--;
	}
	send_pending(w);
}

/*
 * For a change that is complete (nothing more to do in the upper
 * directory, only the reply): drop w->lock and the freeze lock and send
 * the notifications now, before the reply, so that the caller sees the
 * other names changed as soon as its call returns (a stat through another
 * name right after link, unlink or chmod).
 */
static void unlock_now(struct wfs *w)
{
	pthread_mutex_unlock(&w->lock);
	if (changing) {
		pthread_rwlock_unlock(&w->freeze);
		changing--;
		thawed = true;
	}
	send_pending(w);
}

#define LOCK(w) pthread_mutex_lock(&(w)->lock)
#define UNLOCK(w) unlock_and_notify(w)
#define UNLOCK_NOW(w) unlock_now(w)

static int check_name(const char *name)
{
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	/* an OCI layer cannot carry such a name: commit could not write it */
	if (!strncmp(name, WH_PREFIX, WH_PREFIX_LEN))
		return -EINVAL;
	return 0;
}

static int fill_entry(struct wfs *w, struct wnode *n,
		      struct fuse_entry_param *ep)
{
	int r;

	memset(ep, 0, sizeof(*ep));
	r = wn_stat(w, n, &ep->attr);
	if (r < 0)
		return r;
	ep->ino = wn_id(w, n);
	ep->attr_timeout = w->timeout;
	ep->entry_timeout = w->timeout;
	n->nlookup++;
	return 0;
}

static void reply_entry(fuse_req_t req, struct wfs *w, struct wnode *n,
			int r)
{
	struct fuse_entry_param ep;

	if (r == 0)
		r = fill_entry(w, n, &ep);
	if (r < 0) {
		if (n)
			wn_forget(w, n, 0);
		UNLOCK_NOW(w);
		fuse_reply_err(req, -r);
		return;
	}
	UNLOCK_NOW(w);
	if (fuse_reply_entry(req, &ep) != 0) {
		LOCK(w);
		wn_forget(w, n, 1);
		UNLOCK(w);
	}
}

static void w_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);
	struct wnode *n = NULL;
	int r;

	if (strlen(name) > NAME_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	LOCK(w);
	r = wn_resolve(w, wn_get(w, parent), name, &n);
	if (r == -ENOENT) {
		struct fuse_entry_param ep = { .entry_timeout = w->timeout };

		UNLOCK(w);
		fuse_reply_entry(req, &ep);
		return;
	}
	reply_entry(req, w, r == 0 ? n : NULL, r);
}

static void w_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct wfs *w = W(req);

	LOCK(w);
	wn_forget(w, wn_get(w, ino), nlookup);
	UNLOCK(w);
	fuse_reply_none(req);
}

static void w_forget_multi(fuse_req_t req, size_t count,
			   struct fuse_forget_data *f)
{
	struct wfs *w = W(req);
	size_t i;

	LOCK(w);
	for (i = 0; i < count; i++)
		wn_forget(w, wn_get(w, f[i].ino), f[i].nlookup);
	UNLOCK(w);
	fuse_reply_none(req);
}

static void w_getattr(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	struct stat st;
	int r;

	LOCK(w);
	(void)fi;
	if (n->deleted && n->orphan_fd > 0) {
		/* fstat of an unlinked open file */
		r = fstat(n->orphan_fd, &st) == 0 ? 0 : -ESTALE;
		if (r == 0) {
			st.st_ino = n->ino;
			st.st_nlink = 0;
		}
	} else if (n->deleted && !n->upper && n->lower) {
		w->lw->ops->stat(w->lw, n->lower, &st);
		st.st_ino = n->ino;
		st.st_nlink = 0;
		r = 0;
	} else {
		r = wn_stat(w, n, &st);
	}
	UNLOCK(w);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, w->timeout);
}

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

static void w_mknod_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
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

static void w_mkdir_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
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

static void w_symlink_locked(fuse_req_t req, const char *link, fuse_ino_t parent,
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

static struct whandle *handle_new(struct wfs *w, struct wnode *n, int fd,
				  bool lower, bool writable, int flags)
{
	struct whandle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->gen = w->gen;
	h->flags = flags;
	h->n = n;
	h->fd = fd;
	h->lower = lower;
	h->writable = writable;
	pthread_mutex_init(&h->lock, NULL);
	wn_ref(n);
	return h;
}

static void w_create_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
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

static int open_upper(struct wfs *w, struct wnode *n, int flags)
{
	int pfd, fd;

	if (n == w->root)
		return -EISDIR;
	pfd = wn_upper_dirfd(w, n->parent);
	if (pfd < 0)
		return pfd;
	fd = wfs_open_reg(pfd, n->name, flags);
	close(pfd);
	return fd;
}

static void w_open_locked(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	int acc = fi->flags & O_ACCMODE, fd, r = 0;
	bool wr = acc != O_RDONLY || (fi->flags & O_TRUNC), lower = false;
	struct whandle *h;

	LOCK(w);
	if (wr) {
		if (w->upperfd < 0)
			r = -EROFS;
		else
			r = wfs_copy_up(w, n, (fi->flags & O_TRUNC)
					? CU_NODATA : CU_DATA);
	}
	if (r < 0) {
		UNLOCK(w);
		fuse_reply_err(req, -r);
		return;
	}
	if (n->upper && !n->metacopy) {
		fd = open_upper(w, n, fi->flags);
	} else {
		fd = w->lw->ops->open(w->lw, n->lower);
		lower = true;
		if (fd == -ENODATA)
			fd = -1;
		else if (fd < 0)
			r = fd;
	}
	if (!lower && fd < 0)
		r = fd;
	if (r < 0) {
		UNLOCK(w);
		fuse_reply_err(req, -r);
		return;
	}
	h = handle_new(w, n, fd, lower, wr, fi->flags);
	/* close(2) needs a FLUSH only to tell other names of the file
	 * about written data (release does it too, later) */
	{
		fuse_ino_t any;

		fi->noflush = !wr || wn_peers(w, n, &any, 1) == 0;
	}
	UNLOCK(w);
	if (!h) {
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->keep_cache = lower;
	if (fuse_reply_open(req, fi) != 0) {
		if (fd >= 0)
			close(fd);
		LOCK(w);
		wn_unref(w, n);
		UNLOCK(w);
		free(h);
	}
}

static struct whandle *H(struct fuse_file_info *fi)
{
	return (struct whandle *)(uintptr_t)fi->fh;
}

/* After a live commit went on (wfs_continue), a writable handle's file
 * is in the image: copy it up again and write there. */
static int write_fd(struct wfs *w, struct whandle *h)
{
	int fd, r = 0;

	pthread_mutex_lock(&h->lock);
	if (h->gen != w->gen && h->writable && !h->n->deleted) {
		LOCK(w);
		r = wfs_copy_up(w, h->n, CU_DATA);
		fd = r < 0 ? r : open_upper(w, h->n, (h->flags & ~O_TRUNC));
		UNLOCK(w);
		if (fd >= 0) {
			if (h->fd >= 0)
				close(h->fd);
			h->fd = fd;
			h->lower = false;
			h->gen = w->gen;
		} else {
			r = fd;
		}
	}
	fd = r < 0 ? r : h->fd;
	pthread_mutex_unlock(&h->lock);
	return fd;
}

/* A handle opened on the lower file follows the file once it is copied
 * up, so readers see what writers wrote. */
static int read_fd(struct wfs *w, struct whandle *h)
{
	int fd;

	pthread_mutex_lock(&h->lock);
	if (h->gen != w->gen && !h->writable && !h->n->deleted) {
		/* a live commit went on: the file now comes from below */
		LOCK(w);
		fd = h->n->upper && !h->n->metacopy
			? open_upper(w, h->n, O_RDONLY)
			: w->lw->ops->open(w->lw, h->n->lower);
		UNLOCK(w);
		if (fd >= 0 || fd == -ENODATA) {
			if (h->fd >= 0)
				close(h->fd);
			h->fd = fd >= 0 ? fd : -1;
			h->lower = !h->n->upper;
			h->gen = w->gen;
		}
	}
	if (h->lower && h->n->upper && !h->n->metacopy && !h->n->deleted) {
		LOCK(w);
		fd = open_upper(w, h->n, O_RDONLY);
		UNLOCK(w);
		if (fd >= 0) {
			if (h->fd >= 0)
				close(h->fd);
			h->fd = fd;
			h->lower = false;
		}
	}
	fd = h->fd;
	pthread_mutex_unlock(&h->lock);
	return fd;
}

static void w_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	int fd = read_fd(W(req), H(fi));

	(void)ino;
	if (fd < 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	fs_reply_read(req, fd, size, off);
}

static void w_write_buf_locked(fuse_req_t req, fuse_ino_t ino,
			struct fuse_bufvec *in, off_t off,
			struct fuse_file_info *fi)
{
	struct whandle *h = H(fi);
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	int fd = h->writable ? write_fd(W(req), h) : -EBADF;
	ssize_t r;

	(void)ino;
	if (fd < 0) {
		fuse_reply_err(req, fd == -1 ? EBADF : -fd);
		return;
	}
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = fd;
	out.buf[0].pos = off;
	r = fuse_buf_copy(&out, in, 0);
	if (r < 0) {
		fuse_reply_err(req, (int)-r);
	} else {
		__atomic_store_n(&h->wrote, true, __ATOMIC_RELAXED);
		fuse_reply_write(req, (size_t)r);
	}
}

/* Data written through one name: the other names' cached size, times and
 * pages are stale (close-to-open). */
static void notify_written(struct wfs *w, struct whandle *h)
{
	if (!__atomic_exchange_n(&h->wrote, false, __ATOMIC_RELAXED))
		return;
	LOCK(w);
	note_peers(w, h->n);
	UNLOCK(w);
}

bool wfs_flush_quick(uint64_t fh)
{
	struct whandle *h = (struct whandle *)(uintptr_t)fh;

	return !__atomic_load_n(&h->wrote, __ATOMIC_RELAXED);
}

static void w_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	notify_written(W(req), H(fi));
	fuse_reply_err(req, 0);
}

static void w_release(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct whandle *h = H(fi);

	(void)ino;
	if (h->fd >= 0)
		close(h->fd);
	LOCK(w);
	if (h->wrote)
		note_peers(w, h->n);
	wn_unref(w, h->n);
	UNLOCK(w);
	pthread_mutex_destroy(&h->lock);
	free(h);
	fuse_reply_err(req, 0);
}

static void w_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct whandle *h = H(fi);
	int r = 0;

	(void)ino;
	if (!w->volatile_ && h->fd >= 0 && h->writable)
		r = (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? errno : 0;
	notify_written(w, h);
	fuse_reply_err(req, r);
}

static void w_fallocate_locked(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			off_t len, struct fuse_file_info *fi)
{
	struct whandle *h = H(fi);
	int fd = h->writable ? write_fd(W(req), h) : -EBADF;

	(void)ino;
	if (fd < 0) {
		fuse_reply_err(req, EBADF);
		return;
	}
	fuse_reply_err(req, fallocate(fd, mode, off, len) < 0 ? errno : 0);
}

static void w_copy_file_range_locked(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			      struct fuse_file_info *fi_in, fuse_ino_t ino_out,
			      off_t off_out, struct fuse_file_info *fi_out,
			      size_t len, int flags)
{
	struct wfs *w = W(req);
	int in = read_fd(w, H(fi_in));
	struct whandle *out = H(fi_out);
	int ofd = out->writable ? write_fd(w, out) : -EBADF;
	ssize_t r;

	(void)ino_in;
	(void)ino_out;
	if (ofd < 0) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (in < 0) {
		fuse_reply_write(req, 0);
		return;
	}
	r = copy_file_range(in, &off_in, ofd, &off_out, len,
			    (unsigned)flags);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)r);
}

static void w_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		    struct fuse_file_info *fi)
{
	int fd = read_fd(W(req), H(fi));
	off_t r;

	(void)ino;
	if (fd < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	r = lseek(fd, off, whence);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

static void w_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	char buf[PATH_MAX + 1];
	ssize_t r;

	LOCK(w);
	if (n->upper) {
		int pfd = wn_upper_dirfd(w, n->parent);

		r = pfd < 0 ? pfd : readlinkat(pfd, n->name, buf, PATH_MAX);
		if (r < 0 && pfd >= 0)
			r = -errno;
		if (pfd >= 0)
			close(pfd);
		if (r >= 0)
			buf[r] = '\0';
	} else {
		r = w->lw->ops->readlink(w->lw, n->lower, buf, sizeof(buf));
	}
	UNLOCK(w);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_readlink(req, buf);
}

/* ---- setattr ---- */

/* "/proc/self/fd/N": the object behind fd N itself, for the calls that
 * take no O_PATH fd (chmod, setxattr); never a name looked up again. */
static void fd_path(char *buf, size_t size, int fd)
{
	snprintf(buf, size, "/proc/self/fd/%d", fd);
}

/*
 * Owner, mode and times of @n's upper entry, as asked by @ctx. They are
 * set through an O_PATH fd of the entry, checked to be of the node's
 * type, so a symlink or another file renamed into its place meanwhile
 * (the upper directory may be writable by its users) is never what
 * changes. A caller other than root must own what it changes, as the
 * kernel checked against what the mount showed: a file swapped in by a
 * hardlink is not the caller's to chmod.
 */
static int set_attrs(struct wfs *w, struct wnode *n,
		     const struct fuse_ctx *ctx, const struct stat *a, int set)
{
	bool ids = set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID);
	bool times = set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
			    FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW);
	bool set_times = set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME);
	struct stat st;
	char proc[32];
	int fd, r = 0;

	fd = wn_upper_fd(w, n, &st);
	if (fd < 0)
		return fd;
	fd_path(proc, sizeof(proc), fd);
	if (w->override && (ids || (set & FUSE_SET_ATTR_MODE))) {
		struct stat shown;
		mode_t m;

		r = wn_stat(w, n, &shown);
		m = set & FUSE_SET_ATTR_MODE
			? (shown.st_mode & S_IFMT) | (a->st_mode & 07777)
			: shown.st_mode;
		if (r == 0 && !S_ISLNK(st.st_mode))
			r = wfs_set_override_fd(w, fd,
				set & FUSE_SET_ATTR_UID ? a->st_uid
							: shown.st_uid,
				set & FUSE_SET_ATTR_GID ? a->st_gid
							: shown.st_gid, m);
	} else {
		if (ctx->uid != 0 && st.st_uid != ctx->uid &&
		    (ids || (set & FUSE_SET_ATTR_MODE) || set_times))
			r = -EPERM;
		if (r == 0 && ids &&
		    fchownat(fd, "",
			     set & FUSE_SET_ATTR_UID ? a->st_uid : (uid_t)-1,
			     set & FUSE_SET_ATTR_GID ? a->st_gid : (gid_t)-1,
			     AT_EMPTY_PATH) < 0)
			r = -errno;
		if (r == 0 && (set & FUSE_SET_ATTR_MODE) &&
		    !S_ISLNK(st.st_mode) && chmod(proc, a->st_mode & 07777) < 0)
			r = -errno;
	}
	if (r == 0 && times) {
		struct timespec ts[2];

		ts[0].tv_nsec = UTIME_OMIT;
		ts[1].tv_nsec = UTIME_OMIT;
		if (set & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (set & FUSE_SET_ATTR_ATIME)
			ts[0] = a->st_atim;
		if (set & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (set & FUSE_SET_ATTR_MTIME)
			ts[1] = a->st_mtim;
		if (utimensat(fd, "", ts, AT_EMPTY_PATH) < 0)
			r = -errno;
	}
	close(fd);
	return r;
}

static void w_setattr_locked(fuse_req_t req, fuse_ino_t ino, struct stat *a,
		      int set, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct wnode *n = wn_get(w, ino);
	struct stat st;
	int r;

	LOCK(w);
	if (w->upperfd < 0) {
		r = -EROFS;
		goto out;
	}
	if (set & FUSE_SET_ATTR_SIZE) {
		struct whandle *h = fi ? H(fi) : NULL;

		if (h && h->writable && h->fd >= 0 && !h->lower &&
		    h->gen == w->gen) {
			r = ftruncate(h->fd, a->st_size) < 0 ? -errno : 0;
		} else {
			r = wfs_copy_up(w, n, a->st_size ? CU_DATA : CU_NODATA);
			if (r == 0) {
				int fd = open_upper(w, n, O_WRONLY);

				r = fd;
				if (fd >= 0) {
					r = ftruncate(fd, a->st_size) < 0
						? -errno : 0;
					close(fd);
				}
			}
		}
		if (r < 0)
			goto out;
	}
	if (!(set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		     FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME |
		     FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
		     FUSE_SET_ATTR_MTIME_NOW))) {
		r = 0;
		goto out;
	}
	r = wfs_copy_up(w, n, CU_META);
	if (r < 0)
		goto out;
	r = set_attrs(w, n, fuse_req_ctx(req), a, set);
out:
	if (r == 0)
		r = wn_stat(w, n, &st);
	if (r == 0)
		note_peers(w, n);
	UNLOCK_NOW(w);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, w->timeout);
}

/* ---- directories ---- */

struct wdent {
	char *name;
	ino_t ino;
	mode_t type;
};

struct wdir {
	size_t n, cap;
	struct wdent *v;
};

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

static void wdir_free(struct wdir *d)
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
static int list_dir(struct wfs *w, struct wnode *d, struct wdir **out)
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

static void w_opendir(fuse_req_t req, fuse_ino_t ino,
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

static void w_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	w_do_readdir(req, ino, size, off, fi, false);
}

static void w_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	w_do_readdir(req, ino, size, off, fi, true);
}

static void w_releasedir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	(void)ino;
	wdir_free((struct wdir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void w_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
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
		note_peers(w, n);
	}
out:
	wn_unref(w, n);
	return r;
}

static void w_unlink_locked(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);
	int r;

	LOCK(w);
	r = do_remove(w, wn_get(w, parent), name, false);
	UNLOCK_NOW(w);
	fuse_reply_err(req, -r);
}

static void w_rmdir_locked(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);
	int r;

	LOCK(w);
	r = do_remove(w, wn_get(w, parent), name, true);
	UNLOCK_NOW(w);
	fuse_reply_err(req, -r);
}

/* ---- link and rename ---- */

static void w_link_locked(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
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
		note_peers(w, c);
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

static int do_rename(struct wfs *w, struct wnode *p, const char *name,
		     struct wnode *np, const char *newname, unsigned flags)
{
	struct wnode *src = NULL, *dst = NULL;
	bool src_lower, dst_lower_name = false, wh_at_dst;
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
	if (r < 0)
		goto out;
	if (dst == src)
		goto out;
	if ((flags & RENAME_NOREPLACE) && dst) {
		r = -EEXIST;
		goto out;
	}
	if ((flags & RENAME_EXCHANGE) && !dst) {
		r = -ENOENT;
		goto out;
	}
	if (dst && !(flags & RENAME_EXCHANGE)) {
		if (S_ISDIR(src->type) && !S_ISDIR(dst->type))
			r = -ENOTDIR;
		else if (!S_ISDIR(src->type) && S_ISDIR(dst->type))
			r = -EISDIR;
		else if (S_ISDIR(dst->type))
			r = dir_is_empty(w, dst);
		if (r < 0)
			goto out;
	}
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
	if (pfd < 0 || npfd < 0) {
		r = pfd < 0 ? pfd : npfd;
		goto out;
	}
	if (flags & RENAME_EXCHANGE) {
		if (renameat2(pfd, name, npfd, newname, RENAME_EXCHANGE) < 0) {
			r = -errno;
			goto out;
		}
		r = hide_lower_at(w, np, newname, npfd, src);
		if (r == 0)
			r = hide_lower_at(w, p, name, pfd, dst);
		wn_hash_del(w, src);
		wn_hash_del(w, dst);
		if (r == 0)
			r = wn_move(w, src, np, newname);
		if (r == 0)
			r = wn_move(w, dst, p, name);
		if (r == 0 && src->lower) {
			w->lw->ops->put(w->lw, src->lower);
			src->lower = NULL;
		}
		if (r == 0 && dst->lower) {
			w->lw->ops->put(w->lw, dst->lower);
			dst->lower = NULL;
		}
		goto out;
	}
	/* the target: an upper dir holding only whiteouts is emptied; a
	 * whiteout there means a lower entry is hidden at that name */
	if (dst && dst->upper && S_ISDIR(dst->type)) {
		r = wfs_clear_dir(w, npfd, newname);
		if (r < 0)
			goto out;
	}
	if (dst && !S_ISDIR(dst->type)) {
		r = split_name(w, dst);
		if (r < 0)
			goto out;
	}
	if (dst)
		dst_lower_name = lower_has(w, np, newname);
	wh_at_dst = !dst && wfs_has_whiteout(npfd, newname);
	if (wh_at_dst) {
		dst_lower_name = true;
		r = wfs_clear_whiteout(w, npfd, newname);
		if (r < 0)
			goto out;
	}
	if (dst && !dst->upper) {
		/* lower only: nothing to replace in the upper dir */
	}
	if (src_lower && w->priv_wh &&
	    renameat2(pfd, name, npfd, newname, RENAME_WHITEOUT) == 0) {
		src_lower = false;	/* the kernel left the whiteout */
	} else if (renameat(pfd, name, npfd, newname) < 0) {
		r = -errno;
		goto out;
	}
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
		note_peers(w, dst);
	}
	wn_hash_del(w, src);
	if (r == 0)
		r = wn_move(w, src, np, newname);
	/* the moved entry no longer reads from a lower object (its inode
	 * number stays) */
	if (r == 0 && src->lower) {
		w->lw->ops->put(w->lw, src->lower);
		src->lower = NULL;
	}
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

static void w_rename_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
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

/* ---- xattrs ---- */

static bool reserved_xattr(const char *name)
{
	return wh_private_xattr(name);
}

static void w_setxattr_locked(fuse_req_t req, fuse_ino_t ino, const char *name,
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

static void w_removexattr_locked(fuse_req_t req, fuse_ino_t ino, const char *name)
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

static void w_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
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

static void w_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
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

static void w_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct wfs *w = W(req);
	struct statvfs sv;
	int fd = w->upperfd >= 0 ? w->upperfd : w->lw->ops->statfs_fd(w->lw);

	(void)ino;
	if (fstatvfs(fd, &sv) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	sv.f_namemax = NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

static void w_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_SPLICE_MOVE)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want |= FUSE_CAP_SPLICE_READ;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	/* Every READDIR a READDIRPLUS, not only the first of a directory:
	 * a walk (containers-storage's diff on every commit, find, tar)
	 * lstats every name, and with "auto" every name past the first
	 * 4-32 KiB of a listing cost a LOOKUP of its own. */
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	/* the umask comes with each request and is applied in do_make(),
	 * unless a default ACL decides instead (as on the kernel overlay) */
	if (conn->capable & FUSE_CAP_DONT_MASK)
		conn->want |= FUSE_CAP_DONT_MASK;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->want &= ~(unsigned)FUSE_CAP_HANDLE_KILLPRIV;
}

/* The changing operations, each under the freeze lock. */
static void w_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_mknod_locked(req, parent, name, mode, rdev);
	CHANGED(w);
}

static void w_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_mkdir_locked(req, parent, name, mode);
	CHANGED(w);
}

static void w_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_symlink_locked(req, link, parent, name);
	CHANGED(w);
}

static void w_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_create_locked(req, parent, name, mode, fi);
	CHANGED(w);
}

static void w_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_write_buf_locked(req, ino, in, off, fi);
	CHANGED(w);
}

static void w_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_fallocate_locked(req, ino, mode, off, len, fi);
	CHANGED(w);
}

static void w_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_copy_file_range_locked(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags);
	CHANGED(w);
}

static void w_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *a, int set, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_setattr_locked(req, ino, a, set, fi);
	CHANGED(w);
}

static void w_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_unlink_locked(req, parent, name);
	CHANGED(w);
}

static void w_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_rmdir_locked(req, parent, name);
	CHANGED(w);
}

static void w_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_link_locked(req, ino, newparent, newname);
	CHANGED(w);
}

static void w_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_rename_locked(req, parent, name, newparent, newname, flags);
	CHANGED(w);
}

static void w_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_setxattr_locked(req, ino, name, value, size, flags);
	CHANGED(w);
}

static void w_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_removexattr_locked(req, ino, name);
	CHANGED(w);
}

static void w_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct wfs *w = W(req);

	CHANGE(w);
	w_open_locked(req, ino, fi);
	CHANGED(w);
}

const struct fuse_lowlevel_ops wfs_ops = {
	.init = w_init,
	.lookup = w_lookup,
	.forget = w_forget,
	.forget_multi = w_forget_multi,
	.getattr = w_getattr,
	.setattr = w_setattr,
	.readlink = w_readlink,
	.mknod = w_mknod,
	.mkdir = w_mkdir,
	.unlink = w_unlink,
	.rmdir = w_rmdir,
	.symlink = w_symlink,
	.rename = w_rename,
	.link = w_link,
	.open = w_open,
	.create = w_create,
	.read = w_read,
	.write_buf = w_write_buf,
	.flush = w_flush,
	.release = w_release,
	.fsync = w_fsync,
	.opendir = w_opendir,
	.readdir = w_readdir,
	.readdirplus = w_readdirplus,
	.releasedir = w_releasedir,
	.fsyncdir = w_fsyncdir,
	.statfs = w_statfs,
	.setxattr = w_setxattr,
	.getxattr = w_getxattr,
	.listxattr = w_listxattr,
	.removexattr = w_removexattr,
	.fallocate = w_fallocate,
	.copy_file_range = w_copy_file_range,
	.lseek = w_lseek,
};
