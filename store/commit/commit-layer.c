/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The layer of a commit: a walk of the upper directory only (never the
 * image), written as an OCI changeset (layer.md; OCI-RULES.md §1.11):
 *
 *  - entries sorted bytewise, each directory before its children, and in a
 *    directory the opaque marker, then whiteouts, then the other entries
 *    ("whiteout files appear before sibling directory entries");
 *  - upper markers read in both forms: overlay (character device 0:0,
 *    {trusted,user}.overlay.opaque = "y") and .wh. files; written as
 *    .wh.NAME and .wh..wh..opq; a directory deleted and recreated is the
 *    only one that gets an opaque marker;
 *  - directories are written lazily, when something below them is, or when
 *    they are empty in the upper directory (a change of their own), so a
 *    change that lies wholly under a masked path leaves no trace;
 *  - metacopy files (trusted.overlay.metacopy) take their data from the
 *    image; a redirected directory (trusted.overlay.redirect, a renamed
 *    lower directory) is written in full, merged with the image below it;
 *    the whiteout of its old name is already in the upper directory;
 *  - hardlinks between upper names stay hardlinks (the first name in walk
 *    order carries the data); sockets are left out;
 *  - owners and modes from user.containers.override_stat when present; the
 *    overlay's own xattrs, override_stat and security.selinux are never
 *    copied (umoci's rule, oci/layer/xattr.go).
 *
 * In squash mode (commit --squash, export) the walk writes the merged tree
 * instead: the whole image from the layer indexes, with the upper
 * directory's entries (if any) in place of the image's and its deletions
 * left out, as the redirected-directory case does for one directory; no
 * markers. Masks then leave out changes only, never the image's content.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "commit.h"

#define OPQ ".wh..wh..opq"
#define WH ".wh."

struct meta {
	char type;
	uint32_t mode, uid, gid;
	uint64_t size;
	int64_t sec;
	uint32_t nsec;
	uint32_t maj, min;
	char *link;
	struct strata_tar_xattr *x;
	size_t nx;
	char *xbuf;
};

struct pend {
	char *path;
	struct meta m;
	bool written;
};

struct hl {
	uint64_t a, b;
	char *path;		/* NULL: free slot */
};

struct walk {
	const struct strata_layer_walk *o;
	struct strata_blobw *w;
	struct strata_err *err;
	struct strata_imgview *view;
	int view_err;
	char *path;			/* grows: no limit on depth */
	size_t plen, pcap;
	struct pend *pend;
	size_t n_pend, cap_pend;
	struct hl *hl;		/* open addressing, cap_hl a power of 2 */
	size_t n_hl, cap_hl;
	uint64_t entries;
	char *buf;
	uid_t marks_uid;	/* owner of the upper root: see user_marks() */
};

struct child {
	char *name;
	struct stat st;
	int kind;	/* K_* */
};

enum { K_NORMAL, K_WHITEOUT, K_OPQ };

static void meta_free(struct meta *m)
{
	free(m->link);
	free(m->x);
	free(m->xbuf);
	memset(m, 0, sizeof(*m));
}

/* ---- paths ---- */

static int path_push(struct walk *wk, const char *name, size_t *saved)
{
	size_t n = strlen(name);

	*saved = wk->plen;
	if (wk->plen + n + 2 > wk->pcap) {
		size_t cap = (wk->plen + n + 2) * 2;
		char *p = realloc(wk->path, cap);

		if (!p)
			return strata_err_set(wk->err, -ENOMEM,
					      "upper %s/%s: out of memory",
					      wk->path, name);
		wk->path = p;
		wk->pcap = cap;
	}
	if (wk->plen)
		wk->path[wk->plen++] = '/';
	memcpy(wk->path + wk->plen, name, n + 1);
	wk->plen += n;
	return 0;
}

static void path_pop(struct walk *wk, size_t saved)
{
	wk->plen = saved;
	wk->path[saved] = '\0';
}

static bool prefix_match(const char *path, const char *prefix)
{
	size_t n;

	while (*prefix == '/')
		prefix++;
	n = strlen(prefix);
	while (n && prefix[n - 1] == '/')
		n--;
	if (n == 0)
		return true;
	return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '/');
}

static bool masked(struct walk *wk)
{
	size_t i;

	for (i = 0; i < wk->o->n_mask; i++)
		if (prefix_match(wk->path, wk->o->mask[i]))
			return true;
	for (i = 0; wk->o->volumes && wk->o->volumes[i]; i++)
		if (prefix_match(wk->path, wk->o->volumes[i]))
			return true;
	return false;
}

/* Is the image's entry at wk->path left out? Masks leave out changes: in
 * a squash the image's own content stays. */
static bool masked_lower(struct walk *wk)
{
	return !wk->o->squash && masked(wk);
}

/* ---- the image below, opened on first need ---- */

