/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lazy gzip and zstd layers: mounted after one metadata pass, filled from
 * access points (zran.h).
 *
 * The pass (strata_lazy_zran_prepare) copies the blob into the store
 * (copy_file_range: shared extents where the filesystem can; on a thread
 * of its own, a few MiB ahead of the reading) and reads that copy once,
 * mapped, as a full unpack reads a blob, with Go's tar rules alone
 * (unpack.c): it decompresses,
 * checks the tar entries and hashes the blob (on another thread), and
 * refuses the layer unless the digest matches the manifest. It writes no
 * content: it records, for each non-empty regular file, the range of its
 * content in the uncompressed stream, and the access points of the blob.
 * A registry's blob (docker://, missing from the store) is read by the
 * pass as it downloads, from the file it is written to (stream_pass()):
 * the blob source hashes it and
 * stores it in blobs/, and that verified file is linked in as "blob".
 * The diff_id is not hashed here: the blob determines the stream, so a
 * wrong claim cannot change what is served; the background fill (lazy-fill.c,
 * fill_zran()) hashes the whole stream, records "diff_id" and makes the
 * layer bad when the config claims another.
 *
 * Cache entry: layers/lazy/ALG-BLOBHEX.zran, beside the zstd:chunked ones
 * (same lock, same gc, same "index", "contents" and data/ as lazy.c), with
 * "zran" (the access points), "blob" (and "blob.synced", below) and,
 * once a fill has hashed the stream, "diff_id". It is keyed by the blob
 * digest alone: the blob determines the uncompressed stream, and the
 * diff_id it hashed to is recorded, so a config claiming another
 * diff_id for the same blob is refused at mount (as it would be by a
 * full unpack) and can poison nothing. It still never stands in for
 * layers/ALG/DIFFID: a full unpack of the same layer is a separate
 * entry.
 *
 * "blob" is the store's own copy of the blob, the bytes the pass hashed:
 * reads never go back to a layout or archive another user could change
 * after the check, nor to a registry. It costs the compressed size (a
 * registry's: nothing more, it is a link to the blob in blobs/) until
 * the fill has filled every file: then it is removed (lazy.c,
 * lz_drop_blob(): the files are synced first), and a later mount of the
 * layer finds every file filled and needs no blob.
 *
 * The copy is not synced before the mount goes live: on the bench image
 * that fsync kept each worker waiting on the disk for 0.15-0.2 s, a
 * tenth of the time to a live mount. It carries instead the mark of the
 * boot it was hashed in (user.strata.checked, lazy-check.c), as a
 * fill's content files do: in that boot the page cache holds its bytes;
 * after a crash they may not have reached the disk, so the first mount
 * of a later boot hashes it again (blob_intact()). A torn copy is
 * removed with its entry and the layer read again; an intact one has
 * survived a reboot and is marked "blob.synced". Where no user xattr
 * can be kept, the pass syncs the copy and writes "blob.synced" itself;
 * a registry's blob (a link to blobs/, synced when stored) is marked so
 * at once.
 *
 * A record in "contents" holds uncompressed offsets [off, end) and no
 * sha256 (the pass does not see content bytes): such files are not
 * shared through layers/lazy/content/.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lazy.h"
#include "unpack.h"
#include "zran.h"

#define IO_SIZE (1u << 20)
/* one strata_zran_read() at most: each starts again at an access point */
#define READ_MAX (64u << 20)

struct pass {
	struct strata_lz_rec *recs;
	uint32_t n, cap;
};

static int pass_file(void *ctx, uint32_t data_id, const char *name,
		     uint64_t uoff, uint64_t size)
{
	struct pass *p = ctx;
	struct strata_lz_rec *r;

	(void)name;	/* lazy-fill.c finds it in the index for messages */
	if (data_id != p->n + 1)
		return -EFBIG;
	if (p->n == p->cap) {
		uint32_t cap = p->cap ? 2 * p->cap : 1024;
		void *q = reallocarray(p->recs, cap, sizeof(*p->recs));

		if (!q)
			return -ENOMEM;
		p->recs = q;
		p->cap = cap;
	}
	r = &p->recs[p->n++];
	memset(r, 0, sizeof(*r));
	r->off = uoff;
	r->end = uoff + size;
	r->size = size;
	return 0;
}

static int write_contents(const struct pass *p, int dest)
{
	struct strata_lz_header h = { .n = p->n };
	size_t rl = (size_t)p->n * sizeof(*p->recs);
	cleanup_free char *buf = NULL;

	memcpy(h.magic, STRATA_LZ_MAGIC, 8);
	h.names_off = sizeof(h) + rl;	/* no names (lazy.h) */
	h.file_size = h.names_off;
	buf = malloc(h.file_size);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	if (rl)
		memcpy(buf + sizeof(h), p->recs, rl);
	return strata_write_atomic(dest, "contents", buf, h.file_size, 0644);
}

/*
 * The store's copy of the blob, made on a thread of its own while the pass
 * reads it: the pass reads the copy, mapped, and waits for each range it
 * reads (copy_wait()). Copied first and read after, the copy (0.1 s for
 * the bench image's largest blob, warm; its disk reads, cold) came before
 * the first byte was inflated, on the path of the layer that takes the
 * longest; now it runs ahead of the inflater. Every byte hashed and
 * inflated is still a byte of the copy, read where it stays.
 */
struct blob_copy {
	int in, out;
	uint64_t size;
	unsigned char *map;	/* the copy, @size bytes, or NULL */
	pthread_t thread;
	bool running;
	struct strata_arrival copied;	/* bytes in the copy */
	int error;		/* the copier's, read after the join */
};

/* a step of the copy: the pass waits for at most this much at its start */
#define COPY_STEP (4u << 20)

static void *copier(void *arg)
{
	struct blob_copy *c = arg;
	uint64_t off = 0, n;
	int r = 0;

	for (; off < c->size; off += n) {
		n = c->size - off < COPY_STEP ? c->size - off : COPY_STEP;
		r = strata_copy_range(c->in, c->out, (off_t)off, (off_t)n);
		if (r < 0)
			break;
#ifdef MADV_POPULATE_READ
		/* mapped here, not by a page fault in the inflater (a hint:
		 * older kernels fault the pages in as before) */
		madvise(c->map + off, (size_t)n, MADV_POPULATE_READ);
#endif
		strata_arrival_advance(&c->copied, off + n);
	}
	c->error = r;
	strata_arrival_end(&c->copied, r);
	return NULL;
}

/* unpack.h's map_wait: are the first @end bytes in the copy? */
static int copy_wait(void *ctx, uint64_t end)
{
	struct blob_copy *c = ctx;

	return strata_arrival_wait(&c->copied, end < c->size ? end : c->size);
}

/* Start the store's copy of the blob (@size bytes of @blobfd) as "blob" in
 * @dest, its fd in *@copy, mapped in @c->map (NULL for an empty blob: the
 * pass then reads *@copy). */
static int copy_start(int blobfd, int dest, int64_t size, int *copy,
		      struct blob_copy *c)
{
	void *map;

	/* writable until run_pass() has marked it: a user may not set a
	 * user xattr on a file it cannot write */
	*copy = openat(dest, "blob", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
		       0600);
	if (*copy < 0)
		return -errno;
	if (size == 0)
		return 0;
	/* its size first: the pages are mapped before they are written */
	if (ftruncate(*copy, (off_t)size) < 0)
		return -errno;
	map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, *copy, 0);
	if (map == MAP_FAILED)
		return -errno;
	madvise(map, (size_t)size, MADV_SEQUENTIAL);
	c->in = blobfd;
	c->out = *copy;
	c->size = (uint64_t)size;
	c->map = map;
	strata_arrival_init(&c->copied);
	if (pthread_create(&c->thread, NULL, copier, c) != 0) {
		strata_arrival_destroy(&c->copied);
		munmap(map, (size_t)size);
		c->map = NULL;
		return -EAGAIN;
	}
	c->running = true;
	return 0;
}

