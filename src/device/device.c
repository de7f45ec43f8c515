/* SPDX-License-Identifier: MIT */
/*
 * The device runtime (include/vfiomig/device.h): one device's migration
 * state, stepped arc by arc through its author's callbacks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <vfiomig/device.h>
#include <vfiomig/fsm.h>

#include "../common/internal.h"
#include "device_internal.h"

struct vfm_device {
    char *name;
    uint32_t compat;
    uint32_t flags;
    const struct vfm_mig_ops *mig;
    const struct vfm_p2p_ops *p2p;
    const struct vfm_precopy_ops *pre;
    void *priv;
    uint64_t max_state;
    const struct vfm_dma_log_ops *dma_log;
    void *dma_log_ctx;
    /* mig->save_buffer, from a version 3 config (NULL otherwise) */
    void *(*save_buffer)(struct vfm_device *dev, void *priv, size_t *len);
    /* a version 5 config's pieces_by_reference */
    bool pieces_by_ref;
    /* mig->save_begin and save_piece, from a version 4 config */
    int (*save_begin)(struct vfm_device *dev, void *priv, uint64_t *len);
    int (*save_piece)(struct vfm_device *dev, void *priv, uint64_t offset, size_t max,
                      const void **data, size_t *n);

    pthread_mutex_t state_lock; /* serialises transitions, GET, reset */
    uint32_t state;             /* under state_lock */
    pthread_t cb_thread;        /* the thread inside a callback, if any */
    bool in_callback;
    bool broken; /* set by vfm_device_mark_broken() */

    pthread_mutex_t reset_lock; /* guards deferred_reset; see state_unlock() */
    bool deferred_reset;

    pthread_mutex_t data_lock; /* guards sess for the data calls */
    struct vfm_session sess;

    /* MIG_PRECOPY_INFOv2: the client opted in (until it goes); new initial
     * data announced and not yet reported. Under state_lock. */
    bool precopy_v2;
    bool reinit;
};

static int do_reset(struct vfm_device *dev);
static void state_lock(struct vfm_device *dev);

/*
 * Releases the state lock, first performing any reset that arrived while it
 * was held. The state lock is released with reset_lock held, so a reset
 * request either is seen here or finds the state lock free and performs
 * itself: none is lost.
 */
static int state_unlock(struct vfm_device *dev)
{
    int ret = 0;

    for (;;) {
        pthread_mutex_lock(&dev->reset_lock);
        if (!dev->deferred_reset)
            break;
        dev->deferred_reset = false;
        pthread_mutex_unlock(&dev->reset_lock);
        ret = do_reset(dev);
    }
    pthread_mutex_unlock(&dev->state_lock);
    pthread_mutex_unlock(&dev->reset_lock);
    return ret;
}

static int check_ops(const struct vfm_device_config *cfg)
{
    const struct vfm_mig_ops *m = cfg->mig;
    const struct vfm_p2p_ops *p = cfg->p2p;
    const struct vfm_precopy_ops *pc = cfg->precopy;
    const char *missing = NULL;

    if (!m)
        missing = "mig ops";
    else if (!m->save)
        missing = "mig->save";
    else if (!m->load)
        missing = "mig->load";
    else if (!m->reset)
        missing = "mig->reset";
    else if (!p && !m->running_to_stop)
        missing = "mig->running_to_stop (needed without P2P)";
    else if (!p && !m->stop_to_running)
        missing = "mig->stop_to_running (needed without P2P)";
    else if (p && !p->running_to_running_p2p)
        missing = "p2p->running_to_running_p2p";
    else if (p && !p->running_p2p_to_running)
        missing = "p2p->running_p2p_to_running";
    else if (p && !p->running_p2p_to_stop)
        missing = "p2p->running_p2p_to_stop";
    else if (p && !p->stop_to_running_p2p)
        missing = "p2p->stop_to_running_p2p";
    else if (pc && !pc->start)
        missing = "precopy->start";
    else if (pc && !pc->end)
        missing = "precopy->end";
    else if (pc && !pc->save_precopy)
        missing = "precopy->save_precopy";
    else if (pc && !pc->info)
        missing = "precopy->info";
    else if (pc && !pc->load_precopy)
        missing = "precopy->load_precopy";
    else if (pc && !p && (!m->running_to_stop || !m->stop_to_running))
        missing = "mig->running_to_stop and mig->stop_to_running (PRE_COPY -> STOP_COPY)";
    if (missing) {
        vfm_log(LOG_ERR, "%s: device config lacks %s", cfg->name, missing);
        return -EINVAL;
    }
    return 0;
}

