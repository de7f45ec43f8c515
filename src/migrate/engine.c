/* SPDX-License-Identifier: MIT */
/*
 * The migration engine (include/vfiomig/migrate.h): P2P-safe ordering, the
 * framed stream, rollback, timing.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/fsm.h>

#include "mig.h"

static int lanes_new(struct mig *m, unsigned n);
static void lanes_free(struct mig *m);

/* A further stream as the caller gave it: a connection, and a transport
 * with its calls when there is one. */
static bool stream_ok(const struct vfm_mig_stream *st)
{
    return st->fd >= 0 && (!st->transport || (st->transport->read && st->transport->write));
}

static void pipe_close(int p[2])
{
    if (p[0] >= 0) {
        close(p[0]);
        close(p[1]);
    }
    p[0] = p[1] = -1;
}

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
            mig_fail(m, ret, "source %s: reading its state before the migration failed: %s (%s)",
                     vfm_ep_name(e), vfm_strerror(ret), vfm_err_name(ret));
            return ret;
        }
        m->cur[i] = m->rep->devices[i].initial_state = st;
        if (st == VFM_STATE_ERROR || st == VFM_STATE_RESUMING) {
            mig_fail(
                m, -EBUSY,
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
            mig_note(m, "source %s was in STOP: migrated stopped, without pre-copy", name);
            break;
        case VFM_STATE_STOP_COPY:
            m->stopped[i] = true;
            if ((ret = mig_set_state(m, 0, i, VFM_STATE_STOP)))
                return ret;
            mig_note(m,
                     "source %s was in STOP_COPY (a save no one was reading): moved to STOP first, "
                     "migrated stopped, without pre-copy",
                     name);
            break;
        default: /* RUNNING_P2P, PRE_COPY, PRE_COPY_P2P: a running device */
            if ((ret = mig_set_state(m, 0, i, VFM_STATE_RUNNING)))
                return ret;
            mig_note(m, "source %s was in %s: moved to RUNNING first", name, vfm_state_str(st));
            break;
        }
    }
    return 0;
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
            mig_fail(
                m, ret,
                "destination %s: reading its state before moving it to RESUMING failed: %s (%s)",
                vfm_ep_name(e), vfm_strerror(ret), vfm_err_name(ret));
            return ret;
        }
        m->cur[i] = m->rep->devices[i].initial_state = st;
        if (st != VFM_STATE_ERROR && st != VFM_STATE_RESUMING)
            continue;
        ret = vfm_ep_reset(e);
        m->cur[i] = VFM_STATE_COUNT;
        if (ret) {
            mig_fail(m, ret, "destination %s is in %s and its reset failed: %s (%s)",
                     vfm_ep_name(e), vfm_state_str(st), vfm_strerror(ret), vfm_err_name(ret));
            return ret;
        }
        mig_note(m, "destination %s was in %s: reset before loading", vfm_ep_name(e),
                 vfm_state_str(st));
    }
    return 0;
}
/* Stream @k's name in messages: "" for the main one of a single stream,
 * else "stream K of N". */
static const char *lane_name(const struct mig *m, unsigned k, char *buf, size_t len)
{
    if (m->nlanes <= 1)
        return "";
    if (k == 0)
        snprintf(buf, len, " (the main stream of %u)", m->nlanes);
    else
        snprintf(buf, len, " (stream %u of %u)", k, m->nlanes);
    return buf;
}
/* The stream failed to arrive (ended, stalled, or a read error) where
 * the decoder is: say so. */
static void stream_failed(struct mig *m, const struct vfm_ms_dec *d, int err)
{
    char where[64], ln[40];
    const char *s = lane_name(m, d->lane, ln, sizeof(ln));

    if (err == -ECANCELED)
        return; /* another stream's thread failed first, and said why */
    vfm_ms_dec_where(d, where, sizeof(where));
    if (err == -ETIMEDOUT && !strcmp(where, "before its header"))
        mig_fail(m, err,
                 "the migration stream's header did not arrive within %u ms (the sender "
                 "stopped sending, or never started)%s",
                 m->timeout_ms, s);
    else if (err == -ETIMEDOUT)
        mig_fail(m, err,
                 "the migration stream stalled %s: nothing for %u ms (the sender stopped "
                 "sending)%s",
                 where, m->timeout_ms, s);
    else if (err == -EPIPE && !strcmp(where, "before its header"))
        mig_fail(m, err, "the migration stream's header is missing%s", s);
    else if (err == -EPIPE)
        mig_fail(m, err, "the migration stream ended early (%s)%s", where, s);
    else
        mig_fail(m, err, "reading the migration stream failed %s: %s%s", where, vfm_strerror(err),
                 s);
}
/* A DATA event: its bytes into its destination. Return: 0 or -errno
 * (reported). */
static int take_data(struct mig *m, const struct vfm_ms_event *ev)
{
    ssize_t w = ev->data ? vfm_ep_write(m->cfg->dst[ev->device], ev->data, ev->len)
                         : (ssize_t)ev->len; /* spliced into it already */

    if (w != (ssize_t)ev->len) {
        int ret = w < 0 ? (int)w : -EIO;
        mig_fail(m, ret, "destination %s: writing its state in RESUMING failed: %s (%s)",
                 vfm_ep_name(m->cfg->dst[ev->device]), vfm_strerror(ret), vfm_err_name(ret));
        return ret;
    }
    pthread_mutex_lock(m->lock);
    m->rep->bytes += ev->len;
    m->rep->devices[ev->device].bytes += ev->len;
    pthread_mutex_unlock(m->lock);
    return 0;
}
/* switchover-ack: everything of device @dev before its INITIAL_END is
 * written into the destination (each write returned): say so, on the main
 * stream. Return: 0 or -errno (reported). */
static int answer_initial(struct mig *m, unsigned dev)
{
    uint8_t a[VFM_MS_ACK_SIZE];
    int ret;

    vfm_ms_put_initial_loaded(a, dev);
    pthread_mutex_lock(&m->wlock); /* the streams' threads answer on one stream */
    ret = mig_write_all(m, a, sizeof(a));
    pthread_mutex_unlock(&m->wlock);
    if (ret) {
        mig_fail(m, ret, "the answer to the sender (switchover-ack) failed: %s", vfm_strerror(ret));
        return ret;
    }
    pthread_mutex_lock(m->lock);
    m->rep->switchover_acks++;
    pthread_mutex_unlock(m->lock);
    return 0;
}
/* The sender uses @n streams: this receiver must be able to take the
 * others. Return: 0, or -EPROTO (reported). */
