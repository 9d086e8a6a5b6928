/* SPDX-License-Identifier: Apache-2.0 */
/* store/base/fsutil.c: atomic writes, whole-file reads, mkdir -p, rm -rf. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"
#include "tap.h"

static char tmpdir[4096];

/* Names in @dirfd, sorted, joined by ','. */
static void list_dir(int dirfd, char *out, size_t len)
{
	char names[32][256];
	size_t n = 0, i, j, o = 0;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	out[0] = '\0';
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) && n < 32) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(names[n++], sizeof(names[0]), "%s", de->d_name);
	}
	closedir(d);
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			char t[256];

			memcpy(t, names[j], 256);
			memcpy(names[j], names[j - 1], 256);
			memcpy(names[j - 1], t, 256);
		}
	for (i = 0; i < n; i++)
		o += (size_t)snprintf(out + o, len - o, "%s%s", i ? "," : "",
				      names[i]);
}

static void test_write_atomic(int root)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	struct stat sb, sb2;
	char names[1024];
	int r;

	is_int(mkdirat(root, "w", 0755), 0, "mkdir w");
	cleanup_fd int d = openat(root, "w", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	is_int(strata_write_atomic(d, "f", "hello\n", 6, 0640), 0,
	       "write_atomic f");
	is_int(strata_read_file(d, "f", 100, &buf, &len), 0, "read f back");
	is_int(len, 6, "f has 6 bytes");
	is_str(buf, "hello\n", "f holds the content");
	is_int(fstatat(d, "f", &sb, 0), 0, "stat f");
	is_int(sb.st_mode & 07777, 0640, "f has mode 0640");
	ok(S_ISREG(sb.st_mode), "f is a regular file");
	list_dir(d, names, sizeof(names));
	is_str(names, "f", "no temporary file left beside f");

	/* replacing: new content, new inode (rename, not rewrite in place) */
	free(buf);
	buf = NULL;
	is_int(strata_write_atomic(d, "f", "second version", 14, 0600), 0,
	       "write_atomic replaces f");
	is_int(strata_read_file(d, "f", 100, &buf, &len), 0, "read f again");
	is_str(buf, "second version", "f holds the new content");
	is_int(len, 14, "f has 14 bytes");
	is_int(fstatat(d, "f", &sb2, 0), 0, "stat f again");
	ok(sb2.st_ino != sb.st_ino, "replaced by rename (new inode)");
	list_dir(d, names, sizeof(names));
	is_str(names, "f", "still no temporary file");

	/* empty file */
	free(buf);
	buf = NULL;
	is_int(strata_write_atomic(d, "empty", "", 0, 0644), 0,
	       "write_atomic of 0 bytes");
	is_int(strata_read_file(d, "empty", 10, &buf, &len), 0, "read empty");
	is_int(len, 0, "empty has 0 bytes");
	is_str(buf, "", "empty reads as \"\"");

	/* a target whose directory does not exist: error, nothing left */
	r = strata_write_atomic(d, "nodir/f", "x", 1, 0644);
	is_int(r, -ENOENT, "write_atomic into a missing dir -> ENOENT");
	list_dir(d, names, sizeof(names));
	is_str(names, "empty,f", "failed write left no temporary file");

	/* a target that is a directory: rename fails, temp removed */
	is_int(mkdirat(d, "sub", 0755), 0, "mkdir w/sub");
	is_int(mkdirat(d, "sub/x", 0755), 0, "mkdir w/sub/x");
	r = strata_write_atomic(d, "sub", "x", 1, 0644);
	ok(r == -EISDIR || r == -ENOTEMPTY || r == -EEXIST,
	   "write_atomic over a non-empty directory fails (%d)", r);
	list_dir(d, names, sizeof(names));
	is_str(names, "empty,f,sub", "no temporary file after that failure");
}

static void test_read_file(int root)
{
	cleanup_free char *big = malloc(20000);
	char *buf = NULL;
	size_t len = 7;
	int r;

	if (!big)
		abort();
	memset(big, 'x', 20000);
	is_int(strata_write_atomic(root, "b8192", big, 8192, 0644), 0,
	       "write 8192 bytes");
	is_int(strata_write_atomic(root, "b8193", big, 8193, 0644), 0,
	       "write 8193 bytes");
	is_int(strata_write_atomic(root, "b20000", big, 20000, 0644), 0,
	       "write 20000 bytes");

	r = strata_read_file(root, "b8192", 8192, &buf, &len);
	is_int(r, 0, "read 8192 bytes with max 8192");
	is_int(len, 8192, "got 8192 bytes");
	ok(buf && buf[8192] == '\0', "buffer NUL-terminated");
	free(buf);
	buf = NULL;
	r = strata_read_file(root, "b8193", 8192, &buf, &len);
	is_int(r, -EFBIG, "8193 bytes with max 8192 -> EFBIG");
	ok(buf == NULL, "no buffer returned on EFBIG");
	r = strata_read_file(root, "b20000", 100, &buf, &len);
	is_int(r, -EFBIG, "20000 bytes with max 100 -> EFBIG");
	r = strata_read_file(root, "b20000", 20000, &buf, &len);
	is_int(r, 0, "20000 bytes with max 20000");
	is_int(len, 20000, "got 20000 bytes");
	ok(buf && !memcmp(buf, big, 20000), "content matches");
	free(buf);
	buf = NULL;
	is_int(strata_read_file(root, "missing", 10, &buf, &len), -ENOENT,
	       "read of a missing file -> ENOENT");
}

