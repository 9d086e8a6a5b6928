/* SPDX-License-Identifier: Apache-2.0 */
/* strata diff A B | MOUNTPOINT | --upper DIR IMAGE */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata.h"

static const char usage[] =
	"usage: strata diff [--json] [--stat] [--platform P] A B\n"
	"       strata diff [--json] [--stat] MOUNTPOINT\n"
	"       strata diff [--json] [--stat] [--platform P] --upper DIR IMAGE\n"
	"\n"
	"What differs from image A to image B, from a writable stratafs\n"
	"mount's image to what the mount shows now, or from IMAGE to IMAGE\n"
	"with the upper directory DIR (overlay or .wh. format) over it. One\n"
	"line per path, sorted: A added, D deleted (a directory once, not\n"
	"what it held), C changed (type, mode, owner, size, content, mtime,\n"
	"xattrs, link target or device number; a directory is not changed\n"
	"by what happens inside it). Computed from the layer indexes of the\n"
	"cache (images are unpacked there first): layers both images share\n"
	"are not looked at, content is read only where size and metadata\n"
	"are equal. `strata diff A B` is `podman image diff B A` (podman\n"
	"names the newer image first). The exit status is 0 with or without\n"
	"differences, as podman diff's; 1 for an error, 2 for a usage error.\n"
	"\n"
	"  --json        one object: {\"a\", \"b\", \"changes\": [{\"kind\",\n"
	"                \"path\", \"type\", \"old_type\", \"changed\": [...],\n"
	"                \"size\", \"old_size\"}], \"stat\": {...}} (doc/strata.1)\n"
	"  --stat        counts and bytes per kind instead of the paths\n"
	"  --upper DIR   compare IMAGE with IMAGE plus the upper directory DIR\n"
	"  --platform P  pick P from a multi-platform image\n";

static const char *const what_names[] = {
	"type", "mode", "owner", "size", "content", "mtime", "xattrs",
	"link", "device", "contents",
};

static const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "file";
	case S_IFDIR: return "dir";
	case S_IFLNK: return "symlink";
	case S_IFIFO: return "fifo";
	case S_IFCHR: return "char";
	case S_IFBLK: return "block";
	case S_IFSOCK: return "socket";
	default: return "unknown";
	}
}

static struct json_object *stat_json(const struct strata_diff *d)
{
	struct json_object *o = json_object_new_object();
	const struct { const char *k; uint64_t n, b; } s[] = {
		{ "added", d->added, d->added_bytes },
		{ "deleted", d->deleted, d->deleted_bytes },
		{ "changed", d->changed, d->changed_bytes },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(s); i++) {
		struct json_object *k = json_object_new_object();

		json_object_object_add(k, "entries",
				       json_object_new_int64((int64_t)s[i].n));
		json_object_object_add(k, "bytes",
				       json_object_new_int64((int64_t)s[i].b));
		json_object_object_add(o, s[i].k, k);
	}
	return o;
}

static struct json_object *entry_json(const struct strata_diff_entry *e)
{
	struct json_object *o = json_object_new_object();
	char kind[2] = { e->kind, 0 };
	uint32_t mode = e->kind == 'D' ? e->old_mode : e->new_mode;
	size_t k;

	json_object_object_add(o, "kind", json_object_new_string(kind));
	json_object_object_add(o, "path", json_object_new_string(e->path));
	json_object_object_add(o, "type",
			       json_object_new_string(type_name(mode)));
	if (e->kind == 'C') {
		struct json_object *w = json_object_new_array();

		json_object_object_add(o, "old_type", json_object_new_string(
					       type_name(e->old_mode)));
		for (k = 0; k < ARRAY_SIZE(what_names); k++)
			if (e->what & (1u << k))
				json_object_array_add(w, json_object_new_string(
							      what_names[k]));
		json_object_object_add(o, "changed", w);
	}
	if (e->kind != 'D' && S_ISREG(e->new_mode))
		json_object_object_add(o, "size", json_object_new_int64(
					       (int64_t)e->new_size));
	if ((e->kind == 'C' && S_ISREG(e->old_mode)) ||
	    (e->kind == 'D' && (S_ISREG(e->old_mode) || S_ISDIR(e->old_mode))))
		json_object_object_add(o, "old_size", json_object_new_int64(
					       (int64_t)e->old_size));
	return o;
}

static void print(const struct strata_diff *d, const char *a, const char *b,
		  bool json, bool stat)
{
	size_t i;

	if (json) {
		struct json_object *o = json_object_new_object(), *c;

		json_object_object_add(o, "a", json_object_new_string(a));
		json_object_object_add(o, "b", json_object_new_string(b));
		if (!stat) {
			c = json_object_new_array();
			for (i = 0; i < d->n; i++)
				json_object_array_add(c, entry_json(&d->e[i]));
			json_object_object_add(o, "changes", c);
		}
		json_object_object_add(o, "stat", stat_json(d));
		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						    JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(o);
		return;
	}
	if (stat) {
		printf("added:   %llu entries, %llu bytes\n"
		       "deleted: %llu entries, %llu bytes\n"
		       "changed: %llu entries, %llu bytes\n",
		       (unsigned long long)d->added,
		       (unsigned long long)d->added_bytes,
		       (unsigned long long)d->deleted,
		       (unsigned long long)d->deleted_bytes,
		       (unsigned long long)d->changed,
		       (unsigned long long)d->changed_bytes);
		return;
	}
	for (i = 0; i < d->n; i++)
		printf("%c %s\n", d->e[i].kind, d->e[i].path);
}

