/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP for the registry client, over libcurl. Everything a registry (or
 * whoever answers in its name) sends is hostile: bodies go to a sink that
 * bounds and verifies them, header values are length-limited and only
 * ever printed through strata_printable, error bodies are kept to 16 KiB.
 *
 * Redirects are followed here, not by libcurl: the Authorization header
 * is ours (Basic or Bearer) and must never reach another host, and a
 * blob GET is usually redirected to storage on another host.
 *
 * Retries (distribution spec, and what containers/image does): 429 and
 * 5xx answers and broken or stalled connections are retried up to
 * reg->retries times, waiting Retry-After (at most 30 s) or 1, 2, 4 s
 * ...; a body cut short is resumed with Range where the sink allows it.
 * A refused connection (nothing listening) is not retried: a registry
 * that is down fails at once, so a lazy read gives EIO without waiting
 * and the next read asks again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "curl-dl.h"
#include "registry.h"

#define ERRBODY_MAX (16u << 10)
#define MAX_REDIRECTS 10

struct xfer {
	struct strata_reg *reg;
	struct strata_reg_sink *sink;
	const struct strata_reg_req *req;
	uint64_t body_pos;
	struct strata_reg_resp *resp;
	CURL *c;
	char errbody[ERRBODY_MAX + 1];
	size_t errlen;
	int sink_ret;		/* the sink refused: final */
	bool started;		/* first body byte of this response seen */
	unsigned token_gen;	/* of the Bearer token sent, 0 if none */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static CURL *handle_get(struct strata_reg *reg)
{
	CURL *c = NULL;

	pthread_mutex_lock(&reg->lock);
	if (reg->n_pool > 0)
		c = reg->pool[--reg->n_pool];
	pthread_mutex_unlock(&reg->lock);
	if (c) {
		curl_easy_reset(c);
		return c;
	}
	pthread_once(&curl_once, curl_init_once);
	return curl_easy_init();
}

static void handle_put(struct strata_reg *reg, CURL *c)
{
	pthread_mutex_lock(&reg->lock);
	if (reg->n_pool < (int)ARRAY_SIZE(reg->pool)) {
		reg->pool[reg->n_pool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&reg->lock);
	if (c)
		curl_easy_cleanup(c);
}

void strata_reg_pool_free(struct strata_reg *reg)
{
	while (reg->n_pool > 0)
		curl_easy_cleanup(reg->pool[--reg->n_pool]);
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ctx)
{
	struct xfer *x = ctx;

	strata_reg_header(x->resp, buf, size * nitems);
	return size * nitems;
}

static size_t write_cb(char *buf, size_t size, size_t nmemb, void *ctx)
{
	struct xfer *x = ctx;
	struct strata_reg_sink *s = x->sink;
	size_t n = size * nmemb, off = 0;
	long status = 0;

	curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299 || !s) {
		size_t room = ERRBODY_MAX - x->errlen;

		if (n < room)
			room = n;
		memcpy(x->errbody + x->errlen, buf, room);
		x->errlen += room;
		return n;
	}
	if (!x->started) {
		x->started = true;
		if (s->ranged && status == 206 &&
		    !strata_reg_range_starts_at(x->resp->content_range,
						s->offset)) {
			x->sink_ret = strata_err_set(&s->err, -EPROTO,
				"the server resumed at the wrong offset "
				"(Content-Range not starting at %llu)",
				(unsigned long long)s->offset);
			return 0;
		}
		/* 200 to a Range request: the whole body again */
		s->skip = s->ranged && status != 206 ? s->offset : 0;
		s->status = status;
		s->length = x->resp->content_length;
	}
	if (s->skip) {
		off = n < s->skip ? n : (size_t)s->skip;
		s->skip -= off;
	}
	if (off < n) {
		int r = s->write(s, buf + off, n - off);

		if (r < 0) {
			x->sink_ret = r;
			return 0;
		}
		s->offset += n - off;
	}
	return n;
}

static CURLcode ssl_ctx_cb(CURL *c, void *ssl_ctx, void *dir)
{
	strata_reg_ssl_ctx(c, ssl_ctx, dir);
	return CURLE_OK;
}

int strata_reg_apply_tls(struct strata_reg *reg, void *curl)
{
	CURL *c = curl;

	if (reg->insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (reg->cert_dir) {
		cleanup_free char *cert = NULL, *key = NULL;

		curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
		curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, reg->cert_dir);
		if (strata_reg_client_cert(reg->cert_dir, &cert, &key) > 0) {
			curl_easy_setopt(c, CURLOPT_SSLCERT, cert);
			curl_easy_setopt(c, CURLOPT_SSLKEY, key);
		}
	}
	return 0;
}

static bool transient_curl(CURLcode cc)
{
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/* The "code" and "message" of the first error of a registry error body
 * (distribution spec "Error Codes"), printable, into @out. */
static void error_codes(const char *body, size_t len, char *code,
			size_t ccap, char *msg, size_t mcap)
{
	struct json_object *o = NULL, *errs, *e, *v;

	code[0] = msg[0] = '\0';
	if (!len || len > ERRBODY_MAX)
		return;
	o = json_tokener_parse(body);
	if (!o)
		return;
	if (json_object_object_get_ex(o, "errors", &errs) &&
	    json_object_is_type(errs, json_type_array) &&
	    json_object_array_length(errs) > 0 &&
	    (e = json_object_array_get_idx(errs, 0)) &&
	    json_object_is_type(e, json_type_object)) {
		if (json_object_object_get_ex(e, "code", &v) &&
		    json_object_is_type(v, json_type_string))
			strata_printable(json_object_get_string(v),
					 (size_t)json_object_get_string_len(v),
					 code, ccap);
		if (json_object_object_get_ex(e, "message", &v) &&
		    json_object_is_type(v, json_type_string))
			strata_printable(json_object_get_string(v),
					 (size_t)json_object_get_string_len(v),
					 msg, mcap);
	}
	json_object_put(o);
}

static int status_error(struct strata_reg *reg, struct xfer *x,
			const char *what, struct strata_err *err)
{
	long st = x->resp->status;
	char code[64], msg[200], from[300] = "";
	bool user;

	x->errbody[x->errlen] = '\0';
	error_codes(x->errbody, x->errlen, code, sizeof(code), msg,
		    sizeof(msg));
	pthread_mutex_lock(&reg->lock);
	user = reg->user != NULL;
	if (user)
		snprintf(from, sizeof(from), "%s",
			 reg->creds_from ? reg->creds_from : "--creds");
	pthread_mutex_unlock(&reg->lock);
	if (st == 401 || st == 403)
		return strata_err_set(err, -EACCES,
			"registry %s: repository %s: %s: %s (HTTP %ld%s%s)%s%s%s",
			reg->name, reg->repo, what,
			st == 401 ? "authentication required"
				  : "access denied",
			st, code[0] ? " " : "", code,
			user ? ": the credentials (from " : "", from,
			user ? ") were refused"
				  : ": give credentials with --creds USER:PASS "
				    "or in an auth file (containers-auth.json)");
	if (st == 404 && !strcmp(code, "NAME_UNKNOWN"))
		return strata_err_set(err, -ENOENT,
				      "registry %s: no repository %s (HTTP 404 "
				      "NAME_UNKNOWN)", reg->name, reg->repo);
	if (st == 404)
		return strata_err_set(err, -ENOENT,
				      "registry %s: repository %s: %s: no such "
				      "%s (HTTP 404%s%s)", reg->name, reg->repo,
				      what, strstr(what, "blob") ? "blob"
								 : "manifest",
				      code[0] ? " " : "", code);
	return strata_err_set(err, -EPROTO,
			      "registry %s: repository %s: %s: HTTP %ld%s%s%s%s",
			      reg->name, reg->repo, what, st,
			      code[0] ? " " : "", code, msg[0] ? ": " : "",
			      msg);
}

static void backoff(long retry_after, int attempt)
{
	unsigned s = retry_after >= 0
			     ? (unsigned)(retry_after > 30 ? 30 : retry_after)
			     : 1u << (attempt < 5 ? attempt : 5);

	if (s)
		sleep(s);
}

/* Our Authorization for handle @c: a Bearer header line added to @h
 * (the token's generation in x->token_gen), or Basic credentials set on
 * @c (libcurl copies them: a `strata login` may replace reg's while this
 * request runs). */
static struct curl_slist *auth_header(struct strata_reg *reg, struct xfer *x,
				      struct curl_slist *h)
{
	char *line = NULL;
	int auth;

	pthread_mutex_lock(&reg->lock);
	auth = reg->auth;
	if (auth == REG_AUTH_BASIC && reg->user) {
		curl_easy_setopt(x->c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
		curl_easy_setopt(x->c, CURLOPT_USERNAME, reg->user);
		curl_easy_setopt(x->c, CURLOPT_PASSWORD,
				 reg->pass ? reg->pass : "");
	}
	pthread_mutex_unlock(&reg->lock);
	x->token_gen = 0;
	if (auth == REG_AUTH_BEARER)
		line = strata_reg_bearer(reg, &x->token_gen);
	if (line) {
		h = curl_slist_append(h, line);
		free(line);
	}
	return h;
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ctx)
{
	struct xfer *x = ctx;
	const struct strata_reg_req *q = x->req;
	size_t n = size * nitems;
	uint64_t left = q->body_len - x->body_pos;
	ssize_t got;

	if (n > left)
		n = (size_t)left;
	if (!n)
		return 0;
	if (q->body) {
		memcpy(buf, q->body + x->body_pos, n);
		got = (ssize_t)n;
	} else {
		got = pread(q->body_fd, buf, n,
			    (off_t)(q->body_off + x->body_pos));
		if (got <= 0)
			return CURL_READFUNC_ABORT;
	}
	x->body_pos += (uint64_t)got;
	if (q->progress)
		q->progress(q->progress_ctx, (uint64_t)got);
	return (size_t)got;
}

/* One exchange with one URL: no redirect, no retry. */
static CURLcode perform(struct strata_reg *reg, struct xfer *x,
			const char *url, const char *accept, bool with_auth)
{
	struct curl_slist *h = NULL;
	char range[64], acc[1024];
	CURLcode cc;
	CURL *c = x->c;

	curl_easy_reset(c);
	memset(x->resp, 0, sizeof(*x->resp));
	x->resp->retry_after = -1;
	x->resp->content_length = -1;
	x->errlen = 0;
	x->started = false;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "strata/" "0.1");
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, reg->stall);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
	if (strata_reg_apply_tls(reg, c) < 0)
		return CURLE_OUT_OF_MEMORY;
	if (x->req && x->req->method && !strcmp(x->req->method, "HEAD")) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (x->req && x->req->method && strcmp(x->req->method, "GET")) {
		/* a body (maybe empty) with Content-Length, whatever the
		 * verb; no "Expect: 100-continue" round trip */
		x->body_pos = 0;
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, x->req->method);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(c, CURLOPT_READDATA, x);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)x->req->body_len);
		h = curl_slist_append(h, "Expect:");
		h = curl_slist_append(h, "Transfer-Encoding:");
	}
	for (int i = 0; x->req && i < (int)ARRAY_SIZE(x->req->headers) &&
			x->req->headers[i]; i++)
		h = curl_slist_append(h, x->req->headers[i]);
	if (accept) {
		snprintf(acc, sizeof(acc), "Accept: %s", accept);
		h = curl_slist_append(h, acc);
	}
	if (x->sink && !x->sink->resumable && x->sink->offset > 0) {
		if (x->sink->reset)
			x->sink->reset(x->sink);
		x->sink->offset = 0;
	}
	if (x->sink && x->sink->resumable && x->sink->offset > 0) {
		snprintf(range, sizeof(range), "Range: bytes=%llu-",
			 (unsigned long long)x->sink->offset);
		h = curl_slist_append(h, range);
		x->sink->ranged = true;
	} else if (x->sink) {
		x->sink->ranged = false;
	}
	if (with_auth)
		h = auth_header(reg, x, h);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->resp->status);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h);
	return cc;
}

