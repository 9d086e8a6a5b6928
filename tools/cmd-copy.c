/* SPDX-License-Identifier: Apache-2.0 */
/* strata copy SRC DEST */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static const char usage[] =
	"usage: strata copy [--tag TAG]... [--platform OS/ARCH[/VARIANT]]\n"
	"                   [--creds USER[:PASS]] [--tls-verify=false]\n"
	"                   [--cert-dir DIR] SRC DEST\n"
	"\n"
	"Copy the image SRC to DEST, each any of: a store NAME[:TAG],\n"
	"oci:DIR:TAG, oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],\n"
	"dir:DIR, docker://[HOST[:PORT]/]PATH[:TAG] (SRC may also name a\n"
	"@DIGEST).\n"
	"The manifest and blobs are copied as they are, so the image keeps its\n"
	"digest. To a registry, blobs it has are skipped and blobs pulled from\n"
	"another repository of the same registry are mounted there; from a\n"
	"registry, layers are downloaded only when DEST needs their bytes.\n"
	"Prints the manifest digest.\n"
	"\n"
	"  --tag TAG             also tag the image TAG at DEST (repeatable)\n"
	"  --platform P          pick P from a multi-platform index (default: host)\n";

int cmd_copy(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_free const char **tags = calloc((size_t)argc, sizeof(*tags));
	struct strata_copy_opts o = { 0 };
	struct strata_platform plat;
	struct strata_err err = { 0 };
	char digest[STRATA_DIGEST_MAX];
	const char *pos[2];
	int i, n = 0, r;

	if (want_help(argc, argv, NULL)) {
		fputs(usage, stdout);
		fputs(reg_opts_usage, stdout);
		return 0;
	}
	if (!tags)
		return die_err(NULL, -ENOMEM);
	for (i = 1; i < argc; i++) {
		const char *v = NULL;
		int bad = 0, ro = reg_option(argc, argv, &i);

		if (ro < 0)
			return 2;
		if (ro > 0)
			continue;
		if (opt_value(argc, argv, &i, "--tag", &v, "copy", usage,
			      &bad)) {
			if (bad)
				return bad;
			tags[o.n_tags++] = v;
		} else if (platform_option(argc, argv, &i, "copy", usage,
					&plat, &bad)) {
			if (bad)
				return bad;
			o.platform = &plat;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("copy", usage,
					   "unknown option \"%s\"", argv[i]);
		} else if (n < 2) {
			pos[n++] = argv[i];
		} else {
			return usage_error("copy", usage, "unexpected argument "
					   "\"%s\" (it takes SRC and DEST)",
					   argv[i]);
		}
	}
	if (n < 2)
		return usage_error("copy", usage, n ? "missing DEST"
				   : "missing SRC and DEST");
	o.src = pos[0];
	o.dest = pos[1];
	o.tags = tags;
	r = strata_store_open(g.root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_copy(st, &o, digest, &err);
	if (r < 0)
		return die_err(&err, r);
	printf("%s\n", digest);
	return 0;
}
