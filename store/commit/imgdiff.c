/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What differs between two images, or between an image and an upper
 * directory over it (strata diff), computed from the layer indexes.
 *
 * Two images: both merged trees are walked together, directory by
 * directory, through imgview.c's merged-tree calls (strata_mdir_*: the
 * rules of fs/merge.c, after the grafts strata_imgview_open() applies). Layers below the first diff_id the images do not share are the
 * same bytes and, grafted with the same layers below, the same index: an
 * entry of such a layer at the same position is equal without a look, and
 * a directory whose sources are all such entries is an equal subtree,
 * never entered. So two tags that differ in their top layer cost the
 * directories that layer touches. Content is read only for regular files
 * whose size and metadata are equal, from the layers' content files.
 *
 * An image and an upper directory: commit's walk of the upper directory
 * (commit-layer.c) hands its changeset here instead of to a tar: whiteouts
 * and opaque markers delete what the image had, every other entry is
 * compared with the image's entry at its path. Content is compared while
 * the walk holds the upper file open.
 *
 * A changed entry is one whose type, mode, owner, size, content, mtime,
 * xattrs, link target or device number differs. A deleted directory is
 * one entry; an added directory lists what it holds; a directory replaced
 * by a non-directory is one changed entry.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "commit.h"

#define CMP_CHUNK (256u * 1024)

struct side {
	const struct strata_image *img;
	struct strata_imgview *v;
	uint32_t n;
};

struct attrs {
	uint32_t mode;
	uint32_t uid, gid;
	uint64_t size;
	int64_t sec;
	uint32_t nsec;
	uint64_t rdev;
	const char *link;
	size_t link_len;
	struct strata_tar_xattr *x;	/* sorted by name */
	size_t nx;
	bool own_x;			/* x malloc'd */
};

struct diff {
	struct side a, b;
	uint32_t shared;	/* layers 0..shared-1 are the same in both */
	bool upper;		/* B is an upper directory: filter xattrs */
	struct strata_diff *out;
	struct strata_err *err;
	char *path;		/* "/a/b": grows */
	size_t plen, pcap;
	char *buf1, *buf2;
};

static const struct strata_lindex *layer_of(const struct side *s, uint32_t l)
{
	return strata_imgview_layer(s->v, l);
}

static const struct strata_lx_entry *ent(const struct side *s,
					 struct strata_imgview_ent x)
{
	return strata_lx_entry(layer_of(s, x.layer), x.entry);
}

/* ---- results ---- */

void strata_diff_clear(struct strata_diff *d)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		free(d->e[i].path);
	free(d->e);
	memset(d, 0, sizeof(*d));
}

static int add(struct diff *d, char kind, uint32_t what, uint32_t old_mode,
	       uint32_t new_mode, uint64_t old_size, uint64_t new_size)
{
	struct strata_diff *o = d->out;
	struct strata_diff_entry *e;

	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 64;
		struct strata_diff_entry *ne = realloc(o->e, cap * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		o->e = ne;
		o->cap = cap;
	}
	e = &o->e[o->n];
	memset(e, 0, sizeof(*e));
	e->path = strdup(d->plen ? d->path : "/");
	if (!e->path)
		return -ENOMEM;
	e->kind = kind;
	e->what = what;
	e->old_mode = old_mode;
	e->new_mode = new_mode;
	e->old_size = old_size;
	e->new_size = new_size;
	o->n++;
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct strata_diff_entry *x = a, *y = b;

	return strcmp(x->path, y->path);
}

