/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stratafs: mount an OCI image read-only.
 *
 *   stratafs [-f] [-d] [-o OPTS] REF MOUNTPOINT
 *
 * Everything that can fail for a reason a person can fix (bad reference,
 * bad image, missing mountpoint, no /dev/fuse) fails before the mount, with
 * one line on stderr. Without -f the command returns once the mount is live.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fs.h"
#include "lower.h"
#include "loop.h"
#include "wfs.h"
#include "control.h"
#include "resume.h"

struct options {
	char *upper, *work, *lowerdir;
	int volatile_;
	int rebase;
	int xattr_permissions;
	int want_suid, want_dev, want_nosuid;
	char *root;
	char *platform;
	char *creds, *tls_verify, *cert_dir;	/* docker:// */
	char *uidmapping, *gidmapping;
	char *layer;			/* layer=N */
	int layer_only;			/* only: layer N alone */
	int squash_uid, squash_gid;
	int allow_other;
	int lazy, prefetch;		/* zstd:chunked layers: default 1;
					 * prefetch=all: 2 */
	char *lazy_s;			/* lazy=0|1|all (all: the same as 1) */
	char *fetchers_s;		/* fetchers=N: Range requests in flight */
	int fetchers;
	char *prefetch_s;		/* prefetch=0|1|all */
	int nosupervise;		/* served by the process that mounted */
	char devfd[32];			/* "/dev/fd/N": a mount taken over */
	int show_help, show_version;
	char *ref, *mountpoint;
	char **unknown;			/* options nobody takes */
	size_t n_unknown;
};

#define OPT(t, p) { t, offsetof(struct options, p), 1 }

static const struct fuse_opt opt_spec[] = {
	OPT("upper=%s", upper),
	OPT("upperdir=%s", upper),
	OPT("work=%s", work),
	OPT("workdir=%s", work),
	OPT("lowerdir=%s", lowerdir),
	OPT("volatile", volatile_),
	OPT("rebase", rebase),
	{ "xattr_permissions=%d", offsetof(struct options, xattr_permissions), 0 },
	OPT("root=%s", root),
	OPT("platform=%s", platform),
	OPT("uidmapping=%s", uidmapping),
	OPT("gidmapping=%s", gidmapping),
	{ "squash_to_uid=%d", offsetof(struct options, squash_uid), 0 },
	{ "squash_to_gid=%d", offsetof(struct options, squash_gid), 0 },
	OPT("lazy=%s", lazy_s),
	OPT("fetchers=%s", fetchers_s),
	OPT("prefetch", prefetch),
	OPT("prefetch=%s", prefetch_s),
	OPT("creds=%s", creds),
	OPT("tls_verify=%s", tls_verify),
	OPT("cert_dir=%s", cert_dir),
	OPT("layer=%s", layer),
	OPT("only", layer_only),
	OPT("nosupervise", nosupervise),
	OPT("-h", show_help),
	OPT("--help", show_help),
	OPT("-V", show_version),
	OPT("--version", show_version),
	FUSE_OPT_END
};

/* Options libfuse itself takes (mount flags, session and loop options). */
static bool fuse_knows(const char *arg)
{
	static const char *const known[] = {
		"allow_other", "allow_root", "auto_unmount",
		"default_permissions", "ro", "rw", "nosuid", "suid", "nodev",
		"dev", "noexec", "exec", "async", "sync", "atime", "noatime",
		"nodiratime", "diratime", "relatime", "norelatime",
		"strictatime", "nostrictatime", "lazytime", "nolazytime",
		"dirsync", "debug", "blkdev", "clone_fd", "kernel_cache",
		"-f", "-d", "-s", "-h", "-V", "--help", "--version",
	};
	static const char *const prefixes[] = {
		"fsname=", "subtype=", "max_read=", "blksize=",
		"max_idle_threads=", "max_threads=",
	};
	size_t i;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(arg, known[i]))
			return true;
	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(arg, prefixes[i], strlen(prefixes[i])))
			return true;
	return arg[0] == '-';
}

/* Options of mount(8) and fstab(5) that concern mount(8) alone:
 * mount.fuse3 drops some of them, but stratafs may run without it. */
static bool mount_only(const char *arg)
{
	static const char *const known[] = {
		"defaults", "auto", "noauto", "user", "nouser", "users",
		"owner", "group", "nofail", "_netdev", "silent", "loud",
	};
	size_t i;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(arg, known[i]))
			return true;
	return !strncmp(arg, "x-", 2) || !strncmp(arg, "comment=", 8);
}

/* What `-o` takes, for the message about an option it does not. */
static const char accepted[] =
	"upper=, work=, upperdir=, workdir=, lowerdir=, volatile, rebase, "
	"xattr_permissions=, root=, platform=, creds=, tls_verify=, "
	"cert_dir=, squash_to_uid=, squash_to_gid=, uidmapping=, "
	"gidmapping=, layer=, only, allow_other, lazy=, prefetch[=], "
	"fetchers=, nosupervise, "
	"the FUSE options allow_root, auto_unmount, default_permissions, fsname=, "
	"subtype=, max_read=, blksize=, max_threads=, max_idle_threads=, "
	"clone_fd, kernel_cache, and the mount options ro, rw, [no]suid, "
	"[no]dev, [no]exec, [no]atime, relatime, strictatime, [no]diratime, "
	"[no]lazytime, sync, async, dirsync, defaults, auto, noauto, user, "
	"users, nofail, _netdev, x-*";

