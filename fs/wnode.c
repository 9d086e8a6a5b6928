/* SPDX-License-Identifier: Apache-2.0 */
/* Writable mounts: the node table, name resolution and attributes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "whiteout.h"
#include "wfs.h"

#define UPPER_INO_BIT (1ull << 63)

struct wnode *wn_get(struct wfs *w, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? w->root : (struct wnode *)(uintptr_t)ino;
}

fuse_ino_t wn_id(struct wfs *w, struct wnode *n)
{
	return n == w->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static size_t hash_of(const struct wnode *p, const char *name, size_t size)
{
	uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ull;
	return (size_t)(h ^ (h >> 29)) & (size - 1);
}

struct wnode *wn_find(struct wfs *w, struct wnode *p, const char *name)
{
	struct wnode *n;

	for (n = w->hash[hash_of(p, name, w->hash_size)]; n; n = n->hnext)
		if (n->parent == p && !strcmp(n->name, name))
			return n;
	return NULL;
}

static void grow(struct wfs *w)
{
	size_t size = w->hash_size * 2, i;
	struct wnode **h = calloc(size, sizeof(*h));

	if (!h)
		return;		/* longer chains, still correct */
	for (i = 0; i < w->hash_size; i++) {
		struct wnode *n = w->hash[i], *next;

		for (; n; n = next) {
			size_t b = hash_of(n->parent, n->name, size);

			next = n->hnext;
			n->hnext = h[b];
			h[b] = n;
		}
	}
	free(w->hash);
	w->hash = h;
	w->hash_size = size;
}

void wn_hash_add(struct wfs *w, struct wnode *n)
{
	size_t b = hash_of(n->parent, n->name, w->hash_size);

	n->hnext = w->hash[b];
	w->hash[b] = n;
	n->hashed = true;
	if (++w->n_nodes > w->hash_size)
		grow(w);
}

#define IHASH_SIZE (1u << 14)

static size_t ihash_of(uint64_t ino)
{
	return (size_t)((ino * 0x9e3779b97f4a7c15ull) >> 50) &
	       (IHASH_SIZE - 1);
}

static void ihash_del(struct wfs *w, struct wnode *n)
{
	struct wnode **pp;

	if (!n->ihashed)
		return;
	for (pp = &w->ihash[ihash_of(n->ino)]; *pp; pp = &(*pp)->inext) {
		if (*pp == n) {
			*pp = n->inext;
			break;
		}
	}
	n->ihashed = false;
}

void wn_set_ino(struct wfs *w, struct wnode *n, uint64_t ino)
{
	ihash_del(w, n);
	n->ino = ino;
	if (S_ISDIR(n->type) || n == w->root)
		return;
	if (!w->ihash) {
		w->ihash = calloc(IHASH_SIZE, sizeof(*w->ihash));
		if (!w->ihash)
			return;		/* no peer invalidation */
	}
	n->inext = w->ihash[ihash_of(ino)];
	w->ihash[ihash_of(ino)] = n;
	n->ihashed = true;
}

size_t wn_peers(struct wfs *w, struct wnode *n, fuse_ino_t *ids, size_t max)
{
	struct wnode *c;
	size_t k = 0;

	if (!n->ihashed)
		return 0;
	for (c = w->ihash[ihash_of(n->ino)]; c && k < max; c = c->inext)
		if (c != n && c->ino == n->ino && c->nlookup)
			ids[k++] = wn_id(w, c);
	return k;
}

void wn_data_filled(struct wfs *w, struct wnode *n)
{
	struct wnode *c;

	n->metacopy = false;
	if (!n->ihashed)
		return;
	for (c = w->ihash[ihash_of(n->ino)]; c; c = c->inext)
		if (c->ino == n->ino)
			c->metacopy = false;
}

void wfs_inval(struct wfs *w, const fuse_ino_t *ids, size_t n)
{
	size_t i;

	for (i = 0; i < n && w->se; i++)
		fuse_lowlevel_notify_inval_inode(w->se, ids[i], 0, 0);
}

void wn_hash_del(struct wfs *w, struct wnode *n)
{
	struct wnode **pp;

	if (!n->hashed)
		return;
	for (pp = &w->hash[hash_of(n->parent, n->name, w->hash_size)]; *pp;
	     pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			w->n_nodes--;
			break;
		}
	}
	n->hashed = false;
}

void wn_ref(struct wnode *n)
{
	n->refs++;
}

