/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pushing to a registry (OCI distribution spec, "Push"): the docker://
 * destination of commit and copy.
 *
 * The manifest is pushed verbatim (its digest is what the source had);
 * an index pushes each child manifest first, by digest. Before that,
 * every blob it names (config, then layers) is made present:
 *
 *   HEAD /v2/NAME/blobs/DIGEST     200: the registry has it, skip it
 *   POST .../blobs/uploads/?mount=DIGEST&from=OTHER
 *                                  when the blob was pulled from another
 *                                  repository of this registry (the store
 *                                  remembers where: ROOT/origins/): 201 is
 *                                  done, 202 opens an upload, used next
 *   POST .../blobs/uploads/        202 and a Location, which may be
 *                                  relative and carries the registry's
 *                                  state in its query: kept as given
 *   PUT LOCATION&digest=DIGEST     monolithic, with the whole blob; or
 *   PATCH LOCATION (Content-Range) chunked, each answer's Location next;
 *                                  chunks at least OCI-Chunk-Min-Length;
 *                                  a 416 asks GET LOCATION for the Range
 *                                  the registry holds and goes on there;
 *                                  then PUT LOCATION&digest= with no body
 *
 * Blobs above the chunk size ($STRATA_PUSH_CHUNK_SIZE, 32 MiB by
 * default) go in chunks, smaller ones in one PUT. (A single POST with
 * ?digest= is optional for registries; we do not rely on it.) The
 * manifest is PUT with its media type under each tag; a registry's
 * Docker-Content-Digest that differs from ours is refused. The token asks
 * for repository:NAME:pull,push, and pull on each mount's source.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "registry.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define CHUNK_DEFAULT (32 << 20)
#define MAX_416 8

struct push {
	struct strata_store *st;
	const struct strata_push_opts *o;
	struct strata_reg *reg;
	const int *blob_fds;
	size_t n_blob_fds;
	struct strata_push_result *res;
	/* progress: done and idx are updated by the blob threads
	 * (atomics), the rest before they start */
	uint64_t total;
	int64_t done;
	struct timespec start;
	int idx, n;
};

/* One blob, pushed by one thread. */
struct job {
	struct push *p;
	const char *digest;
	int64_t size;
	int64_t counted;	/* its bytes in p->done */
	int idx;
	int ret;
	struct strata_err err;
};

/* This blob's bytes at the registry are @n now. */
static void job_count(struct job *j, int64_t n)
{
	__atomic_add_fetch(&j->p->done, n - j->counted, __ATOMIC_RELAXED);
	j->counted = n;
}

/* ---- where a blob came from ---- */

static void origin_name(const char *digest, char *out, size_t cap)
{
	char rel[STRATA_DIGEST_MAX + 8];

	strata_blob_relpath(digest, rel, sizeof(rel));
	for (char *c = rel; *c; c++)
		if (*c == '/')
			*c = '-';
	snprintf(out, cap, "%s", rel);
}

void strata_origin_record(struct strata_store *st, const char *digest,
			  const char *registry, const char *repo)
{
	char name[STRATA_DIGEST_MAX + 8], tmp[STRATA_DIGEST_MAX + 40];
	cleanup_free char *line = NULL;
	int fd, n;

	if (mkdirat(st->root_fd, "origins", 0755) < 0 && errno != EEXIST)
		return;
	origin_name(digest, name, sizeof(name));
	n = asprintf(&line, "%s\n%s\n", registry, repo);
	if (n < 0) {
		line = NULL;
		return;
	}
	snprintf(tmp, sizeof(tmp), "origins/.%s.%d", name, (int)getpid());
	fd = openat(st->root_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0644);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)n) == n) {
		char dst[STRATA_DIGEST_MAX + 16];

		snprintf(dst, sizeof(dst), "origins/%s", name);
		close(fd);
		renameat(st->root_fd, tmp, st->root_fd, dst);
		return;
	}
	close(fd);
	unlinkat(st->root_fd, tmp, 0);
}

/* The repository of this registry that @digest was pulled from, if it is
 * another one than reg->repo. Caller frees. */
