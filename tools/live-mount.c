/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A live stratafs mount, found from its mountpoint for strata commit and
 * strata diff: its image and upper directory, from its control socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "strata.h"

/* "strata CMD: " and the message, on stderr. */
static void complain(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void complain(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "strata %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

void live_mount_free(struct live_mount *m)
{
	if (m->fd >= 0)
		close(m->fd);	/* thaws the mount, if frozen */
	if (m->upper_fd >= 0)
		close(m->upper_fd);
	if (m->store_fd >= 0)
		close(m->store_fd);
	free(m->upper);
	free(m->ref);
	free(m->store);
	free(m->manifest);
	free(m->base);
}

/*
 * Send @s on the control socket. MSG_NOSIGNAL: a daemon that closed the
 * connection (it answers only its owner and root) is an error to report,
 * not a SIGPIPE that kills strata without a word.
 */
int live_mount_say(int fd, const char *s)
{
	size_t n = strlen(s);

	while (n) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

int live_mount_read_reply(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		ssize_t k = read(fd, buf + n, 1);

		if (k <= 0)
			return -EIO;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return 0;
}

static char *json_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return strdup(json_object_get_string(v));
}

/*
 * The image the mount shows, by digest: its tag may have moved since it was
 * mounted (a commit to that tag without --continue moves it, and the mount
 * goes on showing its own image), so REF is never resolved again. An
 * archive has no digest form: its image is checked against the digest
 * instead (strata_commit_opts.from_digest). NULL only without memory.
 */
static char *base_ref(const char *mref, const char *digest)
{
	struct strata_ref *ref = NULL;
	char *out = NULL;
	int r = 0;

	if (strata_ref_parse(mref, &ref, NULL) < 0)
		return strdup(mref);
	if (ref->kind == STRATA_REF_STORE)
		r = asprintf(&out, "%s@%s", ref->tag, digest);
	else if (ref->kind == STRATA_REF_OCI)
		r = asprintf(&out, "oci:%s@%s", ref->path, digest);
	else
		out = strdup(mref);
	strata_ref_free(ref);
	return r < 0 ? NULL : out;
}

/*
 * Finding and trusting a live mount's control socket (stratafs control.h
 * says where the daemon puts it). The socket's name could be bound by
 * someone other than the mount's daemon (an abstract name by any local
 * user), and what it answers decides which directory is packed into the
 * image and where it is written. So the mountpoint must be a
 * fuse.stratafs mount in /proc/self/mountinfo, the peer (SO_PEERCRED) must
 * be its owner (user_id=), and the answer must name the peer's pid and
 * that mountpoint.
 */
#define CONTROL_PREFIX "stratafs-control/"
#define CONTROL_ROOT_DIR "/run/stratafs"
#define CONTROL_USER_DIR "stratafs"

/* Undo mountinfo's octal escapes ("\040" for a space) in place. */
static void unescape(char *s)
{
	char *p = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*p++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 3;
		} else {
			*p++ = *s;
		}
	}
	*p = '\0';
}

/*
 * The topmost mount at @abs, from /proc/self/mountinfo.
 * Return: 0 with @owner (its user_id=) and @image (its source is an image,
 * "strata:...") when it is a fuse.stratafs mount, else -ENOENT.
 */
static int stratafs_mount(const char *abs, uid_t *owner, bool *image)
{
	cleanup_file FILE *f = fopen("/proc/self/mountinfo", "re");
	cleanup_free char *line = NULL;
	size_t cap = 0;
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *tok, *mp = NULL, *f3[3] = { 0 }, *uid;
		int i = 0, after = -1;

		for (tok = strtok_r(line, " \n", &save); tok;
		     tok = strtok_r(NULL, " \n", &save), i++) {
			if (i == 4)
				mp = tok;
			else if (after >= 0 && after < 3)
				f3[after++] = tok;
			else if (i > 5 && after < 0 && !strcmp(tok, "-"))
				after = 0;
		}
		if (!mp || !f3[2])
			continue;
		unescape(mp);
		if (strcmp(mp, abs))
			continue;
		/* a later line for the same path is mounted over this one */
		r = -ENOENT;
		if (strcmp(f3[0], "fuse.stratafs"))
			continue;
		uid = strstr(f3[2], "user_id=");
		if (!uid || (uid != f3[2] && uid[-1] != ','))
			continue;
		*owner = (uid_t)strtoul(uid + 8, NULL, 10);
		unescape(f3[1]);
		*image = !strncmp(f3[1], "strata:", 7);
		r = 0;
	}
	return r;
}

/*
 * @mp made absolute, once. Another user's FUSE mount refuses even root a
 * stat of its root: then the directory it is in is resolved, and its last
 * name taken as given.
 */