static int view(struct walk *wk, struct strata_imgview **out)
{
	/* zstd:chunked layers lazily (as the mount has them): the new
	 * layer needs the indexes below and little content */
	const struct strata_unpack_opts uo = { .lazy = true };
	int r;

	if (!wk->view && !wk->view_err) {
		r = strata_cache_ensure(wk->o->st, wk->o->img, &uo, wk->err);
		if (r == 0)
			r = strata_imgview_open(wk->o->st, wk->o->img,
						&wk->view, wk->err);
		if (r < 0)
			wk->view_err = r;
	}
	*out = wk->view;
	return wk->view_err;
}

/* ---- xattrs and metadata of upper entries ---- */

bool strata_commit_xattr_skipped(const char *name)
{
	return !strncmp(name, "trusted.overlay.", 16) ||
	       !strncmp(name, "user.overlay.", 13) ||
	       !strncmp(name, "user.fuseoverlayfs.", 19) ||
	       !strcmp(name, "user.containers.override_stat") ||
	       !strcmp(name, "security.selinux");
}

static int xattr_cmp(const void *a, const void *b)
{
	const struct strata_tar_xattr *x = a, *y = b;

	return strcmp(x->name, y->name);
}

/* Value of xattr @name of @dirfd/@name into @buf; length or -errno. */
static ssize_t get_xattr(int dirfd, const char *ename, const char *xname,
			 char *buf, size_t len)
{
	char p[64 + 256 + 8];
	ssize_t n;

	snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dirfd, ename);
	n = lgetxattr(p, xname, buf, len);
	return n < 0 ? -errno : n;
}

static int read_xattrs(struct walk *wk, int dirfd, const char *ename,
		       struct meta *m)
{
	char p[64 + 256 + 8];
	cleanup_free char *names = NULL;
	ssize_t nl, i;
	size_t total = 0, k = 0;

	snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dirfd, ename);
	nl = llistxattr(p, NULL, 0);
	if (nl < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))
		return 0;
	if (nl < 0)
		return -errno;
	if (nl == 0)
		return 0;
	names = malloc((size_t)nl + 1);
	if (!names)
		return -ENOMEM;
	nl = llistxattr(p, names, (size_t)nl);
	if (nl < 0)
		return -errno;
	for (i = 0; i < nl; i += (ssize_t)strlen(names + i) + 1) {
		ssize_t vl;

		if (strata_commit_xattr_skipped(names + i))
			continue;
		vl = lgetxattr(p, names + i, NULL, 0);
		if (vl < 0)
			continue;
		total += strlen(names + i) + 1 + (size_t)vl;
		k++;
	}
	if (!k)
		return 0;
	m->x = calloc(k, sizeof(*m->x));
	m->xbuf = malloc(total + 1);
	if (!m->x || !m->xbuf)
		return -ENOMEM;
	total = 0;
	for (i = 0; i < nl && m->nx < k; i += (ssize_t)strlen(names + i) + 1) {
		size_t nlen = strlen(names + i);
		char *dst = m->xbuf + total;
		ssize_t vl;

		if (strata_commit_xattr_skipped(names + i))
			continue;
		memcpy(dst, names + i, nlen + 1);
		vl = lgetxattr(p, names + i, dst + nlen + 1, 0);
		if (vl < 0)
			continue;
		vl = lgetxattr(p, names + i, dst + nlen + 1, (size_t)vl);
		if (vl < 0)
			continue;
		m->x[m->nx].name = dst;
		m->x[m->nx].value = dst + nlen + 1;
		m->x[m->nx].len = (size_t)vl;
		m->nx++;
		total += nlen + 1 + (size_t)vl;
	}
	qsort(m->x, m->nx, sizeof(*m->x), xattr_cmp);
	(void)wk;
	return 0;
}

/*
 * May user.* marks (override_stat, user.overlay.*) of an upper entry
 * owned by @uid be believed? Anyone who can write an entry can set them.
 * A mount writes every entry of an upper directory as the upper root's
 * owner when it keeps owners in override_stat (an unprivileged mount),
 * and as root when it runs as root; an entry of any other owner was made
 * by a user of a root mount, who must not choose its owner or mode, nor
 * where its data comes from.
 */
static bool user_marks(const struct walk *wk, uid_t uid)
{
	return uid == wk->marks_uid;
}

/* "uid:gid:mode", mode octal, optionally with the file type bits. */
static void override_stat(struct walk *wk, int dirfd, const char *ename,
			  const struct stat *st, struct meta *m)
{
	char v[128];
	ssize_t n;
	unsigned long uid, gid, mode;
	char *end;

	if (!user_marks(wk, st->st_uid))
		return;
	n = get_xattr(dirfd, ename, "user.containers.override_stat", v,
		      sizeof(v) - 1);
	if (n <= 0)
		return;
	v[n] = '\0';
	errno = 0;
	uid = strtoul(v, &end, 10);
	if (*end != ':')
		return;
	gid = strtoul(end + 1, &end, 10);
	if (*end != ':')
		return;
	mode = strtoul(end + 1, &end, 8);
	if (errno || (*end && *end != ':') || uid > UINT32_MAX ||
	    gid > UINT32_MAX)
		return;
	m->uid = (uint32_t)uid;
	m->gid = (uint32_t)gid;
	m->mode = (uint32_t)mode & 07777;
}

