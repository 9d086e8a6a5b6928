/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local store: ROOT/images is an OCI image layout whose index.json tags
 * images as "NAME:TAG"; ROOT/layers is the layer cache; ROOT/tmp scratch.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define INDEX_LOCK ".index.lock"

static int default_root(char **out)
{
	const char *env = getenv("STRATA_ROOT");
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");

	if (env && *env)
		*out = strdup(env);
	else if (geteuid() == 0)
		*out = strdup("/var/lib/strata");
	else if (xdg && *xdg == '/')
		return asprintf(out, "%s/strata", xdg) < 0 ? -ENOMEM : 0;
	else if (home && *home == '/')
		return asprintf(out, "%s/.local/share/strata", home) < 0 ? -ENOMEM : 0;
	else {
		struct passwd *pw = getpwuid(geteuid());

		if (!pw)
			return -ENOENT;
		return asprintf(out, "%s/.local/share/strata", pw->pw_dir) < 0
			       ? -ENOMEM : 0;
	}
	return *out ? 0 : -ENOMEM;
}

static int open_dir(int at, const char *name, mode_t mode)
{
	if (mkdirat(at, name, mode) < 0 && errno != EEXIST)
		return -errno;
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	return fd < 0 ? -errno : fd;
}

void strata_store_free(struct strata_store *st)
{
	int *fds[] = { &st->root_fd, &st->images_fd, &st->blobs_fd,
		       &st->layers_fd, &st->tmp_fd, &st->hold_fd };
	size_t i;

	strata_store_unpin(st);
	for (i = 0; i < ARRAY_SIZE(fds); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	free(st->root);
	free(st);
}

int strata_store_open(const char *root, struct strata_store **out,
		      struct strata_err *err)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->root_fd = st->images_fd = st->blobs_fd = st->layers_fd = -1;
	st->tmp_fd = st->hold_fd = st->pin_fd = -1;
	if (root)
		st->root = strdup(root);
	else if ((r = default_root(&st->root)) < 0)
		return strata_err_set(err, r, "cannot find a store root: set "
				      "STRATA_ROOT or use --root");
	if (!st->root)
		return -ENOMEM;
	r = strata_mkdirat_p(AT_FDCWD, st->root, 0700);
	if (r < 0)
		return strata_err_set(err, r, "store %s: %s", st->root,
				      strerror(-r));
	st->root_fd = open(st->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->root_fd < 0)
		return strata_err_set(err, -errno, "store %s: %s", st->root,
				      strerror(errno));
	if ((st->images_fd = open_dir(st->root_fd, "images", 0755)) < 0 ||
	    (st->layers_fd = open_dir(st->root_fd, "layers", 0755)) < 0 ||
	    (st->tmp_fd = open_dir(st->root_fd, "tmp", 0700)) < 0) {
		r = -errno;
		return strata_err_set(err, r, "store %s: %s", st->root,
				      strerror(-r));
	}
	r = strata_mkdirat_p(st->images_fd, "blobs/sha256", 0755);
	if (r == 0)
		r = strata_mkdirat_p(st->images_fd, "blobs/sha512", 0755);
	if (r == 0)
		r = strata_mkdirat_p(st->layers_fd, "sha256", 0755);
	if (r == 0)
		r = strata_mkdirat_p(st->layers_fd, "sha512", 0755);
	if (r < 0)
		return strata_err_set(err, r, "store %s: %s", st->root,
				      strerror(-r));
	st->blobs_fd = openat(st->images_fd, "blobs",
			      O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->blobs_fd < 0)
		return -errno;
	if (faccessat(st->images_fd, "oci-layout", F_OK, 0) < 0) {
		r = strata_write_atomic(st->images_fd, "oci-layout", layout,
					sizeof(layout) - 1, 0644);
		if (r < 0)
			return strata_err_set(err, r, "store %s: %s", st->root,
					      strerror(-r));
	}
	*out = take_ptr(&st);
	return 0;
}

const char *strata_store_root(const struct strata_store *st)
{
	return st->root;
}

void strata_store_set_reg_opts(struct strata_store *st,
			       const struct strata_reg_opts *o)
{
	st->reg_opts = o;
}

