/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loading a resolved image into a read-only engine (struct fs), and the
 * `continue` step of a live commit: the mount goes on from the committed
 * image with an empty upper directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "lower.h"
#include "wfs.h"

int fs_image_load(struct fs *fs, struct strata_store *st,
		  struct strata_image *img, struct strata_err *err)
{
	struct strata_lindex **lx;
	uint32_t i;
	int r;

	if (img->n_layers == 0)
		return strata_err_set(err, -EINVAL, "image %s has no layers",
				      img->ref_text);
	fs->n_layers = fs->layer_n ? fs->layer_n : (uint32_t)img->n_layers;
	if (fs->layer_lo >= img->n_layers ||
	    fs->n_layers > img->n_layers - fs->layer_lo)
		return strata_err_set(err, -ERANGE, "image %s has %zu layers: "
				      "no layer %u", img->ref_text,
				      img->n_layers, fs->layer_lo + fs->n_layers);
	fs->layers = calloc(fs->n_layers, sizeof(*fs->layers));
	if (!fs->layers)
		return -ENOMEM;
	for (i = 0; i < fs->n_layers; i++) {
		r = strata_layer_open(st, img, fs->layer_lo + i,
				      &fs->layers[i].lx, err);
		if (r < 0)
			return r;
		fs->layers[i].datafd = strata_lx_datafd(fs->layers[i].lx);
		fs->total_entries += strata_lx_count(fs->layers[i].lx);
		fs->features |= strata_lx_features(fs->layers[i].lx);
	}
	fs->statfs_fd = open(strata_store_root(st), O_RDONLY | O_DIRECTORY |
			     O_CLOEXEC);
	lx = calloc(fs->n_layers, sizeof(*lx));
	if (!lx)
		return -ENOMEM;
	for (i = 0; i < fs->n_layers; i++)
		lx[i] = fs->layers[i].lx;
	r = strata_lx_graft(lx, fs->n_layers);
	free(lx);
	if (r < 0)
		return -ENOMEM;
	if (fs_nodes_init(fs) < 0)
		return -ENOMEM;
	fs->root = calloc(1, sizeof(*fs->root));
	if (!fs->root || fs_root_sources(fs, fs->root) < 0)
		return -ENOMEM;
	fs->root->ino = FUSE_ROOT_ID;
	return 0;
}

void fs_image_unload(struct fs *fs)
{
	uint32_t i;

	for (i = 0; i < fs->n_layers; i++)
		if (fs->layers[i].lx)
			strata_lindex_close(fs->layers[i].lx);
	free(fs->layers);
	fs->layers = NULL;
	fs->n_layers = 0;
	if (fs->hash)
		fs_nodes_free(fs);
	else
		free(fs->root);
	fs->root = NULL;
	if (fs->statfs_fd >= 0)
		close(fs->statfs_fd);
	fs->statfs_fd = -1;
}

/* Wait @secs seconds, or less when the fill is told to stop. */
static void prefetch_pause(struct fs *fs, unsigned secs)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };

	for (unsigned i = 0; i < secs * 10 && !atomic_load(&fs->stop_prefetch);
	     i++)
		nanosleep(&ts, NULL);
}

/* A registry that is away, refusing for now or answering garbage: the
 * fill of the layer is tried again later. */
static bool transient(int r)
{
	return r == -ECONNREFUSED || r == -ETIMEDOUT || r == -EPROTO ||
	       r == -ECONNRESET || r == -EHOSTUNREACH || r == -ENETUNREACH ||
	       r == -EACCES || r == -EIO;
}

#define PREFETCH_RETRY_FIRST 10	/* seconds, doubled up to */
#define PREFETCH_RETRY_MAX 300

