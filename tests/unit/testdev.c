/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testdev.h"

/* The content's own format: 4-byte magic then data. load() refuses content
 * without it, to test a device-level refusal. */
#define CONTENT_MAGIC 0x21544e43u

static int enter(struct testdev *t, enum tcb cb)
{
    int now = atomic_fetch_add(&t->inside, 1) + 1;
    int max = atomic_load(&t->max_inside);

    while (now > max && !atomic_compare_exchange_weak(&t->max_inside, &max, now))
        ;
    t->calls[cb]++;
    t->log[t->nlog++ % 64] = cb;
    if (t->slow_us)
        usleep(t->slow_us);
    if (t->reset_inside) {
        t->reset_inside = false;
        t->reset_inside_ret = vfm_device_reset(t->dev);
    }
    if ((int)cb == t->fail_cb2)
        return t->fail_err;
    if ((int)cb == t->fail_cb) {
        if (t->fail_after > 0) {
            t->fail_after--;
            return 0;
        }
        if (t->fail_broken)
            vfm_device_mark_broken(t->dev);
        return t->fail_err;
    }
    return 0;
}

static int leave(struct testdev *t, int ret)
{
    atomic_fetch_sub(&t->inside, 1);
    return ret;
}

#define ARC_CB(fn, id)                                                                             \
    static int fn(struct vfm_device *dev, void *priv)                                              \
    {                                                                                              \
        (void)dev;                                                                                 \
        return leave(priv, enter(priv, id));                                                       \
    }
ARC_CB(t_run_stop, TCB_RUN_STOP)
ARC_CB(t_stop_run, TCB_STOP_RUN)
static int t_sc_stop(struct vfm_device *dev, void *priv)
{
    struct testdev *t = priv;
    int ret;
    (void)dev;
    t->session_over = true; /* no piece may be asked for from now on */
    ret = enter(t, TCB_SC_STOP);
    if (ret)
        t->session_over = false; /* the session goes on */
    return leave(t, ret);
}
static int t_stop_res(struct vfm_device *dev, void *priv)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_STOP_RES);
    (void)dev;
    if (!ret)
        t->staged_mask = 0; /* a new load starts from nothing */
    return leave(t, ret);
}
ARC_CB(t_run_p2p, TCB_RUN_P2P)
ARC_CB(t_p2p_run, TCB_P2P_RUN)
ARC_CB(t_p2p_stop, TCB_P2P_STOP)
ARC_CB(t_stop_p2p, TCB_STOP_P2P)

/* Pre-copy chunks and a final state after pre-copy are a list of pages:
 * a magic, then (index byte, TESTDEV_PAGE bytes) for each. */
#define PAGES_MAGIC 0x53454750u

static int put_pages(struct testdev *t, struct vfm_buf *out, uint32_t *mask, unsigned max)
{
    uint32_t magic = PAGES_MAGIC;
    int ret = vfm_buf_append(out, &magic, 4);

    for (unsigned p = 0; !ret && p < TESTDEV_PAGES && max; p++) {
        uint8_t idx = (uint8_t)p;
        if (!(*mask & (1u << p)))
            continue;
        ret = vfm_buf_append(out, &idx, 1);
        if (!ret)
            ret = vfm_buf_append(out, t->content + p * TESTDEV_PAGE, TESTDEV_PAGE);
        *mask &= ~(1u << p);
        max--;
    }
    return ret;
}

/* Destination: pages into the staging copy (checked whole first). */
static int stage_pages(struct testdev *t, const uint8_t *data, size_t len)
{
    uint32_t magic;

    if (len < 4 || (len - 4) % (TESTDEV_PAGE + 1))
        return -EINVAL;
    memcpy(&magic, data, 4);
    if (magic != PAGES_MAGIC)
        return -EINVAL;
    for (size_t off = 4; off < len; off += TESTDEV_PAGE + 1)
        if (data[off] >= TESTDEV_PAGES)
            return -EINVAL;
    for (size_t off = 4; off < len; off += TESTDEV_PAGE + 1) {
        memcpy(t->staging + data[off] * TESTDEV_PAGE, data + off + 1, TESTDEV_PAGE);
        t->staged_mask |= 1u << data[off];
    }
    return 0;
}

static int t_save(struct vfm_device *dev, void *priv, struct vfm_buf *out)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_SAVE);
    (void)dev;
    if (!ret && t->tracking) {
        /* after pre-copy: only what it has not given */
        uint32_t mask = t->initial_mask | t->dirty_mask;
        ret = put_pages(t, out, &mask, TESTDEV_PAGES);
    } else if (!ret) {
        ret = vfm_buf_append(out, t->content, sizeof(t->content));
    }
    return leave(t, ret);
}

