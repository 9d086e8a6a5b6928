/* SPDX-License-Identifier: Apache-2.0 */
/* strata history [--json] [--no-trunc] REF */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata history [--json] [--no-trunc] [--platform P] REF\n"
	"\n"
	"The history of image REF, newest first, as docker history shows it:\n"
	"per entry its layer, when it was created, by what, the layer's size\n"
	"and the comment. An entry with empty_layer has no layer (size 0,\n"
	"LAYER \"-\"). SIZE is the uncompressed content (the sum of the\n"
	"layer's regular file sizes, each inode once) for a layer in the\n"
	"cache, else the compressed blob size marked with '*'. Layers no\n"
	"entry accounts for are shown with CREATED BY \"<no history>\", and\n"
	"a warning.\n"
	"\n"
	"  --json        an array, newest first: {\"created\", \"created_by\",\n"
	"                \"author\", \"comment\", \"empty_layer\", \"layer\":\n"
	"                {\"digest\", \"diff_id\", \"size\", \"compressed_size\"}\n"
	"                or null}; size is null for a layer not in the cache\n"
	"  --no-trunc    CREATED BY and COMMENT in full\n"
	"  --platform P  pick P from a multi-platform REF\n";

/* One row: a history entry, or a layer no entry accounts for. */
struct row {
	const struct strata_history *h;	/* NULL: a layer without history */
	const struct strata_layer *l;	/* NULL: an empty layer */
	bool have_size;
	uint64_t size;
};

/* go-units' HumanSizeWithPrecision(size, 3), as docker history prints. */
static void human(uint64_t n, char *out, size_t len)
{
	static const char *const units[] = { "B", "kB", "MB", "GB", "TB",
					     "PB", "EB" };
	double v = (double)n;
	size_t u = 0;

	while (v >= 1000.0 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1000.0;
		u++;
	}
	snprintf(out, len, "%.3g%s", v, units[u]);
}

/* @s on one line, cut to @max bytes (0: whole) with "...". */
static void cell(const char *s, size_t max, char *out, size_t len)
{
	size_t i, n = 0;

	for (i = 0; s && s[i] && n + 1 < len; i++)
		out[n++] = s[i] == '\n' || s[i] == '\t' ? ' ' : s[i];
	out[n] = '\0';
	if (max && n > max && max > 3 && max < len)
		strcpy(out + max - 3, "...");
}

static struct json_object *str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

