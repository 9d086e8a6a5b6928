/* SPDX-License-Identifier: Apache-2.0 */
/* The strata command: one cmd_NAME() per subcommand file. */
#ifndef STRATA_TOOLS_H
#define STRATA_TOOLS_H

#include "store.h"

struct globals {
	const char *root;	/* --root, or NULL */
	bool quiet;
	struct strata_reg_opts reg;	/* --creds, --tls-verify, --cert-dir */
};

extern struct globals g;

int cmd_import(int argc, char **argv);
int cmd_images(int argc, char **argv);
int cmd_rmi(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_tag(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_copy(int argc, char **argv);
int cmd_login(int argc, char **argv);
int cmd_logout(int argc, char **argv);
int cmd_ls_tags(int argc, char **argv);
int cmd_layers(int argc, char **argv);
int cmd_save(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_history(int argc, char **argv);
int cmd_export(int argc, char **argv);

/* Registry options (reg-opts.c): consume argv[*i] (and its value) into
 * g.reg. Return: 1 consumed, 0 not ours, -1 bad value (printed). */
int reg_option(int argc, char **argv, int *i);
extern const char reg_opts_usage[];

/* @n bytes as podman shows sizes: 1000-based, three significant digits
 * ("4.2 MB"), into @out. */
void human_size(uint64_t n, char *out, size_t len);
/* What a live mount's control socket says about it (stratafs control.h). */
struct live_mount {
	int fd;				/* the connection; frozen while open */
	char *upper, *ref, *store;
	char *manifest;			/* the digest the mount shows */
	char *base;			/* ref naming exactly that image */
	/* root committing another user's mount: the directories as checked
	 * (owned_dir); the upper one is committed through its fd's name */
	int upper_fd, store_fd;
	char upper_at[32], store_at[32];
};
/*
 * Find the stratafs mount at @mp (a fuse.stratafs mount of an image in
 * mountinfo), connect to its control socket, check that its owner
 * answers, and learn its upper directory, store and image (by digest:
 * m->base). Errors are said on stderr as "strata @cmd: ...".
 * Return: 0 or negative errno. Free with live_mount_free() either way.
 */
int live_mount_open(const char *cmd, const char *mp, struct live_mount *m);
/* Hold the mount still (changes wait) until m->fd is closed. */
int live_mount_freeze(const char *cmd, const char *mp, struct live_mount *m);
void live_mount_free(struct live_mount *m);
/* One request line to, and one reply line from, the control socket. */
int live_mount_say(int fd, const char *s);
int live_mount_read_reply(int fd, char *buf, size_t size);

/* Print "strata: MESSAGE" from @err (or strerror) and return 1. */
int die_err(const struct strata_err *err, int code);
/* True if argv holds -h/--help; prints @usage (if not NULL) to stdout
 * then. */
bool want_help(int argc, char **argv, const char *usage);
/*
 * A usage error of `strata @cmd`: print "strata CMD: WHAT" (what is
 * wrong: a missing or extra argument, an unknown option), the synopsis
 * from @usage (its lines up to the first blank one) and a pointer to
 * --help, on stderr. Return: 2, the exit status.
 */
int usage_error(const char *cmd, const char *usage, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Parse state for `OPTION VALUE`: true if @argv[*i] is @opt; then the
 * value is taken (*i moves on to it) or, if there is none, *bad is set to
 * the usage error's status. */
bool opt_value(int argc, char **argv, int *i, const char *opt,
	       const char **value, const char *cmd, const char *usage,
	       int *bad);
/* --platform OS/ARCH[/VARIANT] into @plat, like opt_value(): true if
 * argv[*i] is --platform (*bad: 2 after a usage message when its value is
 * missing or no platform). */
bool platform_option(int argc, char **argv, int *i, const char *cmd,
		     const char *usage, struct strata_platform *plat, int *bad);

#endif
