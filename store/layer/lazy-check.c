/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a crash may have torn in the lazy cache, checked once per boot.
 *
 * Nothing of a lazy layer is synced as it is written (lazy.c): a crash
 * can leave a content file with its size but not its bytes (a
 * filesystem that logs the size before the data reaches the disk). Only
 * a crash does that, and a crash means a new boot, so what was checked
 * under this boot's id is trusted for the rest of it.
 *
 * Content files of a TOC layer (data/N, and layers/lazy/content/HEX,
 * hardlinks of the same inodes) carry the xattr user.strata.checked: the
 * boot id under which their bytes last hashed to their digest, set when
 * a fill has verified them, else at the first open of a boot, after
 * hashing them again. A file without this boot's mark (written before a
 * crash, or by an older strata) is hashed before it is served or linked
 * into another layer; one that does not match is removed and fetched
 * again. Where the filesystem keeps no user xattrs, lazy.c remembers
 * the files it checked for as long as the mount runs.
 *
 * The boot id is /proc/sys/kernel/random/boot_id, or $STRATA_BOOT_ID
 * (tests fake a reboot with it).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "lazy.h"

#define CHECKED_XATTR "user.strata.checked"

static char boot[64];
static pthread_once_t boot_once = PTHREAD_ONCE_INIT;

static void boot_read(void)
{
	const char *env = getenv("STRATA_BOOT_ID");
	cleanup_fd int fd = -1;
	ssize_t n;

	if (env && *env && strlen(env) < sizeof(boot)) {
		strcpy(boot, env);
		return;
	}
	fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? -1 : read(fd, boot, sizeof(boot) - 1);
	boot[n > 0 ? n : 0] = '\0';
}

const char *strata_boot_id(void)
{
	pthread_once(&boot_once, boot_read);
	return boot;
}

int strata_lz_mark(int fd)
{
	const char *b = strata_boot_id();

	if (!*b)
		return -ENOTSUP;
	return fsetxattr(fd, CHECKED_XATTR, b, strlen(b), 0) < 0 ? -errno : 0;
}

bool strata_lz_marked(int fd)
{
	const char *b = strata_boot_id();
	char seen[64];
	ssize_t n;

	n = *b ? fgetxattr(fd, CHECKED_XATTR, seen, sizeof(seen)) : -1;
	return n > 0 && (size_t)n == strlen(b) && !memcmp(seen, b, (size_t)n);
}

int strata_lz_verify_digest(int fd, const char *digest)
{
	cleanup_(strata_hasher_freep) struct strata_hasher *h = NULL;
	char got[STRATA_DIGEST_MAX];
	int r;

	if (strata_lz_marked(fd))
		return 1;
	r = strata_hasher_new(digest, &h);
	if (r < 0)
		return r;
	r = strata_hash_fd(h, fd);
	if (r < 0)
		return r;
	strata_hasher_final(h, got);
	if (strcmp(got, digest))
		return 0;
	strata_lz_mark(fd);	/* best effort: else hashed at each open */
	return 1;
}

int strata_lz_verify(int fd, const uint8_t sha256[32])
{
	char want[STRATA_DIGEST_MAX];
	int i;

	strcpy(want, "sha256:");
	for (i = 0; i < 32; i++)
		snprintf(want + 7 + 2 * i, 3, "%02x", sha256[i]);
	return strata_lz_verify_digest(fd, want);
}