static int takes_many(struct mig *m, unsigned n)
{
    if (m->cfg->version >= 4 && m->cfg->accept_stream)
        return 0;
    mig_fail(m, -EPROTO,
             "the sender uses %u streams; this side takes one (vfiomig receive takes them; an "
             "embedder gives accept_stream)",
             n);
    return -EPROTO;
}
/* A decoder for one of the receiver's streams: the migration's id, its
 * RAM (the main stream's), and DATA_SC for the devices whose destination
 * checks its stream. Return: 0 or -errno. */
static int dec_setup(struct mig *m, struct vfm_ms_dec *d)
{
    int ret = vfm_ms_dec_init(d, m->cfg->ndev);

    if (!ret)
        ret = vfm_ms_dec_expect_id(d, m->id);
    if (!ret)
        ret = mig_ram_expect(m, d);
    for (unsigned i = 0; !ret && i < m->cfg->ndev; i++)
        if (m->sc[i])
            ret = vfm_ms_dec_allow_self_checked(d, i);
    return ret;
}
/* Stream @k's next bytes are a DATA_SC payload its destination takes by
 * its data fd: spliced there, never through this process. Return: 1 and
 * the DATA event (data NULL), 0 (not such bytes: read them), or -errno
 * (reported). */
static int pass_spliced(struct mig *m, unsigned k, struct vfm_ms_dec *d, int p[2],
                        struct vfm_ms_event *ev)
{
    const struct vfm_mig_transport *tp = k ? m->lanes[k].tp : m->tp;
    int from = k ? m->lanes[k].fd : m->fd, dfd, ret;
    uint32_t dev;
    size_t left;
    bool at_dst;

    if (tp || !vfm_ms_dec_passable(d, &dev, &left) || (dfd = vfm_ep_data_fd(m->cfg->dst[dev])) < 0)
        return 0;
    if (!m->spliceable[k]) /* once per stream, not per record */
        m->spliceable[k] = mig_spliceable(from) ? 1 : -1;
    if (m->spliceable[k] < 0)
        return 0;

    ret = mig_splice(m, from, dfd, left, p, &at_dst);
    if (ret) {
        if (!at_dst)
            stream_failed(m, d, ret);
        else
            mig_fail(m, ret, "destination %s: writing its state in RESUMING failed: %s (%s)",
                     vfm_ep_name(m->cfg->dst[dev]), vfm_strerror(ret), vfm_err_name(ret));
        return ret;
    }
    pthread_mutex_lock(m->lock);
    m->rep->stream_bytes += left;
    m->rep->stream_bytes_by[d->lane] += left;
    m->rep->spliced_bytes += left;
    pthread_mutex_unlock(m->lock);
    ret = vfm_ms_dec_passed(d, left, ev);
    if (ret < 0)
        mig_fail(m, ret, "%s", d->why);
    return ret;
}
/* Every wait of the receiver's streams ends (-ECANCELED). */
static void lanes_cancel(struct mig *m)
{
    if (m->cancel_wr >= 0) {
        ssize_t w = write(m->cancel_wr, "x", 1);
        (void)w;
    }
}
/* One of the other streams, on its own thread: its records checked and its
 * devices' state written, to its STREAM_END. */
static void *lane_main(void *arg)
{
    struct mig_lane *l = arg;
    struct mig *m = l->m;
    unsigned k = (unsigned)(l - m->lanes);
    int ret = 0;

    for (;;) {
        struct vfm_ms_event ev;
        uint8_t *where;
        size_t want = vfm_ms_dec_want(&l->dec, &where);

        if (!want)
            break; /* its end */
        ret = pass_spliced(m, k, &l->dec, l->pipe, &ev);
        if (ret < 0)
            break;
        if (ret == 0) {
            if ((ret = mig_lane_read_all(m, k, where, want))) {
                stream_failed(m, &l->dec, ret);
                break;
            }
            pthread_mutex_lock(m->lock);
            m->rep->stream_bytes += want;
            m->rep->stream_bytes_by[l->dec.lane] += want;
            pthread_mutex_unlock(m->lock);
            ret = vfm_ms_dec_commit(&l->dec, want, &ev);
        }
        if (ret < 0) {
            mig_fail(m, ret, "%s (stream %u of %u)", l->dec.why, l->dec.lane, m->nlanes);
            break;
        }
        if (ev.kind == VFM_MS_EV_DATA && (ret = take_data(m, &ev)))
            break;
        if (ev.kind == VFM_MS_EV_INITIAL_END && !m->cfg->one_way &&
            (ret = answer_initial(m, ev.device)))
            break;
        ret = 0;
    }
    if (ret)
        lanes_cancel(m);
    return (void *)(intptr_t)ret;
}
/* Waits for every stream thread. Return: the first failure, or 0. */
static int lanes_join(struct mig *m)
{
    int ret = 0;

    for (unsigned k = 1; k < m->nlanes; k++) {
        void *r;
        if (!m->lanes[k].running)
            continue;
        pthread_join(m->lanes[k].thread, &r);
        m->lanes[k].running = false;
        if (!ret && r)
            ret = (int)(intptr_t)r;
    }
    return ret;
}
/* The main header announced @ev->nlanes streams: the other connections,
 * their headers checked, each read on its own thread from now on. The
 * device list has arrived, so the destinations are in RESUMING.
 * Return: 0 or -errno (reported). */
