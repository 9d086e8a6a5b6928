/* SPDX-License-Identifier: Apache-2.0 */
/* store/image/ref.c: containers-transports(5) references, store names,
 * platforms. Spellings from /work/contract.md "References". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "store.h"
#include "tap.h"

#define DG "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const char *kind_name(int k)
{
	switch (k) {
	case STRATA_REF_OCI: return "oci";
	case STRATA_REF_OCI_ARCHIVE: return "oci-archive";
	case STRATA_REF_DOCKER_ARCHIVE: return "docker-archive";
	case STRATA_REF_STORE: return "store";
	case STRATA_REF_DOCKER: return "docker";
	case STRATA_REF_DIR: return "dir";
	}
	return "?";
}

static void test_good(void)
{
	static const struct {
		const char *s;
		int kind;
		const char *path, *tag, *digest;
	} cases[] = {
		/* the default store: NAME[:TAG], tag defaults to latest */
		{ "busybox", STRATA_REF_STORE, NULL, "busybox:latest", NULL },
		{ "busybox:1.36", STRATA_REF_STORE, NULL, "busybox:1.36", NULL },
		{ "busybox:Latest_1.0-rc", STRATA_REF_STORE, NULL, "busybox:Latest_1.0-rc", NULL },
		{ "library/busybox:musl", STRATA_REF_STORE, NULL, "library/busybox:musl", NULL },
		{ "docker.io/library/busybox", STRATA_REF_STORE, NULL, "docker.io/library/busybox:latest", NULL },
		{ "localhost:5000/foo", STRATA_REF_STORE, NULL, "localhost:5000/foo:latest", NULL },
		{ "localhost:5000/foo:bar", STRATA_REF_STORE, NULL, "localhost:5000/foo:bar", NULL },
		{ "my-app_2.x", STRATA_REF_STORE, NULL, "my-app_2.x:latest", NULL },
		/* only docker:// is the registry transport */
		{ "docker:latest", STRATA_REF_STORE, NULL, "docker:latest", NULL },
		/* NAME[:TAG]@DIGEST: the digest picks the image */
		{ "busybox@" DG, STRATA_REF_STORE, NULL, "busybox:latest", DG },
		{ "busybox:1@" DG, STRATA_REF_STORE, NULL, "busybox:1", DG },
		{ "localhost:5000/foo:bar@" DG, STRATA_REF_STORE, NULL, "localhost:5000/foo:bar", DG },
		/* oci:DIR[:TAG|@DIGEST] */
		{ "oci:/tmp/layout", STRATA_REF_OCI, "/tmp/layout", NULL, NULL },
		{ "oci:layout", STRATA_REF_OCI, "layout", NULL, NULL },
		{ "oci:/tmp/layout:v1", STRATA_REF_OCI, "/tmp/layout", "v1", NULL },
		{ "oci:./rel/dir:1.0-rc_1", STRATA_REF_OCI, "./rel/dir", "1.0-rc_1", NULL },
		{ "oci:/tmp/layout@" DG, STRATA_REF_OCI, "/tmp/layout", NULL, DG },
		/* the store's own layout: tags are NAME:TAG (as skopeo) */
		{ "oci:/s/images:app:1", STRATA_REF_OCI, "/s/images", "app:1", NULL },
		{ "oci:/tmp/lay.out@" DG, STRATA_REF_OCI, "/tmp/lay.out", NULL, DG },
		/* oci-archive:FILE[:TAG] */
		{ "oci-archive:/tmp/img.tar", STRATA_REF_OCI_ARCHIVE, "/tmp/img.tar", NULL, NULL },
		{ "oci-archive:/tmp/img.tar:v2", STRATA_REF_OCI_ARCHIVE, "/tmp/img.tar", "v2", NULL },
		{ "oci-archive:img.tar:latest", STRATA_REF_OCI_ARCHIVE, "img.tar", "latest", NULL },
		/* dir:DIR: all of it is the path, ':' and '@' included */
		{ "dir:/tmp/d", STRATA_REF_DIR, "/tmp/d", NULL, NULL },
		{ "dir:rel/d:v1", STRATA_REF_DIR, "rel/d:v1", NULL, NULL },
		{ "dir:/tmp/d@" DG, STRATA_REF_DIR, "/tmp/d@" DG, NULL, NULL },
		/* docker-archive:FILE[:NAME:TAG]; NAME alone gets :latest */
		{ "docker-archive:/tmp/d.tar", STRATA_REF_DOCKER_ARCHIVE, "/tmp/d.tar", NULL, NULL },
		{ "docker-archive:/tmp/d.tar:busybox:1.36", STRATA_REF_DOCKER_ARCHIVE, "/tmp/d.tar", "busybox:1.36", NULL },
		{ "docker-archive:/tmp/d.tar:busybox", STRATA_REF_DOCKER_ARCHIVE, "/tmp/d.tar", "busybox:latest", NULL },
		{ "docker-archive:d.tar:library/busybox:musl", STRATA_REF_DOCKER_ARCHIVE, "d.tar", "library/busybox:musl", NULL },
		{ "docker-archive:/tmp/d.tar:localhost:5000/busybox:1", STRATA_REF_DOCKER_ARCHIVE, "/tmp/d.tar", "localhost:5000/busybox:1", NULL },
		{ "docker-archive:/tmp/d.tar:localhost:5000/busybox", STRATA_REF_DOCKER_ARCHIVE, "/tmp/d.tar", "localhost:5000/busybox:latest", NULL },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cleanup_(strata_ref_freep) struct strata_ref *r = NULL;
		struct strata_err err = { 0 };
		const char *s = cases[i].s;
		int ret = strata_ref_parse(s, &r, &err);

		if (!is_int(ret, 0, "parse %s", s)) {
			diag("message: %s", err.msg);
			continue;
		}
		is_str(kind_name(r->kind), kind_name(cases[i].kind), "  %s: kind", s);
		is_str(r->path, cases[i].path, "  %s: path", s);
		is_str(r->tag, cases[i].tag, "  %s: tag", s);
		is_str(r->digest, cases[i].digest, "  %s: digest", s);
		is_str(r->text, s, "  %s: text as given", s);
	}
}

