/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Who uses the store, and strata gc.
 *
 * What gc may remove: a manifest index.json lists without a name (its tag
 * moved or was removed, strata_index_retag), and every blob and cached
 * layer (layers/ALG/HEX, by diff_id; layers/lazy/ALG-HEX.TOC, by blob)
 * that no named manifest reaches
 * (manifest -> config and layer blobs, config -> diff_ids; an index ->
 * its manifests). What it must not remove is what someone is using
 * without a name:
 *
 *  - Store users that write or read blobs and layers (import, commit,
 *    tag, inspect, a mount being set up) hold ROOT/gc.lock shared,
 *    strata_store_hold(), taken by strata_image_resolve(),
 *    strata_store_tag(), strata_cache_ensure() and strata_commit(), and
 *    kept until strata_store_free() (or strata_store_release()). gc takes
 *    it exclusive without waiting: while anyone holds it, gc removes
 *    nothing and says so (-EBUSY). So an import in progress, even a
 *    stopped one, is never broken; gc simply runs later. Holders never
 *    wait long for gc: it holds the lock only while it runs.
 *  - A mount uses its image for as long as it lives, so it must not hold
 *    the lock: it pins instead (strata_store_pin()), a file
 *    ROOT/pins/PID-N listing the blobs and diff_ids of each image it
 *    shows, flock'ed shared for the daemon's life. gc keeps everything a
 *    pin lists whose lock it cannot take (LOCK_EX | LOCK_NB fails while
 *    the daemon lives); a pin it can lock belonged to a dead process and
 *    is removed. A pin is written while the store is held, so gc never
 *    sees a pin file before its lock.
 *
 * Order, so that a killed gc leaves a valid store: index.json first
 * (replaced atomically, without the unnamed manifests it removes), then
 * those manifests' blobs, then the other blobs, then cached layers (each
 * renamed into tmp/ before it is deleted, so the cache never shows half a
 * layer), then leftovers in tmp/. Whatever a kill leaves is unreferenced
 * and removed by the next gc.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"

#define GC_LOCK "gc.lock"
#define PINS "pins"
#define INDEX_LOCK ".index.lock"

/* ROOT/gc.lock, read-only: flock needs no more, so users of a store that
 * root wrote into (a commit of a user's mount) can still take it. */
static int open_gc_lock(struct strata_store *st)
{
	int fd = openat(st->root_fd, GC_LOCK, O_RDONLY | O_CREAT | O_CLOEXEC |
			O_NOFOLLOW, 0644);

	return fd < 0 ? -errno : fd;
}

int strata_store_hold(struct strata_store *st, struct strata_err *err)
{
	int fd;

	if (st->hold_fd >= 0)
		return 0;
	fd = open_gc_lock(st);
	/* a store this user cannot write, nobody here can gc either */
	if (fd == -EROFS || fd == -EACCES)
		return 0;
	if (fd < 0)
		return strata_err_set(err, fd, "store %s: %s: %s", st->root,
				      GC_LOCK, strerror(-fd));
	while (flock(fd, LOCK_SH) < 0) {
		if (errno != EINTR) {
			int r = -errno;

			close(fd);
			return strata_err_set(err, r, "store %s: %s: %s",
					      st->root, GC_LOCK, strerror(-r));
		}
	}
	st->hold_fd = fd;
	return 0;
}

void strata_store_release(struct strata_store *st)
{
	if (st->hold_fd >= 0)
		close(st->hold_fd);
	st->hold_fd = -1;
}

