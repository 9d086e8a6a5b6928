/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A layer blob being written. The uncompressed stream is hashed as it
 * arrives (diff_id), cut into 1 MiB chunks and compressed; the compressed
 * bytes are hashed (digest) and written to a temporary file in the layout
 * directory, renamed into blobs/sha256/ at the end (image-layout.md: blob
 * content must match its name, so it only gets the name once complete).
 *
 * gzip uses both cores the way pigz does: each chunk is raw deflate of its
 * own, ended with a sync flush (byte-aligned, not final), the last one with
 * Z_FINISH, all inside one gzip member whose CRC is combined from the
 * chunks' CRCs. Chunking does not depend on the number of threads, so the
 * output is the same bytes on any machine with the same zlib.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "commit.h"

#define CHUNK (1u << 20)
#define NSLOT 8
#define MAXTHREADS 4

enum { SLOT_FREE, SLOT_QUEUED, SLOT_BUSY, SLOT_DONE };

struct slot {
	unsigned char *in;
	size_t in_len;
	unsigned char *out;
	size_t out_cap, out_len;
	uLong crc;
	bool last;
	int state;
	int ret;
};

struct strata_blobw {
	int dir_fd;
	int fd;
	char tmp[64];
	bool finished;
	bool nosync;
	bool nohash;		/* strata_blobw_set_nohash() */
	bool borrowed;		/* fd is the caller's (strata_blobw_new_fd) */
	int comp;
	struct strata_hasher *h_raw, *h_comp;
	uint64_t raw_bytes;
	int64_t comp_bytes;
	/* gzip */
	struct slot slots[NSLOT];
	unsigned cur;		/* slot being filled */
	unsigned drain;		/* next slot to write out */
	uLong crc;
	uint64_t isize;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t threads[MAXTHREADS];
	int n_threads, want_threads;
	bool stop;
	z_stream zs;		/* inline compression (no threads) */
	bool zs_init;
	/* zstd and none */
	ZSTD_CCtx *zc;
	unsigned char *buf;
	size_t buf_len;
	unsigned char *zout;
	size_t zout_cap;
	/* zstd:chunked, eStargz: zchunked.c compresses, out_write() writes */
	struct strata_zck *zck;
};

static int out_write(struct strata_blobw *w, const void *buf, size_t n)
{
	if (!n)
		return 0;
	/* uncompressed: the blob is the tar, one hash serves both */
	if (w->comp != STRATA_COMP_NONE)
		strata_hasher_update(w->h_comp, buf, n);
	w->comp_bytes += (int64_t)n;
	return strata_write_all(w->fd, buf, n);
}

static int deflate_chunk(z_stream *zs, struct slot *s)
{
	int zr;

	if (deflateReset(zs) != Z_OK)
		return -ENOMEM;
	zs->next_in = s->in;
	zs->avail_in = (uInt)s->in_len;
	zs->next_out = s->out;
	zs->avail_out = (uInt)s->out_cap;
	zr = deflate(zs, s->last ? Z_FINISH : Z_SYNC_FLUSH);
	if (zr != Z_OK && zr != Z_STREAM_END)
		return -EIO;
	if (zs->avail_in || (s->last && zr != Z_STREAM_END))
		return -EIO;	/* out_cap is deflateBound + slack: cannot be */
	s->out_len = s->out_cap - zs->avail_out;
	s->crc = crc32(0, s->in, (uInt)s->in_len);
	return 0;
}

static int zs_init(z_stream *zs)
{
	memset(zs, 0, sizeof(*zs));
	return deflateInit2(zs, STRATA_GZIP_LEVEL, Z_DEFLATED, -15, 8,
			    Z_DEFAULT_STRATEGY) == Z_OK ? 0 : -ENOMEM;
}

