/* SPDX-License-Identifier: Apache-2.0 */
/* strata images, strata rmi */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "strata.h"

static const char images_usage[] =
	"usage: strata images [--all] [--digests] [--json]\n"
	"\n"
	"List the images in the store, one line per tag:\n"
	"  NAME     NAME:TAG (<none> for an untagged image, with --all)\n"
	"  ID       the first 12 hex digits of the manifest digest\n"
	"  CREATED  the image config's creation time, relative to now\n"
	"  SIZE     what the image takes in the store's blobs: manifest,\n"
	"           config and compressed layers (layers shared with other\n"
	"           images count in each; the unpacked layer cache is not\n"
	"           counted)\n"
	"\n"
	"  -a, --all      also list images that lost their last tag (a tag\n"
	"                 moved or removed): reachable as NAME@DIGEST until\n"
	"                 strata gc removes them\n"
	"  --digests      show the whole manifest digest instead of ID\n"
	"  --json         a JSON array of {name (null if untagged), digest,\n"
	"                 created, size}\n";

static const char rmi_usage[] =
	"usage: strata rmi NAME[:TAG]...\n"
	"\n"
	"Remove tags from the store. An image that loses its last tag stays\n"
	"reachable as NAME@DIGEST (strata images --all) until strata gc\n"
	"removes it with its blobs and cached layers.\n";

/* "2026-12-02T05:11:15.123+01:00" -> seconds since the epoch. */
static int parse_rfc3339(const char *s, time_t *out)
{
	struct tm tm;
	const char *p;
	long off = 0;

	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -EINVAL;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 +
		      ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
		if (*p == '-')
			off = -off;
	} else if (strcmp(p, "Z") && strcmp(p, "z")) {
		return -EINVAL;
	}
	*out = timegm(&tm) - off;
	return 0;
}

/* podman's "3 minutes ago" (go-units HumanDuration, in short). */
static void relative(const char *created, char *out, size_t len)
{
	static const struct {
		long long below, unit;
		const char *name;
	} steps[] = {
		{ 60, 1, "second" },
		{ 3600, 60, "minute" },
		{ 48 * 3600, 3600, "hour" },
		{ 14 * 86400, 86400, "day" },
		{ 61 * 86400, 7 * 86400, "week" },
		{ 730 * 86400, 30 * 86400, "month" },
		{ 0, 365 * 86400, "year" },
	};
	time_t t;
	long long d, v;
	size_t i;

	if (!created || parse_rfc3339(created, &t) < 0) {
		snprintf(out, len, "%s", created ? created : "-");
		return;
	}
	d = (long long)(time(NULL) - t);
	if (d < 0) {
		snprintf(out, len, "%s", created);
		return;
	}
	for (i = 0; i < ARRAY_SIZE(steps); i++) {
		if (steps[i].below && d >= steps[i].below)
			continue;
		v = d / steps[i].unit;
		snprintf(out, len, "%lld %s%s ago", v, steps[i].name,
			 v == 1 ? "" : "s");
		return;
	}
}

/* An image's size; "?" when unreadable (-1). */
static void human(int64_t n, char *out, size_t len)
{
	if (n < 0)
		snprintf(out, len, "?");
	else
		human_size((uint64_t)n, out, len);
}

static void print_json(const struct strata_tag_info *tags, size_t n)
{
	struct json_object *arr = json_object_new_array();
	size_t i;

	for (i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "name", tags[i].name ?
				       json_object_new_string(tags[i].name)
				       : NULL);
		json_object_object_add(o, "digest",
				       json_object_new_string(tags[i].digest));
		json_object_object_add(o, "created", tags[i].created ?
				       json_object_new_string(tags[i].created)
				       : NULL);
		json_object_object_add(o, "size",
				       json_object_new_int64(tags[i].size));
		json_object_array_add(arr, o);
	}
	puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
}

static void print_table(const struct strata_tag_info *tags, size_t n,
			bool digests)
{
	char when[64], size[32], id[16];
	size_t i;

	if (n)
		printf("%-40s %-*s %-16s %s\n", "NAME", digests ? 71 : 12,
		       digests ? "DIGEST" : "ID", "CREATED", "SIZE");
	for (i = 0; i < n; i++) {
		const char *hex = strchr(tags[i].digest, ':');

		snprintf(id, sizeof(id), "%.12s", hex ? hex + 1 : "");
		relative(tags[i].created, when, sizeof(when));
		human(tags[i].size, size, sizeof(size));
		printf("%-40s %-*s %-16s %s\n",
		       tags[i].name ? tags[i].name : "<none>",
		       digests ? 71 : 12, digests ? tags[i].digest : id, when,
		       size);
	}
}

int cmd_images(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_tag_info *tags = NULL;
	struct strata_err err = { 0 };
	bool json = false, all = false, digests = false;
	size_t n = 0, i;
	int r;

	if (want_help(argc, argv, images_usage))
		return 0;
	for (i = 1; i < (size_t)argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--all") || !strcmp(argv[i], "-a"))
			all = true;
		else if (!strcmp(argv[i], "--digests"))
			digests = true;
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
		r = strata_store_list(st, all, &tags, &n, &err);
	if (r < 0)
		return die_err(&err, r);
	if (json)
		print_json(tags, n);
	else
		print_table(tags, n, digests);
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
