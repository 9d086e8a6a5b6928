/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lxdump: strata's reading of one layer tar, for the differential test
 * against Go's archive/tar (tests/gotar, test_tar_differential.py).
 *
 *   lxdump [--gzip] [--lazy] FILE
 *
 * Runs the unpacker import uses (strata_unpack_layer) on FILE into a
 * private cache directory under $TMPDIR, opens the index it wrote as
 * stratafs does (strata_lindex_open) and prints the layer as JSON lines,
 * one per index entry, parents before children, children by name:
 * path, type, flags, mode, owner, size, mtime, link target, device,
 * xattrs, sha256 of the content ("skipped" past 256 MiB) and the
 * hardlink group. When strata
 * refuses the layer it prints one "error" line (errno and message) and
 * exits 1. Test-only: built by meson, never installed.
 *
 * With --lazy, the metadata pass of a lazy layer instead (what stratafs
 * -o lazy runs, store/layer/lazy-zran.c): the index is Go's reading alone,
 * no content is written, and each file's content is hashed from the
 * uncompressed tar at the offset the pass recorded for it, which is where
 * the mount reads it. A layer the pass leaves to a full unpack (a sparse
 * file: -EOPNOTSUPP) is unpacked in full, as stratafs does.
 *
 * The unpacker checks the diff_id, which for a gzip layer is the hash of
 * the stream strata decompresses; rather than decompress a second way
 * here, a first pass learns it from the mismatch message and a second
 * pass unpacks with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <zlib.h>

#include "store-internal.h"
#include "unpack.h"

/* --lazy: where the pass found each content (by content number), and the
 * uncompressed tar to read it from */
struct lazy_rec {
	uint64_t off, size;
};

static struct lazy_rec *lazy_recs;
static size_t lazy_n;
static int lazy_tar = -1;

static int lazy_file(void *ctx, uint32_t id, const char *name,
		     uint64_t off, uint64_t size)
{
	(void)ctx;
	(void)name;
	if (id >= lazy_n) {
		size_t n = (size_t)id * 2 + 16;
		struct lazy_rec *p = realloc(lazy_recs, n * sizeof(*p));

		if (!p)
			return -ENOMEM;
		memset(p + lazy_n, 0, (n - lazy_n) * sizeof(*p));
		lazy_recs = p;
		lazy_n = n;
	}
	lazy_recs[id].off = off;
	lazy_recs[id].size = size;
	return 0;
}

/* The tar of @fd (gzip when @gz: its members as one stream) in the file
 * @path, for --lazy. */
static int lazy_tar_open(int fd, bool gz, const char *path)
{
	char buf[65536];
	cleanup_fd int out = -1;
	gzFile z;
	int n;

	if (!gz)
		return dup(fd);
	out = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	z = gzdopen(dup(fd), "rb");
	if (!z)
		return -1;
	while ((n = gzread(z, buf, sizeof(buf))) > 0)
		if (strata_write_all(out, buf, (size_t)n) < 0)
			break;
	gzclose(z);
	if (n != 0)	/* the pass refused what zlib cannot read */
		return -1;
	n = out;
	out = -1;
	return n;
}

