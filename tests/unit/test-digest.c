/* SPDX-License-Identifier: Apache-2.0 */
/* store/base/digest.c: the OCI digest grammar and hashing. Vectors were computed
 * with coreutils sha256sum/sha512sum. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "tap.h"

#define H_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define H_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define H512_ABC "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a" \
	"2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
#define H_FOX "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
#define H512_FOX "07e547d9586f6a73f73fbac0435ed76951218fb7d0c8d788a309d785436bbb64" \
	"2e93a252a954f23912547d1e8a3b5ed6e1bfd7097821233fa0538f3db854fee6"
#define H_ZERO1K "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
/* bytes 0..255 repeated 4000 times (1,024,000 bytes) */
#define H_RAMP "062af9ccd890ba3d067ca7150278bcc420069bd82f6e41161029303dfd6d661e"
#define H512_RAMP "b2b7c6474b040c418e7c6ef44ba32f585c114242dc4790156933ae8c07181078" \
	"2c5062c1b427b1efe62fee7e8880c867303c65910ec025165d37500f4ac58586"

static int validate(const char *s)
{
	return strata_digest_validate(s, strlen(s));
}

static void test_validate(void)
{
	static const struct {
		const char *s;
		int want;
	} cases[] = {
		{ "sha256:" H_EMPTY, 0 },
		{ "sha256:" H_ABC, 0 },
		{ "sha512:" H512_ABC, 0 },
		/* upper-case hex is forbidden for sha256/sha512 */
		{ "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", -EINVAL },
		{ "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85A", -EINVAL },
		{ "sha512:DDAF35A193617ABACC417349AE20413112E6FA4E89A97EA20A9EEEE64B55D39A"
		  "2192992A274FC1A836BA3C23A3FEEBBD454D4423643CE80E2A9AC94FA54CA49F", -EINVAL },
		/* wrong lengths */
		{ "sha256:" H_EMPTY "0", -EINVAL },
		{ "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85", -EINVAL },
		{ "sha512:" H_EMPTY, -EINVAL },
		{ "sha256:" H512_ABC, -EINVAL },
		/* grammar */
		{ "", -EINVAL },
		{ ":", -EINVAL },
		{ "sha256", -EINVAL },
		{ "sha256" H_EMPTY, -EINVAL },
		{ "sha256:", -EINVAL },
		{ ":" H_EMPTY, -EINVAL },
		{ "SHA256:" H_EMPTY, -EINVAL },
		{ "sha256 :" H_EMPTY, -EINVAL },
		{ "sha256: " H_EMPTY, -EINVAL },
		{ "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", -EINVAL },
		{ "+sha256:" H_EMPTY, -EINVAL },
		{ "sha256+:" H_EMPTY, -EINVAL },
		{ "sha++256:abc", -EINVAL },
		{ "sha256:abc/def", -EINVAL },
		{ "sha256:abc:def", -EINVAL },
		{ "sha256:" H_EMPTY "\n", -EINVAL },
		/* well formed, algorithm strata cannot verify */
		{ "sha384:abc", -EOPNOTSUPP },
		{ "blake3:" H_EMPTY, -EOPNOTSUPP },
		{ "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", -EOPNOTSUPP },
		{ "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", -EOPNOTSUPP },
		{ "a.b_c-d:A=_-z", -EOPNOTSUPP },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		is_int(validate(cases[i].s), cases[i].want,
		       "digest_validate(\"%s\")", cases[i].s);

	/* @len is authoritative: an embedded NUL is refused, a shorter @len
	 * than the C string is refused too */
	{
		char buf[80] = "sha256:" H_EMPTY;
		size_t n = strlen(buf);

		is_int(strata_digest_validate(buf, n), 0, "validate with exact len");
		buf[20] = '\0';
		is_int(strata_digest_validate(buf, n), -EINVAL,
		       "embedded NUL with full len refused");
		memcpy(buf, "sha256:" H_EMPTY, n + 1);
		is_int(strata_digest_validate(buf, n - 1), -EINVAL,
		       "len one short of the string refused");
	}
}

static void one_shot(const char *alg, const void *buf, size_t n, char *out)
{
	struct strata_hasher *h = NULL;

	out[0] = '\0';
	if (strata_hasher_new_alg(alg, &h) < 0)
		return;
	strata_hasher_update(h, buf, n);
	strata_hasher_final(h, out);
	strata_hasher_free(h);
}

static void test_hasher(void)
{
	static const char fox[] = "The quick brown fox jumps over the lazy dog";
	char out[STRATA_DIGEST_MAX], out2[STRATA_DIGEST_MAX];
	cleanup_free unsigned char *ramp = malloc(256 * 4000);
	struct strata_hasher *h = NULL;
	size_t i, step;
	static const size_t steps[] = { 1, 7, 4096, 65537, 1000000 };

	if (!ramp)
		abort();
	for (i = 0; i < 256 * 4000; i++)
		ramp[i] = (unsigned char)i;

	strata_sha256("", 0, out);
	is_str(out, "sha256:" H_EMPTY, "strata_sha256 of nothing");
	strata_sha256("abc", 3, out);
	is_str(out, "sha256:" H_ABC, "strata_sha256(\"abc\")");
	strata_sha256(fox, strlen(fox), out);
	is_str(out, "sha256:" H_FOX, "strata_sha256(fox)");
	{
		unsigned char z[1024] = { 0 };

		strata_sha256(z, sizeof(z), out);
		is_str(out, "sha256:" H_ZERO1K, "strata_sha256(1024 NULs), the empty tar");
	}
	strata_sha256(ramp, 256 * 4000, out);
	is_str(out, "sha256:" H_RAMP, "strata_sha256(1 MB ramp)");

	one_shot("sha512", "abc", 3, out);
	is_str(out, "sha512:" H512_ABC, "sha512(\"abc\")");
	one_shot("sha512", fox, strlen(fox), out);
	is_str(out, "sha512:" H512_FOX, "sha512(fox)");
	one_shot("sha512", ramp, 256 * 4000, out);
	is_str(out, "sha512:" H512_RAMP, "sha512(1 MB ramp)");
	is_int(validate(out), 0, "sha512 output passes validate");

	/* streaming in uneven chunks equals one shot */
	for (step = 0; step < sizeof(steps) / sizeof(steps[0]); step++) {
		const char *algs[] = { "sha256", "sha512" };
		size_t a;

		for (a = 0; a < 2; a++) {
			size_t off = 0, n = 256 * 4000;

			h = NULL;
			if (strata_hasher_new_alg(algs[a], &h) < 0) {
				ok(0, "hasher_new_alg(%s)", algs[a]);
				continue;
			}
			while (off < n) {
				size_t k = n - off < steps[step] ? n - off : steps[step];

				strata_hasher_update(h, ramp + off, k);
				off += k;
			}
			strata_hasher_final(h, out);
			strata_hasher_free(h);
			one_shot(algs[a], ramp, n, out2);
			is_str(out, out2, "%s streamed in %zu-byte chunks == one shot",
			       algs[a], steps[step]);
		}
	}

	/* hasher_new picks the algorithm from a digest prefix */
	h = NULL;
	is_int(strata_hasher_new("sha512:" H512_ABC, &h), 0, "hasher_new(sha512:...)");
	if (h) {
		strata_hasher_update(h, "ab", 2);
		strata_hasher_update(h, "", 0);
		strata_hasher_update(h, "c", 1);
		strata_hasher_final(h, out);
		strata_hasher_free(h);
		is_str(out, "sha512:" H512_ABC, "hasher_new(sha512) hashes sha512");
	}
	h = NULL;
	is_int(strata_hasher_new("sha256:" H_ABC, &h), 0, "hasher_new(sha256:...)");
	if (h) {
		strata_hasher_update(h, "abc", 3);
		strata_hasher_final(h, out);
		strata_hasher_free(h);
		is_str(out, "sha256:" H_ABC, "hasher_new(sha256) hashes sha256");
	}
	h = NULL;
	is_int(strata_hasher_new("blake3:" H_ABC, &h), -EOPNOTSUPP,
	       "hasher_new(blake3:) -> EOPNOTSUPP");
	ok(h == NULL, "no hasher returned for blake3");
	is_int(strata_hasher_new("sha256", &h), -EOPNOTSUPP,
	       "hasher_new without a colon -> EOPNOTSUPP");
	is_int(strata_hasher_new("sha256sha256sha256:00", &h), -EOPNOTSUPP,
	       "hasher_new with a long algorithm -> EOPNOTSUPP");
	is_int(strata_hasher_new_alg("SHA256", &h), -EOPNOTSUPP,
	       "hasher_new_alg is case sensitive");
	is_int(strata_hasher_new_alg("md5", &h), -EOPNOTSUPP,
	       "hasher_new_alg(md5) -> EOPNOTSUPP");
	ok(h == NULL, "no hasher returned on failure");
}

int main(void)
{
	test_validate();
	test_hasher();
	return done_testing();
}
