/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lazy layers: mounted from a table of contents, filled on first access.
 *
 * A layer with a verified TOC (toc.c, zchunked-toc.c, estargz.c) gets a
 * cache directory layers/lazy/ALG-BLOBHEX.TOCHEX: "index" (the ordinary
 * metadata index, built from the TOC), "contents" (per content number:
 * the compressed range in the blob, the size and the sha256 of the
 * file), "chunks" (each chunk of a file the TOC splits: where it lies in
 * the file and its chunkDigest), "sum" (the sha256 of those three: they
 * are not synced, and an entry a crash tore is built again, see
 * entry_sum()), "checked" (the boot it was last found intact in), data/
 * (the content files that have arrived) and, once the whole blob has
 * been read and checked, "diff_id" (what its uncompressed stream hashes
 * to) or "bad" (why its TOC does not describe its tar); those two are
 * written atomically and synced, as they are written after the build.
 *
 * It is keyed by the blob and the TOC digest, not by the diff_id: the
 * config's diff_id is a claim nobody has checked while the layer is lazy,
 * and an index built from a TOC is the TOC author's word, not the tar's.
 * So a lazy layer never stands in for layers/ALG/DIFFID, the unpacked
 * layer that full unpacks and their verified/ markers vouch for; a wrong
 * diff_id can poison nothing but the mounts that claimed it.
 *
 * Filling a file reads its compressed range, decompresses it (never past
 * its size), checks each chunk against its chunkDigest and the whole
 * file's sha256 against the TOC and only then links it
 * into data/ (an O_TMPFILE: a killed or concurrent fill never leaves a
 * half file under a content name; the data is synced once per layer,
 * and a file a crash cut short or emptied is fetched again: its size,
 * and once per boot its digest, are checked before it is used,
 * lazy-check.c). Content files present are verified; a killed fill
 * resumes with the others. A range that
 * cannot be fetched (a registry away, cut, lying) fails that read with
 * EIO and leaves nothing: no failure is remembered, the next read asks
 * again. The background fill (strata_lx_prefetch) fills every missing
 * file in order (stopping at a range its source cannot read, for
 * stratafs to resume later; from a registry, out of the check's own
 * download instead, lazy-fill.c fill_by_stream()), then streams the
 * whole blob once to check
 * its digest and the diff_id, and the TOC's metadata against the tar's
 * headers (the TOC read again from the blob and checked against the
 * manifest's digest of it, as at the mount: what each entry says is not
 * kept in the cache, whose writing and summing were a fifth of the
 * mount): a mismatch makes the layer bad, and every
 * later read of it fails with EIO and a log line; the next mount
 * refuses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lazy-int.h"

/* ---- the cache directory ---- */

/* "lazy/sha256-BLOBHEX.TOCHEX" */
void strata_lazy_name(const struct strata_layer *l, char *out, size_t len)
{
	const char *toc = l->toc_digest ? strchr(l->toc_digest, ':') : NULL;

	snprintf(out, len, "%s.%s", l->digest, toc ? toc + 1
		 : l->toc_digest ? l->toc_digest : "zran");
	*strchr(out, ':') = '-';
}

/* The blob of @l in @img's blob directory, checked for its size (its
 * digest only once all of it has been read); or, missing there, in a
 * registry that answers Range requests. */
static int open_src(const struct strata_image *img,
		    const struct strata_layer *l,
		    struct strata_range_src **out, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	struct stat sb;
	int fd;

	strata_blob_relpath(l->digest, rel, sizeof(rel));
	fd = openat(img->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT && img->source)
		return strata_range_src_reg(img->source, l->digest, out);
	if (fd < 0)
		return strata_err_set(err, -errno, "layer %s: blob %s", l->digest,
				      strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) ||
	    sb.st_size != l->size) {
		close(fd);
		return strata_err_set(err, -EBADMSG, "layer %s: size mismatch: "
				      "descriptor says %lld bytes, blob has "
				      "%lld", l->digest, (long long)l->size,
				      (long long)sb.st_size);
	}
	return strata_range_src_fd(fd, out);
}

