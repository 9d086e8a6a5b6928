/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The table of contents of a zstd:chunked layer (containers/storage
 * pkg/chunked): the layer is an ordinary zstd-compressed tar, but every
 * file's content starts a new zstd frame, and a zstd skippable frame near
 * the end holds the TOC, zstd-compressed JSON:
 *
 *   {"version": 1, "entries": [{"type": "reg", "name": "bin/sh",
 *     "mode": 493, "size": 123, "uid": 0, "gid": 0,
 *     "modtime": "RFC 3339", "linkName": "...", "devMajor": 0,
 *     "devMinor": 0, "xattrs": {"user.x": "base64"},
 *     "digest": "sha256:...", "offset": N, "endOffset": M, ...}, ...]}
 *
 * with types reg, hardlink, symlink, dir, char, block, fifo, and "chunk"
 * entries that split a large file (its frames between offset and
 * endOffset; "digest" covers the whole uncompressed file, and that is
 * what a fill checks). The manifest's layer descriptor locates the TOC
 * ("…zstd-chunked.manifest-position": offset:length:uncompressed
 * length:1) and names its sha256 ("…zstd-chunked.manifest-checksum", of
 * the compressed bytes): the checksum is the TOC's only trust anchor, so
 * a layer without it is unpacked in full, never mounted from a footer.
 *
 * The TOC is as hostile as a tar: each entry goes through the same checks
 * as a tar entry (unpack.c: "..", absolute names, links out of the layer,
 * whiteouts, limits), and every content range must lie inside the blob,
 * before the TOC, in order and without overlap, so no read of one file
 * can be steered into another's bytes or past the end.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "lazy.h"
#include "tarscan.h"
#include "unpack.h"

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

/* Read, verify and decompress the TOC. Caller frees *out. */
static int read_toc(struct strata_range_src *src, const struct strata_layer *l,
		    const struct strata_zc_pos *pos, const char *sd,
		    char **out, struct strata_err *err)
{
	static const unsigned char skip_magic[4] = { 0x50, 0x2a, 0x4d, 0x18 };
	cleanup_free unsigned char *c = malloc(pos->len + 8);
	cleanup_free char *u = malloc(pos->ulen + 1);
	char got[STRATA_DIGEST_MAX];
	uint32_t flen;
	size_t n;
	int r;

	if (!c || !u)
		return -ENOMEM;
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
	*out = u;
	u = NULL;
	return 0;
}

/* "2026-12-02T08:28:34.5Z", "…+02:00" -> seconds and nanoseconds */
static int parse_time(const char *s, int64_t *sec, uint32_t *nsec)
{
	struct tm tm;
	const char *p;
	long off = 0;
	uint32_t ns = 0, scale = 100000000;

	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -EINVAL;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
			ns += (uint32_t)(*p - '0') * scale;
	if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 +
		      ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
		if (*p == '-')
			off = -off;
	} else if (strcmp(p, "Z")) {
		return -EINVAL;
	}
	*sec = (int64_t)timegm(&tm) - off;
	*nsec = ns;
	return 0;
}

/* Xattrs {"name": base64} as tarscan's records (u16 name length, u32
 * value length, little endian, name, value). Caller frees *out. */
static int xattr_records(struct json_object *x, unsigned char **out,
			 size_t *len)
{
	unsigned char *buf = NULL, *nb;
	size_t n = 0;

	json_object_object_foreach(x, key, val) {
		const char *b64;
		size_t klen = strlen(key), blen;
		int vlen;

		if (!json_object_is_type(val, json_type_string) ||
		    klen > 255) {
			free(buf);
			return -EBADMSG;
		}
		b64 = json_object_get_string(val);
		blen = strlen(b64);
		if (blen % 4 || blen > 4 * 65536 / 3 + 4) {
			free(buf);
			return -EBADMSG;
		}
		nb = realloc(buf, n + 6 + klen + blen / 4 * 3 + 1);
		if (!nb) {
			free(buf);
			return -ENOMEM;
		}
		buf = nb;
		vlen = EVP_DecodeBlock(buf + n + 6 + klen,
				       (const unsigned char *)b64, (int)blen);
		if (vlen < 0) {
			free(buf);
			return -EBADMSG;
		}
		if (blen && b64[blen - 1] == '=')
			vlen -= b64[blen - 2] == '=' ? 2 : 1;
		buf[n] = (unsigned char)klen;
		buf[n + 1] = (unsigned char)(klen >> 8);
		buf[n + 2] = (unsigned char)vlen;
		buf[n + 3] = (unsigned char)(vlen >> 8);
		buf[n + 4] = (unsigned char)(vlen >> 16);
		buf[n + 5] = (unsigned char)(vlen >> 24);
		memcpy(buf + n + 6, key, klen);
		n += 6 + klen + (size_t)vlen;
	}
	*out = buf;
	*len = n;
	return 0;
}

