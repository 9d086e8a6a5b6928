/* SPDX-License-Identifier: Apache-2.0 */
/* strata commit --upper DIR --from REF DEST, strata commit MOUNTPOINT DEST */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "strata.h"

static const char usage[] =
	"usage: strata commit --upper DIR --from REF [OPTIONS] DEST\n"
	"       strata commit [OPTIONS] MOUNTPOINT DEST\n"
	"\n"
	"The second form commits a live writable stratafs mount: it finds the\n"
	"mount's image and upper directory and holds the mount still (changes\n"
	"wait) while it reads, so the layer is one consistent snapshot. It\n"
	"builds on the image the mount shows, by digest, whatever the mount's\n"
	"tag names by now: the committed image always shows what the mount\n"
	"shows. With --continue the mount then goes on from the new image\n"
	"with an empty upper directory, so the next commit holds only what\n"
	"changed after this one.\n"
	"Turn the upper directory DIR of a writable mount of REF (overlay or\n"
	".wh. format) into a new layer, config and manifest, tagged DEST:\n"
	"oci:DIR:TAG, oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],\n"
	"dir:DIR, a store NAME[:TAG], or :TAG for REF's own layout or store name.\n"
	"Prints the new manifest digest. With nothing to commit (no change,\n"
	"no config edit) it says so, writes nothing and exits with status 1.\n"
	"\n"
	"  --platform P            pick P from a multi-platform REF\n"
	"  --creds USER[:PASS], --tls-verify=false, --cert-dir DIR\n"
	"                          for a docker:// REF (its layers are pulled)\n"
	"  --tag TAG               also tag the result TAG (repeatable)\n"
	"  --compression C         gzip (default, level 6), zstd (level 3),\n"
	"                          zstd:chunked (zstd with a table of contents:\n"
	"                          lazy or partial pulls), estargz (gzip with\n"
	"                          a table of contents), none\n"
	"  --format F              oci (default) or docker media types\n"
	"  --mask-path PREFIX      leave PREFIX and below out (repeatable)\n"
	"  --no-mask-volumes       keep the config's Volumes (left out by default)\n"
	"  --message, -m TEXT      history comment\n"
	"  --author TEXT           history and config author\n"
	"  --created-by TEXT       history created_by (default \"strata commit\")\n"
	"  --created TIME          seconds since the epoch or YYYY-MM-DDTHH:MM:SSZ\n"
	"                          (default $SOURCE_DATE_EPOCH, else now); file\n"
	"                          times later than it are clamped to it\n"
	"  --allow-empty           commit even with nothing changed\n"
	"  --squash                one layer: the image and the changes merged\n"
	"                          (history and diff_ids: that layer only)\n"
	"  --continue              (MOUNTPOINT form) the mount goes on from\n"
	"                          the new image with an empty upper directory\n"
	"  --threads N             gzip compression threads (default: CPUs)\n"
	"config edits (each --X has an --unset-X):\n"
	"  --env K=V  --unset-env K        --label K=V  --unset-label K\n"
	"  --entrypoint JSON|STRING  --cmd JSON|STRING  (a string runs with sh -c)\n"
	"  --unset-entrypoint  --unset-cmd  --workdir DIR  --unset-workdir\n"
	"  --user U  --unset-user          --expose PORT[/PROTO]  --unset-expose P\n"
	"  --volume PATH  --unset-volume PATH\n";

static const struct {
	const char *opt;
	enum strata_cfg_edit_kind kind;
	bool arg;
} edit_opts[] = {
	{ "--env", STRATA_EDIT_ENV, true },
	{ "--unset-env", STRATA_EDIT_UNSET_ENV, true },
	{ "--entrypoint", STRATA_EDIT_ENTRYPOINT, true },
	{ "--unset-entrypoint", STRATA_EDIT_UNSET_ENTRYPOINT, false },
	{ "--cmd", STRATA_EDIT_CMD, true },
	{ "--unset-cmd", STRATA_EDIT_UNSET_CMD, false },
	{ "--workdir", STRATA_EDIT_WORKDIR, true },
	{ "--unset-workdir", STRATA_EDIT_UNSET_WORKDIR, false },
	{ "--user", STRATA_EDIT_USER, true },
	{ "--unset-user", STRATA_EDIT_UNSET_USER, false },
	{ "--label", STRATA_EDIT_LABEL, true },
	{ "--unset-label", STRATA_EDIT_UNSET_LABEL, true },
	{ "--expose", STRATA_EDIT_EXPOSE, true },
	{ "--unset-expose", STRATA_EDIT_UNSET_EXPOSE, true },
	{ "--volume", STRATA_EDIT_VOLUME, true },
	{ "--unset-volume", STRATA_EDIT_UNSET_VOLUME, true },
};

