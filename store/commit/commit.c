/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata_commit(): upper directory -> layer, config, manifest, tag
 * (OCI-RULES.md §1.11). The new config is the source config with the
 * diff_id appended to rootfs.diff_ids, a history entry, `created` and the
 * command line's edits; the manifest keeps the source's layer descriptors
 * byte for byte (media types mapped to the format written; their
 * annotations, zstd:chunked TOC positions say, kept) and adds the new
 * one. Into a layout that already holds the base image only the new layer,
 * config and manifest are written; index.json last.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commit.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
/* what Debian's skopeo 1.9 writes and podman 4.3 reads (newer ones use
 * io.github.containers.zstd-chunked.*) */

static const char *layer_type(bool docker, int comp)
{
	static const char *const oci[] = {
		"application/vnd.oci.image.layer.v1.tar",
		"application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.oci.image.layer.v1.tar+zstd",
	};
	static const char *const dock[] = {
		"application/vnd.docker.image.rootfs.diff.tar",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.diff.tar.zstd",
	};

	if (comp == STRATA_COMP_ZSTD_CHUNKED)
		comp = STRATA_COMP_ZSTD;
	if (comp == STRATA_COMP_ESTARGZ)
		comp = STRATA_COMP_GZIP;
	if (comp < 0 || comp > STRATA_COMP_ZSTD)
		comp = STRATA_COMP_NONE;
	return docker ? dock[comp] : oci[comp];
}

/* Compression of a docker "tar" layer, which may be anything: its magic. */
static int sniff(int blobs_fd, const char *digest)
{
	char rel[STRATA_DIGEST_MAX + 8];
	unsigned char m[4] = { 0 };
	cleanup_fd int fd = -1;

	strata_blob_relpath(digest, rel, sizeof(rel));
	fd = openat(blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || read(fd, m, 4) != 4)
		return STRATA_COMP_NONE;
	if (m[0] == 0x1f && m[1] == 0x8b)
		return STRATA_COMP_GZIP;
	if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
		return STRATA_COMP_ZSTD;
	return STRATA_COMP_NONE;
}