static bool is_dir_mode(int dirfd, const char *p, mode_t mode)
{
	struct stat sb;

	return fstatat(dirfd, p, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISDIR(sb.st_mode) && (sb.st_mode & 07777) == mode;
}

static void test_mkdir_p(int root)
{
	int r;

	is_int(strata_mkdirat_p(root, "m/a/b/c", 0755), 0, "mkdir -p m/a/b/c");
	ok(is_dir_mode(root, "m", 0755), "m is a 0755 dir");
	ok(is_dir_mode(root, "m/a", 0755), "m/a is a 0755 dir");
	ok(is_dir_mode(root, "m/a/b", 0755), "m/a/b is a 0755 dir");
	ok(is_dir_mode(root, "m/a/b/c", 0755), "m/a/b/c is a 0755 dir");
	is_int(strata_mkdirat_p(root, "m/a/b/c", 0755), 0,
	       "mkdir -p of an existing tree succeeds");
	is_int(strata_mkdirat_p(root, "m/a/x/", 0700), 0,
	       "mkdir -p with a trailing slash");
	ok(is_dir_mode(root, "m/a/x", 0700), "m/a/x is a 0700 dir");
	is_int(strata_mkdirat_p(root, "m//y//z", 0755), 0,
	       "mkdir -p with double slashes");
	ok(is_dir_mode(root, "m/y/z", 0755), "m/y/z is a dir");
	{
		char abs[4200];

		snprintf(abs, sizeof(abs), "%s/abs/p/q", tmpdir);
		is_int(strata_mkdirat_p(AT_FDCWD, abs, 0755), 0,
		       "mkdir -p of an absolute path");
		ok(is_dir_mode(root, "abs/p/q", 0755), "abs/p/q is a dir");
	}

	is_int(strata_write_atomic(root, "m/file", "x", 1, 0644), 0,
	       "create m/file");
	r = strata_mkdirat_p(root, "m/file/sub", 0755);
	is_int(r, -ENOTDIR, "mkdir -p through a file -> ENOTDIR");
	r = strata_mkdirat_p(root, "m/file", 0755);
	ok(r == -EEXIST || r == -ENOTDIR,
	   "mkdir -p where the last component is a file fails (got %d)", r);
	is_int(symlinkat("a", root, "m/link"), 0, "symlink m/link -> a");
	r = strata_mkdirat_p(root, "m/link", 0755);
	ok(r == -EEXIST || r == -ENOTDIR,
	   "mkdir -p where the last component is a symlink fails (got %d)", r);
}

static bool exists(int dirfd, const char *p)
{
	struct stat sb;

	return fstatat(dirfd, p, &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

static void test_rmtree(int root)
{
	is_int(strata_mkdirat_p(root, "outside/keep", 0755), 0, "mkdir outside/keep");
	is_int(strata_write_atomic(root, "outside/keep/f", "k", 1, 0644), 0,
	       "outside/keep/f");
	is_int(strata_mkdirat_p(root, "t/a/b/c", 0755), 0, "mkdir t/a/b/c");
	is_int(strata_mkdirat_p(root, "t/d", 0755), 0, "mkdir t/d");
	is_int(strata_write_atomic(root, "t/a/b/c/f", "1", 1, 0644), 0, "t/a/b/c/f");
	is_int(strata_write_atomic(root, "t/a/g", "2", 1, 0000), 0, "t/a/g mode 0");
	is_int(strata_write_atomic(root, "t/.hidden", "3", 1, 0644), 0, "t/.hidden");
	is_int(symlinkat("../outside", root, "t/d/escape"), 0,
	       "t/d/escape -> ../outside");
	is_int(symlinkat("../../outside/keep", root, "t/a/abs"), 0,
	       "t/a/abs -> outside/keep");
	/* root removes entries of a read-only directory too */
	if (geteuid() == 0)
		is_int(fchmodat(root, "t/d", 0500, 0), 0, "t/d mode 0500");

	is_int(strata_rmtree_at(root, "t"), 0, "rmtree t");
	ok(!exists(root, "t"), "t is gone");
	ok(exists(root, "outside/keep/f"), "symlink targets outside survive");

	/* a symlink to a directory: the link goes, the directory stays */
	is_int(symlinkat("outside", root, "lnk"), 0, "lnk -> outside");
	is_int(strata_rmtree_at(root, "lnk"), 0, "rmtree lnk");
	ok(!exists(root, "lnk"), "lnk is gone");
	ok(exists(root, "outside/keep/f"), "its target is intact");

	is_int(strata_write_atomic(root, "plain", "p", 1, 0644), 0, "plain file");
	is_int(strata_rmtree_at(root, "plain"), 0, "rmtree of a file");
	ok(!exists(root, "plain"), "plain is gone");
	is_int(strata_rmtree_at(root, "never-existed"), 0,
	       "rmtree of a missing name succeeds");
	is_int(mkdirat(root, "emptydir", 0755), 0, "mkdir emptydir");
	is_int(strata_rmtree_at(root, "emptydir"), 0, "rmtree of an empty dir");
	ok(!exists(root, "emptydir"), "emptydir is gone");
}

int main(void)
{
	const char *t = getenv("TMPDIR");
	int root;

	umask(022);
	snprintf(tmpdir, sizeof(tmpdir), "%s/strata-fsutil-XXXXXX",
		 t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 99;
	}
	root = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return 99;
	test_write_atomic(root);
	test_read_file(root);
	test_mkdir_p(root);
	test_rmtree(root);
	is_int(strata_rmtree_at(AT_FDCWD, tmpdir), 0, "rmtree of the temp dir");
	ok(access(tmpdir, F_OK) < 0 && errno == ENOENT, "temp dir removed");
	close(root);
	return done_testing();
}
