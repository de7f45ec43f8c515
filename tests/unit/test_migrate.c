/* SPDX-License-Identifier: MIT */
/*
 * The migration engine with in-process devices (local endpoints), the
 * stream passing through a relay that can truncate, corrupt or reorder it:
 * the receiver detects each, no destination runs on bad state, and the
 * sources are back in RUNNING. Also the P2P ordering itself, from the
 * timeline: no source stops before every P2P source is quiesced, and no
 * destination runs before every one is in RUNNING_P2P.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/fsm.h>
#include <vfiomig/migrate.h>

#include "migrate/mstream.h"
#include "testdev.h"

#define N 3

enum fault { NONE, TRUNCATE, FLIP, REORDER, STALL };

struct relay {
    int from, to;
    enum fault fault;
    size_t at; /* byte offset of the fault */
    /* the first bytes it passed on (a stream's header) */
    uint8_t head[VFM_MS_HDR_LANE_SIZE];
    size_t nhead;
};

/* Copies @from to @to, applying the fault; after a truncation the rest is
 * read and dropped, and @to is shut for writing. */
static void *relay_main(void *arg)
{
    struct relay *r = arg;
    uint8_t buf[65536], held[64];
    size_t off = 0, nheld = 0;
    bool cut = false;
    ssize_t n;

    while ((n = read(r->from, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++, off++) {
            uint8_t b = buf[i];
            if (cut)
                continue;
            if ((r->fault == TRUNCATE || r->fault == STALL) && off == r->at) {
                cut = true; /* STALL: the rest is dropped, the stream stays open */
                if (r->fault == TRUNCATE)
                    shutdown(r->to, SHUT_WR);
                continue;
            }
            if (r->fault == FLIP && off == r->at)
                b ^= 0x20;
            if (r->fault == REORDER && off >= r->at && off < r->at + 40) {
                held[nheld++] = b; /* hold one record header back... */
                continue;
            }
            if (r->nhead < sizeof(r->head))
                r->head[r->nhead++] = b;
            if (write(r->to, &b, 1) != 1)
                cut = true;
            if (r->fault == REORDER && nheld == 40 && off >= r->at + 40 + 39) {
                /* ...and send it after the next one */
                if (write(r->to, held, nheld) != (ssize_t)nheld)
                    cut = true;
                nheld = 0;
            }
        }
    }
    if (nheld && !cut && write(r->to, held, nheld) != (ssize_t)nheld)
        cut = true;
    if (r->fault != STALL || !cut) /* a stalled stream stays open, silent */
        shutdown(r->to, SHUT_WR);
    return NULL;
}

struct side {
    const struct vfm_mig_config *cfg;
    int fd;
    struct vfm_mig_report rep;
    int ret;
};

static void *receiver(void *arg)
{
    struct side *s = arg;
    s->ret = vfm_migrate_receive(s->cfg, s->fd, &s->rep);
    shutdown(s->fd, SHUT_RDWR); /* as a receiving process that exits */
    return NULL;
}

/* N source and N destination test devices (a destination waits, stopped,
 * for its state), as endpoints. */
struct vmpair {
    struct testdev *src[N], *dst[N];
    struct vfm_endpoint *se[N], *de[N];
};

static void vmpair_up(struct vmpair *v, uint32_t seed)
{
    for (int i = 0; i < N; i++) {
        v->src[i] = testdev_new("src", true, seed + (uint32_t)i);
        v->dst[i] = testdev_new("dst", true, seed + 10 + (uint32_t)i);
        assert_int_equal(vfm_ep_local_new(v->src[i]->dev, &v->se[i]), 0);
        assert_int_equal(vfm_ep_local_new(v->dst[i]->dev, &v->de[i]), 0);
        assert_int_equal(vfm_device_set_state(v->dst[i]->dev, VFM_STATE_STOP, NULL), 0);
    }
}

static void vmpair_down(struct vmpair *v)
{
    for (int i = 0; i < N; i++) {
        vfm_ep_free(v->se[i]);
        vfm_ep_free(v->de[i]);
        testdev_free(v->src[i]);
        testdev_free(v->dst[i]);
    }
}

/* The sender here, the receiver on a thread, and two relay threads between
 * them (@fwd sender -> receiver on sockets a[1] -> b[0], @back the other
 * way); every socket closed at the end. Return: the sender's result. */
static int run_relayed(const struct vfm_mig_config *cfg, struct vfm_mig_report *rep,
                       struct side *rx, void *(*fwd)(void *), void *fwd_arg, void *(*back)(void *),
                       void *back_arg, int a[2], int b[2])
{
    pthread_t tf, tb, tr;
    int ret;

    rx->cfg = cfg;
    rx->fd = b[1];
    pthread_create(&tf, NULL, fwd, fwd_arg);
    pthread_create(&tb, NULL, back, back_arg);
    pthread_create(&tr, NULL, receiver, rx);
    ret = vfm_migrate_send(cfg, a[0], rep);
    shutdown(a[0], SHUT_RDWR);
    pthread_join(tr, NULL);
    shutdown(b[1], SHUT_RDWR);
    pthread_join(tf, NULL);
    pthread_join(tb, NULL);
    for (int k = 0; k < 2; k++) {
        close(a[k]);
        close(b[k]);
    }
    return ret;
}

/* Migrates N test devices through a relay with @fault at @at. */
static void migrate_through(enum fault fault, size_t at, int want_ok)
{
    struct vmpair v;
    struct testdev **src = v.src, **dst = v.dst;
    struct vfm_mig_config cfg = {.src = v.se, .dst = v.de, .ndev = N};
    int a[2], b[2];
    struct relay fwd, back;
    struct side rx;
    struct vfm_mig_report rep;
    int ret;

    vmpair_up(&v, 10);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    fwd = (struct relay){a[1], b[0], fault, at};
    back = (struct relay){b[0], a[1], NONE, 0};
    ret = run_relayed(&cfg, &rep, &rx, relay_main, &fwd, relay_main, &back, a, b);

    for (int i = 0; i < N; i++) {
        uint32_t ss = vfm_device_get_state(src[i]->dev), ds = vfm_device_get_state(dst[i]->dev);
        if (want_ok) {
            assert_int_equal(ss, VFM_STATE_STOP);
            assert_int_equal(ds, VFM_STATE_RUNNING);
            assert_memory_equal(src[i]->content, dst[i]->content, TESTDEV_CONTENT);
        } else {
            assert_int_equal(ss, VFM_STATE_RUNNING); /* rolled back */
            /* reset and stopped, never ran on bad state; or, refused at
             * the header, never touched at all */
            assert_int_equal(ds, VFM_STATE_STOP);
            assert_int_equal(rx.rep.refused, at < VFM_MS_HDR_SIZE);
            assert_int_equal(dst[i]->calls[TCB_RESET], at < VFM_MS_HDR_SIZE ? 0 : 1);
            if (rx.rep.refused)
                assert_int_equal(dst[i]->calls[TCB_STOP_RES], 0);
            assert_memory_not_equal(src[i]->content, dst[i]->content, TESTDEV_CONTENT);
        }
    }
    if (want_ok) {
        assert_int_equal(ret, 0);
        assert_int_equal(rx.ret, 0);
        assert_true(rep.downtime_ns > 0);
        assert_int_equal(rep.bytes, N * ((uint64_t)TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD));
    } else {
        assert_true(ret < 0);
        assert_true(rx.ret < 0);
        assert_true(rep.rolled_back);
        /* the stream's checks; or, a flip inside a state record's payload
         * (DATA_SC: local endpoints' streams are self-checked, not hashed
         * by the migration stream), the destination runtime's own check */
        if (fault != NONE && rx.ret != -EBADMSG && rx.ret != -EPIPE &&
            !strstr(rx.rep.message, "writing its state in RESUMING failed"))
            fail_msg("the receiver answered %s (%s)", vfm_err_name(rx.ret), rx.rep.message);
    }
    vfm_mig_report_free(&rep);
    vfm_mig_report_free(&rx.rep);
    vmpair_down(&v);
}

/* The whole stream is the header + records; the state records start after
 * the header and the device list (40 + 12). */
#define DATA_AT (VFM_MS_HDR_SIZE + 40 + 12)

static void test_clean(void **state)
{
    (void)state;
    migrate_through(NONE, 0, 1);
}

static void test_truncated(void **state)
{
    static const size_t at[] = {
        0,       10,           VFM_MS_HDR_SIZE,     VFM_MS_HDR_SIZE + 6,
        DATA_AT, DATA_AT + 39, DATA_AT + 40 + 1000, DATA_AT + 3 * 40 + 3 * 4184};
    (void)state;
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
        migrate_through(TRUNCATE, at[i], 0);
}

static void test_corrupted(void **state)
{
    static const size_t at[] = {0,
                                20,
                                VFM_MS_HDR_SIZE + 6,
                                DATA_AT + 2,
                                DATA_AT + 12,
                                DATA_AT + 40 + 7,
                                DATA_AT + 40 + 4000};
    (void)state;
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
        migrate_through(FLIP, at[i], 0);
}

static void test_reordered(void **state)
{
    (void)state;
    /* the first state record's header swapped with the bytes after it */
    migrate_through(REORDER, DATA_AT, 0);
}

/* The ordering, read off the timeline of a clean migration. */
static void test_p2p_ordering(void **state)
{
    struct testdev *src[N], *dst[N];
    struct vfm_endpoint *se[N], *de[N];
    struct vfm_mig_config cfg = {.src = se, .dst = de, .ndev = N};
    struct vfm_mig_report rep;
    int64_t last_src_p2p = 0, first_src_stop = INT64_MAX, last_dst_p2p = 0,
            first_dst_run = INT64_MAX;
    (void)state;

    for (int i = 0; i < N; i++) {
        src[i] = testdev_new("src", true, 1);
        dst[i] = testdev_new("dst", true, 2);
        src[i]->slow_us = 2000; /* arcs take time: overlaps would show */
        dst[i]->slow_us = 2000;
        vfm_ep_local_new(src[i]->dev, &se[i]);
        vfm_ep_local_new(dst[i]->dev, &de[i]);
    }
    assert_int_equal(vfm_migrate_local(&cfg, &rep), 0);
    for (unsigned k = 0; k < rep.nspans; k++) {
        const struct vfm_mig_span *s = &rep.spans[k];
        if (s->side == 0 && s->state == VFM_STATE_RUNNING_P2P && s->t_ns > last_src_p2p)
            last_src_p2p = s->t_ns;
        if (s->side == 0 && s->state == VFM_STATE_STOP_COPY && s->t_ns < first_src_stop)
            first_src_stop = s->t_ns;
        if (s->side == 1 && s->state == VFM_STATE_RUNNING_P2P && s->t_ns > last_dst_p2p)
            last_dst_p2p = s->t_ns;
        if (s->side == 1 && s->state == VFM_STATE_RUNNING && s->t_ns < first_dst_run)
            first_dst_run = s->t_ns;
    }
    /* STOP_COPY is reached through STOP, whose arc starts after the span
     * of the last quiesce was recorded */
    assert_true(last_src_p2p > 0 && last_src_p2p < first_src_stop);
    assert_true(last_dst_p2p > 0 && last_dst_p2p < first_dst_run);
    vfm_mig_report_free(&rep);
    for (int i = 0; i < N; i++) {
        vfm_ep_free(se[i]);
        vfm_ep_free(de[i]);
        testdev_free(src[i]);
        testdev_free(dst[i]);
    }
}

/* An endpoint that checks every request the engine sends against the
 * planner, from the state the device is really in (asked before each). */
struct watch {
    struct vfm_endpoint *ep; /* vfm_ep_new(), no destroy: vfm_ep_delete() */
    struct vfm_endpoint *in;
    uint32_t flags;
    unsigned sets, refused;
};

static int wt_flags(struct vfm_endpoint *ep, uint32_t *f)
{
    return vfm_ep_flags(((struct watch *)vfm_ep_priv(ep))->in, f);
}

static int wt_set(struct vfm_endpoint *ep, uint32_t state)
{
    struct watch *w = vfm_ep_priv(ep);
    uint32_t cur = VFM_STATE_COUNT, next;

    vfm_ep_get_state(w->in, &cur);
    w->sets++;
    if (vfm_fsm_next(w->flags, cur, state, &next)) {
        w->refused++;
        print_message("# the engine sent %s -> %s, which the planner refuses\n", vfm_state_str(cur),
                      vfm_state_str(state));
    }
    return vfm_ep_set_state(w->in, state);
}

static int wt_get(struct vfm_endpoint *ep, uint32_t *s)
{
    return vfm_ep_get_state(((struct watch *)vfm_ep_priv(ep))->in, s);
}

static ssize_t wt_read(struct vfm_endpoint *ep, void *buf, size_t len)
{
    return vfm_ep_read(((struct watch *)vfm_ep_priv(ep))->in, buf, len);
}

static ssize_t wt_write(struct vfm_endpoint *ep, const void *buf, size_t len)
{
    return vfm_ep_write(((struct watch *)vfm_ep_priv(ep))->in, buf, len);
}

static int wt_size(struct vfm_endpoint *ep, uint64_t *b)
{
    return vfm_ep_data_size(((struct watch *)vfm_ep_priv(ep))->in, b);
}

static int wt_reset(struct vfm_endpoint *ep)
{
    return vfm_ep_reset(((struct watch *)vfm_ep_priv(ep))->in);
}

static int wt_info(struct vfm_endpoint *ep, uint64_t *i, uint64_t *d)
{
    return vfm_ep_precopy_info(((struct watch *)vfm_ep_priv(ep))->in, i, d);
}

static const struct vfm_endpoint_ops watch_ops = {
    .get_flags = wt_flags,
    .set_state = wt_set,
    .get_state = wt_get,
    .read = wt_read,
    .write = wt_write,
    .data_size = wt_size,
    .reset = wt_reset,
    .precopy_info = wt_info,
};

/* Puts a test device (P2P, pre-copy) in @st the way another process could
 * have left it. */
static void leave_in(struct testdev *t, uint32_t st)
{
    if (st == VFM_STATE_ERROR) {
        t->fail_cb = TCB_RUN_P2P;
        t->fail_err = -EIO;
        t->fail_broken = true;
        vfm_device_set_state(t->dev, VFM_STATE_RUNNING_P2P, NULL);
        t->fail_cb = -1;
        t->fail_broken = false;
    } else {
        assert_int_equal(vfm_device_set_state(t->dev, st, NULL), 0);
    }
    assert_int_equal(vfm_device_get_state(t->dev), st);
}

/* The engine reads where the devices are before its first request, never
 * sends one the planner refuses, from any state a source or a destination
 * was left in (a killed migrate leaves a kernel device in STOP_COPY across
 * close and reopen: STOP_COPY -> PRE_COPY then loops on old kernels), and
 * says what it did. */
static void test_start_states(void **state)
{
    (void)state;

    for (uint32_t st = 0; st < VFM_STATE_COUNT; st++) {
        struct testdev *src = testdev_new_full("src", true, true, 5, TESTDEV_COMPAT, 0);
        struct testdev *dst = testdev_new_full("dst", true, true, 6, TESTDEV_COMPAT, 0);
        struct watch ws = {.flags = VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P |
                                    VFM_MIGRATION_PRE_COPY},
                     wd = ws;
        struct vfm_endpoint *se, *de;
        struct vfm_mig_config cfg = {.ndev = 1};
        struct vfm_mig_report rep;
        bool refuse = st == VFM_STATE_ERROR || st == VFM_STATE_RESUMING;
        bool stopped = st == VFM_STATE_STOP || st == VFM_STATE_STOP_COPY;
        int ret;

        assert_non_null(src);
        assert_non_null(dst);
        assert_int_equal(vfm_ep_local_new(src->dev, &ws.in), 0);
        assert_int_equal(vfm_ep_local_new(dst->dev, &wd.in), 0);
        assert_int_equal(vfm_ep_new(&watch_ops, "src", &ws, &ws.ep), 0);
        assert_int_equal(vfm_ep_new(&watch_ops, "dst", &wd, &wd.ep), 0);
        se = ws.ep;
        de = wd.ep;
        cfg.src = &se;
        cfg.dst = &de;
        leave_in(src, st);
        /* the destination was left where a killed receiver leaves one */
        leave_in(dst, st == VFM_STATE_ERROR ? VFM_STATE_ERROR : VFM_STATE_STOP_COPY);
        ret = vfm_migrate_local(&cfg, &rep);
        assert_int_equal(ws.refused + wd.refused, 0);
        assert_int_equal(vfm_mig_report_device(&rep, 0)->initial_state, st);
        if (refuse) {
            /* refused before anything was sent to any device */
            assert_int_equal(ret, -EBUSY);
            assert_non_null(strstr(rep.message, vfm_state_str(st)));
            assert_int_equal(ws.sets, 0);
            assert_false(rep.rolled_back); /* nothing was moved, nothing to bring back */
            assert_int_equal(vfm_device_get_state(src->dev), st);
        } else {
            if (ret)
                fail_msg("from %s: %s", vfm_state_str(st), rep.message);
            assert_memory_equal(src->content, dst->content, TESTDEV_CONTENT);
            assert_int_equal(vfm_device_get_state(src->dev), VFM_STATE_STOP);
            /* a stopped VM stays stopped on the destination */
            assert_int_equal(vfm_device_get_state(dst->dev),
                             stopped ? VFM_STATE_STOP : VFM_STATE_RUNNING);
            assert_int_equal(rep.precopy_devices, stopped ? 0 : 1);
            assert_int_equal(rep.notes[0] != 0, st != VFM_STATE_RUNNING);
            if (st != VFM_STATE_RUNNING)
                assert_non_null(strstr(rep.notes, vfm_state_str(st)));
        }
        vfm_mig_report_free(&rep);
        vfm_ep_delete(ws.ep);
        vfm_ep_delete(wd.ep);
        vfm_ep_free(ws.in);
        vfm_ep_free(wd.in);
        testdev_free(src);
        testdev_free(dst);
    }
}

/* A source whose stream is self-checked (a local runtime) sends it
 * unhashed (DATA_SC); a destination that does not check its stream itself
 * (the watch wrapper says nothing of it, as a kernel device would) refuses
 * that before its first byte, and the source rolls back. The other way
 * round the stream is hashed, and moves. */
static void test_self_checked_needs_a_checking_destination(void **state)
{
    (void)state;
    for (int way = 0; way < 2; way++) {
        struct testdev *src = testdev_new("src", true, 41), *dst = testdev_new("dst", true, 42);
        struct watch w = {.flags = VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P};
        struct vfm_endpoint *plain, *wrapped;
        struct vfm_mig_config cfg = {.ndev = 1};
        struct vfm_mig_report rep;
        int ret;

        assert_int_equal(vfm_ep_local_new(way ? src->dev : dst->dev, &w.in), 0);
        assert_int_equal(vfm_ep_new(&watch_ops, way ? "src" : "dst", &w, &w.ep), 0);
        assert_int_equal(vfm_ep_local_new(way ? dst->dev : src->dev, &plain), 0);
        wrapped = w.ep;
        assert_true(vfm_ep_self_checked(plain));
        assert_false(vfm_ep_self_checked(wrapped));
        assert_int_equal(vfm_ep_data_fd(plain), -1); /* in-process: no fd */
        cfg.src = way ? &wrapped : &plain;
        cfg.dst = way ? &plain : &wrapped;
        assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_STOP, NULL), 0);
        ret = vfm_migrate_local(&cfg, &rep);
        if (way == 0) {
            assert_int_equal(ret, -EBADMSG);
            if (!strstr(rep.message, "this side's destination does not check it"))
                fail_msg("%s", rep.message);
            assert_true(rep.rolled_back);
            assert_int_equal(vfm_device_get_state(src->dev), VFM_STATE_RUNNING);
            assert_int_not_equal(vfm_device_get_state(dst->dev), VFM_STATE_RUNNING);
            assert_memory_not_equal(src->content, dst->content, TESTDEV_CONTENT);
        } else {
            if (ret)
                fail_msg("%s", rep.message);
            assert_memory_equal(src->content, dst->content, TESTDEV_CONTENT);
        }
        vfm_mig_report_free(&rep);
        vfm_ep_delete(w.ep);
        vfm_ep_free(w.in);
        vfm_ep_free(plain);
        testdev_free(src);
        testdev_free(dst);
    }
}

