/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

int strata_err_set(struct strata_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err || err->code != 0)
		return code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

int strata_err_wrap(struct strata_err *err, int code, const char *fmt, ...)
{
	char prefix[512];
	char old[sizeof(err->msg)];
	va_list ap;

	if (!err)
		return code;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (err->code == 0) {
		err->code = code;
		snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix,
			 strerror(-code));
		return code;
	}
	memcpy(old, err->msg, sizeof(old));
	snprintf(err->msg, sizeof(err->msg), "%.500s: %.500s", prefix, old);
	return code;
}

const char *strata_short_digest(const char *digest, char *buf, size_t len)
{
	const char *colon = strchr(digest, ':');
	size_t n = colon ? (size_t)(colon - digest) + 1 + 12 : 12;

	if (n >= len)
		n = len - 1;
	snprintf(buf, len, "%.*s", (int)n, digest);
	return buf;
}