static void set_time(struct walk *wk, struct meta *m, int64_t sec,
		     uint32_t nsec)
{
	m->sec = sec;
	m->nsec = nsec;
	if (wk->o->clamp && sec >= wk->o->clamp_sec &&
	    (sec > wk->o->clamp_sec || nsec)) {
		m->sec = wk->o->clamp_sec;
		m->nsec = 0;
	}
}

static int upper_meta(struct walk *wk, int dirfd, const char *ename,
		      const struct stat *st, struct meta *m)
{
	memset(m, 0, sizeof(*m));
	m->mode = st->st_mode & 07777;
	m->uid = st->st_uid;
	m->gid = st->st_gid;
	set_time(wk, m, st->st_mtim.tv_sec, (uint32_t)st->st_mtim.tv_nsec);
	switch (st->st_mode & S_IFMT) {
	case S_IFDIR: m->type = '5'; break;
	case S_IFREG: m->type = '0'; m->size = (uint64_t)st->st_size; break;
	case S_IFLNK: m->type = '2'; break;
	case S_IFIFO: m->type = '6'; break;
	case S_IFCHR: m->type = '3'; break;
	case S_IFBLK: m->type = '4'; break;
	default: return -EOPNOTSUPP;
	}
	if (m->type == '3' || m->type == '4') {
		m->maj = major(st->st_rdev);
		m->min = minor(st->st_rdev);
	}
	if (m->type == '2') {
		char tgt[4097];
		ssize_t n = readlinkat(dirfd, ename, tgt, sizeof(tgt) - 1);

		if (n < 0)
			return -errno;
		tgt[n] = '\0';
		m->link = strdup(tgt);
		if (!m->link)
			return -ENOMEM;
	}
	override_stat(wk, dirfd, ename, st, m);
	return read_xattrs(wk, dirfd, ename, m);
}

/* ---- writing ---- */

static int header(struct walk *wk, const char *path, const struct meta *m,
		  const char *link_override)
{
	struct strata_tar_hdr h = {
		.path = path,
		.type = link_override ? '1' : m->type,
		.mode = m->mode,
		.uid = m->uid,
		.gid = m->gid,
		.size = link_override ? 0 : m->size,
		.mtime_sec = m->sec,
		.mtime_nsec = m->nsec,
		.linkname = link_override ? link_override : m->link,
		.devmajor = m->maj,
		.devminor = m->min,
		.xattrs = m->x,
		.n_xattrs = m->nx,
	};
	int r;

	if (wk->o->sink_entry) {
		r = wk->o->sink_entry(wk->o->sink_ctx, &h, wk->err);
		if (r == 0)
			wk->entries++;
		return r;
	}
	r = strata_tar_header(wk->w, &h);
	if (r == -EILSEQ)	/* zchunked.c */
		return strata_err_set(wk->err, r, "layer: %s: its name, link "
				      "target or an xattr name is not UTF-8, "
				      "which a zstd:chunked or eStargz table "
				      "of contents cannot hold (Go readers "
				      "change it); use --compression zstd or "
				      "gzip", path[0] ? path : "/");
	if (r == -EEXIST)	/* zchunked.c */
		return strata_err_set(wk->err, r, "layer: %s: eStargz keeps "
				      "its table of contents under this name; "
				      "use --compression gzip", path);
	if (r < 0)
		return strata_err_set(wk->err, r, "layer: writing %s: %s",
				      path[0] ? path : "/", strerror(-r));
	wk->entries++;
	strata_progress(wk->o->progress ? wk->o->progress : "committing",
			strata_blobw_bytes(wk->w), 0);
	return 0;
}

/* Write the directories above the next entry that are not written yet. */
static int flush_pending(struct walk *wk)
{
	size_t i;
	int r;

	for (i = 0; i < wk->n_pend; i++) {
		if (wk->pend[i].written)
			continue;
		r = header(wk, wk->pend[i].path, &wk->pend[i].m, NULL);
		if (r < 0)
			return r;
		wk->pend[i].written = true;
	}
	return 0;
}

static int emit(struct walk *wk, const struct meta *m, const char *link)
{
	int r = flush_pending(wk);

	return r < 0 ? r : header(wk, wk->path, m, link);
}

static int emit_marker(struct walk *wk, const char *name)
{
	struct meta m = { .type = '0' };
	size_t saved;
	int r;

	r = path_push(wk, name, &saved);
	if (r == 0)
		r = emit(wk, &m, NULL);
	path_pop(wk, saved);
	return r;
}