static int parse_time(const char *s, int64_t *out)
{
	struct tm tm;
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (!errno && end != s && !*end && v >= 0) {
		*out = v;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end || (*end && strcmp(end, "Z")))
		return -EINVAL;
	*out = (int64_t)timegm(&tm);
	return 0;
}

struct args {
	struct strata_commit_opts o;
	const char **tags, **mask;
	struct strata_cfg_edit *edits;
	const char *dest, *extra;
	const char *mountpoint;		/* committing a live mount */
	bool cont;			/* --continue */
};


/*
 * The committed image as the mount's daemon should name it: layouts by
 * absolute path and manifest digest, store names as they are.
 */
static char *continue_ref(const char *dest, const char *src,
			  const char *digest)
{
	struct strata_err err = { 0 };
	struct strata_ref *ref = NULL;
	const char *d = dest;
	char *out = NULL, *abs;

	if (dest[0] == ':')
		d = src;	/* the source's own layout or store name */
	if (strata_ref_parse(d, &ref, &err) < 0)
		return NULL;
	if (ref->kind == STRATA_REF_STORE) {
		if (dest[0] == ':') {
			const char *slash = strrchr(ref->tag, '/');
			const char *colon = strrchr(slash ? slash : ref->tag, ':');
			int n = colon ? (int)(colon - ref->tag)
				      : (int)strlen(ref->tag);

			if (asprintf(&out, "%.*s%s", n, ref->tag, dest) < 0)
				out = NULL;
		} else {
			out = strdup(ref->tag);
		}
	} else if ((abs = realpath(ref->path, NULL))) {
		if (ref->kind == STRATA_REF_OCI) {
			if (asprintf(&out, "oci:%s@%s", abs, digest) < 0)
				out = NULL;
		} else if (asprintf(&out, "%s:%s%s%s",
				    ref->kind == STRATA_REF_OCI_ARCHIVE
				    ? "oci-archive" : ref->kind == STRATA_REF_DIR
				    ? "dir" : "docker-archive", abs,
				    ref->tag ? ":" : "",
				    ref->tag ? ref->tag : "") < 0) {
			out = NULL;
		}
		free(abs);
	}
	strata_ref_free(ref);
	return out;
}


/* Tell the (frozen) mount to go on from the committed image. */
static int continue_mount(struct live_mount *m, const char *ref)
{
	char line[2048];

	if (live_mount_say(m->fd, "continue ") < 0 ||
	    live_mount_say(m->fd, ref) < 0 || live_mount_say(m->fd, "\n") < 0 ||
	    live_mount_read_reply(m->fd, line, sizeof(line)) < 0) {
		fprintf(stderr, "strata commit: --continue: no answer from "
			"stratafs\n");
		return -EIO;
	}
	if (strcmp(line, "ok")) {
		fprintf(stderr, "strata commit: --continue: stratafs: %s "
			"(the commit itself is done; the mount still shows "
			"the same tree over the old upper directory)\n", line);
		return -EIO;
	}
	return 0;
}


static int bad(const char *what, const char *v)
{
	fprintf(stderr, "strata commit: invalid %s \"%s\"\n", what, v);
	return 2;
}

/* True for the options (other than the config edits) that take a value. */
static bool takes_value(const char *o)
{
	static const char *const with_value[] = {
		"--upper", "--from", "--platform", "--tag", "--mask-path",
		"--compression", "--format", "--message", "-m", "--author",
		"--created-by", "--created", "--threads",
	};
	size_t k;

	for (k = 0; k < ARRAY_SIZE(with_value); k++)
		if (!strcmp(o, with_value[k]))
			return true;
	return false;
}

