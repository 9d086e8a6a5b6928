/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oci-archive and docker-archive sources. The archive is read once,
 * sequentially: blobs and layer tars stream into the store's
 * content-addressed blob directory (so a name inside the archive never
 * becomes a host path), small JSON members stay in memory, and member
 * symlinks (docker save writes layer.tar -> ../other/layer.tar) are
 * resolved inside the archive with a hop limit. A docker-archive's
 * manifest.json is turned into an OCI manifest; its layers are verified
 * against the config's diff_ids like any other.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store-internal.h"

const char *strata_archive_error(struct archive *a)
{
	const char *m = archive_error_string(a);

	if (m && *m)
		return m;
	if (archive_errno(a) > 0)
		return strerror(archive_errno(a));
	return "malformed tar";
}

struct member {
	char *name;
	char *link;		/* symlink target (resolved) or hardlink */
	char *data;		/* small JSON member held in memory */
	size_t len;
	char digest[STRATA_DIGEST_MAX];	/* blob member */
	int64_t size;
};

struct members {
	struct member *v;
	size_t n, cap;
};

static void members_free(struct members *m)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		free(m->v[i].name);
		free(m->v[i].link);
		free(m->v[i].data);
	}
	free(m->v);
}

/* Normalise an archive member name: drop "./", "//", resolve "..",
 * clamped at the archive root. */
static char *norm_name(const char *dir, const char *name)
{
	char *buf, *out, *save = NULL, *tok;
	size_t cap;

	if (asprintf(&buf, "%s/%s", name[0] == '/' ? "" : dir, name) < 0)
		return NULL;
	cap = strlen(buf) + 1;
	out = calloc(1, cap);
	if (!out) {
		free(buf);
		return NULL;
	}
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (!strcmp(tok, "."))
			continue;
		if (!strcmp(tok, "..")) {
			char *s = strrchr(out, '/');

			if (s)
				*s = '\0';
			else
				out[0] = '\0';
			continue;
		}
		if (out[0])
			strcat(out, "/");
		strcat(out, tok);
	}
	free(buf);
	return out;
}

static struct member *find(struct members *m, const char *name)
{
	size_t i;

	for (i = m->n; i-- > 0;)
		if (!strcmp(m->v[i].name, name))
			return &m->v[i];
	return NULL;
}

static struct member *resolve(struct members *m, const char *name)
{
	char *cur = strdup(name);
	int hops;

	for (hops = 0; cur && hops < 40; hops++) {
		struct member *x = find(m, cur);

		free(cur);
		if (!x)
			return NULL;
		if (!x->link)
			return x;
		cur = strdup(x->link);
	}
	free(cur);
	return NULL;
}

static struct member *add(struct members *m, const char *name)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 32;
		struct member *v = realloc(m->v, cap * sizeof(*v));

		if (!v)
			return NULL;
		m->v = v;
		m->cap = cap;
	}
	memset(&m->v[m->n], 0, sizeof(m->v[0]));
	m->v[m->n].name = norm_name("", name);
	if (!m->v[m->n].name)
		return NULL;
	return &m->v[m->n++];
}

static bool keep_in_memory(const char *name, int64_t size)
{
	size_t n = strlen(name);

	if (size > STRATA_JSON_MAX)
		return false;
	if (!strncmp(name, "blobs/", 6))
		return false;
	return !strcmp(name, "oci-layout") || !strcmp(name, "index.json") ||
	       !strcmp(name, "manifest.json") || !strcmp(name, "repositories") ||
	       (n >= 5 && !strcmp(name + n - 5, ".json")) ||
	       (n >= 5 && !strcmp(name + n - 5, "/json"));
}

