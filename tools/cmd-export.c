/* SPDX-License-Identifier: Apache-2.0 */
/* strata export [--platform P] REF|MOUNTPOINT FILE|- */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata.h"

static const char usage[] =
	"usage: strata export [--platform OS/ARCH[/VARIANT]] [--creds USER[:PASS]]\n"
	"                     [--tls-verify=false] [--cert-dir DIR]\n"
	"                     REF|MOUNTPOINT FILE|-\n"
	"\n"
	"Write the root filesystem of image REF, its layers merged, as one PAX\n"
	"tar to FILE (a temporary file beside it, renamed over FILE when whole)\n"
	"or to standard output (-), which must not be a terminal. The tar is the\n"
	"tree a mount of REF shows: directories before their contents, names\n"
	"sorted bytewise, numeric owners, modes, nanosecond mtimes, xattrs\n"
	"(SCHILY.xattr), devices, symlinks, and hardlinks to the first name\n"
	"written. The same image gives the same bytes. Layers missing from the\n"
	"cache (a docker:// REF) are pulled first.\n"
	"\n"
	"A directory in place of REF is a writable stratafs mount: what it shows\n"
	"now (its image and its changes, as docker export gives a container),\n"
	"held still while it is read (a REF that is also a directory here is\n"
	"taken as the mountpoint).\n";

int cmd_export(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_export_opts o = { .fd = STDOUT_FILENO };
	struct strata_platform plat;
	struct strata_err err = { 0 };
	struct live_mount mi = { .fd = -1, .upper_fd = -1, .store_fd = -1 };
	const char *out = NULL, *store_root = g.root;
	struct stat sb;
	uint64_t bytes = 0;
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
		if (platform_option(argc, argv, &i, "export", usage, &plat,
				    &bad)) {
			if (bad)
				return bad;
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
	/* a directory (or one this user may not look into: another user's
	 * mount) is a mountpoint; the mount's image is exported by the digest
	 * it shows, with its upper directory, held still meanwhile */
	if (stat(o.ref, &sb) == 0 ? S_ISDIR(sb.st_mode) : errno == EACCES) {
		if (live_mount_open("export", o.ref, &mi) < 0 ||
		    live_mount_freeze("export", o.ref, &mi) < 0) {
			live_mount_free(&mi);
			return 1;
		}
		o.ref = mi.base;
		o.from_digest = mi.manifest;
		o.upper = mi.upper_fd >= 0 ? mi.upper_at : mi.upper;
		if (!g.root)	/* the store the mount was made from */
			store_root = mi.store;
	}
	r = strata_store_open(store_root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_export(st, &o, &bytes, &err);
	live_mount_free(&mi);
	if (r < 0)
		return die_err(&err, r);
	if (!g.quiet && o.file)
		fprintf(stderr, "exported %s: %llu bytes\n", o.file,
			(unsigned long long)bytes);
	return 0;
}