/* Return: 0 to go on, else the exit status. */
static int parse(int argc, char **argv, struct args *a,
		 struct strata_platform *plat)
{
	int i, k;

	a->o.compression = STRATA_COMP_GZIP;
	for (i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool found = false;

		for (k = 0; k < (int)ARRAY_SIZE(edit_opts); k++) {
			if (strcmp(o, edit_opts[k].opt))
				continue;
			if (edit_opts[k].arg && !v)
				return usage_error("commit", usage, "%s needs "
						   "a value", o);
			a->edits[a->o.n_edits].kind = edit_opts[k].kind;
			a->edits[a->o.n_edits++].value =
				edit_opts[k].arg ? argv[++i] : NULL;
			found = true;
		}
		if (found)
			continue;
		k = reg_option(argc, argv, &i);
		if (k < 0)
			return 2;
		if (k > 0)
			continue;
		if (!strcmp(o, "--no-mask-volumes")) {
			a->o.no_mask_volumes = true;
		} else if (!strcmp(o, "--continue")) {
			a->cont = true;
		} else if (!strcmp(o, "--allow-empty")) {
			a->o.allow_empty = true;
		} else if (!strcmp(o, "--squash")) {
			a->o.squash = true;
		} else if (!v && takes_value(o)) {
			return usage_error("commit", usage, "%s needs a value",
					   o);
		} else if (!strcmp(o, "--upper")) {
			a->o.upper = argv[++i];
		} else if (!strcmp(o, "--from")) {
			a->o.from = argv[++i];
		} else if (!strcmp(o, "--platform")) {
			if (strata_platform_parse(argv[++i], plat) < 0)
				return bad("platform", argv[i]);
			a->o.platform = plat;
		} else if (!strcmp(o, "--tag")) {
			a->tags[a->o.n_tags++] = argv[++i];
		} else if (!strcmp(o, "--mask-path")) {
			a->mask[a->o.n_mask++] = argv[++i];
		} else if (!strcmp(o, "--compression")) {
			i++;
			if (!strcmp(v, "gzip"))
				a->o.compression = STRATA_COMP_GZIP;
			else if (!strcmp(v, "zstd"))
				a->o.compression = STRATA_COMP_ZSTD;
			else if (!strcmp(v, "zstd:chunked"))
				a->o.compression = STRATA_COMP_ZSTD_CHUNKED;
			else if (!strcmp(v, "estargz"))
				a->o.compression = STRATA_COMP_ESTARGZ;
			else if (!strcmp(v, "none"))
				a->o.compression = STRATA_COMP_NONE;
			else
				return bad("compression", v);
		} else if (!strcmp(o, "--format")) {
			i++;
			if (strcmp(v, "oci") && strcmp(v, "docker"))
				return bad("format", v);
			a->o.docker = !strcmp(v, "docker");
		} else if (!strcmp(o, "--message") || !strcmp(o, "-m")) {
			a->o.message = argv[++i];
		} else if (!strcmp(o, "--author")) {
			a->o.author = argv[++i];
		} else if (!strcmp(o, "--created-by")) {
			a->o.created_by = argv[++i];
		} else if (!strcmp(o, "--created")) {
			if (parse_time(argv[++i], &a->o.created) < 0)
				return bad("time", argv[i]);
			a->o.have_created = true;
		} else if (!strcmp(o, "--threads")) {
			a->o.threads = atoi(argv[++i]);
			if (a->o.threads <= 0)
				return bad("thread count", argv[i]);
		} else if (o[0] == '-' && o[1]) {
			return usage_error("commit", usage,
					   "unknown option \"%s\"", o);
		} else if (!a->dest) {
			a->dest = o;
		} else if (!a->extra) {
			a->extra = o;
		} else {
			return usage_error("commit", usage, "unexpected "
					   "argument \"%s\" (it takes "
					   "MOUNTPOINT DEST, or DEST with "
					   "--upper and --from)", o);
		}
	}
	if (!a->o.upper && !a->o.from && a->dest && a->extra) {
		/* strata commit MOUNTPOINT DEST */
		a->mountpoint = a->dest;
		a->dest = a->extra;
	} else if (a->extra) {
		return usage_error("commit", usage, "unexpected argument "
				   "\"%s\" (with --upper and --from, give only "
				   "DEST)", a->extra);
	}
	if (a->cont && !a->mountpoint) {
		fprintf(stderr, "strata commit: --continue needs a mountpoint "
			"(strata commit --continue MOUNTPOINT DEST)\n");
		return 2;
	}
	if (!a->dest && !a->o.upper && !a->o.from)
		return usage_error("commit", usage, "missing MOUNTPOINT and "
				   "DEST (or --upper DIR --from REF DEST)");
	if (!a->dest)
		return usage_error("commit", usage, "missing DEST (where to "
				   "write the image)");
	if (!a->mountpoint && (!a->o.upper || !a->o.from))
		return usage_error("commit", usage, "%s",
				   a->o.upper ? "--upper needs --from REF (the "
				   "image the upper directory is over)"
				   : a->o.from ? "--from needs --upper DIR"
				   : "missing DEST: give MOUNTPOINT DEST, or "
				   "--upper DIR --from REF DEST");
	a->o.dest = a->dest;
	a->o.tags = a->tags;
	a->o.mask = a->mask;
	a->o.edits = a->edits;
	return 0;
}

