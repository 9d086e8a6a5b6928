/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE operation handlers. Each do_<op>() returns a negative errno or 0 and
 * the wrapper replies exactly once. Lower layers never change, so entries,
 * attributes, negative lookups, listings, symlinks and pages are handed to
 * the kernel with long timeouts and keep_cache/cache_readdir.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs.h"
#include "whiteout.h"

static struct fs *get_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static uint32_t map_id(const struct idmap *m, size_t n, bool squash,
		       uint32_t squash_to, uint32_t id)
{
	size_t i;

	if (squash)
		return squash_to;
	if (!n)
		return id;
	for (i = 0; i < n; i++)
		if (id >= m[i].from && id - m[i].from < m[i].count)
			return m[i].to + (id - m[i].from);
	return 65534;	/* the overflow id, as user namespaces show it */
}

void fs_fill_stat(struct fs *fs, fuse_ino_t ino, uint32_t layer,
		  const struct strata_lx_entry *e, uint32_t n_src,
		  struct stat *st)
{
	const struct strata_lindex *lx = fs->layers[layer].lx;
	uint32_t uid, gid;

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = e->mode;
	if (e->flags & STRATA_LX_IMPLIED)
		st->st_mode = S_IFDIR | 0755;
	if (e->flags & STRATA_LX_WHITEOUT) {	/* show_whiteouts only */
		st->st_mode = S_IFCHR;
		st->st_nlink = 1;
	}
	strata_lx_owner_of(lx, e, &uid, &gid);
	st->st_uid = map_id(fs->uidmap, fs->n_uidmap, fs->squash_uid,
			    fs->squash_uid_to, uid);
	st->st_gid = map_id(fs->gidmap, fs->n_gidmap, fs->squash_gid,
			    fs->squash_gid_to, gid);
	/* Like the kernel overlay: a directory merged from several layers
	 * reports nlink 1 ("unknown" to find), a single-layer one is exact. */
	if (e->flags & STRATA_LX_WHITEOUT)
		;
	else if (S_ISDIR(e->mode) && n_src > 1)
		st->st_nlink = 1;
	else
		st->st_nlink = strata_lx_nlink(lx, e);
	if (e->flags & STRATA_LX_WHITEOUT)
		;
	else if (S_ISDIR(e->mode))
		st->st_size = 4096;
	else if (S_ISREG(e->mode) || S_ISLNK(e->mode))
		st->st_size = (off_t)e->size;
	else if (S_ISCHR(e->mode) || S_ISBLK(e->mode))
		st->st_rdev = (dev_t)e->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((st->st_size + 511) / 512);
	st->st_mtim.tv_sec = strata_lx_mtime_sec(e);
	st->st_mtim.tv_nsec = strata_lx_mtime_nsec(e);
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void dir_stat(struct fs *fs, struct dnode *d, struct stat *st)
{
	const struct strata_lx_entry *e =
		fs_entry(fs, d->attr.layer, d->attr.entry);

	fs_fill_stat(fs, d->ino, d->attr.layer, e, d->n_src, st);
}

/* Resolve a non-directory inode number to its entry. */
static const struct strata_lx_entry *file_entry(struct fs *fs, fuse_ino_t ino,
						uint32_t *layer)
{
	uint64_t l = (ino >> 32);
	uint32_t i = (uint32_t)ino;

	if (l == 0 || l > fs->n_layers)
		return NULL;
	*layer = (uint32_t)(l - 1);
	return fs_entry(fs, *layer, i);
}

/* The entry whose number non-directory @e shows: its hardlink group's
 * leader; a whiteout (`b` of a whited-out directory counts children)
 * its own. */
static uint32_t file_leader(uint32_t entry, const struct strata_lx_entry *e)
{
	return (e->flags & STRATA_LX_WHITEOUT) ? entry : e->b;
}

/* Fill @ep for child @c of @parent, taking a lookup reference. */
static int make_entry(struct fs *fs, struct dnode *parent,
		      const struct fs_child *c, struct fuse_entry_param *ep)
{
	const struct strata_lx_entry *e = fs_entry(fs, c->layer, c->entry);

	memset(ep, 0, sizeof(*ep));
	ep->attr_timeout = fs->timeout;
	ep->entry_timeout = fs->timeout;
	if (fs_entry_isdir(e)) {
		struct dnode *d = fs_dnode_ref(fs, parent, c);

		if (!d)
			return -ENOMEM;
		ep->ino = d->ino;
		dir_stat(fs, d, &ep->attr);
	} else {
		ep->ino = fs_make_ino(c->layer, file_leader(c->entry, e));
		fs_fill_stat(fs, ep->ino, c->layer, e, 1, &ep->attr);
	}
	return 0;
}

static void unref_entry(struct fs *fs, const struct fuse_entry_param *ep)
{
	if (S_ISDIR(ep->attr.st_mode))
		fs_dnode_forget(fs, ep->ino, 1);
}

static int dir_of(struct fs *fs, fuse_ino_t ino, struct dnode **out)
{
	struct dnode *d = fs_dnode_get(fs, ino);
	int r;

	if (!d) {
		/* a directory not found again after a restart: stale */
		const struct strata_lx_entry *e =
			file_entry(fs, ino, &(uint32_t){ 0 });

		return e && !fs_entry_isdir(e) ? -ENOTDIR : -ESTALE;
	}
	r = fs_dir_merge(fs, d);
	if (r < 0)
		return r;
	*out = d;
	return 0;
}

static int do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *ep)
{
	struct fs *fs = get_fs(req);
	struct fs_child c;
	struct dnode *d;
	size_t len = strlen(name);
	int r;

	if (len > 255)
		return -ENAMETOOLONG;
	r = dir_of(fs, parent, &d);
	if (r < 0)
		return r;
	if (!fs_dir_find(fs, d, name, len, &c)) {
		/* cached negative entry: ino 0 with a timeout */
		memset(ep, 0, sizeof(*ep));
		ep->entry_timeout = fs->timeout;
		return 0;
	}
	return make_entry(fs, d, &c, ep);
}

