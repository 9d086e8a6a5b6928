/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gzip decoder of the pass that reads a layer (unpack.c): ISA-L's
 * inflate where strata is built with it, zlib's otherwise.
 *
 * Why: inflate is most of the CPU time of an import and all but the
 * hashing of a lazy layer's metadata pass. On the bench image (4 gzip
 * layers, 1.3 GB of tar, tests/bench/README.md "Lazy gzip mounts") ISA-L
 * 2.30 inflates 2.1-2.3 times as fast as zlib 1.2.13 (0.59 against 1.30 s
 * of CPU for the largest layer), the gzip CRC included.
 *
 * Member headers are still parsed by zlib (inflate() with Z_BLOCK stops
 * right after one), so what is accepted as a header does not change; ISA-L
 * decodes each member's deflate data and checks its trailer (CRC-32 and
 * length, ISAL_GZIP_NO_HDR_VER).
 *
 * Access points (zran.h) need the bit position of a deflate block boundary
 * and the 32 KiB of output before it. ISA-L does not stop at block
 * boundaries, but when its input runs out while it reads a block header,
 * it keeps the bits before that header in its public state (read_in,
 * read_in_length) and the bytes after them in tmp_in_buffer, with
 * block_state ISAL_BLOCK_HDR. So output stops where a point is due, and
 * from there ISA-L is made to run out of input inside the next block
 * header (seek_header()). Not by feeding it tiny slices until it does:
 * each call costs it a 32 KiB move of its history, and 64-byte slices
 * made that 4.9 GB of copying and a tenth of the pass on the bench
 * image. Instead it gets 16 KiB at a time from a snapshot of its state;
 * a slice over which its literal/length table changed has read a
 * header, and is halved back from the snapshot until a cut falls inside
 * that header (a dynamic block's header is tens of bytes; a stored or
 * fixed block's short one may slip through, and the next boundary
 * serves). Each point found that way is then checked with zlib, which
 * decodes from it (inflatePrime, inflateSetDictionary) and must give the
 * bytes ISA-L gave there; a point that does not check is dropped and the
 * search goes on. So a point never depends on ISA-L's internals being
 * what this file expects: at worst there are fewer points.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "config.h"
#include "zran.h"

#ifdef STRATA_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#define WIN 32768u
/* input per ISA-L call while a point is being looked for, and the
 * shortest cut of it (seek_header()) */
#define COARSE (16u << 10)
#define CUT_MIN 16u
/* output a found point must reproduce with zlib to be kept */
#define CHECK_MIN 1024u
#define CHECK_MAX (16u << 10)

struct strata_gzdec {
	struct strata_zran_builder *b;	/* borrowed, or NULL */
	z_stream z;		/* headers; whole members without ISA-L */
	bool z_ready, z_used;
	bool in_member;		/* past the header of a member */
#ifdef STRATA_HAVE_ISAL
	struct inflate_state *is;
	unsigned char tail[WIN];	/* the member's last output */
	size_t tail_len;
	struct inflate_state *snap;	/* seek_header()'s, with points */
	size_t snap_ipos, snap_opos;
#endif
};

int strata_gzdec_new(struct strata_zran_builder *b, struct strata_gzdec **out)
{
	struct strata_gzdec *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->b = b;
	if (inflateInit2(&d->z, 16 + MAX_WBITS) != Z_OK) {
		free(d);
		return -ENOMEM;
	}
	d->z_ready = true;
#ifdef STRATA_HAVE_ISAL
	d->is = malloc(sizeof(*d->is));
	if (b)
		d->snap = malloc(sizeof(*d->snap));
	if (!d->is || (b && !d->snap)) {
		strata_gzdec_free(d);
		return -ENOMEM;
	}
#endif
	*out = d;
	return 0;
}

void strata_gzdec_free(struct strata_gzdec *d)
{
	if (!d)
		return;
	if (d->z_ready)
		inflateEnd(&d->z);
#ifdef STRATA_HAVE_ISAL
	free(d->is);
	free(d->snap);
#endif
	free(d);
}

bool strata_gzdec_pending(const struct strata_gzdec *d)
{
	return d->in_member;
}

#ifdef STRATA_HAVE_ISAL
static void tail_add(struct strata_gzdec *d, const unsigned char *p,
		     size_t n)
{
	if (n >= WIN) {
		memcpy(d->tail, p + n - WIN, WIN);
		d->tail_len = WIN;
		return;
	}
	if (d->tail_len + n > WIN) {
		size_t drop = d->tail_len + n - WIN;

		memmove(d->tail, d->tail + drop, d->tail_len - drop);
		d->tail_len -= drop;
	}
	memcpy(d->tail + d->tail_len, p, n);
	d->tail_len += n;
}