/* Edit distance of @a and @b, up to 31 characters each (else 99). */
static int distance(const char *a, size_t la, const char *b, size_t lb)
{
	int d[32][32];
	size_t i, j;

	if (la > 31 || lb > 31)
		return 99;
	for (i = 0; i <= la; i++)
		d[i][0] = (int)i;
	for (j = 0; j <= lb; j++)
		d[0][j] = (int)j;
	for (i = 1; i <= la; i++) {
		for (j = 1; j <= lb; j++) {
			int k = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (d[i - 1][j] + 1 < k)
				k = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < k)
				k = d[i][j - 1] + 1;
			d[i][j] = k;
		}
	}
	return d[la][lb];
}

/* The stratafs option @arg may be a misspelling of, or NULL. */
static const char *near_option(const char *arg)
{
	static const char *const ours[] = {
		"upper=", "work=", "upperdir=", "workdir=", "lowerdir=",
		"volatile", "rebase", "xattr_permissions=", "root=",
		"platform=", "creds=", "tls_verify=", "cert_dir=",
		"squash_to_uid=", "squash_to_gid=", "uidmapping=",
		"gidmapping=", "allow_other", "layer=", "only", "lazy=",
		"prefetch=", "fetchers=", "nosupervise",
	};
	const char *eq = strchr(arg, '=');
	size_t la = eq ? (size_t)(eq - arg) : strlen(arg), i;

	for (i = 0; i < sizeof(ours) / sizeof(ours[0]); i++) {
		size_t lb = strcspn(ours[i], "=");

		if (distance(arg, la, ours[i], lb) <= (lb >= 8 ? 2 : 1))
			return ours[i];
	}
	return NULL;
}

/*
 * Options nobody took. A mount of an image must not go ahead without what
 * was asked (`uppr=DIR` would give a read-only mount): an error. A drop-in
 * mount (lowerdir=, as containers-storage or an fstab line written for
 * fuse-overlayfs runs it) is passed fuse-overlayfs's own options
 * (context=, noxattrs=, fsync=0, ...): a warning. Return: 0 or 2.
 */
static int check_unknown(const struct options *o)
{
	size_t i;

	for (i = 0; i < o->n_unknown; i++) {
		const char *near = near_option(o->unknown[i]);

		if (o->lowerdir) {
			fprintf(stderr, "stratafs: ignoring unknown option "
				"\"%s\"\n", o->unknown[i]);
			continue;
		}
		fprintf(stderr, "stratafs: unknown option \"%s\"%s%s%s; -o "
			"takes %s (see stratafs --help)\n", o->unknown[i],
			near ? " (did you mean " : "", near ? near : "",
			near ? "?)" : "", accepted);
		return 2;
	}
	return 0;
}

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT) {
		if (!o->ref) {
			o->ref = strdup(arg);
			return 0;
		}
		if (!o->mountpoint) {
			o->mountpoint = strdup(arg);
			/* taken over from an upgrade: the mount point is
			 * served by nobody yet, never to be looked at */
			if (o->devfd[0])
				return fuse_opt_add_arg(outargs, o->devfd);
			return 1;	/* fuse_parse_cmdline wants it too */
		}
		fprintf(stderr, "stratafs: unexpected argument \"%s\"\n", arg);
		return -1;
	}
	if (key == FUSE_OPT_KEY_OPT && !strcmp(arg, "allow_other"))
		o->allow_other = 1;
	if (key == FUSE_OPT_KEY_OPT && !strcmp(arg, "suid"))
		o->want_suid = 1;
	if (key == FUSE_OPT_KEY_OPT && !strcmp(arg, "dev"))
		o->want_dev = 1;
	if (key == FUSE_OPT_KEY_OPT && !strcmp(arg, "nosuid"))
		o->want_nosuid = 1;
	if (key == FUSE_OPT_KEY_OPT && !*arg)
		return 0;	/* "a,,b": containers-storage writes these */
	if (key == FUSE_OPT_KEY_OPT && mount_only(arg))
		return 0;
	if (key == FUSE_OPT_KEY_OPT && !fuse_knows(arg)) {
		/* judged once all are parsed: is it a lowerdir= mount? */
		char **nu = realloc(o->unknown,
				    (o->n_unknown + 1) * sizeof(*nu));

		if (!nu || !(nu[o->n_unknown] = strdup(arg))) {
			if (nu)
				o->unknown = nu;
			return -1;
		}
		o->unknown = nu;
		o->n_unknown++;
		return 0;
	}
	return 1;
}

/* "N" of layer=N: 1 the bottom layer, -1 the top. Return: 0 or -EINVAL. */
static int parse_layer(const char *s, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	if (!*s || *end || errno || *out == 0 || *out > 1000000 ||
	    *out < -1000000)
		return -EINVAL;
	return 0;
}

/* layer=N and only: a number, and a read-only mount of an image. Return:
 * 0 or 2 (said why). */
