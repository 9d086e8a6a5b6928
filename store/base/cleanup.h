/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Scope-bound cleanup of local resources (the idiom crun and systemd use).
 *
 *   cleanup_free char *s = strdup(x);       freed when s leaves scope
 *   cleanup_fd int fd = open(...);          closed when fd leaves scope (if >= 0)
 *   return take_ptr(&s);                    hands ownership on, leaves s NULL
 */
#ifndef STRATA_CLEANUP_H
#define STRATA_CLEANUP_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define cleanup_(f) __attribute__((cleanup(f)))

static inline void cleanup_freep(void *p)
{
	free(*(void **)p);
}

static inline void cleanup_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;

		close(*fd);
		errno = saved;
	}
}

static inline void cleanup_fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define cleanup_free cleanup_(cleanup_freep)
#define cleanup_fd cleanup_(cleanup_closep)
#define cleanup_file cleanup_(cleanup_fclosep)

static inline void *take_ptr_(void **p)
{
	void *v = *p;

	*p = NULL;
	return v;
}

#define take_ptr(p) take_ptr_((void **)(p))

static inline int take_fd(int *fd)
{
	int v = *fd;

	*fd = -1;
	return v;
}

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
