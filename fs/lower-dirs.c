/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The lower stack of a lowerdir= mount: plain directories, top first, as
 * the kernel overlay and fuse-overlayfs take them. A layer hides what lies
 * below a name with a whiteout (character device 0:0, or an empty `.wh.NAME`
 * file as in OCI layers) and hides a whole directory below with an opaque
 * marker (xattr trusted.overlay.opaque or user.overlay.opaque = "y", or a
 * `.wh..wh..opq` file). Lower directories are the user's own, so names are
 * resolved by path under each layer's directory fd; nothing here writes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "lower.h"
#include "whiteout.h"

struct lnode {
	atomic_int refs;
	char *path;		/* relative to each layer; "." for the root */
	uint32_t layer;		/* topmost layer holding it */
	uint32_t n_src;		/* directories: layers merged, top first */
	uint32_t *src;
	struct stat st;		/* of the topmost */
};

struct lower_dirs {
	struct lower base;
	int *fds;
	size_t n;
	struct lnode *root;
};

static struct lower_dirs *LD(struct lower *lw)
{
	return (struct lower_dirs *)lw;
}

static ino_t make_ino(uint32_t layer, ino_t ino)
{
	return ((ino_t)(layer + 1) << 48) ^ (ino & ((1ull << 48) - 1));
}