int vfm_device_new(const struct vfm_device_config *cfg, struct vfm_device **out)
{
    struct vfm_device *dev;
    int ret;

    if (!cfg || !out || !cfg->version || cfg->version > VFM_DEVICE_CONFIG_VERSION || !cfg->name ||
        !*cfg->name)
        return -EINVAL;
    /* a version 1 config ends before dma_log */
    if (cfg->version >= 2 && cfg->dma_log &&
        (!cfg->dma_log->start || !cfg->dma_log->stop || !cfg->dma_log->report)) {
        vfm_log(LOG_ERR, "%s: device config lacks dma_log->start, stop or report", cfg->name);
        return -EINVAL;
    }
    if (cfg->max_state_size > VFM_DEVICE_MAX_STATE_LIMIT)
        return -EINVAL;
    /* an ops table for a version 3 header ends before save_begin */
    if (cfg->version >= 4 && cfg->mig && !cfg->mig->save_begin != !cfg->mig->save_piece) {
        vfm_log(LOG_ERR, "%s: device config lacks mig->%s (save in pieces needs both)", cfg->name,
                cfg->mig->save_begin ? "save_piece" : "save_begin");
        return -EINVAL;
    }
    ret = check_ops(cfg);
    if (ret)
        return ret;

    dev = calloc(1, sizeof(*dev));
    if (!dev)
        return -ENOMEM;
    dev->name = strdup(cfg->name);
    if (!dev->name) {
        ret = -ENOMEM;
        goto err_free_dev;
    }
    dev->compat = cfg->compat;
    dev->mig = cfg->mig;
    dev->p2p = cfg->p2p;
    dev->pre = cfg->precopy;
    dev->priv = cfg->priv;
    if (cfg->version >= 2) {
        dev->dma_log = cfg->dma_log;
        dev->dma_log_ctx = cfg->dma_log_ctx;
    }
    if (cfg->version >= 3)
        dev->save_buffer = cfg->mig->save_buffer;
    if (cfg->version >= 4) {
        dev->save_begin = cfg->mig->save_begin;
        dev->save_piece = cfg->mig->save_piece;
    }
    dev->pieces_by_ref = cfg->version >= 5 && cfg->pieces_by_reference;
    dev->max_state = cfg->max_state_size ? cfg->max_state_size : VFM_DEVICE_DEFAULT_MAX_STATE;
    dev->flags = VFM_MIGRATION_STOP_COPY | (cfg->p2p ? VFM_MIGRATION_P2P : 0) |
                 (cfg->precopy ? VFM_MIGRATION_PRE_COPY : 0);
    dev->state = VFM_STATE_RUNNING;
    dev->sess.fd = -1;
    dev->sess.stop_fd = -1;
    pthread_mutex_init(&dev->state_lock, NULL);
    pthread_mutex_init(&dev->reset_lock, NULL);
    pthread_mutex_init(&dev->data_lock, NULL);
    *out = dev;
    return 0;

err_free_dev:
    free(dev);
    return ret;
}

static void end_session(struct vfm_device *dev)
{
    vfm_session_quiesce(&dev->sess);
    pthread_mutex_lock(&dev->data_lock);
    vfm_session_close(&dev->sess);
    pthread_mutex_unlock(&dev->data_lock);
}

void vfm_device_free(struct vfm_device *dev)
{
    if (!dev)
        return;
    end_session(dev);
    pthread_mutex_destroy(&dev->data_lock);
    pthread_mutex_destroy(&dev->reset_lock);
    pthread_mutex_destroy(&dev->state_lock);
    free(dev->name);
    free(dev);
}

const char *vfm_device_name(const struct vfm_device *dev)
{
    return dev->name;
}

uint32_t vfm_device_flags(const struct vfm_device *dev)
{
    return dev->flags;
}

void *vfm_device_priv(const struct vfm_device *dev)
{
    return dev->priv;
}

void vfm_device_mark_broken(struct vfm_device *dev)
{
    /* Only the thread running a callback may mark the device: in_callback
     * and cb_thread are written by that same thread under the state lock. */
    if (dev && dev->in_callback && pthread_equal(dev->cb_thread, pthread_self()))
        dev->broken = true;
}

static void cb_enter(struct vfm_device *dev)
{
    dev->broken = false;
    dev->cb_thread = pthread_self();
    dev->in_callback = true;
}

static void cb_leave(struct vfm_device *dev)
{
    dev->in_callback = false;
}

typedef int (*arc_fn)(struct vfm_device *, void *);

/* The callback for a run-state arc (no session change), or NULL. */
static arc_fn run_arc(const struct vfm_device *dev, uint32_t from, uint32_t to)
{
    const struct vfm_p2p_ops *p = dev->p2p;

    if (from == VFM_STATE_RUNNING && to == VFM_STATE_STOP)
        return dev->mig->running_to_stop;
    if (from == VFM_STATE_STOP && to == VFM_STATE_RUNNING)
        return dev->mig->stop_to_running;
    if (!p)
        return NULL;
    if (from == VFM_STATE_RUNNING && to == VFM_STATE_RUNNING_P2P)
        return p->running_to_running_p2p;
    if (from == VFM_STATE_RUNNING_P2P && to == VFM_STATE_RUNNING)
        return p->running_p2p_to_running;
    if (from == VFM_STATE_RUNNING_P2P && to == VFM_STATE_STOP)
        return p->running_p2p_to_stop;
    if (from == VFM_STATE_STOP && to == VFM_STATE_RUNNING_P2P)
        return p->stop_to_running_p2p;
    return NULL;
}

