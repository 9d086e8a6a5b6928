/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Progress and diagnostics. Progress lines are drawn only when stderr is a
 * terminal and quiet mode is off; warnings always go to stderr.
 */
#ifndef STRATA_LOG_H
#define STRATA_LOG_H

#include <stdbool.h>
#include <stdint.h>

/* Set by tools/ and fs/main.c from --quiet; default false. */
void strata_log_set_quiet(bool quiet);
bool strata_log_quiet(void);

/* Program name used as prefix of warnings ("strata", "stratafs"). */
void strata_log_set_prog(const char *prog);

/* Warnings go to syslog (LOG_DAEMON, tagged with the program name and
 * pid) instead of stderr: for a daemon whose stderr is /dev/null. */
void strata_log_set_syslog(bool on);

void strata_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Progress of a long operation: a single self-overwriting line on a terminal,
 * nothing otherwise. Thread-safe; rate-limited to ~10 updates a second.
 */
void strata_progress(const char *what, uint64_t done, uint64_t total);
void strata_progress_done(void);

#endif
