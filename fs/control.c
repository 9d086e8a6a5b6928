/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket of a writable mount: see control.h for where it lives
 * and who may talk to it.
 *
 * The name was once only abstract, and any local user could bind it before
 * the daemon: root's `strata commit` then packed whatever upper directory
 * the squatter named. So the daemon binds in a directory only its user can
 * write, checked on the fd it then binds through (the path is not looked up
 * twice), and the mount fails when it cannot; the client checks the peer's
 * credentials against the mount's owner in any case.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "fs.h"
#include "store.h"
#include "wfs.h"

static struct {
	struct wfs *w;
	int fd;
	int dirfd;		/* the socket's directory, -1: abstract */
	char dir[4096];		/* its path, for messages */
	char name[65];		/* sha256 hex of the mountpoint */
	ino_t ino;		/* the socket bound there */
	int stop[2];		/* a pipe: written to stop the thread */
	pthread_t thread;
	char *info;		/* the JSON line */
	bool running;
	struct control_info ci;	/* strings owned below */
	char *mountpoint, *ref, *manifest, *store, *upper, *work;
} ctl = { .fd = -1, .dirfd = -1, .stop = { -1, -1 } };

static void say(int fd, const char *s);

/* Wait until @fd is readable. Return: false once fs_control_stop asks the
 * thread to end (a pipe, not pthread_cancel: a thread unwound in accept or
 * read leaves no lock held and nothing half torn down). */
static bool wait_readable(int fd)
{
	struct pollfd p[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = ctl.stop[0], .events = POLLIN },
	};

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (p[1].revents)
			return false;
		if (p[0].revents)
			return true;
	}
}

static int make_info(void)
{
	json_object *o = json_object_new_object();
	char *s;

	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "mountpoint",
			       json_object_new_string(ctl.mountpoint));
	json_object_object_add(o, "ref", json_object_new_string(ctl.ref));
	json_object_object_add(o, "manifest",
			       json_object_new_string(ctl.manifest));
	json_object_object_add(o, "store", json_object_new_string(ctl.store));
	json_object_object_add(o, "upper", json_object_new_string(ctl.upper));
	json_object_object_add(o, "work", json_object_new_string(ctl.work));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	if (!s)
		return -ENOMEM;
	free(ctl.info);
	ctl.info = s;
	return 0;
}

static void do_continue(int c, const char *ref)
{
	struct strata_err err = { 0 };
	char *manifest = NULL, *nref, *nman, msg[1200];
	int r;

	if (!ctl.ci.st) {
		say(c, "error: this mount has no image store\n");
		return;
	}
	r = fs_continue(ctl.w, ctl.ci.st, ctl.ci.like, ref, &manifest, &err);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "error: %s\n",
			 err.code ? err.msg : strerror(-r));
		say(c, msg);
		return;
	}
	nref = strdup(ref);
	nman = strdup(manifest);
	if (nref && nman) {
		free(ctl.ref);
		free(ctl.manifest);
		ctl.ref = nref;
		ctl.manifest = nman;
		make_info();
	} else {
		free(nref);
		free(nman);
	}
	say(c, "ok\n");
}

/* One line into @buf (NUL-terminated, newline dropped). A line longer than
 * @buf is read to its end and refused. Return: its length, -E2BIG, or -EIO
 * at the end of the connection. */
static int read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;
	bool over = false;

	for (;;) {
		char ch;
		ssize_t k = wait_readable(fd) ? read(fd, &ch, 1) : -1;

		if (k <= 0)
			return -EIO;
		if (ch == '\n')
			break;
		if (n + 1 < size)
			buf[n++] = ch;
		else
			over = true;
	}
	buf[n] = '\0';
	return over ? -E2BIG : (int)n;
}

static void say(int fd, const char *s)
{
	size_t n = strlen(s);

	while (n) {
		ssize_t k = write(fd, s, n);

		if (k <= 0)
			return;
		s += k;
		n -= (size_t)k;
	}
}

static void serve(int c)
{
	struct control_request req;
	char line[4200];
	bool frozen = false;
	int n;

	while ((n = read_line(c, line, sizeof(line))) != -EIO) {
		if (n < 0 || fs_control_parse(line, (size_t)n, &req) < 0) {
			say(c, "error: unknown request\n");
			continue;
		}
		switch (req.action) {
		case CONTROL_CONTINUE:
			/* req.arg runs to line's NUL */
			if (frozen)
				do_continue(c, req.arg);
			else
				say(c, "error: continue needs freeze first\n");
			break;
		case CONTROL_INFO:
			say(c, ctl.info);
			say(c, "\n");
			break;
		case CONTROL_FREEZE:
			if (frozen) {
				say(c, "error: already frozen\n");
				break;
			}
			pthread_rwlock_wrlock(&ctl.w->freeze);
			frozen = true;
			say(c, "ok\n");
			break;
		case CONTROL_THAW:
			if (!frozen) {
				say(c, "error: not frozen\n");
				break;
			}
			pthread_rwlock_unlock(&ctl.w->freeze);
			frozen = false;
			say(c, "ok\n");
			break;
		}
	}
	if (frozen)	/* the client went away: never stay frozen */
		pthread_rwlock_unlock(&ctl.w->freeze);
}

