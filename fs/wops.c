/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE operations of writable (and lowerdir=) mounts: lookup, forget,
 * getattr, statfs, init, the locking every handler shares, and the table
 * of operations, whose changing entries each run under the freeze lock.
 * The other operations are in wops-*.c, one file per kind (wops.h).
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
 * Other names of files changed under the lock, whose cached attributes and
 * pages the kernel must drop: collected by wops_note_peers() while w->lock is
 * held, sent by UNLOCK() (wops.h) once it is dropped (a notification can wait on
 * the kernel's locks of those inodes, so never under w->lock).
 */
#define MAX_PEERS 64
static __thread struct {
	fuse_ino_t ids[MAX_PEERS];
	size_t n;
} pending;

void wops_note_peers(struct wfs *w, struct wnode *n)
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
void wops_unlock(struct wfs *w)
{
	pthread_mutex_unlock(&w->lock);
	if (!changing)
		send_pending(w);
}

void wops_change(struct wfs *w)
{
	pthread_rwlock_rdlock(&w->freeze);
	changing++;
}

static __thread bool thawed;	/* freeze lock dropped by unlock_now() */

void wops_changed(struct wfs *w)
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
void wops_unlock_now(struct wfs *w)
{
	pthread_mutex_unlock(&w->lock);
	if (changing) {
		pthread_rwlock_unlock(&w->freeze);
		changing--;
		thawed = true;
	}
	send_pending(w);
}


int check_name(const char *name)
{
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	/* an OCI layer cannot carry such a name: commit could not write it */
	if (!strncmp(name, WH_PREFIX, WH_PREFIX_LEN))
		return -EINVAL;
	return 0;
}

int fill_entry(struct wfs *w, struct wnode *n,
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

void reply_entry(fuse_req_t req, struct wfs *w, struct wnode *n,
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
