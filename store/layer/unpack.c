/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unpacking one layer into the cache.
 *
 * One pass over the blob: the compressed bytes are counted and hashed
 * (descriptor size and digest), decompressed here with zlib/zstd (so the
 * gzip trailer CRC is checked, which libarchive skips), hashed again
 * (diff_id) and handed to libarchive's tar reader. Trailing bytes after the
 * tar's end blocks are drained into the diff_id hash too, as umoci does;
 * bytes after the compressed stream (other than further gzip members or
 * zstd frames, which continue it) are refused, as Go's readers refuse
 * them.
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

#include "tarscan.h"
#include "unpack.h"
#include "zran.h"

#define BUF_SIZE (1u << 20)
#define NONE UINT32_MAX
#define PATH_MAX_BYTES 4096
#define NAME_MAX_BYTES 255

/* ---- the decompressing, hashing reader ---- */

struct reader {
	int fd;
	int comp;
	uint64_t want_size;
	uint64_t compressed, uncompressed, max_uncompressed;
	struct strata_hasher *blob_h, *diff_h;	/* diff_h may be NULL */
	const unsigned char *in;	/* inbuf, or into map */
	unsigned char *inbuf, *out;
	const unsigned char *map;	/* or NULL: the blob in memory */
	uint64_t map_len;
	pthread_t map_hasher;	/* hashes map into blob_h (map_hashing) */
	bool map_hashing;
	size_t in_pos, in_len;
	bool in_eof, stream_end;
	struct strata_gzdec *gz;	/* gzdec.c */
	ZSTD_DStream *zs;
	int error;
	char msg[256];
	void (*progress)(void *ctx, uint64_t bytes);
	void *progress_ctx;
	struct strata_tarscan scan;	/* refuses unknown type flags */
	struct strata_zran_builder *zran;	/* or NULL (zran.h) */
	int copy_fd;		/* or -1: gets the blob's bytes */
};

static int fill_input(struct reader *r)
{
	ssize_t n;

	if (r->in_pos < r->in_len || r->in_eof)
		return 0;
	if (r->map) {	/* one past the size: a longer blob is refused */
		uint64_t left = r->want_size + 1 - r->compressed;

		r->in = r->map + r->compressed;
		n = (ssize_t)(left < BUF_SIZE ? left : BUF_SIZE);
		if ((uint64_t)n > r->map_len - r->compressed)
			n = (ssize_t)(r->map_len - r->compressed);
	} else {
		do {
			n = read(r->fd, r->inbuf, BUF_SIZE);
		} while (n < 0 && errno == EINTR);
		r->in = r->inbuf;
	}
	if (n < 0) {
		r->error = -errno;
		snprintf(r->msg, sizeof(r->msg), "read: %s", strerror(errno));
		return -1;
	}
	r->in_pos = 0;
	r->in_len = (size_t)n;
	if (n == 0) {
		r->in_eof = true;
		return 0;
	}
	r->compressed += (uint64_t)n;
	if (r->compressed > r->want_size) {
		r->error = -EBADMSG;
		snprintf(r->msg, sizeof(r->msg),
			 "size mismatch: descriptor says %llu bytes, blob is "
			 "longer", (unsigned long long)r->want_size);
		return -1;
	}
	if (!r->map_hashing)
		strata_hasher_update(r->blob_h, r->in, (size_t)n);
	if (r->copy_fd >= 0 &&
	    strata_write_all(r->copy_fd, r->in, (size_t)n) < 0) {
		r->error = -errno;
		snprintf(r->msg, sizeof(r->msg), "cache: %s", strerror(errno));
		return -1;
	}
	if (r->progress)
		r->progress(r->progress_ctx, (uint64_t)n);
	return 0;
}

static void fail(struct reader *r, int code, const char *msg)
{
	if (!r->error) {
		r->error = code;
		snprintf(r->msg, sizeof(r->msg), "%s", msg);
	}
}

/* Produce the next chunk of uncompressed bytes. Return: length, 0 at the
 * end, -1 on error (r->error set). */
