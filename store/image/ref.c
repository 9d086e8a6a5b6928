/* SPDX-License-Identifier: Apache-2.0 */
/*
 * References in the containers-transports(5) spelling, and platforms.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "store-internal.h"

void strata_ref_free(struct strata_ref *ref)
{
	free(ref->path);
	free(ref->tag);
	free(ref->digest);
	free(ref->text);
	free(ref->registry);
	free(ref);
}

static bool ref_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("-._:@/+", c);
}

/* annotations.md ref grammar, loosely: alphanumerics and -._:@/+ only. */
static bool valid_tag(const char *s)
{
	if (!*s || strlen(s) > 255)
		return false;
	for (; *s; s++)
		if (!ref_char_ok(*s))
			return false;
	return true;
}

static bool lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* A path component of a repository name (distribution/reference):
 * lower-case alphanumerics joined by one '.', one or two '_', or any
 * number of '-'. */
bool strata_ref_component_ok(const char *s, size_t n)
{
	size_t i = 0;

	if (!n || !lower_alnum(s[0]) || !lower_alnum(s[n - 1]))
		return false;
	while (i < n) {
		if (lower_alnum(s[i])) {
			i++;
			continue;
		}
		if (s[i] == '.' && lower_alnum(s[i + 1]))
			i++;
		else if (s[i] == '_' && s[i + 1] == '_' && lower_alnum(s[i + 2]))
			i += 2;
		else if (s[i] == '_' && lower_alnum(s[i + 1]))
			i++;
		else if (s[i] == '-') {
			while (s[i] == '-')
				i++;
			if (!lower_alnum(s[i]))
				return false;
		} else
			return false;
	}
	return true;
}

/* A registry host, optionally with a port: "localhost:5000". */
static bool valid_domain(const char *s, size_t n)
{
	const char *colon = memchr(s, ':', n);
	size_t host = colon ? (size_t)(colon - s) : n, i;

	if (!host)
		return false;
	for (i = 0; i < host; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '-'))
			return false;
	if (colon) {
		if (colon + 1 == s + n)
			return false;
		for (i = host + 1; i < n; i++)
			if (s[i] < '0' || s[i] > '9')
				return false;
	}
	return true;
}

static bool valid_repo(const char *s, size_t n)
{
	const char *p = s, *end = s + n, *slash;
	bool first = true;

	if (!n || n > 255)
		return false;
	while (p < end) {
		slash = memchr(p, '/', (size_t)(end - p));
		if (!slash)
			slash = end;
		if (first && slash != end &&
		    (memchr(p, '.', (size_t)(slash - p)) ||
		     memchr(p, ':', (size_t)(slash - p)) ||
		     (slash - p == 9 && !memcmp(p, "localhost", 9)))) {
			if (!valid_domain(p, (size_t)(slash - p)))
				return false;
		} else if (!strata_ref_component_ok(p, (size_t)(slash - p))) {
			return false;
		}
		first = false;
		if (slash == end)
			break;
		p = slash + 1;
		if (p == end)
			return false;	/* trailing slash */
	}
	return true;
}

/* [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static bool valid_image_tag(const char *s)
{
	size_t n = strlen(s), i;

	if (!n || n > 128 || s[0] == '.' || s[0] == '-')
		return false;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("_.-", s[i])))
			return false;
	return true;
}

/*
 * @s with its repository part (before the tag) in lower case, if that
 * makes it a valid name and @s had capitals there: docker and podman
 * refuse "MyApp:1" ("repository name must be lowercase"), so does strata,
 * and the name to suggest is this. Return: the name (caller frees), or
 * NULL.
 */
static char *lower_case_name(const char *s, size_t repo_len)
{
	bool upper = false;
	char *low;
	size_t i;

	for (i = 0; i < repo_len; i++)
		upper |= s[i] >= 'A' && s[i] <= 'Z';
	if (!upper)
		return NULL;
	low = strdup(s);
	if (!low)
		return NULL;
	for (i = 0; i < repo_len; i++)
		if (low[i] >= 'A' && low[i] <= 'Z')
			low[i] = (char)(low[i] - 'A' + 'a');
	if (!valid_repo(low, repo_len)) {
		free(low);
		return NULL;
	}
	return low;
}

/* A docker:// reference where a store name is wanted (import's NAME,
 * rmi): say how to push there instead. */
static int no_registry(const char *s, struct strata_err *err)
{
	return strata_err_set(err, -EOPNOTSUPP,
			      "\"%s\" is a registry, not a store name: "
			      "push there with strata copy SRC %s", s, s);
}

static bool is_registry_ref(const char *s)
{
	return !strncmp(s, "docker://", 9);
}

