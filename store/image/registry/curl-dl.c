/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcurl loaded with dlopen() on first use (curl-dl.h says why).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "curl-dl.h"
#include "base/log.h"

/* ---- stand-ins while libcurl cannot be loaded ---- */

static CURLcode no_global_init(long flags)
{
	(void)flags;
	return CURLE_FAILED_INIT;
}

static CURL *no_easy_init(void)
{
	return NULL;
}

static void no_handle(CURL *c)
{
	(void)c;
}

static CURLcode no_perform(CURL *c)
{
	(void)c;
	return CURLE_FAILED_INIT;
}

static CURLcode no_setopt(CURL *c, CURLoption opt, ...)
{
	(void)c;
	(void)opt;
	return CURLE_FAILED_INIT;
}

static CURLcode no_getinfo(CURL *c, CURLINFO info, ...)
{
	(void)c;
	(void)info;
	return CURLE_FAILED_INIT;
}

static const char *no_strerror(CURLcode code)
{
	(void)code;
	return "libcurl could not be loaded";
}

static char *no_escape(CURL *c, const char *s, int len)
{
	(void)c;
	(void)s;
	(void)len;
	return NULL;
}

static void no_free(void *p)
{
	(void)p;
}

static struct curl_slist *no_slist_append(struct curl_slist *l,
					  const char *s)
{
	(void)l;
	(void)s;
	return NULL;
}

static void no_slist_free_all(struct curl_slist *l)
{
	(void)l;
}

static CURLU *no_url(void)
{
	return NULL;
}

static void no_url_cleanup(CURLU *u)
{
	(void)u;
}

static CURLUcode no_url_get(const CURLU *u, CURLUPart what, char **part,
			    unsigned int flags)
{
	(void)u;
	(void)what;
	(void)flags;
	*part = NULL;
	return CURLUE_OUT_OF_MEMORY;
}

static CURLUcode no_url_set(CURLU *u, CURLUPart what, const char *part,
			    unsigned int flags)
{
	(void)u;
	(void)what;
	(void)part;
	(void)flags;
	return CURLUE_OUT_OF_MEMORY;
}

static struct strata_curl_api api = {
	.global_init = no_global_init,
	.easy_init = no_easy_init,
	.easy_cleanup = no_handle,
	.easy_reset = no_handle,
	.easy_perform = no_perform,
	.easy_setopt = no_setopt,
	.easy_getinfo = no_getinfo,
	.easy_strerror = no_strerror,
	.easy_escape = no_escape,
	.free = no_free,
	.slist_append = no_slist_append,
	.slist_free_all = no_slist_free_all,
	.url = no_url,
	.url_cleanup = no_url_cleanup,
	.url_get = no_url_get,
	.url_set = no_url_set,
};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
	static const struct {
		const char *name;
		size_t off;
	} syms[] = {
#define SYM(f, n) { n, offsetof(struct strata_curl_api, f) }
		SYM(global_init, "curl_global_init"),
		SYM(easy_init, "curl_easy_init"),
		SYM(easy_cleanup, "curl_easy_cleanup"),
		SYM(easy_reset, "curl_easy_reset"),
		SYM(easy_perform, "curl_easy_perform"),
		SYM(easy_setopt, "curl_easy_setopt"),
		SYM(easy_getinfo, "curl_easy_getinfo"),
		SYM(easy_strerror, "curl_easy_strerror"),
		SYM(easy_escape, "curl_easy_escape"),
		SYM(free, "curl_free"),
		SYM(slist_append, "curl_slist_append"),
		SYM(slist_free_all, "curl_slist_free_all"),
		SYM(url, "curl_url"),
		SYM(url_cleanup, "curl_url_cleanup"),
		SYM(url_get, "curl_url_get"),
		SYM(url_set, "curl_url_set"),
#undef SYM
	};
	struct strata_curl_api got;
	void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
	size_t i;

	if (!h) {
		strata_warn("cannot load libcurl (needed for registries): %s",
			    dlerror());
		return;
	}
	got = api;
	for (i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		void *f = dlsym(h, syms[i].name);

		if (!f) {
			strata_warn("libcurl.so.4 has no %s: too old for "
				    "strata", syms[i].name);
			return;	/* the library stays loaded, unused */
		}
		memcpy((char *)&got + syms[i].off, &f, sizeof(f));
	}
	/* libssl as libcurl loaded it (a libcurl on another TLS library
	 * has none: the certs.d CAs are then not added) */
	{
		void *f = dlsym(h, "SSL_CTX_get_cert_store");

		memcpy(&got.ssl_ctx_get_cert_store, &f, sizeof(f));
	}
	api = got;
}

const struct strata_curl_api *strata_curl(void)
{
	pthread_once(&once, load);
	return &api;
}
