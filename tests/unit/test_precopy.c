/* SPDX-License-Identifier: MIT */
/*
 * The device runtime's pre-copy sessions: PRE_COPY and PRE_COPY_P2P open,
 * keep and end the save session by the uAPI's rules; ENOMSG at the
 * temporary end, 0 only at the end of the whole state; precopy info; the
 * destination applying pre-copy records as they come; and the failure
 * paths (no fd for pre-copy, a destination without pre-copy, a refused
 * record, truncation and corruption anywhere, reset in the middle).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <vfiomig/fsm.h>

#include "testdev.h"

#define BIG (64 * 1024)

struct stream {
    uint8_t b[BIG];
    size_t len;
};

/* Reads what is pending now; returns the last result (-ENOMSG, 0, error). */
static ssize_t drain(struct testdev *t, struct stream *st)
{
    ssize_t n;

    while ((n = vfm_device_data_read(t->dev, st->b + st->len, 100)) > 0)
        st->len += (size_t)n;
    return n;
}

static struct testdev *pc_new(const char *name, bool p2p, uint32_t seed)
{
    struct testdev *t = testdev_new_full(name, p2p, true, seed, TESTDEV_COMPAT, 0);
    assert_non_null(t);
    assert_true(vfm_device_flags(t->dev) & VFM_MIGRATION_PRE_COPY);
    return t;
}

/* Loads @st into a fresh destination; returns RESUMING -> STOP's result
 * and the destination (content compared by the caller). */
static int load_into(struct testdev *dst, const struct stream *st)
{
    ssize_t w;

    assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_RESUMING, NULL), 0);
    w = vfm_device_data_write(dst->dev, st->b, st->len);
    if (w < 0)
        return (int)w;
    return vfm_device_set_state(dst->dev, VFM_STATE_STOP, NULL);
}

/* The whole life of a pre-copy session, with the device writing between
 * reads: the stream restores exactly the content at STOP_COPY. */
static void test_session_rules(void **state)
{
    (void)state;
    for (int p2p = 0; p2p <= 1; p2p++) {
        struct testdev *t = pc_new("pc-src", p2p, 11), *d = pc_new("pc-dst", p2p, 99);
        struct stream *st = calloc(1, sizeof(*st));
        uint64_t initial, dirty, initial0;
        uint32_t run = p2p ? VFM_STATE_RUNNING_P2P : VFM_STATE_RUNNING;
        uint32_t pc = p2p ? VFM_STATE_PRE_COPY_P2P : VFM_STATE_PRE_COPY;

        assert_non_null(st);
        /* outside pre-copy there is no info */
        assert_int_equal(vfm_device_precopy_info(t->dev, &initial, &dirty), -EINVAL);
        assert_int_equal(vfm_device_set_state(t->dev, run, NULL), 0);
        assert_int_equal(vfm_device_set_state(t->dev, pc, NULL), 0);
        assert_int_equal(t->calls[TCB_PC_START], 1);
        assert_int_equal(vfm_device_precopy_info(t->dev, &initial0, &dirty), 0);
        /* the device's count, and the stream header the runtime holds */
        assert_int_equal(initial0, TESTDEV_PAGES * (TESTDEV_PAGE + 1) + 24);
        assert_int_equal(dirty, 0);

        /* a first chunk: 4 pages of the initial pass, then ENOMSG would
         * only come once the device has nothing pending */
        assert_true(vfm_device_data_read(t->dev, st->b, 10) == 10);
        st->len = 10;
        assert_int_equal(vfm_device_precopy_info(t->dev, &initial, &dirty), 0);
        assert_true(initial < initial0 + 32 && initial > 0);
        assert_int_equal(drain(t, st), -ENOMSG); /* all pages given: nothing now */
        assert_int_equal(vfm_device_precopy_info(t->dev, &initial, &dirty), 0);
        assert_int_equal(initial, 0);
        assert_int_equal(dirty, 0);
        assert_int_equal(vfm_device_data_read(t->dev, st->b + st->len, 100), -ENOMSG);

        /* the device runs on and writes: those pages are dirty */
        testdev_write(t, 5 * TESTDEV_PAGE + 3, 0xAA);
        testdev_write(t, 9 * TESTDEV_PAGE, 0xBB);
        assert_int_equal(vfm_device_precopy_info(t->dev, &initial, &dirty), 0);
        assert_int_equal(initial, 0);
        assert_int_equal(dirty, 2 * (TESTDEV_PAGE + 1));
        assert_int_equal(drain(t, st), -ENOMSG);

        if (p2p) {
            /* PRE_COPY_P2P -> PRE_COPY -> PRE_COPY_P2P: the same session */
            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
            testdev_write(t, 1 * TESTDEV_PAGE + 8, 0xCC);
            assert_int_equal(drain(t, st), -ENOMSG);
            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY_P2P, NULL), 0);
        }
        /* written after the last pre-copy read: only the final record has it */
        testdev_write(t, 14 * TESTDEV_PAGE + 1, 0xDD);
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
        assert_int_equal(vfm_device_precopy_info(t->dev, &initial, &dirty), -EINVAL);
        assert_int_equal(drain(t, st), 0); /* the end of the whole state */
        assert_int_equal(vfm_device_data_read(t->dev, st->b, 1), 0);

        assert_int_equal(load_into(d, st), 0);
        assert_memory_equal(d->content, t->content, TESTDEV_CONTENT);
        assert_true(d->calls[TCB_PC_LOAD] >= 5); /* 4 initial chunks + dirty */
        assert_int_equal(d->content[14 * TESTDEV_PAGE + 1], 0xDD);

        /* STOP_COPY -> STOP ends it, without precopy->end (not a pre-copy exit) */
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
        assert_int_equal(vfm_device_data_read(t->dev, st->b, 1), -ENODEV);
        free(st);
        testdev_free(t);
        testdev_free(d);
    }
}