static int call_arc(struct vfm_device *dev, arc_fn fn)
{
    int ret;

    if (!fn)
        return 0;
    cb_enter(dev);
    ret = fn(dev, dev->priv);
    cb_leave(dev);
    return ret > 0 ? 0 : ret;
}

/* Save in place: the device's own memory for the stream (save_buffer), or
 * nothing (none given, or too small for even the framing). */
static void *own_save_memory(struct vfm_device *dev, size_t *cap)
{
    void *mem;

    if (!dev->save_buffer)
        return NULL;
    *cap = 0;
    cb_enter(dev);
    mem = dev->save_buffer(dev, dev->priv, cap);
    cb_leave(dev);
    return mem && *cap >= VFM_SAVE_PREFIX + VFM_SAVE_SUFFIX ? mem : NULL;
}

/* Save in pieces: the session's source of the state's bytes (data lock
 * held); checks what the device answers. */
static int piece_cb(void *ctx, uint64_t offset, size_t max, const void **data, size_t *n)
{
    struct vfm_device *dev = ctx;
    int ret;

    *data = NULL;
    *n = 0;
    ret = dev->save_piece(dev, dev->priv, offset, max, data, n);
    if (ret > 0)
        ret = 0;
    if (!ret && (!*data || *n == 0 || *n > max))
        ret = -EIO; /* the device broke its word: nothing, or too much */
    if (ret)
        vfm_log(LOG_ERR,
                "%s: STOP_COPY: save_piece at offset %llu of the state failed (%s); the state "
                "stream ends in an error",
                dev->name, (unsigned long long)offset, vfm_err_name(ret));
    return ret;
}

/* Save in pieces: the state's size from save_begin (the device stopped).
 * Return: 0, -EOPNOTSUPP (not this time: save() instead), or an error. */
static int pieces_begin(struct vfm_device *dev, uint64_t *total)
{
    int ret;

    if (!dev->save_begin)
        return -EOPNOTSUPP;
    *total = 0;
    cb_enter(dev);
    ret = dev->save_begin(dev, dev->priv, total);
    cb_leave(dev);
    if (ret > 0)
        ret = 0;
    if (!ret && *total > dev->max_state) {
        vfm_log(LOG_ERR, "%s: STOP_COPY: a state of %llu bytes is past max_state_size (%llu)",
                dev->name, (unsigned long long)*total, (unsigned long long)dev->max_state);
        ret = -EFBIG;
    }
    return ret;
}

/* The FINAL_BEGIN record's payload, for vfm_session_append. */
static int begin_fill(void *ctx, struct vfm_buf *out)
{
    uint8_t *p = vfm_buf_reserve(out, VFM_STREAM_BEGIN_SIZE);

    if (!p)
        return -ENOMEM;
    vfm_stream_put_u64(p, *(const uint64_t *)ctx);
    return 0;
}

/* STOP -> STOP_COPY in pieces: the stream header and FINAL_BEGIN now, the
 * parts as they are read. */
static int open_save_pieces(struct vfm_device *dev, uint64_t total, int *data_fd)
{
    struct vfm_pieces pc = {total, 1, piece_cb, dev, dev->pieces_by_ref}; /* FINAL_BEGIN is 0 */
    struct vfm_buf buf;
    uint8_t *p;
    int ret;

    vfm_buf_init(&buf, VFM_STREAM_HDR_SIZE + VFM_STREAM_REC_SIZE + VFM_STREAM_BEGIN_SIZE);
    p = vfm_buf_reserve(&buf, buf.max);
    if (!p)
        return -ENOMEM;
    vfm_stream_put_header(p, dev->compat, VFM_STREAM_VERSION2);
    p += VFM_STREAM_HDR_SIZE;
    vfm_stream_put_u64(p + VFM_STREAM_REC_SIZE, total);
    vfm_stream_put_record(p, VFM_REC_FINAL_BEGIN, 0, p + VFM_STREAM_REC_SIZE,
                          VFM_STREAM_BEGIN_SIZE);
    pthread_mutex_lock(&dev->data_lock);
    ret = vfm_session_open(&dev->sess, VFM_SESS_SAVE, &buf, dev->compat, dev->max_state,
                           data_fd != NULL, data_fd, &dev->data_lock, &pc);
    pthread_mutex_unlock(&dev->data_lock);
    if (ret)
        vfm_buf_release(&buf);
    return ret;
}

