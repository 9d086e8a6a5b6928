/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading OCI image layouts (image-layout.md): descriptors, blobs verified
 * against digest and size, index -> platform -> manifest -> config.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"

bool strata_media_is_manifest(const char *mt)
{
	return !strcmp(mt, MT_OCI_MANIFEST) || !strcmp(mt, MT_DOCKER_MANIFEST);
}

bool strata_media_is_index(const char *mt)
{
	return !strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST);
}

bool strata_media_is_schema1(const char *mt)
{
	return !strcmp(mt, "application/vnd.docker.distribution.manifest.v1+json") ||
	       !strcmp(mt, "application/vnd.docker.distribution.manifest.v1+prettyjws");
}

int strata_media_layer_compression(const char *mt)
{
	static const struct {
		const char *mt;
		int comp;
	} map[] = {
		{ "application/vnd.oci.image.layer.v1.tar", STRATA_COMP_NONE },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", STRATA_COMP_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", STRATA_COMP_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar", STRATA_COMP_NONE },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", STRATA_COMP_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", STRATA_COMP_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", STRATA_COMP_GZIP },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", STRATA_COMP_GZIP },
		{ "application/vnd.docker.image.rootfs.diff.tar.zstd", STRATA_COMP_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar", STRATA_COMP_SNIFF },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar", STRATA_COMP_SNIFF },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(map); i++)
		if (!strcmp(mt, map[i].mt))
			return map[i].comp;
	return -EOPNOTSUPP;
}

void strata_blob_relpath(const char *digest, char *out, size_t len)
{
	const char *colon = strchr(digest, ':');

	snprintf(out, len, "%.*s/%s", (int)(colon - digest), digest, colon + 1);
}

int strata_blob_read(int blobs_fd, const char *digest, int64_t size,
		     size_t max, char **out, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8], got[STRATA_DIGEST_MAX], sd[32];
	cleanup_fd int fd = -1;
	cleanup_free char *buf = NULL;
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	struct stat stbuf;
	size_t len;
	int r;

	strata_short_digest(digest, sd, sizeof(sd));
	if (size < 0 || (uint64_t)size > max)
		return strata_err_set(err, -EFBIG,
				      "blob %s: size %lld is larger than the "
				      "%zu bytes allowed for this document",
				      sd, (long long)size, max);
	strata_blob_relpath(digest, rel, sizeof(rel));
	fd = openat(blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return strata_err_set(err, -errno == -ELOOP ? -EBADMSG : -errno,
				      "blob %s: %s", digest,
				      errno == ENOENT ? "missing from the layout"
						      : strerror(errno));
	if (fstat(fd, &stbuf) < 0)
		return -errno;
	if (!S_ISREG(stbuf.st_mode))
		return strata_err_set(err, -EBADMSG,
				      "blob %s: not a regular file", digest);
	r = strata_read_fd(fd, (size_t)size, &buf, &len);
	if (r == -EFBIG || (r == 0 && len != (size_t)size))
		return strata_err_set(err, -EBADMSG,
				      "blob %s: size mismatch: descriptor says "
				      "%lld bytes, blob has %s%lld", digest,
				      (long long)size, r == -EFBIG ? "more than " : "",
				      (long long)(r == -EFBIG ? size : (int64_t)len));
	if (r < 0)
		return strata_err_set(err, r, "blob %s: %s", digest,
				      strerror(-r));
	r = strata_hasher_new(digest, &h);
	if (r < 0)
		return strata_err_set(err, r,
				      "blob %s: cannot verify this digest "
				      "algorithm", digest);
	strata_hasher_update(h, buf, len);
	strata_hasher_final(h, got);
	if (strcmp(got, digest))
		return strata_err_set(err, -EBADMSG,
				      "blob %s: digest mismatch: content hashes "
				      "to %s", digest, got);
	*out = take_ptr(&buf);
	return 0;
}

