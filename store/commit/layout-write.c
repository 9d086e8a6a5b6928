/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing into an OCI image layout (image-layout.md) so that a kill at any
 * point leaves it valid: every blob goes to a temporary name in the layout
 * directory (not under blobs/, whose names must be digests), is fsync'd and
 * renamed to blobs/sha256/<hex>; index.json is replaced the same way, last,
 * so no tag ever points at a missing blob. Writers hold .index.lock (the
 * lock strata_store_tag() takes) from open to free, so two commits into one
 * layout run one after the other, and the temporary files a killed commit
 * left are removed by the next writer once it holds the lock.
 *
 * A staging layout (strata_layoutw_open_staging()) skips every fsync: it
 * lives in the store's tmp, is read once (pushed, or packed into an
 * archive that is itself fsync'd) and deleted, and a crash leaves nothing
 * that anything reads; its fsyncs were most of a one-file commit to a
 * registry.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commit.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define INDEX_LOCK ".index.lock"
#define REF_NAME "org.opencontainers.image.ref.name"

/*
 * Temporary files of an earlier commit that was killed: every writer of
 * .strata-tmp-* names holds the layout lock, so under the lock any such
 * file is stale. Only regular files with our prefix are touched.
 */
static void sweep_stale_temps(int dir_fd)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, ".strata-tmp-", 12) != 0 ||
		    (de->d_type != DT_REG && de->d_type != DT_UNKNOWN))
			continue;
		unlinkat(dir_fd, de->d_name, 0);
	}
	closedir(d);
}

void strata_layoutw_free(struct strata_layoutw *lw)
{
	if (lw->lock_fd >= 0)
		close(lw->lock_fd);
	if (lw->blobs_fd >= 0)
		close(lw->blobs_fd);
	if (lw->dir_fd >= 0)
		close(lw->dir_fd);
	free(lw->path);
	free(lw);
}

/* oci-layout of a staging layout: no temporary name, no fsync */
static int write_plain(int dir_fd, const char *name, const void *buf,
		       size_t len)
{
	cleanup_fd int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC |
				   O_CLOEXEC | O_NOFOLLOW, 0644);

	if (fd < 0)
		return -errno;
	return strata_write_all(fd, buf, len);
}

static int layoutw_open(int at_fd, const char *path, bool create,
			bool staging, struct strata_layoutw **out,
			struct strata_err *err)
{
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	cleanup_(strata_layoutw_freep) struct strata_layoutw *lw = NULL;
	int r;