static int push_dir(struct walk *wk, struct meta *m)
{
	if (wk->n_pend == wk->cap_pend) {
		size_t cap = wk->cap_pend ? wk->cap_pend * 2 : 16;
		struct pend *np = realloc(wk->pend, cap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		wk->pend = np;
		wk->cap_pend = cap;
	}
	wk->pend[wk->n_pend].path = strdup(wk->path);
	if (!wk->pend[wk->n_pend].path)
		return -ENOMEM;
	wk->pend[wk->n_pend].m = *m;
	wk->pend[wk->n_pend].written = false;
	memset(m, 0, sizeof(*m));
	wk->n_pend++;
	return 0;
}

/* Pop the innermost pending directory, writing it first if @force. */
static int pop_dir(struct walk *wk, bool force)
{
	struct pend *p = &wk->pend[wk->n_pend - 1];
	int r = 0;

	if (force && !p->written)
		r = flush_pending(wk);
	free(p->path);
	meta_free(&p->m);
	wk->n_pend--;
	return r;
}

static size_t hl_slot(const struct hl *t, size_t cap, uint64_t a,
		      uint64_t b)
{
	uint64_t h = (a * 0x9e3779b97f4a7c15ull) ^ (b * 0xc2b2ae3d27d4eb4full);
	size_t i = (size_t)(h ^ (h >> 29)) & (cap - 1);

	while (t[i].path && (t[i].a != a || t[i].b != b))
		i = (i + 1) & (cap - 1);
	return i;
}

/* The hardlink leader for key (a, b): its path, or NULL after recording
 * the current path as the leader. */
static int hardlink(struct walk *wk, uint64_t a, uint64_t b, const char **out)
{
	size_t i;

	*out = NULL;
	if (wk->cap_hl) {
		i = hl_slot(wk->hl, wk->cap_hl, a, b);
		if (wk->hl[i].path) {
			*out = wk->hl[i].path;
			return 0;
		}
	}
	if (2 * (wk->n_hl + 1) > wk->cap_hl) {
		size_t cap = wk->cap_hl ? wk->cap_hl * 2 : 64, k;
		struct hl *nh = calloc(cap, sizeof(*nh));

		if (!nh)
			return -ENOMEM;
		for (k = 0; k < wk->cap_hl; k++)
			if (wk->hl[k].path)
				nh[hl_slot(nh, cap, wk->hl[k].a,
					   wk->hl[k].b)] = wk->hl[k];
		free(wk->hl);
		wk->hl = nh;
		wk->cap_hl = cap;
	}
	i = hl_slot(wk->hl, wk->cap_hl, a, b);
	wk->hl[i].path = strdup(wk->path);
	if (!wk->hl[i].path)
		return -ENOMEM;
	wk->hl[i].a = a;
	wk->hl[i].b = b;
	wk->n_hl++;
	return 0;
}

/* Copy exactly @size bytes of @fd (-1: none) into the tar, zero-filling a
 * file that shrank meanwhile. */
static int copy_data(struct walk *wk, int fd, uint64_t size)
{
	uint64_t done = 0;
	int r;

	if (wk->o->sink_data)
		return wk->o->sink_data(wk->o->sink_ctx, fd, size, wk->err);
	while (done < size) {
		size_t want = size - done > (1u << 20) ? (1u << 20)
						       : (size_t)(size - done);
		ssize_t n = fd >= 0 ? read(fd, wk->buf, want) : 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return strata_err_set(wk->err, -errno, "upper %s: %s",
					      wk->path, strerror(errno));
		if (n == 0) {
			strata_warn("%s: file shrank while committing; "
				    "zero-filled", wk->path);
			memset(wk->buf, 0, want);
			n = (ssize_t)want;
		}
		r = strata_blobw_write(wk->w, wk->buf, (size_t)n);
		if (r < 0)
			return strata_err_set(wk->err, r, "layer: %s",
					      strerror(-r));
		done += (uint64_t)n;
	}
	return strata_tar_pad(wk->w, size);
}

/* ---- entries from the image (inside a redirected directory) ---- */

static int lower_meta(struct strata_imgview *v,
		      const struct strata_imgview_ent *ent, struct walk *wk,
		      struct meta *m)
{
	const struct strata_lindex *lx = strata_imgview_layer(v, ent->layer);
	const struct strata_lx_entry *e = strata_lx_entry(lx, ent->entry);
	const uint8_t *x;
	size_t xl, off = 0;

	memset(m, 0, sizeof(*m));
	m->mode = e->mode & 07777;
	strata_lx_owner_of(lx, e, &m->uid, &m->gid);
	set_time(wk, m, strata_lx_mtime_sec(e), strata_lx_mtime_nsec(e));
	switch (e->mode & S_IFMT) {
	case S_IFDIR: m->type = '5'; break;
	case S_IFREG: m->type = '0'; m->size = e->size; break;
	case S_IFLNK:
		m->type = '2';
		m->link = strndup(strata_lx_str(lx, e->a), (size_t)e->size);
		if (!m->link)
			return -ENOMEM;
		break;
	case S_IFIFO: m->type = '6'; break;
	case S_IFCHR: m->type = '3'; break;
	case S_IFBLK: m->type = '4'; break;
	default: return -EOPNOTSUPP;
	}
	if (m->type == '3' || m->type == '4') {
		m->maj = major((dev_t)e->size);
		m->min = minor((dev_t)e->size);
	}
	x = strata_lx_xattrs(lx, ent->entry, &xl);
	if (!x || !xl)
		return 0;
	m->x = calloc(xl / 6 + 1, sizeof(*m->x));
	m->xbuf = malloc(xl + xl / 6 + 2);
	if (!m->x || !m->xbuf)
		return -ENOMEM;
	{
		size_t bo = 0;

		while (off + 6 <= xl) {
			uint16_t nlen;
			uint32_t vlen;

			memcpy(&nlen, x + off, 2);
			memcpy(&vlen, x + off + 2, 4);
			if (off + 6 + nlen + (size_t)vlen > xl)
				break;
			memcpy(m->xbuf + bo, x + off + 6, nlen);
			m->xbuf[bo + nlen] = '\0';
			m->x[m->nx].name = m->xbuf + bo;
			m->x[m->nx].value = x + off + 6 + nlen;
			m->x[m->nx].len = vlen;
			bo += nlen + 1u;
			off += 6u + nlen + vlen;
			if (!strata_commit_xattr_skipped(m->x[m->nx].name))
				m->nx++;
		}
	}
	qsort(m->x, m->nx, sizeof(*m->x), xattr_cmp);
	return 0;
}

static int emit_lower(struct walk *wk, struct strata_imgview *v,
		      const struct strata_imgview_ent *ent, const char *lpath);

static int emit_lower_children(struct walk *wk, struct strata_imgview *v,
			       const char *lpath)
{
	struct strata_imgview_child *c = NULL;
	size_t n = 0, i;
	int r;

	r = strata_imgview_list(v, lpath, &c, &n);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	for (i = 0; i < n && r == 0; i++) {
		cleanup_free char *sub = NULL;
		size_t saved;

		if (asprintf(&sub, "%s%s%s", lpath, *lpath ? "/" : "",
			     c[i].name) < 0) {
			r = -ENOMEM;
			break;
		}
		r = path_push(wk, c[i].name, &saved);
		if (r == 0 && !masked_lower(wk))
			r = emit_lower(wk, v, &c[i].ent, sub);
		path_pop(wk, saved);
	}
	strata_imgview_children_free(c, n);
	return r;
}

static int emit_lower(struct walk *wk, struct strata_imgview *v,
		      const struct strata_imgview_ent *ent, const char *lpath)
{
	struct meta m;
	const char *leader = NULL;
	const struct strata_lx_entry *e =
		strata_lx_entry(strata_imgview_layer(v, ent->layer), ent->entry);
	cleanup_fd int fd = -1;
	int r;

	if (S_ISSOCK(e->mode))
		return 0;
	r = lower_meta(v, ent, wk, &m);
	if (r < 0)
		goto out;
	if (m.type == '5') {
		r = emit(wk, &m, NULL);
		if (r == 0)
			r = emit_lower_children(wk, v, lpath);
		goto out;
	}
	if (m.type != '5' && (e->flags & STRATA_LX_HARDLINK)) {
		r = hardlink(wk, (1ull << 63) | ent->layer, e->b, &leader);
		if (r < 0)
			goto out;
	}
	r = emit(wk, &m, leader);
	if (r < 0 || m.type != '0' || leader)
		goto out;
	fd = strata_imgview_open_data(v, ent);
	if (fd < 0 && errno)
		r = strata_err_set(wk->err, -errno, "image %s: %s: %s",
				   wk->o->img->ref_text, lpath, strerror(errno));
	else
		r = copy_data(wk, fd, m.size);
out:
	meta_free(&m);
	return r;
}

/* ---- the upper directory ---- */

static int child_cmp(const void *a, const void *b)
{
	const struct child *x = a, *y = b;

	return strcmp(x->name, y->name);
}

static void children_free(struct child *c, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(c[i].name);
	free(c);
}

static int list_upper(int dirfd, struct child **out, size_t *n_out)
{
	int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	DIR *d;
	struct dirent *de;
	struct child *c = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		struct child *x;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			struct child *nc;

			cap = cap ? cap * 2 : 32;
			nc = realloc(c, cap * sizeof(*nc));
			if (!nc) {
				r = -ENOMEM;
				break;
			}
			c = nc;
		}
		x = &c[n];
		if (fstatat(dirfd, de->d_name, &x->st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			break;
		}
		x->name = strdup(de->d_name);
		if (!x->name) {
			r = -ENOMEM;
			break;
		}
		n++;
		if (S_ISCHR(x->st.st_mode) && x->st.st_rdev == makedev(0, 0))
			x->kind = K_WHITEOUT;
		else if (!strcmp(x->name, OPQ))
			x->kind = K_OPQ;
		else if (!strncmp(x->name, WH, 4) && x->name[4])
			x->kind = K_WHITEOUT;
		else
			x->kind = K_NORMAL;
	}
	closedir(d);
	if (r < 0) {
		children_free(c, n);
		return r;
	}
	if (n)
		qsort(c, n, sizeof(*c), child_cmp);
	*out = c;
	*n_out = n;
	return 0;
}

