/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The leader/follower request loop (loop.h).
 *
 * Threads take turns at reading /dev/fuse: the one holding `lead` reads.
 * A quick request (a lookup, getattr, getxattr, readdir, a read) is
 * answered by the leader itself, which then reads the next one: a serial
 * stream of requests costs one wake-up each, always of the same thread.
 * For any other request the leader first gives up `lead` (an idle
 * follower, or a new thread, reads on), then answers it and becomes a
 * follower again. So requests that may block for long (writes, copy-ups,
 * fsync) or send kernel notifications (which can wait for another request
 * to be answered) never hold up the reading.
 *
 * Ending: the thread that reads the end (unmount) or finds the session
 * exited (a signal) lets `lead` go; each follower then finds the session
 * exited and leaves. The caller's thread waits on `done`, then cancels
 * what is still blocked in read(2) (cancellation is enabled only there,
 * as in libfuse's own loop) and joins every thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"

struct loop {
	struct fuse_session *se;
	bool (*flush_quick)(uint64_t fh);
	pthread_mutex_t lead;	/* held by the thread reading requests */
	pthread_mutex_t mu;	/* protects idle, n, tids */
	unsigned idle;		/* threads not busy with a request */
	unsigned n, max;
	pthread_t *tids;
	sem_t done;
	int error;
};

static bool open_quick(const struct fuse_in_header *in, size_t size)
{
	const struct fuse_open_in *o = (const void *)(in + 1);

	/* an open for writing may copy a file up */
	return size >= sizeof(*in) + sizeof(*o) &&
	       (o->flags & O_ACCMODE) == O_RDONLY && !(o->flags & O_TRUNC);
}

static bool release_quick(struct loop *l, const struct fuse_in_header *in,
			  size_t size)
{
	const struct fuse_release_in *r = (const void *)(in + 1);

	/* closing what was written through may notify the kernel; after
	 * close(2)'s FLUSH nothing is left to notify */
	return size >= sizeof(*in) + sizeof(*r) &&
	       ((r->flags & O_ACCMODE) == O_RDONLY ||
		(l->flush_quick && l->flush_quick(r->fh)));
}

/* May @buf be answered without handing the reading on? Requests that
 * read (the tree or file data) and small writes to an open file; never
 * ones that change the tree, may copy up, sync or notify the kernel. */
static bool quick(struct loop *l, const struct fuse_buf *buf)
{
	const struct fuse_in_header *in = buf->mem;

	if ((buf->flags & FUSE_BUF_IS_FD) || buf->size < sizeof(*in))
		return false;	/* a big write, spliced */
	switch (in->opcode) {
	case FUSE_LOOKUP:
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_GETATTR:
	case FUSE_READLINK:
	case FUSE_STATFS:
	case FUSE_GETXATTR:
	case FUSE_LISTXATTR:
	case FUSE_ACCESS:
	case FUSE_OPENDIR:
	case FUSE_READDIR:
	case FUSE_READDIRPLUS:
	case FUSE_RELEASEDIR:
	case FUSE_READ:
	case FUSE_INTERRUPT:
	case FUSE_INIT:
		return true;
	case FUSE_WRITE:
		/* up to a page, to an upper file (a write copies up only
		 * after a live commit went on, which needs the control
		 * socket that lowerdir= mounts do not have); the kernel is
		 * told about it at FLUSH */
		return buf->size <= sizeof(*in) +
		       sizeof(struct fuse_write_in) + 4096;
	case FUSE_OPEN:
		return open_quick(in, buf->size);
	case FUSE_RELEASE:
		return release_quick(l, in, buf->size);
	case FUSE_FLUSH:
		return l->flush_quick && buf->size >= sizeof(*in) +
		       sizeof(struct fuse_flush_in) &&
		       l->flush_quick(((const struct fuse_flush_in *)
				       (in + 1))->fh);
	default:
		return false;
	}
}

static void *worker(void *arg);

/* Start one more follower, if none is idle and there is room (l->mu). */
static void add_follower(struct loop *l)
{
	sigset_t all, old;

	if (l->idle || l->n >= l->max || fuse_session_exited(l->se))
		return;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (pthread_create(&l->tids[l->n], NULL, worker, l) == 0) {
		l->n++;
		l->idle++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

struct cancel_ctx {
	struct loop *l;
	struct fuse_buf *buf;
};

/* A leader cancelled in read(2) at the end lets the next one see it. */
static void cancelled(void *arg)
{
	struct cancel_ctx *c = arg;

	free(c->buf->mem);
	c->buf->mem = NULL;
	pthread_mutex_unlock(&c->l->lead);
}

/* Read one request as the leader; < 0 or 0 at the end. */
static int receive(struct loop *l, struct fuse_buf *buf)
{
	struct cancel_ctx c = { l, buf };
	int r;

	pthread_cleanup_push(cancelled, &c);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	r = fuse_session_receive_buf(l->se, buf);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_pop(0);
	return r;
}

static void set_busy(struct loop *l, int d)
{
	pthread_mutex_lock(&l->mu);
	l->idle += (unsigned)d;
	if (d < 0)
		add_follower(l);	/* someone must be left to lead */
	pthread_mutex_unlock(&l->mu);
}

static void *worker(void *arg)
{
	struct loop *l = arg;
	struct fuse_buf buf = { .mem = NULL };
	int r;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	for (;;) {
		pthread_mutex_lock(&l->lead);
		for (;;) {
			if (fuse_session_exited(l->se)) {
				pthread_mutex_unlock(&l->lead);
				goto out;
			}
			r = receive(l, &buf);
			if (r == -EINTR || r == -EAGAIN)
				continue;
			if (r <= 0) {
				if (r < 0)
					l->error = r;
				fuse_session_exit(l->se);
				pthread_mutex_unlock(&l->lead);
				goto out;
			}
			if (!quick(l, &buf))
				break;
			fuse_session_process_buf(l->se, &buf);
		}
		set_busy(l, -1);
		pthread_mutex_unlock(&l->lead);
		fuse_session_process_buf(l->se, &buf);
		set_busy(l, 1);
	}
out:
	free(buf.mem);
	sem_post(&l->done);
	return NULL;
}

int fs_loop_run(struct fuse_session *se, unsigned max_threads,
		bool (*flush_quick)(uint64_t fh))
{
	struct loop l = { .se = se, .flush_quick = flush_quick,
			  .max = max_threads ? max_threads : 1 };
	unsigned i;

	l.tids = calloc(l.max, sizeof(*l.tids));
	if (!l.tids)
		return -1;
	pthread_mutex_init(&l.lead, NULL);
	pthread_mutex_init(&l.mu, NULL);
	sem_init(&l.done, 0, 0);
	pthread_mutex_lock(&l.mu);
	add_follower(&l);
	pthread_mutex_unlock(&l.mu);
	if (!l.n) {
		l.error = -EAGAIN;
		goto out;
	}
	while (!fuse_session_exited(se))
		sem_wait(&l.done);	/* EINTR: a signal ended the session */
	pthread_mutex_lock(&l.mu);
	for (i = 0; i < l.n; i++)
		pthread_cancel(l.tids[i]);
	pthread_mutex_unlock(&l.mu);
	/* a thread added after the cancels finds the session exited and
	 * leaves by itself */
	for (i = 0;; i++) {
		pthread_mutex_lock(&l.mu);
		if (i >= l.n) {
			pthread_mutex_unlock(&l.mu);
			break;
		}
		pthread_mutex_unlock(&l.mu);
		pthread_join(l.tids[i], NULL);
	}
out:
	sem_destroy(&l.done);
	pthread_mutex_destroy(&l.mu);
	pthread_mutex_destroy(&l.lead);
	free(l.tids);
	fuse_session_reset(se);
	return l.error < 0 && l.error != -ENODEV ? -1 : 0;
}