static char *resolve_mountpoint(const char *mp)
{
	cleanup_free char *dup = NULL, *parent = NULL;
	char *abs = realpath(mp, NULL), *slash, *base;
	size_t n;

	if (abs || errno != EACCES)
		return abs;
	dup = strdup(mp);
	if (!dup)
		return NULL;
	n = strlen(dup);
	while (n > 1 && dup[n - 1] == '/')
		dup[--n] = '\0';
	slash = strrchr(dup, '/');
	base = slash ? slash + 1 : dup;
	if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) {
		errno = EACCES;
		return NULL;
	}
	if (slash == dup) {
		parent = strdup("/");
	} else {
		if (slash)
			*slash = '\0';
		parent = realpath(slash ? dup : ".", NULL);
	}
	if (!parent)
		return NULL;
	if (asprintf(&abs, "%s/%s", strcmp(parent, "/") ? parent : "",
		     base) < 0)
		return NULL;
	return abs;
}

/*
 * Connect to @name in the socket directory @dir, which must be @owner's
 * alone. Return: the connected fd; -ENOENT when there is no such
 * directory or live socket (try the next place); else negative errno,
 * said on stderr.
 */
static int connect_in(const char *cmd, const char *abs, const char *dir,
		      const char *name, uid_t owner)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	cleanup_fd int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				  O_CLOEXEC);
	struct stat st;
	int fd, r;

	if (dfd < 0 && errno == ENOENT)
		return -ENOENT;
	if (dfd < 0 || fstat(dfd, &st) < 0) {
		r = -errno;
		complain(cmd, "%s: control socket directory "
			"%s: %s\n", abs, dir, r == -ELOOP || r == -ENOTDIR
			? "a symlink or not a directory" : strerror(-r));
		return r;
	}
	if (st.st_uid != owner || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		complain(cmd, "%s: control socket directory "
			"%s belongs to uid %u (mode %04o), not to the mount's "
			"owner uid %u alone: refusing it\n", abs, dir,
			(unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
			(unsigned)owner);
		return -EPERM;
	}
	/* through the checked fd: the path is not looked up again */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s",
		 dfd, name);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	r = -errno;
	close(fd);
	if (r == -ENOENT || r == -ECONNREFUSED)
		return -ENOENT;
	complain(cmd, "%s: control socket %s/%s: %s\n", abs,
		dir, name, strerror(-r));
	return r;
}

/*
 * Connect to the control socket of the mount at @abs owned by @owner: in
 * the owner's socket directory, else on the abstract name.
 * Return: the fd, -ENOENT when nothing listens, else negative errno
 * (said on stderr).
 */
static int connect_mount(const char *cmd, const char *abs, uid_t owner)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char digest[STRATA_DIGEST_MAX], name[65], dir[4200];
	socklen_t len;
	int fd = -ENOENT;

	strata_sha256(abs, strlen(abs), digest);
	snprintf(name, sizeof(name), "%.64s", digest + strlen("sha256:"));
	if (owner == 0) {
		fd = connect_in(cmd, abs, CONTROL_ROOT_DIR, name, owner);
	} else {
		if (xdg && xdg[0] == '/' && geteuid() == owner) {
			snprintf(dir, sizeof(dir), "%s/%s", xdg,
				 CONTROL_USER_DIR);
			fd = connect_in(cmd, abs, dir, name, owner);
		}
		if (fd == -ENOENT) {
			snprintf(dir, sizeof(dir), "/run/user/%u/%s",
				 (unsigned)owner, CONTROL_USER_DIR);
			fd = connect_in(cmd, abs, dir, name, owner);
		}
	}
	if (fd != -ENOENT)
		return fd;
	/* the fallback: anyone may hold this name, the peer check decides */
	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "%s%s",
		 CONTROL_PREFIX, name);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			  strlen(sa.sun_path + 1));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, len) < 0) {
		close(fd);
		return -ENOENT;
	}
	return fd;
}

/*
 * @path (from the mount's answer), opened O_NOFOLLOW, must be a directory
 * owned by @owner (or root, for @root_too): root committing a user's mount
 * packs and writes only what that user could. Return: the fd, or negative
 * errno said on stderr.
 */
static int owned_dir(const char *cmd, const char *abs, const char *what,
		     const char *path, uid_t owner, bool root_too)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	int r;

	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		complain(cmd, "%s: %s %s: %s\n", abs, what,
			path, strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	if (st.st_uid != owner && !(root_too && st.st_uid == 0)) {
		complain(cmd, "%s: %s %s belongs to uid %u, "
			"not to the mount's owner uid %u: refusing it\n", abs,
			what, path, (unsigned)st.st_uid, (unsigned)owner);
		close(fd);
		return -EPERM;
	}
	return fd;
}