static const char *wh_target(const struct child *c)
{
	return S_ISCHR(c->st.st_mode) ? c->name : c->name + 4;
}

/*
 * Open upper file @c for its data: the file that was listed, never a
 * symlink, fifo or other file a user of the upper directory renamed into
 * its place since (a fifo would block the commit, and the mount with it).
 */
static int open_upper_file(struct walk *wk, int dirfd, const struct child *c)
{
	struct stat st;
	int fd = openat(dirfd, c->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
			O_NONBLOCK);

	if (fd < 0)
		return strata_err_set(wk->err, -errno, "upper %s: %s",
				      wk->path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_dev != c->st.st_dev || st.st_ino != c->st.st_ino ||
	    st.st_size != c->st.st_size) {
		close(fd);
		return strata_err_set(wk->err, -EAGAIN, "upper %s: changed "
				      "while it was read (replaced or resized "
				      "outside the mount)", wk->path);
	}
	return fd;
}

/* An overlay mark of @dirfd/@ename: trusted.overlay.@mark, or
 * user.overlay.@mark where user_marks() allows; its length or -errno. */
static ssize_t get_mark(struct walk *wk, int dirfd, const struct child *c,
			const char *mark, char *buf, size_t len)
{
	char xname[64];
	ssize_t n;

	snprintf(xname, sizeof(xname), "trusted.overlay.%s", mark);
	n = get_xattr(dirfd, c->name, xname, buf, len);
	if (n < 0 && user_marks(wk, c->st.st_uid)) {
		snprintf(xname, sizeof(xname), "user.overlay.%s", mark);
		n = get_xattr(dirfd, c->name, xname, buf, len);
	}
	return n;
}