static ssize_t next_chunk(struct reader *r, const void **buf)
{
	size_t produced = 0;

	for (;;) {
		if (fill_input(r) < 0)
			return -1;
		if (r->comp == STRATA_COMP_SNIFF) {
			if (r->in_eof) {
				r->comp = STRATA_COMP_NONE;
			} else if (r->in_len - r->in_pos >= 4) {
				const unsigned char *m = r->in + r->in_pos;

				if (m[0] == 0x1f && m[1] == 0x8b)
					r->comp = STRATA_COMP_GZIP;
				else if (m[0] == 0x28 && m[1] == 0xb5 &&
					 m[2] == 0x2f && m[3] == 0xfd)
					r->comp = STRATA_COMP_ZSTD;
				else
					r->comp = STRATA_COMP_NONE;
			} else {
				r->comp = STRATA_COMP_NONE;
			}
		}
		if (r->in_eof && !(r->comp == STRATA_COMP_GZIP && r->gz &&
				   strata_gzdec_pending(r->gz)))
			break;
		if (r->comp == STRATA_COMP_NONE) {
			*buf = r->in + r->in_pos;
			produced = r->in_len - r->in_pos;
			r->in_pos = r->in_len;
			goto out;
		}
		if (r->comp == STRATA_COMP_GZIP) {
			size_t used;
			bool end;
			char m[200] = "";

			if (!r->gz && strata_gzdec_new(r->zran, &r->gz) < 0) {
				fail(r, -ENOMEM, "gzip decoder init failed");
				return -1;
			}
			if (r->stream_end && r->in_pos < r->in_len) {
				/* RFC 1952 allows several members, and Go's
				 * gzip reader (multistream by default) reads
				 * them as one stream; it refuses anything else
				 * after a member, and so does strata (whatever
				 * the first byte: the header parser checks the
				 * rest). */
				if (r->in[r->in_pos] != 0x1f) {
					fail(r, -EBADMSG, "bytes after the end "
					     "of the gzip stream that are not "
					     "a gzip member");
					return -1;
				}
				r->stream_end = false;
			}
			if (strata_gzdec_run(r->gz, r->in + r->in_pos,
					     r->in_len - r->in_pos,
					     r->compressed - (r->in_len - r->in_pos),
					     r->out, BUF_SIZE, r->uncompressed,
					     &used, &produced, &end, m,
					     sizeof(m)) < 0) {
				fail(r, m[0] ? -EBADMSG : -ENOMEM,
				     m[0] ? m : "recording access points failed");
				return -1;
			}
			r->in_pos += used;
			if (end)
				r->stream_end = true;
			if (r->in_eof && !produced)
				break;
		} else {
			ZSTD_inBuffer ib = { r->in, r->in_len, r->in_pos };
			ZSTD_outBuffer ob = { r->out, BUF_SIZE, 0 };
			size_t zr;

			if (!r->zs) {
				r->zs = ZSTD_createDStream();
				if (!r->zs || ZSTD_isError(ZSTD_initDStream(r->zs))) {
					fail(r, -ENOMEM, "zstd init failed");
					return -1;
				}
			}
			zr = ZSTD_decompressStream(r->zs, &ob, &ib);
			if (ZSTD_isError(zr)) {
				char m[200];

				snprintf(m, sizeof(m), "corrupt zstd data: %s",
					 ZSTD_getErrorName(zr));
				fail(r, -EBADMSG, m);
				return -1;
			}
			r->stream_end = zr == 0;
			r->in_pos = ib.pos;
			produced = ob.pos;
			if (r->zran && r->stream_end &&
			    strata_zran_zstd_frame(r->zran, r->compressed -
						   (r->in_len - r->in_pos),
						   r->uncompressed + produced) < 0) {
				fail(r, -ENOMEM, "recording access points failed");
				return -1;
			}
		}
		if (produced) {
			*buf = r->out;
			goto out;
		}
	}
	/* end of input */
	{
		char m[sizeof(r->msg)];

		if (strata_tarscan_finish(&r->scan, m, sizeof(m)) < 0) {
			fail(r, -EBADMSG, m);
			return -1;
		}
	}
	if (r->comp == STRATA_COMP_GZIP && !r->stream_end) {
		fail(r, -EBADMSG, "truncated gzip stream");
		return -1;
	}
	if (r->comp == STRATA_COMP_ZSTD && !r->stream_end) {
		fail(r, -EBADMSG, "truncated zstd stream");
		return -1;
	}
	return 0;
out:
	r->uncompressed += produced;
	if (r->uncompressed > r->max_uncompressed) {
		char m[200];

		snprintf(m, sizeof(m), "uncompressed layer exceeds the limit "
			 "of %llu bytes (decompression bomb?)",
			 (unsigned long long)r->max_uncompressed);
		fail(r, -EFBIG, m);
		return -1;
	}
	if (r->diff_h)
		strata_hasher_update(r->diff_h, *buf, produced);
	{
		char m[sizeof(r->msg)];

		if (strata_tarscan_feed(&r->scan, *buf, produced, m,
					sizeof(m)) < 0) {
			fail(r, -EBADMSG, m);
			return -1;
		}
	}
	return (ssize_t)produced;
}

static la_ssize_t archive_read_cb(struct archive *a, void *ctx,
				  const void **buf)
{
	struct reader *r = ctx;
	ssize_t n = next_chunk(r, buf);

	if (n < 0) {
		archive_set_error(a, EIO, "%s", r->msg);
		return -1;
	}
	return n;
}

