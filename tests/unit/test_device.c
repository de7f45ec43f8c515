/* SPDX-License-Identifier: MIT */
/*
 * The device runtime's state machine: every request from every state for
 * every flags value a device can have (STOP_COPY with or without P2P and
 * PRE_COPY), each arc of each path failing in turn (plain and broken),
 * reset from every state, deferred reset, SET/GET/reset from several
 * threads at once, and the pre-copy session rules.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/fsm.h>

#include "testdev.h"

static const uint32_t all_states[] = {
    VFM_STATE_ERROR,    VFM_STATE_STOP,        VFM_STATE_RUNNING,  VFM_STATE_STOP_COPY,
    VFM_STATE_RESUMING, VFM_STATE_RUNNING_P2P, VFM_STATE_PRE_COPY, VFM_STATE_PRE_COPY_P2P};

/* A valid saved stream of a test device, for reaching STOP from RESUMING. */
static uint8_t good_stream[TESTDEV_CONTENT + 128];
static size_t good_len;

static int setup_stream(void **state)
{
    struct testdev *t = testdev_new("stream-source", false, 7);
    ssize_t n;
    (void)state;

    if (!t || vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL))
        return -1;
    while ((n = vfm_device_data_read(t->dev, good_stream + good_len,
                                     sizeof(good_stream) - good_len)) > 0)
        good_len += (size_t)n;
    testdev_free(t);
    return good_len == TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD ? 0 : -1;
}

/* The four kinds of device: k & 1 P2P, k & 2 PRE_COPY. */
#define KINDS 4
static struct testdev *kind_new(const char *name, int k, uint32_t seed)
{
    return testdev_new_full(name, k & 1, k & 2, seed, TESTDEV_COMPAT, 0);
}

static bool precopy_state(uint32_t s)
{
    return s == VFM_STATE_PRE_COPY || s == VFM_STATE_PRE_COPY_P2P;
}

/* Puts the device in @s by the public calls only; clears the log. */
static void reach(struct testdev *t, uint32_t s)
{
    assert_int_equal(vfm_device_reset(t->dev), 0);
    if (s == VFM_STATE_ERROR) {
        uint32_t flags = vfm_device_flags(t->dev);
        t->fail_cb = (flags & VFM_MIGRATION_P2P) ? TCB_RUN_P2P : TCB_RUN_STOP;
        t->fail_err = -EIO;
        t->fail_broken = true;
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), -EIO);
        t->fail_cb = -1;
        t->fail_broken = false;
    } else {
        assert_int_equal(vfm_device_set_state(t->dev, s, NULL), 0);
        if (s == VFM_STATE_RESUMING)
            assert_int_equal(vfm_device_data_write(t->dev, good_stream, good_len),
                             (ssize_t)good_len);
    }
    assert_int_equal(vfm_device_get_state(t->dev), s);
    testdev_clear_log(t);
}

static void test_new_validation(void **state)
{
    struct vfm_mig_ops mig = {0};
    struct vfm_p2p_ops p2p = {0};
    struct vfm_device_config cfg = {.version = VFM_DEVICE_CONFIG_VERSION, .name = "v", .mig = &mig};
    struct vfm_device *dev = NULL;
    int (*dummy)(struct vfm_device *, void *) = (void *)1; /* never called */
    (void)state;

    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL); /* nothing */
    mig.save = (void *)1;
    mig.load = (void *)1;
    mig.reset = dummy;
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL); /* no run/stop arcs */
    mig.running_to_stop = dummy;
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL); /* no stop_to_running */
    mig.stop_to_running = dummy;
    assert_int_equal(vfm_device_new(&cfg, &dev), 0);
    assert_int_equal(vfm_device_flags(dev), VFM_MIGRATION_STOP_COPY);
    assert_int_equal(vfm_device_get_state(dev), VFM_STATE_RUNNING);
    vfm_device_free(dev);

    /* P2P: all four required; then the non-P2P pair is not */
    cfg.p2p = &p2p;
    mig.running_to_stop = NULL;
    mig.stop_to_running = NULL;
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    p2p.running_to_running_p2p = dummy;
    p2p.running_p2p_to_running = dummy;
    p2p.running_p2p_to_stop = dummy;
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    p2p.stop_to_running_p2p = dummy;
    assert_int_equal(vfm_device_new(&cfg, &dev), 0);
    assert_int_equal(vfm_device_flags(dev), VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P);
    vfm_device_free(dev);

    mig.load = NULL;
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    mig.load = (void *)1;
    cfg.version = VFM_DEVICE_CONFIG_VERSION + 1; /* newer than this library */
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    cfg.version = 0;
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    cfg.version = VFM_DEVICE_CONFIG_VERSION;
    {
        /* dma_log ops must be whole */
        struct vfm_dma_log_ops half = {.start = (void *)1, .stop = (void *)1};
        cfg.dma_log = &half;
        assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
        cfg.dma_log = NULL;
    }
    cfg.name = "";
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    cfg.name = "v";
    cfg.max_state_size = VFM_DEVICE_MAX_STATE_LIMIT + 1;
    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    assert_int_equal(vfm_device_new(NULL, &dev), -EINVAL);
    vfm_device_free(NULL);
}

