/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Restartable serving of a read-only image mount (resume.h).
 *
 * The kernel aborts a FUSE connection when the last open /dev/fuse
 * descriptor of it closes: every later access gives ENOTCONN. So the
 * process that mounted keeps the descriptor and serves nothing itself (it
 * never runs a request, so a bug in serving cannot take it down); it forks
 * a worker that serves. When the worker is killed (a crash, kill -9, the
 * OOM killer), the supervisor forks another from its own unchanged memory:
 * the image is loaded already, so the gap is one fork.
 *
 * What the new worker must know that only the old one knew:
 *
 *  - The connection's INIT. The kernel sends it once. The first worker
 *    records the request and its own answer in memory shared with the
 *    supervisor; a new worker is handed the recorded request as its first
 *    read (libfuse answers requests only after INIT), and its answer,
 *    which must equal the recorded one byte for byte (same binary, same
 *    options, so it does), is not sent. Were it different the worker
 *    gives up rather than serve with settings the kernel did not agree to.
 *
 *  - The requests it had read and not answered: the kernel waits for their
 *    answers for as long as the connection lives (only a request read
 *    through a cloned descriptor is failed when that closes, hence no
 *    clone_fd). A kernel that says FUSE_HAS_RESEND (6.9 and later) is
 *    asked, right after the new worker's INIT, to queue them all again
 *    (FUSE_NOTIFY_RESEND). For older kernels each reading thread copies
 *    the request it read into a shared slot, cleared when it is answered
 *    or the thread reads again, and the new worker reads the slots that
 *    are still full before the device. Read-only requests are idempotent,
 *    so one answered just before the kill and replayed is answered twice:
 *    the kernel drops the second answer (ENOENT: request ids are never
 *    reused). Lost there: a request the kernel handed over in the
 *    instants before it was copied (its caller waits until it is killed
 *    or the mount goes).
 *
 *  - Node ids: the kernel keeps the ids it was given, in open files and
 *    working directories. A read-only mount's ids name (layer, entry) of
 *    the image (fs.h), so files need no state and a directory's node is
 *    rebuilt on first use from its path (node.c: revive()). File handles
 *    would not survive: the mount runs with no open/opendir (the kernel's
 *    no_open), and a worker that got handles asks for none of this.
 *
 * No file is written: a restart needs no run directory to trust.
 * Forgets the dead worker had read are lost (a node kept until unmount).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "resume.h"

/* Read-only requests are small: a header, an argument struct and a name
 * of at most 255 bytes (lookup, getxattr). Longer ones are not kept. */
#define RS_REQ_MAX 1024
#define RS_INIT_MAX 512
/* More deaths than this within RS_WINDOW seconds: something kills every
 * worker at once (a request that crashes it, replayed each time). */
#define RS_BURST 5
#define RS_WINDOW 30

/* linux/fuse.h 7.40, newer than the headers this may be built with */
#define RS_HAS_RESEND (1ull << 39)
#define RS_NOTIFY_RESEND 7

struct rs_slot {
	_Atomic uint32_t len;		/* 0: free */
	uint32_t pad;
	uint64_t unique;
	unsigned char req[RS_REQ_MAX];
};

/* Shared by the supervisor and its workers (MAP_SHARED, inherited). */
struct rs_shared {
	_Atomic uint32_t init_len;	/* INIT answered and recorded: */
	uint32_t init_out_len;
	_Atomic uint32_t resumable;
	uint32_t n_slots;
	uint64_t init_unique;
	unsigned char init_req[RS_INIT_MAX];
	unsigned char init_out[RS_INIT_MAX];
	struct rs_slot slot[];
};

enum { GIVE_INIT, AWAIT_INIT, REPLAY, LIVE };

/* Worker-private (each worker is a fresh fork of the supervisor). */
static struct rs_shared *sh;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static _Atomic int phase = LIVE;
static uint32_t *replay, n_replay, next_replay;	/* full slots to re-read */
static uint32_t *free_slots, n_free;		/* empty slots, a stack */
static pthread_key_t slot_key;
static bool (*resumable_cb)(void *);
static void *resumable_arg;
static unsigned char first_init[RS_INIT_MAX];	/* the kernel's INIT, */
static size_t first_init_len;			/* until answered */
static uint64_t first_init_unique;

/* The thread's own slot (+1, 0: none) and the slot of the request it is
 * answering (+1, 0: none; a replayed request stays in its old slot). */
