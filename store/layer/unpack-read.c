/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reader a layer is unpacked through: it counts and hashes the
 * compressed bytes (descriptor size and digest), decompresses them here
 * (gzip through gzdec.c, so the trailer CRC is checked; zstd), hashes the
 * tar (diff_id) and feeds the tar watch (tarscan.c), and libarchive
 * where a layer is unpacked in full.
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

/* ---- the decompressing, hashing reader ---- */


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
		if (r->map_wait) {
			int e = r->map_wait(r->map_wait_ctx,
					    r->compressed + (uint64_t)n);

			if (e < 0) {
				r->error = e;
				snprintf(r->msg, sizeof(r->msg), "%s: %s",
					 r->map_what, strerror(-e));
				return -1;
			}
		}
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
	if (!r->map_hashing && r->blob_h)
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

/* Produce the next chunk of uncompressed bytes (hashed for the diff_id,
 * fed to the tar watch). Return: length, 0 at the end, -1 on error
 * (r->error set). */
ssize_t up_next_chunk(struct reader *r, const void **buf)
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

la_ssize_t up_archive_read_cb(struct archive *a, void *ctx,
			      const void **buf)
{
	struct reader *r = ctx;
	ssize_t n = up_next_chunk(r, buf);

	if (n < 0) {
		archive_set_error(a, EIO, "%s", r->msg);
		return -1;
	}
	return n;
}


/* Read @rd to the end of the blob (what follows the tar's end blocks is
 * hashed and checked like the rest). Return: 0 or negative errno. */
int up_drain(struct reader *rd, const char *sd, struct strata_err *err)
{
	for (;;) {
		const void *b;
		ssize_t n = up_next_chunk(rd, &b);

		if (n == 0)
			return 0;
		if (n < 0)
			return strata_err_set(err, rd->error, "layer %s: %s", sd,
					      rd->msg);
	}
}

/* the hasher's steps through the mapping */
#define HASH_STEP (256u << 10)

/* A blob in memory is hashed on its own thread, beside the decompression
 * (the blob digest costs about a fifth of a lazy layer's pass). */
void *up_hash_map(void *arg)
{
	struct reader *r = arg;
	const unsigned char *m = r->map;
	uint64_t o;
	size_t n;

	/* the store's copy, exactly the blob's size, mapped (and populated
	 * as it is copied) by lazy-zran.c: hashed where it is mapped, the bytes
	 * the inflater reads, with no read() to copy them again (207 MB:
	 * 0.13 s, against 0.15 s with pread into a buffer; an unpopulated
	 * mapping took 0.21 s, its page faults) */
	for (o = 0; o < r->map_len; o += n) {
		n = r->map_len - o < HASH_STEP ? (size_t)(r->map_len - o)
					       : HASH_STEP;
		/* a copy that failed: the digest stays wrong, and the
		 * inflater reports the copy's error */
		if (r->map_wait && r->map_wait(r->map_wait_ctx, o + n) < 0)
			break;
		strata_hasher_update(r->blob_h, m + o, n);
	}
	return NULL;
}

void up_map_hash_join(struct reader *r)
{
	if (r->map_hashing)
		pthread_join(r->map_hasher, NULL);
	r->map_hashing = false;
}

/* What a reader holds: decompressors, the tar watch, hashers, buffers. */
void up_reader_release(struct reader *rd)
{
	up_map_hash_join(rd);
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
	r = up_drain(&rd, sd, err);
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
	up_reader_release(&rd);
	return r;
}