static void fs_ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param ep;
	struct fs *fs = get_fs(req);	/* a reply frees @req */
	int r = do_lookup(req, parent, name, &ep);

	if (r < 0)
		fuse_reply_err(req, -r);
	else if (fuse_reply_entry(req, &ep) != 0 && ep.ino)
		unref_entry(fs, &ep);
}

static void fs_ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_dnode_forget(get_fs(req), ino, nlookup);
	fuse_reply_none(req);
}

static void fs_ll_forget_multi(fuse_req_t req, size_t count,
			       struct fuse_forget_data *forgets)
{
	size_t i;

	for (i = 0; i < count; i++)
		fs_dnode_forget(get_fs(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static int do_getattr(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	struct dnode *d = fs_dnode_get(fs, ino);
	const struct strata_lx_entry *e;
	uint32_t layer;

	if (d) {
		dir_stat(fs, d, st);
		if (ino == FUSE_ROOT_ID)
			st->st_ino = FUSE_ROOT_ID;
		return 0;
	}
	e = file_entry(fs, ino, &layer);
	if (!e || fs_entry_isdir(e))
		return -ESTALE;
	fs_fill_stat(fs, ino, layer, e, 1, st);
	return 0;
}

static void fs_ll_getattr(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *fs = get_fs(req);
	struct stat st;
	int r = do_getattr(fs, ino, &st);

	(void)fi;
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

static void fs_ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = get_fs(req);
	uint32_t layer;
	const struct strata_lx_entry *e = file_entry(fs, ino, &layer);

	if (!e || !S_ISLNK(e->mode)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_readlink(req, strata_lx_str(fs->layers[layer].lx, e->a));
}

/*
 * Read-only mounts answer open and opendir with ENOSYS: the kernel then
 * stops sending open/release/opendir/releasedir altogether and keeps page
 * and readdir caches (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR is its default
 * for no-open). Reads then arrive with fh 0 and find their content file
 * through a one-entry cache per FUSE thread: a sequential read of one file
 * opens it once.
 */
struct tcache {
	uint32_t layer, data_id;
	int fd;
};

static __thread struct tcache tcache = { .fd = -1 };

static int content_fd(struct fs *fs, uint32_t layer,
		      const struct strata_lx_entry *e)
{
	int fd;

	if (!e || !S_ISREG(e->mode))
		return -EBADF;
	if (!e->a)
		return -ENODATA;
	if (tcache.fd >= 0 && tcache.layer == layer && tcache.data_id == e->a)
		return tcache.fd;
	fd = strata_lx_content_open(fs->layers[layer].lx, e->a);
	if (fd < 0)
		return -EIO;
	if (tcache.fd >= 0)
		close(tcache.fd);
	tcache.fd = fd;
	tcache.layer = layer;
	tcache.data_id = e->a;
	return fd;
}

static void fs_ll_open(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = get_fs(req);
	uint32_t layer;
	const struct strata_lx_entry *e = file_entry(fs, ino, &layer);
	int fd = -1;

	if (fs->readonly && fs->no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (!e) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (S_ISREG(e->mode) && e->a) {
		fd = strata_lx_content_open(fs->layers[layer].lx, e->a);
		if (fd < 0) {
			fuse_reply_err(req, EIO);
			return;
		}
	}
	fi->fh = (uint64_t)(int64_t)fd;
	fi->keep_cache = 1;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) != 0 && fd >= 0)
		close(fd);
}

/*
 * Below two pages libfuse copies instead of splicing, into a buffer it
 * mallocs per request; from many threads those scatter over the heap and
 * keep it resident. A stack buffer does the same copy with no allocation.
 */
#define FS_COPY_READ_MAX 8192

void fs_reply_read(fuse_req_t req, int fd, size_t size, off_t off)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	if (size <= FS_COPY_READ_MAX) {
		char tmp[FS_COPY_READ_MAX];
		ssize_t n = pread(fd, tmp, size, off);

		if (n < 0)
			fuse_reply_err(req, errno);
		else
			fuse_reply_buf(req, tmp, (size_t)n);
		return;
	}
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void fs_ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = get_fs(req);
	int fd = (int)(int64_t)fi->fh;
	const struct strata_lx_entry *e;
	uint32_t layer = 0;

	/* Lower files never change size: ask for exactly what is there, so
	 * the splice is never short (libfuse answers a short one by reading
	 * the rest again into a buffer it allocates for the request). */
	e = file_entry(fs, ino, &layer);
	if (e && S_ISREG(e->mode)) {
		if (off < 0 || (uint64_t)off >= e->size) {
			fuse_reply_buf(req, NULL, 0);
			return;
		}
		if (size > e->size - (uint64_t)off)
			size = (size_t)(e->size - (uint64_t)off);
	}

	if (fs->no_open) {
		fd = content_fd(fs, layer, e);
		if (fd == -ENODATA) {
			fuse_reply_buf(req, NULL, 0);
			return;
		}
		if (fd < 0) {
			fuse_reply_err(req, -fd);
			return;
		}
	} else if (fd < 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	fs_reply_read(req, fd, size, off);
}

static void fs_ll_release(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	int fd = (int)(int64_t)fi->fh;

	(void)ino;
	if (fd >= 0)
		close(fd);
	fuse_reply_err(req, 0);
}

static void fs_ll_opendir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *fs = get_fs(req);
	struct dnode *d;
	int r;

	if (fs->readonly && fs->no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	r = dir_of(fs, ino, &d);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	fi->fh = 0;
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/*
 * Offsets: 1 after ".", 2 after "..", 2 + i + 1 after child i. The merged
 * array never changes, so an offset stays valid for telldir/seekdir and
 * across opendir calls.
 */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
		       off_t off, bool plus)
{
	struct fs *fs = get_fs(req);
	struct dnode *d;
	char *buf, *p;
	size_t rem = size;
	int r = dir_of(fs, ino, &d);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p = buf;
	for (; off < (off_t)d->n_children + 2; off++) {
		struct fuse_entry_param ep;
		const char *name;
		char tmp[256];
		size_t n;

		if (off < 2) {
			memset(&ep, 0, sizeof(ep));
			ep.attr.st_ino = ino;
			ep.attr.st_mode = S_IFDIR;
			name = off == 0 ? "." : "..";
		} else {
			const struct fs_child child =
				fs_dir_child(d, (uint32_t)(off - 2));
			const struct fs_child *c = &child;
			const struct strata_lx_entry *e =
				fs_entry(fs, c->layer, c->entry);

			memcpy(tmp, fs_name(fs, c->layer, e), e->name_len);
			tmp[e->name_len] = '\0';
			name = tmp;
			if (plus) {
				if (make_entry(fs, d, c, &ep) < 0)
					break;
			} else {
				memset(&ep, 0, sizeof(ep));
				ep.attr.st_ino = fs_entry_isdir(e)
					? fs_make_ino(c->layer, c->entry)
					: fs_make_ino(c->layer,
						      file_leader(c->entry, e));
				ep.attr.st_mode = fs_entry_mode(e);
			}
		}
		if (plus)
			n = fuse_add_direntry_plus(req, p, rem, name, &ep,
						   off + 1);
		else
			n = fuse_add_direntry(req, p, rem, name, &ep.attr,
					      off + 1);
		if (n > rem) {
			if (plus && off >= 2)
				unref_entry(fs, &ep);
			break;
		}
		p += n;
		rem -= n;
	}
	fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

static void fs_ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void fs_ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			      off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static void fs_ll_releasedir(fuse_req_t req, fuse_ino_t ino,
			     struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void fs_ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = get_fs(req);
	struct statvfs sv;

	(void)ino;
	if (fstatvfs(fs->statfs_fd, &sv) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	sv.f_files = fs->total_entries;
	sv.f_ffree = 0;
	sv.f_favail = 0;
	sv.f_bfree = 0;
	sv.f_bavail = 0;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* Walk an entry's xattr records: u16 name_len, u32 value_len, name, value. */
const uint8_t *fs_xattr_next(const uint8_t *p, const uint8_t *end,
			     const char **name, size_t *nlen,
			     const void **val, size_t *vlen)
{
	if (end - p < 6)
		return NULL;
	*nlen = (size_t)p[0] | (size_t)p[1] << 8;
	*vlen = (size_t)p[2] | (size_t)p[3] << 8 | (size_t)p[4] << 16 |
		(size_t)p[5] << 24;
	if ((size_t)(end - p) - 6 < *nlen + *vlen)
		return NULL;
	*name = (const char *)p + 6;
	*val = p + 6 + *nlen;
	return p + 6 + *nlen + *vlen;
}

/* Xattr records of inode @ino; NULL with *len 0 if none, -ESTALE in *err. */
static const uint8_t *xattrs_of(struct fs *fs, fuse_ino_t ino, size_t *len,
				int *err)
{
	struct dnode *d = fs_dnode_get(fs, ino);
	uint32_t layer, entry;
	const uint8_t *p;

	*len = 0;
	*err = 0;
	if (d) {
		layer = d->attr.layer;
		entry = d->attr.entry;
	} else if (file_entry(fs, ino, &layer)) {
		entry = (uint32_t)ino;
	} else {
		*err = -ESTALE;
		return NULL;
	}
	p = strata_lx_xattrs(fs->layers[layer].lx, entry, len);
	if (!p)
		*len = 0;
	return p;
}

/*
 * With show_whiteouts, the names of the overlay opaque mark that
 * directory @ino carries (NUL-separated, like listxattr(2)): "y" in
 * user.overlay.opaque, and in trusted.overlay.opaque too for a daemon
 * running as root (the kernel overlay's own, which only root reads).
 * Return: their length, 0 if none.
 */
static size_t opaque_names(struct fs *fs, fuse_ino_t ino, const char **names)
{
	static const char both[] = WH_OPAQUE_TRUSTED "\0" WH_OPAQUE_USER;
	struct dnode *d;

	if (!fs->show_whiteouts)
		return 0;
	d = fs_dnode_get(fs, ino);
	if (!d || !(fs_entry(fs, d->attr.layer, d->attr.entry)->flags &
		    STRATA_LX_OPAQUE))
		return 0;
	if (geteuid() == 0) {
		*names = both;
		return sizeof(both);
	}
	*names = WH_OPAQUE_USER;
	return sizeof(WH_OPAQUE_USER);
}

/* Answer getxattr @name of @ino from the opaque mark. Return: answered. */
static bool opaque_getxattr(fuse_req_t req, struct fs *fs, fuse_ino_t ino,
			    const char *name, size_t size)
{
	const char *names = NULL, *p;
	size_t len = opaque_names(fs, ino, &names);

	for (p = names; p && p < names + len; p += strlen(p) + 1) {
		if (strcmp(p, name))
			continue;
		if (size == 0)
			fuse_reply_xattr(req, 1);
		else
			fuse_reply_buf(req, "y", 1);
		return true;
	}
	return false;
}

static void fs_ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			   size_t size)
{
	struct fs *fs = get_fs(req);
	const uint8_t *p, *end;
	size_t want = strlen(name), xlen;
	int err;

	p = xattrs_of(fs, ino, &xlen, &err);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	if (opaque_getxattr(req, fs, ino, name, size))
		return;
	/* No layer has ACLs or SELinux labels: say the fs has no such
	 * support, which ls(1) remembers per device instead of asking
	 * about every file (two round trips per file saved). */
	if ((!(fs->features & STRATA_LX_HAS_ACL) &&
	     !strncmp(name, "system.posix_acl_", 17)) ||
	    (!(fs->features & STRATA_LX_HAS_SELINUX) &&
	     !strcmp(name, "security.selinux"))) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	end = p ? p + xlen : NULL;
	while (p) {
		const char *n;
		const void *v;
		size_t nlen, vlen;

		p = fs_xattr_next(p, end, &n, &nlen, &v, &vlen);
		if (!p)
			break;
		if (nlen != want || memcmp(n, name, nlen))
			continue;
		if (size == 0)
			fuse_reply_xattr(req, vlen);
		else if (size < vlen)
			fuse_reply_err(req, ERANGE);
		else
			fuse_reply_buf(req, v, vlen);
		return;
	}
	fuse_reply_err(req, ENODATA);
}

static void fs_ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = get_fs(req);
	const uint8_t *p, *end;
	const char *opq = NULL;
	char *buf = NULL;
	size_t total = 0, xlen, olen;
	int err;

	p = xattrs_of(fs, ino, &xlen, &err);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	olen = opaque_names(fs, ino, &opq);
	end = p ? p + xlen : NULL;
	if (size && (p || olen)) {
		buf = malloc(xlen + olen);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	if (olen) {
		if (buf)
			memcpy(buf, opq, olen);
		total = olen;
	}
	while (p) {
		const char *n;
		const void *v;
		size_t nlen, vlen;

		p = fs_xattr_next(p, end, &n, &nlen, &v, &vlen);
		if (!p)
			break;
		if (buf) {
			memcpy(buf + total, n, nlen);
			buf[total + nlen] = '\0';
		}
		total += nlen + 1;
	}
	if (size == 0)
		fuse_reply_xattr(req, total);
	else if (size < total)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, total);
	free(buf);
}

static void fs_ll_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	(void)ino;
	fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* Everything that would change the tree: the mount is read-only. */
static void erofs(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

static void fs_ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *a,
			  int to_set, struct fuse_file_info *fi)
{
	(void)ino, (void)a, (void)to_set, (void)fi;
	erofs(req);
}

static void fs_ll_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
			dev_t r)
{
	(void)p, (void)n, (void)m, (void)r;
	erofs(req);
}

static void fs_ll_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m)
{
	(void)p, (void)n, (void)m;
	erofs(req);
}

static void fs_ll_unlink(fuse_req_t req, fuse_ino_t p, const char *n)
{
	(void)p, (void)n;
	erofs(req);
}

static void fs_ll_symlink(fuse_req_t req, const char *l, fuse_ino_t p,
			  const char *n)
{
	(void)l, (void)p, (void)n;
	erofs(req);
}

static void fs_ll_rename(fuse_req_t req, fuse_ino_t p, const char *n,
			 fuse_ino_t np, const char *nn, unsigned int f)
{
	(void)p, (void)n, (void)np, (void)nn, (void)f;
	erofs(req);
}

static void fs_ll_link(fuse_req_t req, fuse_ino_t i, fuse_ino_t p,
		       const char *n)
{
	(void)i, (void)p, (void)n;
	erofs(req);
}

static void fs_ll_create(fuse_req_t req, fuse_ino_t p, const char *n,
			 mode_t m, struct fuse_file_info *fi)
{
	(void)p, (void)n, (void)m, (void)fi;
	erofs(req);
}

static void fs_ll_setxattr(fuse_req_t req, fuse_ino_t i, const char *n,
			   const char *v, size_t s, int f)
{
	(void)i, (void)n, (void)v, (void)s, (void)f;
	erofs(req);
}

static void fs_ll_removexattr(fuse_req_t req, fuse_ino_t i, const char *n)
{
	(void)i, (void)n;
	erofs(req);
}

static void fs_ll_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	if (fs->readonly && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) &&
	    (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT)) {
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT |
			      FUSE_CAP_NO_OPENDIR_SUPPORT;
		fs->no_open = true;
	}
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_SPLICE_MOVE)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_ll_init,
	.lookup = fs_ll_lookup,
	.forget = fs_ll_forget,
	.forget_multi = fs_ll_forget_multi,
	.getattr = fs_ll_getattr,
	.readlink = fs_ll_readlink,
	.open = fs_ll_open,
	.read = fs_ll_read,
	.release = fs_ll_release,
	.opendir = fs_ll_opendir,
	.readdir = fs_ll_readdir,
	.readdirplus = fs_ll_readdirplus,
	.releasedir = fs_ll_releasedir,
	.statfs = fs_ll_statfs,
	.getxattr = fs_ll_getxattr,
	.listxattr = fs_ll_listxattr,
	.access = fs_ll_access,
	.setattr = fs_ll_setattr,
	.mknod = fs_ll_mknod,
	.mkdir = fs_ll_mkdir,
	.unlink = fs_ll_unlink,
	.rmdir = fs_ll_unlink,
	.symlink = fs_ll_symlink,
	.rename = fs_ll_rename,
	.link = fs_ll_link,
	.create = fs_ll_create,
	.setxattr = fs_ll_setxattr,
	.removexattr = fs_ll_removexattr,
};