static void *gz_worker(void *arg)
{
	struct strata_blobw *w = arg;
	z_stream zs;
	bool ok = zs_init(&zs) == 0;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct slot *s = NULL;
		unsigned i;

		for (i = 0; i < NSLOT; i++) {
			/* oldest queued first: the writer waits for it */
			unsigned k = (w->drain + i) % NSLOT;

			if (w->slots[k].state == SLOT_QUEUED) {
				s = &w->slots[k];
				break;
			}
		}
		if (!s) {
			if (w->stop)
				break;
			pthread_cond_wait(&w->cond, &w->lock);
			continue;
		}
		s->state = SLOT_BUSY;
		pthread_mutex_unlock(&w->lock);
		s->ret = ok ? deflate_chunk(&zs, s) : -ENOMEM;
		pthread_mutex_lock(&w->lock);
		s->state = SLOT_DONE;
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	if (ok)
		deflateEnd(&zs);
	return NULL;
}

static int slot_alloc(struct slot *s)
{
	if (s->in)
		return 0;
	s->in = malloc(CHUNK);
	/* more than deflate's worst case (stored blocks) plus flush marker */
	s->out_cap = CHUNK + (CHUNK >> 3) + 1024;
	s->out = malloc(s->out_cap);
	return s->in && s->out ? 0 : -ENOMEM;
}

/* Write out slot @k once done (waiting for it), then free it. */
static int gz_drain_one(struct strata_blobw *w, unsigned k)
{
	struct slot *s = &w->slots[k];
	int r;

	if (s->state == SLOT_FREE)
		return 0;
	if (w->n_threads) {
		pthread_mutex_lock(&w->lock);
		while (s->state != SLOT_DONE)
			pthread_cond_wait(&w->cond, &w->lock);
		pthread_mutex_unlock(&w->lock);
	}
	if (s->ret < 0)
		return s->ret;
	r = out_write(w, s->out, s->out_len);
	if (r < 0)
		return r;
	w->crc = crc32_combine(w->crc, s->crc, (z_off_t)s->in_len);
	w->isize += s->in_len;
	s->state = SLOT_FREE;
	s->in_len = 0;
	w->drain = (k + 1) % NSLOT;
	return 0;
}

static void gz_start_threads(struct strata_blobw *w)
{
	while (w->n_threads < w->want_threads) {
		if (pthread_create(&w->threads[w->n_threads], NULL, gz_worker,
				   w) != 0)
			break;
		w->n_threads++;
	}
}

/* Hand the current slot over for compression and move to the next one. */
static int gz_submit(struct strata_blobw *w, bool last)
{
	struct slot *s = &w->slots[w->cur];
	int r;

	s->last = last;
	if (w->want_threads > 1 && !last)
		gz_start_threads(w);
	if (!w->n_threads) {
		if (!w->zs_init) {
			r = zs_init(&w->zs);
			if (r < 0)
				return r;
			w->zs_init = true;
		}
		s->ret = deflate_chunk(&w->zs, s);
		s->state = SLOT_DONE;
		w->cur = (w->cur + 1) % NSLOT;
		return gz_drain_one(w, (w->cur + NSLOT - 1) % NSLOT);
	}
	pthread_mutex_lock(&w->lock);
	s->state = SLOT_QUEUED;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	w->cur = (w->cur + 1) % NSLOT;
	/* the next slot to fill must be written out first */
	if (w->slots[w->cur].state != SLOT_FREE) {
		r = gz_drain_one(w, w->cur);
		if (r < 0)
			return r;
	}
	return 0;
}

