/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket of a writable mount, for `strata commit MOUNTPOINT`.
 *
 * An abstract unix socket named STRATAFS_CONTROL_PREFIX + the sha256 hex
 * of the mountpoint's absolute path (abstract: no path length limit, no
 * file left behind by a killed daemon). Only the mounting user and root
 * may connect (SO_PEERCRED). Requests are one line each:
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

#define STRATAFS_CONTROL_PREFIX "stratafs-control/"

struct wfs;

struct strata_store;
struct fs;

struct control_info {
	const char *mountpoint, *ref, *manifest, *store, *upper, *work;
	struct strata_store *st;	/* for continue */
	const struct fs *like;		/* settings a continued image gets */
};

/* Start the control thread. Return: 0 or negative errno. */
int fs_control_start(struct wfs *w, const struct control_info *info);
void fs_control_stop(void);

#endif
