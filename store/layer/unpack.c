/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unpacking one layer into the cache.
 *
 * One pass over the blob: the compressed bytes are counted and hashed
 * (descriptor size and digest), decompressed here with zlib/zstd (so the
 * gzip trailer CRC is checked, which libarchive skips), hashed again
 * (diff_id) and handed to libarchive's tar reader beside Go's rules
 * (tarscan.c); a lazy layer's metadata pass reads with Go's rules alone
 * (read_go_only()). Trailing bytes after the
 * tar's end blocks are drained into the diff_id hash too, as umoci does;
 * bytes after the compressed stream (other than further gzip members or
 * zstd frames, which continue it) are refused, as Go's readers refuse
 * them. That reader is unpack-read.c; the in-memory tree and the index
 * written from it are unpack-tree.c; this file applies the entries.
 *
 * Names from the tar never become host paths: a regular file's content goes
 * to data/<n> (n a counter), and names, owners, modes, times, xattrs,
 * devices, links and whiteouts go to the metadata index. So no entry can
 * write outside the cache, and no setuid file or device node is created.
 * Nothing is published until every check has passed.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "unpack-int.h"

/* ---- entry handling ---- */

struct unpack {
	struct tree t;
	struct archive *a;
	int datafd;
	const char *layer;	/* short digest for messages */
	struct strata_err *err;
	uint64_t max_entries;
	uint64_t entries;
	unsigned char *buf;
	struct reader *rd;	/* the decompressing reader feeding @a */
	uint64_t dups;		/* names given twice, the later one kept */
	char first_dup[256];	/* the first of them, for the warning */
	bool lazy;		/* content numbered, not written */
	const struct strata_unpack_job *job;	/* or NULL (lxbuild) */
	bool esgz_last;		/* the last entry was eStargz's TOC */
};

static int entry_error(struct unpack *u, const char *name, int code,
		       const char *why)
{
	char p[300];

	if (!name || !*name)
		return strata_err_set(u->err, code, "layer %s: entry with no "
				      "name: %s", u->layer, why);
	strata_printable(name, SIZE_MAX, p, sizeof(p));
	return strata_err_set(u->err, code, "layer %s: entry %s: %s",
			      u->layer, p, why);
}

struct comps {
	const char *c[PATH_MAX_BYTES / 2];
	size_t len[PATH_MAX_BYTES / 2];
	size_t n;
};

/*
 * Split a tar name into components: leading "/" and "./" dropped, "//" and
 * "." collapsed (P2, P3). ".." is refused (P1), as are names over PATH_MAX
 * and components over NAME_MAX (P6): truncating could alias two names.
 */
static int split_path_as(struct unpack *u, const char *name,
			 const char *entry, struct comps *c, char *scratch);

static int split_path(struct unpack *u, const char *name, struct comps *c,
		      char *scratch)
{
	return split_path_as(u, name, NULL, c, scratch);
}

/* As split_path; errors name @entry (when set), whose @name this is. */
static int split_path_as(struct unpack *u, const char *name,
			 const char *entry, struct comps *c, char *scratch)
{
	size_t len = strlen(name), i = 0;
	const char *path = name;
	char *s;

	if (entry)
		name = entry;	/* for messages */
	if (len >= PATH_MAX_BYTES)
		return entry_error(u, name, -ENAMETOOLONG,
				   "path longer than 4096 bytes");
	memcpy(scratch, path, len + 1);
	c->n = 0;
	s = scratch;
	while (i <= len) {
		size_t start = i;

		while (i < len && s[i] != '/')
			i++;
		s[i] = '\0';
		if (i - start == 0 || (i - start == 1 && s[start] == '.')) {
			i++;
			continue;
		}
		if (i - start == 2 && s[start] == '.' && s[start + 1] == '.')
			return entry_error(u, name, -EPERM,
					   "path leaves the layer (\"..\")");
		if (i - start > NAME_MAX_BYTES)
			return entry_error(u, name, -ENAMETOOLONG,
					   "name component longer than 255 "
					   "bytes");
		c->c[c->n] = s + start;
		c->len[c->n] = i - start;
		c->n++;
		i++;
	}
	return 0;
}

/* Walk (creating implied directories) to the parent of the last component. */
static int walk_parent(struct unpack *u, const char *name,
		       const struct comps *c, uint32_t *out)
{
	uint32_t cur = 0;
	size_t i;
	int r;

	for (i = 0; i + 1 < c->n; i++) {
		uint32_t nx = up_tree_find(&u->t, cur, c->c[i], c->len[i]);
		struct unode *n;

		if (c->len[i] >= 4 && !memcmp(c->c[i], ".wh.", 4))
			return entry_error(u, name, -EPERM,
					   "whiteout prefix \".wh.\" on a "
					   "directory component");
		if (nx == NONE) {
			r = up_tree_add(&u->t, cur, c->c[i], c->len[i], &nx);
			if (r < 0)
				return r;
			up_make_implied_dir(&u->t.nodes[nx]);
		}
		n = &u->t.nodes[nx];
		if (n->flags & STRATA_LX_WHITEOUT) {
			/* whited out, then recreated in the same layer */
			n->flags = STRATA_LX_OPAQUE | STRATA_LX_REPLACED;
			up_make_implied_dir(n);
		}
		if (S_ISLNK(n->mode))
			return entry_error(u, name, -EPERM,
					   "path goes through a symlink of the "
					   "same layer");
		if (!S_ISDIR(n->mode))
			return entry_error(u, name, -ENOTDIR,
					   "parent is not a directory");
		cur = nx;
	}
	*out = cur;
	return 0;
}