static int stream_blob(struct archive *a, int blobs_fd, struct member *mb,
		       const char *archive_path, struct strata_err *err)
{
	char tmp[64], rel[STRATA_DIGEST_MAX + 8];
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	cleanup_free char *buf = malloc(1 << 20);
	cleanup_fd int fd = -1;
	int r;

	if (!buf)
		return -ENOMEM;
	r = strata_hasher_new_alg(strncmp(mb->name, "blobs/sha512/", 13)
					  ? "sha256" : "sha512", &h);
	if (r < 0)
		return r;
	snprintf(tmp, sizeof(tmp), ".tmp-archive-%d", (int)getpid());
	fd = openat(blobs_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	mb->size = 0;
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, 1 << 20);

		if (n < 0) {
			r = strata_err_set(err, -EBADMSG, "%s: member %s: %s",
					   archive_path, mb->name,
					   strata_archive_error(a));
			goto fail;
		}
		if (n == 0)
			break;
		strata_hasher_update(h, buf, (size_t)n);
		r = strata_write_all(fd, buf, (size_t)n);
		if (r < 0)
			goto fail;
		mb->size += n;
		strata_progress("reading archive", (uint64_t)mb->size, 0);
	}
	strata_hasher_final(h, mb->digest);
	strata_blob_relpath(mb->digest, rel, sizeof(rel));
	if (faccessat(blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		unlinkat(blobs_fd, tmp, 0);
		return 0;
	}
	if (fsync(fd) < 0 || renameat(blobs_fd, tmp, blobs_fd, rel) < 0) {
		r = -errno;
		goto fail;
	}
	return 0;
fail:
	unlinkat(blobs_fd, tmp, 0);
	return r;
}

/* Read the archive @path (through @fd when >= 0, from its start). */
static int read_archive_fd(const char *path, int fd, int blobs_fd,
			   struct members *m, struct strata_err *err)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int r = 0, ar;

	if (!a)
		return -ENOMEM;
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	if ((fd >= 0 ? archive_read_open_fd(a, fd, 1 << 20)
		     : archive_read_open_filename(a, path, 1 << 20)) != ARCHIVE_OK) {
		r = strata_err_set(err, -ENOENT, "%s: %s", path,
				   strata_archive_error(a));
		goto out;
	}
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK ||
	       ar == ARCHIVE_WARN) {
		const char *name = archive_entry_pathname(e);
		const char *hl = archive_entry_hardlink(e);
		struct member *mb;

		if (!name)
			continue;
		if (hl) {
			mb = add(m, name);
			if (!mb || !(mb->link = norm_name("", hl))) {
				r = -ENOMEM;
				goto out;
			}
			continue;
		}
		switch (archive_entry_filetype(e)) {
		case AE_IFLNK: {
			cleanup_free char *dir = NULL;
			char *slash;

			mb = add(m, name);
			if (!mb || !(dir = strdup(mb->name))) {
				r = -ENOMEM;
				goto out;
			}
			slash = strrchr(dir, '/');
			if (slash)
				*slash = '\0';
			else
				dir[0] = '\0';
			mb->link = norm_name(dir, archive_entry_symlink(e) ?: "");
			if (!mb->link) {
				r = -ENOMEM;
				goto out;
			}
			break;
		}
		case AE_IFREG:
			mb = add(m, name);
			if (!mb) {
				r = -ENOMEM;
				goto out;
			}
			if (keep_in_memory(mb->name, archive_entry_size(e))) {
				size_t cap = (size_t)archive_entry_size(e);
				la_ssize_t n;

				mb->data = malloc(cap + 1);
				if (!mb->data) {
					r = -ENOMEM;
					goto out;
				}
				n = archive_read_data(a, mb->data, cap);
				if (n < 0 || (size_t)n != cap) {
					r = strata_err_set(err, -EBADMSG,
						"%s: member %s: truncated",
						path, mb->name);
					goto out;
				}
				mb->len = cap;
				mb->data[cap] = '\0';
			} else {
				r = stream_blob(a, blobs_fd, mb, path, err);
				if (r < 0)
					goto out;
			}
			break;
		default:
			break;
		}
	}
	if (ar != ARCHIVE_EOF)
		r = strata_err_set(err, -EBADMSG, "%s: %s", path,
				   strata_archive_error(a));
	strata_progress_done();