/*
 * If @s is a store name but for capitals in its repository part, say so
 * with the name to use. Return: that -EINVAL, or 0 when it is not the
 * case.
 */
static int name_case_error(const char *s, struct strata_err *err)
{
	const char *slash = strrchr(s, '/');
	const char *colon = strrchr(slash ? slash : s, ':');
	cleanup_free char *low = NULL;

	if (strchr(s, '@') || (colon && !valid_image_tag(colon + 1)))
		return 0;
	low = lower_case_name(s, colon ? (size_t)(colon - s) : strlen(s));
	if (!low)
		return 0;
	return strata_err_set(err, -EINVAL,
			      "invalid image name \"%s\": reference names "
			      "must be lower case, as in docker and podman "
			      "(use \"%s\")", s, low);
}

int strata_store_name(const char *s, char **out, struct strata_err *err)
{
	const char *slash = strrchr(s, '/');
	const char *colon = strrchr(slash ? slash : s, ':');
	char *r;

	if (is_registry_ref(s))
		return no_registry(s, err);
	if (!*s || *s == ':' || strchr(s, '@'))
		goto bad;
	if (!valid_repo(s, colon ? (size_t)(colon - s) : strlen(s)))
		goto bad;
	if (colon && !valid_image_tag(colon + 1))
		goto bad;
	if (colon)
		r = strdup(s);
	else if (asprintf(&r, "%s:latest", s) < 0)
		r = NULL;
	if (!r)
		return -ENOMEM;
	*out = r;
	return 0;
bad:
	if (name_case_error(s, err) < 0)
		return -EINVAL;
	return strata_err_set(err, -EINVAL,
			      "invalid image name \"%s\" (want NAME[:TAG]: "
			      "lower-case name components separated by /, "
			      "a tag of letters, digits, _ . -)", s);
}

static int split_at_digest(struct strata_ref *r, struct strata_err *err)
{
	char *at = strrchr(r->path, '@');

	if (!at)
		return 0;
	if (strata_digest_validate(at + 1, strlen(at + 1)) < 0)
		return strata_err_set(err, -EINVAL,
				      "reference %s: invalid digest \"%s\"",
				      r->text, at + 1);
	r->digest = strdup(at + 1);
	if (!r->digest)
		return -ENOMEM;
	*at = '\0';
	return 0;
}

/* Split "PATH:TAG" at the first ':' (paths with ':' cannot carry a tag;
 * skopeo's oci: transport splits the same way); TAG holds at most
 * @max_colons - 1 colons (0: any number). */
static int split_tag(struct strata_ref *r, int max_colons,
		     struct strata_err *err)
{
	char *colon = strchr(r->path, ':');

	if (!colon)
		return 0;
	*colon = '\0';
	if (max_colons >= 1 && strchr(colon + 1, ':') &&
	    (max_colons == 1 || strchr(strchr(colon + 1, ':') + 1, ':')))
		return strata_err_set(err, -EINVAL,
				      "reference %s: too many ':'", r->text);
	if (!valid_tag(colon + 1))
		return strata_err_set(err, -EINVAL,
				      "reference %s: invalid tag \"%s\"",
				      r->text, colon + 1);
	r->tag = strdup(colon + 1);
	return r->tag ? 0 : -ENOMEM;
}