/* AUFS keeps hardlink and other bookkeeping under .wh..wh.* names: not
 * content, hidden (moby does the same). */
static bool aufs_meta(const struct comps *c)
{
	size_t i;

	for (i = 0; i + 1 < c->n; i++)
		if (c->len[i] >= 8 && !memcmp(c->c[i], ".wh..wh.", 8))
			return true;
	return false;
}

/* Can a whiteout at @c apply? Not when a parent is a non-directory of
 * this same layer: there is nothing below it to delete. */
static bool whiteout_reachable(struct unpack *u, const struct comps *c)
{
	uint32_t cur = 0;
	size_t i;

	for (i = 0; i + 1 < c->n; i++) {
		cur = up_tree_find(&u->t, cur, c->c[i], c->len[i]);
		if (cur == NONE)
			return true;
		if (!S_ISDIR(u->t.nodes[cur].mode) &&
		    !(u->t.nodes[cur].flags & STRATA_LX_WHITEOUT))
			return false;
	}
	return true;
}

static int lookup_path(struct unpack *u, const struct comps *c, uint32_t *out)
{
	uint32_t cur = 0;
	size_t i;

	for (i = 0; i < c->n; i++) {
		cur = up_tree_find(&u->t, cur, c->c[i], c->len[i]);
		if (cur == NONE ||
		    (i + 1 < c->n && !S_ISDIR(u->t.nodes[cur].mode)))
			return -ENOENT;
	}
	*out = cur;
	return 0;
}

static int handle_whiteout(struct unpack *u, const char *name, uint32_t parent,
			   const char *base, size_t blen)
{
	const char *target = base + 4;
	size_t tlen = blen - 4;
	uint32_t idx;
	int r;

	if (blen == 12 && !memcmp(base, ".wh..wh..opq", 12)) {
		u->t.nodes[parent].flags |= STRATA_LX_OPAQUE;
		return 0;
	}
	if (tlen == 0)
		return entry_error(u, name, -EBADMSG,
				   "whiteout without a name (\".wh.\")");
	if ((tlen == 1 && target[0] == '.') ||
	    (tlen == 2 && target[0] == '.' && target[1] == '.'))
		return entry_error(u, name, -EPERM,
				   "whiteout of \".\" or \"..\"");
	if (tlen >= 4 && !memcmp(target, ".wh.", 4))
		return 0;	/* AUFS metadata (.wh..wh.plnk etc.): hidden */
	idx = up_tree_find(&u->t, parent, target, tlen);
	if (idx != NONE) {
		/* OCI: a whiteout never hides an entry of its own layer; a
		 * directory of this layer with the same name hides what is
		 * below it, i.e. becomes opaque. */
		if (S_ISDIR(u->t.nodes[idx].mode))
			u->t.nodes[idx].flags |= (u->t.nodes[idx].flags &
						  STRATA_LX_IMPLIED)
				? U_WHITED : STRATA_LX_OPAQUE;
		return 0;
	}
	r = up_tree_add(&u->t, parent, target, tlen, &idx);
	if (r < 0)
		return r;
	u->t.nodes[idx].flags = STRATA_LX_WHITEOUT;
	u->t.nodes[idx].mode = 0;
	return 0;
}

/*
 * Can Linux hold an xattr of this name? Only names in its four namespaces;
 * others (com.apple.*, a bare name, what a BSD tar recorded) are not
 * shown, as setxattr(2) would refuse them to every extracting peer.
 */
static bool linux_xattr(const char *name, size_t len)
{
	static const char *const ns[] = { "user.", "trusted.", "security.",
					   "system." };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(ns); i++)
		if (len > strlen(ns[i]) && !memcmp(name, ns[i], strlen(ns[i])))
			return true;
	return false;
}

/* The xattrs of @g (its SCHILY.xattr.* pax records, as Go's archive/tar
 * and the Docker, containerd and umoci code over it read them; libarchive's
 * own LIBARCHIVE.xattr.* records are not among them). */
static int add_xattrs(struct unpack *u, const struct strata_tar_entry *g,
		      struct unode *n, const char *name)
{
	const unsigned char *x = g->xattrs, *xend = x + g->xattrs_len;
	uint32_t start = (uint32_t)u->t.xat_len, total;

