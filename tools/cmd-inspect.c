/* SPDX-License-Identifier: Apache-2.0 */
/* strata inspect [--json|--raw|--config] [--platform P] REF */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata inspect [--json | --raw | --config] [--platform OS/ARCH[/VARIANT]]\n"
	"                      [--creds USER[:PASS]] [--tls-verify=false]\n"
	"                      [--cert-dir DIR] REF\n"
	"\n"
	"Show the image REF: manifest digest, platform, created, author,\n"
	"config (env, entrypoint, cmd, working dir, user, labels, exposed\n"
	"ports, volumes), layers with media type, size and diff_id, and\n"
	"history (with each entry's author). --json prints one object;\n"
	"--raw prints the manifest as stored (for an index, the platform's\n"
	"manifest), --config the config. A docker:// REF costs the manifest and\n"
	"config only: no layer is downloaded.\n";

static struct json_object *str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

static struct json_object *strv_json(char **v, bool null_if_absent)
{
	struct json_object *a;

	if (!v && null_if_absent)
		return NULL;
	a = json_object_new_array();
	for (; v && *v; v++)
		json_object_array_add(a, json_object_new_string(*v));
	return a;
}

static struct json_object *labels_json(char **v)
{
	struct json_object *o = json_object_new_object();

	for (; v && *v; v++) {
		const char *eq = strchr(*v, '=');
		char key[1024];

		snprintf(key, sizeof(key), "%.*s", (int)(eq - *v), *v);
		json_object_object_add(o, key, json_object_new_string(eq + 1));
	}
	return o;
}

