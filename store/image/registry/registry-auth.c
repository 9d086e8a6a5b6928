/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry credentials and authentication.
 *
 * Credentials: --creds USER[:PASS], else the first auth file that has an
 * entry for the registry, in containers-auth.json(5) order:
 * $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
 * ~/.config/containers/auth.json, ~/.docker/config.json. Entries are the
 * plain "auths": {"HOST": {"auth": base64("user:pass")}} kind; credential
 * helpers (credHelpers, credsStore) are not run.
 *
 * Authentication follows the registry's 401 (distribution "token"
 * spec): Basic sends the credentials; Bearer fetches a token from the
 * challenge's realm for scope repository:REPO:pull (pull,push for a push,
 * plus repository:OTHER:pull for each repository a blob is mounted from;
 * no scope for a login check), with the credentials, if any, as Basic.
 * The token's life (expires_in, 60 s when absent; issued_at) is kept: a
 * new token is fetched before the old one runs out (half its life, at
 * most 30 s, before), by one thread while the others go on with the old
 * one, so that a long lazy mount never sends a token that has expired.
 * A token server that is down then leaves the old token in use until
 * the registry answers 401, which always fetches a new one. Refused
 * credentials from an auth file are read from it again (a `strata
 * login` since a long lazy mount began) and tried once more.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "curl-dl.h"
#include "registry.h"

#define TOKEN_MAX (1u << 20)

/* The auth file key forms that name @reg (docker.io has its own). */
static bool key_matches(const char *key, const char *name)
{
	size_t n = strlen(name);

	if (!strncmp(key, "https://", 8))
		key += 8;
	else if (!strncmp(key, "http://", 7))
		key += 7;
	if (!strcmp(name, "docker.io") &&
	    (!strncmp(key, "index.docker.io", 15) ||
	     !strncmp(key, "registry-1.docker.io", 20)))
		return true;
	return !strncmp(key, name, n) && (key[n] == '\0' || key[n] == '/');
}

static int set_userpass(struct strata_reg *reg, const char *s, size_t n,
			const char *from)
{
	const char *colon = memchr(s, ':', n);

	free(reg->user);
	free(reg->pass);
	free(reg->creds_from);
	reg->user = strndup(s, colon ? (size_t)(colon - s) : n);
	reg->pass = colon ? strndup(colon + 1, n - (size_t)(colon - s) - 1)
			  : NULL;
	reg->creds_from = from ? strdup(from) : NULL;
	if (!reg->user || (colon && !reg->pass) || (from && !reg->creds_from))
		return -ENOMEM;
	return 0;
}

/* Look @reg up in the auth file @path. Return: 1 found, 0 not. */
static int from_file(struct strata_reg *reg, const char *path,
		     struct strata_err *err)
{
	cleanup_free char *buf = NULL;
	struct json_object *o = NULL, *auths, *e, *a;
	size_t len;
	int r, found = 0;

	r = strata_read_file(AT_FDCWD, path, 1u << 20, &buf, &len);
	if (r < 0)
		return 0;
	if (strata_json_parse(buf, len, path, &o, NULL) < 0) {
		strata_warn("%s: not valid JSON, ignored", path);
		return 0;
	}
	if (!json_object_object_get_ex(o, "auths", &auths) ||
	    !json_object_is_type(auths, json_type_object))
		goto out;
	json_object_object_foreach(auths, key, val) {
		unsigned char dec[4096];
		const char *b64;
		int dlen;
		size_t blen;

		if (!key_matches(key, reg->name))
			continue;
		e = val;
		if (!json_object_is_type(e, json_type_object) ||
		    !json_object_object_get_ex(e, "auth", &a) ||
		    !json_object_is_type(a, json_type_string))
			continue;
		b64 = json_object_get_string(a);
		blen = strlen(b64);
		if (blen == 0 || blen > 4 * (sizeof(dec) / 3) - 4 || blen % 4)
			continue;
		dlen = EVP_DecodeBlock(dec, (const unsigned char *)b64,
				       (int)blen);
		if (dlen < 0)
			continue;
		while (dlen > 0 && blen > 0 && b64[--blen] == '=')
			dlen--;
		if (!memchr(dec, ':', (size_t)dlen))
			continue;
		r = set_userpass(reg, (const char *)dec, (size_t)dlen, path);
		if (r < 0) {
			json_object_put(o);
			return r;
		}
		found = 1;
		break;
	}
out:
	json_object_put(o);
	(void)err;
	return found;
}

