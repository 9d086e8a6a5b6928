/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The writable engine: an upper directory over a read-only lower stack
 * (struct lower: an image's layers or plain lowerdir= directories).
 *
 * Nodes. Every name the kernel knows has a struct wnode; its FUSE node id is
 * its address (the root is FUSE_ROOT_ID). A node has a lower object (lnode),
 * an upper entry, or both (a directory merged from both, a copied-up file,
 * a metacopy file whose data is still below). Nodes are found by (parent,
 * name) in one hash table; rename moves them, unlink marks them deleted
 * (open handles keep them alive). The inode number shown is the lower
 * object's while it has one, so a copy-up does not change it; upper-only
 * objects show the upper file's inode number with bit 63 set.
 *
 * Upper directory access never follows symlinks: a directory's upper fd is
 * opened from the upper root with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), then *at() calls act on one name inside it.
 *
 * Copy-up builds the new object in the work directory (data, owner, mode,
 * times, xattrs, fsync) and renames it into place, so a crash never leaves
 * a half-copied file visible. A metadata-only change of a regular file
 * makes a metacopy: a sparse upper file of the same size with the
 * (trusted|user).overlay.metacopy xattr, whose data is still read from
 * below until the first write.
 *
 * Names of one file. Each name has its own node (and FUSE node id), so the
 * kernel caches attributes and pages per name. Non-directory nodes (files,
 * fifos, sockets, device nodes, symlinks) are also chained by the inode
 * number they show (w->ihash); a change through one name (write,
 * truncate, chmod, chown, utimes, link, unlink) invalidates the kernel's
 * attributes and pages of the other names of the same file (after
 * w->lock is dropped), so stat and read through any name see it:
 * link and unlink at once, data and size when the writer closes or fsyncs
 * (close-to-open, as on NFS).
 *
 * Locking: w->lock serialises namespace changes, copy-up and node lookup;
 * reads and writes of open files go straight to their fds without it.
 */
#ifndef STRATAFS_WFS_H
#define STRATAFS_WFS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fs.h"
#include "lower.h"

struct wnode {
	struct wnode *parent;		/* holds a reference */
	char *name;
	struct wnode *hnext;
	struct wnode *inext;		/* chain of w->ihash (non-dirs) */
	uint64_t nlookup;		/* kernel references */
	uint64_t refs;			/* children, open handles */
	uint64_t ino;
	mode_t type;			/* S_IFMT bits */
	struct lnode *lower;		/* NULL when upper-only */
	bool upper;			/* has an upper entry */
	bool opaque;			/* upper dir hides the lower one */
	bool metacopy;			/* upper has metadata, data below */
	bool deleted;			/* unlinked, not in the hash */
	bool nocaps;			/* made here, never given xattrs:
					 * no security.capability (the
					 * kernel asks before every write) */
	int orphan_fd;			/* deleted while open: O_PATH fd of
					 * what it was, for fstat; else -1 */
	bool hashed;
	bool ihashed;
};

#define WFS_DFD_SLOTS 256

struct wfs {
	struct lower *lw;
	int upperfd;			/* -1: read-only */
	int workfd;			/* WORKDIR/work */
	char *upper_path, *work_path;	/* absolute */
	bool volatile_;			/* no fsync */
	bool priv_wh;			/* can mknod 0:0 whiteouts */
	bool priv_xattr;		/* can set trusted.* xattrs */
	bool override;			/* record owners/modes in override_stat */
	bool root_daemon;
	bool upper_shared;		/* other users can reach the upper dir */
	uid_t marks_uid;		/* owner of the upper root */
	bool upper_nodev;		/* it is on a nodev filesystem */
	double timeout;
	pthread_mutex_t lock;
	pthread_rwlock_t freeze;	/* changes: read side; commit: write */
	struct wnode **hash;
	size_t hash_size, n_nodes;
	struct wnode **ihash;		/* non-directories by shown ino */
	/* open upper directories of recently used nodes (wnode.c), so an
	 * operation does not walk the path from the upper root each time */
	struct { struct wnode *n; int fd; } dfd[WFS_DFD_SLOTS];
	pthread_mutex_t dfd_lock;
	struct fuse_session *se;	/* for notifications; may be NULL */
	struct wnode *root;
	uint64_t tmp_seq;
	uint64_t gen;			/* bumped by wfs_continue() */
	/* what the mount claims of its upper directory (upper-claim.c) */
	char *mountpoint;		/* absolute */
	char *base_manifest, *base_ref;	/* its image; NULL: lowerdir= */
	bool base_write;		/* record the image once mounted */
	bool locked_upper, locked_work;	/* holds their flocks */
};

