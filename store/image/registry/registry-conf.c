/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry settings from the files podman and skopeo read.
 *
 * registries.conf(5): only `[[registry]]` tables with `location` (or
 * `prefix`) and `insecure = true` matter here, so this is a line reader of
 * that subset of TOML, not a TOML parser. Files: $CONTAINERS_REGISTRIES_CONF
 * alone when set, else ~/.config/containers/registries.conf when it exists,
 * else /etc/containers/registries.conf; then the drop-ins
 * registries.conf.d/ *.conf beside it, in name order.
 *
 * certs.d (containers-certs.d(5)): DIR/HOST[:PORT]/ holds *.crt (CAs
 * added to the system ones), NAME.cert and NAME.key (a client
 * certificate). Roots: $STRATA_CERTS_D (colon-separated) when set, else
 * ~/.config/containers/certs.d, /etc/containers/certs.d and
 * /etc/docker/certs.d.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "curl-dl.h"
#include "registry.h"

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
			 e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* Does registries.conf location/prefix @loc cover @host? "host" or
 * "host/path" (a repository prefix: the registry still counts). */
static bool loc_matches(const char *loc, const char *host)
{
	size_t n = strlen(host);

	if (!strncmp(loc, "*.", 2)) {
		const char *dot = strchr(host, '.');

		return dot && !strcmp(dot + 1, loc + 2);
	}
	return !strncmp(loc, host, n) && (loc[n] == '\0' || loc[n] == '/');
}

/* 1: @host insecure in @path, 0: not said, -1: unreadable */
static int scan_file(const char *path, const char *host, bool *insecure)
{
	cleanup_file FILE *f = fopen(path, "re");
	char line[4096], loc[1024] = "";
	bool in_reg = false, ins = false;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *s = trim(line), *eq, *k, *v;

		if (*s == '#' || !*s)
			continue;
		if (*s == '[') {
			if (in_reg && loc[0] && loc_matches(loc, host))
				*insecure = ins;
			in_reg = !strcmp(s, "[[registry]]");
			loc[0] = '\0';
			ins = false;
			continue;
		}
		if (!in_reg || !(eq = strchr(s, '=')))
			continue;
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		if (!strcmp(k, "location") || (!strcmp(k, "prefix") && !loc[0])) {
			size_t n = strlen(v);

			if (n >= 2 && (v[0] == '"' || v[0] == '\'') &&
			    v[n - 1] == v[0]) {
				v[n - 1] = '\0';
				snprintf(loc, sizeof(loc), "%s", v + 1);
			}
		} else if (!strcmp(k, "insecure")) {
			ins = !strncmp(v, "true", 4);
		}
	}
	if (in_reg && loc[0] && loc_matches(loc, host))
		*insecure = ins;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void scan_dropins(const char *dir, const char *host, bool *insecure)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *names[256];
	size_t n = 0, i;

	if (!d)
		return;
	while ((e = readdir(d)) && n < ARRAY_SIZE(names)) {
		size_t l = strlen(e->d_name);

		if (l > 5 && !strcmp(e->d_name + l - 5, ".conf"))
			names[n] = strdup(e->d_name), n += names[n] != NULL;
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	for (i = 0; i < n; i++) {
		char p[4400];

		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		scan_file(p, host, insecure);
		free(names[i]);
	}
}

bool strata_reg_conf_insecure(const char *host)
{
	const char *env = getenv("CONTAINERS_REGISTRIES_CONF");
	const char *home = getenv("HOME");
	char user[4096];
	bool insecure = false;

	if (env && *env) {
		scan_file(env, host, &insecure);
		return insecure;
	}
	if (home && *home) {
		snprintf(user, sizeof(user),
			 "%s/.config/containers/registries.conf", home);
		if (scan_file(user, host, &insecure) == 0) {
			snprintf(user, sizeof(user),
				 "%s/.config/containers/registries.conf.d",
				 home);
			scan_dropins(user, host, &insecure);
			return insecure;
		}
	}
	scan_file("/etc/containers/registries.conf", host, &insecure);
	scan_dropins("/etc/containers/registries.conf.d", host, &insecure);
	return insecure;
}

static char *try_root(const char *root, const char *host)
{
	char *p;
	struct stat st;

	if (asprintf(&p, "%s/%s", root, host) < 0)
		return NULL;
	if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
		return p;
	free(p);
	return NULL;
}

char *strata_reg_certs_dir(const char *host)
{
	const char *env = getenv("STRATA_CERTS_D");
	const char *home = getenv("HOME");
	char *found = NULL;

	if (env && *env) {
		cleanup_free char *copy = strdup(env);
		char *save = NULL, *tok;

		if (!copy)
			return NULL;
		for (tok = strtok_r(copy, ":", &save); tok && !found;
		     tok = strtok_r(NULL, ":", &save))
			found = try_root(tok, host);
		return found;
	}
	if (home && *home) {
		char p[4096];

		snprintf(p, sizeof(p), "%s/.config/containers/certs.d", home);
		found = try_root(p, host);
	}
	if (!found)
		found = try_root("/etc/containers/certs.d", host);
	if (!found)
		found = try_root("/etc/docker/certs.d", host);
	return found;
}

/*
 * The files of a certs.d directory: every *.crt is added to the CAs
 * libcurl loaded (the system's) from its SSL_CTX callback, so they add
 * to the system CAs rather than replace them; the first NAME.cert that
 * has a NAME.key is the client certificate.
 */
static int add_cas(SSL_CTX *ctx, const char *dir)
{
	/* libssl's, as libcurl loaded it: not linked (curl-dl.h) */
	X509_STORE *(*get_store)(const SSL_CTX *) =
		(X509_STORE *(*)(const SSL_CTX *))
		strata_curl()->ssl_ctx_get_cert_store;
	X509_STORE *store = get_store ? get_store(ctx) : NULL;
	DIR *d = opendir(dir);
	struct dirent *e;
	int added = 0;

	if (!d || !store) {
		if (d)
			closedir(d);
		return 0;
	}
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		char p[4400];
		FILE *f;
		X509 *x;

		if (l <= 4 || strcmp(e->d_name + l - 4, ".crt"))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		f = fopen(p, "re");
		if (!f)
			continue;
		while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
			if (X509_STORE_add_cert(store, x) == 1)
				added++;
			X509_free(x);
		}
		ERR_clear_error();
		fclose(f);
	}
	closedir(d);
	return added;
}

int strata_reg_ssl_ctx(void *c, void *ssl_ctx, void *dir)
{
	(void)c;
	add_cas(ssl_ctx, dir);
	return 0;	/* CURLE_OK */
}

int strata_reg_client_cert(const char *dir, char **cert, char **key)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	*cert = *key = NULL;
	if (!d)
		return 0;
	while ((e = readdir(d)) && !*cert) {
		size_t l = strlen(e->d_name);
		char k[4400];

		if (l <= 5 || strcmp(e->d_name + l - 5, ".cert"))
			continue;
		snprintf(k, sizeof(k), "%s/%.*s.key", dir, (int)(l - 5),
			 e->d_name);
		if (access(k, R_OK) < 0)
			continue;
		if (asprintf(cert, "%s/%s", dir, e->d_name) < 0) {
			*cert = NULL;
			break;
		}
		*key = strdup(k);
		if (!*key) {
			free(*cert);
			*cert = NULL;
		}
	}
	closedir(d);
	return *cert ? 1 : 0;
}