int strata_desc_parse(struct json_object *obj, struct strata_desc *d,
		      const char *what, struct strata_err *err)
{
	int r;

	memset(d, 0, sizeof(*d));
	if (!obj || !json_object_is_type(obj, json_type_object))
		return strata_err_set(err, -EBADMSG,
				      "%s: descriptor is not an object", what);
	r = strata_json_string(obj, "mediaType", true, &d->media_type, what, err);
	if (r < 0)
		return r;
	r = strata_json_string(obj, "digest", true, &d->digest, what, err);
	if (r < 0)
		return r;
	r = strata_digest_validate(d->digest, strlen(d->digest));
	if (r == -EINVAL)
		return strata_err_set(err, -EBADMSG,
				      "%s: invalid digest \"%s\"", what,
				      d->digest);
	r = strata_json_int64(obj, "size", true, 0, INT64_MAX - 1, &d->size,
			      what, err);
	if (r < 0)
		return r;
	r = strata_json_object(obj, "annotations", false, &d->annotations,
			       what, err);
	if (r < 0 && r != -ENOENT)
		return r;
	r = strata_json_object(obj, "platform", false, &d->platform, what, err);
	if (r < 0 && r != -ENOENT)
		return r;
	return 0;
}

static const char *annotation(struct strata_desc *d, const char *key)
{
	struct json_object *v;

	if (!d->annotations ||
	    !json_object_object_get_ex(d->annotations, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* zstd:chunked annotations: Debian's skopeo 1.9 writes "io.containers.",
 * newer writers "io.github.containers.". */
static int toc_annotations(struct strata_layer *l, struct strata_desc *d)
{
	static const char *const prefix[] = { "io.github.containers.",
					      "io.containers." };
	char key[96];
	const char *sum, *pos;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(prefix); i++) {
		snprintf(key, sizeof(key), "%szstd-chunked.manifest-checksum",
			 prefix[i]);
		sum = annotation(d, key);
		snprintf(key, sizeof(key), "%szstd-chunked.manifest-position",
			 prefix[i]);
		pos = annotation(d, key);
		if (!sum || !pos)
			continue;
		l->toc_digest = strdup(sum);
		l->toc_position = strdup(pos);
		return l->toc_digest && l->toc_position ? 0 : -ENOMEM;
	}
	/* eStargz: the digest of its TOC JSON (store/layer/estargz.c) */
	sum = annotation(d, "containerd.io/snapshot/stargz/toc.digest");
	if (sum && l->compression == STRATA_COMP_GZIP) {
		l->toc_digest = strdup(sum);
		return l->toc_digest ? 0 : -ENOMEM;
	}
	return 0;
}

static bool tag_matches(struct strata_desc *d, const char *tag)
{
	const char *ref = annotation(d, "org.opencontainers.image.ref.name");
	const char *name = annotation(d, "io.containerd.image.name");

	return (ref && !strcmp(ref, tag)) || (name && !strcmp(name, tag));
}

static void list_tags(struct json_object *manifests, char *out, size_t len)
{
	size_t i, n = json_object_array_length(manifests), o = 0;

	out[0] = '\0';
	for (i = 0; i < n && o + 1 < len; i++) {
		struct strata_desc d;
		const char *ref;

		if (strata_desc_parse(json_object_array_get_idx(manifests, i),
				      &d, "", NULL) < 0)
			continue;
		ref = annotation(&d, "org.opencontainers.image.ref.name");
		o += (size_t)snprintf(out + o, len - o, "%s%s", o ? ", " : "",
				      ref ? ref : d.digest);
	}
	if (o == 0)
		snprintf(out, len, "none");
}

int strata_index_pick(struct json_object *index, const char *tag,
		      const char *digest, const char *where,
		      struct json_object **out, struct strata_err *err)
{
	struct json_object *manifests, *found = NULL;
	char what[600], tags[400];
	size_t i, n, usable = 0;
	int r;

	snprintf(what, sizeof(what), "%s: index.json", where);
	if (!index || !json_object_is_type(index, json_type_object))
		return strata_err_set(err, -EBADMSG, "%s: not a JSON object",
				      what);
	/* CVE-2021-41190, for the layout's own index too */
	if (json_object_object_get_ex(index, "config", NULL) ||
	    json_object_object_get_ex(index, "layers", NULL))
		return strata_err_set(err, -EBADMSG,
				      "%s: index also has manifest fields "
				      "(config/layers): ambiguous document "
				      "refused", what);
	r = strata_json_array(index, "manifests", true, &manifests, what, err);
	if (r < 0)
		return r;
	n = json_object_array_length(manifests);
	for (i = 0; i < n; i++) {
		struct json_object *o = json_object_array_get_idx(manifests, i);
		struct strata_desc d;

		r = strata_desc_parse(o, &d, what, err);
		if (r < 0)
			return r;
		if (!strata_media_is_manifest(d.media_type) &&
		    !strata_media_is_index(d.media_type))
			continue;	/* unknown types MUST NOT error */
		usable++;
		if (digest ? !strcmp(d.digest, digest)
			   : tag ? tag_matches(&d, tag) : true) {
			if (!found)
				found = o;
		}
	}
	if (found && (tag || digest || usable == 1)) {
		*out = found;
		return 0;
	}
	list_tags(manifests, tags, sizeof(tags));
	if (!tag && !digest)
		return strata_err_set(err, -ENOENT,
				      "%s: %zu images, name one with :TAG "
				      "(tags: %s)", where, usable, tags);
	return strata_err_set(err, -ENOENT, "%s: no image %s \"%s\" (tags: %s)",
			      where, digest ? "with digest" : "tagged",
			      digest ? digest : tag, tags);
}

static bool platform_matches(struct json_object *p,
			     const struct strata_platform *want, bool exact)
{
	const char *os = NULL, *arch = NULL, *variant = NULL;

	if (!p)
		return false;
	if (strata_json_string(p, "os", false, &os, "", NULL) < 0 ||
	    strata_json_string(p, "architecture", false, &arch, "", NULL) < 0)
		return false;
	strata_json_string(p, "variant", false, &variant, "", NULL);
	if (strcmp(os, want->os) || strcmp(arch, want->arch))
		return false;
	if (!want->variant[0])
		return true;
	if (!variant)
		return !exact;
	return !strcmp(variant, want->variant);
}

static int pick_platform(struct json_object *manifests,
			 const struct strata_platform *want, bool explicit,
			 const char *what, struct json_object **out,
			 struct strata_err *err)
{
	size_t i, n = json_object_array_length(manifests);
	char seen[400];
	size_t o = 0;
	int pass;

	seen[0] = '\0';
	/* First an exact match (variant included), then os/arch alone. */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < n; i++) {
			struct json_object *m = json_object_array_get_idx(manifests, i);
			struct strata_desc d;

			if (strata_desc_parse(m, &d, what, err) < 0)
				return -EBADMSG;
			if (!strata_media_is_manifest(d.media_type) &&
			    !strata_media_is_index(d.media_type))
				continue;
			if (platform_matches(d.platform, want, pass == 0)) {
				*out = m;
				return 0;
			}
		}
	}
	for (i = 0; i < n; i++) {
		struct json_object *m = json_object_array_get_idx(manifests, i);
		struct json_object *p;
		const char *os = "?", *arch = "?", *var = NULL;

		if (!json_object_object_get_ex(m, "platform", &p) || !p) {
			if (!explicit && n == 1) {
				*out = m;
				return 0;
			}
			continue;
		}
		strata_json_string(p, "os", false, &os, "", NULL);
		strata_json_string(p, "architecture", false, &arch, "", NULL);
		strata_json_string(p, "variant", false, &var, "", NULL);
		if (o < sizeof(seen))
			o += (size_t)snprintf(seen + o, sizeof(seen) - o,
					      "%s%s/%s%s%s", o ? ", " : "", os,
					      arch, var ? "/" : "",
					      var ? var : "");
	}
	return strata_err_set(err, -ENOENT,
			      "%s: no manifest for platform %s/%s%s%s "
			      "(available: %s)", what, want->os, want->arch,
			      want->variant[0] ? "/" : "", want->variant,
			      o ? seen : "none");
}