/* Has the whole blob been checked, and does the diff_id it hashed to
 * match @l's claim? Return: 1 checked and matching, 0 not checked yet,
 * -EBADMSG (message in @err) checked and different. */
static int diff_id_state(int dirfd, const struct strata_layer *l,
			 struct strata_err *err)
{
	cleanup_free char *got = NULL;
	size_t len;

	if (strata_read_file(dirfd, "bad", 4096, &got, &len) == 0)
		return strata_err_set(err, -EBADMSG, "%.*s", (int)len, got);
	if (strata_read_file(dirfd, "diff_id", STRATA_DIGEST_MAX, &got,
			     &len) < 0)
		return 0;
	if (len == strlen(l->diff_id) && !memcmp(got, l->diff_id, len))
		return 1;
	return strata_err_set(err, -EBADMSG, "layer %s: diff_id mismatch: "
			      "config says %s, uncompressed content hashes to "
			      "%.*s (the layer is bad)", l->digest, l->diff_id,
			      (int)len, got);
}

/*
 * A TOC layer's entry is not synced when it is built (two fsyncs of 10 MB
 * were a third of a big image's mount): "sum" holds the sha256 of its
 * "index" then "contents", and an entry whose files do not hash to it (a
 * crash tore it before it reached the disk) is built again, never read.
 * The sum is checked at the first mount of each boot (see "checked").
 */
static int entry_sum(int dfd, char *out)
{
	static const char *const names[] = { "index", "contents", "chunks" };
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	size_t i;

	if (strata_hasher_new_alg("sha256", &h) < 0)
		return -ENOMEM;
	for (i = 0; i < ARRAY_SIZE(names); i++) {
		cleanup_fd int fd = openat(dfd, names[i], O_RDONLY | O_CLOEXEC |
					   O_NOFOLLOW);
		struct stat sb;
		void *p;

		if (fd < 0 || fstat(fd, &sb) < 0)
			return -errno;
		if (!S_ISREG(sb.st_mode))
			return -EBADMSG;
		if (sb.st_size == 0)
			continue;
		/* hashed where the page cache holds it: read() copied the
		 * 10 MB of a big image's entry first */
		p = mmap(NULL, (size_t)sb.st_size, PROT_READ,
			 MAP_PRIVATE | MAP_POPULATE, fd, 0);
		if (p == MAP_FAILED)
			return -errno;
		strata_hasher_update(h, p, (size_t)sb.st_size);
		munmap(p, (size_t)sb.st_size);
	}
	strata_hasher_final(h, out);
	return 0;
}

/*
 * Only a crash tears an entry, and a crash means a new boot: "checked"
 * holds the boot id (lazy-check.c) under which the entry was built or
 * last found intact, and within that boot it is not hashed again (15 ms
 * of a warm remount of the bench image otherwise).
 */
static void mark_checked(int dfd)
{
	const char *boot = strata_boot_id();
	cleanup_fd int fd = -1;

	if (!*boot)
		return;
	fd = openat(dfd, "checked", O_WRONLY | O_CREAT | O_TRUNC |
		    O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd >= 0)
		strata_write_all(fd, boot, strlen(boot));	/* best effort */
}

static bool entry_intact(int dfd)
{
	cleanup_free char *want = NULL, *seen = NULL;
	const char *boot = strata_boot_id();
	char got[STRATA_DIGEST_MAX];
	size_t len, slen;

	/* an older strata's, without chunks (one with a "meta" file, which
	 * is not read any more, is summed with it: built again unless it
	 * was checked in this boot) */
	if (faccessat(dfd, "chunks", F_OK, AT_SYMLINK_NOFOLLOW))
		return false;
	if (*boot && strata_read_file(dfd, "checked", 64, &seen,
				      &slen) == 0 &&
	    slen == strlen(boot) && !memcmp(seen, boot, slen))
		return true;
	if (strata_read_file(dfd, "sum", STRATA_DIGEST_MAX, &want,
			     &len) < 0 || entry_sum(dfd, got) < 0 ||
	    len != strlen(got) || memcmp(want, got, len))
		return false;
	mark_checked(dfd);
	return true;
}