static void rfc3339(int64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- config edits ---- */

static struct json_object *sub_object(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (json_object_object_get_ex(o, key, &v) && v &&
	    json_object_is_type(v, json_type_object))
		return v;
	v = json_object_new_object();
	json_object_object_add(o, key, v);
	return v;
}

static struct json_object *sub_array(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (json_object_object_get_ex(o, key, &v) && v &&
	    json_object_is_type(v, json_type_array))
		return v;
	v = json_object_new_array();
	json_object_object_add(o, key, v);
	return v;
}

static void env_remove(struct json_object *env, const char *key, size_t klen)
{
	size_t i;

	for (i = json_object_array_length(env); i-- > 0;) {
		const char *s = json_object_get_string(
			json_object_array_get_idx(env, i));

		if (s && !strncmp(s, key, klen) &&
		    (s[klen] == '=' || s[klen] == '\0'))
			json_object_array_del_idx(env, i, 1);
	}
}

static int argv_value(const char *v, struct json_object **out,
		      struct strata_err *err)
{
	struct json_object *a = NULL;

	if (v[0] == '[') {
		size_t i;

		if (strata_json_parse(v, strlen(v), "argument", &a, err) < 0)
			return -EINVAL;
		if (!json_object_is_type(a, json_type_array))
			goto bad;
		for (i = 0; i < json_object_array_length(a); i++)
			if (!json_object_is_type(json_object_array_get_idx(a, i),
						 json_type_string))
				goto bad;
		*out = a;
		return 0;
bad:
		json_object_put(a);
		return strata_err_set(err, -EINVAL, "\"%s\": want a JSON "
				      "array of strings", v);
	}
	a = json_object_new_array();
	json_object_array_add(a, json_object_new_string("/bin/sh"));
	json_object_array_add(a, json_object_new_string("-c"));
	json_object_array_add(a, json_object_new_string(v));
	*out = a;
	return 0;
}

static int split_kv(const char *v, const char *what, size_t *klen,
		    struct strata_err *err)
{
	const char *eq = strchr(v, '=');

	if (!eq || eq == v)
		return strata_err_set(err, -EINVAL, "%s \"%s\": want KEY=VALUE",
				      what, v);
	*klen = (size_t)(eq - v);
	return 0;
}

static int apply_edit(struct json_object *c, const struct strata_cfg_edit *e,
		      struct strata_err *err)
{
	struct json_object *a = NULL;
	char key[512];
	size_t klen = 0;
	int r;

	switch (e->kind) {
	case STRATA_EDIT_ENV:
		if ((r = split_kv(e->value, "--env", &klen, err)) < 0)
			return r;
		a = sub_array(c, "Env");
		env_remove(a, e->value, klen);
		json_object_array_add(a, json_object_new_string(e->value));
		return 0;
	case STRATA_EDIT_UNSET_ENV:
		env_remove(sub_array(c, "Env"), e->value, strlen(e->value));
		return 0;
	case STRATA_EDIT_ENTRYPOINT:
	case STRATA_EDIT_CMD:
		if ((r = argv_value(e->value, &a, err)) < 0)
			return r;
		json_object_object_add(c, e->kind == STRATA_EDIT_CMD
					  ? "Cmd" : "Entrypoint", a);
		return 0;
	case STRATA_EDIT_UNSET_ENTRYPOINT:
		json_object_object_del(c, "Entrypoint");
		return 0;
	case STRATA_EDIT_UNSET_CMD:
		json_object_object_del(c, "Cmd");
		return 0;
	case STRATA_EDIT_WORKDIR:
		json_object_object_add(c, "WorkingDir",
				       json_object_new_string(e->value));
		return 0;
	case STRATA_EDIT_UNSET_WORKDIR:
		json_object_object_del(c, "WorkingDir");
		return 0;
	case STRATA_EDIT_USER:
		json_object_object_add(c, "User",
				       json_object_new_string(e->value));
		return 0;
	case STRATA_EDIT_UNSET_USER:
		json_object_object_del(c, "User");
		return 0;
	case STRATA_EDIT_LABEL:
		if ((r = split_kv(e->value, "--label", &klen, err)) < 0)
			return r;
		snprintf(key, sizeof(key), "%.*s", (int)klen, e->value);
		json_object_object_add(sub_object(c, "Labels"), key,
				       json_object_new_string(e->value + klen + 1));
		return 0;
	case STRATA_EDIT_UNSET_LABEL:
		json_object_object_del(sub_object(c, "Labels"), e->value);
		return 0;
	case STRATA_EDIT_EXPOSE:
	case STRATA_EDIT_UNSET_EXPOSE:
		snprintf(key, sizeof(key), "%s%s", e->value,
			 strchr(e->value, '/') ? "" : "/tcp");
		if (e->kind == STRATA_EDIT_EXPOSE)
			json_object_object_add(sub_object(c, "ExposedPorts"),
					       key, json_object_new_object());
		else
			json_object_object_del(sub_object(c, "ExposedPorts"),
					       key);
		return 0;
	case STRATA_EDIT_VOLUME:
		if (e->value[0] != '/')
			return strata_err_set(err, -EINVAL, "--volume \"%s\": "
					      "want an absolute path", e->value);
		json_object_object_add(sub_object(c, "Volumes"), e->value,
				       json_object_new_object());
		return 0;
	case STRATA_EDIT_UNSET_VOLUME:
		json_object_object_del(sub_object(c, "Volumes"), e->value);
		return 0;
	}
	return -EINVAL;
}

/* Drop empty maps and lists the edits may have left behind. */
static void tidy(struct json_object *c)
{
	static const char *const keys[] = { "Env", "Labels", "ExposedPorts",
					    "Volumes" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(keys); i++) {
		struct json_object *v;

		if (!json_object_object_get_ex(c, keys[i], &v) || !v)
			continue;
		if ((json_object_is_type(v, json_type_object) &&
		     json_object_object_length(v) == 0) ||
		    (json_object_is_type(v, json_type_array) &&
		     json_object_array_length(v) == 0))
			json_object_object_del(c, keys[i]);
	}
}

static char **volume_list(struct json_object *cfg)
{
	struct json_object *c, *v;
	char **out;
	size_t n = 0;

	if (!json_object_object_get_ex(cfg, "config", &c) || !c ||
	    !json_object_object_get_ex(c, "Volumes", &v) || !v ||
	    !json_object_is_type(v, json_type_object))
		return NULL;
	out = calloc((size_t)json_object_object_length(v) + 1, sizeof(*out));
	if (!out)
		return NULL;
	json_object_object_foreach(v, k, val) {
		(void)val;
		out[n] = strdup(k);
		if (out[n])
			n++;
	}
	return out;
}

/* ---- destinations ---- */

struct dest {
	enum strata_ref_kind kind;
	char *path;		/* layout dir, or archive file */
	char *name;		/* store/docker-archive NAME (no tag) */
	char **tags;		/* ref.name values (store: NAME:TAG) */
	size_t n_tags;
	struct strata_layoutw *lw;
	char tmpdir[64];	/* archives: layout built here (store tmp) */
};

static void dest_free(struct strata_store *st, struct dest *d)
{
	size_t i;

	if (d->lw)
		strata_layoutw_free(d->lw);
	if (d->tmpdir[0])
		strata_rmtree_at(st->tmp_fd, d->tmpdir);
	for (i = 0; i < d->n_tags; i++)
		free(d->tags[i]);
	free(d->tags);
	free(d->path);
	free(d->name);
}

static int add_tag(struct dest *d, const char *t, struct strata_err *err)
{
	char *s;

	if (d->name && !strchr(t, ':')) {
		if (asprintf(&s, "%s:%s", d->name, t) < 0)
			return -ENOMEM;
	} else if (d->kind == STRATA_REF_STORE) {
		int r = strata_store_name(t, &s, err);

		if (r < 0)
			return r;
	} else {
		s = strdup(t);
		if (!s)
			return -ENOMEM;
	}
	d->tags[d->n_tags++] = s;
	return 0;
}

static int name_of(const char *nametag, char **out)
{
	const char *slash = strrchr(nametag, '/');
	const char *colon = strrchr(slash ? slash : nametag, ':');

	*out = colon ? strndup(nametag, (size_t)(colon - nametag))
		     : strdup(nametag);
	return *out ? 0 : -ENOMEM;
}

static int parse_dest(const struct strata_commit_opts *o, struct dest *d,
		      struct strata_err *err)
{
	cleanup_(strata_ref_freep) struct strata_ref *src = NULL;
	cleanup_(strata_ref_freep) struct strata_ref *ref = NULL;
	const char *tag = NULL;
	size_t i;
	int r;

	if (!o->dest || !*o->dest)
		return strata_err_set(err, -EINVAL, "no destination given");
	if (o->dest[0] == ':') {
		r = strata_ref_parse(o->from, &src, err);
		if (r < 0)
			return r;
		if (src->kind != STRATA_REF_OCI && src->kind != STRATA_REF_STORE)
			return strata_err_set(err, -EINVAL,
					      "destination %s: a bare tag needs "
					      "an oci: or store source; name a "
					      "destination reference", o->dest);
		d->kind = src->kind;
		tag = o->dest + 1;
		if (src->kind == STRATA_REF_OCI) {
			d->path = strdup(src->path);
		} else if ((r = name_of(src->tag, &d->name)) < 0) {
			return r;
		}
	} else {
		r = strata_ref_parse(o->dest, &ref, err);
		if (r < 0)
			return r;
		if (ref->digest)
			return strata_err_set(err, -EINVAL, "destination %s: "
					      "cannot write to a digest",
					      o->dest);
		d->kind = ref->kind;
		/* docker://: built in a layout in the store's tmp, pushed
		 * from there with its tags */
		if (ref->kind == STRATA_REF_DOCKER)
			d->path = strdup(o->dest);
		else if (ref->path)
			d->path = strdup(ref->path);
		if (ref->kind == STRATA_REF_DOCKER) {
			tag = NULL;	/* the reference's own, on push */
		} else if (ref->kind == STRATA_REF_STORE ||
		    (ref->kind == STRATA_REF_DOCKER_ARCHIVE && ref->tag)) {
			if ((r = name_of(ref->tag, &d->name)) < 0)
				return r;
			tag = strrchr(ref->tag, ':') + 1;
		} else {
			tag = ref->tag;
		}
		if (!tag && ref->kind == STRATA_REF_OCI)
			return strata_err_set(err, -EINVAL, "destination %s: "
					      "name a tag (oci:DIR:TAG)", o->dest);
	}
	if ((d->kind != STRATA_REF_STORE && !d->path) ||
	    !(d->tags = calloc(o->n_tags + 1, sizeof(*d->tags))))
		return -ENOMEM;
	if (tag && (r = add_tag(d, tag, err)) < 0)
		return r;
	for (i = 0; i < o->n_tags; i++)
		if ((r = add_tag(d, o->tags[i], err)) < 0)
			return r;
	return 0;
}

static int open_dest(struct strata_store *st, struct dest *d,
		     struct strata_err *err)
{
	int r;

	if (d->kind == STRATA_REF_STORE) {
		r = strata_layoutw_open(st->root_fd, "images", false, &d->lw,
					err);
		if (r == 0)
			d->lw->keep_untagged = true;
		return r;
	}
	if (d->kind == STRATA_REF_OCI)
		return strata_layoutw_open(AT_FDCWD, d->path, true, &d->lw, err);
	snprintf(d->tmpdir, sizeof(d->tmpdir), "commit-%d", (int)getpid());
	strata_rmtree_at(st->tmp_fd, d->tmpdir);
	return strata_layoutw_open_staging(st->tmp_fd, d->tmpdir, &d->lw, err);
}

/* ---- the commit ---- */

struct ctx {
	struct strata_store *st;
	const struct strata_commit_opts *o;
	struct strata_commit_result *res;
	struct strata_err *err;
	struct strata_image *img;
	struct json_object *cfg;
	struct dest d;
	int64_t created;
	int64_t config_size;
	bool docker;
	/* the annotations naming the new layer's TOC (zstd:chunked,
	 * eStargz), borrowed from the blob writer */
	const char *toc_key[STRATA_TOC_ANNOTATIONS];
	char toc_val[STRATA_TOC_ANNOTATIONS][128];
	size_t n_base;		/* the base's layers kept: 0 in a squash */
};

static int edit_config(struct ctx *c, bool layer)
{
	struct json_object *cfg = c->cfg, *rootfs, *hist, *h, *cc;
	struct strata_platform host;
	char when[64];
	size_t i;
	int r;

	strata_platform_host(&host);
	if (!json_object_object_get_ex(cfg, "os", NULL))
		json_object_object_add(cfg, "os", json_object_new_string(host.os));
	if (!json_object_object_get_ex(cfg, "architecture", NULL))
		json_object_object_add(cfg, "architecture",
				       json_object_new_string(host.arch));
	rfc3339(c->created, when, sizeof(when));
	json_object_object_add(cfg, "created", json_object_new_string(when));
	if (c->o->author)
		json_object_object_add(cfg, "author",
				       json_object_new_string(c->o->author));
	if (c->o->n_edits) {
		cc = sub_object(cfg, "config");
		for (i = 0; i < c->o->n_edits; i++) {
			r = apply_edit(cc, &c->o->edits[i], c->err);
			if (r < 0)
				return r;
		}
		tidy(cc);
	}
	if (c->o->squash) {
		/* one layer, one history entry (as buildah --squash) */
		rootfs = sub_object(cfg, "rootfs");
		json_object_object_add(rootfs, "diff_ids",
				       json_object_new_array());
		json_object_object_add(cfg, "history", json_object_new_array());
	}
	if (layer) {
		rootfs = sub_object(cfg, "rootfs");
		json_object_array_add(sub_array(rootfs, "diff_ids"),
				      json_object_new_string(c->res->diff_id));
	}
	hist = sub_array(cfg, "history");
	h = json_object_new_object();
	json_object_object_add(h, "created", json_object_new_string(when));
	json_object_object_add(h, "created_by", json_object_new_string(
		c->o->created_by ? c->o->created_by : "strata commit"));
	if (c->o->author)
		json_object_object_add(h, "author",
				       json_object_new_string(c->o->author));
	if (c->o->message)
		json_object_object_add(h, "comment",
				       json_object_new_string(c->o->message));
	if (!layer)
		json_object_object_add(h, "empty_layer",
				       json_object_new_boolean(1));
	json_object_array_add(hist, h);
	return 0;
}

static const char *to_json(struct json_object *o, size_t *len)
{
	return json_object_to_json_string_length(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

static struct json_object *descriptor(const char *mt, const char *digest,
				      int64_t size)
{
	struct json_object *d = json_object_new_object();

	json_object_object_add(d, "mediaType", json_object_new_string(mt));
	json_object_object_add(d, "digest", json_object_new_string(digest));
	json_object_object_add(d, "size", json_object_new_int64(size));
	return d;
}

/*
 * The annotations of the source manifest's layer @i (a zstd:chunked TOC's
 * position and checksum, say), if it still describes @digest there: they
 * go with the layer into the new manifest. NULL for none (or no source
 * manifest to read: nothing but the annotations is lost).
 */
static struct json_object *source_annotations(struct json_object *src,
					      size_t i, const char *digest)
{
	struct json_object *layers, *l, *d, *a;

	if (!src || !json_object_object_get_ex(src, "layers", &layers) ||
	    !json_object_is_type(layers, json_type_array) ||
	    i >= json_object_array_length(layers))
		return NULL;
	l = json_object_array_get_idx(layers, i);
	if (!json_object_object_get_ex(l, "digest", &d) ||
	    !json_object_is_type(d, json_type_string) ||
	    strcmp(json_object_get_string(d), digest) ||
	    !json_object_object_get_ex(l, "annotations", &a) ||
	    !json_object_is_type(a, json_type_object))
		return NULL;
	return json_object_get(a);
}

static struct json_object *source_manifest(struct ctx *c)
{
	cleanup_free char *buf = NULL;
	struct strata_err ignored = { 0 };
	struct json_object *m = NULL;

	if (strata_blob_read(c->img->blobs_fd, c->img->manifest_digest,
			     c->img->manifest_size, STRATA_JSON_MAX, &buf,
			     &ignored) < 0 ||
	    strata_json_parse(buf, (size_t)c->img->manifest_size, "manifest",
			      &m, &ignored) < 0)
		return NULL;
	return m;
}

static int write_manifest(struct ctx *c, char *digest, int64_t *size)
{
	struct json_object *src = c->docker ? NULL : source_manifest(c);
	struct json_object *m = json_object_new_object(), *layers;
	const char *cfg_s, *man_s;
	char when[64];
	size_t i, len;
	int r;

	cfg_s = to_json(c->cfg, &len);
	r = strata_layoutw_put(c->d.lw, cfg_s, len, c->res->config_digest);
	if (r < 0)
		goto out;
	json_object_object_add(m, "schemaVersion", json_object_new_int(2));
	json_object_object_add(m, "mediaType", json_object_new_string(
		c->docker ? MT_DOCKER_MANIFEST : MT_OCI_MANIFEST));
	c->config_size = (int64_t)len;
	json_object_object_add(m, "config", descriptor(
		c->docker ? MT_DOCKER_CONFIG : MT_OCI_CONFIG,
		c->res->config_digest, (int64_t)len));
	layers = json_object_new_array();
	for (i = 0; i < c->n_base; i++) {
		const struct strata_layer *l = &c->img->layers[i];
		int comp = l->compression == STRATA_COMP_SNIFF
				   ? sniff(c->img->blobs_fd, l->digest)
				   : l->compression;

		struct json_object *d = descriptor(layer_type(c->docker, comp),
						   l->digest, l->size);
		struct json_object *a = source_annotations(src, i, l->digest);

		if (a)
			json_object_object_add(d, "annotations", a);
		json_object_array_add(layers, d);
	}
	if (c->res->layer) {
		struct json_object *d = descriptor(
			layer_type(c->docker, c->o->compression),
			c->res->layer_digest, c->res->layer_size);

		if (c->toc_key[0]) {
			struct json_object *a = json_object_new_object();

			for (i = 0; i < STRATA_TOC_ANNOTATIONS; i++)
				json_object_object_add(a, c->toc_key[i],
					json_object_new_string(c->toc_val[i]));
			json_object_object_add(d, "annotations", a);
		}
		json_object_array_add(layers, d);
	}
	json_object_object_add(m, "layers", layers);
	if (!c->docker) {
		struct json_object *ann = json_object_new_object();

		rfc3339(c->created, when, sizeof(when));
		json_object_object_add(ann, "org.opencontainers.image.base.digest",
				       json_object_new_string(
					       c->img->manifest_digest));
		json_object_object_add(ann, "org.opencontainers.image.created",
				       json_object_new_string(when));
		json_object_object_add(m, "annotations", ann);
	}
	man_s = to_json(m, &len);
	*size = (int64_t)len;
	r = strata_layoutw_put(c->d.lw, man_s, len, digest);
out:
	json_object_put(m);
	json_object_put(src);
	if (r < 0)
		return strata_err_set(c->err, r, "%s: writing blobs: %s",
				      c->d.lw->path, strerror(-r));
	return 0;
}

static int write_layer(struct ctx *c, char **volumes)
{
	cleanup_(strata_blobw_freep) struct strata_blobw *w = NULL;
	cleanup_fd int ufd = -1;
	struct strata_layer_walk lw = {
		.st = c->st,
		.img = c->img,
		.mask = c->o->mask,
		.n_mask = c->o->n_mask,
		.volumes = c->o->no_mask_volumes ? NULL : volumes,
		.clamp = c->o->have_created,
		.clamp_sec = c->created,
		.squash = c->o->squash,
	};
	uint64_t entries = 0;
	int r;

	ufd = open(c->o->upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ufd < 0)
		return strata_err_set(c->err, -errno, "upper directory %s: %s",
				      c->o->upper, strerror(errno));
	lw.upper_fd = ufd;
	r = strata_blobw_new(c->d.lw->dir_fd, c->o->compression, c->o->threads,
			     &w);
	if (r < 0)
		return strata_err_set(c->err, r, "%s: %s", c->d.lw->path,
				      strerror(-r));
	if (c->d.lw->staging)
		strata_blobw_set_nosync(w);
	r = strata_commit_layer(&lw, w, &entries, c->err);
	if (r < 0)
		return r;
	c->res->entries = entries;
	if (!entries)
		return 0;
	r = strata_blobw_finish(w, c->res->layer_digest, c->res->diff_id,
				&c->res->layer_size);
	if (r < 0)
		return strata_err_set(c->err, r, "%s: writing the layer: %s",
				      c->d.lw->path, strerror(-r));
	{
		const char *key[STRATA_TOC_ANNOTATIONS];
		const char *val[STRATA_TOC_ANNOTATIONS];
		size_t i;

		/* the keys are static strings of zchunked.c */
		if (strata_blobw_toc(w, key, val) == 0)
			for (i = 0; i < STRATA_TOC_ANNOTATIONS; i++) {
				c->toc_key[i] = key[i];
				snprintf(c->toc_val[i], sizeof(c->toc_val[i]),
					 "%s", val[i]);
			}
	}
	c->res->tar_size = strata_blobw_bytes(w);
	c->res->layer = true;
	return 0;
}

static int write_archive(struct ctx *c, const char *mdigest, int64_t msize)
{
	size_t n = c->n_base + 1, i;
	cleanup_free const char **layers = calloc(n, sizeof(*layers));
	cleanup_free int64_t *sizes = calloc(n, sizeof(*sizes));
	struct strata_archive_out a = {
		.docker = c->d.kind == STRATA_REF_DOCKER_ARCHIVE,
		.path = c->d.path,
		.tags = c->d.tags,
		.n_tags = c->d.n_tags,
		.new_blobs_fd = c->d.lw->blobs_fd,
		.base_blobs_fd = c->img->blobs_fd,
		.manifest_mt = c->docker ? MT_DOCKER_MANIFEST : MT_OCI_MANIFEST,
		.manifest_digest = mdigest,
		.manifest_size = msize,
		.config_digest = c->res->config_digest,
		.config_size = c->config_size,
		.layers = layers,
		.sizes = sizes,
	};

	if (!layers || !sizes)
		return -ENOMEM;
	for (i = 0; i < c->n_base; i++) {
		layers[i] = c->img->layers[i].digest;
		sizes[i] = c->img->layers[i].size;
	}
	if (c->res->layer) {
		layers[i] = c->res->layer_digest;
		sizes[i++] = c->res->layer_size;
	}
	a.n_layers = i;
	if (c->d.kind == STRATA_REF_DIR)
		return strata_dir_write(&a, NULL, c->err);
	return strata_archive_write(&a, c->err);
}

/* The new manifest, config and layer from the tmp layout, the base's
 * layers from the store, to the registry. */
static int push(struct ctx *c, const char *mdigest, int64_t msize)
{
	cleanup_free char *man = NULL;
	int fds[2] = { c->d.lw->blobs_fd, c->img->blobs_fd };
	struct strata_push_opts po = {
		.dest = c->d.path,
		.tags = (const char *const *)c->d.tags,
		.n_tags = c->d.n_tags,
		.media_type = c->docker ? MT_DOCKER_MANIFEST : MT_OCI_MANIFEST,
		.blob_fds = fds,
		.n_blob_fds = 2,
	};
	struct strata_push_result pr;
	int r;

	r = strata_blob_read(c->d.lw->blobs_fd, mdigest, msize,
			     STRATA_JSON_MAX, &man, c->err);
	if (r < 0)
		return r;
	po.manifest = man;
	po.manifest_len = (size_t)msize;
	r = strata_push(c->st, &po, &pr, c->err);
	if (r == 0) {
		c->res->pushed = true;
		c->res->push_uploaded = pr.uploaded;
		c->res->push_mounted = pr.mounted;
		c->res->push_skipped = pr.skipped;
	}
	return r;
}

static int load_config(struct ctx *c)
{
	cleanup_free char *buf = NULL;
	int r;

	r = strata_blob_read(c->img->blobs_fd, c->img->config_digest,
			     c->img->config_size, STRATA_JSON_MAX, &buf, c->err);
	if (r < 0)
		return r;
	return strata_json_parse(buf, (size_t)c->img->config_size, "config",
				 &c->cfg, c->err);
}

static int run(struct ctx *c)
{
	const struct strata_commit_opts *o = c->o;
	char **volumes = NULL;
	char mdigest[STRATA_DIGEST_MAX];
	int64_t msize = 0;
	size_t i;
	int r;

	r = parse_dest(o, &c->d, c->err);
	if (r < 0)
		return r;
	c->docker = o->docker || c->d.kind == STRATA_REF_DOCKER_ARCHIVE;
	if (c->docker && (o->compression == STRATA_COMP_ZSTD_CHUNKED ||
			  o->compression == STRATA_COMP_ESTARGZ))
		return strata_err_set(c->err, -EINVAL, "%s: %s needs OCI media "
				      "types (its TOC is named by layer "
				      "annotations, which Docker manifests "
				      "lack)", o->dest,
				      o->compression == STRATA_COMP_ESTARGZ
					      ? "estargz" : "zstd:chunked");
	r = strata_image_resolve(c->st, o->from, o->platform, &c->img, c->err);
	/* from a registry: its layers are pulled (the view and the new
	 * manifest need them) */
	if (r == 0 && c->img->source)
		r = strata_cache_ensure(c->st, c->img, NULL, c->err);
	if (r < 0)
		return r;
	c->n_base = o->squash ? 0 : c->img->n_layers;
	if (o->from_digest && strcmp(o->from_digest, c->img->manifest_digest))
		return strata_err_set(c->err, -ESTALE, "%s now holds image %s, "
				      "not %s, the image the upper directory "
				      "sits on: nothing written", o->from,
				      c->img->manifest_digest, o->from_digest);
	r = load_config(c);
	if (r < 0)
		return r;
	/* the edits first: volumes they add are masked too */
	r = edit_config(c, false);
	if (r < 0)
		goto out;
	volumes = volume_list(c->cfg);
	json_object_put(c->cfg);
	c->cfg = NULL;
	r = open_dest(c->st, &c->d, c->err);
	if (r == 0)
		r = write_layer(c, volumes);
	if (r < 0)
		goto out;
	if (!c->res->layer && !o->n_edits && !o->allow_empty) {
		c->res->nothing = true;
		goto out;
	}
	if ((r = load_config(c)) < 0 || (r = edit_config(c, c->res->layer)) < 0)
		goto out;
	for (i = 0; i < c->n_base && c->d.kind != STRATA_REF_OCI_ARCHIVE &&
		    c->d.kind != STRATA_REF_DOCKER_ARCHIVE &&
		    c->d.kind != STRATA_REF_DIR &&
		    c->d.kind != STRATA_REF_DOCKER; i++) {
		r = strata_layoutw_copy(c->d.lw, c->img->blobs_fd,
					c->img->layers[i].digest,
					c->img->layers[i].size, c->err);
		if (r < 0)
			goto out;
	}
	strata_progress_done();
	r = write_manifest(c, mdigest, &msize);
	if (r < 0)
		goto out;
	snprintf(c->res->manifest_digest, sizeof(c->res->manifest_digest),
		 "%s", mdigest);
	if (c->d.kind == STRATA_REF_OCI || c->d.kind == STRATA_REF_STORE)
		r = strata_layoutw_tag(c->d.lw,
				       c->docker ? MT_DOCKER_MANIFEST
						 : MT_OCI_MANIFEST,
				       mdigest, msize,
				       (const char *const *)c->d.tags,
				       c->d.n_tags, c->err);
	else if (c->d.kind == STRATA_REF_DOCKER)
		r = push(c, mdigest, msize);
	else
		r = write_archive(c, mdigest, msize);
out:
	strata_strv_free(volumes);
	return r;
}

int strata_commit(struct strata_store *st, const struct strata_commit_opts *o,
		  struct strata_commit_result *res, struct strata_err *err)
{
	struct ctx c = { .st = st, .o = o, .res = res, .err = err };
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	struct strata_commit_opts o2;
	int r;

	memset(res, 0, sizeof(*res));
	if (!o->have_created && sde && *sde) {
		char *end;
		long long v = strtoll(sde, &end, 10);

		if (*end || v < 0)
			return strata_err_set(err, -EINVAL, "SOURCE_DATE_EPOCH "
					      "\"%s\" is not a number", sde);
		o2 = *o;
		o2.have_created = true;
		o2.created = v;
		c.o = o = &o2;
	}
	c.created = o->have_created ? o->created : (int64_t)time(NULL);
	r = strata_store_hold(st, err);
	if (r == 0)
		r = run(&c);
	if (c.cfg)
		json_object_put(c.cfg);
	if (c.img)
		strata_image_free(c.img);
	dest_free(st, &c.d);
	return r;
}