static int check_doc_type(struct json_object *doc, const char *desc_mt,
			  bool want_index, const char *what,
			  struct strata_err *err)
{
	struct json_object *v;
	const char *mt = NULL;
	int64_t sv;
	int r;

	if (!doc || !json_object_is_type(doc, json_type_object))
		return strata_err_set(err, -EBADMSG, "%s: not a JSON object",
				      what);
	r = strata_json_int64(doc, "schemaVersion", true, 0, 100, &sv, what,
			      err);
	if (r < 0)
		return r;
	if (sv == 1)
		return strata_err_set(err, -EOPNOTSUPP,
				      "%s: Docker schema 1 manifests are not "
				      "supported", what);
	if (sv != 2)
		return strata_err_set(err, -EBADMSG,
				      "%s: schemaVersion %lld, want 2", what,
				      (long long)sv);
	r = strata_json_string(doc, "mediaType", false, &mt, what, err);
	if (r < 0 && r != -ENOENT)
		return r;
	if (mt && strcmp(mt, desc_mt))
		return strata_err_set(err, -EBADMSG,
				      "%s: mediaType \"%s\" does not match the "
				      "descriptor's \"%s\"", what, mt, desc_mt);
	/* CVE-2021-41190: a document must not be both index and manifest. */
	if (want_index && (json_object_object_get_ex(doc, "config", &v) ||
			   json_object_object_get_ex(doc, "layers", &v)))
		return strata_err_set(err, -EBADMSG,
				      "%s: index also has manifest fields "
				      "(config/layers): ambiguous document "
				      "refused", what);
	if (!want_index && json_object_object_get_ex(doc, "manifests", &v))
		return strata_err_set(err, -EBADMSG,
				      "%s: manifest also has a \"manifests\" "
				      "field: ambiguous document refused", what);
	return 0;
}

