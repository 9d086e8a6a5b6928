/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading a layer's metadata index (format in store.h). The index is our
 * own output, written once and renamed into place after verification; the
 * header and table bounds are checked at open so a truncated or foreign
 * file is refused, and every accessor bounds-checks its offsets.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"

struct strata_lindex {
	const uint8_t *map;
	size_t map_len;
	const struct strata_lx_header *hdr;
	const struct strata_lx_entry *entries;
	const char *strings;
	const struct strata_lx_xref *xtable;
	const uint8_t *xattrs;
	int datafd;
};

void strata_lindex_close(struct strata_lindex *lx)
{
	if (!lx)
		return;
	if (lx->map)
		munmap((void *)lx->map, lx->map_len);
	if (lx->datafd >= 0)
		close(lx->datafd);
	free(lx);
}

static bool range_ok(uint64_t off, uint64_t len, uint64_t total)
{
	return off <= total && len <= total - off;
}

int strata_lindex_open(struct strata_store *st, const char *diff_id,
		       struct strata_lindex **out, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 16];
	cleanup_fd int dfd = -1, fd = -1;
	struct strata_lindex *lx;
	const struct strata_lx_header *h;
	struct stat sb;
	void *map;

	strata_blob_relpath(diff_id, rel, sizeof(rel));
	dfd = openat(st->layers_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return strata_err_set(err, -errno, "layer %s: not in the cache",
				      diff_id);
	fd = openat(dfd, "index", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0)
		return strata_err_set(err, -EBADMSG, "layer %s: cache entry "
				      "has no index", diff_id);
	if ((size_t)sb.st_size < sizeof(*h))
		goto corrupt;
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
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
	    !range_ok(h->implied_off, h->n_implied * 8, lx->map_len)) {
		strata_lindex_close(lx);
		goto corrupt;
	}
	lx->entries = (const void *)(lx->map + h->entries_off);
	lx->strings = (const char *)lx->map + h->strings_off;
	lx->xattrs = lx->map + h->xattrs_off;
	lx->xtable = (const void *)(lx->map + h->xtable_off);
	lx->datafd = openat(dfd, "data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lx->datafd < 0) {
		strata_lindex_close(lx);
		goto corrupt;
	}
	*out = lx;
	return 0;
corrupt:
	return strata_err_set(err, -EBADMSG, "layer %s: cache index is "
			      "corrupt; remove %s/layers/%s", diff_id,
			      st->root, rel);
}

uint32_t strata_lx_count(const struct strata_lindex *lx)
{
	return lx->hdr->n_entries;
}

const struct strata_lx_entry *strata_lx_entry(const struct strata_lindex *lx,
					      uint32_t i)
{
	if (i >= lx->hdr->n_entries)
		return NULL;
	return &lx->entries[i];
}

const char *strata_lx_str(const struct strata_lindex *lx, uint32_t off)
{
	if (off >= lx->hdr->strings_len)
		return "";
	return lx->strings + off;
}

const uint8_t *strata_lx_xattrs(const struct strata_lindex *lx, uint32_t i,
				size_t *len)
{
	const struct strata_lx_entry *e = strata_lx_entry(lx, i);
	uint64_t lo = 0, hi = lx->hdr->n_xattr;

	if (!e || !(e->flags & STRATA_LX_XATTRS))
		return NULL;
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
	    !range_ok(d->a, d->b, lx->hdr->n_entries))
		return UINT32_MAX;
	lo = d->a;
	hi = d->a + d->b;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct strata_lx_entry *e = &lx->entries[mid];
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
