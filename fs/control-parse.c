/* SPDX-License-Identifier: Apache-2.0 */
/* The control socket's request lines: see control.h. Apart from control.c
 * so that tests/fuzz/fuzz-control.c builds it without FUSE. */
#include <errno.h>
#include <string.h>

#include "control.h"

int fs_control_parse(const char *line, size_t len,
		     struct control_request *req)
{
	static const struct {
		const char *word;
		enum control_action action;
	} words[] = {
		{ "info", CONTROL_INFO },
		{ "freeze", CONTROL_FREEZE },
		{ "thaw", CONTROL_THAW },
	};
	size_t i;

	req->arg = NULL;
	req->arg_len = 0;
	if (memchr(line, '\0', len))
		return -EINVAL;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (len == strlen(words[i].word) &&
		    !memcmp(line, words[i].word, len)) {
			req->action = words[i].action;
			return 0;
		}
	}
	if (len > 9 && !memcmp(line, "continue ", 9)) {
		req->action = CONTROL_CONTINUE;
		req->arg = line + 9;
		req->arg_len = len - 9;
		return 0;
	}
	return -EINVAL;
}