static void test_bad(void)
{
	static const char *const cases[] = {
		"",
		":",
		":tag",
		"busybox:",
		"foo:bar:baz",
		"busybox@sha256:abc",
		"busybox@",
		"@" DG,
		"busybox:1@" DG "@" DG,
		"foo bar",
		"foo\tbar",
		"caf\xc3\xa9",
		"foo$bar",
		/* upper case is not allowed in repository names */
		"Busybox",
		"BUSYBOX:latest",
		"library/Busybox:1",
		/* distribution/reference: components are
		 * [a-z0-9]+([._-][a-z0-9]+)*, joined by single '/' */
		"/busybox",
		"busybox/",
		"library//busybox",
		"../../etc/passwd",
		"-busybox",
		/* oci: */
		"oci:",
		"oci::v1",
		"oci:@" DG,
		"oci:/tmp/layout:",
		"oci:/tmp/layout:a:b:c",
		"oci:/tmp/layout:bad tag",
		"oci:/tmp/layout@sha256:abc",
		"oci:/tmp/layout@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
		"oci:/tmp/layout@",
		"oci:/tmp/layout@" DG "0",
		/* oci-archive: */
		"oci-archive:",
		"oci-archive::v1",
		"oci-archive:/tmp/x.tar:",
		"oci-archive:/tmp/x.tar:a:b",
		"dir:",
		/* docker-archive: */
		"docker-archive:",
		"docker-archive::busybox:1",
		"docker-archive:/tmp/d.tar:",
		"docker-archive:/tmp/d.tar:busy box:1",
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct strata_ref *r = NULL;
		struct strata_err err = { 0 };
		int ret = strata_ref_parse(cases[i], &r, &err);

		is_int(ret, -EINVAL, "refuse \"%s\"", cases[i]);
		if (ret == 0) {
			diag("parsed as kind %s path %s tag %s digest %s",
			     kind_name(r->kind), r->path ? r->path : "NULL",
			     r->tag ? r->tag : "NULL",
			     r->digest ? r->digest : "NULL");
			strata_ref_free(r);
			continue;
		}
		ok(r == NULL && err.code == -EINVAL &&
		   strstr(err.msg, cases[i]) != NULL,
		   "  message names the reference: %s", err.msg);
	}
	/* a NULL err is allowed */
	{
		struct strata_ref *r = NULL;

		is_int(strata_ref_parse("oci:", &r, NULL), -EINVAL,
		       "refuse with err == NULL");
	}
}

