/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcurl, loaded on first use (curl-dl.c) instead of linked: it brings
 * 25 of the 35 shared libraries a program linked with it loads at start
 * (TLS, HTTP/2, IDN, Kerberos, LDAP...), a tenth of a second of a cold
 * mount that reads no registry. Only docker:// sources and the registry
 * commands load it. Include this instead of <curl/curl.h>: the libcurl
 * calls below go through the loaded library; when it cannot be loaded
 * they fail as libcurl does when out of memory (NULL handles,
 * CURLE_FAILED_INIT), after one message naming the library.
 */
#ifndef STRATA_CURL_DL_H
#define STRATA_CURL_DL_H

#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>

struct strata_curl_api {
	CURLcode (*global_init)(long flags);
	CURL *(*easy_init)(void);
	void (*easy_cleanup)(CURL *c);
	void (*easy_reset)(CURL *c);
	CURLcode (*easy_perform)(CURL *c);
	CURLcode (*easy_setopt)(CURL *c, CURLoption opt, ...);
	CURLcode (*easy_getinfo)(CURL *c, CURLINFO info, ...);
	const char *(*easy_strerror)(CURLcode code);
	char *(*easy_escape)(CURL *c, const char *s, int len);
	void (*free)(void *p);
	struct curl_slist *(*slist_append)(struct curl_slist *l,
					   const char *s);
	void (*slist_free_all)(struct curl_slist *l);
	CURLU *(*url)(void);
	void (*url_cleanup)(CURLU *u);
	CURLUcode (*url_get)(const CURLU *u, CURLUPart what, char **part,
			     unsigned int flags);
	CURLUcode (*url_set)(CURLU *u, CURLUPart what, const char *part,
			     unsigned int flags);
	/* libssl's, from the libraries libcurl loaded (its SSL_CTX
	 * callback), or NULL */
	void *(*ssl_ctx_get_cert_store)(const void *ctx);
};

/* The table, libcurl loaded the first time (stand-ins that fail if it
 * cannot be). */
const struct strata_curl_api *strata_curl(void);

#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init(...) (strata_curl()->global_init(__VA_ARGS__))
#define curl_easy_init(...) (strata_curl()->easy_init(__VA_ARGS__))
#define curl_easy_cleanup(...) (strata_curl()->easy_cleanup(__VA_ARGS__))
#define curl_easy_reset(...) (strata_curl()->easy_reset(__VA_ARGS__))
#define curl_easy_perform(...) (strata_curl()->easy_perform(__VA_ARGS__))
#define curl_easy_setopt(...) (strata_curl()->easy_setopt(__VA_ARGS__))
#define curl_easy_getinfo(...) (strata_curl()->easy_getinfo(__VA_ARGS__))
#define curl_easy_strerror(...) (strata_curl()->easy_strerror(__VA_ARGS__))
#define curl_easy_escape(...) (strata_curl()->easy_escape(__VA_ARGS__))
#define curl_free(...) (strata_curl()->free(__VA_ARGS__))
#define curl_slist_append(...) (strata_curl()->slist_append(__VA_ARGS__))
#define curl_slist_free_all(...) \
	(strata_curl()->slist_free_all(__VA_ARGS__))
#define curl_url(...) (strata_curl()->url(__VA_ARGS__))
#define curl_url_cleanup(...) (strata_curl()->url_cleanup(__VA_ARGS__))
#define curl_url_get(...) (strata_curl()->url_get(__VA_ARGS__))
#define curl_url_set(...) (strata_curl()->url_set(__VA_ARGS__))

#endif
