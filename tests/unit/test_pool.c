/* SPDX-License-Identifier: MIT */
/*
 * The engine's workers (src/migrate/pool.h): a run's calls really run at
 * once (each waits, with a deadline, until all have started, as devices of
 * one phase do), the result is the first failure in index order, the
 * threads are made once and reused by every run, and a pool without
 * workers runs everything in the caller.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "threads.h"

#include "migrate/pool.h"

struct meet {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned n, arrived, calls;
    pthread_t caller;
    unsigned on_caller;
    int fail_at[3]; /* indices that fail, with -(index + 1) */
};

static int threads(void)
{
    int n = proc_threads();
    assert_true(n > 0);
    return n;
}

/* Waits until all n calls have started (at most 5 s): -ETIMEDOUT when
 * they do not all run at once. */
static int meet_all(void *ctx, unsigned i)
{
    struct meet *m = ctx;
    struct timespec until;
    int ret = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&m->lock);
    m->calls++;
    if (++m->arrived == m->n)
        pthread_cond_broadcast(&m->cond);
    while (m->arrived < m->n && !ret)
        ret = pthread_cond_timedwait(&m->cond, &m->lock, &until) ? -ETIMEDOUT : 0;
    pthread_mutex_unlock(&m->lock);
    for (int k = 0; k < 3; k++)
        if (m->fail_at[k] == (int)i)
            return -(int)(i + 1);
    return ret;
}

static int count_caller(void *ctx, unsigned i)
{
    struct meet *m = ctx;

    (void)i;
    m->calls++;
    m->on_caller += pthread_equal(pthread_self(), m->caller);
    return i == 4 ? -EIO : 0;
}

static void concurrent_and_reused(void **state)
{
    struct vfm_pool *p;
    int before = threads();

    (void)state;
    assert_int_equal(vfm_pool_new(15, 16, &p), 0);
    assert_int_equal(threads(), before + 15);
    for (int run = 0; run < 50; run++) {
        struct meet m = {
            PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 16, 0, 0, 0, 0, {-1, -1, -1}};
        if (run == 7) {
            m.fail_at[0] = 9;
            m.fail_at[1] = 3;
        }
        assert_int_equal(vfm_pool_run(p, 16, meet_all, &m), run == 7 ? -4 : 0);
        assert_int_equal(m.calls, 16);
    }
    /* a run smaller than the pool, and one larger than it was made for */
    {
        struct meet m = {
            PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 3, 0, 0, 0, 0, {-1, -1, -1}};
        assert_int_equal(vfm_pool_run(p, 3, meet_all, &m), 0);
        assert_int_equal(vfm_pool_run(p, 17, meet_all, &m), -EINVAL);
    }
    assert_int_equal(threads(), before + 15); /* the same threads throughout */
    vfm_pool_free(p);
    assert_int_equal(threads(), before);
}

static void no_workers(void **state)
{
    struct vfm_pool *p;
    struct meet m = {.caller = pthread_self()};
    int before = threads();

    (void)state;
    assert_int_equal(vfm_pool_new(0, 8, &p), 0);
    assert_int_equal(threads(), before);
    assert_int_equal(vfm_pool_run(p, 8, count_caller, &m), -EIO);
    assert_int_equal(m.calls, 8);
    assert_int_equal(m.on_caller, 8);
    vfm_pool_free(p);
    vfm_pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_and_reused),
        cmocka_unit_test(no_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
