/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A tiny TAP producer for the unit tests.
 *
 *   ok(cond, "fmt", ...)           one test point
 *   is_int(got, want, "fmt", ...)  integers, both printed on failure
 *   is_str(got, want, "fmt", ...)  strings (NULL allowed), both printed
 *   diag("fmt", ...)               a "# " comment line
 *   return done_testing();         prints the plan; exit status 1 on failure
 */
#ifndef STRATA_TAP_H
#define STRATA_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int tap_count_;
static int tap_failed_;

/* Control characters would break the TAP stream: print them as \xNN. */
static inline void tap_puts_escaped_(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			printf("\\x%02x", (unsigned char)*s);
		else
			putchar(*s);
	}
}

__attribute__((format(printf, 4, 0))) static inline bool
tap_point_(bool pass, const char *file, int line, const char *fmt,
	   va_list ap)
{
	char desc[1024];

	tap_count_++;
	if (!pass)
		tap_failed_++;
	vsnprintf(desc, sizeof(desc), fmt, ap);
	printf("%sok %d - ", pass ? "" : "not ", tap_count_);
	tap_puts_escaped_(desc);
	printf("\n");
	if (!pass)
		printf("#   failed at %s:%d\n", file, line);
	fflush(stdout);
	return pass;
}

__attribute__((format(printf, 4, 5))) static inline bool
tap_ok_(bool pass, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	bool r;

	va_start(ap, fmt);
	r = tap_point_(pass, file, line, fmt, ap);
	va_end(ap);
	return r;
}

__attribute__((format(printf, 5, 6))) static inline bool
tap_is_int_(long long got, long long want, const char *file, int line,
	    const char *fmt, ...)
{
	va_list ap;
	bool r;

	va_start(ap, fmt);
	r = tap_point_(got == want, file, line, fmt, ap);
	va_end(ap);
	if (!r)
		printf("#          got: %lld\n#     expected: %lld\n", got, want);
	return r;
}

__attribute__((format(printf, 5, 6))) static inline bool
tap_is_str_(const char *got, const char *want, const char *file, int line,
	    const char *fmt, ...)
{
	va_list ap;
	bool same = (!got && !want) || (got && want && !strcmp(got, want));
	bool r;

	va_start(ap, fmt);
	r = tap_point_(same, file, line, fmt, ap);
	va_end(ap);
	if (!r) {
		printf("#          got: ");
		if (got) {
			putchar('"');
			tap_puts_escaped_(got);
			putchar('"');
		} else {
			printf("NULL");
		}
		printf("\n#     expected: ");
		if (want) {
			putchar('"');
			tap_puts_escaped_(want);
			putchar('"');
		} else {
			printf("NULL");
		}
		printf("\n");
	}
	return r;
}

__attribute__((format(printf, 1, 2))) static inline void
diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static inline int done_testing(void)
{
	printf("1..%d\n", tap_count_);
	if (tap_failed_)
		printf("# %d of %d tests failed\n", tap_failed_, tap_count_);
	fflush(stdout);
	return tap_failed_ ? 1 : 0;
}

#define ok(cond, ...) tap_ok_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...) \
	tap_is_int_((long long)(got), (long long)(want), __FILE__, __LINE__, \
		    __VA_ARGS__)
#define is_str(got, want, ...) \
	tap_is_str_((got), (want), __FILE__, __LINE__, __VA_ARGS__)

#endif