	/* records follow a u32 total length, filled in at the end */
	if (up_grow((void **)&u->t.xat, &u->t.xat_cap, u->t.xat_len + 4, 1) < 0)
		return -ENOMEM;
	u->t.xat_len += 4;
	while (x && x + 6 <= xend) {
		size_t nlen = (size_t)x[0] | (size_t)x[1] << 8;
		size_t vlen = (size_t)x[2] | (size_t)x[3] << 8 |
			      (size_t)x[4] << 16 | (size_t)x[5] << 24;
		const char *xname = (const char *)x + 6;
		size_t need = 6 + nlen + vlen;
		uint8_t *p;

		x += need;
		if (!linux_xattr(xname, nlen) || memchr(xname, '\0', nlen))
			continue;
		/* Overlay bookkeeping in a layer is not ours to interpret,
		 * and must never leak into a view or an export (T5). */
		if ((nlen > 16 && !memcmp(xname, "trusted.overlay.", 16)) ||
		    (nlen > 13 && !memcmp(xname, "user.overlay.", 13)))
			continue;
		if (nlen > 17 && !memcmp(xname, "system.posix_acl_", 17))
			u->t.features |= STRATA_LX_HAS_ACL;
		if (nlen == 16 && !memcmp(xname, "security.selinux", 16))
			u->t.features |= STRATA_LX_HAS_SELINUX;
		if (nlen > 255 || vlen > 65536)
			return entry_error(u, name, -EBADMSG,
					   "invalid extended attribute");
		if (u->t.xat_len + need > UINT32_MAX)
			return -EFBIG;
		if (up_grow((void **)&u->t.xat, &u->t.xat_cap,
			    u->t.xat_len + need, 1) < 0)
			return -ENOMEM;
		p = u->t.xat + u->t.xat_len;
		memcpy(p, x - need, need);
		u->t.xat_len += need;
	}
	total = (uint32_t)(u->t.xat_len - start - 4);
	if (total == 0) {
		u->t.xat_len = start;
		n->xattr_len = 0;
		return 0;
	}
	memcpy(u->t.xat + start, &total, 4);
	n->xattr_off = start;
	n->xattr_len = total;
	return 0;
}

/*
 * Is libarchive's data block [@off, @off + @len) where Go's reading puts
 * data: right after the previous one (@end) for a plain file, inside the
 * fragments of @g's sparse map (from fragment *@j on) for a sparse one?
 */
static bool block_in_place(const struct strata_tar_entry *g, size_t *j,
			   uint64_t off, uint64_t len, uint64_t end)
{
	if (!g->sparse)
		return off == end;
	while (len > 0) {
		uint64_t fo, fe;

		while (*j < g->map_n && (uint64_t)(g->map[2 * *j] +
						   g->map[2 * *j + 1]) <= off)
			(*j)++;
		if (*j == g->map_n)
			return false;
		fo = (uint64_t)g->map[2 * *j];
		fe = fo + (uint64_t)g->map[2 * *j + 1];
		if (off < fo)
			return false;
		if (fe - off >= len)
			return true;
		len -= fe - off;
		off = fe;
	}
	return true;
}

static int write_content(struct unpack *u, struct unode *n, const char *name,
			 const struct strata_tar_entry *g)
{
	uint64_t written = 0, want = 0;
	size_t frag = 0, i;
	bool sparse = g->sparse;

	char fname[16];
	cleanup_fd int fd = -1;
	const void *buf;
	size_t len;
	la_int64_t off;
	uint64_t end = 0;
	int ar;

	n->data_id = ++u->t.next_data;
	snprintf(fname, sizeof(fname), "%u", n->data_id);
	fd = openat(u->datafd, fname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		    0644);
	if (fd < 0)
		return strata_err_set(u->err, -errno, "layer %s: cache: %s",
				      u->layer, strerror(errno));
	while ((ar = archive_read_data_block(u->a, &buf, &len, &off)) ==
	       ARCHIVE_OK) {
		const char *p = buf;

		if (off < 0 || (uint64_t)off + len > n->size)
			return entry_error(u, name, -EBADMSG,
					   "data beyond the entry's size");
		if (len && !block_in_place(g, &frag, (uint64_t)off, len, end))
			return entry_error(u, name, -EBADMSG, "libarchive and "
					   "Go's archive/tar place this "
					   "entry's data differently: refused");
		written += len;
		while (len > 0) {
			ssize_t w = pwrite(fd, p, len, off);

			if (w < 0) {
				if (errno == EINTR)
					continue;
				return strata_err_set(u->err, -errno,
						      "layer %s: cache: %s",
						      u->layer, strerror(errno));
			}
			p += w;
			off += w;
			len -= (size_t)w;
		}
		if ((uint64_t)off > end)
			end = (uint64_t)off;
	}
	/* the reader's own failure (a limit, a read error) says more than
	 * libarchive's "truncated" */
	if (ar != ARCHIVE_EOF && u->rd && u->rd->error)
		return strata_err_set(u->err, u->rd->error, "layer %s: %s",
				      u->layer, u->rd->msg);
	if (ar != ARCHIVE_EOF)
		return entry_error(u, name, -EBADMSG,
				   strata_archive_error(u->a));
	/* Only a sparse file ends in a hole; other data that stops short
	 * of the size is a cut entry (libarchive would zero-fill a GNU
	 * "realsize" past the data, which Go does not read) */
	if (end < n->size && !sparse)
		return entry_error(u, name, -EBADMSG, "the entry's data ends "
				   "before its size");
	for (i = 0; sparse && i < g->map_n; i++)
		want += (uint64_t)g->map[2 * i + 1];
	if (sparse && written != want)
		return entry_error(u, name, -EBADMSG, "libarchive and Go's "
				   "archive/tar read different data for this "
				   "sparse file: refused");
	if (end < n->size && ftruncate(fd, (off_t)n->size) < 0)
		return -errno;
	u->t.data_bytes += n->size;
	return 0;
}

