/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zrantool: store/layer/zran.c from the command line, for
 * tests/integration/test_zran.py and the timed parts of
 * tests/bench/zran.py; one JSON line of results per run. Test-only: built
 * by meson, never installed.
 *
 *   zrantool index BLOB SPAN raw|deflated OUT
 *       one decompressing pass recording points (strata_zran_build), the
 *       index written to OUT: {"seconds", "points", "window_bytes",
 *       "file_bytes", "usize"}
 *   zrantool plain BLOB
 *       the same pass with plain inflate()/ZSTD_decompressStream() and no
 *       points: {"seconds", "usize"}
 *   zrantool unpack BLOB DIGEST DIFF_ID gzip|zstd SPAN|0 DIR [OUT]
 *       strata_unpack_layer() into DIR (emptied first), with access
 *       points recorded at SPAN or none (by the pass's own decoder,
 *       gzdec.c: ISA-L where built with it), the index written to OUT
 *       if given: {"seconds", "points"}
 *   zrantool read BLOB INDEX
 *       reads "OFFSET LENGTH" lines from stdin, each with
 *       strata_zran_read(); prints "SECONDS CPU_SECONDS SHA256" per line
 *
 * "seconds" is wall-clock time, "cpu" the CPU time of this process.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "store-internal.h"
#include "unpack.h"
#include "zran.h"

#define BUF (1u << 20)

