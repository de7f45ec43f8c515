/* SPDX-License-Identifier: MIT */
/* What every part of the migration engine shares (mig.h): failures and
 * notes, the timeline, one device's state change, the workers, the
 * stream's records. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/fsm.h>

#include "../common/hash.h"
#include "mig.h"

int64_t mig_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Keeps the first failure: it names the device, the state and the cause. */
void mig_fail(struct mig *m, int err, const char *fmt, ...)
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

void mig_note(struct mig *m, const char *fmt, ...)
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
bool mig_failed(struct mig *m)
{
    bool f;
    pthread_mutex_lock(m->lock);
    f = m->rep->error != 0;
    pthread_mutex_unlock(m->lock);
    return f;
}
void mig_span(struct mig *m, int side, unsigned dev, uint32_t state)
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
            (struct vfm_mig_span){(uint16_t)side, (uint16_t)dev, state, mig_now_ns()};
    pthread_mutex_unlock(m->lock);
}
struct vfm_endpoint *mig_ep(struct mig *m, int side, unsigned i)
{
    return side ? m->cfg->dst[i] : m->cfg->src[i];
}
const char *mig_side_name(int side)
{
    return side ? "destination" : "source";
}
/*
 * A state change of one device, with the timeline. The
 * request is planned from the state the engine knows the device is in (a
 * GET first when it does not know) and is never sent when the planner
 * refuses it: kernels before the 2026 fix loop for ever on STOP_COPY ->
 * PRE_COPY, and no device should see a request the uAPI forbids.
 */
int mig_set_state(struct mig *m, int side, unsigned i, uint32_t state)
{
    struct vfm_endpoint *e = mig_ep(m, side, i);
    uint32_t now = VFM_STATE_COUNT, next;
    int ret;

    if (m->cur[i] >= VFM_STATE_COUNT) {
        ret = vfm_ep_get_state(e, &now);
        if (ret) {
            mig_fail(m, ret, "%s %s: cannot read its state before moving it to %s: %s (%s)",
                     mig_side_name(side), vfm_ep_name(e), vfm_state_str(state), vfm_strerror(ret),
                     vfm_err_name(ret));
            return ret;
        }
        m->cur[i] = now;
    }
    if (vfm_fsm_next(m->flags[i], m->cur[i], state, &next)) {
        mig_fail(m, -EINVAL, "%s %s: %s -> %s not requested: %s", mig_side_name(side),
                 vfm_ep_name(e), vfm_state_str(m->cur[i]), vfm_state_str(state),
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
        mig_fail(m, ret, "%s %s: moving to %s failed: %s (%s); %s%s", mig_side_name(side),
                 vfm_ep_name(e), vfm_state_str(state), vfm_strerror(ret), vfm_err_name(ret),
                 m->cur[i] < VFM_STATE_COUNT ? "it is now " : "it does not say where it is",
                 m->cur[i] < VFM_STATE_COUNT ? vfm_state_str(now) : "");
        return ret;
    }
    m->cur[i] = state;
    mig_span(m, side, i, state);
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
int mig_parallel(struct mig *m, int (*fn)(struct mig *, unsigned))
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
/* Stream @k's fd and transport. */
static int lane_fd(const struct mig *m, unsigned k, const struct vfm_mig_transport **tp)
{
    if (!k) {
        *tp = m->tp;
        return m->fd;
    }
    *tp = m->lanes[k].tp;
    return m->lanes[k].fd;
}
unsigned mig_lane_of(const struct mig *m, unsigned dev)
{
    return m->nlanes > 1 ? dev % m->nlanes : 0;
}
/* Waits until stream @k is ready for @events, at most the stream's
 * timeout, and no later than the downtime's deadline (bytes a transport
 * already holds are ready at once); on the receiver, no longer than
 * another of its threads runs (cancel_fd).
 * Return: 0, -ETIMEDOUT, -ETIME (the downtime's deadline), -ECANCELED, or
 * a poll error. */
static int wait_fd(const struct mig *m, int fd, short events)
{
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = m->cancel_fd, .events = POLLIN}};
    int64_t wait = m->timeout_ms;
    bool bounded = false;
    int n;

    if (m->downtime_deadline_ns) {
        int64_t left = (m->downtime_deadline_ns - mig_now_ns()) / 1000000;
        if (left < wait) {
            wait = left > 0 ? left : 0;
            bounded = true;
        }
    }
    do
        n = poll(p, m->cancel_fd >= 0 ? 2 : 1, (int)wait);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n && p[1].revents && m->cancel_fd >= 0)
        return -ECANCELED;
    return n ? 0 : bounded ? -ETIME : -ETIMEDOUT;
}
int mig_lane_wait(const struct mig *m, unsigned k, short events)
{
    const struct vfm_mig_transport *tp;
    int fd = lane_fd(m, k, &tp);

    if ((events & POLLIN) && tp && tp->pending && tp->pending(tp->ctx))
        return 0;
    return wait_fd(m, fd, events);
}
bool mig_spliceable(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}
/* A pipe for splices, as large as a record may be (the kernel's limit
 * for others: then a record's payload moves in several splices). */