static void wn_free(struct wfs *w, struct wnode *n)
{
	while (n && n != w->root && !n->nlookup && !n->refs) {
		struct wnode *p = n->parent;

		wn_hash_del(w, n);
		ihash_del(w, n);
		if (S_ISDIR(n->type))
			wn_dirfd_forget(w, n);
		if (n->lower)
			w->lw->ops->put(w->lw, n->lower);
		if (n->orphan_fd > 0)
			close(n->orphan_fd);
		free(n->name);
		free(n);
		if (!p)
			break;
		p->refs--;
		n = p;
	}
}

void wn_unref(struct wfs *w, struct wnode *n)
{
	n->refs--;
	wn_free(w, n);
}

void wn_forget(struct wfs *w, struct wnode *n, uint64_t nlookup)
{
	if (n == w->root)
		return;
	n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
	wn_free(w, n);
}

struct wnode *wn_new(struct wfs *w, struct wnode *p, const char *name)
{
	struct wnode *n = calloc(1, sizeof(*n));

	(void)w;
	if (!n || !(n->name = strdup(name))) {
		free(n);
		return NULL;
	}
	n->parent = p;
	p->refs++;
	return n;
}

int wn_move(struct wfs *w, struct wnode *n, struct wnode *np,
	    const char *name)
{
	char *nm = strdup(name);
	struct wnode *old = n->parent;

	if (!nm)
		return -ENOMEM;
	wn_hash_del(w, n);
	free(n->name);
	n->name = nm;
	np->refs++;
	n->parent = np;
	if (!n->deleted)
		wn_hash_add(w, n);
	old->refs--;
	wn_free(w, old);
	return 0;
}

static size_t dfd_slot(const struct wnode *n)
{
	uint64_t h = (uint64_t)(uintptr_t)n * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 56) % WFS_DFD_SLOTS;
}

static void dfd_drop(struct wfs *w, size_t i)
{
	if (w->dfd[i].n) {
		close(w->dfd[i].fd);
		w->dfd[i].n = NULL;
	}
}

void wn_dirfd_forget(struct wfs *w, struct wnode *n)
{
	size_t i;

	pthread_mutex_lock(&w->dfd_lock);
	if (n && w->dfd[dfd_slot(n)].n == n)
		dfd_drop(w, dfd_slot(n));
	for (i = 0; !n && i < WFS_DFD_SLOTS; i++)
		dfd_drop(w, i);
	pthread_mutex_unlock(&w->dfd_lock);
}

/* A duplicate of the kept fd of @d's upper directory, or -1. */
static int dfd_cached(struct wfs *w, struct wnode *d)
{
	size_t slot = dfd_slot(d);
	int fd = -1;

	pthread_mutex_lock(&w->dfd_lock);
	if (w->dfd[slot].n == d)
		fd = fcntl(w->dfd[slot].fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&w->dfd_lock);
	return fd;
}

/* Directory @name in @pfd: one name, never through a symlink. */
static int open_step(int pfd, const char *name)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, pfd, name, &how, sizeof(how));

	if (fd < 0)
		return errno == ELOOP || errno == EXDEV ? -EIO : -errno;
	return (int)fd;
}

/*
 * An O_PATH fd of @d's upper directory, for *at() calls (the caller
 * closes it). The directory is reached from the nearest ancestor whose fd
 * is kept (else the upper root) one name at a time, never following a
 * symlink, so its depth has no limit (PATH_MAX bounds one path, not a
 * tree). Its fd is kept (a rename moves the directory, not the fd's
 * target) and duplicated for later calls, until the node goes.
 */