int cmd_commit(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_commit_result res;
	struct strata_platform plat;
	struct strata_err err = { 0 };
	struct live_mount mi = { .fd = -1, .upper_fd = -1, .store_fd = -1 };
	struct args a = { 0 };
	int r;

	if (want_help(argc, argv, usage))
		return 0;
	a.tags = calloc((size_t)argc, sizeof(*a.tags));
	a.mask = calloc((size_t)argc, sizeof(*a.mask));
	a.edits = calloc((size_t)argc, sizeof(*a.edits));
	if (!a.tags || !a.mask || !a.edits) {
		r = die_err(NULL, -ENOMEM);
		goto out;
	}
	r = parse(argc, argv, &a, &plat);
	if (r)
		goto out;
	if (a.mountpoint) {
		if (live_mount_open("commit", a.mountpoint, &mi) < 0 ||
		    live_mount_freeze("commit", a.mountpoint, &mi) < 0) {
			r = 1;
			goto out;
		}
		a.o.upper = mi.upper_fd >= 0 ? mi.upper_at : mi.upper;
		a.o.from = mi.base;
		a.o.from_digest = mi.manifest;
	}
	/* a mount's image lives in the store it was mounted from */
	r = strata_store_open(a.mountpoint && !g.root ? mi.store : g.root,
			      &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_commit(st, &a.o, &res, &err);
	if (r < 0) {
		r = die_err(&err, r);
		goto out;
	}
	if (res.nothing) {
		fprintf(stderr, "strata: nothing to commit in %s\n",
			a.mountpoint ? mi.upper : a.o.upper);
		r = 1;
		goto out;
	}
	if (a.cont && res.layer) {
		cleanup_free char *cref = continue_ref(a.dest, mi.ref,
						       res.manifest_digest);

		if (!cref || continue_mount(&mi, cref) < 0) {
			if (!cref)
				fprintf(stderr, "strata commit: --continue: "
					"cannot name %s for the mount\n",
					a.dest);
			printf("%s\n", res.manifest_digest);
			r = 1;
			goto out;
		}
	}
	if (!g.quiet && res.layer)
		fprintf(stderr, "layer %s: %llu entries, %llu bytes, %lld "
			"compressed\n", res.layer_digest,
			(unsigned long long)res.entries,
			(unsigned long long)res.tar_size,
			(long long)res.layer_size);
	else if (!g.quiet)
		fprintf(stderr, "no file changes: config only (empty_layer)\n");
	if (!g.quiet && res.pushed)
		fprintf(stderr, "pushed: %d blobs uploaded, %d mounted from "
			"another repository, %d already there\n",
			res.push_uploaded, res.push_mounted, res.push_skipped);
	printf("%s\n", res.manifest_digest);
	r = 0;
out:
	live_mount_free(&mi);
	free(a.tags);
	free(a.mask);
	free(a.edits);
	return r;
}
