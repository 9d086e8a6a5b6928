/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which mount, and which image, an upper directory belongs to.
 *
 * One mount at a time. Two mounts writing one upper directory would each
 * keep in memory what the other changes behind it, and the start of one
 * empties the work directory under the other's copy-ups; the kernel
 * overlay likewise refuses an upper or work directory that another
 * overlay mount uses ("upperdir is in-use by another mount"). So a
 * writable mount holds an flock(2) on its upper directory and on WORK/work
 * for as long as it runs:
 *  - taken in wfs_init, before anything is changed in either directory
 *    and before mounting, so that a refusal reaches the terminal;
 *  - on the fds wfs_init opened with O_NOFOLLOW: the lock is on the
 *    directory itself, never on a file that a symlink planted in its
 *    place points to (WORK/work is the daemon's own, mode 0700);
 *  - shared with the background daemon across fuse_daemonize's fork (an
 *    flock belongs to the open file description, and the parent only
 *    _exit()s), given up when the session loop ends, and dropped by the
 *    kernel when the daemon dies: a crash leaves nothing locked.
 * Whoever can open the upper directory can lock it too, and so keep it
 * from being mounted: one more reason to keep it where only its owner
 * can reach it (stratafs(1), TRUST).
 *
 * Who holds it. The holder writes "PID MAJ:MIN MOUNTPOINT" into the
 * xattr {trusted,user}.overlay.strata.mount of both directories (MAJ:MIN
 * is the FUSE mount's device; 0:0 until it is mounted), so a refusal can
 * name the mount. The record only explains a lock, it never is one: it
 * stays when the lock is given up (or the daemon dies), names a dead pid
 * from then on, and is overwritten by the next holder. `fusermount3 -u` returns
 * before the daemon has seen the unmount and exited; when the holder's
 * mount is no longer in /proc/self/mountinfo, a new mount waits for the
 * lock a bounded while instead of failing.
 *
 * Which image. The upper root records in {trusted,user}.overlay.strata.base
 * "MANIFEST-DIGEST REF", the image its changes were made on. A mount of
 * another image is refused unless -o rebase asks for it; an upper
 * directory without a record (new, or made by the kernel overlay or
 * fuse-overlayfs) is recorded at its first image mount; a live commit
 * that goes on from the new image (wfs_continue) records that image.
 * A lowerdir= mount has no image: it neither checks nor records.
 *
 * Both xattrs are in the overlay's namespace: the mount never shows them
 * (wh_private_xattr), a commit never writes them into a layer
 * (commit-layer.c), and the kernel overlay hides them (trusted.overlay.*,
 * or user.overlay.* with its userxattr option). No file is added to the
 * upper directory, so every overlay implementation shows the same tree.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "wfs.h"

#define MARK_MOUNT "overlay.strata.mount"
#define MARK_BASE "overlay.strata.base"
/* how long to wait for the daemon of a mount that is gone to exit:
 * 500 tries, 20 ms apart */
#define GONE_TRIES 500
#define GONE_SLEEP_NS 20000000L

/* Value of xattr NS.@mark of @fd as a string into @buf. Return: its
 * length, or -errno. */
static ssize_t get_mark(int fd, const char *ns, const char *mark, char *buf,
			size_t size)
{
	char name[64];
	ssize_t n;

	snprintf(name, sizeof(name), "%s.%s", ns, mark);
	n = fgetxattr(fd, name, buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}

/* Set @mark of @fd to @value: trusted.* where this process may, else
 * user.*. Return: 0 or -errno. */
static int set_mark(int fd, const char *mark, const char *value)
{
	char name[64];

	snprintf(name, sizeof(name), "trusted.%s", mark);
	if (fsetxattr(fd, name, value, strlen(value), 0) == 0) {
		/* a stale user.* copy would mislead an unprivileged daemon,
		 * which cannot read the trusted.* one */
		snprintf(name, sizeof(name), "user.%s", mark);
		fremovexattr(fd, name);
		return 0;
	}
	snprintf(name, sizeof(name), "user.%s", mark);
	if (fsetxattr(fd, name, value, strlen(value), 0) == 0)
		return 0;
	return -errno;
}

struct holder {
	long pid;
	unsigned int maj, min;		/* 0:0: not mounted yet */
	char mp[PATH_MAX];
};

static bool alive(long pid)
{
	return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static bool parse_holder(const char *s, struct holder *h)
{
	int off = 0;

	if (sscanf(s, "%ld %u:%u %n", &h->pid, &h->maj, &h->min, &off) != 3 ||
	    !off || !s[off])
		return false;
	snprintf(h->mp, sizeof(h->mp), "%s", s + off);
	return true;
}

/* The record of who holds @fd's lock, preferring one of a live process.
 * Return: false when there is none. */
static bool read_holder(int fd, struct holder *h)
{
	static const char *const ns[] = { "trusted", "user" };
	char buf[PATH_MAX + 64];
	bool found = false;
	size_t i;

	for (i = 0; i < 2; i++) {
		struct holder t;

		if (get_mark(fd, ns[i], MARK_MOUNT, buf, sizeof(buf)) < 0 ||
		    !parse_holder(buf, &t))
			continue;
		if (!found || (!alive(h->pid) && alive(t.pid)))
			*h = t;
		found = true;
	}
	return found;
}

static int write_holder(int fd, unsigned int maj, unsigned int min,
			const char *mp)
{
	char buf[PATH_MAX + 64];

	snprintf(buf, sizeof(buf), "%ld %u:%u %s", (long)getpid(), maj, min,
		 mp);
	return set_mark(fd, MARK_MOUNT, buf);
}

/* Field 5 of a mountinfo line, octal escapes undone, into @out. */
static void unescape(const char *s, char *out, size_t size)
{
	size_t n = 0;

	for (; *s && n + 1 < size; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			out[n++] = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
					  (s[3] - '0'));
			s += 3;
		} else {
			out[n++] = *s;
		}
	}
	out[n] = '\0';
}

/*
 * Look through our mount table: with @mp, find the device of the mount at
 * @mp (the last one: the top of a stack) into *maj:*min; without, say
 * whether a mount of device *maj:*min is there.
 */
static bool find_mount(const char *mp, unsigned int *maj, unsigned int *min)
{
	cleanup_file FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192], target[4096], path[4096];
	unsigned int a, b;
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &a, &b,
			   target) != 3)
			continue;
		if (!mp) {
			if (a == *maj && b == *min)
				return true;
			continue;
		}
		unescape(target, path, sizeof(path));
		if (!strcmp(path, mp)) {
			*maj = a;
			*min = b;
			found = true;
		}
	}
	return found;
}

