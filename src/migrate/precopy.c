/* SPDX-License-Identifier: MIT */
/* Pre-copy (mig.h): rounds while the VM runs, and the downtime they
 * promise. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/fsm.h>

#include "../common/hash.h"
#include "mig.h"

/* What device @i will still have to move at switchover, as it says: its
 * MIG_DATA_SIZE (the stop-copy length), else, in pre-copy, its precopy info.
 * Return: the estimate used (VFM_MIG_EST_NONE: the device says neither). */
static enum vfm_mig_estimate pending_bytes(struct mig *m, unsigned i, uint64_t *bytes)
{
    uint64_t initial, dirty;

    if (vfm_ep_data_size(m->cfg->src[i], bytes) == 0)
        return VFM_MIG_EST_DATA_SIZE;
    if (m->pc[i] && vfm_ep_precopy_info(m->cfg->src[i], &initial, &dirty) == 0) {
        *bytes = initial + dirty;
        return VFM_MIG_EST_PRECOPY_INFO;
    }
    return VFM_MIG_EST_NONE;
}
const char *vfm_mig_estimate_name(enum vfm_mig_estimate e)
{
    switch (e) {
    case VFM_MIG_EST_DATA_SIZE:
        return "MIG_DATA_SIZE";
    case VFM_MIG_EST_PRECOPY_INFO:
        return "precopy info";
    default:
        return "none";
    }
}
/* A REINIT in @flags from source @i: say so. */
static void reinit_seen(struct mig *m, unsigned i, uint32_t flags, uint64_t initial)
{
    if (!(flags & VFM_PRECOPY_INFO_REINIT) || !m->v2[i])
        return;
    pthread_mutex_lock(m->lock);
    m->rep->precopy_reinits++;
    pthread_mutex_unlock(m->lock);
    m->epoch[i]++; /* its initial data must be acknowledged again */
    vfm_log(LOG_INFO, "source %s announced new initial data (REINIT): %llu bytes",
            vfm_ep_name(m->cfg->src[i]), (unsigned long long)initial);
    mig_note(m,
             "source %s announced new initial data in pre-copy round %u (%llu bytes): the "
             "switchover waited until it was across",
             vfm_ep_name(m->cfg->src[i]), m->rep->precopy_rounds + 1, (unsigned long long)initial);
}
static int src_precopy_start(struct mig *m, unsigned i)
{
    if (!m->pc[i])
        return 0;
    /* the v2 opt-in first: REINIT is reported only to a client that asked
     * (not offered: v1, whose flags carry nothing) */
    m->v2[i] = vfm_ep_precopy_v2(m->cfg->src[i]) == 0;
    return mig_set_state(m, 0, i, VFM_STATE_PRE_COPY);
}
/* One round of one device: to its temporary end, or what its precopy info
 * said was pending when the round began. */
static int src_precopy_round(struct mig *m, unsigned i)
{
    uint64_t initial, dirty, budget = 0;
    uint32_t flags;
    uint8_t *buf;
    int ret;

    m->drained[i] = true;
    if (!m->pc[i])
        return 0;
    if (vfm_ep_precopy_info_flags(m->cfg->src[i], &initial, &dirty, &flags) == 0) {
        reinit_seen(m, i, flags, initial);
        budget = initial + dirty;
        if (budget == 0)
            return 0; /* nothing pending: drained, as the device says */
    }
    buf = malloc(CHUNK);
    if (!buf)
        return -ENOMEM;
    ret = mig_send_state(m, i, buf, budget, true);
    free(buf);
    m->drained[i] = ret == SENT_TEMP_END;
    return ret < 0 ? ret : 0;
}
/* ---- switchover-ack ---- */

/* Device @i's initial data is all sent (initial_bytes 0) for the first
 * time in its epoch: say so in the stream. Return: 0 or -errno (reported). */
static int initial_end(struct mig *m, unsigned i)
{
    int ret;

    if (m->sent_epoch[i] == m->epoch[i])
        return 0;
    ret = mig_put_record(m, VFM_MS_INITIAL_END, i, NULL, 0);
    if (ret) {
        mig_fail(m, ret, "the migration stream failed: %s", vfm_strerror(ret));
        return ret;
    }
    m->sent_epoch[i] = m->epoch[i];
    m->ends_sent[i]++;
    return 0;
}

/* Takes the receiver's answers that have come, waiting at most @wait_ms
 * for the first. Return: 0, or -errno (reported: the receiver failed, or
 * sent what it should not). */