static int check_layer(const struct options *o)
{
	long n;

	if (o->layer_only && !o->layer) {
		fprintf(stderr, "stratafs: \"only\" needs layer=N (the layer "
			"to show alone)\n");
		return 2;
	}
	if (!o->layer)
		return 0;
	if (parse_layer(o->layer, &n) < 0) {
		fprintf(stderr, "stratafs: invalid layer=%s: want a layer "
			"number, 1 for the bottom layer, -1 for the top one "
			"(strata layers REF lists them)\n", o->layer);
		return 2;
	}
	if (o->upper || o->lowerdir) {
		fprintf(stderr, "stratafs: layer= mounts part of an image "
			"read-only; it cannot take %s (a commit onto part "
			"of an image is not defined)\n",
			o->upper ? "upper=" : "lowerdir=");
		return 2;
	}
	return 0;
}

/*
 * A usage error before anything was set up: say @what (NULL when it was
 * said already), the synopsis, and free what parsing took.
 * Return: 2, the exit status.
 */
static int usage_error(struct fuse_args *args, struct options *o,
		       const char *what)
{
	if (what)
		fprintf(stderr, "stratafs: %s\n", what);
	fprintf(stderr, "usage: stratafs [-f] [-d] [-o OPTIONS] REF "
		"MOUNTPOINT (see stratafs --help)\n");
	fuse_opt_free_args(args);
	free(o->ref);
	free(o->mountpoint);
	free(o->lazy_s);
	free(o->fetchers_s);
	free(o->prefetch_s);
	o->ref = o->mountpoint = o->lazy_s = o->fetchers_s = NULL;
	o->prefetch_s = NULL;
	return 2;
}

static void usage(void)
{
	printf("usage: stratafs [-f] [-d] [-o OPTIONS] REF MOUNTPOINT\n"
	       "\n"
	       "       stratafs -o lowerdir=L1:L2[,upperdir=U,workdir=W] SOURCE MOUNTPOINT\n"
	       "\n"
	       "Mount the OCI image REF at MOUNTPOINT, read-only unless an upper\n"
	       "directory takes the changes. With lowerdir= the layers are plain\n"
	       "directories (top first), as with the kernel overlay.\n"
	       "REF: NAME[:TAG] (local store), oci:DIR[:TAG|@DIGEST],\n"
	       "     oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],\n"
	       "     dir:DIR, docker://HOST/PATH[:TAG|@DIGEST]\n"
	       "\n"
	       "options:\n"
	       "  -f                     stay in the foreground\n"
	       "  -d                     debug output (implies -f)\n"
	       "  -o root=DIR            store root (default $STRATA_ROOT,\n"
	       "                         /var/lib/strata or $XDG_DATA_HOME/strata)\n"
	       "  -o platform=OS/ARCH[/VARIANT]  pick from a multi-platform index\n"
	       "  -o tls_verify=false, cert_dir=DIR, creds=USER:PASS  for docker://\n"
	       "     (creds= shows in ps and the mount table: prefer an auth file)\n"
	       "  -o squash_to_uid=N, squash_to_gid=N  show every owner as N\n"
	       "  -o uidmapping=C:H:N[:C:H:N...], gidmapping=...\n"
	       "                         show image id C+i as H+i (i < N)\n"
	       "  -o allow_other         let other users see the mount (always, as root)\n"
	       "  -o layer=N             the image as it was after layer N (1 is the\n"
	       "                         bottom layer, -1 the top; see strata layers)\n"
	       "  -o layer=N,only        layer N alone: whiteouts as character devices\n"
	       "                         0:0, opaque directories with the xattr\n"
	       "                         user.overlay.opaque (and trusted.*, as root)\n"
	       "  -o lazy=0              unpack every layer in full before mounting\n"
	       "                         (default: zstd:chunked and eStargz layers\n"
	       "                         mount from their table of contents, gzip\n"
	       "                         and zstd layers of a local layout or\n"
	       "                         archive after one verifying pass; files\n"
	       "                         fetched or filled on first read)\n"
	       "  -o prefetch=0          no background fill of lazy layers\n"
	       "  -o fetchers=N          Range requests in flight to a registry for\n"
	       "                         a lazy mount (default 4)\n"
	       "  -o prefetch=all        fill even layers that ask for none\n"
	       "  -o nosupervise         a read-only mount served by one process:\n"
	       "                         no restart after a crash, no upgrade\n"
	       "  -o upper=DIR           writable: changes go to DIR (created if\n"
	       "                         missing; overlay format, kept across mounts)\n"
	       "  -o work=DIR            work directory, same filesystem as upper\n"
	       "                         (default: .NAME.work beside the upper dir)\n"
	       "  -o lowerdir=L1:L2,upperdir=U,workdir=W  plain directories as\n"
	       "                         layers (fuse-overlayfs compatible)\n"
	       "  -o volatile            no fsync: faster, for throwaway changes\n"
	       "  -o rebase              mount the upper dir over this image although\n"
	       "                         its changes were made on another one\n"
	       "  -o xattr_permissions=2 keep owners and modes in\n"
	       "                         user.containers.override_stat (automatic when\n"
	       "                         not root)\n"
	       "  -h, --help, -V, --version\n"
	       "\n"
	       "Also the FUSE options of mount.fuse3(8) and the mount(8) options\n"
	       "(ro, nosuid, noatime, nofail, x-*, ...). Any other option is an\n"
	       "error, except with lowerdir= (a warning: fuse-overlayfs's options).\n"
	       "An upper directory is locked by its mount, and records its image.\n"
	       "\n"
	       "Unmount with: fusermount3 -u MOUNTPOINT\n");
}

