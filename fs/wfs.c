/* SPDX-License-Identifier: Apache-2.0 */
/* Writable mounts: setting up the upper and work directories. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
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

/* Remove everything inside directory @dfd (not @dfd itself). */
static void empty_dir(int dfd)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d = fd < 0 ? NULL : fdopendir(fd);

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(fd, de->d_name, 0) == 0)
			continue;
		if (errno == EISDIR || errno == EPERM) {
			int sub = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY |
					 O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0) {
				empty_dir(sub);
				close(sub);
			}
			unlinkat(fd, de->d_name, AT_REMOVEDIR);
		}
	}
	closedir(d);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX], *p;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int fail(const char *what, const char *path, int err)
{
	fprintf(stderr, "stratafs: %s %s: %s\n", what, path, strerror(err));
	return -err;
}

/*
 * Open directory @path for the daemon's own use, refusing what another
 * user could have planted there before the mount: a symlink (O_NOFOLLOW),
 * a directory owned by someone else, or one that others may write.
 */
static int open_own_dir(const char *what, const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return fail(errno == ELOOP || errno == ENOTDIR
			    ? "refusing (a symlink or not a directory)"
			    : "cannot open", path, errno) ;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return fail("cannot stat", path, errno);
	}
	if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		close(fd);
		fprintf(stderr, "stratafs: refusing %s %s: it must be owned "
			"by uid %u and writable by its owner only (it is "
			"owned by uid %u, mode %04o)\n", what, path,
			(unsigned)geteuid(), (unsigned)st.st_uid,
			(unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return fd;
}

/*
 * Can users other than the daemon's reach @path: does every directory
 * from / down to it let others search it? Then they can write wherever
 * the mount gave them a directory of their own in the upper directory.
 */
static bool reachable_by_others(const char *path)
{
	char buf[PATH_MAX], *p;
	struct stat st;

	if (!path || strlen(path) >= sizeof(buf))
		return false;
	strcpy(buf, path);
	for (p = buf + strlen(buf); p > buf; ) {
		if (stat(buf, &st) < 0 || !(st.st_mode & S_IXOTH))
			return false;
		while (p > buf && *p != '/')
			p--;
		*p = '\0';
	}
	return stat("/", &st) == 0 && (st.st_mode & S_IXOTH);
}

/* A new upper root takes the image root's owner, mode and times, so the
 * mount's root looks like the image's (overlayfs shows the upper root). */
static void root_attrs(struct wfs *w)
{
	struct stat st;
	struct timespec ts[2];

	w->lw->ops->stat(w->lw, w->root->lower, &st);
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	if (w->root_daemon) {
		if (fchown(w->upperfd, st.st_uid, st.st_gid) < 0 ||
		    fchmod(w->upperfd, st.st_mode & 07777) < 0)
			return;
	} else {
		char buf[64];
		int len = snprintf(buf, sizeof(buf), "%u:%u:0%o",
				   (unsigned)st.st_uid, (unsigned)st.st_gid,
				   (unsigned)st.st_mode);

		if (fsetxattr(w->upperfd, WH_OVERRIDE_STAT, buf, (size_t)len,
			      0) < 0)
			return;
	}
	futimens(w->upperfd, ts);
}

/* Say what a user who can reach the upper directory could do, and
 * decide what follows from it (device nodes, see copyup.c). */
static void check_trust(struct wfs *w, const struct stat *ust)
{
	struct statvfs vfs;

	w->marks_uid = ust->st_uid;
	w->upper_shared = reachable_by_others(w->upper_path);
	w->upper_nodev = fstatvfs(w->upperfd, &vfs) == 0 &&
			 (vfs.f_flag & ST_NODEV);
	if (w->upper_shared && w->root_daemon)
		strata_warn("upper directory %s can be reached by "
			    "other users: whoever owns a directory in it can "
			    "change it behind the mount; keep it inside a "
			    "directory only root can search (stratafs(1), "
			    "TRUST)", w->upper_path);
	if (w->root_daemon && !w->priv_xattr)
		strata_warn("%s cannot hold trusted.* xattrs: the "
			    "overlay marks in user.* xattrs are believed, and "
			    "anyone who can write in it can set them",
			    w->upper_path);
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int wfs_init(struct wfs *w, struct lower *lw, const char *upper,
	     const char *work, const struct wfs_claim *claim)
{
	char defwork[PATH_MAX], tmp[64];
	struct stat ust, wst;
	bool created;
	int wd, r;

	w->lw = lw;
	w->upperfd = -1;
	w->workfd = -1;
	w->root_daemon = geteuid() == 0;
	pthread_rwlockattr_t ra;

	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->dfd_lock, NULL);
	/* a waiting freeze must not starve behind a stream of writes */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra,
		PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&w->freeze, &ra);
	pthread_rwlockattr_destroy(&ra);
	w->hash_size = 1024;
	w->hash = calloc(w->hash_size, sizeof(*w->hash));
	w->root = calloc(1, sizeof(*w->root));
	if (!w->hash || !w->root || !(w->root->name = strdup("")))
		return -ENOMEM;
	w->root->type = S_IFDIR;
	w->root->ino = FUSE_ROOT_ID;
	w->root->lower = lw->ops->root(lw);
	if (!upper)
		return 0;
	w->mountpoint = dup_or_null(claim->mountpoint);
	w->base_manifest = dup_or_null(claim->manifest);
	w->base_ref = dup_or_null(claim->manifest ? claim->ref : NULL);
	if (!w->mountpoint || (claim->manifest && !w->base_ref))
		return -ENOMEM;

	created = stat(upper, &ust) < 0 && errno == ENOENT;
	r = mkdir_p(upper, 0755);
	if (r < 0)
		return fail("cannot create upper directory", upper, -r);
	w->upperfd = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			  O_CLOEXEC);
	if (w->upperfd < 0)
		return fail(errno == ELOOP || errno == ENOTDIR
			    ? "refusing upper directory (a symlink or not a "
			      "directory)" : "cannot open upper directory",
			    upper, errno);
	w->upper_path = realpath(upper, NULL);
	r = wfs_claim_lock(w, w->upperfd, true);
	if (r < 0)
		return r;
	if (created)
		root_attrs(w);
	if (!work) {
		char copy[PATH_MAX], copy2[PATH_MAX];

		snprintf(copy, sizeof(copy), "%s", upper);
		snprintf(copy2, sizeof(copy2), "%s", upper);
		snprintf(defwork, sizeof(defwork), "%s/.%s.work",
			 dirname(copy), basename(copy2));
		work = defwork;
	}
	r = mkdir_p(work, 0700);
	if (r < 0)
		return fail("cannot create work directory", work, -r);
	w->work_path = realpath(work, NULL);
	wd = open_own_dir("work directory", work);
	if (wd < 0)
		return wd;
	if (fstat(w->upperfd, &ust) < 0 || fstat(wd, &wst) < 0 ||
	    ust.st_dev != wst.st_dev) {
		close(wd);
		fprintf(stderr, "stratafs: work directory %s must be on the "
			"same filesystem as upper directory %s\n", work, upper);
		return -EXDEV;
	}
	if (ust.st_ino == wst.st_ino) {
		close(wd);
		fprintf(stderr, "stratafs: work directory and upper directory "
			"must differ\n");
		return -EINVAL;
	}
	/* WORK/work: a crashed copy-up left only a temporary here, which
	 * nothing trusts; start empty */
	if (mkdirat(wd, "work", 0700) < 0 && errno != EEXIST) {
		r = errno;
		close(wd);
		return fail("cannot create", "WORKDIR/work", r);
	}
	w->workfd = openat(wd, "work", O_RDONLY | O_DIRECTORY | O_CLOEXEC |
			   O_NOFOLLOW);
	close(wd);
	if (w->workfd < 0)
		return fail("cannot open work directory", work, errno);
	/* before emptying it: it may be another mount's */
	r = wfs_claim_lock(w, w->workfd, false);
	if (r < 0)
		return r;
	empty_dir(w->workfd);

	/* what may this process write? */
	snprintf(tmp, sizeof(tmp), "#probe.%d", (int)getpid());
	if (mknodat(w->workfd, tmp, S_IFCHR, makedev(0, 0)) == 0) {
		w->priv_wh = true;
		unlinkat(w->workfd, tmp, 0);
	}
	if (mkdirat(w->workfd, tmp, 0700) == 0) {
		char p[PATH_MAX];

		snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", w->workfd, tmp);
		w->priv_xattr = lsetxattr(p, "trusted.overlay.probe", "y", 1,
					  0) == 0;
		unlinkat(w->workfd, tmp, AT_REMOVEDIR);
	}
	if (!w->root_daemon)
		w->override = true;
	check_trust(w, &ust);
	r = wfs_claim_base(w, claim->rebase);
	if (r < 0)
		return r;
	w->root->upper = true;
	{
		char v = 0;

		w->root->opaque =
			(fgetxattr(w->upperfd, WH_OPAQUE_TRUSTED, &v, 1) == 1 &&
			 v == 'y') ||
			(wfs_user_marks(w, ust.st_uid) &&
			 fgetxattr(w->upperfd, WH_OPAQUE_USER, &v, 1) == 1 &&
			 v == 'y');
	}
	if (w->root->opaque) {
		lw->ops->put(lw, w->root->lower);
		w->root->lower = NULL;
	}
	return 0;
}