static int handle_hardlink(struct unpack *u, const char *name, uint32_t idx,
			   const char *target, char *scratch)
{
	struct comps *c = malloc(sizeof(*c));
	struct unode *n = &u->t.nodes[idx], *t;
	uint32_t ti = 0;
	int r;

	if (!c)
		return -ENOMEM;
	r = split_path_as(u, target, name, c, scratch);
	if (r == 0 && c->n == 0)
		r = entry_error(u, name, -EPERM, "hardlink to the root");
	if (r == 0 && lookup_path(u, c, &ti) < 0)
		r = entry_error(u, name, -EPERM, "hardlink target is not in "
				"this layer (leaves the layer or is missing)");
	free(c);
	if (r < 0)
		return r;
	t = &u->t.nodes[ti];
	n = &u->t.nodes[idx];
	if (t->flags & STRATA_LX_WHITEOUT || ti == idx)
		return entry_error(u, name, -EPERM,
				   "hardlink target is not in this layer");
	if (S_ISDIR(t->mode))
		return entry_error(u, name, -EPERM, "hardlink to a directory");
	n->leader = t->leader;
	n->mode = t->mode;
	u->t.nodes[t->leader].nlink++;
	return 0;
}

#define DEAD (UINT32_MAX - 1)	/* parent of a node no longer in the tree */

/*
 * Node @idx leaves its hardlink group, or gives up its content: a
 * follower takes the group's inode (the other names keep the old content,
 * as after unlink(2)); an unshared file's content is deleted.
 */
static void unlink_inode(struct unpack *u, uint32_t idx)
{
	struct tree *t = &u->t;
	struct unode *n = &t->nodes[idx];
	uint32_t i, heir = NONE;
	char fname[16];

	if (n->leader != idx) {
		t->nodes[n->leader].nlink--;
		return;
	}
	if (n->nlink <= 1) {
		if (S_ISREG(n->mode) && n->data_id) {
			snprintf(fname, sizeof(fname), "%u", n->data_id);
			unlinkat(u->datafd, fname, 0);
			t->data_bytes -= n->size;
		}
		return;
	}
	for (i = 1; i < t->n; i++) {
		struct unode *f = &t->nodes[i];

		if (i == idx || f->leader != idx || f->parent == DEAD)
			continue;
		if (heir == NONE) {
			heir = i;
			f->mode = n->mode;
			f->owner = n->owner;
			f->size = n->size;
			f->mtime_sec = n->mtime_sec;
			f->mtime_nsec = n->mtime_nsec;
			f->rdev = n->rdev;
			f->link_off = n->link_off;
			f->xattr_off = n->xattr_off;
			f->xattr_len = n->xattr_len;
			f->data_id = n->data_id;
			f->nlink = n->nlink - 1;
		}
		f->leader = heir;
	}
}

/* Drop the children of directory @idx, and theirs (a later entry of the
 * layer replaced it). */
static void drop_children(struct unpack *u, uint32_t idx)
{
	uint32_t c = u->t.nodes[idx].first_child;

	while (c != NONE) {
		struct unode *k = &u->t.nodes[c];
		uint32_t next = k->next_sibling;

		if (S_ISDIR(k->mode))
			drop_children(u, c);
		else if (!(k->flags & STRATA_LX_WHITEOUT))
			unlink_inode(u, c);
		k->parent = DEAD;
		c = next;
	}
	u->t.nodes[idx].first_child = NONE;
	u->t.nodes[idx].n_children = 0;
}

/*
 * A later entry of the layer names node @idx again (R16): as Docker,
 * containerd and umoci apply a layer, the earlier one is removed (a
 * directory with all this layer put in it) and the later one made in its
 * place. A directory made where this layer had put something else hides
 * what is below it, as the removal did.
 */
static void replace_node(struct unpack *u, uint32_t idx, bool dir,
			 const char *name)
{
	struct unode *n = &u->t.nodes[idx];
	uint16_t keep = n->flags & (STRATA_LX_REPLACED | U_WHITED);

	if (!u->dups++)
		strata_printable(name, SIZE_MAX, u->first_dup,
				 sizeof(u->first_dup));
	if (S_ISDIR(n->mode))
		drop_children(u, idx);
	else
		unlink_inode(u, idx);
	n = &u->t.nodes[idx];
	n->flags = keep ? STRATA_LX_REPLACED : 0;
	if (dir)
		n->flags |= STRATA_LX_OPAQUE | STRATA_LX_REPLACED;
	n->mode = 0;
	n->size = 0;
	n->rdev = 0;
	n->link_off = 0;
	n->xattr_off = n->xattr_len = 0;
	n->data_id = 0;
	n->leader = idx;
	n->nlink = 1;
}

/* The file type of Go's type flag @f (already checked by tarscan.c). */
static mode_t go_filetype(char f)
{
	switch (f) {
	case '2':
		return AE_IFLNK;
	case '3':
		return AE_IFCHR;
	case '4':
		return AE_IFBLK;
	case '5':
		return AE_IFDIR;
	case '6':
		return AE_IFIFO;
	default:
		return AE_IFREG;	/* '0', '7'; '1' is a hard link */
	}
}

/*
 * Did libarchive read the entry Go's archive/tar reads at this place, @g?
 * Both follow the same bytes; where they part (a size field one reads and
 * the other does not, data one takes for headers), a layer would mean two
 * things, so it is refused, naming the entry.
 */
