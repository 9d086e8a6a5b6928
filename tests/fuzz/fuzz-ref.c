/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references (store/image/ref.c): the bytes, up to the first NUL (a
 * reference comes from argv), through strata_ref_parse(),
 * strata_store_name() and strata_platform_parse(). Besides memory safety
 * it checks what a parse promises: the parts put back together give the
 * text as typed, a store name always comes back NAME:TAG, and a docker://
 * reference written back from its normalised parts parses to the same
 * parts.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "store.h"

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static void check_docker(const struct strata_ref *r)
{
	struct strata_ref *again = NULL;
	char *buf;

	FUZZ_CHECK(r->registry && r->registry[0] && r->path && r->path[0]);
	FUZZ_CHECK(r->tag || r->digest);
	FUZZ_CHECK(!strchr(r->registry, '/') && !strchr(r->path, '@') &&
		   !strchr(r->path, ':') && !strstr(r->path, "//"));
	if (r->digest)
		FUZZ_CHECK(strata_digest_validate(r->digest,
						  strlen(r->digest)) == 0);
	FUZZ_CHECK(asprintf(&buf, "docker://%s/%s%s%s%s%s", r->registry,
			    r->path, r->tag ? ":" : "", r->tag ? r->tag : "",
			    r->digest ? "@" : "",
			    r->digest ? r->digest : "") >= 0);
	FUZZ_CHECK(strata_ref_parse(buf, &again, NULL) == 0);
	FUZZ_CHECK(again->kind == STRATA_REF_DOCKER &&
		   same(again->registry, r->registry) &&
		   same(again->path, r->path) && same(again->tag, r->tag) &&
		   same(again->digest, r->digest));
	strata_ref_free(again);
	free(buf);
}

static void check_ref(const char *s, const struct strata_ref *r)
{
	char *buf;

	FUZZ_CHECK(!strcmp(r->text, s));
	if (r->kind == STRATA_REF_DOCKER) {
		check_docker(r);
		return;
	}
	if (r->kind == STRATA_REF_STORE) {
		FUZZ_CHECK(!r->path && r->tag);
		FUZZ_CHECK(strchr(r->tag, ':'));
		/* NAME[:TAG]@DIGEST: the digest is what follows the @ */
		FUZZ_CHECK(!r->digest == !strchr(s, '@'));
		if (r->digest) {
			FUZZ_CHECK(strata_digest_validate(r->digest,
						strlen(r->digest)) == 0);
			FUZZ_CHECK(!strcmp(strchr(s, '@') + 1, r->digest));
		}
		return;
	}
	FUZZ_CHECK(r->path && r->path[0]);
	FUZZ_CHECK(!(r->tag && r->digest));
	FUZZ_CHECK(strstr(s, r->path) != NULL);
	if (r->digest) {
		FUZZ_CHECK(r->kind == STRATA_REF_OCI);
		FUZZ_CHECK(strata_digest_validate(r->digest,
						  strlen(r->digest)) == 0);
		FUZZ_CHECK(asprintf(&buf, "oci:%s@%s", r->path,
				    r->digest) >= 0);
		FUZZ_CHECK(!strcmp(buf, s));
		free(buf);
	} else if (!r->tag) {
		FUZZ_CHECK(!strcmp(strchr(s, ':') + 1, r->path));
	} else if (r->kind != STRATA_REF_DOCKER_ARCHIVE) {
		FUZZ_CHECK(asprintf(&buf, "%s:%s", r->path, r->tag) >= 0);
		FUZZ_CHECK(!strcmp(strchr(s, ':') + 1, buf));
		free(buf);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strata_err err = { 0 };
	struct strata_platform plat;
	struct strata_ref *r = NULL;
	char *s, *name = NULL;
	int ret;

	if (size > 4096)
		return 0;
	s = strndup((const char *)data, size);
	if (!s)
		return 0;
	ret = strata_ref_parse(s, &r, &err);
	FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -ENOMEM);
	if (ret == 0) {
		check_ref(s, r);
		strata_ref_free(r);
	} else {
		FUZZ_CHECK(ret == -ENOMEM || err.msg[0]);
	}
	ret = strata_store_name(s, &name, NULL);
	FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -ENOMEM ||
		   (ret == -EOPNOTSUPP && !strncmp(s, "docker://", 9)));
	if (ret == 0) {
		FUZZ_CHECK(strchr(name, ':'));
		free(name);
	}
	if (strata_platform_parse(s, &plat) == 0)
		FUZZ_CHECK(plat.os[0] && plat.arch[0]);
	free(s);
	return 0;
}