void wfs_destroy(struct wfs *w)
{
	size_t i;

	if (w->hash) {
		for (i = 0; i < w->hash_size; i++) {
			struct wnode *n = w->hash[i], *next;

			for (; n; n = next) {
				next = n->hnext;
				if (n->lower)
					w->lw->ops->put(w->lw, n->lower);
				free(n->name);
				free(n);
			}
		}
		free(w->hash);
	}
	free(w->ihash);
	wn_dirfd_forget(w, NULL);
	wfs_claim_release(w);
	if (w->root) {
		free(w->root->name);
		free(w->root);
	}
	if (w->upperfd >= 0)
		close(w->upperfd);
	if (w->workfd >= 0)
		close(w->workfd);
	free(w->upper_path);
	free(w->work_path);
	free(w->mountpoint);
	free(w->base_manifest);
	free(w->base_ref);
	pthread_mutex_destroy(&w->lock);
	pthread_rwlock_destroy(&w->freeze);
}

/* Path of @n from the root ("" for the root), or -ENOENT if detached. */
static int path_of(struct wfs *w, struct wnode *n, char *buf, size_t size)
{
	size_t len = 0, l;
	struct wnode *c;
	char *p;

	for (c = n; c != w->root; c = c->parent) {
		if (!c || c->deleted)
			return -ENOENT;
		len += strlen(c->name) + 1;
	}
	if (len + 1 > size)
		return -ENAMETOOLONG;
	p = buf + len;
	*p = '\0';
	for (c = n; c != w->root; c = c->parent) {
		l = strlen(c->name);
		p -= l;
		memcpy(p, c->name, l);
		*--p = '/';
	}
	return 0;
}