static double clock_s(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wall-clock and CPU time (this process): on a shared machine the CPU
 * time is the steadier figure. */
static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

static double cpu(void)
{
	return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

static int die(const char *what, int r, const struct strata_err *err)
{
	fprintf(stderr, "zrantool: %s: %s\n", what,
		err && err->msg[0] ? err->msg : strerror(-r));
	return 1;
}

static int cmd_index(char **argv)
{
	struct strata_err err = { 0 };
	struct strata_zran *z = NULL;
	struct strata_zran_info info;
	struct stat stb;
	int fd = open(argv[0], O_RDONLY | O_CLOEXEC), r;
	double t, c;

	if (fd < 0)
		return die(argv[0], -errno, NULL);
	t = now();
	c = cpu();
	r = strata_zran_build(fd, strtoull(argv[1], NULL, 0),
			      !strcmp(argv[2], "deflated"), &z, &err);
	t = now() - t;
	c = cpu() - c;
	close(fd);
	if (r < 0)
		return die(argv[0], r, &err);
	r = strata_zran_write(z, "sha256:bench", AT_FDCWD, argv[3]);
	if (r < 0 || stat(argv[3], &stb) < 0)
		return die(argv[3], r, NULL);
	strata_zran_info(z, &info);
	printf("{\"seconds\": %.6f, \"cpu\": %.6f, \"points\": %llu, "
	       "\"window_bytes\": %llu, \"file_bytes\": %lld, "
	       "\"usize\": %llu}\n", t, c,
	       (unsigned long long)info.n_points,
	       (unsigned long long)info.window_bytes, (long long)stb.st_size,
	       (unsigned long long)info.usize);
	strata_zran_free(z);
	return 0;
}

/* Decompress @fd to nowhere. Return: uncompressed bytes, or -1. */
static long long plain_pass(int fd)
{
	unsigned char *in = malloc(BUF), *out = malloc(BUF);
	ZSTD_DCtx *d = NULL;
	z_stream s = { 0 };
	long long total = 0;
	bool gz = false, first = true, ended = false;
	ssize_t n;

	while ((n = read(fd, in, BUF)) > 0) {
		if (first) {
			gz = in[0] == 0x1f;
			if (gz)
				inflateInit2(&s, 16 + MAX_WBITS);
			else
				d = ZSTD_createDCtx();
			first = false;
		}
		if (gz) {
			s.next_in = in;
			s.avail_in = (uInt)n;
			while (s.avail_in) {
				int zr;

				if (ended) {
					inflateReset(&s);
					ended = false;
				}
				s.next_out = out;
				s.avail_out = BUF;
				zr = inflate(&s, Z_NO_FLUSH);
				total += BUF - s.avail_out;
				if (zr == Z_STREAM_END)
					ended = true;
				else if (zr != Z_OK && zr != Z_BUF_ERROR)
					return -1;
			}
		} else {
			ZSTD_inBuffer ib = { in, (size_t)n, 0 };

			while (ib.pos < ib.size) {
				ZSTD_outBuffer ob = { out, BUF, 0 };

				if (ZSTD_isError(ZSTD_decompressStream(d, &ob, &ib)))
					return -1;
				total += (long long)ob.pos;
			}
		}
	}
	if (gz)
		inflateEnd(&s);
	ZSTD_freeDCtx(d);
	free(in);
	free(out);
	return total;
}

static int cmd_plain(char **argv)
{
	int fd = open(argv[0], O_RDONLY | O_CLOEXEC);
	long long u;
	double t, c;

	if (fd < 0)
		return die(argv[0], -errno, NULL);
	t = now();
	c = cpu();
	u = plain_pass(fd);
	t = now() - t;
	c = cpu() - c;
	close(fd);
	if (u < 0)
		return die(argv[0], -EBADMSG, NULL);
	printf("{\"seconds\": %.6f, \"cpu\": %.6f, \"usize\": %lld}\n", t,
	       c, u);
	return 0;
}

static int cmd_unpack(char **argv)
{
	struct strata_unpack_job job = { 0 };
	struct strata_err err = { 0 };
	struct strata_zran_builder *b = NULL;
	struct strata_zran *z = NULL;
	struct strata_zran_info info = { 0 };
	unsigned long long span = strtoull(argv[4], NULL, 0);
	uint64_t usize = 0;
	struct stat stb;
	int dest, r;
	double t, c;

	strata_rmtree_at(AT_FDCWD, argv[5]);
	if (mkdir(argv[5], 0755) < 0)
		return die(argv[5], -errno, NULL);
	dest = open(argv[5], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest < 0 || mkdirat(dest, "data", 0755) < 0)
		return die(argv[5], -errno, NULL);
	job.blob_fd = open(argv[0], O_RDONLY | O_CLOEXEC);
	if (job.blob_fd < 0 || fstat(job.blob_fd, &stb) < 0)
		return die(argv[0], -errno, NULL);
	job.digest = argv[1];
	job.diff_id = argv[2];
	job.size = stb.st_size;
	job.compression = !strcmp(argv[3], "gzip") ? STRATA_COMP_GZIP
						   : STRATA_COMP_ZSTD;
	job.dest_fd = dest;
	job.max_bytes = 1ull << 40;
	job.max_entries = 1u << 24;
	if (span && strata_zran_builder_new(span, true, &b) < 0)
		return die("builder", -ENOMEM, NULL);
	job.zran = b;
	t = now();
	c = cpu();
	job.usize = &usize;
	r = strata_unpack_layer(&job, &err);
	if (r == 0 && b)
		r = strata_zran_builder_finish(b, (uint64_t)stb.st_size,
					       usize, &z);
	t = now() - t;
	c = cpu() - c;
	if (r < 0)
		return die(argv[0], r, &err);
	if (z)
		strata_zran_info(z, &info);
	if (z && argv[6] && (r = strata_zran_write(z, "sha256:bench", AT_FDCWD,
						    argv[6])) < 0)
		return die(argv[6], r, NULL);
	printf("{\"seconds\": %.6f, \"cpu\": %.6f, \"points\": %llu}\n", t,
	       c, (unsigned long long)info.n_points);
	strata_zran_free(z);
	strata_zran_builder_free(b);
	close(job.blob_fd);
	close(dest);
	strata_rmtree_at(AT_FDCWD, argv[5]);
	return 0;
}

static int cmd_read(char **argv)
{
	struct strata_err err = { 0 };
	struct strata_zran *z = NULL;
	struct strata_zran_src src = { .fd = open(argv[0], O_RDONLY | O_CLOEXEC) };
	unsigned long long off, len;
	char sum[STRATA_DIGEST_MAX];
	int r;

	if (src.fd < 0)
		return die(argv[0], -errno, NULL);
	r = strata_zran_load(AT_FDCWD, argv[1], NULL, &z, &err);
	if (r < 0)
		return die(argv[1], r, &err);
	while (scanf("%llu %llu", &off, &len) == 2) {
		unsigned char *buf = malloc(len ? len : 1);
		double t = now(), c = cpu();

		r = strata_zran_read(z, &src, off, (size_t)len, buf);
		t = now() - t;
		c = cpu() - c;
		if (r < 0)
			return die("read", r, NULL);
		strata_sha256(buf, (size_t)len, sum);
		printf("%.6f %.6f %s\n", t, c, sum + 7);
		free(buf);
	}
	strata_zran_free(z);
	close(src.fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "index"))
		return cmd_index(argv + 2) ? 1 : 0;
	if (argc == 3 && !strcmp(argv[1], "plain"))
		return cmd_plain(argv + 2);
	if ((argc == 8 || argc == 9) && !strcmp(argv[1], "unpack"))
		return cmd_unpack(argv + 2);
	if (argc == 4 && !strcmp(argv[1], "read"))
		return cmd_read(argv + 2);
	fprintf(stderr, "usage: zrantool index BLOB SPAN raw|deflated OUT\n"
		"       zrantool plain BLOB\n"
		"       zrantool unpack BLOB DIGEST DIFF_ID gzip|zstd SPAN|0 DIR\n"
		"       zrantool read BLOB INDEX < 'OFFSET LENGTH' lines\n");
	return 2;
}
