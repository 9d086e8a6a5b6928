/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The table of contents of a zstd:chunked layer (containers/storage
 * pkg/chunked): the layer is an ordinary zstd-compressed tar, but every
 * file's content starts a new zstd frame, and a zstd skippable frame near
 * the end holds the TOC, zstd-compressed JSON (the fields in toc.c) in
 * which a regular file's frames lie between "offset" and "endOffset" and
 * "chunk" entries split a large file inside that range (each chunk's
 * frames from its "offset", in order; toc.c checks the chunk list and
 * keeps each chunkDigest for the fill). The manifest's
 * layer descriptor locates the TOC ("…zstd-chunked.manifest-position":
 * offset:length:uncompressed length:1) and names its sha256
 * ("…zstd-chunked.manifest-checksum", of the compressed bytes): the
 * checksum is the TOC's only trust anchor, so a layer without it is
 * unpacked in full, never mounted from a footer.
 *
 * Every content range must lie inside the blob, before the TOC, in order
 * and without overlap, so no read of one file can be steered into
 * another's bytes or past the end.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "toc.h"

int strata_zc_locate(const struct strata_layer *l, struct strata_zc_pos *pos,
		     struct strata_err *err)
{
	unsigned long long off, len, ulen, type;
	char sd[32];
	int n = 0;

	if (l->compression != STRATA_COMP_ZSTD || !l->toc_digest ||
	    !l->toc_position)
		return -EOPNOTSUPP;
	strata_short_digest(l->digest, sd, sizeof(sd));
	if (sscanf(l->toc_position, "%llu:%llu:%llu:%llu%n", &off, &len,
		   &ulen, &type, &n) != 4 || (size_t)n != strlen(l->toc_position))
		return strata_err_set(err, -EBADMSG, "layer %s: zstd:chunked "
				      "manifest position \"%s\" is malformed",
				      sd, l->toc_position);
	if (type != 1)
		return -EOPNOTSUPP;
	if (off < 8 || len == 0 || off > (uint64_t)l->size ||
	    len > (uint64_t)l->size - off)
		return strata_err_set(err, -EBADMSG, "layer %s: zstd:chunked "
				      "table of contents at %llu+%llu lies "
				      "outside the %lld-byte blob", sd, off,
				      len, (long long)l->size);
	if (ulen > STRATA_TOC_MAX || len > STRATA_TOC_MAX) {
		strata_warn("layer %s: zstd:chunked table of contents of %llu "
			    "bytes is over the %u-byte limit: unpacking the "
			    "layer in full", sd, ulen, STRATA_TOC_MAX);
		return -EOPNOTSUPP;
	}
	if (strncmp(l->toc_digest, "sha256:", 7) ||
	    strata_digest_validate(l->toc_digest, strlen(l->toc_digest)) < 0)
		return -EOPNOTSUPP;
	pos->off = off;
	pos->len = len;
	pos->ulen = ulen;
	return 0;
}

/* Read the TOC and its frame header into @c, decompress it into @u. */
static int read_toc_into(struct strata_range_src *src,
			 const struct strata_layer *l,
			 const struct strata_zc_pos *pos, const char *sd,
			 unsigned char *c, char *u, struct strata_err *err)
{
	static const unsigned char skip_magic[4] = { 0x50, 0x2a, 0x4d, 0x18 };
	char got[STRATA_DIGEST_MAX];
	uint32_t flen;
	size_t n;
	int r;

	r = src->read(src, c, pos->len + 8, pos->off - 8);
	if (r < 0)
		return strata_err_set(err, r, "layer %s: reading the table of "
				      "contents: %s", sd, strerror(-r));
	strata_sha256(c + 8, pos->len, got);
	if (strcmp(got, l->toc_digest))
		return strata_err_set(err, -EBADMSG, "layer %s: zstd:chunked "
				      "table of contents does not match the "
				      "manifest's checksum %s (it hashes to "
				      "%s): refused (-o lazy=0 unpacks the "
				      "layer in full, verified by its digest)",
				      sd, l->toc_digest, got);
	memcpy(&flen, c + 4, 4);
	if (memcmp(c, skip_magic, 4) || le32toh(flen) != pos->len)
		return strata_err_set(err, -EBADMSG, "layer %s: zstd:chunked "
				      "table of contents is not in a skippable "
				      "frame of its length", sd);
	n = ZSTD_decompress(u, pos->ulen + 1, c + 8, pos->len);
	if (ZSTD_isError(n) || n != pos->ulen)
		return strata_err_set(err, -EBADMSG, "layer %s: zstd:chunked "
				      "table of contents does not decompress "
				      "to its %llu bytes", sd,
				      (unsigned long long)pos->ulen);
	u[n] = '\0';
	return 0;
}

