/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"

void strata_huge_hint(void *p, size_t len)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t e = ((uintptr_t)p + len) & ~(page - 1);

	if (len >= STRATA_HUGE_MIN && e > a)
		madvise((void *)a, e - a, MADV_HUGEPAGE);	/* a hint */
}

void strata_prefault(void *p, size_t len)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t e = ((uintptr_t)p + len) & ~(page - 1);

	strata_huge_hint(p, len);
#ifdef MADV_POPULATE_WRITE
	if (len >= STRATA_HUGE_MIN && e > a)
		madvise((void *)a, e - a, MADV_POPULATE_WRITE);	/* a hint */
#endif
}

#define HUGE_PAGE (2u << 20)

static size_t page_round(size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (len + page - 1) & ~(page - 1);
}

void *strata_big_alloc(size_t len)
{
	size_t map = page_round(len) + HUGE_PAGE;
	char *p = mmap(NULL, map, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED)
		return NULL;
	/* 2 MiB aligned, the rest of the mapping given back */
	a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	if ((uintptr_t)p + map > a + page_round(len))
		munmap((void *)(a + page_round(len)),
		       (uintptr_t)p + map - (a + page_round(len)));
	madvise((void *)a, page_round(len), MADV_HUGEPAGE);	/* a hint */
#ifdef MADV_POPULATE_WRITE
	/* every byte is written (a TOC read and decompressed into it): its
	 * pages made in one call, not a fault each (Linux 5.14; a hint) */
	madvise((void *)a, page_round(len), MADV_POPULATE_WRITE);
#endif
	return (void *)a;
}

void strata_big_free(void *p, size_t len)
{
	if (p)
		munmap(p, page_round(len));
}

int strata_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int strata_write_atomic(int dirfd, const char *name, const void *buf,
			size_t len, mode_t mode)
{
	char tmp[512];
	cleanup_fd int fd = -1;
	int r;

	snprintf(tmp, sizeof(tmp), ".tmp-%d-%s", (int)getpid(), name);
	for (char *p = tmp; *p; p++)
		if (*p == '/')
			*p = '_';
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	r = strata_write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	fsync(dirfd);
	return 0;
}

int strata_read_fd(int fd, size_t max, char **out, size_t *len)
{
	size_t cap = 8192, n = 0;
	char *buf = malloc(cap + 1);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t r;

		if (n == cap) {
			char *nb;

			if (cap > max) {
				free(buf);
				return -EFBIG;
			}
			cap *= 2;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -errno;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			free(buf);
			return -EFBIG;
		}
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

int strata_read_file(int dirfd, const char *name, size_t max, char **out,
		     size_t *len)
{
	cleanup_fd int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return -errno;
	return strata_read_fd(fd, max, out, len);
}

int strata_open_beneath(int dirfd, const char *path)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

int strata_mkdirat_p(int dirfd, const char *path, mode_t mode)
{
	char buf[4096];
	char *p;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdirat(dirfd, buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdirat(dirfd, buf, mode) < 0) {
		struct stat st;

		if (errno != EEXIST)
			return -errno;
		/* something is there: only a real directory will do */
		if (fstatat(dirfd, buf, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if (!S_ISDIR(st.st_mode))
			return -ENOTDIR;
	}
	return 0;
}

static int rm_contents(int fd)
{
	DIR *d = fdopendir(fd);
	struct dirent *de;
	int r = 0;

	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			continue;
		if (errno == EISDIR || errno == EPERM) {
			int sub = openat(dirfd(d), de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					 O_CLOEXEC);

			if (sub >= 0) {
				int q = rm_contents(sub);

				if (q < 0 && r == 0)
					r = q;
			}
			if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0 &&
			    r == 0)
				r = -errno;
		} else if (errno != ENOENT && r == 0) {
			r = -errno;
		}
	}
	closedir(d);
	return r;
}

int strata_rmtree_at(int dirfd, const char *name)
{
	int fd, r;

	if (unlinkat(dirfd, name, 0) == 0)
		return 0;
	if (errno == ENOENT)
		return 0;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				 O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = rm_contents(fd);
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && r == 0)
		r = -errno;
	return r;
}

int strata_copy_range(int in, int out, off_t off, off_t len)
{
	off_t done = 0;
	char *buf = NULL;

	while (done < len) {
		loff_t io = off + done, oo = off + done;
		ssize_t k = copy_file_range(in, &io, out, &oo,
					    (size_t)(len - done), 0);

		if (k < 0 && (errno == EXDEV || errno == ENOSYS ||
			      errno == EOPNOTSUPP || errno == EINVAL))
			break;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		done += k;
	}
	if (done == len)
		return 0;
	/* another filesystem: copy in the kernel (splice), not through a
	 * buffer here */
	while (done < len && lseek(out, off + done, SEEK_SET) == off + done) {
		off_t pos = off + done;
		ssize_t k = sendfile(out, in, &pos,
				     (size_t)(len - done) < (1u << 30)
				     ? (size_t)(len - done) : (1u << 30));

		if (k < 0 && (errno == EINVAL || errno == ENOSYS))
			break;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		done += k;
	}
	if (done == len)
		return 0;
	buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	while (done < len) {
		size_t want = (size_t)(len - done) < (1u << 20)
			      ? (size_t)(len - done) : 1u << 20;
		ssize_t k = pread(in, buf, want, off + done), o = 0;

		if (k <= 0) {
			free(buf);
			return k < 0 ? -errno : -EIO;
		}
		while (o < k) {
			ssize_t wr = pwrite(out, buf + o, (size_t)(k - o),
					    off + done + o);

			if (wr < 0) {
				free(buf);
				return -errno;
			}
			o += wr;
		}
		done += k;
	}
	free(buf);
	return 0;
}

int strata_copy_data(int in, int out, off_t size)
{
	return strata_copy_range(in, out, 0, size);
}
