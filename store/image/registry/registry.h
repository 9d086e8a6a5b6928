/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry client (store-internal): the OCI distribution protocol over
 * libcurl, shared by pull (registry.c), push (registry-push.c), login and
 * tag lists (registry-login.c). One struct
 * strata_reg per (registry, repository); requests from several threads
 * each take a curl handle from its small pool.
 */
#ifndef STRATA_REGISTRY_H
#define STRATA_REGISTRY_H

#include <pthread.h>
#include <time.h>

#include "store-internal.h"

/* Manifests and indexes larger than this are refused (the bound
 * registries put on what they accept). */
#define STRATA_MANIFEST_MAX (4u << 20)

struct strata_reg_opts;		/* store.h */

struct strata_reg {
	char *name;		/* as in the reference: "docker.io" */
	char *host;		/* API host[:port]: "registry-1.docker.io" */
	char *repo;		/* "library/alpine" */
	char base[600];		/* "https://host" or "http://host" */
	bool insecure;		/* --tls-verify=false or registries.conf */
	char *cert_dir;		/* *.crt, *.cert + *.key for this host */
	char *user, *pass;	/* credentials, or NULL */
	char *creds_from;	/* where they came from, for messages */
	bool creds_fixed;	/* given (--creds), not from an auth file */
	long stall;		/* seconds without a byte: retry */
	int retries;		/* attempts after the first */
	bool probed;		/* /v2/ answered (base is set) */
	pthread_mutex_t connect_lock;	/* held while probing */

	pthread_mutex_t lock;	/* protects what follows */
	int auth;		/* REG_AUTH_* learned from a 401 */
	char *realm, *service;	/* Bearer challenge */
	char *token;		/* Bearer token for the scopes below */
	bool push;		/* ask tokens for pull,push */
	char *mount_from[8];	/* other repositories (pull) for mounts */
	int n_mount_from;
	/* the token's life, in CLOCK_MONOTONIC milliseconds: a new one is
	 * fetched from @token_renew on, before it runs out at
	 * @token_expires; while that fetch runs, other requests send the
	 * old one until @token_last, then wait; @token_gen counts the
	 * tokens held */
	int64_t token_renew, token_last, token_expires;
	unsigned token_gen;
	bool renewing;		/* a thread is fetching a token */
	bool renew_warned;	/* a failed renewal was logged */
	pthread_cond_t renewed;	/* a fetch by another thread ended */
	void *pool[8];		/* idle CURL handles */
	int n_pool;
};

enum { REG_AUTH_NONE, REG_AUTH_BASIC, REG_AUTH_BEARER };

/* What a response said besides its body. */
struct strata_reg_resp {
	long status;
	char content_type[256];
	char docker_digest[STRATA_DIGEST_MAX];
	char www_auth[2048];
	char location[4096];
	char content_range[128];
	char range[128];
	char link[2048];	/* Link: of a paged list */	/* an upload's progress: "0-END" */
	int64_t chunk_min;	/* OCI-Chunk-Min-Length, 0 if absent */
	long retry_after;	/* seconds, -1 if absent */
	int64_t content_length;	/* -1 if absent */
};

/*
 * Where a body goes. write() gets the bytes of a 2xx body in order; it
 * returns 0 or a negative errno that ends the request for good (no
 * retry). @offset counts bytes accepted: when a retry resumes a body,
 * the request asks for "Range: bytes=offset-" if @resumable, and skips
 * the first @offset bytes of a server that answers 200 with the whole
 * body again.
 */
struct strata_reg_sink {
	int (*write)(struct strata_reg_sink *s, const void *buf, size_t n);
	/* a sink that cannot resume forgets what it got before a retry */
	void (*reset)(struct strata_reg_sink *s);
	uint64_t offset;
	bool resumable;
	struct strata_err err;	/* the sink's own message */
	/* private to the request */
	uint64_t skip;
	bool ranged;
	/* the answer whose body write() gets: its status and
	 * Content-Length (-1 if absent), set before its first byte */
	long status;
	int64_t length;
};

/* Open a client for @ref (kind STRATA_REF_DOCKER) with @o (may be NULL):
 * credentials, TLS settings, registries.conf. Caller frees with
 * strata_reg_free(). */
int strata_reg_open(const struct strata_ref *ref,
		    const struct strata_reg_opts *o, struct strata_reg **out,
		    struct strata_err *err);
void strata_reg_free(struct strata_reg *reg);
/* Close the idle curl handles (registry-http.c). */
void strata_reg_pool_free(struct strata_reg *reg);

/* Probe /v2/ if not done yet (strata_reg_get does it first). */
int strata_reg_connect(struct strata_reg *reg, struct strata_err *err);

/*
 * GET @path (below /v2/<repo>/, e.g. "manifests/latest") with @accept
 * (or NULL), body to @sink; redirects followed without credentials to
 * another host; 401 answered with Basic or a Bearer token; 429, 5xx and
 * broken or stalled connections retried with backoff. Return: 0 with
 * @resp of the final 2xx answer, or negative errno with a message naming
 * registry, repository and @what.
 */