/* ---- the in-memory tree ---- */

struct unode {
	uint32_t parent;
	uint32_t name_off;
	uint16_t name_len;
	uint16_t flags;
	uint32_t mode;
	uint16_t owner;		/* index of (uid, gid) in the owner table */
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t rdev;
	uint32_t leader;	/* hardlink leader */
	uint32_t nlink;		/* group size, at the leader */
	uint32_t link_off;	/* symlink target */
	uint32_t xattr_off, xattr_len;
	uint32_t data_id;
	uint32_t first_child, next_sibling, n_children;
	uint32_t final;
};

struct tree {
	struct unode *nodes;
	uint32_t n, cap;
	char *str;
	size_t str_len, str_cap;
	uint32_t *str_slots;	/* hash of the strings -> offset + 1 */
	size_t n_str_slots, n_strs;
	uint8_t *xat;
	size_t xat_len, xat_cap;
	uint32_t *slots;	/* hash of (parent, name) -> node + 1 */
	size_t n_slots;
	uint32_t next_data;
	uint64_t data_bytes;
	uint64_t features;
	struct strata_lx_owner *owners;	/* [0] is 0:0 */
	size_t n_owners, owners_cap;
	uint32_t *owner_slots;	/* hash of (uid, gid) -> owner + 1 */
	size_t n_owner_slots;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t c = *cap ? *cap : 1024;
	void *n;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	n = realloc(*p, c * elem);
	if (!n)
		return -ENOMEM;
	strata_huge_hint(n, c * elem);
	*p = n;
	*cap = c;
	return 0;
}

