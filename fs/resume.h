/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STRATA_FS_RESUME_H
#define STRATA_FS_RESUME_H

#include <stdbool.h>

#include "fs.h"

/* A worker's exit status: this mount cannot be served on. */
#define FS_RESUME_GIVE_UP 75

/*
 * A read-only image mount that survives the death of the process serving
 * it, and an upgrade of stratafs (fs/resume.c has the how and why).
 *
 * main() calls fs_resume_start() first: it records the command line, the
 * working directory and where the binary is installed, or, in a process
 * an upgrade exec'd, takes them (and the mount's state) from the one it
 * replaced. Return: FS_RESUME_NONE (an ordinary start), FS_RESUME_UPGRADE
 * (this process takes the mount over: *argc and *argv are the mount's command
 * line, the working directory is its; serve the descriptor
 * fs_resume_fuse_fd() names (as /dev/fd/N), and touch no path under the mount point,
 * fs_resume_mountpoint(): nobody serves it yet), FS_RESUME_PROBE (the
 * same, but only load the image, check fs_resume_same_image(), call
 * fs_resume_probe_ok() and exit 0), or -errno (logged).
 */
enum { FS_RESUME_NONE, FS_RESUME_UPGRADE, FS_RESUME_PROBE };
int fs_resume_start(int *argc, char ***argv);
/* The mount taken over (absolute), or NULL in an ordinary start. */
const char *fs_resume_mountpoint(void);
/* Does image @manifest (a digest) match the one the mount shows? Logs
 * why not. Always true in an ordinary start. */
bool fs_resume_same_image(const char *manifest);
/* The /dev/fuse descriptor handed over (FS_RESUME_UPGRADE). */
int fs_resume_fuse_fd(void);
void fs_resume_probe_ok(void);

struct fs_resume_opts {
	/* bounds the requests a worker answers at once (the loop's
	 * thread limit) */
	unsigned max_threads;
	/* called in the first worker once it answered INIT: may a new
	 * worker take over? It must need nothing of the old one's memory
	 * (no file handles). */
	bool (*resumable)(void *arg);
	void *arg;
	const char *mountpoint;		/* absolute */
	const char *manifest;		/* the image's digest */
};

/*
 * The process that mounted calls fs_resume_supervise() once it is the
 * daemon. It keeps the /dev/fuse descriptor (so the kernel never aborts
 * the connection) and forks the serving worker; fs_resume_supervise()
 * returns 0 in each worker, whose session then reads and answers through
 * fs/resume.c's own I/O: set up for the loop, which must read the session
 * fd alone (no clone_fd). A worker killed by a signal is replaced by a
 * new fork of the supervisor, which replays the connection's INIT and the
 * requests the dead one had read and not answered. SIGUSR1 replaces the
 * worker; SIGUSR2 execs the binary installed where this one was, if it
 * may run and can take the mount over (else it logs why and serves on).
 *
 * In the supervisor it returns 1 once the mount is over (the worker
 * ended: unmounted, or told to stop; or the mount cannot be served on),
 * *status the exit status to give; the caller then calls
 * fs_resume_unmount() and exits. Before any worker, -errno: the caller
 * serves the mount itself.
 */
int fs_resume_supervise(struct fuse_session *se,
			const struct fs_resume_opts *o, int *status);

/* Unmount @se (fuse_session_unmount(), which cannot unmount a session
 * an upgrade handed over). */
void fs_resume_unmount(struct fuse_session *se);

#endif
