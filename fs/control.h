/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket of a writable mount, for `strata commit MOUNTPOINT`.
 *
 * Where it lives. Its name is the sha256 hex of the mountpoint's absolute
 * path, in a directory only the mount's owner can write:
 *   root:        /run/stratafs/NAME            (made 0700 if missing)
 *   other users: $XDG_RUNTIME_DIR/stratafs/NAME (made 0700 if missing)
 * The directory is opened O_NOFOLLOW and refused unless fstat shows it
 * owned by the daemon's user and not writable by group or others; the
 * socket is bound, and a stale one removed, through that directory's fd.
 * Only when there is no such directory (no /run, no $XDG_RUNTIME_DIR) does
 * the daemon fall back to the abstract name STRATAFS_CONTROL_PREFIX + NAME,
 * which any local user could have bound first: there the client's check of
 * the peer (below) is the only guard. A daemon that cannot own its socket
 * does not mount (fs/main.c).
 *
 * Who may talk. The daemon serves only root and its own user (SO_PEERCRED).
 * The client (tools/cmd-commit.c) checks the other way round: the mount is
 * a fuse.stratafs mount in /proc/self/mountinfo, and the peer's uid is the
 * mount's user_id= and its pid the one the info line names.
 *
 * Requests are one line each:
 *   info     -> one line of JSON: {"mountpoint","ref","manifest","store",
 *               "upper","work","pid"}
 *   freeze   -> "ok": every change to the mount waits until the client
 *               sends "thaw" or closes the connection (or dies), so the
 *               upper directory can be read as one consistent snapshot
 *   thaw     -> "ok"
 *   continue REF -> "ok" or "error: ...": while frozen, after a commit of
 *               this mount to REF (with an absolute path, or @digest):
 *               the mount goes on from REF with an empty upper directory
 */
#ifndef STRATAFS_CONTROL_H
#define STRATAFS_CONTROL_H

#include <stddef.h>

#define STRATAFS_CONTROL_PREFIX "stratafs-control/" /* abstract: fallback */
#define STRATAFS_CONTROL_ROOT_DIR "/run/stratafs"	/* root's daemons */
#define STRATAFS_CONTROL_USER_DIR "stratafs"	/* in $XDG_RUNTIME_DIR */

struct wfs;
struct strata_err;
struct strata_store;
struct fs;

struct control_info {
	const char *mountpoint, *ref, *manifest, *store, *upper, *work;
	struct strata_store *st;	/* for continue */
	const struct fs *like;		/* settings a continued image gets */
};

enum control_action {
	CONTROL_INFO,
	CONTROL_FREEZE,
	CONTROL_THAW,
	CONTROL_CONTINUE,
};

struct control_request {
	enum control_action action;
	const char *arg;	/* CONTROL_CONTINUE: the reference, borrowed:
				 * points into the line, runs to its end */
	size_t arg_len;		/* its length (0 without arg) */
};

/*
 * Take one request line (@len bytes, no newline, need not be
 * NUL-terminated) apart. Pure: no socket, no state.
 * Return: 0 with @req filled, or -EINVAL (unknown request, a NUL byte,
 * "continue" without a reference).
 */
int fs_control_parse(const char *line, size_t len,
		     struct control_request *req);

/*
 * Bind and listen on the socket of the mount at @mountpoint (absolute,
 * borrowed), as described above. Call before mounting and daemonizing, so
 * a failure reaches the terminal and leaves no mount.
 * Return: 0, or negative errno with @err naming the directory or name.
 */
int fs_control_bind(const char *mountpoint, struct strata_err *err);

/* Serve the bound socket from a thread (after daemonizing: threads do not
 * survive it). @info's strings are copied. Return: 0 or negative errno. */
int fs_control_start(struct wfs *w, const struct control_info *info);

/* Stop serving, close the socket and remove it from its directory. Safe
 * after fs_control_bind alone, or nothing. */
void fs_control_stop(void);

#endif
