/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON documents of an image (store/image/json.c, store/image/layout.c): the
 * strict parser, the typed getters, descriptors, index.json's image pick,
 * and the walk index -> platform -> manifest -> config with each document
 * read back from a blob directory and checked against its descriptor.
 *
 * Input: up to four documents separated by a line "---": the first is a
 * layout's index.json, the others are blobs. So that a mutated document
 * still reaches the checks behind the digest, "@Dn" in a document becomes
 * the sha256 digest of document n and "@Sn" its size (for n after the
 * document that names it; documents are finished from the last one).
 * One document alone is the index.json of a layout with no blobs.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "store-internal.h"

#define MAX_DOCS 4

struct doc {
	char *buf;
	size_t len;
	char digest[STRATA_DIGEST_MAX];
};

static int blobs_fd = -1;

/* A blob directory of our own under $TMPDIR, made at the first input. */
static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char path[4096];

	if (blobs_fd >= 0)
		return;
	snprintf(path, sizeof(path), "%s/strata-fuzz-json-XXXXXX",
		 tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(path))
		abort();
	blobs_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (blobs_fd < 0 || mkdirat(blobs_fd, "sha256", 0755) < 0)
		abort();
}

static void put_blob(const struct doc *d, bool put)
{
	char rel[STRATA_DIGEST_MAX + 8];
	int fd;

	strata_blob_relpath(d->digest, rel, sizeof(rel));
	if (!put) {
		unlinkat(blobs_fd, rel, 0);
		return;
	}
	fd = openat(blobs_fd, rel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0644);
	if (fd < 0 || write(fd, d->buf, d->len) != (ssize_t)d->len)
		abort();
	close(fd);
}

/* Replace "@Dn" and "@Sn" (n > self) with document n's digest and size. */
static void finish(struct doc *docs, size_t self, size_t n_docs)
{
	struct doc *d = &docs[self];
	size_t i, o = 0, cap = d->len * 4 + 1;
	char *out = malloc(cap);

	if (!out)
		abort();
	for (i = 0; i < d->len; i++) {
		size_t k = i + 2 < d->len ? (size_t)(d->buf[i + 2] - '0') : 0;
		char rep[STRATA_DIGEST_MAX];

		if (d->buf[i] == '@' && i + 2 < d->len && k > self &&
		    k < n_docs && (d->buf[i + 1] == 'D' ||
				   d->buf[i + 1] == 'S')) {
			if (d->buf[i + 1] == 'D')
				snprintf(rep, sizeof(rep), "%s",
					 docs[k].digest);
			else
				snprintf(rep, sizeof(rep), "%zu", docs[k].len);
			if (o + strlen(rep) + (d->len - i) >= cap) {
				cap = (o + strlen(rep) + d->len - i) * 2;
				out = realloc(out, cap);
				if (!out)
					abort();
			}
			memcpy(out + o, rep, strlen(rep));
			o += strlen(rep);
			i += 2;
			continue;
		}
		if (o + 1 >= cap) {
			cap *= 2;
			out = realloc(out, cap);
			if (!out)
				abort();
		}
		out[o++] = d->buf[i];
	}
	free(d->buf);
	d->buf = out;
	d->len = o;
	strata_sha256(d->buf, d->len, d->digest);
}

static void getters(struct json_object *o)
{
	static const char *const keys[] = { "mediaType", "digest", "size",
					    "schemaVersion", "manifests",
					    "config", "Env", "os" };
	struct strata_desc desc;
	struct json_object *v;
	const char *s;
	int64_t n;
	char **strv;
	size_t i;

	strata_desc_parse(o, &desc, "fuzz", NULL);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		strata_json_string(o, keys[i], false, &s, "fuzz", NULL);
		strata_json_int64(o, keys[i], true, -5, 1 << 30, &n, "fuzz",
				  NULL);
		strata_json_object(o, keys[i], false, &v, "fuzz", NULL);
		strata_json_array(o, keys[i], false, &v, "fuzz", NULL);
		if (strata_json_strv(o, keys[i], &strv, "fuzz", NULL) == 0)
			strata_strv_free(strv);
	}
}

static void resolve(struct json_object *index, const char *tag)
{
	struct strata_platform plat = { "linux", "amd64", "" };
	struct strata_err err = { 0 };
	struct strata_image *img;
	struct json_object *desc;
	int r;

	r = strata_index_pick(index, tag, NULL, "fuzz", &desc, &err);
	FUZZ_CHECK(r == 0 || err.code == r);
	if (r < 0)
		return;
	img = calloc(1, sizeof(*img));
	if (!img)
		abort();
	img->blobs_fd = -1;
	memset(&err, 0, sizeof(err));
	r = strata_image_from_desc(img, blobs_fd, desc, &plat, &err);
	FUZZ_CHECK(r == 0 || r == -ENOMEM || err.code == r);
	if (getenv("STRATA_FUZZ_VERBOSE"))
		fprintf(stderr, "resolve: %d %s\n", r, err.msg);
	if (r == 0)
		FUZZ_CHECK(img->config_digest && img->manifest_digest);
	strata_image_free(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct doc docs[MAX_DOCS] = { 0 };
	const char *p = (const char *)data, *end = p + size;
	struct json_object *o;
	size_t n = 0, i;
	int r;

	if (size > 1 << 20)
		return 0;
	setup();
	while (n < MAX_DOCS) {
		const char *sep = memmem(p, (size_t)(end - p), "\n---\n", 5);
		const char *e = sep && n + 1 < MAX_DOCS ? sep : end;

		docs[n].len = (size_t)(e - p);
		docs[n].buf = malloc(docs[n].len + 1);
		if (!docs[n].buf)
			abort();
		memcpy(docs[n].buf, p, docs[n].len);
		n++;
		if (e == end)
			break;
		p = e + 5;
	}
	for (i = n; i-- > 0;)
		finish(docs, i, n);
	for (i = 1; i < n; i++)
		put_blob(&docs[i], true);
	for (i = 0; i < n; i++) {
		struct strata_err err = { 0 };

		r = strata_json_parse(docs[i].buf, docs[i].len, "fuzz", &o,
				      &err);
		FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EFBIG ||
			   r == -ENOMEM);
		FUZZ_CHECK(r == 0 || r == -ENOMEM || err.code == r);
		if (r < 0)
			continue;
		getters(o);
		if (i == 0) {
			resolve(o, NULL);
			resolve(o, "latest");
		}
		json_object_put(o);
	}
	for (i = 1; i < n; i++)
		put_blob(&docs[i], false);
	for (i = 0; i < n; i++)
		free(docs[i].buf);
	return 0;
}