static void print_json(const struct row *rows, size_t n)
{
	struct json_object *a = json_object_new_array();
	size_t i;

	for (i = n; i-- > 0;) {
		const struct row *r = &rows[i];
		struct json_object *o = json_object_new_object(), *l = NULL;

		json_object_object_add(o, "created",
				       str_or_null(r->h ? r->h->created : NULL));
		json_object_object_add(o, "created_by",
				       str_or_null(r->h ? r->h->created_by : NULL));
		json_object_object_add(o, "author",
				       str_or_null(r->h ? r->h->author : NULL));
		json_object_object_add(o, "comment",
				       str_or_null(r->h ? r->h->comment : NULL));
		json_object_object_add(o, "empty_layer",
				       json_object_new_boolean(r->l == NULL));
		if (r->l) {
			l = json_object_new_object();
			json_object_object_add(l, "digest",
					       json_object_new_string(r->l->digest));
			json_object_object_add(l, "diff_id",
					       json_object_new_string(r->l->diff_id));
			json_object_object_add(l, "size", r->have_size ?
					       json_object_new_int64((int64_t)r->size)
					       : NULL);
			json_object_object_add(l, "compressed_size",
					       json_object_new_int64(r->l->size));
		}
		json_object_object_add(o, "layer", l);
		json_object_array_add(a, o);
	}
	puts(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(a);
}

static void print_table(const struct row *rows, size_t n, bool trunc)
{
	size_t i;

	printf("%-12s  %-21s %-45s  %-9s  %s\n", "LAYER", "CREATED",
	       "CREATED BY", "SIZE", "COMMENT");
	for (i = n; i-- > 0;) {
		const struct row *r = &rows[i];
		char by[4096], comment[4096], size[32], layer[16], created[32];
		const char *hex = r->l ? strchr(r->l->digest, ':') : NULL;

		cell(r->h ? r->h->created_by : "<no history>", trunc ? 45 : 0,
		     by, sizeof(by));
		cell(r->h ? r->h->comment : NULL, trunc ? 45 : 0, comment,
		     sizeof(comment));
		snprintf(layer, sizeof(layer), "%.12s", hex ? hex + 1 : "-");
		if (!r->l)
			snprintf(size, sizeof(size), "0B");
		else if (r->have_size)
			human(r->size, size, sizeof(size));
		else {
			human((uint64_t)r->l->size, size, sizeof(size) - 1);
			strcat(size, "*");
		}
		/* to the second: the fraction is in --json */
		snprintf(created, sizeof(created), "%.19s%s",
			 r->h && r->h->created ? r->h->created : "",
			 r->h && r->h->created && strlen(r->h->created) > 20
			 ? "Z" : "");
		printf("%-12s  %-21s %-45s  %-9s  %s\n", layer, created, by,
		       size, comment);
	}
}

/*
 * Rows oldest first: each history entry that is not empty_layer takes
 * the next layer (image-spec config.md); layers left over get rows of
 * their own. Return: the number of rows.
 */
static size_t map_rows(struct strata_store *st, const struct strata_image *img,
		       struct row *rows)
{
	size_t i, n = 0, l = 0;

	for (i = 0; i < img->n_history; i++) {
		rows[n].h = &img->history[i];
		if (!img->history[i].empty_layer && l < img->n_layers)
			rows[n].l = &img->layers[l++];
		n++;
	}
	if (l < img->n_layers)
		strata_warn("%s: %zu layer%s without a history entry (the "
			    "config's history lists %zu non-empty entries "
			    "for %zu layers)", img->ref_text,
			    img->n_layers - l, img->n_layers - l == 1 ? "" : "s",
			    l, img->n_layers);
	for (; l < img->n_layers; l++)
		rows[n++].l = &img->layers[l];
	for (i = 0; i < n; i++)
		if (rows[i].l && strata_layer_data_bytes(st, rows[i].l->diff_id,
							 &rows[i].size) == 0)
			rows[i].have_size = true;
	return n;
}

int cmd_history(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	cleanup_free struct row *rows = NULL;
	struct strata_platform plat, *pp = NULL;
	struct strata_err err = { 0 };
	const char *ref = NULL;
	bool json = false, trunc = true;
	size_t n;
	int i, r, bad = 0;

	if (want_help(argc, argv, usage)) {
		fputs(reg_opts_usage, stdout);
		return 0;
	}
	for (i = 1; i < argc; i++) {
		r = reg_option(argc, argv, &i);
		if (r < 0)
			return 2;
		if (r > 0)
			continue;
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--no-trunc")) {
			trunc = false;
		} else if (platform_option(argc, argv, &i, "history", usage,
					&plat, &bad)) {
			if (bad)
				return bad;
			pp = &plat;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("history", usage, "unknown option "
					   "\"%s\"", argv[i]);
		} else if (!ref) {
			ref = argv[i];
		} else {
			return usage_error("history", usage, "unexpected "
					   "argument \"%s\"", argv[i]);
		}
	}
	if (!ref)
		return usage_error("history", usage, "missing REF");
	r = strata_store_open(g.root, &st, &err);
	if (r == 0) {
		strata_store_set_reg_opts(st, &g.reg);
		r = strata_image_resolve(st, ref, pp, &img, &err);
	}
	if (r < 0) {
		fprintf(stderr, "strata history: %s: %s\n", ref,
			err.code ? err.msg : strerror(-r));
		return 1;
	}
	rows = calloc(img->n_history + img->n_layers + 1, sizeof(*rows));
	if (!rows)
		return die_err(NULL, -ENOMEM);
	n = map_rows(st, img, rows);
	if (json)
		print_json(rows, n);
	else
		print_table(rows, n, trunc);
	return 0;
}