/* Does @path hold a "." or ".." component? */
static bool dot_component(const char *path)
{
	const char *p = path;

	while (*p) {
		size_t len = strcspn(p, "/");

		if ((len == 1 && p[0] == '.') ||
		    (len == 2 && p[0] == '.' && p[1] == '.'))
			return true;
		p += len;
		p += strspn(p, "/");
	}
	return false;
}

/* Redirect target of @dirfd/@c as an image path, relative to
 * @origin_parent for relative redirects; NULL if none. A redirect never
 * leaves the image: "." and ".." are refused, as the kernel overlay
 * refuses them. */
static char *redirect_of(struct walk *wk, int dirfd, const struct child *c,
			 const char *origin_parent)
{
	char v[4097];
	ssize_t n = get_mark(wk, dirfd, c, "redirect", v, sizeof(v) - 1);
	char *out;

	if (n <= 0)
		return NULL;
	v[n] = '\0';
	if (memchr(v, '\0', (size_t)n) || dot_component(v))
		return NULL;
	if (v[0] == '/') {
		char *p = v;

		while (*p == '/')
			p++;
		return strdup(p);
	}
	if (asprintf(&out, "%s%s%s", origin_parent ? origin_parent : "",
		     origin_parent && *origin_parent ? "/" : "", v) < 0)
		return NULL;
	return out;
}

static int walk_upper(struct walk *wk, int dirfd, const char *origin,
		      bool full, bool opaque);

static int upper_file(struct walk *wk, int dirfd, const struct child *c,
		      const char *origin)
{
	struct meta m;
	const char *leader = NULL;
	cleanup_fd int fd = -1;
	int r;

	r = upper_meta(wk, dirfd, c->name, &c->st, &m);
	if (r < 0) {
		strata_err_set(wk->err, r, "upper %s: %s", wk->path,
			       strerror(-r));
		goto out;
	}
	if (m.type == '0' && c->st.st_nlink > 1) {
		r = hardlink(wk, (uint64_t)c->st.st_dev, (uint64_t)c->st.st_ino,
			     &leader);
		if (r < 0)
			goto out;
	}
	r = emit(wk, &m, leader);
	if (r < 0 || m.type != '0' || leader)
		goto out;
	if (get_mark(wk, dirfd, c, "metacopy", NULL, 0) >= 0) {
		struct strata_imgview *v;
		struct strata_imgview_ent ent;
		cleanup_free char *lpath = redirect_of(wk, dirfd, c, origin);

		if (!lpath && origin &&
		    asprintf(&lpath, "%s%s%s", origin, *origin ? "/" : "",
			     c->name) < 0)
			lpath = NULL;
		r = view(wk, &v);
		if (r < 0)
			goto out;
		if (!lpath || strata_imgview_lookup(v, lpath, &ent) < 0) {
			r = strata_err_set(wk->err, -ENOENT,
					   "upper %s: metacopy file whose data "
					   "is not in image %s", wk->path,
					   wk->o->img->ref_text);
			goto out;
		}
		fd = strata_imgview_open_data(v, &ent);
	} else {
		r = open_upper_file(wk, dirfd, c);
		if (r < 0)
			goto out;
		fd = r;
	}
	r = copy_data(wk, fd, m.size);
out:
	meta_free(&m);
	return r;
}