static void print_json(const struct strata_image *img)
{
	struct json_object *o = json_object_new_object(), *p, *c, *ls, *hs;
	size_t i;

	json_object_object_add(o, "reference", json_object_new_string(img->ref_text));
	json_object_object_add(o, "digest", json_object_new_string(img->manifest_digest));
	json_object_object_add(o, "mediaType",
			       json_object_new_string(img->manifest_media_type));
	p = json_object_new_object();
	json_object_object_add(p, "os", json_object_new_string(img->platform.os));
	json_object_object_add(p, "architecture",
			       json_object_new_string(img->platform.arch));
	if (img->platform.variant[0])
		json_object_object_add(p, "variant",
				       json_object_new_string(img->platform.variant));
	json_object_object_add(o, "platform", p);
	json_object_object_add(o, "created", str_or_null(img->created));
	json_object_object_add(o, "author", str_or_null(img->author));
	c = json_object_new_object();
	json_object_object_add(c, "digest", json_object_new_string(img->config_digest));
	json_object_object_add(c, "env", strv_json(img->env, false));
	json_object_object_add(c, "entrypoint", strv_json(img->entrypoint, true));
	json_object_object_add(c, "cmd", strv_json(img->cmd, true));
	json_object_object_add(c, "workingDir",
			       json_object_new_string(img->working_dir ? img->working_dir : ""));
	json_object_object_add(c, "user",
			       json_object_new_string(img->user ? img->user : ""));
	json_object_object_add(c, "labels", labels_json(img->labels));
	json_object_object_add(c, "exposedPorts", strv_json(img->exposed_ports, false));
	json_object_object_add(c, "volumes", strv_json(img->volumes, false));
	json_object_object_add(c, "stopSignal", str_or_null(img->stop_signal));
	json_object_object_add(o, "config", c);
	ls = json_object_new_array();
	for (i = 0; i < img->n_layers; i++) {
		struct json_object *l = json_object_new_object();

		json_object_object_add(l, "mediaType",
				       json_object_new_string(img->layers[i].media_type));
		json_object_object_add(l, "digest",
				       json_object_new_string(img->layers[i].digest));
		json_object_object_add(l, "size",
				       json_object_new_int64(img->layers[i].size));
		json_object_object_add(l, "diffId",
				       json_object_new_string(img->layers[i].diff_id));
		json_object_array_add(ls, l);
	}
	json_object_object_add(o, "layers", ls);
	hs = json_object_new_array();
	for (i = 0; i < img->n_history; i++) {
		const struct strata_history *h = &img->history[i];
		struct json_object *x = json_object_new_object();

		json_object_object_add(x, "created", str_or_null(h->created));
		json_object_object_add(x, "createdBy", str_or_null(h->created_by));
		json_object_object_add(x, "author", str_or_null(h->author));
		json_object_object_add(x, "comment", str_or_null(h->comment));
		json_object_object_add(x, "emptyLayer",
				       json_object_new_boolean(h->empty_layer));
		json_object_array_add(hs, x);
	}
	json_object_object_add(o, "history", hs);
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void print_list(const char *label, char **v, const char *sep)
{
	printf("%-12s", label);
	if (!v || !*v) {
		printf("-\n");
		return;
	}
	for (size_t i = 0; v[i]; i++)
		printf("%s%s", i ? sep : "", v[i]);
	printf("\n");
}

static void print_text(const struct strata_image *img)
{
	size_t i;

	printf("%-12s%s\n", "Reference", img->ref_text);
	printf("%-12s%s\n", "Digest", img->manifest_digest);
	printf("%-12s%s\n", "MediaType", img->manifest_media_type);
	printf("%-12s%s/%s%s%s\n", "Platform", img->platform.os,
	       img->platform.arch, img->platform.variant[0] ? "/" : "",
	       img->platform.variant);
	printf("%-12s%s\n", "Created", img->created ? img->created : "-");
	printf("%-12s%s\n", "Author",
	       img->author && *img->author ? img->author : "-");
	printf("%-12s%s\n", "Config", img->config_digest);
	print_list("Env", img->env, "\n            ");
	print_list("Entrypoint", img->entrypoint, " ");
	print_list("Cmd", img->cmd, " ");
	printf("%-12s%s\n", "WorkingDir",
	       img->working_dir && *img->working_dir ? img->working_dir : "-");
	printf("%-12s%s\n", "User", img->user && *img->user ? img->user : "-");
	print_list("Labels", img->labels, "\n            ");
	print_list("Ports", img->exposed_ports, " ");
	print_list("Volumes", img->volumes, " ");
	/* numbered from 1 at the bottom, as strata layers and stratafs
	 * -o layer=N count them */
	printf("Layers (%zu)\n", img->n_layers);
	for (i = 0; i < img->n_layers; i++)
		printf("  %2zu %s %12lld %s\n     diff_id %s\n", i + 1,
		       img->layers[i].digest, (long long)img->layers[i].size,
		       img->layers[i].media_type, img->layers[i].diff_id);
	printf("History (%zu)\n", img->n_history);
	for (i = 0; i < img->n_history; i++) {
		const struct strata_history *h = &img->history[i];

		printf("  %2zu %s %s%s%s%s%s%s%s\n", i + 1,
		       h->created ? h->created : "-",
		       h->created_by ? h->created_by : "",
		       h->author ? " (author: " : "",
		       h->author ? h->author : "", h->author ? ")" : "",
		       h->comment ? " # " : "", h->comment ? h->comment : "",
		       h->empty_layer ? " (empty layer)" : "");
	}
}

int cmd_inspect(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	struct strata_platform plat, *pp = NULL;
	struct strata_err err = { 0 };
	const char *ref = NULL;
	bool json = false;
	int raw = 0, i, r;

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
		} else if (!strcmp(argv[i], "--raw")) {
			raw = 1;
		} else if (!strcmp(argv[i], "--config")) {
			raw = 2;
		} else if (platform_option(argc, argv, &i, "inspect", usage,
					&plat, &bad)) {
			if (bad)
				return bad;
			pp = &plat;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("inspect", usage,
					   "unknown option \"%s\"", argv[i]);
		} else if (ref) {
			return usage_error("inspect", usage, "unexpected "
					   "argument \"%s\" (it takes one REF)",
					   argv[i]);
		} else {
			ref = argv[i];
		}
	}
	if (!ref)
		return usage_error("inspect", usage, "missing REF (the image "
				   "to inspect)");
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_image_resolve(st, ref, pp, &img, &err);
	if (r < 0)
		return die_err(&err, r);
	if (raw) {
		cleanup_free char *buf = NULL;
		size_t len;

		r = strata_image_read_blob(img, raw == 1 ? img->manifest_digest
						     : img->config_digest,
					   raw == 1 ? img->manifest_size
						    : img->config_size,
					   &buf, &len, &err);
		if (r < 0)
			return die_err(&err, r);
		fwrite(buf, 1, len, stdout);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	if (json)
		print_json(img);
	else
		print_text(img);
	return 0;
}