/* Does zlib, started at bit @bit of @in (whose byte 0 is blob byte @in_off)
 * with window @win, decode @want (> 0) bytes equal to @expect? */
static bool point_checks(const unsigned char *in, size_t in_len,
			 uint64_t in_off, uint64_t bit,
			 const unsigned char *win, size_t wlen,
			 const unsigned char *expect, size_t want)
{
	unsigned char got[CHECK_MAX];
	z_stream s = { 0 };
	size_t at = (size_t)(bit / 8 - in_off);
	unsigned int skip = (unsigned int)(bit % 8);
	bool ok = false;
	int zr;

	if (bit / 8 < in_off || at >= in_len || want > sizeof(got) ||
	    inflateInit2(&s, -MAX_WBITS) != Z_OK)
		return false;
	if (skip && inflatePrime(&s, (int)(8 - skip), in[at] >> skip) != Z_OK)
		goto out;
	if (skip)
		at++;
	if (wlen && inflateSetDictionary(&s, win, (uInt)wlen) != Z_OK)
		goto out;
	s.next_in = (unsigned char *)in + at;
	s.avail_in = (uInt)(in_len - at);
	s.next_out = got;
	s.avail_out = (uInt)want;
	zr = inflate(&s, Z_NO_FLUSH);
	ok = (zr == Z_OK || zr == Z_STREAM_END) && s.avail_out == 0 &&
	     !memcmp(got, expect, want);
out:
	inflateEnd(&s);
	return ok;
}

/* One call of ISA-L: in[*ipos, *ipos + len) into out[*opos, out_len). */
static int isal_step(struct inflate_state *is, const unsigned char *in,
		     size_t *ipos, size_t len, unsigned char *out,
		     size_t out_len, size_t *opos)
{
	int ir;

	is->next_in = (uint8_t *)in + *ipos;
	is->avail_in = (uint32_t)len;
	is->next_out = out + *opos;
	is->avail_out = (uint32_t)(out_len - *opos);
	ir = isal_inflate(is);
	*ipos += len - is->avail_in;
	*opos = (size_t)(is->next_out - out);
	return ir;
}

/* Did ISA-L stop inside a block header, its input used up (then *@bit is
 * the blob bit where that header starts: see the top of this file)? */
static bool stopped_in_header(const struct inflate_state *is, uint64_t coff,
			      size_t ipos, uint64_t *bit)
{
	uint64_t end = 8 * (coff + ipos - (uint64_t)is->tmp_in_size);

	if (is->block_state != ISAL_BLOCK_HDR ||
	    is->tmp_out_valid != is->tmp_out_processed ||
	    (uint64_t)is->read_in_length > end)
		return false;
	*bit = end - (uint64_t)is->read_in_length;
	return true;
}

/* Has ISA-L read a block header since the snapshot? Its literal/length
 * table then changed (two dynamic blocks with the same table do not
 * occur in practice; if they did, a point would come a block later). */
static bool header_read(const struct strata_gzdec *d)
{
	return memcmp(d->snap->lit_huff_code.short_code_lookup,
		      d->is->lit_huff_code.short_code_lookup,
		      sizeof(d->is->lit_huff_code.short_code_lookup)) != 0;
}

/* The decoder's state at in[@ipos], out[@opos], to go back to. */
static void snapshot(struct strata_gzdec *d, size_t ipos, size_t opos)
{
	memcpy(d->snap, d->is, sizeof(*d->is));
	d->snap_ipos = ipos;
	d->snap_opos = opos;
}

static void restore(struct strata_gzdec *d, size_t *ipos, size_t *opos)
{
	memcpy(d->is, d->snap, sizeof(*d->is));
	*ipos = d->snap_ipos;
	*opos = d->snap_opos;
}

/*
 * Where a point is due: decode on until ISA-L stops inside a block
 * header. Each call costs ISA-L a move of its 32 KiB history, so calls
 * are few: a COARSE slice at a time, from a snapshot of the state; once a
 * slice has read a header, the slice is halved back from the snapshot
 * until a cut falls inside that header (a dynamic block's header is tens
 * of bytes; a fixed or stored block's is too short to stop in, and the
 * search goes on past it). Return: 1 and *@bit when stopped in a header,
 * 0 to go on (input used up, output full, or no header yet), or ISA-L's
 * error.
 */