static char *origin_repo(struct push *p, const char *digest)
{
	char name[STRATA_DIGEST_MAX + 8], path[STRATA_DIGEST_MAX + 16];
	char buf[1024], *nl, *repo;
	cleanup_fd int fd = -1;
	ssize_t n;

	origin_name(digest, name, sizeof(name));
	snprintf(path, sizeof(path), "origins/%s", name);
	fd = openat(p->st->root_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	nl = strchr(buf, '\n');
	if (!nl)
		return NULL;
	*nl = '\0';
	repo = nl + 1;
	nl = strchr(repo, '\n');
	if (!nl || strcmp(buf, p->reg->name))
		return NULL;
	*nl = '\0';
	if (!strcmp(repo, p->reg->repo))
		return NULL;
	return strdup(repo);
}

/* ---- progress ---- */

static void progress_cb(void *ctx, uint64_t bytes)
{
	struct job *j = ctx;
	struct push *p = j->p;
	struct timespec now;
	double secs, rate;
	int64_t done;
	char what[160];

	job_count(j, j->counted + (int64_t)bytes);
	done = __atomic_load_n(&p->done, __ATOMIC_RELAXED);
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - p->start.tv_sec) +
	       (double)(now.tv_nsec - p->start.tv_nsec) / 1e9;
	rate = secs > 0 ? (double)done / secs / (1 << 20) : 0;
	snprintf(what, sizeof(what), "pushing blob %d/%d %.19s %.1f MiB/s",
		 j->idx, p->n, j->digest, rate);
	strata_progress(what, done > 0 ? (uint64_t)done : 0, p->total);
}

/* ---- one blob ---- */

static int open_blob(struct push *p, const char *digest, int64_t size,
		     int *out, struct strata_err *err)
{
	char rel[STRATA_DIGEST_MAX + 8];
	struct stat sb;

	strata_blob_relpath(digest, rel, sizeof(rel));
	for (size_t i = 0; i < p->n_blob_fds; i++) {
		int fd = openat(p->blob_fds[i], rel, O_RDONLY | O_CLOEXEC);

		if (fd < 0)
			continue;
		if (fstat(fd, &sb) < 0 || sb.st_size != size) {
			close(fd);
			return strata_err_set(err, -EBADMSG, "blob %s: %lld "
					      "bytes here, the descriptor says "
					      "%lld", digest,
					      (long long)sb.st_size,
					      (long long)size);
		}
		*out = fd;
		return 0;
	}
	return strata_err_set(err, -ENOENT, "blob %s: not in the store (pull "
			      "the image's layers first)", digest);
}

/* @loc with "digest=@digest" added to its query. Caller frees. */
static char *with_digest(const char *loc, const char *digest)
{
	char *s;

	if (asprintf(&s, "%s%sdigest=%s", loc, strchr(loc, '?') ? "&" : "?",
		     digest) < 0)
		return NULL;
	return s;
}

static int chunk_size(void)
{
	const char *e = getenv("STRATA_PUSH_CHUNK_SIZE");
	char *end;
	long v;

	if (!e || !*e)
		return CHUNK_DEFAULT;
	v = strtol(e, &end, 10);
	return *end || v < 1 || v > (1L << 30) ? CHUNK_DEFAULT : (int)v;
}

