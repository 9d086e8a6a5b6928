/* SPDX-License-Identifier: Apache-2.0 */
/* Options for docker:// references, shared by the subcommands. */
#include <stdio.h>
#include <string.h>

#include "strata.h"

const char reg_opts_usage[] =
	"  --creds USER[:PASS]   credentials for a docker:// registry (default:\n"
	"                        $REGISTRY_AUTH_FILE, containers auth.json,\n"
	"                        ~/.docker/config.json)\n"
	"  --tls-verify=false    allow plain HTTP and unverified TLS for docker://\n"
	"  --cert-dir DIR        CA (*.crt) and client certificate (*.cert, *.key)\n"
	"                        for docker://, instead of certs.d\n";

int reg_option(int argc, char **argv, int *i)
{
	const char *a = argv[*i];

	if (!strcmp(a, "--creds") && *i + 1 < argc) {
		g.reg.creds = argv[++*i];
	} else if (!strncmp(a, "--creds=", 8)) {
		g.reg.creds = a + 8;
	} else if (!strcmp(a, "--cert-dir") && *i + 1 < argc) {
		g.reg.cert_dir = argv[++*i];
	} else if (!strncmp(a, "--cert-dir=", 11)) {
		g.reg.cert_dir = a + 11;
	} else if (!strcmp(a, "--tls-verify=false")) {
		g.reg.tls_verify = 0;
	} else if (!strcmp(a, "--tls-verify=true") ||
		   !strcmp(a, "--tls-verify")) {
		g.reg.tls_verify = 1;
	} else if (!strncmp(a, "--tls-verify=", 13)) {
		fprintf(stderr, "strata: --tls-verify wants true or false\n");
		return -1;
	} else {
		return 0;
	}
	return 1;
}