static __thread uint32_t own_slot, cur_slot;

static volatile sig_atomic_t restart_asked;

static void clear_slot(uint32_t s)
{
	if (s)
		atomic_store_explicit(&sh->slot[s - 1].len, 0,
				      memory_order_release);
}

/* A thread leaves: its slot goes back to the stack. */
static void thread_gone(void *p)
{
	uint32_t s = (uint32_t)(uintptr_t)p;

	clear_slot(cur_slot);
	clear_slot(s);
	pthread_mutex_lock(&mu);
	free_slots[n_free++] = s - 1;
	pthread_mutex_unlock(&mu);
}

static uint32_t take_own_slot(void)
{
	if (own_slot)
		return own_slot;
	pthread_mutex_lock(&mu);
	if (n_free) {
		own_slot = free_slots[--n_free] + 1;
		pthread_setspecific(slot_key, (void *)(uintptr_t)own_slot);
	}
	pthread_mutex_unlock(&mu);
	return own_slot;
}

/* The kernel's INIT (@n bytes), read or replayed: kept until answered.
 * Called with mu held. */
static void note_init(const void *buf, size_t n)
{
	const struct fuse_in_header *in = buf;

	if (n < sizeof(*in) || in->opcode != FUSE_INIT || n > RS_INIT_MAX ||
	    atomic_load(&sh->init_len))
		return;
	memcpy(first_init, buf, n);
	first_init_len = n;
	first_init_unique = in->unique;
}

/* Keep request @buf (@n bytes), just read, until it is answered. */
static void keep(const void *buf, size_t n)
{
	const struct fuse_in_header *in = buf;
	uint32_t s;

	cur_slot = 0;
	if (n < sizeof(*in) || n > RS_REQ_MAX)
		return;
	/* no answer: nobody waits */
	if (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET ||
	    in->opcode == FUSE_INTERRUPT)
		return;
	if (in->opcode == FUSE_INIT) {
		pthread_mutex_lock(&mu);
		note_init(buf, n);
		pthread_mutex_unlock(&mu);
	}
	s = take_own_slot();
	if (!s)
		return;
	memcpy(sh->slot[s - 1].req, buf, n);
	sh->slot[s - 1].unique = in->unique;
	atomic_store_explicit(&sh->slot[s - 1].len, (uint32_t)n,
			      memory_order_release);
	cur_slot = s;
}

static ssize_t rs_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n;

	(void)userdata;
	/* back for more: the last request was answered */
	clear_slot(cur_slot);
	if (cur_slot && cur_slot != own_slot) {
		/* a replayed request's slot: free for a thread of ours */
		pthread_mutex_lock(&mu);
		free_slots[n_free++] = cur_slot - 1;
		pthread_mutex_unlock(&mu);
	}
	cur_slot = 0;
	if (phase != LIVE) {
		pthread_mutex_lock(&mu);
		if (phase == GIVE_INIT && len >= sh->init_len) {
			n = (ssize_t)sh->init_len;
			memcpy(buf, sh->init_req, (size_t)n);
			phase = AWAIT_INIT;
			pthread_mutex_unlock(&mu);
			return n;
		}
		while (phase == AWAIT_INIT)
			pthread_cond_wait(&cv, &mu);
		while (phase == REPLAY && next_replay < n_replay) {
			struct rs_slot *sl = &sh->slot[replay[next_replay++]];
			uint32_t l = atomic_load(&sl->len);

			if (!l || l > len)
				continue;	/* answered meanwhile */
			memcpy(buf, sl->req, l);
			note_init(buf, l);
			cur_slot = replay[next_replay - 1] + 1;
			pthread_mutex_unlock(&mu);
			return (ssize_t)l;
		}
		if (phase == REPLAY)
			phase = LIVE;
		pthread_mutex_unlock(&mu);
	}
	n = read(fd, buf, len);
	if (n > 0)
		keep(buf, (size_t)n);
	return n;
}

/* Is answer @iov the one the first worker gave to INIT? */
static bool same_init(const struct iovec *iov, int count)
{
	size_t off = 0;
	int i;

	for (i = 0; i < count; i++) {
		if (off + iov[i].iov_len > sh->init_out_len ||
		    memcmp(sh->init_out + off, iov[i].iov_base,
			   iov[i].iov_len))
			return false;
		off += iov[i].iov_len;
	}
	return off == sh->init_out_len;
}