static int same_entry(struct unpack *u, struct archive_entry *e,
		      const struct strata_tar_entry *g)
{
	const char *name = archive_entry_pathname(e);
	const char *hl = archive_entry_hardlink(e);
	const char *sl = archive_entry_symlink(e);
	char why[400], p[200];
	const char *what = NULL;

	if (!name)
		name = "";
	if (!g)
		return entry_error(u, name, -EBADMSG, "libarchive reads an "
				   "entry here that Go's archive/tar does not "
				   "(the tar readers disagree: refused)");
	if (strcmp(name, g->name))
		what = "name";
	else if (g->type == '1' ? !hl || strcmp(hl, g->link) : hl != NULL)
		what = "hard link";
	else if (g->type != '1' &&
		 archive_entry_filetype(e) != go_filetype(g->type))
		what = "type";
	else if (g->type == '2' && (!sl || strcmp(sl, g->link)))
		what = "symlink target";
	if (!what)
		return 0;
	strata_printable(g->name, SIZE_MAX, p, sizeof(p));
	snprintf(why, sizeof(why), "libarchive and Go's archive/tar read this "
		 "entry's %s differently (Go reads entry %s, type '%c'): "
		 "refused", what, g->name[0] ? p : "with no name", g->type);
	return entry_error(u, name, -EBADMSG, why);
}

/*
 * Apply entry @g to the tree. Its content comes from libarchive (u->a),
 * or, for a lazy layer (u->lazy), is only numbered: *@data_id gets the
 * content number of a non-empty regular file, else 0.
 */
static int apply_entry(struct unpack *u, const struct strata_tar_entry *g,
		       uint32_t *data_id)
{
	static __thread char scratch[PATH_MAX_BYTES + 1];
	static __thread char scratch2[PATH_MAX_BYTES + 1];
	const char *name, *hl;
	struct comps *c;
	uint32_t parent = 0, idx;
	struct unode *n;
	mode_t type;
	const char *base;
	size_t blen;
	int r;

	*data_id = 0;
	name = g->name;
	hl = g->type == '1' ? g->link : NULL;
	type = go_filetype(g->type);
	if (!name[0])	/* not the root: "." or "/" name that */
		return entry_error(u, name, -EBADMSG, "the tar header's name "
				   "is empty");
	if (++u->entries > u->max_entries)
		return entry_error(u, name, -EFBIG, "too many entries in the layer");
	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	r = split_path(u, name, c, scratch);
	if (r < 0)
		goto out;
	if (c->n == 0) {
		/* "." or "/": attributes of the layer root (P4) */
		if (type != AE_IFDIR || hl) {
			r = entry_error(u, name, -EPERM,
					"non-directory entry for the root");
			goto out;
		}
		n = &u->t.nodes[0];
		idx = 0;
		goto attrs;
	}
	base = c->c[c->n - 1];
	blen = c->len[c->n - 1];
	if (aufs_meta(c) || (blen >= 4 && !memcmp(base, ".wh.", 4) &&
			     !whiteout_reachable(u, c))) {
		r = 0;	/* nothing to apply (W11; umoci repack's whiteouts
			 * under a directory it replaced by a file) */
		goto out;
	}
	r = walk_parent(u, name, c, &parent);
	if (r < 0)
		goto out;
	if (blen >= 4 && !memcmp(base, ".wh.", 4)) {
		r = handle_whiteout(u, name, parent, base, blen);
		goto out;
	}
	idx = up_tree_find(&u->t, parent, base, blen);
	if (idx != NONE) {
		n = &u->t.nodes[idx];
		if (n->flags & STRATA_LX_WHITEOUT) {
			n->flags = STRATA_LX_REPLACED |
				   (type == AE_IFDIR && !hl ? STRATA_LX_OPAQUE : 0);
		} else if (S_ISDIR(n->mode) && type == AE_IFDIR && !hl) {
			/* a directory repeated: its attributes replaced */
			n->flags &= ~STRATA_LX_IMPLIED;
		} else {
			replace_node(u, idx, type == AE_IFDIR && !hl, name);
		}
	} else {
		r = up_tree_add(&u->t, parent, base, blen, &idx);
		if (r < 0)
			goto out;
		n = &u->t.nodes[idx];
	}
	if (hl) {
		r = handle_hardlink(u, name, idx, hl, scratch2);
		goto out;
	}
attrs:
	switch (type) {
	case AE_IFREG:
	case AE_IFDIR:
	case AE_IFLNK:
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO:
		break;
	default:
		r = entry_error(u, name, -EBADMSG, "unsupported entry type");
		goto out;
	}
	if (g->uid < 0 || g->uid > 0xfffffffe ||
	    g->gid < 0 || g->gid > 0xfffffffe) {
		r = entry_error(u, name, -EBADMSG, "owner out of range");
		goto out;
	}
	/* Linux symlinks always carry 0777, whatever the tar says. */
	n->mode = (uint32_t)(type | (type == AE_IFLNK ? 0777
					: ((uint32_t)g->mode & 07777)));
	n->flags &= ~STRATA_LX_IMPLIED;
	r = up_owner_index(&u->t, (uint32_t)g->uid, (uint32_t)g->gid);
	if (r < 0) {
		r = r == -E2BIG ? entry_error(u, name, -EBADMSG, "more than "
					      "65535 different owners "
					      "(uid:gid) in one layer")
				: r;
		goto out;
	}
	n->owner = (uint16_t)r;
	/* clamped to what the index holds (34-bit seconds: years 1698 to
	 * 2242), like containerd's boundTime (T11) */
	n->mtime_sec = g->mtime_sec;
	if (n->mtime_sec < -STRATA_LX_SEC_BIAS)
		n->mtime_sec = -STRATA_LX_SEC_BIAS;
	if (n->mtime_sec >= STRATA_LX_SEC_BIAS)
		n->mtime_sec = STRATA_LX_SEC_BIAS - 1;
	n->mtime_nsec = g->mtime_nsec;
	if (n->mtime_nsec >= 1000000000u)
		n->mtime_nsec = 0;
	r = add_xattrs(u, g, &u->t.nodes[idx], name);
	if (r < 0)
		goto out;
	n = &u->t.nodes[idx];
	if (type == AE_IFCHR || type == AE_IFBLK) {
		/* Linux dev_t: 12-bit major, 20-bit minor; anything bigger
		 * would silently name another device (T2) */
		if (g->devmajor < 0 || g->devmajor > 4095 ||
		    g->devminor < 0 || g->devminor > 1048575) {
			r = entry_error(u, name, -EBADMSG, "device number out "
					"of range");
			goto out;
		}
		n->rdev = makedev((unsigned int)g->devmajor,
				  (unsigned int)g->devminor);
	} else if (type == AE_IFLNK) {
		const char *target = g->link;
		size_t tlen = target ? strlen(target) : 0;

		if (tlen == 0 || tlen >= PATH_MAX_BYTES) {
			r = entry_error(u, name, -EBADMSG,
					tlen ? "symlink target too long"
					     : "empty symlink target");
			goto out;
		}
		r = up_add_str(&u->t, target, tlen, &u->t.nodes[idx].link_off);
		if (r < 0)
			goto out;
		n = &u->t.nodes[idx];
		n->size = tlen;
	} else if (type == AE_IFREG) {
		int64_t size = g->size;

		if (size < 0) {
			r = entry_error(u, name, -EBADMSG, "negative size");
			goto out;
		}
		if ((uint64_t)size > STRATA_LX_MAX_SIZE) {
			r = entry_error(u, name, -EFBIG, "file larger than "
					"256 TiB");
			goto out;
		}
		n->size = (uint64_t)size;
		if (size > 0 && u->lazy) {
			n->data_id = ++u->t.next_data;
			u->t.data_bytes += n->size;
			*data_id = n->data_id;
		} else if (size > 0) {
			r = write_content(u, n, name, g);
		}
	}
out:
	free(c);
	return r;
}

