/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata login, logout and ls-tags.
 *
 * Login checks the credentials against GET /v2/ (Basic, or a Bearer
 * token for no repository, as docker login does), then stores them where
 * podman and skopeo look first (containers-auth.json(5)):
 * $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, else
 * for root /run/containers/0/auth.json, else
 * ~/.config/containers/auth.json. The file is rewritten whole under a
 * temporary name (0600, fsync'd) and renamed: entries of other registries
 * and other keys are kept.
 *
 * Tags are listed page by page (distribution spec "Listing Tags"):
 * GET tags/list?n=N, then each Link: <URL>; rel="next" until there is
 * none. Each page's body is bounded, its names checked as tags.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry.h"

#define AUTHFILE_MAX (1u << 20)
#define TAGS_PAGE_MAX (4u << 20)
#define MAX_PAGES 10000

int strata_auth_file_path(char *out, size_t cap)
{
	const char *env = getenv("REGISTRY_AUTH_FILE");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	const char *home = getenv("HOME");

	if (env && *env)
		snprintf(out, cap, "%s", env);
	else if (xdg && *xdg)
		snprintf(out, cap, "%s/containers/auth.json", xdg);
	else if (geteuid() == 0)
		snprintf(out, cap, "/run/containers/0/auth.json");
	else if (home && *home)
		snprintf(out, cap, "%s/.config/containers/auth.json", home);
	else
		return -ENOENT;
	return 0;
}

/* A registry as the user wrote it: "docker://", "https://" and a path
 * dropped; lower case. Caller frees. */
static char *registry_key(const char *s)
{
	const char *p = s;
	char *k;

	if (!strncmp(p, "docker://", 9))
		p += 9;
	else if (!strncmp(p, "https://", 8))
		p += 8;
	else if (!strncmp(p, "http://", 7))
		p += 7;
	k = strndup(p, strcspn(p, "/"));
	if (!k)
		return NULL;
	for (char *c = k; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	if (!strcmp(k, "index.docker.io") || !strcmp(k, "registry-1.docker.io")) {
		free(k);
		k = strdup("docker.io");
	}
	return k;
}

int strata_registry_login(const char *registry,
			  const struct strata_reg_opts *o,
			  struct strata_err *err)
{
	cleanup_free char *key = registry_key(registry);
	struct strata_reg *reg = NULL;
	struct strata_ref ref = { .kind = STRATA_REF_DOCKER, .path = "" };
	int r;

	if (!key)
		return -ENOMEM;
	if (!*key)
		return strata_err_set(err, -EINVAL, "no registry given");
	ref.registry = key;
	ref.text = key;
	r = strata_reg_open(&ref, o, &reg, err);
	if (r < 0)
		return r;
	r = strata_reg_connect(reg, err);
	strata_reg_free(reg);
	return r;
}

static int read_authfile(const char *path, struct json_object **out,
			 struct strata_err *err)
{
	cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC);
	cleanup_free char *buf = NULL;
	struct stat sb;
	ssize_t n;

	if (fd < 0 && errno == ENOENT) {
		*out = json_object_new_object();
		return *out ? 0 : -ENOMEM;
	}
	if (fd < 0 || fstat(fd, &sb) < 0)
		return strata_err_set(err, -errno, "%s: %s", path,
				      strerror(errno));
	if ((uint64_t)sb.st_size > AUTHFILE_MAX)
		return strata_err_set(err, -EFBIG, "%s: larger than %u bytes",
				      path, AUTHFILE_MAX);
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf)
		return -ENOMEM;
	n = read(fd, buf, (size_t)sb.st_size);
	if (n < 0)
		return strata_err_set(err, -errno, "%s: %s", path,
				      strerror(errno));
	buf[n] = '\0';
	if (n == 0) {
		*out = json_object_new_object();
		return *out ? 0 : -ENOMEM;
	}
	return strata_json_parse(buf, (size_t)n, path, out, err);
}