static int upload_chunked(struct job *j, int fd, char *loc, size_t loc_cap,
			  int64_t min, const char *what, struct strata_err *err)
{
	struct strata_reg *reg = j->p->reg;
	const char *digest = j->digest;
	int64_t size = j->size;
	struct strata_reg_resp resp;
	uint64_t off = 0, chunk = (uint64_t)chunk_size();
	int n416 = 0, r;

	if (min > 0 && (uint64_t)min > chunk)
		chunk = (uint64_t)min;
	while (off < (uint64_t)size) {
		uint64_t n = (uint64_t)size - off < chunk ? (uint64_t)size - off
							   : chunk;
		char cr[80];
		struct strata_reg_req q = {
			.method = "PATCH", .url = loc, .body_fd = fd,
			.body_off = off, .body_len = n,
			.headers = { "Content-Type: application/octet-stream",
				     cr },
			.ok_status = { 416 },
			.progress = progress_cb, .progress_ctx = j,
		};

		snprintf(cr, sizeof(cr), "Content-Range: %llu-%llu",
			 (unsigned long long)off,
			 (unsigned long long)(off + n - 1));
		r = strata_reg_request(reg, &q, &resp, what, err);
		if (r < 0)
			return r;
		if (resp.status == 416) {
			struct strata_reg_req g = { .method = "GET", .url = loc,
						    .ok_status = { 204 } };
			uint64_t next = 0;

			if (++n416 > MAX_416)
				return strata_err_set(err, -EPROTO, "registry "
					"%s: repository %s: %s: the upload "
					"keeps refusing its chunks (HTTP 416)",
					reg->name, reg->repo, what);
			r = strata_reg_request(reg, &g, &resp, what, err);
			if (r < 0)
				return r;
			if (resp.range[0] && strata_reg_upload_range(resp.range, &next) < 0)
				return strata_err_set(err, -EPROTO, "registry "
					"%s: repository %s: %s: upload status "
					"with a bad Range", reg->name,
					reg->repo, what);
			if (next > (uint64_t)size)
				return strata_err_set(err, -EPROTO, "registry "
					"%s: repository %s: %s: the upload "
					"holds more than the blob", reg->name,
					reg->repo, what);
			off = next;
		} else {
			off += n;
		}
		/* what the registry holds, however often a chunk was sent */
		job_count(j, (int64_t)off);
		if (!resp.location[0])
			return strata_err_set(err, -EPROTO, "registry %s: "
					      "repository %s: %s: an upload "
					      "answer without Location",
					      reg->name, reg->repo, what);
		snprintf(loc, loc_cap, "%s", resp.location);
	}
	{
		cleanup_free char *url = with_digest(loc, digest);
		struct strata_reg_req q = { .method = "PUT", .url = url,
					    .body = "", .body_len = 0 };

		if (!url)
			return -ENOMEM;
		return strata_reg_request(reg, &q, &resp, what, err);
	}
}

static int push_blob(struct job *j, struct strata_err *err)
{
	struct push *p = j->p;
	struct strata_reg *reg = p->reg;
	const char *digest = j->digest;
	int64_t size = j->size;
	struct strata_reg_resp resp;
	cleanup_free char *from = NULL, *url = NULL;
	cleanup_fd int fd = -1;
	char path[STRATA_DIGEST_MAX + 64], what[STRATA_DIGEST_MAX + 16];
	char loc[sizeof(resp.location)];
	struct strata_err e1 = { 0 }, e2 = { 0 };
	int r;

	snprintf(what, sizeof(what), "blob %s", digest);
	j->idx = __atomic_add_fetch(&p->idx, 1, __ATOMIC_RELAXED);
	snprintf(path, sizeof(path), "blobs/%s", digest);
	{
		struct strata_reg_req q = { .method = "HEAD", .path = path,
					    .ok_status = { 404 } };

		r = strata_reg_request(reg, &q, &resp, what, err);
		if (r < 0)
			return r;
		if (resp.status == 200) {
			__atomic_add_fetch(&p->res->skipped, 1, __ATOMIC_RELAXED);
			job_count(j, size);
			return 0;
		}
	}
	from = origin_repo(p, digest);
	if (from) {
		struct strata_reg_req q = { .method = "POST", .body = "" };

		if (asprintf(&url, "%s/v2/%s/blobs/uploads/?mount=%s&from=%s",
			     reg->base, reg->repo, digest, from) < 0) {
			url = NULL;
			return -ENOMEM;
		}
		q.url = url;
		r = strata_reg_request(reg, &q, &resp, what, err);
		if (r < 0)
			return r;
		if (resp.status == 201) {
			__atomic_add_fetch(&p->res->mounted, 1, __ATOMIC_RELAXED);
			job_count(j, size);
			return 0;
		}
	} else {
		struct strata_reg_req q = { .method = "POST", .body = "",
					    .path = "blobs/uploads/" };

		r = strata_reg_request(reg, &q, &resp, what, err);
		if (r < 0)
			return r;
	}
	/* the bytes are needed now (not for a HEAD hit or a mount) */
	r = open_blob(p, digest, size, &fd, &e1);
	if (r == -ENOENT && p->o->fetch) {
		r = p->o->fetch(p->o->fetch_ctx, digest, size, &e2);
		if (r == 0)
			r = open_blob(p, digest, size, &fd, err);
		else if (err)
			*err = e2;
	} else if (r < 0 && err) {
		*err = e1;
	}
	if (r < 0)
		return r;
	if (resp.status != 202 || !resp.location[0])
		return strata_err_set(err, -EPROTO, "registry %s: repository "
				      "%s: %s: the upload was not opened "
				      "(HTTP %ld%s)", reg->name, reg->repo,
				      what, resp.status, resp.location[0] ? ""
				      : ", no Location");
	snprintf(loc, sizeof(loc), "%s", resp.location);
	__atomic_add_fetch(&p->res->uploaded, 1, __ATOMIC_RELAXED);
	/* a registry's minimum chunk only matters to blobs sent in chunks */
	if (size > chunk_size() && size > resp.chunk_min)
		return upload_chunked(j, fd, loc, sizeof(loc), resp.chunk_min,
				      what, err);
	free(url);
	url = with_digest(loc, digest);
	if (!url)
		return -ENOMEM;
	{
		struct strata_reg_req q = {
			.method = "PUT", .url = url, .body_fd = fd,
			.body_len = (uint64_t)size,
			.headers = { "Content-Type: application/octet-stream" },
			.progress = progress_cb, .progress_ctx = j,
		};

		r = strata_reg_request(reg, &q, &resp, what, err);
		/* a retried body counts once */
		job_count(j, r == 0 ? size : 0);
		return r;
	}
}