int strata_reg_find_creds(struct strata_reg *reg, const char *creds,
			  struct strata_err *err)
{
	const char *env = getenv("REGISTRY_AUTH_FILE");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	const char *home = getenv("HOME");
	char path[4096];
	int r;

	if (creds) {
		reg->creds_fixed = true;
		return set_userpass(reg, creds, strlen(creds), NULL);
	}
	if (env && *env)
		return from_file(reg, env, err) < 0 ? -ENOMEM : 0;
	if ((xdg && *xdg) || geteuid() == 0) {
		/* where podman login (and strata login) write */
		if (xdg && *xdg)
			snprintf(path, sizeof(path), "%s/containers/auth.json",
				 xdg);
		else
			snprintf(path, sizeof(path),
				 "/run/containers/0/auth.json");
		if ((r = from_file(reg, path, err)) != 0)
			return r < 0 ? r : 0;
	}
	if (home && *home) {
		snprintf(path, sizeof(path), "%s/.config/containers/auth.json",
			 home);
		if ((r = from_file(reg, path, err)) != 0)
			return r < 0 ? r : 0;
		snprintf(path, sizeof(path), "%s/.docker/config.json", home);
		if ((r = from_file(reg, path, err)) != 0)
			return r < 0 ? r : 0;
	}
	return 0;
}

static bool same(const char *a, const char *b)
{
	return a && b ? !strcmp(a, b) : a == b;
}

int strata_reg_reload_creds(struct strata_reg *reg)
{
	cleanup_free char *user = NULL, *pass = NULL;

	if (reg->creds_fixed)
		return 0;
	if ((reg->user && !(user = strdup(reg->user))) ||
	    (reg->pass && !(pass = strdup(reg->pass))))
		return 0;
	if (strata_reg_find_creds(reg, NULL, NULL) < 0)
		return 0;
	return !same(user, reg->user) || !same(pass, reg->pass);
}

/* Next auth-param of a challenge: KEY=VALUE or KEY="VALUE" (with \
 * escapes), separated by commas. Return: false at the end. */
static bool next_param(const char **p, char *key, size_t kcap, char *val,
		       size_t vcap)
{
	const char *s = *p;
	size_t k = 0, v = 0;

	while (*s == ' ' || *s == ',' || *s == '\t')
		s++;
	if (!*s)
		return false;
	while (*s && *s != '=' && *s != ',' && *s != ' ') {
		if (k + 1 < kcap)
			key[k++] = *s;
		s++;
	}
	key[k] = '\0';
	while (*s == ' ')
		s++;
	if (*s != '=') {
		val[0] = '\0';
		*p = s;
		return true;
	}
	s++;
	while (*s == ' ')
		s++;
	if (*s == '"') {
		s++;
		while (*s && *s != '"') {
			if (*s == '\\' && s[1])
				s++;
			if (v + 1 < vcap)
				val[v++] = *s;
			s++;
		}
		if (*s == '"')
			s++;
	} else {
		while (*s && *s != ',' && *s != ' ') {
			if (v + 1 < vcap)
				val[v++] = *s;
			s++;
		}
	}
	val[v] = '\0';
	*p = s;
	return true;
}

