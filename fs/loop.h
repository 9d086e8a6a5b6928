/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STRATA_FS_LOOP_H
#define STRATA_FS_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "fs.h"

/*
 * A leader/follower request loop. One thread (the leader) reads requests
 * and answers the quick ones itself, so a stream of requests from one
 * process (a tree walk: readdir, getattr, getxattr on every entry) is
 * served by one thread that stays on its CPU, as in libfuse's
 * single-threaded loop. Before an operation that may block for long (a
 * write, a copy-up, an fsync, anything that changes the tree) the leader
 * hands the reading over to an idle follower (starting one, up to
 * @max_threads, if none is idle), so slow requests still run in parallel.
 *
 * libfuse's multithreaded loop instead wakes the longest-idle of its idle
 * threads for every request: on a VM where a wake-up and a context switch
 * cost tens of microseconds, that doubled the time of a walk of a big tree.
 *
 * @flush_quick(fh) says whether a FLUSH of handle @fh is quick (sends the
 * kernel no notification); NULL: never.
 *
 * Returns 0 when the session ended (unmount, or a signal through
 * fuse_set_signal_handlers()), -1 on error. Signals reach only the calling
 * thread.
 */
int fs_loop_run(struct fuse_session *se, unsigned max_threads,
		bool (*flush_quick)(uint64_t fh));

#endif