/* ---- manifests ---- */

static int put_manifest(struct push *p, const char *ref, const char *mt,
			const char *buf, size_t len, const char *digest,
			struct strata_err *err)
{
	struct strata_reg *reg = p->reg;
	struct strata_reg_resp resp;
	char path[300], ct[300], what[300];
	struct strata_reg_req q = { .method = "PUT", .path = path,
				    .headers = { ct }, .body = buf,
				    .body_len = len };
	int r;

	snprintf(path, sizeof(path), "manifests/%s", ref);
	snprintf(ct, sizeof(ct), "Content-Type: %s", mt);
	snprintf(what, sizeof(what), "manifest %s", ref);
	r = strata_reg_request(reg, &q, &resp, what, err);
	if (r < 0)
		return r;
	if (resp.docker_digest[0] && strcmp(resp.docker_digest, digest)) {
		char pd[100];

		return strata_err_set(err, -EBADMSG, "registry %s: repository "
				      "%s: %s: stored as %s, not %s", reg->name,
				      reg->repo, what,
				      strata_printable(resp.docker_digest,
						       strlen(resp.docker_digest),
						       pd, sizeof(pd)), digest);
	}
	return 0;
}

struct blobref {
	const char *digest;
	int64_t size;
};

static int collect(struct json_object *m, struct blobref *out, size_t cap,
		   size_t *n, const char *mdigest, struct strata_err *err)
{
	struct json_object *cfg, *layers;
	struct strata_desc d;
	size_t i;
	int r;

	*n = 0;
	if (json_object_object_get_ex(m, "config", &cfg)) {
		r = strata_desc_parse(cfg, &d, "config", err);
		if (r < 0)
			return strata_err_wrap(err, r, "manifest %s", mdigest);
		out[(*n)++] = (struct blobref){ d.digest, d.size };
	}
	if (!json_object_object_get_ex(m, "layers", &layers) ||
	    !json_object_is_type(layers, json_type_array))
		return 0;
	for (i = 0; i < json_object_array_length(layers); i++) {
		if (*n >= cap)
			return strata_err_set(err, -E2BIG, "manifest %s: too "
					      "many layers", mdigest);
		r = strata_desc_parse(json_object_array_get_idx(layers, i), &d,
				      "layer", err);
		if (r < 0)
			return strata_err_wrap(err, r, "manifest %s", mdigest);
		out[(*n)++] = (struct blobref){ d.digest, d.size };
	}
	return 0;
}