static int t_save_begin(struct vfm_device *dev, void *priv, uint64_t *len)
{
    struct testdev *t = priv;
    int ret;
    (void)dev;

    if (!t->use_pieces)
        return -EOPNOTSUPP;
    ret = enter(t, TCB_SAVE_BEGIN);
    t->session_over = false;
    if (!ret && t->tracking) {
        /* after pre-copy: the pages not given, listed once (a copy: this
         * device keeps its list, not its memory, stable) */
        uint32_t mask = t->initial_mask | t->dirty_mask, magic = PAGES_MAGIC;
        size_t n = 4;
        memcpy(t->save_mem, &magic, 4);
        for (unsigned p = 0; p < TESTDEV_PAGES; p++) {
            if (!(mask & (1u << p)))
                continue;
            t->save_mem[n++] = (uint8_t)p;
            memcpy(t->save_mem + n, t->content + p * TESTDEV_PAGE, TESTDEV_PAGE);
            n += TESTDEV_PAGE;
        }
        t->pieces_src = t->save_mem;
        t->pieces_len = n;
    } else if (!ret) {
        t->pieces_src = t->content; /* by reference: stopped, it stays */
        t->pieces_len = sizeof(t->content);
    }
    if (!ret)
        *len = t->begin_total ? t->begin_total : t->pieces_len;
    return leave(t, ret);
}

static int t_save_piece(struct vfm_device *dev, void *priv, uint64_t offset, size_t max,
                        const void **data, size_t *n)
{
    struct testdev *t = priv;
    size_t k = max;
    (void)dev;

    /* not enter(): this may run beside another callback (its rule) */
    t->calls[TCB_SAVE_PIECE]++;
    if (t->session_over)
        atomic_fetch_add(&t->piece_after_end, 1);
    if (t->fail_cb == TCB_SAVE_PIECE) {
        if (t->fail_after > 0)
            t->fail_after--;
        else
            return t->fail_err;
    }
    if (t->piece_delay_us) {
        usleep(t->piece_delay_us); /* the reader gets ahead of the pump */
        t->piece_delay_us = 0;
    }
    if (offset >= t->pieces_len)
        return -EINVAL; /* past what save_begin said (begin_total lies) */
    if (t->piece_len && k > t->piece_len)
        k = t->piece_len;
    if (k > t->pieces_len - offset)
        k = (size_t)(t->pieces_len - offset);
    *data = t->pieces_src + offset;
    *n = t->piece_bad == 1 ? 0 : t->piece_bad == 2 ? max + 1 : k;
    return 0;
}

static int t_pc_start(struct vfm_device *dev, void *priv)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_PC_START);
    (void)dev;
    if (!ret) {
        t->tracking = true;
        t->initial_mask = (1u << TESTDEV_PAGES) - 1;
        t->dirty_mask = 0;
    }
    return leave(t, ret);
}

static int t_pc_end(struct vfm_device *dev, void *priv)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_PC_END);
    (void)dev;
    if (!ret)
        t->tracking = false;
    return leave(t, ret);
}

static int t_pc_save(struct vfm_device *dev, void *priv, struct vfm_buf *out, size_t hint)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_PC_SAVE);
    unsigned max = t->pc_chunk_pages ? t->pc_chunk_pages : 4;
    (void)dev;
    (void)hint;
    if (!ret && t->initial_mask)
        ret = put_pages(t, out, &t->initial_mask, max);
    else if (!ret && t->dirty_mask)
        ret = put_pages(t, out, &t->dirty_mask, max);
    return leave(t, ret);
}

static int popcount(uint32_t m)
{
    return __builtin_popcount(m);
}

static int t_pc_info(struct vfm_device *dev, void *priv, uint64_t *initial, uint64_t *dirty)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_PC_INFO);
    (void)dev;
    *initial = (uint64_t)popcount(t->initial_mask) * (TESTDEV_PAGE + 1);
    *dirty = (uint64_t)popcount(t->dirty_mask) * (TESTDEV_PAGE + 1);
    return leave(t, ret);
}

static int t_pc_load(struct vfm_device *dev, void *priv, const void *data, size_t len)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_PC_LOAD);
    (void)dev;
    if (!ret)
        ret = stage_pages(t, data, len);
    return leave(t, ret);
}