static int arc_open_save(struct vfm_device *dev, int *data_fd)
{
    struct vfm_buf buf;
    size_t cap = 0;
    void *own;
    uint64_t total;
    int ret = pieces_begin(dev, &total);

    if (ret != -EOPNOTSUPP)
        return ret ? ret : open_save_pieces(dev, total, data_fd);
    own = own_save_memory(dev, &cap);
again:
    vfm_buf_init(&buf, (size_t)(dev->max_state + VFM_SAVE_PREFIX));
    if (own) {
        /* the device's memory: the stream is built where it is faulted in
         * already; it cannot grow (vfm_buf_release leaves it alone) */
        buf.data = own;
        buf.cap = cap;
        buf.external = true;
    }
    if (!vfm_buf_reserve(&buf, VFM_SAVE_PREFIX)) {
        ret = -ENOMEM;
        goto err_release;
    }
    cb_enter(dev);
    ret = dev->mig->save(dev, dev->priv, &buf);
    cb_leave(dev);
    if (ret > 0)
        ret = 0;
    if (ret && own) {
        /* larger than its estimate (the device's error for a buffer that
         * cannot grow is its own: any): once more, into our own memory */
        vfm_buf_release(&buf);
        own = NULL;
        goto again;
    }
    if (ret)
        goto err_release;
    ret = vfm_save_seal(&buf, dev->compat);
    if (ret)
        goto err_release;
    pthread_mutex_lock(&dev->data_lock);
    ret = vfm_session_open(&dev->sess, VFM_SESS_SAVE, &buf, dev->compat, dev->max_state,
                           data_fd != NULL, data_fd, &dev->data_lock, NULL);
    pthread_mutex_unlock(&dev->data_lock);
    if (ret)
        goto err_release;
    return 0;

err_release:
    vfm_buf_release(&buf);
    return ret;
}

/* The load decoder's hook: a PRECOPY record arrived whole and checked.
 * Runs with the data lock held (from a data call or the load pump). */
static int load_precopy_record(void *ctx, const uint8_t *payload, size_t len)
{
    struct vfm_device *dev = ctx;
    int ret = dev->pre->load_precopy(dev, dev->priv, payload, len);

    if (ret)
        vfm_log(LOG_ERR, "%s: RESUMING: the device refused a pre-copy record (%s)", dev->name,
                vfm_err_name(ret < 0 ? ret : -EINVAL));
    return ret > 0 ? 0 : ret;
}

/* The decoder's hook: where the FINAL record goes (data lock held). */
static void *load_buffer_cb(void *ctx, uint64_t len)
{
    struct vfm_device *dev = ctx;
    return len <= SIZE_MAX ? dev->mig->load_buffer(dev, dev->priv, (size_t)len) : NULL;
}

static int arc_open_load(struct vfm_device *dev, int *data_fd)
{
    int ret = call_arc(dev, dev->mig->stop_to_resuming);

    if (ret)
        return ret;
    pthread_mutex_lock(&dev->data_lock);
    ret = vfm_session_open(&dev->sess, VFM_SESS_LOAD, NULL, dev->compat, dev->max_state,
                           data_fd != NULL, data_fd, &dev->data_lock, NULL);
    if (!ret && dev->pre) {
        /* set before the pump can feed a byte: it needs the data lock */
        dev->sess.dec.allow_precopy = true;
        dev->sess.dec.on_precopy = load_precopy_record;
        dev->sess.dec.on_precopy_ctx = dev;
    }
    if (!ret && dev->mig->load_buffer) {
        dev->sess.dec.final_buf = load_buffer_cb;
        dev->sess.dec.final_buf_ctx = dev;
    }
    pthread_mutex_unlock(&dev->data_lock);
    return ret;
}

static bool is_precopy(uint32_t state)
{
    return state == VFM_STATE_PRE_COPY || state == VFM_STATE_PRE_COPY_P2P;
}

/* RUNNING -> PRE_COPY, RUNNING_P2P -> PRE_COPY_P2P: a save session that
 * starts as the stream header alone; records are made as they are read. */
static int arc_open_precopy(struct vfm_device *dev)
{
    struct vfm_buf buf;
    uint8_t *hdr;
    int ret;

    vfm_buf_init(&buf, VFM_STREAM_HDR_SIZE);
    hdr = vfm_buf_reserve(&buf, VFM_STREAM_HDR_SIZE);
    if (!hdr)
        return -ENOMEM;
    /* version 2 when the FINAL may come in pieces */
    vfm_stream_put_header(hdr, dev->compat,
                          dev->save_begin ? VFM_STREAM_VERSION2 : VFM_STREAM_VERSION);
    ret = call_arc(dev, dev->pre->start);
    if (ret) {
        vfm_buf_release(&buf);
        return ret;
    }
    pthread_mutex_lock(&dev->data_lock);
    ret = vfm_session_open(&dev->sess, VFM_SESS_SAVE, &buf, dev->compat, dev->max_state, false,
                           NULL, &dev->data_lock, NULL);
    if (!ret) {
        dev->sess.precopy = true;
        dev->sess.from_precopy = true;
        dev->sess.queue_initial = true; /* the stream header */
        dev->reinit = false;            /* everything is initial now */
    }
    pthread_mutex_unlock(&dev->data_lock);
    if (ret) {
        vfm_buf_release(&buf);
        /* undo start(); if even that fails the device is not in RUNNING */
        if (call_arc(dev, dev->pre->end))
            dev->broken = true;
    }
    return ret;
}

struct fill_ctx {
    struct vfm_device *dev;
    bool precopy; /* save_precopy() rather than save() */
};

static int fill_cb(void *ctx, struct vfm_buf *out)
{
    struct fill_ctx *f = ctx;
    struct vfm_device *dev = f->dev;
    int ret;

    cb_enter(dev);
    ret = f->precopy ? dev->pre->save_precopy(dev, dev->priv, out, VFM_PRECOPY_CHUNK_HINT)
                     : dev->mig->save(dev, dev->priv, out);
    cb_leave(dev);
    return ret;
}