/*
 * Connect to the stratafs mount at @mp, learn its image and upper dir and
 * freeze it: changes wait until the connection closes, so the upper dir
 * is read as one snapshot while the mount stays up.
 */
int live_mount_open(const char *cmd, const char *mp, struct live_mount *m)
{
	cleanup_free char *abs = resolve_mountpoint(mp);
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct json_object *o, *v;
	cleanup_free char *said_mp = NULL;
	char line[16384];
	int said_pid = -1, r;
	uid_t owner = 0;
	bool image = false;

	m->fd = m->upper_fd = m->store_fd = -1;
	if (!abs) {
		r = -errno;
		complain(cmd, "%s: %s\n", mp, strerror(-r));
		return r;
	}
	r = stratafs_mount(abs, &owner, &image);
	if (r == 0 && !image) {
		complain(cmd, "%s is not a mount of an image "
			"(lowerdir= mounts have no image to commit onto)\n",
			abs);
		return -EINVAL;
	}
	if (r == 0 && geteuid() != 0 && geteuid() != owner) {
		complain(cmd, "%s belongs to uid %u: only "
			"that user or root can %s it\n", abs,
			(unsigned)owner, cmd);
		return -EPERM;
	}
	if (r == 0)
		r = connect_mount(cmd, abs, owner);
	if (r == -ENOENT)
		complain(cmd, "%s is not a writable stratafs "
			"mount (stratafs -o upper=DIR REF %s)\n", abs, mp);
	if (r < 0)
		return r;
	m->fd = r;
	if (getsockopt(m->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		r = -errno;
		complain(cmd, "%s: control socket: %s\n", abs,
			strerror(-r));
		return r;
	}
	if (cred.uid != owner) {
		complain(cmd, "%s: its control socket is "
			"answered by uid %u (pid %d), not by the mount's owner "
			"uid %u: refusing to trust it\n", abs,
			(unsigned)cred.uid, (int)cred.pid, (unsigned)owner);
		return -EPERM;
	}
	if (live_mount_say(m->fd, "info\n") < 0 ||
	    live_mount_read_reply(m->fd, line, sizeof(line)) < 0 ||
	    !(o = json_tokener_parse(line))) {
		complain(cmd, "%s: no answer from stratafs\n",
			abs);
		return -EIO;
	}
	m->upper = json_str(o, "upper");
	m->ref = json_str(o, "ref");
	m->store = json_str(o, "store");
	m->manifest = json_str(o, "manifest");
	said_mp = json_str(o, "mountpoint");
	if (json_object_object_get_ex(o, "pid", &v) &&
	    json_object_is_type(v, json_type_int))
		said_pid = json_object_get_int(v);
	json_object_put(o);
	if (said_pid != cred.pid || !said_mp || strcmp(said_mp, abs)) {
		complain(cmd, "%s: its control socket (pid "
			"%d) speaks for pid %d, mount %s: refusing it\n", abs,
			(int)cred.pid, said_pid, said_mp ? said_mp : "?");
		return -EPERM;
	}
	if (!m->upper || !m->ref || !m->store || !m->ref[0]) {
		complain(cmd, "%s is not a mount of an image "
			"(lowerdir= mounts have no image to commit onto)\n",
			abs);
		return -EINVAL;
	}
	if (!m->manifest ||
	    strata_digest_validate(m->manifest, strlen(m->manifest)) < 0) {
		complain(cmd, "%s: stratafs does not name the "
			"digest of the image it shows (an older stratafs? "
			"remount it)\n", abs);
		return -EINVAL;
	}
	m->base = base_ref(m->ref, m->manifest);
	if (!m->base)
		return -ENOMEM;
	if (geteuid() != owner) {
		r = owned_dir(cmd, abs, "upper directory", m->upper, owner,
			      false);
		if (r < 0)
			return r;
		m->upper_fd = r;
		snprintf(m->upper_at, sizeof(m->upper_at), "/proc/self/fd/%d",
			 r);
		if (!g.root) {
			r = owned_dir(cmd, abs, "store", m->store, owner, true);
			if (r < 0)
				return r;
			m->store_fd = r;
			/* the store walks its path with O_NOFOLLOW: give it
			 * the checked directory's own name */
			snprintf(m->store_at, sizeof(m->store_at),
				 "/proc/self/fd/%d", r);
			free(m->store);
			m->store = realpath(m->store_at, NULL);
			if (!m->store)
				return -errno;
		}
	}
	return 0;
}
int live_mount_freeze(const char *cmd, const char *mp, struct live_mount *m)
{
	char line[64];

	if (live_mount_say(m->fd, "freeze\n") < 0 ||
	    live_mount_read_reply(m->fd, line, sizeof(line)) < 0 ||
	    strcmp(line, "ok")) {
		complain(cmd, "%s: stratafs would not hold still\n", mp);
		return -EIO;
	}
	return 0;
}
