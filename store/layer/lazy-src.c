/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where a lazy layer's bytes come from (a file, or a registry's HTTP
 * Range requests) and the decompressor its ranges go through: zstd frames
 * or gzip members, piece by piece (lazy.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lazy-int.h"

/* ---- decompressing ---- */

/*
 * A zstd decoder is a few hundred KiB that its first frame also has to
 * fault in: made and freed for every file, it was most of the time a
 * fill of many small files took. Each thread keeps the last one freed
 * (reset), freed in turn when the thread ends.
 */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void spare_free(void *zs)
{
	ZSTD_freeDStream(zs);
}

static void spare_init(void)
{
	if (pthread_key_create(&spare_key, spare_free) != 0)
		spare_key = (pthread_key_t)-1;
}

static ZSTD_DStream *dstream_get(void)
{
	ZSTD_DStream *zs = NULL;

	pthread_once(&spare_once, spare_init);
	if (spare_key != (pthread_key_t)-1 &&
	    (zs = pthread_getspecific(spare_key)) != NULL) {
		pthread_setspecific(spare_key, NULL);
		return zs;
	}
	return ZSTD_createDStream();
}

static void dstream_put(ZSTD_DStream *zs)
{
	if (zs && spare_key != (pthread_key_t)-1 &&
	    !pthread_getspecific(spare_key) &&
	    !ZSTD_isError(ZSTD_DCtx_reset(zs, ZSTD_reset_session_only)) &&
	    pthread_setspecific(spare_key, zs) == 0)
		return;
	ZSTD_freeDStream(zs);
}

int strata_dec_init(struct strata_dec *d, bool gzip)
{
	memset(d, 0, sizeof(*d));
	d->gzip = gzip;
	if (!gzip) {
		d->zs = dstream_get();
		return d->zs ? 0 : -ENOMEM;
	}
	if (inflateInit2(&d->gz, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	d->gz_ready = true;
	return 0;
}

int strata_dec_step(struct strata_dec *d, const void *in, size_t len,
		    size_t *ipos, void *out, size_t cap, size_t *made)
{
	int zr;

	if (d->zs) {
		ZSTD_inBuffer ib = { in, len, *ipos };
		ZSTD_outBuffer ob = { out, cap, 0 };
		size_t r = ZSTD_decompressStream(d->zs, &ob, &ib);

		if (ZSTD_isError(r))
			return -EBADMSG;
		*ipos = ib.pos;
		*made = ob.pos;
		d->done = r == 0;
		return 0;
	}
	if (d->gz_end && *ipos < len) {	/* the next member */
		inflateReset(&d->gz);
		d->gz_end = false;
	}
	d->gz.next_in = (unsigned char *)in + *ipos;
	d->gz.avail_in = (uInt)(len - *ipos);
	d->gz.next_out = out;
	d->gz.avail_out = (uInt)cap;
	zr = d->gz_end ? Z_STREAM_END : inflate(&d->gz, Z_NO_FLUSH);
	if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
		return -EBADMSG;
	*ipos = len - d->gz.avail_in;	/* no progress: needs input */
	*made = cap - d->gz.avail_out;
	d->gz_end = zr == Z_STREAM_END;
	d->done = d->gz_end;
	return 0;
}

void strata_dec_free(struct strata_dec *d)
{
	dstream_put(d->zs);
	d->zs = NULL;
	if (d->gz_ready)
		inflateEnd(&d->gz);
	d->gz_ready = false;
}

/* ---- range sources ---- */

struct fd_src {
	struct strata_range_src s;
	int fd;
};

static int fd_read(struct strata_range_src *s, void *buf, size_t len,
		   uint64_t off)
{
	struct fd_src *f = (struct fd_src *)s;
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(f->fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EBADMSG;	/* the blob is shorter */
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static void fd_free(struct strata_range_src *s)
{
	struct fd_src *f = (struct fd_src *)s;

	close(f->fd);
	free(f);
}

int strata_range_src_fd(int fd, struct strata_range_src **out)
{
	struct fd_src *f = calloc(1, sizeof(*f));

	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	f->s.read = fd_read;
	f->s.free = fd_free;
	f->fd = fd;
	*out = &f->s;
	return 0;
}

/* A registry's blob, read with Range requests through the image's blob
 * source (borrowed: the image outlives its layers' indexes). */
struct reg_src {
	struct strata_range_src s;
	struct strata_blob_source *bs;
	char digest[STRATA_DIGEST_MAX];
};

static int reg_read(struct strata_range_src *s, void *buf, size_t len,
		    uint64_t off)
{
	struct reg_src *r = (struct reg_src *)s;
	struct strata_err err = { 0 };
	int ret = r->bs->read_range(r->bs, r->digest, buf, len, off, &err);

	if (ret < 0)
		strata_warn("%s", err.code ? err.msg : strerror(-ret));
	return ret;
}

static void reg_free(struct strata_range_src *s)
{
	free(s);
}

int strata_range_src_reg(struct strata_blob_source *bs, const char *digest,
			 struct strata_range_src **out)
{
	struct reg_src *r;

	if (!bs->read_range)
		return -EOPNOTSUPP;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->s.read = reg_read;
	r->s.free = reg_free;
	r->s.remote = true;
	r->bs = bs;
	snprintf(r->digest, sizeof(r->digest), "%s", digest);
	*out = &r->s;
	return 0;
}