static int splice_pipe(int p[2])
{
    if (p[0] >= 0)
        return 0;
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
        p[0] = p[1] = -1;
        return -errno;
    }
    (void)fcntl(p[1], F_SETPIPE_SZ, (int)CHUNK);
    return 0;
}
/* One splice, waiting on @fd for @events first when it would block.
 * Return: the bytes moved (0: @from's end), or -errno. */
static ssize_t splice_some(const struct mig *m, int in, int out, size_t len, int wait_on,
                           short events)
{
    for (;;) {
        ssize_t n = splice(in, NULL, out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        int ret;
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        if ((ret = wait_fd(m, wait_on, events)))
            return ret;
    }
}
int mig_splice(const struct mig *m, int from, int to, size_t len, int p[2], bool *at_to)
{
    int ret = splice_pipe(p);

    *at_to = false;
    while (!ret && len) {
        ssize_t in = splice_some(m, from, p[1], len, from, POLLIN);
        if (in <= 0)
            return in ? (int)in : -EPIPE;
        len -= (size_t)in;
        while (in > 0) {
            ssize_t out = splice_some(m, p[0], to, (size_t)in, to, POLLOUT);
            if (out <= 0) {
                *at_to = true;
                return out ? (int)out : -EPIPE;
            }
            in -= out;
        }
    }
    return ret;
}
int mig_wait_ready(const struct mig *m, short events)
{
    return mig_lane_wait(m, 0, events);
}
/* One write or read of the fd, or of the transport: a count, or -errno
 * (-EAGAIN: wait again). */
static ssize_t write_some(const struct mig *m, unsigned k, const void *p, size_t len)
{
    const struct vfm_mig_transport *tp;
    int fd = lane_fd(m, k, &tp);
    ssize_t w;

    if (tp)
        return tp->write(tp->ctx, p, len);
    w = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == ENOTSOCK)
        w = write(fd, p, len); /* a file or a pipe */
    return w < 0 ? (errno == EINTR ? -EAGAIN : -errno) : w;
}
ssize_t mig_lane_read_some(const struct mig *m, unsigned k, void *buf, size_t len)
{
    const struct vfm_mig_transport *tp;
    int fd = lane_fd(m, k, &tp);
    ssize_t r;

    if (tp)
        return tp->read(tp->ctx, buf, len);
    r = read(fd, buf, len);
    return r < 0 ? (errno == EINTR || errno == EAGAIN ? -EAGAIN : -errno) : r;
}
ssize_t mig_read_some(const struct mig *m, void *buf, size_t len)
{
    return mig_lane_read_some(m, 0, buf, len);
}
void mig_lane_shutdown_write(const struct mig *m, unsigned k)
{
    const struct vfm_mig_transport *tp;
    int fd = lane_fd(m, k, &tp);

    if (tp && tp->shutdown_write)
        tp->shutdown_write(tp->ctx);
    else
        shutdown(fd, SHUT_WR);
}
void mig_shutdown_write(const struct mig *m)
{
    mig_lane_shutdown_write(m, 0);
}
/* The stream's writes and reads: each wait for the other end is bounded by
 * the stream's timeout (a receiver that stops reading, a sender that stops
 * sending, an answer that never comes). Files are always ready. A write
 * the transport could not take is offered again with the same bytes. */
int mig_lane_write_all(const struct mig *m, unsigned k, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w;
        int ret = mig_lane_wait(m, k, POLLOUT);
        if (ret)
            return ret;
        w = write_some(m, k, p, len);
        if (w == -EAGAIN)
            continue;
        if (w < 0)
            return (int)w;
        if (w == 0)
            return -EPIPE;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}