static int take_acks(struct mig *m, int wait_ms)
{
    for (;;) {
        struct pollfd p = {.fd = m->fd, .events = POLLIN};
        bool held = m->tp && m->tp->pending && m->tp->pending(m->tp->ctx);
        ssize_t r;
        uint32_t dev;
        int32_t status;
        int n = held ? 1 : poll(&p, 1, wait_ms);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0; /* nothing (more) now */
        wait_ms = 0;
        pthread_mutex_lock(&m->wlock); /* the transport: one call at a time */
        r = mig_read_some(m, m->abuf + m->ahave, sizeof(m->abuf) - m->ahave);
        pthread_mutex_unlock(&m->wlock);
        if (r == -EAGAIN)
            continue;
        if (r <= 0) {
            int err = r ? (int)r : -EPIPE;
            mig_fail(m, err, "the receiving side went away during pre-copy: %s", vfm_strerror(err));
            m->rep->remote_failure = true;
            return err;
        }
        m->ahave += (size_t)r;
        if (m->ahave < sizeof(m->abuf))
            continue;
        m->ahave = 0;
        if (vfm_ms_get_initial_loaded(m->abuf, m->cfg->ndev, &dev) == 0 &&
            m->acks[dev] < m->ends_sent[dev]) {
            m->acks[dev]++;
            pthread_mutex_lock(m->lock);
            m->rep->switchover_acks++;
            pthread_mutex_unlock(m->lock);
            continue;
        }
        if (vfm_ms_get_ack(m->abuf, VFM_MS_ANS_LOADED, &status) == 0 && status) {
            /* the receiver failed and says so early: its final answer */
            m->early_loaded = true;
            m->early_status = status;
            mig_fail(m, status, "the receiving side failed: %s (%s)", vfm_strerror(status),
                     vfm_err_name(status));
            m->rep->remote_failure = true;
            return status;
        }
        mig_fail(m, -EPROTO,
                 "the receiving side sent something other than a switchover acknowledgement "
                 "during pre-copy");
        return -EPROTO;
    }
}

/* Asks every pre-copy device its initial bytes (m->initial; 0 for one
 * that cannot say: it is not waited for), noting REINITs.
 * Return: how many still have initial data. */
static unsigned ask_initial(struct mig *m)
{
    unsigned left = 0;

    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        uint64_t in, di;
        uint32_t fl;
        if (!m->pc[i])
            continue;
        if (vfm_ep_precopy_info_flags(m->cfg->src[i], &in, &di, &fl)) {
            m->initial[i] = 0;
            continue;
        }
        reinit_seen(m, i, fl, in);
        m->initial[i] = in;
        left += in > 0;
    }
    return left;
}

/* The first pre-copy device whose current initial data is not
 * acknowledged yet, or -1. */
static int unacked(const struct mig *m)
{
    for (unsigned i = 0; i < m->cfg->ndev; i++)
        if (m->pc[i] && (m->sent_epoch[i] != m->epoch[i] || m->acks[i] != m->ends_sent[i]))
            return (int)i;
    return -1;
}

/* Asked just before the switchover: a REINIT since the round's own
 * question (a new epoch to acknowledge), or initial bytes left, means
 * pre-copy goes on. */
static bool initial_left(struct mig *m)
{
    return ask_initial(m) > 0 || (m->ack_on && unacked(m) >= 0);
}

/*
 * Pre-copy rounds until the estimated downtime fits the limit, or the round
 * limit is reached, or — with no estimate to go by — every device has
 * reached its temporary end (migrate.h says why).
 * Return: 0 or the first failure's errno.
 */