/* Every request from every state: the planner's verdict, exactly the
 * planned arcs' callbacks in order, and GET tells the target. */
static void test_every_request(void **state)
{
    (void)state;
    for (int p2p = 0; p2p < KINDS; p2p++) {
        struct testdev *t = kind_new("every", p2p, 1);
        uint32_t flags = vfm_device_flags(t->dev);

        for (size_t i = 0; i < 8; i++) {
            uint32_t from = all_states[i];
            if (!vfm_fsm_state_supported(flags, from))
                continue;
            for (uint32_t to = 0; to < VFM_STATE_COUNT + 2; to++) {
                struct vfm_fsm_path path;
                int want = vfm_fsm_plan(flags, from, to, &path);
                int fd = 1234, ret;
                /* a pre-copy session has no fd (tested on its own) */
                bool want_fd = !precopy_state(to);
                enum tcb expect[16];
                unsigned nexpect = 0;

                reach(t, from);
                ret = vfm_device_set_state(t->dev, to, want_fd ? &fd : NULL);
                if (!want_fd)
                    fd = -1;
                if (want) {
                    assert_int_equal(ret, -EINVAL);
                    assert_int_equal(vfm_device_get_state(t->dev), from);
                    assert_int_equal(t->nlog, 0);
                    assert_int_equal(fd, -1);
                    continue;
                }
                if (ret)
                    fail_msg("p2p=%d %s -> %s: %d", p2p, vfm_state_str(from), vfm_state_str(to),
                             ret);
                assert_int_equal(vfm_device_get_state(t->dev), to);
                for (uint32_t k = 1; k < path.len; k++) {
                    expect[nexpect++] = testdev_arc_cb(path.states[k - 1], path.states[k]);
                    if (precopy_state(path.states[k - 1]) && path.states[k] == VFM_STATE_STOP_COPY)
                        expect[nexpect++] = TCB_SAVE; /* stop, then the final save */
                }
                assert_int_equal(t->nlog, nexpect);
                for (unsigned k = 0; k < nexpect; k++)
                    assert_int_equal(t->log[k], expect[k]);
                /* a data fd exactly when the request opened a session */
                if (path.len > 1 &&
                    (vfm_fsm_arc_session(path.states[path.len - 2], to) ==
                         VFM_FSM_SESSION_OPEN_SAVE ||
                     vfm_fsm_arc_session(path.states[path.len - 2], to) ==
                         VFM_FSM_SESSION_OPEN_LOAD) &&
                    want_fd)
                    assert_true(fd >= 0);
                else
                    assert_int_equal(fd, -1);
                if (fd >= 0)
                    close(fd);
            }
        }
        testdev_free(t);
    }
}

/* Each arc of each path fails in turn: the request fails with that error,
 * the device is in the failed arc's source state (or ERROR when marked
 * broken), and no later arc ran. */
