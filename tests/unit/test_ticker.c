/* SPDX-License-Identifier: MIT */
/* The device guide's example device: it runs, stops, saves, loads, resets. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "ticker.h"

static void wait_ticks(struct ticker *t, uint64_t above)
{
    for (int i = 0; i < 2000 && ticker_ticks(t) <= above; i++)
        usleep(1000);
    assert_true(ticker_ticks(t) > above);
}

static void test_runs_and_stops(void **state)
{
    struct ticker *t;
    uint64_t n, d;
    (void)state;

    assert_int_equal(ticker_new("t", 4096, &t), 0);
    assert_int_equal(vfm_device_flags(ticker_device(t)), VFM_MIGRATION_STOP_COPY);
    wait_ticks(t, 10);
    assert_int_equal(vfm_device_set_state(ticker_device(t), VFM_STATE_STOP, NULL), 0);
    n = ticker_ticks(t);
    d = ticker_digest(t);
    usleep(20000);
    assert_int_equal(ticker_ticks(t), n); /* STOP: the state does not advance */
    assert_int_equal(ticker_digest(t), d);
    assert_int_equal(vfm_device_set_state(ticker_device(t), VFM_STATE_RUNNING, NULL), 0);
    wait_ticks(t, n);
    ticker_free(t);
}

static void test_save_load(void **state)
{
    struct ticker *a, *b, *c;
    uint8_t buf[8192];
    ssize_t n, len = 0;
    (void)state;

    assert_int_equal(ticker_new("a", 4096, &a), 0);
    assert_int_equal(ticker_new("b", 4096, &b), 0);
    assert_int_equal(ticker_new("c", 2048, &c), 0);
    wait_ticks(a, 50);
    assert_int_equal(vfm_device_set_state(ticker_device(a), VFM_STATE_STOP_COPY, NULL), 0);
    while ((n = vfm_device_data_read(ticker_device(a), buf + len, sizeof(buf) - (size_t)len)) > 0)
        len += n;
    assert_int_equal(n, 0);

    assert_int_equal(vfm_device_set_state(ticker_device(b), VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(ticker_device(b), buf, (size_t)len), len);
    assert_int_equal(vfm_device_set_state(ticker_device(b), VFM_STATE_STOP, NULL), 0);
    assert_int_equal(ticker_digest(b), ticker_digest(a));
    assert_int_equal(ticker_ticks(b), ticker_ticks(a));

    /* a ticker of another memory size refuses the state, unchanged (it is
     * stopped first: a running ticker changes by itself) */
    assert_int_equal(vfm_device_set_state(ticker_device(c), VFM_STATE_STOP, NULL), 0);
    uint64_t before = ticker_digest(c);
    assert_int_equal(vfm_device_set_state(ticker_device(c), VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(ticker_device(c), buf, (size_t)len), len);
    assert_int_equal(vfm_device_set_state(ticker_device(c), VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(ticker_digest(c), before);

    /* reset: power-on state, running */
    assert_int_equal(vfm_device_reset(ticker_device(b)), 0);
    assert_int_equal(vfm_device_get_state(ticker_device(b)), VFM_STATE_RUNNING);
    wait_ticks(b, 0);
    ticker_free(a);
    ticker_free(b);
    ticker_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_and_stops),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
