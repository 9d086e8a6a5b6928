/* SPDX-License-Identifier: Apache-2.0 */
/* strata gc */
#include <stdio.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata gc\n"
	"\n"
	"Remove from the store the images that have no tag left (strata\n"
	"images --all shows them as <none>), and every blob and cached layer\n"
	"that no tagged image uses, and what killed imports and commits left\n"
	"behind. Never what a live mount shows (each stratafs pins its image,\n"
	"named or not, in ROOT/pins while it runs). While another strata uses\n"
	"the store (an import, commit, tag, or a mount being set up), gc\n"
	"removes nothing, says so and exits 1: run it again later. A killed\n"
	"gc leaves a valid store; the next gc finishes its work.\n"
	"Prints what it removed and the disk space it freed.\n";

int cmd_gc(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_gc_result res;
	struct strata_err err = { 0 };
	uint64_t total;
	char h[32];
	int r;

	if (want_help(argc, argv, usage))
		return 0;
	if (argc != 1)
		return usage_error("gc", usage, argv[1][0] == '-' && argv[1][1]
				   ? "unknown option \"%s\"" :
				   "unexpected argument \"%s\" (it takes "
				   "none)", argv[1]);
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		r = strata_store_gc(st, &res, &err);
	if (r < 0)
		return die_err(&err, r);
	total = res.blob_bytes + res.layer_bytes + res.temp_bytes;
	human_size(total, h, sizeof(h));
	printf("removed %llu untagged images, %llu blobs (%llu bytes), "
	       "%llu cached layers (%llu bytes), %llu leftovers (%llu "
	       "bytes)\n",
	       (unsigned long long)res.images, (unsigned long long)res.blobs,
	       (unsigned long long)res.blob_bytes,
	       (unsigned long long)res.layers,
	       (unsigned long long)res.layer_bytes,
	       (unsigned long long)res.temps,
	       (unsigned long long)res.temp_bytes);
	if (res.live_pins)
		printf("kept what %llu live mounts use (%llu of them untagged "
		       "images)\n", (unsigned long long)res.live_pins,
		       (unsigned long long)res.kept_images);
	printf("freed %s (%llu bytes)\n", h, (unsigned long long)total);
	return 0;
}