/* Sum the entry built in tmp/@tmpname (@dest) and rename it to
 * lazy/@name, nothing synced; or remove it when @r < 0. */
static int publish_summed(struct strata_store *st, int r, int dest,
			  const char *tmpname, int lazyfd, const char *name,
			  struct strata_err *err)
{
	char sum[STRATA_DIGEST_MAX];
	cleanup_fd int fd = -1;

	if (r == 0 && (r = entry_sum(dest, sum)) < 0)
		strata_err_set(err, r, "cache: summing lazy layer: %s",
			       strerror(-r));
	if (r == 0) {
		fd = openat(dest, "sum", O_WRONLY | O_CREAT | O_EXCL |
			    O_CLOEXEC, 0644);
		r = fd < 0 ? -errno : strata_write_all(fd, sum, strlen(sum));
		if (r < 0)
			strata_err_set(err, r, "cache: %s", strerror(-r));
	}
	if (r == 0)
		mark_checked(dest);
	if (r == 0 && renameat(st->tmp_fd, tmpname, lazyfd, name) < 0)
		r = strata_err_set(err, -errno, "cache: publishing lazy layer: "
				   "%s", strerror(errno));
	if (r < 0)
		strata_rmtree_at(st->tmp_fd, tmpname);
	return r;
}

static int build(struct strata_store *st, struct strata_image *img,
		 const struct strata_layer *l, const struct strata_zc_pos *pos,
		 const struct strata_unpack_opts *opts, int lazyfd,
		 const char *name, struct strata_err *err)
{
	char tmpname[STRATA_DIGEST_MAX * 2 + 16];
	struct strata_range_src *src = NULL;
	uint64_t max_bytes = opts && opts->max_layer_bytes
			     ? opts->max_layer_bytes : 64ull << 30;
	uint64_t max_entries = opts && opts->max_entries
			       ? opts->max_entries : 16u << 20;
	cleanup_fd int dest = -1;
	int r;

	r = open_src(img, l, &src, err);
	if (r < 0)
		return r;
	snprintf(tmpname, sizeof(tmpname), "lazy-%s", name);
	strata_rmtree_at(st->tmp_fd, tmpname);
	if (mkdirat(st->tmp_fd, tmpname, 0755) < 0 ||
	    (dest = openat(st->tmp_fd, tmpname, O_RDONLY | O_DIRECTORY |
			   O_CLOEXEC)) < 0) {
		src->free(src);
		return strata_err_set(err, -errno, "cache: %s", strerror(errno));
	}
	if (l->compression == STRATA_COMP_GZIP)
		r = strata_esgz_build(src, l, max_bytes, max_entries, dest,
				      err);
	else
		r = strata_zc_build(src, l, pos, max_bytes, max_entries, dest,
				    err);
	src->free(src);
	return publish_summed(st, r, dest, tmpname, lazyfd, name, err);
}

int strata_lazy_publish(struct strata_store *st, int r, int dest,
			const char *tmpname, int lazyfd, const char *name,
			struct strata_err *err)
{
	if (r == 0 && fsync(dest) < 0)
		r = strata_err_set(err, -errno, "cache: syncing lazy layer: %s",
				   strerror(errno));
	if (r == 0 && renameat(st->tmp_fd, tmpname, lazyfd, name) < 0)
		r = strata_err_set(err, -errno, "cache: publishing lazy layer: "
				   "%s", strerror(errno));
	if (r < 0) {
		strata_rmtree_at(st->tmp_fd, tmpname);
		return r;
	}
	fsync(lazyfd);
	return 0;
}