static int parse_idmap(const char *s, struct idmap **out, size_t *n)
{
	cleanup_free char *dup = strdup(s);
	char *save = NULL, *tok;
	unsigned long v[3];
	size_t k = 0, cap = 0;
	struct idmap *m = NULL;

	if (!dup)
		return -ENOMEM;
	for (tok = strtok_r(dup, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
		char *end;

		errno = 0;
		v[k % 3] = strtoul(tok, &end, 10);
		if (*end || errno || v[k % 3] > UINT32_MAX) {
			free(m);
			return -EINVAL;
		}
		if (k % 3 == 2) {
			if (*n == cap) {
				cap = cap ? cap * 2 : 4;
				struct idmap *nm = realloc(m, cap * sizeof(*m));

				if (!nm) {
					free(m);
					return -ENOMEM;
				}
				m = nm;
			}
			m[*n].from = (uint32_t)v[0];
			m[*n].to = (uint32_t)v[1];
			m[*n].count = (uint32_t)v[2];
			(*n)++;
		}
		k++;
	}
	if (k == 0 || k % 3) {
		free(m);
		return -EINVAL;
	}
	*out = m;
	return 0;
}

static bool user_allow_other(void)
{
	cleanup_file FILE *f = fopen("/etc/fuse.conf", "re");
	char line[256];

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char *p = line;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!strncmp(p, "user_allow_other", 16))
			return true;
	}
	return false;
}

/* Is @mp (made absolute) the target of a mount in our namespace? */
static bool is_mountpoint(const char *mp)
{
	cleanup_free char *abs = realpath(mp, NULL);
	cleanup_file FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];

	if (!abs || !f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char target[4096];
		char *p = target;
		const char *q;

		/* field 5 is the mount point, octal-escaped */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", target) != 1)
			continue;
		for (q = target; *q; q++) {
			if (q[0] == '\\' && q[1] && q[2] && q[3]) {
				*p++ = (char)((q[1] - '0') * 64 + (q[2] - '0') * 8 +
					      (q[3] - '0'));
				q += 3;
			} else {
				*p++ = *q;
			}
		}
		*p = '\0';
		if (!strcmp(target, abs))
			return true;
	}
	return false;
}

static int check_mountpoint(const char *mp)
{
	struct stat st;

	if (stat(mp, &st) < 0) {
		if (errno == ENOENT)
			fprintf(stderr, "stratafs: mountpoint %s does not exist; "
				"create it with: mkdir -p %s\n", mp, mp);
		else if (errno == ENOTCONN)
			fprintf(stderr, "stratafs: mountpoint %s is a dead FUSE "
				"mount; clear it with: fusermount3 -u %s\n", mp, mp);
		else
			fprintf(stderr, "stratafs: mountpoint %s: %s\n", mp,
				strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "stratafs: mountpoint %s is not a directory\n", mp);
		return -1;
	}
	if (is_mountpoint(mp)) {
		fprintf(stderr, "stratafs: %s is already a mount point; unmount "
			"it first (fusermount3 -u %s) or pick another "
			"directory\n", mp, mp);
		return -1;
	}
	if (access("/dev/fuse", R_OK | W_OK) < 0) {
		if (errno == ENOENT)
			fprintf(stderr, "stratafs: /dev/fuse is missing; load the "
				"module with: modprobe fuse\n");
		else
			fprintf(stderr, "stratafs: cannot open /dev/fuse (%s); "
				"a user needs read/write access to it, e.g. "
				"chmod 0666 /dev/fuse\n", strerror(errno));
		return -1;
	}
	return 0;
}

/* Which layers of @img layer=N[,only] serves, into @fs. */
static int pick_layers(struct fs *fs, const struct options *o,
		       const struct strata_image *img, struct strata_err *err)
{
	long n, k = (long)img->n_layers;

	if (parse_layer(o->layer, &n) < 0)
		return -EINVAL;	/* checked before */
	if (n > k || n < -k)
		return strata_err_set(err, -ERANGE, "image %s has %ld "
				      "layer%s: layer=%s is not one of them "
				      "(1..%ld from the bottom, -1..-%ld from "
				      "the top)", img->ref_text, k,
				      k == 1 ? "" : "s", o->layer, k, k);
	if (n < 0)
		n += k + 1;
	fs->layer_lo = o->layer_only ? (uint32_t)(n - 1) : 0;
	fs->layer_n = o->layer_only ? 1 : (uint32_t)n;
	fs->show_whiteouts = o->layer_only;
	return 0;
}

static int open_image(struct fs *fs, struct options *o,
		      struct strata_store **stp, struct strata_image **imgp)
{
	struct strata_err err = { 0 };
	struct strata_platform plat, *pp = NULL;
	struct strata_store *st = NULL;
	struct strata_image *img = NULL;
	int r;