int mig_write_all(const struct mig *m, const void *buf, size_t len)
{
    return mig_lane_write_all(m, 0, buf, len);
}
int mig_lane_read_all(const struct mig *m, unsigned k, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t r;
        int ret = mig_lane_wait(m, k, POLLIN);
        if (ret)
            return ret;
        r = mig_lane_read_some(m, k, p, len);
        if (r == -EAGAIN)
            continue;
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EPIPE; /* the stream ended early */
        p += r;
        len -= (size_t)r;
    }
    return 0;
}
int mig_read_all(const struct mig *m, void *buf, size_t len)
{
    return mig_lane_read_all(m, 0, buf, len);
}
int mig_put_record_on(struct mig *m, unsigned k, enum vfm_ms_kind kind, unsigned dev,
                      const void *data, size_t len)
{
    pthread_mutex_t *wlock = k ? &m->lanes[k].wlock : &m->wlock;
    uint32_t *seq = k ? &m->lanes[k].seq : &m->seq;
    uint8_t r[VFM_MS_REC_SIZE];
    /* DATA_SC: the device's own stream carries the checks */
    uint64_t psum = kind == VFM_MS_DATA_SC ? 0 : vfm_ms_payload_sum(data, len);
    int ret;

    pthread_mutex_lock(wlock);
    vfm_ms_put_record(r, kind, dev, (*seq)++, psum, len);
    ret = mig_lane_write_all(m, k, r, sizeof(r));
    if (!ret && len)
        ret = mig_lane_write_all(m, k, data, len);
    pthread_mutex_unlock(wlock);
    if (!ret) {
        pthread_mutex_lock(m->lock);
        m->rep->stream_bytes += sizeof(r) + len;
        m->rep->stream_bytes_by[k] += sizeof(r) + len;
        if (kind == VFM_MS_DATA || kind == VFM_MS_DATA_SC || kind == VFM_MS_RAM) {
            m->sent += len;
            if (m->cfg->progress)
                m->cfg->progress(m->cfg->progress_ctx, m->phase, m->sent, m->total_est);
        }
        pthread_mutex_unlock(m->lock);
    }
    return ret;
}
/* Writes one record (header + payload) atomically with respect to the
 * other device threads, on its device's stream. */
int mig_put_record(struct mig *m, enum vfm_ms_kind kind, unsigned dev, const void *data, size_t len)
{
    bool device = kind == VFM_MS_DATA || kind == VFM_MS_DATA_SC || kind == VFM_MS_DEVICE_END ||
                  kind == VFM_MS_INITIAL_END;
    return mig_put_record_on(m, device ? mig_lane_of(m, dev) : 0, kind, dev, data, len);
}
/* How long one pre-copy round may read from one device that keeps giving
 * data (a device that dirties faster than the stream moves, and says
 * nothing of how much it has): the round then ends, not drained. */
#define ROUND_MAX_NS (60ll * 1000000000)
/*
 * Sends what @e gives as device @i's records: in STOP_COPY (@precopy false)
 * to the end of its state (a read of 0); in pre-copy to its temporary end
 * (ENOMSG; also a read of 0, which some drivers give there, mtty among
 * them), or until @budget bytes (0: no budget) or ROUND_MAX_NS.
 * Return: SENT_END, SENT_TEMP_END, SENT_BUDGET, or a negative errno
 * (already reported).
 */
/* Sends device @i's save session from its data fd @dfd, spliced through
 * a pipe into its stream (its bytes never in this process): a DATA_SC
 * record per pipeful. Return: SENT_END, or a negative errno (reported). */