static void test_every_arc_fails(void **state)
{
    unsigned cases = 0;
    (void)state;

    for (int p2p = 0; p2p < KINDS; p2p++) {
        struct testdev *t = kind_new("faulty", p2p, 2);
        uint32_t flags = vfm_device_flags(t->dev);

        for (size_t i = 1; i < 8; i++) {
            uint32_t from = all_states[i];
            if (!vfm_fsm_state_supported(flags, from))
                continue;
            for (uint32_t to = 1; to < VFM_STATE_COUNT; to++) {
                struct vfm_fsm_path path;
                if (vfm_fsm_plan(flags, from, to, &path))
                    continue;
                for (uint32_t k = 1; k < path.len; k++) {
                    for (int broken = 0; broken <= 1; broken++) {
                        enum tcb cb = testdev_arc_cb(path.states[k - 1], path.states[k]);
                        uint32_t want = broken ? VFM_STATE_ERROR : path.states[k - 1];

                        reach(t, from);
                        t->fail_cb = (int)cb;
                        /* an earlier arc of this path may use the same callback */
                        t->fail_after = 0;
                        for (uint32_t j = 1; j < k; j++)
                            if (testdev_arc_cb(path.states[j - 1], path.states[j]) == cb)
                                t->fail_after++;
                        t->fail_err = -EIO - (int)k;
                        t->fail_broken = broken;
                        assert_int_equal(vfm_device_set_state(t->dev, to, NULL), -EIO - (int)k);
                        t->fail_cb = -1;
                        t->fail_broken = false;
                        if (vfm_device_get_state(t->dev) != want)
                            fail_msg("p2p=%d %s -> %s, arc %u fails%s: in %s, want %s", p2p,
                                     vfm_state_str(from), vfm_state_str(to), k,
                                     broken ? " (broken)" : "",
                                     vfm_state_str(vfm_device_get_state(t->dev)),
                                     vfm_state_str(want));
                        assert_int_equal(t->nlog, k); /* nothing after the failed arc */
                        if (broken) {
                            /* only reset leaves ERROR */
                            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_RUNNING, NULL),
                                             -EINVAL);
                            assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_ERROR);
                            assert_int_equal(vfm_device_data_read(t->dev, good_stream, 1), -ENODEV);
                        }
                        cases++;
                    }
                }
            }
        }
        testdev_free(t);
    }
    assert_true(cases > 150);
}

/* PRE_COPY[_P2P] -> STOP_COPY whose final save() fails: the device is
 * started again and stays in its pre-copy state with its session; if the
 * restart fails too, it is in ERROR; a save marked broken is ERROR. */
static void test_precopy_final_save_fails(void **state)
{
    (void)state;
    for (int k = 2; k < KINDS; k++) {
        struct testdev *t = kind_new("pc-save-fails", k, 5);
        uint32_t froms[] = {VFM_STATE_PRE_COPY, VFM_STATE_PRE_COPY_P2P};
        for (unsigned f = 0; f < 2; f++) {
            uint32_t from = froms[f];
            if (!vfm_fsm_state_supported(vfm_device_flags(t->dev), from))
                continue;
            for (int mode = 0; mode < 3; mode++) { /* plain, restart fails, broken */
                struct vfm_fsm_path path;
                uint8_t b[64];
                reach(t, from);
                t->fail_cb = TCB_SAVE;
                t->fail_cb2 = mode == 1 ? (int)testdev_restart_cb(VFM_STATE_PRE_COPY_P2P) : -1;
                if (mode == 1 && !(vfm_device_flags(t->dev) & VFM_MIGRATION_P2P))
                    t->fail_cb2 = (int)testdev_restart_cb(VFM_STATE_PRE_COPY);
                t->fail_err = -ENOSPC;
                t->fail_broken = mode == 2;
                assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), -ENOSPC);
                t->fail_cb = t->fail_cb2 = -1;
                t->fail_broken = false;
                if (mode >= 1) {
                    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_ERROR);
                    assert_int_equal(vfm_device_data_read(t->dev, b, sizeof(b)), -ENODEV);
                    continue;
                }
                /* the failed arc is the path's last: its source state */
                assert_int_equal(
                    vfm_fsm_plan(vfm_device_flags(t->dev), from, VFM_STATE_STOP_COPY, &path), 0);
                assert_int_equal(vfm_device_get_state(t->dev), path.states[path.len - 2]);
                assert_int_equal(t->log[t->nlog - 1],
                                 testdev_restart_cb(path.states[path.len - 2]));
                /* the session goes on: the stream is still readable */
                assert_true(vfm_device_data_read(t->dev, b, sizeof(b)) > 0);
                /* and a second try succeeds and ends the stream cleanly */
                assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
                while (vfm_device_data_read(t->dev, b, sizeof(b)) > 0)
                    ;
                assert_int_equal(vfm_device_data_read(t->dev, b, sizeof(b)), 0);
            }
        }
        testdev_free(t);
    }
}