/* PRE_COPY[_P2P] -> STOP_COPY: stop, then the FINAL record and the END. */
static int arc_precopy_stop(struct vfm_device *dev, uint32_t from)
{
    bool p2p = from == VFM_STATE_PRE_COPY_P2P;
    arc_fn stop = p2p ? dev->p2p->running_p2p_to_stop : dev->mig->running_to_stop;
    arc_fn restart = p2p ? dev->p2p->stop_to_running_p2p : dev->mig->stop_to_running;
    struct fill_ctx f = {dev, false};
    uint64_t total;
    size_t len;
    int ret = call_arc(dev, stop);

    if (ret)
        return ret;
    ret = pieces_begin(dev, &total);
    pthread_mutex_lock(&dev->data_lock);
    if (ret == -EOPNOTSUPP) {
        ret = vfm_session_append(&dev->sess, VFM_REC_FINAL, dev->max_state, fill_cb, &f, true,
                                 false, &len);
    } else if (!ret) {
        /* the header said version 2: FINAL_BEGIN now (its number is the
         * session's next; the parts' follow it), the parts as read */
        ret = vfm_session_set_pieces(&dev->sess, total, dev->sess.seq, piece_cb, dev);
        if (!ret)
            ret = vfm_session_append(&dev->sess, VFM_REC_FINAL_BEGIN, VFM_STREAM_BEGIN_SIZE,
                                     begin_fill, &total, false, false, &len);
        if (ret)
            dev->sess.pieces = false; /* pre-copy goes on as before */
    }
    if (!ret)
        dev->sess.precopy = false;
    pthread_mutex_unlock(&dev->data_lock);
    if (ret && !dev->broken && call_arc(dev, restart))
        dev->broken = true; /* stopped and cannot run again: not in @from */
    return ret;
}

/* An arc inside the saving group: the session goes on. */
static int arc_keep(struct vfm_device *dev, uint32_t from, uint32_t to)
{
    if (to == VFM_STATE_STOP_COPY)
        return arc_precopy_stop(dev, from);
    if (from == VFM_STATE_PRE_COPY && to == VFM_STATE_PRE_COPY_P2P)
        return call_arc(dev, dev->p2p->running_to_running_p2p);
    if (from == VFM_STATE_PRE_COPY_P2P && to == VFM_STATE_PRE_COPY)
        return call_arc(dev, dev->p2p->running_p2p_to_running);
    return -EINVAL; /* the planner makes no other */
}

static int arc_close_load(struct vfm_device *dev)
{
    const uint8_t *payload;
    size_t len;
    int ret;

    vfm_session_quiesce(&dev->sess); /* takes every byte written to the fd */
    pthread_mutex_lock(&dev->data_lock);
    ret = vfm_session_check_load(&dev->sess, &payload, &len);
    if (ret) {
        vfm_session_resume(&dev->sess); /* the fd keeps taking bytes */
        pthread_mutex_unlock(&dev->data_lock);
        vfm_log(LOG_ERR,
                "%s: RESUMING -> STOP: the state stream is truncated, extended, "
                "corrupted or not this device's (%s)",
                dev->name, vfm_err_name(dev->sess.dec.err ? dev->sess.dec.err : -EINVAL));
        return ret;
    }
    /* The data lock is held across load(): no data call can change the
     * buffer under it, and a data call waits rather than sees half a load. */
    cb_enter(dev);
    ret = dev->mig->load(dev, dev->priv, payload, len);
    cb_leave(dev);
    if (ret > 0)
        ret = 0;
    if (!ret)
        vfm_session_close(&dev->sess);
    else if (!dev->broken)
        vfm_session_resume(&dev->sess);
    pthread_mutex_unlock(&dev->data_lock);
    return ret;
}

/* One arc. On failure the device is still in @from (or broken). */
static int step(struct vfm_device *dev, uint32_t from, uint32_t to, int *data_fd)
{
    int ret;

    switch (vfm_fsm_arc_session(from, to)) {
    case VFM_FSM_SESSION_OPEN_SAVE:
        return is_precopy(to) ? arc_open_precopy(dev) : arc_open_save(dev, data_fd);
    case VFM_FSM_SESSION_OPEN_LOAD:
        return arc_open_load(dev, data_fd);
    case VFM_FSM_SESSION_CLOSE_LOAD:
        return arc_close_load(dev);
    case VFM_FSM_SESSION_CLOSE_SAVE:
        if (is_precopy(from)) {
            ret = call_arc(dev, dev->pre->end);
        } else {
            /* held so that no read asks the device for a piece while its
             * session ends (save_piece's rule) */
            pthread_mutex_lock(&dev->data_lock);
            ret = call_arc(dev, dev->mig->stop_copy_to_stop);
            if (!ret && dev->sess.pieces && !dev->sess.err)
                dev->sess.err = -ENODEV; /* ...nor after it, before the close */
            pthread_mutex_unlock(&dev->data_lock);
            /* a session pre-copy opened ends here too: tracking stops */
            if (!ret && dev->sess.from_precopy && call_arc(dev, dev->pre->end))
                vfm_log(LOG_WARNING, "%s: STOP_COPY -> STOP: precopy->end failed (ignored)",
                        dev->name);
        }
        if (!ret)
            end_session(dev);
        return ret;
    case VFM_FSM_SESSION_KEEP:
        return arc_keep(dev, from, to);
    case VFM_FSM_SESSION_NONE:
    default:
        return call_arc(dev, run_arc(dev, from, to));
    }
}

