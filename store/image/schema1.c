/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Docker image manifest v2, schema 1 (application/vnd.docker.distribution.
 * manifest.v1+json, and +prettyjws when signed), read by converting it to
 * an OCI manifest and config, as skopeo converts it on a copy:
 *
 *   - fsLayers and history are parallel arrays, newest first; each history
 *     entry's v1Compatibility is a JSON string with the layer's v1 "id" and
 *     "parent". The ids must be 64 hex digits and chain child -> parent;
 *     consecutive entries with the same id are one layer given twice (the
 *     newer is dropped), the same id anywhere else is refused.
 *   - The config is the newest v1Compatibility without its v1 fields (id,
 *     parent, parent_id, layer_id, throwaway, Size), with rootfs.diff_ids
 *     and a history built from every entry (created, created_by from
 *     container_config.Cmd joined by spaces, author, comment, throwaway as
 *     empty_layer). A v1Compatibility without "os" or "architecture" gets
 *     "linux" and the manifest's architecture (a config needs both).
 *   - throwaway layers are left out (they are empty tars); every other
 *     blob is read once here, verified against its blobSum, and hashed
 *     uncompressed: schema 1 names no diff_ids, and the layer cache is
 *     keyed by them.
 *
 * The config and manifest made are stored in the blob directory (the
 * store's: dir: and docker:// stage there) and are the same bytes for the
 * same schema 1 manifest, so the image has one digest however often it is
 * read. The JWS signature of a signed manifest is not a trust anchor
 * (anyone can sign with a key of their own): it is dropped, with a notice,
 * and the manifest's digest is that of the payload it signs, as
 * registries compute it.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unpack.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"

/* base64url without padding -> bytes (malloc'd). Return: 0 or -EBADMSG. */
static int b64url_decode(const char *s, size_t n, unsigned char **out,
			 size_t *len)
{
	cleanup_free char *t = malloc(n + 4);
	cleanup_free unsigned char *d = malloc(n + 4);
	size_t i, pad = (4 - n % 4) % 4;
	int got;

	if (!t || !d)
		return -ENOMEM;
	if (pad == 3)
		return -EBADMSG;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			   (c >= '0' && c <= '9')))
			return -EBADMSG;
		t[i] = c;
	}
	for (i = 0; i < pad; i++)
		t[n + i] = '=';
	t[n + pad] = '\0';
	got = EVP_DecodeBlock(d, (unsigned char *)t, (int)(n + pad));
	if (got < 0 || (size_t)got < pad)
		return -EBADMSG;
	*len = (size_t)got - pad;
	*out = take_ptr(&d);
	return 0;
}

int strata_schema1_unsign(const char *buf, size_t len, const char *what,
			  char **payload, size_t *plen, struct strata_err *err)
{
	struct json_object *doc = NULL, *sigs, *sig, *prot = NULL;
	cleanup_free unsigned char *pj = NULL, *tail = NULL;
	const char *p64, *tail64;
	size_t pjlen, taillen;
	int64_t flen;
	char *out;
	int r;

	r = strata_json_parse(buf, len, what, &doc, err);
	if (r < 0)
		return r;
	r = strata_json_array(doc, "signatures", false, &sigs, what, err);
	if (r == -ENOENT) {
		json_object_put(doc);
		return 0;
	}
	if (r < 0)
		goto out;
	sig = json_object_array_length(sigs) ?
		json_object_array_get_idx(sigs, 0) : NULL;
	if (!sig || !json_object_is_type(sig, json_type_object) ||
	    strata_json_string(sig, "protected", true, &p64, what, NULL) < 0 ||
	    b64url_decode(p64, strlen(p64), &pj, &pjlen) < 0 ||
	    strata_json_parse((char *)pj, pjlen, what, &prot, NULL) < 0 ||
	    strata_json_int64(prot, "formatLength", true, 1, (int64_t)len,
			      &flen, what, NULL) < 0 ||
	    strata_json_string(prot, "formatTail", true, &tail64, what,
			       NULL) < 0 ||
	    b64url_decode(tail64, strlen(tail64), &tail, &taillen) < 0 ||
	    taillen > 64) {
		r = strata_err_set(err, -EBADMSG, "%s: malformed JWS "
				   "signature block (signatures[0].protected)",
				   what);
		goto out;
	}
	out = malloc((size_t)flen + taillen + 1);
	if (!out) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(out, buf, (size_t)flen);
	memcpy(out + flen, tail, taillen);
	out[(size_t)flen + taillen] = '\0';
	*payload = out;
	*plen = (size_t)flen + taillen;
	strata_warn("%s: a signed Docker schema 1 manifest: its JWS signature "
		    "is not checked (it is no trust anchor); the layers are "
		    "verified against its digests", what);
	r = 1;
out:
	if (prot)
		json_object_put(prot);
	json_object_put(doc);
	return r;
}