static bool listed(const struct strata_diff *o, const char *path)
{
	struct strata_diff_entry key = { .path = (char *)path };

	return o->n && bsearch(&key, o->e, o->n, sizeof(*o->e), entry_cmp);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Every directory that holds a change and is not itself added, deleted or
 * changed becomes a change ("contents"), up to the root, as podman and
 * docker list them (containers/storage pkg/archive changes.go). It exists
 * on both sides as a directory: otherwise it would be listed already.
 * @o is sorted; it is sorted again after.
 */
static int mark_parents(struct strata_diff *o)
{
	char **p = NULL;
	size_t np = 0, cap = 0, n0 = o->n, i, k;
	int r = 0;

	for (i = 0; i < n0 && r == 0; i++) {
		char *q = strdup(o->e[i].path), *slash;

		if (!q) {
			r = -ENOMEM;
			break;
		}
		/* up to the first ancestor listed on its own */
		while ((slash = strrchr(q, '/')) && slash != q) {
			*slash = '\0';
			if (listed(o, q))
				break;
			if (np == cap) {
				char **g = realloc(p, (cap = cap ? cap * 2 : 64) *
						   sizeof(*p));

				if (!g) {
					r = -ENOMEM;
					break;
				}
				p = g;
			}
			if (!(p[np] = strdup(q))) {
				r = -ENOMEM;
				break;
			}
			np++;
		}
		free(q);
	}
	if (np)
		qsort(p, np, sizeof(*p), str_cmp);
	for (k = 0; k < np && r == 0; k++) {
		struct strata_diff_entry *e;

		if (o->n > n0 && !strcmp(p[k], o->e[o->n - 1].path))
			continue;	/* the one just added */
		if (o->n == o->cap) {
			size_t c = o->cap ? o->cap * 2 : 64;

			e = realloc(o->e, c * sizeof(*e));
			if (!e) {
				r = -ENOMEM;
				break;
			}
			o->e = e;
			o->cap = c;
		}
		e = &o->e[o->n++];
		memset(e, 0, sizeof(*e));
		e->path = p[k];
		p[k] = NULL;
		e->kind = 'C';
		e->what = STRATA_DIFF_CONTENTS;
		e->old_mode = e->new_mode = S_IFDIR;
	}
	for (k = 0; k < np; k++)
		free(p[k]);
	free(p);
	if (o->n > n0)
		qsort(o->e, o->n, sizeof(*o->e), entry_cmp);
	return r;
}

static int finish(struct strata_diff *o)
{
	size_t i;
	int r;

	if (o->n)
		qsort(o->e, o->n, sizeof(*o->e), entry_cmp);
	r = mark_parents(o);
	if (r < 0)
		return r;
	for (i = 0; i < o->n; i++) {
		struct strata_diff_entry *e = &o->e[i];

		if (e->kind == 'A') {
			o->added++;
			o->added_bytes += e->new_size;
		} else if (e->kind == 'D') {
			o->deleted++;
			o->deleted_bytes += e->old_size;
		} else {
			o->changed++;
			o->changed_bytes += e->new_size;
		}
	}
	return 0;
}

/* The end of a diff that returned @r: sorted, parents marked and
 * counted, or cleared on an error. */
static int conclude(struct strata_diff *out, int r, struct strata_err *err)
{
	if (r == 0)
		r = finish(out);
	if (r < 0) {
		strata_diff_clear(out);
		if (r == -ENOMEM)
			strata_err_set(err, r, "diff: out of memory");
	}
	return r;
}

/* ---- paths ---- */

static int path_push(struct diff *d, const char *name, size_t len,
		     size_t *saved)
{
	*saved = d->plen;
	if (d->plen + len + 2 > d->pcap) {
		size_t cap = (d->plen + len + 2) * 2;
		char *p = realloc(d->path, cap);

		if (!p)
			return -ENOMEM;
		d->path = p;
		d->pcap = cap;
	}
	d->path[d->plen++] = '/';
	memcpy(d->path + d->plen, name, len);
	d->plen += len;
	d->path[d->plen] = '\0';
	return 0;
}

static void path_pop(struct diff *d, size_t saved)
{
	d->plen = saved;
	d->path[saved] = '\0';
}

/* ---- attributes ---- */

static void attrs_free(struct attrs *a)
{
	if (a->own_x)
		free(a->x);
	memset(a, 0, sizeof(*a));
}

static int xattr_cmp(const void *a, const void *b)
{
	const struct strata_tar_xattr *x = a, *y = b;

	return strcmp(x->name, y->name);
}

/* Xattr names are stored without a NUL: their records give the length;
 * a name is copied into @names (one byte longer than the records). */
static int lx_xattrs(const struct strata_lindex *lx, uint32_t i, bool filter,
		     struct attrs *a, char **names)
{
	size_t len, off = 0, bo = 0;
	const uint8_t *x = strata_lx_xattrs(lx, i, &len);

	if (!x || !len)
		return 0;
	a->x = calloc(len / 6 + 1, sizeof(*a->x));
	*names = malloc(len + len / 6 + 2);
	if (!a->x || !*names)
		return -ENOMEM;
	a->own_x = true;
	while (off + 6 <= len) {
		uint16_t nlen;
		uint32_t vlen;

		memcpy(&nlen, x + off, 2);
		memcpy(&vlen, x + off + 2, 4);
		if (off + 6 + nlen + (size_t)vlen > len)
			break;
		memcpy(*names + bo, x + off + 6, nlen);
		(*names)[bo + nlen] = '\0';
		a->x[a->nx].name = *names + bo;
		a->x[a->nx].value = x + off + 6 + nlen;
		a->x[a->nx].len = vlen;
		bo += nlen + 1u;
		off += 6u + nlen + vlen;
		if (!filter || !strata_commit_xattr_skipped(a->x[a->nx].name))
			a->nx++;
	}
	qsort(a->x, a->nx, sizeof(*a->x), xattr_cmp);
	return 0;
}

static void lx_attrs(const struct side *s, struct strata_imgview_ent x,
		     struct attrs *a)
{
	const struct strata_lindex *lx = layer_of(s, x.layer);
	const struct strata_lx_entry *e = strata_lx_entry(lx, x.entry);

	memset(a, 0, sizeof(*a));
	a->mode = e->mode;
	strata_lx_owner_of(lx, e, &a->uid, &a->gid);
	a->sec = strata_lx_mtime_sec(e);
	a->nsec = strata_lx_mtime_nsec(e);
	if (S_ISREG(e->mode))
		a->size = e->size;
	else if (S_ISCHR(e->mode) || S_ISBLK(e->mode))
		a->rdev = e->size;
	else if (S_ISLNK(e->mode)) {
		a->link = strata_lx_str(lx, e->a);
		a->link_len = (size_t)e->size;
	}
}

static void hdr_attrs(const struct strata_tar_hdr *h, struct attrs *a)
{
	static const uint32_t types[] = {
		['0'] = S_IFREG, ['1'] = S_IFREG, ['2'] = S_IFLNK,
		['3'] = S_IFCHR, ['4'] = S_IFBLK, ['5'] = S_IFDIR,
		['6'] = S_IFIFO,
	};

	memset(a, 0, sizeof(*a));
	a->mode = (h->type >= '0' && h->type <= '6' ? types[(int)h->type]
						      : 0) | (h->mode & 07777);
	a->uid = h->uid;
	a->gid = h->gid;
	a->sec = h->mtime_sec;
	a->nsec = h->mtime_nsec;
	a->size = h->type == '0' ? h->size : 0;
	if (h->type == '3' || h->type == '4')
		a->rdev = makedev(h->devmajor, h->devminor);
	if (h->type == '2' && h->linkname) {
		a->link = h->linkname;
		a->link_len = strlen(h->linkname);
	}
	a->x = (struct strata_tar_xattr *)h->xattrs;
	a->nx = h->n_xattrs;
}

static bool xattrs_equal(const struct attrs *a, const struct attrs *b)
{
	size_t i;

	if (a->nx != b->nx)
		return false;
	for (i = 0; i < a->nx; i++)
		if (strcmp(a->x[i].name, b->x[i].name) ||
		    a->x[i].len != b->x[i].len ||
		    memcmp(a->x[i].value, b->x[i].value, a->x[i].len))
			return false;
	return true;
}

/* What differs between @a and @b, content aside. */
static uint32_t meta_diff(const struct attrs *a, const struct attrs *b)
{
	uint32_t w = 0;

	if ((a->mode & S_IFMT) != (b->mode & S_IFMT))
		return STRATA_DIFF_TYPE;
	if ((a->mode & 07777) != (b->mode & 07777))
		w |= STRATA_DIFF_MODE;
	if (a->uid != b->uid || a->gid != b->gid)
		w |= STRATA_DIFF_OWNER;
	if (a->size != b->size)
		w |= STRATA_DIFF_SIZE;
	if (a->sec != b->sec || a->nsec != b->nsec)
		w |= STRATA_DIFF_MTIME;
	if (a->rdev != b->rdev)
		w |= STRATA_DIFF_DEVICE;
	if (a->link_len != b->link_len ||
	    (a->link_len && memcmp(a->link, b->link, a->link_len)))
		w |= STRATA_DIFF_LINK;
	if (!xattrs_equal(a, b))
		w |= STRATA_DIFF_XATTRS;
	return w;
}

/* ---- content ---- */

/* The content file of regular file @x: fd, -ENOENT for an empty file
 * (none), or negative errno. */
static int open_content(const struct side *s, struct strata_imgview_ent x)
{
	const struct strata_lx_entry *e = ent(s, x);
	char name[16];
	int fd;

	if (!e->a)
		return -ENOENT;	/* an empty file */
	snprintf(name, sizeof(name), "%u", e->a);
	fd = openat(strata_lx_datafd(layer_of(s, x.layer)), name,
		    O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

static ssize_t read_full(int fd, char *buf, size_t n, uint64_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = pread(fd, buf + done, n - done,
				  (off_t)(off + done));

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		done += (size_t)k;
	}
	return (ssize_t)done;
}

/* Do @fa and @fb (-1: empty) hold the same @size bytes?
 * Return: 1 same, 0 different, negative errno. */
static int same_bytes(struct diff *d, int fa, int fb, uint64_t size)
{
	uint64_t off = 0;

	while (off < size) {
		size_t want = size - off > CMP_CHUNK ? CMP_CHUNK
						     : (size_t)(size - off);
		ssize_t ka = fa >= 0 ? read_full(fa, d->buf1, want, off) : 0;
		ssize_t kb = fb >= 0 ? read_full(fb, d->buf2, want, off) : 0;

		if (ka < 0 || kb < 0)
			return (int)(ka < 0 ? ka : kb);
		if (ka != kb || memcmp(d->buf1, d->buf2, (size_t)ka))
			return 0;
		if ((size_t)ka < want)
			return 1;	/* both shorter than the index says */
		off += want;
	}
	return 1;
}

static int content_error(struct diff *d, const struct side *s, int r)
{
	return strata_err_set(d->err, r, "image %s: %s: content file of the "
			      "layer cache: %s", s->img->ref_text, d->path,
			      strerror(-r));
}

/* Regular files @xa, @xb of equal size: same content? */
static int same_content(struct diff *d, struct strata_imgview_ent xa,
			struct strata_imgview_ent xb,
			uint64_t size)
{
	const struct strata_lx_entry *ea = ent(&d->a, xa), *eb = ent(&d->b, xb);
	cleanup_fd int fa = -1, fb = -1;

	if (!size || (ea->a == eb->a &&
		      !strcmp(d->a.img->layers[xa.layer].diff_id,
			      d->b.img->layers[xb.layer].diff_id)))
		return 1;	/* the same content file */
	fa = open_content(&d->a, xa);
	if (fa < 0 && fa != -ENOENT)
		return content_error(d, &d->a, fa);
	fb = open_content(&d->b, xb);
	if (fb < 0 && fb != -ENOENT)
		return content_error(d, &d->b, fb);
	return same_bytes(d, fa, fb, size);
}

/* ---- two images ---- */

static bool same_entry(const struct diff *d, struct strata_imgview_ent xa,
		       struct strata_imgview_ent xb)
{
	return xa.layer == xb.layer && xa.entry == xb.entry &&
	       xa.layer < d->shared;
}

static bool same_dir(const struct diff *d, const struct strata_mdir *a,
		     const struct strata_mdir *b)
{
	uint32_t i;

	if (a->n != b->n)
		return false;
	for (i = 0; i < a->n; i++)
		if (!same_entry(d, a->s[i], b->s[i]))
			return false;
	return true;
}

/* Compare the visible entries @xa, @xb. Return: STRATA_DIFF_* or
 * negative errno. */
static int compare(struct diff *d, struct strata_imgview_ent xa,
		   struct strata_imgview_ent xb)
{
	struct attrs a, b;
	char *na = NULL, *nb = NULL;
	int w, r = 0;

	if (same_entry(d, xa, xb))
		return 0;
	lx_attrs(&d->a, xa, &a);
	lx_attrs(&d->b, xb, &b);
	if ((ent(&d->a, xa)->flags | ent(&d->b, xb)->flags) &
	    STRATA_LX_XATTRS) {
		r = lx_xattrs(layer_of(&d->a, xa.layer), xa.entry, false, &a,
			      &na);
		if (r == 0)
			r = lx_xattrs(layer_of(&d->b, xb.layer), xb.entry,
				      false, &b, &nb);
	}
	w = r < 0 ? r : (int)meta_diff(&a, &b);
	if (w == 0 && S_ISREG(a.mode)) {
		r = same_content(d, xa, xb, a.size);
		w = r < 0 ? r : r ? 0 : STRATA_DIFF_CONTENT;
	}
	attrs_free(&a);
	attrs_free(&b);
	free(na);
	free(nb);
	return w;
}

/* Bytes of the regular files at and under @x of side @s. */
static int tree_bytes(const struct side *s, struct strata_imgview_ent x,
		      const struct strata_mdir *m, uint64_t *out)
{
	struct strata_mkid *k = NULL;
	size_t n = 0, i;
	int r;

	if (!S_ISDIR(ent(s, x)->mode)) {
		if (S_ISREG(ent(s, x)->mode))
			*out += ent(s, x)->size;
		return 0;
	}
	r = strata_mdir_list(s->v, m, &k, &n);
	for (i = 0; r == 0 && i < n; i++) {
		struct strata_mdir c = { 0 };

		if (S_ISDIR(ent(s, k[i].ent)->mode))
			r = strata_mdir_child(s->v, m, k[i].name, k[i].len, &c);
		if (r == 0)
			r = tree_bytes(s, k[i].ent, &c, out);
		free(c.s);
	}
	free(k);
	return r;
}

/* Every entry under directory @m of B, as added. */
static int add_tree(struct diff *d, const struct strata_mdir *m)
{
	struct strata_mkid *k = NULL;
	size_t n = 0, i;
	int r;

	r = strata_mdir_list(d->b.v, m, &k, &n);
	for (i = 0; r == 0 && i < n; i++) {
		const struct strata_lx_entry *e = ent(&d->b, k[i].ent);
		size_t saved;

		r = path_push(d, k[i].name, k[i].len, &saved);
		if (r == 0)
			r = add(d, 'A', 0, 0, e->mode, 0,
				S_ISREG(e->mode) ? e->size : 0);
		if (r == 0 && S_ISDIR(e->mode)) {
			struct strata_mdir c = { 0 };

			r = strata_mdir_child(d->b.v, m, k[i].name, k[i].len, &c);
			if (r == 0)
				r = add_tree(d, &c);
			free(c.s);
		}
		path_pop(d, saved);
	}
	free(k);
	return r;
}

static int walk(struct diff *d, const struct strata_mdir *ma,
		const struct strata_mdir *mb);

/* Name @k present in A (@ka) and B (@kb) of directories @ma, @mb. */
static int both(struct diff *d, const struct strata_mdir *ma,
		const struct strata_mdir *mb,
		const struct strata_mkid *ka, const struct strata_mkid *kb)
{
	const struct strata_lx_entry *ea = ent(&d->a, ka->ent);
	const struct strata_lx_entry *eb = ent(&d->b, kb->ent);
	struct strata_mdir ca = { 0 }, cb = { 0 };
	struct strata_imgview_ent xa = ka->ent, xb = kb->ent;
	int w, r = 0;

	if (S_ISDIR(ea->mode))
		r = strata_mdir_child(d->a.v, ma, ka->name, ka->len, &ca);
	if (r == 0 && S_ISDIR(eb->mode))
		r = strata_mdir_child(d->b.v, mb, kb->name, kb->len, &cb);
	if (r < 0)
		goto out;
	if (S_ISDIR(ea->mode) && S_ISDIR(eb->mode)) {
		if (same_dir(d, &ca, &cb))
			goto out;	/* the same subtree */
		xa = strata_mdir_attr(d->a.v, &ca);
		xb = strata_mdir_attr(d->b.v, &cb);
	}
	w = compare(d, xa, xb);
	if (w < 0) {
		r = w;
		goto out;
	}
	if (w)
		r = add(d, 'C', (uint32_t)w, ea->mode, eb->mode,
			S_ISREG(ea->mode) ? ea->size : 0,
			S_ISREG(eb->mode) ? eb->size : 0);
	if (r == 0 && S_ISDIR(ea->mode) && S_ISDIR(eb->mode))
		r = walk(d, &ca, &cb);
	else if (r == 0 && S_ISDIR(eb->mode))
		r = add_tree(d, &cb);
out:
	free(ca.s);
	free(cb.s);
	return r;
}

static int walk(struct diff *d, const struct strata_mdir *ma,
		const struct strata_mdir *mb)
{
	struct strata_mkid *ka = NULL, *kb = NULL;
	size_t na = 0, nb = 0, i = 0, j = 0;
	int r;

	r = strata_mdir_list(d->a.v, ma, &ka, &na);
	if (r == 0)
		r = strata_mdir_list(d->b.v, mb, &kb, &nb);
	while (r == 0 && (i < na || j < nb)) {
		int c = i >= na ? 1 : j >= nb ? -1 :
			strata_lx_namecmp(ka[i].name, ka[i].len, kb[j].name,
					  kb[j].len);
		const struct strata_mkid *k = c <= 0 ? &ka[i] : &kb[j];
		size_t saved;

		r = path_push(d, k->name, k->len, &saved);
		if (r < 0)
			break;
		if (c == 0) {
			r = both(d, ma, mb, &ka[i], &kb[j]);
		} else if (c < 0) {
			const struct strata_lx_entry *e = ent(&d->a, ka[i].ent);
			struct strata_mdir cm = { 0 };
			uint64_t bytes = 0;

			if (S_ISDIR(e->mode))
				r = strata_mdir_child(d->a.v, ma, k->name, k->len, &cm);
			if (r == 0)
				r = tree_bytes(&d->a, k->ent, &cm, &bytes);
			if (r == 0)
				r = add(d, 'D', 0, e->mode, 0, bytes, 0);
			free(cm.s);
		} else {
			const struct strata_lx_entry *e = ent(&d->b, kb[j].ent);

			r = add(d, 'A', 0, 0, e->mode, 0,
				S_ISREG(e->mode) ? e->size : 0);
			if (r == 0 && S_ISDIR(e->mode)) {
				struct strata_mdir cm = { 0 };

				r = strata_mdir_child(d->b.v, mb, k->name, k->len, &cm);
				if (r == 0)
					r = add_tree(d, &cm);
				free(cm.s);
			}
		}
		path_pop(d, saved);
		if (c <= 0)
			i++;
		if (c >= 0)
			j++;
	}
	free(ka);
	free(kb);
	return r;
}

static int side_open(struct strata_store *st, struct strata_image *img,
		     struct side *s, struct strata_err *err)
{
	/* zstd:chunked layers lazily: the indexes and the content of the
	 * files compared are fetched, each file checked against the TOC */
	const struct strata_unpack_opts uo = { .lazy = true };
	int r = strata_cache_ensure(st, img, &uo, err);

	if (r == 0)
		r = strata_imgview_open(st, img, &s->v, err);
	if (r < 0)
		return r;
	s->img = img;
	s->n = (uint32_t)img->n_layers;
	return 0;
}

static void diff_free(struct diff *d)
{
	if (d->a.v)
		strata_imgview_free(d->a.v);
	if (d->b.v)
		strata_imgview_free(d->b.v);
	free(d->path);
	free(d->buf1);
	free(d->buf2);
}

static int diff_init(struct diff *d, struct strata_diff *out,
		     struct strata_err *err)
{
	memset(d, 0, sizeof(*d));
	memset(out, 0, sizeof(*out));
	d->out = out;
	d->err = err;
	d->pcap = 256;
	d->path = calloc(1, d->pcap);
	d->buf1 = malloc(CMP_CHUNK);
	d->buf2 = malloc(CMP_CHUNK);
	return d->path && d->buf1 && d->buf2 ? 0 : -ENOMEM;
}

int strata_diff_images(struct strata_store *st, struct strata_image *a,
		       struct strata_image *b, struct strata_diff *out,
		       struct strata_err *err)
{
	struct diff d;
	struct strata_mdir ma = { 0 }, mb = { 0 };
	int r;

	r = diff_init(&d, out, err);
	if (r == 0)
		r = side_open(st, a, &d.a, err);
	if (r == 0)
		r = side_open(st, b, &d.b, err);
	while (r == 0 && d.shared < d.a.n && d.shared < d.b.n &&
	       !strcmp(a->layers[d.shared].diff_id, b->layers[d.shared].diff_id))
		d.shared++;
	if (r == 0)
		r = strata_mdir_root(d.a.v, &ma);
	if (r == 0)
		r = strata_mdir_root(d.b.v, &mb);
	if (r == 0 && !same_dir(&d, &ma, &mb) && ma.n && mb.n)
		r = walk(&d, &ma, &mb);
	else if (r == 0 && !ma.n && mb.n)
		r = add_tree(&d, &mb);
	else if (r == 0 && ma.n && !mb.n)
		r = -EINVAL;	/* never: an image has a root */
	free(ma.s);
	free(mb.s);
	diff_free(&d);
	return conclude(out, r, err);
}

/* ---- an image and an upper directory ---- */

/* One entry of the upper's changeset. */
struct rec {
	char *path;		/* "a/b", as the tar names it */
	char type;
	bool marker;		/* .wh.NAME or the opaque marker */
	uint32_t mode;		/* with the type bits */
	uint64_t size;
	char *leader;		/* hardlink ('1'): the name with the data */
	bool linked;		/* an upper file with other names: */
	dev_t dev;		/* its identity, to open it again */
	ino_t ino;
	uint32_t what;		/* computed against the image */
	bool in_image;
	uint32_t old_mode;
	uint64_t old_size;
	bool data_pending;	/* regular: content not compared yet */
};

struct usink {
	struct diff *d;
	int upper_fd;
	struct rec *r;
	size_t n, cap;
};

static void recs_free(struct usink *u)
{
	size_t i;

	for (i = 0; i < u->n; i++) {
		free(u->r[i].path);
		free(u->r[i].leader);
	}
	free(u->r);
}

static bool is_marker(const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	return !strncmp(base, ".wh.", 4);
}

/* Compare the image's entry at @rc->path with @b. */
static int upper_meta(struct diff *d, struct rec *rc, const struct attrs *b)
{
	struct attrs a;
	struct strata_imgview_ent x;
	struct strata_mdir m;
	char *names = NULL;
	bool found;
	int r = strata_mdir_resolve(d->a.v, rc->path, &x, &m, &found);

	free(m.s);
	if (r < 0 || !found)
		return r;
	rc->in_image = true;
	lx_attrs(&d->a, x, &a);
	r = lx_xattrs(layer_of(&d->a, x.layer), x.entry, d->upper, &a,
		      &names);
	if (r == 0)
		rc->what = meta_diff(&a, b);
	rc->old_mode = a.mode;
	rc->old_size = a.size;
	attrs_free(&a);
	free(names);
	return r;
}

static int sink_entry(void *ctx, const struct strata_tar_hdr *h,
		      struct strata_err *err)
{
	struct usink *u = ctx;
	struct attrs b;
	struct rec *rc;
	int r;

	if (!h->path[0])
		return 0;	/* the root */
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 64;
		struct rec *nr = realloc(u->r, cap * sizeof(*nr));

		if (!nr)
			return strata_err_set(err, -ENOMEM, "diff: out of "
					      "memory");
		u->r = nr;
		u->cap = cap;
	}
	rc = &u->r[u->n];
	memset(rc, 0, sizeof(*rc));
	rc->path = strdup(h->path);
	if (!rc->path)
		return -ENOMEM;
	u->n++;
	rc->type = h->type;
	rc->marker = is_marker(h->path);
	if (rc->marker)
		return 0;
	if (h->type == '1') {
		/* the size is the leader's: compared once it is known */
		rc->leader = strdup(h->linkname);
		if (!rc->leader)
			return -ENOMEM;
	}
	hdr_attrs(h, &b);
	rc->mode = b.mode;
	rc->size = b.size;
	r = upper_meta(u->d, rc, &b);
	if (h->type == '1')
		rc->what &= ~STRATA_DIFF_SIZE;
	rc->data_pending = r == 0 && rc->in_image && rc->what == 0 &&
			   h->type == '0' && rc->size;
	return r;
}

/* Compare @fd's @size bytes with the image's file at @path. */
static int upper_content(struct diff *d, const char *path, int fd,
			 uint64_t size, uint32_t *what)
{
	struct strata_imgview_ent x;
	struct strata_mdir m;
	bool found;
	cleanup_fd int fa = -1;
	int r = strata_mdir_resolve(d->a.v, path, &x, &m, &found);

	free(m.s);
	if (r < 0 || !found)
		return r;
	fa = open_content(&d->a, x);
	if (fa < 0 && fa != -ENOENT)
		return content_error(d, &d->a, fa);
	r = same_bytes(d, fa, fd, size);
	if (r < 0)
		return strata_err_set(d->err, r, "upper %s: %s", path,
				      strerror(-r));
	if (!r)
		*what |= STRATA_DIFF_CONTENT;
	return 0;
}

static int sink_data(void *ctx, int fd, uint64_t size, struct strata_err *err)
{
	struct usink *u = ctx;
	struct rec *rc = u->n ? &u->r[u->n - 1] : NULL;
	struct stat st;

	(void)err;
	if (!rc || rc->type != '0')
		return 0;
	/* an upper file with other names: its data is theirs too */
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_nlink > 1) {
		rc->linked = true;
		rc->dev = st.st_dev;
		rc->ino = st.st_ino;
	}
	if (!rc->data_pending)
		return 0;
	rc->data_pending = false;
	return upper_content(u->d, rc->path, fd, size, &rc->what);
}

