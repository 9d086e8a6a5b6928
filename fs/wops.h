/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The FUSE operations of writable (and lowerdir=) mounts, one file per
 * kind of operation: wops.c (lookup, getattr, statfs, the locking every
 * handler shares and the table of operations), wops-make.c (new
 * entries), wops-file.c (open files, readlink, setattr), wops-dir.c
 * (listings), wops-name.c (unlink, rmdir, link, rename) and
 * wops-xattr.c. Each handler takes w->lock for anything that reads or
 * changes the namespace, replies once, and maps failures to the errno a
 * program expects.
 */
#ifndef STRATA_WOPS_H
#define STRATA_WOPS_H

/* after wfs.h, whose internals it uses */

/* An open file: fi->fh. */
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

static inline struct wfs *W(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static inline struct whandle *H(struct fuse_file_info *fi)
{
	return (struct whandle *)(uintptr_t)fi->fh;
}

/* ---- locking (wops.c) ----
 * Every change holds the freeze lock's read side (CHANGE .. CHANGED), so
 * a commit can hold the mount still while it reads the upper directory.
 * LOCK takes w->lock; UNLOCK drops it and, outside a change, sends the
 * invalidations noted meanwhile; UNLOCK_NOW, for a change that is
 * complete, drops both locks and sends them before the reply. */
void wops_change(struct wfs *w);
void wops_changed(struct wfs *w);
void wops_unlock(struct wfs *w);
void wops_unlock_now(struct wfs *w);
/* Other names of @n whose cached attributes and pages the kernel must
 * drop, noted under w->lock and sent once it is dropped. */
void wops_note_peers(struct wfs *w, struct wnode *n);

#define CHANGE(w) wops_change(w)
#define CHANGED(w) wops_changed(w)
#define LOCK(w) pthread_mutex_lock(&(w)->lock)
#define UNLOCK(w) wops_unlock(w)
#define UNLOCK_NOW(w) wops_unlock_now(w)

/* ---- shared by the handlers (wops.c) ---- */
/* -ENAMETOOLONG, or -EINVAL for a name an OCI layer cannot carry. */
int check_name(const char *name);
/* The entry of @n (its lookup count taken), for a reply. */
int fill_entry(struct wfs *w, struct wnode *n, struct fuse_entry_param *ep);
/* Reply to an entry request with @n, or -@r; drops the locks. */
void reply_entry(fuse_req_t req, struct wfs *w, struct wnode *n, int r);

/* ---- handlers, one file per kind ---- */
/* wops-make.c */
void w_mknod_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode, dev_t rdev);
void w_mkdir_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode);
void w_symlink_locked(fuse_req_t req, const char *link, fuse_ino_t parent,
		      const char *name);
void w_create_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, struct fuse_file_info *fi);

/* wops-file.c */
struct whandle *handle_new(struct wfs *w, struct wnode *n, int fd,
			   bool lower, bool writable, int flags);
void w_open_locked(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void w_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	    struct fuse_file_info *fi);
void w_write_buf_locked(fuse_req_t req, fuse_ino_t ino,
			struct fuse_bufvec *in, off_t off,
			struct fuse_file_info *fi);
void w_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void w_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void w_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
	     struct fuse_file_info *fi);
void w_fallocate_locked(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			off_t len, struct fuse_file_info *fi);
void w_copy_file_range_locked(fuse_req_t req, fuse_ino_t ino_in,
			      off_t off_in, struct fuse_file_info *fi_in,
			      fuse_ino_t ino_out, off_t off_out,
			      struct fuse_file_info *fi_out, size_t len,
			      int flags);
void w_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
	     struct fuse_file_info *fi);
void w_readlink(fuse_req_t req, fuse_ino_t ino);
void w_setattr_locked(fuse_req_t req, fuse_ino_t ino, struct stat *a, int set,
		      struct fuse_file_info *fi);

/* wops-dir.c */
/* A directory's merged listing: fi->fh of an open directory. */
struct wdent {
	char *name;
	ino_t ino;
	mode_t type;
};

struct wdir {
	size_t n, cap;
	struct wdent *v;
};

/* The merged listing of @d (under w->lock), freed with wdir_free(). */
int list_dir(struct wfs *w, struct wnode *d, struct wdir **out);
void wdir_free(struct wdir *d);
void w_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void w_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	       struct fuse_file_info *fi);
void w_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi);
void w_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void w_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
		struct fuse_file_info *fi);

/* wops-name.c */
void w_unlink_locked(fuse_req_t req, fuse_ino_t parent, const char *name);
void w_rmdir_locked(fuse_req_t req, fuse_ino_t parent, const char *name);
void w_link_locked(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		   const char *newname);
void w_rename_locked(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname,
		     unsigned int flags);

/* wops-xattr.c */
void w_setxattr_locked(fuse_req_t req, fuse_ino_t ino, const char *name,
		       const char *value, size_t size, int flags);
void w_removexattr_locked(fuse_req_t req, fuse_ino_t ino, const char *name);
void w_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		size_t size);
void w_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);

#endif