/*
 * The commit (migrate.h, mstream.h): after the stream the receiver answers
 * LOADED, the sender COMMIT, the receiver RUNNING. Each is lost in turn
 * between two relays; whatever is lost, at most one side runs the devices,
 * and a side that cannot know says so (outcome_unknown) with its devices
 * stopped and their state intact.
 */
enum lose { LOSE_NOTHING, LOSE_LOADED, LOSE_COMMIT, LOSE_RUNNING, LOSE_SILENT };

struct commit_relays {
    int s_end, r_end;    /* the relays' ends towards the sender and receiver */
    atomic_bool fwd_cut; /* nothing more reaches the receiver */
    enum lose lose;
};

/* sender -> receiver */
static void *fwd_main(void *arg)
{
    struct commit_relays *c = arg;
    uint8_t buf[65536];
    ssize_t n;

    while ((n = read(c->s_end, buf, sizeof(buf))) > 0)
        if (!atomic_load(&c->fwd_cut) && write(c->r_end, buf, (size_t)n) != n)
            break;
    shutdown(c->r_end, SHUT_WR);
    return NULL;
}

/* receiver -> sender: the three answers, one of them lost */
static void *back_main(void *arg)
{
    struct commit_relays *c = arg;
    uint8_t b;
    size_t off = 0;
    bool cut = false;

    while (read(c->r_end, &b, 1) == 1) {
        if (off == 0 && c->lose == LOSE_LOADED)
            cut = true;
        if (off == 0 && c->lose == LOSE_COMMIT) {
            /* the receiver will not hear from the sender again: cut before
             * the sender can send its COMMIT */
            atomic_store(&c->fwd_cut, true);
            shutdown(c->r_end, SHUT_WR);
        }
        if (off == VFM_MS_ACK_SIZE && c->lose == LOSE_RUNNING)
            cut = true;
        if (c->lose == LOSE_SILENT) {
            off++;
            continue; /* a receiver whose answers never come, nor its end */
        }
        if (cut)
            shutdown(c->s_end, SHUT_WR);
        else if (write(c->s_end, &b, 1) != 1)
            break;
        off++;
    }
    shutdown(c->s_end, SHUT_WR);
    return NULL;
}

