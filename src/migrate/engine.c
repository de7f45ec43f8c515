/* SPDX-License-Identifier: MIT */
/*
 * The migration engine (include/vfiomig/migrate.h): P2P-safe ordering, the
 * framed stream, rollback, timing.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/fsm.h>
#include <vfiomig/migrate.h>

#include "../common/hash.h"
#include "../common/internal.h"
#include "mstream.h"
#include "pool.h"

/* State moves in records of at most this much (the codec's limit). */
#define CHUNK VFM_MS_MAX_PAYLOAD

const char *vfm_mig_phase_name(enum vfm_mig_phase p)
{
    static const char *const n[VFM_PHASE_COUNT] = {"quiesce (sources -> RUNNING_P2P)",
                                                   "save (sources -> STOP_COPY, state sent)",
                                                   "load (destinations RESUMING -> STOP)",
                                                   "start P2P (destinations -> RUNNING_P2P)",
                                                   "start (destinations -> RUNNING)",
                                                   "rollback",
                                                   "pre-copy (VM running)"};
    return (unsigned)p < VFM_PHASE_COUNT ? n[p] : "?";
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------ */

/* What the threads of one side (or of both, in vfm_migrate_local) share. */
struct mig_shared {
    pthread_mutex_t lock;
    unsigned span_cap;
};

struct mig {
    const struct vfm_mig_config *cfg;
    struct vfm_mig_report *rep;
    pthread_mutex_t *lock; /* shared by both sides: report, spans (never held over I/O) */
    pthread_mutex_t wlock; /* this side's stream writes and sequence numbers */
    int fd;                /* this side's end of the stream */
    unsigned timeout_ms;   /* the longest wait on the other end */
    uint32_t seq;
    uint64_t total_est;
    uint64_t sent;
    uint32_t flags[VFM_MIG_MAX_DEVICES];
    unsigned *span_cap;           /* shared: the spans array belongs to the report */
    enum vfm_mig_phase phase;     /* for progress */
    bool pc[VFM_MIG_MAX_DEVICES]; /* migrated with pre-copy */
    bool in_stop_copy[VFM_MIG_MAX_DEVICES];
    uint64_t dev_sent[VFM_MIG_MAX_DEVICES]; /* state bytes sent, all phases */
    uint64_t round_bytes;                   /* this pre-copy round's */
    /* the state this side's device i is in, as far as the engine knows
     * (VFM_STATE_COUNT: unknown, asked with GET before the next request) */
    uint32_t cur[VFM_MIG_MAX_DEVICES];
    bool touched[VFM_MIG_MAX_DEVICES]; /* a request was sent to it */
    bool stopped[VFM_MIG_MAX_DEVICES]; /* a source migrated stopped */
    bool drained[VFM_MIG_MAX_DEVICES]; /* reached its temporary end this round */
    struct vfm_pool *pool;             /* this side's workers (parallel()) */
};

static void fail(struct mig *m, int err, const char *fmt, ...) VFM_PRINTF(3, 4);

/* Keeps the first failure: it names the device, the state and the cause. */
static void fail(struct mig *m, int err, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(m->lock);
    if (!m->rep->error) {
        m->rep->error = err ? err : -EIO;
        va_start(ap, fmt);
        vsnprintf(m->rep->message, sizeof(m->rep->message), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(m->lock);
}

/* Adds a sentence to the report's notes (what the engine did beyond the
 * plan). */
static void note(struct mig *m, const char *fmt, ...) VFM_PRINTF(2, 3);

static void note(struct mig *m, const char *fmt, ...)
{
    char *n = m->rep->notes;
    size_t used;
    va_list ap;

    pthread_mutex_lock(m->lock);
    used = strlen(n);
    if (used && used + 2 < sizeof(m->rep->notes)) {
        strcpy(n + used, "; ");
        used += 2;
    }
    va_start(ap, fmt);
    vsnprintf(n + used, sizeof(m->rep->notes) - used, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(m->lock);
}

static bool failed(struct mig *m)
{
    bool f;
    pthread_mutex_lock(m->lock);
    f = m->rep->error != 0;
    pthread_mutex_unlock(m->lock);
    return f;
}

static void span(struct mig *m, int side, unsigned dev, uint32_t state)
{
    struct vfm_mig_report *r = m->rep;

    pthread_mutex_lock(m->lock);
    if (r->nspans == *m->span_cap) {
        unsigned cap = *m->span_cap ? *m->span_cap * 2 : 256;
        struct vfm_mig_span *p = realloc(r->spans, cap * sizeof(*p));
        if (p) {
            r->spans = p;
            *m->span_cap = cap;
        }
    }
    if (r->nspans < *m->span_cap)
        r->spans[r->nspans++] =
            (struct vfm_mig_span){(uint16_t)side, (uint16_t)dev, state, now_ns()};
    pthread_mutex_unlock(m->lock);
}

static struct vfm_endpoint *ep(struct mig *m, int side, unsigned i)
{
    return side ? m->cfg->dst[i] : m->cfg->src[i];
}

static const char *side_name(int side)
{
    return side ? "destination" : "source";
}

/*
 * A state change of one device, with fault injection and the timeline. The
 * request is planned from the state the engine knows the device is in (a
 * GET first when it does not know) and is never sent when the planner
 * refuses it: kernels before the 2026 fix loop for ever on STOP_COPY ->
 * PRE_COPY, and no device should see a request the uAPI forbids.
 */
static int set_state(struct mig *m, int side, unsigned i, uint32_t state)
{
    struct vfm_endpoint *e = ep(m, side, i);
    uint32_t now = VFM_STATE_COUNT, next;
    int ret;

    if (m->cur[i] >= VFM_STATE_COUNT) {
        ret = vfm_ep_get_state(e, &now);
        if (ret) {
            fail(m, ret, "%s %s: cannot read its state before moving it to %s: %s (%s)",
                 side_name(side), vfm_ep_name(e), vfm_state_str(state), vfm_strerror(ret),
                 vfm_err_name(ret));
            return ret;
        }
        m->cur[i] = now;
    }
    if (vfm_fsm_next(m->flags[i], m->cur[i], state, &next)) {
        fail(m, -EINVAL, "%s %s: %s -> %s not requested: %s", side_name(side), vfm_ep_name(e),
             vfm_state_str(m->cur[i]), vfm_state_str(state),
             vfm_fsm_refusal(m->flags[i], m->cur[i], state));
        return -EINVAL;
    }
    if (m->cur[i] == state)
        return 0;
    /* no GET before the SET: it would cost a round trip per device and
     * phase inside the downtime; only a failure asks where the device is */
    m->touched[i] = true;
    ret = vfm_ep_set_state(e, state);
    if (ret) {
        m->cur[i] = VFM_STATE_COUNT;
        if (vfm_ep_get_state(e, &now) == 0)
            m->cur[i] = now;
        fail(m, ret, "%s %s: moving to %s failed: %s (%s); %s%s", side_name(side), vfm_ep_name(e),
             vfm_state_str(state), vfm_strerror(ret), vfm_err_name(ret),
             m->cur[i] < VFM_STATE_COUNT ? "it is now " : "it does not say where it is",
             m->cur[i] < VFM_STATE_COUNT ? vfm_state_str(now) : "");
        return ret;
    }
    m->cur[i] = state;
    span(m, side, i, state);
    return 0;
}

/* Runs fn(m, i) for every device i at once, on the side's workers (made
 * at the first phase, one per device with the caller), and waits. */
struct par {
    struct mig *m;
    int (*fn)(struct mig *, unsigned);
};

static int par_call(void *ctx, unsigned i)
{
    struct par *p = ctx;
    return p->fn(p->m, i);
}

static int parallel(struct mig *m, int (*fn)(struct mig *, unsigned))
{
    struct par p = {m, fn};
    int ret;

    if (!m->pool && vfm_pool_new(m->cfg->ndev - 1, m->cfg->ndev, &m->pool))
        m->pool = NULL;
    if (m->pool)
        return vfm_pool_run(m->pool, m->cfg->ndev, par_call, &p);
    /* no memory for the workers: one device after the other, here */
    ret = 0;
    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        int r = fn(m, i);
        ret = ret ? ret : r;
    }
    return ret;
}

/* Waits until @fd is ready for @events, at most the stream's timeout.
 * Return: 0, -ETIMEDOUT, or a poll error. */
static int wait_ready(const struct mig *m, short events)
{
    struct pollfd p = {.fd = m->fd, .events = events};
    int n;

    do
        n = poll(&p, 1, (int)m->timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n ? 0 : -ETIMEDOUT;
}

/* The stream's writes and reads: each wait for the other end is bounded by
 * the stream's timeout (a receiver that stops reading, a sender that stops
 * sending, an answer that never comes). Files are always ready. */
static int write_all(const struct mig *m, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w;
        int ret = wait_ready(m, POLLOUT);
        if (ret)
            return ret;
        w = send(m->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == ENOTSOCK)
            w = write(m->fd, p, len); /* a file or a pipe */
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_all(const struct mig *m, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t r;
        int ret = wait_ready(m, POLLIN);
        if (ret)
            return ret;
        r = read(m->fd, p, len);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EPIPE; /* the stream ended early */
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Writes one record (header + payload) atomically with respect to the
 * other device threads. */
static int put_record(struct mig *m, enum vfm_ms_kind kind, unsigned dev, const void *data,
                      size_t len)
{
    uint8_t r[VFM_MS_REC_SIZE];
    uint64_t psum = vfm_ms_payload_sum(data, len);
    int ret;

    pthread_mutex_lock(&m->wlock);
    vfm_ms_put_record(r, kind, dev, m->seq++, psum, len);
    ret = write_all(m, r, sizeof(r));
    if (!ret && len)
        ret = write_all(m, data, len);
    pthread_mutex_unlock(&m->wlock);
    if (!ret) {
        pthread_mutex_lock(m->lock);
        m->rep->stream_bytes += sizeof(r) + len;
        if (kind == VFM_MS_DATA) {
            m->sent += len;
            if (m->cfg->progress)
                m->cfg->progress(m->cfg->progress_ctx, m->phase, m->sent, m->total_est);
        }
        pthread_mutex_unlock(m->lock);
    }
    return ret;
}

/* ---- the source side ---- */

static int src_quiesce(struct mig *m, unsigned i)
{
    /* P2P devices stop issuing P2P; the others wait for phase 1b */
    if (!(m->flags[i] & VFM_MIGRATION_P2P) || m->stopped[i])
        return 0;
    return set_state(m, 0, i, m->pc[i] ? VFM_STATE_PRE_COPY_P2P : VFM_STATE_RUNNING_P2P);
}

static int src_stop_non_p2p(struct mig *m, unsigned i)
{
    if ((m->flags[i] & VFM_MIGRATION_P2P) || m->stopped[i])
        return 0;
    if (!m->pc[i])
        return set_state(m, 0, i, VFM_STATE_STOP);
    /* PRE_COPY -> STOP would end the session: stop by saving */
    m->in_stop_copy[i] = true;
    return set_state(m, 0, i, VFM_STATE_STOP_COPY);
}

/* How long one pre-copy round may read from one device that keeps giving
 * data (a device that dirties faster than the stream moves, and says
 * nothing of how much it has): the round then ends, not drained. */
#define ROUND_MAX_NS (60ll * 1000000000)

enum { SENT_END = 0, SENT_TEMP_END = 1, SENT_BUDGET = 2 };

/*
 * Sends what @e gives as device @i's records: in STOP_COPY (@precopy false)
 * to the end of its state (a read of 0); in pre-copy to its temporary end
 * (ENOMSG; also a read of 0, which some drivers give there, mtty among
 * them), or until @budget bytes (0: no budget) or ROUND_MAX_NS.
 * Return: SENT_END, SENT_TEMP_END, SENT_BUDGET, or a negative errno
 * (already reported).
 */
static int send_state(struct mig *m, unsigned i, uint8_t *buf, uint64_t budget, bool precopy)
{
    struct vfm_endpoint *e = m->cfg->src[i];
    int64_t t0 = now_ns();
    uint64_t got = 0;

    for (;;) {
        ssize_t n;
        int ret;

        if (precopy && budget && got >= budget)
            return SENT_BUDGET;
        if (precopy && now_ns() - t0 > ROUND_MAX_NS)
            return SENT_BUDGET;
        n = vfm_ep_read(e, buf, CHUNK);
        if (n == 0)
            return precopy ? SENT_TEMP_END : SENT_END;
        if (n == -ENOMSG && precopy)
            return SENT_TEMP_END;
        if (n < 0) {
            fail(m, (int)n, "source %s: reading its state in %s failed: %s (%s)", vfm_ep_name(e),
                 vfm_state_str(m->cur[i]), vfm_strerror((int)n), vfm_err_name((int)n));
            return (int)n;
        }
        if (failed(m)) /* another device failed: stop sending */
            return -ECANCELED;
        ret = put_record(m, VFM_MS_DATA, i, buf, (size_t)n);
        if (ret) {
            fail(m, ret, "the migration stream failed while sending source %s's state in %s: %s%s",
                 vfm_ep_name(e), vfm_state_str(m->cur[i]), vfm_strerror(ret),
                 ret == -ETIMEDOUT ? " (the receiver stopped reading)" : "");
            return ret;
        }
        got += (uint64_t)n;
        pthread_mutex_lock(m->lock);
        m->dev_sent[i] += (uint64_t)n;
        if (precopy)
            m->round_bytes += (uint64_t)n;
        pthread_mutex_unlock(m->lock);
    }
}

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

static int src_precopy_start(struct mig *m, unsigned i)
{
    return m->pc[i] ? set_state(m, 0, i, VFM_STATE_PRE_COPY) : 0;
}

/* One round of one device: to its temporary end, or what its precopy info
 * said was pending when the round began. */
static int src_precopy_round(struct mig *m, unsigned i)
{
    uint64_t initial, dirty, budget = 0;
    uint8_t *buf;
    int ret;

    m->drained[i] = true;
    if (!m->pc[i])
        return 0;
    if (vfm_ep_precopy_info(m->cfg->src[i], &initial, &dirty) == 0) {
        budget = initial + dirty;
        if (budget == 0)
            return 0; /* nothing pending: drained, as the device says */
    }
    buf = malloc(CHUNK);
    if (!buf)
        return -ENOMEM;
    ret = send_state(m, i, buf, budget, true);
    free(buf);
    m->drained[i] = ret == SENT_TEMP_END;
    return ret < 0 ? ret : 0;
}

/*
 * Pre-copy rounds until the estimated downtime fits the limit, or the round
 * limit is reached, or — with no estimate to go by — every device has
 * reached its temporary end (migrate.h says why).
 * Return: 0 or the first failure's errno.
 */
static int precopy(struct mig *m)
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

    m->phase = VFM_PHASE_PRECOPY;
    ret = parallel(m, src_precopy_start);
    while (!ret) {
        int64_t t0 = now_ns(), dt;
        enum vfm_mig_estimate kind = VFM_MIG_EST_DATA_SIZE;
        uint64_t remaining = 0, est;
        bool drained = true;

        m->round_bytes = 0;
        ret = parallel(m, src_precopy_round);
        if (ret)
            break;
        dt = now_ns() - t0;
        r->precopy_rounds++;
        r->precopy_bytes += m->round_bytes;
        /* the throughput over every round so far: a round that moved a few
         * bytes still measures what a round costs (mtty's 24 bytes) */
        all_bytes += m->round_bytes;
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
                r->precopy_rounds, (unsigned long long)m->round_bytes, dt / 1e6,
                (unsigned long long)remaining, vfm_mig_estimate_name(kind),
                r->expected_downtime_ns / 1e6);
        else
            vfm_log(LOG_INFO, "pre-copy round %u: %llu bytes in %.1f ms; no downtime estimate (%s)",
                    r->precopy_rounds, (unsigned long long)m->round_bytes, dt / 1e6,
                    kind == VFM_MIG_EST_NONE ? "a device gives none" : "no throughput yet");
        if (r->expected_downtime_ns >= 0 && (uint64_t)r->expected_downtime_ns <= limit_ns) {
            r->precopy_converged = true;
            break;
        }
        if (r->expected_downtime_ns < 0 && drained)
            break; /* nothing to judge by, and pre-copy caught up once */
        if (r->precopy_rounds >= max_rounds)
            break;
    }
    m->phase = VFM_PHASE_SAVE;
    return ret;
}

static int src_save(struct mig *m, unsigned i)
{
    uint8_t *buf = malloc(CHUNK);
    uint64_t before = m->dev_sent[i], total;
    int64_t t0 = now_ns();
    int ret;

    if (!buf)
        return -ENOMEM;
    ret = m->in_stop_copy[i] ? 0 : set_state(m, 0, i, VFM_STATE_STOP_COPY);
    if (!ret)
        ret = send_state(m, i, buf, 0, false);
    pthread_mutex_lock(m->lock);
    total = m->dev_sent[i] - before;
    pthread_mutex_unlock(m->lock);
    if (!ret) {
        uint64_t t = m->dev_sent[i]; /* pre-copy bytes included */
        ret = put_record(m, VFM_MS_DEVICE_END, i, &t, sizeof(t));
        if (ret)
            fail(m, ret, "the migration stream failed: %s", vfm_strerror(ret));
    }
    free(buf);
    pthread_mutex_lock(m->lock);
    m->rep->dev_bytes[i] = m->dev_sent[i];
    m->rep->bytes += total;
    m->rep->dev_save_ns[i] = now_ns() - t0;
    pthread_mutex_unlock(m->lock);
    return ret;
}

/* Back to RUNNING after a failure: every source to RUNNING_P2P first (each
 * accepts P2P again before any issues it), then all to RUNNING; a source
 * that will not come back is reset. A source that was migrated stopped goes
 * back to STOP; one the engine never sent a request to is left alone. */
static int src_recover_p2p(struct mig *m, unsigned i)
{
    if (!(m->flags[i] & VFM_MIGRATION_P2P) || m->stopped[i] || !m->touched[i])
        return 0;
    m->cur[i] = VFM_STATE_COUNT; /* after a failure: ask */
    if (vfm_ep_get_state(m->cfg->src[i], &m->cur[i]))
        return 0;
    if (m->cur[i] == VFM_STATE_RUNNING || m->cur[i] == VFM_STATE_RUNNING_P2P ||
        m->cur[i] == VFM_STATE_ERROR)
        return 0; /* the RUNNING pass resets a device in ERROR */
    if (vfm_ep_set_state(m->cfg->src[i], VFM_STATE_RUNNING_P2P) == 0) {
        m->cur[i] = VFM_STATE_RUNNING_P2P;
        span(m, 0, i, VFM_STATE_RUNNING_P2P);
    } else {
        m->cur[i] = VFM_STATE_COUNT;
    }
    return 0;
}

static int src_recover_run(struct mig *m, unsigned i)
{
    struct vfm_endpoint *e = m->cfg->src[i];
    uint32_t target = m->stopped[i] ? VFM_STATE_STOP : VFM_STATE_RUNNING, st = VFM_STATE_COUNT,
             next;

    if (!m->touched[i])
        return 0;
    vfm_ep_get_state(e, &st);
    if (st == target)
        return 0;
    if (st < VFM_STATE_COUNT && vfm_fsm_next(m->flags[i], st, target, &next) == 0 &&
        vfm_ep_set_state(e, target) == 0) {
        span(m, 0, i, target);
        return 0;
    }
    /* recover state failed: reset (back to RUNNING, its state lost) */
    vfm_log(LOG_ERR, "source %s: cannot return to %s from %s; resetting it", vfm_ep_name(e),
            vfm_state_str(target), st < VFM_STATE_COUNT ? vfm_state_str(st) : "an unknown state");
    if (vfm_ep_reset(e) == 0) {
        pthread_mutex_lock(m->lock);
        m->rep->sources_reset++;
        pthread_mutex_unlock(m->lock);
        span(m, 0, i, VFM_STATE_RUNNING);
        return 0;
    }
    /* it does not answer (a server that stopped, a connection closed at a
     * deadline): nothing more can be done from here */
    pthread_mutex_lock(m->lock);
    m->rep->sources_lost++;
    pthread_mutex_unlock(m->lock);
    note(m,
         "source %s does not answer: it could be neither brought back nor reset, and is left "
         "as it is",
         vfm_ep_name(e));
    return 0;
}

/*
 * Reads where every source is, before any request (migrate.h: "Where the
 * devices are"): refuses a source in ERROR or RESUMING before anything is
 * sent, brings the others to RUNNING or STOP, and notes what it did.
 */
static int src_prepare(struct mig *m)
{
    const struct vfm_mig_config *c = m->cfg;
    int ret;

    for (unsigned i = 0; i < c->ndev; i++) {
        struct vfm_endpoint *e = c->src[i];
        uint32_t st = VFM_STATE_COUNT;

        ret = vfm_ep_get_state(e, &st);
        if (!ret && st >= VFM_STATE_COUNT)
            ret = -EPROTO;
        if (ret) {
            fail(m, ret, "source %s: reading its state before the migration failed: %s (%s)",
                 vfm_ep_name(e), vfm_strerror(ret), vfm_err_name(ret));
            return ret;
        }
        m->cur[i] = m->rep->dev_initial_state[i] = st;
        if (st == VFM_STATE_ERROR || st == VFM_STATE_RESUMING) {
            fail(m, -EBUSY,
                 "source %s is in %s: it holds no state to migrate (%s); nothing was sent to any "
                 "device",
                 vfm_ep_name(e), vfm_state_str(st),
                 st == VFM_STATE_ERROR ? "reset it first" : "it is loading one");
            return -EBUSY;
        }
    }
    for (unsigned i = 0; i < c->ndev; i++) {
        uint32_t st = m->cur[i];
        const char *name = vfm_ep_name(c->src[i]);

        switch (st) {
        case VFM_STATE_RUNNING:
            break;
        case VFM_STATE_STOP:
            m->stopped[i] = true;
            note(m, "source %s was in STOP: migrated stopped, without pre-copy", name);
            break;
        case VFM_STATE_STOP_COPY:
            m->stopped[i] = true;
            if ((ret = set_state(m, 0, i, VFM_STATE_STOP)))
                return ret;
            note(m,
                 "source %s was in STOP_COPY (a save no one was reading): moved to STOP first, "
                 "migrated stopped, without pre-copy",
                 name);
            break;
        default: /* RUNNING_P2P, PRE_COPY, PRE_COPY_P2P: a running device */
            if ((ret = set_state(m, 0, i, VFM_STATE_RUNNING)))
                return ret;
            note(m, "source %s was in %s: moved to RUNNING first", name, vfm_state_str(st));
            break;
        }
    }
    return 0;
}

static int src_finish(struct mig *m, unsigned i)
{
    /* the VM moved: the sources end their sessions, stopped */
    return set_state(m, 0, i, VFM_STATE_STOP);
}

/* ---- the destination side ---- */

static int dst_resume(struct mig *m, unsigned i)
{
    return set_state(m, 1, i, VFM_STATE_RESUMING);
}

/* Reads where every destination is before its first request; one in ERROR,
 * or in RESUMING with a load that is not ours, is reset first. */
static int dst_prepare(struct mig *m)
{
    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        struct vfm_endpoint *e = m->cfg->dst[i];
        uint32_t st = VFM_STATE_COUNT;
        int ret = vfm_ep_get_state(e, &st);

        if (!ret && st >= VFM_STATE_COUNT)
            ret = -EPROTO;
        if (ret) {
            fail(m, ret,
                 "destination %s: reading its state before moving it to RESUMING failed: %s (%s)",
                 vfm_ep_name(e), vfm_strerror(ret), vfm_err_name(ret));
            return ret;
        }
        m->cur[i] = m->rep->dev_initial_state[i] = st;
        if (st != VFM_STATE_ERROR && st != VFM_STATE_RESUMING)
            continue;
        ret = vfm_ep_reset(e);
        m->cur[i] = VFM_STATE_COUNT;
        if (ret) {
            fail(m, ret, "destination %s is in %s and its reset failed: %s (%s)", vfm_ep_name(e),
                 vfm_state_str(st), vfm_strerror(ret), vfm_err_name(ret));
            return ret;
        }
        note(m, "destination %s was in %s: reset before loading", vfm_ep_name(e),
             vfm_state_str(st));
    }
    return 0;
}

static int dst_load(struct mig *m, unsigned i)
{
    return set_state(m, 1, i, VFM_STATE_STOP);
}

static int dst_start_p2p(struct mig *m, unsigned i)
{
    if (m->stopped[i])
        return 0; /* migrated stopped: it stays in STOP */
    return set_state(m, 1, i,
                     (m->flags[i] & VFM_MIGRATION_P2P) ? VFM_STATE_RUNNING_P2P : VFM_STATE_STOP);
}

static int dst_start(struct mig *m, unsigned i)
{
    if (m->stopped[i])
        return 0;
    return set_state(m, 1, i, VFM_STATE_RUNNING);
}

static int dst_reset(struct mig *m, unsigned i)
{
    vfm_ep_reset(m->cfg->dst[i]);
    return 0;
}

/* The stream failed to arrive (ended, stalled, or a read error) where
 * the decoder is: say so. */
static void stream_failed(struct mig *m, const struct vfm_ms_dec *d, int err)
{
    char where[64];

    vfm_ms_dec_where(d, where, sizeof(where));
    if (err == -ETIMEDOUT && !strcmp(where, "before its header"))
        fail(m, err,
             "the migration stream's header did not arrive within %u ms (the sender "
             "stopped sending)",
             m->timeout_ms);
    else if (err == -ETIMEDOUT)
        fail(m, err,
             "the migration stream stalled %s: nothing for %u ms (the sender stopped "
             "sending)",
             where, m->timeout_ms);
    else if (err == -EPIPE && !strcmp(where, "before its header"))
        fail(m, err, "the migration stream's header is missing");
    else if (err == -EPIPE)
        fail(m, err, "the migration stream ended early (%s)", where);
    else
        fail(m, err, "reading the migration stream failed %s: %s", where, vfm_strerror(err));
}

/* The device list arrived: each destination must match its source; a
 * source migrated stopped leaves its destination stopped. Then every
 * destination goes to RESUMING. */
static int take_devices(struct mig *m, const uint32_t *flags)
{
    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        uint32_t f = flags[i] & ~VFM_MS_STOPPED;
        m->stopped[i] = flags[i] & VFM_MS_STOPPED;
        if (m->stopped[i])
            note(m, "destination %s: its source was stopped; it is loaded and left in STOP",
                 vfm_ep_name(m->cfg->dst[i]));
        if ((f & VFM_MIGRATION_P2P) != (m->flags[i] & VFM_MIGRATION_P2P) ||
            !(m->flags[i] & VFM_MIGRATION_STOP_COPY)) {
            fail(m, -EINVAL, "destination %s does not match its source (flags 0x%x, source 0x%x)",
                 vfm_ep_name(m->cfg->dst[i]), m->flags[i], f);
            return -EINVAL;
        }
    }
    return dst_prepare(m) ?: parallel(m, dst_resume);
}

/* Reads the stream (decoded and checked by src/migrate/mstream.c), loads
 * the destinations and starts them. */
static int receive(struct mig *m, int64_t *t_running)
{
    struct vfm_ms_dec d;
    int ret = vfm_ms_dec_init(&d, m->cfg->ndev);

    if (ret)
        return ret;
    for (;;) {
        struct vfm_ms_event ev;
        uint8_t *where;
        size_t want = vfm_ms_dec_want(&d, &where);

        if (!want)
            break; /* the end */
        ret = read_all(m, where, want);
        if (ret) {
            stream_failed(m, &d, ret);
            goto out;
        }
        pthread_mutex_lock(m->lock);
        m->rep->stream_bytes += want;
        pthread_mutex_unlock(m->lock);
        ret = vfm_ms_dec_commit(&d, want, &ev);
        if (ret < 0) {
            fail(m, ret, "%s", d.why);
            goto out;
        }
        if (ev.kind == VFM_MS_EV_DEVICES && (ret = take_devices(m, ev.flags)))
            goto out;
        if (ev.kind == VFM_MS_EV_DATA) {
            ssize_t w = vfm_ep_write(m->cfg->dst[ev.device], ev.data, ev.len);
            if (w != (ssize_t)ev.len) {
                ret = w < 0 ? (int)w : -EIO;
                fail(m, ret, "destination %s: writing its state in RESUMING failed: %s (%s)",
                     vfm_ep_name(m->cfg->dst[ev.device]), vfm_strerror(ret), vfm_err_name(ret));
                goto out;
            }
            pthread_mutex_lock(m->lock);
            m->rep->bytes += ev.len;
            m->rep->dev_bytes[ev.device] += ev.len;
            pthread_mutex_unlock(m->lock);
        }
    }
    if ((ret = parallel(m, dst_load)) || (ret = parallel(m, dst_start_p2p)) ||
        (ret = parallel(m, dst_start)))
        goto out;
    *t_running = now_ns();
out:
    vfm_ms_dec_release(&d);
    return ret;
}

static void phase_mark(struct vfm_mig_report *rep, enum vfm_mig_phase p, int64_t *t)
{
    int64_t n = now_ns();
    rep->phase_ns[p] += n - *t;
    *t = n;
}

/* The destination phases, from the timeline. */
static void dst_phases(struct vfm_mig_report *rep)
{
    int64_t first_res = 0, last_stop = 0, last_p2p = 0, last_run = 0;

    for (unsigned k = 0; k < rep->nspans; k++) {
        struct vfm_mig_span *sp = &rep->spans[k];
        if (sp->side != 1)
            continue;
        if (sp->state == VFM_STATE_RESUMING && (!first_res || sp->t_ns < first_res))
            first_res = sp->t_ns;
        if (sp->state == VFM_STATE_STOP && sp->t_ns > last_stop)
            last_stop = sp->t_ns;
        if (sp->state == VFM_STATE_RUNNING_P2P && sp->t_ns > last_p2p)
            last_p2p = sp->t_ns;
        if (sp->state == VFM_STATE_RUNNING && sp->t_ns > last_run)
            last_run = sp->t_ns;
    }
    if (first_res && last_stop > first_res)
        rep->phase_ns[VFM_PHASE_LOAD] = last_stop - first_res;
    if (last_p2p > last_stop)
        rep->phase_ns[VFM_PHASE_START_P2P] = last_p2p - last_stop;
    if (last_run)
        rep->phase_ns[VFM_PHASE_START] = last_run - (last_p2p > last_stop ? last_p2p : last_stop);
}

static int check_config(const struct vfm_mig_config *cfg, struct vfm_endpoint **eps)
{
    /* a version above ours: the caller knows members we do not */
    if (!cfg || cfg->version > VFM_MIG_CONFIG_VERSION)
        return -EINVAL;
    return !cfg->ndev || cfg->ndev > VFM_MIG_MAX_DEVICES || !eps ? -EINVAL : 0;
}

static int read_flags(struct mig *m, int side)
{
    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        int ret = vfm_ep_flags(ep(m, side, i), &m->flags[i]);
        if (ret) {
            fail(m, ret, "%s %s: cannot read its migration flags: %s",
                 side ? "destination" : "source", vfm_ep_name(ep(m, side, i)), vfm_strerror(ret));
            return ret;
        }
    }
    return 0;
}

static void mig_init(struct mig *m, struct mig_shared *sh, const struct vfm_mig_config *cfg,
                     struct vfm_mig_report *rep, int fd)
{
    memset(m, 0, sizeof(*m));
    memset(rep, 0, sizeof(*rep));
    m->cfg = cfg;
    m->rep = rep;
    m->lock = &sh->lock;
    m->span_cap = &sh->span_cap;
    m->fd = fd;
    m->timeout_ms = cfg && cfg->timeout_ms ? cfg->timeout_ms : VFM_MIG_DEFAULT_TIMEOUT_MS;
    m->phase = VFM_PHASE_SAVE;
    for (unsigned i = 0; i < VFM_MIG_MAX_DEVICES; i++)
        m->cur[i] = VFM_STATE_COUNT;
    rep->expected_downtime_ns = -1;
    pthread_mutex_init(&m->wlock, NULL);
}

int vfm_migrate_send(const struct vfm_mig_config *cfg, int fd, struct vfm_mig_report *rep)
{
    struct mig_shared sh = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct mig m;
    uint8_t h[VFM_MS_HDR_SIZE], ack[VFM_MS_ACK_SIZE];
    int32_t status = 0;
    int ret, aret;
    int64_t t;

    mig_init(&m, &sh, cfg, rep, fd);
    if ((ret = check_config(cfg, cfg ? cfg->src : NULL)))
        return ret;
    rep->ndev = cfg->ndev;
    if ((ret = read_flags(&m, 0)))
        return ret;
    for (unsigned i = 0; i < cfg->ndev; i++) {
        uint64_t est;
        if (vfm_ep_data_size(cfg->src[i], &est) == 0)
            m.total_est += est;
    }

    t = rep->t_start_ns = now_ns();
    ret = src_prepare(&m);
    if (!ret) {
        vfm_ms_put_header(h, cfg->ndev);
        uint32_t list[VFM_MIG_MAX_DEVICES];
        for (unsigned i = 0; i < cfg->ndev; i++)
            list[i] = m.flags[i] | (m.stopped[i] ? VFM_MS_STOPPED : 0);
        ret = write_all(&m, h, sizeof(h));
        rep->stream_bytes += ret ? 0 : sizeof(h); /* as the receiver counts: every byte */
        if (!ret) /* every device's flags: the receiver checks its own against them */
            ret = put_record(&m, VFM_MS_DEVICES, 0, list, cfg->ndev * sizeof(uint32_t));
        if (ret)
            fail(&m, ret, "the migration stream failed: %s", vfm_strerror(ret));
    }
    for (unsigned i = 0; i < cfg->ndev; i++) {
        m.pc[i] = !cfg->no_precopy && !m.stopped[i] && (m.flags[i] & VFM_MIGRATION_PRE_COPY);
        rep->precopy_devices += m.pc[i];
    }
    if (!ret && rep->precopy_devices) {
        /* 0. pre-copy, the VM running */
        ret = precopy(&m);
        rep->bytes += rep->precopy_bytes;
        phase_mark(rep, VFM_PHASE_PRECOPY, &t);
    }
    rep->t_switch_ns = now_ns();
    if (!ret) {
        /* 1. quiesce: no device issues P2P once this returns */
        ret = parallel(&m, src_quiesce);
        if (!ret)
            ret = parallel(&m, src_stop_non_p2p);
        phase_mark(rep, VFM_PHASE_QUIESCE, &t);
        /* 2. save, every device at once */
        if (!ret)
            ret = parallel(&m, src_save);
    }
    phase_mark(rep, VFM_PHASE_SAVE, &t);
    if (!ret) {
        ret = put_record(&m, VFM_MS_STREAM_END, 0, NULL, 0);
        if (ret)
            fail(&m, ret, "the migration stream failed: %s", vfm_strerror(ret));
    }
    if (ret)
        shutdown(fd, SHUT_WR); /* the receiver sees the stream end early */
    /* 3-4 happen on the receiving side; its answer says how it went */
    if (cfg->one_way) {
        /* nobody answers a file: the state is saved, the sources stay stopped */
    } else if ((aret = read_all(&m, ack, sizeof(ack))) || vfm_ms_get_ack(ack, &status)) {
        if (!ret) {
            ret = aret == -ETIMEDOUT ? aret : -EPIPE;
            rep->remote_failure = true;
        }
        if (aret == -ETIMEDOUT)
            fail(&m, ret, "no answer from the receiving side within %u ms", m.timeout_ms);
        else
            fail(&m, ret, "no answer from the receiving side: it failed or went away");
    } else if (status && !ret) {
        ret = status;
        rep->remote_failure = true;
        fail(&m, ret, "the receiving side failed: %s (%s)", vfm_strerror(ret), vfm_err_name(ret));
    }
    shutdown(fd, SHUT_WR); /* the stream is over either way */
    phase_mark(rep, VFM_PHASE_LOAD, &t);
    if (!ret) {
        rep->t_end_ns = now_ns(); /* the answer comes once all destinations run */
        rep->downtime_ns = rep->t_end_ns - rep->t_switch_ns;
        parallel(&m, src_finish);
    } else {
        /* only what the engine touched is brought back (a source refused
         * before any request is left as it was found) */
        for (unsigned i = 0; i < cfg->ndev; i++)
            rep->rolled_back |= m.touched[i];
        parallel(&m, src_recover_p2p);
        parallel(&m, src_recover_run);
        phase_mark(rep, VFM_PHASE_ROLLBACK, &t);
    }
    vfm_pool_free(m.pool);
    pthread_mutex_destroy(&m.wlock);
    return ret;
}

int vfm_migrate_receive(const struct vfm_mig_config *cfg, int fd, struct vfm_mig_report *rep)
{
    struct mig_shared sh = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct mig m;
    uint8_t a[VFM_MS_ACK_SIZE];
    int64_t t_running = 0;
    int ret;

    mig_init(&m, &sh, cfg, rep, fd);
    if ((ret = check_config(cfg, cfg ? cfg->dst : NULL)))
        return ret;
    rep->ndev = cfg->ndev;
    rep->t_start_ns = now_ns();
    ret = read_flags(&m, 1);
    if (!ret)
        ret = receive(&m, &t_running);
    if (ret)
        parallel(&m, dst_reset); /* never run on bad state */
    vfm_ms_put_ack(a, ret);
    if (!cfg->one_way)
        write_all(&m, a, sizeof(a));
    if (ret && !cfg->one_way) {
        /* the sender may still be sending: take the rest of the stream until
         * it ends, so it can finish, read our answer, and roll back */
        char sink[65536];
        while (wait_ready(&m, POLLIN) == 0 && read(fd, sink, sizeof(sink)) > 0)
            ;
    }
    if (!ret) {
        rep->t_end_ns = t_running;
        dst_phases(rep);
    }
    vfm_pool_free(m.pool);
    pthread_mutex_destroy(&m.wlock);
    return ret;
}

struct receiver {
    const struct vfm_mig_config *cfg;
    int fd;
    struct vfm_mig_report rep;
    int ret;
};

static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    r->ret = vfm_migrate_receive(r->cfg, r->fd, &r->rep);
    return NULL;
}