/* Reset from every state, ERROR included, ends any session; a reset that
 * fails leaves ERROR. */
static void test_reset(void **state)
{
    uint8_t b;
    (void)state;
    for (int p2p = 0; p2p < KINDS; p2p++) {
        struct testdev *t = kind_new("reset", p2p, 3);
        for (size_t i = 0; i < 8; i++) {
            if (!vfm_fsm_state_supported(vfm_device_flags(t->dev), all_states[i]))
                continue;
            reach(t, all_states[i]);
            assert_int_equal(vfm_device_reset(t->dev), 0);
            assert_int_equal(t->calls[TCB_RESET], 1);
            assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_RUNNING);
            assert_int_equal(vfm_device_data_read(t->dev, &b, 1), -ENODEV);
            assert_int_equal(vfm_device_data_write(t->dev, &b, 1), -ENODEV);
        }
        reach(t, VFM_STATE_STOP_COPY);
        t->fail_cb = TCB_RESET;
        t->fail_err = -EIO;
        assert_int_equal(vfm_device_reset(t->dev), -EIO);
        assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_ERROR);
        assert_int_equal(vfm_device_data_read(t->dev, &b, 1), -ENODEV);
        t->fail_cb = -1;
        assert_int_equal(vfm_device_reset(t->dev), 0);
        assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_RUNNING);
        testdev_free(t);
    }
}

/* A reset asked for by the device's own callback (it holds the state lock)
 * is deferred, not a deadlock, and performed when the transition ends. */
static void test_deferred_reset_from_callback(void **state)
{
    struct testdev *t = testdev_new("deferred", true, 4);
    (void)state;

    t->reset_inside = true;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    assert_int_equal(t->reset_inside_ret, 1);
    assert_int_equal(t->calls[TCB_RESET], 1); /* ran as the SET finished */
    assert_int_equal(t->log[t->nlog - 1], TCB_RESET);
    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_RUNNING);
    assert_int_equal(vfm_device_data_read(t->dev, good_stream, 1), -ENODEV);
    testdev_free(t);
}

struct slow_set {
    struct testdev *t;
    int ret;
};

static void *slow_set_thread(void *arg)
{
    struct slow_set *s = arg;
    s->ret = vfm_device_set_state(s->t->dev, VFM_STATE_STOP_COPY, NULL);
    return NULL;
}

/* A reset from another thread during a slow transition returns at once
 * (deferred) and is performed by the transition's thread. */
static void test_deferred_reset_other_thread(void **state)
{
    struct testdev *t = testdev_new("deferred2", true, 5);
    struct slow_set s = {.t = t};
    pthread_t th;
    (void)state;

    t->slow_us = 50 * 1000; /* three arcs: 150 ms */
    assert_int_equal(pthread_create(&th, NULL, slow_set_thread, &s), 0);
    while (atomic_load(&t->inside) == 0)
        usleep(100);
    assert_int_equal(vfm_device_reset(t->dev), 1);
    assert_int_equal(t->calls[TCB_RESET], 0); /* not yet: the SET holds the lock */
    pthread_join(th, NULL);
    t->slow_us = 0;
    assert_int_equal(s.ret, 0);
    assert_int_equal(t->calls[TCB_RESET], 1);
    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_RUNNING);
    testdev_free(t);
}

