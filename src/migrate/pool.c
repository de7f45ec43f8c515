/* SPDX-License-Identifier: MIT */
/* The engine's workers (pool.h). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "pool.h"

struct vfm_pool {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a run has calls not taken yet, or quit */
    pthread_cond_t done; /* the run's last call returned */
    pthread_t *threads;
    unsigned nthreads;
    /* the current run (lock) */
    int (*fn)(void *ctx, unsigned i);
    void *ctx;
    unsigned n, next, finished;
    int *ret; /* max_calls results */
    unsigned max_calls;
    bool quit;
};

/* Takes and runs calls of the current run until none is left. Lock held on
 * entry and return. */
static void take_calls(struct vfm_pool *p)
{
    while (p->fn && p->next < p->n) {
        unsigned i = p->next++;
        int (*fn)(void *, unsigned) = p->fn;
        void *ctx = p->ctx;
        int r;

        pthread_mutex_unlock(&p->lock);
        r = fn(ctx, i);
        pthread_mutex_lock(&p->lock);
        p->ret[i] = r;
        if (++p->finished == p->n)
            pthread_cond_signal(&p->done);
    }
}

static void *worker(void *arg)
{
    struct vfm_pool *p = arg;

    pthread_mutex_lock(&p->lock);
    while (!p->quit) {
        take_calls(p);
        if (!p->quit)
            pthread_cond_wait(&p->work, &p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int vfm_pool_new(unsigned threads, unsigned max_calls, struct vfm_pool **out)
{
    struct vfm_pool *p = calloc(1, sizeof(*p));

    if (!p)
        return -ENOMEM;
    p->threads = calloc(threads ? threads : 1, sizeof(*p->threads));
    p->ret = calloc(max_calls ? max_calls : 1, sizeof(*p->ret));
    if (!p->threads || !p->ret) {
        free(p->threads);
        free(p->ret);
        free(p);
        return -ENOMEM;
    }
    p->max_calls = max_calls;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&p->threads[p->nthreads], NULL, worker, p) == 0)
            p->nthreads++;
    *out = p;
    return 0;
}

int vfm_pool_run(struct vfm_pool *p, unsigned n, int (*fn)(void *ctx, unsigned i), void *ctx)
{
    int first = 0;

    if (n > p->max_calls)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->next = p->finished = 0;
    pthread_cond_broadcast(&p->work);
    take_calls(p); /* the caller works too */
    while (p->finished < n)
        pthread_cond_wait(&p->done, &p->lock);
    p->fn = NULL;
    for (unsigned i = 0; i < n && !first; i++)
        first = p->ret[i];
    pthread_mutex_unlock(&p->lock);
    return first;
}

void vfm_pool_free(struct vfm_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->quit = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p->ret);
    free(p);
}
