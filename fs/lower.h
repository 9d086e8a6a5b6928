/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read-only lower stack of a writable mount, behind one interface with
 * two implementations: an image's layers served from their metadata indexes
 * (lower-image.c, on top of the read-only engine: merge.c, node.c) and plain
 * directories given with lowerdir= (lower-dirs.c), which may hold overlay
 * whiteouts (character device 0:0), `.wh.` files and opaque markers.
 *
 * A struct lnode names one merged lower object, whiteouts already applied;
 * it is reference counted (lower_get/lower_put) and immutable, so it can be
 * used without locks. Inode numbers are stable across mounts of the same
 * lower stack and shared by hardlinks.
 */
#ifndef STRATAFS_LOWER_H
#define STRATAFS_LOWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct lower;
struct lnode;

struct lower_ops {
	struct lnode *(*root)(struct lower *lw);
	/* Child @name of directory @dir. Return: 0, -ENOENT, -ENOMEM. */
	int (*lookup)(struct lower *lw, struct lnode *dir, const char *name,
		      struct lnode **out);
	void (*stat)(struct lower *lw, struct lnode *n, struct stat *st);
	/* Call @fn for each visible child of @dir (no "." or ".."), in a
	 * stable order; stop early when @fn returns non-zero. */
	int (*readdir)(struct lower *lw, struct lnode *dir,
		       int (*fn)(void *ctx, const char *name, mode_t type,
				 ino_t ino),
		       void *ctx);
	/* Open a regular file's content read-only. Return: fd, or -ENODATA
	 * for an empty file with no content, or negative errno. */
	int (*open)(struct lower *lw, struct lnode *n);
	/* Symlink target into @buf (NUL-terminated). Return: length. */
	ssize_t (*readlink)(struct lower *lw, struct lnode *n, char *buf,
			    size_t size);
	/* NUL-separated names, like listxattr(2); size 0 asks the length. */
	ssize_t (*listxattr)(struct lower *lw, struct lnode *n, char *buf,
			     size_t size);
	ssize_t (*getxattr)(struct lower *lw, struct lnode *n,
			    const char *name, void *buf, size_t size);
	/* Call @fn with the path (from the root, no leading slash) of every
	 * other name of non-directory @n's hardlink group, where the lower
	 * stack can tell (0 calls otherwise). Paths are candidates: the
	 * caller checks what each shows. */
	int (*links)(struct lower *lw, struct lnode *n,
		     int (*fn)(void *ctx, const char *path), void *ctx);
	void (*get)(struct lnode *n);
	void (*put)(struct lower *lw, struct lnode *n);
	int (*statfs_fd)(struct lower *lw);
	void (*free)(struct lower *lw);
};

struct lower {
	const struct lower_ops *ops;
};

struct fs;
/* The image's layers, served by the read-only engine @fs. */
int lower_image_new(struct fs *fs, struct lower **out);
/* Plain directories, top first. Return: 0 or -errno (message printed). */
int lower_dirs_new(char **dirs, size_t n, struct lower **out);

#endif
