/* SPDX-License-Identifier: Apache-2.0 */
/* strata commit --upper DIR --from REF DEST, strata commit MOUNTPOINT DEST */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "strata.h"

static const char usage[] =
	"usage: strata commit --upper DIR --from REF [OPTIONS] DEST\n"
	"       strata commit [OPTIONS] MOUNTPOINT DEST\n"
	"\n"
	"The second form commits a live writable stratafs mount: it finds the\n"
	"mount's image and upper directory and holds the mount still (changes\n"
	"wait) while it reads, so the layer is one consistent snapshot. It\n"
	"builds on the image the mount shows, by digest, whatever the mount's\n"
	"tag names by now: the committed image always shows what the mount\n"
	"shows. With --continue the mount then goes on from the new image\n"
	"with an empty upper directory, so the next commit holds only what\n"
	"changed after this one.\n"
	"Turn the upper directory DIR of a writable mount of REF (overlay or\n"
	".wh. format) into a new layer, config and manifest, tagged DEST:\n"
	"oci:DIR:TAG, oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],\n"
	"a store NAME[:TAG], or :TAG for REF's own layout or store name.\n"
	"Prints the new manifest digest. With nothing to commit (no change,\n"
	"no config edit) it says so, writes nothing and exits with status 1.\n"
	"\n"
	"  --platform P            pick P from a multi-platform REF\n"
	"  --creds USER[:PASS], --tls-verify=false, --cert-dir DIR\n"
	"                          for a docker:// REF (its layers are pulled)\n"
	"  --tag TAG               also tag the result TAG (repeatable)\n"
	"  --compression C         gzip (default, level 6), zstd (level 3), none\n"
	"  --format F              oci (default) or docker media types\n"
	"  --mask-path PREFIX      leave PREFIX and below out (repeatable)\n"
	"  --no-mask-volumes       keep the config's Volumes (left out by default)\n"
	"  --message, -m TEXT      history comment\n"
	"  --author TEXT           history and config author\n"
	"  --created-by TEXT       history created_by (default \"strata commit\")\n"
	"  --created TIME          seconds since the epoch or YYYY-MM-DDTHH:MM:SSZ\n"
	"                          (default $SOURCE_DATE_EPOCH, else now); file\n"
	"                          times later than it are clamped to it\n"
	"  --allow-empty           commit even with nothing changed\n"
	"  --squash                one layer: the image and the changes merged\n"
	"                          (history and diff_ids: that layer only)\n"
	"  --continue              (MOUNTPOINT form) the mount goes on from\n"
	"                          the new image with an empty upper directory\n"
	"  --threads N             gzip compression threads (default: CPUs)\n"
	"config edits (each --X has an --unset-X):\n"
	"  --env K=V  --unset-env K        --label K=V  --unset-label K\n"
	"  --entrypoint JSON|STRING  --cmd JSON|STRING  (a string runs with sh -c)\n"
	"  --unset-entrypoint  --unset-cmd  --workdir DIR  --unset-workdir\n"
	"  --user U  --unset-user          --expose PORT[/PROTO]  --unset-expose P\n"
	"  --volume PATH  --unset-volume PATH\n";

static const struct {
	const char *opt;
	enum strata_cfg_edit_kind kind;
	bool arg;
} edit_opts[] = {
	{ "--env", STRATA_EDIT_ENV, true },
	{ "--unset-env", STRATA_EDIT_UNSET_ENV, true },
	{ "--entrypoint", STRATA_EDIT_ENTRYPOINT, true },
	{ "--unset-entrypoint", STRATA_EDIT_UNSET_ENTRYPOINT, false },
	{ "--cmd", STRATA_EDIT_CMD, true },
	{ "--unset-cmd", STRATA_EDIT_UNSET_CMD, false },
	{ "--workdir", STRATA_EDIT_WORKDIR, true },
	{ "--unset-workdir", STRATA_EDIT_UNSET_WORKDIR, false },
	{ "--user", STRATA_EDIT_USER, true },
	{ "--unset-user", STRATA_EDIT_UNSET_USER, false },
	{ "--label", STRATA_EDIT_LABEL, true },
	{ "--unset-label", STRATA_EDIT_UNSET_LABEL, true },
	{ "--expose", STRATA_EDIT_EXPOSE, true },
	{ "--unset-expose", STRATA_EDIT_UNSET_EXPOSE, true },
	{ "--volume", STRATA_EDIT_VOLUME, true },
	{ "--unset-volume", STRATA_EDIT_UNSET_VOLUME, true },
};