/* run_relayed() through the commit relays @c. */
static int run_commit_relayed(const struct vfm_mig_config *cfg, struct vfm_mig_report *rep,
                              struct side *rx, struct commit_relays *c)
{
    int a[2], b[2];

    atomic_init(&c->fwd_cut, false);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    c->s_end = a[1];
    c->r_end = b[0];
    return run_relayed(cfg, rep, rx, fwd_main, c, back_main, c, a, b);
}

static void test_commit_lost(void **state)
{
    (void)state;
    for (enum lose lose = LOSE_NOTHING; lose <= LOSE_RUNNING; lose++) {
        struct vmpair v;
        struct testdev **src = v.src, **dst = v.dst;
        struct vfm_mig_config cfg = {.src = v.se, .dst = v.de, .ndev = N, .timeout_ms = 5000};
        struct commit_relays c = {.lose = lose};
        struct side rx;
        struct vfm_mig_report rep;
        int ret, src_run = 0, dst_run = 0;

        vmpair_up(&v, 40);
        ret = run_commit_relayed(&cfg, &rep, &rx, &c);

        for (int i = 0; i < N; i++) {
            src_run += vfm_device_get_state(src[i]->dev) == VFM_STATE_RUNNING;
            dst_run += vfm_device_get_state(dst[i]->dev) == VFM_STATE_RUNNING;
        }
        print_message("# lose %d: sender %s%s, receiver %s%s; running: %d sources, %d "
                      "destinations\n",
                      (int)lose, ret ? vfm_err_name(ret) : "ok",
                      rep.outcome_unknown ? " (outcome unknown)" : "",
                      rx.ret ? vfm_err_name(rx.ret) : "ok",
                      rx.rep.outcome_unknown ? " (outcome unknown)" : "", src_run, dst_run);
        /* never both */
        assert_false(src_run && dst_run);
        switch (lose) {
        case LOSE_NOTHING:
            assert_int_equal(ret, 0);
            assert_int_equal(rx.ret, 0);
            assert_true(rep.committed && rx.rep.committed);
            assert_int_equal(dst_run, N);
            break;
        case LOSE_LOADED: /* no commit sent: the sources come back */
            assert_true(ret < 0 && !rep.outcome_unknown && !rep.committed);
            assert_true(rep.rolled_back);
            assert_int_equal(src_run, N);
            assert_true(rx.ret < 0 && rx.rep.outcome_unknown && !rx.rep.committed);
            break;
        case LOSE_COMMIT: /* neither runs, and both say they cannot know */
            assert_true(ret < 0 && rep.outcome_unknown && rep.committed && !rep.rolled_back);
            assert_true(rx.ret < 0 && rx.rep.outcome_unknown && !rx.rep.committed);
            assert_int_equal(src_run + dst_run, 0);
            assert_non_null(strstr(rep.message, "outcome unknown"));
            assert_non_null(strstr(rx.rep.message, "outcome unknown"));
            break;
        case LOSE_RUNNING: /* the destinations run; the sender cannot know */
            assert_true(ret < 0 && rep.outcome_unknown && !rep.rolled_back);
            assert_int_equal(rx.ret, 0);
            assert_int_equal(dst_run, N);
            break;
        case LOSE_SILENT: /* not a case of this test (test_max_downtime_silent) */
            break;
        }
        /* a side left stopped keeps its state: the sources' saves are whole */
        for (int i = 0; i < N; i++) {
            if (lose == LOSE_COMMIT || lose == LOSE_RUNNING)
                assert_int_equal(vfm_device_get_state(src[i]->dev), VFM_STATE_STOP);
            if (lose != LOSE_LOADED)
                assert_memory_equal(src[i]->content, dst[i]->content, TESTDEV_CONTENT);
        }
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
}

/* --max-downtime: the destinations load slowly, the bound passes before
 * they all have, and the sender aborts instead of committing: its sources
 * resume, the receiver resets its destinations and starts none. */
static void test_max_downtime(void **state)
{
    struct vmpair v;
    struct vfm_mig_config cfg = {.src = v.se, .dst = v.de, .ndev = N, .max_downtime_ms = 20};
    struct relay fwd, back;
    struct side rx;
    struct vfm_mig_report rep;
    int a[2], b[2], ret;

    (void)state;
    vmpair_up(&v, 70);
    /* the destinations load slowly: the bound passes before they all have */
    for (int i = 0; i < N; i++)
        v.dst[i]->slow_us = 40000;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    fwd = (struct relay){a[1], b[0], NONE, 0};
    back = (struct relay){b[0], a[1], NONE, 0};
    ret = run_relayed(&cfg, &rep, &rx, relay_main, &fwd, relay_main, &back, a, b);
    assert_int_equal(ret, -ETIME);
    assert_true(rep.rolled_back && !rep.committed && !rep.outcome_unknown);
    assert_non_null(strstr(rep.message, "--max-downtime"));
    assert_int_equal(rx.ret, -ECANCELED);
    assert_false(rx.rep.committed);
    for (int i = 0; i < N; i++) {
        /* the sources resume; every destination was reset, none started
         * with the state */
        assert_int_equal(vfm_device_get_state(v.src[i]->dev), VFM_STATE_RUNNING);
        assert_int_equal(v.dst[i]->calls[TCB_RESET], 1);
        assert_int_equal(v.dst[i]->calls[TCB_STOP_P2P], 0); /* never started */
        assert_int_equal(v.dst[i]->calls[TCB_P2P_RUN], 0);
    }
    vfm_mig_report_free(&rep);
    vfm_mig_report_free(&rx.rep);
    vmpair_down(&v);
}

/* A receiver whose LOADED never comes: the sender waits no longer than the
 * downtime bound (not the stream's 10 s timeout), aborts and resumes. */
static void test_max_downtime_silent(void **state)
{
    struct vmpair v;
    struct vfm_mig_config cfg = {
        .src = v.se, .dst = v.de, .ndev = N, .max_downtime_ms = 100, .timeout_ms = 10000};
    struct commit_relays c = {.lose = LOSE_SILENT};
    struct side rx;
    struct vfm_mig_report rep;
    struct timespec t0, t1;
    int ret;

    (void)state;
    vmpair_up(&v, 80);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ret = run_commit_relayed(&cfg, &rep, &rx, &c);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(ret, -ETIME);
    assert_true(rep.rolled_back && !rep.committed);
    assert_true(t1.tv_sec - t0.tv_sec < 5); /* the bound, not the 10 s timeout */
    assert_int_equal(rx.ret, -ECANCELED);   /* the ABORT reached it */
    for (int i = 0; i < N; i++) {
        assert_int_equal(vfm_device_get_state(v.src[i]->dev), VFM_STATE_RUNNING);
        assert_int_equal(v.dst[i]->calls[TCB_STOP_P2P], 0);
    }
    vfm_mig_report_free(&rep);
    vfm_mig_report_free(&rx.rep);
    vmpair_down(&v);
}

/* ---- many streams ---- */

#define NS 3 /* streams: devices 0, 1, 2 each on their own */

/* A migration over NS streams through relays, the sender here and the
 * receiver on a thread: stream k goes a[k][0] -> relay -> b[k][1]; the
 * main stream's answers come back by another relay. The receiver takes the
 * other streams in the order @give lists (stream indexes; -1 ends it: the
 * next ask times out), or a forged connection (FORGED: the test writes it). */
#define FORGED 100
struct lanes_run {
    int a[NS][2], b[NS][2], forged[2];
    struct relay fwd[NS], back;
    int give[NS + 2];
    unsigned next;
    /* what the forged connection carries: these bytes, or (copy_of > 0)
     * the header stream copy_of passed on */
    uint8_t forged_bytes[VFM_MS_HDR_LANE_SIZE];
    unsigned copy_of;
    /* the stream the receiver is given first (a listener takes them in any
     * order): 0, the main one, unless set */
    unsigned first;
    /* the sender connects the others as the engine asks (connect_stream),
     * and stream fail_connect (0: none) cannot be connected */
    bool by_connect;
    unsigned fail_connect, connected;
};
static int lanes_connect_cb(void *ctx, unsigned k, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct lanes_run *lr = ctx;

    (void)timeout_ms;
    assert_int_equal(k, lr->connected + 1); /* in order, once each */
    lr->connected = k;
    if (k == lr->fail_connect)
        return -ECONNREFUSED;
    out->fd = lr->a[k][0];
    out->transport = NULL;
    return 0;
}
static int lanes_accept(void *ctx, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct lanes_run *lr = ctx;
    int k = lr->give[lr->next];

    (void)timeout_ms;
    if (k < 0)
        return -ETIMEDOUT;
    lr->next++;
    if (k == FORGED) {
        /* the receiver read the copied stream's header before it asked */
        const uint8_t *h = lr->copy_of ? lr->fwd[lr->copy_of].head : lr->forged_bytes;
        assert_int_equal(write(lr->forged[0], h, VFM_MS_HDR_LANE_SIZE), VFM_MS_HDR_LANE_SIZE);
        shutdown(lr->forged[0], SHUT_WR);
    }
    out->fd = k == FORGED ? lr->forged[1] : lr->b[k][1];
    out->transport = NULL;
    return 0;
}
static void *lane_receiver(void *arg)
{
    struct side *s = arg;
    s->ret = vfm_migrate_receive(s->cfg, s->fd, &s->rep);
    return NULL;
}
/* Runs it: @fault on stream @at_lane at byte @at. Return: the sender's
 * result; @rx the receiver's. */
static int run_lanes(struct vmpair *v, struct lanes_run *lr, unsigned at_lane, enum fault fault,
                     size_t at, bool rx_takes_many, struct vfm_mig_report *rep, struct side *rx)
{
    struct vfm_mig_stream st[NS - 1];
    struct vfm_mig_config cfg = {.version = VFM_MIG_CONFIG_VERSION,
                                 .src = v->se,
                                 .dst = v->de,
                                 .ndev = N,
                                 .timeout_ms = 2000,
                                 .nstreams = NS,
                                 .streams = st},
                          rcfg = cfg;
    pthread_t tf[NS], tb, tr;
    int ret;

    for (unsigned k = 0; k < NS; k++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, lr->a[k]), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, lr->b[k]), 0);
        lr->fwd[k] = (struct relay){lr->a[k][1], lr->b[k][0], k == at_lane ? fault : NONE, at};
        if (k)
            st[k - 1] = (struct vfm_mig_stream){.fd = lr->a[k][0]};
        pthread_create(&tf[k], NULL, relay_main, &lr->fwd[k]);
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, lr->forged), 0);
    lr->back = (struct relay){lr->b[0][0], lr->a[0][1], NONE, 0};
    pthread_create(&tb, NULL, relay_main, &lr->back);
    if (lr->by_connect) {
        cfg.streams = NULL;
        cfg.connect_stream = lanes_connect_cb;
        cfg.connect_ctx = lr;
    }
    if (rx_takes_many) {
        rcfg.accept_stream = lanes_accept;
        rcfg.accept_ctx = lr;
    } else {
        rcfg.version = 3; /* a receiver that knows one stream */
    }
    rx->cfg = &rcfg;
    rx->fd = lr->b[lr->first][1];
    pthread_create(&tr, NULL, lane_receiver, rx);
    ret = vfm_migrate_send(&cfg, lr->a[0][0], rep);
    for (unsigned k = 0; k < NS; k++)
        shutdown(lr->a[k][0], SHUT_RDWR);
    pthread_join(tr, NULL);
    for (unsigned k = 0; k < NS; k++) {
        shutdown(lr->b[k][1], SHUT_RDWR);
        pthread_join(tf[k], NULL);
    }
    shutdown(lr->b[0][1], SHUT_RDWR);
    pthread_join(tb, NULL);
    for (unsigned k = 0; k < NS; k++)
        for (int j = 0; j < 2; j++) {
            close(lr->a[k][j]);
            close(lr->b[k][j]);
        }
    close(lr->forged[0]);
    close(lr->forged[1]);
    return ret;
}
/* The migration failed whole: every source back in RUNNING, no destination
 * ran, nothing was committed. */