static void test_store_name(void)
{
	static const struct {
		const char *in, *out;
	} good[] = {
		{ "busybox", "busybox:latest" },
		{ "busybox:1", "busybox:1" },
		{ "a/b/c:d", "a/b/c:d" },
		{ "localhost:5000/x", "localhost:5000/x:latest" },
		{ "localhost:5000/x:y", "localhost:5000/x:y" },
	};
	static const char *const bad[] = {
		"", ":x", "x:", "x@" DG, "x y", "Foo", "Foo:bar", "x/Y:z",
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cleanup_free char *out = NULL;

		is_int(strata_store_name(good[i].in, &out, NULL), 0,
		       "store_name(\"%s\")", good[i].in);
		is_str(out, good[i].out, "  -> %s", good[i].out);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *out = NULL;
		struct strata_err err = { 0 };
		int r = strata_store_name(bad[i], &out, &err);

		is_int(r, -EINVAL, "store_name refuses \"%s\"", bad[i]);
		if (r == 0) {
			diag("gave \"%s\"", out);
			free(out);
		} else {
			ok(out == NULL && strstr(err.msg, "invalid image name") &&
			   strstr(err.msg, bad[i]),
			   "  message: %s", err.msg);
		}
	}
}

/* What a person who typed a name docker or podman would refuse, or a
 * transport strata does not speak, is told to do instead. */
static void test_name_advice(void)
{
	static const struct {
		const char *in, *use;
	} upper[] = {
		{ "MyApp:1", "(use \"myapp:1\")" },
		{ "Foo", "(use \"foo\")" },
		{ "x/Y:Z", "(use \"x/y:Z\")" },
	};
	static const char *const registry[] = {
		"docker://busybox", "docker://localhost:5000/x/y:1",
	};
	size_t i;

	for (i = 0; i < sizeof(upper) / sizeof(upper[0]); i++) {
		struct strata_err e1 = { 0 }, e2 = { 0 };
		struct strata_ref *r = NULL;
		char *out = NULL;

		is_int(strata_store_name(upper[i].in, &out, &e1), -EINVAL,
		       "store_name refuses \"%s\"", upper[i].in);
		is_int(strata_ref_parse(upper[i].in, &r, &e2), -EINVAL,
		       "ref_parse refuses \"%s\"", upper[i].in);
		ok(strstr(e1.msg, "must be lower case") &&
		   strstr(e1.msg, upper[i].use) && !strcmp(e1.msg, e2.msg),
		   "  both say: %s", e1.msg);
	}
	for (i = 0; i < sizeof(registry) / sizeof(registry[0]); i++) {
		struct strata_err e1 = { 0 }, e2 = { 0 };
		struct strata_ref *r = NULL;
		char *out = NULL;

		/* a source: pulled; a store name (a destination): the
		 * way to push there */
		is_int(strata_ref_parse(registry[i], &r, &e1), 0,
		       "ref_parse takes \"%s\"", registry[i]);
		if (r)
			strata_ref_free(r);
		is_int(strata_store_name(registry[i], &out, &e2), -EOPNOTSUPP,
		       "store_name refuses \"%s\"", registry[i]);
		ok(strstr(e2.msg, "not a store name") &&
		   strstr(e2.msg, "strata copy SRC ") &&
		   strstr(e2.msg, registry[i]), "  says: %s", e2.msg);
	}
}

static void test_platform(void)
{
	static const struct {
		const char *s, *os, *arch, *variant;
	} good[] = {
		{ "linux/amd64", "linux", "amd64", "" },
		{ "linux/arm64/v8", "linux", "arm64", "v8" },
		{ "linux/arm/v7", "linux", "arm", "v7" },
		{ "windows/amd64", "windows", "amd64", "" },
		{ "abcdefghijklmnopqrstuvwxyz01234/x", "abcdefghijklmnopqrstuvwxyz01234", "x", "" },
	};
	static const char *const bad[] = {
		"", "linux", "/amd64", "linux/", "linux//v7", "linux/arm/",
		"linux/arm/v7/x", "/", "//",
		"abcdefghijklmnopqrstuvwxyz012345/x",	/* os of 32 bytes */
		"linux/abcdefghijklmnopqrstuvwxyz012345",
		"linux/arm/abcdefghijklmnopqrstuvwxyz012345",
	};
	struct strata_platform p, q;
	struct utsname u;
	char buf[128];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		is_int(strata_platform_parse(good[i].s, &p), 0, "platform %s", good[i].s);
		is_str(p.os, good[i].os, "  os");
		is_str(p.arch, good[i].arch, "  arch");
		is_str(p.variant, good[i].variant, "  variant");
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_int(strata_platform_parse(bad[i], &p), -EINVAL,
		       "platform refuses \"%s\"", bad[i]);

	strata_platform_host(&p);
	is_str(p.os, "linux", "host os is linux");
	ok(p.arch[0] != '\0', "host arch is set (%s)", p.arch);
	if (uname(&u) == 0) {
		if (!strcmp(u.machine, "x86_64")) {
			is_str(p.arch, "amd64", "x86_64 is amd64 in GOARCH spelling");
			is_str(p.variant, "", "amd64 has no variant");
		} else if (!strcmp(u.machine, "aarch64")) {
			is_str(p.arch, "arm64", "aarch64 is arm64");
		} else {
			diag("uname machine %s, arch %s", u.machine, p.arch);
		}
	}
	snprintf(buf, sizeof(buf), "%s/%s%s%s", p.os, p.arch,
		 p.variant[0] ? "/" : "", p.variant);
	is_int(strata_platform_parse(buf, &q), 0, "host platform \"%s\" parses", buf);
	ok(!memcmp(&p, &q, sizeof(p)), "and round-trips");
}