static int parse_time(const char *s, int64_t *out)
{
	struct tm tm;
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (!errno && end != s && !*end && v >= 0) {
		*out = v;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end || (*end && strcmp(end, "Z")))
		return -EINVAL;
	*out = (int64_t)timegm(&tm);
	return 0;
}

struct args {
	struct strata_commit_opts o;
	const char **tags, **mask;
	struct strata_cfg_edit *edits;
	const char *dest, *extra;
	const char *mountpoint;		/* committing a live mount */
	bool cont;			/* --continue */
};

/* What a live mount's control socket says about it (stratafs control.h). */
struct mount_info {
	int fd;				/* the connection; frozen while open */
	char *upper, *ref, *store;
	char *manifest;			/* the digest the mount shows */
	char *base;			/* ref naming exactly that image */
	/* root committing another user's mount: the directories as checked
	 * (owned_dir); the upper one is committed through its fd's name */
	int upper_fd, store_fd;
	char upper_at[32], store_at[32];
};

static void mount_info_free(struct mount_info *m)
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
static int say(int fd, const char *s)
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

static int read_reply(int fd, char *buf, size_t size)
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
 * The committed image as the mount's daemon should name it: layouts by
 * absolute path and manifest digest, store names as they are.
 */
static char *continue_ref(const char *dest, const char *src,
			  const char *digest)
{
	struct strata_err err = { 0 };
	struct strata_ref *ref = NULL;
	const char *d = dest;
	char *out = NULL, *abs;

	if (dest[0] == ':')
		d = src;	/* the source's own layout or store name */
	if (strata_ref_parse(d, &ref, &err) < 0)
		return NULL;
	if (ref->kind == STRATA_REF_STORE) {
		if (dest[0] == ':') {
			const char *slash = strrchr(ref->tag, '/');
			const char *colon = strrchr(slash ? slash : ref->tag, ':');
			int n = colon ? (int)(colon - ref->tag)
				      : (int)strlen(ref->tag);

			if (asprintf(&out, "%.*s%s", n, ref->tag, dest) < 0)
				out = NULL;
		} else {
			out = strdup(ref->tag);
		}
	} else if ((abs = realpath(ref->path, NULL))) {
		if (ref->kind == STRATA_REF_OCI) {
			if (asprintf(&out, "oci:%s@%s", abs, digest) < 0)
				out = NULL;
		} else if (asprintf(&out, "%s:%s%s%s",
				    ref->kind == STRATA_REF_OCI_ARCHIVE
				    ? "oci-archive" : "docker-archive", abs,
				    ref->tag ? ":" : "",
				    ref->tag ? ref->tag : "") < 0) {
			out = NULL;
		}
		free(abs);
	}
	strata_ref_free(ref);
	return out;
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

/* Tell the (frozen) mount to go on from the committed image. */
static int continue_mount(struct mount_info *m, const char *ref)
{
	char line[2048];

	if (say(m->fd, "continue ") < 0 || say(m->fd, ref) < 0 ||
	    say(m->fd, "\n") < 0 || read_reply(m->fd, line, sizeof(line)) < 0) {
		fprintf(stderr, "strata commit: --continue: no answer from "
			"stratafs\n");
		return -EIO;
	}
	if (strcmp(line, "ok")) {
		fprintf(stderr, "strata commit: --continue: stratafs: %s "
			"(the commit itself is done; the mount still shows "
			"the same tree over the old upper directory)\n", line);
		return -EIO;
	}
	return 0;
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
static int connect_in(const char *abs, const char *dir, const char *name,
		      uid_t owner)
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
		fprintf(stderr, "strata commit: %s: control socket directory "
			"%s: %s\n", abs, dir, r == -ELOOP || r == -ENOTDIR
			? "a symlink or not a directory" : strerror(-r));
		return r;
	}
	if (st.st_uid != owner || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		fprintf(stderr, "strata commit: %s: control socket directory "
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
	fprintf(stderr, "strata commit: %s: control socket %s/%s: %s\n", abs,
		dir, name, strerror(-r));
	return r;
}

/*
 * Connect to the control socket of the mount at @abs owned by @owner: in
 * the owner's socket directory, else on the abstract name.
 * Return: the fd, -ENOENT when nothing listens, else negative errno
 * (said on stderr).
 */
static int connect_mount(const char *abs, uid_t owner)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char digest[STRATA_DIGEST_MAX], name[65], dir[4200];
	socklen_t len;
	int fd = -ENOENT;

	strata_sha256(abs, strlen(abs), digest);
	snprintf(name, sizeof(name), "%.64s", digest + strlen("sha256:"));
	if (owner == 0) {
		fd = connect_in(abs, CONTROL_ROOT_DIR, name, owner);
	} else {
		if (xdg && xdg[0] == '/' && geteuid() == owner) {
			snprintf(dir, sizeof(dir), "%s/%s", xdg,
				 CONTROL_USER_DIR);
			fd = connect_in(abs, dir, name, owner);
		}
		if (fd == -ENOENT) {
			snprintf(dir, sizeof(dir), "/run/user/%u/%s",
				 (unsigned)owner, CONTROL_USER_DIR);
			fd = connect_in(abs, dir, name, owner);
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
static int owned_dir(const char *abs, const char *what, const char *path,
		     uid_t owner, bool root_too)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	int r;

	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		fprintf(stderr, "strata commit: %s: %s %s: %s\n", abs, what,
			path, strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	if (st.st_uid != owner && !(root_too && st.st_uid == 0)) {
		fprintf(stderr, "strata commit: %s: %s %s belongs to uid %u, "
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
static int open_mount(const char *mp, struct mount_info *m)
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
		fprintf(stderr, "strata commit: %s: %s\n", mp, strerror(-r));
		return r;
	}
	r = stratafs_mount(abs, &owner, &image);
	if (r == 0 && !image) {
		fprintf(stderr, "strata commit: %s is not a mount of an image "
			"(lowerdir= mounts have no image to commit onto)\n",
			abs);
		return -EINVAL;
	}
	if (r == 0 && geteuid() != 0 && geteuid() != owner) {
		fprintf(stderr, "strata commit: %s belongs to uid %u: only "
			"that user or root can commit it\n", abs,
			(unsigned)owner);
		return -EPERM;
	}
	if (r == 0)
		r = connect_mount(abs, owner);
	if (r == -ENOENT)
		fprintf(stderr, "strata commit: %s is not a writable stratafs "
			"mount (stratafs -o upper=DIR REF %s)\n", abs, mp);
	if (r < 0)
		return r;
	m->fd = r;
	if (getsockopt(m->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		r = -errno;
		fprintf(stderr, "strata commit: %s: control socket: %s\n", abs,
			strerror(-r));
		return r;
	}
	if (cred.uid != owner) {
		fprintf(stderr, "strata commit: %s: its control socket is "
			"answered by uid %u (pid %d), not by the mount's owner "
			"uid %u: refusing to trust it\n", abs,
			(unsigned)cred.uid, (int)cred.pid, (unsigned)owner);
		return -EPERM;
	}
	if (say(m->fd, "info\n") < 0 ||
	    read_reply(m->fd, line, sizeof(line)) < 0 ||
	    !(o = json_tokener_parse(line))) {
		fprintf(stderr, "strata commit: %s: no answer from stratafs\n",
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
		fprintf(stderr, "strata commit: %s: its control socket (pid "
			"%d) speaks for pid %d, mount %s: refusing it\n", abs,
			(int)cred.pid, said_pid, said_mp ? said_mp : "?");
		return -EPERM;
	}
	if (!m->upper || !m->ref || !m->store || !m->ref[0]) {
		fprintf(stderr, "strata commit: %s is not a mount of an image "
			"(lowerdir= mounts have no image to commit onto)\n",
			abs);
		return -EINVAL;
	}
	if (!m->manifest ||
	    strata_digest_validate(m->manifest, strlen(m->manifest)) < 0) {
		fprintf(stderr, "strata commit: %s: stratafs does not name the "
			"digest of the image it shows (an older stratafs? "
			"remount it)\n", abs);
		return -EINVAL;
	}
	m->base = base_ref(m->ref, m->manifest);
	if (!m->base)
		return -ENOMEM;
	if (geteuid() != owner) {
		r = owned_dir(abs, "upper directory", m->upper, owner, false);
		if (r < 0)
			return r;
		m->upper_fd = r;
		snprintf(m->upper_at, sizeof(m->upper_at), "/proc/self/fd/%d",
			 r);
		if (!g.root) {
			r = owned_dir(abs, "store", m->store, owner, true);
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
	if (say(m->fd, "freeze\n") < 0 ||
	    read_reply(m->fd, line, sizeof(line)) < 0 || strcmp(line, "ok")) {
		fprintf(stderr, "strata commit: %s: stratafs would not hold "
			"still\n", abs);
		return -EIO;
	}
	return 0;
}

static int bad(const char *what, const char *v)
{
	fprintf(stderr, "strata commit: invalid %s \"%s\"\n", what, v);
	return 2;
}

/* True for the options (other than the config edits) that take a value. */
static bool takes_value(const char *o)
{
	static const char *const with_value[] = {
		"--upper", "--from", "--platform", "--tag", "--mask-path",
		"--compression", "--format", "--message", "-m", "--author",
		"--created-by", "--created", "--threads",
	};
	size_t k;

	for (k = 0; k < ARRAY_SIZE(with_value); k++)
		if (!strcmp(o, with_value[k]))
			return true;
	return false;
}

/* Return: 0 to go on, else the exit status. */
static int parse(int argc, char **argv, struct args *a,
		 struct strata_platform *plat)
{
	int i, k;

	a->o.compression = STRATA_COMP_GZIP;
	for (i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool found = false;

		for (k = 0; k < (int)ARRAY_SIZE(edit_opts); k++) {
			if (strcmp(o, edit_opts[k].opt))
				continue;
			if (edit_opts[k].arg && !v)
				return usage_error("commit", usage, "%s needs "
						   "a value", o);
			a->edits[a->o.n_edits].kind = edit_opts[k].kind;
			a->edits[a->o.n_edits++].value =
				edit_opts[k].arg ? argv[++i] : NULL;
			found = true;
		}
		if (found)
			continue;
		k = reg_option(argc, argv, &i);
		if (k < 0)
			return 2;
		if (k > 0)
			continue;
		if (!strcmp(o, "--no-mask-volumes")) {
			a->o.no_mask_volumes = true;
		} else if (!strcmp(o, "--continue")) {
			a->cont = true;
		} else if (!strcmp(o, "--allow-empty")) {
			a->o.allow_empty = true;
		} else if (!strcmp(o, "--squash")) {
			a->o.squash = true;
		} else if (!v && takes_value(o)) {
			return usage_error("commit", usage, "%s needs a value",
					   o);
		} else if (!strcmp(o, "--upper")) {
			a->o.upper = argv[++i];
		} else if (!strcmp(o, "--from")) {
			a->o.from = argv[++i];
		} else if (!strcmp(o, "--platform")) {
			if (strata_platform_parse(argv[++i], plat) < 0)
				return bad("platform", argv[i]);
			a->o.platform = plat;
		} else if (!strcmp(o, "--tag")) {
			a->tags[a->o.n_tags++] = argv[++i];
		} else if (!strcmp(o, "--mask-path")) {
			a->mask[a->o.n_mask++] = argv[++i];
		} else if (!strcmp(o, "--compression")) {
			i++;
			if (!strcmp(v, "gzip"))
				a->o.compression = STRATA_COMP_GZIP;
			else if (!strcmp(v, "zstd"))
				a->o.compression = STRATA_COMP_ZSTD;
			else if (!strcmp(v, "none"))
				a->o.compression = STRATA_COMP_NONE;
			else
				return bad("compression", v);
		} else if (!strcmp(o, "--format")) {
			i++;
			if (strcmp(v, "oci") && strcmp(v, "docker"))
				return bad("format", v);
			a->o.docker = !strcmp(v, "docker");
		} else if (!strcmp(o, "--message") || !strcmp(o, "-m")) {
			a->o.message = argv[++i];
		} else if (!strcmp(o, "--author")) {
			a->o.author = argv[++i];
		} else if (!strcmp(o, "--created-by")) {
			a->o.created_by = argv[++i];
		} else if (!strcmp(o, "--created")) {
			if (parse_time(argv[++i], &a->o.created) < 0)
				return bad("time", argv[i]);
			a->o.have_created = true;
		} else if (!strcmp(o, "--threads")) {
			a->o.threads = atoi(argv[++i]);
			if (a->o.threads <= 0)
				return bad("thread count", argv[i]);
		} else if (o[0] == '-' && o[1]) {
			return usage_error("commit", usage,
					   "unknown option \"%s\"", o);
		} else if (!a->dest) {
			a->dest = o;
		} else if (!a->extra) {
			a->extra = o;
		} else {
			return usage_error("commit", usage, "unexpected "
					   "argument \"%s\" (it takes "
					   "MOUNTPOINT DEST, or DEST with "
					   "--upper and --from)", o);
		}
	}
	if (!a->o.upper && !a->o.from && a->dest && a->extra) {
		/* strata commit MOUNTPOINT DEST */
		a->mountpoint = a->dest;
		a->dest = a->extra;
	} else if (a->extra) {
		return usage_error("commit", usage, "unexpected argument "
				   "\"%s\" (with --upper and --from, give only "
				   "DEST)", a->extra);
	}
	if (a->cont && !a->mountpoint) {
		fprintf(stderr, "strata commit: --continue needs a mountpoint "
			"(strata commit --continue MOUNTPOINT DEST)\n");
		return 2;
	}
	if (!a->dest && !a->o.upper && !a->o.from)
		return usage_error("commit", usage, "missing MOUNTPOINT and "
				   "DEST (or --upper DIR --from REF DEST)");
	if (!a->dest)
		return usage_error("commit", usage, "missing DEST (where to "
				   "write the image)");
	if (!a->mountpoint && (!a->o.upper || !a->o.from))
		return usage_error("commit", usage, "%s",
				   a->o.upper ? "--upper needs --from REF (the "
				   "image the upper directory is over)"
				   : a->o.from ? "--from needs --upper DIR"
				   : "missing DEST: give MOUNTPOINT DEST, or "
				   "--upper DIR --from REF DEST");
	a->o.dest = a->dest;
	a->o.tags = a->tags;
	a->o.mask = a->mask;
	a->o.edits = a->edits;
	return 0;
}

int cmd_commit(int argc, char **argv)
{
	cleanup_(strata_store_freep) struct strata_store *st = NULL;
	struct strata_commit_result res;
	struct strata_platform plat;
	struct strata_err err = { 0 };
	struct mount_info mi = { .fd = -1, .upper_fd = -1, .store_fd = -1 };
	struct args a = { 0 };
	int r;

	if (want_help(argc, argv, usage))
		return 0;
	a.tags = calloc((size_t)argc, sizeof(*a.tags));
	a.mask = calloc((size_t)argc, sizeof(*a.mask));
	a.edits = calloc((size_t)argc, sizeof(*a.edits));
	if (!a.tags || !a.mask || !a.edits) {
		r = die_err(NULL, -ENOMEM);
		goto out;
	}
	r = parse(argc, argv, &a, &plat);
	if (r)
		goto out;
	if (a.mountpoint) {
		if (open_mount(a.mountpoint, &mi) < 0) {
			r = 1;
			goto out;
		}
		a.o.upper = mi.upper_fd >= 0 ? mi.upper_at : mi.upper;
		a.o.from = mi.base;
		a.o.from_digest = mi.manifest;
	}
	/* a mount's image lives in the store it was mounted from */
	r = strata_store_open(a.mountpoint && !g.root ? mi.store : g.root,
			      &st, &err);
	if (r == 0)
		strata_store_set_reg_opts(st, &g.reg);
	if (r == 0)
		r = strata_commit(st, &a.o, &res, &err);
	if (r < 0) {
		r = die_err(&err, r);
		goto out;
	}
	if (res.nothing) {
		fprintf(stderr, "strata: nothing to commit in %s\n",
			a.mountpoint ? mi.upper : a.o.upper);
		r = 1;
		goto out;
	}
	if (a.cont && res.layer) {
		cleanup_free char *cref = continue_ref(a.dest, mi.ref,
						       res.manifest_digest);

		if (!cref || continue_mount(&mi, cref) < 0) {
			if (!cref)
				fprintf(stderr, "strata commit: --continue: "
					"cannot name %s for the mount\n",
					a.dest);
			printf("%s\n", res.manifest_digest);
			r = 1;
			goto out;
		}
	}
	if (!g.quiet && res.layer)
		fprintf(stderr, "layer %s: %llu entries, %llu bytes, %lld "
			"compressed\n", res.layer_digest,
			(unsigned long long)res.entries,
			(unsigned long long)res.tar_size,
			(long long)res.layer_size);
	else if (!g.quiet)
		fprintf(stderr, "no file changes: config only (empty_layer)\n");
	if (!g.quiet && res.pushed)
		fprintf(stderr, "pushed: %d blobs uploaded, %d mounted from "
			"another repository, %d already there\n",
			res.push_uploaded, res.push_mounted, res.push_skipped);
	printf("%s\n", res.manifest_digest);
	r = 0;
out:
	mount_info_free(&mi);
	free(a.tags);
	free(a.mask);
	free(a.edits);
	return r;
}
