/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/layer/unpack.c + store/layer/lindex.c: layers are written at test time with
 * libarchive's tar writer, unpacked with strata_unpack_layer() into
 * layers/<alg>/<hex> of a temporary store (where cache.c publishes them),
 * and read back with strata_lindex_open().
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "store-internal.h"
#include "unpack.h"
#include "tap.h"

#define NONE UINT32_MAX
#define HARDLINK 1u	/* ent.type for a hardlink entry */

struct ent {
	const char *name;
	unsigned type;		/* AE_IF*, or HARDLINK */
	unsigned perm;
	const char *data;	/* regular file content */
	size_t dlen;		/* 0: strlen(data) */
	const char *link;	/* symlink or hardlink target */
	int64_t uid, gid;
	int64_t mtime;
	long nsec;
	const char *xn[2];	/* xattr names */
	const char *xv[2];	/* values */
	size_t xl[2];		/* value lengths (0: strlen) */
	unsigned rmaj, rmin;
};

#define F(n, d) { .name = (n), .type = AE_IFREG, .perm = 0644, .data = (d) }
#define D(n) { .name = (n), .type = AE_IFDIR, .perm = 0755 }
#define L(n, t) { .name = (n), .type = AE_IFLNK, .perm = 0777, .link = (t) }
#define H(n, t) { .name = (n), .type = HARDLINK, .link = (t) }
#define N(a) (sizeof(a) / sizeof((a)[0]))

static char tmpdir[4096];
static int tmpfd = -1;
static struct strata_store *st;

/* ---- building layers ---- */

static int write_tar(const char *path, const struct ent *e, size_t n)
{
	struct archive *a = archive_write_new();
	size_t i;
	int k, r = 0;

	if (!a)
		return -ENOMEM;
	archive_write_set_format_pax(a);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK) {
		diag("tar writer: %s", archive_error_string(a));
		archive_write_free(a);
		return -EIO;
	}
	for (i = 0; i < n && r == 0; i++) {
		struct archive_entry *ae = archive_entry_new();
		size_t dlen = e[i].data ? (e[i].dlen ? e[i].dlen : strlen(e[i].data)) : 0;

		archive_entry_set_pathname(ae, e[i].name);
		archive_entry_set_uid(ae, e[i].uid);
		archive_entry_set_gid(ae, e[i].gid);
		archive_entry_set_mtime(ae, (time_t)e[i].mtime, e[i].nsec);
		if (e[i].type == HARDLINK) {
			archive_entry_set_filetype(ae, AE_IFREG);
			archive_entry_set_perm(ae, 0644);
			archive_entry_set_hardlink(ae, e[i].link);
			archive_entry_set_size(ae, 0);
		} else {
			archive_entry_set_filetype(ae, e[i].type);
			archive_entry_set_perm(ae, e[i].perm);
			if (e[i].type == AE_IFLNK)
				archive_entry_set_symlink(ae, e[i].link);
			if (e[i].type == AE_IFCHR || e[i].type == AE_IFBLK) {
				archive_entry_set_rdevmajor(ae, e[i].rmaj);
				archive_entry_set_rdevminor(ae, e[i].rmin);
			}
			archive_entry_set_size(ae, e[i].type == AE_IFREG ?
					       (la_int64_t)dlen : 0);
		}
		for (k = 0; k < 2; k++)
			if (e[i].xn[k])
				archive_entry_xattr_add_entry(ae, e[i].xn[k],
					e[i].xv[k], e[i].xl[k] ? e[i].xl[k]
							       : strlen(e[i].xv[k]));
		if (archive_write_header(a, ae) != ARCHIVE_OK) {
			diag("tar writer: %s: %s", e[i].name, archive_error_string(a));
			r = -EIO;
		} else if (dlen && e[i].type == AE_IFREG &&
			   archive_write_data(a, e[i].data, dlen) != (la_ssize_t)dlen) {
			r = -EIO;
		}
		archive_entry_free(ae);
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		r = -EIO;
	archive_write_free(a);
	return r;
}

static int gzip_buf(const char *in, size_t len, char **out, size_t *olen)
{
	z_stream z = { 0 };
	size_t cap;
	char *o;

	if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	cap = deflateBound(&z, len) + 64;
	o = malloc(cap);
	if (!o) {
		deflateEnd(&z);
		return -ENOMEM;
	}
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)len;
	z.next_out = (unsigned char *)o;
	z.avail_out = (uInt)cap;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
		deflateEnd(&z);
		free(o);
		return -EIO;
	}
	*olen = z.total_out;
	deflateEnd(&z);
	*out = o;
	return 0;
}

static int zstd_buf(const char *in, size_t len, char **out, size_t *olen)
{
	size_t cap = ZSTD_compressBound(len), n;
	char *o = malloc(cap);

	if (!o)
		return -ENOMEM;
	n = ZSTD_compress(o, cap, in, len, 3);
	if (ZSTD_isError(n)) {
		free(o);
		return -EIO;
	}
	*out = o;
	*olen = n;
	return 0;
}

struct opts {
	int comp;			/* enum strata_compression */
	int blob_comp;			/* what to compress with, for SNIFF */
	uint64_t max_bytes;		/* 0: 1 GiB */
	uint64_t max_entries;		/* 0: 1M */
	const char *digest;		/* override the blob digest */
	const char *diff_id;		/* override the diff_id */
	int64_t size_delta;		/* added to the descriptor size */
	bool corrupt;			/* flip a byte in the middle of the blob */
	int declare;			/* if set, declare compression
					 * declare - 1 instead of comp */
	bool raw;			/* blob is raw_blob, not a tar */
	const char *raw_blob;
	size_t raw_len;
};

static uint64_t progress_bytes;

static void progress(void *ctx, uint64_t n)
{
	(void)ctx;
	progress_bytes += n;
}

/*
 * Write @e as a tar, compress as @o says, unpack it into
 * layers/sha256/<diff_id hex>. *diff_id_out gets the real diff_id,
 * *blob_len the blob size. Return: strata_unpack_layer()'s result.
 */
static int unpack(const struct ent *e, size_t n, const struct opts *o,
		  struct strata_err *err, char *diff_id_out, size_t *blob_len)
{
	char tarpath[4200], digest[STRATA_DIGEST_MAX], diff_id[STRATA_DIGEST_MAX];
	char rel[STRATA_DIGEST_MAX + 16];
	cleanup_free char *tar = NULL, *blob = NULL;
	cleanup_fd int bfd = -1, dest = -1;
	size_t tlen = 0, blen = 0;
	struct strata_unpack_job job;
	int r, comp;