/*
 * eStargz (stargz-snapshotter docs/estargz.md) keeps its table of contents
 * as the last tar entry, stargz.index.json, and marks the end of the files
 * to prefetch with .prefetch.landmark (or asks for none with
 * .no.prefetch.landmark), regular files at the layer root. They are the
 * format's, not the image's: stargz-snapshotter's lazy mount hides the
 * landmarks (fs/layer/node.go) and its TOC has no entry for
 * stargz.index.json; containers/storage's partial pull skips all three
 * (pkg/chunked, mustSkipFile). strata hides them too, lazy or unpacked in
 * full, so both show one tree; a full unpack does so only for a tar whose
 * last entry is stargz.index.json, a property of the uncompressed stream,
 * so the cache entry of a diff_id does not depend on the manifest that
 * named it.
 */
static const char *const esgz_meta[] = {
	"stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark",
};

bool strata_esgz_meta_name(const char *name, size_t which)
{
	while (name[0] == '.' && name[1] == '/')
		name += 2;
	while (name[0] == '/')
		name++;
	return !strcmp(name, esgz_meta[which]);
}

static void hide_esgz_meta(struct unpack *u)
{
	struct tree *t = &u->t;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(esgz_meta); i++) {
		uint32_t idx = up_tree_find(t, 0, esgz_meta[i], strlen(esgz_meta[i]));
		uint32_t *link = &t->nodes[0].first_child;

		if (idx == NONE || !S_ISREG(t->nodes[idx].mode) ||
		    (t->nodes[idx].flags & STRATA_LX_WHITEOUT))
			continue;
		unlink_inode(u, idx);
		while (*link != NONE && *link != idx)
			link = &t->nodes[*link].next_sibling;
		if (*link == idx) {
			*link = t->nodes[idx].next_sibling;
			t->nodes[0].n_children--;
		}
		t->nodes[idx].parent = DEAD;
	}
}

/* Entry @g, as Go's archive/tar reads it, into the tree; for a lazy layer,
 * the pass is told where its content lies in the tar. */
static int take_entry(struct unpack *u, const struct strata_tar_entry *g)
{
	uint32_t data_id;
	int r;

	if (u->lazy && g->sparse)
		return entry_error(u, g->name, -EOPNOTSUPP, "sparse file: the "
				   "layer is unpacked in full");
	if (g->sparse && !g->map_ready)
		return entry_error(u, g->name, -EBADMSG, "libarchive read this "
				   "sparse file before Go's archive/tar could "
				   "read its map: refused");
	r = apply_entry(u, g, &data_id);
	u->esgz_last = r == 0 && g->type == '0' &&
		       strata_esgz_meta_name(g->name, 0);
	if (r < 0 || !data_id || !u->job)
		return r;
	/* the content follows the entry's own header block */
	r = u->job->lazy_file(u->job->lazy_ctx, data_id, g->name,
			      g->offset + 512, (uint64_t)g->size);
	return r < 0 ? strata_err_set(u->err, r, "layer %s: %s", u->layer,
				      strerror(-r)) : 0;
}

/* Unpacking in full: libarchive's entry @e writes the content, so it must
 * be the entry Go reads at the same place. */
static int handle_entry(struct unpack *u, struct archive_entry *e)
{
	const struct strata_tar_entry *g = strata_tarscan_next(&u->rd->scan);
	int r = same_entry(u, e, g);

	return r < 0 ? r : take_entry(u, g);
}