void testdev_write(struct testdev *t, size_t off, uint8_t v)
{
    unsigned p = (unsigned)(off / TESTDEV_PAGE);

    if (off < 4)
        return; /* the magic stays */
    t->content[off] = v;
    if (t->tracking && !(t->initial_mask & (1u << p)))
        t->dirty_mask |= 1u << p;
}

static int t_load(struct vfm_device *dev, void *priv, const void *data, size_t len)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_LOAD);
    uint32_t magic;
    (void)dev;

    t->loaded_from = data;
    if (!ret && t->staged_mask) {
        /* after pre-copy records: the rest of the pages, then every page
         * must be there (all or nothing: staging is only a copy) */
        uint8_t keep[TESTDEV_CONTENT];
        uint32_t mask = t->staged_mask;
        memcpy(keep, t->staging, sizeof(keep));
        ret = stage_pages(t, data, len);
        if (!ret && t->staged_mask != (1u << TESTDEV_PAGES) - 1)
            ret = -EINVAL;
        if (!ret)
            memcpy(t->content, t->staging, sizeof(t->content));
        if (ret) {
            memcpy(t->staging, keep, sizeof(keep));
            t->staged_mask = mask;
        } else {
            t->staged_mask = 0;
        }
        return leave(t, ret);
    }
    if (!ret && len != sizeof(t->content))
        ret = -EINVAL;
    if (!ret) {
        memcpy(&magic, data, 4);
        if (magic != CONTENT_MAGIC)
            ret = -EINVAL;
    }
    if (!ret)
        memcpy(t->content, data, len);
    return leave(t, ret);
}

static int t_reset(struct vfm_device *dev, void *priv)
{
    struct testdev *t = priv;
    (void)dev;
    t->session_over = true;
    t->tracking = false;
    t->staged_mask = 0;
    return leave(t, enter(t, TCB_RESET));
}

static int t_data_size(struct vfm_device *dev, void *priv, uint64_t *bytes)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_DATA_SIZE);
    (void)dev;
    *bytes = sizeof(t->content);
    return leave(t, ret);
}

static void *t_save_buffer(struct vfm_device *dev, void *priv, size_t *len)
{
    struct testdev *t = priv;
    (void)dev;
    t->save_buffer_calls++;
    *len = t->save_mem_len ? t->save_mem_len : sizeof(t->save_mem);
    return t->use_save_in_place ? t->save_mem : NULL;
}

/* Without use_in_place, NULL: the runtime receives into its own buffer. */
static void *t_load_buffer(struct vfm_device *dev, void *priv, size_t len)
{
    struct testdev *t = priv;
    (void)dev;
    return t->use_in_place && len <= sizeof(t->in_place) ? t->in_place : NULL;
}

#define MIG_OPS                                                                                    \
    .save = t_save, .load = t_load, .running_to_stop = t_run_stop, .stop_to_running = t_stop_run,  \
    .stop_copy_to_stop = t_sc_stop, .stop_to_resuming = t_stop_res, .reset = t_reset,              \
    .data_size = t_data_size, .load_buffer = t_load_buffer, .save_buffer = t_save_buffer

static const struct vfm_mig_ops mig_ops = {MIG_OPS};

/* The same with save in pieces (testdev_new_pieces). */
static const struct vfm_mig_ops mig_ops_pieces = {
    MIG_OPS,
    .save_begin = t_save_begin,
    .save_piece = t_save_piece,
};

static const struct vfm_p2p_ops p2p_ops = {
    .running_to_running_p2p = t_run_p2p,
    .running_p2p_to_running = t_p2p_run,
    .running_p2p_to_stop = t_p2p_stop,
    .stop_to_running_p2p = t_stop_p2p,
};

static const struct vfm_precopy_ops pc_ops = {
    .start = t_pc_start,
    .end = t_pc_end,
    .save_precopy = t_pc_save,
    .info = t_pc_info,
    .load_precopy = t_pc_load,
};

struct testdev *testdev_new_in_place(const char *name, uint32_t seed)
{
    struct testdev *t = testdev_new_full(name, false, false, seed, TESTDEV_COMPAT, 0);
    if (t)
        t->use_in_place = true;
    return t;
}

struct testdev *testdev_new(const char *name, bool p2p, uint32_t seed)
{
    return testdev_new_compat(name, p2p, seed, TESTDEV_COMPAT);
}

struct testdev *testdev_new_compat(const char *name, bool p2p, uint32_t seed, uint32_t compat)
{
    return testdev_new_max(name, p2p, seed, compat, 0);
}

