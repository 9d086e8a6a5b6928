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
 * On a kernel that resends, no request is copied at all (the copies
 * are what the older kernels' path costs on every request).
 *
 * No file is written: a restart needs no run directory to trust.
 * Forgets the dead worker had read are lost (a node kept until unmount).
 *
 * An upgrade (SIGUSR2) is the same takeover by another binary. All that
 * a worker shares with the supervisor lives in one memfd (struct
 * rs_shared: the INIT, the request copies, and the mount's command line,
 * working directory, mount point, image digest and installed path), so
 * handing it over is an exec that keeps two descriptors, the memfd's and
 * /dev/fuse's (named to the new image in the environment). The binary is
 * opened once and that descriptor is checked, probed and exec'd, so what
 * was checked is what runs. The probe is the new binary run with the
 * memfd read-only: it checks the protocol number and libfuse version,
 * loads the image from the command line and compares its digest, and
 * prints a line; only then does the supervisor exec it. Its worker keeps
 * serving through the exec (the new image is still its parent, and an
 * exec is no parent death), while the new image loads the image again;
 * the new supervisor then kills it and forks its own, which replays INIT
 * as after a crash. The new image never looks at the mount point (nobody
 * might serve it): libfuse is given /dev/fd/N, and so does not know what
 * to unmount; fs_resume_unmount() does. What can still lose the mount:
 * the new image failing between the probe and its first worker (it then
 * unmounts, logged), or answering INIT differently (as above).
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
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "resume.h"

#ifndef STRATA_FUSERMOUNT
#define STRATA_FUSERMOUNT "/usr/bin/fusermount3"
#endif

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

/* The upgrade handover (struct rs_shared, the environment variables, the
 * probe's answer). A binary with another number is not exec'd. */
#define RS_PROTO 1
#define RS_MAGIC "STRATAFS"
#define RS_PATH 4096
#define RS_ENV_STATE "STRATAFS_RESUME_STATE"
#define RS_ENV_PROBE "STRATAFS_RESUME_PROBE"
/* A probe of a new binary (it loads the image) that says nothing in this
 * long is not it. */
#define RS_PROBE_SECONDS 120

struct rs_slot {
	_Atomic uint32_t len;		/* 0: free */
	uint32_t pad;
	uint64_t unique;
	unsigned char req[RS_REQ_MAX];
};

/* Shared by the supervisor and its workers (a memfd mapped MAP_SHARED,
 * inherited by fork), and handed to the binary of an upgrade (exec). Its
 * layout is the handover protocol: RS_PROTO changes with it. */
struct rs_shared {
	char magic[8];			/* RS_MAGIC */
	uint32_t proto;			/* RS_PROTO */
	uint32_t n_slots;
	uint64_t size;			/* of the memfd */
	int32_t fuse_fd;		/* /dev/fuse: kept across exec */
	int32_t worker;			/* serving through an exec */
	int32_t exe_fd;			/* the binary exec'd (a script's) */
	int32_t pad0;
	uint32_t argc;			/* the mount's command line: */
	uint32_t args_off;		/* argv strings, one after another */
	char libfuse[32];		/* fuse_pkgversion(): same INIT answer */
	char exe[RS_PATH];		/* installed binary: what upgrades */
	char cwd[RS_PATH];		/* where the command line was given */
	char mountpoint[RS_PATH];	/* absolute */
	char manifest[STRATA_DIGEST_MAX];	/* the image mounted */
	_Atomic uint32_t init_len;	/* INIT answered and recorded: */
	uint32_t init_out_len;
	_Atomic uint32_t resumable;
	uint32_t pad;
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

static volatile sig_atomic_t restart_asked, upgrade_asked;

/* The kernel queues a dead worker's requests again (kernel_resends()):
 * no copy of each request is kept. */
static _Atomic bool skip_copy;

static void handover_signals(int how);

static int state_fd = -1;		/* the memfd mapped at sh */
static int started_as = FS_RESUME_NONE;
/* the command line, binary and directory this process started with */
static int start_argc;
static char **start_argv;
static char start_exe[RS_PATH], start_cwd[RS_PATH];

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
	if (n < sizeof(*in) || n > RS_REQ_MAX || skip_copy)
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
		skip_copy = ask_resend(fd);
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
		skip_copy = atomic_load(&sh->init_len) && kernel_resends();
		pthread_mutex_unlock(&mu);
	}
	/* answered (or the kernel no longer waits): forget the request */
	if (cur_slot && sh->slot[cur_slot - 1].unique == out->unique) {
		clear_slot(cur_slot);
		cur_slot = 0;
	} else if (out->unique && !skip_copy) {
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
	signal(SIGUSR2, SIG_DFL);
	handover_signals(SIG_UNBLOCK);
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

static void on_usr2(int sig)
{
	(void)sig;
	upgrade_asked = 1;
}

/* The signals that must find a handler: blocked across an exec, until
 * the new image has its handlers again (their default is to end it). */
static void handover_signals(int how)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(how, &set, NULL);
}

int fs_resume_start(int *argc, char ***argv)
{
	const char *v = getenv(RS_ENV_STATE);
	int kind = FS_RESUME_UPGRADE, fd;
	struct stat st;
	struct rs_shared *m;
	char **av, *p, *end;
	uint32_t i, proto;

	if (!v) {
		v = getenv(RS_ENV_PROBE);
		kind = FS_RESUME_PROBE;
	}
	if (!v) {
		/* resolved now: once replaced, /proc/self/exe says
		 * "(deleted)" */
		ssize_t n = readlink("/proc/self/exe", start_exe,
				     sizeof(start_exe) - 1);

		start_exe[n > 0 ? n : 0] = '\0';
		if (!getcwd(start_cwd, sizeof(start_cwd)))
			start_cwd[0] = '\0';
		start_argc = *argc;
		start_argv = *argv;
		return FS_RESUME_NONE;
	}
	fd = atoi(v);
	unsetenv(RS_ENV_STATE);
	unsetenv(RS_ENV_PROBE);
	if (kind == FS_RESUME_UPGRADE)
		strata_log_set_syslog(true);	/* a daemon until told */
	if (fd < 3 || fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(*m))
		goto bad;
	m = mmap(NULL, (size_t)st.st_size, kind == FS_RESUME_PROBE ? PROT_READ
		 : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		goto bad;
	if (memcmp(m->magic, RS_MAGIC, sizeof(m->magic)) ||
	    m->size != (uint64_t)st.st_size)
		goto bad;
	/* STRATAFS_RESUME_PROTO: the tests' binary of another protocol */
	proto = getenv("STRATAFS_RESUME_PROTO") ?
		(uint32_t)atoi(getenv("STRATAFS_RESUME_PROTO")) : RS_PROTO;
	if (m->proto != proto) {
		strata_warn("cannot take the mount over: its handover protocol "
			    "is %u, this stratafs speaks %u", m->proto, proto);
		return -EPROTO;
	}
	if (strnlen(m->libfuse, sizeof(m->libfuse)) == sizeof(m->libfuse) ||
	    strcmp(m->libfuse, fuse_pkgversion())) {
		strata_warn("cannot take the mount over: it runs on libfuse "
			    "%.31s, this stratafs on %s (its INIT answer may "
			    "differ)", m->libfuse, fuse_pkgversion());
		return -EPROTO;
	}
	if (strnlen(m->exe, RS_PATH) == RS_PATH ||
	    strnlen(m->cwd, RS_PATH) == RS_PATH ||
	    strnlen(m->mountpoint, RS_PATH) == RS_PATH ||
	    strnlen(m->manifest, sizeof(m->manifest)) == sizeof(m->manifest) ||
	    m->args_off > m->size || m->argc > 100000 ||
	    m->args_off < sizeof(*m) + m->n_slots * sizeof(struct rs_slot) ||
	    ((char *)m)[m->size - 1])
		goto bad;
	av = calloc(m->argc + 1, sizeof(*av));
	if (!av)
		return -ENOMEM;
	p = (char *)m + m->args_off;
	end = (char *)m + m->size;
	for (i = 0; i < m->argc; i++) {
		if (p >= end)
			goto bad;
		av[i] = p;
		p += strlen(p) + 1;
	}
	if (m->cwd[0] && chdir(m->cwd) < 0) {
		strata_warn("cannot take the mount over: directory %s: %s",
			    m->cwd, strerror(errno));
		return -errno;
	}
	sh = m;
	started_as = kind;
	if (m->exe_fd > 2 && m->exe_fd != fd)
		close(m->exe_fd);
	if (kind == FS_RESUME_UPGRADE) {
		m->exe_fd = -1;
		state_fd = fd;
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		/* the exec named it after /dev/fd/N */
		prctl(PR_SET_NAME, "stratafs");
	}
	start_argc = *argc = (int)m->argc;
	start_argv = *argv = av;	/* kept: the session's args point in */
	return kind;
bad:
	strata_warn("cannot take the mount over: the handover state (%s=%s) "
		    "is not one", kind == FS_RESUME_PROBE ? RS_ENV_PROBE
		    : RS_ENV_STATE, v);
	return -EPROTO;
}

const char *fs_resume_mountpoint(void)
{
	return started_as == FS_RESUME_NONE ? NULL : sh->mountpoint;
}

bool fs_resume_same_image(const char *manifest)
{
	if (started_as == FS_RESUME_NONE || !strcmp(sh->manifest, manifest))
		return true;
	strata_warn("%s: cannot take the mount over: its reference now names "
		    "image %s, the mount shows %s", sh->mountpoint, manifest,
		    sh->manifest);
	return false;
}

void fs_resume_probe_ok(void)
{
	printf("stratafs-resume %d ok\n", RS_PROTO);
	fflush(stdout);
}

/* The environment with NAME=@fd added (for an exec). */
static char **env_with(const char *name, int fd)
{
	extern char **environ;
	static char var[64];
	size_t n = 0, k = 0, len = strlen(name);
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 2, sizeof(*env));
	if (!env)
		return NULL;
	for (n = 0; environ[n]; n++)
		if (strncmp(environ[n], name, len) || environ[n][len] != '=')
			env[k++] = environ[n];
	snprintf(var, sizeof(var), "%s=%d", name, fd);
	env[k] = var;
	return env;
}

/* The command line recorded in sh. */
static char **state_argv(void)
{
	char **av = calloc(sh->argc + 1, sizeof(*av)), *p;
	uint32_t i;

	if (!av)
		return NULL;
	p = (char *)sh + sh->args_off;
	for (i = 0; i < sh->argc; i++) {
		av[i] = p;
		p += strlen(p) + 1;
	}
	return av;
}

/* Why the file or directory @st, at @path on the way to the binary,
 * may not choose what this process runs, or NULL. It must be root's or
 * this user's (the one stratafs runs as: root's binary, or the user's
 * own) and writable by its owner alone: else another user can replace
 * it, or rename something else in its place, and run code in this
 * daemon. A directory @above the binary's own may be writable by all
 * when sticky, as /tmp is: others cannot rename there what is not
 * theirs, and the next one down is checked in turn. */
static const char *untrusted(const struct stat *st, const char *path,
			     bool above, char *buf, size_t len)
{
	uid_t me = geteuid();
	const char *what = S_ISDIR(st->st_mode) ? "directory " : "";

	if (st->st_uid != 0 && st->st_uid != me)
		snprintf(buf, len, "%s%s is owned by uid %u, not by root%s",
			 what, path, (unsigned)st->st_uid,
			 me ? " or this user" : "");
	else if ((st->st_mode & (S_IWGRP | S_IWOTH)) &&
		 !(above && (st->st_mode & S_ISVTX)))
		snprintf(buf, len, "%s%s is writable by %s", what, path,
			 st->st_mode & S_IWOTH ? "others" : "its group");
	else
		return NULL;
	return buf;
}

/* The installed binary, opened for an upgrade if it may run as the
 * supervisor: each directory from / down, then the file, opened below
 * the one before (no path looked up twice, no symbolic link followed)
 * and judged by untrusted(). Return: its fd, or -1 (said why). */
static int upgrade_binary(void)
{
	char path[RS_PATH], why_buf[RS_PATH + 128];
	const char *why = NULL;
	struct stat st;
	char *name, *next;
	int dfd, fd = -1;

	if (sh->exe[0] != '/') {
		strata_warn("%s: not upgrading: where stratafs was installed "
			    "is not known", sh->mountpoint);
		return -1;
	}
	snprintf(path, sizeof(path), "%s", sh->exe);
	dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &st) < 0)
		why = strerror(errno);
	else
		why = untrusted(&st, "/", strchr(path + 1, '/'), why_buf,
				sizeof(why_buf));
	name = path + 1;
	while (!why && (next = strchr(name, '/'))) {
		int sub;

		*next = '\0';
		sub = openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW |
			     O_CLOEXEC);
		if (sub < 0 || fstat(sub, &st) < 0)
			why = strerror(errno);
		else
			why = untrusted(&st, path, strchr(next + 1, '/'),
					why_buf, sizeof(why_buf));
		*next = '/';
		close(dfd);
		dfd = sub;
		name = next + 1;
	}
	if (!why) {
		fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || fstat(fd, &st) < 0)
			why = strerror(errno);
		else if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR))
			why = "not an executable regular file";
		else
			why = untrusted(&st, path, false, why_buf,
					sizeof(why_buf));
	}
	if (dfd >= 0)
		close(dfd);
	if (!why)
		return fd;
	strata_warn("%s: not upgrading to %s: %s; serving on", sh->mountpoint,
		    sh->exe, why);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Run binary @bin as a probe of the handover: it reads the state, loads
 * the image, and says it can take the mount over. Return: it said so. */
