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

/* Registry options (reg-opts.c): consume argv[*i] (and its value) into
 * g.reg. Return: 1 consumed, 0 not ours, -1 bad value (printed). */
int reg_option(int argc, char **argv, int *i);
extern const char reg_opts_usage[];

/* Print "strata: MESSAGE" from @err (or strerror) and return 1. */
int die_err(const struct strata_err *err, int code);
/* True if argv holds -h/--help; prints @usage (if not NULL) to stdout
 * then. */
bool want_help(int argc, char **argv, const char *usage);

#endif