/* Pid of a process holding an flock on @fd's inode, from /proc/locks
 * (the one that took it: for a daemon, maybe its parent). 0: none seen. */
static long lock_owner(int fd)
{
	cleanup_file FILE *f = fopen("/proc/locks", "re");
	char line[256], type[16];
	unsigned int a, b;
	unsigned long long ino;
	struct stat st;
	long pid;

	if (!f || fstat(fd, &st) < 0)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, "->"))
			continue;	/* a waiter */
		if (sscanf(line, "%*s %15s %*s %*s %ld %x:%x:%llu", type, &pid,
			   &a, &b, &ino) == 5 && !strcmp(type, "FLOCK") &&
		    a == major(st.st_dev) && b == minor(st.st_dev) &&
		    ino == (unsigned long long)st.st_ino)
			return pid;
	}
	return 0;
}

static void refuse(int fd, const char *what, const char *path,
		   const struct holder *h, bool gone)
{
	const char *rule = !strcmp(what, "work directory")
		? "a work directory belongs to one mount at a time"
		: "an upper directory belongs to one mount at a time";
	long pid;

	if (h && gone) {
		fprintf(stderr, "stratafs: %s %s is still held by stratafs "
			"pid %ld, whose mount on %s is gone but which has not "
			"exited (are files still open after a lazy unmount?)\n",
			what, path, h->pid, h->mp);
	} else if (h && !h->maj && !h->min) {
		fprintf(stderr, "stratafs: %s %s is in use by stratafs pid "
			"%ld, which is mounting it on %s; %s\n", what, path,
			h->pid, h->mp, rule);
	} else if (h) {
		fprintf(stderr, "stratafs: %s %s is in use by the mount on %s "
			"(stratafs pid %ld); %s: unmount that one first "
			"(fusermount3 -u %s)\n", what, path, h->mp, h->pid,
			rule, h->mp);
	} else {
		char who[64] = "";

		pid = lock_owner(fd);
		if (pid > 0)
			snprintf(who, sizeof(who), " (pid %ld)", pid);
		fprintf(stderr, "stratafs: %s %s is locked by another "
			"process%s; %s\n", what, path, who, rule);
	}
}

/*
 * Take the lock of directory @fd (@what @path in messages) for the mount
 * on @mp, or say who holds it. Return: 0, -EBUSY (said), other -errno.
 */