static void expect_failed_whole(struct vmpair *v, int ret, const struct vfm_mig_report *rep,
                                const struct side *rx, const char *why)
{
    assert_true(ret < 0);
    assert_true(rx->ret < 0);
    assert_false(rep->committed);
    assert_false(rx->rep.committed);
    for (int i = 0; i < N; i++) {
        assert_int_equal(vfm_device_get_state(v->src[i]->dev), VFM_STATE_RUNNING);
        assert_int_not_equal(vfm_device_get_state(v->dst[i]->dev), VFM_STATE_RUNNING);
        assert_int_equal(v->dst[i]->calls[TCB_STOP_P2P], 0);
    }
    if (why && !strstr(rx->rep.message, why))
        fail_msg("the receiver said \"%s\", expected \"%s\"", rx->rep.message, why);
}

/* Clean over NS streams through the relays, and through vfm_migrate_local
 * with 1, 2, 3 and 8 streams (more streams than devices: the extra ones
 * carry a header and their end). */
static void test_streams_clean(void **state)
{
    static const unsigned counts[] = {1, 2, 3, 8};
    struct vmpair v;
    struct lanes_run lr = {.give = {2, 1, -1}};
    struct vfm_mig_report rep;
    struct side rx;
    uint64_t sum = 0;
    (void)state;

    vmpair_up(&v, 90);
    assert_int_equal(run_lanes(&v, &lr, 0, NONE, 0, true, &rep, &rx), 0);
    assert_int_equal(rx.ret, 0);
    assert_int_equal(rep.nstreams, NS);
    assert_int_equal(rx.rep.nstreams, NS);
    for (unsigned k = 0; k < NS; k++) {
        assert_true(rep.stream_bytes_by[k] == rx.rep.stream_bytes_by[k]);
        sum += rep.stream_bytes_by[k];
    }
    assert_true(sum == rep.stream_bytes);
    /* the others: a header, device k's records, their end */
    assert_true(rep.stream_bytes_by[1] > TESTDEV_CONTENT + VFM_MS_HDR_LANE_SIZE);
    for (int i = 0; i < N; i++) {
        assert_int_equal(vfm_device_get_state(v.dst[i]->dev), VFM_STATE_RUNNING);
        assert_memory_equal(v.src[i]->content, v.dst[i]->content, TESTDEV_CONTENT);
    }
    vfm_mig_report_free(&rep);
    vfm_mig_report_free(&rx.rep);
    vmpair_down(&v);

    /* the sender connecting the others as the engine asks (after the
     * device list): the same */
    {
        struct lanes_run lc = {.give = {1, 2, -1}, .by_connect = true};
        vmpair_up(&v, 93);
        assert_int_equal(run_lanes(&v, &lc, 0, NONE, 0, true, &rep, &rx), 0);
        assert_int_equal(lc.connected, NS - 1);
        for (int i = 0; i < N; i++)
            assert_memory_equal(v.src[i]->content, v.dst[i]->content, TESTDEV_CONTENT);
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }

    /* the connections in another order: another stream first, the main
     * one after it, or last */
    for (unsigned f = 1; f < NS; f++) {
        struct lanes_run lo = {.first = f, .give = {f == 1 ? 2 : 0, f == 1 ? 0 : 1, -1}};
        vmpair_up(&v, 95 + f);
        assert_int_equal(run_lanes(&v, &lo, 0, NONE, 0, true, &rep, &rx), 0);
        assert_int_equal(rx.ret, 0);
        for (unsigned k = 0; k < NS; k++)
            assert_true(rep.stream_bytes_by[k] == rx.rep.stream_bytes_by[k]);
        for (int i = 0; i < N; i++)
            assert_memory_equal(v.src[i]->content, v.dst[i]->content, TESTDEV_CONTENT);
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }

    for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
        struct vfm_mig_config cfg = {
            .version = VFM_MIG_CONFIG_VERSION, .ndev = N, .nstreams = counts[c]};
        vmpair_up(&v, 100 + (uint32_t)c);
        cfg.src = v.se;
        cfg.dst = v.de;
        assert_int_equal(vfm_migrate_local(&cfg, &rep), 0);
        assert_int_equal(rep.nstreams, counts[c]);
        for (int i = 0; i < N; i++)
            assert_memory_equal(v.src[i]->content, v.dst[i]->content, TESTDEV_CONTENT);
        if (counts[c] == 8)
            assert_int_equal(rep.stream_bytes_by[7], VFM_MS_HDR_LANE_SIZE + VFM_MS_REC_SIZE);
        vfm_mig_report_free(&rep);
        vmpair_down(&v);
    }
}