static int send_spliced(struct mig *m, unsigned i, int dfd)
{
    struct vfm_endpoint *e = m->cfg->src[i];
    unsigned k = mig_lane_of(m, i);
    pthread_mutex_t *wlock = k ? &m->lanes[k].wlock : &m->wlock;
    uint32_t *seq = k ? &m->lanes[k].seq : &m->seq;
    int to = k ? m->lanes[k].fd : m->fd, p[2] = {-1, -1}, ret = splice_pipe(p), cap;

    cap = ret ? 0 : fcntl(p[1], F_GETPIPE_SZ);
    if (!ret && cap <= 0)
        ret = -EIO;
    if (cap > (int)CHUNK)
        cap = (int)CHUNK; /* a record's payload at most */
    while (!ret) {
        uint8_t r[VFM_MS_REC_SIZE];
        ssize_t n = splice_some(m, dfd, p[1], (size_t)cap, dfd, POLLIN);

        if (n == 0)
            break; /* the end of the state */
        if (n < 0) {
            ret = (int)n;
            mig_fail(m, ret, "source %s: reading its state in %s failed: %s (%s)", vfm_ep_name(e),
                     vfm_state_str(m->cur[i]), vfm_strerror(ret), vfm_err_name(ret));
            break;
        }
        if (mig_failed(m)) { /* another device failed: stop sending */
            ret = -ECANCELED;
            break;
        }
        pthread_mutex_lock(wlock);
        vfm_ms_put_record(r, VFM_MS_DATA_SC, i, (*seq)++, 0, (uint64_t)n);
        ret = mig_lane_write_all(m, k, r, sizeof(r));
        for (ssize_t left = n; !ret && left > 0;) {
            ssize_t w = splice_some(m, p[0], to, (size_t)left, to, POLLOUT);
            if (w <= 0)
                ret = w ? (int)w : -EPIPE;
            else
                left -= w;
        }
        pthread_mutex_unlock(wlock);
        if (ret == -ETIME) {
            mig_fail(m, ret,
                     "the downtime passed %u ms (--max-downtime) while sending source %s's state "
                     "in %s (the receiver stopped reading): the migration was aborted",
                     m->cfg->max_downtime_ms, vfm_ep_name(e), vfm_state_str(m->cur[i]));
            break;
        }
        if (ret) {
            mig_fail(m, ret,
                     "the migration stream failed while sending source %s's state in %s: %s%s",
                     vfm_ep_name(e), vfm_state_str(m->cur[i]), vfm_strerror(ret),
                     ret == -ETIMEDOUT ? " (the receiver stopped reading)" : "");
            break;
        }
        pthread_mutex_lock(m->lock);
        m->rep->stream_bytes += sizeof(r) + (uint64_t)n;
        m->rep->stream_bytes_by[k] += sizeof(r) + (uint64_t)n;
        m->sent += (uint64_t)n;
        m->dev_sent[i] += (uint64_t)n;
        m->rep->spliced_bytes += (uint64_t)n;
        if (m->cfg->progress)
            m->cfg->progress(m->cfg->progress_ctx, m->phase, m->sent, m->total_est);
        pthread_mutex_unlock(m->lock);
    }
    if (p[0] >= 0) {
        close(p[0]);
        close(p[1]);
    }
    return ret ? ret : SENT_END;
}

int mig_send_state(struct mig *m, unsigned i, uint8_t *buf, uint64_t budget, bool precopy)
{
    struct vfm_endpoint *e = m->cfg->src[i];
    int64_t t0 = mig_now_ns();
    uint64_t got = 0;
    unsigned k = mig_lane_of(m, i);

    /* a self-checked stream by its data fd, into a socket: spliced */
    if (!precopy && m->sc[i] && !(k ? m->lanes[k].tp : m->tp)) {
        int dfd = vfm_ep_data_fd(e);
        if (dfd >= 0 && mig_spliceable(k ? m->lanes[k].fd : m->fd))
            return send_spliced(m, i, dfd);
    }
    for (;;) {
        ssize_t n;
        int ret;

        if (precopy && budget && got >= budget)
            return SENT_BUDGET;
        if (precopy && mig_now_ns() - t0 > ROUND_MAX_NS)
            return SENT_BUDGET;
        n = vfm_ep_read(e, buf, CHUNK);
        if (n == 0)
            return precopy ? SENT_TEMP_END : SENT_END;
        if (n == -ENOMSG && precopy)
            return SENT_TEMP_END;
        if (n < 0) {
            mig_fail(m, (int)n, "source %s: reading its state in %s failed: %s (%s)",
                     vfm_ep_name(e), vfm_state_str(m->cur[i]), vfm_strerror((int)n),
                     vfm_err_name((int)n));
            return (int)n;
        }
        if (mig_failed(m)) /* another device failed: stop sending */
            return -ECANCELED;
        ret = mig_put_record(m, m->sc[i] ? VFM_MS_DATA_SC : VFM_MS_DATA, i, buf, (size_t)n);
        if (ret == -ETIME) {
            mig_fail(m, ret,
                     "the downtime passed %u ms (--max-downtime) while sending source %s's state "
                     "in %s (the receiver stopped reading): the migration was aborted",
                     m->cfg->max_downtime_ms, vfm_ep_name(e), vfm_state_str(m->cur[i]));
            return ret;
        }
        if (ret) {
            mig_fail(m, ret,
                     "the migration stream failed while sending source %s's state in %s: %s%s",
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