/* Read, verify and decompress the TOC. Caller frees *out with
 * strata_big_free(*out, pos->ulen + 1). */
static int read_toc(struct strata_range_src *src, const struct strata_layer *l,
		    const struct strata_zc_pos *pos, const char *sd,
		    char **out, struct strata_err *err)
{
	unsigned char *c = strata_big_alloc(pos->len + 8);
	char *u = strata_big_alloc(pos->ulen + 1);
	int r = c && u ? read_toc_into(src, l, pos, sd, c, u, err) : -ENOMEM;

	strata_big_free(c, pos->len + 8);
	if (r < 0)
		strata_big_free(u, pos->ulen + 1);
	else
		*out = u;
	return r;
}

/* A "chunk" entry of the regular file before it (toc.c checks its place
 * in the file and keeps its chunkDigest): its frames start inside the
 * file's range, after the previous chunk's. */
static int check_chunk(struct strata_toc_build *bd,
		       const struct strata_toc_entry *e)
{
	uint64_t off = TE_HAS(e, TE_OFFSET) ? (uint64_t)e->n[TE_OFFSET] : 0;

	if (off < bd->reg_off || off >= bd->reg_end || off <= bd->last_off)
		return strata_toc_entry_err(bd, e->s[TE_NAME], "chunk outside "
					    "its file's range or out of order");
	bd->last_off = off;
	return 0;
}

/* The content range of a non-empty regular file. */
static int content_range(struct strata_toc_build *bd,
			 const struct strata_toc_entry *e, uint64_t size,
			 uint64_t *off, uint64_t *end)
{
	const char *name = e->s[TE_NAME];

	(void)size;
	if (!TE_HAS(e, TE_OFFSET) || !TE_HAS(e, TE_END))
		return strata_toc_entry_err(bd, name, "no content range");
	*off = (uint64_t)e->n[TE_OFFSET];
	*end = (uint64_t)e->n[TE_END];
	if (*end <= *off || *end > bd->toc_start)
		return strata_toc_entry_err(bd, name, "content range lies "
					    "outside the layer's data");
	if (*off < bd->prev_end)
		return strata_toc_entry_err(bd, name, "content range overlaps "
					    "or comes before the previous "
					    "file's");
	bd->prev_end = *end;
	bd->last_off = *off;	/* where its first chunk's frames start */
	return 0;
}

int strata_zc_build(struct strata_range_src *src, const struct strata_layer *l,
		    const struct strata_zc_pos *pos, uint64_t max_bytes,
		    uint64_t max_entries, int dest_fd, struct strata_err *err)
{
	char *toc = NULL;
	struct strata_toc_build bd = {
		.format = "zstd:chunked", .err = err, .max_bytes = max_bytes,
		.toc_start = pos->off - 8, .content = content_range,
		.chunk = check_chunk,
	};
	char sd[32];
	int r;

	strata_short_digest(l->digest, sd, sizeof(sd));
	bd.sd = sd;
	r = read_toc(src, l, pos, sd, &toc, err);
	if (r < 0)
		return r;
	r = strata_toc_read(&bd, toc, pos->ulen, l->digest, max_entries,
			    dest_fd);
	strata_big_free(toc, pos->ulen + 1);
	return r;
}

int strata_zc_metas(struct strata_range_src *src, const struct strata_layer *l,
		    struct strata_lz_meta **metas, size_t *n,
		    struct strata_err *err)
{
	struct strata_toc_build bd = {
		.format = "zstd:chunked", .err = err, .max_bytes = UINT64_MAX,
		.content = content_range, .chunk = check_chunk,
	};
	struct strata_zc_pos pos;
	char sd[32], *toc = NULL;
	int r;

	strata_short_digest(l->digest, sd, sizeof(sd));
	bd.sd = sd;
	r = strata_zc_locate(l, &pos, err);
	if (r == -EOPNOTSUPP)
		r = strata_err_set(err, -EBADMSG, "layer %s: zstd:chunked "
				   "annotations are gone", sd);
	if (r == 0)
		r = read_toc(src, l, &pos, sd, &toc, err);
	if (r < 0)
		return r;
	bd.toc_start = pos.off - 8;
	r = strata_toc_metas(&bd, toc, pos.ulen, metas, n);
	strata_big_free(toc, pos.ulen + 1);
	return r;
}