int strata_lazy_lock(struct strata_store *st, const char *name, int *lazyfd,
		     int *lock, struct strata_err *err)
{
	char lockname[2 * STRATA_DIGEST_MAX + 16];

	snprintf(lockname, sizeof(lockname), "%s.lock", name);
	if (mkdirat(st->layers_fd, "lazy", 0755) < 0 && errno != EEXIST)
		return strata_err_set(err, -errno, "cache: %s", strerror(errno));
	*lazyfd = openat(st->layers_fd, "lazy", O_RDONLY | O_DIRECTORY |
			 O_NOFOLLOW | O_CLOEXEC);
	if (*lazyfd < 0)
		return strata_err_set(err, -errno, "cache: %s", strerror(errno));
	*lock = strata_lock_at(*lazyfd, lockname, true);
	if (*lock < 0)
		return strata_err_set(err, *lock, "layer cache lock: %s",
				      strerror(-*lock));
	return 0;
}

int strata_lazy_prepare(struct strata_store *st, struct strata_image *img,
			size_t i, const struct strata_unpack_opts *opts,
			struct strata_err *err)
{
	struct strata_layer *l = &img->layers[i];
	char name[2 * STRATA_DIGEST_MAX + 8];
	cleanup_fd int lazyfd = -1, lock = -1, dfd = -1;
	struct strata_zc_pos pos = { 0 };
	int r;

