/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A watch on the framing of an uncompressed tar stream, beside libarchive:
 * it reads each header block as the bytes go by and refuses an entry whose
 * type flag a layer may not hold. libarchive reads unknown type flags as
 * regular files without saying so (POSIX allows it), while umoci, moby
 * and containerd refuse them (OCI-RULES.md T9); strata refuses them too,
 * naming the entry.
 *
 * The scanner never decides what an entry is; it only refuses. Where it
 * loses the framing (a header block whose checksum is wrong, an extended
 * header too big to keep), it stops watching and libarchive's reading
 * stands, so a valid layer is never refused because of it.
 */
#ifndef STRATA_TARSCAN_H
#define STRATA_TARSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strata_tarscan {
	unsigned char hdr[512];
	size_t have;		/* bytes of hdr filled */
	uint64_t skip;		/* data and padding still to pass */
	int state;
	char ext_type;		/* 'x' or 'L' while its data is kept */
	char *ext;		/* that data */
	size_t ext_len, ext_cap;
	uint64_t ext_want;	/* its size */
	bool size_set;		/* a pax "size" for the next entry */
	uint64_t size;
	char *path;		/* pax "path" or GNU long name of the next */
};

/* Feed @n more bytes. Return 0, or -1 with a message in @msg naming the
 * entry whose type flag is not allowed. */
int strata_tarscan_feed(struct strata_tarscan *t, const void *buf, size_t n,
			char *msg, size_t msg_size);
/* Did it keep the framing to the end-of-archive blocks? (For tests.) */
bool strata_tarscan_followed(const struct strata_tarscan *t);
void strata_tarscan_free(struct strata_tarscan *t);

#endif
