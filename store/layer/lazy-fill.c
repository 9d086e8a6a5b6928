/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Filling lazy layers (the design is at the top of lazy.c): one content
 * file on first access (strata_lx_content_open), checked chunk by chunk
 * and whole before it is linked into data/, shared by digest across
 * layers; and the background fill (strata_lx_prefetch), then the check
 * of the whole layer: blob digest, diff_id, the TOC against the tar.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lazy-int.h"

/* ---- filling ---- */

/* The directory entry of the index whose children include entry @i, or
 * UINT32_MAX. */
static uint32_t parent_of(const struct strata_lindex *lx, uint32_t i)
{
	uint32_t j, n = strata_lx_count(lx);

	for (j = 0; j < n; j++) {
		const struct strata_lx_entry *d = strata_lx_entry(lx, j);

		if (j != i && S_ISDIR(d->mode) && d->b && i >= d->a &&
		    i - d->a < d->b)
			return j;
	}
	return UINT32_MAX;
}

/*
 * The path of content file @data_id, printable, into @out (@len bytes),
 * for messages: the content table keeps no names (writing them was a
 * tenth of a first mount's cache entry), so the index is searched for a
 * regular file holding it and walked up to the root (slow, but only a
 * message needs it). "?" when none is reachable.
 */
static void path_of(const struct strata_lazy *z, uint32_t data_id, char *out,
		    size_t len)
{
	const struct strata_lindex *lx = z->lx;
	uint32_t i, n = lx ? strata_lx_count(lx) : 0;
	char path[4096];

	for (i = 1; i < n; i++) {
		const struct strata_lx_entry *e = strata_lx_entry(lx, i);
		size_t o = sizeof(path) - 1;
		uint32_t k = i, depth = 0;

		if (!S_ISREG(e->mode) || e->a != data_id)
			continue;
		path[o] = '\0';
		while (k != 0 && k != UINT32_MAX && depth++ < 2048) {
			const struct strata_lx_entry *c = strata_lx_entry(lx, k);

			if (c->name_len + 1u > o)
				break;
			if (o != sizeof(path) - 1)
				path[--o] = '/';
			o -= c->name_len;
			memcpy(path + o, strata_lx_str(lx, c->name_off),
			       c->name_len);
			k = parent_of(lx, k);
		}
		if (k == 0) {
			strata_printable(path + o, sizeof(path) - 1 - o, out,
					 len);
			return;
		}
	}
	snprintf(out, len, "?");
}

static void report_bad(struct strata_lazy *z, uint32_t data_id)
{
	char p[300];

	path_of(z, data_id, p, sizeof(p));
	strata_warn("image %s: layer %s is bad (its blob, diff_id or table "
		    "of contents did not verify): %s: not served (EIO)",
		    z->image, z->digest, p);
}