int strata_reg_challenge(struct strata_reg *reg, const char *value)
{
	char key[64], val[1024];
	const char *p;

	if (!strncasecmp(value, "Basic", 5) &&
	    (value[5] == ' ' || value[5] == '\0')) {
		pthread_mutex_lock(&reg->lock);
		reg->auth = REG_AUTH_BASIC;
		pthread_mutex_unlock(&reg->lock);
		return REG_AUTH_BASIC;
	}
	if (strncasecmp(value, "Bearer ", 7))
		return -EPROTO;
	p = value + 7;
	pthread_mutex_lock(&reg->lock);
	while (next_param(&p, key, sizeof(key), val, sizeof(val))) {
		char **dst = !strcasecmp(key, "realm") ? &reg->realm
			     : !strcasecmp(key, "service") ? &reg->service
							   : NULL;

		if (!dst)
			continue;
		free(*dst);
		*dst = strdup(val);
	}
	reg->auth = REG_AUTH_BEARER;
	pthread_mutex_unlock(&reg->lock);
	return REG_AUTH_BEARER;
}

struct membuf {
	char *buf;
	size_t len;
	bool too_big;
};

static size_t mem_write(char *p, size_t size, size_t n, void *ctx)
{
	struct membuf *m = ctx;
	size_t len = size * n;
	char *nb;

	if (m->len + len > TOKEN_MAX) {
		m->too_big = true;
		return 0;
	}
	nb = realloc(m->buf, m->len + len + 1);
	if (!nb)
		return 0;
	m->buf = nb;
	memcpy(m->buf + m->len, p, len);
	m->len += len;
	m->buf[m->len] = '\0';
	return len;
}

/* The token request's URL for reg's scopes: the scope (none for a login
 * check), one more for each repository a cross-repository mount reads
 * (distribution token spec), then the service. Called with reg->lock
 * held. Return: the URL (caller frees) or NULL. */
