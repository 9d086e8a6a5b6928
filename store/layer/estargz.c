/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The table of contents of an eStargz layer (stargz-snapshotter
 * docs/estargz.md; the estargz Go package): an ordinary gzip-compressed
 * tar whose every regular file's content, and every chunk of a large
 * one, starts a gzip member of its own. The tar's last entry,
 * stargz.index.json, in a member of its own, is the TOC (the JSON of
 * toc.c; "offset" is where the member holding a file's content, or the
 * chunk's, starts; a "chunk" entry gives its "chunkOffset" in the file);
 * a 51-byte footer, an empty gzip member whose Extra field is
 * "SG", 22, "%016xSTARGZ", names the TOC member's offset.
 *
 * The layer descriptor's annotation containerd.io/snapshot/stargz/
 * toc.digest, the sha256 of the TOC JSON, is its only trust anchor (as
 * in stargz-snapshotter's verification.md): a layer without it is
 * unpacked in full, never mounted from a footer, and a TOC that does not
 * hash to it is refused. A file's content ends where the next file's or
 * chunk's member starts (or the TOC's): offsets must rise strictly and
 * lie before the TOC, so no read is steered into another file's bytes;
 * what is decompressed from there is checked against each chunk's
 * chunkDigest (a file's last or only chunk has no chunkSize: it runs to
 * the file's end) and the file's digest before anything is served.
 * Files sharing a member (innerOffset, from --estargz-min-chunk-size) are
 * not read lazily: unpacked in full.
 *
 * .prefetch.landmark ends the files to fetch first (content table
 * header "prefetch"); .no.prefetch.landmark asks for no background
 * fill. Both, and stargz.index.json, are hidden (unpack.c says why).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "toc.h"
#include "unpack.h"

#define FOOTER_SIZE 51
#define TAR_BLOCK 512

int strata_esgz_locate(const struct strata_layer *l)
{
	if (l->compression != STRATA_COMP_GZIP || !l->toc_digest ||
	    l->toc_position || strncmp(l->toc_digest, "sha256:", 7) ||
	    strata_digest_validate(l->toc_digest, strlen(l->toc_digest)) < 0)
		return -EOPNOTSUPP;
	return 0;
}

/* The TOC member's offset from the footer at the end of @buf. */
static int parse_footer(const unsigned char *f, uint64_t *off)
{
	char hex[17];
	size_t i;

	if (f[0] != 0x1f || f[1] != 0x8b || f[2] != 8 || !(f[3] & 4) ||
	    f[10] != 26 || f[11] != 0 || f[12] != 'S' || f[13] != 'G' ||
	    f[14] != 22 || f[15] != 0 || memcmp(f + 32, "STARGZ", 6))
		return -EINVAL;
	memcpy(hex, f + 16, 16);
	hex[16] = '\0';
	for (i = 0; i < 16; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') ||
		      (hex[i] >= 'a' && hex[i] <= 'f')))
			return -EINVAL;
	*off = strtoull(hex, NULL, 16);
	return 0;
}

/* Inflate the one gzip member @in (@len bytes), all of it, into *@out
 * (allocated, grown as needed up to @cap bytes, one more for a NUL).
 * Return: the bytes made, -EBADMSG, -ENOMEM. */
static ssize_t gunzip_member(const unsigned char *in, size_t len,
			     unsigned char **out, size_t cap)
{
	z_stream g = { 0 };
	size_t have = 0, size = 64u << 10;
	ssize_t ret = -EBADMSG;
	int zr = Z_OK;

	if (inflateInit2(&g, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	g.next_in = (unsigned char *)in;
	g.avail_in = (uInt)len;
	while (zr == Z_OK) {
		unsigned char *p = realloc(*out, size + 1);

		if (!p) {
			ret = -ENOMEM;
			break;
		}
		*out = p;
		g.next_out = p + have;
		g.avail_out = (uInt)(size - have);
		zr = inflate(&g, Z_NO_FLUSH);
		have = size - g.avail_out;
		if (zr == Z_STREAM_END && g.avail_in == 0)
			ret = (ssize_t)have;
		else if (zr == Z_OK && have == size && size < cap)
			size = size * 2 < cap ? size * 2 : cap;
		else if (zr == Z_OK)
			zr = Z_DATA_ERROR;	/* over @cap, or cut short */
	}
	inflateEnd(&g);
	return ret;
}

/* An octal tar header number field. */
static int tar_octal(const unsigned char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < n && p[i] == ' ')
		i++;
	for (; i < n && p[i] >= '0' && p[i] <= '7'; i++) {
		if (v >> 60)
			return -EINVAL;
		v = v << 3 | (uint64_t)(p[i] - '0');
	}
	if (i < n && p[i] != ' ' && p[i] != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

/* Read the TOC member, check the JSON against the annotation. *json
 * (NUL-terminated, @len bytes) points into *buf, freed by the caller. */
static int read_toc(struct strata_range_src *src, const struct strata_layer *l,
		    const char *sd, uint64_t *toc_off, unsigned char **buf,
		    char **json, size_t *len, struct strata_err *err)
{
	unsigned char foot[FOOTER_SIZE];
	cleanup_free unsigned char *c = NULL;
	char got[STRATA_DIGEST_MAX];
	size_t clen, cap = STRATA_TOC_MAX + 4 * TAR_BLOCK;
	uint64_t jlen;
	ssize_t n;
	int r;

	if (l->size <= FOOTER_SIZE)
		goto no_footer;
	r = src->read(src, foot, FOOTER_SIZE, (uint64_t)l->size - FOOTER_SIZE);
	if (r < 0)
		return strata_err_set(err, r, "layer %s: reading the eStargz "
				      "footer: %s", sd, strerror(-r));
	if (parse_footer(foot, toc_off) < 0 ||
	    *toc_off >= (uint64_t)l->size - FOOTER_SIZE)
		goto no_footer;
	clen = (size_t)((uint64_t)l->size - FOOTER_SIZE - *toc_off);
	if (clen > STRATA_TOC_MAX) {
		strata_warn("layer %s: eStargz table of contents of %zu bytes "
			    "is over the %u-byte limit: unpacking the layer in "
			    "full", sd, clen, STRATA_TOC_MAX);
		return -EOPNOTSUPP;
	}
	c = malloc(clen);
	if (!c)
		return -ENOMEM;
	r = src->read(src, c, clen, *toc_off);
	if (r < 0)
		return strata_err_set(err, r, "layer %s: reading the table of "
				      "contents: %s", sd, strerror(-r));
	n = gunzip_member(c, clen, buf, cap);
	if (n == -ENOMEM)
		return -ENOMEM;
	/* a tar header named stargz.index.json, its size, the JSON */
	if (n < TAR_BLOCK || memchr(*buf, '\0', 100) == NULL ||
	    strcmp((char *)*buf, "stargz.index.json") ||
	    ((*buf)[156] != '0' && (*buf)[156] != '\0') ||
	    tar_octal(*buf + 124, 12, &jlen) < 0 ||
	    jlen > (uint64_t)n - TAR_BLOCK)
		return strata_err_set(err, -EBADMSG, "layer %s: the eStargz "
				      "footer does not lead to a "
				      "stargz.index.json entry", sd);
	*json = (char *)*buf + TAR_BLOCK;
	*len = (size_t)jlen;
	strata_sha256(*json, *len, got);
	if (strcmp(got, l->toc_digest))
		return strata_err_set(err, -EBADMSG, "layer %s: eStargz table "
				      "of contents does not match the "
				      "manifest's toc.digest %s (it hashes to "
				      "%s): refused (-o lazy=0 unpacks the "
				      "layer in full, verified by its digest)",
				      sd, l->toc_digest, got);
	(*json)[*len] = '\0';
	return 0;
no_footer:
	strata_warn("layer %s: toc.digest annotation but no eStargz footer: "
		    "unpacking the layer in full", sd);
	return -EOPNOTSUPP;
}

/* Files sharing a gzip member: not read lazily. */
static int shared_member(struct strata_toc_build *bd,
			 const struct strata_toc_entry *e)
{
	if (!TE_HAS(e, TE_INNER_OFFSET) || e->n[TE_INNER_OFFSET] == 0)
		return 0;
	strata_warn("layer %s: eStargz files share gzip members "
		    "(innerOffset): unpacking the layer in full", bd->sd);
	return -EOPNOTSUPP;
}

/* The member of a file's content (@file) or chunk starts at @off; a
 * file's ends the previous file's range. */
static int next_member(struct strata_toc_build *bd, const char *name,
		       uint64_t off, bool file)
{
	if (off <= bd->last_off || off >= bd->toc_start)
		return strata_toc_entry_err(bd, name, "content offset lies "
					    "outside the layer's data or "
					    "before the previous file's");
	if (file && bd->n_recs && bd->recs[bd->n_recs - 1].end == 0)
		bd->recs[bd->n_recs - 1].end = off;
	bd->last_off = off;
	return 0;
}

static int content(struct strata_toc_build *bd,
		   const struct strata_toc_entry *e, uint64_t size,
		   uint64_t *off, uint64_t *end)
{
	const char *name = e->s[TE_NAME];
	int r = shared_member(bd, e);

	(void)size;
	if (r < 0)
		return r;
	if (!TE_HAS(e, TE_OFFSET))
		return strata_toc_entry_err(bd, name, "no content offset");
	if (TE_HAS(e, TE_CHUNK_OFFSET) && e->n[TE_CHUNK_OFFSET])
		return strata_toc_entry_err(bd, name, "its first chunk does "
					    "not start the file");
	r = next_member(bd, name, (uint64_t)e->n[TE_OFFSET], true);
	if (r < 0)
		return r;
	if (strata_esgz_meta_name(name, 1) && !bd->prefetch)
		bd->prefetch = (uint32_t)bd->n_recs;
	if (strata_esgz_meta_name(name, 2))
		bd->prefetch = STRATA_LZ_NO_PREFETCH;
	*off = (uint64_t)e->n[TE_OFFSET];
	*end = 0;		/* where the next member starts */
	return 0;
}

static int chunk(struct strata_toc_build *bd, const struct strata_toc_entry *e)
{
	const char *name = e->s[TE_NAME];
	int r = shared_member(bd, e);

	if (r < 0)
		return r;
	if (!TE_HAS(e, TE_OFFSET))
		return strata_toc_entry_err(bd, name, "chunk without an "
					    "offset");
	return next_member(bd, name, (uint64_t)e->n[TE_OFFSET], false);
}

static int finish(struct strata_toc_build *bd)
{
	if (bd->n_recs && bd->recs[bd->n_recs - 1].end == 0)
		bd->recs[bd->n_recs - 1].end = bd->toc_start;
	strata_lxbuild_hide_esgz(bd->b);
	return 0;
}

/* The reader's callbacks in @bd, and the layer's TOC read into *@buf
 * (*@json, *@len within it); @sd holds the short digest @bd names. */
static int load_toc(struct strata_range_src *src,
		    const struct strata_layer *l, struct strata_toc_build *bd,
		    char sd[32], unsigned char **buf, char **json, size_t *len)
{
	bd->format = "eStargz";
	bd->content = content;
	bd->chunk = chunk;
	bd->chunk_rest = true;
	strata_short_digest(l->digest, sd, 32);
	bd->sd = sd;
	return read_toc(src, l, sd, &bd->toc_start, buf, json, len, bd->err);
}

int strata_esgz_build(struct strata_range_src *src,
		      const struct strata_layer *l, uint64_t max_bytes,
		      uint64_t max_entries, int dest_fd, struct strata_err *err)
{
	cleanup_free unsigned char *buf = NULL;
	struct strata_toc_build bd = {
		.err = err, .max_bytes = max_bytes, .finish = finish,
	};
	char sd[32], *json = NULL;
	size_t len = 0;
	int r = load_toc(src, l, &bd, sd, &buf, &json, &len);

	return r < 0 ? r : strata_toc_read(&bd, json, len, l->digest,
					   max_entries, dest_fd);
}

int strata_esgz_metas(struct strata_range_src *src,
		      const struct strata_layer *l,
		      struct strata_lz_meta **metas, size_t *n,
		      struct strata_err *err)
{
	cleanup_free unsigned char *buf = NULL;
	struct strata_toc_build bd = { .err = err, .max_bytes = UINT64_MAX };
	char sd[32], *json = NULL;
	size_t len = 0;
	int r = load_toc(src, l, &bd, sd, &buf, &json, &len);

	if (r == -EOPNOTSUPP)
		r = strata_err_set(err, -EBADMSG, "layer %s: the eStargz "
				   "table of contents is gone", sd);
	return r < 0 ? r : strata_toc_metas(&bd, json, len, metas, n);
}