/* The reading stopped: the reader's error where it has one (the blob, its
 * decompression, Go's rules), else libarchive's, saying @what it found. */
static int read_failed(struct unpack *u, struct reader *rd, const char *what)
{
	if (rd->error)
		return strata_err_set(u->err, rd->error, "layer %s: %s",
				      u->layer, rd->msg);
	return strata_err_set(u->err, -EBADMSG, "layer %s: %s: %s", u->layer,
			      what, strata_archive_error(u->a));
}

/*
 * A lazy layer is read with Go's rules alone. Nothing of it comes from
 * libarchive: its files are found later at the offsets Go's reading gives
 * (unpack.h, lazy_file), so there is no second reading whose content could
 * differ from what is shown, and the mount shows the tree Docker, podman
 * and umoci build. libarchive's reading cost 6% of the lazy pass's CPU
 * (each header parsed a second time, each name converted to a wide
 * string) for a check whose reason, content written by a reader other
 * than the one that named it, does not arise here. The stream is read to
 * its end, so what follows the tar's end blocks is checked as before.
 */
static int read_go_only(struct unpack *u, struct reader *rd)
{
	for (;;) {
		const struct strata_tar_entry *g;
		const void *b;
		ssize_t n = up_next_chunk(rd, &b);
		int r;

		if (n < 0)	/* the reader's error, or Go's rules' */
			return read_failed(u, rd, "reading the layer");
		while ((g = strata_tarscan_next(&rd->scan)))
			if ((r = take_entry(u, g)) < 0)
				return r;
		if (n == 0)
			return 0;
	}
}

/* Unpacking in full: libarchive reads the tar as Go's rules are checked
 * beside it (tarscan.c); the content comes from libarchive. */
static int read_libarchive(struct unpack *u, struct reader *rd)
{
	const struct strata_tar_entry *g;
	struct archive_entry *e;
	int r, ar;

	u->a = archive_read_new();
	if (!u->a)
		return -ENOMEM;
	archive_read_support_format_tar(u->a);
	archive_read_support_format_gnutar(u->a);
	if (archive_read_open(u->a, rd, NULL, up_archive_read_cb,
			      NULL) != ARCHIVE_OK)
		return read_failed(u, rd, "not a tar archive");
	while ((ar = archive_read_next_header(u->a, &e)) == ARCHIVE_OK ||
	       ar == ARCHIVE_WARN) {
		r = handle_entry(u, e);
		if (r < 0)
			return r;
	}
	if (ar != ARCHIVE_EOF)
		return read_failed(u, rd, "corrupt tar");
	/* padding and junk after the end-of-archive blocks */
	r = up_drain(rd, u->layer, u->err);
	if (r < 0)
		return r;
	g = strata_tarscan_next(&rd->scan);
	if (g)
		return entry_error(u, g->name, -EBADMSG, "Go's archive/tar "
				   "reads this entry after the end of the "
				   "archive libarchive saw (the tar readers "
				   "disagree: refused)");
	return 0;
}

int strata_unpack_layer(const struct strata_unpack_job *job,
			struct strata_err *err)
{
	struct reader rd = { .fd = job->blob_fd, .copy_fd = -1 };
	struct unpack u = { .datafd = -1, .err = err };
	char got[STRATA_DIGEST_MAX], sd[32];
	uint32_t root;
	int r = 0;

	strata_short_digest(job->digest, sd, sizeof(sd));
	u.layer = sd;
	u.max_entries = job->max_entries;
	u.rd = &rd;
	rd.comp = job->compression;
	rd.want_size = (uint64_t)job->size;
	rd.max_uncompressed = job->max_bytes;
	rd.progress = job->progress;
	rd.progress_ctx = job->progress_ctx;
	rd.zran = job->zran;
	if (job->lazy_file) {
		u.lazy = true;
		u.job = job;
		rd.copy_fd = job->copy_fd;
	}
	rd.map = job->map;
	rd.map_len = job->map_len;
	rd.map_wait = job->map_wait;
	rd.map_wait_ctx = job->map_wait_ctx;
	rd.map_what = job->map_what ? job->map_what : "reading the blob";
	rd.inbuf = malloc(BUF_SIZE);
	rd.out = malloc(BUF_SIZE);
	if (!rd.inbuf || !rd.out) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = strata_hasher_new(job->digest, &rd.blob_h)) < 0 ||
	    (r = strata_hasher_new(job->diff_id, &rd.diff_h)) < 0) {
		r = strata_err_set(err, r, "layer %s: cannot verify this "
				   "digest algorithm", sd);
		goto out;
	}
	if (job->diff_id_later) {
		strata_hasher_free(rd.diff_h);
		rd.diff_h = NULL;
	}
	if (job->digest_checked) {
		strata_hasher_free(rd.blob_h);
		rd.blob_h = NULL;
	}
	if (rd.map && rd.map_len && rd.blob_h &&
	    pthread_create(&rd.map_hasher, NULL, up_hash_map, &rd) == 0)
		rd.map_hashing = true;
	u.datafd = openat(job->dest_fd, "data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (u.datafd < 0) {
		r = -errno;
		goto out;
	}
	if ((r = up_tree_add(&u.t, 0, "", 0, &root)) < 0 ||
	    (r = up_rehash(&u.t)) < 0 ||
	    (r = up_owner_index(&u.t, 0, 0)) < 0)	/* index 0: 0:0 */
		goto out;
	up_make_implied_dir(&u.t.nodes[0]);
	r = u.lazy ? read_go_only(&u, &rd) : read_libarchive(&u, &rd);
	if (r < 0)
		goto out;
	if (rd.compressed != rd.want_size) {
		r = strata_err_set(err, -EBADMSG, "layer %s: size mismatch: "
				   "descriptor says %lld bytes, blob has %llu",
				   job->digest, (long long)job->size,
				   (unsigned long long)rd.compressed);
		goto out;
	}
	up_map_hash_join(&rd);
	if (rd.blob_h)
		strata_hasher_final(rd.blob_h, got);
	if (rd.blob_h && strcmp(got, job->digest)) {
		r = strata_err_set(err, -EBADMSG, "layer %s: digest mismatch: "
				   "content hashes to %s", job->digest, got);
		goto out;
	}
	if (rd.diff_h)
		strata_hasher_final(rd.diff_h, got);
	if (rd.diff_h && strcmp(got, job->diff_id)) {
		r = strata_err_set(err, -EBADMSG, "layer %s: diff_id mismatch: "
				   "config says %s, uncompressed content hashes "
				   "to %s", job->digest, job->diff_id, got);
		goto out;
	}
	if (u.dups)
		strata_warn("layer %s: %llu name%s given twice in the layer "
			    "(first: %s); the later entry of each is kept",
			    sd, (unsigned long long)u.dups,
			    u.dups > 1 ? "s" : "", u.first_dup);
	if (job->usize)
		*job->usize = rd.uncompressed;
	if (u.esgz_last)
		hide_esgz_meta(&u);
	up_settle_implied(&u.t);
	r = up_write_index(&u.t, job->dest_fd, true);
	if (r < 0)
		r = strata_err_set(err, r, "layer %s: writing the index: %s",
				   sd, strerror(-r));