static int upper_dir(struct walk *wk, int dirfd, const struct child *c,
		     const char *origin, bool full)
{
	cleanup_free char *redirect = NULL, *corigin = NULL;
	cleanup_fd int fd = -1;
	struct meta m;
	bool opaque, empty, redirected;
	int r;

	fd = openat(dirfd, c->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		return strata_err_set(wk->err, -errno, "upper %s: %s",
				      wk->path, strerror(errno));
	r = upper_meta(wk, dirfd, c->name, &c->st, &m);
	if (r < 0) {
		meta_free(&m);
		return strata_err_set(wk->err, r, "upper %s: %s", wk->path,
				      strerror(-r));
	}
	{
		char v[2];

		opaque = (get_mark(wk, dirfd, c, "opaque", v, sizeof(v)) == 1 &&
			  v[0] == 'y') ||
			 faccessat(fd, OPQ, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	}
	redirect = redirect_of(wk, dirfd, c, origin);
	redirected = redirect != NULL;
	if (redirect) {
		corigin = take_ptr(&redirect);
	} else if (!opaque && origin &&
		   asprintf(&corigin, "%s%s%s", origin, *origin ? "/" : "",
			    c->name) < 0) {
		meta_free(&m);
		return -ENOMEM;
	}
	r = push_dir(wk, &m);
	meta_free(&m);
	if (r < 0)
		return r;
	if (corigin && (full || redirected)) {
		/* a renamed lower directory: written in full; a directory
		 * it replaces in the image is hidden with an opaque marker */
		struct strata_imgview *v;
		struct strata_imgview_ent ent;

		r = view(wk, &v);
		if (r == 0 && !full && strata_imgview_lookup(v, wk->path, &ent) == 0)
			r = emit_marker(wk, OPQ);
		if (r == 0)
			r = walk_upper(wk, fd, corigin, true, opaque);
	} else {
		r = walk_upper(wk, fd, corigin, full, opaque);
	}
	if (r < 0) {
		pop_dir(wk, false);
		return r;
	}
	empty = true;
	{
		struct child *cc = NULL;
		size_t n = 0;

		if (list_upper(fd, &cc, &n) == 0) {
			empty = n == 0;
			children_free(cc, n);
		}
	}
	return pop_dir(wk, empty || full);
}

static int upper_entry(struct walk *wk, int dirfd, const struct child *c,
		       const char *origin, bool full)
{
	if (S_ISSOCK(c->st.st_mode))
		return 0;
	if (S_ISDIR(c->st.st_mode))
		return upper_dir(wk, dirfd, c, origin, full);
	return upper_file(wk, dirfd, c, origin);
}

static bool whited_out(const struct child *c, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (c[i].kind == K_WHITEOUT && !strcmp(wh_target(&c[i]), name))
			return true;
	return false;
}

/*
 * Walk the upper directory @dirfd at wk->path. @origin is its path in the
 * image (NULL when nothing below shows through); @full writes the merged
 * content (a redirected directory), else only the upper entries and
 * markers.
 */
static int walk_upper(struct walk *wk, int dirfd, const char *origin,
		      bool full, bool opaque)
{
	struct child *c = NULL;
	struct strata_imgview_child *lc = NULL;
	struct strata_imgview *v = NULL;
	size_t n = 0, nl = 0, i = 0, j = 0;
	int r;

	r = list_upper(dirfd, &c, &n);
	if (r < 0)
		return strata_err_set(wk->err, r, "upper %s: %s",
				      wk->path[0] ? wk->path : "/",
				      strerror(-r));
	if (!full && opaque && wk->plen) {
		/* the kernel marks every new directory opaque: a marker only
		 * where the image has a directory to hide */
		struct strata_imgview_ent ent;

		r = view(wk, &v);
		if (r == 0 && strata_imgview_lookup(v, wk->path, &ent) == 0 &&
		    S_ISDIR(strata_lx_entry(strata_imgview_layer(v, ent.layer),
					    ent.entry)->mode))
			r = emit_marker(wk, OPQ);
		v = NULL;
	}
	for (i = 0; r == 0 && !full && !opaque && i < n; i++) {
		size_t saved;

		if (c[i].kind != K_WHITEOUT)
			continue;
		r = path_push(wk, wh_target(&c[i]), &saved);
		if (r == 0 && !masked(wk)) {
			char wname[300];

			path_pop(wk, saved);
			snprintf(wname, sizeof(wname), WH "%s", wh_target(&c[i]));
			r = emit_marker(wk, wname);
		} else {
			path_pop(wk, saved);
		}
	}
	if (r == 0 && full && origin && !opaque) {
		r = view(wk, &v);
		if (r == 0) {
			r = strata_imgview_list(v, origin, &lc, &nl);
			if (r == -ENOENT || r == -ENOTDIR)
				r = 0;
		}
	}
	/* merge upper and (in full mode) image children by name */
	i = 0;
	while (r == 0 && (i < n || j < nl)) {
		bool use_up, use_low;
		int cmp;
		size_t saved;

		if (i < n && c[i].kind != K_NORMAL) {
			i++;
			continue;
		}
		if (j < nl && whited_out(c, n, lc[j].name)) {
			bool keep = false;

			if (wk->o->squash) {	/* a masked deletion */
				r = path_push(wk, lc[j].name, &saved);
				keep = masked(wk);
				path_pop(wk, saved);
			}
			if (!keep) {
				j++;
				continue;
			}
		}
		cmp = i >= n ? 1 : j >= nl ? -1 : strcmp(c[i].name, lc[j].name);
		use_up = cmp <= 0;
		use_low = cmp > 0;
		r = path_push(wk, cmp <= 0 ? c[i].name : lc[j].name, &saved);
		if (r == 0 && use_up && masked(wk)) {
			/* a masked change: a squash keeps the image's entry */
			use_up = false;
			use_low = cmp == 0 && wk->o->squash;
		} else if (r == 0 && use_low && masked_lower(wk)) {
			use_low = false;
		}
		if (r == 0 && use_up) {
			r = upper_entry(wk, dirfd, &c[i], origin, full);
		} else if (r == 0 && use_low) {
			cleanup_free char *lp = NULL;

			if (asprintf(&lp, "%s%s%s", origin, *origin ? "/" : "",
				     lc[j].name) < 0)
				r = -ENOMEM;
			else
				r = emit_lower(wk, v, &lc[j].ent, lp);
		}
		path_pop(wk, saved);
		if (cmp <= 0)
			i++;
		if (cmp >= 0)
			j++;
	}
	children_free(c, n);
	strata_imgview_children_free(lc, nl);
	return r;
}

int strata_commit_layer(const struct strata_layer_walk *o,
			struct strata_blobw *w, uint64_t *entries,
			struct strata_err *err)
{
	struct walk wk = { .o = o, .w = w, .err = err };
	struct stat st;
	struct meta m;
	size_t i;
	int r;

	wk.buf = malloc(1u << 20);
	wk.pcap = 256;
	wk.path = calloc(1, wk.pcap);
	if (!wk.buf || !wk.path) {
		r = -ENOMEM;
		goto out;
	}
	if (o->upper_fd < 0) {
		/* the image alone (an export) */
		struct strata_imgview *v;
		struct strata_imgview_ent ent;

		r = view(&wk, &v);
		/* no layers: an empty tar */
		if (r == 0 && o->img->n_layers &&
		    strata_imgview_lookup(v, "", &ent) < 0)
			r = strata_err_set(err, -ENOENT, "image %s: no root "
					   "directory", o->img->ref_text);
		if (r == 0 && o->img->n_layers)
			r = emit_lower(&wk, v, &ent, "");
		if (r == 0)
			r = strata_tar_end(w);
		*entries = wk.entries;
		goto out;
	}
	if (fstat(o->upper_fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	memset(&m, 0, sizeof(m));
	m.type = '5';
	m.mode = st.st_mode & 07777;
	m.uid = st.st_uid;
	m.gid = st.st_gid;
	set_time(&wk, &m, st.st_mtim.tv_sec, (uint32_t)st.st_mtim.tv_nsec);
	{
		char dot[] = ".";

		wk.marks_uid = st.st_uid;
		override_stat(&wk, o->upper_fd, dot, &st, &m);
		r = read_xattrs(&wk, o->upper_fd, dot, &m);
	}
	if (r == 0)
		r = push_dir(&wk, &m);
	meta_free(&m);
	if (r < 0)
		goto out;
	r = walk_upper(&wk, o->upper_fd, "", o->squash, false);
	if (r == 0)
		r = pop_dir(&wk, o->squash);
	else
		pop_dir(&wk, false);
	if (r == 0 && wk.entries && w)
		r = strata_tar_end(w);
	*entries = wk.entries;
out:
	for (i = 0; i < wk.cap_hl; i++)
		free(wk.hl[i].path);
	free(wk.hl);
	for (i = 0; i < wk.n_pend; i++) {
		free(wk.pend[i].path);
		meta_free(&wk.pend[i].m);
	}
	free(wk.pend);
	if (wk.view)
		strata_imgview_free(wk.view);
	free(wk.buf);
	free(wk.path);
	strata_progress_done();
	return r;
}