	lw = calloc(1, sizeof(*lw));
	if (!lw)
		return -ENOMEM;
	lw->dir_fd = lw->blobs_fd = lw->lock_fd = -1;
	lw->staging = staging;
	lw->path = strdup(path);
	if (!lw->path)
		return -ENOMEM;
	if (create) {
		r = strata_mkdirat_p(at_fd, path, 0755);
		if (r < 0)
			return strata_err_set(err, r, "%s: %s", path,
					      strerror(-r));
	}
	lw->dir_fd = openat(at_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lw->dir_fd < 0)
		return strata_err_set(err, -errno, "%s: %s", path,
				      strerror(errno));
	lw->lock_fd = strata_lock_at(lw->dir_fd, INDEX_LOCK, true);
	if (lw->lock_fd < 0)
		return strata_err_set(err, lw->lock_fd, "%s: lock: %s", path,
				      strerror(-lw->lock_fd));
	sweep_stale_temps(lw->dir_fd);
	if (faccessat(lw->dir_fd, "oci-layout", F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		if (!create)
			return strata_err_set(err, -ENOENT, "%s: not an OCI "
					      "image layout", path);
		r = staging ? write_plain(lw->dir_fd, "oci-layout", layout,
					  sizeof(layout) - 1)
			    : strata_write_atomic(lw->dir_fd, "oci-layout",
						  layout, sizeof(layout) - 1,
						  0644);
		if (r < 0)
			return strata_err_set(err, r, "%s: %s", path,
					      strerror(-r));
	}
	r = strata_mkdirat_p(lw->dir_fd, "blobs/sha256", 0755);
	if (r < 0)
		return strata_err_set(err, r, "%s/blobs: %s", path,
				      strerror(-r));
	lw->blobs_fd = strata_open_beneath(lw->dir_fd, "blobs");
	if (lw->blobs_fd < 0)
		return strata_err_set(err, lw->blobs_fd, "%s/blobs: %s", path,
				      lw->blobs_fd == -ELOOP ||
				      lw->blobs_fd == -EXDEV
				      ? "a symlink: refusing to write through "
					"it" : strerror(-lw->blobs_fd));
	*out = take_ptr(&lw);
	return 0;
}

int strata_layoutw_open(int at_fd, const char *path, bool create,
			struct strata_layoutw **out, struct strata_err *err)
{
	return layoutw_open(at_fd, path, create, false, out, err);
}

int strata_layoutw_open_staging(int at_fd, const char *path,
				struct strata_layoutw **out,
				struct strata_err *err)
{
	return layoutw_open(at_fd, path, true, true, out, err);
}

static bool have_blob(struct strata_layoutw *lw, const char *digest)
{
	char rel[STRATA_DIGEST_MAX + 8];
	struct stat sb;

	strata_blob_relpath(digest, rel, sizeof(rel));
	return fstatat(lw->blobs_fd, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISREG(sb.st_mode);
}

static int publish(struct strata_layoutw *lw, const char *tmp,
		   const char *digest)
{
	char rel[STRATA_DIGEST_MAX + 8];
	int bfd;

	/* into blobs/ALG itself, never where a symlink there leads */
	strata_blob_relpath(digest, rel, sizeof(rel));
	*strchr(rel, '/') = '\0';
	bfd = strata_open_beneath(lw->blobs_fd, rel);
	if (bfd < 0)
		return bfd;
	if (renameat(lw->dir_fd, tmp, bfd, rel + strlen(rel) + 1) < 0) {
		int r = -errno;

		close(bfd);
		return r;
	}
	if (!lw->staging)
		fsync(bfd);
	close(bfd);
	return 0;
}

int strata_layoutw_put(struct strata_layoutw *lw, const void *buf, size_t len,
		       char *digest_out)
{
	char tmp[64];
	cleanup_fd int fd = -1;
	int r;

	strata_sha256(buf, len, digest_out);
	if (have_blob(lw, digest_out))
		return 0;
	snprintf(tmp, sizeof(tmp), ".strata-tmp-%d-put", (int)getpid());
	fd = openat(lw->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
		    O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	r = strata_write_all(fd, buf, len);
	if (r == 0 && !lw->staging && fsync(fd) < 0)
		r = -errno;
	if (r == 0)
		r = publish(lw, tmp, digest_out);
	if (r < 0)
		unlinkat(lw->dir_fd, tmp, 0);
	return r;
}

int strata_layoutw_copy(struct strata_layoutw *lw, int src_blobs_fd,
			const char *digest, int64_t size,
			struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8], tmp[64];
	cleanup_fd int in = -1, out = -1;
	int r;

	if (have_blob(lw, digest))
		return 0;
	strata_blob_relpath(digest, rel, sizeof(rel));
	in = openat(src_blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return strata_err_set(err, -errno, "blob %s: %s", digest,
				      strerror(errno));
	snprintf(tmp, sizeof(tmp), ".strata-tmp-%d-copy", (int)getpid());
	out = openat(lw->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC |
		     O_CLOEXEC | O_NOFOLLOW, 0644);
	if (out < 0)
		return -errno;
	r = strata_blob_copy_fd(in, out, digest, size, "store", err);
	if (r == 0 && !lw->staging && fsync(out) < 0)
		r = -errno;
	if (r == 0)
		r = publish(lw, tmp, digest);
	if (r < 0)
		unlinkat(lw->dir_fd, tmp, 0);
	return r;
}

static int load_index(struct strata_layoutw *lw, struct json_object **out,
		      struct strata_err *err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	int r;

	r = strata_read_file(lw->dir_fd, "index.json", STRATA_JSON_MAX, &buf,
			     &len);
	if (r == -ENOENT) {
		struct json_object *o = json_object_new_object();

		if (!o)
			return -ENOMEM;
		json_object_object_add(o, "schemaVersion", json_object_new_int(2));
		json_object_object_add(o, "mediaType",
				       json_object_new_string(MT_OCI_INDEX));
		json_object_object_add(o, "manifests", json_object_new_array());
		*out = o;
		return 0;
	}
	if (r < 0)
		return strata_err_set(err, r, "%s/index.json: %s", lw->path,
				      strerror(-r));
	return strata_json_parse(buf, len, "index.json", out, err);
}

const char *strata_desc_ref_name(struct json_object *desc)
{
	struct json_object *ann, *v;

	if (!json_object_object_get_ex(desc, "annotations", &ann) || !ann ||
	    !json_object_object_get_ex(ann, REF_NAME, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static const char *desc_digest(struct json_object *desc)
{
	struct json_object *v;

	if (!json_object_object_get_ex(desc, "digest", &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Is any descriptor of @manifests but @skip one of digest @digest? */
static bool listed(struct json_object *manifests, const char *digest,
		   size_t skip)
{
	size_t i, n = json_object_array_length(manifests);

	for (i = 0; i < n; i++) {
		const char *d = desc_digest(json_object_array_get_idx(manifests,
								      i));

		if (i != skip && d && !strcmp(d, digest))
			return true;
	}
	return false;
}

int strata_index_retag(struct json_object *manifests, const char *name,
		       struct json_object *desc, bool keep)
{
	const char *want = desc ? desc_digest(desc) : NULL;
	size_t i;
	int n = 0;

	for (i = json_object_array_length(manifests); i-- > 0;) {
		struct json_object *m = json_object_array_get_idx(manifests, i);
		const char *ref = strata_desc_ref_name(m);
		const char *d = desc_digest(m);
		struct json_object *ann;

		if (keep && !ref && want && d && !strcmp(d, want)) {
			json_object_array_del_idx(manifests, i, 1);
			continue;
		}
		if (!ref || strcmp(ref, name))
			continue;
		n++;
		if (!keep || !d || (want && !strcmp(d, want)) ||
		    listed(manifests, d, i)) {
			json_object_array_del_idx(manifests, i, 1);
			continue;
		}
		/* the last name of its image: keep it listed, unnamed */
		json_object_object_get_ex(m, "annotations", &ann);
		json_object_object_del(ann, REF_NAME);
		if (json_object_object_length(ann) == 0)
			json_object_object_del(m, "annotations");
	}
	if (desc && json_object_array_add(manifests, desc) < 0) {
		json_object_put(desc);
		return -ENOMEM;
	}
	return n;
}

int strata_layoutw_tag(struct strata_layoutw *lw, const char *media_type,
		       const char *digest, int64_t size, const char *const *tags,
		       size_t n_tags, struct strata_err *err)
{
	struct json_object *idx = NULL, *manifests;
	size_t t, len;
	const char *s;
	int r;

	r = load_index(lw, &idx, err);
	if (r < 0)
		return r;
	r = strata_json_array(idx, "manifests", true, &manifests, "index.json",
			      err);
	if (r < 0)
		goto out;
	for (t = 0; t < n_tags; t++) {
		struct json_object *desc = json_object_new_object();
		struct json_object *ann = json_object_new_object();

		json_object_object_add(desc, "mediaType",
				       json_object_new_string(media_type));
		json_object_object_add(desc, "digest",
				       json_object_new_string(digest));
		json_object_object_add(desc, "size", json_object_new_int64(size));
		json_object_object_add(ann, REF_NAME,
				       json_object_new_string(tags[t]));
		json_object_object_add(desc, "annotations", ann);
		r = strata_index_retag(manifests, tags[t], desc,
				       lw->keep_untagged);
		if (r < 0)
			goto out;
	}
	s = json_object_to_json_string_length(
		idx, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	r = strata_write_atomic(lw->dir_fd, "index.json", s, len, 0644);
	if (r < 0)
		strata_err_set(err, r, "%s/index.json: %s", lw->path,
			       strerror(-r));
out:
	json_object_put(idx);
	return r;
}