struct hammer {
    struct testdev *t;
    unsigned seed;
    unsigned ops;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    uint8_t buf[512];

    for (unsigned i = 0; i < h->ops; i++) {
        unsigned r = rand_r(&h->seed);
        uint32_t s;
        switch (r % 6) {
        case 0:
        case 1: {
            int fd = -1;
            vfm_device_set_state(h->t->dev, 1 + (r >> 4) % 5, (r & 8) ? &fd : NULL);
            if (fd >= 0)
                close(fd);
            break;
        }
        case 2:
            s = vfm_device_get_state(h->t->dev);
            if (s >= VFM_STATE_COUNT || s == VFM_STATE_PRE_COPY || s == VFM_STATE_PRE_COPY_P2P)
                h->ops = 0; /* impossible state: fail below */
            break;
        case 3:
            if (r % 7 == 0)
                vfm_device_reset(h->t->dev);
            break;
        case 4:
            vfm_device_data_read(h->t->dev, buf, sizeof(buf));
            break;
        case 5:
            vfm_device_data_write(h->t->dev, good_stream, (r >> 8) % 64);
            break;
        }
    }
    return NULL;
}

/* SET, GET, reset and data calls from 4 threads: callbacks never overlap,
 * GET always gives a real state, and the device still works after. */
static void test_concurrent(void **state)
{
    struct testdev *t = testdev_new("hammer", true, 6);
    struct hammer h[4];
    pthread_t th[4];
    (void)state;

    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){.t = t, .seed = 1000u + (unsigned)i, .ops = 3000};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, &h[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_not_equal(h[i].ops, 0);
    }
    assert_int_equal(atomic_load(&t->max_inside), 1);
    assert_int_equal(vfm_device_reset(t->dev), 0);
    reach(t, VFM_STATE_RESUMING);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_RUNNING, NULL), 0);
    testdev_free(t);
}

static void test_data_size(void **state)
{
    struct testdev *t = testdev_new("size", false, 8);
    uint64_t n = 0;
    (void)state;

    assert_int_equal(vfm_device_data_size(t->dev, &n), 0);
    assert_int_equal(n, TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD);
    t->fail_cb = TCB_DATA_SIZE;
    t->fail_err = -EAGAIN;
    assert_int_equal(vfm_device_data_size(t->dev, &n), -EAGAIN);
    testdev_free(t);
}

/* MIG_PRECOPY_INFOv2 and REINIT, as the kernel core: SET only, EINVAL for
 * a device without PRE_COPY; REINIT reported once and only after the
 * opt-in; the opt-in ends with the client (vfm_device_release()). */