struct s1layer {
	struct json_object *compat;	/* parsed v1Compatibility (owned) */
	const char *blobsum;		/* borrowed from the manifest */
	bool throwaway;
};

static void s1layers_free(struct s1layer *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].compat)
			json_object_put(v[i].compat);
	free(v);
}

static bool hex64(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == 64;
}

/* Parse fsLayers/history into @out (newest first), deduplicated and
 * checked as described at the top. */
static int parse_layers(struct json_object *doc, const char *what,
			struct s1layer **out, size_t *n_out,
			struct strata_err *err)
{
	struct json_object *fs, *hist;
	struct s1layer *v;
	size_t n, i, k;
	int r;

	if ((r = strata_json_array(doc, "fsLayers", true, &fs, what, err)) < 0 ||
	    (r = strata_json_array(doc, "history", true, &hist, what, err)) < 0)
		return r;
	n = json_object_array_length(fs);
	if (n != json_object_array_length(hist))
		return strata_err_set(err, -EBADMSG, "%s: %zu fsLayers but %zu "
				      "history entries (they must pair up)",
				      what, n, json_object_array_length(hist));
	if (n == 0)
		return strata_err_set(err, -EBADMSG, "%s: no fsLayers", what);
	v = calloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct json_object *f = json_object_array_get_idx(fs, i);
		struct json_object *h = json_object_array_get_idx(hist, i), *t;
		const char *compat;
		char w[300];

		snprintf(w, sizeof(w), "%s: fsLayers[%zu]", what, i);
		if (!json_object_is_type(f, json_type_object) ||
		    (r = strata_json_string(f, "blobSum", true, &v[i].blobsum,
					    w, err)) < 0)
			goto bad;
		if (strata_digest_validate(v[i].blobsum,
					   strlen(v[i].blobsum)) < 0) {
			r = strata_err_set(err, -EBADMSG, "%s: invalid blobSum "
					   "\"%s\"", w, v[i].blobsum);
			goto bad;
		}
		snprintf(w, sizeof(w), "%s: history[%zu].v1Compatibility",
			 what, i);
		if (!json_object_is_type(h, json_type_object) ||
		    (r = strata_json_string(h, "v1Compatibility", true, &compat,
					    w, err)) < 0) {
			r = strata_err_set(err, -EBADMSG, "%s: missing", w);
			goto bad;
		}
		r = strata_json_parse(compat, strlen(compat), w, &v[i].compat,
				      err);
		if (r < 0)
			goto bad;
		if (!json_object_is_type(v[i].compat, json_type_object)) {
			r = strata_err_set(err, -EBADMSG, "%s: not a JSON "
					   "object", w);
			goto bad;
		}
		if (json_object_object_get_ex(v[i].compat, "throwaway", &t) && t) {
			if (!json_object_is_type(t, json_type_boolean)) {
				r = strata_err_set(err, -EBADMSG, "%s: "
						   "\"throwaway\" is not a "
						   "boolean", w);
				goto bad;
			}
			v[i].throwaway = json_object_get_boolean(t);
		}
	}
	/* ids: 64 hex, each the parent of the one before, the base's
	 * parent empty; a repeated id only right after itself */
	for (i = 0; i < n; i++) {
		const char *id = NULL, *parent = NULL, *next = NULL;
		char w[300];

		snprintf(w, sizeof(w), "%s: history[%zu].v1Compatibility",
			 what, i);
		strata_json_string(v[i].compat, "id", false, &id, w, NULL);
		strata_json_string(v[i].compat, "parent", false, &parent, w,
				   NULL);
		if (!id || !hex64(id)) {
			r = strata_err_set(err, -EBADMSG, "%s: invalid image id "
					   "\"%s\"", w, id ? id : "");
			goto bad;
		}
		if (i + 1 < n)
			strata_json_string(v[i + 1].compat, "id", false, &next,
					   w, NULL);
		if (i + 1 == n && parent && *parent) {
			r = strata_err_set(err, -EBADMSG, "%s: the base layer "
					   "has a parent", w);
			goto bad;
		}
		for (k = i + 2; k < n; k++) {
			const char *o = NULL;

			strata_json_string(v[k].compat, "id", false, &o, w, NULL);
			if (o && !strcmp(o, id) && (!next || strcmp(next, id))) {
				r = strata_err_set(err, -EBADMSG, "%s: id %s "
						   "appears more than once", w,
						   id);
				goto bad;
			}
		}
		if (next && strcmp(next, id) &&
		    (!parent || strcmp(parent, next))) {
			r = strata_err_set(err, -EBADMSG, "%s: parent \"%s\" "
					   "is not the next entry's id %s", w,
					   parent ? parent : "", next);
			goto bad;
		}
	}
	/* drop the newer of two consecutive entries with one id */
	for (i = n - 1; i-- > 0;) {
		const char *a = NULL, *b = NULL;

		strata_json_string(v[i].compat, "id", false, &a, what, NULL);
		strata_json_string(v[i + 1].compat, "id", false, &b, what, NULL);
		if (strcmp(a, b))
			continue;
		json_object_put(v[i].compat);
		memmove(&v[i], &v[i + 1], (n - i - 1) * sizeof(*v));
		n--;
	}
	*out = v;
	*n_out = n;
	return 0;
