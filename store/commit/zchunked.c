/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zstd:chunked layers for commit: containers/storage's format, as
 * Debian's skopeo 1.9 writes it and podman 4.3 reads it for a partial
 * pull (enable_partial_images).
 *
 * The blob is a plain zstd stream of the layer tar (zstd -d gives the tar
 * byte for byte, so the diff_id is unchanged), cut into frames so that
 * every regular file's content starts a frame of its own and ends one;
 * content is further cut into chunks, each its own frame, where bup's
 * rolling checksum (window 64, 16 bits: about 64 KiB chunks) says so, as
 * containers/storage cuts them, and at the latest every CHUNK_MAX bytes.
 * Tar headers and padding go in the frames between. After the last frame
 * come two zstd skippable frames (magic 0x184D2A50), ignored by
 * decompressors:
 *
 *   the TOC: {"version":1,"entries":[...]}, zstd-compressed; one entry
 *     per tar entry in tar order (name as in the tar header, metadata,
 *     xattr values in base64) and, for a regular file with content, its
 *     sha256 "digest", "offset" (its first frame in the blob) and
 *     "endOffset" (just past its last frame); a file in several chunks
 *     has "chunkSize"/"chunkDigest" for its first chunk and one "chunk"
 *     entry for each other (its "offset" in the blob, "chunkOffset" in
 *     the file, "chunkSize", "chunkDigest");
 *   the footer, 40 bytes: the TOC's offset (past the skippable frame's
 *     8-byte header), compressed and uncompressed length, type 1, each a
 *     little-endian uint64, then the magic "GnUlInUx".
 *
 * The manifest descriptor of the layer carries the same offset and
 * lengths as "io.containers.zstd-chunked.manifest-position"
 * ("OFFSET:LENGTH:UNCOMPRESSED:1") and the sha256 of the compressed TOC
 * bytes as "io.containers.zstd-chunked.manifest-checksum" (commit.c).
 *
 * Each frame is compressed in one call from a buffer (at most CHUNK_MAX
 * bytes of tar): the frame then records its size and small frames get
 * small tables. Same tar, same libzstd: same bytes.
 *
 * eStargz (stargz-snapshotter docs/estargz.md; read by estargz.c) is the
 * same cutting with gzip members for frames: the blob is a gzip stream of
 * members, every content chunk (fixed ESGZ_CHUNK bytes, as the estargz
 * Go writer cuts them) one member of its own that holds nothing else, tar
 * headers and padding in the members between. strata_tar_end() asks for
 * the TOC before the end-of-archive blocks: {"version":1,"entries":[...]}
 * as the tar entry stargz.index.json, which starts a member of its own
 * (holding the end-of-archive blocks too), so it is part of the tar and
 * of the diff_id; then the 51-byte footer, an empty gzip member whose
 * Extra field "SG" holds "%016xSTARGZ", the TOC member's offset. The
 * entries are the zstd:chunked ones without "endOffset": every file's
 * first entry has its first chunk's "chunkDigest". The manifest carries
 * containerd.io/snapshot/stargz/toc.digest (sha256 of the TOC JSON) and
 * io.containers.estargz.uncompressed-size (the tar's length).
 * Same tar, same zlib: same bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <zlib.h>
#include <zstd.h>

#include "commit.h"
#include "unpack.h"

#define ROLL_WINDOW 64
#define ROLL_CHAR_OFFSET 31
#define ROLL_BITS 16
/* A chunk ends here if the rolling checksum has not cut it yet (only
 * low-entropy data gets this far: a run of zeros never cuts). */
#define CHUNK_MAX (1u << 20)

#define SKIPPABLE_MAGIC 0x184D2A50u
#define FOOTER_LEN 40
#define TOC_TYPE_CRFS 1

#define ESGZ_CHUNK (4u << 20)	/* the estargz Go writer's default */
#define ESGZ_FOOTER_LEN 51
#define ESGZ_OUT (64u << 10)

#define ANN_ZCK_POSITION "io.containers.zstd-chunked.manifest-position"
#define ANN_ZCK_CHECKSUM "io.containers.zstd-chunked.manifest-checksum"
#define ANN_ESGZ_DIGEST "containerd.io/snapshot/stargz/toc.digest"
#define ANN_ESGZ_SIZE "io.containers.estargz.uncompressed-size"

struct rollsum {
	uint32_t s1, s2;
	unsigned char window[ROLL_WINDOW];
	unsigned wofs;
};

struct chunk {
	uint64_t file_off;	/* in the file's content */
	uint64_t size;
	int64_t blob_off;	/* its frame in the blob */
	char digest[STRATA_DIGEST_MAX];
};

struct strata_zck {
	ZSTD_CCtx *zc;
	unsigned char *fbuf;	/* the frame being gathered */
	size_t flen;
	unsigned char *zout;
	size_t zout_cap;
	int64_t blob_off;	/* compressed bytes written */
	/* the TOC text */
	char *toc;
	size_t toc_len, toc_cap;
	size_t n_entries;
	/* the regular file whose content is streaming */
	struct json_object *file;	/* its entry, completed at the end */
	char *file_name;
	uint64_t left;		/* content bytes still to come */
	uint64_t file_pos;
	struct rollsum rs;
	struct strata_hasher *h_file, *h_chunk;
	struct chunk *chunks;
	size_t n_chunks, cap_chunks;
	uint64_t chunk_start;	/* file offset of the chunk being gathered */
	/* eStargz: gzip members instead of zstd frames */
	bool esgz;
	z_stream zs;
	bool zs_init;
	bool member_open;
	int64_t member_off;	/* where the open member starts */
	bool in_toc;		/* stargz.index.json is being written */
	int64_t toc_off;
	char *toc_text;		/* the TOC JSON (eStargz) */
	size_t toc_text_len;
	uint64_t raw;		/* tar bytes */
	/* after finish: the annotations' values */
	char position[128];
	char checksum[STRATA_DIGEST_MAX];
	bool finished;
};

/* ---- bup's rolling checksum (also containers/storage's) ---- */

static void roll_init(struct rollsum *r)
{
	memset(r, 0, sizeof(*r));
	r->s1 = ROLL_WINDOW * ROLL_CHAR_OFFSET;
	r->s2 = ROLL_WINDOW * (ROLL_WINDOW - 1) * ROLL_CHAR_OFFSET;
}

/* Roll @c in; true when a chunk ends after it. */
static bool roll(struct rollsum *r, unsigned char c)
{
	const uint32_t mask = (1u << ROLL_BITS) - 1;
	unsigned char drop = r->window[r->wofs];

	r->s1 += (uint32_t)c - drop;
	r->s2 += r->s1 - ROLL_WINDOW * ((uint32_t)drop + ROLL_CHAR_OFFSET);
	r->window[r->wofs] = c;
	r->wofs = (r->wofs + 1) % ROLL_WINDOW;
	return (r->s2 & mask) == mask;
}

/* ---- frames ---- */

/* eStargz: deflate @n bytes (@flush Z_NO_FLUSH or Z_FINISH) into the
 * open member, out to the blob. */
static int deflate_out(struct strata_zck *z, struct strata_blobw *w,
		       const unsigned char *p, size_t n, int flush)
{
	z->zs.next_in = (unsigned char *)p;
	z->zs.avail_in = (uInt)n;
	for (;;) {
		int zr, r;
		size_t got;

		z->zs.next_out = z->zout;
		z->zs.avail_out = (uInt)z->zout_cap;
		zr = deflate(&z->zs, flush);
		if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
			return -EIO;
		got = z->zout_cap - z->zs.avail_out;
		r = strata_blobw_out(w, z->zout, got);
		if (r < 0)
			return r;
		z->blob_off += (int64_t)got;
		if (flush == Z_FINISH ? zr == Z_STREAM_END
				      : z->zs.avail_in == 0 && got < z->zout_cap)
			return 0;
	}
}

/* Tar bytes into the frame (zstd: the caller keeps a frame within
 * CHUNK_MAX) or the member (eStargz: one is started if none is open). */
static int put(struct strata_zck *z, struct strata_blobw *w,
	       const unsigned char *p, size_t n)
{
	if (!z->esgz) {
		memcpy(z->fbuf + z->flen, p, n);
		z->flen += n;
		return 0;
	}
	if (!n)
		return 0;
	if (!z->member_open) {
		if (deflateReset(&z->zs) != Z_OK)
			return -EIO;
		z->member_open = true;
		z->member_off = z->blob_off;
	}
	while (n > 0) {
		size_t take = n > (1u << 30) ? 1u << 30 : n;
		int r = deflate_out(z, w, p, take, Z_NO_FLUSH);

		if (r < 0)
			return r;
		p += take;
		n -= take;
	}
	return 0;
}

/* Compress what was gathered as one frame, if anything was (eStargz: end
 * the open member). */
static int frame_end(struct strata_zck *z, struct strata_blobw *w)
{
	size_t n;
	int r;

	if (z->esgz) {
		if (!z->member_open)
			return 0;
		z->member_open = false;
		return deflate_out(z, w, NULL, 0, Z_FINISH);
	}
	if (!z->flen)
		return 0;
	n = ZSTD_compress2(z->zc, z->zout, z->zout_cap, z->fbuf, z->flen);
	if (ZSTD_isError(n))
		return -EIO;
	z->flen = 0;
	r = strata_blobw_out(w, z->zout, n);
	if (r < 0)
		return r;
	z->blob_off += (int64_t)n;
	return 0;
}

static int gather(struct strata_zck *z, struct strata_blobw *w,
		  const unsigned char *p, size_t n)
{
	if (z->esgz)	/* a member between contents may be any length */
		return put(z, w, p, n);
	while (n > 0) {
		size_t take = CHUNK_MAX - z->flen;
		int r;

		if (take > n)
			take = n;
		memcpy(z->fbuf + z->flen, p, take);
		z->flen += take;
		p += take;
		n -= take;
		/* between contents a frame may end anywhere: nothing
		 * points into it */
		if (z->flen == CHUNK_MAX) {
			r = frame_end(z, w);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int skippable(struct strata_blobw *w, const void *p, size_t n)
{
	unsigned char hdr[8];
	int i, r;

	for (i = 0; i < 4; i++) {
		hdr[i] = (unsigned char)(SKIPPABLE_MAGIC >> (8 * i));
		hdr[4 + i] = (unsigned char)((uint32_t)n >> (8 * i));
	}
	r = strata_blobw_out(w, hdr, sizeof(hdr));
	return r < 0 ? r : strata_blobw_out(w, p, n);
}

/* ---- the TOC ---- */

static int toc_add(struct strata_zck *z, struct json_object *e)
{
	size_t len, need;
	const char *s = json_object_to_json_string_length(
		e, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
		&len);

	if (!s)
		return -ENOMEM;
	need = z->toc_len + len + 4;
	if (need > z->toc_cap) {
		size_t cap = need * 2;
		char *nt = realloc(z->toc, cap);

		if (!nt)
			return -ENOMEM;
		z->toc = nt;
		z->toc_cap = cap;
	}
	if (z->n_entries++)
		z->toc[z->toc_len++] = ',';
	memcpy(z->toc + z->toc_len, s, len);
	z->toc_len += len;
	return 0;
}

static void add_str(struct json_object *e, const char *k, const char *v)
{
	json_object_object_add(e, k, json_object_new_string(v));
}

static void add_int(struct json_object *e, const char *k, int64_t v)
{
	if (v)	/* Go's omitempty, as containers/storage writes it */
		json_object_object_add(e, k, json_object_new_int64(v));
}

/* RFC 3339 with nanoseconds, trailing zeros dropped (Go's time.Time). */
static void add_time(struct json_object *e, const char *k, int64_t sec,
		     uint32_t nsec)
{
	time_t t = (time_t)sec;
	struct tm tm;
	char buf[64];
	size_t n;

	if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 ||
	    tm.tm_year + 1900 < 0)
		return;		/* Go cannot read it: leave it out */
	n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	if (nsec) {
		int m = snprintf(buf + n, sizeof(buf) - n, ".%09u", nsec);

		while (m > 1 && buf[n + (size_t)m - 1] == '0')
			m--;
		n += (size_t)m;
	}
	snprintf(buf + n, sizeof(buf) - n, "Z");
	add_str(e, k, buf);
}

static const char *toc_type(char t)
{
	switch (t) {
	case '0': return "reg";
	case '1': return "hardlink";
	case '2': return "symlink";
	case '3': return "char";
	case '4': return "block";
	case '5': return "dir";
	case '6': return "fifo";
	}
	return NULL;
}

static int add_xattrs(struct json_object *e, const struct strata_tar_hdr *h)
{
	struct json_object *x;
	size_t i;

	if (!h->n_xattrs)
		return 0;
	x = json_object_new_object();
	json_object_object_add(e, "xattrs", x);
	for (i = 0; i < h->n_xattrs; i++) {
		size_t len = h->xattrs[i].len;
		cleanup_free char *b64 = malloc(4 * ((len + 2) / 3) + 1);

		if (!b64)
			return -ENOMEM;
		EVP_EncodeBlock((unsigned char *)b64, h->xattrs[i].value,
				(int)len);
		add_str(x, h->xattrs[i].name, b64);
	}
	return 0;
}

static struct json_object *entry_new(const struct strata_tar_hdr *h,
				     const char *name)
{
	struct json_object *e = json_object_new_object();
	const char *type = toc_type(h->type);

	if (!e || !type) {
		json_object_put(e);
		return NULL;
	}
	add_str(e, "type", type);
	add_str(e, "name", name);
	if (h->linkname && (h->type == '1' || h->type == '2'))
		add_str(e, "linkName", h->linkname);
	add_int(e, "mode", h->mode & 07777);
	if (h->type == '0')
		add_int(e, "size", (int64_t)h->size);
	add_int(e, "uid", h->uid);
	add_int(e, "gid", h->gid);
	/* the tar's mtime (before 1970 too: its PAX record has it) */
	add_time(e, "modtime", h->mtime_sec, h->mtime_nsec);
	if (h->type == '3' || h->type == '4') {
		add_int(e, "devMajor", h->devmajor);
		add_int(e, "devMinor", h->devminor);
	}
	if (add_xattrs(e, h) < 0) {
		json_object_put(e);
		return NULL;
	}
	return e;
}

/* ---- content ---- */

static int chunk_end(struct strata_zck *z, struct strata_blobw *w)
{
	struct chunk *c;
	/* zstd: the frame is written below; eStargz: it was started */
	int64_t off = z->esgz ? z->member_off : z->blob_off;
	int r;

	if (z->file_pos == z->chunk_start)
		return 0;
	r = frame_end(z, w);
	if (r < 0)
		return r;
	if (z->n_chunks == z->cap_chunks) {
		size_t cap = z->cap_chunks ? z->cap_chunks * 2 : 8;
		struct chunk *nc = realloc(z->chunks, cap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		z->chunks = nc;
		z->cap_chunks = cap;
	}
	c = &z->chunks[z->n_chunks++];
	c->file_off = z->chunk_start;
	c->size = z->file_pos - z->chunk_start;
	c->blob_off = off;
	strata_hasher_final(z->h_chunk, c->digest);
	strata_hasher_free(z->h_chunk);
	z->h_chunk = NULL;
	z->chunk_start = z->file_pos;
	return strata_hasher_new_alg("sha256", &z->h_chunk);
}

/* The file's content is complete: its TOC entries. */
static int file_end(struct strata_zck *z)
{
	char digest[STRATA_DIGEST_MAX];
	struct json_object *e = z->file;
	size_t i;
	int r;

	strata_hasher_final(z->h_file, digest);
	add_str(e, "digest", digest);
	add_int(e, "offset", z->chunks[0].blob_off);
	if (!z->esgz)
		add_int(e, "endOffset", z->blob_off);
	if (z->n_chunks > 1)
		add_int(e, "chunkSize", (int64_t)z->chunks[0].size);
	if (z->n_chunks > 1 || z->esgz)
		add_str(e, "chunkDigest", z->chunks[0].digest);
	r = toc_add(z, e);
	for (i = 1; r == 0 && i < z->n_chunks; i++) {
		const struct chunk *c = &z->chunks[i];
		struct json_object *ce = json_object_new_object();

		if (!ce)
			return -ENOMEM;
		add_str(ce, "type", "chunk");
		add_str(ce, "name", z->file_name);
		add_int(ce, "offset", c->blob_off);
		add_int(ce, "chunkSize", (int64_t)c->size);
		add_int(ce, "chunkOffset", (int64_t)c->file_off);
		add_str(ce, "chunkDigest", c->digest);
		r = toc_add(z, ce);
		json_object_put(ce);
	}
	json_object_put(z->file);
	z->file = NULL;
	free(z->file_name);
	z->file_name = NULL;
	strata_hasher_free(z->h_file);
	strata_hasher_free(z->h_chunk);
	z->h_file = z->h_chunk = NULL;
	return r;
}

static int content(struct strata_zck *z, struct strata_blobw *w,
		   const unsigned char *p, size_t n)
{
	size_t i, from = 0;
	int r;

	for (i = 0; i < n; i++) {
		uint64_t len = z->file_pos + (i + 1 - from) - z->chunk_start;
		bool cut = z->esgz ? len == ESGZ_CHUNK
				   : roll(&z->rs, p[i]) || len == CHUNK_MAX;

		if (!cut)
			continue;
		strata_hasher_update(z->h_file, p + from, i + 1 - from);
		strata_hasher_update(z->h_chunk, p + from, i + 1 - from);
		r = put(z, w, p + from, i + 1 - from);
		if (r < 0)
			return r;
		z->file_pos += i + 1 - from;
		from = i + 1;
		r = chunk_end(z, w);
		if (r < 0)
			return r;
	}
	strata_hasher_update(z->h_file, p + from, n - from);
	strata_hasher_update(z->h_chunk, p + from, n - from);
	z->file_pos += n - from;
	return put(z, w, p + from, n - from);
}

int strata_zck_data(struct strata_zck *z, struct strata_blobw *w,
		    const void *buf, size_t n)
{
	const unsigned char *p = buf;
	int r;

	z->raw += n;
	while (n > 0 && z->left > 0) {
		size_t take = n < z->left ? n : (size_t)z->left;

		r = content(z, w, p, take);
		if (r < 0)
			return r;
		p += take;
		n -= take;
		z->left -= take;
		if (z->left == 0) {
			r = chunk_end(z, w);
			if (r == 0)
				r = file_end(z);
			if (r < 0)
				return r;
		}
	}
	return gather(z, w, p, n);
}

/* Go's JSON decoder (podman's, skopeo's) turns bytes that are not UTF-8
 * into U+FFFD: a TOC naming them would make other files. */
static bool go_safe(const struct strata_tar_hdr *h, const char *name)
{
	size_t i;

	if (!strata_utf8_valid(name) ||
	    (h->linkname && !strata_utf8_valid(h->linkname)))
		return false;
	for (i = 0; i < h->n_xattrs; i++)
		if (!strata_utf8_valid(h->xattrs[i].name))
			return false;
	return true;
}

int strata_zck_entry(struct strata_zck *z, struct strata_blobw *w,
		     const struct strata_tar_hdr *h, const char *name)
{
	struct json_object *e;
	int r;

	if (z->file)
		return -EINVAL;	/* the last file's content is incomplete */
	if (z->in_toc)
		return 0;	/* stargz.index.json itself */
	if (!go_safe(h, name))
		return -EILSEQ;
	if (z->esgz && strata_esgz_meta_name(name, 0))
		return -EEXIST;	/* would be taken for the TOC */
	e = entry_new(h, name);
	if (!e)
		return -ENOMEM;
	if (h->type != '0' || h->size == 0) {
		r = toc_add(z, e);
		json_object_put(e);
		return r;
	}
	/* the content starts a frame of its own */
	r = frame_end(z, w);
	if (r == 0)
		r = strata_hasher_new_alg("sha256", &z->h_file);
	if (r == 0)
		r = strata_hasher_new_alg("sha256", &z->h_chunk);
	z->file = e;
	z->file_name = strdup(name);
	if (r == 0 && !z->file_name)
		r = -ENOMEM;
	z->left = h->size;
	z->file_pos = z->chunk_start = 0;
	z->n_chunks = 0;
	roll_init(&z->rs);
	return r;
}

/* The TOC's JSON text, of @*len bytes (caller frees). */
static char *toc_text(const struct strata_zck *z, size_t *len)
{
	static const char head[] = "{\"version\":1,\"entries\":[";
	size_t tlen = strlen(head) + z->toc_len + 2;
	char *text = malloc(tlen + 1);

	if (text)
		snprintf(text, tlen + 1, "%s%.*s]}", head, (int)z->toc_len,
			 z->toc ? z->toc : "");
	*len = tlen;
	return text;
}

int strata_zck_toc_entry(struct strata_zck *z, struct strata_blobw *w,
			 const char **text, size_t *len)
{
	int r;

	*text = NULL;
	*len = 0;
	if (!z->esgz)
		return 0;
	if (z->file || z->in_toc)
		return -EINVAL;
	/* the TOC entry starts a member of its own */
	r = frame_end(z, w);
	if (r < 0)
		return r;
	z->toc_text = toc_text(z, &z->toc_text_len);
	if (!z->toc_text)
		return -ENOMEM;
	z->in_toc = true;
	z->toc_off = z->blob_off;
	*text = z->toc_text;
	*len = z->toc_text_len;
	return 0;
}

/* eStargz: the TOC member is written (strata_zck_toc_entry(), then the
 * tar's end): end it, and the footer. */
static int esgz_finish(struct strata_zck *z, struct strata_blobw *w)
{
	unsigned char f[ESGZ_FOOTER_LEN] = {
		0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff,	/* FEXTRA, OS unknown */
		26, 0, 'S', 'G', 22, 0,
	};
	char sub[24];
	int r;

	if (!z->in_toc || z->file)
		return -EINVAL;
	r = frame_end(z, w);
	if (r < 0)
		return r;
	snprintf(sub, sizeof(sub), "%016llxSTARGZ",
		 (unsigned long long)z->toc_off);
	memcpy(f + 16, sub, 22);
	/* an empty final stored block; CRC and length of nothing: 0 */
	f[38] = 1;
	f[39] = 0;
	f[40] = 0;
	f[41] = 0xff;
	f[42] = 0xff;
	r = strata_blobw_out(w, f, sizeof(f));
	if (r < 0)
		return r;
	z->blob_off += ESGZ_FOOTER_LEN;
	strata_sha256(z->toc_text, z->toc_text_len, z->checksum);
	snprintf(z->position, sizeof(z->position), "%llu",
		 (unsigned long long)z->raw);
	z->finished = true;
	return 0;
}

int strata_zck_finish(struct strata_zck *z, struct strata_blobw *w)
{
	unsigned char footer[FOOTER_LEN];
	cleanup_free char *text = NULL;
	cleanup_free unsigned char *ctoc = NULL;
	size_t tlen, clen, bound;
	uint64_t v[4];
	int64_t toc_off;
	int i, j, r;

	if (z->esgz)
		return esgz_finish(z, w);
	if (z->file)
		return -EINVAL;
	r = frame_end(z, w);
	if (r < 0)
		return r;
	text = toc_text(z, &tlen);
	bound = ZSTD_compressBound(tlen);
	ctoc = malloc(bound);
	if (!text || !ctoc)
		return -ENOMEM;
	clen = ZSTD_compress2(z->zc, ctoc, bound, text, tlen);
	if (ZSTD_isError(clen))
		return -EIO;
	toc_off = z->blob_off + 8;
	r = skippable(w, ctoc, clen);
	if (r < 0)
		return r;
	v[0] = (uint64_t)toc_off;
	v[1] = clen;
	v[2] = tlen;
	v[3] = TOC_TYPE_CRFS;
	for (i = 0; i < 4; i++)
		for (j = 0; j < 8; j++)
			footer[8 * i + j] = (unsigned char)(v[i] >> (8 * j));
	memcpy(footer + 32, "GnUlInUx", 8);
	r = skippable(w, footer, sizeof(footer));
	if (r < 0)
		return r;
	snprintf(z->position, sizeof(z->position), "%lld:%zu:%zu:%d",
		 (long long)toc_off, clen, tlen, TOC_TYPE_CRFS);
	strata_sha256(ctoc, clen, z->checksum);
	z->finished = true;
	return 0;
}

int strata_zck_toc(const struct strata_zck *z,
		   const char *key[STRATA_TOC_ANNOTATIONS],
		   const char *val[STRATA_TOC_ANNOTATIONS])
{
	if (!z->finished)
		return -ENOENT;
	key[0] = z->esgz ? ANN_ESGZ_DIGEST : ANN_ZCK_CHECKSUM;
	val[0] = z->checksum;
	key[1] = z->esgz ? ANN_ESGZ_SIZE : ANN_ZCK_POSITION;
	val[1] = z->position;
	return 0;
}

int strata_zck_new(struct strata_zck **out, bool estargz)
{
	struct strata_zck *z = calloc(1, sizeof(*z));

	*out = z;
	if (!z)
		return -ENOMEM;
	if (estargz) {
		z->esgz = true;
		z->zout_cap = ESGZ_OUT;
		z->zout = malloc(z->zout_cap);
		if (!z->zout)
			return -ENOMEM;
		/* a gzip wrapper: mtime 0, no name, the same bytes always */
		if (deflateInit2(&z->zs, STRATA_GZIP_LEVEL, Z_DEFLATED, 16 + 15,
				 8, Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		z->zs_init = true;
		return 0;
	}
	z->zc = ZSTD_createCCtx();
	z->fbuf = malloc(CHUNK_MAX);
	z->zout_cap = ZSTD_compressBound(CHUNK_MAX);
	z->zout = malloc(z->zout_cap);
	if (!z->zc || !z->fbuf || !z->zout)
		return -ENOMEM;
	ZSTD_CCtx_setParameter(z->zc, ZSTD_c_compressionLevel,
			       STRATA_ZSTD_LEVEL);
	ZSTD_CCtx_setParameter(z->zc, ZSTD_c_checksumFlag, 1);
	return 0;
}

void strata_zck_free(struct strata_zck *z)
{
	if (!z)
		return;
	ZSTD_freeCCtx(z->zc);
	if (z->zs_init)
		deflateEnd(&z->zs);
	free(z->toc_text);
	free(z->fbuf);
	free(z->zout);
	free(z->toc);
	json_object_put(z->file);
	free(z->file_name);
	if (z->h_file)
		strata_hasher_free(z->h_file);
	if (z->h_chunk)
		strata_hasher_free(z->h_chunk);
	free(z->chunks);
	free(z);
}