	if (o->platform) {
		if (strata_platform_parse(o->platform, &plat) < 0) {
			fprintf(stderr, "stratafs: invalid platform \"%s\" "
				"(want os/arch[/variant])\n", o->platform);
			return -1;
		}
		pp = &plat;
	}
	struct strata_reg_opts ro = {
		.creds = o->creds,
		.tls_verify = !o->tls_verify ? -1
			      : !strcmp(o->tls_verify, "false") ? 0 : 1,
		.cert_dir = o->cert_dir,
		.fetchers = o->fetchers,
	};

	r = strata_store_open(o->root, &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &ro);
	if (r == 0)
		r = strata_image_resolve(st, o->ref, pp, &img, &err);
	if (st)
		strata_store_set_reg_opts(st, NULL);	/* @ro ends here */
	if (r == 0 && o->layer)
		r = pick_layers(fs, o, img, &err);
	strata_malloc_bulk(true);	/* until the image is loaded */
	if (r == 0)
		r = strata_cache_ensure(st, img, &(struct strata_unpack_opts){
					.lazy = o->lazy != 0,
					.lazy_plain = o->lazy != 0 }, &err);
	if (r == 0)
		r = fs_image_load(fs, st, img, &err);
	strata_malloc_bulk(false);
	/* strata gc keeps what the mount shows while it lives, and may run
	 * meanwhile */
	if (r == 0)
		r = strata_store_pin(st, img, &err);
	if (r < 0)
		goto fail;
	strata_store_release(st);
	*stp = st;
	*imgp = img;
	return 0;
fail:
	fprintf(stderr, "stratafs: %s\n", err.code ? err.msg : strerror(-r));
	if (img)
		strata_image_free(img);
	if (st)
		strata_store_free(st);
	return -1;
}

/* The image reference with its path made absolute, so that a commit
 * started from another directory finds the same image; a docker://
 * reference pinned to @manifest, which the store holds, so a commit needs
 * no registry and commits onto what is mounted even if the tag moved. */
static char *absolute_ref(const char *text, const char *manifest)
{
	struct strata_err err = { 0 };
	struct strata_ref *ref = NULL;
	char *abs = NULL, *out = NULL;
	static const char *const kinds[] = {
		[STRATA_REF_OCI] = "oci",
		[STRATA_REF_OCI_ARCHIVE] = "oci-archive",
		[STRATA_REF_DOCKER_ARCHIVE] = "docker-archive",
		[STRATA_REF_DIR] = "dir",
	};

	if (strata_ref_parse(text, &ref, &err) < 0)
		return strdup(text);
	if (ref->kind == STRATA_REF_DOCKER) {
		if (!manifest || !*manifest ||
		    asprintf(&out, "docker://%s/%s@%s", ref->registry,
			     ref->path, manifest) < 0)
			out = strdup(text);
		strata_ref_free(ref);
		return out;
	}
	if (ref->kind == STRATA_REF_STORE || !ref->path ||
	    !(abs = realpath(ref->path, NULL))) {
		strata_ref_free(ref);
		return strdup(text);
	}
	if (asprintf(&out, "%s:%s%s%s%s", kinds[ref->kind], abs,
		     ref->digest ? "@" : ref->tag ? ":" : "",
		     ref->digest ? ref->digest : ref->tag ? ref->tag : "", "") < 0)
		out = NULL;
	free(abs);
	strata_ref_free(ref);
	return out;
}

static int start_control(struct wfs *w, const struct options *o,
			 const char *mp, const char *ref,
			 struct strata_store *st, struct strata_image *img,
			 const struct fs *like)
{
	struct control_info info = {
		.mountpoint = mp,
		.ref = ref,
		.manifest = img ? img->manifest_digest : "",
		.store = st ? strata_store_root(st) : "",
		.upper = w->upper_path ? w->upper_path : "",
		.work = w->work_path ? w->work_path : "",
		.st = st,
		.like = like,
	};

	(void)o;
	if (!mp || !ref)
		return -ENOMEM;
	return fs_control_start(w, &info);
}

/* May a new worker take a read-only mount over (fs/resume.c)? Only if
 * the kernel sends no open/opendir: a file handle is the old worker's. */
static bool fs_resumable(void *arg)
{
	const struct fs *fs = arg;

	return fs->readonly && fs->no_open;
}

/* Own the control socket of the mount at @mp (absolute), or say why not. */
static int bind_control(const char *mp)
{
	struct strata_err err = { 0 };
	int r = fs_control_bind(mp, &err);

	if (r < 0)
		fprintf(stderr, "stratafs: %s; not mounting %s (strata commit "
			"would have no trustworthy way to reach it)\n",
			err.code ? err.msg : strerror(-r), mp);
	return r;
}

/* "L1:L2:..." (top first) into a lower stack. */
static int open_lowerdirs(const char *spec, struct lower **out)
{
	cleanup_free char *dup = strdup(spec);
	char **dirs = NULL, *save = NULL, *tok;
	size_t n = 0, i;
	int r;

	if (!dup)
		return -ENOMEM;
	for (tok = strtok_r(dup, ":", &save); tok;
	     tok = strtok_r(NULL, ":", &save)) {
		char **nd = realloc(dirs, (n + 1) * sizeof(*dirs));

		if (!nd) {
			free(dirs);
			return -ENOMEM;
		}
		dirs = nd;
		dirs[n++] = tok;
	}
	if (!n) {
		fprintf(stderr, "stratafs: lowerdir= names no directory\n");
		free(dirs);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		struct stat st;

		if (stat(dirs[i], &st) < 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "stratafs: lowerdir %s: %s\n", dirs[i],
				errno && !S_ISDIR(st.st_mode) ? strerror(errno)
							      : "not a directory");
			free(dirs);
			return -EINVAL;
		}
	}
	r = lower_dirs_new(dirs, n, out);
	free(dirs);
	return r;
}

