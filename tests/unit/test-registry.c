/* SPDX-License-Identifier: Apache-2.0 */
/* store/image/registry/registry-auth.c and registry-conf.c: the parts of the registry
 * client that read untrusted or user-written text (WWW-Authenticate
 * challenges, auth files, registries.conf, certs.d), no network. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "registry.h"
#include "tap.h"

static char tmpdir[] = "/tmp/strata-test-registry-XXXXXX";

static void write_file(const char *name, const char *text)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	f = fopen(p, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static struct strata_reg *new_reg(const char *name)
{
	struct strata_reg *r = calloc(1, sizeof(*r));

	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->connect_lock, NULL);
	r->name = strdup(name);
	r->host = strdup(name);
	r->repo = strdup("library/x");
	return r;
}

static void test_challenge(void)
{
	static const struct {
		const char *v;
		int kind;
		const char *realm, *service;
	} cases[] = {
		{ "Bearer realm=\"https://auth.example/token\",service=\"reg.example\","
		  "scope=\"repository:x:pull\"", REG_AUTH_BEARER,
		  "https://auth.example/token", "reg.example" },
		{ "bearer realm=https://a/b,service=s", REG_AUTH_BEARER,
		  "https://a/b", "s" },
		{ "Bearer service=\"s\", realm=\"https://a/t?x=1\"", REG_AUTH_BEARER,
		  "https://a/t?x=1", "s" },
		{ "Bearer realm=\"a\\\"b\"", REG_AUTH_BEARER, "a\"b", NULL },
		{ "Bearer realm=", REG_AUTH_BEARER, "", NULL },
		{ "Bearer realm=\"unterminated", REG_AUTH_BEARER, "unterminated", NULL },
		{ "Basic realm=\"registry\"", REG_AUTH_BASIC, NULL, NULL },
		{ "Basic", REG_AUTH_BASIC, NULL, NULL },
		{ "Digest realm=x", -EPROTO, NULL, NULL },
		{ "", -EPROTO, NULL, NULL },
		{ "Basicx", -EPROTO, NULL, NULL },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		struct strata_reg *r = new_reg("h");

		is_int(strata_reg_challenge(r, cases[i].v), cases[i].kind,
		       "challenge %s", cases[i].v);
		if (cases[i].kind == REG_AUTH_BEARER) {
			is_str(r->realm, cases[i].realm, "  realm");
			is_str(r->service, cases[i].service, "  service");
		}
		strata_reg_free(r);
	}
	{
		/* a hostile, long value: cut, never overrun */
		char big[8192];
		struct strata_reg *r = new_reg("h");

		memset(big, 'a', sizeof(big));
		memcpy(big, "Bearer realm=\"", 14);
		big[sizeof(big) - 1] = '\0';
		is_int(strata_reg_challenge(r, big), REG_AUTH_BEARER,
		       "long challenge");
		ok(r->realm && strlen(r->realm) < 1024, "  realm cut to %zu",
		   r->realm ? strlen(r->realm) : 0);
		strata_reg_free(r);
	}
}

static void test_auth_files(void)
{
	char path[512];
	static const struct {
		const char *registry, *user, *pass;
	} cases[] = {
		{ "docker.io", "dock", "pw1" },		/* https://index.docker.io/v1/ */
		{ "reg.example:5000", "alice", "a:b" },	/* password with a colon */
		{ "quay.io", "q", "" },			/* quay.io/org entry */
		{ "other.example", NULL, NULL },
		{ "reg.example", NULL, NULL },		/* not reg.example:5000 */
	};
	size_t i;

	/* base64 of "dock:pw1", "alice:a:b", "q:" */
	write_file("auth.json",
		   "{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"ZG9jazpwdzE=\"},"
		   "\"reg.example:5000\":{\"auth\":\"YWxpY2U6YTpi\"},"
		   "\"quay.io/org\":{\"auth\":\"cTo=\"},"
		   "\"bad.example\":{\"auth\":\"!!!!\"}}}");
	snprintf(path, sizeof(path), "%s/auth.json", tmpdir);
	setenv("REGISTRY_AUTH_FILE", path, 1);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		struct strata_reg *r = new_reg(cases[i].registry);

		is_int(strata_reg_find_creds(r, NULL, NULL), 0, "creds for %s",
		       cases[i].registry);
		is_str(r->user, cases[i].user, "  user");
		is_str(r->pass, cases[i].pass, "  password");
		strata_reg_free(r);
	}
	{
		struct strata_reg *r = new_reg("reg.example:5000");

		strata_reg_find_creds(r, "bob", NULL);
		ok(r->user && !strcmp(r->user, "bob") && !r->pass,
		   "--creds USER without a password");
		strata_reg_free(r);
	}
	write_file("auth.json", "{not json");
	{
		struct strata_reg *r = new_reg("docker.io");

		is_int(strata_reg_find_creds(r, NULL, NULL), 0,
		       "a broken auth file is ignored");
		ok(!r->user, "  no credentials");
		strata_reg_free(r);
	}
	unsetenv("REGISTRY_AUTH_FILE");
}