static int claim_dir(int fd, const char *what, const char *path,
		     const char *mp)
{
	struct timespec pause = { 0, GONE_SLEEP_NS };
	int tries;

	for (tries = 0;; tries++) {
		struct holder h;
		bool known, gone;

		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			/* a file system without flock (some network ones):
			 * no lock, as before there was one */
			strata_warn("cannot lock %s %s (%s): not checking "
				    "that no other mount uses it", what, path,
				    strerror(errno));
			return 0;
		}
		known = read_holder(fd, &h) && alive(h.pid);
		gone = known && (h.maj || h.min) &&
		       !find_mount(NULL, &h.maj, &h.min);
		if (gone && tries < GONE_TRIES) {
			nanosleep(&pause, NULL);
			continue;
		}
		refuse(fd, what, path, known ? &h : NULL, gone);
		return -EBUSY;
	}
	/* not fatal: the record only explains the lock to others */
	write_holder(fd, 0, 0, mp);
	return 0;
}

int wfs_claim_lock(struct wfs *w, int fd, bool upper)
{
	const char *what = upper ? "upper directory" : "work directory";
	const char *path = upper ? w->upper_path : w->work_path;
	int r;

	r = claim_dir(fd, what, path ? path : "?", w->mountpoint);
	if (r == 0 && upper)
		w->locked_upper = true;
	else if (r == 0)
		w->locked_work = true;
	return r;
}

/* The base record of the upper root, read into @buf: *@manifest and
 * *@ref point into it. Return: false when there is none. */
static bool read_base(int fd, char *buf, size_t size, const char **manifest,
		      const char **ref)
{
	static const char *const ns[] = { "trusted", "user" };
	char *sp;
	size_t i;

	for (i = 0; i < 2; i++) {
		if (get_mark(fd, ns[i], MARK_BASE, buf, size) <= 0)
			continue;
		sp = strchr(buf, ' ');
		if (sp)
			*sp++ = '\0';
		*manifest = buf;
		*ref = sp && *sp ? sp : "an image";
		return true;
	}
	return false;
}

int wfs_claim_base(struct wfs *w, bool rebase)
{
	char buf[PATH_MAX + 256];
	const char *manifest, *ref;

	if (!w->base_manifest || w->upperfd < 0)
		return 0;
	if (!read_base(w->upperfd, buf, sizeof(buf), &manifest, &ref)) {
		w->base_write = true;	/* recorded once mounted */
		return 0;
	}
	if (!strcmp(manifest, w->base_manifest))
		return 0;
	if (rebase) {
		fprintf(stderr, "stratafs: upper directory %s: changes made "
			"on %s (%s) laid over %s (%s), as -o rebase asks\n",
			w->upper_path, ref, manifest,
			w->base_ref, w->base_manifest);
		w->base_write = true;
		return 0;
	}
	fprintf(stderr, "stratafs: upper directory %s holds changes made on "
		"%s (%s), not on %s (%s); mount it on that image, or give -o "
		"rebase to lay the changes over this one (stratafs(1), "
		"WRITABLE MOUNTS)\n", w->upper_path, ref,
		manifest, w->base_ref, w->base_manifest);
	return -EEXIST;
}

static void write_base(struct wfs *w)
{
	cleanup_free char *val = NULL;
	int r;

	if (asprintf(&val, "%s %s", w->base_manifest, w->base_ref) < 0)
		return;
	r = set_mark(w->upperfd, MARK_BASE, val);
	if (r < 0)
		strata_warn("upper directory %s: cannot record its image "
			    "(%s): a mount of another image will not be "
			    "refused", w->upper_path, strerror(-r));
}

void wfs_claim_mounted(struct wfs *w)
{
	unsigned int maj = 0, min = 0;

	if (w->base_write && w->base_manifest)
		write_base(w);
	w->base_write = false;
	if (!w->mountpoint || !find_mount(w->mountpoint, &maj, &min))
		maj = min = 0;
	if (w->locked_upper)
		write_holder(w->upperfd, maj, min, w->mountpoint);
	if (w->locked_work)
		write_holder(w->workfd, maj, min, w->mountpoint);
}

int wfs_claim_rebased(struct wfs *w, const char *manifest, const char *ref)
{
	char *m = strdup(manifest), *r = strdup(ref);

	if (!m || !r) {
		free(m);
		free(r);
		return -ENOMEM;
	}
	free(w->base_manifest);
	free(w->base_ref);
	w->base_manifest = m;
	w->base_ref = r;
	write_base(w);
	return 0;
}

/* The records stay: removed before unlocking, a mount waiting for the
 * lock would find it held by no one it knows and give up; removed after,
 * the record of the next holder could go instead. A dead pid's record
 * explains nothing and is overwritten. */
void wfs_claim_release(struct wfs *w)
{
	if (w->locked_work) {
		flock(w->workfd, LOCK_UN);
		w->locked_work = false;
	}
	if (w->locked_upper) {
		flock(w->upperfd, LOCK_UN);
		w->locked_upper = false;
	}
}