	snprintf(tarpath, sizeof(tarpath), "%s/layer.tar", tmpdir);
	if (o->raw) {
		tar = malloc(o->raw_len + 1);
		if (!tar)
			return -ENOMEM;
		memcpy(tar, o->raw_blob, o->raw_len);
		tlen = o->raw_len;
	} else {
		r = write_tar(tarpath, e, n);
		if (r < 0)
			return r;
		r = strata_read_file(AT_FDCWD, tarpath, 1u << 30, &tar, &tlen);
		if (r < 0)
			return r;
	}
	strata_sha256(tar, tlen, diff_id);
	comp = o->comp == STRATA_COMP_SNIFF ? o->blob_comp : o->comp;
	if (comp == STRATA_COMP_GZIP)
		r = gzip_buf(tar, tlen, &blob, &blen);
	else if (comp == STRATA_COMP_ZSTD)
		r = zstd_buf(tar, tlen, &blob, &blen);
	else
		r = (blob = malloc(tlen + 1)) ? (memcpy(blob, tar, tlen), blen = tlen, 0)
					      : -ENOMEM;
	if (r < 0)
		return r;
	if (o->corrupt)
		blob[blen / 2] ^= 0x55;
	strata_sha256(blob, blen, digest);
	r = strata_write_atomic(tmpfd, "blob", blob, blen, 0644);
	if (r < 0)
		return r;
	strata_blob_relpath(diff_id, rel, sizeof(rel));
	strata_rmtree_at(st->layers_fd, rel);
	if (strata_mkdirat_p(st->layers_fd, rel, 0755) < 0)
		return -EIO;
	dest = openat(st->layers_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest < 0 || mkdirat(dest, "data", 0755) < 0)
		return -EIO;
	bfd = openat(tmpfd, "blob", O_RDONLY | O_CLOEXEC);
	if (bfd < 0)
		return -EIO;
	memset(&job, 0, sizeof(job));
	job.blob_fd = bfd;
	job.digest = o->digest ? o->digest : digest;
	job.size = (int64_t)blen + o->size_delta;
	job.diff_id = o->diff_id ? o->diff_id : diff_id;
	job.compression = o->declare ? o->declare - 1 : o->comp;
	job.dest_fd = dest;
	job.max_bytes = o->max_bytes ? o->max_bytes : 1ull << 30;
	job.max_entries = o->max_entries ? o->max_entries : 1u << 20;
	job.progress = progress;
	progress_bytes = 0;
	r = strata_unpack_layer(&job, err);
	if (r < 0)
		strata_rmtree_at(st->layers_fd, rel);
	if (diff_id_out)
		strcpy(diff_id_out, diff_id);
	if (blob_len)
		*blob_len = blen;
	return r;
}

/* ---- reading the index ---- */

static uint32_t find(const struct strata_lindex *lx, const char *path)
{
	uint32_t cur = 0;
	const char *p = path;

	while (*p) {
		const char *s = strchr(p, '/');
		size_t n = s ? (size_t)(s - p) : strlen(p);

		cur = strata_lx_lookup(lx, cur, p, n);
		if (cur == NONE)
			return NONE;
		p += n;
		if (*p == '/')
			p++;
	}
	return cur;
}

static const struct strata_lx_entry *get(const struct strata_lindex *lx,
					 const char *path, uint32_t *idx)
{
	uint32_t i = find(lx, path);

	if (idx)
		*idx = i;
	return i == NONE ? NULL : strata_lx_entry(lx, i);
}

/* Find xattr @name in entry @i's records; value length in *vlen. */
static const uint8_t *xattr(const struct strata_lindex *lx, uint32_t i,
			    const char *name, size_t *vlen, int *count)
{
	size_t len = 0, off = 0;
	const uint8_t *rec = strata_lx_xattrs(lx, i, &len);
	const uint8_t *found = NULL;

	*count = 0;
	if (!rec)
		return NULL;
	while (off + 6 <= len) {
		uint16_t nl = (uint16_t)(rec[off] | rec[off + 1] << 8);
		uint32_t vl = (uint32_t)rec[off + 2] | (uint32_t)rec[off + 3] << 8 |
			      (uint32_t)rec[off + 4] << 16 | (uint32_t)rec[off + 5] << 24;

		if (off + 6 + nl + vl > len)
			return NULL;
		(*count)++;
		if (nl == strlen(name) && !memcmp(rec + off + 6, name, nl)) {
			found = rec + off + 6 + nl;
			*vlen = vl;
		}
		off += 6 + nl + vl;
	}
	if (off != len)
		return NULL;
	return found;
}

