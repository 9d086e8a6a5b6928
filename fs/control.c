/* SPDX-License-Identifier: Apache-2.0 */
/* The control socket of a writable mount: see control.h. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "fs.h"
#include "store.h"
#include "wfs.h"

static struct {
	struct wfs *w;
	int fd;
	pthread_t thread;
	char *info;		/* the JSON line */
	bool running;
	struct control_info ci;	/* strings owned below */
	char *mountpoint, *ref, *manifest, *store, *upper, *work;
} ctl = { .fd = -1 };

static void say(int fd, const char *s);

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

static int read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		ssize_t k = read(fd, buf + n, 1);

		if (k <= 0)
			return -1;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return (int)n;
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
	char line[4200];
	bool frozen = false;

	while (read_line(c, line, sizeof(line)) >= 0) {
		if (!strncmp(line, "continue ", 9)) {
			if (frozen)
				do_continue(c, line + 9);
			else
				say(c, "error: continue needs freeze first\n");
			continue;
		}
		if (!strcmp(line, "info")) {
			say(c, ctl.info);
			say(c, "\n");
		} else if (!strcmp(line, "freeze") && !frozen) {
			pthread_rwlock_wrlock(&ctl.w->freeze);
			frozen = true;
			say(c, "ok\n");
		} else if (!strcmp(line, "thaw") && frozen) {
			pthread_rwlock_unlock(&ctl.w->freeze);
			frozen = false;
			say(c, "ok\n");
		} else {
			say(c, "error: unknown request\n");
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
		int c = accept4(ctl.fd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
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

int fs_control_start(struct wfs *w, const struct control_info *info)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char digest[STRATA_DIGEST_MAX];
	socklen_t len;
	int r;

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
	strata_sha256(info->mountpoint, strlen(info->mountpoint), digest);
	/* abstract name: sun_path[0] = '\0' */
	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "%s%.64s",
		 STRATAFS_CONTROL_PREFIX, digest + strlen("sha256:"));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			  strlen(sa.sun_path + 1));
	ctl.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl.fd < 0)
		return -errno;
	if (bind(ctl.fd, (struct sockaddr *)&sa, len) < 0 ||
	    listen(ctl.fd, 4) < 0) {
		r = -errno;
		close(ctl.fd);
		ctl.fd = -1;
		return r;
	}
	r = pthread_create(&ctl.thread, NULL, control_thread, NULL);
	if (r) {
		close(ctl.fd);
		ctl.fd = -1;
		return -r;
	}
	ctl.running = true;
	return 0;
}

void fs_control_stop(void)
{
	if (ctl.running) {
		shutdown(ctl.fd, SHUT_RDWR);
		pthread_cancel(ctl.thread);
		pthread_join(ctl.thread, NULL);
		ctl.running = false;
	}
	if (ctl.fd >= 0)
		close(ctl.fd);
	ctl.fd = -1;
	free(ctl.info);
	ctl.info = NULL;
	free(ctl.mountpoint);
	free(ctl.ref);
	free(ctl.manifest);
	free(ctl.store);
	free(ctl.upper);
	free(ctl.work);
}
