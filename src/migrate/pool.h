/* SPDX-License-Identifier: MIT */
/*
 * The engine's workers (internal): a fixed set of threads, made once per
 * migration side, that run one call per device for each phase and each
 * pre-copy round. A phase's calls may each block for long (a device's state
 * change, its whole save), so a side has as many workers as devices; the
 * calling thread works too.
 *
 * Threading: vfm_pool_run() from one thread at a time (the side's own);
 * the calls it makes run concurrently on the workers.
 */
#ifndef VFIOMIG_MIGRATE_POOL_H
#define VFIOMIG_MIGRATE_POOL_H

struct vfm_pool;

/* @threads workers (0 is allowed: the caller then runs every call), for
 * runs of at most @max_calls calls. A worker that cannot be started is not
 * an error: the others and the caller take its share. Return: 0 and *@out,
 * or -ENOMEM. */
int vfm_pool_new(unsigned threads, unsigned max_calls, struct vfm_pool **out);

/* Calls fn(ctx, i) for every i < @n (at most max_calls), concurrently, and
 * returns once all have: the first non-zero result in index order, or 0.
 * Nothing here fails: every result is a call's. */
int vfm_pool_run(struct vfm_pool *p, unsigned n, int (*fn)(void *ctx, unsigned i), void *ctx);

/* Ends the workers (none is running a call then) and frees. NULL does
 * nothing. */
void vfm_pool_free(struct vfm_pool *p);

#endif