static void *control_thread(void *arg)
{
	(void)arg;
	for (;;) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		int c;

		if (!wait_readable(ctl.fd))
			break;
		c = accept4(ctl.fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED ||
			    errno == EAGAIN)
				continue;
			break;
		}
		if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
		    (cred.uid == 0 || cred.uid == geteuid()))
			serve(c);
		close(c);
	}
	return NULL;
}

/*
 * Open (making it 0700 if missing) the directory @name under @parentfd and
 * check that it is ours: not a symlink, owned by our user, not writable by
 * group or others. Return: its fd, or negative errno with @err set.
 */
static int own_dir(int parentfd, const char *name, struct strata_err *err)
{
	uid_t uid = geteuid();
	struct stat st;
	int fd;

	if (mkdirat(parentfd, name, 0700) < 0 && errno != EEXIST)
		return strata_err_set(err, -errno, "control socket directory "
				      "%s: cannot create it: %s", ctl.dir,
				      strerror(errno));
	fd = openat(parentfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return strata_err_set(err, -errno, "control socket directory "
				      "%s: %s; remove it (stratafs makes it "
				      "itself)", ctl.dir,
				      errno == ELOOP || errno == ENOTDIR
				      ? "a symlink or not a directory"
				      : strerror(errno));
	if (fstat(fd, &st) < 0) {
		close(fd);
		return strata_err_set(err, -errno, "control socket directory "
				      "%s: %s", ctl.dir, strerror(errno));
	}
	if (st.st_uid != uid) {
		close(fd);
		return strata_err_set(err, -EPERM, "control socket directory "
				      "%s: owned by uid %u, not by uid %u; "
				      "remove it", ctl.dir,
				      (unsigned)st.st_uid, (unsigned)uid);
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		close(fd);
		return strata_err_set(err, -EPERM, "control socket directory "
				      "%s: writable by group or others (mode "
				      "%04o); chmod 0700 %s", ctl.dir,
				      (unsigned)(st.st_mode & 07777), ctl.dir);
	}
	return fd;
}

/*
 * The socket's directory into ctl.dirfd: /run/stratafs for root,
 * $XDG_RUNTIME_DIR/stratafs for others. Return: 0 (ctl.dirfd stays -1
 * when there is no such place: the abstract name then), or negative errno
 * with @err set.
 */
static int open_sock_dir(struct strata_err *err)
{
	bool root = geteuid() == 0;
	const char *base = root ? "/run" : getenv("XDG_RUNTIME_DIR");
	struct stat st;
	int bfd, fd;

	if (!base || base[0] != '/')
		return 0;
	snprintf(ctl.dir, sizeof(ctl.dir), "%s", root
		 ? STRATAFS_CONTROL_ROOT_DIR : base);
	if (!root && strlen(ctl.dir) + 1 + strlen(STRATAFS_CONTROL_USER_DIR) <
	    sizeof(ctl.dir))
		strcat(strcat(ctl.dir, "/"), STRATAFS_CONTROL_USER_DIR);
	bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd < 0 && errno == ENOENT)
		return 0;
	if (bfd < 0)
		return strata_err_set(err, -errno, "control socket directory "
				      "%s: %s: %s", ctl.dir, base,
				      strerror(errno));
	/* $XDG_RUNTIME_DIR is the user's own (pam_systemd makes it 0700) */
	if (fstat(bfd, &st) < 0 || (!root && (st.st_uid != geteuid() ||
	    (st.st_mode & (S_IWGRP | S_IWOTH))))) {
		close(bfd);
		return strata_err_set(err, -EPERM, "control socket directory "
				      "%s: $XDG_RUNTIME_DIR %s is not yours "
				      "alone", ctl.dir, base);
	}
	fd = own_dir(bfd, root ? "stratafs" : STRATAFS_CONTROL_USER_DIR, err);
	close(bfd);
	if (fd < 0)
		return fd;
	ctl.dirfd = fd;
	return 0;
}