int strata_ref_parse(const char *s, struct strata_ref **out,
		     struct strata_err *err)
{
	static const struct {
		const char *prefix;
		enum strata_ref_kind kind;
	} kinds[] = {
		{ "oci:", STRATA_REF_OCI },
		{ "oci-archive:", STRATA_REF_OCI_ARCHIVE },
		{ "docker-archive:", STRATA_REF_DOCKER_ARCHIVE },
		{ "dir:", STRATA_REF_DIR },
	};
	cleanup_(strata_ref_freep) struct strata_ref *r = NULL;
	size_t i;
	int ret;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->kind = STRATA_REF_STORE;
	r->text = strdup(s);
	if (!r->text)
		return -ENOMEM;
	/* "docker:TAG" stays a store name: only docker:// is the transport */
	if (is_registry_ref(s)) {
		r->kind = STRATA_REF_DOCKER;
		ret = strata_ref_parse_docker(s + 7, r, err);
		if (ret < 0)
			return ret;
		*out = take_ptr(&r);
		return 0;
	}
	for (i = 0; i < ARRAY_SIZE(kinds); i++) {
		size_t n = strlen(kinds[i].prefix);

		if (strncmp(s, kinds[i].prefix, n))
			continue;
		r->kind = kinds[i].kind;
		r->path = strdup(s + n);
		if (!r->path)
			return -ENOMEM;
		break;
	}
	if (r->kind == STRATA_REF_STORE) {
		cleanup_free char *name = strdup(s);
		char *at = name ? strchr(name, '@') : NULL;

		if (!name)
			return -ENOMEM;
		/* NAME[:TAG]@DIGEST: the digest picks the image */
		if (at) {
			*at = '\0';
			if (strata_digest_validate(at + 1, strlen(at + 1)) < 0)
				return strata_err_set(err, -EINVAL,
						      "reference %s: invalid "
						      "digest \"%s\"", s,
						      at + 1);
			r->digest = strdup(at + 1);
			if (!r->digest)
				return -ENOMEM;
		}
		if (strchr(name, ':') && !strchr(name, '/') &&
		    strchr(name, ':') != strrchr(name, ':'))
			return strata_err_set(err, -EINVAL,
					      "invalid reference \"%s\"", s);
		ret = strata_store_name(name, &r->tag, NULL);
		if (ret == -ENOMEM)
			return ret;
		if (ret < 0 && name_case_error(s, err) < 0)
			return -EINVAL;
		if (ret < 0) {
			return strata_err_set(err, -EINVAL,
				"invalid reference \"%s\": use NAME[:TAG][@DIGEST], "
				"oci:DIR[:TAG], oci-archive:FILE[:TAG], "
				"docker-archive:FILE[:NAME:TAG] or dir:DIR", s);
		}
		*out = take_ptr(&r);
		return 0;
	}
	/* dir:PATH as skopeo reads it: all of it is the path */
	if (r->kind == STRATA_REF_DIR && !r->path[0])
		return strata_err_set(err, -EINVAL,
				      "reference %s: missing path", s);
	if (r->kind == STRATA_REF_DIR) {
		*out = take_ptr(&r);
		return 0;
	}
	if (r->kind == STRATA_REF_OCI) {
		ret = split_at_digest(r, err);
		if (ret < 0)
			return ret;
	}
	if (!r->digest) {
		/* oci:DIR:NAME:TAG as skopeo reads it: the store's own
		 * layout names its images NAME:TAG */
		ret = split_tag(r, r->kind == STRATA_REF_OCI_ARCHIVE ? 1 :
				r->kind == STRATA_REF_OCI ? 2 : 0, err);
		if (ret < 0)
			return ret;
	}
	if (!r->path[0])
		return strata_err_set(err, -EINVAL,
				      "reference %s: missing path", s);
	if (r->kind == STRATA_REF_DOCKER_ARCHIVE && r->tag &&
	    !strchr(strrchr(r->tag, '/') ? strrchr(r->tag, '/') : r->tag,
		    ':')) {
		char *t;

		if (asprintf(&t, "%s:latest", r->tag) < 0)
			return -ENOMEM;
		free(r->tag);
		r->tag = t;
	}
	*out = take_ptr(&r);
	return 0;
}

int strata_platform_parse(const char *s, struct strata_platform *out)
{
	const char *a = strchr(s, '/');
	const char *v;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!a || a == s)
		return -EINVAL;
	n = (size_t)(a - s);
	if (n >= sizeof(out->os))
		return -EINVAL;
	memcpy(out->os, s, n);
	a++;
	v = strchr(a, '/');
	n = v ? (size_t)(v - a) : strlen(a);
	if (n == 0 || n >= sizeof(out->arch))
		return -EINVAL;
	memcpy(out->arch, a, n);
	if (v) {
		v++;
		if (!*v || strlen(v) >= sizeof(out->variant) || strchr(v, '/'))
			return -EINVAL;
		strcpy(out->variant, v);
	}
	return 0;
}

void strata_platform_host(struct strata_platform *out)
{
	static const struct {
		const char *uname, *arch, *variant;
	} map[] = {
		{ "x86_64", "amd64", "" },
		{ "aarch64", "arm64", "v8" },
		{ "armv7l", "arm", "v7" },
		{ "armv6l", "arm", "v6" },
		{ "i686", "386", "" },
		{ "i386", "386", "" },
		{ "ppc64le", "ppc64le", "" },
		{ "s390x", "s390x", "" },
		{ "riscv64", "riscv64", "" },
	};
	struct utsname u;
	size_t i;

	memset(out, 0, sizeof(*out));
	strcpy(out->os, "linux");
	if (uname(&u) < 0) {
		strcpy(out->arch, "amd64");
		return;
	}
	for (i = 0; i < ARRAY_SIZE(map); i++) {
		if (!strcmp(u.machine, map[i].uname)) {
			strcpy(out->arch, map[i].arch);
			strcpy(out->variant, map[i].variant);
			return;
		}
	}
	snprintf(out->arch, sizeof(out->arch), "%.31s", u.machine);
}
