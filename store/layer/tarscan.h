/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Go's reading of a layer tar, beside libarchive.
 *
 * Docker, containerd, podman and umoci read layers with Go's archive/tar;
 * strata reads them with libarchive. Where two readers see different trees
 * in one layer, a layer can show one thing to a scanner and another to a
 * container: so the scanner here reads the raw (uncompressed) tar stream
 * as it goes by with Go's rules (reader.go, strconv.go of Go 1.19: numeric
 * fields, checksums, ustar prefix, pax records, GNU long names, the end of
 * the archive) and queues, for each entry, what Go makes of it. unpack.c
 * takes each entry's metadata from this queue; unpacking in full, it checks
 * that libarchive saw the same entry (name, type, link) at the same place,
 * and refuses the layer where they differ. A lazy layer's metadata pass
 * reads with this scanner alone (unpack.c, read_go_only).
 *
 * Whatever Go's archive/tar refuses (a bad checksum, a numeric field it
 * cannot read, a pax record out of grammar, an extended header over 1 MiB,
 * a zero block followed by a header) the scanner refuses too, naming the
 * entry: it never stops watching. It also refuses entry types a layer may
 * not hold (OCI-RULES.md T9), which libarchive would read as files.
 */
#ifndef STRATA_TARSCAN_H
#define STRATA_TARSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One entry as Go's archive/tar reads it. Strings are NUL-terminated. */
struct strata_tar_entry {
	char *name;		/* pax path, GNU long name or prefix/name */
	char *link;		/* pax linkpath, GNU long link or linkname */
	char type;		/* '0' for '\0' ('5' if the name ends in '/') */
	bool sparse;		/* a pax GNU.sparse.* file: size is logical */
	bool map_ready;		/* its map was read (1.0: from its data) */
	int64_t *map;		/* its data fragments: offset, length pairs */
	size_t map_n;		/* pairs */
	int64_t size;		/* bytes of content (0 for header-only types) */
	int64_t mode, uid, gid, devmajor, devminor;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	/* SCHILY.xattr.* records (Go's PAXRecords; the last of a name
	 * wins): each a u16 name length, u32 value length (little endian),
	 * name, value */
	unsigned char *xattrs;
	size_t xattrs_len;
	uint64_t offset;	/* of its header block in the tar */
};

struct strata_tarscan {
	unsigned char hdr[512];
	size_t have;		/* bytes of hdr filled */
	uint64_t data;		/* entry data still to pass */
	uint64_t pad;		/* then padding */
	uint64_t offset;	/* bytes fed so far */
	uint64_t hdr_offset;	/* of the header in hdr */
	int state;
	char ext_type;		/* 'x', 'g', 'L' or 'K' while its data is kept */
	unsigned char *ext;	/* that data */
	size_t ext_len, ext_cap;
	/* pending for the next entry (Go: paxHdrs, gnuLongName/Link) */
	struct pax {
		char *rec;	/* the records of the last 'x', parsed */
		size_t len;
		bool set;
	} pax;
	char *long_name, *long_link;
	/* a GNU sparse 1.0 map being read from the data of entry q[map_q] */
	bool map_pending;
	size_t map_q;
	int64_t map_size, map_phys;	/* the entry's logical, physical size */
	char *mbuf;
	size_t mbuf_len, mbuf_nl;
	int64_t map_want;		/* newlines needed, 0 until known */
	/* entries read and not yet taken */
	struct strata_tar_entry *q;
	size_t q_head, q_len, q_cap;
	struct strata_tar_entry cur;	/* the one last taken */
	char last[200];		/* name of the last entry queued */
	char err[512];		/* the refusal, once refused */
};

/*
 * Feed @n more bytes. Return: 0, or -1 with a message in @msg naming the
 * entry when the layer is to be refused (then every later call refuses
 * again with the same message).
 */
int strata_tarscan_feed(struct strata_tarscan *t, const void *buf, size_t n,
			char *msg, size_t msg_size);
/*
 * The stream ended. Return: 0, or -1 with a message when Go's reader would
 * fail there (a header or entry data cut short).
 */
int strata_tarscan_finish(struct strata_tarscan *t, char *msg,
			  size_t msg_size);
/*
 * The next entry Go reads (in archive order), or NULL when none is queued
 * yet or the archive has ended. Borrowed: valid until the next call or
 * strata_tarscan_free().
 */
const struct strata_tar_entry *strata_tarscan_next(struct strata_tarscan *t);
/* Did it reach the end-of-archive blocks? (For tests.) */
bool strata_tarscan_followed(const struct strata_tarscan *t);
void strata_tarscan_free(struct strata_tarscan *t);

#endif
