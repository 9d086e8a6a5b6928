/* SPDX-License-Identifier: Apache-2.0 */
/* strata images, strata rmi */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "strata.h"

static const char images_usage[] =
	"usage: strata images [--json]\n"
	"\n"
	"List the images in the store: NAME:TAG, manifest digest.\n";

static const char rmi_usage[] =
	"usage: strata rmi NAME[:TAG]...\n"
	"\n"
	"Remove tags from the store. Cached layers stay until no longer used.\n";

int cmd_images(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_tag_info *tags = NULL;
	struct strata_err err = { 0 };
	bool json = false;
	size_t n = 0, i;
	int r;

	if (want_help(argc, argv, images_usage))
		return 0;
	for (i = 1; i < (size_t)argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return usage_error("images", images_usage,
					   "unknown option \"%s\"", argv[i]);
		else
			return usage_error("images", images_usage,
					   "unexpected argument \"%s\" (it "
					   "takes none)", argv[i]);
	}
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		r = strata_store_list(st, &tags, &n, &err);
	if (r < 0)
		return die_err(&err, r);
	if (json) {
		struct json_object *arr = json_object_new_array();

		for (i = 0; i < n; i++) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "name",
					       json_object_new_string(tags[i].name));
			json_object_object_add(o, "digest",
					       json_object_new_string(tags[i].digest));
			json_object_array_add(arr, o);
		}
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
						    JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(arr);
	} else {
		if (n)
			printf("%-40s %s\n", "NAME", "DIGEST");
		for (i = 0; i < n; i++)
			printf("%-40s %s\n", tags[i].name, tags[i].digest);
	}
	strata_tags_free(tags, n);
	return 0;
}

int cmd_rmi(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_err err = { 0 };
	int i, r, ret = 0;

	if (want_help(argc, argv, rmi_usage))
		return 0;
	if (argc < 2)
		return usage_error("rmi", rmi_usage, "no image name given");
	for (i = 1; i < argc; i++)
		if (argv[i][0] == '-' && argv[i][1])
			return usage_error("rmi", rmi_usage,
					   "unknown option \"%s\"", argv[i]);
	r = strata_store_open(g.root, &st, &err);
	if (r < 0)
		return die_err(&err, r);
	for (i = 1; i < argc; i++) {
		cleanup_free char *name = NULL;

		memset(&err, 0, sizeof(err));
		r = strata_store_name(argv[i], &name, &err);
		if (r == 0)
			r = strata_store_untag(st, name, &err);
		if (r < 0)
			ret = die_err(&err, r);
		else
			printf("untagged %s\n", name);
	}
	return ret;
}