int vfm_device_set_state(struct vfm_device *dev, uint32_t target, int *data_fd)
{
    struct vfm_fsm_path path;
    uint32_t from;
    int ret, ret2;

    if (data_fd)
        *data_fd = -1;
    state_lock(dev);
    from = dev->state;
    ret = vfm_fsm_plan(dev->flags, from, target, &path);
    if (ret) {
        vfm_log(LOG_ERR, "%s: %s -> %s refused: not a state change this device can make", dev->name,
                vfm_state_str(from), vfm_state_str(target));
        goto out_unlock;
    }
    if (data_fd && is_precopy(target) && !vfm_fsm_is_saving(from)) {
        ret = -EOPNOTSUPP;
        vfm_log(LOG_ERR,
                "%s: %s -> %s refused: a pre-copy session has no data fd (use the data calls)",
                dev->name, vfm_state_str(from), vfm_state_str(target));
        goto out_unlock;
    }
    for (uint32_t i = 1; i < path.len; i++) {
        uint32_t a = path.states[i - 1], b = path.states[i];
        bool last = i == path.len - 1;

        /* Only the last arc of a path can open a session (the planner never
         * passes through a saving state or RESUMING), so only it gets the
         * caller's fd pointer. */
        ret = step(dev, a, b, last ? data_fd : NULL);
        if (ret) {
            if (dev->broken) {
                end_session(dev);
                dev->state = VFM_STATE_ERROR;
            }
            vfm_log(LOG_ERR, "%s: arc %s -> %s failed (%s) on the way %s -> %s; now %s", dev->name,
                    vfm_state_str(a), vfm_state_str(b), vfm_err_name(ret), vfm_state_str(from),
                    vfm_state_str(target), vfm_state_str(dev->state));
            goto out_unlock;
        }
        dev->state = b;
        vfm_log(LOG_DEBUG, "%s: %s -> %s (request %s -> %s)", dev->name, vfm_state_str(a),
                vfm_state_str(b), vfm_state_str(from), vfm_state_str(target));
    }
out_unlock:
    ret2 = state_unlock(dev);
    (void)ret2; /* a deferred reset's failure is logged and visible by GET */
    return ret;
}

/* Takes the state lock and performs a reset that was deferred while
 * another thread held it, so what is read next is the true state. */
static void state_lock(struct vfm_device *dev)
{
    pthread_mutex_lock(&dev->state_lock);
    pthread_mutex_lock(&dev->reset_lock);
    if (dev->deferred_reset) {
        dev->deferred_reset = false;
        pthread_mutex_unlock(&dev->reset_lock);
        do_reset(dev);
        return;
    }
    pthread_mutex_unlock(&dev->reset_lock);
}

uint32_t vfm_device_get_state(struct vfm_device *dev)
{
    uint32_t s;

    state_lock(dev);
    s = dev->state;
    state_unlock(dev);
    return s;
}

/* With the state lock held. */
static int do_reset(struct vfm_device *dev)
{
    uint32_t from = dev->state;
    int ret;

    end_session(dev);
    cb_enter(dev);
    ret = dev->mig->reset(dev, dev->priv);
    cb_leave(dev);
    if (ret > 0)
        ret = 0;
    dev->broken = false;
    dev->state = ret ? VFM_STATE_ERROR : VFM_STATE_RUNNING;
    if (ret)
        vfm_log(LOG_ERR, "%s: reset from %s failed (%s); device is in ERROR", dev->name,
                vfm_state_str(from), vfm_err_name(ret));
    else
        vfm_log(LOG_INFO, "%s: reset: %s -> RUNNING", dev->name, vfm_state_str(from));
    return ret;
}

int vfm_device_reset(struct vfm_device *dev)
{
    pthread_mutex_lock(&dev->reset_lock);
    dev->deferred_reset = true;
    if (pthread_mutex_trylock(&dev->state_lock) != 0) {
        /* A transition (perhaps the caller's own) holds the lock; its
         * state_unlock() performs the reset. */
        pthread_mutex_unlock(&dev->reset_lock);
        vfm_log(LOG_INFO, "%s: reset deferred to the end of the transition in progress", dev->name);
        return 1;
    }
    pthread_mutex_unlock(&dev->reset_lock);
    return state_unlock(dev);
}

/* Pre-copy: the queue is empty; ask the device for the next record. State
 * and data locks held. Return: 0 (perhaps nothing pending) or an error. */
