/* SPDX-License-Identifier: MIT */
/* The device guide's example device: it runs, stops, saves, loads, resets. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
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

/* The state of @from, saved (stopped first), into @to: the load's result. */
static int move_state(struct ticker *from, struct ticker *to)
{
    uint8_t buf[16384];
    ssize_t n, len = 0;

    assert_int_equal(vfm_device_set_state(ticker_device(from), VFM_STATE_STOP_COPY, NULL), 0);
    while ((n = vfm_device_data_read(ticker_device(from), buf + len, sizeof(buf) - (size_t)len)) > 0)
        len += n;
    assert_int_equal(n, 0);
    assert_int_equal(vfm_device_set_state(ticker_device(from), VFM_STATE_STOP, NULL), 0);
    assert_int_equal(vfm_device_set_state(ticker_device(to), VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(ticker_device(to), buf, (size_t)len), len);
    return vfm_device_set_state(ticker_device(to), VFM_STATE_STOP, NULL);
}

static uint64_t reg(struct vfm_server_config *c, uint32_t off)
{
    uint64_t v = 0;
    assert_int_equal(c->regions[0].access(c->priv, 0, off, &v, 8, false), 0);
    return v;
}

/* As a PCI device: ids and registers through the regions a server
 * serves, the alarm's interrupt on the client's INTx eventfd, and what the
 * guest programmed (command register, alarm) carried by save and load into
 * another ticker served as a PCI device; a plain ticker refuses that. */
static void test_pci(void **state)
{
    struct ticker *a, *b, *plain;
    struct vfm_server_config ca = {0}, cb = {0};
    struct vfm_vu_irq_set trig = {.argsz = sizeof(trig), .index = VFM_PCI_INTX_IRQ, .count = 1,
                                  .flags = VFM_VU_IRQ_SET_DATA_EVENTFD |
                                           VFM_VU_IRQ_SET_ACTION_TRIGGER};
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uint16_t ids[2], cmd = 0x0006, back;
    uint64_t v, ev = 0, far;
    (void)state;

    assert_true(efd >= 0);
    assert_int_equal(ticker_new("pa", 4096, &a), 0);
    assert_int_equal(ticker_new("pb", 4096, &b), 0);
    assert_int_equal(ticker_new("plain", 4096, &plain), 0);
    assert_int_equal(ticker_server_config(a, &ca), 0);
    assert_int_equal(ticker_server_config(b, &cb), 0);
    assert_int_equal(ca.nregions, VFM_PCI_NUM_REGIONS);
    assert_int_equal(ca.regions[VFM_PCI_CONFIG_REGION].access(ca.priv, VFM_PCI_CONFIG_REGION, 0,
                                                              ids, 4, false),
                     0);
    assert_int_equal(ids[0], VFM_PCI_VENDOR_EXPERIMENTAL);
    assert_int_equal(ids[1], TICKER_PCI_DEVICE);
    assert_int_equal(ca.regions[VFM_PCI_CONFIG_REGION].access(ca.priv, VFM_PCI_CONFIG_REGION, 4,
                                                              &cmd, 2, true),
                     0);
    /* the alarm: one interrupt when the count reaches it, then it is off */
    assert_int_equal(ca.set_irqs(ca.priv, &trig, NULL, 0, &efd, 1), 0); /* the model dup()s it */
    v = reg(&ca, TICKER_REG_TICKS) + 30;
    assert_int_equal(ca.regions[0].access(ca.priv, 0, TICKER_REG_ALARM, &v, 8, true), 0);
    assert_int_equal(ca.regions[0].access(ca.priv, 0, TICKER_REG_TICKS, &v, 8, true), -EINVAL);
    for (int i = 0; i < 2000 && reg(&ca, TICKER_REG_ALARM); i++)
        usleep(1000);
    assert_int_equal(reg(&ca, TICKER_REG_ALARM), 0);
    assert_true(reg(&ca, TICKER_REG_TICKS) >= v);
    /* the client's eventfd was signalled once; the line stays asserted
     * (automasked) until the client unmasks */
    assert_int_equal(read(efd, &ev, 8), 8);
    assert_int_equal(ev, 1);
    {
        uint8_t cfg[8];
        assert_int_equal(ca.regions[VFM_PCI_CONFIG_REGION].access(
                             ca.priv, VFM_PCI_CONFIG_REGION, 4, cfg, 4, false),
                         0);
        assert_true(cfg[2] & 0x08); /* status: interrupt pending */
    }
    /* an alarm far ahead, and the command register, travel with the state */
    far = reg(&ca, TICKER_REG_TICKS) + 1000000000ull;
    assert_int_equal(ca.regions[0].access(ca.priv, 0, TICKER_REG_ALARM, &far, 8, true), 0);
    assert_int_equal(move_state(a, b), 0);
    assert_int_equal(reg(&cb, TICKER_REG_ALARM), far);
    assert_int_equal(reg(&cb, TICKER_REG_TICKS), ticker_ticks(a));
    assert_int_equal(cb.regions[VFM_PCI_CONFIG_REGION].access(cb.priv, VFM_PCI_CONFIG_REGION, 4,
                                                              &back, 2, false),
                     0);
    assert_int_equal(back & 0x0006, 0x0006);
    assert_int_equal(move_state(a, plain), -EINVAL); /* a PCI state, no PCI model */
    close(efd);
    ticker_free(a);
    ticker_free(b);
    ticker_free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_and_stops),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_pci),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
