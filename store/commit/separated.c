/* SPDX-License-Identifier: Apache-2.0 */
/*
 * isula-build's separated images: an application image shipped as up to
 * three gzip'd tars beside a `manifest` file, so that sites that already
 * hold the base (and library) image ship only what is above it.
 *
 *   NAME_TAG_base_image.tar.gz   the layers of the base image
 *   NAME_TAG_lib_image.tar.gz    the layers of the lib image above base
 *   NAME_TAG_app_image.tar.gz    the rest, the config (HEX.json),
 *                                manifest.json and repositories
 *
 * NAME is the last path component of the image's name. Every tar holds,
 * per layer, docker save's legacy directory ID/ with VERSION ("1.0"),
 * json ({"id", "parent"}, the top layer also with parts of the config)
 * and layer.tar (uncompressed, so its sha256 is the diff_id); IDs are
 * chain IDs. Entries are sorted by name, owned by 0:0, dated 2016-12-31
 * (isula-build's fixed time). `manifest` maps each image's NAME:TAG to
 * {app, appHash, appLayers, lib, libHash, libImageName, libLayers, base,
 * baseHash, baseImageName, baseLayer}, the hashes the hex sha256 of the
 * tarballs. Images sharing a base (lib) share one tarball: the first,
 * in name order, names it. A rename file ([{"name":, "rename":}]) renames
 * tarballs.
 *
 * Loading checks every sha256 first, then reads the tars as one
 * docker-archive through the ordinary import path (archive.c), where each
 * layer is verified against the config's diff_ids. A base (or lib)
 * tarball that is not there is taken from the store: its layers are
 * found by diff_id among the store's images.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commit.h"

#define SEP_MTIME 1483142400	/* 2016-12-31T00:00:00Z */
#define SEP_NAME_MAX 255

struct rename {
	char *name, *rename;
};

struct sep_ctx {
	struct strata_store *st;
	int dfd;
	const char *dir;
	struct rename *rn;
	size_t n_rn;
	char **made;			/* tarballs written, removed on error */
	size_t n_made;
	uint64_t bytes;			/* of layers written, for progress */
};

struct sep_app {
	struct strata_image *img;
	char *name;			/* NAME:TAG */
	char (*ids)[65];		/* legacy layer IDs */
	char base_tar[SEP_NAME_MAX + 1], lib_tar[SEP_NAME_MAX + 1];
	char app_tar[SEP_NAME_MAX + 1];
	char base_hash[65], lib_hash[65], app_hash[65];
};

static bool plain_name(const char *s)
{
	return *s && strlen(s) <= SEP_NAME_MAX && !strchr(s, '/') &&
	       strcmp(s, ".") && strcmp(s, "..");
}

/* ---- the rename file ---- */

static int load_renames(struct sep_ctx *c, const char *path,
			struct strata_err *err)
{
	struct json_object *arr = NULL;
	cleanup_free char *buf = NULL;
	size_t len, i;
	int r;

	r = strata_read_file(AT_FDCWD, path, STRATA_JSON_MAX, &buf, &len);
	if (r < 0)
		return strata_err_set(err, r, "rename file %s: %s", path,
				      strerror(-r));
	r = strata_json_parse(buf, len, path, &arr, err);
	if (r < 0)
		return r;
	if (!json_object_is_type(arr, json_type_array)) {
		json_object_put(arr);
		return strata_err_set(err, -EBADMSG, "rename file %s: not a "
				      "JSON list of {\"name\": ..., "
				      "\"rename\": ...}", path);
	}
	c->rn = calloc(json_object_array_length(arr) + 1, sizeof(*c->rn));
	if (!c->rn) {
		json_object_put(arr);
		return -ENOMEM;
	}
	for (i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *e = json_object_array_get_idx(arr, i);
		const char *n = NULL, *to = NULL;

		if ((r = strata_json_string(e, "name", true, &n, path, err)) < 0 ||
		    (r = strata_json_string(e, "rename", true, &to, path,
					    err)) < 0)
			break;
		if (!plain_name(to)) {
			r = strata_err_set(err, -EINVAL, "rename file %s: "
					   "\"%s\" is not a file name", path, to);
			break;
		}
		c->rn[c->n_rn].name = strdup(n);
		c->rn[c->n_rn].rename = strdup(to);
		if (!c->rn[c->n_rn].name || !c->rn[c->n_rn++].rename) {
			r = -ENOMEM;
			break;
		}
	}
	json_object_put(arr);
	return r;
}