int wn_upper_dirfd(struct wfs *w, struct wnode *d)
{
	struct wnode *c, **chain = NULL;
	size_t depth = 0, i;
	int fd = -1, next, keep;

	if (w->upperfd < 0 || !d->upper || d->deleted)
		return -ENOENT;
	if (d == w->root) {
		fd = openat(w->upperfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		return fd < 0 ? -errno : fd;
	}
	fd = dfd_cached(w, d);
	if (fd >= 0)
		return fd;
	/* the names from the nearest kept ancestor down to @d */
	for (c = d; c != w->root; c = c->parent) {
		if (!c || c->deleted)
			return -ENOENT;
		if (c != d && (fd = dfd_cached(w, c)) >= 0)
			break;
		depth++;
	}
	chain = malloc(depth * sizeof(*chain));
	if (!chain) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	for (c = d, i = depth; i > 0; c = c->parent)
		chain[--i] = c;
	if (fd < 0)
		fd = openat(w->upperfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		free(chain);
		return -errno;
	}
	for (i = 0; i < depth; i++) {
		next = open_step(fd, chain[i]->name);
		close(fd);
		fd = next;
		if (fd < 0)
			break;
	}
	free(chain);
	if (fd < 0)
		return fd;
	keep = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (keep >= 0) {
		size_t slot = dfd_slot(d);

		pthread_mutex_lock(&w->dfd_lock);
		dfd_drop(w, slot);
		w->dfd[slot].n = d;
		w->dfd[slot].fd = keep;
		pthread_mutex_unlock(&w->dfd_lock);
	}
	return fd;
}

int wfs_open_reg(int pfd, const char *name, int flags)
{
	struct stat st;
	int fd, r;

	fd = openat(pfd, name, (flags & ~(O_CREAT | O_EXCL | O_NOCTTY |
					  O_APPEND | O_DIRECTORY)) |
		    O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return errno == ELOOP ? -EIO : -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		strata_warn("upper entry %s is no longer a regular file: "
			    "changed outside the mount", name);
		return -EIO;
	}
	if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL,
					   fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int wn_upper_fd(struct wfs *w, struct wnode *n, struct stat *st)
{
	int pfd, fd, r;

	if (n == w->root) {
		fd = openat(w->upperfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	} else {
		pfd = wn_upper_dirfd(w, n->parent);
		if (pfd < 0)
			return pfd;
		fd = openat(pfd, n->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		close(pfd);
	}
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if ((st->st_mode & S_IFMT) != n->type) {
		close(fd);
		strata_warn("upper entry %s changed type outside the mount",
			    n->name);
		return -EIO;
	}
	return fd;
}

int wn_upper_lstat(struct wfs *w, struct wnode *n, struct stat *st, int *pfd)
{
	int fd, r;

	if (n == w->root) {
		if (pfd)
			*pfd = -1;
		return fstat(w->upperfd, st) < 0 ? -errno : 0;
	}
	fd = wn_upper_dirfd(w, n->parent);
	if (fd < 0)
		return fd;
	r = fstatat(fd, n->name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	if (pfd && r == 0)
		*pfd = fd;
	else
		close(fd);
	return r;
}

int wn_xattr_path(struct wfs *w, struct wnode *n, char *buf, size_t size,
		  int *pfd)
{
	int fd;

	if (n == w->root) {
		*pfd = -1;
		snprintf(buf, size, "/proc/self/fd/%d", w->upperfd);
		return 0;
	}
	fd = wn_upper_dirfd(w, n->parent);
	if (fd < 0)
		return fd;
	if ((size_t)snprintf(buf, size, "/proc/self/fd/%d/%s", fd, n->name) >=
	    size) {
		close(fd);
		return -ENAMETOOLONG;
	}
	*pfd = fd;
	return 0;
}

/*
 * What an upper non-directory says about itself, from one xattr listing:
 * *meta if it is a metacopy (data still below); and whether it is the
 * copy-up of the lower entry at its name (returned), which only a mark
 * says: stratafs's overlay.strata.ino (the inode number it shows, into
 * *ino) or the kernel overlay's overlay.origin. Unmarked, it was made in
 * the upper directory (over a whiteout, or renamed there) and is a file
 * of its own.
 */
static bool copyup_marks(struct wfs *w, int pfd, const char *name,
			 const struct stat *st, bool *meta, uint64_t *ino)
{
	static const char *const marks[] = {
		WH_METACOPY_TRUSTED, WH_METACOPY_USER, WH_INO_TRUSTED,
		WH_INO_USER, WH_ORIGIN_TRUSTED, WH_ORIGIN_USER,
	};
	char path[PATH_MAX], list[1024], buf[24], *p, *end;
	bool has[6] = { false };
	bool user = wfs_user_marks(w, st->st_uid);
	ssize_t len;
	size_t k;

	*meta = false;
	*ino = 0;
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", pfd, name);
	len = llistxattr(path, list, sizeof(list));
	if (len < 0 && errno == ERANGE) {	/* many xattrs: ask one by one */
		for (k = 0; k < 6; k++)
			has[k] = lgetxattr(path, marks[k], NULL, 0) >= 0;
	}
	for (p = list; len > 0 && p < list + len; p += strlen(p) + 1)
		for (k = 0; k < 6; k++)
			has[k] |= !strcmp(p, marks[k]);
	/* user.* marks are anyone's to set who can write the entry: see
	 * wfs_user_marks() */
	for (k = 1; !user && k < 6; k += 2)
		has[k] = false;
	*meta = has[0] || has[1];
	for (k = 2; k < 4; k++) {
		if (!has[k])
			continue;
		len = lgetxattr(path, marks[k], buf, sizeof(buf) - 1);
		if (len > 0) {
			buf[len] = '\0';
			*ino = strtoull(buf, &end, 10);
			if (*end)
				*ino = 0;
		}
		break;
	}
	return *meta || has[2] || has[3] || has[4] || has[5];
}

/* Walk @path ("/a/b" from the lower root, or "b" in @p's lower dir) in
 * the lower stack: what the kernel overlay's redirect_dir xattr names.
 * Only names inside the lower stack: "." and ".." are refused, so a
 * redirect can never leave it (the kernel overlay refuses them too). */
static int lower_walk(struct wfs *w, struct wnode *p, const char *path,
		      struct lnode **out)
{
	struct lower *lw = w->lw;
	struct lnode *cur, *next;
	char buf[PATH_MAX], *save = NULL, *comp;
	int r = 0;

	if (strlen(path) >= sizeof(buf))
		return -ENOENT;
	snprintf(buf, sizeof(buf), "%s", path);
	for (comp = strtok_r(buf, "/", &save); comp;
	     comp = strtok_r(NULL, "/", &save))
		if (!strcmp(comp, ".") || !strcmp(comp, ".."))
			return -ENOENT;
	if (path[0] == '/') {
		cur = lw->ops->root(lw);
	} else {
		if (!p->lower || p->opaque)
			return -ENOENT;
		cur = p->lower;
	}
	lw->ops->get(cur);
	snprintf(buf, sizeof(buf), "%s", path);
	save = NULL;
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

/* A kernel overlay records a renamed merged directory's origin in a
 * redirect xattr; follow it so its lower content stays visible. */
static int redirect_of(struct wfs *w, int pfd, const char *name,
		       const struct stat *st, char *buf, size_t size)
{
	char path[PATH_MAX];
	ssize_t len;

	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", pfd, name);
	len = lgetxattr(path, "trusted.overlay.redirect", buf, size - 1);
	if (len < 0 && wfs_user_marks(w, st->st_uid))
		len = lgetxattr(path, "user.overlay.redirect", buf, size - 1);
	if (len <= 0)
		return -ENODATA;
	buf[len] = '\0';
	return 0;
}

static bool same_kind(mode_t a, mode_t b)
{
	return (a & S_IFMT) == (b & S_IFMT);
}

int wn_resolve(struct wfs *w, struct wnode *p, const char *name,
	       struct wnode **out)
{
	return wn_resolve_wh(w, p, name, out, NULL);
}

int wn_resolve_wh(struct wfs *w, struct wnode *p, const char *name,
		  struct wnode **out, bool *whiteout)
{
	struct lnode *low = NULL;
	struct stat ust, lst;
	struct wnode *n;
	bool upper = false, opaque = false, meta = false, redirected = false;
	bool own = false;		/* upper non-dir, not a copy-up */
	uint64_t cu_ino = 0;		/* a copy-up's inode number */
	char redirect[PATH_MAX];
	int pfd = -1, r;

	if (whiteout)
		*whiteout = false;
	if (p->deleted || !S_ISDIR(p->type))
		return p->deleted ? -ENOENT : -ENOTDIR;
	n = wn_find(w, p, name);
	if (n) {
		*out = n;
		return 0;
	}
	if (!strncmp(name, WH_PREFIX, WH_PREFIX_LEN))
		return -ENOENT;	/* never visible: markers are not names */
	if (p->upper) {
		pfd = wn_upper_dirfd(w, p);
		if (pfd < 0)
			return pfd;
		if (fstatat(pfd, name, &ust, AT_SYMLINK_NOFOLLOW) == 0) {
			if (wh_is_whiteout_stat(&ust)) {
				close(pfd);
				if (whiteout)
					*whiteout = true;
				return -ENOENT;
			}
			upper = true;
			if (S_ISDIR(ust.st_mode))
				opaque = wfs_is_opaque(w, pfd, name);
			if (S_ISDIR(ust.st_mode) && !opaque &&
			    redirect_of(w, pfd, name, &ust, redirect,
					sizeof(redirect)) == 0)
				redirected = true;
			else if (!S_ISDIR(ust.st_mode))
				own = !copyup_marks(w, pfd, name, &ust, &meta,
						    &cu_ino);
			meta = meta && S_ISREG(ust.st_mode);
		} else if (errno != ENOENT) {
			r = -errno;
			close(pfd);
			return r;
		} else if (wfs_has_wh_file(pfd, name)) {
			close(pfd);
			if (whiteout)
				*whiteout = true;
			return -ENOENT;
		}
	}
	if (redirected || (p->lower && !p->opaque && !opaque && !own)) {
		r = redirected ? lower_walk(w, p, redirect, &low)
			       : w->lw->ops->lookup(w->lw, p->lower, name, &low);
		if (r < 0 && r != -ENOENT) {
			if (pfd >= 0)
				close(pfd);
			return r;
		}
		if (low) {
			w->lw->ops->stat(w->lw, low, &lst);
			if (upper && !same_kind(ust.st_mode, lst.st_mode)) {
				w->lw->ops->put(w->lw, low);
				low = NULL;
			}
		}
	}
	if (pfd >= 0)
		close(pfd);
	if (!upper && !low)
		return -ENOENT;
	if (meta && !low) {
		/* its data was below, and is not (an upper directory laid
		 * over another image, or a lower changed): the kernel
		 * overlay refuses the lookup too ("metacopy with no lower
		 * data found"), rather than show a file of zeros */
		strata_warn("upper directory %s: metacopy %s has no lower "
			    "file to take its data from", w->upper_path, name);
		return -EIO;
	}
	n = wn_new(w, p, name);
	if (!n) {
		if (low)
			w->lw->ops->put(w->lw, low);
		return -ENOMEM;
	}
	n->upper = upper;
	n->opaque = opaque;
	n->metacopy = meta && low;
	n->lower = low;
	n->type = (upper ? ust.st_mode : lst.st_mode) & S_IFMT;
	/* a copy-up (an upper non-directory is paired with a lower entry
	 * only if it is marked as one) keeps its lower inode number: its
	 * lower names were linked to it together, new links share it */
	if (cu_ino)
		wn_set_ino(w, n, cu_ino);
	else if (low)
		wn_set_ino(w, n, lst.st_ino);
	else
		wn_set_ino(w, n, ust.st_ino | UPPER_INO_BIT);
	wn_hash_add(w, n);
	*out = n;
	return 0;
}

int wfs_get_override(int pfd, const char *name, uid_t *uid, gid_t *gid,
		     mode_t *mode)
{
	char path[PATH_MAX], buf[64];
	unsigned int u, g, m;
	ssize_t len;

	if (pfd >= 0)
		snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", pfd, name);
	else
		snprintf(path, sizeof(path), "%s", name);
	len = lgetxattr(path, WH_OVERRIDE_STAT, buf, sizeof(buf) - 1);
	if (len <= 0)
		return -ENODATA;
	buf[len] = '\0';
	if (sscanf(buf, "%u:%u:%o", &u, &g, &m) != 3)
		return -EINVAL;
	*uid = u;
	*gid = g;
	*mode = m;
	return 0;
}

int wn_stat(struct wfs *w, struct wnode *n, struct stat *st)
{
	struct stat lst;
	int pfd = -1, r;

	if (!n->upper) {
		w->lw->ops->stat(w->lw, n->lower, st);
		st->st_ino = n->ino;
		return 0;
	}
	r = wn_upper_lstat(w, n, st, &pfd);
	if (r < 0)
		return r;
	/* only what this mount wrote: an entry another user made in the
	 * upper directory is theirs, whatever its xattr claims */
	if (w->override && (st->st_uid == w->marks_uid ||
			    (w->root_daemon && !w->priv_xattr))) {
		uid_t u;
		gid_t g;
		mode_t m;
		char proc[32];

		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", w->upperfd);
		if (wfs_get_override(pfd, n == w->root ? proc : n->name,
				     &u, &g, &m) == 0) {
			st->st_uid = u;
			st->st_gid = g;
			if (m & S_IFMT) {
				st->st_mode = m;
				if (S_ISCHR(m) || S_ISBLK(m))
					st->st_rdev = 0;
			} else {
				st->st_mode = (st->st_mode & S_IFMT) |
					      (m & 07777);
			}
		}
	}
	if (pfd >= 0)
		close(pfd);
	if (n->metacopy && n->lower) {
		w->lw->ops->stat(w->lw, n->lower, &lst);
		st->st_blocks = lst.st_blocks;
	}
	if (S_ISDIR(st->st_mode) && n->lower && !n->opaque)
		st->st_nlink = 1;	/* merged: unknown, like overlayfs */
	st->st_ino = n->ino;
	return 0;
}