/* Leaving pre-copy for RUNNING[_P2P] ends the session (precopy->end), and a
 * reset in the middle does too. */
static void test_session_ends(void **state)
{
    uint64_t a, b;
    uint8_t x[8];
    (void)state;

    for (int p2p = 0; p2p <= 1; p2p++) {
        struct testdev *t = pc_new("pc-ends", p2p, 12);
        uint32_t pc = p2p ? VFM_STATE_PRE_COPY_P2P : VFM_STATE_PRE_COPY;
        uint32_t run = p2p ? VFM_STATE_RUNNING_P2P : VFM_STATE_RUNNING;

        if (p2p)
            assert_int_equal(vfm_device_set_state(t->dev, run, NULL), 0);
        assert_int_equal(vfm_device_set_state(t->dev, pc, NULL), 0);
        assert_true(vfm_device_data_read(t->dev, x, sizeof(x)) > 0);
        assert_int_equal(vfm_device_set_state(t->dev, run, NULL), 0);
        assert_int_equal(t->calls[TCB_PC_END], 1);
        assert_false(t->tracking);
        assert_int_equal(vfm_device_data_read(t->dev, x, sizeof(x)), -ENODEV);
        assert_int_equal(vfm_device_precopy_info(t->dev, &a, &b), -EINVAL);

        /* again, and a reset in the middle */
        assert_int_equal(vfm_device_set_state(t->dev, pc, NULL), 0);
        assert_true(vfm_device_data_read(t->dev, x, sizeof(x)) > 0);
        assert_int_equal(vfm_device_reset(t->dev), 0);
        assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_RUNNING);
        assert_false(t->tracking);
        assert_int_equal(vfm_device_data_read(t->dev, x, sizeof(x)), -ENODEV);

        /* a new session starts a new stream from its header */
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
        assert_int_equal(vfm_device_data_read(t->dev, x, 4), 4);
        assert_memory_equal(x, "VFMS", 4);
        testdev_free(t);
    }
}

/* A pre-copy session has no data fd: refused, state unchanged (also from
 * a state whose path to PRE_COPY has other arcs first). The fd path of
 * PRE_COPY -> STOP_COPY gives no new fd (the session goes on). */
static void test_no_fd(void **state)
{
    struct testdev *t = pc_new("pc-fd", true, 13);
    int fd = 99;
    (void)state;

    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, &fd), -EOPNOTSUPP);
    assert_int_equal(fd, -1);
    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_RUNNING);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
    testdev_clear_log(t);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY_P2P, &fd), -EOPNOTSUPP);
    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_STOP);
    assert_int_equal(t->nlog, 0); /* refused before any arc */
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY_P2P, NULL), 0);
    fd = 99;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, &fd), 0);
    assert_int_equal(fd, -1);
    testdev_free(t);
}

/* A pre-copy stream, whole, for the destination tests. */
static void make_stream(struct stream *st, uint32_t seed)
{
    struct testdev *t = pc_new("pc-maker", false, seed);

    st->len = 0;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
    assert_int_equal(drain(t, st), -ENOMSG);
    testdev_write(t, 3 * TESTDEV_PAGE + 1, 0x11);
    assert_int_equal(drain(t, st), -ENOMSG);
    testdev_write(t, 7 * TESTDEV_PAGE + 1, 0x22);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    assert_int_equal(drain(t, st), 0);
    testdev_free(t);
}