/* NAME_TAG@suffix, NAME the last path component; renamed if asked. */
static int tar_name(struct sep_ctx *c, const char *nametag, const char *suffix,
		    char *out, struct strata_err *err)
{
	const char *slash = strrchr(nametag, '/');
	const char *base = slash ? slash + 1 : nametag;
	const char *colon = strrchr(base, ':');

	snprintf(out, SEP_NAME_MAX + 1, "%.*s_%s%s",
		 colon ? (int)(colon - base) : (int)strlen(base), base,
		 colon ? colon + 1 : "latest", suffix);
	for (size_t i = 0; i < c->n_rn; i++)
		if (!strcmp(c->rn[i].name, out)) {
			snprintf(out, SEP_NAME_MAX + 1, "%s", c->rn[i].rename);
			break;
		}
	if (faccessat(c->dfd, out, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return strata_err_set(err, -EEXIST, "%s/%s: already exists "
				      "(save into an empty directory)", c->dir,
				      out);
	return 0;
}

/* ---- writing a tarball ---- */

/* Uncompressed content of layer @i of @img into an unnamed temporary
 * file, checked against its diff_id. */
static int layer_tmp(struct sep_ctx *c, const struct strata_image *img,
		     size_t i, int *fd_out, uint64_t *size,
		     struct strata_err *err)
{
	const struct strata_layer *l = &img->layers[i];
	char rel[STRATA_DIGEST_MAX + 8], got[STRATA_DIGEST_MAX];
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	cleanup_free char *buf = malloc(1 << 20);
	cleanup_fd int in = -1, out = -1;
	struct archive *a = NULL;
	struct archive_entry *e;
	int r;

	if (!buf)
		return -ENOMEM;
	strata_blob_relpath(l->digest, rel, sizeof(rel));
	in = openat(img->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		in = openat(c->st->blobs_fd, rel, O_RDONLY | O_CLOEXEC |
			    O_NOFOLLOW);
	if (in < 0)
		return strata_err_set(err, -errno, "image %s: layer %s: %s",
				      img->ref_text, l->digest, strerror(errno));
	out = openat(c->st->tmp_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (out < 0 && (errno == EOPNOTSUPP || errno == EISDIR ||
			errno == EINVAL)) {
		char tmp[64];

		/* no O_TMPFILE here: a name, gone as soon as it is open */
		snprintf(tmp, sizeof(tmp), ".sep-%d-layer", (int)getpid());
		unlinkat(c->st->tmp_fd, tmp, 0);
		out = openat(c->st->tmp_fd, tmp, O_RDWR | O_CREAT | O_EXCL |
			     O_CLOEXEC | O_NOFOLLOW, 0600);
		if (out >= 0)
			unlinkat(c->st->tmp_fd, tmp, 0);
	}
	if (out < 0)
		return strata_err_set(err, -errno, "%s/tmp: %s",
				      strata_store_root(c->st), strerror(errno));
	r = strata_hasher_new(l->diff_id, &h);
	if (r < 0)
		return strata_err_set(err, r, "image %s: diff_id %s: "
				      "unsupported", img->ref_text, l->diff_id);
	a = archive_read_new();
	if (!a)
		return -ENOMEM;
	archive_read_support_format_raw(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	if (archive_read_open_fd(a, in, 1 << 20) != ARCHIVE_OK ||
	    archive_read_next_header(a, &e) != ARCHIVE_OK) {
		r = strata_err_set(err, -EBADMSG, "image %s: layer %s: %s",
				   img->ref_text, l->digest,
				   strata_archive_error(a));
		goto out;
	}
	*size = 0;
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, 1 << 20);

		if (n < 0) {
			r = strata_err_set(err, -EBADMSG, "image %s: layer "
					   "%s: %s", img->ref_text, l->digest,
					   strata_archive_error(a));
			goto out;
		}
		if (n == 0)
			break;
		strata_hasher_update(h, buf, (size_t)n);
		r = strata_write_all(out, buf, (size_t)n);
		if (r < 0) {
			strata_err_set(err, r, "%s/tmp: %s",
				       strata_store_root(c->st), strerror(-r));
			goto out;
		}
		*size += (uint64_t)n;
	}
	strata_hasher_final(h, got);
	if (strcmp(got, l->diff_id)) {
		r = strata_err_set(err, -EBADMSG, "image %s: layer %s "
				   "uncompresses to %s, not its diff_id %s",
				   img->ref_text, l->digest, got, l->diff_id);
		goto out;
	}
	if (lseek(out, 0, SEEK_SET) < 0) {
		r = -errno;
		goto out;
	}
	*fd_out = out;
	out = -1;
	r = 0;
out:
	archive_read_free(a);
	return r;
}

static int copy_fd(struct sep_ctx *c, struct strata_blobw *w, int fd,
		   uint64_t size)
{
	cleanup_free char *buf = malloc(1 << 20);
	uint64_t done = 0;

	if (!buf)
		return -ENOMEM;
	while (done < size) {
		ssize_t n = read(fd, buf, 1 << 20);
		int r;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		r = strata_blobw_write(w, buf, (size_t)n);
		if (r < 0)
			return r;
		done += (uint64_t)n;
		c->bytes += (uint64_t)n;
		strata_progress("saving separated images", c->bytes, 0);
	}
	return 0;
}

/* docker save's per-layer json: id and parent, and for the image's top
 * layer parts of its config; keys in Go's (sorted) order. */
static char *layer_json(const struct sep_app *a, size_t i,
			struct json_object *config)
{
	static const char *const attrs[] = {
		"architecture", "config", "container", "container_config",
		"created", "docker_version", "id", "os", "parent",
	};
	struct json_object *o = json_object_new_object();
	bool top = i + 1 == a->img->n_layers;
	char *s;

	for (size_t k = 0; k < ARRAY_SIZE(attrs); k++) {
		struct json_object *v = NULL;

		if (!strcmp(attrs[k], "id")) {
			json_object_object_add(o, "id",
					       json_object_new_string(a->ids[i]));
		} else if (!strcmp(attrs[k], "parent")) {
			if (i > 0)
				json_object_object_add(o, "parent",
					json_object_new_string(a->ids[i - 1]));
		} else if (top) {
			if (config &&
			    json_object_object_get_ex(config, attrs[k], &v))
				json_object_get(v);
			json_object_object_add(o, attrs[k], v);
		}
	}
	s = strdup(json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

static int put_layer(struct sep_ctx *c, struct strata_blobw *w,
		     const struct sep_app *a, size_t i,
		     struct json_object *config, struct strata_err *err)
{
	char name[80];
	cleanup_free char *js = layer_json(a, i, config);
	cleanup_fd int fd = -1;
	uint64_t size = 0;
	int r;

	if (!js)
		return -ENOMEM;
	r = layer_tmp(c, a->img, i, &fd, &size, err);
	if (r < 0)
		return r;
	r = strata_tar_member(w, a->ids[i], '5', 0, SEP_MTIME);
	snprintf(name, sizeof(name), "%s/VERSION", a->ids[i]);
	if (r == 0)
		r = strata_tar_file(w, name, "1.0", 3, SEP_MTIME);
	snprintf(name, sizeof(name), "%s/json", a->ids[i]);
	if (r == 0)
		r = strata_tar_file(w, name, js, strlen(js), SEP_MTIME);
	snprintf(name, sizeof(name), "%s/layer.tar", a->ids[i]);
	if (r == 0)
		r = strata_tar_member(w, name, '0', size, SEP_MTIME);
	if (r == 0)
		r = copy_fd(c, w, fd, size);
	if (r == 0)
		r = strata_tar_pad(w, size);
	if (r < 0 && !strata_err_isset(err))
		strata_err_set(err, r, "%s: layer %s: %s", a->name, a->ids[i],
			       strerror(-r));
	return r;
}

/* Hex sha256 of what @fd reads from where it is to its end. */
static int fd_sha256(int fd, char *hex)
{
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	cleanup_free char *buf = malloc(1 << 20);
	char d[STRATA_DIGEST_MAX];
	int r;

	if (!buf)
		return -ENOMEM;
	r = strata_hasher_new_alg("sha256", &h);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t n = read(fd, buf, 1 << 20);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		strata_hasher_update(h, buf, (size_t)n);
	}
	strata_hasher_final(h, d);
	snprintf(hex, 65, "%.64s", d + strlen("sha256:"));
	return 0;
}

static int file_sha256(int dfd, const char *name, char *hex)
{
	cleanup_fd int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC |
				   O_NOFOLLOW);

	return fd < 0 ? -errno : fd_sha256(fd, hex);
}

struct top_entry {
	const char *name;
	size_t layer;		/* or SIZE_MAX: a file of @data */
	const char *data;
	size_t len;
};

static int cmp_top(const void *x, const void *y)
{
	return strcmp(((const struct top_entry *)x)->name,
		      ((const struct top_entry *)y)->name);
}

/*
 * Write tarball @name of layers [@from, @to) of @a, with @files (app
 * tarball: config, manifest.json, repositories), sorted by name, then its
 * sha256 into @hash.
 */
static int write_tarball(struct sep_ctx *c, const struct sep_app *a,
			 const char *name, size_t from, size_t to,
			 struct top_entry *files, size_t n_files,
			 struct json_object *config, char *hash,
			 struct strata_err *err)
{
	cleanup_(strata_blobw_freep) struct strata_blobw *w = NULL;
	cleanup_free struct top_entry *ents = NULL;
	size_t n = 0, i;
	char *keep;
	int r;

	ents = calloc(to - from + n_files + 1, sizeof(*ents));
	keep = strdup(name);
	if (!ents || !keep) {
		free(keep);
		return -ENOMEM;
	}
	for (i = from; i < to; i++)
		ents[n++] = (struct top_entry){ a->ids[i], i, NULL, 0 };
	for (i = 0; i < n_files; i++)
		ents[n++] = files[i];
	qsort(ents, n, sizeof(*ents), cmp_top);
	r = strata_blobw_new(c->dfd, STRATA_COMP_GZIP, 0, &w);
	if (r < 0) {
		free(keep);
		return strata_err_set(err, r, "%s: %s", c->dir, strerror(-r));
	}
	for (i = 0; r == 0 && i < n; i++) {
		if (ents[i].data)
			r = strata_tar_file(w, ents[i].name, ents[i].data,
					    ents[i].len, SEP_MTIME);
		else
			r = put_layer(c, w, a, ents[i].layer, config, err);
	}
	if (r == 0)
		r = strata_tar_end(w);
	if (r == 0)
		r = strata_blobw_finish_as(w, name);
	if (r == 0) {
		c->made[c->n_made++] = keep;
		keep = NULL;
		r = file_sha256(c->dfd, name, hash);
	}
	free(keep);
	if (r < 0 && !strata_err_isset(err))
		strata_err_set(err, r, "%s/%s: %s", c->dir, name, strerror(-r));
	return r;
}

/* ---- save ---- */

static int resolve_store(struct strata_store *st, const char *name,
			 char **norm, struct strata_image **img,
			 struct strata_err *err)
{
	int r = strata_store_name(name, norm, err);

	if (r == 0)
		r = strata_image_resolve(st, *norm, NULL, img, err);
	if (r == 0)
		r = strata_image_fetch_layers(*img, err);
	return r;
}

/* Is @lower's layer list a prefix of @upper's? Else say where not. */
static int check_prefix(const struct strata_image *lower, const char *lname,
			const char *what, const struct strata_image *upper,
			const char *uname, struct strata_err *err)
{
	size_t i;

	if (lower->n_layers >= upper->n_layers)
		return strata_err_set(err, -EINVAL, "%s image %s has %zu "
				      "layers, %s only %zu: it must be a "
				      "strict prefix of %s's layers", what,
				      lname, lower->n_layers, uname,
				      upper->n_layers, uname);
	for (i = 0; i < lower->n_layers; i++)
		if (strcmp(lower->layers[i].diff_id, upper->layers[i].diff_id))
			return strata_err_set(err, -EINVAL, "%s image %s is "
					      "not a prefix of image %s: "
					      "layer %zu is %s in %s, %s in %s",
					      what, lname, uname, i + 1,
					      lower->layers[i].diff_id, lname,
					      upper->layers[i].diff_id, uname);
	return 0;
}

static int cmp_names(const void *x, const void *y)
{
	return strcmp(((const struct sep_app *)x)->name,
		      ((const struct sep_app *)y)->name);
}

static struct json_object *strv_json(char (*ids)[65], size_t from, size_t to)
{
	struct json_object *a;

	if (from >= to)
		return NULL;
	a = json_object_new_array();
	for (size_t i = from; i < to; i++)
		json_object_array_add(a, json_object_new_string(ids[i]));
	return a;
}

/* The app tarball's manifest.json and repositories. */
static void app_meta(const struct sep_app *a, const char *cfgname,
		     char **manifest, char **repos)
{
	struct json_object *arr = json_object_new_array();
	struct json_object *m = json_object_new_object();
	struct json_object *tags = json_object_new_array();
	struct json_object *rp = json_object_new_object();
	struct json_object *t = json_object_new_object();
	const char *slash = strrchr(a->name, '/');
	const char *colon = strrchr(slash ? slash : a->name, ':');
	const int fl = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;
	char path[80];
	char *nm = strndup(a->name, (size_t)(colon - a->name));
	struct json_object *layers = json_object_new_array();

	json_object_object_add(m, "Config", json_object_new_string(cfgname));
	json_object_array_add(tags, json_object_new_string(a->name));
	json_object_object_add(m, "RepoTags", tags);
	for (size_t i = 0; i < a->img->n_layers; i++) {
		snprintf(path, sizeof(path), "%s/layer.tar", a->ids[i]);
		json_object_array_add(layers, json_object_new_string(path));
	}
	json_object_object_add(m, "Layers", layers);
	json_object_array_add(arr, m);
	json_object_object_add(t, colon + 1, json_object_new_string(
		a->ids[a->img->n_layers - 1]));
	json_object_object_add(rp, nm ? nm : a->name, t);
	*manifest = strdup(json_object_to_json_string_ext(arr, fl));
	*repos = strdup(json_object_to_json_string_ext(rp, fl));
	free(nm);
	json_object_put(arr);
	json_object_put(rp);
}

static int save_app(struct sep_ctx *c, struct sep_app *apps, size_t k,
		    const struct strata_sep_save_opts *o,
		    const struct strata_image *base,
		    const struct strata_image *lib, struct strata_err *err)
{
	struct sep_app *a = &apps[k];
	size_t nb = base->n_layers, nl = lib ? lib->n_layers : nb, j;
	cleanup_free char *cfg = NULL, *man = NULL, *repos = NULL;
	char cfgname[80];
	struct json_object *config = NULL;
	size_t cfglen;
	int r;

	/* a base (lib) tarball an earlier image wrote is shared */
	for (j = 0; j < k; j++)
		if (!strcmp(apps[j].ids[0], a->ids[0]))
			break;
	if (j < k) {
		strcpy(a->base_tar, apps[j].base_tar);
		strcpy(a->base_hash, apps[j].base_hash);
	} else {
		r = tar_name(c, a->name, "_base_image.tar.gz", a->base_tar, err);
		if (r == 0)
			r = write_tarball(c, a, a->base_tar, 0, nb, NULL, 0,
					  NULL, a->base_hash, err);
		if (r < 0)
			return r;
	}
	if (lib) {
		for (j = 0; j < k; j++)
			if (!strcmp(apps[j].ids[nl - 1], a->ids[nl - 1]))
				break;
		if (j < k) {
			strcpy(a->lib_tar, apps[j].lib_tar);
			strcpy(a->lib_hash, apps[j].lib_hash);
		} else {
			r = tar_name(c, a->name, "_lib_image.tar.gz",
				     a->lib_tar, err);
			if (r == 0)
				r = write_tarball(c, a, a->lib_tar, nb, nl,
						  NULL, 0, NULL, a->lib_hash,
						  err);
			if (r < 0)
				return r;
		}
	}
	r = strata_image_read_blob(a->img, a->img->config_digest,
				   a->img->config_size, &cfg, &cfglen, err);
	if (r < 0)
		return r;
	r = strata_json_parse(cfg, cfglen, a->img->config_digest, &config,
			      err);
	if (r < 0)
		return r;
	snprintf(cfgname, sizeof(cfgname), "%s.json",
		 strchr(a->img->config_digest, ':') + 1);
	app_meta(a, cfgname, &man, &repos);
	if (!man || !repos) {
		json_object_put(config);
		return -ENOMEM;
	}
	{
		struct top_entry files[] = {
			{ cfgname, SIZE_MAX, cfg, cfglen },
			{ "manifest.json", SIZE_MAX, man, strlen(man) },
			{ "repositories", SIZE_MAX, repos, strlen(repos) },
		};

		r = tar_name(c, a->name, "_app_image.tar.gz", a->app_tar, err);
		if (r == 0)
			r = write_tarball(c, a, a->app_tar, nl,
					  a->img->n_layers, files,
					  ARRAY_SIZE(files), config,
					  a->app_hash, err);
	}
	json_object_put(config);
	(void)o;
	return r;
}

static int write_manifest(struct sep_ctx *c, struct sep_app *apps, size_t n,
			  const struct strata_sep_save_opts *o,
			  const char *base_name, const char *lib_name,
			  size_t nb, size_t nl, struct strata_err *err)
{
	struct json_object *all = json_object_new_object();
	const char *s;
	size_t len;
	int r;

	for (size_t k = 0; k < n; k++) {
		struct sep_app *a = &apps[k];
		struct json_object *t = json_object_new_object();

		json_object_object_add(t, "app",
				       json_object_new_string(a->app_tar));
		json_object_object_add(t, "appHash",
				       json_object_new_string(a->app_hash));
		json_object_object_add(t, "appLayers",
				       strv_json(a->ids, nl, a->img->n_layers));
		json_object_object_add(t, "lib",
				       json_object_new_string(a->lib_tar));
		json_object_object_add(t, "libHash",
				       json_object_new_string(a->lib_hash));
		json_object_object_add(t, "libImageName", json_object_new_string(
			lib_name ? lib_name : ""));
		json_object_object_add(t, "libLayers", strv_json(a->ids, nb, nl));
		json_object_object_add(t, "base",
				       json_object_new_string(a->base_tar));
		json_object_object_add(t, "baseHash",
				       json_object_new_string(a->base_hash));
		json_object_object_add(t, "baseImageName",
				       json_object_new_string(base_name));
		json_object_object_add(t, "baseLayer",
				       json_object_new_string(a->ids[0]));
		json_object_object_add(all, a->name, t);
	}
	s = json_object_to_json_string_length(
		all, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	r = strata_write_atomic(c->dfd, "manifest", s, len, 0644);
	if (r < 0)
		strata_err_set(err, r, "%s/manifest: %s", c->dir, strerror(-r));
	json_object_put(all);
	(void)o;
	return r;
}

int strata_save_separated(struct strata_store *st,
			  const struct strata_sep_save_opts *o,
			  struct strata_err *err)
{
	struct sep_ctx c = { .st = st, .dfd = -1, .dir = o->dir };
	struct strata_image *base = NULL, *lib = NULL;
	cleanup_free char *base_name = NULL, *lib_name = NULL;
	struct sep_app *apps = NULL;
	size_t i, n = 0;
	int r;

	if (!o->base || !o->dir || !o->n_images)
		return strata_err_set(err, -EINVAL, "a separated save needs "
				      "a base image, a directory and images");
	apps = calloc(o->n_images, sizeof(*apps));
	c.made = calloc(3 * o->n_images + 1, sizeof(*c.made));
	if (!apps || !c.made) {
		r = -ENOMEM;
		goto out;
	}
	r = o->rename ? load_renames(&c, o->rename, err) : 0;
	if (r == 0)
		r = resolve_store(st, o->base, &base_name, &base, err);
	if (r == 0 && o->lib) {
		r = resolve_store(st, o->lib, &lib_name, &lib, err);
		if (r == 0)
			r = check_prefix(base, base_name, "base", lib,
					 lib_name, err);
	}
	for (i = 0; r == 0 && i < o->n_images; i++) {
		struct sep_app *a = &apps[n];
		char **diff_ids;
		size_t k;

		r = resolve_store(st, o->images[i], &a->name, &a->img, err);
		for (k = 0; r == 0 && k < n; k++)
			if (!strcmp(apps[k].name, a->name))
				break;
		if (r == 0 && k < n) {	/* named twice */
			strata_image_free(a->img);
			free(a->name);
			memset(a, 0, sizeof(*a));
			continue;
		}
		n += a->name != NULL;
		if (r == 0)
			r = check_prefix(base, base_name, "base", a->img,
					 a->name, err);
		if (r == 0 && lib)
			r = check_prefix(lib, lib_name, "lib", a->img, a->name,
					 err);
		if (r < 0)
			break;
		a->ids = calloc(a->img->n_layers, sizeof(*a->ids));
		diff_ids = calloc(a->img->n_layers, sizeof(*diff_ids));
		if (!a->ids || !diff_ids) {
			free(diff_ids);
			r = -ENOMEM;
			break;
		}
		for (k = 0; k < a->img->n_layers; k++)
			diff_ids[k] = a->img->layers[k].diff_id;
		strata_legacy_layer_ids(diff_ids, a->img->n_layers, a->ids);
		free(diff_ids);
	}
	if (r < 0)
		goto out;
	qsort(apps, n, sizeof(*apps), cmp_names);
	r = strata_mkdirat_p(AT_FDCWD, o->dir, 0755);
	if (r == 0) {
		c.dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = c.dfd < 0 ? -errno : 0;
	}
	if (r < 0) {
		strata_err_set(err, r, "%s: %s", o->dir, strerror(-r));
		goto out;
	}
	if (faccessat(c.dfd, "manifest", F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		r = strata_err_set(err, -EEXIST, "%s already holds a "
				   "separated image (manifest): save into an "
				   "empty directory", o->dir);
		goto out;
	}
	for (i = 0; r == 0 && i < n; i++)
		r = save_app(&c, apps, i, o, base, lib, err);
	if (r == 0)
		r = write_manifest(&c, apps, n, o, base_name, lib_name,
				   base->n_layers,
				   lib ? lib->n_layers : base->n_layers, err);
	strata_progress_done();
out:
	for (i = 0; i < c.n_made; i++) {
		if (r < 0)
			unlinkat(c.dfd, c.made[i], 0);
		free(c.made[i]);
	}
	free(c.made);
	for (i = 0; i < c.n_rn; i++) {
		free(c.rn[i].name);
		free(c.rn[i].rename);
	}
	free(c.rn);
	for (i = 0; apps && i < o->n_images; i++) {
		if (apps[i].img)
			strata_image_free(apps[i].img);
		free(apps[i].name);
		free(apps[i].ids);
	}
	free(apps);
	if (base)
		strata_image_free(base);
	if (lib)
		strata_image_free(lib);
	if (c.dfd >= 0)
		close(c.dfd);
	return r;
}

/* ---- load ---- */

struct sep_lookup {
	struct strata_store *st;
	const char *app;
	const char *missing;	/* what is missing, for messages */
};

/* A blob of the store whose layer has @diff_id. */
static int lookup_layer(void *ctx, const char *diff_id, const char *member,
			char *digest, int64_t *size, struct strata_err *err)
{
	struct sep_lookup *lk = ctx;
	struct strata_tag_info *tags = NULL;
	size_t n = 0, i, k;
	int r;

	r = strata_store_list(lk->st, false, &tags, &n, err);
	for (i = 0; r == 0 && i < n; i++) {
		struct strata_image *img = NULL;
		struct strata_err e2 = { 0 };

		if (!tags[i].name ||
		    strata_image_resolve(lk->st, tags[i].name, NULL, &img,
					 &e2) < 0)
			continue;
		for (k = 0; k < img->n_layers; k++) {
			char rel[STRATA_DIGEST_MAX + 8];

			strata_blob_relpath(img->layers[k].digest, rel,
					    sizeof(rel));
			if (strcmp(img->layers[k].diff_id, diff_id) ||
			    faccessat(lk->st->blobs_fd, rel, F_OK,
				      AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			snprintf(digest, STRATA_DIGEST_MAX, "%s",
				 img->layers[k].digest);
			*size = img->layers[k].size;
			strata_image_free(img);
			strata_tags_free(tags, n);
			return 0;
		}
		strata_image_free(img);
	}
	if (tags)
		strata_tags_free(tags, n);
	if (r < 0)
		return r;
	return strata_err_set(err, -ENOENT, "image %s: layer %s (diff_id %s) "
			      "is in none of the tarballs and in no image of "
			      "the store (%s)", lk->app, member, diff_id,
			      lk->missing);
}

static int manifest_str(struct json_object *t, const char *key,
			const char **out, const char *what,
			struct strata_err *err)
{
	int r = strata_json_string(t, key, false, out, what, err);

	if (r == -ENOENT) {
		*out = "";
		return 0;
	}
	return r;
}

/* Open tarball @name of DIR (or @path instead); -ENOENT left to caller. */
static int open_tarball(int dfd, const char *dir, const char *path,
			const char *name, const char *what, char **shown,
			int *fd, struct strata_err *err)
{
	struct stat sb;
	int r;

	if (!path && !plain_name(name))
		return strata_err_set(err, -EBADMSG, "%s/manifest: %s tarball "
				      "\"%s\" is not a file name", dir, what,
				      name);
	if (path ? asprintf(shown, "%s", path) < 0
		 : asprintf(shown, "%s/%s", dir, name) < 0) {
		*shown = NULL;
		return -ENOMEM;
	}
	*fd = path ? open(path, O_RDONLY | O_CLOEXEC)
		   : openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (*fd < 0) {
		r = -errno;
		if (r == -ENOENT && !path)
			return r;
		return strata_err_set(err, r, "%s tarball %s: %s", what,
				      *shown, strerror(-r));
	}
	if (fstat(*fd, &sb) < 0 || !S_ISREG(sb.st_mode))
		return strata_err_set(err, -EINVAL, "%s tarball %s: not a "
				      "regular file", what, *shown);
	return 0;
}

static int check_hash(int fd, const char *shown, const char *want,
		      const char *what, const char *app,
		      struct strata_err *err)
{
	char got[65];
	int r;

	r = fd_sha256(fd, got);
	if (r < 0)
		return strata_err_set(err, r, "%s: %s", shown, strerror(-r));
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	if (strcmp(got, want))
		return strata_err_set(err, -EBADMSG, "%s (the %s tarball of %s): "
				      "sha256 %s, but the manifest says %s: "
				      "refusing to load it", shown, what, app,
				      got, *want ? want : "(none)");
	return 0;
}

int strata_load_separated(struct strata_store *st,
			  const struct strata_sep_load_opts *o,
			  struct strata_image **img, char **name,
			  struct strata_err *err)
{
	struct json_object *man = NULL, *t = NULL;
	cleanup_free char *buf = NULL, *want = NULL;
	cleanup_fd int dfd = -1;
	const char *key = NULL, *tars[3], *hashes[3];
	static const char *const what[3] = { "base", "lib", "app" };
	const char *paths[3] = { o->base, o->lib, NULL };
	char *shown[3] = { 0 };
	int fds[3] = { -1, -1, -1 };
	const char *pnames[3];
	int pfds[3];
	size_t len, n = 0, i;
	struct sep_lookup lk = { st, NULL, NULL };
	struct strata_layer_lookup lookup = { lookup_layer, &lk };
	char mpath[600], missing[1200] = "";
	int r;

	if (o->base && o->lib && !strcmp(o->base, o->lib))
		return strata_err_set(err, -EINVAL, "the base and lib "
				      "tarballs are the same file");
	r = strata_store_name(o->app, &want, err);
	if (r < 0)
		return r;
	dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return strata_err_set(err, -errno, "%s: %s", o->dir,
				      strerror(errno));
	snprintf(mpath, sizeof(mpath), "%s/manifest", o->dir);
	r = strata_read_file(dfd, "manifest", STRATA_JSON_MAX, &buf, &len);
	if (r < 0)
		return strata_err_set(err, r, "%s: %s", mpath, strerror(-r));
	r = strata_json_parse(buf, len, mpath, &man, err);
	if (r < 0)
		return r;
	if (!json_object_is_type(man, json_type_object)) {
		r = strata_err_set(err, -EBADMSG, "%s: not a JSON object",
				   mpath);
		goto out;
	}
	json_object_object_foreach(man, k, v) {
		if (!key && (!strcmp(k, o->app) || !strcmp(k, want) ||
			     strata_repotag_matches(k, want))) {
			key = k;
			t = v;
		}
	}
	if (!key) {
		char names[400] = "";
		size_t off = 0;

		json_object_object_foreach(man, k2, v2) {
			(void)v2;
			if (off < sizeof(names))
				off += (size_t)snprintf(names + off,
					sizeof(names) - off, "%s%s",
					off ? ", " : "", k2);
		}
		r = strata_err_set(err, -ENOENT, "%s: no image %s (it lists: "
				   "%s)", mpath, o->app, off ? names : "none");
		goto out;
	}
	if ((r = manifest_str(t, "base", &tars[0], mpath, err)) < 0 ||
	    (r = manifest_str(t, "baseHash", &hashes[0], mpath, err)) < 0 ||
	    (r = manifest_str(t, "lib", &tars[1], mpath, err)) < 0 ||
	    (r = manifest_str(t, "libHash", &hashes[1], mpath, err)) < 0 ||
	    (r = manifest_str(t, "app", &tars[2], mpath, err)) < 0 ||
	    (r = manifest_str(t, "appHash", &hashes[2], mpath, err)) < 0)
		goto out;
	if (!*tars[2] || !*tars[0]) {
		r = strata_err_set(err, -EBADMSG, "%s: image %s has no %s "
				   "tarball", mpath, key,
				   *tars[2] ? "base" : "app");
		goto out;
	}
	lk.app = key;
	for (i = 0; i < 3; i++)
		if (!paths[i] && *tars[i] && !plain_name(tars[i])) {
			r = strata_err_set(err, -EBADMSG, "%s: %s tarball "
					   "\"%s\" of %s is not a file name",
					   mpath, what[i], tars[i], key);
			goto out;
		}
	for (i = 0; i < 3; i++) {
		if (!paths[i] && !*tars[i])
			continue;	/* no lib */
		r = open_tarball(dfd, o->dir, paths[i], tars[i], what[i],
				 &shown[i], &fds[i], err);
		if (r == -ENOENT && i < 2) {
			/* not shipped: its layers come from the store */
			snprintf(missing + strlen(missing),
				 sizeof(missing) - strlen(missing), "%s%s is "
				 "missing", *missing ? ", " : "", shown[i]);
			lk.missing = missing;
			r = 0;
			continue;
		}
		if (r == -ENOENT)
			r = strata_err_set(err, r, "app tarball %s: %s",
					   shown[i], strerror(-r));
		if (r < 0)
			goto out;
		if (!o->no_check) {
			r = check_hash(fds[i], shown[i], hashes[i], what[i], key,
				       err);
			if (r < 0)
				goto out;
		}
	}
	for (i = 0; i < 3; i++)
		if (fds[i] >= 0) {
			pnames[n] = shown[i];
			pfds[n++] = fds[i];
		}
	r = strata_archive_resolve_parts(st, pnames, pfds, n, o->dir, key,
					 NULL, lk.missing ? &lookup : NULL,
					 img, err);
	if (r == 0) {
		*name = strdup(key);
		if (!*name) {
			strata_image_free(*img);
			*img = NULL;
			r = -ENOMEM;
		}
	}
out:
	for (i = 0; i < 3; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		free(shown[i]);
	}
	json_object_put(man);
	return r;
}