static void test_registries_conf(void)
{
	char path[512];

	write_file("registries.conf",
		   "unqualified-search-registries = [\"docker.io\"]\n"
		   "# a comment\n"
		   "[[registry]]\n"
		   "location = \"localhost:5000\"\n"
		   "insecure = true\n"
		   "\n"
		   "[[registry]]\n"
		   "prefix = \"mirror.example/ns\"\n"
		   "location = 'mirror.example'\n"
		   "insecure=true\n"
		   "[[registry]]\n"
		   "location = \"*.lan.example\"\n"
		   "insecure = true\n"
		   "[[registry]]\n"
		   "location = \"secure.example\"\n"
		   "insecure = false\n"
		   "[[registry.mirror]]\n"
		   "location = \"notme.example\"\n"
		   "insecure = true\n");
	snprintf(path, sizeof(path), "%s/registries.conf", tmpdir);
	setenv("CONTAINERS_REGISTRIES_CONF", path, 1);
	ok(strata_reg_conf_insecure("localhost:5000"), "localhost:5000 insecure");
	ok(!strata_reg_conf_insecure("localhost:5001"), "localhost:5001 not");
	ok(!strata_reg_conf_insecure("localhost"), "localhost not");
	ok(strata_reg_conf_insecure("mirror.example"), "mirror.example insecure");
	ok(strata_reg_conf_insecure("a.lan.example"), "*.lan.example matches a.lan.example");
	ok(!strata_reg_conf_insecure("lan.example"), "  but not lan.example");
	ok(!strata_reg_conf_insecure("secure.example"), "secure.example not");
	ok(!strata_reg_conf_insecure("notme.example"),
	   "a [[registry.mirror]] table is not a registry");
	setenv("CONTAINERS_REGISTRIES_CONF", "/nonexistent/registries.conf", 1);
	ok(!strata_reg_conf_insecure("localhost:5000"), "no file: secure");
	unsetenv("CONTAINERS_REGISTRIES_CONF");
}

static void test_certs_d(void)
{
	char env[1100], d[600];
	cleanup_free char *found = NULL, *none = NULL;

	snprintf(d, sizeof(d), "%s/c2", tmpdir);
	mkdir(d, 0755);
	snprintf(d, sizeof(d), "%s/c2/reg.example:5000", tmpdir);
	mkdir(d, 0755);
	snprintf(env, sizeof(env), "%s/c1:%s/c2", tmpdir, tmpdir);
	setenv("STRATA_CERTS_D", env, 1);
	found = strata_reg_certs_dir("reg.example:5000");
	is_str(found, d, "certs.d directory found in the second root");
	none = strata_reg_certs_dir("reg.example");
	ok(!none, "no directory for reg.example");
	unsetenv("STRATA_CERTS_D");
	{
		cleanup_free char *cert = NULL, *key = NULL;

		snprintf(env, sizeof(env), "%s/client.cert", d);
		write_file("c2/reg.example:5000/client.cert", "x");
		is_int(strata_reg_client_cert(d, &cert, &key), 0,
		       "a .cert without its .key is no client certificate");
		write_file("c2/reg.example:5000/client.key", "x");
		is_int(strata_reg_client_cert(d, &cert, &key), 1,
		       "client.cert + client.key");
		is_str(cert, env, "  cert path");
	}
}

int main(void)
{
	if (!mkdtemp(tmpdir))
		return 1;
	test_challenge();
	test_auth_files();
	test_registries_conf();
	test_certs_d();
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			diag("could not remove %s", tmpdir);
	}
	return done_testing();
}
