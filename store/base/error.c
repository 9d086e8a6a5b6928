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

const char *strata_printable(const char *s, size_t len, char *out,
			     size_t size)
{
	size_t o = 0, i;

	for (i = 0; i < len && s[i] && o + 5 < size; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x7f)
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
	if (i < len && s[i] && size > 4)
		strcpy(out + size - 4, "...");
	return out;
}
