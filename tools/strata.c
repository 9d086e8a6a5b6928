/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "strata.h"

struct globals g;

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *summary;
} commands[] = {
	{ "import", cmd_import, "copy an image into the store and unpack it" },
	{ "images", cmd_images, "list the images in the store" },
	{ "rmi", cmd_rmi, "remove a tag from the store" },
	{ "tag", cmd_tag, "point a tag of the store at an image of the store" },
	{ "gc", cmd_gc, "remove untagged images, unused blobs and layers" },
	{ "inspect", cmd_inspect, "show an image's manifest, config and layers" },
	{ "layers", cmd_layers, "what each layer adds, changes, removes and wastes" },
	{ "commit", cmd_commit, "turn an upper directory into a new layer and tag" },
	{ "copy", cmd_copy, "copy an image between stores, layouts, archives, registries" },
	{ "login", cmd_login, "check and store credentials for a registry" },
	{ "logout", cmd_logout, "remove stored credentials" },
	{ "ls-tags", cmd_ls_tags, "list a registry repository's tags" },
	{ "save", cmd_save, "write images into one archive, or separated" },
	{ "load", cmd_load, "import every image of an archive, or separated" },
	{ "diff", cmd_diff, "what differs between two images, or a mount and its image" },
	{ "history", cmd_history, "an image's history: created, by what, layer sizes" },
	{ "export", cmd_export, "write an image's root filesystem as one tar" },
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: strata [--root DIR] [--quiet] COMMAND [ARGS]\n\n"
		   "commands:\n");
	for (i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nreferences: NAME[:TAG][@DIGEST] (store), "
		   "oci:DIR[:TAG|@DIGEST],\n            "
		   "oci-archive:FILE[:TAG],\n            "
		   "docker-archive:FILE[:NAME:TAG], dir:DIR,\n            "
		   "docker://[HOST[:PORT]/]PATH[:TAG|@DIGEST]\n"
		   "mount an image with: stratafs REF MOUNTPOINT\n"
		   "'strata COMMAND --help' tells more.\n");
}

void human_size(uint64_t n, char *out, size_t len)
{
	static const char *const unit[] = { "B", "kB", "MB", "GB", "TB" };
	double v = (double)n;
	size_t i = 0;

	while (v >= 999.5 && i + 1 < ARRAY_SIZE(unit)) {
		v /= 1000;
		i++;
	}
	snprintf(out, len, "%.3g %s", v, unit[i]);
}

int die_err(const struct strata_err *err, int code)
{
	if (err && err->code)
		fprintf(stderr, "strata: %s\n", err->msg);
	else
		fprintf(stderr, "strata: %s\n", strerror(-code));
	return 1;
}

bool want_help(int argc, char **argv, const char *text)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			if (text)
				fputs(text, stdout);
			return true;
		}
	}
	return false;
}

int usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
	const char *end = strstr(usage, "\n\n");
	va_list ap;

	fprintf(stderr, "strata%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%.*s\nSee 'strata%s%s --help'.\n",
		end ? (int)(end - usage) : (int)strlen(usage), usage,
		cmd ? " " : "", cmd ? cmd : "");
	return 2;
}

bool opt_value(int argc, char **argv, int *i, const char *opt,
	       const char **value, const char *cmd, const char *usage,
	       int *bad)
{
	if (strcmp(argv[*i], opt))
		return false;
	if (*i + 1 >= argc) {
		*bad = usage_error(cmd, usage, "%s needs a value", opt);
		return true;
	}
	*value = argv[++*i];
	return true;
}

bool platform_option(int argc, char **argv, int *i, const char *cmd,
		     const char *usage, struct strata_platform *plat, int *bad)
{
	const char *v = NULL;

	if (!opt_value(argc, argv, i, "--platform", &v, cmd, usage, bad))
		return false;
	if (!*bad && strata_platform_parse(v, plat) < 0)
		*bad = usage_error(cmd, usage, "invalid platform \"%s\" (want "
				   "OS/ARCH[/VARIANT], as linux/arm64/v8)", v);
	return true;
}

int main(int argc, char **argv)
{
	int i = 1;
	size_t k;

	strata_log_set_prog("strata");
	g.reg.tls_verify = -1;
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "--root") && i + 1 < argc) {
			g.root = argv[++i];
		} else if (!strncmp(argv[i], "--root=", 7)) {
			g.root = argv[i] + 7;
		} else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
			g.quiet = true;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
			printf("strata %s\n", STRATA_VERSION);
			return 0;
		} else if (!strcmp(argv[i], "--root")) {
			fprintf(stderr, "strata: --root needs a value\n"
				"See 'strata --help'.\n");
			return 2;
		} else {
			fprintf(stderr, "strata: unknown option \"%s\"\n"
				"See 'strata --help'.\n", argv[i]);
			return 2;
		}
		i++;
	}
	if (i >= argc) {
		fprintf(stderr, "strata: no command given\n");
		usage(stderr);
		return 2;
	}
	strata_log_set_quiet(g.quiet);
	for (k = 0; k < ARRAY_SIZE(commands); k++)
		if (!strcmp(argv[i], commands[k].name))
			return commands[k].fn(argc - i, argv + i);
	fprintf(stderr, "strata: unknown command \"%s\" (see strata --help)\n",
		argv[i]);
	return 2;
}
