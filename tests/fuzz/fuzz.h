/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every harness provides: libFuzzer's entry point. The same file links
 * either with libFuzzer (-fsanitize=fuzzer) or with replay.c, which feeds
 * it every file of a corpus directory.
 */
#ifndef STRATA_FUZZ_H
#define STRATA_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* Must not crash, leak or abort on any input; returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property of the parser that does not hold: a harness bug report, not
 * an input error, so it aborts (libFuzzer saves the input). */
#define FUZZ_CHECK(cond)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: property failed: %s\n",	\
				__FILE__, __LINE__, #cond);		\
			abort();					\
		}							\
	} while (0)

/* A blob in memory, read as a registry range source reads it
 * (strata_zran_src.pread): up to @len bytes at @off, 0 at the end. */
struct fuzz_mem {
	const uint8_t *p;
	size_t len;
};

static inline ssize_t fuzz_mem_pread(void *ctx, void *buf, size_t len,
				     uint64_t off)
{
	const struct fuzz_mem *m = ctx;

	if (off >= m->len)
		return 0;
	if (len > m->len - off)
		len = m->len - (size_t)off;
	memcpy(buf, m->p + off, len);
	return (ssize_t)len;
}

#endif