int main(int argc, char *argv[])
{
	struct fuse_args args;
	struct fuse_cmdline_opts copts = { 0 };
	struct options o = { .squash_uid = -1, .squash_gid = -1, .lazy = 1,
			     .prefetch = 1 };
	struct fs fs = { .timeout = 86400.0, .statfs_fd = -1, .readonly = true };
	struct strata_store *st = NULL;
	struct strata_image *img = NULL;
	struct fuse_session *se = NULL;
	struct fuse_loop_config *lc = NULL;
	struct wfs wfs = { 0 };
	struct wfs_claim claim = { 0 };
	struct lower *lw = NULL;
	bool wfs_ready = false, supervised = false;
	unsigned nthreads;
	int started;
	cleanup_free char *ctl_mp = NULL;
	cleanup_free char *ctl_ref = NULL;
	char fsname[1200];
	int ret = 1;

	/* One malloc arena: worker threads each growing their own would keep
	 * freed merge buffers resident several times over; the hot paths
	 * allocate little, and glibc's per-thread caches serve that. */
	mallopt(M_ARENA_MAX, 1);
	/* Fixed thresholds: glibc otherwise raises them the first time a
	 * worker's 1 MiB request buffer is freed, and from then on those
	 * buffers come from the heap, which is trimmed only past 2 MiB free. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	mallopt(M_TRIM_THRESHOLD, 256 * 1024);

	strata_log_set_prog("stratafs");
	/* a process an upgrade started takes its mount's command line */
	started = fs_resume_start(&argc, &argv);
	if (started < 0)
		return 1;
	args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
	if (started != FS_RESUME_NONE)
		snprintf(o.devfd, sizeof(o.devfd), "/dev/fd/%d",
			 fs_resume_fuse_fd());
	if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) < 0)
		return usage_error(&args, &o, NULL);
	if (o.show_help || o.show_version) {
		if (o.show_help)
			usage();
		else
			printf("stratafs %s (libfuse %s)\n", STRATA_VERSION,
			       fuse_pkgversion());
		ret = 0;
		goto out;
	}
	/* as a mount_program (containers-storage runs it as fuse-overlayfs:
	 * `-o lowerdir=...,upperdir=...,workdir=... TARGET`) there is no
	 * source argument */
	if (o.lowerdir && o.ref && !o.mountpoint) {
		o.mountpoint = o.ref;
		o.ref = strdup("none");
		if (!o.ref || fuse_opt_add_arg(&args, o.mountpoint) < 0)
			return 1;
	}
	if (!o.ref || !o.mountpoint)
		return usage_error(&args, &o, o.ref ? "missing MOUNTPOINT"
				   : "missing REF and MOUNTPOINT");
	if (o.lazy_s) {
		o.lazy = !strcmp(o.lazy_s, "0") ? 0 : !strcmp(o.lazy_s, "1") ? 1
			 : !strcmp(o.lazy_s, "all") ? 2 : -1;
		if (o.lazy < 0)
			return usage_error(&args, &o, "lazy= takes 0, 1 or "
					   "all");
	}
	if (o.fetchers_s) {
		char *end;
		long v = strtol(o.fetchers_s, &end, 10);

		if (end == o.fetchers_s || *end || v < 1 ||
		    v > STRATA_FETCHERS_MAX)
			return usage_error(&args, &o, "fetchers= takes a number "
					   "from 1 to 64");
		o.fetchers = (int)v;
	}
	if (o.prefetch_s) {
		o.prefetch = !strcmp(o.prefetch_s, "0") ? 0
			     : !strcmp(o.prefetch_s, "1") ? 1
			     : !strcmp(o.prefetch_s, "all") ? 2 : -1;
		if (o.prefetch < 0)
			return usage_error(&args, &o, "prefetch= takes 0, 1 "
					   "or all");
	}
	if ((o.uidmapping && parse_idmap(o.uidmapping, &fs.uidmap, &fs.n_uidmap) < 0) ||
	    (o.gidmapping && parse_idmap(o.gidmapping, &fs.gidmap, &fs.n_gidmap) < 0)) {
		fprintf(stderr, "stratafs: invalid uidmapping/gidmapping "
			"(want CONTAINER:HOST:COUNT[:...])\n");
		return 2;
	}
	if (o.squash_uid >= 0) {
		fs.squash_uid = true;
		fs.squash_uid_to = (uint32_t)o.squash_uid;
	}
	if (o.squash_gid >= 0) {
		fs.squash_gid = true;
		fs.squash_gid_to = (uint32_t)o.squash_gid;
	}
	if (o.allow_other && geteuid() != 0 && !user_allow_other()) {
		fprintf(stderr, "stratafs: allow_other needs \"user_allow_other\" "
			"in /etc/fuse.conf for users other than root\n");
		return 1;
	}
	ret = check_unknown(&o);
	if (ret)
		goto out;
	ret = check_layer(&o);
	if (ret)
		goto out;
	ret = 1;
	/* before libfuse's own terser check of the same */
	if (started == FS_RESUME_NONE && check_mountpoint(o.mountpoint) < 0)
		goto out;
	/* relative paths mean something only before daemonizing (cd /) */
	ctl_mp = started != FS_RESUME_NONE ? strdup(fs_resume_mountpoint())
		 : realpath(o.mountpoint, NULL);
	if (!ctl_mp) {
		fprintf(stderr, "stratafs: %s: %s\n", o.mountpoint,
			strerror(errno));
		goto out;
	}
	if (fuse_parse_cmdline(&args, &copts) != 0) {
		ret = 2;
		goto out;
	}
	if (o.lowerdir) {
		if (open_lowerdirs(o.lowerdir, &lw) < 0)
			goto out;
	} else {
		if (open_image(&fs, &o, &st, &img) < 0)
			goto out;
		if (o.upper && lower_image_new(&fs, &lw) < 0)
			goto out;
	}
	/* an upgrade's new binary: the same image, or not at all */
	if (started != FS_RESUME_NONE &&
	    (!img || !fs_resume_same_image(img->manifest_digest)))
		goto out;
	if (started == FS_RESUME_PROBE) {
		fs_resume_probe_ok();
		ret = 0;
		goto out;
	}
	ctl_ref = o.lowerdir ? strdup("") : absolute_ref(o.ref,
						img ? img->manifest_digest : NULL);
	if (!ctl_ref)
		goto out;
	if (lw) {
		claim.mountpoint = ctl_mp;
		claim.manifest = img ? img->manifest_digest : NULL;
		claim.ref = ctl_ref;
		claim.rebase = o.rebase;
		if (wfs_init(&wfs, lw, o.upper, o.work, &claim) < 0) {
			wfs_destroy(&wfs);
			goto out;
		}
		wfs_ready = true;
		wfs.volatile_ = o.volatile_;
		wfs.timeout = fs.timeout;
		if (o.xattr_permissions)
			wfs.override = true;
	}

	/* Read-only, and image content is not trusted to carry working
	 * setuid bits or device nodes onto the host (T1, T3). With
	 * allow_other the kernel checks permissions from our modes. */
	for (char *c = o.ref; *c; c++)
		if (*c == ',' || *c == '\\' || *c == ' ')
			*c = '_';	/* fsname shows in mount tables */
	/* Root's mount is a filesystem for every user, the kernel checking
	 * access against the modes and owners shown, as the kernel overlay
	 * and fuse-overlayfs as root are: allow_other. A mount for podman or
	 * buildah (lowerdir=) is a container's root: set-id programs work
	 * there (suid, as fuse-overlayfs sets), unless nosuid is asked. */
	if (geteuid() == 0 && !o.allow_other) {
		o.allow_other = 1;
		fuse_opt_add_arg(&args, "-oallow_other");
	}
	if (geteuid() == 0 && o.lowerdir && !o.want_nosuid && !o.want_suid) {
		o.want_suid = 1;
		fuse_opt_add_arg(&args, "-osuid");
	}
	if (!wfs_ready)
		snprintf(fsname, sizeof(fsname), "-oro,%s%s"
			 "fsname=strata:%s,subtype=stratafs%s",
			 o.want_suid ? "" : "nosuid,", o.want_dev ? "" : "nodev,",
			 o.ref, o.allow_other ? ",default_permissions" : "");
	else
		/* writable: the kernel checks permissions from our modes
		 * (the daemon runs as root); an unprivileged daemon is the
		 * user, whose own rights are the check */
		snprintf(fsname, sizeof(fsname), "-o%s%s%sfsname=%s%s,"
			 "subtype=stratafs%s", wfs.upperfd < 0 ? "ro," : "",
			 o.lowerdir || o.want_suid ? "" : "nosuid,",
			 o.lowerdir || o.want_dev ? "" : "nodev,",
			 o.lowerdir ? "" : "strata:", o.ref,
			 wfs.root_daemon || o.allow_other
			 ? ",default_permissions" : "");
	fuse_opt_add_arg(&args, fsname);
	/* a writable mount creates entries with the modes its callers ask
	 * for, their umask applied (wops-make.c): never the daemon's own. The
	 * store files it writes name their modes (0644, 0755, 0700). */
	if (wfs_ready)
		umask(0);
	if (wfs_ready)
		se = fuse_session_new(&args, &wfs_ops, sizeof(wfs_ops), &wfs);
	else
		se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), &fs);
	if (!se)
		goto out;
	if (wfs_ready)
		wfs.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	/* the control socket before the mount, so that a daemon that cannot
	 * own it says so here and leaves no mount whose commits would talk
	 * to whoever holds the name. A lowerdir= mount (containers-storage's
	 * mount_program, maybe in a user namespace where /run is not ours)
	 * has no image to commit onto: no socket. */
	if (wfs_ready && wfs.upperfd >= 0 && !o.lowerdir &&
	    bind_control(ctl_mp) < 0)
		goto out_signals;
	if (fuse_session_mount(se, copts.mountpoint) != 0) {
		fprintf(stderr, "stratafs: cannot mount on %s (already mounted? "
			"see: findmnt %s)\n", copts.mountpoint, copts.mountpoint);
		goto out_control;
	}
	/* the upper directory's records: once here, where a failure to
	 * write them still reaches the terminal, and again in the daemon,
	 * whose pid is the one to name */
	if (wfs_ready && wfs.upperfd >= 0)
		wfs_claim_mounted(&wfs);
	/* taken over from an upgrade: a daemon already */
	if (started == FS_RESUME_UPGRADE && !copts.foreground &&
	    chdir("/") < 0)
		goto out_unmount;
	if (started == FS_RESUME_NONE && fuse_daemonize(copts.foreground) != 0)
		goto out_unmount;
	/* what goes wrong from now on (a planted fifo, an upper entry
	 * changed behind the mount) must reach someone */
	strata_log_set_syslog(!copts.foreground);
	if (wfs_ready && wfs.upperfd >= 0 && !copts.foreground)
		wfs_claim_mounted(&wfs);
	/* threads do not survive daemonizing: start it only now */
	if (wfs_ready && wfs.upperfd >= 0 && !o.lowerdir &&
	    start_control(&wfs, &o, ctl_mp, ctl_ref, st, img, &fs) < 0) {
		fprintf(stderr, "stratafs: %s: cannot serve the control "
			"socket; unmounting\n", ctl_mp);
		goto out_unmount;
	}
	/* a read-only image mount outlives the process serving it: this
	 * one keeps /dev/fuse and restarts the worker when it dies (the
	 * writable mount's state is not rebuilt from the kernel's node ids:
	 * it ends, as it always did, with the process) */
	nthreads = copts.singlethread ? 1 : copts.max_threads &&
		   copts.max_threads <= 100000 ? copts.max_threads : 16;
	if (!wfs_ready && !o.lowerdir && !o.nosupervise) {
		struct fs_resume_opts ro = {
			.max_threads = nthreads,
			.resumable = fs_resumable,
			.arg = &fs,
			.mountpoint = ctl_mp,
			.manifest = img->manifest_digest,
		};
		int status = 1;
		int r = fs_resume_supervise(se, &ro, &status);

		if (r > 0) {
			ret = status;
			goto out_unmount;
		}
		if (r < 0)
			strata_warn("%s: cannot keep the mount across a crash "
				    "(%s)", ctl_mp, strerror(-r));
		supervised = r == 0;
	}
	fs.lazy = o.lazy != 0;
	fs.prefetch_all = o.prefetch == 2;
	if (o.prefetch && !o.lowerdir && fs_prefetch_start(&fs) < 0)
		strata_warn("cannot start the background fill of lazy layers");
	lc = fuse_loop_cfg_create();
	if (!lc)
		goto out_unmount;
	/* a request read through a cloned descriptor fails when it closes
	 * (a worker's death): a supervised worker reads the session's own */
	fuse_loop_cfg_set_clone_fd(lc, !supervised);
	/* unset comes back as 0 or UINT_MAX depending on libfuse */
	fuse_loop_cfg_set_max_threads(lc, nthreads);
	fuse_loop_cfg_set_idle_threads(lc, copts.max_idle_threads &&
				       copts.max_idle_threads <= 100000
				       ? copts.max_idle_threads : 8);
	if (copts.singlethread)
		ret = fuse_session_loop(se) != 0;
	else if (o.lowerdir)
		/* a container's root (mount_program): mostly one process's
		 * serial requests, and a tree walk per commit (loop.h) */
		ret = fs_loop_run(se, copts.max_threads &&
				  copts.max_threads <= 100000
				  ? copts.max_threads : 16,
				  wfs_flush_quick) != 0;
	else
		ret = fuse_session_loop_mt(se, lc) != 0;
	fuse_loop_cfg_destroy(lc);
	fs_control_stop();
	/* unmounted: the next mount of the upper directory may start */
	if (wfs_ready)
		wfs_claim_release(&wfs);