/* "sha256:HEX" of @b */
static void digest_of(const uint8_t *b, char *out)
{
	int i;

	strcpy(out, "sha256:");
	for (i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", b[i]);
}

/* The chunks of a file being decompressed, each hashed as it passes. */
struct chunk_check {
	const struct strata_lz_chunk *c;	/* the file's, in order */
	size_t n, i;
	uint64_t pos;				/* in the file */
	struct strata_hasher *h;
	bool bad;				/* chunk i did not match */
};

/* @len more bytes of the file. Return: 0, -EBADMSG (chunk i is wrong:
 * k->bad), -ENOMEM. */
static int chunk_update(struct chunk_check *k, const unsigned char *p,
			size_t len)
{
	char got[STRATA_DIGEST_MAX], want[STRATA_DIGEST_MAX];

	while (len > 0 && k->i < k->n) {
		const struct strata_lz_chunk *c = &k->c[k->i];
		uint64_t end = c->uoff + c->size;
		size_t take;

		if (k->pos < c->uoff) {	/* before it: not a chunk's */
			take = c->uoff - k->pos < len ? c->uoff - k->pos : len;
			k->pos += take;
			p += take;
			len -= take;
			continue;
		}
		take = end - k->pos < len ? (size_t)(end - k->pos) : len;
		if (!k->h && strata_hasher_new_alg("sha256", &k->h) < 0)
			return -ENOMEM;
		strata_hasher_update(k->h, p, take);
		k->pos += take;
		p += take;
		len -= take;
		if (k->pos < end)
			break;
		strata_hasher_final(k->h, got);
		strata_hasher_free(k->h);
		k->h = NULL;
		digest_of(c->sha256, want);
		if (strcmp(got, want)) {
			k->bad = true;
			return -EBADMSG;
		}
		k->i++;
	}
	k->pos += len;
	return 0;
}

/* Decompress record @r into @fd, hashing it and each of its chunks @k:
 * zstd frames that hold the file and nothing else, or gzip members that
 * start with it (eStargz: what follows the file in its last member is
 * not its). Return: 0, -EBADMSG when the bytes are not what the TOC says
 * (k->bad: chunk k->i's), or another negative errno. */
static int decompress_to(struct strata_range_src *src, bool gzip,
			 const struct strata_lz_rec *r,
			 struct chunk_check *k, int fd)
{
	/* buffers the file's size (most are small: a 1 MiB buffer is an
	 * mmap, its page faults and a munmap for each) */
	size_t icap = r->end - r->off < IO_SIZE ? (size_t)(r->end - r->off)
						: IO_SIZE;
	size_t ocap = r->size < IO_SIZE ? (size_t)r->size + 1 : IO_SIZE;
	cleanup_free unsigned char *in = malloc(icap ? icap : 1);
	cleanup_free unsigned char *out = malloc(ocap);
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	char got[STRATA_DIGEST_MAX], want[STRATA_DIGEST_MAX];
	struct strata_dec d;
	uint64_t pos = r->off, total = 0;
	int ret;

	if (!in || !out || strata_hasher_new_alg("sha256", &h) < 0 ||
	    strata_dec_init(&d, gzip) < 0)
		return -ENOMEM;
	ret = 0;
	while (ret == 0 && pos < r->end && total < r->size + !gzip) {
		size_t len = r->end - pos > icap ? icap
						: (size_t)(r->end - pos);
		size_t ipos = 0, made, before;

		ret = src->read(src, in, len, pos);
		pos += len;
		while (ret == 0 && ipos < len) {
			before = ipos;
			ret = strata_dec_step(&d, in, len, &ipos, out, ocap,
					      &made);
			if (ret == 0 && !made && ipos == before)
				break;
			if (ret == 0 && total + made > r->size && gzip)
				made = (size_t)(r->size - total);
			if (ret == 0 && total + made > r->size)
				ret = -EBADMSG;
			if (ret < 0)
				break;
			total += made;
			strata_hasher_update(h, out, made);
			ret = chunk_update(k, out, made);
			if (ret == 0)
				ret = strata_write_all(fd, out, made);
			if (ret == 0 && gzip && total == r->size)
				break;
		}
	}
	strata_dec_free(&d);
	if (ret < 0)
		return ret;
	if ((!gzip && !d.done) || total != r->size)
		return -EBADMSG;
	strata_hasher_final(h, got);
	digest_of(r->sha256, want);
	return strcmp(got, want) ? -EBADMSG : 0;
}

/* The chunks of record @rec (a binary search: they are in record order) */
static void chunks_of(const struct strata_lazy *z, uint32_t rec,
		      struct chunk_check *k)
{
	size_t lo = 0, hi = z->n_chunks;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (z->chunks[mid].rec < rec)
			lo = mid + 1;
		else
			hi = mid;
	}
	k->c = z->chunks + lo;
	for (k->n = 0; lo + k->n < z->n_chunks && k->c[k->n].rec == rec;)
		k->n++;
}

static bool intact_bit(struct strata_lazy *z, uint32_t data_id)
{
	return atomic_load(&z->intact[data_id / 8]) & (1u << (data_id % 8));
}

static void set_intact(struct strata_lazy *z, uint32_t data_id)
{
	atomic_fetch_or(&z->intact[data_id / 8],
			(unsigned char)(1u << (data_id % 8)));
}

