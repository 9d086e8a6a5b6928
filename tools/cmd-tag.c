/* SPDX-License-Identifier: Apache-2.0 */
/* strata tag SRC NAME[:TAG] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata tag SRC NAME[:TAG]\n"
	"\n"
	"Point the tag NAME:TAG (TAG defaults to latest) of the store at the\n"
	"image SRC, moving it if it names another image (which then stays\n"
	"reachable by digest until strata gc). SRC is an image of the store:\n"
	"NAME[:TAG], NAME[:TAG]@DIGEST (an untagged one too, see strata\n"
	"images --all) or oci:ROOT/images[:TAG|@DIGEST]. An image from\n"
	"elsewhere is copied in with strata import SRC NAME[:TAG].\n";

/* Is @ref an image of the store @st (a store name, or its own layout)? */
static bool in_store(struct strata_store *st, const struct strata_ref *ref)
{
	cleanup_free char *want = NULL, *got = NULL, *mine = NULL;

	if (ref->kind == STRATA_REF_STORE)
		return true;
	if (ref->kind != STRATA_REF_OCI ||
	    asprintf(&want, "%s/images", strata_store_root(st)) < 0)
		return false;
	got = realpath(ref->path, NULL);
	mine = realpath(want, NULL);
	return got && mine && !strcmp(got, mine);
}

int cmd_tag(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	cleanup_(strata_ref_freep) struct strata_ref *ref = NULL;
	cleanup_free char *name = NULL;
	struct strata_err err = { 0 };
	int r;

	if (want_help(argc, argv, usage))
		return 0;
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-' && argv[i][1])
			return usage_error("tag", usage, "unknown option "
					   "\"%s\"", argv[i]);
	if (argc != 3)
		return usage_error("tag", usage, argc < 3 ? "missing %s" :
				   "unexpected argument \"%s\"", argc < 2 ?
				   "SRC and NAME[:TAG]" : argc < 3 ?
				   "NAME[:TAG]" : argv[3]);
	r = strata_store_name(argv[2], &name, &err);
	if (r == 0)
		r = strata_ref_parse(argv[1], &ref, &err);
	if (r == 0)
		r = strata_store_open(g.root, &st, &err);
	if (r < 0)
		return die_err(&err, r);
	if (!in_store(st, ref)) {
		fprintf(stderr, "strata: tag: %s is not an image of the store "
			"%s; copy it in with: strata import %s %s\n", argv[1],
			strata_store_root(st), argv[1], name);
		return 1;
	}
	r = strata_image_resolve(st, argv[1], NULL, &img, &err);
	if (r == 0)
		r = strata_store_tag(st, img, name, &err);
	if (r < 0)
		return die_err(&err, r);
	printf("tagged %s %s\n", name, img->manifest_digest);
	return 0;
}
