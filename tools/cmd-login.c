/* SPDX-License-Identifier: Apache-2.0 */
/* strata login REGISTRY, strata logout REGISTRY|--all */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "strata.h"

static const char login_usage[] =
	"usage: strata login [--username USER] [--password-stdin]\n"
	"                    [--tls-verify=false] [--cert-dir DIR] REGISTRY\n"
	"\n"
	"Check USER's password against REGISTRY (HOST[:PORT]), then store the\n"
	"credentials where podman and skopeo read them: $REGISTRY_AUTH_FILE,\n"
	"else $XDG_RUNTIME_DIR/containers/auth.json (root without it:\n"
	"/run/containers/0/auth.json). The password is read from standard\n"
	"input with --password-stdin, else asked on the terminal.\n"
	"\n"
	"  -u, --username USER   the user (asked on the terminal if not given)\n"
	"  --password-stdin      read the password from standard input\n"
	"  --tls-verify=false    allow plain HTTP and unverified TLS\n"
	"  --cert-dir DIR        CA and client certificate, instead of certs.d\n";

static const char logout_usage[] =
	"usage: strata logout REGISTRY | --all\n"
	"\n"
	"Remove the credentials of REGISTRY (or, with --all, of every registry)\n"
	"from the auth file strata login writes.\n";

/* A line from @f without its newline, at most 4 KiB. Caller frees. */
static char *read_line(FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);

	if (n < 0 || n > 4096) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	return line;
}

static char *ask(const char *prompt, bool echo)
{
	struct termios old, t;
	bool tty = isatty(STDIN_FILENO);
	char *s;

	fputs(prompt, stderr);
	fflush(stderr);
	if (!echo && tty && tcgetattr(STDIN_FILENO, &old) == 0) {
		t = old;
		t.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
		s = read_line(stdin);
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
		return s;
	}
	return read_line(stdin);
}

int cmd_login(int argc, char **argv)
{
	cleanup_free char *user_in = NULL, *pass = NULL, *creds = NULL;
	const char *user = NULL, *registry = NULL;
	struct strata_err err = { 0 };
	bool from_stdin = false;
	char path[4096];
	int i, r;

	if (want_help(argc, argv, login_usage))
		return 0;
	for (i = 1; i < argc; i++) {
		int bad = 0, ro;

		if (opt_value(argc, argv, &i, "--username", &user, "login",
			      login_usage, &bad) ||
		    opt_value(argc, argv, &i, "-u", &user, "login",
			      login_usage, &bad)) {
			if (bad)
				return bad;
			continue;
		}
		if (!strcmp(argv[i], "--password-stdin")) {
			from_stdin = true;
			continue;
		}
		if (!strncmp(argv[i], "--creds", 7))
			return usage_error("login", login_usage, "unknown "
					   "option \"%s\"", argv[i]);
		ro = reg_option(argc, argv, &i);
		if (ro < 0)
			return 2;
		if (ro > 0)
			continue;
		if (argv[i][0] == '-')
			return usage_error("login", login_usage,
					   "unknown option \"%s\"", argv[i]);
		if (registry)
			return usage_error("login", login_usage, "unexpected "
					   "argument \"%s\" (it takes one "
					   "REGISTRY)", argv[i]);
		registry = argv[i];
	}
	if (!registry)
		return usage_error("login", login_usage, "missing REGISTRY");
	if (strata_auth_file_path(path, sizeof(path)) < 0) {
		fprintf(stderr, "strata login: no place for the auth file "
			"(set REGISTRY_AUTH_FILE or XDG_RUNTIME_DIR)\n");
		return 1;
	}
	if (!user) {
		if (from_stdin)
			return usage_error("login", login_usage, "--password-"
					   "stdin needs --username");
		user = user_in = ask("Username: ", true);
	}
	pass = from_stdin ? read_line(stdin) : ask("Password: ", false);
	if (!user || !*user || !pass || strchr(user, ':')) {
		fprintf(stderr, "strata login: %s\n", !pass ? "no password "
			"given" : "a user name, without ':', is needed");
		return 1;
	}
	if (asprintf(&creds, "%s:%s", user, pass) < 0)
		return die_err(NULL, -ENOMEM);
	g.reg.creds = creds;
	r = strata_registry_login(registry, &g.reg, &err);
	if (r == 0)
		r = strata_auth_file_set(path, registry, user, pass, &err);
	if (r < 0)
		return die_err(&err, r);
	if (!g.quiet)
		fprintf(stderr, "Login Succeeded (credentials in %s)\n", path);
	return 0;
}

int cmd_logout(int argc, char **argv)
{
	struct strata_err err = { 0 };
	const char *registry = NULL;
	bool all = false;
	char path[4096];
	int i, r;

	if (want_help(argc, argv, logout_usage))
		return 0;
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--all") || !strcmp(argv[i], "-a"))
			all = true;
		else if (argv[i][0] == '-')
			return usage_error("logout", logout_usage,
					   "unknown option \"%s\"", argv[i]);
		else if (registry)
			return usage_error("logout", logout_usage, "unexpected "
					   "argument \"%s\"", argv[i]);
		else
			registry = argv[i];
	}
	if (!registry == !all)
		return usage_error("logout", logout_usage, all ? "REGISTRY and "
				   "--all: choose one" : "missing REGISTRY "
				   "(or --all)");
	if (strata_auth_file_path(path, sizeof(path)) < 0) {
		fprintf(stderr, "strata logout: no auth file (set "
			"REGISTRY_AUTH_FILE or XDG_RUNTIME_DIR)\n");
		return 1;
	}
	r = strata_auth_file_remove(path, registry, &err);
	if (r < 0)
		return die_err(&err, r);
	if (!g.quiet)
		fprintf(stderr, "Removed login credentials for %s\n",
			all ? "all registries" : registry);
	return 0;
}
