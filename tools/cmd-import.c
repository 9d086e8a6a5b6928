/* SPDX-License-Identifier: Apache-2.0 */
/* strata import SRC NAME[:TAG] */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata import [--platform OS/ARCH[/VARIANT]] [--max-layer-bytes N]\n"
	"                     [--max-entries N] [--creds USER[:PASS]]\n"
	"                     [--tls-verify=false] [--cert-dir DIR] SRC NAME[:TAG]\n"
	"\n"
	"Copy the image SRC (oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG],\n"
	"docker-archive:FILE[:NAME:TAG], dir:DIR,\n"
	"docker://[HOST[:PORT]/]PATH[:TAG|@DIGEST] or a store NAME[:TAG])\n"
	"into the store as NAME:TAG (tag defaults to latest), verifying every\n"
	"blob, and unpack its layers into the layer cache (from a registry,\n"
	"each layer is unpacked as it downloads). The tag is written only once\n"
	"everything is verified. Docker schema 1 (from dir: or docker://) is\n"
	"read as the OCI image skopeo converts it to. Prints the manifest\n"
	"digest.\n"
	"\n"
	"  --platform P          pick P from a multi-platform index (default: host)\n"
	"  --max-layer-bytes N   refuse a layer whose tar is bigger than N bytes\n"
	"                        (default 64 GiB; a guard against gzip bombs)\n"
	"  --max-entries N       refuse a layer with more than N entries (16M)\n";

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v == 0) {
		fprintf(stderr, "strata import: %s wants a positive number, "
			"not \"%s\"\n", opt, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int cmd_import(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	cleanup_free char *name = NULL;
	struct strata_platform plat, *pp = NULL;
	struct strata_unpack_opts uo = { 0 };
	struct strata_err err = { 0 };
	const char *pos[2];
	int i, n = 0, r;

	if (want_help(argc, argv, NULL)) {
		fputs(usage, stdout);
		fputs(reg_opts_usage, stdout);
		return 0;
	}
	for (i = 1; i < argc; i++) {
		const char *v = NULL;
		int bad = 0, ro = reg_option(argc, argv, &i);

		if (ro < 0)
			return 2;
		if (ro > 0)
			continue;
		if (platform_option(argc, argv, &i, "import", usage,
					&plat, &bad)) {
			if (bad)
				return bad;
			pp = &plat;
		} else if (opt_value(argc, argv, &i, "--max-layer-bytes", &v,
				     "import", usage, &bad)) {
			if (bad || parse_u64("--max-layer-bytes", v,
					     &uo.max_layer_bytes) < 0)
				return bad ? bad : 2;
		} else if (opt_value(argc, argv, &i, "--max-entries", &v,
				     "import", usage, &bad)) {
			if (bad || parse_u64("--max-entries", v,
					     &uo.max_entries) < 0)
				return bad ? bad : 2;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("import", usage,
					   "unknown option \"%s\"", argv[i]);
		} else if (n < 2) {
			pos[n++] = argv[i];
		} else {
			return usage_error("import", usage, "unexpected "
					   "argument \"%s\" (it takes SRC and "
					   "NAME[:TAG])", argv[i]);
		}
	}
	if (n < 2)
		return usage_error("import", usage, n ? "missing NAME[:TAG] "
				   "(the name to give the image in the store)"
				   : "missing SRC and NAME[:TAG]");
	r = strata_store_name(pos[1], &name, &err);
	if (r < 0)
		return die_err(&err, r);
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_image_resolve(st, pos[0], pp, &img, &err);
	/* unpack (which verifies every layer) before the tag exists, so a
	 * bad image never gets a name */
	if (r == 0)
		r = strata_cache_ensure(st, img, &uo, &err);
	if (r == 0)
		r = strata_store_tag(st, img, name, &err);
	if (r < 0)
		return die_err(&err, r);
	printf("%s\n", img->manifest_digest);
	return 0;
}