static int gz_write(struct strata_blobw *w, const unsigned char *p, size_t n)
{
	while (n > 0) {
		struct slot *s = &w->slots[w->cur];
		size_t take;
		int r;

		r = slot_alloc(s);
		if (r < 0)
			return r;
		take = CHUNK - s->in_len;
		if (take > n)
			take = n;
		memcpy(s->in + s->in_len, p, take);
		s->in_len += take;
		p += take;
		n -= take;
		if (s->in_len == CHUNK) {
			r = gz_submit(w, false);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int gz_finish(struct strata_blobw *w)
{
	unsigned char trailer[8];
	unsigned i;
	int r;

	r = slot_alloc(&w->slots[w->cur]);
	if (r == 0)
		r = gz_submit(w, true);
	for (i = 0; r == 0 && i < NSLOT; i++)
		r = gz_drain_one(w, w->drain);
	if (r < 0)
		return r;
	for (i = 0; i < 4; i++) {
		trailer[i] = (unsigned char)(w->crc >> (8 * i));
		trailer[4 + i] = (unsigned char)(w->isize >> (8 * i));
	}
	return out_write(w, trailer, 8);
}

static int zstd_feed(struct strata_blobw *w, const void *p, size_t n,
		     ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = { p, n, 0 };

	for (;;) {
		ZSTD_outBuffer out = { w->zout, w->zout_cap, 0 };
		size_t left = ZSTD_compressStream2(w->zc, &out, &in, mode);
		int r;

		if (ZSTD_isError(left))
			return -EIO;
		r = out_write(w, w->zout, out.pos);
		if (r < 0)
			return r;
		if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size)
			return 0;
	}
}

static int flush_buf(struct strata_blobw *w, bool end)
{
	int r = 0;

	if (w->comp == STRATA_COMP_ZSTD)
		r = zstd_feed(w, w->buf, w->buf_len,
			      end ? ZSTD_e_end : ZSTD_e_continue);
	else
		r = out_write(w, w->buf, w->buf_len);
	w->buf_len = 0;
	return r;
}

int strata_blobw_write(struct strata_blobw *w, const void *buf, size_t n)
{
	const unsigned char *p = buf;

	if (!w->nohash)
		strata_hasher_update(w->h_raw, buf, n);
	w->raw_bytes += n;
	if (w->zck)
		return strata_zck_data(w->zck, w, buf, n);
	if (w->comp == STRATA_COMP_GZIP)
		return gz_write(w, p, n);
	while (n > 0) {
		size_t take = CHUNK - w->buf_len;

		if (take > n)
			take = n;
		memcpy(w->buf + w->buf_len, p, take);
		w->buf_len += take;
		p += take;
		n -= take;
		if (w->buf_len == CHUNK) {
			int r = flush_buf(w, false);

			if (r < 0)
				return r;
		}
	}
	return 0;
}

uint64_t strata_blobw_bytes(const struct strata_blobw *w)
{
	return w->raw_bytes;
}

int strata_blobw_out(struct strata_blobw *w, const void *buf, size_t n)
{
	return out_write(w, buf, n);
}

int strata_blobw_entry(struct strata_blobw *w, const struct strata_tar_hdr *h,
		       const char *name)
{
	return w->zck ? strata_zck_entry(w->zck, w, h, name) : 0;
}

int strata_blobw_toc(const struct strata_blobw *w,
		     const char *key[STRATA_TOC_ANNOTATIONS],
		     const char *val[STRATA_TOC_ANNOTATIONS])
{
	return w->zck ? strata_zck_toc(w->zck, key, val) : -ENOENT;
}

int strata_blobw_toc_entry(struct strata_blobw *w, const char **text,
			   size_t *len)
{
	*text = NULL;
	*len = 0;
	return w->zck ? strata_zck_toc_entry(w->zck, w, text, len) : 0;
}

int strata_blobw_new(int dir_fd, int compression, int threads,
		     struct strata_blobw **out)
{
	static atomic_uint counter;
	static const unsigned char gz_header[10] = {
		0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3
	};
	struct strata_blobw *w;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int r;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->dir_fd = dir_fd;
	w->comp = compression;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->want_threads = threads > 0 ? threads : ncpu > 0 ? (int)ncpu : 1;
	if (w->want_threads > MAXTHREADS)
		w->want_threads = MAXTHREADS;
	*out = w;
	if ((r = strata_hasher_new_alg("sha256", &w->h_raw)) < 0 ||
	    (r = strata_hasher_new_alg("sha256", &w->h_comp)) < 0)
		return r;
	snprintf(w->tmp, sizeof(w->tmp), ".strata-tmp-%d-%u", (int)getpid(),
		 atomic_fetch_add(&counter, 1));
	w->fd = openat(dir_fd, w->tmp, O_WRONLY | O_CREAT | O_TRUNC |
		       O_CLOEXEC | O_NOFOLLOW, 0644);
	if (w->fd < 0)
		return -errno;
	if (compression == STRATA_COMP_GZIP) {
		w->crc = crc32(0, NULL, 0);
		return out_write(w, gz_header, sizeof(gz_header));
	}
	if (compression == STRATA_COMP_ZSTD_CHUNKED ||
	    compression == STRATA_COMP_ESTARGZ)
		return strata_zck_new(&w->zck,
				      compression == STRATA_COMP_ESTARGZ);
	w->buf = malloc(CHUNK);
	if (!w->buf)
		return -ENOMEM;
	if (compression == STRATA_COMP_ZSTD) {
		w->zout_cap = ZSTD_CStreamOutSize();
		w->zout = malloc(w->zout_cap);
		w->zc = ZSTD_createCCtx();
		if (!w->zout || !w->zc)
			return -ENOMEM;
		ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel,
				       STRATA_ZSTD_LEVEL);
		ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 1);
	} else if (compression != STRATA_COMP_NONE) {
		return -EOPNOTSUPP;
	}
	return 0;
}