static bool upgrade_probe(int bin, char **argv)
{
	char out[1024], want[64], junk[256], **env;
	size_t n = 0;
	time_t deadline = time(NULL) + RS_PROBE_SECONDS;
	int p[2], ws = 0, wl;
	bool timed_out = false;
	pid_t pid;

	env = env_with(RS_ENV_PROBE, state_fd);
	if (!env || pipe2(p, O_CLOEXEC) < 0) {
		free(env);
		return false;
	}
	pid = fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(p[1], 1);
		dup2(p[1], 2);
		if (nul >= 0)
			dup2(nul, 0);
		fcntl(state_fd, F_SETFD, 0);
		fcntl(bin, F_SETFD, 0);	/* a script's interpreter opens it */
		fexecve(bin, argv, env);
		_exit(127);
	}
	free(env);
	close(p[1]);
	while (pid > 0) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		long left = (long)(deadline - time(NULL));
		ssize_t k;

		if (left <= 0) {
			kill(pid, SIGKILL);
			timed_out = true;
			break;
		}
		if (poll(&pf, 1, (int)left * 1000) <= 0)
			continue;	/* a signal, or time to check */
		if (n < sizeof(out) - 1)
			k = read(p[0], out + n, sizeof(out) - 1 - n);
		else
			k = read(p[0], junk, sizeof(junk));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		if (n < sizeof(out) - 1)
			n += (size_t)k;
	}
	close(p[0]);
	while (pid > 0 && waitpid(pid, &ws, 0) < 0 && errno == EINTR)
		;
	out[n] = '\0';
	wl = snprintf(want, sizeof(want), "stratafs-resume %d ok\n", RS_PROTO);
	if (pid > 0 && !timed_out && WIFEXITED(ws) && !WEXITSTATUS(ws) &&
	    n >= (size_t)wl && !strcmp(out + n - wl, want))
		return true;
	/* its last line says why */
	while (n && out[n - 1] == '\n')
		out[--n] = '\0';
	strata_warn("%s: not upgrading to %s: %s (status %d)%s%s; serving on",
		    sh->mountpoint, sh->exe,
		    pid < 0 ? "cannot fork" : timed_out ? "it said nothing in "
		    "time" : "it cannot take the mount over", ws,
		    n ? ": " : "", strrchr(out, '\n') ? strrchr(out, '\n') + 1
		    : out);
	return false;
}