static char *token_url(struct strata_reg *reg, CURL *c)
{
	cleanup_free char *scope = NULL, *more = NULL;
	char *esc_service = NULL, *esc_scope = NULL, *url = NULL;

	if (*reg->repo && asprintf(&scope, "repository:%s:%s", reg->repo,
				   reg->push ? "pull,push" : "pull") < 0)
		return NULL;
	esc_scope = scope ? curl_easy_escape(c, scope, 0) : NULL;
	esc_service = reg->service ? curl_easy_escape(c, reg->service, 0)
				   : NULL;
	if (asprintf(&more, "%s%s", esc_scope ? "&scope=" : "",
		     esc_scope ? esc_scope : "") < 0)
		more = NULL;
	for (int i = 0; more && i < reg->n_mount_from; i++) {
		char *e = curl_easy_escape(c, reg->mount_from[i], 0);
		char *next = NULL;

		if (!e || asprintf(&next, "%s&scope=repository%%3A%s%%3Apull",
				   more, e) < 0)
			next = NULL;
		curl_free(e);
		free(more);
		more = next;
	}
	if ((scope && !esc_scope) || (reg->service && !esc_service) ||
	    !more ||
	    asprintf(&url, "%s%s%s%s%s", reg->realm,
		     strchr(reg->realm, '?') ? "&" : "?", more[0] ? more + 1 : "",
		     esc_service ? (more[0] ? "&service=" : "service=") : "",
		     esc_service ? esc_service : "") < 0)
		url = NULL;
	curl_free(esc_scope);
	curl_free(esc_service);
	return url;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * How long a token answered at @asked (monotonic ms, when the request
 * was sent: the token cannot be older) stays good, from the answer @o:
 * "expires_in" seconds (60 when absent, as the spec says; shorter ones
 * are honoured: a registry that issues them refuses them when they run
 * out), counted from "issued_at" (RFC 3339) when that is before @sent
 * (wall clock, when the request was sent) by less than the lifetime (a
 * token a server hands out again); a later or older issued_at is clock
 * skew and is not believed. Sets reg's renew and expiry times: renewed
 * when half its life or 30 s remain, whichever is less; while that runs,
 * other requests send it during half that margin more.
 */
static void token_life(struct strata_reg *reg, struct json_object *o,
		       int64_t asked, int64_t sent)
{
	struct json_object *v;
	int64_t life = 60000, age = 0, at, margin;
	uint32_t nsec;

	if (json_object_object_get_ex(o, "expires_in", &v) &&
	    json_object_is_type(v, json_type_int) &&
	    json_object_get_int64(v) > 0 &&
	    json_object_get_int64(v) < 86400 * 365)
		life = json_object_get_int64(v) * 1000;
	if (json_object_object_get_ex(o, "issued_at", &v) &&
	    json_object_is_type(v, json_type_string) &&
	    strata_rfc3339_parse(json_object_get_string(v), &at, &nsec) == 0 &&
	    at <= sent && (sent - at) * 1000 < life)
		age = (sent - at) * 1000;
	life -= age;
	margin = life / 2 < 30000 ? life / 2 : 30000;
	reg->token_expires = asked + life;
	reg->token_renew = reg->token_expires - margin;
	/* a request sent just before the end may reach the registry after
	 * it: leave it half the margin */
	reg->token_last = reg->token_expires - margin / 2;
}

/* Fetch a token from the realm for reg's scopes (with the credentials,
 * if any) and keep it. Called without reg->lock, by the one thread that
 * set reg->renewing. Return: 0 or negative errno. */
static int fetch_token(struct strata_reg *reg, struct strata_err *err)
{
	struct membuf m = { 0 };
	struct json_object *o = NULL, *v;
	cleanup_free char *url = NULL, *user = NULL, *pass = NULL;
	cleanup_free char *token = NULL;
	char pr[200];
	long status = 0;
	int64_t asked, sent;
	CURLcode cc;
	CURL *c;
	int r = 0;

	c = curl_easy_init();
	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&reg->lock);
	if (!reg->realm || (strncmp(reg->realm, "https://", 8) &&
			    strncmp(reg->realm, "http://", 7))) {
		pthread_mutex_unlock(&reg->lock);
		curl_easy_cleanup(c);
		return strata_err_set(err, -EPROTO,
				      "registry %s: Bearer challenge without "
				      "a usable realm URL", reg->name);
	}
	strata_printable(reg->realm, strlen(reg->realm), pr, sizeof(pr));
	url = token_url(reg, c);
	/* a `strata login` may replace them while the request runs */
	user = reg->user ? strdup(reg->user) : NULL;
	pass = reg->pass ? strdup(reg->pass) : NULL;
	pthread_mutex_unlock(&reg->lock);
	if (!url || (!user && reg->user) || (!pass && reg->pass)) {
		r = -ENOMEM;
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, reg->stall);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &m);
	strata_reg_apply_tls(reg, c);
	if (user) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERNAME, user);
		curl_easy_setopt(c, CURLOPT_PASSWORD, pass ? pass : "");
	}
	asked = now_ms();
	sent = (int64_t)time(NULL);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK) {
		r = strata_err_set(err, m.too_big ? -EFBIG : -ECONNREFUSED,
				   "registry %s: token server %s: %s", reg->name,
				   pr, m.too_big ? "answer too large"
						 : curl_easy_strerror(cc));
		goto out;
	}
	if (status == 401 || status == 403) {
		r = strata_err_set(err, -EACCES,
				   "registry %s: token server %s refused %s "
				   "(HTTP %ld)%s", reg->name, pr,
				   user ? "the credentials" : "an "
				   "anonymous pull", status,
				   user ? "" : ": give credentials with "
				   "--creds USER:PASS or in an auth file");
		goto out;
	}
	if (status != 200 || !m.buf ||
	    strata_json_parse(m.buf, m.len, "token", &o, NULL) < 0) {
		r = strata_err_set(err, -EPROTO,
				   "registry %s: token server %s: HTTP %ld, "
				   "no token", reg->name, pr, status);
		goto out;
	}
	if ((!json_object_object_get_ex(o, "token", &v) ||
	     !json_object_is_type(v, json_type_string)) &&
	    (!json_object_object_get_ex(o, "access_token", &v) ||
	     !json_object_is_type(v, json_type_string))) {
		r = strata_err_set(err, -EPROTO, "registry %s: token server "
				   "%s: answer has no token", reg->name, pr);
		goto out;
	}
	/* a token goes into a header line: printable ASCII only */
	for (const char *t = json_object_get_string(v); *t; t++)
		if (*t <= ' ' || *t > '~') {
			r = strata_err_set(err, -EPROTO, "registry %s: token "
					   "server %s: malformed token",
					   reg->name, pr);
			goto out;
		}
	token = strdup(json_object_get_string(v));
	if (!token) {
		r = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&reg->lock);
	free(reg->token);
	reg->token = take_ptr(&token);
	reg->token_gen++;
	token_life(reg, o, asked, sent);
	pthread_mutex_unlock(&reg->lock);
