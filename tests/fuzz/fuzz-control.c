/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket's request lines (fs/control-parse.c): what any
 * process that reaches a writable mount's socket may send. Each input is
 * split at newlines, as serve() reads it, and every line goes through
 * fs_control_parse(). Besides memory safety it checks what a parse
 * promises: only the four requests pass, never with a NUL byte, and a
 * continue's argument is the rest of the line, never empty.
 */
#include <errno.h>
#include <string.h>

#include "control.h"
#include "fuzz.h"

static void check_line(const char *line, size_t len)
{
	struct control_request req;
	int r = fs_control_parse(line, len, &req);

	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL);
		return;
	}
	FUZZ_CHECK(!memchr(line, '\0', len));
	switch (req.action) {
	case CONTROL_INFO:
		FUZZ_CHECK(len == 4 && !memcmp(line, "info", 4));
		break;
	case CONTROL_FREEZE:
		FUZZ_CHECK(len == 6 && !memcmp(line, "freeze", 6));
		break;
	case CONTROL_THAW:
		FUZZ_CHECK(len == 4 && !memcmp(line, "thaw", 4));
		break;
	case CONTROL_CONTINUE:
		FUZZ_CHECK(len > 9 && !memcmp(line, "continue ", 9));
		FUZZ_CHECK(req.arg == line + 9 && req.arg_len == len - 9);
		break;
	default:
		FUZZ_CHECK(0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

		check_line(p, len);
		p += len + (nl ? 1 : 0);
	}
	return 0;
}