int strata_store_index_load(struct strata_store *st, struct json_object **out,
			    struct strata_err *err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	int r;

	r = strata_read_file(st->images_fd, "index.json", STRATA_JSON_MAX, &buf,
			     &len);
	if (r == -ENOENT) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "schemaVersion", json_object_new_int(2));
		json_object_object_add(o, "mediaType",
				       json_object_new_string(MT_OCI_INDEX));
		json_object_object_add(o, "manifests", json_object_new_array());
		*out = o;
		return 0;
	}
	if (r < 0)
		return strata_err_set(err, r, "store %s: index.json: %s",
				      st->root, strerror(-r));
	return strata_json_parse(buf, len, "store index.json", out, err);
}

static int index_save(struct strata_store *st, struct json_object *idx)
{
	size_t len;
	const char *s = json_object_to_json_string_length(
		idx, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

	return strata_write_atomic(st->images_fd, "index.json", s, len, 0644);
}

/* Copy blob @digest from @src_fd into the store (if missing), verifying. */
static int copy_blob(struct strata_store *st, int src_fd, const char *digest,
		     int64_t size, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	cleanup_fd int in = -1;

	strata_blob_relpath(digest, rel, sizeof(rel));
	if (faccessat(st->blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	if (src_fd == st->blobs_fd)
		return strata_err_set(err, -ENOENT, "blob %s: missing", digest);
	in = openat(src_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return strata_err_set(err, -errno, "blob %s: %s", digest,
				      errno == ENOENT ? "missing from the layout"
						      : strerror(errno));
	return strata_blob_copy_verified(in, st->blobs_fd, rel, digest, size,
					 true, "layout", err);
}

int strata_store_tag(struct strata_store *st, struct strata_image *img,
		     const char *name, struct strata_err *err)
{
	struct json_object *idx = NULL, *manifests, *desc, *ann;
	cleanup_fd int lock = -1;
	size_t i;
	int r;

	r = strata_store_hold(st, err);
	if (r < 0)
		return r;
	if ((r = copy_blob(st, img->blobs_fd, img->config_digest,
			   img->config_size, err)) < 0 ||
	    (r = copy_blob(st, img->blobs_fd, img->manifest_digest,
			   img->manifest_size, err)) < 0)
		return r;
	for (i = 0; i < img->n_layers; i++) {
		r = copy_blob(st, img->blobs_fd, img->layers[i].digest,
			      img->layers[i].size, err);
		if (r < 0)
			return strata_err_wrap(err, r, "layer %zu", i);
	}
	strata_progress_done();
	fsync(st->blobs_fd);
	lock = strata_lock_at(st->images_fd, INDEX_LOCK, true);
	if (lock < 0)
		return strata_err_set(err, lock, "store lock: %s",
				      strerror(-lock));
	r = strata_store_index_load(st, &idx, err);
	if (r < 0)
		return r;
	if (strata_json_array(idx, "manifests", true, &manifests, "index.json",
			      err) < 0) {
		json_object_put(idx);
		return -EBADMSG;
	}
	desc = json_object_new_object();
	ann = json_object_new_object();
	json_object_object_add(desc, "mediaType",
			       json_object_new_string(img->manifest_media_type));
	json_object_object_add(desc, "digest",
			       json_object_new_string(img->manifest_digest));
	json_object_object_add(desc, "size",
			       json_object_new_int64(img->manifest_size));
	json_object_object_add(ann, "org.opencontainers.image.ref.name",
			       json_object_new_string(name));
	json_object_object_add(desc, "annotations", ann);
	r = strata_index_retag(manifests, name, desc, true);
	if (r >= 0)
		r = index_save(st, idx);
	json_object_put(idx);
	if (r < 0)
		return strata_err_set(err, r, "store index.json: %s",
				      strerror(-r));
	return 0;
}

/* Size (manifest, config, layer blobs) and creation time of the image of
 * descriptor @m, into @t; left at -1 and NULL when it cannot be read. */
static void describe(struct strata_store *st, struct json_object *m,
		     struct strata_tag_info *t)
{
	struct strata_image *img = calloc(1, sizeof(*img));
	size_t i;

	t->size = -1;
	if (!img)
		return;
	img->blobs_fd = -1;
	if (strata_image_from_desc(img, st->blobs_fd, m, NULL, NULL) == 0) {
		t->size = img->manifest_size + img->config_size;
		for (i = 0; i < img->n_layers; i++)
			t->size += img->layers[i].size;
		if (img->created)
			t->created = strdup(img->created);
	}
	strata_image_free(img);
}

int strata_store_list(struct strata_store *st, bool all,
		      struct strata_tag_info **out, size_t *n_out,
		      struct strata_err *err)
{
	struct json_object *idx = NULL, *manifests;
	struct strata_tag_info *tags;
	size_t i, n, k = 0;
	int r;

	r = strata_store_index_load(st, &idx, err);
	if (r < 0)
		return r;
	if (strata_json_array(idx, "manifests", true, &manifests, "index.json",
			      err) < 0) {
		json_object_put(idx);
		return -EBADMSG;
	}
	n = json_object_array_length(manifests);
	tags = calloc(n ? n : 1, sizeof(*tags));
	if (!tags) {
		json_object_put(idx);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct json_object *m = json_object_array_get_idx(manifests, i);
		struct strata_desc d;
		const char *ref = strata_desc_ref_name(m);

		if ((!ref && !all) ||
		    strata_desc_parse(m, &d, "index.json", NULL) < 0)
			continue;
		tags[k].name = ref ? strdup(ref) : NULL;
		tags[k].digest = strdup(d.digest);
		if ((ref && !tags[k].name) || !tags[k].digest) {
			strata_tags_free(tags, k + 1);
			json_object_put(idx);
			return -ENOMEM;
		}
		describe(st, m, &tags[k]);
		k++;
	}
	json_object_put(idx);
	*out = tags;
	*n_out = k;
	return 0;
}

void strata_tags_free(struct strata_tag_info *tags, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(tags[i].name);
		free(tags[i].digest);
		free(tags[i].created);
	}
	free(tags);
}

int strata_store_untag(struct strata_store *st, const char *name,
		       struct strata_err *err)
{
	struct json_object *idx = NULL, *manifests;
	cleanup_fd int lock = -1;
	int r;

	lock = strata_lock_at(st->images_fd, INDEX_LOCK, true);
	if (lock < 0)
		return lock;
	r = strata_store_index_load(st, &idx, err);
	if (r < 0)
		return r;
	if (strata_json_array(idx, "manifests", true, &manifests, "index.json",
			      err) < 0) {
		json_object_put(idx);
		return -EBADMSG;
	}
	r = strata_index_retag(manifests, name, NULL, true);
	if (r < 0) {
		json_object_put(idx);
		return r;
	}
	if (r == 0) {
		struct json_object *dummy;

		strata_index_pick(idx, name, NULL, "store", &dummy, err);
		json_object_put(idx);
		return -ENOENT;
	}
	r = index_save(st, idx);
	json_object_put(idx);
	return r;
}

void strata_image_free(struct strata_image *img)
{
	size_t i;

	free(img->ref_text);
	free(img->manifest_digest);
	free(img->manifest_media_type);
	free(img->config_digest);
	free(img->config_media_type);
	free(img->created);
	free(img->author);
	strata_strv_free(img->env);
	strata_strv_free(img->entrypoint);
	strata_strv_free(img->cmd);
	free(img->working_dir);
	free(img->user);
	strata_strv_free(img->labels);
	strata_strv_free(img->exposed_ports);
	strata_strv_free(img->volumes);
	free(img->stop_signal);
	for (i = 0; i < img->n_layers; i++) {
		free(img->layers[i].media_type);
		free(img->layers[i].digest);
		free(img->layers[i].diff_id);
		free(img->layers[i].toc_digest);
		free(img->layers[i].toc_position);
	}
	free(img->layers);
	for (i = 0; i < img->n_history; i++) {
		free(img->history[i].created);
		free(img->history[i].created_by);
		free(img->history[i].author);
		free(img->history[i].comment);
	}
	free(img->history);
	if (img->blobs_fd >= 0)
		close(img->blobs_fd);
	free(img->blobs_desc);
	if (img->source)
		img->source->free(img->source);
	free(img);
}

/*
 * A manifest or index that index.json no longer lists (its tag moved, or
 * another tool replaced it) is still named by its digest while its blob is
 * in the layout: a digest names content, and the blob is verified against
 * it. Its descriptor is made from the blob itself: digest, size and the
 * document's mediaType, or for an OCI document without one, the kind its
 * fields show.
 */
static int desc_of_blob(int blobs_fd, const char *digest, const char *where,
			struct json_object **out, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	struct json_object *doc = NULL, *desc;
	cleanup_free char *buf = NULL;
	const char *mt = NULL;
	struct stat sb;
	int r;

	strata_blob_relpath(digest, rel, sizeof(rel));
	if (fstatat(blobs_fd, rel, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(sb.st_mode))
		return strata_err_set(err, -ENOENT, "%s: no image with digest "
				      "%s (not in index.json, no such blob)",
				      where, digest);
	if (sb.st_size > STRATA_JSON_MAX)
		return strata_err_set(err, -EBADMSG, "%s: blob %s is no "
				      "manifest (%lld bytes)", where, digest,
				      (long long)sb.st_size);
	r = strata_blob_read(blobs_fd, digest, sb.st_size, STRATA_JSON_MAX,
			     &buf, err);
	if (r < 0)
		return r;
	r = strata_json_parse(buf, (size_t)sb.st_size, digest, &doc, err);
	if (r < 0)
		return r;
	strata_json_string(doc, "mediaType", false, &mt, digest, NULL);
	/* an OCI document may leave mediaType out (image-spec manifest.md,
	 * image-index.md): its fields say which one it is */
	if (!mt && json_object_object_get_ex(doc, "config", NULL) &&
	    json_object_object_get_ex(doc, "layers", NULL))
		mt = "application/vnd.oci.image.manifest.v1+json";
	else if (!mt && json_object_object_get_ex(doc, "manifests", NULL))
		mt = MT_OCI_INDEX;
	if (!mt || (!strata_media_is_manifest(mt) &&
		    !strata_media_is_index(mt))) {
		json_object_put(doc);
		return strata_err_set(err, -ENOENT, "%s: blob %s is not listed "
				      "in index.json and is not a manifest "
				      "or an index", where, digest);
	}
	desc = json_object_new_object();
	if (!desc) {
		json_object_put(doc);
		return -ENOMEM;
	}
	json_object_object_add(desc, "mediaType", json_object_new_string(mt));
	json_object_object_add(desc, "digest", json_object_new_string(digest));
	json_object_object_add(desc, "size",
			       json_object_new_int64(sb.st_size));
	json_object_put(doc);
	*out = desc;
	return 0;
}

static int resolve_layout(struct strata_image *img, int layout_fd,
			  const char *where, const char *tag,
			  const char *digest, const struct strata_platform *plat,
			  struct strata_err *err)
{
	cleanup_free char *buf = NULL;
	struct json_object *idx = NULL, *desc;
	struct strata_err perr = { 0 };
	char what[600];
	size_t len;
	int r;

	snprintf(what, sizeof(what), "%s: oci-layout", where);
	r = strata_read_file(layout_fd, "oci-layout", 65536, &buf, &len);
	if (r < 0)
		return strata_err_set(err, r == -ENOENT ? -ENOENT : r,
				      "%s: not an OCI image layout (no "
				      "oci-layout file)", where);
	r = strata_json_parse(buf, len, what, &idx, err);
	if (r < 0)
		return r;
	{
		const char *ver;

		r = strata_json_string(idx, "imageLayoutVersion", true, &ver,
				       what, err);
		if (r == 0 && strcmp(ver, "1.0.0"))
			r = strata_err_set(err, -EOPNOTSUPP,
					   "%s: unsupported imageLayoutVersion "
					   "\"%s\"", what, ver);
		json_object_put(idx);
		idx = NULL;
		if (r < 0)
			return r;
	}
	free(buf);
	buf = NULL;
	snprintf(what, sizeof(what), "%s: index.json", where);
	r = strata_read_file(layout_fd, "index.json", STRATA_JSON_MAX, &buf,
			     &len);
	if (r < 0)
		return strata_err_set(err, r, "%s: %s", what, strerror(-r));
	r = strata_json_parse(buf, len, what, &idx, err);
	if (r < 0)
		return r;
	r = strata_index_pick(idx, tag, digest, where, &desc, &perr);
	if (r < 0 && !(r == -ENOENT && digest) && err && !err->code)
		*err = perr;
	if (r == -ENOENT && digest) {
		json_object_put(idx);
		idx = NULL;
		r = desc_of_blob(img->blobs_fd, digest, where, &idx, err);
		desc = idx;
	}
	if (r == 0)
		r = strata_image_from_desc(img, img->blobs_fd, desc, plat, err);
	json_object_put(idx);
	if (r < 0)
		return strata_err_wrap(err, r, "image %s", img->ref_text);
	return 0;
}

int strata_image_resolve(struct strata_store *st, const char *refstr,
			 const struct strata_platform *plat,
			 struct strata_image **out, struct strata_err *err)
{
	cleanup_(strata_ref_freep) struct strata_ref *ref = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	cleanup_fd int dfd = -1;
	int r;

	r = strata_ref_parse(refstr, &ref, err);
	if (r == 0)
		r = strata_store_hold(st, err);
	if (r < 0)
		return r;
	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->blobs_fd = -1;
	img->ref_text = strdup(refstr);
	if (!img->ref_text)
		return -ENOMEM;
	switch (ref->kind) {
	case STRATA_REF_STORE:
		img->blobs_fd = fcntl(st->blobs_fd, F_DUPFD_CLOEXEC, 3);
		img->blobs_desc = strdup(st->root);
		if (faccessat(st->images_fd, "index.json", F_OK, 0) < 0)
			return strata_err_set(err, -ENOENT, "no image %s in the "
					      "store %s (it holds no images; "
					      "strata import adds one)",
					      ref->tag, st->root);
		r = resolve_layout(img, st->images_fd, "store",
				   ref->digest ? NULL : ref->tag, ref->digest,
				   plat, err);
		if (r == -ENOENT && !strata_err_isset(err))
			r = strata_err_set(err, r, "no image %s in the store",
					   ref->digest ? ref->digest : ref->tag);
		break;
	case STRATA_REF_OCI:
		dfd = open(ref->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return strata_err_set(err, -errno, "%s: %s", ref->path,
					      strerror(errno));
		img->blobs_fd = openat(dfd, "blobs",
				       O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (img->blobs_fd < 0)
			return strata_err_set(err, -errno,
					      "%s: not an OCI image layout "
					      "(no blobs directory)", ref->path);
		img->blobs_desc = strdup(ref->path);
		r = resolve_layout(img, dfd, ref->path, ref->tag, ref->digest,
				   plat, err);
		break;
	case STRATA_REF_OCI_ARCHIVE:
	case STRATA_REF_DOCKER_ARCHIVE:
		img->blobs_fd = fcntl(st->blobs_fd, F_DUPFD_CLOEXEC, 3);
		img->blobs_desc = strdup(ref->path);
		r = strata_archive_resolve(st, ref, plat, img, err);
		break;
	case STRATA_REF_DIR:
		img->blobs_fd = fcntl(st->blobs_fd, F_DUPFD_CLOEXEC, 3);
		img->blobs_desc = strdup(ref->path);
		r = strata_dir_resolve(st, ref, plat, img, err);
		break;
	case STRATA_REF_DOCKER:
		img->blobs_fd = fcntl(st->blobs_fd, F_DUPFD_CLOEXEC, 3);
		if (asprintf(&img->blobs_desc, "%s/%s", ref->registry,
			     ref->path) < 0)
			img->blobs_desc = NULL;
		r = strata_registry_resolve(st, ref, plat, img, err);
		break;
	default:
		r = -EINVAL;
	}
	if (r < 0)
		return r;
	*out = take_ptr(&img);
	return 0;
}
