/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static bool quiet;
static bool to_syslog;
static const char *prog = "strata";
static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;
static struct timespec last_draw;
static bool drawn;

void strata_log_set_quiet(bool q)
{
	quiet = q;
}

bool strata_log_quiet(void)
{
	return quiet;
}

void strata_log_set_prog(const char *p)
{
	prog = p;
}

void strata_log_set_syslog(bool on)
{
	if (on && !to_syslog)
		openlog(prog, LOG_PID, LOG_DAEMON);
	to_syslog = on;
}

void strata_warn(const char *fmt, ...)
{
	va_list ap;

	if (to_syslog) {
		va_start(ap, fmt);
		vsyslog(LOG_WARNING, fmt, ap);
		va_end(ap);
		return;
	}
	fprintf(stderr, "%s: warning: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static bool show_progress(void)
{
	static int tty = -1;

	if (quiet)
		return false;
	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	return tty == 1;
}

void strata_progress(const char *what, uint64_t done, uint64_t total)
{
	struct timespec now;
	long ms;

	if (!show_progress())
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&progress_lock);
	ms = (now.tv_sec - last_draw.tv_sec) * 1000 +
	     (now.tv_nsec - last_draw.tv_nsec) / 1000000;
	if (ms >= 100 || done == total) {
		last_draw = now;
		drawn = true;
		if (total)
			fprintf(stderr, "\r\033[K%s %3u%% (%llu/%llu MiB)", what,
				(unsigned)(done * 100 / total),
				(unsigned long long)(done >> 20),
				(unsigned long long)(total >> 20));
		else
			fprintf(stderr, "\r\033[K%s %llu MiB", what,
				(unsigned long long)(done >> 20));
		fflush(stderr);
	}
	pthread_mutex_unlock(&progress_lock);
}

void strata_progress_done(void)
{
	if (!show_progress())
		return;
	pthread_mutex_lock(&progress_lock);
	if (drawn)
		fputs("\r\033[K", stderr);
	drawn = false;
	pthread_mutex_unlock(&progress_lock);
}