static int rec_cmp(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;

	return strcmp(x->path, y->path);
}

static struct rec *rec_find(struct usink *u, const char *path)
{
	struct rec key = { .path = (char *)path };

	return bsearch(&key, u->r, u->n, sizeof(*u->r), rec_cmp);
}

/* Set d->path to "/" @path (@len bytes). */
static int set_path(struct diff *d, const char *path, size_t len)
{
	size_t saved;

	d->plen = 0;
	return path_push(d, path, len, &saved);
}

/* The upper file the walk read for hardlink leader @l, opened again below
 * the upper directory without following a symlink, and only if it is
 * still that file. Return: fd or negative errno. */
static int open_leader(struct usink *u, const struct rec *l)
{
	const char *slash = strrchr(l->path, '/');
	cleanup_free char *dir = strndup(l->path, slash ? (size_t)(slash -
							    l->path) : 0);
	cleanup_fd int dfd = -1;
	struct stat st;
	int fd;

	if (!l->linked || !dir)
		return -ENOENT;
	dfd = *dir ? strata_open_beneath(u->upper_fd, dir)
		   : fcntl(u->upper_fd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0)
		return -ENOENT;
	fd = openat(dfd, slash ? slash + 1 : l->path,
		    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_dev != l->dev || st.st_ino != l->ino) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

/* A hardlink's data is its leader's. */
static int upper_hardlink(struct usink *u, struct rec *rc)
{
	struct rec *l = rec_find(u, rc->leader);
	cleanup_fd int fd = -1;

	if (!l || l->type != '0')
		return 0;
	rc->type = '0';
	rc->size = l->size;
	if (!rc->in_image || rc->what)
		return 0;
	if (!S_ISREG(rc->old_mode) || rc->old_size != rc->size) {
		rc->what |= STRATA_DIFF_SIZE;
		return 0;
	}
	if (!rc->size)
		return 0;
	fd = open_leader(u, l);
	if (fd < 0) {
		/* data from the image (a metacopy or a renamed directory's
		 * file), or gone meanwhile: not known to be the same */
		rc->what |= STRATA_DIFF_CONTENT;
		return 0;
	}
	return upper_content(u->d, rc->path, fd, rc->size, &rc->what);
}

/* The image's children of directory @dir ("" root) that the upper's
 * opaque directory hides, unless the upper has them again. */
static int opaque_deletes(struct usink *u, const char *dir)
{
	struct diff *d = u->d;
	struct strata_imgview_ent x;
	struct strata_mdir m;
	struct strata_mkid *k = NULL;
	size_t n = 0, i;
	bool found;
	int r = strata_mdir_resolve(d->a.v, dir, &x, &m, &found);

	if (r < 0 || !found || !S_ISDIR(ent(&d->a, x)->mode)) {
		free(m.s);
		return r;
	}
	r = strata_mdir_list(d->a.v, &m, &k, &n);
	for (i = 0; r == 0 && i < n; i++) {
		cleanup_free char *p = NULL;
		const struct strata_lx_entry *e = ent(&d->a, k[i].ent);
		struct strata_mdir cm = { 0 };
		uint64_t bytes = 0;

		if (asprintf(&p, "%s%s%.*s", dir, *dir ? "/" : "",
			     (int)k[i].len, k[i].name) < 0) {
			r = -ENOMEM;
			break;
		}
		if (rec_find(u, p))
			continue;
		if (S_ISDIR(e->mode))
			r = strata_mdir_child(d->a.v, &m, k[i].name, k[i].len, &cm);
		if (r == 0)
			r = tree_bytes(&d->a, k[i].ent, &cm, &bytes);
		free(cm.s);
		if (r == 0)
			r = set_path(d, p, strlen(p));
		if (r == 0)
			r = add(d, 'D', 0, e->mode, 0, bytes, 0);
	}
	free(k);
	free(m.s);
	return r;
}

/* A whiteout of @path: deleted, if the image has it and the upper does
 * not have it again. */
static int whiteout_delete(struct usink *u, const char *path)
{
	struct diff *d = u->d;
	struct strata_imgview_ent x;
	struct strata_mdir m;
	bool found;
	uint64_t bytes = 0;
	int r;

	if (rec_find(u, path))
		return 0;
	r = strata_mdir_resolve(d->a.v, path, &x, &m, &found);
	if (r == 0 && found)
		r = tree_bytes(&d->a, x, &m, &bytes);
	free(m.s);
	if (r == 0 && found)
		r = set_path(d, path, strlen(path));
	if (r == 0 && found)
		r = add(d, 'D', 0, ent(&d->a, x)->mode, 0, bytes, 0);
	return r;
}

/* Does the upper hide what the image has under directory @path: is it,
 * or a directory above it, opaque (deleted and made again, or a renamed
 * directory written in full over one the image has)? */
static bool under_opaque(struct usink *u, const char *path)
{
	size_t n = strlen(path), i;
	cleanup_free char *p = malloc(n + sizeof("/.wh..wh..opq"));

	if (!p)
		return false;
	for (i = 1; i <= n; i++) {
		if (i < n && path[i] != '/')
			continue;
		memcpy(p, path, i);
		strcpy(p + i, "/.wh..wh..opq");
		if (rec_find(u, p))
			return true;
	}
	return false;
}

static int upper_changes(struct usink *u)
{
	struct diff *d = u->d;
	size_t i;
	int r = 0;

	if (u->n)
		qsort(u->r, u->n, sizeof(*u->r), rec_cmp);
	for (i = 0; r == 0 && i < u->n; i++)
		if (u->r[i].type == '1')
			r = upper_hardlink(u, &u->r[i]);
	for (i = 0; r == 0 && i < u->n; i++) {
		struct rec *rc = &u->r[i];
		const char *slash = strrchr(rc->path, '/');
		const char *base = slash ? slash + 1 : rc->path;
		size_t dlen = slash ? (size_t)(slash - rc->path) : 0;

		if (rc->marker) {
			cleanup_free char *dir = strndup(rc->path, dlen);
			cleanup_free char *target = NULL;

			if (!dir)
				return -ENOMEM;
			if (!strcmp(base, ".wh..wh..opq"))
				continue;	/* with its directory */
			if (asprintf(&target, "%s%s%s", dir, *dir ? "/" : "",
				     base + 4) < 0)
				return -ENOMEM;
			r = whiteout_delete(u, target);
			continue;
		}
		/* what the image held in an opaque directory and the upper
		 * does not have again, at any depth */
		if (rc->type == '5' && rc->in_image && S_ISDIR(rc->old_mode) &&
		    under_opaque(u, rc->path))
			r = opaque_deletes(u, rc->path);
		if (r == 0)
			r = set_path(d, rc->path, strlen(rc->path));
		if (r < 0)
			break;
		if (!rc->in_image)
			r = add(d, 'A', 0, 0, rc->mode, 0, rc->size);
		else if (rc->what)
			r = add(d, 'C', rc->what, rc->old_mode, rc->mode,
				rc->old_size, rc->size);
	}
	return r;
}

int strata_diff_upper(struct strata_store *st, struct strata_image *img,
		      int upper_fd, struct strata_diff *out,
		      struct strata_err *err)
{
	struct strata_layer_walk lw = {
		.st = st, .img = img, .upper_fd = upper_fd,
		.sink_entry = sink_entry, .sink_data = sink_data,
	};
	struct usink u = { 0 };
	struct diff d;
	uint64_t entries = 0;
	int r;

	r = diff_init(&d, out, err);
	if (r == 0)
		r = side_open(st, img, &d.a, err);
	d.upper = true;
	u.d = &d;
	u.upper_fd = upper_fd;
	lw.sink_ctx = &u;
	if (r == 0)
		r = strata_commit_layer(&lw, NULL, &entries, err);
	if (r == 0)
		r = upper_changes(&u);
	recs_free(&u);
	diff_free(&d);
	return conclude(out, r, err);
}
