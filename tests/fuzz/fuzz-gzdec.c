/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gzip decoder of the unpack pass (store/layer/gzdec.c: ISA-L's inflate,
 * with access points where it stops inside a block header, checked with
 * zlib), against zlib's own inflate of the same bytes: the input is a gzip
 * stream (one or more members), fed to the decoder in slices whose size
 * the first byte picks, with access points recorded every 1 KiB.
 *
 * Differential: the decoder accepts the whole stream exactly when zlib
 * does (multi-member, nothing after the last member but another member),
 * and then gives zlib's bytes. Then every recorded point is used: reads
 * through the finished index at and around each point must give zlib's
 * bytes too.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz.h"
#include "store-internal.h"
#include "zran.h"

#define OUT_MAX (1u << 20)	/* bounded work per input */

/* zlib's answer: 1 and the output if the stream is whole gzip members,
 * 0 if not (or it makes more than OUT_MAX bytes: -1) */
static int zlib_inflate(const uint8_t *in, size_t len, uint8_t *out,
			size_t *out_len)
{
	z_stream z;
	size_t pos = 0, made = 0;
	int ret = 0;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return -1;
	while (pos < len) {
		int zr;

		if (in[pos] != 0x1f)
			break;	/* after a member: only another one */
		z.next_in = (uint8_t *)in + pos;
		z.avail_in = (uInt)(len - pos);
		z.next_out = out + made;
		z.avail_out = (uInt)(OUT_MAX - made);
		zr = inflate(&z, Z_FINISH);
		made = OUT_MAX - z.avail_out;
		pos = len - z.avail_in;
		if (zr == Z_STREAM_END) {
			ret = 1;
			inflateReset(&z);
			continue;
		}
		ret = zr == Z_BUF_ERROR && !z.avail_out ? -1 : 0;
		break;
	}
	if (pos < len && ret == 1)
		ret = 0;
	inflateEnd(&z);
	*out_len = made;
	return pos == 0 ? 0 : ret;
}

/* The decoder as unpack.c drives it, @slice bytes at a time (more when
 * it needs more to go on, as unpack.c reads on): 1 and the output if it
 * accepts the stream, 0 if it refuses it, -1 if it makes more than
 * OUT_MAX bytes */
static int gzdec_inflate(struct strata_zran_builder *b, const uint8_t *in,
			 size_t len, size_t slice, uint8_t *out,
			 size_t *out_len)
{
	struct strata_gzdec *d = NULL;
	size_t pos = 0, made = 0, want = slice;
	bool ended = false;
	char msg[200] = "";
	int ret = -2;

	if (strata_gzdec_new(b, &d) < 0)
		return -1;
	while (ret == -2) {
		size_t n = len - pos < want ? len - pos : want, used, got;
		bool end = false;

		if (pos == len && !strata_gzdec_pending(d)) {
			ret = ended ? 1 : 0;
			break;
		}
		if (ended && pos < len && in[pos] != 0x1f) {
			ret = 0;	/* after a member: only another one */
			break;
		}
		if (made == OUT_MAX) {
			ret = -1;
			break;
		}
		if (strata_gzdec_run(d, in + pos, n, pos, out + made,
				     OUT_MAX - made, made, &used, &got, &end,
				     msg, sizeof(msg)) < 0) {
			FUZZ_CHECK(msg[0]);	/* refused with a reason */
			ret = 0;
			break;
		}
		FUZZ_CHECK(used <= n && got <= OUT_MAX - made);
		pos += used;
		made += got;
		if (end)
			ended = true;
		else if (used || got)
			ended = false;
		if (used || got || end) {
			want = slice;
			continue;
		}
		if (n < len - pos)
			want *= 2;	/* more input to go on */
		else
			ret = 0;	/* the blob ends inside a member */
	}
	strata_gzdec_free(d);
	*out_len = made;
	return ret;
}

static void use_points(struct strata_zran_builder *b, const uint8_t *in,
		       size_t len, const uint8_t *want, size_t usize)
{
	struct fuzz_mem m = { in, len };
	struct strata_zran_src src = { .fd = -1, .pread = fuzz_mem_pread,
				       .ctx = &m };
	struct strata_zran *z = NULL;
	unsigned char buf[512];
	uint64_t step = usize / 7 + 1, off;

	if (strata_zran_builder_finish(b, len, usize, &z) < 0)
		return;
	for (off = 0; off < usize; off += step) {
		size_t n = usize - off < sizeof(buf) ? (size_t)(usize - off)
						     : sizeof(buf);

		FUZZ_CHECK(strata_zran_read(z, &src, off, n, buf) == 0);
		FUZZ_CHECK(!memcmp(buf, want + off, n));
	}
	strata_zran_free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *zout, *gout;
	struct strata_zran_builder *b = NULL;
	size_t zlen = 0, glen = 0, slice;
	int zr, gr;

	if (size < 2)
		return 0;
	if (!zout) {
		zout = malloc(OUT_MAX);
		gout = malloc(OUT_MAX);
		if (!zout || !gout)
			abort();
	}
	/* slices of 1 to 256 bytes, or all at once */
	slice = data[0] ? data[0] : size;
	data++;
	size--;
	zr = zlib_inflate(data, size, zout, &zlen);
	if (strata_zran_builder_new(1024, false, &b) < 0)
		abort();
	gr = gzdec_inflate(b, data, size, slice, gout, &glen);
	if (zr >= 0 && gr >= 0) {
		FUZZ_CHECK(zr == gr);
		if (zr == 1) {
			FUZZ_CHECK(zlen == glen && !memcmp(zout, gout, zlen));
			use_points(b, data, size, zout, zlen);
		}
	}
	strata_zran_builder_free(b);
	return 0;
}