	r = l->compression == STRATA_COMP_GZIP ? strata_esgz_locate(l)
					       : strata_zc_locate(l, &pos, err);
	if (r < 0)
		return r;
	strata_lazy_name(l, name, sizeof(name));
	r = strata_lazy_lock(st, name, &lazyfd, &lock, err);
	if (r < 0)
		return r;
	dfd = openat(lazyfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		     O_CLOEXEC);
	if (dfd >= 0 && !entry_intact(dfd)) {
		char sd[32];

		strata_short_digest(l->digest, sd, sizeof(sd));
		strata_warn("layer %s: lazy cache entry is torn (a crash before "
			    "it reached the disk?) or from an older strata: "
			    "building it again", sd);
		close(dfd);
		dfd = -1;
		strata_rmtree_at(lazyfd, name);
	}
	if (dfd < 0) {
		r = build(st, img, l, &pos, opts, lazyfd, name, err);
		if (r < 0)
			return r;
		dfd = openat(lazyfd, name, O_RDONLY | O_DIRECTORY |
			     O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			return -errno;
	}
	r = diff_id_state(dfd, l, err);
	return r < 0 ? r : 0;
}

/* ---- opening a lazy layer ---- */

void strata_lazy_free(struct strata_lazy *z)
{
	if (!z)
		return;
	if (z->src)
		z->src->free(z->src);
	if (z->map)
		munmap(z->map, z->map_len);
	if (z->chunkmap)
		munmap(z->chunkmap, z->chunkmap_len);
	if (z->dirfd >= 0)
		close(z->dirfd);
	if (z->zran)
		strata_zran_free(z->zran);
	if (z->blobfd >= 0)
		close(z->blobfd);
	if (z->contentfd >= 0)
		close(z->contentfd);
	free(z->image);
	free(z->toc_digest);
	free(z->toc_position);
	free(z->metas);
	free(z->digest);
	free(z->diff_id);
	free((void *)z->intact);
	free(z);
}

/* The content table, checked once (our own file, but in a cache anyone
 * with the store's rights could have changed). */
static int map_contents(struct strata_lazy *z)
{
	cleanup_fd int fd = openat(z->dirfd, "contents", O_RDONLY | O_CLOEXEC);
	const struct strata_lz_header *h;
	struct stat sb;
	uint32_t i;

	if (fd < 0 || fstat(fd, &sb) < 0)
		return -EBADMSG;
	if ((size_t)sb.st_size < sizeof(*h))
		return -EBADMSG;
	z->map_len = (size_t)sb.st_size;
	z->map = mmap(NULL, z->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (z->map == MAP_FAILED) {
		z->map = NULL;
		return -errno;
	}
	h = z->map;
	if (memcmp(h->magic, STRATA_LZ_MAGIC, 8) ||
	    h->file_size != (uint64_t)sb.st_size ||
	    h->names_off != sizeof(*h) + (uint64_t)h->n * sizeof(*z->recs) ||
	    h->names_off > h->file_size ||
	    h->names_len != h->file_size - h->names_off)
		return -EBADMSG;
	z->n = h->n;
	z->prefetch = h->prefetch;
	z->recs = (const void *)((const char *)z->map + sizeof(*h));
	for (i = 0; i < z->n; i++) {
		const struct strata_lz_rec *r = &z->recs[i];

		if (r->end <= r->off ||
		    (!z->zran && r->end > (uint64_t)z->size) ||
		    r->size > STRATA_LX_MAX_SIZE)
			return -EBADMSG;
	}
	return z->zran ? strata_lzr_check(z->zran, z->recs, z->n) : 0;
}

/* Table @name of records of @size (STRATA_LZC_MAGIC or _LZM_): mapped
 * into *@map, its records at *@recs. */
static int map_table(struct strata_lazy *z, const char *name,
		     const char *magic, size_t size, void **map,
		     size_t *map_len, const void **recs, uint64_t *n)
{
	cleanup_fd int fd = openat(z->dirfd, name, O_RDONLY | O_CLOEXEC |
				   O_NOFOLLOW);
	const struct strata_lz_tab *h;
	struct stat sb;

	if (fd < 0 || fstat(fd, &sb) < 0 || (size_t)sb.st_size < sizeof(*h))
		return -EBADMSG;
	*map_len = (size_t)sb.st_size;
	*map = mmap(NULL, *map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (*map == MAP_FAILED) {
		*map = NULL;
		return -errno;
	}
	h = *map;
	if (memcmp(h->magic, magic, 8) ||
	    h->n != (*map_len - sizeof(*h)) / size ||
	    (*map_len - sizeof(*h)) % size)
		return -EBADMSG;
	*n = h->n;
	*recs = h + 1;
	return 0;
}

/* The chunk table, in record order, each inside its file. */
static int map_chunks(struct strata_lazy *z)
{
	uint64_t i;
	int r = map_table(z, "chunks", STRATA_LZC_MAGIC, sizeof(*z->chunks),
			  &z->chunkmap, &z->chunkmap_len,
			  (const void **)&z->chunks, &z->n_chunks);

	for (i = 0; r == 0 && i < z->n_chunks; i++) {
		const struct strata_lz_chunk *c = &z->chunks[i];

		if (c->rec >= z->n || (i && c->rec < c[-1].rec) ||
		    c->size > z->recs[c->rec].size ||
		    c->uoff > z->recs[c->rec].size - c->size)
			r = -EBADMSG;
	}
	return r;
}

/* A gzip/zstd layer's access points and the store's copy of its blob. */
static int open_zran(struct strata_lazy *z, const struct strata_layer *l,
		     struct strata_err *err)
{
	int r = strata_zran_load(z->dirfd, STRATA_ZRAN_NAME, l->digest,
				 &z->zran, err);

	if (r < 0)
		return r;
	z->blobfd = openat(z->dirfd, "blob", O_RDONLY | O_CLOEXEC |
			   O_NOFOLLOW);
	/* removed once every file was filled (lz_drop_blob()): checked by
	 * strata_layer_open() */
	return z->blobfd < 0 && errno != ENOENT ? -EBADMSG : 0;
}


/* Is every content file of @z there? */
static bool all_filled(struct strata_lazy *z)
{
	for (uint32_t i = 1; i <= z->n; i++)
		if (lz_missing(z, i))
			return false;
	return true;
}

/* Every file of a gzip/zstd layer is filled: the store's copy of the blob
 * is needed no more. The files are synced first, so a crash cannot leave
 * a layer with neither. Mounts that have it open keep reading it. */
int lz_drop_blob(struct strata_lazy *z)
{
	if (syncfs(z->datafd) < 0)
		return -errno;
	if (!all_filled(z))
		return -EBADMSG;
	if (unlinkat(z->dirfd, "blob", 0) < 0 && errno != ENOENT)
		return -errno;
	if (unlinkat(z->dirfd, STRATA_LZR_SYNCED, 0) < 0 && errno != ENOENT)
		return -errno;
	return fsync(z->dirfd) < 0 ? -errno : 0;
}

int strata_layer_open(struct strata_store *st, const struct strata_image *img,
		      size_t i, struct strata_lindex **out,
		      struct strata_err *err)
{
	const struct strata_layer *l = &img->layers[i];
	char rel[2 * STRATA_DIGEST_MAX + 16], what[sizeof(rel) + 300];
	struct strata_lazy *z;
	struct strata_lindex *lx = NULL;
	int r;

	if (!l->lazy)
		return strata_lindex_open(st, l->diff_id, out, err);
	strcpy(rel, "lazy/");
	strata_lazy_name(l, rel + 5, sizeof(rel) - 5);
	snprintf(what, sizeof(what), "layer %s: lazy cache entry is corrupt; "
		 "remove %s/layers/%s", l->digest, st->root, rel);
	z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->datafd = -1;
	z->contentfd = -1;
	z->blobfd = -1;
	z->size = l->size;
	z->gzip = l->compression == STRATA_COMP_GZIP && l->toc_digest;
	z->dirfd = openat(st->layers_fd, rel, O_RDONLY | O_DIRECTORY |
			  O_NOFOLLOW | O_CLOEXEC);
	z->image = strdup(img->ref_text);
	z->digest = strdup(l->digest);
	z->diff_id = strdup(l->diff_id);
	z->toc_digest = l->toc_digest ? strdup(l->toc_digest) : NULL;
	z->toc_position = l->toc_position ? strdup(l->toc_position) : NULL;
	if (z->dirfd < 0) {
		r = strata_err_set(err, -errno, "layer %s: not in the cache",
				   l->digest);
		goto fail;
	}
	if (!z->image || !z->digest || !z->diff_id ||
	    (l->toc_digest && !z->toc_digest) ||
	    (l->toc_position && !z->toc_position)) {
		r = -ENOMEM;
		goto fail;
	}
	if (!l->toc_digest && open_zran(z, l, err) < 0) {
		r = strata_err_set(err, -EBADMSG, "%s", what);
		goto fail;
	}
	r = map_contents(z);
	if (r == 0 && !z->zran)
		r = map_chunks(z);
	if (r < 0) {
		r = strata_err_set(err, r, "%s", what);
		goto fail;
	}
	z->intact = calloc(z->n / 8 + 1, 1);
	if (!z->intact) {
		r = -ENOMEM;
		goto fail;
	}
	r = z->zran ? 0 : open_src(img, l, &z->src, err);
	if (r < 0)
		goto fail;
	r = strata_lindex_open_dir(z->dirfd, what, &lx, err);
	if (r < 0)
		goto fail;
	if (!faccessat(z->dirfd, "bad", F_OK, AT_SYMLINK_NOFOLLOW))
		atomic_store(&z->bad, true);	/* found bad by an earlier fill */
	z->datafd = strata_lx_datafd(lx);
	if (z->zran && z->blobfd < 0 && !all_filled(z)) {
		r = strata_err_set(err, -EBADMSG, "%s (its blob is gone "
				   "before all its files were filled)", what);
		strata_lindex_close(lx);
		goto fail;
	}
	if (mkdirat(st->layers_fd, "lazy/content", 0755) == 0 ||
	    errno == EEXIST)
		z->contentfd = openat(st->layers_fd, "lazy/content",
				      O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				      O_CLOEXEC);
	z->lx = lx;
	strata_lindex_set_lazy(lx, z);
	*out = lx;
	return 0;
fail:
	strata_lazy_free(z);
	return r;
}

bool strata_lx_is_lazy(const struct strata_lindex *lx)
{
	return strata_lindex_lazy(lx) != NULL;
}
