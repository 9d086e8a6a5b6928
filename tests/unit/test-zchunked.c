/* SPDX-License-Identifier: Apache-2.0 */
/* store/zchunked-toc.c: locating a zstd:chunked table of contents from the
 * layer descriptor's annotations ("offset:length:uncompressed:type", the
 * form containers/storage writes), each hostile or unknown form refused
 * with its exact errno. */
#include <errno.h>
#include <string.h>

#include "lazy.h"
#include "tap.h"

#define TOC "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"

static void test_locate(void)
{
	static const struct {
		const char *pos, *toc;
		int comp;
		int want;
	} cases[] = {
		{ "1059816:2357:8442:1", TOC, STRATA_COMP_ZSTD, 0 },
		{ "1059816:2357:8442:2", TOC, STRATA_COMP_ZSTD, -EOPNOTSUPP },
		{ "1059816:2357:8442:1", TOC, STRATA_COMP_GZIP, -EOPNOTSUPP },
		{ NULL, TOC, STRATA_COMP_ZSTD, -EOPNOTSUPP },
		{ "1059816:2357:8442:1", NULL, STRATA_COMP_ZSTD, -EOPNOTSUPP },
		{ "1059816:2357:8442:1", "sha512:ab", STRATA_COMP_ZSTD,
		  -EOPNOTSUPP },
		{ "1059816:2357:8442", TOC, STRATA_COMP_ZSTD, -EBADMSG },
		{ "1059816:2357:8442:1x", TOC, STRATA_COMP_ZSTD, -EBADMSG },
		{ "-1:2357:8442:1", TOC, STRATA_COMP_ZSTD, -EBADMSG },
		{ "4:2357:8442:1", TOC, STRATA_COMP_ZSTD, -EBADMSG },
		{ "1059816:0:8442:1", TOC, STRATA_COMP_ZSTD, -EBADMSG },
		{ "1059816:9999999:8442:1", TOC, STRATA_COMP_ZSTD, -EBADMSG },
		{ "18446744073709551615:2357:8442:1", TOC, STRATA_COMP_ZSTD,
		  -EBADMSG },
		{ "1059816:2357:999999999999:1", TOC, STRATA_COMP_ZSTD,
		  -EOPNOTSUPP },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct strata_layer l = {
			.digest = (char *)TOC, .size = 1062221,
			.compression = cases[i].comp,
			.toc_digest = (char *)cases[i].toc,
			.toc_position = (char *)cases[i].pos,
		};
		struct strata_zc_pos p = { 0 };
		struct strata_err err = { 0 };
		int r = strata_zc_locate(&l, &p, &err);

		is_int(r, cases[i].want, "locate %s (comp %d)",
		       cases[i].pos ? cases[i].pos : "(none)", cases[i].comp);
		if (r == 0)
			ok(p.off == 1059816 && p.len == 2357 && p.ulen == 8442,
			   "position parsed");
		if (r == -EBADMSG)
			ok(strstr(err.msg, "layer ") != NULL,
			   "message names the layer: %s", err.msg);
	}
}

int main(void)
{
	strata_log_set_quiet(true);
	test_locate();
	return done_testing();
}