struct args {
	const char *a, *b, *upper;
	const struct strata_platform *plat;
	bool json, stat;
};

static int parse(int argc, char **argv, struct args *a,
		 struct strata_platform *plat)
{
	int i, bad = 0;

	for (i = 1; i < argc; i++) {
		const char *o = argv[i];
		int k = reg_option(argc, argv, &i);

		if (k < 0)
			return 2;
		if (k > 0)
			continue;
		if (!strcmp(o, "--json")) {
			a->json = true;
		} else if (!strcmp(o, "--stat")) {
			a->stat = true;
		} else if (opt_value(argc, argv, &i, "--upper", &a->upper,
				     "diff", usage, &bad)) {
			if (bad)
				return bad;
		} else if (platform_option(argc, argv, &i, "diff", usage,
					plat, &bad)) {
			if (bad)
				return bad;
			a->plat = plat;
		} else if (o[0] == '-' && o[1]) {
			return usage_error("diff", usage, "unknown option "
					   "\"%s\"", o);
		} else if (!a->a) {
			a->a = o;
		} else if (!a->b) {
			a->b = o;
		} else {
			return usage_error("diff", usage, "unexpected argument "
					   "\"%s\"", o);
		}
	}
	if (!a->a)
		return usage_error("diff", usage, "missing what to compare "
				   "(A B, MOUNTPOINT, or --upper DIR IMAGE)");
	if (a->upper && a->b)
		return usage_error("diff", usage, "unexpected argument \"%s\" "
				   "(with --upper, give only IMAGE)", a->b);
	return 0;
}

static int resolve(struct strata_store *st, const char *ref,
		   const struct strata_platform *plat,
		   struct strata_image **img)
{
	struct strata_err err = { 0 };
	int r = strata_image_resolve(st, ref, plat, img, &err);

	if (r < 0) {
		fprintf(stderr, "strata diff: %s: %s\n", ref,
			err.code ? err.msg : strerror(-r));
		return 1;
	}
	return 0;
}

static int upper_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		fprintf(stderr, "strata diff: upper directory %s: %s\n", path,
			strerror(errno));
	return fd;
}

/* MOUNTPOINT: its image (by the digest it shows) and upper directory. */
static int diff_mount(const struct args *a, struct strata_diff *d)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *img = NULL;
	struct live_mount mi = { .fd = -1, .upper_fd = -1, .store_fd = -1 };
	struct strata_err err = { 0 };
	cleanup_fd int ufd = -1;
	struct stat sb;
	int serr, r = 1;

	serr = stat(a->a, &sb) < 0 ? errno : S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
	if (serr && serr != EACCES) {	/* EACCES: another user's mount */
		fprintf(stderr, "strata diff: %s: %s (a single argument is a "
			"stratafs mountpoint; give two images A B, or --upper "
			"DIR IMAGE)\n", a->a, strerror(serr));
		return 1;
	}
	/* held still while the upper directory is read: one snapshot,
	 * with what the kernel still caches written back */
	if (live_mount_open("diff", a->a, &mi) < 0 ||
	    live_mount_freeze("diff", a->a, &mi) < 0)
		goto out;
	if (strata_store_open(g.root ? g.root : mi.store, &st, &err) < 0) {
		r = die_err(&err, err.code);
		goto out;
	}
	strata_store_set_reg_opts(st, &g.reg);
	if (resolve(st, mi.base, NULL, &img))
		goto out;
	if (strcmp(img->manifest_digest, mi.manifest)) {
		fprintf(stderr, "strata diff: %s: its image %s is now %s, not "
			"the %s the mount shows\n", a->a, mi.ref,
			img->manifest_digest, mi.manifest);
		goto out;
	}
	ufd = upper_dir(mi.upper_fd >= 0 ? mi.upper_at : mi.upper);
	if (ufd < 0)
		goto out;
	if (strata_diff_upper(st, img, ufd, d, &err) < 0) {
		r = die_err(&err, err.code);
		goto out;
	}
	close(mi.fd);	/* thawed: printing may wait on a reader */
	mi.fd = -1;
	print(d, mi.base, a->a, a->json, a->stat);
	r = 0;
out:
	live_mount_free(&mi);
	return r;
}

int cmd_diff(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	cleanup_(strata_image_freep) struct strata_image *ia = NULL;
	cleanup_(strata_image_freep) struct strata_image *ib = NULL;
	struct strata_diff d = { 0 };
	struct strata_platform plat;
	struct strata_err err = { 0 };
	struct args a = { 0 };
	cleanup_fd int ufd = -1;
	int r;

	if (want_help(argc, argv, usage)) {
		fputs(reg_opts_usage, stdout);
		return 0;
	}
	r = parse(argc, argv, &a, &plat);
	if (r)
		return r;
	if (!a.b && !a.upper) {
		r = diff_mount(&a, &d);
		strata_diff_clear(&d);
		return r;
	}
	r = strata_store_open(g.root, &st, &err);
	if (r < 0)
		return die_err(&err, r);
	strata_store_set_reg_opts(st, &g.reg);
	if (resolve(st, a.a, a.plat, &ia))
		return 1;
	if (a.upper) {
		ufd = upper_dir(a.upper);
		if (ufd < 0)
			return 1;
		r = strata_diff_upper(st, ia, ufd, &d, &err);
	} else {
		if (resolve(st, a.b, a.plat, &ib))
			return 1;
		r = strata_diff_images(st, ia, ib, &d, &err);
	}
	if (r < 0)
		return die_err(&err, r);
	print(&d, a.a, a.upper ? a.upper : a.b, a.json, a.stat);
	strata_diff_clear(&d);
	return 0;
}