static int walk(struct lower *lw, const char *path, struct lnode **out)
{
	char buf[PATH_MAX], *save = NULL, *comp;
	struct lnode *cur = lw->ops->root(lw), *next;
	int r;

	lw->ops->get(cur);
	snprintf(buf, sizeof(buf), "%s", path);
	for (comp = strtok_r(buf, "/", &save); comp;
	     comp = strtok_r(NULL, "/", &save)) {
		r = lw->ops->lookup(lw, cur, comp, &next);
		lw->ops->put(lw, cur);
		if (r < 0)
			return r;
		cur = next;
	}
	*out = cur;
	return 0;
}

int wfs_continue(struct wfs *w, struct lower *lw, struct strata_err *err)
{
	struct lower *old = w->lw;
	char trash[64], path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int fd, tfd, r = 0;
	size_t i;

	if (w->upperfd < 0)
		return strata_err_set(err, -EINVAL, "mount is read-only");
	pthread_mutex_lock(&w->lock);
	wn_dirfd_forget(w, NULL);	/* the directories are going away */
	/* 1. the upper content is in the image now: move it aside */
	snprintf(trash, sizeof(trash), "#committed.%llu",
		 (unsigned long long)++w->tmp_seq);
	if (mkdirat(w->workfd, trash, 0700) < 0) {
		r = strata_err_set(err, -errno, "work directory: %s",
				   strerror(errno));
		goto out;
	}
	tfd = openat(w->workfd, trash, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fd = openat(w->upperfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	while (d && tfd >= 0 && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (renameat(w->upperfd, de->d_name, tfd, de->d_name) < 0) {
			r = strata_err_set(err, -errno, "emptying the upper "
					   "directory: %s", strerror(errno));
			break;
		}
	}
	if (d)
		closedir(d);
	else if (fd >= 0)
		close(fd);
	fremovexattr(w->upperfd, "trusted.overlay.opaque");
	fremovexattr(w->upperfd, "user.overlay.opaque");
	fremovexattr(w->upperfd, WH_OVERRIDE_STAT);
	if (r < 0) {
		if (tfd >= 0)
			close(tfd);
		goto out;
	}
	/* 2. every node from the new lower stack, same inode numbers */
	for (i = 0; i < w->hash_size; i++) {
		struct wnode *n, *next;

		for (n = w->hash[i]; n; n = next) {
			struct lnode *l = NULL;

			next = n->hnext;
			if (n->lower)
				old->ops->put(old, n->lower);
			n->lower = NULL;
			n->upper = n->opaque = n->metacopy = false;
			if (path_of(w, n, path, sizeof(path)) == 0 &&
			    walk(lw, path, &l) == 0) {
				n->lower = l;
			} else {
				/* left out of the commit (masked): gone */
				n->deleted = true;
			}
		}
	}
	for (i = 0; i < w->hash_size; i++) {
		struct wnode **pp = &w->hash[i];

		while (*pp) {
			if ((*pp)->deleted) {
				(*pp)->hashed = false;
				*pp = (*pp)->hnext;
				w->n_nodes--;
			} else {
				pp = &(*pp)->hnext;
			}
		}
	}
	old->ops->put(old, w->root->lower);
	w->root->lower = lw->ops->root(lw);
	w->root->opaque = false;
	w->lw = lw;
	w->gen++;
	pthread_mutex_unlock(&w->lock);
	/* 3. the old upper content goes (outside the lock: may be big) */
	empty_dir(tfd);
	close(tfd);
	unlinkat(w->workfd, trash, AT_REMOVEDIR);
	return 0;
out:
	pthread_mutex_unlock(&w->lock);
	return r;
}