/* Remove a dead daemon's socket of our name; refuse a live one. */
static int clear_stale(const char *path, const char *mountpoint,
		       struct strata_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (fstatat(ctl.dirfd, ctl.name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : strata_err_set(err, -errno,
			"control socket %s/%s of %s: %s", ctl.dir, ctl.name,
			mountpoint, strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return strata_err_set(err, -EEXIST, "control socket %s/%s of "
				      "%s: not a socket; remove it", ctl.dir,
				      ctl.name, mountpoint);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return strata_err_set(err, -errno, "control socket of %s: %s",
				      mountpoint, strerror(errno));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (r == 0)
		return strata_err_set(err, -EADDRINUSE, "control socket %s/%s "
				      "of %s: another stratafs is serving it",
				      ctl.dir, ctl.name, mountpoint);
	if (unlinkat(ctl.dirfd, ctl.name, 0) < 0 && errno != ENOENT)
		return strata_err_set(err, -errno, "control socket %s/%s of "
				      "%s: cannot remove the stale one: %s",
				      ctl.dir, ctl.name, mountpoint,
				      strerror(errno));
	return 0;
}

int fs_control_bind(const char *mountpoint, struct strata_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char digest[STRATA_DIGEST_MAX];
	socklen_t len = sizeof(sa);
	struct stat st;
	int r;

	strata_sha256(mountpoint, strlen(mountpoint), digest);
	snprintf(ctl.name, sizeof(ctl.name), "%.64s",
		 digest + strlen("sha256:"));
	r = open_sock_dir(err);
	if (r < 0)
		return r;
	if (ctl.dirfd >= 0) {
		/* through the checked fd: the path is not looked up again */
		snprintf(sa.sun_path, sizeof(sa.sun_path),
			 "/proc/self/fd/%d/%s", ctl.dirfd, ctl.name);
		r = clear_stale(sa.sun_path, mountpoint, err);
		if (r < 0)
			return r;
	} else {
		/* abstract name: sun_path[0] = '\0' */
		snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "%s%s",
			 STRATAFS_CONTROL_PREFIX, ctl.name);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				  strlen(sa.sun_path + 1));
	}
	ctl.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl.fd < 0)
		return strata_err_set(err, -errno, "control socket of %s: %s",
				      mountpoint, strerror(errno));
	if (bind(ctl.fd, (struct sockaddr *)&sa, len) < 0 ||
	    listen(ctl.fd, 4) < 0) {
		r = -errno;
		close(ctl.fd);
		ctl.fd = -1;
		if (ctl.dirfd >= 0)
			return strata_err_set(err, r, "control socket %s/%s of "
					      "%s: %s", ctl.dir, ctl.name,
					      mountpoint, strerror(-r));
		return strata_err_set(err, r, "control socket of %s: abstract "
				      "name @%s%s: %s%s", mountpoint,
				      STRATAFS_CONTROL_PREFIX, ctl.name,
				      strerror(-r), r == -EADDRINUSE
				      ? " (another process holds it; set "
				      "XDG_RUNTIME_DIR to a directory of your "
				      "own)" : "");
	}
	if (ctl.dirfd >= 0 &&
	    fstatat(ctl.dirfd, ctl.name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		ctl.ino = st.st_ino;
	return 0;
}

int fs_control_start(struct wfs *w, const struct control_info *info)
{
	int r;

	if (ctl.fd < 0)
		return -EBADF;
	/* the peer credentials a client reads (SO_PEERCRED) are the
	 * listener's as of its last listen(): now the daemonized process,
	 * the pid the info line names */
	if (listen(ctl.fd, 4) < 0)
		return -errno;
	ctl.ci = *info;
	ctl.mountpoint = strdup(info->mountpoint);
	ctl.ref = strdup(info->ref);
	ctl.manifest = strdup(info->manifest);
	ctl.store = strdup(info->store);
	ctl.upper = strdup(info->upper);
	ctl.work = strdup(info->work);
	if (!ctl.mountpoint || !ctl.ref || !ctl.manifest || !ctl.store ||
	    !ctl.upper || !ctl.work || make_info() < 0)
		return -ENOMEM;
	ctl.w = w;
	if (pipe2(ctl.stop, O_CLOEXEC) < 0)
		return -errno;
	r = pthread_create(&ctl.thread, NULL, control_thread, NULL);
	if (r)
		return -r;
	ctl.running = true;
	return 0;
}

void fs_control_stop(void)
{
	struct stat st;

	/* only the socket we bound: a later daemon may have replaced it */
	if (ctl.dirfd >= 0 && ctl.ino &&
	    fstatat(ctl.dirfd, ctl.name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISSOCK(st.st_mode) && st.st_ino == ctl.ino)
		unlinkat(ctl.dirfd, ctl.name, 0);
	if (ctl.dirfd >= 0)
		close(ctl.dirfd);
	ctl.dirfd = -1;
	if (ctl.running) {
		if (write(ctl.stop[1], "", 1) < 0)
			pthread_cancel(ctl.thread);
		pthread_join(ctl.thread, NULL);
		ctl.running = false;
	}
	for (int i = 0; i < 2; i++) {
		if (ctl.stop[i] >= 0)
			close(ctl.stop[i]);
		ctl.stop[i] = -1;
	}
	if (ctl.fd >= 0)
		close(ctl.fd);
	ctl.fd = -1;
	free(ctl.info);
	free(ctl.mountpoint);
	free(ctl.ref);
	free(ctl.manifest);
	free(ctl.store);
	free(ctl.upper);
	free(ctl.work);
	ctl.info = ctl.mountpoint = ctl.ref = ctl.manifest = NULL;
	ctl.store = ctl.upper = ctl.work = NULL;
}