/* A destination without pre-copy ops refuses PRECOPY records; one whose
 * load_precopy refuses spoils the session; both stay in RESUMING with the
 * device untouched until a reset. */
static void test_destination_refuses(void **state)
{
    struct stream *st = calloc(1, sizeof(*st));
    struct testdev *plain = testdev_new("no-pc-dst", false, 40);
    struct testdev *d = pc_new("pc-dst-refuses", false, 41);
    uint8_t before[TESTDEV_CONTENT];
    (void)state;

    assert_non_null(st);
    make_stream(st, 21);
    memcpy(before, plain->content, sizeof(before));
    assert_int_equal(vfm_device_set_state(plain->dev, VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(plain->dev, st->b, st->len), -EINVAL);
    assert_int_equal(vfm_device_set_state(plain->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(vfm_device_get_state(plain->dev), VFM_STATE_RESUMING);
    assert_memory_equal(plain->content, before, sizeof(before));

    d->fail_cb = TCB_PC_LOAD;
    d->fail_after = 2;
    d->fail_err = -EIO;
    assert_int_equal(vfm_device_set_state(d->dev, VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(d->dev, st->b, st->len), -EIO);
    d->fail_cb = -1;
    assert_int_equal(vfm_device_set_state(d->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(vfm_device_get_state(d->dev), VFM_STATE_RESUMING);
    assert_int_equal(vfm_device_reset(d->dev), 0);
    /* after the reset a whole stream loads */
    assert_int_equal(load_into(d, st), 0);
    free(st);
    testdev_free(plain);
    testdev_free(d);
}

/* Every truncation of a pre-copy stream is refused at RESUMING -> STOP, and
 * a bit flipped anywhere is refused; the whole stream loads. */
static void test_truncated_and_corrupted(void **state)
{
    struct stream *st = calloc(1, sizeof(*st)), *bad = calloc(1, sizeof(*bad));
    struct testdev *d = pc_new("pc-dst-trunc", false, 42);
    unsigned refused = 0;
    (void)state;

    assert_non_null(st);
    assert_non_null(bad);
    make_stream(st, 22);
    for (size_t cut = 0; cut < st->len; cut += 97) {
        memcpy(bad->b, st->b, cut);
        bad->len = cut;
        assert_int_not_equal(load_into(d, bad), 0);
        assert_int_equal(vfm_device_get_state(d->dev), VFM_STATE_RESUMING);
        assert_int_equal(vfm_device_reset(d->dev), 0);
        refused++;
    }
    for (size_t at = 0; at < st->len; at += 89) {
        memcpy(bad->b, st->b, st->len);
        bad->len = st->len;
        bad->b[at] ^= 0x10;
        assert_int_not_equal(load_into(d, bad), 0);
        assert_int_equal(vfm_device_reset(d->dev), 0);
        refused++;
    }
    assert_true(refused > 50);
    assert_int_equal(load_into(d, st), 0);
    free(st);
    free(bad);
    testdev_free(d);
}

/* The zero-copy read gives the same pre-copy answers: ENOMSG without
 * calling the transport's send. */
static int count_send(void *ctx, const void *data, size_t n)
{
    (void)data;
    *(size_t *)ctx += n;
    return 0;
}

static void test_read_with(void **state)
{
    struct testdev *t = pc_new("pc-with", false, 14);
    size_t got = 0;
    ssize_t n;
    (void)state;

    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
    while ((n = vfm_device_data_read_with(t->dev, 1000, count_send, &got)) > 0)
        ;
    assert_int_equal(n, -ENOMSG);
    assert_true(got > TESTDEV_CONTENT);
    /* save_precopy failing is the read's error, and the session goes on */
    testdev_write(t, 2 * TESTDEV_PAGE, 1);
    t->fail_cb = TCB_PC_SAVE;
    t->fail_err = -EIO;
    assert_int_equal(vfm_device_data_read_with(t->dev, 1000, count_send, &got), -EIO);
    t->fail_cb = -1;
    assert_true(vfm_device_data_read_with(t->dev, 1000, count_send, &got) > 0);
    testdev_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_session_rules),
        cmocka_unit_test(test_session_ends),
        cmocka_unit_test(test_no_fd),
        cmocka_unit_test(test_destination_refuses),
        cmocka_unit_test(test_truncated_and_corrupted),
        cmocka_unit_test(test_read_with),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