int strata_reg_get(struct strata_reg *reg, const char *path,
		   const char *accept, struct strata_reg_sink *sink,
		   struct strata_reg_resp *resp, const char *what,
		   struct strata_err *err)
{
	struct strata_reg_req q = { .method = "GET", .path = path,
				    .accept = accept, .sink = sink };

	return strata_reg_request(reg, &q, resp, what, err);
}

static bool status_wanted(const struct strata_reg_req *q, long st)
{
	for (size_t i = 0; i < ARRAY_SIZE(q->ok_status) && q->ok_status[i]; i++)
		if (q->ok_status[i] == st)
			return true;
	return false;
}

int strata_reg_request(struct strata_reg *reg, const struct strata_reg_req *q,
		       struct strata_reg_resp *resp, const char *what,
		       struct strata_err *err)
{
	const char *path = q->path, *accept = q->accept;
	struct strata_reg_sink *sink = q->sink;
	cleanup_free struct xfer *x = calloc(1, sizeof(*x));
	cleanup_free char *url = NULL, *first = NULL;
	char home[600], here[600];
	int attempt = 0, hops = 0, auth_tries = 0, r;

	if (!x)
		return -ENOMEM;
	if (q->url || strcmp(path, "/")) {
		pthread_mutex_lock(&reg->connect_lock);
		r = reg->probed ? 0 : strata_reg_connect(reg, err);
		pthread_mutex_unlock(&reg->connect_lock);
		if (r < 0)
			return r;
	}
	x->reg = reg;
	x->sink = sink;
	x->req = q;
	x->resp = resp;
	x->c = handle_get(reg);
	if (!x->c)
		return -ENOMEM;
	if (q->url) {
		/* an upload's Location, resolved against the registry: its
		 * query parameters are the registry's state, kept as given */
		url = strata_reg_resolve(reg->base, q->url);
		if (!url) {
			char lp[200];

			r = strata_err_set(err, -EPROTO, "registry %s: "
					   "repository %s: %s: unusable "
					   "location \"%s\"", reg->name,
					   reg->repo, what,
					   strata_printable(q->url,
							    strlen(q->url),
							    lp, sizeof(lp)));
			goto out;
		}
	} else if (asprintf(&url, "%s/v2/%s%s%s", reg->base, reg->repo,
			    *path ? "/" : "", path) < 0) {
		url = NULL;
		r = -ENOMEM;
		goto out;
	}
	if (!q->url && !strcmp(path, "/")) {
		free(url);
		if (asprintf(&url, "%s/v2/", reg->base) < 0) {
			url = NULL;
			r = -ENOMEM;
			goto out;
		}
	}
	strata_reg_origin(url, home, sizeof(home));
	first = strdup(url);
	if (!first) {
		r = -ENOMEM;
		goto out;
	}
	for (;;) {
		CURLcode cc;
		long st;

		strata_reg_origin(url, here, sizeof(here));
		cc = perform(reg, x, url, accept, !strcmp(here, home));
		st = resp->status;
		if (x->sink_ret < 0) {
			r = strata_err_set(err, x->sink_ret,
					   "registry %s: repository %s: %s: %s",
					   reg->name, reg->repo, what,
					   sink->err.code ? sink->err.msg
						: strerror(-x->sink_ret));
			goto out;
		}
		if (cc == CURLE_OK && (status_wanted(q, st) ||
				       (st >= 200 && st < 300))) {
			r = 0;
			goto out;
		}
		if (cc == CURLE_OK && st >= 300 && st < 400 && st != 304 &&
		    resp->location[0]) {
			char *next = strata_reg_resolve(url, resp->location);
			char lp[200];

			if (!next || ++hops > MAX_REDIRECTS) {
				free(next);
				r = strata_err_set(err, -EPROTO,
					"registry %s: repository %s: %s: %s "
					"redirect to \"%s\"", reg->name,
					reg->repo, what,
					next ? "too many redirects; last"
					     : "refused",
					strata_printable(resp->location,
							 strlen(resp->location),
							 lp, sizeof(lp)));
				goto out;
			}
			free(url);
			url = next;
			continue;
		}
		if (cc == CURLE_OK && st == 401 && !strcmp(here, home) &&
		    auth_tries++ < 2) {
			int kind = strata_reg_challenge(reg, resp->www_auth);

			bool again;

			if (kind == REG_AUTH_BEARER) {
				/* a new token, unless another thread
				 * fetched one since this one was sent */
				r = strata_reg_token_refused(reg,
							     x->token_gen,
							     err);
				again = r == 0;
			} else {
				/* credentials refused: maybe `strata
				 * login` has stored new ones since they
				 * were read (a long lazy mount): read
				 * again, and try them once */
				pthread_mutex_lock(&reg->lock);
				again = kind == REG_AUTH_BASIC && reg->user &&
					(auth_tries == 1 ||
					 strata_reg_reload_creds(reg) > 0);
				pthread_mutex_unlock(&reg->lock);
				r = 0;
			}
			if (r < 0)
				goto out;
			if (again)
				continue;
		}
		if (cc == CURLE_OK && st >= 200 && st < 300) {
			r = 0;
			goto out;
		}
		if ((cc == CURLE_OK && (st == 429 || st >= 500)) ||
		    (cc != CURLE_OK && transient_curl(cc))) {
			if (attempt++ < reg->retries) {
				long ra = cc == CURLE_OK ? resp->retry_after
							 : -1;

				if (cc != CURLE_OK)
					strata_warn("registry %s: %s: %s; "
						    "retrying", reg->name, what,
						    curl_easy_strerror(cc));
				else
					strata_warn("registry %s: %s: HTTP "
						    "%ld; retrying", reg->name,
						    what, st);
				backoff(ra, attempt - 1);
				/* a redirect target may have expired */
				free(url);
				url = strdup(first);
				if (!url) {
					r = -ENOMEM;
					goto out;
				}
				hops = 0;
				continue;
			}
		}
		if (cc != CURLE_OK) {
			int code = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
				   : cc == CURLE_SSL_CONNECT_ERROR ||
				     cc == CURLE_PEER_FAILED_VERIFICATION ||
				     cc == CURLE_SSL_CERTPROBLEM ||
				     cc == CURLE_SSL_CACERT_BADFILE
					   ? -EPROTO : -ECONNREFUSED;

			r = strata_err_set(err, code,
					   "registry %s: repository %s: %s: %s",
					   reg->name, reg->repo, what,
					   curl_easy_strerror(cc));
			goto out;
		}
		r = status_error(reg, x, what, err);
		goto out;
	}
out:
	if (r == 0 && resp->location[0]) {
		/* Location made absolute against the URL that answered (it
		 * may be relative, with query parameters to keep) */
		char *abs = strata_reg_resolve(url, resp->location);

		if (abs && strlen(abs) < sizeof(resp->location))
			memcpy(resp->location, abs, strlen(abs) + 1);
		else
			resp->location[0] = '\0';
		free(abs);
	}
	handle_put(reg, x->c);
	return r;
}
