/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bytes arriving in order, written by one thread while others read them
 * (store-internal.h): the lazy pass reads the store's copy of a blob as it
 * is made (store/layer/lazy-zran.c) and a registry's download as it is
 * written (store/image/registry/registry.c). A reader that has what it
 * needs takes no lock.
 */
#include <errno.h>

#include "store-internal.h"

void strata_arrival_init(struct strata_arrival *a)
{
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->more, NULL);
	atomic_init(&a->have, 0);
	a->ended = false;
	a->error = 0;
}

void strata_arrival_destroy(struct strata_arrival *a)
{
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->more);
}

void strata_arrival_advance(struct strata_arrival *a, uint64_t have)
{
	pthread_mutex_lock(&a->lock);
	atomic_store_explicit(&a->have, have, memory_order_release);
	pthread_cond_broadcast(&a->more);
	pthread_mutex_unlock(&a->lock);
}

void strata_arrival_end(struct strata_arrival *a, int error)
{
	pthread_mutex_lock(&a->lock);
	a->ended = true;
	a->error = error;
	pthread_cond_broadcast(&a->more);
	pthread_mutex_unlock(&a->lock);
}

uint64_t strata_arrival_have(struct strata_arrival *a)
{
	return atomic_load_explicit(&a->have, memory_order_acquire);
}

int strata_arrival_wait(struct strata_arrival *a, uint64_t end)
{
	int r = 0;

	if (strata_arrival_have(a) >= end)
		return 0;
	pthread_mutex_lock(&a->lock);
	while (strata_arrival_have(a) < end && !a->ended)
		pthread_cond_wait(&a->more, &a->lock);
	if (strata_arrival_have(a) < end)
		r = a->error < 0 ? a->error : -EIO;
	pthread_mutex_unlock(&a->lock);
	return r;
}