out:
	if (o)
		json_object_put(o);
	free(m.buf);
	curl_easy_cleanup(c);
	return r;
}

/* Become the thread that fetches a token, after any fetch under way.
 * Called with reg->lock held. Return: false when a token newer than
 * generation @gen came meanwhile (no fetch needed). */
static bool renew_begin(struct strata_reg *reg, unsigned gen)
{
	while (reg->renewing)
		pthread_cond_wait(&reg->renewed, &reg->lock);
	if (reg->token_gen != gen)
		return false;
	reg->renewing = true;
	return true;
}

static void renew_end(struct strata_reg *reg)
{
	reg->renewing = false;
	pthread_cond_broadcast(&reg->renewed);
}

int strata_reg_token_refused(struct strata_reg *reg, unsigned gen,
			     struct strata_err *err)
{
	int r;

	pthread_mutex_lock(&reg->lock);
	if (!renew_begin(reg, gen)) {
		pthread_mutex_unlock(&reg->lock);
		return 0;
	}
	pthread_mutex_unlock(&reg->lock);
	r = fetch_token(reg, err);
	pthread_mutex_lock(&reg->lock);
	/* credentials refused: maybe `strata login` has stored new ones
	 * since they were read (a long lazy mount): read again, and try
	 * them once */
	if (r == -EACCES && strata_reg_reload_creds(reg) > 0) {
		pthread_mutex_unlock(&reg->lock);
		r = fetch_token(reg, err);
		pthread_mutex_lock(&reg->lock);
	}
	if (r == 0)
		reg->renew_warned = false;
	renew_end(reg);
	pthread_mutex_unlock(&reg->lock);
	return r;
}

/* A failed renewal is tried again after this long (ms), not on every
 * request, while the old token lasts. */
#define RENEW_RETRY 1000

char *strata_reg_bearer(struct strata_reg *reg, unsigned *gen)
{
	struct strata_err e = { 0 };
	char *line = NULL;
	int64_t now;
	int r;

	pthread_mutex_lock(&reg->lock);
	while (reg->token && (now = now_ms()) >= reg->token_renew) {
		if (reg->renewing) {
			/* another thread renews it: the old one serves
			 * while it lasts, then wait for the new one */
			if (now < reg->token_last)
				break;
			pthread_cond_wait(&reg->renewed, &reg->lock);
			continue;
		}
		reg->renewing = true;
		pthread_mutex_unlock(&reg->lock);
		r = fetch_token(reg, &e);
		pthread_mutex_lock(&reg->lock);
		if (r < 0) {
			/* keep the old token until the registry refuses it
			 * (the 401 path then tries once more) */
			reg->token_renew = now_ms() + RENEW_RETRY;
			if (!reg->renew_warned)
				strata_warn("%s; the token held is used until "
					    "the registry refuses it",
					    e.code ? e.msg : strerror(-r));
			reg->renew_warned = true;
		} else {
			reg->renew_warned = false;
		}
		renew_end(reg);
		break;
	}
	*gen = reg->token_gen;
	if (reg->token &&
	    asprintf(&line, "Authorization: Bearer %s", reg->token) < 0)
		line = NULL;
	pthread_mutex_unlock(&reg->lock);
	return line;
}
