/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The layer cache: layers/<alg>/<hex> per diff_id, each holding "index" and
 * data/. A layer is unpacked under tmp/unpack-<alg>-<hex> while holding the
 * lock layers/<alg>/<hex>.lock, synced, then renamed into place; a killed
 * unpack leaves only the temporary directory, which the next unpacker of
 * that layer removes (it holds the same lock, so nobody else is using it).
 * Missing layers of one image are unpacked in parallel.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lazy.h"
#include "unpack.h"

struct pool;

struct job {
	struct strata_store *st;
	struct strata_image *img;
	size_t layer;
	const struct strata_unpack_opts *opts;
	struct strata_err err;
	int ret;
	struct pool *pool;
	_Atomic uint64_t done;	/* bytes of this layer so far */
	atomic_bool active;	/* being fetched or unpacked now */
	bool toc_lazy;		/* try a lazy layer from its TOC first */
	bool plain_lazy;	/* then the lazy gzip/zstd pass */
	bool lazy_done;		/* one of those made it lazy */
};

struct pool {
	struct job *jobs;
	size_t n;
	atomic_size_t next;
	_Atomic uint64_t done;
	atomic_size_t layers_done;
	uint64_t total;
	bool pulling;		/* from a registry */
	struct timespec start;
};

/* "pulling layers 1/3 [3f2a9c0e1b7d 45% 9e01c4d2aa10 12%], 12.5 MiB/s"
 * and the total bytes, on a terminal: each layer in flight (at most
 * four shown) by the first hex digits of its digest */
static void progress_cb(void *ctx, uint64_t bytes)
{
	struct job *j = ctx;
	struct pool *p = j->pool;
	uint64_t d = atomic_fetch_add(&p->done, bytes) + bytes;
	struct timespec now;
	double secs;
	char what[256], each[160];
	size_t i, len = 0, shown = 0;

	atomic_fetch_add(&j->done, bytes);
	if (strata_log_quiet())
		return;
	each[0] = '\0';
	for (i = 0; i < p->n && shown < 4; i++) {
		const struct strata_layer *l;
		const char *hex;
		uint64_t ld;
		int w;

		if (!atomic_load(&p->jobs[i].active))
			continue;
		l = &p->jobs[i].img->layers[p->jobs[i].layer];
		hex = strchr(l->digest, ':');
		hex = hex ? hex + 1 : l->digest;
		ld = atomic_load(&p->jobs[i].done);
		w = snprintf(each + len, sizeof(each) - len, "%s%.12s %u%%",
			     shown ? " " : " [", hex,
			     l->size > 0 ? (unsigned)(ld * 100 /
						      (uint64_t)l->size) : 0u);
		if (w < 0 || (size_t)w >= sizeof(each) - len - 1)
			break;
		len += (size_t)w;
		shown++;
	}
	if (shown)
		strcat(each, "]");
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - p->start.tv_sec) +
	       (double)(now.tv_nsec - p->start.tv_nsec) / 1e9;
	snprintf(what, sizeof(what), "%s layers %zu/%zu%s, %.1f MiB/s",
		 p->pulling ? "pulling" : "unpacking",
		 atomic_load(&p->layers_done), p->n, each,
		 secs > 0.05 ? (double)d / (1 << 20) / secs : 0.0);
	strata_progress(what, d, p->total);
}

/* Is the layer unpacked, with an index of this version? (An index from
 * an older strata is unpacked again.) */
