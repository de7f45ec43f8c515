/* SPDX-License-Identifier: MIT */
/*
 * The migration engine's pre-copy, with in-process devices: large-state
 * devices (with and without P2P) that keep writing their memory while the
 * VM runs, migrated together with test devices that have no pre-copy (stop-
 * copied) or pre-copy without P2P. Each restored device checks itself (the
 * large device refuses a load whose digest differs from the source's at
 * stop). Also: the switchover order from the timeline, a workload that
 * dirties faster than the stream converges by the round limit, pre-copy
 * turned off, and failures during pre-copy and after it rolling back.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/migrate.h>

#include "large.h"
#include "../fault/fault_ep.h"
#include "testdev.h"

#define NDEV 4
#define MEM (16u << 20)

struct vmset {
    struct large *lg[2][2];   /* [side][0: P2P, 1: no P2P] */
    struct testdev *td[2][2]; /* [side][0: P2P no pre-copy, 1: pre-copy no P2P] */
    struct vfm_endpoint *ep[2][NDEV];
};

static void vm_make(struct vmset *v, uint64_t rate)
{
    for (int side = 0; side < 2; side++) {
        for (int k = 0; k < 2; k++) {
            struct large_config lc = {.name = side ? "lg-dst" : "lg-src",
                                      .size = MEM,
                                      .page = 4096,
                                      .dirty_rate = side ? 0 : rate,
                                      .p2p = k == 0,
                                      .seed = (uint32_t)(side * 100 + k + 1)};
            assert_int_equal(large_new(&lc, &v->lg[side][k]), 0);
            assert_int_equal(vfm_ep_local_new(large_device(v->lg[side][k]), &v->ep[side][k]), 0);
        }
        v->td[side][0] =
            testdev_new_full("td-p2p", true, false, 7 + (uint32_t)side, TESTDEV_COMPAT, 0);
        v->td[side][1] =
            testdev_new_full("td-pc", false, true, 9 + (uint32_t)side, TESTDEV_COMPAT, 0);
        for (int k = 0; k < 2; k++)
            assert_int_equal(vfm_ep_local_new(v->td[side][k]->dev, &v->ep[side][2 + k]), 0);
    }
}

static void vm_free(struct vmset *v)
{
    for (int side = 0; side < 2; side++) {
        for (int i = 0; i < NDEV; i++)
            vfm_ep_free(v->ep[side][i]);
        for (int k = 0; k < 2; k++) {
            large_free(v->lg[side][k]);
            testdev_free(v->td[side][k]);
        }
    }
}

static void cfg_init(struct vfm_mig_config *cfg, struct vmset *v)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->src = v->ep[0];
    cfg->dst = v->ep[1];
    cfg->ndev = NDEV;
}

/* Every destination runs the source's state (the large devices checked it
 * themselves at load; here the digests are compared once more). */
static void check_moved(struct vmset *v)
{
    for (int k = 0; k < 2; k++) {
        assert_int_equal(vfm_device_get_state(large_device(v->lg[0][k])), VFM_STATE_STOP);
        assert_int_equal(vfm_device_get_state(large_device(v->lg[1][k])), VFM_STATE_RUNNING);
        /* the source stopped at switchover: its memory is the saved state;
         * the destination's worker has rate 0, so its memory is the load */
        assert_true(large_digest(v->lg[0][k]) == large_digest(v->lg[1][k]));
        assert_memory_equal(v->td[0][k]->content, v->td[1][k]->content, TESTDEV_CONTENT);
        assert_int_equal(vfm_device_get_state(v->td[1][k]->dev), VFM_STATE_RUNNING);
    }
}

static void run_vm(uint64_t rate, unsigned ms)
{
    (void)rate;
    usleep(ms * 1000);
}

/* A clean pre-copy migration: rounds happened, most bytes moved before the
 * switchover, the order held at switchover, and every device restored. */