/* Become the binary @bin, its state in the memfd; worker @worker serves
 * on until the new image replaces it. Returns only if the exec failed. */
static void upgrade_exec(int bin, pid_t worker, char **argv)
{
	char **env = env_with(RS_ENV_STATE, state_fd);

	if (!env)
		return;
	sh->worker = worker;
	sh->exe_fd = bin;
	handover_signals(SIG_BLOCK);
	/* nothing else of this image goes to the next */
	close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	fcntl(state_fd, F_SETFD, 0);
	fcntl(sh->fuse_fd, F_SETFD, 0);
	fcntl(bin, F_SETFD, 0);
	fexecve(bin, argv, env);
	strata_warn("%s: not upgrading to %s: %s; serving on", sh->mountpoint,
		    sh->exe, strerror(errno));
	fcntl(state_fd, F_SETFD, FD_CLOEXEC);
	fcntl(sh->fuse_fd, F_SETFD, FD_CLOEXEC);
	handover_signals(SIG_UNBLOCK);
	sh->worker = 0;
	sh->exe_fd = -1;
	free(env);
}

/* SIGUSR2: run the binary installed where this one was, if it may and
 * can take the mount over; else keep serving with worker @pid. */
static void upgrade(pid_t pid)
{
	char **argv = state_argv();
	int bin = argv ? upgrade_binary() : -1;

	if (bin >= 0 && upgrade_probe(bin, argv))
		upgrade_exec(bin, pid, argv);
	if (bin >= 0)
		close(bin);
	free(argv);
}