static char *join(const char *dir, const char *name)
{
	char *p;

	if (!strcmp(dir, "."))
		return strdup(name);
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

/* Is directory @path of layer fd @fd opaque? */
static bool dir_opaque(int fd, const char *path)
{
	char proc[64], *p, v;
	struct stat st;
	bool r = false;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d/", fd);
	if (asprintf(&p, "%s%s", proc, path) < 0)
		return false;
	if ((lgetxattr(p, WH_OPAQUE_TRUSTED, &v, 1) == 1 && v == 'y') ||
	    (lgetxattr(p, WH_OPAQUE_USER, &v, 1) == 1 && v == 'y'))
		r = true;
	free(p);
	if (!r) {
		p = join(path, WH_OPQ_FILE);
		r = p && fstatat(fd, p, &st, AT_SYMLINK_NOFOLLOW) == 0;
		free(p);
	}
	return r;
}

static bool has_wh_file(int fd, const char *dir, const char *name)
{
	struct stat st;
	char *wh, *p;
	bool r;

	if (asprintf(&wh, WH_PREFIX "%s", name) < 0)
		return false;
	p = join(dir, wh);
	free(wh);
	r = p && fstatat(fd, p, &st, AT_SYMLINK_NOFOLLOW) == 0;
	free(p);
	return r;
}

static struct lnode *ld_root(struct lower *lw)
{
	return LD(lw)->root;
}

static int ld_lookup(struct lower *lw, struct lnode *dir, const char *name,
		     struct lnode **out)
{
	struct lower_dirs *ld = LD(lw);
	struct lnode *n = NULL;
	struct stat st;
	char *path;
	uint32_t i;

	if (!dir->n_src)
		return -ENOTDIR;
	path = join(dir->path, name);
	if (!path)
		return -ENOMEM;
	for (i = 0; i < dir->n_src; i++) {
		uint32_t l = dir->src[i];
		int fd = ld->fds[l];

		if (fstatat(fd, n ? n->path : path, &st,
			    AT_SYMLINK_NOFOLLOW) < 0) {
			if (has_wh_file(fd, dir->path, name))
				break;
			continue;
		}
		if (wh_is_whiteout_stat(&st))
			break;
		if (!n) {
			n = calloc(1, sizeof(*n));
			if (!n)
				goto nomem;
			atomic_init(&n->refs, 1);
			n->path = path;
			path = NULL;
			n->layer = l;
			n->st = st;
			if (!S_ISDIR(st.st_mode))
				break;
		} else if (!S_ISDIR(st.st_mode)) {
			break;
		}
		{
			uint32_t *s = realloc(n->src, (n->n_src + 1) *
					      sizeof(*s));

			if (!s)
				goto nomem;
			n->src = s;
			n->src[n->n_src++] = l;
		}
		if (dir_opaque(fd, n->path))
			break;
	}
	free(path);
	if (!n)
		return -ENOENT;
	n->st.st_ino = make_ino(n->layer, n->st.st_ino);
	if (n->n_src > 1)
		n->st.st_nlink = 1;
	*out = n;
	return 0;
nomem:
	free(path);
	if (n) {
		free(n->path);
		free(n->src);
		free(n);
	}
	return -ENOMEM;
}

static void ld_stat(struct lower *lw, struct lnode *n, struct stat *st)
{
	(void)lw;
	*st = n->st;
}

struct dent {
	char *name;
	uint32_t layer;
	bool whiteout;
	mode_t type;
	ino_t ino;
};

static int dent_cmp(const void *a, const void *b)
{
	const struct dent *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	return (int)x->whiteout - (int)y->whiteout;
}

static mode_t dtype_mode(unsigned char t)
{
	switch (t) {
	case DT_DIR: return S_IFDIR;
	case DT_REG: return S_IFREG;
	case DT_LNK: return S_IFLNK;
	case DT_CHR: return S_IFCHR;
	case DT_BLK: return S_IFBLK;
	case DT_FIFO: return S_IFIFO;
	case DT_SOCK: return S_IFSOCK;
	default: return 0;
	}
}

static int ld_readdir(struct lower *lw, struct lnode *dir,
		      int (*fn)(void *, const char *, mode_t, ino_t),
		      void *ctx)
{
	struct lower_dirs *ld = LD(lw);
	struct dent *v = NULL;
	size_t n = 0, cap = 0, i;
	int r = 0;

	if (!dir->n_src)
		return -ENOTDIR;
	for (i = 0; i < dir->n_src; i++) {
		uint32_t l = dir->src[i];
		int dfd = openat(ld->fds[l], dir->path,
				 O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct dirent *de;
		DIR *d;

		if (dfd < 0)
			continue;
		d = fdopendir(dfd);
		if (!d) {
			close(dfd);
			continue;
		}
		while ((de = readdir(d))) {
			struct dent e = { .layer = l };
			struct stat st;
			const char *nm = de->d_name;

			if (!strcmp(nm, ".") || !strcmp(nm, "..") ||
			    !strcmp(nm, WH_OPQ_FILE))
				continue;
			e.type = dtype_mode(de->d_type);
			e.ino = make_ino(l, de->d_ino);
			if (!strncmp(nm, WH_PREFIX, WH_PREFIX_LEN)) {
				nm += WH_PREFIX_LEN;
				e.whiteout = true;
			} else if (e.type == S_IFCHR || !e.type) {
				if (fstatat(dirfd(d), nm, &st,
					    AT_SYMLINK_NOFOLLOW) < 0)
					continue;
				e.type = st.st_mode & S_IFMT;
				e.whiteout = wh_is_whiteout_stat(&st);
			}
			if (n == cap) {
				struct dent *nv;

				cap = cap ? cap * 2 : 64;
				nv = realloc(v, cap * sizeof(*v));
				if (!nv) {
					r = -ENOMEM;
					closedir(d);
					goto out;
				}
				v = nv;
			}
			e.name = strdup(nm);
			if (!e.name) {
				r = -ENOMEM;
				closedir(d);
				goto out;
			}
			v[n++] = e;
		}
		closedir(d);
	}
	if (n)
		qsort(v, n, sizeof(*v), dent_cmp);
	for (i = 0; i < n && !r; i++) {
		if (i && !strcmp(v[i].name, v[i - 1].name))
			continue;	/* hidden by an upper layer's entry */
		if (v[i].whiteout)
			continue;
		r = fn(ctx, v[i].name, v[i].type, v[i].ino);
	}
out:
	for (i = 0; i < n; i++)
		free(v[i].name);
	free(v);
	return r;
}

/* Never blocks on a fifo that took a file's place in a lower directory. */
static int ld_open(struct lower *lw, struct lnode *n)
{
	int fd = openat(LD(lw)->fds[n->layer], n->path,
			O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    fcntl(fd, F_SETFL, O_RDONLY) < 0) {
		close(fd);
		return -EIO;
	}
	return fd;
}

static ssize_t ld_readlink(struct lower *lw, struct lnode *n, char *buf,
			   size_t size)
{
	ssize_t r = readlinkat(LD(lw)->fds[n->layer], n->path, buf, size - 1);

	if (r < 0)
		return -errno;
	buf[r] = '\0';
	return r;
}

static char *proc_path(struct lower *lw, struct lnode *n)
{
	char *p;

	if (asprintf(&p, "/proc/self/fd/%d/%s", LD(lw)->fds[n->layer],
		     n->path) < 0)
		return NULL;
	return p;
}

static ssize_t ld_listxattr(struct lower *lw, struct lnode *n, char *buf,
			    size_t size)
{
	char *p = proc_path(lw, n), *all, *s;
	ssize_t len, total = 0;

	if (!p)
		return -ENOMEM;
	len = llistxattr(p, NULL, 0);
	if (len <= 0) {
		free(p);
		return len < 0 ? -errno : 0;
	}
	all = malloc((size_t)len);
	if (!all) {
		free(p);
		return -ENOMEM;
	}
	len = llistxattr(p, all, (size_t)len);
	free(p);
	for (s = all; len > 0 && s < all + len; s += strlen(s) + 1) {
		size_t l = strlen(s) + 1;

		if (wh_private_xattr(s))
			continue;
		if (size) {
			if ((size_t)total + l > size) {
				free(all);
				return -ERANGE;
			}
			memcpy(buf + total, s, l);
		}
		total += (ssize_t)l;
	}
	free(all);
	return len < 0 ? -errno : total;
}

static ssize_t ld_getxattr(struct lower *lw, struct lnode *n,
			   const char *name, void *buf, size_t size)
{
	char *p;
	ssize_t r;

	if (wh_private_xattr(name))
		return -ENODATA;
	p = proc_path(lw, n);
	if (!p)
		return -ENOMEM;
	r = lgetxattr(p, name, buf, size);
	free(p);
	return r < 0 ? -errno : r;
}

struct links_scan {
	dev_t dev;
	ino_t ino;		/* the real inode number in the layer */
	const char *self;
	nlink_t left;		/* other names still to find */
	char path[PATH_MAX];
	int (*fn)(void *, const char *);
	void *ctx;
};

static int scan_dir(struct links_scan *ls, int dfd, size_t len)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	int r = 0;

	if (!d) {
		close(dfd);
		return 0;
	}
	while (ls->left && (de = readdir(d))) {
		size_t l;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		l = len + (len ? 1 : 0) + strlen(de->d_name);
		if (l >= sizeof(ls->path))
			continue;
		if (len)
			ls->path[len] = '/';
		strcpy(ls->path + len + (len ? 1 : 0), de->d_name);
		if (de->d_type == DT_DIR) {
			int sub = openat(dirfd(d), de->d_name, O_RDONLY |
					 O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0)
				r = scan_dir(ls, sub, l);
		} else if (de->d_ino == ls->ino && strcmp(ls->path, ls->self)) {
			struct stat st;

			if (fstatat(dirfd(d), de->d_name, &st,
				    AT_SYMLINK_NOFOLLOW) == 0 &&
			    st.st_ino == ls->ino && st.st_dev == ls->dev) {
				ls->left--;
				r = ls->fn(ls->ctx, ls->path);
			}
		}
		ls->path[len] = '\0';
		if (r)
			break;
	}
	closedir(d);
	return r;
}

/* The other names of a hardlinked lower file: its layer directory is
 * scanned, stopping as soon as all of them are found. */
static int ld_links(struct lower *lw, struct lnode *n,
		    int (*fn)(void *, const char *), void *ctx)
{
	struct links_scan *ls;
	struct stat st;
	int dfd, r;

	if (n->n_src || S_ISDIR(n->st.st_mode) || n->st.st_nlink < 2)
		return 0;
	if (fstatat(LD(lw)->fds[n->layer], n->path, &st,
		    AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	ls = calloc(1, sizeof(*ls));
	if (!ls)
		return -ENOMEM;
	ls->dev = st.st_dev;
	ls->ino = st.st_ino;
	ls->self = n->path;
	ls->left = st.st_nlink - 1;
	ls->fn = fn;
	ls->ctx = ctx;
	dfd = openat(LD(lw)->fds[n->layer], ".", O_RDONLY | O_DIRECTORY |
		     O_CLOEXEC);
	r = dfd < 0 ? 0 : scan_dir(ls, dfd, 0);
	free(ls);
	return r < 0 ? r : 0;
}

static void ld_get(struct lnode *n)
{
	atomic_fetch_add(&n->refs, 1);
}

static void lnode_free(struct lnode *n)
{
	free(n->path);
	free(n->src);
	free(n);
}

static void ld_put(struct lower *lw, struct lnode *n)
{
	(void)lw;
	if (n && atomic_fetch_sub(&n->refs, 1) == 1)
		lnode_free(n);
}

static int ld_statfs_fd(struct lower *lw)
{
	return LD(lw)->fds[0];
}

static void ld_free(struct lower *lw)
{
	struct lower_dirs *ld = LD(lw);
	size_t i;

	for (i = 0; i < ld->n; i++)
		close(ld->fds[i]);
	if (ld->root)
		lnode_free(ld->root);
	free(ld->fds);
	free(ld);
}

static const struct lower_ops ld_ops = {
	.root = ld_root,
	.lookup = ld_lookup,
	.stat = ld_stat,
	.readdir = ld_readdir,
	.open = ld_open,
	.readlink = ld_readlink,
	.listxattr = ld_listxattr,
	.getxattr = ld_getxattr,
	.links = ld_links,
	.get = ld_get,
	.put = ld_put,
	.statfs_fd = ld_statfs_fd,
	.free = ld_free,
};

int lower_dirs_new(char **dirs, size_t n, struct lower **out)
{
	struct lower_dirs *ld = calloc(1, sizeof(*ld));
	struct lnode *root;
	size_t i;

	if (!ld)
		return -ENOMEM;
	ld->base.ops = &ld_ops;
	ld->fds = calloc(n, sizeof(int));
	root = calloc(1, sizeof(*root));
	if (!ld->fds || !root || !(root->path = strdup(".")) ||
	    !(root->src = calloc(n, sizeof(uint32_t)))) {
		free(ld->fds);
		if (root)
			free(root->path);
		free(root);
		free(ld);
		return -ENOMEM;
	}
	ld->root = root;
	atomic_init(&root->refs, 1);
	for (i = 0; i < n; i++)
		ld->fds[i] = -1;
	for (i = 0; i < n; i++) {
		ld->fds[i] = open(dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (ld->fds[i] < 0) {
			int e = errno;

			fprintf(stderr, "stratafs: lowerdir %s: %s\n", dirs[i],
				strerror(e));
			ld->n = i;
			ld_free(&ld->base);
			return -e;
		}
		ld ->n = i + 1;
		if (!root->n_src)
			fstat(ld->fds[i], &root->st);
		root->src[root->n_src++] = (uint32_t)i;
		if (dir_opaque(ld->fds[i], "."))
			break;
	}
	for (i = root->n_src; i < n; i++)
		ld->fds[i] = open(dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ld->n = n;
	root->st.st_ino = 1;
	*out = &ld->base;
	return 0;
}
