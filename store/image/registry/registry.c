/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pulling from a registry (OCI distribution spec, "Pull"): the docker://
 * transport behind strata_image_resolve.
 *
 * Resolve: GET /v2/ (which tells the auth scheme, and whether plain HTTP
 * must be used for an insecure registry), then the manifest by tag or
 * digest with an Accept list of the four manifest types. The manifest is
 * at most STRATA_MANIFEST_MAX bytes, and its digest is checked against
 * the reference's @DIGEST and against Docker-Content-Digest when the
 * registry sends one. It is stored under its digest in the store's blob
 * directory and handed to the same index -> platform -> manifest ->
 * config walk every other transport uses (layout.c), which asks this file
 * for each blob it lacks: a child manifest, the config.
 *
 * Layers are not fetched by resolve (inspect needs none). The image
 * carries a blob source that the layer cache calls for a layer blob the
 * store lacks: a thread downloads it while the cache unpacks it, through
 * a socket pair, so one pass over the network hashes, stores,
 * decompresses and unpacks. The download goes to ROOT/tmp/pull-ALG-HEX
 * (kept when interrupted: the next pull sends those bytes first and asks
 * the registry for the rest with Range), is hashed as it arrives, refused
 * past the descriptor's size, and renamed into the blob directory only
 * once size and digest match. Nothing is tagged by any of this: import
 * tags after the cache has verified every layer.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "registry.h"

#define ACCEPT_MANIFESTS \
	"application/vnd.oci.image.index.v1+json, " \
	"application/vnd.oci.image.manifest.v1+json, " \
	"application/vnd.docker.distribution.manifest.list.v2+json, " \
	"application/vnd.docker.distribution.manifest.v2+json, " \
	"application/vnd.docker.distribution.manifest.v1+prettyjws, " \
	"application/vnd.docker.distribution.manifest.v1+json"

void strata_reg_free(struct strata_reg *reg)
{
	strata_reg_pool_free(reg);
	pthread_mutex_destroy(&reg->lock);
	pthread_mutex_destroy(&reg->connect_lock);
	pthread_cond_destroy(&reg->renewed);
	free(reg->name);
	free(reg->host);
	free(reg->repo);
	free(reg->cert_dir);
	free(reg->user);
	free(reg->pass);
	free(reg->creds_from);
	free(reg->realm);
	free(reg->service);
	free(reg->token);
	for (int i = 0; i < reg->n_mount_from; i++)
		free(reg->mount_from[i]);
	free(reg);
}

static void reg_freep(struct strata_reg **r)
{
	if (*r)
		strata_reg_free(*r);
}

static long env_long(const char *name, long def, long min, long max)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return def;
	v = strtol(s, &end, 10);
	if (*end || v < min || v > max)
		return def;
	return v;
}

static int probe(struct strata_reg *reg, struct strata_err *err)
{
	struct strata_reg_resp resp;

	return strata_reg_get(reg, "/", NULL, NULL, &resp, "API probe (/v2/)",
			      err);
}

int strata_reg_open(const struct strata_ref *ref,
		    const struct strata_reg_opts *o, struct strata_reg **out,
		    struct strata_err *err)
{
	cleanup_(reg_freep) struct strata_reg *reg = calloc(1, sizeof(*reg));
	int r;

	if (!reg)
		return -ENOMEM;
	pthread_mutex_init(&reg->lock, NULL);
	pthread_mutex_init(&reg->connect_lock, NULL);
	pthread_cond_init(&reg->renewed, NULL);
	reg->name = strdup(ref->registry);
	reg->repo = strdup(ref->path);
	reg->host = strdup(!strcmp(ref->registry, "docker.io")
				   ? "registry-1.docker.io" : ref->registry);
	if (!reg->name || !reg->repo || !reg->host)
		return -ENOMEM;
	reg->stall = env_long("STRATA_REGISTRY_TIMEOUT", 30, 1, 3600);
	reg->retries = (int)env_long("STRATA_REGISTRY_RETRIES", 4, 0, 20);
	reg->insecure = (o && o->tls_verify == 0) ||
			strata_reg_conf_insecure(ref->registry);
	if (o && o->cert_dir) {
		reg->cert_dir = strdup(o->cert_dir);
		if (!reg->cert_dir)
			return -ENOMEM;
	} else {
		reg->cert_dir = strata_reg_certs_dir(reg->host);
	}
	r = strata_reg_find_creds(reg, o ? o->creds : NULL, err);
	if (r < 0)
		return r;
	*out = take_ptr(&reg);
	return 0;
}

/* The /v2/ probe, before the first request: it tells whether the
 * registry answers, over which scheme, and how it authenticates. */