/* The first worker answered INIT: keep request and answer for the next. */
static void record_init(const struct iovec *iov, int count)
{
	size_t off = 0;
	int i;

	for (i = 0; i < count; i++) {
		if (off + iov[i].iov_len > RS_INIT_MAX)
			return;	/* not resumable: init_len stays 0 */
		memcpy(sh->init_out + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	sh->init_out_len = (uint32_t)off;
	memcpy(sh->init_req, first_init, first_init_len);
	sh->init_unique = first_init_unique;
	atomic_store(&sh->resumable,
		     resumable_cb ? resumable_cb(resumable_arg) : 0);
	atomic_store(&sh->init_len, (uint32_t)first_init_len);
}

/* Did the kernel's INIT offer FUSE_NOTIFY_RESEND? (Not when
 * STRATAFS_RESUME_REPLAY=slots: the tests' way to the older kernels'
 * path.) */
static bool kernel_resends(void)
{
	const struct fuse_init_in *in = (const void *)
		(sh->init_req + sizeof(struct fuse_in_header));
	const char *force = getenv("STRATAFS_RESUME_REPLAY");

	if (force && !strcmp(force, "slots"))
		return false;
	if (sh->init_len < sizeof(struct fuse_in_header) +
	    offsetof(struct fuse_init_in, flags2) + sizeof(in->flags2) ||
	    !(in->flags & FUSE_INIT_EXT))
		return false;
	return ((uint64_t)in->flags2 << 32) & RS_HAS_RESEND;
}

/* Have the kernel queue again every request it handed out and has no
 * answer to (the dead worker's: this one has read none yet). Called with
 * mu held. Return: done (else the slots are replayed). */
static bool ask_resend(int fd)
{
	struct fuse_out_header h = { .len = sizeof(h),
				     .error = RS_NOTIFY_RESEND };
	uint32_t i;

	if (!kernel_resends() || write(fd, &h, sizeof(h)) != sizeof(h))
		return false;
	for (i = 0; i < n_replay; i++) {
		clear_slot(replay[i] + 1);
		free_slots[n_free++] = replay[i];
	}
	n_replay = 0;
	return true;
}

static ssize_t rs_writev(int fd, struct iovec *iov, int count,
			 void *userdata)
{
	const struct fuse_out_header *out = iov[0].iov_base;
	ssize_t n;
	uint32_t s;

	(void)userdata;
	if (phase == AWAIT_INIT && out->unique == sh->init_unique) {
		/* the answer to the replayed INIT: the kernel has its own */
		if (!same_init(iov, count)) {
			strata_warn("a restarted worker would answer the "
				    "mount's INIT differently; it cannot take "
				    "the mount over");
			_exit(FS_RESUME_GIVE_UP);
		}
		pthread_mutex_lock(&mu);
		ask_resend(fd);
		phase = REPLAY;
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&mu);
		return (ssize_t)out->len;
	}
	n = writev(fd, iov, count);
	if (out->unique && first_init_len && out->unique == first_init_unique &&
	    n >= 0 && !atomic_load(&sh->init_len)) {
		pthread_mutex_lock(&mu);
		record_init(iov, count);
		pthread_mutex_unlock(&mu);
	}
	/* answered (or the kernel no longer waits): forget the request */
	if (cur_slot && sh->slot[cur_slot - 1].unique == out->unique) {
		clear_slot(cur_slot);
		cur_slot = 0;
	} else if (out->unique) {
		for (s = 0; s < sh->n_slots; s++)
			if (atomic_load(&sh->slot[s].len) &&
			    sh->slot[s].unique == out->unique)
				clear_slot(s + 1);
	}
	return n;
}

/* Splice answers (large reads) come from the thread answering its own
 * current request. */
static ssize_t rs_splice_send(int fdin, off_t *offin, int fdout,
			      off_t *offout, size_t len, unsigned int flags,
			      void *userdata)
{
	ssize_t n = splice(fdin, offin, fdout, offout, len, flags);

	(void)userdata;
	if (n >= 0) {
		clear_slot(cur_slot);
		cur_slot = 0;
	}
	return n;
}

/* In a new worker of supervisor @parent: take over @se's descriptor
 * with our I/O. */
static int worker_setup(struct fuse_session *se, pid_t parent)
{
	static const struct fuse_custom_io io = {
		.read = rs_read,
		.writev = rs_writev,
		.splice_send = rs_splice_send,
	};
	uint32_t s;

	prctl(PR_SET_NAME, "stratafs-serve");
	/* the supervisor owns the mount: killing it ends the mount, as
	 * killing stratafs always did (ENOTCONN until unmounted) */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		return -ESRCH;
	signal(SIGUSR1, SIG_DFL);
	replay = malloc(sh->n_slots * sizeof(*replay));
	free_slots = malloc(sh->n_slots * sizeof(*free_slots));
	if (!replay || !free_slots ||
	    pthread_key_create(&slot_key, thread_gone) != 0)
		return -ENOMEM;
	/* the dead worker's unanswered requests, in slot order (the order
	 * they were read in is not known; each was already concurrent) */
	for (s = 0; s < sh->n_slots; s++) {
		const struct rs_slot *sl = &sh->slot[s];
		uint32_t l = atomic_load(&sl->len);

		if (l && !(atomic_load(&sh->init_len) &&
			   sl->unique == sh->init_unique))
			replay[n_replay++] = s;
		else if (l)
			clear_slot(s + 1);
		if (!atomic_load(&sl->len))
			free_slots[n_free++] = s;
	}
	phase = atomic_load(&sh->init_len) ? GIVE_INIT
		: n_replay ? REPLAY : LIVE;
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

static void on_usr1(int sig)
{
	(void)sig;
	restart_asked = 1;
}

/* Wait for worker @pid; forward the end of the session (a signal to the
 * supervisor) and restart requests. Return: its wait status. */
static int wait_worker(struct fuse_session *se, pid_t pid, bool *asked_end)
{
	int ws;

	for (;;) {
		/* the end may have been asked while no worker ran */
		if (fuse_session_exited(se) && !*asked_end) {
			kill(pid, SIGTERM);
			*asked_end = true;
		}
		if (restart_asked) {
			restart_asked = 0;
			kill(pid, SIGKILL);
		}
		if (waitpid(pid, &ws, 0) == pid)
			return ws;
		if (errno != EINTR)
			return 0;
	}
}

int fs_resume_supervise(struct fuse_session *se, unsigned max_threads,
			bool (*resumable)(void *arg), void *arg, int *status)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	/* each thread's own, and as many of a dead worker's */
	uint32_t n_slots = 2 * (max_threads ? max_threads : 1) + 4;
	time_t deaths[RS_BURST] = { 0 };
	unsigned restarts = 0;
	bool asked_end = false;
	size_t size;

	if (n_slots > 1024)
		n_slots = 1024;	/* more threads than that: some not kept */
	size = sizeof(*sh) + n_slots * sizeof(struct rs_slot);
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		sh = NULL;
		return -errno;
	}
	sh->n_slots = n_slots;
	resumable_cb = resumable;
	resumable_arg = arg;
	sigaction(SIGUSR1, &sa, NULL);
	for (;;) {
		pid_t self = getpid(), pid = fork();
		int ws;

		if (pid == 0) {
			if (worker_setup(se, self) < 0)
				_exit(FS_RESUME_GIVE_UP);
			return 0;
		}
		if (pid < 0) {
			strata_warn("cannot start a worker to serve the mount: "
				    "%s; unmounting", strerror(errno));
			*status = 1;
			return 1;
		}
		ws = wait_worker(se, pid, &asked_end);
		if (WIFEXITED(ws)) {
			*status = WEXITSTATUS(ws) == FS_RESUME_GIVE_UP ? 1
				  : WEXITSTATUS(ws);
			return 1;
		}
		if (asked_end) {
			*status = 0;
			return 1;
		}
		if (atomic_load(&sh->init_len) && !atomic_load(&sh->resumable)) {
			strata_warn("worker %d killed by signal %d; this mount "
				    "cannot be taken over (the kernel keeps "
				    "file handles: no no_open); unmounting",
				    (int)pid, WTERMSIG(ws));
			*status = 1;
			return 1;
		}
		memmove(deaths, deaths + 1, sizeof(deaths) - sizeof(deaths[0]));
		deaths[RS_BURST - 1] = time(NULL);
		if (deaths[0] && deaths[RS_BURST - 1] - deaths[0] < RS_WINDOW) {
			strata_warn("%d workers died within %d s (the last by "
				    "signal %d); unmounting", RS_BURST,
				    RS_WINDOW, WTERMSIG(ws));
			*status = 1;
			return 1;
		}
		restarts++;
		strata_warn("worker %d killed by signal %d; serving on from a "
			    "new one (restart %u)", (int)pid, WTERMSIG(ws),
			    restarts);
	}
}
