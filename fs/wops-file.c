/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writable mounts: open files (open, read, write, flush, release,
 * fsync, fallocate, copy_file_range, lseek), readlink and setattr.
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

struct whandle *handle_new(struct wfs *w, struct wnode *n, int fd,
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

void w_open_locked(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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

void w_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
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

void w_write_buf_locked(fuse_req_t req, fuse_ino_t ino,
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
	wops_note_peers(w, h->n);
	UNLOCK(w);
}

bool wfs_flush_quick(uint64_t fh)
{
	struct whandle *h = (struct whandle *)(uintptr_t)fh;

	return !__atomic_load_n(&h->wrote, __ATOMIC_RELAXED);
}

void w_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	notify_written(W(req), H(fi));
	fuse_reply_err(req, 0);
}

void w_release(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct wfs *w = W(req);
	struct whandle *h = H(fi);

	(void)ino;
	if (h->fd >= 0)
		close(h->fd);
	LOCK(w);
	if (h->wrote)
		wops_note_peers(w, h->n);
	wn_unref(w, h->n);
	UNLOCK(w);
	pthread_mutex_destroy(&h->lock);
	free(h);
	fuse_reply_err(req, 0);
}

void w_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
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

void w_fallocate_locked(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
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

void w_copy_file_range_locked(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
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

void w_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
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

void w_readlink(fuse_req_t req, fuse_ino_t ino)
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

void w_setattr_locked(fuse_req_t req, fuse_ino_t ino, struct stat *a,
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
		wops_note_peers(w, n);
	UNLOCK_NOW(w);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, w->timeout);
}