int vfm_migrate_local(const struct vfm_mig_config *cfg, struct vfm_mig_report *rep)
{
    struct receiver rx = {.cfg = cfg};
    pthread_t rxt;
    int sv[2], ret;

    memset(rep, 0, sizeof(*rep));
    if ((ret = check_config(cfg, cfg ? cfg->src : NULL)) || (ret = check_config(cfg, cfg->dst)))
        return ret;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    rx.fd = sv[1];
    if (pthread_create(&rxt, NULL, receiver_main, &rx)) {
        close(sv[0]);
        close(sv[1]);
        return -EAGAIN;
    }
    ret = vfm_migrate_send(cfg, sv[0], rep);
    pthread_join(rxt, NULL);
    close(sv[0]);
    close(sv[1]);

    /* one report, with the cause first: the receiver's failure when that is
     * what stopped the sender, else the sender's own */
    if (rx.ret && rx.rep.error && rep->remote_failure) {
        rep->error = rx.rep.error;
        memcpy(rep->message, rx.rep.message, sizeof(rep->message));
    }
    if (rx.rep.nspans) {
        struct vfm_mig_span *sp = realloc(rep->spans, (rep->nspans + rx.rep.nspans) * sizeof(*sp));
        if (sp) {
            memcpy(sp + rep->nspans, rx.rep.spans, rx.rep.nspans * sizeof(*sp));
            rep->spans = sp;
            rep->nspans += rx.rep.nspans;
        }
    }
    if (!ret) {
        rep->t_end_ns = rx.rep.t_end_ns; /* one clock here: the exact downtime */
        rep->downtime_ns = rep->t_end_ns - rep->t_switch_ns;
        for (int p = VFM_PHASE_LOAD; p <= VFM_PHASE_START; p++)
            rep->phase_ns[p] = rx.rep.phase_ns[p];
        if (rep->precopy_rounds) {
            /* the destinations were in RESUMING through pre-copy: here,
             * where both clocks are one, the load phase starts at the
             * switchover */
            int64_t last_stop = 0;
            for (unsigned k = 0; k < rx.rep.nspans; k++)
                if (rx.rep.spans[k].state == VFM_STATE_STOP && rx.rep.spans[k].t_ns > last_stop)
                    last_stop = rx.rep.spans[k].t_ns;
            if (last_stop > rep->t_switch_ns)
                rep->phase_ns[VFM_PHASE_LOAD] = last_stop - rep->t_switch_ns;
        }
    }
    vfm_mig_report_free(&rx.rep);
    return ret;
}

void vfm_mig_report_free(struct vfm_mig_report *r)
{
    if (!r)
        return;
    free(r->spans);
    r->spans = NULL;
    r->nspans = 0;
}
