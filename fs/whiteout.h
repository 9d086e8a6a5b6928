/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Whiteout and opaque markers in overlay-format directories (lower dirs
 * and the upper directory). Read in every form; written in the overlay
 * form where privileges allow (character device 0:0, trusted.* xattrs),
 * else as `.wh.` files and user.* xattrs.
 */
#ifndef STRATAFS_WHITEOUT_H
#define STRATAFS_WHITEOUT_H

#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define WH_PREFIX ".wh."
#define WH_PREFIX_LEN 4
#define WH_OPQ_FILE ".wh..wh..opq"
#define WH_OPAQUE_TRUSTED "trusted.overlay.opaque"
#define WH_OPAQUE_USER "user.overlay.opaque"
#define WH_METACOPY_TRUSTED "trusted.overlay.metacopy"
#define WH_METACOPY_USER "user.overlay.metacopy"
/* the kernel overlay's mark of a copy-up (a file handle of the origin) */
#define WH_ORIGIN_TRUSTED "trusted.overlay.origin"
#define WH_ORIGIN_USER "user.overlay.origin"
/* stratafs's: the inode number the copied-up file showed (decimal), so
 * every name of it shows that number again after a remount, also names
 * with no lower entry. The kernel overlay ignores (and hides) it. */
#define WH_INO_TRUSTED "trusted.overlay.strata.ino"
#define WH_INO_USER "user.overlay.strata.ino"
#define WH_OVERRIDE_STAT "user.containers.override_stat"

static inline bool wh_is_whiteout_stat(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

/* Xattrs that belong to the overlay format, never shown to users. */
static inline bool wh_private_xattr(const char *name)
{
	return !strncmp(name, "trusted.overlay.", 16) ||
	       !strncmp(name, "user.overlay.", 13) ||
	       !strcmp(name, WH_OVERRIDE_STAT);
}

#endif
