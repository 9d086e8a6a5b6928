/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-memory tree of a layer being unpacked (nodes, interned strings,
 * owners, the (parent, name) hash) and the metadata index written from it
 * (lindex.c reads it).
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
#include "unpack-int.h"

/* ---- the in-memory tree ---- */



int up_grow(void **p, size_t *cap, size_t need, size_t elem)
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
int up_add_str(struct tree *t, const char *s, size_t len, uint32_t *off)
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
	if (up_grow((void **)&t->str, &t->str_cap, t->str_len + len + 1, 1) < 0)
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
int up_owner_index(struct tree *t, uint32_t uid, uint32_t gid)
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
	if (up_grow((void **)&t->owners, &t->owners_cap, t->n_owners + 1,
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

uint32_t up_tree_find(struct tree *t, uint32_t parent, const char *name,
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
int up_rehash_to(struct tree *t, size_t n)
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

int up_rehash(struct tree *t)
{
	return up_rehash_to(t, t->n_slots ? t->n_slots * 2 : 4096);
}

int up_tree_add(struct tree *t, uint32_t parent, const char *name,
		size_t len, uint32_t *out)
{
	size_t cap = t->cap;
	struct unode *u;
	uint32_t idx;
	int r;

	if (up_grow((void **)&t->nodes, &cap, (size_t)t->n + 1, sizeof(*u)) < 0)
		return -ENOMEM;
	t->cap = (uint32_t)cap;
	idx = t->n++;
	u = &t->nodes[idx];
	memset(u, 0, sizeof(*u));
	r = up_add_str(t, name, len, &u->name_off);
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
			r = up_rehash(t);
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
 * settled in up_settle_implied(). */

void up_make_implied_dir(struct unode *u)
{
	u->mode = S_IFDIR | 0755;
	u->flags |= STRATA_LX_IMPLIED;
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
	return up_add_str(t, path, o, off);
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
void up_settle_implied(struct tree *t)
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
int up_write_index(struct tree *t, int dirfd, bool sync)
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

void up_tree_free(struct tree *t)
{
	free(t->nodes);
	free(t->str);
	free(t->xat);
	free(t->slots);
	free(t->owners);
	free(t->owner_slots);
	free(t->str_slots);
}