/* Return: 0, 1 when the store cannot be written here, negative errno. */
static int open_pin(struct strata_store *st, struct strata_err *err)
{
	cleanup_fd int dfd = -1;
	unsigned n;
	int fd;

	if (mkdirat(st->root_fd, PINS, 0755) < 0 && errno != EEXIST) {
		/* read-only, or another user's: see strata_store_pin() */
		if (errno == EROFS || errno == EACCES)
			return 1;
		return strata_err_set(err, -errno, "store %s: %s: %s",
				      st->root, PINS, strerror(errno));
	}
	dfd = openat(st->root_fd, PINS, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		     O_CLOEXEC);
	if (dfd < 0 && errno == EACCES)
		return 1;
	if (dfd < 0)
		return strata_err_set(err, -errno, "store %s: %s: %s",
				      st->root, PINS, strerror(errno));
	for (n = 0; n < 1000; n++) {
		snprintf(st->pin_name, sizeof(st->pin_name), "%d-%u",
			 (int)getpid(), n);
		fd = openat(dfd, st->pin_name, O_WRONLY | O_CREAT | O_EXCL |
			    O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd >= 0)
			break;
		if (errno == EROFS || errno == EACCES)
			return 1;
		if (errno != EEXIST)
			return strata_err_set(err, -errno, "store %s: pin: %s",
					      st->root, strerror(errno));
	}
	if (fd < 0)
		return strata_err_set(err, -EEXIST, "store %s: no free pin "
				      "name", st->root);
	if (flock(fd, LOCK_SH) < 0) {
		int r = -errno;

		close(fd);
		unlinkat(dfd, st->pin_name, 0);
		return strata_err_set(err, r, "store %s: pin: %s", st->root,
				      strerror(-r));
	}
	st->pin_fd = fd;
	return 0;
}

static int pin_line(int fd, const char *kind, const char *digest)
{
	char line[STRATA_DIGEST_MAX + 16];
	int n = snprintf(line, sizeof(line), "%s %s\n", kind, digest);

	return strata_write_all(fd, line, (size_t)n);
}

int strata_store_pin(struct strata_store *st, const struct strata_image *img,
		     struct strata_err *err)
{
	size_t i;
	int r;

	r = strata_store_hold(st, err);
	if (r == 0 && st->pin_fd < 0)
		r = open_pin(st, err);
	if (r != 0)
		return r < 0 ? r : 0;
	r = pin_line(st->pin_fd, "blob", img->manifest_digest);
	if (r == 0)
		r = pin_line(st->pin_fd, "blob", img->config_digest);
	for (i = 0; r == 0 && i < img->n_layers; i++) {
		r = pin_line(st->pin_fd, "blob", img->layers[i].digest);
		if (r == 0 && img->layers[i].diff_id)
			r = pin_line(st->pin_fd, "layer",
				     img->layers[i].diff_id);
	}
	if (r < 0)
		return strata_err_set(err, r, "store %s: pin %s: %s", st->root,
				      st->pin_name, strerror(-r));
	return 0;
}

void strata_store_unpin(struct strata_store *st)
{
	char path[64];

	if (st->pin_fd < 0)
		return;
	/* by name while still locked: gc never takes a live pin for stale */
	snprintf(path, sizeof(path), "%s/%s", PINS, st->pin_name);
	unlinkat(st->root_fd, path, 0);
	close(st->pin_fd);
	st->pin_fd = -1;
}

/* ---- gc ---------------------------------------------------------------- */

struct set {
	char **v;
	size_t n, cap;
	bool sorted;
};

static int set_add(struct set *s, const char *str)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		char **v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n] = strdup(str);
	if (!s->v[s->n])
		return -ENOMEM;
	s->n++;
	s->sorted = false;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool set_has(struct set *s, const char *str)
{
	if (!s->n)
		return false;
	if (!s->sorted) {
		qsort(s->v, s->n, sizeof(*s->v), cmp_str);
		s->sorted = true;
	}
	return bsearch(&str, s->v, s->n, sizeof(*s->v), cmp_str);
}