int strata_reg_connect(struct strata_reg *reg, struct strata_err *err)
{
	int r;

	snprintf(reg->base, sizeof(reg->base), "https://%s", reg->host);
	reg->probed = true;
	r = probe(reg, err);
	if (r < 0 && reg->insecure && r != -EACCES) {
		/* as containers/image: an insecure registry may speak
		 * plain HTTP; if it answers there, its answer counts */
		struct strata_err e2 = { 0 };

		snprintf(reg->base, sizeof(reg->base), "http://%s", reg->host);
		r = probe(reg, &e2);
		if (err && (r == 0 || (r != -ECONNREFUSED && r != -EPROTO &&
				       r != -ETIMEDOUT)))
			*err = e2;
	}
	if (r < 0) {
		if (r == -EPROTO && !reg->insecure && err) {
			size_t n = strlen(err->msg);

			snprintf(err->msg + n, sizeof(err->msg) - n,
				 " (a registry with its own CA: put it in "
				 "certs.d or use --cert-dir; plain HTTP: "
				 "--tls-verify=false or insecure = true in "
				 "registries.conf)");
		}
		reg->probed = false;
		return r;
	}
	return 0;
}

/* ---- bodies in memory ---- */

struct memsink {
	struct strata_reg_sink s;
	char *buf;
	size_t len, max;
};

static void mem_reset(struct strata_reg_sink *s)
{
	((struct memsink *)s)->len = 0;
}

static int mem_write(struct strata_reg_sink *s, const void *buf, size_t n)
{
	struct memsink *m = (struct memsink *)s;
	char *nb;

	if (m->len + n > m->max)
		return strata_err_set(&s->err, -EFBIG, "larger than the %zu "
				      "bytes allowed", m->max);
	nb = realloc(m->buf, m->len + n + 1);
	if (!nb)
		return -ENOMEM;
	m->buf = nb;
	memcpy(m->buf + m->len, buf, n);
	m->len += n;
	m->buf[m->len] = '\0';
	return 0;
}

