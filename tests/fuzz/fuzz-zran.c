/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The access point index reader (store/layer/zran.c): the input is a whole
 * index file, as if the cache had been damaged or planted. It is parsed
 * as it is (the checksum refuses almost everything), then again with its
 * trailing checksum recomputed, so that the checks behind the checksum
 * are what gets explored. Whatever parse accepts is then used: ranges
 * located and read (at the start, the middle and the end of the stream,
 * and at each of the first points) from a blob made of the input's own
 * bytes. A read must return the bytes or -EBADMSG, never crash, and a
 * located range must lie inside the blob.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "store-internal.h"
#include "zran.h"

#define SUM 64
#define HDR 208

static void use(const struct strata_zran *z, const uint8_t *data,
		size_t size)
{
	struct fuzz_mem m = { data, size };
	struct strata_zran_src src = { .fd = -1, .pread = fuzz_mem_pread,
				       .ctx = &m };
	struct strata_zran_info info;
	unsigned char buf[256];
	uint64_t offs[4], cs, ce;

	strata_zran_info(z, &info);
	FUZZ_CHECK(info.n_points >= 1);
	offs[0] = 0;
	offs[1] = info.usize / 2;
	offs[2] = info.usize ? info.usize - 1 : 0;
	offs[3] = info.usize;
	for (int i = 0; i < 4; i++) {
		size_t len = info.usize - offs[i] < sizeof(buf)
			? (size_t)(info.usize - offs[i]) : sizeof(buf);
		int r;

		if (strata_zran_locate(z, offs[i], len, &cs, &ce) == 0)
			FUZZ_CHECK(cs <= ce && ce <= info.csize);
		/* bounded work: a read may inflate up to a span, and the
		 * blob is the input itself, so it ends soon */
		r = strata_zran_read(z, &src, offs[i], len, buf);
		FUZZ_CHECK(r == 0 || r == -EBADMSG);
	}
	FUZZ_CHECK(strata_zran_read(z, &src, info.usize, 1, buf) == -EINVAL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strata_zran *z = NULL;
	char sum[STRATA_DIGEST_MAX];
	uint8_t *copy;

	if (strata_zran_parse(data, size, NULL, "fuzz", &z, NULL) == 0) {
		use(z, data, size);
		strata_zran_free(z);
		z = NULL;
	}
	if (size < HDR + SUM)
		return 0;
	copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	strata_sha256(copy, size - SUM, sum);
	memcpy(copy + size - SUM, sum + 7, SUM);
	if (strata_zran_parse(copy, size, NULL, "fuzz", &z, NULL) == 0) {
		use(z, copy, size);
		strata_zran_free(z);
	}
	free(copy);
	return 0;
}