static char type_flag(const char *t)
{
	static const struct {
		const char *name;
		char flag;
	} types[] = {
		{ "reg", '0' }, { "hardlink", '1' }, { "symlink", '2' },
		{ "char", '3' }, { "block", '4' }, { "dir", '5' },
		{ "fifo", '6' },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(types); i++)
		if (!strcmp(t, types[i].name))
			return types[i].flag;
	return 0;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f'
	       ? c - 'a' + 10 : -1;
}

/* @hex: lower-case (strata_digest_validate checked it) */
static int hex_bytes(const char *hex, uint8_t *out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

struct build {
	struct strata_lxbuild *b;
	const char *sd;
	struct strata_err *err;
	uint64_t toc_start;	/* content ranges end before this */
	uint64_t prev_end;	/* of the last content range */
	uint64_t total, max_bytes;
	struct strata_lz_rec *recs;
	size_t n_recs, cap_recs;
	char *names;
	size_t names_len, names_cap;
	const char *reg_name;	/* the regular file "chunk" entries follow */
	uint64_t reg_off, reg_end;
};

static int entry_err(struct build *bd, const char *name, const char *why)
{
	char p[300];

	strata_printable(name ? name : "", SIZE_MAX, p, sizeof(p));
	return strata_err_set(bd->err, -EBADMSG, "layer %s: table of contents "
			      "entry %s: %s", bd->sd, name ? p : "(no name)",
			      why);
}

static int add_rec(struct build *bd, const char *name, uint64_t off,
		   uint64_t end, uint64_t size, const char *digest)
{
	struct strata_lz_rec *r;
	size_t nlen = strlen(name);

	if (bd->n_recs == bd->cap_recs) {
		size_t c = bd->cap_recs ? bd->cap_recs * 2 : 256;
		void *p = realloc(bd->recs, c * sizeof(*bd->recs));

		if (!p)
			return -ENOMEM;
		bd->recs = p;
		bd->cap_recs = c;
	}
	if (bd->names_len + nlen + 1 > bd->names_cap) {
		size_t c = bd->names_cap ? bd->names_cap * 2 : 4096;
		void *p;

		while (c < bd->names_len + nlen + 1)
			c *= 2;
		p = realloc(bd->names, c);
		if (!p)
			return -ENOMEM;
		bd->names = p;
		bd->names_cap = c;
	}
	if (bd->names_len + nlen + 1 > UINT32_MAX)
		return -EFBIG;
	r = &bd->recs[bd->n_recs++];
	memset(r, 0, sizeof(*r));
	r->off = off;
	r->end = end;
	r->size = size;
	r->name_off = (uint32_t)bd->names_len;
	hex_bytes(digest + 7, r->sha256, 32);
	memcpy(bd->names + bd->names_len, name, nlen + 1);
	bd->names_len += nlen + 1;
	return 0;
}

/* A "chunk" entry: part of the regular file before it, inside its range. */
static int check_chunk(struct build *bd, struct json_object *e,
		       const char *name)
{
	int64_t off = 0;
	int r;

	if (!bd->reg_name || strcmp(name, bd->reg_name))
		return entry_err(bd, name, "chunk of no file before it");
	r = strata_json_int64(e, "offset", false, 0, INT64_MAX, &off, name,
			      bd->err);
	if (r < 0 && r != -ENOENT)
		return r;
	if ((uint64_t)off < bd->reg_off || (uint64_t)off >= bd->reg_end)
		return entry_err(bd, name, "chunk outside its file's range");
	return 0;
}

/* The content range and digest of a non-empty regular file. */
static int content_range(struct build *bd, struct json_object *e,
			 const char *name, uint64_t size, uint64_t *off,
			 uint64_t *end, const char **digest)
{
	int64_t o = 0, en = 0;
	int r;

	if ((r = strata_json_int64(e, "offset", true, 0, INT64_MAX, &o, name,
				   bd->err)) < 0 ||
	    (r = strata_json_int64(e, "endOffset", true, 0, INT64_MAX, &en,
				   name, bd->err)) < 0 ||
	    (r = strata_json_string(e, "digest", true, digest, name,
				    bd->err)) < 0)
		return r == -ENOENT ? entry_err(bd, name, "no content range "
						"or digest") : r;
	if (strncmp(*digest, "sha256:", 7) ||
	    strata_digest_validate(*digest, strlen(*digest)) < 0)
		return entry_err(bd, name, "digest is not a sha256 digest");
	if (en <= o || (uint64_t)en > bd->toc_start)
		return entry_err(bd, name, "content range lies outside the "
				 "layer's data");
	if ((uint64_t)o < bd->prev_end)
		return entry_err(bd, name, "content range overlaps or comes "
				 "before the previous file's");
	bd->total += size;
	if (bd->total > bd->max_bytes)
		return entry_err(bd, name, "the layer's files are larger than "
				 "the limit (decompression bomb?)");
	*off = (uint64_t)o;
	*end = (uint64_t)en;
	bd->prev_end = *end;
	return 0;
}

static int add_entry(struct build *bd, struct json_object *e)
{
	struct strata_tar_entry g;
	const char *type, *name, *link = NULL, *mt = NULL, *digest = NULL;
	struct json_object *x = NULL;
	cleanup_free unsigned char *xr = NULL;
	uint64_t off = 0, end = 0;
	uint32_t data_id;
	int r;

	memset(&g, 0, sizeof(g));
	if (!json_object_is_type(e, json_type_object))
		return entry_err(bd, NULL, "not an object");
	if ((r = strata_json_string(e, "type", true, &type, "entry",
				    bd->err)) < 0 ||
	    (r = strata_json_string(e, "name", true, &name, "entry",
				    bd->err)) < 0)
		return r;
	if (!strcmp(type, "chunk"))
		return check_chunk(bd, e, name);
	g.type = type_flag(type);
	if (!g.type)
		return entry_err(bd, name, "unknown entry type");
	g.name = (char *)name;
	if ((r = strata_json_string(e, "linkName", false, &link, name,
				    bd->err)) < 0 && r != -ENOENT)
		return r;
	g.link = (char *)link;
	if ((g.type == '1' || g.type == '2') && !link)
		return entry_err(bd, name, "link without a target");
	if ((r = strata_json_int64(e, "mode", false, 0, 07777777, &g.mode,
				   name, bd->err)) < 0 && r != -ENOENT)
		return r;
	if ((r = strata_json_int64(e, "size", false, 0, INT64_MAX, &g.size,
				   name, bd->err)) < 0 && r != -ENOENT)
		return r;
	if ((r = strata_json_int64(e, "uid", false, 0, 0xfffffffe, &g.uid,
				   name, bd->err)) < 0 && r != -ENOENT)
		return r;
	if ((r = strata_json_int64(e, "gid", false, 0, 0xfffffffe, &g.gid,
				   name, bd->err)) < 0 && r != -ENOENT)
		return r;
	if ((r = strata_json_int64(e, "devMajor", false, 0, INT64_MAX,
				   &g.devmajor, name, bd->err)) < 0 &&
	    r != -ENOENT)
		return r;
	if ((r = strata_json_int64(e, "devMinor", false, 0, INT64_MAX,
				   &g.devminor, name, bd->err)) < 0 &&
	    r != -ENOENT)
		return r;
	if ((r = strata_json_string(e, "modtime", false, &mt, name,
				    bd->err)) < 0 && r != -ENOENT)
		return r;
	if (mt && parse_time(mt, &g.mtime_sec, &g.mtime_nsec) < 0)
		return entry_err(bd, name, "modtime is not an RFC 3339 time");
	if ((r = strata_json_object(e, "xattrs", false, &x, name,
				    bd->err)) < 0 && r != -ENOENT)
		return r;
	if (x) {
		r = xattr_records(x, &xr, &g.xattrs_len);
		if (r < 0)
			return r == -ENOMEM ? r : entry_err(bd, name, "invalid "
							    "extended attribute");
		g.xattrs = xr;
	}
	if (g.type != '0')
		g.size = 0;
	if (g.type == '0' && g.size > 0) {
		r = content_range(bd, e, name, (uint64_t)g.size, &off, &end,
				  &digest);
		if (r < 0)
			return r;
		bd->reg_name = name;
		bd->reg_off = off;
		bd->reg_end = end;
	}
	r = strata_lxbuild_add(bd->b, &g, &data_id);
	if (r < 0 || !data_id)
		return r;
	if (data_id != bd->n_recs + 1)
		return -EINVAL;	/* content numbers are given in order */
	return add_rec(bd, name, off, end, (uint64_t)g.size, digest);
}

static int write_contents(struct build *bd, int dest_fd)
{
	struct strata_lz_header h;
	cleanup_fd int fd = -1;
	size_t rb = bd->n_recs * sizeof(*bd->recs);
	int r;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, STRATA_LZ_MAGIC, 8);
	h.n = (uint32_t)bd->n_recs;
	h.names_off = sizeof(h) + rb;
	h.names_len = bd->names_len;
	h.file_size = h.names_off + h.names_len;
	fd = openat(dest_fd, "contents", O_WRONLY | O_CREAT | O_TRUNC |
		    O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if ((r = strata_write_all(fd, &h, sizeof(h))) < 0 ||
	    (r = strata_write_all(fd, bd->recs ? (void *)bd->recs : "", rb)) < 0 ||
	    (r = strata_write_all(fd, bd->names ? bd->names : "",
				  bd->names_len)) < 0)
		return r;
	return fsync(fd) < 0 ? -errno : 0;
}

int strata_zc_build(struct strata_range_src *src, const struct strata_layer *l,
		    const struct strata_zc_pos *pos, uint64_t max_bytes,
		    uint64_t max_entries, int dest_fd, struct strata_err *err)
{
	cleanup_free char *toc = NULL;
	struct json_object *doc = NULL, *entries;
	struct build bd = { .err = err, .max_bytes = max_bytes };
	char sd[32];
	int64_t version;
	size_t i, n;
	int r;

	strata_short_digest(l->digest, sd, sizeof(sd));
	bd.sd = sd;
	bd.toc_start = pos->off - 8;
	r = read_toc(src, l, pos, sd, &toc, err);
	if (r < 0)
		return r;
	r = strata_json_parse_max(toc, pos->ulen, STRATA_TOC_MAX,
				  "zstd:chunked table of contents", &doc, err);
	if (r < 0)
		return strata_err_wrap(err, r, "layer %s", sd);
	r = strata_json_int64(doc, "version", true, 0, INT64_MAX, &version,
			      "table of contents", err);
	if (r == 0 && version != 1) {
		strata_warn("layer %s: zstd:chunked table of contents version "
			    "%lld is unknown: unpacking the layer in full", sd,
			    (long long)version);
		r = -EOPNOTSUPP;
	}
	if (r == 0)
		r = strata_json_array(doc, "entries", true, &entries,
				      "table of contents", err);
	if (r == 0)
		r = strata_lxbuild_new(l->digest, max_entries, err, &bd.b);
	n = r == 0 ? json_object_array_length(entries) : 0;
	for (i = 0; r == 0 && i < n; i++)
		r = add_entry(&bd, json_object_array_get_idx(entries, i));
	if (r == 0)
		r = strata_lxbuild_finish(bd.b, dest_fd);
	if (r == 0 && mkdirat(dest_fd, "data", 0755) < 0)
		r = -errno;
	if (r == 0)
		r = write_contents(&bd, dest_fd);
	if (r < 0 && !strata_err_isset(err))
		strata_err_set(err, r, "layer %s: table of contents: %s", sd,
			       strerror(-r));
	strata_lxbuild_free(bd.b);
	json_object_put(doc);
	free(bd.recs);
	free(bd.names);
	return r;
}
