/* SPDX-License-Identifier: Apache-2.0 */
/*
 * docker://[HOST[:PORT]/]PATH[:TAG|@DIGEST], normalised as podman and
 * skopeo (containers/image docker/reference) do: the first component is a
 * registry host when it holds a '.' or a ':' or is "localhost", otherwise
 * the image lives on docker.io; an image there with a single path
 * component is under library/; no tag and no digest means :latest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"

/* HOST[:PORT]: DNS labels (or an IPv4 address), an optional port. */
static bool host_ok(const char *s, size_t n)
{
	const char *colon = memchr(s, ':', n);
	size_t host = colon ? (size_t)(colon - s) : n, i;

	if (!host || host > 253)
		return false;
	for (i = 0; i < host; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '-'))
			return false;
		if ((c == '.' || c == '-') && (i == 0 || i + 1 == host))
			return false;
	}
	if (colon) {
		size_t plen = n - host - 1;

		if (plen == 0 || plen > 5)
			return false;
		for (i = host + 1; i < n; i++)
			if (s[i] < '0' || s[i] > '9')
				return false;
		if (atoi(colon + 1) == 0 || atoi(colon + 1) > 65535)
			return false;
	}
	return true;
}

static bool image_tag_ok(const char *s, size_t n)
{
	size_t i;

	if (!n || n > 128 || s[0] == '.' || s[0] == '-')
		return false;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("_.-", s[i])))
			return false;
	return true;
}

static int bad(const struct strata_ref *r, const char *why,
	       struct strata_err *err)
{
	char p[300];

	return strata_err_set(err, -EINVAL,
			      "invalid reference \"%s\": %s (want "
			      "docker://[HOST[:PORT]/]PATH[:TAG|@DIGEST])",
			      strata_printable(r->text, strlen(r->text), p,
					       sizeof(p)), why);
}

int strata_ref_parse_docker(const char *s, struct strata_ref *r,
			    struct strata_err *err)
{
	cleanup_free char *name = NULL;
	const char *first_slash, *p, *end, *at, *colon, *last_slash;
	size_t hostlen;
	bool has_host;

	s += 2;	/* "//" */
	if (!*s)
		return bad(r, "no image name", err);
	end = s + strlen(s);
	at = strchr(s, '@');
	if (at) {
		if (strata_digest_validate(at + 1, strlen(at + 1)) < 0)
			return bad(r, "invalid digest", err);
		r->digest = strdup(at + 1);
		if (!r->digest)
			return -ENOMEM;
		end = at;
	}
	first_slash = memchr(s, '/', (size_t)(end - s));
	has_host = false;
	hostlen = 0;
	if (first_slash) {
		hostlen = (size_t)(first_slash - s);
		has_host = memchr(s, '.', hostlen) || memchr(s, ':', hostlen) ||
			   (hostlen == 9 && !memcmp(s, "localhost", 9));
		/* upper case marks a host too (distribution/reference) */
		for (p = s; !has_host && p < first_slash; p++)
			if (*p >= 'A' && *p <= 'Z')
				has_host = true;
	}
	if (has_host) {
		if (!host_ok(s, hostlen))
			return bad(r, "invalid registry host", err);
		r->registry = strndup(s, hostlen);
		p = first_slash + 1;
	} else {
		r->registry = strdup("docker.io");
		p = s;
	}
	if (!r->registry)
		return -ENOMEM;
	if (!strcmp(r->registry, "index.docker.io")) {
		free(r->registry);
		r->registry = strdup("docker.io");
		if (!r->registry)
			return -ENOMEM;
	}
	last_slash = memrchr(p, '/', (size_t)(end - p));
	colon = memchr(last_slash ? last_slash : p, ':',
		       (size_t)(end - (last_slash ? last_slash : p)));
	if (colon) {
		if (!image_tag_ok(colon + 1, (size_t)(end - colon - 1)))
			return bad(r, "invalid tag", err);
		r->tag = strndup(colon + 1, (size_t)(end - colon - 1));
		if (!r->tag)
			return -ENOMEM;
		end = colon;
	}
	if (p == end)
		return bad(r, "no image name", err);
	for (const char *c = p; c < end;) {
		const char *sl = memchr(c, '/', (size_t)(end - c));

		if (!sl)
			sl = end;
		if (!strata_ref_component_ok(c, (size_t)(sl - c)))
			return bad(r, "invalid repository name (lower-case "
				   "components separated by /)", err);
		if (sl == end)
			break;
		c = sl + 1;
		if (c == end)
			return bad(r, "invalid repository name", err);
	}
	if (!strcmp(r->registry, "docker.io") && !memchr(p, '/', (size_t)(end - p))) {
		if (asprintf(&name, "library/%.*s", (int)(end - p), p) < 0)
			return -ENOMEM;
	} else {
		name = strndup(p, (size_t)(end - p));
		if (!name)
			return -ENOMEM;
	}
	if (strlen(r->registry) + 1 + strlen(name) > 255)
		return bad(r, "name longer than 255 bytes", err);
	if (!r->tag && !r->digest) {
		r->tag = strdup("latest");
		if (!r->tag)
			return -ENOMEM;
	}
	r->path = take_ptr(&name);
	return 0;
}