static bool read_data(const struct strata_lindex *lx,
		      const struct strata_lx_entry *e, char *buf, size_t len)
{
	char name[16];
	cleanup_fd int fd = -1;
	ssize_t n;

	snprintf(name, sizeof(name), "%u", e->a);
	fd = openat(strata_lx_datafd(lx), name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = pread(fd, buf, len, 0);
	return n == (ssize_t)len && pread(fd, name, 1, (off_t)len) == 0;
}

/* ---- tests ---- */

static void test_namecmp(void)
{
	static const char *const sorted[] = {
		"", "A", "Z", "a", "a\x01", "aa", "ab", "b", ".", "..",
	};
	struct {
		const char *a, *b;
		int sign;
	} cases[] = {
		{ "a", "a", 0 }, { "", "", 0 }, { "a", "b", -1 }, { "b", "a", 1 },
		{ "a", "aa", -1 }, { "aa", "a", 1 }, { "ab", "b", -1 },
		{ "Z", "a", -1 }, { "a", "\xe9", -1 }, { "\xff", "\x7f", 1 },
		{ ".wh.a", "a", -1 }, { "", "a", -1 }, { "abc", "abd", -1 },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		int c = strata_lx_namecmp(cases[i].a, strlen(cases[i].a),
					  cases[i].b, strlen(cases[i].b));

		is_int(c < 0 ? -1 : c > 0, cases[i].sign, "namecmp(\"%s\", \"%s\")",
		       cases[i].a, cases[i].b);
	}
	/* embedded NUL bytes: length decides, bytes compared unsigned */
	ok(strata_lx_namecmp("a\0b", 3, "a\0c", 3) < 0, "namecmp with NULs");
	ok(strata_lx_namecmp("a", 1, "a\0", 2) < 0, "shorter first");
	(void)sorted;
}

/* The main layer: every kind of entry. */
static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
static const char cap[] = { 0x01, 0x00, 0x00, 0x02, 0x20, 0x00 };

static const struct ent layer_a[] = {
	{ .name = "./", .type = AE_IFDIR, .perm = 0751, .mtime = 1234567890, .nsec = 5 },
	{ .name = "etc/", .type = AE_IFDIR, .perm = 0755, .mtime = 1600000000, .nsec = 123456789 },
	{ .name = "etc/passwd", .type = AE_IFREG, .perm = 0644, .data = passwd,
	  .mtime = 1700000000, .nsec = 999999999,
	  .xn = { "security.selinux" }, .xv = { "system_u:object_r:etc_t:s0" } },
	{ .name = "etc/shadow", .type = AE_IFREG, .perm = 0640, .data = "secret\n",
	  .gid = 42, .mtime = 1700000001 },
	{ .name = "etc/.wh.shadow", .type = AE_IFREG, .perm = 0644, .data = "" },
	{ .name = "bin/", .type = AE_IFDIR, .perm = 0755 },
	{ .name = "bin/busybox", .type = AE_IFREG, .perm = 04755, .data = "BUSYBOX",
	  .mtime = 1 },
	H("bin/sh", "bin/busybox"),
	H("./bin/ls", "/bin/busybox"),
	{ .name = "bin/link", .type = AE_IFLNK, .perm = 0755, .link = "busybox",
	  .uid = 7, .gid = 8 },
	F("usr/lib/x/file", "deep"),
	{ .name = "usr/lib/", .type = AE_IFDIR, .perm = 0750, .uid = 3 },
	{ .name = "home/user/", .type = AE_IFDIR, .perm = 0700, .uid = 1000,
	  .gid = 1000 },
	{ .name = "home/user/.profile", .type = AE_IFREG, .perm = 0600,
	  .data = "export PS1='$ '\n", .uid = 1000, .gid = 1000,
	  .xn = { "user.foo", "security.capability" }, .xv = { "bar", cap },
	  .xl = { 0, sizeof(cap) } },
	F("home/user/.wh.gone", ""),
	D("opq/"),
	F("opq/keep", "k"),
	F("opq/.wh..wh..opq", ""),
	{ .name = "dev/null", .type = AE_IFCHR, .perm = 0666, .rmaj = 1, .rmin = 3 },
	{ .name = "fifo", .type = AE_IFIFO, .perm = 0600 },
	{ .name = "old", .type = AE_IFREG, .perm = 0644, .data = "",
	  .mtime = -86400 },
	{ .name = "ovl/", .type = AE_IFDIR, .perm = 0755,
	  .xn = { "trusted.overlay.opaque" }, .xv = { "y" } },
	F(".wh.redo", ""),
	D("redo/"),
	F("/abs", "absolute"),
	F("./a//b/./c", "normalised"),
	F("empty", ""),
};

static const char *const layer_a_paths[] = {
	"", "etc", "etc/passwd", "etc/shadow", "bin", "bin/busybox", "bin/sh",
	"bin/ls", "bin/link", "usr", "usr/lib", "usr/lib/x", "usr/lib/x/file",
	"home", "home/user", "home/user/.profile", "home/user/gone", "opq",
	"opq/keep", "dev", "dev/null", "fifo", "old", "ovl", "redo", "abs",
	"a", "a/b", "a/b/c", "empty",
};

static uint32_t e_uid(const struct strata_lindex *lx,
		      const struct strata_lx_entry *e)
{
	uint32_t uid, gid;

	strata_lx_owner_of(lx, e, &uid, &gid);
	return uid;
}

static uint32_t e_gid(const struct strata_lindex *lx,
		      const struct strata_lx_entry *e)
{
	uint32_t uid, gid;

	strata_lx_owner_of(lx, e, &uid, &gid);
	return gid;
}

static void check_sorted(const struct strata_lindex *lx)
{
	uint32_t i, n = strata_lx_count(lx), bad = 0, dirs = 0;

	for (i = 0; i < n; i++) {
		const struct strata_lx_entry *d = strata_lx_entry(lx, i);
		uint32_t c, sub = 0;

		if (!S_ISDIR(d->mode))
			continue;
		dirs++;
		if (d->b && (d->a == 0 || d->a + d->b > n))
			bad++;
		for (c = 0; c < d->b; c++) {
			const struct strata_lx_entry *x = strata_lx_entry(lx, d->a + c);

			if (S_ISDIR(x->mode))
				sub++;
			if (c && strata_lx_namecmp(
					strata_lx_str(lx, strata_lx_entry(lx, d->a + c - 1)->name_off),
					strata_lx_entry(lx, d->a + c - 1)->name_len,
					strata_lx_str(lx, x->name_off), x->name_len) >= 0)
				bad++;
			if (strata_lx_lookup(lx, i, strata_lx_str(lx, x->name_off),
					     x->name_len) != d->a + c)
				bad++;
		}
		if (strata_lx_nlink(lx, d) != 2 + sub)
			bad++;
	}
	is_int(bad, 0, "children contiguous, sorted, found by lookup; dir nlink = 2 + subdirs (%u dirs)", dirs);
}

static void test_layer_a(void)
{
	struct strata_err err = { 0 };
	char diff_id[STRATA_DIGEST_MAX];
	struct strata_lindex *lx = NULL;
	const struct strata_lx_entry *e, *e2, *e3;
	struct opts o = { .comp = STRATA_COMP_NONE };
	uint32_t i, i2, i3, bb;
	size_t blen = 0, n, k, vlen = 0;
	const struct strata_lx_xref *imp;
	const uint8_t *v;
	char buf[64];
	int cnt, r;

	r = unpack(layer_a, N(layer_a), &o, &err, diff_id, &blen);
	if (!is_int(r, 0, "unpack layer A")) {
		diag("%s", err.msg);
		return;
	}
	is_int(progress_bytes, blen, "progress reported every blob byte");
	r = strata_lindex_open(st, diff_id, &lx, &err);
	if (!is_int(r, 0, "lindex_open layer A")) {
		diag("%s", err.msg);
		return;
	}
	is_int(strata_lx_count(lx), N(layer_a_paths), "entry count");
	for (k = 0; k < N(layer_a_paths); k++)
		ok(find(lx, layer_a_paths[k]) != NONE, "lookup %s", layer_a_paths[k]);
	check_sorted(lx);

	/* root: "./" sets its attributes (P4) */
	e = strata_lx_entry(lx, 0);
	is_int(e->mode, S_IFDIR | 0751, "root mode from \"./\"");
	is_int(strata_lx_mtime_sec(e), 1234567890, "root mtime sec");
	is_int(strata_lx_mtime_nsec(e), 5, "root mtime nsec");
	ok(!(e->flags & STRATA_LX_IMPLIED), "root not implied");
	is_int(strata_lx_nlink(lx, e), 2 + 9, "root nlink: 2 + 9 subdirectories");
	is_int(e->b, 13, "root has 13 children");

	/* a regular file with nanoseconds and an xattr */
	e = get(lx, "etc/passwd", &i);
	if (ok(e != NULL, "etc/passwd")) {
		is_int(e->mode, S_IFREG | 0644, "passwd mode");
		is_int(e_uid(lx, e), 0, "passwd uid");
		is_int(e_gid(lx, e), 0, "passwd gid");
		is_int(e->size, sizeof(passwd) - 1, "passwd size");
		is_int(strata_lx_mtime_sec(e), 1700000000, "passwd mtime sec");
		is_int(strata_lx_mtime_nsec(e), 999999999, "passwd mtime nsec");
		is_int(strata_lx_nlink(lx, e), 1, "passwd nlink 1");
		is_int(e->b, i, "passwd is its own leader");
		ok(!(e->flags & (STRATA_LX_HARDLINK | STRATA_LX_WHITEOUT |
				 STRATA_LX_IMPLIED)), "passwd flags: no link/whiteout/implied");
		ok(e->flags & STRATA_LX_XATTRS, "passwd has xattrs");
		ok(e->a != 0, "passwd has a content file");
		ok(read_data(lx, e, buf, sizeof(passwd) - 1) &&
		   !memcmp(buf, passwd, sizeof(passwd) - 1), "passwd content");
		v = xattr(lx, i, "security.selinux", &vlen, &cnt);
		ok(v && vlen == 26 && !memcmp(v, "system_u:object_r:etc_t:s0", 26),
		   "passwd security.selinux");
		is_int(cnt, 1, "passwd has one xattr record");
		is_str(strata_lx_str(lx, e->name_off), "passwd", "name string");
		is_int(e->name_len, 6, "name_len");
	}
	ok(strata_lx_features(lx) & STRATA_LX_HAS_SELINUX, "feature HAS_SELINUX");
	ok(!(strata_lx_features(lx) & STRATA_LX_HAS_ACL), "no HAS_ACL");
	e = get(lx, "etc", NULL);
	if (ok(e != NULL, "etc")) {
		is_int(strata_lx_mtime_sec(e), 1600000000, "etc mtime sec");
		is_int(strata_lx_mtime_nsec(e), 123456789, "etc mtime nsec");
		is_int(e->b, 2, "etc has 2 children (the same-layer whiteout folded)");
	}

	/* W6: a whiteout never hides an entry of its own layer */
	e = get(lx, "etc/shadow", NULL);
	if (ok(e != NULL, "etc/shadow survives etc/.wh.shadow")) {
		is_int(e->mode, S_IFREG | 0640, "shadow mode");
		is_int(e_gid(lx, e), 42, "shadow gid 42");
		ok(!(e->flags & STRATA_LX_WHITEOUT), "shadow is not a whiteout");
	}
	ok(find(lx, "etc/.wh.shadow") == NONE, ".wh.shadow is not an entry");

	/* hardlinks: one group of three, leader bin/busybox */
	e = get(lx, "bin/busybox", &bb);
	e2 = get(lx, "bin/sh", &i2);
	e3 = get(lx, "bin/ls", &i3);
	if (ok(e && e2 && e3, "bin/busybox, bin/sh, bin/ls")) {
		is_int(e->b, bb, "busybox leads its group");
		is_int(e2->b, bb, "sh's leader is busybox");
		is_int(e3->b, bb, "ls's leader is busybox (\"./\" and \"/\" forms)");
		is_int(strata_lx_nlink(lx, e), 3, "busybox nlink 3");
		is_int(strata_lx_nlink(lx, e2), 3, "sh nlink 3");
		is_int(strata_lx_nlink(lx, e3), 3, "ls nlink 3");
		ok((e->flags & e2->flags & e3->flags & STRATA_LX_HARDLINK),
		   "all three flagged HARDLINK");
		is_int(e2->mode, S_IFREG | 04755, "sh has the group's mode (setuid kept)");
		is_int(e2->size, 7, "sh has the group's size");
		is_int(e2->a, e->a, "sh shares the content file");
		is_int(strata_lx_mtime_sec(e3), 1, "ls has the group's mtime");
		ok(read_data(lx, e3, buf, 7) && !memcmp(buf, "BUSYBOX", 7),
		   "ls content");
	}

	/* symlink */
	e = get(lx, "bin/link", NULL);
	if (ok(e != NULL, "bin/link")) {
		is_int(e->mode, S_IFLNK | 0777, "symlink mode is 0777");
		is_int(e->size, 7, "symlink size = target length");
		is_str(strata_lx_str(lx, e->a), "busybox", "symlink target");
		is_int(e_uid(lx, e), 7, "symlink uid");
		is_int(e_gid(lx, e), 8, "symlink gid");
		ok(!(e->flags & STRATA_LX_HARDLINK), "symlink not a hardlink");
	}

	/* implied directories */
	e = get(lx, "usr", NULL);
	if (ok(e != NULL, "usr")) {
		ok(e->flags & STRATA_LX_IMPLIED, "usr is implied");
		is_int(e->mode, S_IFDIR | 0755, "implied dir mode 0755");
		is_int(e_uid(lx, e), 0, "implied dir uid 0");
	}
	e = get(lx, "usr/lib", NULL);
	if (ok(e != NULL, "usr/lib")) {
		ok(!(e->flags & STRATA_LX_IMPLIED), "usr/lib listed later: not implied");
		is_int(e->mode, S_IFDIR | 0750, "usr/lib mode from its entry");
		is_int(e_uid(lx, e), 3, "usr/lib uid from its entry");
	}
	e = get(lx, "usr/lib/x", NULL);
	ok(e && (e->flags & STRATA_LX_IMPLIED), "usr/lib/x is implied");
	e = get(lx, "home", NULL);
	ok(e && (e->flags & STRATA_LX_IMPLIED), "home is implied");
	e = get(lx, "a/b", NULL);
	ok(e && (e->flags & STRATA_LX_IMPLIED), "a/b (from ./a//b/./c) is implied");
	imp = strata_lx_implied(lx, &n);
	is_int(n, 6, "six implied dirs: a a/b dev home usr usr/lib/x");
	{
		const char *want[] = { "a", "dev", "home", "usr", "a/b", "usr/lib/x" };
		size_t w, bad = 0, found = 0;

		for (k = 0; k < n; k++) {
			const char *p = strata_lx_str(lx, imp[k].off);
			const struct strata_lx_entry *x = strata_lx_entry(lx, imp[k].entry);

			if (!x || !(x->flags & STRATA_LX_IMPLIED) ||
			    find(lx, p) != imp[k].entry)
				bad++;
			for (w = 0; w < N(want); w++)
				if (!strcmp(p, want[w]))
					found++;
			/* parents first */
			if (k && strchr(strata_lx_str(lx, imp[k - 1].off), '/') &&
			    !strchr(p, '/'))
				bad++;
		}
		is_int(bad, 0, "implied table: paths find their entries, parents first");
		is_int(found, N(want), "implied table lists exactly the implied dirs");
	}

	/* owner, mode, xattrs with binary values */
	e = get(lx, "home/user", NULL);
	if (ok(e != NULL, "home/user")) {
		is_int(e->mode, S_IFDIR | 0700, "home/user mode");
		is_int(e_uid(lx, e), 1000, "home/user uid");
		is_int(e_gid(lx, e), 1000, "home/user gid");
	}
	e = get(lx, "home/user/.profile", &i);
	if (ok(e != NULL, ".profile")) {
		ok(e->flags & STRATA_LX_XATTRS, ".profile has xattrs");
		v = xattr(lx, i, "user.foo", &vlen, &cnt);
		ok(v && vlen == 3 && !memcmp(v, "bar", 3), "user.foo = bar");
		v = xattr(lx, i, "security.capability", &vlen, &cnt);
		ok(v && vlen == sizeof(cap) && !memcmp(v, cap, sizeof(cap)),
		   "security.capability binary value (with NULs) intact");
		is_int(cnt, 2, ".profile has two xattr records");
	}
	{
		size_t len = 99;

		ok(strata_lx_xattrs(lx, 0, &len) == NULL, "root has no xattrs");
	}

	/* whiteouts and opaque directories */
	e = get(lx, "home/user/gone", NULL);
	if (ok(e != NULL, "whiteout entry home/user/gone")) {
		ok(e->flags & STRATA_LX_WHITEOUT, "gone is a whiteout");
		is_int(e->mode, 0, "whiteout mode 0");
	}
	ok(find(lx, "home/user/.wh.gone") == NONE, "no .wh.gone entry");
	e = get(lx, "opq", NULL);
	ok(e && (e->flags & STRATA_LX_OPAQUE), "opq is opaque");
	ok(e && e->b == 1, "opq has one child (keep), the marker is not an entry");
	ok(find(lx, "opq/.wh..wh..opq") == NONE, "no marker entry");
	e = get(lx, "redo", NULL);
	if (ok(e != NULL, "redo")) {
		ok(S_ISDIR(e->mode), "redo is a directory");
		ok(e->flags & STRATA_LX_OPAQUE,
		   "whited out and recreated in one layer: opaque");
		ok(!(e->flags & STRATA_LX_WHITEOUT), "redo is not a whiteout");
	}
	e = get(lx, "ovl", &i);
	ok(e && !(e->flags & STRATA_LX_XATTRS) && !(e->flags & STRATA_LX_OPAQUE),
	   "trusted.overlay.opaque from a layer is dropped (T5)");

	/* devices, fifos, times, paths */
	e = get(lx, "dev/null", NULL);
	if (ok(e != NULL, "dev/null")) {
		is_int(e->mode, S_IFCHR | 0666, "dev/null mode");
		is_int(e->size, makedev(1, 3), "dev/null rdev 1:3");
	}
	e = get(lx, "fifo", NULL);
	ok(e && e->mode == (S_IFIFO | 0600), "fifo mode");
	e = get(lx, "old", NULL);
	ok(e && strata_lx_mtime_sec(e) == -86400 && strata_lx_mtime_nsec(e) == 0,
	   "negative mtime -86400");
	e = get(lx, "abs", NULL);
	ok(e && e->size == 8 && read_data(lx, e, buf, 8) && !memcmp(buf, "absolute", 8),
	   "\"/abs\" stored root-relative as abs (P2)");
	e = get(lx, "a/b/c", NULL);
	ok(e && e->size == 10 && read_data(lx, e, buf, 10) &&
	   !memcmp(buf, "normalised", 10), "\"./a//b/./c\" normalised (P3)");
	e = get(lx, "empty", NULL);
	ok(e && e->size == 0 && e->a == 0, "empty file has no content file");

	/* lookups that fail */
	is_int(strata_lx_lookup(lx, 0, "nope", 4), NONE, "lookup of a missing name");
	is_int(strata_lx_lookup(lx, find(lx, "etc/passwd"), "x", 1), NONE,
	       "lookup below a file");
	is_int(strata_lx_lookup(lx, 0, "et", 2), NONE, "lookup of a prefix");
	is_int(strata_lx_lookup(lx, 0, "etc/", 4), NONE, "lookup with a slash");
	is_int(strata_lx_lookup(lx, 9999, "etc", 3), NONE, "lookup in an out-of-range dir");
	ok(strata_lx_entry(lx, strata_lx_count(lx)) == NULL, "entry(count) is NULL");
	strata_lindex_close(lx);

	/* the same layer compressed: same index */
	{
		static const struct {
			int comp, blob;
			const char *what;
		} comps[] = {
			{ STRATA_COMP_GZIP, 0, "gzip" },
			{ STRATA_COMP_ZSTD, 0, "zstd" },
			{ STRATA_COMP_SNIFF, STRATA_COMP_GZIP, "sniffed gzip" },
			{ STRATA_COMP_SNIFF, STRATA_COMP_ZSTD, "sniffed zstd" },
			{ STRATA_COMP_SNIFF, STRATA_COMP_NONE, "sniffed tar" },
		};

		for (k = 0; k < N(comps); k++) {
			char d2[STRATA_DIGEST_MAX];

			memset(&err, 0, sizeof(err));
			o.comp = comps[k].comp;
			o.blob_comp = comps[k].blob;
			r = unpack(layer_a, N(layer_a), &o, &err, d2, &blen);
			if (!is_int(r, 0, "unpack layer A, %s", comps[k].what))
				diag("%s", err.msg);
			is_str(d2, diff_id, "  same diff_id");
			lx = NULL;
			if (r == 0 && strata_lindex_open(st, d2, &lx, NULL) == 0) {
				is_int(strata_lx_count(lx), N(layer_a_paths), "  same entry count");
				e = get(lx, "bin/sh", NULL);
				ok(e && strata_lx_nlink(lx, e) == 3 && read_data(lx, e, buf, 7) &&
				   !memcmp(buf, "BUSYBOX", 7), "  bin/sh content");
				strata_lindex_close(lx);
			} else {
				ok(0, "  lindex_open");
			}
		}
	}
}

struct bad {
	const char *what;
	struct ent e[4];
	size_t n;
	int want;
	const char *entry;	/* the message must name this entry */
};

static void test_refusals(void)
{
	static char long255[256], long256[257];
	struct bad cases[] = {
		{ "../x", { F("../x", "x") }, 1, -EPERM, "../x" },
		{ "a/../../x", { F("a/../../x", "x") }, 1, -EPERM, "a/../../x" },
		{ "/../x", { F("/../x", "x") }, 1, -EPERM, "/../x" },
		{ "bare ..", { D("..") }, 1, -EPERM, ".." },
		{ "symlink parent", { L("l", "/etc"), F("l/passwd", "x") }, 2,
		  -EPERM, "l/passwd" },
		{ "symlink parent (dir)", { L("l", "."), D("l/d/") }, 2,
		  -EPERM, "l/d/" },
		{ "parent is a file", { F("f", "1"), F("f/x", "2") }, 2, -ENOTDIR, "f/x" },
		{ "hardlink to missing", { H("h", "nothere") }, 1, -EPERM, "h" },
		{ "hardlink before target", { H("h", "t"), F("t", "1") }, 2, -EPERM, "h" },
		{ "hardlink to a dir", { D("d/"), H("h", "d") }, 2, -EPERM, "h" },
		{ "hardlink leaving the layer", { F("t", "1"), H("h", "../t") }, 2,
		  -EPERM, "h" },
		{ "hardlink to the root", { H("h", "./") }, 1, -EPERM, "h" },
		{ "hardlink to itself", { H("h", "h") }, 1, -EPERM, "h" },
		{ "hardlink to a whiteout", { F(".wh.w", ""), H("h", "w") }, 2,
		  -EPERM, "h" },
		{ "bare .wh.", { F(".wh.", "") }, 1, -EBADMSG, ".wh." },
		{ "dir/.wh.", { D("dir/"), F("dir/.wh.", "") }, 2, -EBADMSG, "dir/.wh." },
		{ ".wh..", { F(".wh..", "") }, 1, -EPERM, ".wh.." },
		{ ".wh...", { F("etc/.wh...", "") }, 1, -EPERM, "etc/.wh..." },
		{ ".wh. on a directory", { F(".wh.etc/x", "") }, 1, -EPERM, ".wh.etc/x" },
		{ "file for the root", { F(".", "x") }, 1, -EPERM, "." },
		{ "symlink for the root", { L("./", "x") }, 1, -EPERM, "./" },
		{ "name component of 256 bytes", { F(long256, "x") }, 1,
		  -ENAMETOOLONG, "xxxxxxxxxxxxxxxx" },
		{ "empty symlink target", { L("l", "") }, 1, -EBADMSG, "l" },
	};
	size_t i;

	memset(long255, 'x', 255);
	memset(long256, 'x', 256);
	for (i = 0; i < N(cases); i++) {
		struct strata_err err = { 0 };
		struct opts o = { .comp = STRATA_COMP_NONE };
		char want[400];
		int r = unpack(cases[i].e, cases[i].n, &o, &err, NULL, NULL);

		is_int(r, cases[i].want, "refuse %s", cases[i].what);
		snprintf(want, sizeof(want), ": entry %s", cases[i].entry);
		ok(err.code == r && strstr(err.msg, want) && !strncmp(err.msg, "layer sha256:", 13),
		   "  message names layer and entry: %s", err.msg);
	}
	/* a 255-byte component is fine */
	{
		struct ent e[] = { F(long255, "x") };
		struct strata_err err = { 0 };
		struct opts o = { .comp = STRATA_COMP_NONE };
		char diff_id[STRATA_DIGEST_MAX];
		struct strata_lindex *lx = NULL;

		is_int(unpack(e, 1, &o, &err, diff_id, NULL), 0,
		       "a 255-byte name is accepted");
		if (strata_lindex_open(st, diff_id, &lx, NULL) == 0) {
			ok(find(lx, long255) != NONE, "  and found");
			strata_lindex_close(lx);
		}
	}
}

/* R16: a name given twice is applied in order, the later entry kept (as
 * Docker, containerd and umoci apply it); a directory over a directory
 * merges. */
static void test_duplicates(void)
{
	static const struct {
		const char *what;
		struct ent e[4];
		size_t n;
		const char *path;	/* then holds */
		mode_t type;
		uint64_t size;
		const char *gone;	/* and this is gone */
	} cases[] = {
		{ "file then file", { F("f", "1"), F("f", "22") }, 2, "f",
		  S_IFREG, 2, NULL },
		{ "file then dir", { F("f", "1"), D("f/") }, 2, "f", S_IFDIR, 0,
		  NULL },
		{ "dir then file", { D("d/"), F("d/x", "x"), F("d", "1") }, 3,
		  "d", S_IFREG, 1, "d/x" },
		{ "file then file via ./", { F("f", "1"), F("./f", "333") }, 2,
		  "f", S_IFREG, 3, NULL },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		struct strata_err err = { 0 };
		struct opts o = { .comp = STRATA_COMP_NONE };
		char diff_id[STRATA_DIGEST_MAX];
		struct strata_lindex *lx = NULL;
		const struct strata_lx_entry *e;

		is_int(unpack(cases[i].e, cases[i].n, &o, &err, diff_id, NULL),
		       0, "%s: accepted", cases[i].what);
		if (strata_lindex_open(st, diff_id, &lx, NULL) < 0)
			continue;
		e = get(lx, cases[i].path, NULL);
		ok(e && (e->mode & S_IFMT) == cases[i].type &&
		   (cases[i].type == S_IFDIR || e->size == cases[i].size),
		   "  the later entry is kept");
		if (cases[i].gone)
			ok(find(lx, cases[i].gone) == NONE,
			   "  what the earlier one held is gone");
		strata_lindex_close(lx);
	}
}

static void test_limits(void)
{
	static const struct ent five[] = {
		D("a/"), F("a/1", "1"), F("a/2", "2"), F("a/3", "3"), F("a/4", "4"),
	};
	struct strata_err err = { 0 };
	struct opts o = { .comp = STRATA_COMP_NONE };
	char diff_id[STRATA_DIGEST_MAX];
	cleanup_free char *big = malloc(3u << 20);
	size_t blen = 0, k;
	int r;

	o.max_entries = 4;
	r = unpack(five, N(five), &o, &err, NULL, NULL);
	is_int(r, -EFBIG, "5 entries with max_entries 4 -> EFBIG");
	ok(strstr(err.msg, "entry a/4") && strstr(err.msg, "too many entries"),
	   "  message: %s", err.msg);
	memset(&err, 0, sizeof(err));
	o.max_entries = 5;
	is_int(unpack(five, N(five), &o, &err, NULL, NULL), 0,
	       "5 entries with max_entries 5");

	/* uncompressed bytes: the whole tar is 5 * 1024 + 1024 end blocks
	 * (+ padding to 10240) */
	o.max_entries = 0;
	memset(&err, 0, sizeof(err));
	o.max_bytes = 4096;
	r = unpack(five, N(five), &o, &err, NULL, &blen);
	is_int(r, -EFBIG, "a %zu-byte tar with max_bytes 4096 -> EFBIG", blen);
	ok(strstr(err.msg, "exceeds the limit"), "  message: %s", err.msg);
	memset(&err, 0, sizeof(err));
	o.max_bytes = blen;
	is_int(unpack(five, N(five), &o, &err, NULL, NULL), 0,
	       "max_bytes equal to the tar size is enough");
	memset(&err, 0, sizeof(err));
	o.max_bytes = blen - 1;
	is_int(unpack(five, N(five), &o, &err, NULL, NULL), -EFBIG,
	       "one byte less -> EFBIG");

	/* the limit hit in the middle of a file's data (gzip bomb shape) */
	if (!big)
		abort();
	for (k = 0; k < (3u << 20); k++)
		big[k] = (char)(k * 7 + k / 4096);
	{
		struct ent e[] = {
			{ .name = "big", .type = AE_IFREG, .perm = 0644,
			  .data = big, .dlen = 3u << 20 },
		};

		memset(&err, 0, sizeof(err));
		o.max_bytes = 2u << 20;
		o.comp = STRATA_COMP_GZIP;
		r = unpack(e, 1, &o, &err, NULL, NULL);
		is_int(r, -EFBIG, "gzip layer expanding past max_bytes mid-file -> EFBIG");
		ok(strstr(err.msg, "exceeds the limit") != NULL, "  message: %s", err.msg);
		memset(&err, 0, sizeof(err));
		o.comp = STRATA_COMP_NONE;
		r = unpack(e, 1, &o, &err, NULL, NULL);
		is_int(r, -EFBIG, "plain layer past max_bytes mid-file -> EFBIG");
		ok(strstr(err.msg, "exceeds the limit") != NULL, "  message: %s", err.msg);
		memset(&err, 0, sizeof(err));
		o.max_bytes = 0;
		r = unpack(e, 1, &o, &err, diff_id, NULL);
		is_int(r, 0, "the 3 MiB file within limits");
		if (r == 0) {
			struct strata_lindex *lx = NULL;
			cleanup_free char *back = malloc(3u << 20);
			const struct strata_lx_entry *x;

			if (strata_lindex_open(st, diff_id, &lx, NULL) == 0) {
				x = get(lx, "big", NULL);
				ok(x && back && x->size == (3u << 20) &&
				   read_data(lx, x, back, 3u << 20) &&
				   !memcmp(back, big, 3u << 20), "  3 MiB content intact");
				strata_lindex_close(lx);
			}
		}
	}

	/* owners: entries name a (uid, gid) pair by a 16-bit index, so a
	 * layer may have 65535 different pairs (0:0, the root's, included) */
	{
		const size_t n = 65535;
		cleanup_free struct ent *many = calloc(n, sizeof(*many));
		cleanup_free char (*names)[16] = malloc(n * 16);
		struct strata_lindex *lx = NULL;

		if (!many || !names)
			abort();
		for (k = 0; k < n; k++) {
			snprintf(names[k], 16, "f%zu", k);
			many[k] = (struct ent){ .name = names[k],
				.type = AE_IFREG, .perm = 0644,
				.uid = 1000 + (int64_t)k, .gid = 7 };
		}
		memset(&err, 0, sizeof(err));
		r = unpack(many, n - 1, &o, &err, diff_id, NULL);
		is_int(r, 0, "65534 owners besides the root's 0:0");
		if (r == 0 && strata_lindex_open(st, diff_id, &lx, NULL) == 0) {
			const struct strata_lx_entry *x = get(lx, "f65533", NULL);
			const struct strata_lx_entry *y = get(lx, "f0", NULL);

			ok(x && e_uid(lx, x) == 1000 + 65533 && e_gid(lx, x) == 7 &&
			   y && e_uid(lx, y) == 1000 && e_gid(lx, y) == 7 &&
			   e_uid(lx, strata_lx_entry(lx, 0)) == 0,
			   "  owners read back");
			strata_lindex_close(lx);
		}
		memset(&err, 0, sizeof(err));
		r = unpack(many, n, &o, &err, NULL, NULL);
		is_int(r, -EBADMSG, "65536 different owners -> EBADMSG");
		ok(strstr(err.msg, "entry f65534") && strstr(err.msg, "owners"),
		   "  message: %s", err.msg);
	}
}

static void test_verification(void)
{
	static const struct ent two[] = { D("d/"), F("d/f", "content") };
	static const char other[] = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	struct strata_err err = { 0 };
	struct opts o = { .comp = STRATA_COMP_NONE };
	char diff_id[STRATA_DIGEST_MAX];
	struct strata_lindex *lx = NULL;
	int r;

	o.diff_id = other;
	r = unpack(two, N(two), &o, &err, diff_id, NULL);
	is_int(r, -EBADMSG, "diff_id mismatch -> EBADMSG");
	ok(strstr(err.msg, "diff_id mismatch") && strstr(err.msg, other) &&
	   strstr(err.msg, diff_id), "  message names both digests: %s", err.msg);
	is_int(strata_lindex_open(st, diff_id, &lx, NULL), -ENOENT,
	       "  nothing left in the cache");

	memset(&err, 0, sizeof(err));
	o.diff_id = NULL;
	o.comp = STRATA_COMP_GZIP;
	o.digest = other;
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "blob digest mismatch -> EBADMSG");
	ok(strstr(err.msg, "digest mismatch") != NULL, "  message: %s", err.msg);

	memset(&err, 0, sizeof(err));
	o.digest = NULL;
	o.size_delta = -1;
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "blob longer than the descriptor size -> EBADMSG");
	ok(strstr(err.msg, "size mismatch") != NULL, "  message: %s", err.msg);
	memset(&err, 0, sizeof(err));
	o.size_delta = 1;
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "blob shorter than the descriptor size -> EBADMSG");
	ok(strstr(err.msg, "size mismatch") != NULL, "  message: %s", err.msg);
	o.size_delta = 0;

	memset(&err, 0, sizeof(err));
	o.corrupt = true;
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "corrupt gzip data -> EBADMSG");
	o.corrupt = false;

	memset(&err, 0, sizeof(err));
	o.comp = STRATA_COMP_NONE;
	o.digest = "sha384:abcdef";
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EOPNOTSUPP, "unverifiable digest algorithm -> EOPNOTSUPP");
	o.digest = NULL;

	memset(&err, 0, sizeof(err));
	o.comp = STRATA_COMP_GZIP;
	o.raw = true;
	o.raw_blob = "this is not a tar archive, just some text that is long enough";
	o.raw_len = strlen(o.raw_blob);
	r = unpack(NULL, 0, &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "gzip of text that is not a tar -> EBADMSG");
	ok(strncmp(err.msg, "layer sha256:", 13) == 0, "  message: %s", err.msg);

	memset(&err, 0, sizeof(err));
	o.comp = STRATA_COMP_GZIP;
	o.raw = false;
	o.blob_comp = 0;
	r = unpack(two, N(two), &o, &err, diff_id, NULL);
	is_int(r, 0, "the same layer, intact, unpacks");
	lx = NULL;
	if (r == 0 && strata_lindex_open(st, diff_id, &lx, NULL) == 0) {
		ok(find(lx, "d/f") != NONE, "  d/f present");
		strata_lindex_close(lx);
	}

	/* the wrong compression for the media type is refused (R6) */
	memset(&err, 0, sizeof(err));
	o.comp = STRATA_COMP_NONE;
	o.declare = 1 + STRATA_COMP_GZIP;
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "plain tar declared as gzip -> EBADMSG");
	ok(strstr(err.msg, "gzip") != NULL, "  message: %s", err.msg);
	memset(&err, 0, sizeof(err));
	o.comp = STRATA_COMP_GZIP;
	o.declare = 1 + STRATA_COMP_NONE;
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "gzip blob declared as plain tar -> EBADMSG");
	memset(&err, 0, sizeof(err));
	o.comp = STRATA_COMP_ZSTD;
	o.declare = 1 + STRATA_COMP_GZIP;
	r = unpack(two, N(two), &o, &err, NULL, NULL);
	is_int(r, -EBADMSG, "zstd blob declared as gzip -> EBADMSG");
	o.declare = 0;
}