static int lanes_open(struct mig *m, const struct vfm_ms_event *hdr)
{
    const struct vfm_mig_config *c = m->cfg;
    unsigned timeout = m->timeout_ms, seen = 1u;
    int ret = 0;

    m->timeout_ms = m->header_timeout_ms;
    /* those that came before the main one: of this migration? */
    for (unsigned e = 0; e < m->nearly && !ret; e++) {
        struct mig_lane *l, *x = &m->early[e];
        if (x->dec.nlanes != m->nlanes || x->dec.token != hdr->token) {
            ret = -EBADMSG;
            mig_fail(m, ret,
                     "a migration stream that connected before the main one is of another "
                     "migration (%u streams, its token %s)",
                     x->dec.nlanes, x->dec.token != hdr->token ? "differs" : "the same");
            break;
        }
        if (seen & (1u << x->dec.lane)) {
            ret = -EBADMSG;
            mig_fail(m, ret, "the migration's stream %u of %u connected twice", x->dec.lane,
                     m->nlanes);
            break;
        }
        if (e + 1 >= m->nlanes) { /* cannot be without a twice, kept as a bound */
            ret = -EBADMSG;
            mig_fail(m, ret, "%u streams connected before the main one, which announces %u in all",
                     m->nearly, m->nlanes);
            break;
        }
        l = &m->lanes[e + 1];
        seen |= 1u << x->dec.lane;
        l->fd = x->fd;
        l->tp = x->tp;
        l->m = m;
        l->dec = x->dec;
        memset(&x->dec, 0, sizeof(x->dec)); /* moved */
        pthread_mutex_lock(m->lock);
        m->rep->stream_bytes_by[0] -= VFM_MS_HDR_LANE_SIZE; /* counted as the main one's */
        m->rep->stream_bytes_by[l->dec.lane] += VFM_MS_HDR_LANE_SIZE;
        pthread_mutex_unlock(m->lock);
    }
    for (unsigned k = 1 + m->nearly; k < m->nlanes && !ret; k++) {
        struct mig_lane *l = &m->lanes[k];
        struct vfm_mig_stream st = {.fd = -1};
        struct vfm_ms_event ev;

        ret = c->accept_stream(c->accept_ctx, m->header_timeout_ms, &st);
        if (!ret && !stream_ok(&st))
            ret = -EBADF;
        if (ret) {
            mig_fail(m, ret, "the sender uses %u streams; only %u connected within %u ms: %s (%s)",
                     m->nlanes, k, m->header_timeout_ms, vfm_strerror(ret), vfm_err_name(ret));
            break;
        }
        l->fd = st.fd;
        l->tp = st.transport;
        l->m = m;
        if ((ret = dec_setup(m, &l->dec)) ||
            (ret = vfm_ms_dec_expect_lane(&l->dec, m->nlanes, hdr->token)))
            break;
        /* its header, whole, within the header's deadline */
        for (;;) {
            uint8_t *where;
            size_t want = vfm_ms_dec_want(&l->dec, &where);
            if ((ret = mig_lane_read_all(m, k, where, want))) {
                l->dec.lane = k; /* for the message: the order it connected in */
                stream_failed(m, &l->dec, ret);
                break;
            }
            ret = vfm_ms_dec_commit(&l->dec, want, &ev);
            if (ret < 0) {
                mig_fail(m, ret, "%s (the %u%s connection of %u)", l->dec.why, k + 1,
                         k == 1   ? "nd"
                         : k == 2 ? "rd"
                                  : "th",
                         m->nlanes);
                break;
            }
            if (ret) {
                ret = 0;
                break;
            }
        }
        if (ret)
            break;
        if (seen & (1u << ev.lane)) {
            ret = -EBADMSG;
            mig_fail(m, ret, "the migration's stream %u of %u connected twice", ev.lane, m->nlanes);
            break;
        }
        seen |= 1u << ev.lane;
        pthread_mutex_lock(m->lock);
        m->rep->stream_bytes += VFM_MS_HDR_LANE_SIZE;
        m->rep->stream_bytes_by[ev.lane] += VFM_MS_HDR_LANE_SIZE;
        pthread_mutex_unlock(m->lock);
    }
    m->timeout_ms = timeout;
    for (unsigned k = 1; k < m->nlanes && !ret; k++) {
        if (pthread_create(&m->lanes[k].thread, NULL, lane_main, &m->lanes[k])) {
            ret = -EAGAIN;
            mig_fail(m, ret, "no thread for the migration's stream %u of %u", k, m->nlanes);
            break;
        }
        m->lanes[k].running = true;
    }
    return ret;
}
/* The main header says @ev->nlanes streams: ready the others' state and
 * the pipe that cancels their waits. Return: 0 or -errno (reported). */
static int lanes_expect(struct mig *m, const struct vfm_ms_event *ev)
{
    int p[2], ret;

    m->rep->nstreams = ev->nlanes;
    if (ev->nlanes <= 1 && m->nearly) {
        mig_fail(m, -EBADMSG,
                 "one of many migration streams connected, and then a single stream's header "
                 "came");
        return -EBADMSG;
    }
    if (ev->nlanes <= 1)
        return 0;
    if ((ret = takes_many(m, ev->nlanes)))
        return ret;
    if (lanes_new(m, ev->nlanes))
        return -ENOMEM;
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
        ret = -errno;
        mig_fail(m, ret, "no pipe for the migration's streams: %s", vfm_strerror(ret));
        return ret;
    }
    m->cancel_fd = p[0];
    m->cancel_wr = p[1];
    m->token = ev->token;
    return 0;
}
/* The end of the receiver's streams: every thread waited for, the pipe
 * closed. */
static void lanes_close(struct mig *m)
{
    if (m->cancel_fd < 0)
        return;
    lanes_cancel(m);
    lanes_join(m);
    close(m->cancel_fd);
    close(m->cancel_wr);
    m->cancel_fd = m->cancel_wr = -1;
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
            mig_note(m, "destination %s: its source was stopped; it is loaded and left in STOP",
                     vfm_ep_name(m->cfg->dst[i]));
        if ((f & VFM_MIGRATION_P2P) != (m->flags[i] & VFM_MIGRATION_P2P) ||
            !(m->flags[i] & VFM_MIGRATION_STOP_COPY)) {
            mig_fail(m, -EINVAL,
                     "destination %s does not match its source (flags 0x%x, source 0x%x)",
                     vfm_ep_name(m->cfg->dst[i]), m->flags[i], f);
            return -EINVAL;
        }
    }
    return dst_prepare(m) ?: mig_run_plan(m, mig_plan_resume, false, NULL);
}
/* The connection @d read a header from is one of the other streams, come
 * before the main one (a listener takes connections in any order): it is
 * kept, its header read, and the next connection is taken as the main
 * one, read by a fresh @d. Return: 0 or -errno (reported). */