/* Wait for worker @pid; forward the end of the session (a signal to the
 * supervisor) and restart and upgrade requests (*@asked_kill: it was
 * killed as asked). Return: its wait status. */
static int wait_worker(struct fuse_session *se, pid_t pid, bool *asked_end,
		       bool *asked_kill)
{
	int ws;

	for (;;) {
		/* the end may have been asked while no worker ran */
		if (fuse_session_exited(se) && !*asked_end) {
			kill(pid, SIGTERM);
			*asked_end = true;
		}
		if (upgrade_asked && !*asked_end) {
			upgrade_asked = 0;
			upgrade(pid);
		}
		if (restart_asked) {
			restart_asked = 0;
			*asked_kill = kill(pid, SIGKILL) == 0;
		}
		if (waitpid(pid, &ws, 0) == pid)
			return ws;
		if (errno != EINTR)
			return 0;
	}
}

/* The state shared with workers and handed to an upgrade, for a mount
 * of @o on session @se: in a memfd mapped at sh. Return: 0 or -errno. */
static int state_new(struct fuse_session *se, const struct fs_resume_opts *o,
		     uint32_t n_slots)
{
	size_t args = 0, size, off;
	int i;

	for (i = 0; i < start_argc; i++)
		args += strlen(start_argv[i]) + 1;
	off = sizeof(*sh) + n_slots * sizeof(struct rs_slot);
	size = off + args + 1;
	state_fd = memfd_create("stratafs-resume", MFD_CLOEXEC);
	if (state_fd < 0)
		return -errno;
	if (ftruncate(state_fd, (off_t)size) < 0)
		goto fail;
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, state_fd, 0);
	if (sh == MAP_FAILED) {
		sh = NULL;
		goto fail;
	}
	memcpy(sh->magic, RS_MAGIC, sizeof(sh->magic));
	sh->proto = RS_PROTO;
	sh->n_slots = n_slots;
	sh->size = size;
	sh->fuse_fd = fuse_session_fd(se);
	sh->exe_fd = -1;
	sh->argc = (uint32_t)start_argc;
	sh->args_off = (uint32_t)off;
	for (i = 0; i < start_argc; i++) {
		size_t l = strlen(start_argv[i]) + 1;

		memcpy((char *)sh + off, start_argv[i], l);
		off += l;
	}
	snprintf(sh->libfuse, sizeof(sh->libfuse), "%s", fuse_pkgversion());
	snprintf(sh->exe, sizeof(sh->exe), "%s", start_exe);
	snprintf(sh->cwd, sizeof(sh->cwd), "%s", start_cwd);
	snprintf(sh->mountpoint, sizeof(sh->mountpoint), "%s", o->mountpoint);
	snprintf(sh->manifest, sizeof(sh->manifest), "%s", o->manifest);
	return 0;
