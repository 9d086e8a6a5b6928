/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PAX tar headers for commit (image-spec layer.md; OCI-RULES.md §1.11).
 * Hand-written rather than libarchive's pax writer, which adds atime/ctime
 * and LIBARCHIVE.xattr records: every byte here follows from the entry, so
 * the same tree gives the same tar, and so the same diff_id, everywhere.
 * Owners are numeric with empty uname/gname; xattrs are SCHILY.xattr.*
 * records, the form Go readers (umoci, containerd, skopeo) understand.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commit.h"

#define BLOCK 512

struct pax {
	char *buf;
	size_t len, cap;
	int err;
};

static void pax_add(struct pax *p, const char *key, const void *val,
		    size_t vlen)
{
	size_t base = strlen(key) + vlen + 3, total, d = 1;
	char num[24];
	int n;

	for (size_t t = base; t >= 10; t /= 10)
		d++;
	total = base + d;
	n = snprintf(num, sizeof(num), "%zu", total);
	if ((size_t)n > d)
		total++;
	n = snprintf(num, sizeof(num), "%zu", total);
	if (p->len + total > p->cap) {
		size_t cap = (p->len + total) * 2 + 256;
		char *nb = realloc(p->buf, cap);

		if (!nb) {
			p->err = -ENOMEM;
			return;
		}
		p->buf = nb;
		p->cap = cap;
	}
	memcpy(p->buf + p->len, num, (size_t)n);
	p->len += (size_t)n;
	p->buf[p->len++] = ' ';
	memcpy(p->buf + p->len, key, strlen(key));
	p->len += strlen(key);
	p->buf[p->len++] = '=';
	memcpy(p->buf + p->len, val, vlen);
	p->len += vlen;
	p->buf[p->len++] = '\n';
}

static void pax_str(struct pax *p, const char *key, const char *val)
{
	pax_add(p, key, val, strlen(val));
}

static void octal(char *field, size_t width, uint64_t v)
{
	/* width - 1 digits and a NUL */
	snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
}

static bool fits_octal(uint64_t v, size_t width)
{
	return v < (1ull << (3 * (width - 1)));
}

static void finish_header(unsigned char *b)
{
	unsigned sum = 0;
	size_t i;

	memset(b + 148, ' ', 8);
	for (i = 0; i < BLOCK; i++)
		sum += b[i];
	snprintf((char *)b + 148, 8, "%06o", sum);
	b[155] = ' ';
}

static void ustar(unsigned char *b, const char *name, char type,
		  uint32_t mode, uint64_t uid, uint64_t gid, uint64_t size,
		  uint64_t mtime, const char *link, uint32_t maj, uint32_t min)
{
	memset(b, 0, BLOCK);
	strncpy((char *)b, name, 100);
	octal((char *)b + 100, 8, mode);
	octal((char *)b + 108, 8, fits_octal(uid, 8) ? uid : 0);
	octal((char *)b + 116, 8, fits_octal(gid, 8) ? gid : 0);
	octal((char *)b + 124, 12, fits_octal(size, 12) ? size : 0);
	octal((char *)b + 136, 12, fits_octal(mtime, 12) ? mtime : 0);
	b[156] = (unsigned char)type;
	if (link)
		strncpy((char *)b + 157, link, 100);
	memcpy(b + 257, "ustar", 6);
	memcpy(b + 263, "00", 2);
	octal((char *)b + 329, 8, fits_octal(maj, 8) ? maj : 0);
	octal((char *)b + 337, 8, fits_octal(min, 8) ? min : 0);
	finish_header(b);
}

int strata_tar_pad(struct strata_blobw *w, uint64_t size)
{
	static const char zero[BLOCK];
	size_t pad = (BLOCK - size % BLOCK) % BLOCK;

	return pad ? strata_blobw_write(w, zero, pad) : 0;
}

int strata_tar_member(struct strata_blobw *w, const char *name, char type,
		      uint64_t size, int64_t mtime)
{
	struct strata_tar_hdr h = {
		.path = name,
		.type = type,
		.mode = type == '5' ? 0755 : 0644,
		.size = size,
		.mtime_sec = mtime,
	};

	return strata_tar_header(w, &h);
}

int strata_tar_file(struct strata_blobw *w, const char *name, const void *buf,
		    size_t len, int64_t mtime)
{
	int r = strata_tar_member(w, name, '0', len, mtime);

	if (r == 0)
		r = strata_blobw_write(w, buf, len);
	if (r == 0)
		r = strata_tar_pad(w, len);
	return r;
}