/* docker:// normalised as podman and skopeo do (containers/image
 * docker/reference: ParseNormalizedNamed) */
static void test_docker(void)
{
	static const struct {
		const char *s, *registry, *path, *tag, *digest;
	} good[] = {
		{ "docker://alpine", "docker.io", "library/alpine", "latest", NULL },
		{ "docker://alpine:3.19", "docker.io", "library/alpine", "3.19", NULL },
		{ "docker://library/alpine", "docker.io", "library/alpine", "latest", NULL },
		{ "docker://docker.io/alpine", "docker.io", "library/alpine", "latest", NULL },
		{ "docker://index.docker.io/alpine", "docker.io", "library/alpine", "latest", NULL },
		{ "docker://docker.io/library/alpine:edge", "docker.io", "library/alpine", "edge", NULL },
		{ "docker://user/app", "docker.io", "user/app", "latest", NULL },
		{ "docker://quay.io/podman/stable:v4", "quay.io", "podman/stable", "v4", NULL },
		{ "docker://localhost/x", "localhost", "x", "latest", NULL },
		{ "docker://localhost:5000/x", "localhost:5000", "x", "latest", NULL },
		{ "docker://127.0.0.1:5000/a/b/c:t_1.0-x", "127.0.0.1:5000", "a/b/c", "t_1.0-x", NULL },
		{ "docker://reg:5000/x", "reg:5000", "x", "latest", NULL },
		{ "docker://Reg/x", "Reg", "x", "latest", NULL },
		{ "docker://alpine@" DG, "docker.io", "library/alpine", NULL, DG },
		{ "docker://host.example/a/b@" DG, "host.example", "a/b", NULL, DG },
		{ "docker://alpine:3@" DG, "docker.io", "library/alpine", "3", DG },
		{ "docker://my-app__x-y/z.a", "docker.io", "my-app__x-y/z.a", "latest", NULL },
		/* no '/': never a host */
		{ "docker://host.example", "docker.io", "library/host.example", "latest", NULL },
	};
	static const char *const bad[] = {
		"docker:", "docker://", "docker://:tag",
		"docker://Alpine", "docker://alpine:", "docker://alpine:-x",
		"docker://alpine@sha256:abc", "docker://alpine@",
		"docker://host.example/", "docker://host.example//x",
		"docker://host:99999/x", "docker://host:/x", "docker://-h.x/y",
		"docker://a/../b", "docker://a b", "docker://a/B",
		"docker://alpine:a:b", "docker://my_app.x/z",
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cleanup_(strata_ref_freep) struct strata_ref *r = NULL;
		struct strata_err err = { 0 };
		const char *s = good[i].s;

		if (!is_int(strata_ref_parse(s, &r, &err), 0, "parse %s", s)) {
			diag("message: %s", err.msg);
			continue;
		}
		is_str(kind_name(r->kind), "docker", "  %s: kind", s);
		is_str(r->registry, good[i].registry, "  %s: registry", s);
		is_str(r->path, good[i].path, "  %s: repository", s);
		is_str(r->tag, good[i].tag, "  %s: tag", s);
		is_str(r->digest, good[i].digest, "  %s: digest", s);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct strata_ref *r = NULL;
		struct strata_err err = { 0 };
		int ret = strata_ref_parse(bad[i], &r, &err);

		is_int(ret, -EINVAL, "refuse \"%s\"", bad[i]);
		if (ret == 0) {
			diag("parsed as %s / %s tag %s", r->registry, r->path,
			     r->tag ? r->tag : "NULL");
			strata_ref_free(r);
		}
	}
}

int main(void)
{
	test_good();
	test_bad();
	test_store_name();
	test_name_advice();
	test_platform();
	test_docker();
	return done_testing();
}