static int read_manifest(struct push *p, const char *digest, int64_t size,
			 char **out, struct strata_err *err)
{
	for (size_t i = 0; i < p->n_blob_fds; i++) {
		int r = strata_blob_read(p->blob_fds[i], digest, size,
					 STRATA_MANIFEST_MAX, out, NULL);

		if (r != -ENOENT)
			return r < 0 ? strata_err_set(err, r, "manifest %s: %s",
						      digest, strerror(-r))
				     : 0;
	}
	return strata_err_set(err, -ENOENT, "manifest %s: not in the store",
			      digest);
}

#define MAX_BLOBS 1024
#define PUSH_THREADS 4

struct pool {
	struct job *jobs;
	size_t n, next;		/* next: atomic */
	bool failed;		/* atomic: stop taking jobs */
};

static void *blob_worker(void *arg)
{
	struct pool *pl = arg;

	for (;;) {
		size_t i = __atomic_fetch_add(&pl->next, 1, __ATOMIC_RELAXED);

		if (i >= pl->n || __atomic_load_n(&pl->failed, __ATOMIC_RELAXED))
			return NULL;
		pl->jobs[i].ret = push_blob(&pl->jobs[i], &pl->jobs[i].err);
		if (pl->jobs[i].ret < 0)
			__atomic_store_n(&pl->failed, true, __ATOMIC_RELAXED);
	}
}

/* The blobs of one manifest, a few at a time (the registry's answers,
 * not the bytes, are what a small push waits for); the first failure in
 * manifest order is the one reported. */
static int push_blobs(struct push *p, const struct blobref *b, size_t n,
		      struct strata_err *err)
{
	cleanup_free struct job *jobs = calloc(n ? n : 1, sizeof(*jobs));
	struct pool pl = { .jobs = jobs, .n = n };
	pthread_t th[PUSH_THREADS];
	int nt = 0, r = 0;
	size_t i;

	if (!jobs)
		return -ENOMEM;
	if (!n)
		return 0;
	for (i = 0; i < n; i++)
		jobs[i] = (struct job){ .p = p, .digest = b[i].digest,
					.size = b[i].size };
	while (nt < PUSH_THREADS && (size_t)nt < n - 1 &&
	       pthread_create(&th[nt], NULL, blob_worker, &pl) == 0)
		nt++;
	blob_worker(&pl);
	while (nt > 0)
		pthread_join(th[--nt], NULL);
	for (i = 0; i < n && r == 0; i++)
		if (jobs[i].ret < 0) {
			r = jobs[i].ret;
			if (err && !err->code)
				*err = jobs[i].err;
		}
	return r;
}

/* Blobs of manifest @buf, then (for an index) its children by digest.
 * The manifest itself is left to the caller. */
static int push_tree(struct push *p, const char *buf, size_t len,
		     const char *digest, int depth, struct strata_err *err)
{
	struct json_object *m = NULL, *mans;
	cleanup_free struct blobref *b = calloc(MAX_BLOBS, sizeof(*b));
	size_t n = 0, i;
	int r;

	if (!b)
		return -ENOMEM;
	if (depth > 4)
		return strata_err_set(err, -ELOOP, "manifest %s: indexes "
				      "nested too deep", digest);
	r = strata_json_parse(buf, len, "manifest", &m, err);
	if (r < 0)
		return r;
	if (json_object_object_get_ex(m, "manifests", &mans) &&
	    json_object_is_type(mans, json_type_array)) {
		for (i = 0; r == 0 && i < json_object_array_length(mans); i++) {
			cleanup_free char *child = NULL;
			struct strata_desc d;

			r = strata_desc_parse(json_object_array_get_idx(mans, i),
					      &d, "manifest", err);
			if (r == 0)
				r = read_manifest(p, d.digest, d.size, &child,
						  err);
			if (r == 0)
				r = push_tree(p, child, (size_t)d.size,
					      d.digest, depth + 1, err);
			if (r == 0)
				r = put_manifest(p, d.digest, d.media_type ?
						 d.media_type :
						 MT_OCI_MANIFEST, child,
						 (size_t)d.size, d.digest, err);
		}
		goto out;
	}
	r = collect(m, b, MAX_BLOBS, &n, digest, err);
	for (i = 0; r == 0 && i < n; i++)
		p->total += (uint64_t)b[i].size;
	p->n += (int)n;
	if (r == 0)
		r = push_blobs(p, b, n, err);
out:
	json_object_put(m);
	return r;
}