static int early_lane(struct mig *m, struct vfm_ms_dec *d)
{
    const struct vfm_mig_config *c = m->cfg;
    struct vfm_mig_stream st = {.fd = -1};
    struct mig_lane *x;
    int ret;

    if ((ret = takes_many(m, d->nlanes)))
        return ret;
    if (!m->early && !(m->early = calloc(VFM_MIG_MAX_STREAMS, sizeof(*m->early))))
        return -ENOMEM;
    if (m->nearly == VFM_MIG_MAX_STREAMS - 1) {
        mig_fail(m, -EBADMSG, "%u streams connected, none of them the main one", m->nearly + 1);
        return -EBADMSG;
    }
    x = &m->early[m->nearly++];
    x->fd = m->fd;
    x->tp = m->tp;
    x->dec = *d; /* its payload buffer, if any, moves with it */
    ret = c->accept_stream(c->accept_ctx, m->header_timeout_ms, &st);
    if (!ret && !stream_ok(&st))
        ret = -EBADF;
    if (ret) {
        mig_fail(m, ret,
                 "the migration's stream %u of %u connected, and the main one did not "
                 "within %u ms: %s (%s)",
                 d->lane, d->nlanes, m->header_timeout_ms, vfm_strerror(ret), vfm_err_name(ret));
        memset(d, 0, sizeof(*d)); /* moved */
        return ret;
    }
    m->fd = st.fd;
    m->tp = st.transport;
    return dec_setup(m, d);
}
static void early_free(struct mig *m)
{
    for (unsigned e = 0; e < m->nearly; e++)
        vfm_ms_dec_release(&m->early[e].dec);
    free(m->early);
    m->early = NULL;
    m->nearly = 0;
}

/* Reads the stream (decoded and checked by src/migrate/mstream.c) and
 * loads the destinations (they start on the commit). */
static int receive(struct mig *m)
{
    struct vfm_ms_dec d;
    struct vfm_ms_event hdr = {0};
    unsigned timeout = m->timeout_ms;
    bool header = false;
    int ret;

    for (unsigned i = 0; i < m->cfg->ndev; i++) /* checks its stream itself: DATA_SC taken */
        m->sc[i] = vfm_ep_self_checked(m->cfg->dst[i]);
    if ((ret = dec_setup(m, &d)))
        return ret;
    /* until the header is whole, a silent peer is waited for only so long */
    m->timeout_ms = m->header_timeout_ms;
    for (;;) {
        struct vfm_ms_event ev;
        uint8_t *where;
        size_t want = vfm_ms_dec_want(&d, &where);

        if (!want)
            break; /* the end */
        ret = pass_spliced(m, 0, &d, m->pipe, &ev);
        if (ret < 0)
            goto out;
        if (ret == 0) {
            ret = mig_read_all(m, where, want);
            if (ret) {
                stream_failed(m, &d, ret);
                goto out;
            }
            pthread_mutex_lock(m->lock);
            m->rep->stream_bytes += want;
            m->rep->stream_bytes_by[0] += want;
            pthread_mutex_unlock(m->lock);
            ret = vfm_ms_dec_commit(&d, want, &ev);
        }
        if (ret < 0) {
            char ln[40];
            mig_fail(m, ret, "%s%s", d.why, lane_name(m, 0, ln, sizeof(ln)));
            goto out;
        }
        if (ev.kind == VFM_MS_EV_HEADER && ev.lane != 0) {
            /* one of the other streams connected first: kept, and the main
             * one awaited on the next connection */
            if ((ret = early_lane(m, &d)))
                goto out;
            continue;
        }
        if (ev.kind == VFM_MS_EV_HEADER) {
            header = true;
            m->timeout_ms = timeout;
            hdr = ev;
            if ((ret = lanes_expect(m, &ev)))
                goto out;
        }
        if (ev.kind == VFM_MS_EV_DEVICES &&
            ((ret = take_devices(m, ev.flags)) || (m->nlanes > 1 && (ret = lanes_open(m, &hdr)))))
            goto out;
        if ((ev.kind == VFM_MS_EV_RAM || ev.kind == VFM_MS_EV_RAM_END) &&
            (ret = mig_ram_take(m, &ev)))
            goto out;
        if (ev.kind == VFM_MS_EV_INITIAL_END && !m->cfg->one_way &&
            (ret = answer_initial(m, ev.device)))
            goto out;
        if (ev.kind == VFM_MS_EV_DATA && (ret = take_data(m, &ev)))
            goto out;
    }
    /* every other stream to its end too, before anything loads */
    ret = lanes_join(m);
    if (!ret)
        ret = mig_run_plan(m, mig_plan_load, false, NULL);
out:
    if (ret)
        lanes_cancel(m);
    lanes_close(m);
    if (ret == -ECANCELED && m->rep->error)
        ret = m->rep->error; /* another stream's thread failed first: its cause */
    early_free(m);
    pipe_close(m->pipe);
    /* no stream of this migration came (silence, garbage, another
     * migration's header): no destination was touched */
    m->rep->refused = !header && ret && !d.header_valid;
    m->timeout_ms = timeout;
    vfm_ms_dec_release(&d);
    return ret;
}
static void phase_mark(struct vfm_mig_report *rep, enum vfm_mig_phase p, int64_t *t)
{
    int64_t n = mig_now_ns();
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
    if (cfg->version >= 2 &&
        ((cfg->id && !vfm_ms_id_valid(cfg->id)) ||
         (cfg->transport && (!cfg->transport->read || !cfg->transport->write))))
        return -EINVAL;
    if (mig_ram_check(cfg))
        return -EINVAL;
    if (cfg->version >= 4 && cfg->nstreams > VFM_MIG_MAX_STREAMS)
        return -EINVAL;
    return !cfg->ndev || cfg->ndev > VFM_MIG_MAX_DEVICES || !eps ? -EINVAL : 0;
}
/* The report's per-device entries. */
static int report_devices(struct vfm_mig_report *rep, unsigned ndev)
{
    rep->devices = calloc(ndev, sizeof(*rep->devices));
    if (!rep->devices)
        return -ENOMEM;
    rep->ndev = ndev;
    return 0;
}

