/* SPDX-License-Identifier: Apache-2.0 */
/* store/layer/zchunked-toc.c: locating a zstd:chunked table of contents from the
 * layer descriptor's annotations ("offset:length:uncompressed:type", the
 * form containers/storage writes), each hostile or unknown form refused
 * with its exact errno; and building a layer's index from a TOC read with
 * the streaming reader, where json-c's strict reading would refuse
 * (duplicate keys, trailing bytes, NUL in a name) refused too. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

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

#define E_DIR "{\"type\":\"dir\",\"name\":\"etc\",\"mode\":493}"
#define E_REG "{\"type\":\"reg\",\"name\":\"etc/a\",\"size\":5," \
	"\"mode\":420,\"modtime\":\"2026-12-02T08:28:34Z\"," \
	"\"digest\":\"sha256:" "f2ca1bb6c7e907d06dafe4687e579fce76b37e4e93b7605022da52e6ccc26fd2" \
	"\",\"offset\":10,\"endOffset\":40}"

#define SHA "\"sha256:" \
	"0000000000000000000000000000000000000000000000000000000000000000\""
/* etc/a in two chunks of 2 and 3 bytes */
#define E_CREG "{\"type\":\"reg\",\"name\":\"etc/a\",\"size\":5," \
	"\"digest\":" SHA ",\"offset\":10,\"endOffset\":40," \
	"\"chunkSize\":2,\"chunkDigest\":" SHA "}"
#define E_CHUNK(coff, size) "{\"type\":\"chunk\",\"name\":\"etc/a\"," \
	"\"offset\":20,\"chunkOffset\":" coff ",\"chunkSize\":" size "," \
	"\"chunkDigest\":" SHA "}"

/* A blob of 100 data bytes, then @json zstd-compressed in a skippable
 * frame, built into a fresh directory: strata_zc_build()'s return. */
static int build_toc(const char *json, size_t jlen)
{
	static int seq;
	unsigned char blob[4096] = { 0 };
	size_t c = ZSTD_compress(blob + 108, sizeof(blob) - 108, json, jlen, 3);
	char tocd[STRATA_DIGEST_MAX], dir[64], pos[64];
	struct strata_range_src *src;
	struct strata_zc_pos p = { 0 };
	struct strata_err err = { 0 };
	int fd, dfd, r;
	FILE *f = tmpfile();

	if (ZSTD_isError(c) || !f)
		abort();
	memcpy(blob + 100, "\x50\x2a\x4d\x18", 4);
	blob[104] = (unsigned char)c;
	blob[105] = (unsigned char)(c >> 8);
	strata_sha256(blob + 108, c, tocd);
	fwrite(blob, 1, 108 + c, f);
	fflush(f);
	fd = dup(fileno(f));
	fclose(f);
	snprintf(pos, sizeof(pos), "108:%zu:%zu:1", c, jlen);
	struct strata_layer l = {
		.digest = (char *)TOC, .size = (int64_t)(108 + c),
		.compression = STRATA_COMP_ZSTD, .toc_digest = tocd,
		.toc_position = pos,
	};
	snprintf(dir, sizeof(dir), "toc-%d", seq++);
	if (strata_zc_locate(&l, &p, &err) < 0 || mkdir(dir, 0755) < 0 ||
	    (dfd = open(dir, O_RDONLY | O_DIRECTORY)) < 0 ||
	    strata_range_src_fd(fd, &src) < 0)
		abort();
	r = strata_zc_build(src, &l, &p, 1 << 20, 1000, dfd, &err);
	if (r < 0)
		diag("%s", err.msg);
	src->free(src);
	close(dfd);
	return r;
}

static void test_build(void)
{
	static const struct {
		const char *doc, *what;
		int want;
	} cases[] = {
		{ "{\"version\":1,\"entries\":[" E_DIR "," E_REG "]}",
		  "a directory and a file", 0 },
		{ "{\"entries\":[" E_DIR "],\"version\":1,\"x\":[{}]}",
		  "version after the entries, unknown key", 0 },
		{ "{\"version\":2,\"entries\":[]}", "version 2", -EOPNOTSUPP },
		{ "{\"version\":1,\"entries\":[" E_DIR "]} x",
		  "trailing bytes", -EBADMSG },
		{ "{\"version\":1,\"version\":1,\"entries\":[]}",
		  "version twice", -EBADMSG },
		{ "{\"version\":1,\"entries\":[{\"type\":\"dir\","
		  "\"name\":\"a\",\"mode\":1,\"mode\":493}]}",
		  "mode twice", -EBADMSG },
		{ "{\"version\":1,\"entries\":[{\"type\":\"dir\","
		  "\"name\":\"a\\u0000b\"}]}", "NUL in a name", -EBADMSG },
		{ "{\"version\":1,\"entries\":[{\"type\":\"dir\","
		  "\"name\":\"a\",\"xattrs\":{\"user.a\":\"eA==\","
		  "\"user.a\":\"eQ==\"}}]}", "xattr twice", -EBADMSG },
		{ "{\"version\":1,\"entries\":[{\"type\":\"dir\","
		  "\"name\":\"a\",\"uid\":99999999999999999999}]}",
		  "uid out of range", -EBADMSG },
		{ "{\"version\":1,\"entries\":[{\"type\":\"dir\","
		  "\"name\":\"a\",\"mode\":4.5}]}", "mode not an integer",
		  -EBADMSG },
		{ "{\"version\":1,\"entries\":[{\"type\":\"dir\","
		  "\"name\":\"\xff\"}]}", "invalid UTF-8", -EBADMSG },
		{ "{\"version\":1,\"entries\":[" E_DIR ",", "cut short",
		  -EBADMSG },
		{ "[]", "not an object", -EBADMSG },
		{ "{\"version\":1,\"entries\":[" E_DIR "," E_CREG ","
		  E_CHUNK("2", "3") "]}", "a file in two chunks", 0 },
		{ "{\"version\":1,\"entries\":[" E_DIR "," E_CREG ","
		  E_CHUNK("2", "2") "]}", "chunks short of the file",
		  -EBADMSG },
		{ "{\"version\":1,\"entries\":[" E_DIR "," E_CREG ","
		  E_CHUNK("3", "2") "]}", "a gap between chunks", -EBADMSG },
		{ "{\"version\":1,\"entries\":[" E_DIR "," E_REG ","
		  E_CHUNK("2", "3") "]}", "a chunk of an unchunked file",
		  -EBADMSG },
		{ "{\"version\":1,\"entries\":[" E_DIR "," E_CREG ","
		  "{\"type\":\"dir\",\"name\":\"etc/d\"}," E_CHUNK("2", "3")
		  "]}", "a chunk after another entry", -EBADMSG },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		is_int(build_toc(cases[i].doc, strlen(cases[i].doc)),
		       cases[i].want, "TOC build: %s", cases[i].what);
}

int main(void)
{
	const char *t = getenv("TMPDIR");
	char path[4096];

	strata_log_set_quiet(true);
	test_locate();
	snprintf(path, sizeof(path), "%s/test-zchunked-XXXXXX",
		 t && *t ? t : "/tmp");
	if (!mkdtemp(path) || chdir(path) < 0)
		abort();
	test_build();
	return done_testing();
}