int strata_reg_get(struct strata_reg *reg, const char *path,
		   const char *accept, struct strata_reg_sink *sink,
		   struct strata_reg_resp *resp, const char *what,
		   struct strata_err *err);

/*
 * A request: @method ("GET", "HEAD", "POST", "PUT", "PATCH"), to @url
 * (absolute, or relative to the registry: an upload's Location) or else
 * @path as strata_reg_get. Methods other than GET and HEAD send a body
 * of @body_len bytes (maybe 0) from @body or, if NULL, read from @body_fd
 * at @body_off; it is sent again from its start on a retry. @headers:
 * extra "Name: value" lines. A status in @ok_status is an answer, not an
 * error (a 404 to HEAD, a 202 to a mount, 416 to PATCH). @progress is
 * told of bytes sent.
 */
struct strata_reg_req {
	const char *method;
	const char *url;
	const char *path;
	const char *accept;
	const char *headers[4];
	const char *body;
	int body_fd;
	uint64_t body_off, body_len;
	long ok_status[4];
	struct strata_reg_sink *sink;
	void (*progress)(void *ctx, uint64_t bytes);
	void *progress_ctx;
};

/* Return: 0 with @resp of the final answer (a 2xx or one of
 * @ok_status; resp->location absolute), or negative errno with a message
 * naming registry, repository and @what. */
int strata_reg_request(struct strata_reg *reg, const struct strata_reg_req *q,
		       struct strata_reg_resp *resp, const char *what,
		       struct strata_err *err);

/* registry-auth.c */

/* Credentials for registry @name: "USER[:PASS]" from @creds, else the
 * auth files (containers-auth.json(5) order). Sets reg->user, pass,
 * creds_from; none found is not an error. */
int strata_reg_find_creds(struct strata_reg *reg, const char *creds,
			  struct strata_err *err);
/* Credentials refused: read the auth files again unless they were given
 * with --creds (a `strata login` since a long mount began). Called with
 * reg->lock held. Return: 1 when they changed, else 0. */
int strata_reg_reload_creds(struct strata_reg *reg);
/* Parse a WWW-Authenticate value; learn the scheme (and realm, service).
 * Return: REG_AUTH_BASIC, REG_AUTH_BEARER, or -EPROTO. */
int strata_reg_challenge(struct strata_reg *reg, const char *value);
/* The Authorization line for a request to the registry while the
 * scheme is Bearer ("Authorization: Bearer T"; NULL without a token),
 * and the token's generation for strata_reg_token_refused(). A token due
 * for renewal is renewed first, by one thread; the others use the old
 * one meanwhile, or wait for the new one if it has run out. A renewal
 * that fails (token server down) is logged and tried again later; the
 * old token is used until the registry refuses it. Caller frees. */
char *strata_reg_bearer(struct strata_reg *reg, unsigned *gen);
/* The registry answered 401 to the token of generation @gen (0: none):
 * fetch a new one (with credentials read again if the token server
 * refuses them), unless another thread has got one since. Called
 * without reg->lock. Return: 0 or negative errno. */
int strata_reg_token_refused(struct strata_reg *reg, unsigned gen,
			     struct strata_err *err);

/* registry-parse.c: what an answer says, parsed */

/* One header line @buf (@n bytes, not NUL-terminated, CRLF kept) into
 * @r; a status line ("HTTP/...") starts @r over. Values are trimmed and
 * cut to their field's size; numbers out of range are left unset. */
void strata_reg_header(struct strata_reg_resp *r, const char *buf, size_t n);
/* Content-Range "bytes START-END/TOTAL": does it start at @off? */
bool strata_reg_range_starts_at(const char *cr, uint64_t off);
/* The origin of @url, "scheme://host:port" lower-cased, into @out ("" if
 * it is no URL): credentials go only where the registry itself is. */
void strata_reg_origin(const char *url, char *out, size_t cap);
/* @loc resolved against @base; NULL on a bad or non-http(s) location.
 * Caller frees. */
char *strata_reg_resolve(const char *base, const char *loc);
/* An upload's Range, "0-END" (or "bytes=0-END"): *@next = END + 1, the
 * bytes it holds. Return: 0 or -EPROTO. */
int strata_reg_upload_range(const char *r, uint64_t *next);
/* The URL of Link: <URL>; rel="next", or "" (also when it does not fit
 * @cap). */
void strata_reg_next_link(const char *link, char *out, size_t cap);

/* registry-conf.c */

/* Is @host[:port] marked insecure in registries.conf? */
bool strata_reg_conf_insecure(const char *host);
/* The certs.d directory of @host (from $STRATA_CERTS_D or the defaults),
 * or NULL. Caller frees. */
char *strata_reg_certs_dir(const char *host);
/* libcurl CURLOPT_SSL_CTX_FUNCTION adding the *.crt of directory @dir
 * to the CAs libcurl loaded. */
int strata_reg_ssl_ctx(void *curl, void *ssl_ctx, void *dir);
/* The first NAME.cert with a NAME.key in @dir. Return: 1 found, 0 not;
 * caller frees both. */
int strata_reg_client_cert(const char *dir, char **cert, char **key);
/* Apply reg's TLS settings to a curl handle. */
int strata_reg_apply_tls(struct strata_reg *reg, void *curl);

#endif