static bool cached(struct strata_store *st, const char *rel)
{
	char path[STRATA_DIGEST_MAX + 32], magic[8];
	cleanup_fd int fd = -1;

	snprintf(path, sizeof(path), "%s/index", rel);
	fd = openat(st->layers_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	return fd >= 0 && read(fd, magic, 8) == 8 &&
	       !memcmp(magic, STRATA_LX_MAGIC, 8);
}

/*
 * A cached layer lists the blobs it was verified from (verified/ALG-HEX).
 * Another blob claiming the same diff_id (other compression, or a broken
 * one) is verified in full before an image using it is accepted: the
 * cache must not vouch for a blob it never read.
 */
static void marker_name(const char *digest, int compression, char *out,
			size_t len)
{
	/* the same bytes read as another compression are another claim */
	snprintf(out, len, "verified/%s.%d", digest, compression);
	for (char *c = out + 9; *c; c++)
		if (*c == ':')
			*c = '-';
}

static bool verified(struct strata_store *st, const char *rel,
		     const char *blob_digest, int compression)
{
	char path[2 * STRATA_DIGEST_MAX + 32], m[STRATA_DIGEST_MAX + 16];

	marker_name(blob_digest, compression, m, sizeof(m));
	snprintf(path, sizeof(path), "%s/%s", rel, m);
	return faccessat(st->layers_fd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

static int add_marker(int dirfd, const char *blob_digest, int compression)
{
	char m[STRATA_DIGEST_MAX + 16];
	int fd;

	marker_name(blob_digest, compression, m, sizeof(m));
	if (mkdirat(dirfd, "verified", 0755) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(dirfd, m, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
		    0644);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

static bool usable(struct strata_store *st, const struct strata_layer *l,
		   const char *rel)
{
	return cached(st, rel) && verified(st, rel, l->digest, l->compression);
}

/* Is the blob of @l missing from the store, for a source to fetch? */
static bool blob_missing(struct strata_image *img, const struct strata_layer *l)
{
	char rel[STRATA_DIGEST_MAX + 8];

	if (!img->source)
		return false;
	strata_blob_relpath(l->digest, rel, sizeof(rel));
	return faccessat(img->blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) < 0;
}

static int unpack_one(struct job *j)
{
	struct strata_store *st = j->st;
	const struct strata_layer *l = &j->img->layers[j->layer];
	char rel[STRATA_DIGEST_MAX + 8], lockname[STRATA_DIGEST_MAX + 16];
	char tmpname[STRATA_DIGEST_MAX + 16], blobrel[STRATA_DIGEST_MAX + 8];
	char sd[32];
	cleanup_fd int lock = -1, blob = -1, dest = -1;
	struct strata_blob_source *src = j->img->source;
	struct strata_unpack_job uj;
	struct strata_err uerr = { 0 };
	void *handle = NULL;
	int r;

	bool have;

	strata_blob_relpath(l->diff_id, rel, sizeof(rel));
	if (usable(st, l, rel))
		return blob_missing(j->img, l) ? src->fetch(src, l, &j->err) : 0;
	snprintf(lockname, sizeof(lockname), "%s.lock", rel);
	lock = strata_lock_at(st->layers_fd, lockname, true);
	if (lock < 0)
		return strata_err_set(&j->err, lock, "layer cache lock: %s",
				      strerror(-lock));
	if (usable(st, l, rel))	/* another process unpacked it meanwhile */
		return blob_missing(j->img, l) ? src->fetch(src, l, &j->err) : 0;
	have = cached(st, rel);	/* then this run only verifies the blob */
	strata_short_digest(l->digest, sd, sizeof(sd));
	strata_blob_relpath(l->digest, blobrel, sizeof(blobrel));
	blob = openat(j->img->blobs_fd, blobrel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (blob < 0 && errno == ENOENT && src) {
		/* streamed: downloaded, stored and unpacked in one pass */
		blob = src->open(src, l, &handle, &j->err);
		if (blob < 0)
			return blob;
	}
	if (blob < 0)
		return strata_err_set(&j->err, -errno, "layer %s: blob %s",
				      l->digest, errno == ENOENT
				      ? "missing from the layout"
				      : strerror(errno));
	snprintf(tmpname, sizeof(tmpname), "unpack-%s", rel);
	for (char *c = tmpname; *c; c++)
		if (*c == '/')
			*c = '-';
	strata_rmtree_at(st->tmp_fd, tmpname);
	if (mkdirat(st->tmp_fd, tmpname, 0755) < 0)
		return strata_err_set(&j->err, -errno, "cache: %s",
				      strerror(errno));
	dest = openat(st->tmp_fd, tmpname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest < 0 || mkdirat(dest, "data", 0755) < 0)
		return strata_err_set(&j->err, -errno, "cache: %s",
				      strerror(errno));
	memset(&uj, 0, sizeof(uj));
	uj.blob_fd = blob;
	uj.digest = l->digest;
	uj.size = l->size;
	uj.diff_id = l->diff_id;
	uj.compression = l->compression;
	uj.dest_fd = dest;
	uj.max_bytes = j->opts && j->opts->max_layer_bytes
			       ? j->opts->max_layer_bytes : 64ull << 30;
	uj.max_entries = j->opts && j->opts->max_entries
				 ? j->opts->max_entries : 16u << 20;
	uj.progress = progress_cb;
	uj.progress_ctx = j;
	r = strata_unpack_layer(&uj, handle ? &uerr : &j->err);
	if (handle) {
		int fr;

		close(blob);	/* a fetch still sending stops */
		blob = -1;
		fr = src->finish(src, handle, r, &j->err);
		if (fr < 0)
			r = fr;	/* the download's failure explains the rest */
		else if (r < 0)
			strata_err_set(&j->err, r, "%s", uerr.msg);
	}
	if (r == 0 && have) {
		cleanup_fd int lfd = openat(st->layers_fd, rel, O_RDONLY |
					    O_DIRECTORY | O_CLOEXEC);

		r = lfd < 0 ? -errno : add_marker(lfd, l->digest, l->compression);
		strata_rmtree_at(st->tmp_fd, tmpname);
		if (r < 0)
			return strata_err_set(&j->err, r, "cache: %s",
					      strerror(-r));
		return 0;
	}
	if (r == 0)
		r = add_marker(dest, l->digest, l->compression);
	if (r == 0 && syncfs(dest) < 0)
		r = -errno;
	/* an outdated unpack of the same layer makes room (we hold its lock;
	 * a mount still using it keeps its open files) */
	if (r == 0 && faccessat(st->layers_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		strata_rmtree_at(st->layers_fd, rel);
	if (r == 0 && renameat(st->tmp_fd, tmpname, st->layers_fd, rel) < 0)
		r = strata_err_set(&j->err, -errno, "cache: publishing layer "
				   "%s: %s", sd, strerror(errno));
	if (r < 0) {
		strata_rmtree_at(st->tmp_fd, tmpname);
		return r;
	}
	fsync(st->layers_fd);
	return 0;
}

/* Largest blob first: the pool's wall time is then close to the largest
 * layer's, not that plus whatever small layers queued before it. */
static int by_size_desc(const void *a, const void *b)
{
	const struct job *x = a, *y = b;
	int64_t sx = x->img->layers[x->layer].size;
	int64_t sy = y->img->layers[y->layer].size;

	return sx < sy ? 1 : sx > sy ? -1 : x->layer < y->layer ? -1
	       : x->layer > y->layer;
}

static int by_layer(const void *a, const void *b)
{
	const struct job *x = a, *y = b;

	return x->layer < y->layer ? -1 : x->layer > y->layer;
}

/*
 * malloc while layers are read. glibc returns a freed block of 128 KiB or
 * more to the kernel (and trims the heap above 128 KiB), so every buffer
 * of every layer, the index arrays as they grow and each cache file
 * written or loaded faulted its pages in again: some 20,000 faults for
 * the bench image's lazy pass, each costly in a virtual machine (0.1 s
 * of CPU there). In between, blocks up to 32 MiB come from the heap and
 * freed memory stays for the next layer (15,000 faults; the time to a
 * live mount 4% shorter); after, the memory goes back to the kernel and
 * a long-running mount keeps modest thresholds. Nested calls count.
 */
void strata_malloc_bulk(bool on)
{
	static atomic_int depth;

	if (on ? atomic_fetch_add(&depth, 1) != 0
	       : atomic_fetch_sub(&depth, 1) != 1)
		return;
	mallopt(M_MMAP_THRESHOLD, on ? 32 << 20 : 1 << 20);
	mallopt(M_TRIM_THRESHOLD, on ? 1 << 30 : 4 << 20);
	mallopt(M_TOP_PAD, on ? 16 << 20 : 128 << 10);
	if (!on)
		malloc_trim(0);
}

static void *worker(void *arg)
{
	struct pool *p = arg;
	struct job *j;

	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);

		if (i >= p->n)
			break;
		j = &p->jobs[i];
		atomic_store(&j->active, true);
		j->ret = -EOPNOTSUPP;
		if (j->toc_lazy)	/* store/layer/lazy.c: reads only the TOC */
			j->ret = strata_lazy_prepare(j->st, j->img, j->layer,
						     j->opts, &j->err);
		if (j->ret == -EOPNOTSUPP && j->plain_lazy) /* lazy-zran.c */
			j->ret = strata_lazy_zran_prepare(j->st, j->img,
							  j->layer, j->opts,
							  progress_cb, j,
							  &j->err);
		j->lazy_done = j->ret == 0 && (j->toc_lazy || j->plain_lazy);
		if (j->ret == -EOPNOTSUPP) {	/* unpacked in full */
			memset(&j->err, 0, sizeof(j->err));
			j->ret = unpack_one(j);
		}
		atomic_store(&j->active, false);
		atomic_fetch_add(&p->layers_done, 1);
	}
	return NULL;
}

int strata_cache_ensure(struct strata_store *st, struct strata_image *img,
			const struct strata_unpack_opts *opts,
			struct strata_err *err)
{
	struct pool p = { 0 };
	pthread_t threads[16];
	size_t i, k, nthreads;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int r;

	r = strata_store_hold(st, err);
	if (r < 0)
		return r;
	p.jobs = calloc(img->n_layers ? img->n_layers : 1, sizeof(*p.jobs));
	if (!p.jobs)
		return -ENOMEM;
	for (i = 0; i < img->n_layers; i++) {
		char rel[STRATA_DIGEST_MAX + 8];
		bool dup = false;

		strata_blob_relpath(img->layers[i].diff_id, rel, sizeof(rel));
		for (k = 0; k < p.n; k++)
			if (!strcmp(img->layers[p.jobs[k].layer].diff_id,
				    img->layers[i].diff_id) &&
			    !strcmp(img->layers[p.jobs[k].layer].digest,
				    img->layers[i].digest))
				dup = true;
		if (dup || (usable(st, &img->layers[i], rel) &&
			    !blob_missing(img, &img->layers[i])))
			continue;
		p.jobs[p.n].st = st;
		p.jobs[p.n].img = img;
		p.jobs[p.n].layer = i;
		p.jobs[p.n].opts = opts;
		p.jobs[p.n].pool = &p;
		/* a layer with a TOC (zstd:chunked) is lazy once its TOC is
		 * read; gzip, zstd: a metadata pass in place of the unpack.
		 * Each in parallel, as unpacks are: the mount waits for the
		 * slowest layer, not for their sum */
		p.jobs[p.n].toc_lazy = opts && opts->lazy &&
				       !usable(st, &img->layers[i], rel);
		p.jobs[p.n].plain_lazy = p.jobs[p.n].toc_lazy &&
					 opts->lazy_plain;
		p.total += (uint64_t)img->layers[i].size;
		p.n++;
	}
	qsort(p.jobs, p.n, sizeof(*p.jobs), by_size_desc);
	p.pulling = img->source != NULL;
	clock_gettime(CLOCK_MONOTONIC, &p.start);
	nthreads = (size_t)(opts && opts->jobs > 0 ? opts->jobs
				: ncpu > 0 ? ncpu : 1);
	if (nthreads > ARRAY_SIZE(threads))
		nthreads = ARRAY_SIZE(threads);
	/* a registry: a few connections at a time, however many CPUs */
	if (img->source && !(opts && opts->jobs > 0) && nthreads < 3)
		nthreads = 3;
	if (img->source && !(opts && opts->jobs > 0) && nthreads > 4)
		nthreads = 4;
	if (nthreads > p.n)
		nthreads = p.n;
	if (p.n)
		strata_malloc_bulk(true);
	for (i = 0; i < nthreads; i++)
		if (pthread_create(&threads[i], NULL, worker, &p) != 0)
			break;
	if (i == 0 && p.n > 0)
		worker(&p);
	nthreads = i;
	for (i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	if (p.n)
		strata_malloc_bulk(false);
	strata_progress_done();
	/* back in image order: the error told is the lowest layer's */
	qsort(p.jobs, p.n, sizeof(*p.jobs), by_layer);
	for (i = 0; i < p.n; i++) {
		for (k = 0; p.jobs[i].lazy_done && k < img->n_layers; k++) {
			const struct strata_layer *l =
				&img->layers[p.jobs[i].layer];

			/* and any repeat of it in the image */
			if (!strcmp(img->layers[k].digest, l->digest) &&
			    !strcmp(img->layers[k].diff_id, l->diff_id))
				img->layers[k].lazy = true;
		}
		if (p.jobs[i].ret < 0) {
			r = p.jobs[i].ret;
			if (p.jobs[i].err.code)
				strata_err_set(err, r, "image %s: %s",
					       img->ref_text, p.jobs[i].err.msg);
			else
				strata_err_set(err, r, "image %s: layer %zu: %s",
					       img->ref_text, p.jobs[i].layer,
					       strerror(-r));
			break;
		}
	}
	free(p.jobs);
	return r;
}
