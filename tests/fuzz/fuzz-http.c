/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a registry's answers say besides their bodies
 * (store/image/registry/registry-parse.c). The input is lines; each line goes, with the
 * CRLF curl keeps, to the header parser (one response, status lines
 * starting it over), and on its own to the Content-Range, upload Range,
 * Link, Location and origin parsers. Besides memory safety: every field
 * stays NUL-terminated within its size and its numbers in range; the
 * Content-Range and upload Range parsers agree with the small reference
 * parsers here (digits only, no overflow, END + 1 fits); a next link is
 * the text between < and > before rel="next"; a resolved location is an
 * http(s) URL with an origin; an origin is lower case.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "registry.h"

#define LINE_MAX_LEN 4096

#define FIELD_OK(f) FUZZ_CHECK(strnlen((f), sizeof(f)) < sizeof(f))

/* Decimal digits at *@p (at least one) into *@v; false on overflow. */
static bool digits(const char **p, uint64_t *v)
{
	const char *s = *p;

	*v = 0;
	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (*v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return false;
		*v = *v * 10 + (uint64_t)(*s - '0');
	}
	*p = s;
	return true;
}

/* "bytes START-...": START, as the reference. */
static bool ref_cr_start(const char *s, uint64_t *start)
{
	if (strncasecmp(s, "bytes ", 6))
		return false;
	s += 6;
	return digits(&s, start) && *s == '-';
}

/* "[bytes=]0-END", END + 1 representable. */
static bool ref_upload(const char *s, uint64_t *next)
{
	uint64_t e;

	if (!strncmp(s, "bytes=", 6))
		s += 6;
	if (strncmp(s, "0-", 2))
		return false;
	s += 2;
	if (!digits(&s, &e) || *s || e == UINT64_MAX)
		return false;
	*next = e + 1;
	return true;
}

static void lower_case(const char *s)
{
	for (; *s; s++)
		FUZZ_CHECK(!(*s >= 'A' && *s <= 'Z'));
}

static void one_line(struct strata_reg_resp *r, const char *line, size_t n)
{
	char *hdr = malloc(n + 2), link[256], origin[600];
	uint64_t v, next = 0, got = 0;
	char *abs;
	int ret;

	if (!hdr)
		return;
	/* a header line as curl hands it: not NUL-terminated */
	memcpy(hdr, line, n);
	memcpy(hdr + n, "\r\n", 2);
	strata_reg_header(r, hdr, n + 2);
	free(hdr);
	FIELD_OK(r->content_type);
	FIELD_OK(r->docker_digest);
	FIELD_OK(r->www_auth);
	FIELD_OK(r->location);
	FIELD_OK(r->content_range);
	FIELD_OK(r->range);
	FIELD_OK(r->link);
	FUZZ_CHECK(r->content_length >= -1 && r->retry_after >= -1 &&
		   r->chunk_min >= 0);

	if (ref_cr_start(line, &v)) {
		FUZZ_CHECK(strata_reg_range_starts_at(line, v));
		FUZZ_CHECK(!strata_reg_range_starts_at(line, v + 1));
	} else {
		FUZZ_CHECK(!strata_reg_range_starts_at(line, 0));
	}

	ret = strata_reg_upload_range(line, &got);
	FUZZ_CHECK(ret == 0 || ret == -EPROTO);
	FUZZ_CHECK((ret == 0) == ref_upload(line, &next));
	FUZZ_CHECK(ret < 0 || got == next);

	strata_reg_next_link(line, link, sizeof(link));
	FUZZ_CHECK(strlen(link) < sizeof(link));
	if (*link) {
		const char *at = strchr(line, '<');

		FUZZ_CHECK(at && !strncmp(at + 1, link, strlen(link)) &&
			   at[1 + strlen(link)] == '>' &&
			   strstr(at + 1 + strlen(link), "rel=\"next\""));
	}

	strata_reg_origin(line, origin, sizeof(origin));
	lower_case(origin);
	abs = strata_reg_resolve("https://reg.example:5000/v2/r/blobs/"
				 "uploads/", line);
	if (abs) {
		FUZZ_CHECK(!strncmp(abs, "https://", 8) ||
			   !strncmp(abs, "http://", 7));
		strata_reg_origin(abs, origin, sizeof(origin));
		FUZZ_CHECK(*origin || strlen(abs) >= sizeof(origin));
		lower_case(origin);
		free(abs);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strata_reg_resp r;
	const char *p = (const char *)data, *end = p + size;
	char *line;

	if (size > 65536)
		return 0;
	memset(&r, 0, sizeof(r));
	r.retry_after = -1;
	r.content_length = -1;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);

		/* the parsers that take C strings get the line up to a NUL */
		line = n <= LINE_MAX_LEN ? strndup(p, n) : NULL;
		if (line) {
			one_line(&r, line, strlen(line));
			free(line);
		}
		p += n + (nl != NULL);
	}
	return 0;
}