static void test_precopy_v2(void **state)
{
    struct testdev *plain = testdev_new("v2-plain", true, 1);
    struct testdev *t = testdev_new_full("v2", true, true, 2, TESTDEV_COMPAT, 0);
    uint8_t out[16];
    size_t got;
    uint64_t in, di;
    uint32_t fl;
    (void)state;

    assert_non_null(plain);
    assert_non_null(t);
    assert_int_equal(vfm_device_feature(plain->dev,
                                        VFM_FEATURE_MIG_PRECOPY_INFOV2 | VFM_FEATURE_SET, 8, NULL,
                                        0, out, sizeof(out), &got),
                     -EINVAL);
    assert_int_equal(vfm_device_feature(t->dev, VFM_FEATURE_MIG_PRECOPY_INFOV2 | VFM_FEATURE_GET, 8,
                                        NULL, 0, out, sizeof(out), &got),
                     -EINVAL);
    /* v1: a re-initialisation shows no flag */
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
    vfm_device_precopy_reinit(t->dev);
    assert_int_equal(vfm_device_precopy_info_flags(t->dev, &in, &di, &fl), 0);
    assert_int_equal(fl, 0);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_RUNNING, NULL), 0);
    /* the opt-in: PROBE, then SET */
    assert_int_equal(
        vfm_device_feature(t->dev,
                           VFM_FEATURE_MIG_PRECOPY_INFOV2 | VFM_FEATURE_SET | VFM_FEATURE_PROBE, 8,
                           NULL, 0, out, sizeof(out), &got),
        0);
    assert_int_equal(vfm_device_feature(t->dev, VFM_FEATURE_MIG_PRECOPY_INFOV2 | VFM_FEATURE_SET, 8,
                                        NULL, 0, out, sizeof(out), &got),
                     0);
    /* outside pre-copy nothing is pending; in it, reported once */
    vfm_device_precopy_reinit(t->dev);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
    assert_int_equal(vfm_device_precopy_info_flags(t->dev, &in, &di, &fl), 0);
    assert_int_equal(fl, 0);
    vfm_device_precopy_reinit(t->dev);
    assert_int_equal(vfm_device_precopy_info_flags(t->dev, &in, &di, &fl), 0);
    assert_int_equal(fl, VFM_PRECOPY_INFO_REINIT);
    assert_int_equal(vfm_device_precopy_info_flags(t->dev, &in, &di, &fl), 0);
    assert_int_equal(fl, 0);
    /* the client goes: its opt-in with it */
    vfm_device_precopy_reinit(t->dev);
    assert_int_equal(vfm_device_release(t->dev), VFM_STATE_RUNNING);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
    vfm_device_precopy_reinit(t->dev);
    assert_int_equal(vfm_device_precopy_info_flags(t->dev, &in, &di, &fl), 0);
    assert_int_equal(fl, 0);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_RUNNING, NULL), 0);
    testdev_free(plain);
    testdev_free(t);
}

/* Save in place: the stream is built in the device's own memory
 * (save_buffer), and reads the same as one built in the runtime's; memory
 * too small for the state falls back to the runtime's. */
static void test_save_in_place(void **state)
{
    struct testdev *a = testdev_new("plain", true, 5), *b = testdev_new("in-place", true, 5);
    uint8_t sa[TESTDEV_CONTENT + 512], sb[TESTDEV_CONTENT + 512];
    ssize_t na, nb;
    (void)state;

    assert_non_null(a);
    assert_non_null(b);
    b->use_save_in_place = true;
    assert_int_equal(vfm_device_set_state(a->dev, VFM_STATE_STOP_COPY, NULL), 0);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP_COPY, NULL), 0);
    na = vfm_device_data_read(a->dev, sa, sizeof(sa));
    nb = vfm_device_data_read(b->dev, sb, sizeof(sb));
    assert_true(na > TESTDEV_CONTENT);
    assert_int_equal(na, nb);
    assert_memory_equal(sa, sb, (size_t)na);
    assert_int_equal(b->save_buffer_calls, 1);
    /* built there: the stream's bytes are in the device's memory */
    assert_memory_equal(b->save_mem, sb, (size_t)nb);
    assert_int_equal(vfm_device_data_read(b->dev, sb, sizeof(sb)), 0);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), 0);
    /* memory 1000 bytes too small: the runtime's own, the same bytes */
    b->save_mem_len = TESTDEV_CONTENT - 1000;
    memset(b->save_mem, 0, sizeof(b->save_mem));
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP_COPY, NULL), 0);
    nb = vfm_device_data_read(b->dev, sb, sizeof(sb));
    assert_int_equal(na, nb);
    assert_memory_equal(sa, sb, (size_t)na);
    assert_int_equal(b->save_buffer_calls, 2);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), 0);
    assert_int_equal(vfm_device_set_state(a->dev, VFM_STATE_STOP, NULL), 0);
    testdev_free(a);
    testdev_free(b);
}

/* vfm_device_feature_fd(): a MIG_DEVICE_STATE SET that opens a save or a
 * load session gives the session's fd (its stream reads whole from it); a
 * SET that opens none, a refused one, a GET and a pre-copy session give
 * -1; NULL asks for none (the data calls then move the bytes). */
/* A MIG_DEVICE_STATE SET to @state through vfm_device_feature_fd(); *@fd
 * (if asked) is set to 7 first, so that -1 is the call's answer. */
