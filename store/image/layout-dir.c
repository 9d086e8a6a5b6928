/* SPDX-License-Identifier: Apache-2.0 */
/*
 * skopeo's dir: transport: a directory holding "version" ("Directory
 * Transport Version: 1.1\n"; 1.0 is read too), "manifest.json" (the
 * manifest's bytes, any type; for an index, each instance's manifest as
 * HEX.manifest.json), and every blob, config included, named by the hex
 * of its digest without the algorithm. Signature files (signature-N) are
 * neither read nor written.
 *
 * Reading stages into the store, as a registry pull does: the manifest
 * (named by the sha256 of its bytes) and the config are copied into the
 * store's blob directory, verified, and resolved by layout.c; the image's
 * blob source copies a layer blob in (verified, then unpacked from the
 * store) only when the layer cache or a copy needs it, so inspect reads no
 * layer. A name in the directory is opened O_NOFOLLOW and must be a
 * regular file.
 *
 * Writing (strata copy, strata commit) builds the whole directory beside
 * the destination (.NAME.strata-tmp-PID), every file fsync'd and the
 * manifest last, then renames it into place, swapping with an existing
 * dir: directory (renameat2 RENAME_EXCHANGE) whose old content is then
 * removed. A destination that exists and is neither empty nor a dir:
 * directory (no version file) is refused.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commit.h"
#include "store-internal.h"

#define DIR_VERSION "Directory Transport Version: 1.1\n"
#define DIR_VERSION_10 "Directory Transport Version: 1.0\n"

static const char *hex_of(const char *digest)
{
	return strchr(digest, ':') + 1;
}

int strata_blob_copy_fd(int in_fd, int out_fd, const char *digest,
			int64_t size, const char *what, struct strata_err *err)
{
	char got[STRATA_DIGEST_MAX];
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	cleanup_free char *buf = malloc(1 << 20);
	uint64_t done = 0;
	int r;

	if (!buf)
		return -ENOMEM;
	r = strata_hasher_new(digest, &h);
	if (r < 0)
		return strata_err_set(err, r, "%s: blob %s: cannot verify this "
				      "digest algorithm", what, digest);
	for (;;) {
		ssize_t n = read(in_fd, buf, 1 << 20);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return strata_err_set(err, -errno, "%s: blob %s: %s",
					      what, digest, strerror(errno));
		if (n == 0)
			break;
		done += (uint64_t)n;
		if (size >= 0 && done > (uint64_t)size)
			break;
		strata_hasher_update(h, buf, (size_t)n);
		r = strata_write_all(out_fd, buf, (size_t)n);
		if (r < 0)
			return strata_err_set(err, r, "%s: blob %s: %s", what,
					      digest, strerror(-r));
		strata_progress("copying blobs", done,
				size >= 0 ? (uint64_t)size : 0);
	}
	if (size >= 0 && done != (uint64_t)size)
		return strata_err_set(err, -EBADMSG, "%s: blob %s: size "
				      "mismatch: descriptor says %lld bytes, "
				      "blob has %s%llu", what, digest,
				      (long long)size,
				      done > (uint64_t)size ? "more than " : "",
				      (unsigned long long)(done > (uint64_t)size
							   ? (uint64_t)size
							   : done));
	strata_hasher_final(h, got);
	if (strcmp(got, digest))
		return strata_err_set(err, -EBADMSG, "%s: blob %s: digest "
				      "mismatch: content hashes to %s", what,
				      digest, got);
	return 0;
}

int strata_blob_copy_verified(int in_fd, int dir_fd, const char *name,
			      const char *digest, int64_t size, bool sync,
			      const char *what, struct strata_err *err)
{
	static unsigned counter;
	char tmp[64];
	cleanup_fd int out = -1;
	int r;

	snprintf(tmp, sizeof(tmp), ".tmp-copy-%d-%u", (int)getpid(),
		 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
	out = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
		     O_NOFOLLOW, 0644);
	if (out < 0)
		return strata_err_set(err, -errno, "%s: blob %s: %s", what,
				      digest, strerror(errno));
	r = strata_blob_copy_fd(in_fd, out, digest, size, what, err);
	if (r == 0 && ((sync && fsync(out) < 0) ||
		       renameat(dir_fd, tmp, dir_fd, name) < 0))
		r = strata_err_set(err, -errno, "%s: blob %s: %s", what, digest,
				   strerror(errno));
	if (r < 0)
		unlinkat(dir_fd, tmp, 0);
	return r;
}

/* ---- reading ---- */

struct dir_src {
	struct strata_blob_source base;
	int dfd;		/* the dir: directory */
	int blobs_fd;		/* the store's blobs/ */
	char *path;		/* for messages */
};

