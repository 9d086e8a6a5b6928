/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/image/jsonpull.c, the streaming reader of zstd:chunked tables of
 * contents, against json-c read through strata_json_parse(): both accept
 * or both refuse (a duplicate key is json-c's refusal only), and what both
 * accept has the same values (tests/unit/jsonpull-cmp.h).
 *
 * Input: one JSON document, as is.
 */
#include "fuzz.h"
#include "../unit/jsonpull-cmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[256];

	if (size > 1 << 16)	/* duplicate detection is quadratic */
		return 0;
	if (cmp_json((const char *)data, size, why, sizeof(why)) < 0) {
		fprintf(stderr, "jsonpull: %s\n", why);
		FUZZ_CHECK(!"pull and json-c read the input alike");
	}
	return 0;
}
