/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Errors a person reads about.
 *
 * Functions that can fail return a negative errno. Operations whose failure a
 * person must understand (resolve, unpack, import) also take an optional
 * struct strata_err *: the first message set wins, later ones are dropped, so
 * the innermost cause (the entry, the blob) is what gets printed, once, by
 * tools/ or fs/main.c. Nothing to free.
 */
#ifndef STRATA_ERROR_H
#define STRATA_ERROR_H

#include <stdbool.h>
#include <stddef.h>

struct strata_err {
	int code;		/* negative errno of the first error, 0 if none */
	char msg[1024];
};

/*
 * Record an error unless one is already recorded. @err may be NULL.
 * Return: @code, so callers can write `return strata_err_set(err, -EIO, ...)`.
 */
int strata_err_set(struct strata_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Prefix the recorded message with context ("image foo: "), if any is
 * recorded; else record "<context>: <strerror(code)>".
 * Return: @code.
 */
int strata_err_wrap(struct strata_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline bool strata_err_isset(const struct strata_err *err)
{
	return err && err->code != 0;
}

/* Shorten a digest for messages: "sha256:0123456789ab". Borrowed static-free
 * buffer @buf of at least 24 bytes. Return: @buf. */
const char *strata_short_digest(const char *digest, char *buf, size_t len);

/*
 * A name from an image (at most @len bytes, or up to a NUL) fit for a
 * message: control bytes and bytes past ASCII escaped as \xNN, cut with
 * "..." to fit @size. Return: @out.
 */
const char *strata_printable(const char *s, size_t len, char *out,
			     size_t size);

#endif