static uint64_t hash_bytes(uint64_t h, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

#define STR_SEED 1469598103934665603ull

/* The tree's hash tables (nodes, strings, owners) are open-addressed
 * arrays of @n (a power of 2) slots holding value + 1. Put @v in the first
 * free slot for hash @h. */
static void slot_put(uint32_t *slots, size_t n, uint64_t h, uint32_t v)
{
	size_t i = h & (n - 1);

	while (slots[i])
		i = (i + 1) & (n - 1);
	slots[i] = v + 1;
}

/*
 * Offset of string @s in the string table, stored once: names repeat a lot
 * across directories (Makefile, __init__.py, *.h) and symlink targets too,
 * and the daemon maps these bytes for every mount.
 */
static int add_str(struct tree *t, const char *s, size_t len, uint32_t *off)
{
	uint64_t h = hash_bytes(STR_SEED, s, len);
	size_t i, mask;

	if ((t->n_strs + 1) * 2 > t->n_str_slots) {
		size_t n = t->n_str_slots ? t->n_str_slots * 2 : 4096;
		uint32_t *slots = calloc(n, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (i = 0; i < t->n_str_slots; i++) {
			uint32_t o = t->str_slots[i];

			if (o--)
				slot_put(slots, n, hash_bytes(STR_SEED, t->str + o,
							      strlen(t->str + o)), o);
		}
		free(t->str_slots);
		t->str_slots = slots;
		t->n_str_slots = n;
	}
	mask = t->n_str_slots - 1;
	for (i = h & mask; t->str_slots[i]; i = (i + 1) & mask) {
		size_t at = t->str_slots[i] - 1;
		const char *o = t->str + at;

		if (at + len < t->str_len && !memcmp(o, s, len) &&
		    o[len] == '\0') {
			*off = t->str_slots[i] - 1;
			return 0;
		}
	}
	if (t->str_len + len + 1 > UINT32_MAX)
		return -EFBIG;
	if (grow((void **)&t->str, &t->str_cap, t->str_len + len + 1, 1) < 0)
		return -ENOMEM;
	memcpy(t->str + t->str_len, s, len);
	t->str[t->str_len + len] = '\0';
	*off = (uint32_t)t->str_len;
	t->str_slots[i] = *off + 1;
	t->n_strs++;
	t->str_len += len + 1;
	return 0;
}

static size_t owner_hash(uint32_t uid, uint32_t gid)
{
	return (size_t)((((uint64_t)uid << 32 | gid) * 0x9e3779b97f4a7c15ull) >> 24);
}

/*
 * Index of (@uid, @gid) in the owner table, added if new. Entries name
 * their owner by a 16-bit index, which is plenty for any real layer.
 * Return: the index, -E2BIG past STRATA_LX_MAX_OWNERS pairs, or -ENOMEM.
 */
static int owner_index(struct tree *t, uint32_t uid, uint32_t gid)
{
	size_t mask, i;
	uint32_t k;

	if (t->n_owners * 2 >= t->n_owner_slots) {
		size_t n = t->n_owner_slots ? t->n_owner_slots * 2 : 64;
		uint32_t *slots = calloc(n, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (k = 0; k < t->n_owners; k++)
			slot_put(slots, n, owner_hash(t->owners[k].uid,
						      t->owners[k].gid), k);
		free(t->owner_slots);
		t->owner_slots = slots;
		t->n_owner_slots = n;
	}
	mask = t->n_owner_slots - 1;
	for (i = owner_hash(uid, gid) & mask; t->owner_slots[i];
	     i = (i + 1) & mask) {
		const struct strata_lx_owner *o =
			&t->owners[t->owner_slots[i] - 1];

		if (o->uid == uid && o->gid == gid)
			return (int)(t->owner_slots[i] - 1);
	}
	if (t->n_owners >= STRATA_LX_MAX_OWNERS)
		return -E2BIG;
	if (grow((void **)&t->owners, &t->owners_cap, t->n_owners + 1,
		 sizeof(*t->owners)) < 0)
		return -ENOMEM;
	t->owners[t->n_owners] = (struct strata_lx_owner){ uid, gid };
	t->owner_slots[i] = (uint32_t)++t->n_owners;
	return (int)t->n_owners - 1;
}

static uint64_t hash_key(uint32_t parent, const char *name, size_t len)
{
	return hash_bytes(STR_SEED ^ parent, name, len);
}

static uint32_t tree_find(struct tree *t, uint32_t parent, const char *name,
			  size_t len)
{
	size_t mask = t->n_slots - 1;
	size_t i = hash_key(parent, name, len) & mask;

	for (;; i = (i + 1) & mask) {
		uint32_t s = t->slots[i];
		struct unode *u;

		if (!s)
			return NONE;
		u = &t->nodes[s - 1];
		if (u->parent == parent && u->name_len == len &&
		    !memcmp(t->str + u->name_off, name, len) && s - 1 != 0)
			return s - 1;
	}
}

static void slot_insert(struct tree *t, uint32_t idx)
{
	struct unode *u = &t->nodes[idx];

	slot_put(t->slots, t->n_slots,
		 hash_key(u->parent, t->str + u->name_off, u->name_len), idx);
}

/* A table of @n slots (a power of 2) for the nodes. */
static int rehash_to(struct tree *t, size_t n)
{
	uint32_t i;

	free(t->slots);
	t->slots = calloc(n, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->n_slots = n;
	for (i = 1; i < t->n; i++)
		slot_insert(t, i);
	return 0;
}

static int rehash(struct tree *t)
{
	return rehash_to(t, t->n_slots ? t->n_slots * 2 : 4096);
}

static int tree_add(struct tree *t, uint32_t parent, const char *name,
		    size_t len, uint32_t *out)
{
	size_t cap = t->cap;
	struct unode *u;
	uint32_t idx;
	int r;

	if (grow((void **)&t->nodes, &cap, (size_t)t->n + 1, sizeof(*u)) < 0)
		return -ENOMEM;
	t->cap = (uint32_t)cap;
	idx = t->n++;
	u = &t->nodes[idx];
	memset(u, 0, sizeof(*u));
	r = add_str(t, name, len, &u->name_off);
	if (r < 0)
		return r;
	u->name_len = (uint16_t)len;
	u->parent = parent;
	u->leader = idx;
	u->nlink = 1;
	u->first_child = NONE;
	u->next_sibling = NONE;
	if (idx) {
		struct unode *p = &t->nodes[parent];

		u->next_sibling = p->first_child;
		p->first_child = idx;
		p->n_children++;
		if ((size_t)t->n * 2 > t->n_slots) {
			r = rehash(t);
			if (r < 0)
				return r;
		} else {
			slot_insert(t, idx);
		}
	}
	*out = idx;
	return 0;
}

/* In-memory only: an implied dir that a same-layer whiteout also names;
 * settled in settle_implied(). */
#define U_WHITED (1u << 15)

static void make_implied_dir(struct unode *u)
{
	u->mode = S_IFDIR | 0755;
	u->flags |= STRATA_LX_IMPLIED;
}

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
		uint32_t nx = tree_find(&u->t, cur, c->c[i], c->len[i]);
		struct unode *n;

		if (c->len[i] >= 4 && !memcmp(c->c[i], ".wh.", 4))
			return entry_error(u, name, -EPERM,
					   "whiteout prefix \".wh.\" on a "
					   "directory component");
		if (nx == NONE) {
			r = tree_add(&u->t, cur, c->c[i], c->len[i], &nx);
			if (r < 0)
				return r;
			make_implied_dir(&u->t.nodes[nx]);
		}
		n = &u->t.nodes[nx];
		if (n->flags & STRATA_LX_WHITEOUT) {
			/* whited out, then recreated in the same layer */
			n->flags = STRATA_LX_OPAQUE | STRATA_LX_REPLACED;
			make_implied_dir(n);
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
		cur = tree_find(&u->t, cur, c->c[i], c->len[i]);
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
		cur = tree_find(&u->t, cur, c->c[i], c->len[i]);
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
	idx = tree_find(&u->t, parent, target, tlen);
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
	r = tree_add(&u->t, parent, target, tlen, &idx);
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
	if (grow((void **)&u->t.xat, &u->t.xat_cap, u->t.xat_len + 4, 1) < 0)
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
		if (grow((void **)&u->t.xat, &u->t.xat_cap,
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
	idx = tree_find(&u->t, parent, base, blen);
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
		r = tree_add(&u->t, parent, base, blen, &idx);
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
	r = owner_index(&u->t, (uint32_t)g->uid, (uint32_t)g->gid);
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
		r = add_str(&u->t, target, tlen, &u->t.nodes[idx].link_off);
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
		uint32_t idx = tree_find(t, 0, esgz_meta[i], strlen(esgz_meta[i]));
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

static int handle_entry(struct unpack *u, struct archive_entry *e)
{
	const struct strata_tar_entry *g = strata_tarscan_next(&u->rd->scan);
	uint32_t data_id;
	int r;

	r = same_entry(u, e, g);
	if (r < 0)
		return r;
	if (g->sparse && !g->map_ready)
		return entry_error(u, g->name, -EBADMSG, "libarchive read this "
				   "sparse file before Go's archive/tar could "
				   "read its map: refused");
	if (u->lazy && g->sparse)
		return entry_error(u, g->name, -EOPNOTSUPP, "sparse file: the "
				   "layer is unpacked in full");
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

/* ---- writing the index ---- */

static int cmp_nodes_by_name(const void *a, const void *b, void *ctx)
{
	const struct tree *t = ctx;
	const struct unode *x = &t->nodes[*(const uint32_t *)a];
	const struct unode *y = &t->nodes[*(const uint32_t *)b];

	return strata_lx_namecmp(t->str + x->name_off, x->name_len,
				 t->str + y->name_off, y->name_len);
}

/* Append the path of node @idx (parents first) to the string table. */
static int add_path(struct tree *t, uint32_t idx, uint32_t *off)
{
	char path[PATH_MAX_BYTES + 1];
	uint32_t chain[PATH_MAX_BYTES / 2];
	size_t n = 0, o = 0;

	for (; idx != 0 && n < ARRAY_SIZE(chain); idx = t->nodes[idx].parent)
		chain[n++] = idx;
	while (n-- > 0) {
		const struct unode *u = &t->nodes[chain[n]];

		if (o + u->name_len + 2 > sizeof(path))
			return -ENAMETOOLONG;
		if (o)
			path[o++] = '/';
		memcpy(path + o, t->str + u->name_off, u->name_len);
		o += u->name_len;
	}
	return add_str(t, path, o, off);
}

/*
 * Implied directories that hold nothing but whiteouts (W4, W8: a whiteout
 * under a directory this layer never listed) are ghosts: they apply their
 * whiteouts to a lower directory of that name and are otherwise invisible.
 * One the layer also whites out is a whiteout (that deletes the lower
 * directory; its inner whiteouts have nothing left to do); if it holds
 * real entries it was recreated, so it is opaque. Children come after their
 * parents in the node array, so one backward pass sees children first.
 */
static void settle_implied(struct tree *t)
{
	cleanup_free uint8_t *real = calloc(t->n, 1);
	uint32_t i;

	if (!real)
		return;
	for (i = t->n; i-- > 1;) {
		struct unode *n = &t->nodes[i];
		bool implied = (n->flags & STRATA_LX_IMPLIED) && S_ISDIR(n->mode);

		if (!(n->flags & STRATA_LX_WHITEOUT) && (!implied || real[i]))
			real[i] = 1;
		if (implied && !real[i])
			n->flags |= (n->flags & U_WHITED) ? STRATA_LX_WHITEOUT
							  : STRATA_LX_GHOST;
		else if (n->flags & U_WHITED)
			n->flags |= STRATA_LX_OPAQUE | STRATA_LX_REPLACED;
		n->flags &= (uint16_t)~U_WHITED;
		if (real[i] && n->parent < t->n)
			real[n->parent] = 1;
	}
}

/* @sync: fsync it (a lazy layer's index is checked by its sum instead) */
static int write_index(struct tree *t, int dirfd, bool sync)
{
	cleanup_free uint32_t *order = malloc((size_t)t->n * sizeof(uint32_t));
	cleanup_free struct strata_lx_entry *out = NULL;
	cleanup_free struct strata_lx_xref *implied = NULL, *xtable = NULL;
	cleanup_free struct strata_lx_xref *links = NULL;
	size_t n_implied = 0, n_xattr = 0, n_links = 0;
	static const char zeros[8];
	struct strata_lx_header h;
	uint32_t head = 0, tail = 1, i;
	size_t entries_bytes;
	cleanup_fd int fd = -1;
	int r;

	if (!order)
		return -ENOMEM;
	out = calloc(t->n, sizeof(*out));
	if (out)
		strata_prefault(out, t->n * sizeof(*out));
	implied = malloc((size_t)t->n * sizeof(*implied));
	xtable = malloc((size_t)t->n * sizeof(*xtable));
	links = malloc((size_t)t->n * sizeof(*links));
	if (!out || !implied || !xtable || !links)
		return -ENOMEM;
	/* Breadth first: each directory's children get consecutive
	 * indexes, sorted by name. */
	order[0] = 0;
	t->nodes[0].final = 0;
	while (head < tail) {
		struct unode *d = &t->nodes[order[head++]];
		uint32_t first = tail, c;

		if (!S_ISDIR(d->mode))
			continue;
		for (c = d->first_child; c != NONE; c = t->nodes[c].next_sibling)
			order[tail++] = c;
		qsort_r(order + first, tail - first, sizeof(uint32_t),
			cmp_nodes_by_name, t);
		for (c = first; c < tail; c++)
			t->nodes[order[c]].final = c;
		d->first_child = first;	/* now a final index */
	}
	/* nodes a later entry replaced are not reachable: left out */
	entries_bytes = (size_t)tail * sizeof(*out);
	for (i = 0; i < tail; i++) {
		const struct unode *u = &t->nodes[order[i]];
		const struct unode *l = &t->nodes[u->leader];
		struct strata_lx_entry *e = &out[i];

		e->name_off = u->name_off;
		e->name_len = (uint8_t)u->name_len;
		e->flags = (uint8_t)u->flags;
		if (i && (u->flags & STRATA_LX_IMPLIED)) {
			implied[n_implied].entry = i;
			r = add_path(t, order[i], &implied[n_implied].off);
			if (r < 0)
				return r;
			n_implied++;
		}
		if (u->leader != order[i] || l->nlink > 1)
			e->flags |= STRATA_LX_HARDLINK;
		if (l->xattr_len) {
			e->flags |= STRATA_LX_XATTRS;
			xtable[n_xattr].entry = i;
			xtable[n_xattr].off = l->xattr_off;
			n_xattr++;
		}
		e->mode = (uint16_t)l->mode;
		e->owner = l->owner;
		e->mtime = ((uint64_t)(l->mtime_sec + STRATA_LX_SEC_BIAS) << 30) |
			   l->mtime_nsec;
		if (S_ISDIR(u->mode)) {
			uint32_t c, dirs = 0;

			e->a = u->n_children ? u->first_child : 0;
			e->b = u->n_children;
			for (c = 0; c < u->n_children; c++)
				if (S_ISDIR(t->nodes[order[u->first_child + c]].mode))
					dirs++;
			e->size = 2 + dirs;	/* a directory's nlink */
			continue;
		}
		if (u->leader == order[i] && l->nlink > 1) {
			links[n_links].entry = i;
			links[n_links].off = l->nlink;
			n_links++;
		}
		e->b = l->final;
		if (S_ISREG(l->mode)) {
			e->size = l->size;
			e->a = l->data_id;
		} else if (S_ISLNK(l->mode)) {
			e->size = l->size;
			e->a = l->link_off;
		} else if (S_ISCHR(l->mode) || S_ISBLK(l->mode)) {
			e->size = l->rdev;
		}
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, STRATA_LX_MAGIC, 8);
	h.version = 1;
	h.n_entries = tail;
	h.entries_off = (sizeof(h) + 7) & ~7ull;
	h.strings_off = h.entries_off + entries_bytes;
	h.strings_len = t->str_len;
	h.xtable_off = (h.strings_off + t->str_len + 7) & ~7ull;
	h.n_xattr = n_xattr;
	h.xattrs_off = h.xtable_off + n_xattr * sizeof(*xtable);
	h.xattrs_len = t->xat_len;
	h.implied_off = (h.xattrs_off + t->xat_len + 7) & ~7ull;
	h.n_implied = n_implied;
	h.owners_off = h.implied_off + n_implied * sizeof(*implied);
	h.n_owners = t->n_owners;
	h.links_off = h.owners_off + t->n_owners * sizeof(*t->owners);
	h.n_links = n_links;
	h.data_bytes = t->data_bytes;
	h.features = t->features;
	h.file_size = h.links_off + n_links * sizeof(*links);
	fd = openat(dirfd, "index", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if ((r = strata_write_all(fd, &h, sizeof(h))) < 0 ||
	    (r = strata_write_all(fd, zeros, h.entries_off - sizeof(h))) < 0 ||
	    (r = strata_write_all(fd, out, entries_bytes)) < 0 ||
	    (r = strata_write_all(fd, t->str, t->str_len)) < 0 ||
	    (r = strata_write_all(fd, zeros, h.xtable_off - h.strings_off - t->str_len)) < 0 ||
	    (r = strata_write_all(fd, xtable, n_xattr * sizeof(*xtable))) < 0 ||
	    (r = strata_write_all(fd, t->xat ? (void *)t->xat : (void *)"", t->xat_len)) < 0 ||
	    (r = strata_write_all(fd, zeros, h.implied_off - h.xattrs_off - t->xat_len)) < 0 ||
	    (r = strata_write_all(fd, implied, n_implied * sizeof(*implied))) < 0 ||
	    (r = strata_write_all(fd, t->owners, t->n_owners * sizeof(*t->owners))) < 0 ||
	    (r = strata_write_all(fd, links, n_links * sizeof(*links))) < 0)
		return r;
	if (sync && fsync(fd) < 0)
		return -errno;
	return 0;
}

static void tree_free(struct tree *t)
{
	free(t->nodes);
	free(t->str);
	free(t->xat);
	free(t->slots);
	free(t->owners);
	free(t->owner_slots);
	free(t->str_slots);
}

/* Read @rd to the end of the blob (what follows the tar's end blocks is
 * hashed and checked like the rest). Return: 0 or negative errno. */
static int drain(struct reader *rd, const char *sd, struct strata_err *err)
{
	for (;;) {
		const void *b;
		ssize_t n = next_chunk(rd, &b);

		if (n == 0)
			return 0;
		if (n < 0)
			return strata_err_set(err, rd->error, "layer %s: %s", sd,
					      rd->msg);
	}
}

/* A blob in memory is hashed on its own thread, beside the decompression
 * (the blob digest costs about a fifth of a lazy layer's pass). */
static void *hash_map(void *arg)
{
	struct reader *r = arg;
	uint64_t n = r->map_len < r->want_size ? r->map_len : r->want_size;

	for (uint64_t off = 0; off < n; off += BUF_SIZE)
		strata_hasher_update(r->blob_h, r->map + off,
				     n - off < BUF_SIZE ? (size_t)(n - off)
							: BUF_SIZE);
	return NULL;
}

static void map_hash_join(struct reader *r)
{
	if (r->map_hashing)
		pthread_join(r->map_hasher, NULL);
	r->map_hashing = false;
}

/* What a reader holds: decompressors, the tar watch, hashers, buffers. */
static void reader_release(struct reader *rd)
{
	map_hash_join(rd);
	strata_gzdec_free(rd->gz);
	if (rd->zs)
		ZSTD_freeDStream(rd->zs);
	strata_tarscan_free(&rd->scan);
	if (rd->blob_h)
		strata_hasher_free(rd->blob_h);
	if (rd->diff_h)
		strata_hasher_free(rd->diff_h);
	free(rd->inbuf);
	free(rd->out);
}

int strata_unpack_layer(const struct strata_unpack_job *job,
			struct strata_err *err)
{
	struct reader rd = { .fd = job->blob_fd, .copy_fd = -1 };
	struct unpack u = { .datafd = -1, .err = err };
	char got[STRATA_DIGEST_MAX], sd[32];
	struct archive_entry *e;
	uint32_t root;
	int r = 0, ar;

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
	if (rd.map && rd.map_len &&
	    pthread_create(&rd.map_hasher, NULL, hash_map, &rd) == 0)
		rd.map_hashing = true;
	u.datafd = openat(job->dest_fd, "data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (u.datafd < 0) {
		r = -errno;
		goto out;
	}
	if ((r = tree_add(&u.t, 0, "", 0, &root)) < 0 || (r = rehash(&u.t)) < 0 ||
	    (r = owner_index(&u.t, 0, 0)) < 0)	/* index 0: 0:0 */
		goto out;
	make_implied_dir(&u.t.nodes[0]);
	u.a = archive_read_new();
	if (!u.a) {
		r = -ENOMEM;
		goto out;
	}
	archive_read_support_format_tar(u.a);
	archive_read_support_format_gnutar(u.a);
	if (archive_read_open(u.a, &rd, NULL, archive_read_cb, NULL) != ARCHIVE_OK) {
		r = rd.error ? strata_err_set(err, rd.error, "layer %s: %s", sd, rd.msg)
			     : strata_err_set(err, -EBADMSG, "layer %s: not a tar "
					      "archive: %s", sd,
					      strata_archive_error(u.a));
		goto out;
	}
	while ((ar = archive_read_next_header(u.a, &e)) == ARCHIVE_OK ||
	       ar == ARCHIVE_WARN) {
		r = handle_entry(&u, e);
		if (r < 0)
			goto out;
	}
	if (ar != ARCHIVE_EOF) {
		r = rd.error ? strata_err_set(err, rd.error, "layer %s: %s", sd, rd.msg)
			     : strata_err_set(err, -EBADMSG, "layer %s: corrupt tar: "
					      "%s", sd, strata_archive_error(u.a));
		goto out;
	}
	/* drain padding and junk after the end-of-archive blocks */
	r = drain(&rd, sd, err);
	if (r < 0)
		goto out;
	{
		const struct strata_tar_entry *g;

		g = strata_tarscan_next(&rd.scan);
		if (g) {
			r = entry_error(&u, g->name, -EBADMSG, "Go's "
					"archive/tar reads this entry after "
					"the end of the archive libarchive "
					"saw (the tar readers disagree: "
					"refused)");
			goto out;
		}
	}
	if (rd.compressed != rd.want_size) {
		r = strata_err_set(err, -EBADMSG, "layer %s: size mismatch: "
				   "descriptor says %lld bytes, blob has %llu",
				   job->digest, (long long)job->size,
				   (unsigned long long)rd.compressed);
		goto out;
	}
	map_hash_join(&rd);
	strata_hasher_final(rd.blob_h, got);
	if (strcmp(got, job->digest)) {
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
	settle_implied(&u.t);
	r = write_index(&u.t, job->dest_fd, true);
	if (r < 0)
		r = strata_err_set(err, r, "layer %s: writing the index: %s",
				   sd, strerror(-r));
out:
	if (u.a)
		archive_read_free(u.a);
	if (u.datafd >= 0)
		close(u.datafd);
	tree_free(&u.t);
	reader_release(&rd);
	return r;
}

int strata_blob_diff_id(int fd, const char *digest, int64_t size,
			int compression, uint64_t max_bytes, char *diff_id,
			int *comp_out, int64_t *size_out,
			struct strata_err *err)
{
	struct reader rd = { .fd = fd, .comp = compression,
			     .max_uncompressed = max_bytes, .copy_fd = -1 };
	char got[STRATA_DIGEST_MAX], sd[32];
	int r = 0;

	strata_short_digest(digest, sd, sizeof(sd));
	rd.want_size = size < 0 ? UINT64_MAX : (uint64_t)size;
	rd.inbuf = malloc(BUF_SIZE);
	rd.out = malloc(BUF_SIZE);
	if (!rd.inbuf || !rd.out) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = strata_hasher_new(digest, &rd.blob_h)) < 0 ||
	    (r = strata_hasher_new_alg("sha256", &rd.diff_h)) < 0) {
		r = strata_err_set(err, r, "layer %s: cannot verify this "
				   "digest algorithm", digest);
		goto out;
	}
	r = drain(&rd, sd, err);
	if (r < 0)
		goto out;
	if (size >= 0 && rd.compressed != (uint64_t)size) {
		r = strata_err_set(err, -EBADMSG, "layer %s: size mismatch: "
				   "descriptor says %lld bytes, blob has %llu",
				   digest, (long long)size,
				   (unsigned long long)rd.compressed);
		goto out;
	}
	strata_hasher_final(rd.blob_h, got);
	if (strcmp(got, digest)) {
		r = strata_err_set(err, -EBADMSG, "layer %s: digest mismatch: "
				   "content hashes to %s", digest, got);
		goto out;
	}
	strata_hasher_final(rd.diff_h, diff_id);
	*comp_out = rd.comp;
	*size_out = (int64_t)rd.compressed;
out:
	reader_release(&rd);
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
	/* sized once for @expect entries: no rehash and regrowth of 64K
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
	if (!t->str_slots || grow((void **)&t->nodes, &cap, (size_t)expect + 1,
				  sizeof(*t->nodes)) < 0 ||
	    grow((void **)&t->str, &t->str_cap, (size_t)expect * 24, 1) < 0) {
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
	if ((r = tree_add(t, 0, "", 0, &root)) < 0 ||
	    (r = rehash_to(t, slots)) < 0 ||
	    (r = owner_index(t, 0, 0)) < 0) {
		strata_lxbuild_free(b);
		return r;
	}
	make_implied_dir(&b->u.t.nodes[0]);
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
	settle_implied(&b->u.t);
	r = write_index(&b->u.t, dest_fd, false);
	if (r < 0)
		return strata_err_set(b->u.err, r, "layer %s: writing the "
				      "index: %s", b->layer, strerror(-r));
	return 0;
}

void strata_lxbuild_free(struct strata_lxbuild *b)
{
	if (!b)
		return;
	tree_free(&b->u.t);
	free(b);
}
