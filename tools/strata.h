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
int cmd_export(int argc, char **argv);

/* Registry options (reg-opts.c): consume argv[*i] (and its value) into
 * g.reg. Return: 1 consumed, 0 not ours, -1 bad value (printed). */
int reg_option(int argc, char **argv, int *i);
extern const char reg_opts_usage[];

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

#endif