/* An fd of regular file @name in the directory, or -errno with @err. */
static int open_member(int dfd, const char *path, const char *name,
		       const char *what, struct strata_err *err)
{
	struct stat sb;
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return strata_err_set(err, errno == ELOOP ? -EBADMSG : -errno,
				      "dir:%s: %s %s: %s", path, what, name,
				      errno == ENOENT ? "missing"
				      : errno == ELOOP ? "a symlink, not a file"
						       : strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return strata_err_set(err, -EBADMSG, "dir:%s: %s %s: not a "
				      "regular file", path, what, name);
	}
	return fd;
}

/* Copy blob @digest (file HEX, or HEX.manifest.json for a manifest) into
 * the store unless it is there. */
static int copy_in(struct dir_src *s, const char *digest, int64_t size,
		   bool manifest, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8], name[STRATA_DIGEST_MAX + 16];
	char where[4200];
	cleanup_fd int fd = -1;
	int r;

	strata_blob_relpath(digest, rel, sizeof(rel));
	if (faccessat(s->blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	snprintf(name, sizeof(name), "%s%s", hex_of(digest),
		 manifest ? ".manifest.json" : "");
	fd = open_member(s->dfd, s->path, name, "blob", err);
	if (fd < 0)
		return fd;
	*strchr(rel, '/') = '\0';
	r = strata_mkdirat_p(s->blobs_fd, rel, 0755);
	if (r < 0)
		return strata_err_set(err, r, "store: %s", strerror(-r));
	rel[strlen(rel)] = '/';
	snprintf(where, sizeof(where), "dir:%s", s->path);
	return strata_blob_copy_verified(fd, s->blobs_fd, rel, digest, size,
					 true, where, err);
}

static int dir_fetch_cb(void *ctx, const char *digest, int64_t size,
			const char *media_type, struct strata_err *err)
{
	return copy_in(ctx, digest, size,
		       strata_media_is_manifest(media_type) ||
		       strata_media_is_index(media_type) ||
		       strata_media_is_schema1(media_type), err);
}

static int src_fetch(struct strata_blob_source *bs,
		     const struct strata_layer *l, struct strata_err *err)
{
	return copy_in((struct dir_src *)bs, l->digest, l->size, false, err);
}

/* the cache reads the layer from the store, once copied in */
static int src_open(struct strata_blob_source *bs,
		    const struct strata_layer *l, void **handle,
		    struct strata_err *err)
{
	struct dir_src *s = (struct dir_src *)bs;
	char rel[STRATA_DIGEST_MAX + 8];
	int r = copy_in(s, l->digest, l->size, false, err), fd;

	*handle = NULL;
	if (r < 0)
		return r;
	strata_blob_relpath(l->digest, rel, sizeof(rel));
	fd = openat(s->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? strata_err_set(err, -errno, "store: blob %s: %s",
				       l->digest, strerror(errno)) : fd;
}

static int src_finish(struct strata_blob_source *bs, void *handle,
		      int reader_ret, struct strata_err *err)
{
	(void)bs, (void)handle, (void)reader_ret, (void)err;
	return 0;
}

static void src_free(struct strata_blob_source *bs)
{
	struct dir_src *s = (struct dir_src *)bs;

	if (s->dfd >= 0)
		close(s->dfd);
	if (s->blobs_fd >= 0)
		close(s->blobs_fd);
	free(s->path);
	free(s);
}

/* The media type of manifest.json: its mediaType, else what its fields
 * say (an OCI document may leave it out; schema 1 never has one). */
static const char *manifest_type(struct json_object *doc)
{
	struct json_object *v;

	if (json_object_object_get_ex(doc, "mediaType", &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	if (json_object_object_get_ex(doc, "schemaVersion", &v) &&
	    json_object_is_type(v, json_type_int) && json_object_get_int(v) == 1)
		return json_object_object_get_ex(doc, "signatures", NULL)
			       ? "application/vnd.docker.distribution.manifest.v1+prettyjws"
			       : "application/vnd.docker.distribution.manifest.v1+json";
	if (json_object_object_get_ex(doc, "manifests", NULL))
		return "application/vnd.oci.image.index.v1+json";
	return "application/vnd.oci.image.manifest.v1+json";
}

static int check_version(int dfd, const char *path, struct strata_err *err)
{
	cleanup_free char *v = NULL;
	size_t len;
	int r = strata_read_file(dfd, "version", 4096, &v, &len);

	if (r == -ENOENT)
		return strata_err_set(err, -ENOENT, "dir:%s: not a dir: image "
				      "directory (no version file)", path);
	if (r < 0)
		return strata_err_set(err, r, "dir:%s: version: %s", path,
				      strerror(-r));
	if ((len != strlen(DIR_VERSION) || memcmp(v, DIR_VERSION, len)) &&
	    (len != strlen(DIR_VERSION_10) || memcmp(v, DIR_VERSION_10, len))) {
		char pv[80];

		return strata_err_set(err, -EOPNOTSUPP, "dir:%s: unsupported "
				      "version \"%s\" (want %.*s)", path,
				      strata_printable(v, len, pv, sizeof(pv)),
				      (int)strlen(DIR_VERSION) - 1, DIR_VERSION);
	}
	return 0;
}

int strata_dir_resolve(struct strata_store *st, const struct strata_ref *ref,
		       const struct strata_platform *plat,
		       struct strata_image *img, struct strata_err *err)
{
	struct dir_src *s = calloc(1, sizeof(*s));
	struct json_object *doc = NULL, *desc = NULL;
	cleanup_free char *buf = NULL, *payload = NULL;
	char digest[STRATA_DIGEST_MAX], what[4200];
	const char *mt;
	size_t len;
	int r, fd;

	if (!s)
		return -ENOMEM;
	s->blobs_fd = -1;
	s->dfd = open(ref->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dfd < 0) {
		r = strata_err_set(err, -errno, "dir:%s: %s", ref->path,
				   strerror(errno));
		goto out;
	}
	s->blobs_fd = fcntl(st->blobs_fd, F_DUPFD_CLOEXEC, 3);
	s->path = strdup(ref->path);
	if (s->blobs_fd < 0 || !s->path) {
		r = -ENOMEM;
		goto out;
	}
	r = check_version(s->dfd, ref->path, err);
	if (r < 0)
		goto out;
	fd = open_member(s->dfd, ref->path, "manifest.json", "file", err);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	r = strata_read_fd(fd, STRATA_JSON_MAX, &buf, &len);
	close(fd);
	snprintf(what, sizeof(what), "dir:%s: manifest.json", ref->path);
	if (r < 0) {
		r = strata_err_set(err, r == -EFBIG ? -EBADMSG : r, "%s: %s",
				   what, r == -EFBIG ? "larger than the 20 MiB "
				   "allowed" : strerror(-r));
		goto out;
	}
	r = strata_json_parse(buf, len, what, &doc, err);
	if (r < 0)
		goto out;
	if (!json_object_is_type(doc, json_type_object)) {
		r = strata_err_set(err, -EBADMSG, "%s: not a JSON object", what);
		goto out;
	}
	mt = manifest_type(doc);
	if (strata_media_is_schema1(mt)) {
		r = strata_schema1_unsign(buf, len, what, &payload, &len, err);
		if (r < 0)
			goto out;
		if (r == 1)
			mt = "application/vnd.docker.distribution.manifest.v1+json";
	}
	r = strata_blob_put(st->blobs_fd, payload ? payload : buf, len, digest);
	if (r < 0) {
		r = strata_err_set(err, r, "store: %s", strerror(-r));
		goto out;
	}
	desc = json_object_new_object();
	if (!desc) {
		r = -ENOMEM;
		goto out;
	}
	json_object_object_add(desc, "mediaType", json_object_new_string(mt));
	json_object_object_add(desc, "digest", json_object_new_string(digest));
	json_object_object_add(desc, "size", json_object_new_int64((int64_t)len));
	r = strata_image_from_desc_fetch(img, img->blobs_fd, desc, plat,
					 dir_fetch_cb, s, err);
	if (r < 0) {
		strata_err_wrap(err, r, "image %s", ref->text);
		goto out;
	}
	s->base.open = src_open;
	s->base.finish = src_finish;
	s->base.fetch = src_fetch;
	s->base.free = src_free;
	img->source = &s->base;
	s = NULL;
out:
	if (doc)
		json_object_put(doc);
	if (desc)
		json_object_put(desc);
	if (s)
		src_free(&s->base);
	return r;
}

/* ---- writing ---- */

/* Copy blob @digest from @a's blob directories into @tfd/HEX. */
static int write_blob(const struct strata_archive_out *a, int tfd,
		      const char *digest, int64_t size, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	cleanup_fd int fd = -1;

	strata_blob_relpath(digest, rel, sizeof(rel));
	fd = openat(a->new_blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		fd = openat(a->base_blobs_fd, rel, O_RDONLY | O_CLOEXEC |
			    O_NOFOLLOW);
	if (fd < 0)
		return strata_err_set(err, -errno, "blob %s: %s", digest,
				      strerror(errno));
	if (faccessat(tfd, hex_of(digest), F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;	/* a layer given twice */
	return strata_blob_copy_verified(fd, tfd, hex_of(digest), digest, size,
					 true, "source", err);
}

/* Write @len bytes to @tfd/@name, fsync'd. */
static int write_file(int tfd, const char *name, const void *buf, size_t len)
{
	cleanup_fd int fd = openat(tfd, name, O_WRONLY | O_CREAT | O_EXCL |
				   O_CLOEXEC | O_NOFOLLOW, 0644);
	int r;

	if (fd < 0)
		return -errno;
	r = strata_write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	return r;
}

/* May @name in @pfd be replaced? It does not exist (0), or is an empty
 * directory or a dir: directory (1). */
static int dest_state(int pfd, const char *name, const char *path,
		      struct strata_err *err)
{
	struct stat sb;
	cleanup_fd int dfd = -1;
	DIR *d;
	struct dirent *de;
	bool empty = true;

	if (fstatat(pfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : strata_err_set(err, -errno,
			"dir:%s: %s", path, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return strata_err_set(err, -EEXIST, "dir:%s: exists and is not "
				      "a directory: refusing to replace it",
				      path);
	dfd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
		     O_NOFOLLOW);
	if (dfd < 0)
		return strata_err_set(err, -errno, "dir:%s: %s", path,
				      strerror(errno));
	if (faccessat(dfd, "version", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	d = fdopendir(dfd);
	if (!d)
		return -errno;
	dfd = -1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			empty = false;
	closedir(d);
	if (!empty)
		return strata_err_set(err, -EEXIST, "dir:%s: exists and is not "
				      "a dir: image directory (no version "
				      "file): refusing to overwrite it", path);
	return 1;
}

int strata_dir_write(const struct strata_archive_out *a, const char *manifest,
		     struct strata_err *err)
{
	cleanup_free char *pcopy = strdup(a->path), *ncopy = strdup(a->path);
	cleanup_free char *mbuf = NULL;
	cleanup_fd int pfd = -1, tfd = -1;
	char tmp[300];
	const char *name;
	size_t i;
	int r, exists;

	if (!pcopy || !ncopy)
		return -ENOMEM;
	if (!manifest) {
		r = strata_blob_read(a->new_blobs_fd, a->manifest_digest,
				     a->manifest_size, STRATA_JSON_MAX, &mbuf,
				     err);
		if (r < 0)
			return r;
		manifest = mbuf;
	}
	name = basename(ncopy);
	if (!*name || !strcmp(name, ".") || !strcmp(name, "..") ||
	    !strcmp(name, "/"))
		return strata_err_set(err, -EINVAL, "dir:%s: name a new or "
				      "dir: directory", a->path);
	pfd = open(dirname(pcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		return strata_err_set(err, -errno, "dir:%s: %s", a->path,
				      strerror(errno));
	exists = dest_state(pfd, name, a->path, err);
	if (exists < 0)
		return exists;
	snprintf(tmp, sizeof(tmp), ".%.200s.strata-tmp-%d", name, (int)getpid());
	strata_rmtree_at(pfd, tmp);
	if (mkdirat(pfd, tmp, 0755) < 0)
		return strata_err_set(err, -errno, "dir:%s: %s", a->path,
				      strerror(errno));
	tfd = openat(pfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (tfd < 0) {
		r = -errno;
		goto fail;
	}
	for (i = 0; i < a->n_layers; i++) {
		r = write_blob(a, tfd, a->layers[i], a->sizes[i], err);
		if (r < 0)
			goto fail;
	}
	r = write_blob(a, tfd, a->config_digest, a->config_size, err);
	if (r < 0)
		goto fail;
	strata_progress_done();
	r = write_file(tfd, "version", DIR_VERSION, strlen(DIR_VERSION));
	if (r == 0)
		r = write_file(tfd, "manifest.json", manifest,
			       (size_t)a->manifest_size);
	if (r == 0 && fsync(tfd) < 0)
		r = -errno;
	if (r < 0)
		goto fail;
	if (exists ? renameat2(pfd, tmp, pfd, name, RENAME_EXCHANGE) < 0
		   : renameat(pfd, tmp, pfd, name) < 0) {
		r = -errno;
		goto fail;
	}
	fsync(pfd);
	if (exists)
		strata_rmtree_at(pfd, tmp);	/* the old content */
	return 0;
fail:
	strata_rmtree_at(pfd, tmp);
	if (!strata_err_isset(err))
		strata_err_set(err, r, "dir:%s: %s", a->path, strerror(-r));
	return r;
}