/* Remove @dfd/@name if it is still the file @fd is open on. */
static void unlink_same(int dfd, const char *name, int fd)
{
	struct stat a, b;

	if (fstat(fd, &a) == 0 &&
	    fstatat(dfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		unlinkat(dfd, name, 0);
}

/*
 * Is the content file @fd of record @data_id intact: its size, then
 * (lazy-check.c) its sha256, once per boot? A zran layer's records have
 * no digest: its files are checked by size. One that is not intact is
 * removed from @dfd/@name (a crash tore it), with a log line. Return:
 * 1 intact, 0 not, negative errno (it could not be read).
 */
static int intact(struct strata_lazy *z, int fd, uint32_t data_id,
		  int dfd, const char *name)
{
	const struct strata_lz_rec *r = &z->recs[data_id - 1];
	struct stat sb;
	bool sized = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
		     (uint64_t)sb.st_size == r->size;
	char p[300];
	int v = 1;

	if (!sized)
		v = 0;
	else if (!z->zran)
		v = strata_lz_verify(fd, r->sha256);
	if (v == 0) {
		if (sized) {
			path_of(z, data_id, p, sizeof(p));
			strata_warn("image %s: layer %s: file %s: stored "
				    "content does not match its digest (torn "
				    "by a crash?): fetched again", z->image,
				    z->digest, p);
		}
		unlink_same(dfd, name, fd);
	}
	return v;
}

/*
 * Content is stored once per digest across lazy layers and images:
 * layers/lazy/content/HEX is a hardlink of the first content file
 * filled with that sha256 (verified then), and a later layer naming the
 * same digest links it instead of fetching (gc removes a content file
 * nothing else links), once it is found intact. Return: 0 if linked.
 */
static int link_shared(struct strata_lazy *z, uint32_t data_id,
		       const char *hex, const char *name)
{
	cleanup_fd int fd = -1;
	char proc[64];

	if (z->contentfd < 0)
		return -ENOENT;
	fd = openat(z->contentfd, hex, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || intact(z, fd, data_id, z->contentfd, hex) != 1)
		return -ENOENT;
	/* the very file checked */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, z->datafd, name, AT_SYMLINK_FOLLOW) < 0)
		return errno == EEXIST ? 0 : -errno;
	set_intact(z, data_id);
	return 0;
}

static int fill_from(struct strata_lazy *z, struct strata_range_src *src,
		     uint32_t data_id)
{
	const struct strata_lz_rec *r;
	char name[16], proc[64], p[300], hex[65];
	struct chunk_check k = { 0 };
	cleanup_fd int fd = -1;
	int ret, i;

	if (data_id == 0 || data_id > z->n)
		return -EIO;
	r = &z->recs[data_id - 1];
	snprintf(name, sizeof(name), "%u", data_id);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", r->sha256[i]);
	if (!z->zran && link_shared(z, data_id, hex, name) == 0)
		return 0;
	fd = openat(z->datafd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (!z->zran)
		chunks_of(z, data_id - 1, &k);
	ret = z->zran ? strata_lzr_fill(z->zran, z->blobfd, r, fd)
		      : decompress_to(src, z->gzip, r, &k, fd);
	if (k.h)
		strata_hasher_free(k.h);
	if (ret == -EBADMSG && k.bad) {
		path_of(z, data_id, p, sizeof(p));
		strata_warn("image %s: layer %s: file %s: chunk at offset %llu "
			    "(%llu bytes) does not match its chunkDigest: not "
			    "served (EIO)", z->image, z->digest, p,
			    (unsigned long long)k.c[k.i].uoff,
			    (unsigned long long)k.c[k.i].size);
		return -EIO;
	}
	if (ret == -EBADMSG) {
		path_of(z, data_id, p, sizeof(p));
		strata_warn("image %s: layer %s: file %s: content does not "
			    "match the table of contents: not served (EIO)",
			    z->image, z->digest, p);
		return -EIO;
	}
	if (ret < 0) {
		/* the source's error, for the background fill to tell a
		 * registry away from a bad file; a read gets EIO */
		path_of(z, data_id, p, sizeof(p));
		strata_warn("image %s: layer %s: file %s: cannot fetch its "
			    "content: %s", z->image, z->digest, p,
			    strerror(-ret));
		return ret == -EIO ? -EIO : ret;
	}
	if (!z->zran)
		strata_lz_mark(fd);	/* verified in this boot */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, z->datafd, name, AT_SYMLINK_FOLLOW) < 0)
		return errno == EEXIST ? 0 : -errno;	/* another's fill */
	set_intact(z, data_id);
	if (z->contentfd >= 0 && !z->zran)
		linkat(z->datafd, name, z->contentfd, hex, 0);	/* best effort */
	return 0;
}