static void *prefetch_main(void *arg)
{
	struct fs *fs = arg;
	unsigned wait = PREFETCH_RETRY_FIRST;
	uint32_t i, pass;

	/* first what each layer names as most likely needed (eStargz's
	 * .prefetch.landmark), then the rest, layer by layer; pass 0 is
	 * the first, pass 1 the rest */
	for (i = 0, pass = 0; pass < 2 && !atomic_load(&fs->stop_prefetch);) {
		int r;

		if (i == fs->n_layers) {
			i = 0;
			pass++;
			continue;
		}
		r = strata_lx_prefetch(fs->layers[i].lx, pass == 0
				       ? STRATA_PREFETCH_FIRST
				       : fs->prefetch_all ? STRATA_PREFETCH_ALL
				       : STRATA_PREFETCH_REST,
				       &fs->stop_prefetch);

		/* a bad layer has said so loudly; a registry away pauses
		 * the fill, which resumes where it stopped; anything else
		 * (a full disk) only stops the fill of this layer: its
		 * files are still filled when first read */
		if (r < 0 && transient(r)) {
			strata_warn("layer %u: background fill paused: %s; "
				    "trying again in %u s (files are still "
				    "fetched when first read)",
				    fs->layer_lo + i + 1, strerror(-r), wait);
			prefetch_pause(fs, wait);
			wait = wait * 2 > PREFETCH_RETRY_MAX ? PREFETCH_RETRY_MAX
							     : wait * 2;
			continue;
		}
		if (r < 0 && r != -EBADMSG)
			strata_warn("layer %u: background fill stopped: %s; "
				    "its files are filled when first read",
				    fs->layer_lo + i + 1, strerror(-r));
		wait = PREFETCH_RETRY_FIRST;
		i++;
	}
	return NULL;
}

int fs_prefetch_start(struct fs *fs)
{
	uint32_t i;
	int r;

	for (i = 0; i < fs->n_layers; i++)
		if (strata_lx_is_lazy(fs->layers[i].lx))
			break;
	if (i == fs->n_layers)
		return 0;
	atomic_store(&fs->stop_prefetch, false);
	r = pthread_create(&fs->prefetch, NULL, prefetch_main, fs);
	if (r != 0)
		return -r;
	fs->prefetching = true;
	return 0;
}

void fs_prefetch_stop(struct fs *fs)
{
	if (!fs->prefetching)
		return;
	atomic_store(&fs->stop_prefetch, true);
	pthread_join(fs->prefetch, NULL);
	fs->prefetching = false;
}

/* Images a live mount went on from; freed at exit. */
struct generation {
	struct fs fs;
	struct strata_image *img;
	struct lower *lw;
	struct generation *next;
};

static struct generation *generations;

int fs_continue(struct wfs *w, struct strata_store *st, const struct fs *like,
		const char *ref, char **manifest, struct strata_err *err)
{
	struct generation *g = calloc(1, sizeof(*g));
	int r;

	if (!g)
		return -ENOMEM;
	g->fs.timeout = like->timeout;
	g->fs.statfs_fd = -1;
	g->fs.readonly = true;
	g->fs.squash_uid = like->squash_uid;
	g->fs.squash_gid = like->squash_gid;
	g->fs.squash_uid_to = like->squash_uid_to;
	g->fs.squash_gid_to = like->squash_gid_to;
	g->fs.uidmap = like->uidmap;	/* shared, owned by the first */
	g->fs.gidmap = like->gidmap;
	g->fs.n_uidmap = like->n_uidmap;
	g->fs.n_gidmap = like->n_gidmap;
	r = strata_image_resolve(st, ref, NULL, &g->img, err);
	/* the continued image's gzip layers are unpacked in full (no
	 * lazy_plain): the commit just wrote them from the mount */
	if (r == 0)
		r = strata_cache_ensure(st, g->img,
					&(struct strata_unpack_opts){
						.lazy = like->lazy }, err);
	if (r == 0)
		r = fs_image_load(&g->fs, st, g->img, err);
	if (r == 0)
		r = strata_store_pin(st, g->img, err);
	strata_store_release(st);
	if (r == 0)
		r = lower_image_new(&g->fs, &g->lw);
	if (r == 0)
		r = wfs_continue(w, g->lw, err);
	/* the upper directory is empty now, its changes are made on this */
	if (r == 0 && wfs_claim_rebased(w, g->img->manifest_digest, ref) < 0)
		strata_warn("upper directory %s: cannot record image %s",
			    w->upper_path, ref);
	if (r < 0) {
		if (g->lw)
			g->lw->ops->free(g->lw);
		fs_image_unload(&g->fs);
		if (g->img)
			strata_image_free(g->img);
		free(g);
		return r;
	}
	*manifest = g->img->manifest_digest;
	g->next = generations;
	generations = g;
	return 0;
}

void fs_continue_free(void)
{
	while (generations) {
		struct generation *g = generations;

		generations = g->next;
		g->lw->ops->free(g->lw);
		g->fs.uidmap = NULL;
		g->fs.gidmap = NULL;
		fs_image_unload(&g->fs);
		strata_image_free(g->img);
		free(g);
	}
}
