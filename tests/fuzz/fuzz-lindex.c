/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The layer index reader (store/layer/lindex.c): the input is the whole index
 * file of a cached layer, as if the cache had been damaged or planted. It
 * is opened with strata_lindex_open() and, when accepted, read the way its
 * users read it (fs/, store/commit/imgview.c, store/commit/commit-layer.c): every
 * entry's name, symlink target, owner, link count, xattr records and
 * children, each child looked up by name, the implied directories; then
 * two layers are grafted (store/layer/graft.c), as an image open does, and read
 * again. Whatever open accepts must be safe to read.
 *
 * When the header's file_size is shorter than the input, the input is two
 * indexes: the bottom layer (file_size bytes) and the rest, the top layer,
 * so grafts through the bottom layer's symlinks happen. Otherwise both
 * layers are the same index.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "store-internal.h"

#define HEX(c) c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c \
	c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c
static const char *const layer_hex[2] = { HEX("0"), HEX("1") };

static struct strata_store *st;
static int index_dir[2] = { -1, -1 };	/* layers/sha256/<hex> */

/* A store of our own under $TMPDIR, made at the first input. */
static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char path[4096];
	int i;

	if (st)
		return;
	snprintf(path, sizeof(path), "%s/strata-fuzz-lindex-XXXXXX",
		 tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(path) || strata_store_open(path, &st, NULL) < 0)
		abort();
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "sha256/%s/data", layer_hex[i]);
		if (strata_mkdirat_p(st->layers_fd, path, 0755) < 0)
			abort();
		path[strlen(path) - 5] = '\0';
		index_dir[i] = openat(st->layers_fd, path,
				      O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (index_dir[i] < 0)
			abort();
	}
}

static void put_index(int layer, const uint8_t *data, size_t size)
{
	int fd = openat(index_dir[layer], "index", O_WRONLY | O_CREAT |
			O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0 || strata_write_all(fd, data, size) < 0)
		abort();
	close(fd);
}

static int open_layer(int layer, struct strata_lindex **lx,
		      struct strata_err *err)
{
	char id[STRATA_DIGEST_MAX];

	snprintf(id, sizeof(id), "sha256:%s", layer_hex[layer]);
	return strata_lindex_open(st, id, lx, err);
}

static unsigned sink;

static void touch(const void *p, size_t n)
{
	const unsigned char *c = p;
	size_t i;

	for (i = 0; i < n; i++)
		sink += c[i];
}

static void read_xattrs(const struct strata_lindex *lx, uint32_t i)
{
	const uint8_t *p, *end;
	size_t len = 0;

	p = strata_lx_xattrs(lx, i, &len);
	if (!p)
		return;
	end = p + len;
	/* records: u16 name_len, u32 value_len, name, value */
	while (end - p >= 6) {
		size_t nl = (size_t)p[0] | (size_t)p[1] << 8;
		size_t vl = (size_t)p[2] | (size_t)p[3] << 8 |
			    (size_t)p[4] << 16 | (size_t)p[5] << 24;

		if ((size_t)(end - p) - 6 < nl + vl)
			break;
		touch(p + 6, nl + vl);
		p += 6 + nl + vl;
	}
}

static void read_all(const struct strata_lindex *lx)
{
	uint32_t n = strata_lx_count(lx), i, j, uid, gid;
	const struct strata_lx_xref *imp;
	size_t n_imp, k;

	for (i = 0; i < n; i++) {
		const struct strata_lx_entry *e = strata_lx_entry(lx, i);

		FUZZ_CHECK(e);
		touch(strata_lx_str(lx, e->name_off), e->name_len);
		strata_lx_owner_of(lx, e, &uid, &gid);
		sink += strata_lx_nlink(lx, e);
		read_xattrs(lx, i);
		if (S_ISLNK(e->mode)) {
			const char *t = strata_lx_str(lx, e->a);

			touch(t, e->size);
			touch(t, strlen(t));
		}
		if (!S_ISDIR(e->mode))
			continue;
		for (j = e->a; j < e->a + e->b; j++) {
			const struct strata_lx_entry *c = strata_lx_entry(lx, j);

			FUZZ_CHECK(c);
			strata_lx_lookup(lx, i, strata_lx_str(lx, c->name_off),
					 c->name_len);
		}
	}
	imp = strata_lx_implied(lx, &n_imp);
	for (k = 0; k < n_imp; k++) {
		FUZZ_CHECK(imp[k].entry < n);
		touch(strata_lx_str(lx, imp[k].off),
		      strlen(strata_lx_str(lx, imp[k].off)));
	}
	sink += (unsigned)strata_lx_features(lx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strata_lindex *lx[2] = { NULL, NULL };
	struct strata_err err = { 0 };
	size_t split = size;
	uint64_t fsize;
	int r;

	setup();
	if (size > sizeof(struct strata_lx_header)) {
		memcpy(&fsize, data + offsetof(struct strata_lx_header,
					       file_size), sizeof(fsize));
		if (fsize >= sizeof(struct strata_lx_header) && fsize < size)
			split = (size_t)fsize;
	}
	put_index(0, data, split);
	put_index(1, split < size ? data + split : data,
		  split < size ? size - split : size);
	r = open_layer(0, &lx[0], &err);
	FUZZ_CHECK(r == 0 || r == -ENOMEM || (r == -EBADMSG && err.msg[0]));
	if (r < 0)
		return 0;
	read_all(lx[0]);
	if (open_layer(1, &lx[1], NULL) == 0) {
		read_all(lx[1]);
		if (strata_lx_graft(lx, 2) >= 0) {
			read_all(lx[0]);
			read_all(lx[1]);
		}
		strata_lindex_close(lx[1]);
	}
	strata_lindex_close(lx[0]);
	return 0;
}