static int dup_str(char **dst, const char *s)
{
	if (!s)
		return 0;
	*dst = strdup(s);
	return *dst ? 0 : -ENOMEM;
}

static int object_keys(struct json_object *obj, const char *key, char ***out,
		       bool with_values, const char *what,
		       struct strata_err *err)
{
	struct json_object *o;
	size_t n, i = 0;
	char **v;
	int r;

	*out = NULL;
	r = strata_json_object(obj, key, false, &o, what, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	n = (size_t)json_object_object_length(o);
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	json_object_object_foreach(o, k, val) {
		if (with_values) {
			const char *s = json_object_is_type(val, json_type_string)
						? json_object_get_string(val)
						: "";
			if (asprintf(&v[i], "%s=%s", k, s) < 0)
				v[i] = NULL;
		} else {
			v[i] = strdup(k);
		}
		if (!v[i]) {
			strata_strv_free(v);
			return -ENOMEM;
		}
		i++;
	}
	*out = v;
	return 0;
}

static int parse_history(struct strata_image *img, struct json_object *cfg,
			 const char *what, struct strata_err *err)
{
	struct json_object *arr;
	size_t i, n, nonempty = 0;
	int r;

	r = strata_json_array(cfg, "history", false, &arr, what, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	n = json_object_array_length(arr);
	img->history = calloc(n ? n : 1, sizeof(*img->history));
	if (!img->history)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct json_object *h = json_object_array_get_idx(arr, i), *e;
		struct strata_history *out = &img->history[i];
		const char *s;

		img->n_history++;
		if (!h || !json_object_is_type(h, json_type_object))
			return strata_err_set(err, -EBADMSG,
					      "%s: history[%zu] is not an object",
					      what, i);
		if (strata_json_string(h, "created", false, &s, what, err) == 0 &&
		    dup_str(&out->created, s) < 0)
			return -ENOMEM;
		if (strata_json_string(h, "created_by", false, &s, what, err) == 0 &&
		    dup_str(&out->created_by, s) < 0)
			return -ENOMEM;
		if (strata_json_string(h, "author", false, &s, what, err) == 0 &&
		    dup_str(&out->author, s) < 0)
			return -ENOMEM;
		if (strata_json_string(h, "comment", false, &s, what, err) == 0 &&
		    dup_str(&out->comment, s) < 0)
			return -ENOMEM;
		if (strata_err_isset(err))
			return err->code;
		if (json_object_object_get_ex(h, "empty_layer", &e) && e) {
			if (!json_object_is_type(e, json_type_boolean))
				return strata_err_set(err, -EBADMSG,
					"%s: history[%zu].empty_layer is not a "
					"boolean", what, i);
			out->empty_layer = json_object_get_boolean(e);
		}
		if (!out->empty_layer)
			nonempty++;
	}
	if (nonempty > img->n_layers)
		return strata_err_set(err, -EBADMSG,
				      "%s: %zu non-empty history entries but "
				      "only %zu layers", what, nonempty,
				      img->n_layers);
	return 0;
}

static int parse_config(struct strata_image *img, struct json_object *cfg,
			size_t n_layers_manifest, const char *what,
			struct strata_err *err)
{
	struct json_object *rootfs, *diff_ids, *c = NULL;
	const char *os, *arch, *variant = NULL, *type, *s;
	size_t i, n;
	int r;

