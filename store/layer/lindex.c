/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading a layer's metadata index (format in store.h). The index is our
 * own output, written once and renamed into place after verification, but
 * a cache can be damaged or planted, so the file is untrusted: the header
 * and table bounds are checked at open, and so is every entry, once (its
 * name and symlink target inside the strings, a directory's children
 * inside the entries and after it, so the tree has no cycle), because its
 * readers (fs/, graft.c, imgview.c, commit) take an entry's fields as
 * given. The accessors bounds-check what remains: table lookups.
 *
 * An open index can be patched in memory (store/layer/graft.c moves a layer's
 * paths through the symlinks of the layers below): new entries and strings
 * go to extension arrays numbered on from the file's, and the few file
 * entries that change (a directory's child range) are written into the
 * private mapping, which copies only the pages touched. The file itself
 * never changes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lazy.h"

struct strata_lindex {
	const uint8_t *map;
	size_t map_len;
	const struct strata_lx_header *hdr;
	const struct strata_lx_entry *entries;
	const char *strings;
	const struct strata_lx_xref *xtable;
	const uint8_t *xattrs;
	const struct strata_lx_owner *owners;
	const struct strata_lx_xref *links;
	int datafd;
	uint32_t n_base, n_entries;	/* in the file; with the extension */
	uint64_t str_base, str_len;
	bool writable;			/* the private map may be written */
	struct strata_lx_entry *ext;	/* entries n_base.. */
	uint32_t *ext_orig;		/* the file entry each one copies
					 * (xattrs), UINT32_MAX if new */
	uint32_t cap_ext;
	char *ext_str;			/* strings str_base.. */
	uint64_t cap_str;
	struct strata_lazy *lazy;	/* a lazy layer's fill state, or NULL */
};

void strata_lindex_close(struct strata_lindex *lx)
{
	if (!lx)
		return;
	if (lx->map)
		munmap((void *)lx->map, lx->map_len);
	if (lx->datafd >= 0)
		close(lx->datafd);
	free(lx->ext);
	free(lx->ext_orig);
	free(lx->ext_str);
	strata_lazy_free(lx->lazy);
	free(lx);
}

void strata_lindex_set_lazy(struct strata_lindex *lx, struct strata_lazy *z)
{
	lx->lazy = z;
}

struct strata_lazy *strata_lindex_lazy(const struct strata_lindex *lx)
{
	return lx->lazy;
}

_Static_assert(sizeof(struct strata_lx_entry) == 32,
	       "an index entry is 32 bytes");

static bool range_ok(uint64_t off, uint64_t len, uint64_t total)
{
	return off <= total && len <= total - off;
}

/* What readers take as given, checked once per entry at open: one pass
 * over the entries, which a mount reads anyway. */
static bool entries_ok(const struct strata_lindex *lx)
{
	const struct strata_lx_header *h = lx->hdr;
	const struct strata_lx_entry *ents = (const void *)(lx->map +
							    h->entries_off);
	const struct strata_lx_xref *imp = (const void *)(lx->map +
							  h->implied_off);
	const char *strings = (const char *)lx->map + h->strings_off;
	uint64_t k;
	uint32_t i;

	/* strings are NUL-terminated: so is the last one */
	if (h->strings_len && strings[h->strings_len - 1] != '\0')
		return false;
	if (!S_ISDIR(ents[0].mode))
		return false;
	for (i = 0; i < h->n_entries; i++) {
		const struct strata_lx_entry *e = &ents[i];

		if (!range_ok(e->name_off, e->name_len, h->strings_len))
			return false;
		if (S_ISDIR(e->mode)) {
			if (e->b && (e->a <= i ||
				     !range_ok(e->a, e->b, h->n_entries)))
				return false;
			continue;
		}
		if (e->b >= h->n_entries)
			return false;
		if (S_ISLNK(e->mode) &&
		    (!range_ok(e->a, e->size, h->strings_len) ||
		     e->a + e->size == h->strings_len))
			return false;
	}
	for (k = 0; k < h->n_implied; k++)
		if (imp[k].entry >= h->n_entries ||
		    imp[k].off >= h->strings_len)
			return false;
	return true;
}

int strata_lindex_open(struct strata_store *st, const char *diff_id,
		       struct strata_lindex **out, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 16], what[2 * STRATA_DIGEST_MAX + 64];
	cleanup_fd int dfd = -1;

	strata_blob_relpath(diff_id, rel, sizeof(rel));
	dfd = openat(st->layers_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return strata_err_set(err, -errno, "layer %s: not in the cache",
				      diff_id);
	snprintf(what, sizeof(what), "layer %s: cache index is corrupt; "
		 "remove %s/layers/%s", diff_id, st->root, rel);
	return strata_lindex_open_dir(dfd, what, out, err);
}

int strata_lindex_open_dir(int dfd, const char *what,
			   struct strata_lindex **out, struct strata_err *err)
{
	cleanup_fd int fd = -1;
	struct strata_lindex *lx;
	const struct strata_lx_header *h;
	struct stat sb;
	void *map;

	fd = openat(dfd, "index", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0)
		return strata_err_set(err, -EBADMSG, "%s (no index)", what);
	if ((size_t)sb.st_size < sizeof(*h))
		goto corrupt;
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	lx = calloc(1, sizeof(*lx));
	if (!lx) {
		munmap(map, (size_t)sb.st_size);
		return -ENOMEM;
	}
	lx->map = map;
	lx->map_len = (size_t)sb.st_size;
	lx->datafd = -1;
	h = lx->hdr = map;
	if (memcmp(h->magic, STRATA_LX_MAGIC, 8) || h->version != 1 ||
	    h->file_size != (uint64_t)sb.st_size || h->n_entries == 0 ||
	    !range_ok(h->entries_off,
		      (uint64_t)h->n_entries * sizeof(struct strata_lx_entry),
		      lx->map_len) ||
	    h->entries_off % 8 ||
	    !range_ok(h->strings_off, h->strings_len, lx->map_len) ||
	    !range_ok(h->xattrs_off, h->xattrs_len, lx->map_len) ||
	    h->xtable_off % 4 || h->n_xattr > h->n_entries ||
	    !range_ok(h->xtable_off, h->n_xattr * 8, lx->map_len) ||
	    h->implied_off % 4 || h->n_implied > h->n_entries ||
	    !range_ok(h->implied_off, h->n_implied * 8, lx->map_len) ||
	    h->owners_off % 4 || h->n_owners > STRATA_LX_MAX_OWNERS ||
	    !range_ok(h->owners_off, h->n_owners * 8, lx->map_len) ||
	    h->links_off % 4 || h->n_links > h->n_entries ||
	    !range_ok(h->links_off, h->n_links * 8, lx->map_len) ||
	    !entries_ok(lx)) {
		strata_lindex_close(lx);
		goto corrupt;
	}
	lx->entries = (const void *)(lx->map + h->entries_off);
	lx->strings = (const char *)lx->map + h->strings_off;
	lx->xattrs = lx->map + h->xattrs_off;
	lx->xtable = (const void *)(lx->map + h->xtable_off);
	lx->owners = (const void *)(lx->map + h->owners_off);
	lx->links = (const void *)(lx->map + h->links_off);
	lx->n_base = lx->n_entries = h->n_entries;
	lx->str_base = lx->str_len = h->strings_len;
	lx->datafd = openat(dfd, "data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lx->datafd < 0) {
		strata_lindex_close(lx);
		goto corrupt;
	}
	*out = lx;
	return 0;
corrupt:
	return strata_err_set(err, -EBADMSG, "%s", what);
}

uint32_t strata_lx_count(const struct strata_lindex *lx)
{
	return lx->n_entries;
}

const struct strata_lx_entry *strata_lx_entry(const struct strata_lindex *lx,
					      uint32_t i)
{
	if (i < lx->n_base)
		return &lx->entries[i];
	if (i < lx->n_entries)
		return &lx->ext[i - lx->n_base];
	return NULL;
}

const char *strata_lx_str(const struct strata_lindex *lx, uint32_t off)
{
	if (off < lx->str_base)
		return lx->strings + off;
	if (off < lx->str_len)
		return lx->ext_str + (off - lx->str_base);
	return "";
}

const uint8_t *strata_lx_xattrs(const struct strata_lindex *lx, uint32_t i,
				size_t *len)
{
	const struct strata_lx_entry *e = strata_lx_entry(lx, i);
	uint64_t lo = 0, hi = lx->hdr->n_xattr;

	if (!e || !(e->flags & STRATA_LX_XATTRS))
		return NULL;
	if (i >= lx->n_base)
		i = lx->ext_orig[i - lx->n_base];
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		const struct strata_lx_xref *x = &lx->xtable[mid];

		if (x->entry == i) {
			uint32_t n;

			if (!range_ok(x->off, 4, lx->hdr->xattrs_len))
				return NULL;
			memcpy(&n, lx->xattrs + x->off, 4);
			if (!range_ok((uint64_t)x->off + 4, n, lx->hdr->xattrs_len))
				return NULL;
			*len = n;
			return lx->xattrs + x->off + 4;
		}
		if (x->entry < i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

void strata_lx_owner_of(const struct strata_lindex *lx,
			const struct strata_lx_entry *e,
			uint32_t *uid, uint32_t *gid)
{
	if (e->owner < lx->hdr->n_owners) {
		*uid = lx->owners[e->owner].uid;
		*gid = lx->owners[e->owner].gid;
	} else {
		*uid = *gid = 65534;
	}
}

uint32_t strata_lx_nlink(const struct strata_lindex *lx,
			 const struct strata_lx_entry *e)
{
	uint64_t lo = 0, hi = lx->hdr->n_links;

	if (S_ISDIR(e->mode))
		return e->size > UINT32_MAX ? UINT32_MAX : (uint32_t)e->size;
	if (!(e->flags & STRATA_LX_HARDLINK))
		return 1;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (lx->links[mid].entry == e->b)
			return lx->links[mid].off;
		if (lx->links[mid].entry < e->b)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 1;
}

uint64_t strata_lx_features(const struct strata_lindex *lx)
{
	return lx->hdr->features;
}

const struct strata_lx_xref *strata_lx_implied(const struct strata_lindex *lx,
					       size_t *n)
{
	*n = lx->hdr->n_implied;
	return (const void *)(lx->map + lx->hdr->implied_off);
}

int strata_lx_datafd(const struct strata_lindex *lx)
{
	return lx->datafd;
}

int strata_lx_namecmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

uint32_t strata_lx_lookup(const struct strata_lindex *lx, uint32_t dir,
			  const char *name, size_t len)
{
	const struct strata_lx_entry *d = strata_lx_entry(lx, dir);
	uint32_t lo, hi;

	if (!d || !S_ISDIR(d->mode) || !d->b ||
	    !range_ok(d->a, d->b, lx->n_entries))
		return UINT32_MAX;
	lo = d->a;
	hi = d->a + d->b;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct strata_lx_entry *e = strata_lx_entry(lx, mid);
		int c = strata_lx_namecmp(strata_lx_str(lx, e->name_off),
					  e->name_len, name, len);

		if (c == 0)
			return mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return UINT32_MAX;
}

/* ---- patching in memory (store/layer/graft.c) ------------------------------- */

uint32_t strata_lx_add(struct strata_lindex *lx,
		       const struct strata_lx_entry *e, uint32_t orig)
{
	uint32_t n = lx->n_entries - lx->n_base;

	if (lx->n_entries == UINT32_MAX - 1)
		return UINT32_MAX;
	if (n == lx->cap_ext) {
		uint32_t cap = lx->cap_ext ? lx->cap_ext * 2 : 16;
		struct strata_lx_entry *ne = realloc(lx->ext, cap * sizeof(*ne));
		uint32_t *no;

		if (!ne)
			return UINT32_MAX;
		lx->ext = ne;
		no = realloc(lx->ext_orig, cap * sizeof(*no));
		if (!no)
			return UINT32_MAX;
		lx->ext_orig = no;
		lx->cap_ext = cap;
	}
	lx->ext[n] = *e;
	if (orig != UINT32_MAX && orig >= lx->n_base)
		orig = lx->ext_orig[orig - lx->n_base];
	lx->ext_orig[n] = orig;
	return lx->n_entries++;
}

uint32_t strata_lx_add_str(struct strata_lindex *lx, const char *s, size_t len)
{
	uint64_t used = lx->str_len - lx->str_base, off = lx->str_len;

	if (off + len + 1 > UINT32_MAX)
		return UINT32_MAX;
	if (used + len + 1 > lx->cap_str) {
		uint64_t cap = (used + len + 1) * 2;
		char *ns = realloc(lx->ext_str, cap);

		if (!ns)
			return UINT32_MAX;
		lx->ext_str = ns;
		lx->cap_str = cap;
	}
	memcpy(lx->ext_str + used, s, len);
	lx->ext_str[used + len] = '\0';
	lx->str_len += len + 1;
	return (uint32_t)off;
}

struct strata_lx_entry *strata_lx_entry_mut(struct strata_lindex *lx,
					    uint32_t i)
{
	if (i >= lx->n_entries)
		return NULL;
	if (i >= lx->n_base)
		return &lx->ext[i - lx->n_base];
	if (!lx->writable) {
		if (mprotect((void *)lx->map, lx->map_len,
			     PROT_READ | PROT_WRITE) < 0)
			return NULL;	/* only ENOMEM can happen here */
		lx->writable = true;
	}
	return (struct strata_lx_entry *)&lx->entries[i];
}

int strata_lx_set_children(struct strata_lindex *lx, uint32_t dir,
			   const uint32_t *kids, uint32_t n)
{
	uint32_t first = lx->n_entries, k;
	struct strata_lx_entry *d;

	for (k = 0; k < n; k++) {
		struct strata_lx_entry e = *strata_lx_entry(lx, kids[k]);

		if (strata_lx_add(lx, &e, kids[k]) == UINT32_MAX)
			return -ENOMEM;
	}
	d = strata_lx_entry_mut(lx, dir);
	if (!d)
		return -ENOMEM;
	d->a = n ? first : 0;
	d->b = n;
	return 0;
}

int strata_layer_data_bytes(struct strata_store *st, const char *diff_id,
			    uint64_t *out)
{
	struct strata_lindex *lx = NULL;
	int r = strata_lindex_open(st, diff_id, &lx, NULL);

	if (r < 0)
		return r;
	*out = lx->hdr->data_bytes;
	strata_lindex_close(lx);
	return 0;
}
