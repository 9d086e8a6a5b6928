/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Go's reading of a tar (store/layer/tarscan.c): it follows ustar, pax and GNU
 * framing to the end-of-archive blocks, refuses entry types a layer may
 * not hold naming the entry, reads numeric fields and pax records as Go's
 * archive/tar does, and refuses what Go refuses (it never stops watching). Archives are built here block by block, so each case
 * says exactly which bytes the watch sees; fed whole and one byte at a
 * time (the stream arrives in chunks of any size).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tarscan.h"

struct buf {
	unsigned char *p;
	size_t len;
};

static void put(struct buf *b, const void *data, size_t n)
{
	b->p = realloc(b->p, b->len + n);
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void pad(struct buf *b)
{
	static const unsigned char zero[512];

	if (b->len % 512)
		put(b, zero, 512 - b->len % 512);
}

/* One header block: @name, type flag @type, @size (octal, or base-256
 * when @b256); a correct checksum unless @bad_sum. */
static void header(struct buf *b, const char *name, char type, uint64_t size,
		   bool b256, bool bad_sum)
{
	unsigned char h[512] = { 0 };
	unsigned long sum = 0;
	size_t i;

	strncpy((char *)h, name, 100);
	memcpy(h + 100, "0000644", 8);
	memcpy(h + 108, "0000000", 8);
	memcpy(h + 116, "0000000", 8);
	if (b256) {
		h[124] = 0x80;
		for (i = 0; i < 8; i++)
			h[135 - i] = (unsigned char)(size >> (8 * i));
	} else {
		snprintf((char *)h + 124, 12, "%011llo",
			 (unsigned long long)size);
	}
	memcpy(h + 136, "00000000000", 12);
	h[156] = (unsigned char)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	for (i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06lo", sum + (bad_sum ? 1 : 0));
	put(b, h, 512);
}

/* Recompute the checksum of the header block at @h. */
static void resum(unsigned char *h)
{
	unsigned long sum = 0;
	size_t i;

	memset(h + 148, ' ', 8);
	for (i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06lo", sum);
}

static void entry(struct buf *b, const char *name, char type,
		  const char *data, size_t n)
{
	header(b, name, type, n, false, false);
	if (n) {
		put(b, data, n);
		pad(b);
	}
}

/* A pax header with the one record "LEN key=value\n" (LEN counts itself). */
static void pax(struct buf *b, const char *key, const char *value)
{
	char rec[512];
	size_t n = strlen(key) + strlen(value) + 3, len = n + 1;

	while (len != n + (size_t)snprintf(NULL, 0, "%zu", len))
		len = n + (size_t)snprintf(NULL, 0, "%zu", len);
	snprintf(rec, sizeof(rec), "%zu %s=%s\n", len, key, value);
	entry(b, "PaxHeaders/x", 'x', rec, strlen(rec));
}

static void end(struct buf *b)
{
	static const unsigned char zero[1024];

	put(b, zero, sizeof(zero));
}

/* Feed @b whole, then byte by byte: same verdict both ways. Returns the
 * result of the whole feed, the message in @msg; *followed as the watch
 * says after the whole feed. */
static int scan(const struct buf *b, char *msg, size_t msg_size,
		bool *followed)
{
	struct strata_tarscan t = { 0 }, u = { 0 };
	char m2[256] = "";
	int r, r2 = 0;
	size_t i;

	msg[0] = '\0';
	r = strata_tarscan_feed(&t, b->p, b->len, msg, msg_size);
	*followed = strata_tarscan_followed(&t);
	for (i = 0; i < b->len && r2 == 0; i++)
		r2 = strata_tarscan_feed(&u, b->p + i, 1, m2, sizeof(m2));
	ok(r == r2 && !strcmp(msg, m2) &&
	   *followed == strata_tarscan_followed(&u),
	   "same verdict fed whole and byte by byte");
	strata_tarscan_free(&t);
	strata_tarscan_free(&u);
	return r;
}

int main(void)
{
	char msg[256], big[70000];
	bool followed;
	struct buf b;

	/* plain ustar: every allowed type, data ending on and off a block */
	memset(&b, 0, sizeof(b));
	entry(&b, "d/", '5', NULL, 0);
	entry(&b, "d/f", '0', "hello", 5);
	memset(big, 'x', 1024);
	entry(&b, "d/block", '0', big, 1024);
	entry(&b, "d/old", '\0', "a", 1);
	entry(&b, "d/contig", '7', "c", 1);
	entry(&b, "d/hl", '1', NULL, 0);
	entry(&b, "d/sym", '2', NULL, 0);
	entry(&b, "d/chr", '3', NULL, 0);
	entry(&b, "d/blk", '4', NULL, 0);
	entry(&b, "d/fifo", '6', NULL, 0);
	end(&b);
	is_int(scan(&b, msg, sizeof(msg), &followed), 0, "ustar accepted");
	ok(followed, "framing followed to the end blocks");
	free(b.p);

	/* pax: a size override and a path; a long GNU name; a global header */
	memset(&b, 0, sizeof(b));
	entry(&b, "pax_global_header", 'g', "17 comment=hello\n", 17);
	pax(&b, "path", "long/name/f");
	entry(&b, "trunc", '0', "pax", 3);
	pax(&b, "size", "600");
	header(&b, "sized", '0', 0, false, false);	/* real size: 600 */
	memset(big, 'y', 600);
	put(&b, big, 600);
	pad(&b);
	entry(&b, "././@LongLink", 'L', "gnu/long/name", 14);
	entry(&b, "gnu/long/na", '0', "g", 1);
	end(&b);
	is_int(scan(&b, msg, sizeof(msg), &followed), 0,
	       "pax and GNU extended headers accepted");
	ok(followed, "pax size override and GNU long name followed");
	free(b.p);

	/* a bad type after all of those is found, named by its pax path */
	memset(&b, 0, sizeof(b));
	pax(&b, "size", "600");
	header(&b, "sized", '0', 0, false, false);
	put(&b, big, 600);
	pad(&b);
	pax(&b, "path", "deep/dir/weird");
	entry(&b, "weird-short", 'Z', "abc", 3);
	end(&b);
	is_int(scan(&b, msg, sizeof(msg), &followed), -1, "type Z refused");
	ok(strstr(msg, "deep/dir/weird") && strstr(msg, "'Z'"),
	   "the message names the entry by its pax path and the type: %s",
	   msg);
	free(b.p);

	/* old GNU sparse and other foreign types, named by the ustar name */
	{
		static const char types[] = "SVDMNA9";
		size_t i;

		for (i = 0; types[i]; i++) {
			memset(&b, 0, sizeof(b));
			entry(&b, "ok", '0', "ok", 2);
			entry(&b, "bad", types[i], "x", 1);
			end(&b);
			is_int(scan(&b, msg, sizeof(msg), &followed), -1,
			       "type %c refused", types[i]);
			ok(strstr(msg, "entry bad:") != NULL, "named: %s", msg);
			free(b.p);
		}
	}

	/* a base-256 size is followed */
	memset(&b, 0, sizeof(b));
	header(&b, "b256", '0', 700, true, false);
	memset(big, 'z', 700);
	put(&b, big, 700);
	pad(&b);
	entry(&b, "next", 'Z', NULL, 0);
	end(&b);
	is_int(scan(&b, msg, sizeof(msg), &followed), -1,
	       "base-256 size followed to the next header");
	free(b.p);

	/* a bad checksum: Go's archive/tar refuses the layer, so does the
	 * watch (it used to stop watching and let the 'Z' through) */
	memset(&b, 0, sizeof(b));
	entry(&b, "ok", '0', "ok", 2);
	header(&b, "garbled", '0', 0, false, true);
	entry(&b, "later", 'Z', NULL, 0);
	end(&b);
	is_int(scan(&b, msg, sizeof(msg), &followed), -1,
	       "a bad checksum is a refusal");
	ok(strstr(msg, "after entry ok") && strstr(msg, "checksum"),
	   "named by the entry before it: %s", msg);
	free(b.p);

	/* an extended header over 1 MiB: Go's ErrFieldTooLong, refused */
	{
		static char huge[(1u << 20) + 64];
		size_t n;

		memset(&b, 0, sizeof(b));
		memset(huge, 'v', sizeof(huge));
		n = (size_t)snprintf(huge, 32, "%zu path=", sizeof(huge));
		huge[n] = 'v';
		huge[sizeof(huge) - 1] = '\n';
		entry(&b, "PaxHeaders/big", 'x', huge, sizeof(huge));
		entry(&b, "f", 'Z', NULL, 0);
		end(&b);
		is_int(scan(&b, msg, sizeof(msg), &followed), -1,
		       "an extended header over 1 MiB is refused");
		ok(strstr(msg, "1 MiB") != NULL, "said so: %s", msg);
		free(b.p);
	}

	/* numeric fields, each as Go's parseNumeric reads it */
	{
		static const struct {
			const char *what;
			unsigned char size[12];
			int r;		/* 0: read as @want; -1: refused */
			int64_t want;
		} cases[] = {
			{ "all NULs", { 0 }, 0, 0 },
			{ "leading NULs", { 0, 0, 0, '0', '0', '0', '1', '0',
					    '0', '0', 0, 0 }, 0, 512 },
			{ "spaces around", { ' ', ' ', '1', '2', ' ', ' ', ' ',
					     ' ', ' ', ' ', ' ', 0 }, 0, 10 },
			{ "NUL then garbage", { '1', '2', 0, 'z', 'z', 0 }, 0,
			  10 },
			{ "garbage after a space", { '1', '2', ' ', 'z' }, -1,
			  0 },
			{ "a tab", { '\t', '1', '2' }, -1, 0 },
			{ "a sign", { '-', '1', '2' }, -1, 0 },
			{ "not octal", { '1', '8' }, -1, 0 },
			{ "base-256", { 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0 },
			  0, 512 },
			{ "negative base-256", { 0xff, 0xff, 0xff, 0xff, 0xff,
						 0xff, 0xff, 0xff, 0xff, 0xff,
						 0xff, 0xfe }, -1, 0 },
			{ "base-256 over 2^63", { 0x80, 0, 0, 0x80, 0, 0, 0, 0,
						  0, 0, 0, 0 }, -1, 0 },
		};
		size_t i;

		for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			struct strata_tarscan t = { 0 };
			const struct strata_tar_entry *e;
			char data[1024];
			int r;

			memset(&b, 0, sizeof(b));
			header(&b, "a", '0', 0, false, false);
			memcpy(b.p + 124, cases[i].size, 12);
			resum(b.p);
			memset(data, 0, sizeof(data));
			put(&b, data, (size_t)cases[i].want);
			pad(&b);
			entry(&b, "b", '0', "b", 1);
			end(&b);
			r = strata_tarscan_feed(&t, b.p, b.len, msg,
						sizeof(msg));
			is_int(r, cases[i].r, "size %s: %s", cases[i].what,
			       r ? msg : "read");
			e = strata_tarscan_next(&t);
			if (cases[i].r == 0)
				ok(e && !strcmp(e->name, "a") &&
				   e->size == cases[i].want &&
				   (e = strata_tarscan_next(&t)) &&
				   !strcmp(e->name, "b") &&
				   strata_tarscan_followed(&t),
				   "size %s: %lld, as Go reads it, then b",
				   cases[i].what, (long long)cases[i].want);
			else
				ok(strstr(msg, "entry a:") != NULL,
				   "names the entry: %s", msg);
			strata_tarscan_free(&t);
			free(b.p);
		}
	}

	/* a zero block and then a header: Go's ErrHeader */
	memset(&b, 0, sizeof(b));
	entry(&b, "a", '0', "a", 1);
	put(&b, (char[512]){ 0 }, 512);
	entry(&b, "b", '0', "b", 1);
	end(&b);
	is_int(scan(&b, msg, sizeof(msg), &followed), -1,
	       "a header after one zero block is refused");
	free(b.p);

	/* the stream cut inside an entry's data: refused at the end */
	{
		struct strata_tarscan t = { 0 };

		memset(&b, 0, sizeof(b));
		entry(&b, "cut", '0', big, 700);
		is_int(strata_tarscan_feed(&t, b.p, 600, msg, sizeof(msg)), 0,
		       "fed a cut stream");
		is_int(strata_tarscan_finish(&t, msg, sizeof(msg)), -1,
		       "refused at its end");
		ok(strstr(msg, "entry cut:") != NULL, "named: %s", msg);
		strata_tarscan_free(&t);
		free(b.p);
	}

	/* one zero block, then a partial block: Go's second io.ReadFull
	 * gives ErrUnexpectedEOF; one zero block and nothing is a clean end */
	{
		static const unsigned char zero[512];
		struct strata_tarscan t = { 0 };

		memset(&b, 0, sizeof(b));
		entry(&b, "file", '0', NULL, 0);
		put(&b, zero, sizeof(zero));
		put(&b, "junk", 4);
		is_int(strata_tarscan_feed(&t, b.p, b.len, msg, sizeof(msg)), 0,
		       "fed a stream that ends in a partial block");
		is_int(strata_tarscan_finish(&t, msg, sizeof(msg)), -1,
		       "a partial block after one zero block is refused");
		ok(strstr(msg, "after entry file") != NULL, "named: %s", msg);
		strata_tarscan_free(&t);
		memset(&t, 0, sizeof(t));
		is_int(strata_tarscan_feed(&t, b.p, b.len - 4, msg,
					   sizeof(msg)), 0, "fed one zero block");
		is_int(strata_tarscan_finish(&t, msg, sizeof(msg)), 0,
		       "one zero block and the end: a clean end, as Go");
		strata_tarscan_free(&t);
		free(b.p);
	}

	/* pax records: Go's values; one out of grammar is refused */
	{
		struct strata_tarscan t = { 0 };
		const struct strata_tar_entry *e;

		memset(&b, 0, sizeof(b));
		pax(&b, "uid", "70000");
		entry(&b, "p", '0', NULL, 0);
		pax(&b, "mtime", "-1.5");
		entry(&b, "q", '0', NULL, 0);
		end(&b);
		is_int(strata_tarscan_feed(&t, b.p, b.len, msg, sizeof(msg)),
		       0, "pax uid and mtime read");
		e = strata_tarscan_next(&t);
		ok(e && e->uid == 70000, "pax uid 70000");
		e = strata_tarscan_next(&t);
		/* Go: time.Unix(-1, -5e8) is -2 s + 5e8 ns */
		ok(e && e->mtime_sec == -2 && e->mtime_nsec == 500000000,
		   "pax mtime -1.5 as Go's parsePAXTime");
		strata_tarscan_free(&t);
		free(b.p);

		memset(&b, 0, sizeof(b));
		pax(&b, "mtime", "12x");
		entry(&b, "r", '0', NULL, 0);
		end(&b);
		is_int(scan(&b, msg, sizeof(msg), &followed), -1,
		       "pax mtime 12x refused (Go: ErrHeader)");
		ok(strstr(msg, "entry r:") != NULL, "named: %s", msg);
		free(b.p);
	}
	return done_testing();
}