int mig_precopy(struct mig *m)
{
    const struct vfm_mig_config *c = m->cfg;
    struct vfm_mig_report *r = m->rep;
    uint64_t limit_ns =
        (uint64_t)(c->downtime_limit_ms ? c->downtime_limit_ms : VFM_MIG_DEFAULT_DOWNTIME_MS) *
        1000000u;
    unsigned max_rounds = c->max_rounds ? c->max_rounds : VFM_MIG_DEFAULT_MAX_ROUNDS;
    uint64_t all_bytes = 0;
    int64_t all_ns = 0;
    int ret;

    int64_t ack_wait = 0; /* when the switchover first waited for an answer */

    m->phase = VFM_PHASE_PRECOPY;
    m->ack_on = c->version >= 3 && c->switchover_ack && !c->one_way;
    for (unsigned i = 0; i < c->ndev; i++)
        m->epoch[i] = 1;
    ret = mig_parallel(m, src_precopy_start);
    while (!ret) {
        int64_t t0 = mig_now_ns(), dt;
        enum vfm_mig_estimate kind = VFM_MIG_EST_DATA_SIZE;
        uint64_t remaining = 0, est;
        bool drained = true;

        uint64_t ram_est = 0;
        bool ram_more = false;

        m->round_bytes = m->round_ram_bytes = 0;
        ret = mig_parallel(m, src_precopy_round);
        /* the guest RAM's pass: every page the first time, then what the
         * devices wrote since */
        if (!ret && m->ram)
            ret = mig_ram_round(m, &ram_est, &ram_more);
        if (ret)
            break;
        dt = mig_now_ns() - t0;
        r->precopy_rounds++;
        r->precopy_bytes += m->round_bytes;
        /* the throughput over every round so far: a round that moved a few
         * bytes still measures what a round costs (mtty's 24 bytes) */
        all_bytes += m->round_bytes + m->round_ram_bytes;
        all_ns += dt;
        for (unsigned i = 0; i < c->ndev; i++) {
            enum vfm_mig_estimate k = pending_bytes(m, i, &est);
            if (k < kind)
                kind = k;
            if (k != VFM_MIG_EST_NONE)
                remaining += est;
            if (m->pc[i] && !m->drained[i])
                drained = false;
        }
        remaining += ram_est;
        if (ram_more)
            drained = false;
        /* initial data left (a device that re-initialised during the
         * round, or one whose first pass is not over): no switchover yet,
         * whatever the estimate (the uAPI's advice) */
        unsigned waiting = ask_initial(m);
        /* switchover-ack: each device whose initial data is all out says so,
         * and the answers that came are taken */
        for (unsigned i = 0; i < c->ndev && m->ack_on && !ret; i++)
            if (m->pc[i] && m->initial[i] == 0)
                ret = initial_end(m, i);
        if (!ret && m->ack_on)
            ret = take_acks(m, 0);
        if (ret)
            break;
        if (kind == VFM_MIG_EST_NONE)
            r->expected_downtime_ns = -1; /* a device says nothing of what is left */
        else if (remaining == 0)
            r->expected_downtime_ns = 0;
        else if (all_bytes && all_ns > 0)
            r->expected_downtime_ns =
                (int64_t)((double)remaining * (double)all_ns / (double)all_bytes);
        else
            r->expected_downtime_ns = -1; /* nothing moved yet: no throughput to go by */
        r->precopy_estimate = kind;
        r->precopy_drained = drained;
        if (r->expected_downtime_ns >= 0)
            vfm_log(
                LOG_INFO,
                "pre-copy round %u: %llu bytes in %.1f ms; %llu left (%s), ~%.1f ms of downtime",
                r->precopy_rounds, (unsigned long long)(m->round_bytes + m->round_ram_bytes),
                dt / 1e6, (unsigned long long)remaining, vfm_mig_estimate_name(kind),
                r->expected_downtime_ns / 1e6);
        else
            vfm_log(LOG_INFO, "pre-copy round %u: %llu bytes in %.1f ms; no downtime estimate (%s)",
                    r->precopy_rounds, (unsigned long long)(m->round_bytes + m->round_ram_bytes),
                    dt / 1e6,
                    kind == VFM_MIG_EST_NONE ? "a device gives none" : "no throughput yet");
        if (waiting) {
            if (r->precopy_rounds >= max_rounds + VFM_MIG_INITIAL_EXTRA_ROUNDS) {
                ret = -ETIME;
                mig_fail(m, ret,
                         "%u source device%s still had initial pre-copy data after %u rounds "
                         "(new initial data announced again and again): not switched over",
                         waiting, waiting == 1 ? "" : "s", r->precopy_rounds);
                break;
            }
            continue;
        }
        bool go = false;
        if (r->expected_downtime_ns >= 0 && (uint64_t)r->expected_downtime_ns <= limit_ns) {
            r->precopy_converged = true;
            go = true;
        } else if (r->expected_downtime_ns < 0 && drained) {
            go = true; /* nothing to judge by, and pre-copy caught up once */
        } else if (!r->precopy_devices &&
                   (!ram_more ||
                    (all_bytes && all_ns > 0 &&
                     (double)ram_est * (double)all_ns / (double)all_bytes <= (double)limit_ns))) {
            go = true; /* only RAM moves before the switchover, and what is left of it fits
                        * (or another pass cannot lower it): the devices' state is for the
                        * downtime */
        } else if (r->precopy_rounds >= max_rounds) {
            go = true;
        }
        if (!go)
            continue;
        int late = m->ack_on ? unacked(m) : -1;
        if (late < 0) {
            if (initial_left(m))
                continue; /* new initial data since the round asked */
            break;
        }
        /* ready, but the receiver has not acknowledged every device's
         * initial data: wait for it (another round meanwhile keeps the
         * dirty data small), at most timeout_ms in all */
        int64_t now = mig_now_ns();
        if (!ack_wait)
            ack_wait = now;
        if (now - ack_wait > (int64_t)m->timeout_ms * 1000000) {
            ret = -ETIMEDOUT;
            mig_fail(m, ret,
                     "no switchover acknowledgement from the receiving side for source %s's "
                     "initial data within %u ms: not switched over",
                     vfm_ep_name(c->src[late]), m->timeout_ms);
            m->rep->remote_failure = true;
            break;
        }
        ret = take_acks(m, 20);
        if (!ret && unacked(m) < 0 && !initial_left(m))
            break;
    }
    if (ack_wait)
        r->switchover_ack_wait_ns = mig_now_ns() - ack_wait;
    m->phase = VFM_PHASE_SAVE;
    return ret;
}