static void test_precopy_clean(void **state)
{
    struct vmset v;
    struct vfm_mig_config cfg;
    struct vfm_mig_report rep;
    int64_t last_quiesce = 0, first_stop = INT64_MAX, first_pc = INT64_MAX;
    (void)state;

    vm_make(&v, 8u << 20); /* 8 MiB/s dirtied: half the memory per second */
    run_vm(0, 20);
    cfg_init(&cfg, &v);
    assert_int_equal(vfm_migrate_local(&cfg, &rep), 0);
    assert_int_equal(rep.precopy_devices, 3); /* both large devices and td-pc */
    assert_true(rep.precopy_rounds >= 1);
    assert_true(rep.precopy_converged);
    assert_true(rep.precopy_bytes >= 2u * MEM);
    assert_true(rep.bytes > rep.precopy_bytes);
    assert_true(rep.downtime_ns > 0 && rep.t_switch_ns > rep.t_start_ns);
    for (unsigned k = 0; k < rep.nspans; k++) {
        const struct vfm_mig_span *s = &rep.spans[k];
        if (s->side)
            continue;
        if (s->state == VFM_STATE_PRE_COPY && s->t_ns < first_pc)
            first_pc = s->t_ns;
        if ((s->state == VFM_STATE_RUNNING_P2P || s->state == VFM_STATE_PRE_COPY_P2P) &&
            s->t_ns > last_quiesce)
            last_quiesce = s->t_ns;
        if ((s->state == VFM_STATE_STOP || s->state == VFM_STATE_STOP_COPY) && s->t_ns < first_stop)
            first_stop = s->t_ns;
    }
    /* pre-copy began before the switchover; no source stopped before every
     * P2P source was quiesced */
    assert_true(first_pc < rep.t_switch_ns);
    assert_true(last_quiesce > 0 && last_quiesce < first_stop);
    check_moved(&v);
    /* the destination loaded pre-copy records before the switchover */
    assert_true(v.td[1][1]->calls[TCB_PC_LOAD] >= 1);
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

/* The same VM over 2, 3 and 4 streams with switchover-ack: each device's
 * pre-copy records, its INITIAL_END and its final state go on its own
 * stream and are loaded by that stream's thread; the answers come back on
 * the main one; every device is restored, and every stream carried its
 * devices' bytes. */
static void test_precopy_streams(void **state)
{
    (void)state;
    for (unsigned n = 2; n <= 4; n++) {
        struct vmset v;
        struct vfm_mig_config cfg;
        struct vfm_mig_report rep;
        uint64_t sum = 0;

        vm_make(&v, 8u << 20);
        run_vm(0, 20);
        cfg_init(&cfg, &v);
        cfg.version = VFM_MIG_CONFIG_VERSION;
        cfg.nstreams = n;
        cfg.switchover_ack = true;
        assert_int_equal(vfm_migrate_local(&cfg, &rep), 0);
        assert_int_equal(rep.nstreams, n);
        assert_int_equal(rep.precopy_devices, 3);
        assert_true(rep.precopy_rounds >= 1);
        assert_int_equal(rep.switchover_acks, 3);
        for (unsigned k = 0; k < n; k++) {
            sum += rep.stream_bytes_by[k];
            /* devices k, k + n, ... : both large devices are 16 MiB */
            if (k < 2)
                assert_true(rep.stream_bytes_by[k] >= MEM);
        }
        assert_true(sum == rep.stream_bytes);
        check_moved(&v);
        vfm_mig_report_free(&rep);
        vm_free(&v);
    }
}

/* Dirtying far faster than the stream can keep up with, and a downtime
 * limit nothing can meet: pre-copy stops at the round limit and the
 * migration is still correct. */
static void test_precopy_does_not_converge(void **state)
{
    struct vmset v;
    struct vfm_mig_config cfg;
    struct vfm_mig_report rep;
    (void)state;

    vm_make(&v, 4ull << 30); /* 4 GiB/s: every page, every round */
    cfg_init(&cfg, &v);
    cfg.downtime_limit_ms = 1;
    cfg.max_rounds = 3;
    run_vm(0, 10);
    assert_int_equal(vfm_migrate_local(&cfg, &rep), 0);
    assert_int_equal(rep.precopy_rounds, 3);
    assert_false(rep.precopy_converged);
    check_moved(&v);
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

/* One large device dirtying every page many times per round, small enough
 * that every scan of its dirty bitmap wraps around: many migrations back
 * and forth, each checked by the device itself. */
static void test_dirty_scan_wraps(void **state)
{
    struct large *lg[2];
    struct vfm_endpoint *ep[2];
    (void)state;

    for (int side = 0; side < 2; side++) {
        struct large_config lc = {.name = side ? "wrap-b" : "wrap-a",
                                  .size = 1u << 20,
                                  .page = 4096,
                                  .dirty_rate = 1ull << 30,
                                  .p2p = true,
                                  .seed = (uint32_t)side + 3};
        assert_int_equal(large_new(&lc, &lg[side]), 0);
        assert_int_equal(vfm_ep_local_new(large_device(lg[side]), &ep[side]), 0);
    }
    assert_int_equal(vfm_device_set_state(large_device(lg[1]), VFM_STATE_STOP, NULL), 0);
    for (int k = 0; k < 40; k++) {
        struct vfm_mig_report rep;
        struct vfm_mig_config cfg = {.src = &ep[k % 2],
                                     .dst = &ep[!(k % 2)],
                                     .ndev = 1,
                                     .downtime_limit_ms = 1,
                                     .max_rounds = 8};
        if (vfm_migrate_local(&cfg, &rep))
            fail_msg("migration %d failed: %s", k, rep.message);
        assert_true(rep.precopy_rounds >= 1);
        vfm_mig_report_free(&rep);
        /* the old source waits, stopped, for the way back */
        assert_int_equal(vfm_device_get_state(large_device(lg[k % 2])), VFM_STATE_STOP);
    }
    for (int side = 0; side < 2; side++) {
        vfm_ep_free(ep[side]);
        large_free(lg[side]);
    }
}

/* Pre-copy off: every device stop-copied, nothing moved while running. */
static void test_no_precopy(void **state)
{
    struct vmset v;
    struct vfm_mig_config cfg;
    struct vfm_mig_report rep;
    (void)state;

    vm_make(&v, 8u << 20);
    cfg_init(&cfg, &v);
    cfg.no_precopy = true;
    assert_int_equal(vfm_migrate_local(&cfg, &rep), 0);
    assert_int_equal(rep.precopy_devices, 0);
    assert_int_equal(rep.precopy_rounds, 0);
    assert_int_equal(rep.precopy_bytes, 0);
    for (unsigned k = 0; k < rep.nspans; k++)
        assert_int_not_equal(rep.spans[k].state, VFM_STATE_PRE_COPY);
    check_moved(&v);
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

/* A destination that loads in place takes a whole memory by swapping
 * pages (no copy) when it can — size a multiple of 2 MiB, the final state
 * every page in one run (stop-copy) — and by copying otherwise (after
 * pre-copy: only the pages still due; a size that is not a multiple of
 * 2 MiB). Either way the memory is the source's, there and back again (a
 * device whose memory was swapped in saves it as any other). */
static void test_load_in_place_swaps(void **state)
{
    static const struct {
        uint64_t size;
        bool precopy;
        bool swaps;
    } c[] = {{16u << 20, false, true}, {16u << 20, true, false}, {3u << 20, false, false}};
    (void)state;

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        struct large *lg[2];
        struct vfm_endpoint *ep[2];
        for (int side = 0; side < 2; side++) {
            struct large_config lc = {.name = side ? "swap-b" : "swap-a",
                                      .size = c[i].size,
                                      .page = 4096,
                                      .dirty_rate = 0,
                                      .load_in_place = true,
                                      .seed = (uint32_t)(side + 11)};
            assert_int_equal(large_new(&lc, &lg[side]), 0);
            assert_int_equal(vfm_ep_local_new(large_device(lg[side]), &ep[side]), 0);
        }
        for (int r = 0; r < 3; r++) {
            struct vfm_mig_config cfg = {.ndev = 1, .no_precopy = !c[i].precopy};
            struct vfm_mig_report rep;
            int from = r % 2, to = 1 - from;
            uint64_t before = large_swaps(lg[to]);
            cfg.src = &ep[from];
            cfg.dst = &ep[to];
            /* the source writes while it runs (pre-copy has work); the
             * destination, once running, does not (its digest stays) */
            large_set_rate(lg[from], c[i].precopy ? (4u << 20) : 0);
            large_set_rate(lg[to], 0);
            assert_int_equal(vfm_ep_set_state(ep[to], VFM_STATE_STOP), 0);
            assert_int_equal(vfm_migrate_local(&cfg, &rep), 0);
            vfm_mig_report_free(&rep);
            /* the source stopped at the switchover; the destination runs
             * what it saved (its checked digest too) */
            assert_true(large_digest(lg[from]) == large_digest(lg[to]));
            assert_int_equal(large_swaps(lg[to]), before + (c[i].swaps ? 1 : 0));
        }
        for (int side = 0; side < 2; side++) {
            vfm_ep_free(ep[side]);
            large_free(lg[side]);
        }
    }
}

/* A failure while pre-copying (a source refusing PRE_COPY), at the
 * switchover (PRE_COPY_P2P), after it (a destination refusing STOP), and a
 * destination that cannot take pre-copy records: each rolls the sources
 * back to RUNNING and leaves no destination running on a partial state. */
static void test_precopy_failures(void **state)
{
    static const struct {
        int side, dev;
        uint32_t st;
    } at[] = {
        {0, 1, VFM_STATE_PRE_COPY},    {0, 0, VFM_STATE_PRE_COPY_P2P},
        {0, 3, VFM_STATE_STOP_COPY},   {1, 0, VFM_STATE_STOP},
        {1, 0, VFM_STATE_RUNNING_P2P}, {-1, -1, 0} /* destination without pre-copy */
    };
    (void)state;

    for (size_t c = 0; c < sizeof(at) / sizeof(at[0]); c++) {
        struct vmset v;
        struct vfm_mig_config cfg;
        struct vfm_mig_report rep;
        struct testdev *plain = NULL;
        struct vfm_endpoint *keep = NULL;

        struct vfm_endpoint *faulty = NULL, *real = NULL;

        vm_make(&v, 8u << 20);
        cfg_init(&cfg, &v);
        if (at[c].side >= 0) {
            /* that device refuses that state (tests/fault/fault_ep.h) */
            real = v.ep[at[c].side][at[c].dev];
            assert_int_equal(fault_ep_new(real, at[c].st, &faulty), 0);
            v.ep[at[c].side][at[c].dev] = faulty;
        }
        if (at[c].side < 0) {
            /* destination 3 has the same flags but no pre-copy ops */
            plain = testdev_new_full("td-plain", false, false, 5, TESTDEV_COMPAT, 0);
            keep = v.ep[1][3];
            assert_int_equal(vfm_ep_local_new(plain->dev, &v.ep[1][3]), 0);
        }
        if (vfm_migrate_local(&cfg, &rep) >= 0)
            fail_msg("case %zu: the migration did not fail", c);
        assert_true(rep.rolled_back);
        assert_true(rep.message[0] != 0);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(vfm_device_get_state(large_device(v.lg[0][k])), VFM_STATE_RUNNING);
            assert_int_equal(vfm_device_get_state(v.td[0][k]->dev), VFM_STATE_RUNNING);
            assert_false(v.td[0][1]->tracking); /* pre-copy ended on the source */
        }
        /* the sources' sessions are gone: a new migration works */
        if (faulty) {
            assert_int_equal(fault_ep_refused(faulty), 1);
            v.ep[at[c].side][at[c].dev] = real;
            vfm_ep_free(faulty);
        }
        if (plain) {
            vfm_ep_free(v.ep[1][3]);
            v.ep[1][3] = keep;
            testdev_free(plain);
        }
        vfm_mig_report_free(&rep);
        if (vfm_migrate_local(&cfg, &rep))
            fail_msg("case %zu: the migration after the rollback failed: %s", c, rep.message);
        check_moved(&v);
        vfm_mig_report_free(&rep);
        vm_free(&v);
    }
}

/* Devices whose pre-copy data is small (mtty's is 24 to 60 bytes, these
 * 4 KiB) converge in one or two rounds: the throughput is measured over
 * every round, however few bytes a round moved, and the estimate is the
 * devices' own (MIG_DATA_SIZE). */
static void test_small_devices_converge(void **state)
{
    struct testdev *t[2][2];
    struct vfm_endpoint *ep[2][2];
    struct vfm_mig_config cfg = {.ndev = 2};
    struct vfm_mig_report rep;
    (void)state;

    for (int side = 0; side < 2; side++)
        for (int k = 0; k < 2; k++) {
            t[side][k] = testdev_new_full("small", k == 0, true, (uint32_t)(3 + side * 2 + k),
                                          TESTDEV_COMPAT, 0);
            assert_non_null(t[side][k]);
            assert_int_equal(vfm_ep_local_new(t[side][k]->dev, &ep[side][k]), 0);
        }
    cfg.src = ep[0];
    cfg.dst = ep[1];
    if (vfm_migrate_local(&cfg, &rep))
        fail_msg("%s", rep.message);
    assert_int_equal(rep.precopy_devices, 2);
    assert_true(rep.precopy_converged);
    assert_true(rep.precopy_rounds >= 1 && rep.precopy_rounds <= 2);
    assert_int_equal(rep.precopy_estimate, VFM_MIG_EST_DATA_SIZE);
    assert_true(rep.expected_downtime_ns >= 0 &&
                rep.expected_downtime_ns <= (int64_t)VFM_MIG_DEFAULT_DOWNTIME_MS * 1000000);
    for (int k = 0; k < 2; k++)
        assert_memory_equal(t[0][k]->content, t[1][k]->content, TESTDEV_CONTENT);
    vfm_mig_report_free(&rep);
    for (int side = 0; side < 2; side++)
        for (int k = 0; k < 2; k++) {
            vfm_ep_free(ep[side][k]);
            testdev_free(t[side][k]);
        }
}

/* The log of the first pre-copy round after which the large source's
 * initial data is all out (its INITIAL_END went in that round): the guest
 * reconfigures it there (its whole memory initial data again). */
struct reconf_hook {
    struct large *lg;
    bool done;
};
static void reconf_on_log(void *ctx, int level, const char *msg)
{
    struct reconf_hook *h = ctx;
    uint64_t in, di;
    (void)level;
    if (!h->done && !strncmp(msg, "pre-copy round ", 15) &&
        vfm_device_precopy_info(large_device(h->lg), &in, &di) == 0 && in == 0) {
        h->done = true;
        large_reconfigure(h->lg);
    }
}

/* Switchover-ack: every pre-copy device's initial data is acknowledged by
 * the receiver before the switchover; a REINIT after the first round asks
 * again, and the whole memory it made initial goes before the switchover,
 * not after. */
static void test_switchover_ack_reinit(void **state)
{
    struct vmset v;
    struct vfm_mig_config cfg;
    struct vfm_mig_report rep;
    struct reconf_hook h = {0};
    (void)state;

    vm_make(&v, 0); /* nothing dirtied: every byte pre-copy moves is initial data */
    cfg_init(&cfg, &v);
    cfg.version = VFM_MIG_CONFIG_VERSION;
    cfg.switchover_ack = true;
    h.lg = v.lg[0][0];
    vfm_log_set(reconf_on_log, &h, LOG_INFO);
    if (vfm_migrate_local(&cfg, &rep))
        fail_msg("%s", rep.message);
    vfm_log_set(NULL, NULL, 0);
    assert_true(h.done);
    assert_int_equal(rep.precopy_reinits, 1);
    /* three pre-copy devices, and the reconfigured one once more */
    assert_int_equal(rep.switchover_acks, 4);
    assert_true(rep.precopy_rounds >= 2);
    assert_true(rep.precopy_bytes >= 3u * MEM);            /* both memories, then one again */
    assert_true(rep.bytes - rep.precopy_bytes < MEM / 16); /* no page of it after */
    assert_non_null(strstr(rep.notes, "announced new initial data"));
    check_moved(&v);
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

struct mute_rx {
    int fd;
};
static void *mute_main(void *arg)
{
    struct mute_rx *r = arg;
    char buf[65536];
    while (read(r->fd, buf, sizeof(buf)) > 0)
        ;
    return NULL;
}

/* A receiver that takes the stream and never acknowledges anything: the
 * sender gives up at its stream deadline, and the sources run on. */
static void test_switchover_ack_never(void **state)
{
    struct vmset v;
    struct vfm_mig_config cfg;
    struct vfm_mig_report rep;
    struct mute_rx r;
    pthread_t t;
    int sv[2], ret;
    (void)state;

    vm_make(&v, 1u << 20);
    cfg_init(&cfg, &v);
    cfg.version = VFM_MIG_CONFIG_VERSION;
    cfg.switchover_ack = true;
    cfg.timeout_ms = 1000;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    r.fd = sv[1];
    assert_int_equal(pthread_create(&t, NULL, mute_main, &r), 0);
    ret = vfm_migrate_send(&cfg, sv[0], &rep);
    close(sv[0]);
    pthread_join(t, NULL);
    close(sv[1]);
    assert_int_equal(ret, -ETIMEDOUT);
    assert_non_null(strstr(rep.message, "no switchover acknowledgement"));
    assert_true(rep.rolled_back);
    assert_false(rep.committed);
    assert_true(rep.switchover_ack_wait_ns >= 1000000000ll);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(vfm_device_get_state(large_device(v.lg[0][k])), VFM_STATE_RUNNING);
        assert_int_equal(vfm_device_get_state(v.td[0][k]->dev), VFM_STATE_RUNNING);
    }
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precopy_clean),
        cmocka_unit_test(test_precopy_does_not_converge),
        cmocka_unit_test(test_no_precopy),
        cmocka_unit_test(test_load_in_place_swaps),
        cmocka_unit_test(test_dirty_scan_wraps),
        cmocka_unit_test(test_precopy_failures),
        cmocka_unit_test(test_small_devices_converge),
        cmocka_unit_test(test_switchover_ack_reinit),
        cmocka_unit_test(test_switchover_ack_never),
        cmocka_unit_test(test_precopy_streams),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
