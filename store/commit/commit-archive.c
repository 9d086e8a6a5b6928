/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing archives: an oci-archive is an OCI layout in a tar (what
 * containers/image's oci-archive transport writes and reads); a
 * docker-archive is `docker save`'s format: manifest.json naming each
 * image's config, tags and layer files, and the legacy repositories file
 * (NAME -> TAG -> top layer directory). An archive may hold several images
 * (strata save); a blob they share is written once. Layer files keep their
 * compression (docker load and containers/image sniff and decompress
 * them). The archive is written under a temporary name beside FILE,
 * fsync'd and renamed over it when complete. Entries have fixed owners,
 * modes and times, so the same images give the same archive.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commit.h"

struct awriter {
	struct strata_blobw *w;
	const int *fds;			/* the image's blobs_fd[2] */
	uint64_t done, total;		/* bytes of blobs, for progress */
	char **seen;			/* digests written */
	size_t n_seen;
};

/* Was @digest written already? If not, remember it. */
static bool seen(struct awriter *aw, const char *digest)
{
	for (size_t k = 0; k < aw->n_seen; k++)
		if (!strcmp(aw->seen[k], digest))
			return true;
	aw->seen[aw->n_seen++] = (char *)digest;
	return false;
}

static int put_blob(struct awriter *aw, const char *name, const char *digest,
		    int64_t size, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	cleanup_free char *buf = NULL;
	cleanup_fd int fd = -1;
	int64_t done = 0;
	int r;

	strata_blob_relpath(digest, rel, sizeof(rel));
	fd = openat(aw->fds[0], rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		fd = openat(aw->fds[1], rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return strata_err_set(err, -errno, "blob %s: %s", digest,
				      strerror(errno));
	buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	r = strata_tar_member(aw->w, name, '0', (uint64_t)size, 0);
	while (r == 0 && done < size) {
		size_t want = size - done > (1 << 20) ? (1 << 20)
						      : (size_t)(size - done);
		ssize_t n = read(fd, buf, want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return strata_err_set(err, n < 0 ? -errno : -EBADMSG,
					      "blob %s: short read", digest);
		r = strata_blobw_write(aw->w, buf, (size_t)n);
		done += n;
		aw->done += (uint64_t)n;
		strata_progress("writing archive", aw->done, aw->total);
	}
	if (r == 0)
		r = strata_tar_pad(aw->w, (uint64_t)size);
	return r;
}

static const char *hex_of(const char *digest)
{
	const char *c = strchr(digest, ':');

	return c ? c + 1 : digest;
}

/* "blobs/ALG/HEX" */
static void oci_name(char *out, size_t cap, const char *digest)
{
	snprintf(out, cap, "blobs/%s", digest);
	*strchr(out + 6, ':') = '/';
}

static int oci_archive(struct awriter *aw, const struct strata_archive_img *imgs,
		       size_t n, struct strata_err *err)
{
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	struct json_object *idx = json_object_new_object();
	struct json_object *ms = json_object_new_array();
	char name[STRATA_DIGEST_MAX + 16];
	const char *s;
	size_t i, k, len;
	int r;

	json_object_object_add(idx, "schemaVersion", json_object_new_int(2));
	json_object_object_add(idx, "mediaType", json_object_new_string(
		"application/vnd.oci.image.index.v1+json"));
	for (k = 0; k < n; k++) {
		const struct strata_archive_img *a = &imgs[k];

		for (i = 0; i < (a->n_tags ? a->n_tags : 1); i++) {
			struct json_object *d = json_object_new_object();

			json_object_object_add(d, "mediaType",
				json_object_new_string(a->manifest_mt));
			json_object_object_add(d, "digest",
				json_object_new_string(a->manifest_digest));
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
	}
	json_object_object_add(idx, "manifests", ms);
	s = json_object_to_json_string_length(
		idx, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	r = strata_tar_file(aw->w, "oci-layout", layout, sizeof(layout) - 1, 0);
	if (r == 0)
		r = strata_tar_file(aw->w, "index.json", s, len, 0);
	json_object_put(idx);
	if (r == 0)
		r = strata_tar_member(aw->w, "blobs", '5', 0, 0);
	if (r == 0)
		r = strata_tar_member(aw->w, "blobs/sha256", '5', 0, 0);
	for (k = 0; r == 0 && k < n; k++) {
		const struct strata_archive_img *a = &imgs[k];

		aw->fds = a->blobs_fd;
		for (i = 0; r == 0 && i < a->n_layers; i++) {
			if (seen(aw, a->layers[i]))
				continue;
			oci_name(name, sizeof(name), a->layers[i]);
			r = put_blob(aw, name, a->layers[i], a->sizes[i], err);
		}
		if (r == 0 && !seen(aw, a->config_digest)) {
			oci_name(name, sizeof(name), a->config_digest);
			r = put_blob(aw, name, a->config_digest, a->config_size,
				     err);
		}
		if (r == 0 && !seen(aw, a->manifest_digest)) {
			oci_name(name, sizeof(name), a->manifest_digest);
			r = put_blob(aw, name, a->manifest_digest,
				     a->manifest_size, err);
		}
	}
	return r;
}

/* repositories: {"NAME": {"TAG": top layer directory}} */
static void add_repository(struct json_object *repos, const char *nametag,
			   const char *top)
{
	const char *slash = strrchr(nametag, '/');
	const char *colon = strrchr(slash ? slash : nametag, ':');
	char *name = colon ? strndup(nametag, (size_t)(colon - nametag))
			   : strdup(nametag);
	struct json_object *tags;

	if (!name)
		return;
	if (!json_object_object_get_ex(repos, name, &tags)) {
		tags = json_object_new_object();
		json_object_object_add(repos, name, tags);
	}
	json_object_object_add(tags, colon ? colon + 1 : "latest",
			       json_object_new_string(top));
	free(name);
}

static int docker_archive(struct awriter *aw,
			  const struct strata_archive_img *imgs, size_t n,
			  struct strata_err *err)
{
	struct json_object *arr = json_object_new_array();
	struct json_object *repos = json_object_new_object();
	char name[STRATA_DIGEST_MAX + 32];
	const char *s;
	size_t i, k, len;
	int r = 0;

	for (k = 0; r == 0 && k < n; k++) {
		const struct strata_archive_img *a = &imgs[k];
		struct json_object *m = json_object_new_object();
		struct json_object *tags = json_object_new_array();
		struct json_object *layers = json_object_new_array();

		aw->fds = a->blobs_fd;
		snprintf(name, sizeof(name), "%s.json", hex_of(a->config_digest));
		json_object_object_add(m, "Config", json_object_new_string(name));
		for (i = 0; i < a->n_tags; i++) {
			json_object_array_add(tags,
					      json_object_new_string(a->tags[i]));
			if (a->n_layers)
				add_repository(repos, a->tags[i],
					hex_of(a->layers[a->n_layers - 1]));
		}
		json_object_object_add(m, "RepoTags", tags);
		for (i = 0; i < a->n_layers; i++) {
			snprintf(name, sizeof(name), "%s/layer.tar",
				 hex_of(a->layers[i]));
			json_object_array_add(layers,
					      json_object_new_string(name));
		}
		json_object_object_add(m, "Layers", layers);
		json_object_array_add(arr, m);
		if (!seen(aw, a->config_digest)) {
			snprintf(name, sizeof(name), "%s.json",
				 hex_of(a->config_digest));
			r = put_blob(aw, name, a->config_digest,
				     a->config_size, err);
		}
		for (i = 0; r == 0 && i < a->n_layers; i++) {
			if (seen(aw, a->layers[i]))
				continue;
			snprintf(name, sizeof(name), "%s", hex_of(a->layers[i]));
			r = strata_tar_member(aw->w, name, '5', 0, 0);
			snprintf(name, sizeof(name), "%s/layer.tar",
				 hex_of(a->layers[i]));
			if (r == 0)
				r = put_blob(aw, name, a->layers[i],
					     a->sizes[i], err);
		}
	}
	s = json_object_to_json_string_length(
		arr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (r == 0)
		r = strata_tar_file(aw->w, "manifest.json", s, len, 0);
	s = json_object_to_json_string_length(
		repos, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
		&len);
	if (r == 0 && json_object_object_length(repos))
		r = strata_tar_file(aw->w, "repositories", s, len, 0);
	json_object_put(arr);
	json_object_put(repos);
	return r;
}

int strata_archive_write_images(const char *path, bool docker,
				const struct strata_archive_img *imgs, size_t n,
				struct strata_err *err)
{
	struct awriter aw = { 0 };
	cleanup_free char *dcopy = strdup(path), *bcopy = strdup(path);
	cleanup_fd int dfd = -1;
	size_t k, i, nblobs = 0;
	int r;

	if (!dcopy || !bcopy)
		return -ENOMEM;
	for (k = 0; k < n; k++) {
		nblobs += imgs[k].n_layers + 2;
		aw.total += (uint64_t)imgs[k].config_size;
		for (i = 0; i < imgs[k].n_layers; i++)
			aw.total += (uint64_t)imgs[k].sizes[i];
	}
	aw.seen = calloc(nblobs + 1, sizeof(*aw.seen));
	if (!aw.seen)
		return -ENOMEM;
	dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		r = strata_err_set(err, -errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	r = strata_blobw_new(dfd, STRATA_COMP_NONE, 1, &aw.w);
	if (r < 0) {
		strata_err_set(err, r, "%s: %s", path, strerror(-r));
		goto out;
	}
	r = docker ? docker_archive(&aw, imgs, n, err)
		   : oci_archive(&aw, imgs, n, err);
	if (r == 0)
		r = strata_tar_end(aw.w);
	if (r == 0)
		r = strata_blobw_finish_as(aw.w, basename(bcopy));
	strata_progress_done();
	if (r < 0 && !strata_err_isset(err))
		strata_err_set(err, r, "%s: %s", path, strerror(-r));
out:
	if (aw.w)
		strata_blobw_free(aw.w);
	free(aw.seen);
	return r;
}

int strata_archive_write(const struct strata_archive_out *a,
			 struct strata_err *err)
{
	struct strata_archive_img img = {
		.tags = a->tags,
		.n_tags = a->n_tags,
		.manifest_mt = a->manifest_mt,
		.manifest_digest = a->manifest_digest,
		.manifest_size = a->manifest_size,
		.config_digest = a->config_digest,
		.config_size = a->config_size,
		.layers = a->layers,
		.sizes = a->sizes,
		.n_layers = a->n_layers,
		.blobs_fd = { a->new_blobs_fd, a->base_blobs_fd },
	};

	return strata_archive_write_images(a->path, a->docker, &img, 1, err);
}

void strata_legacy_layer_ids(char *const *diff_ids, size_t n, char (*ids)[65])
{
	char chain[STRATA_DIGEST_MAX], buf[2 * STRATA_DIGEST_MAX + 2];

	for (size_t i = 0; i < n; i++) {
		if (i == 0) {
			snprintf(chain, sizeof(chain), "%s", diff_ids[0]);
		} else {
			snprintf(buf, sizeof(buf), "%s %s", chain, diff_ids[i]);
			strata_sha256(buf, strlen(buf), chain);
		}
		snprintf(ids[i], 65, "%.64s", hex_of(chain));
	}
}