static int mkdir_parents(const char *path)
{
	cleanup_free char *d = strdup(path);
	char *s;

	if (!d)
		return -ENOMEM;
	for (s = d + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		if (mkdir(d, 0700) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return 0;
}

static int write_authfile(const char *path, struct json_object *o,
			  struct strata_err *err)
{
	cleanup_free char *tmp = NULL;
	const char *s = json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	size_t len = strlen(s);
	int fd, r;

	r = mkdir_parents(path);
	if (r < 0)
		return strata_err_set(err, r, "%s: %s", path, strerror(-r));
	if (asprintf(&tmp, "%s.tmp-%d", path, (int)getpid()) < 0) {
		tmp = NULL;
		return -ENOMEM;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return strata_err_set(err, -errno, "%s: %s", tmp,
				      strerror(errno));
	if (write(fd, s, len) != (ssize_t)len || write(fd, "\n", 1) != 1 ||
	    fsync(fd) < 0) {
		r = -errno;
		close(fd);
		unlink(tmp);
		return strata_err_set(err, r, "%s: %s", tmp, strerror(-r));
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return strata_err_set(err, r, "%s: %s", path, strerror(-r));
	}
	return 0;
}

static struct json_object *auths_of(struct json_object *o)
{
	struct json_object *a;

	if (json_object_object_get_ex(o, "auths", &a) &&
	    json_object_is_type(a, json_type_object))
		return a;
	a = json_object_new_object();
	if (a)
		json_object_object_add(o, "auths", a);
	return a;
}

int strata_auth_file_set(const char *path, const char *registry,
			 const char *user, const char *pass,
			 struct strata_err *err)
{
	cleanup_free char *key = registry_key(registry), *up = NULL;
	cleanup_free unsigned char *b64 = NULL;
	struct json_object *o = NULL, *auths, *e;
	int r, n;

	if (!key || asprintf(&up, "%s:%s", user, pass) < 0)
		return -ENOMEM;
	n = (int)strlen(up);
	b64 = malloc((size_t)(4 * ((n + 2) / 3) + 1));
	if (!b64)
		return -ENOMEM;
	EVP_EncodeBlock(b64, (const unsigned char *)up, n);
	r = read_authfile(path, &o, err);
	if (r < 0)
		return r;
	auths = auths_of(o);
	e = json_object_new_object();
	if (!auths || !e) {
		json_object_put(e);
		json_object_put(o);
		return -ENOMEM;
	}
	json_object_object_add(e, "auth",
			       json_object_new_string((const char *)b64));
	json_object_object_add(auths, key, e);
	r = write_authfile(path, o, err);
	json_object_put(o);
	return r;
}

int strata_auth_file_remove(const char *path, const char *registry,
			    struct strata_err *err)
{
	cleanup_free char *key = registry ? registry_key(registry) : NULL;
	struct json_object *o = NULL, *auths;
	int r;

	if (registry && !key)
		return -ENOMEM;
	r = read_authfile(path, &o, err);
	if (r < 0)
		return r;
	auths = auths_of(o);
	if (!auths) {
		json_object_put(o);
		return -ENOMEM;
	}
	if (!registry) {
		json_object_object_add(o, "auths", json_object_new_object());
	} else if (json_object_object_get_ex(auths, key, NULL)) {
		json_object_object_del(auths, key);
	} else {
		json_object_put(o);
		return strata_err_set(err, -ENOENT, "not logged in to %s "
				      "(no entry in %s)", key, path);
	}
	r = write_authfile(path, o, err);
	json_object_put(o);
	return r;
}

/* ---- tags ---- */

struct pagesink {
	struct strata_reg_sink s;
	char *buf;
	size_t len;
};

static int page_write(struct strata_reg_sink *s, const void *buf, size_t n)
{
	struct pagesink *p = (struct pagesink *)s;
	char *nb;

	if (p->len + n > TAGS_PAGE_MAX)
		return strata_err_set(&s->err, -EFBIG, "a tag list page over "
				      "%u bytes: refused", TAGS_PAGE_MAX);
	nb = realloc(p->buf, p->len + n + 1);
	if (!nb)
		return -ENOMEM;
	p->buf = nb;
	memcpy(p->buf + p->len, buf, n);
	p->len += n;
	p->buf[p->len] = '\0';
	return 0;
}

static void page_reset(struct strata_reg_sink *s)
{
	((struct pagesink *)s)->len = 0;
}

static int page_tags(struct strata_reg *reg, const char *body, size_t len,
		     int (*cb)(void *, const char *), void *ctx,
		     struct strata_err *err)
{
	struct json_object *o = NULL, *tags;
	int r;

	r = strata_json_parse(body, len, "tag list", &o, err);
	if (r < 0)
		return strata_err_wrap(err, r, "registry %s: repository %s",
				       reg->name, reg->repo);
	if (json_object_object_get_ex(o, "tags", &tags) &&
	    json_object_is_type(tags, json_type_array))
		for (size_t i = 0; r == 0 && i < json_object_array_length(tags);
		     i++) {
			struct json_object *t = json_object_array_get_idx(tags, i);
			const char *s = json_object_get_string(t);
			size_t n = s ? strlen(s) : 0;
			char pr[200];

			if (!json_object_is_type(t, json_type_string) || !n ||
			    n > 128 || strspn(s, "abcdefghijklmnopqrstuvwxyz"
					      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					      "0123456789_.-") != n) {
				r = strata_err_set(err, -EBADMSG, "registry %s: "
					"repository %s: tag list: not a tag: "
					"\"%s\"", reg->name, reg->repo,
					strata_printable(s ? s : "", n, pr,
							 sizeof(pr)));
				break;
			}
			r = cb(ctx, s);
		}
	json_object_put(o);
	return r;
}

int strata_registry_tags(const char *refs, const struct strata_reg_opts *o,
			 int page_size, int (*cb)(void *ctx, const char *tag),
			 void *ctx, struct strata_err *err)
{
	cleanup_(strata_ref_freep) struct strata_ref *ref = NULL;
	struct strata_reg *reg = NULL;
	struct pagesink ps = { .s = { .write = page_write,
				      .reset = page_reset } };
	struct strata_reg_resp resp;
	char path[64];
	cleanup_free char *next = NULL;
	int r, pages = 0;

	r = strata_ref_parse(refs, &ref, err);
	if (r < 0)
		return r;
	if (ref->kind != STRATA_REF_DOCKER)
		return strata_err_set(err, -EINVAL, "%s: not a docker:// "
				      "reference", refs);
	r = strata_reg_open(ref, o, &reg, err);
	if (r < 0)
		return r;
	if (page_size > 0)
		snprintf(path, sizeof(path), "tags/list?n=%d", page_size);
	else
		snprintf(path, sizeof(path), "tags/list");
	for (;;) {
		struct strata_reg_req q = { .method = "GET", .url = next,
					    .path = path, .sink = &ps.s };
		char link[sizeof(resp.link)];

		ps.len = 0;
		ps.s.offset = 0;
		r = strata_reg_request(reg, &q, &resp, "tag list", err);
		if (r == 0)
			r = page_tags(reg, ps.buf ? ps.buf : "{}",
				      ps.buf ? ps.len : 2, cb, ctx, err);
		if (r < 0)
			break;
		strata_reg_next_link(resp.link, link, sizeof(link));
		if (!link[0])
			break;
		if (++pages > MAX_PAGES) {
			r = strata_err_set(err, -ELOOP, "registry %s: "
					   "repository %s: tag list: more than "
					   "%d pages", reg->name, reg->repo,
					   MAX_PAGES);
			break;
		}
		free(next);
		next = strdup(link);
		if (!next) {
			r = -ENOMEM;
			break;
		}
	}
	free(ps.buf);
	strata_reg_free(reg);
	return r;
}