bad:
	s1layers_free(v, n);
	return r;
}

static void add_str(struct json_object *o, const char *key, const char *s)
{
	if (s && *s)
		json_object_object_add(o, key, json_object_new_string(s));
}

/* The history entry of v1Compatibility @c. */
static struct json_object *history_entry(struct json_object *c, bool empty)
{
	struct json_object *h = json_object_new_object(), *cc, *cmd;
	const char *s = NULL;

	if (strata_json_string(c, "created", false, &s, "", NULL) == 0)
		add_str(h, "created", s);
	if (json_object_object_get_ex(c, "container_config", &cc) && cc &&
	    json_object_is_type(cc, json_type_object) &&
	    json_object_object_get_ex(cc, "Cmd", &cmd) &&
	    json_object_is_type(cmd, json_type_array)) {
		size_t i, n = json_object_array_length(cmd), len = 0;
		char *by = NULL;

		for (i = 0; i < n; i++) {
			const char *a = json_object_get_string(
				json_object_array_get_idx(cmd, i));
			size_t al = a ? strlen(a) : 0;
			char *nb = realloc(by, len + al + 2);

			if (!nb)
				break;
			by = nb;
			if (i)
				by[len++] = ' ';
			memcpy(by + len, a ? a : "", al);
			len += al;
			by[len] = '\0';
		}
		add_str(h, "created_by", by);
		free(by);
	}
	if (strata_json_string(c, "author", false, &s, "", NULL) == 0)
		add_str(h, "author", s);
	if (strata_json_string(c, "comment", false, &s, "", NULL) == 0)
		add_str(h, "comment", s);
	if (empty)
		json_object_object_add(h, "empty_layer",
				       json_object_new_boolean(1));
	return h;
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

static const char *layer_type(int comp)
{
	return comp == STRATA_COMP_GZIP
		       ? "application/vnd.oci.image.layer.v1.tar+gzip"
	       : comp == STRATA_COMP_ZSTD
		       ? "application/vnd.oci.image.layer.v1.tar+zstd"
		       : "application/vnd.oci.image.layer.v1.tar";
}

/* Fetch (if missing) and read layer blob @digest: its diff_id, size and
 * compression. */
static int layer_info(int blobs_fd, const char *digest, strata_fetch_fn fetch,
		      void *ctx, char *diff_id, int64_t *size, int *comp,
		      struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	cleanup_fd int fd = -1;
	int r;

	strata_blob_relpath(digest, rel, sizeof(rel));
	if (faccessat(blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		r = fetch(ctx, digest, -1,
			  "application/vnd.docker.image.rootfs.diff.tar.gzip",
			  err);
		if (r < 0)
			return r;
	}
	fd = openat(blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return strata_err_set(err, -errno, "layer %s: %s", digest,
				      strerror(errno));
	return strata_blob_diff_id(fd, digest, -1, STRATA_COMP_SNIFF,
				   64ull << 30, diff_id, comp, size, err);
}

static int put_json(int blobs_fd, struct json_object *o, char *digest,
		    int64_t *size)
{
	size_t len;
	const char *s = json_object_to_json_string_length(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

	if (!s)
		return -ENOMEM;
	*size = (int64_t)len;
	return strata_blob_put(blobs_fd, s, len, digest);
}

int strata_schema1_convert(int blobs_fd, const char *what,
			   struct json_object *doc, strata_fetch_fn fetch,
			   void *ctx, struct json_object **desc_out,
			   struct strata_err *err)
{
	static const char *const drop[] = { "id", "parent", "parent_id",
					    "layer_id", "throwaway", "Size" };
	struct json_object *cfg = NULL, *man = NULL, *diff_ids = NULL;
	struct json_object *hist = NULL, *mlayers = NULL, *rootfs;
	struct s1layer *v = NULL;
	char digest[STRATA_DIGEST_MAX];
	const char *arch = NULL;
	int64_t size;
	size_t n = 0, i, k;
	int r;

	if (!fetch)
		return strata_err_set(err, -EOPNOTSUPP, "%s: a Docker schema 1 "
				      "manifest in an OCI layout (read schema "
				      "1 from dir: or docker://)", what);
	r = strata_json_int64(doc, "schemaVersion", true, 0, 100, &size, what,
			      err);
	if (r < 0)
		return r;
	if (size != 1)
		return strata_err_set(err, -EBADMSG, "%s: a Docker schema 1 "
				      "media type but schemaVersion %lld", what,
				      (long long)size);
	r = parse_layers(doc, what, &v, &n, err);
	if (r < 0)
		return r;
	r = strata_json_string(doc, "architecture", false, &arch, what, err);
	if (r < 0 && r != -ENOENT)
		goto out;
	cfg = json_object_new_object();
	man = json_object_new_object();
	diff_ids = json_object_new_array();
	hist = json_object_new_array();
	mlayers = json_object_new_array();
	if (!cfg || !man || !diff_ids || !hist || !mlayers) {
		r = -ENOMEM;
		goto out;
	}
	json_object_object_foreach(v[0].compat, key, val) {
		for (k = 0; k < ARRAY_SIZE(drop); k++)
			if (!strcmp(key, drop[k]))
				break;
		if (k == ARRAY_SIZE(drop))
			json_object_object_add(cfg, key, json_object_get(val));
	}
	if (!json_object_object_get_ex(cfg, "architecture", NULL) && arch)
		json_object_object_add(cfg, "architecture",
				       json_object_new_string(arch));
	if (!json_object_object_get_ex(cfg, "os", NULL))
		json_object_object_add(cfg, "os", json_object_new_string("linux"));
	/* oldest first */
	for (i = n; i-- > 0;) {
		char diff_id[STRATA_DIGEST_MAX];
		int comp;

		json_object_array_add(hist, history_entry(v[i].compat,
							  v[i].throwaway));
		if (v[i].throwaway)
			continue;
		r = layer_info(blobs_fd, v[i].blobsum, fetch, ctx, diff_id,
			       &size, &comp, err);
		if (r < 0) {
			strata_err_wrap(err, r, "%s: fsLayers[%zu]", what, i);
			goto out;
		}
		json_object_array_add(diff_ids, json_object_new_string(diff_id));
		json_object_array_add(mlayers, desc_new(layer_type(comp),
							v[i].blobsum, size));
	}
	strata_progress_done();
	rootfs = json_object_new_object();
	json_object_object_add(rootfs, "type", json_object_new_string("layers"));
	json_object_object_add(rootfs, "diff_ids", diff_ids);
	diff_ids = NULL;
	json_object_object_add(cfg, "rootfs", rootfs);
	json_object_object_add(cfg, "history", hist);
	hist = NULL;
	r = put_json(blobs_fd, cfg, digest, &size);
	if (r < 0)
		goto out;
	json_object_object_add(man, "schemaVersion", json_object_new_int(2));
	json_object_object_add(man, "mediaType",
			       json_object_new_string(MT_OCI_MANIFEST));
	json_object_object_add(man, "config", desc_new(MT_OCI_CONFIG, digest,
						       size));
	json_object_object_add(man, "layers", mlayers);
	mlayers = NULL;
	r = put_json(blobs_fd, man, digest, &size);
	if (r < 0)
		goto out;
	*desc_out = desc_new(MT_OCI_MANIFEST, digest, size);
out:
	if (r < 0 && !strata_err_isset(err))
		strata_err_set(err, r, "%s: %s", what, strerror(-r));
	if (diff_ids)
		json_object_put(diff_ids);
	if (hist)
		json_object_put(hist);
	if (mlayers)
		json_object_put(mlayers);
	if (cfg)
		json_object_put(cfg);
	if (man)
		json_object_put(man);
	s1layers_free(v, n);
	return r;
}