/* Hash @len bytes at @off of the lazy tar. */
static int hash_range(uint64_t off, uint64_t len, char *out)
{
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	char buf[65536];
	int r = strata_hasher_new_alg("sha256", &h);

	if (r < 0)
		return r;
	while (len) {
		ssize_t n = pread(lazy_tar, buf, len < sizeof(buf) ?
				  (size_t)len : sizeof(buf), (off_t)off);

		if (n <= 0)
			return -EIO;
		strata_hasher_update(h, buf, (size_t)n);
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	strata_hasher_final(h, out);
	return 0;
}

/* Bytes as the Go reader prints them: printable ASCII but '\' as is,
 * others \xNN (written as a JSON string, so the backslash doubles). */
static void put_esc(const char *s, size_t len)
{
	size_t i;

	putchar('"');
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"')
			fputs("\\\"", stdout);
		else if (c >= 0x20 && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\\\x%02x", c);
	}
	putchar('"');
}

/* Content hashed up to this size, as tests/gotar does (-max-data). */
#define MAX_HASHED (256ull << 20)

static int hash_fd(int fd, char *out)
{
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	char buf[65536];
	ssize_t n;
	int r = strata_hasher_new_alg("sha256", &h);

	if (r < 0)
		return r;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		strata_hasher_update(h, buf, (size_t)n);
	if (n < 0)
		return -errno;
	strata_hasher_final(h, out);
	return 0;
}

static const char *type_name(const struct strata_lx_entry *e)
{
	if (e->flags & STRATA_LX_WHITEOUT)
		return "whiteout";
	switch (e->mode & S_IFMT) {
	case S_IFDIR:
		return "dir";
	case S_IFREG:
		return "reg";
	case S_IFLNK:
		return "symlink";
	case S_IFCHR:
		return "chr";
	case S_IFBLK:
		return "blk";
	case S_IFIFO:
		return "fifo";
	}
	return "unknown";
}

static void put_flags(uint8_t f)
{
	static const struct {
		uint8_t bit;
		const char *name;
	} names[] = {
		{ STRATA_LX_WHITEOUT, "whiteout" },
		{ STRATA_LX_OPAQUE, "opaque" },
		{ STRATA_LX_IMPLIED, "implied" },
		{ STRATA_LX_HARDLINK, "hardlink" },
		{ STRATA_LX_XATTRS, "xattrs" },
		{ STRATA_LX_GHOST, "ghost" },
		{ STRATA_LX_REPLACED, "replaced" },
	};
	size_t i;
	bool first = true;

	putchar('[');
	for (i = 0; i < ARRAY_SIZE(names); i++) {
		if (!(f & names[i].bit))
			continue;
		printf("%s\"%s\"", first ? "" : ",", names[i].name);
		first = false;
	}
	putchar(']');
}

static void put_xattrs(const struct strata_lindex *lx, uint32_t i)
{
	size_t len = 0, off = 0;
	const uint8_t *p = strata_lx_xattrs(lx, i, &len);
	bool first = true;

	putchar('{');
	while (p && off + 6 <= len) {
		size_t nl = (size_t)p[off] | (size_t)p[off + 1] << 8;
		size_t vl = (size_t)p[off + 2] | (size_t)p[off + 3] << 8 |
			    (size_t)p[off + 4] << 16 | (size_t)p[off + 5] << 24;

		if (off + 6 + nl + vl > len)
			break;
		if (!first)
			putchar(',');
		put_esc((const char *)p + off + 6, nl);
		putchar(':');
		put_esc((const char *)p + off + 6 + nl, vl);
		first = false;
		off += 6 + nl + vl;
	}
	putchar('}');
}

struct dump {
	const struct strata_lindex *lx;
	char **paths;		/* by entry index, for hardlink groups */
};

static int dump_entry(struct dump *d, uint32_t i, const char *path)
{
	const struct strata_lx_entry *e = strata_lx_entry(d->lx, i);
	uint32_t uid, gid;
	char sum[STRATA_DIGEST_MAX] = "";

	strata_lx_owner_of(d->lx, e, &uid, &gid);
	fputs("{\"kind\":\"entry\",\"path\":", stdout);
	put_esc(path, strlen(path));
	printf(",\"type\":\"%s\",\"flags\":", type_name(e));
	put_flags(e->flags);
	printf(",\"mode\":%u,\"uid\":%u,\"gid\":%u,\"mtime_sec\":%lld,"
	       "\"mtime_nsec\":%u,\"nlink\":%u", e->mode & 07777u, uid, gid,
	       (long long)strata_lx_mtime_sec(e), strata_lx_mtime_nsec(e),
	       strata_lx_nlink(d->lx, e));
	if (S_ISREG(e->mode)) {
		char fname[16];
		cleanup_fd int fd = -1;

		printf(",\"size\":%llu", (unsigned long long)e->size);
		if (e->size > MAX_HASHED) {
			strcpy(sum, "sha256:skipped");
		} else if (e->a && lazy_tar >= 0) {
			if (e->a >= lazy_n || lazy_recs[e->a].size != e->size ||
			    hash_range(lazy_recs[e->a].off, e->size, sum) < 0)
				return -EIO;
		} else if (e->a) {
			snprintf(fname, sizeof(fname), "%u", e->a);
			fd = openat(strata_lx_datafd(d->lx), fname,
				    O_RDONLY | O_CLOEXEC);
			if (fd < 0 || hash_fd(fd, sum) < 0)
				return -EIO;
		} else {
			strata_sha256("", 0, sum);
		}
		printf(",\"sha256\":\"%s\"", sum + 7);
	} else if (S_ISLNK(e->mode)) {
		fputs(",\"link\":", stdout);
		put_esc(strata_lx_str(d->lx, e->a), e->size);
	} else if (S_ISCHR(e->mode) || S_ISBLK(e->mode)) {
		printf(",\"devmajor\":%u,\"devminor\":%u",
		       major((dev_t)e->size), minor((dev_t)e->size));
	}
	if ((e->flags & STRATA_LX_HARDLINK) && !S_ISDIR(e->mode)) {
		fputs(",\"group\":", stdout);
		if (d->paths[e->b])
			put_esc(d->paths[e->b], strlen(d->paths[e->b]));
		else
			printf("%u", e->b);
	}
	fputs(",\"xattrs\":", stdout);
	put_xattrs(d->lx, i);
	puts("}");
	return 0;
}

/* Paths of every entry, breadth first as the index is laid out. */
static int name_all(struct dump *d, uint32_t i, const char *path)
{
	const struct strata_lx_entry *e = strata_lx_entry(d->lx, i);
	uint32_t c;

	d->paths[i] = strdup(path);
	if (!d->paths[i])
		return -ENOMEM;
	if (!S_ISDIR(e->mode) || (e->flags & STRATA_LX_WHITEOUT))
		return 0;
	for (c = e->a; c < e->a + e->b && c < strata_lx_count(d->lx); c++) {
		const struct strata_lx_entry *k = strata_lx_entry(d->lx, c);
		const char *name = strata_lx_str(d->lx, k->name_off);
		char *sub;
		int r;

		if (asprintf(&sub, "%s%s%.*s", path, *path ? "/" : "",
			     (int)k->name_len, name) < 0)
			return -ENOMEM;
		r = name_all(d, c, sub);
		free(sub);
		if (r < 0)
			return r;
	}
	return 0;
}

static int dump_index(struct strata_store *st, const char *diff_id)
{
	struct strata_err err = { 0 };
	struct strata_lindex *lx = NULL;
	struct dump d;
	uint32_t i, n;
	int r = strata_lindex_open(st, diff_id, &lx, &err);

	if (r < 0) {
		fprintf(stderr, "lxdump: %s\n", err.msg);
		return r;
	}
	n = strata_lx_count(lx);
	d.lx = lx;
	d.paths = calloc(n, sizeof(*d.paths));
	r = d.paths ? name_all(&d, 0, "") : -ENOMEM;
	for (i = 0; r == 0 && i < n; i++)
		if (d.paths[i])
			r = dump_entry(&d, i, d.paths[i]);
	for (i = 0; d.paths && i < n; i++)
		free(d.paths[i]);
	free(d.paths);
	strata_lindex_close(lx);
	return r;
}

/* Unpack @file into a fresh layers/<diff_id> of @st. */
static int unpack(struct strata_store *st, int fd, int64_t size,
		  const char *digest, const char *diff_id, bool gz, bool lazy,
		  struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 16];
	struct strata_unpack_job job = { 0 };
	cleanup_fd int dest = -1;
	int r;

	strata_blob_relpath(diff_id, rel, sizeof(rel));
	r = strata_mkdirat_p(st->layers_fd, rel, 0755);
	if (r < 0)
		return r;
	dest = openat(st->layers_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest < 0 || mkdirat(dest, "data", 0755) < 0)
		return -errno;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	job.blob_fd = fd;
	job.digest = digest;
	job.size = size;
	job.diff_id = diff_id;
	job.compression = gz ? STRATA_COMP_GZIP : STRATA_COMP_NONE;
	job.dest_fd = dest;
	job.max_bytes = 64ull << 30;	/* import's defaults (cache.c) */
	job.max_entries = 16u << 20;
	job.copy_fd = -1;
	if (lazy) {
		job.lazy_file = lazy_file;
		job.diff_id_later = true;
	}
	return strata_unpack_layer(&job, err);
}