/* Store @len bytes as blob @digest (already verified) in @blobs_fd. */
static int put_blob(int blobs_fd, const char *digest, const void *buf,
		    size_t len)
{
	char rel[STRATA_DIGEST_MAX + 8];

	strata_blob_relpath(digest, rel, sizeof(rel));
	if (faccessat(blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	return strata_write_atomic(blobs_fd, rel, buf, len, 0644);
}

static const char *digest_alg(const char *digest, char *out, size_t cap)
{
	const char *c = strchr(digest, ':');

	snprintf(out, cap, "%.*s", c ? (int)(c - digest) : 0, digest);
	return out;
}

/*
 * GET manifests/@ref into memory, verify, store. @want: the digest it
 * must have, or NULL (by tag). Fills @digest_out and @mt_out.
 */
static int fetch_manifest(struct strata_reg *reg, int blobs_fd,
			  const char *ref, const char *want, int64_t want_size,
			  char *digest_out, char *mt_out, size_t mt_cap,
			  size_t *len_out, struct strata_err *err)
{
	struct memsink m = { .s.write = mem_write, .s.reset = mem_reset,
			     .max = STRATA_MANIFEST_MAX };
	struct strata_reg_resp resp;
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	char path[STRATA_DIGEST_MAX + 200], what[STRATA_DIGEST_MAX + 200];
	char got[STRATA_DIGEST_MAX], alg[16], pd[STRATA_DIGEST_MAX + 8];
	int r;

	snprintf(path, sizeof(path), "manifests/%s", ref);
	snprintf(what, sizeof(what), "manifest %s", ref);
	if (want_size > (int64_t)STRATA_MANIFEST_MAX)
		return strata_err_set(err, -EFBIG, "registry %s: repository "
				      "%s: %s: %lld bytes, more than the %u "
				      "allowed", reg->name, reg->repo, what,
				      (long long)want_size,
				      STRATA_MANIFEST_MAX);
	r = strata_reg_get(reg, path, ACCEPT_MANIFESTS, &m.s, &resp, what,
			   err);
	if (r == -ENOENT && !want && err &&
	    !strstr(err->msg, "no repository")) {
		/* some registries (distribution 2.8) answer MANIFEST_UNKNOWN
		 * for a repository that does not exist: ask its tag list */
		struct memsink t = { .s.write = mem_write,
				     .s.reset = mem_reset, .max = 1u << 20 };
		struct strata_err e2 = { 0 };

		if (strata_reg_get(reg, "tags/list", NULL, &t.s, &resp,
				   "tag list", &e2) == -ENOENT) {
			err->code = 0;
			strata_err_set(err, -ENOENT, "registry %s: no "
				       "repository %s (and so no manifest %s)",
				       reg->name, reg->repo, ref);
		}
		free(t.buf);
	}
	if (r < 0)
		goto out;
	if (strstr(resp.content_type, "manifest.v1")) {
		/* a signed schema 1: its digest is that of what it signs,
		 * and that is what is kept (schema1.c) */
		char w[STRATA_DIGEST_MAX + 900], *payload;
		size_t plen;

		snprintf(w, sizeof(w), "registry %s: repository %s: %s",
			 reg->name, reg->repo, what);
		r = strata_schema1_unsign(m.buf ? m.buf : "", m.len, w,
					  &payload, &plen, err);
		if (r < 0)
			goto out;
		if (r == 1) {
			free(m.buf);
			m.buf = payload;
			m.len = plen;
		}
	}
	r = strata_hasher_new_alg(want ? digest_alg(want, alg, sizeof(alg))
				       : "sha256", &h);
	if (r < 0) {
		r = strata_err_set(err, r, "registry %s: %s: cannot verify "
				   "this digest algorithm", reg->name, what);
		goto out;
	}
	strata_hasher_update(h, m.buf ? m.buf : "", m.len);
	strata_hasher_final(h, got);
	if (want && strcmp(got, want)) {
		r = strata_err_set(err, -EBADMSG, "registry %s: repository %s: "
				   "%s: digest mismatch: content hashes to %s",
				   reg->name, reg->repo, what, got);
		goto out;
	}
	if (want_size >= 0 && (int64_t)m.len != want_size) {
		r = strata_err_set(err, -EBADMSG, "registry %s: repository %s: "
				   "%s: size mismatch: descriptor says %lld "
				   "bytes, got %zu", reg->name, reg->repo, what,
				   (long long)want_size, m.len);
		goto out;
	}
	/* Docker-Content-Digest is advisory, but a registry that names
	 * another digest than what it served is refused */
	if (resp.docker_digest[0] &&
	    strata_digest_validate(resp.docker_digest,
				   strlen(resp.docker_digest)) == 0 &&
	    !strncmp(resp.docker_digest, got,
		     (size_t)(strchr(got, ':') - got) + 1) &&
	    strcmp(resp.docker_digest, got)) {
		r = strata_err_set(err, -EBADMSG, "registry %s: repository %s: "
				   "%s: Docker-Content-Digest %s but the "
				   "content hashes to %s", reg->name,
				   reg->repo, what,
				   strata_printable(resp.docker_digest,
						    strlen(resp.docker_digest),
						    pd, sizeof(pd)), got);
		goto out;
	}
	{
		/* the media type: Content-Type without parameters, else the
		 * document's own mediaType (checked again by layout.c) */
		char *semi = strchr(resp.content_type, ';');
		struct json_object *doc = NULL, *v;

		if (semi)
			*semi = '\0';
		snprintf(mt_out, mt_cap, "%s", resp.content_type);
		if (strata_json_parse(m.buf ? m.buf : "", m.len, what, &doc,
				      err) < 0) {
			r = -EBADMSG;
			goto out;
		}
		if (json_object_object_get_ex(doc, "mediaType", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    (!strata_media_is_manifest(mt_out) &&
		     !strata_media_is_index(mt_out)))
			snprintf(mt_out, mt_cap, "%s",
				 json_object_get_string(v));
		json_object_put(doc);
	}
	r = put_blob(blobs_fd, got, m.buf ? m.buf : "", m.len);
	if (r < 0) {
		r = strata_err_set(err, r, "store: %s", strerror(-r));
		goto out;
	}
	strcpy(digest_out, got);
	*len_out = m.len;
out:
	free(m.buf);
	return r;
}

/* A small blob (config) into memory, verified, stored. */
static int fetch_small_blob(struct strata_reg *reg, int blobs_fd,
			    const char *digest, int64_t size,
			    struct strata_err *err)
{
	struct memsink m = { .s.write = mem_write, .s.reset = mem_reset };
	struct strata_reg_resp resp;
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	char path[STRATA_DIGEST_MAX + 16], what[STRATA_DIGEST_MAX + 16];
	char got[STRATA_DIGEST_MAX];
	int r;

	snprintf(what, sizeof(what), "blob %s", digest);
	if (size < 0 || size > (int64_t)STRATA_JSON_MAX)
		return strata_err_set(err, -EFBIG, "registry %s: repository "
				      "%s: %s: %lld bytes is too large for a "
				      "config", reg->name, reg->repo, what,
				      (long long)size);
	m.max = (size_t)size;
	snprintf(path, sizeof(path), "blobs/%s", digest);
	r = strata_reg_get(reg, path, NULL, &m.s, &resp, what, err);
	if (r < 0)
		goto out;
	r = strata_hasher_new(digest, &h);
	if (r < 0)
		goto out;
	strata_hasher_update(h, m.buf ? m.buf : "", m.len);
	strata_hasher_final(h, got);
	if ((int64_t)m.len != size || strcmp(got, digest)) {
		r = strata_err_set(err, -EBADMSG, "registry %s: repository %s: "
				   "%s: %s mismatch: %s", reg->name, reg->repo,
				   what, (int64_t)m.len != size ? "size"
								 : "digest",
				   (int64_t)m.len != size ? "body shorter than "
				   "the descriptor says" : got);
		goto out;
	}
	r = put_blob(blobs_fd, digest, m.buf ? m.buf : "", m.len);
out:
	free(m.buf);
	return r;
}

/* ---- the blob source the layer cache uses ---- */

struct reg_source {
	struct strata_blob_source base;
	struct strata_reg *reg;
	int blobs_fd, tmp_fd;
	/* Range requests (a lazy mount's reads) in flight, at most
	 * max_fetch: more wait for a slot, so a burst of first reads
	 * cannot open a connection per FUSE thread */
	pthread_mutex_t fetch_lock;
	pthread_cond_t fetch_free;
	int fetching, max_fetch;
};

struct pull {
	struct strata_reg_sink s;	/* first: the sink */
	struct reg_source *src;
	char digest[STRATA_DIGEST_MAX];
	int64_t size;
	int sock;			/* to the reader, or -1 */
	int file;			/* tmp/pull-ALG-HEX */
	int lock;
	char partial[STRATA_DIGEST_MAX + 16];
	struct strata_hasher *h;
	pthread_t thread;
	bool started;
	int ret;
	struct strata_err err;
	uint64_t flushed;		/* writeback started up to here */
	/* open_file(): the reader reads the file as it is written */
	bool file_mode;
	struct strata_arrival written;	/* bytes of the file */
	atomic_bool cancelled;		/* the reader stopped */
};

/* Writeback of a download is started every WRITEBACK_STEP bytes as they
 * arrive (sync_file_range, which does not wait), so the fsync before the
 * blob is stored waits for the last step, not for the whole blob: the
 * bench image's 217 MB layer waited 0.6 s in that fsync, its mount with
 * it. Where the call is refused, the fsync does it all, as before. */
#define WRITEBACK_STEP (8u << 20)

static void start_writeback(struct pull *p, uint64_t end)
{
	if (end - p->flushed < WRITEBACK_STEP)
		return;
	sync_file_range(p->file, (off_t)p->flushed,
			(off_t)(end - p->flushed), SYNC_FILE_RANGE_WRITE);
	p->flushed = end;
}

static int send_all(int sock, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = send(sock, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EPIPE || errno == ECONNRESET
				       ? -ECANCELED : -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* open_file()'s reader is told of the bytes written in steps (a write
 * is some 16 KiB; the pass waits for a MiB at a time), and at the end */
#define PUBLISH_STEP (1u << 20)

/* The wait open_file() hands out (store.h). */
static int file_wait(void *ctx, uint64_t end)
{
	return strata_arrival_wait(&((struct pull *)ctx)->written, end);
}

static int pull_write(struct strata_reg_sink *s, const void *buf, size_t n)
{
	struct pull *p = (struct pull *)s;
	int r;

	if (s->offset + n > (uint64_t)p->size)
		return strata_err_set(&s->err, -EBADMSG, "the body is longer "
				      "than the descriptor's %lld bytes: "
				      "refused", (long long)p->size);
	if (pwrite(p->file, buf, n, (off_t)s->offset) != (ssize_t)n)
		return strata_err_set(&s->err, errno ? -errno : -EIO,
				      "writing %s: %s", p->partial,
				      strerror(errno ? errno : EIO));
	strata_hasher_update(p->h, buf, n);
	start_writeback(p, s->offset + n);
	if (p->file_mode) {
		uint64_t end = s->offset + n;

		if (atomic_load(&p->cancelled))
			return strata_err_set(&s->err, -ECANCELED,
					      "the reader stopped");
		if (end - strata_arrival_have(&p->written) >= PUBLISH_STEP ||
		    end == (uint64_t)p->size)
			strata_arrival_advance(&p->written, end);
	}
	if (p->sock >= 0) {
		r = send_all(p->sock, buf, n);
		if (r < 0)
			return strata_err_set(&s->err, r, "the reader stopped");
	}
	return 0;
}

/* Feed what an earlier, interrupted pull left (resume across runs). */
static int replay_partial(struct pull *p)
{
	char *buf = malloc(1 << 20);
	struct stat st;
	uint64_t off = 0;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	if (fstat(p->file, &st) < 0) {
		free(buf);
		return -errno;
	}
	if ((uint64_t)st.st_size > (uint64_t)p->size &&
	    ftruncate(p->file, 0) < 0)
		r = -errno;
	else if ((uint64_t)st.st_size <= (uint64_t)p->size)
		off = (uint64_t)st.st_size;
	for (uint64_t done = 0; r == 0 && done < off;) {
		size_t want = off - done > (1 << 20) ? 1 << 20
						      : (size_t)(off - done);
		ssize_t n = pread(p->file, buf, want, (off_t)done);

		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		strata_hasher_update(p->h, buf, (size_t)n);
		if (p->sock >= 0)
			r = send_all(p->sock, buf, (size_t)n);
		done += (uint64_t)n;
	}
	free(buf);
	p->s.offset = off;
	if (r == 0 && p->file_mode)
		strata_arrival_advance(&p->written, off);
	return r;
}

static int pull_run(struct pull *p)
{
	struct strata_reg *reg = p->src->reg;
	struct strata_reg_resp resp;
	char path[STRATA_DIGEST_MAX + 16], what[STRATA_DIGEST_MAX + 16];
	char got[STRATA_DIGEST_MAX], rel[STRATA_DIGEST_MAX + 8];
	int r;

	snprintf(what, sizeof(what), "blob %s", p->digest);
	r = replay_partial(p);
	if (r < 0)
		return strata_err_set(&p->err, r, "registry %s: repository %s: "
				      "%s: %s", reg->name, reg->repo, what,
				      r == -ECANCELED ? "the reader stopped"
						      : strerror(-r));
	if (p->s.offset < (uint64_t)p->size) {
		snprintf(path, sizeof(path), "blobs/%s", p->digest);
		r = strata_reg_get(reg, path, NULL, &p->s, &resp, what,
				   &p->err);
		if (r < 0)
			return r;
	}
	if (p->s.offset != (uint64_t)p->size)
		return strata_err_set(&p->err, -EBADMSG, "registry %s: "
				      "repository %s: %s: size mismatch: "
				      "descriptor says %lld bytes, got %llu",
				      reg->name, reg->repo, what,
				      (long long)p->size,
				      (unsigned long long)p->s.offset);
	strata_hasher_final(p->h, got);
	if (strcmp(got, p->digest)) {
		/* nothing of it is kept: the next pull starts over */
		unlinkat(p->src->tmp_fd, p->partial, 0);
		return strata_err_set(&p->err, -EBADMSG, "registry %s: "
				      "repository %s: %s: digest mismatch: "
				      "content hashes to %s: refused",
				      reg->name, reg->repo, what, got);
	}
	strata_blob_relpath(p->digest, rel, sizeof(rel));
	if (fsync(p->file) < 0 ||
	    renameat(p->src->tmp_fd, p->partial, p->src->blobs_fd, rel) < 0)
		return strata_err_set(&p->err, -errno, "store: blob %s: %s",
				      p->digest, strerror(errno));
	fsync(p->src->blobs_fd);
	return 0;
}

static void *pull_thread(void *arg)
{
	struct pull *p = arg;

	p->ret = pull_run(p);
	if (p->file_mode)
		strata_arrival_end(&p->written, p->ret);
	if (p->sock >= 0) {
		close(p->sock);	/* the reader sees the end */
		p->sock = -1;
	}
	return NULL;
}

static void pull_free(struct pull *p)
{
	if (p->sock >= 0)
		close(p->sock);
	if (p->file >= 0)
		close(p->file);
	if (p->lock >= 0)
		close(p->lock);
	if (p->h)
		strata_hasher_free(p->h);
	strata_arrival_destroy(&p->written);
	free(p);
}

static int pull_new(struct reg_source *src, const struct strata_layer *l,
		    struct pull **out, struct strata_err *err)
{
	struct pull *p = calloc(1, sizeof(*p));
	char lockname[STRATA_DIGEST_MAX + 24];
	int r;

	if (!p)
		return -ENOMEM;
	p->sock = p->file = p->lock = -1;
	strata_arrival_init(&p->written);
	p->src = src;
	p->s.write = pull_write;
	p->s.resumable = true;
	snprintf(p->digest, sizeof(p->digest), "%s", l->digest);
	p->size = l->size;
	snprintf(p->partial, sizeof(p->partial), "pull-%s", l->digest);
	*strchr(p->partial, ':') = '-';
	snprintf(lockname, sizeof(lockname), "%s.lock", p->partial);
	r = strata_hasher_new(l->digest, &p->h);
	if (r < 0) {
		pull_free(p);
		return strata_err_set(err, r, "blob %s: cannot verify this "
				      "digest algorithm", l->digest);
	}
	/* two pulls of one blob take turns; the second finds it stored */
	p->lock = strata_lock_at(src->tmp_fd, lockname, true);
	if (p->lock < 0) {
		r = p->lock;
		pull_free(p);
		return strata_err_set(err, r, "store lock: %s", strerror(-r));
	}
	p->file = openat(src->tmp_fd, p->partial,
			 O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (p->file < 0) {
		r = -errno;
		pull_free(p);
		return strata_err_set(err, r, "store: %s", strerror(-r));
	}
	*out = p;
	return 0;
}

static int src_open(struct strata_blob_source *bs, const struct strata_layer *l,
		    void **handle, struct strata_err *err)
{
	struct reg_source *src = (struct reg_source *)bs;
	struct pull *p;
	int sv[2], r;

	r = pull_new(src, l, &p, err);
	if (r < 0)
		return r;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		pull_free(p);
		return r;
	}
	p->sock = sv[0];
	/* the writer never sees SIGPIPE; a reader that stops makes its
	 * send fail with EPIPE */
	shutdown(sv[0], SHUT_RD);
	shutdown(sv[1], SHUT_WR);
	if (pthread_create(&p->thread, NULL, pull_thread, p) != 0) {
		close(sv[1]);
		pull_free(p);
		return -EAGAIN;
	}
	p->started = true;
	*handle = p;
	return sv[1];
}

/* open(), the bytes delivered in the file the pull writes (store.h) */
static int src_open_file(struct strata_blob_source *bs,
			 const struct strata_layer *l, void **handle,
			 int (**wait)(void *ctx, uint64_t end),
			 struct strata_err *err)
{
	struct reg_source *src = (struct reg_source *)bs;
	struct pull *p;
	int r, fd;

	r = pull_new(src, l, &p, err);
	if (r < 0)
		return r;
	p->file_mode = true;
	fd = fcntl(p->file, F_DUPFD_CLOEXEC, 3);
	if (fd < 0) {
		r = -errno;
		pull_free(p);
		return r;
	}
	if (pthread_create(&p->thread, NULL, pull_thread, p) != 0) {
		close(fd);
		pull_free(p);
		return -EAGAIN;
	}
	p->started = true;
	*handle = p;
	*wait = file_wait;
	return fd;
}

static int src_finish(struct strata_blob_source *bs, void *handle,
		      int reader_ret, struct strata_err *err)
{
	struct pull *p = handle;
	int r;

	(void)bs;
	if (reader_ret < 0)	/* a pull into a file is told to stop */
		atomic_store(&p->cancelled, true);
	pthread_join(p->thread, NULL);
	r = p->ret;
	if (r == -ECANCELED && reader_ret < 0)
		r = 0;		/* the reader's error is the one to tell */
	if (r < 0)
		strata_err_set(err, r, "%s", p->err.msg);
	pull_free(p);
	return r;
}

static int src_fetch(struct strata_blob_source *bs, const struct strata_layer *l,
		     struct strata_err *err)
{
	struct reg_source *src = (struct reg_source *)bs;
	char rel[STRATA_DIGEST_MAX + 8];
	struct pull *p;
	int r;

	strata_blob_relpath(l->digest, rel, sizeof(rel));
	if (faccessat(src->blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	r = pull_new(src, l, &p, err);
	if (r < 0)
		return r;
	if (faccessat(src->blobs_fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		pull_free(p);
		return 0;
	}
	r = pull_run(p);
	if (r < 0)
		strata_err_set(err, r, "%s", p->err.msg);
	pull_free(p);
	return r;
}

/* A Range answer's body, into a caller's buffer of exactly its size. */
struct rangesink {
	struct strata_reg_sink s;	/* first */
	unsigned char *buf;
	size_t len, got;
	uint64_t off;
};

static int range_write(struct strata_reg_sink *s, const void *buf, size_t n)
{
	struct rangesink *r = (struct rangesink *)s;

	/* A registry or CDN that ignores Range answers 200 with the whole
	 * blob: refused at its first byte rather than read up to the
	 * range (a lazy layer would download most of its blob for each
	 * file); the whole blob when that is the range asked for is fine */
	if (r->got == 0 && s->status != 206 &&
	    !(r->off == 0 && s->length == (int64_t)r->len))
		return strata_err_set(&s->err, -EOPNOTSUPP, "the registry "
				      "ignores Range requests (HTTP %ld with "
				      "the whole blob): the blob cannot be "
				      "read lazily", s->status);
	if (n > r->len - r->got)
		return strata_err_set(&s->err, -EPROTO, "the registry sent "
				      "more than the range asked for");
	memcpy(r->buf + r->got, buf, n);
	r->got += n;
	return 0;
}

static void range_reset(struct strata_reg_sink *s)
{
	((struct rangesink *)s)->got = 0;
}

static int src_read_range(struct strata_blob_source *bs, const char *digest,
			  void *buf, size_t len, uint64_t off,
			  struct strata_err *err)
{
	struct reg_source *src = (struct reg_source *)bs;
	struct rangesink rs = { .s.write = range_write,
				.s.reset = range_reset, .buf = buf,
				.len = len, .off = off };
	struct strata_reg_resp resp;
	char path[STRATA_DIGEST_MAX + 16], range[80], what[STRATA_DIGEST_MAX + 40];
	struct strata_reg_req q = { .method = "GET", .path = path,
				    .sink = &rs.s, .body_fd = -1 };
	unsigned long long a = 0;
	int r;

	if (len == 0)
		return 0;
	snprintf(path, sizeof(path), "blobs/%s", digest);
	snprintf(range, sizeof(range), "Range: bytes=%llu-%llu",
		 (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	snprintf(what, sizeof(what), "blob %s (range)", digest);
	q.headers[0] = range;
	pthread_mutex_lock(&src->fetch_lock);
	while (src->fetching >= src->max_fetch)
		pthread_cond_wait(&src->fetch_free, &src->fetch_lock);
	src->fetching++;
	pthread_mutex_unlock(&src->fetch_lock);
	r = strata_reg_request(src->reg, &q, &resp, what, err);
	pthread_mutex_lock(&src->fetch_lock);
	src->fetching--;
	pthread_cond_signal(&src->fetch_free);
	pthread_mutex_unlock(&src->fetch_lock);
	if (r < 0)
		return r;	/* @err has the sink's message, if it refused */
	if (rs.got != len ||
	    (resp.status == 206 &&
	     (sscanf(resp.content_range, "bytes %llu-", &a) != 1 ||
	      a != off)))
		return strata_err_set(err, -EPROTO, "registry %s: blob %s: "
				      "the answer to a Range request is not "
				      "that range (status %ld)",
				      src->reg->name, digest, resp.status);
	return 0;
}

static void src_free(struct strata_blob_source *bs)
{
	struct reg_source *src = (struct reg_source *)bs;

	strata_reg_free(src->reg);
	close(src->blobs_fd);
	close(src->tmp_fd);
	pthread_mutex_destroy(&src->fetch_lock);
	pthread_cond_destroy(&src->fetch_free);
	free(src);
}

/* ---- resolve ---- */

struct fetch_ctx {
	struct strata_reg *reg;
	int blobs_fd, tmp_fd;
};

/* A layer blob whose size no manifest gave (schema 1): the registry's
 * Content-Length bounds the download, the digest verifies it. */
static int fetch_layer(struct fetch_ctx *f, const char *digest,
		       struct strata_err *err)
{
	struct reg_source rs = { .reg = f->reg, .blobs_fd = f->blobs_fd,
				 .tmp_fd = f->tmp_fd };
	struct strata_layer l = { .digest = (char *)digest };
	struct strata_reg_req q = { .method = "HEAD" };
	struct strata_reg_resp resp;
	char path[STRATA_DIGEST_MAX + 16], what[STRATA_DIGEST_MAX + 16];
	int r;

	snprintf(path, sizeof(path), "blobs/%s", digest);
	snprintf(what, sizeof(what), "blob %s", digest);
	q.path = path;
	r = strata_reg_request(f->reg, &q, &resp, what, err);
	if (r < 0)
		return r;
	if (resp.content_length < 0)
		return strata_err_set(err, -EPROTO, "registry %s: repository "
				      "%s: %s: no Content-Length", f->reg->name,
				      f->reg->repo, what);
	l.size = resp.content_length;
	return src_fetch(&rs.base, &l, err);
}

/* layout.c asks for a blob it lacks: a manifest or index, or a config */
static int fetch_missing(void *ctx, const char *digest, int64_t size,
			 const char *media_type, struct strata_err *err)
{
	struct fetch_ctx *f = ctx;
	char got[STRATA_DIGEST_MAX], mt[256];
	size_t len;

	if (size < 0)
		return fetch_layer(f, digest, err);
	if (strata_media_is_manifest(media_type) ||
	    strata_media_is_index(media_type) ||
	    strata_media_is_schema1(media_type))
		return fetch_manifest(f->reg, f->blobs_fd, digest, digest, size,
				      got, mt, sizeof(mt), &len, err);
	return fetch_small_blob(f->reg, f->blobs_fd, digest, size, err);
}

/* Manifest @want from the store, if there (verified, its media type
 * from its own mediaType field). Return: 0, -ENOENT. */
static int local_manifest(int blobs_fd, const char *want, char *digest_out,
			  char *mt_out, size_t mt_cap, size_t *len_out)
{
	char rel[STRATA_DIGEST_MAX + 8];
	struct json_object *doc = NULL, *v;
	cleanup_free char *buf = NULL;
	struct stat sb;
	int r;

	strata_blob_relpath(want, rel, sizeof(rel));
	if (fstatat(blobs_fd, rel, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(sb.st_mode) || sb.st_size > (off_t)STRATA_MANIFEST_MAX)
		return -ENOENT;
	r = strata_blob_read(blobs_fd, want, sb.st_size, STRATA_MANIFEST_MAX,
			     &buf, NULL);
	if (r < 0 || strata_json_parse(buf, (size_t)sb.st_size, "manifest",
				       &doc, NULL) < 0)
		return -ENOENT;
	r = 0;
	if (json_object_object_get_ex(doc, "mediaType", &v) &&
	    json_object_is_type(v, json_type_string))
		snprintf(mt_out, mt_cap, "%s", json_object_get_string(v));
	/* no mediaType (allowed for OCI documents; Docker's have one) */
	else if (json_object_object_get_ex(doc, "manifests", NULL))
		snprintf(mt_out, mt_cap, "%s",
			 "application/vnd.oci.image.index.v1+json");
	else if (json_object_object_get_ex(doc, "config", NULL))
		snprintf(mt_out, mt_cap, "%s",
			 "application/vnd.oci.image.manifest.v1+json");
	else
		r = -ENOENT;
	if (r == 0) {
		strcpy(digest_out, want);
		*len_out = (size_t)sb.st_size;
	}
	json_object_put(doc);
	return r;
}

int strata_registry_resolve(struct strata_store *st,
			    const struct strata_ref *ref,
			    const struct strata_platform *plat,
			    struct strata_image *img, struct strata_err *err)
{
	cleanup_(reg_freep) struct strata_reg *reg = NULL;
	struct reg_source *src;
	struct json_object *desc;
	struct fetch_ctx fc;
	char digest[STRATA_DIGEST_MAX], mt[256];
	size_t len;
	int r;

	r = strata_reg_open(ref, st->reg_opts, &reg, err);
	if (r < 0)
		return r;
	/* a manifest by digest that the store holds is that manifest: no
	 * registry needed (a commit of a docker:// mount, a second pull) */
	r = ref->digest ? local_manifest(st->blobs_fd, ref->digest, digest, mt,
					 sizeof(mt), &len) : -ENOENT;
	if (r == -ENOENT)
		r = fetch_manifest(reg, st->blobs_fd,
				   ref->digest ? ref->digest : ref->tag,
				   ref->digest, -1, digest, mt, sizeof(mt),
				   &len, err);
	if (r < 0)
		return r;
	if (!strata_media_is_manifest(mt) && !strata_media_is_index(mt) &&
	    !strata_media_is_schema1(mt)) {
		char pm[300];

		return strata_err_set(err, -EOPNOTSUPP,
				      "registry %s: repository %s: manifest "
				      "%s: unsupported media type \"%s\"%s",
				      reg->name, reg->repo,
				      ref->digest ? ref->digest : ref->tag,
				      strata_printable(mt, strlen(mt), pm,
						       sizeof(pm)), "");
	}
	desc = json_object_new_object();
	if (!desc)
		return -ENOMEM;
	json_object_object_add(desc, "mediaType", json_object_new_string(mt));
	json_object_object_add(desc, "digest", json_object_new_string(digest));
	json_object_object_add(desc, "size", json_object_new_int64((int64_t)len));
	fc.reg = reg;
	fc.blobs_fd = st->blobs_fd;
	fc.tmp_fd = st->tmp_fd;
	r = strata_image_from_desc_fetch(img, img->blobs_fd, desc, plat,
					 fetch_missing, &fc, err);
	json_object_put(desc);
	if (r < 0)
		return strata_err_wrap(err, r, "image %s", ref->text);
	/* where these blobs live: a push to another repository of this
	 * registry mounts them from here */
	for (size_t i = 0; i < img->n_layers; i++)
		strata_origin_record(st, img->layers[i].digest, reg->name,
				     reg->repo);
	src = calloc(1, sizeof(*src));
	if (!src)
		return -ENOMEM;
	src->blobs_fd = fcntl(st->blobs_fd, F_DUPFD_CLOEXEC, 3);
	src->tmp_fd = fcntl(st->tmp_fd, F_DUPFD_CLOEXEC, 3);
	if (src->blobs_fd < 0 || src->tmp_fd < 0) {
		r = -errno;
		if (src->blobs_fd >= 0)
			close(src->blobs_fd);
		if (src->tmp_fd >= 0)
			close(src->tmp_fd);
		free(src);
		return r;
	}
	pthread_mutex_init(&src->fetch_lock, NULL);
	pthread_cond_init(&src->fetch_free, NULL);
	src->max_fetch = st->reg_opts && st->reg_opts->fetchers > 0
			 ? st->reg_opts->fetchers : STRATA_FETCHERS_DEFAULT;
	src->base.open = src_open;
	src->base.open_file = src_open_file;
	src->base.finish = src_finish;
	src->base.fetch = src_fetch;
	src->base.read_range = src_read_range;
	src->base.free = src_free;
	src->reg = take_ptr(&reg);
	img->source = &src->base;
	return 0;
}