static int fill(struct strata_lazy *z, uint32_t data_id)
{
	return fill_from(z, z->src, data_id);
}

/*
 * The background fill reads neighbouring files' ranges in one request
 * (a registry round trip each otherwise): up to BATCH_BYTES of the blob,
 * gaps under BATCH_GAP included, held here while its files are filled.
 */
#define BATCH_BYTES (8u << 20)
#define BATCH_GAP (64u << 10)

struct batch {
	struct strata_range_src s;
	struct strata_range_src *next;	/* outside the batch */
	unsigned char *buf;
	uint64_t off, len;
};

static int batch_read(struct strata_range_src *s, void *buf, size_t len,
		      uint64_t off)
{
	struct batch *b = (struct batch *)s;

	if (off >= b->off && len <= b->len && off - b->off <= b->len - len) {
		memcpy(buf, b->buf + (off - b->off), len);
		return 0;
	}
	return b->next->read(b->next, buf, len, off);
}

bool lz_missing(struct strata_lazy *z, uint32_t id)
{
	char name[16];

	snprintf(name, sizeof(name), "%u", id);
	return faccessat(z->datafd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0;
}

/* Fill the missing files from @first on (to @limit at most) that fit
 * one read of @src; the next content number to look at goes to *@next.
 * Return:
 * 0, or the source's error when it cannot be read at all (a registry
 * away: the fill stops rather than fail every file in turn); a file whose
 * bytes do not match the TOC has said so and the fill goes on. */
static int fill_batch(struct strata_lazy *z, struct strata_range_src *src,
		      uint32_t first, uint32_t limit, uint32_t *next)
{
	struct batch b = { .s.read = batch_read, .next = src };
	uint32_t last = first, i;
	int r = 0;

	while (last < limit && z->recs[last].end - z->recs[first - 1].off <=
	       BATCH_BYTES && z->recs[last].off - z->recs[last - 1].end <
	       BATCH_GAP)
		last++;	/* records first..last (1-based) fit */
	*next = last + 1;
	b.off = z->recs[first - 1].off;
	b.len = z->recs[last - 1].end - b.off;
	if (last > first && b.len <= BATCH_BYTES) {
		b.buf = malloc(b.len);
		if (b.buf && (r = src->read(src, b.buf, b.len, b.off)) < 0) {
			free(b.buf);
			return r;
		}
	}
	if (!b.buf)
		b.len = 0;	/* one by one, straight from the source */
	for (i = first; i <= last && r == 0; i++)
		if (lz_missing(z, i)) {
			r = fill_from(z, &b.s, i);
			if (r == -EIO)
				r = 0;	/* not what the TOC says: said */
		}
	free(b.buf);
	return r;
}

int strata_lx_content_open(struct strata_lindex *lx, uint32_t data_id)
{
	struct strata_lazy *z = strata_lindex_lazy(lx);
	char name[16];
	int fd, r;

	snprintf(name, sizeof(name), "%u", data_id);
	if (z && atomic_load(&z->bad)) {
		if (data_id && data_id <= z->n)
			report_bad(z, data_id);
		return -EIO;
	}
	fd = openat(strata_lx_datafd(lx), name, O_RDONLY | O_CLOEXEC |
		    O_NOFOLLOW);
	/*
	 * Content files are not synced one by one (a fill of many small
	 * files would wait on the disk for each): one a crash cut short or
	 * emptied is fetched again (intact()); the layer's directory is
	 * synced before its diff_id is recorded.
	 */
	if (fd >= 0 && z && (data_id == 0 || data_id > z->n)) {
		close(fd);
		return -EIO;
	}
	if (fd >= 0 && z && !intact_bit(z, data_id)) {
		r = intact(z, fd, data_id, z->datafd, name);
		if (r < 0) {
			close(fd);
			return r == -ENOMEM ? r : -EIO;
		}
		if (r == 0) {
			close(fd);
			fd = -1;
			errno = ENOENT;
		} else {
			set_intact(z, data_id);
		}
	}
	if (fd >= 0)
		return fd;
	if (errno != ENOENT || !z)
		return -errno;
	r = fill(z, data_id);
	if (r < 0)	/* a registry's error is EIO to the reader */
		return r == -ENOMEM || r == -ENOSPC || r == -EDQUOT ? r : -EIO;
	fd = openat(strata_lx_datafd(lx), name, O_RDONLY | O_CLOEXEC |
		    O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

/* ---- the background fill and the final check ---- */

/*
 * The TOC's word on each entry against the tar's headers, read by Go's
 * rules (tarscan.c) as the uncompressed stream goes by: containers/storage
 * compares its TOC with the tar-split the TOC names before it pulls; here
 * the tar itself is at hand once the whole blob has been read.
 */
struct meta_check {
	struct strata_tarscan *ts;
	uint64_t i;		/* entries compared */
	bool toc_seen;		/* eStargz: the tar's stargz.index.json */
	char msg[700];		/* the first difference, once found */
	int err;		/* or a failure to compare (not the TOC's) */
};

static void meta_diff(struct meta_check *m, const char *name, const char *why)
{
	char p[300];

	strata_printable(name, SIZE_MAX, p, sizeof(p));
	snprintf(m->msg, sizeof(m->msg), "entry %s: %s", p, why);
}

/* Go's Time.Round(time.Second) of @m's mtime: eStargz's writer keeps
 * whole seconds of it in its TOC, its tar the header's own time. */
static void round_mtime(struct strata_lz_meta *m)
{
	if (m->mtime_nsec >= 500000000u)
		m->mtime_sec++;
	m->mtime_nsec = 0;
}

/* Compare the entries the scanner has read so far. eStargz: the tar's
 * last entry, stargz.index.json, is the TOC itself, which has no entry
 * for it. */
static void meta_drain(struct strata_lazy *z, struct meta_check *m)
{
	const struct strata_tar_entry *g;
	struct strata_lz_meta got, want;
	char why[200];

	while (!m->msg[0] && !m->err && (g = strata_tarscan_next(m->ts))) {
		if (m->i == z->n_metas && z->gzip && !m->toc_seen &&
		    strata_esgz_meta_name(g->name ? g->name : "", 0)) {
			m->toc_seen = true;
			continue;
		}
		if (m->i == z->n_metas || m->toc_seen) {
			meta_diff(m, g->name, "in the tar, not in the table of "
				  "contents");
			return;
		}
		m->err = strata_lz_meta_of(g, &got);
		want = z->metas[m->i];
		if (z->gzip) {
			round_mtime(&got);
			round_mtime(&want);
		}
		if (m->err == 0 && strata_lz_meta_differ(&want, &got, why,
							 sizeof(why)))
			meta_diff(m, g->name, why);
		m->i++;
	}
}

static void meta_feed(struct strata_lazy *z, struct meta_check *m,
		      const void *buf, size_t len)
{
	char e[512];

	if (m->msg[0] || m->err)
		return;
	if (strata_tarscan_feed(m->ts, buf, len, e, sizeof(e)) < 0)
		snprintf(m->msg, sizeof(m->msg), "the tar: %s", e);
	meta_drain(z, m);
}

static void meta_finish(struct strata_lazy *z, struct meta_check *m)
{
	char e[512];

	if (m->msg[0] || m->err)
		return;
	if (strata_tarscan_finish(m->ts, e, sizeof(e)) < 0)
		snprintf(m->msg, sizeof(m->msg), "the tar: %s", e);
	meta_drain(z, m);
	if (!m->msg[0] && !m->err && m->i != z->n_metas)
		snprintf(m->msg, sizeof(m->msg), "the table of contents has "
			 "%llu entries, the tar %llu",
			 (unsigned long long)z->n_metas,
			 (unsigned long long)m->i);
}

/* Stream the whole blob: its digest and its uncompressed stream's, and
 * the tar's headers against the TOC's (@m); with @keep >= 0, the bytes
 * read are written there too. */
static int hash_blob(struct strata_lazy *z, const atomic_bool *stop,
		     char *blob_got, char *diff_got, struct meta_check *m,
		     int keep)
{
	/* a registry's blob in fewer requests: one per round trip counts */
	size_t io = z->src->remote ? REMOTE_IO_SIZE : IO_SIZE;
	cleanup_free unsigned char *in = malloc(io), *out = malloc(IO_SIZE);
	cleanup_(strata_hasher_freep) struct strata_hasher *bh = NULL, *dh = NULL;
	struct strata_dec d;
	uint64_t pos = 0, total = 0;
	int ret;

	if (!in || !out || strata_hasher_new(z->digest, &bh) < 0 ||
	    strata_hasher_new(z->diff_id, &dh) < 0 ||
	    strata_dec_init(&d, z->gzip) < 0)
		return -ENOMEM;
	ret = 0;
	while (ret == 0 && pos < (uint64_t)z->size) {
		size_t len = (uint64_t)z->size - pos > io
			     ? io : (size_t)((uint64_t)z->size - pos);
		size_t ipos = 0, made, before;

		if (stop && atomic_load(stop)) {
			ret = -EINTR;
			break;
		}
		ret = z->src->read(z->src, in, len, pos);
		if (ret < 0)
			break;
		/* in order from 0: the copy's offsets are the blob's */
		if (keep >= 0 && (ret = strata_write_all(keep, in, len)) < 0)
			break;
		pos += len;
		strata_hasher_update(bh, in, len);
		while (ret == 0 && ipos < len) {
			before = ipos;
			ret = strata_dec_step(&d, in, len, &ipos, out, IO_SIZE,
					      &made);
			if (ret == 0 && !made && ipos == before)
				break;
			if (ret == 0 && (total += made) > 64ull << 30)
				ret = -EBADMSG;
			if (ret == 0) {
				strata_hasher_update(dh, out, made);
				meta_feed(z, m, out, made);
			}
		}
	}
	strata_dec_free(&d);
	if (ret == 0 && !d.done)
		ret = -EBADMSG;
	if (ret == 0)
		meta_finish(z, m);
	strata_hasher_final(bh, blob_got);
	strata_hasher_final(dh, diff_got);
	return ret;
}

/*
 * What the TOC says of each entry, for the compare with the tar: read
 * from the blob again and verified against the manifest's digest of it,
 * as before the mount. Bytes that no longer match make the layer bad (as
 * a blob that does not match its digest does); a source that cannot read
 * them now leaves the check to the next fill.
 */
static int load_metas(struct strata_lazy *z)
{
	struct strata_layer l = {
		.digest = z->digest, .size = z->size, .diff_id = z->diff_id,
		.compression = z->gzip ? STRATA_COMP_GZIP : STRATA_COMP_ZSTD,
		.toc_digest = z->toc_digest, .toc_position = z->toc_position,
	};
	struct strata_err err = { 0 };
	int r = z->gzip ? strata_esgz_metas(z->src, &l, &z->metas,
					    &z->n_metas, &err)
			: strata_zc_metas(z->src, &l, &z->metas, &z->n_metas,
					  &err);

	if (r == -EBADMSG) {
		atomic_store(&z->bad, true);
		strata_warn("image %s: %s: the layer is bad, its files fail "
			    "with EIO", z->image, err.msg);
	}
	return r;
}

/* The whole layer was read, its content files synced after: record the
 * diff_id it hashed to (@got, a fact about the verified blob) and compare
 * it with the config's; a mismatch makes the layer bad. */
static int record_diff_id(struct strata_lazy *z, const char *got)
{
	int r;

	if (syncfs(z->datafd) < 0)
		return -errno;
	r = strata_write_atomic(z->dirfd, "diff_id", got, strlen(got), 0644);
	if (r < 0)
		return r;
	if (strcmp(got, z->diff_id)) {
		atomic_store(&z->bad, true);
		strata_warn("image %s: layer %s: diff_id mismatch: config says "
			    "%s, uncompressed content hashes to %s: the layer "
			    "is bad, its files fail with EIO", z->image,
			    z->digest, z->diff_id, got);
		return -EBADMSG;
	}
	return 0;
}

/* Read the whole blob once (@keep: see hash_blob()) and check it: its
 * digest, and the TOC against its tar. Return: 0 with the diff_id it
 * hashed to in @diff_got, -EBADMSG (the layer is bad, said), or the
 * source's error (-EINTR when stopped: the next fill tries again). */
static int verify_stream(struct strata_lazy *z, const atomic_bool *stop,
			 int keep, char *diff_got)
{
	char blob_got[STRATA_DIGEST_MAX];
	char bad[1200];
	struct meta_check m = { 0 };
	int r;

	r = load_metas(z);
	if (r < 0)
		return r;
	m.ts = calloc(1, sizeof(*m.ts));
	r = m.ts ? hash_blob(z, stop, blob_got, diff_got, &m, keep) : -ENOMEM;
	if (m.ts)
		strata_tarscan_free(m.ts);
	free(m.ts);
	free(z->metas);
	z->metas = NULL;
	if (r == 0 && m.err)
		return m.err;	/* not checked: the next fill tries again */

	if (r == -EINTR)
		return r;
	if (r < 0 && r != -EBADMSG)
		return r;
	if (r == -EBADMSG || strcmp(blob_got, z->digest)) {
		atomic_store(&z->bad, true);
		strata_warn("image %s: layer %s: the blob does not match its "
			    "digest (%s): the layer is bad, its files fail "
			    "with EIO", z->image, z->digest,
			    r == -EBADMSG ? "corrupt compressed stream"
					  : blob_got);
		return -EBADMSG;
	}
	if (m.msg[0] && !strcmp(diff_got, z->diff_id)) {
		/* the blob is what the manifest and config say, the TOC
		 * the manifest vouches for describes another tree */
		snprintf(bad, sizeof(bad), "image %s: layer %s: the table of "
			 "contents does not match the layer's tar: %s: the "
			 "layer is bad, its files fail with EIO", z->image,
			 z->digest, m.msg);
		atomic_store(&z->bad, true);
		strata_warn("%s", bad);
		r = strata_write_atomic(z->dirfd, "bad", bad, strlen(bad),
					0644);
		return r < 0 ? r : -EBADMSG;
	}
	return 0;
}

static int verify_layer(struct strata_lazy *z, const atomic_bool *stop)
{
	char diff_got[STRATA_DIGEST_MAX];
	int r = verify_stream(z, stop, -1, diff_got);

	return r < 0 ? r : record_diff_id(z, diff_got);
}

/* A gzip/zstd layer: its blob was verified before the mount; the files
 * left are filled by one sequential decompress, which also hashes the
 * whole stream the first time: the diff_id is recorded (a fact about the
 * verified blob, so kept whatever this image's config claims) and
 * compared with the config's. A mismatch makes the layer bad for this
 * mount, and every later mount of an image claiming it is refused
 * (lazy-zran.c). */
static int fill_zran(struct strata_lazy *z, const atomic_bool *stop)
{
	cleanup_(strata_hasher_freep) struct strata_hasher *dh = NULL;
	cleanup_free char *got = NULL;
	char diff_got[STRATA_DIGEST_MAX];
	size_t len;
	int r;

	if (z->blobfd < 0)
		return 0;	/* all filled by an earlier fill */
	r = strata_read_file(z->dirfd, "diff_id", STRATA_DIGEST_MAX, &got,
			     &len);
	if (r < 0 && r != -ENOENT)
		return r;
	if (r == 0 && (len != strlen(z->diff_id) ||
		       memcmp(got, z->diff_id, len))) {
		atomic_store(&z->bad, true);	/* refused at mount: a race */
		return -EBADMSG;
	}
	if (r == -ENOENT && strata_hasher_new(z->diff_id, &dh) < 0)
		return -ENOMEM;
	r = strata_lzr_fill_all(z->zran, z->blobfd, z->recs, z->n,
				z->datafd, dh, stop);
	if (r < 0)
		return r;
	if (dh) {
		strata_hasher_final(dh, diff_got);
		r = record_diff_id(z, diff_got);
		if (r < 0)
			return r;
	}
	return lz_drop_blob(z);
}

/* Fill the missing files 1..@limit in order from @src. Return: 0 when
 * done, 1 when stopped (or the layer is bad), or the source's error
 * (resume later). */
static int fill_upto(struct strata_lazy *z, struct strata_range_src *src,
		     uint32_t limit, const atomic_bool *stop)
{
	uint32_t i;
	int r;

	for (i = 1; i <= limit;) {
		if (atomic_load(stop) || atomic_load(&z->bad))
			return 1;
		if (!lz_missing(z, i)) {
			i++;
			continue;
		}
		r = fill_batch(z, src, i, limit, &i);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Has a fill read and checked the whole layer already ("diff_id")? */
static bool checked(struct strata_lazy *z)
{
	cleanup_free char *got = NULL;
	size_t len;

	return strata_read_file(z->dirfd, "diff_id", STRATA_DIGEST_MAX, &got,
				&len) == 0 &&
	       len == strlen(z->diff_id) && !memcmp(got, z->diff_id, len);
}

/*
 * A registry's layer, not checked yet: the check reads the whole blob
 * anyway, so the files still missing are filled from that one download
 * rather than fetched by range first (which downloaded the layer twice).
 * The blob is kept in an unnamed file of the layer's directory while it
 * streams by (its size, until the fill ends; nothing after a crash), and
 * once blob and TOC have checked out, each missing file is filled from
 * it and checked against the TOC as a range from the registry is.
 */
static int fill_by_stream(struct strata_lazy *z, const atomic_bool *stop)
{
	struct strata_range_src *copy = NULL;
	char diff_got[STRATA_DIGEST_MAX];
	int keep, r;

	keep = openat(z->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (keep < 0)
		return -EOPNOTSUPP;	/* by range, then the check */
	r = verify_stream(z, stop, keep, diff_got);
	if (r < 0) {
		close(keep);
		return r;
	}
	r = strata_range_src_fd(keep, &copy);	/* keep is copy's now */
	if (r < 0)
		return r;
	r = fill_upto(z, copy, z->n, stop);
	copy->free(copy);
	if (r != 0)
		return r < 0 ? r : 0;
	return record_diff_id(z, diff_got);
}

int strata_lx_prefetch(struct strata_lindex *lx, int what,
		       const atomic_bool *stop)
{
	struct strata_lazy *z = strata_lindex_lazy(lx);
	int r;

	if (!z)
		return 0;
	if (what == STRATA_PREFETCH_FIRST) {
		if (z->zran || z->prefetch == STRATA_LZ_NO_PREFETCH)
			return 0;
		r = fill_upto(z, z->src, z->prefetch < z->n ? z->prefetch
							  : z->n, stop);
		return r < 0 ? r : 0;
	}
	if (z->prefetch == STRATA_LZ_NO_PREFETCH && what != STRATA_PREFETCH_ALL)
		return 0;
	if (z->zran)
		return fill_zran(z, stop);
	if (!checked(z) && z->src->remote &&
	    (r = fill_by_stream(z, stop)) != -EOPNOTSUPP)
		return r;
	r = fill_upto(z, z->src, z->n, stop);
	if (r != 0)
		return r < 0 ? r : 0;
	if (checked(z))
		return 0;	/* by an earlier fill */
	return verify_layer(z, stop);
}