int strata_blobw_new_fd(int fd, struct strata_blobw **out)
{
	struct strata_blobw *w;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->dir_fd = -1;
	w->borrowed = true;
	w->nohash = true;
	w->nosync = true;
	w->comp = STRATA_COMP_NONE;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	*out = w;
	w->buf = malloc(CHUNK);
	return w->buf ? 0 : -ENOMEM;
}

void strata_blobw_set_nohash(struct strata_blobw *w)
{
	w->nohash = true;
}

static int finish_stream(struct strata_blobw *w)
{
	int r = w->zck ? strata_zck_finish(w->zck, w)
		: w->comp == STRATA_COMP_GZIP ? gz_finish(w)
		: flush_buf(w, true);

	if (r == 0 && !w->nosync && fsync(w->fd) < 0)
		r = -errno;
	return r;
}

int strata_blobw_flush(struct strata_blobw *w)
{
	int r = finish_stream(w);

	if (r == 0)
		w->finished = true;
	return r;
}

void strata_blobw_set_nosync(struct strata_blobw *w)
{
	w->nosync = true;
}

int strata_blobw_finish(struct strata_blobw *w, char *digest, char *diff_id,
			int64_t *size)
{
	char rel[STRATA_DIGEST_MAX + 16];
	int bfd, r;

	r = finish_stream(w);
	if (r < 0)
		return r;
	strata_hasher_final(w->h_raw, diff_id);
	if (w->comp == STRATA_COMP_NONE)
		strcpy(digest, diff_id);
	else
		strata_hasher_final(w->h_comp, digest);
	*size = w->comp_bytes;
	/* into blobs/sha256 itself, never where a symlink there leads */
	bfd = strata_open_beneath(w->dir_fd, "blobs/sha256");
	if (bfd < 0)
		return bfd;
	snprintf(rel, sizeof(rel), "%s", digest + strlen("sha256:"));
	if (renameat(w->dir_fd, w->tmp, bfd, rel) < 0) {
		r = -errno;
		close(bfd);
		return r;
	}
	w->finished = true;
	if (!w->nosync)
		fsync(bfd);
	close(bfd);
	return 0;
}

int strata_blobw_finish_as(struct strata_blobw *w, const char *name)
{
	int r = finish_stream(w);

	if (r < 0)
		return r;
	if (renameat(w->dir_fd, w->tmp, w->dir_fd, name) < 0)
		return -errno;
	w->finished = true;
	if (!w->nosync)
		fsync(w->dir_fd);
	return 0;
}

void strata_blobw_free(struct strata_blobw *w)
{
	unsigned i;
	int t;

	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	for (t = 0; t < w->n_threads; t++)
		pthread_join(w->threads[t], NULL);
	for (i = 0; i < NSLOT; i++) {
		free(w->slots[i].in);
		free(w->slots[i].out);
	}
	if (w->zs_init)
		deflateEnd(&w->zs);
	if (w->fd >= 0 && !w->borrowed)
		close(w->fd);
	if (!w->finished && w->fd >= 0 && !w->borrowed)
		unlinkat(w->dir_fd, w->tmp, 0);
	if (w->h_raw)
		strata_hasher_free(w->h_raw);
	if (w->h_comp)
		strata_hasher_free(w->h_comp);
	ZSTD_freeCCtx(w->zc);
	strata_zck_free(w->zck);
	free(w->buf);
	free(w->zout);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}