static void set_free(struct set *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

struct gc {
	struct strata_store *st;
	struct strata_gc_result *res;
	struct strata_err *err;
	struct set blobs;	/* digests to keep */
	struct set layers;	/* diff_ids to keep */
	struct set pinned;	/* digests live pins name */
};

/* Read the pins: live ones into @g's keep sets, stale ones removed. */
static int read_pins(struct gc *g)
{
	cleanup_fd int dfd = openat(g->st->root_fd, PINS, O_RDONLY |
				    O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (dfd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(dup(dfd));
	if (!d)
		return -errno;
	while (r == 0 && (de = readdir(d))) {
		cleanup_fd int fd = -1;
		cleanup_free char *buf = NULL;
		char *line, *save = NULL;
		size_t len;

		if (de->d_name[0] == '.')
			continue;
		fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			/* its process is gone */
			unlinkat(dfd, de->d_name, 0);
			g->res->stale_pins++;
			continue;
		}
		if (errno != EWOULDBLOCK) {
			r = -errno;
			break;
		}
		g->res->live_pins++;
		r = strata_read_fd(fd, 64u << 20, &buf, &len);
		if (r < 0)
			break;
		for (line = strtok_r(buf, "\n", &save); line && r == 0;
		     line = strtok_r(NULL, "\n", &save)) {
			if (!strncmp(line, "blob ", 5)) {
				r = set_add(&g->blobs, line + 5);
				if (r == 0)
					r = set_add(&g->pinned, line + 5);
			} else if (!strncmp(line, "layer ", 6)) {
				r = set_add(&g->layers, line + 6);
			}
		}
	}
	closedir(d);
	return r;
}

/* Read JSON blob @digest of @size bytes. Caller puts *out. */
static int read_doc(struct gc *g, const char *digest, int64_t size,
		    struct json_object **out)
{
	cleanup_free char *buf = NULL;
	int r;

	r = strata_blob_read(g->st->blobs_fd, digest, size, STRATA_JSON_MAX,
			     &buf, g->err);
	if (r == 0)
		r = strata_json_parse(buf, (size_t)size, digest, out, g->err);
	return r;
}

/* Config @digest: its diff_ids name the cached layers to keep. */
static int mark_config(struct gc *g, const char *digest, int64_t size)
{
	struct json_object *doc = NULL, *rootfs, *arr;
	size_t i, n;
	int r;

	r = read_doc(g, digest, size, &doc);
	if (r == 0)
		r = strata_json_object(doc, "rootfs", true, &rootfs, digest,
				       g->err);
	if (r == 0)
		r = strata_json_array(rootfs, "diff_ids", true, &arr, digest,
				      g->err);
	n = r == 0 ? json_object_array_length(arr) : 0;
	for (i = 0; r == 0 && i < n; i++) {
		struct json_object *v = json_object_array_get_idx(arr, i);

		if (!json_object_is_type(v, json_type_string))
			r = strata_err_set(g->err, -EBADMSG, "config %s: "
					   "diff_ids: not a string", digest);
		else
			r = set_add(&g->layers, json_object_get_string(v));
	}
	if (doc)
		json_object_put(doc);
	return r;
}

/* Manifest @doc (@digest): its config, layer blobs and diff_ids. */
static int mark_manifest(struct gc *g, struct json_object *doc,
			 const char *digest)
{
	struct json_object *cfg, *arr;
	char cdigest[STRATA_DIGEST_MAX];
	struct strata_desc c;
	size_t i, n;
	int r;

	r = strata_json_object(doc, "config", true, &cfg, digest, g->err);
	if (r == 0)
		r = strata_desc_parse(cfg, &c, digest, g->err);
	if (r == 0)
		r = set_add(&g->blobs, c.digest);
	if (r == 0)
		r = strata_json_array(doc, "layers", true, &arr, digest,
				      g->err);
	n = r == 0 ? json_object_array_length(arr) : 0;
	for (i = 0; r == 0 && i < n; i++) {
		struct strata_desc l;

		r = strata_desc_parse(json_object_array_get_idx(arr, i), &l,
				      digest, g->err);
		if (r == 0)
			r = set_add(&g->blobs, l.digest);
	}
	if (r < 0)
		return r;
	snprintf(cdigest, sizeof(cdigest), "%s", c.digest);
	return mark_config(g, cdigest, c.size);
}

/* Mark what descriptor @desc reaches: the blob, and for a manifest its
 * config, layers and diff_ids, for an index its manifests. */
static int mark(struct gc *g, struct json_object *desc, int depth,
		const char *what)
{
	struct json_object *doc = NULL, *arr;
	struct strata_desc d;
	size_t i, n;
	int r;

	r = strata_desc_parse(desc, &d, what, g->err);
	if (r < 0)
		return r;
	r = set_add(&g->blobs, d.digest);
	if (r < 0 || (!strata_media_is_index(d.media_type) &&
		      !strata_media_is_manifest(d.media_type)))
		return r;
	if (depth > 4)
		return strata_err_set(g->err, -EBADMSG, "%s: indexes nested "
				      "too deep", what);
	r = read_doc(g, d.digest, d.size, &doc);
	if (r < 0)
		return r;
	if (strata_media_is_manifest(d.media_type)) {
		r = mark_manifest(g, doc, d.digest);
	} else {
		r = strata_json_array(doc, "manifests", true, &arr, d.digest,
				      g->err);
		n = r == 0 ? json_object_array_length(arr) : 0;
		for (i = 0; r == 0 && i < n; i++)
			r = mark(g, json_object_array_get_idx(arr, i),
				 depth + 1, d.digest);
	}
	json_object_put(doc);
	return r;
}

/* Bytes @name below @dirfd takes on disk (st_blocks), never following
 * symlinks; @files counts the files. */
static uint64_t du_at(int dirfd, const char *name, uint64_t *files)
{
	struct stat sb;
	struct dirent *de;
	uint64_t sum;
	DIR *d;
	int fd;

	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	sum = (uint64_t)sb.st_blocks * 512;
	if (!S_ISDIR(sb.st_mode)) {
		if (files)
			(*files)++;
		return sum;
	}
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (fd < 0)
		return sum;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return sum;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			sum += du_at(fd, de->d_name, files);
	closedir(d);
	return sum;
}

/* Rewrite index.json without the unnamed manifests nobody pins; their
 * descriptors go to @removed. */
static int prune_index(struct gc *g, struct json_object **removed)
{
	struct json_object *idx = NULL, *manifests, *keep;
	cleanup_fd int lock = -1;
	size_t i, n;
	const char *s;
	int r;

	*removed = json_object_new_array();
	if (!*removed)
		return -ENOMEM;
	lock = strata_lock_at(g->st->images_fd, INDEX_LOCK, true);
	if (lock < 0)
		return strata_err_set(g->err, lock, "store lock: %s",
				      strerror(-lock));
	if (faccessat(g->st->images_fd, "index.json", F_OK, 0) < 0)
		return 0;
	r = strata_store_index_load(g->st, &idx, g->err);
	if (r < 0)
		return r;
	r = strata_json_array(idx, "manifests", true, &manifests,
			      "store index.json", g->err);
	if (r < 0)
		goto out;
	keep = json_object_new_array();
	n = json_object_array_length(manifests);
	for (i = 0; i < n; i++) {
		struct json_object *m = json_object_array_get_idx(manifests, i);
		const char *name = strata_desc_ref_name(m);
		struct strata_desc d = { 0 };
		char what[300];

		snprintf(what, sizeof(what), "store image %s",
			 name ? name : "(untagged)");
		r = strata_desc_parse(m, &d, what, g->err);
		if (r == 0 && !name && !set_has(&g->pinned, d.digest)) {
			json_object_array_add(*removed, json_object_get(m));
			continue;
		}
		if (!name)
			g->res->kept_images++;
		if (r == 0)
			r = mark(g, m, 0, what);
		if (r < 0) {
			json_object_put(keep);
			r = strata_err_wrap(g->err, r, "%s (%s): nothing removed "
					    "(strata rmi it, then gc again)",
					    what, d.digest ? d.digest : "?");
			goto out;
		}
		json_object_array_add(keep, json_object_get(m));
	}
	if (!json_object_array_length(*removed)) {
		json_object_put(keep);
		goto out;
	}
	json_object_object_add(idx, "manifests", keep);
	s = json_object_to_json_string_length(
		idx, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	r = strata_write_atomic(g->st->images_fd, "index.json", s, n, 0644);
	if (r < 0)
		strata_err_set(g->err, r, "store index.json: %s", strerror(-r));
out:
	json_object_put(idx);
	return r;
}

static void remove_blob(struct gc *g, const char *digest)
{
	char rel[STRATA_DIGEST_MAX + 8];
	uint64_t bytes;

	strata_blob_relpath(digest, rel, sizeof(rel));
	bytes = du_at(g->st->blobs_fd, rel, NULL);
	if (unlinkat(g->st->blobs_fd, rel, 0) == 0) {
		g->res->blobs++;
		g->res->blob_bytes += bytes;
	}
}

static bool is_hex(const char *s, size_t n)
{
	size_t i;

	if (strlen(s) != n)
		return false;
	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* A killed writer's temporary file in @dirfd (blobs/, images/). */
static bool is_temp(const char *name, bool images)
{
	size_t n = strlen(name);

	if (!strncmp(name, ".strata-tmp-", 12))
		return true;
	if (images)	/* not .tmp-PID-oci-layout: any open writes it */
		return !strncmp(name, ".tmp-", 5) && n > 11 &&
		       !strcmp(name + n - 11, "-index.json");
	return !strncmp(name, ".tmp-", 5);
}

static void sweep_temps(struct gc *g, int dirfd, bool images)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		uint64_t bytes;

		if (!is_temp(de->d_name, images))
			continue;
		bytes = du_at(dirfd, de->d_name, NULL);
		if (unlinkat(dirfd, de->d_name, 0) == 0) {
			g->res->temps++;
			g->res->temp_bytes += bytes;
		}
	}
	closedir(d);
}

static void sweep_blobs(struct gc *g, const char *alg, size_t hexlen)
{
	int fd = openat(g->st->blobs_fd, alg, O_RDONLY | O_DIRECTORY |
			O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	char digest[300];

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (!is_hex(de->d_name, hexlen))
			continue;
		snprintf(digest, sizeof(digest), "%s:%s", alg, de->d_name);
		if (!set_has(&g->blobs, digest))
			remove_blob(g, digest);
	}
	closedir(d);
}

static void sweep_layers(struct gc *g, const char *alg, size_t hexlen)
{
	int fd = openat(g->st->layers_fd, alg, O_RDONLY | O_DIRECTORY |
			O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	char id[300], hex[200], tmp[300];

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		bool lock = n == hexlen + 5 &&
			    !strcmp(de->d_name + hexlen, ".lock");
		uint64_t bytes, files = 0;

		if (n >= sizeof(hex) || (!lock && n != hexlen))
			continue;
		memcpy(hex, de->d_name, hexlen);
		hex[hexlen] = '\0';
		if (!is_hex(hex, hexlen))
			continue;
		snprintf(id, sizeof(id), "%s:%s", alg, hex);
		if (set_has(&g->layers, id))
			continue;
		if (lock) {
			/* nobody unpacks: every unpacker holds the store */
			unlinkat(fd, de->d_name, 0);
			continue;
		}
		bytes = du_at(fd, de->d_name, &files);
		snprintf(tmp, sizeof(tmp), "gc-%s-%s", alg, hex);
		strata_rmtree_at(g->st->tmp_fd, tmp);
		if (renameat(fd, de->d_name, g->st->tmp_fd, tmp) < 0)
			continue;
		strata_rmtree_at(g->st->tmp_fd, tmp);
		g->res->layers++;
		g->res->layer_bytes += bytes;
	}
	closedir(d);
}

/* Shared content (layers/lazy/content/HEX, hardlinks of lazy layers'
 * content files) that no lazy layer links any more. */
static void sweep_shared(struct gc *g)
{
	int fd = openat(g->st->layers_fd, "lazy/content", O_RDONLY |
			O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct stat sb;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (fstatat(fd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(sb.st_mode) && sb.st_nlink == 1 &&
		    unlinkat(fd, de->d_name, 0) == 0)
			g->res->layer_bytes += (uint64_t)sb.st_blocks * 512;
	closedir(d);
}

/*
 * Lazy layers (layers/lazy/ALG-BLOBHEX.TOCHEX, store/layer/lazy.c) belong to
 * their blob: kept while a named manifest or a live pin keeps the blob,
 * removed with it. A lock file goes when its layer does.
 */
static void sweep_lazy(struct gc *g)
{
	int fd = openat(g->st->layers_fd, "lazy", O_RDONLY | O_DIRECTORY |
			O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	char digest[300], tmp[320];

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		const char *dash = strchr(de->d_name, '-');
		const char *dot = dash ? strchr(dash, '.') : NULL;
		size_t n = strlen(de->d_name);
		bool lock = n > 5 && !strcmp(de->d_name + n - 5, ".lock");
		uint64_t bytes, files = 0;

		if (!dash || !dot || n >= sizeof(digest))
			continue;	/* content/ is swept below */
		snprintf(digest, sizeof(digest), "%.*s", (int)(dot - dash - 1),
			 dash + 1);
		if (!is_hex(digest, strlen(digest)) || !digest[0])
			continue;
		snprintf(digest, sizeof(digest), "%.*s:%.*s",
			 (int)(dash - de->d_name), de->d_name,
			 (int)(dot - dash - 1), dash + 1);
		if (set_has(&g->blobs, digest))
			continue;
		if (lock) {
			unlinkat(fd, de->d_name, 0);
			continue;
		}
		bytes = du_at(fd, de->d_name, &files);
		snprintf(tmp, sizeof(tmp), "gc-lazy-%s", de->d_name);
		strata_rmtree_at(g->st->tmp_fd, tmp);
		if (renameat(fd, de->d_name, g->st->tmp_fd, tmp) < 0)
			continue;
		strata_rmtree_at(g->st->tmp_fd, tmp);
		g->res->layers++;
		g->res->layer_bytes += bytes;
	}
	closedir(d);
	sweep_shared(g);
}

/* Everything in tmp/ is a leftover: its writers all hold the store. */
static void sweep_tmp(struct gc *g)
{
	int fd = openat(g->st->tmp_fd, ".", O_RDONLY | O_DIRECTORY |
			O_CLOEXEC);
	struct dirent *de;
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		uint64_t bytes;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		bytes = du_at(g->st->tmp_fd, de->d_name, NULL);
		if (strata_rmtree_at(g->st->tmp_fd, de->d_name) == 0) {
			g->res->temps++;
			g->res->temp_bytes += bytes;
		}
	}
	closedir(d);
}

int strata_store_gc(struct strata_store *st, struct strata_gc_result *res,
		    struct strata_err *err)
{
	struct gc g = { .st = st, .res = res, .err = err };
	struct json_object *removed = NULL;
	cleanup_fd int lock = -1;
	size_t i;
	int r;

	memset(res, 0, sizeof(*res));
	if (st->hold_fd >= 0)
		return strata_err_set(err, -EBUSY, "store %s: gc from a "
				      "handle that holds the store", st->root);
	lock = open_gc_lock(st);
	if (lock < 0)
		return strata_err_set(err, lock, "store %s: %s: %s",
				      st->root, GC_LOCK, strerror(-lock));
	if (flock(lock, LOCK_EX | LOCK_NB) < 0)
		return strata_err_set(err, errno == EWOULDBLOCK ? -EBUSY
				      : -errno, "store %s is in use by "
				      "another strata (an import, commit, "
				      "tag or a mount being set up): nothing "
				      "removed; run gc again when it is done",
				      st->root);
	r = read_pins(&g);
	if (r < 0) {
		strata_err_set(err, r, "store %s: pins: %s", st->root,
			       strerror(-r));
		goto out;
	}
	r = prune_index(&g, &removed);
	if (r < 0)
		goto out;
	/* references before what they reference */
	for (i = 0; i < json_object_array_length(removed); i++) {
		struct strata_desc d;

		res->images++;
		if (strata_desc_parse(json_object_array_get_idx(removed, i),
				      &d, "index.json", NULL) == 0 &&
		    !set_has(&g.blobs, d.digest))
			remove_blob(&g, d.digest);
	}
	if (i)
		fsync(st->blobs_fd);
	sweep_blobs(&g, "sha256", 64);
	sweep_blobs(&g, "sha512", 128);
	sweep_temps(&g, st->blobs_fd, false);
	{
		cleanup_fd int ilock = strata_lock_at(st->images_fd,
						      INDEX_LOCK, true);

		if (ilock >= 0)
			sweep_temps(&g, st->images_fd, true);
	}
	sweep_layers(&g, "sha256", 64);
	sweep_layers(&g, "sha512", 128);
	sweep_lazy(&g);
	sweep_tmp(&g);
	r = 0;
out:
	if (removed)
		json_object_put(removed);
	set_free(&g.blobs);
	set_free(&g.layers);
	set_free(&g.pinned);
	return r;
}