static int set_fd(struct testdev *t, uint32_t state, int *fd)
{
    struct {
        uint32_t device_state;
        int32_t data_fd;
    } ms = {state, -1};
    uint8_t out[16];
    size_t out_len = 1;
    int ret;

    if (fd)
        *fd = 7;
    ret = vfm_device_feature_fd(t->dev, VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET, 16, &ms,
                                sizeof(ms), out, sizeof(out), &out_len, fd);
    assert_int_equal(out_len, 0); /* a SET's reply is its request */
    return ret;
}

static void test_feature_fd(void **state)
{
    struct testdev *t = testdev_new_full("ffd", false, true, 3, TESTDEV_COMPAT, 0);
    struct {
        uint32_t device_state;
        int32_t data_fd;
    } ms;
    uint8_t out[16], buf[TESTDEV_CONTENT + 256];
    size_t out_len = 1, len = 0;
    int fd;
    ssize_t n;
    (void)state;

    assert_non_null(t);
    /* RUNNING -> STOP opens nothing */
    assert_int_equal(set_fd(t, VFM_STATE_STOP, &fd), 0);
    assert_int_equal(fd, -1);
    /* STOP -> STOP_COPY: the save session's fd, read to its end */
    assert_int_equal(set_fd(t, VFM_STATE_STOP_COPY, &fd), 0);
    assert_true(fd >= 0);
    while ((n = read(fd, buf + len, sizeof(buf) - len)) > 0)
        len += (size_t)n;
    assert_int_equal(n, 0);
    assert_int_equal(len, TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD);
    assert_int_equal(vfm_device_data_read(t->dev, out, 1), -EBUSY);
    close(fd);
    /* a SET whose arc fails (STOP -> RESUMING, on the way from
     * STOP_COPY) gives none, and the device stays where the path stopped */
    t->fail_cb = TCB_STOP_RES;
    t->fail_err = -EIO;
    assert_int_equal(set_fd(t, VFM_STATE_RESUMING, &fd), -EIO);
    t->fail_cb = -1;
    assert_int_equal(fd, -1);
    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_STOP);
    /* STOP -> RESUMING: the load session's fd takes the stream */
    assert_int_equal(set_fd(t, VFM_STATE_STOP, NULL), 0);
    assert_int_equal(set_fd(t, VFM_STATE_RESUMING, &fd), 0);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    assert_int_equal(set_fd(t, VFM_STATE_STOP, NULL), 0);
    close(fd);
    /* pre-copy has no fd: RUNNING -> PRE_COPY opens its session without */
    assert_int_equal(set_fd(t, VFM_STATE_RUNNING, NULL), 0);
    assert_int_equal(set_fd(t, VFM_STATE_PRE_COPY, &fd), 0);
    assert_int_equal(fd, -1);
    assert_true(vfm_device_data_read(t->dev, buf, sizeof(buf)) > 0); /* by the data calls */
    /* ...nor does STOP_COPY after it (the same session goes on) */
    assert_int_equal(set_fd(t, VFM_STATE_STOP_COPY, &fd), 0);
    assert_int_equal(fd, -1);
    /* a GET: the state, data_fd -1, never an fd */
    fd = 7;
    assert_int_equal(vfm_device_feature_fd(t->dev, VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_GET,
                                           16, NULL, 0, out, sizeof(out), &out_len, &fd),
                     0);
    assert_int_equal(fd, -1);
    assert_int_equal(out_len, 8);
    memcpy(&ms, out, sizeof(ms));
    assert_int_equal(ms.device_state, VFM_STATE_STOP_COPY);
    assert_int_equal(ms.data_fd, -1);
    testdev_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_validation),
        cmocka_unit_test(test_every_request),
        cmocka_unit_test(test_every_arc_fails),
        cmocka_unit_test(test_precopy_final_save_fails),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_deferred_reset_from_callback),
        cmocka_unit_test(test_deferred_reset_other_thread),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_data_size),
        cmocka_unit_test(test_precopy_v2),
        cmocka_unit_test(test_save_in_place),
        cmocka_unit_test(test_feature_fd),
    };
    return cmocka_run_group_tests(tests, setup_stream, NULL);
}