static int precopy_refill(struct vfm_device *dev)
{
    struct vfm_session *s = &dev->sess;
    struct fill_ctx f = {dev, true};
    uint64_t initial = 0, dirty = 0;
    size_t len;
    int ret;

    cb_enter(dev);
    ret = dev->pre->info(dev, dev->priv, &initial, &dirty);
    cb_leave(dev);
    if (ret)
        return ret > 0 ? 0 : ret;
    ret = vfm_session_append(s, VFM_REC_PRECOPY, dev->max_state, fill_cb, &f, false, true, &len);
    if (!ret && len)
        s->queue_initial = initial > 0;
    return ret;
}

/* Gathers the session's next bytes, at most @len in at most @max pieces,
 * and hands them to @sendv; on its failure nothing is consumed. Data lock
 * held. Return: the bytes sent, or an error (pre-copy: -ENOMSG, nothing
 * pending; piece()'s error, once nothing before it is left). */
static ssize_t save_gather(struct vfm_session *s, size_t len, int max, vfm_data_sendv_fn sendv,
                           void *ctx)
{
    struct iovec iov[VFM_DATA_IOV_MAX];
    uint8_t hdrs[VFM_DATA_IOV_MAX][VFM_STREAM_REC_SIZE];
    struct vfm_sess_mark mark;
    size_t total = 0;
    int cnt = 0, ret;

    vfm_session_mark(s, &mark);
    while (total < len && cnt < max) {
        const uint8_t *p;
        size_t n = vfm_session_peek(s, &p);

        if (n == 0)
            break;
        if (n > len - total)
            n = len - total;
        if (vfm_session_peek_is_hdr(s, p)) {
            /* the next part's header takes its place: a copy */
            memcpy(hdrs[cnt], p, n);
            p = hdrs[cnt];
        }
        iov[cnt++] = (struct iovec){(void *)p, n};
        total += n;
        vfm_session_consume(s, n);
    }
    if (total == 0 && s->err)
        return s->err;
    if (total == 0 && s->precopy)
        return -ENOMSG; /* nothing pending now */
    ret = sendv(ctx, iov, cnt, total);
    if (ret) {
        vfm_session_restore(s, &mark);
        return ret;
    }
    return (ssize_t)total;
}

/* The body of every save-side data call; in pre-copy it makes the next
 * record when the queue is empty (that needs the state lock: the device's
 * callbacks never run concurrently). */
static ssize_t save_read(struct vfm_device *dev, size_t len, int max, vfm_data_sendv_fn sendv,
                         void *ctx)
{
    struct vfm_session *s = &dev->sess;
    ssize_t ret;

    pthread_mutex_lock(&dev->data_lock);
    if (s->kind == VFM_SESS_SAVE && !s->has_fd && s->precopy && s->pos == s->buf.len) {
        pthread_mutex_unlock(&dev->data_lock);
        state_lock(dev);
        pthread_mutex_lock(&dev->data_lock);
        ret = 0;
        if (s->kind == VFM_SESS_SAVE && s->precopy && s->pos == s->buf.len)
            ret = precopy_refill(dev);
        pthread_mutex_unlock(&dev->data_lock);
        state_unlock(dev);
        if (ret)
            return ret;
        pthread_mutex_lock(&dev->data_lock);
    }
    if (s->kind != VFM_SESS_SAVE)
        ret = -ENODEV;
    else if (s->has_fd)
        ret = -EBUSY;
    else
        ret = save_gather(s, len, max, sendv, ctx);
    pthread_mutex_unlock(&dev->data_lock);
    return ret;
}

/* vfm_device_data_read: copies the pieces out. */
static int sendv_copy(void *ctx, const struct iovec *iov, int cnt, size_t n)
{
    uint8_t *out = ctx;
    (void)n;

    for (int i = 0; i < cnt; i++) {
        memcpy(out, iov[i].iov_base, iov[i].iov_len);
        out += iov[i].iov_len;
    }
    return 0;
}

ssize_t vfm_device_data_read(struct vfm_device *dev, void *buf, size_t len)
{
    if (!buf && len)
        return -EINVAL;
    return save_read(dev, len, VFM_DATA_IOV_MAX, sendv_copy, buf);
}

int vfm_device_precopy_info(struct vfm_device *dev, uint64_t *initial, uint64_t *dirty)
{
    uint32_t flags;

    return vfm_device_precopy_info_flags(dev, initial, dirty, &flags);
}

void vfm_device_precopy_reinit(struct vfm_device *dev)
{
    state_lock(dev);
    if (dev->pre && is_precopy(dev->state))
        dev->reinit = true;
    state_unlock(dev);
}

void vfm_device_precopy_v2(struct vfm_device *dev, bool on)
{
    state_lock(dev);
    dev->precopy_v2 = on;
    state_unlock(dev);
}