	if (!cfg || !json_object_is_type(cfg, json_type_object))
		return strata_err_set(err, -EBADMSG, "%s: not a JSON object",
				      what);
	if ((r = strata_json_string(cfg, "os", true, &os, what, err)) < 0 ||
	    (r = strata_json_string(cfg, "architecture", true, &arch, what,
				    err)) < 0)
		return r;
	r = strata_json_string(cfg, "variant", false, &variant, what, err);
	if (r < 0 && r != -ENOENT)
		return r;
	snprintf(img->platform.os, sizeof(img->platform.os), "%s", os);
	snprintf(img->platform.arch, sizeof(img->platform.arch), "%s", arch);
	snprintf(img->platform.variant, sizeof(img->platform.variant), "%s",
		 variant ? variant : "");
	if ((r = strata_json_object(cfg, "rootfs", true, &rootfs, what, err)) < 0 ||
	    (r = strata_json_string(rootfs, "type", true, &type, what, err)) < 0 ||
	    (r = strata_json_array(rootfs, "diff_ids", true, &diff_ids, what,
				   err)) < 0)
		return r;
	if (strcmp(type, "layers"))
		return strata_err_set(err, -EBADMSG,
				      "%s: unsupported rootfs.type \"%s\"",
				      what, type);
	n = json_object_array_length(diff_ids);
	if (n != n_layers_manifest)
		return strata_err_set(err, -EBADMSG,
				      "%s: %zu diff_ids but the manifest has "
				      "%zu layers", what, n, n_layers_manifest);
	for (i = 0; i < n; i++) {
		struct json_object *d = json_object_array_get_idx(diff_ids, i);

		if (!json_object_is_type(d, json_type_string) ||
		    (size_t)json_object_get_string_len(d) !=
			    strlen(json_object_get_string(d)) ||
		    strata_digest_validate(json_object_get_string(d),
					   strlen(json_object_get_string(d))) < 0)
			return strata_err_set(err, -EBADMSG,
					      "%s: rootfs.diff_ids[%zu] is not "
					      "a valid sha256/sha512 digest",
					      what, i);
		img->layers[i].diff_id = strdup(json_object_get_string(d));
		if (!img->layers[i].diff_id)
			return -ENOMEM;
	}
	if (strata_json_string(cfg, "created", false, &s, what, err) == 0 &&
	    dup_str(&img->created, s) < 0)
		return -ENOMEM;
	if (strata_json_string(cfg, "author", false, &s, what, err) == 0 &&
	    dup_str(&img->author, s) < 0)
		return -ENOMEM;
	if (strata_err_isset(err))
		return err->code;
	r = strata_json_object(cfg, "config", false, &c, what, err);
	if (r < 0 && r != -ENOENT)
		return r;
	if (c) {
		if ((r = strata_json_strv(c, "Env", &img->env, what, err)) < 0 ||
		    (r = strata_json_strv(c, "Entrypoint", &img->entrypoint,
					  what, err)) < 0 ||
		    (r = strata_json_strv(c, "Cmd", &img->cmd, what, err)) < 0 ||
		    (r = object_keys(c, "Labels", &img->labels, true, what,
				     err)) < 0 ||
		    (r = object_keys(c, "ExposedPorts", &img->exposed_ports,
				     false, what, err)) < 0 ||
		    (r = object_keys(c, "Volumes", &img->volumes, false, what,
				     err)) < 0)
			return r;
		if (strata_json_string(c, "WorkingDir", false, &s, what, err) == 0 &&
		    dup_str(&img->working_dir, s) < 0)
			return -ENOMEM;
		if (strata_json_string(c, "User", false, &s, what, err) == 0 &&
		    dup_str(&img->user, s) < 0)
			return -ENOMEM;
		if (strata_json_string(c, "StopSignal", false, &s, what, err) == 0 &&
		    dup_str(&img->stop_signal, s) < 0)
			return -ENOMEM;
		if (strata_err_isset(err))
			return err->code;
	}
	return parse_history(img, cfg, what, err);
}

struct fetcher {
	strata_fetch_fn fn;
	void *ctx;
};

/* strata_blob_read, asking @f for a blob @blobs_fd lacks */
static int read_or_fetch(const struct fetcher *f, int blobs_fd,
			 const struct strata_desc *d, size_t max, char **out,
			 struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	int r;

	if (f && f->fn) {
		strata_blob_relpath(d->digest, rel, sizeof(rel));
		if (faccessat(blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
			r = f->fn(f->ctx, d->digest, d->size, d->media_type,
				  err);
			if (r < 0)
				return r;
		}
	}
	return strata_blob_read(blobs_fd, d->digest, d->size, max, out, err);
}

static int load_manifest(struct strata_image *img, int blobs_fd,
			 struct strata_desc *md, struct json_object *doc,
			 const struct fetcher *f, struct strata_err *err)
{
	struct json_object *cfgdesc, *layers;
	cleanup_free char *cfgbuf = NULL;
	struct json_object *cfg = NULL;
	struct strata_desc cd;
	char what[256], sd[32];
	size_t i, n;
	int r;

	snprintf(what, sizeof(what), "manifest %s",
		 strata_short_digest(md->digest, sd, sizeof(sd)));
	r = check_doc_type(doc, md->media_type, false, what, err);
	if (r < 0)
		return r;
	if ((r = strata_json_object(doc, "config", true, &cfgdesc, what, err)) < 0 ||
	    (r = strata_json_array(doc, "layers", true, &layers, what, err)) < 0)
		return r;
	r = strata_desc_parse(cfgdesc, &cd, what, err);
	if (r < 0)
		return r;
	if (strcmp(cd.media_type, MT_OCI_CONFIG) &&
	    strcmp(cd.media_type, MT_DOCKER_CONFIG))
		return strata_err_set(err, -EOPNOTSUPP,
				      "%s: config media type \"%s\" is not an "
				      "image config (an artifact, not a "
				      "mountable image)", what, cd.media_type);
	n = json_object_array_length(layers);
	img->layers = calloc(n ? n : 1, sizeof(*img->layers));
	if (!img->layers)
		return -ENOMEM;
	img->n_layers = n;
	for (i = 0; i < n; i++) {
		struct strata_desc ld;
		char lwhat[300];

		snprintf(lwhat, sizeof(lwhat), "%s: layers[%zu]", what, i);
		r = strata_desc_parse(json_object_array_get_idx(layers, i), &ld,
				      lwhat, err);
		if (r < 0)
			return r;
		if (strata_digest_validate(ld.digest, strlen(ld.digest)) < 0)
			return strata_err_set(err, -EOPNOTSUPP,
					      "%s: cannot verify digest %s",
					      lwhat, ld.digest);
		if (strstr(ld.media_type, "+encrypted"))
			return strata_err_set(err, -EOPNOTSUPP,
					      "%s: encrypted layer (%s) not "
					      "supported", lwhat, ld.media_type);
		img->layers[i].compression =
			strata_media_layer_compression(ld.media_type);
		if (img->layers[i].compression < 0)
			return strata_err_set(err, -EOPNOTSUPP,
					      "%s: unsupported layer media type "
					      "\"%s\"", lwhat, ld.media_type);
		if ((r = dup_str(&img->layers[i].media_type, ld.media_type)) < 0 ||
		    (r = dup_str(&img->layers[i].digest, ld.digest)) < 0)
			return r;
		img->layers[i].size = ld.size;
		r = toc_annotations(&img->layers[i], &ld);
		if (r < 0)
			return r;
	}
	if (strata_digest_validate(cd.digest, strlen(cd.digest)) < 0)
		return strata_err_set(err, -EOPNOTSUPP,
				      "%s: cannot verify config digest %s",
				      what, cd.digest);
	r = read_or_fetch(f, blobs_fd, &cd, STRATA_JSON_MAX, &cfgbuf, err);
	if (r < 0)
		return strata_err_wrap(err, r, "config of %s", what);
	snprintf(what, sizeof(what), "config %s",
		 strata_short_digest(cd.digest, sd, sizeof(sd)));
	r = strata_json_parse(cfgbuf, (size_t)cd.size, what, &cfg, err);
	if (r < 0)
		return r;
	r = parse_config(img, cfg, n, what, err);
	json_object_put(cfg);
	if (r < 0)
		return r;
	if ((r = dup_str(&img->config_digest, cd.digest)) < 0 ||
	    (r = dup_str(&img->config_media_type, cd.media_type)) < 0 ||
	    (r = dup_str(&img->manifest_digest, md->digest)) < 0 ||
	    (r = dup_str(&img->manifest_media_type, md->media_type)) < 0)
		return r;
	img->config_size = cd.size;
	img->manifest_size = md->size;
	return 0;
}

int strata_image_from_desc(struct strata_image *img, int blobs_fd,
			   struct json_object *desc,
			   const struct strata_platform *plat,
			   struct strata_err *err)
{
	return strata_image_from_desc_fetch(img, blobs_fd, desc, plat, NULL,
					    NULL, err);
}

int strata_image_from_desc_fetch(struct strata_image *img, int blobs_fd,
				 struct json_object *desc,
				 const struct strata_platform *plat,
				 strata_fetch_fn fetch, void *ctx,
				 struct strata_err *err)
{
	struct fetcher f = { fetch, ctx };
	struct strata_platform host;
	struct json_object *doc = NULL, *cur = desc, *held = NULL;
	int depth, r;

	if (!plat) {
		strata_platform_host(&host);
		plat = &host;
	}
	for (depth = 0; depth < 5; depth++) {
		cleanup_free char *buf = NULL;
		struct strata_desc d;
		char what[256], sd[32];

		r = strata_desc_parse(cur, &d, "descriptor", err);
		if (r < 0)
			goto out;
		if (!strata_media_is_schema1(d.media_type) &&
		    !strata_media_is_manifest(d.media_type) &&
		    !strata_media_is_index(d.media_type)) {
			r = strata_err_set(err, -EOPNOTSUPP,
					   "%s: unsupported media type \"%s\"",
					   d.digest, d.media_type);
			goto out;
		}
		if (strata_digest_validate(d.digest, strlen(d.digest)) < 0) {
			r = strata_err_set(err, -EOPNOTSUPP,
					   "cannot verify digest %s", d.digest);
			goto out;
		}
		r = read_or_fetch(&f, blobs_fd, &d, STRATA_JSON_MAX, &buf, err);
		if (r < 0)
			goto out;
		snprintf(what, sizeof(what), "%s %s",
			 strata_media_is_index(d.media_type) ? "index"
							     : "manifest",
			 strata_short_digest(d.digest, sd, sizeof(sd)));
		if (doc)
			json_object_put(doc);
		doc = NULL;
		r = strata_json_parse(buf, (size_t)d.size, what, &doc, err);
		if (r < 0)
			goto out;
		if (strata_media_is_manifest(d.media_type)) {
			r = load_manifest(img, blobs_fd, &d, doc, &f, err);
			goto out;
		}
		if (strata_media_is_schema1(d.media_type)) {
			struct json_object *conv = NULL;

			/* converted once, then read as the manifest it
			 * becomes (schema1.c) */
			r = strata_schema1_convert(blobs_fd, what, doc, f.fn,
						   f.ctx, &conv, err);
			if (r < 0)
				goto out;
			if (held)
				json_object_put(held);
			held = cur = conv;
			continue;
		}
		{
			struct json_object *manifests, *next = NULL;

			r = check_doc_type(doc, d.media_type, true, what, err);
			if (r < 0)
				goto out;
			r = strata_json_array(doc, "manifests", true, &manifests,
					      what, err);
			if (r < 0)
				goto out;
			r = pick_platform(manifests, plat, true, what, &next,
					  err);
			if (r < 0)
				goto out;
			/* keep the parent document alive while we use next */
			next = json_object_get(next);
			if (held)
				json_object_put(held);
			held = next;
			cur = next;
		}
	}
	r = strata_err_set(err, -ELOOP, "image indexes nested too deep");
out:
	if (doc)
		json_object_put(doc);
	if (held)
		json_object_put(held);
	return r;
}

int strata_image_read_blob(const struct strata_image *img, const char *digest,
			   int64_t size, char **out, size_t *len,
			   struct strata_err *err)
{
	int r = strata_blob_read(img->blobs_fd, digest, size, STRATA_JSON_MAX,
				 out, err);

	if (r == 0)
		*len = (size_t)size;
	return r;
}
