/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STRATA_FS_RESUME_H
#define STRATA_FS_RESUME_H

#include <stdbool.h>

#include "fs.h"

/* A worker's exit status: this mount cannot be served on. */
#define FS_RESUME_GIVE_UP 75

/*
 * A read-only image mount that survives the death of the process serving
 * it (fs/resume.c has the how and why).
 *
 * The process that mounted calls fs_resume_supervise() once it is the
 * daemon. It keeps the /dev/fuse descriptor (so the kernel never aborts
 * the connection) and forks the serving worker; fs_resume_supervise()
 * returns 0 in each worker, whose session then reads and answers through
 * fs/resume.c's own I/O: set up for the loop, which must read the session
 * fd alone (no clone_fd). A worker killed by a signal is replaced by a
 * new fork of the supervisor, which replays the connection's INIT and the
 * requests the dead one had read and not answered.
 *
 * In the supervisor it returns 1 once the mount is over (the worker
 * ended: unmounted, or told to stop; or the mount cannot be served on),
 * *status the exit status to give; the caller then unmounts and exits.
 * Before any worker, -errno: the caller serves the mount itself.
 *
 * @max_threads bounds the requests a worker answers at once (the loop's
 * thread limit). @resumable(@arg), called in the first worker once it
 * answered INIT, says whether a new worker may take over: it must need
 * nothing of the old one's memory (no file handles).
 */
int fs_resume_supervise(struct fuse_session *se, unsigned max_threads,
			bool (*resumable)(void *arg), void *arg, int *status);

#endif