const struct vfm_mig_dev_report *vfm_mig_report_device(const struct vfm_mig_report *r, unsigned i)
{
    return r && r->devices && i < r->ndev ? &r->devices[i] : NULL;
}

static int read_flags(struct mig *m, int side)
{
    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        int ret = vfm_ep_flags(mig_ep(m, side, i), &m->flags[i]);
        if (ret) {
            mig_fail(m, ret, "%s %s: cannot read its migration flags: %s",
                     side ? "destination" : "source", vfm_ep_name(mig_ep(m, side, i)),
                     vfm_strerror(ret));
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
    m->header_timeout_ms = m->timeout_ms;
    if (cfg && cfg->version >= 2) { /* the members a version-1 caller lacks */
        m->tp = cfg->transport;
        m->id = cfg->id;
        if (cfg->header_timeout_ms)
            m->header_timeout_ms = cfg->header_timeout_ms;
    }
    m->phase = VFM_PHASE_SAVE;
    m->nlanes = 1;
    m->cancel_fd = m->cancel_wr = -1;
    m->pipe[0] = m->pipe[1] = -1;
    for (unsigned i = 0; i < VFM_MIG_MAX_DEVICES; i++)
        m->cur[i] = VFM_STATE_COUNT;
    rep->expected_downtime_ns = -1;
    pthread_mutex_init(&m->wlock, NULL);
}
/* The next message of the commit, which must be @kind. Return: 0 and
 * *@status; -ETIMEDOUT; -EPIPE (the stream ended); -EBADMSG. */
static int answer(struct mig *m, enum vfm_ms_ans kind, int32_t *status)
{
    uint8_t a[VFM_MS_ACK_SIZE];
    int ret = mig_read_all(m, a, sizeof(a));

    return ret ? ret : vfm_ms_get_ack(a, kind, status);
}

/* A message of the commit did not come (@aret): this side cannot know the
 * outcome, and says so (@what). Return: the side's result. */
static int unknown_outcome(struct mig *m, int aret, const char *what)
{
    int ret = aret == -ETIMEDOUT ? aret : -EPIPE;

    m->rep->outcome_unknown = true;
    mig_fail(m, ret, "outcome unknown (%s): %s", vfm_strerror(aret), what);
    return ret;
}

/* The sender's COMMIT, or its ABORT (*@abort). Return: 0, or as answer(). */
static int commit_or_abort(struct mig *m, bool *abort)
{
    uint8_t a[VFM_MS_ACK_SIZE];
    int32_t status;
    int ret = mig_read_all(m, a, sizeof(a));

    if (ret)
        return ret;
    *abort = vfm_ms_get_ack(a, VFM_MS_ANS_ABORT, &status) == 0;
    return *abort ? 0 : vfm_ms_get_ack(a, VFM_MS_ANS_COMMIT, &status);
}

/* The other streams' state (1..@n-1). Return: 0 or -ENOMEM. */
static int lanes_new(struct mig *m, unsigned n)
{
    m->lanes = calloc(n, sizeof(*m->lanes));
    if (!m->lanes)
        return -ENOMEM;
    m->nlanes = n;
    for (unsigned k = 1; k < n; k++) {
        m->lanes[k].fd = -1;
        m->lanes[k].pipe[0] = m->lanes[k].pipe[1] = -1;
        pthread_mutex_init(&m->lanes[k].wlock, NULL);
    }
    return 0;
}
static void lanes_free(struct mig *m)
{
    if (!m->lanes)
        return;
    for (unsigned k = 1; k < m->nlanes; k++) {
        vfm_ms_dec_release(&m->lanes[k].dec);
        pthread_mutex_destroy(&m->lanes[k].wlock);
        pipe_close(m->lanes[k].pipe);
    }
    free(m->lanes);
    m->lanes = NULL;
    m->nlanes = 1;
}
/* The sender's other streams (cfg->streams), checked. Return: 0 or
 * -EINVAL (reported). */
static int send_lanes(struct mig *m)
{
    const struct vfm_mig_config *c = m->cfg;
    unsigned n = c->version >= 4 && c->nstreams > 1 ? c->nstreams : 1;

    m->rep->nstreams = n;
    if (n == 1)
        return 0;
    if (c->one_way || (!c->streams && !c->connect_stream)) {
        mig_fail(m, -EINVAL, "%u streams: %s", n,
                 c->one_way ? "a one-way stream (a file, a pipe) is one stream"
                            : "the other streams' connections were not given");
        return -EINVAL;
    }
    for (unsigned k = 1; c->streams && k < n; k++) {
        const struct vfm_mig_stream *st = &c->streams[k - 1];
        if (!stream_ok(st)) {
            mig_fail(m, -EINVAL, "stream %u of %u: no connection", k, n);
            return -EINVAL;
        }
    }
    if (lanes_new(m, n))
        return -ENOMEM;
    if (getrandom(&m->token, sizeof(m->token), 0) != sizeof(m->token))
        m->token = (uint64_t)mig_now_ns() ^ ((uint64_t)getpid() << 32);
    return 0;
}
/* The sender's header on stream @k (0: the main one). Return: 0 or
 * -errno. */
static int put_header(struct mig *m, unsigned k)
{
    uint8_t h[VFM_MS_HDR_LANE_SIZE];
    size_t hs = m->nlanes > 1 ? VFM_MS_HDR_LANE_SIZE : VFM_MS_HDR_SIZE;
    int ret;

    if (m->nlanes > 1)
        vfm_ms_put_lane_header(h, m->cfg->ndev, m->id, k, m->nlanes, m->token);
    else
        vfm_ms_put_header(h, m->cfg->ndev, m->id);
    if ((ret = mig_lane_write_all(m, k, h, hs)))
        return ret;
    m->rep->stream_bytes += hs; /* as the receiver counts: every byte */
    m->rep->stream_bytes_by[k] += hs;
    return 0;
}
/* The device list is on the main stream: the other streams, connected
 * (cfg->connect_stream) or given, each with its header. Return: 0 or
 * -errno (reported). */
static int lanes_connect(struct mig *m)
{
    const struct vfm_mig_config *c = m->cfg;
    int ret = 0;

    for (unsigned k = 1; k < m->nlanes && !ret; k++) {
        struct vfm_mig_stream st = {.fd = -1};
        if (c->streams)
            st = c->streams[k - 1];
        else if ((ret = c->connect_stream(c->connect_ctx, k, m->timeout_ms, &st)) == 0 &&
                 !stream_ok(&st))
            ret = -EBADF;
        if (ret) {
            mig_fail(m, ret, "the migration's stream %u of %u could not be connected: %s (%s)", k,
                     m->nlanes, vfm_strerror(ret), vfm_err_name(ret));
            break;
        }
        m->lanes[k].fd = st.fd;
        m->lanes[k].tp = st.transport;
        if ((ret = put_header(m, k)))
            mig_fail(m, ret, "the migration's stream %u of %u failed: %s", k, m->nlanes,
                     vfm_strerror(ret));
    }
    return ret;
}

int vfm_migrate_send(const struct vfm_mig_config *cfg, int fd, struct vfm_mig_report *rep)
{
    struct mig_shared sh = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct mig m;
    int32_t status = 0;
    int ret, aret = 0;
    bool bounded = false, too_late = false;
    int64_t t;

    mig_init(&m, &sh, cfg, rep, fd);
    if ((ret = check_config(cfg, cfg ? cfg->src : NULL)) || (ret = report_devices(rep, cfg->ndev)))
        return ret;
    if ((ret = send_lanes(&m)) || (ret = read_flags(&m, 0))) {
        lanes_free(&m);
        return ret;
    }
    for (unsigned i = 0; i < cfg->ndev; i++) /* checked where it loads: sent unhashed */
        m.sc[i] = vfm_ep_self_checked(cfg->src[i]);
    for (unsigned i = 0; i < cfg->ndev; i++) {
        uint64_t est;
        if (vfm_ep_data_size(cfg->src[i], &est) == 0)
            m.total_est += est;
    }

    t = rep->t_start_ns = mig_now_ns();
    ret = src_prepare(&m);
    if (!ret) {
        uint32_t list[VFM_MIG_MAX_DEVICES];
        for (unsigned i = 0; i < cfg->ndev; i++)
            list[i] = m.flags[i] | (m.stopped[i] ? VFM_MS_STOPPED : 0);
        ret = put_header(&m, 0);
        if (!ret) /* every device's flags: the receiver checks its own against them */
            ret = mig_put_record(&m, VFM_MS_DEVICES, 0, list, cfg->ndev * sizeof(uint32_t));
        if (ret)
            mig_fail(&m, ret, "the migration stream failed: %s", vfm_strerror(ret));
        else if (!(ret = lanes_connect(&m))) /* the receiver takes them now */
            ret = mig_ram_begin(&m); /* guest RAM: its list, the sources' dirty logs started */
    }
    for (unsigned i = 0; i < cfg->ndev; i++) {
        m.pc[i] = !cfg->no_precopy && !m.stopped[i] && (m.flags[i] & VFM_MIGRATION_PRE_COPY);
        rep->precopy_devices += m.pc[i];
    }
    if (!ret && (rep->precopy_devices || m.ram)) {
        /* 0. pre-copy, the VM running (devices with PRE_COPY; guest RAM) */
        ret = mig_precopy(&m);
        rep->bytes += rep->precopy_bytes;
        phase_mark(rep, VFM_PHASE_PRECOPY, &t);
    }
    rep->t_switch_ns = mig_now_ns();
    if (cfg->max_downtime_ms && !cfg->one_way)
        m.downtime_deadline_ns = rep->t_switch_ns + (int64_t)cfg->max_downtime_ms * 1000000;
    /* quiesce (no device issues P2P once it has ended), stop, save */
    if (!ret)
        ret = mig_run_plan(&m, mig_plan_switchover, false, &t);
    /* every source stopped: no device writes the RAM any more */
    if (!ret && m.ram) {
        ret = mig_ram_end(&m);
        phase_mark(rep, VFM_PHASE_SAVE, &t);
    }
    if (!ret) {
        /* every other stream ends once its devices did, then the main one */
        for (unsigned k = 1; k < m.nlanes && !ret; k++)
            ret = mig_put_record_on(&m, k, VFM_MS_STREAM_END, 0, NULL, 0);
        if (!ret)
            ret = mig_put_record(&m, VFM_MS_STREAM_END, 0, NULL, 0);
        if (ret == -ETIME)
            mig_fail(&m, ret,
                     "the downtime passed %u ms (--max-downtime) before the stream's end "
                     "was sent: the migration was aborted",
                     cfg->max_downtime_ms);
        else if (ret)
            mig_fail(&m, ret, "the migration stream failed: %s", vfm_strerror(ret));
    }
    for (unsigned k = 1; k < m.nlanes; k++)
        if (m.lanes[k].fd >= 0)
            mig_lane_shutdown_write(&m, k); /* they carry nothing more either way */
    if (ret)
        mig_shutdown_write(&m); /* the receiver sees the stream end early */
    /* the receiver loads, answers LOADED; then the commit (migrate.h). With
     * a downtime bound, LOADED is awaited no longer than the bound allows. */
    if (!cfg->one_way) {
        unsigned wait = m.timeout_ms;
        if (!ret && cfg->max_downtime_ms) {
            int64_t left =
                (int64_t)cfg->max_downtime_ms - (mig_now_ns() - rep->t_switch_ns) / 1000000;
            if (left < 1)
                left = 1;
            if ((uint64_t)left < m.timeout_ms) {
                m.timeout_ms = (unsigned)left;
                bounded = true;
            }
        }
        if (m.early_loaded) /* read during pre-copy (a failure): not awaited again */
            status = m.early_status;
        else
            aret = answer(&m, VFM_MS_ANS_LOADED, &status);
        m.timeout_ms = wait;
        m.downtime_deadline_ns = 0; /* past LOADED, a longer downtime is only reported */
        too_late = !ret && cfg->max_downtime_ms &&
                   (((aret == -ETIMEDOUT || aret == -ETIME) && bounded) || aret == -ETIME ||
                    (!aret && !status &&
                     mig_now_ns() - rep->t_switch_ns > (int64_t)cfg->max_downtime_ms * 1000000));
        if (ret && !aret && status == -EACCES && (ret == -EPIPE || ret == -ECONNRESET)) {
            /* the stream broke because the receiver refused it (another
             * migration's id), and its answer says so: that is the failure,
             * not the broken pipe. (Any other answer is the receiver seeing
             * this side's own failure: the sender's message stands.) */
            pthread_mutex_lock(m.lock);
            ret = rep->error = status;
            snprintf(rep->message, sizeof(rep->message),
                     "the receiving side refused the stream: %s (%s)%s", vfm_strerror(status),
                     vfm_err_name(status),
                     status == -EACCES ? ": it expects another migration id (--id)" : "");
            pthread_mutex_unlock(m.lock);
            rep->remote_failure = true;
        }
    }
    if (cfg->one_way) {
        /* nobody answers a file: the state is saved, the sources stay stopped */
    } else if (too_late) {
        /* too late to commit: the receiver starts nothing without it, and
         * resets its destinations on the ABORT */
        uint8_t c[VFM_MS_ACK_SIZE];
        vfm_ms_put_ack(c, VFM_MS_ANS_ABORT, -ETIME);
        mig_write_all(&m, c, sizeof(c));
        ret = -ETIME;
        mig_fail(&m, ret,
                 "the downtime passed %u ms (--max-downtime) before every destination had "
                 "loaded: the migration was aborted",
                 cfg->max_downtime_ms);
    } else if (aret) {
        if (!ret) {
            ret = aret == -ETIMEDOUT ? aret : -EPIPE;
            rep->remote_failure = true;
        }
        if (aret == -ETIMEDOUT)
            mig_fail(&m, ret, "no answer from the receiving side within %u ms", m.timeout_ms);
        else
            mig_fail(&m, ret, "no answer from the receiving side: it failed or went away");
    } else if (status && !ret) {
        ret = status;
        rep->remote_failure = true;
        if (status == -EACCES)
            mig_fail(&m, ret,
                     "the receiving side refused the stream: %s (%s): it expects another "
                     "migration id (--id)",
                     vfm_strerror(ret), vfm_err_name(ret));
        else
            mig_fail(&m, ret, "the receiving side failed: %s (%s)", vfm_strerror(ret),
                     vfm_err_name(ret));
    } else if (!ret) {
        /* every destination is loaded and stopped: commit. From here the
         * sources are never rolled back, whatever comes or does not. */
        uint8_t c[VFM_MS_ACK_SIZE];
        vfm_ms_put_ack(c, VFM_MS_ANS_COMMIT, 0);
        rep->committed = true;
        aret = mig_write_all(&m, c, sizeof(c));
        if (!aret)
            aret = answer(&m, VFM_MS_ANS_RUNNING, &status);
        if (aret) {
            ret = unknown_outcome(&m, aret,
                                  "the commit was sent, the receiving side's answer did not "
                                  "come; the sources stay stopped with their state intact, "
                                  "and the destinations may be running");
        } else if (status) {
            /* the receiver says its destinations failed to start and were
             * reset: none runs, so the sources may come back */
            ret = status;
            rep->remote_failure = true;
            mig_fail(&m, ret, "the receiving side failed to start its devices: %s (%s)",
                     vfm_strerror(ret), vfm_err_name(ret));
        }
    }
    mig_shutdown_write(&m); /* the stream is over either way */
    phase_mark(rep, VFM_PHASE_LOAD, &t);
    if (!ret) {
        rep->t_end_ns = mig_now_ns(); /* the answer comes once all destinations run */
        rep->downtime_ns = rep->t_end_ns - rep->t_switch_ns;
        mig_run_plan(&m, mig_plan_finish, false, NULL);
    } else if (rep->outcome_unknown) {
        /* never back: the destinations may run. Stopped, state intact. */
        mig_run_plan(&m, mig_plan_finish, false, NULL);
    } else {
        /* only what the engine touched is brought back (a source refused
         * before any request is left as it was found) */
        for (unsigned i = 0; i < cfg->ndev; i++)
            rep->rolled_back |= m.touched[i];
        mig_run_plan(&m, mig_plan_rollback, true, &t);
    }
    mig_ram_free(&m);
    vfm_pool_free(m.pool);
    lanes_free(&m);
    pthread_mutex_destroy(&m.wlock);
    return ret;
}
/* The receiver failed while the sender may still be sending: takes what
 * comes on every stream until each ends (or stays silent for the
 * stream's timeout), so the sender can finish, read the answer and roll
 * back. */
static void sink(struct mig *m)
{
    bool open[VFM_MIG_MAX_STREAMS] = {false};
    unsigned left = 0;

    for (unsigned k = 0; k < m->nlanes; k++)
        if (!k || m->lanes[k].fd >= 0)
            open[k] = true, left++;
    while (left) {
        struct pollfd p[VFM_MIG_MAX_STREAMS];
        unsigned idx[VFM_MIG_MAX_STREAMS], np = 0;
        int n;

        for (unsigned k = 0; k < m->nlanes; k++) {
            const struct vfm_mig_transport *tp = k ? m->lanes[k].tp : m->tp;
            if (!open[k])
                continue;
            p[np] = (struct pollfd){.fd = k ? m->lanes[k].fd : m->fd, .events = POLLIN};
            /* bytes a transport holds are there at once */
            p[np].revents = tp && tp->pending && tp->pending(tp->ctx) ? POLLIN : 0;
            idx[np++] = k;
        }
        n = 0;
        for (unsigned i = 0; i < np; i++)
            n += p[i].revents != 0;
        if (!n)
            do
                n = poll(p, np, (int)m->timeout_ms);
            while (n < 0 && errno == EINTR);
        if (n <= 0)
            return;
        for (unsigned i = 0; i < np; i++) {
            char buf[65536];
            ssize_t r;
            if (!p[i].revents)
                continue;
            r = mig_lane_read_some(m, idx[i], buf, sizeof(buf));
            if (r == 0 || (r < 0 && r != -EAGAIN)) {
                open[idx[i]] = false;
                left--;
            }
        }
    }
}
int vfm_migrate_receive(const struct vfm_mig_config *cfg, int fd, struct vfm_mig_report *rep)
{
    struct mig_shared sh = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct mig m;
    uint8_t a[VFM_MS_ACK_SIZE];
    int64_t t_running = 0;
    int ret, aret;

    mig_init(&m, &sh, cfg, rep, fd);
    if ((ret = check_config(cfg, cfg ? cfg->dst : NULL)) || (ret = report_devices(rep, cfg->ndev)))
        return ret;
    rep->t_start_ns = mig_now_ns();
    ret = read_flags(&m, 1);
    if (!ret)
        ret = receive(&m); /* every destination loaded and stopped */
    if (ret && !rep->refused) {
        mig_run_plan(&m, mig_plan_discard, true, NULL); /* never run on bad state */
    } else if (ret) {
        /* refused at the header: the destinations are as they were */
    } else if (cfg->one_way) {
        /* a file: no one to agree with; what is loaded runs */
        ret = mig_run_plan(&m, mig_plan_start, false, NULL);
        t_running = mig_now_ns();
        if (ret)
            mig_run_plan(&m, mig_plan_discard, true, NULL);
    }
    if (!cfg->one_way) {
        vfm_ms_put_ack(a, VFM_MS_ANS_LOADED, ret);
        aret = mig_write_all(&m, a, sizeof(a));
        if (!ret) {
            /* start nothing without the sender's commit */
            bool abort = false;
            if (!aret)
                aret = commit_or_abort(&m, &abort);
            if (!aret && abort) {
                ret = -ECANCELED;
                mig_run_plan(&m, mig_plan_discard, true, NULL);
                mig_fail(&m, ret,
                         "the sending side aborted before the commit (its downtime "
                         "bound passed): the destinations were reset, none started");
            } else if (aret) {
                ret = unknown_outcome(&m, aret,
                                      "no commit from the sending side; the destinations stay "
                                      "loaded and stopped, not started, and the sources may be "
                                      "running");
            } else {
                rep->committed = true;
                ret = mig_run_plan(&m, mig_plan_start, false, NULL);
                t_running = mig_now_ns();
                if (ret) /* none runs on a half start: the sources come back */
                    mig_run_plan(&m, mig_plan_discard, true, NULL);
                vfm_ms_put_ack(a, VFM_MS_ANS_RUNNING, ret);
                mig_write_all(&m, a, sizeof(a)); /* lost: the sender says it cannot know */
            }
        } else if (!rep->refused) {
            /* the sender may still be sending: take the rest of the stream
             * until it ends, so it can finish, read our answer, and roll back */
            sink(&m);
        }
    }
    if (!ret) {
        rep->t_end_ns = t_running;
        dst_phases(rep);
    }
    mig_ram_free(&m);
    vfm_pool_free(m.pool);
    lanes_free(&m);
    pthread_mutex_destroy(&m.wlock);
    return ret;
}
struct receiver {
    const struct vfm_mig_config *cfg;
    int fd;
    struct vfm_mig_report rep;
    int ret;
    /* many streams: the receiving ends, handed out last first (the
     * receiver takes them in any order) */
    int lane_fd[VFM_MIG_MAX_STREAMS];
    unsigned nlanes, next;
};
static int local_accept(void *ctx, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct receiver *r = ctx;

    (void)timeout_ms;
    if (r->next >= r->nlanes - 1)
        return -ETIMEDOUT; /* every one was given */
    out->fd = r->lane_fd[r->nlanes - 1 - r->next++];
    out->transport = NULL;
    return 0;
}
static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    r->ret = vfm_migrate_receive(r->cfg, r->fd, &r->rep);
    return NULL;
}
int vfm_migrate_local(const struct vfm_mig_config *cfg, struct vfm_mig_report *rep)
{
    struct vfm_mig_config rcfg, scfg;
    struct receiver rx = {.cfg = &rcfg};
    struct vfm_mig_stream lanes[VFM_MIG_MAX_STREAMS];
    int lsv[VFM_MIG_MAX_STREAMS][2];
    unsigned nl = 1;
    pthread_t rxt;
    int sv[2], ret;

    memset(rep, 0, sizeof(*rep));
    if ((ret = check_config(cfg, cfg ? cfg->src : NULL)) || (ret = check_config(cfg, cfg->dst)))
        return ret;
    rcfg = *cfg;
    if (mig_nram(cfg)) {
        /* the receiver writes the destination's RAM, never the source's */
        if (!cfg->dst_ram)
            return -EINVAL;
        for (unsigned i = 0; i < cfg->nram; i++)
            if (!cfg->dst_ram[i].base || cfg->dst_ram[i].base == cfg->ram[i].base ||
                cfg->dst_ram[i].iova != cfg->ram[i].iova ||
                cfg->dst_ram[i].size != cfg->ram[i].size)
                return -EINVAL;
        rcfg.ram = cfg->dst_ram;
    }
    scfg = *cfg;
    if (cfg->version >= 4 && cfg->nstreams > 1 && !cfg->one_way)
        nl = cfg->nstreams;
    /* the socket pairs: the main stream's, and one per other stream */
    for (unsigned k = 0; k < nl; k++) {
        int *p = k ? lsv[k] : sv;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0) {
            ret = -errno;
            while (k-- > 0) {
                close(k ? lsv[k][0] : sv[0]);
                close(k ? lsv[k][1] : sv[1]);
            }
            return ret;
        }
        vfm_sock_bulk(p[0]);
        vfm_sock_bulk(p[1]);
        if (k) {
            lanes[k - 1] = (struct vfm_mig_stream){.fd = p[0]};
            rx.lane_fd[k] = p[1];
        }
    }
    if (nl > 1) {
        scfg.streams = lanes;
        rcfg.accept_stream = local_accept;
        rcfg.accept_ctx = &rx;
    }
    rx.nlanes = nl;
    rx.lane_fd[0] = -1;
    rx.fd = sv[1];
    if (pthread_create(&rxt, NULL, receiver_main, &rx)) {
        ret = -EAGAIN;
    } else {
        ret = vfm_migrate_send(&scfg, sv[0], rep);
        pthread_join(rxt, NULL);
    }
    for (unsigned k = 0; k < nl; k++) {
        close(k ? lsv[k][0] : sv[0]);
        close(k ? lsv[k][1] : sv[1]);
    }
    if (ret == -EAGAIN && !rep->ndev)
        return ret;

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
    rep->ram_match = rx.rep.ram_match;
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
    free(r->devices);
    r->devices = NULL;
}