static void test_lindex_open_errors(void)
{
	struct strata_err err = { 0 };
	struct strata_lindex *lx = NULL;
	static const char missing[] = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
	static const struct ent one[] = { F("f", "1") };
	struct opts o = { .comp = STRATA_COMP_NONE };
	char diff_id[STRATA_DIGEST_MAX], rel[STRATA_DIGEST_MAX + 16];
	int r;

	r = strata_lindex_open(st, missing, &lx, &err);
	is_int(r, -ENOENT, "lindex_open of an uncached layer -> ENOENT");
	ok(lx == NULL && strstr(err.msg, missing), "  message: %s", err.msg);

	if (unpack(one, 1, &o, NULL, diff_id, NULL) != 0) {
		ok(0, "unpack one file");
		return;
	}
	strata_blob_relpath(diff_id, rel, sizeof(rel));
	strcat(rel, "/index");
	{
		cleanup_free char *idx = NULL;
		size_t len = 0;

		if (strata_read_file(st->layers_fd, rel, 1 << 20, &idx, &len) < 0) {
			ok(0, "read index");
			return;
		}
		/* truncated */
		strata_write_atomic(st->layers_fd, rel, idx, len - 1, 0644);
		memset(&err, 0, sizeof(err));
		is_int(strata_lindex_open(st, diff_id, &lx, &err), -EBADMSG,
		       "truncated index -> EBADMSG");
		/* wrong magic */
		idx[0] ^= 1;
		strata_write_atomic(st->layers_fd, rel, idx, len, 0644);
		is_int(strata_lindex_open(st, diff_id, &lx, NULL), -EBADMSG,
		       "bad magic -> EBADMSG");
		idx[0] ^= 1;
		/* entries past the end */
		((struct strata_lx_header *)idx)->n_entries = 1000000;
		strata_write_atomic(st->layers_fd, rel, idx, len, 0644);
		is_int(strata_lindex_open(st, diff_id, &lx, NULL), -EBADMSG,
		       "n_entries past the file -> EBADMSG");
		/* empty */
		strata_write_atomic(st->layers_fd, rel, "", 0, 0644);
		is_int(strata_lindex_open(st, diff_id, &lx, NULL), -EBADMSG,
		       "empty index -> EBADMSG");
		ok(lx == NULL, "no index returned");
	}
}

int main(void)
{
	const char *t = getenv("TMPDIR");
	char root[4200];
	struct strata_err err = { 0 };

	umask(022);
	snprintf(tmpdir, sizeof(tmpdir), "%s/strata-lindex-XXXXXX",
		 t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 99;
	}
	tmpfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(root, sizeof(root), "%s/store", tmpdir);
	if (tmpfd < 0 || strata_store_open(root, &st, &err) < 0) {
		printf("Bail out! store: %s\n", err.msg);
		return 99;
	}
	test_namecmp();
	test_layer_a();
	test_refusals();
	test_duplicates();
	test_limits();
	test_verification();
	test_lindex_open_errors();
	strata_store_free(st);
	close(tmpfd);
	is_int(strata_rmtree_at(AT_FDCWD, tmpdir), 0, "temp dir removed");
	return done_testing();
}
