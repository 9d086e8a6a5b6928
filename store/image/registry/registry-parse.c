/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a registry's answers say besides their bodies, parsed
 * (store-internal, registry.h): header lines, Content-Range, Location
 * and the upload Range, the Link of a paged list, URL origins. Pure
 * functions of the bytes a server sent, fuzzed by tests/fuzz/fuzz-http.c.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "curl-dl.h"
#include "registry.h"

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

void strata_reg_header(struct strata_reg_resp *r, const char *buf, size_t n)
{
	const char *colon = memchr(buf, ':', n);
	size_t klen, vlen;
	const char *v;
	char tmp[64];

	if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
		/* a new response (after a 100 Continue, say): start over */
		long keep = r->status;

		memset(r, 0, sizeof(*r));
		r->status = keep;
		r->retry_after = -1;
		r->content_length = -1;
		return;
	}
	if (!colon)
		return;
	klen = (size_t)(colon - buf);
	v = colon + 1;
	vlen = n - klen - 1;
#define IS(k) (klen == strlen(k) && !strncasecmp(buf, k, klen))
	if (IS("Content-Type"))
		copy_value(r->content_type, sizeof(r->content_type), v, vlen);
	else if (IS("Docker-Content-Digest"))
		copy_value(r->docker_digest, sizeof(r->docker_digest), v, vlen);
	else if (IS("WWW-Authenticate"))
		copy_value(r->www_auth, sizeof(r->www_auth), v, vlen);
	else if (IS("Location"))
		copy_value(r->location, sizeof(r->location), v, vlen);
	else if (IS("Content-Range"))
		copy_value(r->content_range, sizeof(r->content_range), v, vlen);
	else if (IS("Link"))
		copy_value(r->link, sizeof(r->link), v, vlen);
	else if (IS("Range"))
		copy_value(r->range, sizeof(r->range), v, vlen);
	else if (IS("OCI-Chunk-Min-Length")) {
		char *end;
		long long l;

		copy_value(tmp, sizeof(tmp), v, vlen);
		errno = 0;
		l = strtoll(tmp, &end, 10);
		if (!errno && end != tmp && !*end && l > 0)
			r->chunk_min = l;
	}
	else if (IS("Retry-After")) {
		char *end;
		long s;

		copy_value(tmp, sizeof(tmp), v, vlen);
		s = strtol(tmp, &end, 10);
		if (end != tmp && !*end && s >= 0)
			r->retry_after = s;
	} else if (IS("Content-Length")) {
		char *end;
		long long l;

		copy_value(tmp, sizeof(tmp), v, vlen);
		errno = 0;
		l = strtoll(tmp, &end, 10);
		if (!errno && end != tmp && !*end && l >= 0)
			r->content_length = l;
	}
#undef IS
}

bool strata_reg_range_starts_at(const char *cr, uint64_t off)
{
	unsigned long long start;
	char *end;

	if (strncasecmp(cr, "bytes ", 6) || cr[6] < '0' || cr[6] > '9')
		return false;
	errno = 0;
	start = strtoull(cr + 6, &end, 10);
	return !errno && end != cr + 6 && *end == '-' && start == off;
}

void strata_reg_origin(const char *url, char *out, size_t cap)
{
	CURLU *u = curl_url();
	char *h = NULL, *p = NULL, *sc = NULL;

	out[0] = '\0';
	if (!u)
		return;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &sc, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK) {
		if (curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT)
		    != CURLUE_OK)
			p = NULL;
		snprintf(out, cap, "%s://%s:%s", sc, h, p ? p : "");
		for (char *c = out; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
	}
	curl_free(sc);
	curl_free(h);
	curl_free(p);
	curl_url_cleanup(u);
}

char *strata_reg_resolve(const char *base, const char *loc)
{
	CURLU *u = curl_url();
	char *out = NULL, *scheme = NULL, *res = NULL;

	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, loc, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    (!strcmp(scheme, "https") || !strcmp(scheme, "http")) &&
	    curl_url_get(u, CURLUPART_URL, &out, 0) == CURLUE_OK)
		res = strdup(out);
	curl_free(out);
	curl_free(scheme);
	curl_url_cleanup(u);
	return res;
}

int strata_reg_upload_range(const char *r, uint64_t *next)
{
	const char *dash;
	char *end;
	unsigned long long e;

	if (!strncmp(r, "bytes=", 6))
		r += 6;
	dash = strchr(r, '-');
	if (!dash || strncmp(r, "0-", 2))
		return -EPROTO;
	errno = 0;
	e = strtoull(dash + 1, &end, 10);
	if (errno || end == dash + 1 || *end || dash[1] < '0' ||
	    dash[1] > '9' || e == UINT64_MAX)
		return -EPROTO;
	*next = e + 1;
	return 0;
}

void strata_reg_next_link(const char *link, char *out, size_t cap)
{
	const char *lt = strchr(link, '<'), *gt = lt ? strchr(lt, '>') : NULL;

	out[0] = '\0';
	if (!lt || !gt || !strstr(gt, "rel=\"next\"") || (size_t)(gt - lt) >= cap)
		return;
	memcpy(out, lt + 1, (size_t)(gt - lt - 1));
	out[gt - lt - 1] = '\0';
}