/* What a writable mount claims of its upper directory: it alone uses it
 * (and its work directory), and its changes are made on this image. */
struct wfs_claim {
	const char *mountpoint;		/* absolute, for the lock's record */
	const char *manifest;		/* the image's manifest digest;
					 * NULL: no image (lowerdir=) */
	const char *ref;		/* the image's reference */
	bool rebase;			/* -o rebase: another image is fine */
};

extern const struct fuse_lowlevel_ops wfs_ops;
/* Is a FLUSH or RELEASE of handle @fh quick: nothing written through it
 * since the last flush, so no kernel notification to send (fs_loop_run). */
bool wfs_flush_quick(uint64_t fh);

/*
 * Set up @w over @lw with upper directory @upper (NULL: read-only) and work
 * directory @work (NULL: derived from @upper, ".NAME.work" beside it),
 * locking both for the mount @claim describes (borrowed for the call) and
 * checking that the upper directory was made on its image.
 * Prints what is wrong and returns negative errno on failure.
 */
int wfs_init(struct wfs *w, struct lower *lw, const char *upper,
	     const char *work, const struct wfs_claim *claim);
/* Releases the locks (wfs_claim_release) too. */
void wfs_destroy(struct wfs *w);
/*
 * Once mounted: record the image in the upper directory if it had no
 * record (or -o rebase), and this process's pid and the mount's device
 * as the holder of the locks; call again in the daemon after forking.
 * Failures are logged, not fatal.
 */
void wfs_claim_mounted(struct wfs *w);
/* After wfs_continue: the upper directory's changes are now made on
 * image @manifest (@ref); record it. Return: 0 or -ENOMEM. */
int wfs_claim_rebased(struct wfs *w, const char *manifest, const char *ref);
/* Give up the locks: the session has ended. */
void wfs_claim_release(struct wfs *w);
/*
 * Go on over lower stack @lw (the image just committed from this upper
 * directory, so the view does not change) with an empty upper directory:
 * the upper content moves to the work directory and is removed, every
 * node is looked up again in @lw (inode numbers stay), and open files
 * copy up again on their next write. The caller holds the freeze lock.
 */
int wfs_continue(struct wfs *w, struct lower *lw, struct strata_err *err);

#endif

/* ---- internals shared by wnode.c, copyup.c and wops*.c ---- */

struct wfs_ctx {
	uid_t uid;
	gid_t gid;
};

/* Node table (wnode.c); all under w->lock unless said otherwise. */
struct wnode *wn_get(struct wfs *w, fuse_ino_t ino);	/* no lock needed */
fuse_ino_t wn_id(struct wfs *w, struct wnode *n);
struct wnode *wn_find(struct wfs *w, struct wnode *p, const char *name);
/* Find or build the node of visible name @name in @p. Return: 0 with
 * *out (not referenced), -ENOENT, other -errno. */
int wn_resolve(struct wfs *w, struct wnode *p, const char *name,
	       struct wnode **out);
/* As wn_resolve; on -ENOENT, *whiteout tells whether the upper directory
 * holds a whiteout at @name (the name was deleted). */
int wn_resolve_wh(struct wfs *w, struct wnode *p, const char *name,
		  struct wnode **out, bool *whiteout);
void wn_hash_add(struct wfs *w, struct wnode *n);
/* Drop the open upper directory of @n (NULL: of every node). */
void wn_dirfd_forget(struct wfs *w, struct wnode *n);
/* Set the inode number @n shows (chaining non-directories by it). */
void wn_set_ino(struct wfs *w, struct wnode *n, uint64_t ino);
/* Other names of @n's file the kernel knows: up to @max node ids into
 * @ids; returns how many. */
size_t wn_peers(struct wfs *w, struct wnode *n, fuse_ino_t *ids, size_t max);
/* The data of @n's file is in its upper file now: no name of it reads
 * from below any more (a metacopy's other names share its upper file). */
void wn_data_filled(struct wfs *w, struct wnode *n);
/* Tell the kernel to drop cached attributes and pages of @ids (call
 * without w->lock). */
void wfs_inval(struct wfs *w, const fuse_ino_t *ids, size_t n);
void wn_hash_del(struct wfs *w, struct wnode *n);
struct wnode *wn_new(struct wfs *w, struct wnode *p, const char *name);
void wn_ref(struct wnode *n);
void wn_unref(struct wfs *w, struct wnode *n);
void wn_forget(struct wfs *w, struct wnode *n, uint64_t nlookup);
/* Move @n to (@np, @name) in the table. */
int wn_move(struct wfs *w, struct wnode *n, struct wnode *np,
	    const char *name);