out:
	if (u.a)
		archive_read_free(u.a);
	if (u.datafd >= 0)
		close(u.datafd);
	up_tree_free(&u.t);
	up_reader_release(&rd);
	return r;
}

/* ---- an index from a table of contents (lazy layers) ---- */

struct strata_lxbuild {
	struct unpack u;
	char layer[32];
};

int strata_lxbuild_new(const char *digest, uint64_t max_entries,
		       uint64_t expect, struct strata_err *err,
		       struct strata_lxbuild **out)
{
	struct strata_lxbuild *b = calloc(1, sizeof(*b));
	struct tree *t;
	size_t slots = 4096, cap;
	uint32_t root;
	int r;

	if (!b)
		return -ENOMEM;
	t = &b->u.t;
	/* sized once for @expect entries: no up_rehash and regrowth of 64K
	 * nodes on the way (5% of a big layer's mount). Only a hint, and
	 * tables but a few bytes an entry: capped at the entry limit */
	if (expect > max_entries)
		expect = max_entries;
	if (expect > 1u << 24)
		expect = 1u << 24;
	while (slots < 2 * expect)
		slots *= 2;
	cap = 0;
	t->str_slots = calloc(slots, sizeof(*t->str_slots));
	if (!t->str_slots ||
	    up_grow((void **)&t->nodes, &cap, (size_t)expect + 1,
		    sizeof(*t->nodes)) < 0 ||
	    up_grow((void **)&t->str, &t->str_cap, (size_t)expect * 24, 1) < 0) {
		strata_lxbuild_free(b);
		return -ENOMEM;
	}
	t->cap = (uint32_t)cap;
	strata_prefault(t->nodes, cap * sizeof(*t->nodes));
	t->n_str_slots = slots;
	strata_short_digest(digest, b->layer, sizeof(b->layer));
	b->u.layer = b->layer;
	b->u.err = err;
	b->u.datafd = -1;
	b->u.lazy = true;
	b->u.max_entries = max_entries;
	if ((r = up_tree_add(t, 0, "", 0, &root)) < 0 ||
	    (r = up_rehash_to(t, slots)) < 0 ||
	    (r = up_owner_index(t, 0, 0)) < 0) {
		strata_lxbuild_free(b);
		return r;
	}
	up_make_implied_dir(&b->u.t.nodes[0]);
	*out = b;
	return 0;
}

int strata_lxbuild_add(struct strata_lxbuild *b,
		       const struct strata_tar_entry *g, uint32_t *data_id)
{
	return apply_entry(&b->u, g, data_id);
}

void strata_lxbuild_hide_esgz(struct strata_lxbuild *b)
{
	hide_esgz_meta(&b->u);
}

int strata_lxbuild_finish(struct strata_lxbuild *b, int dest_fd)
{
	int r;

	if (b->u.dups)
		strata_warn("layer %s: %llu name%s given twice in the layer "
			    "(first: %s); the later entry of each is kept",
			    b->layer, (unsigned long long)b->u.dups,
			    b->u.dups > 1 ? "s" : "", b->u.first_dup);
	up_settle_implied(&b->u.t);
	r = up_write_index(&b->u.t, dest_fd, false);
	if (r < 0)
		return strata_err_set(b->u.err, r, "layer %s: writing the "
				      "index: %s", b->layer, strerror(-r));
	return 0;
}

void strata_lxbuild_free(struct strata_lxbuild *b)
{
	if (!b)
		return;
	up_tree_free(&b->u.t);
	free(b);
}