/* Any one stream truncated, corrupted or reordered fails the whole
 * migration: the sources run on, no destination runs. */
static void test_streams_damaged(void **state)
{
    /* on stream 1: inside its header, its first record's header and
     * payload, its end */
    static const struct {
        unsigned lane;
        enum fault fault;
        size_t at;
    } c[] = {
        {1, TRUNCATE, 0},
        {1, TRUNCATE, 50},
        {1, TRUNCATE, VFM_MS_HDR_LANE_SIZE + 10},
        {1, TRUNCATE, VFM_MS_HDR_LANE_SIZE + VFM_MS_REC_SIZE + 100},
        {2, TRUNCATE, VFM_MS_HDR_LANE_SIZE + VFM_MS_REC_SIZE + TESTDEV_CONTENT},
        {1, FLIP, 20},
        {1, FLIP, 85},
        {2, FLIP, VFM_MS_HDR_LANE_SIZE + 12},
        {2, FLIP, VFM_MS_HDR_LANE_SIZE + VFM_MS_REC_SIZE + 7},
        {1, REORDER, VFM_MS_HDR_LANE_SIZE},
        {0, TRUNCATE, VFM_MS_HDR_LANE_SIZE + 20},
        {0, FLIP, VFM_MS_HDR_LANE_SIZE + VFM_MS_REC_SIZE + 4 * N + 3},
        /* stream 2 goes silent inside its data, open (the receiver's 2 s
         * timeout) */
        {2, STALL, VFM_MS_HDR_LANE_SIZE + VFM_MS_REC_SIZE + 100},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        struct vmpair v;
        struct lanes_run lr = {.give = {1, 2, -1}};
        struct vfm_mig_report rep;
        struct side rx;
        int ret;

        vmpair_up(&v, 110 + (uint32_t)i);
        ret = run_lanes(&v, &lr, c[i].lane, c[i].fault, c[i].at, true, &rep, &rx);
        expect_failed_whole(&v, ret, &rep, &rx, NULL);
        print_message("# case %zu: %s / %s\n", i, rx.rep.message, rep.message);
        if (c[i].fault == STALL && !strstr(rx.rep.message, "stalled inside record 0 (device 2)"))
            fail_msg("case %zu: %s", i, rx.rep.message);
        if (c[i].lane && !strstr(rx.rep.message, "stream") &&
            !strstr(rx.rep.message, "writing its state in RESUMING failed"))
            fail_msg("case %zu: the receiver did not name the stream: %s", i, rx.rep.message);
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
}

/* A stream that never connects; one connected twice (after the main one,
 * and before it); one of another migration; a receiver that takes one
 * stream only. */
static void test_streams_refused(void **state)
{
    struct vmpair v;
    struct vfm_mig_report rep;
    struct side rx;
    int ret;
    (void)state;

    {
        struct lanes_run lr = {.give = {2, -1}};
        vmpair_up(&v, 130);
        ret = run_lanes(&v, &lr, 0, NONE, 0, true, &rep, &rx);
        expect_failed_whole(&v, ret, &rep, &rx, "the sender uses 3 streams; only 2 connected");
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
    {
        /* stream 2 cannot be connected: the sender fails before any
         * request; the receiver, given stream 1 only, never loads */
        struct lanes_run lr = {.give = {1, -1}, .by_connect = true, .fail_connect = 2};
        vmpair_up(&v, 135);
        ret = run_lanes(&v, &lr, 0, NONE, 0, true, &rep, &rx);
        expect_failed_whole(&v, ret, &rep, &rx, NULL);
        if (!strstr(rep.message, "stream 2 of 3 could not be connected"))
            fail_msg("%s", rep.message);
        /* before any request: no source was moved, none needed bringing back */
        assert_false(rep.rolled_back);
        for (int i = 0; i < N; i++)
            assert_int_equal(v.src[i]->calls[TCB_RUN_P2P] + v.src[i]->calls[TCB_RUN_STOP], 0);
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
    {
        /* stream 1 twice: the second connection a copy of its header */
        struct lanes_run lr = {.give = {1, FORGED, 2, -1}, .copy_of = 1};
        vmpair_up(&v, 140);
        ret = run_lanes(&v, &lr, 0, NONE, 0, true, &rep, &rx);
        expect_failed_whole(&v, ret, &rep, &rx, "stream 1 of 3 connected twice");
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
    {
        /* the same before the main one: stream 1, a copy of it, then the
         * main one (both kept as early streams until the main header) */
        struct lanes_run lr = {.first = 1, .give = {FORGED, 0, 2, -1}, .copy_of = 1};
        vmpair_up(&v, 145);
        ret = run_lanes(&v, &lr, 0, NONE, 0, true, &rep, &rx);
        expect_failed_whole(&v, ret, &rep, &rx, "stream 1 of 3 connected twice");
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
    {
        /* a stream of another migration: a valid header, another token */
        struct lanes_run lr = {.give = {1, FORGED, -1}};
        vmpair_up(&v, 150);
        vfm_ms_put_lane_header(lr.forged_bytes, N, NULL, 2, NS, 42);
        ret = run_lanes(&v, &lr, 0, NONE, 0, true, &rep, &rx);
        expect_failed_whole(&v, ret, &rep, &rx, "of another migration (its token differs)");
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
    {
        struct lanes_run lr = {.give = {1, 2, -1}};
        vmpair_up(&v, 160);
        ret = run_lanes(&v, &lr, 0, NONE, 0, false, &rep, &rx);
        expect_failed_whole(&v, ret, &rep, &rx, "the sender uses 3 streams; this side takes one");
        assert_int_equal(rx.ret, -EPROTO);
        for (int i = 0; i < N; i++) /* refused before any destination was touched */
            assert_int_equal(v.dst[i]->calls[TCB_STOP_RES], 0);
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rx.rep);
        vmpair_down(&v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupted),
        cmocka_unit_test(test_reordered),
        cmocka_unit_test(test_p2p_ordering),
        cmocka_unit_test(test_start_states),
        cmocka_unit_test(test_commit_lost),
        cmocka_unit_test(test_max_downtime),
        cmocka_unit_test(test_max_downtime_silent),
        cmocka_unit_test(test_streams_clean),
        cmocka_unit_test(test_streams_damaged),
        cmocka_unit_test(test_streams_refused),
        cmocka_unit_test(test_self_checked_needs_a_checking_destination),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