/* Wait for the copy to end and unmap it. Return: 0 once every byte is
 * copied, or the copy's negative errno. */
static int copy_end(struct blob_copy *c)
{
	int r = 0;

	if (c->running) {
		pthread_join(c->thread, NULL);
		c->running = false;
		r = c->error;
		strata_arrival_destroy(&c->copied);
	}
	if (c->map)
		munmap(c->map, (size_t)c->size);
	c->map = NULL;
	return r;
}

/* Record in entry @dfd that its blob is on disk. */
static int mark_synced(int dfd)
{
	return strata_write_atomic(dfd, STRATA_LZR_SYNCED, "", 0, 0644);
}

/* Is the entry's blob (@dfd's "blob", if still there) what the pass
 * verified? It is not synced before the mount (run_pass()): in the boot
 * that wrote it, the page cache has its bytes; after a crash, they may
 * not have reached the disk, so the first use in a later boot hashes it
 * again (then it has survived a reboot, and STRATA_LZR_SYNCED saves the
 * next boots that hash). Return: 1 intact, 0 not, negative errno. */
static int blob_intact(int dfd, const char *digest)
{
	cleanup_fd int fd = -1;
	int r;

	if (faccessat(dfd, STRATA_LZR_SYNCED, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	fd = openat(dfd, "blob", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 1 : -errno;	/* all filled */
	if (strata_lz_marked(fd))
		return 1;
	r = strata_lz_verify_digest(fd, digest);
	if (r == 1 && fsync(fd) == 0)
		mark_synced(dfd);
	return r;
}

/* who is told the blob bytes read (cache.c's progress line), or NULL */
struct progress {
	void (*cb)(void *ctx, uint64_t bytes);
	void *ctx;
};

/* The pass, into the empty directory @dest: over the local blob @blobfd,
 * or over a registry's download (@stream: the file the blob source
 * writes, mapped and read as @arriving says its bytes are there, or a
 * socket the source feeds; the store's copy is linked in after the
 * download, see stream_pass()). */
static int run_pass(const struct strata_layer *l, int blobfd, bool stream,
		    int (*arriving)(void *ctx, uint64_t end), void *arr_ctx,
		    int dest, const struct strata_unpack_opts *opts,
		    const struct progress *pg, struct strata_err *err)
{
	struct pass p = { 0 };
	struct strata_zran_builder *b = NULL;
	struct strata_zran *z = NULL;
	struct blob_copy bc = { .error = 0 };
	cleanup_fd int copy = -1;
	uint64_t usize = 0;
	int r;

	if (mkdirat(dest, "data", 0755) < 0)
		return -errno;
	r = stream ? 0 : copy_start(blobfd, dest, l->size, &copy, &bc);
	if (r < 0) {
		copy_end(&bc);
		return strata_err_set(err, r, "layer %s: cache: copying the "
				      "blob: %s", l->digest, strerror(-r));
	}
	if (arriving && l->size > 0) {
		/* a download written to a file: read where it is written */
		void *m = mmap(NULL, (size_t)l->size, PROT_READ, MAP_SHARED,
			       blobfd, 0);

		if (m == MAP_FAILED) {
			r = -errno;
			goto out;
		}
		madvise(m, (size_t)l->size, MADV_SEQUENTIAL);
		bc.map = m;
		bc.size = (uint64_t)l->size;
	}
	r = strata_zran_builder_new(STRATA_ZRAN_SPAN, true, &b);
	if (r < 0)
		goto out;
	{
		struct strata_unpack_job job = {
			.blob_fd = stream ? blobfd : copy, .digest = l->digest,
			.size = l->size, .diff_id = l->diff_id,
			.compression = l->compression, .dest_fd = dest,
			.max_bytes = opts && opts->max_layer_bytes
				     ? opts->max_layer_bytes : 64ull << 30,
			.max_entries = opts && opts->max_entries
				       ? opts->max_entries : 16u << 20,
			.zran = b, .lazy_file = pass_file, .lazy_ctx = &p,
			.copy_fd = -1, .usize = &usize,
			.map = bc.map, .map_len = (uint64_t)l->size,
			.map_wait = bc.running ? copy_wait : arriving,
			.map_wait_ctx = bc.running ? (void *)&bc : arr_ctx,
			.map_what = bc.running ? "cache: copying the blob"
					       : "downloading the blob",
			/* the fill hashes the stream (lazy-fill.c) */
			.diff_id_later = true,
			/* a download: the blob source hashes what it sends,
			 * and stream_pass() keeps nothing unless it matched */
			.digest_checked = stream,
			.progress = pg->cb, .progress_ctx = pg->ctx,
		};

		r = strata_unpack_layer(&job, err);
	}
	{
		/* the pass read every byte, so the copy has ended; on an
		 * error, it ends here before the entry is removed */
		int rc = copy_end(&bc);

		if (r == 0 && rc < 0)
			r = strata_err_set(err, rc, "layer %s: cache: copying "
					   "the blob: %s", l->digest,
					   strerror(-rc));
	}
	if (r == 0) {
		r = strata_zran_builder_finish(b, (uint64_t)l->size, usize, &z);
		if (r == 0)
			r = strata_zran_write(z, l->digest, dest,
					      STRATA_ZRAN_NAME);
		if (r < 0)
			r = strata_err_set(err, r, "layer %s: access points: %s",
					   l->digest, strerror(-r));
	}
	if (r == 0 && (r = write_contents(&p, dest)) < 0)
		r = strata_err_set(err, r, "layer %s: cache: %s", l->digest,
				   strerror(-r));
	/* the copy is not synced on the way to the mount: it hashed to its
	 * digest in this boot, and a later boot hashes it again before use
	 * (blob_intact()). Where the mark cannot be kept, synced here. */
	if (r == 0 && copy >= 0 && strata_lz_mark(copy) < 0) {
		r = fsync(copy) < 0 ? -errno : mark_synced(dest);
		if (r < 0)
			r = strata_err_set(err, r, "layer %s: cache: %s",
					   l->digest, strerror(-r));
	}
	if (r == 0 && copy >= 0 && fchmod(copy, 0444) < 0)
		r = strata_err_set(err, -errno, "layer %s: cache: %s",
				   l->digest, strerror(errno));
out:
	copy_end(&bc);
	strata_zran_builder_free(b);
	if (z)
		strata_zran_free(z);
	free(p.recs);
	return r;
}

/* The pass over a registry's download (@img's blob source): the source
 * hashes the bytes as they arrive and stores the blob in the store's
 * blobs/ once its digest matched; the pass reads the same bytes
 * meanwhile, from the file the source writes them to (open_file: 2.69 s
 * to a live bench image, against 3.20 s through a socket, which copied
 * every byte twice more) or its socket, and keeps its result only if the
 * source's finish() says they matched. The store's verified copy is
 * then linked into the entry as "blob" (copied where it cannot be): the
 * mount reads it, never the registry again. */
static int stream_pass(struct strata_image *img, const struct strata_layer *l,
		       int dest, const struct strata_unpack_opts *opts,
		       const struct progress *pg, struct strata_err *err)
{
	struct strata_blob_source *src = img->source;
	struct strata_err perr = { 0 };
	char rel[STRATA_DIGEST_MAX + 8];
	cleanup_fd int in = -1, out = -1;
	int (*wait)(void *ctx, uint64_t end) = NULL;
	void *handle = NULL;
	int sock, r, fr;

	/* the download's file, mapped as it is written, where the source
	 * can (no copy through a socket); else its socket */
	sock = src->open_file ? src->open_file(src, l, &handle, &wait, err)
			      : src->open(src, l, &handle, err);
	if (sock < 0)
		return sock;
	r = run_pass(l, sock, true, wait, handle, dest, opts, pg, &perr);
	close(sock);	/* a download still sending stops */
	fr = src->finish(src, handle, r, err);
	if (fr < 0)
		return fr;	/* the download's failure explains the rest */
	if (r < 0)
		return strata_err_set(err, r, "%s", perr.msg);
	strata_blob_relpath(l->digest, rel, sizeof(rel));
	/* the store's blobs are synced when stored */
	if (linkat(img->blobs_fd, rel, dest, "blob", 0) == 0) {
		r = mark_synced(dest);
		return r < 0 ? strata_err_set(err, r, "layer %s: cache: %s",
					      l->digest, strerror(-r)) : 0;
	}
	in = openat(img->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	out = openat(dest, "blob", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		     0444);
	r = in < 0 || out < 0 ? -errno : strata_copy_data(in, out, l->size);
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	if (r == 0)
		r = mark_synced(dest);
	return r < 0 ? strata_err_set(err, r, "layer %s: cache: storing the "
				      "blob: %s", l->digest, strerror(-r)) : 0;
}

int strata_lazy_zran_prepare(struct strata_store *st, struct strata_image *img,
			     size_t i, const struct strata_unpack_opts *opts,
			     void (*progress)(void *ctx, uint64_t bytes),
			     void *progress_ctx, struct strata_err *err)
{
	struct progress pg = { progress, progress_ctx };
	struct strata_layer *l = &img->layers[i];
	char name[STRATA_DIGEST_MAX + 8];
	char rel[STRATA_DIGEST_MAX + 8], tmpname[sizeof(name) + 8];
	cleanup_fd int lazyfd = -1, lock = -1, dfd = -1, blob = -1, tmp = -1;
	cleanup_free char *got = NULL;
	struct stat sb;
	size_t len;
	int r;

	if ((l->compression != STRATA_COMP_GZIP &&
	     l->compression != STRATA_COMP_ZSTD) || l->toc_digest ||
	    strlen(l->digest) >= STRATA_DIGEST_MAX || !strchr(l->digest, ':'))
		return -EOPNOTSUPP;
	strata_lazy_name(l, name, sizeof(name));
	r = strata_lazy_lock(st, name, &lazyfd, &lock, err);
	if (r < 0)
		return r;
	dfd = openat(lazyfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		     O_CLOEXEC);
	if (dfd >= 0 && (r = blob_intact(dfd, l->digest)) <= 0) {
		if (r < 0)
			return strata_err_set(err, r, "layer %s: lazy cache: "
					      "checking the blob: %s",
					      l->digest, strerror(-r));
		/* torn by a crash before it reached the disk */
		strata_warn("layer %s: the cached blob does not match its "
			    "digest (a crash before it was written out?): "
			    "reading the layer again", l->digest);
		close(dfd);
		dfd = -1;
		r = strata_rmtree_at(lazyfd, name);
		if (r < 0)
			return strata_err_set(err, r, "layer %s: cache: "
					      "removing %s/layers/lazy/%s: %s",
					      l->digest, st->root, name,
					      strerror(-r));
	}
	if (dfd < 0) {
		/* local (a layout, an archive, the store's blobs), or
		 * missing there: a registry's, read as it downloads */
		strata_blob_relpath(l->digest, rel, sizeof(rel));
		blob = openat(img->blobs_fd, rel, O_RDONLY | O_CLOEXEC |
			      O_NOFOLLOW);
		/* not there, no registry; another size: the full unpack
		 * says what is wrong */
		if (blob < 0 && (errno != ENOENT || !img->source))
			return -EOPNOTSUPP;
		if (blob >= 0 && (fstat(blob, &sb) < 0 ||
				  !S_ISREG(sb.st_mode) ||
				  sb.st_size != l->size))
			return -EOPNOTSUPP;
		snprintf(tmpname, sizeof(tmpname), "lazy-%s", name);
		strata_rmtree_at(st->tmp_fd, tmpname);
		if (mkdirat(st->tmp_fd, tmpname, 0755) < 0 ||
		    (tmp = openat(st->tmp_fd, tmpname, O_RDONLY | O_DIRECTORY |
				  O_CLOEXEC)) < 0)
			return strata_err_set(err, -errno, "cache: %s",
					      strerror(errno));
		r = blob >= 0 ? run_pass(l, blob, false, NULL, NULL, tmp, opts,
					 &pg, err)
			      : stream_pass(img, l, tmp, opts, &pg, err);
		r = strata_lazy_publish(st, r, tmp, tmpname, lazyfd, name,
					err);
		if (r < 0)
			return r;
		dfd = openat(lazyfd, name, O_RDONLY | O_DIRECTORY |
			     O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			return -errno;
	}
	/* recorded by the first fill that read the whole stream */
	r = strata_read_file(dfd, "diff_id", STRATA_DIGEST_MAX, &got, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return strata_err_set(err, -EBADMSG, "layer %s: lazy cache "
				      "entry is corrupt; remove %s/layers/"
				      "lazy/%s", l->digest, st->root, name);
	if (len != strlen(l->diff_id) || memcmp(got, l->diff_id, len))
		return strata_err_set(err, -EBADMSG, "layer %s: diff_id "
				      "mismatch: config says %s, "
				      "uncompressed content hashes to %.*s",
				      l->digest, l->diff_id, (int)len, got);
	return 0;
}

/* ---- reading ---- */

int strata_lzr_check(const struct strata_zran *z,
		     const struct strata_lz_rec *recs, uint32_t n)
{
	struct strata_zran_info info;
	uint64_t prev = 0;
	uint32_t i;

	strata_zran_info(z, &info);
	for (i = 0; i < n; i++) {
		if (recs[i].off < prev || recs[i].end <= recs[i].off ||
		    recs[i].end - recs[i].off != recs[i].size ||
		    recs[i].end > info.usize)
			return -EBADMSG;
		prev = recs[i].end;
	}
	return 0;
}

int strata_lzr_fill(const struct strata_zran *z, int blobfd,
		    const struct strata_lz_rec *r, int fd)
{
	struct strata_zran_src src = { .fd = blobfd };
	size_t cap = r->size < READ_MAX ? (size_t)r->size : READ_MAX;
	cleanup_free unsigned char *buf = malloc(cap);
	uint64_t done = 0;
	int ret;

	if (!buf)
		return -ENOMEM;
	while (done < r->size) {
		size_t len = r->size - done < cap ? (size_t)(r->size - done)
						  : cap;

		ret = strata_zran_read(z, &src, r->off + done, len, buf);
		if (ret == -EINVAL)
			ret = -EBADMSG;
		if (ret == 0)
			ret = strata_write_all(fd, buf, len);
		if (ret < 0)
			return ret;
		done += len;
	}
	return 0;
}

/* The sequential fill: which file the stream is in. */
struct seq {
	const struct strata_lz_rec *recs;
	uint32_t n, i;
	int datafd;
	int fd;			/* the file being written, or -1 */
	bool started;
};

static int seq_finish(struct seq *s)
{
	char name[16], proc[64];
	int r = 0;

	if (s->fd >= 0) {
		snprintf(name, sizeof(name), "%u", s->i + 1);
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", s->fd);
		if (linkat(AT_FDCWD, proc, s->datafd, name, AT_SYMLINK_FOLLOW)
		    < 0 && errno != EEXIST)
			r = -errno;
		close(s->fd);
		s->fd = -1;
	}
	s->started = false;
	s->i++;
	return r;
}

/* @len uncompressed bytes at stream offset @pos */
static int seq_feed(struct seq *s, uint64_t pos, const unsigned char *p,
		    size_t len)
{
	while (len && s->i < s->n) {
		const struct strata_lz_rec *r = &s->recs[s->i];
		size_t k;
		int ret;

		if (pos < r->off) {
			k = r->off - pos < len ? (size_t)(r->off - pos) : len;
			pos += k;
			p += k;
			len -= k;
			continue;
		}
		if (!s->started) {
			char name[16];

			snprintf(name, sizeof(name), "%u", s->i + 1);
			s->started = true;
			if (pos != r->off)
				return -EBADMSG;
			if (faccessat(s->datafd, name, F_OK,
				      AT_SYMLINK_NOFOLLOW) < 0) {
				s->fd = openat(s->datafd, ".", O_TMPFILE |
					       O_WRONLY | O_CLOEXEC, 0644);
				if (s->fd < 0)
					return -errno;
			}
		}
		k = r->end - pos < len ? (size_t)(r->end - pos) : len;
		if (s->fd >= 0 && (ret = strata_write_all(s->fd, p, k)) < 0)
			return ret;
		pos += k;
		p += k;
		len -= k;
		if (pos == r->end && (ret = seq_finish(s)) < 0)
			return ret;
	}
	return 0;
}

int strata_lzr_fill_all(const struct strata_zran *z, int blobfd,
			const struct strata_lz_rec *recs, uint32_t n,
			int datafd, struct strata_hasher *dh,
			const atomic_bool *stop)
{
	struct strata_zran_info info;
	struct seq s = { .recs = recs, .n = n, .datafd = datafd, .fd = -1 };
	cleanup_free unsigned char *in = malloc(IO_SIZE), *out = malloc(IO_SIZE);
	struct strata_dec d;
	uint64_t cpos = 0, upos = 0;
	int ret = 0;

	strata_zran_info(z, &info);
	if (!in || !out ||
	    strata_dec_init(&d, info.kind != STRATA_ZRAN_ZSTD) < 0)
		return -ENOMEM;
	/* with @dh, on to the end of the stream: it is hashed whole */
	while (ret == 0 && cpos < info.csize && (s.i < n || dh)) {
		ssize_t got;
		size_t ipos = 0;
		bool more = true;	/* output may be pending */

		if (stop && atomic_load(stop)) {
			ret = -EINTR;
			break;
		}
		got = pread(blobfd, in, IO_SIZE, (off_t)cpos);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			ret = got < 0 ? -errno : -EBADMSG;
			break;
		}
		cpos += (uint64_t)got;
		while (ret == 0 && (ipos < (size_t)got || more)) {
			size_t produced, before = ipos;

			ret = strata_dec_step(&d, in, (size_t)got, &ipos, out,
					      IO_SIZE, &produced);
			if (ret < 0 || (!produced && ipos == before))
				break;
			more = produced == IO_SIZE;
			if (dh)
				strata_hasher_update(dh, out, produced);
			ret = seq_feed(&s, upos, out, produced);
			upos += produced;
		}
	}
	if (ret == 0 && (s.i < n || (dh && !d.done)))
		ret = -EBADMSG;	/* the stream ended before its files */
	if (s.fd >= 0)
		close(s.fd);
	strata_dec_free(&d);
	return ret;
}
