/* SPDX-License-Identifier: Apache-2.0 */
/* strata save IMAGE... DEST; strata save --base BASE --dir DIR IMAGE... */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata save [--platform OS/ARCH[/VARIANT]] IMAGE... DEST\n"
	"       strata save --base BASE [--lib LIB] [--rename FILE] --dir DIR\n"
	"                   IMAGE...\n"
	"\n"
	"Write the images IMAGE (references: a store NAME[:TAG], oci:DIR:TAG,\n"
	"docker://..., ...) into one archive DEST, docker-archive:FILE or\n"
	"oci-archive:FILE, each under its name (docker-archive: manifest.json\n"
	"RepoTags and repositories; oci-archive: index.json ref.name), a blob\n"
	"shared by several images written once. The archive is written to a\n"
	"temporary name and renamed when complete.\n"
	"\n"
	"With --dir, save each store image IMAGE as isula-build's separated\n"
	"images: DIR/NAME_TAG_base_image.tar.gz (the layers of BASE),\n"
	"NAME_TAG_lib_image.tar.gz (the layers of LIB above BASE),\n"
	"NAME_TAG_app_image.tar.gz (the rest, the config, manifest.json and\n"
	"repositories) and DIR/manifest listing them with their sha256. BASE\n"
	"(and LIB) must be a prefix of each image's layers; images sharing a\n"
	"base share its tarball. Load them with strata load --dir.\n"
	"\n"
	"  --platform P          pick P from a multi-platform index (default: host)\n"
	"  -b, --base BASE       the base image (store name)\n"
	"  -l, --lib LIB         the library image (store name), on BASE\n"
	"  -r, --rename FILE     rename tarballs: a JSON list of\n"
	"                        {\"name\": TARBALL, \"rename\": NEW_NAME}\n"
	"  -d, --dir DIR         the directory to write (created if needed)\n"
	"  -q, --quiet           no progress\n";

static bool opt2(int argc, char **argv, int *i, const char *s, const char *l,
		 const char **v, int *bad)
{
	return opt_value(argc, argv, i, s, v, "save", usage, bad) ||
	       opt_value(argc, argv, i, l, v, "save", usage, bad);
}

int cmd_save(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_free const char **pos = calloc((size_t)argc, sizeof(*pos));
	struct strata_sep_save_opts so = { 0 };
	struct strata_platform plat, *pp = NULL;
	struct strata_err err = { 0 };
	int i, n = 0, r;

	if (want_help(argc, argv, usage))
		return 0;
	if (!pos)
		return die_err(NULL, -ENOMEM);
	for (i = 1; i < argc; i++) {
		const char *v = NULL;
		int bad = 0;

		if (platform_option(argc, argv, &i, "save", usage,
					&plat, &bad)) {
			if (bad)
				return bad;
			pp = &plat;
		} else if (opt2(argc, argv, &i, "-b", "--base", &v, &bad)) {
			so.base = v;
		} else if (opt2(argc, argv, &i, "-l", "--lib", &v, &bad)) {
			so.lib = v;
		} else if (opt2(argc, argv, &i, "-r", "--rename", &v, &bad)) {
			so.rename = v;
		} else if (opt2(argc, argv, &i, "-d", "--dir", &v, &bad)) {
			so.dir = v;
		} else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
			g.quiet = true;
			strata_log_set_quiet(true);
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("save", usage, "unknown option "
					   "\"%s\"", argv[i]);
		} else {
			pos[n++] = argv[i];
		}
		if (bad)
			return bad;
	}
	if (so.dir || so.base || so.lib || so.rename) {
		if (!so.dir || !so.base)
			return usage_error("save", usage, "a separated save "
					   "needs --base BASE and --dir DIR");
		if (pp)
			return usage_error("save", usage, "--platform is for "
					   "archives, not --dir");
		if (!n)
			return usage_error("save", usage, "missing IMAGE");
		so.images = pos;
		so.n_images = (size_t)n;
	} else if (n < 2) {
		return usage_error("save", usage, n ? "missing DEST "
				   "(docker-archive:FILE or oci-archive:FILE)"
				   : "missing IMAGE and DEST");
	}
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0 && so.dir)
		r = strata_save_separated(st, &so, &err);
	else if (r == 0)
		r = strata_save(st, pos, (size_t)n - 1, pos[n - 1], pp, &err);
	if (r < 0)
		return die_err(&err, r);
	return 0;
}
