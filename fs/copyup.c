/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writable mounts: copy-up, whiteouts and opaque markers in the upper
 * directory. Everything here runs under w->lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "whiteout.h"
#include "wfs.h"

void wfs_tmpname(struct wfs *w, char *buf, size_t size)
{
	snprintf(buf, size, "#strata.%d.%llu", (int)getpid(),
		 (unsigned long long)++w->tmp_seq);
}

int wfs_fsync_fd(struct wfs *w, int fd)
{
	if (w->volatile_)
		return 0;
	return fsync(fd) < 0 ? -errno : 0;
}

static void proc_at(char *buf, size_t size, int dfd, const char *name)
{
	snprintf(buf, size, "/proc/self/fd/%d/%s", dfd, name);
}

bool wfs_has_wh_file(int pfd, const char *name)
{
	char wh[NAME_MAX + 8];
	struct stat st;

	if (strlen(name) + WH_PREFIX_LEN > NAME_MAX)
		return false;
	snprintf(wh, sizeof(wh), WH_PREFIX "%s", name);
	return fstatat(pfd, wh, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

bool wfs_has_whiteout(int pfd, const char *name)
{
	struct stat st;

	if (wfs_has_wh_file(pfd, name))
		return true;
	return fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       wh_is_whiteout_stat(&st);
}

int wfs_clear_whiteout(struct wfs *w, int pfd, const char *name)
{
	char wh[NAME_MAX + 8];
	struct stat st;

	(void)w;
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    wh_is_whiteout_stat(&st) && unlinkat(pfd, name, 0) < 0)
		return -errno;
	if (strlen(name) + WH_PREFIX_LEN <= NAME_MAX) {
		snprintf(wh, sizeof(wh), WH_PREFIX "%s", name);
		if (unlinkat(pfd, wh, 0) < 0 && errno != ENOENT)
			return -errno;
	}
	return 0;
}

bool wfs_user_marks(struct wfs *w, uid_t owner)
{
	if (w->priv_xattr)
		return false;
	return w->root_daemon || owner == w->marks_uid;
}

bool wfs_is_opaque(struct wfs *w, int pfd, const char *name)
{
	char path[PATH_MAX], v;
	struct stat st;

	proc_at(path, sizeof(path), pfd, name);
	if (lgetxattr(path, WH_OPAQUE_TRUSTED, &v, 1) == 1 && v == 'y')
		return true;
	if (!w->priv_xattr &&
	    fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    wfs_user_marks(w, st.st_uid) &&
	    lgetxattr(path, WH_OPAQUE_USER, &v, 1) == 1 && v == 'y')
		return true;
	snprintf(path, sizeof(path), "%s/" WH_OPQ_FILE, name);
	return fstatat(pfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int wfs_set_opaque(struct wfs *w, int pfd, const char *name)
{
	char path[PATH_MAX];

	proc_at(path, sizeof(path), pfd, name);
	if (w->priv_xattr &&
	    lsetxattr(path, WH_OPAQUE_TRUSTED, "y", 1, 0) == 0)
		return 0;
	if (lsetxattr(path, WH_OPAQUE_USER, "y", 1, 0) == 0)
		return 0;
	return -errno;
}

int wfs_whiteout(struct wfs *w, int pfd, const char *name)
{
	char tmp[64], wh[NAME_MAX + 8];
	struct stat st;
	int fd;

	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(st.st_mode) && unlinkat(pfd, name, AT_REMOVEDIR) < 0)
		return -errno;
	if (w->priv_wh) {
		/* built aside and renamed over the old entry: atomic */
		wfs_tmpname(w, tmp, sizeof(tmp));
		if (mknodat(w->workfd, tmp, S_IFCHR | 0, makedev(0, 0)) == 0) {
			if (renameat(w->workfd, tmp, pfd, name) == 0)
				return 0;
			unlinkat(w->workfd, tmp, 0);
			return -errno;
		}
		w->priv_wh = false;
	}
	if (strlen(name) + WH_PREFIX_LEN > NAME_MAX)
		return -ENAMETOOLONG;
	snprintf(wh, sizeof(wh), WH_PREFIX "%s", name);
	fd = openat(pfd, wh, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
		    O_NONBLOCK, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	if (unlinkat(pfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int wfs_clear_dir(struct wfs *w, int pfd, const char *name)
{
	int dfd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
			 O_NOFOLLOW);
	struct dirent *de;
	DIR *d;
	int r = 0;

	(void)w;
	if (dfd < 0)
		return -errno;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -ENOMEM;
	}
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!wh_is_whiteout_stat(&st) &&
		    strncmp(de->d_name, WH_PREFIX, WH_PREFIX_LEN)) {
			r = -ENOTEMPTY;
			break;
		}
		if (unlinkat(dfd, de->d_name, 0) < 0) {
			r = -errno;
			break;
		}
	}
	closedir(d);
	return r;
}

static int set_override(const char *path, bool follow, uid_t uid,
			gid_t gid, mode_t mode)
{
	char buf[64];
	int len, r;

	len = snprintf(buf, sizeof(buf), "%u:%u:0%o", (unsigned)uid,
		       (unsigned)gid, (unsigned)mode);
	r = follow ? setxattr(path, WH_OVERRIDE_STAT, buf, (size_t)len, 0)
		   : lsetxattr(path, WH_OVERRIDE_STAT, buf, (size_t)len, 0);
	return r < 0 ? -errno : 0;
}

int wfs_set_override(struct wfs *w, int pfd, const char *name, uid_t uid,
		     gid_t gid, mode_t mode)
{
	char path[PATH_MAX];

	(void)w;
	proc_at(path, sizeof(path), pfd, name);
	return set_override(path, false, uid, gid, mode);
}

int wfs_set_override_fd(struct wfs *w, int fd, uid_t uid, gid_t gid,
			mode_t mode)
{
	char path[32];

	(void)w;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return set_override(path, true, uid, gid, mode);
}

/* Copy @n's xattrs (from below, or from its upper entry) onto @path. */
static int copy_xattrs(struct wfs *w, struct wnode *n, const char *dst)
{
	char src[PATH_MAX], *names = NULL, *s, *val = NULL;
	ssize_t len, vlen;
	int pfd = -1, r = 0;
	bool from_upper = n->upper;

	if (from_upper) {
		r = wn_xattr_path(w, n, src, sizeof(src), &pfd);
		if (r < 0)
			return r;
		len = llistxattr(src, NULL, 0);
		if (len > 0 && (names = malloc((size_t)len)))
			len = llistxattr(src, names, (size_t)len);
	} else {
		len = w->lw->ops->listxattr(w->lw, n->lower, NULL, 0);
		if (len > 0 && (names = malloc((size_t)len)))
			len = w->lw->ops->listxattr(w->lw, n->lower, names,
						    (size_t)len);
	}
	for (s = names; names && len > 0 && s < names + len;
	     s += strlen(s) + 1) {
		if (from_upper && (!strcmp(s, WH_METACOPY_TRUSTED) ||
				   !strcmp(s, WH_METACOPY_USER)))
			continue;
		/* a lower directory's overlay marks describe it among the
		 * lowers, not the copy; the host labels a new file itself */
		if ((!from_upper && wh_private_xattr(s)) ||
		    !strcmp(s, "security.selinux"))
			continue;
		if (from_upper)
			vlen = lgetxattr(src, s, NULL, 0);
		else
			vlen = w->lw->ops->getxattr(w->lw, n->lower, s, NULL, 0);
		if (vlen < 0)
			continue;
		free(val);
		val = malloc((size_t)vlen + 1);
		if (!val) {
			r = -ENOMEM;
			break;
		}
		if (from_upper)
			vlen = lgetxattr(src, s, val, (size_t)vlen);
		else
			vlen = w->lw->ops->getxattr(w->lw, n->lower, s, val,
						    (size_t)vlen);
		if (vlen < 0)
			continue;
		if (lsetxattr(dst, s, val, (size_t)vlen, 0) < 0 &&
		    errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP) {
			r = -errno;
			break;
		}
	}
	free(val);
	free(names);
	if (pfd >= 0)
		close(pfd);
	return r;
}

/* Owner, mode and times of @tmp (in the work dir) from @st. */
static int set_meta(struct wfs *w, const char *tmp, const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	mode_t perm = st->st_mode & 07777;
	bool lnk = S_ISLNK(st->st_mode);

	if (w->root_daemon) {
		if (fchownat(w->workfd, tmp, st->st_uid, st->st_gid,
			     AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	} else if (w->override) {
		/* the user owns every upper file: the image's owner and
		 * mode live in override_stat; keep the file usable */
		if (!lnk)
			wfs_set_override(w, w->workfd, tmp, st->st_uid,
					 st->st_gid, st->st_mode);
		perm |= S_ISDIR(st->st_mode) ? 0700 : 0600;
		perm &= ~(mode_t)(S_ISUID | S_ISGID);
	}
	if (!lnk && fchmodat(w->workfd, tmp, perm, 0) < 0)
		return -errno;
	if (utimensat(w->workfd, tmp, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static void keep_times(int dfd, const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	char pp[64];

	snprintf(pp, sizeof(pp), "/proc/self/fd/%d", dfd);
	utimensat(AT_FDCWD, pp, ts, 0);
}

struct group_ctx {
	struct wfs *w;
	struct wnode *n;	/* the name just copied up */
	int pfd;		/* its upper parent */
	ino_t ino;		/* the group's lower inode number */
	bool split;		/* a visible name could not be linked */
};

/* Link another visible name of @g->n's lower hardlink group to the new
 * upper file, so the names stay one file (as they were in the image). */
static int link_name(void *ctx, const char *path)
{
	struct group_ctx *g = ctx;
	struct wfs *w = g->w;
	struct wnode *d = w->root, *c = NULL;
	char buf[4096], *save = NULL, *comp, *next;
	int pfd, r = 0;

	snprintf(buf, sizeof(buf), "%s", path);
	wn_ref(d);
	for (comp = strtok_r(buf, "/", &save); comp; comp = next) {
		next = strtok_r(NULL, "/", &save);
		if (wn_resolve(w, d, comp, &c) < 0) {
			c = NULL;
			break;
		}
		wn_ref(c);
		wn_unref(w, d);
		d = c;
		if (next && !S_ISDIR(c->type)) {
			c = NULL;
			break;
		}
	}
	if (c && c != g->n && !c->upper && c->lower && c->ino == g->ino &&
	    !S_ISDIR(c->type)) {
		r = wfs_copy_up(w, c->parent, CU_META);
		pfd = r < 0 ? r : wn_upper_dirfd(w, c->parent);
		g->split |= pfd < 0;
		if (pfd >= 0) {
			struct stat pst;
			bool keep = fstat(pfd, &pst) == 0;

			if (linkat(g->pfd, g->n->name, pfd, c->name, 0) == 0) {
				c->upper = true;
				c->metacopy = g->n->metacopy;
			} else {
				g->split = true;
			}
			if (keep && pfd != g->pfd)
				keep_times(pfd, &pst);
			close(pfd);
		}
	}
	wn_unref(w, d);
	return 0;
}

/*
 * The first write to a metacopy file: its data is copied into the upper
 * file in place (other names may be linked to it), then the metacopy
 * xattr goes. A crash before that leaves the xattr, and reads still come
 * from below: never a half-copied file.
 */
static int fill_metacopy(struct wfs *w, struct wnode *n, int how)
{
	char path[PATH_MAX];
	struct stat st;
	int pfd, fd, in = -1, r = 0;

	pfd = wn_upper_dirfd(w, n->parent);
	if (pfd < 0)
		return pfd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", pfd, n->name);
	if (lgetxattr(path, WH_METACOPY_TRUSTED, NULL, 0) < 0 &&
	    lgetxattr(path, WH_METACOPY_USER, NULL, 0) < 0) {
		/* another name of the same file was written first */
		close(pfd);
		wn_data_filled(w, n);
		return 0;
	}
	fd = wfs_open_reg(pfd, n->name, O_WRONLY);
	if (fd < 0) {
		close(pfd);
		return fd;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
	} else if (how == CU_NODATA) {
		r = ftruncate(fd, 0) < 0 ? -errno : 0;
	} else if (st.st_size > 0) {
		in = w->lw->ops->open(w->lw, n->lower);
		r = in == -ENODATA ? 0 : in < 0 ? in : strata_copy_data(in, fd,
								st.st_size);
	}
	/* filling in the data is a copy-up, not a change: the times stay
	 * (the change that asked for it sets them itself) */
	if (r == 0) {
		struct timespec ts[2] = { st.st_atim, st.st_mtim };

		r = futimens(fd, ts) < 0 ? -errno : 0;
	}
	if (r == 0)
		r = wfs_fsync_fd(w, fd);
	if (in >= 0)
		close(in);
	close(fd);
	if (r == 0) {
		if (lremovexattr(path, WH_METACOPY_TRUSTED) < 0 &&
		    lremovexattr(path, WH_METACOPY_USER) < 0 && errno != ENODATA)
			r = -errno;
	}
	close(pfd);
	if (r == 0)
		wn_data_filled(w, n);
	return r;
}

/* The copy-up mark of the upper file at @path: the inode number it shows
 * (see copyup_marks() in wnode.c). Filesystems without xattrs go without. */
static int mark_ino(struct wfs *w, const char *path, uint64_t ino)
{
	char num[24];
	int len = snprintf(num, sizeof(num), "%llu", (unsigned long long)ino);

	if (lsetxattr(path, w->priv_xattr ? WH_INO_TRUSTED : WH_INO_USER, num,
		      (size_t)len, 0) < 0 && errno != ENOTSUP && errno != EPERM)
		return -errno;
	return 0;
}

int wfs_copy_up(struct wfs *w, struct wnode *n, int how)
{
	struct stat saved;
	bool have_saved = false;
	char tmp[64], path[PATH_MAX], target[PATH_MAX + 1];
	struct stat st;
	int pfd = -1, fd = -1, in = -1, r;
	bool meta;

	if (w->upperfd < 0)
		return -EROFS;
	if (n->upper && !(n->metacopy && how != CU_META))
		return 0;
	if (n->upper)
		return fill_metacopy(w, n, how);
	if (n->deleted)
		return -ENOENT;
	r = wfs_copy_up(w, n->parent, CU_META);
	if (r < 0)
		return r;
	r = wn_stat(w, n, &st);
	if (r < 0)
		return r;
	pfd = wn_upper_dirfd(w, n->parent);
	if (pfd < 0)
		return pfd;
	wfs_tmpname(w, tmp, sizeof(tmp));
	meta = how == CU_META && S_ISREG(st.st_mode) && st.st_size > 0;
	switch (st.st_mode & S_IFMT) {
	case S_IFDIR:
		if (mkdirat(w->workfd, tmp, 0700) < 0)
			r = -errno;
		break;
	case S_IFREG:
		fd = openat(w->workfd, tmp, O_WRONLY | O_CREAT | O_EXCL |
			    O_CLOEXEC, 0600);
		if (fd < 0) {
			r = -errno;
			break;
		}
		if (meta) {
			if (ftruncate(fd, st.st_size) < 0)
				r = -errno;
		} else if (how != CU_NODATA && st.st_size > 0) {
			in = w->lw->ops->open(w->lw, n->lower);
			if (in < 0)
				r = in;
			else
				r = strata_copy_data(in, fd, st.st_size);
		}
		if (r == 0)
			r = wfs_fsync_fd(w, fd);
		break;
	case S_IFLNK: {
		ssize_t len;

		if (n->upper) {
			int fd2 = wn_upper_dirfd(w, n->parent);

			len = fd2 < 0 ? fd2 : readlinkat(fd2, n->name, target,
							 sizeof(target) - 1);
			if (fd2 >= 0)
				close(fd2);
			if (len >= 0)
				target[len] = '\0';
		} else {
			len = w->lw->ops->readlink(w->lw, n->lower, target,
						   sizeof(target));
		}
		if (len < 0)
			r = (int)len;
		else if (symlinkat(target, w->workfd, tmp) < 0)
			r = -errno;
		break;
	}
	default:
		/* a device node in the upper directory opens the device for
		 * whoever can reach it there, past the mount's nodev: a root
		 * daemon makes one only where no other user can */
		if ((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) &&
		    w->root_daemon && w->upper_shared && !w->upper_nodev) {
			strata_warn("%s: not copying up a device node into an "
				    "upper directory other users can reach",
				    n->name);
			r = -EPERM;
			break;
		}
		if (mknodat(w->workfd, tmp, st.st_mode & (S_IFMT | 0600),
			    st.st_rdev) < 0) {
			/* unprivileged: a plain file that says what it is */
			if (errno != EPERM || !w->override)
				r = -errno;
			else if ((fd = openat(w->workfd, tmp, O_WRONLY |
					      O_CREAT | O_EXCL | O_CLOEXEC,
					      0600)) < 0)
				r = -errno;
		}
		break;
	}
	if (r == 0) {
		proc_at(path, sizeof(path), w->workfd, tmp);
		r = copy_xattrs(w, n, path);
		if (r == 0 && meta)
			r = lsetxattr(path, w->priv_xattr ? WH_METACOPY_TRUSTED
				      : WH_METACOPY_USER, "", 0, 0) < 0
				? -errno : 0;
		/* mark the copy-up with the inode number it shows, so a
		 * remount pairs it with the lower entry again (not a file
		 * later made at its old name) and shows the same number */
		if (r == 0 && !S_ISDIR(st.st_mode))
			r = mark_ino(w, path, n->ino);
		if (r == 0)
			r = set_meta(w, tmp, &st);
	}
	if (in >= 0)
		close(in);
	if (fd >= 0)
		close(fd);
	if (r == 0) {
		struct stat pst;
		char pp[64];
		bool keep = fstat(pfd, &pst) == 0;

		/* a metacopy being completed is replaced; else the name
		 * must be free in the upper dir */
		if (n->upper)
			r = renameat(w->workfd, tmp, pfd, n->name) < 0
				? -errno : 0;
		else
			r = renameat2(w->workfd, tmp, pfd, n->name,
				      RENAME_NOREPLACE) < 0 ? -errno : 0;
		if (keep)
			saved = pst;
		have_saved = keep;
		(void)pp;
	}
	if (r < 0) {
		unlinkat(w->workfd, tmp, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
	} else {
		bool was_upper = n->upper;

		n->upper = true;
		n->metacopy = meta;
		if (!was_upper && !S_ISDIR(st.st_mode) && st.st_nlink > 1) {
			struct group_ctx g = { w, n, pfd, n->ino, false };

			wn_ref(n);
			w->lw->ops->links(w->lw, n->lower, link_name, &g);
			wn_unref(w, n);
			/* a visible name left behind is another file now:
			 * this one stops showing the group's inode number.
			 * (Names whited out or hidden do not count.) */
			if (g.split &&
			    fstatat(pfd, n->name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
				wn_set_ino(w, n, st.st_ino | (1ull << 63));
				proc_at(path, sizeof(path), pfd, n->name);
				mark_ino(w, path, n->ino);
			}
		}
		/* a copy-up is not a change of the parent: keep its times,
		 * as the kernel overlay does */
		if (have_saved)
			keep_times(pfd, &saved);
	}
	close(pfd);
	return r;
}

static int copy_tree(struct wfs *w, struct wnode *d, bool top);

struct tree_ctx {
	struct wfs *w;
	struct wnode *d;
	int r;
};

static int tree_child(void *ctx, const char *name, mode_t type, ino_t ino)
{
	struct tree_ctx *t = ctx;
	struct wnode *c;
	int r;

	(void)type;
	(void)ino;
	r = wn_resolve(t->w, t->d, name, &c);
	if (r == -ENOENT)
		return 0;	/* whited out above */
	if (r == 0) {
		wn_ref(c);
		r = S_ISDIR(c->type) ? copy_tree(t->w, c, false)
				     : wfs_copy_up(t->w, c, CU_DATA);
		wn_unref(t->w, c);
	}
	if (r < 0) {
		t->r = r;
		return 1;
	}
	return 0;
}

/*
 * Only the top directory gets an opaque marker on disk: below it nothing
 * looks at the lower layers any more. Directory nodes already in memory
 * are marked opaque so they stop merging their (old) lower directories.
 */
static int copy_tree(struct wfs *w, struct wnode *d, bool top)
{
	struct tree_ctx t = { w, d, 0 };
	struct timespec ts[2];
	struct stat st;
	int pfd, r;

	r = wn_stat(w, d, &st);
	if (r == 0)
		r = wfs_copy_up(w, d, CU_META);
	if (r < 0 || !d->lower || d->opaque)
		return r;
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	r = w->lw->ops->readdir(w->lw, d->lower, tree_child, &t);
	if (r < 0)
		return r;
	if (t.r < 0)
		return t.r;
	/* every child is now upper: drop the whiteouts (an opaque dir
	 * needs none) and hide the lower dir */
	pfd = wn_upper_dirfd(w, d->parent);
	if (pfd < 0)
		return pfd;
	{
		int dfd = openat(pfd, d->name, O_RDONLY | O_DIRECTORY |
				 O_CLOEXEC | O_NOFOLLOW);
		DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
		struct dirent *de;

		while (dir && (de = readdir(dir))) {
			struct stat cst;

			if (fstatat(dfd, de->d_name, &cst,
				    AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			if (wh_is_whiteout_stat(&cst) ||
			    (!strncmp(de->d_name, WH_PREFIX, WH_PREFIX_LEN) &&
			     S_ISREG(cst.st_mode)))
				unlinkat(dfd, de->d_name, 0);
		}
		if (dir)
			closedir(dir);
		else if (dfd >= 0)
			close(dfd);
	}
	r = top ? wfs_set_opaque(w, pfd, d->name) : 0;
	/* filling it touched its times: put them back */
	if (r == 0 && utimensat(pfd, d->name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	close(pfd);
	if (r == 0)
		d->opaque = true;
	return r;
}

int wfs_copy_up_tree(struct wfs *w, struct wnode *d)
{
	if (d == w->root)
		return -EINVAL;
	return copy_tree(w, d, true);
}
