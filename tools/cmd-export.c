/* SPDX-License-Identifier: Apache-2.0 */
/* strata export [--platform P] REF FILE|- */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "strata.h"

static const char usage[] =
	"usage: strata export [--platform OS/ARCH[/VARIANT]] [--creds USER[:PASS]]\n"
	"                     [--tls-verify=false] [--cert-dir DIR] REF FILE|-\n"
	"\n"
	"Write the root filesystem of image REF, its layers merged, as one PAX\n"
	"tar to FILE (a temporary file beside it, renamed over FILE when whole)\n"
	"or to standard output (-), which must not be a terminal. The tar is the\n"
	"tree a mount of REF shows: directories before their contents, names\n"
	"sorted bytewise, numeric owners, modes, nanosecond mtimes, xattrs\n"
	"(SCHILY.xattr), devices, symlinks, and hardlinks to the first name\n"
	"written. The same image gives the same bytes. Layers missing from the\n"
	"cache (a docker:// REF) are pulled first.\n";

int cmd_export(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_export_opts o = { .fd = STDOUT_FILENO };
	struct strata_platform plat;
	struct strata_err err = { 0 };
	const char *out = NULL;
	uint64_t bytes = 0;
	int i, r;

	if (want_help(argc, argv, NULL)) {
		fputs(usage, stdout);
		fputs(reg_opts_usage, stdout);
		return 0;
	}
	for (i = 1; i < argc; i++) {
		const char *v = NULL;
		int bad = 0, ro = reg_option(argc, argv, &i);

		if (ro < 0)
			return 2;
		if (ro > 0)
			continue;
		if (opt_value(argc, argv, &i, "--platform", &v, "export",
			      usage, &bad)) {
			if (bad)
				return bad;
			if (strata_platform_parse(v, &plat) < 0) {
				fprintf(stderr, "strata export: invalid "
					"platform \"%s\" (want "
					"OS/ARCH[/VARIANT])\n", v);
				return 2;
			}
			o.platform = &plat;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("export", usage,
					   "unknown option \"%s\"", argv[i]);
		} else if (!o.ref) {
			o.ref = argv[i];
		} else if (!out) {
			out = argv[i];
		} else {
			return usage_error("export", usage, "unexpected "
					   "argument \"%s\" (it takes REF and "
					   "FILE or -)", argv[i]);
		}
	}
	if (!o.ref)
		return usage_error("export", usage, "missing REF (the image "
				   "to export)");
	if (!out)
		return usage_error("export", usage, "missing FILE (or - for "
				   "standard output)");
	if (!strcmp(out, "-")) {
		if (isatty(STDOUT_FILENO)) {
			fprintf(stderr, "strata export: refusing to write a "
				"tar to a terminal (give FILE, or redirect "
				"standard output)\n");
			return 2;
		}
	} else {
		o.file = out;
	}
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_export(st, &o, &bytes, &err);
	if (r < 0)
		return die_err(&err, r);
	if (!g.quiet && o.file)
		fprintf(stderr, "exported %s: %llu bytes\n", o.file,
			(unsigned long long)bytes);
	return 0;
}
