/* SPDX-License-Identifier: Apache-2.0 */
/* strata ls-tags docker://HOST/REPO */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata ls-tags [--page-size N] [--creds USER[:PASS]]\n"
	"                      [--tls-verify=false] [--cert-dir DIR]\n"
	"                      docker://[HOST[:PORT]/]PATH\n"
	"\n"
	"List the tags of a repository, one per line, in the registry's order,\n"
	"following its pages (Link: rel=\"next\").\n"
	"\n"
	"  --page-size N         ask for N tags per request (default: the\n"
	"                        registry's)\n";

static int print_tag(void *ctx, const char *tag)
{
	(void)ctx;
	return printf("%s\n", tag) < 0 ? -EIO : 0;
}

int cmd_ls_tags(int argc, char **argv)
{
	struct strata_err err = { 0 };
	const char *ref = NULL, *v = NULL;
	int i, r, page = 0;

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
		if (opt_value(argc, argv, &i, "--page-size", &v, "ls-tags",
			      usage, &bad)) {
			char *end;
			long n;

			if (bad)
				return bad;
			n = strtol(v, &end, 10);
			if (*end || end == v || n < 1 || n > 100000)
				return usage_error("ls-tags", usage, "--page-"
						   "size wants 1 to 100000, "
						   "not \"%s\"", v);
			page = (int)n;
		} else if (argv[i][0] == '-') {
			return usage_error("ls-tags", usage,
					   "unknown option \"%s\"", argv[i]);
		} else if (ref) {
			return usage_error("ls-tags", usage, "unexpected "
					   "argument \"%s\"", argv[i]);
		} else {
			ref = argv[i];
		}
	}
	if (!ref)
		return usage_error("ls-tags", usage,
				   "missing docker://HOST/REPO");
	r = strata_registry_tags(ref, &g.reg, page, print_tag, NULL, &err);
	if (r < 0)
		return die_err(&err, r);
	return fflush(stdout) ? 1 : 0;
}