fail:
	i = -errno;
	close(state_fd);
	state_fd = -1;
	return i;
}

/* End the worker of the supervisor this image replaced (it served
 * through the exec): ours serves from now on, or nobody. */
static void end_old_worker(void)
{
	pid_t old = sh->worker;

	if (old > 0) {
		kill(old, SIGKILL);
		while (waitpid(old, NULL, 0) < 0 && errno == EINTR)
			;
	}
	sh->worker = 0;
}

int fs_resume_supervise(struct fuse_session *se,
			const struct fs_resume_opts *o, int *status)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	struct sigaction sa2 = { .sa_handler = on_usr2 };
	/* each thread's own, and as many of a dead worker's */
	uint32_t n_slots = 2 * (o->max_threads ? o->max_threads : 1) + 4;
	time_t deaths[RS_BURST] = { 0 };
	unsigned restarts = 0;
	bool asked_end = false;
	int r;

	if (n_slots > 1024)
		n_slots = 1024;	/* more threads than that: some not kept */
	if (started_as == FS_RESUME_UPGRADE) {
		end_old_worker();
		strata_warn("%s: upgraded to %s; serving on", sh->mountpoint,
			    sh->exe);
	} else {
		r = state_new(se, o, n_slots);
		if (r < 0)
			return r;
	}
	resumable_cb = o->resumable;
	resumable_arg = o->arg;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa2, NULL);
	handover_signals(SIG_UNBLOCK);
	for (;;) {
		pid_t self = getpid(), pid = fork();
		bool asked_kill = false;
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
		ws = wait_worker(se, pid, &asked_end, &asked_kill);
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
		restarts++;
		/* a restart asked for (SIGUSR1) is no crash: not counted */
		if (asked_kill && WTERMSIG(ws) == SIGKILL) {
			strata_warn("worker %d replaced as asked (restart %u)",
				    (int)pid, restarts);
			continue;
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
		strata_warn("worker %d killed by signal %d; serving on from a "
			    "new one (restart %u)", (int)pid, WTERMSIG(ws),
			    restarts);
	}
}