int strata_tar_end(struct strata_blobw *w)
{
	static const char zero[2 * BLOCK];
	const char *toc;
	size_t len;
	/* eStargz's TOC is the tar's last entry */
	int r = strata_blobw_toc_entry(w, &toc, &len);

	if (r == 0 && toc)
		r = strata_tar_file(w, "stargz.index.json", toc, len, 0);
	return r < 0 ? r : strata_blobw_write(w, zero, sizeof(zero));
}

/* Go's formatPAXTime: seconds, then the fraction without its trailing
 * zeros; a time before 1970 is its magnitude with a '-' (@sec, @nsec:
 * the floor second and the nanoseconds after it, as struct timespec). */
static void pax_time(char *buf, size_t len, int64_t sec, uint32_t nsec)
{
	/* |sec| - 1, without overflow at INT64_MIN */
	uint64_t below = sec < 0 ? (uint64_t)-(sec + 1) : 0;
	uint64_t mag = sec >= 0 ? (uint64_t)sec : nsec ? below : below + 1;
	int n;

	if (sec < 0 && nsec)
		nsec = 1000000000u - nsec;	/* -(below + 1 - nsec/1e9) */
	n = snprintf(buf, len, "%s%llu.%09u", sec < 0 ? "-" : "",
		     (unsigned long long)mag, nsec);
	while (n > 0 && buf[n - 1] == '0')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '.')
		buf[--n] = '\0';
}

static void build_pax(struct pax *p, const struct strata_tar_hdr *h,
		      const char *name, uint64_t mtime)
{
	char num[48];
	size_t i;

	if (strlen(name) > 100)
		pax_str(p, "path", name);
	if (h->linkname && strlen(h->linkname) > 100)
		pax_str(p, "linkpath", h->linkname);
	if (!fits_octal(h->size, 12)) {
		snprintf(num, sizeof(num), "%llu", (unsigned long long)h->size);
		pax_str(p, "size", num);
	}
	if (!fits_octal(h->uid, 8)) {
		snprintf(num, sizeof(num), "%u", h->uid);
		pax_str(p, "uid", num);
	}
	if (!fits_octal(h->gid, 8)) {
		snprintf(num, sizeof(num), "%u", h->gid);
		pax_str(p, "gid", num);
	}
	/* before 1970 (the header's field says 0), a fraction, or past the
	 * octal field: the exact time in a PAX record, as Go writes it */
	if (h->mtime_sec < 0 || h->mtime_nsec || !fits_octal(mtime, 12)) {
		pax_time(num, sizeof(num), h->mtime_sec, h->mtime_nsec);
		pax_str(p, "mtime", num);
	}
	for (i = 0; i < h->n_xattrs; i++) {
		char key[300];

		snprintf(key, sizeof(key), "SCHILY.xattr.%s", h->xattrs[i].name);
		pax_add(p, key, h->xattrs[i].value, h->xattrs[i].len);
	}
}

int strata_tar_header(struct strata_blobw *w, const struct strata_tar_hdr *h)
{
	unsigned char b[BLOCK];
	cleanup_free char *name = NULL;
	struct pax p = { 0 };
	uint64_t mtime = h->mtime_sec > 0 ? (uint64_t)h->mtime_sec : 0;
	bool dir = h->type == '5';
	int r;

	if (!h->path[0])
		name = strdup("./");
	else if (asprintf(&name, "%s%s", h->path, dir ? "/" : "") < 0)
		name = NULL;
	if (!name)
		return -ENOMEM;
	build_pax(&p, h, name, mtime);
	if (p.err) {
		free(p.buf);
		return p.err;
	}
	if (p.len) {
		ustar(b, "././@PaxHeader", 'x', 0644, 0, 0, p.len, 0, NULL, 0, 0);
		r = strata_blobw_write(w, b, BLOCK);
		if (r == 0)
			r = strata_blobw_write(w, p.buf, p.len);
		if (r == 0)
			r = strata_tar_pad(w, p.len);
		free(p.buf);
		if (r < 0)
			return r;
	}
	ustar(b, name, h->type, h->mode & 07777, h->uid, h->gid,
	      h->type == '0' ? h->size : 0, mtime, h->linkname, h->devmajor,
	      h->devminor);
	r = strata_blobw_write(w, b, BLOCK);
	return r < 0 ? r : strata_blobw_entry(w, h, name);
}
