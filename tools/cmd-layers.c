/* SPDX-License-Identifier: Apache-2.0 */
/* strata layers [--json] [--platform P] REF */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata layers [--json] [--platform OS/ARCH[/VARIANT]]\n"
	"                     [--creds USER[:PASS]] [--tls-verify=false]\n"
	"                     [--cert-dir DIR] REF\n"
	"\n"
	"Show what each layer of the image REF does, bottom (1) to top, with\n"
	"the numbers `stratafs -o layer=N` takes: its digest, compressed size,\n"
	"the content it carries (file bytes; a hardlinked file once), the\n"
	"history step that made it, and the paths it adds, changes (a path\n"
	"the layers below had: replaced, or a directory listed again) and\n"
	"removes (lower paths hidden by whiteouts and opaque directories),\n"
	"each with a count and the content bytes involved. WASTED is what\n"
	"the layer carries that no path of the final image reaches: files a\n"
	"later layer replaced or removed. The image's efficiency is\n"
	"1 - wasted / content: the share of the bytes shipped that the image\n"
	"shows. The image is unpacked into the cache first (progress on a\n"
	"terminal). --json prints one object.\n";

/* The history step of each layer (the non-empty ones, in order), or
 * NULL. Caller frees the array. */
static const char **created_by(const struct strata_image *img)
{
	const char **v = calloc(img->n_layers ? img->n_layers : 1,
				sizeof(*v));
	size_t i, l = 0;

	for (i = 0; v && i < img->n_history && l < img->n_layers; i++)
		if (!img->history[i].empty_layer)
			v[l++] = img->history[i].created_by;
	return v;
}

static double efficiency(uint64_t content, uint64_t wasted)
{
	return content ? 1.0 - (double)wasted / (double)content : 1.0;
}

static struct json_object *count_json(uint64_t n, uint64_t bytes)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "count", json_object_new_int64((int64_t)n));
	json_object_object_add(o, "bytes",
			       json_object_new_int64((int64_t)bytes));
	return o;
}