static int run(const char *file, bool gz, bool lazy, const char *tmp)
{
	struct strata_store st = { .root = (char *)tmp, .layers_fd = -1 };
	struct strata_err err = { 0 };
	char digest[STRATA_DIGEST_MAX], diff_id[STRATA_DIGEST_MAX];
	cleanup_fd int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	const char *p;
	int r;

	if (fd < 0 || fstat(fd, &sb) < 0 || hash_fd(fd, digest) < 0) {
		perror(file);
		return 2;
	}
	st.layers_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st.layers_fd < 0) {
		perror(tmp);
		return 2;
	}
	strcpy(diff_id, digest);
	if (lazy) {
		r = unpack(&st, fd, sb.st_size, digest, diff_id, gz, true,
			   &err);
		if (r == 0) {
			char tar[4200];

			snprintf(tar, sizeof(tar), "%s/lazy.tar", tmp);
			lazy_tar = lazy_tar_open(fd, gz, tar);
			if (lazy_tar < 0) {
				perror("lxdump: the tar for --lazy");
				return 2;
			}
			goto dump;
		}
		if (r != -EOPNOTSUPP)
			goto dump;
		/* as stratafs: unpacked in full instead */
		strata_rmtree_at(st.layers_fd, "sha256");
		memset(&err, 0, sizeof(err));
	}
	r = unpack(&st, fd, sb.st_size, digest, diff_id, gz, false, &err);
	p = strstr(err.msg, "uncompressed content hashes to sha256:");
	if (r == -EBADMSG && gz && p && strstr(err.msg, "diff_id mismatch")) {
		snprintf(diff_id, sizeof(diff_id), "%.71s", strstr(p, "sha256:"));
		memset(&err, 0, sizeof(err));
		r = unpack(&st, fd, sb.st_size, digest, diff_id, gz, false,
			   &err);
	}
dump:
	if (r == 0)
		r = dump_index(&st, diff_id);
	else {
		printf("{\"kind\":\"error\",\"errno\":%d,\"message\":", -r);
		put_esc(err.msg, strlen(err.msg));
		puts("}");
	}
	close(st.layers_fd);
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *base = getenv("TMPDIR");
	char tmp[4096];
	bool gz = false, lazy = false;
	int rc, i = 1;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--gzip"))
			gz = true;
		else if (!strcmp(argv[i], "--lazy"))
			lazy = true;
		else
			break;
	}
	if (argc != i + 1) {
		fprintf(stderr, "usage: lxdump [--gzip] [--lazy] FILE\n");
		return 2;
	}
	snprintf(tmp, sizeof(tmp), "%s/lxdump.XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(tmp)) {
		perror("mkdtemp");
		return 2;
	}
	rc = run(argv[i], gz, lazy, tmp);
	if (lazy_tar >= 0)
		close(lazy_tar);
	free(lazy_recs);
	strata_rmtree_at(AT_FDCWD, tmp);
	fflush(stdout);
	return rc;
}