struct testdev *testdev_new_max(const char *name, bool p2p, uint32_t seed, uint32_t compat,
                                uint64_t max_state)
{
    return testdev_new_full(name, p2p, false, seed, compat, max_state);
}

static struct testdev *make(const char *name, bool p2p, bool precopy, uint32_t seed,
                            uint32_t compat, uint64_t max_state, bool pieces)
{
    struct testdev *t = calloc(1, sizeof(*t));
    struct vfm_device_config cfg = {
        .version = VFM_DEVICE_CONFIG_VERSION,
        .name = name,
        .compat = compat,
        .mig = pieces ? &mig_ops_pieces : &mig_ops,
        .p2p = p2p ? &p2p_ops : NULL,
        .precopy = precopy ? &pc_ops : NULL,
        .priv = t,
        .max_state_size = max_state,
    };
    uint32_t magic = CONTENT_MAGIC;

    if (!t)
        return NULL;
    t->fail_cb = -1;
    t->fail_cb2 = -1;
    for (size_t i = 0; i < sizeof(t->content); i++)
        t->content[i] = (uint8_t)(seed * 31 + i * 7);
    memcpy(t->content, &magic, 4);
    if (vfm_device_new(&cfg, &t->dev)) {
        free(t);
        return NULL;
    }
    return t;
}

struct testdev *testdev_new_full(const char *name, bool p2p, bool precopy, uint32_t seed,
                                 uint32_t compat, uint64_t max_state)
{
    return make(name, p2p, precopy, seed, compat, max_state, false);
}

struct testdev *testdev_new_pieces(const char *name, bool precopy, uint32_t seed)
{
    struct testdev *t = make(name, false, precopy, seed, TESTDEV_COMPAT, 0, true);
    if (t)
        t->use_pieces = true;
    return t;
}

void testdev_free(struct testdev *t)
{
    if (!t)
        return;
    vfm_device_free(t->dev);
    free(t);
}

void testdev_clear_log(struct testdev *t)
{
    memset(t->calls, 0, sizeof(t->calls));
    t->nlog = 0;
}

enum tcb testdev_arc_cb(uint32_t from, uint32_t to)
{
    static const struct {
        uint32_t from, to;
        enum tcb cb;
    } map[] = {
        {VFM_STATE_STOP, VFM_STATE_STOP_COPY, TCB_SAVE},
        {VFM_STATE_RESUMING, VFM_STATE_STOP, TCB_LOAD},
        {VFM_STATE_RUNNING, VFM_STATE_STOP, TCB_RUN_STOP},
        {VFM_STATE_STOP, VFM_STATE_RUNNING, TCB_STOP_RUN},
        {VFM_STATE_STOP_COPY, VFM_STATE_STOP, TCB_SC_STOP},
        {VFM_STATE_STOP, VFM_STATE_RESUMING, TCB_STOP_RES},
        {VFM_STATE_RUNNING, VFM_STATE_RUNNING_P2P, TCB_RUN_P2P},
        {VFM_STATE_RUNNING_P2P, VFM_STATE_RUNNING, TCB_P2P_RUN},
        {VFM_STATE_RUNNING_P2P, VFM_STATE_STOP, TCB_P2P_STOP},
        {VFM_STATE_STOP, VFM_STATE_RUNNING_P2P, TCB_STOP_P2P},
        {VFM_STATE_RUNNING, VFM_STATE_PRE_COPY, TCB_PC_START},
        {VFM_STATE_RUNNING_P2P, VFM_STATE_PRE_COPY_P2P, TCB_PC_START},
        {VFM_STATE_PRE_COPY, VFM_STATE_RUNNING, TCB_PC_END},
        {VFM_STATE_PRE_COPY_P2P, VFM_STATE_RUNNING_P2P, TCB_PC_END},
        {VFM_STATE_PRE_COPY, VFM_STATE_PRE_COPY_P2P, TCB_RUN_P2P},
        {VFM_STATE_PRE_COPY_P2P, VFM_STATE_PRE_COPY, TCB_P2P_RUN},
        {VFM_STATE_PRE_COPY, VFM_STATE_STOP_COPY, TCB_RUN_STOP},
        {VFM_STATE_PRE_COPY_P2P, VFM_STATE_STOP_COPY, TCB_P2P_STOP},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].from == from && map[i].to == to)
            return map[i].cb;
    return TCB_COUNT;
}

enum tcb testdev_restart_cb(uint32_t from)
{
    return from == VFM_STATE_PRE_COPY_P2P ? TCB_STOP_P2P : TCB_STOP_RUN;
}