static void print_json(const struct strata_image *img,
		       const struct strata_layer_stat *s, const char **by,
		       uint64_t content, uint64_t wasted)
{
	struct json_object *o = json_object_new_object();
	struct json_object *ls = json_object_new_array();
	size_t i;

	json_object_object_add(o, "reference",
			       json_object_new_string(img->ref_text));
	json_object_object_add(o, "digest",
			       json_object_new_string(img->manifest_digest));
	for (i = 0; i < img->n_layers; i++) {
		struct json_object *l = json_object_new_object();
		const struct strata_layer *d = &img->layers[i];

		json_object_object_add(l, "layer",
				       json_object_new_int64((int64_t)i + 1));
		json_object_object_add(l, "digest",
				       json_object_new_string(d->digest));
		json_object_object_add(l, "diffId",
				       json_object_new_string(d->diff_id));
		json_object_object_add(l, "size", json_object_new_int64(d->size));
		json_object_object_add(l, "contentBytes",
				       json_object_new_int64((int64_t)s[i].content));
		json_object_object_add(l, "createdBy", by[i]
				       ? json_object_new_string(by[i]) : NULL);
		json_object_object_add(l, "added", count_json(s[i].added,
							      s[i].added_bytes));
		json_object_object_add(l, "changed",
				       count_json(s[i].changed,
						  s[i].changed_bytes));
		json_object_object_add(l, "removed",
				       count_json(s[i].removed,
						  s[i].removed_bytes));
		json_object_object_add(l, "replacedBytes",
				       json_object_new_int64((int64_t)s[i].replaced_bytes));
		json_object_object_add(l, "wastedBytes",
				       json_object_new_int64((int64_t)s[i].wasted));
		json_object_array_add(ls, l);
	}
	json_object_object_add(o, "layers", ls);
	json_object_object_add(o, "contentBytes",
			       json_object_new_int64((int64_t)content));
	json_object_object_add(o, "wastedBytes",
			       json_object_new_int64((int64_t)wasted));
	json_object_object_add(o, "efficiency",
			       json_object_new_double(efficiency(content,
								 wasted)));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* "COUNT BYTES" in one column. */
static const char *count_col(uint64_t n, uint64_t bytes, char *buf,
			     size_t len)
{
	char h[32];

	human_size(bytes, h, sizeof(h));
	snprintf(buf, len, "%llu %s", (unsigned long long)n, h);
	return buf;
}

static void print_text(const struct strata_image *img,
		       const struct strata_layer_stat *s, const char **by,
		       uint64_t content, uint64_t wasted)
{
	char size[32], cont[32], add[48], chg[48], rm[48], wst[32];
	size_t i;

	printf("%-5s %-12s %9s %9s %-15s %-15s %-15s %9s  %s\n", "LAYER",
	       "DIGEST", "SIZE", "CONTENT", "ADDED", "CHANGED", "REMOVED",
	       "WASTED", "CREATED BY");
	for (i = 0; i < img->n_layers; i++) {
		const char *hex = strchr(img->layers[i].digest, ':');

		human_size((uint64_t)img->layers[i].size, size, sizeof(size));
		human_size(s[i].content, cont, sizeof(cont));
		human_size(s[i].wasted, wst, sizeof(wst));
		printf("%-5zu %-12.12s %9s %9s %-15s %-15s %-15s %9s  ", i + 1,
		       hex ? hex + 1 : img->layers[i].digest, size, cont,
		       count_col(s[i].added, s[i].added_bytes, add, sizeof(add)),
		       count_col(s[i].changed, s[i].changed_bytes, chg,
				 sizeof(chg)),
		       count_col(s[i].removed, s[i].removed_bytes, rm,
				 sizeof(rm)), wst);
		/* one line per layer: a RUN step may span several */
		for (const char *p = by[i] ? by[i] : "-"; *p; p++)
			putchar(*p == '\n' || *p == '\t' || *p == '\r'
				? ' ' : *p);
		putchar('\n');
	}
	human_size(content, cont, sizeof(cont));
	human_size(wasted, wst, sizeof(wst));
	printf("content %s in %zu layer%s, wasted %s, efficiency %.1f%%\n",
	       cont, img->n_layers, img->n_layers == 1 ? "" : "s", wst,
	       100.0 * efficiency(content, wasted));
}

int cmd_layers(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	cleanup_free struct strata_layer_stat *s = NULL;
	cleanup_free const char **by = NULL;
	struct strata_platform plat, *pp = NULL;
	struct strata_err err = { 0 };
	const char *ref = NULL;
	uint64_t content = 0, wasted = 0;
	bool json = false;
	size_t k;
	int i, r;

	if (want_help(argc, argv, NULL)) {
		fputs(usage, stdout);
		fputs(reg_opts_usage, stdout);
		return 0;
	}
	for (i = 1; i < argc; i++) {
		int bad = 0, ro = reg_option(argc, argv, &i);

		if (ro < 0)
			return 2;
		if (ro > 0)
			continue;
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (platform_option(argc, argv, &i, "layers", usage,
					&plat, &bad)) {
			if (bad)
				return bad;
			pp = &plat;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("layers", usage,
					   "unknown option \"%s\"", argv[i]);
		} else if (ref) {
			return usage_error("layers", usage, "unexpected "
					   "argument \"%s\" (it takes one REF)",
					   argv[i]);
		} else {
			ref = argv[i];
		}
	}
	if (!ref)
		return usage_error("layers", usage, "missing REF (the image "
				   "whose layers to show)");
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_image_resolve(st, ref, pp, &img, &err);
	if (r == 0)
		r = strata_cache_ensure(st, img, NULL, &err);
	if (r < 0)
		return die_err(&err, r);
	s = calloc(img->n_layers ? img->n_layers : 1, sizeof(*s));
	by = created_by(img);
	if (!s || !by)
		return die_err(NULL, -ENOMEM);
	r = strata_layer_stats(st, img, s, &err);
	if (r < 0)
		return die_err(&err, r);
	for (k = 0; k < img->n_layers; k++) {
		content += s[k].content;
		wasted += s[k].wasted;
	}
	if (json)
		print_json(img, s, by, content, wasted);
	else
		print_text(img, s, by, content, wasted);
	return fflush(stdout) == 0 ? 0 : 1;
}