/* O_PATH fd of directory @d's upper directory (d->upper must be true). */
int wn_upper_dirfd(struct wfs *w, struct wnode *d);
/* Attributes as the mount shows them. */
int wn_stat(struct wfs *w, struct wnode *n, struct stat *st);
/* lstat of @n's upper entry, before overrides; *pfd gets the parent's
 * upper dirfd (caller closes) when @pfd is not NULL. */
int wn_upper_lstat(struct wfs *w, struct wnode *n, struct stat *st, int *pfd);
/* "/proc/self/fd/N/NAME" for xattr calls on @n's upper entry; *pfd is
 * closed by the caller. */
int wn_xattr_path(struct wfs *w, struct wnode *n, char *buf, size_t size,
		  int *pfd);

/* Copy-up and markers (copyup.c), under w->lock. */
enum { CU_META, CU_DATA, CU_NODATA };
int wfs_copy_up(struct wfs *w, struct wnode *n, int how);
/* Copy the whole merged tree under directory @d into the upper dir and
 * make it opaque: afterwards nothing under it depends on the lower. */
int wfs_copy_up_tree(struct wfs *w, struct wnode *d);
/* Replace whatever upper entry @name in @pfd has with a whiteout. */
int wfs_whiteout(struct wfs *w, int pfd, const char *name);
/* Is there a whiteout for @name in @pfd (either form)? */
bool wfs_has_whiteout(int pfd, const char *name);
/* Only the `.wh.NAME` file form (for when NAME itself is known absent). */
bool wfs_has_wh_file(int pfd, const char *name);
/* Remove the whiteout(s) for @name in @pfd. */
int wfs_clear_whiteout(struct wfs *w, int pfd, const char *name);
int wfs_set_opaque(struct wfs *w, int pfd, const char *name);
bool wfs_is_opaque(struct wfs *w, int pfd, const char *name);
/*
 * May the overlay marks kept in user.* xattrs (opaque, redirect,
 * metacopy, origin, inode number) of an upper entry owned by @owner be
 * believed? Whoever can write an entry can set its user.* xattrs, so a
 * daemon that can set trusted.* believes those alone, as the kernel
 * overlay does without userxattr; an unprivileged daemon believes them
 * on the entries it made (its own). A root daemon on a filesystem
 * without trusted.* believes them everywhere (warned at mount time).
 */
bool wfs_user_marks(struct wfs *w, uid_t owner);
/*
 * Open upper entry @name in @pfd with @flags (O_ACCMODE, O_TRUNC, ...),
 * never following a symlink and never blocking on a fifo or device that
 * was planted in its place: it must be a regular file (else -EIO, and a
 * log line). Return: the fd (its O_NONBLOCK as @flags asked) or -errno.
 */
int wfs_open_reg(int pfd, const char *name, int flags);
/*
 * An O_PATH fd of @n's upper entry, found without following a symlink
 * and checked to be of @n's type (else -EIO, and a log line), with its
 * attributes in *@st. Changes of attributes go through this fd, so they
 * reach the object that was checked, whatever is renamed meanwhile.
 */
int wn_upper_fd(struct wfs *w, struct wnode *n, struct stat *st);
/* Remove the whiteouts an upper directory holds (it must hold nothing
 * else). Return: 0 or -ENOTEMPTY. */
int wfs_clear_dir(struct wfs *w, int pfd, const char *name);
/* Record owner and mode in override_stat (unprivileged mounts). */
int wfs_set_override(struct wfs *w, int pfd, const char *name, uid_t uid,
		     gid_t gid, mode_t mode);
/* The same, on the object behind O_PATH fd @fd (not a symlink). */
int wfs_set_override_fd(struct wfs *w, int fd, uid_t uid, gid_t gid,
			mode_t mode);
int wfs_get_override(int pfd, const char *name, uid_t *uid, gid_t *gid,
		     mode_t *mode);
/* A fresh temporary name in the work directory. */
void wfs_tmpname(struct wfs *w, char *buf, size_t size);
int wfs_fsync_fd(struct wfs *w, int fd);

/* Lock the upper directory (@upper) or work directory behind @fd for
 * this mount, or print who holds it. Return: 0, -EBUSY, -errno. */
int wfs_claim_lock(struct wfs *w, int fd, bool upper);
/* Is the upper directory's recorded image this mount's (or @rebase)?
 * Prints both when not. Return: 0 or -EEXIST. */
int wfs_claim_base(struct wfs *w, bool rebase);
