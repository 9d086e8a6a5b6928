/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a registry sends about authentication (store/image/registry/registry-auth.c): the
 * bytes up to the first NUL as a WWW-Authenticate value through
 * strata_reg_challenge(). Besides memory safety: the answer is a scheme
 * or -EPROTO, and realm and service stay within their bound whatever the
 * registry sends.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strata_reg *r;
	char *s;
	int ret;

	if (size > 65536)
		return 0;
	s = strndup((const char *)data, size);
	r = calloc(1, sizeof(*r));
	if (!s || !r) {
		free(s);
		free(r);
		return 0;
	}
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->connect_lock, NULL);
	pthread_cond_init(&r->renewed, NULL);
	r->name = strdup("fuzz.example");
	r->host = strdup("fuzz.example");
	r->repo = strdup("library/x");
	ret = strata_reg_challenge(r, s);
	FUZZ_CHECK(ret == REG_AUTH_BASIC || ret == REG_AUTH_BEARER ||
		   ret == -EPROTO);
	if (ret == REG_AUTH_BEARER) {
		FUZZ_CHECK(r->auth == REG_AUTH_BEARER);
		FUZZ_CHECK(!r->realm || strlen(r->realm) < 1024);
		FUZZ_CHECK(!r->service || strlen(r->service) < 1024);
	}
	strata_reg_free(r);
	free(s);
	return 0;
}