out:
	archive_read_free(a);
	return r;
}

static int read_archive(const char *path, int blobs_fd, struct members *m,
			struct strata_err *err)
{
	return read_archive_fd(path, -1, blobs_fd, m, err);
}

static int member_json(struct members *m, const char *name, const char *path,
		       struct json_object **out, struct strata_err *err)
{
	struct member *x = resolve(m, name);
	char what[512];

	snprintf(what, sizeof(what), "%s: %s", path, name);
	if (!x || !x->data)
		return strata_err_set(err, -ENOENT, "%s: missing from the "
				      "archive", what);
	return strata_json_parse(x->data, x->len, what, out, err);
}

bool strata_repotag_matches(const char *have, const char *want)
{
	static const char *prefixes[] = { "docker.io/library/", "docker.io/",
					  "localhost/", "" };
	size_t i, j;

	for (i = 0; i < ARRAY_SIZE(prefixes); i++) {
		size_t a = strlen(prefixes[i]);

		if (strncmp(have, prefixes[i], a))
			continue;
		for (j = 0; j < ARRAY_SIZE(prefixes); j++) {
			size_t b = strlen(prefixes[j]);

			if (!strncmp(want, prefixes[j], b) &&
			    !strcmp(have + a, want + b))
				return true;
		}
	}
	return false;
}