/* The other repositories of this registry whose blobs may be mounted:
 * known before the first request so one token covers them. */
static void mount_sources(struct push *p, const char *buf, size_t len)
{
	struct json_object *m = NULL, *layers;
	size_t i;

	if (strata_json_parse(buf, len, "manifest", &m, NULL) < 0)
		return;
	if (json_object_object_get_ex(m, "layers", &layers) &&
	    json_object_is_type(layers, json_type_array))
		for (i = 0; i < json_object_array_length(layers); i++) {
			struct strata_desc d;
			char *from;
			int k;

			if (strata_desc_parse(json_object_array_get_idx(layers,
						i), &d, "layer", NULL) < 0)
				continue;
			from = origin_repo(p, d.digest);
			if (!from)
				continue;
			for (k = 0; k < p->reg->n_mount_from; k++)
				if (!strcmp(p->reg->mount_from[k], from))
					break;
			if (k == p->reg->n_mount_from &&
			    k < (int)ARRAY_SIZE(p->reg->mount_from))
				p->reg->mount_from[p->reg->n_mount_from++] =
					take_ptr(&from);
			free(from);
		}
	json_object_put(m);
}

int strata_push(struct strata_store *st, const struct strata_push_opts *o,
		struct strata_push_result *res, struct strata_err *err)
{
	cleanup_(strata_ref_freep) struct strata_ref *ref = NULL;
	struct push p = { .st = st, .o = o, .blob_fds = o->blob_fds,
			  .n_blob_fds = o->n_blob_fds, .res = res };
	char digest[STRATA_DIGEST_MAX];
	int r;

	memset(res, 0, sizeof(*res));
	r = strata_ref_parse(o->dest, &ref, err);
	if (r < 0)
		return r;
	if (ref->kind != STRATA_REF_DOCKER)
		return strata_err_set(err, -EINVAL, "%s: not a docker:// "
				      "reference", o->dest);
	if (o->manifest_len > STRATA_MANIFEST_MAX)
		return strata_err_set(err, -EFBIG, "manifest of %zu bytes: "
				      "registries take at most %u",
				      o->manifest_len, STRATA_MANIFEST_MAX);
	strata_sha256(o->manifest, o->manifest_len, digest);
	if (ref->digest && strcmp(ref->digest, digest))
		return strata_err_set(err, -EINVAL, "%s: the manifest's digest "
				      "is %s", o->dest, digest);
	r = strata_reg_open(ref, st->reg_opts, &p.reg, err);
	if (r < 0)
		return r;
	p.reg->push = true;
	clock_gettime(CLOCK_MONOTONIC, &p.start);
	mount_sources(&p, o->manifest, o->manifest_len);
	r = push_tree(&p, o->manifest, o->manifest_len, digest, 0, err);
	strata_progress_done();
	if (r == 0 && ref->tag)
		r = put_manifest(&p, ref->tag, o->media_type, o->manifest,
				 o->manifest_len, digest, err);
	for (size_t i = 0; r == 0 && i < o->n_tags; i++)
		r = put_manifest(&p, o->tags[i], o->media_type, o->manifest,
				 o->manifest_len, digest, err);
	if (r == 0 && !ref->tag && !o->n_tags)
		r = put_manifest(&p, digest, o->media_type, o->manifest,
				 o->manifest_len, digest, err);
	if (r == 0) {
		snprintf(res->manifest_digest, sizeof(res->manifest_digest),
			 "%s", digest);
		res->bytes = p.done;
	}
	strata_reg_free(p.reg);
	return r;
}
