/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tar type-flag watch (store/layer/tarscan.h, public API only): the input is
 * an uncompressed layer stream, fed once whole and once in chunks of
 * pseudo-random sizes (from a hash of the input, so a saved input replays
 * the same way). A stream arrives in chunks of any size, so the verdict
 * (refused or not, the message, whether the framing was followed) must
 * not depend on where the chunks break.
 */
#include <string.h>

#include "fuzz.h"
#include "tarscan.h"

struct verdict {
	int ret;
	bool followed;
	char msg[512];
};

static void scan(const uint8_t *data, size_t size, uint64_t seed,
		 struct verdict *v)
{
	struct strata_tarscan t;
	size_t off = 0;

	memset(&t, 0, sizeof(t));
	memset(v, 0, sizeof(*v));
	while (off < size) {
		size_t n = size - off;

		if (seed) {
			/* xorshift: mostly small chunks, some up to 2 KiB */
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			n = seed % 8 ? 1 + seed % 37 : 1 + seed % 2048;
			if (n > size - off)
				n = size - off;
		}
		v->ret = strata_tarscan_feed(&t, data + off, n, v->msg,
					     sizeof(v->msg));
		if (v->ret < 0)
			break;
		off += n;
	}
	v->followed = strata_tarscan_followed(&t);
	strata_tarscan_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verdict whole, chunked;
	uint64_t seed = 1469598103934665603ull;
	size_t i;

	for (i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 1099511628211ull;
	scan(data, size, 0, &whole);
	scan(data, size, seed | 1, &chunked);
	FUZZ_CHECK(whole.ret == 0 || whole.ret == -1);
	FUZZ_CHECK(whole.ret == chunked.ret);
	FUZZ_CHECK(!strcmp(whole.msg, chunked.msg));
	FUZZ_CHECK(whole.followed == chunked.followed);
	if (whole.ret < 0)
		FUZZ_CHECK(whole.msg[0]);
	return 0;
}