static int sniff_media_type(int blobs_fd, const char *digest, const char **mt)
{
	char rel[STRATA_DIGEST_MAX + 8];
	unsigned char magic[4] = { 0 };
	cleanup_fd int fd = -1;

	strata_blob_relpath(digest, rel, sizeof(rel));
	fd = openat(blobs_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (read(fd, magic, sizeof(magic)) < 0)
		return -errno;
	if (magic[0] == 0x1f && magic[1] == 0x8b)
		*mt = "application/vnd.oci.image.layer.v1.tar+gzip";
	else if (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f &&
		 magic[3] == 0xfd)
		*mt = "application/vnd.oci.image.layer.v1.tar+zstd";
	else
		*mt = "application/vnd.oci.image.layer.v1.tar";
	return 0;
}

static struct json_object *desc_new(const char *mt, const char *digest,
				    int64_t size)
{
	struct json_object *d = json_object_new_object();

	json_object_object_add(d, "mediaType", json_object_new_string(mt));
	json_object_object_add(d, "digest", json_object_new_string(digest));
	json_object_object_add(d, "size", json_object_new_int64(size));
	return d;
}

/* The i-th diff_id of the config held in member @cfg, into @out. */
static int config_diff_id(struct member *cfg, size_t i, const char *what,
			  char *out, struct strata_err *err)
{
	struct json_object *c = NULL, *rootfs, *ids;
	const char *d;
	int r;

	if (!cfg->data)
		return strata_err_set(err, -ENOENT, "%s: config not readable",
				      what);
	r = strata_json_parse(cfg->data, cfg->len, what, &c, err);
	if (r == 0)
		r = strata_json_object(c, "rootfs", true, &rootfs, what, err);
	if (r == 0)
		r = strata_json_array(rootfs, "diff_ids", true, &ids, what, err);
	if (r == 0 && i >= json_object_array_length(ids))
		r = strata_err_set(err, -EBADMSG, "%s: the config has %zu "
				   "diff_ids, fewer than the layers", what,
				   json_object_array_length(ids));
	if (r == 0) {
		d = json_object_get_string(json_object_array_get_idx(ids, i));
		if (!d || strata_digest_validate(d, strlen(d)) < 0)
			r = strata_err_set(err, -EBADMSG, "%s: diff_id %zu "
					   "invalid", what, i);
		else
			snprintf(out, STRATA_DIGEST_MAX, "%s", d);
	}
	if (c)
		json_object_put(c);
	return r;
}

/*
 * Build the OCI manifest of manifest.json entry @entry (its config and
 * layers members of @m), store it and fill @img. A layer missing from @m
 * is asked of @lookup (by diff_id) when given.
 */
static int docker_entry(struct strata_store *st, struct members *m,
			struct json_object *entry, const char *what,
			const char *ref_text,
			const struct strata_platform *plat,
			const struct strata_layer_lookup *lookup,
			struct strata_image *img, struct strata_err *err)
{
	struct json_object *layers, *man, *mlayers, *desc = NULL;
	const char *cfgname;
	char cfgdigest[STRATA_DIGEST_MAX], mdigest[STRATA_DIGEST_MAX];
	struct member *cfg;
	size_t i;
	int r;

	if ((r = strata_json_string(entry, "Config", true, &cfgname, what, err)) < 0 ||
	    (r = strata_json_array(entry, "Layers", true, &layers, what, err)) < 0)
		return r;
	cfg = resolve(m, cfgname);
	if (!cfg || (!cfg->data && !cfg->digest[0]))
		return strata_err_set(err, -ENOENT, "%s: config %s not in the "
				      "archive", what, cfgname);
	if (cfg->data) {
		r = strata_blob_put(st->blobs_fd, cfg->data, cfg->len, cfgdigest);
		if (r < 0)
			return r;
		cfg->size = (int64_t)cfg->len;
	} else {
		strcpy(cfgdigest, cfg->digest);
	}
	man = json_object_new_object();
	json_object_object_add(man, "schemaVersion", json_object_new_int(2));
	json_object_object_add(man, "mediaType", json_object_new_string(
		"application/vnd.oci.image.manifest.v1+json"));
	json_object_object_add(man, "config", desc_new(
		"application/vnd.oci.image.config.v1+json", cfgdigest, cfg->size));
	mlayers = json_object_new_array();
	json_object_object_add(man, "layers", mlayers);
	for (i = 0; i < json_object_array_length(layers); i++) {
		const char *lname = json_object_get_string(
			json_object_array_get_idx(layers, i));
		struct member *l = lname ? resolve(m, lname) : NULL;
		struct member found = { 0 };
		const char *mt = NULL;

		if ((!l || !l->digest[0]) && lookup && lname) {
			char diff_id[STRATA_DIGEST_MAX];

			r = config_diff_id(cfg, i, what, diff_id, err);
			if (r == 0)
				r = lookup->fn(lookup->ctx, diff_id, lname,
					       found.digest, &found.size, err);
			if (r < 0) {
				json_object_put(man);
				return r;
			}
			l = &found;
		}
		if (!l || !l->digest[0]) {
			json_object_put(man);
			return strata_err_set(err, -ENOENT,
					      "%s: layer %s not in the archive",
					      what, lname ? lname : "(null)");
		}
		r = sniff_media_type(st->blobs_fd, l->digest, &mt);
		if (r < 0) {
			json_object_put(man);
			return r;
		}
		json_object_array_add(mlayers, desc_new(mt, l->digest, l->size));
	}
	{
		size_t len;
		const char *s = json_object_to_json_string_length(
			man, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
			&len);

		r = strata_blob_put(st->blobs_fd, s, len, mdigest);
		if (r == 0)
			desc = desc_new("application/vnd.oci.image.manifest.v1+json",
					mdigest, (int64_t)len);
	}
	json_object_put(man);
	if (r < 0)
		return r;
	r = strata_image_from_desc(img, img->blobs_fd, desc, plat, err);
	if (r < 0)
		strata_err_wrap(err, r, "image %s", ref_text);
	json_object_put(desc);
	return r;
}

static int docker_manifest(struct strata_store *st, struct members *m,
			   const struct strata_ref *ref,
			   const struct strata_platform *plat,
			   const struct strata_layer_lookup *lookup,
			   struct strata_image *img, struct strata_err *err)
{
	struct json_object *mj = NULL, *entry = NULL;
	char what[512];
	char tags[400];
	size_t i, n, o = 0;
	int r;

	r = member_json(m, "manifest.json", ref->path, &mj, err);
	if (r < 0)
		return r;
	snprintf(what, sizeof(what), "%s: manifest.json", ref->path);
	if (!json_object_is_type(mj, json_type_array)) {
		r = strata_err_set(err, -EBADMSG, "%s: not a JSON array", what);
		goto out;
	}
	n = json_object_array_length(mj);
	tags[0] = '\0';
	for (i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(mj, i), *rt;
		size_t k;

		if (strata_json_array(e, "RepoTags", false, &rt, what, NULL) < 0)
			continue;
		for (k = 0; k < json_object_array_length(rt); k++) {
			const char *t = json_object_get_string(
				json_object_array_get_idx(rt, k));

			if (!t)
				continue;
			if (o < sizeof(tags))
				o += (size_t)snprintf(tags + o, sizeof(tags) - o,
						      "%s%s", o ? ", " : "", t);
			if (ref->tag && !entry && strata_repotag_matches(t, ref->tag))
				entry = e;
		}
	}
	if (!ref->tag && n == 1)
		entry = json_object_array_get_idx(mj, 0);
	if (!entry) {
		r = strata_err_set(err, -ENOENT, "%s: %s (tags: %s)", ref->path,
				   ref->tag ? "no image with that tag"
					    : "several images, name one with :NAME:TAG",
				   o ? tags : "none");
		if (ref->tag)
			snprintf(err->msg, sizeof(err->msg),
				 "%s: no image tagged \"%s\" (tags: %s)",
				 ref->path, ref->tag, o ? tags : "none");
		goto out;
	}
	r = docker_entry(st, m, entry, what, ref->text, plat, lookup, img, err);
out:
	json_object_put(mj);
	return r;
}

int strata_blob_put(int blobs_fd, const void *buf, size_t len,
		    char *digest_out)
{
	char digest[STRATA_DIGEST_MAX], rel[STRATA_DIGEST_MAX + 8];

	strata_sha256(buf, len, digest);
	if (digest_out)
		strcpy(digest_out, digest);
	strata_blob_relpath(digest, rel, sizeof(rel));
	if (faccessat(blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	return strata_write_atomic(blobs_fd, rel, buf, len, 0644);
}

int strata_archive_resolve(struct strata_store *st, const struct strata_ref *ref,
			   const struct strata_platform *plat,
			   struct strata_image *img, struct strata_err *err)
{
	struct members m = { 0 };
	struct json_object *idx = NULL, *desc;
	bool has_oci;
	int r;

	r = read_archive(ref->path, st->blobs_fd, &m, err);
	if (r < 0)
		goto out;
	has_oci = find(&m, "index.json") && find(&m, "oci-layout");
	if (ref->kind == STRATA_REF_DOCKER_ARCHIVE && find(&m, "manifest.json")) {
		r = docker_manifest(st, &m, ref, plat, NULL, img, err);
		goto out;
	}
	if (!has_oci) {
		r = strata_err_set(err, -EBADMSG, "%s: not an %s (no %s)",
				   ref->path,
				   ref->kind == STRATA_REF_DOCKER_ARCHIVE
					   ? "docker-archive" : "oci-archive",
				   ref->kind == STRATA_REF_DOCKER_ARCHIVE
					   ? "manifest.json" : "index.json and oci-layout");
		goto out;
	}
	r = member_json(&m, "index.json", ref->path, &idx, err);
	if (r < 0)
		goto out;
	r = strata_index_pick(idx, ref->tag, NULL, ref->path, &desc, err);
	if (r == 0)
		r = strata_image_from_desc(img, img->blobs_fd, desc, plat, err);
	if (r < 0)
		strata_err_wrap(err, r, "image %s", ref->text);
	json_object_put(idx);
out:
	members_free(&m);
	return r;
}

/* A new image read from archive @where into the store's blobs. */
static struct strata_image *archive_image(struct strata_store *st,
					  const char *where, const char *text)
{
	struct strata_image *img = calloc(1, sizeof(*img));

	if (!img)
		return NULL;
	img->blobs_fd = fcntl(st->blobs_fd, F_DUPFD_CLOEXEC, 3);
	img->ref_text = strdup(text);
	img->blobs_desc = strdup(where);
	if (img->blobs_fd < 0 || !img->ref_text || !img->blobs_desc) {
		strata_image_free(img);
		return NULL;
	}
	return img;
}

int strata_archive_resolve_parts(struct strata_store *st,
				 const char *const *paths, const int *fds,
				 size_t n,
				 const char *where, const char *tag,
				 const struct strata_platform *plat,
				 const struct strata_layer_lookup *lookup,
				 struct strata_image **out,
				 struct strata_err *err)
{
	struct strata_ref ref = {
		.kind = STRATA_REF_DOCKER_ARCHIVE,
		.path = (char *)where,
		.tag = (char *)tag,
		.text = (char *)tag,
	};
	struct members m = { 0 };
	struct strata_image *img = NULL;
	size_t i;
	int r;

	r = strata_store_hold(st, err);
	for (i = 0; r == 0 && i < n; i++)
		r = read_archive_fd(paths[i], fds[i], st->blobs_fd, &m, err);
	if (r == 0 && !find(&m, "manifest.json"))
		r = strata_err_set(err, -EBADMSG, "%s: no manifest.json in %s",
				   where, n ? paths[n - 1] : "(none)");
	if (r == 0 && !(img = archive_image(st, where, tag)))
		r = -ENOMEM;
	if (r == 0)
		r = docker_manifest(st, &m, &ref, plat, lookup, img, err);
	members_free(&m);
	if (r < 0) {
		if (img)
			strata_image_free(img);
		return r;
	}
	*out = img;
	return 0;
}

/* Tags of manifest.json entry @e (borrowed strings), into @v. */
static size_t entry_tags(struct json_object *e, const char **v, size_t cap)
{
	struct json_object *rt;
	size_t k, n = 0;

	if (strata_json_array(e, "RepoTags", false, &rt, "", NULL) < 0)
		return 0;
	for (k = 0; k < json_object_array_length(rt) && n < cap; k++) {
		const char *t = json_object_get_string(
			json_object_array_get_idx(rt, k));

		if (t && *t)
			v[n++] = t;
	}
	return n;
}

static int each_docker(struct strata_store *st, struct members *m,
		       const char *path, const struct strata_platform *plat,
		       strata_archive_each_fn cb, void *ctx,
		       struct strata_err *err)
{
	struct json_object *mj = NULL;
	char what[512];
	size_t i;
	int r;

	r = member_json(m, "manifest.json", path, &mj, err);
	if (r < 0)
		return r;
	snprintf(what, sizeof(what), "%s: manifest.json", path);
	if (!json_object_is_type(mj, json_type_array))
		r = strata_err_set(err, -EBADMSG, "%s: not a JSON array", what);
	for (i = 0; r == 0 && i < json_object_array_length(mj); i++) {
		struct json_object *e = json_object_array_get_idx(mj, i);
		const char *tags[64];
		size_t nt = entry_tags(e, tags, ARRAY_SIZE(tags));
		char text[600];
		struct strata_image *img;

		snprintf(text, sizeof(text), "docker-archive:%s:%s", path,
			 nt ? tags[0] : "(untagged)");
		img = archive_image(st, path, text);
		if (!img) {
			r = -ENOMEM;
			break;
		}
		r = docker_entry(st, m, e, what, text, plat, NULL, img, err);
		if (r == 0)
			r = cb(ctx, img, tags, nt, err);
		strata_image_free(img);
	}
	json_object_put(mj);
	return r;
}

static int each_oci(struct strata_store *st, struct members *m,
		    const char *path, const struct strata_platform *plat,
		    strata_archive_each_fn cb, void *ctx,
		    struct strata_err *err)
{
	struct json_object *idx = NULL, *ms;
	char what[512];
	size_t i, j, n;
	int r;

	r = member_json(m, "index.json", path, &idx, err);
	if (r < 0)
		return r;
	snprintf(what, sizeof(what), "%s: index.json", path);
	r = strata_json_array(idx, "manifests", true, &ms, what, err);
	n = r == 0 ? json_object_array_length(ms) : 0;
	for (i = 0; r == 0 && i < n; i++) {
		struct json_object *d = json_object_array_get_idx(ms, i);
		struct strata_desc di, dj;
		const char *tags[64];
		size_t nt = 0;
		bool dup = false;
		char text[600];
		struct strata_image *img;

		r = strata_desc_parse(d, &di, what, err);
		/* one image per digest, with all its names */
		for (j = 0; r == 0 && j < n && !dup; j++) {
			const char *name;

			if (strata_desc_parse(json_object_array_get_idx(ms, j),
					      &dj, what, NULL) < 0 ||
			    strcmp(dj.digest, di.digest))
				continue;
			if (j < i) {
				dup = true;
				break;
			}
			name = strata_desc_ref_name(
				json_object_array_get_idx(ms, j));
			if (name && nt < ARRAY_SIZE(tags))
				tags[nt++] = name;
		}
		if (r < 0 || dup)
			continue;
		snprintf(text, sizeof(text), "oci-archive:%s:%s", path,
			 nt ? tags[0] : di.digest);
		img = archive_image(st, path, text);
		if (!img) {
			r = -ENOMEM;
			break;
		}
		r = strata_image_from_desc(img, img->blobs_fd, d, plat, err);
		if (r < 0)
			strata_err_wrap(err, r, "image %s", text);
		if (r == 0)
			r = cb(ctx, img, tags, nt, err);
		strata_image_free(img);
	}
	json_object_put(idx);
	return r;
}

int strata_archive_load_each(struct strata_store *st, const char *refstr,
			     const struct strata_platform *plat,
			     strata_archive_each_fn cb, void *ctx,
			     struct strata_err *err)
{
	cleanup_(strata_ref_freep) struct strata_ref *ref = NULL;
	struct members m = { 0 };
	int r;

	r = strata_ref_parse(refstr, &ref, err);
	if (r < 0)
		return r;
	if ((ref->kind != STRATA_REF_DOCKER_ARCHIVE &&
	     ref->kind != STRATA_REF_OCI_ARCHIVE) || ref->tag || ref->digest)
		return strata_err_set(err, -EINVAL, "%s: not an archive "
				      "(docker-archive:FILE or "
				      "oci-archive:FILE, with no tag)", refstr);
	r = strata_store_hold(st, err);
	if (r == 0)
		r = read_archive(ref->path, st->blobs_fd, &m, err);
	if (r < 0)
		goto out;
	if (find(&m, "manifest.json") &&
	    (ref->kind == STRATA_REF_DOCKER_ARCHIVE || !find(&m, "index.json")))
		r = each_docker(st, &m, ref->path, plat, cb, ctx, err);
	else if (find(&m, "index.json") && find(&m, "oci-layout"))
		r = each_oci(st, &m, ref->path, plat, cb, ctx, err);
	else
		r = strata_err_set(err, -EBADMSG, "%s: neither a docker-archive "
				   "(manifest.json) nor an oci-archive "
				   "(index.json and oci-layout)", ref->path);
out:
	members_free(&m);
	return r;
}