static int seek_header(struct strata_gzdec *d, const unsigned char *in,
		       size_t in_len, uint64_t coff, unsigned char *out,
		       size_t out_len, size_t *ipos, size_t *opos,
		       uint64_t *bit)
{
	struct inflate_state *is = d->is;
	size_t lo = *ipos, hi, len = in_len - *ipos;
	int ir;

	if (len > COARSE)
		len = COARSE;
	snapshot(d, *ipos, *opos);
	ir = isal_step(is, in, ipos, len, out, out_len, opos);
	if (ir < 0)
		return ir;
	if (stopped_in_header(is, coff, *ipos, bit))
		return 1;
	if (*ipos - lo < 2 * CUT_MIN || !header_read(d))
		return 0;
	/* a header is in [lo, hi): halve the range back from lo */
	hi = *ipos;
	restore(d, ipos, opos);
	while (hi - lo >= 2 * CUT_MIN) {
		size_t mid = lo + (hi - lo) / 2;

		snapshot(d, *ipos, *opos);
		ir = isal_step(is, in, ipos, mid - lo, out, out_len, opos);
		if (ir < 0)
			return ir;
		if (stopped_in_header(is, coff, *ipos, bit))
			return 1;
		if (*ipos != mid)
			return 0;	/* cannot happen: it fit before */
		if (header_read(d)) {
			restore(d, ipos, opos);
			hi = mid;
		} else {
			lo = mid;
		}
	}
	/* too short to stop in: on past it */
	ir = isal_step(is, in, ipos, hi - lo, out, out_len, opos);
	if (ir < 0)
		return ir;
	return stopped_in_header(is, coff, *ipos, bit) ? 1 : 0;
}

/* A block boundary ISA-L stopped at, waiting for the output after it
 * that zlib must reproduce from it (point_checks()). */
struct cand {
	bool on;
	uint64_t bit;
	size_t at;		/* in this call's output */
	size_t wlen;
	unsigned char win[WIN];
};

/* Check candidate @c against the output after it and record it as a
 * point if it holds (dropped if not: the search goes on). */
static int settle(struct strata_gzdec *d, struct cand *c,
		  const unsigned char *in, size_t in_len, uint64_t coff,
		  const unsigned char *out, size_t opos, uint64_t uoff)
{
	size_t want = opos - c->at;

	c->on = false;
	if (want > CHECK_MAX)
		want = CHECK_MAX;
	if (want && point_checks(in, in_len, coff, c->bit, c->win, c->wlen,
				 out + c->at, want))
		return strata_zran_gzip_point(d->b, c->bit, uoff + c->at,
					      c->win, c->wlen);
	return 0;
}

/* The deflate data of a member, with ISA-L. */
static int run_isal(struct strata_gzdec *d, const unsigned char *in,
		    size_t in_len, uint64_t coff, unsigned char *out,
		    size_t out_len, uint64_t uoff, size_t *in_used,
		    size_t *produced, bool *member_end, char *msg,
		    size_t msglen)
{
	struct inflate_state *is = d->is;
	size_t ipos = 0, opos = 0;
	size_t told = 0;	/* out[0, told) is in d->tail */
	struct cand c;
	int r;

	c.on = false;
	for (;;) {
		bool seek = d->b && !c.on &&
			    strata_zran_point_due(d->b, uoff + opos);
		size_t before = opos;
		int ir;

		if (seek) {
			ir = seek_header(d, in, in_len, coff, out, out_len,
					 &ipos, &opos, &c.bit);
		} else {
			size_t end = out_len;

			/* while a candidate waits, up to the output that
			 * checks it; else up to where the next point is
			 * due: the search starts there */
			if (c.on && c.at + CHECK_MAX < out_len) {
				end = c.at + CHECK_MAX;
			} else if (d->b && !c.on) {
				uint64_t due = strata_zran_next_due(d->b);

				if (due > uoff + opos && due - uoff < out_len)
					end = (size_t)(due - uoff);
			}
			ir = isal_step(is, in, &ipos, in_len - ipos, out, end,
				       &opos);
		}
		if (ir < 0) {
			snprintf(msg, msglen, "corrupt gzip data: %s",
				 ir == ISAL_INCORRECT_CHECKSUM
				 ? "incorrect data check"
				 : "invalid deflate data");
			return -EBADMSG;
		}
		if (seek && ir == 1) {
			/* stopped in a header: the bits before it are a
			 * block boundary (see the top of this file); the
			 * window, brought up to date only here and at the
			 * end of the call */
			c.at = opos;
			tail_add(d, out + told, opos - told);
			told = opos;
			c.wlen = d->tail_len;
			memcpy(c.win, d->tail, c.wlen);
			c.on = true;
		}
		if (c.on && opos - c.at >= CHECK_MAX &&
		    (r = settle(d, &c, in, in_len, coff, out, opos, uoff)) < 0)
			return r;
		if (is->block_state == ISAL_BLOCK_FINISH) {
			*member_end = true;
			d->in_member = false;
			break;
		}
		if (opos == out_len || (ipos == in_len && !seek))
			break;
		if (ipos == in_len && is->avail_in == 0 && opos == before)
			break;
	}
	if (d->b)
		tail_add(d, out + told, opos - told);
	/* too little output after it to check: dropped, the search goes on
	 * in the next call */
	if (c.on && (opos - c.at >= CHECK_MIN || *member_end) &&
	    (r = settle(d, &c, in, in_len, coff, out, opos, uoff)) < 0)
		return r;
	*in_used = ipos;
	*produced = opos;
	return 0;
}
#endif