out_unmount:
	fs_resume_unmount(se);
out_control:
	fs_control_stop();
out_signals:
	fuse_remove_signal_handlers(se);
out:
	/* a mount taken over that this process cannot serve */
	if (started == FS_RESUME_UPGRADE)
		fs_resume_unmount(se);
	if (se)
		fuse_session_destroy(se);
	if (wfs_ready)
		wfs_destroy(&wfs);
	fs_prefetch_stop(&fs);
	fs_continue_free();
	if (lw)
		lw->ops->free(lw);
	fs_image_unload(&fs);
	free(fs.uidmap);
	free(fs.gidmap);
	if (img)
		strata_image_free(img);
	if (st)
		strata_store_free(st);
	free(copts.mountpoint);
	fuse_opt_free_args(&args);
	free(o.ref);
	free(o.mountpoint);
	free(o.upper);
	free(o.work);
	free(o.lowerdir);
	free(o.root);
	free(o.platform);
	free(o.creds);
	free(o.tls_verify);
	free(o.lazy_s);
	free(o.fetchers_s);
	free(o.prefetch_s);
	free(o.cert_dir);
	free(o.uidmapping);
	free(o.gidmapping);
	free(o.layer);
	for (size_t i = 0; i < o.n_unknown; i++)
		free(o.unknown[i]);
	free(o.unknown);
	return ret;
}