void fs_resume_unmount(struct fuse_session *se)
{
	static bool done;
	int fd, nul;
	struct pollfd pf;
	bool gone;
	pid_t pid;

	if (started_as != FS_RESUME_UPGRADE) {
		if (se)
			fuse_session_unmount(se);
		return;
	}
	if (done)
		return;
	done = true;
	end_old_worker();	/* failed before serving: it ends too */
	fd = sh->fuse_fd;
	pf = (struct pollfd){ .fd = fd };
	/* the session was given its descriptor, not a mount point, so
	 * libfuse does not unmount: as it would. The connection aborts
	 * first (no lookup below can wait on this process), the number
	 * stays taken for the session's own close. */
	gone = poll(&pf, 1, 0) == 1 && (pf.revents & POLLERR);
	nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nul >= 0) {
		dup2(nul, fd);
		close(nul);
	}
	if (gone || umount2(sh->mountpoint, MNT_DETACH) == 0)
		return;
	pid = fork();
	if (pid == 0) {
		char *av[] = { "fusermount3", "-u", "-q", "-z", "--",
			       sh->mountpoint, NULL };

		/* as libfuse does: its own, then $PATH's */
		execv(STRATA_FUSERMOUNT, av);
		execvp("fusermount3", av);
		_exit(127);
	}
	while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

int fs_resume_fuse_fd(void)
{
	return started_as == FS_RESUME_NONE ? -1 : sh->fuse_fd;
}