/* A member's header, with zlib: 1 once it is parsed. */
static int header(struct strata_gzdec *d, const unsigned char *in,
		  size_t in_len, uint64_t coff, uint64_t uoff, size_t *used,
		  char *msg, size_t msglen)
{
	unsigned char none;
	int zr;

	if (d->z_used && inflateReset(&d->z) != Z_OK)
		return -ENOMEM;
	d->z_used = false;
	d->z.next_in = (unsigned char *)in;
	d->z.avail_in = (uInt)in_len;
	d->z.next_out = &none;
	d->z.avail_out = 0;
	zr = inflate(&d->z, Z_BLOCK);
	*used = in_len - d->z.avail_in;
	if (zr != Z_OK && zr != Z_BUF_ERROR) {
		snprintf(msg, msglen, "corrupt gzip data: %s",
			 d->z.msg ? d->z.msg : "bad header");
		return -EBADMSG;
	}
	if (!(d->z.data_type & 128))
		return 0;	/* more header to come */
	d->z_used = true;
	d->in_member = true;
#ifdef STRATA_HAVE_ISAL
	isal_inflate_init(d->is);
	d->is->crc_flag = ISAL_GZIP_NO_HDR_VER;
	d->tail_len = 0;
#endif
	if (d->b && strata_zran_point_due(d->b, uoff)) {
		int r = strata_zran_gzip_point(d->b, 8 * (coff + *used), uoff,
					       NULL, 0);

		if (r < 0)
			return r;
	}
	return 1;
}

int strata_gzdec_run(struct strata_gzdec *d, const unsigned char *in,
		     size_t in_len, uint64_t coff, unsigned char *out,
		     size_t out_len, uint64_t uoff, size_t *in_used,
		     size_t *produced, bool *member_end, char *msg,
		     size_t msglen)
{
	size_t hdr = 0;
	int r;

	*in_used = 0;
	*produced = 0;
	*member_end = false;
	if (!d->in_member) {
		r = header(d, in, in_len, coff, uoff, &hdr, msg, msglen);
		*in_used = hdr;
		if (r <= 0)
			return r;
	}
#ifdef STRATA_HAVE_ISAL
	r = run_isal(d, in + hdr, in_len - hdr, coff + hdr, out, out_len,
		     uoff, in_used, produced, member_end, msg, msglen);
	*in_used += hdr;
	return r;
#else
	{
		int zr;

		/* zlib goes on from its header: the header call left it
		 * in the deflate data */
		d->z.next_in = (unsigned char *)in + hdr;
		d->z.avail_in = (uInt)(in_len - hdr);
		d->z.next_out = out;
		d->z.avail_out = (uInt)out_len;
		if (d->b) {
			r = strata_zran_inflate(d->b, &d->z, coff + hdr, uoff,
						&zr);
			if (r < 0) {
				snprintf(msg, msglen, "recording access "
					 "points failed");
				return r;
			}
		} else {
			zr = inflate(&d->z, Z_NO_FLUSH);
		}
		*in_used = in_len - d->z.avail_in;
		*produced = out_len - d->z.avail_out;
		if (zr == Z_STREAM_END) {
			*member_end = true;
			d->in_member = false;
		} else if (zr != Z_OK && zr != Z_BUF_ERROR) {
			snprintf(msg, msglen, "corrupt gzip data: %s",
				 d->z.msg ? d->z.msg : "inflate failed");
			return -EBADMSG;
		}
		return 0;
	}
#endif
}
