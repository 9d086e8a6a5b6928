/* SPDX-License-Identifier: Apache-2.0 */
/* strata load FILE; strata load --dir DIR [--base F] [--lib F] IMAGE */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata load [--platform OS/ARCH[/VARIANT]] ARCHIVE\n"
	"       strata load --dir DIR [--base FILE] [--lib FILE] [--no-check]\n"
	"                   IMAGE\n"
	"\n"
	"Import every image of ARCHIVE (docker-archive:FILE, oci-archive:FILE,\n"
	"or a FILE of either kind) into the store under the names the archive\n"
	"records for it, as podman load does (an image without a name is\n"
	"skipped, with a warning). Each layer is verified and unpacked before\n"
	"any name is written. Prints each name.\n"
	"\n"
	"With --dir, load the isula-build separated image IMAGE (NAME[:TAG]\n"
	"as DIR/manifest lists it): every tarball's sha256 is checked against\n"
	"the manifest, then the image is reassembled, verified and tagged\n"
	"IMAGE. A base (or lib) tarball missing from DIR is not needed when\n"
	"the store holds an image with those layers.\n"
	"\n"
	"  --platform P          pick P from a multi-platform index (default: host)\n"
	"  -d, --dir DIR         the separated images' directory\n"
	"  -b, --base FILE       the base tarball, instead of DIR's\n"
	"  -l, --lib FILE        the lib tarball, instead of DIR's\n"
	"  -i, --input IMAGE     IMAGE, as isula-build spells it\n"
	"  --no-check            skip the sha256 checks of the tarballs\n"
	"  -q, --quiet           no progress\n";

struct loader {
	struct strata_store *st;
	int loaded;
};

/* Unpack (verifying every layer), then name. */
static int load_one(void *ctx, struct strata_image *img,
		    const char *const *tags, size_t n, struct strata_err *err)
{
	struct loader *l = ctx;
	int r;

	if (n == 0) {
		strata_warn("%s: image %s has no name in the archive: not "
			    "loaded", img->blobs_desc, img->manifest_digest);
		return 0;
	}
	r = strata_cache_ensure(l->st, img, NULL, err);

	for (size_t i = 0; r == 0 && i < n; i++) {
		cleanup_free char *name = NULL;

		r = strata_store_name(tags[i], &name, err);
		if (r == 0)
			r = strata_store_tag(l->st, img, name, err);
		if (r == 0)
			printf("%s\n", name);
	}
	if (r == 0)
		l->loaded++;
	return r;
}

static bool opt2(int argc, char **argv, int *i, const char *s, const char *l,
		 const char **v, int *bad)
{
	return opt_value(argc, argv, i, s, v, "load", usage, bad) ||
	       opt_value(argc, argv, i, l, v, "load", usage, bad);
}

int cmd_load(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	cleanup_free char *name = NULL, *ref = NULL, *tag = NULL;
	struct strata_sep_load_opts so = { 0 };
	struct strata_platform plat, *pp = NULL;
	struct strata_err err = { 0 };
	const char *pos = NULL;
	int i, r;

	if (want_help(argc, argv, usage))
		return 0;
	for (i = 1; i < argc; i++) {
		const char *v = NULL;
		int bad = 0;

		if (platform_option(argc, argv, &i, "load", usage,
					&plat, &bad)) {
			if (bad)
				return bad;
			pp = &plat;
		} else if (opt2(argc, argv, &i, "-d", "--dir", &v, &bad)) {
			so.dir = v;
		} else if (opt2(argc, argv, &i, "-b", "--base", &v, &bad)) {
			so.base = v;
		} else if (opt2(argc, argv, &i, "-l", "--lib", &v, &bad)) {
			so.lib = v;
		} else if (opt2(argc, argv, &i, "-i", "--input", &v, &bad)) {
			if (!bad && pos)
				return usage_error("load", usage, "one IMAGE "
						   "or ARCHIVE only");
			pos = v;
		} else if (!strcmp(argv[i], "--no-check")) {
			so.no_check = true;
		} else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
			g.quiet = true;
			strata_log_set_quiet(true);
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("load", usage, "unknown option "
					   "\"%s\"", argv[i]);
		} else if (pos) {
			return usage_error("load", usage, "unexpected argument "
					   "\"%s\" (one IMAGE or ARCHIVE only)",
					   argv[i]);
		} else {
			pos = argv[i];
		}
		if (bad)
			return bad;
	}
	if (!pos)
		return usage_error("load", usage, so.dir ? "missing IMAGE"
				   : "missing ARCHIVE");
	if (!so.dir && (so.base || so.lib || so.no_check))
		return usage_error("load", usage, "--base, --lib and "
				   "--no-check are for --dir");
	r = strata_store_open(g.root, &st, &err);
	if (r < 0)
		return die_err(&err, r);
	if (so.dir) {
		so.app = pos;
		r = strata_load_separated(st, &so, &img, &name, &err);
		if (r == 0)
			r = strata_cache_ensure(st, img, NULL, &err);
		if (r == 0)
			r = strata_store_name(name, &tag, &err);
		if (r == 0)
			r = strata_store_tag(st, img, tag, &err);
		if (r < 0)
			return die_err(&err, r);
		printf("%s\n", tag);
		return 0;
	}
	if (strncmp(pos, "docker-archive:", 15) &&
	    strncmp(pos, "oci-archive:", 12)) {
		/* a bare FILE: which kind is read from its members */
		if (asprintf(&ref, "docker-archive:%s", pos) < 0)
			return die_err(NULL, -ENOMEM);
	}
	{
		struct loader l = { st, 0 };

		r = strata_archive_load_each(st, ref ? ref : pos, pp, load_one,
					     &l, &err);
	}
	if (r < 0)
		return die_err(&err, r);
	return 0;
}
