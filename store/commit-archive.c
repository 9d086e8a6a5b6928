/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Commit into an archive: an oci-archive is an OCI layout in a tar (what
 * containers/image's oci-archive transport writes and reads); a
 * docker-archive is `docker save`'s format: manifest.json naming the config
 * and each layer's file. Layer files keep their compression (docker load
 * and containers/image sniff and decompress them). The archive is written
 * under a temporary name beside FILE and renamed over it when complete.
 * Entries have fixed owners, modes and times, so the same image gives the
 * same archive.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commit.h"

static int put_entry(struct strata_blobw *w, const char *name, char type,
		     uint64_t size)
{
	struct strata_tar_hdr h = {
		.path = name,
		.type = type,
		.mode = type == '5' ? 0755 : 0644,
		.size = size,
	};

	return strata_tar_header(w, &h);
}

static int put_buf(struct strata_blobw *w, const char *name, const void *buf,
		   size_t len)
{
	int r = put_entry(w, name, '0', len);

	if (r == 0)
		r = strata_blobw_write(w, buf, len);
	if (r == 0)
		r = strata_tar_pad(w, len);
	return r;
}

static int put_blob(struct strata_blobw *w, const struct strata_archive_out *a,
		    const char *name, const char *digest, int64_t size,
		    struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	cleanup_free char *buf = NULL;
	cleanup_fd int fd = -1;
	int64_t done = 0;
	int r;

	strata_blob_relpath(digest, rel, sizeof(rel));
	fd = openat(a->new_blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		fd = openat(a->base_blobs_fd, rel, O_RDONLY | O_CLOEXEC |
			    O_NOFOLLOW);
	if (fd < 0)
		return strata_err_set(err, -errno, "blob %s: %s", digest,
				      strerror(errno));
	buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	r = put_entry(w, name, '0', (uint64_t)size);
	while (r == 0 && done < size) {
		size_t want = size - done > (1 << 20) ? (1 << 20)
						      : (size_t)(size - done);
		ssize_t n = read(fd, buf, want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return strata_err_set(err, n < 0 ? -errno : -EBADMSG,
					      "blob %s: short read", digest);
		r = strata_blobw_write(w, buf, (size_t)n);
		done += n;
	}
	if (r == 0)
		r = strata_tar_pad(w, (uint64_t)size);
	return r;
}

static bool seen_before(const struct strata_archive_out *a, size_t i)
{
	size_t k;

	for (k = 0; k < i; k++)
		if (!strcmp(a->layers[k], a->layers[i]))
			return true;
	return false;
}

static int oci_archive(struct strata_blobw *w,
		       const struct strata_archive_out *a,
		       struct strata_err *err)
{
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	struct json_object *idx = json_object_new_object();
	struct json_object *ms = json_object_new_array();
	char name[STRATA_DIGEST_MAX + 16];
	const char *s;
	size_t i, len;
	int r;

	json_object_object_add(idx, "schemaVersion", json_object_new_int(2));
	json_object_object_add(idx, "mediaType", json_object_new_string(
		"application/vnd.oci.image.index.v1+json"));
	for (i = 0; i < (a->n_tags ? a->n_tags : 1); i++) {
		struct json_object *d = json_object_new_object();

		json_object_object_add(d, "mediaType",
				       json_object_new_string(a->manifest_mt));
		json_object_object_add(d, "digest", json_object_new_string(
			a->manifest_digest));
		json_object_object_add(d, "size",
				       json_object_new_int64(a->manifest_size));
		if (a->n_tags) {
			struct json_object *ann = json_object_new_object();

			json_object_object_add(ann,
				"org.opencontainers.image.ref.name",
				json_object_new_string(a->tags[i]));
			json_object_object_add(d, "annotations", ann);
		}
		json_object_array_add(ms, d);
	}
	json_object_object_add(idx, "manifests", ms);
	s = json_object_to_json_string_length(
		idx, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	r = put_buf(w, "oci-layout", layout, sizeof(layout) - 1);
	if (r == 0)
		r = put_buf(w, "index.json", s, len);
	json_object_put(idx);
	if (r == 0)
		r = put_entry(w, "blobs", '5', 0);
	if (r == 0)
		r = put_entry(w, "blobs/sha256", '5', 0);
	for (i = 0; r == 0 && i < a->n_layers; i++) {
		if (seen_before(a, i))
			continue;
		snprintf(name, sizeof(name), "blobs/%s", a->layers[i]);
		name[strlen("blobs/sha256")] = '/';
		r = put_blob(w, a, name, a->layers[i], a->sizes[i], err);
	}
	if (r == 0) {
		snprintf(name, sizeof(name), "blobs/%s", a->config_digest);
		name[strlen("blobs/sha256")] = '/';
		r = put_blob(w, a, name, a->config_digest, a->config_size, err);
	}
	if (r == 0) {
		snprintf(name, sizeof(name), "blobs/%s", a->manifest_digest);
		name[strlen("blobs/sha256")] = '/';
		r = put_blob(w, a, name, a->manifest_digest, a->manifest_size,
			     err);
	}
	return r;
}

static int docker_archive(struct strata_blobw *w,
			  const struct strata_archive_out *a,
			  struct strata_err *err)
{
	struct json_object *arr = json_object_new_array();
	struct json_object *m = json_object_new_object();
	struct json_object *tags = json_object_new_array();
	struct json_object *layers = json_object_new_array();
	char name[STRATA_DIGEST_MAX + 32];
	const char *s;
	size_t i, len;
	int r = 0;

	snprintf(name, sizeof(name), "%s.json", strchr(a->config_digest, ':') + 1);
	json_object_object_add(m, "Config", json_object_new_string(name));
	for (i = 0; i < a->n_tags; i++)
		json_object_array_add(tags, json_object_new_string(a->tags[i]));
	json_object_object_add(m, "RepoTags", tags);
	for (i = 0; i < a->n_layers; i++) {
		snprintf(name, sizeof(name), "%s/layer.tar",
			 strchr(a->layers[i], ':') + 1);
		json_object_array_add(layers, json_object_new_string(name));
	}
	json_object_object_add(m, "Layers", layers);
	json_object_array_add(arr, m);
	snprintf(name, sizeof(name), "%s.json", strchr(a->config_digest, ':') + 1);
	r = put_blob(w, a, name, a->config_digest, a->config_size, err);
	for (i = 0; r == 0 && i < a->n_layers; i++) {
		if (seen_before(a, i))
			continue;
		snprintf(name, sizeof(name), "%s", strchr(a->layers[i], ':') + 1);
		r = put_entry(w, name, '5', 0);
		snprintf(name, sizeof(name), "%s/layer.tar",
			 strchr(a->layers[i], ':') + 1);
		if (r == 0)
			r = put_blob(w, a, name, a->layers[i], a->sizes[i], err);
	}
	s = json_object_to_json_string_length(
		arr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (r == 0)
		r = put_buf(w, "manifest.json", s, len);
	json_object_put(arr);
	return r;
}

int strata_archive_write(const struct strata_archive_out *a,
			 struct strata_err *err)
{
	cleanup_(strata_blobw_freep) struct strata_blobw *w = NULL;
	cleanup_free char *dcopy = strdup(a->path), *bcopy = strdup(a->path);
	cleanup_fd int dfd = -1;
	int r;

	if (!dcopy || !bcopy)
		return -ENOMEM;
	dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return strata_err_set(err, -errno, "%s: %s", a->path,
				      strerror(errno));
	r = strata_blobw_new(dfd, STRATA_COMP_NONE, 1, &w);
	if (r < 0)
		return strata_err_set(err, r, "%s: %s", a->path, strerror(-r));
	r = a->docker ? docker_archive(w, a, err) : oci_archive(w, a, err);
	if (r == 0)
		r = strata_tar_end(w);
	if (r == 0)
		r = strata_blobw_finish_as(w, basename(bcopy));
	if (r < 0)
		return strata_err_set(err, r, "%s: %s", a->path, strerror(-r));
	return 0;
}