int vfm_device_precopy_info_flags(struct vfm_device *dev, uint64_t *initial, uint64_t *dirty,
                                  uint32_t *flags)
{
    size_t queued;
    int ret;

    *initial = *dirty = 0;
    *flags = 0;
    state_lock(dev);
    if (!dev->pre || !is_precopy(dev->state)) {
        ret = -EINVAL;
        goto out;
    }
    /* reported once, and only to a client that opted in */
    if (dev->reinit && dev->precopy_v2)
        *flags = VFM_PRECOPY_INFO_REINIT;
    dev->reinit = false;
    cb_enter(dev);
    ret = dev->pre->info(dev, dev->priv, initial, dirty);
    cb_leave(dev);
    if (ret > 0)
        ret = 0;
    if (ret)
        goto out;
    pthread_mutex_lock(&dev->data_lock);
    queued = dev->sess.buf.len - dev->sess.pos;
    if (dev->sess.queue_initial)
        *initial += queued;
    else
        *dirty += queued;
    pthread_mutex_unlock(&dev->data_lock);
out:
    state_unlock(dev);
    return ret;
}

ssize_t vfm_device_data_write(struct vfm_device *dev, const void *buf, size_t len)
{
    ssize_t ret;

    if (!buf && len)
        return -EINVAL;
    pthread_mutex_lock(&dev->data_lock);
    if (dev->sess.kind != VFM_SESS_LOAD)
        ret = -ENODEV;
    else if (dev->sess.has_fd)
        ret = -EBUSY;
    else
        ret = vfm_session_write(&dev->sess, buf, len);
    pthread_mutex_unlock(&dev->data_lock);
    return ret;
}

struct send_one {
    vfm_data_send_fn send;
    void *ctx;
};

/* vfm_device_data_read_with: one contiguous piece (or none, at the end). */
static int sendv_one(void *ctx, const struct iovec *iov, int cnt, size_t n)
{
    struct send_one *o = ctx;

    return o->send(o->ctx, cnt ? iov[0].iov_base : "", n);
}

ssize_t vfm_device_data_read_with(struct vfm_device *dev, size_t len, vfm_data_send_fn send,
                                  void *ctx)
{
    struct send_one o = {send, ctx};

    return save_read(dev, len, 1, sendv_one, &o);
}

ssize_t vfm_device_data_read_iov(struct vfm_device *dev, size_t len, vfm_data_sendv_fn sendv,
                                 void *ctx)
{
    return save_read(dev, len, VFM_DATA_IOV_MAX, sendv, ctx);
}

#define WRITE_PIECE (128u * 1024u)

ssize_t vfm_device_data_write_with(struct vfm_device *dev, size_t len, vfm_data_recv_fn recv,
                                   void *ctx)
{
    struct vfm_session *s = &dev->sess;
    uint8_t scratch[4096];
    size_t left = len;
    int err = 0, ret;

    pthread_mutex_lock(&dev->data_lock);
    if (s->kind != VFM_SESS_LOAD || s->has_fd) {
        pthread_mutex_unlock(&dev->data_lock);
        return s->kind != VFM_SESS_LOAD ? -ENODEV : -EBUSY;
    }
    while (left) {
        uint8_t *p = scratch;
        size_t n = err ? 0 : vfm_stream_dec_space(&s->dec, &p);

        if (n == 0) {
            /* invalid or complete: the rest is read and dropped, and the
             * stream is spoiled (anything after the END is an error) */
            if (!err)
                err = s->dec.err ? s->dec.err : vfm_stream_dec_feed(&s->dec, "", 1);
            p = scratch;
            n = sizeof(scratch);
        }
        if (n > left)
            n = left;
        /* in pieces about a socket buffer big, so that each piece is
         * hashed (at commit) while the sender already fills the next */
        if (n > WRITE_PIECE)
            n = WRITE_PIECE;
        ret = recv(ctx, p, n);
        if (ret) {
            pthread_mutex_unlock(&dev->data_lock);
            return ret;
        }
        if (!err)
            err = vfm_stream_dec_commit(&s->dec, n);
        left -= n;
    }
    pthread_mutex_unlock(&dev->data_lock);
    return err ? err : (ssize_t)len;
}

/* The bytes the stream adds around a state of @state bytes saved in one
 * go (FINAL), or in pieces (FINAL_BEGIN, and a FINAL_PART per
 * VFM_SAVE_PART_MAX: exact when the device's pieces are not tiny). */
static uint64_t stream_overhead(const struct vfm_device *dev, uint64_t state)
{
    if (!dev->save_begin)
        return VFM_STATE_STREAM_OVERHEAD;
    return VFM_STATE_STREAM_OVERHEAD + VFM_STREAM_BEGIN_SIZE +
           (state + VFM_SAVE_PART_MAX - 1) / VFM_SAVE_PART_MAX * VFM_STATE_RECORD_OVERHEAD;
}

int vfm_device_data_size(struct vfm_device *dev, uint64_t *bytes)
{
    int ret;

    if (!dev->mig->data_size)
        return -ENOTTY;
    state_lock(dev);
    cb_enter(dev);
    ret = dev->mig->data_size(dev, dev->priv, bytes);
    cb_leave(dev);
    if (!ret)
        *bytes += stream_overhead(dev, *bytes);
    state_unlock(dev);
    return ret > 0 ? 0 : ret;
}

const struct vfm_dma_log_ops *vfm_device_dma_log(struct vfm_device *dev, void **ctx)
{
    *ctx = dev->dma_log_ctx;
    return dev->dma_log;
}
