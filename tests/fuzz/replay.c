/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replay a harness over saved inputs, without libFuzzer: each argument is a
 * file or a directory whose regular files are all fed, in name order, so a
 * crasher in the saved corpus fails `meson test` under the sanitizers of
 * the build. TAP output, one line per input.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

static int run_file(const char *path, unsigned *n)
{
	struct stat sb;
	uint8_t *buf;
	size_t got = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	/* a copy of exactly the input's size, so ASAN sees any overread */
	buf = malloc(sb.st_size ? (size_t)sb.st_size : 1);
	if (!buf) {
		close(fd);
		return -1;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);

		if (r <= 0) {
			fprintf(stderr, "%s: short read\n", path);
			free(buf);
			close(fd);
			return -1;
		}
		got += (size_t)r;
	}
	close(fd);
	LLVMFuzzerTestOneInput(buf, got);
	free(buf);
	printf("ok %u - %s\n", ++*n, path);
	fflush(stdout);
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *dir, unsigned *n)
{
	struct dirent **names;
	int k, count, bad = 0;

	count = scandir(dir, &names, NULL, by_name);
	if (count < 0) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (k = 0; k < count; k++) {
		char path[4096];
		struct stat sb;

		snprintf(path, sizeof(path), "%s/%s", dir, names[k]->d_name);
		if (names[k]->d_name[0] != '.' && stat(path, &sb) == 0 &&
		    S_ISREG(sb.st_mode) && run_file(path, n) < 0)
			bad = -1;
		free(names[k]);
	}
	free(names);
	return bad;
}

int main(int argc, char **argv)
{
	unsigned n = 0;
	int i, bad = 0;

	for (i = 1; i < argc; i++) {
		struct stat sb;

		if (stat(argv[i], &sb) < 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			bad = 1;
		} else if (S_ISDIR(sb.st_mode) ? run_dir(argv[i], &n) < 0
					       : run_file(argv[i], &n) < 0) {
			bad = 1;
		}
	}
	if (n == 0) {
		fprintf(stderr, "no inputs\n");
		bad = 1;
	}
	printf("1..%u\n", n);
	return bad;
}
